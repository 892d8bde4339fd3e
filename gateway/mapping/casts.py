"""The type casts (`string`, `integer`, `number`, `boolean`), which the other transforms use
too: text that reads as a number is a number, and nothing else is guessed."""

from __future__ import annotations

import math
import re
from typing import Any, Final
from unicodedata import combining, decomposition, is_normalized, normalize

from ..formats.json_tree import INT64_MAX, INT64_MIN, MAX_INT_DIGITS, WideInt, json_type
from ..formats.json_tree import shown as _show
from ..formats.xml_tree import element_text
from .model import EvalError


def _cast_error(value: Any, to: str) -> EvalError:
    return EvalError("cast", f"cannot cast {json_type(value)} {_show(value)} to {to}")


def too_wide(value: Any) -> EvalError:
    """An integer the database cannot store: MongoDB's (BSON's) are 64-bit. Refused where a
    value is final (`unstorable`), never in between: `[integer, string]` on a uint64 id is its
    text. The dry run, the trigger and `gateway mapping test` all give this one answer, naming
    the field."""
    return EvalError(
        "cast", f"{_show(value)} is an integer beyond 64 bits (the database holds none)"
    )


def fits_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def not_finite(value: float) -> EvalError:
    """Infinity or NaN (`to_number('1e999')`, a sum or a `scale` past the largest float): JSON
    has neither, so a mapped value never is one; refused as text that is no number is."""
    return EvalError("cast", f"{value!r} is not a finite number")


def unstorable(value: Any) -> EvalError | None:
    """Why a final value cannot be stored: a float that is not finite, or an integer beyond 64
    bits (a float would not be exact); else None. Checked where a field's value is final, and
    on every number inside a list or an object."""
    kind = type(value)
    if kind is float:
        return None if math.isfinite(value) else not_finite(value)
    if kind is int and not INT64_MIN <= value <= INT64_MAX:
        return too_wide(value)
    return None


def _parse_number(text: str, to: str) -> int | float | None:
    """A decimal number in text ("87", "-13.1", "1e3"), or None. No exception on the happy
    path: OsmAnd sends every value as text. An integer is read exactly ("-5", " 7 ", a uint64
    id), whatever its size: the field's final value is checked, not this one."""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    if "_" in text:  # float() would take "1_000"; JSON would not
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):  # "nan", "inf", "1e999"
        return None
    if number.is_integer() and "." not in text and "e" not in text and "E" not in text:
        if len(text) > MAX_INT_DIGITS:  # zeros before its digits: Python would refuse to read it
            raise EvalError(
                "cast",
                f"cannot cast string {_show(text)} to {to}: over {MAX_INT_DIGITS:,} characters",
            )
        return int(text)  # exactly: the float has only 53 bits of it
    return number


