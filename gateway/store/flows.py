"""The `flows` and `flow_heads` collections: immutable flow versions and, per name, the active
one. The same layout and rules as mapping versions (see `store/mappings.py`: numbering by
`$inc` on the head, never reused; a deleted flow's head stays as a tombstone), in collections of
their own; a head's `direction` is "flow"."""

from __future__ import annotations

from gateway.store.client import Database, Doc, scoped, translate_errors
from gateway.store.mappings import HEAD_INDEXES, VERSION_INDEXES, MappingStore

DIRECTION = "flow"


class FlowStore(MappingStore):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._versions = db["flows"]
        self._heads = db["flow_heads"]

    async def ensure_indexes(self) -> None:
        with translate_errors():
            await self._versions.create_indexes(VERSION_INDEXES)
            await self._heads.create_indexes(HEAD_INDEXES)

    async def active_versions(self, tenant: str) -> list[Doc]:
        """Every flow's active version, with its document (a tenant has tens, not thousands)."""
        with translate_errors():
            heads = await self._heads.find(
                scoped(tenant, {"deleted": {"$ne": True}, "active_version": {"$ne": None}})
            ).to_list(None)
            found = []
            for head in heads:
                doc = await self._versions.find_one(
                    scoped(tenant, {"name": head["name"], "version": head["active_version"]})
                )
                if doc is not None:
                    found.append(doc)
        return found
