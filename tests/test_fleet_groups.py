"""A geofence's `group` watches the vehicles whose `group` is it, or one of whose `groups`
(docs/fleet.md, "Geofences": who)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.web.state import services_key
from tests.partner_double import post as create
from tests.support import auth
from tests.test_fleet_fourth_look import create_fence, events, post
from tests.test_fleet_service_base import api, fold_reading_vehicles_afresh, post_folding
from tests.test_fleet_third_look import CENTRE, at_offsets
from tests.test_fleet_tracks import fold, new_vehicle
from tests.triggers_support import Client, create_position_trigger


async def _vehicle(client: Client, plate: str, **data: Any) -> str:
    response = await client.post(
        "/api/v1/entities/vehicle", json={"plate": plate, **data}, headers=auth()
    )
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def test_a_fence_of_a_group_watches_the_vehicles_whose_group_or_groups_name_it(
    client: Client,
) -> None:
    ids = {
        await _vehicle(client, "ABC1D23", group="north"): "ABC1D23",
        await _vehicle(client, "BRA2E19", groups=["south", "north"]): "BRA2E19",
        await _vehicle(client, "XYZ9A87", group="south", groups=["east"]): "XYZ9A87",
    }
    await create_fence(
        client,
        name="depot",
        kind="authorized",
        circle={"lat": -23.55, "lon": -46.63, "radius_m": 500},
        group="north",
    )
    trigger = await create_position_trigger(client)
    start = datetime.now(UTC) - timedelta(minutes=10)
    fixes = [
        {"plate": plate, "time": (start + timedelta(seconds=30 * n)).isoformat(),
         "lat": -23.55 + 0.004 * n, "lon": -46.63, "speed_kmh": 50}
        for plate in ids.values()
        for n in range(8)
    ]  # fmt: skip
    await post(client, trigger, fixes)
    await fold(client)
    exited = await events(client, "vehicle.geofence.exited")
    assert sorted(ids[e["entity"]["id"]] for e in exited) == ["ABC1D23", "BRA2E19"], exited


@pytest.mark.parametrize("how", ["moved_out_and_back", "group_renamed_in_two_steps"])
async def test_a_fence_keeps_a_vehicles_state_while_it_does_not_apply_to_it(
    client: Client, how: str
) -> None:
    """A vehicle parked in its authorized area (group `sp`) leaves it while the fence does not
    apply to it (moved to another group and back; or the group renamed the usual way, the
    fence's `group` first, then the vehicle's): back in scope, its next clear fix outside is
    the exit, as a plan keeps its state through the same (before: the state was dropped, the
    fix back in scope set it silently, and the exit never went out; its way back in was
    announced as an entry with no exit before it)."""
    folding = fold_reading_vehicles_afresh(client)
    circle = {"lat": CENTRE[0], "lon": CENTRE[1], "radius_m": 1000}
    await create_fence(client, name="base", kind="authorized", group="sp", circle=circle)
    fence = await api(client, "GET", "/api/v1/geofences/base", None, 200)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "FEN1A11", group="sp")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    await post_folding(client, trigger, at_offsets("FEN1A11", start, [(0, 0, 0)] * 5, 5), folding)
    vehicle_path, fence_path = (
        "/api/v1/entities/vehicle/FEN1A11",
        f"/api/v1/geofences/{fence['id']}",
    )
    if how == "moved_out_and_back":
        await api(client, "PATCH", vehicle_path, {"group": "north"}, 200)
    else:
        await api(client, "PATCH", fence_path, {"group": "sao-paulo"}, 200)
    away = [(100.0 * e, 0.0, 36.0) for e in range(1, 31)]  # 3 km east, out of scope
    await post_folding(
        client, trigger, at_offsets("FEN1A11", start + timedelta(minutes=5), away, 5), folding
    )
    assert await events(client, "vehicle.geofence.exited") == []
    group = "sp" if how == "moved_out_and_back" else "sao-paulo"
    await api(client, "PATCH", vehicle_path, {"group": group}, 200)
    still_away = [(3000.0 + 100 * i, 0.0, 36.0) for i in range(1, 6)]
    later = start + timedelta(minutes=15)
    await post_folding(client, trigger, at_offsets("FEN1A11", later, still_away, 5), folding)
    exited = await events(client, "vehicle.geofence.exited")
    assert [e["detail"]["geofence"]["name"] for e in exited] == ["base"], exited
    assert exited[0]["occurred_at"] == later
    assert await events(client, "vehicle.geofence.entered") == []


@pytest.mark.parametrize("kind", ["restricted", "authorized"])
async def test_a_fence_a_vehicle_is_moved_into_judges_its_first_fix_from_where_it_was(
    client: Client, kind: str
) -> None:
    """A vehicle put into a fence's group (by an admin; by an ERP's dispatch at the depot)
    crosses the fence while the fold still trusts the entity it read (30 s in the app, 5 s
    here): drives into a restricted area, leaves the route's authorized one. The crossing is
    announced at the first fix the fence judges once the fold reads the entity again, dated
    there. Before, that first fix only set the fence's state, and the crossing was lost for
    good (the docs promised a delay of up to 30 s)."""
    folding = fold_reading_vehicles_afresh(client, vehicle_seconds=5.0)
    circle = {"lat": CENTRE[0], "lon": CENTRE[1], "radius_m": 300}
    await create_fence(client, name="area", kind=kind, group="watch", circle=circle)
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "GRP5A01", group="other")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    away, there = (2000.0, 0.0, 0.0), (0.0, 0.0, 0.0)
    first, then = (away, there) if kind == "restricted" else (there, away)
    await post_folding(client, trigger, at_offsets("GRP5A01", start, [first] * 3, 5), folding)
    await api(client, "PATCH", "/api/v1/entities/vehicle/GRP5A01", {"group": "watch"}, 200)
    crossing = start + timedelta(minutes=5)  # within the fold's trust: not judged
    await post_folding(client, trigger, at_offsets("GRP5A01", crossing, [then] * 3, 5), folding)
    event_type = f"vehicle.geofence.{'entered' if kind == 'restricted' else 'exited'}"
    assert await events(client, event_type) == []
    await asyncio.sleep(5.0)  # the trust runs out: the fold reads the vehicle again
    later = start + timedelta(minutes=6)
    await post_folding(client, trigger, at_offsets("GRP5A01", later, [then] * 3, 5), folding)
    crossed = await events(client, event_type)
    assert [e["detail"]["geofence"]["name"] for e in crossed] == ["area"], crossed
    assert crossed[0]["occurred_at"] == later
    assert (
        await events(
            client,
            "vehicle.geofence.entered" if kind != "restricted" else "vehicle.geofence.exited",
        )
        == []
    )


async def test_a_dwell_candidate_does_not_outlast_the_time_its_fence_does_not_apply(
    client: Client,
) -> None:
    """A fence out of scope keeps only the side a vehicle is on, not a dwell candidate: one
    fix outside (dwell not met), then moved to another group, back inside for 20 minutes and
    out again, and back in scope. Its first fix there starts a new dwell, and the exit is
    dated and placed at that fix once the dwell confirms it (before: the candidate kept from
    55 minutes earlier confirmed it at once, an exit dated then, at the old place)."""
    folding = fold_reading_vehicles_afresh(client)
    circle = {"lat": CENTRE[0], "lon": CENTRE[1], "radius_m": 1000}
    await create_fence(
        client, name="base", kind="authorized", group="sp", circle=circle, dwell_seconds=60
    )
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "STA1A11", group="sp")
    vehicle = "/api/v1/entities/vehicle/STA1A11"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    await post_folding(client, trigger, at_offsets("STA1A11", start, [(0, 0, 0)] * 5, 5), folding)
    glitch = at_offsets("STA1A11", start + timedelta(minutes=5), [(3000, 0, 0)], 5)
    await post_folding(client, trigger, glitch, folding)  # a candidate: the dwell not met
    await api(client, "PATCH", vehicle, {"group": "north"}, 200)
    inside = at_offsets("STA1A11", start + timedelta(minutes=10), [(0, 0, 0)] * 120, 5)
    await post_folding(client, trigger, inside, folding)
    out = at_offsets("STA1A11", start + timedelta(minutes=40), [(3000, 0, 0)] * 3, 5)
    await post_folding(client, trigger, out, folding)
    await api(client, "PATCH", vehicle, {"group": "sp"}, 200)
    later = start + timedelta(minutes=60)
    first = at_offsets("STA1A11", later, [(3000, 0, 0)], 5)
    await post_folding(client, trigger, first, folding)
    assert await events(client, "vehicle.geofence.exited") == []  # one fix: the dwell not met
    dwell = at_offsets("STA1A11", later, [(3000, 0, 0)] * 8, 5)[1:]  # 10 s … 70 s after it
    await post_folding(client, trigger, dwell, folding)
    exited = await events(client, "vehicle.geofence.exited")
    assert [e["occurred_at"] for e in exited] == [later], exited
    assert exited[0]["detail"]["position"] == {"lat": first[0]["lat"], "lon": first[0]["lon"]}
    assert await events(client, "vehicle.geofence.entered") == []


async def test_a_vehicles_groups_are_a_list_of_names(client: Client) -> None:
    for groups in ("north", [""], ["a", "a"], [1]):
        response = await client.post(
            "/api/v1/entities/vehicle", json={"plate": "ABC1D23", "groups": groups}, headers=auth()
        )
        assert response.status == 422, (groups, await response.text())
        assert (await response.json())["errors"][0]["pointer"].startswith("/groups"), groups


async def _listed(client: Client, path: str, headers: dict[str, str], **query: str) -> list[str]:
    response = await client.get(path, params=query, headers=headers)
    page = await response.json()
    assert response.status == 200, page
    return sorted(v["plate"] for v in page["items"])


async def test_a_group_filter_lists_the_vehicles_in_the_group_by_group_or_groups(
    client: Client,
) -> None:
    """`?group=north` lists the vehicles a geofence or plan of group north applies to: those
    whose `group` is north and those with north among their `groups`, through the index or,
    after another filter took it, on the data; a trigger's reads alike."""
    await _vehicle(client, "ABC1D23", group="north", status="active")
    await _vehicle(client, "BRA2E19", group="south", groups=["east", "north"], status="active")
    await _vehicle(client, "XYZ9A87", group="south", groups=["east"], status="active")
    await _vehicle(client, "QRS4T56", groups=["north"], status="inactive")
    admin = "/api/v1/entities/vehicle"
    both = ["ABC1D23", "BRA2E19", "QRS4T56"]
    assert await _listed(client, admin, auth(), group="north") == both
    assert await _listed(client, admin, auth(), status="active", group="north") == both[:2]
    assert await _listed(client, admin, auth(), group="east") == ["BRA2E19", "XYZ9A87"]
    spec = {"name": "erp", "entity_type": "vehicle", "methods": ["GET"]}
    trigger = await create(client, "/api/v1/triggers", spec)
    bearer = {"Authorization": f"Bearer {trigger['token']}"}
    assert await _listed(client, f"/hooks/{trigger['id']}", bearer, group="north") == both


async def test_vehicles_stored_before_groups_were_indexed_are_found_after_the_start_backfill(
    client: Client,
) -> None:
    await _vehicle(client, "BRA2E19", group="south", groups=["north"])
    store = client.app[services_key].store
    entities = store.db["entities"]
    # As an older gateway kept its filter keys: its `group` only.
    await entities.update_one({"nk": "BRA2E19"}, {"$set": {"fk": ["plate=BRA2E19", "group=south"]}})
    assert await _listed(client, "/api/v1/entities/vehicle", auth(), group="north") == []
    await store.db["migrations"].delete_many({})  # a database from before the backfill
    await store.ensure_indexes()  # what every process runs at start
    found = await _listed(client, "/api/v1/entities/vehicle", auth(), group="north")
    assert found == ["BRA2E19"]
