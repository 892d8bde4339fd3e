"""Geofence and maintenance-plan pages, one table entry (`PAGES`) per kind served by one set
of views (list, new, create, show, edit, delete): the fences drawn over the fleet's recent
tracks (inline SVG), created from a circle typed in or a GeoJSON polygon pasted; plans with the
vehicles due or due soon; and a vehicle's track, fences and plans on its page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway import paging
from gateway.fleet.geofences import reaches
from gateway.fleet.overview import TRACKED_VEHICLES, vehicle_groups
from gateway.fleet.rule_service import RuleService, public_rule
from gateway.formats import at_path
from gateway.schemas.ids import plate_match_key
from gateway.services import Services
from gateway.store import Doc
from gateway.ui.forms import (
    FORM_ERRORS,
    Form,
    changes,
    editing,
    json_field,
    number_field,
    number_text,
    read_values,
    stale_edit,
)
from gateway.ui.maps import SheetMap, TrackInput, draw
from gateway.ui.rendering import redirect, render
from gateway.ui.state import PREFIX, form_lang, form_of, tenant_of
from gateway.ui.templating import tojson_pretty
from gateway.web.state import services_of

# --- the pages every kind of rule has ---------------------------------------------------


@dataclass(frozen=True)
class RulePages:
    """One kind of rule in the admin UI: everything its six routes need. A new kind of rule
    is one more entry in `PAGES` (and its three templates)."""

    path: str  # under /admin: the list, `{path}/new`, `{path}/{ref}`
    # The templates fleet/{name}s.html, {name}.html and {name}_new.html, the rule's key in
    # their context, and the messages fleet.{name}_created|_saved|_deleted.
    name: str
    # The form's fields, named after the rule's (`circle.lat` is circle's lat): a rule's form
    # shows them (`_form_values`), and the API's problems are placed next to them.
    fields: tuple[str, ...]
    defaults: Mapping[str, str]  # a new rule's form
    # form → API body (editing?, the page's language)
    body: Callable[[Mapping[str, Any], bool, str], dict[str, Any]]
    listing: Callable[[web.Request, list[dict[str, Any]]], Awaitable[dict[str, Any]]]
    showing: Callable[[web.Request, dict[str, Any]], Awaitable[dict[str, Any]]]
    service: Callable[[Services], RuleService]


def rule_routes() -> list[web.RouteDef]:
    return [route for kind in PAGES for route in _routes(kind)]


def _routes(kind: RulePages) -> list[web.RouteDef]:
    base = PREFIX + kind.path

    def rules(request: web.Request) -> RuleService:
        return kind.service(services_of(request))

    async def listing(request: web.Request) -> web.Response:
        limit, cursor = paging.page_params(request.query)
        docs = await rules(request).list(tenant_of(request), after=cursor, limit=limit)
        items = [public_rule(d) for d in docs]
        context = {
            "items": items,
            **await kind.listing(request, items),
            "next_cursor": items[-1]["id"] if len(items) == limit else None,
        }
        return render(request, f"fleet/{kind.name}s.html", context)

    def new_form(request: web.Request, form: Form, *, status: int = 200) -> web.Response:
        return render(request, f"fleet/{kind.name}_new.html", {"form": form}, status=status)

    async def new(request: web.Request) -> web.Response:
        return new_form(request, Form(dict(kind.defaults)))

    async def create(request: web.Request) -> web.Response:
        values = read_values(form_of(request))
        try:
            doc = await rules(request).create(
                tenant_of(request), kind.body(values, False, form_lang(request))
            )
        except FORM_ERRORS as exc:  # a conflict (the tenant's limit): above it
            return new_form(request, Form(values).refuse(exc, kind.fields), status=exc.status)
        return redirect(f"{base}/{doc['_id']}", flash=f"fleet.{kind.name}_created")

    async def rule_page(
        request: web.Request, rule: dict[str, Any], form: Form, *, status: int = 200
    ) -> web.Response:
        context = {kind.name: rule, **await kind.showing(request, rule), "form": form}
        return render(request, f"fleet/{kind.name}.html", context, status=status)

    async def show(request: web.Request) -> web.Response:
        rule = public_rule(await rules(request).get(tenant_of(request), _ref(request)))
        return await rule_page(
            request, rule, editing(_form_values(rule, kind.fields, form_lang(request)))
        )

    async def update(request: web.Request) -> web.Response:
        rule = public_rule(await rules(request).get(tenant_of(request), _ref(request)))
        lang = form_lang(request)
        values = read_values(form_of(request), shown=_form_values(rule, kind.fields, lang))
        form = _refused(values, rule, kind, lang) or await _saved(
            request, rules(request), rule, values, kind, lang
        )
        if form is not None:
            status = 409 if form.stale is not None else 422
            return await rule_page(request, rule, form, status=status)
        return redirect(f"{base}/{rule['id']}", flash=f"fleet.{kind.name}_saved")

    async def delete(request: web.Request) -> web.Response:
        await rules(request).delete(tenant_of(request), _ref(request))
        return redirect(base, flash=f"fleet.{kind.name}_deleted")

    return [
        web.get(kind.path, listing),
        web.get(kind.path + "/new", new),
        web.post(kind.path, create),
        web.get(kind.path + "/{ref}", show),
        web.post(kind.path + "/{ref}/edit", update),
        web.post(kind.path + "/{ref}/delete", delete),
    ]


def _refused(
    values: dict[str, Any], rule: Mapping[str, Any], kind: RulePages, lang: str
) -> Form | None:
    """An edit from a form loaded before the rule last changed: refused (forms.stale_edit)."""
    return stale_edit(values, _form_values(rule, kind.fields, lang))


async def _saved(
    request: web.Request,
    rules: RuleService,
    rule: Mapping[str, Any],
    values: dict[str, Any],
    kind: RulePages,
    lang: str,
) -> Form | None:
    """The rule changed as the form says; or the form with the use case's problems."""
    shown = _form_values(rule, kind.fields, lang)
    try:
        body = changes(kind.body(values, True, lang), kind.body(shown, True, lang))
        if body:
            await rules.update(tenant_of(request), rule["id"], body)
    except FORM_ERRORS as exc:  # a conflict (the positions' limit): above it
        return Form(values).refuse(exc, kind.fields)
    return None


