"""Delivery pages: filter by status, partner, action, entity or flow run; one delivery's
kind (webhook, a flow's call, a notification with its channel, recipient and rendered
message) and attempt timeline; replay one, or every failed one matching the filter."""

from __future__ import annotations

from aiohttp import web

from gateway import paging
from gateway.delivery.deliveries import STATUSES, parse_filters, public_delivery
from gateway.ui import choices
from gateway.ui.rendering import redirect, render
from gateway.ui.state import form_of, tenant_of
from gateway.web.state import services_of

_FILTERS = ("status", "partner_id", "action_id", "entity_id", "run_id")


async def list_deliveries(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    services = services_of(request)
    limit, cursor = paging.page_params(request.query)
    filters = parse_filters({k: v for k, v in request.query.items() if k in _FILTERS})
    docs = await services.deliveries.list(tenant, filters, before=cursor, limit=limit)
    actions = choices.named(await choices.actions(request))
    context = {
        "items": [public_delivery(d) for d in docs],
        "next_cursor": docs[-1]["_id"] if len(docs) == limit else None,
        "filters": filters,
        "statuses": STATUSES,
        "partners": choices.named(await choices.partners(request)),
        "actions": actions,
        "actions_by_id": dict(actions),
    }
    return render(request, "deliveries/list.html", context)


async def delivery_page(request: web.Request) -> web.Response:
    doc = await services_of(request).deliveries.get(tenant_of(request), request.match_info["id"])
    return render(request, "deliveries/detail.html", {"d": public_delivery(doc, full=True)})


async def replay_delivery(request: web.Request) -> web.Response:
    delivery_id = request.match_info["id"]
    await services_of(request).deliveries.replay(tenant_of(request), delivery_id)
    return redirect(f"/admin/deliveries/{delivery_id}", flash="deliveries.replayed")


async def replay_deliveries(request: web.Request) -> web.Response:
    data = form_of(request)
    filters = parse_filters({k: v for k in _FILTERS if isinstance(v := data.get(k), str) and v})
    count = await services_of(request).deliveries.replay_matching(tenant_of(request), filters)
    flash = "deliveries.replayed_many" if count else "deliveries.replayed_none"
    return redirect("/admin/deliveries?status=pending", flash=flash)
