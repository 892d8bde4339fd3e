import asyncio

import pytest

from gateway.outbound.breaker import (
    BreakerState,
    CircuitBreaker,
    GuardSettings,
    PartnerGuards,
    Permit,
    TokenBucket,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def let_through(breaker: CircuitBreaker) -> Permit:
    permit = breaker.allow()
    assert permit is not None
    return permit


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.record_failure(let_through(breaker))


def open_breaker(clock: FakeClock, changes: list[BreakerState] | None = None) -> CircuitBreaker:
    breaker = CircuitBreaker(
        threshold=3,
        cooldown=30,
        clock=clock,
        on_change=(changes.append if changes is not None else None),
    )
    fail(breaker, 3)
    return breaker


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=30, clock=FakeClock())
    fail(breaker, 2)
    breaker.record_success(let_through(breaker))  # resets the streak
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker)
    assert breaker.state is BreakerState.OPEN
    assert breaker.allow() is None


def test_open_breaker_lets_one_probe_through_after_cooldown() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock)
    clock.now += 29.9
    assert breaker.allow() is None
    assert breaker.retry_in() == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    probe = let_through(breaker)
    assert breaker.allow() is None  # one probe at a time
    breaker.record_success(probe)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() and breaker.allow()


def test_a_breaker_read_as_it_opens_waits_its_whole_cooldown_not_a_hair_more() -> None:
    """A monotonic clock a little under a power of two (uptime 131,042 s): `opened_at + 30`
    rounded up and a breaker read at its opening said 30.000000000015 s, which a held send
    told as "retry in 31 s"."""
    clock = FakeClock()
    clock.now = 131042.000740742
    breaker = open_breaker(clock)
    assert breaker.retry_in() == 30.0
    clock.now += 12.5
    assert breaker.retry_in() == 17.5


def test_a_partners_room_for_claims_follows_its_circuit() -> None:
    """A claim takes for a partner as many units as its gate holds while its circuit is
    closed, none while it is open or its half_open probe is out, one (the probe) while it is
    half_open and free: it is among the `refusing` partners exactly while none may go."""
    clock = FakeClock()
    guards = PartnerGuards(clock=clock)
    guard = guards.get("p1", GuardSettings(max_concurrency=4, breaker_threshold=2))
    guards.get("p2", GuardSettings(max_concurrency=4))
    assert (guards.room("p1"), guards.room("unknown"), guards.refusing()) == (4, None, [])
    fail(guard.breaker, 2)
    assert (guards.room("p1"), guards.refusing()) == (0, ["p1"])
    clock.now += 30
    assert (guards.room("p1"), guards.refusing()) == (1, [])
    probe = let_through(guard.breaker)
    assert (guards.room("p1"), guards.refusing()) == (0, ["p1"])
    guard.breaker.record_success(probe)
    assert (guards.room("p1"), guards.room("p2"), guards.refusing()) == (4, 4, [])


async def test_a_partners_room_for_claims_follows_its_rate_limit() -> None:
    """At 0.2 requests a second (one token every 5 s) and a 2 s `max_wait`, a claim takes a
    unit while a call arriving now gets a token within 2 s, the runner's own calls under way
    beside it (not another use case's); none (the partner `closed`) from the token taken
    until 2 s before the next, which `opens_in` says. At 2 a second, the tokens of 2 s: 1
    held and 4 more."""
    clock = FakeClock()
    guards = PartnerGuards(clock=clock)
    slow = GuardSettings(max_concurrency=4, rate_per_second=0.2, max_wait=2.0)
    guard = guards.get("p1", slow)
    guards.get("p2", GuardSettings(max_concurrency=4, rate_per_second=2.0, max_wait=2.0))
    assert (guards.room("p1"), guards.room("p2"), guards.closed()) == (1, 4, [])
    assert guards.opens_in("p1") is None
    assert guard.limiter is not None and guard.limiter.try_acquire() == 0.0
    assert (guards.room("p1"), guards.closed(), guards.opens_in("p1")) == (0, ["p1"], 3.0)
    guard.gate.held = 1  # the call in flight: another use case's is no room for a claim
    assert (guards.room("p1"), guards.room("p1", sending=1)) == (0, 1)  # the runner's is
    guard.gate.held = 0
    clock.now += 2.9
    assert (guards.room("p1"), guards.closed()) == (0, ["p1"])
    clock.now += 0.1
    assert (guards.room("p1"), guards.closed(), guards.opens_in("p1")) == (1, [], None)
    assert guards.refusing() == []  # its circuit lets everything through
    guard.limiter._sleep = clock.sleep
    assert await guard.limiter.acquire(2.0)  # the one the claim took waits 2 s, no more
    assert clock.now == pytest.approx(1005.0)


