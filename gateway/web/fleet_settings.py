"""/api/v1/fleet/settings: a tenant's quality gates, odometer rules and position retention."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.fleet.odometer import SOURCES
from gateway.fleet.settings import (
    MAX_RETENTION_DAYS,
    ODOMETER_LIMITS,
    QUALITY_LIMITS,
    FleetSettings,
)
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import operation
from gateway.web.problems import json_response
from gateway.web.requests import read_object
from gateway.web.state import services_of


def _numbers(limits: dict[str, tuple[float, float, bool]]) -> dict[str, Any]:
    return {
        name: {"type": "integer" if integer else "number", "minimum": low, "maximum": high}
        for name, (low, high, integer) in limits.items()
    }


_PRECEDENCE = {
    "type": "array",
    "items": {"enum": list(SOURCES)},
    "uniqueItems": True,
    "description": "sources that re-baseline the odometer, the first winning",
}
SETTINGS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "quality": {
            "type": "object",
            "additionalProperties": False,
            "properties": _numbers(QUALITY_LIMITS),
        },
        "odometer": {
            "type": "object",
            "additionalProperties": False,
            "properties": {**_numbers(ODOMETER_LIMITS), "precedence": _PRECEDENCE},
        },
        "retention_days": {"type": "integer", "minimum": 1, "maximum": MAX_RETENTION_DAYS},
    },
}
_ANSWER = {**SETTINGS, "required": ["quality", "odometer", "retention_days"]}


@operation("The tenant's fleet settings (defaults until set)", tag="fleet", response=_ANSWER)
async def get_fleet_settings(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    settings = await services_of(request).fleet_settings.get(claims.tenant)
    return json_response(_public(settings))


@operation(
    "Replace the tenant's fleet settings (an omitted member takes its default)",
    tag="fleet",
    request=SETTINGS,
    response=_ANSWER,
)
async def put_fleet_settings(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request)
    settings = await services_of(request).fleet_settings.put(claims.tenant, body)
    return json_response(_public(settings))


def _public(settings: FleetSettings) -> dict[str, Any]:
    return settings.to_doc()
