"""/api/v1/deliveries: watch deliveries, replay failed, dead and parked ones."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.delivery.deliveries import STATUSES, parse_filters, public_delivery
from gateway.store.client import EVENT_CHILD_CURSOR
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import operation, text_cursor
from gateway.web.partners import PAGE
from gateway.web.problems import json_response
from gateway.web.requests import check_members, page, page_params, read_object
from gateway.web.state import services_of

DELIVERY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "status": {"enum": list(STATUSES)},
        "attempts": {"type": "array"},
        "event": {"type": "object"},
    },
}
_FILTERS = [
    ("status", "|".join(STATUSES)),
    ("partner_id", "partner id"),
    ("action_id", "action id"),
    ("entity_id", "entity id"),
    ("subscription_id", "subscription id"),
    ("event_id", "event id"),
    ("run_id", "flow run id: the run's calls and notifications"),
]


@operation(
    "List deliveries, newest first",
    tag="deliveries",
    response=PAGE,
    schemas={"status": {"enum": list(STATUSES)}, "cursor": text_cursor(EVENT_CHILD_CURSOR)},
    query=[
        *_FILTERS,
        ("limit", "page size, 1-200"),
        ("cursor", "next_cursor of the previous page"),
    ],
)
async def list_deliveries(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    docs = await services_of(request).deliveries.list(
        claims.tenant, parse_filters(request.query), before=cursor, limit=limit
    )
    return json_response(page([public_delivery(d) for d in docs], limit))


@operation("Get a delivery with its attempts", tag="deliveries", response=DELIVERY)
async def get_delivery(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).deliveries.get(claims.tenant, request.match_info["id"])
    return json_response(public_delivery(doc, full=True))


@operation(
    "Replay a failed, dead or parked delivery, or an action's suppressed one, now",
    tag="deliveries",
    response=DELIVERY,
    errors=(409,),
)
async def replay_delivery(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).deliveries.replay(claims.tenant, request.match_info["id"])
    return json_response(public_delivery(doc))


@operation(
    "Replay every failed, dead and parked delivery matching a filter (an action's suppressed "
    "ones with `status: suppressed`)",
    tag="deliveries",
    request={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **{k: {"type": "string"} for k, _ in _FILTERS},
            "status": {"enum": ["", *STATUSES]},
        },
    },
    response={"type": "object", "properties": {"replayed": {"type": "integer"}}},
)
async def replay_deliveries(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    check_members(body, {k: str for k, _ in _FILTERS})
    filters = parse_filters(body)
    count = await services_of(request).deliveries.replay_matching(claims.tenant, filters)
    return json_response({"replayed": count})
