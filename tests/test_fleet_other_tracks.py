"""The fold on track classes beyond São Paulo's roads (docs/fleet.md "How close it is, by kind
of track"): a road across the antimeridian (179.9° → −179.9°) and one at 78° N, a vehicle
parked on the antimeridian whose jitter crosses it, an authorized area across the antimeridian
(one MultiPolygon fence), times with offsets from −09:30 to +14:00 and
fractional seconds down to nanoseconds, a device odometer present or absent, and a tracker
whose speed is stuck at 0 while the vehicle drives. Posted through a position trigger, folded
by the real app, read back through the API, and compared with a haversine reference computed
here (R = 6,371,008.8 m, `tests/tracks.py`)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from tests import tracks
from tests.test_fleet_tracks import check_fold, ending_now, fold, new_vehicle, post_track, vehicle
from tests.test_fleet_unseen_tracks import crossings, events, new_fence, post_fixes
from tests.tracks import GenFix, Path, Receiver, Track
from tests.triggers_support import Client, create_position_trigger, hook

TAVEUNI = (-16.80, 179.95)  # Fiji: the antimeridian runs across the island
SVALBARD = (78.22, 15.65)  # Longyearbyen, 78° N


def test_the_reference_is_haversine_on_the_mean_earth_radius() -> None:
    assert tracks.R_M == 6_371_008.8
    # One degree of longitude across the antimeridian is one degree, not 359.
    east, west = tracks.haversine_m(0.0, 179.5, 0.0, -179.5), tracks.haversine_m(0, 0, 0, 1)
    assert math.isclose(east, west)
    assert math.isclose(west, 2 * math.pi * tracks.R_M / 360)


def road(
    start: datetime, origin: tuple[float, float], heading: float, seed: int, minutes: int = 12
) -> Path:
    """A country road: 60–90 km/h, straights and gentle curves (radius 1–3 km)."""
    rng = random.Random(seed)
    path = Path(start, *origin, heading=heading)
    while (path.now.t - start).total_seconds() < minutes * 60:
        kmh = rng.uniform(60, 90)
        path.drive(rng.randint(40, 120), kmh)
        turn = math.degrees(kmh / 3.6 / rng.uniform(1000, 3000)) * rng.choice((-1, 1))
        path.drive(rng.randint(20, 60), kmh, turn)
    return path


def driven(
    name: str,
    path: Path,
    seed: int,
    *,
    every_s: tuple[float, float] = (1, 5),
    tolerance: float = 0.005,
    speed: bool = True,
) -> Track:
    """The path seen by a receiver (3 m correlated error) every `every_s` seconds; the
    reference is the haversine length of the noiseless path at the fixes' times (the chords
    the odometer can see)."""
    rng = random.Random(seed)
    fixes = tracks.sample_every(path, rng, *every_s, Receiver(rng, sigma_m=3.0, speed=speed))
    by_time = {s.t: s for s in path.samples}
    chords = tracks.length_m([by_time[f.t] for f in fixes])
    return Track(
        name,
        fixes,
        path.length_m,
        tolerance,
        measurable_m=chords,
        sends=tracks.in_batches(len(fixes), 40),
    )


async def test_a_road_across_the_antimeridian_sent_out_of_order_folds_to_its_length(
    client: Client,
) -> None:
    """Eastwards from 179.95° on Taveuni into −179.9x°: the fixes on either side are 200 m apart,
    not 40,000 km; batches out of order, duplicates and a batch sent twice change nothing."""

    def make(start: datetime) -> Track:
        path = road(start, TAVEUNI, heading=80.0, seed=3)
        return tracks.shuffled_sends(driven("antimeridian", path, seed=3), seed=3)

    track = ending_now(make)
    lons = [f.lon for f in track.fixes]
    assert max(lons) > 179.99 and min(lons) < -179.99  # it does cross
    assert all(-180 <= lon < 180 for lon in lons)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "FIJ1A01")
    await post_track(client, trigger, track, "FIJ1A01")
    await fold(client)
    await check_fold(client, track, "FIJ1A01")


async def test_a_road_at_78_degrees_north_folds_to_its_length(client: Client) -> None:
    """At 78° N a degree of longitude is 23 km, not 111: distances are the sphere's."""
    track = ending_now(lambda s: driven("svalbard", road(s, SVALBARD, 120.0, seed=4), seed=4))
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "SVB1A01")
    await post_track(client, trigger, track, "SVB1A01")
    await fold(client)
    await check_fold(client, track, "SVB1A01")


def parked_at(lat: float, lon: float) -> Callable[[datetime], Track]:
    def make(start: datetime) -> Track:
        rng = random.Random(7)
        path = Path(start, lat, lon, heading=0).stop(3600)
        fixes = tracks.sample_every(path, rng, 1, 10, Receiver(rng))
        return Track("parked", fixes, 0.0, 0.0, 50.0, sends=tracks.in_batches(len(fixes), 100))

    return make


