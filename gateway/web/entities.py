"""/api/v1/entities/{type}: thin adapters over the entity use case."""

from __future__ import annotations

from aiohttp import web

from gateway.entities import Origin, filter_fields, public
from gateway.schemas.registry import ENTITY_TYPES
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import ID_CURSOR, operation
from gateway.web.problems import json_response
from gateway.web.requests import page, page_params, read_object
from gateway.web.state import services_of


def _filters() -> list[tuple[str, str]]:
    """Each filter of an entity list as a query parameter, naming the types it filters
    (`filter_fields`, which the handler checks them with)."""
    types: dict[str, list[str]] = {}
    for etype in ENTITY_TYPES:
        for name in filter_fields(etype):
            types.setdefault(name, []).append(etype)
    return [
        (
            name,
            f"a filter of {', '.join(f'`{t}`' for t in of)} (docs/api.md; another type's "
            "filter is a 400)",
        )
        for name, of in types.items()
    ]


@operation(
    "List entities (also filtered by indexed fields: vehicle plate, status, group, renavam; "
    "driver cpf, status; supplier cnpj; operator cpf, role; other kind, status, plate)",
    tag="entities",
    response={
        "type": "object",
        "properties": {"items": {"type": "array"}, "next_cursor": {"type": ["string", "null"]}},
    },
    query=[
        ("limit", "page size, 1-200"),
        ("cursor", "next_cursor of the previous page"),
        *_filters(),
    ],
    schemas={"cursor": ID_CURSOR},
    # Which filters a list takes depends on its {type}: EntityService.filters names another
    # type's (the document lists them all, each naming its types).
    open_query=True,
)
async def list_entities(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    etype = request.match_info["type"]
    limit, cursor = page_params(request)
    service = services_of(request).entities
    filters = service.filters(etype, request.query)
    docs = await service.find(claims.tenant, etype, filters, after=cursor, limit=limit)
    return json_response(page([public(d) for d in docs], limit))


@operation(
    "Create an entity",
    tag="entities",
    request="entity",
    response="entity",
    status=201,
    errors=(409,),
)
async def create_entity(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    result = await services_of(request).entities.create(
        claims.tenant, request.match_info["type"], body, Origin("admin", claims.subject)
    )
    return json_response(public(result.entity), status=201)


@operation("Get an entity by id or natural key", tag="entities", response="entity")
async def get_entity(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).entities.get(
        claims.tenant, request.match_info["type"], request.match_info["ref"]
    )
    return json_response(public(doc))


@operation(
    "Change an entity (JSON merge patch)",
    tag="entities",
    request="entity_patch",
    response="entity",
    errors=(409,),
)
async def patch_entity(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    result = await services_of(request).entities.patch(
        claims.tenant,
        request.match_info["type"],
        request.match_info["ref"],
        body,
        Origin("admin", claims.subject),
    )
    answer = public(result.entity)
    answer["changed"] = [c.field for c in result.changes]
    return json_response(answer)


@operation("Delete an entity", tag="entities", status=204)
async def delete_entity(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    await services_of(request).entities.delete(
        claims.tenant,
        request.match_info["type"],
        request.match_info["ref"],
        Origin("admin", claims.subject),
    )
    return web.Response(status=204)
