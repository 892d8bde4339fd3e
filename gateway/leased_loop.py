"""The loop every leased background runner drives (the delivery worker, the flow runner, the
schedule runner), once:

    look    the runner claims as much work as its free slots allow, under a lease in MongoDB
            (or does not look, when no slot is free), and hands back one coroutine per unit
    work    each unit runs in a task of its own; a task that ends frees a slot and wakes the loop
    wait    for a wake-up (`notify`: work announced in this process; `nudge`: another
            process's, named by a change: `follow_arrivals`), a free slot, or the poll
            interval: longer while looks come back empty (`doorbell.IdleWait`)
    stop    claim no more, let the work under way finish (bounded), cancel the rest

Keepers (housekeeping, lease renewal) run beside the loop while it runs and stop with it.
What a runner still holds after `stop()` (leases to hand back) stays the runner's business.

`HandBacks`: a unit (or a claim) the database failed leaves a lease in MongoDB that nobody in
this process works on any more. Waiting for it to expire stalls that work for a whole lease
(60-90 s) after a fault that lasted a moment; so the runner hands it back, due again after a
pause (`pause`), with a write fenced by its claim token, and when the database fails that
write too, tries it again before each claim until the database takes it
(`docs/reliability.md` "Command faults"). A write whose lease another runner has taken
meanwhile matches nothing.

`LeaseCheck`: whether a unit's lease is still this runner's, awaited right before a request
of the unit goes out (`OutboundRequest.before_sending`): what a runner paused past its lease
(a stopped container, a VM pause) was taken over meanwhile, and its request must not go out
too (`LeaseLost`).

`Claims`: how each runner claims, the same for all three: the hand-backs still kept are tried
first; the shards of its collection are read in turn from a random start (so runners spread
out) until one has work due, each claim under a token of its own (`owner:batch`). The shards
a change named (`Claims.arrived`) are read first, and a look that only a change woke
(`LeasedLoop.narrow`) reads them alone: a delivery another process created costs the claim
of its shard, not a sweep of all 32; the poll, a `notify`, a unit finishing (a slot freed: what
it made due, as an ordered line's next delivery, names no shard), a look skipped for want of a free
slot and a claim that passed work over make the next look read every shard. A claim the
database failed may have been applied, so what it took is handed back (`CLAIMS`) before the
failure is raised; what a claim took is `held` (unit → token) until its unit is done.

`FairShares`: what each claim may take, the same for all three (SPEC §1/§5/§7: one tenant's
slow partner stays that tenant's problem). A runner's slots are few (32 deliveries, 32 flow
runs, 4 schedule runs per process) and a unit holds its slot as long as its partner takes; so
a claim takes only work this process can start now: none of a tenant already holding its
share of the runner's slots, none for a partner this runner cannot call now (disabled, its
circuit open, with as many of its units under way as its `max_concurrency`, or as its rate
limit lets through within the longest a call waits for a token). A tenant's share is half the
slots while another tenant has work under way in the runner, three quarters while it is
alone: a quarter always stays free for another tenant's work when it comes (the delivery worker
claims again once a quarter of its slots is free). What a claim passes over stays due, in
its order, for a later claim. A partner's room is its limit minus this runner's own units of
it: at its gate they wait their turn with the proxy's calls and other runners', first come,
first served (counting the others' waiting calls too would leave this runner's units out for
as long as the others keep the gate queued). Its rate limit's part is the runner's own calls
under way and the tokens a call arriving now gets within `max_wait`: a token another use
case's call holds or waits for is none of the runner's (a unit taken for it would be held back
`rate_limited` and written back). What the runner knows it cannot start as a claim
begins (a tenant at its share, a partner at its room, disabled, or whose circuit lets nothing
through) the claim's read leaves out (`store.client.Admission`): however many of their units
are due before another tenant's, that one is read. What fills up during a read is passed
over; a read that passed `store.client.PASSED_OVER_MOST` over is made again leaving it out.
After a claim that passed work over, the loop claims again only once a unit of what it passed
over is done, work is announced or the poll interval passed (`Claims._waits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import socket
import uuid
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Sequence,
)
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final, Generic, TypeVar

from gateway.background import cancel_and_wait, to_the_end
from gateway.doorbell import IdleWait
from gateway.errors import StoreUnavailable
from gateway.progress import Progress
from gateway.shutdown import HAND_BACK_SECONDS
from gateway.store.changes import EVERYTHING, ChangeStreamsUnavailable
from gateway.store.client import Admission

log = logging.getLogger(__name__)

_RETRY_SECONDS: Final = (0.5, 30.0)  # first and longest wait before reopening a change stream

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
        self.announced = 0  # `notify` and `nudge` calls so far
        # Whether the look under way may read only the shards changes named (`Claims`): only
        # `nudge`s woke it (not a unit finishing, nor the poll, nor `notify`), or it follows
        # at once a narrow look that found work.
        self.narrow = False
        self._wide = True  # the next look reads every shard

    @property
    def poll_seconds(self) -> float:
        return self._poll

    def notify(self) -> None:
        """Work exists (or a slot is free): look now, not at the next poll, everywhere."""
        self.announced += 1
        self._wide = True
        self._wake.set()

    def nudge(self) -> None:
        """Work exists where a change named it (`Claims.arrived`): look now, there alone
        unless something else asks for a look everywhere (`narrow`)."""
        self.announced += 1
        self._wake.set()

    def widen(self) -> None:
        """The next look reads every shard (a claim passed work over)."""
        self._wide = True

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
                self.narrow, self._wide = not self._wide, False
                found = await look()
                if found is None:  # no slot free: what is due waits for a look everywhere
                    found, self._wide = [], True
                else:
                    idle.found(bool(found))
                for unit in found:
                    self._spawn(unit)
                if found:
                    # there may be more due right now, for the slots still free: where this
                    # look read
                    self._wide = self._wide or not self.narrow
                    continue
                try:
                    async with asyncio.timeout(idle.seconds):
                        await self._wake.wait()
                    idle.woken()
                except TimeoutError:
                    self._wide = True  # the poll
        finally:
            self.running = False
            self._ended.set()
            await cancel_and_wait(*beside)

    async def stop(self) -> None:
        """Claim no more (no claim lands after this returns), let the work under way finish
        within the shutdown bound (counted from this call), cancel what did not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._shutdown  # the look under way counts too
        self.stopping = True
        self._wake.set()
        if self.running:
            await self._ended.wait()
        if self.tasks:
            left = max(0.0, deadline - loop.time())
            _, unfinished = await asyncio.wait(set(self.tasks), timeout=left)
            await cancel_and_wait(*unfinished)

    def _spawn(self, unit: Unit[T]) -> None:
        task = asyncio.create_task(unit)
        self.tasks.add(task)

        def done(finished: asyncio.Task[T]) -> None:
            self.tasks.discard(finished)
            # a slot is free, and what the unit made due (an ordered line's next delivery:
            # `wake_waiting`, no change names it) may be in any shard: a look everywhere
            self._wide = True
            self._wake.set()

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


