"""A partner whose cursor comes back, within a run, to one it already read and answers the
same page again (two pages naming each other, or a longer cycle) does not make the schedule
call it without a pause: the cycle is refused as a `loop` and backs off. Nothing of that is
kept across runs, so one odd answer never stops a feed for good. Whatever else keeps a
partner saying `more` (a cycle longer than a run, pages that change every lap, records the
mapping leaves out or dedupe had seen) is bounded: at most `MAX_RUNS_IN_ROW` runs in a row,
then the regular time. Empty pages under new cursors wait for the regular run at once. A
cursor that comes back with another page (a feed restarted from its earliest record) is read
on, not taken for a cycle; a page-number list ends on an empty page or its last page answered
again, and is read whole again from `initial`."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from bson import ObjectId

from gateway.schedules.calls import cursor_key, page_mark
from gateway.schedules.runner import MAX_RUNS_IN_ROW
from gateway.web.state import services_key
from tests.feed_doubles import ScriptedFeed, scripted
from tests.partner_double import FakeClock, upload_mapping
from tests.schedule_support import get, runner, runs, scripted_schedule
from tests.support import auth

__all__ = ["scripted"]  # the fixture
Client = TestClient[Any, Any]
# A runner that spins never gets idle: bounded, so the test fails instead of hanging.
BOUND = 10.0


def _clock(client: Client) -> FakeClock:
    clock = FakeClock()
    runner(client).clock = clock
    runner(client).rng = lambda: 0.5  # no jitter: backoffs are exact
    return clock


async def _until_idle(client: Client) -> dict[str, int]:
    return dict(await asyncio.wait_for(runner(client).run_until_idle(), BOUND))


async def _state(client: Client, schedule_id: str) -> dict[str, Any]:
    state: dict[str, Any] = (await get(client, f"/api/v1/schedules/{schedule_id}"))["state"]
    return state


def _item(plate: str, code: str) -> dict[str, str]:
    return {"placa": plate, "codigo": code}


async def test_a_cursor_cycling_between_two_pages_is_a_loop_that_backs_off(
    client: Client, scripted: ScriptedFeed
) -> None:
    pages = {
        None: {"items": [_item("ABC1D23", "1")], "next": "c2", "more": True},
        "c1": {"items": [_item("ABC1D23", "1")], "next": "c2", "more": True},
        "c2": {"items": [_item("BRA2E19", "2")], "next": "c1", "more": True},
    }
    scripted.answer = lambda after, n: pages[after]
    clock = _clock(client)
    schedule = await scripted_schedule(client, scripted)

    assert await _until_idle(client) == {"failed": 1}
    # None → c2 → c1 → c2, which answers the page it gave before in this run.
    assert [c["after"] for c in scripted.calls] == [None, "c2", "c1", "c2"]
    state = await _state(client, schedule["id"])
    assert state["last_error"]["kind"] == "loop"
    assert "'c2'" in state["last_error"]["message"]
    assert (state["cursor"], state["failures"]) == ("c2", 1)  # not moved on into the cycle
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert 4 <= waited.total_seconds() <= 6  # the first backoff step
    for plate in ("ABC1D23", "BRA2E19"):  # both pages were written
        await get(client, f"/api/v1/entities/vehicle/{plate}")

    assert await _until_idle(client) == {}  # no hot loop
    clock.advance(6)
    # Nothing is kept across runs: from c2 once round the cycle, then the loop again and a
    # longer wait.
    assert await _until_idle(client) == {"failed": 1}
    assert [c["after"] for c in scripted.calls][4:] == ["c2", "c1", "c2"]
    state = await _state(client, schedule["id"])
    assert (state["last_error"]["kind"], state["cursor"], state["failures"]) == ("loop", "c2", 2)
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert 29 <= waited.total_seconds() <= 31
    run = (await runs(client, schedule["id"]))[0]
    assert (run["outcome"], run["written"], run["error"]["kind"]) == ("failed", 2, "loop")


async def test_a_lists_last_page_read_again_by_the_next_run_is_no_loop(
    client: Client, scripted: ScriptedFeed
) -> None:
    """A body cursor whose last page names no next cursor: the next run sends the last cursor
    again and, nothing added, gets that page again. The run ends `ok` with nothing new (the
    cursor could not move, so nothing spins); it was a `loop` failure every idle run."""
    pages = {
        None: {"items": [_item("ABC1D23", "1")], "next": "c2"},
        "c2": {"items": [_item("BRA2E19", "2")]},
    }
    scripted.answer = lambda after, n: pages[after]
    _clock(client)
    cursor = {"from": "next", "param": "query.after"}
    schedule = await scripted_schedule(client, scripted, cursor=cursor)
    assert await _until_idle(client) == {"ok": 1}

    await client.post(f"/api/v1/schedules/{schedule['id']}/run", headers=auth())
    assert await _until_idle(client) == {"ok": 1}
    assert [c["after"] for c in scripted.calls] == [None, "c2", "c2"]
    run = (await runs(client, schedule["id"]))[0]
    assert (run["outcome"], run["pages"], run["written"], run["skipped"]) == ("ok", 1, 0, 1)
    state = await _state(client, schedule["id"])
    assert (state["cursor"], state["failures"], state["last_error"]) == ("c2", 0, None)


async def test_a_next_cursor_leading_back_to_the_same_page_within_a_run_is_a_loop(
    client: Client, scripted: ScriptedFeed
) -> None:
    """The partner names a next cursor whose page is the one just read, even a page naming
    none after it: that is a loop (nothing written of the repeat), not a list's end."""
    pages = {
        None: {"items": [_item("ABC1D23", "1")], "next": "c2"},
        "c2": {"items": [_item("ABC1D23", "1")]},
    }
    scripted.answer = lambda after, n: pages[after]
    _clock(client)
    cursor = {"from": "next", "param": "query.after"}
    schedule = await scripted_schedule(client, scripted, cursor=cursor)
    assert await _until_idle(client) == {"failed": 1}
    state = await _state(client, schedule["id"])
    assert (state["last_error"]["kind"], state["cursor"]) == ("loop", "c2")


