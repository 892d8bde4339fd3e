"""/api/v1/events: the event log, as the relay stored it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.errors import BadRequest
from gateway.events import public_event
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import ID_CURSOR, operation
from gateway.web.problems import json_response
from gateway.web.requests import page, page_params
from gateway.web.state import services_of

# A feed cursor (`store/events.py` `FEED_CURSOR`), or a date-time to start from.
AFTER: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": "^[0-9]{1,14}\\.[0-9a-f]{24}$"},
        {"type": "string", "format": "date-time"},
    ]
}

# An event as stored and answered (gateway/events.py `event_document`, `public_event`): what a
# webhook carries and a flow reads.
EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "type", "occurred_at", "entity", "data", "origin"],
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string", "description": "e.g. entity.updated, vehicle.position"},
        "occurred_at": {"type": "string", "format": "date-time"},
        "relayed_at": {"type": ["string", "null"], "format": "date-time"},
        "entity": {
            "type": "object",
            "required": ["type", "id", "key"],
            "properties": {
                "type": {"type": "string"},
                "id": {"type": "string"},
                "key": {"type": "string", "description": "a plate, a CPF, a kind:key"},
                "rev": {"type": "integer"},
            },
        },
        "position": {"type": "integer"},
        "data": {"type": "object", "description": "the entity's data after the change"},
        "changes": {"description": "the members the change wrote"},
        "origin": {
            "type": "object",
            "required": ["kind"],
            "description": "who caused it: admin, trigger, action, schedule, flow, fold, ...",
            "properties": {"kind": {"type": "string"}, "id": {}},
        },
        "detail": {"type": "object", "description": "the event type's own members"},
        "occurrence_id": {"type": "string"},
    },
}


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
        (
            "after",
            "the feed: events stored after this point, oldest first (`relayed_at`, then id), "
            "each a settle window after it was stored; the next_cursor of the previous page, "
            "or a date-time with its offset to start from. Alone (with limit only)",
        ),
    ],
    schemas={"cursor": ID_CURSOR, "after": AFTER},
)
async def list_events(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    if (after := request.query.get("after")) is not None:
        if given := sorted(set(request.query) - {"after", "limit"}):
            raise BadRequest(f"after reads the whole feed, alone: {given[0]} is not taken with it")
        docs, next_cursor = await services_of(request).events.follow(claims.tenant, after, limit)
        items = [public_event(d) for d in docs]
        return json_response({"items": items, "next_cursor": next_cursor})
    docs = await services_of(request).events.find(
        claims.tenant,
        event_type=request.query.get("type"),
        entity_id=request.query.get("entity_id"),
        before=cursor,
        limit=limit,
    )
    return json_response(page([public_event(d) for d in docs], limit))


@operation("Get an event", tag="events", response=EVENT)
async def get_event(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).events.get(claims.tenant, request.match_info["id"])
    return json_response(public_event(doc))