Arrived = Callable[[set[int] | None], None]
"""(the shards units arrived in; None: anywhere, every shard is to be read)."""


async def follow_arrivals(
    changes: Callable[[], AsyncIterator[list[Any]]],
    arrived: Arrived,
    what: str,
    up: Callable[[bool], None] = lambda _: None,
) -> None:
    """A keeper of a leased runner: its collection's arrivals (`changes`: the shards of units
    created or made pending again, by any process, as stored with them: an ordered action's
    deliveries are in their order key's shard, not their id's) handed to `arrived`, as they come,
    for the runner to claim them now instead of at its next poll (SPEC §5: a delivery's first
    attempt is made at once, whichever process created it). Each time the stream (re)opens,
    `arrived(None)`: what came while none was open is found by a look at every shard. A
    stream that fails is reopened after a growing pause (the poll meanwhile); without change
    streams (a standalone MongoDB) the keeper ends, said once in the log, and the runner
    polls. `up` says whether a stream is open (`gateway_change_stream_up`).

    On SecantusDB any write ends a wait of the stream early: under write load its empty
    answers come at most 5 a second (`store/changes.py` `min_interval_ms`), which cost the
    entity POST nothing measurable (docs/benchmarks.md, 2026-12-07 idle; 2 a second did not
    help, and made the wake-up twice as slow)."""
    delay = _RETRY_SECONDS[0]
    while True:
        try:
            opened = False
            async for ids in changes():
                if not opened:
                    opened, delay = True, _RETRY_SECONDS[0]
                    up(True)
                    arrived(None)
                elif EVERYTHING in ids:
                    arrived(None)
                elif ids:
                    arrived({int(shard) for shard in ids})
        except ChangeStreamsUnavailable as exc:
            log.warning("no change streams (%s): the %s polls for other processes' work", exc, what)
            return
        except Exception as exc:  # the database failed: the poll finds the work meanwhile
            log.warning("the %s's change stream failed (%s); reopening in %.1fs", what, exc, delay)
        finally:
            up(False)
        await asyncio.sleep(delay)
        delay = min(delay * 2, _RETRY_SECONDS[1])


