"""What an admin asks of a schedule while it runs ("run now", resume, a new `every`) takes
effect once the run ends: the run's own next time does not overwrite it."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.feed_doubles import ScriptedFeed, scripted
from tests.partner_double import FakeClock
from tests.schedule_support import get, run_now, runner, runs, scripted_schedule
from tests.support import after_the_write_of, auth

__all__ = ["scripted"]  # the fixture
Client = TestClient[Any, Any]


def _page(after: str | None, n: int) -> dict[str, Any]:
    return {"items": [{"placa": "ABC1D23", "codigo": str(n)}], "next": f"c{n}", "more": False}


async def _during_first_call(
    client: Client, feed: ScriptedFeed, **overrides: Any
) -> tuple[str, FakeClock, asyncio.Task[Counter[str]]]:
    """A schedule whose first run waits on the partner's first answer (until `feed.gate`).
    The gate alone ends that wait: its partner waits for an answer longer than the feed holds
    one (30 s). With the usual 2 s, the test's own requests during the run took longer than
    that on a loaded machine, and the run failed as a `timeout` before the gate opened."""
    feed.answer = _page
    feed.gated = {1}
    clock = FakeClock()
    runner(client).clock = clock
    schedule = await scripted_schedule(client, feed, partner_timeout=60, **overrides)
    task = asyncio.create_task(runner(client).run_until_idle())
    await feed.wait_until(lambda: len(feed.calls) == 1, timeout=10)
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["running"] is True
    return schedule["id"], clock, task


async def _state(client: Client, schedule_id: str) -> dict[str, Any]:
    state: dict[str, Any] = (await get(client, f"/api/v1/schedules/{schedule_id}"))["state"]
    return state


async def test_run_now_during_a_run_runs_again_once_it_ends(
    client: Client, scripted: ScriptedFeed
) -> None:
    schedule_id, _, task = await _during_first_call(client, scripted)
    await run_now(client, schedule_id)
    scripted.gate.set()
    # The first run, then the one asked for during it; then nothing is due.
    assert await asyncio.wait_for(task, 10) == {"ok": 2}
    assert [c["after"] for c in scripted.calls] == [None, "c1"]
    assert [r["cursor_after"] for r in await runs(client, schedule_id)] == ["c2", "c1"]
    assert await asyncio.wait_for(runner(client).run_until_idle(), 10) == {}


async def test_a_run_that_fails_after_run_now_was_asked_still_runs_again_at_once(
    client: Client, scripted: ScriptedFeed
) -> None:
    schedule_id, _, task = await _during_first_call(client, scripted)
    scripted.answer = lambda after, n: b"<html>down</html>" if n == 1 else _page(after, n)
    await run_now(client, schedule_id)
    scripted.gate.set()
    assert await asyncio.wait_for(task, 10) == {"failed": 1, "ok": 1}
    state = await _state(client, schedule_id)
    assert (state["failures"], state["cursor"]) == (0, "c2")


async def test_a_new_every_set_during_a_run_times_the_next_run(
    client: Client, scripted: ScriptedFeed
) -> None:
    schedule_id, clock, task = await _during_first_call(client, scripted, every="1d")
    response = await client.patch(
        f"/api/v1/schedules/{schedule_id}", json={"every": "10m"}, headers=auth()
    )
    assert response.status == 200, await response.text()
    scripted.gate.set()
    assert await asyncio.wait_for(task, 10) == {"ok": 1}
    state = await _state(client, schedule_id)
    (run,) = await runs(client, schedule_id)
    started = datetime.fromisoformat(run["started_at"])
    assert datetime.fromisoformat(state["next_run_at"]) - started == timedelta(minutes=10)
    clock.advance(600)
    assert await asyncio.wait_for(runner(client).run_until_idle(), 10) == {"ok": 1}


async def test_pause_and_resume_during_a_run_make_it_due_once_it_ends(
    client: Client, scripted: ScriptedFeed
) -> None:
    schedule_id, _, task = await _during_first_call(client, scripted)
    for verb in ("pause", "resume"):
        response = await client.post(f"/api/v1/schedules/{schedule_id}/{verb}", headers=auth())
        assert response.status == 200, await response.text()
    scripted.gate.set()
    assert await asyncio.wait_for(task, 10) == {"ok": 2}
    assert len(scripted.calls) == 2


async def test_a_pause_during_a_run_still_holds_once_it_ends(
    client: Client, scripted: ScriptedFeed
) -> None:
    schedule_id, clock, task = await _during_first_call(client, scripted)
    response = await client.post(f"/api/v1/schedules/{schedule_id}/pause", headers=auth())
    assert response.status == 200, await response.text()
    scripted.gate.set()
    assert await asyncio.wait_for(task, 10) == {"ok": 1}
    clock.advance(2 * 3600)
    assert await asyncio.wait_for(runner(client).run_until_idle(), 10) == {}
    schedule = await get(client, f"/api/v1/schedules/{schedule_id}")
    assert (schedule["status"], schedule["state"]["cursor"]) == ("paused", "c1")


async def test_a_partner_disabled_during_a_run_is_not_called_again_by_it(
    client: Client, scripted: ScriptedFeed
) -> None:
    """An admin disables the partner while the run reads a backlog (its second call in
    flight): the run lands that answer and calls no more, `held` with a note, instead of
    calling the partner for the rest of the backlog (up to `max_pages` calls). Enabled
    again, it reads on from where the run stopped."""

    def backlog(after: str | None, n: int) -> dict[str, Any]:
        page = int((after or "c0")[1:])
        items = [{"placa": "ABC1D23", "codigo": str(page)}]
        return {"items": items, "next": f"c{page + 1}", "more": page < 2}

    scripted.answer = backlog
    scripted.gated = {2}
    clock = FakeClock()
    runner(client).clock = clock
    schedule = await scripted_schedule(client, scripted, partner_timeout=60, max_pages=10)
    (partner,) = (await get(client, "/api/v1/partners"))["items"]
    task = asyncio.create_task(runner(client).run_until_idle())
    await scripted.wait_until(lambda: len(scripted.calls) == 2, timeout=10)
    path = f"/api/v1/partners/{partner['id']}"
    disabled = await client.patch(path, json={"status": "disabled"}, headers=auth())
    assert disabled.status == 200, await disabled.text()
    scripted.gate.set()
    assert await asyncio.wait_for(task, 10) == {"held": 1}
    assert len(scripted.calls) == 2
    (run,) = await runs(client, schedule["id"])
    assert (run["pages"], run["error"]["kind"]) == (2, "partner_disabled")
    assert run["note"] == (
        "the partner was disabled during the run: not called again after 2 page(s)"
    )
    state = await _state(client, schedule["id"])
    assert (state["cursor"], state["failures"]) == ("c2", 0)
    enabled = await client.patch(path, json={"status": "active"}, headers=auth())
    assert enabled.status == 200, await enabled.text()
    await run_now(client, schedule["id"])
    assert await asyncio.wait_for(runner(client).run_until_idle(), 10) == {"ok": 1}
    assert [c["after"] for c in scripted.calls] == [None, "c1", "c2"]


async def test_a_reset_just_after_a_schedule_is_claimed_skips_that_run_without_crashing(
    client: Client, scripted: ScriptedFeed
) -> None:
    """POST /reset (which unsets the lease) lands right after a runner's claim of the
    schedule is written, before the claim reads it: that run is not made (its lease is
    gone, as a lease lost); the schedule, due again, is claimed by the next round and run
    once, and the other runs are not lost to a `KeyError: 'lease_owner'` (found by the
    reviewer rev41a, R2)."""
    scripted.answer = lambda after, n: {"items": [], "next": None, "more": False}
    schedule = await scripted_schedule(client, scripted)
    schedules = client.app[services_key].store.schedules
    statuses: list[int] = []

    async def reset() -> None:
        response = await client.post(f"/api/v1/schedules/{schedule['id']}/reset", headers=auth())
        statuses.append(response.status)

    after_the_write_of(schedules, "claim_due", reset)  # just after the claim is written
    skipped = await runner(client).run_until_idle()
    again = await runner(client).run_until_idle()  # due again, unleased: run

    assert statuses == [200]
    assert (skipped, again) == (Counter(), Counter(ok=1))
    assert len(scripted.calls) == 1
