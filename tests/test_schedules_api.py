"""/api/v1/schedules as admins use it: a body is checked whole (every problem with its
pointer), only reading actions can be scheduled, the definition can change while its cursor
stays (unless the change is to the cursor or the action: then it starts again, as after a
reset), pause and resume, a viewer only reads, a mapping a schedule uses is not deleted, and
deleting a schedule leaves nothing of it behind, a run in flight included."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from bson import ObjectId

from gateway.errors import StoreUnavailable
from gateway.web.state import services_key
from tests.feed_doubles import GeotabDouble, ScriptedFeed, geotab, scripted
from tests.partner_double import (
    FakeClock,
    Partner,
    create_action,
    create_partner,
    partner,
    post,
    upload_mapping,
)
from tests.schedule_support import (
    ERP_MAPPING,
    geotab_schedule,
    get,
    run_now,
    runner,
    runs,
    scripted_schedule,
)
from tests.support import auth

__all__ = ["geotab", "partner", "scripted"]  # fixtures
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


_PLACES = """name: meter
direction: inbound
entity_type: vehicle
key: [plate]
params: {places: {default: 1}}
items: items
fields:
  plate: {from: placa, transforms: [plate]}
  odometer_km: {from: km, transforms: [number, {round: {param: places}}]}
"""


async def test_params_the_mapping_cannot_compile_with_are_refused_at_save_and_change(
    client: Client, partner: Any
) -> None:
    await upload_mapping(client, _PLACES)
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"], name="feed", method="GET", path="/f")
    target = {"entity_type": "vehicle", "mapping": "meter", "params": {"places": 20}}
    body = {"name": "meter-feed", "action_id": action["id"], "every": "1h", "target": target}
    problems = await post(client, "/api/v1/schedules", body, status=422)
    [problem] = problems["errors"]
    assert problem["pointer"] == "/target/params/places", problem
    assert "does not compile with these params" in problem["message"], problem
    assert (await get(client, "/api/v1/schedules"))["items"] == []
    schedule = await post(
        client, "/api/v1/schedules", {**body, "target": {**target, "params": {"places": 2}}}
    )
    response = await client.patch(
        f"/api/v1/schedules/{schedule['id']}", json={"target": target}, headers=auth()
    )
    refused = await response.json()
    assert response.status == 422, refused
    assert [e["pointer"] for e in refused["errors"]] == ["/target/params/places"], refused


async def test_an_interval_schedule_keeps_its_time_zone_and_refuses_an_unknown_one(
    client: Client, geotab: GeotabDouble
) -> None:
    schedule = await geotab_schedule(client, geotab, limit=10)
    path = f"/api/v1/schedules/{schedule['id']}"
    assert (schedule["every"], schedule["timezone"]) == ("1m", None)
    response = await client.patch(path, json={"timezone": "Mars/Olympus"}, headers=auth())
    refused = await response.json()
    assert response.status == 422, refused
    assert [e["pointer"] for e in refused["errors"]] == ["/timezone"]
    assert "unknown time zone 'Mars/Olympus'" in refused["errors"][0]["message"]
    response = await client.patch(path, json={"timezone": "America/Manaus"}, headers=auth())
    kept = await response.json()
    assert response.status == 200, kept
    assert (kept["every"], kept["timezone"]) == ("1m", "America/Manaus")
    # a later change to a cron expression reads it in that zone
    cron = await (await client.patch(path, json={"every": "0 6 * * *"}, headers=auth())).json()
    assert (cron["every"], cron["timezone"]) == ("0 6 * * *", "America/Manaus")


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


async def test_a_change_of_the_cursor_starts_again_from_its_initial_as_a_reset_does(
    client: Client, scripted: ScriptedFeed
) -> None:
    """A partner's page token means nothing as a page number: a PATCH of `cursor` (or of
    the action) starts from `cursor.initial`; `POST .../reset` starts again without one;
    any other change keeps the cursor."""
    scripted.answer = lambda after, n: {
        "items": [{"placa": "ABC1D23", "codigo": str(n)}],
        "next": "tok-xyz",
        "more": False,
    }
    schedule = await scripted_schedule(client, scripted)
    path = f"/api/v1/schedules/{schedule['id']}"

    async def run() -> None:
        await run_now(client, schedule["id"])
        assert await runner(client).run_until_idle() == {"ok": 1}

    assert await runner(client).run_until_idle() == {"ok": 1}
    kept = await client.patch(path, json={"every": "30m"}, headers=auth())
    assert (await kept.json())["state"]["cursor"] == "tok-xyz"
    reset = await client.post(f"{path}/reset", headers=auth())
    assert reset.status == 200, await reset.text()
    assert (await reset.json())["state"]["cursor"] is None
    await run()
    pages = {"step": 1, "initial": 1, "param": "query.after", "more": "more"}
    changed = await client.patch(path, json={"cursor": pages}, headers=auth())
    assert (await changed.json())["state"]["cursor"] is None
    await run()
    assert [c["after"] for c in scripted.calls] == [None, None, "1"]


@pytest.mark.parametrize("what", ["action", "partner"])
async def test_a_feed_change_cut_short_by_a_fault_starts_the_schedule_again_when_retried(
    client: Client, scripted: ScriptedFeed, what: str
) -> None:
    """The change was saved, then the schedules' restart met a fault (a 503): the admin's
    retry saw nothing changed, and the old feed's cursor went on to the new feed."""
    scripted.answer = lambda after, n: {
        "items": [{"placa": "ABC1D23", "codigo": str(n)}],
        "next": f"tok-{n}",
        "more": False,
    }
    schedule = await scripted_schedule(client, scripted)
    path = f"/api/v1/schedules/{schedule['id']}"
    action_path = f"/api/v1/actions/{schedule['action_id']}"
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert (await get(client, path))["state"]["cursor"] == "tok-1"
    store = client.app[services_key].store.schedules
    start_again, calls = store.start_again, []

    async def faulty_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise StoreUnavailable("operation exceeded time limit", deadline=True)
        return await start_again(*args, **kwargs)

    store.start_again = faulty_once  # type: ignore[method-assign]
    url, body = action_path, {"path": "/other-feed"}
    if what == "partner":
        url = f"/api/v1/partners/{(await get(client, action_path))['partner_id']}"
        body = {"base_url": (await get(client, url))["base_url"].rstrip("/") + "/v2"}
    first = await client.patch(url, json=body, headers=auth())
    assert first.status == 503, await first.text()
    again = await client.patch(url, json=body, headers=auth())
    assert again.status == 200, await again.text()
    assert (await get(client, path))["state"]["cursor"] is None