class LeaseLost(Exception):
    """A unit's lease is another runner's now: what this runner was about to do with it (send
    its request: `LeaseCheck.still_ours`; record a schedule's page) is left to that one."""


RenewOne = Callable[[Any, str, datetime], Awaitable[bool]]
"""(unit, claim token, until) → whether the claim under the token still held the unit's
lease (nobody took it over, even past its end), now extended to `until`."""


class LeaseCheck:
    """When each unit a runner works on has its lease end, as last written (the claim, the
    renewals), and `still_ours`, the check every leased runner awaits before a unit's request
    goes out: the delivery worker (an action's call, a notification's push, SMS or e-mail),
    the flow runner (a fetch step). `clock` is the one all runners share (the database
    server's), read at each call."""

    def __init__(self, length: timedelta, clock: Callable[[], datetime], renew: RenewOne) -> None:
        self._length = length
        self._clock = clock
        self._renew = renew
        self._until: dict[Any, datetime] = {}

    def claimed(self, unit: Any, until: Any) -> None:
        """The unit's lease, as its claim wrote it (nothing known: asked at the check)."""
        if isinstance(until, datetime):
            self._until[unit] = until

    def renewed(self, units: Iterable[Any], until: datetime) -> None:
        """Every one of `units` had its lease renewed to `until` (a renewal that changed
        fewer than it was given says nothing of which: those stay as they were)."""
        for unit in units:
            if unit in self._until:
                self._until[unit] = until

    def forget(self, unit: Any) -> None:
        self._until.pop(unit, None)

    def before_sending(self, unit: Any, token: str) -> Callable[[], Awaitable[None]]:
        """`still_ours` for the unit held under `token`, for `OutboundRequest.before_sending`."""
        return partial(self.still_ours, unit, token)

    async def still_ours(self, unit: Any, token: str) -> None:
        """LeaseLost unless the unit's lease is still ours. Sent after another runner took it
        over (this process paused past its lease between claim and send), the request would
        go out twice, and an ordered action's older delivery would arrive after the newer
        ones that runner sent meanwhile. A lease with more than half its length left, as the
        renewals every third of it keep it, is ours without asking; else it is renewed now,
        if the claim's token still holds it."""
        now = self._clock()
        until = self._until.get(unit)
        if until is not None and until - now > self._length / 2:
            return
        until = now + self._length
        if not await self._renew(unit, token, until):
            raise LeaseLost(unit)
        self._until[unit] = until


Write = Callable[[], Awaitable[object]]


_REMEMBERED = 1024  # units whose hand-backs `pause` counts
CLAIMS = "claims"  # the key of the write that releases what failed claims took


