"""The `events` collection: what happened, one immutable document per event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from gateway.store.client import (
    Collection,
    Doc,
    find_by_id,
    insert_new,
    parse_id,
    scoped,
    translate_errors,
    unjournaled,
)

INDEXES = [
    IndexModel([("tenant", ASCENDING), ("_id", DESCENDING)], name="by_tenant"),
    IndexModel([("tenant", ASCENDING), ("type", ASCENDING), ("_id", DESCENDING)], name="by_type"),
    IndexModel(
        [("tenant", ASCENDING), ("entity.id", ASCENDING), ("_id", DESCENDING)], name="by_entity"
    ),
]


class EventStore:
    def __init__(self, collection: Collection) -> None:
        self._c = collection
        self._relayed = unjournaled(collection)

    async def insert_many(self, events: Sequence[Doc]) -> int:
        """The relay's insert. Idempotent: an event keeps the id it got in the outbox, so a
        relay that died half-way and runs again stores nothing twice. Not journaled (its
        outbox is, until drained: `client.py` `unjournaled`). Returns how many were new."""
        return await insert_new(self._relayed, events)

    async def get(self, tenant: str, event_id: str) -> Doc | None:
        return await find_by_id(self._c, tenant, event_id)

    async def find(
        self, tenant: str, filters: Mapping[str, Any], *, before: str | None, limit: int
    ) -> list[Doc]:
        query: Doc = dict(filters)
        if before is not None and (oid := parse_id(before)) is not None:
            query["_id"] = {"$lt": oid}
        with translate_errors():
            cursor = self._c.find(scoped(tenant, query)).sort("_id", DESCENDING).limit(limit)
            return await cursor.to_list(limit)
