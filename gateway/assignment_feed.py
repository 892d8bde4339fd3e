"""Driver assignments reported by events: the relay hands every batch of relayed events here
(next to the delivery fan-out and the flow starter), and the ones that say who drives a
vehicle become changes in its history, through `AssignmentService.assign`:

    checklist.completed                a checklist with a vehicle and a driver: that driver
                                       from its `completed_at` (source checklist, ref its key)
    entity.updated of a checklist      one whose `driver_cpf`, `completed_at` or
                                       `vehicle_plate` changed (a correction): the new report
                                       is recorded, and the change the earlier one recorded
                                       withdrawn (unless the new one replaced it, at the same
                                       vehicle and instant); what later reports of its driver
                                       said stands (`AssignmentService.withdraw`)
    entity.deleted of a checklist      its report withdrawn the same way
    entity.created / entity.updated    a vehicle written carrying `current_driver` (cpf or
    of a vehicle                       id), created with it or changing anything of it (a
                                       removal: nobody drives it): from the time
                                       its `current_driver.since` says (the partner's
                                       handover time), else the event's. Whoever
                                       wrote it (`_REPORTERS`): a trigger or a
                                       schedule (an ERP's feed, pushed or polled: source
                                       erp), an action's write-back (an HR lookup: hr), an
                                       admin (admin), a flow's `set` (flow, with its run's
                                       chain); ref `<origin kind>:<origin id>`. Never the
                                       history's own write of the field (its origin names
                                       the change, `assignment`)
    entity.* of a driver               the history follows its drivers: one created or
                                       renamed is the `{id, cpf, name}` its changes (by CPF)
                                       and the vehicles' `current_driver` name (a vehicle
                                       that could not be written is logged and its changes
                                       marked `unsynced`: it follows at the driver's next
                                       write, of any field); a deleted one
                                       drives nothing from the deletion (`driver_deleted`)
    vehicle.driver.identified          a tracker identified its driver (an iButton, an RFID
                                       card, a driver key): the event's `detail.driver.
                                       attributes` name a partner id of the driver
                                       (`{geotab_driver_id: "b3A"}`), and the one driver of
                                       ours carrying it (`attributes.geotab_driver_id`)
                                       drives from the detail's `occurred_at` (source
                                       tracker, ref `<attribute>:<value>`)
    vehicle.driver.unidentified        the tracker identifies nobody from the detail's
                                       `occurred_at` (a logout, a key removed): the
                                       tracker's assignment in force then ends there
                                       ("nobody" from that time); one another source
                                       recorded (an admin, an ERP) is left alone, and so
                                       is one of another driver when the detail names
                                       the driver who left (`driver.attributes`)

Flows record what an HR system answers with a fetch step's `assign` (`flows/steps.py`). A
vehicle write naming by CPF a driver the tenant does not have yet records that CPF pending
(`assign`'s `pending`: the report's `{cpf, name}`, no `id`), so the driver before stops
driving there; the driver's record, once written, completes it (`follow_driver`, by CPF).
Any other report that names an unknown driver or vehicle is logged and skipped: it never
holds up the relay; so is one whose time (a checklist's `completed_at`, a tracker's
`occurred_at`: when it happened) is `too_far_ahead` of its handling, a clock gone wrong, as
the checklist's odometer reading and service are (it is no handover scheduled for then); so
is an identification no driver of ours (or more than one) carries: the partner's id stays on
the vehicle and in the event, and nobody is assigned. Repeats record no change (`assign`
keeps them on the change in force, `repeats`), so a relay that runs a batch twice, or a
tracker that sends an identification again, records nothing twice; a late identification is
inserted at its time and covers only the gap up to the next change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.assignments import AssignmentService, AssignResult
from gateway.entities import (
    FUTURE_TOLERANCE_S,
    EntityService,
    Origin,
    reported_since,
    too_far_ahead,
)
from gateway.errors import Conflict, InvalidPayload, NotFound
from gateway.flows.recipients import parse_time
from gateway.store import Doc
from gateway.store.entities import is_lookup_field, lookup_text

log = logging.getLogger(__name__)

_VEHICLE_WRITES = ("entity.created", "entity.updated")
# The writers of a vehicle whose `current_driver` says who drives it, and the source each
# is recorded as: "exactly as if pushed" (SPEC §6) makes a schedule a trigger.
_REPORTERS = {"trigger": "erp", "schedule": "erp", "action": "hr", "admin": "admin", "flow": "flow"}
# What the history and the vehicles' `current_driver` copy of a driver (its id never changes).
_DRIVER_COPY = frozenset({"name", "cpf"})
_IDENTIFIED = "vehicle.driver.identified"
_UNIDENTIFIED = "vehicle.driver.unidentified"


class AssignmentFeed:
    """`await feed(events) -> recorded`."""

    def __init__(self, assignments: AssignmentService, entities: EntityService) -> None:
        self._assignments = assignments
        self._entities = entities

    async def __call__(self, events: Sequence[Doc]) -> int:
        recorded = 0
        for event in events:
            if (event.get("entity") or {}).get("type") == "driver":
                recorded += await self._driver_written(event)
                continue
            if _is_checklist_correction(event):
                recorded += await self._checklist_corrected(event)
                continue
            if event["type"] == _UNIDENTIFIED:
                recorded += await self._unidentified(event)
                continue
            report = (
                _report(event) if event["type"] != _IDENTIFIED else await self._identified(event)
            )
            if report is not None:
                recorded += await self._record(event, *report)
        return recorded

    async def heard(
        self, tenant: str, vehicle_id: str, value: Mapping[str, Any], origin: Origin
    ) -> None:
        """A vehicle write's report of who drives that the write left out, the history having
        that driver at its `since` (`EntityService.heard`): no event brings it here, so the
        write hands it over, and it is kept as the relayed report would be (a repeat of the
        change in force then, `AssignmentService.hear`), with the source and ref a relayed
        one gets from its writer (`_REPORTERS`)."""
        source = _REPORTERS.get(origin.kind)
        since = reported_since(value)
        if source is None or since is None:
            return
        said = f"{origin.kind}:{origin.id}"
        await self._assignments.hear(
            tenant, vehicle_id, value, since, source=source, ref=said[:200], author=said
        )

    async def _identified(self, event: Doc) -> tuple[str, str, datetime, str, str] | None:
        """The driver of ours a tracker's identification names, from its time."""
        entity = event.get("entity") or {}
        match = _partner_ids(event)
        if entity.get("type") != "vehicle" or not match:
            return None
        ref = _ref(match)
        found = await self._entities.find(event["tenant"], "driver", match, after=None, limit=2)
        if len(found) != 1:
            why = "no driver" if not found else "more than one driver"
            log.info("identification in event %s: %s carries %s", event["_id"], why, ref)
            return None
        return entity["id"], str(found[0]["_id"]), _start(event), "tracker", ref

    async def _unidentified(self, event: Doc) -> int:
        """The end of a tracker's identification: its assignment ends at the event's time."""
        entity = event.get("entity") or {}
        if entity.get("type") != "vehicle":
            return 0
        match = _partner_ids(event)
        origin = event.get("origin") or {}
        at = _start(event)
        if self._wrong_clock(event, at):
            return 0
        try:
            result = await self._assignments.end(
                event["tenant"],
                entity["id"],
                at=at,
                source="tracker",
                ref=_ref(match) if match else None,
                author=f"{origin.get('kind')}:{origin.get('id')}",
            )
        except (InvalidPayload, NotFound, Conflict) as exc:
            log.info("end of identification in event %s not recorded: %s", event["_id"], exc.detail)
            return 0
        if result is None:
            log.info(
                "end of identification in event %s: no tracker assignment in force", event["_id"]
            )
            return 0
        return int(result.changed)

    async def _driver_written(self, event: Doc) -> int:
        """The history follows its drivers: a driver created or renamed is the one its changes
        name (by CPF); any other write only finishes the vehicles a follow before could not
        write; a deleted driver drives nothing from the deletion on."""
        tenant, entity = event["tenant"], event["entity"]
        if event["type"] in ("entity.created", "entity.updated"):
            copied = event["type"] == "entity.created" or any(
                c.get("field") in _DRIVER_COPY for c in event.get("changes") or ()
            )
            return await self._assignments.follow_driver(tenant, entity["id"], copied=copied)
        cpf = (event.get("data") or {}).get("cpf")
        if event["type"] != "entity.deleted" or not isinstance(cpf, str):
            return 0
        origin = event.get("origin") or {}
        try:
            return await self._assignments.driver_deleted(
                tenant,
                entity["id"],
                cpf,
                at=event["occurred_at"],
                source=_REPORTERS.get(str(origin.get("kind")), "admin"),
                ref=f"driver deleted:{cpf}",
                author=f"{origin.get('kind')}:{origin.get('id')}",
            )
        except (InvalidPayload, Conflict) as exc:
            log.info("deletion in event %s not followed: %s", event["_id"], exc.detail)
            return 0

    async def _checklist_corrected(self, event: Doc) -> int:
        """A checklist's vehicle, driver or completion corrected, or the checklist deleted:
        its report is taken again. The new one is recorded, and the change the earlier report
        recorded leaves the history, unless the new one replaced it (recorded at the same
        vehicle and instant): a corrected driver who cannot be recorded (no driver of the
        tenant) still takes the old one's report back."""
        data: dict[str, Any] = event.get("data") or {}
        before = dict(data)
        for change in event.get("changes") or ():
            if change.get("field") in _CHECKLIST_REPORT:
                before[change["field"]] = change.get("old")
        old = _checklist_report(before)
        new = None if event["type"] == "entity.deleted" else _checklist_report(data)
        recorded, replaced = 0, False
        if new is not None:
            result = await self._assign(event, *new)
            recorded += result is not None and result.changed
            same = old is not None and (new[0], new[2]) == (old[0], old[2])
            replaced = result is not None and same
        if old is not None and not replaced:
            vehicle, _, start, source, ref = old
            try:
                withdrawn = await self._assignments.withdraw(
                    event["tenant"], vehicle, start, source=source, ref=ref
                )
            except (InvalidPayload, NotFound) as exc:
                log.info("checklist correction in event %s: %s", event["_id"], exc.detail)
            else:
                recorded += withdrawn
        return recorded

    async def _record(
        self, event: Doc, vehicle: str, driver: str | None, start: datetime, source: str, ref: str
    ) -> int:
        result = await self._assign(event, vehicle, driver, start, source, ref)
        return int(result is not None and result.changed)

    async def _assign(
        self, event: Doc, vehicle: str, driver: str | None, start: datetime, source: str, ref: str
    ) -> AssignResult | None:
        """The report recorded (or found a repeat); None when it cannot be (logged)."""
        if self._wrong_clock(event, start):
            return None
        origin = event.get("origin") or {}
        # A flow run's write: the history's write of the field is a link of its chain.
        chain = {k: origin[k] for k in ("run", "depth") if k in origin}
        try:
            result = await self._assignments.assign(
                event["tenant"],
                vehicle,
                driver,
                start=start,
                source=source,
                ref=ref,
                author=f"{origin.get('kind')}:{origin.get('id')}",
                chain=chain or None,
                pending=_reported_copy(event, driver),
            )
        except (InvalidPayload, NotFound, Conflict) as exc:
            log.info("assignment from event %s not recorded: %s", event["_id"], exc.detail)
            return None
        return result

    def _wrong_clock(self, event: Doc, start: datetime) -> bool:
        """A report of what happened at `start` too far ahead of now: its reporter's clock
        is wrong (logged; not recorded)."""
        if not too_far_ahead(start, self._assignments.now()):
            return False
        log.info(
            "assignment from event %s not recorded: its time %s is more than %d s ahead "
            "(a clock gone wrong)",
            event["_id"],
            start.isoformat(),
            FUTURE_TOLERANCE_S,
        )
        return True


