"""Per-partner protection: circuit breaker, token-bucket rate limit and concurrency gate."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

SLOWEST_RATE: Final = 0.0001
"""The slowest rate limit taken, in requests per second (one every 10,000 s, 2 h 47 min): the
APIs refuse a slower one, and a bucket given one (stored before they did) counts at this one,
so a wait it tells is a finite number of seconds (at most 10,000 for a caller arriving now)."""


# Seconds a wait may exceed what a caller waits at most and still be waited for: the floating
# point's error (at 0.2/s, 2 s before a token is a wait of 2.0000000000000004 s), which
# `given_within` and `acquire` agree on.
_HAIR: Final = 1e-6

MAX_GUARDS: Final = 10_000
"""The most partner guards a process keeps (`PartnerGuards.most`), as many as the catalog's
cached partners."""


class BreakerState(enum.StrEnum):
    """Exported as a metric label, so the values are part of the dashboard's contract."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True, eq=False)
class Permit:
    """One request `CircuitBreaker.allow()` let through; its outcome is reported with it, so
    that the breaker knows whose it is (`identity` compares: each permit is its own)."""

    epoch: int  # how many times the breaker had opened when the request was let through
    probe: bool  # this request holds half_open's single probe slot


class CircuitBreaker:
    """closed → open after `threshold` consecutive failures; open → half_open after `cooldown`
    seconds; half_open lets one probe through at a time: success closes, failure reopens.

    Callers ask `allow()` right before sending and then report, with the `Permit` it gave,
    exactly one of `record_success()`, `record_failure()` or `release()` (sent nothing / no
    verdict). Once open, only the probe's own outcome counts: a late answer of a request let
    through before the breaker opened (its timeout may be longer than the cooldown) neither
    ends the probe nor closes or reopens the breaker.
    """

    def __init__(
        self,
        *,
        threshold: int = 5,
        cooldown: float = 30.0,
        clock: Clock = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if threshold < 1 or cooldown < 0:
            raise ValueError("threshold must be >= 1 and cooldown >= 0")
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._epoch = 0  # openings so far: a permit of an earlier epoch reports too late
        self._probe: Permit | None = None  # the permit holding the probe slot

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.retry_in() == 0.0:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open).

        The cooldown less the time elapsed since it opened: two readings of the clock a few
        seconds apart subtract exactly, where `opened_at + cooldown - now` rounded the sum, so
        that a breaker read at the instant it opened (a monotonic clock a little under a power
        of two) said 30.000000000015 s: a `Retry-After` of 31."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(self.cooldown - (self._clock() - self._opened_at), 0.0)

    def room(self) -> int | None:
        """How many requests may go out now: None (no bound) while closed, 1 in half_open
        while its probe slot is free, else 0 (open, or its probe out)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return None
        return 1 if state is BreakerState.HALF_OPEN and self._probe is None else 0

    def allow(self) -> Permit | None:
        """A permit when a request may go out now, else None. In half_open the permit takes
        the single probe slot."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(self._epoch, probe=False)
        if state is BreakerState.HALF_OPEN and self._probe is None:
            self._probe = Permit(self._epoch, probe=True)
            return self._probe
        return None

    def record_success(self, permit: Permit) -> None:
        if permit is self._probe:
            self._probe = None
            self._failures = 0
            self._set(BreakerState.CLOSED)
        elif self._counts(permit):
            self._failures = 0

    def record_failure(self, permit: Permit) -> None:
        if permit is self._probe:
            self._probe = None
            self._open()
        elif self._counts(permit):
            self._failures += 1
            if self._failures >= self.threshold:
                self._open()

    def release(self, permit: Permit) -> None:
        """The allowed request ended without a verdict (cancelled, not sent): a probe frees
        its slot."""
        if permit is self._probe:
            self._probe = None

    def _counts(self, permit: Permit) -> bool:
        """A request's outcome counts toward the streak when it was let through since the
        breaker last closed (not a late one from before an opening) and it is closed."""
        return permit.epoch == self._epoch and self._state is BreakerState.CLOSED

    def _open(self) -> None:
        self._epoch += 1
        self._opened_at = self._clock()
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. Waiters reserve tokens in order
    (the balance may go negative), so a steady stream of callers is served first come,
    first served without polling."""

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = max(rate, SLOWEST_RATE)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._updated = clock()
        self._waiting = 0  # callers that reserved a token and sleep until it comes

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def try_acquire(self) -> float:
        """Take a token and return 0.0, or take nothing and return the seconds to wait."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    def delay(self) -> float:
        """Seconds until a token is free for a caller arriving now (queued waiters first),
        taking nothing: what a refused caller is told to wait."""
        self._refill()
        return max((1 - self._tokens) / self.rate, 0.0)

    def free_within(self, seconds: float) -> int:
        """How many callers arriving now get a token within `seconds` (`acquire(seconds)`
        lets them wait for it), behind those waiting for one already: the tokens it holds and
        those it gains by then, less those the waiting callers reserved."""
        self._refill()
        return max(math.floor(self._tokens + (seconds + _HAIR) * self.rate), 0)

    async def acquire(self, max_wait: float = math.inf) -> bool:
        """Wait for a token; False (nothing taken) if that would take longer than max_wait."""
        wait = self.try_acquire()
        if wait == 0.0:
            return True
        if wait > max_wait + _HAIR:
            return False
        self._tokens -= 1  # reserve: later callers queue behind this one
        self._waiting += 1
        try:
            await self._sleep(wait)
        except asyncio.CancelledError:
            self._tokens += 1
            raise
        finally:
            self._waiting -= 1
        return True


