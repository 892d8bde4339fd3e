"""/api/v1/geofences and /api/v1/maintenance-plans through HTTP: tenant-scoped CRUD, bad
shapes and plans refused with a problem naming the field, and the fold's cached view of the
rules following this process's changes at once."""

from __future__ import annotations

import asyncio
import math
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema_rs
import pymongo
from aiohttp.test_utils import TestClient

from gateway.clock import as_stored
from gateway.fleet.geometry import MAX_POSITIONS, Circle, Polygon
from gateway.fleet.odometer import TrackPoint
from gateway.fleet.rule_service import MAX_TENANT_POSITIONS
from gateway.fleet.rules import FleetRules
from gateway.services import Services
from gateway.store import Doc, new_id
from gateway.store.fleet_rules import MAX_RULES
from gateway.web.state import services_key
from tests.flow_support import get, send_to
from tests.partner_double import post
from tests.support import auth, inbox_items
from tests.test_fleet_scenarios import PAULISTA, _fold_and_drain, _forward, _traccar_trigger


async def _insert_all(collection: Any, docs: list[Doc]) -> None:
    """A test's stored rules, thousands at once: under the suite's load the insert outlasts
    the app's 5 s database deadline (a set-up's timeout, not the behaviour checked)."""
    with pymongo.timeout(120):
        await collection.insert_many(docs)


Client = TestClient[Any, Any]
DEPOT = {"lat": -23.5505, "lon": -46.6333, "radius_m": 800}
SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [[-46.64, -23.56], [-46.62, -23.56], [-46.62, -23.54], [-46.64, -23.54], [-46.64, -23.56]]
    ],
}


async def problem(client: Client, method: str, path: str, body: Any, status: int = 422) -> Any:
    response = await client.request(method, path, json=body, headers=auth())
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    return await response.json()


def pointers(document: Any) -> list[str]:
    return [e["pointer"] for e in document.get("errors", [])]


async def test_a_geofence_is_created_read_changed_and_deleted(client: Client) -> None:
    created = await post(
        client,
        "/api/v1/geofences",
        {
            "name": "Depósito Central",
            "kind": "authorized",
            "circle": DEPOT,
            "vehicles": ["ABC1D23"],
        },
    )
    assert created["circle"] == DEPOT
    assert (created["margin_m"], created["dwell_seconds"], created["group"]) == (25, 0, None)
    by_name = await client.get("/api/v1/geofences/Depósito Central", headers=auth())
    assert (await by_name.json())["id"] == created["id"]

    changed = await client.patch(
        f"/api/v1/geofences/{created['id']}",
        json={"polygon": SQUARE, "dwell_seconds": 60, "vehicles": None, "group": "sp"},
        headers=auth(),
    )
    body = await changed.json()
    assert changed.status == 200, body
    assert "circle" not in body
    assert body["polygon"] == SQUARE
    assert (body["dwell_seconds"], body["vehicles"], body["group"]) == (60, None, "sp")

    listed = await (await client.get("/api/v1/geofences", headers=auth())).json()
    assert [f["name"] for f in listed["items"]] == ["Depósito Central"]
    deleted = await client.delete(f"/api/v1/geofences/{created['id']}", headers=auth())
    assert deleted.status == 204
    gone = await client.get(f"/api/v1/geofences/{created['id']}", headers=auth())
    assert gone.status == 404


async def test_rules_belong_to_their_tenant(client: Client) -> None:
    fence = await post(
        client, "/api/v1/geofences", {"name": "y", "kind": "restricted", "circle": DEPOT}
    )
    plan = await post(client, "/api/v1/maintenance-plans", {"name": "oil", "every_km": 10_000})
    for path in (f"/api/v1/geofences/{fence['id']}", f"/api/v1/maintenance-plans/{plan['id']}"):
        for method in ("GET", "PATCH", "DELETE"):
            other = await client.request(method, path, json={"name": "x"}, headers=auth("globex"))
            assert other.status == 404, (method, path)
    for path in ("/api/v1/geofences", "/api/v1/maintenance-plans"):
        listed = await (await client.get(path, headers=auth("globex"))).json()
        assert listed["items"] == []
    # the same name in another tenant is another rule; twice in one tenant is a conflict
    await post(
        client, "/api/v1/geofences", {"name": "y", "kind": "restricted", "circle": DEPOT}, "globex"
    )
    await problem(
        client,
        "POST",
        "/api/v1/geofences",
        {"name": "y", "kind": "restricted", "circle": DEPOT},
        409,
    )