async def test_a_rate_limits_room_counts_the_runners_waiting_calls_not_the_others() -> None:
    """The runner's calls waiting for their token count among those it lets through within
    `max_wait`: the room stays what it was while they wait, and falls as they go. Another
    use case's call waiting (a proxy call's) holds the token it reserved: one less."""
    clock = FakeClock()
    guards = PartnerGuards(clock=clock)
    guard = guards.get("p", GuardSettings(rate_per_second=1.0, max_wait=3.0))
    limiter = guard.limiter
    assert limiter is not None
    woken = asyncio.Event()

    async def sleep(seconds: float) -> None:
        await woken.wait()
        clock.now += seconds

    limiter._sleep = sleep
    assert guards.room("p") == 4  # one now, one each second for 3 s
    assert await limiter.acquire(3.0)
    assert guards.room("p") == 3
    waiting = asyncio.create_task(limiter.acquire(3.0))
    await asyncio.sleep(0)  # its token reserved, asleep until it comes
    assert (guards.room("p", sending=1), guards.room("p")) == (3, 2)
    woken.set()
    assert await waiting
    assert guards.room("p") == 3  # a second later: it went, the 4th second's token is in


def test_failed_probe_reopens_for_another_cooldown() -> None:
    clock = FakeClock()
    changes: list[BreakerState] = []
    breaker = open_breaker(clock, changes)
    clock.now += 30
    fail(breaker)
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_in() == 30
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN]


def test_released_probe_frees_the_slot() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock)
    clock.now += 30
    breaker.release(let_through(breaker))
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()


def test_a_late_failure_of_a_request_sent_before_the_opening_does_not_free_a_second_probe() -> None:
    """A slow request let through while closed (a partner timeout longer than the cooldown)
    ends after the probe went out: its failure neither ends the probe nor reopens."""
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, cooldown=30, clock=clock)
    slow = let_through(breaker)
    fail(breaker, 2)
    assert breaker.state is BreakerState.OPEN
    clock.now += 30
    probe = let_through(breaker)
    breaker.record_failure(slow)  # the slow request times out while the probe is out
    assert breaker.state is BreakerState.HALF_OPEN
    clock.now += 30
    assert breaker.allow() is None, "two probes out at once in half_open"
    breaker.release(slow)
    assert breaker.allow() is None
    breaker.record_success(probe)
    assert breaker.state is BreakerState.CLOSED


def test_a_late_success_of_a_request_sent_before_the_opening_does_not_close() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, cooldown=30, clock=clock)
    slow = let_through(breaker)
    fail(breaker, 2)
    clock.now += 30
    probe = let_through(breaker)
    breaker.record_success(slow)  # answered before the opening, reported after it
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() is None
    breaker.record_failure(probe)  # the probe decides: open again
    assert breaker.state is BreakerState.OPEN


def test_bucket_allows_burst_then_tells_the_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.try_acquire() for _ in range(3)] == [0, 0, 0]
    assert bucket.try_acquire() == pytest.approx(0.5)
    clock.now += 0.25
    assert bucket.try_acquire() == pytest.approx(0.25)
    clock.now += 0.25
    assert bucket.try_acquire() == 0
    clock.now += 100
    assert [bucket.try_acquire() for _ in range(4)][-1] > 0  # never more than the burst


async def test_bucket_acquire_waits_in_turn() -> None:
    clock = FakeClock()
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    bucket = TokenBucket(rate=10, burst=1, clock=clock, sleep=record_sleep)
    assert await bucket.acquire()
    # Waiters reserve consecutive tokens: the second is served 0.1 s after the first.
    assert await bucket.acquire(max_wait=1)
    assert await bucket.acquire(max_wait=1)
    assert waits == [pytest.approx(0.1), pytest.approx(0.2)]
    assert not await bucket.acquire(max_wait=0.25)  # would be 0.3 s


async def test_bucket_acquire_refuses_past_max_wait_without_taking() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock, sleep=clock.sleep)
    assert bucket.try_acquire() == 0
    assert not await bucket.acquire(max_wait=0.5)
    assert clock.now == 1000.0
    clock.now += 1
    assert bucket.try_acquire() == 0  # the refused call reserved nothing


async def test_bucket_reservations_queue_concurrent_callers() -> None:
    bucket = TokenBucket(rate=1000, burst=1)
    results = await asyncio.gather(*(bucket.acquire(max_wait=1) for _ in range(5)))
    assert results == [True] * 5


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0)
    with pytest.raises(ValueError):
        CircuitBreaker(threshold=0)
    with pytest.raises(ValueError):
        GuardSettings(max_concurrency=0)


def test_registry_reuses_a_guard_until_settings_change() -> None:
    seen: list[tuple[str, BreakerState]] = []
    guards = PartnerGuards(on_breaker_change=lambda pid, state: seen.append((pid, state)))
    settings = GuardSettings(max_concurrency=2, rate_per_second=5, burst=2, breaker_threshold=1)
    guard = guards.get("p1", settings)
    assert (
        guards.get(
            "p1", GuardSettings(max_concurrency=2, rate_per_second=5, burst=2, breaker_threshold=1)
        )
        is guard
    )
    assert guard.limiter is not None and guard.limiter.rate == 5
    fail(guard.breaker)
    assert seen == [("p1", BreakerState.OPEN)]
    assert guards.states() == {"p1": BreakerState.OPEN}

    replaced = guards.get("p1", GuardSettings(max_concurrency=4))
    assert replaced is not guard
    assert replaced.limiter is None
    assert guards.states() == {"p1": BreakerState.CLOSED}
    guards.discard("p1")
    assert guards.states() == {}
