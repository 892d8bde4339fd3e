"""The `positions` and `fleet` collections: a vehicle's track, and the fold's queues and state.

`positions` is insert-only (SPEC §6 "append, then fold"): one document per fix,
`{_id, tenant, vehicle, t, at, lat, lon, speed_kmh?, heading?, accuracy_m?, odometer_km?,
ignition?, attributes?, source, rejected?}`. `vehicle` is the vehicle entity's id (as text),
`t` the device time, `at` when the gateway received it. A fix is identified by (tenant,
vehicle, t): the unique index makes a resent fix a duplicate, stored once. Retention is a TTL
index on `at` (default 90 days, `set_retention`). `rejected` (the quality gate's reason) is
written later by the fold, the only update a position ever gets.

`fleet` holds one document per vehicle, `{_id: "<tenant>:<vehicle>", tenant, vehicle, shard,
pending, readings, services, dirty, since, version, state, state_version}`: the fold's input
queues (fixes appended and not yet folded, odometer readings, recorded services) and its
state, so that the fold consumes input and writes state in one single-document update
(`commit_fold`). Every push increments `version`; every fold write increments both `version`
and `state_version`. `since` is when the oldest waiting input was pushed (the fold takes the
oldest first, and its lag is measured from it).

Appends are group commits: the fixes of concurrent requests leave together in one journaled
`insert_many` per round (`InsertRounds`), and their queue pushes in one client-level
`bulkWrite` of the process's group commit (`group_commit.py`, sealed before anyone is
answered).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Collection as Collection_
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateMany
from pymongo.errors import BulkWriteError, OperationFailure

from gateway.errors import StoreUnavailable
from gateway.store.client import Collection, Doc, new_id, scoped, translate_errors
from gateway.store.group_commit import GroupCommit

SHARDS: Final = 16
"""The fold's shards (gateway/shares.py leases them): a vehicle's fleet document's `shard`."""
DEFAULT_RETENTION_DAYS: Final = 90
_RETENTION_INDEX: Final = "retention"
_COMMIT_ATTEMPTS: Final = 3
_DUPLICATE_KEY: Final = 11000

POSITION_INDEXES = [
    # A fix is (tenant, vehicle, device time): a resent one is a duplicate. The same index
    # serves the track reads and the fold's neighbours.
    IndexModel(
        [("tenant", ASCENDING), ("vehicle", ASCENDING), ("t", ASCENDING)],
        unique=True,
        name="fix",
    ),
]
FLEET_INDEXES = [
    # The fold's "what is waiting" query, by shard.
    IndexModel([("shard", ASCENDING), ("dirty", ASCENDING)], name="waiting"),
]


def fleet_id(tenant: str, vehicle: str) -> str:
    return f"{tenant}:{vehicle}"


def shard_of(fleet_doc_id: str) -> int:
    return zlib.crc32(fleet_doc_id.encode()) % SHARDS


def retention_index(days: int) -> IndexModel:
    return IndexModel(
        [("at", ASCENDING)], name=_RETENTION_INDEX, expireAfterSeconds=int(days) * 86_400
    )


@dataclass(slots=True)
class _Waiting:
    docs: Sequence[Doc]
    done: asyncio.Future[list[bool]]