async def test_bad_geofences_are_refused_naming_the_field(client: Client) -> None:
    ring = SQUARE["coordinates"][0]
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            {"polygon": {"type": "Polygon", "coordinates": [ring[:-1]]}},
            "/polygon/coordinates/0",
            "does not close",
        ),
        (
            {
                "polygon": {
                    "type": "Polygon",
                    "coordinates": [[ring[0], ring[2], ring[1], ring[3], ring[0]]],
                }
            },
            "/polygon/coordinates/0",
            "intersects itself",
        ),
        ({"circle": {**DEPOT, "radius_m": 0}}, "/circle/radius_m", "radius_m"),
        ({"circle": {**DEPOT, "lat": 91}}, "/circle/lat", "latitude"),
        ({"circle": DEPOT, "polygon": SQUARE}, "/circle", "exactly one"),
        ({}, "/circle", "exactly one"),
        ({"circle": DEPOT, "kind": "forbidden"}, "/kind", "kind"),
        ({"circle": DEPOT, "margin_m": -1}, "/margin_m", "margin_m"),
        ({"circle": DEPOT, "vehicles": ["ABC1D23", 7]}, "/vehicles/1", "plate"),
        ({"circle": DEPOT, "colour": "red"}, "/colour", "unknown"),
    ]
    for fields, pointer, words in cases:
        body = {"name": "bad", "kind": "authorized", **fields}
        refused = await problem(client, "POST", "/api/v1/geofences", body)
        assert pointer in pointers(refused), (fields, refused)
        assert any(words in e["message"] for e in refused["errors"]), (fields, refused)
    listed = await (await client.get("/api/v1/geofences", headers=auth())).json()
    assert listed["items"] == []


async def test_a_change_that_breaks_a_geofence_is_refused_and_changes_nothing(
    client: Client,
) -> None:
    fence = await post(
        client, "/api/v1/geofences", {"name": "d", "kind": "authorized", "circle": DEPOT}
    )
    path = f"/api/v1/geofences/{fence['id']}"
    refused = await problem(client, "PATCH", path, {"circle": {**DEPOT, "radius_m": -3}})
    assert pointers(refused) == ["/circle/radius_m"]
    still = await (await client.get(path, headers=auth())).json()
    assert still["circle"] == DEPOT


async def test_a_maintenance_plan_is_created_changed_and_deleted(client: Client) -> None:
    plan = await post(
        client,
        "/api/v1/maintenance-plans",
        {"name": "oil", "every_km": 10_000, "due_soon_km": 500, "every_days": 180, "group": "vans"},
    )
    assert (plan["start_km"], plan["vehicles"], plan["every_days"]) == (0, None, 180)
    path = f"/api/v1/maintenance-plans/{plan['id']}"
    changed = await client.patch(path, json={"every_days": None, "start_km": 1_000}, headers=auth())
    body = await changed.json()
    assert changed.status == 200, body
    assert "every_days" not in body and body["start_km"] == 1_000 and body["due_soon_km"] == 500
    assert (await client.delete(path, headers=auth())).status == 204
    assert (await client.get(path, headers=auth())).status == 404


async def test_bad_plans_are_refused_naming_the_field(client: Client) -> None:
    cases = [
        ({"every_km": 0}, "/every_km"),
        ({}, "/every_km"),
        ({"every_km": "10000"}, "/every_km"),
        ({"every_km": 10_000, "due_soon_km": -1}, "/due_soon_km"),
        ({"every_km": 10_000, "every_days": 0}, "/every_days"),
        ({"every_km": 10_000, "start_km": -5}, "/start_km"),
        ({"every_km": 10_000, "name": "  "}, "/name"),
    ]
    for fields, pointer in cases:
        refused = await problem(
            client, "POST", "/api/v1/maintenance-plans", {"name": "p", **fields}
        )
        assert pointers(refused) == [pointer], (fields, refused)


async def test_an_empty_plate_list_is_refused_not_read_as_every_vehicle(client: Client) -> None:
    """`"vehicles": []` names no vehicle: refused on a create and on a patch that removes a
    rule's last plate (before, it was read as no list, and the rule applied to every vehicle
    of the tenant); the rule is left as it was."""
    fence = {"name": "vip", "kind": "restricted", "circle": DEPOT}
    plan = {"name": "oil", "every_km": 5_000}
    for path, body in (("/api/v1/geofences", fence), ("/api/v1/maintenance-plans", plan)):
        for extra in ({}, {"group": "vans"}):
            refused = await problem(client, "POST", path, {**body, **extra, "vehicles": []})
            assert [(e["pointer"], e["keyword"]) for e in refused["errors"]] == [
                ("/vehicles", "minItems")
            ], refused
            assert "leave vehicles out (null)" in refused["errors"][0]["message"], refused
        created = await post(client, path, {**body, "vehicles": ["ABC1D23"]})
        rule = f"{path}/{created['id']}"
        refused = await problem(client, "PATCH", rule, {"vehicles": []})
        assert pointers(refused) == ["/vehicles"], refused
        kept = await (await client.get(rule, headers=auth())).json()
        assert kept["vehicles"] == ["ABC1D23"] and kept["updated_at"] == kept["created_at"]
    listed = await (await client.get("/api/v1/geofences", headers=auth())).json()
    assert [f["name"] for f in listed["items"]] == ["vip"]


