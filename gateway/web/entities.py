"""/api/v1/entities/{type} and /api/v1/events: thin adapters over the entity use case."""

from __future__ import annotations

from aiohttp import web

from gateway.entities import Origin, public
from gateway.errors import BadRequest, NotFound
from gateway.events import public_event
from gateway.keys import entities_key, relay_key, store_key
from gateway.store.entities import FILTERABLE
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import operation
from gateway.web.problems import json_response
from gateway.web.requests import page, page_params, read_object

_PAGE_PARAMS = frozenset({"limit", "cursor"})


def _filters(request: web.Request, etype: str) -> dict[str, str]:
    allowed = FILTERABLE.get(etype, ())
    filters = {k: v for k, v in request.query.items() if k not in _PAGE_PARAMS}
    unknown = sorted(set(filters) - set(allowed))
    if unknown:
        raise BadRequest(
            f"cannot filter {etype} by {', '.join(unknown)}; "
            f"filters: {', '.join(allowed) or 'none'}"
        )
    return filters


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
    ],
)
async def list_entities(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    etype = request.match_info["type"]
    limit, cursor = page_params(request)
    service = request.app[entities_key]
    filters = service.normalize_filters(etype, _filters(request, etype))
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
    result = await request.app[entities_key].create(
        claims.tenant, request.match_info["type"], body, Origin("admin", claims.subject)
    )
    request.app[relay_key].notify()
    return json_response(public(result.entity), status=201)


@operation("Get an entity by id or natural key", tag="entities", response="entity")
async def get_entity(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await request.app[entities_key].get(
        claims.tenant, request.match_info["type"], request.match_info["ref"]
    )
    return json_response(public(doc))


@operation(
    "Change an entity (JSON merge patch)",
    tag="entities",
    request={"type": "object"},
    response="entity",
    errors=(409,),
)
async def patch_entity(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    result = await request.app[entities_key].patch(
        claims.tenant,
        request.match_info["type"],
        request.match_info["ref"],
        body,
        Origin("admin", claims.subject),
    )
    request.app[relay_key].notify()
    answer = public(result.entity)
    answer["changed"] = [c.field for c in result.changes]
    return json_response(answer)


@operation("Delete an entity", tag="entities", status=204)
async def delete_entity(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    await request.app[entities_key].delete(
        claims.tenant,
        request.match_info["type"],
        request.match_info["ref"],
        Origin("admin", claims.subject),
    )
    request.app[relay_key].notify()
    return web.Response(status=204)


@operation(
    "List events",
    tag="events",
    response={
        "type": "object",
        "properties": {"items": {"type": "array"}, "next_cursor": {"type": ["string", "null"]}},
    },
    query=[
        ("type", "event type"),
        ("entity_id", "entity id"),
        ("limit", "page size"),
        ("cursor", "next_cursor of the previous page"),
    ],
)
async def list_events(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    filters = {}
    if event_type := request.query.get("type"):
        filters["type"] = event_type
    if entity_id := request.query.get("entity_id"):
        filters["entity.id"] = entity_id
    docs = await request.app[store_key].events.find(
        claims.tenant, filters, before=cursor, limit=limit
    )
    return json_response(page([public_event(d) for d in docs], limit))


@operation("Get an event", tag="events", response={"type": "object"})
async def get_event(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await request.app[store_key].events.get(claims.tenant, request.match_info["id"])
    if doc is None:
        raise NotFound(f"no event {request.match_info['id']!r}")
    return json_response(public_event(doc))
