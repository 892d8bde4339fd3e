"""A process's fair share of a background job's shards, held through leases in MongoDB.

Work that any process may do, but that should not be done twice at once (the event relay's
outboxes), is split into a fixed number of shards. Every process running the job calls
`refresh()` every few seconds: it renews the leases it holds, lets go of any beyond its fair
share (shards ÷ live processes; the remainder goes to the first of them by name) and takes
free or expired ones up to it. Processes count each other by a membership document each
keeps alive. So N processes split the shards evenly within a refresh or two, a process that
joins gets its share as the others let go, and a dead process's shards move to the others
once its leases expire (`ttl`). No coordination but the leases (`store/leases.py`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gateway.store import Store


def process_owner() -> str:
    """A name for this process's leases: unique even when a pid is reused."""
    return f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(3)}"


class Shares:
    def __init__(
        self,
        store: Store,
        job: str,
        shards: int,
        *,
        owner: str | None = None,
        ttl_seconds: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._job = job
        self._shards = shards
        self.owner = owner or process_owner()
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock
        self._ensured = False
        self.mine: frozenset[int] = frozenset()

    @property
    def refresh_seconds(self) -> float:
        """How often to call `refresh`: three times per lease."""
        return self._ttl.total_seconds() / 3

    async def refresh(self) -> frozenset[int]:
        """Renew, let go beyond the fair share, take up to it; the shards now ours."""
        leases = self._store.leases
        if not self._ensured:
            await leases.ensure(self._job, self._shards)
            self._ensured = True
        now = self._clock()
        until = now + self._ttl
        await leases.announce(self._job, self.owner, until)
        docs, members = await leases.all(self._job)
        live = sorted({m["owner"] for m in members if m["until"] > now} | {self.owner})
        # Shares that add up to every shard: the first (shards mod n) owners take one more.
        fair = self._shards // len(live) + (live.index(self.owner) < self._shards % len(live))
        held = sorted(d["shard"] for d in docs if d["owner"] == self.owner and d["until"] > now)
        extra, held = held[fair:], held[:fair]
        await leases.release(self._job, extra, self.owner)
        await leases.renew(self._job, held, self.owner, until)
        for doc in docs:
            if len(held) >= fair:
                break
            free = doc["owner"] is None or doc["until"] <= now
            if free and await leases.take(self._job, doc["shard"], self.owner, now, until):
                held.append(doc["shard"])
        self.mine = frozenset(held)
        return self.mine

    async def release_all(self) -> None:
        """On a clean shutdown: the others take over at once instead of after `ttl`."""
        await self._store.leases.release(self._job, self.mine, self.owner)
        await self._store.leases.leave(self._job, self.owner)
        self.mine = frozenset()
