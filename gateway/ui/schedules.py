"""Schedule pages: list (status, last run, last error, next run), create and edit (action,
interval or cron, time zone, cursor, target, dedupe), pause, resume, run now, reset, delete,
and a schedule's runs (items read, written, rejected, cursor, duration, error)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from gateway import paging
from gateway.actions.definitions import public_action
from gateway.errors import NotFound
from gateway.schedules.service import READ_BY
from gateway.schemas import ENTITY_TYPES
from gateway.ui import choices
from gateway.ui.forms import (
    FORM_ERRORS,
    Form,
    changes,
    editing,
    json_field,
    nest,
    number_field,
    read_values,
    stale_edit,
)
from gateway.ui.rendering import redirect, render
from gateway.ui.state import form_lang, form_of, tenant_of
from gateway.ui.templating import tojson_pretty
from gateway.web.state import services_of

TEXT_FIELDS: Final = (
    "name",
    "action_id",
    "every",
    "timezone",
    "cursor.from",
    "cursor.param",
    "cursor.more",
    "cursor.initial",
    "cursor.follow",
    "target.type",
    "target.entity_type",
    "target.kind",
    "target.mapping",
    "dedupe.by",
    "error",
)
JSON_FIELDS: Final = ("target.params", "request.query", "request.body")
INTEGER_FIELDS: Final = ("cursor.step", "dedupe.keep", "max_pages")
FIELDS: Final = (*TEXT_FIELDS, *JSON_FIELDS, *INTEGER_FIELDS)


def _id(request: web.Request) -> str:
    return request.match_info["id"]


def schedule_body(values: Mapping[str, Any], *, lang: str, initial: Any = None) -> dict[str, Any]:
    """A schedule form as the admin API's body; `initial` is the stored cursor.initial,
    kept a number when the form shows it unchanged."""
    flat: dict[str, Any] = {name: values.get(name) for name in TEXT_FIELDS}
    for name in INTEGER_FIELDS:
        flat[name] = number_field(values, name, lang=lang)
    for name in JSON_FIELDS:
        flat[name] = json_field(values, name)
    if initial is not None and values.get("cursor.initial") == str(initial):
        flat["cursor.initial"] = initial
    return nest(flat, FIELDS)


def form_values(schedule: Mapping[str, Any]) -> dict[str, Any]:
    """A stored schedule as the form that would write it."""
    cursor = schedule.get("cursor") or {}
    target = schedule["target"]
    dedupe = schedule.get("dedupe") or {}
    request = schedule.get("request") or {}
    initial = cursor.get("initial")
    return {
        "name": schedule["name"],
        "action_id": schedule["action_id"],
        "every": schedule["every"],
        "timezone": schedule.get("timezone") or "",
        "cursor.from": cursor.get("from") or "",
        "cursor.param": cursor.get("param") or "",
        "cursor.more": cursor.get("more") or "",
        "cursor.initial": "" if initial is None else str(initial),
        "cursor.step": str(cursor["step"]) if cursor.get("step") is not None else "",
        "cursor.follow": cursor.get("follow") or "",
        "target.type": target.get("type", "entities"),
        "target.entity_type": target.get("entity_type") or "",
        "target.kind": target.get("kind") or "",
        "target.mapping": target.get("mapping") or "",
        "target.params": _json_text(target.get("params")),
        "dedupe.by": dedupe.get("by") or "",
        "dedupe.keep": str(dedupe["keep"]) if dedupe.get("keep") is not None else "",
        "request.query": _json_text(request.get("query")),
        "request.body": _json_text(request.get("body")),
        "error": schedule.get("error") or "",
        "max_pages": str(schedule["max_pages"]),
    }


def _json_text(value: Any) -> str:
    return tojson_pretty(value) if value else ""


async def list_schedules(request: web.Request) -> web.Response:
    limit, cursor = paging.page_params(request.query)
    name = request.query.get("name", "").strip()
    items = await services_of(request).schedules.list(
        tenant_of(request), after=cursor, limit=limit, name=name or None
    )
    next_cursor = items[-1]["id"] if len(items) == limit else None
    context = {"items": items, "next_cursor": next_cursor, "name": name}
    return render(request, "schedules/list.html", context)


async def new_schedule(request: web.Request) -> web.Response:
    defaults = {"every": "5m", "timezone": "America/Sao_Paulo", "target.type": "entities"}
    return await _form(request, Form({**defaults, "max_pages": "10"}), None)


async def create_schedule(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    try:
        schedule = await services_of(request).schedules.create(
            tenant_of(request), schedule_body(values, lang=form_lang(request))
        )
    except FORM_ERRORS as exc:
        return await _form(request, Form(values).refuse(exc, FIELDS), None, status=exc.status)
    return redirect(f"/admin/schedules/{schedule['id']}", flash="schedules.created")


async def schedule_page(request: web.Request) -> web.Response:
    tenant, services = tenant_of(request), services_of(request)
    schedule = await services.schedules.get(tenant, _id(request))
    limit, cursor = paging.page_params(request.query)
    runs = await services.schedules.runs(tenant, schedule["id"], before=cursor, limit=limit)
    try:
        action = public_action(await services.actions.get_action(tenant, schedule["action_id"]))
    except NotFound:  # deleted since: the schedule's runs say so (kind configuration)
        action = None
    context = {
        "schedule": schedule,
        "action": action,
        "runs": runs,
        "next_cursor": runs[-1]["id"] if len(runs) == limit else None,
    }
    return render(request, "schedules/detail.html", context)


async def edit_schedule(request: web.Request) -> web.Response:
    schedule = await services_of(request).schedules.get(tenant_of(request), _id(request))
    return await _form(request, editing(form_values(schedule)), schedule)


async def update_schedule(request: web.Request) -> web.Response:
    tenant, schedules = tenant_of(request), services_of(request).schedules
    current = await schedules.get(tenant, _id(request))
    shown = form_values(current)
    values = read_values(form_of(request), shown=shown)
    if (stale := stale_edit(values, shown)) is not None:
        return await _form(request, stale, current, status=409)
    initial = (current.get("cursor") or {}).get("initial")
    lang = form_lang(request)
    try:
        body = changes(
            schedule_body(values, lang=lang, initial=initial),
            schedule_body(shown, lang=lang, initial=initial),
        )
        if body:
            await schedules.update(tenant, current["id"], body)
    except FORM_ERRORS as exc:
        refused = Form(values).refuse(exc, FIELDS)
        return await _form(request, refused, current, status=exc.status)
    # A change of what names the feed starts it again (ScheduleService.update).
    saved = "schedules.saved_reset" if READ_BY & set(body) else "schedules.saved"
    return redirect(f"/admin/schedules/{current['id']}", flash=saved)


async def pause_schedule(request: web.Request) -> web.Response:
    await services_of(request).schedules.pause(tenant_of(request), _id(request))
    return redirect(f"/admin/schedules/{_id(request)}", flash="schedules.paused")


async def resume_schedule(request: web.Request) -> web.Response:
    await services_of(request).schedules.resume(tenant_of(request), _id(request))
    return redirect(f"/admin/schedules/{_id(request)}", flash="schedules.resumed")


async def run_schedule(request: web.Request) -> web.Response:
    await services_of(request).schedules.run_now(tenant_of(request), _id(request))
    return redirect(f"/admin/schedules/{_id(request)}", flash="schedules.run_requested")


async def reset_schedule(request: web.Request) -> web.Response:
    """Start the feed again from `cursor.initial`, at once (`POST .../reset` of the API)."""
    await services_of(request).schedules.reset(tenant_of(request), _id(request))
    return redirect(f"/admin/schedules/{_id(request)}", flash="schedules.reset_done")


async def delete_schedule(request: web.Request) -> web.Response:
    await services_of(request).schedules.delete(tenant_of(request), _id(request))
    return redirect("/admin/schedules", flash="schedules.deleted")


async def _form(
    request: web.Request, form: Form, schedule: Mapping[str, Any] | None, *, status: int = 200
) -> web.Response:
    services = services_of(request)
    actions = await choices.actions(request)
    chosen = form.value("action_id")
    context = {
        "form": form,
        "schedule": schedule,
        # A schedule reads: GET actions and those marked read_only (the use case says so
        # too, next to the field, should another one be posted), and the one it names.
        "actions": [
            (str(a["_id"]), f"{a['name']} ({a['method']} {a.get('path') or '/'})")
            for a in actions
            if a["method"] == "GET" or a.get("read_only") or str(a["_id"]) == chosen
        ],
        "mappings": await choices.mappings(request, "inbound"),
        "target_types": services.schedules.target_types,
        "entity_types": ENTITY_TYPES,
    }
    return render(request, "schedules/form.html", context, status=status)
