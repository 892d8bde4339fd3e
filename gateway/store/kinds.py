"""The `kinds` collection: tenants' custom kinds of `other` entities, with their schemas.

A kind and the writes of its entities exclude each other by two leases on the kind's
document, so that a deletion racing a write never leaves an entity of a kind that no longer
exists: a write of an entity of the kind marks it `writing_until` a minute on (renewed at most
every 30 s, so a write has at least 30 s to finish), and a deletion marks it `deleting_until`
(a minute; it takes milliseconds) only once no write is marked, then counts the entities and
deletes. Each mark is set by one conditional update, refused while the other is valid; an
expired mark (a process that died meanwhile) is simply over.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from pymongo import ASCENDING, IndexModel, ReturnDocument

from gateway.clock import as_stored, utcnow
from gateway.errors import Conflict
from gateway.store.client import (
    KIND_CURSOR,
    Collection,
    Doc,
    cursor_text,
    scoped,
    translate_errors,
)

INDEXES = [IndexModel([("tenant", ASCENDING), ("name", ASCENDING)], unique=True, name="by_name")]
# How long a write of an entity marks its kind as being written, and how much of that mark
# must be left for a write to go on without renewing it (the time a write has to finish).
WRITE_MARK: Final = timedelta(seconds=60)
WRITE_MARK_LEFT: Final = timedelta(seconds=30)
# How long a deletion marks its kind (it counts entities and deletes: milliseconds).
DELETE_MARK: Final = timedelta(seconds=60)


def _not_marked(name: str, now: datetime) -> dict[str, Any]:
    return {"$or": [{name: {"$exists": False}}, {name: {"$lt": now}}]}


class KindStore:
    def __init__(
        self, collection: Collection, entities: Collection, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._c = collection
        self._entities = entities
        self.clock = clock  # tests pass their own

    async def get(self, tenant: str, name: str) -> Doc | None:
        with translate_errors():
            return await self._c.find_one(scoped(tenant, {"name": name}))

    async def find(
        self, tenant: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Doc]:
        """A tenant's kinds by name: after the name `after` (a list's cursor, KIND_CURSOR),
        at most `limit` (none: every one, for the admin UI's forms)."""
        query: Doc = {}
        if cursor_text(after, KIND_CURSOR) is not None:
            query["name"] = {"$gt": after}
        with translate_errors():
            cursor = self._c.find(scoped(tenant, query)).sort("name", ASCENDING)
            if limit is not None:
                cursor = cursor.limit(limit)
            return await cursor.to_list(limit)

    async def create(self, tenant: str, name: str, schema: dict[str, Any], author: str) -> Doc:
        now = as_stored(utcnow())
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
                {"$set": {"schema": schema, "author": author, "updated_at": utcnow()}},
                return_document=ReturnDocument.AFTER,
            )

    async def for_write(self, tenant: str, name: str) -> Doc | None:
        """The kind, to write an entity of it (None when there is none), marked as being
        written; Conflict while it is being deleted."""
        now = self.clock()
        with translate_errors():
            doc = await self._c.find_one(scoped(tenant, {"name": name}))
            if doc is None:
                return None
            deleting, writing = doc.get("deleting_until"), doc.get("writing_until")
            if (deleting is None or deleting < now) and (
                writing is not None and writing >= now + WRITE_MARK_LEFT
            ):
                return doc  # marked long enough already
            marked = await self._c.find_one_and_update(
                scoped(tenant, {"name": name, **_not_marked("deleting_until", now)}),
                {"$max": {"writing_until": now + WRITE_MARK}},
                return_document=ReturnDocument.AFTER,
            )
        if marked is None and await self.get(tenant, name) is not None:
            raise Conflict(f"kind {name!r} is being deleted; nothing was written")
        return marked

    async def delete(self, tenant: str, name: str) -> bool:
        """Refused (Conflict) while entities of the kind exist: they would lose their schema;
        and while entities of it are being written (for up to a minute after the last)."""
        now = self.clock()
        with translate_errors():
            marked = await self._c.find_one_and_update(
                scoped(
                    tenant,
                    {
                        "name": name,
                        "$and": [
                            _not_marked("deleting_until", now),
                            _not_marked("writing_until", now),
                        ],
                    },
                ),
                {"$set": {"deleting_until": now + DELETE_MARK}},
            )
            if marked is None:
                doc = await self.get(tenant, name)
                if doc is None:
                    return False
                busy = doc.get("writing_until") or doc.get("deleting_until") or now
                wait = max(1, math.ceil((busy - now).total_seconds()))
                raise Conflict(
                    f"entities of kind {name!r} are being written, or the kind deleted; "
                    f"try again in {wait} s"
                )
            used = await self._entities.count_documents(
                scoped(tenant, {"type": "other", "data.kind": name}),
                limit=1,
            )
            if used:
                await self._c.update_one(
                    scoped(tenant, {"name": name}), {"$unset": {"deleting_until": ""}}
                )
                raise Conflict(f"entities of kind {name!r} exist; delete them first")
            result = await self._c.delete_one(scoped(tenant, {"name": name}))
        return result.deleted_count == 1
