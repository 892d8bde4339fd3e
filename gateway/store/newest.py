"""Newest-first pages that do not read a tenant's whole history.

The embedded SecantusDB reads every document a query matches before it applies a limit (SPEC
§8), so `find({tenant}).sort(_id, -1).limit(20)` costs as much as the tenant has ever stored:
a deliveries list grew from milliseconds to seconds in a soak, and overloaded the database.

Ids that begin with an ObjectId are ordered by time (deliveries, events, flow runs). A page is
read in windows of `_id`, newest first: everything from 8 s before the anchor (now, or the
cursor's time; one query after a cursor that has none), then each window 8 times wider than
the last, then the rest. The windows
partition the ids, so the answer is exactly that of the single query, in the same order; but
it stops at the first windows that fill the page, so its cost follows recent documents, not
the history. An id that does not start with an ObjectId sorts where it sorts: it is still
read by exactly one window.

Only for queries an index covers whole (`windowed`): SecantusDB's planner uses an index only
when every predicate is on its fields; one more (a status) makes every window a collection
scan, and then one query is cheaper than several.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, DESCENDING

from gateway.clock import utcnow
from gateway.store.client import Collection, Doc, scoped, translate_errors

FIRST = timedelta(seconds=8)
GROWTH = 8
WIDEST = timedelta(days=30)  # past this, one last window takes everything older
# No ObjectId is older than the epoch: a window that would reach past it is the last one.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ABSENT = object()


def _bound_of(ids: type) -> Callable[[datetime], Any]:
    if ids is ObjectId:
        return ObjectId.from_datetime
    return lambda when: str(ObjectId.from_datetime(when))


def _time_of(cursor: Any) -> datetime | None:
    """When the id was made, when it starts with an ObjectId."""
    if isinstance(cursor, ObjectId):
        return cursor.generation_time
    try:
        return ObjectId(str(cursor)[:24]).generation_time
    except (InvalidId, TypeError):
        return None


async def newest_first(
    collection: Collection,
    tenant: str,
    query: Mapping[str, Any],
    *,
    before: Any | None,
    limit: int,
    windowed: bool,
    ids: type = str,
    projection: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    picked: Mapping[str, Any] | None = None,
) -> list[Doc]:
    """Up to `limit` documents of `tenant` matching `query` with `_id` below `before` (all when
    None), highest `_id` first. `ids` is the type of the collection's ids (str or ObjectId);
    `windowed`: an index covers the tenant, the query's fields and `_id` (else one query).
    `picked`: equalities on top-level fields no index has, applied here to what each window
    reads (as the database would: to fields that are not arrays) instead of sent: the
    database reads the tenant's windows through its index rather than every tenant's
    documents (SecantusDB; `projection` must keep those fields)."""
    bound = _bound_of(ids)
    anchor = now or utcnow()
    if before is not None:  # the windows start at the cursor's time, when it has one
        cursor_time = _time_of(before)
        windowed = windowed and cursor_time is not None
        anchor = cursor_time or anchor
    found: list[Doc] = []
    upper, width = before, (FIRST if windowed else WIDEST * GROWTH)
    while len(found) < limit:
        lower = bound(anchor - width) if width <= WIDEST and anchor - width > EPOCH else None
        window: dict[str, Any] = {}
        if lower is not None:
            window["$gte"] = lower
        if upper is not None:
            window["$lt"] = upper
        wanted = limit - len(found)
        select = scoped(tenant, {**query, "_id": window} if window else dict(query))
        with translate_errors():
            cursor = collection.find(select, projection).sort("_id", DESCENDING)
            if picked is None:
                found += await cursor.limit(wanted).to_list(wanted)
            else:
                async for doc in cursor:
                    if all(doc.get(k, _ABSENT) == v for k, v in picked.items()):
                        found.append(doc)
                        if len(found) == limit:
                            break
                await cursor.close()
        if lower is None:
            break
        upper, width = lower, width * GROWTH
    return found


async def newest_in_range(
    collection: Collection,
    tenant: str,
    ids: tuple[str, str],
    bound: Callable[[datetime], str],
    *,
    anchor: datetime,
    limit: int,
    upper_op: str = "$lt",
    windowed: bool = True,
) -> list[Doc]:
    """Up to `limit` documents of `tenant` with `_id` in [ids[0], ids[1]) (`upper_op` "$lte":
    ]), highest first, where `bound(t)` is the id of time `t` (a vehicle's fixes, its driver
    changes: ids that sort by time): in windows back from `anchor` as `newest_first` reads,
    the first one taking everything from `anchor` - 8 s up to the upper bound (one query
    when not `windowed`: MongoDB reads a range of `_id` up to the limit)."""
    low, high = ids
    found: list[Doc] = []
    upper, op, width = high, upper_op, (FIRST if windowed else WIDEST * GROWTH)
    while len(found) < limit:
        lower = low
        if width <= WIDEST:
            try:
                lower = max(low, bound(anchor - width))
            except OverflowError:  # before year 1: the last window
                pass
        wanted = limit - len(found)
        select = scoped(tenant, {"_id": {"$gte": lower, op: upper}})
        with translate_errors():
            cursor = collection.find(select).sort("_id", DESCENDING).limit(wanted)
            found += await cursor.to_list(wanted)
        if lower == low:
            break
        if lower < upper:  # (an anchor past the upper bound: its windows start below it)
            upper, op = lower, "$lt"
        width *= GROWTH
    return found


async def oldest_in_range(
    collection: Collection,
    tenant: str,
    ids: tuple[str, str],
    bound: Callable[[datetime], str],
    *,
    anchor: datetime,
    limit: int,
    lower_op: str = "$gte",
    windowed: bool = True,
) -> list[Doc]:
    """Up to `limit` documents of `tenant` with `_id` in [ids[0], ids[1]) (`lower_op` "$gt":
    ]ids[0]), lowest first, where `bound(t)` is the id of time `t`: everything before
    `anchor` first, then windows forward from it, 8 s wide, each next one 8 times wider, the
    last one up to the upper bound. They partition the range: the answer is that of one
    query, but the windows stop at those that fill the page (one query when not
    `windowed`)."""
    low, high = ids
    found: list[Doc] = []
    lower, op, width = low, lower_op, FIRST
    edge: datetime | None = anchor if windowed else None
    while len(found) < limit:
        try:
            upper = high if edge is None else min(high, bound(edge))
        except OverflowError:  # past year 9999: the last window
            upper = high
        if upper > lower or upper == high:
            wanted = limit - len(found)
            select = scoped(tenant, {"_id": {op: lower, "$lt": upper}})
            with translate_errors():
                cursor = collection.find(select).sort("_id", ASCENDING).limit(wanted)
                found += await cursor.to_list(wanted)
            if upper == high:
                break
            lower, op = upper, "$gte"
        try:
            edge, width = (None if edge is None else edge + width), width * GROWTH
        except OverflowError:  # the next window is the last
            edge = None
    return found
