"""The history nothing else bounds, dropped once it is older than an operator says
(`gateway cleanup`): events, and the deliveries and flow runs that have finished.

What to drop is read through an index the collections already have, so the clean-up adds no
cost to the writes of the hot path, and dropped by `_id` in chunks of `CHUNK`, deliveries and
flow runs checked again as they are dropped (`drop_finished`); on the embedded SecantusDB a
delete holds its storage lock while it runs: many short ones let other work in between:

- events by tenant and `_id` (`by_tenant`: an event's ObjectId carries when it occurred),
  for each tenant that has events (one `distinct`, which SecantusDB answers by reading the
  collection), then only those stored (`relayed_at`) before too: the fold's event ids carry
  the device time of the fix or reading, which may be days (up to the tenant's
  `horizon_hours`) before the event was stored, and such an event dropped at once could be
  written again by a fold replaying its last pass;
- deliveries and flow runs by `due` (status, shard, `next_attempt_at`), for each final status
  and shard, then only those whose last change (`updated_at`) is older too: a delivery
  replayed yesterday stays, whenever it was first due. (The filter holds the index's fields
  alone: SecantusDB scans the collection for a filter with a field more.) Pending,
  in-flight and running work is never touched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final

from bson import ObjectId

from gateway.store.client import Collection, Doc, translate_errors

CHUNK: Final = 1_000


async def drop_events(c: Collection, before: datetime, *, dry_run: bool) -> int:
    """Events that occurred and were stored before `before`; how many (would be) dropped."""
    oldest_kept = ObjectId.from_datetime(before)
    with translate_errors():
        tenants = await c.distinct("tenant")

    def stored_before(doc: Doc) -> bool:
        return _older(doc, "relayed_at", before)

    async def delete(ids: list[Any]) -> int:
        return await _delete_ids(c, ids, {})

    dropped = 0
    for tenant in tenants:
        query = {"tenant": tenant, "_id": {"$lt": oldest_kept}}
        dropped += await _drop(_ids(c, query, stored_before), dry_run, delete)
    return dropped


async def drop_finished(
    c: Collection,
    statuses: Iterable[str],
    shards: int,
    before: datetime,
    *,
    dry_run: bool,
    point_deletes: bool,
) -> int:
    """Documents in a final status, last changed before `before`; how many (would be)
    dropped. A document may leave its final status between being read and being dropped (a
    delivery an admin replays), so the delete checks again: on MongoDB in its filter, which
    the `_id` index serves. SecantusDB reads the whole collection for such a filter (and for
    a `find_one_and_delete`), so with `point_deletes` the chunk is read again by `_id` alone
    just before a delete by `_id` alone: what changed meanwhile stays, but for what changes
    within that one round trip."""
    finals = list(statuses)

    def unchanged_since(doc: Doc) -> bool:
        return "updated_at" in doc and _older(doc, "updated_at", before)

    def still_finished(doc: Doc) -> bool:
        return doc.get("status") in finals and unchanged_since(doc)

    async def delete(ids: list[Any]) -> int:
        if not point_deletes:
            guard = {"status": {"$in": finals}, "updated_at": {"$lt": before}}
            return await _delete_ids(c, ids, guard)
        with translate_errors():
            now = await c.find({"_id": {"$in": ids}}, {"status": 1, "updated_at": 1}).to_list(None)
        still = [doc["_id"] for doc in now if still_finished(doc)]
        return await _delete_ids(c, still, {}) if still else 0

    dropped = 0
    for status in finals:
        for shard in range(shards):
            query = {"status": status, "shard": shard, "next_attempt_at": {"$lt": before}}
            dropped += await _drop(_ids(c, query, unchanged_since), dry_run, delete)
    return dropped


def _older(doc: Doc, field: str, before: datetime) -> bool:
    """Whether the document's `field` (naive from a database that drops the zone: UTC) is
    before `before`; a document without it is judged by its index fields alone."""
    when = doc.get(field)
    if when is None:
        return True
    return bool((when if when.tzinfo else when.replace(tzinfo=UTC)) < before)


async def _ids(c: Collection, query: Doc, keep: Callable[[Doc], bool]) -> AsyncIterator[list[Any]]:
    """The ids of the documents the query finds that `keep` says to drop, in chunks."""
    chunk: list[Any] = []
    with translate_errors():
        async for doc in c.find(query, {"_id": 1, "updated_at": 1, "relayed_at": 1}):
            if keep(doc):
                chunk.append(doc["_id"])
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


async def _drop(
    chunks: AsyncIterator[list[Any]],
    dry_run: bool,
    delete: Callable[[list[Any]], Awaitable[int]],
) -> int:
    dropped = 0
    async for ids in chunks:
        dropped += len(ids) if dry_run else await delete(ids)
    return dropped


async def _delete_ids(c: Collection, ids: list[Any], guard: Doc) -> int:
    with translate_errors():
        return int((await c.delete_many({"_id": {"$in": ids}, **guard})).deleted_count)
