"""/api/v1/actions (with invoke) and /api/v1/subscriptions."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.actions.definitions import public_action
from gateway.actions.subscriptions import public_subscription
from gateway.errors import BadRequest, FieldProblem, InvalidPayload
from gateway.mapping.compiler import HEADER_RE
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import (
    ID_CURSOR,
    IDEMPOTENCY_KEY_SCHEMA,
    TEXT_NAME,
    merge_patch,
    operation,
    rotated_secret,
    strict,
)
from gateway.web.partners import PAGE
from gateway.web.problems import json_response
from gateway.web.requests import page, page_params, read_object, unknown_members
from gateway.web.state import services_of

_STATUSES: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "maxItems": 50,
    "items": {
        "anyOf": [
            {"type": "integer", "minimum": 100, "maximum": 599},
            {"type": "string", "pattern": "^[1-5]xx$"},
        ]
    },
}
ANSWER_RULES: dict[str, Any] = {
    "type": ["array", "null"],
    "maxItems": 20,
    "description": "which partner answers are retried and which are final, before the "
    "defaults (5xx, 408, 425, 429 retried; other 4xx final): the first rule matching the "
    "answer's status, and its header and body when given, decides (docs/actions.md)",
    "items": {
        "type": "object",
        "required": ["status", "then"],
        "additionalProperties": False,
        "properties": {
            "status": _STATUSES,
            "then": {"enum": ["retry", "fail"]},
            "body": {
                "type": "string",
                "description": "JMESPath on the parsed answer (JSON, or an XML answer's tree): "
                "matches when it finds a value that is not null, false, empty text, [] or {}",
            },
            "header": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": HEADER_RE.pattern},
                    "value": {
                        "type": "string",
                        "maxLength": 200,
                        "description": "the header's value, blanks around it ignored; "
                        "without one, the header present is enough",
                    },
                },
            },
        },
    },
}
ACTION: dict[str, Any] = {
    "type": "object",
    "required": ["name", "partner_id", "method", "mode"],
    "properties": {
        "name": TEXT_NAME,
        "partner_id": {"type": "string"},
        "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
        "path": {"type": "string", "description": 'a template such as "/fines/{ait}"'},
        "mode": {"enum": ["proxy", "deliver"]},
        "request_mapping": {"type": ["string", "null"]},
        "response_mapping": {"type": ["string", "null"]},
        "success": {
            "type": ["array", "null"],
            "minItems": 1,
            "items": {
                "anyOf": [
                    {"type": "integer", "minimum": 100, "maximum": 599},
                    {"type": "string", "pattern": "^[1-5]xx$"},
                ]
            },
        },
        "retry_schedule": {"type": ["array", "null"], "items": {"type": "number"}},
        "ordered": {"type": "boolean"},
        "write_back": {"type": "boolean"},
        "read_only": {
            "type": "boolean",
            "description": "a POST that only reads (JSON-RPC): schedules may run it",
        },
        "error": {
            "type": ["string", "null"],
            "description": "JMESPath on a success answer: a non-empty value means the partner "
            "refused the request in a 2xx (OneSignal's errors, a SOAP <sucesso>false</sucesso>, "
            "JSON-RPC's error): a failure, not retried",
        },
        "answer_rules": ANSWER_RULES,
        "xml_body": {
            "type": ["object", "null"],
            "description": "send an XML (SOAP) body: a Jinja2 template autoescaped for XML, "
            "rendered on the mapping context plus body and secrets (docs/actions.md)",
            "required": ["template"],
            "additionalProperties": False,
            "properties": {
                "template": {"type": "string"},
                "soap": {"enum": ["1.1", "1.2", None]},
                "soap_action": {"type": ["string", "null"]},
                "sample": {"type": ["object", "null"]},
            },
        },
    },
}
_INVOKE_ENTITY: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string"},
        "id": {"type": "string", "minLength": 1},
        "key": {"type": "string", "minLength": 1},
    },
    "anyOf": [{"required": ["id"]}, {"required": ["key"]}],
}
INVOKE: dict[str, Any] = {
    "type": "object",
    "description": '{"entity": {"type", "id"|"key"}} or {"payload": {...}} (the mapping context)',
    "additionalProperties": False,
    "properties": {"entity": _INVOKE_ENTITY, "payload": {"type": "object"}},
    "oneOf": [
        {"required": ["entity"], "not": {"required": ["payload"]}},
        {"required": ["payload"], "not": {"required": ["entity"]}},
    ],
}
INVOKED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "integer"},
        "data": {},
        "written": {"type": "object"},
        "content_type": {"type": "string"},
        "encoding": {"type": "string", "enum": ["base64"]},
    },
}
SUBSCRIPTION: dict[str, Any] = {
    "type": "object",
    "required": ["action_id", "event_types"],
    "properties": {
        "action_id": {"type": "string"},
        "event_types": {
            "type": "array",
            "minItems": 1,
            "maxItems": 50,
            "items": {
                "type": "string",
                "maxLength": 100,
                "pattern": "^(\\*|[a-z0-9_]+(\\.[a-z0-9_]+)*(\\.\\*)?)$",
            },
        },
        "filter": {
            "type": "object",
            "properties": {
                "entity_type": {},
                "changed": {"type": "array"},
                "entity": {"type": "object"},
                "origin": {"type": "object"},
            },
        },
        "sample_seconds": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": 86400,
            "description": "vehicle.position only: at most one event per vehicle this often",
        },
    },
}
WITH_SECRET: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "secret": {"type": "string", "description": "shown once"},
    },
}
_CREATED_ACTION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        **ACTION["properties"],
        "secret": {
            "type": "string",
            "pattern": "^whsec_",
            "description": "the action's signing secret (Standard Webhooks), shown this once: "
            "its proxy calls and its schedules' requests are signed with it",
        },
    },
}
_LIST_QUERY = [("limit", "page size, 1-200"), ("cursor", "next_cursor of the previous page")]


_CHOICES = {"mode": ("proxy", "deliver"), "status": ("active", "disabled")}


def _filters(request: web.Request, names: tuple[str, ...]) -> dict[str, str]:
    filters = {k: v for k in names if (v := request.query.get(k))}
    for name, value in filters.items():
        if name in _CHOICES and value not in _CHOICES[name]:
            raise BadRequest(f"{name} must be one of {', '.join(_CHOICES[name])}")
    return filters


# -- actions ---------------------------------------------------------------------------------


@operation(
    "Create an action (its signing secret answered once)",
    tag="actions",
    request=strict(ACTION),
    response=_CREATED_ACTION,
    status=201,
)
async def create_action(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    actions = services_of(request).actions
    doc, secret = await actions.create_action_with_secret(claims.tenant, body)
    return json_response({**public_action(doc), "secret": secret}, status=201)


@operation(
    "Rotate the signing secret of an action's proxy calls and schedules: both sign for 24 h; "
    "the new one is shown once",
    tag="actions",
    response=rotated_secret("id"),
    errors=(409,),
)
async def rotate_action_secret(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    actions = services_of(request).actions
    rotated = await actions.rotate_action_secret(claims.tenant, request.match_info["id"])
    return json_response(rotated)


@operation(
    "List actions",
    tag="actions",
    response=PAGE,
    query=[*_LIST_QUERY, ("partner_id", "only this partner's"), ("mode", "proxy|deliver")],
    schemas={"mode": {"enum": ["proxy", "deliver"]}, "cursor": ID_CURSOR},
)
async def list_actions(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    docs = await services_of(request).actions.list_actions(
        claims.tenant, _filters(request, ("partner_id", "mode")), after=cursor, limit=limit
    )
    return json_response(page([public_action(d) for d in docs], limit))


@operation("Get an action", tag="actions", response=ACTION)
async def get_action(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).actions.get_action(claims.tenant, request.match_info["id"])
    return json_response(public_action(doc))


@operation(
    "Change an action",
    tag="actions",
    request=merge_patch(
        ACTION,
        "members to change (null clears an optional one)",
        nullable=("ordered", "write_back", "read_only"),
    ),
    response=ACTION,
    errors=(409,),
)
async def patch_action(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    doc = await services_of(request).actions.update_action(
        claims.tenant, request.match_info["id"], body
    )
    return json_response(public_action(doc))


@operation(
    "Delete an action (409 while subscriptions, schedules, channels or flows use it)",
    tag="actions",
    status=204,
    errors=(409,),
)
async def delete_action(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    await services_of(request).actions.delete_action(claims.tenant, request.match_info["id"])
    return web.Response(status=204)


@operation(
    "Invoke an action now (proxy): the partner's mapped answer",
    tag="actions",
    request=INVOKE,
    response=INVOKED,
    errors=(429, 502, 504),
    error_texts={
        503: "The partner is unavailable (`partner-unavailable`: its circuit is open or it is "
        "disabled), this process's outbound capacity is full (`unavailable`), a stored key "
        "does not open (`key-refused`), or the database is unavailable; see Retry-After "
        "(docs/actions.md)"
    },
    opens_secrets=True,
    headers=[
        (
            "Idempotency-Key",
            "1-255 printable ASCII characters naming the call: its request's `webhook-id` is "
            "`<action id>:<key>`, the same for every retry with the key (else a fresh id); the "
            "call itself is made again",
            IDEMPOTENCY_KEY_SCHEMA,
        )
    ],
)
async def invoke_action(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    entity, payload = _invoked(await read_object(request))
    result = await services_of(request).proxy.invoke(
        claims.tenant,
        request.match_info["id"],
        entity=entity,
        payload=payload,
        idempotency_key=request.headers.get("Idempotency-Key"),
    )
    answer: dict[str, Any] = {"status": result.status, "data": result.data}
    if result.written is not None:
        answer["written"] = result.written
    if result.content_type is not None:
        answer["content_type"] = result.content_type
    if result.encoding is not None:
        answer["encoding"] = result.encoding
    return json_response(answer)


def _invoked(body: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The entity or the payload an INVOKE body names; 422 naming every member it does not
    know (a misspelt option calls no partner) and a body with neither or both."""
    problems = unknown_members(body, INVOKE)
    entity, payload = body.get("entity"), body.get("payload")
    if isinstance(entity, dict):
        problems += unknown_members(entity, _INVOKE_ENTITY, "/entity")
    if (entity is None) == (payload is None) or not isinstance(entity or payload, dict):
        message = 'give either "entity": {"type", "id"|"key"} or "payload": {...}'
        problems.append(FieldProblem("", message, "oneOf"))
    if problems:
        raise InvalidPayload("the body does not fit this route", problems)
    return entity, payload


