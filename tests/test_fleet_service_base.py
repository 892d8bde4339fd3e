"""A recorded service as the base of a vehicle's maintenance plans (docs/fleet.md, "Recording
a service"): without `km` before the plan first saw the vehicle, kept while the vehicle is out
of the plan's scope for a while, not moved back by an older service; a service for a plan
that does not apply is refused; a full last page of a track has no cursor. Everything through
HTTP to the app and the real database, the fold run as it runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.doorbell import Doorbell
from gateway.fleet.fold import Fold, FoldSettings
from gateway.fleet.service_feed import ServiceFeed
from gateway.store import Doc
from gateway.web.state import services_key
from tests.flow_support import add_mapping, send_to
from tests.partner_double import post
from tests.support import auth, inbox_items
from tests.test_fleet_third_look import drive, events
from tests.test_fleet_tracks import fold, new_vehicle, vehicle
from tests.triggers_support import Client, create_position_trigger, hook


async def api(client: Client, method: str, path: str, body: Any, status: int) -> dict[str, Any]:
    response = await client.request(method, path, json=body, headers=auth())
    assert response.status == status, await response.text()
    return dict(await response.json())


async def dues(client: Client) -> list[tuple[str, float, float]]:
    """The plans' announcements: (kind, due_km, odometer_km), in order."""
    found = []
    for kind in ("due_soon", "due"):
        for event in await events(client, f"vehicle.maintenance.{kind}"):
            detail = event["detail"]
            found.append((event["occurred_at"], kind, detail["due_km"], detail["odometer_km"]))
    return [(kind, due_km, km) for _, kind, due_km, km in sorted(found)]


async def post_folding(
    client: Client, trigger: dict[str, Any], fixes: Sequence[dict[str, Any]], folding: Fold
) -> None:
    """The fixes ten at a time, each batch folded."""
    for i in range(0, len(fixes), 10):
        status, answer = await hook(client, trigger, list(fixes[i : i + 10]))
        assert status == 200 and answer["summary"]["stored"] == len(fixes[i : i + 10]), answer
        await folding.run_until_idle()


def the_apps_fold(client: Client) -> Fold:
    return client.app[services_key].fold


def fold_reading_vehicles_afresh(client: Client, vehicle_seconds: float = 0.0) -> Fold:
    """A fold like the app's, but that trusts a vehicle's entity (its group) for no time at
    all (or `vehicle_seconds`): a group change takes effect at the next fix, as it does 30 s
    later in the app."""
    services = client.app[services_key]

    async def relayed(events: Sequence[Doc]) -> None:  # (stored; delivered to nobody here)
        return None

    return Fold(
        services.store,
        services.metrics,
        services.fleet_settings,
        services.fleet_rules,
        on_relayed=relayed,
        doorbell=Doorbell(),
        config=FoldSettings(vehicle_seconds=vehicle_seconds),
    )


# -- a service without km before the plan's first check ------------------------------------------


