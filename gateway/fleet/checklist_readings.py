"""A checklist's odometer reading reaches its vehicle, whoever wrote the checklist: a relay
hook (`services.py` `each_of`, before the flow starter, so a flow started by the same event
reads the vehicle as the reading leaves it), as the assignment and service feeds act on a
checklist whoever wrote it (docs/entities.md "Checklists"):

    checklist.completed                a checklist first stored with an `odometer_km`
    entity.updated of a checklist      one whose `odometer_km`, `completed_at` or
                                       `vehicle_plate` changed (a correction resent, an
                                       admin's PATCH)

The vehicle named by `vehicle_plate` (either spelling of it; never created, its plate never
written) takes the reading forward only, by the reading's time and by its value, as the
shipped checklist mapping's `also` writes it within the checklist's own write: a checklist
completed before the vehicle's last reading, or with fewer km than it has, leaves the
odometer, its time and its source as they are, and the vehicle unwritten (a repeat of what
the `also` wrote changes nothing). An odometer of 0 is no reading. A checklist for a plate
the fleet does not have is logged and skipped: it never holds up the relay. Idempotent: a
batch relayed again writes nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.entities import IF_ABSENT, EntityService, Origin
from gateway.errors import InvalidPayload, NotFound
from gateway.store import Doc

log = logging.getLogger(__name__)

READING_FIELDS = ("odometer_km", "completed_at", "vehicle_plate")
"""A completed checklist's members whose change is a new reading of its vehicle."""

FORWARD = (
    ("plate", IF_ABSENT),
    ("odometer_km", "attributes.odometer_read_at"),
    ("attributes.odometer_read_at", "odometer_km"),
    ("attributes.odometer_source", "attributes.odometer_read_at"),
)


def checklist_reading(event: Mapping[str, Any]) -> tuple[str, float, Any] | None:
    """(plate, km, read at) when the event is a checklist's reading, new or changed."""
    data: Mapping[str, Any] = event.get("data") or {}
    if (event.get("entity") or {}).get("type") != "other" or data.get("kind") != "checklist":
        return None
    if event.get("type") == "entity.updated":
        fields = [str(c.get("field", "")) for c in event.get("changes") or ()]
        if not any(f in READING_FIELDS for f in fields):
            return None
    elif event.get("type") != "checklist.completed":
        return None
    km, plate, at = data.get("odometer_km"), data.get("vehicle_plate"), data.get("completed_at")
    if isinstance(km, bool) or not isinstance(km, int | float) or not km or not plate:
        return None
    return str(plate), km, at.isoformat() if isinstance(at, datetime) else at


class ChecklistReadings:
    """`await readings(events) -> written`."""

    def __init__(self, entities: EntityService) -> None:
        self._entities = entities

    async def __call__(self, events: Sequence[Doc]) -> int:
        written = 0
        for event in events:
            reading = checklist_reading(event)
            if reading is None:
                continue
            plate, km, at = reading
            said = dict(event.get("origin") or {})
            origin = Origin(str(said.pop("kind", "")), str(said.pop("id", "")), said)
            fields = {
                "plate": plate,
                "odometer_km": km,
                "attributes": {"odometer_read_at": at, "odometer_source": "checklist"},
            }
            try:
                result = await self._entities.upsert(
                    event["tenant"], "vehicle", fields, origin, forward=FORWARD, create=False
                )
            except (InvalidPayload, NotFound) as exc:
                log.info("reading of checklist event %s not written: %s", event["_id"], exc.detail)
                continue
            written += bool(result.events)
        return written
