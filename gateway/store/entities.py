"""The `entities` collection: one document per entity, with its event outbox inside it.

A document is `{_id, tenant, type, nk, data, fk, rev, outbox, pending, pending_shard,
created_at, updated_at}`.
`nk` is the natural key (unique per tenant and type). Events caused by a write are pushed
into `outbox` in the same single-document update as the write itself, so the write and its
events are durable together on any MongoDB deployment without a transaction; the relay in
`gateway/events.py` moves them to the `events` collection and fans them out.

Writes go through the process's group commit (`group_commit.py`): concurrent requests'
entity writes reach the database in one command.

While its outbox holds events, a document has `pending` (when its oldest waiting event was
written: the relay takes the oldest first) and `pending_shard` (which relay shard it belongs
to, see `gateway/shares.py`); the relay removes both once it has moved the events.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Collection as Collection_
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel

from gateway.errors import Conflict, FieldProblem, InvalidPayload, Unavailable
from gateway.store.client import Collection, Doc, parse_id, scoped, translate_errors
from gateway.store.group_commit import GroupCommit

INDEXES = [
    IndexModel(
        [("tenant", ASCENDING), ("type", ASCENDING), ("nk", ASCENDING)],
        unique=True,
        name="natural_key",
    ),
    IndexModel([("tenant", ASCENDING), ("type", ASCENDING), ("_id", ASCENDING)], name="by_type"),
    # Only documents with events waiting are in it (sparse): the relay's queue, by shard.
    IndexModel(
        [("pending_shard", ASCENDING), ("pending", ASCENDING)],
        name="outbox_pending_by_shard",
        sparse=True,
    ),
]
# Fields admins filter on, and fields mappings look entities up by when a payload carries no
# natural key (a tracker id). They are indexed through one multikey index on `fk`, a list of
# "field=value" strings kept beside the data: one index to maintain per write instead of one
# per field (each costs the embedded server milliseconds per update).
FILTERABLE = {
    "vehicle": ("plate", "status", "group", "renavam"),
    "driver": ("cpf", "status"),
    "supplier": ("cnpj",),
    "operator": ("cpf", "role"),
    "other": ("kind", "status", "plate"),
}
LOOKUP_FIELDS = ("attributes.tracker_id",)
INDEXES.append(
    IndexModel([("tenant", ASCENDING), ("type", ASCENDING), ("fk", ASCENDING)], name="filters")
)
RETIRED_INDEXES = ["outbox_pending"]  # dropped at start: every index costs every write
RELAY_SHARDS = 16


def relay_shard(entity_id: Any) -> int:
    return zlib.crc32(str(entity_id).encode()) % RELAY_SHARDS


def _shards_query(shards: Collection_[int] | None) -> Doc:
    """Documents of these shards (all when None); one marked pending by hand, without a
    shard, belongs to shard 0."""
    chosen: list[int | None] = list(range(RELAY_SHARDS) if shards is None else sorted(shards))
    if 0 in chosen:
        chosen.append(None)
    return {"pending_shard": {"$in": chosen}, "pending": {"$exists": True}}


def filter_keys(etype: str, data: Mapping[str, Any]) -> list[str]:
    keys = []
    for field in (*FILTERABLE.get(etype, ()), *LOOKUP_FIELDS):
        value: Any = data
        for part in field.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        text = lookup_text(value)
        if text is not None:
            keys.append(f"{field}={text}")
    return keys


def lookup_text(value: Any) -> str | None:
    """The text a lookup compares by, so that text and numbers meet by value: a string as it
    is, a number in its canonical decimal form (123 and 123.0 → "123", 1.5 → "1.5"). So
    "123" finds 123 and 123 finds "123", but "0123" and "123.0" (text) find only themselves.
    None for anything else (booleans, objects, lists, null)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, int) else repr(value)


_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]*[1-9]")


def _same_values(value: str | int | float) -> Any:
    """What a lookup value matches in the data: itself, and the number its text is (or the
    text its number is), by the rule of `lookup_text`."""
    if not isinstance(value, str):
        return {"$in": [value, lookup_text(value)]}
    number: int | float | None = None
    if _INTEGER.fullmatch(value):
        number = int(value)
    elif _DECIMAL.fullmatch(value) and repr(float(value)) == value:
        number = float(value)
    return value if number is None else {"$in": [value, number]}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "an array" if isinstance(value, list) else "an object"