class RateLimits:
    """Token buckets by key (a tenant, a trigger, a client address), counted in this process;
    at most `max_keys` kept, the least recently used dropped first (a dropped key starts
    again with a full burst)."""

    def __init__(self, max_keys: int = 10_000, *, clock: Clock = time.monotonic) -> None:
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[tuple[float, float], TokenBucket]] = OrderedDict()

    def wait(self, key: str, rate: float, burst: float) -> float:
        """0.0 when one more request under `key` may go now (a token is taken), else the
        seconds until one may. A changed rate or burst starts the key's bucket again."""
        entry = self._buckets.get(key)
        if entry is None or entry[0] != (rate, burst):
            if entry is None and len(self._buckets) >= self._max_keys:
                self._buckets.popitem(last=False)
            entry = (rate, burst), TokenBucket(rate, burst, clock=self._clock)
            self._buckets[key] = entry
        self._buckets.move_to_end(key)
        return entry[1].try_acquire()


class Gate:
    """A partner's concurrency gate: at most `size` holders at once, waiters served first
    come, first served. One gate per partner for as long as the process knows it: new
    settings change its size (`resize`), and the requests in flight under the old size
    still count against the new one (a partner re-saved while its calls are in flight does
    not get a second share of the process's capacity).

    `awaiting_capacity`: how many holders wait for the process's outbound capacity, not the
    partner (`Sender`): a wait at this gate behind them is the gateway's, not the partner's."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = 0
        self.awaiting_capacity = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def locked(self) -> bool:
        return self.held >= self.size or any(not w.done() for w in self._waiters)

    async def acquire(self) -> bool:
        if not self.locked():
            self.held += 1
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # given a place, then cancelled
                self.release()
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        return True

    def release(self) -> None:
        self.held -= 1
        self._wake()

    def resize(self, size: int) -> None:
        self.size = size
        self._wake()

    def _wake(self) -> None:
        while self.held < self.size and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.held += 1
                waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """A partner's limits, as stored with the partner endpoint. Equal settings share a guard."""

    max_concurrency: int = 10
    rate_per_second: float | None = None  # None: no rate limit
    burst: float = 1.0
    max_wait: float = 5.0  # longest a send waits for a rate token or a concurrency slot
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    # Whose share of the process's outbound capacity the partner's calls take, with every
    # other partner of the tenant (`PartnerGuards.share`); None: no tenant's (a test's guard).
    tenant: str | None = None

    def __post_init__(self) -> None:
        if self.max_concurrency < 1 or self.max_wait < 0:
            raise ValueError("max_concurrency must be >= 1 and max_wait >= 0")


