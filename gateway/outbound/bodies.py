"""A request mapping's body as the bytes its Content-Type says: JSON by default, form-encoded
when the mapping's headers name `application/x-www-form-urlencoded` (Twilio, Pushover, many
SMS gateways and token endpoints take nothing else), in the charset the Content-Type names
(UTF-8 without one; a Delphi/Protheus ERP's `charset=ISO-8859-1` or `windows-1252`).

A character the charset cannot write is never replaced silently: in JSON it is written as its
`\\uXXXX` escape (the same text to any JSON reader), in a form it is a problem naming the
field and the character (a form has no escape for it). An unknown charset is a problem."""

from __future__ import annotations

import codecs
from collections.abc import Mapping, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qsl, quote_plus, urlencode

import orjson

from gateway.auth.signatures import header_value
from gateway.errors import FieldProblem, InvalidPayload
from gateway.formats.charsets import charset_param, unknown_charset, writing_codec

FORM: Final = "application/x-www-form-urlencoded"
JSON: Final = "application/json"
_JSON_ESCAPE: Final = "rabbot.json_escape"


def content_type(headers: Mapping[str, str]) -> str | None:
    """The media type the headers name (any spelling of the header), without parameters."""
    value = header_value(headers, "Content-Type")
    return None if value is None else value.split(";")[0].strip().lower()


def body_codec(headers: Mapping[str, str]) -> str | None:
    """The codec the body is written in: the one the Content-Type's charset names, None for
    UTF-8 (or none named). InvalidPayload for a charset no one knows."""
    value = header_value(headers, "Content-Type")
    charset = None if value is None else charset_param(value)
    if charset is None:
        return None
    codec = writing_codec(charset)
    if codec is None:
        message = f"the Content-Type header names an {unknown_charset(value or '')}"
        raise InvalidPayload(message, [FieldProblem("/headers/Content-Type", message, "charset")])
    return None if codec == "utf-8" else codec


def encode_body(headers: MutableMapping[str, str], value: Any) -> bytes:
    """The body's bytes: form-encoded under a form Content-Type, else JSON (and the
    Content-Type set to JSON when the headers name none), in the charset it names.
    InvalidPayload for a form body that is not a flat object, a form field the charset cannot
    write, or an unknown charset."""
    kind = content_type(headers)
    codec = body_codec(headers)
    if kind == FORM:
        label = charset_param(header_value(headers, "Content-Type") or "") or "UTF-8"
        return _form(form_pairs(value), codec or "utf-8", label)
    if kind is None:
        headers["Content-Type"] = JSON
    data = orjson.dumps(value, default=str)
    return data if codec is None else data.decode().encode(codec, _JSON_ESCAPE)


def written_codec(headers: Mapping[str, str]) -> str | None:
    """The codec a request's body was written in (`body_codec`), None for UTF-8, none named,
    or a charset no one knows (no body was written under it)."""
    try:
        return body_codec(headers)
    except InvalidPayload:
        return None


def body_text(headers: Mapping[str, str], body: bytes) -> str:
    """A body as text for a delivery's record or a dry run, in the charset it was written in
    (UTF-8 without one; what a charset cannot read is U+FFFD); a form written in another
    charset as the same fields percent-encoded in UTF-8, as a UTF-8 form shows them, so that
    a secret in it is found and masked as in any other (redaction.py reads escapes as UTF-8)."""
    codec = written_codec(headers)
    if codec is None:
        return body.decode("utf-8", "replace")
    if content_type(headers) == FORM:
        try:
            fields = parse_qsl(body.decode("ascii"), True, encoding=codec, errors="strict")
            return urlencode(fields)
        except (UnicodeError, ValueError):
            pass
    return body.decode(codec, "replace")


def _form(pairs: list[tuple[str, str]], codec: str, label: str) -> bytes:
    """`name=value&...`, each percent-encoding the charset's bytes (`Jo%E3o` in Latin-1)."""
    parts: list[str] = []
    for name, value in pairs:
        try:
            parts.append(f"{quote_plus(name, encoding=codec)}={quote_plus(value, encoding=codec)}")
        except UnicodeEncodeError as exc:
            char = exc.object[exc.start]
            message = (
                f"form field {name!r}: {char!r} (U+{ord(char):04X}) cannot be written in "
                f"{label}, the charset the Content-Type names; send UTF-8, or map the value to "
                "characters the charset has"
            )
            raise InvalidPayload(
                message, [FieldProblem(f"/body/{name}", message, "charset")]
            ) from None
    return "&".join(parts).encode("ascii")


def _json_escape(error: UnicodeError) -> tuple[str, int]:
    """The `\\uXXXX` escapes (a surrogate pair past U+FFFF) of characters a charset cannot
    write: JSON's syntax is ASCII, so they are inside strings, where the escape is the same
    text."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    escaped = []
    for char in error.object[error.start : error.end]:
        code = ord(char)
        if code > 0xFFFF:
            code -= 0x10000
            escaped.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            escaped.append(f"\\u{code:04x}")
    return "".join(escaped), error.end


codecs.register_error(_JSON_ESCAPE, _json_escape)


def form_pairs(body: Any) -> list[tuple[str, str]]:
    """A flat object as form fields: text as it is, numbers as JSON writes them, booleans
    `true`/`false`, a list of such values as the field repeated (Twilio's `MediaUrl`); null
    values are left out."""
    if not isinstance(body, dict):
        raise InvalidPayload("a form-encoded body is a flat object of text values")
    pairs: list[tuple[str, str]] = []
    for name, value in body.items():
        for each in value if isinstance(value, list) else [value]:
            if isinstance(each, dict | list):
                raise InvalidPayload(
                    f"a form-encoded body is a flat object of text values: {name!r} is not"
                )
            if each is not None:
                pairs.append((str(name), _text(each)))
    return pairs


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode() if isinstance(value, int | float) else str(value)
