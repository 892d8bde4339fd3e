"""The event relay keeps up and shares the work: the longest waiting outbox first, a write that
lands mid-relay is not lost, relay shards are split between processes by leases, and the lag
is measured (gateway/events.py, gateway/shares.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine

from gateway import clock
from gateway.doorbell import Doorbell
from gateway.entities import Origin
from gateway.events import EventRelay
from gateway.mapping import Emit
from gateway.server_clock import ServerClock
from gateway.services import Services
from gateway.shares import Shares
from gateway.store import Doc
from gateway.store import client as store_client
from gateway.store.entities import RELAY_SHARDS, relay_shard
from tests.support import set_offset

ORIGIN = Origin("trigger", "t1")


def _plate(i: int) -> str:
    return f"ABC{i % 10}D{i // 10 % 10}{i % 10}"


def _relay(services: Services, **options: object) -> EventRelay:
    return EventRelay(
        services.store,
        services.metrics,
        on_relayed=services.fanout,
        doorbell=Doorbell(),
        **options,  # type: ignore[arg-type]
    )


async def test_the_longest_waiting_outbox_is_relayed_first(services: Services) -> None:
    for i in range(5):
        await services.entities.upsert("acme", "vehicle", {"plate": _plate(i)}, ORIGIN)
    # The first vehicle is written again: its outbox keeps the time of its oldest event.
    await services.entities.upsert("acme", "vehicle", {"plate": _plate(0), "year": 2020}, ORIGIN)
    order: list[str] = []

    async def record(events: Sequence[Doc]) -> int:
        order.extend(dict.fromkeys(e["entity"]["key"] for e in events))
        return 0

    relay = EventRelay(
        services.store, services.metrics, on_relayed=record, doorbell=Doorbell(), batch=1
    )
    assert await relay.run_until_idle() == 6
    assert order == [_plate(i) for i in range(5)]


async def test_a_write_between_the_relay_reading_and_draining_an_outbox_is_relayed_next(
    services: Services,
) -> None:
    entities = services.store.entities
    await services.entities.upsert("acme", "vehicle", {"plate": "ABC1D23"}, ORIGIN)
    (read,) = await entities.pending_outboxes(10)
    await services.entities.upsert("acme", "vehicle", {"plate": "ABC1D23", "year": 2020}, ORIGIN)
    await entities.drain_outboxes([(read, [e["id"] for e in read["outbox"]])])
    (left,) = await entities.pending_outboxes(10)
    assert [e["type"] for e in left["outbox"]] == ["entity.updated"]
    assert await services.relay.run_until_idle() == 1
    assert await entities.pending_outboxes(10) == []


async def test_the_waiting_gauge_reads_the_oldest_event_still_waiting_after_a_write_mid_relay(
    services: Services, gateway_time: Callable[[datetime], None]
) -> None:
    """An entity written while the relay moved its events kept, once drained, the time of
    the event relayed as its `pending`: an entity written on and on read as waiting since
    the first write of the streak, and `GatewayEventRelayBehind` paged on a relay that moved
    every event within a second."""
    gateway_time(datetime(2026, 12, 6, 12, 0, tzinfo=UTC))
    await services.entities.upsert("acme", "vehicle", {"plate": "ABC1D23"}, ORIGIN)

    async def written_meanwhile(events: Sequence[Doc]) -> int:
        if events[0]["type"] == "entity.created":  # 5 min on, a write before the drain
            gateway_time(datetime(2026, 12, 6, 12, 5, tzinfo=UTC))
            data = {"plate": "ABC1D23", "year": 2020}
            await services.entities.upsert("acme", "vehicle", data, ORIGIN)
        return 0

    relay = EventRelay(
        services.store, services.metrics, on_relayed=written_meanwhile, doorbell=Doorbell()
    )
    assert await relay.relay_once() == 1  # the first event; the second written meanwhile
    assert await relay.relay_once() == 1  # the second, read as just written
    gauge = "gateway_event_relay_oldest_waiting_seconds"
    text = services.metrics.render().decode()
    [waited] = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(gauge)]
    assert waited < 5


async def test_an_outbox_emptied_by_a_drain_after_a_write_without_events_goes_next_pass(
    services: Services, gateway_time: Callable[[datetime], None]
) -> None:
    """The fold's position write moves an entity's revision without an event: the drain
    pulls every entry, and the empty outbox reads as waiting since the drain, not since the
    relayed event, until the next pass takes it away."""
    entities = services.store.entities
    gateway_time(datetime(2026, 12, 6, 12, 0, tzinfo=UTC))
    written = await services.entities.upsert("acme", "vehicle", {"plate": "ABC1D23"}, ORIGIN)
    (read,) = await entities.pending_outboxes(10)
    collection = services.store.db["entities"]
    await collection.update_one({"_id": written.entity["_id"]}, {"$inc": {"rev": 1}})
    gateway_time(datetime(2026, 12, 6, 12, 5, tzinfo=UTC))
    await entities.drain_outboxes([(read, [e["id"] for e in read["outbox"]])])
    (left,) = await entities.pending_outboxes(10)
    assert left["outbox"] == []
    assert left["pending"] >= datetime(2026, 12, 6, 12, 5, tzinfo=UTC)
    assert await services.relay.run_until_idle() == 1  # the empty outbox, taken away
    assert await entities.pending_outboxes(10) == []
    stored = await collection.find_one({"_id": written.entity["_id"]})
    assert "outbox" not in stored and "pending" not in stored


async def test_an_outbox_written_before_relay_shards_is_relayed_after_a_restart(
    services: Services,
) -> None:
    written = await services.entities.upsert("acme", "vehicle", {"plate": "ABC1D23"}, ORIGIN)
    entities = services.store.db["entities"]
    # As an older gateway left it: pending, without a relay shard.
    await entities.update_one({"_id": written.entity["_id"]}, {"$unset": {"pending_shard": ""}})
    before = await services.relay.run_until_idle()
    await services.store.ensure_indexes()  # what every start runs
    after = await services.relay.run_until_idle()

    assert (before, after) == (0, 1)
    stored = await services.store.events.find("acme", {}, before=None, limit=5)
    assert [e["entity"]["key"] for e in stored] == ["ABC1D23"]


async def test_a_relay_moves_only_the_outboxes_of_its_shards_and_stamps_the_lag(
    services: Services,
) -> None:
    written = [
        (await services.entities.upsert("acme", "vehicle", {"plate": _plate(i)}, ORIGIN)).entity
        for i in range(12)
    ]
    shards = {relay_shard(written[0]["_id"])}
    mine = [doc for doc in written if relay_shard(doc["_id"]) in shards]
    relay = _relay(services)
    assert await relay.run_until_idle(shards) == len(mine)
    stored = await services.store.events.find("acme", {}, before=None, limit=50)
    assert sorted(e["entity"]["id"] for e in stored) == sorted(str(d["_id"]) for d in mine)
    assert all(e["relayed_at"] >= e["occurred_at"] for e in stored)
    assert await relay.run_until_idle() == len(written) - len(mine)
    metrics = services.metrics.render().decode()
    assert f"gateway_event_relay_lag_seconds_count {len(written)}.0" in metrics


def test_an_id_never_sorts_before_the_previous_one_when_the_offset_steps_back() -> None:
    """The offset is measured again every minute; a step back of 2 ms just past a second
    boundary gave an id sorting before the process's previous one (a list read on from its
    last id would miss it)."""
    from gateway.store.client import new_id

    try:
        with time_machine.travel(1_800_000_000.0005, tick=False):
            set_offset(timedelta(seconds=5, milliseconds=1))
            first = new_id()
            set_offset(timedelta(seconds=5, milliseconds=-1))  # measured again
            assert new_id() > first
    finally:
        set_offset(timedelta())


async def test_a_reading_of_the_servers_clock_corrects_the_gateways_time_and_says_a_jump(
    services: Services, gateway_time: Callable[[datetime], None], caplog: pytest.LogCaptureFixture
) -> None:
    """Between two readings the gateway's time counts on this host's clock that counts
    suspends too (`clock.ticks`: a step of the host's wall clock never reaches it); a reading
    puts it on the server's clock again, and one that finds it far off what that clock
    counted (the server's clock stepped) says so."""
    server_clock = ServerClock(services.store, services.metrics)
    await server_clock.measure()
    gateway_time(datetime.now(UTC) - timedelta(hours=1))  # the server's clock an hour behind
    with time_machine.travel(datetime.now(UTC) + timedelta(days=1)):  # and this host's stepped
        assert abs((clock.utcnow() - datetime.now(UTC)).total_seconds() + 86_400 + 3600) < 5
        with caplog.at_level("WARNING", "gateway.server_clock"):
            await server_clock.measure()
        assert "clock moved 3600.0 s further than this host's clock counted" in caplog.text
        assert abs((clock.utcnow() - datetime.now(UTC)).total_seconds() + 86_400) < 1


async def test_a_process_on_a_host_whose_clock_is_behind_stamps_and_measures_on_the_servers(
    services: Services,
) -> None:
    """A process on a host 45 s behind the database server's clock measured the offset (and
    took its leases on the server's clock) but stamped the entity and its event with its
    host's clock: `occurred_at` 45 s in the past, and the relay of a process on the right
    clock counted the skew as 45 s of lag. The database runs on the right clock here; this
    process's wall clock is set back for the write."""
    server_clock = ServerClock(services.store, services.metrics)
    written_at = datetime.now(UTC)
    try:
        with time_machine.travel(written_at - timedelta(seconds=45)):
            await server_clock.measure()
            assert abs(clock.offset().total_seconds() - 45) < 1
            written = await services.entities.upsert(
                "acme", "vehicle", {"plate": "ABC1D23"}, ORIGIN
            )
        await server_clock.measure()  # now a process on the right clock
        assert await services.relay.run_until_idle() == 1
    finally:
        set_offset(timedelta())
    relayed_at = datetime.now(UTC)

    stored = await services.store.db["entities"].find_one({"_id": written.entity["_id"]})
    (event,) = await services.store.events.find("acme", {}, before=None, limit=5)
    for stamp in (stored["created_at"], stored["updated_at"], event["occurred_at"]):
        assert abs((stamp - written_at).total_seconds()) < 1, stamp
    for made in (stored["_id"], event["_id"]):  # ids hold whole seconds
        assert abs((made.generation_time - written_at).total_seconds()) < 2, made
    assert event["occurred_at"] <= event["relayed_at"] <= relayed_at + timedelta(seconds=1)
    metrics = services.metrics.render().decode()
    assert 'gateway_event_relay_lag_seconds_bucket{le="1.0"} 1.0' in metrics


async def test_processes_split_the_relay_shards_and_take_over_a_dead_ones(
    services: Services,
) -> None:
    now = [datetime(2026, 12, 1, tzinfo=UTC)]

    def share(owner: str) -> Shares:
        return Shares(services.store, "relay-test", RELAY_SHARDS, owner=owner, clock=lambda: now[0])

    a, b, c = share("a"), share("b"), share("c")
    assert await a.refresh() == frozenset(range(RELAY_SHARDS))  # alone: every shard
    assert await b.refresh() == frozenset()  # all taken; b is counted from now on
    await a.refresh()  # a lets go of b's fair share...
    await b.refresh()  # ...which b takes
    assert len(a.mine) == len(b.mine) == RELAY_SHARDS // 2
    assert a.mine.isdisjoint(b.mine)
    await c.refresh()
    for process in (a, b, c, a, b, c):
        await process.refresh()
    assert sorted(len(p.mine) for p in (a, b, c)) == [5, 5, 6]
    assert a.mine | b.mine | c.mine == frozenset(range(RELAY_SHARDS))
    await c.release_all()  # a clean stop: the others take over at once
    now[0] += timedelta(seconds=1)
    for process in (a, b, a, b):
        await process.refresh()
    assert a.mine | b.mine == frozenset(range(RELAY_SHARDS))
    # b dies without a word: once its leases expire, a holds every shard.
    now[0] += timedelta(seconds=11)
    assert await a.refresh() == frozenset(range(RELAY_SHARDS))


async def test_a_process_past_its_leases_without_a_renewal_works_on_no_shard(
    services: Services,
) -> None:
    """Frozen (a suspended VM), or its refreshes failing, past its leases: the others may
    have taken its shards, and what it held before is no longer its to relay."""
    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    a = Shares(services.store, "relay-frozen", RELAY_SHARDS, owner="a", clock=lambda: now[0])
    assert await a.refresh() == frozenset(range(RELAY_SHARDS))
    now[0] += timedelta(seconds=9)
    assert a.mine == frozenset(range(RELAY_SHARDS))  # within the 10 s leases
    now[0] += timedelta(seconds=2)
    assert a.mine == frozenset()
    assert await a.refresh() == frozenset(range(RELAY_SHARDS))  # taken again: nobody had


async def _lease_owners(services: Services, job: str) -> dict[int, str]:
    leases = services.store.db["leases"].find({"job": job, "shard": {"$exists": True}})
    return {doc["shard"]: doc["owner"] for doc in await leases.to_list(None)}


async def test_two_relays_keep_their_shards_and_relay_each_event_once_under_a_steady_stream(
    services: Services,
) -> None:
    """A relay's pass ran until no outbox held anything, and its leases were renewed only
    between passes: under a steady stream of writes to one entity (an ERP flushing one
    vehicle's backlog) its pass never ended, its leases expired, the other process took its
    shards as a dead one's and both relayed the same outboxes, every event about twice."""
    job, ttl = "relay-stream", 1.5
    relayed: Counter[Any] = Counter()  # event id -> how many times a relay fanned it out

    async def fan_out(events: Sequence[Doc]) -> int:
        relayed.update(event["_id"] for event in events)
        return 0

    hot = (await services.entities.upsert("acme", "vehicle", {"plate": "HOT1A23"}, ORIGIN)).entity
    shares = {
        owner: Shares(services.store, job, RELAY_SHARDS, owner=owner, ttl_seconds=ttl)
        for owner in ("a", "b")
    }
    relays = [
        EventRelay(
            services.store, services.metrics, on_relayed=fan_out, doorbell=Doorbell(), shares=s
        )
        for s in shares.values()
    ]
    running = [asyncio.create_task(relay.run()) for relay in relays]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(10):  # the split: 8 + 8
            while sorted(len(s.mine) for s in shares.values()) != [8, 8]:
                await asyncio.sleep(0.05)
        split = await _lease_owners(services, job)
        end = loop.time() + 3 * ttl
        writes = 0

        async def write(client: int) -> None:
            nonlocal writes
            while loop.time() < end:
                data = {"plate": "HOT1A23", "model": f"m{client}-{writes}"}
                await services.entities.upsert("acme", "vehicle", data, ORIGIN)
                writes += 1

        owners_seen = []

        async def watch() -> None:
            while loop.time() < end:
                owners_seen.append(await _lease_owners(services, job))
                await asyncio.sleep(0.1)

        await asyncio.gather(watch(), *(write(n) for n in range(8)))
        async with asyncio.timeout(10):
            while await services.store.entities.pending_outboxes(1):
                await asyncio.sleep(0.05)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    taken = [{n: o for n, o in owners.items() if o != split[n]} for owners in owners_seen]
    twice = sum(count > 1 for count in relayed.values())
    assert ([moved for moved in taken if moved], twice) == ([], 0)
    events = await services.store.db["events"].count_documents({"entity.id": str(hot["_id"])})
    assert len(relayed) == events == writes + 1 > 8


async def test_relayed_events_are_counted_by_a_bounded_family_a_custom_type_as_custom(
    services: Services,
) -> None:
    """The counter's label was the event type's first word, whatever a tenant's mapping
    emitted (`emit: [acme_secret_project.x]`): a new series for every such type."""
    await services.entities.upsert("acme", "vehicle", {"plate": "ABC1D23"}, ORIGIN)
    for extra in ("fine.received", "acme_secret_project.started", "zz9.plural.z.alpha"):
        await services.entities.upsert(
            "acme",
            "vehicle",
            {"plate": "ABC1D23", "model": extra},
            ORIGIN,
            extra_events=[Emit(extra)],
        )
    assert await _relay(services).run_until_idle() == 7
    text = services.metrics.render().decode()
    counted = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_events_relayed_total{")
    }
    assert counted == {"entity": 4.0, "fine": 1.0, "custom": 2.0}


async def test_an_idempotent_insert_sends_a_bounded_number_of_documents_a_command(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay's and the fold's inserts of events and deliveries (`insert_new`) go
    `INSERT_CHUNK` documents a command, each under its own deadline: a fold pass's 4,000
    events in one command outlasted the deadline on a loaded SecantusDB and were sent again
    and again. Those that exist are left as they are, in any command, and not counted."""
    monkeypatch.setattr(store_client, "INSERT_CHUNK", 3)
    collection = services.store.db["events"]
    await collection.insert_many([{"_id": "e1"}, {"_id": "e5"}])
    sizes: list[int] = []
    real = collection.insert_many

    async def insert_many(docs: list[Doc], **options: Any) -> Any:
        sizes.append(len(docs))
        return await real(docs, **options)

    monkeypatch.setattr(collection, "insert_many", insert_many)
    docs = [{"_id": f"e{n}"} for n in range(8)]
    assert await store_client.insert_new(collection, docs) == 6
    assert sizes == [3, 3, 2]
    stored = sorted(d["_id"] for d in await collection.find().to_list(None))
    assert stored == [d["_id"] for d in docs]
    assert await store_client.insert_new(collection, []) == 0 and sizes == [3, 3, 2]
