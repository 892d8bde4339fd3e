"""The fold on tracks from an outside tester's list (fourth look): noisy fixes beside a
restricted area, a city's stop-and-go with long stops, a tunnel, a highway at 120 km/h with
fixes every 30 s, two devices on one vehicle reporting interleaved, a track across the equator
and one across the antimeridian, duplicates and fixes out of order within and beyond one fold,
accuracy 0 or missing. Everything through HTTP to a position trigger and the real database,
read back through the API (docs/fleet.md)."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.web.state import services_key
from tests import tracks
from tests.support import auth
from tests.test_fleet_tracks import fold, new_vehicle, whole_track
from tests.triggers_support import Client, create_position_trigger, hook

TENANT = "acme"
QUARRY = (-23.40, -46.75)


async def events(client: Client, event_type: str) -> list[dict[str, Any]]:
    found = await client.app[services_key].events.find(TENANT, event_type=event_type)
    return sorted(found, key=lambda e: e["occurred_at"])


async def create_fence(client: Client, **body: Any) -> None:
    response = await client.post("/api/v1/geofences", json=body, headers=auth())
    assert response.status == 201, await response.text()


async def post(client: Client, trigger: dict[str, Any], fixes: list[dict[str, Any]]) -> None:
    for i in range(0, len(fixes), 100):
        status, answer = await hook(client, trigger, fixes[i : i + 100])
        assert status == 200 and answer["summary"]["failed"] == 0, answer


async def test_fixes_too_inaccurate_to_be_inside_a_restricted_area_do_not_enter_it(
    client: Client,
) -> None:
    """A truck drives past a restricted quarry (a 1 km circle), 80 m outside its border, fixes
    every 10 s with 5 m of accuracy; one fix in ten is a poor one (150 m of accuracy, under
    the 200 m gate) that lands 50 m inside. Then it really drives into the quarry and out.
    One entry and one exit: the poor fixes may be outside (50 < 25 + 150) and alert nobody,
    as they would not count as leaving either. Before, each one was an entry and the next
    good fix an exit: ten false alarms (and as many exits)."""
    await create_fence(
        client,
        name="pedreira",
        kind="restricted",
        circle={"lat": QUARRY[0], "lon": QUARRY[1], "radius_m": 1000},
    )
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "QRY1A01")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    rng = random.Random(4)
    fixes: list[dict[str, Any]] = []

    def at(bearing: float, metres: float, accuracy_m: float) -> None:
        lat, lon = tracks.destination(*QUARRY, bearing, metres)
        t = start + timedelta(seconds=10 * len(fixes))
        fixes.append({"plate": "QRY1A01", "time": t.isoformat(), "lat": lat, "lon": lon,
                      "speed_kmh": 40.0, "accuracy_m": accuracy_m})  # fmt: skip

    for k in range(100):  # round the north side on a ring road 1,080 m from the centre
        bearing = (-60 + 1.2 * k) % 360
        if k % 10 == 5:
            at(bearing, 950 + rng.uniform(-5, 5), 150.0)  # 50 m inside, 150 m of accuracy
        else:
            at(bearing, 1080 + rng.uniform(-4, 4), 5.0)
    for metres in range(1080, -1, -100):  # then down into the quarry, to its centre
        at(60, metres, 5.0)
    for metres in range(100, 1300, 100):  # and out
        at(240, metres, 5.0)
    await post(client, trigger, fixes)
    await fold(client)
    entered = await events(client, "vehicle.geofence.entered")
    exited = await events(client, "vehicle.geofence.exited")
    assert len(entered) == 1 and len(exited) == 1, (entered, exited)
    # entered 120 m in (880 m from the centre), left 100 m out (1,100 m)
    assert entered[0]["occurred_at"] == datetime.fromisoformat(fixes[102]["time"])
    assert exited[0]["occurred_at"] == datetime.fromisoformat(fixes[121]["time"])


# -- tracks built here: a path (tests/tracks.py `Path`, one noiseless sample a second) sampled
# by a device at its own interval, with its own noise ------------------------------------------


async def vehicle_doc(client: Client, plate: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())
    assert response.status == 200
    return dict(await response.json())


def ending_now(seconds: int) -> datetime:
    """A start such that a path of `seconds` ends two minutes ago."""
    now = datetime.now(UTC).replace(microsecond=0)
    return now - timedelta(seconds=seconds + 120)


def sample_path(
    path: tracks.Path,
    plate: str,
    *,
    every_s: int,
    stopped_every_s: int | None = None,
    noise_m: float = 2.0,
    drift_m: tuple[float, float] = (5.0, 15.0),
    accuracy: Any = lambda i: 6.0,
    speed: bool = True,
    device: str | None = None,
    offset_s: int = 0,
    gaps: tuple[tuple[int, int], ...] = (),
    seed: int = 1,
) -> tuple[list[dict[str, Any]], list[tuple[float, float]]]:
    """The path as a device sends it: a fix every `every_s` seconds while moving (every
    `stopped_every_s` while stopped), none within `gaps` (second ranges); moving fixes with
    a correlated error of about `noise_m`, stopped ones drifting `drift_m` off the vehicle.
    Also the noiseless points of the moving fixes (what the odometer can measure: chords)."""
    rng = random.Random(seed)
    fixes: list[dict[str, Any]] = []
    clean: list[tuple[float, float]] = []
    east = north = 0.0
    samples = path.samples
    last_sent = -(10**9)
    for i in range(offset_s, len(samples)):
        s = samples[i]
        moving = s.speed_kmh > 0.5
        interval = every_s if moving or stopped_every_s is None else stopped_every_s
        if i - last_sent < interval or any(a <= i < b for a, b in gaps):
            continue
        last_sent = i
        if moving:
            east = 0.9 * east + rng.gauss(0, noise_m * 0.45)
            north = 0.9 * north + rng.gauss(0, noise_m * 0.45)
            lat, lon = tracks.offset(s.lat, s.lon, east, north)
            clean.append((s.lat, s.lon))
        else:
            r, a = rng.uniform(*drift_m), rng.uniform(0, 360)
            lat, lon = tracks.destination(s.lat, s.lon, a, r)
            if not clean or clean[-1] != (s.lat, s.lon):
                clean.append((s.lat, s.lon))
        fix: dict[str, Any] = {"plate": plate, "time": tracks.iso(s.t), "lat": lat, "lon": lon}
        acc = accuracy(len(fixes))
        if acc is not None:
            fix["accuracy_m"] = acc
        if speed:
            fix["speed_kmh"] = round(s.speed_kmh, 1)
        if device is not None:
            fix["tracker_id"] = device
        fixes.append(fix)
    return fixes, clean


def chords_m(points: list[tuple[float, float]]) -> float:
    return sum(tracks.haversine_m(*a, *b) for a, b in itertools.pairwise(points))


async def odometer_m(client: Client, plate: str) -> float:
    return float((await vehicle_doc(client, plate))["odometer_km"]) * 1000


async def test_urban_stop_and_go_with_long_stops_and_drift_measures_its_chords(
    client: Client,
) -> None:
    """A city block pattern in São Paulo: 12 legs of 250–600 m at 30–50 km/h with corners,
    five stops of 1 to 12 minutes (a delivery, a queue) during which the tracker sends every
    30 s and the fix drifts 5–15 m; fixes every 5 s while moving, accuracy on every other fix
    only. The odometer measures the moving fixes' chords (the road, less what 5 s fixes cut
    at corners) within 0.5%: the stops' drift adds nothing."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "URB1A01")
    legs = [(300, 40), (450, 30), (250, 50), (600, 40), (350, 30), (500, 45)] * 2
    stops = {1: 60, 3: 720, 5: 300, 8: 480, 10: 90}
    total = sum(int(m / (v / 3.6)) + 20 for m, v in legs) + sum(stops.values()) + 200
    path = tracks.Path(ending_now(total), -23.5614, -46.6559, 90)
    for k, (metres, kmh) in enumerate(legs):
        path.drive(int(metres / (kmh / 3.6)), kmh)
        path.turn(90 if k % 3 else -90, 15, 6)
        if k in stops:
            path.stop(stops[k])
    fixes, clean = sample_path(
        path, "URB1A01", every_s=5, stopped_every_s=30, accuracy=lambda i: 8.0 if i % 2 else None
    )
    await post(client, trigger, fixes)
    await fold(client)
    measured = await odometer_m(client, "URB1A01")
    expected = chords_m(clean)
    assert abs(measured - expected) <= 0.005 * expected, (measured, expected, path.length_m)


