"""A partner whose cursor comes back to one the schedule already read (two pages naming each
other, or a longer cycle spread over `more` runs), or that answers empty pages under new
cursors with `more` forever, does not make the schedule call it without a pause: the cycle
is refused as a `loop` and backs off; the empty pages end the chain until the regular run."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from tests.feed_doubles import ScriptedFeed, scripted
from tests.partner_double import FakeClock
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
    # None → c2 → c1, whose page names c2 again: read already in this run.
    assert [c["after"] for c in scripted.calls] == [None, "c2", "c1"]
    state = await _state(client, schedule["id"])
    assert state["last_error"]["kind"] == "loop"
    assert "'c2'" in state["last_error"]["message"]
    assert (state["cursor"], state["failures"]) == ("c1", 1)  # not moved back into the cycle
    waited = datetime.fromisoformat(state["next_run_at"]) - clock.now
    assert 4 <= waited.total_seconds() <= 6  # the first backoff step
    for plate in ("ABC1D23", "BRA2E19"):  # both pages were written
        await get(client, f"/api/v1/entities/vehicle/{plate}")

    assert await _until_idle(client) == {}  # no hot loop
    clock.advance(6)
    # From c1 the same page again: refused before anything is written, a longer wait.
    assert await _until_idle(client) == {"failed": 1}
    assert len(scripted.calls) == 4
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
    _clock(client)
    schedule = await scripted_schedule(client, scripted, max_pages=1)

    assert await _until_idle(client) == {"more": 2, "failed": 1}
    assert [c["after"] for c in scripted.calls] == [None, "c2", "c3"]
    state = await _state(client, schedule["id"])
    assert (state["last_error"]["kind"], state["cursor"]) == ("loop", "c3")
    outcomes = [r["outcome"] for r in await runs(client, schedule["id"])]
    assert outcomes == ["failed", "more", "more"]


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
