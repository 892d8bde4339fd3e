"""/api/v1/channels (e-mail, push, SMS), a channel's test send, and
/api/v1/notification-settings (cooldown, quiet hours)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.notify.channels import public_channel
from gateway.notify.testing import check_test_body, send_test
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import FILE_NAME, ID_CURSOR, merge_patch, operation, strict
from gateway.web.problems import json_response
from gateway.web.requests import page, page_params, read_object
from gateway.web.state import services_of

_CHANNEL_COMMON: dict[str, Any] = {
    "name": FILE_NAME,
    "description": {"type": "string", "minLength": 1, "maxLength": 2000},
}
_SMTP: dict[str, Any] = {
    "type": "object",
    "required": ["host"],
    "additionalProperties": False,
    "properties": {
        "host": {"type": "string", "minLength": 1, "maxLength": 253},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "security": {"enum": ["none", "starttls", "tls"]},
        "username": {"type": "string", "minLength": 1, "maxLength": 320},
        "password": {"type": "string", "minLength": 1, "writeOnly": True},
        "timeout_seconds": {"type": "number", "minimum": 1, "maximum": 60},
        "data_timeout_seconds": {
            "type": "number",
            "minimum": 1,
            "maximum": 600,
            "description": "the relay's time to answer the message's end (default 600)",
        },
        "ca_certificate": {"type": "string", "description": "PEM"},
        "helo": {
            "type": "string",
            "maxLength": 253,
            "description": "the EHLO name: a fully-qualified domain name or an address literal",
        },
        "cleartext_auth": {
            "type": "boolean",
            "description": "with security none, allow username/password without TLS",
        },
    },
}
# Each type's members (gateway/notify/channels.py `_BY_TYPE`): one of them, by `type`.
_BY_TYPE: dict[str, tuple[list[str], dict[str, Any]]] = {
    "email": (
        ["smtp", "from"],
        {"smtp": _SMTP, "from": {"type": "string"}, "reply_to": {"type": "string"}},
    ),
    "push": (
        ["partner_id", "project_id"],
        {
            "partner_id": {"type": "string", "description": "auth google_service_account"},
            "project_id": {"type": "string"},
            "priority": {"enum": ["high", "normal"]},
        },
    ),
    "sms": (
        ["action_id", "from"],
        {
            "action_id": {"type": "string", "minLength": 1, "maxLength": 64},
            # gateway/notify/channels.py `_SENDER`: a number, or a sender id of 1-20
            "from": {"type": "string", "pattern": "^(\\+?[0-9]{3,15}|[A-Za-z0-9 ._-]{1,20})$"},
        },
    ),
}
CHANNEL_BODY: dict[str, Any] = {
    "type": "object",
    "description": "A channel of one type: email (smtp, from, reply_to?), push (partner_id, "
    "project_id, priority?) or sms (action_id, from); another type's member is refused.",
    "oneOf": [
        strict(
            {
                "title": kind,
                "required": ["name", "type", *required],
                "properties": {**_CHANNEL_COMMON, "type": {"const": kind}, **members},
            }
        )
        for kind, (required, members) in _BY_TYPE.items()
    ],
}
CHANNEL_PATCH: dict[str, Any] = {
    "type": "object",
    "description": "Members to change, of the channel's own type (it stays: another type's "
    "member is refused); smtp is replaced whole; null clears description or reply_to.",
    "anyOf": [
        merge_patch(
            {"properties": {**_CHANNEL_COMMON, "type": {"const": kind}, **members}},
            f"a {kind} channel's",
            nullable=("description", "reply_to"),
        )
        for kind, (_, members) in _BY_TYPE.items()
    ],
}
# A channel as answered: the SMTP password is never shown, only whether one is kept
# (gateway/notify/channels.py `public_channel`).
_SMTP_ANSWER: dict[str, Any] = {
    **_SMTP,
    "properties": {
        **_SMTP["properties"],
        "password": {
            "type": "object",
            "description": "whether a password is kept (it is never shown); `lost`: the date "
            "`gateway reseal --forget-unreadable` forgot it (configured false: save it again)",
            "required": ["configured"],
            "additionalProperties": False,
            "properties": {"configured": {"type": "boolean"}, "lost": {"type": "string"}},
        },
    },
}
CHANNEL: dict[str, Any] = {
    "type": "object",
    "properties": {
        **_CHANNEL_COMMON,
        "type": {"enum": list(_BY_TYPE)},
        **{k: v for _, members in _BY_TYPE.values() for k, v in members.items()},
        "smtp": _SMTP_ANSWER,
        "from": {"type": "string", "description": "an address (email), a sender (sms)"},
        "id": {"type": "string"},
    },
}
_TEST: dict[str, Any] = {
    "type": "object",
    "required": ["to"],
    "additionalProperties": False,
    "properties": {
        "to": {
            "type": "string",
            "minLength": 1,
            "description": "an address, a phone number or a device token",
        },
        "template": {
            "type": ["string", "null"],
            "minLength": 1,
            "description": "a template to render (default, or null: a test)",
        },
        "context": {"type": ["object", "null"]},
        "locale": {"type": ["string", "null"], "minLength": 1},
    },
}
SETTINGS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "cooldown_seconds": {"type": "integer", "minimum": 0, "default": 3600},
        "quiet_hours": {
            "type": ["object", "null"],
            "required": ["start", "end"],
            "additionalProperties": False,
            "properties": {
                "start": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
                "end": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
                "timezone": {"type": "string", "default": "America/Sao_Paulo"},
                "during": {"enum": ["delay", "suppress"]},
                "channels": {"type": "array", "items": {"enum": ["email", "push", "sms"]}},
            },
        },
    },
}


def _ref(request: web.Request) -> str:
    return request.match_info["ref"]


@operation(
    "Create a notification channel",
    tag="channels",
    request=CHANNEL_BODY,
    response=CHANNEL,
    status=201,
    errors=(409,),
)
async def create_channel(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).notify.channels.create(
        claims.tenant, await read_object(request)
    )
    return json_response(public_channel(doc), status=201)


@operation(
    "List notification channels",
    tag="channels",
    response={"type": "object", "properties": {"items": {"type": "array"}}},
    query=[("limit", "page size, 1-200"), ("cursor", "next_cursor of the previous page")],
    schemas={"cursor": ID_CURSOR},
)
async def list_channels(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    docs = await services_of(request).notify.channels.list(claims.tenant, after=cursor, limit=limit)
    return json_response(page([public_channel(d) for d in docs], limit))


@operation("Get a channel by id or name", tag="channels", response=CHANNEL)
async def get_channel(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).notify.channels.get(claims.tenant, _ref(request))
    return json_response(public_channel(doc))


@operation(
    "Change a channel (smtp is replaced whole; the type stays)",
    tag="channels",
    request=CHANNEL_PATCH,
    response=CHANNEL,
    errors=(409,),
)
async def patch_channel(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    doc = await services_of(request).notify.channels.update(claims.tenant, _ref(request), body)
    return json_response(public_channel(doc))


@operation("Delete a channel (409 while a flow uses it)", tag="channels", status=204, errors=(409,))
async def delete_channel(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    await services_of(request).notify.channels.delete(claims.tenant, _ref(request))
    return web.Response(status=204)


@operation(
    "Send a test message through a channel now (a template, or a built-in text); not sent "
    "while the partner's guard holds sends back (503, 429 for its rate limit, Retry-After)",
    tag="channels",
    request=_TEST,
    response={"type": "object", "properties": {"result": {"enum": ["success", "retry", "fail"]}}},
    errors=(429, 503),
    opens_secrets=True,
)
async def test_channel(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    check_test_body(body)
    outcome = await send_test(
        services_of(request).notify,
        claims.tenant,
        _ref(request),
        to=body["to"],
        template=body.get("template"),
        context=body.get("context"),
        locale=body.get("locale"),
    )
    return json_response(outcome.as_dict())


@operation("Get the tenant's notification settings", tag="channels", response=SETTINGS)
async def get_notification_settings(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    settings = await services_of(request).notify.settings.get(claims.tenant)
    return json_response(settings.as_dict())


@operation(
    "Set the tenant's notification settings (cooldown, quiet hours)",
    tag="channels",
    request=SETTINGS,
    response=SETTINGS,
)
async def put_notification_settings(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    settings = await services_of(request).notify.settings.put(claims.tenant, body, claims.subject)
    return json_response(settings.as_dict())
