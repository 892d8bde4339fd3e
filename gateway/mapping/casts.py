"""The type casts (`string`, `integer`, `number`, `boolean`), which the other transforms use
too: text that reads as a number is a number, and nothing else is guessed."""

from __future__ import annotations

import math
from typing import Any, Final

from ..formats.json_tree import INT64_MAX, INT64_MIN, MAX_INT_DIGITS, WideInt, json_type
from ..formats.json_tree import shown as _show
from ..formats.unicode_forms import nfc
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
