"""A partner that answers garbage, the wrong shape, an error status, too slowly, or loops:
each run that fails says why (on the schedule and in its run), is counted in the metrics,
writes nothing of the bad page, moves no cursor, and waits before trying again (no hot loop);
the schedule recovers once the partner does. Items a page cannot write are kept, like a
pushed batch's, and replayable."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.feed_doubles import GeotabDouble, ScriptedFeed, geotab, scripted
from tests.partner_double import FakeClock, create_action, create_partner, post, upload_mapping
from tests.schedule_support import (
    geotab_schedule,
    get,
    run_now,
    runner,
    runs,
    scripted_schedule,
)
from tests.support import auth

__all__ = ["geotab", "scripted"]  # the fixtures
Client = TestClient[Any, Any]


async def _setup(client: Client, geotab: GeotabDouble, **overrides: Any) -> tuple[str, FakeClock]:
    clock = FakeClock()
    runner(client).clock = clock
    runner(client).rng = lambda: 0.5  # no jitter: backoffs are exact
    schedule = await geotab_schedule(client, geotab, **overrides)
    return schedule["id"], clock


async def _state(client: Client, schedule_id: str) -> dict[str, Any]:
    state: dict[str, Any] = (await get(client, f"/api/v1/schedules/{schedule_id}"))["state"]
    return state


async def _positions(client: Client) -> int:
    events = await get(client, "/api/v1/events?type=vehicle.position&limit=200")
    return len(events["items"])


async def _metric(client: Client, name: str, **labels: str) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_garbage_fails_the_run_visibly_writes_nothing_and_backs_off(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(3)
    geotab.misbehave("garbage")
    schedule_id, clock = await _setup(client, geotab)
    assert await runner(client).run_until_idle() == {"failed": 1}
    assert await runner(client).run_until_idle() == {}  # not due again at once: no hot loop
    state = await _state(client, schedule_id)
    assert state["last_error"]["kind"] == "not_json"
    assert "Service Unavailable" in state["last_error"]["message"]
    assert (state["cursor"], state["failures"]) == (None, 1)
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert 4 <= waited.total_seconds() <= 6  # the first backoff step, 5 s
    assert await _positions(client) == 0
    (run,) = await runs(client, schedule_id)
    assert (run["outcome"], run["written"], run["error"]["kind"]) == ("failed", 0, "not_json")
    assert await _metric(client, "gateway_schedule_errors_total", kind="not_json") == 1

    clock.advance(6)  # the partner recovered
    assert await runner(client).run_until_idle() == {"ok": 1}
    state = await _state(client, schedule_id)
    assert (state["failures"], state["cursor"]) == (0, f"{3:016x}")
    assert await _positions(client) == 3


async def test_a_page_of_the_wrong_shape_is_kept_once_and_nothing_is_written(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(2)
    geotab.misbehave("shape", times=2)
    schedule_id, clock = await _setup(client, geotab)
    await runner(client).run_until_idle()
    clock.advance(60)
    await runner(client).run_until_idle()
    state = await _state(client, schedule_id)
    assert (state["failures"], state["last_error"]["kind"]) == (2, "mapping")
    assert "does not fit mapping 'geotab-logrecord'" in state["last_error"]["message"]
    kept = await get(client, f"/api/v1/rejected?trigger_id={schedule_id}")
    assert [r["scope"] for r in kept["items"]] == ["body"]  # once per failure streak
    assert await _positions(client) == 0
    clock.advance(60)
    assert await runner(client).run_until_idle() == {"ok": 1}


async def test_a_cursor_that_loops_on_the_same_page_is_refused_before_writing_it_again(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(4)
    geotab.misbehave("loop", times=10)  # the first page and its version, forever
    schedule_id, clock = await _setup(client, geotab)
    assert await runner(client).run_until_idle() == {"failed": 1}
    clock.advance(60)
    assert await runner(client).run_until_idle() == {"failed": 1}
    state = await _state(client, schedule_id)
    assert state["last_error"]["kind"] == "loop"
    assert "looping; nothing was written" in state["last_error"]["message"]
    assert state["cursor"] == f"{2:016x}"  # the first page was read once, and kept
    assert await _positions(client) == 2
    assert await _metric(client, "gateway_schedule_errors_total", kind="loop") == 2


async def test_the_same_page_under_new_cursors_is_refused_as_a_loop(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(6)
    geotab.misbehave("ok")  # the first page as it is
    geotab.misbehave("repeat")  # then the same records under the next version
    schedule_id, _ = await _setup(client, geotab)
    await runner(client).run_until_idle()
    state = await _state(client, schedule_id)
    assert state["last_error"]["kind"] == "loop"
    assert await _positions(client) == 2


async def test_a_partner_that_does_not_answer_in_time_is_a_timeout(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(1)
    geotab.misbehave("slow")
    schedule_id, _ = await _setup(client, geotab)  # the partner's timeout is 1 s
    assert await runner(client).run_until_idle() == {"failed": 1}
    error = (await _state(client, schedule_id))["last_error"]
    assert error["kind"] == "timeout"
    assert await _metric(client, "gateway_schedule_errors_total", kind="timeout") == 1


async def test_429_with_retry_after_waits_as_long_as_the_partner_asks(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(1)
    geotab.misbehave("status", status=429, headers={"Retry-After": "120"})
    schedule_id, clock = await _setup(client, geotab)
    await runner(client).run_until_idle()
    state = await _state(client, schedule_id)
    assert (state["last_error"]["kind"], state["last_error"]["status"]) == ("rate_limited", 429)
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert 119 <= waited.total_seconds() <= 121
    clock.advance(60)
    assert await runner(client).run_until_idle() == {}
    clock.advance(61)
    assert await runner(client).run_until_idle() == {"ok": 1}


async def test_a_run_the_partners_open_circuit_holds_back_is_no_failure_and_goes_at_the_probe(
    client: Client, geotab: GeotabDouble
) -> None:
    """Five failed runs open the partner's circuit: the sixth run sends nothing, is `held`
    (not failed: the streak and the back-off stay), and runs again at the breaker's probe
    time, 30 s later, not at the sixth back-off step."""
    geotab.add_records(1)
    geotab.misbehave("status", times=5, status=503)
    schedule_id, clock = await _setup(client, geotab)
    guard_time = [0.0]  # the breaker's clock moves on its own: the back-off steps are longer
    client.app[services_key].guards.clock = lambda: time.monotonic() + guard_time[0]
    for _ in range(5):
        clock.advance(3600)  # past any back-off step
        assert await runner(client).run_until_idle() == {"failed": 1}
    calls = len(geotab.calls)

    clock.advance(3600)
    assert await runner(client).run_until_idle() == {"held": 1}
    assert len(geotab.calls) == calls  # nothing left
    state = await _state(client, schedule_id)
    assert state["failures"] == 5
    assert state["last_error"]["kind"] == "circuit_open"
    assert state["last_error"]["message"].startswith("not sent: circuit open")
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert 29 <= waited.total_seconds() <= 30
    run = (await runs(client, schedule_id))[0]
    assert (run["outcome"], run["error"]["kind"]) == ("held", "circuit_open")
    assert await _metric(client, "gateway_schedule_errors_total", kind="circuit_open") == 0
    assert await _metric(client, "gateway_schedule_runs_total", outcome="held") == 1

    clock.advance(31)
    guard_time[0] += 31
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert (await _state(client, schedule_id))["failures"] == 0
    assert await _positions(client) == 1


async def test_a_disabled_partner_is_not_polled_and_its_runs_are_held_until_it_is_enabled(
    client: Client, geotab: GeotabDouble
) -> None:
    """As `invoke` answers 503 "is not called until it is enabled again", a schedule run
    sends nothing to a disabled partner: the run is `held` (no failure, no back-off) and
    the schedule tries again at its own cadence, so it reads on once the partner is back."""
    geotab.add_records(1)
    schedule_id, clock = await _setup(client, geotab)
    (partner,) = (await get(client, "/api/v1/partners"))["items"]
    where = f"/api/v1/partners/{partner['id']}"
    disabled = await client.patch(where, headers=auth(), json={"status": "disabled"})
    assert disabled.status == 200

    assert await runner(client).run_until_idle() == {"held": 1}
    assert geotab.calls == [] and geotab.authentications == 0
    state = await _state(client, schedule_id)
    assert state["failures"] == 0
    assert state["last_error"]["kind"] == "partner_disabled"
    assert (
        "partner Geotab is disabled; it is not called until it is enabled again"
        in (state["last_error"]["message"])
    )
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert waited.total_seconds() <= 60  # its `every`, not the hour the disabled partner names
    run = (await runs(client, schedule_id))[0]
    assert (run["outcome"], run["error"]["kind"]) == ("held", "partner_disabled")

    enabled = await client.patch(where, headers=auth(), json={"status": "active"})
    assert enabled.status == 200
    clock.advance(61)
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert await _positions(client) == 1


async def test_an_item_whose_lookup_value_is_an_object_is_kept_and_the_rest_written(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(2)
    geotab.records[0]["device"]["id"] = {"id": "b7"}  # an object where an id belongs
    geotab.records.append({**geotab.records[1], "id": "b00FF", "device": {"id": "b99"}})
    schedule_id, _ = await _setup(client, geotab, limit=10)
    assert await runner(client).run_until_idle() == {"ok": 1}
    (run,) = await runs(client, schedule_id)
    assert (run["items_read"], run["written"], run["rejected"]) == (3, 1, 2)
    assert {e["index"] for e in run["item_errors"]} == {0, 2}
    assert (await _state(client, schedule_id))["cursor"] == f"{3:016x}"
    kept = (await get(client, f"/api/v1/rejected?trigger_id={schedule_id}"))["items"]
    assert sorted(r["reason"] for r in kept) == ["entity", "mapping"]

    # The unknown device gets its vehicle; its kept item replays through the schedule's target.
    await post(
        client,
        "/api/v1/entities/vehicle",
        {"plate": "XYZ9876", "attributes": {"tracker_id": "b99"}},
    )
    (unknown,) = [r for r in kept if r["reason"] == "entity"]
    response = await client.post(f"/api/v1/rejected/{unknown['id']}/replay", headers=auth())
    assert response.status == 200, await response.text()
    vehicle = await get(client, "/api/v1/entities/vehicle/XYZ9876")
    assert vehicle["attributes"]["geotab_log_id"] == "b00FF"


async def test_a_page_past_a_large_entitys_byte_bound_lands_its_items_before_and_keeps_the_rest(
    aiohttp_client: Any, make_app: Callable[..., web.Application], scripted: ScriptedFeed
) -> None:
    """A page changing a 1 MB vehicle more often than its outbox holds: the run failed as
    `internal` at the item past the bound, and every next run read the page again from its
    first item (writing those again) to fail there, backing off for ever. Now the run is ok:
    the items before the bound written once, those past it kept to replay once the relay
    caught up, the cursor past the page."""
    client = await aiohttp_client(make_app(max_body_bytes=1024 * 1024))
    big = {"plate": "ABC1D23", "attributes": {"notes": "y" * 1_000_000}}
    await post(client, "/api/v1/entities/vehicle", big)
    items = [{"placa": "ABC1D23", "codigo": i, "raw": i} for i in range(30)]
    scripted.answer = lambda after, n: {"items": items, "more": False}
    schedule = await scripted_schedule(client, scripted)
    assert await runner(client).run_until_idle() == {"ok": 1}
    (run,) = await runs(client, schedule["id"])
    written = run["written"]
    assert written > 5 and (run["items_read"], run["rejected"]) == (30, 30 - written), run
    kept = (await get(client, f"/api/v1/rejected?trigger_id={schedule['id']}"))["items"]
    assert sorted(r["index"] for r in kept) == list(range(written, 30))
    assert {r["reason"] for r in kept} == {"backlogged"}
    await client.app[services_key].relay.run_until_idle()
    first = min(kept, key=lambda r: r["index"])
    response = await client.post(f"/api/v1/rejected/{first['id']}/replay", headers=auth())
    assert response.status == 200, await response.text()
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["attributes"]["raw"] == written


async def test_the_partner_error_member_of_a_json_rpc_answer_fails_the_run(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(1)
    geotab.misbehave("status", status=200)  # HTTP 200 carrying {"error": "no"}
    schedule_id, _ = await _setup(client, geotab)
    assert await runner(client).run_until_idle() == {"failed": 1}
    error = (await _state(client, schedule_id))["last_error"]
    assert (error["kind"], error["message"]) == (
        "partner_error",
        "the partner reported an error: no",
    )
    assert await _positions(client) == 0


async def test_run_now_on_a_paused_schedule_is_a_conflict(
    client: Client, geotab: GeotabDouble
) -> None:
    schedule_id, _ = await _setup(client, geotab)
    await client.post(f"/api/v1/schedules/{schedule_id}/pause", headers=auth())
    response = await client.post(f"/api/v1/schedules/{schedule_id}/run", headers=auth())
    assert response.status == 409
    assert await runner(client).run_until_idle() == {}
    await run_now_after_resume(client, schedule_id)


async def run_now_after_resume(client: Client, schedule_id: str) -> None:
    response = await client.post(f"/api/v1/schedules/{schedule_id}/resume", headers=auth())
    assert (await response.json())["status"] == "active"
    await run_now(client, schedule_id)
    assert await runner(client).run_until_idle() == {"ok": 1}


async def test_a_feed_read_again_without_a_cursor_keeps_one_record_of_a_refused_item(
    client: Client, geotab: GeotabDouble
) -> None:
    """A feed polled without a cursor answers the same page every run: its refused item is
    one record counting the runs, not a record a run (which pushed every other one of the
    schedule past the bound within hours)."""
    geotab.add_records(2)
    geotab.records.append({**geotab.records[1], "id": "b00FF", "device": {"id": "b99"}})
    schedule_id, clock = await _setup(client, geotab, limit=10, cursor=None)
    for _ in range(4):
        assert await runner(client).run_until_idle() == {"ok": 1}
        clock.advance(61)
    kept = (await get(client, f"/api/v1/rejected?trigger_id={schedule_id}"))["items"]
    assert [(r["reason"], r["times_received"]) for r in kept] == [("entity", 4)]


async def test_an_error_member_saying_no_in_text_or_as_zero_is_no_error(
    client: Client, scripted: ScriptedFeed
) -> None:
    """`<erro>false</erro>` (all text in XML) or `"codigo": 0` is a partner saying all is
    well; a message is its error."""
    said: dict[str, Any] = {"erro": None}
    scripted.answer = lambda after, n: {
        "items": [{"placa": "ABC1D23", "codigo": str(n)}],
        "next": f"c{n}",
        "more": False,
        **said,
    }
    schedule = await scripted_schedule(client, scripted, error="erro")
    for fine in (None, "false", "0", 0, "", " False "):
        said["erro"] = fine
        await run_now(client, schedule["id"])
        assert await runner(client).run_until_idle() == {"ok": 1}, fine
    said["erro"] = "Token inválido"
    await run_now(client, schedule["id"])
    assert await runner(client).run_until_idle() == {"failed": 1}
    error = (await _state(client, schedule["id"]))["last_error"]
    assert (error["kind"], error["message"]) == (
        "partner_error",
        "the partner reported an error: Token inválido",
    )


@pytest.mark.parametrize("status", [204, 200])
async def test_a_quiet_partner_answering_no_body_is_an_empty_page_not_a_failure(
    client: Client, scripted: ScriptedFeed, status: int
) -> None:
    """A 204 No Content, or a 200 with `Content-Length: 0`, has nothing new: the cursor
    stays, the run is `ok` and the next one comes at the regular time, not after a back-off."""
    first = {"items": [{"placa": "ABC1D23", "codigo": "1"}], "next": "c1", "more": True}
    scripted.answer = lambda after, n: first if after is None else web.Response(status=status)
    clock = FakeClock()
    runner(client).clock = clock
    schedule = await scripted_schedule(client, scripted)
    assert await runner(client).run_until_idle() == {"ok": 1}
    for _ in range(3):
        clock.advance(3601)
        started = clock.now
        assert await runner(client).run_until_idle() == {"ok": 1}
        state = await _state(client, schedule["id"])
        assert (state["cursor"], state["failures"], state["last_error"]) == ("c1", 0, None)
        waited = datetime.fromisoformat(state["next_run_at"]) - started
        assert 3599 <= waited.total_seconds() <= 3601
    assert [c["after"] for c in scripted.calls] == [None, "c1", "c1", "c1", "c1"]
    assert await _metric(client, "gateway_schedule_errors_total", kind="not_json") == 0


async def test_a_partner_throttling_after_pages_paces_the_run_without_a_failure(
    client: Client, scripted: ScriptedFeed
) -> None:
    """A 429 with `Retry-After` after pages of the run (Geotab's one call a second): the run
    ends `more` with what it read, no failure, and the next reads on when the partner said,
    not after a back-off that grows to an hour."""

    def answer(after: str | None, n: int) -> Any:
        if n in (2, 4):
            throttled = {"error": "OverLimitException"}
            return web.json_response(throttled, status=429, headers={"Retry-After": "7"})
        page = int((after or "c0")[1:])
        more = page < 2
        return {
            "items": [{"placa": "ABC1D23", "codigo": str(page)}],
            "next": f"c{page + 1}",
            "more": more,
        }

    scripted.answer = answer
    clock = FakeClock()
    runner(client).clock = clock
    schedule = await scripted_schedule(client, scripted)
    for _ in range(2):
        started = clock.now
        assert await runner(client).run_until_idle() == {"more": 1}
        state = await _state(client, schedule["id"])
        assert (state["failures"], state["last_error"]) == (0, None)
        waited = datetime.fromisoformat(state["next_run_at"]) - started
        assert 7 <= waited.total_seconds() <= 8
        assert await runner(client).run_until_idle() == {}  # not before the partner said
        clock.advance(7.5)
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert [c["after"] for c in scripted.calls] == [None, "c1", "c1", "c2", "c2"]
    assert (await _state(client, schedule["id"]))["cursor"] == "c3"
    newest = (await runs(client, schedule["id"]))[1]
    assert newest["outcome"] == "more" and "429" in newest["note"]
    assert await _metric(client, "gateway_schedule_errors_total", kind="rate_limited") == 0


# MyGeotab's throttle as its SDK guide shows it ("Limits": an OverLimitException, with a
# `Retry-After`): a JSON-RPC error, which comes with HTTP 200 like all of them.
GEOTAB_OVER_LIMIT = {
    "error": {
        "message": "API calls quota exceeded. Maximum admitted 1 per 1s.",
        "code": -32000,
        "data": {"id": "b83dc64f", "type": "OverLimitException"},
        "name": "JSONRPCError",
        "errors": [{"name": "OverLimitException", "message": "API calls quota exceeded."}],
    },
    "jsonrpc": "2.0",
}


@pytest.mark.parametrize(
    ("answer", "headers", "wait"),
    [
        (GEOTAB_OVER_LIMIT, {"Retry-After": "3"}, 3),
        (GEOTAB_OVER_LIMIT, {}, 5),  # no Retry-After: the first back-off step
        ({"error": {"code": -32000, "message": "slow down"}}, {"Retry-After": "3"}, 3),
    ],
    ids=["over-limit", "over-limit-without-retry-after", "error-with-retry-after"],
)
async def test_a_json_rpc_throttle_after_pages_paces_the_run_without_a_failure(
    client: Client,
    scripted: ScriptedFeed,
    answer: dict[str, Any],
    headers: dict[str, str],
    wait: float,
) -> None:
    """MyGeotab throttles a backlog read at once page after page with a JSON-RPC error on an
    HTTP 200, not a 429: the run ends `more` with what it read, no failure, the next one due
    when the partner said. It was a `partner_error`: one page a run and a back-off growing
    to an hour."""

    def page(after: str | None, n: int) -> Any:
        if n % 2 == 0:  # the call sent at once after a page
            return web.json_response(answer, headers=headers)
        number = int((after or "c0")[1:])
        items = [{"placa": "ABC1D23", "codigo": str(number)}]
        return {"items": items, "next": f"c{number + 1}", "more": number < 2}

    scripted.answer = page
    clock = FakeClock()
    runner(client).clock = clock
    schedule = await scripted_schedule(client, scripted, error="error")
    for _ in range(2):
        started = clock.now
        assert await runner(client).run_until_idle() == {"more": 1}
        state = await _state(client, schedule["id"])
        assert (state["failures"], state["last_error"]) == (0, None)
        waited = datetime.fromisoformat(state["next_run_at"]) - started
        assert wait <= waited.total_seconds() <= wait + 1
        assert await runner(client).run_until_idle() == {}  # not before the partner said
        clock.advance(wait + 0.5)
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert [c["after"] for c in scripted.calls] == [None, "c1", "c1", "c2", "c2"]
    assert (await _state(client, schedule["id"]))["cursor"] == "c3"
    newest = (await runs(client, schedule["id"]))[1]
    assert newest["outcome"] == "more" and newest["note"].startswith("the partner answered 200")
    assert await _metric(client, "gateway_schedule_errors_total", kind="partner_error") == 0


async def test_a_json_rpc_throttle_on_a_first_call_honours_its_retry_after(
    client: Client, scripted: ScriptedFeed
) -> None:
    """The SDK guide's own example, `Retry-After: 58`, on a run's first call: `rate_limited`
    and the next run after the 58 s the partner asked, as after a 429 (it was a
    `partner_error` and the next call came after 5 s)."""
    over_limit = web.json_response(GEOTAB_OVER_LIMIT, headers={"Retry-After": "58"})
    scripted.answer = lambda after, n: over_limit
    clock = FakeClock()
    runner(client).clock = clock
    runner(client).rng = lambda: 0.5
    schedule = await scripted_schedule(client, scripted, error="error")
    started = clock.now
    assert await runner(client).run_until_idle() == {"failed": 1}
    state = await _state(client, schedule["id"])
    assert (state["failures"], state["last_error"]["kind"]) == (1, "rate_limited")
    assert "OverLimitException" in state["last_error"]["message"]
    waited = datetime.fromisoformat(state["next_run_at"]) - started
    assert 58 <= waited.total_seconds() <= 59
    clock.advance(57)
    assert await runner(client).run_until_idle() == {}
    assert len(scripted.calls) == 1


async def test_a_partner_error_with_retry_after_named_by_the_schedule_is_a_throttle(
    client: Client, scripted: ScriptedFeed
) -> None:
    """The schedule's `error` finds the error (here a text, not a JSON-RPC object): with a
    `Retry-After` it is the partner's throttle, without one a `partner_error` as before."""
    busy = {"fault": "Too many requests", "items": []}
    scripted.answer = lambda after, n: web.json_response(busy, headers={"Retry-After": "30"})
    clock = FakeClock()
    runner(client).clock = clock
    runner(client).rng = lambda: 0.5
    schedule = await scripted_schedule(client, scripted, error="fault")
    started = clock.now
    assert await runner(client).run_until_idle() == {"failed": 1}
    state = await _state(client, schedule["id"])
    assert state["last_error"]["kind"] == "rate_limited"
    waited = datetime.fromisoformat(state["next_run_at"]) - started
    assert 30 <= waited.total_seconds() <= 31
    scripted.answer = lambda after, n: busy
    clock.advance(31)
    assert await runner(client).run_until_idle() == {"failed": 1}
    assert (await _state(client, schedule["id"]))["last_error"]["kind"] == "partner_error"


async def _refused_once(client: Client, scripted: ScriptedFeed, schedule_id: str) -> None:
    """The page with the odd record and the page after it are written, the cursor moves, the
    odd record is kept as a rejected item at its index, and its replay writes it."""
    assert await runner(client).run_until_idle() == {"ok": 1}
    state = await _state(client, schedule_id)
    assert (state["cursor"], state["failures"], state["last_error"]) == ("c2", 0, None)
    for plate in ("ABC1D23", "RIO3F45"):
        await get(client, f"/api/v1/entities/vehicle/{plate}")
    response = await client.get("/api/v1/entities/vehicle/BRA2E19", headers=auth())
    assert response.status == 404
    first = (await runs(client, schedule_id))[0]
    assert (first["written"], first["rejected"], first["skipped"]) == (2, 1, 0)
    assert [e["index"] for e in first["item_errors"]] == [1]
    (kept,) = (await get(client, f"/api/v1/rejected?trigger_id={schedule_id}"))["items"]
    assert (kept["scope"], kept["index"]) == ("item", 1)
    replayed = await client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=auth())
    assert replayed.status in (200, 201), await replayed.text()
    await get(client, "/api/v1/entities/vehicle/BRA2E19")


