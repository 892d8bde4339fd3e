"""Geofence and maintenance-plan pages: the fences drawn over the fleet's recent tracks
(inline SVG), create (a circle typed in, or a GeoJSON polygon pasted), edit, delete; plans
with the vehicles due or due soon; and a vehicle's track, fences and plans on its page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from gateway import paging
from gateway.errors import InvalidPayload
from gateway.fleet.overview import vehicle_groups
from gateway.store import Doc
from gateway.ui.forms import Form, json_field, number_field, read_values
from gateway.ui.maps import SheetMap, TrackInput, draw
from gateway.ui.rendering import redirect, render
from gateway.ui.state import tenant_of
from gateway.ui.templating import tojson_pretty
from gateway.web.state import services_of

FENCE_FIELDS: Final = (
    "name",
    "kind",
    "description",
    "circle.lat",
    "circle.lon",
    "circle.radius_m",
    "polygon",
    "vehicles",
    "group",
    "margin_m",
    "dwell_seconds",
)
PLAN_FIELDS: Final = (
    "name",
    "description",
    "every_km",
    "due_soon_km",
    "every_days",
    "due_soon_days",
    "start_km",
    "vehicles",
    "group",
)
# How many vehicles a plan's page looks at for its due list.
PLAN_VEHICLES: Final = 200


def _ref(request: web.Request) -> str:
    return request.match_info["ref"]


def _plates(values: Mapping[str, Any]) -> list[str]:
    raw = str(values.get("vehicles") or "").replace("\n", ",")
    return [p.strip() for p in raw.split(",") if p.strip()]


def fence_body(values: Mapping[str, Any]) -> dict[str, Any]:
    """A geofence form as the admin API's body: a pasted polygon wins over the circle's
    fields; empty optional fields are their defaults (or cleared on an edit)."""
    body: dict[str, Any] = {
        "name": values.get("name") or "",
        "kind": values.get("kind") or "",
        "description": values.get("description") or None,
        "vehicles": _plates(values),
        "group": values.get("group") or None,
    }
    if str(values.get("polygon") or "").strip():
        body["polygon"] = json_field(values, "polygon")
    elif any(values.get(f"circle.{k}") for k in ("lat", "lon", "radius_m")):
        body["circle"] = {
            k: number_field(values, f"circle.{k}", integer=False)
            for k in ("lat", "lon", "radius_m")
        }
    for name in ("margin_m", "dwell_seconds"):
        if (value := number_field(values, name, integer=False)) is not None:
            body[name] = value
    return body


def fence_values(doc: Mapping[str, Any]) -> dict[str, Any]:
    circle = doc.get("circle") or {}
    return {
        "name": doc["name"],
        "kind": doc["kind"],
        "description": doc.get("description") or "",
        "circle.lat": _text(circle.get("lat")),
        "circle.lon": _text(circle.get("lon")),
        "circle.radius_m": _text(circle.get("radius_m")),
        "polygon": tojson_pretty(doc["polygon"]) if doc.get("polygon") else "",
        "vehicles": ", ".join(doc.get("vehicles") or ()),
        "group": doc.get("group") or "",
        "margin_m": _text(doc.get("margin_m")),
        "dwell_seconds": _text(doc.get("dwell_seconds")),
    }


def plan_body(values: Mapping[str, Any], *, editing: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": values.get("name") or "",
        "description": values.get("description") or None,
        "vehicles": _plates(values),
        "group": values.get("group") or None,
    }
    for name in ("every_km", "due_soon_km", "every_days", "due_soon_days", "start_km"):
        value = number_field(values, name, integer=False)
        if value is not None or editing:  # an emptied field is cleared on an edit
            body[name] = value
    if editing and body.get("start_km") is None:
        body["start_km"] = 0
    return body


def plan_values(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": doc["name"],
        "description": doc.get("description") or "",
        **{
            k: _text(doc.get(k))
            for k in ("every_km", "due_soon_km", "every_days", "due_soon_days", "start_km")
        },
        "vehicles": ", ".join(doc.get("vehicles") or ()),
        "group": doc.get("group") or "",
    }


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _public(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": str(doc["_id"]), **{k: v for k, v in doc.items() if k not in ("_id", "tenant")}}


# --- geofences ---------------------------------------------------------------------------


async def list_geofences(request: web.Request) -> web.Response:
    tenant, services = tenant_of(request), services_of(request)
    limit, cursor = paging.page_params(request.query)
    docs = await services.geofences.list(tenant, after=cursor, limit=limit)
    fences = [_public(d) for d in docs]
    vehicles = await services.entities.find(tenant, "vehicle", {}, after=None, limit=200)
    tracks = await services.fleet_overview.recent_tracks(tenant, vehicles)
    sheet = draw([TrackInput(plate, fixes) for plate, fixes in tracks], fences)
    context = {
        "items": fences,
        "map": sheet,
        "next_cursor": fences[-1]["id"] if len(fences) == limit else None,
    }
    return render(request, "fleet/geofences.html", context)


async def new_geofence(request: web.Request) -> web.Response:
    defaults = {"kind": "authorized", "margin_m": "25", "dwell_seconds": "0"}
    return _fence_form(request, Form(defaults))


async def create_geofence(request: web.Request) -> web.Response:
    values = read_values(await request.post())
    try:
        doc = await services_of(request).geofences.create(tenant_of(request), fence_body(values))
    except InvalidPayload as exc:
        return _fence_form(request, Form(values).refuse(exc, FENCE_FIELDS), status=422)
    return redirect(f"/admin/geofences/{doc['_id']}", flash="fleet.fence_created")


async def geofence_page(request: web.Request) -> web.Response:
    tenant, services = tenant_of(request), services_of(request)
    fence = _public(await services.geofences.get(tenant, _ref(request)))
    vehicles = await services.entities.find(tenant, "vehicle", {}, after=None, limit=200)
    applying = [v for v in vehicles if _applies(fence, v["data"])]
    tracks = await services.fleet_overview.recent_tracks(tenant, applying)
    sheet = draw([TrackInput(plate, fixes) for plate, fixes in tracks], [fence])
    context = {"fence": fence, "map": sheet, "form": Form(fence_values(fence))}
    return render(request, "fleet/geofence.html", context)


async def update_geofence(request: web.Request) -> web.Response:
    tenant, services = tenant_of(request), services_of(request)
    current = _public(await services.geofences.get(tenant, _ref(request)))
    values = read_values(await request.post())
    body = fence_body(values)
    if "circle" not in body and "polygon" not in body:  # the shape is required: say where
        body["circle"] = None
    try:
        await services.geofences.update(tenant, current["id"], body)
    except InvalidPayload as exc:
        form = Form(values).refuse(exc, FENCE_FIELDS)
        context = {"fence": current, "map": draw([], [current]), "form": form}
        return render(request, "fleet/geofence.html", context, status=422)
    return redirect(f"/admin/geofences/{current['id']}", flash="fleet.fence_saved")


async def delete_geofence(request: web.Request) -> web.Response:
    await services_of(request).geofences.delete(tenant_of(request), _ref(request))
    return redirect("/admin/geofences", flash="fleet.fence_deleted")


def _fence_form(request: web.Request, form: Form, *, status: int = 200) -> web.Response:
    return render(request, "fleet/geofence_new.html", {"form": form}, status=status)


def _applies(rule: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """The rule's own reach (no vehicles and no group: every vehicle)."""
    plates, group = rule.get("vehicles") or [], rule.get("group")
    if not plates and group is None:
        return True
    return data.get("plate") in plates or (group is not None and group in vehicle_groups(data))