@pytest.mark.parametrize(
    "how", ["route", "erp_last_service", "after_fixes_before_the_plan", "odometer_known_later"]
)
async def test_a_service_without_km_before_the_plans_first_check_counts_from_the_odometer(
    client: Client, how: str
) -> None:
    """A vehicle registered at 1,002 km on a plan every 5 km (due_soon 1) counted from 0: a
    service recorded without `km` before the plan has evaluated the vehicle is its base at
    the vehicle's odometer (1,002), so the vehicle driving on to ~1,008 km announces the
    cycle at 1,007 once (due_soon at 1,006), and nothing for 1,000 or 1,005 (before: `due`
    1,000 at the first fix, from `start_km`, and then 1,005). Recorded through the route, an
    ERP creating the vehicle with `last_service` {at} 20 days old (the plan by time too, every
    180 days), or the route after fixes folded before the plan existed; or through the route
    on a vehicle registered without an odometer, which an admin then sets to 1,002 km (the
    service's km is the first odometer the plan sees)."""
    trigger = await create_position_trigger(client)
    services = client.app[services_key]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    fixes = drive("SVC1A01", start, (-23.5, -46.6), 62)  # 100 m every 10 s: 6.1 km
    plan = {"name": "Oleo", "every_km": 5, "due_soon_km": 1}
    if how == "erp_last_service":
        plan.update(every_days=180, due_soon_days=15)
        await api(client, "POST", "/api/v1/maintenance-plans", plan, 201)
        done = (datetime.now(UTC) - timedelta(days=20)).isoformat()
        body = {"plate": "SVC1A01", "odometer_km": 1002, "last_service": {"at": done}}
        await api(client, "POST", "/api/v1/entities/vehicle", body, 201)
        await services.relay.run_until_idle()  # the service feed queues the service
    elif how == "odometer_known_later":
        await new_vehicle(client, "SVC1A01")
        await api(client, "POST", "/api/v1/maintenance-plans", plan, 201)
        at = (start - timedelta(minutes=1)).isoformat()
        await api(client, "POST", "/api/v1/entities/vehicle/SVC1A01/services", {"at": at}, 202)
        await fold(client)
        await api(client, "PATCH", "/api/v1/entities/vehicle/SVC1A01", {"odometer_km": 1002}, 200)
        await services.relay.run_until_idle()  # the odometer reading, for the fold
    else:
        await new_vehicle(client, "SVC1A01", odometer_km=1002)
        if how == "after_fixes_before_the_plan":
            await post_folding(client, trigger, fixes[:1], the_apps_fold(client))
            fixes = fixes[1:]
        await api(client, "POST", "/api/v1/maintenance-plans", plan, 201)
        at = (start - timedelta(minutes=1)).isoformat()
        await api(client, "POST", "/api/v1/entities/vehicle/SVC1A01/services", {"at": at}, 202)
    await fold(client)
    await post_folding(client, trigger, fixes, the_apps_fold(client))
    assert (await vehicle(client, "SVC1A01"))["odometer_km"] == 1008.1
    assert await dues(client) == [("due_soon", 1007.0, 1006.0), ("due", 1007.0, 1007.0)]


# -- out of the plan's scope for a while ---------------------------------------------------------


@pytest.mark.parametrize("how", ["moved_out_and_back", "group_renamed_in_two_steps"])
async def test_a_vehicle_out_of_its_plans_group_for_a_while_keeps_its_service(
    client: Client, how: str
) -> None:
    """A plan every 10 km (due_soon 2) for the group `north`; the vehicle, at 5,855 km, is
    serviced at 5,855. It leaves the plan's scope while it keeps reporting (moved to `south`
    and back; or the group renamed the usual way, the plan's `group` first, then the
    vehicle's): back in scope, the plan counts on from the service, due at 5,865 (before:
    its state was dropped, and it started over from `start_km`: due_soon 5,860 at 5,858)."""
    folding = fold_reading_vehicles_afresh(client)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "GRP1A01", odometer_km=5855, group="north")
    body = {"name": "Oleo", "every_km": 10, "due_soon_km": 2, "group": "north"}
    plan = await api(client, "POST", "/api/v1/maintenance-plans", body, 201)
    now = datetime.now(UTC).replace(microsecond=0)
    fixes = drive("GRP1A01", now - timedelta(minutes=30), (-23.5, -46.6), 112)  # 11.1 km
    await post_folding(client, trigger, fixes[:3], folding)
    service = {"km": 5855, "at": (now - timedelta(hours=1)).isoformat(), "plan": "Oleo"}
    await api(client, "POST", "/api/v1/entities/vehicle/GRP1A01/services", service, 202)
    await folding.run_until_idle()
    vehicle_path, plan_path = (
        "/api/v1/entities/vehicle/GRP1A01",
        f"/api/v1/maintenance-plans/{plan['id']}",
    )
    if how == "moved_out_and_back":
        await api(client, "PATCH", vehicle_path, {"group": "south"}, 200)
        await post_folding(client, trigger, fixes[3:23], folding)  # 2 km out of scope
        await api(client, "PATCH", vehicle_path, {"group": "north"}, 200)
    else:
        await api(client, "PATCH", plan_path, {"group": "sao-paulo"}, 200)
        await post_folding(client, trigger, fixes[3:23], folding)
        await api(client, "PATCH", vehicle_path, {"group": "sao-paulo"}, 200)
    await post_folding(client, trigger, fixes[23:], folding)
    assert (await vehicle(client, "GRP1A01"))["odometer_km"] == 5866.1
    assert await dues(client) == [("due_soon", 5865.0, 5863.0), ("due", 5865.0, 5865.0)]


