"""Geofence and maintenance-plan pages over HTTP: a circle typed in and a polygon pasted, both
drawn (inline SVG) over the fleet's recent tracks; bad shapes refused next to their fields with
what was typed kept; plans listing the vehicles due and due soon; a vehicle's page with its
track, its fences and its plans; a viewer changes nothing; another tenant's fence is a 404."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.clock import as_stored
from gateway.services import Services
from gateway.store import new_id
from gateway.store.fleet_rules import MAX_RULES
from gateway.web.state import services_key
from tests.partner_double import post
from tests.support import auth
from tests.triggers_support import hook
from tests.ui_support import Client, csrf, form_fields, log_in, make_user, queries

SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [[-46.64, -23.56], [-46.62, -23.56], [-46.62, -23.54], [-46.64, -23.54], [-46.64, -23.56]]
    ],
}


async def _form(client: Client, path: str, fields: dict[str, str]) -> Any:
    token = await csrf(client, path if not path.endswith("/edit") else path[: -len("/edit")])
    target = path.removesuffix("/new") if path.endswith("/new") else path
    return await client.post(target, data={"csrf": token, **fields}, allow_redirects=False)


async def _api(client: Client, path: str) -> Any:
    response = await client.get(path, headers=auth())
    assert response.status == 200, await response.text()
    return await response.json()


async def test_a_typed_circle_and_a_pasted_polygon_are_created_and_drawn(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    circle = await _form(
        client,
        "/admin/geofences/new",
        {
            "name": "Garagem <b>SP</b>",
            "kind": "authorized",
            "circle.lat": "-23,55",  # a decimal comma, as typed in Brazil
            "circle.lon": "-46.63",
            "circle.radius_m": "800",
            "vehicles": "ABC1D23, XYZ9K88",
        },
    )
    assert circle.status == 303, await circle.text()
    polygon = await _form(
        client,
        "/admin/geofences/new",
        {"name": "Centro", "kind": "restricted", "polygon": json.dumps(SQUARE), "group": "sp"},
    )
    assert polygon.status == 303, await polygon.text()
    listed = (await _api(client, "/api/v1/geofences"))["items"]
    by_name = {f["name"]: f for f in listed}
    assert by_name["Garagem <b>SP</b>"]["circle"] == {"lat": -23.55, "lon": -46.63, "radius_m": 800}
    assert by_name["Garagem <b>SP</b>"]["vehicles"] == ["ABC1D23", "XYZ9K88"]
    assert by_name["Centro"]["polygon"] == SQUARE and by_name["Centro"]["group"] == "sp"
    page = await (await client.get("/admin/geofences")).text()
    assert 'data-testid="fleet-map"' in page
    for fence in listed:
        assert f'data-fence="{fence["id"]}"' in page
    assert '<circle class="fence fence-authorized"' in page
    assert '<path class="fence fence-restricted"' in page
    assert "Garagem &lt;b&gt;SP&lt;/b&gt;" in page and "<b>SP</b>" not in page
    fence = by_name["Centro"]
    page = await (await client.get(f"/admin/geofences/{fence['id']}")).text()
    shown = json.loads(html.unescape(page.split('<pre class="json">')[1].split("</pre>")[0]))
    assert shown.keys() == fence.keys()  # the API's document, not the stored one
    assert shown["polygon"] == SQUARE


async def test_bad_shapes_are_refused_next_to_their_fields_and_what_was_typed_is_kept(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    open_ring = {"type": "Polygon", "coordinates": [SQUARE["coordinates"][0][:-1]]}
    refused = await _form(
        client,
        "/admin/geofences/new",
        {"name": "Aberta", "kind": "authorized", "polygon": json.dumps(open_ring)},
    )
    page = await refused.text()
    assert refused.status == 422 and 'data-field="polygon"' in page
    assert "Aberta" in page and "-46.64" in page
    zero = await _form(
        client,
        "/admin/geofences/new",
        {
            "name": "Ponto",
            "kind": "authorized",
            "circle.lat": "-23.5",
            "circle.lon": "-46.6",
            "circle.radius_m": "0",
        },
    )
    page = await zero.text()
    assert zero.status == 422 and 'data-field="circle.radius_m"' in page
    north = await _form(
        client,
        "/admin/geofences/new",
        {
            "name": "Polo",
            "kind": "authorized",
            "circle.lat": "91",
            "circle.lon": "0",
            "circle.radius_m": "10",
        },
    )
    assert north.status == 422 and 'data-field="circle.lat"' in await north.text()
    plan = await _form(client, "/admin/maintenance-plans/new", {"name": "Zero", "every_km": "0"})
    assert plan.status == 422 and 'data-field="every_km"' in await plan.text()
    assert (await _api(client, "/api/v1/geofences"))["items"] == []
    assert (await _api(client, "/api/v1/maintenance-plans"))["items"] == []


async def test_a_plan_lists_the_vehicles_due_and_due_soon(
    client: Client, services: Services
) -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "odometer_km": 10_400})
    await post(client, "/api/v1/entities/vehicle", {"plate": "DEF4G56", "odometer_km": 9_600})
    await post(client, "/api/v1/entities/vehicle", {"plate": "GHI7J89", "odometer_km": 2_000})
    await make_user(services)
    await log_in(client)
    created = await _form(
        client,
        "/admin/maintenance-plans/new",
        {"name": "Revisão 10 mil", "every_km": "10000", "due_soon_km": "500"},
    )
    assert created.status == 303, await created.text()
    page = await (await client.get(created.headers["Location"])).text()
    assert '<tr data-condition="due"><td><a href="/admin/entities/vehicle/ABC1D23">' in page
    assert '<tr data-condition="due_soon"><td><a href="/admin/entities/vehicle/DEF4G56">' in page
    assert "GHI7J89" not in page
    listing = await (await client.get("/admin/maintenance-plans")).text()
    assert "ABC1D23" in listing and "DEF4G56" in listing and "GHI7J89" not in listing
    [plan] = (await _api(client, "/api/v1/maintenance-plans"))["items"]
    refused = await _form(
        client, f"/admin/maintenance-plans/{plan['id']}/edit", {"name": "x", "every_km": "0"}
    )
    page = await refused.text()
    assert refused.status == 422 and 'data-field="every_km"' in page
    assert '<tr data-condition="due"><td><a href="/admin/entities/vehicle/ABC1D23">' in page
    edited = await _form(
        client,
        f"/admin/maintenance-plans/{plan['id']}/edit",
        {"name": "Revisão 20 mil", "every_km": "20000", "due_soon_km": "", "start_km": ""},
    )
    assert edited.status == 303, await edited.text()
    stored = await _api(client, f"/api/v1/maintenance-plans/{plan['id']}")
    assert (stored["name"], stored["every_km"], stored.get("due_soon_km")) == (
        "Revisão 20 mil",
        20000,
        None,
    )
    page = await (await client.get(f"/admin/maintenance-plans/{plan['id']}")).text()
    assert "ABC1D23" not in page and "DEF4G56" not in page


async def test_a_plan_by_time_alone_is_created_from_the_form_and_shown(
    client: Client, services: Services
) -> None:
    """An annual inspection: the form with `every_days` and no `every_km` creates the plan
    (before: refused naming every_km); its page, the plans list and a vehicle's page show it
    without a distance (the next km "—"). Neither interval: refused naming every_km."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "odometer_km": 10_400})
    await make_user(services)
    await log_in(client)
    refused = await _form(client, "/admin/maintenance-plans/new", {"name": "Nada"})
    assert refused.status == 422 and 'data-field="every_km"' in await refused.text()
    created = await _form(
        client,
        "/admin/maintenance-plans/new",
        {"name": "Vistoria anual", "every_km": "", "every_days": "365", "due_soon_days": "30"},
    )
    assert created.status == 303, await created.text()
    [plan] = (await _api(client, "/api/v1/maintenance-plans"))["items"]
    assert plan.get("every_km") is None and plan["every_days"] == 365
    for path in (created.headers["Location"], "/admin/maintenance-plans"):
        page = await client.get(path)
        assert page.status == 200 and "365" in await page.text()
    vehicle = await (await client.get("/admin/entities/vehicle/ABC1D23")).text()
    assert "Vistoria anual" in vehicle


