"""/api/v1/schedules as admins use it: a body is checked whole (every problem with its
pointer), only reading actions can be scheduled, the definition can change while its cursor
stays, pause and resume, a viewer only reads, and a mapping a schedule uses is not deleted."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.feed_doubles import GeotabDouble, geotab
from tests.partner_double import create_action, create_partner, partner, post
from tests.schedule_support import geotab_schedule, get, runner, runs
from tests.support import auth

__all__ = ["geotab", "partner"]  # fixtures
Client = TestClient[Any, Any]


async def test_a_bad_schedule_lists_every_problem_and_stores_nothing(
    client: Client, partner: Any
) -> None:
    partner_doc = await create_partner(client, partner.url)
    writer = await create_action(client, partner_doc["id"], method="POST", path="/x")
    body = {
        "name": "",
        "action_id": writer["id"],
        "every": "every minute",
        "cursor": {"from": "result.[", "param": "path.x"},
        "target": {
            "type": "tracks",
            "entity_type": "vehicle",
            "mapping": "no-such-mapping",
            "colour": "red",
        },
        "dedupe": {"by": "id", "keep": 0},
        "max_pages": 0,
        "surprise": 1,
    }
    problems = await post(client, "/api/v1/schedules", body, status=422)
    pointers = {e["pointer"] for e in problems["errors"]}
    assert pointers == {
        "/name",
        "/action_id",
        "/every",
        "/cursor/from",
        "/cursor/param",
        "/target/type",
        "/target/colour",
        "/target/mapping",
        "/dedupe/keep",
        "/max_pages",
        "/surprise",
    }
    (action_problem,) = [e for e in problems["errors"] if e["pointer"] == "/action_id"]
    assert "mark a POST that only reads (JSON-RPC) read_only" in action_problem["message"]
    assert (await get(client, "/api/v1/schedules"))["items"] == []


async def test_a_schedule_changes_its_definition_and_keeps_its_cursor(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(3)
    schedule = await geotab_schedule(client, geotab, limit=10)
    assert schedule["state"]["next_run_at"] is not None and schedule["every"] == "1m"
    await runner(client).run_until_idle()
    response = await client.patch(
        f"/api/v1/schedules/{schedule['id']}",
        json={"every": "0 6 * * *", "timezone": "America/Manaus", "max_pages": 3},
        headers=auth(),
    )
    changed = await response.json()
    assert response.status == 200, changed
    assert (changed["every"], changed["timezone"], changed["max_pages"]) == (
        "0 6 * * *",
        "America/Manaus",
        3,
    )
    assert changed["state"]["cursor"] == f"{3:016x}"
    paused = await (
        await client.post(f"/api/v1/schedules/{schedule['id']}/pause", headers=auth())
    ).json()
    assert paused["status"] == "paused"
    listed = await get(client, "/api/v1/schedules")
    assert [s["status"] for s in listed["items"]] == ["paused"]


async def test_a_viewer_reads_schedules_and_runs_but_changes_nothing(
    client: Client, geotab: GeotabDouble
) -> None:
    schedule = await geotab_schedule(client, geotab)
    viewer = auth(role="viewer")
    assert (
        await client.get(f"/api/v1/schedules/{schedule['id']}/runs", headers=viewer)
    ).status == 200
    for path in ("pause", "run"):
        response = await client.post(f"/api/v1/schedules/{schedule['id']}/{path}", headers=viewer)
        assert response.status == 403
    assert (
        await client.delete(f"/api/v1/schedules/{schedule['id']}", headers=viewer)
    ).status == 403


async def test_a_mapping_in_use_by_a_schedule_is_not_deleted_and_deleting_the_schedule_frees_it(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(1)
    schedule = await geotab_schedule(client, geotab)
    await runner(client).run_until_idle()
    refused = await client.delete("/api/v1/mappings/geotab-logrecord", headers=auth())
    assert refused.status == 409
    assert "schedule" in await refused.text()
    deleted = await client.delete(f"/api/v1/schedules/{schedule['id']}", headers=auth())
    assert deleted.status == 204
    gone = await client.get(f"/api/v1/schedules/{schedule['id']}/runs", headers=auth())
    assert gone.status == 404
    assert (await client.delete("/api/v1/mappings/geotab-logrecord", headers=auth())).status == 204


async def test_another_tenant_sees_no_schedule(client: Client, geotab: GeotabDouble) -> None:
    schedule = await geotab_schedule(client, geotab)
    other = await client.get(f"/api/v1/schedules/{schedule['id']}", headers=auth("globex"))
    assert other.status == 404
    assert len(await runs(client, schedule["id"])) == 0