@pytest.mark.parametrize("service", [{"km": 5870}, {"km": 5870, "plan": "Oleo"}])
async def test_a_service_recorded_while_the_vehicle_is_out_of_the_plans_scope_resets_it(
    client: Client, service: dict[str, Any]
) -> None:
    """A plan every 10 km (due_soon 2) for `north`, serviced at 5,855; announced due_soon 5,865
    at 5,863. The vehicle moved to `south`, driven to ~5,870, serviced there at 5,870 (for
    every plan, or naming the plan, which keeps a state for it): back in `north`, the plan
    counts from that service, due at 5,880 (before: a service for every plan reset none out
    of scope, `due` 5,865 came on the return; one naming the plan was a 422)."""
    folding = fold_reading_vehicles_afresh(client)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "OUT1A01", odometer_km=5855, group="north")
    body = {"name": "Oleo", "every_km": 10, "due_soon_km": 2, "group": "north"}
    await api(client, "POST", "/api/v1/maintenance-plans", body, 201)
    now = datetime.now(UTC).replace(microsecond=0)
    fixes = drive("OUT1A01", now - timedelta(minutes=50), (-23.5, -46.6), 261)  # 26 km
    await post_folding(client, trigger, fixes[:3], folding)
    first = {"km": 5855, "at": (now - timedelta(hours=1)).isoformat(), "plan": "Oleo"}
    path = "/api/v1/entities/vehicle/OUT1A01"
    await api(client, "POST", f"{path}/services", first, 202)
    await folding.run_until_idle()
    await post_folding(client, trigger, fixes[3:90], folding)  # to 5,863.9
    await api(client, "PATCH", path, {"group": "south"}, 200)
    await post_folding(client, trigger, fixes[90:150], folding)  # to 5,869.9, out of scope
    at = fixes[149]["time"]
    await api(client, "POST", f"{path}/services", {**service, "at": at}, 202)
    await folding.run_until_idle()
    await api(client, "PATCH", path, {"group": "north"}, 200)
    await post_folding(client, trigger, fixes[150:], folding)
    assert (await vehicle(client, "OUT1A01"))["odometer_km"] == 5881.0
    assert await dues(client) == [
        ("due_soon", 5865.0, 5863.0),
        ("due_soon", 5880.0, 5878.0),
        ("due", 5880.0, 5880.0),
    ]


