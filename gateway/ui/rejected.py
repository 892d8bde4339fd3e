"""Rejected payloads: every call refused with a 422 (and every item a schedule could not
write), its problems and payload; replay one, or every pending one (of a trigger or
schedule)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from gateway import paging
from gateway.errors import GatewayError, InvalidPayload
from gateway.paging import MAX_PAGE
from gateway.ui.choices import every
from gateway.ui.forms import Form
from gateway.ui.rendering import redirect, render
from gateway.ui.state import form_of, tenant_of
from gateway.web.state import services_of


def _id(request: web.Request) -> str:
    return request.match_info["id"]


async def list_rejected(request: web.Request) -> web.Response:
    limit, cursor = paging.page_params(request.query)
    status = request.query.get("status") or None
    trigger_id = request.query.get("trigger_id") or None
    items = await services_of(request).rejected.list(
        tenant_of(request), trigger_id=trigger_id, status=status, before=cursor, limit=limit
    )
    next_cursor = items[-1]["id"] if len(items) == limit else None
    params = {k: v for k, v in (("status", status), ("trigger_id", trigger_id)) if v}
    context = {"items": items, "next_cursor": next_cursor, "params": params, "status": status}
    return render(request, "triggers/rejected.html", {**context, **await _owners(request)})


async def _owners(request: web.Request) -> dict[str, Any]:
    """What a rejected record was kept for, by its `trigger_id`: the tenant's triggers and
    schedules (a schedule's items are kept under its id), each as its name and page; and the
    same as the filter's options."""
    services, tenant = services_of(request), tenant_of(request)

    async def triggers(after: str | None) -> list[dict[str, Any]]:
        return await services.triggers.list(tenant, after=after, limit=MAX_PAGE)

    async def schedules(after: str | None) -> list[dict[str, Any]]:
        return await services.schedules.list(tenant, after=after, limit=MAX_PAGE)

    kinds = {
        "triggers": await every(triggers, lambda t: str(t["id"])),
        "schedules": await every(schedules, lambda s: str(s["id"])),
    }
    owners = {
        str(o["id"]): {"name": o["name"], "href": f"/admin/{kind}/{quote(str(o['id']), safe='')}"}
        for kind, found in kinds.items()
        for o in found
    }
    options = {
        kind: [(str(o["id"]), str(o["name"])) for o in found] for kind, found in kinds.items()
    }
    return {"owners": owners, "owner_options": options}


async def _back(request: web.Request, owner: str) -> tuple[str, str]:
    """Where a record's page links back to, and the link's words: the trigger it was kept for,
    or the schedule (a schedule's items are kept under its id); the record's list when
    neither is there any more."""
    services, tenant = services_of(request), tenant_of(request)
    pages = (
        (services.triggers.get, "/admin/triggers/", "rejected.back_to_trigger"),
        (services.schedules.get, "/admin/schedules/", "rejected.back_to_schedule"),
    )
    for get, base, label in pages:
        try:
            await get(tenant, owner)
        except GatewayError:
            continue
        return base + quote(owner, safe=""), label
    return f"/admin/rejected?{urlencode({'trigger_id': owner})}", "rejected.back_to_list"


async def _record_page(
    request: web.Request, form: Form | None = None, *, status: int = 200
) -> web.Response:
    record = await services_of(request).rejected.get(tenant_of(request), _id(request))
    context = {"record": record, "form": form or Form()}
    context["back"] = await _back(request, record["trigger_id"])
    return render(request, "triggers/rejected_one.html", context, status=status)


async def rejected_page(request: web.Request) -> web.Response:
    return await _record_page(request)


async def replay_rejected(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    try:
        await services_of(request).rejected.replay(tenant, _id(request))
    except InvalidPayload as exc:
        return await _record_page(request, Form().refuse(exc, ()), status=422)
    return redirect(f"/admin/rejected/{_id(request)}", flash="rejected.replayed")


async def replay_all_rejected(request: web.Request) -> web.Response:
    """Every pending one of a trigger (or schedule) when the form names it, else every
    pending one; back to the pending ones of the same list."""
    posted = form_of(request).get("trigger_id")
    trigger_id = posted if isinstance(posted, str) and posted else None
    result = await services_of(request).rejected.replay_all(
        tenant_of(request), trigger_id=trigger_id
    )
    flash = "rejected.replayed_all" if not result["failed"] else "rejected.replayed_some"
    query = {"status": "pending", **({"trigger_id": trigger_id} if trigger_id else {})}
    return redirect(f"/admin/rejected?{urlencode(query)}", flash=flash)
