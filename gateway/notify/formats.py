"""Template filters that format values the way a reader of the message's language expects:
dates in a time zone with the language's month and weekday names, numbers and money with
pt-BR or English separators, rounded half up as the amount is written (R$ 2,675 → R$ 2,68)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from decimal import Context as DecimalContext
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context

from gateway.clock import from_iso, zone_named

DEFAULT_TZ = "America/Sao_Paulo"
# `tz` naming no zone: a time in the offset it is written with (a fine's notice's own clock,
# `2026-11-18T13:45:00-05:00` in Rio Branco: 13:45); one in UTC (no local clock said), or
# without an offset, in DEFAULT_TZ.
AS_WRITTEN = "as_written"
_DATE_FORMATS = {"pt-BR": "%d/%m/%Y %H:%M", "en": "%Y-%m-%d %H:%M"}
_PT_MONTHS = (
    "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro"
).split()
_PT_DAYS = "segunda-feira terça-feira quarta-feira quinta-feira sexta-feira sábado domingo".split()
# strftime's whole-date directives as a Brazilian reader writes them (glibc's pt_BR).
_PT_COMPOSED = {"c": "%a %d %b %Y %H:%M:%S", "x": "%d/%m/%Y", "X": "%H:%M:%S"}
_DIRECTIVE = re.compile(r"%(.)", re.DOTALL)
_EXACT_DIGITS = 100  # a number this many places from the point is formatted as a float
_EXACT = DecimalContext(prec=2 * _EXACT_DIGITS)  # room for every digit of the others


def _locale(context: Context) -> str:
    value = context.get("locale")
    return value if isinstance(value, str) else "pt-BR"


@pass_context
def format_datetime(
    context: Context, value: Any, fmt: str | None = None, tz: str = DEFAULT_TZ
) -> str:
    """An RFC 3339 time (text, as events carry it) in `tz` (`as_written`: in its own offset),
    `fmt` or the language's format."""
    if not isinstance(value, str | datetime):
        return "" if value is None else str(value)
    try:
        moment = value if isinstance(value, datetime) else from_iso(value)
    except ValueError:
        return str(value)
    own = tz == AS_WRITTEN and moment.utcoffset() not in (None, timedelta(0))
    if (zone := zone_named(DEFAULT_TZ if tz == AS_WRITTEN else tz)) is None:
        return str(value)
    if moment.tzinfo is not None and not own:
        try:
            moment = moment.astimezone(zone)
        except OverflowError:  # past the calendar there (0001-01-01T00:00Z west of UTC)
            pass  # shown in its own offset rather than failing the whole message
    locale = _locale(context)
    fmt = fmt or _DATE_FORMATS.get(locale, _DATE_FORMATS["en"])
    return moment.strftime(_named_in_portuguese(fmt, moment) if locale == "pt-BR" else fmt)


def _named_in_portuguese(fmt: str, moment: datetime) -> str:
    """`fmt` with the names strftime would write in its C locale's English (`%A %a %B %b
    %h`, and the whole-date `%c %x %X`) written in Portuguese: "quarta-feira, 18 de
    novembro de 2026". Other directives are left to strftime (`%p` is "AM" or "PM", so a
    12-hour `%I:%M %p` says which half of the day); `%%` stays one."""

    def name(directive: re.Match[str]) -> str:
        code = directive[1]
        if code in _PT_COMPOSED:
            return _DIRECTIVE.sub(name, _PT_COMPOSED[code])
        weekday, month = _PT_DAYS[moment.weekday()], _PT_MONTHS[moment.month - 1]
        named = {"A": weekday, "a": weekday[:3], "B": month, "b": month[:3], "h": month[:3]}
        return named[code].replace("%", "%%") if code in named else directive[0]

    return _DIRECTIVE.sub(name, fmt)


@pass_context
def format_number(context: Context, value: Any, decimals: int = 0) -> str:
    """1234.5 → "1.234,5" (pt-BR) or "1,234.5" (en); rounded half up on the decimals as
    written (2.675 is 2.68: the binary float nearest it, 2.67499…, made 2.67)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return "" if value is None else str(value)
    try:
        number = Decimal(value if isinstance(value, int | str) else repr(value))
    except (InvalidOperation, ValueError):
        return str(value)
    decimals = max(0, min(int(decimals), 6))
    if number.is_finite() and abs(number.adjusted()) < _EXACT_DIGITS:
        number = number.quantize(
            Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP, context=_EXACT
        )
        text = f"{number:,.{decimals}f}"
    else:  # infinite, not a number, or past any amount: as the float it is
        text = f"{float(number):,.{decimals}f}"
    if _locale(context) == "pt-BR":
        text = text.replace(",", "\0").replace(".", ",").replace("\0", ".")
    return text


@pass_context
def format_money(context: Context, value: Any, currency: str = "BRL") -> str:
    """130.16 → "R$ 130,16" (pt-BR) or "R$130.16" (en); other currencies by their code."""
    amount = format_number(context, value, 2)
    if not amount:
        return amount
    symbol = "R$" if currency == "BRL" else currency
    return f"{symbol} {amount}" if _locale(context) == "pt-BR" else f"{symbol}{amount}"


FILTERS: dict[str, Callable[..., str]] = {
    "datetime": format_datetime,
    "number": format_number,
    "money": format_money,
}