def to_integer(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return int(value)
    if kind is float and value.is_integer():
        return int(value)
    if kind is str or kind is WideInt:  # a wide integer: read from its digits, exactly
        number = _parse_number(value, "integer")
        if number is not None and float(number).is_integer():
            return int(number)
    raise _cast_error(value, "integer")


def to_number(value: Any) -> int | float:
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return value  # type: ignore[no-any-return]
    if kind is str or kind is WideInt:
        number = _parse_number(value, "number")
        if number is not None:
            return number
    raise _cast_error(value, "number")


def to_string(value: Any) -> str:
    """A value as text: a whole number sent as a float is its integer's digits (4711.0, as
    pandas, a Java `Double` or a JavaScript client writes an id, is "4711", as JavaScript's
    `String()` writes it, not "4711.0"); another float as Python writes it (12.5, 1e-07)."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is WideInt:  # its digits, as text
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is float and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    if kind is int:
        try:
            return repr(value)
        except ValueError:  # past MAX_INT_DIGITS digits, which Python does not write
            raise EvalError(
                "cast", f"cannot cast an integer of over {MAX_INT_DIGITS:,} digits to string"
            ) from None
    raise _cast_error(value, "string")  # Infinity or NaN too: a transform before overflowed


def _ranges(codes: list[int]) -> str:
    """Code points as the inside of a regex character class: `\\U00000300-\\U0000034e...`."""
    ranges: list[str] = []
    start = end = codes[0]
    for code in [*codes[1:], -1]:
        if code == end + 1:
            end = code
            continue
        ranges.append(f"\\U{start:08x}" if start == end else f"\\U{start:08x}-\\U{end:08x}")
        start = end = code
    return "".join(ranges)


def _non_starter() -> str:
    """A regex matching one non-starter: a character of canonical combining class other than
    0, or one whose canonical decomposition begins with one (U+0F73, U+0F75, U+0F81). Planes
    0 and 1 only: Unicode puts every script there, and the other planes hold only starters
    (CJK ideographs, tags, variation selectors, private use).

    Not one character class: sre tests a character against a class's ranges above U+FFFF
    one by one, which made the search 10 times slower (70 ms a MB) than the bitmap it keeps
    for the BMP. So any character above U+FFFF passes the class, and only such a character
    is then checked against the list, looking behind."""
    marks = [
        code
        for code in range(0x20000)
        if combining(char := chr(code))
        or (decomposition(char)[:1] not in ("", "<") and combining(normalize("NFD", char)[0]))
    ]
    bmp = _ranges([code for code in marks if code <= 0xFFFF])
    astral = _ranges([code for code in marks if code > 0xFFFF])
    return f"[{bmp}\\U00010000-\\U0010ffff](?<=[\\x00-\\uffff]|[{astral}])"


_SAFE_RUN: Final = 30
"""Non-starters in a row that Unicode's Stream-Safe Text Format allows (UAX #15, section 13)."""
_NON_STARTER: Final = _non_starter()
_LONG_RUN: Final = re.compile(f"{_NON_STARTER}(?:{_NON_STARTER}){{{_SAFE_RUN},}}")
"""A run of over 30 non-starters. Its first one is written apart, so that the search skips
to a candidate on the class's bitmap."""
_CGJ: Final = "\u034f"  # COMBINING GRAPHEME JOINER: a starter that is invisible and means nothing


def _stream_safe(run: re.Match[str]) -> str:
    marks = run.group()
    return _CGJ.join([marks[at : at + _SAFE_RUN] for at in range(0, len(marks), _SAFE_RUN)])


def nfc(text: str) -> str:
    """Text in Unicode's composed form (NFC): "não" whether it came composed (ã) or, as macOS
    and iOS send it, decomposed (a and a combining tilde), so text compares with the words
    and keys a mapping names one way. For comparing, and for the new text `truncate` and
    `split` cut from it: other text is written as it was sent. ASCII text and text already
    in NFC are returned at once (`is_normalized` is linear: it normalises in full only text
    whose marks are in order, which needs no sorting).

    Made stream-safe first (UAX #15, section 13): a run of over 30 non-starters in a row gets
    a U+034F COMBINING GRAPHEME JOINER after every 30, as no real text has such a run. NFC
    sorts a run by combining class in quadratic time (in CPython): 100,000 marks out of
    order held the event loop for 7 s. A character whose decomposition holds two
    non-starters (U+0F73) counts as one here: a run between joiners holds at most 60."""
    if text.isascii() or is_normalized("NFC", text):
        return text
    return normalize("NFC", _LONG_RUN.sub(_stream_safe, text))


_TRUE = frozenset({"true", "1", "yes", "on", "sim", "s", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "nao", "não", "n"})


def partner_flag(value: Any) -> bool:
    """A partner's yes or no where any value may stand (a schedule's `cursor.more` and
    `error`): JMESPath truth, except that a zero and the texts "false" and "0" (any case,
    blanks around) say no, as an XML answer (all text) or a PHP-style ERP (`0`) says it. So
    null, false, 0, "", "false", "0", [] and {} are false; anything else is true (true,
    another number, another text such as a next page's token or an error's message, a
    non-empty object or list such as a JSON-RPC `error`). An XML element with attributes
    and text (`<temMais xsi:type="xsd:boolean">false</temMais>`) is read by its text."""
    value = element_text(value)
    kind = type(value)
    if kind is int or kind is float:
        return bool(value != 0)
    if kind is str:
        return value.strip().lower() not in _PARTNER_NO
    return not (value is None or value is False or value == [] or value == {})


_PARTNER_NO: Final = frozenset({"", "false", "0"})


def to_boolean(value: Any) -> bool:
    kind = type(value)
    if kind is bool:
        return bool(value)
    if kind is str:
        text = nfc(value.strip().lower())
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    elif (kind is int or kind is float) and value in (0, 1):
        return bool(value)
    raise _cast_error(value, "boolean")