async def test_a_deleted_plans_state_goes_with_it(client: Client) -> None:
    """A plan deleted leaves nothing of itself in the vehicle's fold state (a plan that only
    stopped applying keeps its state, above)."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "DEL1A01", odometer_km=100, group="north")
    body = {"name": "Oleo", "every_km": 10, "group": "north"}
    plan = await api(client, "POST", "/api/v1/maintenance-plans", body, 201)
    other = await api(client, "POST", "/api/v1/maintenance-plans", {**body, "name": "Pneus"}, 201)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    fixes = drive("DEL1A01", start, (-23.5, -46.6), 4)
    await post_folding(client, trigger, fixes[:2], the_apps_fold(client))
    store = client.app[services_key].store
    saved = await store.fleet.state("acme", (await vehicle(client, "DEL1A01"))["id"])
    assert saved is not None and set(saved["state"]["plans"]) == {plan["id"], other["id"]}
    response = await client.delete(f"/api/v1/maintenance-plans/{plan['id']}", headers=auth())
    assert response.status == 204, await response.text()
    await post_folding(client, trigger, fixes[2:], the_apps_fold(client))
    saved = await store.fleet.state("acme", (await vehicle(client, "DEL1A01"))["id"])
    assert saved is not None and set(saved["state"]["plans"]) == {other["id"]}


# -- moved into a plan's scope and serviced at once ----------------------------------------------


@pytest.mark.parametrize("how", ["patch_then_route", "one_write_with_last_service"])
async def test_a_service_recorded_right_after_the_vehicle_joins_the_plans_group_is_applied(
    client: Client, how: str
) -> None:
    """A vehicle in `south`, reporting (the app's fold has it cached, for 30 s); a plan every
    10 km (due_soon 2) for `north`. The vehicle is moved to `north` and serviced at 5,855 km
    for the plan, by a PATCH then the route, or by one write with the group and its
    `last_service`: the fold applies it (before: answered 202 and dropped, the fold's cached
    vehicle being out of scope; the plan later started from nothing: due_soon 5,860)."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "MOV1A01", odometer_km=5855, group="south")
    services = client.app[services_key]
    await services.relay.run_until_idle()
    body = {"name": "Oleo", "every_km": 10, "due_soon_km": 2, "group": "north"}
    await api(client, "POST", "/api/v1/maintenance-plans", body, 201)
    now = datetime.now(UTC).replace(microsecond=0)
    fixes = drive("MOV1A01", now - timedelta(minutes=30), (-23.5, -46.6), 100)  # 9.9 km
    await post_folding(client, trigger, fixes[:3], the_apps_fold(client))
    service = {"km": 5855, "at": (now - timedelta(minutes=40)).isoformat(), "plan": "Oleo"}
    path = "/api/v1/entities/vehicle/MOV1A01"
    if how == "patch_then_route":
        await api(client, "PATCH", path, {"group": "north"}, 200)
        await api(client, "POST", f"{path}/services", service, 202)
    else:
        await api(client, "PATCH", path, {"group": "north", "last_service": service}, 200)
        await services.relay.run_until_idle()  # the service feed records it
    await post_folding(client, trigger, fixes[3:], the_apps_fold(client))
    assert (await vehicle(client, "MOV1A01"))["odometer_km"] == 5864.9
    assert await dues(client) == [("due_soon", 5865.0, 5863.0)]


# -- an odometer not known yet ----------------------------------------------------------------


@pytest.mark.parametrize("serviced", [True, False])
@pytest.mark.parametrize("first", ["tick", "fix"])
async def test_a_plan_counts_distance_from_the_first_odometer_known(
    client: Client, first: str, serviced: bool
) -> None:
    """A vehicle registered without an odometer, a plan every 10,000 km (due_soon 500) or
    180 days; a service recorded without km 20 days ago, or none. The plan sees the vehicle
    at 0 km first (the hourly tick, or a fix before anything moved it), then an admin sets
    the odometer, 152,340 km: nothing is announced (before: the tick's 0 became the service's
    km, and `due` 150,000 was announced; with no service, likewise), and the plan counts on
    from there: at 161,900 km, due_soon 162,340 (the service's next), or due 160,000."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "TIK1A01")
    services = client.app[services_key]
    await services.relay.run_until_idle()
    plan = {
        "name": "Revisao",
        "every_km": 10000,
        "due_soon_km": 500,
        "every_days": 180,
        "due_soon_days": 15,
    }
    await api(client, "POST", "/api/v1/maintenance-plans", plan, 201)
    now = datetime.now(UTC).replace(microsecond=0)
    if serviced:
        at = (now - timedelta(days=20)).isoformat()
        await api(client, "POST", "/api/v1/entities/vehicle/TIK1A01/services", {"at": at}, 202)
        await fold(client)
    if first == "tick":
        await services.store.fleet.push_ticks(["acme"], now - timedelta(minutes=5))
        await fold(client)
    else:
        fixes = drive("TIK1A01", now - timedelta(minutes=5), (-23.5, -46.6), 1)
        await post_folding(client, trigger, fixes, the_apps_fold(client))
    for km in (152340, 161900):
        await api(client, "PATCH", "/api/v1/entities/vehicle/TIK1A01", {"odometer_km": km}, 200)
        await services.relay.run_until_idle()  # the reading, for the fold
        await fold(client)
    if serviced:
        assert await dues(client) == [("due_soon", 162340.0, 161900.0)]
    else:
        assert await dues(client) == [("due", 160000.0, 161900.0)]


# -- who may move the base back ----------------------------------------------------------------


async def checklists(client: Client) -> dict[str, Any]:
    """The checklist app's trigger (its mapping reports a service: `servico`)."""
    await add_mapping(client, "checklist")
    body = {"name": "checklists", "entity_type": "other", "kind": "checklist"}
    return dict(await post(client, "/api/v1/triggers", {**body, "mapping": "checklist"}))


async def checklist_service(
    client: Client, trigger: dict[str, Any], key: str, plate: str, at: datetime, km: float
) -> None:
    """A service checklist completed at `at` (to the millisecond, as the app sends it),
    relayed (the service feed records the service)."""
    payload = {
        "checklistId": key,
        "placa": plate,
        "condutorCpf": "52998224725",
        "respostas": [{"item": "oleo", "ok": True}],
        "concluidoEm": at.isoformat(timespec="milliseconds"),
        "servico": {"plano": "Oleo", "km": km},
    }
    await send_to(client, trigger, payload)
    await client.app[services_key].relay.run_until_idle()


async def relay_checklists_again(client: Client) -> None:
    """The relay's batches of checklists handed to the service feed again, as a relay that
    died before draining its outboxes does (oldest first)."""
    services = client.app[services_key]
    found = await services.events.find("acme", event_type="checklist.completed")
    await ServiceFeed(services.vehicle_services)(list(reversed(found)))


async def test_a_checklists_older_service_does_not_move_the_base_back(client: Client) -> None:
    """A plan every 1,000 km (due_soon 100), a vehicle at 9,950 km: checklists report services
    at 9,000 km (5 h ago) and 9,950 km (1 h ago), then the first is relayed again and a late
    one (4 h ago) arrives: a feed's service moves the base only forward, so driving on to
    ~9,953 km announces nothing (before this change's first round: due_soon 10,000 at 9,951,
    an hour after a service at 9,950). An admin's service at the same time with another km
    corrects it (from 9,050: due_soon 10,050 at 9,953)."""
    trigger = await create_position_trigger(client)
    reports = await checklists(client)
    await new_vehicle(client, "OLD1A01", odometer_km=9950)
    await client.app[services_key].relay.run_until_idle()  # (its reading, as the app would)
    await api(
        client,
        "POST",
        "/api/v1/maintenance-plans",
        {"name": "Oleo", "every_km": 1000, "due_soon_km": 100},
        201,
    )
    now = datetime.now(UTC).replace(microsecond=0)
    fixes = drive("OLD1A01", now - timedelta(minutes=20), (-23.5, -46.6), 50)
    await post_folding(client, trigger, fixes[:10], the_apps_fold(client))
    await checklist_service(client, reports, "chk-1", "OLD1A01", now - timedelta(hours=5), 9000)
    await checklist_service(client, reports, "chk-2", "OLD1A01", now - timedelta(hours=1), 9950)
    await fold(client)
    await relay_checklists_again(client)
    await checklist_service(client, reports, "chk-3", "OLD1A01", now - timedelta(hours=4), 9100)
    await fold(client)
    await post_folding(client, trigger, fixes[10:30], the_apps_fold(client))
    assert (await vehicle(client, "OLD1A01"))["odometer_km"] == 9952.9
    assert await dues(client) == []
    corrected = {"km": 9050, "at": (now - timedelta(hours=1)).isoformat(), "plan": "Oleo"}
    await api(client, "POST", "/api/v1/entities/vehicle/OLD1A01/services", corrected, 202)
    await post_folding(client, trigger, fixes[30:], the_apps_fold(client))
    assert await dues(client) == [("due_soon", 10050.0, 9953.0)]


async def test_an_admin_corrects_a_checklists_mistyped_service_and_a_replay_changes_nothing(
    client: Client,
) -> None:
    """A checklist reports a service at 9,050 km (a typo for 9,950), completed at hh:mm:02.123;
    the admin records it again from the UI's minute, hh:mm, with 9,950 km: the correction is
    the base (before: ignored, being 2.123 s older; due_soon 10,050 at 9,951). The checklist's
    batch relayed again afterwards changes nothing."""
    trigger = await create_position_trigger(client)
    reports = await checklists(client)
    await new_vehicle(client, "MIN1A01", odometer_km=9950)
    await client.app[services_key].relay.run_until_idle()  # (its reading, as the app would)
    body = {"name": "Oleo", "every_km": 1000, "due_soon_km": 100}
    await api(client, "POST", "/api/v1/maintenance-plans", body, 201)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    fixes = drive("MIN1A01", now - timedelta(minutes=20), (-23.5, -46.6), 40)
    await post_folding(client, trigger, fixes[:10], the_apps_fold(client))
    done = now - timedelta(hours=1)
    completed = done + timedelta(seconds=2, milliseconds=123)
    await checklist_service(client, reports, "chk-1", "MIN1A01", completed, 9050)
    await fold(client)
    fixed = {"km": 9950, "at": done.isoformat(), "plan": "Oleo"}
    await api(client, "POST", "/api/v1/entities/vehicle/MIN1A01/services", fixed, 202)
    await fold(client)
    await relay_checklists_again(client)
    await fold(client)
    await post_folding(client, trigger, fixes[10:], the_apps_fold(client))
    assert (await vehicle(client, "MIN1A01"))["odometer_km"] == 9953.9
    assert await dues(client) == []


async def test_an_admin_corrects_a_mistyped_service_date_backwards(client: Client) -> None:
    """A plan every 30 days (due_soon 5): a service typed as 2 days ago, recorded again with
    its real date, 28 days ago: the plan is due in 2 days, announced soon now (before: the
    earlier date was ignored, and the plan said nothing for another 23 days)."""
    await new_vehicle(client, "DAT1A01", odometer_km=5000)
    body = {"name": "Vistoria", "every_days": 30, "due_soon_days": 5}
    await api(client, "POST", "/api/v1/maintenance-plans", body, 201)
    now = datetime.now(UTC).replace(microsecond=0)
    store = client.app[services_key].store
    await store.fleet.push_ticks(["acme"], now - timedelta(days=60))
    await fold(client)
    path = "/api/v1/entities/vehicle/DAT1A01/services"
    for days in (2, 28):
        service = {"at": (now - timedelta(days=days)).isoformat(), "plan": "Vistoria"}
        await api(client, "POST", path, service, 202)
        await fold(client)
    await store.fleet.push_ticks(["acme"], now)
    await fold(client)
    found = await events(client, "vehicle.maintenance.due_soon")
    assert [e["detail"]["due_at"] for e in found] == [now - timedelta(days=28) + timedelta(days=30)]


# -- minor -----------------------------------------------------------------------------------------


async def test_a_service_for_a_plan_that_does_not_apply_to_the_vehicle_is_a_422(
    client: Client,
) -> None:
    """A service naming a plan whose vehicles and group do not name the vehicle is refused on
    `/plan` and nothing is queued (before: a 202 the fold then skipped); a plan that applies
    through the vehicle's group records it."""
    await new_vehicle(client, "SPN1A01", odometer_km=100, group="north")
    await api(
        client,
        "POST",
        "/api/v1/maintenance-plans",
        {"name": "Other", "every_km": 1000, "vehicles": ["ABC1D23"]},
        201,
    )
    await api(
        client,
        "POST",
        "/api/v1/maintenance-plans",
        {"name": "North", "every_km": 1000, "group": "north"},
        201,
    )
    path = "/api/v1/entities/vehicle/SPN1A01/services"
    response = await client.post(path, json={"plan": "Other", "km": 100}, headers=auth())
    assert response.status == 422 and response.content_type == "application/problem+json"
    problem = await response.json()
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [("/plan", "applies")]
    assert "Other" in problem["errors"][0]["message"], problem
    recorded = await api(client, "POST", path, {"plan": "North", "km": 100}, 202)
    store = client.app[services_key].store
    queued = await inbox_items(store, "acme", recorded["vehicle"]["id"], "service")
    assert [item["plan"] for item in queued] == [recorded["plan"]]


async def test_a_full_last_page_of_a_track_has_no_cursor(client: Client) -> None:
    """Ten fixes read ten at a time: one page, `next_cursor` null (before: a cursor whose page
    was empty); four at a time: pages of 4, 4 and 2, the last without a cursor."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "PAG1A01")
    fixes = drive(
        "PAG1A01", datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1), (-23.5, -46.6), 10
    )
    status, answer = await hook(client, trigger, fixes)
    assert status == 200 and answer["summary"]["stored"] == 10, answer
    path = "/api/v1/entities/vehicle/PAG1A01/positions"
    page = await api(client, "GET", f"{path}?limit=10", None, 200)
    assert (len(page["items"]), page["next_cursor"]) == (10, None)
    sizes, query = [], "?limit=4"
    while query:
        page = await api(client, "GET", f"{path}{query}", None, 200)
        sizes.append(len(page["items"]))
        query = page["next_cursor"] and f"?limit=4&cursor={page['next_cursor']}"
    assert sizes == [4, 4, 2]
