"""Trigger pages: list, create (the URL and token shown once, with a curl example), edit,
rotate, revoke, enable/disable, delete; and rejected payloads with their replay."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway import paging
from gateway.auth.partner_hmac import PRESETS
from gateway.schemas import ENTITY_TYPES
from gateway.triggers.service import IssuedTrigger
from gateway.triggers.spec import AUTH_MODES, TARGETS, credentials_revision
from gateway.ui import choices
from gateway.ui.forms import (
    FORM_ERRORS,
    Form,
    changes,
    editing,
    json_field,
    nest,
    number_field,
    number_text,
    read_values,
    require_retyped,
    stale_edit,
    whole_field,
)
from gateway.ui.rendering import redirect, render
from gateway.ui.state import form_lang, form_of, tenant_of
from gateway.ui.templating import tojson_pretty
from gateway.ui.trigger_examples import curl_example, device_url
from gateway.web.state import services_of

# How a partner proves a call is theirs, chosen at creation: our token (the default), the
# partner's own HMAC signature (a preset, with a secret we issue or the partner gives), or the
# partner's own JWTs (its JWKS URL or public key, and the audience that ties them to us).
AUTH_FIELDS: Final = (
    "auth.mode",
    "auth.preset",
    "auth.secret",
    "auth.header",
    "auth.jwks_url",
    "auth.public_key_pem",
    "auth.audience",
    "auth.issuer",
)

FIELDS: Final = (
    "name",
    "target",
    "entity_type",
    "kind",
    "methods",
    "mapping",
    "response_mapping",
    "format",
    "answers",
    "auth.token_in_query",
    *AUTH_FIELDS,
)


# What an edit may change (entity type, kind and the auth mode are fixed at creation).
EDIT_FIELDS: Final = (
    "name",
    "methods",
    "mapping",
    "response_mapping",
    "format",
    "answers",
    "auth.token_in_query",
    "rate_limit.per_second",
    "rate_limit.burst",
    "max_body_bytes",
    "max_batch_items",
    "params",
    "expose",
    "input_schema",
    "auth.secret",
)


def _id(request: web.Request) -> str:
    return request.match_info["id"]


async def list_triggers(request: web.Request) -> web.Response:
    limit, cursor = paging.page_params(request.query)
    name = request.query.get("name", "").strip()
    items = await services_of(request).triggers.list(
        tenant_of(request), after=cursor, limit=limit, name=name or None
    )
    next_cursor = items[-1]["id"] if len(items) == limit else None
    context = {"items": items, "next_cursor": next_cursor, "name": name}
    return render(request, "triggers/list.html", context)


async def new_trigger(request: web.Request) -> web.Response:
    return await _form(
        request,
        Form({"methods": ["POST"], "format": "json", "answers": "json", "target": "entities"}),
    )


async def create_trigger(request: web.Request) -> web.Response:
    values = read_values(form_of(request), lists=("methods",))
    form = Form(values)
    try:
        require_retyped(form_of(request))
        issued = await services_of(request).triggers.create(
            tenant_of(request), nest(values, FIELDS)
        )
    except FORM_ERRORS as exc:
        return await _form(request, form.refuse(exc, FIELDS), status=exc.status)
    return _issued(request, issued, created=True)


async def trigger_page(request: web.Request) -> web.Response:
    return await _detail(request, Form())


# A trigger's page lists its newest rejected calls; the rejected list filtered by it has all.
RECENT_REJECTED: Final = 20


async def _detail(request: web.Request, form: Form, *, status: int = 200) -> web.Response:
    tenant = tenant_of(request)
    services = services_of(request)
    trigger = await services.triggers.get(tenant, _id(request))
    # The newest RECENT_REJECTED, and whether there are more (the page links to them all).
    rejected = await services.rejected.list(
        tenant, trigger_id=trigger["id"], limit=RECENT_REJECTED + 1
    )
    context = {
        "trigger": trigger,
        "rejected": rejected[:RECENT_REJECTED],
        "more_rejected": len(rejected) > RECENT_REJECTED,
        "form": form,
        # posted by the rotate form: a rotation is refused once another changed them
        "credentials": credentials_revision(trigger["credentials"]),
    }
    return render(request, "triggers/detail.html", context, status=status)


async def edit_trigger(request: web.Request) -> web.Response:
    trigger = await services_of(request).triggers.get(tenant_of(request), _id(request))
    return await _edit_form(request, trigger, editing(edit_values(trigger, form_lang(request))))


async def update_trigger(request: web.Request) -> web.Response:
    tenant, triggers = tenant_of(request), services_of(request).triggers
    trigger = await triggers.get(tenant, _id(request))
    lang = form_lang(request)
    shown = edit_values(trigger, lang)
    values = read_values(form_of(request), lists=("methods",), shown=shown)
    if (stale := stale_edit(values, shown)) is not None:
        return await _edit_form(request, trigger, stale, status=409)
    try:
        require_retyped(form_of(request))
        patch = changes(trigger_patch(values, trigger, lang), trigger_patch(shown, trigger, lang))
        if patch:
            await triggers.update(tenant, trigger["id"], patch)
    except FORM_ERRORS as exc:
        form = Form(values).refuse(exc, EDIT_FIELDS)
        return await _edit_form(request, trigger, form, status=exc.status)
    return redirect(f"/admin/triggers/{trigger['id']}", flash="triggers.saved")


def edit_values(trigger: dict[str, Any], lang: str) -> dict[str, Any]:
    """A trigger as the edit form shows it (numbers in the page's language)."""
    rate = trigger.get("rate_limit") or {}
    return {
        "name": trigger["name"],
        "methods": list(trigger["methods"]),
        "mapping": trigger.get("mapping") or "",
        "response_mapping": trigger.get("response_mapping") or "",
        "format": trigger["format"],
        "answers": trigger.get("answers", "json"),
        "auth.token_in_query": trigger["auth"].get("token_in_query") or "",
        "rate_limit.per_second": number_text(rate.get("per_second"), lang),
        "rate_limit.burst": number_text(rate.get("burst"), lang),
        "max_body_bytes": number_text(trigger.get("max_body_bytes"), lang),
        "max_batch_items": number_text(trigger.get("max_batch_items"), lang),
        "params": tojson_pretty(trigger["params"]) if trigger.get("params") else "",
        "expose": ", ".join(trigger.get("expose") or ()),
        "input_schema": tojson_pretty(trigger["input_schema"])
        if trigger.get("input_schema")
        else "",
    }


def trigger_patch(values: dict[str, Any], trigger: dict[str, Any], lang: str) -> dict[str, Any]:
    """The edit form as a PATCH: every member it shows, null for the ones emptied (the
    default again; update_trigger sends those the admin changed); `auth` only when the
    token's query parameter or the partner's secret changed (it is replaced whole, secrets
    aside)."""
    rate = {
        "per_second": number_field(values, "rate_limit.per_second", lang=lang, integer=False),
        "burst": number_field(values, "rate_limit.burst", lang=lang),
    }
    expose = [f.strip() for f in str(values.get("expose") or "").replace("\n", ",").split(",")]
    patch: dict[str, Any] = {
        "name": values.get("name", ""),
        # a set: the boxes post in the form's order, the stored list is sorted
        "methods": sorted(values.get("methods") or []),
        "format": values.get("format") or None,
        "answers": values.get("answers") or None,
        "mapping": values.get("mapping") or None,
        "response_mapping": values.get("response_mapping") or None,
        "rate_limit": {k: v for k, v in rate.items() if v is not None} or None,
        "max_body_bytes": number_field(values, "max_body_bytes", lang=lang),
        "max_batch_items": number_field(values, "max_batch_items", lang=lang),
        "params": json_field(values, "params"),
        "expose": [f for f in expose if f] or None,
        "input_schema": json_field(values, "input_schema"),
    }
    in_query = values.get("auth.token_in_query") or None
    if in_query != trigger["auth"].get("token_in_query"):
        patch["auth"] = {**trigger["auth"], "token_in_query": in_query}
    if secret := values.get("auth.secret"):  # a partner's new secret (hmac mode only)
        patch["auth"] = {**patch.get("auth", trigger["auth"]), "secret": secret}
    return patch


async def _edit_form(
    request: web.Request, trigger: dict[str, Any], form: Form, *, status: int = 200
) -> web.Response:
    context = {"trigger": trigger, "form": form, **await _mapping_choices(request)}
    return render(request, "triggers/edit.html", context, status=status)


async def rotate_trigger(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    tenant = tenant_of(request)
    try:
        # in the page's language (1.800 or 1,800), the range the use case's (minimum, maximum)
        grace = whole_field(values, "grace_seconds", lang=form_lang(request))
        issued = await services_of(request).triggers.rotate(
            tenant,
            _id(request),
            grace_seconds=grace or 0,
            shown=values.get("credentials") or None,  # a post without it is not checked
        )
    except FORM_ERRORS as exc:
        # said above the form of the page as it is now (a conflict: the current credentials)
        form = Form(values).refuse(exc, ("grace_seconds",))
        return await _detail(request, form, status=exc.status)
    return _issued(request, issued, created=False)


async def revoke_trigger(request: web.Request) -> web.Response:
    await services_of(request).triggers.revoke(tenant_of(request), _id(request))
    return redirect(f"/admin/triggers/{_id(request)}", flash="triggers.revoked")


async def set_trigger_status(request: web.Request) -> web.Response:
    status = form_of(request).get("status")
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
    context["curl"] = curl_example(trigger, issued.token, issued.secret)
    context["device_url"] = device_url(trigger, issued.token)
    return render(request, "triggers/issued.html", context, status=201 if created else 200)


async def _form(request: web.Request, form: Form, *, status: int = 200) -> web.Response:
    context = {
        "form": form,
        "entity_types": ENTITY_TYPES,
        "auth_modes": AUTH_MODES,
        "targets": TARGETS,
        "presets": sorted(PRESETS),
        **await _mapping_choices(request),
    }
    return render(request, "triggers/new.html", context, status=status)


async def _mapping_choices(request: web.Request) -> dict[str, list[tuple[str, str]]]:
    """The tenant's mappings a trigger may name, as (value, text) options: every one."""
    return {
        direction: await choices.mappings(request, direction)
        for direction in ("inbound", "outbound")
    }
