"""Who a `notify` step reaches, and at which address for the channel's type.

    driver: current                 the driver of the event's vehicle when the run runs, not
                                    at the event's time (assignment history)
    driver: {vehicle?, at?}         the driver of a vehicle (default: the event's) at a time
                                    (default: now): "the driver at the infraction", or at the
                                    event's device time for a tracker that uploads late
    driver: {from: steps.hr}        a driver in the context (a fetched answer); its CPF finds
                                    the driver entity, whose push tokens and language join in
    operators: {role: ...}          the tenant's active operators with that role (managers)
    address: [...]                  fixed addresses

A recipient without the contact the channel needs (a driver with no e-mail, no phone, no push
token) is *unreachable*: listed with the reason, not sent, never an error of the run. A push
goes to every token of a driver, one message each.

A fetched driver's contacts replace the stored driver's, but only as text (an e-mail address,
a phone number) or a list of text (push tokens): a fetched contact of another type (a number,
a list where text goes) is skipped and listed unreachable with why, and the stored driver's
contact is used instead, as for a contact the fetch did not give (null, blank text, an empty
list or one of blank text).

`operators: {role}` reaches the active operators with the role (status active or unset, read
so from the database), oldest first, at most MAX_OPERATORS; more are listed unreachable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from gateway.assignments import AssignmentService
from gateway.clock import from_iso
from gateway.entities import EntityService
from gateway.errors import NotFound
from gateway.flows.model import AssignSpec, DriverSpec, RecipientSpec
from gateway.formats.json_tree import a_json_type
from gateway.notify.email import mailbox
from gateway.notify.notifier import Recipient
from gateway.schemas.ids import e164

MAX_OPERATORS = 500
_CONTACT = {"email": "e-mail address", "sms": "phone number", "push": "push token"}
_FIELD = {"email": "email", "sms": "phone", "push": "push_tokens"}
_CONTACT_TYPE = {"email": str, "phone": str, "push_tokens": list}


@dataclass(slots=True)
class Resolved:
    recipients: list[Recipient] = field(default_factory=list)
    unreachable: list[dict[str, Any]] = field(default_factory=list)


class RecipientResolver:
    def __init__(self, entities: EntityService, assignments: AssignmentService) -> None:
        self._entities = entities
        self._assignments = assignments

    async def resolve(
        self,
        tenant: str,
        specs: tuple[RecipientSpec, ...],
        channel_type: str,
        context: Mapping[str, Any],
    ) -> Resolved:
        """Raises the mapping engine's EvalError when an expression fails."""
        found = Resolved()
        for spec in specs:
            if spec.addresses:
                found.recipients += [Recipient(a) for a in spec.addresses]
            elif spec.role is not None:
                operators = await self._operators(tenant, spec.role)
                for operator in operators[:MAX_OPERATORS]:
                    _add(found, operator, channel_type, None, f"operator {operator['name']}")
                if not operators:
                    reason = f"no active operator has role {spec.role}"
                    found.unreachable.append(
                        {"recipient": f"operators {spec.role}", "reason": reason}
                    )
                elif len(operators) > MAX_OPERATORS:
                    reason = (
                        f"more than {MAX_OPERATORS} active operators have role {spec.role}: "
                        f"the {MAX_OPERATORS} oldest are sent to, the others are not"
                    )
                    found.unreachable.append(
                        {"recipient": f"operators {spec.role}", "reason": reason}
                    )
            elif spec.driver is not None:
                driver, why, skipped = await self._driver(tenant, spec.driver, context)
                if driver is None:
                    found.unreachable.append({"recipient": "driver", "reason": why})
                else:
                    label = f"driver {driver.get('name') or driver.get('cpf')}"
                    _add(found, driver, channel_type, driver.get("id"), label, skipped)
        # One message per address: a driver who is also a fleet manager, a token listed twice.
        # The first recipient stands (a driver's, with the driver id and language, when the
        # driver comes first).
        seen: set[str] = set()
        unique = []
        for recipient in found.recipients:
            key = same_address(recipient.address, channel_type)
            if key not in seen:
                seen.add(key)
                unique.append(recipient)
        found.recipients = unique
        return found

    async def _operators(self, tenant: str, role: str) -> list[dict[str, Any]]:
        """The active operators with `role` (status unset is active), oldest first: at most
        MAX_OPERATORS + 1, so that more than MAX_OPERATORS shows."""
        docs = await self._entities.find(
            tenant,
            "operator",
            {"role": role},
            after=None,
            limit=MAX_OPERATORS + 1,
            excluding={"status": "inactive"},
        )
        return [{**d["data"], "id": str(d["_id"])} for d in docs]

    async def _driver(
        self, tenant: str, spec: DriverSpec, context: Mapping[str, Any]
    ) -> tuple[dict[str, Any] | None, str, dict[str, Any]]:
        """The driver, why there is none, and the fetched contacts skipped (by field)."""
        if spec.source is not None:
            return await self._driver_from(tenant, spec.source.value(context))
        driver, why = await self._assigned(tenant, spec, context)
        return driver, why, {}

    async def _assigned(
        self, tenant: str, spec: DriverSpec, context: Mapping[str, Any]
    ) -> tuple[dict[str, Any] | None, str]:
        vehicle = (
            spec.vehicle.value(context) if spec.vehicle is not None else _event_vehicle(context)
        )
        if not isinstance(vehicle, str) or not vehicle:
            return None, "the event is not about a vehicle; say which (driver: {vehicle: ...})"
        when = parse_time(spec.at.value(context)) if spec.at is not None else None
        if spec.at is not None and when is None:
            return None, f"{spec.at.text} is not a time ({TIME_FORMS})"
        try:
            assignment = (
                await self._assignments.current(tenant, vehicle)
                if when is None
                else await self._assignments.driver_at(tenant, vehicle, when)
            )
        except NotFound:
            return None, f"no vehicle {vehicle!r}"
        if assignment is None or assignment.driver is None:
            at = "now" if when is None else f"at {when.isoformat()}"
            return None, f"vehicle {await self._plate(tenant, vehicle)} had no driver {at}"
        if "id" not in assignment.driver:  # pending: a CPF the tenant had no driver of
            cpf = assignment.driver["cpf"]
            found, _ = await self._driver_entity(tenant, cpf)  # written since, not followed yet
            if found is None:
                at = "now" if when is None else f"at {when.isoformat()}"
                plate = await self._plate(tenant, vehicle)
                return None, f"vehicle {plate}'s driver {at} is CPF {cpf}, not yet a driver here"
            return found, ""
        return await self._driver_entity(tenant, assignment.driver["id"])

    async def _plate(self, tenant: str, vehicle: str) -> str:
        """The vehicle's plate, as people name it (`vehicle` may be its id), else `vehicle`."""
        try:
            doc = await self._entities.get(tenant, "vehicle", vehicle)
        except NotFound:  # deleted meanwhile
            return vehicle
        plate = doc["data"].get("plate")
        return plate if isinstance(plate, str) and plate else vehicle

    async def _driver_from(
        self, tenant: str, value: Any
    ) -> tuple[dict[str, Any] | None, str, dict[str, Any]]:
        if not isinstance(value, Mapping) or not value:
            return None, "no driver in the context (the fetch found nobody?)", {}
        fetched = {k: v for k, v in value.items() if v is not None and not _blank(v)}
        # A contact of another type (a number, a list where text goes) is no contact: skipped,
        # so the stored driver's stands (and the skipped one is listed unreachable).
        skipped = {
            k: fetched.pop(k)
            for k, kind in _CONTACT_TYPE.items()
            if k in fetched and not isinstance(fetched[k], kind)
        }
        # An `id` in the answer is the partner's (an HR employee number), never ours: the
        # driver's id is the stored entity's, which its token clean-up writes to.
        fetched.pop("id", None)
        driver = fetched
        cpf = driver.get("cpf")
        if isinstance(cpf, str) and cpf:
            stored, _ = await self._driver_entity(tenant, cpf)
            if stored is not None:  # what was fetched is fresher; the entity adds the rest
                driver = {**stored, **fetched, "id": stored["id"]}
        return driver, "", skipped

    async def _driver_entity(self, tenant: str, ref: str) -> tuple[dict[str, Any] | None, str]:
        try:
            doc = await self._entities.get(tenant, "driver", ref)
        except NotFound:
            return None, f"no driver {ref!r}"
        return {**doc["data"], "id": str(doc["_id"])}, ""


