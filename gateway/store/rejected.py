"""The `rejected` collection: trigger payloads refused with a 422, kept for replay.

A record is `{_id, tenant, trigger_id, received_at, reason: "schema"|"mapping"|"entity",
detail, problems, scope: "body"|"item", index, schema_applies, payload (JSON text),
payload_sha256, replayable, status: "pending"|"replayed", attempts, replayed_at, result}`.
The payload is kept as JSON text: exact, and free of BSON's limits on keys and integers.
Each trigger keeps its newest `MAX_PER_TRIGGER` records.

A payload refused again while its record is not replayed yet (a partner retrying a 422, a
feed polled without a cursor) takes that record's place as the newest, counting the
refusals (`repeats`, `first_received_at`; its problems the latest), so one payload sent
every minute does not push every other record past the bound. The database decides which
write is the first: a pending record carries `repeat_key` (tenant, trigger, scope and the
payload's hash), unique; a replayed one no longer does, and the same payload refused after
that is a record of its own. Only payloads whose mapping does not read when they came
(`RejectedKeeper.record` `repeatable`) carry a key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from gateway.store.client import (
    DUPLICATE_KEY,
    Collection,
    Doc,
    bulk_failure,
    cursor_id,
    find_by_id,
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
    # Pending records only (sparse): one per payload refused again before its replay.
    IndexModel([("repeat_key", ASCENDING)], unique=True, sparse=True, name="pending_repeats"),
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

    async def ensure_indexes(self, *, scans_id_ranges: bool = False) -> None:
        with translate_errors():
            await self._c.create_indexes([*INDEXES, STATUS_INDEX] if scans_id_ranges else INDEXES)
        if scans_id_ranges:
            self._windowed = [set(), {"trigger_id"}, {"status"}]

    async def add_many(self, tenant: str, trigger_id: str, records: Sequence[Doc]) -> None:
        """Keep rejected payloads of one trigger (one insert, one trim to the newest
        MAX_PER_TRIGGER); a payload pending already is counted on its record instead. A
        record the database refuses is an InvalidPayload (the others of the batch are
        written); a write concern that failed, StoreUnavailable."""
        docs = [self._doc(tenant, trigger_id, record) for record in records]
        with translate_errors():
            try:
                await self._c.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                for error in errors:
                    if error.get("code") == DUPLICATE_KEY:
                        await self._received_again(docs[error["index"]])
                bulk_failure(exc)
            finally:  # the records written count against the bound too
                await self._trim(tenant, trigger_id)

    @staticmethod
    def _doc(tenant: str, trigger_id: str, record: Doc) -> Doc:
        doc = scoped(tenant, {**record, "_id": ObjectId()})
        if "payload_sha256" in record:
            same = [tenant, trigger_id, record["scope"], record["payload_sha256"]]
            doc["repeat_key"] = hashlib.sha256(json.dumps(same).encode()).hexdigest()
        return doc

    async def _received_again(self, doc: Doc) -> None:
        """`doc` refused again while its record is pending: `doc` takes that record's place as
        the newest (a replay of all runs oldest first, so the same payload refused before and
        after another one replays after it, as the partner sent them last), carrying its
        count (`repeats`) and `first_received_at`. The record goes only once `doc` is stored
        (a crash in between leaves both, losing neither). A record being replayed counts it
        where it is (the replay writes the same); one replayed in between holds the place no
        longer: `doc` is a record of its own."""
        key = scoped(doc["tenant"], {"repeat_key": doc["repeat_key"]})
        taken: list[Doc] = []  # the records whose place `doc` takes
        for _ in range(3):  # (another repeat storing its own first: it is taken in turn)
            old = await self._c.find_one_and_update(
                {**key, "status": "pending"}, {"$unset": {"repeat_key": ""}}
            )
            if old is not None:
                taken.append(old)
            elif not taken:
                replaying = await self._c.update_one(key, {"$inc": {"repeats": 1}})
                if replaying.matched_count:
                    return
            newest = {
                **doc,
                "_id": ObjectId(),
                "repeats": sum(1 + t.get("repeats", 0) for t in taken),
                "first_received_at": min(
                    [t.get("first_received_at") or t["received_at"] for t in taken],
                    default=doc["received_at"],
                ),
                "attempts": max([t.get("attempts", 0) for t in taken], default=0),
            }
            try:
                await self._c.insert_one(newest)
            except DuplicateKeyError:
                continue
            if taken:
                await self._c.delete_many({"_id": {"$in": [t["_id"] for t in taken]}})
            return

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
            before = cursor_id(cursor) if cursor is not None else None
            return await newest_first_in(
                self._c, tenant, query, before=before, limit=limit, windowed=covered,
                ids=ObjectId, projection={"payload": 0},
            )  # fmt: skip
        if cursor is not None:
            query["_id"] = {"$gt": cursor_id(cursor)}
        with translate_errors():
            found = self._c.find(scoped(tenant, query), {"payload": 0})
            return await found.sort("_id", ASCENDING).limit(limit).to_list(limit)

    async def claim_replay(self, tenant: str, record_id: str, *, at: datetime) -> bool:
        """Take a pending record for one replay; False when another replay has it (or had
        it: a claim older than REPLAY_CLAIM_SECONDS is from a replay that died)."""
        stale = at - timedelta(seconds=REPLAY_CLAIM_SECONDS)
        with translate_errors():
            result = await self._c.update_one(
                scoped(
                    tenant,
                    {
                        "_id": ObjectId(record_id),
                        "$or": [
                            {"status": "pending"},
                            {"status": "replaying", "replaying_at": {"$lt": stale}},
                        ],
                    },
                ),
                {"$set": {"status": "replaying", "replaying_at": at}},
            )
        return result.modified_count == 1

    async def claim_replays(
        self, tenant: str, record_ids: Sequence[str], *, at: datetime
    ) -> Sequence[Doc]:
        """`claim_replay` for many records in one write; the records claimed (payload
        included), oldest first. The others are another replay's, or gone."""
        stale = at - timedelta(seconds=REPLAY_CLAIM_SECONDS)
        ids = [ObjectId(record_id) for record_id in record_ids]
        claim = ObjectId()  # this claim's own mark: which records it took
        with translate_errors():
            await self._c.update_many(
                scoped(
                    tenant,
                    {
                        "_id": {"$in": ids},
                        "$or": [
                            {"status": "pending"},
                            {"status": "replaying", "replaying_at": {"$lt": stale}},
                        ],
                    },
                ),
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
                    "$unset": {"replaying_at": "", "claim": "", "repeat_key": ""},
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
                    "$unset": {"replaying_at": "", "repeat_key": ""},
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
                        "last_attempt_at": at,
                    },
                    "$inc": {"attempts": 1},
                },
            )

    async def delete_for_trigger(self, tenant: str, trigger_id: str) -> None:
        with translate_errors():
            await self._c.delete_many(scoped(tenant, {"trigger_id": trigger_id}))
