"""The `rejected` collection: trigger payloads refused with a 422, kept for replay; and
`rejected_hours`, how many refusals each hour saw (the dashboard's bar).

A record is `{_id, tenant, trigger_id, received_at, reason: "schema"|"mapping"|"entity",
detail, problems, scope: "body"|"item", index, schema_applies, payload (JSON text),
replayable, status: "pending"|"replaying"|"replayed", attempts, replayed_at, result, seen,
last_seen_at, payload_key}`. The payload is kept as JSON text: exact, and free of BSON's
limits on keys and integers.

A record with a `payload_key` (a hash of the payload, its scope and schema check) is the one
pending record of that payload: the same payload refused again adds to its `seen` and moves
its `last_seen_at` (and takes the newest refusal's reason and problems) rather than adding a
record. The database holds that: `by_pending` is unique over the pending records' keys, so
two identical refusals at once make one record (the loser of the race counts on the
winner's), and a record set back to pending (a replay that failed or gave up) while a copy
made another is merged with it (`_repend`). A record being replayed is out of the index: a
copy arriving meanwhile is a new record.

Each trigger keeps the `MAX_PER_TRIGGER` records refused last (by `last_seen_at`): a payload
refused on every run of a feed keeps its record. Lists go by `_id`, the first refusal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

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
    # One pending record per payload key; records without a key, or not pending, are not in it.
    IndexModel(
        [("tenant", ASCENDING), ("trigger_id", ASCENDING), ("payload_key", ASCENDING)],
        name="by_pending",
        unique=True,
        partialFilterExpression={"payload_key": {"$exists": True}, "status": "pending"},
    ),
    # The trim: a trigger's records by their latest refusal.
    IndexModel(
        [("tenant", ASCENDING), ("trigger_id", ASCENDING), ("last_seen_at", DESCENDING)],
        name="by_latest",
    ),
]
HOUR_INDEXES = [IndexModel([("tenant", ASCENDING), ("hour", ASCENDING)], name="by_hour")]
# What a copy refreshes on the pending record it is counted on.
_LATEST: Final = ("last_seen_at", "reason", "detail", "problems", "index")
# The pending ones (the list by status, the dashboard's count): SecantusDB scans every
# tenant's records for a query one predicate of which (`status`) no index has.
STATUS_INDEX = IndexModel(
    [("tenant", ASCENDING), ("status", ASCENDING), ("_id", DESCENDING)], name="by_status"
)
_RACES: Final = 3
"""How often a write that lost a race for `by_pending` is tried again (each loss means the
other record changed state in between: a rare thing twice)."""


REPLAY_CLAIM_SECONDS = 300


class RejectedStore:
    def __init__(self, collection: Collection, hours: Collection) -> None:
        self._c = collection
        self._hours = hours
        # The filters an index covers with the tenant and `_id` (a list reads them in windows).
        self._windowed: list[set[str]] = [set(), {"trigger_id"}]

    async def ensure_indexes(self, *, scans_id_ranges: bool = False) -> None:
        with translate_errors():
            await self._c.create_indexes([*INDEXES, STATUS_INDEX] if scans_id_ranges else INDEXES)
            await self._hours.create_indexes(HOUR_INDEXES)
        if scans_id_ranges:
            self._windowed = [set(), {"trigger_id"}, {"status"}]

    async def add_many(self, tenant: str, trigger_id: str, records: Sequence[Doc]) -> None:
        """Keep rejected payloads of one trigger (one insert, one write counting copies of
        pending records, one trim to MAX_PER_TRIGGER). A record the database refuses is an
        InvalidPayload (the others of the batch are written); a write concern that failed,
        StoreUnavailable."""
        fresh: list[Doc] = []
        copies: dict[str, tuple[Doc, int]] = {}
        for record in records:
            key = record.get("payload_key")
            if key is None:
                fresh.append(scoped(tenant, {**record, "_id": ObjectId()}))
                continue
            first, count = copies.get(key, (record, 0))
            copies[key] = ({**first, **{k: record[k] for k in _LATEST}}, count + 1)
        with translate_errors():
            try:
                if fresh:
                    await self._c.insert_many(fresh, ordered=False)
                writes = [self._counted(tenant, trigger_id, *copy) for copy in copies.values()]
                for _ in range(_RACES):  # a copy still losing after these is not counted
                    if not writes:
                        break
                    writes = await self._lost_races(writes)
            except BulkWriteError as exc:
                bulk_failure(exc)
            await self._trim(tenant, trigger_id)

    async def _lost_races(self, writes: list[UpdateOne]) -> list[UpdateOne]:
        """Write the upserts; those that lost a race for `by_pending` (another refusal of
        the payload inserted its record at once) are to be written again: they match it."""
        try:
            await self._c.bulk_write(writes, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if exc.details.get("writeConcernErrors") or any(
                e.get("code") != DUPLICATE_KEY for e in errors
            ):
                raise
            return [writes[e["index"]] for e in errors]
        return []

    @staticmethod
    def _counted(tenant: str, trigger_id: str, record: Doc, count: int) -> UpdateOne:
        """`record` (seen `count` times) counted on the pending record of the same payload,
        or inserted as that record."""
        query = scoped(
            tenant,
            {"trigger_id": trigger_id, "payload_key": record["payload_key"], "status": "pending"},
        )
        first = {
            k: v for k, v in record.items() if k not in query and k not in _LATEST and k != "seen"
        }
        return UpdateOne(
            query,
            {
                "$inc": {"seen": count},
                "$set": {k: record[k] for k in _LATEST},
                "$setOnInsert": {**first, "_id": ObjectId()},
            },
            upsert=True,
        )

    async def count_refusals(self, tenant: str, at: datetime, count: int) -> None:
        """`count` refusals in the hour of `at` (the dashboard's bar: every refusal, a copy
        counted on a pending record too)."""
        hour = at.replace(minute=0, second=0, microsecond=0)
        with translate_errors():
            await self._hours.update_one(
                scoped(tenant, {"hour": hour}), {"$inc": {"refused": count}}, upsert=True
            )

    async def refusals_since(self, tenant: str, since: datetime) -> dict[datetime, int]:
        """Refusals per hour from the hour of `since` on."""
        with translate_errors():
            found = self._hours.find(
                scoped(tenant, {"hour": {"$gte": since}}), {"hour": 1, "refused": 1}
            )
            docs = await found.to_list(None)
        return {doc["hour"]: doc["refused"] for doc in docs}

    async def _trim(self, tenant: str, trigger_id: str) -> None:
        """The trigger's records past MAX_PER_TRIGGER by latest refusal, deleted (a record
        kept before `last_seen_at` existed, without one, counts as older than any with one)."""
        query = scoped(tenant, {"trigger_id": trigger_id})
        order = [("last_seen_at", DESCENDING), ("_id", DESCENDING)]
        found = self._c.find(query, {"_id": 1, "last_seen_at": 1}).sort(order)
        past = await found.skip(MAX_PER_TRIGGER).limit(1).to_list(1)
        if not past:
            return
        edge = past[0].get("last_seen_at")
        older: list[Doc] = [{"last_seen_at": {"$exists": False}}]
        if edge is not None:
            older += [
                {"last_seen_at": {"$lt": edge}},
                {"last_seen_at": edge, "_id": {"$lte": past[0]["_id"]}},
            ]
        else:
            older = [{"last_seen_at": {"$exists": False}, "_id": {"$lte": past[0]["_id"]}}]
        await self._c.delete_many({**query, "$or": older})

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
        for record_id in record_ids:  # one by one: each may meet a copy to merge
            await self._repend(
                tenant,
                ObjectId(record_id),
                {"$set": {"status": "pending"}, "$unset": {"replaying_at": "", "claim": ""}},
                replaying=True,
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
        await self._repend(
            tenant,
            ObjectId(record_id),
            {"$set": {"status": "pending"}, "$unset": {"replaying_at": ""}},
            replaying=True,
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
    ) -> None:
        await self._repend(
            tenant,
            ObjectId(record_id),
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

    async def _repend(
        self, tenant: str, oid: ObjectId, change: Doc, *, replaying: bool = False
    ) -> None:
        """Set a record back to pending (`change`; only from `replaying` when so). A copy of
        its payload refused meanwhile made another pending record, which `by_pending` does
        not let beside it: that one is merged into this (its refusals counted, its latest
        time kept) and deleted, so the record being replayed keeps its id."""
        query = scoped(tenant, {"_id": oid, **({"status": "replaying"} if replaying else {})})
        seen, latest = 0, None
        with translate_errors():
            for attempt in range(_RACES + 1):
                merged = {**change, "$inc": {**change.get("$inc", {}), "seen": seen}}
                if latest is not None:
                    merged["$max"] = {"last_seen_at": latest}
                try:
                    await self._c.update_one(query, merged)
                    return
                except DuplicateKeyError:
                    if attempt == _RACES:
                        raise
                mine = await self._c.find_one(query, {"trigger_id": 1, "payload_key": 1})
                if mine is None:
                    return  # gone (trimmed, or its trigger deleted), or no longer ours
                copy = await self._c.find_one_and_delete(
                    scoped(
                        tenant,
                        {
                            "trigger_id": mine["trigger_id"],
                            "payload_key": mine.get("payload_key"),
                            "status": "pending",
                            "_id": {"$ne": oid},
                        },
                    ),
                    projection={"seen": 1, "last_seen_at": 1},
                )
                if copy is not None:
                    seen += copy.get("seen", 1)
                    if copy.get("last_seen_at") is not None:
                        latest = max(latest or copy["last_seen_at"], copy["last_seen_at"])

    async def delete_for_trigger(self, tenant: str, trigger_id: str) -> None:
        with translate_errors():
            await self._c.delete_many(scoped(tenant, {"trigger_id": trigger_id}))
