"""Cursor pagination, as every list reads it from a query: `limit` (1 to MAX_PAGE) and
`cursor` (the `next_cursor` of the previous page)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gateway.errors import BadRequest

MAX_PAGE: Final = 200
DEFAULT_PAGE: Final = 50
PAGE_PARAMS: Final = frozenset({"limit", "cursor"})


def refuse_repeated(query: Mapping[str, str], noun: str | None = None) -> None:
    """400 for a query parameter given more than once (`?type=a&type=b`, `?limit=1&limit=3`):
    which value the caller meant (the first, the last, either?) would be a guess. One rule
    for every admin route (`admin_auth`) and a trigger's reads (a plain mapping has none)."""
    getall = getattr(query, "getall", None)
    if getall is None or len(query) == len(set(query)):  # a multidict counts every pair
        return
    twice = sorted({k for k in query if len(getall(k)) > 1})
    pages = [k for k in twice if k in PAGE_PARAMS]
    what = noun or ("query parameter" if pages else "filter")
    raise BadRequest(f"the {what} {', '.join(pages or twice)} is given more than once")


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
    """A page; `next_cursor` (the last item's id) is null on a page shorter than `limit`
    (a full page's cursor may lead to an empty one: docs/api.md)."""
    return {"items": items, "next_cursor": last_id if len(items) == limit else None}
