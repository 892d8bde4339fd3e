"""JSON nested at most MAX_DEPTH deep (SPEC §7), for bodies and for JSON inside a field."""

from __future__ import annotations

from typing import Any, Final

import orjson

from .refusal import DocumentRefused

MAX_DEPTH: Final = 32


def json_depth_exceeds(raw: bytes | str, data: Any) -> bool:
    """Whether parsed JSON nests deeper than MAX_DEPTH. Counting brackets in the raw text is
    a C-speed upper bound on depth: only a suspicious document is walked."""
    opening = raw.count(b"{") + raw.count(b"[") if isinstance(raw, bytes) else _brackets(raw)
    return opening > MAX_DEPTH and depth(data) > MAX_DEPTH


def load_json_text(text: str) -> Any:
    """Any JSON value from text; DocumentRefused (with its line and column) when malformed or
    nested deeper than MAX_DEPTH."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DocumentRefused(exc.msg, exc.lineno, exc.colno) from None
    if json_depth_exceeds(text, data):
        raise DocumentRefused(f"nested deeper than {MAX_DEPTH} levels")
    return data


def depth(value: Any) -> int:
    """The nesting of objects and arrays (a scalar is 0, `{}` is 1), walked up to past
    MAX_DEPTH only."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if not isinstance(node, dict | list):
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, level + 1) for c in children if isinstance(c, dict | list))
    return deepest


def _brackets(text: str) -> int:
    return text.count("{") + text.count("[")
