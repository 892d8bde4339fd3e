"""The positions and fleet collections (gateway/store/positions.py) against the real embedded
database: appends queue fixes for the fold, duplicates are stored once, and `commit_fold`
takes what a fold consumed in one guarded update (version / state_version semantics)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from gateway.services import Services
from gateway.store import derived_id
from gateway.store.positions import Consumed, PositionStore, fleet_id

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _fix(seconds: int, lat: float = -23.5, lon: float = -46.6) -> dict[str, object]:
    return {"t": T0 + timedelta(seconds=seconds), "lat": lat, "lon": lon}


def _store(services: Services) -> PositionStore:
    return services.store.positions


async def test_append_stores_fixes_and_queues_them_for_the_fold(services: Services) -> None:
    store = _store(services)
    appended = await store.append("acme", "v1", [_fix(0), _fix(5)], "trigger-1")
    assert [a.duplicate for a in appended] == [False, False]
    fleet = await store.fleet("acme", "v1")
    assert fleet is not None
    assert fleet["pending"] == [a.id for a in appended]
    assert fleet["dirty"] is True and fleet["version"] == 1 and fleet["state_version"] == 0
    assert fleet["tenant"] == "acme" and fleet["vehicle"] == "v1"
    fixes = await store.fixes([appended[1].id, appended[0].id])
    assert [f["t"] for f in fixes] == [T0, T0 + timedelta(seconds=5)]
    assert fixes[0]["source"] == "trigger-1" and fixes[0]["at"] >= fixes[0]["t"]


async def test_a_resent_fix_is_a_duplicate_stored_once_and_not_queued_again(
    services: Services,
) -> None:
    store = _store(services)
    first = await store.append("acme", "v1", [_fix(0)], "t")
    again = await store.append("acme", "v1", [_fix(0), _fix(10)], "t")
    assert [a.duplicate for a in again] == [True, False]
    fleet = await store.fleet("acme", "v1")
    assert fleet is not None
    assert fleet["pending"] == [first[0].id, again[1].id]
    track = await store.track("acme", "v1", None, None, None, 10)
    assert len(track) == 2


async def test_concurrent_appends_for_one_vehicle_all_reach_the_queue(services: Services) -> None:
    store = _store(services)
    batches = await asyncio.gather(*(store.append("acme", "v1", [_fix(i)], "t") for i in range(30)))
    fleet = await store.fleet("acme", "v1")
    assert fleet is not None
    assert sorted(fleet["pending"]) == sorted(b[0].id for b in batches)
    assert fleet["version"] == 30


async def test_commit_fold_with_an_unchanged_version_clears_the_queues(services: Services) -> None:
    store = _store(services)
    appended = await store.append("acme", "v1", [_fix(0), _fix(5)], "t")
    await store.push_reading("acme", "v1", {"km": 1000.0, "at": T0, "source": "checklist"})
    [doc] = await store.waiting(range(16), 10)
    consumed = Consumed(pending=[a.id for a in appended], readings=1)
    ok = await store.commit_fold(doc["_id"], doc["version"], 0, {"odometer_km": 1000.0}, consumed)
    assert ok
    fleet = await store.fleet("acme", "v1")
    assert fleet is not None
    assert fleet["pending"] == [] and fleet["readings"] == [] and fleet["dirty"] is False
    assert fleet["state"] == {"odometer_km": 1000.0}
    assert fleet["state_version"] == 1 and fleet["version"] == doc["version"] + 1
    assert "since" not in fleet
    assert await store.waiting(range(16), 10) == []


async def test_commit_fold_after_a_push_keeps_what_arrived_meanwhile(services: Services) -> None:
    store = _store(services)
    folded = await store.append("acme", "v1", [_fix(0)], "t")
    [doc] = await store.waiting(range(16), 10)
    await store.push_service("acme", "v1", {"km": 5000.0, "at": T0})
    late = await store.append("acme", "v1", [_fix(9)], "t")
    ok = await store.commit_fold(
        doc["_id"], doc["version"], 0, {"n": 1}, Consumed(pending=[folded[0].id])
    )
    assert ok
    fleet = await store.fleet("acme", "v1")
    assert fleet is not None
    assert fleet["pending"] == [late[0].id]
    assert fleet["services"] == [{"km": 5000.0, "at": T0}]
    assert fleet["dirty"] is True and fleet["state_version"] == 1
    assert [d["_id"] for d in await store.waiting(range(16), 10)] == [fleet_id("acme", "v1")]


async def test_commit_fold_with_a_stale_state_version_changes_nothing(services: Services) -> None:
    store = _store(services)
    appended = await store.append("acme", "v1", [_fix(0)], "t")
    [doc] = await store.waiting(range(16), 10)
    consumed = Consumed(pending=[appended[0].id])
    assert await store.commit_fold(doc["_id"], doc["version"], 0, {"winner": True}, consumed)
    # A second fold that read the same document lost the race: discarded.
    assert not await store.commit_fold(doc["_id"], doc["version"], 0, {"loser": True}, consumed)
    fleet = await store.fleet("acme", "v1")
    assert fleet is not None
    assert fleet["state"] == {"winner": True} and fleet["state_version"] == 1


async def test_waiting_is_by_shard_and_neighbours_skip_rejected_fixes(services: Services) -> None:
    store = _store(services)
    appended = await store.append("acme", "v1", [_fix(0), _fix(10), _fix(20), _fix(30)], "t")
    [doc] = await store.waiting(range(16), 10)
    others = [s for s in range(16) if s != doc["shard"]]
    assert await store.waiting(others, 10) == []
    await store.mark_rejected({appended[1].id: "zero_position"})
    before, after = await store.neighbours("acme", "v1", T0 + timedelta(seconds=15))
    assert before is not None and after is not None
    assert before["t"] == T0 and after["t"] == T0 + timedelta(seconds=20)
    track = await store.track("acme", "v1", None, None, None, 10)
    assert [f.get("rejected") for f in track] == [None, "zero_position", None, None]
    # Pages: after the cursor, within [start, end).
    page = await store.track("acme", "v1", T0, T0 + timedelta(seconds=30), T0, 10)
    assert [f["t"] for f in page] == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)]


async def test_another_tenant_never_sees_the_track(services: Services) -> None:
    store = _store(services)
    await store.append("acme", "v1", [_fix(0)], "t")
    assert await store.track("other", "v1", None, None, None, 10) == []
    assert await store.fleet("other", "v1") is None


async def test_retention_is_a_ttl_index_that_can_be_changed(services: Services) -> None:
    store = _store(services)
    assert await store.retention_seconds() == 90 * 86_400
    await store.set_retention(30)
    assert await store.retention_seconds() == 30 * 86_400


def test_derived_ids_are_deterministic_and_carry_the_time() -> None:
    a = derived_id(T0, "acme", "v1", "vehicle.geofence.exited", "g1")
    assert a == derived_id(T0, "acme", "v1", "vehicle.geofence.exited", "g1")
    assert a != derived_id(T0, "acme", "v1", "vehicle.geofence.entered", "g1")
    assert a.generation_time == T0


async def test_concurrent_appends_share_insert_rounds_and_each_gets_its_own_outcome(
    services: Services,
) -> None:
    store = _store(services)
    await store.append("acme", "v0", [_fix(0)], "t")
    before = store.inserts.rounds
    batches = await asyncio.gather(
        *(store.append("acme", f"v{i % 5}", [_fix(i), _fix(0)], "t") for i in range(1, 41))
    )
    assert store.inserts.rounds - before < 40  # shared rounds
    # Each request's own outcome: its new fix stored, the fix at 0 s a duplicate for v0 (and
    # stored once for each other vehicle, by whichever request came first).
    assert all(not batch[0].duplicate for batch in batches)
    firsts = [batch[1] for batch in batches if not batch[1].duplicate]
    assert len(firsts) == 4
    for vehicle in range(5):
        fleet = await store.fleet("acme", f"v{vehicle}")
        assert fleet is not None
        track = await store.track("acme", f"v{vehicle}", None, None, None, 100)
        assert sorted(fleet["pending"]) == sorted(fix["_id"] for fix in track)
