"""The history nothing else bounds, dropped once it is older than an operator says
(`gateway cleanup`): events, and the deliveries and flow runs that have finished.

Every read and delete goes through an index the collections already have, so the clean-up
adds no cost to the writes of the hot path:

- events by tenant and `_id` (`by_tenant`: an event's ObjectId carries when it occurred),
  for each tenant that has events (one `distinct`);
- deliveries and flow runs by `due` (status, shard, `next_attempt_at`), for each final status
  and shard, and only those whose last change (`updated_at`) is older too: a delivery
  replayed yesterday stays, whenever it was first due. Pending, in-flight and running work
  is never touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from bson import ObjectId

from gateway.store.client import Collection, Doc, translate_errors


async def drop_events(c: Collection, before: datetime, *, dry_run: bool) -> int:
    """Events that occurred before `before`; how many (would be) dropped."""
    oldest_kept = ObjectId.from_datetime(before)
    with translate_errors():
        tenants = await c.distinct("tenant")
    return sum(
        [await _drop(c, {"tenant": t, "_id": {"$lt": oldest_kept}}, dry_run) for t in tenants]
    )


async def drop_finished(
    c: Collection, statuses: Iterable[str], shards: int, before: datetime, *, dry_run: bool
) -> int:
    """Documents in a final status, last changed before `before`; how many (would be)
    dropped."""
    dropped = 0
    for status in statuses:
        for shard in range(shards):
            query = {
                "status": status,
                "shard": shard,
                "next_attempt_at": {"$lt": before},
                "updated_at": {"$lt": before},
            }
            dropped += await _drop(c, query, dry_run)
    return dropped


async def _drop(c: Collection, query: Doc, dry_run: bool) -> int:
    with translate_errors():
        if dry_run:
            return await c.count_documents(query)
        return (await c.delete_many(query)).deleted_count
