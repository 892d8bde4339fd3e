"""The loop every leased background runner drives (the delivery worker, the flow runner, the
schedule runner), once:

    look    the runner claims as much work as its free slots allow, under a lease in MongoDB
            (or does not look, when no slot is free), and hands back one coroutine per unit
    work    each unit runs in a task of its own; a task that ends frees a slot and wakes the loop
    wait    for a wake-up (`notify`: work announced in this process), a free slot, or the poll
            interval: longer while looks come back empty (`doorbell.IdleWait`)
    stop    claim no more, let the work under way finish (bounded), cancel the rest

Keepers (housekeeping, lease renewal) run beside the loop while it runs and stop with it.
What a runner still holds after `stop()` (leases to hand back) stays the runner's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

from gateway.background import cancel_and_wait
from gateway.doorbell import IdleWait

log = logging.getLogger(__name__)

T = TypeVar("T")
Unit = Coroutine[Any, Any, T]


def lease_owner() -> str:
    """Who holds a lease: this host and process, and one runner of it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeasedLoop(Generic[T]):
    def __init__(
        self, *, poll_seconds: float, shutdown_seconds: float, idle_factor: int = 4
    ) -> None:
        self._poll = poll_seconds
        self._shutdown = shutdown_seconds
        self._idle_factor = idle_factor
        self._wake = asyncio.Event()
        self._ended = asyncio.Event()
        self.stopping = False
        self.running = False
        self.tasks: set[asyncio.Task[T]] = set()

    def notify(self) -> None:
        """Work exists (or a slot is free): look now, not at the next poll."""
        self._wake.set()

    async def run(
        self,
        look: Callable[[], Awaitable[list[Unit[T]] | None]],
        keepers: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    ) -> None:
        """Until `stop()`: `look` (None: it did not look, no slot being free), run what it
        found in the background, look again at once when it found something, else wait."""
        beside = [asyncio.create_task(keeper()) for keeper in keepers]
        self.running = True
        self._ended.clear()
        idle = IdleWait(self._poll, self._idle_factor)
        try:
            while not self.stopping:
                self._wake.clear()
                found = await look()
                if found is None:
                    found = []
                else:
                    idle.found(bool(found))
                for unit in found:
                    self._spawn(unit)
                if found:
                    continue  # there may be more due right now, for the slots still free
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), idle.seconds)
                    idle.woken()
        finally:
            self.running = False
            self._ended.set()
            await cancel_and_wait(*beside)

    async def stop(self) -> None:
        """Claim no more (no claim lands after this returns), let the work under way finish
        within the shutdown bound, cancel what did not."""
        self.stopping = True
        self._wake.set()
        if self.running:
            await self._ended.wait()
        if self.tasks:
            _, unfinished = await asyncio.wait(set(self.tasks), timeout=self._shutdown)
            await cancel_and_wait(*unfinished)

    def _spawn(self, unit: Unit[T]) -> None:
        task = asyncio.create_task(unit)
        self.tasks.add(task)

        def done(finished: asyncio.Task[T]) -> None:
            self.tasks.discard(finished)
            self._wake.set()  # a slot is free

        task.add_done_callback(done)


async def renew_leases(
    lease_seconds: float, renew: Callable[[], Awaitable[object]], what: str
) -> None:
    """A keeper: slow work must not lose its lease to another process, so the leases held are
    renewed every third of their length; only a dead (or frozen) process's leases expire."""
    while True:
        await asyncio.sleep(lease_seconds / 3)
        try:
            await renew()
        except Exception as exc:  # the next round tries again; expiry is the fallback
            log.warning("renewing %s leases failed: %s", what, exc)
