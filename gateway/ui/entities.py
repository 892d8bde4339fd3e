"""Entity pages: browse and search each type; one entity's data and events; a vehicle's
odometer, current driver and driver history, assigning its driver, and its recent track,
geofences and maintenance plans (`fleet.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from gateway import paging
from gateway.clock import from_iso
from gateway.entities import public
from gateway.errors import FieldProblem, InvalidPayload, NotFound
from gateway.events import public_event
from gateway.schemas import ENTITY_TYPES
from gateway.schemas.registry import reference_field
from gateway.store.entities import FILTERABLE
from gateway.ui import choices
from gateway.ui.entity_forms import deleted_page, label_of, labels_for
from gateway.ui.fleet import vehicle_fleet
from gateway.ui.forms import FORM_ERRORS, Form, number_field, read_values
from gateway.ui.rendering import redirect, render
from gateway.ui.state import form_lang, form_of, session_of, tenant_of
from gateway.ui.templating import ZONE
from gateway.web.state import services_of

ASSIGN_FIELDS: Final = ("driver", "start", "ref")
SERVICE_FIELDS: Final = ("km", "at", "plan")
# A vehicle's driver history, newest first, a page at a time (`?drivers=` the cursor: the
# assignment the previous page ended with, as `GET .../drivers` pages it).
_DRIVER_HISTORY: Final = 10


def search_fields(etype: str) -> list[str]:
    """The fields a type can be searched by: its natural key, then its indexed fields."""
    key = reference_field(etype)
    return [key, *(f for f in FILTERABLE.get(etype, ()) if f != key)]


async def list_entities(request: web.Request) -> web.Response:
    etype = request.match_info["type"]
    service = services_of(request).entities
    services_of(request).schemas.require_type(etype)
    limit, cursor = paging.page_params(request.query)
    fields = search_fields(etype)
    typed = {k: v.strip() for k, v in request.query.items() if k in fields and v.strip()}
    filters = service.filters(etype, typed)
    docs = await service.find(tenant_of(request), etype, filters, after=cursor, limit=limit)
    schema = services_of(request).schemas.entity_schema(etype)
    context: dict[str, Any] = {
        "etype": etype,
        "types": ENTITY_TYPES,
        "fields": fields,
        "labels": {f: label_of(schema, f, labels_for(request, etype)) for f in fields},
        "typed": typed,
        "items": [public(d) for d in docs],
        "next_cursor": str(docs[-1]["_id"]) if len(docs) == limit else None,
    }
    return render(request, "entities/list.html", context)


async def entity_page(request: web.Request) -> web.Response:
    etype, ref = request.match_info["type"], request.match_info["ref"]
    try:
        return await _entity(request, etype, ref)
    except NotFound:
        # Links in the event log, flow runs and deliveries outlive the entity: its page
        # says so.
        return await deleted_page(request, etype, ref)


async def _entity(
    request: web.Request,
    etype: str,
    ref: str,
    form: Form | None = None,
    service_form: Form | None = None,
) -> web.Response:
    services = services_of(request)
    tenant = tenant_of(request)
    doc = await services.entities.get(tenant, etype, ref)
    entity = public(doc)
    events = await services.events.find(tenant, entity_id=entity["id"], limit=20)
    context: dict[str, Any] = {
        "etype": etype,
        "entity": entity,
        "events": [public_event(e) for e in events],
        "driver": None,
        "history": [],
        "history_first": False,
        "history_next": None,
        "form": form or Form(),
        "service_form": service_form or Form(),
        "drivers": [],
    }
    if etype == "vehicle":
        assignments = services.notify.assignments
        current = await assignments.current(tenant, entity["id"])
        context["driver"] = None if current is None else current.as_dict()
        limit, _ = paging.page_params(request.query, default=_DRIVER_HISTORY)
        before = request.query.get("drivers") or None
        history = await assignments.history(tenant, entity["id"], before=before, limit=limit)
        context["history"] = [a.as_dict() for a in history]
        context["history_first"] = before is not None
        context["history_next"] = history[-1].id if len(history) == limit else None
        drivers = await choices.entities(request, "driver", ("cpf", "name"))
        context["drivers"] = [(d["data"].get("cpf"), d["data"].get("name")) for d in drivers]
        context["fleet"] = await vehicle_fleet(request, doc)
    failed = form or service_form
    return render(request, "entities/detail.html", context, status=422 if failed else 200)


async def assign_driver(request: web.Request) -> web.Response:
    """A vehicle's driver from a time (default now) on, or nobody: source `admin`."""
    ref = request.match_info["ref"]
    values = read_values(form_of(request))
    try:
        driver, start = _assignment(values)
        result = await services_of(request).notify.assignments.assign(
            tenant_of(request),
            ref,
            driver,
            start=start,
            ref=values.get("ref") or None,
            author=session_of(request).subject,
        )
    except FORM_ERRORS as exc:
        return await _entity(request, "vehicle", ref, Form(values).refuse(exc, ASSIGN_FIELDS))
    flash = "entities.assigned" if result.changed else "entities.assigned_already"
    return redirect(f"/admin/entities/vehicle/{ref}", flash=flash)


def _assignment(values: Mapping[str, Any]) -> tuple[str | None, datetime | None]:
    """The driver (None: nobody) and the start, read as Brasília time like every time the
    pages show; every problem of the two at once."""
    problems = []
    nobody = values.get("nobody") == "on"
    driver = None if nobody else (values.get("driver") or None)
    if driver is None and not nobody:
        message = "driver is a driver's id or CPF; or choose nobody"
        problems.append(FieldProblem("/driver", message, "required"))
    start = None
    if raw := values.get("start"):
        try:
            start = from_iso(raw)
        except ValueError:
            problems.append(FieldProblem("/start", f"not a date and time: {raw!r}", "format"))
        else:
            start = start if start.tzinfo else start.replace(tzinfo=ZONE)
    if problems:
        raise InvalidPayload("invalid driver assignment", problems)
    return driver, start


async def record_service(request: web.Request) -> web.Response:
    """A service done on a vehicle (`POST /api/v1/entities/vehicle/{ref}/services`): its
    plans, all or one, reset at the next fold; the time typed is Brasília time."""
    ref = request.match_info["ref"]
    values = read_values(form_of(request))
    body: dict[str, Any] = {
        "km": number_field(values, "km", lang=form_lang(request), integer=False)
    }
    if raw := values.get("at"):
        try:
            at = from_iso(raw)
        except ValueError:
            body["at"] = raw  # the use case names it
        else:
            at = at if at.tzinfo else at.replace(tzinfo=ZONE)
            try:  # in UTC: Brasília's offset before 1914 has seconds, which RFC 3339 lacks
                body["at"] = at.astimezone(UTC).isoformat()
            except OverflowError:  # past year 9999 in UTC: the use case says it is ahead
                body["at"] = at.isoformat()
    body["plan"] = values.get("plan") or None
    try:
        await services_of(request).vehicle_services.record(
            tenant_of(request),
            ref,
            body,
            source=f"admin:{session_of(request).subject}",
            authoritative=True,  # an admin's: the base as given (a correction too)
        )
    except FORM_ERRORS as exc:
        refused = Form(values).refuse(exc, SERVICE_FIELDS)
        return await _entity(request, "vehicle", ref, service_form=refused)
    return redirect(f"/admin/entities/vehicle/{ref}", flash="entities.service_recorded")
