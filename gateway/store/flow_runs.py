"""The `flow_runs` collection: one durable run per (event, flow), claimed by runners with a
lease, its steps' outcomes appended as they happen.

A run is `{_id: "<event id>:<flow name>", tenant, flow, version, event, depth, status,
next_step, steps: [{id, kind, outcome, at, ...}], answers: {step id: value}, shard,
next_attempt_at, waits?: {step, attempts}, faults?: {step, attempts}, lease_owner?,
lease_until?, claims, last_error?, created_at, updated_at, finished_at?}`. The `_id` is
deterministic, so a relay that starts the same event twice stores one run. Claiming works like
deliveries' (`store/deliveries.py`): a shard's due runs flipped to `running` under a batch
token, every later write fenced by that token *and* by `next_step`, so a runner whose lease was
taken over can neither record a step twice nor overwrite the new owner.
"""

from __future__ import annotations

import builtins
import re
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from gateway.errors import BadRequest
from gateway.models import RunStatus
from gateway.store.changes import ARRIVALS, changed_ids
from gateway.store.client import (
    CURSOR_PROBLEM,
    EVENT_CHILD_CURSOR,
    Admission,
    Collection,
    Doc,
    admitted,
    child_cursor,
    cursor_text,
    event_children,
    insert_new,
    other_tenants,
    scoped,
    translate_errors,
)
from gateway.store.history import drop_finished
from gateway.store.newest import newest_first
from gateway.store.unit_leases import renew_held, renew_one

PENDING, RUNNING, HELD = RunStatus.PENDING.value, RunStatus.RUNNING.value, RunStatus.HELD.value
# Fewer shards than deliveries: a runner visits them all when it looks for work.
SHARDS = 8
INDEXES = [
    IndexModel(
        [("status", ASCENDING), ("shard", ASCENDING), ("next_attempt_at", ASCENDING)], name="due"
    ),
    IndexModel([("tenant", ASCENDING), ("flow", ASCENDING), ("_id", DESCENDING)], name="by_flow"),
]
# An event's runs (`of_event`, the event page) are a range of `_id`: MongoDB reads it from its
# primary index, SecantusDB by scanning every run unless this index serves it.
EVENT_RANGES = IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="by_event")
# A flow's runs by status (the failed ones): SecantusDB scans every run of every tenant for a
# query one predicate of which (`status`) `by_flow` lacks; MongoDB filters `by_flow`.
STATUS_INDEX = IndexModel(
    [("tenant", ASCENDING), ("flow", ASCENDING), ("status", ASCENDING), ("_id", DESCENDING)],
    name="by_status",
)
# What a list shows of each run: not the event's data nor the fetched answers.
_LIST_FIELDS = {"event.data": 0, "event.changes": 0, "event.detail": 0, "answers": 0}
_LEASE_FIELDS = {"lease_owner": "", "lease_until": ""}


def shard_of(run_id: str) -> int:
    return zlib.crc32(run_id.encode()) % SHARDS


