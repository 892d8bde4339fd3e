"""Database commands that fail on the server (SPEC §3.1, §5; docs/reliability.md "Command
faults"), injected with MongoDB's `configureFailPoint` `failCommand` on the gateway's own
connections (appName `rabbot-gateway`), the test's client unaffected:

- a write path (entity trigger POST, one item and a batch; position trigger POST; an admin
  create) answers 503 with `Retry-After` and "outcome unknown", a problem document, never a
  500; what it wrote is whole or nothing (an entity with its event, or neither); the
  client's retry once the fault is gone is answered and stored once;
- the background work (event relay, delivery worker, fleet fold) stops on the fault without
  setting healthy work aside, and resumes once it is gone: nothing lost, nothing doubled.

Every failpoint is switched off in a `finally`, so one test cannot poison the next."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from pymongo import AsyncMongoClient

from gateway.doorbell import Doorbell
from gateway.errors import StoreUnavailable
from gateway.events import EventRelay
from gateway.fleet.fold import FoldSettings
from gateway.services import Services
from gateway.store import Doc
from gateway.web.state import services_key
from tests.partner_double import (
    FakeClock,
    Partner,
    create_action,
    create_partner,
    create_subscription,
    partner,
)
from tests.support import auth
from tests.test_fleet_fold import own_fold
from tests.triggers_support import (
    VEHICLE,
    Client,
    bearer,
    create_position_trigger,
    create_trigger,
)

__all__ = ["partner"]  # the fixture

DB_TIMEOUT_MS = 1000  # GATEWAY_DB_TIMEOUT_MS of the app under test
BLOCK_MS = 2000  # a blocked command: longer than the deadline
WRITES = ["insert", "update", "delete", "findAndModify", "bulkWrite"]


@dataclass(frozen=True)
class Fault:
    name: str
    data: dict[str, Any]
    applied: bool = False  # the write may have happened all the same (the server ran it)


FAULTS = [
    Fault("ShutdownInProgress-labelled", {"errorCode": 91, "errorLabels": ["RetryableWriteError"]}),
    Fault("ShutdownInProgress", {"errorCode": 91}),
    Fault("InterruptedAtShutdown", {"errorCode": 11600}),
    Fault(
        "NotWritablePrimary-labelled", {"errorCode": 10107, "errorLabels": ["RetryableWriteError"]}
    ),
    Fault("HostUnreachable", {"errorCode": 6}),
    Fault("HostUnreachable-labelled", {"errorCode": 6, "errorLabels": ["RetryableWriteError"]}),
    Fault("OutOfDiskSpace", {"errorCode": 14031}),
    Fault("WriteConflict", {"errorCode": 112}),
    Fault("BadValue", {"errorCode": 2}),
    Fault(
        "WriteConcernFailed",
        {
            "writeConcernError": {
                "code": 64,
                "codeName": "WriteConcernFailed",
                "errmsg": "timed out",
            }
        },
        applied=True,
    ),
    Fault("closeConnection", {"closeConnection": True}),
    Fault("blockConnection", {"blockConnection": True, "blockTimeMS": BLOCK_MS}, applied=True),
]
# The background loops get one of each kind.
LOOP_FAULTS = [f for f in FAULTS if f.name in {
    "ShutdownInProgress-labelled", "HostUnreachable", "OutOfDiskSpace", "WriteConflict",
    "WriteConcernFailed", "closeConnection", "blockConnection",
}]  # fmt: skip


def ids(faults: Iterable[Fault]) -> list[str]:
    return [f.name for f in faults]


@dataclass
class Injector:
    """`configureFailPoint` through a client of the test's own (no appName: never failed)."""

    admin: AsyncMongoClient[dict[str, Any]]
    armed: list[str] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def failing(
        self,
        fault: Fault,
        commands: list[str] = WRITES,
        mode: Any = "alwaysOn",
    ) -> AsyncIterator[None]:
        data = {"failCommands": commands, "appName": "rabbot-gateway", **fault.data}
        await self.admin.admin.command("configureFailPoint", "failCommand", mode=mode, data=data)
        try:
            yield
        finally:
            await self.off(fault)

    async def off(self, fault: Fault) -> None:
        await self.admin.admin.command("configureFailPoint", "failCommand", mode="off")
        if fault.data.get("blockConnection"):
            # Commands blocked before the switch still sleep on the server, then run: the
            # server's own timer, there is nothing to await from here.
            await asyncio.sleep(BLOCK_MS / 1000)


