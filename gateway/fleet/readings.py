"""Use case: what the fold learns from vehicle events: odometer readings from outside the
fold (a checklist, the ERP, an admin), and deletions.

A relay hook (`services.py` `each_of`): every vehicle event that sets `odometer_km` (a created
vehicle with one, or an update that changes it) becomes a reading in the vehicle's fold
queue (`{km, before, at, source, rev, chain?}`, `before` the odometer the write replaced: None
for a new vehicle; `rev` the write's revision, kept on the vehicle as `odometer_rev`; `chain`
the `{run, depth}` of a flow run's write, which the fold's events it brings carry), which the fold
uses to re-baseline the odometer (`odometer.py`); until it has, it does not write its own count
over the reading (`store/entities.py` `set_folded`). The fold itself writes `odometer_km`
without events, so its own writes never come back as readings.
Idempotent: a batch relayed again queues the same readings again, and the fold skips a
reading whose revision its count already has in it (`fold.py` `_VehicleRun.reading`).

A vehicle's `entity.deleted` becomes a deletion in the fold's inbox: the fold forgets the
vehicle and drops its fold state (docs/fleet.md "Fold"). Queued again, it drops nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.store import Doc, Store
from gateway.store.entities import odometer_reading


class OdometerReadings:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def __call__(self, events: Sequence[Doc]) -> int:
        queued = 0
        for event in events:
            entity = event.get("entity") or {}
            if event["type"] == "entity.deleted" and entity.get("type") == "vehicle":
                await self._store.fleet.push_deleted(event["tenant"], entity["id"])
                queued += 1
                continue
            said = odometer_reading(entity.get("type"), event)
            if said is None:
                continue
            km, before = said
            origin = event.get("origin") or {}
            source = ":".join(str(origin[k]) for k in ("kind", "id") if origin.get(k))
            reading = {
                "km": km,
                "before": before,
                "at": event["occurred_at"],
                "source": source or "reading",
                # The write's revision, which the vehicle keeps as its `odometer_rev`: the
                # fold's count goes on the vehicle only once it has this reading in it.
                "rev": entity.get("rev") or 0,
            }
            if chain := {k: origin[k] for k in ("run", "depth") if k in origin}:
                reading["chain"] = chain  # a flow run's write: the fold's events carry it on
            if "odometer_km" in (origin.get("authoritative") or ()):
                reading["authoritative"] = True  # a trigger's mapping lifted only_forward
            await self._store.fleet.push_reading(event["tenant"], event["entity"]["id"], reading)
            queued += 1
        return queued
