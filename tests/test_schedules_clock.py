"""Schedules on the gateway's time as it really goes: a fixed-time cron in a zone with
daylight saving started in the repeated hour of the night the clocks go back runs once, not
back-to-back until the cron minute's second pass."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient

from tests.feed_doubles import ScriptedFeed, scripted
from tests.schedule_support import get, runner, scripted_schedule

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
