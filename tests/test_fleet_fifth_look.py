"""The fold on an outside tester's findings (fifth look): a register's all-ones odometer sent
on fixes in a row or as a vehicle's first value, a plan by km and days on a vehicle past its
first km cycle, rules naming plates spelled otherwise than the vehicle's. Everything through
HTTP to the app and the real database, the fold run as it runs (docs/fleet.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.web.state import services_key
from tests import tracks
from tests.support import auth
from tests.test_fleet_tracks import fold, new_vehicle, vehicle
from tests.triggers_support import Client, create_position_trigger, hook

TENANT = "acme"
ALL_ONES_KM = 4_294_967.295


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


async def post_folding(
    client: Client, trigger: dict[str, Any], fixes: list[dict[str, Any]], size: int
) -> None:
    for i in range(0, len(fixes), size):
        status, answer = await hook(client, trigger, fixes[i : i + size])
        assert status == 200 and answer["summary"]["failed"] == 0, answer
        await fold(client)


async def create_plan(client: Client, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/maintenance-plans", json=body, headers=auth())
    assert response.status == 201, await response.text()
    return dict(await response.json())


# -- a register's all-ones ---------------------------------------------------------------------


@pytest.mark.parametrize("glitch", [ALL_ONES_KM, 4_294_967.3])
async def test_a_registers_all_ones_on_two_fixes_in_a_row_is_no_new_unit(
    client: Client, glitch: float
) -> None:
    """The register reads 150,000 km and 0.1 km more each fix; two fixes in a row carry the
    all-ones value (as sent, or rounded to 0.1 km). They agree with each other, which for any
    other jump means another unit: not for this value. The vehicle's odometer follows the
    register to its end, no re-baseline goes to 4,294,967 km, no plan comes due there, the
    register's later values are taken (none is `device_behind`), and the two are counted.
    Before, the vehicle stayed at 4,294,970 km for good."""
    await create_plan(client, name="Oleo", every_km=10000, due_soon_km=500)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "GLT1A11")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    fixes = drive("GLT1A11", start, (-23.5, -46.6), 60)
    for i, fix in enumerate(fixes):
        fix["odometer_km"] = ALL_ONES_KM if i in (30, 31) else round(150_000 + 0.1 * i, 1)
    fixes[30]["odometer_km"] = fixes[31]["odometer_km"] = glitch
    await post_folding(client, trigger, fixes, 5)
    car = await vehicle(client, "GLT1A11")
    assert car["odometer_km"] == pytest.approx(150_005.9, abs=0.01)
    rebased = await events(client, "vehicle.odometer.rebaselined")
    assert [e["detail"]["to_km"] for e in rebased] == [150_000.0]
    assert await events(client, "vehicle.maintenance.due") == []
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_fleet_readings_total{outcome="device_glitch"} 2.0' in metrics
    assert 'outcome="device_behind"' not in metrics


async def test_a_registers_all_ones_as_a_vehicles_first_device_value_sets_nothing(
    client: Client,
) -> None:
    """A vehicle registered without an odometer: its tracker's first value is the all-ones.
    The first real value after it sets the count (as a first value does); the all-ones never
    shows. Before, the vehicle counted on from 4,294,967 km."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "GLT2A11")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    fixes = drive("GLT2A11", start, (-23.5, -46.6), 40)
    for i, fix in enumerate(fixes):
        fix["odometer_km"] = ALL_ONES_KM if i == 0 else round(150_000 + 0.1 * i, 1)
    await post_folding(client, trigger, fixes, 5)
    car = await vehicle(client, "GLT2A11")
    assert car["odometer_km"] == pytest.approx(150_003.9, abs=0.01)
    rebased = await events(client, "vehicle.odometer.rebaselined")
    assert [(e["detail"]["to_km"], e["detail"]["source"]) for e in rebased] == [
        (150_000.1, "device")
    ]