@pytest.fixture
async def faults(mongodb_uri: str) -> AsyncIterator[Injector]:
    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, appname="faults")
    try:
        yield Injector(admin)
    finally:
        await admin.admin.command("configureFailPoint", "failCommand", mode="off")
        await admin.close()


async def _vehicle(app: Client, body: dict[str, Any]) -> None:
    """A vehicle a test starts from, stored before any fault is armed. A write the loaded
    machine answered 503 (the app's 1 s database deadline, outcome unknown) is sent again;
    one that landed all the same answers 409 (its plate is taken)."""
    for _ in range(5):
        response = await app.post("/api/v1/entities/vehicle", json=body, headers=auth())
        if response.status != 503:
            break
    assert response.status in (201, 409), await response.text()


@pytest.fixture
async def app(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> Client:
    return await ready(await aiohttp_client(make_app(db_timeout_ms=DB_TIMEOUT_MS)))


def services_of(client: Client) -> Services:
    return client.app[services_key]


async def ready(client: Client) -> Client:
    """The started app once its indexes are built (`Store.prepared`), as a test's faults
    expect to find it. An index build that outlasts the database deadline at start (this
    app's 1 s, on a loaded machine) does not hold the start up: the app serves, not ready,
    answering 503 until the build is done (docs/operations.md), which a test's first request
    met before any fault was armed."""
    async with asyncio.timeout(30):
        await services_of(client).store.prepared.wait()
    return client


async def database_back(services: Services) -> None:
    """Until the process knows its database answers again (its prober's ping passed) and its
    driver has found the server again (a lost connection or a NotWritablePrimary made it
    unknown): what a client's retry meets, a moment after the fault."""
    client = services.store.db.client
    async with asyncio.timeout(10):
        while not (services.store.health.up and client.topology_description.has_writable_server()):
            await asyncio.sleep(0.02)


async def assert_unavailable(response: Any) -> dict[str, Any]:
    """503, `Retry-After`, a problem document that says the outcome is unknown."""
    body = await response.json()
    assert response.status == 503, body
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert int(response.headers["Retry-After"]) > 0
    assert body["type"] == "https://rabbot.dev/problems/store-unavailable"
    assert body["outcome"] == "unknown" and "retry" in body
    assert "Traceback" not in body["detail"]
    return dict(body)


async def retried(send: Callable[[], Any]) -> Any:
    """A client's retry: again while the first call's Idempotency-Key is still held (409)."""
    async with asyncio.timeout(10):
        while (response := await send()).status == 409:
            await asyncio.sleep(0.05)
    return response


async def with_subscriber(client: Client) -> None:
    """Every entity event causes a delivery (to a partner no test sends to)."""
    partner = await create_partner(client, "http://127.0.0.1:9")
    action = await create_action(client, partner["id"])
    await create_subscription(client, action["id"], ("entity.*",))


async def stored(faults: Injector, services: Services) -> tuple[list[dict[str, Any]], int, int]:
    """The entities (with what waits in their outboxes), the events, the deliveries: read
    by the test's own client (the gateway's may still be finding its server again)."""
    db = faults.admin[services.settings.database]
    entities = await db["entities"].find({"type": "vehicle"}).to_list(None)
    return (
        entities,
        await db["events"].count_documents({}),
        await db["deliveries"].count_documents({}),
    )


async def assert_whole_or_nothing(faults: Injector, services: Services, fault: Fault) -> None:
    """What a failed write left: nothing, or (when the server ran it) an entity with its event
    waiting in its outbox: never an entity without its event."""
    entities, events, deliveries = await stored(faults, services)
    assert events == deliveries == 0
    if not fault.applied:
        assert entities == []
    for entity in entities:
        assert len(entity["outbox"]) == 1 and entity.get("pending") is not None


# -- write paths -------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS, ids=ids(FAULTS))
async def test_an_entity_trigger_post_the_database_fails_is_a_503_and_its_retry_is_stored_once(
    app: Client, faults: Injector, fault: Fault
) -> None:
    services = services_of(app)
    await with_subscriber(app)
    trigger = await create_trigger(app)
    headers = {**bearer(trigger), "Idempotency-Key": "order-1"}

    def send() -> Any:
        return app.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)

    async with faults.failing(fault):
        await assert_unavailable(await send())
    await assert_whole_or_nothing(faults, services, fault)
    await database_back(services)
    response = await retried(send)
    assert response.status in (200, 201), await response.text()
    first = await response.json()
    replay = await send()
    assert replay.status == response.status and replay.headers["Idempotent-Replayed"] == "true"
    assert await replay.json() == first
    await services.relay.run_until_idle()
    entities, events, deliveries = await stored(faults, services)
    assert [e["data"]["plate"] for e in entities] == [VEHICLE["plate"]]
    assert (events, deliveries) == (1, 1)  # entity.created, once


