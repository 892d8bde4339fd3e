"""Trigger pages: list, create (the URL and token shown once, with a curl example), rotate,
revoke, enable/disable, delete; and rejected payloads with their replay."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway import paging
from gateway.errors import InvalidPayload
from gateway.schemas import ENTITY_TYPES
from gateway.triggers.service import IssuedTrigger
from gateway.ui.forms import Form, nest, read_values
from gateway.ui.rendering import redirect, render
from gateway.ui.state import tenant_of
from gateway.web.state import services_of

FIELDS: Final = (
    "name",
    "entity_type",
    "kind",
    "methods",
    "mapping",
    "response_mapping",
    "format",
    "auth.token_in_query",
)


def _id(request: web.Request) -> str:
    return request.match_info["id"]


async def list_triggers(request: web.Request) -> web.Response:
    limit, cursor = paging.page_params(request.query)
    items = await services_of(request).triggers.list(tenant_of(request), after=cursor, limit=limit)
    next_cursor = items[-1]["id"] if len(items) == limit else None
    return render(request, "triggers/list.html", {"items": items, "next_cursor": next_cursor})


async def new_trigger(request: web.Request) -> web.Response:
    return await _form(request, Form({"methods": ["POST"], "format": "json"}))


async def create_trigger(request: web.Request) -> web.Response:
    values = read_values(await request.post(), lists=("methods",))
    form = Form(values)
    try:
        issued = await services_of(request).triggers.create(
            tenant_of(request), nest(values, FIELDS)
        )
    except InvalidPayload as exc:
        return await _form(request, form.refuse(exc, FIELDS), status=422)
    return _issued(request, issued, created=True)


async def trigger_page(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    services = services_of(request)
    trigger = await services.triggers.get(tenant, _id(request))
    rejected = await services.rejected.list(tenant, trigger_id=trigger["id"], limit=20)
    return render(
        request, "triggers/detail.html", {"trigger": trigger, "rejected": rejected, "form": Form()}
    )


async def rotate_trigger(request: web.Request) -> web.Response:
    values = read_values(await request.post())
    raw = str(values.get("grace_seconds") or "0")
    grace = int(raw) if raw.isdecimal() else -1  # the use case refuses it, by field
    tenant = tenant_of(request)
    try:
        issued = await services_of(request).triggers.rotate(
            tenant, _id(request), grace_seconds=grace
        )
    except InvalidPayload as exc:
        trigger = await services_of(request).triggers.get(tenant, _id(request))
        rejected = await services_of(request).rejected.list(tenant, trigger_id=trigger["id"])
        form = Form(values).refuse(exc, ("grace_seconds",))
        context = {"trigger": trigger, "rejected": rejected, "form": form}
        return render(request, "triggers/detail.html", context, status=422)
    return _issued(request, issued, created=False)


async def revoke_trigger(request: web.Request) -> web.Response:
    await services_of(request).triggers.revoke(tenant_of(request), _id(request))
    return redirect(f"/admin/triggers/{_id(request)}", flash="triggers.revoked")


async def set_trigger_status(request: web.Request) -> web.Response:
    status = (await request.post()).get("status")
    status = "disabled" if status == "disabled" else "active"
    await services_of(request).triggers.set_status(tenant_of(request), _id(request), status)
    return redirect(f"/admin/triggers/{_id(request)}", flash=f"triggers.now_{status}")


async def delete_trigger(request: web.Request) -> web.Response:
    await services_of(request).triggers.delete(tenant_of(request), _id(request))
    return redirect("/admin/triggers", flash="triggers.deleted")


def _issued(request: web.Request, issued: IssuedTrigger, *, created: bool) -> web.Response:
    """The one page that shows a trigger's credential; nothing keeps it (no-store)."""
    trigger = issued.trigger
    context = {
        "trigger": trigger,
        "token": issued.token,
        "secret": issued.secret,
        "created": created,
    }
    context["curl"] = _curl(trigger, issued.token)
    return render(request, "triggers/issued.html", context, status=201 if created else 200)


def _curl(trigger: dict[str, Any], token: str | None) -> str:
    credential = token if token is not None else "<token>"
    if "POST" in trigger["methods"]:
        return (
            f"curl -X POST '{trigger['url']}' \\\n"
            f"  -H 'Authorization: Bearer {credential}' \\\n"
            "  -H 'Content-Type: application/json' \\\n"
            "  -d @payload.json"
        )
    return f"curl '{trigger['url']}' \\\n  -H 'Authorization: Bearer {credential}'"


async def _form(request: web.Request, form: Form, *, status: int = 200) -> web.Response:
    mappings = await services_of(request).mappings.find(tenant_of(request), after=None, limit=200)
    context = {
        "form": form,
        "entity_types": ENTITY_TYPES,
        "inbound": [m.name for m in mappings if m.direction == "inbound"],
        "outbound": [m.name for m in mappings if m.direction == "outbound"],
    }
    return render(request, "triggers/new.html", context, status=status)


# -- rejected payloads -------------------------------------------------------------------------


async def list_rejected(request: web.Request) -> web.Response:
    limit, cursor = paging.page_params(request.query)
    status = request.query.get("status") or None
    trigger_id = request.query.get("trigger_id") or None
    items = await services_of(request).rejected.list(
        tenant_of(request), trigger_id=trigger_id, status=status, before=cursor, limit=limit
    )
    next_cursor = items[-1]["id"] if len(items) == limit else None
    params = {k: v for k, v in (("status", status), ("trigger_id", trigger_id)) if v}
    return render(
        request,
        "triggers/rejected.html",
        {"items": items, "next_cursor": next_cursor, "params": params, "status": status},
    )


async def rejected_page(request: web.Request) -> web.Response:
    record = await services_of(request).rejected.get(tenant_of(request), _id(request))
    return render(request, "triggers/rejected_one.html", {"record": record, "form": Form()})


async def replay_rejected(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    try:
        await services_of(request).rejected.replay(tenant, _id(request))
    except InvalidPayload as exc:
        record = await services_of(request).rejected.get(tenant, _id(request))
        form = Form().refuse(exc, ())
        return render(
            request, "triggers/rejected_one.html", {"record": record, "form": form}, status=422
        )
    return redirect(f"/admin/rejected/{_id(request)}", flash="rejected.replayed")


async def replay_all_rejected(request: web.Request) -> web.Response:
    trigger_id = (await request.post()).get("trigger_id")
    result = await services_of(request).rejected.replay_all(
        tenant_of(request),
        trigger_id=trigger_id if isinstance(trigger_id, str) and trigger_id else None,
    )
    flash = "rejected.replayed_all" if not result["failed"] else "rejected.replayed_some"
    return redirect("/admin/rejected?status=pending", flash=flash)