async def test_a_rule_without_plates_reads_back_null_and_its_body_patches_back_as_it_is(
    client: Client,
) -> None:
    """No plate list is answered as `"vehicles": null`, also for a rule stored with `[]`
    before it was refused: a GET's fields sent back as a patch are accepted, unchanged."""
    whole = await post(
        client, "/api/v1/geofences", {"name": "all", "kind": "authorized", "circle": DEPOT}
    )
    assert (whole["vehicles"], whole["group"]) == (None, None)
    services = client.app[services_key]
    old = await services.geofences.create(
        "acme", {"name": "old", "kind": "authorized", "circle": DEPOT, "group": "vans"}
    )
    await services.store.fleet_rules.geofences.update(
        "acme", str(old["_id"]), old["rev"], {"vehicles": []}, []
    )
    for ref in (whole["id"], str(old["_id"])):
        read = await (await client.get(f"/api/v1/geofences/{ref}", headers=auth())).json()
        assert read["vehicles"] is None, read
        body = {k: v for k, v in read.items() if k not in ("id", "created_at", "updated_at")}
        patched = await client.patch(f"/api/v1/geofences/{ref}", json=body, headers=auth())
        answer = await patched.json()
        assert patched.status == 200, answer
        assert {k: answer[k] for k in body} == body


async def test_a_null_optional_number_is_its_default_and_the_rules_still_fold(
    client: Client,
) -> None:
    fence = await post(
        client,
        "/api/v1/geofences",
        {
            "name": "d",
            "kind": "authorized",
            "circle": DEPOT,
            "margin_m": None,
            "dwell_seconds": None,
        },
    )
    assert (fence["margin_m"], fence["dwell_seconds"]) == (25, 0)
    changed = await client.patch(
        f"/api/v1/geofences/{fence['id']}", json={"margin_m": 40}, headers=auth()
    )
    assert (await changed.json())["margin_m"] == 40
    cleared = await client.patch(
        f"/api/v1/geofences/{fence['id']}", json={"margin_m": None}, headers=auth()
    )
    assert cleared.status == 200 and (await cleared.json())["margin_m"] == 25
    plan = await post(
        client, "/api/v1/maintenance-plans", {"name": "oil", "every_km": 10_000, "start_km": None}
    )
    assert plan["start_km"] == 0
    (geofence,) = (await client.app[services_key].fleet_rules.for_tenant("acme")).geofences
    assert geofence.margin_m == 25
    listing = await client.get("/api/v1/maintenance-plans", headers=auth())
    assert listing.status == 200


async def test_a_fence_stored_with_a_null_margin_folds_with_the_default(
    services: Services,
) -> None:
    """Such documents were stored before a null margin meant the default."""
    fence = await services.geofences.create(
        "acme", {"name": "d", "kind": "authorized", "circle": DEPOT}
    )
    await services.store.fleet_rules.geofences.update(
        "acme", str(fence["_id"]), fence["rev"], {"margin_m": None}, []
    )
    (geofence,) = (await services.fleet_rules.for_tenant("acme")).geofences
    assert geofence.margin_m == 25


async def test_the_folds_view_follows_this_processs_changes_at_once(client: Client) -> None:
    rules = client.app[services_key].fleet_rules
    assert (await rules.for_tenant("acme")).geofences == ()
    fence = await post(
        client,
        "/api/v1/geofences",
        {
            "name": "yard",
            "kind": "authorized",
            "polygon": SQUARE,
            "group": "sp",
            "dwell_seconds": 30,
        },
    )
    await post(
        client,
        "/api/v1/maintenance-plans",
        {"name": "oil", "every_km": 10_000, "vehicles": ["ABC1D23"]},
    )
    seen = await rules.for_tenant("acme")
    (geofence,) = seen.geofences
    assert (geofence.id, geofence.kind, geofence.group, geofence.dwell_s) == (
        fence["id"],
        "authorized",
        "sp",
        30,
    )
    assert isinstance(geofence.shape, Polygon)
    assert geofence.signed_distance_m(-23.55, -46.63) < 0
    assert geofence.applies_to("XYZ9A87", ["sp"]) and not geofence.applies_to("XYZ9A87", [])
    (plan,) = seen.plans
    assert (plan.every_km, plan.vehicles) == (10_000, frozenset({"ABC1D23"}))

    await client.patch(f"/api/v1/geofences/{fence['id']}", json={"circle": DEPOT}, headers=auth())
    (geofence,) = (await rules.for_tenant("acme")).geofences
    assert geofence.shape == Circle(**DEPOT)
    await client.delete(f"/api/v1/geofences/{fence['id']}", headers=auth())
    assert (await rules.for_tenant("acme")).geofences == ()
    assert (await rules.for_tenant("globex")).plans == ()