async def _paced(client: Client, schedule_id: str) -> str:
    metrics = await (await client.get("/metrics")).text()
    series = f'gateway_schedule_paced_total{{schedule="{schedule_id}"}} '
    return next((line for line in metrics.splitlines() if line.startswith(series)), "")


async def test_a_cycle_longer_than_a_run_goes_on_at_most_the_bound_of_runs_then_waits(
    client: Client, scripted: ScriptedFeed
) -> None:
    """(Before 2026-12-05, a chain of cursors kept across runs refused it as a `loop`.)"""
    pages = {
        None: {"items": [_item("ABC1D23", "1")], "next": "c2", "more": True},
        "c2": {"items": [_item("BRA2E19", "2")], "next": "c3", "more": True},
        "c3": {"items": [_item("RIO3F45", "3")], "next": "c2", "more": True},
    }
    scripted.answer = lambda after, n: pages[after]
    clock = _clock(client)
    schedule = await scripted_schedule(client, scripted, max_pages=1)

    assert await _until_idle(client) == {"more": MAX_RUNS_IN_ROW}
    assert len(scripted.calls) == MAX_RUNS_IN_ROW  # max_pages each
    state = await _state(client, schedule["id"])
    assert (state["failures"], state["last_error"]) == (0, None)
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert timedelta(minutes=59) < waited <= timedelta(hours=1)
    last, before = (await runs(client, schedule["id"]))[:2]
    assert "20 runs in a row" in last["note"] and before["note"] is None
    assert (await _paced(client, schedule["id"])).endswith(" 1.0")

    clock.advance(3600)  # the regular run starts a new row
    assert await _until_idle(client) == {"more": MAX_RUNS_IN_ROW}
    assert len(scripted.calls) == 2 * MAX_RUNS_IN_ROW
    assert (await _paced(client, schedule["id"])).endswith(" 2.0")


