"""/api/v1/kinds: tenants' custom kinds of `other` entities."""

from __future__ import annotations

from aiohttp import web

from gateway.kinds import public_kind
from gateway.store.client import KIND_CURSOR
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import operation, text_cursor
from gateway.web.problems import json_response
from gateway.web.requests import check_members, page_params, query_flag, read_object
from gateway.web.state import services_of

_NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"}
_SCHEMA = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"const": "object"}},
    "description": "JSON Schema (2020-12) of the kind's fields: an object",
}
_KIND = {
    "type": "object",
    "required": ["name", "schema"],
    "properties": {"name": _NAME, "schema": _SCHEMA},
}
_NEW_KIND = {**_KIND, "additionalProperties": False}
# A replacement names its kind in the path: a `name` in the body (a rename) is refused.
_REPLACEMENT = {
    "type": "object",
    "required": ["schema"],
    "properties": {"schema": _SCHEMA},
    "additionalProperties": False,
}


@operation(
    "List custom kinds",
    tag="kinds",
    response={
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": _KIND},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    query=[("limit", "page size, 1-200"), ("cursor", "next_cursor of the previous page")],
    schemas={"cursor": text_cursor(KIND_CURSOR)},
)
async def list_kinds(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    docs = await services_of(request).kinds.find(claims.tenant, after=cursor, limit=limit)
    next_cursor = docs[-1]["name"] if len(docs) == limit else None
    return json_response({"items": [public_kind(d) for d in docs], "next_cursor": next_cursor})


@operation(
    "Register a custom kind",
    tag="kinds",
    request=_NEW_KIND,
    response=_KIND,
    status=201,
    errors=(409,),
)
async def create_kind(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    check_members(body, {"name": str, "schema": dict}, required=("name", "schema"))
    doc = await services_of(request).kinds.create(claims.tenant, body, claims.subject)
    return json_response(public_kind(doc), status=201)


@operation("Get a custom kind", tag="kinds", response=_KIND)
async def get_kind(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).kinds.get(claims.tenant, request.match_info["name"])
    return json_response(public_kind(doc))


@operation(
    "Replace a custom kind's schema (refused while stored entities of it would not validate)",
    tag="kinds",
    request=_REPLACEMENT,
    response=_KIND,
    query=[("force", "true to replace it even if stored entities do not validate against it")],
    schemas={"name": _NAME, "force": {"enum": ["true", "false", "1", "0"]}},
    errors=(409,),
)
async def replace_kind(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    force = query_flag(request, "force", False)
    body = await read_object(request)
    check_members(body, {"schema": dict}, required=("schema",))
    doc = await services_of(request).kinds.replace(
        claims.tenant, request.match_info["name"], body, claims.subject, force=force
    )
    return json_response(public_kind(doc))


@operation(
    "Delete a custom kind (refused while entities of it exist)",
    tag="kinds",
    status=204,
    errors=(409,),
)
async def delete_kind(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    await services_of(request).kinds.delete(claims.tenant, request.match_info["name"])
    return web.Response(status=204)