async def test_a_vehicles_page_draws_its_track_and_shows_its_fences_and_plans(
    client: Client, services: Services
) -> None:
    vehicle = await post(
        client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "odometer_km": 9_700}
    )
    trigger = await post(
        client, "/api/v1/triggers", {"name": "gps", "target": "positions", "methods": ["POST"]}
    )
    fixes = [
        {
            "plate": "ABC1D23",
            "time": f"2026-12-01T12:00:{s:02d}Z",
            "lat": -23.55 + s * 1e-4,
            "lon": -46.63,
        }
        for s in range(0, 50, 10)
    ]
    status, body = await hook(client, trigger, fixes)
    assert status in (200, 201, 207), body
    await post(
        client,
        "/api/v1/geofences",
        {
            "name": "Garagem",
            "kind": "authorized",
            "circle": {"lat": -23.55, "lon": -46.63, "radius_m": 500},
        },
    )
    await post(
        client,
        "/api/v1/geofences",
        {
            "name": "Outra frota",
            "kind": "authorized",
            "circle": {"lat": -22.9, "lon": -43.2, "radius_m": 500},
            "vehicles": ["ZZZ9Z99"],
        },
    )
    await post(
        client,
        "/api/v1/maintenance-plans",
        {"name": "Revisão", "every_km": 10_000, "due_soon_km": 500},
    )
    await services.fold.run_until_idle()
    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/entities/vehicle/{vehicle['id']}")).text()
    # The newest fix, in the page's language (pt-BR: a decimal comma).
    assert re.search(r'data-testid="last-position">[^<]*: -23,54600, -46,63000 · ', page), page
    assert '<polyline class="track"' in page and 'data-track="ABC1D23"' in page
    fences = page.split('data-testid="vehicle-fences"')[1].split("</ul>")[0]
    assert "Garagem" in fences and "Outra frota" not in fences
    assert 'data-inside="yes"' in fences  # the fold's state of the fence
    # pt-BR: a decimal comma
    assert 'data-testid="recent-fixes"' in page and page.count("-23,55") >= 1
    plans = page.split('data-testid="vehicle-plans"')[1].split("</table>")[0]
    assert 'data-condition="due_soon"' in plans and "Revisão" in plans and "10.000" in plans


