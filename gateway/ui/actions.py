"""Action pages: list, create, edit (every member: request, mode, mappings, success codes,
retry schedule, ordering, write-back, read-only, the XML (SOAP) body), delete, and a call
made now (as `POST /api/v1/actions/{id}/invoke`: the partner's mapped answer, or its error)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway import paging
from gateway.actions.definitions import METHODS, public_action
from gateway.actions.signing import signing_revision
from gateway.errors import FieldProblem, GatewayError, InvalidPayload, NotFound
from gateway.schemas import ENTITY_TYPES
from gateway.ui import choices
from gateway.ui.forms import (
    FORM_ERRORS,
    Form,
    changes,
    editing,
    json_field,
    nest,
    number_text,
    read_values,
    shown_rotation,
    stale_edit,
)
from gateway.ui.rendering import redirect, render
from gateway.ui.state import form_of, tenant_of
from gateway.ui.templating import tojson_pretty
from gateway.web.state import services_of

ACTION_FIELDS: Final = (
    "name",
    "partner_id",
    "method",
    "path",
    "mode",
    "request_mapping",
    "response_mapping",
)
FLAGS: Final = ("ordered", "write_back", "read_only")
# The XML body's section; "xml_body" itself takes the problems of the whole member.
XML_FIELDS: Final = (
    "xml_body",
    "xml_body.template",
    "xml_body.soap",
    "xml_body.soap_action",
    "xml_body.sample",
)
CREATE_FIELDS: Final = (*ACTION_FIELDS, *XML_FIELDS)
EDIT_FIELDS: Final = (*ACTION_FIELDS, "success", "retry_schedule", *FLAGS, *XML_FIELDS)
SOAP_CHOICES: Final = (("1.1", "SOAP 1.1"), ("1.2", "SOAP 1.2"))
CALL_FIELDS: Final = ("entity.type", "entity.ref", "payload")


def _id(request: web.Request) -> str:
    return request.match_info["id"]


def action_body(values: dict[str, Any]) -> dict[str, Any]:
    """The edit form as a whole action: emptied members are null (gone), unticked flags
    false (update_action sends the members the admin changed). Lists are typed
    comma-separated: `2xx, 404`; `5, 30, 120`."""
    body: dict[str, Any] = {name: values.get(name) or None for name in ACTION_FIELDS}
    body["path"] = values.get("path", "")
    body["success"] = [_code(c) for c in _items(values, "success")] or None
    body["retry_schedule"] = [_seconds(s) for s in _items(values, "retry_schedule")] or None
    body.update({flag: values.get(flag) == "on" for flag in FLAGS})
    body["xml_body"] = xml_body(values)
    return body


def create_body(values: dict[str, Any]) -> dict[str, Any]:
    """The create form as a new action: its non-empty members, and the XML body if any."""
    body = nest(values, ACTION_FIELDS)
    if (xml := xml_body(values)) is not None:
        body["xml_body"] = xml
    return body


def xml_body(values: dict[str, Any]) -> dict[str, Any] | None:
    """The XML body section as the `xml_body` member: None (no XML body; on an edit, removed)
    when the template is empty. No SOAP version is plain XML (null); the sample is JSON,
    malformed JSON a problem of its field. A browser sends a textarea's lines ending in CRLF:
    the template is stored with LF, as the API would have it."""
    template = str(values.get("xml_body.template") or "").replace("\r\n", "\n")
    if not template:
        return None
    return {
        "template": template,
        "soap": values.get("xml_body.soap") or None,
        "soap_action": values.get("xml_body.soap_action") or None,
        "sample": json_field(values, "xml_body.sample"),
    }


def edit_values(action: dict[str, Any]) -> dict[str, Any]:
    values = {name: action.get(name) or "" for name in ACTION_FIELDS}
    values["success"] = ", ".join(str(c) for c in action.get("success") or ())
    values["retry_schedule"] = schedule_text(action)
    values.update({flag: "on" if action.get(flag) else "" for flag in FLAGS})
    xml = action.get("xml_body") or {}
    values["xml_body.template"] = xml.get("template") or ""
    values["xml_body.soap"] = xml.get("soap") or ""
    values["xml_body.soap_action"] = xml.get("soap_action") or ""
    sample = xml.get("sample")
    values["xml_body.sample"] = "" if sample is None else tojson_pretty(sample)
    return values


def schedule_text(action: dict[str, Any]) -> str:
    """The retry schedule as its form field reads it, on the edit form and the action's page
    alike (a figure copied from the page is the same number): a comma-separated list, so its
    numbers take a decimal point and no grouping in either language, every digit kept."""
    return ", ".join(number_text(s, "en") for s in action.get("retry_schedule") or ())


def _items(values: dict[str, Any], name: str) -> list[str]:
    return [part.strip() for part in str(values.get(name) or "").split(",") if part.strip()]


def _code(text: str) -> int | str:
    # "2xx" stays text, and so does a number too long for int(); the use case checks
    return int(text) if text.isdecimal() and len(text) <= 10 else text


def _seconds(text: str) -> float | str:
    try:
        return float(text.replace(",", "."))
    except ValueError:
        return text  # refused by the use case, by its field


async def list_actions(request: web.Request, form: Form | None = None) -> web.Response:
    tenant = tenant_of(request)
    services = services_of(request)
    limit, cursor = paging.page_params(request.query)
    docs = await services.actions.list_actions(tenant, {}, after=cursor, limit=limit)
    context = {
        "items": [public_action(d) for d in docs],
        "next_cursor": str(docs[-1]["_id"]) if len(docs) == limit else None,
        "form": form or Form({"method": "POST", "mode": "deliver"}),
        **await _choices(request),
    }
    return render(request, "partners/actions.html", context, status=422 if form else 200)


async def create_action(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    try:
        doc, secret = await services_of(request).actions.create_action_with_secret(
            tenant_of(request), create_body(values)
        )
    except FORM_ERRORS as exc:
        return await list_actions(request, Form(values).refuse(exc, CREATE_FIELDS))
    # The action's signing secret (its proxy calls and schedules): shown this once.
    context = {"action": public_action(doc), "secret": secret, "said": "actions.created"}
    return render(request, "partners/action_secret.html", context, status=201)


async def rotate_action_secret(request: web.Request) -> web.Response:
    actions = services_of(request).actions
    rotated = await actions.rotate_action_secret(
        tenant_of(request), _id(request), shown=shown_rotation(form_of(request))
    )
    doc = await actions.get_action(tenant_of(request), rotated["id"])
    context = {"action": public_action(doc), "secret": rotated["secret"], "said": None}
    return render(request, "partners/action_secret.html", context)


async def action_page(
    request: web.Request,
    call: Form | None = None,
    answer: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    doc = await services_of(request).actions.get_action(tenant_of(request), _id(request))
    context = {
        "action": public_action(doc),
        "retry_schedule": schedule_text(doc),
        "rotated": signing_revision(doc),  # posted by Rotate secret
        "call": call or Form({"entity.type": "vehicle"}),
        "answer": answer,
        "entity_types": ENTITY_TYPES,
    }
    return render(request, "partners/action.html", context, status=status)


async def call_action(request: web.Request) -> web.Response:
    """Calls the partner now, on a stored entity or a pasted payload (an admin's POST: the
    partner may change something, and a write-back action writes the answer)."""
    tenant, services = tenant_of(request), services_of(request)
    await services.actions.get_action(tenant, _id(request))  # another tenant's: a 404
    values = read_values(form_of(request))
    form = Form(values)
    ref = values.get("entity.ref", "")
    try:
        payload = json_field(values, "payload")
        if (payload is None) == (not ref):
            message = "give an entity (its id or key) or a payload, one of them"
            keyword = "required" if payload is None else "other"  # neither, or both
            raise InvalidPayload(message, [FieldProblem("/entity/ref", message, keyword)])
        if payload is not None and not isinstance(payload, dict):
            message = "the payload is a JSON object"
            raise InvalidPayload(message, [FieldProblem("/payload", message, "type")])
        entity = {"type": values.get("entity.type", ""), "key": ref} if ref else None
        result = await services.proxy.invoke(tenant, _id(request), entity=entity, payload=payload)
    except GatewayError as exc:  # the partner's refusal or silence (502, 504), a bad field
        problem = exc
        if isinstance(exc, NotFound) and ref:  # the entity named: a problem of its field
            problem = InvalidPayload(
                exc.detail, [FieldProblem("/entity/ref", exc.detail, "exists")]
            )
        return await action_page(request, form.refuse(problem, CALL_FIELDS), status=422)
    answer = {"status": result.status, "data": result.data, "written": result.written}
    return await action_page(request, form, answer)


async def edit_action(request: web.Request) -> web.Response:
    doc = await services_of(request).actions.get_action(tenant_of(request), _id(request))
    action = public_action(doc)
    return await _edit_form(request, action, editing(edit_values(action)))


async def update_action(request: web.Request) -> web.Response:
    tenant, actions = tenant_of(request), services_of(request).actions
    action = public_action(await actions.get_action(tenant, _id(request)))
    shown = edit_values(action)
    values = read_values(form_of(request), shown=shown)
    if (stale := stale_edit(values, shown)) is not None:
        return await _edit_form(request, action, stale, 409)
    try:
        body = changes(action_body(values), action_body(shown))
        if body:
            await actions.update_action(tenant, action["id"], body)
    except FORM_ERRORS as exc:  # a conflict: an SMS channel needs it so, a concurrent change
        refused = Form(values).refuse(exc, EDIT_FIELDS)
        return await _edit_form(request, action, refused, exc.status)
    return redirect(f"/admin/actions/{action['id']}", flash="actions.saved")


async def delete_action(request: web.Request) -> web.Response:
    await services_of(request).actions.delete_action(tenant_of(request), _id(request))
    return redirect("/admin/actions", flash="actions.deleted")


async def _edit_form(
    request: web.Request, action: dict[str, Any], form: Form, status: int = 200
) -> web.Response:
    context = {"action": action, "form": form, **await _choices(request)}
    return render(request, "partners/action_edit.html", context, status=status)


async def _choices(request: web.Request) -> dict[str, Any]:
    return {
        "partners": choices.named(await choices.partners(request)),
        "outbound": await choices.mappings(request, "outbound"),
        "methods": [(m, m) for m in METHODS],
        "soap_versions": SOAP_CHOICES,
    }