async def test_a_partner_that_moves_on_without_a_cycle_is_read_to_its_end(
    client: Client, scripted: ScriptedFeed
) -> None:
    """The cycle check does not stop a feed whose cursors only move on (a `more` chain over
    several runs, then the end)."""
    plates = ["ABC1D23", "BRA2E19", "RIO3F45", "SPO4G56", "CWB5H67"]

    def answer(after: str | None, n: int) -> dict[str, Any]:
        at = int(after or 0)
        return {"items": [_item(plates[at], str(at))], "next": str(at + 1), "more": at < 4}

    scripted.answer = answer
    clock = _clock(client)
    schedule = await scripted_schedule(client, scripted, max_pages=2)
    assert await _until_idle(client) == {"more": 2, "ok": 1}
    state = await _state(client, schedule["id"])
    assert (state["cursor"], state["failures"], state["last_error"]) == ("5", 0, None)
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert timedelta(minutes=59) < waited <= timedelta(hours=1)
    for plate in plates:
        await get(client, f"/api/v1/entities/vehicle/{plate}")


async def test_empty_pages_under_new_cursors_with_more_wait_for_the_regular_run(
    client: Client, scripted: ScriptedFeed
) -> None:
    scripted.answer = lambda after, n: {"items": [], "next": f"c{n}", "more": True}
    clock = _clock(client)
    schedule = await scripted_schedule(client, scripted, max_pages=5)

    assert await _until_idle(client) == {"more": 1}
    assert len(scripted.calls) == 5  # one run's pages, then no hurry
    assert await _until_idle(client) == {}
    state = await _state(client, schedule["id"])
    assert (state["cursor"], state["failures"]) == ("c5", 0)  # each empty page moved it
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert timedelta(minutes=59) < waited <= timedelta(hours=1)

    clock.advance(3600)  # the regular run reads on from there
    assert await _until_idle(client) == {"more": 1}
    assert scripted.calls[5]["after"] == "c5"
    assert len(scripted.calls) == 10


PLATES = ["ABC1D23", "BRA2E19", "RIO3F45", "SPO4G56", "CWB5H67", "POA6J78"]


async def test_a_feed_restarted_during_a_chain_of_more_runs_is_read_again_not_taken_for_a_cycle(
    client: Client, scripted: ScriptedFeed
) -> None:
    """An offset out of range is answered from the earliest record (Kafka's `earliest`): a
    log rebuilt between two runs of a chain sends the schedule back to offsets it read, which
    now answer other records."""
    log = [_item(PLATES[at % 3], f"old-{at}") for at in range(5)]
    rebuilt = [_item(plate, f"new-{at}") for at, plate in enumerate(PLATES[3:])]

    def answer(after: str | None, n: int) -> dict[str, Any]:
        if n == 4:  # the partner's log is rebuilt before the chain's second run
            log[:] = rebuilt
        at = int(after or 0)
        at = 0 if at >= len(log) else at
        return {"items": [log[at]], "next": str(at + 1), "more": at + 1 < len(log)}

    scripted.answer = answer
    _clock(client)
    schedule = await scripted_schedule(client, scripted, max_pages=3)

    assert await _until_idle(client) == {"more": 1, "ok": 1}
    # 3 is past the rebuilt log: 0 again, then 1 and 2, which answer its records.
    assert [c["after"] for c in scripted.calls] == [None, "1", "2", "3", "1", "2"]
    state = await _state(client, schedule["id"])
    assert (state["failures"], state["last_error"]) == (0, None)
    for at, plate in enumerate(PLATES[3:]):
        assert (await get(client, f"/api/v1/entities/vehicle/{plate}"))["attributes"][
            "erp_id"
        ] == f"new-{at}"


async def test_a_page_number_list_with_dedupe_is_read_whole_again_and_its_new_end_written(
    client: Client, scripted: ScriptedFeed
) -> None:
    """Pages of items dedupe had seen are what a list read again is made of: each `more` run
    goes on at once to the list's end, where the vehicle added since is."""
    rows = PLATES[:5]  # one vehicle a page

    def answer(after: str | None, n: int) -> dict[str, Any]:
        page = int(after or 1)
        return {"items": [_item(p, p) for p in rows[page - 1 : page]], "hasNext": page < len(rows)}

    scripted.answer = answer
    clock = _clock(client)
    cursor = {"step": 1, "initial": 1, "param": "query.after", "more": "hasNext"}
    schedule = await scripted_schedule(
        client, scripted, max_pages=2, cursor=cursor, dedupe={"by": "codigo", "keep": 1000}
    )
    assert await _until_idle(client) == {"more": 2, "ok": 1}
    assert len(scripted.calls) == 5

    rows.append(PLATES[5])  # added at the list's end
    clock.advance(3600)
    assert await _until_idle(client) == {"more": 2, "ok": 1}
    assert [c["after"] for c in scripted.calls][5:] == ["1", "2", "3", "4", "5", "6"]
    assert (await get(client, f"/api/v1/entities/vehicle/{PLATES[5]}"))["attributes"][
        "erp_id"
    ] == PLATES[5]
    skipped = [r["skipped"] for r in await runs(client, schedule["id"])][:3]
    assert skipped == [1, 2, 2]  # newest first: 5 and 6 (6 written), 3 and 4, 1 and 2