def _report(event: Doc) -> tuple[str, str | None, datetime, str, str] | None:
    """(vehicle, driver or None for nobody, start, source, ref) when the event says who
    drives a vehicle."""
    data: dict[str, Any] = event.get("data") or {}
    entity = event.get("entity") or {}
    if event["type"] == "checklist.completed":
        return _checklist_report(data)
    origin = event.get("origin") or {}
    source = _REPORTERS.get(str(origin.get("kind")))
    if (
        event["type"] in _VEHICLE_WRITES
        and entity.get("type") == "vehicle"
        and source is not None
        and "assignment" not in origin
    ):
        reported, driver = _driver_reported(event)
        if reported:
            ref = f"{origin['kind']}:{origin.get('id')}"[:200]
            return entity["id"], driver, _since(event) or event["occurred_at"], source, ref
    return None


_CHECKLIST_REPORT = ("vehicle_plate", "driver_cpf", "completed_at")
"""A checklist's members that say who drove which vehicle from when."""


def _checklist_report(data: Mapping[str, Any]) -> tuple[str, str, datetime, str, str] | None:
    """(vehicle, driver, start, source, ref) of a checklist naming its vehicle and driver."""
    plate, cpf = data.get("vehicle_plate"), data.get("driver_cpf")
    start = _time(data.get("completed_at"))
    if isinstance(plate, str) and plate and isinstance(cpf, str) and cpf and start is not None:
        return plate, cpf, start, "checklist", f"checklist:{data.get('key')}"
    return None


