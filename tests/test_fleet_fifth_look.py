"""The fold on an outside tester's findings (fifth look): a register's all-ones odometer sent
on fixes in a row or as a vehicle's first value, a plan by km and days on a vehicle past its
first km cycle, rules naming plates spelled otherwise than the vehicle's. Everything through
HTTP to the app and the real database, the fold run as it runs (docs/fleet.md)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.web.state import services_key
from tests import tracks
from tests.flow_support import sample
from tests.partner_double import create_action, create_partner, create_subscription
from tests.support import auth
from tests.test_fleet_third_look import drive, events
from tests.test_fleet_tracks import fold, new_vehicle, vehicle, whole_track
from tests.triggers_support import Client, create_position_trigger, hook, upload_shipped

TENANT = "acme"
ALL_ONES_KM = 4_294_967.295
SIGNED_MAX_KM = 2_147_483.647  # a signed register's largest value, 2**31 - 1 m


async def post_folding(
    client: Client, trigger: dict[str, Any], fixes: list[dict[str, Any]], size: int
) -> None:
    for i in range(0, len(fixes), size):
        status, answer = await hook(client, trigger, fixes[i : i + size])
        assert status == 200 and answer["summary"]["failed"] == 0, answer
        await fold(client)


async def create_plan(client: Client, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/maintenance-plans", json=body, headers=auth())
    assert response.status == 201, await response.text()
    return dict(await response.json())


# -- a register's all-ones ---------------------------------------------------------------------


@pytest.mark.parametrize("glitch", [ALL_ONES_KM, 4_294_967.3, SIGNED_MAX_KM, 2_147_483.6])
async def test_a_registers_all_ones_or_signed_max_on_two_fixes_in_a_row_is_no_new_unit(
    client: Client, glitch: float
) -> None:
    """The register reads 150,000 km and 0.1 km more each fix; two fixes in a row carry the
    all-ones value, or a signed register's largest (as sent, or rounded to 0.1 km). They
    agree with each other, which for any other jump means another unit: not for this value.
    The vehicle's odometer follows the register to its end, no re-baseline goes to the
    sentinel, no plan comes due there, the register's later values are taken (none is
    `device_behind`), and the two are counted. Before, the vehicle stayed at 4,294,970 km
    (2,147,483 km) for good."""
    await create_plan(client, name="Oleo", every_km=10000, due_soon_km=500)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "GLT1A11")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    fixes = drive("GLT1A11", start, (-23.5, -46.6), 60)
    for i, fix in enumerate(fixes):
        fix["odometer_km"] = ALL_ONES_KM if i in (30, 31) else round(150_000 + 0.1 * i, 1)
    fixes[30]["odometer_km"] = fixes[31]["odometer_km"] = glitch
    await post_folding(client, trigger, fixes, 5)
    car = await vehicle(client, "GLT1A11")
    assert car["odometer_km"] == pytest.approx(150_005.9, abs=0.01)
    rebased = await events(client, "vehicle.odometer.rebaselined")
    assert [e["detail"]["to_km"] for e in rebased] == [150_000.0]
    assert await events(client, "vehicle.maintenance.due") == []
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_fleet_readings_total{outcome="device_glitch"} 2.0' in metrics
    assert 'outcome="device_behind"' not in metrics


@pytest.mark.parametrize("glitch", [ALL_ONES_KM, SIGNED_MAX_KM])
async def test_a_registers_all_ones_or_signed_max_as_a_vehicles_first_device_value_sets_nothing(
    client: Client, glitch: float
) -> None:
    """A vehicle registered without an odometer: its tracker's first value is the all-ones
    (or a signed register's largest).
    The first real value after it sets the count (as a first value does); the all-ones never
    shows. Before, the vehicle counted on from 4,294,967 km (2,147,483 km)."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "GLT2A11")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    fixes = drive("GLT2A11", start, (-23.5, -46.6), 40)
    for i, fix in enumerate(fixes):
        fix["odometer_km"] = glitch if i == 0 else round(150_000 + 0.1 * i, 1)
    await post_folding(client, trigger, fixes, 5)
    car = await vehicle(client, "GLT2A11")
    assert car["odometer_km"] == pytest.approx(150_003.9, abs=0.01)
    rebased = await events(client, "vehicle.odometer.rebaselined")
    assert [(e["detail"]["to_km"], e["detail"]["source"]) for e in rebased] == [
        (150_000.1, "device")
    ]


# -- a plan by km and days ---------------------------------------------------------------------


async def maintenance_events(client: Client) -> list[tuple[str, str, Any, datetime, str]]:
    found = await events(client, "vehicle.maintenance.due_soon")
    found += await events(client, "vehicle.maintenance.due")
    found.sort(key=lambda e: (e["occurred_at"], e["type"], e["data"]["plate"]))
    return [
        (e["type"].rsplit(".", 1)[1], e["data"]["plate"], e["detail"]["due_km"],
         e["detail"]["due_at"], e["detail"]["reason"])
        for e in found
    ]  # fmt: skip


async def test_a_plan_by_km_and_days_comes_due_by_time_far_past_its_first_km_cycle(
    client: Client,
) -> None:
    """The docs' plan, every 10,000 km or 180 days whichever comes first, on two parked
    vehicles with no service recorded: one at 5,000 km, one at 152,340 km (fifteen km cycles
    past `start_km` 0). The fold's clock ticks 170 and 181 days after the plan first saw them:
    both get due_soon and due by time, each with the next km due. Before, the vehicle at
    152,340 km got nothing (its time cycle counted only past its 15th km cycle, 7 years on)."""
    await new_vehicle(client, "LOW1A11", odometer_km=5000)
    await new_vehicle(client, "HIG1A11", odometer_km=152_340)
    await create_plan(
        client, name="Revisao", every_km=10000, due_soon_km=500, every_days=180, due_soon_days=15
    )
    services = client.app[services_key]
    await services.relay.run_until_idle()  # the registered odometers, as readings
    start = datetime.now(UTC).replace(microsecond=0)
    for days in (0, 170, 181):
        await services.store.fleet.push_ticks([TENANT], start + timedelta(days=days))
        await fold(client)
    found = await maintenance_events(client)
    assert [e[:3] + e[4:] for e in found] == [
        ("due_soon", "HIG1A11", 160_000, "time"),
        ("due_soon", "LOW1A11", 10_000, "time"),
        ("due", "HIG1A11", 160_000, "time"),
        ("due", "LOW1A11", 10_000, "time"),
    ]
    # (180 days from when the plan first saw each: its registered odometer, just before)
    for e in found:
        assert abs(start + timedelta(days=180) - e[3]) < timedelta(seconds=30)


async def test_a_shortened_interval_does_not_repeat_the_due_a_distance_due_covered(
    client: Client,
) -> None:
    """Every 1,000 km or 10 days, first seen (the fold's clock) 12 days ago; the odometer read
    at 1,000 km now: due by distance (day 10's time due with it, one service). The plan
    edited to every 5 days: the clock a day later announces nothing (day 12 is in the cycle
    ending on day 15), 8.5 days later the time due of day 20. Before, day 10 was announced
    again at once (the mark left at day 20 by the due read as a glitch past day 15).
    (Registered at 1 km: an odometer of 0 is unknown, and one then read would be the plan's
    first check by distance, announcing nothing behind it.)"""
    await new_vehicle(client, "INT1A11", odometer_km=1)
    services = client.app[services_key]
    await services.relay.run_until_idle()
    await fold(client)  # (the fold's own clock ticked: next in an hour)
    plan = await create_plan(client, name="p10", every_km=1000, every_days=10)
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=12)
    await services.store.fleet.push_ticks([TENANT], start)
    await fold(client)
    read = {"odometer_km": 1000}
    response = await client.patch("/api/v1/entities/vehicle/INT1A11", json=read, headers=auth())
    assert response.status == 200, await response.text()
    await services.relay.run_until_idle()
    await fold(client)
    path = f"/api/v1/maintenance-plans/{plan['id']}"
    response = await client.patch(path, json={"every_days": 5}, headers=auth())
    assert response.status == 200, await response.text()
    for days in (13, 20.5):
        await services.store.fleet.push_ticks([TENANT], start + timedelta(days=days))
        await fold(client)
    found = await maintenance_events(client)
    assert [e[:3] + e[4:] for e in found] == [
        ("due", "INT1A11", 1000, "distance"),
        ("due", "INT1A11", 2000, "time"),
    ]
    assert [e[3] for e in found] == [start + timedelta(days=20)] * 2


