"""Tenant-scoped CRUD shared by the admin resource collections."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING

from gateway.store import name_folding
from gateway.store.client import (
    Collection,
    Doc,
    canonical_filters,
    cursor_id,
    find_by_id,
    parse_id,
    scoped,
    translate_errors,
)
from gateway.store.turns import UNLIMITED, Limit


class TenantResources:
    """Tenant-scoped CRUD of admin resources with ObjectId ids and an optimistic `rev`
    (partners, actions, subscriptions)."""

    # The tenant's limit on these (store/turns.py `TenantLimits`; set by `Store`).
    limit: Limit = UNLIMITED

    def __init__(self, collection: Collection) -> None:
        self._c = collection

    async def insert(self, doc: Doc) -> None:
        """A new resource of `doc["tenant"]`: a 409 past the tenant's limit."""
        async with self.limit.room(doc["tenant"]):
            with translate_errors():
                await self._c.insert_one(doc)

    async def how_many(self, tenant: str, *, up_to: int) -> int:
        """How many the tenant has, counted up to `up_to` (what a limit needs)."""
        with translate_errors():
            return await self._c.count_documents(scoped(tenant, {}), limit=up_to)

    async def get(self, tenant: str, resource_id: str) -> Doc | None:
        return await find_by_id(self._c, tenant, resource_id)

    async def kept_twin_of(self, tenant: str, name: str, own: Any = None) -> bool:
        """`name_folding.kept_twin_of` on this collection."""
        return await name_folding.kept_twin_of(self._c, tenant, name, own)

    async def list(
        self,
        tenant: str,
        filters: Mapping[str, Any] | None = None,
        *,
        after: str | None,
        limit: int,
    ) -> list[Doc]:
        query: Doc = canonical_filters(filters or {})
        if after is not None:
            query["_id"] = {"$gt": cursor_id(after)}
        with translate_errors():
            cursor = self._c.find(scoped(tenant, query)).sort("_id", ASCENDING)
            return await cursor.limit(limit).to_list(limit)

    async def every(
        self, tenant: str, filters: Mapping[str, Any], fields: Sequence[str]
    ) -> builtins.list[Doc]:
        """Every resource matching `filters`, by id, only its `fields` (and `_id`), in one
        query: what a page's select offers, whatever the number."""
        query = scoped(tenant, canonical_filters(filters))
        with translate_errors():
            cursor = self._c.find(query, {name: 1 for name in fields}).sort("_id", ASCENDING)
            return await cursor.to_list(None)

    async def update(
        self,
        tenant: str,
        resource_id: str,
        rev: int,
        fields: Mapping[str, Any],
        unset: Sequence[str] = (),
    ) -> Doc | None:
        """Optimistic update: None when the document changed (or vanished) since `rev`; else
        the document after it. An update then a read by `_id`, each a point lookup: a
        `find_one_and_update` SecantusDB writes with an operator at its filter's top, matched
        against every tenant's documents."""
        update: Doc = {"$set": dict(fields), "$inc": {"rev": 1}}
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        oid = ObjectId(resource_id)
        with translate_errors():
            written = await self._c.update_one(scoped(tenant, {"_id": oid, "rev": rev}), update)
            if not written.matched_count:
                return None
            found: Doc | None = await self._c.find_one(scoped(tenant, {"_id": oid}))
        return found

    async def delete(self, tenant: str, resource_id: str) -> bool:
        oid = parse_id(resource_id)
        if oid is None:
            return False
        with translate_errors():
            result = await self._c.delete_one(scoped(tenant, {"_id": oid}))
        if result.deleted_count:
            await self.limit.freed(tenant)
        return result.deleted_count == 1

    async def count(self, tenant: str, filters: Mapping[str, Any]) -> int:
        with translate_errors():
            return await self._c.count_documents(scoped(tenant, filters), limit=1000)