async def test_a_vehicle_parked_on_the_antimeridian_or_at_78_north_gains_nothing(
    client: Client,
) -> None:
    """An hour parked, a fix every 1–10 s drifting 5–15 m: on the antimeridian the drift puts
    fixes at 179.9999° and −179.9999° by turns; at 78° N a metre east is 5 times the degrees it
    is at the equator. Neither may grow the odometer past SPEC §6's jitter allowance (50 m)."""
    trigger = await create_position_trigger(client)
    for plate, (lat, lon) in (("PRK7A01", (-16.8, 179.99995)), ("PRK7A02", SVALBARD)):
        track = ending_now(parked_at(lat, lon))
        if plate == "PRK7A01":
            assert {f.lon > 0 for f in track.fixes} == {True, False}
        await new_vehicle(client, plate)
        await post_track(client, trigger, track, plate)
        await fold(client)
        await check_fold(client, track, plate)


async def test_a_circles_radius_is_metres_across_the_antimeridian_and_at_78_north(
    client: Client,
) -> None:
    """A 1,000 m circle (margin 10 m) centred on the antimeridian and one at 78° N: walking out
    east (across the antimeridian) and north in 10 m steps with 5 m accuracy, the exit is at
    the first fix beyond 1,015 m, the entry back at the first within 990 m."""
    trigger = await create_position_trigger(client)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    for n, (lat, lon) in enumerate(((-16.8, 180.0), SVALBARD)):
        fence = {"name": f"Polo {n}", "kind": "authorized"}
        fence["circle"] = {"lat": lat, "lon": lon, "radius_m": 1000}
        await new_fence(client, {**fence, "margin_m": 10})
        for k, bearing in enumerate((90, 0)):
            plate = f"POL{n}A0{k}"
            steps = [*range(903, 1104, 10), *range(1093, 902, -10)]
            fixes = []
            for i, metres in enumerate(steps):
                p_lat, p_lon = tracks.destination(lat, lon, bearing, metres)
                when = start + timedelta(seconds=2 * i)
                fixes.append(GenFix(when, p_lat, p_lon, 18.0, bearing, 5.0))
            await new_vehicle(client, plate)
            await post_fixes(client, trigger, plate, fixes)
            await fold(client)
            found = [
                *(await events(client, "vehicle.geofence.exited", plate)),
                *(await events(client, "vehicle.geofence.entered", plate)),
            ]
            where = {
                e["type"]: round(
                    tracks.haversine_m(
                        lat, lon, e["detail"]["position"]["lat"], e["detail"]["position"]["lon"]
                    )
                )
                for e in found
            }
            assert where == {"vehicle.geofence.exited": 1023, "vehicle.geofence.entered": 983}, (
                plate
            )


def box(west: float, south: float, east: float, north: float) -> list[list[float]]:
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


async def test_an_authorized_area_across_the_antimeridian_is_one_fence_left_only_at_its_border(
    client: Client,
) -> None:
    """An authorized area round Taveuni, across 180°, given as RFC 7946 §3.1.9 says: a
    MultiPolygon of its two halves cut at the antimeridian. A vehicle drives east at 72 km/h, a
    fix every 10 s (200 m), from 179.90° across 180° to −179.98°, inside the area, then on out
    of its eastern border at −179.80°: one `exited`, at that border, none at the cut. Before,
    a MultiPolygon was refused and docs/fleet.md said to cut the area in two fences: the western
    one reported `exited` at −179.9985°, inside the area (and the eastern one `entered`), at
    every crossing of the line."""
    trigger = await create_position_trigger(client)
    area = [[box(179.80, -16.95, 180.0, -16.70)], [box(-180.0, -16.95, -179.80, -16.70)]]
    polygon = {"type": "MultiPolygon", "coordinates": area}
    fence = {"name": "Taveuni", "kind": "authorized", "vehicles": ["TAV1A01"], "polygon": polygon}
    await new_fence(client, fence)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    fixes = []
    for i in range(175):  # 35 km: to -179.77°
        lat, lon = tracks.destination(-16.82, 179.90, 90, 200 * i)
        fixes.append(GenFix(start + timedelta(seconds=10 * i), lat, lon, 72.0, 90.0, 5.0))
    inside = [f for f in fixes if f.lon > 179.9 or f.lon < -179.81]
    assert {f.lon > 0 for f in inside} == {True, False}  # across the antimeridian, inside
    await new_vehicle(client, "TAV1A01")
    await post_fixes(client, trigger, "TAV1A01", fixes)
    await fold(client)
    assert await crossings(client, "TAV1A01") == [("Taveuni", "exited")]
    [exited] = await events(client, "vehicle.geofence.exited", "TAV1A01")
    assert -179.80 < exited["detail"]["position"]["lon"] < -179.79


OFFSETS = [timedelta(hours=h, minutes=m) for h, m in ((-3, 0), (5, 45), (-9, -30), (14, 0))]


