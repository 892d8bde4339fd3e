"""The odometer's error per kind of track over ten seeds, folded in memory (no HTTP): the
figures of docs/fleet.md "How close it is, by kind of track".

    .venv/bin/python -m bench.odometer_tracks            # every row
    .venv/bin/python -m bench.odometer_tracks noise grid # the rows whose name has a word

Each row prints the least and the greatest error over the seeds: a percentage of the
track's measurable length (its noiseless path, or the chords of its noiseless fixes), or
metres for a parked vehicle (truth 0 m). One process, a minute or two: not a test.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime

from gateway.fleet.odometer import TrackPoint
from tests import tracks
from tests.test_fleet_odometer import Folder
from tests.test_fleet_pessimistic_accuracy import city_grid, seen

SEEDS = range(10)
START = datetime(2026, 11, 1, tzinfo=UTC)
# (what the fold is given, in sending order and batches; what it should measure, m; metres:
# the error is in metres, not a percentage)
Case = tuple[list[list[tracks.GenFix]], float, bool]


def _points(fixes: Iterable[tracks.GenFix]) -> list[TrackPoint]:
    return [TrackPoint(f.t, f.lat, f.lon, f.accuracy_m, f.speed_kmh, f.device) for f in fixes]


def _track(track: tracks.Track) -> Case:
    return list(track.batches()), track.expected_m, track.truth_m == 0


def _grid(sharp: bool, **seen_as: float | bool) -> Callable[[int], Case]:
    def case(seed: int) -> Case:
        path = city_grid(seed, START, sharp=sharp)
        return [seen(path, seed, **seen_as)], path.length_m, False  # type: ignore[arg-type]

    return case


def _honest(accuracy_m: float, speed: bool, every_s: int = 1) -> Callable[[int], Case]:
    """The tester's honest receiver: its error 68% within the accuracy it reports (σ =
    accuracy / 1.5 a coordinate), correlated 0.98 from one second to the next."""

    def case(seed: int) -> Case:
        path = city_grid(seed, START, sharp=True)
        rng = random.Random(seed)
        receiver = tracks.Receiver(
            rng,
            sigma_m=accuracy_m / 1.5,
            tau_s=-1 / math.log(0.98),
            speed=speed,
        )
        fixes = tracks.sample_every(path, rng, every_s, every_s, receiver)
        return [[replace(f, accuracy_m=accuracy_m) for f in fixes]], path.length_m, False

    return case


ROWS: dict[str, Callable[[int], Case]] = {
    # receiver noise while moving: the rounded grid at 1 Hz, 25 m, speed
    "noise σ3 over a minute": _grid(False, every_s=1, accuracy_m=25.0, sigma_m=3.0, tau_s=60.0),
    "noise σ5 over a minute": _grid(False, every_s=1, accuracy_m=25.0, sigma_m=5.0, tau_s=60.0),
    "noise σ10 over a minute": _grid(False, every_s=1, accuracy_m=25.0, sigma_m=10.0, tau_s=60.0),
    "noise σ3 over 10 s": _grid(False, every_s=1, accuracy_m=25.0, sigma_m=3.0, tau_s=10.0),
    "noise σ5 over 10 s": _grid(False, every_s=1, accuracy_m=25.0, sigma_m=5.0, tau_s=10.0),
    "noise σ10 over 10 s": _grid(False, every_s=1, accuracy_m=25.0, sigma_m=10.0, tau_s=10.0),
    "noise σ5 afresh every second": _grid(
        False, every_s=1, accuracy_m=25.0, sigma_m=5.0, tau_s=0.01
    ),
    "noise σ5 afresh every second, no speed": _grid(
        False, every_s=1, accuracy_m=25.0, sigma_m=5.0, tau_s=0.01, speed=False
    ),
    "noise honest 10 m, speed": _honest(10.0, True),
    "noise honest 25 m, speed": _honest(25.0, True),
    "noise honest 50 m, speed": _honest(50.0, True),
    "noise honest 50 m, no speed": _honest(50.0, False),
    # pessimistic accuracy: σ 4 m over 10 s
    "grid right angles 8 m 1 Hz speed": _grid(True, every_s=1, accuracy_m=8.0),
    "grid right angles 15 m 1 Hz speed": _grid(True, every_s=1, accuracy_m=15.0),
    "grid right angles 25 m 1 Hz speed": _grid(True, every_s=1, accuracy_m=25.0),
    "grid right angles 50 m 2 s speed": _grid(True, every_s=2, accuracy_m=50.0),
    "grid right angles 50 m 2 s no speed": _grid(True, every_s=2, accuracy_m=50.0, speed=False),
    "grid rounded 15 m 1 Hz speed": _grid(False, every_s=1, accuracy_m=15.0),
    "grid rounded 25 m 1 Hz speed": _grid(False, every_s=1, accuracy_m=25.0),
    "grid rounded 50 m 2 s speed": _grid(False, every_s=2, accuracy_m=50.0),
    "grid rounded 25 m 5 s speed": _grid(False, every_s=5, accuracy_m=25.0),
    "grid rounded 50 m 2 s no speed": _grid(False, every_s=2, accuracy_m=50.0, speed=False),
    "grid rounded 50 m 1 Hz no speed": _grid(False, every_s=1, accuracy_m=50.0, speed=False),
    # tests/tracks.py's kinds
    "track urban": lambda s: _track(tracks.urban(s, START)),
    "track urban no accuracy": lambda s: _track(tracks.urban(s, START, accuracy=False)),
    "track urban no speed": lambda s: _track(tracks.urban(s, START, speed=False, drift_tau_s=30)),
    "track urban no speed, drift afresh": lambda s: _track(tracks.urban(s, START, speed=False)),
    "track highway": lambda s: _track(tracks.highway(s, START)),
    "track sparse (chords)": lambda s: _track(tracks.sparse(s, START)),
    "track tunnel": lambda s: _track(tracks.tunnel(s, START)),
    "track store and forward": lambda s: _track(tracks.store_and_forward(s, START, hours=1.0)),
    "track traffic lights 1-3 s": lambda s: _track(tracks.traffic_lights(s, START)),
    "track traffic lights 1-10 s": lambda s: _track(
        tracks.traffic_lights(s, START, every_s=(1, 10))
    ),
    "track highway sampled 1 s (chords)": lambda s: _track(tracks.highway_sampled(s, START, 1)),
    "track highway sampled 10 s (chords)": lambda s: _track(tracks.highway_sampled(s, START, 10)),
    "track highway sampled 60 s (chords)": lambda s: _track(tracks.highway_sampled(s, START, 60)),
    "track highway sampled 300 s (chords)": lambda s: _track(tracks.highway_sampled(s, START, 300)),
    "track tunnel jump 5 min at 120 km/h": lambda s: _track(
        tracks.tunnel_jump(s, START, gap_s=300, road_kmh=120)
    ),
    "parked night (m)": lambda s: _track(tracks.parked_night(s, START)),
    "parked night, no speed or accuracy (m)": lambda s: _track(
        tracks.parked_night(s, START, accuracy=False, speed=False)
    ),
    "idling 1 h, 1-10 s, no speed or accuracy (m)": lambda s: _track(
        tracks.parked_night(s, START, accuracy=False, speed=False, hours=1, every_s=(1, 10))
    ),
}


def error(case: Case) -> float:
    batches, expected_m, metres = case
    folder = Folder()
    for batch in batches:
        folder.fold(_points(batch))
    off = folder.metres - expected_m
    return off if metres else 100 * off / expected_m


def main(words: list[str]) -> None:
    for name, make in ROWS.items():
        if words and not any(w in name for w in words):
            continue
        errors = [error(make(seed)) for seed in SEEDS]
        unit = " m" if name.endswith("(m)") else "%"
        print(f"{name:48s} {min(errors):+8.2f}{unit} … {max(errors):+8.2f}{unit}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
