"""/api/v1/schedules: polled partner feeds (docs/schedules.md) and their runs."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.web.admin_auth import authenticate
from gateway.web.openapi import ID_CURSOR, TEXT_NAME, merge_patch, operation, strict
from gateway.web.problems import json_response
from gateway.web.requests import page, page_params, read_object
from gateway.web.state import services_of

SCHEDULE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["name", "action_id", "every", "target"],
    "properties": {
        "name": TEXT_NAME,
        "action_id": {"type": "string", "description": "a GET action, or one marked read_only"},
        "every": {"type": "string", "description": '"30s", "5m", "1h", "1d" or 5-field cron'},
        "timezone": {"type": "string", "default": "America/Sao_Paulo"},
        "cursor": {
            "type": "object",
            "description": "from (a cursor in the answer) or step (page numbers, offsets), "
            "each with param; or follow (the next page's whole URL)",
            "properties": {
                "follow": {
                    "type": "string",
                    "description": 'instead of the others: "header.Link" (rel="next"), '
                    '"header.NAME" or "body.<JMESPath>": the next call is that URL',
                },
                "from": {
                    "type": "string",
                    "description": "JMESPath on the answer, or header.NAME: the answer "
                    "header holding it",
                },
                "param": {"type": "string", "description": "query.NAME | header.NAME | body.a.b"},
                "more": {"type": "string", "description": "JMESPath: the partner has more"},
                "initial": {"type": ["string", "number"]},
                "step": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "instead of from: added to the last call's page number or "
                    "offset; back to initial once the list ends",
                },
            },
        },
        "target": {
            "type": "object",
            "required": ["mapping"],
            "properties": {
                "type": {"enum": ["entities", "positions"], "default": "entities"},
                "entity_type": {"type": "string"},
                "kind": {"type": "string"},
                "mapping": {"type": "string"},
                "params": {"type": "object"},
            },
        },
        "dedupe": {
            "type": "object",
            "required": ["by"],
            "properties": {"by": {"type": "string"}, "keep": {"type": "integer", "default": 1000}},
        },
        "request": {
            "type": "object",
            "properties": {"query": {"type": "object"}, "body": {"type": "object"}},
        },
        "error": {"type": "string", "description": "JMESPath: a non-empty value fails the call"},
        "max_pages": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
        "status": {"enum": ["active", "paused"]},
    },
}
SCHEDULE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "status": {"enum": ["active", "paused"]},
        "state": {
            "type": "object",
            "properties": {
                "cursor": {},
                "next_run_at": {"type": "string", "format": "date-time"},
                "running": {"type": "boolean"},
                "failures": {"type": "integer"},
                "last_error": {"type": ["object", "null"]},
            },
        },
    },
}
PAGE: dict[str, Any] = {
    "type": "object",
    "properties": {"items": {"type": "array"}, "next_cursor": {"type": ["string", "null"]}},
}
_PAGING = [("limit", "page size, 1-200"), ("cursor", "next_cursor of the previous page")]
_CURSOR: dict[str, Any] = {"type": ["string", "number", "null"]}
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
# One run as the list answers it (gateway/schedules/service.py `public_run`, written by
# gateway/schedules/runner.py `_finish`): every member, null when the run has none.
_RUN_MEMBERS: dict[str, Any] = {
    "id": {"type": "string"},
    "started_at": {"type": "string", "format": "date-time"},
    "finished_at": {"type": "string", "format": "date-time"},
    "duration_ms": {"type": "number", "minimum": 0},
    "outcome": {"enum": ["ok", "more", "failed", "held", "lost_lease"]},
    "pages": _COUNT,
    "items_read": _COUNT,
    "written": _COUNT,
    "rejected": _COUNT,
    "skipped": _COUNT,
    "cursor_before": _CURSOR,
    "cursor_after": _CURSOR,
    "cursor_refused": {**_CURSOR, "description": "a time cursor the partner sent back"},
    "note": {"type": ["string", "null"]},
    "error": {
        "type": ["object", "null"],
        "description": "why the run failed (null when it did not)",
        "required": ["at", "kind", "message"],
        "additionalProperties": False,
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "kind": {"type": "string"},
            "message": {"type": "string"},
            "status": {"type": "integer", "description": "the partner's HTTP status"},
            "errors": {"type": "array", "items": {"type": "object"}, "maxItems": 5},
        },
    },
    "item_errors": {
        "type": "array",
        "items": {"type": "object"},
        "description": "the problems of the items refused",
    },
    "owner": {"type": "string", "description": "the process that ran it"},
}
RUN: dict[str, Any] = {
    "type": "object",
    "required": list(_RUN_MEMBERS),
    "additionalProperties": False,
    "properties": _RUN_MEMBERS,
}


def _id(request: web.Request) -> str:
    return request.match_info["id"]


@operation(
    "Create a schedule",
    tag="schedules",
    request=strict(SCHEDULE_BODY),
    response=SCHEDULE,
    status=201,
    errors=(409,),  # the tenant has a schedule of that name
)
async def create_schedule(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    return json_response(
        await services_of(request).schedules.create(claims.tenant, body), status=201
    )


@operation(
    "List schedules", tag="schedules", response=PAGE, query=_PAGING, schemas={"cursor": ID_CURSOR}
)
async def list_schedules(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    items = await services_of(request).schedules.list(claims.tenant, after=cursor, limit=limit)
    return json_response(page(items, limit))


@operation("Get a schedule and its state", tag="schedules", response=SCHEDULE)
async def get_schedule(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    return json_response(await services_of(request).schedules.get(claims.tenant, _id(request)))


@operation(
    "Change a schedule (members replaced whole; a change of cursor, action_id or request "
    "resets it, else the cursor is kept)",
    tag="schedules",
    request=merge_patch(
        SCHEDULE_BODY,
        "members to change, each replaced whole (null clears an optional one)",
        nullable=("timezone", "cursor", "dedupe", "request", "error"),
    ),
    response=SCHEDULE,
    errors=(409,),
)
async def patch_schedule(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    schedules = services_of(request).schedules
    return json_response(await schedules.update(claims.tenant, _id(request), body))


@operation("Delete a schedule and its runs", tag="schedules", status=204)
async def delete_schedule(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    await services_of(request).schedules.delete(claims.tenant, _id(request))
    return web.Response(status=204)


@operation("Pause a schedule", tag="schedules", response=SCHEDULE)
async def pause_schedule(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    return json_response(await services_of(request).schedules.pause(claims.tenant, _id(request)))


@operation("Resume a paused schedule (due at once)", tag="schedules", response=SCHEDULE)
async def resume_schedule(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    return json_response(await services_of(request).schedules.resume(claims.tenant, _id(request)))


@operation(
    "Reset a schedule: due at once from cursor.initial, its failure streak forgotten "
    "(remembered ids kept)",
    tag="schedules",
    response=SCHEDULE,
    errors=(409,),
)
async def reset_schedule(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    return json_response(await services_of(request).schedules.reset(claims.tenant, _id(request)))


@operation("Run a schedule now", tag="schedules", response=SCHEDULE, status=202, errors=(409,))
async def run_schedule(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    schedules = services_of(request).schedules
    return json_response(await schedules.run_now(claims.tenant, _id(request)), status=202)


@operation(
    "A schedule's runs, newest first (items read, written, rejected, cursor, duration, error)",
    tag="schedules",
    response={
        **PAGE,
        "properties": {**PAGE["properties"], "items": {"type": "array", "items": RUN}},
    },
    query=_PAGING,
    schemas={"cursor": ID_CURSOR},
)
async def list_schedule_runs(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    runs = await services_of(request).schedules.runs(
        claims.tenant, _id(request), before=cursor, limit=limit
    )
    return json_response(page(runs, limit))
