"""/api/v1/triggers and /api/v1/rejected: thin adapters over the trigger use cases."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway.formats.json_tree import whole_number
from gateway.store.client import TRIGGER_CURSOR
from gateway.triggers.hmac_secrets import MAX_SECRET
from gateway.triggers.spec import PATCHABLE, TRIGGER_SCHEMA
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import ID_CURSOR, cleared, operation, text_cursor
from gateway.web.problems import json_response
from gateway.web.requests import (
    check_members,
    page,
    page_params,
    read_object,
    read_optional_object,
)
from gateway.web.state import services_of

_TRIGGER: Final[dict[str, Any]] = {
    "type": "object",
    "description": "A trigger; `token` (or `secret`) only when just issued",
    "properties": {
        "id": {"type": "string"},
        "url": {"type": "string"},
        "token": {"type": "string"},
        "secret": {"type": "string"},
    },
}
_PAGE: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"items": {"type": "array"}, "next_cursor": {"type": ["string", "null"]}},
}


_TRIGGER_PATCH: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        k: v if k in TRIGGER_SCHEMA["required"] else cleared(v)
        for k, v in TRIGGER_SCHEMA["properties"].items()
        if k in PATCHABLE
    },
}
# gateway/triggers/spec.py `check_spec`: a trigger's limits are at most the operator's.
_CEILINGS: Final = {"max_body_bytes": "max_body_bytes", "max_batch_items": "max_batch_items"}
# A kept rejected payload as answered (gateway/triggers/rejected.py `public_rejected`); the
# payload itself (or an excerpt of one not replayable) only on its read.
_REJECTED: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["id", "trigger_id", "received_at", "reason", "status", "replayable"],
    "properties": {
        "id": {"type": "string"},
        "trigger_id": {"type": "string"},
        "received_at": {"type": "string", "format": "date-time"},
        "reason": {"type": "string"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
        "errors_omitted": {"type": "integer", "minimum": 0},
        "scope": {"type": "string"},
        "index": {"type": ["integer", "null"]},
        "status": {"type": "string"},
        "times_received": {"type": "integer", "minimum": 1},
        "first_received_at": {"type": "string", "format": "date-time"},
        "attempts": {"type": "integer", "minimum": 0},
        "replayable": {"type": "boolean"},
        "size": {"type": ["integer", "null"]},
        "replayed_at": {"type": ["string", "null"], "format": "date-time"},
        "result": {"description": "the last replay's outcome"},
        "payload": {"description": "the payload as received (a replayable one)"},
        "payload_excerpt": {"type": "string", "description": "the start of one not replayable"},
    },
}
# What a replay answers (gateway/triggers/replay.py `replay`, `replay_all`).
_REPLAYED: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["id", "status", "result"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "status": {"const": "replayed"},
        "result": {
            "type": "object",
            "description": "what the trigger answers the payload now, as its hook answers a "
            "call (the write's answer, a batch's results)",
        },
    },
}
_REPLAYED_ALL: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["replayed", "failed", "results"],
    "additionalProperties": False,
    "properties": {
        "replayed": {"type": "integer", "minimum": 0},
        "failed": {"type": "integer", "minimum": 0},
        "results": {
            "type": "array",
            "description": "one per pending payload, oldest first",
            "items": {
                "type": "object",
                "required": ["id", "status"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string"},
                    "status": {"enum": ["replayed", "failed"]},
                    "problem": {
                        "$ref": "#/components/schemas/Problem",
                        "description": "why it failed (refused again, its trigger gone, busy)",
                    },
                },
            },
        },
    },
}
_ROTATE: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "grace_seconds": {"type": "integer", "minimum": 0},
        "secret": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_SECRET,
            "writeOnly": True,
            "description": "hmac triggers: the partner's new secret (else one is issued)",
        },
    },
}
_REPLAY_ALL: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"trigger_id": {"type": "string"}},
}


@operation(
    "Create a trigger (its token or secret is shown once)",
    tag="triggers",
    request=TRIGGER_SCHEMA,
    ceilings=_CEILINGS,
    response=_TRIGGER,
    status=201,
    errors=(409,),
)
async def create_trigger(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    issued = await services_of(request).triggers.create(claims.tenant, await read_object(request))
    return json_response(issued.as_dict(), status=201)


@operation(
    "List triggers",
    tag="triggers",
    response=_PAGE,
    query=[("limit", "page size, 1-200"), ("cursor", "next_cursor of the previous page")],
    schemas={"cursor": text_cursor(TRIGGER_CURSOR)},
)
async def list_triggers(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    items = await services_of(request).triggers.list(claims.tenant, after=cursor, limit=limit)
    return json_response(page(items, limit))


@operation("Get a trigger (never its token)", tag="triggers", response=_TRIGGER)
async def get_trigger(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    return json_response(
        await services_of(request).triggers.get(claims.tenant, request.match_info["id"])
    )


@operation(
    "Change a trigger (top-level members replace; null clears)",
    tag="triggers",
    request=_TRIGGER_PATCH,
    ceilings=_CEILINGS,
    response=_TRIGGER,
    errors=(409,),
)
async def patch_trigger(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    return json_response(
        await services_of(request).triggers.update(claims.tenant, request.match_info["id"], body)
    )


@operation("Delete a trigger (its credentials fail at once)", tag="triggers", status=204)
async def delete_trigger(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    await services_of(request).triggers.delete(claims.tenant, request.match_info["id"])
    return web.Response(status=204)


# 409: the trigger kept changing under the change (triggers/service.py `_change`).
@operation(
    "Disable a trigger (valid credentials get 403)",
    tag="triggers",
    response=_TRIGGER,
    errors=(409,),
)
async def disable_trigger(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    return json_response(
        await services_of(request).triggers.set_status(
            claims.tenant, request.match_info["id"], "disabled"
        )
    )


@operation("Enable a trigger", tag="triggers", response=_TRIGGER, errors=(409,))
async def enable_trigger(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    return json_response(
        await services_of(request).triggers.set_status(
            claims.tenant, request.match_info["id"], "active"
        )
    )


@operation(
    "Issue a new token or secret (shown once); the old one lasts grace_seconds",
    tag="triggers",
    request=_ROTATE,
    response=_TRIGGER,
    errors=(409,),
    body_required=False,
)
async def rotate_trigger(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_optional_object(request)
    check_members(body, {"grace_seconds": int, "secret": str})
    grace = whole_number(body.get("grace_seconds", 0))  # check_members refused another type
    issued = await services_of(request).triggers.rotate(
        claims.tenant,
        request.match_info["id"],
        grace_seconds=0 if grace is None else grace,
        secret=body.get("secret"),
    )
    return json_response(issued.as_dict())


@operation(
    "Revoke every token or secret of a trigger, at once",
    tag="triggers",
    response=_TRIGGER,
    errors=(409,),
)
async def revoke_trigger(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    return json_response(
        await services_of(request).triggers.revoke(claims.tenant, request.match_info["id"])
    )


@operation(
    "List rejected trigger payloads (newest first)",
    tag="rejected",
    response=_PAGE,
    schemas={"status": {"enum": ["pending", "replayed"]}, "cursor": ID_CURSOR},
    query=[
        ("trigger_id", "only this trigger's"),
        ("status", "pending | replayed"),
        ("limit", "page size, 1-200"),
        ("cursor", "next_cursor of the previous page"),
    ],
)
async def list_rejected(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    items = await services_of(request).rejected.list(
        claims.tenant,
        trigger_id=request.query.get("trigger_id"),
        status=request.query.get("status"),
        before=cursor,
        limit=limit,
    )
    return json_response(page(items, limit))


@operation("Get a rejected payload with its problems", tag="rejected", response=_REJECTED)
async def get_rejected(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    return json_response(
        await services_of(request).rejected.get(claims.tenant, request.match_info["id"])
    )


@operation(
    "Replay a rejected payload with the trigger's current schema and mapping",
    tag="rejected",
    response=_REPLAYED,
    errors=(409,),
)
async def replay_rejected(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    result = await services_of(request).rejected.replay(claims.tenant, request.match_info["id"])
    return json_response(result)


@operation(
    "Replay every pending rejected payload (of one trigger, or all)",
    tag="rejected",
    request=_REPLAY_ALL,
    response=_REPLAYED_ALL,
    body_required=False,
)
async def replay_all_rejected(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_optional_object(request)
    check_members(body, {"trigger_id": str})
    trigger_id = body.get("trigger_id")
    result = await services_of(request).rejected.replay_all(
        claims.tenant, trigger_id=trigger_id if isinstance(trigger_id, str) else None
    )
    return json_response(result)