def _is_checklist_correction(event: Doc) -> bool:
    """An update of a checklist changing who drove which vehicle from when, or its deletion."""
    data = event.get("data") or {}
    if (event.get("entity") or {}).get("type") != "other" or data.get("kind") != "checklist":
        return False
    return event["type"] == "entity.deleted" or (
        event["type"] == "entity.updated"
        and any(c.get("field") in _CHECKLIST_REPORT for c in event.get("changes") or ())
    )


def _partner_ids(event: Doc) -> dict[str, str]:
    """The partner ids the event's `detail.driver.attributes` name, as lookup fields."""
    detail = event.get("detail") or {}
    driver = detail.get("driver") if isinstance(detail, dict) else None
    named = driver.get("attributes") if isinstance(driver, dict) else None
    if not isinstance(named, dict):
        return {}
    return {
        f"attributes.{name}": text
        for name, value in sorted(named.items())
        if is_lookup_field(f"attributes.{name}") and (text := lookup_text(value))
    }


def _ref(match: dict[str, str]) -> str:
    return ",".join(f"{k.removeprefix('attributes.')}:{v}" for k, v in match.items())[:200]


def _start(event: Doc) -> datetime:
    """The time the detail says (`occurred_at`), else the event's."""
    detail = event.get("detail") or {}
    said = _time(detail.get("occurred_at")) if isinstance(detail, dict) else None
    return said or event["occurred_at"]