class HandBacks:
    """Writes that give a runner's leases back (or finish what it recorded), kept until the
    database takes them: `give_back` tries at once, `retry` (before each claim) again."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._pending: dict[str, Write] = {}
        self._given: dict[str, int] = {}  # unit → times handed back (the newest 1024)

    def pause(self, key: str, first: float, most: float) -> float:
        """Seconds the unit `key`, handed back now, waits before it is due again: `first`,
        doubling each time the same unit comes back, up to `most` (a unit whose command the
        database keeps refusing, a poison, is tried ever less often, never in a spin)."""
        given = self._given.pop(key, 0) + 1
        self._given[key] = given
        if len(self._given) > _REMEMBERED:
            del self._given[next(iter(self._given))]
        return float(min(most, first * 2 ** min(given - 1, 32)))

    def waiting(self) -> list[str]:
        """The units whose hand-back the database has yet to take: still leased to this
        runner, held by none of its tasks. A release of what failed claims took leaves them
        to their own hand-back (fenced by their claim token), which says when they are due
        again: freed by it, they would be due at once, their pause lost."""
        return [key for key in self._pending if key != CLAIMS]

    def forget(self, key: str) -> None:
        """The unit `key` went through: its next hand-back, if any, starts at `first`."""
        self._given.pop(key, None)

    async def give_back(self, key: str, write: Write, *, loud: bool = True) -> None:
        """`write` now; kept for `retry` when the database fails it (a newer write for the
        same key replaces an older one: one key per unit, one for all failed claims, so what
        is kept stays bounded). `loud`: warn when it is kept (not when a caller already
        warns for the same failure)."""
        self._pending[key] = write
        await self._try(key, write, loud=loud)

    async def retry(self) -> None:
        """Every write still kept, until the first the database fails (it is not back yet)."""
        for key, write in list(self._pending.items()):
            if not await self._try(key, write, loud=False):
                return

    async def _try(self, key: str, write: Write, *, loud: bool) -> bool:
        """Whether the database answered (the write is done, or can never be)."""
        try:
            await write()
        except StoreUnavailable as exc:
            level = logging.WARNING if loud else logging.DEBUG  # the claim warns each pass
            log.log(
                level, "handing back %s %s waits for the database: %s", self._what, key, exc.detail
            )
            return False
        except Exception:  # a bug: the lease expires instead
            log.exception("handing back %s %s failed; its lease will expire", self._what, key)
        if self._pending.get(key) is write:
            del self._pending[key]
        return True


ClaimShard = Callable[[str, int, int, Admission], Awaitable[list[dict[str, Any]]]]
"""(token, limit, shard, admission) → at most `limit` units due in `shard`, oldest first, those
the admission excludes not read, those it passes over left due, now leased under `token`."""
ClaimAny = Callable[[str, int, Admission], Awaitable[list[dict[str, Any]]]]
"""(token, limit, admission) → `ClaimShard`'s units, due in any shard."""
Whose = Callable[[dict[str, Any]], tuple[str | None, str | None]]
"""(a unit) → its tenant, and the partner whose concurrency gate it waits at (None: none
known at the claim, as for a flow run, whose steps call their partners one after another)."""
PartnerRoom = Callable[[str], int | None]
"""(partner id) → how many calls its concurrency gate lets through at once in this process,
fewer while its circuit or its rate limit lets fewer through now (for this runner: its own
calls under way and the tokens a call arriving now gets, not the tokens other use cases'
calls hold or wait for): a disabled partner's limit is 0, and one whose circuit lets nothing
through now; None: no limit known here (not called yet)."""
Closed = Callable[[], Iterable[str]]
"""() → the partners this process cannot call now at all (their room 0): disabled, or whose
circuit lets nothing through."""


