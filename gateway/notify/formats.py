"""Template filters that format values the way a reader of the message's language expects:
dates in a time zone, numbers and money with pt-BR or English separators."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context

from gateway.clock import from_iso, zone_named

DEFAULT_TZ = "America/Sao_Paulo"
_DATE_FORMATS = {"pt-BR": "%d/%m/%Y %H:%M", "en": "%Y-%m-%d %H:%M"}


def _locale(context: Context) -> str:
    value = context.get("locale")
    return value if isinstance(value, str) else "pt-BR"


@pass_context
def format_datetime(
    context: Context, value: Any, fmt: str | None = None, tz: str = DEFAULT_TZ
) -> str:
    """An RFC 3339 time (text, as events carry it) in `tz`, `fmt` or the language's format."""
    if not isinstance(value, str | datetime):
        return "" if value is None else str(value)
    try:
        moment = value if isinstance(value, datetime) else from_iso(value)
    except ValueError:
        return str(value)
    if (zone := zone_named(tz)) is None:
        return str(value)
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(zone)
        except OverflowError:  # past the calendar there (0001-01-01T00:00Z west of UTC)
            pass  # shown in its own offset rather than failing the whole message
    return moment.strftime(fmt or _DATE_FORMATS.get(_locale(context), _DATE_FORMATS["en"]))


@pass_context
def format_number(context: Context, value: Any, decimals: int = 0) -> str:
    """1234.5 → "1.234,5" (pt-BR) or "1,234.5" (en)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return "" if value is None else str(value)
    try:
        number = float(value)
    except ValueError:
        return str(value)
    decimals = max(0, min(int(decimals), 6))
    text = f"{number:,.{decimals}f}"
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