@pytest.mark.parametrize("fault", FAULTS, ids=ids(FAULTS))
async def test_a_batch_the_database_fails_is_a_503_and_its_retry_stores_each_item_once(
    app: Client, faults: Injector, fault: Fault
) -> None:
    services = services_of(app)
    await with_subscriber(app)
    trigger = await create_trigger(app)
    items = [{"plate": "ABC1D23"}, {"plate": "BRA2E19"}, {"plate": "XYZ9K88"}]
    headers = {**bearer(trigger), "Idempotency-Key": "batch-1"}

    def send() -> Any:
        return app.post(f"/hooks/{trigger['id']}", json=items, headers=headers)

    async with faults.failing(fault):
        await assert_unavailable(await send())
    await assert_whole_or_nothing(faults, services, fault)
    await database_back(services)
    response = await retried(send)
    answer = await response.json()
    assert response.status == 200, answer
    assert [r["status"] in (200, 201) for r in answer["results"]] == [True] * 3
    await services.relay.run_until_idle()
    entities, events, deliveries = await stored(faults, services)
    assert sorted(e["data"]["plate"] for e in entities) == sorted(i["plate"] for i in items)
    assert (events, deliveries) == (3, 3)


FIX = {"plate": "ABC1D23", "time": "2026-12-01T12:00:00Z", "lat": -23.55, "lon": -46.63}


@pytest.mark.parametrize("fault", FAULTS, ids=ids(FAULTS))
async def test_a_position_post_the_database_fails_is_a_503_and_its_retry_stores_the_fix_once(
    app: Client, faults: Injector, fault: Fault
) -> None:
    services = services_of(app)
    await _vehicle(app, VEHICLE)
    trigger = await create_position_trigger(app)

    def send() -> Any:
        return app.post(f"/hooks/{trigger['id']}", json=FIX, headers=bearer(trigger))

    async with faults.failing(fault):
        await assert_unavailable(await send())
    positions = faults.admin[services.settings.database]["positions"]
    if not fault.applied:
        assert await positions.count_documents({}) == 0
    await database_back(services)
    response = await retried(send)
    answer = await response.json()
    assert response.status in (200, 201), answer
    assert answer["duplicate"] is (response.status == 200)
    assert await positions.count_documents({}) == 1
    # A round the database failed after its insert hands what it stored to the fold once
    # the database is back (store/positions.py `_finish`); a number the fault took without
    # the round knowing it (a write concern failed, a blocked command ran late) is given up
    # by its taker once the database answers (store/fleet.py `settle`), or else by the fold
    # after `missing_seconds` (30 s; 1 s here). The fix is folded, once.
    fold = own_fold(services, FoldSettings(missing_seconds=1.0))
    async with asyncio.timeout(15):
        while "last_position" not in (data := await vehicle_data(services)):
            await fold.run_until_idle()
            await asyncio.sleep(0.1)
    assert data["last_position"]["time"] == "2026-12-01T12:00:00.000Z"


async def test_an_inbox_number_taken_as_the_database_stalled_does_not_hold_the_fold(
    app: Client, faults: Injector
) -> None:
    """A round whose inbox number was taken by a command the database ran only after the
    round's deadline (a paused or stalled server): the round failed (503, nothing stored),
    and nobody wrote that number, so the fold waited `missing_seconds` (30 s) before giving
    it up, and every fix appended after the pause was folded that late. The round's process
    knows it may hold a number: once the database answers, it finds which and gives it up
    itself (store/fleet.py), and the fold goes on within seconds."""
    services = services_of(app)
    await _vehicle(app, VEHICLE)
    trigger = await create_position_trigger(app)
    blocked = next(f for f in FAULTS if f.name == "blockConnection")
    async with faults.failing(blocked, ["findAndModify"]):  # the counter's $inc, run late
        await assert_unavailable(
            await app.post(f"/hooks/{trigger['id']}", json=FIX, headers=bearer(trigger))
        )
    await database_back(services)
    later = {**FIX, "time": "2026-12-01T12:05:00Z", "lat": -23.56}
    response = await app.post(f"/hooks/{trigger['id']}", json=later, headers=bearer(trigger))
    assert response.status == 201, await response.text()
    assert FoldSettings().missing_seconds == 30.0
    fold = own_fold(services, FoldSettings())  # waits that long for a number nobody writes
    async with asyncio.timeout(10):
        while (await vehicle_data(services)).get("last_position") is None:
            await fold.run_until_idle()
            await asyncio.sleep(0.1)
    data = await vehicle_data(services)
    assert data["last_position"]["time"] == "2026-12-01T12:05:00.000Z"


