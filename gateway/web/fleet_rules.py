"""/api/v1/geofences and /api/v1/maintenance-plans: a tenant's fleet rules, one table entry
(`RESOURCES`) per kind served by one set of handlers; and the services recorded on a vehicle,
which reset its plans (docs/fleet.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.fleet.geofences import DEFAULT_MARGIN_M
from gateway.fleet.geometry import MAX_POSITIONS, MAX_RADIUS_M
from gateway.fleet.rule_service import (
    MAX_DWELL_SECONDS,
    MAX_EVERY_DAYS,
    MAX_EVERY_KM,
    MAX_MARGIN_M,
    MAX_START_KM,
    MAX_TENANT_POSITIONS,
    MAX_VEHICLES,
    RuleService,
    public_rule,
)
from gateway.fleet.servicing import MAX_KM
from gateway.schemas.ids import DASHES, SPACES
from gateway.services import Services
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import ID_CURSOR, operation
from gateway.web.problems import json_response
from gateway.web.requests import page, page_params, read_object
from gateway.web.state import services_of

_TEXT = {"type": "string", "minLength": 1, "pattern": "\\S"}
# A plate as `check_plate` takes it (the separators ids drop anywhere: dots, slashes, dashes
# and spaces in any spelling; whitespace around it; any case): 3 letters, a digit, a letter or
# digit, 2 digits. The whitespace Python's strip() removes, spelled out (JSON Schema's \s is
# ECMA-262's, another set).
_SEPARATORS = "".join(f"\\u{ord(c):04x}" for c in DASHES + SPACES)
_IN = f"[-./ {_SEPARATORS}]*"
_AROUND = f"[-./ \\t\\n\\x0b\\x0c\\r\\x1c-\\x1f\\x85\\u2028\\u2029{_SEPARATORS}]*"
PLATE_PATTERN = (
    f"^{_AROUND}"
    + _IN.join(["[A-Za-z]"] * 3 + ["[0-9]", "[A-Za-z0-9]", "[0-9]", "[0-9]"])
    + f"{_AROUND}$"
)
_COMMON: dict[str, Any] = {
    "name": {**_TEXT, "maxLength": 100, "description": "unique in the tenant"},
    "description": {
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": 2000,
        "pattern": "\\S",
    },
    "vehicles": {
        "type": ["array", "null"],
        "minItems": 1,
        "maxItems": MAX_VEHICLES,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "pattern": PLATE_PATTERN,
        },
        "description": "plates (ABC1234 or Mercosul ABC1D23, any case, dashes and spaces"
        " allowed; stored as a vehicle's is, and matching its old/Mercosul twin); with `group`,"
        " either matches; neither (null or left out): every vehicle. An empty list is refused"
        " (it names no vehicle): to watch none, delete the rule",
    },
    "group": {
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": 100,
        "pattern": "\\S",
        "description": "a vehicle's `group` (or one of its `groups`)",
    },
}
_CIRCLE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["lat", "lon", "radius_m"],
    "properties": {
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "lon": {"type": "number", "minimum": -180, "maximum": 180},
        "radius_m": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_RADIUS_M},
    },
}
_POSITION: dict[str, Any] = {
    "type": "array",
    "minItems": 2,
    "maxItems": 3,
    "items": {"type": "number"},
    "description": "[lon, lat] or [lon, lat, altitude]: lon in [-180, 180], lat in [-90, 90] "
    "degrees (RFC 7946)",
}
_RINGS: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "array", "minItems": 4, "items": _POSITION},
}
_POLYGON: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "coordinates"],
    "description": "a GeoJSON Polygon (the exterior ring, then holes) or MultiPolygon (such "
    "polygons: one fence, inside when inside any of them); each ring closed (first position "
    "= last), at least 4 positions, not crossing itself or another ring, holes inside the "
    "exterior; no polygon crosses the antimeridian, and a MultiPolygon's polygons neither "
    "cross, touch nor overlap, but where the antimeridian cuts an area in two (RFC 7946 "
    f"§3.1.9); at most {MAX_POSITIONS} positions and 20 degrees across in all; a tenant's "
    f"polygon fences hold at most {MAX_TENANT_POSITIONS} positions together (409 past it)",
    "properties": {
        "type": {"enum": ["Polygon", "MultiPolygon"]},
        "coordinates": {"type": "array", "minItems": 1},
    },
    # (no `type` in the alternatives: `null` passes both, for a PATCH clearing the shape)
    "anyOf": [
        {"properties": {"type": {"const": "Polygon"}, "coordinates": _RINGS}},
        {
            "properties": {
                "type": {"const": "MultiPolygon"},
                "coordinates": {"type": "array", "minItems": 1, "items": _RINGS},
            }
        },
    ],
}
_FENCE_PROPERTIES: dict[str, Any] = {
    **_COMMON,
    "kind": {
        "enum": ["authorized", "restricted"],
        "description": "authorized: alert on leaving; restricted: alert on entering",
    },
    # null is no shape: a PATCH giving one shape clears the other (a polygon fence becomes
    # a circle with {"circle": {...}, "polygon": null}, as the UI's edit form sends it)
    "circle": {**_CIRCLE, "type": ["object", "null"]},
    "polygon": {**_POLYGON, "type": ["object", "null"]},
    "margin_m": {
        "type": ["number", "null"],
        "minimum": 0,
        "maximum": MAX_MARGIN_M,
        "description": f"hysteresis band, metres (default {DEFAULT_MARGIN_M:g}); leaving and "
        "entering need margin + the fix's accuracy beyond the border",
    },
    "dwell_seconds": {
        "type": ["number", "null"],
        "minimum": 0,
        "maximum": MAX_DWELL_SECONDS,
        "description": "how long a vehicle must stay on the other side (default 0)",
    },
}
# A shape given: present and not null.
_GIVEN: dict[str, Any] = {
    k: {"required": [k], "properties": {k: {"type": "object"}}} for k in ("circle", "polygon")
}
GEOFENCE_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "kind"],
    "oneOf": [_GIVEN["circle"], _GIVEN["polygon"]],
    "properties": _FENCE_PROPERTIES,
}
GEOFENCE_PATCH: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "not": {
        "required": ["circle", "polygon"],
        "properties": {k: {"type": "object"} for k in _GIVEN},
    },
    "description": "fields to change (null clears an optional one); a circle or a polygon "
    "replaces the shape",
    "properties": _FENCE_PROPERTIES,
}
_STORED: dict[str, Any] = {
    "id": {"type": "string"},
    "vehicles": {
        "type": ["array", "null"],
        "items": {"type": "string"},
        "description": "null: no plate list (the group's vehicles; neither: every vehicle); or"
        " the plates as stored (upper case, no dash; a rule stored before plates"
        " were checked may hold another spelling: it matches all the same)",
    },
    "created_at": {"type": "string"},
    "updated_at": {"type": "string"},
}
GEOFENCE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "kind", "vehicles", "margin_m", "dwell_seconds"],
    "properties": {**_FENCE_PROPERTIES, **_STORED},
}
_PLAN_PROPERTIES: dict[str, Any] = {
    **_COMMON,
    "every_km": {
        "type": ["number", "null"],
        "minimum": 1,
        "maximum": MAX_EVERY_KM,
        "description": "a service every N km of odometer, counted from start_km (or the last "
        "service); every_km, every_days or both",
    },
    "due_soon_km": {
        "type": ["number", "null"],
        "minimum": 0,
        "maximum": MAX_EVERY_KM,
        "description": "announce due_soon this many km before",
    },
    "every_days": {
        "type": ["number", "null"],
        "minimum": 1,
        "maximum": MAX_EVERY_DAYS,
        "description": "a service every N days, counted from the last service (or when the "
        "plan first saw the vehicle); with every_km, whichever comes first",
    },
    "due_soon_days": {
        "type": ["number", "null"],
        "minimum": 0,
        "maximum": MAX_EVERY_DAYS,
        "description": "announce due_soon this many days before",
    },
    "start_km": {
        "type": ["number", "null"],
        "minimum": 0,
        "maximum": MAX_START_KM,
        "description": "where the count starts (default 0)",
    },
}
PLAN_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    # A distance, a time interval or both (null is neither).
    "anyOf": [
        {"required": ["every_km"], "properties": {"every_km": {"type": "number"}}},
        {"required": ["every_days"], "properties": {"every_days": {"type": "number"}}},
    ],
    "properties": _PLAN_PROPERTIES,
}
PLAN_PATCH: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "fields to change (null clears an optional one)",
    "properties": _PLAN_PROPERTIES,
}
PLAN: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "start_km", "vehicles"],
    "properties": {**_PLAN_PROPERTIES, **_STORED},
}
_LIST: dict[str, Any] = {"type": "object", "properties": {"items": {"type": "array"}}}
_PAGE = [("limit", "page size, 1-200"), ("cursor", "next_cursor of the previous page")]


@dataclass(frozen=True)
class RuleResource:
    """One kind of rule as an admin resource: everything its five routes and their OpenAPI
    operations need. A new kind of rule is one more entry in `RESOURCES`."""

    path: str  # the collection; an item is `{path}/{ref}` (id or name)
    what: str  # "geofence"
    plural: str  # "geofences"
    creates: str  # the create operation's summary
    body: dict[str, Any]  # JSON Schemas: create, change, the stored rule
    patch: dict[str, Any]
    shape: dict[str, Any]
    service: Callable[[Services], RuleService]


RESOURCES = (
    RuleResource(
        path="/api/v1/geofences",
        what="geofence",
        plural="geofences",
        creates="Create a geofence (a circle or a GeoJSON Polygon or MultiPolygon)",
        body=GEOFENCE_BODY,
        patch=GEOFENCE_PATCH,
        shape=GEOFENCE,
        service=lambda services: services.geofences,
    ),
    RuleResource(
        path="/api/v1/maintenance-plans",
        what="maintenance plan",
        plural="maintenance plans",
        creates="Create a maintenance plan (every N km and/or days)",
        body=PLAN_BODY,
        patch=PLAN_PATCH,
        shape=PLAN,
        service=lambda services: services.maintenance_plans,
    ),
)


def rule_routes() -> list[web.RouteDef]:
    return [route for resource in RESOURCES for route in _routes(resource)]


def _routes(kind: RuleResource) -> list[web.RouteDef]:
    def rules(request: web.Request) -> RuleService:
        return kind.service(services_of(request))

    @operation(
        kind.creates, tag="fleet", request=kind.body, response=kind.shape, status=201, errors=(409,)
    )
    async def create(request: web.Request) -> web.Response:
        claims = await authenticate(request)
        doc = await rules(request).create(claims.tenant, await read_object(request))
        return json_response(public_rule(doc), status=201)

    @operation(
        f"List {kind.plural}",
        tag="fleet",
        response=_LIST,
        query=_PAGE,
        schemas={"cursor": ID_CURSOR},
    )
    async def listing(request: web.Request) -> web.Response:
        claims = await authenticate(request)
        limit, cursor = page_params(request)
        docs = await rules(request).list(claims.tenant, after=cursor, limit=limit)
        return json_response(page([public_rule(d) for d in docs], limit))

    @operation(f"Get a {kind.what} by id or name", tag="fleet", response=kind.shape)
    async def get(request: web.Request) -> web.Response:
        claims = await authenticate(request)
        return json_response(public_rule(await rules(request).get(claims.tenant, _ref(request))))

    @operation(
        f"Change a {kind.what}", tag="fleet", request=kind.patch, response=kind.shape, errors=(409,)
    )
    async def patch(request: web.Request) -> web.Response:
        claims = await authenticate(request)
        body = await read_object(request)
        doc = await rules(request).update(claims.tenant, _ref(request), body)
        return json_response(public_rule(doc))

    @operation(f"Delete a {kind.what}", tag="fleet", status=204)
    async def delete(request: web.Request) -> web.Response:
        claims = await authenticate(request)
        await rules(request).delete(claims.tenant, _ref(request))
        return web.Response(status=204)

    item = kind.path + "/{ref}"
    return [
        web.post(kind.path, create),
        web.get(kind.path, listing),
        web.get(item, get),
        web.patch(item, patch),
        web.delete(item, delete),
    ]


def _ref(request: web.Request) -> str:
    return request.match_info["ref"]


SERVICE_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "km": {
            "type": ["number", "null"],
            "minimum": 0,
            "maximum": MAX_KM,
            "description": "odometer at the service (default: as the plans last saw it)",
        },
        "at": {
            "type": ["string", "null"],
            "description": "RFC 3339 with an offset, from 2000 on and not in the future "
            "(default: now)",
        },
        "plan": {
            "type": ["string", "null"],
            "minLength": 1,
            "maxLength": 100,
            "pattern": "\\S",
            "description": "the plan reset, by id or name (default: every plan of the vehicle)",
        },
    },
}
SERVICE: dict[str, Any] = {
    "type": "object",
    "required": ["vehicle", "at", "source"],
    "properties": {
        "vehicle": {"type": "object"},
        "km": {"type": "number"},
        "at": {"type": "string"},
        "plan": {"type": "string"},
        "source": {"type": "string"},
    },
}


@operation(
    "Record a service done on a vehicle (resets its maintenance plans at the next fold)",
    tag="fleet",
    request=SERVICE_BODY,
    response=SERVICE,
    status=202,
    body_required=False,
)
async def record_service(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_object(request) if request.body_exists else {}
    recorded = await services_of(request).vehicle_services.record(
        claims.tenant,
        _ref(request),
        body,
        source=f"admin:{claims.subject}",
        authoritative=True,  # an admin's: the base as given (a correction too)
    )
    return json_response(recorded, status=202)
