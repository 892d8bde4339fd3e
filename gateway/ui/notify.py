"""Flow and template pages: flows uploaded, versioned and dry-run (their runs: `flow_runs.py`);
templates listed, created from their JSON document, replaced whole and previewed on a sample
(channels: `channels.py`)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway import paging
from gateway.errors import GatewayError
from gateway.notify.templates import TEMPLATE_FIELDS, public_template
from gateway.ui.forms import (
    FORM_ERRORS,
    Form,
    document_field,
    editing,
    json_field,
    read_values,
    shown_active,
    shown_rotation,
    stale_edit,
    version_field,
)
from gateway.ui.rendering import redirect, render
from gateway.ui.state import form_lang, form_of, session_of, tenant_of
from gateway.ui.templating import tojson_pretty
from gateway.web.state import services_of

FLOW_TEST_FIELDS: Final = ("event", "samples", "version")


def _name(request: web.Request) -> str:
    return request.match_info["name"]


# -- flows -------------------------------------------------------------------------------------


async def list_flows(request: web.Request, form: Form | None = None) -> web.Response:
    limit, cursor = paging.page_params(request.query)
    items = await services_of(request).notify.flows.find(
        tenant_of(request), after=cursor, limit=limit
    )
    context = {
        "items": items,
        "next_cursor": items[-1]["name"] if len(items) == limit else None,
        "form": form or Form({"activate": "on"}),
    }
    return render(request, "notify/flows.html", context, status=422 if form else 200)


async def upload_flow(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    try:
        version = await services_of(request).notify.flows.upload(
            tenant_of(request),
            str(values.get("source", "")).encode(),
            author=session_of(request).subject,
            activate=values.get("activate") == "on",
        )
    except FORM_ERRORS as exc:
        return await list_flows(request, Form(values).refuse(exc, ("source",)))
    if version.secret is not None:  # the flow's first signing secret: shown this once
        context = {"name": version.name, "secret": version.secret, "said": "flows.uploaded"}
        return render(request, "notify/flow_secret.html", context, status=201)
    flash = "flows.uploaded" if version.created else "flows.unchanged"
    return redirect(f"/admin/flows/{version.name}", flash=flash)


async def rotate_flow_secret(request: web.Request) -> web.Response:
    rotated = await services_of(request).notify.flows.rotate_secret(
        tenant_of(request), _name(request), shown=shown_rotation(form_of(request))
    )
    return render(request, "notify/flow_secret.html", {**rotated, "said": None})


async def flow_page(
    request: web.Request,
    form: Form | None = None,
    result: dict[str, Any] | None = None,
    *,
    pause_form: Form | None = None,
) -> web.Response:
    tenant, name = tenant_of(request), _name(request)
    flows = services_of(request).notify.flows
    versions = await flows.versions(tenant, name)
    active = next((v for v in versions if v.active), None)
    flow = await flows.get(tenant, name, (active or versions[-1]).version)
    form = form or Form()
    form.values.setdefault("version", str(flow.version))  # the dry run's, at first
    context = {
        "flow": flow,
        "versions": versions,
        # posted by the activate and roll back buttons (forms.shown_active)
        "shown_active": "" if active is None else active.version,
        "pause": await flows.pause_state(tenant, name),
        "rotated": await flows.secret_revision(tenant, name),  # posted by Rotate secret
        "form": form,
        "pause_form": pause_form or Form(),
        "result": result,
    }
    failed = form.failed or (pause_form is not None and pause_form.failed)
    status = 422 if failed else 200
    return render(request, "notify/flow.html", context, status=status)


async def dry_run_flow(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    form = Form(values)
    try:
        version = values.get("version") or None  # any stored version; none: the active one
        result = await services_of(request).notify.flow_dry_run.run(
            tenant_of(request),
            name=_name(request),
            version=None if version is None else version_field(version, form_lang(request)),
            draft=None,
            event=json_field(values, "event"),
            samples=json_field(values, "samples") or {},
        )
    except GatewayError as exc:
        return await flow_page(request, form.refuse(exc, FLOW_TEST_FIELDS))
    return await flow_page(request, form, result)


async def activate_flow(request: web.Request) -> web.Response:
    form, lang = form_of(request), form_lang(request)
    number = version_field(form.get("version"), lang)
    await services_of(request).notify.flows.activate(
        tenant_of(request), _name(request), number, shown=shown_active(form, lang)
    )
    return redirect(f"/admin/flows/{_name(request)}", flash="mappings.activated")


async def rollback_flow(request: web.Request) -> web.Response:
    shown = shown_active(form_of(request), form_lang(request))
    flows = services_of(request).notify.flows
    await flows.rollback(tenant_of(request), _name(request), shown=shown)
    return redirect(f"/admin/flows/{_name(request)}", flash="mappings.rolled_back")


async def pause_flow(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    try:  # a reason too long is refused at its field, as the API does: never cut
        await services_of(request).notify.flows.pause(
            tenant_of(request),
            _name(request),
            by=session_of(request).subject,
            reason=values.get("reason") or None,
        )
    except FORM_ERRORS as exc:
        return await flow_page(request, pause_form=Form(values).refuse(exc, ("reason",)))
    return redirect(f"/admin/flows/{_name(request)}", flash="flows.paused_flash")


async def resume_flow(request: web.Request) -> web.Response:
    skip = form_of(request).get("held") == "skip"
    await services_of(request).notify.flows.resume(tenant_of(request), _name(request), skip=skip)
    return redirect(f"/admin/flows/{_name(request)}", flash="flows.resumed_flash")


async def delete_flow(request: web.Request) -> web.Response:
    await services_of(request).notify.flows.delete(tenant_of(request), _name(request))
    return redirect("/admin/flows", flash="flows.deleted")


# -- templates ---------------------------------------------------------------------------------


async def list_templates(request: web.Request, form: Form | None = None) -> web.Response:
    limit, cursor = paging.page_params(request.query)
    docs = await services_of(request).notify.templates.list(
        tenant_of(request), after=cursor, limit=limit
    )
    context = {
        "items": [public_template(d) for d in docs],
        "next_cursor": str(docs[-1]["_id"]) if len(docs) == limit else None,
        "form": form or Form(),
    }
    return render(request, "notify/templates.html", context, status=422 if form else 200)


async def create_template(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    try:
        doc = await services_of(request).notify.templates.create(
            tenant_of(request), document_field(values), session_of(request).subject
        )
    except FORM_ERRORS as exc:
        return await list_templates(request, Form(values).refuse(exc, (), rest="document"))
    return redirect(f"/admin/templates/{doc['_id']}", flash="templates.created")


async def template_page(
    request: web.Request,
    form: Form | None = None,
    preview: dict[str, Any] | None = None,
    *,
    edit: Form | None = None,
) -> web.Response:
    doc = await services_of(request).notify.templates.get(
        tenant_of(request), request.match_info["ref"]
    )
    template = public_template(doc)
    edit = edit or editing(_template_values(template))
    if form is not None and session_of(request).can_change:
        # An admin's page has one form for editing and previewing: a preview of the stored
        # version (a post without the document) shows its sample and problems there.
        edit = Form({**edit.values, **form.values}, form.errors, form.general)
    context = {
        "template": template,
        "form": form or Form(),
        "preview": preview,
        "edit": edit,
    }
    status = (
        422 if (form is not None and form.failed) or (edit is not None and edit.failed) else 200
    )
    if edit is not None and edit.stale is not None:
        status = 409
    return render(request, "notify/template.html", context, status=status)


def _template_values(template: dict[str, Any]) -> dict[str, Any]:
    """A template as its replace form shows it: its document, as `PUT` takes it."""
    document = {k: template[k] for k in TEMPLATE_FIELDS if template.get(k) is not None}
    return {"document": tojson_pretty(document)}


async def replace_template(request: web.Request) -> web.Response:
    """The whole document (`PUT /api/v1/templates/{ref}`): its name stays (flows use it)."""
    templates = services_of(request).notify.templates
    values = read_values(form_of(request))
    current = public_template(await templates.get(tenant_of(request), request.match_info["ref"]))
    if (stale := stale_edit(values, _template_values(current))) is not None:
        return await template_page(request, edit=stale)
    try:
        doc = await templates.replace(
            tenant_of(request), current["id"], document_field(values), session_of(request).subject
        )
    except FORM_ERRORS as exc:
        return await template_page(request, edit=Form(values).refuse(exc, (), rest="document"))
    return redirect(f"/admin/templates/{doc['_id']}", flash="templates.saved")


async def preview_template(request: web.Request) -> web.Response:
    """A preview writes nothing, so a viewer may run it too (see ANY_ROLE_POSTS). From the
    edit form (an admin's), it renders the document as typed, compiled as a save would
    compile it, and the page keeps what was typed; from the viewer's form, the stored one."""
    values = read_values(form_of(request))
    form = Form(values)
    drafting = bool(str(values.get("document") or "").strip())
    try:
        preview = await services_of(request).notify.templates.preview(
            tenant_of(request),
            ref=request.match_info["ref"],
            draft=document_field(values) if drafting else None,
            context=json_field(values, "context"),
            locale=values.get("locale") or None,
        )
    except GatewayError as exc:
        if drafting:
            refused = form.refuse(exc, ("context", "locale"), rest="document")
            return await template_page(request, edit=refused)
        return await template_page(request, form.refuse(exc, ("context", "locale")))
    if drafting:
        return await template_page(request, preview=preview, edit=form)
    return await template_page(request, form, preview)


async def delete_template(request: web.Request) -> web.Response:
    await services_of(request).notify.templates.delete(
        tenant_of(request), request.match_info["ref"]
    )
    return redirect("/admin/templates", flash="templates.deleted")
