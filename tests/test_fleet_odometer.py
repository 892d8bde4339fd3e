"""The odometer and the quality gates, fix by fix, on the shared track (pure: no database).

`route1.geojson` is 4,757 fixes and 325,737 m long by haversine with R = 6,371,008.8 m. The
fixes get device times as a car at 60 km/h would (at least 1 s apart)."""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
from collections.abc import Iterable
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.fleet.geometry import haversine_m
from gateway.fleet.odometer import OdometerSettings, TrackPoint
from gateway.fleet.quality import QualitySettings, Reason
from gateway.fleet.state import VehicleState, Verdict, fold_fix, rebaseline

ROUTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tracks" / "route1.geojson"
ROUTE_M = 325_737
# Recent enough for the gates (fixes older than the horizon are refused), fixed per run.
START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=12)


def route_points(path: Path = ROUTE, speed_kmh: float = 60.0) -> list[TrackPoint]:
    if not path.exists():  # a checkout beside shared/ (CI keeps a copy there)
        path = Path("/work/shared/data/tracks/route1.geojson")
    coordinates = json.loads(path.read_text())["geometry"]["coordinates"]
    points: list[TrackPoint] = []
    t = START
    for lon, lat in coordinates:
        if points:
            metres = haversine_m(points[-1].lat, points[-1].lon, lat, lon)
            t += timedelta(seconds=max(1.0, metres / (speed_kmh / 3.6)))
        points.append(TrackPoint(t, lat, lon, 8.0))
    return points


class Folder:
    """The fold's view of one vehicle, with the store's neighbours kept in memory."""

    def __init__(self, quality: QualitySettings | None = None) -> None:
        self.state = VehicleState()
        self.accepted: list[TrackPoint] = []
        self.quality = quality or QualitySettings()
        self.odometer = OdometerSettings()
        self.verdicts: list[Verdict] = []

    def fold(self, fixes: Iterable[TrackPoint], received: datetime | None = None) -> None:
        for fix in fixes:
            times = [p.t for p in self.accepted]
            i = bisect.bisect_left(times, fix.t)
            before = self.accepted[i - 1] if i else None
            after = self.accepted[i] if i < len(self.accepted) else None
            at = received or fix.t + timedelta(seconds=2)
            self.state, verdict = fold_fix(
                self.state, fix, at, self.quality, self.odometer, before=before, after=after
            )
            if verdict.accepted:
                self.accepted.insert(i, fix)
            self.verdicts.append(verdict)

    @property
    def metres(self) -> float:
        return self.state.odometer_km * 1000


def test_the_route_in_order_measures_its_length_within_half_a_percent() -> None:
    folder = Folder()
    folder.fold(route_points())
    assert all(v.accepted for v in folder.verdicts)
    assert folder.metres == pytest.approx(ROUTE_M, rel=0.005)
    assert folder.state.last == route_points()[-1]


def test_the_route_without_accuracy_or_speed_measures_its_length_too() -> None:
    """What a checker posting the GeoJSON's positions as bare fixes sends: the standing-still
    rule (no speed) must not hold the anchor on a vehicle that is on its way."""
    folder = Folder()
    folder.fold(TrackPoint(p.t, p.lat, p.lon) for p in route_points())
    assert folder.metres == pytest.approx(ROUTE_M, rel=0.005)


