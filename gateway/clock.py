"""The wall clock, in UTC: what every component that stamps or schedules takes as its default
`clock` (tests pass their own); and time zones by the names admins and partners give.

The gateway's time is the database server's: each process reads the server's clock
(`gateway/server_clock.py`, `measured`) and between two readings counts on from the last one on
this host's clock that counts a suspend too (`ticks`, `utcnow`), so processes on hosts whose
clocks disagree compare leases and due times on one clock (a host ahead took over the leases
the others still held), and stamp on it what they store, send or measure as a lag between
processes (a host behind stamped its events in the past, and the relay counted its skew as
lag). A step of the host's wall clock (NTP, a
hand correction, an RTC kept in local time) never reaches that time: it went straight into the
stamps and cutoffs until the next reading (a host stepped forward expired every stored position
through the gateway's own TTL expiry, one stepped back rejected live fixes as `future`). Before a
first reading, the host's clock is all there is. `host_now`, the host's own clock, is only what
the offset is measured against; a duration within one process takes `time.monotonic`.

`ticks` is Linux's CLOCK_BOOTTIME, which counts on through a suspend of the host or a paused VM,
where CLOCK_MONOTONIC (`time.monotonic`) stands still: counted on the monotonic clock, the
gateway's time lagged by the pause after a resume until the next reading (up to a minute), and a
lease that ran out meanwhile was taken for ours (a delivery sent again after another worker took
it over, a lost round of a request past its Idempotency-Key's lease written over a newer one).
Where there is no such clock, `ticks` is the monotonic clock.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo

_MAX_ZONE_NAME = 64  # the longest IANA name is 32 characters
# Files of the zoneinfo directory that ZoneInfo opens but that are no IANA zone: the host's
# own zone (`localtime`: a schedule would run at another hour on each host), a build's
# template (`posixrules`), "no zone configured" (`Factory`), and the copies of every zone
# under `posix/` and `right/` (the latter counting leap seconds: times 27 s off).
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_NOT_ZONE_DIRECTORIES = ("posix/", "right/")


_BOOTTIME: Final = getattr(time, "CLOCK_BOOTTIME", None)

_offset = timedelta()  # the database server's clock minus this host's, as last measured
# (the server's time at the last reading, `ticks()` then); None: no reading yet
_reading: tuple[datetime, float] | None = None


def host_now() -> datetime:
    """This host's clock, in UTC."""
    return datetime.now(UTC)


def ticks() -> float:
    """Seconds on this host's clock that counts on through a suspend (CLOCK_BOOTTIME; the
    monotonic clock where there is none), from an unspecified start: what the gateway's time
    counts on between two readings of the server's clock."""
    if _BOOTTIME is None:
        return time.monotonic()
    return time.clock_gettime(_BOOTTIME)


def utcnow() -> datetime:
    """The gateway's time: the database server's clock as last read, counted on since on
    `ticks` (this host's clock before a first reading)."""
    return at_ticks(ticks())


def at_ticks(moment: float) -> datetime:
    """The gateway's time when `ticks()` read `moment` (this host's clock now before a first
    reading)."""
    if _reading is None:
        return host_now()
    server, at = _reading
    return server + timedelta(seconds=moment - at)


def utc_timestamp() -> float:
    """The gateway's time (`utcnow`) in seconds since 1970, for what counts time in seconds
    (tokens, signatures)."""
    return utcnow().timestamp()


def measured(server: datetime, at: float, offset: timedelta) -> None:
    """The database server's clock read `server` at `ticks()` `at`, `offset` ahead of this
    host's (negative: behind): the gateway's time from now on. One `STEP_BACK` or more behind
    what this process counted is a step back (`steps_back`)."""
    global _offset, _reading, _steps_back, _stepped_back_at
    if _reading is not None and server < at_ticks(at) - STEP_BACK:
        _steps_back += 1
        _stepped_back_at = server
    _offset = offset
    _reading = (server, at)