@dataclass(slots=True)
class PartnerGuard:
    """Everything that stands between a partner and our senders. `concurrency` is the size
    of its gate: its `max_concurrency`, within the share of the process's outbound capacity
    one partner may hold (`PartnerGuards.share`). `tenant_gate`: its tenant's, shared by all
    the tenant's partners, of the same size: what one tenant may hold of the capacity."""

    settings: GuardSettings
    breaker: CircuitBreaker
    limiter: TokenBucket | None
    gate: Gate
    tenant_gate: Gate | None = None

    @property
    def concurrency(self) -> int:
        return self.gate.size

    def room(self, sending: int = 0) -> int:
        """How many of a runner's calls may be under way to the partner in this process now,
        as its claim counts them (`PartnerGuards.room`), `sending` of them under way already
        (holding a token or waiting for one, at the gate or past it): its gate's size; fewer
        while its circuit lets fewer through (open: none; half_open: its probe); fewer while
        its rate limit lets fewer through within `max_wait` (what a call waits for a token at
        most): the runner's `sending` and the tokens a call arriving now gets within
        `max_wait`. A call beyond would wait longer and be held back (`rate_limited`), its
        delivery written back due at the next token, with every other one beyond. The other
        use cases' calls (a proxy call, a flow's fetch, a schedule's page, an SMS, a push)
        are no room: a token one of them holds or waits for is not the runner's to use."""
        room = self.gate.size
        if (circuit := self.breaker.room()) is not None:
            room = min(room, circuit)
        if self.limiter is not None:
            paced = sending + self.limiter.free_within(self.settings.max_wait)
            room = min(room, paced)
        return room

    def opens_in(self) -> float | None:
        """Seconds until its rate limit gives a caller arriving then a token within
        `max_wait`, when it gives one arriving now none (None: it does, or it has no rate
        limit)."""
        if self.limiter is None:
            return None
        wait = self.limiter.delay() - self.settings.max_wait
        return wait if wait > 0 else None

    @classmethod
    def build(
        cls,
        settings: GuardSettings,
        *,
        clock: Clock = time.monotonic,
        on_breaker_change: Callable[[BreakerState], None] | None = None,
        share: int | None = None,
        gate: Gate | None = None,
        tenant_gate: Gate | None = None,
    ) -> PartnerGuard:
        """A guard for `settings`; `gate`: the partner's gate so far, resized to them (its
        requests in flight keep their places and count); `tenant_gate`: its tenant's."""
        breaker = CircuitBreaker(
            threshold=settings.breaker_threshold,
            cooldown=settings.breaker_cooldown,
            clock=clock,
            on_change=on_breaker_change,
        )
        limiter = None
        if settings.rate_per_second is not None:
            limiter = TokenBucket(settings.rate_per_second, settings.burst, clock=clock)
        concurrency = min(settings.max_concurrency, share or settings.max_concurrency)
        if gate is None:
            gate = Gate(concurrency)
        else:
            gate.resize(concurrency)
        return cls(settings, breaker, limiter, gate, tenant_gate)


