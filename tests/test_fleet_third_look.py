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
