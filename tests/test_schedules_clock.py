"""Schedules on the gateway's time as it really goes: a fixed-time cron in a zone with
daylight saving started in the repeated hour of the night the clocks go back runs once, not
back-to-back until the cron minute's second pass; after the gateway's time is stepped back
(a clock that ran fast, set right), an interval schedule waits no longer than the wait it was
given (its interval, a back-off, a partner's Retry-After, honoured whole), a cron expression
keeps its wall time; a runner rebases only after it saw the time go back, never cuts another
process's lease (a dead process's taken on the fast clock runs out as set), and a failing
rebase holds back no claim."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from bson import ObjectId

from gateway.errors import StoreUnavailable
from gateway.web.state import services_key
from tests.feed_doubles import ScriptedFeed, scripted
from tests.schedule_support import get, runner, scripted_schedule
from tests.support import auth

__all__ = ["scripted"]  # the fixture
Client = TestClient[Any, Any]
# A runner that spins never gets idle: bounded, so the test fails instead of hanging.
BOUND = 10.0


async def test_a_daily_cron_started_in_the_repeated_hour_runs_once_then_the_next_day(
    client: Client, scripted: ScriptedFeed, gateway_time: Callable[[datetime], None]
) -> None:
    """docs/schedules.md: daylight-saving transitions follow cron's rules (a fixed time runs
    once). Created at 01:10 EST, the second pass of New York's 01:00-02:00, `30 1 * * *`
    took the first pass's 01:30 (40 min gone) for its next run: ~8 calls a second to the
    partner until 06:30Z."""
    scripted.answer = lambda after, n: {"items": [], "more": False}
    gateway_time(datetime(2026, 11, 1, 6, 10, tzinfo=UTC))
    schedule = await scripted_schedule(
        client, scripted, every="30 1 * * *", timezone="America/New_York"
    )
    try:  # created due at once: one run
        await asyncio.wait_for(runner(client).run_until_idle(), BOUND)
    except TimeoutError:
        pass
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert len(scripted.calls) == 1, f"{len(scripted.calls)} calls; {state}"
    assert state["next_run_at"].startswith("2026-11-02T06:30:00")


async def test_a_cron_list_started_in_the_repeated_hour_is_released_and_runs_the_next_day(
    client: Client, scripted: ScriptedFeed, gateway_time: Callable[[datetime], None]
) -> None:
    """`0,10,20,30,40,50 1 * * *` in New York at 01:05 EST (second pass): the release's
    next_after raised (4-step walk), the schedule stayed running with no last run, and was
    claimed and run again after each lease for the whole repeated hour."""
    scripted.answer = lambda after, n: {"items": [], "more": False}
    gateway_time(datetime(2026, 11, 1, 6, 5, tzinfo=UTC))
    schedule = await scripted_schedule(
        client, scripted, every="0,10,20,30,40,50 1 * * *", timezone="America/New_York"
    )
    try:
        await asyncio.wait_for(runner(client).run_until_idle(), BOUND)
    except TimeoutError:
        pass
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert len(scripted.calls) == 1, f"{len(scripted.calls)} calls; {state}"
    assert not state["running"] and state["last_run_at"] is not None, state
    assert state["next_run_at"].startswith("2026-11-02T06:00:00"), state


async def test_changing_every_to_a_cron_list_in_the_repeated_hour_is_answered(
    client: Client, scripted: ScriptedFeed, gateway_time: Callable[[datetime], None]
) -> None:
    """A PATCH to `0-59 1 * * *` while the last run lies in the second pass answered 500."""
    scripted.answer = lambda after, n: {"items": [], "more": False}
    gateway_time(datetime(2026, 11, 1, 6, 5, tzinfo=UTC))
    schedule = await scripted_schedule(
        client, scripted, every="0 3 * * *", timezone="America/New_York"
    )
    try:
        await asyncio.wait_for(runner(client).run_until_idle(), BOUND)
    except TimeoutError:
        pass
    gateway_time(datetime(2026, 11, 1, 6, 6, tzinfo=UTC))
    r = await client.patch(
        f"/api/v1/schedules/{schedule['id']}", json={"every": "0-59 1 * * *"}, headers=auth()
    )
    assert r.status == 200, (r.status, await r.text())
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["next_run_at"] > "2026-11-01T06:06", state


def _calls_after(
    client: Client, scripted: ScriptedFeed, gateway_time: Callable[[datetime], None]
) -> Callable[[datetime], Any]:
    async def at(moment: datetime) -> int:
        gateway_time(moment)
        await asyncio.wait_for(runner(client).run_until_idle(), BOUND)
        return len(scripted.calls)

    return at


@pytest.mark.parametrize("fast", [timedelta(minutes=10), timedelta(hours=1)])
async def test_a_30s_poll_polls_on_after_the_gateways_time_is_stepped_back(
    client: Client,
    scripted: ScriptedFeed,
    gateway_time: Callable[[datetime], None],
    fast: timedelta,
) -> None:
    """The time ran `fast` ahead (the database server's clock; the embedded database's is the
    host's) and NTP stepped it right: the next run, 30 s after the last on the fast clock,
    was `fast` ahead, and a 30 s poll made no call for as long (live tracking dark)."""
    scripted.answer = lambda after, n: {"items": [], "more": False}
    real = datetime.now(UTC).replace(microsecond=0)
    at = _calls_after(client, scripted, gateway_time)
    gateway_time(real + fast)
    await scripted_schedule(client, scripted, every="30s")
    assert await at(real + fast + timedelta(seconds=1)) == 1
    assert await at(real) == 1  # stepped back: not due at once, 30 s after the last run
    assert await at(real + timedelta(seconds=31)) == 2
    assert await at(real + timedelta(seconds=62)) == 3


async def test_the_wait_counts_from_the_step_not_from_the_runners_next_claim(
    client: Client, scripted: ScriptedFeed, gateway_time: Callable[[datetime], None]
) -> None:
    """The runner claims each second; here its first claim after the step comes a minute
    later: the 30 s wait counted from the step is over, so it runs then, and every minute."""
    scripted.answer = lambda after, n: {"items": [], "more": False}
    real = datetime.now(UTC).replace(microsecond=0)
    at = _calls_after(client, scripted, gateway_time)
    gateway_time(real + timedelta(hours=1))
    await scripted_schedule(client, scripted, every="30s")
    assert await at(real + timedelta(hours=1, seconds=1)) == 1
    gateway_time(real)  # set right
    calls = [await at(real + timedelta(minutes=minute)) - 1 for minute in range(1, 6)]
    assert calls == [1, 2, 3, 4, 5]


async def test_a_retry_after_set_before_a_step_back_is_waited_whole_after_it(
    client: Client, scripted: ScriptedFeed, gateway_time: Callable[[datetime], None]
) -> None:
    """A partner's Retry-After (10 min) given while the time was an hour ahead: after the
    step it is still honoured (waited from the step, not shortened), then the poll goes on."""
    busy = web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "600"})
    scripted.answer = lambda after, n: busy if n == 1 else {"items": [], "more": False}
    real = datetime.now(UTC).replace(microsecond=0)
    at = _calls_after(client, scripted, gateway_time)
    gateway_time(real + timedelta(hours=1))
    schedule = await scripted_schedule(client, scripted, every="30s")
    assert await at(real + timedelta(hours=1, seconds=1)) == 1
    assert await at(real) == 1
    assert await at(real + timedelta(minutes=9)) == 1, "the partner asked for 10 min"
    assert await at(real + timedelta(minutes=10, seconds=1)) == 2
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["failures"] == 0


async def test_a_daily_cron_keeps_its_wall_time_across_a_step_back(
    client: Client, scripted: ScriptedFeed, gateway_time: Callable[[datetime], None]
) -> None:
    """A cron expression's next run is its own time, not a wait: run at 01:30 on a clock
    10 min fast (01:20 really), stepped right, it runs next at tomorrow's 01:30, not again."""
    scripted.answer = lambda after, n: {"items": [], "more": False}
    run = datetime(2026, 12, 3, 4, 30, 5, tzinfo=UTC)  # 01:30:05 in São Paulo
    at = _calls_after(client, scripted, gateway_time)
    gateway_time(run)
    schedule = await scripted_schedule(client, scripted, every="30 1 * * *")
    assert await at(run + timedelta(seconds=1)) == 1
    assert await at(run - timedelta(minutes=10)) == 1
    assert await at(run + timedelta(hours=23)) == 1
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["next_run_at"].startswith("2026-12-04T04:30:00")


async def test_a_lease_taken_on_a_fast_clock_by_a_process_that_died_runs_out_as_it_was_set(
    client: Client, scripted: ScriptedFeed, gateway_time: Callable[[datetime], None]
) -> None:
    """A process claimed a 30 s poll on a clock an hour fast, then died: its lease runs out
    as it was set (an hour and a lease later by the right time). Until 2026-12-08
    (schedrebase) a runner cut it to a lease after the step; that cut every other process's
    longer lease too (`test_a_starting_runner_leaves_another_process_s_longer_lease_alone`)."""
    scripted.answer = lambda after, n: {"items": [], "more": False}
    real = datetime.now(UTC).replace(microsecond=0)
    fast = real + timedelta(hours=1)
    at = _calls_after(client, scripted, gateway_time)
    gateway_time(fast)
    await scripted_schedule(client, scripted, every="30s")
    store = client.app[services_key].store.schedules
    lease = timedelta(seconds=runner(client)._settings.lease_seconds)
    claimed = fast + timedelta(seconds=1)
    assert len(await store.claim_due("dead:1", claimed, claimed + lease, 10)) == 1  # then died
    assert await at(real) == 0
    assert await at(real + lease + timedelta(seconds=1)) == 0
    assert await at(claimed + lease + timedelta(seconds=1)) == 1


async def test_a_starting_runner_leaves_another_process_s_longer_lease_alone(
    client: Client, scripted: ScriptedFeed, gateway_time: Callable[[datetime], None]
) -> None:
    """A runner's first claim (a process start, no step of the time) does not cut the lease
    of another process's runner configured with a longer lease: that schedule is not taken
    over and run a second time while the other process still runs it."""
    scripted.answer = lambda after, n: {"items": [], "more": False}
    created = datetime.now(UTC).replace(microsecond=0)
    now = created + timedelta(seconds=1)
    at = _calls_after(client, scripted, gateway_time)
    gateway_time(created)
    schedule = await scripted_schedule(client, scripted, every="30s")
    store = client.app[services_key].store.schedules
    lease = timedelta(seconds=runner(client)._settings.lease_seconds)
    other_lease = lease * 20  # another process's lease setting
    assert len(await store.claim_due("otherproc:1", now, now + other_lease, 10)) == 1
    runner(client)._times.latest = None  # this process's runner starts
    assert await at(now) == 0
    # Past this runner's lease, before the other renews (every third of its own lease).
    assert await at(now + lease + timedelta(seconds=5)) == 0
    doc = await store._c.find_one({"_id": ObjectId(schedule["id"])})
    assert doc["lease_owner"] == "otherproc:1"
    left = doc["lease_until"].replace(tzinfo=UTC) - now  # stored to the millisecond
    assert other_lease - timedelta(milliseconds=1) <= left <= other_lease


async def test_a_failing_rebase_holds_back_no_claim_and_is_tried_again(
    client: Client,
    scripted: ScriptedFeed,
    gateway_time: Callable[[datetime], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rebase after a step back the runner saw fails (the database past its deadline):
    the due schedule is still claimed and run, and the next claim rebases again."""
    scripted.answer = lambda after, n: {"items": [], "more": False}
    now = datetime.now(UTC).replace(microsecond=0)
    at = _calls_after(client, scripted, gateway_time)
    gateway_time(now)
    await scripted_schedule(client, scripted, every="30s")
    store = client.app[services_key].store.schedules
    rebased = []

    async def failing(moment: datetime, waits_from: datetime) -> int:
        rebased.append(moment)
        raise StoreUnavailable("past the deadline")

    monkeypatch.setattr(store, "rebase", failing)
    runner(client)._times.latest = now + timedelta(hours=1)  # it claimed on the fast clock
    assert await at(now + timedelta(seconds=1)) == 1
    assert rebased and len(scripted.calls) == 1
    seen = len(rebased)
    await asyncio.wait_for(runner(client).run_until_idle(), BOUND)
    assert len(rebased) > seen  # tried again: the step is still unrebased


async def _as_released_before_the_upgrade(client: Client) -> None:
    """The schedules as a release before 2026-12-07 wrote them: no `planned_at` at all."""
    schedules = client.app[services_key].store.schedules._c
    await schedules.update_many({}, {"$unset": {"planned_at": ""}})


async def test_a_30s_poll_released_before_the_upgrade_polls_on_after_a_step_back(
    client: Client, scripted: ScriptedFeed, gateway_time: Callable[[datetime], None]
) -> None:
    """A schedule released before `planned_at` was kept was never rebased: a 30 s poll last
    run on a clock an hour fast (upgraded, then set right) made no call for the hour (rev49
    F3). Its wait was written with times ahead of the step: waited again from it."""
    scripted.answer = lambda after, n: {"items": [], "more": False}
    real = datetime.now(UTC).replace(microsecond=0)
    at = _calls_after(client, scripted, gateway_time)
    gateway_time(real + timedelta(hours=1))
    await scripted_schedule(client, scripted, every="30s")
    assert await at(real + timedelta(hours=1, seconds=1)) == 1
    await _as_released_before_the_upgrade(client)
    assert await at(real) == 1  # stepped back: not due at once, 30 s after the last run
    assert await at(real + timedelta(seconds=31)) == 2
    assert await at(real + timedelta(seconds=62)) == 3


async def test_a_retry_after_released_before_the_upgrade_is_waited_whole_from_the_step(
    client: Client, scripted: ScriptedFeed, gateway_time: Callable[[datetime], None]
) -> None:
    """A back-off (a partner's Retry-After, 10 min) released before the upgrade on a clock an
    hour fast: waited from the step, whole, not for the hour and ten minutes."""
    busy = web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "600"})
    scripted.answer = lambda after, n: busy if n == 1 else {"items": [], "more": False}
    real = datetime.now(UTC).replace(microsecond=0)
    at = _calls_after(client, scripted, gateway_time)
    gateway_time(real + timedelta(hours=1))
    await scripted_schedule(client, scripted, every="30s")
    assert await at(real + timedelta(hours=1, seconds=1)) == 1
    await _as_released_before_the_upgrade(client)
    assert await at(real) == 1
    assert await at(real + timedelta(minutes=9)) == 1, "the partner asked for 10 min"
    assert await at(real + timedelta(minutes=10, seconds=1)) == 2


async def test_old_schedules_not_written_ahead_of_the_time_keep_their_next_run(
    client: Client, scripted: ScriptedFeed, gateway_time: Callable[[datetime], None]
) -> None:
    """No step: a Retry-After (10 min) released before the upgrade stays as it is at the
    runner's first claim after the upgrade (the partner's wait is honoured whole)."""
    busy = web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "600"})
    scripted.answer = lambda after, n: busy if n == 1 else {"items": [], "more": False}
    real = datetime(2026, 12, 3, 4, 30, 5, tzinfo=UTC)  # 01:30:05 in São Paulo
    at = _calls_after(client, scripted, gateway_time)
    gateway_time(real)
    poll = await scripted_schedule(client, scripted, every="30s")
    assert await at(real + timedelta(seconds=1)) == 1
    before = (await get(client, f"/api/v1/schedules/{poll['id']}"))["state"]["next_run_at"]
    await _as_released_before_the_upgrade(client)
    runner(client)._times.latest = None  # a process upgraded: its first claim only notes the time
    assert await at(real + timedelta(minutes=9)) == 1
    after = (await get(client, f"/api/v1/schedules/{poll['id']}"))["state"]["next_run_at"]
    assert after == before


async def test_a_daily_cron_released_before_the_upgrade_keeps_its_wall_time_across_a_step(
    client: Client, scripted: ScriptedFeed, gateway_time: Callable[[datetime], None]
) -> None:
    """With no `planned_at`, a cron expression's next run (no failure) is its wall time."""
    scripted.answer = lambda after, n: {"items": [], "more": False}
    run = datetime(2026, 12, 3, 4, 30, 5, tzinfo=UTC)  # 01:30:05 in São Paulo
    at = _calls_after(client, scripted, gateway_time)
    gateway_time(run)
    schedule = await scripted_schedule(client, scripted, every="30 1 * * *")
    assert await at(run + timedelta(seconds=1)) == 1
    await _as_released_before_the_upgrade(client)
    assert await at(run - timedelta(minutes=10)) == 1
    assert await at(run + timedelta(hours=23)) == 1
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["next_run_at"].startswith("2026-12-04T04:30:00")
