"""The `entities` collection: one document per entity, with its event outbox inside it.

A document is `{_id, tenant, type, nk, data, fk, rev, outbox, pending, pending_shard,
created_at, updated_at}`.
`nk` is the natural key (unique per tenant and type). Events caused by a write are pushed
into `outbox` in the same single-document update as the write itself, so the write and its
events are durable together on any MongoDB deployment without a transaction; the relay in
`gateway/events.py` moves them to the `events` collection and fans them out.

Writes go through the process's group commit (`group_commit.py`): concurrent requests'
entity writes reach the database in one command.

An outbox is bounded by its events (`MAX_OUTBOX`) and by its bytes (`outbox_bytes`, kept
beside it, against MongoDB's 16 MiB document limit: each event carries a copy of the entity):
a write that would pass either bound waits (`EventsBacklogged`, a 503) for the relay. Writes
count their entries' bytes in; a partial drain counts those left from the outbox itself.

While its outbox holds events, a document has `pending` (when its oldest waiting event was
written, set again by a partial drain: the relay takes the oldest first) and `pending_shard`
(which relay shard it belongs to, see `gateway/shares.py`); the relay removes both once it
has moved the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import zlib
from collections.abc import Collection as Collection_
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from unicodedata import normalize

import bson
from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from gateway.clock import as_stored, from_iso, utcnow
from gateway.errors import Conflict, EventsBacklogged, FieldProblem, InvalidPayload
from gateway.formats.json_tree import a_json_type
from gateway.formats.unicode_forms import nfc
from gateway.store.client import (
    Collection,
    Doc,
    cursor_id,
    find_by_ids,
    id_above,
    new_id,
    parse_id,
    scoped,
    stored_size,
    translate_errors,
    unjournaled,
)
from gateway.store.group_commit import SEALS, GroupCommit, Marks, mark_doc, seal
from gateway.store.migrations import record_step, step_done

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
# natural key (a tracker id, a partner's vehicle id). They are indexed through one multikey
# index on `fk`, a list of "field=value" strings kept beside the data: one index to maintain
# per write instead of one per field (each costs the embedded server milliseconds per update).
FILTERABLE = {
    "vehicle": ("plate", "status", "group", "renavam"),
    "driver": ("cpf", "status"),
    "supplier": ("cnpj",),
    "operator": ("cpf", "role"),
    "other": ("kind", "status", "plate"),
}
MEMBERS = {"vehicle": {"group": "groups"}}
"""Filters a list field answers too: a vehicle is in a group by its `group` or by one of its
`groups`, as a geofence's or a maintenance plan's `group` applies to it (`?group=north`).
A group is one group in either Unicode form ("São Paulo" composed, or decomposed as macOS
and iOS send it): its filter keys and a filter by it are in NFC (`nfc`), as
`geofences.reaches` compares."""
LOOKUP_SUFFIX = "_id"
"""Partner ids are lookup fields by their name: an attribute named `<something>_id`
(`attributes.tracker_id`, `attributes.erp_id`, `attributes.motive_id`, ...) of any entity type
is indexed, so a mapping keyed by it finds the entity through the index."""
MAX_LOOKUP_IDS = 20
"""Partner ids indexed per entity (the first ones, in the attributes' order). An entity with
more has `MORE_IDS` among its filter keys: a lookup by a partner id reads those entities too,
matching the id on their data (`_filter_query`), so an id past the twentieth is found."""
MORE_IDS = "attributes=*"
"""The filter key of an entity with partner ids past `MAX_LOOKUP_IDS` (no field is named
`attributes` in `FILTERABLE`: no other key has this text)."""
MAX_LOOKUP_TEXT = 200
"""Longer values are not indexed (nor looked up through the index: matched on the data)."""
INDEXES.append(
    IndexModel([("tenant", ASCENDING), ("type", ASCENDING), ("fk", ASCENDING)], name="filters")
)
RETIRED_INDEXES = ["outbox_pending"]  # dropped at start: every index costs every write
RELAY_SHARDS = 16


def relay_shard(entity_id: Any) -> int:
    return zlib.crc32(str(entity_id).encode()) % RELAY_SHARDS


def _shards_query(shards: Collection_[int] | None) -> Doc:
    """Documents of these shards (all when None), served by the sparse pending index. Only
    numbers: a `null` in the `$in` would have to match documents without the field, which a
    sparse index does not hold, and turned every relay poll into a collection scan (21 ms of
    the embedded server's CPU with 1,000 entities, against 1 ms)."""
    chosen = list(range(RELAY_SHARDS)) if shards is None else sorted(shards)
    return {"pending_shard": {"$in": chosen}, "pending": {"$exists": True}}


def is_lookup_field(field: str) -> bool:
    """Whether `field` is a partner id (`attributes.<name>_id`), indexed for lookups."""
    head, _, name = field.partition(".")
    return head == "attributes" and name.endswith(LOOKUP_SUFFIX) and "." not in name


def derived(etype: str, data: Mapping[str, Any]) -> Doc:
    """What an entity's document keeps beside its data, worked out from it at every write:
    its filter keys (`fk`) and, for a vehicle, `position_at`, the device time of its
    `last_position` (`time`, any ISO 8601 form, as a date-time the database compares):
    the fold writes a position only over an older one (`set_folded`). A time further ahead
    than any fix the fold takes (a device's clock gone wrong, written by a mapping without
    quality gates) guards nothing: the fold's next position replaces it."""
    fields: Doc = {"fk": filter_keys(etype, data)}
    if etype == "vehicle":
        at = position_time(data)
        fields["position_at"] = at if at is None or at <= utcnow() + AHEAD else None
    return fields


AHEAD = timedelta(days=1)  # beyond the fold's future tolerance (at most 24 h, docs/fleet.md)


def odometer_reading(
    etype: str | None, event: Mapping[str, Any]
) -> tuple[float, float | None] | None:
    """The odometer a vehicle event sets (an outbox entry, or the event relayed from it), if
    it sets one, and the one it replaced on the vehicle (None: a new vehicle, or one without
    an odometer): what the fold takes as a reading (`fleet/readings.py`). The fold's own
    events set none (it writes `odometer_km` itself, `set_folded`)."""
    if etype != "vehicle" or (event.get("origin") or {}).get("kind") == "fold":
        return None
    value: Any = None
    old: Any = None
    if event.get("type") == "entity.created":
        value = (event.get("data") or {}).get("odometer_km")
    elif event.get("type") == "entity.updated":
        for change in event.get("changes") or ():
            if change.get("field") == "odometer_km":
                value, old = change.get("new"), change.get("old")
    if not _km(value):
        return None
    return float(value), float(old) if _km(old) else None


def _km(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _reading_stamp(etype: str, events: Sequence[Doc], rev: int) -> Doc:
    """`odometer_rev`, the revision of the vehicle's last write whose events carry an odometer
    reading (`odometer_reading`; the reading carries it too): the fold writes its count only
    over the readings it has folded (`set_folded`)."""
    return {"odometer_rev": rev} if any(odometer_reading(etype, e) for e in events) else {}


DERIVED_MIGRATION = "entities.derived.group_nfc"
"""Named after the last change to `derived` (a vehicle's group keys in NFC; before, its
`groups` among its `group` keys; before that, `more_ids`, and `position_at`): a database
whose marker names an earlier one is backfilled again."""
_BACKFILL_BATCH = 500


def _same(stored: Any, fresh: Any) -> bool:
    """A stored derived value against a fresh one: date-times as the database keeps them (to
    the millisecond)."""
    if isinstance(stored, datetime) and isinstance(fresh, datetime):
        return abs(stored - fresh) < timedelta(milliseconds=1)
    return bool(stored == fresh)


def position_time(data: Mapping[str, Any]) -> datetime | None:
    """The device time of a vehicle's `last_position` (its `time`), None without one."""
    position = data.get("last_position")
    at = position.get("time") if isinstance(position, Mapping) else None
    try:
        moment = from_iso(at) if isinstance(at, str) else at
        if not isinstance(moment, datetime):
            return None
        # In UTC, as the database keeps it: the first and last hours of years 1 and 9999
        # with an offset have no UTC time the database can hold.
        return moment.replace(tzinfo=moment.tzinfo or UTC).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def filter_keys(etype: str, data: Mapping[str, Any]) -> list[str]:
    keys = []
    members = MEMBERS.get(etype, {})
    for field in FILTERABLE.get(etype, ()):
        values = [data.get(field)]
        if field in members and isinstance(listed := data.get(members[field]), list):
            values += listed
        texts = (lookup_text(value) for value in values)
        if field in members:  # a group: in NFC
            texts = (None if text is None else nfc(text) for text in texts)
        for text in dict.fromkeys(texts):
            if text is not None and len(text) <= MAX_LOOKUP_TEXT:
                keys.append(f"{field}={text}")
    attributes = data.get("attributes")
    if isinstance(attributes, Mapping):
        ids = 0
        for name, value in attributes.items():
            if not name.endswith(LOOKUP_SUFFIX) or "." in name:
                continue
            text = lookup_text(value)
            if text is not None and len(text) <= MAX_LOOKUP_TEXT:
                if ids == MAX_LOOKUP_IDS:
                    keys.append(MORE_IDS)
                    break
                keys.append(f"attributes.{name}={text}")
                ids += 1
    return keys


def lookup_text(value: Any) -> str | None:
    """The text a lookup compares by, so that text and numbers meet by value: a string as it
    is, a number in its canonical decimal form (123 and 123.0 → "123", 1.5 → "1.5"). So
    "123" finds 123 and 123 finds "123", but "0123" and "123.0" (text) find only themselves.
    A float at or past 2^53 holds no integer exactly (`12345678901234567.0` reads as
    ...568): its text is its float form, which names no device's id, not the neighbour's.
    None for anything else (booleans, objects, lists, null)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_FLOATS:
        return str(int(value))
    return str(value) if isinstance(value, int) else repr(value)


_EXACT_FLOATS = 2.0**53  # every integer below it is a float exactly
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


def _filter_query(
    etype: str, filters: Mapping[str, Any], one_of: Mapping[str, Sequence[str]]
) -> tuple[Doc, Doc | None]:
    """The first indexed filter goes through the `fk` index (an equality, which SecantusDB
    serves from the index); the others are matched on the data. Text and numbers compare by
    value both ways (see `lookup_text`). A field of `one_of` matches any of its texts (a
    plate's spellings).

    When a partner id (`is_lookup_field`) is the indexed one, the second query finds the
    entities that may hold it unindexed: those with `MORE_IDS` (through the same index), the
    id matched on their data. None otherwise."""
    query: Doc = {}
    more: tuple[str, Any] | None = None
    filterable = FILTERABLE.get(etype, ())
    for field, texts in one_of.items():
        if "fk" not in query and field in filterable:
            query["fk"] = {"$in": [f"{field}={text}" for text in texts]}
        else:
            query[f"data.{field}"] = {"$in": list(texts)}
    for field, value in filters.items():
        text = lookup_text(value)
        listed = MEMBERS.get(etype, {}).get(field)
        if listed is not None and text is not None:  # a group: in NFC, as its filter keys
            text = nfc(text)
        # Only plain values: an object from a payload ({"$regex": ...}) must never become a
        # query operator.
        if text is None:
            message = f"{field}: a lookup value is text or a number, not {a_json_type(value)}"
            problem = FieldProblem("", message, "type", {"target": field})
            raise InvalidPayload(f"cannot look {etype} up by {field}", [problem])
        indexed = field in filterable or is_lookup_field(field)
        if "fk" not in query and indexed and len(text) <= MAX_LOOKUP_TEXT:
            query["fk"] = f"{field}={text}"
            if is_lookup_field(field):
                more = (field, value)
        elif listed is not None:  # as stored: in NFC, decomposed, or as sent
            forms = {"$in": list(dict.fromkeys((text, normalize("NFD", text), value)))}
            either = [{f"data.{name}": forms} for name in (field, listed)]
            query.setdefault("$and", []).append({"$or": either})
        else:
            query[f"data.{field}"] = _same_values(value)
    if more is None:
        return query, None
    field, value = more
    return query, {**query, "fk": MORE_IDS, f"data.{field}": _same_values(value)}


def index_first(query: Doc) -> list[Doc]:
    """A find's filter as `$match` stages: first the fields one index holds whole (the
    natural key's, else the filter keys', else the type's with an id range), then the others.

    SecantusDB reads through an index only a filter whose every field that index holds; for
    any other it reads through an index the first field (in the filter's order) that one
    serves alone, and matches the rest on what that read: `{tenant, type, fk, data.status}`
    read every entity of the tenant (its `tenant`, the one field an index leads with), and a
    filter with an operator at its top (`$and`, `$nor`: a group's two fields, a list that
    leaves some out) read every tenant's. An aggregation's first `$match` is planned alone."""
    if "nk" in query:
        keys: tuple[str, ...] = ("tenant", "type", "nk")
    elif "fk" in query:
        keys = ("tenant", "type", "fk")
    else:
        keys = ("tenant", "type", "_id")
    first = {key: query[key] for key in keys if key in query}
    rest = {key: value for key, value in query.items() if key not in first}
    return [{"$match": first}, {"$match": rest}] if rest else [{"$match": first}]


MAX_OUTBOX = 1_000
"""Events an entity may hold before the relay has moved them."""
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""MongoDB's limit on one document: an entity's data and its waiting events together."""
DOCUMENT_SLACK = 64 * 1024
"""What an entity's document holds beside its data and outbox (ids, keys, times, `fk`)."""
BACKLOGGED = "events of this entity are waiting to be relayed; retry shortly"


def _outbox_bytes(entries: Sequence[Doc]) -> int:
    """The bytes outbox entries take, as the database's `$bsonSize` counts them (`_pulled`);
    InvalidPayload when BSON cannot hold them (an integer past 8 bytes), as the write would be."""
    with translate_errors():
        return sum(len(bson.encode(entry)) for entry in entries)


def _pulled(ids: list[Any], now: datetime) -> list[Doc]:
    """The update (a pipeline) that pulls the relayed entries `ids` from an outbox and counts
    what is left again, from the outbox itself. Its bytes: whatever pulled them before (two
    relays draining the same read in a lease hand-over) or counted them (an outbox stored
    before the counter, whose entries it never held), the count is of the outbox as it is.
    Its `pending`: the time of the oldest entry left (it kept that of the oldest entry ever
    waiting, and an entity written on without a pause read as waiting since the first write
    of the streak), or `now` when none is left (a write without events moved the revision):
    the relay's next pass takes the empty outbox away, as any whose entity is unchanged."""
    left = {"$filter": {"input": "$outbox", "cond": {"$not": [{"$in": ["$$this.id", ids]}]}}}
    sizes = {"$map": {"input": "$outbox", "in": {"$bsonSize": "$$this"}}}
    # `$map`: SecantusDB resolves `$outbox.occurred_at` to nothing (MongoDB to the array).
    times = {"$map": {"input": "$outbox", "in": "$$this.occurred_at"}}
    oldest = {"$ifNull": [{"$min": times}, now]}
    return [
        {"$set": {"outbox": left}},
        {"$set": {"outbox_bytes": {"$sum": sizes}, "pending": oldest}},
    ]


def _outbox_guard(query: Doc, update: Doc, data: Doc, entries: Sequence[Doc]) -> None:
    """Backpressure on a write that adds `entries` to an entity's outbox: the write matches
    only while the outbox holds fewer than `MAX_OUTBOX` events and so few bytes that the
    document with `data` and the new entries stays within `MAX_DOCUMENT_BYTES`; the update
    counts the entries' bytes in. Without the byte bound an entity of 1 MB filled its 16 MiB
    after 15 events waiting, and the write was the database's refusal, a 422 telling the
    caller its payload was wrong. A write too large for even an empty outbox is not guarded:
    the database refuses it for what it carries (`translate_errors`: a 422)."""
    added = _outbox_bytes(entries)
    query[f"outbox.{MAX_OUTBOX - 1}"] = {"$exists": False}
    room = MAX_DOCUMENT_BYTES - DOCUMENT_SLACK - stored_size(data) - added
    if room >= 0:  # `$not` matches an outbox written before its bytes were counted
        query["outbox_bytes"] = {"$not": {"$gt": room}}
    update.setdefault("$inc", {})["outbox_bytes"] = added


def _stamped(events: Sequence[Doc], rev: int, current: Doc | None = None) -> list[Doc]:
    """Outbox entries carry the entity revision they were written with, and their place in
    that write: ordered deliveries follow the entity's own order. Their ids sort above the
    entity's previous event's (`last_event`, kept beside its data; `id_above`), so its events
    listed by id are in its write order: ids made by different processes in one second sort
    by the process, not by time. The write is conditional on the revision read with
    `last_event`, so no other event of the entity lands between the two."""
    entries = []
    floor = None if current is None else current.get("last_event")
    for i, event in enumerate(events):
        floor = id_above(event["id"], floor)
        entries.append({**event, "id": floor, "entity_rev": rev, "position": i})
    return entries


def _last_event(entries: Sequence[Doc]) -> Doc:
    """What a write keeps of its events beside the entity's data (`_stamped`)."""
    return {"last_event": entries[-1]["id"]} if entries else {}


_ILLEGAL_OPERATION = 20
_NO_TRANSACTIONS = (
    "this database has no multi-document transactions (a standalone MongoDB): a mapping "
    "that writes several entities (also) needs a replica set (one node is enough) or the "
    "embedded database"
)
_NO_TRANSACTIONS_PROBLEM = FieldProblem("", _NO_TRANSACTIONS, "transactions")


@dataclass(frozen=True, slots=True)
class TogetherWrite:
    """One entity of a write that spans several (`write_together`): a new entity (`current`
    None) or new data for `current`, with the events the change causes."""

    etype: str
    nk: str
    current: Doc | None
    data: Doc
    events: Sequence[Doc]


@dataclass(frozen=True, slots=True)
class Folded:
    """What the fleet fold writes on a vehicle (`EntityStore.set_folded`); `start`: the
    odometer a vehicle's first fold counted on from and the newest reading it had in it
    (`fold_start_km`, `fold_start_rev`), kept for a fold that has to start again."""

    tenant: str
    entity_id: str
    fields: Doc
    version: int
    start: tuple[float, int] | None = None
    reading_rev: int = 0  # the newest reading the fold had folded: see `set_folded`
    # What the position written is newer than: the fold's present, its time or, for a fix
    # dated ahead of its arrival, its arrival and credit (docs/fleet.md "Fold"); None: its
    # own time. A later fix dated before a fix dated ahead is written over it.
    position_at: datetime | None = None


class EntityStore:
    def __init__(
        self,
        collection: Collection,
        commits: GroupCommit,
        relay_commits: GroupCommit,
        fold_commits: GroupCommit,
    ) -> None:
        self._c = collection
        self._commits = commits
        self._relay_commits = relay_commits  # not journaled: see drain_outboxes
        self._fold_commits = fold_commits  # see set_folded
        self._together_marks = Marks("together")  # `write_together`'s (`seal`)

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

    async def take_turn(self, tenant: str, etype: str, nk: str) -> Doc | None:
        """The entity, read for a write that lost a round to another writer: its revision is
        moved on as it is read (no data changes, no event), so a write another process makes
        from the copy it remembers, without a read, loses this round and reads too, instead
        of getting in ahead every time (`gateway/entities.py` `_Rounds`). None when there is
        no such entity."""
        query = scoped(tenant, {"type": etype, "nk": nk})
        # Not journaled: it changes nothing a write stands on; lost in a crash, the write
        # guarded by the revision it read loses its round, and reads again.
        # An update then a read (of what it moved, or a later write's): a `find_one_and_update`
        # SecantusDB writes with an operator at its filter's top, matched against every entity
        # of every tenant, on the contended writes that need it most.
        with translate_errors():
            moved = await unjournaled(self._c).update_one(query, {"$inc": {"rev": 1}})
            if not moved.matched_count:
                return None
            found: Doc | None = await self._c.find_one(query, {"outbox": 0})
        return found

    async def find(
        self,
        tenant: str,
        etype: str,
        filters: Mapping[str, Any],
        *,
        after: str | None,
        limit: int,
        nk: str | None = None,
        one_of: Mapping[str, Sequence[str]] | None = None,
        excluding: Mapping[str, str] | None = None,
    ) -> list[Doc]:
        matched, more = _filter_query(etype, filters, one_of or {})
        common: Doc = {"type": etype}
        if excluding:  # plain text: never an operator
            common["$nor"] = [{f"data.{k}": str(v)} for k, v in excluding.items()]
        if nk is not None:
            common["nk"] = nk
        if after is not None:
            common["_id"] = {"$gt": cursor_id(after)}
        queries = [matched] if more is None else [matched, more]
        with translate_errors():
            found = await asyncio.gather(
                *(
                    self._read_first_page(scoped(tenant, {**common, **query}), limit)
                    for query in queries
                )
            )
        if more is None:
            return found[0]
        # An entity in both (its id indexed, and ids past the limit) is one.
        merged = {doc["_id"]: doc for docs in found for doc in docs}
        return [merged[key] for key in sorted(merged)][:limit]

    async def _read_first_page(self, query: Doc, limit: int) -> list[Doc]:
        """The first `limit` entities `query` matches, by id: one aggregation whose first
        stage is what an index serves whole (`index_first`), the rest matched after it."""
        pipeline = [
            *index_first(query),
            {"$sort": {"_id": ASCENDING}},
            {"$limit": limit},
            {"$project": {"outbox": 0}},
        ]
        cursor = await self._c.aggregate(pipeline)
        return await cursor.to_list(limit)

    async def insert(
        self, tenant: str, etype: str, nk: str, data: Doc, events: Sequence[Doc]
    ) -> Doc | None:
        """Insert a new entity; None when its natural key is taken (the caller re-reads)."""
        now = as_stored(utcnow())
        doc: Doc = scoped(
            tenant,
            {
                "_id": new_id(),
                "type": etype,
                "nk": nk,
                "data": data,
                **derived(etype, data),
                **_reading_stamp(etype, events, 1),
                "rev": 1,
                "created_at": now,
                "updated_at": now,
            },
        )
        if events:
            outbox = _stamped(events, 1)
            doc.update(
                outbox=outbox,
                outbox_bytes=_outbox_bytes(outbox),
                pending=now,
                pending_shard=relay_shard(doc["_id"]),
                **_last_event(outbox),
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
        now = as_stored(utcnow())
        update: Doc = {
            "$set": {
                "data": data,
                **derived(current["type"], data),
                **_reading_stamp(current["type"], events, current["rev"] + 1),
                "updated_at": now,
            },
            "$inc": {"rev": 1},
        }
        query: Doc = {"_id": current["_id"], "rev": current["rev"]}
        if events:
            entries = _stamped(events, current["rev"] + 1, current)
            update["$push"] = {"outbox": {"$each": entries}}
            update["$set"]["pending_shard"] = relay_shard(current["_id"])
            update["$set"].update(_last_event(entries))
            update["$min"] = {"pending": now}  # the oldest waiting event's time stays
            _outbox_guard(query, update, data, entries)
        matched = await self._commits.update(self._c, scoped(tenant, query), update)
        if matched == 0 and events:
            await self._refuse_if_backlogged(tenant, current)
        if matched == 0:
            return None
        return {**current, **update["$set"], "rev": current["rev"] + 1}

    async def restate(self, tenant: str, current: Doc, data: Doc) -> bool:
        """Store `data`, the entity's data in another form that means the same (identifiers
        normalised by a kind's new schema), with its filter keys, if nobody changed the entity
        since `current` was read: no event, and `updated_at` stays (nothing changed); the
        revision moves on, so a write from a copy read before reads it again."""
        update: Doc = {"$set": {"data": data, **derived(current["type"], data)}, "$inc": {"rev": 1}}
        query: Doc = {"_id": current["_id"], "rev": current["rev"]}
        return bool(await self._commits.update(self._c, scoped(tenant, query), update))

    async def _refuse_if_backlogged(
        self, tenant: str, current: Doc, session: AsyncClientSession | None = None
    ) -> None:
        """After a guarded write matched nothing: EventsBacklogged when the entity is still
        at the revision read (so the outbox's bound refused it), else nothing (it changed: the
        caller reads it again)."""
        with translate_errors():
            unchanged = await self._c.count_documents(
                scoped(tenant, {"_id": current["_id"], "rev": current["rev"]}),
                limit=1,
                session=session,
            )
        if unchanged:
            raise EventsBacklogged(BACKLOGGED)

    async def write_together(
        self, tenant: str, writes: Sequence[TogetherWrite]
    ) -> list[Doc] | None:
        """Several entities and their events in one multi-document transaction: all of them
        are stored, or none is. None when one of them lost a race (its key was taken, its
        revision moved): nothing was written and the caller re-reads.

        The commit is journaled (the client's write concern); the transaction's last write
        inserts a mark, and one journaled write after it (the mark's delete) seals it as a
        group commit round is sealed (`group_commit.py` `seal`): SecantusDB is known to drop
        `j` on the operations of a multi-operation command, and a server restarted between
        the commit and the seal must not seal what it never had (the likeliest way the kill
        experiment of tests/test_durability.py once lost an answered checklist)."""
        now = as_stored(utcnow())
        client = self._c.database.client
        with translate_errors():
            async with client.start_session() as session:
                await session.start_transaction()
                try:
                    docs = []
                    for write in writes:
                        doc = await self._write_in(session, tenant, write, now)
                        if doc is None:
                            await _abort(session)
                            return None
                        docs.append(doc)
                    mark = self._together_marks.next()
                    await self._c.database[SEALS].insert_one(mark_doc(mark), session=session)
                    await session.commit_transaction()
                except DuplicateKeyError:  # a natural key taken meanwhile
                    await _abort(session)
                    return None
                except OperationFailure as exc:
                    await _abort(session)
                    if exc.has_error_label("TransientTransactionError"):
                        return None  # a write conflict with another transaction
                    if exc.code == _ILLEGAL_OPERATION:  # a standalone server: no transactions
                        raise InvalidPayload(_NO_TRANSACTIONS, [_NO_TRANSACTIONS_PROBLEM]) from None
                    raise
                except BaseException:
                    await _abort(session)
                    raise
        await seal(self._c.database, mark)
        return docs

    async def _write_in(
        self, session: AsyncClientSession, tenant: str, write: TogetherWrite, now: datetime
    ) -> Doc | None:
        """One write of `write_together`, inside its transaction: the document as stored, or
        None when the entity changed since it was read."""
        current = write.current
        if current is None:
            doc: Doc = scoped(
                tenant,
                {
                    "_id": new_id(),
                    "type": write.etype,
                    "nk": write.nk,
                    "data": write.data,
                    **derived(write.etype, write.data),
                    **_reading_stamp(write.etype, write.events, 1),
                    "rev": 1,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            if write.events:
                outbox = _stamped(write.events, 1)
                doc.update(
                    outbox=outbox,
                    outbox_bytes=_outbox_bytes(outbox),
                    pending=now,
                    pending_shard=relay_shard(doc["_id"]),
                    **_last_event(outbox),
                )
            await self._c.insert_one(doc, session=session)
            doc.pop("outbox", None)
            return doc
        update: Doc = {
            "$set": {
                "data": write.data,
                **derived(write.etype, write.data),
                **_reading_stamp(write.etype, write.events, current["rev"] + 1),
            },
            "$inc": {"rev": 1},
        }
        update["$set"]["updated_at"] = now
        query: Doc = {"_id": current["_id"], "rev": current["rev"]}
        if write.events:
            entries = _stamped(write.events, current["rev"] + 1, current)
            update["$push"] = {"outbox": {"$each": entries}}
            update["$set"]["pending_shard"] = relay_shard(current["_id"])
            update["$set"].update(_last_event(entries))
            update["$min"] = {"pending": now}
            _outbox_guard(query, update, write.data, entries)
        result = await self._c.update_one(scoped(tenant, query), update, session=session)
        if result.matched_count == 0:
            if write.events:
                await self._refuse_if_backlogged(tenant, current, session)
            return None
        return {**current, **update["$set"], "rev": current["rev"] + 1}

    async def mark_deleted(self, tenant: str, current: Doc, event: Doc) -> bool:
        """Soft-delete: the type and natural key change at once (so no query finds the entity
        and its key is free); the relay removes the document once its outbox, which holds
        `entity.deleted`, has been drained. False when the entity changed since `current` was
        read; EventsBacklogged when its outbox is full (`_outbox_guard`)."""
        now = as_stored(utcnow())
        entries = _stamped([event], current["rev"] + 1, current)
        query: Doc = {"_id": current["_id"], "rev": current["rev"]}
        update: Doc = {
            "$set": {
                **_last_event(entries),
                "deleted": True,
                "type": f"{current['type']}#deleted",
                "nk": f"{current['nk']}#deleted#{current['_id']}",
                "updated_at": now,
                "pending_shard": relay_shard(current["_id"]),
            },
            "$min": {"pending": now},
            "$inc": {"rev": 1},
            "$push": {"outbox": {"$each": entries}},
        }
        _outbox_guard(query, update, current["data"], entries)
        matched = await self._commits.update(self._c, scoped(tenant, query), update)
        if matched == 0:
            await self._refuse_if_backlogged(tenant, current)
        return matched == 1

    async def deleted_outbox(self, tenant: str, etype: str, id: str) -> Doc | None:
        """A deleted entity of this type and id whose outbox the relay has not drained yet
        (`mark_deleted`: it holds `entity.deleted`), with that outbox; None once the relay
        removed it, or for an id that names no deleted entity."""
        oid = parse_id(id)
        if oid is None:
            return None
        query = scoped(tenant, {"_id": oid, "type": f"{etype}#deleted"})
        with translate_errors():
            return await self._c.find_one(query, {"type": 1, "nk": 1, "outbox": 1})

    async def backfill_derived(self) -> int:
        """Give entities written by an older gateway what it did not keep beside their data
        (`derived`: partner-id lookup keys, a vehicle's `position_at`); once per database (a
        marker in `migrations`), at start. Each update is guarded by the entity's revision: a
        write meanwhile has set its own. Returns how many entities it updated. The updates go
        in unordered batches (one journaled round each), not one by one."""
        migrations = self._c.database["migrations"]
        if await step_done(migrations, DERIVED_MIGRATION):
            return 0
        updated = 0
        with translate_errors():
            projection = {"type": 1, "data": 1, "fk": 1, "position_at": 1, "rev": 1}
            batch: list[UpdateOne] = []
            async for doc in self._c.find({"deleted": {"$exists": False}}, projection):
                fields = derived(doc["type"], doc["data"])
                stale = {k: v for k, v in fields.items() if not _same(doc.get(k), v)}
                if stale:
                    guard = {"_id": doc["_id"], "rev": doc["rev"]}
                    batch.append(UpdateOne(guard, {"$set": stale}))
                if len(batch) == _BACKFILL_BATCH:
                    updated += (await self._c.bulk_write(batch, ordered=False)).modified_count
                    batch = []
            if batch:
                updated += (await self._c.bulk_write(batch, ordered=False)).modified_count
        await record_step(migrations, DERIVED_MIGRATION, utcnow())
        return updated

    async def vehicles(self, ids: Sequence[str]) -> dict[str, Doc]:
        """The fold's vehicles by id, across tenants (each fleet document names its tenant),
        `ID_BATCH` ids a query: a lookup each, all sent at once, queued at the embedded server
        past the database deadline for a pass of 1,000."""
        oids = [oid for oid in (parse_id(i) for i in ids) if oid is not None]
        docs = await find_by_ids(self._c, oids, {"type": "vehicle"}, {"outbox": 0})
        return {str(doc["_id"]): doc for doc in docs}

    async def every(self, tenant: str, etype: str, fields: Sequence[str]) -> list[Doc]:
        """Every entity of a type, by id, only the `data` members `fields` (and `_id`), in
        one query: what a page's select offers (a vehicle's page, its fleet's drivers)."""
        projection = {f"data.{name}": 1 for name in fields}
        with translate_errors():
            cursor = self._c.find(scoped(tenant, {"type": etype}), projection).sort("_id", 1)
            return await cursor.to_list(None)

    async def vehicle_refs(self, tenant: str) -> list[Doc]:
        """A tenant's vehicles: their id, plate, groups and odometer (the fold's clock, once
        an hour: which vehicles a time-based plan counts, tracker or not; the admin pages that
        look at the whole fleet), in one query. A range of the `by_type` index."""
        projection = {
            "_id": 1,
            "nk": 1,
            "data.plate": 1,
            "data.group": 1,
            "data.groups": 1,
            "data.odometer_km": 1,
        }
        with translate_errors():
            return await self._c.find(scoped(tenant, {"type": "vehicle"}), projection).to_list(None)

    async def set_folded(self, folds: Sequence[Folded]) -> list[bool | BaseException]:
        """The fleet fold's view of vehicles (`last_position`, `odometer_km`), each only
        forward: written unless a later fold wrote it (`folded`, the fold's inbox number; an
        equal one is the same fold of the same input, written again after a crash). The
        position only over an older one (`position_at`: another writer, a partner's event
        mapping, may have stored a newer fix than the track's). The odometer only over the
        readings the fold has folded (`odometer_rev`, `reading_rev`): a write to the vehicle's
        `odometer_km` (an admin's correction, a checklist, an ERP) reaches the fold as a
        reading, through the relay, a moment later; until the fold has taken it, its count
        does not have it and must not replace it. Where either is refused, the other is
        written alone, in a second round. The revision goes up, so a request that read the
        entity before re-reads it instead of writing the old position back; no event (a
        position is not an `entity.updated`). Whether each was written (in part), or what its
        write failed with.

        Journaled rounds (`group_commit.py` `seal`; the second only for writes refused): the
        fold's state, written after them, says they are done, and a restarted database must
        not hold the one without the other (`client.py` `unjournaled`)."""
        outcomes: list[bool | BaseException] = [False] * len(folds)
        targets = [i for i, fold in enumerate(folds) if parse_id(fold.entity_id) is not None]
        first = await self._write_folded([(folds[i], folds[i].fields) for i in targets])
        again: list[tuple[int, Doc]] = []
        for index, outcome in zip(targets, first, strict=True):
            outcomes[index] = outcome
            fields = folds[index].fields
            if outcome is False and len(fields) > 1:  # not written: each guarded field alone
                again += [(index, {name: value}) for name, value in fields.items()]
        if again:
            second = await self._write_folded([(folds[i], part) for i, part in again])
            for (index, _), outcome in zip(again, second, strict=True):
                if outcomes[index] is False or isinstance(outcome, BaseException):
                    outcomes[index] = outcome
        return outcomes

    async def _write_folded(
        self, parts: Sequence[tuple[Folded, Doc]]
    ) -> list[bool | BaseException]:
        """Each fold's `fields` (all of its fields, or a part), guarded as `set_folded` says."""
        writes: list[tuple[Doc, Doc]] = []
        for fold, fields in parts:
            oid = parse_id(fold.entity_id)
            assert oid is not None
            # `$not` matches a vehicle the fold never wrote too (and one no reading was
            # written to); an `$or` would cost SecantusDB a scan (measured: 9.7 ms of database
            # CPU per update instead of 1.7).
            guard: Doc = {"folded": {"$not": {"$gt": fold.version}}}
            if "odometer_km" in fields:
                guard["odometer_rev"] = {"$not": {"$gt": fold.reading_rev}}
            changes: Doc = {f"data.{name}": value for name, value in fields.items()}
            if "last_position" in fields:  # the time of the position written (none: none)
                at = fold.position_at or position_time(fields)
                if at is not None:
                    guard["position_at"] = {"$not": {"$gt": at}}  # none, or not newer
                changes["position_at"] = at
            if fold.start is not None:
                changes["fold_start_km"], changes["fold_start_rev"] = fold.start
            update: Doc = {
                "$set": {**changes, "folded": fold.version, "updated_at": utcnow()},
                "$inc": {"rev": 1},
            }
            writes.append((scoped(fold.tenant, {"_id": oid, "type": "vehicle", **guard}), update))
        if not writes:
            return []
        written = await self._fold_commits.updates(self._c, writes)
        return [o if isinstance(o, BaseException) else bool(o) for o in written]

    # -- the relay's side: system work across tenants, never reached from a request --

    async def shard_unsharded_outboxes(self) -> int:
        """Outboxes written before relay shards existed (pending, no `pending_shard`) join
        shard 0, so the relay's query finds them; run at start (it scans the collection)."""
        with translate_errors():
            result = await self._c.update_many(
                {"pending": {"$exists": True}, "pending_shard": {"$exists": False}},
                {"$set": {"pending_shard": 0}},
            )
        return result.modified_count

    async def pending_outboxes(
        self,
        limit: int,
        shards: Collection_[int] | None = None,
        exclude: Sequence[Any] = (),
        *,
        other_than: Collection_[str] = (),
    ) -> list[Doc]:
        """Documents with events waiting, in these relay shards (all when None), the longest
        waiting first; `exclude` names ids this process has set aside, `other_than` tenants
        whose outboxes are not wanted (the relay has its share of theirs)."""
        query = _shards_query(shards)
        if exclude:
            query["_id"] = {"$nin": list(exclude)}
        if other_than:
            query["tenant"] = {"$nin": sorted(other_than)}
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
                    "$set": {"relay_error": {"at": utcnow(), "reason": reason[:500]}},
                },
            )

    async def drain_outboxes(self, drained: Sequence[tuple[Doc, Sequence[Any]]]) -> None:
        """Remove relayed entries from their outboxes, one write per entity, all in one round
        trip (a group commit): if no request wrote the entity since the relay read it (same
        `rev`), the outbox goes (and a deleted entity with it); otherwise, in a second round,
        only the relayed entries still there are pulled, the outbox's bytes counted again from
        what is left (`_pulled`), and the entity stays pending for the newer ones, since the
        oldest of them. An entity's ids that are not all its outbox read (the relay drains
        the events a large fan-out finished) are pulled, the outbox left for the rest.
        Not journaled: the events and deliveries were written before, journaled (`client.py`
        `unjournaled`), and a drain lost in a crash is done again."""
        commits = self._relay_commits

        async def drain(doc: Doc, event_ids: Sequence[Any]) -> None:
            # `$eq` rather than a bare value: SecantusDB looks for a compound index covering
            # a filter of bare equalities before it takes the `_id` (0.2 ms of its CPU a write).
            unchanged = {"_id": doc["_id"], "rev": {"$eq": doc["rev"]}}
            if len(event_ids) < len(doc.get("outbox", ())):  # the head of it (a large fan-out)
                matched = 0
            elif doc.get("deleted"):
                matched = await commits.delete(self._c, unchanged)
            else:
                done = {
                    "$unset": {"outbox": "", "outbox_bytes": "", "pending": "", "pending_shard": ""}
                }
                matched = await commits.update(self._c, unchanged, done)
            if not matched:
                ids = list(event_ids)
                present = {"_id": doc["_id"], "outbox.id": {"$in": ids}}
                await commits.update(self._c, present, _pulled(ids, as_stored(utcnow())))

        await asyncio.gather(*(drain(doc, ids) for doc, ids in drained))


async def _abort(session: AsyncClientSession) -> None:
    """Abort the session's transaction if it is still open (a failed one already is)."""
    if session.in_transaction:
        with contextlib.suppress(PyMongoError):
            await session.abort_transaction()