MIXED = """
name: erp-mixed
direction: inbound
entity_type: vehicle
key: [plate]
items:
  from: items
  when: {from: kind, equals: vehicle}
fields:
  plate: {from: placa, transforms: [plate]}
  attributes.erp_id: {from: codigo, transforms: [string]}
"""


async def test_a_mixed_feed_whose_mapping_keeps_some_records_reads_on_at_once(
    client: Client, scripted: ScriptedFeed
) -> None:
    """Pages of records the mapping leaves out (`items: {from, when}`, as geotab-statusdata
    does) are no empty pages: the feed is read on at once to its kept record."""

    def answer(after: str | None, n: int) -> dict[str, Any]:
        at = int(after or 0)
        kind = "vehicle" if at == 4 else "driver"
        record = {"kind": kind, "placa": "ABC1D23", "codigo": f"r{at}"}
        return {"items": [record], "next": str(at + 1), "more": at < 4}

    scripted.answer = answer
    _clock(client)
    await upload_mapping(client, MIXED)
    target = {"entity_type": "vehicle", "mapping": "erp-mixed"}
    schedule = await scripted_schedule(client, scripted, max_pages=3, target=target)

    assert await _until_idle(client) == {"more": 1, "ok": 1}
    assert len(scripted.calls) == 5
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["attributes"]["erp_id"] == "r4"
    reads = [(r["pages"], r["items_read"]) for r in await runs(client, schedule["id"])]
    assert reads == [(2, 1), (3, 0)]


async def test_records_dedupe_saw_answered_again_under_new_cursors_wait_after_the_bound(
    client: Client, scripted: ScriptedFeed
) -> None:
    """A partner answering the same record under ever new cursors with `more` forever. (Before
    2026-12-05 the bound was the seen records in a row against dedupe's `keep`.)"""
    scripted.answer = lambda after, n: {
        "items": [_item("ABC1D23", "1")],
        "next": f"c{n}",
        "more": True,
    }
    clock = _clock(client)
    schedule = await scripted_schedule(
        client, scripted, max_pages=2, dedupe={"by": "codigo", "keep": 3}
    )

    assert await _until_idle(client) == {"more": MAX_RUNS_IN_ROW}
    assert len(scripted.calls) == 2 * MAX_RUNS_IN_ROW
    assert await _until_idle(client) == {}
    state = await _state(client, schedule["id"])
    assert (state["cursor"], state["failures"]) == (f"c{2 * MAX_RUNS_IN_ROW}", 0)
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert timedelta(minutes=59) < waited <= timedelta(hours=1)


async def test_a_mixed_feed_without_more_reads_on_through_pages_the_mapping_leaves_out(
    client: Client, scripted: ScriptedFeed
) -> None:
    """Without `cursor.more` (Geotab's GetFeed, read by geotab-statusdata), a page of records
    the mapping leaves out is no end of the feed: only a page with no records is."""

    def answer(after: str | None, n: int) -> dict[str, Any]:
        at = int(after or 0)
        kind = "vehicle" if at == 3 else "driver"
        records = [{"kind": kind, "placa": "ABC1D23", "codigo": f"r{at}"}] if at < 4 else []
        return {"items": records, "next": str(min(at + 1, 4))}

    scripted.answer = answer
    _clock(client)
    await upload_mapping(client, MIXED)
    target = {"entity_type": "vehicle", "mapping": "erp-mixed"}
    cursor = {"from": "next", "param": "query.after"}
    schedule = await scripted_schedule(client, scripted, target=target, cursor=cursor)

    assert await _until_idle(client) == {"ok": 1}
    assert [c["after"] for c in scripted.calls] == [None, "1", "2", "3", "4"]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["attributes"]["erp_id"] == "r3"
    assert (await _state(client, schedule["id"]))["cursor"] == "4"