async def test_a_change_to_what_names_the_feed_in_its_action_or_partner_starts_it_again(
    client: Client, scripted: ScriptedFeed
) -> None:
    """The action's path (Samsara names its feeds by path) or its partner's account (Geotab's
    `database`: versions are per database) name the feed as the schedule's own `action_id`
    does: a PATCH of one starts every schedule reading with it again from `cursor.initial`;
    the old feed's cursor was sent to the new one. A new name or a new password keeps it."""
    scripted.answer = lambda after, n: {
        "items": [{"placa": "ABC1D23", "codigo": str(n)}],
        "next": f"tok-{n}",
        "more": False,
    }
    schedule = await scripted_schedule(client, scripted)
    path = f"/api/v1/schedules/{schedule['id']}"
    action_path = f"/api/v1/actions/{schedule['action_id']}"
    partner_id = (await get(client, action_path))["partner_id"]

    async def run() -> str | None:
        await run_now(client, schedule["id"])
        assert await runner(client).run_until_idle() == {"ok": 1}
        return scripted.calls[-1]["after"]

    async def patch(url: str, body: dict[str, Any]) -> str | None:
        response = await client.patch(url, json=body, headers=auth())
        assert response.status == 200, await response.text()
        return (await get(client, path))["state"]["cursor"]

    assert await runner(client).run_until_idle() == {"ok": 1}
    assert await patch(action_path, {"name": "erp-feed-renamed"}) == "tok-1"
    assert await patch(action_path, {"path": "/feed/"}) is None
    assert await patch(action_path, {"path": "/feed"}) is None
    assert await run() is None  # from cursor.initial (none), not tok-1
    account = {"type": "basic", "username": "fleet-a", "password": "p1"}
    partner_path = f"/api/v1/partners/{partner_id}"
    assert await patch(partner_path, {"auth": account}) is None  # another kind of credential
    assert await run() is None
    assert await patch(partner_path, {"auth": {**account, "password": "p2"}}) == "tok-3"
    assert await patch(partner_path, {"timeout_seconds": 3}) == "tok-3"
    assert await patch(partner_path, {"auth": {**account, "username": "fleet-b"}}) is None
    assert await run() is None
    assert [c["after"] for c in scripted.calls] == [None, None, None, None]


