"""The wall clock, in UTC: what every component that stamps or schedules takes as its default
`clock` (tests pass their own); and time zones by the names admins and partners give."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

_MAX_ZONE_NAME = 64  # the longest IANA name is 32 characters


def utcnow() -> datetime:
    return datetime.now(UTC)


def zone_named(name: object) -> ZoneInfo | None:
    """The IANA time zone called `name`, or None for anything else. ZoneInfo reads the name as
    a file path: besides ZoneInfoNotFoundError and ValueError, a directory ("America") or a
    name too long for the file system raises OSError, which is just as much "no such zone"."""
    if not isinstance(name, str) or not name or len(name) > _MAX_ZONE_NAME:
        return None
    try:
        return ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, ValueError, IsADirectoryError, OSError
        return None
