"""A schedule whose target is positions: a polled feed's pages become fixes on the vehicles'
tracks, exactly as a batch POSTed to a position trigger (refused items kept, replayable)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.feed_doubles import GeotabDouble, SamsaraDouble, geotab, samsara
from tests.partner_double import create_action, create_partner, post, upload_mapping
from tests.schedule_support import (
    MAPPINGS,
    SAMSARA_FIXES,
    SAMSARA_VEHICLES,
    geotab_schedule,
    get,
    run_now,
    runner,
    runs,
    samsara_points,
    samsara_schedule,
    track,
)
from tests.support import auth
from tests.triggers_support import PAYLOADS

__all__ = ["geotab", "samsara"]  # the fixtures
Client = TestClient[Any, Any]

GEOTAB_FIXES = (MAPPINGS / "geotab-positions.yaml").read_text()  # shipped


async def test_a_positions_schedule_appends_each_record_as_a_fix(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(5)
    await upload_mapping(client, GEOTAB_FIXES)
    schedule = await geotab_schedule(
        client, geotab, target={"type": "positions", "mapping": "geotab-positions"}
    )
    assert await runner(client).run_until_idle() == {"ok": 1}
    (run,) = await runs(client, schedule["id"])
    assert (run["items_read"], run["written"], run["rejected"]) == (5, 5, 0)
    tracks = [
        (await get(client, f"/api/v1/entities/vehicle/{plate}/positions"))["items"]
        for plate in ("ABC1D23", "BRA2E19")
    ]
    assert sum(len(track) for track in tracks) == 5
    assert all(fix["source"] == schedule["id"] for track in tracks for fix in track)
    ids = sorted(fix["attributes"]["geotab_log_id"] for track in tracks for fix in track)
    assert ids == [f"b000{i}" for i in range(1, 6)]


async def test_a_positions_schedule_needs_a_position_mapping(
    client: Client, geotab: GeotabDouble
) -> None:
    await upload_mapping(client, GEOTAB_FIXES)
    schedule = await geotab_schedule(client, geotab)  # an entity target: fine
    assert schedule["target"]["type"] == "entities"
    response = await client.post(
        "/api/v1/schedules",
        json={
            **_definition(schedule),
            "name": "wrong",
            "target": {"type": "positions", "mapping": "geotab-logrecord"},
        },
        headers=auth(),
    )
    assert response.status == 422
    assert (await response.json())["errors"][0]["pointer"] == "/target/mapping"


def _definition(schedule: dict[str, Any]) -> dict[str, Any]:
    keys = ("action_id", "every", "request", "cursor", "error")
    return {k: schedule[k] for k in keys if k in schedule}


async def test_a_schedule_polling_traccar_positions_stores_each_device_once(
    client: Client,
) -> None:
    """Traccar's GET /api/positions (basic auth) answers a JSON array, the last position of
    each device: polled twice, each position is stored once (the second poll's are
    duplicates), on the vehicle whose tracker id is Traccar's device id."""
    page = orjson.loads((PAYLOADS / "traccar_api_positions.json").read_bytes())
    now = datetime.now(UTC).replace(microsecond=0)
    page[0]["fixTime"] = (now - timedelta(minutes=2)).isoformat()
    page[1]["fixTime"] = (now - timedelta(minutes=1)).isoformat()
    asked: list[str | None] = []

    async def positions(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Authorization"))
        return web.json_response(page)

    app = web.Application()
    app.router.add_get("/api/positions", positions)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        await upload_mapping(client, (MAPPINGS / "traccar-api-positions.yaml").read_text())
        for plate, device in (("ABC1D23", 7), ("BRA2E19", "12")):
            vehicle = {"plate": plate, "attributes": {"tracker_id": device}}
            await post(client, "/api/v1/entities/vehicle", vehicle)
        partner = await create_partner(
            client,
            str(server.make_url("/")).rstrip("/"),
            name="Traccar",
            auth={"type": "basic", "username": "admin", "password": "pw"},
        )
        action = await create_action(
            client, partner["id"], name="positions", method="GET", path="/api/positions",
            mode="proxy", read_only=True,
        )  # fmt: skip
        schedule = await post(
            client,
            "/api/v1/schedules",
            {
                "name": "traccar-positions",
                "action_id": action["id"],
                "every": "1m",
                "target": {"type": "positions", "mapping": "traccar-api-positions"},
            },
        )
        assert await runner(client).run_until_idle() == {"ok": 1}
        await run_now(client, schedule["id"])
        assert await runner(client).run_until_idle() == {"ok": 1}
    finally:
        await server.close()
    assert asked == ["Basic YWRtaW46cHc="] * 2
    first, second = sorted(await runs(client, schedule["id"]), key=lambda r: r["started_at"])
    assert (first["items_read"], first["written"], first["rejected"]) == (2, 2, 0), first
    assert (second["items_read"], second["rejected"]) == (2, 0), second
    for plate, lat in (("ABC1D23", -23.56118), ("BRA2E19", -22.90685)):
        [fix] = (await get(client, f"/api/v1/entities/vehicle/{plate}/positions"))["items"]
        assert fix["lat"] == lat and fix["source"] == schedule["id"]


async def test_a_page_of_more_points_than_a_batch_holds_is_landed_whole_in_one_run(
    client: Client, samsara: SamsaraDouble
) -> None:
    """Samsara decides the stats feed's page size: after a pause a page holds more GPS points
    than the mapping's bound of a batch (1,000). The page is read under the answer's byte cap,
    so it is landed in batches, one run, the cursor past it; it used to fail every run."""
    times = samsara_points(samsara, 400)  # 3 vehicles: 1,200 fixes
    await upload_mapping(client, SAMSARA_FIXES)
    target = {"type": "positions", "mapping": "samsara-vehicle-stats-positions"}
    schedule = await samsara_schedule(client, samsara, target=target)
    assert await runner(client).run_until_idle() == {"ok": 1}
    (run,) = await runs(client, schedule["id"])
    assert run["error"] is None, run
    assert (run["pages"], run["items_read"], run["written"], run["rejected"]) == (1, 1200, 1200, 0)
    assert (run["cursor_before"], run["cursor_after"]) == (None, "c3")
    assert [call["after"] for call in samsara.calls] == [None]
    for _, plate in SAMSARA_VEHICLES:
        fixes = await track(client, plate)
        assert [fix["time"] for fix in fixes] == times, plate
        assert {fix["source"] for fix in fixes} == {schedule["id"]}
