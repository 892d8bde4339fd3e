"""Use case: what the fold learns from vehicle events: odometer readings from outside the
fold (a checklist, the ERP, an admin), and deletions.

A relay hook (`services.py` `each_of`): every vehicle event that sets `odometer_km` (a created
vehicle with one, or an update that changes it) becomes a reading in the vehicle's fold
queue (`{km, before, at, source}`, `before` the odometer the write replaced: None for a new
vehicle), which the fold uses to re-baseline the odometer (`odometer.py`). The fold itself
writes `odometer_km` without events, so its own writes never come back as readings.
Idempotent: a batch relayed again queues the same readings again, and the fold's re-baseline
(its event id derived from the reading's source and time) repeats nothing.

A vehicle's `entity.deleted` becomes a deletion in the fold's inbox: the fold forgets the
vehicle and drops its fold state (docs/fleet.md "Fold"). Queued again, it drops nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.store import Doc, Store


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
            said = _reading(event)
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
            }
            if "odometer_km" in (origin.get("authoritative") or ()):
                reading["authoritative"] = True  # a trigger's mapping lifted only_forward
            await self._store.fleet.push_reading(event["tenant"], event["entity"]["id"], reading)
            queued += 1
        return queued


def _reading(event: Doc) -> tuple[float, float | None] | None:
    """The odometer a vehicle event reports, if it sets one, and the one it replaced on the
    vehicle (None: a new vehicle, or one without an odometer)."""
    if (event.get("entity") or {}).get("type") != "vehicle":
        return None
    if (event.get("origin") or {}).get("kind") == "fold":
        return None
    value: Any = None
    old: Any = None
    if event["type"] == "entity.created":
        value = (event.get("data") or {}).get("odometer_km")
    elif event["type"] == "entity.updated":
        for change in event.get("changes") or ():
            if change.get("field") == "odometer_km":
                value, old = change.get("new"), change.get("old")
    if not _km(value):
        return None
    return float(value), float(old) if _km(old) else None


def _km(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