async def test_an_offset_log_answered_once_from_its_earliest_record_reads_on(
    client: Client, scripted: ScriptedFeed
) -> None:
    """One answer of a lagging replica (offset 3 unknown: read from the earliest, as Kafka's
    `earliest` does) sends the schedule back to offsets it read, whose pages never change.
    That is no cycle kept against the feed: the schedule reads on to the log's end. (Before
    2026-12-05 it failed as a `loop` on every run, for good.)"""
    head = [6]  # one record per offset, immutable

    def answer(after: str | None, n: int) -> dict[str, Any]:
        at = 0 if n == 4 else int(after or 0)
        if at >= head[0]:
            return {"items": [], "next": str(at), "more": False}
        return {"items": [_item(PLATES[at % 6], f"rec-{at}")], "next": str(at + 1), "more": True}

    scripted.answer = answer
    clock = _clock(client)
    schedule = await scripted_schedule(client, scripted, max_pages=3)

    assert await _until_idle(client) == {"more": 3, "ok": 1}
    sent = [c["after"] for c in scripted.calls]
    assert sent == [None, "1", "2", "3", "1", "2", "3", "4", "5", "6"]
    state = await _state(client, schedule["id"])
    assert (state["cursor"], state["failures"], state["last_error"]) == ("6", 0, None)

    head[0] = 8  # the log grows: the next regular run reads it
    clock.advance(3600)
    assert await _until_idle(client) == {"ok": 1}
    assert (await _state(client, schedule["id"]))["cursor"] == "8"
    vehicle = await get(client, f"/api/v1/entities/vehicle/{PLATES[7 % 6]}")
    assert vehicle["attributes"]["erp_id"] == "rec-7"


async def test_a_revisited_cursor_answering_its_page_again_within_a_run_fails_for_that_run_only(
    client: Client, scripted: ScriptedFeed
) -> None:
    """The same replica's answer within one run is a `loop` for that run: the next run, after
    the back-off, reads on from where it stopped."""

    def answer(after: str | None, n: int) -> dict[str, Any]:
        at = 0 if n == 4 else int(after or 0)
        return {"items": [_item(PLATES[at], f"rec-{at}")], "next": str(at + 1), "more": at < 5}

    scripted.answer = answer
    clock = _clock(client)
    schedule = await scripted_schedule(client, scripted)

    assert await _until_idle(client) == {"failed": 1}
    assert [c["after"] for c in scripted.calls] == [None, "1", "2", "3", "1"]
    state = await _state(client, schedule["id"])
    assert (state["last_error"]["kind"], state["cursor"]) == ("loop", "1")
    clock.advance(6)
    assert await _until_idle(client) == {"ok": 1}
    assert [c["after"] for c in scripted.calls][5:] == ["1", "2", "3", "4", "5"]
    state = await _state(client, schedule["id"])
    assert (state["cursor"], state["failures"]) == ("6", 0)  # last_error stays as it was


# A partner that would say `more` forever stops after this many calls, so a schedule that
# spins ends (and fails the test) instead of hanging.
STOP = 200


async def test_records_the_mapping_leaves_out_under_new_cursors_go_on_at_most_the_bound(
    client: Client, scripted: ScriptedFeed
) -> None:
    """Heartbeats under ever new cursors with `more` forever, none of them kept by the mapping:
    `MAX_RUNS_IN_ROW` runs of `max_pages` calls, then the regular time. (Before 2026-12-05 the
    partner was called without a pause.)"""
    scripted.answer = lambda after, n: {
        "items": [{"kind": "heartbeat", "placa": "ABC1D23", "codigo": f"h{n}"}],
        "next": f"c{n}",
        "more": n < STOP,
    }
    clock = _clock(client)
    await upload_mapping(client, MIXED)
    target = {"entity_type": "vehicle", "mapping": "erp-mixed"}
    schedule = await scripted_schedule(client, scripted, max_pages=5, target=target)

    assert await _until_idle(client) == {"more": MAX_RUNS_IN_ROW}
    assert len(scripted.calls) == 5 * MAX_RUNS_IN_ROW < STOP
    state = await _state(client, schedule["id"])
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert timedelta(minutes=59) < waited <= timedelta(hours=1)
    assert "runs in a row" in (await runs(client, schedule["id"]))[0]["note"]