def _reported_copy(event: Doc, driver: str | None) -> dict[str, str] | None:
    """The `{cpf, name}` a vehicle write reports of the driver it names by CPF (`driver`): a
    driver the tenant does not have yet is recorded pending with it (`AssignmentService.
    assign`'s `pending`). None for any other report (a checklist's, a tracker's, by id)."""
    if (event.get("entity") or {}).get("type") != "vehicle" or event["type"] not in _VEHICLE_WRITES:
        return None
    current = (event.get("data") or {}).get("current_driver")
    if driver is None or not isinstance(current, dict) or current.get("cpf") != driver:
        return None
    name = current.get("name")
    return {"cpf": driver, **({"name": name} if isinstance(name, str) and name else {})}


def _since(event: Doc) -> datetime | None:
    """The handover time a vehicle write's `current_driver.since` says (the ERP's, HR's):
    the driver drives from then, not from the write's time."""
    current = (event.get("data") or {}).get("current_driver")
    return _time(current.get("since")) if isinstance(current, dict) else None


def _time(value: Any) -> datetime | None:
    """A time the mapping wrote (a datetime once stored) or an RFC 3339 text."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return parse_time(value)


def _driver_reported(event: Doc) -> tuple[bool, str | None]:
    """Whether a vehicle write reports who drives it, and the driver (a CPF or an id; None:
    nobody). Created with a `current_driver`, or an update that changed anything of it: the
    field is replaced whole, so what the write left there is what its writer said, and an
    update that changed only the name or dropped the `id` (the ERP's `{cpf, name}` over the
    history's `{id, cpf, name}`) reports the CPF it names as much as a new CPF does. Of the
    two members, the one the update changed names the driver (an admin's
    `{"current_driver": {"id": …}}` names the driver by its id), the CPF when both or
    neither changed; an update that removed the field reports that nobody drives."""
    current = (event.get("data") or {}).get("current_driver")
    if event["type"] == "entity.created":
        changed = {"cpf", "id"}
    else:
        fields = [
            f
            for c in event["changes"]
            if (f := str(c.get("field", ""))) == "current_driver" or f.startswith("current_driver.")
        ]
        if not fields:
            return False, None
        if current is None:
            return True, None
        changed = (
            {"cpf", "id"}
            if "current_driver" in fields
            else {f.removeprefix("current_driver.") for f in fields}
        )
    if not isinstance(current, dict):
        return False, None
    for member in [m for m in ("cpf", "id") if m in changed] + ["cpf", "id"]:
        value = current.get(member)
        if isinstance(value, str) and value:
            return True, value
    return False, None