async def vehicle_data(services: Services, plate: str = VEHICLE["plate"]) -> dict[str, Any]:
    vehicle = await services.store.entities.get("acme", "vehicle", nk=plate)
    assert vehicle is not None
    return dict(vehicle["data"])


@pytest.mark.parametrize("fault", FAULTS, ids=ids(FAULTS))
async def test_an_admin_create_the_database_fails_is_a_503_and_a_retry_leaves_one(
    app: Client, faults: Injector, fault: Fault
) -> None:
    circle = {"lat": -23.55, "lon": -46.63, "radius_m": 200}
    geofence = {"name": "depot", "kind": "authorized", "circle": circle}

    def send() -> Any:
        return app.post("/api/v1/geofences", json=geofence, headers=auth())

    async with faults.failing(fault):
        body = await assert_unavailable(await send())
    assert "read the resource before retrying" in body["retry"]
    await database_back(services_of(app))
    listed = await app.get("/api/v1/geofences", headers=auth())
    assert len((await listed.json())["items"]) <= (1 if fault.applied else 0)
    response = await send()
    assert response.status in (201, 409), await response.text()  # 409: the first one landed
    listed = await app.get("/api/v1/geofences", headers=auth())
    assert [g["name"] for g in (await listed.json())["items"]] == ["depot"]


# -- background work ---------------------------------------------------------------------------


@pytest.mark.parametrize("commands", [["insert"], WRITES], ids=["events-insert", "all-writes"])
@pytest.mark.parametrize("fault", LOOP_FAULTS, ids=ids(LOOP_FAULTS))
async def test_the_relay_parks_nothing_on_a_database_fault_and_relays_once_it_is_gone(
    app: Client, faults: Injector, fault: Fault, commands: list[str]
) -> None:
    services = services_of(app)
    await with_subscriber(app)
    for plate in ("ABC1D23", "BRA2E19"):
        await _vehicle(app, {"plate": plate})
    async with faults.failing(fault, commands):
        with pytest.raises(StoreUnavailable):
            await services.relay.run_until_idle()
    entities, _, _ = await stored(faults, services)
    assert [e.get("relay_error") for e in entities] == [None, None]  # nothing set aside
    await database_back(services)
    await services.relay.run_until_idle()
    entities, events, deliveries = await stored(faults, services)
    assert [e.get("outbox") for e in entities] == [None, None]
    assert (events, deliveries) == (2, 2)


def relay_counted(services: Services) -> tuple[float, float]:
    """`gateway_events_relayed_total` (all families) and the relay lag histogram's count."""
    relayed = lag = 0.0
    for line in services.metrics.render().decode().splitlines():
        if line.startswith("gateway_events_relayed_total{"):
            relayed += float(line.rsplit(" ", 1)[1])
        elif line.startswith("gateway_event_relay_lag_seconds_count"):
            lag += float(line.rsplit(" ", 1)[1])
    return relayed, lag