def _filter_query(etype: str, filters: Mapping[str, Any]) -> Doc:
    """The first indexed filter goes through the `fk` index (an equality, which SecantusDB
    serves from the index); the others are matched on the data. Text and numbers compare by
    value both ways (see `lookup_text`)."""
    query: Doc = {}
    indexed = (*FILTERABLE.get(etype, ()), *LOOKUP_FIELDS)
    for field, value in filters.items():
        text = lookup_text(value)
        # Only plain values: an object from a payload ({"$regex": ...}) must never become a
        # query operator.
        if text is None:
            message = f"{field}: a lookup value is text or a number, not {_kind(value)}"
            problem = FieldProblem("", message, "type", {"target": field})
            raise InvalidPayload(f"cannot look {etype} up by {field}", [problem])
        if "fk" not in query and field in indexed:
            query["fk"] = f"{field}={text}"
        else:
            query[f"data.{field}"] = _same_values(value)
    return query


MAX_OUTBOX = 1_000
"""Events an entity may hold before the relay has moved them (each carries a copy of the
entity's data: 1,000 small vehicles stay far below MongoDB's 16 MiB document limit)."""


def _stamped(events: Sequence[Doc], rev: int) -> list[Doc]:
    """Outbox entries carry the entity revision they were written with, and their place in
    that write: ordered deliveries follow the entity's own order, not the event ids' (ids
    made by different processes in one second do not sort by time)."""
    return [{**event, "entity_rev": rev, "position": i} for i, event in enumerate(events)]


