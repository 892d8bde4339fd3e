"""Use case: fixes appended to their vehicles' tracks (SPEC §6 "append").

    for each item:  parse the canonical fix (fix.py) → resolve its vehicle (the one that
                    carries its tracker id, else its plate → the vehicle entity's id;
                    cached briefly)
    then:           every vehicle's fixes to the store at once (store/positions.py
                    `PositionStore.append_batch`: the fixes in the next insert round, one
                    journaled `insert_many` for every request in flight) → outcome per
                    item; the round then writes one document in the fold's inbox and rings
                    the fold's doorbell

An item is refused on its own (a 422 problem of its own) when it is not a valid fix, or names a
vehicle that does not exist (`unknown_vehicle`: a fix never creates a vehicle) or a tracker id
two vehicles share (`ambiguous_vehicle`). A resent fix (same vehicle and device time) is a
duplicate: answered as stored, stored once. The answer comes once the fixes are journaled; a
database failure fails the whole call (some fixes may be stored: a retry finds them as
duplicates).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from gateway.doorbell import Doorbell
from gateway.entities import EntityService
from gateway.errors import FieldProblem, InvalidPayload, NotFound
from gateway.fleet.fix import Fix, parse_fix
from gateway.metrics import Metrics
from gateway.store import Store

VEHICLE_CACHE_SECONDS: Final = 30.0
"""How long a resolved tracker id and plate are trusted (a re-assigned tracker takes this long;
an unknown one is never cached, so a vehicle created now takes fixes at once). At 1,000
vehicles a shorter time made a vehicle lookup of most fixes."""
_MAX_CACHED: Final = 20_000


@dataclass(frozen=True, slots=True)
class Vehicle:
    id: str
    plate: str | None


@dataclass(frozen=True, slots=True)
class Appended:
    """One fix stored (or stored before: `duplicate`)."""

    id: str
    vehicle: Vehicle
    time: datetime
    duplicate: bool

    def answer(self, *, plate: bool = True) -> dict[str, Any]:
        """The fix as its writer is told it; `plate` False for one that may not read the
        vehicle's plate (a trigger's `expose` hides it)."""
        vehicle = (
            {"id": self.vehicle.id, "plate": self.vehicle.plate}
            if plate
            else {"id": self.vehicle.id}
        )
        return {
            "id": self.id,
            "vehicle": vehicle,
            "time": utc_text(self.time),
            "duplicate": self.duplicate,
        }


Outcome = Appended | InvalidPayload


def utc_text(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds when there are any ("...T12:00:05.250Z")."""
    moment = moment.astimezone(UTC)
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def refused_reason(error: InvalidPayload) -> str:
    """The metrics label of a refusal."""
    keywords = {p.keyword for p in error.problems}
    for reason in ("unknown_vehicle", "ambiguous_vehicle"):
        if reason in keywords:
            return reason
    return "mapping" if error.extra.get("reason") == "mapping" else "invalid"


