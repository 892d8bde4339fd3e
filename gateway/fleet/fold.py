"""Use case: the fold, which turns each vehicle's appended fixes into its state and events.

Every `gateway serve` / `gateway worker` process runs one. The vehicles are split into
`FOLD_SHARDS` shards by their `fleet` document (`store/positions.py`); each process folds the
vehicles of the shards it holds (leases in MongoDB, `gateway/shares.py`, job "fleet-fold").
It is woken by its own process's appends (the doorbell) and otherwise polls for the others'.

A pass over one vehicle takes what waits in its queues: odometer readings and recorded
services first, then the pending fixes in device-time order. Each fix goes through the
quality gates and the odometer (`state.py`); an accepted fix that is not late also moves the
last position and is run through the tenant's geofences and maintenance plans (the `geo`
evaluators). Then, in this order:

1. the refused fixes are flagged in the track (`mark_rejected`, with the reason);
2. the events are stored (`store.events.insert_many`; ids derived from the vehicle, the
   type, what happened and the fix's device time, so storing them again is a no-op);
3. the relay's hook runs on them (fan-out, flow starter, assignment feed: idempotent);
4. the vehicle entity gets its `last_position` and `odometer_km` (only forward: guarded by
   the fold's version), without an `entity.updated` event per fix;
5. `commit_fold` writes the new state and takes the folded input from the queues in one
   single-document update, guarded by the state's version.

A process killed anywhere before 5 leaves the input queued: the next pass (here or in the
process that takes the shard over) repeats 1–4 with the same outcome, which stores nothing
twice. A pending fix whose position is not found (its insert failed, or is still in flight)
stays queued, and so do the fixes queued after it (append order); after `missing_seconds` it
is dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from gateway.doorbell import Doorbell
from gateway.events import OnRelayed, event_document
from gateway.fleet import geofences, maintenance
from gateway.fleet.geofences import FenceState, Geofence
from gateway.fleet.maintenance import Plan, PlanState
from gateway.fleet.odometer import TrackPoint
from gateway.fleet.settings import MAX_RETENTION_DAYS, FleetSettings, FleetSettingsService
from gateway.fleet.state import VehicleState, fold_fix, rebaseline
from gateway.metrics import Metrics
from gateway.shares import ShardedJob, ShardedLoop, Shares
from gateway.store import Doc, Store, derived_id
from gateway.store.positions import SHARDS, Consumed

log = logging.getLogger(__name__)

FOLD_JOB: Final = "fleet-fold"
FOLD_SHARDS: Final = SHARDS
POSITION_EVENT: Final = "vehicle.position"
_PURGE_SECONDS: Final = 3600.0
# Readings from these origins may move an odometer back (an admin's correction).
AUTHORITATIVE: Final = ("admin",)


class TenantRules(Protocol):
    @property
    def geofences(self) -> Sequence[Geofence]: ...

    @property
    def plans(self) -> Sequence[Plan]: ...


class RulesSource(Protocol):
    async def for_tenant(self, tenant: str) -> TenantRules: ...


@dataclass(frozen=True, slots=True)
class FoldSettings:
    batch: int = 64  # vehicles per pass
    max_fixes: int = 500  # fixes per vehicle per pass
    poll_seconds: float = 0.5
    missing_seconds: float = 30.0  # far beyond an insert's deadline (GATEWAY_DB_TIMEOUT_MS)


@dataclass(frozen=True, slots=True)
class Listener:
    """A subscription that asked for `vehicle.position`, at most one per `sample_s`."""

    id: str
    sample_s: float


@dataclass(slots=True)
class _Pass:
    """What folding one vehicle produced, written in the order the module docstring gives."""

    doc: Doc
    state: VehicleState
    consumed: Consumed
    events: list[Doc] = field(default_factory=list)
    rejected: dict[Any, str] = field(default_factory=dict)
    entity_fields: Doc = field(default_factory=dict)
    start_km: float | None = None  # a first fold's starting odometer (see _VehicleRun)
    lags: list[float] = field(default_factory=list)


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
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._settings = settings
        self._rules = rules
        self._on_relayed = on_relayed
        self._doorbell = doorbell  # rung by the append after every stored fix
        self._config = config
        self._purge_at = 0.0
        # `shares` None: every shard (a single fold, or a test driving it).
        self._loop = ShardedLoop(
            "fleet fold",
            shares,
            self._pass,
            doorbell=doorbell,
            poll_seconds=config.poll_seconds,
            on_shards=metrics.fold_shards.set,
        )

    def wake(self) -> None:
        self._doorbell.ring()

    async def fold_once(self, shards: Collection[int] | None = None) -> int:
        """Fold the vehicles of these shards (all when None) that have input waiting, the
        longest waiting first, one batch; how many vehicles were folded. A vehicle whose
        pending fixes are not found yet (their inserts still in flight) waits for the next
        pass, untouched, and does not count: a caller looping until 0 does not spin on it."""
        wanted = range(FOLD_SHARDS) if shards is None else shards
        docs = await self._store.positions.waiting(wanted, self._config.batch)
        self._measure_waiting(docs)
        if not docs:
            return 0
        ids = [i for doc in docs for i in doc.get("pending", [])[: self._config.max_fixes]]
        fixes: dict[Any, Doc] = {fix["_id"]: fix for fix in await self._store.positions.fixes(ids)}
        tenants = sorted({doc["tenant"] for doc in docs})
        found = await asyncio.gather(*(self._position_listeners(t) for t in tenants))
        listeners = dict(zip(tenants, found, strict=True))
        vehicles = await self._store.entities.vehicles([doc["vehicle"] for doc in docs])
        passes = await asyncio.gather(
            *(self._fold(doc, fixes, listeners, vehicles.get(doc["vehicle"])) for doc in docs)
        )
        moving = [p for p in passes if not _waiting_for_inserts(p)]
        await self._write(moving)
        return len(moving)

    async def run_until_idle(self, shards: Collection[int] | None = None) -> int:
        total = 0
        while folded := await self.fold_once(shards):
            total += folded
        return total

    async def purge_expired(self) -> int:
        """Drop the fixes of tenants that keep them for fewer days than the TTL index does;
        how many went."""
        purged = 0
        now = datetime.now(UTC)
        for doc in await self._store.fleet_settings.shorter_retention(MAX_RETENTION_DAYS):
            before = now - timedelta(days=int(doc["retention_days"]))
            purged += await self._store.positions.purge(str(doc["_id"]), before)
        return purged

    async def _pass(self, shards: Collection[int] | None) -> None:
        """One pass of the loop: fold what waits; the holder of shard 0 (or a fold with every
        shard) also purges what tenants keep for fewer days than the TTL index does."""
        await self.run_until_idle(shards)
        if time.monotonic() >= self._purge_at and (shards is None or 0 in shards):
            self._purge_at = time.monotonic() + _PURGE_SECONDS
            if purged := await self.purge_expired():
                log.info("dropped %d fixes past their tenants' retention", purged)

    def _measure_waiting(self, docs: Sequence[Doc]) -> None:
        since = docs[0].get("since") if docs else None
        age = (datetime.now(UTC) - since).total_seconds() if isinstance(since, datetime) else 0.0
        self._metrics.fold_oldest_waiting.set(max(age, 0.0))

    # -- one vehicle ------------------------------------------------------------------------

    async def _fold(
        self,
        doc: Doc,
        fixes: Mapping[Any, Doc],
        listeners: Mapping[str, list[Listener]],
        vehicle: Doc | None,
    ) -> _Pass:
        tenant = doc["tenant"]
        now = datetime.now(UTC)
        pending = list(doc.get("pending", []))
        taken, found = [], []
        # The queue is in append order: take it up to the first fix not stored yet (its
        # insert still in flight), so that the fixes behind it do not make it late.
        for fix_id in pending[: self._config.max_fixes]:
            if fix_id in fixes:
                taken.append(fix_id)
                found.append(fixes[fix_id])
            elif _age(fix_id, now) > self._config.missing_seconds:
                taken.append(fix_id)  # its insert failed: nothing will come
                self._metrics.fold_fixes.labels("missing").inc()
            else:
                break
        readings, services = doc.get("readings", []), doc.get("services", [])
        folding = _Pass(
            doc,
            VehicleState.from_doc(doc.get("state")),
            Consumed(pending=taken, readings=len(readings), services=len(services)),
        )
        if vehicle is None or vehicle.get("tenant") != tenant:
            return folding  # deleted: its input goes, nothing to tell
        run = _VehicleRun(
            self,
            folding,
            vehicle,
            await self._settings.for_fold(tenant),
            await self._rules.for_tenant(tenant),
            listeners[tenant],
            exclude=pending,
        )
        for reading in readings:
            run.reading(reading)
        for service in services:
            run.service(service)
        for fix in sorted(found, key=lambda f: (f["t"], f["_id"])):
            await run.fix(fix, now)
        run.finish()
        return folding

    async def _position_listeners(self, tenant: str) -> list[Listener]:
        """The tenant's active subscriptions that name `vehicle.position` (opt-in: a family
        or "*" does not ask for them); read once per batch, as the fan-out does."""
        return [
            Listener(str(sub["_id"]), float(sub.get("sample_seconds") or 0))
            for sub in await self._store.subscriptions.active(tenant)
            if POSITION_EVENT in sub.get("event_types", ())
        ]

    async def neighbours(
        self, doc: Doc, t: datetime, exclude: Sequence[Any]
    ) -> tuple[TrackPoint | None, TrackPoint | None]:
        before, after = await self._store.positions.neighbours(
            doc["tenant"], doc["vehicle"], t, exclude
        )
        return (
            None if before is None else _point(before),
            None if after is None else _point(after),
        )

    # -- the writes of a batch --------------------------------------------------------------

    async def _write(self, passes: Sequence[_Pass]) -> None:
        rejected = {k: v for p in passes for k, v in p.rejected.items()}
        await self._store.positions.mark_rejected(rejected)
        events = [event for p in passes for event in p.events]
        if events:
            await self._store.events.insert_many(events)
            await self._on_relayed(events)
        writing = [p for p in passes if p.entity_fields]
        written = await asyncio.gather(*(self._update_vehicle(p) for p in writing))
        blocked = {id(p) for p, done in zip(writing, written, strict=True) if not done}
        committed = await asyncio.gather(*(self._commit(p) for p in passes))
        for folding, won in zip(passes, committed, strict=True):
            if not won:
                self._metrics.fold_fixes.labels("raced").inc(len(folding.consumed.pending))
                continue
            if id(folding) in blocked:  # a pass that never committed wrote this version
                await self._update_vehicle(folding, same_version=True)
            for lag in folding.lags:
                self._metrics.fold_lag.observe(lag)
        for event in events:
            self._metrics.fold_events.labels(event["type"]).inc()

    async def _update_vehicle(self, folding: _Pass, *, same_version: bool = False) -> bool:
        doc = folding.doc
        version = int(doc.get("state_version", 0)) + 1
        return await self._store.entities.set_folded(
            doc["tenant"],
            doc["vehicle"],
            folding.entity_fields,
            version,
            start_km=folding.start_km,
            same_version=same_version,
        )

    async def _commit(self, folding: _Pass) -> bool:
        doc = folding.doc
        return await self._store.positions.commit_fold(
            doc["_id"],
            int(doc.get("version", 0)),
            int(doc.get("state_version", 0)),
            folding.state.to_doc(),
            folding.consumed,
            read=doc,
        )


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
        *,
        exclude: Sequence[Any],
    ) -> None:
        self._fold = fold
        self._pass = folding
        self._vehicle = vehicle
        self._settings = settings
        data = vehicle.get("data") or {}
        plate = str(data.get("plate") or vehicle.get("nk") or "")
        groups = _groups(data)
        self._fences = [f for f in rules.geofences if f.applies_to(plate, groups)]
        self._plans = [p for p in rules.plans if p.applies_to(plate, groups)]
        self._listeners = listeners
        self._exclude = exclude
        self._moved = False
        self._detoured = False
        fresh = self.state.last is None and self.state.baseline is None
        if fresh and not self.state.odometer_km:
            # A vehicle's first fold counts on from the odometer it was registered with (or
            # had before the fold existed), not from zero. If a fold already wrote the vehicle
            # without committing (killed), its odometer is that fold's: start again from what
            # that fold started from.
            start = vehicle.get("fold_start_km") if "folded" in vehicle else data.get("odometer_km")
            km = float(start) if isinstance(start, int | float) and start > 0 else 0.0
            self.state = _with(self.state, odometer_km=km)
            self._pass.start_km = km

    @property
    def state(self) -> VehicleState:
        return self._pass.state

    @state.setter
    def state(self, value: VehicleState) -> None:
        self._pass.state = value

    def reading(self, reading: Doc) -> None:
        """A reading from a partner only moves the odometer forward (a late or wrong meter
        reading is skipped and counted); an admin's is a correction and may move it back."""
        at, km = reading.get("at") or datetime.now(UTC), float(reading["km"])
        source = str(reading.get("source") or "reading")
        if km < self.state.odometer_km and not source.startswith(AUTHORITATIVE):
            self._fold._metrics.fold_readings.labels("stale").inc()
            return
        self._rebaseline(km, "reading", at, source)
        self._check_plans(at)

    def service(self, service: Doc) -> None:
        at, km = service.get("at") or datetime.now(UTC), service.get("km")
        plans = dict(self.state.plans)
        for plan in self._plans:
            if service.get("plan") not in (None, plan.id):
                continue
            current = plans.get(plan.id)
            before = None if current is None else PlanState.from_doc(current)
            reset = maintenance.record_service(plan, before, None if km is None else float(km), at)
            plans[plan.id] = reset.to_doc()
        self.state = _with(self.state, plans=plans)

    async def fix(self, doc: Doc, now: datetime) -> None:
        point = _point(doc)
        before = after = None
        if self.state.is_late(point):
            near = self.state.neighbours(point)
            if near is not None:
                before, after = near
            else:  # older than the fixes the state keeps: from the track
                before, after = await self._fold.neighbours(self._pass.doc, point.t, self._exclude)
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
        self._pass.lags.append(max(0.0, (now - (doc.get("at") or now)).total_seconds()))
        if verdict.reason is not None:
            self._pass.rejected[doc["_id"]] = verdict.reason.value
            self._fold._metrics.fold_rejected.labels(verdict.reason.value).inc()
            return
        self._fold._metrics.fold_fixes.labels("late" if verdict.late else "accepted").inc()
        if verdict.late:
            self._detoured = self._detoured or verdict.added_km > 0
            self._position_event(point, doc)  # for the subscriptions that sample nothing
            return
        self._moved = True
        if doc.get("odometer_km") is not None:
            self._rebaseline(float(doc["odometer_km"]), "device", point.t, "device")
        self._cross_fences(point)
        self._check_plans(point.t)
        self._position_event(point, doc)

    def finish(self) -> None:
        """The vehicle's new last position and odometer, for its entity."""
        last, fields = self.state.last, self._pass.entity_fields
        if self._moved and last is not None:
            fields["last_position"] = _last_position(last, self.state.last_detail)
        # Fixes (a late one's detour too) move the odometer; a reading alone does not write
        # it: the vehicle holds the reading already (it came from a write to the vehicle),
        # or a newer one the fold has not seen yet, which must not go back.
        if self._moved or self._detoured:
            fields["odometer_km"] = round(self.state.odometer_km, 3)

    # -- events -----------------------------------------------------------------------------

    def _rebaseline(self, km: float, kind: str, at: datetime, source: str) -> None:
        self.state, change = rebaseline(self.state, km, kind, at, self._settings.odometer)
        if kind == "reading":
            self._fold._metrics.fold_readings.labels("taken" if change else "outranked").inc()
        if change is not None:
            detail = {"from_km": round(change.from_km, 3), "to_km": change.to_km, "source": source}
            self._emit("vehicle.odometer.rebaselined", at, f"{source}|{_iso(at)}", detail)

    def _cross_fences(self, point: TrackPoint) -> None:
        fences = dict(self.state.fences)
        for fence in self._fences:
            current = fences.get(fence.id)
            before = None if current is None else FenceState.from_doc(current)
            after, crossing = geofences.step(
                fence, before, point.lat, point.lon, point.accuracy_m, point.t
            )
            fences[fence.id] = after.to_doc()
            if crossing is not None:
                detail = {
                    "geofence": {"id": fence.id, "name": fence.name, "kind": fence.kind},
                    "occurred_at": crossing.at,
                    "position": {"lat": point.lat, "lon": point.lon},
                }
                kind = f"vehicle.geofence.{crossing.kind}"
                self._emit(kind, point.t, f"{fence.id}|{_iso(point.t)}", detail)
        self.state = _with(self.state, fences=fences)

    def _check_plans(self, at: datetime) -> None:
        plans = dict(self.state.plans)
        km = self.state.odometer_km
        for plan in self._plans:
            current = plans.get(plan.id)
            before = None if current is None else PlanState.from_doc(current)
            after, dues = maintenance.step(plan, before, km, at)
            plans[plan.id] = after.to_doc()
            for due in dues:
                detail: Doc = {
                    "plan": {"id": plan.id, "name": plan.name},
                    "due_km": due.due_km,
                    "odometer_km": round(km, 3),
                    "reason": due.reason,
                }
                if due.due_at is not None:
                    detail["due_at"] = due.due_at
                which = f"{plan.id}|{due.due_km}|{due.due_at and _iso(due.due_at)}"
                self._emit(f"vehicle.maintenance.{due.kind}", at, which, detail)
        self.state = _with(self.state, plans=plans)

    def _position_event(self, point: TrackPoint, doc: Doc) -> None:
        sent = dict(self.state.position_sent)
        due = [
            listener.id
            for listener in self._listeners
            if listener.id not in sent
            or not listener.sample_s
            or (point.t - sent[listener.id]).total_seconds() >= listener.sample_s
        ]
        if not due:
            return
        for listener_id in due:
            sent[listener_id] = max(point.t, sent.get(listener_id, point.t))
        self.state = _with(self.state, position_sent=sent)
        detail = {k: v for k, v in doc.items() if k in _FIX_FIELDS}
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
        tenant, vehicle = self._pass.doc["tenant"], self._vehicle
        data = dict(vehicle.get("data") or {})
        if self.state.last is not None:
            data["last_position"] = _last_position(self.state.last, self.state.last_detail)
        data["odometer_km"] = round(self.state.odometer_km, 3)
        entry: Doc = {
            "id": derived_id(at, tenant, str(vehicle["_id"]), event_type, which),
            "type": event_type,
            "occurred_at": at,
            "entity_type": "vehicle",
            "entity_rev": vehicle.get("rev", 0),
            "data": data,
            "changes": [],
            "origin": {"kind": "fold"},
            "detail": detail,
        }
        event = event_document(tenant, vehicle, entry, datetime.now(UTC))
        if audience is not None:
            event["audience"] = list(audience)
        self._pass.events.append(event)


