"""The `datetime` transform: parse ISO 8601, Unix seconds/milliseconds or strptime formats (one,
or several tried in order), and format as ISO 8601 (UTC by default), a date, Unix time or a
strftime format, in any IANA zone."""

from __future__ import annotations

import _strptime as stdlib_strptime  # type: ignore[import-not-found]  # no stub
import math
import re
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

from gateway.clock import EPOCH, from_iso, may_leap, names_leap_second, zone_named
from gateway.formats.json_tree import shown

from .model import EvalError

_OPTIONS = ("parse", "input_tz", "format", "output_tz")
_ZONE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+){0,2}$")
_MAX_TEXT = 64
_MAX_FORMAT = 100
_NAMED_PARSERS = ("auto", "iso8601", "unix", "unix_ms")
_NAMED_FORMATS = ("iso8601", "date", "unix", "unix_ms")
# `output_tz` naming no zone: the offset the time was written with (a notice's own clock).
AS_WRITTEN = "as_written"
_MAX_PARSERS = 8

Parser = Callable[[Any], datetime]
Formatter = Callable[[datetime], Any]


def _fail(value: Any, why: str) -> EvalError:
    return EvalError("datetime", f"cannot read {shown(value)} as a date-time: {why}")


def zone(name: Any) -> tzinfo | None:
    """The zone called `name` ("UTC" or an IANA name such as America/Sao_Paulo), else None."""
    if name == "UTC":
        return UTC
    if not isinstance(name, str) or not _ZONE_RE.match(name):
        return None
    return zone_named(name)


