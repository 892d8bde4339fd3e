"""GET/PUT /api/v1/fleet/settings: a tenant's quality gates, odometer rules and retention."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway import clock
from gateway.fleet.odometer import TrackPoint
from gateway.web.state import services_key
from tests.partner_double import create_vehicle
from tests.support import auth
from tests.test_fleet_fold import append
from tests.test_fleet_odometer import START


async def test_settings_start_at_their_documented_defaults(client: Any) -> None:
    response = await client.get("/api/v1/fleet/settings", headers=auth())
    assert response.status == 200
    body = await response.json()
    assert body["quality"]["max_speed_kmh"] == 300
    assert body["quality"]["future_tolerance_s"] == 300
    assert body["odometer"]["precedence"] == ["reading", "device"]
    assert body["retention_days"] == 90


async def test_bad_settings_are_refused_with_every_problem_and_change_nothing(
    client: Any,
) -> None:
    bad = {
        "quality": {"max_speed_kmh": 0, "nonsense": 1},
        "odometer": {"precedence": ["gps", "gps"]},
        "retention_days": 0,
    }
    response = await client.put("/api/v1/fleet/settings", json=bad, headers=auth())
    assert response.status == 422
    pointers = {e["pointer"] for e in (await response.json())["errors"]}
    assert pointers == {
        "/quality/max_speed_kmh",
        "/quality/nonsense",
        "/odometer/precedence",
        "/retention_days",
    }
    body = await (await client.get("/api/v1/fleet/settings", headers=auth())).json()
    assert body["quality"]["max_speed_kmh"] == 300


async def test_each_refused_setting_names_the_keyword_it_fails(client: Any) -> None:
    """SPEC §3: a problem carries the JSON Schema keyword that failed, as the fix and
    geofence routes' do: below the minimum `minimum`, above the maximum `maximum`, text or a
    fraction where an integer goes `type`. Before, every one said `maximum`."""
    cases = [
        ({"retention_days": 0}, "/retention_days", "minimum"),
        ({"retention_days": 91}, "/retention_days", "maximum"),
        ({"retention_days": "30"}, "/retention_days", "type"),
        ({"quality": {"max_speed_kmh": 5}}, "/quality/max_speed_kmh", "minimum"),
        ({"quality": {"max_speed_kmh": 5000}}, "/quality/max_speed_kmh", "maximum"),
        ({"quality": {"duplicate_s": "1"}}, "/quality/duplicate_s", "type"),
        ({"quality": {"relocate_after": 2.5}}, "/quality/relocate_after", "type"),
        ({"quality": {"max_accuracy_m": True}}, "/quality/max_accuracy_m", "type"),
        ({"odometer": {"hold_hours": -1}}, "/odometer/hold_hours", "minimum"),
    ]
    for body, pointer, keyword in cases:
        response = await client.put("/api/v1/fleet/settings", json=body, headers=auth())
        assert response.status == 422, body
        errors = (await response.json())["errors"]
        assert [(e["pointer"], e["keyword"]) for e in errors] == [(pointer, keyword)], body


async def test_a_tenants_gates_apply_to_its_vehicles_only(client: Any) -> None:
    put = await client.put(
        "/api/v1/fleet/settings",
        json={"quality": {"max_speed_kmh": 50}, "retention_days": 30},
        headers=auth(),
    )
    assert put.status == 200
    assert (await put.json())["quality"]["max_speed_kmh"] == 50
    other = await (await client.get("/api/v1/fleet/settings", headers=auth("globex"))).json()
    assert other["quality"]["max_speed_kmh"] == 300
    viewer = await client.put("/api/v1/fleet/settings", json={}, headers=auth(role="viewer"))
    assert viewer.status == 403
    services = client.app[services_key]
    vehicle = await create_vehicle(client, "RBT3C45")
    # 1 km in 36 s is 100 km/h: over this tenant's 50.
    a = TrackPoint(START, -23.55, -46.63, 5.0)
    b = TrackPoint(START + timedelta(seconds=36), -23.541, -46.63, 5.0)
    await append(services, vehicle["id"], [a, b])
    await services.fold.run_until_idle()
    track = await services.store.positions.track("acme", vehicle["id"], None, None, None, 5)
    assert [doc.get("rejected") for doc in track] == [None, "impossible_speed"]


async def test_a_shorter_retention_drops_only_that_tenants_old_fixes(client: Any) -> None:
    services = client.app[services_key]
    put = await client.put("/api/v1/fleet/settings", json={"retention_days": 7}, headers=auth())
    assert put.status == 200
    positions = services.store.db["positions"]
    now = datetime.now(UTC)
    for tenant, days in (("acme", 8), ("acme", 6), ("globex", 8)):
        # Fixes that arrived `days` ago (written as the append would have then).
        await positions.insert_one(
            {"tenant": tenant, "vehicle": "v1", "t": now - timedelta(days=days),
             "at": now - timedelta(days=days), "lat": -23.5, "lon": -46.6, "source": "test"}
        )  # fmt: skip
    assert await services.fold.purge_expired() == 1
    left = sorted((d["tenant"], (now - d["at"]).days) for d in await positions.find().to_list(None))
    assert left == [("acme", 6), ("globex", 8)]


async def test_a_step_of_the_servers_clock_purges_no_fix_before_its_tenants_retention(
    client: Any, gateway_time: Callable[[datetime], None]
) -> None:
    """The database server's clock steps 2 days forward (the next reading follows it): the
    TTL expiry holds back (clockfix), and so does the hourly purge of a tenant's shorter
    retention, which cut at the stepped time and dropped a 6-day-old fix of a tenant keeping
    them 7 for good."""
    services = client.app[services_key]
    put = await client.put("/api/v1/fleet/settings", json={"retention_days": 7}, headers=auth())
    assert put.status == 200
    positions = services.store.db["positions"]
    now = clock.utcnow()
    gateway_time(now)
    await positions.insert_one(
        {"tenant": "acme", "vehicle": "v1", "t": now - timedelta(days=6),
         "at": now - timedelta(days=6), "lat": -23.5, "lon": -46.6, "source": "test"}
    )  # fmt: skip
    await services.store.expiry.expire()  # a pass on the right time
    gateway_time(now + timedelta(days=2))

    assert await services.store.expiry.expire() == 0
    assert await services.fold.purge_expired() == 0
    assert await positions.count_documents({"tenant": "acme"}) == 1


async def test_integer_settings_take_integral_numbers_as_json_schema_does(client: Any) -> None:
    """3.0 is an integer for JSON Schema (the OpenAPI document says `integer`): taken as 3;
    3.5 is not."""
    body = {"retention_days": 3.0, "quality": {"relocate_after": 4.0}}
    response = await client.put("/api/v1/fleet/settings", json=body, headers=auth())
    assert response.status == 200, await response.text()
    settings = await response.json()
    assert (settings["retention_days"], settings["quality"]["relocate_after"]) == (3, 4)
    response = await client.put(
        "/api/v1/fleet/settings", json={"retention_days": 3.5}, headers=auth()
    )
    assert response.status == 422