async def test_deleting_a_schedule_mid_run_writes_nothing_after_and_leaves_no_run(
    client: Client, scripted: ScriptedFeed
) -> None:
    """The DELETE answers 204 while the partner's answer is on its way: that page is not
    written, and no run record of the schedule is left."""
    scripted.answer = lambda after, n: {
        "items": [{"placa": "ABC1D23", "codigo": "1"}],
        "next": "c1",
        "more": False,
    }
    scripted.gated = {1}
    schedule = await scripted_schedule(client, scripted)
    running = asyncio.create_task(runner(client).run_until_idle())
    await scripted.wait_until(lambda: len(scripted.calls) >= 1)
    response = await client.delete(f"/api/v1/schedules/{schedule['id']}", headers=auth())
    assert response.status == 204
    scripted.gate.set()
    assert await asyncio.wait_for(running, 20) == {"lost_lease": 1}
    runs_left = client.app[services_key].store.db["schedule_runs"]
    assert await runs_left.count_documents({"schedule_id": schedule["id"]}) == 0
    response = await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())
    assert response.status == 404


@pytest.mark.parametrize("how", ["DELETE", "reset"])
async def test_a_delete_or_reset_during_a_pages_landing_stops_its_writes_there(
    client: Client, scripted: ScriptedFeed, how: str
) -> None:
    """The page is being landed (a large page takes a while): the DELETE's 204 (or the
    reset's 200) comes after its first write. Nothing is written after it: not the
    vehicle's next item, not the item the target refused, not a run record."""
    scripted.answer = lambda after, n: {
        "items": [
            {"placa": "ABC1D23", "codigo": "1"},
            {"placa": "ABC1D23", "codigo": "2"},  # the same vehicle: written after the first
            {"placa": "not a plate", "codigo": "3"},
        ],
        "next": "c1",
        "more": False,
    }
    schedule = await scripted_schedule(client, scripted)
    path = f"/api/v1/schedules/{schedule['id']}"
    pipeline = runner(client)._c.sinks["entities"]._ingestor._pipeline  # type: ignore[attr-defined]
    write, written, answered = pipeline.write, asyncio.Event(), asyncio.Event()

    async def slow_write(*args: Any, **kwargs: Any) -> Any:
        result = await write(*args, **kwargs)
        written.set()
        await answered.wait()  # the rest of a large page still to land
        return result

    pipeline.write = slow_write
    running = asyncio.create_task(runner(client).run_until_idle())
    await asyncio.wait_for(written.wait(), 10)
    if how == "DELETE":
        assert (await client.delete(path, headers=auth())).status == 204
        outcomes = {"lost_lease": 1}
    else:
        assert (await client.post(f"{path}/reset", headers=auth())).status == 200
        scripted.answer = lambda after, n: {"items": [], "next": None}  # its run, at once
        outcomes = {"lost_lease": 1, "ok": 1}
    answered.set()
    assert await asyncio.wait_for(running, 20) == outcomes
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["attributes"]["erp_id"] == "1"
    assert (await get(client, f"/api/v1/rejected?trigger_id={schedule['id']}"))["items"] == []
    if how == "DELETE":
        runs_left = client.app[services_key].store.db["schedule_runs"]
        assert await runs_left.count_documents({"schedule_id": schedule["id"]}) == 0


