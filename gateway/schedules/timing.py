"""When a schedule runs: an interval ("30s", "5m", "1h", "1d") or a 5-field cron expression in
a time zone, and how long it waits after failures. Pure: no I/O, the clock is an argument.

Cron expressions are read by `cronsim` (Healthchecks' cron evaluator: standard 5 fields,
names, ranges, steps, `L`, `#`, and daylight-saving transitions handled like cron does).
A tenant's schedules run in `America/Sao_Paulo` unless a schedule names another zone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Final
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from gateway.clock import zone_named

DEFAULT_TIMEZONE: Final = "America/Sao_Paulo"
MIN_INTERVAL_SECONDS: Final = 5  # Samsara asks for at least 5 s between feed calls
MAX_INTERVAL_SECONDS: Final = 7 * 86400
_INTERVAL = re.compile(r"^([1-9][0-9]{0,6})(s|m|h|d)$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Waits after 1, 2, 3, ... failures in a row (then the last one), with ±20% jitter.
BACKOFF_SECONDS: Final = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
MAX_RETRY_AFTER_SECONDS: Final = 3600.0
# A repeated wall-clock period is at most two hours long (Antarctica/Troll falls back 2 h):
# it can hold at most one cron answer a minute of it, all at or before the instant asked from.
_CRON_STEPS: Final = 2 * 60 + 1


@dataclass(frozen=True, slots=True)
class Every:
    """A parsed `every`: `seconds` for an interval, else `cron` in `timezone`. An interval
    keeps the zone it was given (None: none), which changes none of its runs: a later change
    to a cron expression reads that in it."""

    text: str
    seconds: int | None = None
    cron: str | None = None
    timezone: str | None = DEFAULT_TIMEZONE

    def next_after(self, now: datetime) -> datetime:
        """The first run time strictly after `now` (an aware datetime)."""
        if self.seconds is not None:
            return now + timedelta(seconds=self.seconds)
        assert self.cron is not None
        zone = ZoneInfo(self.timezone or DEFAULT_TIMEZONE)
        local = now.astimezone(zone).replace(microsecond=0)
        runs = CronSim(self.cron, local)
        # A fixed-time expression is walked in wall time and answered as the first pass of a
        # repeated hour (fold=0): from the second pass of the fall-back hour its next 01:30 is
        # the first pass's, already gone. Cron runs such a time once, so step on to the next
        # (`0-59 1 * * *` has up to 60 such gone answers in New York's repeated hour).
        for _ in range(_CRON_STEPS):
            run = next(runs)
            if run.astimezone(UTC) > now.astimezone(UTC):
                return run.astimezone(now.tzinfo)
        # Not reached for any zone known; never fail a run's release on it: read the
        # expression at the instant's own offset (no repeated hour), strictly after it.
        fixed = timezone(local.utcoffset() or timedelta(0))
        return next(CronSim(self.cron, now.astimezone(fixed).replace(microsecond=0))).astimezone(
            now.tzinfo
        )

    def as_doc(self) -> dict[str, object]:
        if self.seconds is not None:
            zone = {} if self.timezone is None else {"timezone": self.timezone}
            return {"text": self.text, "seconds": self.seconds, **zone}
        return {"text": self.text, "cron": self.cron, "timezone": self.timezone}


def parse_every(text: str, timezone: str | None = None) -> Every:
    """`30s`, `5m`, `1h`, `1d`, or a 5-field cron expression, and the zone (an interval's
    kept as given, checked like a cron expression's); ValueError says what is wrong."""
    text = text.strip()
    zone = timezone or DEFAULT_TIMEZONE
    tz = zone_named(zone)
    if tz is None:
        raise ValueError(f"unknown time zone {zone[:64]!r}")
    if match := _INTERVAL.match(text):
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS:
            raise ValueError(f"an interval is from {MIN_INTERVAL_SECONDS}s to 7d, got {text!r}")
        return Every(text, seconds=seconds, timezone=timezone or None)
    if len(text.split()) != 5:
        raise ValueError(
            f"every is an interval (30s, 5m, 1h, 1d) or a cron expression of 5 fields, got {text!r}"
        )
    try:
        next(CronSim(text, datetime(2026, 1, 1, tzinfo=tz)))
    except (CronSimError, StopIteration) as exc:
        raise ValueError(f"cron expression {text!r}: {exc or 'never runs'}") from None
    return Every(text, cron=text, timezone=zone)


def every_from_doc(doc: dict[str, object]) -> Every:
    seconds = doc.get("seconds")
    if isinstance(seconds, int):
        zone = doc.get("timezone")
        return Every(
            str(doc["text"]), seconds=seconds, timezone=None if zone is None else str(zone)
        )
    return Every(str(doc["text"]), cron=str(doc["cron"]), timezone=str(doc["timezone"]))


def backoff_seconds(failures: int, retry_after: float | None, rng: Callable[[], float]) -> float:
    """The wait after the `failures`-th failure in a row; a partner's Retry-After is honoured
    (up to an hour, so a hostile answer cannot park a schedule for a week)."""
    base = BACKOFF_SECONDS[min(max(failures, 1), len(BACKOFF_SECONDS)) - 1]
    wait = base * (0.8 + 0.4 * rng())
    if retry_after is not None:
        wait = max(wait, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return wait
