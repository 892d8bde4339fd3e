"""An upgrade whose new index takes longer to build than GATEWAY_DB_TIMEOUT_MS (an older
version's large collection): the build had the requests' deadline, was cut at it and thrown
away by the server, and every attempt again: the process never got ready (503 for good).
Index builds and upgrade steps have their own bound (GATEWAY_INDEX_BUILD_TIMEOUT_SECONDS);
the process serves, not ready and saying why, while one goes on."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import pytest
from pymongo import MongoClient

from gateway.config import Settings
from gateway.store import connection
from gateway.store.connection import open_store
from gateway.store.health import KnownDown

RUNS = 20_000  # schedule runs of an older version's database: `by_schedule` not built yet
DEADLINE_MS = 200  # far below the build of RUNS on SecantusDB (seconds on the 2-core machine)


def _older_database(settings: Settings, mongodb_uri: str) -> MongoClient[dict[str, Any]]:
    """A database of the indexes' previous version, its schedule runs without their index."""
    sync: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri)
    runs = [
        {"_id": f"{i:08d}", "tenant": f"t{i % 5}", "schedule_id": f"s{i % 50}", "status": "ok"}
        for i in range(RUNS)
    ]
    sync[settings.database]["schedule_runs"].insert_many(runs, ordered=False)
    return sync


async def _why_not_ready(store: Any) -> str | None:
    """What a request that needs the database hears now (`Store.check_prepared`)."""
    try:
        store.check_prepared()
    except KnownDown as refused:
        assert refused.retry_after is not None
        return refused.detail
    return None


@pytest.mark.timeout(120)
async def test_an_index_build_longer_than_the_database_deadline_is_created_while_not_ready(
    settings: Settings,
    mongodb_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(connection, "INDEX_RETRY_SECONDS", 0.1)
    caplog.set_level(logging.INFO, logger="gateway.store")
    short = replace(settings, db_timeout_ms=DEADLINE_MS, fold_gap_seconds=30)
    sync = _older_database(settings, mongodb_uri)
    building = "building the events', triggers', partners' and schedules' indexes since"
    try:
        # A first start stopped while it builds (a restart during the upgrade): it served,
        # not ready, naming the build.
        async with open_store(short, mongodb_uri) as store:
            async with asyncio.timeout(30):
                while building not in (await _why_not_ready(store) or ""):
                    await asyncio.sleep(0.02)
            assert "GATEWAY_INDEX_BUILD_TIMEOUT_SECONDS" in (await _why_not_ready(store) or "")
        # The next start builds it (or finds it built: the server went on with it).
        async with open_store(short, mongodb_uri) as store:
            async with asyncio.timeout(60):
                await store.prepared.wait()
            assert await _why_not_ready(store) is None
        names = {i["name"] for i in sync[settings.database]["schedule_runs"].list_indexes()}
        assert "by_schedule" in names
        logged = [r.getMessage() for r in caplog.records]
        assert any(
            "building the events', triggers', partners' and schedules' indexes outlasts "
            "GATEWAY_DB_TIMEOUT_MS" in m
            for m in logged
        )
    finally:
        sync.close()


@pytest.mark.timeout(120)
async def test_a_refusal_after_a_build_that_outlasted_the_deadline_is_reported_and_tried_again(
    settings: Settings,
    mongodb_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A build that outlasts the deadline, then a unique index the data refuses (two UI users
    of a tenant with one e-mail: a `Conflict`, not the database's unavailability): the task
    waiting for the build died with it, the process stayed not ready for good, its 503s still
    naming the finished build, nothing logged. The refusal is named and tried again; once the
    duplicate is gone the process is ready."""
    monkeypatch.setattr(connection, "INDEX_RETRY_SECONDS", 0.1)
    caplog.set_level(logging.INFO, logger="gateway.store")
    short = replace(settings, db_timeout_ms=DEADLINE_MS, fold_gap_seconds=30)
    sync = _older_database(settings, mongodb_uri)
    users = sync[settings.database]["ui_users"]
    users.insert_many(
        [
            {"_id": "u1", "tenant": "acme", "email": "ana@example.com"},
            {"_id": "u2", "tenant": "acme", "email": "ana@example.com"},
        ]
    )
    try:
        async with open_store(short, mongodb_uri) as store:
            async with asyncio.timeout(60):
                while "building" not in (await _why_not_ready(store) or ""):
                    await asyncio.sleep(0.02)
                while "building" in (why := await _why_not_ready(store) or ""):
                    await asyncio.sleep(0.05)
            assert "Conflict" in why, why
            assert any(
                "creating the indexes failed again (Conflict" in r.getMessage()
                for r in caplog.records
            )
            users.delete_one({"_id": "u2"})
            async with asyncio.timeout(60):
                await store.prepared.wait()
            assert await _why_not_ready(store) is None
    finally:
        sync.close()
