"""Admin reads whose cost grew with a tenant's history (or every tenant's) on the embedded
SecantusDB, which scans the whole collection for a query one predicate of which its index
lacks and reads every match before it applies a limit (bench/bench_reads_at_scale.py): a
flow's runs, deliveries and rejected payloads by status, a flow run's deliveries, the
dashboard's counts. Each test explains the very commands the store sent (a command listener
on a client of the same database): the index read, and how few documents it examined."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from gateway.services import Services
from gateway.store.activity import ActivityStore
from gateway.store.assignments import AssignmentStore, change_id
from gateway.store.deliveries import DeliveryStore
from gateway.store.expiry import Expiry
from gateway.store.fleet import FleetStore
from gateway.store.flow_runs import FlowRunStore
from gateway.store.positions import HORIZON, PositionStore, position_id
from gateway.store.rejected import RejectedStore
from tests.read_plans import Reads, read_plans

NOW = datetime.now(UTC).replace(microsecond=0)
HISTORY = 400  # documents per tenant, one a minute back from now


def _event_id(minutes_ago: int) -> str:
    at = NOW - timedelta(minutes=minutes_ago)
    return str(ObjectId(ObjectId.from_datetime(at).binary[:4] + ObjectId().binary[4:]))


async def test_a_flows_runs_are_read_newest_first_in_windows_of_an_index(
    watched: tuple[Any, Reads],
) -> None:
    db, reads = watched
    runs = [
        {"_id": f"{_event_id(n)}:aviso", "tenant": tenant, "flow": "aviso"}
        | {"status": "failed" if n % 50 == 7 else "succeeded"}
        for n in range(HISTORY)
        for tenant in ("acme", "beta")
    ]
    await db["flow_runs"].insert_many(runs)
    store = FlowRunStore(db["flow_runs"])
    await store.ensure_indexes(scans_id_ranges=True)
    acme = sorted((r for r in runs if r["tenant"] == "acme"), key=lambda r: r["_id"])[::-1]
    failed = [r for r in acme if r["status"] == "failed"]

    first = await store.list("acme", "aviso", status=None, before=None, limit=20)
    assert [r["_id"] for r in first] == [r["_id"] for r in acme[:20]]
    after = await store.list("acme", "aviso", status=None, before=first[-1]["_id"], limit=20)
    assert [r["_id"] for r in after] == [r["_id"] for r in acme[20:40]]
    plans = await read_plans(db, reads)
    assert {index for index, _ in plans} == {"by_flow"}
    assert sum(n for _, n in plans) <= 160  # the windows that filled two pages, of 800 runs

    broken = await store.list("acme", "aviso", status="failed", before=None, limit=5)
    assert [r["_id"] for r in broken] == [r["_id"] for r in failed[:5]]
    plans = await read_plans(db, reads)
    assert {index for index, _ in plans} == {"by_status"}
    assert sum(n for _, n in plans) <= 8


async def test_deliveries_by_status_are_read_newest_first_through_an_index(
    services: Services, watched: tuple[Any, Reads]
) -> None:
    db, reads = watched
    deliveries = [
        {"_id": f"{_event_id(n)}:sub", "tenant": tenant, "created_at": NOW - timedelta(minutes=n)}
        | {"status": "dead" if n % 40 == 3 else "succeeded", "event": {"id": "e"}}
        for n in range(HISTORY)
        for tenant in ("acme", "beta")
    ]
    await db["deliveries"].insert_many(deliveries)
    store = DeliveryStore(db["deliveries"])
    await store.ensure_indexes(scans_id_ranges=True)
    dead = sorted(
        (d["_id"] for d in deliveries if d["tenant"] == "acme" and d["status"] == "dead"),
        reverse=True,
    )

    page = await store.list("acme", {"status": "dead"}, before=None, limit=3)
    assert [d["_id"] for d in page] == dead[:3]
    rest = await store.list("acme", {"status": "dead"}, before=page[-1]["_id"], limit=20)
    assert [d["_id"] for d in rest] == dead[3:]
    plans = await read_plans(db, reads)
    # After a cursor, the rest of the cursor's event first (its range of `by_tenant`: one
    # delivery here), then the older ones by status.
    assert {index for index, _ in plans} == {"by_status", "by_tenant"}
    assert all(n <= 1 for index, n in plans if index == "by_tenant")
    assert sum(n for _, n in plans) <= 2 * len(dead)  # of 800 deliveries

    activity = ActivityStore(db)
    assert await activity.count_deliveries("acme", ["dead"]) == len(dead)
    states = await activity.delivery_states("acme", NOW - timedelta(minutes=30), 1000)
    assert len(states) == 31
    plans = await read_plans(db, reads)
    assert [index for index, _ in plans] == ["by_status", "by_created"]
    assert plans[0][1] <= len(dead) and plans[1][1] <= 31


async def test_a_flow_runs_deliveries_are_read_from_its_events_range(
    services: Services, watched: tuple[Any, Reads]
) -> None:
    db, reads = watched
    events = [_event_id(n) for n in range(HISTORY)]
    await db["deliveries"].insert_many(
        [
            {"_id": f"{event}:{child}", "tenant": "acme", "event": {"id": event}}
            | ({"run_id": f"{event}:aviso", "status": "succeeded"} if ":" in child else {})
            for event in events
            for child in ("sub_a", "aviso:erp", "aviso:email:0", "aviso:email:1", "multa:erp")
        ]
    )
    await db["deliveries"].update_many({"_id": {"$regex": ":multa:"}}, [{"$set": {"run_id": {
        "$concat": [{"$arrayElemAt": [{"$split": ["$_id", ":"]}, 0]}, ":multa"]}}}])  # fmt: skip
    await db["deliveries"].update_one(
        {"_id": f"{events[9]}:aviso:email:0"}, {"$set": {"status": "failed"}}
    )
    store = DeliveryStore(db["deliveries"])
    run = f"{events[9]}:aviso"

    found = await store.list("acme", {"run_id": run}, before=None, limit=200)
    assert [d["_id"] for d in found] == [f"{run}:erp", f"{run}:email:1", f"{run}:email:0"]
    failed = await store.list("acme", {"run_id": run, "status": "failed"}, before=None, limit=9)
    assert [d["_id"] for d in failed] == [f"{run}:email:0"]
    after = await store.list("acme", {"run_id": run}, before=f"{run}:erp", limit=1)
    assert [d["_id"] for d in after] == [f"{run}:email:1"]
    assert await store.list("beta", {"run_id": run}, before=None, limit=200) == []
    plans = await read_plans(db, reads)
    assert {index for index, _ in plans} == {"by_tenant"}
    assert max(n for _, n in plans) <= 5  # the event's own, of 2,000


async def test_rejected_payloads_are_read_newest_first_in_windows_of_an_index(
    services: Services, watched: tuple[Any, Reads]
) -> None:
    db, reads = watched
    records = [
        {"_id": ObjectId(_event_id(n)), "tenant": tenant, "trigger_id": f"t{n % 4}"}
        | {"status": "replayed" if n % 3 else "pending"}
        for n in range(HISTORY)
        for tenant in ("acme", "beta")
    ]
    await db["rejected"].insert_many(records)
    store = RejectedStore(db["rejected"])
    await store.ensure_indexes(scans_id_ranges=True)
    acme = sorted((r for r in records if r["tenant"] == "acme"), key=lambda r: r["_id"])[::-1]

    for filters in ({}, {"trigger_id": "t2"}, {"status": "pending"}):
        wanted = [r["_id"] for r in acme if all(r[k] == v for k, v in filters.items())]
        first = await store.list("acme", filters, cursor=None, limit=10)
        assert [r["_id"] for r in first] == wanted[:10]
        cursor = str(first[-1]["_id"])
        assert [r["_id"] for r in await store.list("acme", filters, cursor=cursor, limit=10)] == (
            wanted[10:20]
        )
    plans = await read_plans(db, reads)
    assert {index for index, _ in plans} == {"by_tenant", "by_trigger", "by_status"}
    assert sum(n for _, n in plans) <= 300  # six pages: their windows, not 6 x 400 records

    assert await ActivityStore(db).count_pending_rejected("acme") == len(acme[::3])
    ((index, examined),) = await read_plans(db, reads)
    assert index == "by_status" and examined <= HISTORY // 3 + 1


async def test_a_vehicles_newest_fixes_are_read_in_windows_of_its_track(
    services: Services, watched: tuple[Any, Reads]
) -> None:
    db, reads = watched
    vehicle, other = str(ObjectId()), str(ObjectId())
    fixes = [
        {"_id": position_id(v, t), "tenant": "acme", "vehicle": v, "t": t, "at": NOW}
        for v in (vehicle, other)
        for t in [NOW - timedelta(minutes=n) for n in range(HISTORY)] + [NOW + timedelta(days=9)]
    ]
    await db["positions"].insert_many(fixes)
    store = PositionStore(
        db["positions"],
        db["positions_refused"],
        FleetStore(db["fleet_inbox"], db["fleet"], db["fleet_marks"], Expiry()),
        Expiry(),
    )
    mine = sorted((f["_id"] for f in fixes if f["vehicle"] == vehicle), reverse=True)

    newest = await store.latest("acme", vehicle, 10, now=NOW)
    assert [f["_id"] for f in newest] == mine[:10]  # the one dated ahead first
    plans = await read_plans(db, reads)
    assert {index for index, _ in plans} == {"track"}  # the fixes', then their refusals'
    assert sum(n for _, n in plans) <= 20  # of 802 fixes
    assert [f["_id"] for f in await store.latest("acme", vehicle, 500, now=NOW)] == mine
    assert await store.latest("beta", vehicle, 10, now=NOW) == []


async def test_a_vehicles_driver_then_and_its_changes_are_read_in_windows_of_time(
    services: Services, watched: tuple[Any, Reads]
) -> None:
    db, reads = watched
    vehicle = str(ObjectId())
    starts = [NOW - timedelta(hours=n) for n in range(HISTORY)] + [NOW + timedelta(days=30)]
    await db["driver_assignments"].insert_many(
        [
            {"_id": change_id(tenant, vehicle, start), "tenant": tenant, "vehicle_id": vehicle}
            | {"start": start, "driver": {"id": f"d{n}"}}
            for n, start in enumerate(starts)
            for tenant in ("acme", "beta")
        ]
    )
    store = AssignmentStore(db["driver_assignments"])
    store.windowed = services.store.notify.assignments.windowed  # as the gateway's, set at start
    assert store.windowed  # on SecantusDB
    newest = sorted((change_id("acme", vehicle, s) for s in starts), reverse=True)

    in_force = await store.at("acme", vehicle, NOW - timedelta(minutes=90))
    assert in_force is not None and in_force["_id"] == change_id("acme", vehicle, starts[2])
    page = await store.history("acme", vehicle, before=None, limit=3)
    assert [c["_id"] for c in page] == newest[:3]  # the one ahead first
    after = await store.history("acme", vehicle, before=page[-1]["_id"], limit=3)
    assert [c["_id"] for c in after] == newest[3:6]
    plans = await read_plans(db, reads)
    assert {index for index, _ in plans} == {"ranges"}
    assert sum(n for _, n in plans) <= 30  # of 802 changes
    assert await store.at("acme", vehicle, NOW - timedelta(days=HISTORY)) is None
    everything = await store.history("acme", vehicle, before=None, limit=HISTORY + 1)
    assert [c["_id"] for c in everything] == newest


async def test_a_vehicles_track_is_read_oldest_first_in_windows_of_device_time(
    services: Services, watched: tuple[Any, Reads]
) -> None:
    db, reads = watched
    vehicle = str(ObjectId.from_datetime(NOW - timedelta(days=365)))  # older than its track
    times = [NOW - timedelta(minutes=n) for n in range(HISTORY)]
    times += [NOW - timedelta(days=400), NOW + timedelta(days=9)]  # kept: old and ahead
    horizon = NOW - timedelta(minutes=HISTORY)  # the retention's, as if 400 min
    await db["positions"].insert_many(
        [
            {"_id": position_id(v, t), "tenant": tenant, "vehicle": v, "t": t, "at": NOW}
            for t in times
            for tenant, v in (("acme", vehicle), ("beta", str(ObjectId())))
        ]
    )
    store = PositionStore(
        db["positions"],
        db["positions_refused"],
        FleetStore(db["fleet_inbox"], db["fleet"], db["fleet_marks"], Expiry()),
        Expiry(),
    )
    ordered = sorted(position_id(vehicle, t) for t in times)

    def track(**bounds: Any) -> Any:
        fields = {"start": None, "end": None, "after": None, "limit": 10} | bounds
        return store.track("acme", vehicle, **fields, now=horizon + HORIZON)

    first = await track()
    assert [f["_id"] for f in first] == ordered[:10]  # the one 400 days old first
    second = await track(after=first[-1]["t"])
    assert [f["_id"] for f in second] == ordered[10:20]
    since = await track(start=NOW - timedelta(minutes=5))
    assert [f["_id"] for f in since] == ordered[-7:]  # 5 min ago to now, and the one ahead
    plans = await read_plans(db, reads)
    assert {index for index, _ in plans} == {"track"}
    assert sum(n for _, n in plans) <= 120  # three pages: their windows, not 2 x 400 fixes
    everything = await track(limit=HISTORY + 2)
    assert [f["_id"] for f in everything] == ordered
    window = await track(start=NOW - timedelta(minutes=30), end=NOW - timedelta(minutes=20))
    assert [f["_id"] for f in window] == ordered[-32:-22]
    assert await store.track("beta", vehicle, None, None, None, 10) == []

    # A vehicle younger than the horizon: windows from its creation on.
    young = _event_id(HISTORY // 2)
    await db["positions"].insert_many(
        [
            {"_id": position_id(young, t), "tenant": "acme", "vehicle": young, "t": t} | {"at": NOW}
            for t in times[: HISTORY // 2]
        ]
    )
    reads.sent.clear()
    found = await store.track("acme", young, None, None, None, 10, now=NOW)
    assert [f["_id"] for f in found] == sorted(position_id(young, t) for t in times[:200])[:10]
    plans = await read_plans(db, reads)
    assert {index for index, _ in plans} == {"track"} and sum(n for _, n in plans) <= 100


async def test_deliveries_by_a_field_no_index_has_read_the_tenants_windows_not_every_tenants(
    services: Services, watched: tuple[Any, Reads]
) -> None:
    db, reads = watched
    deliveries = [
        {"_id": f"{_event_id(n)}:{sub}", "tenant": tenant, "subscription_id": sub}
        | {"entity_id": f"v{n % 7}", "status": "succeeded", "event": {"id": "e"}}
        for n in range(HISTORY)
        for sub, tenant in (("s1", "acme"), ("s2", "acme"), ("s1", "beta"))
    ]
    await db["deliveries"].insert_many(deliveries)
    store = DeliveryStore(db["deliveries"])
    await store.ensure_indexes(scans_id_ranges=True)

    def wanted(**fields: str) -> list[str]:
        mine = [d for d in deliveries if d["tenant"] == "acme"]
        picked = [d["_id"] for d in mine if all(d[k] == v for k, v in fields.items())]
        return sorted(picked, reverse=True)

    page = await store.list("acme", {"subscription_id": "s1"}, before=None, limit=10)
    assert [d["_id"] for d in page] == wanted(subscription_id="s1")[:10]
    after = await store.list("acme", {"subscription_id": "s1"}, before=page[-1]["_id"], limit=10)
    assert [d["_id"] for d in after] == wanted(subscription_id="s1")[10:20]
    both = {"entity_id": "v3", "subscription_id": "s2"}
    page = await store.list("acme", both, before=None, limit=5)
    assert [d["_id"] for d in page] == wanted(**both)[:5]
    plans = await read_plans(db, reads)
    assert {index for index, _ in plans} == {"by_tenant"}
    assert sum(n for _, n in plans) <= 600  # their windows, not 3 scans of 1,200 deliveries
    assert await store.list("beta", {"subscription_id": "s2"}, before=None, limit=5) == []
    everything = await store.list("acme", {"entity_id": "v3"}, before=None, limit=1000)
    assert [d["_id"] for d in everything] == wanted(entity_id="v3")
