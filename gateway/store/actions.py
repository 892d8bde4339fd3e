"""The `actions` and `subscriptions` collections.

An action is `{_id, tenant, name, partner_id, method, path, mode, request_mapping?,
response_mapping?, success, retry_schedule?, ordered, write_back, rev, created_at,
updated_at}` (the mapping field names are read by `store/mappings.py` to refuse deleting a
mapping in use). A subscription is `{_id, tenant, action_id, partner_id, event_types, filter,
status, disabled_reason?, secrets: [{sealed, created_at, expires_at?}], rev, created_at,
updated_at}`; its signing secrets are only stored sealed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument

from gateway.store.client import Collection, Doc, scoped, translate_errors
from gateway.store.entities import parse_id

ACTION_INDEXES = [
    IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="by_tenant"),
    IndexModel([("tenant", ASCENDING), ("partner_id", ASCENDING)], name="by_partner"),
]
SUBSCRIPTION_INDEXES = [
    # The fan-out's query: a tenant's active subscriptions (equality only: SecantusDB uses an
    # index for equality, and scans for `$in`).
    IndexModel([("tenant", ASCENDING), ("status", ASCENDING)], name="active"),
    IndexModel([("tenant", ASCENDING), ("action_id", ASCENDING)], name="by_action"),
]


class _Resources:
    """Tenant-scoped CRUD shared by both collections."""

    def __init__(self, collection: Collection) -> None:
        self._c = collection

    async def insert(self, doc: Doc) -> None:
        with translate_errors():
            await self._c.insert_one(doc)

    async def get(self, tenant: str, resource_id: str) -> Doc | None:
        oid = parse_id(resource_id)
        if oid is None:
            return None
        with translate_errors():
            return await self._c.find_one(scoped(tenant, {"_id": oid}))

    async def list(
        self, tenant: str, filters: Mapping[str, Any], *, after: str | None, limit: int
    ) -> list[Doc]:
        query: Doc = dict(filters)
        if after is not None and (oid := parse_id(after)) is not None:
            query["_id"] = {"$gt": oid}
        with translate_errors():
            cursor = self._c.find(scoped(tenant, query)).sort("_id", ASCENDING)
            return await cursor.limit(limit).to_list(limit)

    async def update(
        self,
        tenant: str,
        resource_id: str,
        rev: int,
        fields: Mapping[str, Any],
        unset: Sequence[str] = (),
    ) -> Doc | None:
        """Optimistic update: None when the document changed (or vanished) since `rev`."""
        update: Doc = {"$set": dict(fields), "$inc": {"rev": 1}}
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        with translate_errors():
            return await self._c.find_one_and_update(
                scoped(tenant, {"_id": ObjectId(resource_id), "rev": rev}),
                update,
                return_document=ReturnDocument.AFTER,
            )

    async def delete(self, tenant: str, resource_id: str) -> bool:
        oid = parse_id(resource_id)
        if oid is None:
            return False
        with translate_errors():
            result = await self._c.delete_one(scoped(tenant, {"_id": oid}))
        return result.deleted_count == 1

    async def count(self, tenant: str, filters: Mapping[str, Any]) -> int:
        with translate_errors():
            return await self._c.count_documents(scoped(tenant, filters), limit=1000)


class ActionStore(_Resources):
    pass


class SubscriptionStore(_Resources):
    async def active(self, tenant: str) -> list[Doc]:
        """The tenant's active subscriptions; the fan-out matches event types in memory, once
        per tenant and relay batch."""
        with translate_errors():
            return await self._c.find(scoped(tenant, {"status": "active"})).to_list(None)

    async def disable(self, tenant: str, subscription_id: str, reason: str) -> None:
        with translate_errors():
            await self._c.update_one(
                scoped(tenant, {"_id": ObjectId(subscription_id), "status": "active"}),
                {"$set": {"status": "disabled", "disabled_reason": reason}, "$inc": {"rev": 1}},
            )