class FlowRunStore:
    def __init__(self, collection: Collection) -> None:
        self._c = collection
        self._status_windows = False  # whether an index covers (tenant, flow, status, `_id`)

    async def ensure_indexes(self, *, scans_id_ranges: bool = False) -> None:
        more = [EVENT_RANGES, STATUS_INDEX] if scans_id_ranges else []
        with translate_errors():
            await self._c.create_indexes([*INDEXES, *more])
        self._status_windows = scans_id_ranges

    def arrivals(self, *, await_ms: int) -> AsyncIterator[builtins.list[Any]]:
        """The (stored) shards of flow runs as they are created or made pending again, by any
        process (`store/changes.py` `ARRIVALS`): a runner claims them at once
        (`leased_loop.follow_arrivals`)."""
        return changed_ids(self._c, await_ms=await_ms, match=ARRIVALS, field="shard")

    async def insert_many(self, docs: Sequence[Doc]) -> int:
        """Insert the runs that are new; an existing run is left as it is."""
        return await insert_new(self._c, docs)

    # -- admin reads (tenant-scoped) ---------------------------------------------------------

    async def get(self, tenant: str, run_id: str) -> Doc | None:
        with translate_errors():
            return await self._c.find_one(scoped(tenant, {"_id": run_id}))

    async def of_event(
        self, tenant: str, event_id: str, limit: int, after: str | None = None
    ) -> builtins.list[Doc]:
        """The runs an event started, one per flow, by flow name, from after the run id
        `after` (their ids are `<event id>:<flow>`: a range of `by_event`)."""
        query = {"_id": event_children(event_id)}
        if (checked := cursor_text(after, EVENT_CHILD_CURSOR)) is not None:
            query["_id"]["$gt"] = child_cursor(checked, event_id)
        with translate_errors():
            cursor = self._c.find(scoped(tenant, query), _LIST_FIELDS).sort("_id", 1)
            return await cursor.limit(limit).to_list(limit)

    async def list(
        self,
        tenant: str,
        flow: str,
        *,
        status: str | None,
        before: str | None,
        limit: int,
    ) -> builtins.list[Doc]:
        """Newest first (run ids start with the event's id, which grows with time), in windows
        of time (`newest.py`): the cost follows the flow's latest runs, not its history."""
        query: Doc = {"flow": flow}
        if status is not None:
            query["status"] = status
        if (checked := cursor_text(before, EVENT_CHILD_CURSOR)) is not None:
            if not checked.endswith(f":{flow}"):  # another flow's run
                raise BadRequest(CURSOR_PROBLEM)
        return await newest_first(
            self._c,
            tenant,
            query,
            before=checked,
            limit=limit,
            windowed=status is None or self._status_windows,
            projection=_LIST_FIELDS,
        )

    async def replay(
        self, tenant: str, run_id: str, failed_at: int, replay: Mapping[str, Any], now: datetime
    ) -> bool:
        """A failed run whose failed step is `failed_at` (its last record) → pending now, at
        that step again: its record moves to `replays`, the steps before it stay done. False
        when the run is not (or no longer) that failed run."""
        with translate_errors():
            result = await self._c.update_one(
                scoped(
                    tenant,
                    {"_id": run_id, "status": RunStatus.FAILED.value, "next_step": failed_at + 1},
                ),
                {
                    "$set": {
                        "status": PENDING,
                        "next_step": failed_at,
                        "next_attempt_at": now,
                        "updated_at": now,
                    },
                    "$pop": {"steps": 1},
                    "$push": {"replays": dict(replay)},
                    "$unset": {"finished_at": "", "last_error": "", "waits": "", "faults": ""},
                },
            )
        return result.modified_count == 1

    async def let_go_held(
        self, tenant: str, flow: str, now: datetime, *, skip: bool, run_id: str | None = None
    ) -> int:
        """A resumed flow's held runs (or the one `run_id`): pending again, due when they
        were (in the order their events came), or, with `skip`, final as `skipped`."""
        query: Doc = {"flow": flow, "status": HELD}
        if run_id is not None:
            query["_id"] = run_id
        if skip:
            fields: Doc = {"status": RunStatus.SKIPPED.value, "finished_at": now}
        else:
            fields = {"status": PENDING}
        with translate_errors():
            result = await self._c.update_many(
                scoped(tenant, query),
                {"$set": {**fields, "updated_at": now}, "$unset": {"held_at": ""}},
            )
        return result.modified_count

    async def pinned_versions(self, tenant: str, flow: str) -> set[int]:
        """The versions of `flow` its runs still run or may run again: pending, running,
        held, or failed (a replay resumes a failed run on its version)."""
        alive = [PENDING, RUNNING, HELD, RunStatus.FAILED.value]
        with translate_errors():
            found = await self._c.distinct(
                "version", scoped(tenant, {"flow": flow, "status": {"$in": alive}})
            )
        return {int(v) for v in found if isinstance(v, int)}

    async def count(self, tenant: str, flow: str, status: str) -> int:
        with translate_errors():
            return await self._c.count_documents(scoped(tenant, {"flow": flow, "status": status}))

    # -- the runners' side: system work across tenants, never reached from a request ---------

    async def claim(
        self,
        token: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        shard: int | None,
        admit: Admission | None = None,
    ) -> builtins.list[Doc]:
        """Up to `limit` due runs of one shard (None: of every shard, for an idle runner's
        look: `leased_loop.Claims`), oldest first, now running for us; `admit`
        (given `_id`, `tenant` and `next_attempt_at`) says which the runner can start now
        (`leased_loop.FairShares`): those of the tenants it excludes are not read, those it
        passes over stay due, for a later claim (a read that passed `PASSED_OVER_MOST` over
        is made again leaving out what filled up: `admitted`)."""
        shards = {"$in": builtins.list(range(SHARDS))} if shard is None else shard
        query: Doc = {"status": PENDING, "shard": shards, "next_attempt_at": {"$lte": now}}
        claimed = {"status": RUNNING, "lease_owner": token, "lease_until": lease_until}
        with translate_errors():
            if admit is None:
                cursor = self._c.find(query).sort("next_attempt_at", ASCENDING)
                found = await cursor.to_list(limit)
            else:
                fields = {"tenant": 1, "next_attempt_at": 1}
                order = "next_attempt_at"
                found = await admitted(self._c, query, other_tenants, order, fields, admit, limit)
            if not found:
                return []
            ids = [d["_id"] for d in found]
            result = await self._c.update_many(
                {"_id": {"$in": ids}, "status": PENDING, "next_attempt_at": {"$lte": now}},
                {"$set": claimed, "$inc": {"claims": 1}},
            )
            if admit is None and result.modified_count == len(ids):  # all ours, read whole
                return [{**d, **claimed} for d in found]
            read = await self._c.find({"_id": {"$in": ids}, "lease_owner": token}).to_list(None)
        read.sort(key=lambda d: d["next_attempt_at"])
        return read

    async def record(
        self,
        run_id: str,
        token: str,
        at_step: int,
        *,
        entries: Sequence[Mapping[str, Any]],
        answers: Mapping[str, Any],
        fields: Mapping[str, Any],
        release: bool,
    ) -> bool:
        """Append step outcomes, store answers and set `fields` (next_step, a status...), if
        we still hold the run at `at_step`; `release` drops the lease (a final status or a
        wait). False when the lease was lost (then nothing is written)."""
        update: Doc = {"$set": {**fields, **{f"answers.{k}": v for k, v in answers.items()}}}
        if entries:
            update["$push"] = {"steps": {"$each": [dict(e) for e in entries]}}
        if release:
            update["$unset"] = _LEASE_FIELDS
        with translate_errors():
            result = await self._c.update_one(
                {"_id": run_id, "lease_owner": token, "status": RUNNING, "next_step": at_step},
                update,
            )
        return result.modified_count == 1

    async def drop_finished_before(self, before: datetime, *, dry_run: bool = False) -> int:
        """Runs in a final status, last changed before `before` (`gateway cleanup`)."""
        finals = [status.value for status in RunStatus if status.final]
        return await drop_finished(self._c, finals, SHARDS, before, dry_run=dry_run)

    async def renew_leases(self, held: Mapping[str, str], lease_until: datetime) -> int:
        """Extend the leases a live runner still holds (run id → claim token)."""
        return await renew_held(self._c, held, RUNNING, lease_until)

    async def renew_lease(self, run_id: str, token: str, lease_until: datetime) -> bool:
        """Extend one lease, if the claim under `token` still holds it."""
        return await renew_one(self._c, run_id, token, RUNNING, lease_until)

    async def expire_leases(self, now: datetime) -> int:
        """Runs whose runner died become pending again, due at once: they resume at their
        first step without an outcome."""
        with translate_errors():
            result = await self._c.update_many(
                {"status": RUNNING, "lease_until": {"$lte": now}},
                {"$set": {"status": PENDING, "updated_at": now}, "$unset": _LEASE_FIELDS},
            )
        return result.modified_count

    async def release_claims(self, owner: str, held: Sequence[str], now: datetime) -> int:
        """Claims of `owner` (a runner) the database failed (applied all the same, maybe):
        every run one took that the runner does not hold, pending again, due at once."""
        mine = {"$regex": f"^{re.escape(owner)}:"}
        with translate_errors():
            result = await self._c.update_many(
                {"lease_owner": mine, "status": RUNNING, "_id": {"$nin": builtins.list(held)}},
                {"$set": {"status": PENDING, "updated_at": now}, "$unset": _LEASE_FIELDS},
            )
        return result.modified_count

    async def release(
        self, run_id: str, token: str, now: datetime, due: datetime | None = None
    ) -> None:
        """A runner hands a run it holds back: stopping, due as it was (now); after the
        database failed it, due at `due`."""
        fields: Doc = {"status": PENDING, "updated_at": now}
        if due is not None:
            fields["next_attempt_at"] = due
        with translate_errors():
            await self._c.update_one(
                {"_id": run_id, "lease_owner": token, "status": RUNNING},
                {"$set": fields, "$unset": _LEASE_FIELDS},
            )
