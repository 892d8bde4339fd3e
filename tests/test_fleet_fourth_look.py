"""The fold on tracks from an outside tester's list (fourth look): noisy fixes beside a
restricted area, a city's stop-and-go with long stops, a tunnel, a highway at 120 km/h with
fixes every 30 s, two devices on one vehicle reporting interleaved, a track across the equator
and one across the antimeridian, duplicates and fixes out of order within and beyond one fold,
accuracy 0 or missing. Everything through HTTP to a position trigger and the real database,
read back through the API (docs/fleet.md)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.web.state import services_key
from tests import tracks
from tests.support import auth
from tests.test_fleet_tracks import fold, new_vehicle
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
