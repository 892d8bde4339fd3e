"""/api/v1/entities/vehicle/{ref}/drivers: a vehicle's driver history, and assigning one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.assignments import SOURCES
from gateway.clock import from_rfc3339, query_time
from gateway.errors import BadRequest, FieldProblem, InvalidPayload
from gateway.formats.json_tree import is_text
from gateway.store.assignments import HISTORY_CURSOR
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import operation, text_cursor
from gateway.web.problems import json_response
from gateway.web.requests import page_params, read_object, unknown_members
from gateway.web.state import services_of

_ASSIGNMENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "vehicle": {"type": "object"},
        "driver": {
            "type": ["object", "null"],
            "properties": {"id": {}, "cpf": {}, "name": {}},
            "description": "null: nobody; without id: pending, a CPF a vehicle write named "
            "before the tenant had the driver (their record completes it)",
        },
        "start": {"type": "string", "format": "date-time"},
        "end": {"type": ["string", "null"], "format": "date-time"},
        "source": {"enum": list(SOURCES)},
        "ref": {"type": ["string", "null"]},
    },
}
_HISTORY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "at": {"type": "string", "format": "date-time"},
        "driver": {**_ASSIGNMENT, "type": ["object", "null"]},
        "items": {"type": "array", "items": _ASSIGNMENT},
        "next_cursor": {"type": ["string", "null"]},
    },
}
_ASSIGN: dict[str, Any] = {
    "type": "object",
    "required": ["driver"],
    "additionalProperties": False,
    "properties": {
        "driver": {
            "type": ["string", "null"],
            "pattern": r"\S",
            "description": "a driver id or CPF; null: nobody",
        },
        "start": {"type": "string", "format": "date-time", "description": "default: now"},
        "source": {"enum": list(SOURCES), "default": "admin"},
        "ref": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "what reported it (a checklist id, ...)",
        },
    },
}


def parse_time(value: Any, pointer: str) -> datetime:
    """An RFC 3339 time with its offset ("t" and "z" in lower case too, as RFC 3339 §5.6
    allows)."""
    try:
        parsed = from_rfc3339(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        message = f"{pointer.lstrip('/')} must be an RFC 3339 time with an offset, got {value!r}"
        raise InvalidPayload(message, [FieldProblem(pointer, message, "format")])
    return parsed


@operation(
    "A vehicle's drivers: who drives at `at` (default now) and the history, newest first",
    tag="drivers",
    response=_HISTORY,
    query=[
        ("at", "an RFC 3339 time: the driver then (default now)"),
        ("limit", "page size, 1-200"),
        ("cursor", "next_cursor of the previous page"),
    ],
    schemas={
        "at": {"type": "string", "format": "date-time"},
        "cursor": text_cursor(HISTORY_CURSOR),
    },
)
async def list_vehicle_drivers(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    ref = request.match_info["ref"]
    limit, cursor = page_params(request)
    service = services_of(request).notify.assignments
    raw_at = request.query.get("at")
    try:
        at = service.now() if raw_at is None else parse_time(query_time(raw_at), "/at")
    except InvalidPayload as exc:
        raise BadRequest(exc.detail) from None
    in_force = await service.driver_at(claims.tenant, ref, at)
    items = await service.history(claims.tenant, ref, before=cursor, limit=limit)
    return json_response(
        {
            "at": _in_utc(at),
            "driver": None if in_force is None else in_force.as_dict(),
            "items": [a.as_dict() for a in items],
            "next_cursor": items[-1].id if len(items) == limit else None,
        }
    )


@operation(
    "Assign a driver to a vehicle from `start` (the previous assignment ends there)",
    tag="drivers",
    request=_ASSIGN,
    response=_ASSIGNMENT,
    status=201,
    also=(200,),  # the driver was assigned already: nothing changed
)
async def assign_vehicle_driver(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    problems = unknown_members(body, _ASSIGN)
    if "driver" not in body:
        problems.append(FieldProblem("/driver", "driver is required (null: nobody)", "required"))
    driver = body.get("driver")
    if driver is not None and (not is_text(driver) or not driver.strip()):
        problems.append(FieldProblem("/driver", "driver is a driver id or CPF, or null", "type"))
    for name in ("source", "ref"):
        if name in body and not is_text(body[name]):
            problems.append(FieldProblem(f"/{name}", f"{name} must be a string", "type"))
    start = None
    try:
        start = parse_time(body["start"], "/start") if "start" in body else None
    except InvalidPayload as exc:
        problems += exc.problems
    if problems:
        raise InvalidPayload("invalid driver assignment", problems)
    result = await services_of(request).notify.assignments.assign(
        claims.tenant,
        request.match_info["ref"],
        driver,
        start=start,
        source=body.get("source", "admin"),
        ref=body.get("ref"),
        author=claims.subject,
    )
    answer = {**result.assignment.as_dict(), "changed": result.changed}
    if result.replaced is not None:
        answer["replaced"] = result.replaced.as_dict()
    return json_response(answer, status=201 if result.changed else 200)


def _in_utc(at: datetime) -> datetime:
    """`?at=` in UTC, as every other time of the answer, whatever offset it was written in;
    as written when UTC has no such time (9999-12-31T23:59:59-12:00 is in the year 10000)."""
    try:
        return at.astimezone(UTC)
    except OverflowError:
        return at
