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

import asyncio
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta

from gateway.background import to_the_end
from gateway.clock import utcnow
from gateway.doorbell import Doorbell
from gateway.errors import StoreUnavailable
from gateway.progress import Progress
from gateway.shutdown import HAND_BACK_SECONDS, RELEASE_SECONDS
from gateway.store import Store

log = logging.getLogger(__name__)


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
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._job = job
        self._shards = shards
        self.owner = owner or process_owner()
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock
        self._ensured = False
        self._held: frozenset[int] = frozenset()
        self._until = datetime.min.replace(tzinfo=UTC)  # when the leases held run out

    @property
    def mine(self) -> frozenset[int]:
        """The shards this process may work on: those the last `refresh` took or renewed,
        while their leases run (after refreshes that failed, or a process frozen past its
        leases, none: another process may have taken them)."""
        return self._held if self._clock() < self._until else frozenset()

    def lapses_in(self) -> float:
        """Seconds until the leases held run out, unless renewed (0: none held now)."""
        if not self._held:
            return 0.0
        return max((self._until - self._clock()).total_seconds(), 0.0)

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
        # `mine` follows each step, should the next one fail: first what stays ours (a shard
        # taken over while this process could not renew it is not), then renewed.
        self._held = frozenset(held)
        await leases.release(self._job, extra, self.owner)
        await leases.renew(self._job, held, self.owner, until)
        self._until = until
        for doc in docs:
            if len(held) >= fair:
                break
            free = doc["owner"] is None or doc["until"] <= now
            if free and await leases.take(self._job, doc["shard"], self.owner, now, until):
                held.append(doc["shard"])
                self._held = frozenset(held)
        return self._held

    async def release_all(self) -> None:
        """On a clean shutdown: the others take over at once instead of after `ttl`."""
        await self._store.leases.release(self._job, self._held, self.owner)
        await self._store.leases.leave(self._job, self.owner)
        self._held = frozenset()


class ShardedLoop:
    """The loop of a job whose shards are shared through `Shares` (the event relay, the
    fleet fold): renew the share every `refresh_seconds`, `work` on the shards held (all of
    them when `shares` is None), report progress, then wait for the doorbell or the poll —
    and at least `min_interval` from the start of the pass, so light load batches. A failure
    is logged and retried at the next pass; on stop the shards are let go at once.

    `work(shards, until)` is a pass: it works until nothing is left or, once a batch is done,
    past `until` (monotonic), when the share is to be renewed; the loop renews it and goes on
    at once. Renewing only between passes that ran until idle left a pass under a steady
    stream of input (writes to an entity, fixes) renewing nothing: its leases expired, another
    process took its shards as a dead one's, and both worked on them."""

    def __init__(
        self,
        name: str,
        shares: Shares | None,
        work: Callable[[Collection[int] | None, float], Awaitable[object]],
        *,
        doorbell: Doorbell,
        poll_seconds: float,
        min_interval: float = 0.0,
        on_shards: Callable[[int], None] = lambda held: None,
        before_release: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._name = name
        self._before_release = before_release
        self._shares = shares
        self._work = work
        self._doorbell = doorbell
        self._poll = poll_seconds
        self._min_interval = min_interval
        self._on_shards = on_shards
        self._lapse: asyncio.TimerHandle | None = None
        self.progress = Progress()
        self.running = False

    async def run(self) -> None:
        self.running = True
        try:
            await self._loop()
        finally:
            self.running = False
            if self._lapse is not None:
                self._lapse.cancel()
            # Stopped by a cancel, repeated until the task ends (`cancel_and_wait`): the
            # hand-back runs to its end all the same, within a bound of its own.
            await self._hand_back()

    async def _hand_back(self) -> None:
        """What memory holds written (`before_release`), then the shards let go: another
        process takes them at once, not when their leases expire. Two steps, each run to its
        end within a bound: the write gets `HAND_BACK_SECONDS` less `RELEASE_SECONDS`, the
        release what is left (`RELEASE_SECONDS` at least), so a write that takes its whole
        bound (a big fleet on a loaded database) still lets the shards go. A cancellation
        meanwhile is raised once both are over."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HAND_BACK_SECONDS
        cancelled = False
        if self._before_release is not None:
            what = f"writing the {self._name}'s memory"
            try:
                await to_the_end(HAND_BACK_SECONDS - RELEASE_SECONDS, what, self._before_release)
            except asyncio.CancelledError:
                cancelled = True  # raised below, once the shards are let go
        if self._shares is not None:
            left = max(deadline - loop.time(), RELEASE_SECONDS)
            what = f"handing back the {self._name}'s shards"  # the leases expire if it fails
            try:
                await to_the_end(left, what, self._shares.release_all)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError

    async def _loop(self) -> None:
        renew_at = 0.0 if self._shares is not None else math.inf
        while True:
            started = time.monotonic()
            stopped_short = False
            try:
                shards: frozenset[int] | None = None
                if self._shares is not None:
                    if started >= renew_at:  # a failed refresh is tried again next pass
                        try:
                            await self._shares.refresh()
                            renew_at = started + self._shares.refresh_seconds
                        finally:
                            self._report_share()
                    shards = self._shares.mine
                if shards is None or shards:
                    await self._work(shards, renew_at)
                    stopped_short = time.monotonic() >= renew_at
                self.progress.moved()
            except StoreUnavailable as exc:
                self.progress.stuck(exc.detail)
                log.warning("%s paused: %s", self._name, exc.detail)
            except Exception as exc:
                self.progress.stuck(f"{type(exc).__name__}: {exc}")
                log.exception("%s failed; retrying", self._name)
            if stopped_short:  # for the renewal: what is left goes on after it
                continue
            await self._doorbell.wait(self._poll)
            if self._min_interval:
                await asyncio.sleep(started + self._min_interval - time.monotonic())

    def _report_share(self) -> None:
        """Tell `on_shards` how many shards are held now, and again when their leases run
        out: a refresh that failed (the database down or under its disk's floor) or that
        hangs past them leaves none held. Reported only after a refresh that passed, the
        gauge said every shard held through an outage, and the `...Unowned` alerts that read
        it could not fire."""
        assert self._shares is not None
        if self._lapse is not None:
            self._lapse.cancel()
            self._lapse = None
        self._on_shards(len(self._shares.mine))
        if lapses_in := self._shares.lapses_in():
            self._lapse = asyncio.get_running_loop().call_later(lapses_in, self._report_share)


class ShardedJob:
    """A job run by a `ShardedLoop` (its `_loop`): whether it runs, its progress (/readyz
    reads it; a test may give it another clock) and `run()` for the process's background."""

    _loop: ShardedLoop

    @property
    def running(self) -> bool:
        return self._loop.running

    @property
    def progress(self) -> Progress:
        return self._loop.progress

    @progress.setter
    def progress(self, value: Progress) -> None:
        self._loop.progress = value

    async def run(self) -> None:
        await self._loop.run()
