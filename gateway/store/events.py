"""The `events` collection: what happened, one immutable document per event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from gateway.errors import Conflict
from gateway.store.client import Collection, Doc, insert_new, scoped, translate_errors
from gateway.store.entities import parse_id

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

    async def insert(self, event: Doc) -> bool:
        """Idempotent: the event's `_id` comes from the outbox, so a relay that crashed
        half-way and runs again does not store it twice. False when it already existed."""
        try:
            with translate_errors():
                await self._c.insert_one(event)
        except Conflict:
            return False
        return True

    async def insert_many(self, events: Sequence[Doc]) -> int:
        """Idempotent like `insert`, for a relay batch; returns how many were new."""
        return await insert_new(self._c, events)

    async def get(self, tenant: str, event_id: str) -> Doc | None:
        oid = parse_id(event_id)
        if oid is None:
            return None
        with translate_errors():
            return await self._c.find_one(scoped(tenant, {"_id": oid}))

    async def find(
        self, tenant: str, filters: Mapping[str, Any], *, before: str | None, limit: int
    ) -> list[Doc]:
        query: Doc = dict(filters)
        if before is not None and (oid := parse_id(before)) is not None:
            query["_id"] = {"$lt": oid}
        with translate_errors():
            cursor = self._c.find(scoped(tenant, query)).sort("_id", DESCENDING).limit(limit)
            return await cursor.to_list(limit)