class EntityStore:
    def __init__(
        self, collection: Collection, commits: GroupCommit, relay_commits: GroupCommit
    ) -> None:
        self._c = collection
        self._commits = commits
        self._relay_commits = relay_commits  # not journaled: see drain_outboxes

    async def get(
        self, tenant: str, etype: str, *, id: str | None = None, nk: str | None = None
    ) -> Doc | None:
        # No `deleted` condition: a deleted entity changes type and key (see mark_deleted), and
        # a `$ne` would keep SecantusDB from using the natural-key index.
        query: Doc = {"type": etype}
        if id is not None:
            oid = parse_id(id)
            if oid is None:
                return None
            query["_id"] = oid
        if nk is not None:
            query["nk"] = nk
        with translate_errors():
            return await self._c.find_one(scoped(tenant, query), {"outbox": 0})

    async def find(
        self, tenant: str, etype: str, filters: Mapping[str, Any], *, after: str | None, limit: int
    ) -> list[Doc]:
        query: Doc = {"type": etype, **_filter_query(etype, filters)}
        if after is not None and (oid := parse_id(after)) is not None:
            query["_id"] = {"$gt": oid}
        with translate_errors():
            cursor = self._c.find(scoped(tenant, query), {"outbox": 0})
            return await cursor.sort("_id", ASCENDING).limit(limit).to_list(limit)

    async def insert(
        self, tenant: str, etype: str, nk: str, data: Doc, events: Sequence[Doc]
    ) -> Doc | None:
        """Insert a new entity; None when its natural key is taken (the caller re-reads)."""
        now = datetime.now(UTC)
        doc: Doc = scoped(
            tenant,
            {
                "_id": ObjectId(),
                "type": etype,
                "nk": nk,
                "data": data,
                "fk": filter_keys(etype, data),
                "rev": 1,
                "created_at": now,
                "updated_at": now,
            },
        )
        if events:
            doc.update(
                outbox=_stamped(events, 1), pending=now, pending_shard=relay_shard(doc["_id"])
            )
        try:
            await self._commits.insert(self._c, doc)
        except Conflict:
            return None
        doc.pop("outbox", None)
        return doc

    async def replace_data(
        self, tenant: str, current: Doc, data: Doc, events: Sequence[Doc]
    ) -> Doc | None:
        """Write new data if nobody changed the entity since `current` was read, else None."""
        now = datetime.now(UTC)
        update: Doc = {
            "$set": {"data": data, "fk": filter_keys(current["type"], data), "updated_at": now},
            "$inc": {"rev": 1},
        }
        if events:
            update["$push"] = {"outbox": {"$each": _stamped(events, current["rev"] + 1)}}
            update["$set"]["pending_shard"] = relay_shard(current["_id"])
            update["$min"] = {"pending": now}  # the oldest waiting event's time stays
        query = {"_id": current["_id"], "rev": current["rev"]}
        if events:
            # Backpressure: while the relay is behind by this much for one entity, writes
            # that add events wait (503) rather than grow the document towards its limit.
            query[f"outbox.{MAX_OUTBOX - 1}"] = {"$exists": False}
        matched = await self._commits.update(self._c, scoped(tenant, query), update)
        if matched == 0 and events:
            with translate_errors():
                full = await self._c.count_documents(
                    scoped(tenant, {"_id": current["_id"], "rev": current["rev"]}), limit=1
                )
            if full:
                raise Unavailable("events of this entity are waiting to be relayed; retry shortly")
        if matched == 0:
            return None
        return {**current, **update["$set"], "rev": current["rev"] + 1}

    async def mark_deleted(self, tenant: str, current: Doc, event: Doc) -> bool:
        """Soft-delete: the type and natural key change at once (so no query finds the entity
        and its key is free); the relay removes the document once its outbox, which holds
        `entity.deleted`, has been drained."""
        now = datetime.now(UTC)
        matched = await self._commits.update(
            self._c,
            scoped(tenant, {"_id": current["_id"], "rev": current["rev"]}),
            {
                "$set": {
                    "deleted": True,
                    "type": f"{current['type']}#deleted",
                    "nk": f"{current['nk']}#deleted#{current['_id']}",
                    "updated_at": now,
                    "pending_shard": relay_shard(current["_id"]),
                },
                "$min": {"pending": now},
                "$inc": {"rev": 1},
                "$push": {"outbox": _stamped([event], current["rev"] + 1)[0]},
            },
        )
        return matched == 1

    async def set_folded(self, tenant: str, entity_id: str, fields: Doc, version: int) -> bool:
        """The fleet fold's view of a vehicle (`last_position`, `odometer_km`), only forward:
        written if no later fold (`folded`, the fold's state version) wrote it. The version
        goes up, so a request that read the entity before re-reads it instead of writing
        the old position back; no event (a position is not an `entity.updated`)."""
        oid = parse_id(entity_id)
        if oid is None:
            return False
        behind = {"$or": [{"folded": {"$lt": version}}, {"folded": {"$exists": False}}]}
        query = scoped(tenant, {"_id": oid, "type": "vehicle", **behind})
        changes = {f"data.{name}": value for name, value in fields.items()}
        update: Doc = {
            "$set": {**changes, "folded": version, "updated_at": datetime.now(UTC)},
            "$inc": {"rev": 1},
        }
        # Not journaled: the fold's journaled commit follows it (`client.py` `unjournaled`).
        return bool(await self._relay_commits.update(self._c, query, update))

    # -- the relay's side: system work across tenants, never reached from a request --

    async def pending_outboxes(
        self, limit: int, shards: Collection_[int] | None = None, exclude: Sequence[Any] = ()
    ) -> list[Doc]:
        """Documents with events waiting, in these relay shards (all when None), the longest
        waiting first; `exclude` names ids this process has set aside."""
        query = _shards_query(shards)
        if exclude:
            query["_id"] = {"$nin": list(exclude)}
        projection = {"tenant": 1, "type": 1, "nk": 1, "rev": 1, "outbox": 1, "deleted": 1}
        with translate_errors():
            cursor = self._c.find(query, projection | {"pending": 1})
            return await cursor.sort("pending", ASCENDING).limit(limit).to_list(limit)

    async def park_outbox(self, doc: Doc, reason: str) -> None:
        """Take an outbox the relay cannot store out of its way, keeping every entry in the
        document (`relay_error` says why) for an operator to look at."""
        with translate_errors():
            await self._c.update_one(
                {"_id": doc["_id"]},
                {
                    "$unset": {"pending": "", "pending_shard": ""},
                    "$set": {"relay_error": {"at": datetime.now(UTC), "reason": reason[:500]}},
                },
            )

    async def drain_outboxes(self, drained: Sequence[tuple[Doc, Sequence[Any]]]) -> None:
        """Remove relayed entries from their outboxes, one write per entity, all in one round
        trip (a group commit): if no request wrote the entity since the relay read it (same
        `rev`), the outbox goes (and a deleted entity with it); otherwise, in a second round,
        only the relayed entries are pulled and the entity stays pending for the newer ones.
        Not journaled: the events and deliveries were written before, and the journal keeps
        the order (`client.py` `unjournaled`), so a crash never keeps a drain without them."""
        commits = self._relay_commits

        async def drain(doc: Doc, event_ids: Sequence[Any]) -> None:
            unchanged = {"_id": doc["_id"], "rev": doc["rev"]}
            if doc.get("deleted"):
                matched = await commits.delete(self._c, unchanged)
            else:
                done = {"$unset": {"outbox": "", "pending": "", "pending_shard": ""}}
                matched = await commits.update(self._c, unchanged, done)
            if not matched:
                pull = {"$pull": {"outbox": {"id": {"$in": list(event_ids)}}}}
                await commits.update(self._c, {"_id": doc["_id"]}, pull)

        await asyncio.gather(*(drain(doc, ids) for doc, ids in drained))
