"""/api/v1/entities/vehicle/{ref}/positions: a vehicle's track (gateway/fleet/tracks.py)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway.web.admin_auth import authenticate
from gateway.web.openapi import operation
from gateway.web.problems import json_response
from gateway.web.state import services_of

_NUMBER: Final = {"type": "number"}
FIX_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "time", "lat", "lon", "received_at", "source", "rejected"],
    "properties": {
        "id": {"type": "string"},
        "time": {"type": "string", "format": "date-time", "description": "device time (UTC)"},
        # Off the globe as the device sent it: such a fix is kept, `rejected:
        # invalid_coordinates` (SPEC §6).
        "lat": {"type": "number", "description": "outside [-90, 90]: `invalid_coordinates`"},
        "lon": {"type": "number", "description": "outside [-180, 180]: `invalid_coordinates`"},
        "speed_kmh": _NUMBER,
        "heading": _NUMBER,
        "accuracy_m": _NUMBER,
        "odometer_km": _NUMBER,
        "ignition": {"type": "boolean"},
        "valid": {
            "type": "boolean",
            "description": "false: the device had no position fix (refused `no_fix`)",
        },
        "attributes": {"type": "object"},
        "received_at": {"type": "string", "format": "date-time"},
        "source": {"type": ["string", "null"], "description": "the trigger or schedule id"},
        "device": {
            "type": "string",
            "description": "the tracker id of the device that sent it, when the fix names one",
        },
        "rejected": {
            "type": ["string", "null"],
            "description": "the quality gate that refused this fix (null: accepted or not "
            "folded yet); a rejected fix never moves the last position or the odometer",
        },
    },
}
VEHICLE_REF_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "plate"],
    "properties": {"id": {"type": "string"}, "plate": {"type": ["string", "null"]}},
}
_TRACK: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["vehicle", "items", "next_cursor"],
    "properties": {
        "vehicle": VEHICLE_REF_SCHEMA,
        "items": {"type": "array", "items": FIX_SCHEMA},
        "next_cursor": {"type": ["string", "null"]},
    },
}


# A bound, or "" for none (as a form with the field left blank sends it).
_TIME_OR_EMPTY: dict[str, Any] = {
    "type": "string",
    "anyOf": [{"format": "date-time"}, {"maxLength": 0}],
}


@operation(
    "A vehicle's track: its fixes in device-time order, from <= time < to, in cursor pages "
    "(rejected fixes included, flagged with their reason)",
    tag="entities",
    response=_TRACK,
    query=[
        ("from", "RFC 3339 time with an offset: fixes at or after it (empty: no bound)"),
        ("to", "RFC 3339 time with an offset: fixes before it (empty: no bound)"),
        ("limit", "page size, 1-200"),
        ("cursor", "next_cursor of the previous page"),
    ],
    schemas={
        "from": _TIME_OR_EMPTY,
        "to": _TIME_OR_EMPTY,
        "cursor": {"type": "string", "pattern": "^([0-9]{1,15})?$"},  # "": the first page
    },
)
async def list_vehicle_positions(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    track = await services_of(request).tracks.page(
        claims.tenant, request.match_info["ref"], request.query
    )
    return json_response(track)
