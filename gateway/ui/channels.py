"""Channel pages: list, create and edit from their JSON document, a test send (a template or
the built-in text, to one address, now), delete; and the tenant's notification settings
(cooldown, quiet hours)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from gateway import paging
from gateway.errors import GatewayError, InvalidPayload
from gateway.notify.channels import public_channel
from gateway.notify.policy import CHANNEL_TYPES
from gateway.notify.testing import TEST_FIELDS, check_test_body, send_test
from gateway.ui import choices
from gateway.ui.forms import (
    FORM_ERRORS,
    Form,
    Problem,
    document_field,
    editing,
    json_field,
    left_empty,
    nest,
    number_field,
    read_values,
    shown_back,
    stale_edit,
)
from gateway.ui.rendering import redirect, render
from gateway.ui.state import form_lang, form_of, session_of, tenant_of
from gateway.ui.templating import tojson_pretty
from gateway.web.state import services_of

_SHOWN_ONLY: Final = ("id", "created_at", "updated_at")
QUIET_FIELDS: Final = (
    "quiet_hours.start",
    "quiet_hours.end",
    "quiet_hours.timezone",
    "quiet_hours.during",
)
SETTINGS_FIELDS: Final = ("cooldown_seconds", *QUIET_FIELDS, "quiet_hours.channels")


def _ref(request: web.Request) -> str:
    return request.match_info["ref"]


def editable(channel: Mapping[str, Any]) -> dict[str, Any]:
    """A channel as the document that would write it: no id or times, and the SMTP password
    (write-only) left out."""
    doc = {k: v for k, v in channel.items() if k not in _SHOWN_ONLY}
    if isinstance(doc.get("smtp"), dict):
        doc["smtp"] = {k: v for k, v in doc["smtp"].items() if k != "password"}
    return doc


def channel_patch(current: Mapping[str, Any], posted: Mapping[str, Any]) -> dict[str, Any]:
    """What changed between the document shown and the one posted: changed members, and
    null for removed ones. An unchanged `smtp` is left out, so its password is kept."""
    patch = {k: v for k, v in posted.items() if current.get(k) != v}
    patch.update({k: None for k in current if k not in posted})
    return patch


# -- channels ----------------------------------------------------------------------------------


async def list_channels(request: web.Request, form: Form | None = None) -> web.Response:
    limit, cursor = paging.page_params(request.query)
    docs = await services_of(request).notify.channels.list(
        tenant_of(request), after=cursor, limit=limit
    )
    context = {
        "items": [public_channel(d) for d in docs],
        "next_cursor": str(docs[-1]["_id"]) if len(docs) == limit else None,
        "form": form or Form(),
    }
    return render(request, "notify/channels.html", context, status=422 if form else 200)


async def create_channel(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    try:
        doc = await services_of(request).notify.channels.create(
            tenant_of(request), document_field(values)
        )
    except FORM_ERRORS as exc:
        return await list_channels(request, _refused(values, exc))
    return redirect(f"/admin/channels/{doc['_id']}", flash="channels.created")


async def channel_page(
    request: web.Request,
    *,
    edit: Form | None = None,
    test: Form | None = None,
    outcome: dict[str, Any] | None = None,
) -> web.Response:
    tenant, notify = tenant_of(request), services_of(request).notify
    channel = public_channel(await notify.channels.get(tenant, _ref(request)))
    context = {
        "channel": channel,
        "templates": await choices.templates(request, channel["type"]),
        "edit": edit or editing(_edit_values(channel)),
        "test": test or Form(),
        "outcome": outcome,
    }
    failed = (edit is not None and edit.failed) or (test is not None and test.failed)
    status = 409 if edit is not None and edit.stale is not None else 422 if failed else 200
    return render(request, "notify/channel.html", context, status=status)


def _edit_values(channel: dict[str, Any]) -> dict[str, Any]:
    """A channel as its edit form shows it: its document, without what is shown only."""
    return {"document": tojson_pretty(editable(channel))}


async def edit_channel(request: web.Request) -> web.Response:
    tenant, channels = tenant_of(request), services_of(request).notify.channels
    values = read_values(form_of(request))
    channel = public_channel(await channels.get(tenant, _ref(request)))
    if (stale := stale_edit(shown_back(values)[0], _edit_values(channel))) is not None:
        return await channel_page(request, edit=stale)
    current = editable(channel)
    try:
        patch = channel_patch(current, document_field(values))
        doc = await channels.update(tenant, _ref(request), patch)
    except FORM_ERRORS as exc:
        return await channel_page(request, edit=_refused(values, exc))
    return redirect(f"/admin/channels/{doc['_id']}", flash="channels.saved")


def _refused(values: Mapping[str, Any], error: GatewayError) -> Form:
    """A refused channel document, shown back without its SMTP password (write-only: blanked,
    forms.hide_secrets), with a problem saying to type it again; one that names it where its
    value cannot be told apart (malformed, encoded twice, another spelling of its name) is not
    shown back at all, and says so."""
    try:
        posted: dict[str, Any] | None = document_field(values)
    except InvalidPayload:  # not a JSON object: no member was given empty
        posted = None
    shown, hidden = shown_back(values)
    form = Form(shown).refuse(left_empty(error, posted), (), rest="document")
    for name in hidden:
        if name == "document":
            message = (
                "a document naming a secret where its value cannot be told apart (malformed"
                " JSON, a document encoded twice, another spelling of its name) is not shown"
                " back; paste the document again"
            )
        else:
            message = f"{name[len('document') :]}: a secret is never shown back; type it again"
        form.errors.setdefault("document", []).append(Problem("problem.required", message))
    return form


async def test_channel(request: web.Request) -> web.Response:
    """Sends a real message now: an admin's POST, like any other change."""
    values = read_values(form_of(request))
    form = Form(values)
    try:
        body = nest(values, ("to", "template", "locale"))
        if (context := json_field(values, "context")) is not None:
            body["context"] = context
        check_test_body(body)
        outcome = await send_test(
            services_of(request).notify,
            tenant_of(request),
            _ref(request),
            to=body.get("to", ""),
            template=body.get("template"),
            context=body.get("context"),
            locale=body.get("locale"),
        )
    except GatewayError as exc:  # a template of another type, a partner's refusal...
        return await channel_page(request, test=form.refuse(exc, TEST_FIELDS))
    return await channel_page(request, test=form, outcome=outcome.as_dict())