@pytest.mark.parametrize("fault", LOOP_FAULTS, ids=ids(LOOP_FAULTS))
async def test_events_whose_drain_the_database_failed_are_counted_once_whether_it_landed_or_not(
    app: Client, faults: Injector, fault: Fault
) -> None:
    """The drain of a relay pass fails: refused, lost, or (blocked past the deadline, or its
    write concern failed) applied all the same, the next pass then finding the outboxes
    drained. Every event the pass stored is counted and its lag observed once all the same:
    the counter and the lag histogram left out the events of a drain a stalled database
    applied after its deadline, the longest waiting ones, for good."""
    services = services_of(app)
    await with_subscriber(app)
    for plate in ("ABC1D23", "BRA2E19"):
        await _vehicle(app, {"plate": plate})
    failing = contextlib.AsyncExitStack()
    passes = []

    async def fan_out_then_fail_the_drain(events: Sequence[Doc]) -> int:
        created = await services.fanout(events)
        passes.append(len(events))
        if len(passes) == 1:  # the first pass's drain fails
            await failing.enter_async_context(faults.failing(fault, ["update"]))
        return created

    relay = EventRelay(
        services.store,
        services.metrics,
        on_relayed=fan_out_then_fail_the_drain,
        doorbell=Doorbell(),
    )
    async with failing:
        with pytest.raises(StoreUnavailable):
            await relay.run_until_idle()
    assert relay_counted(services) == (0, 0)
    await database_back(services)
    await relay.run_until_idle()
    entities, events, deliveries = await stored(faults, services)
    assert [e.get("outbox") for e in entities] == [None, None]
    assert (events, deliveries) == (2, 2)
    assert relay_counted(services) == (2, 2)


async def pending_delivery(client: Client, partner: Partner) -> Services:
    """One delivery of `entity.created`, due now, to the partner double."""
    services = services_of(client)
    created = await create_partner(client, partner.url)
    action = await create_action(client, created["id"])
    await create_subscription(client, action["id"], ("entity.created",))
    response = await client.post("/api/v1/entities/vehicle", json=VEHICLE, headers=auth())
    assert response.status == 201
    await services.relay.run_until_idle()
    return services


async def delivery_state(faults: Injector, services: Services) -> str:
    [doc] = await faults.admin[services.settings.database]["deliveries"].find({}).to_list(None)
    return str(doc["status"])


@pytest.mark.parametrize("fault", LOOP_FAULTS, ids=ids(LOOP_FAULTS))
async def test_the_worker_claims_nothing_on_a_database_fault_and_delivers_once_it_is_gone(
    app: Client, faults: Injector, partner: Partner, fault: Fault
) -> None:
    services = await pending_delivery(app, partner)
    worker = services.delivery_worker
    async with faults.failing(fault):
        with pytest.raises(StoreUnavailable):
            await worker.run_until_idle()
    assert partner.requests == [] or fault.applied  # a blocked claim may land later
    await database_back(services)
    clock = FakeClock()
    clock.advance(3600)  # past any lease a late claim took
    worker.clock = clock
    await worker.run_until_idle()
    assert await delivery_state(faults, services) == "succeeded"
    assert len({r.webhook_id for r in partner.requests}) == 1


@pytest.mark.parametrize("fault", LOOP_FAULTS, ids=ids(LOOP_FAULTS))
async def test_a_delivery_whose_record_fails_is_not_parked_and_is_delivered_in_the_end(
    app: Client, faults: Injector, partner: Partner, fault: Fault
) -> None:
    """The partner got it; the database fails the write that records it (once): the worker
    hands the delivery back (pending again after a pause, or still in flight when that write
    failed too, until its lease expires), then it is sent again with the same webhook-id (at
    least once, SPEC §4), never parked as if it could not be processed."""
    services = await pending_delivery(app, partner)
    worker = services.delivery_worker
    partner.respond_with(200, delay=30)
    sending = asyncio.create_task(worker.run_until_idle())
    await partner.wait_for(1)  # sent: the next write is the record
    async with faults.failing(fault, ["update"], mode={"times": 1}):
        partner.release.set()
        counts = await sending
    assert counts["parked"] == 0, counts
    assert await delivery_state(faults, services) in ("pending", "in_flight", "succeeded")
    await database_back(services)
    clock = FakeClock()
    clock.advance(3600)  # the lease has expired
    worker.clock = clock
    await worker.run_until_idle()
    assert await delivery_state(faults, services) == "succeeded"
    assert len({r.webhook_id for r in partner.requests}) == 1