class InsertRounds:
    """Group commit of inserts into one collection: the documents of concurrent callers leave
    together in one `insert_many(ordered=False)` (journaled: the client writes with `j: true`),
    up to `max_docs` per round and `max_in_flight` rounds at once; whatever arrives while
    rounds are in flight waits for the next one, so the window is as short as a round trip
    and as wide as the load makes it. Each caller gets its own outcome per document: True
    inserted, False a duplicate key (already stored); a failure of the command fails the
    callers it concerns with StoreUnavailable (the others of the round get theirs).

    One insert command per round instead of one per document (a client-level bulkWrite runs
    each insert as its own command on SecantusDB) is what brings batched ingest near the
    database's raw insert_many rate."""

    def __init__(self, collection: Collection, *, max_docs: int = 2000, max_in_flight: int = 2):
        self._c = collection
        self._max = max_docs
        self._max_in_flight = max_in_flight
        self._queue: list[_Waiting] = []
        self._in_flight = 0
        self.rounds = 0  # commands sent (tests and benchmarks read it)

    async def insert(self, docs: Sequence[Doc]) -> list[bool]:
        done: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(docs, done))
        if self._in_flight < self._max_in_flight:
            self._start()
        return await done

    def _start(self) -> None:
        batch: list[_Waiting] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].docs) <= self._max):
            waiting = self._queue.pop(0)
            batch.append(waiting)
            size += len(waiting.docs)
        self._in_flight += 1
        task = asyncio.create_task(self._round(batch))
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._in_flight -= 1
        if self._queue and self._in_flight < self._max_in_flight:
            self._start()

    async def _round(self, batch: list[_Waiting]) -> None:
        docs = [doc for waiting in batch for doc in waiting.docs]
        self.rounds += 1
        refused: dict[int, int] = {}  # index in the round → error code
        try:
            try:
                with translate_errors():
                    await self._c.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                for error in exc.details.get("writeErrors", []):
                    refused[int(error["index"])] = int(error.get("code", 0))
                if exc.details.get("writeConcernErrors"):
                    raise StoreUnavailable("write concern failed") from exc
        except BaseException as exc:
            failure = exc if isinstance(exc, StoreUnavailable) else None
            for waiting in batch:
                if not waiting.done.done():
                    waiting.done.set_exception(
                        failure or StoreUnavailable(f"database write failed: {type(exc).__name__}")
                    )
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for waiting in batch:
            codes = [refused.get(at + i) for i in range(len(waiting.docs))]
            at += len(waiting.docs)
            if any(code not in (None, _DUPLICATE_KEY) for code in codes):
                waiting.done.set_exception(StoreUnavailable("a fix was refused by the database"))
            else:
                waiting.done.set_result([code is None for code in codes])


