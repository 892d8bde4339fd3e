"""Brazilian identifiers: plate, RENAVAM, CPF, CNPJ and CNH — normalisation and check digits;
and phone numbers in E.164, Brazilian unless they say otherwise (the `phone` format, the one
rule of entities' phone fields and of the SMS path).

Pure functions, no I/O. Every `check_*` accepts raw user input (formatting allowed) and returns
`None` when the value is valid or a short human reason when it is not; every `normalize_*` only
strips formatting (and upper-cases where letters are allowed), never raises, and is idempotent,
so a caller can normalise first and validate the stored form.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import mul
from types import MappingProxyType

_PLATE = re.compile(r"[A-Z]{3}[0-9][A-Z0-9][0-9]{2}")
_OLD_PLATE = re.compile(r"[A-Z]{3}[0-9]{4}")
_MERCOSUL_PLATE = re.compile(r"[A-Z]{3}[0-9][A-Z][0-9]{2}")
_CNPJ = re.compile(r"[0-9A-Z]{12}[0-9]{2}")

BAD_CHECK_DIGIT = "check digit mismatch"
REPEATED = "all digits repeated"


# The dashes written for "-": a word processor's en or em dash (and what windows-1252's 0x96
# and 0x97 are), a PDF's or a web page's non-breaking hyphen, the minus sign.
DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"
# The space characters (Unicode's Zs) but the ASCII one: a web page's or a PDF's no-break
# space, an office program's thin and narrow no-break spaces.
SPACES = "\u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u202f\u205f\u3000"
# What an identifier is written with between its characters, and `_strip` drops.
SEPARATORS = ".-/ " + DASHES + SPACES
_SEPARATORS = str.maketrans(dict.fromkeys(SEPARATORS))


def _strip(value: str) -> str:
    """Drop presentation characters: dots, dashes, slashes, spaces ("529.982.247-25"),
    wherever they are, in any of their spellings (`DASHES`, `SPACES`: "ABC–1234" from a word
    processor, "ABC\u00a01234" from a web page), and the blanks at either end that `trim`
    drops (a partner's CSV or a scanned form sends "ABC1234\r\n"). A tab, a line break or
    another control character inside is left for the check to refuse."""
    if value.isascii():
        # Chained replace is several times faster than str.translate: the hot path.
        return value.replace(".", "").replace("-", "").replace("/", "").replace(" ", "").strip()
    return value.translate(_SEPARATORS).strip()


def _digits_problem(value: str, length: int) -> str | None:
    if value and not (value.isascii() and value.isdigit()):
        return "must contain only digits"
    if len(value) != length:
        return f"must have {length} digits"
    if value == value[0] * length:
        return REPEATED
    return None


def _weighted(digits: Iterable[int], weights: Iterable[int]) -> int:
    return sum(map(mul, digits, weights))


def _mod11_digit(total: int) -> int:
    """The CPF/CNPJ rule: remainder 0 or 1 gives 0, otherwise 11 - remainder."""
    remainder = total % 11
    return 0 if remainder < 2 else 11 - remainder


# --- plate ------------------------------------------------------------------------------------


def normalize_plate(value: str) -> str:
    """Upper case, without the separators people write on plates ("ABC-1234", "ABC.1234",
    "abc 1d23", "ABC/1D23"): the same formatting every identifier drops (`_strip`)."""
    return _strip(value).upper()


def check_plate(value: str) -> str | None:
    # ASCII first: upper() makes Latin letters of other characters ("ı" → "I", "ſ" → "S").
    plate = _strip(value)
    if plate.isascii() and _PLATE.fullmatch(plate.upper()):
        return None
    return "must be 3 letters and 4 digits (ABC1234) or Mercosul (ABC1D23)"


def is_mercosul_plate(value: str) -> bool:
    return _MERCOSUL_PLATE.fullmatch(normalize_plate(value)) is not None


def canonical_plate_key(value: str) -> str:
    """The Mercosul form of a plate: an old plate and its Mercosul twin share this key.

    Old → Mercosul is total (the 5th character, digit d, becomes chr(ord('A') + d)), so the
    Mercosul form is the canonical one. Raises ValueError for an invalid plate.
    """
    plate = normalize_plate(value)
    if _MERCOSUL_PLATE.fullmatch(plate):
        return plate
    if _OLD_PLATE.fullmatch(plate):
        return plate[:4] + chr(ord("A") + int(plate[4])) + plate[5:]
    raise ValueError(f"{value!r} is not a valid plate")


def plate_equivalents(value: str) -> tuple[str, ...]:
    """Every normalised spelling of the same vehicle: (old, Mercosul), or just (Mercosul,)
    when the 5th letter is past J and the plate has no old-format twin."""
    mercosul = canonical_plate_key(value)
    letter = mercosul[4]
    if "A" <= letter <= "J":
        return (mercosul[:4] + str(ord(letter) - ord("A")) + mercosul[5:], mercosul)
    return (mercosul,)


def plate_match_key(value: str) -> str:
    """What a rule's plate and a vehicle's plate are compared by: the Mercosul form
    (`canonical_plate_key`: any spelling, and an old plate and its twin, share it); a text
    that is no plate (a rule stored before its plates were checked), normalised only."""
    try:
        return canonical_plate_key(value)
    except ValueError:
        return normalize_plate(value)


# --- RENAVAM ----------------------------------------------------------------------------------

_RENAVAM_WEIGHTS = (3, 2, 9, 8, 7, 6, 5, 4, 3, 2)


def normalize_renavam(value: str) -> str:
    renavam = _strip(value)
    # Pre-2013 RENAVAMs had 9 digits; the 11-digit form left-pads them with zeros.
    if len(renavam) == 9 and renavam.isascii() and renavam.isdigit():
        return "00" + renavam
    return renavam


def check_renavam(value: str) -> str | None:
    renavam = normalize_renavam(value)
    if problem := _digits_problem(renavam, 11):
        return problem
    digits = list(map(int, renavam))
    expected = 11 - _weighted(digits[:10], _RENAVAM_WEIGHTS) % 11
    if expected >= 10:
        expected = 0
    return None if digits[10] == expected else BAD_CHECK_DIGIT


# --- CPF --------------------------------------------------------------------------------------


def normalize_cpf(value: str) -> str:
    return _strip(value)


def cpf_check_digits(base: str) -> str:
    """The two check digits of a 9-digit CPF base."""
    digits = list(map(int, base))
    first = _mod11_digit(_weighted(digits, range(10, 1, -1)))
    second = _mod11_digit(_weighted([*digits, first], range(11, 1, -1)))
    return f"{first}{second}"


def check_cpf(value: str) -> str | None:
    cpf = normalize_cpf(value)
    if problem := _digits_problem(cpf, 11):
        return problem
    return None if cpf_check_digits(cpf[:9]) == cpf[9:] else BAD_CHECK_DIGIT


# --- CNPJ -------------------------------------------------------------------------------------

_CNPJ_WEIGHTS = (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)


def normalize_cnpj(value: str) -> str:
    return _strip(value).upper()


def cnpj_check_digits(base: str) -> str:
    """The two check digits of a 12-character CNPJ base (digits or, since July 2026, A-Z).

    Each character counts as its ASCII code minus 48, so digits keep their value and letters
    weigh 17 (A) to 42 (Z).
    """
    values = [ord(c) - 48 for c in base]
    first = _mod11_digit(_weighted(values, _CNPJ_WEIGHTS[1:]))
    second = _mod11_digit(_weighted([*values, first], _CNPJ_WEIGHTS))
    return f"{first}{second}"


def check_cnpj(value: str) -> str | None:
    cnpj = normalize_cnpj(value)
    if len(cnpj) != 14:
        return "must have 14 characters"
    if not _strip(value).isascii() or not _CNPJ.fullmatch(cnpj):  # upper(): "ı" into "I"
        return "must be 12 digits or letters followed by 2 check digits"
    if cnpj == cnpj[0] * 14:
        return REPEATED
    return None if cnpj_check_digits(cnpj[:12]) == cnpj[12:] else BAD_CHECK_DIGIT


# --- CNH --------------------------------------------------------------------------------------


def normalize_cnh(value: str) -> str:
    return _strip(value)


def cnh_check_digits(base: str) -> str:
    """DENATRAN's rule for the 11-digit CNH registration number (RENACH register).

    The first digit is the weighted sum (9..1) mod 11; when that overflows to 10 it becomes 0
    and the second digit (weights 1..9, mod 11) is lowered by 2, wrapping below zero.
    """
    digits = list(map(int, base))
    first = _weighted(digits, range(9, 0, -1)) % 11
    discount = 0
    if first >= 10:
        first, discount = 0, 2
    second = (_weighted(digits, range(1, 10)) % 11 - discount) % 11
    if second >= 10:
        second = 0
    return f"{first}{second}"


def check_cnh(value: str) -> str | None:
    cnh = normalize_cnh(value)
    if problem := _digits_problem(cnh, 11):
        return problem
    return None if cnh_check_digits(cnh[:9]) == cnh[9:] else BAD_CHECK_DIGIT


# --- phone ------------------------------------------------------------------------------------

COUNTRY_CODE = "55"  # a number written without one is Brazilian
_NON_DIGITS = re.compile(r"[^0-9]")
# How people write one number: digits, spaces (any), - . ( ), one leading "+". Nothing else: a
# letter ("ramal 22", "r. 5", "ext 7"), "/" or "," says the text is more than a number, and
# its digits run together would be another number, maybe in another country.
_PHONE_TEXT = re.compile(r"\+?[0-9\s().-]+")
# Dashes pasted from a word processor or a web page are hyphens.
_DASHES = str.maketrans(dict.fromkeys(DASHES, "-"))
# "0xx11 98765-4321": the trunk 0 and the carrier code left for the caller to pick ("xx").
_ANY_CARRIER = re.compile(r"^(\(?\s*)0\s*[xX]{2}")
# Invisible marks a copied number carries (WhatsApp Web wraps it in direction marks).
_INVISIBLE = dict.fromkeys(
    map(
        ord,
        "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff",
    )
)
# Written the national way: the area code in parentheses, "(11)" or "(011)", or the local
# number with its hyphen, "98765-4321". Such text with more digits than a national number
# holds more than one number ("(11) 98765-4321 5": an extension).
_NATIONAL = re.compile(r"\(\s*0?[0-9]{2}\s*\)|(?<![0-9])[0-9]{4,5}-[0-9]{4}(?![0-9])")
# The local number with its hyphen ends the number: digits after it are another one.
_DIGITS_AFTER_LOCAL = re.compile(r"(?<![0-9])[0-9]{4,5}-[0-9]{4}(?![0-9]).*[0-9]")
# Anatel's 67 area codes (DDD): 11-19, 21 22 24 27 28, 31-35 37 38, 41-49, 51 53-55, 61-69,
# 71 73-75 77 79, 81-89, 91-99. The rest (23, 25, 26, 29, 36, 39, 52, 56-59, 72, 76, 78) are
# nobody's: a typo ("23" for "21"), not a number.
_AREA_CODE = r"(?:1[1-9]|2[12478]|3[1-578]|4[1-9]|5[1345]|6[1-9]|7[13-579]|8[1-9]|9[1-9])"
# +55, an area code, and a landline's 8 digits (beginning 2 to 5) or a mobile's 9 (beginning
# with 9).
_BRAZILIAN = re.compile(rf"55{_AREA_CODE}(?:9[0-9]{{8}}|[2-5][0-9]{{7}})")
# Non-geographic numbers, dialled in Brazil without an area code: a toll-free 0800, a 0300,
# 0500 or 0900 (6 or 7 digits after the code), and a nationwide shared-cost number (3000,
# 3003, 4000 to 4009, 4020, then 4 digits: prefixes no local number takes). No area code has
# a 0 for its second digit, so none reads as one. E.164 writes them +55 800 …; they take
# calls, not SMS (`non_geographic`).
_NON_GEOGRAPHIC = re.compile(r"55(?:[3589]00[0-9]{6,7}|(?:300[03]|40(?:0[0-9]|20))[0-9]{4})")
# 8 digits beginning 6 to 9 after the area code: a mobile as written before its ninth digit
# (added nationwide by 2016), a number that no longer exists.
_OLD_MOBILE = re.compile(rf"55{_AREA_CODE}[6-9][0-9]{{7}}")
# +55 and two digits that are no area code, then a number's 8 or 9 digits.
_UNASSIGNED_AREA = re.compile(r"55[1-9]{2}[0-9]{8,9}")


class NotAPhone(ValueError):
    """`phone` cannot be a number in E.164; `reason` says why, without the number."""

    def __init__(self, phone: str, reason: str) -> None:
        super().__init__(f"{phone!r} is not a phone number: {reason}")
        self.reason = reason


def _written(phone: str) -> str:
    """`phone` as the digits, spaces, - . ( ) and leading "+" it is written with; ValueError
    when it holds anything else."""
    text = phone.translate(_INVISIBLE).strip().translate(_DASHES)
    if text[:4].lower() == "tel:":  # RFC 3966, as a contact card or a web page writes it
        text = text[4:].strip()
    text = _ANY_CARRIER.sub(r"\g<1>0", text)
    if text.startswith("(") and text[1:].lstrip().startswith("+"):  # "(+55) 11 …"
        text = text[1:].lstrip()
    if not _PHONE_TEXT.fullmatch(text) or not any(c.isdigit() for c in text):
        raise NotAPhone(phone, "only digits, spaces, - . ( ) and a leading + make one")
    if _DIGITS_AFTER_LOCAL.search(text):  # "(11) 3456-7890 5", "3456-7890 12"
        raise NotAPhone(phone, "more than one number (an extension, or two?)")
    return text


def e164(phone: str) -> str:
    """A phone number in E.164 (`+5511987654321`); ValueError naming why it cannot be one.
    A number written without its country code is Brazilian, as people write it ("(11)
    98765-4321", "011 98765-4321", "0xx11 98765-4321", "0 21 11 98765-4321" with a carrier
    code); one starting `00` is `00` and the country code ("0044 7911 123456") or `00`, a
    carrier code and the country code ("0015 44 7911 123456"), whichever alone is a valid
    number (`_dialled_abroad`); 12 digits or more without "+" are E.164
    without its "+" (their own country code), unless written the national way ("(11) …",
    "…98765-4321") and not starting with 55: then the digits beyond the number are an
    extension or a second number, refused, as are digits after a hyphenated local number
    ("3456-7890 12"); so is a number without its area code, a Brazilian one (+55) outside
    the numbering plan (an area code Anatel never assigned, "(23) 98765-4321"; a landline's
    8 digits begin 2 to 5, a mobile's 9 with 9: an 8-digit mobile written before its ninth
    digit no longer exists, and is refused rather than completed; a non-geographic 0800 or
    4004 number has no area code), and text with anything but digits, spaces, - . ( ) and a
    leading "+" ("ramal 22", "r. 5"). NotAPhone says why. A valid number is written as its
    country writes it today (`_current`: +52 1 55 … is +52 55 …)."""
    text = _written(phone)
    # "+44 (0)20 …": the trunk 0 written after the country code is not dialled from abroad.
    digits = _NON_DIGITS.sub("", text.replace("(0)", ""))
    if text.startswith("00"):
        text, digits = "+", _dialled_abroad(phone, digits[2:])
    if text.startswith("+") and digits.startswith(COUNTRY_CODE + "0"):
        digits = COUNTRY_CODE + digits[3:]  # "+55 (011) 9…": no area code starts with 0
    if not text.startswith("+"):
        digits = _with_country_code(phone, text, digits)
    if problem := _international_problem(digits):
        raise NotAPhone(phone, problem)
    return "+" + _current(digits)


def _dialled_abroad(phone: str, digits: str) -> str:
    """The country code and number of `digits`, written after `00`. They are read two ways:
    the European way, the country code right after `00` ("0044 20 7946 0958"), and as
    dialled abroad from Brazil, `00`, a carrier code (CSP: 21 Embratel, 15 Telefônica, 41
    TIM …, `_CARRIER_CODES`) and the country code ("0021 1 212 555 1234"). A reading counts
    when it is a valid number (`_international_problem`: a country code E.164 knows, then
    a number of that country's plan, its area codes and prefixes, not only their count)
    and, dialled from Brazil, its carrier code one Anatel assigned. One reading counts: that
    is the number. Both count ("0061 2 9876 5432": Sydney, or +298 765432 through carrier
    61): which was meant cannot be told, and reading one would give the other's text to a
    stranger, so it is refused naming both, asking for the "+" form. Neither counts:
    refused asking for the "+" form, or, for `00 55` and a number that is no Brazilian one,
    for the reason Brazil's plan refuses it ("0055 11 8765 4321": an 8-digit mobile)."""
    european = digits
    if european.startswith(COUNTRY_CODE + "0"):
        european = COUNTRY_CODE + european[3:]  # "00 55 0800 …": no area code starts with 0
    readings = [european] if _international_problem(european) is None else []
    if digits[:2] in _CARRIER_CODES and _international_problem(digits[2:]) is None:
        readings.append(digits[2:])
    if len(readings) == 1:
        return readings[0]
    if readings:
        written, dialled = (_spaced(reading) for reading in readings)
        raise NotAPhone(
            phone,
            f"it could be {written} (00 and the country code) or {dialled} (00, carrier"
            f" code {digits[:2]} and the country code); write it with + and its country code",
        )
    if european.startswith(COUNTRY_CODE) and (problem := _brazilian_problem(european)):
        raise NotAPhone(phone, problem)
    raise NotAPhone(
        phone,
        "a number starting 00 is 00 and a valid number with its country code (0044 7911"
        " 123456), or 00, a carrier code and one (0021 44 7911 123456); write it with + and"
        " its country code (+44 7911 123456)",
    )


def _spaced(digits: str) -> str:
    """`digits` (a country code and the rest) written "+44 7911123456"."""
    code = _country_code(digits) or ""
    return f"+{code} {_current(digits)[len(code) :]}"


# The carrier selection codes (CSP) Anatel assigned to long-distance carriers: 21 Embratel
# (Claro), 15 Telefônica (Vivo), 14 and 31 Oi, 41 TIM, 12 Algar, 43 Sercomtel, 23 Intelig, 25
# GVT, 17 Transit, 10 Gente, and the smaller carriers' (Anatel's table of CSPs; 22 and 99 as
# libphonenumber dials them). No carrier has 55: "00 55" is Brazil's own country code.
_CARRIER_CODES = frozenset(
    "10 12 13 14 15 17 19 21 22 23 24 25 26 27 28 29 31 32 34 35 36 38 41 42 43 45 46 47 48 49"
    " 51 52 53 54 56 57 58 61 62 63 64 65 67 69 71 72 81 84 89 91 95 96 98 99".split()
)


@functools.cache
def _country_codes() -> frozenset[str]:
    """E.164's country codes that libphonenumber has a numbering plan for, prefix-free: 1
    and 7, then two digits, then three. A number beginning with none (+0…, +28…, +422…) is
    nobody's."""
    import phonenumbers  # here, not above: its import takes ~60 ms, needed by phones only

    return frozenset(map(str, phonenumbers.COUNTRY_CODE_TO_REGION_CODE))


def _country_code(digits: str) -> str | None:
    """The country code `digits` begin with (`_country_codes`), or None."""
    return next((digits[:n] for n in (1, 2, 3) if digits[:n] in _country_codes()), None)


def _international_problem(digits: str) -> str | None:
    """Why `digits` (a country code and the rest) is no E.164 number, or None: its country
    code is known and the rest is a number of that country's plan (+55 Brazil's,
    `_brazilian_problem`; every other country's as libphonenumber records it,
    `_plan_problem`)."""
    code = _country_code(digits)
    if code is None:
        return "no country code begins it (E.164: +1, +44, +55 …)"
    if code == COUNTRY_CODE:
        return _brazilian_problem(digits)
    return _plan_problem(code, _current(digits)[len(code) :])


def _plan_problem(code: str, national: str) -> str | None:
    """Why `national` (the digits after the country code `code`) is no number of that
    country's numbering plan, or None. The plans are libphonenumber's (Google's, kept to the
    ITU's and the regulators' published plans, through the `phonenumbers` package): a number
    is valid when its digits are one of a landline's, a mobile's, a toll-free, shared-cost,
    premium or other service's number ranges of its country, area codes and prefixes as
    assigned, not only their count (+44 6681800 has a length the UK's plan has, for a few
    freephone numbers, and is no number)."""
    import phonenumbers  # see `_country_codes`

    calling_code = int(code)
    region = phonenumbers.region_code_for_country_code(calling_code)
    plan = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(calling_code, region)
    assert plan is not None and plan.general_desc is not None  # every code `_country_code` knows
    if len(national) not in plan.general_desc.possible_length:
        lengths = _counted(plan.general_desc.possible_length)
        return f"a number of +{code} has {lengths} digits after the country code"
    # "+39 06 …", "+225 07 …": a national number's leading zeros, as phonenumbers keeps them
    zeros = min(len(national) - len(national.lstrip("0")), len(national) - 1)
    number = phonenumbers.PhoneNumber(
        country_code=calling_code,
        national_number=int(national),
        italian_leading_zero=zeros > 0 or None,
        number_of_leading_zeros=zeros if zeros > 1 else None,
    )
    if phonenumbers.is_valid_number(number):
        return None
    return (
        f"the {len(national)} digits after +{code} are no number of that country's plan (an"
        " area code or prefix it does not have, or a digit too many or too few)"
    )


def _counted(lengths: Iterable[int]) -> str:
    """`lengths` in words: "7, 9 or 10", "5 to 15"."""
    spans: list[list[int]] = []  # [first, last] of each run of lengths
    for n in sorted(lengths):
        if spans and spans[-1][1] == n - 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    words: list[str] = []
    for first, last in spans:
        words += [f"{first} to {last}"] if last > first + 1 else map(str, range(first, last + 1))
    *most, final = words
    return f"{', '.join(most)} or {final}" if most else final


def _current(digits: str) -> str:
    """`digits` (a country code and the rest) as its country writes them today: a Mexican
    mobile without the "1" Mexico dropped in 2019 (libphonenumber's plan for +52 has no such
    number) (+52 1 55 1234 5678 is +52 55 1234 5678, one subscriber
    one text)."""
    if digits.startswith("521") and len(digits) == 13:
        return "52" + digits[3:]
    return digits


def _with_country_code(phone: str, text: str, digits: str) -> str:
    """The `digits` of `text`, written without "+", with their country code (`e164`)."""
    national = digits[1:] if digits.startswith("0") else digits
    if _NON_GEOGRAPHIC.fullmatch(COUNTRY_CODE + national):
        return COUNTRY_CODE + national  # "0800 727 0800", "4004-0001": no area code
    if digits.startswith("0"):  # trunk prefix 0, maybe a carrier code: 0 21 11 9…
        digits = digits[1:]
        if len(digits) in (12, 13):
            digits = digits[2:]
        if len(digits) not in (10, 11):
            raise NotAPhone(phone, "its area code (DDD) is missing")
    if len(digits) in (10, 11):  # area code and number
        return COUNTRY_CODE + digits
    if len(digits) < 12:  # (a Brazilian number has at most 11 without its country code)
        raise NotAPhone(phone, "its area code (DDD) is missing, or its country code")
    if _NATIONAL.search(text) and not digits.startswith(COUNTRY_CODE):
        raise NotAPhone(phone, "more than one number (an extension, or two?)")
    # 12 digits or more: E.164 without its "+" ("5511987654321", "447911123456"), as
    # providers write it, the country code already there.
    return digits


def non_geographic(phone: str) -> bool:
    """Whether the E.164 number `phone` is a Brazilian toll-free or shared-cost one (0800,
    4004 …): a number to call, which takes no SMS."""
    return _NON_GEOGRAPHIC.fullmatch(phone.removeprefix("+")) is not None


def _brazilian_problem(digits: str) -> str | None:
    """Why `digits` (+55 and the rest) is no number of Brazil's numbering plan, or None."""
    if _BRAZILIAN.fullmatch(digits) or _NON_GEOGRAPHIC.fullmatch(digits):
        return None
    if _OLD_MOBILE.fullmatch(digits):
        return "an 8-digit mobile number; mobiles have 9 digits, a 9 before these 8"
    if _UNASSIGNED_AREA.fullmatch(digits) and not re.fullmatch(_AREA_CODE, digits[2:4]):
        return f"{digits[2:4]} is no Brazilian area code (DDD)"
    return (
        "no Brazilian number (+55, an area code, then 8 digits beginning 2 to 5 or 9"
        " beginning with 9; or a 0800, 0300, 0500, 0900, 3003 or 4004 number)"
    )


def normalize_phone(value: str) -> str:
    """`value` in E.164 when it is a phone number (`e164`), else as is."""
    try:
        return e164(value)
    except NotAPhone:
        return value


def check_phone(value: str) -> str | None:
    try:
        e164(value)
    except NotAPhone as exc:
        return exc.reason
    return None


# --- table ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identifier:
    """One identifier as the schema layer sees it: the JSON Schema `format` name, a label for
    messages, and its normalise/check pair."""

    format: str
    label: str
    normalize: Callable[[str], str]
    check: Callable[[str], str | None]

    def is_valid(self, value: str) -> bool:
        return self.check(value) is None


IDENTIFIERS: Mapping[str, Identifier] = MappingProxyType(
    {
        i.format: i
        for i in (
            Identifier("plate", "plate", normalize_plate, check_plate),
            Identifier("renavam", "RENAVAM", normalize_renavam, check_renavam),
            Identifier("cpf", "CPF", normalize_cpf, check_cpf),
            Identifier("cnpj", "CNPJ", normalize_cnpj, check_cnpj),
            Identifier("cnh", "CNH number", normalize_cnh, check_cnh),
            Identifier("phone", "phone number", normalize_phone, check_phone),
        )
    }
)


def normalize_identifier(name: str, value: str) -> str:
    """`value` normalised when `name` is an identifier field (plate, cpf, ...), else as is: how
    natural keys and filter values are compared with what is stored."""
    ident = IDENTIFIERS.get(name)
    return value if ident is None else ident.normalize(value)
