"""The `schedules` and `schedule_runs` collections: polled partner feeds and what each run did.

A schedule is `{_id, tenant, name, action_id, every: {seconds} | {cron, timezone}, cursor?:
{from, param, more?, initial?}, target: {type, entity_type?, kind?, params?}, mapping,
dedupe?: {by, keep}, request?: {query?, body?}, error?, max_pages, status: active|paused,
next_run_at, lease_owner?, lease_until, cursor_value, last_digest, seen: [ids], runs_in_row?,
failures, last_error?, last_run_at?, last_ok_at?, rev, created_at, updated_at, name_folded}`
(`name_folded`: what the name search reads, `store/client.py` `name_containing`).
`planned_at`: the gateway's time `next_run_at` was set at when that is a wait from then (an
interval's next run, a back-off, a hold, "run now"); None when it is a cron expression's
wall time (`rebase`); absent when last written before 2026-12-07 (`rebase` reads the time
from those written with it, `_unplanned`). `runs_in_row`
counts the `more` runs in a row that went on at once (`schedules/runner.py` bounds them).
Documents written before 2026-12-05 may carry a `chain` and `chain_seen`: no longer read, and
unset by the next release. `mapping` sits at the
top level: `store/mappings.py` finds a mapping's users by it.

One runner per schedule across processes: a run claims the schedule under a lease
(`lease_owner`, `lease_until`); every later write of that run is fenced by the owner token, so
a runner whose lease was taken over writes nothing. The cursor, the remembered item ids and the
last page's digest move together in one single-document update (`commit_page`), after the
page's entity writes are durable.

A run is `{_id, tenant, schedule_id, owner, started_at, finished_at, duration_ms, pages,
items_read, written, rejected, skipped, cursor_before, cursor_after, outcome, error?, note?}`; each
schedule keeps its newest `MAX_RUNS_PER_SCHEDULE`.
"""

from __future__ import annotations

import builtins
import contextlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from gateway.clock import utcnow
from gateway.store.client import (
    Admission,
    Collection,
    Doc,
    admitted,
    cursor_id,
    other_tenants,
    parse_id,
    scoped,
    translate_errors,
    with_folded_name,
)
from gateway.store.migrations import record_step
from gateway.store.resources import TenantResources

FREE: Final = datetime(1970, 1, 1, tzinfo=UTC)
"""`lease_until` of a schedule nobody holds."""
HEADER_MEMBER_STEP: Final = "schedules.header_member_quoted"
"""The upgrade step that quotes a `cursor.from` beginning `header.` (`quote_header_members`)."""
MAX_RUNS_PER_SCHEDULE: Final = 200
# What a release takes off: the lease's owner, and the cross-run chain of cursors older
# releases kept (2026-12-05: no longer read).
_RELEASED: Final = {"lease_owner": "", "chain": "", "chain_seen": ""}
# The longest wait a release gives besides an interval: the last back-off step with its
# jitter (`timing.BACKOFF_SECONDS`, 1 h +20%), above an hour's Retry-After (`rebase`).
_LONGEST_WAIT: Final = timedelta(seconds=3600 * 1.2)
# The gateway's times a write that sets `next_run_at` stamps along (a release: the run's
# start and its outcome's time; an admin's change: `updated_at`); the newest is the set time.
_SET_WITH: Final = ("last_run_at", "last_ok_at", "last_error.at", "updated_at")
INDEXES = [
    IndexModel([("tenant", ASCENDING), ("name", ASCENDING)], unique=True, name="tenant_name"),
    IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="by_tenant"),
    IndexModel([("status", ASCENDING), ("next_run_at", ASCENDING)], name="due"),
]
RUN_INDEXES = [
    IndexModel(
        [("tenant", ASCENDING), ("schedule_id", ASCENDING), ("_id", DESCENDING)], name="by_schedule"
    ),
]


