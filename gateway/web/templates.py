"""/api/v1/templates: notification templates (Jinja2, sandboxed), and previews."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.errors import FieldProblem, InvalidPayload
from gateway.formats.json_tree import is_text
from gateway.notify.templates import public_template
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import FILE_NAME, ID_CURSOR, operation, strict
from gateway.web.problems import json_response
from gateway.web.requests import page, page_params, read_object, unknown_members
from gateway.web.state import services_of

_PARTS = {"type": "object", "additionalProperties": {"type": "string"}}
TEMPLATE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["name", "channel_type", "locales"],
    "properties": {
        "name": FILE_NAME,
        "channel_type": {"enum": ["email", "push", "sms"]},
        "description": {"type": "string"},
        "locales": {
            "type": "object",
            "description": "pt-BR and/or en: {subject, text, html?} (email), {title, body} "
            "(push), {text} (sms), each a Jinja2 template",
            "minProperties": 1,
            "properties": {"pt-BR": _PARTS, "en": _PARTS},
        },
        "default_locale": {"enum": ["pt-BR", "en"]},
        "sample": {"type": "object", "description": "a context the template must render"},
    },
}
TEMPLATE: dict[str, Any] = {
    "type": "object",
    "properties": {
        **TEMPLATE_BODY["properties"],
        "id": {"type": "string"},
        "sample": {"type": ["object", "null"], "description": "null: none was given"},
    },
}
_PREVIEW: dict[str, Any] = {
    "type": "object",
    "required": ["template"],
    "additionalProperties": False,
    "properties": {
        "template": {"type": ["string", "object"], "description": "a name, or a draft"},
        "context": {"type": "object", "description": "default: the template's sample"},
        "locale": {"type": "string", "description": "the recipient's language"},
    },
}
_RENDERED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "locale": {"type": "string"},
        "parts": {"type": "object"},
        "undefined": {"type": "array", "items": {"type": "string"}},
    },
}


@operation(
    "Create a template",
    tag="templates",
    request=strict(TEMPLATE_BODY),
    response=TEMPLATE,
    status=201,
    errors=(409,),  # the tenant has a template of that name
)
async def create_template(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    doc = await services_of(request).notify.templates.create(claims.tenant, body, claims.subject)
    return json_response(public_template(doc), status=201)


@operation(
    "List templates",
    tag="templates",
    response={"type": "object", "properties": {"items": {"type": "array"}}},
    query=[("limit", "page size, 1-200"), ("cursor", "next_cursor of the previous page")],
    schemas={"cursor": ID_CURSOR},
)
async def list_templates(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    docs = await services_of(request).notify.templates.list(
        claims.tenant, after=cursor, limit=limit
    )
    return json_response(page([public_template(d) for d in docs], limit))


@operation("Get a template by id or name", tag="templates", response=TEMPLATE)
async def get_template(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).notify.templates.get(claims.tenant, request.match_info["ref"])
    return json_response(public_template(doc))


@operation(
    "Replace a template (its name stays; its channel_type too while an active flow uses it: 409)",
    tag="templates",
    request=strict(TEMPLATE_BODY),
    response=TEMPLATE,
    errors=(409,),
)
async def replace_template(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    doc = await services_of(request).notify.templates.replace(
        claims.tenant, request.match_info["ref"], body, claims.subject
    )
    return json_response(public_template(doc))


@operation(
    "Delete a template (409 while a flow uses it)", tag="templates", status=204, errors=(409,)
)
async def delete_template(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    await services_of(request).notify.templates.delete(claims.tenant, request.match_info["ref"])
    return web.Response(status=204)


@operation(
    "Render a template or a draft on a sample (nothing is sent or stored)",
    tag="templates",
    request=_PREVIEW,
    response=_RENDERED,
)
async def preview_template(request: web.Request) -> web.Response:
    claims = await authenticate(request, writes=False)
    body = await read_object(request)
    template, context, locale = body.get("template"), body.get("context"), body.get("locale")
    problems = unknown_members(body, _PREVIEW)
    if not isinstance(template, str | dict):
        problems.append(FieldProblem("/template", "a template name, or a draft", "type"))
    if context is not None and not isinstance(context, dict):
        problems.append(FieldProblem("/context", "context is an object", "type"))
    if locale is not None and not is_text(locale):
        problems.append(FieldProblem("/locale", "locale is a language tag", "type"))
    if problems:
        raise InvalidPayload("invalid preview", problems)
    result = await services_of(request).notify.templates.preview(
        claims.tenant,
        ref=template if isinstance(template, str) else None,
        draft=template if isinstance(template, dict) else None,
        context=context,
        locale=locale,
    )
    return json_response(result)
