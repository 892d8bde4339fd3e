"""The notify lane's collections: driver assignments, channels, templates, per-tenant
notification settings, cooldowns, flows (`store/flows.py`) and their runs (`store/flow_runs.py`).

Channels and templates are `{_id, tenant, name, ..., rev, created_at, updated_at}` with a name
unique per tenant (flows name them). Settings are one document per tenant (`_id` = tenant). A
cooldown is `{_id: "<tenant>:<key>", tenant, key, sent_at, by, delivered_by, expires_at}`: the
last time a notification for that key went out, or is being sent, and who sent it (`by`: a flow
run's notify step, whose messages and their retries share the claim; `delivered_by` = `by`: one
of them went out), dropped by a TTL index once the cooldown is over. A cooldown judged on the
condition's time (a step's `cooldown.at`) notes each alert in `notes` ({at, by, delivered?,
keep}: `CooldownStore.claim_at`), and the document expires with its last note. A key may hold
both (steps with and without `at` sharing it): `noted_times` reads either.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from gateway.formats.unicode_forms import nfc
from gateway.store.assignments import (
    ASSIGNMENT_RANGES,
    DRIVERS_INDEX,
    DUE_INDEX,
    UNSYNCED_INDEX,
    AssignmentStore,
)
from gateway.store.client import Collection, Database, Doc, find_by_id, scoped, translate_errors
from gateway.store.expiry import Expiry
from gateway.store.flow_runs import FlowRunStore
from gateway.store.flows import FlowStore
from gateway.store.resources import TenantResources

NAME_INDEXES = [IndexModel([("tenant", ASCENDING), ("name", ASCENDING)], unique=True, name="name")]
# A note of a condition's time is kept this long past its cooldown, for a late upload's
# crossing near it (the fleet's fold takes fixes up to 168 h old), and a key keeps its
# latest notes only: two noted alerts are at least the cooldown apart in time.
LATE_NOTES = timedelta(days=7)
MAX_NOTES = 500
# A cooldown claim reads its key and writes on what it read this many times before it takes
# the write that reads the whole collection (`CooldownStore._claim`): each miss is another
# claim or release of the key that came between.
CLAIM_TRIES = 8
COOLDOWN_INDEXES = [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="ttl")]


class NamedResources(TenantResources):
    """Tenant resources with a unique name, found by id or by name."""

    async def by_ref(self, tenant: str, ref: str) -> Doc | None:
        """By id, else by name: as sent, else in NFC (names are stored in NFC; one stored
        before, in another form, whose NFC is another's name is reached as stored)."""
        doc = await find_by_id(self._c, tenant, ref)
        if doc is not None or not isinstance(ref, str):  # an ObjectId is an id, not a name
            return doc
        for name in dict.fromkeys((ref, nfc(ref))):
            with translate_errors():
                if (doc := await self._c.find_one(scoped(tenant, {"name": name}))) is not None:
                    break
        return doc

    async def by_names(self, tenant: str, names: list[str]) -> list[Doc]:
        with translate_errors():
            return await self._c.find(scoped(tenant, {"name": {"$in": names}})).to_list(None)


class SettingsStore:
    def __init__(self, collection: Collection) -> None:
        self._c = collection

    async def get(self, tenant: str) -> Doc | None:
        with translate_errors():
            return await self._c.find_one(scoped(tenant, {"_id": tenant}))

    async def put(self, tenant: str, fields: Mapping[str, Any]) -> Doc:
        """The tenant's settings after `fields` are written (made if there are none). An
        upsert then a read by `_id`, each a point lookup: a `find_one_and_update` SecantusDB
        writes with `{_id, $and: [filter]}`, matched against every tenant's settings. The
        read may show a later write too, as a read just after the one call would."""
        query = scoped(tenant, {"_id": tenant})
        with translate_errors():
            await self._c.update_one(query, {"$set": dict(fields), "$inc": {"rev": 1}}, upsert=True)
            doc: Doc | None = await self._c.find_one(query)
        assert doc is not None  # written just before; settings are never deleted
        return doc


class CooldownStore:
    def __init__(self, collection: Collection) -> None:
        self._c = collection

    async def claim(
        self,
        tenant: str,
        key: str,
        now: datetime,
        quiet_until: datetime,
        keep_until: datetime,
        *,
        by: str | None = None,
        delivered: bool = False,
    ) -> datetime | None:
        """Note a send for `key` unless one was noted after `quiet_until` by someone other
        than `by`; returns None when this call may send, else when the earlier send happened.
        Atomic across processes: the loser of two concurrent claims sees the winner's time.
        `delivered` notes that the send went out (`release` then leaves the note alone)."""
        doc_id = f"{tenant}:{key}"
        # A condition's time noted under the key (a step with `at`) counts as a send then.
        noted = {"at": {"$gt": quiet_until}, "by": {"$ne": by}}
        unnoted = {"notes": {"$not": {"$elemMatch": noted}}}
        sent = {"key": key, "sent_at": now, "by": by} | ({"delivered_by": by} if delivered else {})
        update = {"$set": sent, "$max": {"expires_at": keep_until}}  # notes may be kept longer
        passes: list[Doc] = [{"sent_at": {"$exists": False}}, {"sent_at": {"$lte": quiet_until}}]
        if by is not None:
            passes.append({"by": by})  # our own earlier claim (another message, a retry)
        won, found = await self._claim(
            tenant,
            doc_id,
            lambda doc: free_by(doc, by, after=quiet_until),
            unnoted,
            update,
            {"$or": passes},
        )
        return None if won else last_noted(found, by)

    async def claim_at(
        self,
        tenant: str,
        key: str,
        at: datetime,
        wait: timedelta,
        now: datetime,
        *,
        by: str,
        delivered: bool = False,
    ) -> datetime | None:
        """Note an alert for the condition of `key` at `at` (its time, not the send's) unless
        another one (not `by`'s) is noted less than `wait` from it, before or after; returns
        None when this call may send, else that other alert's time. The key's notes are one
        document (`notes`: {at, by, delivered?, keep}), so the test and the note are one
        atomic write: of two concurrent claims within `wait` of each other, one wins. A note
        is kept for `wait` after the later of its time and its send, and `LATE_NOTES` more (a
        late upload's crossing); the latest `MAX_NOTES` are kept. `by`'s own earlier note is
        replaced, delivered if it was: a message of `by` that went out keeps the alert's note
        whatever its siblings do (`release_at`). A note of the send time
        (`sent_at`, a step without `at` on this key) counts as a note of its time."""
        doc_id = f"{tenant}:{key}"
        lo, hi = at - wait, at + wait
        keep = max(at, now) + wait + LATE_NOTES
        others = {"at": {"$gt": lo, "$lt": hi}, "by": {"$ne": by}}
        unnoted = {"notes": {"$not": {"$elemMatch": others}}}
        passes = [
            {"sent_at": {"$exists": False}},
            {"sent_at": {"$lte": lo}},
            {"sent_at": {"$gte": hi}},
            {"by": by},
        ]
        notes = {"$ifNull": ["$notes", []]}
        own = {"$eq": ["$$this.by", {"$literal": by}]}
        # `by`'s earlier note is replaced, but a message of it that went out keeps the mark:
        # a sibling message (a driver's second phone) failing after it gives nothing back.
        went_out = {"$and": [own, {"$eq": ["$$this.delivered", True]}]}
        was_delivered = {"$gt": [{"$size": {"$filter": {"input": notes, "cond": went_out}}}, 0]}
        note = {
            "at": at,
            "by": {"$literal": by},
            "keep": keep,
            "delivered": True if delivered else was_delivered,
        }
        kept = {
            "$filter": {
                "input": notes,
                "cond": {"$and": [{"$gt": ["$$this.keep", now]}, {"$not": [own]}]},
            }
        }
        update = [
            {
                "$set": {
                    "tenant": {"$literal": tenant},
                    "key": {"$literal": key},
                    "notes": {"$slice": [{"$concatArrays": [kept, [note]]}, -MAX_NOTES]},
                    "expires_at": {"$max": ["$expires_at", keep]},
                }
            }
        ]
        won, found = await self._claim(
            tenant,
            doc_id,
            lambda doc: free_by(doc, by, after=lo, before=hi),
            unnoted,
            update,
            {"$or": passes},
        )
        return None if won else noted_near(found, at, wait, by)

    async def _claim(
        self,
        tenant: str,
        doc_id: str,
        judge: Callable[[Doc | None], Doc | None],
        unnoted: Doc,
        update: Doc | list[Doc],
        passes: Doc,
    ) -> tuple[bool, Doc | None]:
        """A claim's test and note as one atomic write, reading one document: the key's is
        read, judged here (`judge`, as `free_by`) and written on the condition it passed by
        and `unnoted` (no other claimant's note in the way), which the write checks again, a
        filter led by `_id`, where an `$or` in it would read the whole collection on the
        embedded database (docs/operations.md). A key not noted yet is inserted (an upsert).
        A write that misses, or an insert that finds the key taken, means another claim or
        release came between: the key is read again, and after `CLAIM_TRIES` the one write
        `{_id, **passes, **unnoted}` takes it. Returns whether this claim wrote, and else the
        document that held it (None: given back since)."""
        with translate_errors():
            for _ in range(CLAIM_TRIES):
                found = await self._c.find_one(scoped(tenant, {"_id": doc_id}))
                passed = judge(found)
                if passed is None:
                    return False, found
                guarded = scoped(tenant, {"_id": doc_id, **passed, **unnoted})
                try:
                    written = await self._c.update_one(guarded, update, upsert=found is None)
                except DuplicateKeyError:
                    continue  # another claim inserted it: judge theirs
                if written.matched_count or written.upserted_id is not None:
                    return True, None
            try:
                await self._c.find_one_and_update(
                    scoped(tenant, {"_id": doc_id, **passes, **unnoted}), update, upsert=True
                )
                return True, None
            except DuplicateKeyError:
                pass  # it holds another claim: the filter missed and the insert failed
            return False, await self._c.find_one(scoped(tenant, {"_id": doc_id}))

    async def release_at(self, tenant: str, key: str, *, by: str) -> None:
        """Drop `by`'s note of a condition's time unless one of its messages went out."""
        with translate_errors():
            await self._c.update_one(
                scoped(tenant, {"_id": f"{tenant}:{key}"}),
                {"$pull": {"notes": {"by": by, "delivered": {"$ne": True}}}},
            )

    async def release(self, tenant: str, key: str, *, by: str) -> None:
        """Drop `by`'s note for `key` unless one of its messages went out: a failed send does
        not start the cooldown."""
        mine = {"_id": f"{tenant}:{key}", "by": by, "delivered_by": {"$ne": by}}
        with translate_errors():
            await self._c.delete_one(scoped(tenant, {**mine, "notes.0": {"$exists": False}}))
            # A key that notes conditions' times too (a step with `at`) keeps those notes.
            await self._c.update_one(
                scoped(tenant, mine), {"$unset": {"sent_at": "", "by": "", "delivered_by": ""}}
            )

    async def holder(self, tenant: str, key: str) -> Doc | None:
        """`key`'s document: its last noted send ({sent_at, by}), its notes of conditions'
        times (`notes`), or both; None when nothing is noted. Read it with `noted_times`."""
        with translate_errors():
            return await self._c.find_one(scoped(tenant, {"_id": f"{tenant}:{key}"}))

    async def last_sent(self, tenant: str, key: str) -> datetime | None:
        """The latest alert noted for `key` (`last_noted`), or None."""
        return last_noted(await self.holder(tenant, key))


def noted_times(doc: Doc | None, by: str | None = None) -> list[datetime]:
    """The times of the alerts a key's document (as `CooldownStore.holder` reads it) notes,
    but `by`'s: the last send's (`sent_at`, a step without `at`) and each condition's
    (`notes`, a step with `at`). Every reader of a key's notes reads them here, whichever
    kind of step noted them."""
    if doc is None:
        return []
    times = [n["at"] for n in doc.get("notes") or () if n.get("by") != by]
    if doc.get("sent_at") is not None and (by is None or doc.get("by") != by):
        times.append(doc["sent_at"])
    return times


def last_noted(doc: Doc | None, by: str | None = None) -> datetime | None:
    """The latest of `noted_times`: for a judge on the send time, a condition's time noted
    under the key counts as an alert sent then."""
    return max(noted_times(doc, by), default=None)


def free_by(
    doc: Doc | None, by: str | None, *, after: datetime, before: datetime | None = None
) -> Doc | None:
    """Whether a claim by `by` passes a key's document (None: not noted yet), as the database
    would match it: unless another claimant noted a condition's time after `after` (and
    before `before`), the filter of the condition it passes by: no send noted, the last one
    at or before `after` (or at or after `before`), or `by`'s own; else None. A send-time
    claim (`CooldownStore.claim`) gives `after` (its `quiet_until`), a claim of a condition's
    time (`claim_at`) both. Compared at the database's precision (milliseconds), and a time
    of another type than a date's (a null `sent_at`) passes no comparison."""
    if doc is None:
        return {"sent_at": {"$exists": False}}
    low, high = _millis(after), None if before is None else _millis(before)
    for note in doc.get("notes") or ():
        at = note.get("at") if isinstance(note, Mapping) else None
        if isinstance(at, datetime) and low < at and (high is None or at < high):
            if note.get("by") != by:
                return None
    if "sent_at" not in doc:
        return {"sent_at": {"$exists": False}}
    sent_at = doc["sent_at"]
    if isinstance(sent_at, datetime) and sent_at <= low:
        return {"sent_at": {"$lte": after}}
    if isinstance(sent_at, datetime) and high is not None and sent_at >= high:
        return {"sent_at": {"$gte": before}}
    if by is not None and doc.get("by") == by:
        return {"by": by}
    return None


def _millis(moment: datetime) -> datetime:
    """`moment` as BSON stores it, and a filter compares with it: to the millisecond below."""
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def noted_near(doc: Doc | None, at: datetime, wait: timedelta, by: str) -> datetime | None:
    """Of `noted_times`, the one nearest `at` less than `wait` from it (a note of the send
    time, `sent_at`, as a note of that time), or None."""
    near = [t for t in noted_times(doc, by) if abs(t - at) < wait]
    return min(near, key=lambda t: abs(t - at), default=None)


class NotifyStores:
    def __init__(self, db: Database, expiry: Expiry) -> None:
        self._expiry = expiry
        self.assignments = AssignmentStore(db["driver_assignments"])
        self.channels = NamedResources(db["channels"])
        self.templates = NamedResources(db["templates"])
        self.settings = SettingsStore(db["notify_settings"])
        self.cooldowns = CooldownStore(db["notify_cooldowns"])
        self.flows = FlowStore(db)
        self.runs = FlowRunStore(db["flow_runs"])
        self._db = db

    async def ensure_indexes(
        self, *, scans_id_ranges: bool = False, present: Container[str] | None = None
    ) -> None:
        """Assignments and an event's flow runs are read by ranges of `_id`, which MongoDB
        serves from its primary index and SecantusDB by scanning the collection, so there
        they get an index (tenant, `_id`) that serves them (a driver change is a rare write;
        a run is written a few times, once a step). A driver's changes are found by CPF
        (`drivers`: a driver created, renamed or deleted, which the history follows), and the
        changes a vehicle could not follow yet apart (`unsynced`). `present`: the collections
        at start (`indexes_by_name`)."""
        assignment_indexes = [DUE_INDEX, DRIVERS_INDEX, UNSYNCED_INDEX]
        if scans_id_ranges:
            assignment_indexes.append(ASSIGNMENT_RANGES)
        with translate_errors():
            await self._db["driver_assignments"].create_indexes(assignment_indexes)
            await self._db["channels"].create_indexes(NAME_INDEXES)
            await self._db["templates"].create_indexes(NAME_INDEXES)
        self.assignments.windowed = scans_id_ranges
        await self._expiry.create_indexes(self._db["notify_cooldowns"], COOLDOWN_INDEXES, present)
        await self.flows.ensure_indexes()
        await self.runs.ensure_indexes(scans_id_ranges=scans_id_ranges)
