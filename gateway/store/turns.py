"""The `turns` collection: one writer at a time where a check reads many documents and a
write adds one (a tenant's limits on what its admin creates, `TenantLimits`, and on its
geofences and maintenance plans: the check counts, then the create inserts; two creates side
by side both counted room for one).

A turn is `{_id: <name>, owner, until}`: taken with one conditional upsert (free, or its
holder's `until` past: a process that died holding it), given back by its holder. A taker
that finds it held waits for it, up to a deadline, then hears "busy" (a 409 to retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Final, Protocol

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


class Counted(Protocol):
    async def how_many(self, tenant: str, *, up_to: int) -> int:
        """How many the tenant has, counted up to `up_to` (what a limit needs)."""
        ...


class Limit:
    """A tenant's limit on one resource its admin creates (`TenantLimits`): `room` refuses
    (409 with `limit`) a create past it, and holds the tenant's turn for that resource while
    the create stores it, so that two creates side by side never both take the last place.
    A resource without a limit (a store made without `Settings`) is created at once."""

    def __init__(
        self, turns: Turns | None, resource: str, counted: Counted | None, limit: int | None
    ) -> None:
        self._turns = turns
        self._resource = resource
        self._counted = counted
        self.limit = limit

    @contextlib.asynccontextmanager
    async def room(
        self, tenant: str, *, made: Callable[[], Awaitable[bool]] | None = None
    ) -> AsyncIterator[None]:
        """`made`: whether what the create adds exists after all, read in the turn (a
        mapping's name another upload created meanwhile): then it takes no place."""
        if self._turns is None or self._counted is None or self.limit is None:
            yield
            return
        what, limit = self._resource, self.limit
        busy = f"another of the tenant's {what} is being created; retry"
        async with self._turns.of(f"{what}:{tenant}", busy):
            if made is not None and await made():
                yield
                return
            have = await self._counted.how_many(tenant, up_to=limit)
            if have >= limit:
                raise Conflict(
                    f"the tenant has {have:,} {what}, the limit is {limit:,}: "
                    "delete one before creating another",
                    limit=limit,
                )
            yield


UNLIMITED: Final = Limit(None, "", None, None)


class TenantLimits:
    """The limits on what a tenant's admin creates (`Settings.tenant_limits`: triggers,
    partners, actions, subscriptions, schedules, channels, templates, kinds, mappings,
    flows), one mechanism for them all: each resource's store counts, `Limit.room` checks
    in the tenant's turn (the `turns` collection). Each one a tenant keeps costs every
    tenant: caches, the gate and catalog reads, metric series, the admin UI's lists."""

    def __init__(self, turns: Turns, limits: Mapping[str, int]) -> None:
        self._turns = turns
        self._limits = dict(limits)

    def of(self, resource: str, counted: Counted) -> Limit:
        return Limit(self._turns, resource, counted, self._limits.get(resource))
