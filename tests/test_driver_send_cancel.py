"""A driver operation cancelled as its command goes out ends cancelled (gateway/store/client.py).

PyMongo sends every command through `asyncio.wait_for` once operations have a deadline, and on
3.11 that runs the send in a task of its own: a caller cancelled between the send task's end
and its own resumption got the send's result instead of its CancelledError. The operation
went on, and so did the loop that awaited it: a fleet fold cancelled once kept folding for
good (tests/test_fold_mid_stream.py hung once in CI, `cancel()` then `gather()`), as would any
task stopped with one cancellation at that moment."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any

import pytest
from pymongo.network_layer import PyMongoProtocol

from gateway.store.client import open_client

_watched = contextvars.ContextVar("_watched", default=False)


class CancelOnSend:
    """Tasks (`start`) cancelled the moment their next command is on the socket (`arm`):
    where a cancellation from anywhere else (a shutdown) may land, made certain."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._armed: list[asyncio.Task[Any]] = []
        write = PyMongoProtocol.write

        async def write_then_cancel(protocol: PyMongoProtocol, message: bytes) -> None:
            await write(protocol, message)
            if _watched.get() and self._armed:
                self._armed.pop().cancel()

        monkeypatch.setattr(PyMongoProtocol, "write", write_then_cancel)

    def start(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        context = contextvars.copy_context()
        context.run(_watched.set, True)
        return asyncio.get_running_loop().create_task(coro, context=context)

    def arm(self, task: asyncio.Task[Any]) -> None:
        self._armed.append(task)

    @property
    def fired(self) -> bool:
        return not self._armed


async def test_a_command_cancelled_as_it_is_sent_ends_cancelled(
    mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = open_client(mongodb_uri, timeout_ms=5000)
    try:
        await client.admin.command("ping")  # connected: the next command only sends
        sends = CancelOnSend(monkeypatch)
        ping = sends.start(client.admin.command("ping"))
        sends.arm(ping)
        async with asyncio.timeout(10):
            with pytest.raises(asyncio.CancelledError):
                await ping
        assert sends.fired
    finally:
        await client.close()
