"""Entity pages: browse and search each type; one entity's data and events; a vehicle's
odometer, current driver and driver history."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import paging
from gateway.entities import public
from gateway.events import public_event
from gateway.schemas import ENTITY_TYPES
from gateway.schemas.registry import reference_field
from gateway.store.entities import FILTERABLE
from gateway.ui.rendering import render
from gateway.ui.state import tenant_of
from gateway.web.state import services_of


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
    context: dict[str, Any] = {
        "etype": etype,
        "types": ENTITY_TYPES,
        "fields": fields,
        "typed": typed,
        "items": [public(d) for d in docs],
        "next_cursor": str(docs[-1]["_id"]) if len(docs) == limit else None,
    }
    return render(request, "entities/list.html", context)


async def entity_page(request: web.Request) -> web.Response:
    etype, ref = request.match_info["type"], request.match_info["ref"]
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
    }
    if etype == "vehicle":
        assignments = services.notify.assignments
        current = await assignments.current(tenant, entity["id"])
        context["driver"] = None if current is None else current.as_dict()
        history = await assignments.history(tenant, entity["id"], before=None, limit=10)
        context["history"] = [a.as_dict() for a in history]
    return render(request, "entities/detail.html", context)