def _add(
    found: Resolved,
    person: Mapping[str, Any],
    channel_type: str,
    driver_id: str | None,
    label: str,
    skipped: Mapping[str, Any] | None = None,
) -> None:
    name, language = person.get("name"), person.get("language")
    contact, field = _CONTACT[channel_type], _FIELD[channel_type]
    if channel_type == "push":
        tokens = person.get(field)
        tokens = [t for t in tokens if isinstance(t, str) and t] if isinstance(tokens, list) else []
        found.recipients += [Recipient(t, name, driver_id, language) for t in tokens]
        reached = bool(tokens)
    else:
        address = person.get(field)
        reached = False
        if isinstance(address, str) and address.strip():
            found.recipients.append(Recipient(address, name, driver_id, language))
            reached = True
    if skipped and field in skipped:
        value = skipped[field]
        kind = "a list of text" if field == "push_tokens" else "text"
        then = "the driver record's is used" if reached else f"{label} has no other"
        reason = f"the fetched {field} {_shown(value)} is not {kind} ({a_json_type(value)}): {then}"
        found.unreachable.append({"recipient": label, "reason": reason})
    elif not reached:
        value = person.get(field)
        reason = f"{label} has no {contact}"
        if value not in (None, "", []):  # e.g. a stored contact of another type
            reason += f" ({field} is {_shown(value)})"
        found.unreachable.append({"recipient": label, "reason": reason})


def same_address(address: str, channel_type: str) -> str:
    """What makes two addresses one for the channel's type: an e-mail's mailbox in any case
    (mail systems do not tell Ana@ from ana@), a phone number in E.164, a push token as is."""
    text = address.strip()
    try:
        if channel_type == "email":
            return mailbox(text)[1].lower()
        if channel_type == "sms":
            return e164(text)
    except ValueError:  # sent as written, and refused then
        pass
    return text


