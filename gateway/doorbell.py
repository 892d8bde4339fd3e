"""A wake-up call inside one process: writers ring, a background loop waits for a ring or
its poll interval, whichever comes first (the poll still catches other processes' writes)."""

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
            await asyncio.wait_for(self._rung.wait(), timeout)
        self._rung.clear()