async def test_a_recorded_service_is_queued_for_the_vehicles_fold(client: Client) -> None:
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    plan = await post(client, "/api/v1/maintenance-plans", {"name": "oil", "every_km": 10_000})
    recorded = await post(
        client,
        "/api/v1/entities/vehicle/ABC1D23/services",
        {"km": 10_120.5, "at": "2026-11-30T09:00:00-03:00", "plan": "oil"},
        status=202,
    )
    assert recorded["vehicle"] == {"id": vehicle["id"], "plate": "ABC1D23"}
    assert (recorded["km"], recorded["plan"]) == (10_120.5, plan["id"])
    # no body: every plan, the odometer as the plans saw it, now
    await post(client, f"/api/v1/entities/vehicle/{vehicle['id']}/services", None, status=202)

    store = client.app[services_key].store
    first, second = await inbox_items(store, "acme", vehicle["id"], "service")
    assert (first["km"], first["plan"]) == (10_120.5, plan["id"])
    assert first["at"].isoformat() == "2026-11-30T12:00:00+00:00"
    assert "km" not in second and "plan" not in second


async def test_a_bad_service_is_refused_and_nothing_is_queued(client: Client) -> None:
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    path = "/api/v1/entities/vehicle/ABC1D23/services"
    for body, pointer in [
        ({"plan": "no-such-plan"}, "/plan"),
        ({"km": -1}, "/km"),
        ({"at": "2999-01-01T00:00:00Z"}, "/at"),
        ({"at": "yesterday"}, "/at"),
        ({"at": "0001-01-01T00:00:00+01:00"}, "/at"),
        ({"at": "2026-11-30T09:00:00"}, "/at"),
        ({"odometer": 5}, "/odometer"),
    ]:
        refused = await problem(client, "POST", path, body)
        assert pointers(refused) == [pointer], (body, refused)
    await problem(client, "POST", "/api/v1/entities/vehicle/XYZ9A87/services", {}, 404)
    store = client.app[services_key].store
    assert await inbox_items(store, "acme", vehicle["id"], "service") == []


async def test_a_service_dated_out_of_bounds_is_refused_with_its_real_reason(
    client: Client,
) -> None:
    """A service before 2000 (a two-digit year read as year 26) would make every plan due at
    once; year 9999 at a negative offset is past the calendar in UTC, yet it is the future."""
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    path = "/api/v1/entities/vehicle/ABC1D23/services"
    for at, keyword, words in [
        ("0026-12-01T10:00:00-03:00", "minimum", "at is before 2000 (0026-12-01)"),
        ("1999-12-31T12:00:00Z", "minimum", "at is before 2000"),
        ("9999-12-31T23:59:00-03:00", "maximum", "at is in the future"),
    ]:
        refused = await problem(client, "POST", path, {"at": at})
        [error] = refused["errors"]
        assert (error["pointer"], error["keyword"]) == ("/at", keyword), refused
        assert error["message"].startswith(words), refused
    await post(client, path, {"at": "2000-01-01T00:00:00Z"}, status=202)
    store = client.app[services_key].store
    assert len(await inbox_items(store, "acme", vehicle["id"], "service")) == 1


async def test_another_processs_change_is_seen_once_the_cache_expires(services: Services) -> None:
    now = [100.0]
    elsewhere = FleetRules(services.store, clock=lambda: now[0])  # another process's view
    assert (await elsewhere.for_tenant("acme")).geofences == ()
    await services.geofences.create("acme", {"name": "d", "kind": "authorized", "circle": DEPOT})
    now[0] += 1.9
    assert (await elsewhere.for_tenant("acme")).geofences == ()
    now[0] += 0.1
    (fence,) = (await elsewhere.for_tenant("acme")).geofences
    assert fence.name == "d"


