"""The fold, driven on the real database: fixes appended to the track are folded into the
vehicle's last position, odometer and events (issue 10)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine

from gateway.config import ConfigError, Settings
from gateway.doorbell import Doorbell
from gateway.entities import Origin
from gateway.errors import StoreUnavailable
from gateway.fleet.fold import Fold, FoldSettings
from gateway.fleet.geometry import MAX_POSITIONS, haversine_m
from gateway.fleet.odometer import TrackPoint
from gateway.fleet.rule_service import MAX_TENANT_POSITIONS
from gateway.server_clock import ServerClock
from gateway.services import Services, open_services
from gateway.store import Doc
from gateway.store import fleet as fleet_module
from gateway.store import positions as positions_module
from gateway.store.entities import Folded
from gateway.store.fleet import SavedState
from gateway.store.positions import inbox_items
from gateway.web.state import services_key
from tests.partner_double import (
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    post,
)
from tests.support import auth, set_offset
from tests.test_fleet_odometer import ROUTE_M, START, route_points
from tests.test_fleet_rules_api import ring_around
from tests.triggers_support import create_position_trigger, hook

TENANT = "acme"


async def make_vehicle(services: Services, plate: str = "ABC1D23", **data: Any) -> str:
    result = await services.entities.create(
        TENANT, "vehicle", {"plate": plate, **data}, Origin("admin", "test")
    )
    return str(result.entity["_id"])


def fix_doc(point: TrackPoint, **extra: Any) -> Doc:
    doc: Doc = {"t": point.t, "lat": point.lat, "lon": point.lon, **extra}
    if point.accuracy_m is not None:
        doc["accuracy_m"] = point.accuracy_m
    return doc


async def append(
    services: Services, vehicle: str, points: Sequence[TrackPoint], batch: int = 100
) -> None:
    for i in range(0, len(points), batch):
        docs = [fix_doc(p) for p in points[i : i + batch]]
        await services.store.positions.append(TENANT, vehicle, docs, "test")


async def vehicle_data(services: Services, vehicle: str) -> Doc:
    doc = await services.store.entities.get(TENANT, "vehicle", id=vehicle)
    assert doc is not None
    return dict(doc["data"])


async def folded_km(services: Services, vehicle: str) -> float:
    """The odometer in the vehicle's fold state (readings pushed here came from no vehicle
    write, so the vehicle entity does not hold them)."""
    fleet = await services.store.fleet.state(TENANT, vehicle)
    assert fleet is not None
    return float(fleet["state"]["odometer_km"])


def own_fold(services: Services, config: FoldSettings) -> Fold:
    """A fold of the test's own, with other settings than the services' (its events go
    nowhere)."""

    async def relayed(events: Sequence[Doc]) -> None:
        return None

    return Fold(
        services.store,
        services.metrics,
        services.fleet_settings,
        services.fleet_rules,
        on_relayed=relayed,
        doorbell=Doorbell(),
        config=config,
    )


async def events_of(services: Services, event_type: str) -> list[Doc]:
    return await services.events.find(TENANT, event_type=event_type, limit=500)


async def test_a_registered_odometer_is_counted_on_from_not_reset(services: Services) -> None:
    vehicle = await make_vehicle(services, odometer_km=18_250)
    points = route_points()[:200]
    await append(services, vehicle, points, batch=200)
    await services.fold.run_until_idle()
    driven_km = (await vehicle_data(services, vehicle))["odometer_km"] - 18_250
    assert 0 < driven_km < 50  # the first fixes' distance, counted on from 18,250 km


async def test_a_pass_that_wrote_the_vehicle_but_never_committed_is_replaced(
    services: Services,
) -> None:
    """A fold killed between writing the vehicle and committing its pass: the pass that
    commits next has the same version and more fixes; its view wins, counted from where the
    dead one started (the registered odometer), not from the dead one's odometer."""
    vehicle = await make_vehicle(services, odometer_km=18_250)
    await services.relay.run_until_idle()  # the registration's reading, queued for the fold
    points = route_points()[:200]
    await append(services, vehicle, points, batch=200)
    partial = {"odometer_km": 18_250.4}  # what a dead pass over the first fixes wrote
    # (its count started from the registered odometer, which has that reading in it)
    dead = Folded(TENANT, vehicle, partial, 2, start=(18_250, 1), reading_rev=1)
    assert await services.store.entities.set_folded([dead]) == [True]
    await services.fold.run_until_idle()
    data = await vehicle_data(services, vehicle)
    assert data["odometer_km"] == pytest.approx(await folded_km(services, vehicle))
    driven_km = data["odometer_km"] - 18_250
    assert 1 < driven_km < 50 and data["last_position"]["lat"] == points[-1].lat


async def test_a_fold_starting_again_skips_the_registration_its_start_had_in_it(
    services: Services,
) -> None:
    """A fold killed after writing a vehicle whose registration's reading had not reached it
    yet (the relay lagging): the fold that starts again starts from the dead one's start and
    the reading revision it had in it (`fold_start_km`, `fold_start_rev`), so the reading,
    folded after the fixes, is not applied again. Before, the start's revision was not kept
    and the reading took the count back to 18,250 km."""
    vehicle = await make_vehicle(services, odometer_km=18_250)
    points = route_points()[:200]
    await append(services, vehicle, points, batch=200)
    partial = {"odometer_km": 18_250.4}  # what a dead pass over the first fixes wrote
    dead = Folded(TENANT, vehicle, partial, 2, start=(18_250, 1), reading_rev=1)
    assert await services.store.entities.set_folded([dead]) == [True]
    await services.relay.run_until_idle()  # the registration's reading, after the fixes
    await services.fold.run_until_idle()
    driven_km = (await vehicle_data(services, vehicle))["odometer_km"] - 18_250
    assert 1 < driven_km < 50
    assert await events_of(services, "vehicle.odometer.rebaselined") == []


