"""Pure delivery arithmetic: when to try again. The schedule is the action's (its default is
`DEFAULT_SCHEDULE` in `actions/catalog.py`): the delays of the retries, the first attempt
being made at once (SPEC §5: "immediately, then 5 s, 5 min, ..." are the retries); what an
answer means is `outbound/verdict.py`."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

DEFAULT_JITTER = 0.2
# Retry-After is clamped so a hostile or confused partner can't park a delivery for a week:
# past this we fall back to our own schedule (and, at worst, to `dead` and a manual replay).
DEFAULT_MAX_RETRY_AFTER = 3600.0


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
    """When to make attempt `attempts + 1`, `attempts` (at least 1) having failed: retry
    number `attempts` waits `schedule[attempts - 1]`. None once the schedule is exhausted
    (→ dead): a schedule of n delays gives n + 1 attempts.

    The scheduled delay gets ±`jitter` (a fraction) so a partner's recovery is not met by
    every delivery at once. A `Retry-After` is a floor, never a shortcut: we wait
    max(scheduled, min(retry_after, max_retry_after)), so `Retry-After: 0` cannot make us
    hammer a partner and `Retry-After: 604800` cannot stall a delivery past the cap.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1 (the first is made at once), got {attempts}")
    if attempts > len(schedule):
        return None
    delay = float(schedule[attempts - 1]) * (1.0 + jitter * (2.0 * rng() - 1.0))
    if retry_after is not None and math.isfinite(retry_after):
        delay = max(delay, min(max(retry_after, 0.0), max_retry_after))
    return now + timedelta(seconds=max(delay, 0.0))
