"""The database a process uses, opened and closed as one resource: the embedded server under
its supervisor (when no URI is given) or MONGODB_URI, the journaled client with its
deadline, the `Store` over it, and the health that requests check first."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from gateway.background import cancel_and_wait
from gateway.store import Store
from gateway.store.client import open_client
from gateway.store.embedded import EmbeddedServer
from gateway.store.health import DatabaseHealth
from gateway.store.supervisor import EmbeddedSupervisor


@dataclass(frozen=True, slots=True)
class Connection:
    store: Store
    health: DatabaseHealth
    supervisor: EmbeddedSupervisor | None  # None with MONGODB_URI


@contextlib.asynccontextmanager
async def open_connection(
    uri: str | None,
    *,
    data_dir: Path,
    database: str,
    timeout_ms: int,
    write_concern: str | int | None = None,
) -> AsyncIterator[Connection]:
    health = DatabaseHealth()
    supervisor = None
    if uri is None:
        supervisor = EmbeddedSupervisor(EmbeddedServer(data_dir / "db"), health)
        await supervisor.start()
        uri = supervisor.server.uri
    client = open_client(
        uri, timeout_ms=timeout_ms, write_concern=write_concern, listeners=[health]
    )
    store = Store(client[database])
    prober = asyncio.create_task(health.run_prober(store.ping))
    try:
        yield Connection(store, health, supervisor)
    finally:
        await cancel_and_wait(prober)
        health.close()
        await client.close()
        if supervisor is not None:
            await supervisor.stop()