async def test_a_tunnel_of_three_minutes_then_the_road_goes_on_counts_the_tunnel(
    client: Client,
) -> None:
    """80 km/h on a straight road, fixes every 5 s, then a 4 km tunnel: no fix for three
    minutes, and the first fix out is 4 km on. The gap is a straight road: the odometer has
    it (within 0.5% of the road), and nothing is refused."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "TUN1A01")
    path = tracks.Path(ending_now(900), -23.35, -46.86, 330).drive(840, 80)
    fixes, clean = sample_path(path, "TUN1A01", every_s=5, gaps=((300, 480),), noise_m=3.0)
    await post(client, trigger, fixes)
    await fold(client)
    road = chords_m(clean)  # the straight road from the first fix to the last
    measured = await odometer_m(client, "TUN1A01")
    assert abs(measured - road) <= 0.005 * road, (measured, road)
    assert {f["rejected"] for f in await whole_track(client, "TUN1A01")} == {None}


async def test_a_highway_at_120_km_h_with_fixes_every_30_s_measures_its_road(
    client: Client,
) -> None:
    """120 km/h for 40 minutes on a highway curving gently (a 20 km radius, then straight,
    then the other way), a fix every 30 s (1 km apart) with 5 m of noise and accuracy 10:
    the chords of such fixes are within 0.1% of the road, and so is the odometer, 0.5%."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "HWY1A01")
    turn = math.degrees(120 / 3.6 / 20_000)  # degrees a second on a 20 km radius
    path = tracks.Path(ending_now(2400), -22.90, -47.06, 300)
    path.drive(800, 120, turn).drive(800, 120).drive(800, 120, -turn)
    fixes, clean = sample_path(path, "HWY1A01", every_s=30, noise_m=5.0, accuracy=lambda i: 10.0)
    await post(client, trigger, fixes)
    await fold(client)
    last = datetime.fromisoformat(fixes[-1]["time"])
    road = tracks.length_m([s for s in path.samples if s.t <= last])
    assert abs(chords_m(clean) - road) <= 0.001 * road
    measured = await odometer_m(client, "HWY1A01")
    assert abs(measured - road) <= 0.005 * road, (measured, road)