@dataclass(slots=True)
class PartnerGuards:
    """The registry of guards by partner id; a guard is rebuilt when its settings change,
    with a new breaker and rate limit, around the partner's same gate resized: the requests
    already in flight keep their places in it and count against the new size.

    `share`: the most requests one partner may have in flight in this process, whatever its
    `max_concurrency` (half the sender's outbound capacity, `Sender(connections=...)`): no
    partner, however slow, takes the capacity the others' calls need (docs/outbound.md). The
    same bound holds for all the partners of one tenant together (a gate per tenant, kept for
    as long as the process runs: one per tenant that called a partner): a tenant with many
    slow partners, each within its own share, does not take the capacity from the others.

    A deleted partner's guard goes (`discard`): at once in the process that deleted it, at
    the next housekeeping pass in the others (`PartnerUseCases.forget_deleted_partners`).
    `most`: a backstop all the same, as for the other caches: past it, the least recently
    used guard with no call in flight or waiting goes (a partner called again gets a new
    one, its circuit closed).
    """

    clock: Clock = time.monotonic
    share: int | None = None
    most: int = MAX_GUARDS
    on_breaker_change: Callable[[str, BreakerState], None] | None = None
    # Called when a partner's guard is dropped (the partner deleted): its state is no more.
    on_discard: Callable[[str], None] | None = None
    # By partner, the least recently used first (`get`).
    _guards: OrderedDict[str, PartnerGuard] = field(
        default_factory=OrderedDict, init=False, repr=False
    )
    _tenants: dict[str, Gate] = field(default_factory=dict, init=False, repr=False)
    # An open breaker's read at the end of its cooldown, by partner (see `_read_when_due`).
    _due: dict[str, asyncio.TimerHandle] = field(default_factory=dict, init=False, repr=False)

    def get(self, partner_id: str, settings: GuardSettings) -> PartnerGuard:
        guard = self._guards.get(partner_id)
        if guard is not None and guard.settings == settings:
            self._guards.move_to_end(partner_id)
            return guard
        replaced = guard is not None
        built: list[PartnerGuard] = []
        guard = PartnerGuard.build(
            settings,
            clock=self._now,
            on_breaker_change=self._callback(partner_id, built),
            share=self.share,
            gate=None if guard is None else guard.gate,
            tenant_gate=self._tenant_gate(settings.tenant),
        )
        built.append(guard)
        self._guards[partner_id] = guard
        self._guards.move_to_end(partner_id)
        if replaced:  # new settings, a new breaker: closed, whatever the old one was
            self._cancel_due(partner_id)
            if self.on_breaker_change is not None:
                self.on_breaker_change(partner_id, BreakerState.CLOSED)
        elif len(self._guards) > self.most:
            self._evict_idle(but=partner_id)
        return guard

    def partner_ids(self) -> set[str]:
        """The partners that have a guard in this process."""
        return set(self._guards)

    def _evict_idle(self, *, but: str) -> None:
        """Past `most`: the least recently used guard (`but` the one just built) with nothing
        in flight or waiting at its gate discarded; one in use keeps its place (its calls
        hold its gate: a new one would let as many more through)."""
        for partner_id, guard in self._guards.items():
            if partner_id != but and guard.gate.held == 0 and not guard.gate.locked():
                self.discard(partner_id)
                return

    def room(self, partner_id: str, sending: int = 0) -> int | None:
        """How many of a leased runner's units a claim takes for the partner
        (`leased_loop.FairShares`), `sending` of the runner's calls to it under way: the
        size of its gate in this process, fewer while its circuit or its rate limit lets
        fewer through (`PartnerGuard.room`); None before its first call. Units taken beyond
        would only be held back by the circuit or the rate limit, each written again: until
        2026-12-06 a rate-limited partner's backlog was claimed and handed back at every
        token (174 claims and writes for 3 requests sent at 0.2 requests a second), and
        again while another use case's call waited for the partner's token or was in flight
        (its token counted as the runner's)."""
        guard = self._guards.get(partner_id)
        return None if guard is None else guard.room(sending)

    def refusing(self) -> list[str]:
        """The partners whose circuit lets no request through now (open, or its probe out)."""
        return [pid for pid, guard in self._guards.items() if guard.breaker.room() == 0]

    def closed(self) -> list[str]:
        """The partners with no room now (`room`): their circuit lets nothing through, or
        their rate limit gives no token within `max_wait` to a call arriving now."""
        return [pid for pid, guard in self._guards.items() if guard.room() == 0]

    def opens_in(self, partner_id: str) -> float | None:
        """`PartnerGuard.opens_in` of the partner (None before its first call)."""
        guard = self._guards.get(partner_id)
        return None if guard is None else guard.opens_in()

    def _tenant_gate(self, tenant: str | None) -> Gate | None:
        if tenant is None or not self.share:
            return None
        if (gate := self._tenants.get(tenant)) is None:
            gate = self._tenants[tenant] = Gate(self.share)
        return gate

    def _now(self) -> float:
        return self.clock()  # read at each call: tests move time by replacing `clock`

    def states(self) -> dict[str, BreakerState]:
        """Every partner's breaker state as of now, for a metrics scrape: an open breaker past
        its cooldown turns half_open as it is read, and reports it."""
        return {pid: guard.breaker.state for pid, guard in self._guards.items()}

    def discard(self, partner_id: str) -> None:
        """Drop a deleted partner's guard, its pending read and its reported state. A send
        still under way on it reports nothing (`_callback`)."""
        dropped = self._guards.pop(partner_id, None)
        self._cancel_due(partner_id)
        if dropped is not None and self.on_discard is not None:
            self.on_discard(partner_id)

    def _cancel_due(self, partner_id: str) -> None:
        if (due := self._due.pop(partner_id, None)) is not None:
            due.cancel()

    def _callback(
        self, partner_id: str, built: list[PartnerGuard]
    ) -> Callable[[BreakerState], None] | None:
        hook = self.on_breaker_change
        if hook is None:
            return None

        def changed(state: BreakerState) -> None:
            if self._guards.get(partner_id) is not built[0]:  # (building reports nothing)
                return  # a guard replaced since (new settings): a send still under way on it
            hook(partner_id, state)
            if state is BreakerState.OPEN:
                self._read_when_due(partner_id)

        return changed

    def _read_when_due(self, partner_id: str) -> None:
        """An open breaker turns half_open only when read: with no call to the partner, its
        state would be reported open for good. So it is read at the end of its cooldown (in
        every process of `serve --workers N`, each of which reports its own breakers)."""
        guard = self._guards.get(partner_id)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test's direct call): a scrape reads it
            return
        if guard is None or guard.breaker.state is not BreakerState.OPEN:
            return
        self._cancel_due(partner_id)
        breaker = guard.breaker
        self._due[partner_id] = loop.call_later(breaker.retry_in(), self._read, partner_id, breaker)

    def _read(self, partner_id: str, breaker: CircuitBreaker) -> None:
        self._due.pop(partner_id, None)
        guard = self._guards.get(partner_id)
        if guard is not None and guard.breaker is breaker:  # not replaced meanwhile
            self._read_when_due(partner_id)  # half_open now (reported); else not quite yet
