"""A partner whose cursor comes back to one the schedule already read and answers the same
page again (two pages naming each other, or a longer cycle spread over `more` runs), or that
answers empty pages under new cursors with `more` forever, does not make the schedule call it
without a pause: the cycle is refused as a `loop` and backs off; the empty pages end the chain
until the regular run. A cursor that comes back with another page (a feed restarted from its
earliest record) is read on, not taken for a cycle."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from tests.feed_doubles import ScriptedFeed, scripted
from tests.partner_double import FakeClock, upload_mapping
from tests.schedule_support import get, runner, runs, scripted_schedule

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
    # From c2 the same page again: refused before anything is written, a longer wait.
    assert await _until_idle(client) == {"failed": 1}
    assert len(scripted.calls) == 5
    state = await _state(client, schedule["id"])
    assert (state["last_error"]["kind"], state["failures"]) == ("loop", 2)
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert 29 <= waited.total_seconds() <= 31
    run = (await runs(client, schedule["id"]))[0]
    assert (run["outcome"], run["written"], run["error"]["kind"]) == ("failed", 0, "loop")


async def test_a_cycle_longer_than_a_run_is_found_across_its_more_runs(
    client: Client, scripted: ScriptedFeed
) -> None:
    pages = {
        None: {"items": [_item("ABC1D23", "1")], "next": "c2", "more": True},
        "c2": {"items": [_item("BRA2E19", "2")], "next": "c3", "more": True},
        "c3": {"items": [_item("RIO3F45", "3")], "next": "c2", "more": True},
    }
    scripted.answer = lambda after, n: pages[after]
    clock = _clock(client)
    schedule = await scripted_schedule(client, scripted, max_pages=1)

    assert await _until_idle(client) == {"more": 3, "failed": 1}
    assert [c["after"] for c in scripted.calls] == [None, "c2", "c3", "c2"]
    state = await _state(client, schedule["id"])
    assert (state["last_error"]["kind"], state["cursor"]) == ("loop", "c2")
    outcomes = [r["outcome"] for r in await runs(client, schedule["id"])]
    assert outcomes == ["failed", "more", "more", "more"]

    clock.advance(6)  # the chain is kept: c2's same page is refused at once, a longer wait
    assert await _until_idle(client) == {"failed": 1}
    assert [c["after"] for c in scripted.calls][4:] == ["c2"]
    state = await _state(client, schedule["id"])
    assert (state["last_error"]["kind"], state["cursor"], state["failures"]) == ("loop", "c2", 2)


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


async def test_records_dedupe_saw_answered_again_under_new_cursors_wait_past_what_it_remembers(
    client: Client, scripted: ScriptedFeed
) -> None:
    """A partner answering the same record under ever new cursors with `more` forever: the
    chain goes on at once while the seen records in a row are no more than dedupe remembers
    (`keep`: a list read again shows each once), then waits for the regular run."""
    scripted.answer = lambda after, n: {
        "items": [_item("ABC1D23", "1")],
        "next": f"c{n}",
        "more": True,
    }
    clock = _clock(client)
    schedule = await scripted_schedule(
        client, scripted, max_pages=2, dedupe={"by": "codigo", "keep": 3}
    )

    # 1 written, then 1, 3, 5 seen in a row: past 3 after the third run.
    assert await _until_idle(client) == {"more": 3}
    assert len(scripted.calls) == 6
    assert await _until_idle(client) == {}
    state = await _state(client, schedule["id"])
    assert (state["cursor"], state["failures"], state["last_error"]) == ("c6", 0, None)
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert timedelta(minutes=59) < waited <= timedelta(hours=1)

    clock.advance(3600)  # still the same record: one regular run, then the wait again
    assert await _until_idle(client) == {"more": 1}
    assert len(scripted.calls) == 8


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