async def test_two_devices_on_one_vehicle_reporting_interleaved_count_the_road_once(
    client: Client,
) -> None:
    """A tracker every 10 s and the driver's phone every 10 s, 5 s after it, each with its own
    error (the phone 12 m off the road on average), both naming the vehicle by plate and
    themselves by `tracker_id`: the road is counted once (within 0.5%), not the zigzag
    between them, and the phone's fixes are kept, flagged `other_device`."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "DUO1A01")
    path = tracks.Path(ending_now(1300), -23.50, -46.70, 45)
    path.drive(400, 60).turn(60, 30, 10).drive(400, 60).stop(120).drive(300, 50)
    tracker, clean = sample_path(path, "DUO1A01", every_s=10, device="TRK-1", seed=2)
    phone, _ = sample_path(
        path, "DUO1A01", every_s=10, offset_s=5, device="PHONE-9", noise_m=12.0, seed=3,
        accuracy=lambda i: 15.0,
    )  # fmt: skip
    both = sorted(tracker + phone, key=lambda f: f["time"])
    await post(client, trigger, both)
    await fold(client)
    road = chords_m(clean)  # the tracker's noiseless fixes
    measured = await odometer_m(client, "DUO1A01")
    assert abs(measured - road) <= 0.005 * road, (measured, road)
    reasons = {f["device"]: set() for f in await whole_track(client, "DUO1A01")}
    for f in await whole_track(client, "DUO1A01"):
        reasons[f["device"]].add(f["rejected"])
    assert reasons == {"TRK-1": {None}, "PHONE-9": {"other_device"}}, reasons


async def test_a_track_across_the_equator_at_macapa_counts_fences_and_plans_once(
    client: Client,
) -> None:
    """North along the meridian of Macapá (51.07° W) from 0.06° S to 0.06° N, 60 km/h, fixes
    every 5 s: a restricted circle of 1 km centred on the equator is entered once and left
    once; a plan every 5 km from 0 announces due_soon and due at 5 and 10 km, once each; the
    odometer is the road within 0.5%."""
    await create_fence(
        client, name="linha-do-equador", kind="restricted",
        circle={"lat": 0.0, "lon": -51.07, "radius_m": 1000},
    )  # fmt: skip
    plan = {"name": "5k", "every_km": 5, "due_soon_km": 1, "vehicles": ["EQU1A01"]}
    response = await client.post("/api/v1/maintenance-plans", json=plan, headers=auth())
    assert response.status == 201, await response.text()
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "EQU1A01", odometer_km=0)
    path = tracks.Path(ending_now(820), -0.06, -51.07, 0).drive(800, 60)
    fixes, clean = sample_path(path, "EQU1A01", every_s=5, noise_m=3.0)
    assert fixes[0]["lat"] < 0 < fixes[-1]["lat"]
    await post(client, trigger, fixes)
    await fold(client)
    road = chords_m(clean)
    measured = await odometer_m(client, "EQU1A01")
    assert abs(measured - road) <= 0.005 * road, (measured, road)
    entered = await events(client, "vehicle.geofence.entered")
    exited = await events(client, "vehicle.geofence.exited")
    assert (len(entered), len(exited)) == (1, 1), (entered, exited)
    assert entered[0]["detail"]["position"]["lat"] < 0 < exited[0]["detail"]["position"]["lat"]
    due = [e["detail"]["due_km"] for e in await events(client, "vehicle.maintenance.due")]
    soon = [e["detail"]["due_km"] for e in await events(client, "vehicle.maintenance.due_soon")]
    assert (due, soon) == ([5, 10], [5, 10]), (due, soon)


async def test_a_track_across_the_antimeridian_is_measured_and_fenced_across_it(
    client: Client,
) -> None:
    """East along 16.8° S (Fiji) from 179.97° E to 179.97° W, 50 km/h, fixes every 5 s: the
    odometer is the road within 0.5% (not a trip round the world), no fix is refused as an
    impossible jump, and a restricted circle of 500 m centred on the 180th meridian is entered
    and left once. A polygon fence just west of it sees its own crossing."""
    await create_fence(
        client, name="meridiano", kind="restricted",
        circle={"lat": -16.8, "lon": 180.0, "radius_m": 500},
    )  # fmt: skip
    west = [[179.985, -16.81], [179.995, -16.81], [179.995, -16.79], [179.985, -16.79]]
    await create_fence(
        client, name="oeste", kind="restricted",
        polygon={"type": "Polygon", "coordinates": [[*west, west[0]]]},
    )  # fmt: skip
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "FIJ1A01")
    path = tracks.Path(ending_now(500), -16.8, 179.97, 90).drive(470, 50)
    fixes, clean = sample_path(path, "FIJ1A01", every_s=5, noise_m=3.0)
    assert fixes[0]["lon"] > 179 and fixes[-1]["lon"] < -179
    await post(client, trigger, fixes)
    await fold(client)
    road = chords_m(clean)
    measured = await odometer_m(client, "FIJ1A01")
    assert abs(measured - road) <= 0.005 * road, (measured, road)
    assert {f["rejected"] for f in await whole_track(client, "FIJ1A01")} == {None}
    entered = await events(client, "vehicle.geofence.entered")
    exited = await events(client, "vehicle.geofence.exited")
    names = sorted(e["detail"]["geofence"]["name"] for e in entered)
    assert names == ["meridiano", "oeste"], entered
    assert sorted(e["detail"]["geofence"]["name"] for e in exited) == names
    last = (await vehicle_doc(client, "FIJ1A01"))["last_position"]
    assert last["lon"] < -179


async def test_scrambled_and_duplicated_sends_fold_like_the_same_fixes_in_order(
    client: Client,
) -> None:
    """The same 12 km drive sent two ways: in order, once; and shuffled within each batch,
    every batch sent twice, a fifth of its fixes repeated inside the batch, and a stretch of
    3 minutes (round a corner) held back and sent after everything else was folded (a buffer
    uploaded late, beyond the fold's window). Both vehicles end with the same odometer (to
    the metre), last position and track, the same fence exit, and each service due once.
    What a stream cannot do is announce in the past: before the late stretch came, the gap's
    chord cut the corner, so the dues after it are announced a few fixes later, and the
    stretch's own due_soon and due, crossed in one step, as the due alone."""
    await create_fence(
        client, name="posto", kind="authorized",
        circle={"lat": -23.45, "lon": -46.60, "radius_m": 2500},
    )  # fmt: skip
    plan = {"name": "3k", "every_km": 3, "due_soon_km": 0.5}
    response = await client.post("/api/v1/maintenance-plans", json=plan, headers=auth())
    assert response.status == 201, await response.text()
    trigger = await create_position_trigger(client)
    path = tracks.Path(ending_now(900), -23.45, -46.60, 20)
    path.drive(300, 60).turn(-90, 25, 8).drive(300, 50).stop(60).drive(200, 60)
    rng = random.Random(7)
    results: dict[str, Any] = {}
    announced: dict[str, dict[str, list[Any]]] = {}
    for plate in ("ORD1A01", "MIX1A01"):
        await new_vehicle(client, plate, odometer_km=0)
        fixes, _ = sample_path(path, plate, every_s=5, noise_m=3.0, seed=5)
        if plate == "ORD1A01":
            await post(client, trigger, fixes)
            await fold(client)
        else:
            held = fixes[60:96]
            rest = fixes[:60] + fixes[96:]
            for i in range(0, len(rest), 25):
                batch = rest[i : i + 25]
                batch = batch + rng.sample(batch, len(batch) // 5)
                rng.shuffle(batch)
                for _ in range(2):
                    status, answer = await hook(client, trigger, batch)
                    assert status == 200 and answer["summary"]["failed"] == 0, answer
                await fold(client)
            await post(client, trigger, held)
            await fold(client)
        car = await vehicle_doc(client, plate)
        track = await whole_track(client, plate)
        exits = [
            e["occurred_at"] for e in await events(client, "vehicle.geofence.exited")
            if e["entity"]["key"] == plate
        ]  # fmt: skip
        results[plate] = (
            round(car["odometer_km"] * 1000),
            car["last_position"]["time"],
            [(f["time"], f["rejected"]) for f in track],
            exits,
        )
        announced[plate] = {}
        for kind in ("due", "due_soon"):
            found = await events(client, f"vehicle.maintenance.{kind}")
            announced[plate][kind] = [
                e["detail"]["due_km"] for e in found if e["entity"]["key"] == plate
            ]
    assert results["ORD1A01"] == results["MIX1A01"], results
    assert len(results["ORD1A01"][3]) == 1  # the drive leaves the fence once
    assert announced["ORD1A01"] == {"due": [3, 6, 9, 12], "due_soon": [3, 6, 9, 12]}
    assert announced["MIX1A01"] == {"due": [3, 6, 9, 12], "due_soon": [3, 9, 12]}


@pytest.mark.parametrize("speed", [True, False], ids=["speed-0", "no-speed"])
async def test_fixes_with_accuracy_0_or_none_parked_an_hour_gain_almost_nothing(
    client: Client, speed: bool
) -> None:
    """A vehicle parks for an hour 10 m outside a restricted yard; a fix every 20 s drifts
    5–15 m, reporting accuracy 0 on half of them (a tracker without the figure) and nothing on
    the others, speed 0 or none: the odometer gains at most 50 m over the drive to the spot,
    and the yard is never entered (a fix 5 m inside is within the margin)."""
    path = tracks.Path(ending_now(3700), -23.60, -46.70, 0).drive(60, 10).stop(3600)
    parked = path.samples[-1]
    lat, lon = tracks.offset(parked.lat, parked.lon, 110, 0)
    await create_fence(
        client, name="patio-vizinho", kind="restricted",
        circle={"lat": lat, "lon": lon, "radius_m": 100},
    )  # fmt: skip
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "ZER1A01")
    fixes, clean = sample_path(
        path,
        "ZER1A01",
        every_s=5,
        stopped_every_s=20,
        accuracy=lambda i: 0.0 if i % 2 else None,
        speed=speed,
    )
    await post(client, trigger, fixes)
    await fold(client)
    measured = await odometer_m(client, "ZER1A01")
    assert measured <= chords_m(clean) + 50, (measured, chords_m(clean))
    assert await events(client, "vehicle.geofence.entered") == []
    assert await events(client, "vehicle.geofence.exited") == []


