"""A job stopped at shutdown hands its shards or leases back whatever the repeated cancels of
its stop (`cancel_and_wait`, again every 0.5 s) do, within a bound of its own: the fleet fold
writes what memory holds and lets its shards go, the event relay lets go of its own, a
schedule run cut short gives its lease back, and another process takes them at once
(docs/operations.md, "Shutdown"; gateway/background.py `to_the_end`). On the embedded
database, with a slow (or silent) database call injected."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.background import cancel_and_wait
from gateway.doorbell import Doorbell
from gateway.events import EventRelay
from gateway.fleet.fold import FOLD_SHARDS, Fold, FoldSettings
from gateway.services import Services
from gateway.shares import Shares
from gateway.shutdown import HAND_BACK_SECONDS
from gateway.store.entities import RELAY_SHARDS
from gateway.store.fleet import fleet_id
from gateway.web.state import services_key
from tests.partner_double import post, running_partner, upload_mapping
from tests.schedule_support import ERP_MAPPING
from tests.test_fleet_fold import TENANT, append, make_vehicle
from tests.test_fleet_odometer import route_points

SLOW = 1.2  # past `cancel_and_wait`'s second cancel (0.5 s), and its third


def _slowed(monkeypatch: pytest.MonkeyPatch, target: object, name: str, seconds: float) -> None:
    """`target.name` answers after `seconds` more (forever when `seconds` is inf)."""
    call = getattr(target, name)

    async def slow(*args: Any, **kwargs: Any) -> Any:
        if seconds == float("inf"):
            await asyncio.Event().wait()
        await asyncio.sleep(seconds)
        return await call(*args, **kwargs)

    monkeypatch.setattr(target, name, slow)


def _fold(services: Services, shares: Shares) -> Fold:
    # Nothing written while it runs (no quiet pass, no checkpoint): memory alone holds it.
    config = FoldSettings(quiet_seconds=600, checkpoint_seconds=600, entity_seconds=600)
    return Fold(
        services.store,
        services.metrics,
        services.fleet_settings,
        services.fleet_rules,
        on_relayed=services.fanout,
        doorbell=Doorbell(),
        shares=shares,
        config=config,
    )


def _folded(services: Services) -> int:
    """How many fixes the fold has taken (its accepted count: in memory only, here)."""
    return int(services.metrics.fold_fixes.labels("accepted")._value.get())


async def _folding(services: Services, job: str) -> tuple[str, asyncio.Task[None], Shares]:
    """A vehicle's 20 fixes folded by a running fold holding every shard of `job` (in memory
    only): the vehicle, the fold's task and another owner's shares of the job."""
    vehicle = await make_vehicle(services)
    await append(services, vehicle, route_points()[:20])
    mine, other = (Shares(services.store, job, FOLD_SHARDS, owner=o) for o in ("a", "b"))
    running = asyncio.create_task(_fold(services, mine).run())
    try:
        async with asyncio.timeout(20):
            while _folded(services) < 20:
                await asyncio.sleep(0.05)
    except BaseException:
        running.cancel()
        raise
    return vehicle, running, other


async def _stopped_within(task: asyncio.Task[None], seconds: float) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(seconds):
        await cancel_and_wait(task)
    return loop.time() - started


async def test_a_fold_stopped_in_a_slow_hand_back_writes_its_memory_and_frees_its_shards(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    vehicle, running, other = await _folding(services, "fold-hand-back")
    try:
        states = services.store.db["fleet"]
        assert await states.count_documents({"_id": fleet_id(TENANT, vehicle)}) == 0
        # The hand-back's first write waits past the stop's second cancel.
        _slowed(monkeypatch, services.store.fleet, "save_states", SLOW)
        took = await _stopped_within(running, HAND_BACK_SECONDS + 5)
    finally:
        running.cancel()
    assert await states.count_documents({"_id": fleet_id(TENANT, vehicle)}) == 1
    assert await other.refresh() == frozenset(range(FOLD_SHARDS))  # at once, no lease waited
    assert SLOW <= took < HAND_BACK_SECONDS + 1


async def test_a_fold_whose_memory_write_outlasts_the_bound_still_frees_its_shards(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory's write takes past the whole hand-back bound (a big fleet on a loaded
    database): it is cut at its share, and the shards are still let go at once (the release
    gets its own attempt), all within the bound."""
    _, running, other = await _folding(services, "fold-hand-back-starved")
    try:
        _slowed(monkeypatch, services.store.fleet, "save_states", HAND_BACK_SECONDS + 0.5)
        took = await _stopped_within(running, HAND_BACK_SECONDS + 5)
    finally:
        running.cancel()
    assert await other.refresh() == frozenset(range(FOLD_SHARDS))  # no lease waited
    assert took < HAND_BACK_SECONDS + 1