async def test_items_a_page_keeps_as_the_schedule_is_deleted_go_with_it(
    client: Client, scripted: ScriptedFeed
) -> None:
    """The DELETE comes between the lease check before the page's refused item is kept and
    its keeping (the delete's own sweep runs before the item is there): the run, whose
    commit then finds no lease, takes the item back."""
    scripted.answer = lambda after, n: {
        "items": [{"placa": "ABC1D23", "codigo": "1"}, {"placa": "not a plate", "codigo": "2"}],
        "next": "c1",
        "more": False,
    }
    schedule = await scripted_schedule(client, scripted)
    keeper = runner(client)._c.sinks["entities"]._ingestor._rejected  # type: ignore[attr-defined]
    keep, keeping, deleted = keeper.keep, asyncio.Event(), asyncio.Event()

    async def wait_then_keep(*args: Any, **kwargs: Any) -> None:
        keeping.set()
        await deleted.wait()
        await keep(*args, **kwargs)

    keeper.keep = wait_then_keep
    running = asyncio.create_task(runner(client).run_until_idle())
    await asyncio.wait_for(keeping.wait(), 10)
    path = f"/api/v1/schedules/{schedule['id']}"
    assert (await client.delete(path, headers=auth())).status == 204
    deleted.set()
    assert await asyncio.wait_for(running, 20) == {"lost_lease": 1}
    assert (await get(client, f"/api/v1/rejected?trigger_id={schedule['id']}"))["items"] == []


async def test_deleting_a_schedule_removes_the_items_its_pages_could_not_write(
    client: Client, scripted: ScriptedFeed
) -> None:
    scripted.answer = lambda after, n: {
        "items": [{"placa": "ABC1D23", "codigo": "1"}, {"placa": "not a plate", "codigo": "2"}],
        "next": "c1",
        "more": False,
    }
    schedule = await scripted_schedule(client, scripted)
    assert await runner(client).run_until_idle() == {"ok": 1}
    kept = f"/api/v1/rejected?trigger_id={schedule['id']}"
    assert len((await get(client, kept))["items"]) == 1
    response = await client.delete(f"/api/v1/schedules/{schedule['id']}", headers=auth())
    assert response.status == 204
    assert (await get(client, kept))["items"] == []


async def test_a_reset_during_a_run_is_not_undone_by_the_run(
    client: Client, scripted: ScriptedFeed
) -> None:
    """The run in flight read under the old cursor: it lands nothing more and cannot put
    its cursor back; the schedule starts again from the beginning."""
    scripted.answer = lambda after, n: {
        "items": [{"placa": "ABC1D23", "codigo": str(n)}],
        "next": f"c{n}",
        "more": False,
    }
    schedule = await scripted_schedule(client, scripted)
    assert await runner(client).run_until_idle() == {"ok": 1}
    scripted.gated = {2}
    await run_now(client, schedule["id"])
    running = asyncio.create_task(runner(client).run_until_idle())
    await scripted.wait_until(lambda: len(scripted.calls) >= 2)
    path = f"/api/v1/schedules/{schedule['id']}"
    assert (await client.post(f"{path}/reset", headers=auth())).status == 200
    scripted.gate.set()
    outcomes = await asyncio.wait_for(running, 20)
    assert outcomes["lost_lease"] == 1
    assert [c["after"] for c in scripted.calls][:2] == [None, "c1"]
    assert scripted.calls[2:] == [{"after": None}] * len(scripted.calls[2:])
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["attributes"]["erp_id"] != "2"


async def test_a_change_of_the_request_that_names_the_feed_starts_again_from_its_initial(
    client: Client, scripted: ScriptedFeed
) -> None:
    """Geotab's GetFeed names its feed in the request (`typeName`), its versions are per
    feed: a PATCH of `request` starts the new feed from `cursor.initial` instead of the old
    feed's version."""
    scripted.answer = lambda after, n: {
        "items": [{"placa": "ABC1D23", "codigo": str(n)}],
        "next": "v-9000",
        "more": False,
    }
    schedule = await scripted_schedule(
        client, scripted, request={"query": {"typeName": "LogRecord"}}
    )
    assert await runner(client).run_until_idle() == {"ok": 1}
    path = f"/api/v1/schedules/{schedule['id']}"
    feed = {"request": {"query": {"typeName": "StatusData"}}}
    changed = await client.patch(path, json=feed, headers=auth())
    assert changed.status == 200, await changed.text()
    assert (await changed.json())["state"]["cursor"] is None
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert [c["after"] for c in scripted.calls] == [None, None]


