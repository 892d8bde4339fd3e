"""Partner pages: list, register (credentials are write-only: typed once, never shown),
edit the settings (name, base URL, timeout, concurrency, rate limit, days before disabling,
enabled or disabled), replace credentials (with a new base URL: the credentials go only where
they were given for), delete; and the subscriptions on their actions (actions: `actions.py`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from aiohttp import web

from gateway import paging
from gateway.actions.partners import public_partner
from gateway.actions.subscriptions import public_subscription, secret_revision
from gateway.errors import Conflict, InvalidPayload, Unavailable
from gateway.outbound.partner_auth import AUTH_MEMBERS
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
    shown_rotation,
    stale_edit,
)
from gateway.ui.rendering import redirect, render
from gateway.ui.state import form_lang, form_of, tenant_of
from gateway.ui.templating import tojson_pretty
from gateway.web.state import services_of

# What the credentials form offers: every type but a Google service account (its JSON key is
# given through the API).
AUTH_TYPES: Final = (
    "bearer",
    "header",
    "basic",
    "oauth2_client_credentials",
    "query",
    "geotab",
    "hmac",
    "none",
)
AUTH_FIELDS: Final = (
    "auth.type",
    "auth.url",
    "auth.database",
    "auth.token",
    "auth.name",
    "auth.value",
    "auth.username",
    "auth.password",
    "auth.token_url",
    "auth.client_id",
    "auth.client_secret",
    "auth.scope",
    "auth.client_auth",
    "auth.audience",
    "auth.extra_params",
    "auth.secret",
    "auth.header",
    "auth.algorithm",
    "auth.encoding",
    "auth.prefix",
    "auth.timestamp_header",
    "auth.signed",
)
PARTNER_FIELDS: Final = ("name", "base_url", *AUTH_FIELDS, "timeout_seconds")
SETTINGS_FIELDS: Final = (
    "name",
    "base_url",
    "timeout_seconds",
    "max_concurrency",
    "disable_after_hours",
    "rate_limit.per_second",
    "rate_limit.burst",
    "status",
)
# What a new origin needs again (the API's problem at the pointer), and where to give it.
AGAIN: Final = {
    "/auth": "(type them under Replace credentials, with the new base URL)",
    "/secrets": "(this page does not take them: move the partner through the API, with them)",
}
SUBSCRIPTION_FIELDS: Final = ("action_id", "event_types", "filter")
# A subscription's edit form: its action stays (a new action is a new subscription).
SUBSCRIPTION_EDIT_FIELDS: Final = ("event_types", "filter", "sample_seconds")


def _id(request: web.Request) -> str:
    return request.match_info["id"]


def _partner_body(values: dict[str, Any], lang: str) -> dict[str, Any]:
    kind = values.get("auth.type", "")
    parts = AUTH_MEMBERS.get(kind, ())
    names = [n for n in PARTNER_FIELDS if not n.startswith("auth.") or n[5:] in (*parts, "type")]
    body = nest(values, names)
    if "auth" in body and "extra_params" in body["auth"]:  # a JSON object typed as text
        body["auth"]["extra_params"] = json_field(values, "auth.extra_params")
    if "timeout_seconds" in body:  # text that is no number stays text: the use case names it
        body["timeout_seconds"] = number_field(values, "timeout_seconds", lang=lang, integer=False)
    return body


async def list_partners(request: web.Request) -> web.Response:
    limit, cursor = paging.page_params(request.query)
    docs = await services_of(request).actions.list_partners(
        tenant_of(request), after=cursor, limit=limit
    )
    return await _partners(request, [public_partner(d) for d in docs], limit, Form())


async def create_partner(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    try:
        doc = await services_of(request).actions.create_partner(
            tenant_of(request), _partner_body(values, form_lang(request))
        )
    except FORM_ERRORS as exc:
        return await _partners(request, [], 1, Form(values).refuse(exc, PARTNER_FIELDS), 422)
    return redirect(f"/admin/partners/{doc['_id']}", flash="partners.created")


async def partner_page(
    request: web.Request,
    form: Form | None = None,
    *,
    settings: Form | None = None,
    status: int | None = None,
) -> web.Response:
    tenant = tenant_of(request)
    services = services_of(request)
    partner = public_partner(await services.actions.get_partner(tenant, _id(request)))
    actions = await choices.actions(request, {"partner_id": partner["id"]})
    context = {
        "partner": partner,
        "actions": [{**a, "id": str(a["_id"])} for a in actions],
        "form": form or Form({"base_url": partner["base_url"]}),
        "settings": settings or editing(_settings_values(partner, form_lang(request))),
        "auth_types": AUTH_TYPES,
    }
    failed = form is not None or settings is not None
    return render(
        request, "partners/detail.html", context, status=status or (422 if failed else 200)
    )


def _settings_values(partner: dict[str, Any], lang: str) -> dict[str, Any]:
    """A partner's settings as their form shows them (text, as typed; numbers in the page's
    language)."""
    rate = partner.get("rate_limit") or {}
    shown = {
        "name": partner["name"],
        "base_url": partner["base_url"],
        "timeout_seconds": partner["timeout_seconds"],
        "max_concurrency": partner["max_concurrency"],
        "disable_after_hours": partner.get("disable_after_hours"),
        "rate_limit.per_second": rate.get("per_second"),
        "rate_limit.burst": rate.get("burst"),
        "status": partner["status"],
    }
    return {k: number_text(v, lang) for k, v in shown.items()}


def _settings_body(values: dict[str, Any], current: dict[str, Any], lang: str) -> dict[str, Any]:
    """What the settings form changes: what differs from the form as loaded (so an untouched
    status does not re-enable a failing partner, nor an untouched URL ask for credentials)."""
    body: dict[str, Any] = {}
    for name in ("name", "base_url", "status"):
        if values.get(name, "") != current[name]:
            body[name] = values.get(name, "")
    for name, integer in (
        ("timeout_seconds", False),
        ("max_concurrency", True),
        ("disable_after_hours", False),
    ):
        if values.get(name, "") != current[name]:
            body[name] = number_field(values, name, lang=lang, integer=integer)
    rate = ("rate_limit.per_second", "rate_limit.burst")
    if any(values.get(n, "") != current[n] for n in rate):
        per_second = number_field(values, "rate_limit.per_second", lang=lang, integer=False)
        burst = number_field(values, "rate_limit.burst", lang=lang, integer=False)
        body["rate_limit"] = (
            None
            if per_second is None
            else {"per_second": per_second, **({} if burst is None else {"burst": burst})}
        )
    return body


async def edit_partner(request: web.Request) -> web.Response:
    tenant, actions = tenant_of(request), services_of(request).actions
    partner = public_partner(await actions.get_partner(tenant, _id(request)))
    lang = form_lang(request)
    current = _settings_values(partner, lang)
    values = read_values(form_of(request), shown=current)
    if (stale := stale_edit(values, current)) is not None:
        return await partner_page(request, settings=stale, status=409)
    try:
        if body := _settings_body(values, current, lang):
            await actions.update_partner(tenant, partner["id"], body)
    except InvalidPayload as exc:
        settings = Form(values).refuse(_at_the_url(exc), SETTINGS_FIELDS)
        return await partner_page(request, settings=settings)
    except (Conflict, Unavailable) as exc:  # a channel needs it so, a concurrent change
        settings = Form(values).refuse(exc, SETTINGS_FIELDS)
        return await partner_page(request, settings=settings, status=409)
    return redirect(f"/admin/partners/{partner['id']}", flash="partners.saved")


async def replace_credentials(request: web.Request) -> web.Response:
    """New credentials, and the base URL they are for (a new origin needs them). The form
    shows no stored member: those of the same type that are optional and no secret, left
    empty, are kept (`replace_credentials`: a rotated OAuth2 secret keeps its audience)."""
    values = read_values(form_of(request))
    actions = services_of(request).actions
    try:
        body = {
            k: v
            for k, v in _partner_body(values, form_lang(request)).items()
            if k in ("auth", "base_url")
        }
        await actions.replace_credentials(tenant_of(request), _id(request), body)
    except InvalidPayload as exc:
        form = Form(values).refuse(_at_the_url(exc), ("base_url", *AUTH_FIELDS))
        return await partner_page(request, form)
    except (Conflict, Unavailable) as exc:  # a push channel needs its service account
        form = Form(values).refuse(exc, ("base_url", *AUTH_FIELDS))
        return await partner_page(request, form, status=409)
    return redirect(f"/admin/partners/{_id(request)}", flash="partners.credentials_replaced")


def _at_the_url(exc: InvalidPayload) -> InvalidPayload:
    """A new origin needs the stored credentials again: a problem of the URL typed, saying
    where to give them."""
    problems = [
        replace(p, pointer="/base_url", message=f"{p.message} {AGAIN[p.pointer]}")
        if p.pointer in AGAIN and p.keyword == "required"
        else p
        for p in exc.problems
    ]
    return exc.restated(problems=problems)


async def delete_partner(request: web.Request) -> web.Response:
    await services_of(request).actions.delete_partner(tenant_of(request), _id(request))
    return redirect("/admin/partners", flash="partners.deleted")


async def _partners(
    request: web.Request, items: list[dict[str, Any]], limit: int, form: Form, status: int = 200
) -> web.Response:
    if status != 200:
        docs = await services_of(request).actions.list_partners(
            tenant_of(request), after=None, limit=paging.DEFAULT_PAGE
        )
        items, limit = [public_partner(d) for d in docs], paging.DEFAULT_PAGE
    context = {
        "items": items,
        "next_cursor": items[-1]["id"] if len(items) == limit else None,
        "form": form,
        "auth_types": AUTH_TYPES,
    }
    return render(request, "partners/list.html", context, status=status)


# -- subscriptions -----------------------------------------------------------------------------


async def list_subscriptions(request: web.Request, form: Form | None = None) -> web.Response:
    tenant = tenant_of(request)
    services = services_of(request)
    limit, cursor = paging.page_params(request.query)
    docs = await services.actions.list_subscriptions(tenant, {}, after=cursor, limit=limit)
    actions = await choices.actions(request)
    context = {
        "items": [public_subscription(d) for d in docs],
        "next_cursor": str(docs[-1]["_id"]) if len(docs) == limit else None,
        "form": form or Form(),
        "actions": choices.named(actions),
        "actions_by_id": choices.by_id(actions),
        "partners_by_id": choices.by_id(await choices.partners(request)),
    }
    return render(request, "partners/subscriptions.html", context, status=422 if form else 200)


async def create_subscription(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    form = Form(values)
    try:
        body = nest(values, ("action_id",))
        body["event_types"] = _event_types(values)
        if (event_filter := json_field(values, "filter")) is not None:
            body["filter"] = event_filter
        doc, secret = await services_of(request).actions.create_subscription(
            tenant_of(request), body
        )
    except FORM_ERRORS as exc:
        return await list_subscriptions(request, form.refuse(exc, SUBSCRIPTION_FIELDS))
    context = {"subscription": public_subscription(doc), "secret": secret}
    return render(request, "partners/subscription_secret.html", context, status=201)


async def subscription_page(request: web.Request, form: Form | None = None) -> web.Response:
    doc = public_subscription(
        await services_of(request).actions.get_subscription(tenant_of(request), _id(request))
    )
    context = {
        "s": doc,
        "form": form or editing(_subscription_values(doc)),
        "rotated": secret_revision(doc),  # posted by Rotate secret
    }
    status = 200 if form is None else 409 if form.stale is not None else 422
    return render(request, "partners/subscription.html", context, status=status)


def _subscription_values(doc: dict[str, Any]) -> dict[str, Any]:
    """A subscription as its edit form shows it."""
    sample = doc.get("sample_seconds")
    return {
        "event_types": ", ".join(doc["event_types"]),
        "filter": tojson_pretty(doc["filter"]) if doc.get("filter") else "",
        "sample_seconds": "" if sample is None else str(sample),
    }


def _event_types(values: dict[str, Any]) -> list[str]:
    return [e.strip() for e in str(values.get("event_types", "")).split(",") if e.strip()]


def _subscription_body(values: dict[str, Any], lang: str) -> dict[str, Any]:
    return {
        "event_types": _event_types(values),
        "filter": json_field(values, "filter") or {},
        "sample_seconds": number_field(values, "sample_seconds", lang=lang),
    }


async def edit_subscription(request: web.Request) -> web.Response:
    """Its event types, filter and position sampling; an emptied filter matches every event
    of those types, an emptied sampling sends every position."""
    tenant, actions = tenant_of(request), services_of(request).actions
    current = public_subscription(await actions.get_subscription(tenant, _id(request)))
    shown = _subscription_values(current)
    values = read_values(form_of(request), shown=shown)
    if (stale := stale_edit(values, shown)) is not None:
        return await subscription_page(request, stale)
    lang = form_lang(request)
    try:
        body = changes(_subscription_body(values, lang), _subscription_body(shown, lang))
        if body:
            await actions.update_subscription(tenant, _id(request), body)
    except FORM_ERRORS as exc:
        return await subscription_page(request, Form(values).refuse(exc, SUBSCRIPTION_EDIT_FIELDS))
    return redirect(f"/admin/subscriptions/{_id(request)}", flash="subscriptions.saved")


async def rotate_subscription_secret(request: web.Request) -> web.Response:
    doc, secret = await services_of(request).actions.rotate_secret(
        tenant_of(request), _id(request), shown=shown_rotation(form_of(request))
    )
    context = {"subscription": public_subscription(doc), "secret": secret}
    return render(request, "partners/subscription_secret.html", context)


async def set_subscription_status(request: web.Request) -> web.Response:
    status = "disabled" if form_of(request).get("status") == "disabled" else "active"
    await services_of(request).actions.update_subscription(
        tenant_of(request), _id(request), {"status": status}
    )
    return redirect(f"/admin/subscriptions/{_id(request)}", flash=f"subscriptions.now_{status}")


async def delete_subscription(request: web.Request) -> web.Response:
    await services_of(request).actions.delete_subscription(tenant_of(request), _id(request))
    return redirect("/admin/subscriptions", flash="subscriptions.deleted")