class _Ordered(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


K = TypeVar("K")
V = TypeVar("V", bound=_Ordered)
STEP_BACK: Final = timedelta(seconds=1)
"""A reading of the server's clock this far behind what the process counted (or more) is a
step back; less is the drift a reading corrects every minute."""
_steps_back = 0
_stepped_back_at: datetime | None = None


def steps_back() -> int:
    """How many times this process's time went back (`STEP_BACK` or more): what an ordering
    floor (`Floors`) is forgotten by."""
    return _steps_back


def stepped_back_at() -> datetime | None:
    """The gateway's time just after it last went back (None: it never did): what a wait set
    before is waited from again (`ScheduleStore.rebase`)."""
    return _stepped_back_at


class StepWatch:
    """Whether the gateway's time went back since a loop's last look, for what it set on the
    time as it was (a delivery's retry, a schedule's next run: their `rebase`). `went_back`
    at each look: None when it did not (a second or more, or `steps_back` moved; the first
    look only notes the time: a step made while no loop ran is not seen), else the time the
    waits count from again (the step's, when this process saw it; else `now`). `rebased`
    once that is done: a rebase that failed is found again at the next look."""

    def __init__(self) -> None:
        self.latest: datetime | None = None  # the latest time a look was made at
        self._steps = steps_back()  # the gateway's steps back seen at the last rebase
        self._looked: tuple[datetime, int] | None = None  # the step being rebased

    def went_back(self, now: datetime) -> datetime | None:
        latest, steps = self.latest, steps_back()
        if latest is None or (now >= latest - STEP_BACK and steps == self._steps):
            self.latest, self._steps = now if latest is None else max(latest, now), steps
            return None
        self._looked = (now, steps)
        stepped = stepped_back_at()
        if steps != self._steps and stepped is not None and stepped <= now:
            return stepped
        return now

    def rebased(self) -> None:
        if self._looked is not None:
            self.latest, self._steps = self._looked
            self._looked = None


class Floors(Generic[K, V]):
    """Per key, the latest value an ordering stamp gave, that the next one must sort above:
    an event's `relayed_at` per tenant (the feed's `after=` reads on from the last one), a
    rejected payload's id per trigger (the newest are kept). The gateway's time goes back
    when the clock that ran fast is set right, and a stamp taken on it then sorts before the
    ones given on the fast clock: the feed skipped such events, the trim dropped such
    payloads at once. Only the stamps are held above their floor, never the gateway's time
    itself (schedules, retries and leases follow it: held, they would stop for as long).

    A key not known (`known` False) is read from the database by the caller: what was stored
    above the time now, by this process before the step or by another. That is at a key's
    first stamp in this process, and again after its time went back (`steps_back`), which
    forgets every floor; otherwise a stamp costs no read. Bounded: past `limit` keys the
    floors are forgotten and read again."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._values: dict[K, V | None] = {}
        self._steps = steps_back()

    def known(self, key: K) -> bool:
        if self._steps != steps_back():
            self._values.clear()
            self._steps = steps_back()
        return key in self._values

    def get(self, key: K) -> V | None:
        """The floor of a `known` key (None: nothing to stay above)."""
        return self._values.get(key)

    def note(self, key: K, value: V | None) -> None:
        """`key`'s floor is `value` now, unless it is higher already: a floor only rises until
        the time goes back. A caller notes what it read from the database after an await, and
        meanwhile another stamp of the key (a first use too) may have noted a higher one: noted
        as read, the floor went back below the stamps given, and the next stamp sorted with or
        below them (read50 L3)."""
        if key not in self._values and len(self._values) >= self._limit:
            self._values.clear()
        last = self._values.get(key)
        if last is None or (value is not None and last < value):
            self._values[key] = value


def offset() -> timedelta:
    return _offset


def as_stored(moment: datetime) -> datetime:
    """`moment` as the database keeps a time: to the millisecond (BSON dates hold no more).
    A write that answers with, or keys by, the time it stores takes it so: then its answer
    is what a read gives."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """`moment` in whole milliseconds since 1970 (floored, as the database keeps a time), in
    integer arithmetic: exact for every year 1..9999, where `timestamp() * 1000`, a float,
    is off by a microsecond past 2242 (and a cursor or an id made of it no longer reads back
    the same instant)."""
    return (moment - EPOCH) // _MS


def from_epoch_ms(ms: int) -> datetime:
    """The instant `ms` milliseconds after 1970 (before, negative), exactly (see `epoch_ms`);
    OverflowError outside the years 1..9999."""
    return EPOCH + ms * _MS


def zone_named(name: object) -> ZoneInfo | None:
    """The IANA time zone called `name`, or None for anything else. ZoneInfo reads the name as
    a file path: besides ZoneInfoNotFoundError and ValueError, a directory ("America") or a
    name too long for the file system raises OSError, which is just as much "no such zone"."""
    if not isinstance(name, str) or not name or len(name) > _MAX_ZONE_NAME:
        return None
    if name in _NOT_ZONES or name.startswith(_NOT_ZONE_DIRECTORIES):
        return None
    try:
        return ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, ValueError, IsADirectoryError, OSError
        return None


# A `+` sent unencoded in a URL's query is a space once decoded (form encoding):
# `?from=2026-12-01T10:00:00+05:45` arrives as "2026-12-01T10:00:00 05:45".
_PLUS_DECODED = re.compile(r"(?<=\d) (\d\d:\d\d)$")


def query_time(text: str) -> str:
    """A time as a URL's query gave it, with the `+` of its offset back: a space before an
    offset at the end of a date-time (never valid there) is that `+`."""
    return _PLUS_DECODED.sub(r"+\1", text)


# RFC 3339 §5.6 lets the seconds be 60 (a leap second); Python's datetime refuses them.
_LEAP = re.compile(r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:)60(?:[.,]\d{1,9})?(.*)")


def from_iso(text: str) -> datetime:
    """`datetime.fromisoformat`, and a leap second too: `23:59:60Z` (RFC 3339) is read as the
    last microsecond before the next minute, `23:59:59.999999`: the date it names, and in
    order with the times around it. Second 60 is a leap second only in the last minute of a
    UTC day (`20:59:60-03:00`, `05:44:60+05:45`; without an offset, whose zone is unknown
    here, the minute 59 of any hour); elsewhere, like any text that is not ISO 8601:
    ValueError. So is a text with a NUL, which CPython's reader skips where it falls between
    the time and its offset (`12:00:00<NUL>Z` read as `12:00:00Z`). RFC 3339's lower-case
    `t` and `z` (`2026-12-05t10:00:00z`), which Python's reader refuses, are read too."""
    if "\x00" in text:
        raise ValueError(f"{text!r} holds a NUL character")
    text = text.upper() if "t" in text or "z" in text else text
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        leap = _LEAP.fullmatch(text)
        if leap is None:
            raise
    moment = datetime.fromisoformat(f"{leap[1]}59.999999{leap[2]}")
    if not may_leap(moment):
        raise ValueError(f"second 60 of {text!r} is no leap second")
    return moment


# RFC 3339 §5.6's `date-time`, with the lower-case "t" and "z" and the space for the "T" it
# allows. `from_iso` reads ISO 8601 more widely (the basic format, week dates, a time without
# seconds, a comma before the fraction, an offset without minutes or with seconds): none of
# that is RFC 3339, and a seconds field dropped by a typo would be stored at another meaning.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def from_rfc3339(text: str) -> datetime:
    """An RFC 3339 date-time, its offset required, as `from_iso` reads it (a leap second
    too); ValueError for any other text, ISO 8601's other forms included. What the API
    documents as RFC 3339 reads it so; what takes ISO 8601 on purpose (a mapping's `iso8601`,
    a signature's timestamp, a time typed in the admin UI) keeps `from_iso`."""
    if _RFC3339.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not an RFC 3339 date-time with an offset")
    return from_iso(text)


def names_leap_second(text: str) -> bool:
    """Whether `text`, an ISO 8601 time `from_iso` read, gave second 60: a reader that
    places a time without an offset in a zone checks the instant with `may_leap` then."""
    return _LEAP.fullmatch(text.upper()) is not None


def may_leap(moment: datetime) -> bool:
    """Whether `moment` is in the last minute of a UTC day, where leap seconds are inserted;
    without an offset (its zone unknown here), in the last minute of an hour (a reader that
    knows the zone checks the instant again: `names_leap_second`)."""
    offset = moment.utcoffset()
    if offset is None:
        return moment.minute == 59
    minutes = moment.hour * 60 + moment.minute - offset // timedelta(minutes=1)
    return minutes % 1440 == 1439
