"""The `kinds` collection: tenants' custom kinds of `other` entities, with their schemas.

A kind and the writes of its entities exclude each other by two leases on the kind's
document, so that a deletion racing a write never leaves an entity of a kind that no longer
exists: a write of an entity of the kind marks it `writing_until` a minute on (renewed at most
every 30 s, so a write has at least 30 s to finish), and a deletion marks it `deleting_until`
(a minute; it takes milliseconds) only once no write is marked, then counts the entities and
deletes. Each mark is set by one conditional update, refused while the other is valid; an
expired mark (a process that died meanwhile) is simply over.

A kind and the saves that name it (a trigger of it, a mapping version writing it) exclude
each other the same way, so that a deletion or a schema replacement racing a save never
leaves a trigger or an active mapping naming a kind gone, or a field gone: a save leases the
kind (`lease`: an entry of `saving`, refused while the kind is being deleted or replaced),
checks it, stores itself and gives the lease back (`release`); a deletion (`delete`) and a
replacement (`replace_schema`) mark the kind only while no lease is valid, and only then
look at what names it (`in_use`, `check`).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from collections.abc import Collection as Collection_
from datetime import datetime, timedelta
from typing import Any, Final

from pymongo import ASCENDING, IndexModel

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
from gateway.store.turns import UNLIMITED, Limit

INDEXES = [IndexModel([("tenant", ASCENDING), ("name", ASCENDING)], unique=True, name="by_name")]
# How long a write of an entity marks its kind as being written, and how much of that mark
# must be left for a write to go on without renewing it (the time a write has to finish).
WRITE_MARK: Final = timedelta(seconds=60)
WRITE_MARK_LEFT: Final = timedelta(seconds=30)
# How long a deletion marks its kind (it counts entities and deletes: milliseconds).
DELETE_MARK: Final = timedelta(seconds=60)
# How long a save naming the kind (a trigger's, a mapping version's) leases it, and how long a
# schema replacement marks it (each takes milliseconds, a replacement's check about a second).
SAVE_LEASE: Final = timedelta(seconds=60)
REPLACE_MARK: Final = timedelta(seconds=60)
RESTATING: Final = "restating_from"
BUSY = "a trigger or a mapping naming the kind is being saved, or the kind deleted or replaced"


def _not_marked(name: str, now: datetime) -> dict[str, Any]:
    """No valid mark `name`: none, or one past (a mark is a time, or unset). Not an `$or` of
    the two: SecantusDB matches a filter with an operator at its top against every tenant's
    kinds, on each entity write of a custom kind (`for_write`)."""
    return {name: {"$not": {"$gte": now}}}


def _not_leased(now: datetime) -> dict[str, Any]:
    """No save holds a valid lease (`KindStore.lease`)."""
    return {"saving.until": {"$not": {"$gte": now}}}


def _busy(name: str, doc: Doc, now: datetime) -> Conflict:
    marks = [doc.get("writing_until"), doc.get("deleting_until"), doc.get("replacing_until")]
    marks += [lease.get("until") for lease in doc.get("saving") or ()]
    busy = max([m for m in marks if isinstance(m, datetime) and m >= now], default=now)
    wait = max(1, math.ceil((busy - now).total_seconds()))
    return Conflict(f"kind {name!r}: {BUSY}; nothing was changed, try again in {wait} s")


class KindStore:
    # The tenant's limit on kinds (store/turns.py `TenantLimits`; set by `Store`).
    limit: Limit = UNLIMITED

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
        async with self.limit.room(tenant):  # a 409 past the tenant's limit
            with translate_errors(f"a kind named {name!r} already exists"):
                await self._c.insert_one(doc)
        return doc

    async def how_many(self, tenant: str, *, up_to: int) -> int:
        """How many kinds the tenant has, counted up to `up_to` (what a limit needs)."""
        with translate_errors():
            return await self._c.count_documents(scoped(tenant, {}), limit=up_to)

    async def replace_schema(
        self,
        tenant: str,
        name: str,
        schema: dict[str, Any],
        author: str,
        check: Callable[[Doc], Awaitable[None]] | None = None,
    ) -> Doc | None:
        """The kind with its new schema; None when there is none. With `check` (called with
        the kind as stored; raising refuses the replacement), the kind is marked as being
        replaced first, only while no save naming it is under way (Conflict otherwise), and
        no save starts until the schema is written: what `check` found still holds then."""
        # "": the restatement of the stored entities starts over (`restating`).
        fields = {"schema": schema, "author": author, "updated_at": utcnow(), RESTATING: ""}
        update = {"$set": fields}
        if check is None:
            with translate_errors():
                return await self._changed(tenant, name, {"name": name}, update)
        now = self.clock()
        marked = await self._mark(tenant, name, "replacing_until", now + REPLACE_MARK, now)
        if marked is None:
            return None
        try:
            await check(marked)
            with translate_errors():
                replaced = {**update, "$unset": {"replacing_until": ""}}
                return await self._changed(tenant, name, {"name": name}, replaced)
        except BaseException:
            await self._unmark(tenant, name, "replacing_until")
            raise

    # -- restatement after a replacement: system work across tenants, never from a request --

    async def restating(self, limit: int) -> list[Doc]:
        """Kinds whose stored entities are being restated in their replaced schema's form:
        `restating_from` is the id of the last entity restated ("" before the first)."""
        with translate_errors():
            return await self._c.find({RESTATING: {"$exists": True}}).to_list(limit)

    async def restated_to(self, kind: Doc, after: str | None) -> bool:
        """Record the restatement of `kind` (as `restating` read it) gone on past the entity
        `after` (None: done). False when the kind changed meanwhile: replaced again (its
        restatement started over) or deleted, or another process recorded its own page."""
        query = {"_id": kind["_id"], RESTATING: kind[RESTATING], "updated_at": kind["updated_at"]}
        update = {"$unset": {RESTATING: ""}} if after is None else {"$set": {RESTATING: after}}
        with translate_errors():
            done = await self._c.update_one(scoped(kind["tenant"], query), update)
        return bool(done.matched_count)

    async def _mark(
        self, tenant: str, name: str, mark: str, until: datetime, now: datetime
    ) -> Doc | None:
        """The kind marked `mark` until `until`, only while no other mark and no save's lease
        is valid (entity writes' `writing_until` holds back a deletion only); None when there
        is no such kind, Conflict when it is busy."""
        marks = ["deleting_until", "replacing_until"]
        if mark == "deleting_until":
            marks.append("writing_until")
        free = {k: v for m in marks for k, v in _not_marked(m, now).items()}
        with translate_errors():
            query = {"name": name, **free, **_not_leased(now)}
            marked = await self._changed(tenant, name, query, {"$set": {mark: until}})
            if marked is None:
                doc = await self.get(tenant, name)
                if doc is None:
                    return None
                raise _busy(name, doc, now)
        return marked

    async def _changed(self, tenant: str, name: str, query: Doc, update: Doc) -> Doc | None:
        """The kind `name` after `update`, when `query` matched it (None: it did not). An
        update then a read, not a `find_one_and_update`: SecantusDB writes that with an
        operator at its filter's top, matched against every tenant's kinds."""
        if not (await self._c.update_one(scoped(tenant, query), update)).matched_count:
            return None
        found: Doc | None = await self._c.find_one(scoped(tenant, {"name": name}))
        return found

    async def _unmark(self, tenant: str, name: str, mark: str) -> None:
        with translate_errors():
            await self._c.update_one(scoped(tenant, {"name": name}), {"$unset": {mark: ""}})

    async def lease(self, tenant: str, name: str, token: str) -> Doc | None:
        """The kind, leased by the save `token` (a trigger's, a mapping version's) until it
        gives the lease back (`release`) or `SAVE_LEASE` passes: it is neither deleted nor its
        schema replaced meanwhile. None when there is no such kind; Conflict while it is being
        deleted or replaced."""
        now = self.clock()
        free = {
            k: v
            for m in ("deleting_until", "replacing_until")
            for k, v in _not_marked(m, now).items()
        }
        with translate_errors():
            push = {"$push": {"saving": {"token": token, "until": now + SAVE_LEASE}}}
            leased = await self._changed(tenant, name, {"name": name, **free}, push)
            if leased is None:
                doc = await self.get(tenant, name)
                if doc is None:
                    return None
                raise _busy(name, doc, now)
        return leased

    async def release(self, tenant: str, names: Collection_[str], token: str) -> None:
        """Give back the leases of the save `token` on the kinds `names`, and drop the expired
        leases of saves that never gave theirs back (a process that died)."""
        if not names:
            return
        query = scoped(tenant, {"name": {"$in": sorted(names)}})
        with translate_errors():
            await self._c.update_many(query, {"$pull": {"saving": {"token": token}}})
            expired = {"saving": {"until": {"$lt": self.clock()}}}
            await self._c.update_many(query, {"$pull": expired})

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
            # By `_id` (a point lookup), then read again: a `find_one_and_update` SecantusDB
            # writes with an operator at its filter's top, matched against every tenant's
            # kinds. The kind deleted (and made again) since its read: not marked, as while
            # it is being deleted.
            guard = {"_id": doc["_id"], **_not_marked("deleting_until", now)}
            mark = {"$max": {"writing_until": now + WRITE_MARK}}
            marked = None
            if (await self._c.update_one(scoped(tenant, guard), mark)).matched_count:
                marked = await self._c.find_one(scoped(tenant, {"_id": doc["_id"]}))
        if marked is None and await self.get(tenant, name) is not None:
            raise Conflict(f"kind {name!r} is being deleted; nothing was written")
        return marked

    async def delete(
        self, tenant: str, name: str, in_use: Callable[[], Awaitable[None]] | None = None
    ) -> bool:
        """Refused (Conflict) while entities of the kind exist: they would lose their schema;
        while entities of it are being written (for up to a minute after the last), and
        while a save naming it is under way (`lease`). `in_use` (raising refuses the
        deletion) is called once the kind is marked: no save names it anew until it is gone."""
        now = self.clock()
        if await self._mark(tenant, name, "deleting_until", now + DELETE_MARK, now) is None:
            return False
        try:
            if in_use is not None:
                await in_use()
            with translate_errors():
                used = await self._entities.count_documents(
                    scoped(tenant, {"type": "other", "data.kind": name}),
                    limit=1,
                )
                if used:
                    raise Conflict(f"entities of kind {name!r} exist; delete them first")
                result = await self._c.delete_one(scoped(tenant, {"name": name}))
        except BaseException:
            await self._unmark(tenant, name, "deleting_until")
            raise
        if result.deleted_count:
            await self.limit.freed(tenant)
        return result.deleted_count == 1
