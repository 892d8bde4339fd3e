"""Services reported by events: a relay hook (`services.py` `each_of`, next to the fan-out, the
flow starter and the assignment feed) that records the services a checklist or an ERP reports,
through the same use case as the admin route (`servicing.py` `ServiceRecorder.record`):

    entity.created / entity.updated    a vehicle whose `last_service` {at, km?, plan?} is new
    of a vehicle                       or changed (an ERP's feed, an admin's PATCH)
    checklist.completed                a checklist with a `service` {plan?, km?}: done at its
                                       `completed_at`, km from the service or the checklist's
                                       `odometer_km`

A report the recorder refuses (an unknown vehicle or plan, a plan that does not apply to the
vehicle, a time in the future) is logged and skipped: it never holds up the relay. A service
reported here moves a plan's base only forward (strictly newer than its last service), but
an admin's `last_service` (a vehicle write whose origin is an admin), which is the base as
given, as the route's is. Each names its event: a batch relayed twice queues its services
twice, and the fold applies the second with no effect, whatever was recorded between.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.errors import InvalidPayload, NotFound
from gateway.fleet.servicing import ServiceRecorder
from gateway.store import Doc

log = logging.getLogger(__name__)

_VEHICLE_WRITES = ("entity.created", "entity.updated")


class ServiceFeed:
    """`await feed(events) -> recorded`."""

    def __init__(self, recorder: ServiceRecorder) -> None:
        self._recorder = recorder

    async def __call__(self, events: Sequence[Doc]) -> int:
        recorded = 0
        for event in events:
            report = _report(event)
            if report is None:
                continue
            vehicle, body, source = report
            # An admin's `last_service` is the base as given (a correction may move it back);
            # a checklist's or an ERP's only when newer. Named by its event: a batch relayed
            # again changes nothing.
            admin = (event.get("origin") or {}).get("kind") == "admin"
            try:
                await self._recorder.record(
                    event["tenant"],
                    vehicle,
                    body,
                    source=source,
                    authoritative=admin and event["type"] in _VEHICLE_WRITES,
                    report=str(event["_id"]),
                )
            except (InvalidPayload, NotFound) as exc:
                log.info("service from event %s not recorded: %s", event["_id"], exc.detail)
                continue
            recorded += 1
        return recorded


def _report(event: Doc) -> tuple[str, dict[str, Any], str] | None:
    """(vehicle id or plate, the service's body, its source) when the event reports one."""
    data: Mapping[str, Any] = event.get("data") or {}
    entity = event.get("entity") or {}
    if event["type"] == "checklist.completed":
        service, plate = data.get("service"), data.get("vehicle_plate")
        if not isinstance(service, Mapping) or not isinstance(plate, str):
            return None
        body = {"at": _text(data.get("completed_at")), "plan": service.get("plan")}
        km = service.get("km", data.get("odometer_km"))
        if km is not None:
            body["km"] = km
        return plate, body, str(entity.get("key"))  # "checklist:<its key>"
    if event["type"] not in _VEHICLE_WRITES or entity.get("type") != "vehicle":
        return None
    fields = [str(c.get("field", "")) for c in event.get("changes") or ()]
    changed = event["type"] == "entity.created" or any(
        f == "last_service" or f.startswith("last_service.") for f in fields
    )
    service = data.get("last_service")
    if not changed or not isinstance(service, Mapping):
        return None
    body = {k: service[k] for k in ("km", "plan") if service.get(k) is not None}
    body["at"] = _text(service.get("at"))
    origin = event.get("origin") or {}
    source = ":".join(str(origin[k]) for k in ("kind", "id") if origin.get(k))
    return str(entity["id"]), body, source or "vehicle"


def _text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