async def delete_channel(request: web.Request) -> web.Response:
    await services_of(request).notify.channels.delete(tenant_of(request), _ref(request))
    return redirect("/admin/channels", flash="channels.deleted")


# -- notification settings ---------------------------------------------------------------------


def settings_body(values: Mapping[str, Any], lang: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if (cooldown := number_field(values, "cooldown_seconds", lang=lang)) is not None:
        body["cooldown_seconds"] = cooldown
    if values.get("quiet_hours.enabled") != "on":
        body["quiet_hours"] = None
        return body
    quiet = nest(values, QUIET_FIELDS).get("quiet_hours", {})
    # Every channel unticked is a choice the use case refuses, not "all" by default.
    quiet["channels"] = list(values.get("quiet_hours.channels") or [])
    body["quiet_hours"] = quiet
    return body


def settings_values(settings: Mapping[str, Any]) -> dict[str, Any]:
    quiet = settings.get("quiet_hours")
    shown = quiet or {
        "start": "22:00",
        "end": "07:00",
        "timezone": "America/Sao_Paulo",
        "during": "delay",
        "channels": ["push", "sms"],
    }
    return {
        "cooldown_seconds": str(settings["cooldown_seconds"]),
        "quiet_hours.enabled": "on" if quiet else "",
        **{f"quiet_hours.{k}": v for k, v in shown.items()},
    }


async def settings_page(request: web.Request, form: Form | None = None) -> web.Response:
    settings = await services_of(request).notify.settings.get(tenant_of(request))
    context = {
        "form": form or editing(settings_values(settings.as_dict())),
        "channel_types": CHANNEL_TYPES,
    }
    status = 200 if form is None else 409 if form.stale is not None else 422
    return render(request, "notify/settings.html", context, status=status)


async def save_settings(request: web.Request) -> web.Response:
    settings = await services_of(request).notify.settings.get(tenant_of(request))
    shown = settings_values(settings.as_dict())
    values = read_values(form_of(request), lists=("quiet_hours.channels",), shown=shown)
    if (stale := stale_edit(values, shown)) is not None:
        return await settings_page(request, stale)
    try:
        await services_of(request).notify.settings.put(
            tenant_of(request),
            settings_body(values, form_lang(request)),
            session_of(request).subject,
        )
    except GatewayError as exc:
        return await settings_page(request, Form(values).refuse(exc, SETTINGS_FIELDS))
    return redirect("/admin/notification-settings", flash="settings.saved")