def _from_unix(value: Any, scale: float) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _fail(value, "expected a number of seconds")
    try:
        whole = _whole_number(value)
        if whole is not None:  # exactly (a float's µs are off past 2242): the fix's id
            return EPOCH + whole * (_MILLISECOND if scale == 1000.0 else _SECOND)
        return datetime.fromtimestamp(float(value) / scale, tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        # Epoch milliseconds (Teltonika, AWS IoT) read as seconds land past the year 9999.
        hint = "; milliseconds? parse: unix_ms" if scale == 1.0 and _past_9999(value) else ""
        raise _fail(value, f"{exc}{hint}") from None


def _whole_number(value: Any) -> int | None:
    """An integer, or a text of one (`"1795685112000"`), as an int; else None."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER_RE.fullmatch(value):
        return int(value)
    return None


_INTEGER_RE = re.compile(r"[+-]?[0-9]{1,20}")
_SECOND, _MILLISECOND = timedelta(seconds=1), timedelta(milliseconds=1)


def _past_9999(value: Any) -> bool:
    try:
        return 253402300800 <= float(value) < 253402300800000  # 10000-01-01 in s and in ms
    except (ValueError, OverflowError):
        return False


def _from_iso(value: Any, naive: tzinfo) -> datetime:
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise _fail(value, "expected an ISO 8601 string")
    # RFC 3339 §5.6 lets "T" and "Z" be lower case (as a canonical fix's time may be).
    text = value.strip().upper()
    try:
        parsed = from_iso(text)
    except ValueError:
        # A `+hh:mm` offset sent unescaped in a query string arrives as ` hh:mm` (`+` is a
        # space there): the offset it was, not a refused time.
        if (plus := _PLUS_AS_SPACE.fullmatch(text)) is None:
            raise _fail(value, "not ISO 8601") from None
        try:
            parsed = from_iso(f"{plus[1]}+{plus[2]}")
        except ValueError:
            raise _fail(value, "not ISO 8601") from None
    if parsed.tzinfo:
        return parsed
    return _leap_checked(value, _local(parsed, naive), names_leap_second(text))


def _leap_checked(value: Any, moment: datetime, leap: bool) -> datetime:
    """`moment`, read from a text that gave second 60 (`leap`) without an offset, once its
    zone placed it: a leap second only in the last minute of a UTC day (23:59:60 in New
    York is 04:59:60Z, where none was ever inserted), else a problem."""
    if leap and not may_leap(moment):
        raise _fail(value, "second 60 is a leap second only in the last minute of a UTC day")
    return moment


def _local(wall: datetime, zone: tzinfo) -> datetime:
    """The instant a wall time without an offset names in `zone` (`input_tz`), in UTC.

    A wall time in the hour skipped when clocks go forward (2018-11-04T00:30 in
    America/Sao_Paulo, whose clocks went from 00:00 to 01:00) never happened: it is read with
    the offset in force before the jump, as a clock not yet moved forward meant it, which
    lands as far past the jump (01:30-02:00, 03:30Z), as most libraries do. A wall time of the
    hour repeated when clocks go back (2019-02-16T23:30 there) is the earlier of the two (with
    the summer offset: 23:30-02:00). Converted to UTC here, so output in the same zone gives
    a wall time that exists (formatting in the zone object it was read in would not convert).
    """
    if zone is UTC:
        return wall.replace(tzinfo=UTC)
    moment = wall.replace(tzinfo=zone)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # Within hours of the ends of time (9999-12-31 23:59:59 in America/Sao_Paulo, an
        # ERP's "valid forever", is 10000-01-01Z): no clock changes there, the wall time is
        # the instant, and output in its own zone prints it; only UTC cannot.
        return moment


_PLUS_AS_SPACE = re.compile(r"(.+[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d(?::?\d\d)?)")


_NUMBER_RE = re.compile(r"\s*-?[0-9]+(?:\.[0-9]*)?\s*")


def _iso_in_utc(value: Any) -> datetime:
    return _from_iso(value, UTC)


_ISO_UTC_PARSE: Parser = _iso_in_utc


def _normalise_iso_utc(value: Any) -> str:
    return iso_utc(_iso_in_utc(value))


def _parser(how: str, naive: tzinfo) -> Parser:
    if how == "unix":
        return lambda v: _from_unix(v, 1.0)
    if how == "unix_ms":
        return lambda v: _from_unix(v, 1000.0)
    if how == "iso8601":
        return _ISO_UTC_PARSE if naive is UTC else (lambda v: _from_iso(v, naive))
    if how == "auto":

        def auto(value: Any) -> datetime:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return _from_unix(value, 1.0)
            if isinstance(value, str) and _NUMBER_RE.fullmatch(value):
                return _from_unix(value, 1.0)
            return _from_iso(value, naive)

        return auto

    return _strptime(how, naive)


def _strptime(how: str, naive: tzinfo) -> Parser:
    """A parser of the strptime format `how` (a time without an offset in `naive`); the digit
    fields of a compact run are read only at their full width (`_compact_runs`), a zone name
    read by `%Z` only when it is UTC (`_named_zone`)."""
    shown, how = how, unicodedata.normalize("NFC", how)  # its words, compared in NFC
    if (why := _repeated_directive(how)) is not None:
        return _refusing(why)  # a version stored before such formats were refused
    runs = _compact_runs(how)
    names_zone = any(m[1] == "Z" for m in _FORMAT_PART.finditer(how))

    def strptime(value: Any) -> datetime:
        if not isinstance(value, str) or len(value) > _MAX_TEXT:
            raise _fail(value, f"expected a string in the format {shown!r}")
        # "às" typed on a Mac (NFD: a + U+0300) is the format's "às"
        text = unicodedata.normalize("NFC", value.strip())
        parsed: datetime | None
        leap = False
        try:
            parsed = datetime.strptime(text, how)
        except ValueError:
            parsed = _leap_second(text, how)
            leap = parsed is not None
        if parsed is None or (runs and not _full_width(runs, text, how, parsed, leap)):
            raise _fail(value, f"does not match {shown!r}")
        if parsed.tzinfo:
            return _leap_checked(value, parsed, leap)
        if names_zone:
            return _leap_checked(value, _named_zone(value, text, how, parsed), leap)
        return _leap_checked(value, _local(parsed, naive), leap)

    return strptime


def _refusing(why: str) -> Parser:
    """A parser of a format strptime cannot read (`why`): every value a `datetime` problem
    (the next format of a list tried), never strptime's `re.error`."""

    def refuse(value: Any) -> datetime:
        raise _fail(value, why)

    return refuse


_UTC_NAMES = frozenset({"UTC", "GMT"})


def _named_zone(value: Any, text: str, how: str, wall: datetime) -> datetime:
    """The instant of `wall`, read by the format `how` whose `%Z` named its zone in `text`.

    strptime's `%Z` takes UTC and GMT (RFC 1123's `Fri, 20 Nov 2026 13:45:22 GMT`, Java's
    `Date.toString()`) and the names of the process's own zone, and drops the name: the time
    would be placed in `input_tz`. UTC and GMT are that instant; a local name (which depends
    on the server's zone, and names no offset by itself) is refused."""
    name = time.strptime(text, how).tm_zone or ""
    if name.upper() not in _UTC_NAMES:
        why = f"%Z reads the zone names UTC and GMT, not {name!r} (%z reads an offset)"
        raise _fail(value, why)
    return wall.replace(tzinfo=UTC)


# Digit fields, at the width they are written: in a compact run (two or more with nothing
# between them: `%Y%m%d`, `%d%m%y`, the `%H%M%S` of `%Y%m%dT%H%M%S%z`) each is read only at
# that width. strptime takes a one-digit day, month or hour anywhere, so "2026128" (a digit
# lost) would be 2026-12-08, "11226" by `%d%m%y` 2026-02-11, and "T93000-0300" 12:30Z. A
# fraction is written with 3 digits (milliseconds) or 6.
_FULL_WIDTH: dict[str, tuple[int, ...]] = {
    **dict.fromkeys("ymdHIMS", (2,)),
    "Y": (4,),
    "j": (3,),
    "f": (6, 3),
}
_FORMAT_PART = re.compile(r"%(.)|(\s+)|(.)", re.DOTALL)


def _compact_runs(how: str) -> list[str] | None:
    """The digit fields of the format's compact runs, in order; None when it has none."""
    parts = [m[1] if m[1] not in (None, "%") else None for m in _FORMAT_PART.finditer(how)]

    def digits(i: int) -> bool:
        return 0 <= i < len(parts) and parts[i] in _FULL_WIDTH

    fields = [
        part
        for i, part in enumerate(parts)
        if part is not None and digits(i) and (digits(i - 1) or digits(i + 1))
    ]
    return fields or None


def _full_width(fields: list[str], text: str, how: str, parsed: datetime, leap: bool) -> bool:
    """Whether strptime read the compact runs' `fields` of `text` at their full width (not a
    shorter field and a digit of the next one), in digits, and `parsed` has each (a format
    naming the hour twice, `%H%I`, or the year, `%Y%y`, reads only one of them).

    The fields are those of strptime's own match, the one it read the value from: its
    pattern has a few alternatives of bounded width per directive and `\\s+` for a blank,
    which no directive but `%d` (" 1") starts with, so matching it costs the text's length
    times a bound of the format. A second pattern that looked for the fields with `.*?` for
    every other directive and `\\s+` for each blank tried every split of the blanks
    ("Mon␣␣␣…1␣␣␣…Jan…930", 62 characters: seconds to minutes of the event loop)."""
    found = _strptime_pattern(how).match(text)
    if found is None:  # strptime read it: never
        return False
    for field in fields:
        digits = found[field]
        if len(digits) not in _FULL_WIDTH[field] or not digits.isdecimal():
            return False
        if leap and field in "Sf":
            continue  # second 60, read as the last instant of its minute
        read = int(digits.ljust(6, "0")) if field == "f" else int(digits)
        if read != _FIELD_VALUE[field](parsed):
            return False
    return True


_FIELD_VALUE: dict[str, Callable[[datetime], int]] = {
    "Y": lambda t: t.year,
    "y": lambda t: t.year % 100,
    "m": lambda t: t.month,
    "d": lambda t: t.day,
    "H": lambda t: t.hour,
    "I": lambda t: t.hour % 12 or 12,
    "M": lambda t: t.minute,
    "S": lambda t: t.second,
    "j": lambda t: t.timetuple().tm_yday,
    "f": lambda t: t.microsecond,
}


def _strptime_pattern(how: str) -> re.Pattern[str]:
    """The pattern strptime reads `how`'s values with (compiled once: `re` keeps it)."""
    pattern: re.Pattern[str] = stdlib_strptime._TimeRE_cache.compile(how)
    return pattern


def _leap_second(text: str, how: str) -> datetime | None:
    """`text` in the format `how` whose seconds are 60 (a leap second, which datetime refuses
    and time.strptime reads), as the last microsecond of its minute, like `from_iso`; else
    None."""
    try:
        parts = time.strptime(text, how)
    except ValueError:
        return None
    if parts.tm_sec != 60 or parts.tm_min != 59:
        return None
    offset = parts.tm_gmtoff
    zone = None if offset is None else timezone(timedelta(seconds=offset))
    try:
        return datetime(*parts[:5], 59, 999_999, tzinfo=zone)
    except ValueError:
        return None


_2D = [f"{i:02d}" for i in range(100)]


def _in_zone(moment: datetime, out: tzinfo | None) -> datetime:
    """`moment` in the zone `out` (None: as written, in its own offset); a `datetime` problem
    when that is before the year 1 or past 9999 (9999-12-31T23:00-03:00 in UTC), not an
    overflow that refuses the payload."""
    if out is None or moment.tzinfo is out:
        return moment
    try:
        return moment.astimezone(out)
    except OverflowError:
        pass
    # astimezone goes through UTC, which may overflow though the wall time in `out` does not
    # (9999-12-31T23:59-03:00 in America/Sao_Paulo): convert a day nearer and step back.
    day = timedelta(days=1) if moment.year > 1 else -timedelta(days=1)
    try:
        return (moment - day).astimezone(out) + day
    except OverflowError:
        pass
    edge = "past the year 9999" if moment.year > 1 else "before the year 1"
    shown = iso_utc(moment) if moment.tzinfo is UTC else moment.isoformat()
    raise EvalError("datetime", f"{shown} is {edge} in {getattr(out, 'key', out)}") from None


def iso_utc(moment: datetime) -> str:
    # Hand-built: datetime.isoformat() costs three times as much, and this is the hot default.
    m = moment if moment.tzinfo is UTC else _in_zone(moment, UTC)
    year = str(m.year) if m.year >= 1000 else f"{m.year:04d}"
    text = f"{year}-{_2D[m.month]}-{_2D[m.day]}T{_2D[m.hour]}:{_2D[m.minute]}:{_2D[m.second]}"
    return f"{text}.{m.microsecond // 1000:03d}Z" if m.microsecond else text + "Z"


def _iso(out: tzinfo | None) -> Formatter:
    if out is UTC:
        return iso_utc

    def iso(moment: datetime) -> str:
        if out is None and moment.tzinfo is UTC:  # as written, in UTC: as UTC is written
            return iso_utc(moment)
        local = _in_zone(moment, out)
        return local.isoformat(timespec="milliseconds" if local.microsecond else "seconds")

    return iso


def _formatter(how: str, out: tzinfo | None) -> Formatter:
    if how == "iso8601":
        return _iso(out)
    if how == "date":
        return lambda moment: _in_zone(moment, out).date().isoformat()
    if how == "unix":
        return lambda moment: _whole(moment.timestamp())
    if how == "unix_ms":
        return lambda moment: round(moment.timestamp() * 1000)
    if not any(m[0] != "%%" for m in _EPOCH_SECONDS.finditer(how)):
        return lambda moment: _in_zone(moment, out).strftime(how)
    zoned = "%" in _EPOCH_SECONDS.sub("", how)  # a directive other than %s and %%

    def strftime(moment: datetime) -> str:
        # %s is Unix time, whatever the zone: strftime would read the wall time in the
        # process's own zone, an offset off in another (and off by the process's zone in UTC).
        seconds = str(math.floor(moment.timestamp()))
        own = _EPOCH_SECONDS.sub(lambda m: _epoch_seconds(seconds, m), how)
        if not zoned:  # nothing needs the wall time: none at the ends of time either
            return own.replace("%%", "%")
        return _in_zone(moment, out).strftime(own)

    return strftime


_EPOCH_SECONDS = re.compile(r"%(?:%|([-_0^#]*)([0-9]*)[EO]?s)")
"""`%s` in a strftime format, with glibc's flags, a width and an E or O modifier (`%-s`,
`%10s`, `%_s`, `%010s`, `%Os`, `%_10Es`: glibc writes Unix time for each), and `%%` (a
literal percent sign, kept as it is: `%%s` is the text "%s")."""
_MAX_EPOCH_WIDTH = 32


def _epoch_seconds(seconds: str, directive: re.Match[str]) -> str:
    """What glibc writes for the %s `directive` (its flags and width) given Unix `seconds`:
    padded on the left to the width, with spaces unless the last of the flags `_ - 0` is `0`
    (then zeros, written before a minus sign, as glibc does)."""
    if directive[0] == "%%":
        return "%%"
    flags, width = directive[1], int(directive[2] or 0)
    pads = [flag for flag in flags if flag in "_-0"]
    return seconds.rjust(width, "0" if pads and pads[-1] == "0" else " ")


def _whole(seconds: float) -> int | float:
    return int(seconds) if seconds.is_integer() else seconds


def compile_datetime(
    arg: Any, report: Callable[..., None], *, strict: bool = True
) -> Callable[[Any], Any] | None:
    """The `datetime` transform `arg` compiled, else None after reporting why. A parse format
    no value can match (`%s`) is refused in a new text (`strict`); a stored version keeps it,
    refusing the values it is given, as when it was stored."""
    if not isinstance(arg, dict):
        report("datetime takes {parse, input_tz, format, output_tz}")
        return None
    ok = True
    for key in arg:
        if key not in _OPTIONS:
            report(f"unknown datetime option {key!r}; known: {', '.join(_OPTIONS)}", key)
            ok = False
    parse, fmt = arg.get("parse", "auto"), arg.get("format", "iso8601")
    parses = parse if isinstance(parse, list) else [parse]
    for why in _parse_problems(parses, strict):
        report(why, "parse")
        ok = False
    if not _valid_pattern(fmt, _NAMED_FORMATS):
        report(f"format is one of {', '.join(_NAMED_FORMATS)} or a strftime format", "format")
        ok = False
    elif any(int(m[2] or 0) > _MAX_EPOCH_WIDTH for m in _EPOCH_SECONDS.finditer(fmt)):
        report(f"%s takes a width of at most {_MAX_EPOCH_WIDTH}", "format")
        ok = False
    as_written = arg.get("output_tz") == AS_WRITTEN
    naive = _zone_option(arg, "input_tz", report)
    out = UTC if as_written else _zone_option(arg, "output_tz", report)
    if not ok or naive is None or out is None:
        return None
    parse_one = _first_of([_parser(p, naive) for p in parses], parses)
    if as_written:
        format_own = _formatter(fmt, None)
        return lambda value: format_own(_as_written(parse_one(value), naive))
    format_one = _formatter(fmt, out)
    if parse_one is _ISO_UTC_PARSE and format_one is iso_utc:
        return _normalise_iso_utc
    return lambda value: format_one(parse_one(value))


def _zone_option(arg: dict[str, Any], key: str, report: Callable[..., None]) -> tzinfo | None:
    """The zone `arg[key]` names (default UTC), else None after reporting why."""
    found = zone(arg.get(key, "UTC"))
    if found is None:
        hint = "use UTC or a name like America/Sao_Paulo"
        if key == "output_tz":
            hint += f", or {AS_WRITTEN}: the offset each time is written with"
        report(f"unknown time zone {arg[key]!r} ({hint})", key)
    return found


def _as_written(moment: datetime, naive: tzinfo) -> datetime:
    """`output_tz: as_written`: a time in the offset it was written with; one that says no
    local clock (read without an offset, written in UTC, Unix time: read as UTC) in
    `input_tz`, the zone of the times the partner writes without one."""
    return _in_zone(moment, naive) if moment.utcoffset() == timedelta(0) else moment


def parse_formats(arg: Any) -> int:
    """How many formats a `datetime` argument's `parse` may try: its list's length, one for a
    single format (`auto` too), the most allowed when a param gives it."""
    if isinstance(arg, dict) and set(arg) == {"param"}:  # the whole argument is a param's
        return _MAX_PARSERS
    parse = arg.get("parse", "auto") if isinstance(arg, dict) else "auto"
    if isinstance(parse, str):
        return 1
    if isinstance(parse, list) and all(isinstance(p, str) for p in parse):
        return max(len(parse), 1)
    return _MAX_PARSERS


def _first_of(parsers: list[Parser], names: list[str]) -> Parser:
    """What the first of `parsers` that reads a value reads (a partner that writes a time now
    with seconds, now without: `["%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", iso8601]`)."""
    if len(parsers) == 1:
        return parsers[0]

    def first(value: Any) -> datetime:
        for parse_one in parsers:
            try:
                return parse_one(value)
            except EvalError:
                pass
        raise _fail(value, f"matches none of {', '.join(map(repr, names))}")

    return first


def _parse_problems(parses: list[Any], strict: bool) -> list[str]:
    """Why the `parse` formats `parses` are refused (none: they are read)."""
    if not 0 < len(parses) <= _MAX_PARSERS or not all(
        _valid_pattern(p, _NAMED_PARSERS) for p in parses
    ):
        named = ", ".join(_NAMED_PARSERS)
        return [f"parse is one of {named} or a strptime format, or a list of 1-8 of them"]
    if not strict:
        return []
    return [why for why in map(_unrunnable, parses) if why is not None]


def _unrunnable(how: str) -> str | None:
    """Why strptime can read no value by the parse format `how`, else None."""
    return _unread_directive(how) or _repeated_directive(how)


_STRPTIME_DIRECTIVES = frozenset("aAbBcdfGHIjmMpSuUVwWxXyYzZ%")
_DIRECTIVE = re.compile(r"%(.?)", re.DOTALL)


def _unread_directive(how: str) -> str | None:
    """Why the parse format `how` can read no value (a directive strptime does not have, such
    as `%s`, which only strftime writes), else None."""
    if how in _NAMED_PARSERS:
        return None
    for directive in _DIRECTIVE.finditer(how):
        if directive[1] == "s":
            return "%s (Unix time) is no strptime directive: read Unix seconds with parse: unix"
        if directive[1] not in _STRPTIME_DIRECTIVES:
            return f"{directive[0]!r} is no strptime directive (%% is a literal %)"
    return None


_COMPOSITES = {"c": "LC_date_time", "x": "LC_date", "X": "LC_time"}


def _repeated_directive(how: str) -> str | None:
    """Why strptime cannot read the format `how` (of known directives): a field named twice
    (`"%d/%m/%Y %H:%m"`, the minutes typed `%m`; `"%c %Y"`, as `%c` holds `%Y`), which its
    pattern cannot hold (`re.error` on every value), else None. The pattern strptime would
    compile decides, so what passes is what strptime runs."""
    if how in _NAMED_PARSERS:
        return None
    try:
        _strptime_pattern(unicodedata.normalize("NFC", how))
    except re.error:
        pass
    except (KeyError, ValueError, IndexError):
        return None  # no such directive, a stray %: strptime's ValueError, value by value
    else:
        return None
    return _twice_named(how) or f"strptime cannot read the format {how!r}"


def _twice_named(how: str) -> str | None:
    """The first field the format `how` names twice, told: `%c`, `%x` and `%X` hold the
    fields of the locale's formats (C: `%a %b %d %H:%M:%S %Y`, `%m/%d/%y`, `%H:%M:%S`)."""
    locale = stdlib_strptime._TimeRE_cache.locale_time
    named: dict[str, str] = {}  # field: the directive that names it
    for directive in _DIRECTIVE.finditer(how):
        composite = _COMPOSITES.get(directive[1])
        held = getattr(locale, composite) if composite else directive[0]
        for field in (part[1] for part in _DIRECTIVE.finditer(held) if part[1] != "%"):
            if field not in named:
                named[field] = directive[0]
                continue
            holders = sorted({named[field], directive[0]} - {f"%{field}"})
            held_by = f" ({' and '.join(holders)} hold{'s' if len(holders) == 1 else ''} it)"
            hint = " (minutes are %M, months %m)" if field in ("m", "M") else ""
            return (
                f"'%{field}' is named twice{held_by if holders else ''}: strptime reads each "
                f"field once{hint}"
            )
    return None


def _valid_pattern(value: Any, names: tuple[str, ...]) -> bool:
    if not isinstance(value, str):
        return False
    return value in names or ("%" in value and 0 < len(value) <= _MAX_FORMAT)
