"""Setting up polled feeds through the admin API: the shipped mappings, a partner and a read
action per feed double, vehicles that know their feed ids, and the schedule itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.schedules.runner import ScheduleRunner
from gateway.web.state import services_key
from tests.feed_doubles import GeotabDouble, SamsaraDouble, ScriptedFeed
from tests.partner_double import create_action, create_partner, post, upload_mapping
from tests.support import auth

Client = TestClient[Any, Any]
MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
SAMSARA_FIXES = (MAPPINGS / "samsara-vehicle-stats-positions.yaml").read_text()  # shipped
SAMSARA_VEHICLES = (("2811", "ABC1D23"), ("2812", "BRA2E19"), ("2813", "XYZ9876"))
"""The vehicles of `samsara_schedule`: their Samsara ids and plates (their names there)."""


def runner(client: Client) -> ScheduleRunner:
    return client.app[services_key].schedule_runner


async def geotab_schedule(
    client: Client, geotab: GeotabDouble, *, limit: int = 2, **overrides: Any
) -> dict[str, Any]:
    """Vehicles ABC1D23 (device b3A) and BRA2E19 (device b7), and a GetFeed schedule."""
    await upload_mapping(client, (MAPPINGS / "geotab-logrecord.yaml").read_text())
    for plate, device in (("ABC1D23", "b3A"), ("BRA2E19", "b7")):
        await post(
            client,
            "/api/v1/entities/vehicle",
            {"plate": plate, "attributes": {"tracker_id": device}},
        )
    partner = await create_partner(
        client,
        geotab.url,
        name="Geotab",
        timeout_seconds=1,
        auth={
            "type": "geotab",
            "url": f"{geotab.url}/apiv1",
            "database": geotab.DATABASE,
            "username": geotab.USER,
            "password": geotab.PASSWORD,
        },
    )
    action = await create_action(
        client,
        partner["id"],
        name="getfeed",
        method="POST",
        path="/apiv1",
        mode="proxy",
        read_only=True,
    )
    body = {
        "name": "geotab-logrecords",
        "action_id": action["id"],
        "every": "1m",
        "request": {
            "body": {
                "method": "GetFeed",
                "params": {"typeName": "LogRecord", "resultsLimit": limit},
            }
        },
        "cursor": {"from": "result.toVersion", "param": "body.params.fromVersion"},
        "error": "error",
        "target": {"entity_type": "vehicle", "mapping": "geotab-logrecord"},
        **overrides,
    }
    result: dict[str, Any] = await post(client, "/api/v1/schedules", body)
    return result


async def samsara_schedule(
    client: Client, samsara: SamsaraDouble, **overrides: Any
) -> dict[str, Any]:
    await upload_mapping(client, (MAPPINGS / "samsara-vehicle-stats-feed.yaml").read_text())
    for vid, plate in SAMSARA_VEHICLES:
        await post(
            client,
            "/api/v1/entities/vehicle",
            {"plate": plate, "attributes": {"samsara_vehicle_id": vid}},
        )
    partner = await create_partner(
        client, samsara.url, name="Samsara", auth={"type": "bearer", "token": samsara.TOKEN}
    )
    action = await create_action(
        client,
        partner["id"],
        name="stats-feed",
        method="GET",
        path="/fleet/vehicles/stats/feed",
        mode="proxy",
    )
    body = {
        "name": "samsara-stats",
        "action_id": action["id"],
        "every": "30s",
        "request": {"query": {"types": "gps,obdOdometerMeters"}},
        "cursor": {
            "from": "pagination.endCursor",
            "param": "query.after",
            "more": "pagination.hasNextPage",
        },
        "target": {"entity_type": "vehicle", "mapping": "samsara-vehicle-stats-feed"},
        **overrides,
    }
    result: dict[str, Any] = await post(client, "/api/v1/schedules", body)
    return result


ERP_MAPPING = """
name: erp-vehicles
direction: inbound
entity_type: vehicle
key: [plate]
items: items
fields:
  plate: {from: placa, transforms: [plate]}
  attributes.erp_id: {from: codigo, transforms: [string]}
  attributes.raw: {from: raw}
"""


async def scripted_schedule(
    client: Client, feed: ScriptedFeed, *, partner_timeout: float = 2, **overrides: Any
) -> dict[str, Any]:
    """A schedule reading `feed` (`GET /feed?after=<cursor>`) into vehicles by `placa`
    (`codigo` as text in `attributes.erp_id`, `raw` as it is in `attributes.raw`), hourly,
    its cursor at `next` while `more` holds. Its partner gives up on an answer after
    `partner_timeout` seconds."""
    await upload_mapping(client, ERP_MAPPING)
    partner = await create_partner(
        client, feed.url, name="ERP", auth={"type": "none"}, timeout_seconds=partner_timeout
    )
    action = await create_action(
        client, partner["id"], name="feed", method="GET", path="/feed", mode="proxy"
    )
    body = {
        "name": "erp-feed",
        "action_id": action["id"],
        "every": "1h",
        "cursor": {"from": "next", "param": "query.after", "more": "more"},
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
        **overrides,
    }
    result: dict[str, Any] = await post(client, "/api/v1/schedules", body)
    return result


async def get(client: Client, path: str) -> Any:
    await client.app[services_key].relay.run_until_idle()  # events are listed once relayed
    response = await client.get(path, headers=auth())
    assert response.status == 200, await response.text()
    return await response.json()


async def runs(client: Client, schedule_id: str) -> list[dict[str, Any]]:
    page = await get(client, f"/api/v1/schedules/{schedule_id}/runs")
    items: list[dict[str, Any]] = page["items"]
    return items


async def run_now(client: Client, schedule_id: str) -> None:
    response = await client.post(f"/api/v1/schedules/{schedule_id}/run", headers=auth())
    assert response.status == 202, await response.text()


def samsara_points(samsara: SamsaraDouble, points: int) -> list[str]:
    """One Samsara stats feed page (`samsara.PAGE` vehicles) of `points` GPS points per
    vehicle, one every 5 s, as Samsara answers after a pause: their times, in order."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    times = [
        (start + timedelta(seconds=5 * n)).strftime("%Y-%m-%dT%H:%M:%SZ") for n in range(points)
    ]
    samsara.PAGE = len(SAMSARA_VEHICLES)
    for vehicle_id, plate in SAMSARA_VEHICLES:
        gps = [
            {"time": time, "latitude": -23.5 - n * 1e-4, "longitude": -46.6,
             "headingDegrees": 90, "speedMilesPerHour": 20.0}
            for n, time in enumerate(times)
        ]  # fmt: skip
        samsara.records.append({"id": vehicle_id, "name": plate, "gps": gps})
    return times


async def track(client: Client, plate: str) -> list[dict[str, Any]]:
    """A vehicle's whole track, page after page of the positions API, in device-time order."""
    fixes: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = await get(client, f"/api/v1/entities/vehicle/{plate}/positions?limit=200{cursor}")
        fixes += page["items"]
        if page["next_cursor"] is None:
            return fixes
        cursor = f"&cursor={page['next_cursor']}"
