"""Deliveries that are not partner HTTP calls (notifications) send themselves: the worker
claims them like any delivery, hands each to the sender registered for its `kind`, and records
what that sender answers. Pure types; the senders live with what they send (`notify/`).

    Attempted  something was tried: a verdict (success, retry, fail), recorded as an attempt;
               a retry follows `schedule` (and `retry_after`), like a webhook's
    Held       not now (quiet hours, a disabled partner): pending again at `until`, no
               attempt spent
    Dropped    never: final status `suppressed` (a cooldown, quiet hours that suppress)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.outbound.sender import BeforeSending
from gateway.outbound.verdict import Verdict
from gateway.store import Doc


@dataclass(frozen=True, slots=True)
class Attempted:
    verdict: Verdict
    detail: str
    schedule: Sequence[float]
    code: int | None = None  # the HTTP status or SMTP reply code, when there was one
    retry_after: float | None = None
    latency_ms: float = 0.0
    provider_id: str | None = None


@dataclass(frozen=True, slots=True)
class Held:
    until: datetime
    reason: str
    # The disabled partner it waits for: noted on the delivery, due at once when the partner
    # is enabled again (the channel is asked again at each try: it may name another partner).
    partner_id: str | None = None
    # Held by the tenant's quiet hours: noted on the delivery (`held_for`), due at once when
    # the tenant's notification settings are saved, to be judged again under them.
    quiet_hours: bool = False
    # Whether the settings it was judged under are still the tenant's, asked once the hold
    # is written: a save that landed while it was judged (in flight, which that save's
    # release does not touch) makes it due at once instead.
    still_judged: Callable[[], Awaitable[bool]] | None = None


@dataclass(frozen=True, slots=True)
class Dropped:
    reason: str


SendResult = Attempted | Held | Dropped


class KindSender(Protocol):
    """Sends one claimed delivery of its kind; every failure is a result, never an error
    (a StoreUnavailable may escape: the lease then expires and the delivery is retried).
    `before_sending` is awaited right before anything goes out (an HTTP request, an SMTP
    session), after every wait of the send: it raises `leased_loop.LeaseLost` when the
    delivery's lease is another worker's, and that passes to the worker, nothing sent."""

    async def send(self, doc: Doc, now: datetime, before_sending: BeforeSending) -> SendResult: ...