def test_the_route_shuffled_within_a_minute_measures_the_same() -> None:
    points = route_points()
    rng = random.Random(7)
    windows: dict[int, list[TrackPoint]] = {}
    for p in points:
        windows.setdefault(int((p.t - START).total_seconds() // 60), []).append(p)
    shuffled = []
    for key in sorted(windows):
        rng.shuffle(windows[key])
        shuffled += windows[key]
    assert shuffled != points
    folder = Folder()
    folder.fold(shuffled)
    assert sum(v.late for v in folder.verdicts) > 1000
    assert all(v.accepted for v in folder.verdicts)
    assert folder.metres == pytest.approx(ROUTE_M, rel=0.005)
    assert folder.state.last == points[-1]  # the last position never went backwards


def drift(n: int, sigma_m: float, accuracy_m: float | None, seed: int = 3) -> list[TrackPoint]:
    rng = random.Random(seed)
    lat0, lon0 = -23.5505, -46.6333
    metres_per_degree = 111_320.0
    return [
        TrackPoint(
            START + timedelta(seconds=5 * i),
            lat0 + rng.gauss(0, sigma_m) / metres_per_degree,
            lon0 + rng.gauss(0, sigma_m) / (metres_per_degree * math.cos(math.radians(lat0))),
            accuracy_m,
        )
        for i in range(n)
    ]


def test_a_parked_vehicle_with_gps_drift_gains_almost_nothing() -> None:
    for accuracy in (10.0, None):  # as reported, or assumed when a tracker reports none
        folder = Folder()
        folder.fold(drift(2000, sigma_m=4.0, accuracy_m=accuracy))
        assert folder.metres < 50, accuracy
        assert all(v.accepted for v in folder.verdicts)


def wander(
    n: int, every_s: float, error68_m: float, accuracy_m: float | None, rho: float, seed: int
) -> list[TrackPoint]:
    """A receiver standing still: `n` fixes `every_s` apart whose error is Gaussian, 68%
    within `error68_m` (what an honest accuracy means), correlated `rho` fix to fix (a
    slowly wandering fix indoors), reporting `accuracy_m` and no speed."""
    rng = random.Random(seed)
    sigma = error68_m / math.sqrt(-2 * math.log(0.32))
    lat0, lon0 = -23.5505, -46.6333
    east = north = 0.0
    fixes = []
    for i in range(n):
        east = rho * east + math.sqrt(1 - rho * rho) * rng.gauss(0, sigma)
        north = rho * north + math.sqrt(1 - rho * rho) * rng.gauss(0, sigma)
        lat = lat0 + north / 111_320.0
        lon = lon0 + east / (111_320.0 * math.cos(math.radians(lat0)))
        fixes.append(TrackPoint(START + timedelta(seconds=every_s * i), lat, lon, accuracy_m))
    return fixes


@pytest.mark.parametrize("seed", range(3))
def test_a_parked_phone_reporting_its_accuracy_but_no_speed_gains_nothing(seed: int) -> None:
    """A phone parked indoors overnight (iOS's speed -1, left out by the phone mappings) with
    an honest accuracy of 25, 40 or 65 m, a fix every 2 min; or 65 m every 10 s wandering
    slowly. Without a speed, a fix is standing still when it is within a standing vehicle's
    drift (50 m, or 2.5 times the two radii) of where the vehicle was 30 s before, as a fix
    that says 0 km/h must be to count. Before, that was 50 m whatever the accuracy: most
    pairs of such fixes are farther apart, each was judged moving and moved the anchor
    beyond the two radii alone (+0.3 to +4.3 km a night)."""
    nights = [wander(8 * 30, 120, acc, acc, 0.0, seed) for acc in (25.0, 40.0, 65.0)]
    nights.append(wander(8 * 360, 10, 65.0, 65.0, 0.95, seed))
    for fixes in nights:
        folder = Folder()
        folder.fold(fixes)
        assert all(v.accepted for v in folder.verdicts)
        assert folder.metres == 0, (fixes[0].accuracy_m, fixes[1].t - fixes[0].t)


@pytest.mark.parametrize("every_s", [0.5, 0.2])
def test_a_vehicle_idling_with_fixes_faster_than_a_second_and_no_speed_gains_nothing(
    every_s: float,
) -> None:
    """A 2 Hz or 5 Hz logger idling 20 minutes, reporting neither speed nor accuracy, its fix
    wandering (68% within 10 m, correlated 0.95 fix to fix, or afresh each fix). Once it has
    stood a minute (the first 30 s of a stop are judged by the accuracy rule alone), nothing
    more is counted: the look-back to where the vehicle was 30 s before is kept by time (a
    dozen points in the state), not among the 32 newest fixes, which at 2 Hz span 16 s:
    no fix was that old, every fix was judged moving (+1.4 km an hour at 2 Hz)."""
    for rho in (0.95, 0.0):
        fixes = wander(int(1200 / every_s), every_s, 10.0, None, rho, seed=5)
        first, rest = fixes[: int(60 / every_s)], fixes[int(60 / every_s) :]
        folder = Folder()
        folder.fold(first)
        stood = folder.metres
        folder.fold(rest)
        assert folder.metres == stood, rho
        assert len(folder.state.trail) <= 12
        assert VehicleState.from_doc(folder.state.to_doc()) == folder.state


def test_a_reading_rebaselines_and_distance_goes_on_from_it() -> None:
    points = route_points()[:200]
    folder = Folder()
    folder.fold(points[:100])
    before = folder.state.odometer_km
    state, event = rebaseline(folder.state, 120_000.0, "reading", points[99].t, folder.odometer)
    assert event is not None and (event.from_km, event.to_km) == (before, 120_000.0)
    folder.state = state
    folder.fold(points[100:])
    gained = sum(a.distance_m(b) for a, b in itertools.pairwise(points[99:]))
    assert folder.state.odometer_km * 1000 == pytest.approx(120_000_000 + gained, rel=1e-6)


def test_a_device_odometer_does_not_override_a_recent_reading_by_default() -> None:
    settings = OdometerSettings()  # readings first, then device odometers
    state, _ = rebaseline(VehicleState(), 500.0, "reading", START, settings)
    kept, event = rebaseline(state, 480.0, "device", START + timedelta(hours=1), settings)
    assert (kept.odometer_km, event) == (500.0, None)
    later, event = rebaseline(state, 530.0, "device", START + timedelta(days=2), settings)
    assert later.odometer_km == 530.0 and event is not None
    device_first = OdometerSettings(precedence=("device", "reading"))
    state, _ = rebaseline(VehicleState(), 480.0, "device", START, device_first)
    kept, event = rebaseline(state, 500.0, "reading", START + timedelta(hours=1), device_first)
    assert (kept.odometer_km, event) == (480.0, None)


def test_a_device_odometer_that_agrees_rebaselines_silently() -> None:
    settings = OdometerSettings()
    state, first = rebaseline(VehicleState(), 1000.0, "device", START, settings)
    state, small = rebaseline(state, 1000.4, "device", START + timedelta(minutes=1), settings)
    state, jump = rebaseline(state, 1010.0, "device", START + timedelta(minutes=2), settings)
    assert first is not None and small is None and jump is not None
    assert state.odometer_km == 1010.0


def test_a_device_odometer_far_below_the_count_is_skipped_a_little_below_is_held() -> None:
    """A device behind the count by more than 1 km plus 5% of what the count grew since its
    last re-baseline counts from another value (a replaced tracker): skipped. One that sends
    its odometer once a day, 3 km below the 100 km GPS counted that day, re-baselines the
    count, but the vehicle's odometer is held where it was until GPS distance passes it; an
    admin's reading below it is a correction, and drops the hold."""
    settings = OdometerSettings()
    state, _ = rebaseline(VehicleState(), 150_000.0, "device", START, settings)
    state = replace(state, odometer_km=150_100.0)  # a day's GPS distance
    later = START + timedelta(hours=10)
    kept, skipped = rebaseline(state, 150_093.9, "device", later, settings)
    assert (kept, skipped) == (state, None)
    held, event = rebaseline(state, 150_097.0, "device", later, settings)
    assert (held.odometer_km, held.shown_km) == (150_097.0, 150_100.0)
    assert event is not None and event.held and event.from_km == 150_100.0
    assert VehicleState.from_doc(held.to_doc()) == held
    on = replace(held, odometer_km=150_101.0)  # 4 km of GPS distance from the register
    assert on.shown_km == 150_101.0
    corrected, event = rebaseline(held, 150_050.0, "reading", later, settings)
    assert corrected.shown_km == 150_050.0 and event is not None and not event.held


def fix(seconds: float, lat: float, lon: float, accuracy: float | None = None) -> TrackPoint:
    return TrackPoint(START + timedelta(seconds=seconds), lat, lon, accuracy)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (fix(10, 0.0, 0.0), Reason.NULL_ISLAND),
        (fix(10, 91.0, 10.0), Reason.INVALID_COORDINATES),
        (fix(10, math.nan, 10.0), Reason.INVALID_COORDINATES),
        (fix(3600 * 24 * 365, -23.55, -46.63), Reason.FUTURE),
        (TrackPoint(datetime(1970, 1, 1, tzinfo=UTC), -23.55, -46.63), Reason.TOO_OLD),
        (fix(10, -23.55, -46.63, accuracy=5000), Reason.INACCURATE),
        (fix(10, -3.119, -60.0217), Reason.IMPOSSIBLE_SPEED),  # Manaus 10 s after Rio
        (fix(0.5, -22.9068, -43.1729), Reason.DUPLICATE),
    ],
)
def test_a_bad_fix_is_refused_with_its_reason_and_moves_nothing(
    bad: TrackPoint, reason: Reason
) -> None:
    folder = Folder()
    rio = fix(0, -22.9068, -43.1729)
    folder.fold([rio], received=START)
    folder.fold([bad], received=START + timedelta(seconds=12))
    assert folder.verdicts[-1].reason is reason
    assert folder.state.last == rio and folder.state.odometer_km == 0