async def test_a_viewer_changes_no_fence_and_another_tenants_fence_is_not_found(
    client: Client, services: Services
) -> None:
    mine = await post(
        client,
        "/api/v1/geofences",
        {
            "name": "Garagem",
            "kind": "authorized",
            "circle": {"lat": -23.5, "lon": -46.6, "radius_m": 300},
        },
    )
    theirs = await post(
        client,
        "/api/v1/geofences",
        {
            "name": "Deles",
            "kind": "authorized",
            "circle": {"lat": -23.5, "lon": -46.6, "radius_m": 300},
        },
        tenant="globex",
    )
    await make_user(services, email="vera@acme.com.br", role="viewer")
    await log_in(client, email="vera@acme.com.br")
    page = await (await client.get(f"/admin/geofences/{mine['id']}")).text()
    assert 'data-testid="fence-form"' not in page and "Garagem" in page
    token = await csrf(client, "/admin/")
    for path in (f"/admin/geofences/{mine['id']}/edit", f"/admin/geofences/{mine['id']}/delete"):
        response = await client.post(path, data={"csrf": token, "name": "x", "kind": "restricted"})
        assert response.status == 403, path
    assert (await _api(client, f"/api/v1/geofences/{mine['id']}"))["name"] == "Garagem"
    assert (await client.get(f"/admin/geofences/{theirs['id']}")).status == 404