@dataclass(frozen=True, slots=True)
class Consumed:
    """What one fold step took from a fleet document's queues: the pending fix ids it folded
    (or dropped), and how many readings and services it took from the front of their lists."""

    pending: Sequence[Any] = ()
    readings: int = 0
    services: int = 0


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of one fix: stored now, or a duplicate of one stored before."""

    id: ObjectId
    duplicate: bool


class PositionStore:
    def __init__(self, positions: Collection, fleet: Collection, commits: GroupCommit) -> None:
        self._p = positions
        self._f = fleet
        self._commits = commits
        self.inserts = InsertRounds(positions)

    async def ensure_indexes(self, retention_days: int = DEFAULT_RETENTION_DAYS) -> None:
        with translate_errors():
            await self._p.create_indexes(POSITION_INDEXES)
            await self._f.create_indexes(FLEET_INDEXES)
            existing = await (await self._p.list_indexes()).to_list(None)
            if not any(index["name"] == _RETENTION_INDEX for index in existing):
                await self._p.create_indexes([retention_index(retention_days)])

    async def set_retention(self, days: int) -> None:
        """Positions older than `days` (by receipt) expire: the TTL index is changed in place
        (collMod), or dropped and created where the server cannot."""
        seconds = int(days) * 86_400
        with translate_errors():
            try:
                await self._p.database.command(
                    "collMod",
                    self._p.name,
                    index={"name": _RETENTION_INDEX, "expireAfterSeconds": seconds},
                )
                return
            except OperationFailure:  # a server without collMod: drop and create
                pass
            existing = await (await self._p.list_indexes()).to_list(None)
            if any(index["name"] == _RETENTION_INDEX for index in existing):
                await self._p.drop_index(_RETENTION_INDEX)
            await self._p.create_indexes([retention_index(days)])

    async def retention_seconds(self) -> int | None:
        with translate_errors():
            existing = await (await self._p.list_indexes()).to_list(None)
        for index in existing:
            if index["name"] == _RETENTION_INDEX:
                return int(index["expireAfterSeconds"])
        return None

    # --- append side ---------------------------------------------------------------------

    async def append(
        self, tenant: str, vehicle: str, fixes: Sequence[Doc], source: str
    ) -> list[Appended]:
        """Store one vehicle's fixes (each `{t, lat, lon, ...}`) and queue them for the fold.

        The fixes join the next insert round (`InsertRounds`: one `insert_many` for every
        request in flight) and the queue push the process's group commit, side by side, so
        both share round trips with whatever else is in flight. A fix whose (tenant, vehicle,
        t) exists is a duplicate: answered as stored, its fresh id pulled from the queue
        again. StoreUnavailable when the database failed (then some fixes may be stored: a
        retry finds them as duplicates)."""
        if not fixes:
            return []
        now = datetime.now(UTC)
        docs = [
            {
                **fix,
                "_id": new_id(),
                "tenant": tenant,
                "vehicle": vehicle,
                "at": now,
                "source": source,
            }
            for fix in fixes
        ]
        ids = [doc["_id"] for doc in docs]
        push = self._push(tenant, vehicle, {"$push": {"pending": {"$each": ids}}}, now)
        inserted, pushed = await asyncio.gather(
            self.inserts.insert(docs), push, return_exceptions=True
        )
        if isinstance(inserted, BaseException):
            raise inserted
        if isinstance(pushed, BaseException):
            raise pushed
        duplicates = [doc_id for doc_id, stored in zip(ids, inserted, strict=True) if not stored]
        if duplicates:
            # Not awaited by the fold: an id whose fix is not found waits, then is dropped.
            pull = {"$pull": {"pending": {"$in": duplicates}}, "$inc": {"version": 1}}
            await self._commits.update(self._f, {"_id": fleet_id(tenant, vehicle)}, pull)
        return [Appended(doc_id, not stored) for doc_id, stored in zip(ids, inserted, strict=True)]

    async def push_reading(self, tenant: str, vehicle: str, reading: Doc) -> None:
        """Queue an odometer reading from another source (`{km, at, source}`) for the fold."""
        await self._push(tenant, vehicle, {"$push": {"readings": reading}}, datetime.now(UTC))

    async def push_service(self, tenant: str, vehicle: str, service: Doc) -> None:
        """Queue a recorded service (`{km?, at, plan?}`) for the fold."""
        await self._push(tenant, vehicle, {"$push": {"services": service}}, datetime.now(UTC))

    async def _push(self, tenant: str, vehicle: str, update: Doc, now: datetime) -> int:
        key = fleet_id(tenant, vehicle)
        full = {
            **update,
            "$set": {"dirty": True, "tenant": tenant, "vehicle": vehicle, "shard": shard_of(key)},
            "$min": {"since": now},
            "$inc": {"version": 1},
            "$setOnInsert": {"state_version": 0},
        }
        return await self._commits.update(self._f, {"_id": key}, full, upsert=True)

    # --- fold side -----------------------------------------------------------------------

    async def waiting(self, shards: Collection_[int], limit: int) -> list[Doc]:
        """Fleet documents with input waiting, in these shards, the longest waiting first."""
        query = {"shard": {"$in": sorted(shards)}, "dirty": True}
        with translate_errors():
            docs = await self._f.find(query).sort("since", ASCENDING).limit(limit).to_list(limit)
        return docs

    async def fleet(self, tenant: str, vehicle: str) -> Doc | None:
        with translate_errors():
            return await self._f.find_one(scoped(tenant, {"_id": fleet_id(tenant, vehicle)}))

    async def fixes(self, ids: Sequence[Any]) -> list[Doc]:
        """The positions with these ids that exist, in device-time order."""
        if not ids:
            return []
        with translate_errors():
            docs = await self._p.find({"_id": {"$in": list(ids)}}).to_list(None)
        return sorted(docs, key=lambda doc: (doc["t"], doc["_id"]))

    async def neighbours(
        self, tenant: str, vehicle: str, t: datetime, exclude: Sequence[Any] = ()
    ) -> tuple[Doc | None, Doc | None]:
        """The accepted (not rejected) fixes just before and just after device time `t`;
        `exclude` names fixes not folded yet (the fold's own pending ones)."""
        base = scoped(tenant, {"vehicle": vehicle, "rejected": {"$exists": False}})
        if exclude:
            base["_id"] = {"$nin": list(exclude)}
        with translate_errors():
            before = await self._p.find_one({**base, "t": {"$lt": t}}, sort=[("t", DESCENDING)])
            after = await self._p.find_one({**base, "t": {"$gt": t}}, sort=[("t", ASCENDING)])
        return before, after

    async def commit_fold(
        self,
        doc_id: str,
        version: int,
        state_version: int,
        state: Doc,
        consumed: Consumed,
        read: Doc | None = None,
    ) -> bool:
        """Write the fold's new state and take what it folded from the queues, in one
        single-document update (through the group commit: the commits of a fold batch
        share a round trip and a journal flush). `read` is the document as the fold read
        it: the first attempt assumes it is still current and needs no read.

        If `version` still matches (nothing was pushed since the fold read the document),
        the queues are set to their remainders and `dirty` to whether any remain. Otherwise
        (pushes landed meanwhile: they only append) the consumed ids are pulled and the first
        readings and services removed, leaving `dirty` true. Either way `state_version` and
        `version` go up by one. False when `state_version` no longer matches: another fold
        won; discard this one and read again."""
        taken = set(consumed.pending)
        current = read
        for _ in range(_COMMIT_ATTEMPTS):
            if current is None:
                with translate_errors():
                    current = await self._f.find_one({"_id": doc_id})
            if current is None or current.get("state_version", 0) != state_version:
                return False
            pending = [p for p in current.get("pending", []) if p not in taken]
            readings = current.get("readings", [])[consumed.readings :]
            services = current.get("services", [])[consumed.services :]
            dirty = bool(pending or readings or services)
            fields: Doc = {
                "pending": pending,
                "readings": readings,
                "services": services,
                "dirty": dirty,
                "state": state,
            }
            update: Doc = {"$set": fields, "$inc": {"version": 1, "state_version": 1}}
            if not dirty:
                update["$unset"] = {"since": ""}
            elif current.get("version") != version:
                # Pushed since the fold read it: the remainder waits from now on.
                fields["since"] = datetime.now(UTC)
            guard = {
                "_id": doc_id,
                "version": current.get("version"),
                "state_version": state_version,
            }
            if await self._commits.update(self._f, guard, update):
                return True
            current = None
        return await self._commit_racing(doc_id, state_version, state, consumed)

    async def _commit_racing(
        self, doc_id: str, state_version: int, state: Doc, consumed: Consumed
    ) -> bool:
        """Pushes keep landing between read and write: pull what was consumed instead."""
        with translate_errors():
            current = await self._f.find_one({"_id": doc_id})
        if current is None or current.get("state_version", 0) != state_version:
            return False
        pulls: Doc = {"pending": {"$in": list(consumed.pending)}}
        if consumed.readings:
            pulls["readings"] = {"$in": current.get("readings", [])[: consumed.readings]}
        if consumed.services:
            pulls["services"] = {"$in": current.get("services", [])[: consumed.services]}
        guard: Doc = {"_id": doc_id, "state_version": state_version}
        update = {
            "$pull": pulls,
            "$set": {"state": state, "dirty": True},
            "$inc": {"version": 1, "state_version": 1},
        }
        with translate_errors():
            result = await self._f.update_one(guard, update)
        return bool(result.matched_count)

    async def mark_rejected(self, ids_with_reasons: Mapping[Any, str]) -> None:
        """Flag folded fixes the quality gates refused, with the reason (one command)."""
        by_reason: dict[str, list[Any]] = {}
        for doc_id, reason in ids_with_reasons.items():
            by_reason.setdefault(reason, []).append(doc_id)
        if not by_reason:
            return
        writes = [
            UpdateMany({"_id": {"$in": ids}}, {"$set": {"rejected": reason}})
            for reason, ids in by_reason.items()
        ]
        with translate_errors():
            await self._p.bulk_write(writes, ordered=False)

    async def purge(self, tenant: str, before: datetime) -> int:
        """Drop a tenant's fixes received before `before` (a retention shorter than the TTL
        index's); how many went."""
        with translate_errors():
            result = await self._p.delete_many(scoped(tenant, {"at": {"$lt": before}}))
        return int(result.deleted_count)

    # --- reads ---------------------------------------------------------------------------

    async def track(
        self,
        tenant: str,
        vehicle: str,
        start: datetime | None,
        end: datetime | None,
        after: datetime | None,
        limit: int,
    ) -> list[Doc]:
        """A vehicle's fixes in device-time order, `start` <= t < `end`, after the cursor
        `after` (the last device time of the previous page); rejected ones included (flagged)."""
        bounds: Doc = {}
        if start is not None:
            bounds["$gte"] = start
        if end is not None:
            bounds["$lt"] = end
        if after is not None:
            bounds["$gt"] = after
        query = scoped(tenant, {"vehicle": vehicle})
        if bounds:
            query["t"] = bounds
        with translate_errors():
            return await self._p.find(query).sort("t", ASCENDING).limit(limit).to_list(limit)

    async def latest(self, tenant: str, vehicle: str, limit: int) -> list[Doc]:
        """A vehicle's newest fixes by device time, newest first."""
        query = scoped(tenant, {"vehicle": vehicle})
        with translate_errors():
            return await self._p.find(query).sort("t", DESCENDING).limit(limit).to_list(limit)
