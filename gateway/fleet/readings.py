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

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

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
            if (read_at := _read_at(event)) is not None:
                reading["read_at"] = read_at  # the device time it counts up to (the fold's)
            if chain := {k: origin[k] for k in ("run", "depth") if k in origin}:
                reading["chain"] = chain  # a flow run's write: the fold's events carry it on
            if "odometer_km" in (origin.get("authoritative") or ()):
                reading["authoritative"] = True  # a trigger's mapping lifted only_forward
            await self._store.fleet.push_reading(event["tenant"], event["entity"]["id"], reading)
            queued += 1
        return queued


READ_AT = "attributes.odometer_read_at"


def _read_at(event: Mapping[str, Any]) -> datetime | None:
    """When the reading was taken, if the write that set it said so: the vehicle's
    `attributes.odometer_read_at` written with it (the shipped checklist and meter-entry
    mappings, `checklist_readings.py`), not one left from an earlier reading (an admin's
    PATCH of `odometer_km` alone). A time with no offset is none."""
    if event.get("type") == "entity.updated":
        fields = {str(c.get("field")) for c in event.get("changes") or ()}
        if READ_AT not in fields and "attributes" not in fields:
            return None
    attributes = (event.get("data") or {}).get("attributes")
    value = attributes.get("odometer_read_at") if isinstance(attributes, dict) else None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        return None
    return value
