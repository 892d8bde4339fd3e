"""Use case: a service done on a vehicle, recorded for the fold (which resets the vehicle's
maintenance plans: `maintenance.py` `record_service`).

    {"km"?: odometer at the service, "at"?: RFC 3339 (default: now), "plan"?: id or name}

No `plan`: every plan of the vehicle is reset (those that apply, and those keeping a state for
it while it is out of their scope); with one, only that plan, which must apply to the vehicle
(its `vehicles` or `group` name it, or neither is set) or keep a state for it: a `422` on
`/plan` otherwise. No `km`: the fold takes the vehicle's odometer as it has folded it. The
service goes to the fold's inbox (`store/fleet.py` `push_service`, journaled) and takes effect
at the next fold of the vehicle, before the fixes that came with it.

An admin's service (the route, the admin UI, an admin's `last_service`: `authoritative`) is
the plan's base as given, an earlier `at` too (a correction); a feed's (a checklist, an ERP)
changes it only when newer than the plan's last one (`maintenance.record_service`).

An admin records one through `POST /api/v1/entities/vehicle/{id|key}/services`; a checklist
or ERP integration can call the same route from a flow (`call` step) or a partner's script.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.actions.body_check import BodyCheck
from gateway.clock import utcnow
from gateway.entities import EntityService, too_far_ahead
from gateway.fleet.append import utc_text
from gateway.fleet.fix import rfc3339_as_written
from gateway.fleet.overview import vehicle_groups
from gateway.fleet.rules import plan_from_doc
from gateway.store import Doc, Store
from gateway.store.fleet_rules import RuleResources

MAX_KM = 10_000_000.0
# A service dated before this is a typo (a two-digit year, 26, read as year 26): counted
# from, it would make every plan of the vehicle due at once. Driver assignments start from
# it too (`assignments.EARLIEST`).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


class ServiceRecorder:
    def __init__(self, store: Store, entities: EntityService, plans: RuleResources) -> None:
        self._store = store
        self._entities = entities
        self._plans = plans

    async def record(
        self,
        tenant: str,
        vehicle_ref: str,
        body: Mapping[str, Any],
        *,
        source: str,
        authoritative: bool = False,
        report: str | None = None,
    ) -> dict[str, Any]:
        """Queue the service; its record as the fold will see it, with the vehicle named.

        `authoritative`: an admin's (the route, the admin UI, an admin's `last_service`),
        the base as given, an earlier `at` too; otherwise a feed's, which moves the base only
        forward. `report`: the event a feed's service came from (a batch relayed again
        changes nothing: `maintenance.record_service`)."""
        vehicle = await self._entities.get(tenant, "vehicle", vehicle_ref)
        check = BodyCheck(body, {"km", "at", "plan"})
        km = check.number("km", 0, MAX_KM)
        at = _time(check, utcnow())
        plan_id = None
        if body.get("plan") is not None:
            ref = check.text("plan", max_len=100)
            plan = None if ref is None else await self._plans.by_ref(tenant, ref)
            if ref is not None and plan is None:
                check.add("/plan", f"no maintenance plan {ref!r}", "exists")
            elif plan is not None and not await self._covers(tenant, plan, vehicle):
                check.add(
                    "/plan",
                    f"maintenance plan {plan['name']!r} does not apply to this vehicle "
                    "(its vehicles and group do not name it, and it has no state for it)",
                    "applies",
                )
            plan_id = None if plan is None else str(plan["_id"])
        check.done("service")
        service: Doc = {"at": at, "source": source}
        if km is not None:
            service["km"] = float(km)
        if plan_id is not None:
            service["plan"] = plan_id
        answer = {
            "vehicle": {"id": str(vehicle["_id"]), "plate": vehicle["data"].get("plate")},
            **service,
            "at": utc_text(at),  # (`…Z`, as every fleet time is written)
        }
        if authoritative:
            service["authoritative"] = True
        if report is not None:
            service["event"] = report
        await self._store.fleet.push_service(tenant, str(vehicle["_id"]), service)
        return answer

    async def _covers(self, tenant: str, plan: Doc, vehicle: Doc) -> bool:
        """Whether the plan applies to the vehicle as it is now (as the fold reads it), or
        keeps a state for it (the vehicle out of its scope for a while: `fold.py`
        `_check_plans`, as last written): a service for any other plan is refused, not
        queued to be skipped by the fold."""
        data = vehicle.get("data") or {}
        plate = str(data.get("plate") or vehicle.get("nk") or "")
        if plan_from_doc(plan).applies_to(plate, vehicle_groups(data)):
            return True
        saved = await self._store.fleet.state(tenant, str(vehicle["_id"]))
        plans = ((saved or {}).get("state") or {}).get("plans") or {}
        return str(plan["_id"]) in plans


def _time(check: BodyCheck, now: datetime) -> datetime:
    value = check.body.get("at")
    if value is None:
        return now
    # compared as written: year 9999 in Brasília is in the future, not past the calendar
    written = rfc3339_as_written(value) if isinstance(value, str) else None
    if written is None:
        check.add(
            "/at", "at is an RFC 3339 time with an offset, e.g. 2026-12-01T12:00:00Z", "format"
        )
        return now
    if too_far_ahead(written, now):  # a typo or a wrong clock, not a plan
        check.add("/at", "at is in the future: a service is recorded once done", "maximum")
        return now
    if written < EARLIEST:
        message = f"at is before 2000 ({written.date().isoformat()}): give the year in full"
        check.add("/at", message, "minimum")
        return now
    at = written.astimezone(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)