async def test_a_cycle_whose_pages_change_every_lap_goes_on_at_most_the_bound(
    client: Client, scripted: ScriptedFeed
) -> None:
    """c1 → c2 → c1 where every record carries a value that changes on each call (a live
    position): never the same page, so never a `loop`, but bounded all the same."""

    def answer(after: str | None, n: int) -> dict[str, Any]:
        nxt = "c2" if after in (None, "c1") else "c1"
        record = {**_item("ABC1D23" if nxt == "c2" else "BRA2E19", "1"), "raw": n}
        return {"items": [record], "next": nxt, "more": n < STOP}

    scripted.answer = answer
    _clock(client)
    await scripted_schedule(client, scripted, max_pages=3)

    assert await _until_idle(client) == {"more": MAX_RUNS_IN_ROW}
    assert len(scripted.calls) == 3 * MAX_RUNS_IN_ROW < STOP


async def test_a_cycle_whose_reentry_page_changes_is_a_loop_at_its_stable_pages(
    client: Client, scripted: ScriptedFeed
) -> None:
    """c1 → c2 → c3 → c1 where only c1's page changes: c2, sent again in the same run, answers
    its page again. (Before 2026-12-05 the changed c1 page cleared what was kept and the cycle
    was read without a pause.)"""

    def answer(after: str | None, n: int) -> dict[str, Any]:
        at = after or "c1"
        record = {**_item("ABC1D23", at), "raw": n if at == "c1" else 0}
        return {"items": [record], "next": {"c1": "c2", "c2": "c3", "c3": "c1"}[at], "more": True}

    scripted.answer = answer
    _clock(client)
    cursor = {"from": "next", "param": "query.after", "more": "more", "initial": "c1"}
    schedule = await scripted_schedule(client, scripted, cursor=cursor)

    assert await _until_idle(client) == {"failed": 1}
    assert [c["after"] for c in scripted.calls] == ["c1", "c2", "c3", "c1", "c2"]
    state = await _state(client, schedule["id"])
    assert (state["last_error"]["kind"], state["cursor"]) == ("loop", "c2")


@pytest.mark.parametrize("dedupe", [None, {"by": "codigo", "keep": 1000}])
async def test_a_page_number_list_whose_partner_repeats_its_last_page_is_read_whole_again(
    client: Client, scripted: ScriptedFeed, dedupe: dict[str, Any] | None
) -> None:
    """Without `cursor.more`, a partner clamping page numbers past the end answers its last
    page again: that ends the list, and the next run reads it again from `initial`, where a
    changed row is written. (Before 2026-12-05 the cursor climbed past the end for good.)"""
    rows = PLATES[:3]
    version = ["v1"]

    def answer(after: str | None, n: int) -> dict[str, Any]:
        page = min(int(after or 1), len(rows))
        plate = rows[page - 1]
        return {"items": [_item(plate, f"{plate}-{version[0]}")], "page": page}

    scripted.answer = answer
    clock = _clock(client)
    cursor = {"step": 1, "initial": 1, "param": "query.after"}
    extra = {"dedupe": dedupe} if dedupe else {}
    schedule = await scripted_schedule(client, scripted, max_pages=5, cursor=cursor, **extra)

    assert await _until_idle(client) == {"ok": 1}
    assert [c["after"] for c in scripted.calls] == ["1", "2", "3", "4"]
    state = await _state(client, schedule["id"])
    assert (state["cursor"], state["failures"], state["last_error"]) == (1, 0, None)
    assert (await runs(client, schedule["id"]))[0]["written"] == 3

    version[0] = "v2"  # every row changed at the partner
    clock.advance(3600)
    assert await _until_idle(client) == {"ok": 1}
    assert [c["after"] for c in scripted.calls][4:] == ["1", "2", "3", "4"]
    for plate in rows:
        vehicle = await get(client, f"/api/v1/entities/vehicle/{plate}")
        assert vehicle["attributes"]["erp_id"] == f"{plate}-v2"


