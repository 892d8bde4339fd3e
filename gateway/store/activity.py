"""Read-only views across collections for the admin dashboard: what came in, what went out
and what failed over the last hours, per tenant.

Events and rejected payloads carry ObjectIds, whose first four bytes are their creation
time, so "since T" is a range on the primary key; deliveries have `created_at`. Each read is
bounded (`limit`) and projects only timestamps and statuses: the dashboard counts what the
store can tell cheaply, and says so when it hit the bound.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import DESCENDING

from gateway.store.client import Database, Doc, scoped, translate_errors


class ActivityStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def event_times(self, tenant: str, since: datetime, limit: int) -> list[datetime]:
        """Creation times of the tenant's events since `since`, newest first."""
        return await self._id_times("events", tenant, since, limit)

    async def rejected_times(self, tenant: str, since: datetime, limit: int) -> list[datetime]:
        return await self._id_times("rejected", tenant, since, limit)

    async def delivery_states(
        self, tenant: str, since: datetime, limit: int
    ) -> list[tuple[datetime, str]]:
        """(created_at, status) of the tenant's deliveries created since `since`."""
        query = scoped(tenant, {"created_at": {"$gte": since}})
        with translate_errors():
            cursor = self._db["deliveries"].find(query, {"created_at": 1, "status": 1})
            docs = await cursor.limit(limit).to_list(limit)
        return [(d["created_at"], d["status"]) for d in docs]

    async def count_deliveries(self, tenant: str, statuses: list[str]) -> int:
        with translate_errors():
            return await self._db["deliveries"].count_documents(
                scoped(tenant, {"status": {"$in": statuses}})
            )

    async def count_pending_rejected(self, tenant: str) -> int:
        with translate_errors():
            return await self._db["rejected"].count_documents(scoped(tenant, {"status": "pending"}))

    async def unhealthy_partners(self, tenant: str) -> list[Doc]:
        """Partners that are disabled or failing, by what the delivery workers recorded (the
        first 200). The tenant's partners (its configuration: `by_tenant`), picked here: with
        the `$or` at the filter's top, SecantusDB matched every tenant's partners."""
        projection: dict[str, Any] = {"name": 1, "status": 1, "failing_since": 1}
        found: list[Doc] = []
        with translate_errors():
            cursor = self._db["partners"].find(scoped(tenant, {}), projection)
            async for doc in cursor:
                if doc.get("status") == "disabled" or "failing_since" in doc:
                    found.append(doc)
                    if len(found) == 200:
                        break
            await cursor.close()
        return found

    async def partner_names(self, tenant: str, ids: list[str]) -> dict[str, str]:
        oids = [ObjectId(i) for i in ids if ObjectId.is_valid(i)]
        if not oids:
            return {}
        with translate_errors():
            docs = (
                await self._db["partners"]
                .find(scoped(tenant, {"_id": {"$in": oids}}), {"name": 1})
                .to_list(len(oids))
            )
        return {str(d["_id"]): d["name"] for d in docs}

    async def _id_times(
        self, collection: str, tenant: str, since: datetime, limit: int
    ) -> list[datetime]:
        query = scoped(tenant, {"_id": {"$gte": ObjectId.from_datetime(since)}})
        with translate_errors():
            cursor = self._db[collection].find(query, {"_id": 1}).sort("_id", DESCENDING)
            docs = await cursor.limit(limit).to_list(limit)
        return [d["_id"].generation_time for d in docs]
