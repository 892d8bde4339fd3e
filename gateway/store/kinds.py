"""The `kinds` collection: tenants' custom kinds of `other` entities, with their schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument

from gateway.errors import Conflict
from gateway.store.client import Collection, Doc, scoped, translate_errors

INDEXES = [IndexModel([("tenant", ASCENDING), ("name", ASCENDING)], unique=True, name="by_name")]


class KindStore:
    def __init__(self, collection: Collection, entities: Collection) -> None:
        self._c = collection
        self._entities = entities

    async def get(self, tenant: str, name: str) -> Doc | None:
        with translate_errors():
            return await self._c.find_one(scoped(tenant, {"name": name}))

    async def find(self, tenant: str) -> list[Doc]:
        with translate_errors():
            return await self._c.find(scoped(tenant)).sort("name", ASCENDING).to_list(None)

    async def create(self, tenant: str, name: str, schema: dict[str, Any], author: str) -> Doc:
        now = datetime.now(UTC)
        doc = scoped(
            tenant,
            {
                "name": name,
                "schema": schema,
                "author": author,
                "created_at": now,
                "updated_at": now,
            },
        )
        with translate_errors(f"a kind named {name!r} already exists"):
            await self._c.insert_one(doc)
        return doc

    async def replace_schema(
        self, tenant: str, name: str, schema: dict[str, Any], author: str
    ) -> Doc | None:
        with translate_errors():
            return await self._c.find_one_and_update(
                scoped(tenant, {"name": name}),
                {"$set": {"schema": schema, "author": author, "updated_at": datetime.now(UTC)}},
                return_document=ReturnDocument.AFTER,
            )

    async def delete(self, tenant: str, name: str) -> bool:
        """Refused (Conflict) while entities of the kind exist: they would lose their schema."""
        with translate_errors():
            used = await self._entities.count_documents(
                scoped(tenant, {"type": "other", "data.kind": name}),
                limit=1,
            )
            if used:
                raise Conflict(f"entities of kind {name!r} exist; delete them first")
            result = await self._c.delete_one(scoped(tenant, {"name": name}))
        return result.deleted_count == 1
