"""A wake-up call inside one process: writers ring, a background loop waits for a ring or
its poll interval, whichever comes first (the poll still catches other processes' writes, where
nothing else announces them: the leased runners follow a change stream for that,
`leased_loop.follow_arrivals`)."""

from __future__ import annotations

import asyncio
import contextlib


class Doorbell:
    def __init__(self) -> None:
        self._rung = asyncio.Event()

    def ring(self) -> None:
        self._rung.set()

    async def wait(self, timeout: float) -> None:
        """Until a ring (one that came while the waiter was busy counts) or `timeout`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._rung.wait()
        self._rung.clear()


class IdleWait:
    """How long a polling loop waits before it looks again: `base` while it finds work,
    doubling up to `longest` while its looks come back empty, `base` again after a wake-up
    (work announced in this process, or by another one's change). An idle loop then asks the
    database a few times a minute instead of every `base` seconds; work no wake-up announces
    waits at most `longest` for it."""

    def __init__(self, base: float, factor: int = 4) -> None:
        self._base = base
        self._longest = base * factor
        self.seconds = base

    def found(self, anything: bool) -> None:
        """A look for work came back with something (or nothing)."""
        self.seconds = self._base if anything else min(self.seconds * 2, self._longest)

    def woken(self) -> None:
        self.seconds = self._base
