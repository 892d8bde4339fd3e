"""/api/v1/kinds: tenants' custom kinds of `other` entities."""

from __future__ import annotations

from aiohttp import web

from gateway.kinds import public_kind
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import operation
from gateway.web.problems import json_response
from gateway.web.requests import read_object
from gateway.web.state import services_of

_KIND = {
    "type": "object",
    "required": ["name", "schema"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
        "schema": {"type": "object", "description": "JSON Schema (2020-12) of the kind's fields"},
    },
}


@operation("List custom kinds", tag="kinds", response={"type": "object"})
async def list_kinds(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    docs = await services_of(request).kinds.find(claims.tenant)
    return json_response({"items": [public_kind(d) for d in docs]})


@operation(
    "Register a custom kind", tag="kinds", request=_KIND, response=_KIND, status=201, errors=(409,)
)
async def create_kind(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).kinds.create(
        claims.tenant, await read_object(request), claims.subject
    )
    return json_response(public_kind(doc), status=201)


@operation("Get a custom kind", tag="kinds", response=_KIND)
async def get_kind(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).kinds.get(claims.tenant, request.match_info["name"])
    return json_response(public_kind(doc))


@operation("Replace a custom kind's schema", tag="kinds", request=_KIND, response=_KIND)
async def replace_kind(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).kinds.replace(
        claims.tenant, request.match_info["name"], await read_object(request), claims.subject
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