async def test_an_item_dedupe_cannot_read_is_kept_and_the_feed_goes_on(
    client: Client, scripted: ScriptedFeed
) -> None:
    """`join` of a number (an ERP's `codigo` as 2, not "2") fails for that record only."""
    pages = {
        None: {
            "items": [{"placa": "ABC1D23", "codigo": "1"}, {"placa": "BRA2E19", "codigo": 2}],
            "next": "c1",
            "more": True,
        },
        "c1": {"items": [{"placa": "RIO3F45", "codigo": "3"}], "next": "c2", "more": False},
    }
    scripted.answer = lambda after, n: pages.get(after, {"items": [], "next": after})
    dedupe = {"by": "join('-', [placa, codigo])"}
    schedule = await scripted_schedule(client, scripted, dedupe=dedupe)
    await _refused_once(client, scripted, schedule["id"])
    (kept,) = (await get(client, f"/api/v1/rejected?trigger_id={schedule['id']}"))["items"]
    assert kept["reason"] == "dedupe" and "join" in kept["detail"]


async def test_a_record_the_mappings_when_cannot_read_is_kept_and_the_feed_goes_on(
    client: Client, scripted: ScriptedFeed
) -> None:
    mixed = (
        "name: erp-mixed\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "items: {from: items, when: \"starts_with(tipo, 'veic')\"}\n"
        "fields:\n  plate: {from: placa, transforms: [plate]}\n"
    )
    pages = {
        None: {
            "items": [{"tipo": "veiculo", "placa": "ABC1D23"}, {"tipo": None, "placa": "BRA2E19"}],
            "next": "c1",
            "more": True,
        },
        "c1": {"items": [{"tipo": "veiculo", "placa": "RIO3F45"}], "next": "c2", "more": False},
    }
    scripted.answer = lambda after, n: pages.get(after, {"items": [], "next": after})
    await upload_mapping(client, mixed)
    erp = await create_partner(client, scripted.url, name="ERP", auth={"type": "none"})
    action = await create_action(
        client, erp["id"], name="feed", method="GET", path="/feed", mode="proxy"
    )
    body = {
        "name": "mixed",
        "action_id": action["id"],
        "every": "1h",
        "cursor": {"from": "next", "param": "query.after", "more": "more"},
        "target": {"entity_type": "vehicle", "mapping": "erp-mixed"},
    }
    schedule = await post(client, "/api/v1/schedules", body)
    await _refused_once(client, scripted, schedule["id"])
    (kept,) = (await get(client, f"/api/v1/rejected?trigger_id={schedule['id']}"))["items"]
    assert kept["reason"] == "mapping"


async def test_records_refused_alone_are_remembered_and_refused_once(
    client: Client, scripted: ScriptedFeed
) -> None:
    """A partner read "newest N" with dedupe and no cursor answers the same page every run.
    A record `when` cannot read and one `dedupe.by` cannot read are remembered like an item
    the target refuses (by its id, else by its content): each is refused once, not on every
    run, and once replayed it does not come back as a new pending rejection."""
    mixed = (
        "name: erp-mixed\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "items: {from: items, when: \"starts_with(tipo, 'veic')\"}\n"
        "fields:\n  plate: {from: placa, transforms: [plate]}\n"
    )
    page = {
        "items": [
            {"tipo": "veiculo", "placa": "ABC1D23", "codigo": "1"},
            {"tipo": "veiculo", "placa": "not a plate", "codigo": "2"},  # the target refuses
            {"tipo": None, "placa": "BRA2E19", "codigo": "3"},  # `when` cannot read
            {"tipo": "veiculo", "placa": "RIO3F45", "codigo": 4},  # `dedupe.by` cannot read
        ]
    }
    scripted.answer = lambda after, n: page
    await upload_mapping(client, mixed)
    erp = await create_partner(client, scripted.url, name="ERP", auth={"type": "none"})
    action = await create_action(
        client, erp["id"], name="feed", method="GET", path="/feed", mode="proxy"
    )
    body = {
        "name": "newest",
        "action_id": action["id"],
        "every": "1m",
        "dedupe": {"by": "join('-', [placa, codigo])"},
        "target": {"entity_type": "vehicle", "mapping": "erp-mixed"},
    }
    schedule = await post(client, "/api/v1/schedules", body)
    kept_path = f"/api/v1/rejected?trigger_id={schedule['id']}"

    async def run() -> dict[str, Any]:
        await run_now(client, schedule["id"])
        assert await runner(client).run_until_idle() == {"ok": 1}
        newest: dict[str, Any] = (await runs(client, schedule["id"]))[0]
        return newest

    first = await run()
    assert (first["written"], first["rejected"], first["skipped"]) == (1, 3, 0)
    for _ in range(2):
        again = await run()
        assert (again["written"], again["rejected"], again["skipped"]) == (0, 0, 4)
        assert again["item_errors"] == []
    kept = (await get(client, kept_path))["items"]
    assert sorted((k["index"], k["reason"], k["times_received"]) for k in kept) == [
        (1, "mapping", 1),
        (2, "mapping", 1),
        (3, "dedupe", 1),
    ]
    (unread,) = [k for k in kept if k["index"] == 2]
    replayed = await client.post(f"/api/v1/rejected/{unread['id']}/replay", headers=auth())
    assert replayed.status in (200, 201), await replayed.text()
    await get(client, "/api/v1/entities/vehicle/BRA2E19")
    assert (await run())["rejected"] == 0
    pending = (await get(client, f"{kept_path}&status=pending"))["items"]
    assert sorted(k["index"] for k in pending) == [1, 3]


_SOAP_ENCODED = (
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
)


async def test_a_soap_encoded_answer_is_read_by_its_elements_text(
    client: Client, scripted: ScriptedFeed
) -> None:
    """SOAP rpc/encoded services (NuSOAP, Axis 1) put `xsi:type` on every element: the tree
    holds `{"@type": "xsd:boolean", "#text": "false"}`. `error`, `cursor.more` and
    `cursor.from` read such an element by its text: `false` is no error and ends the feed,
    and the next page's token is the element's text."""

    def answer(after: str | None, n: int) -> web.Response:
        more = "true" if n == 1 else "false"
        plate = {1: "ABC1D23", 2: "BRA2E19"}[n]
        body = (
            f"<resposta {_SOAP_ENCODED}>"
            f'<erro xsi:type="xsd:boolean">false</erro>'
            f'<temMais xsi:type="xsd:boolean">{more}</temMais>'
            f'<proximo xsi:type="xsd:string">c{n + 1}</proximo>'
            f'<itens><item><placa xsi:type="xsd:string">{plate}</placa></item></itens>'
            "</resposta>"
        )
        return web.Response(body=body.encode(), content_type="text/xml")

    scripted.answer = answer
    await upload_mapping(
        client,
        """
name: erp-soap
direction: inbound
entity_type: vehicle
key: [plate]
items: resposta.itens.item
fields:
  plate: {from: 'placa."#text"', transforms: [plate]}
""",
    )
    schedule = await scripted_schedule(
        client,
        scripted,
        error="resposta.erro",
        cursor={"from": "resposta.proximo", "param": "query.after", "more": "resposta.temMais"},
        target={"entity_type": "vehicle", "mapping": "erp-soap"},
    )

    assert await runner(client).run_until_idle() == {"ok": 1}

    assert [c["after"] for c in scripted.calls] == [None, "c2"]
    assert (await _state(client, schedule["id"]))["cursor"] == "c3"
    for plate in ("ABC1D23", "BRA2E19"):
        response = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())
        assert response.status == 200, plate
