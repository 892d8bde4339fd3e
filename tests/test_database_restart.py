"""The database process crashes and comes back while a gateway runs: what it cached must not
outlive what the crash took (docs/reliability.md "Database restarts").

A change stream the driver resumes by itself after a lost connection asks the restarted
server for the changes after its last resume token. A crashed SecantusDB reuses the oplog
positions of the writes it had not made durable (the relay's unjournaled writes, writes in
flight), so that token names a position the new oplog has not reached yet: the resumed
stream silently skips the next changes, a trigger disabled meanwhile among them, while the
process keeps trusting its cached gates."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from pymongo.write_concern import WriteConcern

from gateway.app import create_app
from gateway.config import Settings
from gateway.store.embedded import EmbeddedServer
from gateway.web.state import services_key
from tests.processes import alive
from tests.support import auth
from tests.triggers_support import VEHICLE, bearer, create_trigger

Client = TestClient[Any, Any]


@pytest.fixture
async def own_database(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    """A database of this test's own, to kill."""
    server = EmbeddedServer(tmp_path / "db")
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def _client(aiohttp_client: Any, settings: Settings, uri: str) -> Client:
    app = create_app(replace(settings, database="gateway", db_timeout_ms=10_000), mongodb_uri=uri)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def _crash(server: EmbeddedServer) -> None:
    """SIGKILL the database and start it again on the same port."""
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid) or server.exit_code() is None:
        assert time.monotonic() < deadline, "the database did not die"
        await asyncio.sleep(0.02)
    await asyncio.to_thread(server.start)


async def _crash_with_writes_lost(
    server: EmbeddedServer, client: AsyncMongoClient[dict[str, Any]], gates: Any, name: str
) -> bool:
    """Crash the database while unjournaled writes go on, right after the stream's last empty
    answer; whether the crash lost any of them."""
    scratch = client["gateway"].get_collection(name, write_concern=WriteConcern(j=False))
    acknowledged = 0

    async def write_until_the_crash() -> None:
        nonlocal acknowledged
        with contextlib.suppress(PyMongoError):
            while True:
                await scratch.insert_many([{"n": n} for n in range(20)])
                acknowledged += 20

    writer = asyncio.create_task(write_until_the_crash())
    try:
        deadline = time.monotonic() + 5
        for _ in range(2):  # an empty wait that began and ended while the writes went on
            vouched = gates.vouched_at
            while gates.vouched_at == vouched:
                assert not writer.done() and time.monotonic() < deadline, "no stream"
                await asyncio.sleep(0.001)
        await _crash(server)
        await writer
    finally:
        writer.cancel()
    return await scratch.count_documents({}) < acknowledged


async def test_a_trigger_disabled_after_a_database_crash_is_refused_by_every_process(
    own_database: EmbeddedServer, aiohttp_client: Any, settings: Settings
) -> None:
    # own_database first: it is torn down after the apps, which still use it.
    serving = await _client(aiohttp_client, settings, own_database.uri)  # caches the gate
    admin = await _client(aiohttp_client, settings, own_database.uri)  # another process
    gates = serving.app[services_key].gates
    trigger = await create_trigger(admin)
    hook = f"/hooks/{trigger['id']}"
    assert (await serving.post(hook, json=VEHICLE, headers=bearer(trigger))).status == 201
    deadline = time.monotonic() + 5
    while not gates.following:
        assert time.monotonic() < deadline, "the change stream never caught up"
        await asyncio.sleep(0.01)
    # The database crashes with writes it had not made durable yet (the relay's are
    # unjournaled) which the stream has seen go by: its resume token is past them. Whether
    # a write is still unwritten at the kill is the database's timing: tried until one is.
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(own_database.uri)
    try:
        for attempt in range(3):
            if await _crash_with_writes_lost(own_database, client, gates, str(attempt)):
                break
        else:
            raise AssertionError("no crash lost a write: nothing tested")
    finally:
        await client.close()
    # The serving process admits the trigger again once the database is back ...
    deadline = time.monotonic() + 15
    while (await serving.post(hook, json=VEHICLE, headers=bearer(trigger))).status != 200:
        assert time.monotonic() < deadline, "the serving process did not recover"
        await asyncio.sleep(0.05)
    disable = f"/api/v1/triggers/{trigger['id']}/disable"
    while (answer := await admin.post(disable, headers=auth())).status == 503:
        assert "outcome" not in await answer.json()  # refused before anything was written
        assert time.monotonic() < deadline, "the other process did not recover"
        await asyncio.sleep(0.05)
    assert answer.status == 200, await answer.text()
    # ... and refuses it within a second of its disabling elsewhere (SPEC §7).
    disabled = time.monotonic()
    while (await serving.post(hook, json=VEHICLE, headers=bearer(trigger))).status != 403:
        assert time.monotonic() - disabled < 1.5, "a disabled trigger is still admitted"
        await asyncio.sleep(0.02)
