"""The `deliveries` collection: durable outbound work, claimed by workers with a lease.

A delivery is `{_id: "<event id>:<subscription id>", tenant, event, subscription_id,
action_id, partner_id, entity_id, status, next_attempt_at, attempt_count (the retry
schedule's place: back to 0 on a replay), attempts_made (every attempt), attempts[], shard,
order_key?, seq?, waiting_for?, lease_owner?, lease_until?, last_error?, created_at,
updated_at, final_at?}`; a flow's deliveries have a `kind` (`flow_call`: `context` instead of
a subscription; `notification`: the rendered `notification`), `run_id` and `step_id`, and the
id `<run id>:<step id>[:<to>]`. The `_id` is deterministic, so a relay that fans the same
event out twice stores it once. `event` is the event itself (immutable): sending needs no
second read.

Claiming is two round trips for a whole batch: read due deliveries, flip the still-pending
ones to `in_flight` under a batch token (one document at a time is atomic, so each delivery
goes to one worker); only when another worker took some does a third read say which we won.
Every later write is fenced by that token: a worker whose lease expired and was re-claimed
elsewhere cannot overwrite the new owner.
"""

from __future__ import annotations

import builtins
import logging
import re
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from gateway.clock import epoch_ms
from gateway.models import DeliveryKind, DeliveryStatus
from gateway.store.changes import ARRIVALS, changed_ids
from gateway.store.client import (
    EVENT_CHILD_CURSOR,
    EVENT_ID,
    Admission,
    Collection,
    Doc,
    admitted,
    canonical_filters,
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

PENDING, IN_FLIGHT = DeliveryStatus.PENDING.value, DeliveryStatus.IN_FLIGHT.value
REPLAYABLE = [DeliveryStatus.FAILED.value, DeliveryStatus.DEAD.value, DeliveryStatus.PARKED.value]
MAX_ATTEMPTS_KEPT = 20

# The embedded SecantusDB reads every document a query matches before it applies a limit,
# and pays for every index on every write. So deliveries carry a `shard` (0..SHARDS-1, from
# their id) and a claim reads one shard: its cost follows that shard's due deliveries, not the
# whole backlog. Indexes are the few the hot path needs; admin lists scan their tenant.
SHARDS = 32
INDEXES = [
    IndexModel(
        [("status", ASCENDING), ("shard", ASCENDING), ("next_attempt_at", ASCENDING)], name="due"
    ),
    IndexModel([("tenant", ASCENDING), ("_id", DESCENDING)], name="by_tenant"),
    IndexModel([("order_key", ASCENDING), ("seq", ASCENDING)], name="ordering", sparse=True),
    # A partner's deliveries: the probe of a disabled partner, its backlog due again and its
    # outage's dead deliveries replayed when it recovers. Queried with these fields alone (on
    # SecantusDB a predicate no index has makes the query scan the collection): the others
    # (kind, attempt count, final time) are read here, among the partner's own.
    IndexModel(
        [("partner_id", ASCENDING), ("status", ASCENDING), ("next_attempt_at", ASCENDING)],
        name="by_partner",
    ),
]
# On SecantusDB, whose planner scans the whole collection (every tenant's deliveries) for a
# query one predicate of which no index has: the failed and dead ones (the list by status, the
# dashboard's counts) and the last hours' (the dashboard's activity). MongoDB serves them from
# `by_tenant` and the status written on each attempt costs it nothing more.
SCAN_INDEXES = [
    IndexModel(
        [("tenant", ASCENDING), ("status", ASCENDING), ("_id", DESCENDING)], name="by_status"
    ),
    IndexModel([("tenant", ASCENDING), ("created_at", ASCENDING)], name="by_created"),
]
# Filters the admin API accepts, and the fields they read.
FILTERS = {
    "status": "status",
    "partner_id": "partner_id",
    "action_id": "action_id",
    "entity_id": "entity_id",
    "subscription_id": "subscription_id",
    "event_id": "event.id",
    "run_id": "run_id",
}
_LEASE_FIELDS = {"lease_owner": "", "lease_until": ""}
_LIST_PROJECTION = {"attempts": 0, "event.data": 0}
_ABSENT = object()
_NOTICE = DeliveryKind.NOTIFICATION.value
_CLAIM_PROJECTION = {"tenant": 1, "partner_id": 1, "kind": 1, "next_attempt_at": 1}
_PROBE_PICKS = 5  # deliveries a probe looks at (claims or passes over) before it settles for a HEAD
_DEAD = DeliveryStatus.DEAD.value
_SUCCEEDED = DeliveryStatus.SUCCEEDED.value
_SUPPRESSED = DeliveryStatus.SUPPRESSED.value
_FINAL = frozenset(status.value for status in DeliveryStatus if status.final)
QUIET_HOURS = "quiet_hours"  # `held_for`: a notification the tenant's quiet hours hold

log = logging.getLogger(__name__)


class DeliveryStore:
    def __init__(self, collection: Collection) -> None:
        self._c = collection
        # The filters (besides none) an index covers with the tenant and `_id`.
        self._windowed: tuple[frozenset[str], ...] = (frozenset(),)
        self._picks = False  # other filters applied here to windows of `by_tenant` (SecantusDB)

    async def ensure_indexes(self, *, scans_id_ranges: bool = False) -> None:
        with translate_errors():
            await self._c.create_indexes([*INDEXES, *SCAN_INDEXES] if scans_id_ranges else INDEXES)
        if scans_id_ranges:
            self._windowed = (frozenset(), frozenset({"status"}))
            self._picks = True

    def arrivals(self, *, await_ms: int) -> AsyncIterator[builtins.list[Any]]:
        """The shards of deliveries as they are created or made pending again (their stored
        `shard`: an ordered action's is its order key's), by any process
        (`store/changes.py` `ARRIVALS`): a runner claims them at once
        (`leased_loop.follow_arrivals`)."""
        return changed_ids(self._c, await_ms=await_ms, match=ARRIVALS, field="shard")

    async def insert_many(self, docs: Sequence[Doc]) -> int:
        """Insert what is new; a delivery that already exists is left as it is."""
        return await insert_new(self._c, docs)

    async def stored(self, delivery_ids: Sequence[str]) -> set[str]:
        """Those of these delivery ids that exist (one read of `_id`s: a fan-out done again
        skips them instead of inserting them, which costs the database far more)."""
        if not delivery_ids:
            return set()
        with translate_errors():
            cursor = self._c.find({"_id": {"$in": list(delivery_ids)}}, {"_id": 1})
            return {doc["_id"] async for doc in cursor}

    async def numbered_exist(self, tenant: str, prefix: str) -> bool:
        """Whether a delivery `<prefix><n>` exists (a notify step's message as the version
        before address ids numbered them, `<run>:<step>:<n>`): one read of a range of `_id`
        (the digits sort before the hex of an address id; a 16-digit one is an address id).

        The step's ids are read through `by_tenant` (a range beside the tenant, which the
        index holds whole) and matched here: with a `$regex` beside the range SecantusDB read
        every delivery of the tenant, on every notify step. The range's lower bound is one no
        id starts with (`event_children` says why): `<run>:<step>9` sorts just below
        `<run>:<step>:`; what lies between (another step's ids) the match leaves out."""
        numbered = re.compile(f"{re.escape(prefix)}[0-9]{{1,15}}")
        step = prefix.removesuffix(":")
        within = {"$gt": f"{step}9", "$lt": f"{step};"}
        with translate_errors():
            async for doc in self._c.find(scoped(tenant, {"_id": within}), {"_id": 1}):
                if numbered.fullmatch(doc["_id"]):
                    return True
        return False

    # -- admin reads and replays (tenant-scoped) ---------------------------------------------

    async def get(self, tenant: str, delivery_id: str) -> Doc | None:
        with translate_errors():
            return await self._c.find_one(scoped(tenant, {"_id": delivery_id}))

    async def _of_event(
        self, tenant: str, event: str, query: Doc, before: str | None, limit: int
    ) -> list[Doc]:
        """An event's deliveries, highest id first, below `before`. The cursor is applied
        here, not in the query: through `by_tenant` (its `_id` descending) SecantusDB misses
        the ids that are a prefix of a bound (`…:1` below `…:10`, a notification's first
        recipients), so the query's bounds are the event's range alone, which no id is a
        prefix of (`event_children`), and the other filters are applied here too (with one
        more predicate than `by_tenant` has, SecantusDB scans the collection; `_query` makes
        only equalities on top-level fields). An event has its subscriptions' and flow
        steps' deliveries: tens, not thousands."""
        if not EVENT_ID.fullmatch(event):  # no event's: its deliveries are none, as for any
            return []  # filter naming nothing (and no range of other events' ids)
        if before is not None:
            before = child_cursor(before, event)
        select = scoped(tenant, {"_id": event_children(event)})
        with translate_errors():
            cursor = self._c.find(select, _LIST_PROJECTION).sort("_id", DESCENDING)
            docs = await cursor.to_list(None)
        found = [
            doc
            for doc in docs
            if (before is None or doc["_id"] < before)
            and all(doc.get(k, _ABSENT) == v for k, v in query.items())
        ]
        return found[:limit]

    async def statuses_of_run(self, tenant: str, run_id: str) -> dict[str, str]:
        """Each delivery of a flow run, by id, its status: all of them, however many (a
        notify step makes one per address, up to 500, and a run has up to 50 steps). Read
        as `_of_event` reads, its event's range, the run picked out here."""
        event = run_id.partition(":")[0]
        if not EVENT_ID.fullmatch(event):
            return {}
        select = scoped(tenant, {"_id": event_children(event)})
        with translate_errors():
            docs = await self._c.find(select, {"status": 1, "run_id": 1}).to_list(None)
        return {d["_id"]: d["status"] for d in docs if d.get("run_id") == run_id}

    async def list(
        self, tenant: str, filters: Mapping[str, Any], *, before: str | None, limit: int
    ) -> list[Doc]:
        """Newest first (ids start with their event's ObjectId: `newest.py`); unfiltered or
        by status (where `by_status` is), the cost follows the latest deliveries, not the
        tenant's history. An event's deliveries (`event_id`) are a range of ids, `<event
        id>:<subscription, or flow step>`, read through `by_tenant` (`event_children`),
        highest first, not by a scan for `event.id`; so are a flow run's (`run_id`, ids
        `<run id>:<step>`, the run's id `<event id>:<flow>`), the run picked out here."""
        query = _query(filters)
        before = cursor_text(before, EVENT_CHILD_CURSOR)
        event = query.pop("event.id", None)
        run = query.get("run_id")
        if event is None and isinstance(run, str) and EVENT_CHILD_CURSOR.fullmatch(run):
            event = run.partition(":")[0]  # a run's deliveries are among its event's
        if event is not None:
            return await self._of_event(tenant, str(event), query, before, limit)
        found: list[Doc] = []
        if before is not None:
            # The rest of the cursor's event first, then older events below its id: a bound
            # that is a whole delivery id would miss the ids that are a prefix of it on
            # SecantusDB (`_of_event`); the bare event id is a prefix of no id.
            event_id = before.partition(":")[0]
            found = await self._of_event(tenant, event_id, query, before, limit)
            before = event_id
        if len(found) < limit:
            found += await self._newest(tenant, query, before, limit - len(found))
        return found

    async def _newest(
        self, tenant: str, query: Doc, before: str | None, limit: int
    ) -> builtins.list[Doc]:
        if frozenset(query) in self._windowed or not self._picks:
            return await newest_first(
                self._c,
                tenant,
                query,
                before=before,
                limit=limit,
                windowed=frozenset(query) in self._windowed,
                projection=_LIST_PROJECTION,
            )
        # SecantusDB, a filter no index has (a subscription, an action, a partner, an entity):
        # the tenant's windows through `by_tenant`, picked here, not every tenant's scanned.
        return await newest_first(
            self._c,
            tenant,
            {},
            before=before,
            limit=limit,
            windowed=True,
            projection=_LIST_PROJECTION,
            picked=query,
        )

    async def replay(
        self,
        tenant: str,
        filters: Mapping[str, Any],
        now: datetime,
        *,
        delivery_id: str | None = None,
    ) -> int:
        """Failed, dead and parked deliveries matching `filters` → pending now, with a fresh
        schedule (their attempt history is kept); an action's `suppressed` ones too (an
        ordered line's outdated delivery) when named: by id, or by the `status` filter (a
        bulk replay of every status leaves them alone). A notification its cooldown or quiet
        hours suppressed stays so: they decided it is not sent."""
        wanted = filters.get("status")
        parts: builtins.list[Doc] = []
        if replayable := [s for s in REPLAYABLE if wanted in (None, s)]:
            parts.append({"status": {"$in": replayable}})
        if wanted == _SUPPRESSED or (wanted is None and delivery_id is not None):
            parts.append({"status": _SUPPRESSED, "kind": {"$ne": _NOTICE}})
        # One update per part (they match different statuses), not one `$or` of them:
        # SecantusDB matches a filter with an operator at its top against every tenant's
        # deliveries. By id, `_id` first: the point lookup is what the database reads.
        first = {"_id": delivery_id} if delivery_id is not None else {}
        reopened = 0
        with translate_errors():
            for part in parts:
                query = scoped(tenant, {**first, **_query(filters), **part})
                result = await self._c.update_many(query, _reopened(now))
                reopened += result.modified_count
        return reopened

    async def repoint(self, tenant: str, action_id: str, partner_id: str, now: datetime) -> int:
        """An action moved to another partner: its deliveries not succeeded yet (open, or
        failed, dead, parked or suppressed, which a replay or a recovery reopens) note that
        partner, as they are sent to it (`resolve_target`): a disabled partner's claims pass
        them over and its recovery replays those its outage killed (both go by the delivery's
        `partner_id`). Notifications keep theirs (their channel's). An admin's change, rare:
        it reads the tenant's deliveries (no index has the action)."""
        query = {
            "action_id": action_id,
            "partner_id": {"$ne": partner_id},
            "status": {"$in": [PENDING, IN_FLIGHT, *REPLAYABLE, _SUPPRESSED]},
            "kind": {"$ne": _NOTICE},
        }
        with translate_errors():
            result = await self._c.update_many(
                scoped(tenant, query), {"$set": {"partner_id": partner_id, "updated_at": now}}
            )
        return result.modified_count

    async def unplaced(self, tenant: str, action_id: str, partner_id: str) -> builtins.list[Doc]:
        """An ordered action's open deliveries without a place in a line (what places them:
        `event`, `context`, `kind`): those made before it was ordered. Read through
        `by_partner`, the action's partner (which its deliveries note), one open status at a
        time, the rest read among the partner's own: its open deliveries, not the tenant's
        history, so every save of an ordered action can look."""
        small = {"tenant": 1, "action_id": 1, "order_key": 1, "kind": 1}
        found: builtins.list[Doc] = []
        with translate_errors():
            for status in (PENDING, IN_FLIGHT):
                async for doc in self._c.find({"partner_id": partner_id, "status": status}, small):
                    if (
                        doc.get("tenant") == tenant
                        and doc.get("action_id") == action_id
                        and "order_key" not in doc
                        and doc.get("kind") != _NOTICE
                    ):
                        full = await self._c.find_one(
                            {"_id": doc["_id"]}, {"event": 1, "context": 1, "kind": 1}
                        )
                        if full is not None:
                            found.append(full)
        return found

    async def place(self, delivery_id: str, place: Mapping[str, Any]) -> None:
        """An open delivery takes its place in its action's line (`order_key`, `seq`, the
        line's `shard`), unless it has one or is final by now."""
        with translate_errors():
            await self._c.update_one(
                {
                    "_id": delivery_id,
                    "status": {"$in": [PENDING, IN_FLIGHT]},
                    "order_key": {"$exists": False},
                },
                {"$set": dict(place)},
            )

    async def fail_unsendable(
        self, tenant: str, subscription_id: str, reason: str, now: datetime
    ) -> int:
        """A subscription deleted or disabled: its pending deliveries can never be sent, and
        are failed now, as the worker fails an unsendable one (`reason`, an `unsendable`
        attempt), each waking the delivery it held in its action's line: not at their retry
        time (hours away), holding the line for the other subscriptions' deliveries. One in
        flight ends as it goes, and is failed here once its worker writes it pending again
        (`DeliveryRecorder`). How many were failed."""
        query = scoped(tenant, {"subscription_id": subscription_id, "status": PENDING})
        failed = 0
        with translate_errors():
            projection = {"attempt_count": 1, "attempts_made": 1, "order_key": 1, "seq": 1}
            for doc in await self._c.find(query, projection).to_list(None):
                attempt = unsendable_attempt(doc, now, reason)
                result = await self._c.update_one(
                    {"_id": doc["_id"], "status": PENDING},
                    {
                        "$set": {
                            "status": DeliveryStatus.FAILED.value,
                            "last_error": reason,
                            "final_at": now,
                            "updated_at": now,
                            "attempts_made": attempt["n"],
                        },
                        "$unset": {"waiting_for": ""},
                        "$push": {"attempts": {"$each": [attempt], "$slice": -MAX_ATTEMPTS_KEPT}},
                        "$inc": {"attempt_count": 1},
                    },
                )
                if not result.modified_count:
                    continue  # claimed meanwhile: the worker finds it unsendable
                failed += 1
                if isinstance(doc.get("order_key"), str):
                    await self.wake_waiting(doc["order_key"], doc["_id"], doc["seq"], now)
        return failed

    # -- the workers' side: system work across tenants, never reached from a request ---------

    async def claim(
        self,
        token: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        shard: int | None,
        admit: Admission | None = None,
    ) -> builtins.list[Doc]:
        """Up to `limit` due deliveries of one shard (None: of every shard, for an idle
        worker's look: `leased_loop.Claims`), oldest first, now in flight for us;
        `admit` (given `_id`, `tenant`, `partner_id`, `kind` and `next_attempt_at`) says
        which the worker can start now (`leased_loop.FairShares`, disabled partners): those
        it passes over stay due, for a later claim.

        Those of the tenants and partners it excludes are not read (`_kept`: a notification
        goes through its channel's partner of the moment, so only its tenant counts). The
        index's part of the query is planned alone (`admitted`): with one more predicate
        SecantusDB scans the whole collection. It reads every due delivery of the shard
        before the limit anyway; with `admit`, the ids, tenants and partners of at most
        `limit + PASSED_OVER_MOST` are sent back, the first `limit` it takes claimed, and those
        won read whole."""
        shards = {"$in": builtins.list(range(SHARDS))} if shard is None else shard
        query: Doc = {"status": PENDING, "shard": shards, "next_attempt_at": {"$lte": now}}
        with translate_errors():
            if admit is not None:
                order = "next_attempt_at"
                found = await admitted(
                    self._c, query, _kept, order, _CLAIM_PROJECTION, admit, limit
                )
            else:
                cursor = self._c.find(query).sort("next_attempt_at", ASCENDING)
                found = await cursor.limit(limit).to_list(limit)
            if not found:
                return []
            ids = [d["_id"] for d in found]
            claimed = {"status": IN_FLIGHT, "lease_owner": token, "lease_until": lease_until}
            result = await self._c.update_many(
                {"_id": {"$in": ids}, "status": PENDING, "next_attempt_at": {"$lte": now}},
                {"$set": claimed},
            )
            if admit is None and result.modified_count == len(ids):  # all ours, read whole
                return [{**d, **claimed} for d in found]
            # By id alone (`_id_`): with the token too, SecantusDB scans the collection.
            read = await self._c.find({"_id": {"$in": ids}}).to_list(None)
        won = [d for d in read if d.get("lease_owner") == token]
        won.sort(key=lambda d: d["next_attempt_at"])
        return won

    async def release_claims(self, owner: str, held: Sequence[Any], now: datetime) -> int:
        """Claims of `owner` (a worker) the database failed (applied all the same, maybe):
        every delivery one took (under a claim token, `owner:<batch>`) that the worker does
        not hold, pending again (still due). A probe's lease (`owner:probe:<n>`) is never
        among them: its claim may be applied and not yet answered, and it has a release of
        its own (`release_lease`)."""
        claims = {"$regex": f"^{re.escape(owner)}:[0-9]+$"}
        with translate_errors():
            result = await self._c.update_many(
                {"lease_owner": claims, "status": IN_FLIGHT, "_id": {"$nin": builtins.list(held)}},
                {"$set": {"status": PENDING, "updated_at": now}, "$unset": _LEASE_FIELDS},
            )
        return result.modified_count

    async def release_lease(self, token: str, now: datetime) -> int:
        """What the claim under `token` took (a probe's claim the database failed, applied all
        the same, maybe), pending again."""
        with translate_errors():
            result = await self._c.update_many(
                {"lease_owner": token, "status": IN_FLIGHT},
                {"$set": {"status": PENDING, "updated_at": now}, "$unset": _LEASE_FIELDS},
            )
        return result.modified_count

    async def claim_for_partner(
        self,
        partner_id: str,
        token: str,
        now: datetime,
        lease_until: datetime,
        *,
        failing_since: Any = None,
    ) -> Doc | None:
        """The probe of a disabled partner: its pending action call (a webhook or a flow
        call; notifications send themselves, not as probes) due first, due or not. An ordered
        one gives way to the first open delivery of its order key, which goes before it
        whatever their times (SPEC §5: an ERP never sees mileage go backwards); a key whose
        first is in flight is passed over. So is a delivery whose last probe failed and whose
        next one is not due yet (`probe_failed`): a probe does not send the same failing
        delivery each time while others wait; when nothing else is left, it is a HEAD. So is
        a key with an earlier delivery dead during the outage (since `failing_since`, not
        replayed since): the recovery replays it (`replay_outage`), and it goes first. It
        looks at `_PROBE_PICKS` deliveries at most, claimed or passed over (a key passed over
        costs the database a read or two, a scan on SecantusDB), then settles for a HEAD: an
        answer re-enables the partner, and the recovery replays the rest in order."""
        passed: set[str] = set()
        tried = 0
        with translate_errors():
            cursor = self._c.find({"partner_id": partner_id, "status": PENDING})
            async for first in cursor.sort("next_attempt_at", ASCENDING):
                if first.get("kind") == _NOTICE or _probe_failed(first, now):
                    continue
                key = first.get("order_key")
                if isinstance(key, str) and key:
                    if key in passed:
                        continue
                    head = await self._c.find_one(
                        {"order_key": key, "status": {"$in": [PENDING, IN_FLIGHT]}},
                        sort=[("seq", ASCENDING)],
                    )
                    busy = head is not None and head["status"] == IN_FLIGHT
                    if (
                        busy
                        or (head is not None and _probe_failed(head, now))
                        or await self._dead_before(key, (head or first)["seq"], failing_since)
                    ):
                        passed.add(key)
                        tried += 1  # (each look costs the database a read: a few, then a HEAD)
                        if tried == _PROBE_PICKS:
                            await cursor.close()
                            return None
                        continue
                    first = head or first
                # An update and a read by id, not a findAndModify: SecantusDB's scans the
                # whole collection (265 ms over 40,000 deliveries; these two take 5 ms).
                lease = {"status": IN_FLIGHT, "lease_owner": token, "lease_until": lease_until}
                taken = await self._c.update_one(
                    {"_id": first["_id"], "status": PENDING}, {"$set": lease}
                )
                claimed = None
                if taken.modified_count == 1:
                    claimed = await self._c.find_one({"_id": first["_id"]})
                tried += 1
                if claimed is not None or tried == _PROBE_PICKS:
                    await cursor.close()
                    return claimed
        return None

    async def _dead_before(self, order_key: str, seq: Any, failing_since: Any) -> bool:
        """Whether an earlier delivery of the order key went dead during the outage that began
        at `failing_since` (and its recovery will replay it)."""
        if not isinstance(failing_since, datetime):
            return False
        query = {"order_key": order_key, "seq": {"$lt": seq}, "status": _DEAD}
        async for doc in self._c.find(query, {"final_at": 1, "kind": 1, "recovered_from": 1}):
            if _outage_dead(doc, failing_since):
                return True
        return False

    async def recover(self, partner_id: str, failing_since: Any, now: datetime) -> int:
        """What a partner's recovery does to its deliveries, in order, while the partner is
        still disabled (its probe's and an admin's re-enable alike): its outage's dead
        deliveries replayed (`replay_outage`), then its backlog due now (`recovered`). The
        caller makes it active after, the last write: cut short before, the next recovery
        runs this again (each step idempotent). How many were replayed."""
        replayed = await self.replay_outage(partner_id, failing_since, now)
        await self.recovered(partner_id, now)
        return replayed

    async def replay_outage(
        self, partner_id: str, failing_since: Any, now: datetime, *, active: bool = False
    ) -> int:
        """The deliveries to a partner that went `dead` since it began failing (their
        schedule spent on retryable failures: a refusal is `failed`) replayed, as an admin's
        replay would (same webhook-id, a fresh schedule, `replayed_at`), marked as a
        recovery's (`recovered_from`: the outage's start; `recovered_at`, which an admin's
        replay removes: its line may outdate it, `worker._in_line`). Run when a disabled
        partner recovers (its probe answered, an admin re-enables it), while it is still
        disabled: a replayed delivery is open when a worker judges its entity's order
        (`earlier_open`) once the partner is active, so nothing newer of its entity goes
        first (SPEC §5). And when an active partner's outage ends (`active`: an answer to any
        call, `PartnerCalls`), before its `failing_since` is cleared: a crash between leaves
        it for the next answer to replay. A delivery a recovery of this outage replayed
        already (one racing this one: an admin's re-enable read while the partner was
        disabled, then its probe's; two processes' answers; `recovered_from`) and dead
        again is left dead: once per outage (one an admin replayed by hand is replayed as
        any other). At an active partner's outage's end, one a recovery replayed before
        (another outage's) is left dead if it died alone in an outage its own last failure
        began (`final_at` is `failing_since`; no other delivery died in it, dead still or
        replayed for it): a delivery the partner fails alone (a payload that crashes its
        handler) while it answers other calls starts an outage with its last failure, which
        the next answer ends; it is replayed once, not each time its schedule is spent. One
        that died in an outage begun before its last failure (its earlier attempts failed in
        it too), or with others, died of the outage and is replayed again: a partner that
        answers once and goes down again (flapping) kills it in a real outage. Until
        2026-12-07 any earlier replay left it dead. Read through `by_partner`. How many were
        replayed."""
        if not isinstance(failing_since, datetime):
            return 0
        with translate_errors():
            found = [
                doc
                async for doc in self._c.find(
                    {"partner_id": partner_id, "status": _DEAD},
                    {"final_at": 1, "kind": 1, "recovered_from": 1},
                )
                if _outage_dead(doc, failing_since)
            ]
            dead = [
                doc["_id"]
                for doc in found
                if not (
                    active
                    and len(found) == 1
                    and await self._failed_alone(partner_id, doc, failing_since)
                )
            ]
            if not dead:
                return 0
            result = await self._c.update_many(
                {"_id": {"$in": dead}, "status": _DEAD},
                _reopened(now, recovered_from=failing_since, recovered_at=now),
            )
        return result.modified_count

    async def _failed_alone(self, partner_id: str, doc: Doc, failing_since: datetime) -> bool:
        """Whether a dead delivery, the only one dead in the outage that began at
        `failing_since`, was replayed by an earlier recovery, began that outage with its last
        failure, and no other delivery was replayed for it (a racing recovery's): a payload
        the partner fails alone, not the outage's."""
        final = doc.get("final_at")
        if "recovered_from" not in doc or not isinstance(final, datetime):
            return False
        if not _same_ms(final, failing_since):
            return False
        other = await self._c.find_one(
            {"partner_id": partner_id, "recovered_from": failing_since, "_id": {"$ne": doc["_id"]}},
            {"_id": 1},
        )
        return other is None

    async def recovered(self, partner_id: str, now: datetime) -> None:
        """A partner recovering (its probe answered, or an admin re-enables it): its backlog
        is due now, not at the retry times it had when it was disabled (hours away). Those
        waiting behind an earlier delivery of their entity stay (the earlier one wakes
        them), and so does one never attempted (a new one is due at once already). Run
        after its outage's dead deliveries are replayed (`replay_outage`) and before it is
        active again (the recovery's last write): a recovery cut short between them leaves it
        disabled, and the next one runs this again (what is due already is left as it is).
        Read through `by_partner`."""
        due: builtins.list[Any] = []
        with translate_errors():
            query = {"partner_id": partner_id, "status": PENDING, "next_attempt_at": {"$gt": now}}
            async for doc in self._c.find(
                query, {"attempt_count": 1, "waiting_for": 1, "probe_failed_at": 1, "kind": 1}
            ):
                if "waiting_for" not in doc and (
                    doc.get("attempt_count", 0) > 0
                    or "probe_failed_at" in doc
                    or doc.get("kind") == _NOTICE
                ):
                    due.append(doc["_id"])
            if due:
                await self._c.update_many(
                    {"_id": {"$in": due}, "status": PENDING, "waiting_for": {"$exists": False}},
                    {"$set": {"next_attempt_at": now}, "$unset": {"probe_failed_at": ""}},
                )

    async def release_quiet_held(self, tenant: str, now: datetime) -> int:
        """The tenant's notifications its quiet hours hold (`held_for`) due now, to be judged
        again under the settings just saved (lifted or shortened quiet hours no longer hold
        them to the old period's end); how many. Read through the claims' index `due` alone
        (on SecantusDB a predicate no index has scans the collection): the pending ones not
        yet due, whose tenant and mark are read here. A settings save is rare; this reads the
        backlog waiting for a later time once."""
        held: builtins.list[Any] = []
        query = {
            "status": PENDING,
            "shard": {"$in": builtins.list(range(SHARDS))},
            "next_attempt_at": {"$gt": now},
        }
        with translate_errors():
            async for doc in self._c.find(query, {"tenant": 1, "held_for": 1}):
                if doc.get("tenant") == tenant and doc.get("held_for") == QUIET_HOURS:
                    held.append(doc["_id"])
            if not held:
                return 0
            return await self._release_quiet_held({"$in": held}, now)

    async def release_quiet_held_one(self, delivery_id: Any, now: datetime) -> int:
        """One notification the tenant's quiet hours hold, due now (judged under settings
        saved since); 0 if it is no longer held."""
        with translate_errors():
            return await self._release_quiet_held(delivery_id, now)

    async def _release_quiet_held(self, ids: Any, now: datetime) -> int:
        result = await self._c.update_many(
            {
                "_id": ids,
                "status": PENDING,
                "held_for": QUIET_HOURS,
                "next_attempt_at": {"$gt": now},
            },
            {"$set": {"next_attempt_at": now}},
        )
        return result.modified_count

    async def renew_leases(self, held: Mapping[str, str], lease_until: datetime) -> int:
        """Extend the leases a live worker still holds (delivery id → claim token)."""
        return await renew_held(self._c, held, IN_FLIGHT, lease_until)

    async def renew_lease(self, delivery_id: Any, token: str, lease_until: datetime) -> bool:
        """Extend one lease, if the claim under `token` still holds it."""
        return await renew_one(self._c, delivery_id, token, IN_FLIGHT, lease_until)

    async def rebase(self, now: datetime, waits_from: datetime) -> int:
        """After the gateway's time went back (a clock that ran fast, stepped right) to
        `waits_from` (`now` when the step's time is unknown): every pending delivery whose
        wait was set at a time still ahead of `now` (`updated_at`, written with its
        `next_attempt_at`) waits that wait from `waits_from` instead (a retry due "in 1 min"
        set on a clock an hour fast no longer waits an hour more; a Retry-After is waited
        whole again). How many deliveries moved. Read through the `due` index, shard by
        shard (the pending ones due after `now` only): called only after a step was seen,
        not at each start. Written guarded by what was read, so an attempt recorded
        meanwhile wins and another worker's rebase moves none twice. Leases are not touched
        here: each worker renews its own (another process's was taken with its own lease
        length). The schedules' rule (`ScheduleStore.rebase`)."""
        moved = 0
        with translate_errors():
            for shard in range(SHARDS):
                ahead = {"status": PENDING, "shard": shard, "next_attempt_at": {"$gt": now}}
                fields = {"next_attempt_at": 1, "updated_at": 1}
                for doc in await self._c.find(ahead, fields).to_list(None):
                    due, set_at = doc["next_attempt_at"], doc.get("updated_at")
                    if not isinstance(set_at, datetime) or set_at <= now:
                        continue  # set on the time as it is: a wait of its own
                    wait = max(due - set_at, timedelta())
                    guard = {"_id": doc["_id"], "status": PENDING, "next_attempt_at": due}
                    update = {"next_attempt_at": waits_from + wait, "updated_at": waits_from}
                    done = await self._c.update_one(
                        {**guard, "updated_at": set_at}, {"$set": update}
                    )
                    moved += done.modified_count
        return moved

    async def expire_leases(self, now: datetime) -> int:
        """In-flight deliveries whose worker died (or overran its lease) become pending again,
        due at once. A claim took them due (their next_attempt_at is past already); a probe
        takes its partner's first, due or not, and its partner may have recovered while it
        was in flight (the recovery makes pending deliveries due, not one in flight): it
        does not go back to a retry time hours away."""
        with translate_errors():
            result = await self._c.update_many(
                {"status": IN_FLIGHT, "lease_until": {"$lte": now}},
                {
                    "$set": {"status": PENDING, "updated_at": now},
                    "$min": {"next_attempt_at": now},
                    "$unset": _LEASE_FIELDS,
                },
            )
        return result.modified_count

    async def finish(
        self,
        delivery_id: str,
        token: str,
        fields: Mapping[str, Any],
        *,
        attempt: Mapping[str, Any] | None = None,
        counted: bool = True,
        unset: Sequence[str] = (),
        due_by: datetime | None = None,
    ) -> Doc | None:
        """Leave in_flight (to `fields["status"]`, written at `fields["updated_at"]`),
        recording an attempt; due at `due_by` at the latest; what waits for it in its
        action's line woken (`wake_waiting`). Its place in that line as stored (`order_key`,
        `seq`: one placed while in flight, by the action made ordered, has it though its
        claimed copy has not); None when the lease was lost to another worker (then nothing
        is written)."""
        update: Doc = {
            "$set": dict(fields),
            "$unset": {**_LEASE_FIELDS, **dict.fromkeys(unset, "")},
        }
        if due_by is not None:
            update["$min"] = {"next_attempt_at": due_by}
        if attempt is not None:
            update["$push"] = {"attempts": {"$each": [dict(attempt)], "$slice": -MAX_ATTEMPTS_KEPT}}
            if counted:
                update["$inc"] = {"attempt_count": 1}
                update["$set"]["attempts_made"] = attempt["n"]
        # A guarded update then a read by `_id`, each a point lookup: a `find_one_and_update`
        # SecantusDB writes with `{_id, $and: [filter]}`, which it matches against every
        # delivery of every tenant (14 ms at 100 deliveries, 465 ms at 10,000, each attempt).
        # The place is read after the write, which does not change it: one placed before is
        # there, as in the document before the write.
        lease = {"_id": delivery_id, "lease_owner": token, "status": IN_FLIGHT}
        with translate_errors():
            if not (await self._c.update_one(lease, update)).matched_count:
                return None
            place = {"order_key": 1, "seq": 1}
            found: Doc = await self._c.find_one({"_id": delivery_id}, place) or {
                "_id": delivery_id  # removed since: no line to wake
            }
        key, seq = found.get("order_key"), found.get("seq")
        if isinstance(key, str) and isinstance(seq, str):
            final = fields.get("status") in _FINAL
            try:
                await self.wake_waiting(key, delivery_id, seq, fields["updated_at"], final=final)
            except Exception as exc:  # written: what waits for it wakes at its own time
                log.warning("delivery %s: what waits for it is not woken: %s", delivery_id, exc)
        return found

    async def park(self, delivery_id: Any, token: str, reason: str, now: datetime) -> bool:
        """Set aside a delivery the worker cannot process: `parked`, with why. Reads and writes
        nothing else of the document, so a malformed one can be parked too; False when the
        lease was lost to another worker."""
        with translate_errors():
            result = await self._c.update_one(
                {"_id": delivery_id, "lease_owner": token, "status": IN_FLIGHT},
                {
                    "$set": {
                        "status": DeliveryStatus.PARKED.value,
                        "last_error": reason,
                        "final_at": now,
                        "updated_at": now,
                    },
                    "$unset": _LEASE_FIELDS,
                },
            )
        return result.modified_count == 1

    async def earlier_open(self, order_key: str, seq: str) -> Doc | None:
        """The latest earlier delivery of the same order key that is not final yet."""
        with translate_errors():
            return await self._c.find_one(
                {
                    "order_key": order_key,
                    "seq": {"$lt": seq},
                    "status": {"$in": [PENDING, IN_FLIGHT]},
                },
                {"status": 1, "next_attempt_at": 1, "lease_until": 1},
                sort=[("seq", DESCENDING)],
            )

    async def later_in_line(self, order_key: str, seq: str, newer: str, token: str) -> Doc | None:
        """What of the later deliveries of the same order key decides whether `seq`'s goes:
        one of a newer version (its `seq` from `newer` on) the partner took (`succeeded`),
        else a later one in flight under another claim than `token` (its outcome is not
        known yet; those of the same claim are sent after it); None when neither."""
        with translate_errors():
            sent = await self._c.find_one(
                {"order_key": order_key, "seq": {"$gte": newer}, "status": _SUCCEEDED},
                {"status": 1},
                sort=[("seq", DESCENDING)],
            )
            if sent is not None:
                return sent
            return await self._c.find_one(
                {
                    "order_key": order_key,
                    "seq": {"$gt": seq},
                    "status": IN_FLIGHT,
                    "lease_owner": {"$ne": token},
                },
                {"status": 1, "next_attempt_at": 1, "lease_until": 1},
                sort=[("seq", ASCENDING)],
            )

    async def wake_waiting(
        self, order_key: str, delivery_id: Any, seq: str, now: datetime, *, final: bool = True
    ) -> None:
        """The deliveries of the order key parked behind `delivery_id` (`waiting_for`), due
        now: once it is final, all of them; once its flight ends and it is pending again (a
        retry, a hold), those before it in the line (`seq`), which waited only for the
        outcome of its flight (`worker._in_line`): those after it wait for it still. Until
        2026-12-06 the one behind a later delivery in flight was not woken: it waited out
        that delivery's lease (90 s)."""
        query: Doc = {"order_key": order_key, "status": PENDING, "waiting_for": delivery_id}
        if not final:
            query["seq"] = {"$lt": seq}
        with translate_errors():
            await self._c.update_many(
                query, {"$set": {"next_attempt_at": now}, "$unset": {"waiting_for": ""}}
            )

    async def unpark(self, delivery_id: str, now: datetime) -> None:
        with translate_errors():
            await self._c.update_one(
                {"_id": delivery_id, "status": PENDING, "waiting_for": {"$exists": True}},
                {"$set": {"next_attempt_at": now}, "$unset": {"waiting_for": ""}},
            )

    async def drop_finished_before(self, before: datetime, *, dry_run: bool = False) -> int:
        """Deliveries in a final status, last changed before `before` (`gateway cleanup`)."""
        finals = [status.value for status in DeliveryStatus if status.final]
        return await drop_finished(self._c, finals, SHARDS, before, dry_run=dry_run)

    async def queue_stats(
        self, now: datetime, closed: Sequence[str] = ()
    ) -> tuple[int, int, datetime | None]:
        """(deliveries due now waiting for a worker, in flight, next_attempt_at of the oldest
        of those due). A delivery to a `closed` partner (disabled, or its circuit letting
        nothing through) waits for its partner, not for a worker (no claim takes it: its
        probe does, its recovery, or the circuit's next trial), and is not counted.

        Read shard by shard through the `due` index, so the cost follows the deliveries that
        are due, not the whole backlog: the ones waiting for a later attempt (a retry, an
        action's first attempt a day away) are not read. Counting every pending delivery
        instead made the embedded server read each of them every 15 s (80 ms of its CPU
        with 5,000 waiting, in one burst that every request behind it waited for). One
        aggregation per shard, its first stage the index's part alone (as for a claim:
        `admitted`)."""
        kept = _kept({"partner": closed})
        due_count, oldest = 0, None
        with translate_errors():
            for shard in range(SHARDS):
                due = {"status": PENDING, "shard": shard, "next_attempt_at": {"$lte": now}}
                pipeline: builtins.list[Doc] = [{"$match": due}]
                if kept:
                    pipeline.append({"$match": kept})
                pipeline.append(
                    {
                        "$group": {
                            "_id": None,
                            "due": {"$sum": 1},
                            "oldest": {"$min": "$next_attempt_at"},
                        }
                    }
                )
                cursor = await self._c.aggregate(pipeline)
                for stats in await cursor.to_list(None):
                    due_count += stats["due"]
                    if oldest is None or stats["oldest"] < oldest:
                        oldest = stats["oldest"]
            in_flight = await self._c.count_documents({"status": IN_FLIGHT})
        return due_count, in_flight, oldest


def _kept(excluded: Mapping[str, Sequence[str]]) -> Doc:
    """The filter of the deliveries a claim reads besides those of the tenants and partners
    `excluded` (`Admission`); a notification's partner is its channel's, asked when it is sent,
    so only its tenant counts."""
    kept = other_tenants(excluded)
    if partners := excluded.get("partner"):
        excluded_partner = {
            "partner_id": {"$in": builtins.list(partners)},
            "kind": {"$ne": _NOTICE},
        }
        kept["$nor"] = [excluded_partner]
    return kept


def attempts_made(doc: Doc) -> int:
    """How many attempts a delivery has made, replays or not (`attempts_made`, set with each
    counted attempt; a delivery stored before it was kept has only `attempt_count`)."""
    made = doc.get("attempts_made", doc.get("attempt_count", 0))
    return made if isinstance(made, int) else 0


def attempt_number(doc: Doc) -> int:
    """The number (`n`) of a delivery's next attempt in its history: one more than it has
    made, across replays (a replay restarts the schedule, `attempt_count`, not the count)."""
    return attempts_made(doc) + 1


def unsendable_attempt(doc: Doc, now: datetime, reason: str) -> Doc:
    """The attempt a delivery failed without a send records (its subscription removed, its
    request not buildable): no status, error `unsendable`, `reason` its message."""
    return {
        "n": attempt_number(doc),
        "at": now,
        "status": None,
        "error": "unsendable",
        "message": reason,
    }


def _reopened(now: datetime, **marks: Any) -> Doc:
    """The update that replays a delivery (an admin's replay, a recovery's): pending now,
    with a fresh schedule (`attempt_count`, the schedule's place, back to 0; its attempt
    history and `attempts_made` kept), `replayed_at` and `marks` set. An admin's (no
    `recovered_at` among the marks) unsets a recovery's `recovered_at`: its line does not
    outdate it (`worker._in_line`)."""
    unset = {"final_at": "", "waiting_for": "", "probe_failed_at": ""}
    if "recovered_at" not in marks:
        unset["recovered_at"] = ""
    return {
        "$set": {
            "status": PENDING,
            "next_attempt_at": now,
            "attempt_count": 0,
            "updated_at": now,
            "replayed_at": now,
            **marks,
        },
        "$unset": unset,
    }


def _outage_dead(doc: Doc, failing_since: datetime) -> bool:
    """A dead delivery (not a notification: it sends itself) that died since its partner
    began failing and was not replayed by a recovery of this outage already (`recovered_from`
    is its start; a replay by hand is no such recovery)."""
    final, recovered = doc.get("final_at"), doc.get("recovered_from")
    return (
        doc.get("kind") != _NOTICE
        and isinstance(final, datetime)
        and final >= failing_since
        and not (isinstance(recovered, datetime) and _same_ms(recovered, failing_since))
    )


def _same_ms(a: datetime, b: datetime) -> bool:
    """The same instant as the database holds it (to the millisecond; a time without its
    zone is UTC's)."""

    def ms(moment: datetime) -> int:
        return epoch_ms(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))

    return ms(a) == ms(b)


def _probe_failed(doc: Doc, now: datetime) -> bool:
    """A probe sent it and failed, and its turn (`next_attempt_at`) has not come back yet."""
    when = doc.get("next_attempt_at")
    return "probe_failed_at" in doc and isinstance(when, datetime) and when > now


def shard_of(delivery_id: str) -> int:
    return zlib.crc32(delivery_id.encode()) % SHARDS


def _query(filters: Mapping[str, Any]) -> Doc:
    picked = {FILTERS[k]: v for k, v in filters.items() if k in FILTERS and v is not None}
    return canonical_filters(picked)