# -- rules naming plates spelled otherwise ------------------------------------------------------

CENTRE = (-23.55, -46.63)


async def create_rule(client: Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/api/v1/{path}", json=body, headers=auth())
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def leave_the_fence(client: Client, plate: str) -> None:
    """`plate` drives 3 km north from the fence's centre (60 fixes 50 m apart), folded."""
    trigger = await create_position_trigger(client)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    fixes = []
    for i in range(60):
        lat, lon = tracks.destination(*CENTRE, 0, 50 * (i + 1))
        t = (start + timedelta(seconds=5 * i)).isoformat()
        fixes.append({"plate": plate, "time": t, "lat": lat, "lon": lon, "speed_kmh": 36.0})
    status, answer = await hook(client, trigger, fixes)
    assert status == 200 and answer["summary"]["stored"] == 60, answer
    await fold(client)


FENCE = {"name": "base", "kind": "authorized", "circle": {"lat": CENTRE[0], "lon": CENTRE[1],
         "radius_m": 1500}}  # fmt: skip
PLAN = {"name": "p", "every_km": 1}


@pytest.mark.parametrize("spelling", ["OVL-3C33", "ovl3c33", "OVL3233"])
async def test_a_rule_naming_a_plate_in_another_spelling_or_its_twin_applies_to_the_vehicle(
    client: Client, spelling: str
) -> None:
    """A fence and a plan whose `vehicles` name vehicle OVL3C33 as `OVL-3C33`, `ovl3c33` or
    its old-plate twin OVL3233 (as fixes may name it): stored as a vehicle's plate is, they
    apply to it: one exit, and a due at each km. Before, they were stored as sent and never
    matched the vehicle."""
    await new_vehicle(client, "OVL3C33")
    fence = await create_rule(client, "geofences", {**FENCE, "vehicles": [spelling]})
    plan = await create_rule(client, "maintenance-plans", {**PLAN, "vehicles": [spelling]})
    stored = spelling.replace("-", "").upper()
    assert fence["vehicles"] == plan["vehicles"] == [stored]
    await leave_the_fence(client, "OVL3C33")
    assert len(await events(client, "vehicle.geofence.exited")) == 1
    assert [e["detail"]["due_km"] for e in await events(client, "vehicle.maintenance.due")] == [
        1,
        2,
    ]


async def test_a_rule_stored_before_with_a_plate_spelled_otherwise_applies_too(
    client: Client,
) -> None:
    """A fence and a plan stored before plates were normalised, naming `ovl-3c33` and the old
    twin `ovl-3233`: they apply to vehicle OVL3C33 all the same."""
    await new_vehicle(client, "OVL3C33")
    services = client.app[services_key]
    rules = services.store.fleet_rules
    fence = await create_rule(client, "geofences", {**FENCE, "vehicles": ["OVL3C33"]})
    plan = await create_rule(client, "maintenance-plans", {**PLAN, "vehicles": ["OVL3C33"]})
    for resources, rule, plate in ((rules.geofences, fence, "ovl-3c33"),
                                   (rules.plans, plan, "ovl-3233")):  # fmt: skip
        assert await resources.update(TENANT, rule["id"], 1, {"vehicles": [plate]}, [])
    services.fleet_rules.forget(TENANT)
    await leave_the_fence(client, "OVL3C33")
    assert len(await events(client, "vehicle.geofence.exited")) == 1
    assert len(await events(client, "vehicle.maintenance.due")) == 2


@pytest.mark.parametrize("path", ["geofences", "maintenance-plans"])
async def test_a_rule_naming_an_invalid_plate_is_a_422_naming_it(client: Client, path: str) -> None:
    body = {**(FENCE if path == "geofences" else PLAN), "vehicles": ["OVL3C33", "OVL-33"]}
    response = await client.post(f"/api/v1/{path}", json=body, headers=auth())
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert [e["pointer"] for e in problem["errors"]] == ["/vehicles/1"], problem
    assert "OVL-33" in problem["errors"][0]["message"], problem
    listed = await client.get(f"/api/v1/{path}", headers=auth())
    assert (await listed.json())["items"] == []


# -- minor -------------------------------------------------------------------------------------


async def test_a_service_without_km_counts_from_the_odometer_without_float_noise(
    client: Client,
) -> None:
    """A vehicle at 1,000 km on a plan every 5 km drives 3 km, a service is recorded without
    `km` (the odometer as the plan saw it, summed from GPS steps), then 13 km more: the dues
    after it are at 1,008 and 1,013 km exactly (before: 1008.0000000000068), and the route's
    answer writes its time as every fleet time is (`…Z`, not `+00:00`)."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "SRV2A11", odometer_km=1000)
    await create_plan(client, name="p5", every_km=5, due_soon_km=1)
    await client.app[services_key].relay.run_until_idle()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    fixes = drive("SRV2A11", start, (-23.5, -46.6), 161)
    await post_folding(client, trigger, fixes[:31], 31)
    response = await client.post(
        "/api/v1/entities/vehicle/SRV2A11/services",
        json={"at": fixes[30]["time"]},
        headers=auth(),
    )
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["at"] == (start + timedelta(seconds=300)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await post_folding(client, trigger, fixes[31:], 10)
    due = await events(client, "vehicle.maintenance.due")
    assert [e["detail"]["due_km"] for e in due] == [1008, 1013]


# -- late fixes --------------------------------------------------------------------------------


def round_trip(plate: str, start: datetime) -> list[dict[str, Any]]:
    """Parked 2 min at home, round a block 700 m by 200 m at 36 km/h (a fix 100 m on), parked
    2 min back home: a fix every 10 s, no speed nor accuracy (a tracker that sends neither)."""
    points = [(-23.5, -46.6)] * 12
    for bearing, steps in [(90, 7), (0, 2), (270, 7), (180, 2)]:
        for _ in range(steps):
            points.append(tracks.destination(*points[-1], bearing, 100))
    points += [points[-1]] * 11
    fixes = []
    for i, (lat, lon) in enumerate(points):
        at = (start + timedelta(seconds=10 * i)).isoformat()
        fixes.append({"plate": plate, "time": at, "lat": lat, "lon": lon})
    return fixes


@pytest.mark.parametrize("passes", [1, 3])
async def test_a_round_trip_uploaded_after_the_fix_back_home_counts_as_in_order(
    client: Client, passes: int
) -> None:
    """A tracker without speed sends its home fixes and the last one back home, then uploads
    the trip it buffered (in one request, or three each folded apart): the trip counts as in
    order (1.8 km), whatever the passes. A late fix judged by the in-order rules against the two
    home fixes was refused as a reflection (0 m), and by a history depending on the pass."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "ORD2A11")
    await new_vehicle(client, "LAT2A11")
    fixes = round_trip("ORD2A11", datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1))
    await post_folding(client, trigger, fixes, 20)
    late = [{**f, "plate": "LAT2A11"} for f in fixes]
    home, trip = late[:12] + late[-12:], late[12:-12]
    await post_folding(client, trigger, home, len(home))
    size = -(-len(trip) // passes)
    await post_folding(client, trigger, trip, size)
    in_order = float((await vehicle(client, "ORD2A11"))["odometer_km"])
    assert in_order == pytest.approx(1.8, abs=0.01)
    assert not [p["rejected"] for p in await whole_track(client, "ORD2A11") if p["rejected"]]
    assert float((await vehicle(client, "LAT2A11"))["odometer_km"]) == in_order


# -- device odometers that say nothing, or too much --------------------------------------------


@pytest.mark.parametrize("register", ["none", "zero", "traccar-zero", "frozen"])
async def test_a_device_odometer_of_0_or_stuck_at_one_value_leaves_the_gps_count(
    client: Client, register: str
) -> None:
    """Vehicles registered without an odometer drive 11.9 km (120 fixes 100 m apart); their
    trackers send no odometer, `odometer_km` 0 on every fix (the canonical fix, or Traccar's
    `attributes.odometer` 0 through the shipped `traccar-position`: a device without one), or
    a register stuck at 500 km. A 0 is no value (as for readings) and a value equal to the
    last one taken says nothing new (`device_unchanged`): the GPS count goes on, 11.9 km
    (511.9 from the stuck register). Before, each such value took the count back to itself
    and the vehicle stayed at 0.1 km (500.1) for good."""
    await upload_shipped(client, "traccar-position")
    canonical = await create_position_trigger(client)
    traccar = await create_position_trigger(client, name="traccar", mapping="traccar-position")
    await new_vehicle(client, "ZOD1A11")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    fixes = drive("ZOD1A11", start, (-19.92, -43.94), 120)
    if register == "traccar-zero":
        for fix in fixes:
            body = sample("traccar_position_forward.json")
            body["position"].update(fixTime=fix["time"], latitude=fix["lat"], speed=36 / 1.852)
            body["position"].update(longitude=fix["lon"])
            body["position"]["attributes"]["odometer"] = 0
            body["device"]["name"] = "ZOD1A11"
            status, answer = await hook(client, traccar, body)
            assert status == 201, answer
        await fold(client)
    else:
        for fix in fixes:
            fix.update(
                {"zero": {"odometer_km": 0}, "frozen": {"odometer_km": 500.0}}.get(register, {})
            )
        await post_folding(client, canonical, fixes, 30)
    car = await vehicle(client, "ZOD1A11")
    expected = 511.9 if register == "frozen" else 11.9
    assert car["odometer_km"] == pytest.approx(expected, abs=0.01)
    metrics = await (await client.get("/metrics")).text()
    assert 'outcome="device_held"' not in metrics
    if register == "frozen":
        assert 'gateway_fleet_readings_total{outcome="device_unchanged"} 119.0' in metrics


@pytest.mark.parametrize("after_stop", ["glitch", "ahead"])
async def test_a_device_odometer_jump_after_a_stop_is_taken_only_once_a_later_value_agrees(
    client: Client, after_stop: str
) -> None:
    """A register counts 100.0 … 102.9 km over 3 km; the vehicle stands 4 h; the first fix
    after the stop, 100 m on, carries 1,103.0 (a CAN frame misread at ignition-on), the later
    ones the register again (103.1 … 108.7). A device value must agree with the GPS distance
    counted since the last one (1 km plus 25% of it): the glitch is held as a suspect and
    dropped when the next value disagrees with it; the vehicle ends at 108.7, no re-baseline
    to 1,103 km, no plan due. A register really 50 km ahead after the stop (driven while the
    tracker had no GPS) is taken at the second value that agrees (158.7 at the end). Before,
    the glitch was "drivable in 4 h at 300 km/h": taken at once, and the vehicle stayed 1,000
    km ahead for good (every right value after it `device_behind`)."""
    await create_plan(client, name="Oleo", every_km=500)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "JMP1A11")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=5)
    before = drive("JMP1A11", start, (-23.5, -46.6), 30)
    for i, fix in enumerate(before):
        fix["odometer_km"] = round(100 + 0.1 * i, 1)
    origin = tracks.destination(before[-1]["lat"], before[-1]["lon"], 90, 100)
    after = drive("JMP1A11", start + timedelta(hours=4), origin, 58)
    ahead = 50.0 if after_stop == "ahead" else 0.0
    for i, fix in enumerate(after):
        fix["odometer_km"] = round(103.0 + ahead + 0.1 * i, 1)
    if after_stop == "glitch":
        after[0]["odometer_km"] = 1103.0
    await post_folding(client, trigger, before, 30)
    await post_folding(client, trigger, after[:1], 1)  # the first after the stop on its own
    await post_folding(client, trigger, after[1:], 10)
    car = await vehicle(client, "JMP1A11")
    assert car["odometer_km"] == pytest.approx(108.7 + ahead, abs=0.05)
    rebased = await events(client, "vehicle.odometer.rebaselined")
    expected = [100.0] if after_stop == "glitch" else [100.0, 153.1]
    assert [e["detail"]["to_km"] for e in rebased] == expected
    assert await events(client, "vehicle.maintenance.due") == []
    metrics = await (await client.get("/metrics")).text()
    assert 'outcome="device_behind"' not in metrics


