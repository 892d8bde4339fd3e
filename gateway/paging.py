"""Cursor pagination, as every list reads it from a query: `limit` (1 to MAX_PAGE) and
`cursor` (the `next_cursor` of the previous page)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gateway.errors import BadRequest

MAX_PAGE: Final = 200
DEFAULT_PAGE: Final = 50
PAGE_PARAMS: Final = frozenset({"limit", "cursor"})


def page_params(query: Mapping[str, str], default: int = DEFAULT_PAGE) -> tuple[int, str | None]:
    raw = query.get("limit", str(default))
    # ASCII digits only: int() would also take " 5", "+5", "5_0" and other scripts' digits.
    if not (raw.isascii() and raw.isdigit()):
        raise BadRequest(f"limit must be an integer, got {raw!r}")
    # int() refuses text past 4,300 digits (ValueError: a 500 once); any that long is too big.
    limit = int(raw) if len(raw) <= 9 else MAX_PAGE + 1
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
    return limit, query.get("cursor") or None


def page(items: list[Any], limit: int, last_id: str | None) -> dict[str, Any]:
    """A page; `next_cursor` (the last item's id) is null on the last page."""
    return {"items": items, "next_cursor": last_id if len(items) == limit else None}
