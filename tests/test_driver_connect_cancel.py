"""A driver connection whose opening is cancelled is closed (gateway/store/client.py).

PyMongo opens a pool's connection in the task of the operation that needs it and closed the
socket on a timeout or an OSError only: a task cancelled while it connected (a request's
deadline, a job stopped at shutdown) left the socket open until the garbage collector found
it, a ResourceWarning then, in whichever test was running (CI failed on it three times)."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Iterator

import pymongo.asynchronous.pool
import pytest
from pymongo.pool_options import PoolOptions

import gateway.store.client  # what every process imports before a client: the fix applied
from gateway.store.client import cancelled_connections_closed


def _states_to(port: int) -> list[str]:
    """The TCP states (/proc/net/tcp, hex: 01 established, 02 SYN sent) of the sockets this
    machine has to 127.0.0.1:`port`."""
    states = []
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            if fields[2] == f"0100007F:{port:04X}":
                states.append(fields[3])
    return states


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: a connection to it stays in SYN sent."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = socket.create_connection(("127.0.0.1", port))  # the one the queue holds
    try:
        yield port
    finally:
        queued.close()
        listener.close()


async def test_a_connection_cancelled_while_it_connects_is_closed(unanswered_port: int) -> None:
    assert _states_to(unanswered_port) == ["01"]
    gc.disable()  # only the fix may close it, not the collector
    try:
        opening = asyncio.create_task(
            pymongo.asynchronous.pool._configured_protocol_interface(
                ("127.0.0.1", unanswered_port), PoolOptions(connect_timeout=0.5)
            )
        )
        async with asyncio.timeout(5):
            while "02" not in _states_to(unanswered_port):
                await asyncio.sleep(0.01)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        # What a store's close awaits: the attempt ends at its connect timeout, closed.
        async with asyncio.timeout(5):
            await cancelled_connections_closed()
        assert "02" not in _states_to(unanswered_port)
    finally:
        gc.enable()


async def test_a_connection_opened_for_a_cancelled_caller_is_closed() -> None:
    """The attempt outlives its caller and connects: what it opened is closed, neither
    pooled for nobody nor left to the collector."""
    accepted: list[asyncio.StreamReader] = []
    closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(reader)
        await reader.read()  # b"" once the other side closes
        closed.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gc.disable()
    try:
        opening = asyncio.create_task(
            pymongo.asynchronous.pool._configured_protocol_interface(
                ("127.0.0.1", port), PoolOptions(connect_timeout=2)
            )
        )
        await asyncio.sleep(0)  # it has started: resolving the address, then connecting
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        async with asyncio.timeout(5):
            await closed.wait()
        assert len(accepted) == 1
        assert not gateway.store.client._opening
    finally:
        gc.enable()
        server.close()
        await server.wait_closed()
