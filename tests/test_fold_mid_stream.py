"""The fold when things change under it (issue 10, SPEC §6): a tracker's buffer uploaded hours
late, a fold that loses its shards mid-stream to another, a vehicle deleted or parked without
a tracker. Fixes go in through HTTP (a position trigger) or the append store, on the real
embedded database; folds are the app's own or a second `Fold` on the same database (what
another process would be)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.doorbell import Doorbell
from gateway.errors import StoreUnavailable
from gateway.fleet.fold import FOLD_SHARDS, Fold, FoldSettings
from gateway.fleet.odometer import TrackPoint
from gateway.shares import Shares
from gateway.store.fleet import shard_of
from gateway.web.state import services_key
from tests.flow_support import drain
from tests.partner_double import create_action, create_partner, create_subscription
from tests.support import auth
from tests.test_driver_send_cancel import CancelOnSend
from tests.test_fleet_fold import fix_doc, own_fold
from tests.test_fleet_odometer import route_points
from tests.triggers_support import Client, create_position_trigger, hook

PLATE = "ABC1D23"


def _fix(point: TrackPoint, plate: str = PLATE) -> dict[str, Any]:
    time = point.t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body: dict[str, Any] = {"plate": plate, "time": time, "lat": point.lat, "lon": point.lon}
    if point.accuracy_m is not None:
        body["accuracy_m"] = point.accuracy_m
    return body


async def _post_fixes(
    client: Client, trigger: dict[str, Any], points: Sequence[TrackPoint]
) -> None:
    for i in range(0, len(points), 500):
        status, body = await hook(client, trigger, [_fix(p) for p in points[i : i + 500]])
        assert status == 200, body


async def _vehicle(client: Client, plate: str = PLATE, **data: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/entities/vehicle", json={"plate": plate, **data}, headers=auth()
    )
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def _get_vehicle(client: Client, plate: str = PLATE) -> dict[str, Any]:
    response = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def _inbox_holds(client: Client, count: int) -> None:
    inbox = client.app[services_key].store.db["fleet_inbox"]
    for _ in range(200):
        if await inbox.count_documents({}) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the round's inbox document never landed")


def _length_m(points: Sequence[TrackPoint]) -> float:
    return sum(a.distance_m(b) for a, b in itertools.pairwise(points))


async def test_a_trackers_buffer_uploaded_after_its_live_fixes_adds_the_trip_once(
    client: Client,
) -> None:
    """Store-and-forward: the tracker lost its network after A, came back at B and sent its
    live fixes first (more than the fold state keeps), then its buffer of the hours between
    in one batch. Each buffered fix adds its detour between its neighbours, the one folded
    just before it included: the odometer is the trip's length, not the buffer's distances
    to A and B added up."""
    await _vehicle(client)
    trigger = await create_position_trigger(client)
    points = route_points()[:400]
    first, buffered, live = points[:1], points[1:300], points[300:]
    await _post_fixes(client, trigger, first + live)
    services = client.app[services_key]
    await services.fold.run_until_idle()
    await _post_fixes(client, trigger, buffered)
    await services.fold.run_until_idle()
    data = await _get_vehicle(client)
    assert data["odometer_km"] * 1000 == pytest.approx(_length_m(points), rel=0.005)
    assert data["last_position"]["lat"] == points[-1].lat


async def test_a_fold_taking_over_mid_stream_repeats_the_same_events_not_new_ones(
    client: Client,
) -> None:
    """Fold A folds two rounds and stores their events, then loses its shards before writing
    anything (killed, or its leases expired); fold B takes over from the checkpoint and finds
    a third round, with a fix dated between the first two. B must make the events A made (the
    same ids: stored once), whatever rounds each of them happened to read in one pass: so
    the exit is dated at the fix that was folded first, not at the earliest one."""
    services = client.app[services_key]
    vehicle = (await _vehicle(client))["id"]
    start = route_points()[0]
    circle = {"lat": start.lat, "lon": start.lon, "radius_m": 300}
    fence = {"name": "depot", "kind": "authorized", "circle": circle, "margin_m": 10}
    response = await client.post("/api/v1/geofences", json=fence, headers=auth())
    assert response.status == 201, await response.text()
    inside = TrackPoint(start.t, start.lat, start.lon, 5.0)
    far = TrackPoint(start.t + timedelta(seconds=60), start.lat + 0.02, start.lon, 5.0)
    between = TrackPoint(start.t + timedelta(seconds=30), start.lat + 0.01, start.lon, 5.0)
    for point in (inside, far):
        await services.store.positions.append("acme", vehicle, [fix_doc(point)], "test")
    fold_a = own_fold(services, FoldSettings())
    assert await fold_a.fold_once() == 2  # events stored, nothing written: then it is gone
    await services.store.positions.append("acme", vehicle, [fix_doc(between)], "test")
    fold_b = own_fold(services, FoldSettings())
    assert await fold_b.run_until_idle() == 3
    exits = await services.events.find("acme", event_type="vehicle.geofence.exited", limit=10)
    assert [e["occurred_at"] for e in exits] == [far.t]


async def test_a_fold_working_through_a_backlog_keeps_its_shards_from_another_process(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fold renewed its shard leases only between passes, and a pass folds until nothing
    new is left: through input longer to fold than its leases last (a fleet's buffers sent
    after an outage, a steady stream) it renewed nothing, and another process took its
    shards as a dead one's while it still folded them."""
    services = client.app[services_key]
    vehicle = (await _vehicle(client))["id"]
    points = route_points()[:300]
    for point in points:  # a round each: the fold reads them one at a time (`batch`)...
        await services.store.positions.append("acme", vehicle, [fix_doc(point)], "test")
    inbox = services.store.fleet
    read = inbox.after

    async def slow_read(after: int, limit: int) -> Any:  # ...each read 15 ms: 4.5 s of them
        await asyncio.sleep(0.015)
        return await read(after, limit)

    monkeypatch.setattr(inbox, "after", slow_read)
    job, ttl = "fold-backlog", 1.0

    def share(owner: str) -> Shares:
        return Shares(services.store, job, FOLD_SHARDS, owner=owner, ttl_seconds=ttl)

    mine, other = share("a"), share("b")
    folded = services.metrics.fold_fixes.labels("accepted")
    fold = Fold(
        services.store,
        services.metrics,
        services.fleet_settings,
        services.fleet_rules,
        on_relayed=services.fanout,
        doorbell=Doorbell(),
        shares=mine,
        config=FoldSettings(batch=1),
    )
    running = asyncio.create_task(fold.run())
    try:
        await asyncio.sleep(2.5 * ttl)
        assert 0 < folded._value.get() < len(points)  # mid-backlog, mid-pass
        assert await other.refresh() == frozenset()  # every shard held, and renewed
        assert len(mine.mine) == FOLD_SHARDS
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_fold_cancelled_as_its_command_goes_out_stops(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One cancellation stops a fold wherever it lands: the backlog test above hung once in
    CI in its `gather`, a fold cancelled while the driver sent a command (on 3.11 the send
    returned instead of raising) folding on for good (tests/test_driver_send_cancel.py)."""
    services = client.app[services_key]
    vehicle = (await _vehicle(client))["id"]
    for point in route_points()[:100]:
        await services.store.positions.append("acme", vehicle, [fix_doc(point)], "test")
    inbox = services.store.fleet
    read = inbox.after

    async def slow_read(after: int, limit: int) -> Any:  # mid-backlog for 1.5 s: the fold's
        await asyncio.sleep(0.015)  # own reads, none of its writes (a group commit's task)
        return await read(after, limit)

    monkeypatch.setattr(inbox, "after", slow_read)
    fold = Fold(
        services.store,
        services.metrics,
        services.fleet_settings,
        services.fleet_rules,
        on_relayed=services.fanout,
        doorbell=Doorbell(),
        shares=Shares(services.store, "fold-stop", FOLD_SHARDS, owner="a", ttl_seconds=1.0),
        config=FoldSettings(batch=1),
    )
    sends = CancelOnSend(monkeypatch)
    running = sends.start(fold.run())
    await asyncio.sleep(0.3)  # under way
    sends.arm(running)
    try:
        async with asyncio.timeout(10):
            await asyncio.gather(running, return_exceptions=True)
    finally:
        running.cancel()  # a failed test's fold does not fold on into the next test
    assert sends.fired and running.cancelled()


async def test_a_vehicle_without_a_tracker_comes_due_by_time(client: Client) -> None:
    """A parked vehicle that never sent a fix (no tracker at all) has its time-based plans
    counted on the fold's clock like any other: the first tick starts the plan, the tick a
    plan interval later announces it, once."""
    services = client.app[services_key]
    vehicle = (await _vehicle(client, odometer_km=52_000))["id"]
    other = (await _vehicle(client, "XYZ9876", group="rio"))["id"]
    for plan in (
        {"name": "revisão", "every_km": 10_000, "every_days": 30, "start_km": 50_000},
        {"name": "rio", "every_km": 5_000, "every_days": 10, "group": "rio"},
    ):
        response = await client.post("/api/v1/maintenance-plans", json=plan, headers=auth())
        assert response.status == 201, await response.text()
    await services.fold.run_pass()  # the clock's first tick: the plans start counting
    await services.fold.run_until_idle()
    started = await services.store.fleet.state("acme", vehicle)
    assert started is not None and started["state"]["last"] is None
    later = datetime.now(UTC) + timedelta(days=31)
    for _ in range(2):
        await services.store.fleet.push_ticks(["acme"], later)
        await services.fold.run_until_idle()
    response = await client.get("/api/v1/events?type=vehicle.maintenance.due", headers=auth())
    assert response.status == 200
    dues = (await response.json())["items"]
    assert sorted((d["entity"]["id"], d["detail"]["plan"]["name"]) for d in dues) == sorted(
        [(vehicle, "revisão"), (other, "revisão"), (other, "rio")]
    )
    assert {d["detail"]["reason"] for d in dues} == {"time"}
    assert {d["detail"]["odometer_km"] for d in dues if d["entity"]["id"] == vehicle} == {52_000}


async def test_a_deleted_vehicle_is_folded_no_more_and_its_fold_state_goes(
    client: Client, aiohttp_client: Any, make_app: Any
) -> None:
    """A vehicle deleted while no geofence or plan applies to it: its fold state goes once
    the deletion is relayed, and the fixes another process still accepts for it (it trusts a
    plate it resolved for 30 s; the deleting process forgets it at once) are kept in the track
    but not folded into a new state."""
    services = client.app[services_key]
    other = await aiohttp_client(make_app())  # a second gateway process, same database
    rounds = other.app[services_key].store.positions.inserts  # its fold inbox writes

    async def folded() -> None:
        await rounds.settled(10)
        await services.fold.run_until_idle()

    await _vehicle(client)
    trigger = await create_position_trigger(client)
    points = route_points()[:40]
    await _post_fixes(other, trigger, points[:20])  # the other process resolves the plate
    await folded()
    vehicle = (await _get_vehicle(client))["id"]
    assert await services.store.fleet.state("acme", vehicle) is not None
    deleted = await client.delete(f"/api/v1/entities/vehicle/{PLATE}", headers=auth())
    assert deleted.status == 204, await deleted.text()
    refused = await hook(client, trigger, [_fix(p) for p in points[20:22]])
    # This process forgot the plate with the vehicle: each fix is an unknown vehicle's.
    assert refused[0] == 207 and refused[1]["summary"]["failed"] == 2, refused
    await _post_fixes(other, trigger, points[20:])  # the other one still knows it
    await drain(services)
    await folded()
    assert await services.store.fleet.state("acme", vehicle) is None
    await _post_fixes(other, trigger, [p for p in route_points()[40:50]])
    await folded()
    assert await services.store.fleet.state("acme", vehicle) is None
    metrics = services.metrics.render().decode()
    assert 'gateway_fleet_fixes_folded_total{outcome="deleted"} 30.0' in metrics


async def test_a_shard_lost_and_taken_back_mid_checkpoint_is_not_checkpointed_past_its_states(
    client: Client,
) -> None:
    """A checkpoint is written a few vehicles a pass. If the fold loses a shard meanwhile
    (its lease expired) and takes it back before the checkpoint is done, the vehicles of
    that shard it skipped while away must not be passed by the checkpoint: a fold that takes
    over after a crash would start past their fixes and never fold them."""
    services = client.app[services_key]
    vehicles: list[str] = []
    n = 0
    while len(vehicles) < 6:  # the third one alone in its shard
        vehicle = (await _vehicle(client, f"RBT1A{n:02d}"))["id"]
        n += 1
        shards = [shard_of("acme", v) for v in vehicles]
        if len(vehicles) == 2 and shard_of("acme", vehicle) in shards:
            continue
        if len(vehicles) > 2 and shard_of("acme", vehicle) == shards[2]:
            continue
        vehicles.append(vehicle)
    away = shard_of("acme", vehicles[2])
    points = route_points()[:10]
    for vehicle in vehicles:
        await services.store.positions.append("acme", vehicle, [fix_doc(p) for p in points], "t")
    config = FoldSettings(checkpoint_seconds=0, entity_seconds=3600, writes_per_pass=1)
    config = replace(config, quiet_seconds=3600)
    fold = own_fold(services, config)
    every = set(range(16))
    await fold.run_pass(every)  # two vehicles written
    await fold.run_pass(every - {away})  # the shard's lease lost: its vehicle skipped
    await fold.run_pass(every)  # taken back
    await fold.run_pass(every)
    marks = await services.store.fleet.checkpoints(range(16))
    if marks[away] > 0:  # a checkpoint written past the shard: its vehicle's state too
        assert await services.store.fleet.state("acme", vehicles[2]) is not None
    # Killed now: the fold that takes over folds every vehicle to its last fix.
    await own_fold(services, FoldSettings()).run_until_idle()
    for vehicle in vehicles:
        state = await services.store.fleet.state("acme", vehicle)
        assert state is not None and state["state"]["last"]["lat"] == points[-1].lat


async def test_a_round_frozen_after_its_insert_past_the_give_up_of_its_number_is_folded_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round took its inbox number and stored its fixes, then froze (a stopped process, or
    one killed) before its inbox write, long enough for the fold to give the number up: the
    fold finds the fixes by the round's number and folds them; a fold taking over does not
    wait at that number again; and the round, if it wakes up, finds the number taken with its
    fixes and hands nothing on twice."""
    services = client.app[services_key]
    await _vehicle(client)
    trigger = await create_position_trigger(client)
    points = route_points()[:40]
    await _post_fixes(client, trigger, points[:20])
    await _inbox_holds(client, 1)  # the answer may come before the round's inbox write
    fleet = services.store.fleet
    real, frozen, thawed = fleet.put, asyncio.Event(), asyncio.Event()

    async def freezing(seq: int, items: Sequence[Any]) -> None:
        if not frozen.is_set():
            frozen.set()
            await thawed.wait()
        await real(seq, items)

    monkeypatch.setattr(fleet, "put", freezing)
    request = asyncio.create_task(hook(client, trigger, [_fix(p) for p in points[20:]]))
    await frozen.wait()
    other = (await _vehicle(client, "XYZ9876"))["id"]  # and something after the frozen round
    await fleet.push_reading("acme", other, {"km": 1000.0, "at": points[0].t, "source": "t"})
    giving_up = own_fold(services, FoldSettings(missing_seconds=0))
    assert await giving_up.fold_once() == 1  # up to the frozen round's number
    assert await giving_up.fold_once() == 2  # the number given up, and the round after it
    # Then that fold is gone; the one that takes over does not wait at that number again.
    assert await own_fold(services, FoldSettings(missing_seconds=3600)).run_until_idle() == 3
    # The fold gave the number up with the fixes its round had stored (they carry it).
    data = await _get_vehicle(client)
    assert data["last_position"]["lat"] == points[-1].lat
    odometer = data["odometer_km"]
    thawed.set()
    status, body = await request
    assert status == 200 and body["summary"]["stored"] == 20, body
    await services.fold.run_until_idle()
    data = await _get_vehicle(client)  # the round, thawed, handed on nothing twice
    assert data["last_position"]["lat"] == points[-1].lat
    assert data["odometer_km"] == odometer
    assert await services.store.fleet.last_number() == 3


async def test_a_round_whose_inbox_write_landed_but_seemed_to_fail_is_folded_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the inbox write of a round lands, but its answer is lost (a deadline).
    The round is finished in the background, which finds its document there; the tracker's
    resend is a duplicate. The fold gets the fixes once: none is flagged as a
    refused duplicate of itself, no detour is counted twice."""
    services = client.app[services_key]
    await _vehicle(client)
    trigger = await create_position_trigger(client)
    points = route_points()[:60]
    await _post_fixes(client, trigger, points[:30])
    await _inbox_holds(client, 1)  # the answer may come before the round's inbox write
    fleet = services.store.fleet
    real = fleet.put
    lost = [True]

    async def answer_lost(seq: int, items: Sequence[Any]) -> None:
        await real(seq, items)
        if lost:
            lost.pop()
            raise StoreUnavailable("timed out", deadline=True)

    monkeypatch.setattr(fleet, "put", answer_lost)
    status, body = await hook(client, trigger, [_fix(p) for p in points[30:]])
    assert status in (200, 503), body  # answered once journaled, or before: unknown
    status, body = await hook(client, trigger, [_fix(p) for p in points[30:]])
    assert status == 200 and body["summary"]["duplicates"] == 30, body
    handed_on = 'gateway_fixes_after_failure_total{outcome="handed_on"} 30.0'
    for _ in range(200):  # the failed round, finished in the background
        if handed_on in services.metrics.render().decode():
            break
        await asyncio.sleep(0.05)
    await services.fold.run_until_idle()
    response = await client.get(
        f"/api/v1/entities/vehicle/{PLATE}/positions?limit=200", headers=auth()
    )
    items = (await response.json())["items"]
    assert len(items) == 60 and [i["rejected"] for i in items] == [None] * 60
    data = await _get_vehicle(client)
    assert data["odometer_km"] * 1000 == pytest.approx(_length_m(points), rel=0.005)


async def test_a_pass_that_failed_and_was_folded_again_is_counted_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: storing a pass's events fails once; the next pass folds the same input
    again. The fold's counters (fixes folded and refused by reason) count each fix once."""
    services = client.app[services_key]
    await _vehicle(client)
    trigger = await create_position_trigger(client)
    points = route_points()[:20]
    null_island = TrackPoint(points[-1].t + timedelta(seconds=5), 0.0, 0.0, 5.0)
    await _post_fixes(client, trigger, [*points, null_island])
    await create_subscription_for_positions(client)
    events = services.store.events
    real = events.insert_many
    failures = [StoreUnavailable("the database went away")]

    async def flaky(docs: Sequence[Any]) -> Any:
        if failures:
            raise failures.pop()
        return await real(docs)

    monkeypatch.setattr(events, "insert_many", flaky)
    with pytest.raises(StoreUnavailable):
        await services.fold.run_until_idle()
    await services.fold.run_until_idle()
    metrics = services.metrics.render().decode()
    assert 'gateway_fleet_fixes_folded_total{outcome="accepted"} 20.0' in metrics
    assert 'gateway_fleet_fixes_rejected_total{reason="null_island"} 1.0' in metrics
    assert 'gateway_fleet_events_total{type="vehicle.position"} 20.0' in metrics


async def create_subscription_for_positions(client: Client) -> None:
    partner = await create_partner(client, "http://127.0.0.1:9")
    action = await create_action(client, partner["id"])
    await create_subscription(client, action["id"], ("vehicle.position",))


async def test_rounds_folded_out_of_order_in_one_pass_find_their_neighbours_without_the_track(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent requests land in rounds whose device times interleave: a pass folds them
    round by round, so the later rounds' fixes are late. Their neighbours are the fixes the
    pass has just folded and those the state keeps: found without reading the track (on the
    embedded database a range of the track is a scan of every vehicle's fixes), for a
    vehicle's first rounds too. The odometer is the route's."""
    services = client.app[services_key]
    vehicle = (await _vehicle(client))["id"]
    points = route_points()[:200]
    reads: list[str] = []
    for name in ("neighbours", "window"):
        real = getattr(services.store.positions, name)

        async def counted(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            reads.append(_name)
            return await _real(*args, **kw)

        monkeypatch.setattr(services.store.positions, name, counted)
    for batch in (points[50:100], points[:50], points[150:], points[100:150]):
        await services.store.positions.append("acme", vehicle, [fix_doc(p) for p in batch], "t")
    await services.fold.run_until_idle()
    data = await _get_vehicle(client)
    assert data["odometer_km"] * 1000 == pytest.approx(_length_m(points), rel=0.005)
    assert data["last_position"]["lat"] == points[-1].lat
    assert reads == []