async def test_a_refresh_compiles_again_only_the_fences_that_changed(services: Services) -> None:
    """Every two seconds the fold's rules are refreshed: a fence unchanged since is the one
    compiled before (its polygon of thousands of positions neither read nor built again), a
    fence edited is compiled as it is now, one created is added, one deleted is gone; in
    another process's view as in the one that changed them."""
    now = [100.0]
    elsewhere = FleetRules(services.store, clock=lambda: now[0])
    far = {**DEPOT, "lat": -22.9}
    kept = await services.geofences.create(
        "acme", {"name": "k", "kind": "authorized", "circle": DEPOT}
    )
    edited = await services.geofences.create(
        "acme", {"name": "e", "kind": "authorized", "circle": DEPOT}
    )
    gone = await services.geofences.create(
        "acme", {"name": "g", "kind": "authorized", "circle": DEPOT}
    )
    first = {f.name: f for f in (await elsewhere.for_tenant("acme")).geofences}
    await services.geofences.update("acme", str(edited["_id"]), {"circle": far})
    await services.geofences.delete("acme", str(gone["_id"]))
    await services.geofences.create("acme", {"name": "n", "kind": "authorized", "circle": DEPOT})
    now[0] += 2
    second = {f.name: f for f in (await elsewhere.for_tenant("acme")).geofences}
    assert list(second) == ["k", "e", "n"]  # oldest first, as before
    assert second["k"] is first["k"] and str(kept["_id"]) == second["k"].id
    assert second["e"] is not first["e"] and second["e"].shape == Circle(-22.9, -46.6333, 800)
    now[0] += 2
    third = {f.name: f for f in (await elsewhere.for_tenant("acme")).geofences}
    assert all(third[name] is second[name] for name in third)
    assert (await elsewhere.for_tenant("other")).geofences == ()  # another tenant's none


