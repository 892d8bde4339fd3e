"""The `rejected` collection: trigger payloads refused with a 422, kept for replay.

A record is `{_id, tenant, trigger_id, received_at, reason: "schema"|"mapping"|"entity",
detail, problems, scope: "body"|"item", index, schema_applies, payload (JSON text),
payload_sha256, replayable, status: "pending"|"replayed", attempts, replayed_at, result}`.
The payload is kept as JSON text: exact, and free of BSON's limits on keys and integers.
Each trigger keeps its newest `MAX_PER_TRIGGER` records.

A payload refused again while an earlier copy is pending or being replayed (a partner
retrying a 422, a feed polled without a cursor) supersedes that copy: the new record counts
on from the newest copy (`repeats`, `first_received_at`), and once it is stored the older
pending copies of the trigger (same scope, same `payload_sha256`) go. So one payload sent
every minute does not push every other record past the bound, and a replay of all (oldest
first) still writes the payloads in the order they were last sent. Nothing is lost on a race
or a crash: the new record is written before any copy goes, and a copy goes only while
pending (claimed for a replay, it stays); repeats at the same moment may leave two copies
(each counting the copies both found, so their counts together may pass what was sent) or
count fewer refusals; no record counts more than were sent, and the next repeat, counting on
from the newest, leaves one. Only payloads whose mapping does not read when they
came (`RejectedKeeper.record` `repeatable`) carry a hash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.errors import BulkWriteError

from gateway.clock import Floors, utcnow
from gateway.store.client import (
    ID_BATCH,
    Collection,
    Doc,
    bulk_failure,
    cursor_id,
    find_by_id,
    id_above,
    new_id,
    scoped,
    translate_errors,
)
from gateway.store.newest import newest_first as newest_first_in

MAX_PER_TRIGGER = 1000
INDEXES = [
    IndexModel(
        [("tenant", ASCENDING), ("trigger_id", ASCENDING), ("_id", DESCENDING)], name="by_trigger"
    ),
    IndexModel([("tenant", ASCENDING), ("_id", DESCENDING)], name="by_tenant"),
    # A payload's pending copies (`_count_copies`, `_drop_older_copies`): read through it as
    # the first `$match` of an aggregation, its fields alone (with `status` and `scope` beside
    # them SecantusDB read every rejected payload of the tenant instead).
    IndexModel(
        [("tenant", ASCENDING), ("trigger_id", ASCENDING), ("payload_sha256", ASCENDING)],
        name="copies",
    ),
]
# The pending ones (the list by status, the dashboard's count): SecantusDB scans every
# tenant's records for a query one predicate of which (`status`) no index has.
STATUS_INDEX = IndexModel(
    [("tenant", ASCENDING), ("status", ASCENDING), ("_id", DESCENDING)], name="by_status"
)


REPLAY_CLAIM_SECONDS = 300


class RejectedStore:
    def __init__(self, collection: Collection) -> None:
        self._c = collection
        # The filters an index covers with the tenant and `_id` (a list reads them in windows).
        self._windowed: list[set[str]] = [set(), {"trigger_id"}]
        self._picks = False  # the rest of a filter applied here to an index's windows (SecantusDB)
        self._floors: Floors[tuple[str, str], ObjectId] = Floors()  # per trigger (`_new_ids`)

    async def ensure_indexes(self, *, scans_id_ranges: bool = False) -> None:
        with translate_errors():
            await self._c.create_indexes([*INDEXES, STATUS_INDEX] if scans_id_ranges else INDEXES)
        if scans_id_ranges:
            self._windowed = [set(), {"trigger_id"}, {"status"}]
            self._picks = True

    async def add_many(self, tenant: str, trigger_id: str, records: Sequence[Doc]) -> None:
        """Keep rejected payloads of one trigger (one insert; older pending copies of them
        superseded; one trim to the newest MAX_PER_TRIGGER). A record the database refuses
        is an InvalidPayload (the others of the batch are written); a write concern that
        failed, StoreUnavailable."""
        with translate_errors():
            docs = [
                scoped(tenant, {**record, "_id": _id})
                for record, _id in zip(
                    records, await self._new_ids(tenant, trigger_id, len(records)), strict=True
                )
            ]
            await self._count_copies(tenant, trigger_id, docs)
            stored: Sequence[Doc] = ()  # known written: only their copies may go
            try:
                await self._c.insert_many(docs, ordered=False)
                stored = docs
            except BulkWriteError as exc:
                if not exc.details.get("writeConcernErrors"):
                    failed = {error["index"] for error in exc.details.get("writeErrors", [])}
                    stored = [doc for i, doc in enumerate(docs) if i not in failed]
                bulk_failure(exc)
            finally:  # the records written count against the bound too
                await self._drop_older_copies(tenant, trigger_id, stored)
                await self._trim(tenant, trigger_id)

    async def _new_ids(self, tenant: str, trigger_id: str, count: int) -> list[ObjectId]:
        """Ids for `count` new records of the trigger, each above the one it gave before
        (`clock.Floors`): the trim keeps the highest ids, and after a step back of the
        gateway's time (a clock that ran fast, set right) ids on it sorted below those given
        on the fast clock, so a trigger at its bound dropped each new record at once and
        kept the older ones. The floor is read (the trigger's newest id ahead of the time,
        through `by_trigger`: none unless the time went back) at the trigger's first record
        in this process and after its time went back; no read otherwise."""
        key = (tenant, trigger_id)
        if not self._floors.known(key):
            ahead = ObjectId.from_datetime(utcnow())
            query = scoped(tenant, {"trigger_id": trigger_id, "_id": {"$gte": ahead}})
            found = self._c.find(query, {"_id": 1}).sort("_id", DESCENDING).limit(1)
            newest = await found.to_list(1)
            self._floors.note(key, newest[0]["_id"] if newest else None)
        floor, ids = self._floors.get(key), []
        for _ in range(count):
            floor = id_above(new_id(), floor)
            ids.append(floor)
        self._floors.note(key, floor)
        return ids

    async def _drop_older_copies(self, tenant: str, trigger_id: str, stored: Sequence[Doc]) -> None:
        """The pending copies of each payload of `stored` older than the newest of them."""
        newest: dict[tuple[str, str], ObjectId] = {}
        for doc in stored:
            if "payload_sha256" in doc:
                newest[doc["scope"], doc["payload_sha256"]] = doc["_id"]  # (ids ascend)
        for (scope, sha), newest_id in newest.items():
            copies = {"tenant": tenant, "trigger_id": trigger_id, "payload_sha256": sha}
            older = {"scope": scope, "status": "pending", "_id": {"$lt": newest_id}}
            pipeline: list[Doc] = [{"$match": copies}, {"$match": older}, {"$project": {"_id": 1}}]
            ids = [doc["_id"] async for doc in await self._c.aggregate(pipeline)]
            for start in range(0, len(ids), ID_BATCH):
                batch = {"_id": {"$in": ids[start : start + ID_BATCH]}, "status": "pending"}
                await self._c.delete_many(scoped(tenant, batch))

    async def _count_copies(self, tenant: str, trigger_id: str, docs: Sequence[Doc]) -> None:
        """Each of `docs` with a payload hash counts on from its payload's newest copy not
        replayed (`repeats`, `first_received_at`, replays tried), the batch's own included."""
        hashes = list({doc["payload_sha256"] for doc in docs if "payload_sha256" in doc})
        if not hashes:
            return
        # A copy being replayed counts too: should the replay fail, it is pending beside the
        # new one again, whose count already holds it.
        waiting = {"$in": ["pending", "replaying"]}
        copies = {"tenant": tenant, "trigger_id": trigger_id, "payload_sha256": {"$in": hashes}}
        fields = ("scope", "payload_sha256", "repeats", "received_at", "first_received_at")
        pipeline: list[Doc] = [
            {"$match": copies},  # what `copies` holds: the filter it serves whole
            {"$match": {"status": waiting}},
            {"$sort": {"_id": ASCENDING}},
            {"$project": dict.fromkeys((*fields, "attempts"), 1)},
        ]
        found = await self._c.aggregate(pipeline)
        newest: dict[tuple[str, str], Doc] = {}
        tried: dict[tuple[str, str], int] = {}  # replays tried, by any copy (one replaying)
        for copy in await found.to_list(None):
            key = (copy["scope"], copy["payload_sha256"])
            newest[key] = copy
            tried[key] = max(tried.get(key, 0), copy.get("attempts", 0))
        for doc in docs:
            if "payload_sha256" not in doc:
                continue
            key = (doc["scope"], doc["payload_sha256"])
            if (before := newest.get(key)) is not None:
                doc["repeats"] = before.get("repeats", 0) + 1
                doc["first_received_at"] = before.get("first_received_at") or before["received_at"]
                doc["attempts"] = tried.get(key, 0)
            newest[key] = doc

    async def _trim(self, tenant: str, trigger_id: str) -> None:
        query = scoped(tenant, {"trigger_id": trigger_id})
        cursor = self._c.find(query, {"_id": 1}).sort("_id", DESCENDING).skip(MAX_PER_TRIGGER)
        oldest_kept_past = await cursor.limit(1).to_list(1)
        if oldest_kept_past:
            await self._c.delete_many({**query, "_id": {"$lte": oldest_kept_past[0]["_id"]}})

    async def get(self, tenant: str, record_id: str) -> Doc | None:
        return await find_by_id(self._c, tenant, record_id)

    async def list(
        self,
        tenant: str,
        filters: Mapping[str, Any],
        *,
        cursor: str | None,
        limit: int,
        newest_first: bool = True,
    ) -> list[Doc]:
        """A page after `cursor` (the last id of the previous page) in the given order."""
        query: Doc = dict(filters)
        if newest_first:  # in windows of time (`newest.py`): the latest records' cost
            covered = set(query) in self._windowed
            picked: Doc | None = None
            if not covered and self._picks:
                # SecantusDB, a trigger's records of one status: the trigger's windows
                # through `by_trigger`, the status picked here (both sent, it read every
                # rejected payload of the tenant). The widest covered part is sent.
                sent = max((w for w in self._windowed if w <= set(query)), key=len)
                picked = {k: v for k, v in query.items() if k not in sent}
                query = {k: v for k, v in query.items() if k in sent}
                covered = True
            before = cursor_id(cursor) if cursor is not None else None
            return await newest_first_in(
                self._c, tenant, query, before=before, limit=limit, windowed=covered,
                ids=ObjectId, projection={"payload": 0}, picked=picked,
            )  # fmt: skip
        if cursor is not None:
            query["_id"] = {"$gt": cursor_id(cursor)}
        served = max((w for w in self._windowed if w <= set(query)), key=len)
        if self._picks and set(query) - {"_id"} != served:
            # SecantusDB, the pending replayable ones (a replay of every one): the fields an
            # index holds are the first `$match` (the trigger's records, `by_trigger`, else
            # the tenant's pending ones, `by_status`), the rest the next; sent as one filter,
            # it read every rejected payload of the tenant.
            first = {k: v for k, v in query.items() if k in served or k == "_id"}
            rest = {k: v for k, v in query.items() if k not in first}
            pipeline: list[Doc] = [
                {"$match": scoped(tenant, first)},
                {"$match": rest},
                {"$sort": {"_id": ASCENDING}},
                {"$limit": limit},
                {"$project": {"payload": 0}},
            ]
            with translate_errors():
                return await (await self._c.aggregate(pipeline)).to_list(limit)
        with translate_errors():
            found = self._c.find(scoped(tenant, query), {"payload": 0})
            return await found.sort("_id", ASCENDING).limit(limit).to_list(limit)

    async def claim_replay(self, tenant: str, record_id: str, *, at: datetime) -> bool:
        """Take a pending record for one replay; False when another replay has it (or had
        it: a claim older than REPLAY_CLAIM_SECONDS is from a replay that died)."""
        with translate_errors():
            for claimable in _claimable(at):
                result = await self._c.update_one(
                    scoped(tenant, {"_id": ObjectId(record_id), **claimable}),
                    {"$set": {"status": "replaying", "replaying_at": at}},
                )
                if result.modified_count == 1:
                    return True
        return False

    async def claim_replays(
        self, tenant: str, record_ids: Sequence[str], *, at: datetime
    ) -> Sequence[Doc]:
        """`claim_replay` for many records in one write; the records claimed (payload
        included), oldest first. The others are another replay's, or gone."""
        ids = [ObjectId(record_id) for record_id in record_ids]
        claim = ObjectId()  # this claim's own mark: which records it took
        with translate_errors():
            for claimable in _claimable(at):
                await self._c.update_many(
                    scoped(tenant, {"_id": {"$in": ids}, **claimable}),
                    {"$set": {"status": "replaying", "replaying_at": at, "claim": claim}},
                )
            found = self._c.find(scoped(tenant, {"_id": {"$in": ids}, "claim": claim}))
            return await found.sort("_id", ASCENDING).to_list(None)

    async def release_replays(self, tenant: str, record_ids: Sequence[str]) -> None:
        if not record_ids:
            return
        ids = [ObjectId(record_id) for record_id in record_ids]
        with translate_errors():
            await self._c.update_many(
                scoped(tenant, {"_id": {"$in": ids}, "status": "replaying"}),
                {"$set": {"status": "pending"}, "$unset": {"replaying_at": "", "claim": ""}},
            )

    async def mark_many_replayed(
        self, tenant: str, results: Sequence[tuple[str, Doc]], *, at: datetime
    ) -> None:
        """`mark_replayed` for many records (id, the write's result) in one write."""
        if not results:
            return
        writes = [
            UpdateOne(
                scoped(tenant, {"_id": ObjectId(record_id)}),
                {
                    "$set": {"status": "replayed", "replayed_at": at, "result": result},
                    "$unset": {"replaying_at": "", "claim": ""},
                    "$inc": {"attempts": 1},
                },
            )
            for record_id, result in results
        ]
        try:
            with translate_errors():
                await self._c.bulk_write(writes, ordered=False)
        except BulkWriteError as exc:
            bulk_failure(exc)

    async def release_replay(self, tenant: str, record_id: str) -> None:
        with translate_errors():
            await self._c.update_one(
                scoped(tenant, {"_id": ObjectId(record_id), "status": "replaying"}),
                {"$set": {"status": "pending"}, "$unset": {"replaying_at": ""}},
            )

    async def mark_replayed(
        self, tenant: str, record_id: str, *, at: datetime, result: Doc
    ) -> None:
        with translate_errors():
            await self._c.update_one(
                scoped(tenant, {"_id": ObjectId(record_id)}),
                {
                    "$set": {"status": "replayed", "replayed_at": at, "result": result},
                    "$unset": {"replaying_at": ""},
                    "$inc": {"attempts": 1},
                },
            )

    async def record_failure(
        self,
        tenant: str,
        record_id: str,
        *,
        at: datetime,
        reason: str,
        detail: str,
        problems: Sequence[Doc],
        omitted: int,
    ) -> None:
        with translate_errors():
            await self._c.update_one(
                scoped(tenant, {"_id": ObjectId(record_id)}),
                {
                    "$set": {
                        "status": "pending",
                        "reason": reason,
                        "detail": detail,
                        "problems": list(problems),
                        "problems_omitted": omitted,
                        "last_attempt_at": at,
                    },
                    "$inc": {"attempts": 1},
                },
            )

    async def delete_for_trigger(self, tenant: str, trigger_id: str) -> None:
        with translate_errors():
            await self._c.delete_many(scoped(tenant, {"trigger_id": trigger_id}))


def _claimable(at: datetime) -> list[Doc]:
    """What a replay may claim, one filter each (they match different statuses): a pending
    record, or one a replay claimed more than REPLAY_CLAIM_SECONDS ago (it died). Not one
    `$or` of them: SecantusDB matches a filter with an operator at its top against every
    tenant's records; beside `_id`, first, each is a point lookup."""
    stale = at - timedelta(seconds=REPLAY_CLAIM_SECONDS)
    return [{"status": "pending"}, {"status": "replaying", "replaying_at": {"$lt": stale}}]