@pytest.mark.parametrize("fault", LOOP_FAULTS, ids=ids(LOOP_FAULTS))
async def test_the_fold_writes_nothing_half_on_a_database_fault_and_folds_once_it_is_gone(
    app: Client, faults: Injector, fault: Fault
) -> None:
    services = services_of(app)
    for plate in ("ABC1D23", "BRA2E19"):
        await _vehicle(app, {"plate": plate})
    trigger = await create_position_trigger(app)
    start = datetime(2026, 12, 1, 12, tzinfo=UTC)
    fixes = [
        {"plate": plate, "time": (start + timedelta(seconds=30 * i)).isoformat(),
         "lat": -23.55 + 0.001 * i, "lon": -46.63}
        for plate in ("ABC1D23", "BRA2E19") for i in range(10)
    ]  # fmt: skip
    response = await app.post(f"/hooks/{trigger['id']}", json=fixes[:10], headers=bearer(trigger))
    assert response.status == 200
    await services.fold.run_until_idle()  # the first vehicle folded without a fault
    response = await app.post(f"/hooks/{trigger['id']}", json=fixes[10:], headers=bearer(trigger))
    assert response.status == 200
    # The answer comes once the fixes are stored, while their round writes the fold's inbox
    # (`early`): a fault armed before that write fails the round's hand-on (finished late,
    # once the database is back) instead of the fold, which then finds nothing to fold.
    await services.store.positions.inserts.settled(10)
    async with faults.failing(fault, ["update", "bulkWrite", "insert"]):
        with pytest.raises(StoreUnavailable):
            await services.fold.run_until_idle()
    await database_back(services)
    await services.fold.run_until_idle()
    await services.relay.run_until_idle()
    folded = {}
    for plate in ("ABC1D23", "BRA2E19"):
        vehicle = await services.store.entities.get("acme", "vehicle", nk=plate)
        assert vehicle is not None
        folded[plate] = vehicle["data"]
    one, other = folded["ABC1D23"], folded["BRA2E19"]
    assert one["last_position"]["time"] == other["last_position"]["time"]
    assert one["odometer_km"] == pytest.approx(other["odometer_km"])
    # the same fixes, the same events: the faulted pass emitted none twice
    by_vehicle: dict[str, list[str]] = {}
    async for event in services.store.db["events"].find({}).sort("_id", 1):
        by_vehicle.setdefault(event["entity"]["id"], []).append(event["type"])
    [one_events, other_events] = [
        by_vehicle[str(v["_id"])]
        for v in [
            await services.store.entities.get("acme", "vehicle", nk=p)
            for p in ("ABC1D23", "BRA2E19")
        ]
        if v is not None
    ]
    assert sorted(one_events) == sorted(other_events)


async def test_the_fold_waiting_gauge_counts_folded_fields_a_write_failed_to_store(
    app: Client, faults: Injector
) -> None:
    """The fold's pass folds into memory and then writes the vehicles: a write that fails
    (a vehicle held by a dead process's transaction, a database fault) left nothing in the
    inbox to wait for, and `gateway_fleet_fold_oldest_waiting_seconds` said 0 while the
    batch waited."""
    services = services_of(app)
    await _vehicle(app, {"plate": "ABC1D23"})
    trigger = await create_position_trigger(app)
    fix = {"plate": "ABC1D23", "time": "2026-12-01T12:00:00Z", "lat": -23.55, "lon": -46.63}
    response = await app.post(f"/hooks/{trigger['id']}", json=[fix], headers=bearer(trigger))
    assert response.status == 200
    await services.store.positions.inserts.settled(10)
    async with faults.failing(Fault("WriteConflict", {"errorCode": 112}), ["update", "bulkWrite"]):
        with pytest.raises(StoreUnavailable):
            await services.fold.run_until_idle()  # folded, its vehicle's write failed
    await asyncio.sleep(1.1)
    assert await services.fold.fold_once() == 0  # nothing left in the inbox
    gauge = "gateway_fleet_fold_oldest_waiting_seconds"
    text = await (await app.get("/metrics")).text()
    [waiting] = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(gauge)]
    assert waiting >= 1
    await database_back(services)
    await services.fold.run_until_idle()
    assert await services.fold.fold_once() == 0
    text = await (await app.get("/metrics")).text()
    assert f"{gauge} 0.0" in text


# -- readiness -------------------------------------------------------------------------------


async def test_readiness_drops_while_the_database_answers_pings_but_its_storage_fails(
    app: Client, faults: Injector
) -> None:
    """A SecantusDB whose disk filled up (its storage engine panicked) still answers `ping`
    and fails every read and write with InternalError (1): readiness said ready."""
    assert (await app.get("/readyz")).status == 200
    storage = ["find", "listCollections", "insert", "update", "aggregate"]
    async with faults.failing(Fault("InternalError", {"errorCode": 1}), storage):
        response = await app.get("/readyz")
        body = await response.json()
        assert response.status == 503, body
        assert "InternalError" in body["detail"]
    await database_back(services_of(app))
    assert (await app.get("/readyz")).status == 200
