"""The history nothing else bounds, dropped once it is older than an operator says
(`gateway cleanup`): events, and the deliveries and flow runs that have finished.

What to drop is read through an index the collections already have, so the clean-up adds no
cost to the writes of the hot path, and dropped by `_id` in chunks of `CHUNK`, deliveries and
flow runs checked again in the delete's filter (`drop_finished`); on the embedded SecantusDB a
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
  alone: with a field more, SecantusDB reads it through its first field an index serves
  alone, `status`, every document of that status.) Pending, in-flight and running work is
  never touched.
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
) -> int:
    """Documents in a final status, last changed before `before`; how many (would be)
    dropped. A document may leave its final status between being read and being dropped (a
    delivery an admin replays), so the delete checks again in its filter: `_id` first, read
    through the `_id` index (SecantusDB too: a point lookup per id, the rest matched on what
    it read; 1,000 of 20,000 deliveries dropped in the same time as by `_id` alone). Until
    2026-12-07 SecantusDB read the chunk again by `_id` just before an unguarded delete (said
    to scan such a filter, which holds for a `find_one_and_delete`: 600 ms each at 20,000), and
    a replay within that round trip lost its delivery."""
    finals = list(statuses)

    def unchanged_since(doc: Doc) -> bool:
        return "updated_at" in doc and _older(doc, "updated_at", before)

    async def delete(ids: list[Any]) -> int:
        guard = {"status": {"$in": finals}, "updated_at": {"$lt": before}}
        return await _delete_ids(c, ids, guard)

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