def _blank(value: Any) -> bool:
    """Gives nothing: blank text, or a list of none but blank text (`"push_tokens": []`, a
    directory answering "no device known here"), where the stored driver's value stands."""
    if isinstance(value, list):
        return all(_blank(item) for item in value)
    return isinstance(value, str) and not value.strip()


def _shown(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def _event_vehicle(context: Mapping[str, Any]) -> str | None:
    ref = (context.get("event") or {}).get("entity") or {}
    return ref.get("id") if ref.get("type") == "vehicle" else None


LOCAL_ZONE: Final = ZoneInfo("America/Sao_Paulo")
"""The zone of a time written without its offset: Brazilian systems (an HR answer's
`"desde": "2026-11-01T08:00:00"` or `"25/11/2026 08:00"`) write local time."""

_BRAZILIAN: Final = re.compile(
    r"(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?", re.ASCII
)
_ISO_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
# A date with its zone and no time (`2026-11-25-03:00`, `2026-11-25Z`: XML Schema's xs:date,
# as SOAP and Java write one): a date alone too, not a time at the zone's offset.
_ISO_DATE_ZONED: Final = re.compile(r"(\d{4}-\d{2}-\d{2})(?:Z|[+-]\d{2}:?\d{2})", re.ASCII)
TIME_FORMS: Final = "RFC 3339, or ISO 8601 or dd/mm/yyyy HH:MM[:SS] in São Paulo's time"
"""What `parse_time` reads, as a reason says it."""
START_FORMS: Final = TIME_FORMS + ", or a date alone (that day's start)"
"""What `parse_start` reads, as a reason says it."""


def parse_time(value: Any) -> datetime | None:
    """A date-time: ISO 8601 (RFC 3339, or without an offset) or Brazilian, dd/mm/yyyy
    HH:MM[:SS], as the fine feed writes it; without an offset São Paulo's (`LOCAL_ZONE`).
    A date alone names no instant: None, as for anything else."""
    return _parse(value, date_alone=False)


def parse_start(value: Any) -> datetime | None:
    """What `parse_time` reads, and a date alone (`2026-11-25`, `25/11/2026`) as that day's
    start in São Paulo: since when a driver drives a vehicle, as HR systems write it."""
    return _parse(value, date_alone=True)


def _parse(value: Any, *, date_alone: bool) -> datetime | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if (zoned := _ISO_DATE_ZONED.fullmatch(text)) is not None:
        text = zoned[1]  # the day it names; its start is São Paulo's, as a date alone's
    if (brazilian := _BRAZILIAN.fullmatch(text)) is not None:
        day, month, year, hour, minute, second = brazilian.groups()
        if hour is None and not date_alone:
            return None
        try:
            parsed = datetime(
                int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
            )
        except ValueError:  # 31/02/2026, 25:00
            return None
    elif len(text) <= 10 and (not date_alone or _ISO_DATE.fullmatch(text) is None):
        return None  # a date alone where a time goes; a week or an ordinal day: no time
    else:
        try:
            parsed = from_iso(text)
        except ValueError:  # 2026-02-31, not ISO 8601
            return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=LOCAL_ZONE)


def _date_alone(value: Any) -> bool:
    """Whether `value` is a day without its time (`2026-11-25`, `25/11/2026`)."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    brazilian = _BRAZILIAN.fullmatch(text)
    iso = _ISO_DATE.fullmatch(text) or _ISO_DATE_ZONED.fullmatch(text)
    return iso is not None or (brazilian is not None and not brazilian[4])


def answer_after_asked(spec: AssignSpec, context: Mapping[str, Any]) -> str | None:
    """Why a fetched driver is not the one asked about, or None: the answer's assignment
    starts after the time asked (`assign.at`), so it names a later driver, as an HR system
    that ignores the time asked (`?em=`) and answers today's does; or it says a start that is
    no time, or only the day of the time asked (the handover that day may have come after
    it), so that nobody can tell whether it does. Without both (an answer without a start,
    or no `at`) there is nothing to check."""
    if spec.at is None or spec.start is None:
        return None
    asked, said = parse_time(spec.at.value(context)), spec.start.value(context)
    if asked is None or said is None or _blank(said):
        return None
    start = parse_start(said)
    if start is None:
        return (
            f"the answer's start {spec.start.text} = {_shown(said)} is not a time "
            f"({START_FORMS}): whether it names the driver at the time asked "
            f"({spec.at.text} = {asked.isoformat()}) cannot be told"
        )
    if _date_alone(said) and start.date() == asked.astimezone(LOCAL_ZONE).date():
        return (
            f"the answer names a driver since the day of the time asked ({spec.start.text} = "
            f"{_shown(said)}, a date alone; {spec.at.text} = {asked.isoformat()}): whether "
            "the handover came before or after it cannot be told"
        )
    if start <= asked:
        return None
    return (
        f"the answer names a driver since {start.isoformat()}, after the time asked "
        f"({spec.at.text} = {asked.isoformat()}): not the driver then (does the partner "
        "ignore the time it is asked about?)"
    )