def value(metrics: str, name: str, **labels: str) -> float:
    """A sample of the `/metrics` text (0 when it has none)."""
    for family in text_string_to_metric_families(metrics):
        for point in family.samples:
            if point.name == name and point.labels == labels:
                return float(point.value)
    return 0.0


async def test_a_reflection_taken_back_leaves_the_vehicles_odometer_where_it_was_written(
    client: Client,
) -> None:
    """A vehicle registered at 152,340 km is parked (ten fixes 2 min apart, speed 0, drifting
    under 5 m); one fix lands 250 m off (a multipath reflection, speed 0) and is folded, and
    the vehicle written with it; the next fix is back at the spot. The reflection is refused
    after all (`spike`) and its distance taken off the count, but the vehicle's odometer, as
    an ERP has read it, does not go back: 152,340.25 before and after, and the count passes
    it again once the vehicle has driven the 250 m. Before, it went 152,340.25 → 152,340.0."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "REF1A11", odometer_km=152_340)
    await client.app[services_key].relay.run_until_idle()  # the registered odometer
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    spot = (-23.56, -46.65)

    def at(minutes: float, bearing: float, metres: float, speed: float = 0.0) -> dict[str, Any]:
        lat, lon = tracks.destination(*spot, bearing, metres)
        when = (start + timedelta(minutes=minutes)).isoformat()
        return {"plate": "REF1A11", "time": when, "lat": lat, "lon": lon, "speed_kmh": speed}

    parked = [at(2 * i, 37 * i, i % 5) for i in range(10)]
    shown = []
    for batch in (parked, [at(20, 45, 250)], [at(22, 0, 3)]):
        await post_folding(client, trigger, batch, 10)
        shown.append((await vehicle(client, "REF1A11"))["odometer_km"])
    assert shown[0] == 152_340.0
    assert shown[1] == shown[2] and 152_340.24 < shown[1] < 152_340.26
    read = {item["time"]: item["rejected"] for item in await whole_track(client, "REF1A11")}
    assert list(read.values()).count("spike") == 1
    # The metrics give one verdict a fix: the reflection was counted `accepted` when it came,
    # and `taken_back` when it was refused (telemetry5 #6: 11 verdicts for the 12 fixes).
    metrics = await (await client.get("/metrics")).text()
    folded = {
        outcome: value(metrics, "gateway_fleet_fixes_folded_total", outcome=outcome)
        for outcome in ("accepted", "late", "taken_back")
    }
    rejected = value(metrics, "gateway_fleet_fixes_rejected_total", reason="spike")
    assert folded["taken_back"] == rejected == 1
    assert folded["accepted"] + folded["late"] - folded["taken_back"] + rejected == 12
    # the count goes on from the spot: the vehicle shows it again once it is past the hold
    road = [at(23 + i / 6, 90, 100 * i, speed=36.0) for i in range(1, 5)]
    await post_folding(client, trigger, road, 10)
    assert (await vehicle(client, "REF1A11"))["odometer_km"] == pytest.approx(152_340.4, abs=0.01)


# -- a registration reaching the fold after the first fixes -------------------------------------


async def test_a_registration_folded_after_the_first_fixes_is_not_applied_again(
    client: Client,
) -> None:
    """A vehicle registered at 152,340 km whose tracker's fixes (10 km: 101 fixes 100 m apart)
    are folded before the registration's reading comes through the event relay (the relay
    lagging): the first fold started from the registration, so the reading is in its count
    already and is not applied again. The odometer stays 152,350 km and does not go down
    at the next fix; a plan every 2 km announces nothing twice and nothing back at
    152,340. Before, the reading took
    the count back to 152,340 (10 km erased), and the entity, written 152,350 by then, went
    down at the next fix."""
    await create_plan(client, name="Cada2", every_km=2)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "REG1A11", odometer_km=152_340)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    road = drive("REG1A11", start, (-12.97, -38.5), 102)
    await post_folding(client, trigger, road[:101], 101)  # the relay has not run yet
    assert (await vehicle(client, "REG1A11"))["odometer_km"] == pytest.approx(152_350, abs=0.01)
    services = client.app[services_key]
    await services.relay.run_until_idle()  # the registration's reading, at last
    await post_folding(client, trigger, road[101:], 1)
    assert (await vehicle(client, "REG1A11"))["odometer_km"] == pytest.approx(152_350.1, abs=0.01)
    assert await events(client, "vehicle.odometer.rebaselined") == []
    dues = [e["detail"]["due_km"] for e in await events(client, "vehicle.maintenance.due")]
    assert sorted(dues) == [152_342, 152_344, 152_346, 152_348, 152_350]
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_fleet_readings_total{outcome="included"} 1.0' in metrics


# -- an odometer given after a few GPS km -------------------------------------------------------


@pytest.mark.parametrize("given_by", ["device", "admin"])
async def test_an_odometer_given_after_a_few_gps_km_announces_nothing_behind_it(
    client: Client, given_by: str
) -> None:
    """A vehicle registered without an odometer drives 3.9 km (40 fixes, counted by GPS from
    the unknown 0) with a plan every 10,000 km; then it is given its odometer, 152,340 km: by
    its tracker's first device odometer (AVL 16 configured after installation), or by an
    admin. That is set, not driven: the plan takes it as its first check by distance and
    announces nothing behind it (its next is due soon at 159,500 km). Before, it announced
    `due` 130,000 (12 earlier multiples), 140,000 and 150,000 at once."""
    await create_plan(client, name="Revisao", every_km=10000, due_soon_km=500)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "SET1A11")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    road = drive("SET1A11", start, (-23.5, -46.6), 60)
    await post_folding(client, trigger, road[:40], 40)
    assert (await vehicle(client, "SET1A11"))["odometer_km"] == pytest.approx(3.9, abs=0.01)
    if given_by == "device":
        for i, fix in enumerate(road[40:]):
            fix["odometer_km"] = round(152_340 + 0.1 * i, 1)
    else:
        read = {"odometer_km": 152_340}
        response = await client.patch("/api/v1/entities/vehicle/SET1A11", json=read, headers=auth())
        assert response.status == 200, await response.text()
        await client.app[services_key].relay.run_until_idle()
    await post_folding(client, trigger, road[40:], 20)
    assert (await vehicle(client, "SET1A11"))["odometer_km"] == pytest.approx(152_341.9, abs=0.2)
    rebased = await events(client, "vehicle.odometer.rebaselined")
    assert [e["detail"]["to_km"] for e in rebased] == [152_340]
    assert await events(client, "vehicle.maintenance.due") == []
    assert await events(client, "vehicle.maintenance.due_soon") == []


# -- a time plan's clock ------------------------------------------------------------------------


async def test_a_time_plan_evaluated_at_the_clock_then_by_buffered_fixes_announces_each_day_once(
    client: Client,
) -> None:
    """A daily inspection plan counts from a service recorded 3 days and 2 hours ago, and first
    sees the vehicle at a fix of that time; the
    fold's hourly tick evaluates it now (day 3 due); then the tracker's fixes buffered since
    (one every 10 minutes, in order, all newer than its last position) are folded in device
    time. They find nothing new by time: the plan's clock is at the tick. Before, the fix at
    day 3's due time announced day 3 again (after days 1 and 2): the cycle announced at the
    tick was taken for a glitch a cycle ahead of the fix."""
    await create_plan(client, name="Diaria", every_days=1)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "DAY1A11")
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=3, hours=2)
    path = "/api/v1/entities/vehicle/DAY1A11/services"
    response = await client.post(path, json={"at": start.isoformat()}, headers=auth())
    assert response.status == 202, await response.text()
    here = {"plate": "DAY1A11", "lat": -23.5, "lon": -46.6, "speed_kmh": 0.0}
    await post_folding(client, trigger, [{**here, "time": start.isoformat()}], 1)
    services = client.app[services_key]
    await services.store.fleet.push_ticks([TENANT], now)
    await fold(client)
    buffered = [
        {**here, "time": (start + timedelta(minutes=10 * i)).isoformat()}
        for i in range(1, 3 * 24 * 6 + 12)
    ]
    await post_folding(client, trigger, buffered, 250)
    dues = [e["detail"]["due_at"] for e in await events(client, "vehicle.maintenance.due")]
    assert dues == [start + timedelta(days=3)]


@pytest.mark.parametrize("odometer", [None, 50_000])
async def test_a_daily_plan_first_seeing_a_new_vehicle_through_its_buffered_fixes_announces_none(
    client: Client, odometer: int | None
) -> None:
    """A daily inspection plan; a vehicle registered now (with an odometer or without), then
    its tracker's fixes of the last 3 days, one every 30 min, in batches of 100 (the replay
    docs/fleet.md recommends once the vehicle exists, or a tracker back after 3 days out of
    coverage), folded before anything else evaluated the plan. The plan saw the vehicle now:
    no `due` for the days before. Before, its time base was the first fix's date and the
    upload announced a `due` per day (three at once), and none when the registration's
    reading or the hourly tick reached the fold first."""
    await create_plan(client, name="Vistoria", every_days=1)
    trigger = await create_position_trigger(client)
    body = {"plate": "REP1A11"} if odometer is None else {"plate": "REP1A11", "odometer_km": 50_000}
    response = await client.post("/api/v1/entities/vehicle", json=body, headers=auth())
    assert response.status == 201, await response.text()
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=3, minutes=10)
    buffered = [
        {**fix, "time": (start + timedelta(minutes=30 * i)).isoformat(), "speed_kmh": 20.0}
        for i, fix in enumerate(drive("REP1A11", start, (-23.5, -46.6), 3 * 48 + 1))
    ]
    for i in range(0, len(buffered), 100):
        status, answer = await hook(client, trigger, buffered[i : i + 100])
        assert status == 200 and answer["summary"]["failed"] == 0, answer
    await fold(client)
    assert await events(client, "vehicle.maintenance.due") == []


# -- a live fix dated ahead ---------------------------------------------------------------------


async def test_one_live_fix_dated_ahead_makes_no_later_live_fix_late(client: Client) -> None:
    """A vehicle sends a fix every 1.1 s, live (each dated when it is sent), 40 m apart,
    leaving an authorized circle of 150 m (and its 25 m margin) at its sixth fix; its third
    fix is dated 18 s ahead
    (a receiver reporting GPS time before its leap seconds), within the 300 s tolerance. The
    fixes after it were recorded after it arrived: they are in order, not late. The odometer
    is the 400 m driven, no fix is refused, the exit is announced at the sixth fix and the
    vehicle's last position is its last fix. Before, every later fix was late (older than the
    fix dated ahead): each counted as a detour back to it, none ran through the fence (no
    exit), the last position stayed at the third fix, and a subscription sampling positions
    every 2 s got none after it."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "AHD1A11")
    partner = await create_partner(client, "http://127.0.0.1:9")
    action = await create_action(client, partner["id"])
    await create_subscription(client, action["id"], ("vehicle.position",), sample_seconds=2)
    fence = {"lat": -23.5, "lon": -46.6, "radius_m": 150}
    body = {"name": "Patio", "kind": "authorized", "vehicles": ["AHD1A11"], "circle": fence}
    response = await client.post("/api/v1/geofences", json=body, headers=auth())
    assert response.status == 201, await response.text()
    sent = []
    for i in range(11):
        lat, lon = tracks.destination(-23.5, -46.6, 90, 40 * i)
        t = datetime.now(UTC) + timedelta(seconds=18 if i == 2 else 0)
        t = t.replace(microsecond=t.microsecond // 1000 * 1000)  # (to the millisecond)
        fix = {"plate": "AHD1A11", "time": t.isoformat(), "lat": lat, "lon": lon}
        await post_folding(client, trigger, [{**fix, "speed_kmh": 130.0, "accuracy_m": 3.0}], 1)
        sent.append(fix)
        await asyncio.sleep(1.1)
    car = await vehicle(client, "AHD1A11")
    assert car["odometer_km"] == pytest.approx(0.4, abs=0.002)
    assert car["last_position"]["lon"] == sent[-1]["lon"]
    assert [f["rejected"] for f in await whole_track(client, "AHD1A11")] == [None] * 11
    exits = await events(client, "vehicle.geofence.exited")
    assert [e["detail"]["occurred_at"] for e in exits] == [datetime.fromisoformat(sent[5]["time"])]
    # Sampled every 2 s on: one of the last three fixes (2.2 s or more) is sampled.
    last_three = [datetime.fromisoformat(f["time"]) for f in sent[-3:]]
    sampled = [e["occurred_at"] for e in await events(client, "vehicle.position")]
    assert any(at in last_three for at in sampled), sampled


async def test_a_plan_of_a_group_applies_to_its_vehicles_whichever_unicode_form_named_it(
    client: Client,
) -> None:
    """ "São Paulo" sent decomposed (a and a combining tilde, as macOS and iOS write it) is the
    group a person typed composed: the plan of the group comes due for both vehicles. Before,
    the decomposed one was in no group anybody typed, and never due."""
    composed, decomposed = "S\u00e3o Paulo", "Sa\u0303o Paulo"
    await new_vehicle(client, "NFD1234", group=decomposed)
    await new_vehicle(client, "NFC1234", groups=["x", composed])
    await create_plan(client, name="Plano SP", every_km=1000, group=composed)
    for km in (500, 1500):
        for plate in ("NFD1234", "NFC1234"):
            url = f"/api/v1/entities/vehicle/{plate}"
            patched = await client.patch(url, json={"odometer_km": km}, headers=auth())
            assert patched.status == 200, await patched.text()
        for _ in range(2):  # the relay queues the readings, the fold takes them
            await client.app[services_key].relay.run_until_idle()
            await fold(client)
    due = await events(client, "vehicle.maintenance.due")
    assert sorted(e["data"]["plate"] for e in due) == ["NFC1234", "NFD1234"]


async def test_a_live_fix_dated_ahead_that_starts_a_dwell_dates_the_exit_when_it_arrived(
    client: Client,
) -> None:
    """An authorized circle of 140 m with a dwell of 5 s; a vehicle drives out at 108 km/h,
    a fix a second, each posted as it is recorded (the device's clock a little ahead of the
    gateway's, credited step by step). The first fix clearly outside is dated 240 s ahead
    (a record stamped by a drifting RTC, within the 300 s tolerance). The dwell starts, and
    the exit is dated and placed, at that fix as it arrived: the exit is confirmed 5 s
    later. Before, the dwell started at its wrong time: the later, right fixes were all
    before it, and the exit came only once live fixes passed it plus the dwell (4 minutes
    on), dated there."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "DWL1A11")
    fence = {"lat": -23.5, "lon": -46.6, "radius_m": 140}
    body = {
        "name": "Garagem",
        "kind": "authorized",
        "vehicles": ["DWL1A11"],
        "circle": fence,
        "dwell_seconds": 5,
    }
    response = await client.post("/api/v1/geofences", json=body, headers=auth())
    assert response.status == 201, await response.text()
    start = datetime.now(UTC).replace(microsecond=0)
    sent = []
    for i in range(16):  # the first clearly outside (140 m + 25 m margin + 3 m): the sixth
        lat, lon = tracks.destination(-23.5, -46.6, 90, 30 * i)
        t = start + timedelta(seconds=i + (240 if i == 6 else 0))
        fix = {"plate": "DWL1A11", "time": t.isoformat(), "lat": lat, "lon": lon}
        await post_folding(client, trigger, [{**fix, "speed_kmh": 108.0, "accuracy_m": 3.0}], 1)
        sent.append(fix)
    assert [f["rejected"] for f in await whole_track(client, "DWL1A11")] == [None] * 16
    [exit_] = await events(client, "vehicle.geofence.exited")
    crossed = exit_["detail"]["occurred_at"]
    assert start < crossed < start + timedelta(seconds=30), (start, crossed)
    assert exit_["detail"]["position"] == {"lat": sent[6]["lat"], "lon": sent[6]["lon"]}
