"""A parked vehicle whose receiver reports a small speed at rest (3.5-8 km/h: multipath
Doppler in an urban canyon or a covered car park, phones and cheap trackers without static
navigation), posted through HTTP as canonical fixes and folded (docs/fleet.md "Odometer").

A reported speed of `still_kmh` or more is moving only when the positions agree: since the
anchor (or since the vehicle last said it stood) it must have covered what `still_kmh`
covers in that time, less a moving fix's noise (`odometer.belied`). Before, every such fix
was moving, and each drift farther than 15 m from the anchor counted: 1.8-3.7 km a night at
a fix a minute (found by the outside tester `tracks`, F2)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from tests import tracks
from tests.test_fleet_pessimistic_accuracy import city_grid, odometer_m, post, seen
from tests.test_fleet_tracks import fold, new_vehicle, vehicle
from tests.tracks import GenFix
from tests.triggers_support import Client, create_position_trigger

SPOT = (-23.5874, -46.6576)


def parked(
    start: datetime,
    seed: int,
    *,
    hours: float,
    every_s: int,
    speeds: tuple[float, float],
    accuracy_m: float | None,
    at: tuple[float, float] = SPOT,
) -> list[GenFix]:
    """Parked `hours` at `at`: a fix every `every_s`, each 5-15 m from the car in any
    direction, reporting a speed drawn from `speeds` (km/h) and `accuracy_m`."""
    rng = random.Random(seed)
    fixes = []
    for k in range(int(hours * 3600 / every_s)):
        lat, lon = tracks.destination(*at, rng.uniform(0, 360), rng.uniform(5, 15))
        fixes.append(
            GenFix(
                start + timedelta(seconds=every_s * k),
                round(lat, 7),
                round(lon, 7),
                round(rng.uniform(*speeds), 1),
                accuracy_m=accuracy_m,
            )
        )
    return fixes


def hours_ago(hours: float) -> datetime:
    return (datetime.now(UTC) - timedelta(hours=hours, minutes=5)).replace(microsecond=0)


@pytest.mark.parametrize(
    ("every_s", "speeds", "accuracy_m"),
    [
        (60, (3.5, 8.0), 8.0),
        (60, (3.5, 8.0), None),
        (60, (0.0, 6.0), 8.0),
        (60, (0.0, 2.9), 8.0),
        (300, (3.5, 15.0), 25.0),
    ],
)
async def test_a_vehicle_parked_a_night_reporting_a_speed_at_rest_gains_at_most_50_m(
    client: Client, every_s: int, speeds: tuple[float, float], accuracy_m: float | None
) -> None:
    """8 h parked, a fix a minute (or every 5 min), drifting 5-15 m, reporting 3.5-8 km/h
    (or 0-6: half the fixes 3 km/h or more; or 3.5-15 every 5 min): 0 m. Before: 3.7 km at
    3.5-8 km/h, 1.8 km at 0-6 km/h, 0.6 km every 5 min (the fixes posted 60 at a time,
    folded after each: the rule reads only the fix, the anchor and the fold's trail)."""
    fixes = parked(hours_ago(8), 12, hours=8, every_s=every_s, speeds=speeds, accuracy_m=accuracy_m)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "PRK3A01")
    for i in range(0, len(fixes), 60):
        await post(client, trigger, "PRK3A01", fixes[i : i + 60])
        await fold(client)
    metres = float((await vehicle(client, "PRK3A01"))["odometer_km"]) * 1000
    assert metres <= 50, metres


async def test_a_night_reporting_a_speed_at_rest_sent_out_of_order_gains_at_most_50_m(
    client: Client,
) -> None:
    """The same night (3.5-8 km/h, a fix a minute) sent in batches of 20 with each pair of
    batches swapped: the late fixes are judged against the neighbour before them (their
    detour counts only beyond a standing vehicle's drift): 0 m (2.3 km before)."""
    fixes = parked(hours_ago(8), 5, hours=8, every_s=60, speeds=(3.5, 8.0), accuracy_m=8.0)
    batches = [fixes[i : i + 20] for i in range(0, len(fixes), 20)]
    for i in range(0, len(batches) - 1, 2):
        batches[i], batches[i + 1] = batches[i + 1], batches[i]
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "PRK3A02")
    for batch in batches:
        await post(client, trigger, "PRK3A02", batch)
        await fold(client)
    metres = float((await vehicle(client, "PRK3A02"))["odometer_km"]) * 1000
    assert metres <= 50, metres


@pytest.mark.parametrize("every_s", [1, 60])
async def test_a_vehicle_parked_reporting_a_speed_at_rest_then_driving_counts_its_road(
    client: Client, every_s: int
) -> None:
    """An hour parked reporting 3.5-8 km/h (a fix a minute), then a city grid driven with
    its speed reported (15 m accuracy, a fix a second; or a fix a minute): the road within
    2% (a fix a minute: the chords between the noiseless fixes), and within 50 m of the
    same drive without the hour before it (575-595 m more before). The positions agree
    with the speed once the vehicle is on its way: the first fix that left the parking spot
    counts from it."""
    path = city_grid(4, hours_ago(0.5), sharp=True)
    start = path.samples[0]
    night = parked(
        start.t - timedelta(hours=1),
        4,
        hours=1,
        every_s=60,
        speeds=(3.5, 8.0),
        accuracy_m=15.0,
        at=(start.lat, start.lon),
    )
    driven = seen(path, 4, every_s=every_s, accuracy_m=15.0)
    by_time = {s.t: s for s in path.samples}
    expected = tracks.length_m([by_time[f.t] for f in driven])
    metres = await odometer_m(client, {"PRK3A03": night + driven, "PRK3A04": driven})
    assert metres["PRK3A03"] == pytest.approx(expected, rel=0.02), (metres, expected)
    assert abs(metres["PRK3A03"] - metres["PRK3A04"]) <= 50, metres
