"""Readings written as text that no number cast reads: durations (`duration`) and coordinates
in degrees, minutes and seconds (`coordinate`).

- `duration`: seconds from a .NET TimeSpan (`"1.02:03:04.5"`, Geotab's trips and exceptions)
  or an ISO 8601 duration (`"PT12M3.456S"`); numbers and numeric text are seconds already.
- `{coordinate: latitude}` / `{coordinate: longitude}`: signed decimal degrees from
  `51° 20' 39.0" N`, `23°33'01.2"S`, `46 38.5 W`, NMEA's `2333.0200,S`, or decimal degrees;
  West written O and East L (Portuguese), a decimal comma (`23°33'40,2"S`, `-23,5505`).

Both compute in decimal, so that `"00:12:03.456"` is 723.456, not 723.4559999999999; a value
that is not one is a `cast` problem naming what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from gateway.formats.json_tree import shown as _show

from .casts import to_number
from .model import EvalError

_MAX_TEXT = 64
_NUMERIC = (int, float)


def _exact(number: Decimal) -> int | float:
    return int(number) if number == number.to_integral_value() else float(number)


# -- durations ---------------------------------------------------------------------------------

# .NET TimeSpan: [-][d.]hh:mm:ss[.fffffff] ("c") and [-][d:]h:mm:ss[.FFFFFFF] ("g").
_TIMESPAN = re.compile(r"(-)?(?:(\d{1,8})[.:])?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d{1,7})?)")
_NUMBER = r"\d{1,12}(?:[.,]\d{1,9})?"
_ISO = re.compile(
    rf"(-)?P(?:({_NUMBER})W)?(?:({_NUMBER})D)?"
    rf"(?:T(?=\d)(?:({_NUMBER})H)?(?:({_NUMBER})M)?(?:({_NUMBER})S)?)?"
)
_ISO_UNITS = (Decimal(604_800), Decimal(86_400), Decimal(3_600), Decimal(60), Decimal(1))
_YEARS_MONTHS = re.compile(r"-?P(?:\d+(?:[.,]\d+)?[YM])")


def duration(value: Any) -> int | float:
    """Seconds from a duration text (TimeSpan or ISO 8601) or a number of seconds."""
    if type(value) is not str:
        return to_number(value)  # seconds already, or a cast problem naming the type
    text = value.strip()
    seconds = _seconds(text.upper()) if len(text) <= _MAX_TEXT else None
    if seconds is not None:
        return _exact(seconds)
    if _YEARS_MONTHS.match(text.upper()):
        message = f"cannot read {_show(text)} as a duration: years and months have no fixed length"
        raise EvalError("cast", message)
    try:
        return to_number(text)
    except EvalError:
        raise EvalError(
            "cast",
            f"cannot read {_show(text)} as a duration (seconds, a TimeSpan such as "
            f"1.02:03:04.5 or ISO 8601 such as PT12M3.5S)",
        ) from None


def _seconds(text: str) -> Decimal | None:
    """The seconds a TimeSpan or an ISO 8601 duration (upper case) says, or None."""
    if (span := _TIMESPAN.fullmatch(text)) is not None:
        sign, days, hours, minutes, seconds = span.groups()
        if (days is not None and int(hours) >= 24) or int(minutes) >= 60 or Decimal(seconds) >= 60:
            return None
        whole = int(days or 0) * 86_400 + int(hours) * 3_600 + int(minutes) * 60
        total = whole + Decimal(seconds)
    elif (iso := _ISO.fullmatch(text)) is not None and text.lstrip("-") != "P":
        sign, *parts = iso.groups()
        total = Decimal(0)
        for part, unit in zip(parts, _ISO_UNITS, strict=True):
            if part:
                total += Decimal(part.replace(",", ".")) * unit
    else:
        return None
    return -total if sign else total


# -- coordinates -------------------------------------------------------------------------------

_LIMITS = {"latitude": (90, "NS"), "longitude": (180, "EW")}
# NMEA 0183: latitude ddmm.mmmm, longitude dddmm.mmmm, then a comma and the hemisphere.
_NMEA = re.compile(r"(\d{4,5}(?:\.\d{1,9})?)\s*,\s*([NSEWOL])")
_DECIMAL = re.compile(r"\+?\d{1,20}(?:\.\d{1,20})?")  # 1234: out of range, not unreadable
_HEMISPHERE = re.compile(r"^([NSEWOL])\s*|\s*([NSEWOL])$")
# Portuguese writes West O (oeste) and East L (leste): 46°39'20,8"O.
_ENGLISH = {"O": "W", "L": "E"}
# Degrees, minutes, seconds (the text in upper case): each part after the first follows its
# predecessor's mark or a blank; only the last may have decimals (checked below). º (the
# ordinal indicator) is how many keyboards write °.
_PARTS = re.compile(
    r"(\d{1,3}(?:\.\d{1,12})?)(?:\s*(?:[°º˚]|DEG))?"
    r"(?:(?:(?<=[°º˚G])\s*|\s+)(\d{1,2}(?:\.\d{1,12})?)(?:\s*['′’])?"
    r"(?:(?:(?<=['′’])\s*|\s+)(\d{1,2}(?:\.\d{1,12})?)(?:\s*(?:[\"″”]|''|′′))?)?)?"
)


def compile_coordinate(arg: Any, report: Callable[..., None]) -> Callable[[Any], Any] | None:
    if not (isinstance(arg, str) and arg in _LIMITS):
        report("coordinate takes latitude or longitude")
        return None
    kind: str = arg
    limit, hemispheres = _LIMITS[kind]

    def coordinate(value: Any) -> int | float:
        if type(value) in _NUMERIC:
            number = to_number(value)
            if -limit <= number <= limit:
                return number
            raise EvalError("cast", f"{kind} {number!r} is out of range (-{limit} to {limit})")
        if type(value) is not str:
            to_number(value)  # a cast problem naming the type
        return _parse(value, kind, limit, hemispheres)

    return coordinate


def _parse(value: str, kind: str, limit: int, hemispheres: str) -> int | float:
    text = value.strip().upper()
    degrees = _read(text) if len(text) <= _MAX_TEXT else None
    if degrees is None:
        raise EvalError(
            "cast",
            f"cannot read {_show(value)} as a {kind} (decimal degrees, degrees minutes seconds "
            f"such as 23°33'01.2\"S, or NMEA such as 2333.0200,S)",
        )
    number, hemisphere = degrees
    if hemisphere is not None and hemisphere not in hemispheres:
        raise EvalError(
            "cast", f"{_show(value)} is not a {kind}: {hemisphere} is no hemisphere of one"
        )
    if hemisphere in ("S", "W"):
        number = -number
    if not -limit <= number <= limit:
        raise EvalError("cast", f"{kind} {_show(value)} is out of range (-{limit} to {limit})")
    return _exact(number)


def _read(text: str) -> tuple[Decimal, str | None] | None:
    """(unsigned or signed degrees, hemisphere letter (N, S, E, W) or None), or None when
    unreadable. A decimal comma (`-23,5505`, `23°33'40,2"S`) is a decimal point, but in NMEA,
    where a comma comes before the hemisphere."""
    if (nmea := _NMEA.fullmatch(text)) is not None:
        digits, hemisphere = nmea.groups()
        hemisphere = _ENGLISH.get(hemisphere, hemisphere)
        whole = digits.split(".")[0]
        if len(whole) != (4 if hemisphere in "NS" else 5):
            return None
        minutes = Decimal(digits[len(whole) - 2 :])
        if minutes >= 60:
            return None
        return Decimal(whole[:-2]) + minutes / 60, hemisphere
    if "," in text and "." not in text:
        text = text.replace(",", ".")
    hemisphere = None
    if (letter := _HEMISPHERE.search(text)) is not None:
        hemisphere = letter.group(1) or letter.group(2)
        hemisphere = _ENGLISH.get(hemisphere, hemisphere)
        text = (text[: letter.start()] + text[letter.end() :]).strip()
    sign = text.startswith("-")
    if sign:
        if hemisphere is not None:
            return None  # -23° S: which way?
        text = text[1:].lstrip()
    found = _PARTS.fullmatch(text)
    if found is None:
        if _DECIMAL.fullmatch(text) is None:
            return None
        number = Decimal(text)
        return (-number if sign else number), hemisphere
    parts = [part for part in found.groups() if part is not None]
    if any("." in part for part in parts[:-1]):
        return None  # 23.5° 30': only the last part has decimals
    numbers = [Decimal(part) for part in parts]
    if any(n >= 60 for n in numbers[1:]):
        return None
    total = numbers[0] + sum(
        (n / unit for n, unit in zip(numbers[1:], (60, 3600), strict=False)), Decimal(0)
    )
    return (-total if sign else total), hemisphere
