"""Custom kind pages: the tenant's own kinds of `other` entities (fines and checklists are
built in), each a name and the JSON Schema of its fields; register one, replace its schema,
delete it (refused while entities of it exist)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway.errors import Conflict, FieldProblem, GatewayError, InvalidPayload
from gateway.kinds import public_kind
from gateway.ui.forms import Form, editing, json_field, read_values, stale_edit
from gateway.ui.rendering import redirect, render
from gateway.ui.state import form_of, session_of, tenant_of
from gateway.ui.templating import tojson_pretty
from gateway.web.state import services_of

FIELDS: Final = ("name", "schema")
EXAMPLE: Final = """{
  "type": "object",
  "required": ["plate", "liters"],
  "properties": {
    "plate": {"type": "string"},
    "liters": {"type": "number", "minimum": 0}
  }
}"""


def _name(request: web.Request) -> str:
    return request.match_info["name"]


async def list_kinds(request: web.Request, form: Form | None = None) -> web.Response:
    tenant, services = tenant_of(request), services_of(request)
    docs = await services.kinds.find(tenant)
    context = {
        "items": [public_kind(d) for d in docs],
        "builtin": services.schemas.builtin_kinds,
        "form": form or Form({"schema": EXAMPLE}),
    }
    return render(request, "kinds/list.html", context, status=422 if form else 200)


async def create_kind(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    try:
        body = {"name": values.get("name", ""), "schema": _schema(values)}
        doc = await services_of(request).kinds.create(
            tenant_of(request), body, session_of(request).subject
        )
    except GatewayError as exc:
        return await list_kinds(request, Form(values).refuse(exc, FIELDS))
    return redirect(f"/admin/kinds/{doc['name']}", flash="kinds.created")


async def kind_page(
    request: web.Request, form: Form | None = None, *, status: int = 200
) -> web.Response:
    doc = public_kind(await services_of(request).kinds.get(tenant_of(request), _name(request)))
    context = {"kind": doc, "form": form or editing(_edit_values(doc))}
    return render(request, "kinds/detail.html", context, status=status)


def _edit_values(kind: dict[str, Any]) -> dict[str, Any]:
    return {"schema": tojson_pretty(kind["schema"])}


async def replace_kind(request: web.Request) -> web.Response:
    tenant, kinds = tenant_of(request), services_of(request).kinds
    values = read_values(form_of(request))
    current = public_kind(await kinds.get(tenant, _name(request)))
    if (stale := stale_edit(values, _edit_values(current))) is not None:
        return await kind_page(request, stale, status=409)
    try:
        body = {"schema": _schema(values)}
        await kinds.replace(tenant, _name(request), body, session_of(request).subject)
    except GatewayError as exc:
        return await kind_page(request, Form(values).refuse(exc, FIELDS), status=422)
    return redirect(f"/admin/kinds/{_name(request)}", flash="kinds.saved")


async def delete_kind(request: web.Request) -> web.Response:
    try:
        await services_of(request).kinds.delete(tenant_of(request), _name(request))
    except Conflict as exc:  # entities of it exist: say so on its page
        return await kind_page(request, Form().refuse(exc, ()), status=409)
    return redirect("/admin/kinds", flash="kinds.deleted")


def _schema(values: dict[str, Any]) -> Any:
    schema = json_field(values, "schema")
    if not isinstance(schema, dict):
        message = 'paste the JSON Schema of the kind\'s fields: an object, {"type": "object", ...}'
        keyword = "required" if schema is None else "type"  # empty, or not an object
        raise InvalidPayload(message, [FieldProblem("/schema", message, keyword)])
    return schema
