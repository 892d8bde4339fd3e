"""A schedule whose target is positions: a polled feed's pages become fixes on the vehicles'
tracks, exactly as a batch POSTed to a position trigger (refused items kept, replayable)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.feed_doubles import GeotabDouble, geotab
from tests.partner_double import upload_mapping
from tests.schedule_support import MAPPINGS, geotab_schedule, get, runner, runs
from tests.support import auth

__all__ = ["geotab"]  # the fixture
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
