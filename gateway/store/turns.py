"""The `turns` collection: one writer at a time where a check reads many documents and a
write adds one (a tenant's limits on what its admin creates, `TenantLimits`, and on its
geofences and maintenance plans: the check counts, then the create inserts; two creates side
by side both counted room for one).

A turn is `{_id: <name>, owner, until}`: taken with one conditional upsert (free, or its
holder's `until` past: a process that died holding it), given back by its holder. A taker
that finds it held waits for it, up to a deadline, then hears "busy" (`Busy`, a 503 with
Retry-After).

A limit's count is kept beside its turn, `{_id: "count:<resource>:<tenant>", n, stale,
counted_at}` (`Limit`): counting a tenant's 5,000 documents in the turn took 0.25-0.3 s on
the embedded SecantusDB, so a tenant's creates ran at 3-4 a second and those sent side by
side waited past the deadline. `n` is never below what the tenant has (the drift rule): a
create adds one to it in the turn before it inserts (a process dying between, or an insert
that failed, leaves it one too high: a failed write may have been applied); a deletion does
not lower it, it marks it `stale`, as a failed create does. It is counted again, in the turn,
when it is missing, and when it has reached the limit and is stale (a deletion since) or
older than RECOUNT_AFTER_SECONDS (what a dead process left too high); a count sets `stale`
false before it reads, so a deletion during it leaves it stale.
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
from gateway.errors import Conflict, StoreUnavailable, Unavailable
from gateway.store.client import Collection, translate_errors

# What a turn's holder may take at most: the work a turn covers is a read and a write, done in
# milliseconds. A turn its holder could not give back (the process died; the database failed
# the write that took it, or the one giving it back, and applied it) is free after HOLD, shorter
# than what a taker waits: a request retried after a fault waits for it, and is not told "busy".
# A holder slower than HOLD (a database stalled that long) may see a taker start beside it.
HOLD = timedelta(seconds=3)
WAIT_SECONDS = 5.0
# A limit's count that reached the limit with no deletion since is counted again after this
# (a create a dead process left counted, never inserted): a tenant at its limit pays a count
# at most this often, plus one after each deletion.
RECOUNT_AFTER_SECONDS = 60.0


class Busy(Unavailable):
    """Another holder kept the turn past WAIT_SECONDS: nothing was stored; retry."""

    title, slug = "Busy", "busy"

    def __init__(self, detail: str = "", *, retry_after: int = 1, **extra: object) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)


class Turns:
    def __init__(self, collection: Collection) -> None:
        self._c = collection
        # The takers of each turn in this process, in line: one of them asks the database,
        # the next goes on as soon as it is done (asking the database again and again, each
        # waiting up to 0.2 s between, 40 creates took 5 s for 0.4 s of work). An entry goes
        # once no one waits.
        self._lines: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def of(self, name: str, busy: str) -> AsyncIterator[None]:
        """Hold the turn `name` for the block; `Busy(busy)` when another holder (of this
        process or another) keeps it past WAIT_SECONDS."""
        deadline = time.monotonic() + WAIT_SECONDS
        lock, users = self._lines.setdefault(name, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                    await lock.acquire()
            except TimeoutError:
                raise Busy(busy) from None
            try:
                async with self._held(name, busy, deadline):
                    yield
            finally:
                lock.release()
        finally:
            users[0] -= 1
            if not users[0]:
                del self._lines[name]

    @contextlib.asynccontextmanager
    async def _held(self, name: str, busy: str, deadline: float) -> AsyncIterator[None]:
        owner = str(ObjectId())
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

    async def count(self, name: str) -> Mapping[str, object] | None:
        with translate_errors():
            found: Mapping[str, object] | None = await self._c.find_one({"_id": name})
        return found

    async def set_count(self, name: str, fields: Mapping[str, object]) -> None:
        with translate_errors():
            await self._c.update_one({"_id": name}, {"$set": dict(fields)}, upsert=True)

    async def mark_stale(self, name: str) -> None:
        with translate_errors():
            await self._c.update_one({"_id": name}, {"$set": {"stale": True}})

    async def add_count(self, name: str, by: int) -> None:
        with translate_errors():
            await self._c.update_one({"_id": name}, {"$inc": {"n": by}})

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
        what, limit, turns = self._resource, self.limit, self._turns
        busy = f"another of the tenant's {what} is being created; retry"
        count = f"count:{what}:{tenant}"
        async with turns.of(f"{what}:{tenant}", busy):
            if made is not None and await made():
                yield
                return
            have = await self._have(tenant, count, limit)
            if have >= limit:
                raise Conflict(
                    f"the tenant has {have:,} {what}, the limit is {limit:,}: "
                    "delete one before creating another",
                    limit=limit,
                )
            await turns.add_count(count, 1)  # before the insert: never below (module doc)
            try:
                yield
            except BaseException:  # stored or not (a write failed may have been applied):
                await self.freed(tenant)  # counted again once the count reaches the limit
                raise

    async def _have(self, tenant: str, count: str, limit: int) -> int:
        """The tenant's count, kept (`count`): counted again when missing, or when it has
        reached the limit and a deletion came since or it is older than RECOUNT_AFTER_SECONDS."""
        assert self._turns is not None and self._counted is not None
        kept = await self._turns.count(count)
        now = utcnow().timestamp()
        if kept is not None and isinstance(n := kept.get("n"), int):
            counted_at = kept.get("counted_at")
            recent = isinstance(counted_at, float) and counted_at > now - RECOUNT_AFTER_SECONDS
            # A count that stopped at the limit of its time says "at least n": under a limit
            # raised since, it is counted again (a tenant above both limits is not at n).
            capped = isinstance(up_to := kept.get("up_to"), int) and n >= up_to
            if not (capped and n < limit) and (n < limit or (recent and not kept.get("stale"))):
                return n
        await self._turns.set_count(count, {"stale": False})  # a deletion from now on marks it
        have = await self._counted.how_many(tenant, up_to=limit)
        await self._turns.set_count(count, {"n": have, "counted_at": now, "up_to": limit})
        return have

    async def freed(self, tenant: str) -> None:
        """One of the tenant's was deleted (or a create failed): its count is stale, counted
        again when it says the tenant has reached its limit. Not lowered: a count under way
        would miss it. A database that fails this leaves it to RECOUNT_AFTER_SECONDS."""
        if self._turns is None or self.limit is None:
            return
        with contextlib.suppress(StoreUnavailable):
            await self._turns.mark_stale(f"count:{self._resource}:{tenant}")


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
