"""The fold on tracks from an outside tester's list (third look): a tracker replaced by one
counting from its own lower odometer, a small fence with inaccurate fixes, a vehicle parked on
a fence's border for hours, a ferry, clocks and buffers resent. Everything through HTTP to a
position trigger and the real database, read back through the API (docs/fleet.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.web.state import services_key
from tests import tracks
from tests.support import auth
from tests.test_fleet_tracks import fold, new_vehicle, vehicle, whole_track
from tests.triggers_support import Client, create_position_trigger, hook

TENANT = "acme"


async def events(client: Client, event_type: str) -> list[dict[str, Any]]:
    found = await client.app[services_key].events.find(TENANT, event_type=event_type)
    return sorted(found, key=lambda e: e["occurred_at"])


def drive(
    plate: str, start: datetime, origin: tuple[float, float], n: int, **fields: Any
) -> list[dict[str, Any]]:
    """`n` fixes 10 s and 100 m apart eastwards from `origin` (36 km/h)."""
    fixes = []
    for i in range(n):
        lat, lon = tracks.destination(*origin, 90, 100 * i)
        fix = {"plate": plate, "time": (start + timedelta(seconds=10 * i)).isoformat()}
        fixes.append({**fix, "lat": lat, "lon": lon, "speed_kmh": 36.0, **fields})
    return fixes


async def test_a_tracker_replaced_by_one_counting_from_its_own_lower_odometer_keeps_the_vehicles(
    client: Client,
) -> None:
    """The old tracker reports the dashboard's 150,000 km; the new one, installed half an hour
    later, counts from its own 12 km. The vehicle's odometer goes on from 150,002 km by GPS
    distance (it never drops to 12 km: an ERP and the plans would see 150,000 km vanish), no
    re-baseline event is emitted for the new count, and each of its values is counted."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "SWP1A01")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    old = drive("SWP1A01", start, (-23.5, -46.6), 21, tracker_id="OLD1")
    for i, fix in enumerate(old):
        fix["odometer_km"] = 150_000 + 0.1 * i
    status, answer = await hook(client, trigger, old)
    assert status == 200 and answer["summary"]["stored"] == 21, answer
    await fold(client)
    assert (await vehicle(client, "SWP1A01"))["odometer_km"] == 150_002.0
    new = drive("SWP1A01", start + timedelta(minutes=30), (old[-1]["lat"], old[-1]["lon"]), 21)
    for i, fix in enumerate(new):
        fix.update(tracker_id="NEW2", odometer_km=12 + 0.1 * i)
    for batch in (new[:1], new[1:2], new[2:]):  # one by one first: the count "agreeing"
        status, answer = await hook(client, trigger, batch)
        assert status == 200, answer
        await fold(client)
    car = await vehicle(client, "SWP1A01")
    assert abs(car["odometer_km"] - 150_004.0) < 0.01, car["odometer_km"]
    assert {i["rejected"] for i in await whole_track(client, "SWP1A01")} == {None}
    rebased = await events(client, "vehicle.odometer.rebaselined")
    assert [e["detail"]["to_km"] for e in rebased] == [150_000.0]
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_fleet_readings_total{outcome="device_behind"} 21.0' in metrics
    # an admin who wants the new unit's count says so: the count goes on from there (by GPS
    # distance: a reading outranks device odometers for `hold_hours`)
    response = await client.patch(
        "/api/v1/entities/vehicle/SWP1A01", json={"odometer_km": 14.0}, headers=auth()
    )
    assert response.status == 200, await response.text()
    for _ in range(2):  # the relay queues the reading, the fold takes it
        await client.app[services_key].relay.run_until_idle()
        await fold(client)
    later = drive("SWP1A01", start + timedelta(minutes=40), (new[-1]["lat"], new[-1]["lon"]), 6)
    for i, fix in enumerate(later):
        fix.update(tracker_id="NEW2", odometer_km=14.1 + 0.1 * i)
    status, answer = await hook(client, trigger, later)
    assert status == 200, answer
    await fold(client)
    assert abs((await vehicle(client, "SWP1A01"))["odometer_km"] - 14.5) < 0.01


# -- geofences ---------------------------------------------------------------------------------

CENTRE = (-23.55, -46.63)


def at_offsets(
    plate: str, start: datetime, steps: list[tuple[float, float, float]], accuracy_m: float
) -> list[dict[str, Any]]:
    """Fixes every 10 s at (east, north) metres from CENTRE, each with its speed (km/h)."""
    fixes = []
    for i, (east, north, speed) in enumerate(steps):
        lat, lon = tracks.offset(*CENTRE, east, north)
        fix = {"plate": plate, "time": (start + timedelta(seconds=10 * i)).isoformat()}
        fixes.append({**fix, "lat": lat, "lon": lon, "speed_kmh": speed, "accuracy_m": accuracy_m})
    return fixes


async def create_fence(client: Client, **body: Any) -> None:
    response = await client.post("/api/v1/geofences", json=body, headers=auth())
    assert response.status == 201, await response.text()


def crossings(found: list[dict[str, Any]], fence: str) -> list[datetime]:
    return [e["occurred_at"] for e in found if e["detail"]["geofence"]["name"] == fence]


