"""Dotted field paths and JSON Pointers: parsing targets, flatten/unflatten documents."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
"""Names of template vars and params."""
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_-]*"
TARGET_RE = re.compile(rf"^{_SEGMENT}(?:\.{_SEGMENT})*$")
MAX_TARGET_LENGTH = 200

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PLAIN_PATH_RE = re.compile(rf"^(?:{_IDENT}|{_QUOTED})(?:\.(?:{_IDENT}|{_QUOTED}))*$")
_PART_RE = re.compile(rf"{_IDENT}|{_QUOTED}")


def pointer(*parts: str | int) -> str:
    """A JSON Pointer (RFC 6901) from unescaped parts."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def plain_path(expression: str) -> tuple[str, ...] | None:
    """The keys of a plain dotted expression (`a.b`, `"a.b".c`), or None for anything else."""
    text = expression.strip()
    if not _PLAIN_PATH_RE.match(text):
        return None
    keys: list[str] = []
    for part in _PART_RE.findall(text):
        if part.startswith('"'):
            try:
                keys.append(json.loads(part))
            except ValueError:
                return None
        else:
            keys.append(part)
    return tuple(keys)


def source_pointer(expression: str) -> str:
    """The JSON Pointer an expression reads, when it is a plain path; else ""."""
    keys = plain_path(expression)
    return pointer(*keys) if keys else ""


def flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects to dotted keys: `{"a": {"b": 1}}` → `{"a.b": 1}`.

    Lists and empty objects are leaves, so `unflatten(flatten(d)) == d` for documents whose
    keys contain no dots.
    """
    flat: dict[str, Any] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys to nested objects: `{"a.b": 1}` → `{"a": {"b": 1}}`.

    Raises ValueError when one key is a prefix of another (`a` and `a.b`).
    """
    document: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = document
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{name!r} conflicts with another key")
            node = child
        if leaf in node:
            raise ValueError(f"{name!r} conflicts with another key")
        node[leaf] = value
    return document
