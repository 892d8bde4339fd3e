"""The `mappings` and `mapping_heads` collections: immutable mapping versions and, per name,
which version is active.

A version is `{tenant, name, version, source, format, document, checksum, author,
created_at, direction, entity_type}` and never changes once written. A head is
`{tenant, name, latest_version, latest_checksum, active_version?, direction, entity_type,
created_at, updated_at, deleted?}`: it allocates version numbers (`$inc`, so two concurrent
uploads never get the same number, with the checksum of the text each is for, so two
identical uploads at once store it once) and says which version is active. Deleting a
mapping removes its versions and leaves the head as a tombstone, so a later upload of the
same name continues the numbering: a (tenant, name, version) triple is never reused, which
lets every process cache compiled versions by it forever.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument

from gateway.errors import Conflict, StoreUnavailable
from gateway.store.client import (
    NAME_CURSOR,
    Database,
    Doc,
    cursor_text,
    scoped,
    translate_errors,
)

VERSION_INDEXES = [
    IndexModel(
        [("tenant", ASCENDING), ("name", ASCENDING), ("version", ASCENDING)],
        unique=True,
        name="name_version",
    ),
]
HEAD_INDEXES = [
    IndexModel([("tenant", ASCENDING), ("name", ASCENDING)], unique=True, name="name"),
]
# Where other resources name a mapping: collection → the fields holding a mapping name.
USERS = {
    "triggers": ("mapping", "response_mapping"),
    "actions": ("request_mapping", "response_mapping"),
    "schedules": ("mapping",),
}
_LISTED = {"deleted": {"$ne": True}, "direction": {"$exists": True}}
_NO_SOURCE = {"source": 0, "document": 0}
_ALLOCATE_TRIES = 20


class MappingStore:
    # What a list of versions reads of each: no source nor document.
    version_listing: ClassVar[Doc] = _NO_SOURCE

    def __init__(self, db: Database) -> None:
        self._db = db
        self._versions = db["mappings"]
        self._heads = db["mapping_heads"]

    async def ensure_indexes(self) -> None:
        with translate_errors():
            await self._versions.create_indexes(VERSION_INDEXES)
            await self._heads.create_indexes(HEAD_INDEXES)

    # -- versions ----------------------------------------------------------------------------

    async def latest(self, tenant: str, name: str) -> Doc | None:
        with translate_errors():
            return await self._versions.find_one(
                scoped(tenant, {"name": name}), sort=[("version", DESCENDING)]
            )

    async def version(self, tenant: str, name: str, version: int) -> Doc | None:
        with translate_errors():
            return await self._versions.find_one(scoped(tenant, {"name": name, "version": version}))

    async def versions(self, tenant: str, name: str) -> list[Doc]:
        """Every version's metadata, oldest first (no source: ask for one version for that)."""
        with translate_errors():
            cursor = self._versions.find(scoped(tenant, {"name": name}), self.version_listing)
            return await cursor.sort("version", ASCENDING).to_list(None)

    async def previous_version(self, tenant: str, name: str, before: int) -> int | None:
        with translate_errors():
            doc = await self._versions.find_one(
                scoped(tenant, {"name": name, "version": {"$lt": before}}),
                {"version": 1},
                sort=[("version", DESCENDING)],
            )
        return None if doc is None else int(doc["version"])

    async def allocate_version(
        self, tenant: str, name: str, checksum: str | None = None
    ) -> int | None:
        """The next version number of `name`, never handed out twice, for a text of
        `checksum`; None when the latest number was handed out for that same text (an
        identical upload at the same time: the caller waits for that version instead of
        storing the text twice). `checksum=None` allocates whatever the latest text.

        The head's `latest_checksum` is set with the number in one update, so of two
        identical uploads one allocates and the other finds it. Two first uploads of a name
        at once both upsert the head: the one that loses the insert (a duplicate key, or no
        document from the embedded database) tries again and finds the head."""
        now = datetime.now(UTC)
        query: Doc = {"name": name}
        if checksum is not None:
            query["latest_checksum"] = {"$ne": checksum}
        for _ in range(_ALLOCATE_TRIES):
            try:
                with translate_errors():
                    head = await self._heads.find_one_and_update(
                        scoped(tenant, query),
                        {
                            "$inc": {"latest_version": 1},
                            "$set": {"latest_checksum": checksum},
                            "$setOnInsert": {"created_at": now},
                        },
                        upsert=True,
                        return_document=ReturnDocument.AFTER,
                    )
            except Conflict:  # the head was inserted meanwhile, or holds this text's number
                head = None
            if head is not None:
                return int(head["latest_version"])
            with translate_errors():
                existing = await self._heads.find_one(scoped(tenant, {"name": name}))
            if existing is not None and checksum is not None:
                if existing.get("latest_checksum") == checksum:
                    return None
        raise StoreUnavailable(f"no version number for {name!r}: the head kept changing")

    async def insert_version(self, tenant: str, doc: Doc) -> None:
        with translate_errors(f"mapping {doc['name']!r} version {doc['version']} exists"):
            await self._versions.insert_one(scoped(tenant, doc))

    # -- heads -------------------------------------------------------------------------------

    async def head(self, tenant: str, name: str) -> Doc | None:
        with translate_errors():
            return await self._heads.find_one(scoped(tenant, {"name": name, **_LISTED}))

    async def publish(
        self,
        tenant: str,
        name: str,
        *,
        direction: str,
        entity_type: str | None,
        active_version: int | None,
    ) -> None:
        """After a version is stored: the head shows it, and makes it active if asked unless
        a newer version is active already (two uploads at once: the one numbered first may
        finish last, and made its older version active over the newer one).

        The head's `direction` and `entity_type` describe its active version (what the list
        shows next to `active_version`, and what the admin UI picks mappings by): a version
        staged (`active_version=None`) sets them only while no version is active."""
        shown: Doc = {"direction": direction, "entity_type": entity_type}
        with translate_errors():
            await self._heads.update_one(
                scoped(tenant, {"name": name}),
                {"$set": {"updated_at": datetime.now(UTC)}, "$unset": {"deleted": ""}},
            )
            inactive = [{"active_version": {"$exists": False}}, {"active_version": None}]
            if active_version is None:
                await self._heads.update_one(
                    scoped(tenant, {"name": name, "$or": inactive}), {"$set": shown}
                )
            else:
                older = [*inactive, {"active_version": {"$lt": active_version}}]
                await self._heads.update_one(
                    scoped(tenant, {"name": name, "$or": older}),
                    {"$set": {"active_version": active_version, **shown}},
                )

    async def set_active(
        self,
        tenant: str,
        name: str,
        version: int,
        shown: Doc,
        *,
        checked: bool = False,
        expected: int | None = None,
    ) -> bool:
        """Make `version` active; `shown`: its `direction` and `entity_type` (the head
        describes its active version). `checked`: only while `expected` is the active
        version (None: none is). False when no head matched."""
        query: Doc = {"name": name, **_LISTED}
        if checked:
            query["active_version"] = expected
        with translate_errors():
            result = await self._heads.update_one(
                scoped(tenant, query),
                {"$set": {"active_version": version, **shown, "updated_at": datetime.now(UTC)}},
            )
        return result.matched_count == 1

    async def heads(self, tenant: str, *, after: str | None, limit: int) -> list[Doc]:
        query: Doc = dict(_LISTED)
        if cursor_text(after, NAME_CURSOR) is not None:
            query["name"] = {"$gt": after}
        with translate_errors():
            cursor = self._heads.find(scoped(tenant, query))
            return await cursor.sort("name", ASCENDING).limit(limit).to_list(limit)

    async def delete(self, tenant: str, name: str) -> bool:
        """Remove every version; the head stays as a tombstone that keeps the numbering."""
        with translate_errors():
            result = await self._heads.update_one(
                scoped(tenant, {"name": name, **_LISTED}),
                {
                    "$set": {"deleted": True, "updated_at": datetime.now(UTC)},
                    "$unset": {"active_version": "", "latest_checksum": ""},
                },
            )
            await self._versions.delete_many(scoped(tenant, {"name": name}))
        return result.matched_count == 1

    # -- who uses a mapping ------------------------------------------------------------------

    async def users(self, tenant: str, name: str) -> list[dict[str, Any]]:
        """The triggers and actions of this tenant that name the mapping."""
        found: list[dict[str, Any]] = []
        for collection, fields in USERS.items():
            query = scoped(tenant, {"$or": [{f: name} for f in fields]})
            with translate_errors():
                cursor = self._db[collection].find(query, {"name": 1, **dict.fromkeys(fields, 1)})
                docs = await cursor.limit(50).to_list(50)
            for doc in docs:
                found.append(
                    {
                        "kind": collection.removesuffix("s"),
                        "id": str(doc["_id"]),
                        "name": doc.get("name"),
                        "fields": [f for f in fields if doc.get(f) == name],
                    }
                )
        return found