async def test_a_rules_plates_are_accepted_exactly_when_the_documented_pattern_says(
    client: Client,
) -> None:
    """The API document's pattern for a rule's `vehicles` and the server agree: every plate
    the server takes (any case, dashes and spaces anywhere, whitespace around) matches the
    pattern, and every one it refuses does not (so schemathesis finds neither a valid body
    refused nor an invalid one taken). Before, the pattern allowed one dash after the
    letters only: `ABC 1D23` and `A-BC1D23`, taken by the server, were outside it."""
    document = await (await client.get("/openapi.json")).json()
    body = document["paths"]["/api/v1/geofences"]["post"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    pattern = re.compile(schema["properties"]["vehicles"]["items"]["pattern"])
    samples = ["ABC1D23", "abc-1234", "ABC 1D23", "A-BC1D23", " - A B C 1 2 3 4 - ",
               "\tABC1D23\n", "ABC1D23\x1c", "ABC\t1D23", "ABC1D23\xa0", "ABC-12345",
               "AB1D23", "ABC1DD3", "ÁBC1D23", "ABC1D2-3", "--ABC1D23--", "ABC1D23x",
               "ABC\u20131D23", "ABC.1D23", "ABC\u200b1D23", "\u2028ABC1D23"]  # fmt: skip
    rng = random.Random(7)
    alphabet = "AbZ09- \t\n\x1f\xa0\u2013\u202f./_"
    for _ in range(24):
        plate = list("ABC1D23")
        for _ in range(rng.randint(1, 3)):
            plate.insert(rng.randint(0, len(plate)), rng.choice(alphabet))
        samples.append("".join(plate))
    for i, plate in enumerate(samples):
        fence = {"name": f"f{i}", "kind": "authorized", "circle": DEPOT, "vehicles": [plate]}
        response = await client.post("/api/v1/geofences", json=fence, headers=auth())
        documented = pattern.search(plate) is not None
        assert response.status == (201 if documented else 422), (plate, await response.text())


async def test_a_polygon_fence_becomes_a_circle_when_the_patch_clears_the_polygon(
    client: Client,
) -> None:
    fence = await post(
        client, "/api/v1/geofences", {"name": "patio", "kind": "authorized", "polygon": SQUARE}
    )
    path = f"/api/v1/geofences/{fence['id']}"
    changed = await client.patch(path, json={"circle": DEPOT, "polygon": None}, headers=auth())
    body = await changed.json()
    assert changed.status == 200, body
    assert body["circle"] == DEPOT and "polygon" not in body
    # clearing a circle fence's absent polygon keeps the circle; clearing its only shape is
    # refused, the fence unchanged
    kept = await client.patch(path, json={"polygon": None, "margin_m": 40}, headers=auth())
    assert kept.status == 200 and (await kept.json())["circle"] == DEPOT
    refused = await problem(client, "PATCH", path, {"circle": None})
    assert pointers(refused) == ["/circle"]
    stored = await (await client.get(path, headers=auth())).json()
    assert (stored["circle"], stored["margin_m"]) == (DEPOT, 40)


NO_DWELL = {"dwell_seconds": 0}


def ring_around(lat: float, lon: float, radius_deg: float, positions: int) -> list[list[float]]:
    """A closed ring of `positions` positions (the last repeating the first) round a point."""
    corners = positions - 1
    ring = [
        [
            lon + radius_deg * math.cos(2 * math.pi * k / corners),
            lat + radius_deg * math.sin(2 * math.pi * k / corners),
        ]
        for k in range(corners)
    ]
    return [*ring, ring[0]]


def _stored_rule(name: str, tenant: str = "acme", **fields: Any) -> Doc:
    """A rule as the API stores it, for seeding many at once (thousands over HTTP take
    minutes)."""
    now = as_stored(datetime.now(UTC))
    return {
        "_id": new_id(),
        "tenant": tenant,
        "name": name,
        "vehicles": None,
        "group": None,
        **fields,
        "rev": 1,
        "created_at": now,
        "updated_at": now,
    }


def _far_fence(i: int) -> Doc:
    """A small authorized circle in another city, for another plate."""
    circle = {"lat": -3.0, "lon": -60.0 + i * 1e-4, "radius_m": 5}
    return _stored_rule(
        f"far-{i}", kind="authorized", circle=circle, vehicles=["ZZZ9Z99"], margin_m=25, **NO_DWELL
    )


async def test_a_rule_past_the_tenants_limit_is_refused_naming_the_limit(
    client: Client,
) -> None:
    db = client.app[services_key].store.db
    await _insert_all(db["geofences"], [_far_fence(i) for i in range(MAX_RULES - 1)])
    last = await post(
        client, "/api/v1/geofences", {"name": "Pedreira", "kind": "restricted", "circle": DEPOT}
    )
    refused = await problem(
        client,
        "POST",
        "/api/v1/geofences",
        {"name": "Pedreira 2", "kind": "restricted", "circle": DEPOT},
        status=409,
    )
    assert refused["limit"] == MAX_RULES == 5_000
    assert "5,000" in refused["detail"] and "geofence" in refused["detail"]
    missing = await client.get("/api/v1/geofences/Pedreira 2", headers=auth())
    assert missing.status == 404  # nothing kept
    # At the limit a rule is still changed, and another tenant's count is its own.
    changed = await client.patch(
        f"/api/v1/geofences/{last['id']}", json={"margin_m": 50}, headers=auth()
    )
    assert changed.status == 200, await changed.text()
    other = await client.post(
        "/api/v1/geofences",
        json={"name": "Pedreira", "kind": "restricted", "circle": DEPOT},
        headers=auth("other"),
    )
    assert other.status == 201, await other.text()
    # Maintenance plans alike.
    plans = [_stored_rule(f"plan-{i}", every_km=10_000, start_km=0) for i in range(MAX_RULES)]
    await _insert_all(db["maintenance_plans"], plans)
    refused = await problem(
        client, "POST", "/api/v1/maintenance-plans", {"name": "óleo", "every_km": 5000}, 409
    )
    assert refused["limit"] == MAX_RULES
    assert "maintenance plan" in refused["detail"]


async def test_every_stored_rule_is_folded_even_past_the_limit(client: Client) -> None:
    """Two creates racing past the limit, or rules kept from before it, are evaluated: the
    fold reads every rule, not a first 5,000."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    lat, lon = PAULISTA
    quarry = {"lat": lat, "lon": lon + 0.03, "radius_m": 500}
    fences = [_far_fence(i) for i in range(MAX_RULES)]
    fences.append(
        _stored_rule("Pedreira", kind="restricted", circle=quarry, margin_m=25, **NO_DWELL)
    )
    await _insert_all(client.app[services_key].store.db["geofences"], fences)
    traccar = await _traccar_trigger(client)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    for i, east in enumerate((0.0, 0.03, 0.03, 0.0)):
        point = TrackPoint(t0 + timedelta(seconds=120 * i), lat, lon + east)
        await send_to(client, traccar, _forward(point))
    await _fold_and_drain(client)
    entered = (await get(client, "/api/v1/events?type=vehicle.geofence.entered"))["items"]
    assert [e["detail"]["geofence"]["name"] for e in entered] == ["Pedreira"]


async def test_a_tenant_past_the_positions_limit_may_change_what_adds_no_position(
    client: Client,
) -> None:
    """Outlines stored before the limit (52,000 positions): a rename, a circle, a simpler
    outline are taken; what adds positions is still refused."""
    full = MAX_POSITIONS
    outlines = [
        _stored_rule(
            f"outline-{i}",
            kind="restricted",
            polygon={
                "type": "Polygon",
                "coordinates": [ring_around(-23.5 + i * 0.05, -46.6, 0.01, full)],
            },
            margin_m=25,
            **NO_DWELL,
        )
        for i in range(MAX_TENANT_POSITIONS // full + 1)
    ]
    depot = _stored_rule("depot", kind="authorized", circle=DEPOT, margin_m=25, **NO_DWELL)
    await _insert_all(client.app[services_key].store.db["geofences"], [*outlines, depot])
    renamed = await client.patch(
        f"/api/v1/geofences/{depot['_id']}", json={"name": "depot 2"}, headers=auth()
    )
    assert renamed.status == 200, await renamed.text()
    await post(client, "/api/v1/geofences", {"name": "yard", "kind": "authorized", "circle": DEPOT})
    simpler = {"type": "Polygon", "coordinates": [ring_around(-23.5, -46.6, 0.01, 100)]}
    shrunk = await client.patch(
        f"/api/v1/geofences/{outlines[0]['_id']}", json={"polygon": simpler}, headers=auth()
    )
    assert shrunk.status == 200, await shrunk.text()  # 50,100 positions: fewer, still over
    more = {"type": "Polygon", "coordinates": [ring_around(-23.5, -46.6, 0.01, 200)]}
    grown = await problem(
        client, "PATCH", f"/api/v1/geofences/{outlines[0]['_id']}", {"polygon": more}, status=409
    )
    assert "50,200 positions" in grown["detail"]
    await problem(
        client,
        "POST",
        "/api/v1/geofences",
        {"name": "one more", "kind": "authorized", "polygon": SQUARE},
        status=409,
    )


async def test_a_tenants_polygon_positions_are_limited_in_all(client: Client) -> None:
    full = MAX_POSITIONS  # 2,000, the most one polygon has
    outlines = MAX_TENANT_POSITIONS // full - 1
    stored = [
        _stored_rule(
            f"outline-{i}",
            kind="authorized",
            polygon={
                "type": "Polygon",
                "coordinates": [ring_around(-23.0, -46.0, 0.1 + i * 1e-3, full)],
            },
            margin_m=25,
            **NO_DWELL,
        )
        for i in range(outlines)
    ]
    await _insert_all(client.app[services_key].store.db["geofences"], stored)
    big = {"type": "Polygon", "coordinates": [ring_around(-23.0, -46.0, 0.5, full)]}
    last = await post(
        client, "/api/v1/geofences", {"name": "last", "kind": "authorized", "polygon": big}
    )  # exactly the limit
    refused = await problem(
        client,
        "POST",
        "/api/v1/geofences",
        {"name": "one more", "kind": "authorized", "polygon": SQUARE},
        status=409,
    )
    assert refused["limit"] == MAX_TENANT_POSITIONS == 50_000
    assert "50,005 positions" in refused["detail"]
    circle = await post(
        client, "/api/v1/geofences", {"name": "depot", "kind": "authorized", "circle": DEPOT}
    )  # a circle has no corners to walk
    grown = await problem(
        client, "PATCH", f"/api/v1/geofences/{circle['id']}", {"polygon": SQUARE}, status=409
    )
    assert grown["limit"] == MAX_TENANT_POSITIONS
    kept = await get(client, f"/api/v1/geofences/{circle['id']}")
    assert kept["circle"] == DEPOT and kept.get("polygon") is None
    # Simplifying an outline makes room.
    simpler = await client.patch(
        f"/api/v1/geofences/{last['id']}", json={"polygon": SQUARE}, headers=auth()
    )
    assert simpler.status == 200, await simpler.text()
    await post(
        client, "/api/v1/geofences", {"name": "one more", "kind": "authorized", "polygon": SQUARE}
    )


TAVEUNI = {
    "type": "MultiPolygon",
    "coordinates": [
        [[[179.8, -16.95], [180.0, -16.95], [180.0, -16.7], [179.8, -16.7], [179.8, -16.95]]],
        [[[-180.0, -16.95], [-179.8, -16.95], [-179.8, -16.7], [-180.0, -16.7], [-180.0, -16.95]]],
    ],
}


async def test_an_area_across_the_antimeridian_is_a_multipolygon_fence_read_back_as_stored(
    client: Client,
) -> None:
    """RFC 7946 §3.1.9's answer for an area across 180°, its halves cut there in one
    MultiPolygon, is one fence, read back as it was written, and the document's request
    schema takes it (and a GeoJSON Feature neither). A MultiPolygon was refused (`422` on
    `/polygon/type`), and the docs said to cut such an area in two fences, each of which
    alerts at the cut."""
    body = {"name": "Taveuni", "kind": "authorized", "polygon": TAVEUNI}
    created = await post(client, "/api/v1/geofences", body)
    assert created["polygon"] == TAVEUNI
    read = await get(client, f"/api/v1/geofences/{created['id']}")
    assert read["polygon"] == TAVEUNI
    doc = await (await client.get("/openapi.json")).json()
    create = doc["paths"]["/api/v1/geofences"]["post"]["requestBody"]["content"]
    schema = jsonschema_rs.validator_for(create["application/json"]["schema"])
    assert schema.is_valid(body)
    assert not schema.is_valid({**body, "polygon": {"type": "Feature", "geometry": TAVEUNI}})
    patched = await client.patch(
        f"/api/v1/geofences/{created['id']}", json={"polygon": SQUARE}, headers=auth()
    )
    assert patched.status == 200 and (await patched.json())["polygon"] == SQUARE


async def test_a_bad_multipolygon_is_refused_naming_its_polygon(client: Client) -> None:
    west, east = TAVEUNI["coordinates"]
    ring = SQUARE["coordinates"][0]
    cases: list[tuple[Any, str, str]] = [
        ([west, [east[0][:-1]]], "/polygon/coordinates/1/0", "does not close"),
        ([[ring], [ring]], "/polygon/coordinates/1", "cross or touch"),
        ([west, west], "/polygon/coordinates/1", "cross or touch"),
        ([], "/polygon/coordinates", "non-empty"),
    ]
    for coordinates, pointer, words in cases:
        polygon = {"type": "MultiPolygon", "coordinates": coordinates}
        body = {"name": "bad", "kind": "authorized", "polygon": polygon}
        refused = await problem(client, "POST", "/api/v1/geofences", body)
        assert pointers(refused) == [pointer], (coordinates, refused)
        assert words in refused["errors"][0]["message"], refused
    listed = await (await client.get("/api/v1/geofences", headers=auth())).json()
    assert listed["items"] == []


async def test_a_multipolygons_every_ring_counts_against_the_positions_limit(
    client: Client,
) -> None:
    """24 outlines of 2,000 positions stored, and a MultiPolygon of two polygons of 1,000
    (one with a hole of 100): exactly the 50,000. Every ring of every polygon counts, as it
    is walked: one more square is refused, naming 50,005. Its polygons were counted as one
    position each."""
    full = MAX_POSITIONS
    stored = [
        _stored_rule(
            f"outline-{i}",
            kind="authorized",
            polygon={
                "type": "Polygon",
                "coordinates": [ring_around(-23.0, -46.0, 0.1 + i * 1e-3, full)],
            },
            margin_m=25,
            **NO_DWELL,
        )
        for i in range(MAX_TENANT_POSITIONS // full - 1)
    ]
    await _insert_all(client.app[services_key].store.db["geofences"], stored)
    two = {
        "type": "MultiPolygon",
        "coordinates": [
            [ring_around(-20.0, -40.0, 0.1, 1000)],
            [ring_around(-20.0, -41.0, 0.2, 900), ring_around(-20.0, -41.0, 0.1, 100)[::-1]],
        ],
    }
    await post(client, "/api/v1/geofences", {"name": "two", "kind": "authorized", "polygon": two})
    refused = await problem(
        client,
        "POST",
        "/api/v1/geofences",
        {"name": "one more", "kind": "authorized", "polygon": SQUARE},
        status=409,
    )
    assert "50,005 positions" in refused["detail"], refused


async def test_creates_sent_at_once_never_take_the_tenant_past_its_positions_limit(
    client: Client,
) -> None:
    """Six outlines sent at once where one fits (an import script, two admins): each create
    checks the tenant's room and stores in its turn, so one is taken and five refused."""
    full = MAX_POSITIONS
    stored = [
        _stored_rule(
            f"outline-{i}",
            kind="authorized",
            polygon={
                "type": "Polygon",
                "coordinates": [ring_around(-23.0, -46.0, 0.1 + i * 1e-3, full)],
            },
            margin_m=25,
            **NO_DWELL,
        )
        for i in range(MAX_TENANT_POSITIONS // full - 1)
    ]
    await _insert_all(client.app[services_key].store.db["geofences"], stored)

    async def create(k: int) -> tuple[int, str]:
        outline = {"type": "Polygon", "coordinates": [ring_around(-22.0, -46.0, 0.1 + k, full)]}
        body = {"name": f"race-{k}", "kind": "authorized", "polygon": outline}
        response = await client.post("/api/v1/geofences", json=body, headers=auth())
        return response.status, await response.text()

    answers = await asyncio.gather(*(create(k) for k in range(6)))
    # One stored; the others refused past the limit (409), or asked to retry when their
    # turn did not come within 5 s under load (503 busy, docs/api.md): never two taken.
    statuses = sorted(status for status, _ in answers)
    assert statuses.count(201) == 1 and set(statuses) <= {201, 409, 503}, answers
    assert all("/busy" in text for status, text in answers if status == 503), answers
    docs = await client.app[services_key].store.db["geofences"].find().to_list(None)
    assert sum(len(ring) for d in docs for ring in d["polygon"]["coordinates"]) <= 50_000
