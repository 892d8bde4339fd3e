"""A request mapping's body as the bytes its Content-Type says: JSON by default, form-encoded
when the mapping's headers name `application/x-www-form-urlencoded` (Twilio, Pushover, many
SMS gateways and token endpoints take nothing else)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Final
from urllib.parse import urlencode

import orjson

from gateway.auth.signatures import header_value
from gateway.errors import InvalidPayload

FORM: Final = "application/x-www-form-urlencoded"
JSON: Final = "application/json"


def content_type(headers: MutableMapping[str, str]) -> str | None:
    """The media type the headers name (any spelling of the header), without parameters."""
    value = header_value(headers, "Content-Type")
    return None if value is None else value.split(";")[0].strip().lower()


def encode_body(headers: MutableMapping[str, str], value: Any) -> bytes:
    """The body's bytes: form-encoded under a form Content-Type, else JSON (and the
    Content-Type set to JSON when the headers name none). InvalidPayload for a form body
    that is not a flat object."""
    kind = content_type(headers)
    if kind == FORM:
        return urlencode(form_pairs(value)).encode()
    if kind is None:
        headers["Content-Type"] = JSON
    return orjson.dumps(value, default=str)


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
