"""Pure delivery arithmetic: when to try again, and what a partner's answer means."""

from __future__ import annotations

import enum
import math
import random
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal

# Delay before attempt n+1, in seconds, for n attempts already made: the first attempt is
# immediate, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h. Eight attempts in all, ~27.5 h.
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_JITTER = 0.2
# Retry-After is clamped so a hostile or confused partner can't park a delivery for a week:
# past this we fall back to our own schedule (and, at worst, to `dead` and a manual replay).
DEFAULT_MAX_RETRY_AFTER = 3600.0

ErrorKind = Literal[
    "timeout",  # no answer within the partner's timeout (connect or total)
    "connect",  # DNS failure, refused, unreachable
    "reset",  # the connection dropped mid-request or mid-response
    "blocked",  # refused by the SSRF guard or an unusable URL: never sent
    "too_large",  # the answer's body passed our read cap (status still known)
    "invalid_response",  # not HTTP, or a JSON body that does not parse (status may be known)
    "auth_failed",  # the partner's OAuth2 token endpoint did not give us a token
    "rate_limited",  # our own per-partner rate/concurrency limit: never sent
    "circuit_open",  # the partner's circuit breaker is open: never sent
]

# Error kinds for which no request reached the partner.
NOT_SENT: frozenset[ErrorKind] = frozenset({"blocked", "rate_limited", "circuit_open"})


class Verdict(enum.StrEnum):
    SUCCESS = "success"  # 2xx
    RETRY = "retry"  # worth another attempt later
    FAIL = "fail"  # the partner refused this request; retrying will not help
    GONE = "gone"  # 410: the partner wants no more of these; disable the subscription


class DeliveryStatus(enum.StrEnum):
    """A delivery's persisted status (SPEC §2): pending → in_flight → a final status, or back
    to pending for a retry. `failed` and `dead` can be replayed."""

    PENDING = "pending"  # waiting for next_attempt_at
    IN_FLIGHT = "in_flight"  # claimed by a worker under a lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # refused by the partner (4xx), or impossible to send
    DEAD = "dead"  # the retry schedule is exhausted

    @property
    def final(self) -> bool:
        return self not in (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT)


_RETRY_STATUSES = frozenset({408, 425, 429})


def classify(status: int | None, error: ErrorKind | None) -> Verdict:
    """What a send outcome means for the delivery.

    When the partner answered with a status, the status decides, even if its body was then
    too large, cut short or not JSON: the partner did say whether it took the request.
    Without a status, everything is transient except a URL the SSRF guard refuses.
    """
    if status is None:
        return Verdict.FAIL if error == "blocked" else Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.SUCCESS
    if status == 410:
        return Verdict.GONE
    if status in _RETRY_STATUSES or status >= 500:
        return Verdict.RETRY
    # 1xx/3xx (redirects are not followed, see ssrf.py) and the other 4xx.
    return Verdict.FAIL


def next_attempt_at(
    attempts: int,
    schedule: Sequence[float],
    now: datetime,
    *,
    retry_after: float | None = None,
    rng: Callable[[], float] = random.random,
    jitter: float = DEFAULT_JITTER,
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
) -> datetime | None:
    """When to make attempt `attempts + 1`, or None once the schedule is exhausted (→ dead).

    The scheduled delay gets ±`jitter` (a fraction) so a partner's recovery is not met by
    every delivery at once. A `Retry-After` is a floor, never a shortcut: we wait
    max(scheduled, min(retry_after, max_retry_after)), so `Retry-After: 0` cannot make us
    hammer a partner and `Retry-After: 604800` cannot stall a delivery past the cap.
    """
    if attempts < 0:
        raise ValueError(f"attempts must be >= 0, got {attempts}")
    if attempts >= len(schedule):
        return None
    delay = float(schedule[attempts]) * (1.0 + jitter * (2.0 * rng() - 1.0))
    if retry_after is not None and math.isfinite(retry_after):
        delay = max(delay, min(max(retry_after, 0.0), max_retry_after))
    return now + timedelta(seconds=max(delay, 0.0))


_DELTA_SECONDS = re.compile(r"[0-9]{1,10}")


def parse_retry_after(header: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or HTTP-date); None if unusable.

    `now` must be timezone-aware. A date in the past means "now" (0 seconds).
    """
    if header is None:
        return None
    value = header.strip()
    # Digits only, bounded: int() of a 5,000-digit string raises, and 10 digits is 300 years.
    if _DELTA_SECONDS.fullmatch(value):
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses as naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)