@pytest.mark.parametrize("accuracy_m", [25.0, 40.0, 65.0])
async def test_a_phone_parked_a_night_with_errors_as_large_as_its_accuracy_gains_nothing(
    client: Client, accuracy_m: float
) -> None:
    """A phone in a covered car park: a fix every 2 min for 8 h, speed 0, each fix's error
    drawn honestly for the accuracy it reports (Gaussian, 68% of fixes within `accuracy_m`).
    A fix that says it stands still counts only beyond 2.5 times the two fixes' radii (and
    `still_m`), so the night adds nothing. Before, two fixes' radii (or `still_m`) were the
    bar, passed by one pair in ten: +1.2, +1.8 and +2.6 km a night."""
    rnd = random.Random(int(accuracy_m))
    sigma = accuracy_m / 1.5096  # Rayleigh: P(r <= 1.5096 sigma) = 0.68
    start = ending_now(8 * 3600)
    fixes = []
    for i in range(240):
        lat, lon = tracks.offset(-23.56, -46.65, rnd.gauss(0, sigma), rnd.gauss(0, sigma))
        when = (start + timedelta(minutes=2 * i)).isoformat()
        fix = {"plate": "NGT1A01", "time": when, "lat": lat, "lon": lon}
        fixes.append({**fix, "accuracy_m": accuracy_m, "speed_kmh": 0.0})
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "NGT1A01")
    await post(client, trigger, fixes)
    await fold(client)
    assert await odometer_m(client, "NGT1A01") == 0.0
