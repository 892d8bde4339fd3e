import asyncio

import pytest

from gateway.outbound.breaker import (
    BreakerState,
    CircuitBreaker,
    GuardSettings,
    PartnerGuards,
    TokenBucket,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def open_breaker(clock: FakeClock, changes: list[BreakerState] | None = None) -> CircuitBreaker:
    breaker = CircuitBreaker(
        threshold=3,
        cooldown=30,
        clock=clock,
        on_change=(changes.append if changes is not None else None),
    )
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    return breaker


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=30, clock=FakeClock())
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()  # resets the streak
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_open_breaker_lets_one_probe_through_after_cooldown() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock)
    clock.now += 29.9
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # one probe at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() and breaker.allow()


def test_failed_probe_reopens_for_another_cooldown() -> None:
    clock = FakeClock()
    changes: list[BreakerState] = []
    breaker = open_breaker(clock, changes)
    clock.now += 30
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_in() == 30
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN]


def test_released_probe_frees_the_slot() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock)
    clock.now += 30
    assert breaker.allow()
    breaker.release()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()


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
    guard.breaker.record_failure()
    assert seen == [("p1", BreakerState.OPEN)]
    assert guards.states() == {"p1": BreakerState.OPEN}

    replaced = guards.get("p1", GuardSettings(max_concurrency=4))
    assert replaced is not guard
    assert replaced.limiter is None
    assert guards.states() == {"p1": BreakerState.CLOSED}
    guards.discard("p1")
    assert guards.states() == {}
