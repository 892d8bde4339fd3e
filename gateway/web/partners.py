"""/api/v1/partners: partner endpoints. Credentials are write-only."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.actions.partners import (
    DISABLE_AFTER_HOURS,
    MAX_CONCURRENCY,
    MAX_TIMEOUT_SECONDS,
    public_partner,
)
from gateway.outbound.breaker import SLOWEST_RATE
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import ID_CURSOR, TEXT_NAME, merge_patch, operation, strict
from gateway.web.problems import json_response
from gateway.web.requests import page, page_params, read_object
from gateway.web.state import services_of

_AUTH: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "description": "bearer {token} | header {name, value} | basic {username, password} | "
    "oauth2_client_credentials {token_url, client_id, client_secret, scope?, "
    "client_auth?, audience?, extra_params?} | query {name, value} | none | "
    "google_service_account {service_account: the key file, scope?} | "
    "geotab {url, database, username, password} | hmac {secret, header, algorithm?, "
    "encoding?, prefix?, timestamp_header?, signed?}. Write-only.",
    "properties": {
        "type": {
            "enum": [
                "bearer",
                "header",
                "basic",
                "oauth2_client_credentials",
                "query",
                "none",
                "google_service_account",
                "geotab",
                "hmac",
            ]
        }
    },
}
PARTNER_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["name", "base_url", "auth"],
    "properties": {
        "name": TEXT_NAME,
        "base_url": {"type": "string", "format": "uri"},
        "auth": _AUTH,
        "timeout_seconds": {
            "type": "number",
            "minimum": 0.1,
            "maximum": MAX_TIMEOUT_SECONDS,
            "default": 10,
        },
        "max_concurrency": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_CONCURRENCY,
            "default": 10,
        },
        "rate_limit": {
            "type": ["object", "null"],
            "required": ["per_second"],
            "additionalProperties": False,
            "properties": {
                "per_second": {"type": "number", "minimum": SLOWEST_RATE, "maximum": 100_000},
                "burst": {"type": "number", "minimum": 1, "maximum": 100_000},
            },
        },
        "disable_after_hours": {
            "type": ["number", "null"],
            "minimum": DISABLE_AFTER_HOURS[0],
            "maximum": DISABLE_AFTER_HOURS[1],
            "default": 72,
            "description": "null: never disabled",
        },
        "secrets": {
            "type": ["object", "null"],
            "maxProperties": 50,
            # gateway/actions/partners.py `_SECRET_NAME`
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
            "additionalProperties": {"type": "string", "minLength": 1},
            "description": "named values for mappings' {secret: name}; write-only",
        },
    },
}
_LOST = "the date `gateway reseal --forget-unreadable` forgot it (configured false): save it again"
PARTNER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "base_url": {"type": "string"},
        "auth": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "configured": {"type": "boolean"},
                "lost": {"type": "string", "description": _LOST},
            },
        },
        "secrets": {"type": "array", "items": {"type": "string"}},
        "secrets_lost": {"type": "string", "description": _LOST},
        "status": {"enum": ["active", "disabled"]},
    },
}
PARTNER_PATCH = merge_patch(
    PARTNER_BODY,
    "members to change: auth and secrets replaced whole (a new origin in base_url needs "
    "auth again); status active re-enables a disabled partner",
    more={"status": {"enum": ["active", "disabled"]}},
)
PAGE: dict[str, Any] = {
    "type": "object",
    "properties": {"items": {"type": "array"}, "next_cursor": {"type": ["string", "null"]}},
}


@operation(
    "Register a partner endpoint",
    tag="partners",
    request=strict(PARTNER_BODY),
    response=PARTNER,
    status=201,
)
async def create_partner(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    doc = await services_of(request).actions.create_partner(claims.tenant, body)
    return json_response(public_partner(doc), status=201)


@operation(
    "List partner endpoints",
    tag="partners",
    response=PAGE,
    query=[("limit", "page size, 1-200"), ("cursor", "next_cursor of the previous page")],
    schemas={"cursor": ID_CURSOR},
)
async def list_partners(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    docs = await services_of(request).actions.list_partners(
        claims.tenant, after=cursor, limit=limit
    )
    return json_response(page([public_partner(d) for d in docs], limit))


@operation("Get a partner endpoint", tag="partners", response=PARTNER)
async def get_partner(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).actions.get_partner(claims.tenant, request.match_info["id"])
    return json_response(public_partner(doc))


@operation(
    "Change a partner endpoint (auth and secrets are replaced whole; status "
    "active re-enables a disabled partner)",
    tag="partners",
    request=PARTNER_PATCH,
    response=PARTNER,
    errors=(409,),
)
async def patch_partner(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    doc = await services_of(request).actions.update_partner(
        claims.tenant, request.match_info["id"], body
    )
    return json_response(public_partner(doc))


@operation(
    "Delete a partner endpoint (409 while actions or push channels use it)",
    tag="partners",
    status=204,
    errors=(409,),
)
async def delete_partner(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    await services_of(request).actions.delete_partner(claims.tenant, request.match_info["id"])
    return web.Response(status=204)