async def test_a_reset_forgets_the_failure_streak_and_is_due_at_once(
    client: Client, scripted: ScriptedFeed
) -> None:
    """A schedule stuck on an expired token backs off; its reset drops the token, and the
    failures it caused with it: the schedule runs at once from its start."""

    def answer(after: str | None, n: int) -> Any:
        if after == "tok-expired":
            return web.json_response({"error": "cursor expired"}, status=400)
        return {"items": [{"placa": "ABC1D23", "codigo": str(n)}], "next": "tok-expired"}

    scripted.answer = answer
    schedule = await scripted_schedule(client, scripted)
    path = f"/api/v1/schedules/{schedule['id']}"
    assert await runner(client).run_until_idle() == {"ok": 1}
    for _ in range(2):
        await run_now(client, schedule["id"])
        assert await runner(client).run_until_idle() == {"failed": 1}
    assert (await get(client, path))["state"]["failures"] == 2
    reset = await client.post(f"{path}/reset", headers=auth())
    assert reset.status == 200, await reset.text()
    assert (await reset.json())["state"]["failures"] == 0
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert [c["after"] for c in scripted.calls] == [None, "tok-expired", "tok-expired", None]


def _one_record(after: str | None, n: int) -> dict[str, Any]:
    return {"items": [{"placa": "ABC1D23", "codigo": str(n)}], "next": f"c{n}", "more": False}


async def _patched_after_a_run(
    client: Client, feed: ScriptedFeed, every: str, change: dict[str, Any]
) -> tuple[datetime, datetime]:
    """A schedule that ran once, then `change` PATCHed between runs: its run's start and
    the next run time the PATCH answers."""
    feed.answer = _one_record
    runner(client).clock = FakeClock()
    schedule = await scripted_schedule(client, feed, every=every)
    assert await asyncio.wait_for(runner(client).run_until_idle(), 10) == {"ok": 1}
    (run,) = await runs(client, schedule["id"])
    response = await client.patch(
        f"/api/v1/schedules/{schedule['id']}", json=change, headers=auth()
    )
    assert response.status == 200, await response.text()
    answered = (await response.json())["state"]["next_run_at"]
    assert (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"][
        "next_run_at"
    ] == answered
    return datetime.fromisoformat(run["started_at"]), datetime.fromisoformat(answered)


async def test_a_shorter_every_set_between_runs_times_the_next_run_from_the_last(
    client: Client, scripted: ScriptedFeed
) -> None:
    """A weekly schedule changed to every minute runs a minute after its last run, not a
    week after it (the old definition's next time stayed)."""
    started, next_run = await _patched_after_a_run(client, scripted, "7d", {"every": "1m"})
    assert next_run - started == timedelta(minutes=1)


async def test_a_yearly_cron_changed_to_every_minute_runs_within_the_minute(
    client: Client, scripted: ScriptedFeed
) -> None:
    started, next_run = await _patched_after_a_run(
        client, scripted, "0 0 1 1 *", {"every": "* * * * *"}
    )
    assert timedelta(0) < next_run - started <= timedelta(minutes=1)


async def test_a_new_time_zone_times_the_next_run_in_it(
    client: Client, scripted: ScriptedFeed
) -> None:
    """03:00 in São Paulo is 06:00 UTC; changed to Tokyo, 03:00 there is 18:00 UTC."""
    _, next_run = await _patched_after_a_run(
        client, scripted, "0 3 * * *", {"timezone": "Asia/Tokyo"}
    )
    assert (next_run.astimezone(UTC).hour, next_run.minute) == (18, 0), next_run


async def test_an_action_a_schedule_reads_with_cannot_be_made_a_write(
    client: Client, scripted: ScriptedFeed
) -> None:
    """A PATCH making a schedule's GET action a POST not marked read_only is a 409 naming the
    schedule (its runs would all fail as `configuration`); marked read_only it may."""
    scripted.answer = _one_record
    schedule = await scripted_schedule(client, scripted)
    action = f"/api/v1/actions/{schedule['action_id']}"
    refused = await client.patch(action, json={"method": "POST"}, headers=auth())
    assert refused.status == 409, await refused.text()
    problem = await refused.json()
    assert [u["id"] for u in problem["used_by"]] == [schedule["id"]], problem
    assert (await get(client, action))["method"] == "GET"
    taken = await client.patch(action, json={"method": "POST", "read_only": True}, headers=auth())
    assert taken.status == 200, await taken.text()
    assert await asyncio.wait_for(runner(client).run_until_idle(), 10) == {"ok": 1}


