"""A suspended host (a laptop's sleep, a paused or migrated VM): Linux's monotonic clock stands
still through it, CLOCK_BOOTTIME counts it. The gateway's time counts on from its last reading
of the database server's clock; on the monotonic clock it lagged by the pause after a resume,
until the next reading (up to a minute): a lease that ran out meanwhile was taken for ours."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from gateway import clock, write_fence
from gateway.leased_loop import LeaseCheck, LeaseLost
from gateway.services import Services
from gateway.store.idempotency import RETENTION_SECONDS
from gateway.triggers.idempotency import LEASE, IdempotencyGuard
from gateway.triggers.model import HookAnswer

pytestmark = pytest.mark.skipif(
    not hasattr(time, "CLOCK_BOOTTIME"), reason="a clock that counts suspends: Linux's"
)

PAUSE = 90.0  # seconds, three times an Idempotency-Key's or a delivery's lease


def _resumed(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """This process as it finds itself resumed after a suspend of `seconds`: the clock that
    counts suspends moved on by them, the monotonic clock (the event loop's too) did not."""
    real = time.clock_gettime

    def clock_gettime(clock_id: int) -> float:
        return real(clock_id) + (seconds if clock_id == time.CLOCK_BOOTTIME else 0.0)

    monkeypatch.setattr(time, "clock_gettime", clock_gettime)


async def test_a_request_resumed_past_its_keys_lease_after_a_suspend_tries_no_lost_round_again(
    services: Services, gateway_time: Callable[[datetime], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/reliability.md "A write held up past its time does not land late": a request
    whose process was suspended for 90 s past its Idempotency-Key's 30 s lease, a retry free
    to take the key over meanwhile, writes its old data over nothing newer: its lost round is
    not tried again (`WriteAbandoned`, a 503)."""
    gateway_time(clock.utcnow())  # a reading now (as it was after the test)
    guard = IdempotencyGuard(services.store)
    trigger: Any = SimpleNamespace(tenant="acme", id="t1")

    async def call() -> HookAnswer:
        _resumed(monkeypatch, PAUSE)
        await write_fence.check()  # a round lost to a concurrent write, about to be tried again
        return HookAnswer(201, b"{}")

    with pytest.raises(write_fence.WriteAbandoned):
        await guard.run(trigger, "k1", "h", call)
    assert LEASE.total_seconds() < PAUSE


async def test_a_delivery_whose_lease_ran_out_during_a_suspend_is_not_taken_for_ours(
    gateway_time: Callable[[datetime], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`LeaseCheck.still_ours`, before a delivery's request goes out: claimed with a 30 s
    lease, suspended 90 s, resumed; another worker took the delivery over meanwhile. The
    lease is asked about (its renewal refused: `LeaseLost`), not "ours without asking" with
    30 s still left by the gateway's time, the request sent a second time."""
    gateway_time(clock.utcnow())
    asked: list[Any] = []

    async def renew(unit: Any, token: str, until: datetime) -> bool:
        asked.append(unit)
        return False  # another worker holds the lease now

    lease = timedelta(seconds=30)
    check = LeaseCheck(lease, clock.utcnow, renew)
    check.claimed("d1", clock.utcnow() + lease)
    _resumed(monkeypatch, PAUSE)

    with pytest.raises(LeaseLost):
        await check.still_ours("d1", "claim-1")
    assert asked == ["d1"]


async def test_a_reading_after_a_suspend_holds_no_expiry_back(
    services: Services,
    gateway_time: Callable[[datetime], None],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The expiry holds its passes back when the gateway's time runs ahead of what its own
    clock counted since the last pass (a step of the server's clock): it counts on the clock
    the gateway's time counts on, so a suspend, which the server's clock counted too, is no
    step. On the monotonic clock the first reading after a suspend of 90 s was taken for a
    step of 90 s: what expired then was kept, and every pass after held 90 s back."""
    store = services.store
    before = clock.utcnow()
    gateway_time(before)
    await store.expiry.expire()  # a pass before the suspend
    ran_out = before - timedelta(seconds=RETENTION_SECONDS - 60)  # a minute into the suspend
    await store.db["idempotency"].insert_one({"_id": "r", "created_at": ran_out})
    _resumed(monkeypatch, PAUSE)
    gateway_time(before + timedelta(seconds=PAUSE))  # the next reading, the suspend counted

    with caplog.at_level("WARNING", "gateway.store.expiry"):
        expired = await store.expiry.expire()
    assert store.expiry.by_gateway
    assert (expired, caplog.text) == (1, "")
