"""Event pages: the tenant's event log, newest first, filtered by type and entity; one
event's data and changes, linked to its entity, with the deliveries it fanned out to and the
flow runs it started."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import paging
from gateway.delivery.deliveries import public_delivery
from gateway.events import public_event
from gateway.flows.runs import public_run
from gateway.ui.rendering import render
from gateway.ui.state import tenant_of
from gateway.web.state import services_of

_FILTERS = ("type", "entity_id")


async def list_events(request: web.Request) -> web.Response:
    limit, cursor = paging.page_params(request.query)
    filters = {k: v.strip() for k in _FILTERS if (v := request.query.get(k, "")).strip()}
    docs = await services_of(request).events.find(
        tenant_of(request),
        event_type=filters.get("type"),
        entity_id=filters.get("entity_id"),
        before=cursor,
        limit=limit,
    )
    context: dict[str, Any] = {
        "items": [public_event(d) for d in docs],
        "next_cursor": str(docs[-1]["_id"]) if len(docs) == limit else None,
        "filters": filters,
    }
    return render(request, "events/list.html", context)


async def event_page(request: web.Request) -> web.Response:
    tenant, services = tenant_of(request), services_of(request)
    event = public_event(await services.events.get(tenant, request.match_info["id"]))
    deliveries = await services.deliveries.list(
        tenant, {"event_id": event["id"]}, before=None, limit=50
    )
    runs = await services.notify.flow_runs.of_event(tenant, event["id"])
    context = {
        "event": event,
        "deliveries": [public_delivery(d) for d in deliveries],
        "runs": [public_run(r) for r in runs],
    }
    return render(request, "events/detail.html", context)