# --- maintenance plans -------------------------------------------------------------------


async def list_plans(request: web.Request) -> web.Response:
    tenant, services = tenant_of(request), services_of(request)
    limit, cursor = paging.page_params(request.query)
    docs = await services.maintenance_plans.list(tenant, after=cursor, limit=limit)
    plans = [_public(d) for d in docs]
    standing = await _standing(request, plans)
    context = {
        "items": plans,
        "standing": standing,
        "next_cursor": plans[-1]["id"] if len(plans) == limit else None,
    }
    return render(request, "fleet/plans.html", context)


async def new_plan(request: web.Request) -> web.Response:
    return _plan_form(request, Form({"start_km": "0"}))


async def create_plan(request: web.Request) -> web.Response:
    values = read_values(await request.post())
    body = plan_body(values, editing=False)
    try:
        doc = await services_of(request).maintenance_plans.create(tenant_of(request), body)
    except InvalidPayload as exc:
        return _plan_form(request, Form(values).refuse(exc, PLAN_FIELDS), status=422)
    return redirect(f"/admin/maintenance-plans/{doc['_id']}", flash="fleet.plan_created")


async def plan_page(request: web.Request) -> web.Response:
    tenant, services = tenant_of(request), services_of(request)
    plan = _public(await services.maintenance_plans.get(tenant, _ref(request)))
    standing = await _standing(request, [plan])
    context = {"plan": plan, "standing": standing, "form": Form(plan_values(plan))}
    return render(request, "fleet/plan.html", context)