class ScheduleStore(TenantResources):
    def __init__(self, collection: Collection, runs: Collection) -> None:
        super().__init__(collection)
        self._runs = runs

    async def insert(self, doc: Doc) -> None:
        await super().insert(with_folded_name(doc))

    async def update(
        self,
        tenant: str,
        resource_id: str,
        rev: int,
        fields: Mapping[str, Any],
        unset: Sequence[str] = (),
    ) -> Doc | None:
        return await super().update(tenant, resource_id, rev, with_folded_name(fields), unset)

    async def set_status(
        self, tenant: str, schedule_id: str, status: str, next_run_at: datetime
    ) -> Doc | None:
        """Pause or resume; resuming clears the failure streak so the next run is not delayed."""
        fields: Doc = {"status": status, **due_at(next_run_at)}
        if status == "active":
            fields["failures"] = 0
        return await self._written(tenant, schedule_id, {"$set": fields, "$inc": {"rev": 1}})

    async def run_now(self, tenant: str, schedule_id: str, now: datetime) -> Doc | None:
        return await self._written(tenant, schedule_id, {"$set": due_at(now)})

    async def _written(self, tenant: str, schedule_id: str, update: Doc) -> Doc | None:
        """The schedule after `update`, or None when there is none. An update then a read by
        `_id`, each a point lookup: a `find_one_and_update` SecantusDB writes with `{_id,
        $and: [filter]}`, matched against every tenant's schedules (300 ms at 1,000 tenants
        of 20). Unguarded, as the one call was; the read may show a later write too (a
        runner's claim), as a read just after the atomic call would."""
        query = scoped(tenant, {"_id": ObjectId(schedule_id)})
        with translate_errors():
            if not (await self._c.update_one(query, update)).matched_count:
                return None
            found: Doc | None = await self._c.find_one(query)
        return found

    async def start_again(
        self, tenant: str, action_ids: Sequence[str], fields: Doc, unset: Sequence[str]
    ) -> int:
        """Write `fields` (a reset's) on every schedule reading with one of these actions, and
        unset `unset` (a run in flight loses its lease); how many there were."""
        if not action_ids:
            return 0
        change: Doc = {"$set": fields, "$inc": {"rev": 1}}
        if unset:
            change["$unset"] = dict.fromkeys(unset, "")
        with translate_errors():
            done = await self._c.update_many(
                scoped(tenant, {"action_id": {"$in": list(action_ids)}}), change
            )
        return done.modified_count

    # -- the runners' side: system work across tenants, never reached from a request --------

    async def claim_due(
        self,
        owner: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        admit: Admission | None = None,
    ) -> builtins.list[Doc]:
        """Up to `limit` due, active schedules that nobody holds, now leased to `owner`,
        first due first; `admit` (given `_id` and `tenant`) says which the runner can start
        now (`leased_loop.FairShares`): those of the tenants it excludes are not read, those
        it passes over stay due, for a later claim (a read that passed `PASSED_OVER_MOST`
        over is made again leaving out what filled up: `admitted`). One whose lease a write
        took back between its claim and the read of it (`lease_owner` no longer `owner`) is
        left out, not run."""
        due: Doc = {"status": "active", "next_run_at": {"$lte": now}, "lease_until": {"$lte": now}}
        claimed: list[Doc] = []
        admit = admit or Admission(_anything)
        with translate_errors():
            fields = {"_id": 1, "tenant": 1}
            found = await admitted(self._c, due, other_tenants, "next_run_at", fields, admit, limit)
            for candidate in found:
                # `_id` first, and an update then a read: a `find_one_and_update` SecantusDB
                # writes with an operator at its filter's top, every tenant's schedules read
                # for each run claimed (and `status` first, every active one).
                lease = {"$set": {"lease_owner": owner, "lease_until": lease_until}}
                taken = await self._c.update_one({"_id": candidate["_id"], **due}, lease)
                if not taken.matched_count:
                    continue  # another runner took it between the two reads
                # Read as leased to `owner`: a write between the two (a reset, a feed's
                # change: `lease_owner` unset; then another runner's claim) took the lease
                # back, and the run is not made (as a lease lost: it is due again).
                doc = await self._c.find_one({"_id": candidate["_id"], "lease_owner": owner})
                if doc is not None:
                    claimed.append(doc)
        return claimed

    async def rebase(self, now: datetime, waits_from: datetime) -> int:
        """After the gateway's time went back (a clock that ran fast, stepped right) to
        `waits_from` (`now` when the step's time is unknown): every schedule whose wait was
        set at a time still ahead of `now` (`planned_at`) waits that wait from `waits_from`
        instead (a 30 s poll set on a clock an hour fast no longer waits an hour; a back-off
        or a partner's Retry-After is waited whole again). How many schedules moved. A cron
        expression's wall time (`planned_at` None) is left: it is its own time. Written
        guarded by what was read, so a run's release meanwhile wins; both reads are rare
        (called only after a runner saw its time go back, not at each start), so neither has
        an index (each reads every schedule). Leases are not touched here: each runner renews
        its own (another process's was taken with its own lease length).

        A schedule last given its next run before 2026-12-07 has no `planned_at` at all
        (`_unplanned`): when its next run is a wait (an interval's, a back-off) written at a
        time ahead of `now`, that wait is waited again from `waits_from` too."""
        moved = 0
        with translate_errors():
            stepped = self._c.find(
                {"planned_at": {"$gt": now}}, {"_id": 1, "planned_at": 1, "next_run_at": 1}
            )
            for doc in await stepped.to_list(None):
                planned, due = doc["planned_at"], doc.get("next_run_at")
                wait = max(due - planned, timedelta()) if isinstance(due, datetime) else timedelta()
                guard = {"_id": doc["_id"], "planned_at": planned, "next_run_at": due}
                done = await self._c.update_one(guard, {"$set": due_at(waits_from, wait)})
                moved += done.modified_count
            moved += await self._unplanned(now, waits_from)
        return moved

    async def _unplanned(self, now: datetime, waits_from: datetime) -> int:
        """`rebase` for the schedules whose next run was set before `planned_at` was kept
        (none of the field): an interval schedule's next run, or any schedule's in a
        failure's back-off, is a wait; it was set at the newest of the gateway's times
        written with it (`_SET_WITH`), and when that is ahead of `now` (written on the clock
        that ran fast) it is waited again from `waits_from`: the part of it left at that
        time, up to the longest wait a release gives (the interval, or a back-off's). A cron
        expression's next run with no failure is its wall time: left. Rare: one such read
        after a runner saw its time go back, of the old schedules
        written ahead of `now` only; each gets its `planned_at` then or at its next run."""
        query = {
            "planned_at": {"$exists": False},
            "next_run_at": {"$gt": now},
            "$or": [{field: {"$gt": now}} for field in _SET_WITH],
        }
        fields = {
            "_id": 1,
            "next_run_at": 1,
            "every": 1,
            "failures": 1,
            **dict.fromkeys(_SET_WITH, 1),
        }
        moved = 0
        for doc in await self._c.find(query, fields).to_list(None):
            every, due = doc.get("every") or {}, doc["next_run_at"]
            seconds = every.get("seconds") if isinstance(every, Mapping) else None
            if not isinstance(seconds, int) and not doc.get("failures"):
                continue  # a cron expression's wall time
            error = doc.get("last_error")
            times = [doc.get(f) for f in ("last_run_at", "last_ok_at", "updated_at")]
            times.append(error.get("at") if isinstance(error, Mapping) else None)
            set_at = max((t for t in times if isinstance(t, datetime)), default=None)
            if set_at is None or set_at <= now:
                continue
            longest = max(timedelta(seconds=seconds or 0), _LONGEST_WAIT)
            wait = min(max(due - set_at, timedelta()), longest)
            guard = {"_id": doc["_id"], "planned_at": {"$exists": False}, "next_run_at": due}
            done = await self._c.update_one(guard, {"$set": due_at(waits_from, wait)})
            moved += done.modified_count
        return moved

    async def release_claims(self, runner: str, held: Sequence[ObjectId | str]) -> int:
        """Claims of `runner` the database failed (some of it applied, maybe): every
        schedule one took that the runner is not running (`held`: ids, or their text), free
        again (still due)."""
        mine = {"$regex": f"^{re.escape(runner)}:"}
        ids = [i if isinstance(i, ObjectId) else parse_id(i) for i in held]
        with translate_errors():
            result = await self._c.update_many(
                {"lease_owner": mine, "_id": {"$nin": [i for i in ids if i is not None]}},
                {"$set": {"lease_until": FREE}, "$unset": {"lease_owner": ""}},
            )
        return result.modified_count

    async def renew(self, schedule_id: ObjectId, owner: str, lease_until: datetime) -> bool:
        with translate_errors():
            result = await self._c.update_one(
                {"_id": schedule_id, "lease_owner": owner}, {"$set": {"lease_until": lease_until}}
            )
        return result.matched_count == 1

    async def holds(self, schedule_id: ObjectId, owner: str) -> bool:
        """Whether `owner` still holds the schedule's lease (a read: asked before each write
        of a page's landing); False once the schedule is deleted, reset or claimed by
        another runner."""
        with translate_errors():
            found = await self._c.count_documents(
                {"_id": schedule_id, "lease_owner": owner}, limit=1
            )
        return found == 1

    async def exists(self, schedule_id: ObjectId) -> bool:
        with translate_errors():
            return await self._c.count_documents({"_id": schedule_id}, limit=1) == 1

    async def commit_page(
        self,
        schedule_id: ObjectId,
        owner: str,
        fields: Mapping[str, Any],
        *,
        seen: Sequence[str] = (),
        keep: int = 0,
    ) -> bool:
        """Move the cursor (and the remembered ids) past a page whose writes are durable;
        False when the lease was lost (then nothing moves). `seen`: the ids of every item the
        page listed, new or seen again, moved to the end of the remembered ids (the newest
        `keep` of them are kept): an id the partner still lists is never the first to go. So
        a commit applied before its answer was lost, tried again, leaves the same ids."""
        query: Doc = {"_id": schedule_id, "lease_owner": owner}
        update: Doc | list[Doc] = {"$set": dict(fields)}
        if seen:
            listed = {"$literal": list(seen)}
            others = {"$not": [{"$in": ["$$this", listed]}]}
            before = {"$filter": {"input": {"$ifNull": ["$seen", []]}, "cond": others}}
            refreshed = {"$slice": [{"$concatArrays": [before, listed]}, -keep]}
            values = {name: {"$literal": value} for name, value in fields.items()}
            update = [{"$set": {**values, "seen": refreshed}}]
        with translate_errors():
            result = await self._c.update_one(query, update)
        return result.matched_count == 1  # matched: a commit that changes nothing is ours too

    async def release(
        self,
        schedule_id: ObjectId,
        owner: str,
        fields: Mapping[str, Any],
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> bool:
        """End a run: record its outcome and the next run time, and give the lease back.
        With `expect` (what the run read of the schedule: its `rev`, its `next_run_at`), only
        while those are unchanged: False when a request moved them during the run (run now,
        pause or resume, a PATCH), or when the lease is lost; `held` tells which."""
        query: Doc = {"_id": schedule_id, "lease_owner": owner, **(expect or {})}
        with translate_errors():
            result = await self._c.update_one(
                query, {"$set": {**fields, "lease_until": FREE}, "$unset": _RELEASED}
            )
        return result.matched_count == 1

    async def held(self, schedule_id: ObjectId, owner: str) -> Doc | None:
        """The schedule as it is now, while `owner` holds it (None once it does not)."""
        with translate_errors():
            return await self._c.find_one({"_id": schedule_id, "lease_owner": owner})

    # -- runs ------------------------------------------------------------------------------

    async def add_run(self, run: Doc) -> None:
        """Idempotent: a run written again (a retry after the database failed the first
        write, which may have been applied) is stored once, by its `_id`. The run of a
        schedule deleted meanwhile is taken back: the delete removes the schedule, then its
        runs, so either it finds this run or this finds the schedule gone."""
        run.setdefault("_id", ObjectId())
        with translate_errors():
            with contextlib.suppress(DuplicateKeyError):
                await self._runs.insert_one(run)
            query = scoped(run["tenant"], {"schedule_id": run["schedule_id"]})
            schedule = scoped(run["tenant"], {"_id": parse_id(run["schedule_id"])})
            if await self._c.count_documents(schedule, limit=1) == 0:
                await self._runs.delete_many(query)
                return
            cursor = self._runs.find(query, {"_id": 1}).sort("_id", DESCENDING)
            past = await cursor.skip(MAX_RUNS_PER_SCHEDULE).limit(1).to_list(1)
            if past:
                await self._runs.delete_many({**query, "_id": {"$lte": past[0]["_id"]}})

    async def runs(
        self, tenant: str, schedule_id: str, *, before: str | None, limit: int
    ) -> builtins.list[Doc]:
        """Newest first; `before` is the last run id of the previous page."""
        query: Doc = {"schedule_id": schedule_id}
        if before is not None:
            query["_id"] = {"$lt": cursor_id(before)}
        with translate_errors():
            cursor = self._runs.find(scoped(tenant, query)).sort("_id", DESCENDING)
            return await cursor.limit(limit).to_list(limit)

    async def delete_runs(self, tenant: str, schedule_id: str) -> None:
        with translate_errors():
            await self._runs.delete_many(scoped(tenant, {"schedule_id": schedule_id}))


def due_at(planned_at: datetime, wait: timedelta = timedelta()) -> Doc:
    """A schedule's next run `wait` after `planned_at`, a wait from then (`rebase`)."""
    return {"next_run_at": planned_at + wait, "planned_at": planned_at}


def _anything(_doc: Doc) -> bool:
    return True


async def quote_header_members(schedules: Collection, migrations: Collection) -> int:
    """Once per database: a `cursor.from` stored before `header.NAME` named an answer
    header began `header.` as a JMESPath on the body (its member `header`): written
    `"header".` + the rest, it reads that member still. How many it changed. A document
    whose `cursor` is no object or its `from` no string (hand-edited: a regex also matches
    the strings inside an array) is left as it is, so it cannot keep the store from being
    ready."""
    changed = 0
    with translate_errors():
        stored = await schedules.find(
            {"cursor.from": {"$regex": r"^header\."}}, {"cursor.from": 1}
        ).to_list(None)
    for doc in stored:
        cursor = doc.get("cursor")
        old = cursor.get("from") if isinstance(cursor, dict) else None
        if not isinstance(old, str):
            continue
        quoted = '"header".' + old.removeprefix("header.")
        with translate_errors():
            result = await schedules.update_one(
                {"_id": doc["_id"], "cursor.from": old}, {"$set": {"cursor.from": quoted}}
            )
        changed += result.modified_count
    await record_step(migrations, HEADER_MEMBER_STEP, utcnow())
    return changed
