"""Driver assignments reported by events: the relay hands every batch of relayed events here
(next to the delivery fan-out and the flow starter), and the ones that say who drives a
vehicle become changes in its history, through `AssignmentService.assign`:

    checklist.completed                a checklist with a vehicle and a driver: that driver
                                       from its `completed_at` (source checklist, ref its key)
    entity.created / entity.updated    a vehicle a trigger wrote (an ERP's feed) carrying
    of a vehicle, origin trigger       `current_driver` (cpf or id): from the event's time
                                       (source erp, ref the trigger)

Flows record what an HR system answers with a fetch step's `assign` (`flows/steps.py`). A
report that names an unknown driver or vehicle is logged and skipped: it never holds up the
relay. Repeats change nothing (`assign` ignores the driver already in force), so a relay that
runs a batch twice records nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.assignments import AssignmentService
from gateway.errors import Conflict, InvalidPayload, NotFound
from gateway.flows.recipients import parse_time
from gateway.store import Doc

log = logging.getLogger(__name__)

_VEHICLE_WRITES = ("entity.created", "entity.updated")


class AssignmentFeed:
    """`await feed(events) -> recorded`."""

    def __init__(self, assignments: AssignmentService) -> None:
        self._assignments = assignments

    async def __call__(self, events: Sequence[Doc]) -> int:
        recorded = 0
        for event in events:
            report = _report(event)
            if report is not None:
                recorded += await self._record(event, *report)
        return recorded

    async def _record(
        self, event: Doc, vehicle: str, driver: str, start: datetime, source: str, ref: str
    ) -> int:
        origin = event.get("origin") or {}
        try:
            result = await self._assignments.assign(
                event["tenant"],
                vehicle,
                driver,
                start=start,
                source=source,
                ref=ref,
                author=f"{origin.get('kind')}:{origin.get('id')}",
            )
        except (InvalidPayload, NotFound, Conflict) as exc:
            log.info("assignment from event %s not recorded: %s", event["_id"], exc.detail)
            return 0
        return int(result.changed)


def _report(event: Doc) -> tuple[str, str, datetime, str, str] | None:
    """(vehicle, driver, start, source, ref) when the event says who drives a vehicle."""
    data: dict[str, Any] = event.get("data") or {}
    entity = event.get("entity") or {}
    if event["type"] == "checklist.completed":
        plate, cpf = data.get("vehicle_plate"), data.get("driver_cpf")
        start = parse_time(data.get("completed_at"))
        if isinstance(plate, str) and isinstance(cpf, str) and start is not None:
            return plate, cpf, start, "checklist", f"checklist:{data.get('key')}"
        return None
    if (
        event["type"] in _VEHICLE_WRITES
        and entity.get("type") == "vehicle"
        and (event.get("origin") or {}).get("kind") == "trigger"
        and _driver_reported(event)
    ):
        current = data["current_driver"]
        driver = current.get("cpf") or current.get("id")
        if isinstance(driver, str) and driver:
            origin = event["origin"]
            return entity["id"], driver, event["occurred_at"], "erp", f"trigger:{origin.get('id')}"
    return None


def _driver_reported(event: Doc) -> bool:
    """The write carries a current driver: created with one, or an update that changed it."""
    if not isinstance((event.get("data") or {}).get("current_driver"), dict):
        return False
    if event["type"] == "entity.created":
        return True
    return any(str(c.get("field", "")).startswith("current_driver") for c in event["changes"])