async def test_the_route_appended_in_order_folds_to_its_length(services: Services) -> None:
    vehicle = await make_vehicle(services)
    points = route_points()
    await append(services, vehicle, points, batch=500)
    await services.fold.run_until_idle()
    data = await vehicle_data(services, vehicle)
    assert data["odometer_km"] * 1000 == _approx(ROUTE_M, 0.005)
    assert data["last_position"]["lat"] == points[-1].lat
    assert data["last_position"]["time"].startswith(points[-1].t.strftime("%Y-%m-%dT%H:%M:%S"))
    fleet = await services.store.fleet.state(TENANT, vehicle)
    assert fleet is not None and fleet["state"]["last"]["lat"] == points[-1].lat
    # A position is not an entity change: no entity.updated per fix.
    assert await events_of(services, "entity.updated") == []


async def test_fixes_shuffled_within_a_minute_and_folded_as_they_come_give_the_same(
    services: Services,
) -> None:
    vehicle = await make_vehicle(services)
    points = route_points()[:600]
    length = _length(points)
    rng = random.Random(11)
    shuffled: list[TrackPoint] = []
    windows: dict[int, list[TrackPoint]] = {}
    for p in points:
        windows.setdefault(int((p.t - START).total_seconds() // 60), []).append(p)
    for key in sorted(windows):
        rng.shuffle(windows[key])
        shuffled += windows[key]
    for i in range(0, len(shuffled), 10):  # small requests, each folded before the next
        await append(services, vehicle, shuffled[i : i + 10])
        await services.fold.run_until_idle()
    data = await vehicle_data(services, vehicle)
    assert data["odometer_km"] * 1000 == _approx(length, 0.005)
    assert data["last_position"]["lat"] == points[-1].lat  # never went backwards
    metrics = services.metrics.render().decode()
    assert 'gateway_fleet_fixes_folded_total{outcome="late"}' in metrics


async def test_refused_fixes_stay_in_the_track_flagged_and_counted(services: Services) -> None:
    vehicle = await make_vehicle(services)
    rio = TrackPoint(datetime.now(UTC) - timedelta(minutes=5), -22.9068, -43.1729, 5.0)
    manaus = TrackPoint(rio.t + timedelta(seconds=10), -3.119, -60.0217, 5.0)
    null_island = TrackPoint(rio.t + timedelta(seconds=20), 0.0, 0.0, 5.0)
    next_year = TrackPoint(rio.t + timedelta(days=365), -22.9069, -43.1729, 5.0)
    await append(services, vehicle, [rio, manaus, null_island, next_year])
    await services.fold.run_until_idle()
    track = await services.store.positions.track(TENANT, vehicle, None, None, None, 10)
    assert [doc.get("rejected") for doc in track] == [
        None,
        "impossible_speed",
        "null_island",
        "future",
    ]
    data = await vehicle_data(services, vehicle)
    assert (data["last_position"]["lat"], data["odometer_km"]) == (rio.lat, 0)
    metrics = services.metrics.render().decode()
    for reason in ("impossible_speed", "null_island", "future"):
        assert f'gateway_fleet_fixes_rejected_total{{reason="{reason}"}} 1.0' in metrics


async def test_refused_fixes_are_announced_once_per_reason_and_run_even_folded_twice(
    services: Services, client: Any
) -> None:
    """SPEC §6 quality events: the first fix refused for a reason is announced,
    `vehicle.position.rejected` with its reason, time and place and how many of the same
    inbox document were refused for it; later ones (within an hour of receipt) are not. The
    ids are derived as the fold's other events: a fold that starts again from the checkpoint
    (one killed before writing it) stores none twice. A subscription naming the type gets
    them."""
    vehicle = await make_vehicle(services)
    partner = await create_partner(client, "http://127.0.0.1:9")
    action_id = (await create_action(client, partner["id"]))["id"]
    sub = await create_subscription(client, action_id, ("vehicle.position.rejected",))
    now = datetime.now(UTC).replace(microsecond=0)
    rio = TrackPoint(now - timedelta(minutes=5), -22.9068, -43.1729, 5.0)
    stuck = [TrackPoint(rio.t + timedelta(seconds=s), 0.0, 0.0, 5.0) for s in (10, 20, 30)]
    cell = TrackPoint(rio.t + timedelta(seconds=40), -22.9068, -43.1729, 5000.0)
    ahead = TrackPoint(rio.t + timedelta(hours=2), -22.9068, -43.1729, 5.0)
    await append(services, vehicle, [rio, *stuck, cell, ahead])
    await own_fold(services, FoldSettings()).fold_once()  # its events, no checkpoint
    await services.fold.run_until_idle()  # the same inbox folded again, from the checkpoint
    found = await events_of(services, "vehicle.position.rejected")
    details = sorted((e["detail"] for e in found), key=lambda d: d["reason"])
    assert [(d["reason"], d["count"]) for d in details] == [
        ("future", 1),
        ("inaccurate", 1),
        ("null_island", 3),
    ]
    track = await services.store.positions.track(TENANT, vehicle, None, None, None, 10)
    first_stuck = next(doc for doc in track if doc["t"] == stuck[0].t)
    null_island = next(e for e in found if e["detail"]["reason"] == "null_island")
    assert null_island["detail"]["fix"] == {
        "time": stuck[0].t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "lat": 0.0,
        "lon": 0.0,
        "received_at": first_stuck["at"].isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    assert null_island["occurred_at"] == first_stuck["at"]
    assert null_island["entity"]["id"] == vehicle
    # the tracker still stuck a moment later: the same run, nothing new
    await append(services, vehicle, [TrackPoint(rio.t + timedelta(seconds=50), 0.0, 0.0, 5.0)])
    await services.fold.run_until_idle()
    assert len(await events_of(services, "vehicle.position.rejected")) == 3
    page = await client.get(f"/api/v1/deliveries?subscription_id={sub['id']}", headers=auth())
    kinds = [d["event_type"] for d in (await page.json())["items"]]
    assert kinds == ["vehicle.position.rejected"] * 3


async def test_a_reading_rebaselines_the_odometer_once(services: Services) -> None:
    vehicle = await make_vehicle(services)
    points = route_points()[:50]
    await append(services, vehicle, points)
    await services.fold.run_until_idle()
    reading = {"km": 42_000.0, "at": points[-1].t, "source": "checklist"}
    await services.store.fleet.push_reading(TENANT, vehicle, reading)
    await services.store.fleet.push_reading(TENANT, vehicle, reading)  # resent
    await services.fold.run_until_idle()
    assert await folded_km(services, vehicle) == 42_000.0
    events = await events_of(services, "vehicle.odometer.rebaselined")
    assert len(events) == 1
    assert events[0]["detail"]["to_km"] == 42_000.0
    assert events[0]["detail"]["source"] == "checklist"
    assert events[0]["origin"] == {"kind": "fold"}
    await append(services, vehicle, route_points()[50:60])
    await services.fold.run_until_idle()
    assert (await vehicle_data(services, vehicle))["odometer_km"] > 42_000.0


async def test_no_position_events_unless_a_subscription_names_them(
    services: Services, client: Any
) -> None:
    vehicle = await make_vehicle(services)
    partner = await create_partner(client, "http://127.0.0.1:9")
    action_id = (await create_action(client, partner["id"]))["id"]
    catch_all = await create_subscription(client, action_id, ("vehicle.*",))
    points = [
        TrackPoint(START + timedelta(seconds=10 * i), -23.55 + i * 1e-3, -46.63, 5.0)
        for i in range(30)
    ]
    await append(services, vehicle, points[:10])
    await services.fold.run_until_idle()
    assert await events_of(services, "vehicle.position") == []
    sampled = await create_subscription(client, action_id, ("vehicle.position",), sample_seconds=60)
    assert sampled["sample_seconds"] == 60
    await append(services, vehicle, points[10:])
    await services.fold.run_until_idle()
    events = await events_of(services, "vehicle.position")
    # 200 s of fixes every 10 s, at most one a minute: at 100, 160, 220 and 280 s.
    assert sorted(e["detail"]["t"] for e in events) == [points[i].t for i in (10, 16, 22, 28)]
    # The fix's time as SPEC §3.5 names it (and `last_position`, `vehicle.position.rejected`);
    # `t` stays one release, deprecated.
    assert sorted(e["detail"]["time"] for e in events) == [
        points[i].t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for i in (10, 16, 22, 28)
    ]
    assert all(e["detail"]["time"] == e["data"]["last_position"]["time"] for e in events)
    # Delivered to the subscription that asked, not to the catch-all one.
    for sub, expected in ((sampled, 4), (catch_all, 0)):
        page = await client.get(f"/api/v1/deliveries?subscription_id={sub['id']}", headers=auth())
        kinds = [d["event_type"] for d in (await page.json())["items"]]
        assert kinds.count("vehicle.position") == expected


def _length(points: Sequence[TrackPoint]) -> float:
    return sum(a.distance_m(b) for a, b in itertools.pairwise(points))


def _approx(value: float, rel: float) -> Any:
    return pytest.approx(value, rel=rel)


async def test_an_odometer_written_to_the_vehicle_rebaselines_the_fold(client: Any) -> None:
    services = client.app[services_key]
    created = await create_vehicle(client, "RBT2B34")
    await append(services, created["id"], route_points()[:20])
    await services.fold.run_until_idle()
    patched = await client.patch(
        "/api/v1/entities/vehicle/RBT2B34", json={"odometer_km": 88_000}, headers=auth()
    )
    assert patched.status == 200, await patched.text()
    for _ in range(2):  # the relay queues the reading, the fold takes it
        await services.relay.run_until_idle()
        await services.fold.run_until_idle()
    events = await services.events.find(TENANT, event_type="vehicle.odometer.rebaselined", limit=10)
    assert [e["detail"]["to_km"] for e in events] == [88_000.0]
    assert events[0]["detail"]["source"].startswith("admin")
    await append(services, created["id"], route_points()[20:40])
    await services.fold.run_until_idle()
    data = await vehicle_data(services, created["id"])
    assert 88_000 < data["odometer_km"] < 88_010


async def test_an_admins_odometer_is_not_overwritten_by_a_count_that_has_not_taken_it(
    client: Any,
) -> None:
    """The fold writes its count to a moving vehicle after an admin's PATCH of `odometer_km`
    and before the relay has brought it the reading (the race a live gateway loses now and
    then: 160,000 went back to 152,340.24 until the reading came): the PATCH stays, the
    position still goes, and once the fold has taken the reading, distance adds to it."""
    services = client.app[services_key]
    plate, points = "RBT3C45", route_points()[:60]
    await create_vehicle(client, plate, odometer_km=152_340)
    trigger = await create_position_trigger(client)

    async def send(part: Sequence[TrackPoint]) -> None:
        body = [{"plate": plate, "time": p.t.isoformat(), "lat": p.lat, "lon": p.lon} for p in part]
        status, answer = await hook(client, trigger, body)
        assert status == 200 and answer["summary"]["failed"] == 0, answer

    async def shown() -> Doc:
        response = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())
        assert response.status == 200, await response.text()
        return dict(await response.json())

    await services.relay.run_until_idle()  # the registration's reading, for the fold
    await send(points[:20])
    await services.fold.run_until_idle()
    assert 152_340 < (await shown())["odometer_km"] < 152_341
    await send(points[20:40])
    patched = await client.patch(
        f"/api/v1/entities/vehicle/{plate}", json={"odometer_km": 160_000}, headers=auth()
    )
    assert patched.status == 200, await patched.text()
    await services.fold.run_until_idle()  # the fixes folded and written; no reading yet
    vehicle = await shown()
    assert vehicle["odometer_km"] == 160_000
    assert vehicle["last_position"]["lat"] == points[39].lat
    for _ in range(2):  # the relay queues the reading, the fold takes it
        await services.relay.run_until_idle()
        await services.fold.run_until_idle()
    assert (await shown())["odometer_km"] == 160_000
    await send(points[40:])
    await services.fold.run_until_idle()
    driven_km = _length(points[39:]) / 1000
    assert (await shown())["odometer_km"] == pytest.approx(160_000 + driven_km, abs=0.002)
    events = await services.events.find(TENANT, event_type="vehicle.odometer.rebaselined", limit=9)
    assert 160_000.0 in [e["detail"]["to_km"] for e in events]


async def test_a_partners_late_meter_reading_never_moves_the_odometer_back(
    services: Services,
) -> None:
    vehicle = await make_vehicle(services)
    at = START + timedelta(hours=1)
    push = services.store.fleet.push_reading
    await push(TENANT, vehicle, {"km": 42_000.0, "at": at, "source": "trigger:erp"})
    await push(TENANT, vehicle, {"km": 41_000.0, "at": at, "source": "trigger:erp-late"})
    await services.fold.run_until_idle()
    assert await folded_km(services, vehicle) == 42_000.0
    metrics = services.metrics.render().decode()
    assert 'gateway_fleet_readings_total{outcome="stale"} 1.0' in metrics
    # An admin's correction is authoritative: it may go back.
    await push(TENANT, vehicle, {"km": 41_000.0, "at": at, "source": "admin:fleet-manager"})
    await services.fold.run_until_idle()
    assert await folded_km(services, vehicle) == 41_000.0


async def test_a_fix_later_than_the_state_remembers_finds_its_neighbours_in_the_track(
    services: Services,
) -> None:
    vehicle = await make_vehicle(services)
    points = route_points()[:60]
    late = TrackPoint(points[5].t, points[5].lat + 0.0006, points[5].lon, 8.0)  # 67 m aside
    await append(services, vehicle, points[:5] + points[6:])
    await services.fold.run_until_idle()
    before = (await vehicle_data(services, vehicle))["odometer_km"]
    await append(services, vehicle, [late])  # older than the newest fixes the state keeps
    await services.fold.run_until_idle()
    detour = late.distance_m(points[4]) + late.distance_m(points[6])
    detour -= points[4].distance_m(points[6])
    after = (await vehicle_data(services, vehicle))["odometer_km"]
    assert detour > 20
    assert (after - before) * 1000 == pytest.approx(detour, abs=1.0)  # written to the metre
    assert (await vehicle_data(services, vehicle))["last_position"]["lat"] == points[-1].lat


async def test_a_missing_inbox_number_holds_the_fold_until_it_is_given_up(
    services: Services,
) -> None:
    """A round that took its inbox number and died before writing its document: the fold
    waits at the gap (the round may still land), then skips it and folds what came after."""
    vehicle = await make_vehicle(services)
    points = route_points()[:21]
    await append(services, vehicle, points[:1])  # a round before (what the search stops at)
    await services.store.fleet.take_number()  # the round that never wrote
    await append(services, vehicle, points[1:])

    waiting = own_fold(services, FoldSettings(missing_seconds=3600))
    assert await waiting.run_until_idle() == 1  # the round before, then the gap holds it
    assert (await vehicle_data(services, vehicle))["last_position"]["lat"] == points[0].lat
    fold = own_fold(services, FoldSettings(missing_seconds=0))  # the wait is over
    assert await fold.run_until_idle() == 2  # the number given up, then the round
    data = await vehicle_data(services, vehicle)
    assert data["last_position"]["lat"] == points[-1].lat
    assert await services.store.fleet.checkpoints([0]) == {0: 3}


async def test_an_operators_shorter_gap_gives_a_lost_rounds_number_up_sooner(
    settings: Settings, mongodb_uri: str
) -> None:
    """GATEWAY_FOLD_GAP_SECONDS: the fold in a process so configured waits that long."""
    environ = {"GATEWAY_FOLD_GAP_SECONDS": "2", "GATEWAY_DB_TIMEOUT_MS": "1000"}
    gap = Settings.from_env(environ).fold_gap_seconds
    async with open_services(replace(settings, fold_gap_seconds=gap), mongodb_uri=mongodb_uri) as (
        services
    ):
        vehicle = await make_vehicle(services)
        points = route_points()[:10]
        await append(services, vehicle, points[:5])
        await services.store.fleet.take_number()  # a round that never wrote
        await append(services, vehicle, points[5:])
        assert await services.fold.run_until_idle() == 1  # up to the gap, which waits from now
        await asyncio.sleep(1.0)
        assert await services.fold.run_until_idle() == 0  # still within the 2 s
        await asyncio.sleep(1.1)
        assert await services.fold.run_until_idle() == 2  # given up, then the round
        data = await vehicle_data(services, vehicle)
        assert data["last_position"]["lat"] == points[-1].lat
    with pytest.raises(ConfigError, match="GATEWAY_FOLD_GAP_SECONDS must be between 2"):
        Settings.from_env({"GATEWAY_FOLD_GAP_SECONDS": "1"})
    with pytest.raises(ConfigError, match="must be longer than GATEWAY_DB_TIMEOUT_MS"):
        Settings.from_env({"GATEWAY_FOLD_GAP_SECONDS": "5"})  # the deadline: 5,000 ms


async def test_an_operators_shard_lease_is_the_folds_and_the_relays_and_outlasts_the_deadline(
    aiohttp_client: Any, make_app: Callable[..., Any]
) -> None:
    """GATEWAY_SHARD_LEASE_SECONDS: a process's fold and relay hold their shards' leases that
    long; one no longer than a database deadline is refused."""
    environ = {"GATEWAY_SHARD_LEASE_SECONDS": "3", "GATEWAY_DB_TIMEOUT_MS": "2000"}
    lease = Settings.from_env(environ).shard_lease_seconds
    assert lease == 3 and Settings.from_env({}).shard_lease_seconds == 10
    client = await aiohttp_client(make_app(run_workers=True, shard_lease_seconds=lease))
    leases = client.app[services_key].store.db["leases"]
    query = {"shard": {"$exists": True}, "owner": {"$ne": None}}
    deadline = asyncio.get_running_loop().time() + 30
    while {d["job"] for d in await leases.find(query).to_list(None)} != {
        "fleet-fold",
        "event-relay",
    }:
        assert asyncio.get_running_loop().time() < deadline, "no shard leased"
        await asyncio.sleep(0.05)
    now = datetime.now(UTC)
    for doc in await leases.find(query).to_list(None):
        left = doc["until"].replace(tzinfo=UTC) - now
        assert timedelta(0) < left <= timedelta(seconds=3), doc
    with pytest.raises(ConfigError, match="GATEWAY_SHARD_LEASE_SECONDS must be between 2"):
        Settings.from_env({"GATEWAY_SHARD_LEASE_SECONDS": "1", "GATEWAY_DB_TIMEOUT_MS": "500"})
    with pytest.raises(ConfigError, match="GATEWAY_SHARD_LEASE_SECONDS must be longer than"):
        Settings.from_env({"GATEWAY_SHARD_LEASE_SECONDS": "5"})  # the deadline: 5,000 ms


async def test_several_missing_inbox_numbers_in_sight_are_given_up_after_one_wait(
    services: Services,
) -> None:
    """Rounds lost together (processes killed at once) leave several gaps: the fold waits
    once for all it can see, not once for each in turn."""
    vehicle = await make_vehicle(services)
    points = route_points()[:21]
    fleet = services.store.fleet
    await append(services, vehicle, points[:1])  # a round before (what the search stops at)
    for part in (points[1:11], points[11:]):
        await fleet.take_number()  # a round that never wrote
        await append(services, vehicle, part)
    fold = own_fold(services, FoldSettings(missing_seconds=0.5))
    assert await fold.fold_once() == 1  # the round before; both gaps in sight wait from now
    assert await fold.fold_once() == 0
    await asyncio.sleep(0.6)
    assert await fold.run_until_idle() == 4
    data = await vehicle_data(services, vehicle)
    assert data["last_position"]["lat"] == points[-1].lat


async def test_under_steady_input_a_checkpoint_is_written_a_few_vehicles_a_pass(
    services: Services,
) -> None:
    """Writes are spread over passes (a fleet's writes do not hold its folds up): the shards'
    checkpoint is written only once every vehicle folded before it is; a quiet pass writes
    the rest at once."""
    vehicles = [await make_vehicle(services, f"RBT1A{n:02d}") for n in range(5)]
    for vehicle in vehicles:
        await append(services, vehicle, route_points()[:10])

    config = FoldSettings(checkpoint_seconds=0, entity_seconds=3600, writes_per_pass=2)
    fold = own_fold(services, config)
    await fold.run_pass()  # folds everything; writes two vehicles, then two more
    written = [await services.store.fleet.state(TENANT, v) for v in vehicles]
    assert 0 < sum(doc is not None for doc in written) < len(vehicles)
    assert set((await services.store.fleet.checkpoints(range(16))).values()) == {0}
    await append(services, vehicles[0], route_points()[10:20])  # steady input
    await fold.run_pass()  # the last vehicle: the checkpoint is written, for every shard
    last = await services.store.fleet.last_number()
    assert set((await services.store.fleet.checkpoints(range(16))).values()) == {last}
    assert all([await services.store.fleet.state(TENANT, v) is not None for v in vehicles])
    data = await vehicle_data(services, vehicles[0])
    assert data["last_position"]["lat"] == route_points()[19].lat


async def test_a_deleted_geofence_or_plan_leaves_the_vehicles_fold_state(client: Any) -> None:
    services = client.app[services_key]
    vehicle = (await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"}))["id"]
    points = route_points()
    circle = {"lat": points[0].lat, "lon": points[0].lon, "radius_m": 500}
    fence = await post(
        client, "/api/v1/geofences", {"name": "depot", "kind": "authorized", "circle": circle}
    )
    plan = await post(client, "/api/v1/maintenance-plans", {"name": "oil", "every_km": 10_000})
    await append(services, vehicle, points[:5])
    await services.fold.run_until_idle()
    before = await services.store.fleet.state(TENANT, vehicle)
    assert before is not None
    assert list(before["state"]["fences"]) == [fence["id"]]
    assert list(before["state"]["plans"]) == [plan["id"]]
    for path in (f"/api/v1/geofences/{fence['id']}", f"/api/v1/maintenance-plans/{plan['id']}"):
        assert (await client.delete(path, headers=auth())).status == 204
    await append(services, vehicle, points[5:10])
    await services.fold.run_until_idle()
    after = await services.store.fleet.state(TENANT, vehicle)
    assert after is not None and after["state"]["fences"] == {} and after["state"]["plans"] == {}


async def test_a_vehicle_folded_beside_one_whose_fix_made_an_event_keeps_being_folded(
    client: Any,
) -> None:
    """A pass in which one vehicle leaves a fence (an event) and another only drives on: the
    other one is not taken for deleted by the passes that follow (its state, odometer and
    fixes go on), found by bench/soak.py --mix positions."""
    services = client.app[services_key]
    leaving = (await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"}))["id"]
    driving = (await post(client, "/api/v1/entities/vehicle", {"plate": "XYZ9876"}))["id"]
    points = route_points()[:60]
    circle = {"lat": points[0].lat, "lon": points[0].lon, "radius_m": 500}
    await post(
        client, "/api/v1/geofences", {"name": "depot", "kind": "authorized", "circle": circle}
    )
    away = [replace(p, lat=p.lat + 1) for p in points]  # far from the fence: never crosses
    await append(services, leaving, points[:40])
    await append(services, driving, away[:30])
    await services.fold.run_until_idle()
    (exited,) = await events_of(services, "vehicle.geofence.exited")
    assert exited["entity"]["id"] == leaving
    await append(services, driving, away[30:])
    await services.fold.run_until_idle()
    state = await services.store.fleet.state(TENANT, driving)
    assert state is not None and state["state"]["last"]["lat"] == away[-1].lat
    driven = sum(haversine_m(a.lat, a.lon, b.lat, b.lon) for a, b in itertools.pairwise(away))
    assert (await vehicle_data(services, driving))["odometer_km"] * 1000 == _approx(driven, 0.01)


async def test_a_parked_vehicle_comes_due_by_time_on_the_folds_clock(client: Any) -> None:
    """A plan's time interval comes due without a fix: the fold's clock ticks the tenants
    that have time-based plans (hourly), and the fold runs their vehicles' plans then."""
    services = client.app[services_key]
    vehicle = (await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"}))["id"]
    plan = await post(
        client,
        "/api/v1/maintenance-plans",
        {"name": "revisão", "every_km": 10_000, "every_days": 30},
    )
    points = route_points()[:5]
    await append(services, vehicle, points)
    await services.fold.run_until_idle()
    assert await events_of(services, "vehicle.maintenance.due") == []
    # The clock's own pass: a tick for this tenant (it has a time-based plan).
    await services.fold.run_pass()
    ticks = [
        item
        for doc in await services.store.db["fleet_inbox"].find({}).to_list(None)
        for item in doc["items"]
        if item["k"] == "tick"
    ]
    assert [t["tenant"] for t in ticks] == [TENANT]
    # A month later, parked: due by time, once.
    later = points[-1].t + timedelta(days=31)
    for _ in range(2):
        await services.store.fleet.push_ticks([TENANT], later)
        await services.fold.run_until_idle()
    (due,) = await events_of(services, "vehicle.maintenance.due")
    assert due["detail"]["reason"] == "time" and due["detail"]["plan"]["id"] == plan["id"]
    assert due["entity"]["id"] == vehicle


async def test_a_checkpoint_is_never_written_past_a_state_whose_write_failed(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the first state write fails. The checkpoint waits for that vehicle's
    state to be written on a later pass, never skipping it."""
    vehicles = [await make_vehicle(services, f"RBT1A{n:02d}") for n in range(3)]
    for vehicle in vehicles:
        await append(services, vehicle, route_points()[:10])
    store = services.store.fleet
    real = store.save_states
    failures = [StoreUnavailable("the database went away")]

    async def flaky(saved: Sequence[SavedState]) -> None:
        if failures:
            raise failures.pop()
        await real(saved)

    monkeypatch.setattr(store, "save_states", flaky)
    config = FoldSettings(checkpoint_seconds=0, entity_seconds=3600, writes_per_pass=1)
    fold = own_fold(services, config)
    with pytest.raises(StoreUnavailable):
        await fold.run_pass()
    for _ in range(4):
        await fold.run_pass()
        written = [await store.state(TENANT, v) is not None for v in vehicles]
        if set((await store.checkpoints(range(16))).values()) != {0}:
            assert all(written)  # a checkpoint only once every vehicle's state is written
    assert set((await store.checkpoints(range(16))).values()) == {await store.last_number()}


async def test_a_quiet_fold_writes_everything_a_few_vehicles_a_write(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold that goes quiet writes every vehicle it holds, `writes_per_pass` a write: one
    write of a whole fleet's states and entities (1,000 vehicles after a takeover) outlasted
    the database deadline on a loaded server, and each retry wrote all of them again. A write
    that fails leaves only the vehicles not written yet for the next pass."""
    vehicles = [await make_vehicle(services, f"RBT1A{n:02d}") for n in range(5)]
    for vehicle in vehicles:
        await append(services, vehicle, route_points()[:10])
    states, entities = services.store.fleet, services.store.entities
    real_states, real_entities = states.save_states, entities.set_folded
    sizes: dict[str, list[int]] = {"states": [], "entities": []}
    failures = [StoreUnavailable("the database went away")]

    async def save_states(saved: Sequence[SavedState]) -> None:
        sizes["states"].append(len(saved))
        if len(sizes["states"]) == 2 and failures:  # the second write of the first pass
            raise failures.pop()
        await real_states(saved)

    async def set_folded(folds: Sequence[Folded]) -> list[bool | BaseException]:
        sizes["entities"].append(len(folds))
        return await real_entities(folds)

    monkeypatch.setattr(states, "save_states", save_states)
    monkeypatch.setattr(entities, "set_folded", set_folded)
    config = FoldSettings(entity_seconds=3600, writes_per_pass=2, quiet_seconds=0)
    fold = own_fold(services, config)
    with pytest.raises(StoreUnavailable):
        await fold.run_pass()  # folds all five; quiet at once: writes two, then fails
    assert sizes["states"] == [2, 2]
    assert set((await states.checkpoints(range(16))).values()) == {0}
    await fold.run_pass()  # the three left, two and one (then a checkpoint of nothing new)
    assert [n for n in sizes["states"] if n] == [2, 2, 2, 1]
    assert max(sizes["entities"]) == 2 and sum(sizes["entities"]) >= len(vehicles)
    assert all([await states.state(TENANT, v) is not None for v in vehicles])
    assert set((await states.checkpoints(range(16))).values()) == {await states.last_number()}
    for vehicle in vehicles:
        data = await vehicle_data(services, vehicle)
        assert data["last_position"]["lat"] == route_points()[9].lat


async def test_fixes_a_process_on_a_host_whose_clock_is_behind_stored_are_not_counted_as_fold_lag(
    services: Services,
) -> None:
    """Fixes stored through a process on a host 45 s behind the database server's clock were
    stamped with its host's clock: the fold of a process on the right clock, folding them at
    once, observed 45 s of fold lag for each (alert `GatewayFleetFoldLagHigh`). The database
    runs on the right clock here; this process's wall clock is set back for the append."""
    vehicle = await make_vehicle(services)
    server_clock = ServerClock(services.store, services.metrics)
    try:
        with time_machine.travel(datetime.now(UTC) - timedelta(seconds=45)):
            await server_clock.measure()
            await append(services, vehicle, route_points()[:5])
        await server_clock.measure()  # now a process on the right clock
        assert await own_fold(services, FoldSettings()).run_until_idle() == 1
    finally:
        set_offset(timedelta())

    metrics = services.metrics.render().decode()
    assert "gateway_fleet_fold_lag_seconds_count 5.0" in metrics
    assert 'gateway_fleet_fold_lag_seconds_bucket{le="1.0"} 5.0' in metrics


async def test_a_round_killed_more_than_a_day_before_the_next_inbox_document_is_folded(
    services: Services, monkeypatch: pytest.MonkeyPatch, gateway_time: Callable[[datetime], None]
) -> None:
    """A gateway killed between a round's insert and its inbox write in a quiet fleet (a
    weekend, a night without ticks): the next inbox document, whose time bounds the fold's
    search for that round's fixes from above, comes more than a day later. The fold gives the
    number up when it sees the gap, and must still find the round's fixes (they carry its
    number, and an earlier round's fixes are just before them), not stop a day short of them."""

    gateway_time(datetime.now(UTC) - timedelta(hours=25))  # a day and an hour ago
    dead = False
    real_put = positions_module._Inbox.put_round

    async def put_round(inbox: Any, seq: int, docs: list[Doc]) -> None:
        if not dead:
            await real_put(inbox, seq, docs)

    monkeypatch.setattr(positions_module._Inbox, "put_round", put_round)
    vehicle = await make_vehicle(services)
    points = [replace(p, t=p.t - timedelta(days=1)) for p in route_points()[:30]]
    await append(services, vehicle, points[:10])  # round 1
    dead = True
    await append(services, vehicle, points[10:20])  # round 2: stored, its process killed
    dead = False
    gateway_time(datetime.now(UTC))
    await append(services, vehicle, points[20:])  # round 3, a day and an hour later
    fold = own_fold(services, FoldSettings(missing_seconds=0))
    assert await fold.run_until_idle() == 3
    given_up = await services.store.fleet.document(2)
    assert given_up is not None and len(inbox_items(given_up)) == 10
    assert await folded_km(services, vehicle) == pytest.approx(_length(points) / 1000, rel=1e-3)


async def test_a_round_killed_before_its_inbox_write_with_no_round_after_it_is_folded_once(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed between a round's insert and its inbox write in a quiet fleet: no
    later inbox document makes the round's number a gap between two, but the counter is past
    the last one. The fold waits `missing_seconds` for that number as for any gap (the round
    may still be writing), then gives it up with the fixes the round stored, folded once."""
    vehicle = await _lost_round_two(services, monkeypatch)
    points = route_points()[:20]
    waiting = own_fold(services, FoldSettings(missing_seconds=3600))
    assert await waiting.run_until_idle() == 1  # round 1; number 2 may still be being written
    assert await services.store.fleet.document(2) is None
    assert (await vehicle_data(services, vehicle))["last_position"]["lat"] == points[9].lat
    fold = own_fold(services, FoldSettings(missing_seconds=0.5))
    assert await fold.fold_once() == 0  # number 2 waits from now
    await _waited_out(fold, 2)
    assert await fold.run_until_idle() == 1  # given up with round 2's fixes, and folded
    given_up = await services.store.fleet.document(2)
    assert given_up is not None and len(inbox_items(given_up)) == 10
    assert (await vehicle_data(services, vehicle))["last_position"]["lat"] == points[-1].lat
    assert await folded_km(services, vehicle) == pytest.approx(_length(points) / 1000, rel=1e-3)
    assert await own_fold(services, FoldSettings(missing_seconds=0)).run_until_idle() == 0
    assert await folded_km(services, vehicle) == pytest.approx(_length(points) / 1000, rel=1e-3)


async def test_a_round_handing_on_under_a_new_number_whose_answer_was_lost_is_folded_once(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round whose number was given up before its insert landed (a fold gave it up with
    nothing: the round was frozen between taking its number and inserting) hands its fixes on
    under a new number. If that write lands but its answer is lost (a timeout), the round is
    finished later: it must not hand the same fixes on under yet another number, or the fold
    takes them twice (the second time as late fixes, whose detours lengthen the odometer)."""
    fleet = services.store.fleet
    vehicle = await make_vehicle(services)
    points = route_points()[:40]
    await append(services, vehicle, points[:20])
    real_take, real_put = fleet.take_number, fleet.put
    given_up: list[int] = []
    lost: list[int] = []

    async def take_then_given_up() -> int:
        seq = await real_take()
        if not given_up:  # the round's own number: a fold gives it up meanwhile
            given_up.append(seq)
            assert await fleet.give_up(seq, [])
        return seq

    async def put_answer_lost(seq: int, items: Sequence[Doc]) -> None:
        await real_put(seq, items)
        if seq not in given_up and not lost:  # the hand-on under a new number
            lost.append(seq)
            raise StoreUnavailable("timed out")

    monkeypatch.setattr(fleet, "take_number", take_then_given_up)
    monkeypatch.setattr(fleet, "put", put_answer_lost)
    await append(services, vehicle, points[20:])
    await _handed_on_once_then_folded(services, monkeypatch, vehicle, points, lambda: bool(lost))


async def test_a_round_whose_given_up_number_holds_part_of_its_fixes_is_folded_once(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold gave a frozen round's number up while the round's insert was landing, with the
    half of its fixes stored by then; the round, awake, hands the other half on under a new
    number, and that write lands but its answer is lost (a timeout). Finished later, the round
    must subtract what the given-up document holds again, not hand that half on a second
    time (the fold would take it twice, the odometer lengthened by the late fixes' detours)."""
    fleet = services.store.fleet
    vehicle = await make_vehicle(services)
    points = route_points()[:40]
    await append(services, vehicle, points[:20])
    real_put = fleet.put
    puts: list[int] = []

    async def put(seq: int, items: Sequence[Doc]) -> None:
        puts.append(seq)
        if len(puts) == 1:  # the round's own number: given up with half of its fixes
            [item] = items
            assert await fleet.give_up(seq, [{**item, "fixes": item["fixes"][:10]}])
        await real_put(seq, items)
        if len(puts) == 2:  # the other half, under a new number: landed, answer lost
            raise StoreUnavailable("timed out")

    monkeypatch.setattr(fleet, "put", put)
    await append(services, vehicle, points[20:])
    await _handed_on_once_then_folded(services, monkeypatch, vehicle, points, lambda: len(puts) > 2)


async def _handed_on_once_then_folded(
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    vehicle: str,
    points: Sequence[TrackPoint],
    failed: Callable[[], bool],
) -> None:
    """Once the injected failure has happened (`failed`) and the round, finished in the
    background, is done: each fix is in the inbox once, and the fold counts the track once."""
    for _ in range(200):
        if failed() and not services.store.positions.inserts._finishing:
            break
        await asyncio.sleep(0.05)
    monkeypatch.undo()
    docs = await services.store.db["fleet_inbox"].find({}).sort("_id", 1).to_list(None)
    ids = [item["id"] for doc in docs for item in inbox_items(doc) if item.get("k") == "fix"]
    assert len(ids) == len(set(ids)) == len(points)  # each fix handed on once
    await own_fold(services, FoldSettings(missing_seconds=0)).run_until_idle()
    assert await folded_km(services, vehicle) == pytest.approx(_length(points) / 1000, rel=1e-3)


async def test_a_late_fix_never_takes_as_neighbour_a_fix_stored_but_not_folded_yet(
    services: Services,
) -> None:
    """A store-and-forward upload in several requests: the fold takes the first request's
    round while the next ones are already stored. A late fix of the first round must be
    measured between the fixes folded around it, not against a fix of a later round that the
    fold has not taken yet (its detour would be counted against the wrong neighbours, and the
    odometer would not be the track's length once everything is folded)."""
    vehicle = await make_vehicle(services)
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    east = 50.0 / 101_000  # about 50 m of longitude at this latitude, in degrees

    def point(seconds: int, steps_east: float, north_m: float = 0.0) -> TrackPoint:
        return TrackPoint(
            start + timedelta(seconds=seconds), -23.5 + north_m / 111_195, -46.6 + steps_east * east
        )

    live = [point(10 * n, n) for n in range(40)]  # 400 s driving east, 50 m each 10 s
    await append(services, vehicle, live)
    fold = own_fold(services, FoldSettings(batch=1))  # one inbox document a read
    await fold.run_until_idle()
    # The upload: two requests, each an older fix between the second and third live ones,
    # 60 m off the road on either side.
    late = [point(12, 1.2, north_m=60), point(15, 1.5, north_m=-60)]
    await append(services, vehicle, late[:1])
    await append(services, vehicle, late[1:])
    await fold.run_until_idle()
    track = sorted([*live, *late], key=lambda p: p.t)
    assert await folded_km(services, vehicle) == pytest.approx(_length(track) / 1000, abs=0.001)


async def _lost_round_two(services: Services, monkeypatch: pytest.MonkeyPatch) -> str:
    """A vehicle whose second round (number 2) stored its fixes and never wrote its inbox
    document (its process killed in between)."""
    lost = {"on": False}
    real_put = positions_module._Inbox.put_round

    async def put_round(inbox: Any, seq: int, docs: list[Doc]) -> None:
        if not lost["on"]:
            await real_put(inbox, seq, docs)

    monkeypatch.setattr(positions_module._Inbox, "put_round", put_round)
    vehicle = await make_vehicle(services)
    points = route_points()[:20]
    await append(services, vehicle, points[:10])  # number 1
    lost["on"] = True
    await append(services, vehicle, points[10:])  # number 2
    lost["on"] = False
    return vehicle


async def _waited_out(fold: Fold, number: int) -> None:
    """Until `number` has been missing for the fold's `missing_seconds`."""
    wait = fold._config.missing_seconds
    for _ in range(500):
        if time.monotonic() - fold._gaps[number] >= wait:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"number {number} never waited out")


@pytest.mark.parametrize("later_written", [False, True])
async def test_a_number_taken_a_moment_ago_is_not_given_up_with_a_long_lost_one(
    services: Services, monkeypatch: pytest.MonkeyPatch, later_written: bool
) -> None:
    """Number 2 is lost and waited out; number 3 was taken a moment ago (a reading whose
    inbox write is in flight), with or without a later document (4) already written: 2 is
    given up, 3 waits its own time and lands."""
    vehicle = await _lost_round_two(services, monkeypatch)
    fold = own_fold(services, FoldSettings(missing_seconds=0.5))
    assert await fold.fold_once() == 1
    assert await fold.fold_once() == 0  # number 2 starts its wait
    await _waited_out(fold, 2)
    release = asyncio.Event()
    real_put = fleet_module.FleetStore.put

    async def held_put(store: Any, seq: int, items: Any) -> None:
        if seq == 3:
            await release.wait()
        await real_put(store, seq, items)

    monkeypatch.setattr(fleet_module.FleetStore, "put", held_put)
    reading = asyncio.create_task(
        services.store.fleet.push_reading(TENANT, vehicle, {"km": 1.0, "at": None, "source": "x"})
    )
    while await services.store.fleet.last_number() < 3:
        await asyncio.sleep(0.01)
    if later_written:
        await services.store.fleet.put(await services.store.fleet.take_number(), [])
    await fold.fold_once()
    given_up = await services.store.fleet.document(2)
    assert given_up is not None and given_up.get("given_up")
    assert await services.store.fleet.document(3) is None  # still waited for
    release.set()
    await asyncio.wait_for(reading, 10)  # written where the fold reads it
    third = await services.store.fleet.document(3)
    assert third is not None and not third.get("given_up")


async def test_the_fold_gives_the_loop_a_turn_between_fixes_inside_large_fences(
    client: Any,
) -> None:
    """Each fix within a polygon fence's box is judged against its edges (through the
    fence's grid since 2026-12-07; walking them all before), on the event loop every
    tenant's requests share (60 outlines of 2,000 corners held it 4.4 s for one vehicle's 40
    fixes): the fold yields between fixes, so with as many corners as a tenant may have
    (50,000) another request waits for one fix's work, not for a whole batch's. Measured in
    CPU time of this thread between the other request's turns, with a wide margin: about
    1.9 s for this batch before, some tens of milliseconds now."""
    plate, points = "RBT3C45", route_points()[:300]
    await create_vehicle(client, plate)
    lat, lon = points[0].lat, points[0].lon
    outlines = MAX_TENANT_POSITIONS // MAX_POSITIONS
    for i in range(outlines):
        ring = ring_around(lat, lon, 0.3 + 0.01 * i, MAX_POSITIONS)
        body = {
            "name": f"zona {i}",
            "kind": "authorized",
            "margin_m": 10_000,
            "polygon": {"type": "Polygon", "coordinates": [ring]},
        }
        await post(client, "/api/v1/geofences", body)
    trigger = await create_position_trigger(client)
    body = [{"plate": plate, "time": p.t.isoformat(), "lat": p.lat, "lon": p.lon} for p in points]
    status, answer = await hook(client, trigger, body)
    assert status == 200 and answer["summary"]["failed"] == 0, answer
    held, folding = 0.0, True

    async def other_request() -> None:
        nonlocal held
        while folding:
            started = time.thread_time()
            await asyncio.sleep(0)
            held = max(held, time.thread_time() - started)

    other = asyncio.create_task(other_request())
    await client.app[services_key].fold.run_until_idle()
    folding = False
    await other
    track = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())
    assert (await track.json())["last_position"]["lat"] == points[-1].lat
    # Below the 1.9 s the whole batch held before. The full suite once saw 0.66 s: a step
    # other than one fix's walk holds the loop that long at times (not yet found; the rules'
    # polygons are rebuilt on the loop), so the bound is not the tens of milliseconds a fix takes.
    assert held < 1.2, f"the loop was held {held:.2f} s of CPU while {len(points)} fixes folded"
