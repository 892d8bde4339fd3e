"""The `turns` collection: one writer at a time where a check reads many documents and a
write adds one (a tenant's limits on its geofences and maintenance plans: the check counts
the rules, then the create inserts; two creates side by side both counted room for one).

A turn is `{_id: <name>, owner, until}`: taken with one conditional upsert (free, or its
holder's `until` past: a process that died holding it), given back by its holder. A taker
that finds it held waits for it, up to a deadline, then hears "busy" (a 409 to retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta

from bson import ObjectId

from gateway.clock import utcnow
from gateway.errors import Conflict
from gateway.store.client import Collection, translate_errors

# What a turn's holder may take at most: the work a turn covers is a read and a write, done in
# milliseconds. A turn its holder could not give back (the process died; the database failed
# the write that took it, or the one giving it back, and applied it) is free after HOLD, shorter
# than what a taker waits: a request retried after a fault waits for it, and is not told "busy".
# A holder slower than HOLD (a database stalled that long) may see a taker start beside it.
HOLD = timedelta(seconds=3)
WAIT_SECONDS = 5.0


class Busy(Conflict):
    pass


class Turns:
    def __init__(self, collection: Collection) -> None:
        self._c = collection

    @contextlib.asynccontextmanager
    async def of(self, name: str, busy: str) -> AsyncIterator[None]:
        """Hold the turn `name` for the block; `Busy(busy)` when another holder keeps it
        past WAIT_SECONDS."""
        owner = str(ObjectId())
        deadline = time.monotonic() + WAIT_SECONDS
        pause = 0.01
        while not await self._take(name, owner):
            if time.monotonic() >= deadline:
                raise Busy(busy)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)
        try:
            yield
        finally:
            with translate_errors():
                await self._c.delete_one({"_id": name, "owner": owner})

    async def _take(self, name: str, owner: str) -> bool:
        now = utcnow()
        try:
            with translate_errors():
                await self._c.update_one(
                    {"_id": name, "until": {"$lte": now}},
                    {"$set": {"owner": owner, "until": now + HOLD}},
                    upsert=True,
                )
        except Conflict:  # held: the upsert's insert met its `_id`
            return False
        return True
