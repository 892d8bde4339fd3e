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
# The event page's two lists, each paged by a cursor of its own name.
PAGED = ("deliveries", "runs")


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
    """One event, its deliveries (by id: subscription, then flow step) and its flow runs (by
    flow name): each list a page of `limit` (50), read further by its own cursor
    (`deliveries`, `runs`), so an event that fanned out to many is read entirely."""
    tenant, services = tenant_of(request), services_of(request)
    event = public_event(await services.events.get(tenant, request.match_info["id"]))
    limit, _ = paging.page_params(request.query)
    cursors = {k: request.query.get(k) or None for k in PAGED}
    deliveries = await services.deliveries.list(
        tenant, {"event_id": event["id"]}, before=cursors["deliveries"], limit=limit
    )
    runs = await services.notify.flow_runs.of_event(
        tenant, event["id"], limit, after=cursors["runs"]
    )
    context = {
        "event": event,
        "deliveries": [public_delivery(d) for d in deliveries],
        "runs": [public_run(r) for r in runs],
        "cursors": {k: v for k, v in cursors.items() if v is not None},
        # A list's pager keeps the other list where it is.
        "others": {k: {o: v for o, v in cursors.items() if o != k and v} for k in PAGED},
        "next_cursors": {
            "deliveries": str(deliveries[-1]["_id"]) if len(deliveries) == limit else None,
            "runs": str(runs[-1]["_id"]) if len(runs) == limit else None,
        },
    }
    return render(request, "events/detail.html", context)