async def test_a_relay_stopped_in_a_slow_release_frees_its_shards(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = "relay-hand-back"
    mine, other = (Shares(services.store, job, RELAY_SHARDS, owner=o) for o in ("a", "b"))
    relay = EventRelay(
        services.store,
        services.metrics,
        on_relayed=services.fanout,
        doorbell=Doorbell(),
        shares=mine,
    )
    running = asyncio.create_task(relay.run())
    try:
        async with asyncio.timeout(20):
            while len(mine.mine) < RELAY_SHARDS:
                await asyncio.sleep(0.05)
        _slowed(monkeypatch, services.store.leases, "release", SLOW)
        took = await _stopped_within(running, HAND_BACK_SECONDS + 5)
    finally:
        running.cancel()
    assert await other.refresh() == frozenset(range(RELAY_SHARDS))
    assert SLOW <= took < HAND_BACK_SECONDS + 1


async def test_a_hand_back_to_a_database_that_never_answers_ends_within_its_bound(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    vehicle = await make_vehicle(services)
    await append(services, vehicle, route_points()[:20])
    fold = _fold(services, Shares(services.store, "fold-silent", FOLD_SHARDS, owner="a"))
    running = asyncio.create_task(fold.run())
    try:
        async with asyncio.timeout(20):
            while _folded(services) < 20:
                await asyncio.sleep(0.05)
        _slowed(monkeypatch, services.store.fleet, "save_states", float("inf"))
        _slowed(monkeypatch, services.store.leases, "release", float("inf"))
        took = await _stopped_within(running, HAND_BACK_SECONDS + 5)
    finally:
        running.cancel()
    assert HAND_BACK_SECONDS <= took < HAND_BACK_SECONDS + 1
    assert running.cancelled()


async def test_a_schedule_run_cut_short_in_a_slow_hand_back_gives_its_lease_back(
    aiohttp_client: Any, make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's stop cuts a run on a partner that does not answer after its 1 s bound
    (`cancel_and_wait`); the run gives its lease back, due at once, though that write takes
    past the second cancel."""
    client = await aiohttp_client(make_app(delivery_shutdown_seconds=1))
    services = client.app[services_key]
    schedules = services.schedule_runner
    async with running_partner() as partner:
        partner.respond_with(200, {"items": []}, delay=30)
        await upload_mapping(client, ERP_MAPPING)
        body = {"name": "ERP", "base_url": partner.url, "auth": {"type": "none"}}
        partner_doc = await post(client, "/api/v1/partners", body)
        action = {"name": "feed", "partner_id": partner_doc["id"], "method": "GET"}
        action_doc = await post(
            client, "/api/v1/actions", {**action, "path": "/feed", "mode": "proxy"}
        )
        schedule = {
            "name": "feed",
            "action_id": action_doc["id"],
            "every": "1h",
            "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
        }
        await post(client, "/api/v1/schedules", schedule)
        running = asyncio.create_task(schedules.run())
        try:
            await partner.wait_for(1)  # the run is under way
            _slowed(monkeypatch, services.store.schedules, "release", SLOW)
            async with asyncio.timeout(1 + HAND_BACK_SECONDS + 5):
                await schedules.stop()
                await running
        finally:
            running.cancel()
    (doc,) = await services.store.db["schedules"].find({}).to_list(None)
    assert (doc.get("lease_owner"), doc["lease_until"].year) == (None, 1970)  # free, due
