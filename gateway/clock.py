"""The wall clock, in UTC: what every component that stamps or schedules takes as its default
`clock` (tests pass their own)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