async def test_a_page_number_list_whose_partner_ignores_the_page_number_is_a_loop(
    client: Client, scripted: ScriptedFeed
) -> None:
    """A partner reading another parameter than `cursor.param` answers page 1 for every
    number, saying there is more: a `loop` an operator sees, not the list's end every run
    (its later pages never read, the run `ok`)."""
    rows = PLATES[:2]

    def answer(after: str | None, n: int) -> dict[str, Any]:
        return {"items": [_item(plate, plate) for plate in rows], "hasNext": True}

    scripted.answer = answer
    _clock(client)
    cursor = {"step": 1, "initial": 1, "param": "query.after", "more": "hasNext"}
    schedule = await scripted_schedule(client, scripted, max_pages=10, cursor=cursor)

    assert await _until_idle(client) == {"failed": 1}
    assert [c["after"] for c in scripted.calls] == ["1", "2"]
    state = await _state(client, schedule["id"])
    assert state["last_error"]["kind"] == "loop", state
    assert "cursor.param" in state["last_error"]["message"], state
    assert state["cursor"] == 1  # the next run reads the list from its first page still


async def test_runs_held_by_the_partners_rate_limit_count_toward_the_bound_of_runs_in_row(
    client: Client, scripted: ScriptedFeed
) -> None:
    """A rate limit slower than the partner's `more` (0.1 a second): every run reads one page
    and is held. Held runs neither counted toward the bound nor waited: 360 calls an hour,
    where the bound promises at most 20 runs in a row, whatever the partner answers."""

    def answer(after: str | None, n: int) -> dict[str, Any]:
        return {"items": [_item("ABC1D23", f"x{n}")], "next": f"c{n}", "more": True}

    scripted.answer = answer
    clock = _clock(client)
    start = clock()
    runner(client)._c.calls.guards.clock = lambda: (clock() - start).total_seconds()
    schedule = await scripted_schedule(client, scripted, max_pages=3)
    (partner_doc,) = (await get(client, "/api/v1/partners"))["items"]
    limited = {"rate_limit": {"per_second": 0.1, "burst": 1}, "timeout_seconds": 10}
    where = f"/api/v1/partners/{partner_doc['id']}"
    assert (await client.patch(where, json=limited, headers=auth())).status == 200

    for _ in range(120):  # 20 minutes, 10 s at a time
        await _until_idle(client)
        clock.advance(10)

    assert len(scripted.calls) <= MAX_RUNS_IN_ROW + 1, len(scripted.calls)
    assert any(run.get("note") for run in await runs(client, schedule["id"]))
    state = await _state(client, schedule["id"])
    assert datetime.fromisoformat(state["next_run_at"].replace("Z", "+00:00")) > clock()
    assert state["runs_in_row"] == 0  # the row ended: the regular time next


async def test_a_chain_of_cursors_stored_before_is_ignored_and_removed(
    client: Client, scripted: ScriptedFeed
) -> None:
    """A schedule document written before 2026-12-05 may carry a cross-run `chain` that names
    the cursor it is at with the page it answers: that is read on, not refused, and the next
    release takes the old fields off."""
    pages = {
        None: {"items": [_item("ABC1D23", "1")], "next": "c2", "more": True},
        "c2": {"items": [_item("BRA2E19", "2")], "next": "c3", "more": True},
        "c3": {"items": [_item("RIO3F45", "3")], "next": "c4", "more": False},
    }
    scripted.answer = lambda after, n: pages[after]
    _clock(client)
    schedule = await scripted_schedule(client, scripted, max_pages=1)
    collection = client.app[services_key].store.db["schedules"]
    key, mark = cursor_key("c2"), page_mark([_item("BRA2E19", "2")], "c3", True)
    await collection.update_one(
        {"_id": ObjectId(schedule["id"])}, {"$set": {"chain": [[key, mark]], "chain_seen": 9}}
    )

    assert await _until_idle(client) == {"more": 2, "ok": 1}
    assert (await _state(client, schedule["id"]))["cursor"] == "c4"
    stored = await collection.find_one({"_id": ObjectId(schedule["id"])})
    assert stored is not None and "chain" not in stored and "chain_seen" not in stored
