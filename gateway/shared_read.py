"""A read that concurrent callers share, each answered by a read begun after it asked.

A schedule's page landing asks, before each entity write, whether its run still holds the
schedule (`schedules/poll.py` `_held`): up to `ingest.BATCH_CONCURRENCY` writes ask at once,
each a database round trip of the same answer. `SharedRead` sends one read for all who ask
while none is under way, and one more for all who ask while it is: none is answered by a read
begun before it asked, so what a caller learns is what holds after it asked (a DELETE
answered before it asked is seen), as if it had read alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedRead(Generic[T]):
    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._next: asyncio.Future[T] | None = None  # the read not yet begun, and its askers
        self._reading: asyncio.Task[None] | None = None

    async def __call__(self) -> T:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieved)
            if self._reading is None:
                self._reading = asyncio.create_task(self._reads())
        # shielded: a caller cancelled leaves the read to the others who wait on it
        return await asyncio.shield(self._next)

    async def _reads(self) -> None:
        try:
            while (answered := self._next) is not None:
                self._next = None  # who asks from now on waits for the next read
                try:
                    found = await self._read()
                except Exception as error:  # every asker of this read gets it
                    answered.set_exception(error)
                except BaseException:  # cancelled (the loop closing): so are its askers
                    answered.cancel()
                    raise
                else:
                    answered.set_result(found)
        finally:
            self._reading = None
            if self._next is not None and not self._next.done():  # cancelled with askers
                self._next.cancel()
                self._next = None


def _retrieved(future: asyncio.Future[T]) -> None:
    """An error no one waits for any more (its askers were cancelled) is not logged."""
    if not future.cancelled():
        future.exception()