class PositionAppender:
    def __init__(
        self,
        store: Store,
        entities: EntityService,
        metrics: Metrics,
        *,
        doorbell: Doorbell | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._doorbell = doorbell  # the fold's: rung after every append
        self._entities = entities
        self._metrics = metrics
        self._clock = clock
        # (tenant, tracker id, plate) → until when, and the vehicle they resolved to
        self._vehicles: dict[tuple[str, str | int | None, str | None], tuple[float, Vehicle]] = {}
        store.positions.inserts.on_finished = self._handed
        entities.on_deleted.append(self._forget)

    def _forget(self, tenant: str, entity_type: str, entity_id: str) -> None:
        """A vehicle deleted through this process: its plate and tracker ids resolve again at
        once (its next fix is `unknown_vehicle`, or goes to a vehicle created since with the
        same plate), not to the deleted vehicle for the rest of `VEHICLE_CACHE_SECONDS`."""
        if entity_type != "vehicle":
            return
        gone = [
            key
            for key, (_, vehicle) in self._vehicles.items()
            if key[0] == tenant and vehicle.id == entity_id
        ]
        for key in gone:
            del self._vehicles[key]

    def _handed(self, outcome: str, count: int) -> None:
        """Where a round's stored fixes went: to the fold's inbox (its doorbell rung), in the
        round, or after it failed (`InsertRounds._finish`, counted), or nowhere (counted)."""
        if outcome != "handed_on_now":
            self._metrics.fixes_after_failure.labels(outcome).inc(count)
        if outcome != "not_handed_on" and self._doorbell is not None:
            self._doorbell.ring()

    async def append(
        self, tenant: str, items: Sequence[Any | InvalidPayload], source: str
    ) -> list[Outcome]:
        """One outcome per item, in order. An item may already be a refusal (a mapping that
        failed on it): it is counted and answered as it is; or a fix already checked."""
        outcomes: list[Outcome | None] = [None] * len(items)
        by_vehicle: dict[Vehicle, list[tuple[int, Fix]]] = {}
        for index, item in enumerate(items):
            try:
                if isinstance(item, InvalidPayload):
                    raise item
                fix = item if isinstance(item, Fix) else parse_fix(item)
                vehicle = await self._vehicle(tenant, fix)
            except InvalidPayload as exc:
                exc.extra.setdefault("reason", "schema")
                outcomes[index] = exc
                self._metrics.fixes.labels("refused", refused_reason(exc)).inc()
                continue
            by_vehicle.setdefault(vehicle, []).append((index, fix))

        groups = list(by_vehicle.items())
        stored = await self._store.positions.append_batch(
            tenant,
            [(v.id, [_stored(fix) for _, fix in fixes]) for v, fixes in groups],
            source,
            early=True,
        )
        counted = {"appended": 0, "duplicate": 0}  # (counted once a call, not once a fix)
        for (vehicle, fixes), results in zip(groups, stored, strict=True):
            for (index, fix), result in zip(fixes, results, strict=True):
                outcomes[index] = Appended(str(result.id), vehicle, fix.time, result.duplicate)
                counted["duplicate" if result.duplicate else "appended"] += 1
        for outcome, count in counted.items():
            if count:
                self._metrics.fixes.labels(outcome, "").inc(count)
        return [outcome for outcome in outcomes if outcome is not None]

    async def vehicle(self, tenant: str, ref: str) -> Vehicle:
        """The vehicle an admin names by id or plate (NotFound otherwise)."""
        doc = await self._entities.get(tenant, "vehicle", ref)
        return Vehicle(str(doc["_id"]), doc["data"].get("plate"))

    async def by_tracker(self, tenant: str, tracker_id: str) -> Vehicle:
        """The vehicle whose tracker has this id (NotFound otherwise)."""
        found = await self._entities.find(
            tenant, "vehicle", {"attributes.tracker_id": tracker_id}, after=None, limit=2
        )
        if len(found) != 1:
            raise NotFound(f"no single vehicle with tracker id {tracker_id!r}")
        return Vehicle(str(found[0]["_id"]), found[0]["data"].get("plate"))

    async def _vehicle(self, tenant: str, fix: Fix) -> Vehicle:
        key = (tenant, fix.tracker_id, fix.plate)
        now = self._clock()
        cached = self._vehicles.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self._resolve(tenant, fix)
        if len(self._vehicles) >= _MAX_CACHED:
            self._vehicles.pop(next(iter(self._vehicles)))
        self._vehicles[key] = (now + VEHICLE_CACHE_SECONDS, found)
        return found

    async def _resolve(self, tenant: str, fix: Fix) -> Vehicle:
        """The vehicle as the event mappings find it (`key: {first_of: [attributes.tracker_id,
        plate]}`, docs/partners.md "Which vehicle an event is"): the one that carries the
        fix's tracker id, whatever the device is named (a unit moved to another truck without
        renaming it, a fleet naming its units `VAN0012`); only a tracker id no vehicle carries
        (or none) falls through to the plate. One tracker's fixes and events land on one
        vehicle."""
        if fix.tracker_id is not None:
            filters = {"attributes.tracker_id": fix.tracker_id}
            found = await self._entities.find(tenant, "vehicle", filters, after=None, limit=2)
            if len(found) > 1:
                message = f"/tracker_id: more than one vehicle has tracker id {fix.tracker_id!r}"
                problem = FieldProblem("/tracker_id", message, "ambiguous_vehicle")
                raise InvalidPayload(message, [problem], reason="entity")
            if found:
                return Vehicle(str(found[0]["_id"]), found[0]["data"].get("plate"))
        if fix.plate is None:
            raise _unknown("tracker_id", fix.tracker_id)
        try:
            doc = await self._entities.get(tenant, "vehicle", fix.plate)
        except NotFound:
            raise _unknown("plate", fix.plate) from None
        return Vehicle(str(doc["_id"]), doc["data"].get("plate"))


def _stored(fix: Fix) -> dict[str, Any]:
    """The fix's document, with the device that sent it when it names one (its tracker id, even
    beside a plate): the fold follows one device of a vehicle at a time
    (`state.device_reason`). A fix that names no device is any device's: one tracker's fixes
    may come through two paths (a live forward and a backfill, a webhook and a poll), and
    refusing one path's as another device's would lose real distance."""
    if fix.tracker_id is None:
        return fix.document()
    return {**fix.document(), "device": str(fix.tracker_id)}


def _unknown(field: str, value: Any) -> InvalidPayload:
    message = f"/{field}: no vehicle with {field} {value!r} (a fix never creates a vehicle)"
    return InvalidPayload(
        message, [FieldProblem(f"/{field}", message, "unknown_vehicle")], reason="entity"
    )