async def update_plan(request: web.Request) -> web.Response:
    tenant, services = tenant_of(request), services_of(request)
    current = _public(await services.maintenance_plans.get(tenant, _ref(request)))
    values = read_values(await request.post())
    try:
        await services.maintenance_plans.update(
            tenant, current["id"], plan_body(values, editing=True)
        )
    except InvalidPayload as exc:
        form = Form(values).refuse(exc, PLAN_FIELDS)
        context = {"plan": current, "standing": {}, "form": form}
        return render(request, "fleet/plan.html", context, status=422)
    return redirect(f"/admin/maintenance-plans/{current['id']}", flash="fleet.plan_saved")


async def delete_plan(request: web.Request) -> web.Response:
    await services_of(request).maintenance_plans.delete(tenant_of(request), _ref(request))
    return redirect("/admin/maintenance-plans", flash="fleet.plan_deleted")


def _plan_form(request: web.Request, form: Form, *, status: int = 200) -> web.Response:
    return render(request, "fleet/plan_new.html", {"form": form}, status=status)


async def _standing(
    request: web.Request, plans: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """plan id → the vehicles due or due soon on it (plate, condition, odometer, next km)."""
    tenant, services = tenant_of(request), services_of(request)
    ids = {p["id"] for p in plans}
    standing: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    vehicles = await services.entities.find(tenant, "vehicle", {}, after=None, limit=PLAN_VEHICLES)
    outlooks = await services.fleet_overview.plan_outlooks(tenant, vehicles)
    for vehicle, odometer, views in outlooks:
        for plan in views:
            if plan.id in ids and plan.outlook.condition != "ok":
                standing[plan.id].append(
                    {
                        "plate": vehicle["data"].get("plate"),
                        "condition": plan.outlook.condition,
                        "odometer_km": odometer,
                        "next_km": plan.outlook.next_km,
                    }
                )
    return standing


# --- a vehicle's page --------------------------------------------------------------------


async def vehicle_fleet(request: web.Request, vehicle: Doc) -> dict[str, Any]:
    """What a vehicle's page adds: its recent track and fences drawn, which fences it is
    inside, and its plans' outlook."""
    view = await services_of(request).fleet_overview.vehicle(tenant_of(request), vehicle)
    plate = str(vehicle["data"].get("plate") or "")
    fences = [_public(d) for d in view.fences]
    sheet: SheetMap | None = draw([TrackInput(plate, view.fixes)] if view.fixes else [], fences)
    return {
        "map": sheet,
        "fences": fences,
        "inside": view.inside,
        "plans": view.plans,
        "fixes": view.fixes[-10:][::-1],
    }