def test_a_late_fix_never_moves_the_last_position_back() -> None:
    points = route_points()[:10]
    folder = Folder()
    folder.fold(points[:5] + points[6:])
    folder.fold([points[5]])
    assert folder.verdicts[-1].late and folder.verdicts[-1].accepted
    assert folder.state.last == points[-1]


def test_a_vehicle_that_really_moved_is_found_after_a_few_agreeing_fixes() -> None:
    folder = Folder()
    folder.fold([fix(0, 0.5, 0.5)])  # a bogus first fix
    sao_paulo = [fix(10 + 5 * i, -23.5505 + i * 1e-4, -46.6333) for i in range(5)]
    folder.fold(sao_paulo)
    reasons = [v.reason for v in folder.verdicts[1:]]
    assert reasons[:2] == [Reason.IMPOSSIBLE_SPEED] * 2
    assert folder.verdicts[3].relocated
    assert folder.state.last == sao_paulo[-1]
    assert folder.state.odometer_km * 1000 < 50  # the jump is not distance driven


def test_the_state_survives_its_document() -> None:
    folder = Folder()
    folder.fold(route_points()[:50])
    assert VehicleState.from_doc(folder.state.to_doc()) == folder.state


# What a fix in order moves in the state (`fold_fix` names every field it builds the next
# state from; the rest it carries as it was).
MOVED_IN_ORDER = {
    "last", "last_detail", "anchor", "odometer_km", "suspects", "recent", "trail",
    "step_from", "step_km", "prior_from", "prior_km", "present", "lead_s", "noise",
    "reading_at", "marks",
}  # fmt: skip


