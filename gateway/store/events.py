"""The `events` collection: what happened, one immutable document per event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel

from gateway.store.client import (
    Collection,
    Doc,
    canonical_filters,
    cursor_id,
    find_by_id,
    insert_new,
    translate_errors,
)
from gateway.store.history import drop_events
from gateway.store.newest import newest_first

INDEXES = [
    IndexModel([("tenant", ASCENDING), ("_id", DESCENDING)], name="by_tenant"),
    IndexModel([("tenant", ASCENDING), ("type", ASCENDING), ("_id", DESCENDING)], name="by_type"),
    IndexModel(
        [("tenant", ASCENDING), ("entity.id", ASCENDING), ("_id", DESCENDING)], name="by_entity"
    ),
]
# The filters an index covers with the tenant and `_id` (INDEXES).
_COVERED = [set(), {"type"}, {"entity.id"}]


class EventStore:
    def __init__(self, collection: Collection) -> None:
        self._c = collection

    async def insert_many(self, events: Sequence[Doc]) -> int:
        """The relay's insert. Idempotent: an event keeps the id it got in the outbox, so a
        relay that died half-way and runs again stores nothing twice. Journaled, like
        everything the relay writes before a drain (`client.py` `unjournaled` says why).
        Returns how many were new."""
        return await insert_new(self._c, events)

    async def stored(self, event_ids: Sequence[Any]) -> set[Any]:
        """Those of these event ids the log holds."""
        if not event_ids:
            return set()
        with translate_errors():
            cursor = self._c.find({"_id": {"$in": list(event_ids)}}, {"_id": 1})
            return {doc["_id"] async for doc in cursor}

    async def get(self, tenant: str, event_id: str) -> Doc | None:
        return await find_by_id(self._c, tenant, event_id)

    async def drop_before(self, before: datetime, *, dry_run: bool = False) -> int:
        """Every tenant's events that occurred before `before` (`gateway cleanup`)."""
        return await drop_events(self._c, before, dry_run=dry_run)

    async def find(
        self, tenant: str, filters: Mapping[str, Any], *, before: str | None, limit: int
    ) -> list[Doc]:
        """Newest first, in windows of time (`newest.py`) when an index covers the filter:
        the cost follows the latest events, not the tenant's history."""
        query: Doc = canonical_filters(filters)
        picked: Doc | None = None
        if "entity.id" in query and "type" in query:
            # An entity's events of one type: its events through `by_entity`, the type
            # picked here (with both sent, SecantusDB read every event of the tenant).
            picked = {"type": query.pop("type")}
        return await newest_first(
            self._c,
            tenant,
            query,
            before=cursor_id(before) if before is not None else None,
            limit=limit,
            windowed=set(query) in _COVERED,
            ids=ObjectId,
            picked=picked,
        )