async def test_a_fence_no_deeper_than_its_margin_is_entered_and_left_each_time(
    client: Client,
) -> None:
    """A restricted circle of 20 m (a loading bay) and a restricted yard 30 m wide, with the
    default margin of 25 m: a vehicle that drives through the middle of both twice is seen
    entering and leaving each twice. Before, a fix had to be 25 m inside to count as inside,
    deeper than either fence goes: neither was ever entered (and an authorized one of that
    size, once left, was never entered again, so its next exit was never announced)."""
    await create_fence(
        client,
        name="baia",
        kind="restricted",
        circle={"lat": CENTRE[0], "lon": CENTRE[1], "radius_m": 20},
    )
    corners = [tracks.offset(*CENTRE, e, n) for e, n in ((-100, 200), (100, 200), (100, 230))]
    corners += [tracks.offset(*CENTRE, -100, 230)]
    ring = [[lon, lat] for lat, lon in [*corners, corners[0]]]
    await create_fence(
        client, name="patio", kind="restricted", polygon={"type": "Polygon", "coordinates": [ring]}
    )
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "BAY1A01")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    there = [(float(e), 0.0, 18.0) for e in range(-300, 301, 50)]  # through the bay, west-east
    back = [(float(e), 215.0, 18.0) for e in range(300, -301, -50)]  # along the yard, back
    steps = there + back + there + back
    status, answer = await hook(client, trigger, at_offsets("BAY1A01", start, steps, 5.0))
    assert status == 200 and answer["summary"]["failed"] == 0, answer
    await fold(client)
    entered = await events(client, "vehicle.geofence.entered")
    exited = await events(client, "vehicle.geofence.exited")
    for fence in ("baia", "patio"):
        assert len(crossings(entered, fence)) == 2, (fence, entered)
        assert len(crossings(exited, fence)) == 2, (fence, exited)


async def test_a_50_m_circle_seen_with_30_m_accuracy_is_entered_once_and_left_once(
    client: Client,
) -> None:
    """A restricted circle of 50 m; the tracker reports 30 m of accuracy and its stopped fixes
    wander up to 12 m: driving in, parking 20 minutes near the centre and leaving gives one
    entry and one exit (at the first fix more than 25 + 30 m past the border)."""
    await create_fence(
        client,
        name="doca",
        kind="restricted",
        circle={"lat": CENTRE[0], "lon": CENTRE[1], "radius_m": 50},
    )
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "DOC1A01")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    arrive = [(float(e), 0.0, 18.0) for e in range(-400, 0, 50)]
    parked = [(12.0 * ((k * 7) % 5 - 2) / 2, 12.0 * ((k * 3) % 5 - 2) / 2, 0.0) for k in range(120)]
    leave = [(float(e), 0.0, 18.0) for e in range(50, 450, 50)]
    fixes = at_offsets("DOC1A01", start, arrive + parked + leave, 30.0)
    status, answer = await hook(client, trigger, fixes)
    assert status == 200 and answer["summary"]["failed"] == 0, answer
    await fold(client)
    entered = await events(client, "vehicle.geofence.entered")
    exited = await events(client, "vehicle.geofence.exited")
    assert len(entered) == 1 and len(exited) == 1, (entered, exited)
    left_at = datetime.fromisoformat(fixes[len(arrive) + len(parked) + 2]["time"])  # 150 m out
    assert exited[0]["occurred_at"] == left_at


async def test_a_vehicle_parked_on_a_border_for_hours_exits_once_when_it_leaves(
    client: Client,
) -> None:
    """An authorized circle of 500 m; the vehicle parks astride its border for 4 hours, a fix a
    minute wandering ±15 m with 10–20 m of accuracy, then drives away: no crossing while
    parked, one exit when it leaves."""
    await create_fence(
        client,
        name="garagem",
        kind="authorized",
        circle={"lat": CENTRE[0], "lon": CENTRE[1], "radius_m": 500},
    )
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "BRD1A01")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=5)
    fixes = []
    for i, east in enumerate(range(0, 500, 50)):  # from the centre to the border
        lat, lon = tracks.offset(*CENTRE, east, 0)
        fixes.append((start + timedelta(seconds=10 * i), lat, lon, 18.0, 8.0))
    parked_from = fixes[-1][0]
    for k in range(240):
        wobble = 15.0 * (((k * 37) % 31) / 15.0 - 1.0)
        lat, lon = tracks.offset(*CENTRE, 500 + wobble, 15.0 * (((k * 11) % 7) / 3.0 - 1.0))
        fixes.append((parked_from + timedelta(minutes=k + 1), lat, lon, 0.0, 10.0 + k % 11))
    leave_from = fixes[-1][0]
    for i, east in enumerate(range(550, 1200, 50)):
        lat, lon = tracks.offset(*CENTRE, east, 0)
        fixes.append((leave_from + timedelta(seconds=10 * (i + 1)), lat, lon, 18.0, 8.0))
    body = [
        {"plate": "BRD1A01", "time": t.isoformat(), "lat": lat, "lon": lon, "speed_kmh": v,
         "accuracy_m": acc}
        for t, lat, lon, v, acc in fixes
    ]  # fmt: skip
    for i in range(0, len(body), 50):
        status, answer = await hook(client, trigger, body[i : i + 50])
        assert status == 200 and answer["summary"]["failed"] == 0, answer
        await fold(client)
    exited = await events(client, "vehicle.geofence.exited")
    assert await events(client, "vehicle.geofence.entered") == []
    assert [e["occurred_at"] for e in exited] == [leave_from + timedelta(seconds=10)]  # 550 m
