"""The `flows` and `flow_heads` collections: immutable flow versions and, per name, the active
one. The same layout and rules as mapping versions (see `store/mappings.py`: numbers claimed
on the head by compare and swap, never reused; a deleted flow's head stays as a tombstone), in
collections of their own; a head's `direction` is "flow". A paused flow's head holds
`paused: {at, by, reason}` (`set_paused`); deleting the flow drops it."""

from __future__ import annotations

from typing import ClassVar

from gateway.clock import utcnow
from gateway.store.client import Database, Doc, scoped, translate_errors
from gateway.store.mappings import HEAD_INDEXES, VERSION_INDEXES, MappingStore

DIRECTION = "flow"


class FlowStore(MappingStore):
    # A version in a list says the events it starts on (`on.events`), not its whole document.
    version_listing: ClassVar[Doc] = {
        **dict.fromkeys(("name", "version", "format", "checksum", "author", "created_at"), 1),
        "document.on.events": 1,
    }

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

    async def set_paused(
        self, tenant: str, name: str, paused: Doc | None, *, resumed: Doc | None = None
    ) -> Doc | None:
        """Pause (`paused` the note; a flow paused already keeps its first note) or resume
        (None; `resumed` noted: `{at, skip}`) a listed flow; its head after, or None when there
        is no such flow."""
        head_id = await self._listed_id(tenant, name)  # by its name alone (the `name` index)
        if head_id is None:
            return None
        # written by its `_id`, still listed: beside `name` these guards had SecantusDB read
        # the tenant's every head (store/mappings.py `_LISTED`)
        listed: Doc = {"_id": head_id, "deleted": {"$ne": True}, "direction": DIRECTION}
        if paused is not None:
            listed["paused"] = None  # (a second pause finds it paused: read below)
            update: Doc = {"$set": {"paused": paused}}
        else:
            update = {"$unset": {"paused": ""}, "$set": {"resumed": resumed}}
        with translate_errors():
            head = await self._written_head(tenant, name, listed, update)
            if head is None and paused is not None:
                head = await self.head(tenant, name)
        return head

    async def _written_head(self, tenant: str, name: str, query: Doc, update: Doc) -> Doc | None:
        """The head `name` after `update`, when `query` matched it (None: it did not). An
        update then a read by name (the `name` index), not a `find_one_and_update`: SecantusDB
        writes that with `{_id, $and: [filter]}`, matched against every tenant's heads (190-350
        ms at 1,000 tenants of 20 flows). The guard is the write's, as it was; the read may
        show a later write too, as a read just after the one call would."""
        if not (await self._heads.update_one(scoped(tenant, query), update)).matched_count:
            return None
        found: Doc | None = await self._heads.find_one(scoped(tenant, {"name": name}))
        return found

    async def signing_head(self, tenant: str, name: str) -> Doc | None:
        """The flow's head with its `signing`, listed or a deleted flow's tombstone."""
        with translate_errors():
            found: Doc | None = await self._heads.find_one(
                scoped(tenant, {"name": name}), {"_id": 1, "signing": 1}
            )
        return found

    async def set_signing(
        self, tenant: str, name: str, signing: Doc, *, rev: int | None, listed: bool
    ) -> Doc | None:
        """`signing` stored only over the one of revision `rev` (None: only where there is
        none), on a listed flow when `listed`; the head after, or None when none matched.
        Read by its name alone, written by its `_id` with the guards (beside `name` they had
        SecantusDB read the tenant's every head)."""
        head = await self.signing_head(tenant, name)
        if head is None:
            return None
        query: Doc = {"_id": head["_id"]}
        if rev is None:
            query["signing"] = {"$exists": False}
        else:
            query["signing.rev"] = rev
        if listed:
            query.update(deleted={"$ne": True}, direction=DIRECTION)
        with translate_errors():
            return await self._written_head(tenant, name, query, {"$set": {"signing": signing}})

    async def delete(self, tenant: str, name: str) -> bool:
        """As a mapping's; a flow uploaded again under the name is not paused."""
        deleted = await super().delete(tenant, name)
        with translate_errors():
            await self._heads.update_one(
                scoped(tenant, {"name": name}),
                {"$unset": {"paused": ""}, "$set": {"updated_at": utcnow()}},
            )
        return deleted