_FIX_FIELDS = ("t", "lat", "lon", "speed_kmh", "heading", "accuracy_m", "odometer_km", "ignition")


def _waiting_for_inserts(folding: _Pass) -> bool:
    """Whether a pass took nothing though fixes are pending: their positions are not found
    yet (a dirty vehicle with empty queues is committed, which clears it)."""
    consumed, doc = folding.consumed, folding.doc
    took = consumed.pending or consumed.readings or consumed.services
    return not took and bool(doc.get("pending"))


def _point(doc: Doc) -> TrackPoint:
    accuracy = doc.get("accuracy_m")
    return TrackPoint(doc["t"], float(doc["lat"]), float(doc["lon"]), accuracy)


def _last_position(point: TrackPoint, detail: Mapping[str, Any]) -> Doc:
    """The vehicle schema's `last_position`."""
    position: Doc = {
        "latitude": point.lat,
        "longitude": point.lon,
        "fix_time": _iso(point.t),
    }
    if point.accuracy_m is not None:
        position["accuracy_m"] = point.accuracy_m
    if detail.get("speed_kmh") is not None:
        position["speed_kmh"] = detail["speed_kmh"]
    if detail.get("heading") is not None:
        position["course"] = float(detail["heading"]) % 360
    if isinstance(detail.get("ignition"), bool):
        position["ignition"] = detail["ignition"]
    return position


def _groups(data: Mapping[str, Any]) -> frozenset[str]:
    groups = data.get("groups")
    named = [g for g in groups if isinstance(g, str)] if isinstance(groups, list) else []
    if isinstance(data.get("group"), str):
        named.append(data["group"])
    return frozenset(named)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _age(fix_id: Any, now: datetime) -> float:
    """Seconds since a pending id was made (an ObjectId carries its creation time)."""
    made = getattr(fix_id, "generation_time", None)
    return (now - made).total_seconds() if isinstance(made, datetime) else float("inf")


def _with(state: VehicleState, **changes: Any) -> VehicleState:
    return replace(state, **changes)
