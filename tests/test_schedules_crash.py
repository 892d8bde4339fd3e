"""The kill test: a real `gateway worker` process drains a slow Geotab feed and is killed with
SIGKILL mid-run; a second `gateway worker` takes the schedule's lease over once it expires
and finishes the feed. No page is read again beyond the one in flight at the kill (whose
re-write the idempotent upserts absorb), and the cursor never goes backwards."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.feed_doubles import GeotabDouble, geotab
from tests.processes import beside, skewed_gateway, start_worker, until
from tests.schedule_support import geotab_schedule, get, runs

__all__ = ["geotab"]  # the fixture
Client = TestClient[Any, Any]
RECORDS = 40
PAGE = 2
LEASE_SECONDS = 2


async def _start_worker(
    client: Client, mongodb_uri: str, data_dir: Path, name: str
) -> asyncio.subprocess.Process:
    database = client.app[services_key].settings.database
    return await start_worker(
        data_dir, mongodb_uri, database, log=name, GATEWAY_SCHEDULE_LEASE_SECONDS=str(LEASE_SECONDS)
    )


async def test_a_killed_runner_is_taken_over_without_rewinding_the_cursor(
    client: Client, geotab: GeotabDouble, mongodb_uri: str, tmp_path: Path
) -> None:
    geotab.add_records(RECORDS)
    geotab.delay = 0.15  # each page takes a while: the kill lands mid-run
    schedule = await geotab_schedule(client, geotab, limit=PAGE, max_pages=100)
    final = f"{RECORDS:016x}"
    victim = await _start_worker(client, mongodb_uri, tmp_path, "victim")
    survivor = None
    try:
        await geotab.wait_until(lambda: len(geotab.calls) >= 6)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        calls_at_kill = len(geotab.calls)
        survivor = await _start_worker(client, mongodb_uri, tmp_path, "survivor")
        await geotab.wait_until(lambda: any(c["fromVersion"] == final for c in geotab.calls))
        # A graceful stop lets the survivor finish its run (and record it) first.
        survivor.send_signal(signal.SIGTERM)
        await asyncio.wait_for(survivor.wait(), 30)
    finally:
        for process in (victim, survivor):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 20)

    versions = [int(c["fromVersion"] or "0", 16) for c in geotab.calls]
    read_twice = len(versions) - len(set(versions))
    print(f"\n{len(versions)} calls, {calls_at_kill} before SIGKILL, {read_twice} page read twice")
    assert versions == sorted(versions)  # the cursor never went backwards
    assert read_twice <= 1  # at most the page in flight at the kill
    (run,) = await runs(client, schedule["id"])  # the victim never recorded its run
    assert run["outcome"] == "ok" and run["cursor_after"] == final
    # The survivor started where the victim's last commit left the cursor.
    assert int(run["cursor_before"] or "0", 16) >= versions[calls_at_kill - 1]
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["cursor"] == final
    events = await get(client, "/api/v1/events?type=vehicle.position&limit=200")
    assert RECORDS <= len(events["items"]) <= RECORDS + PAGE


SKEW_SECONDS = 120  # more than the schedule lease (60 s)


async def test_a_runner_whose_host_clock_is_ahead_does_not_run_a_schedule_beside_its_holder(
    client: Client, geotab: GeotabDouble, mongodb_uri: str, tmp_path: Path
) -> None:
    """A runner on a host 70 s ahead saw the lease of a schedule mid-run as expired and ran
    it too: one cursor requested twice, two runs at once. Leases now follow the database
    server's clock."""
    geotab.add_records(RECORDS)
    geotab.delay = 0.6  # 20 pages: a run of 12 s and more
    schedule = await geotab_schedule(client, geotab, limit=PAGE, max_pages=100)
    final = f"{RECORDS:016x}"
    here = asyncio.create_task(client.app[services_key].schedule_runner.run_until_idle())
    await geotab.wait_until(lambda: len(geotab.calls) >= 1)
    env = beside(tmp_path, mongodb_uri, client.app[services_key].settings.database)
    with (tmp_path / "ahead.log").open("wb") as log:
        ahead = await asyncio.create_subprocess_exec(
            *skewed_gateway(SKEW_SECONDS), "worker", "--jobs", "schedules",
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
    try:
        # Once it runs, a few of its polls (1 s) with the run mid-way; then the pages answer
        # at once (the run would go on for seconds more, with nothing more to show).
        await until(
            lambda: "gateway worker running" in (tmp_path / "ahead.log").read_text(),
            30,
            "the runner whose clock is ahead running",
        )
        await asyncio.sleep(2)
        geotab.release.set()
        await geotab.wait_until(lambda: any(c["fromVersion"] == final for c in geotab.calls))
        await asyncio.wait_for(here, 30)
        await asyncio.sleep(2)  # a few of its polls after the run
    finally:
        ahead.send_signal(signal.SIGTERM)
        await asyncio.wait_for(ahead.wait(), 30)
    log_text = (tmp_path / "ahead.log").read_text()
    assert "gateway worker running" in log_text, log_text  # it ran all along
    versions = [int(c["fromVersion"] or "0", 16) for c in geotab.calls]
    assert len(versions) == len(set(versions)), versions  # no page read twice
    (run,) = await runs(client, schedule["id"])
    assert run["outcome"] == "ok" and run["cursor_after"] == final
