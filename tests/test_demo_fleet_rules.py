"""The demo's geofence and maintenance plan: seeded once, and set so that scenarios 1 and 2
can fire with the demo's own vehicles and positions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.demo import GEOFENCES, PLANS, seed_entities, seed_fleet_rules
from gateway.fleet import geofences, maintenance
from gateway.fleet.geometry import circle_from
from gateway.services import Services
from gateway.web.demo_partner import SECONDS_PER_RECORD, record


async def test_the_demo_rules_are_seeded_once_and_watch_the_sao_paulo_vehicles(
    services: Services,
) -> None:
    await seed_entities(services.entities, "demo")
    assert await seed_fleet_rules(services.geofences, services.maintenance_plans, "demo") == 2
    assert await seed_fleet_rules(services.geofences, services.maintenance_plans, "demo") == 0
    rules = await services.fleet_rules.for_tenant("demo")
    (fence,) = rules.geofences
    (plan,) = rules.plans
    car = await services.entities.get("demo", "vehicle", "ABC1D23")
    groups = [car["data"]["group"]]
    assert fence.kind == "authorized" and fence.applies_to("ABC1D23", groups)
    assert plan.applies_to("ABC1D23", groups)
    # the Traccar sample's position (ABC1D23 on Avenida Paulista) is well inside the area
    assert fence.signed_distance_m(-23.56118, -46.65578) < -1_000


def test_the_demo_geotab_devices_start_inside_and_drift_out_of_the_area() -> None:
    spec = GEOFENCES[0]
    fence = geofences.Geofence(
        "f", spec["name"], spec["kind"], circle_from(spec["circle"]), dwell_s=spec["dwell_seconds"]
    )
    device = "b3A"  # XYZ9876's tracker, in the sao-paulo group
    state: geofences.FenceState | None = None
    crossings: list[tuple[str, int]] = []
    for n in range(1, 400):
        fix = record(n)
        if fix["device"]["id"] != device:
            continue
        at = datetime.fromisoformat(fix["dateTime"])
        state, crossing = geofences.step(fence, state, fix["latitude"], fix["longitude"], None, at)
        if crossing is not None:
            crossings.append((crossing.kind, n))
    assert state is not None
    (kind, n), *_ = crossings
    assert kind == "exited"
    assert n * SECONDS_PER_RECORD < 30 * 60  # within the first half hour of the demo


def test_the_demo_plan_falls_due_after_five_km_of_driving() -> None:
    spec = PLANS[0]
    plan = maintenance.Plan(
        "p",
        spec["name"],
        spec["every_km"],
        spec["due_soon_km"],
        spec["every_days"],
        spec["start_km"],
        group=spec["group"],
    )
    now = datetime(2026, 12, 1, tzinfo=UTC)
    state, dues = maintenance.step(plan, None, 18_250.0, now)  # ABC1D23's odometer
    assert dues == []
    state, dues = maintenance.step(plan, state, 18_254.9, now + timedelta(minutes=5))
    assert dues == []
    _, dues = maintenance.step(plan, state, 18_255.2, now + timedelta(minutes=6))
    assert [(d.kind, d.due_km) for d in dues] == [("due", 18_255)]