def local_time(t: datetime, rng: random.Random) -> str:
    """`t` as a device may write it: an offset (or Z), a `T` or a space, and its fraction in
    1 to 9 digits (nanoseconds too; the fold keeps milliseconds, truncated)."""
    zone = rng.choice([UTC, *(timezone(o) for o in OFFSETS)])
    text = t.astimezone(zone).isoformat(sep=rng.choice("T "), timespec="microseconds")
    head, _, tail = text.partition(".")
    digits, sign, offset = tail[:6], tail[6], tail[7:]
    digits = (digits + rng.choice(("", "789", "000999")))[: rng.choice((3, 4, 6, 9))]
    zone_text = "Z" if zone is UTC else f"{sign}{offset}"
    return f"{head}.{digits}{zone_text}"


async def test_fixes_with_offsets_and_fractional_seconds_are_one_track_in_utc(
    client: Client,
) -> None:
    """A road whose fixes carry milliseconds, written with offsets from −09:30 to +14:00 and 3
    to 9 fractional digits: stored at their UTC millisecond, folded in that order; the same
    fixes sent again, written with other offsets, are duplicates."""
    rng = random.Random(11)

    def make(start: datetime) -> Track:
        track = driven("offsets", road(start, tracks.BANDEIRANTES, 200.0, seed=11), seed=11)
        shifted = [
            replace(f, t=f.t + timedelta(milliseconds=rng.randint(0, 999))) for f in track.fixes
        ]
        return replace(track, fixes=shifted)

    track = ending_now(make)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "TMZ1A01")
    for again in (False, True):
        for batch in track.batches():
            body = [{**f.canonical("TMZ1A01"), "time": local_time(f.t, rng)} for f in batch]
            status, answer = await hook(client, trigger, body)
            assert status == 200, answer
            assert answer["summary"]["duplicates"] == (len(batch) if again else 0), answer
    await fold(client)
    await check_fold(client, track, "TMZ1A01")


async def test_a_device_odometer_present_or_absent_gives_the_same_distance(
    client: Client,
) -> None:
    """The same road twice: one tracker reports its register (0.1 km steps, from 150,000 km),
    the other none. With it the vehicle's odometer follows the register; without, the GPS
    count from 0 is within 0.5% of the haversine reference."""
    track = ending_now(lambda s: driven("odometer", road(s, tracks.SAO_PAULO, 30.0, 5), seed=5))
    by_time = {f.t: i for i, f in enumerate(track.fixes)}
    gone = [0.0]
    for a, b in zip(track.fixes, track.fixes[1:], strict=False):
        gone.append(gone[-1] + tracks.haversine_m(a.lat, a.lon, b.lat, b.lon))
    trigger = await create_position_trigger(client)
    for plate, register in (("ODO1A01", True), ("ODO1A02", False)):
        await new_vehicle(client, plate)
        for batch in track.batches():
            body = []
            for f in batch:
                fix = f.canonical(plate)
                if register:
                    fix["odometer_km"] = math.floor(1_500_000 + gone[by_time[f.t]] / 100) / 10
                body.append(fix)
            status, answer = await hook(client, trigger, body)
            assert status == 200, answer
        await fold(client)
    with_register = (await vehicle(client, "ODO1A01"))["odometer_km"]
    assert abs(with_register - (150_000 + gone[-1] / 1000)) <= 0.1, (with_register, gone[-1])
    await check_fold(client, track, "ODO1A02")


async def test_a_tracker_whose_speed_is_stuck_at_0_still_counts_the_drive(
    client: Client,
) -> None:
    """A broken speed wire: every fix says 0 km/h while the vehicle drives at 60–90 km/h, a fix
    every 5–10 s. Each such fix must be 50 m from the last counted one to count (a standing
    vehicle's drift), which at these speeds every fix is: within 0.5% of the reference."""

    def make(start: datetime) -> Track:
        track = driven("speed-0", road(start, tracks.SAO_PAULO, 300.0, 9), 9, every_s=(5, 10))
        return replace(track, fixes=[replace(f, speed_kmh=0.0) for f in track.fixes])

    track = ending_now(make)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "SPD0A01")
    await post_track(client, trigger, track, "SPD0A01")
    await fold(client)
    await check_fold(client, track, "SPD0A01")


async def test_a_crawl_with_speed_0_counts_once_it_is_50_m_on(client: Client) -> None:
    """At 8 km/h with a fix every 5 s (11 m apart) and speed 0 reported, no single step counts,
    but the crawl is counted from the anchor every 50 m: short of the reference by less than
    the last 50 m."""

    def make(start: datetime) -> Track:
        path = Path(start, *tracks.SAO_PAULO, heading=45.0).drive(600, 8.0)
        track = driven("crawl", path, 12, every_s=(5, 5))
        fixes = [replace(f, speed_kmh=0.0) for f in track.fixes]
        return replace(track, fixes=fixes, rel_tolerance=0.0, abs_tolerance_m=60.0)

    track = ending_now(make)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "CRW0A01")
    await post_track(client, trigger, track, "CRW0A01")
    await fold(client)
    await check_fold(client, track, "CRW0A01")