def test_a_fix_in_order_carries_every_state_field_it_does_not_move() -> None:
    """The fold's own state (geofences, plans, sampling, baseline, a suspect device odometer,
    and any field added later) survives a fix in order as it was: one sentinel a field."""
    folder = Folder()
    folder.fold(route_points()[:10])
    carried = {f.name: object() for f in fields(VehicleState) if f.name not in MOVED_IN_ORDER}
    state = replace(folder.state, **carried)
    fix = route_points()[10]
    moved, verdict = fold_fix(
        state, fix, fix.t, folder.quality, folder.odometer, detail={"speed_kmh": 60.0}
    )
    assert verdict.accepted and moved.last == fix and moved.last_detail == {"speed_kmh": 60.0}
    assert {name: getattr(moved, name) for name in carried} == carried


def test_quality_settings_keep_their_defaults_for_what_a_tenant_leaves_out() -> None:
    settings = QualitySettings.from_doc({"max_speed_kmh": 180})
    assert settings.max_speed_kmh == 180.0
    assert settings.future_tolerance_s == QualitySettings().future_tolerance_s


def test_a_lone_jump_after_a_long_stop_is_taken_back_off_the_odometer() -> None:
    """Parked for three hours, the tracker's first fix is 30 km off (reachable in three
    hours, so accepted); the next fixes are back on the road, beside where it parked: the
    jump is not distance driven, and the drive goes on counting from where it parked."""
    folder = Folder()
    east = 0.0004893  # about 50 m of longitude at this latitude
    drive = [fix(5 * i, -23.5, -46.6 + i * east) for i in range(60)]
    folder.fold(drive)
    parked = drive[-1]
    jump = fix(5 * 59 + 3 * 3600, -23.5 + 0.27, parked.lon)
    on = [
        fix(jump.t.timestamp() - START.timestamp() + 5 * i, -23.5, parked.lon + i * east)
        for i in range(1, 20)
    ]
    folder.fold([jump, *on])
    truth = sum(a.distance_m(b) for a, b in itertools.pairwise([*drive, *on]))
    assert folder.state.last == on[-1]
    assert folder.metres == pytest.approx(truth, rel=0.05)
    assert VehicleState.from_doc(folder.state.to_doc()) == folder.state


