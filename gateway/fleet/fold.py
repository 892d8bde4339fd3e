"""Use case: the fold, which turns the fixes appended to each vehicle's track into its state
and events (SPEC §6 "append, then fold").

Every `gateway serve` / `gateway worker` process runs one. The vehicles are split into
`FOLD_SHARDS` shards; each process folds the vehicles of the shards it holds (leases in
MongoDB, `gateway/shares.py`, job "fleet-fold"). Its input is the fold's inbox
(`store/fleet.py`): numbered documents, one per append round (and one per odometer reading or
recorded service), read in number order from the lowest checkpoint of the shards held. It is
woken by its own process's appends (the doorbell) and otherwise polls for the others'.

A pass reads the next inbox documents up to the first gap (a number taken whose document has
not landed yet; given up after `missing_seconds`) and folds, per vehicle, what is new for it,
inbox document by inbox document (so the outcome does not depend on how many a pass read):
odometer readings and recorded services first, then the fixes in device-time order. Each fix
goes through the quality gates and the odometer (`state.py`); an accepted fix that is not
late also moves the last position and is run through the tenant's geofences and maintenance
plans (the `geo` evaluators). Then, in this order:

1. the refused fixes are flagged in the track (`mark_rejected`, with the reason), once the
   flags of held `future` fixes taken after all are taken back (`_VehicleRun.release`);
2. the events are stored (`store.events.insert_many`; ids derived from the vehicle, the
   type, what happened and the fix's device time, so storing them again is a no-op);
3. the relay's hook runs on them (fan-out, flow starter, assignment feed: idempotent);
4. the pass's states become the process's (in memory, per vehicle, with the inbox number
   they are folded to).

What is in memory is written in batches (SPEC §6 "state is persisted in batches with a
checkpoint"): a vehicle's `last_position` and `odometer_km` to its entity at least every
`entity_seconds` while it moves (only forward: guarded by the inbox number, and the odometer
by the newest reading folded, so a count that has not taken an admin's or a partner's reading
yet never replaces it; without an `entity.updated` event per fix), and every
`checkpoint_seconds` all of it: the entities, then the vehicles' states (`fleet`), then the
shards' checkpoints. A pass that finds nothing new writes everything at once, so a quiet fleet
is always written.

A process killed anywhere loses only memory: whoever takes its shards over reads the inbox
from their checkpoints and folds the same input again to the same states and the same
events, which stores nothing twice (a vehicle's state written after the checkpoint carries
its own inbox number, and what it already holds is skipped). The fold is deterministic for
that reason: it reads only the inbox, the track and the tenant's rules.

A vehicle whose fold raises an error of the code (a rule's bug, a value nobody expected: a
poison pill) is set aside for the batch instead of failing it for every vehicle, forever
(`_fold_or_set_aside`): its state stays as it was (its later input is folded on from there),
its items are recorded (`fold_failures`, after the batch's other writes, so that a batch that
fails and is folded again finds no record of a first try), counted and logged: its fixes stay
in the track, outside the odometer, geofences and plans (there is no replay: one could not
tell which fixes a retry or a crash had folded after all). Only errors of the code are set
aside (`POISON`); the database's and the network's, and the gateway's own refusals, still
fail the batch, which is tried again.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import logging
import math
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from gateway.clock import utcnow
from gateway.doorbell import Doorbell
from gateway.events import OnRelayed, event_document, mark_again, relay_all
from gateway.fleet import geofences, maintenance
from gateway.fleet.geofences import FenceState, Geofence
from gateway.fleet.maintenance import Plan, PlanState
from gateway.fleet.odometer import TrackPoint, may_rebaseline
from gateway.fleet.overview import vehicle_groups
from gateway.fleet.quality import Reason
from gateway.fleet.settings import MAX_RETENTION_DAYS, FleetSettings, FleetSettingsService
from gateway.fleet.state import (
    Rebaselined,
    VehicleState,
    at_reading,
    distance_after,
    fold_fix,
    is_behind,
    is_glitch,
    is_unchanged,
    rebaseline,
)
from gateway.metrics import Metrics
from gateway.shares import ShardedJob, ShardedLoop, Shares
from gateway.store import Doc, Store, derived_id
from gateway.store.entities import Folded
from gateway.store.fleet import SHARDS, FoldFailure, SavedState, fleet_id, shard_of
from gateway.store.positions import inbox_items, position_id, round_items

log = logging.getLogger(__name__)

FOLD_JOB: Final = "fleet-fold"
FOLD_SHARDS: Final = SHARDS
POSITION_EVENT: Final = "vehicle.position"
REJECTED_EVENT: Final = "vehicle.position.rejected"
# A vehicle's fixes refused for one reason are one run, announced once, until none has been
# refused for it for this long (of receipt time): then the next one starts a new run.
REJECTED_QUIET: Final = timedelta(hours=1)
_PURGE_SECONDS: Final = 3600.0
_FORGET_SECONDS: Final = 600.0  # a vehicle written and quiet this long leaves memory
_CLOCKS_APART: Final = timedelta(seconds=60)  # between processes' clocks, at most
# A fix refused `future` by at most this much (its time ahead of its arrival) is held, to be
# judged again once the device's later fixes agree with the gateway's time: the gateway's
# clock was behind (a host booted before NTP set it, an RTC kept in local time read as UTC:
# 3 h in Brazil). Further ahead is a device's clock gone wrong (a day, a GPS week rollover).
HOLD_AHEAD: Final = timedelta(hours=12)
MAX_HELD: Final = 1_000  # held fixes per vehicle, the newest kept (the state carries them)
# Readings from these origins may move an odometer back (an admin's correction).
AUTHORITATIVE: Final = ("admin",)

Key = tuple[str, str]  # (tenant, vehicle id)
_UNREAD: Final[Doc] = {}  # a vehicle whose entity the pass does not need (never written to)


POISON: Final = (
    ArithmeticError,
    LookupError,
    ValueError,
    TypeError,
    AttributeError,
    AssertionError,
    RecursionError,
)
"""What a vehicle's fold raising sets the vehicle aside for: errors of the code (an overflow,
a missing key, a value of the wrong type), which folding the same input again repeats. Any
other (the database's, the network's, a timeout, a cancellation, the gateway's own errors)
fails the batch, which is tried again."""


class TenantRules(Protocol):
    @property
    def geofences(self) -> Sequence[Geofence]: ...

    @property
    def plans(self) -> Sequence[Plan]: ...


class RulesSource(Protocol):
    async def for_tenant(self, tenant: str) -> TenantRules: ...


@dataclass(frozen=True, slots=True)
class FoldSettings:
    batch: int = 200  # inbox documents per read, at most
    # Fixes per pass, at most (but one document): a round holds up to 2,000 (InsertRounds).
    max_fixes: int = 20_000
    poll_seconds: float = 0.5
    min_interval: float = 0.1  # between passes: the appends of that time fold together
    missing_seconds: float = 30.0  # far beyond a round's deadlines (GATEWAY_DB_TIMEOUT_MS)
    entity_seconds: float = 10.0
    checkpoint_seconds: float = 30.0
    writes_per_pass: int = 50  # vehicles written (entity, state) per pass, but when quiet
    quiet_seconds: float = 1.0  # nothing new for this long: everything is written at once
    tick_seconds: float = 3600.0  # the plans' time intervals checked on parked vehicles
    # How long a vehicle's entity (its plate and groups, which rules apply) is trusted; the
    # events of a pass carry the entity as it is then (`_fresh_events`).
    vehicle_seconds: float = 30.0


# (tenant, event type) → the audience names of its active flows that name that type.
FlowsNaming = Callable[[str, str], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class Listener:
    """A subscription that asked for `vehicle.position`, at most one per `sample_s`, or a
    flow that names it (`flow:<name>`, `sample_s` 0: every accepted fix)."""

    id: str
    sample_s: float


@dataclass(frozen=True, slots=True)
class _Tenant:
    settings: FleetSettings
    rules: TenantRules
    listeners: Sequence[Listener]


@dataclass(slots=True)
class _Memory:
    """One vehicle as this process folded it: its state as of inbox number `through`, how far
    that is written (`saved`), and what its entity still has to get."""

    state: VehicleState
    through: int
    saved: int
    entity: Doc = field(default_factory=dict)
    entity_through: int = 0
    entity_reading_rev: int = 0  # the newest reading the entity's odometer has in it
    entity_position_at: datetime | None = None  # what its `last_position` is newer than
    # A first fold's starting odometer and the newest reading it has in it (`_VehicleRun`).
    start: tuple[float, int] | None = None
    written_at: float = 0.0  # when its entity was last written (monotonic)
    # When the oldest of `entity`'s fields were folded (monotonic; 0 while it has none).
    entity_since: float = 0.0
    touched: float = 0.0
    # Its own interval within [½, 1] × `entity_seconds`: vehicles written together (a quiet
    # pass, a checkpoint) come due again spread out, not all at once.
    entity_seconds: float = 0.0
    # Where the vehicle was when the fold last knew which fences apply to it (its entity read
    # after its fixes so far were received, or its tenant had no fence): a fence that applies
    # to it with no state for it yet (its group changed while the fold trusted the entity it
    # had read, a fence's group changed, a new fence) judges its first fix from there, so a
    # crossing made meanwhile is announced late, not lost (`_VehicleRun._cross_fences`).
    anchor: TrackPoint | None = None


@dataclass(slots=True)
class _Pass:
    """What folding one vehicle's new input produced, written in the order the module
    docstring gives."""

    key: Key
    state: VehicleState
    through: int
    fix_ids: list[str] = field(default_factory=list)
    entries: list[Doc] = field(default_factory=list)  # its events, before they meet the entity
    rejected: dict[str, str] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)  # held fixes taken after all: unflagged
    entity_fields: Doc = field(default_factory=dict)
    position_at: datetime | None = None  # what its last position is newer than (`Folded`)
    start: tuple[float, int] | None = None
    lags: list[float] = field(default_factory=list)
    # Its counts ((counter, label) → n), counted once the pass is written: a pass folded
    # again after a failure counts nothing twice.
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    gone: bool = False  # the vehicle was deleted: forgotten, its state dropped
    # The fences that apply to the vehicle were known as of its fixes (`_Memory.anchor`): its
    # entity was read after they were received, or its tenant has no fence; and it `moved`
    # (a fix in order ran through them: each fence that applies has its state).
    confirmed: bool = False
    moved: bool = False
    scope: tuple[str, frozenset[str]] | None = None  # the plate and groups it was folded with
    # Its fold raised (`Fold._set_aside`): what is recorded; the state stays as it was.
    failure: Doc | None = None


class Fold(ShardedJob):
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        settings: FleetSettingsService,
        rules: RulesSource,
        *,
        on_relayed: OnRelayed,
        doorbell: Doorbell,
        shares: Shares | None = None,
        config: FoldSettings = FoldSettings(),
        flows: FlowsNaming | None = None,
    ) -> None:
        self._store = store
        self._flows = flows
        self._metrics = metrics
        self._settings = settings
        self._rules = rules
        self._on_relayed = on_relayed
        self._doorbell = doorbell  # rung by the append after every round
        self._config = config
        self._purge_at = 0.0
        self._counters = {
            "fixes": metrics.fold_fixes,
            "rejected": metrics.fold_rejected,
            "readings": metrics.fold_readings,
            "failures": metrics.fold_vehicle_failures,
        }
        # A vehicle's batch set aside → its exception, for the log once it is recorded.
        self._tracebacks: dict[tuple[Key, int], BaseException] = {}
        self._reading = config.batch  # inbox documents to read next (`_bounded`)
        self._tick_at = 0.0
        self._through: dict[int, int] = {}  # per shard held: the inbox number folded to
        self._checkpointed: dict[int, int] = {}  # per shard held: the checkpoint written
        self._saved_at = time.monotonic()
        self._folded_at = 0.0  # when a pass last found something new (monotonic)
        self._checkpoint: dict[int, int] | None = None  # per shard: the one under way
        self._to_save: list[Key] = []  # its vehicles not written yet
        self._memory: dict[Key, _Memory] = {}
        # Vehicles whose folded fields a write failed to store (a document held by a dead
        # process's transaction, a database down) → since when they wait (monotonic): the
        # waiting gauge counts them as it counts the inbox documents not folded yet.
        self._unwritten: dict[Key, float] = {}
        self._vehicles: dict[str, tuple[float, Doc | None]] = {}
        self._gaps: dict[int, float] = {}  # inbox number → when it was first found missing
        # The newest receipt of a fix (or tick) in the inbox documents read, and the number of
        # the last of them: a round numbered after it received its fixes after it, give or
        # take `MAX_WAIT_SECONDS` (a bound for the search of a dead round's fixes).
        self._received: tuple[int, datetime] | None = None
        # `shares` None: every shard (a single fold, or a test driving it).
        self._loop = ShardedLoop(
            "fleet fold",
            shares,
            self.run_pass,
            doorbell=doorbell,
            poll_seconds=config.poll_seconds,
            min_interval=config.min_interval,
            on_shards=metrics.fold_shards.set,
            before_release=self._flush,
        )

    def wake(self) -> None:
        self._doorbell.ring()

    async def fold_once(self, shards: Collection[int] | None = None) -> int:
        """Fold the next inbox documents of these shards (all when None), one batch; how
        many documents were taken (0: nothing new, or the next one is still missing)."""
        wanted = frozenset(range(FOLD_SHARDS) if shards is None else shards)
        await self._hold(wanted)
        start = min(self._through[s] for s in wanted)
        docs = await self._store.fleet.after(start, self._reading)
        self._metrics.measured(self._metrics.fold_oldest_waiting, self._waiting(docs))
        taken, gap = self._contiguous(start, docs, self._store.fleet.last_seen)
        if gap is not None and not taken:
            # Fixes a missing round stored were received before the next document was written
            # (before now, when no document follows: the gap is at the end of the inbox).
            written_by = next((d["at"] for d in docs if d["_id"] == gap[1]), utcnow())
            if await self._give_up(gap, written_by, wanted):
                return 0
            return await self.fold_once(shards)
        taken = self._bounded(taken)
        if not taken:
            return 0
        end = int(taken[-1]["_id"])
        self._remember_receipts(taken)
        groups: dict[Key, list[tuple[int, Doc]]] = {}
        ticks: list[tuple[int, Doc]] = []
        for doc in taken:
            for item in inbox_items(doc):
                if item.get("k") == "tick":
                    ticks.append((int(doc["_id"]), item))
                    continue
                shard = item.get("shard")
                if shard in wanted and doc["_id"] > self._through[shard]:
                    key = (str(item["tenant"]), str(item["vehicle"]))
                    groups.setdefault(key, []).append((int(doc["_id"]), item))
        for seq, tick in ticks:  # the clock: every vehicle of the tenant in these shards
            for key in await self._vehicles_of(str(tick["tenant"]), wanted):
                if seq > self._through[_shard(key)]:
                    groups.setdefault(key, []).append((seq, tick))
        await self._remember(groups)
        tenants = {tenant: await self._tenant(tenant) for tenant in sorted({t for t, _ in groups})}
        # A vehicle's entity is needed for the rules that apply to it (its plate and groups)
        # and for a first fold (its registered odometer); the events get a fresh one anyway.
        needed = [
            vehicle
            for tenant, vehicle in groups
            if tenants[tenant].rules.geofences
            or tenants[tenant].rules.plans
            or self._memory[(tenant, vehicle)].state.last is None
        ]
        vehicles, read = await self._vehicle_docs(needed, fresh=_serviced(groups))
        # (read now: after every fix of the batch was received)
        known = read | {v for t, v in groups if not tenants[t].rules.geofences}
        self._tracebacks.clear()  # a batch that failed before its writes: folded again
        passes = await asyncio.gather(
            *(
                self._fold_or_set_aside(
                    key, items, tenants[key[0]], vehicles.get(key[1], _UNREAD), key[1] in known
                )
                for key, items in groups.items()
            )
        )
        await self._write([p for p in passes if p is not None])
        for shard in wanted:
            self._through[shard] = max(self._through[shard], end)
        low = min(self._through.values())
        self._gaps = {n: at for n, at in self._gaps.items() if n > low}
        return len(taken)

    def _waiting(self, docs: Sequence[Doc]) -> float:
        """How long the oldest input not folded and written yet has waited: the first inbox
        document read (not folded yet), or folded fields a write failed to store."""
        oldest = docs[0].get("at") if docs else None
        age = (utcnow() - oldest).total_seconds() if isinstance(oldest, datetime) else 0
        if self._unwritten:
            age = max(age, time.monotonic() - min(self._unwritten.values()))
        return max(age, 0.0)

    async def run_until_idle(self, shards: Collection[int] | None = None) -> int:
        """Fold until nothing new is left, then write everything (tests, and a quiet pass);
        after this process's appends in flight have reached the inbox (waiting for them at
        most `quiet_seconds`: a round may be stuck on the database)."""
        await self._store.positions.inserts.settled(self._config.quiet_seconds)
        total = 0
        while folded := await self.fold_once(shards):
            total += folded
        await self._save(force=True)
        return total

    async def purge_expired(self) -> int:
        """Drop the fixes of tenants that keep them for fewer days than the TTL index does;
        how many went. Cut at the expiry's time (`Expiry.now`), which a step of the clock
        forward does not move before its time."""
        purged = 0
        now = self._store.expiry.now()
        for doc in await self._store.fleet_settings.shorter_retention(MAX_RETENTION_DAYS):
            before = now - timedelta(days=int(doc["retention_days"]))
            purged += await self._store.positions.purge(str(doc["_id"]), before)
        return purged

    async def run_pass(
        self, shards: Collection[int] | None = None, until: float = math.inf
    ) -> None:
        """One pass of the loop: fold what is new (until nothing is, or, once a batch is done,
        past `until`: monotonic, the loop's next renewal of the shards), writing on the way as
        often as the settings ask, and everything once nothing new has come for
        `quiet_seconds`; the holder of shard 0 (or a fold with every shard) also ticks the
        fold's clock (every `tick_seconds`: the tenants with time-based plans) and purges what
        tenants keep for fewer days than the TTL index does."""
        now = time.monotonic()
        while await self.fold_once(shards):
            self._folded_at = now = time.monotonic()
            await self._save(force=False)
            if time.monotonic() >= until:
                break
        await self._save(force=now - self._folded_at >= self._config.quiet_seconds)
        if time.monotonic() >= self._tick_at and (shards is None or 0 in shards):
            self._tick_at = time.monotonic() + self._config.tick_seconds
            tenants = await self._store.fleet_rules.plans.tenants_with_time()
            await self._store.fleet.push_ticks(tenants, utcnow())
        if time.monotonic() >= self._purge_at and (shards is None or 0 in shards):
            self._purge_at = time.monotonic() + _PURGE_SECONDS
            if purged := await self.purge_expired():
                log.info("dropped %d fixes past their tenants' retention", purged)

    # -- the inbox ------------------------------------------------------------------------

    def _contiguous(
        self, start: int, docs: Sequence[Doc], last: int
    ) -> tuple[list[Doc], tuple[int, int] | None]:
        """The documents numbered from `start + 1` on without a gap, and the first gap that
        has been missing for `missing_seconds` (numbers `[from, to)`: taken by a round that
        never wrote its document), if that is what stops them. A number is waited for that
        long because its round may still be being written. With no document found, the
        numbers taken up to `last` (the counter, read before the documents) are such a gap
        too: the end of the inbox, where a round killed after its insert, with no round after
        it (a quiet fleet), would otherwise wait for one."""
        expected, now = start + 1, time.monotonic()
        if not docs and last > start:
            for missing in range(expected, last + 1):
                self._gaps.setdefault(missing, now)
            return [], self._expired(expected, last + 1, now)
        taken: list[Doc] = []
        for doc in docs:
            seq = int(doc["_id"])
            if seq > expected:
                # Every gap in sight starts its wait now (several rounds lost at once, e.g.
                # processes killed together, are given up together, not one wait after another).
                present = [start, *(int(d["_id"]) for d in docs)]
                for low, high in itertools.pairwise(present):
                    for missing in range(low + 1, high):
                        self._gaps.setdefault(missing, now)
                return taken, self._expired(expected, seq, now)
            taken.append(doc)
            expected = seq + 1
        return taken, None

    def _expired(self, low: int, high: int, now: float) -> tuple[int, int] | None:
        """The missing numbers from `low` on (below `high`) that have each been waited for
        `missing_seconds`: the first one still within its wait ends them (a number taken a
        moment ago beside a long-lost one is a round in flight, not given up with it)."""
        end = low
        while end < high and now - self._gaps[end] >= self._config.missing_seconds:
            end += 1
        return (low, end) if end > low else None

    def _bounded(self, docs: list[Doc]) -> list[Doc]:
        """The first documents up to `max_fixes` fixes (one at least); the next read asks for
        as many documents as that many fixes fill, going by these."""
        fixes, taken = 0, 0
        for doc in docs:
            count = sum(len(item.get("fixes") or ()) or 1 for item in doc.get("items") or ())
            if taken and fixes + count > self._config.max_fixes:
                break
            fixes, taken = fixes + count, taken + 1
        if taken:
            per_doc = max(fixes / taken, 1.0)
            self._reading = max(1, min(self._config.batch, int(self._config.max_fixes / per_doc)))
        return docs[:taken]

    async def _give_up(
        self, gap: tuple[int, int], written_by: datetime, wanted: frozenset[int]
    ) -> bool:
        """Numbers missing for `missing_seconds`, given up: first make sure no other fold went
        past them (this process lost its shards for a while: then it starts again from their
        checkpoints, and True); then write their documents, with the fixes each number's
        round stored (its process died after the insert: they carry the number, and were
        received before the next number's document was written, `written_by`) or none, so
        that every fold reads them instead of waiting again, and a round that writes its
        document under one after all hands on what it lacks under a new number instead of
        landing where no fold reads."""
        if await self._resync(wanted):
            return True
        after = None
        if self._received is not None and self._received[0] < gap[0]:
            after = self._received[1] - _CLOCKS_APART
        found = await self._store.positions.of_rounds(
            range(*gap), written_by + _CLOCKS_APART, after
        )
        for n, stored in found.items():  # usually one: a process dies in one round at a time
            if not await self._store.fleet.give_up(n, round_items(stored)):
                continue  # its document landed meanwhile: it stands
            self._metrics.fold_fixes.labels("missing").inc()
            self._metrics.fold_fixes.labels("recovered").inc(len(stored))
            log.warning(
                "fleet fold: inbox number %d never written; given up, with the %d fixes its "
                "round stored",
                n,
                len(stored),
            )
        return False

    def _remember_receipts(self, docs: Sequence[Doc]) -> None:
        last, newest = self._received or (0, None)
        for doc in docs:
            for item in doc.get("items") or ():
                at = item.get("at")
                if item.get("k") in ("fixes", "tick") and isinstance(at, datetime):
                    newest = at if newest is None else max(newest, at)
        if newest is not None:  # the highest number read, even after going back (`_resync`)
            self._received = (max(last, int(docs[-1]["_id"])), newest)

    async def _hold(self, wanted: frozenset[int]) -> None:
        """Memory follows the shards held: a shard let go is forgotten (its new holder folds
        on from the checkpoint), a shard taken starts from its checkpoint."""
        lost = set(self._through) - wanted
        if lost:
            self._forget(lost)
        new = wanted - set(self._through)
        if new:
            found = await self._store.fleet.checkpoints(new)
            self._forget(new)
            self._through.update(found)
            self._checkpointed.update(found)

    async def _resync(self, wanted: frozenset[int]) -> bool:
        """Whether a shard's written checkpoint is past this process's memory: it was folded
        further elsewhere (this process lost it for a while), so its memory is dropped and
        it starts again from that checkpoint."""
        found = await self._store.fleet.checkpoints(wanted)
        behind = {s for s, n in found.items() if n > self._through.get(s, 0)}
        if behind:
            self._forget(behind)
            for shard in behind:
                self._through[shard] = self._checkpointed[shard] = found[shard]
        return bool(behind)

    def _forget(self, shards: Collection[int]) -> None:
        for key in [k for k in self._memory if _shard(k) in shards]:
            del self._memory[key]
            self._unwritten.pop(key, None)
        for shard in shards:
            self._through.pop(shard, None)
            self._checkpointed.pop(shard, None)
            # Not passed by the checkpoint under way: its vehicles in that one are forgotten
            # (unwritten), even if the shard is held again before the checkpoint is done.
            if self._checkpoint is not None:
                self._checkpoint.pop(shard, None)

    async def _vehicles_of(self, tenant: str, shards: frozenset[int]) -> list[Key]:
        """The vehicles of a tenant in these shards that one of its time-based plans applies
        to (a tick's: whether they ever sent a fix or not)."""
        plans = [p for p in (await self._rules.for_tenant(tenant)).plans if p.every_days]
        if not plans:
            return []
        keys = []
        for doc in await self._store.entities.vehicle_refs(tenant):
            key = (tenant, str(doc["_id"]))
            data = doc.get("data") or {}
            plate, groups = str(data.get("plate") or doc.get("nk") or ""), _groups(data)
            if _shard(key) in shards and any(p.applies_to(plate, groups) for p in plans):
                keys.append(key)
        return keys

    async def _remember(self, groups: Mapping[Key, Sequence[tuple[int, Doc]]]) -> None:
        """The vehicles' states this process does not hold in memory yet, from `fleet`."""
        missing = [key for key in groups if key not in self._memory]
        if not missing:
            return
        found = await self._store.fleet.states(missing)
        for key in missing:
            doc = found.get(key) or {}
            through = int(doc.get("through") or 0)
            spread = 0.5 + zlib.crc32(fleet_id(*key).encode()) % 1000 / 2000
            state = VehicleState.from_doc(doc.get("state"))
            self._memory[key] = _Memory(
                state,
                through,
                through,
                entity_seconds=self._config.entity_seconds * spread,
                anchor=state.last,
            )

    async def _vehicle_docs(
        self, ids: Iterable[str], fresh: Collection[str] = ()
    ) -> tuple[dict[str, Doc | None], set[str]]:
        """The vehicles' entities (plate and groups for the rules, the registered odometer for
        a first fold), trusted for `vehicle_seconds`; a vehicle that does not exist is None.
        And the ids of those read now (not as cached).

        Those in `fresh` (their input carries a service) are read as they are now, not as
        cached: the recorder checked the plan a service names on the vehicle a moment ago
        (moved into the plan's group, then serviced; one ERP write with both), and the plans
        that apply now take a service for every plan."""
        now = time.monotonic()
        wanted = set(ids)
        stale = [
            i
            for i in wanted
            if i in fresh or i not in self._vehicles or self._vehicles[i][0] <= now
        ]
        if stale:
            found = await self._store.entities.vehicles(stale)
            until = now + self._config.vehicle_seconds
            for vehicle in stale:
                self._vehicles[vehicle] = (until, found.get(vehicle))
        if len(self._vehicles) > 4 * max(len(self._memory), 1000):
            self._vehicles = {k: v for k, v in self._vehicles.items() if v[0] > now}
        return {i: self._vehicles[i][1] for i in wanted}, set(stale)

    # -- one vehicle ------------------------------------------------------------------------

    async def _fold_or_set_aside(
        self,
        key: Key,
        items: Sequence[tuple[int, Doc]],
        tenant_view: _Tenant,
        vehicle: Doc | None,
        known: bool = False,
    ) -> _Pass | None:
        """`_fold`; but a vehicle whose fold raises an error of the code (a rule's bug, a value
        nobody expected: a poison pill) is set aside instead of failing the batch of every
        vehicle, again and again. The database's errors still fail the batch (tried again)."""
        try:
            return await self._fold(key, items, tenant_view, vehicle, known)
        except POISON as exc:
            return self._set_aside(key, items, exc)

    def _set_aside(self, key: Key, items: Sequence[tuple[int, Doc]], exc: Exception) -> _Pass:
        """A vehicle's batch whose fold raised: its state stays as it was before the batch,
        folded on from there by the next ones (it skips these items, as if refused), and the
        items are recorded (`_write`) for an operator to see."""
        memory = self._memory[key]
        new = _unfolded(items, memory.through)
        numbers = sorted({seq for seq, _ in new})
        if not numbers:  # nothing of this batch was folded: not the input's fault
            raise exc
        error = "".join(traceback.format_exception_only(exc)).strip()
        # Its readings skipped too, the vehicle's odometer is the count's again.
        readings = [item for _, item in new if item.get("k") == "reading"]
        state = _with(memory.state, reading_rev=_newest_reading(memory.state, readings))
        folding = _Pass(key, state, numbers[-1])
        folding.failure = {
            "through": numbers[-1],
            "inbox": numbers,
            "fixes": [str(item["id"]) for _, item in new if item.get("k") == "fix"],
            # What the fold was given (a tick is the tenant's clock, not the vehicle's input).
            "items": [item for _, item in new if item.get("k") != "tick"],
            "reason": type(exc).__name__,
            "error": error[:2000],
            "at": utcnow(),
        }
        folding.counts["failures", type(exc).__name__] += 1
        self._tracebacks[key, numbers[-1]] = exc
        return folding

    async def _fold(
        self,
        key: Key,
        items: Sequence[tuple[int, Doc]],
        tenant_view: _Tenant,
        vehicle: Doc | None,
        known: bool = False,
    ) -> _Pass | None:
        memory = self._memory[key]
        new = _unfolded(items, memory.through)
        if not new:
            return None
        tenant = key[0]
        folding = _Pass(key, memory.state, max(seq for seq, _ in new))
        deleted = any(item.get("k") == "deleted" for _, item in new)
        if deleted or vehicle is None or vehicle.get("tenant", tenant) != tenant:
            # Deleted (the deletion relayed, or found on reading the vehicle): its input goes,
            # nothing to tell; the fixes the append took meanwhile stay in the track.
            folding.gone = True
            folding.counts["fixes", "deleted"] += sum(item.get("k") == "fix" for _, item in new)
            return folding
        # Inbox document by inbox document, as separate passes would: what the fold makes of
        # the input does not depend on how many documents a pass happened to read (a fold
        # that takes over mid-stream repeats the events of the one it replaces, same ids).
        in_docs: list[dict[str, list[Doc]]] = []
        for _, in_doc in itertools.groupby(new, key=_seq):
            kinds: dict[str, list[Doc]] = {"fix": [], "reading": [], "service": [], "tick": []}
            for _, item in in_doc:
                kinds.setdefault(str(item.get("k")), []).append(item)
            kinds["fix"].sort(key=_fix_order)
            in_docs.append(kinds)
        fixes = [fix for kinds in in_docs for fix in kinds["fix"]]  # in the order folded
        folding.fix_ids = [f["id"] for f in fixes]
        folding.confirmed = known
        run = _VehicleRun(
            self, folding, vehicle, tenant_view.settings, tenant_view.rules, tenant_view.listeners
        )
        run.anchor = memory.anchor
        run.track, run.covered = await self._track_window(
            key, memory.state, fixes, folding.fix_ids, folding.through
        )
        run.pending = set(folding.fix_ids)
        now = utcnow()
        for kinds in in_docs:
            run.next_document()
            for reading in kinds["reading"]:
                run.reading(reading)
            for service in kinds["service"]:
                run.service(service)
            for fix in sorted([*run.release(kinds["fix"]), *kinds["fix"]], key=_fix_order):
                await run.fix(fix, now)
                # A fix inside a tenant's large polygon fences walks their edges (up to some
                # 50 ms, rule_service.py MAX_TENANT_POSITIONS): the loop every tenant's requests
                # share gets its turn between fixes, not after a whole batch.
                await asyncio.sleep(0)
            for tick in kinds["tick"]:
                run.tick(tick["at"])
        run.finish()
        return folding

    async def _tenant(self, tenant: str) -> _Tenant:
        """What a batch's vehicles of one tenant share, read once per batch: the tenant's
        settings and rules (cached by their services), and its active subscriptions and flows
        that name `vehicle.position` (opt-in: a family or "*" does not ask for it), as the
        fan-out and the flow starter read them (`actions/filters.py` `wanted_by`)."""
        listeners = [
            Listener(str(sub["_id"]), float(sub.get("sample_seconds") or 0))
            for sub in await self._store.subscriptions.active(tenant)
            if POSITION_EVENT in sub.get("event_types", ())
        ]
        if self._flows is not None:
            listeners += [Listener(name, 0.0) for name in await self._flows(tenant, POSITION_EVENT)]
        return _Tenant(
            await self._settings.for_fold(tenant), await self._rules.for_tenant(tenant), listeners
        )

    async def _track_window(
        self,
        key: Key,
        state: VehicleState,
        fixes: Sequence[Doc],
        exclude: Sequence[str],
        through: int,
    ) -> tuple[list[TrackPoint], datetime | None]:
        """The accepted fixes a late fix of the pass may have as neighbours, in device-time
        order, and the device time from which on they are all there (None: none). The newest
        ones the state keeps cover what is newer than the oldest of them; the pass's fixes
        older than that find theirs in the track, read at once around them (unless there are
        too many to hold: then each one asks the track on its own). The pass's fixes join
        the list as they are accepted (`_VehicleRun.fix`)."""
        if state.last is None:  # nothing folded before: the pass's own fixes are all there is
            return [], datetime.min.replace(tzinfo=UTC)
        track = list(state.recent) or [state.last]
        covered = track[0].t
        late = [f["t"] for f in fixes if f["t"] <= covered]
        if not late:
            return track, covered
        start, end = min(late), max(late)
        docs = await self._store.positions.window(
            key[0], key[1], start, end, exclude, through=through
        )
        if docs is None:
            return track, covered
        points = [_point(doc) for doc in docs if doc["t"] < covered]
        # The window starts with the accepted fix just before it, if there is one: from
        # there on, every accepted fix is held.
        if points and points[0].t < start:
            return points + track, points[0].t
        return points + track, datetime.min.replace(tzinfo=UTC)

    async def neighbours(
        self, key: Key, t: datetime, exclude: Collection[str], through: int
    ) -> tuple[TrackPoint | None, TrackPoint | None]:
        """A late fix's neighbours in the track: accepted, and folded by the inbox number
        `through` (the last of the pass), not stored by a later round the fold has not taken."""
        before, after = await self._store.positions.neighbours(key[0], key[1], t, exclude, through)
        return (
            None if before is None else _point(before),
            None if after is None else _point(after),
        )

    # -- the writes -------------------------------------------------------------------------

    async def _write(self, passes: Sequence[_Pass]) -> None:
        """A batch's flags and events, then its failures (last: a batch whose writes fail is
        folded again, perhaps without failing), then its states into memory."""
        for tenant in {p.key[0] for p in passes if p.released}:
            # (first: a fix taken back after all is flagged with its new reason below)
            released = {k for p in passes if p.key[0] == tenant for k in p.released}
            await self._store.positions.unmark_rejected(tenant, released)
        for tenant in {p.key[0] for p in passes if p.rejected}:
            rejected = {k: v for p in passes if p.key[0] == tenant for k, v in p.rejected.items()}
            await self._store.positions.mark_rejected(tenant, rejected)
        events = await self._events(passes)
        if events:
            held = await self._store.events.insert_many(events)
            mark_again(event for event in events if event["_id"] in held)
            await relay_all(self._on_relayed, events)
        gone = [p.key for p in passes if p.gone]
        await self._store.fleet.drop_states(gone)
        await self._record_failures([p for p in passes if p.failure is not None])
        now = time.monotonic()
        for key in gone:
            del self._memory[key]
            self._unwritten.pop(key, None)
            self._vehicles[key[1]] = (now + self._config.vehicle_seconds, None)
        for folding in passes:
            if not folding.gone:
                self._into_memory(folding, now)
        for folding in passes:
            for (counter, label), n in folding.counts.items():
                self._counters[counter].labels(label).inc(n)
        for event in events:
            self._metrics.fold_events.labels(event["type"]).inc()

    def _into_memory(self, folding: _Pass, now: float) -> None:
        memory = self._memory[folding.key]
        memory.state, memory.through, memory.touched = folding.state, folding.through, now
        if folding.confirmed and folding.moved:
            memory.anchor = folding.state.last
        if folding.entity_fields:
            if not memory.entity:
                memory.entity_since = now
            memory.entity.update(folding.entity_fields)
            memory.entity_through = folding.through
            memory.entity_reading_rev = folding.state.reading_rev
            if "last_position" in folding.entity_fields:
                memory.entity_position_at = folding.position_at
        if folding.start is not None:
            memory.start = folding.start
        for lag in folding.lags:
            self._metrics.fold_lag.observe(lag)

    async def _record_failures(self, failed: Sequence[_Pass]) -> None:
        """The vehicles' batches set aside, recorded (then logged, with the traceback)."""
        if not failed:
            return
        await self._store.fleet.record_failures(
            [FoldFailure(p.key[0], p.key[1], p.failure) for p in failed if p.failure]
        )
        for p in failed:
            exc = self._tracebacks.pop((p.key, p.through), None)
            log.error(
                "fleet fold: folding vehicle %s of tenant %s failed (%s); its items of inbox "
                "numbers %s set aside (recorded in `fold_failures`), the fold "
                "goes on",
                p.key[1],
                p.key[0],
                p.failure and p.failure["error"],
                p.failure and p.failure["inbox"],
                exc_info=exc,
            )

    async def _events(self, passes: Sequence[_Pass]) -> list[Doc]:
        """The passes' events, each carrying its vehicle as it is now (read fresh: its
        revision and data), with the fold's last position and odometer as of the event. A
        vehicle deleted meanwhile has none. A write of the vehicle may land (and be
        delivered) between this read and their fan-out: in an ordered action's line they are
        occurrences, never outdated by it (`actions/ordering.py` `hands_over_state`)."""
        keys = sorted({p.key for p in passes if p.entries})
        if not keys:
            return []
        fresh = await self._store.entities.vehicles([vehicle for _, vehicle in keys])
        until, now = time.monotonic() + self._config.vehicle_seconds, utcnow()
        events = []
        for folding in passes:
            if not folding.entries:  # not read here: its cached entity stands
                continue
            tenant, vehicle_id = folding.key
            self._vehicles[vehicle_id] = (until, fresh.get(vehicle_id))
            doc = fresh.get(vehicle_id)
            if doc is None or doc.get("tenant") != tenant:
                continue
            # read after the pass's fixes were received: as they were folded, or it changed
            folding.confirmed = folding.confirmed or _scope(doc) == folding.scope
            for entry in folding.entries:
                audience = entry.pop("audience", None)
                entry["data"] = {**(doc.get("data") or {}), **entry["data"]}
                entry["entity_rev"] = doc.get("rev", 0)
                event = event_document(tenant, doc, entry, now)
                if audience is not None:
                    event["audience"] = audience
                events.append(event)
        return events

    async def _save(self, *, force: bool) -> None:
        """Write what memory holds, at most `writes_per_pass` vehicles a call unless `force`
        (so that a fleet's writes do not hold its folds up): a checkpoint under way first
        (begun every `checkpoint_seconds`: each vehicle folded since the last one gets its
        entity, then its state; the shards' checkpoints are written once every one of them
        is), then the entities that are due (every `entity_seconds`, the longest waiting
        first). `force` writes everything (a quiet pass, a stop, a test), still
        `writes_per_pass` vehicles a write."""
        now = time.monotonic()
        budget: int | None = None
        if force:
            if self._checkpoint is not None:  # the one under way, then one of everything
                await self._finish_checkpoint()
            self._begin_checkpoint(now)
            await self._finish_checkpoint()
        else:
            if self._checkpoint is None and now - self._saved_at >= self._config.checkpoint_seconds:
                self._begin_checkpoint(now)
            budget = self._config.writes_per_pass
            if self._checkpoint is not None:
                budget = await self._continue_checkpoint(budget)
            if budget is not None and budget <= 0:
                return
        due = (
            (memory.written_at, key)
            for key, memory in self._memory.items()
            if memory.entity and (force or now - memory.written_at >= memory.entity_seconds)
        )
        writing = list(due) if budget is None else heapq.nsmallest(budget, due)
        step = self._config.writes_per_pass
        for start in range(0, len(writing), step):
            chunk = writing[start : start + step]
            await self._write_entities([(key, self._memory[key]) for _, key in chunk], now)

    def _begin_checkpoint(self, now: float) -> None:
        self._checkpoint = dict(self._through)
        self._to_save = [k for k, m in self._memory.items() if m.through > m.saved or m.entity]
        self._saved_at = now

    async def _finish_checkpoint(self) -> None:
        """The checkpoint under way, to its end, `writes_per_pass` vehicles a write: each
        write has the database deadline to itself, and one that fails leaves only the rest
        for the next try. In one write, the states of a fleet that went quiet (1,000 vehicles
        after a takeover) outlasted a 3 s deadline on a loaded SecantusDB, and each retry
        wrote all of them again beside what the server still ran of the last one."""
        while self._checkpoint is not None:
            await self._continue_checkpoint(self._config.writes_per_pass)

    async def _continue_checkpoint(self, budget: int) -> int:
        """The next `budget` vehicles of the checkpoint under way, and the checkpoint itself
        once none is left; what is left of the budget."""
        assert self._checkpoint is not None
        chunk = self._to_save[:budget]
        saving = [(key, self._memory[key]) for key in chunk if key in self._memory]
        now = time.monotonic()
        await self._write_entities([(k, m) for k, m in saving if m.entity], now)
        states = [(m, SavedState(k[0], k[1], m.state.to_doc(), m.through)) for k, m in saving]
        await self._store.fleet.save_states([saved for m, saved in states if m.saved < m.through])
        for memory, saved in states:
            memory.saved = max(memory.saved, saved.through)
        # Taken off the list only once written: a failure leaves them for the next try, and
        # the checkpoint is not written past a state that is not.
        self._to_save = self._to_save[len(chunk) :]
        if not self._to_save:
            reached = {
                s: n
                for s, n in self._checkpoint.items()
                if s in self._through and n > self._checkpointed.get(s, 0)
            }
            await self._store.fleet.save_checkpoints(reached)
            self._checkpointed.update(reached)
            self._checkpoint = None
            if reached and 0 in self._through:
                await self._trim()
            quiet = [
                key
                for key, m in self._memory.items()
                if m.saved == m.through and not m.entity and now - m.touched > _FORGET_SECONDS
            ]
            for key in quiet:
                del self._memory[key]
        return budget - len(chunk)

    async def _write_entities(self, saving: list[tuple[Key, _Memory]], now: float) -> None:
        """The vehicles' fields the fold changed, in one journaled round; one that failed
        keeps its fields for the next try (unless newer ones came meanwhile)."""
        taken = [(m, m.entity, m.entity_since) for _, m in saving]
        folds = [
            Folded(
                k[0],
                k[1],
                m.entity,
                m.entity_through,
                start=m.start,
                reading_rev=m.entity_reading_rev,
                position_at=m.entity_position_at,
            )
            for k, m in saving
        ]
        for memory, _, _ in taken:
            memory.entity, memory.written_at = {}, now
        whole: BaseException | None = None
        try:
            outcomes: Sequence[bool | BaseException] = await self._store.entities.set_folded(folds)
        except BaseException as exc:  # cancelled, or failed as a whole: none is known
            # written (a cancelled call's rounds may still land; writing them again changes
            # nothing)
            whole, outcomes = exc, [exc] * len(taken)
        failure = whole
        for (key, _), (memory, fields, since), outcome in zip(saving, taken, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not memory.entity:  # not written: keep it for the next try
                    memory.entity, memory.entity_since = fields, since
                self._unwritten.setdefault(key, since)
                failure = failure or outcome
            else:
                memory.start = None
                self._unwritten.pop(key, None)
        if failure is not None:
            raise failure

    async def _trim(self) -> None:
        """Inbox documents every shard's checkpoint is past go (the holder of shard 0)."""
        through = await self._store.fleet.checkpoints(range(FOLD_SHARDS))
        lowest = min(through.values())
        if lowest > 0:
            await self._store.fleet.trim(lowest)

    async def _flush(self) -> None:
        """On the way out: what memory holds, written (best effort: a fold that takes the
        shards over folds again from the checkpoints otherwise)."""
        try:
            await self._save(force=True)
        except Exception as exc:
            log.warning("fleet fold: writing its state on the way out failed: %s", exc)


class _VehicleRun:
    """One vehicle's pass: the state as it goes, and the events it makes."""

    def __init__(
        self,
        fold: Fold,
        folding: _Pass,
        vehicle: Doc,
        settings: FleetSettings,
        rules: TenantRules,
        listeners: Sequence[Listener],
    ) -> None:
        self._fold = fold
        self._pass = folding
        self._settings = settings
        data = vehicle.get("data") or {}
        plate, groups = folding.scope = _scope(vehicle)
        self._fences = [f for f in rules.geofences if f.applies_to(plate, groups)]
        self._applying = frozenset(f.id for f in self._fences)
        self._plans = [p for p in rules.plans if p.applies_to(plate, groups)]
        self._all_plans = rules.plans
        self._fence_ids = frozenset(f.id for f in rules.geofences)
        self._plan_ids = frozenset(p.id for p in rules.plans)
        self._listeners = listeners
        # Where a fence with no state for the vehicle judges its first fix from
        # (`_Memory.anchor`).
        self.anchor: TrackPoint | None = None
        # The accepted fixes late ones may have as neighbours (`Fold._track_window`): all of
        # them from the device time `covered` (exclusive) on.
        self.track: list[TrackPoint] = []
        self.covered: datetime | None = None
        # The pass's fixes not accepted yet: the track holds them, but they are nobody's
        # neighbour (yet, or ever: refused ones are flagged only once the pass is written).
        self.pending: set[str] = set()
        self._moved = False
        self._detoured = False
        # A first pass before its first fix: see `reading`.
        self._opening = False
        # The `vehicle.position.rejected` events of the inbox document being folded, by
        # reason: its later fixes refused for that reason count on them (`_refused`).
        self._rejected_runs: dict[str, Doc] = {}
        # The odometer, given no value until now (unknown, or GPS distance from an unknown
        # start), set by a reading or the device's own since the plans last looked: not
        # driven (`maintenance.step`).
        self._odometer_set = False
        # While folding a reading a flow run wrote: its chain ({run, depth}), on the origin of
        # the events the reading causes, so that the flows' loop guard counts them.
        self._chain: Doc = {}
        fresh = self.state.last is None and self.state.baseline is None
        if fresh and not self.state.odometer_km:
            # A vehicle's first fold counts on from the odometer it was registered with (or
            # had before the fold existed), not from zero. If a fold already wrote the vehicle
            # without committing (killed), its odometer is that fold's: start again from what
            # that fold started from.
            again = "folded" in vehicle
            start = vehicle.get("fold_start_km") if again else data.get("odometer_km")
            km = float(start) if isinstance(start, int | float) and start > 0 else 0.0
            # The vehicle's odometer has the readings written to it so far in it, and so has
            # a count that starts from it (one that starts again: those after the first
            # start are still in the inbox).
            rev = vehicle.get("fold_start_rev") if again else vehicle.get("odometer_rev")
            rev = rev if isinstance(rev, int) else 0
            self.state = _with(self.state, odometer_km=km, reading_rev=rev, gps_count=not km)
            self._pass.start = (km, rev)
            self._opening = True

    @property
    def state(self) -> VehicleState:
        return self._pass.state

    @state.setter
    def state(self, value: VehicleState) -> None:
        self._pass.state = value

    def reading(self, reading: Doc) -> None:
        """A reading from a partner only moves the odometer forward (a late or wrong meter
        reading is skipped and counted); an admin's is a correction and may move it back, and
        so may a partner's whose mapping lifted `only_forward` for it (an authoritative ERP)."""
        at, km = reading.get("at") or utcnow(), float(reading["km"])
        source = str(reading.get("source") or "reading")
        rev = reading.get("rev") if isinstance(reading.get("rev"), int) else None
        unset = not self._given()  # (a first pass may start from the reading)
        if self._opening and "before" in reading:
            # A vehicle's first pass starts from the odometer the vehicle holds now, which
            # already has this reading and any later one in it: replayed from there, a vehicle
            # registered at 151,000 km and read at 152,500 by a checklist before its first fold
            # "went down" to 151,000 and back up. Its first reading starts from where the
            # vehicle stood before it (what the write replaced; a new vehicle's own), and the
            # count then has the readings up to this one in it, not the later ones.
            before = reading["before"]
            start = float(before) if isinstance(before, int | float) and before > 0 else km
            self.state = _with(self.state, odometer_km=start, gps_count=False)
            if rev is not None:
                self.state = _with(self.state, reading_rev=rev)
        elif rev is not None and rev <= self.state.reading_rev:
            # Already in the count: in the odometer the first fold started from (the
            # registration, reaching the fold after the first fixes), or folded before (a
            # batch relayed again). Applied again, it took the distance since back.
            self._pass.counts["readings", "included"] += 1
            return
        self.state = _with(self.state, reading_rev=_newest_reading(self.state, [reading]))
        self._opening = False
        # The reading has the distance up to its time in it; what the fixes dated after it
        # (folded before it came: a late reading) added goes on top (docs/fleet.md
        # "Readings and late fixes").
        read_at = reading.get("read_at")
        # (never after its write: a checklist dated ahead by a wrong clock or a typo would
        # keep every fix until then off the count)
        read_at = min(read_at, at) if isinstance(read_at, datetime) else None
        authoritative = source.startswith(AUTHORITATIVE) or reading.get("authoritative") is True
        newest = self.state.reading_at
        if read_at is not None and newest is not None and read_at < newest and not authoritative:
            # (older than a reading the count already has, an admin's correction: the
            # distance since it, added on top, would undo that reading)
            self._pass.counts["readings", "stale"] += 1
            return
        after = 0.0 if read_at is None else distance_after(self.state, read_at)
        km += after
        if km < self.state.shown_km and not authoritative:
            self._pass.counts["readings", "stale"] += 1
            return
        self._chain = dict(reading.get("chain") or {})
        try:
            if self._rebaseline(km, "reading", at, source) is not None:
                self.state = at_reading(self.state, read_at, self._settings.odometer)
                self._detoured = self._detoured or after > 0  # the vehicle gets the count
            self._odometer_set = self._odometer_set or (unset and self._given())
            self._check_plans(at)
        finally:
            self._chain = {}

    def tick(self, at: datetime) -> None:
        """The fold's clock: the plans' time intervals at `at`, moving or not."""
        self._check_plans(at)

    def service(self, service: Doc) -> None:
        """A recorded service resets the plan it names, or without one every plan that
        applies to the vehicle or has a state for it (kept while the vehicle is out of its
        scope); a named plan that exists whatever this pass takes its scope for (the recorder
        checked it on the vehicle as it was then: moved into the plan's group a moment
        before, or a plan with a state kept). Without `km`, at the vehicle's odometer as
        folded so far (also for a plan that has not evaluated the vehicle yet: not from its
        `start_km`), or, none known yet (0: registered without one, no fix), at the first one
        the plan sees. An admin's service is the base as given; a feed's only when newer
        (`maintenance.record_service`)."""
        at, km = service.get("at") or utcnow(), service.get("km")
        plans = dict(self.state.plans)
        odometer = self.state.shown_km or None
        named = service.get("plan")
        if named is None:
            applying = {p.id for p in self._plans}
            targets = [p for p in self._all_plans if p.id in applying or p.id in plans]
        else:
            targets = [p for p in self._all_plans if p.id == named]
        report = service.get("event")
        for plan in targets:
            current = plans.get(plan.id)
            before = None if current is None else PlanState.from_doc(current)
            reset = maintenance.record_service(
                plan,
                before,
                None if km is None else float(km),
                at,
                odometer,
                authoritative=service.get("authoritative") is True,
                report=None if report is None else str(report),
            )
            plans[plan.id] = reset.to_doc()
        self.state = _with(self.state, plans=plans)

    async def fix(self, doc: Doc, now: datetime) -> None:
        self._opening = False  # the count moves from the start from now on
        point = _point(doc)
        before = after = None
        if self.state.is_late(point):
            if self.covered is not None and point.t > self.covered:
                before, after = _around(self.track, point.t)
            else:  # older than what the pass holds: the track's, on its own
                before, after = await self._fold.neighbours(
                    self._pass.key, point.t, self.pending, self._pass.through
                )
        quality, odometer = self._settings.quality, self._settings.odometer
        self.state, verdict = fold_fix(
            self.state,
            point,
            doc.get("at") or now,
            quality,
            odometer,
            detail=doc,
            before=before,
            after=after,
        )
        received = doc.get("at") or now
        self._pass.lags.append(max(0.0, (now - received).total_seconds()))
        if verdict.reason is not None:
            self._refuse(doc, point, received, verdict.reason)
            return
        self._pass.counts["fixes", "late" if verdict.late else "accepted"] += 1
        # The last position (and, two reflections in a row, the one before it), refused
        # after all.
        for outlier in (verdict.earlier_outlier, verdict.outlier):
            if outlier is None:
                continue
            reason = verdict.outlier_reason.value
            self._pass.rejected[position_id(self._pass.key[1], outlier.t)] = reason
            self._pass.counts["rejected", reason] += 1
            self._pass.counts["fixes", "taken_back"] += 1  # counted `accepted` when it came
            self._refused(reason, outlier, received)
            if outlier in self.track:
                self.track.remove(outlier)
        if not verdict.late or verdict.counted:
            # A neighbour of the pass's next late fixes (a late one within the jitter of its
            # neighbours is not: as an anchor in order, it would not have moved; nor is it
            # among the newest fixes the state keeps, `state.fold_fix`).
            self.pending.discard(doc["id"])
            if not self.track or self.track[-1].t <= point.t:  # the newest: where insort puts it
                self.track.append(point)
            elif verdict.late:
                bisect.insort(self.track, point, key=_time)
            else:  # in order, the last position dated ahead before it: no neighbour at that time
                del self.track[bisect.bisect_right(self.track, point.t, key=_time) :]
                self.track.append(point)
        if verdict.late:
            self._detoured = self._detoured or verdict.added_km > 0
            self._position_event(point, doc, point.t)  # for those that sample nothing
            return
        self._moved = True
        if doc.get("odometer_km"):  # (a device odometer of 0 is no value: "unknown")
            self._rebaseline(float(doc["odometer_km"]), "device", point.t, "device")
        at = self._present(point)
        self._cross_fences(point, at)
        self._check_plans(at, received)
        self._position_event(point, doc, at)

    def _refuse(self, doc: Doc, point: TrackPoint, received: datetime, reason: Reason) -> None:
        """A fix the gates refused: flagged, counted, announced (`_refused`); one refused
        `future` by no more than `HOLD_AHEAD` is held too (`_hold`)."""
        self._pass.rejected[doc["id"]] = reason.value
        self._pass.counts["rejected", reason.value] += 1
        self._refused(reason.value, point, received)
        if reason is Reason.FUTURE and point.t - received <= HOLD_AHEAD:
            self._hold(doc)

    def _hold(self, doc: Doc) -> None:
        """A fix refused `future` kept to be judged again (`release`): the gateway's clock,
        not the device's, may have been behind. The newest `MAX_HELD` are kept."""
        entry = {k: v for k, v in doc.items() if k not in _ITEM_FIELDS}
        self.state = _with(self.state, held=(*self.state.held, entry)[-MAX_HELD:])

    def release(self, fixes: Sequence[Doc]) -> list[Doc]:
        """The held fixes (`_hold`) an inbox document's `fixes` judge again, as received with
        them: those of a device whose newest fix here is within the future tolerance of its
        receipt (its clock and the gateway's agree: the gateway's was behind, now set right)
        dated at or before that fix. A held fix of a device whose fixes here are all still
        ahead, when the gateway's time has reached its date (the device's own clock runs
        ahead), stays refused and is no longer held. Deterministic: it reads only the inbox
        and the state, so a fold repeated from a checkpoint takes the same ones."""
        if not self.state.held or not fixes:
            return []
        tolerance = timedelta(seconds=self._settings.quality.future_tolerance_s)
        agreeing: dict[Any, Doc] = {}  # per device: its newest fix within the tolerance
        arrived: dict[Any, datetime] = {}  # per device: its latest receipt here
        for fix in fixes:
            device, at = fix.get("device"), fix.get("at")
            if not isinstance(at, datetime):
                continue
            arrived[device] = max(at, arrived.get(device, at))
            if fix["t"] - at <= tolerance and (
                device not in agreeing or agreeing[device]["t"] < fix["t"]
            ):
                agreeing[device] = fix
        released: list[Doc] = []
        kept: list[Doc] = []
        for entry in self.state.held:
            device = entry.get("device")
            newest = agreeing.get(device)
            if newest is not None and entry["t"] <= newest["t"]:
                released.append({**entry, "k": "fix", "at": newest["at"]})
                self._pass.rejected.pop(str(entry["id"]), None)
                self._pass.released.add(str(entry["id"]))
                self._pass.counts["fixes", "released"] += 1
            elif not (newest is None and device in arrived and entry["t"] <= arrived[device]):
                kept.append(entry)
        if len(kept) < len(self.state.held):
            self.state = _with(self.state, held=tuple(kept))
        return released

    def finish(self) -> None:
        """The vehicle's new last position and odometer, for its entity."""
        last, fields = self.state.last, self._pass.entity_fields
        self._pass.moved = self._moved
        if self._detoured and not self._moved and last is not None:
            # Only late fixes (a buffered upload) carried the odometer: the plans see it now,
            # at the last position's time, not at the vehicle's next fix.
            self._check_plans(last.t)
        if self._moved and last is not None:
            fields["last_position"] = _last_position(last, self.state.last_detail)
            self._pass.position_at = self.state.present or last.t
        # Fixes (a late one's detour too) move the odometer; a reading alone does not write
        # it: the vehicle holds the reading already (it came from a write to the vehicle),
        # or a newer one the fold has not seen yet, which must not go back.
        if self._moved or self._detoured:
            fields["odometer_km"] = round(self.state.shown_km, 3)

    # -- events -----------------------------------------------------------------------------

    def _rebaseline(self, km: float, kind: str, at: datetime, source: str) -> Rebaselined | None:
        settings = self._settings
        speed = settings.quality.max_speed_kmh if kind == "device" else None
        if is_glitch(km, kind):
            self._pass.counts["readings", "device_glitch"] += 1
            return None
        if is_unchanged(self.state, km, kind):
            self._pass.counts["readings", "device_unchanged"] += 1
            return None
        if is_behind(self.state, km, kind) and may_rebaseline(
            self.state.baseline, kind, at, settings.odometer
        ):
            self._pass.counts["readings", "device_behind"] += 1
        unset = not self._given()
        self.state, change = rebaseline(
            self.state, km, kind, at, settings.odometer, max_speed_kmh=speed
        )
        self._odometer_set = self._odometer_set or (unset and self._given())
        if kind == "reading":
            self._pass.counts["readings", "taken" if change else "outranked"] += 1
        if change is not None and change.held:
            self._pass.counts["readings", "device_held"] += 1
        elif change is not None:
            detail = {"from_km": round(change.from_km, 3), "to_km": change.to_km, "source": source}
            self._emit("vehicle.odometer.rebaselined", at, f"{source}|{_iso(at)}", detail)
        return change

    def _given(self) -> bool:
        """Whether the vehicle's odometer has a value given it (registered, read, the
        device's): not unknown (0), nor GPS distance counted from an unknown start."""
        return self.state.odometer_km > 0 and not self.state.gps_count

    def next_document(self) -> None:
        """The next inbox document: a run of refused fixes announced in the one before is
        not counted on here (what an event says does not depend on how a pass was cut)."""
        if self._rejected_runs:
            self._rejected_runs = {}

    def _refused(self, reason: str, point: TrackPoint, received: datetime) -> None:
        """A fix refused for `reason`: the first of a run (none refused for it within
        `REJECTED_QUIET` of receipt before) is announced, `vehicle.position.rejected` with
        the fix's time and place; the run's later fixes of the same inbox document count on
        it; the others are quiet (a tracker stuck at (0,0) is one event, not one a fix)."""
        last = self.state.rejecting.get(reason)
        running = self._rejected_runs.get(reason)
        if last is not None and received - last <= REJECTED_QUIET:
            if running is not None:
                running["count"] += 1
            if received > last:
                self.state = _with(self.state, rejecting={**self.state.rejecting, reason: received})
            return
        self.state = _with(self.state, rejecting={**self.state.rejecting, reason: received})
        place = _place(point)
        detail: Doc = {
            "reason": reason,
            "count": 1,
            "fix": {"time": _iso(point.t), **place, "received_at": _iso(received)},
        }
        self._rejected_runs[reason] = detail
        self._emit(REJECTED_EVENT, received, f"{reason}|{_iso(point.t)}", detail)

    def _present(self, point: TrackPoint) -> datetime:
        """When the fold takes a fix in order (the last position now) to have been recorded:
        its time, but for one dated further ahead of its arrival than the vehicle's clock is
        credited with (`state._clock`), its arrival plus that credit. A fence's dwell starts,
        and a crossing is dated, at it; the plans and the sampling of `vehicle.position`
        count time by it: one fix dated 240 s ahead neither holds an exit back until the live
        fixes pass its time (plus the dwell), nor dates it there."""
        present = self.state.present
        return point.t if present is None or present > point.t else present

    def _cross_fences(self, point: TrackPoint, at: datetime) -> None:
        # A deleted fence's state goes with it. One that exists but does not apply now (the
        # vehicle out of its group for a while, a group renamed in two steps) keeps the side
        # the vehicle is on, not evaluated: back in scope, a vehicle now on the other side
        # gets its crossing at its next clear fix, as after a change of the fence (the plans'
        # rule, `_check_plans`). Not a dwell candidate: this fix is not evaluated, so the
        # fixes that would confirm it are no longer consecutive (`FenceState.settled`).
        fences: dict[str, Any] = {}
        for fence_id, kept in self.state.fences.items():
            if fence_id not in self._fence_ids:
                continue
            if fence_id not in self._applying and kept.get("candidate") is not None:
                kept = FenceState.from_doc(kept).settled().to_doc()
            fences[fence_id] = kept
        if not self._fences and fences == self.state.fences:
            return  # (no state to copy for each fix of a vehicle no geofence applies to)
        for fence in self._fences:
            current = fences.get(fence.id)
            before = None if current is None else FenceState.from_doc(current)
            if before is None and self.anchor is not None:
                # new to the vehicle: from where it was when the fold last knew its fences
                anchor = self.anchor
                before, _ = geofences.step(
                    fence, None, anchor.lat, anchor.lon, anchor.accuracy_m, anchor.t
                )
            after, crossing = geofences.step(
                fence, before, point.lat, point.lon, point.accuracy_m, at
            )
            fences[fence.id] = after.to_doc()
            if crossing is not None:
                # When and where the vehicle crossed (with a dwell: the first fix on the other
                # side, not the one that confirmed it)
                detail = {
                    "geofence": {"id": fence.id, "name": fence.name, "kind": fence.kind},
                    "occurred_at": crossing.at,
                    "position": {"lat": crossing.lat, "lon": crossing.lon},
                }
                kind = f"vehicle.geofence.{crossing.kind}"
                self._emit(kind, crossing.at, f"{fence.id}|{_iso(crossing.at)}", detail)
        self.state = _with(self.state, fences=fences)

    def _check_plans(self, at: datetime, received: datetime | None = None) -> None:
        """The plans at `at`; `received`: when the fold received the fix evaluating them (a
        plan first seeing the vehicle through it starts its time base no earlier:
        `maintenance.step`)."""
        odometer_set, self._odometer_set = self._odometer_set, False
        if not self._plans and not self.state.plans:
            return
        # A deleted plan's state goes with it. One that exists but does not apply now (the
        # vehicle out of its group for a while, a group renamed in two steps) keeps its state,
        # not evaluated: back in scope, it counts on from its last service and time base.
        plans = {k: v for k, v in self.state.plans.items() if k in self._plan_ids}
        if not self._plans and len(plans) == len(self.state.plans):
            return
        km = self.state.shown_km
        for plan in self._plans:
            current = plans.get(plan.id)
            before = None if current is None else PlanState.from_doc(current)
            after, dues = maintenance.step(
                plan, before, km, at, odometer_set=odometer_set, received_at=received
            )
            plans[plan.id] = after.to_doc()
            for due in dues:
                due_km = None if due.due_km is None else round(due.due_km, 3)
                detail: Doc = {
                    "plan": {"id": plan.id, "name": plan.name},
                    "due_km": due_km,
                    "odometer_km": round(km, 3),
                    "reason": due.reason,
                }
                if due.due_at is not None:
                    detail["due_at"] = due.due_at
                if due.earlier:  # a huge jump: the multiples before it, not announced apart
                    detail["earlier_multiples"] = due.earlier
                which = f"{plan.id}|{due_km}|{due.due_at and _iso(due.due_at)}"
                self._emit(f"vehicle.maintenance.{due.kind}", at, which, detail)
        self.state = _with(self.state, plans=plans)

    def _position_event(self, point: TrackPoint, doc: Doc, at: datetime) -> None:
        """`vehicle.position` to the listeners due, sampled at `at`: the fix's time, or for one
        dated ahead of its arrival the present (`_present`: it holds the sampling back no
        further than it holds late fixes)."""
        if not self._listeners:
            return
        sent = dict(self.state.position_sent)
        due = [
            listener.id
            for listener in self._listeners
            if listener.id not in sent
            or not listener.sample_s
            or (at - sent[listener.id]).total_seconds() >= listener.sample_s
        ]
        if not due:
            return
        for listener_id in due:
            sent[listener_id] = max(at, sent.get(listener_id, at))
        self.state = _with(self.state, position_sent=sent)
        # `time`, as SPEC §3.5's fixes, `last_position` and `vehicle.position.rejected` name
        # it; `t` (the track point's name) is kept for one release, deprecated (docs/fleet.md).
        detail = {"time": _iso(point.t), **{k: v for k, v in doc.items() if k in _FIX_FIELDS}}
        self._emit(POSITION_EVENT, point.t, _iso(point.t), detail, audience=due)

    def _emit(
        self,
        event_type: str,
        at: datetime,
        which: str,
        detail: Doc,
        *,
        audience: Sequence[str] | None = None,
    ) -> None:
        tenant, vehicle_id = self._pass.key
        data: Doc = {"odometer_km": round(self.state.shown_km, 3)}
        if self.state.last is not None:
            data["last_position"] = _last_position(self.state.last, self.state.last_detail)
        entry: Doc = {
            "id": derived_id(at, tenant, vehicle_id, event_type, which),
            "type": event_type,
            "occurred_at": at,
            "entity_type": "vehicle",
            "data": data,  # the fold's fields; the vehicle's own join them (`Fold._events`)
            "changes": [],
            "origin": {"kind": "fold", **self._chain},
            "detail": detail,
        }
        if audience is not None:
            entry["audience"] = list(audience)
        self._pass.entries.append(entry)


_FIX_FIELDS = ("t", "lat", "lon", "speed_kmh", "heading", "accuracy_m", "odometer_km", "ignition")
# An inbox fix item's fields that say whose it is, not what it is (a held fix drops them).
_ITEM_FIELDS = ("k", "tenant", "vehicle", "shard")


def _place(point: TrackPoint) -> Doc:
    """A refused fix's place, when it has one (an invalid coordinate, NaN or off the globe,
    is not one an event can carry): `{lat, lon}`."""
    if math.isfinite(point.lat) and math.isfinite(point.lon):
        if abs(point.lat) <= 90 and abs(point.lon) <= 180:
            return {"lat": point.lat, "lon": point.lon}
    return {"lat": None, "lon": None}


def _serviced(groups: Mapping[Key, Sequence[tuple[int, Doc]]]) -> set[str]:
    """The vehicles whose input carries a recorded service."""
    return {
        key[1] for key, items in groups.items() if any(i.get("k") == "service" for _, i in items)
    }


def _seq(pair: tuple[int, Doc]) -> int:
    return pair[0]


def _unfolded(items: Sequence[tuple[int, Doc]], through: int) -> list[tuple[int, Doc]]:
    """A vehicle's items of a batch past what its state has folded, in inbox order (a tick
    joins its vehicles after their documents of the batch)."""
    return sorted(((seq, item) for seq, item in items if seq > through), key=_seq)


def _fix_order(fix: Doc) -> tuple[datetime, str]:
    return fix["t"], str(fix["id"])


def _shard(key: Key) -> int:
    return shard_of(*key)


def _around(
    track: Sequence[TrackPoint], t: datetime
) -> tuple[TrackPoint | None, TrackPoint | None]:
    """The points just before and just after `t` in a track in device-time order."""
    i = bisect.bisect_left(track, t, key=_time)
    j = i + 1 if i < len(track) and track[i].t == t else i
    return (track[i - 1] if i > 0 else None), (track[j] if j < len(track) else None)


def _time(point: TrackPoint) -> datetime:
    return point.t


def _point(doc: Doc) -> TrackPoint:
    return TrackPoint.from_doc(doc)


def _last_position(point: TrackPoint, detail: Mapping[str, Any]) -> Doc:
    """The vehicle schema's `last_position`, under the canonical fix's names."""
    position: Doc = {"time": _iso(point.t), "lat": point.lat, "lon": point.lon}
    if point.accuracy_m is not None:
        position["accuracy_m"] = point.accuracy_m
    if detail.get("speed_kmh") is not None:
        position["speed_kmh"] = detail["speed_kmh"]
    if detail.get("heading") is not None:
        position["heading"] = float(detail["heading"]) % 360
    if isinstance(detail.get("ignition"), bool):
        position["ignition"] = detail["ignition"]
    return position


def _scope(vehicle: Doc) -> tuple[str, frozenset[str]]:
    """A vehicle's plate and groups: which rules apply to it."""
    data = vehicle.get("data") or {}
    return str(data.get("plate") or vehicle.get("nk") or ""), _groups(data)


def _groups(data: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(vehicle_groups(data))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _with(state: VehicleState, **changes: Any) -> VehicleState:
    return replace(state, **changes)


def _newest_reading(state: VehicleState, readings: Sequence[Doc]) -> int:
    """The state's newest reading with `readings` folded (a reading queued before readings
    carried their write's revision has none)."""
    revs: list[int] = [r["rev"] for r in readings if isinstance(r.get("rev"), int)]
    return max([state.reading_rev, *revs])