def _ref(request: web.Request) -> str:
    return request.match_info["ref"]


# --- geofences: a form with a circle or a polygon, drawn over the fleet's recent tracks ---


def fence_body(values: Mapping[str, Any], editing: bool, lang: str) -> dict[str, Any]:
    """A geofence form as the admin API's body: a pasted polygon wins over the circle's
    fields; empty optional fields are their defaults (or cleared on an edit)."""
    body = {**_rule_body(values), "kind": values.get("kind") or ""}
    if str(values.get("polygon") or "").strip():
        body["polygon"] = json_field(values, "polygon")
    elif any(values.get(f"circle.{k}") for k in ("lat", "lon", "radius_m")):
        body["circle"] = {
            k: number_field(values, f"circle.{k}", lang=lang, integer=False)
            for k in ("lat", "lon", "radius_m")
        }
    elif editing:  # the shape is required: say where
        body["circle"] = None
    for name in ("margin_m", "dwell_seconds"):
        if (value := number_field(values, name, lang=lang, integer=False)) is not None:
            body[name] = value
    return body


async def _fences_drawn(request: web.Request, _page: list[dict[str, Any]]) -> dict[str, Any]:
    """The list's map: every fence of the tenant (not only the list page's), as the fold
    checks them, over the fleet's recent tracks."""
    overview, tenant = services_of(request).fleet_overview, tenant_of(request)
    fences = [public_rule(d) for d in await overview.fences(tenant)]
    return await _drawn(request, fences, await overview.vehicles(tenant))


async def _fence_drawn(request: web.Request, fence: dict[str, Any]) -> dict[str, Any]:
    vehicles = await services_of(request).fleet_overview.vehicles(tenant_of(request))
    applying = [v for v in vehicles if _applies(fence, v.get("data") or {})]
    return await _drawn(request, [fence], applying)


async def _drawn(
    request: web.Request, fences: list[dict[str, Any]], vehicles: list[Doc]
) -> dict[str, Any]:
    """`map`: the fences under the recent tracks of the first TRACKED_VEHICLES `vehicles`;
    `map_partial`: (drawn, of) when there are more vehicles than that (the page says so)."""
    looked = vehicles[:TRACKED_VEHICLES]
    tracks = await services_of(request).fleet_overview.recent_tracks(tenant_of(request), looked)
    partial = (len(looked), len(vehicles)) if len(vehicles) > len(looked) else None
    return {
        "map": draw([TrackInput(plate, fixes) for plate, fixes in tracks], fences),
        "map_partial": partial,
    }


