"""The fold's crash test: two real `gateway worker --jobs fold` processes fold vehicles'
tracks while the test appends to them; one is killed with SIGKILL mid-stream. The other takes
its shards over once their leases expire. No fold may be lost (every vehicle's odometer is
what one uninterrupted fold of its fixes gives) and no event doubled (one `vehicle.position`
per fix for a subscription that samples nothing, each delivered once)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.fleet.odometer import OdometerSettings
from gateway.fleet.quality import QualitySettings
from gateway.fleet.state import VehicleState, fold_fix
from gateway.store.positions import inbox_items
from gateway.web.state import services_key
from tests.partner_double import create_action, create_partner, create_subscription, post
from tests.support import SECRET_KEY
from tests.test_fleet_fold import fix_doc
from tests.test_fleet_odometer import route_points
from tests.tracks import destination

Client = TestClient[Any, Any]
VEHICLES = 6
FIXES = 400  # per vehicle
CHUNK = 8


async def _start_folder(client: Client, mongodb_uri: str, data_dir: Path, name: str) -> Any:
    env = {
        **os.environ,
        "MONGODB_URI": mongodb_uri,
        "GATEWAY_DATABASE": client.app[services_key].settings.database,
        "GATEWAY_SECRET_KEY": SECRET_KEY,
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_LOG_JSON": "false",
        # The survivor takes the victim's shards once their leases expire: after 4 s, not the
        # default 10 (a lease outlasts the database deadline, so 3 s for that).
        "GATEWAY_SHARD_LEASE_SECONDS": "4",
        "GATEWAY_DB_TIMEOUT_MS": "3000",
    }
    with (data_dir / f"{name}.log").open("wb") as log:  # the child keeps its own handle
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "worker", "--jobs", "fold",
            env=env, stdout=log, stderr=log,
        )  # fmt: skip


async def _count(client: Client, collection: str, query: dict[str, Any]) -> int:
    return int(await client.app[services_key].store.db[collection].count_documents(query))


async def _shards_of(client: Client, pid: int | None) -> list[int]:
    """The fold shards the process `pid` holds."""
    leases = client.app[services_key].store.db["leases"]
    owned = await leases.find({"job": "fleet-fold", "shard": {"$exists": True}}).to_list(None)
    return [d["shard"] for d in owned if str(d.get("owner", "")).split(":")[1:2] == [str(pid)]]


async def _kill_mid_pass(client: Client, victim: Any, tries: int = 300) -> bool:
    """SIGKILL the victim while it has stored events of fixes its checkpoint is not past yet
    (what it folded is in its memory only), freezing it (SIGSTOP) to look, and letting it run
    between looks (long enough to renew its leases); after `tries` looks, kill it wherever it
    is. Whether it was caught mid-pass."""
    for _ in range(tries):
        victim.send_signal(signal.SIGSTOP)
        if await _mid_pass(client, await _shards_of(client, victim.pid)):
            victim.send_signal(signal.SIGKILL)
            await victim.wait()
            return True
        victim.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    await victim.wait()
    return False


async def _mid_pass(client: Client, shards: list[int]) -> bool:
    """Whether a vehicle of these shards has been folded further than its shard's written
    checkpoint: a fix in the inbox past the checkpoint already has its event."""
    db = client.app[services_key].store.db
    for shard in shards:
        mark = await db["fleet_marks"].find_one({"_id": f"shard:{shard:02d}"}) or {}
        after = {"_id": {"$gt": int(mark.get("through", 0))}}
        for doc in await db["fleet_inbox"].find(after).sort("_id", 1).to_list(20):
            fixes = [i for i in inbox_items(doc) if i["k"] == "fix" and i["shard"] == shard]
            for fix in fixes[:2]:
                event = {
                    "entity.id": fix["vehicle"],
                    "type": "vehicle.position",
                    "detail.t": fix["t"],
                }
                if await db["events"].count_documents(event):
                    return True
    return False


async def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(180)
async def test_a_killed_fold_loses_no_fold_and_doubles_no_event(
    client: Client, mongodb_uri: str, tmp_path: Path
) -> None:
    services = client.app[services_key]
    partner = await create_partner(client, "http://127.0.0.1:9")
    action = await create_action(client, partner["id"])
    await create_subscription(client, action["id"], ("vehicle.position",))
    route = route_points()
    tracks: dict[str, list[Any]] = {}
    for n in range(VEHICLES):
        vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": f"RBT1A{n:02d}"})
        tracks[vehicle["id"]] = route[n * FIXES : (n + 1) * FIXES]
    victim = await _start_folder(client, mongodb_uri, tmp_path, "victim")
    survivor = await _start_folder(client, mongodb_uri, tmp_path, "survivor")

    async def feed() -> None:
        for start in range(0, FIXES, CHUNK):
            for vehicle, points in tracks.items():
                docs = [fix_doc(p) for p in points[start : start + CHUNK]]
                await services.store.positions.append("acme", vehicle, docs, "test")
            await asyncio.sleep(0.1)

    feeder = asyncio.create_task(feed())
    try:
        await _until(
            lambda: _count(client, "events", {"type": "vehicle.position"}), 60, "the first folds"
        )
        await _until(lambda: _shards_of(client, victim.pid), 30, "the victim's shards")
        caught_mid_pass = await _kill_mid_pass(client, victim)
        await feeder
        total = VEHICLES * FIXES

        last = await services.store.fleet.last_number()

        async def all_folded() -> bool:
            written = await services.store.fleet.checkpoints(range(16))
            return min(written.values()) >= last

        await _until(all_folded, 90, "the survivor to fold everything")
    finally:
        feeder.cancel()
        for process in (victim, survivor):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 30)

    for vehicle, points in tracks.items():
        expected = VehicleState()
        for point in points:  # one uninterrupted fold of the same fixes
            expected, _ = fold_fix(expected, point, point.t, QualitySettings(), OdometerSettings())
        doc = await services.store.entities.get("acme", "vehicle", id=vehicle)
        assert doc is not None
        assert doc["data"]["odometer_km"] == pytest.approx(expected.odometer_km, abs=1e-3)
        assert doc["data"]["last_position"]["lat"] == points[-1].lat
    print(f"\nvictim killed with folds not checkpointed: {caught_mid_pass}")
    events = await services.store.db["events"].find({"type": "vehicle.position"}).to_list(None)
    per_fix = Counter((e["entity"]["id"], e["detail"]["t"]) for e in events)
    assert len(per_fix) == total and max(per_fix.values()) == 1
    assert await _count(client, "deliveries", {"event_type": "vehicle.position"}) == total


@pytest.mark.timeout(300)
async def test_a_fold_killed_among_1000_vehicles_loses_no_fold_and_doubles_no_event(
    client: Client, mongodb_uri: str, tmp_path: Path
) -> None:
    """1,000 vehicles posting 4 fixes each through a position trigger (canonical fixes, HTTP),
    two real fold processes, one SIGKILLed while it has folded past its checkpoint (under
    steady input a checkpoint writes 50 vehicles a pass, so most states are in memory only):
    every vehicle's odometer is its 1.2 km, one `vehicle.position` per fix delivered once, one
    `vehicle.maintenance.due` per vehicle (a plan every km)."""
    services = client.app[services_key]
    partner = await create_partner(client, "http://127.0.0.1:9")
    action = await create_action(client, partner["id"])
    await create_subscription(client, action["id"], ("vehicle.position",))
    await post(client, "/api/v1/maintenance-plans", {"name": "km", "every_km": 1})
    trigger = await post(
        client, "/api/v1/triggers", {"name": "t", "target": "positions", "methods": ["POST"]}
    )
    plates = [f"MN{'ABCDEFGHIJ'[n // 100]}0A{n % 100:02d}" for n in range(1000)]
    slots = asyncio.Semaphore(8)  # the same 1,000 POSTs, eight at a time

    async def create(plate: str) -> None:
        async with slots:
            await post(client, "/api/v1/entities/vehicle", {"plate": plate})

    await asyncio.gather(*(create(plate) for plate in plates))
    victim = await _start_folder(client, mongodb_uri, tmp_path, "victim")
    survivor = await _start_folder(client, mongodb_uri, tmp_path, "survivor")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)

    async def feed() -> None:
        for k in range(4):  # 400 m every 20 s, each vehicle on its own road
            body = []
            for n, plate in enumerate(plates):
                lat, lon = destination(-23.0 - n * 0.001, -46.6, 90, 400 * k)
                t = (start + timedelta(seconds=20 * k)).isoformat()
                body.append({"plate": plate, "time": t, "lat": lat, "lon": lon, "speed_kmh": 72})
            for i in range(0, len(body), 100):
                response = await client.post(
                    f"/hooks/{trigger['id']}",
                    json=body[i : i + 100],
                    headers={"Authorization": f"Bearer {trigger['token']}"},
                )
                answer = await response.json()
                assert response.status == 200 and answer["summary"]["stored"] == 100, answer
            await asyncio.sleep(0.3)

    feeder = asyncio.create_task(feed())
    try:
        await _until(
            lambda: _count(client, "events", {"type": "vehicle.position"}), 120, "the first folds"
        )
        await _until(lambda: _shards_of(client, victim.pid), 30, "the victim's shards")
        caught_mid_pass = await _kill_mid_pass(client, victim)
        await feeder
        last = await services.store.fleet.last_number()

        async def all_folded() -> bool:
            written = await services.store.fleet.checkpoints(range(16))
            return min(written.values()) >= last

        await _until(all_folded, 180, "the survivor to fold everything")
    finally:
        feeder.cancel()
        for process in (victim, survivor):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 30)
    print(f"\nvictim killed with folds not checkpointed: {caught_mid_pass}")
    db = services.store.db
    docs = await db["entities"].find({"tenant": "acme", "type": "vehicle"}).to_list(None)
    assert Counter(round(d["data"]["odometer_km"], 3) for d in docs) == {1.2: 1000}
    events = await db["events"].find({"type": "vehicle.position"}).to_list(None)
    per_fix = Counter((e["entity"]["id"], e["detail"]["t"]) for e in events)
    assert len(per_fix) == 4000 and max(per_fix.values()) == 1
    assert await _count(client, "deliveries", {"event_type": "vehicle.position"}) == 4000
    due = await db["events"].find({"type": "vehicle.maintenance.due"}).to_list(None)
    assert sorted(Counter(e["entity"]["id"] for e in due).values()) == [1] * 1000