def test_a_vehicle_carried_away_after_its_last_position_keeps_that_position_counted() -> None:
    """The last position was right (fixes on the road lead to it): fixes far from it and
    from the fix before it relocate the vehicle without taking its distance back."""
    folder = Folder()
    road = [fix(5 * i, -23.5, -46.6 + i * 0.0004893) for i in range(10)]
    folder.fold(road)
    counted = folder.metres
    ferry = [fix(5 * 10 + 5 * i, -23.9, -46.2) for i in range(3)]
    folder.fold(ferry)
    assert folder.verdicts[-1].relocated and folder.state.last == ferry[-1]
    assert folder.metres == pytest.approx(counted)


def test_a_device_odometer_glitch_for_one_fix_moves_nothing() -> None:
    """A device's odometer of 4,294,967 km (or 0) for one fix, among values a few metres
    apart: not a re-baseline (no event), and the next true value goes on as if it had never
    come. The same value twice in a row is the device's count really changing: another unit
    ahead of the count re-baselines it; a reset to 0 never takes the vehicle's odometer back."""
    settings = OdometerSettings()
    speed = QualitySettings().max_speed_kmh
    state, _ = rebaseline(VehicleState(), 1000.0, "device", START, settings)
    events = []
    for seconds, km in [(5, 1000.1), (10, 4_294_967.295), (15, 1000.2), (20, 0.0), (25, 1000.3)]:
        at = START + timedelta(seconds=seconds)
        state, event = rebaseline(state, km, "device", at, settings, max_speed_kmh=speed)
        events.append(event)
    assert state.odometer_km == 1000.3 and events == [None] * 5
    at = START + timedelta(seconds=30)
    state, _ = rebaseline(state, 0.0, "device", at, settings, max_speed_kmh=speed)
    state, reset = rebaseline(
        state, 0.02, "device", at + timedelta(seconds=5), settings, max_speed_kmh=speed
    )
    assert state.odometer_km == 1000.3 and reset is None
    at += timedelta(seconds=10)
    state, _ = rebaseline(state, 2000.0, "device", at, settings, max_speed_kmh=speed)
    state, unit = rebaseline(
        state, 2000.02, "device", at + timedelta(seconds=5), settings, max_speed_kmh=speed
    )
    assert state.odometer_km == 2000.02 and unit is not None and unit.from_km == 1000.3
    assert VehicleState.from_doc(state.to_doc()) == state


def test_a_parked_fix_reflected_200_m_off_is_taken_back_when_the_next_is_home() -> None:
    """Parked, a fix every two minutes at 0 km/h; one of them 200 m off (a reflection), the
    next back beside the car: the reflection's distance is taken back and it is refused as a
    `spike`; the state survives its document in between (the next fix in another pass)."""
    east = 0.0019572  # about 200 m of longitude at this latitude
    parked = [
        TrackPoint(START + timedelta(minutes=2 * i), -23.5, -46.6, 8.0, 0.0) for i in range(5)
    ]
    spike = TrackPoint(START + timedelta(minutes=10), -23.5, -46.6 + east, 6.0, 0.0)
    home = TrackPoint(START + timedelta(minutes=12), -23.50005, -46.6, 8.0, 0.0)
    folder = Folder()
    folder.fold([*parked, spike])
    assert 190 < folder.metres < 210  # counted while it is the last position
    folder.state = VehicleState.from_doc(folder.state.to_doc())
    folder.fold([home])
    verdict = folder.verdicts[-1]
    assert verdict.outlier == spike and verdict.outlier_reason is Reason.SPIKE
    assert folder.metres == 0 and folder.state.last == home