# -- subscriptions ---------------------------------------------------------------------------


@operation(
    "Subscribe an action to events; the signing secret is shown once",
    tag="subscriptions",
    request=strict(SUBSCRIPTION),
    response=WITH_SECRET,
    status=201,
)
async def create_subscription(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    doc, secret = await services_of(request).actions.create_subscription(claims.tenant, body)
    return json_response({**public_subscription(doc), "secret": secret}, status=201)


@operation(
    "List subscriptions",
    tag="subscriptions",
    response=PAGE,
    query=[*_LIST_QUERY, ("action_id", "only this action's"), ("status", "active|disabled")],
    schemas={"status": {"enum": ["active", "disabled"]}, "cursor": ID_CURSOR},
)
async def list_subscriptions(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    docs = await services_of(request).actions.list_subscriptions(
        claims.tenant, _filters(request, ("action_id", "status")), after=cursor, limit=limit
    )
    return json_response(page([public_subscription(d) for d in docs], limit))


@operation("Get a subscription", tag="subscriptions", response=SUBSCRIPTION)
async def get_subscription(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).actions.get_subscription(
        claims.tenant, request.match_info["id"]
    )
    return json_response(public_subscription(doc))


@operation(
    "Change a subscription (event_types, filter, status)",
    tag="subscriptions",
    request=merge_patch(
        SUBSCRIPTION,
        "members to change (a filter of null is none)",
        nullable=("filter",),
        without=("action_id",),
        more={"status": {"enum": ["active", "disabled"]}},
    ),
    response=SUBSCRIPTION,
    errors=(409,),
)
async def patch_subscription(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    doc = await services_of(request).actions.update_subscription(
        claims.tenant, request.match_info["id"], body
    )
    return json_response(public_subscription(doc))


@operation(
    "Rotate the signing secret: both are used for 24 h; the new one is shown once",
    tag="subscriptions",
    response=WITH_SECRET,
    errors=(409,),
)
async def rotate_subscription_secret(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc, secret = await services_of(request).actions.rotate_secret(
        claims.tenant, request.match_info["id"]
    )
    return json_response({**public_subscription(doc), "secret": secret})


@operation("Delete a subscription", tag="subscriptions", status=204)
async def delete_subscription(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    await services_of(request).actions.delete_subscription(claims.tenant, request.match_info["id"])
    return web.Response(status=204)