def tenant_only(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    """`Whose` for units whose partner is not known at the claim: their tenant alone."""
    tenant = doc.get("tenant")
    return (tenant if isinstance(tenant, str) else None, None)


def _no_partner_room(_partner: str) -> int | None:
    return None


def _none_closed() -> Iterable[str]:
    return ()


class FairShares:
    """Which due units a runner's claim may take (module docstring): a tenant holds at most
    `share` of the runner's `slots` (half, at least one) while another tenant holds some,
    `alone` (all but a quarter, at least `share`) while it is the only one; a partner at most
    its limit (`room`) of this runner's units (the calls of others, the proxy's, queue at its
    gate beside them, first come, first served). A unit passed over waits for a later claim:
    one whose tenant or partner has a slot free.

    A claim's read leaves out (`Admission.excluded`) the tenants at their share and the
    partners at their room as the claim begins, and those `closed` (room 0: disabled, their
    circuit open): it reads none of their units, however many are due before the others'.
    `passing`: the tenants and partners whose units the claim under way read and passed over
    (they reached their share or room during it); `excluding`: those its last admission left
    out; `blocked`: those of a claim that passed units over (and of what it took), or that
    took nothing while leaving some out, until a unit of one of them is done (`Claims`)."""

    def __init__(
        self,
        slots: int,
        whose: Whose,
        room: PartnerRoom = _no_partner_room,
        closed: Closed = _none_closed,
    ) -> None:
        self.share = max(1, slots // 2)
        self.alone = max(self.share, slots - max(1, slots // 4))
        self._whose = whose
        self._room = room
        self._closed = closed
        self._taken: dict[Any, tuple[str | None, str | None]] = {}  # unit → whose
        self.passing: set[tuple[str, str]] = set()  # ("tenant" | "partner", its id)
        self.excluding: set[tuple[str, str]] = set()  # what the last admission leaves out
        self.blocked: set[tuple[str, str]] = set()

    def took(self, unit: Any, doc: dict[str, Any]) -> None:
        self._taken[unit] = self._whose(doc)

    def keys(self, doc: dict[str, Any]) -> set[tuple[str, str]]:
        """The tenant and partner of a unit, as `passing` and `blocked` name them."""
        tenant, partner = self._whose(doc)
        named = [("tenant", tenant), ("partner", partner)]
        return {(kind, name) for kind, name in named if name is not None}

    def forget_done(self, held: Collection[Any]) -> None:
        """Units no longer `held` are done: their slots free; a claim passing over their tenant
        or partner may take something again."""
        for unit in [u for u in self._taken if u not in held]:
            tenant, partner = self._taken.pop(unit)
            if ("tenant", tenant) in self.blocked or ("partner", partner) in self.blocked:
                self.blocked = set()

    def admission(self, held: Collection[Any]) -> Admission:
        """The admission of one claim, the runner holding `held` (units done are forgotten)."""
        self.forget_done(held)
        tenants = Counter(t for t, _ in self._taken.values() if t is not None)
        partners = Counter(p for _, p in self._taken.values() if p is not None)

        def at_share(tenant: str) -> bool:
            others = any(n for t, n in tenants.items() if t != tenant)
            return tenants[tenant] >= (self.share if others else self.alone)

        def at_room(partner: str) -> bool:
            limit = self._room(partner)
            return limit is not None and partners[partner] >= limit

        def admit(doc: dict[str, Any]) -> bool:
            tenant, partner = self._whose(doc)
            if tenant is not None and at_share(tenant):
                self.passing.add(("tenant", tenant))
                admission.exclude("tenant", tenant)
                return False
            if partner is not None and self._room(partner) is not None:
                if at_room(partner):
                    self.passing.add(("partner", partner))
                    admission.exclude("partner", partner)
                    return False
                partners[partner] += 1
            if tenant is not None:
                tenants[tenant] += 1
            return True

        full = [p for p in partners if at_room(p)]
        # Every closed partner, however many (a deployment's abandoned integrations): one
        # left in would have its backlog read and passed over again at every claim, and a
        # read stopped by it would take nothing behind it.
        closed = {p for p in self._closed() if p not in partners}
        excluded = {
            "tenant": sorted(t for t in tenants if at_share(t)),
            "partner": [*sorted(full), *sorted(closed)],
        }
        self.excluding = {(kind, name) for kind, ids in excluded.items() for name in ids}
        admission = Admission(admit, {kind: ids for kind, ids in excluded.items() if ids})
        return admission


ReleaseClaims = Callable[[list[Any]], Awaitable[object]]
"""(held) → every unit the owner's claims took but `held`, due again."""


class Claims:
    """A runner's claims and the leases they took (`held`: unit id → claim token, until the
    unit is done or handed back). `runner` and `units` name them in the log; `progress` says
    whether claiming moves (for readiness)."""

    def __init__(
        self,
        owner: str,
        loop: LeasedLoop[Any],
        hand_backs: HandBacks,
        *,
        claim: ClaimShard,
        release_claims: ReleaseClaims,
        shards: int = 1,
        claim_any: ClaimAny | None = None,
        fair: FairShares,
        runner: str,
        units: str,
    ) -> None:
        self._owner = owner
        self._loop = loop
        self._hand_backs = hand_backs
        self._claim = claim
        self._claim_any = claim_any
        # The last look read every shard and took nothing (`_claim_shards`).
        self._idle = False
        self._release_claims = release_claims
        self._shards = shards
        self._fair = fair
        self._runner = runner
        self._units = units
        self._batches = itertools.count(1)
        self.shard = random.randrange(shards)  # the next shard read
        self._named: set[int] = set()  # shards changes named, read first (`arrived`)
        self.held: dict[Any, str] = {}
        self.progress = Progress()
        self._blocked_at = 0.0  # loop time of the last claim that passed everything over
        self._announced = 0  # the loop's `announced` then

    def arrived(self, shards: set[int] | None) -> None:
        """Units arrived in `shards` (a change of another process, or of this one: None, in
        any shard): the loop looks now, in those shards first (alone, when nothing else woke
        it: `LeasedLoop.narrow`)."""
        if shards is None:
            self._loop.notify()
            return
        self._named |= {shard for shard in shards if 0 <= shard < self._shards}
        self._loop.nudge()

    async def claim(self, limit: int) -> list[dict[str, Any]]:
        """Due units of the next shard that has any (those changes named first; those alone
        in a narrow look); [] once every shard read came back empty.
        One that passed due units over leaves their tenants and partners `blocked`, and those
        of the units it took (`FairShares`), and the loop's next look reads every shard; one
        that took nothing, those it left out too."""
        await self._hand_backs.retry()
        self._fair.passing = set()
        docs = await self._claim_shards(limit)
        passing = self._fair.passing
        if not docs:  # what it left out is all the work due, maybe: as if passed over
            passing = passing | self._fair.excluding
        self._fair.blocked = passing.union(*map(self._fair.keys, docs)) if passing else set()
        if self._fair.blocked:
            self._blocked_at = asyncio.get_running_loop().time()
            self._announced = self._loop.announced
            self._loop.widen()
        return docs

    def _waits(self) -> bool:
        """Whether the loop's next claim would find only what the last one passed over: it
        passed units over, and since then no unit of a tenant or partner it passed over (or
        took) is done, no work was announced (`notify`: a partner enabled, new deliveries) and
        the poll interval has not passed. Claiming again at once, as the loop does after a
        claim that took something, would leave out what is full, but read every shard for
        the little else there is (the database reading each shard's due units, left out or
        not): a lone tenant's backlog to a fast partner drained at a third of its pace, each
        refill waiting behind such a read. What other tenants have due in the shards it did
        not read waits for that (at most the poll interval, longer while the loop's looks
        come back empty)."""
        self._fair.forget_done(self.held)
        if not self._fair.blocked or self._loop.announced != self._announced:
            return False
        return asyncio.get_running_loop().time() - self._blocked_at < self._loop.poll_seconds

    def _order(self) -> tuple[list[int], list[int]]:
        """The shards a claim reads, in turn: those changes named, then (unless the look is
        narrow) the others from where the last claim stopped."""
        named = sorted(self._named)
        if self._loop.narrow and self._loop.running:
            return named, []
        turn = [(self.shard + n) % self._shards for n in range(self._shards)]
        return named, [shard for shard in turn if shard not in self._named]

    async def _claim_shards(self, limit: int) -> list[dict[str, Any]]:
        """The shards in turn (`_order`) until one has units to take. After a look that read
        every shard and took nothing, a look that would read every shard again is one claim
        in all of them (`claim_any`, when the runner has one): an idle runner's look was one
        read per shard (32 of them), each finding nothing. That one claim reads what the
        empty look read, and what arrived since; the looks after one that took something
        read shard by shard again (a backlog's cost stays that of one shard's)."""
        named, others = self._order()
        if self._idle and others and self._claim_any is not None:
            if self._loop.stopping and self._loop.running:
                return []
            self._named.clear()  # read now: named again by a change that comes meanwhile
            docs = await self._claim_in(limit, None)
            self._idle = not docs
            return docs
        for shard in named + others:
            if self._loop.stopping and self._loop.running:
                return []  # stop() is waiting for the loop
            # Read now: named again by a change that comes meanwhile, or below.
            self._named.discard(shard)
            if shard in others:
                self.shard = (shard + 1) % self._shards
            docs = await self._claim_in(limit, shard)
            if docs:
                if self._loop.narrow and len(docs) >= limit:  # more may be due there
                    self._named.add(shard)
                self._idle = False
                return docs
        if others:  # every shard read, none had units to take
            self._idle = True
        return []

    async def _claim_in(self, limit: int, shard: int | None) -> list[dict[str, Any]]:
        """One claim in `shard` (None: in any, `claim_any`) under a new token, what it took
        now held."""
        token = f"{self._owner}:{next(self._batches)}"
        admit = self._fair.admission(self.held)
        try:
            if shard is None:
                assert self._claim_any is not None
                docs = await self._claim_any(token, limit, admit)
            else:
                docs = await self._claim(token, limit, shard, admit)
        except StoreUnavailable:  # it may have been applied: what it took, due again
            await self._hand_backs.give_back(CLAIMS, self._release_failed, loud=False)
            raise
        for doc in docs:
            self.held[doc["_id"]] = token
            self._fair.took(doc["_id"], doc)
        return docs

    async def claim_safely(self, limit: int) -> list[dict[str, Any]]:
        """The loop's `claim`, none while it `_waits`; a failure logged (and [] claimed): the
        loop tries again at its next look."""
        if self._waits():
            self._loop.widen()  # the claim once it may: everywhere, as the one it waits for
            return []
        try:
            claimed = await self.claim(limit)
            self.progress.moved()
            return claimed
        except StoreUnavailable as exc:
            self.progress.stuck(exc.detail)
            log.warning("%s paused: %s", self._runner, exc.detail)
        except Exception as exc:
            self.progress.stuck(f"{type(exc).__name__}: {exc}")
            log.exception("claiming %s failed; retrying", self._units)
        return []

    async def release_held(self, release: Callable[[Any, str], Awaitable[object]]) -> None:
        """Once the loop has stopped: `release` (unit, token) each lease still held (one the
        database fails simply expires), then a last try of the hand-backs kept; to the end
        once begun, within `HAND_BACK_SECONDS` (`background.to_the_end`)."""
        what = f"handing back the {self._runner}'s leases"
        await to_the_end(HAND_BACK_SECONDS, what, partial(self._release_held, release))

    async def _release_held(self, release: Callable[[Any, str], Awaitable[object]]) -> None:
        for unit, token in list(self.held.items()):
            with contextlib.suppress(StoreUnavailable):
                await release(unit, token)
            self.held.pop(unit, None)
        await self._hand_backs.retry()

    async def _release_failed(self) -> None:
        """What failed claims took and nobody here works on (read when the write is tried)."""
        await self._release_claims([*self.held, *self._hand_backs.waiting()])
