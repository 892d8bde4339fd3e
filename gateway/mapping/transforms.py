"""The fixed set of named transforms: each compiles its argument once into a plain function.

A transform is written as a name (`upper`) or a one-key object (`{round: 1}`). It never sees
null: a pipeline stops at the first null. Those that read a number, a boolean or a time take
blank text as null too. It raises EvalError when the value does not fit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any, Final, NamedTuple

from gateway.formats.json_tree import WideInt, shown
from gateway.schemas.ids import (
    SEPARATORS,
    check_cnpj,
    check_cpf,
    check_plate,
    check_renavam,
    e164,
    normalize_cnpj,
    normalize_plate,
)

from ..formats.unicode_forms import nfc
from .casts import to_boolean, to_integer, to_number, to_string
from .limits import MAX_STRING_LENGTH, MAX_TRANSFORMS, PARSE_FORMAT_STEPS, TRANSFORM_STEPS
from .model import EvalError
from .params import NO_PARAMS, ParamScope, resolve_arguments, unset
from .paths import pointer
from .problems import Problems, suggest
from .readings import compile_coordinate, duration
from .timefmt import compile_datetime, parse_formats
from .units import UNITS, conversion

Transform = Callable[[Any], Any]
Report = Callable[..., None]
"""report(message, *pointer_parts_below_the_transform)."""


def _number_arg(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int_arg(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# -- strings -----------------------------------------------------------------------------------


_NOT_DIGIT = re.compile(r"[^0-9]+")


def _digits(value: Any) -> str | None:
    """The digits 0-9 of a value; null when it has none ("", "N/A", "-"): a blank CPF or
    RENAVAM is no value, not one of no digits that a `pad` would fill with zeros."""
    text = to_string(value)
    if text.isdigit() and text.isascii():
        return text
    return _NOT_DIGIT.sub("", text) or None


def _plate(value: Any) -> str | None:
    """A Brazilian plate, normalised (ABC1D23, ABC1234); null for text that is not one (a
    tracker's device name such as "Truck 12"), so a coalesce or the tracker id takes over.
    Blanks around it (a tab, a line break) are dropped, as `trim` drops them (by
    `normalize_plate`)."""
    text = normalize_plate(value if type(value) is str else to_string(value))
    return text if check_plate(text) is None else None


_VIN: Final = re.compile("[A-HJ-NPR-Z0-9]{17}")
# A CPF or a RENAVAM as people and systems write it: its digits, with the separators
# identifiers are written with between them (dots, dashes, slashes, spaces, in any spelling:
# ids.SEPARATORS): "529.982.247-25", "529982247-25", " 529 982 247 25 ", "529.982.247–25".
_ID_TEXT: Final = re.compile(f"[0-9][0-9{re.escape(SEPARATORS)}]*[0-9]")


def _vin(value: Any) -> str | None:
    """A VIN (chassis number), upper case without surrounding blanks; null for text that is
    not one (blank, "ABC123", 16 characters, an I, O or Q), so a VIN that only describes the
    vehicle is left out instead of refusing what the payload says."""
    text = (value if type(value) is str else to_string(value)).strip().upper()
    return text if text.isascii() and _VIN.fullmatch(text) is not None else None


def _lost_zeros(text: str) -> bool:
    """Text a number or a spreadsheet cell wrote: digits alone, the first not a zero. Those
    two drop every leading zero and keep none, so only such text may have lost some: in
    "0867565080" or "0063988496" (an identifier starting with zeros, a digit short) a zero
    put in front would make another identifier whose check digits are right."""
    return text.isascii() and text.isdigit() and not text.startswith("0")


_DECIMAL: Final = re.compile("([0-9]{1,20})[.]([0-9]+)")
"""A number with a decimal point as text: a spreadsheet's column of floats writes an id so
("9031632460.0"). An id's own dots group its digits in threes, at least two of them
("529.982.247-25"), never one before the last digits. (Past 20 digits before the point it
is no id's number either way: its digits are too many for the schema.)"""


def _id_value(value: Any, name: str) -> Any:
    """An identifier's value with a decimal read as the number it is: a float, or text of
    digits with a decimal point ("9031632460.0", a float column's cell), is its integer when
    it is whole (9031632460, whose leading zeros a number lost) and refused when it is not
    (1189123981.8): the decimal's digits joined to the integer's would make another
    identifier, whose check digits may well be right. Any other value as it came."""
    if type(value) is float and math.isfinite(value):
        if not value.is_integer():
            raise EvalError("cast", f"{shown(value)} has decimals: it is no {name}")
        return int(value)
    if type(value) is str and (match := _DECIMAL.fullmatch(value.strip())) is not None:
        whole, fraction = match.groups()
        if fraction.strip("0"):
            raise EvalError("cast", f"{shown(value)} has decimals: it is no {name}")
        return int(whole)
    return value


def _cpf(value: Any) -> str | None:
    """A CPF's 11 digits: text written with them all (52998224725, 529.982.247-25, with
    blanks, a dash or a slash between them, as `ids.SEPARATORS` spell them); a number that
    lost its leading zeros (1234567890 → 01234567890; 1234567890.0 and its text as a float
    column writes it are that number, `_id_value`); text of digits alone that lost them
    too (a spreadsheet's, `_lost_zeros`), when the zeros make its check digits right; null
    for anything else ("N/A", "", "529.982.247-2" or "0867565080": a digit short), never
    padded into a made-up CPF. Eleven digits' check digits are the schema's to judge."""
    value = _id_value(value, "CPF")
    if type(value) is int:
        return str(value).zfill(11) if 0 < value < 10**11 else None
    if type(value) is not str:
        return None
    text = value.strip()
    if not _ID_TEXT.fullmatch(text):
        return None
    digits = _NOT_DIGIT.sub("", text)  # some: the text matched _ID_TEXT
    if len(digits) == 11:
        return digits
    if _lost_zeros(text) and 9 <= len(digits) < 11:
        padded = digits.zfill(11)
        return padded if check_cpf(padded) is None else None
    return None


# A CNPJ as written: its 12 digits or letters (the alphanumeric CNPJ, valid since July 2026)
# and 2 check digits, with the separators identifiers are written with between them
# ("11.222.333/0001-81", "12.ABC.345/01DE-35", "12abc34501de35").
_CNPJ_TEXT: Final = re.compile(f"[0-9A-Za-z][0-9A-Za-z{re.escape(SEPARATORS)}]*[0-9]")


def _cnpj(value: Any) -> str | None:
    """A CNPJ's 14 characters, letters upper case (`ids.normalize_cnpj`): text written with
    them all (11222333000181, 11.222.333/0001-81, 12.abc.345/01de-35, with blanks, dashes or
    slashes between them as `ids.SEPARATORS` spell them); a number that lost its leading
    zeros (4252011000110 → 04252011000110; a whole decimal and its text as a float column
    writes it are that number, `_id_value`); text of digits alone that lost them too (a
    spreadsheet's, `_lost_zeros`), when the zeros make its check digits right, as `cpf`
    reads one; null for anything else ("N/A", "", a character short), never padded into a
    made-up CNPJ. Fourteen characters' check digits are the schema's to judge. Unlike
    `digits`, it keeps the letters of an alphanumeric CNPJ."""
    value = _id_value(value, "CNPJ")
    if type(value) is int:
        return str(value).zfill(14) if 0 < value < 10**14 else None
    if type(value) is not str:
        return None
    text = value.strip()
    if not text.isascii() or not _CNPJ_TEXT.fullmatch(text):
        return None
    cnpj = normalize_cnpj(text)
    if len(cnpj) == 14:
        return cnpj
    if _lost_zeros(text) and 12 <= len(cnpj) < 14:
        padded = cnpj.zfill(14)
        return padded if check_cnpj(padded) is None else None
    return None


def _renavam(value: Any) -> str | None:
    """A RENAVAM's digits (as `digits`: null for a value with none), with the leading zero a
    number or a spreadsheet lost put back (`_lost_zeros`): 10 digits become 11 when the
    zero makes the check digit right (1234567897 → 01234567897; 1234567897.0 and its text
    as a float column writes it are that number, `_id_value`). Any other count stays as it
    came, for the schema to read (9 digits: an old RENAVAM) or refuse, and so does text
    holding more than digits and separators ("0063988496O": a letter is no digit of it):
    a digit missing or misread is never padded into another RENAVAM."""
    value = _id_value(value, "RENAVAM")
    digits = _digits(value)
    if digits is None:
        return None
    if type(value) is str:
        text = value.strip()
        if not _ID_TEXT.fullmatch(text):
            return value
    else:
        text = to_string(value)
    if len(digits) == 10 and _lost_zeros(text) and check_renavam("0" + digits) is None:
        return "0" + digits
    return digits


def _phone(value: Any) -> str | None:
    """A phone number in E.164, Brazilian unless it says otherwise ("(11) 98765-4321" →
    "+5511987654321"); null for text that cannot be one (no area code), so `required` or a
    coalesce decides."""
    try:
        return e164(to_string(value))
    except ValueError:
        return None


def _compile_pad(arg: Any, report: Report) -> Transform | None:
    if _int_arg(arg, 0, MAX_STRING_LENGTH):
        arg = {"width": arg}
    if not isinstance(arg, dict):
        report("pad takes a width or {width, fill, side}")
        return None
    unknown = set(arg) - {"width", "fill", "side"}
    width, fill, side = arg.get("width"), arg.get("fill", "0"), arg.get("side", "left")
    ok = True
    for key in sorted(unknown):
        report(f"unknown pad option {key!r}", key)
        ok = False
    if not _int_arg(width, 0, MAX_STRING_LENGTH):
        report(f"width must be an integer from 0 to {MAX_STRING_LENGTH}", "width")
        ok = False
    if not (isinstance(fill, str) and len(fill) == 1):
        report("fill must be one character", "fill")
        ok = False
    if side not in ("left", "right"):
        report("side must be left or right", "side")
        ok = False
    if not ok:
        return None
    assert isinstance(width, int) and isinstance(fill, str)
    if side == "left":
        return lambda v: to_string(v).rjust(width, fill)
    return lambda v: to_string(v).ljust(width, fill)


def _compile_truncate(arg: Any, report: Report) -> Transform | None:
    if not _int_arg(arg, 0, MAX_STRING_LENGTH):
        report(f"truncate takes a length from 0 to {MAX_STRING_LENGTH}")
        return None
    return lambda v: nfc(to_string(v))[:arg]  # counted and cut in NFC


def _compile_split(arg: Any, report: Report) -> Transform | None:
    if not (
        isinstance(arg, dict)
        and set(arg) == {"separator", "index"}
        and isinstance(arg["separator"], str)
        and 0 < len(arg["separator"]) <= 16
        and _int_arg(arg["index"], -64, 63)
    ):
        report("split takes {separator: text of 1 to 16 characters, index: -64 to 63}")
        return None
    separator, index = nfc(arg["separator"]), arg["index"]

    def part(v: Any) -> str | None:  # cut in NFC: the separator is found in either form
        parts = nfc(v if type(v) is str else to_string(v)).split(separator)
        return parts[index] if -len(parts) <= index < len(parts) else None

    return part


_SLOT: Final = "#"
_MAX_MASK: Final = 100


def _compile_mask(arg: Any, report: Report) -> Transform | None:
    """Text written into a mask: each `#` takes the value's next character, every other
    character of the mask is written as it is (`###.###.###-##` makes 52998224725 the
    masked CPF 529.982.247-25). A value of another length than the mask's slots is a
    `transform` problem naming both, never a field cut or left out: an id a character
    short written with its dots would look right. Counted in NFC, as `truncate` counts."""
    if not (isinstance(arg, str) and 0 < len(arg) <= _MAX_MASK and _SLOT in arg):
        report(f"mask takes text of at most {_MAX_MASK} characters with a # for each character")
        return None
    pattern = nfc(arg)
    slots = pattern.count(_SLOT)
    pieces = pattern.split(_SLOT)  # the literal text around the slots

    def masked(value: Any) -> str:
        text = nfc(value if type(value) is str else to_string(value))
        if len(text) != slots:
            raise EvalError(
                "transform",
                f"mask {shown(arg)} takes {slots} characters; {shown(text)} has {len(text)}",
            )
        return "".join(piece + char for piece, char in zip(pieces, text, strict=False)) + pieces[-1]

    return masked


# -- numbers -----------------------------------------------------------------------------------


def _compile_convert(arg: Any, report: Report) -> Transform | None:
    if not (isinstance(arg, dict) and set(arg) == {"from", "to"}):
        report("convert takes {from: unit, to: unit}")
        return None
    ok = True
    for end in ("from", "to"):
        if not isinstance(arg[end], str) or arg[end] not in UNITS:
            report(f"unknown unit {arg[end]!r}; known: {', '.join(UNITS)}", end)
            ok = False
    if not ok:
        return None
    converted = conversion(arg["from"], arg["to"], to_number)
    if isinstance(converted, str):
        report(converted)
        return None
    return converted


def _compile_scale(arg: Any, report: Report) -> Transform | None:
    if not _number_arg(arg):
        report("scale takes a number")
        return None
    return scale_exactly(arg)


def scale_exactly(factor: int | float) -> Transform:
    """Multiply as a decimal would, the numbers as they are written: "35" with 0.01 is 0.35,
    not 0.35000000000000003, and 0.57 with 100 is 57.0, not 56.99999999999999 (a float
    product rounds twice: the binary values, then the product). Each side is the exact
    fraction of its shortest text, and Python divides two integers correctly rounded, so the
    answer is the float nearest the decimal product. An integer times an integer stays one."""
    numerator, denominator = Decimal(repr(factor)).as_integer_ratio()
    whole_factor = type(factor) is int

    def scale(value: Any) -> Any:
        number = value if type(value) in _NUMBERS else to_number(value)
        if type(number) is int:
            return number * factor if whole_factor else _quotient(number * numerator, denominator)
        if number == 0 or not math.isfinite(number):
            return number * factor  # keeps -0.0, Infinity and NaN as they were
        top, bottom = Decimal(repr(number)).as_integer_ratio()
        return _quotient(top * numerator, bottom * denominator)

    return scale


_NUMBERS: Final = (int, float)


def _quotient(top: int, bottom: int) -> float:
    """top / bottom correctly rounded; past the largest float, an infinity (as a float product
    would be: a `cast` problem where the value is final)."""
    try:
        return top / bottom
    except OverflowError:
        return math.inf if (top < 0) == (bottom < 0) else -math.inf


def _compile_offset(arg: Any, report: Report) -> Transform | None:
    if not _number_arg(arg):
        report("offset takes a number")
        return None
    return lambda v: to_number(v) + arg


_HALF_UP: Final = Context(prec=330, rounding=ROUND_HALF_UP)
"""Room for any float's digits (up to 309 before the point) and 12 places after it."""
_PLACES: Final = tuple(Decimal(1).scaleb(-n) for n in range(13))


def half_up(number: int | float, places: int) -> Decimal:
    """`number` rounded to `places` decimals, halves away from zero, as people round the
    number as it is written: a float is its shortest text (1.005 is "1.005", though the float
    is 1.00499999999999989...), so 1.005 → 1.01 and 0.285 → 0.29. Multiplying by a power of
    ten first would round what the float holds instead (1.005 * 100 = 100.49999999999999)."""
    if type(number) is int:
        return Decimal(number)  # no decimals to round (and of any size)
    return Decimal(repr(number)).quantize(_PLACES[places], context=_HALF_UP)


def _settled(number: float, power: int) -> int | None:
    """`number` times `power` (10**places) rounded half away from zero, as `half_up` rounds
    it, when the float product settles it: its fraction is clear of a half by more than the
    product's error (a few units in the last place) and of the shortest text's distance from
    the float, so the number as written rounds the same way. Else None (a half, or too large
    to have decimals): `half_up` decides. One multiplication instead of a Decimal."""
    scaled = number * power
    magnitude = abs(scaled)
    if not magnitude < _FAST_BELOW:  # Infinity and NaN too
        return None
    whole = math.floor(magnitude)
    fraction = magnitude - whole  # exact
    slack = magnitude * _SLACK
    if fraction > 0.5 + slack:
        whole += 1
    elif fraction >= 0.5 - slack:
        return None
    return whole if scaled >= 0 else -whole


_FAST_BELOW: Final = 2.0**52
_SLACK: Final = 2.0**-50
"""A float product's error and a float's distance from its shortest text are each below
2**-52 of it."""


def round_to(places: int) -> Transform:
    """Round halves away from zero, as people do (0.125 → 0.13, 1.005 → 1.01); ints stay
    ints, and `0` places gives an integer."""
    power = 10**places

    def round_places(value: Any) -> Any:
        if type(value) is not float:
            value = to_number(value)
            if type(value) is int:
                return value
        if (scaled := _settled(value, power)) is not None:
            return scaled if places == 0 else scaled / power  # correctly rounded, as float()
        if not math.isfinite(value):  # overflowed before: a `cast` problem where it is final
            return value
        if places == 0:
            return int(half_up(value, 0))
        return float(half_up(value, places)) + 0.0  # + 0.0: -0.001 → 0.0, not -0.0

    return round_places


def _compile_range(arg: Any, report: Report) -> Transform | None:
    """A number within {min, max} (either may be left out) passes as it is; one outside is a
    `range` problem naming it, as a schema's minimum would (a negative amount paid)."""
    if not (isinstance(arg, dict) and arg and set(arg) <= {"min", "max"}):
        report("range takes {min, max} (one or both)")
        return None
    low, high = arg.get("min"), arg.get("max")
    if not all(b is None or _number_arg(b) for b in (low, high)):
        report("min and max must be numbers")
        return None
    if low is not None and high is not None and low > high:
        report("min must not be above max")
        return None

    def within(value: Any) -> int | float:
        number = to_number(value)
        if low is not None and number < low:
            raise EvalError("range", f"{number!r} is below the minimum {low!r}")
        if high is not None and number > high:
            raise EvalError("range", f"{number!r} is above the maximum {high!r}")
        return number

    return within


def _compile_round(arg: Any, report: Report) -> Transform | None:
    if not _int_arg(arg, 0, 12):
        report("round takes a number of decimal places from 0 to 12")
        return None
    return round_to(arg)


def _compile_format_number(arg: Any, report: Report) -> Transform | None:
    if not isinstance(arg, dict | None):
        report("format_number takes {decimals, thousands, decimal}")
        return None
    options = {"decimals": 0, "thousands": ".", "decimal": ",", **(arg or {})}
    if set(options) != {"decimals", "thousands", "decimal"}:
        report("format_number takes {decimals, thousands, decimal}")
        return None
    decimals, thousands, decimal = options["decimals"], options["thousands"], options["decimal"]
    if not _int_arg(decimals, 0, 12):
        report("decimals must be an integer from 0 to 12", "decimals")
        return None
    if not (isinstance(thousands, str) and isinstance(decimal, str)) or len(thousands) > 1:
        report("thousands and decimal must be separators of at most one character")
        return None
    power, spec = 10**decimals, f"z,.{decimals}f"  # "z": -0.001 is "0,00", not "-0,00"

    def separators(text: str) -> str:  # a fifth of str.translate's cost
        whole, point, fraction = text.partition(".")
        whole = whole.replace(",", thousands)
        return whole + decimal + fraction if point else whole

    def format_number(value: Any) -> str:
        # Rounded as {round: n} rounds (2.675 → "2,68").
        number = to_number(value)
        if type(number) is float and _settled(number, power) is not None:
            # The float rounds to the same digits as its text: format writes them exactly.
            return separators(format(number, spec))
        return separators(format(half_up(number, decimals), spec))

    return format_number


def _compile_parse_number(arg: Any, report: Report) -> Transform | None:
    """Text written with a locale's separators to a number: pt-BR by default ("1.234,56"),
    the reverse of format_number. Numbers pass as they are. Strict, for a misread amount is
    worse than a refused one: thousands separators only between groups of three digits
    ("1.234.567"), the decimal separator once and after them; so "1,130.16" is refused under
    pt-BR (it was 1.13), and "1.1.30,16" too (it was 1130.16). With `decimal_point`, text
    without the decimal separator may write its decimals with a point ("130.16"), unless it
    reads both ways ("1.130" under pt-BR: 1130 or 1.13?), which is refused."""
    if not isinstance(arg, dict | None):
        report("parse_number takes {thousands, decimal, decimal_point}")
        return None
    options = {"thousands": ".", "decimal": ",", "decimal_point": False, **(arg or {})}
    if set(options) != {"thousands", "decimal", "decimal_point"}:
        report("parse_number takes {thousands, decimal, decimal_point}")
        return None
    thousands, decimal, point = options["thousands"], options["decimal"], options["decimal_point"]
    if not isinstance(point, bool) or (point and decimal == "."):
        report("decimal_point is true or false, and true only beside another decimal separator")
        return None
    if not (
        isinstance(thousands, str)
        and isinstance(decimal, str)
        and len(thousands) <= 1
        and len(decimal) == 1
        and thousands != decimal
        and not set(thousands + decimal) & set("0123456789+-eE")  # part of a number's text
    ):
        report("thousands (at most one character) and decimal (one) must be separators")
        return None
    grammar = _locale_number(thousands, decimal)
    # With a decimal point allowed, one decimal separator before exactly three digits reads
    # both ways too ("1,130" under pt-BR: 1.13, or 1130 written the English way?).
    mirror = re.compile(f"[+-]?[1-9][0-9]{{0,2}}{re.escape(decimal)}[0-9]{{3}}")
    swap: dict[int, str | None] = {ord(thousands): None} if thousands else {}
    swap[ord(decimal)] = "."
    table = str.maketrans(swap)
    written = (
        f"thousands {thousands!r} in groups of three and decimal {decimal!r}"
        if thousands
        else f"decimal {decimal!r} and no thousands separator"
    )

    def parse_number(value: Any) -> int | float:
        if type(value) is not str:
            return to_number(value)
        text = value.strip()
        if point and decimal not in text and _POINT_NUMBER.fullmatch(text) is not None:
            if grammar.fullmatch(text) is not None:  # "1.130": thousands, or a decimal point?
                raise EvalError(
                    "cast",
                    f"cannot read {shown(value)} as a number: its point may be a thousands "
                    f"separator or a decimal point (write the decimals with {decimal!r})",
                )
            return to_number(text)
        if point and mirror.fullmatch(text) is not None:
            raise EvalError(
                "cast",
                f"cannot read {shown(value)} as a number: its {decimal!r} may be a decimal "
                "separator or a thousands separator written the English way",
            )
        if grammar.fullmatch(text) is None:
            raise EvalError("cast", f"cannot read {shown(value)} as a number with {written}")
        return to_number(text.translate(table))  # past a float's or int64's range: refused

    return parse_number


_POINT_NUMBER: Final = re.compile(r"[+-]?[0-9]*\.[0-9]+(?:[eE][+-]?[0-9]+)?")
"""A number written with a decimal point (and one), as JSON would but for a leading zero."""


def _locale_number(thousands: str, decimal: str) -> re.Pattern[str]:
    """A number as a locale writes it: a sign; digits, or 1-3 digits (not led by a zero:
    "0.125" is no thousand) then groups of three after each thousands separator; the
    decimal separator and at least one digit (the integer part may be left out: ",5"); an
    exponent."""
    integer = "[0-9]+"
    if thousands:
        integer = f"(?:[1-9][0-9]{{0,2}}(?:{re.escape(thousands)}[0-9]{{3}})+|[0-9]+)"
    fraction = f"{re.escape(decimal)}[0-9]+"
    return re.compile(f"[+-]?(?:{integer}(?:{fraction})?|{fraction})(?:[eE][+-]?[0-9]+)?")


# -- value maps --------------------------------------------------------------------------------


def map_key(value: Any) -> str | None:
    """The string a value is looked up by in a value map (keys are strings, as in JSON; text
    in NFC, as the map's keys are)."""
    kind = type(value)
    if kind is str:
        return nfc(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is WideInt:
        return str(value)
    if kind is float:
        return to_string(value) if math.isfinite(value) else repr(value)
    return None


def _compile_map(arg: Any, report: Report) -> Transform | None:
    if not (isinstance(arg, dict) and "values" in arg and set(arg) <= {"values", "default"}):
        report("map takes {values: {from: to, ...}, default: value}")
        return None
    values = arg["values"]
    if not isinstance(values, dict) or not values:
        report("values must be a non-empty object", "values")
        return None
    table: dict[str, Any] = {}
    for written, to in values.items():
        key = nfc(written)
        if key in table:  # "São" composed and decomposed: one key written twice
            report(f"keys {key!r} are the same text in two Unicode forms", "values", written)
            return None
        table[key] = to
    default = arg.get("default")

    def lookup(value: Any) -> Any:
        key = map_key(value)
        return table.get(key, default) if key is not None else default

    return lookup


# -- the registry ------------------------------------------------------------------------------

_SIMPLE: dict[str, Transform] = {
    "string": to_string,
    "integer": to_integer,
    "number": to_number,
    "boolean": to_boolean,
    "upper": lambda v: (v if type(v) is str else to_string(v)).upper(),
    "lower": lambda v: (v if type(v) is str else to_string(v)).lower(),
    "trim": lambda v: (v if type(v) is str else to_string(v)).strip(),
    "digits": _digits,
    "plate": _plate,
    "vin": _vin,
    "cpf": _cpf,
    "cnpj": _cnpj,
    "renavam": _renavam,
    "phone": _phone,
    "duration": duration,
}

_WITH_ARGUMENT: dict[str, Callable[[Any, Report], Transform | None]] = {
    "pad": _compile_pad,
    "truncate": _compile_truncate,
    "split": _compile_split,
    "mask": _compile_mask,
    "convert": _compile_convert,
    "scale": _compile_scale,
    "offset": _compile_offset,
    "round": _compile_round,
    "range": _compile_range,
    "format_number": _compile_format_number,
    "parse_number": _compile_parse_number,
    "coordinate": compile_coordinate,
    "map": _compile_map,
    "datetime": compile_datetime,  # called with `strict` by compile_transform
}

TRANSFORM_NAMES = (*_SIMPLE, *_WITH_ARGUMENT)
# Transforms that read a number, a boolean or a time: blank text is no value to them (a
# tracker's `speed=` when it does not know its speed), as null is, not a cast problem.
_READ_VALUES: frozenset[str] = frozenset(
    {
        "integer",
        "number",
        "boolean",
        "convert",
        "scale",
        "offset",
        "round",
        "range",
        "format_number",
        "parse_number",
        "datetime",
        "duration",
        "coordinate",
    }
)


def _blank_is_null(transform: Transform) -> Transform:
    def read(value: Any) -> Any:
        if type(value) is str and not value.strip():
            return None
        return transform(value)

    return read


def compile_transform(
    item: Any, report: Report, *, strict: bool = True
) -> tuple[str, Transform] | None:
    """(name, function) for one pipeline item, or None after reporting why not (not `strict`:
    a stored version, which rules for new texts do not refuse)."""
    if isinstance(item, str):
        name, arg, has_arg = item, None, False
    elif isinstance(item, dict) and len(item) == 1:
        ((name, arg),) = item.items()
        has_arg = True
    else:
        report("a transform is a name or an object with one key: {name: argument}")
        return None
    if name in _SIMPLE:
        if has_arg:
            report(f"{name} takes no argument: write it as a plain name")
            return None
        simple = _SIMPLE[name]
        return name, _blank_is_null(simple) if name in _READ_VALUES else simple
    if name in _WITH_ARGUMENT:
        if not has_arg and name not in ("format_number", "parse_number"):
            report(f"{name} needs an argument: {{{name}: ...}}")
            return None
        below: Report = report
        if has_arg:
            below = lambda message, *parts: report(message, name, *parts)  # noqa: E731
        if name == "datetime":
            compiled = compile_datetime(arg, below, strict=strict)
        else:
            compiled = _WITH_ARGUMENT[name](arg, below)
        if compiled is None:
            return None
        return name, _blank_is_null(compiled) if name in _READ_VALUES else compiled
    hint = suggest(str(name), TRANSFORM_NAMES)
    report(f"unknown transform {name!r}{hint}; known: {', '.join(TRANSFORM_NAMES)}")
    return None


class Pipeline(NamedTuple):
    """A spec's transforms, compiled, their names (`plate`, `datetime`), and the work applying
    them costs an item at most (the `steps` the run is charged each time, see
    limits.MAX_STEPS)."""

    transforms: list[Transform]
    names: list[str]
    steps: int


def transform_steps(item: Any) -> int:
    """The work one pipeline item costs when applied: TRANSFORM_STEPS; a `datetime`, also
    PARSE_FORMAT_STEPS per format it may try."""
    if isinstance(item, dict) and len(item) == 1 and "datetime" in item:
        return TRANSFORM_STEPS + PARSE_FORMAT_STEPS * parse_formats(item["datetime"])
    return TRANSFORM_STEPS


def compile_pipeline(
    raw: Any, at: str, problems: Problems, scope: ParamScope = NO_PARAMS, *, strict: bool = True
) -> Pipeline | None:
    """`transforms`: one transform or a list of them, compiled; None after reporting."""
    items = [raw] if isinstance(raw, str | dict) else raw
    if not isinstance(items, list | tuple):
        problems.add(at, "transforms is a list of transforms", "type")
        return None
    if len(items) > MAX_TRANSFORMS:
        problems.add(at, f"more than {MAX_TRANSFORMS} transforms", "limit")
        return None
    compiled: list[Transform] = []
    names: list[str] = []
    ok = True
    for i, item in enumerate(items):
        here = at if items is not raw else f"{at}/{i}"

        def report(message: str, *parts: str, _here: str = here) -> None:
            problems.add(f"{_here}{pointer(*parts)}", message, "transform")

        transform = _compile_item(item, scope, report, strict)
        if transform is None:
            ok = False
        else:
            compiled.append(transform)
            names.append(item if isinstance(item, str) else str(next(iter(item))))
    return Pipeline(compiled, names, sum(map(transform_steps, items))) if ok else None


def _compile_item(item: Any, scope: ParamScope, report: Report, strict: bool) -> Transform | None:
    resolved = resolve_arguments(item, scope, report)
    if resolved is None:
        return None
    checked = resolved.checkable
    result = compile_transform(resolved.item, report, strict=strict) if checked else None
    if resolved.checkable and result is None:
        return None
    if resolved.unset:
        return _failing(unset(resolved.unset[0]))
    assert result is not None
    return result[1]


def _failing(error: EvalError) -> Transform:
    def fail(value: Any) -> Any:
        raise EvalError(error.keyword, error.message)

    return fail