async def test_a_body_a_get_action_would_never_send_is_refused_at_its_member(
    client: Client, scripted: ScriptedFeed
) -> None:
    """A GET sends no body: a cursor in it (`body.after`, the Geotab example copied onto a
    GET) was taken with a 201 and never sent, so every call read the first page and the run
    failed as a `loop` blaming the partner. The save is a 422 at `/cursor/param` and at
    `/request/body`; made a GET later, the action is a 409 naming the schedule."""
    scripted.answer = _one_record
    schedule = await scripted_schedule(client, scripted)
    body = {
        "name": "erp-body",
        "action_id": schedule["action_id"],
        "every": "1h",
        "cursor": {"from": "next", "param": "body.page.after"},
        "request": {"body": {"size": 100}},
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
    }
    refused = await client.post("/api/v1/schedules", json=body, headers=auth())
    assert refused.status == 422, await refused.text()
    problems = {e["pointer"]: e for e in (await refused.json())["errors"]}
    assert sorted(problems) == ["/cursor/param", "/request/body"], problems
    assert "query.page.after" in problems["/cursor/param"]["message"]
    assert "sends no body" in problems["/request/body"]["message"]
    listed = await get(client, "/api/v1/schedules")
    assert [s["name"] for s in listed["items"]] == ["erp-feed"]
    path = f"/api/v1/schedules/{schedule['id']}"
    changed = await client.patch(path, json={"request": {"body": {"size": 1}}}, headers=auth())
    assert changed.status == 422, await changed.text()
    empty = await client.patch(path, json={"request": {"body": {}}}, headers=auth())
    assert empty.status == 200, await empty.text()  # nothing to drop
    action = f"/api/v1/actions/{schedule['action_id']}"
    posted = await client.patch(action, json={"method": "POST", "read_only": True}, headers=auth())
    assert posted.status == 200, await posted.text()
    taken = await client.post("/api/v1/schedules", json=body, headers=auth())
    assert taken.status == 201, await taken.text()
    back = await client.patch(action, json={"method": "GET", "read_only": False}, headers=auth())
    assert back.status == 409, await back.text()
    problem = await back.json()
    assert [u["name"] for u in problem["used_by"]] == ["erp-body"], problem


async def test_a_body_cursor_goes_into_an_array_by_index_and_never_replaces_a_member(
    client: Client, partner: Partner
) -> None:
    """`cursor.param` `body.params.calls.0.params.fromVersion` (Geotab's `ExecuteMultiCall`)
    places the cursor in the array's first call: the array was replaced by an object
    `{"0": {...}}`, the call's `method` and `typeName` gone. A path through a text, a number
    or past an array's end is a 422 at `/cursor/param`, at save and at change."""
    partner.respond_with(body={"result": [{"toVersion": "v2"}], "items": []})
    await upload_mapping(client, ERP_MAPPING)
    geotab = await create_partner(client, partner.url, name="Geotab", auth={"type": "none"})
    action = await create_action(
        client,
        geotab["id"],
        name="multicall",
        method="POST",
        path="/apiv1",
        mode="proxy",
        read_only=True,
    )
    call = {"method": "GetFeed", "params": {"typeName": "LogRecord", "resultsLimit": 100}}
    body = {"method": "ExecuteMultiCall", "params": {"calls": [call]}}

    def schedule(param: str) -> dict[str, Any]:
        return {
            "name": "multicall",
            "action_id": action["id"],
            "every": "1h",
            "request": {"body": body},
            "cursor": {"from": "result[0].toVersion", "param": param, "initial": "v1"},
            "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
        }

    for param, said in (
        ("body.params.calls.1.params.fromVersion", "body.params.calls is an array of 1 item(s)"),
        ("body.params.calls.first.fromVersion", "'first' is not the index of one"),
        ("body.method.fromVersion", "body.method is a string"),
        ("body.params.calls.0.params.typeName.v", "typeName is a string"),
    ):
        refused = await client.post("/api/v1/schedules", json=schedule(param), headers=auth())
        assert refused.status == 422, await refused.text()
        (problem,) = (await refused.json())["errors"]
        assert problem["pointer"] == "/cursor/param" and said in problem["message"], problem
    created = await post(
        client, "/api/v1/schedules", schedule("body.params.calls.0.params.fromVersion")
    )
    assert await runner(client).run_until_idle() == {"ok": 1}
    sent = orjson.loads(partner.requests[0].body)
    placed = {**call, "params": {**call["params"], "fromVersion": "v1"}}
    assert sent == {"method": "ExecuteMultiCall", "params": {"calls": [placed]}}
    path = f"/api/v1/schedules/{created['id']}"
    flat = {"body": {"method": "ExecuteMultiCall", "params": {"calls": "GetFeed"}}}
    changed = await client.patch(path, json={"request": flat}, headers=auth())
    assert changed.status == 422, await changed.text()
    assert (await changed.json())["errors"][0]["pointer"] == "/cursor/param"
    # Saved before the check: each run refuses to send the body rewritten.
    schedules = client.app[services_key].store.db["schedules"]
    await schedules.update_one({"_id": ObjectId(created["id"])}, {"$set": {"request": flat}})
    await run_now(client, created["id"])
    assert await runner(client).run_until_idle() == {"failed": 1}
    error = (await get(client, path))["state"]["last_error"]
    assert error["kind"] == "request" and "body.params.calls is a string" in error["message"]
    assert len(partner.requests) == 1