def _applies(rule: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """The rule's own reach (no vehicles and no group: every vehicle), as the fold reads it
    (`Geofence.applies_to`): a plate in any spelling, or its old or Mercosul twin."""
    keys = {plate_match_key(str(p)) for p in rule.get("vehicles") or []}
    plate = str(data.get("plate") or "")
    return reaches(keys, rule.get("group"), plate, vehicle_groups(data))


# --- maintenance plans: the vehicles due or due soon -------------------------------------


def plan_body(values: Mapping[str, Any], editing: bool, lang: str) -> dict[str, Any]:
    body = _rule_body(values)
    for name in ("every_km", "due_soon_km", "every_days", "due_soon_days", "start_km"):
        value = number_field(values, name, lang=lang, integer=False)
        if value is not None:  # (an emptied one is cleared on an edit: forms.changes)
            body[name] = value
    return body


async def _standing(request: web.Request, plans: list[dict[str, Any]]) -> dict[str, Any]:
    """`standing`: plan id → the vehicles due or due soon on it (plate, condition, odometer,
    next km), of every vehicle of the fleet."""
    tenant, services = tenant_of(request), services_of(request)
    ids = {p["id"] for p in plans}
    standing: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    outlooks = await services.fleet_overview.plan_outlooks(tenant, ids)  # the whole fleet
    for vehicle, odometer, views in outlooks:
        for plan in views:
            if plan.id in ids and plan.outlook.condition != "ok":
                standing[plan.id].append(
                    {
                        "plate": (vehicle.get("data") or {}).get("plate"),
                        "condition": plan.outlook.condition,
                        "odometer_km": odometer,
                        "next_km": plan.outlook.next_km,
                    }
                )
    return {"standing": standing}


def _rule_body(values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every rule's form has, as the admin API's body."""
    plates = str(values.get("vehicles") or "").replace("\n", ",")
    return {
        "name": values.get("name") or "",
        "description": values.get("description") or None,
        # (no plates: no plate list, which the form's help says is every vehicle)
        "vehicles": [p.strip() for p in plates.split(",") if p.strip()] or None,
        "group": values.get("group") or None,
    }


def _form_values(rule: Mapping[str, Any], fields: tuple[str, ...], lang: str) -> dict[str, str]:
    """A rule as its form shows it: plates comma-separated, a polygon as indented JSON, a
    number in the page's language, every digit kept (read back as the same number)."""
    values = {}
    for name in fields:
        value = at_path(rule, name)
        if isinstance(value, list):
            values[name] = ", ".join(value)
        elif isinstance(value, Mapping):
            values[name] = tojson_pretty(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values[name] = number_text(value, lang)
        else:
            values[name] = "" if value is None else str(value)
    return values


PAGES = (
    RulePages(
        path="/geofences",
        name="fence",
        fields=(
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
        ),
        defaults={"kind": "authorized", "margin_m": "25", "dwell_seconds": "0"},
        body=fence_body,
        listing=_fences_drawn,
        showing=_fence_drawn,
        service=lambda services: services.geofences,
    ),
    RulePages(
        path="/maintenance-plans",
        name="plan",
        fields=(
            "name",
            "description",
            "every_km",
            "due_soon_km",
            "every_days",
            "due_soon_days",
            "start_km",
            "vehicles",
            "group",
        ),
        defaults={"start_km": "0"},
        body=plan_body,
        listing=_standing,
        showing=lambda request, plan: _standing(request, [plan]),
        service=lambda services: services.maintenance_plans,
    ),
)


# --- a vehicle's page --------------------------------------------------------------------


async def vehicle_fleet(request: web.Request, vehicle: Doc) -> dict[str, Any]:
    """What a vehicle's page adds: its recent track and fences drawn, which fences it is
    inside, and its plans' outlook."""
    view = await services_of(request).fleet_overview.vehicle(tenant_of(request), vehicle)
    plate = str(vehicle["data"].get("plate") or "")
    fences = [public_rule(d) for d in view.fences]
    sheet: SheetMap | None = draw([TrackInput(plate, view.fixes)] if view.fixes else [], fences)
    return {
        "map": sheet,
        "fences": fences,
        "inside": view.inside,
        "plans": view.plans,
        "plan_options": [(p.id, p.name) for p in view.plans],
        "fixes": view.fixes[-10:][::-1],
    }
