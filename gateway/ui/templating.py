"""The UI's Jinja2 environment: options for `aiohttp_jinja2.setup` and the filters pages use.

Autoescaping is on for every template: whatever a tenant or a partner wrote (names, payloads,
mapping sources) is text on the page, never markup. Undefined names are errors, so a page
that forgets a value fails its test instead of rendering a blank.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import jinja2
import orjson

from gateway.clock import from_iso
from gateway.ui.forms import number_shown

# Fleet admins read local time: Brasília time, whatever the language.
ZONE: Final = ZoneInfo("America/Sao_Paulo")
_FORMATS: Final = {"pt-BR": "%d/%m/%Y %H:%M:%S", "en": "%Y-%m-%d %H:%M:%S"}


class _CompiledTemplates(jinja2.BytecodeCache):
    """The UI templates' compiled code, kept for the process: each app has an environment of
    its own (the tests make an app per test), and compiling a page costs 50-150 ms. A template
    whose source changed is compiled again (jinja2 checks its checksum)."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if (code := self._code.get(bucket.key)) is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


OPTIONS: Final[dict[str, Any]] = {
    "loader": jinja2.PackageLoader("gateway.ui", "templates"),
    # Shared only by environments made with these options (its keys do not name them).
    "bytecode_cache": _CompiledTemplates(),
    "autoescape": True,
    "undefined": jinja2.StrictUndefined,
    "trim_blocks": True,
    "lstrip_blocks": True,
}


def tojson_pretty(value: Any) -> str:
    """JSON for people: indented, keys in their order, non-ASCII as is. Plain text: the
    template escapes it."""
    text: str = orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()
    return text


@jinja2.pass_context
def when(context: jinja2.runtime.Context, value: Any) -> str:
    """A time in Brasília time, in the page's language, naming its zone: `06/12/2026 12:27:25
    (Brasília)`, the moment the API and the pages' JSON write in UTC (`15:27:25+00:00`); one
    past the calendar in its own offset, named so (`(UTC+00:00)`); other values as they are."""
    if isinstance(value, str):
        text: str = value
        try:
            value = from_iso(text)
        except ValueError:
            return text
    if not isinstance(value, datetime):
        return "—" if value is None else str(value)
    lang = context.get("lang")
    shown = _FORMATS.get(lang if isinstance(lang, str) else "", _FORMATS["pt-BR"])
    if not value.tzinfo:  # a time of no zone (none is stored so): as it is
        return value.strftime(shown)
    local = _local(value)
    zone = context["t"]("common.brasilia") if local.tzinfo is ZONE else _offset(local)
    return f"{local.strftime(shown)} {zone}"


def _offset(moment: datetime) -> str:
    """A moment's UTC offset as people read it: `(UTC+00:00)`."""
    offset = moment.strftime("%z")
    return f"(UTC{offset[:3]}:{offset[3:5]})"


def _local(moment: datetime) -> datetime:
    """`moment` in Brasília time; in its own offset where that is past the calendar (a fix
    a device dated 0001-01-01T00:00:00Z is kept in the track, flagged, and shown)."""
    try:
        return moment.astimezone(ZONE)
    except OverflowError:
        return moment


@jinja2.pass_context
def number(context: jinja2.runtime.Context, value: Any, digits: int | None = None) -> str:
    """A number grouped by thousands with `digits` decimals (None: as many as it has), in the
    page's language: pt-BR `18.250,0`, English `18,250.0` (the forms read either back as the
    same number)."""
    lang = context.get("lang")
    return number_shown(value, lang if isinstance(lang, str) else "pt-BR", digits)


FILTERS: Final[dict[str, Any]] = {"tojson_pretty": tojson_pretty, "when": when, "number": number}