async def test_a_position_trigger_is_created_from_the_form_and_appends_fixes(
    client: Client, services: Services
) -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await make_user(services)
    await log_in(client)
    form = await (await client.get("/admin/triggers/new")).text()
    assert 'name="target"' in form and 'value="positions"' in form
    created = await _form(
        client,
        "/admin/triggers/new",
        {"name": "rastreadores", "target": "positions", "methods": "POST", "format": "json"},
    )
    page = await created.text()
    assert created.status == 201, page
    token = page.split('id="trigger-token" class="mono">')[1].split("<")[0]
    [trigger] = (await _api(client, "/api/v1/triggers"))["items"]
    assert (trigger["target"], trigger["entity_type"]) == ("positions", "vehicle")
    fix = {"plate": "ABC1D23", "time": "2026-12-01T12:00:00Z", "lat": -23.55, "lon": -46.63}
    sent = await client.post(
        f"/hooks/{trigger['id']}", json=fix, headers={"Authorization": f"Bearer {token}"}
    )
    assert sent.status == 201, await sent.text()
    track = await _api(client, "/api/v1/entities/vehicle/ABC1D23/positions")
    assert [f["lat"] for f in track["items"]] == [-23.55]
    listing = await (await client.get("/admin/triggers")).text()
    assert "posições" in listing


async def test_a_fences_page_draws_the_vehicle_its_rule_names_by_its_old_plate_twin(
    client: Client, services: Services
) -> None:
    """A fence naming `OVL3233` (the old plate) applies to vehicle OVL3C33, as the fold
    reads it: its page draws that vehicle's track, and not another vehicle's. Before, the
    page compared plates as written and drew no track."""
    trigger = await post(
        client, "/api/v1/triggers", {"name": "gps", "target": "positions", "methods": ["POST"]}
    )
    for plate in ("OVL3C33", "XYZ9K88"):
        await post(client, "/api/v1/entities/vehicle", {"plate": plate})
        fixes = [
            {"plate": plate, "time": f"2026-12-01T12:00:{s:02d}Z", "lat": -23.55 + s * 1e-4,
             "lon": -46.63}
            for s in range(0, 50, 10)
        ]  # fmt: skip
        status, body = await hook(client, trigger, fixes)
        assert status == 200 and body["summary"]["failed"] == 0, body
    fence = await post(
        client,
        "/api/v1/geofences",
        {
            "name": "Garagem",
            "kind": "authorized",
            "circle": {"lat": -23.55, "lon": -46.63, "radius_m": 500},
            "vehicles": ["OVL3233"],
        },
    )
    await services.fold.run_until_idle()
    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/geofences/{fence['id']}")).text()
    assert '<polyline class="track"' in page
    assert 'data-track="OVL3C33"' in page and 'data-track="XYZ9K88"' not in page


