"""Flow run pages: a flow's runs (filtered by status) and one run's step timeline, with the
outcome of each step and the deliveries it created, linked to their pages; a failed run is
replayed from the step that failed."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from gateway import paging
from gateway.delivery.deliveries import public_delivery
from gateway.flows.runs import STATUSES, public_run
from gateway.ui import choices
from gateway.ui.rendering import redirect, render
from gateway.ui.state import tenant_of
from gateway.web.state import services_of


async def list_flow_runs(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    limit, cursor = paging.page_params(request.query)
    status = request.query.get("status") or None
    docs = await services_of(request).notify.flow_runs.list(
        tenant_of(request), name, status=status, before=cursor, limit=limit
    )
    context: dict[str, Any] = {
        "name": name,
        "items": [public_run(d) for d in docs],
        "next_cursor": docs[-1]["_id"] if len(docs) == limit else None,
        "status": status,
        "statuses": STATUSES,
        "params": {"status": status} if status else {},
    }
    return render(request, "notify/flow_runs.html", context)


async def flow_run_page(request: web.Request) -> web.Response:
    tenant, services = tenant_of(request), services_of(request)
    doc = await services.notify.flow_runs.get(tenant, request.match_info["id"])
    run = public_run(doc, full=True)
    # A run's deliveries are one per call and one per address a notify step sends to: up to
    # 500 a step, 50 steps. The table is paged; every step's message has its status. One
    # more than a page is read, so that a last page that is full offers no *Next page* (to a
    # page with none of the run's deliveries).
    limit, cursor = paging.page_params(request.query, default=paging.MAX_PAGE)
    query = {"run_id": run["id"]}
    docs = await services.deliveries.list(tenant, query, before=cursor, limit=limit + 1)
    more, docs = len(docs) > limit, docs[:limit]
    statuses = await services.deliveries.statuses_of_run(tenant, run["id"])
    actions = await choices.actions(request)
    context = {
        "run": run,
        "deliveries": [public_delivery(d) for d in docs],
        "deliveries_total": len(statuses),
        "next_cursor": docs[-1]["_id"] if more else None,
        "first_page": cursor is not None,
        "statuses": statuses,
        "actions_by_id": {str(a["_id"]): a["name"] for a in actions},
    }
    return render(request, "notify/flow_run.html", context)


async def replay_flow_run(request: web.Request) -> web.Response:
    run_id = request.match_info["id"]
    services = services_of(request)
    await services.notify.flow_runs.replay(tenant_of(request), run_id)
    services.flow_runner.notify()
    return redirect(f"/admin/flow-runs/{quote(run_id, safe='')}", flash="flow_runs.replayed")
