"""Opening the database for a process: the embedded server (when no URI is given), the client,
the indexes, and closing them again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.config import Settings
from gateway.errors import StoreUnavailable
from gateway.store import Store
from gateway.store.client import open_client
from gateway.store.embedded import EmbeddedServer

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_store(settings: Settings, uri: str | None) -> AsyncIterator[Store]:
    """The store on `uri`, or on an embedded server in the data dir when `uri` is None."""
    embedded = None if uri else EmbeddedServer(Path(settings.data_dir) / "db")
    if embedded is not None:
        await _start(embedded)
    client = open_client(embedded.uri if embedded else str(uri), timeout_ms=settings.db_timeout_ms)
    tasks: list[asyncio.Task[None]] = []
    try:
        store = Store(client[settings.database])
        try:
            await store.ensure_indexes()
        except StoreUnavailable as exc:
            log.error("database unavailable at start (%s); serving 503 until it answers", exc)
            tasks.append(asyncio.create_task(_ensure_indexes(store)))
        if embedded is not None:
            tasks.append(asyncio.create_task(_watch(embedded)))
        yield store
    finally:
        for task in tasks:
            task.cancel()
        await client.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def _start(embedded: EmbeddedServer) -> None:
    """Start the child; cancelled meanwhile (a SIGTERM), wait for it and stop it again: the
    database process never outlives the gateway."""
    starting = asyncio.ensure_future(asyncio.to_thread(embedded.start))
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await starting
        await asyncio.to_thread(embedded.stop)
        raise


async def _ensure_indexes(store: Store) -> None:
    """The gateway starts even if the database is down: readiness answers 503 and the indexes
    are created as soon as it answers (creating an existing index is a no-op)."""
    while True:
        await asyncio.sleep(5)
        try:
            await store.ensure_indexes()
            return
        except StoreUnavailable:
            continue


async def _watch(embedded: EmbeddedServer) -> None:
    """A crash of the embedded database is reported, not hidden."""
    while (code := embedded.exit_code()) is None:
        await asyncio.sleep(1)
    log.error("the embedded database exited with code %s:\n%s", code, embedded.log_tail())