async def test_a_plan_lists_a_due_vehicle_of_a_fleet_past_a_page_and_the_map_says_what_it_omits(
    client: Client, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fleet of more vehicles than a page holds (200): the plan's page and the plans list
    look at every vehicle, so the overdue one registered last is listed; the geofences' map,
    which draws the tracks of the first 30, says how many of how many it drew."""
    for i in range(200):
        await post(client, "/api/v1/entities/vehicle", {"plate": f"AAA{i:04d}", "odometer_km": 10})
    await post(client, "/api/v1/entities/vehicle", {"plate": "ZZZ9Z99", "odometer_km": 95000})
    plan = await post(client, "/api/v1/maintenance-plans", {"name": "óleo", "every_km": 10000})
    await post(
        client,
        "/api/v1/geofences",
        {
            "name": "pátio",
            "kind": "authorized",
            "circle": {"lat": -23.5, "lon": -46.6, "radius_m": 300},
        },
    )
    await make_user(services)
    await log_in(client)
    store = client.app[services_key].store
    reads = queries(monkeypatch, store.entities._c, store.fleet._states)
    page = await (await client.get(f"/admin/maintenance-plans/{plan['id']}")).text()
    assert "ZZZ9Z99" in page
    assert "ZZZ9Z99" in await (await client.get("/admin/maintenance-plans")).text()
    fences = await (await client.get("/admin/geofences")).text()
    assert 'data-testid="map-partial"' in fences
    assert "de 30 dos 201 veículos" in html.unescape(fences)
    # each page reads the fleet's vehicles and their fold states in a query each, not a
    # read per vehicle (nor a page of 200 at a time)
    assert reads == {"entities": 3, "fleet": 2}


async def test_a_plans_pages_read_only_the_fold_state_of_the_plans_they_show(
    client: Client, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vehicle's fold state holds an entry for every plan of its tenant's (5,000 allowed):
    a plan's page, and a page of the list, read the state of the plans they show, not of
    every plan (at 1,000 vehicles and 4,800 plans the read was 155 MB: a 503, and every
    tenant's workers paused behind it)."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ZZZ9Z99", "odometer_km": 95000})
    plans = [
        await post(client, "/api/v1/maintenance-plans", {"name": f"plano {i}", "every_km": 10000})
        for i in range(3)
    ]
    await make_user(services)
    await log_in(client)
    states = client.app[services_key].store.fleet._states
    projections: list[dict[str, Any]] = []
    find = states.find

    def recorded(query: Any, projection: Any = None, *args: Any, **kw: Any) -> Any:
        projections.append(dict(projection or {}))
        return find(query, projection, *args, **kw)

    monkeypatch.setattr(states, "find", recorded)
    page = await (await client.get(f"/admin/maintenance-plans/{plans[1]['id']}")).text()
    assert "ZZZ9Z99" in page  # due on it, as before
    [read] = projections
    assert {k for k in read if k.startswith("state.plans")} == {f"state.plans.{plans[1]['id']}"}
    projections.clear()
    assert "ZZZ9Z99" in await (await client.get("/admin/maintenance-plans")).text()
    [read] = projections
    shown = {f"state.plans.{p['id']}" for p in plans}  # the page's three
    assert {k for k in read if k.startswith("state.plans")} == shown


async def test_a_fences_emptied_margin_and_dwell_are_cleared_back_to_their_defaults(
    client: Client, services: Services
) -> None:
    body = {
        "name": "Garagem",
        "kind": "authorized",
        "circle": {"lat": -23.55, "lon": -46.63, "radius_m": 500},
        "margin_m": 50,
        "dwell_seconds": 120,
    }
    fence = await post(client, "/api/v1/geofences", body)
    await make_user(services)
    await log_in(client)
    page = f"/admin/geofences/{fence['id']}"
    fields = form_fields(await (await client.get(page)).text(), page + "/edit")
    assert dict(fields)["margin_m"] == "50" and dict(fields)["dwell_seconds"] == "120"
    posted = [(n, "" if n in ("margin_m", "dwell_seconds") else v) for n, v in fields]
    saved = await client.post(page + "/edit", data=posted, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    stored = await (await client.get(f"/api/v1/geofences/{fence['id']}", headers=auth())).json()
    assert (stored["margin_m"], stored["dwell_seconds"]) == (25, 0)
    assert stored["name"] == "Garagem"


async def test_a_polygon_fence_becomes_a_circle_from_its_edit_form(
    client: Client, services: Services
) -> None:
    body = {"name": "patio", "kind": "authorized", "polygon": SQUARE}
    fence = await post(client, "/api/v1/geofences", body)
    await make_user(services)
    await log_in(client)
    page = f"/admin/geofences/{fence['id']}"
    fields = dict(form_fields(await (await client.get(page)).text(), page + "/edit"))
    typed = {"polygon": "", "circle.lat": "-23,555", "circle.lon": "-46,645"}
    fields.update({**typed, "circle.radius_m": "300"})
    saved = await client.post(page + "/edit", data=fields, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    stored = await _api(client, f"/api/v1/geofences/{fence['id']}")
    assert stored["circle"] == {"lat": -23.555, "lon": -46.645, "radius_m": 300}
    assert "polygon" not in stored


async def test_the_fences_map_draws_every_fence_on_each_list_page(
    client: Client, services: Services
) -> None:
    await make_user(services)
    ids = []
    for n in range(55):  # more than a list page's 50
        circle = {"lat": -23.5 - n * 0.01, "lon": -46.6, "radius_m": 300}
        body = {"name": f"cerca-{n:02d}", "kind": "restricted", "circle": circle}
        ids.append((await post(client, "/api/v1/geofences", body))["id"])
    await log_in(client)
    first = await (await client.get("/admin/geofences")).text()
    assert sorted(re.findall(r'data-fence="([^"]+)"', first)) == sorted(ids)
    after = re.search(r'<p class="pager"><a href="\?([^"]*cursor=[^"]+)"', first)
    assert after is not None
    second = await (await client.get("/admin/geofences?" + html.unescape(after.group(1)))).text()
    assert second.count('<td class="name"><a href="/admin/geofences/') == 5  # page 2
    assert sorted(re.findall(r'data-fence="([^"]+)"', second)) == sorted(ids)


TAVEUNI = {
    "type": "MultiPolygon",
    "coordinates": [
        [[[179.8, -16.95], [180.0, -16.95], [180.0, -16.7], [179.8, -16.7], [179.8, -16.95]]],
        [[[-180.0, -16.95], [-179.8, -16.95], [-179.8, -16.7], [-180.0, -16.7], [-180.0, -16.95]]],
    ],
}


async def test_a_pasted_multipolygon_across_the_antimeridian_is_listed_and_drawn_in_one_piece(
    client: Client, services: Services
) -> None:
    """An area round Taveuni cut at 180° in two polygons (RFC 7946 §3.1.9), pasted as one
    MultiPolygon: stored as pasted, listed with its polygons and vertices, drawn on the map
    with both halves side by side (the cut's corners at the same place on the sheet), not at
    either end of a sheet 360° wide. A MultiPolygon was refused, and its rings, a level
    deeper than a Polygon's, could not be drawn."""
    await make_user(services)
    await log_in(client)
    created = await _form(
        client,
        "/admin/geofences/new",
        {"name": "Taveuni", "kind": "authorized", "polygon": json.dumps(TAVEUNI)},
    )
    assert created.status == 303, await created.text()
    [fence] = (await _api(client, "/api/v1/geofences"))["items"]
    assert fence["polygon"] == TAVEUNI
    listing = await (await client.get("/admin/geofences")).text()
    assert re.search(r"<td>2 pol\w+, 8 v\w+</td>", listing), listing
    path = re.search(rf'd="([^"]+)" fill-rule="evenodd" data-fence="{fence["id"]}"', listing)
    assert path is not None
    west, east = (
        [tuple(map(float, point.split(","))) for point in ring.strip(" MZ").split(" L ")]
        for ring in path.group(1).split(" Z ")
    )
    assert west[1] == east[0] and west[2] == east[3]  # (180, -16.95) and (180, -16.7)
    xs = [x for x, _ in west + east]
    assert 0 < min(xs) < max(xs) < 640 and max(xs) - min(xs) > 300  # both fill the sheet
    page = await (await client.get(f"/admin/geofences/{fence['id']}")).text()
    shown = json.loads(html.unescape(page.split('<pre class="json">')[1].split("</pre>")[0]))
    assert shown["polygon"] == TAVEUNI


async def test_a_fence_past_the_tenants_limit_is_refused_on_its_form_with_what_was_typed(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    now = as_stored(datetime.now(UTC))
    far = [
        {
            "_id": new_id(),
            "tenant": "acme",
            "name": f"far-{i}",
            "kind": "authorized",
            "circle": {"lat": -3.0, "lon": -60.0 + i * 1e-4, "radius_m": 5},
            "vehicles": None,
            "group": None,
            "margin_m": 25,
            "dwell_seconds": 0,
            "rev": 1,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(MAX_RULES)
    ]
    for start in range(0, len(far), 500):  # each within the client's 5 s, under load too
        await services.store.db["geofences"].insert_many(far[start : start + 500])
    refused = await _form(
        client,
        "/admin/geofences/new",
        {"name": "Pedreira", "kind": "restricted", "polygon": json.dumps(SQUARE)},
    )
    page = html.unescape(await refused.text())
    assert refused.status == 409, page
    assert "5,000" in page and "Pedreira" in page and "-46.64" in page
    missing = await client.get("/api/v1/geofences/Pedreira", headers=auth())
    assert missing.status == 404