async def test_reading_again_from_a_point_or_by_another_id_forgets_the_remembered_ids(
    client: Client, scripted: ScriptedFeed
) -> None:
    """`dedupe` skips what it saw; read again from a date (a PATCH of `cursor.initial`, to
    write again what a fixed mapping wrote wrong) writes what it reads, and so does a new
    `dedupe.by` (ids of another expression). A reset alone, or a new `keep`, keeps them."""

    def answer(after: str | None, n: int) -> dict[str, Any]:
        items = [{"placa": "ABC1D23", "codigo": "1"}, {"placa": "BRA2E19", "codigo": "2"}]
        return {"items": items, "next": "2026-12-01T00:00:00Z", "more": False}

    scripted.answer = answer
    schedule = await scripted_schedule(client, scripted, dedupe={"by": "codigo", "keep": 1000})
    path = f"/api/v1/schedules/{schedule['id']}"
    cursor = {**schedule["cursor"], "initial": "2026-11-01T00:00:00Z"}
    changes: list[tuple[str, dict[str, Any] | None, int]] = [
        ("reset", None, 0),
        ("PATCH", {"dedupe": {"by": "codigo", "keep": 10}}, 0),
        ("PATCH", {"cursor": cursor}, 2),
        ("PATCH", {"dedupe": {"by": "placa", "keep": 10}}, 2),
    ]
    assert await asyncio.wait_for(runner(client).run_until_idle(), 10) == {"ok": 1}
    for verb, body, written in changes:
        if verb == "reset":
            response = await client.post(f"{path}/reset", headers=auth())
        else:
            response = await client.patch(path, json=body, headers=auth())
        assert response.status == 200, await response.text()
        await run_now(client, schedule["id"])
        ran = await asyncio.wait_for(runner(client).run_until_idle(), 10)
        run = (await runs(client, schedule["id"]))[0]
        assert ran == {"ok": 1}, (verb, body, run.get("error"), run)
        assert (run["written"], run["skipped"]) == (written, 2 - written), (verb, body, run)


async def test_a_new_page_size_patched_with_the_cursor_as_initial_reads_on_from_it(
    client: Client, scripted: ScriptedFeed
) -> None:
    """docs/schedules.md "A new page size, and the position kept": a PATCH of `request`
    starts again from `cursor.initial`; with `initial` the schedule's `state.cursor`, the
    next call carries that cursor and the new size."""
    scripted.answer = _one_record
    schedule = await scripted_schedule(client, scripted, request={"query": {"pageSize": 500}})
    assert await asyncio.wait_for(runner(client).run_until_idle(), 10) == {"ok": 1}
    path = f"/api/v1/schedules/{schedule['id']}"
    position = (await get(client, path))["state"]["cursor"]
    change = {
        "request": {"query": {"pageSize": 100}},
        "cursor": {**schedule["cursor"], "initial": position},
    }
    response = await client.patch(path, json=change, headers=auth())
    assert response.status == 200, await response.text()
    assert await asyncio.wait_for(runner(client).run_until_idle(), 10) == {"ok": 1}
    assert [c["after"] for c in scripted.calls] == [None, position]