def test_two_parked_fixes_reflected_in_a_row_are_both_taken_back_when_the_next_is_home() -> None:
    """Parked at 0 km/h; two fixes in a row reflected to two places 200 m off (east, then
    north), the next back beside the car: both are refused as `spike` and their distance
    (about 600 m) taken back; the state survives its document in between."""
    east, north = 0.0019572, 0.0017987  # about 200 m each way at this latitude
    parked = [
        TrackPoint(START + timedelta(minutes=2 * i), -23.5, -46.6, 8.0, 0.0) for i in range(5)
    ]
    first = TrackPoint(START + timedelta(minutes=10), -23.5, -46.6 + east, 6.0, 0.0)
    second = TrackPoint(START + timedelta(minutes=12), -23.5 + north, -46.6, 6.0, 0.0)
    home = TrackPoint(START + timedelta(minutes=14), -23.50005, -46.6, 8.0, 0.0)
    folder = Folder()
    folder.fold([*parked, first, second])
    assert 450 < folder.metres < 500  # counted while they are the last positions
    folder.state = VehicleState.from_doc(folder.state.to_doc())
    folder.fold([home])
    verdict = folder.verdicts[-1]
    assert (verdict.earlier_outlier, verdict.outlier) == (first, second)
    assert verdict.outlier_reason is Reason.SPIKE
    assert folder.metres == 0 and folder.state.last == home


def test_a_yard_move_with_two_fixes_at_one_place_out_there_keeps_its_distance() -> None:
    """No speed reported: the vehicle drives 200 m, stands there for two fixes (within a
    few metres of each other), and comes back: not two reflections (they land in two
    places), so the trip counts both ways."""
    east = 0.0019572
    parked = TrackPoint(START, -23.5, -46.6, 8.0)
    there = [
        TrackPoint(START + timedelta(minutes=2), -23.5, -46.6 + east, 6.0),
        TrackPoint(START + timedelta(minutes=4), -23.50003, -46.6 + east, 6.0),
    ]
    back = TrackPoint(START + timedelta(minutes=6), -23.5, -46.6, 8.0)
    folder = Folder()
    folder.fold([parked, *there, back])
    assert all(v.outlier is None and v.earlier_outlier is None for v in folder.verdicts)
    assert folder.metres == pytest.approx(2 * parked.distance_m(there[0]), rel=1e-9)


def test_a_drive_out_and_back_reporting_its_speed_keeps_its_distance() -> None:
    """The same three places, but the fix 200 m off reports 30 km/h (the vehicle really went
    there and came back): nothing is taken back."""
    east = 0.0019572
    parked = TrackPoint(START, -23.5, -46.6, 8.0, 0.0)
    there = TrackPoint(START + timedelta(seconds=40), -23.5, -46.6 + east, 6.0, 30.0)
    back = TrackPoint(START + timedelta(seconds=80), -23.5, -46.6, 8.0, 0.0)
    folder = Folder()
    folder.fold([parked, there, back])
    assert folder.verdicts[-1].outlier is None
    assert folder.metres == pytest.approx(2 * parked.distance_m(there), rel=1e-9)


def test_the_device_followed_is_kept_in_the_state_document_and_handed_over_after_silence() -> None:
    """The tracker's fixes, then the state through its document (a fold taking the vehicle
    over): the phone's next fix is still `other_device`, its late one too (among the
    tracker's); once the tracker has been silent `device_handover_s` the phone takes over,
    and a fix without a device (stored before fixes named theirs) is anyone's."""
    east = 0.0000979  # about 10 m of longitude
    tracker = [replace(fix(10 * i, -23.5, -46.6 + i * east, 5.0), device="trk") for i in range(6)]
    folder = Folder()
    folder.fold(tracker)
    folder.state = VehicleState.from_doc(folder.state.to_doc())
    assert folder.state.last is not None and folder.state.last.device == "trk"
    phone_now = replace(fix(55, -23.5, -46.6 + 5.5 * east, 8.0), device="phone")
    phone_late = replace(fix(25, -23.5, -46.6 + 2.5 * east, 8.0), device="phone")
    folder.fold([phone_now, phone_late])
    assert [v.reason for v in folder.verdicts[-2:]] == [Reason.OTHER_DEVICE] * 2
    handover = folder.odometer.device_handover_s
    later = replace(fix(50 + handover, -23.5, -46.6 + 7 * east, 8.0), device="phone")
    unnamed = fix(55 + handover, -23.5, -46.6 + 8 * east, 8.0)
    folder.fold([later, unnamed])
    assert [v.reason for v in folder.verdicts[-2:]] == [None, None]
    assert folder.state.last == unnamed
