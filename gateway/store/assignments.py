"""The `driver_assignments` collection: who drove which vehicle from when.

A vehicle's history is a list of *changes*: `{_id, tenant, vehicle_id, plate, start, driver:
{id, cpf, name} | null, source, ref?, author, recorded_at}`. A change lasts until the next
one; `driver: null` means nobody drives the vehicle from `start`. The `_id` is
`<tenant>:<vehicle id>:<start as fixed-width UTC text>`, so the primary index alone answers
"the driver at T" (the last change at or before T) and pages through a history, and two
reports of the same instant are one document (the later write wins).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument

from gateway.store.client import Collection, Doc, scoped, translate_errors

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width: text order is time order
ASSIGNMENT_RANGES = IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="ranges")
"""Where the server scans for a range of `_id` (SecantusDB): every read here is one."""


def change_id(tenant: str, vehicle_id: str, start: datetime) -> str:
    return f"{_prefix(tenant, vehicle_id)}{start.astimezone(UTC).strftime(_TIME_FORMAT)}"


def _prefix(tenant: str, vehicle_id: str) -> str:
    return f"{tenant}:{vehicle_id}:"


class AssignmentStore:
    def __init__(self, collection: Collection) -> None:
        self._c = collection

    async def record(self, tenant: str, vehicle_id: str, fields: Mapping[str, Any]) -> Doc | None:
        """Store the change at `fields["start"]`; returns the change it replaced (same instant)
        or None."""
        doc_id = change_id(tenant, vehicle_id, fields["start"])
        with translate_errors():
            return await self._c.find_one_and_update(
                scoped(tenant, {"_id": doc_id}),
                {"$set": {**fields, "vehicle_id": vehicle_id}},
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )

    async def at(self, tenant: str, vehicle_id: str, when: datetime) -> Doc | None:
        """The change in force at `when`: the last one that started at or before it."""
        prefix = _prefix(tenant, vehicle_id)
        query = {"_id": {"$gte": prefix, "$lte": change_id(tenant, vehicle_id, when)}}
        with translate_errors():
            return await self._c.find_one(scoped(tenant, query), sort=[("_id", DESCENDING)])

    async def next_after(self, tenant: str, vehicle_id: str, when: datetime) -> Doc | None:
        """The first change that starts after `when` (where the change at `when` ends)."""
        prefix = _prefix(tenant, vehicle_id)
        query = {"_id": {"$gt": change_id(tenant, vehicle_id, when), "$lt": prefix + "~"}}
        with translate_errors():
            return await self._c.find_one(scoped(tenant, query), sort=[("_id", 1)])

    async def history(
        self, tenant: str, vehicle_id: str, *, before: str | None, limit: int
    ) -> list[Doc]:
        """Changes newest first; `before` is the `_id` the previous page ended with."""
        prefix = _prefix(tenant, vehicle_id)
        upper = before if before is not None and before.startswith(prefix) else prefix + "~"
        query = {"_id": {"$gte": prefix, "$lt": upper}}
        with translate_errors():
            cursor = self._c.find(scoped(tenant, query)).sort("_id", DESCENDING)
            return await cursor.limit(limit).to_list(limit)
