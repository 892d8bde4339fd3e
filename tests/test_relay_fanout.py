"""A large fan-out does not jam the event relay (gateway/events.py, delivery/fanout.py): a pass
inserts a bounded number of deliveries, in bounded inserts whose progress is kept, the tenants
taking turns, so one tenant's fan-out neither fails every pass on the database's deadline nor
holds up another tenant's events; each delivery is still made once, in each entity's order,
and a relay that dies between chunks loses nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from gateway.clock import utcnow
from gateway.delivery.fanout import FANOUT_BUDGET, FANOUT_CHUNK, FanOut
from gateway.doorbell import Doorbell
from gateway.entities import Origin
from gateway.errors import StoreUnavailable
from gateway.events import EventRelay, event_document, relay_all
from gateway.services import Services
from gateway.store import Doc
from tests.read_plans import Reads, heard, reads_of

ORIGIN = Origin("trigger", "t1")


async def _subscribe(services: Services, tenant: str, count: int) -> None:
    """`count` subscriptions of `tenant` to every `entity.*` event (one action)."""
    partner = await services.actions.create_partner(tenant, {
        "name": "erp", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}
    })  # fmt: skip
    action = await services.actions.create_action(tenant, {
        "name": "push", "partner_id": str(partner["_id"]), "method": "POST", "path": "/",
        "mode": "deliver",
    })  # fmt: skip
    for _ in range(count):
        await services.actions.create_subscription(
            tenant, {"action_id": str(action["_id"]), "event_types": ["entity.*"]}
        )


def _record_inserts(services: Services, *, fail_at: int | None = None) -> list[list[str]]:
    """The ids of each insert of deliveries, in order; the insert number `fail_at` lands and
    then fails as a deadline passed would (`StoreUnavailable`)."""
    sent: list[list[str]] = []
    insert = services.store.deliveries.insert_many

    async def recording(docs: Sequence[Doc]) -> int:
        sent.append([doc["_id"] for doc in docs])
        created = await insert(docs)
        if len(sent) == fail_at:
            raise StoreUnavailable("NetworkTimeout (the test's deadline)")
        return created

    services.store.deliveries.insert_many = recording  # type: ignore[method-assign]
    return sent


def _created(services: Services) -> float:
    text = services.metrics.render().decode()
    prefix = 'gateway_deliveries_total{outcome="created"}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


@pytest.fixture
def reads() -> Iterator[Reads]:
    """The reads of the test's clients: asked for before `services`, so theirs are heard."""
    with heard() as listener:
        yield listener


def _relay(services: Services, **fanout: Any) -> EventRelay:
    """A relay of its own (a process of its own: nothing in memory from another)."""
    on_relayed = FanOut(services.store, services.catalog, services.metrics, **fanout)
    return EventRelay(services.store, services.metrics, on_relayed=on_relayed, doorbell=Doorbell())


async def test_another_tenants_event_is_relayed_in_the_first_pass_behind_a_large_fan_out(
    services: Services,
) -> None:
    """alpha: 150 subscriptions and 4 vehicle writes (600 deliveries, more than a pass's
    budget); bravo writes one vehicle after them. The first pass creates bravo's delivery
    and drains its outbox; no insert holds more than a chunk or so, and no pass inserts more
    than its budget (before: one insert of all 601, which on a loaded database passed the
    deadline, failed the pass, and was redone every pass)."""
    await _subscribe(services, "alpha", 150)
    await _subscribe(services, "bravo", 1)
    for i in range(4):
        await services.entities.upsert("alpha", "vehicle", {"plate": f"ALP1D{i}3"}, ORIGIN)
    await services.entities.upsert("bravo", "vehicle", {"plate": "BRV1D23"}, ORIGIN)
    sent = _record_inserts(services)
    deliveries = services.store.db["deliveries"]

    assert await services.relay.relay_once() >= 1
    assert max(map(len, sent)) <= 2 * FANOUT_CHUNK
    assert sum(map(len, sent)) <= FANOUT_BUDGET + FANOUT_CHUNK
    assert await deliveries.count_documents({"tenant": "bravo"}) == 1
    waiting = await services.store.entities.pending_outboxes(10)
    assert {doc["tenant"] for doc in waiting} == {"alpha"}  # bravo's drained

    await services.relay.run_until_idle()
    assert await deliveries.count_documents({"tenant": "alpha"}) == 600
    assert await services.store.entities.pending_outboxes(10) == []
    assert _created(services) == 601
    ids = [i for chunk in sent for i in chunk]
    assert len(ids) == len(set(ids)) == 601  # none inserted twice


async def test_a_relay_that_fails_between_chunks_goes_on_from_there_each_delivery_once_in_order(
    services: Services,
) -> None:
    """One vehicle written three times (three events, in its outbox in order) and 30
    subscriptions: 90 deliveries, 20 an insert, 40 a pass. The third insert lands and then
    fails (a deadline); the relay's process is replaced (nothing kept in memory). The next
    relays go on: every delivery stored once, none inserted twice, each event's all
    inserted before any of the next event's, each event stored once, the outbox drained."""
    await _subscribe(services, "alpha", 30)
    for year in (2020, 2021, 2022):
        data = {"plate": "ALP1D23", "year": year}
        await services.entities.upsert("alpha", "vehicle", data, ORIGIN)
    sent = _record_inserts(services, fail_at=3)
    first = _relay(services, chunk=20, max_deliveries=40)

    assert await first.relay_once() == 1  # 40 stored: the first event's 30, 10 of the second
    try:
        await first.relay_once()
    except StoreUnavailable:
        pass
    else:
        raise AssertionError("the third insert should have failed the pass")
    again = _relay(services, chunk=20, max_deliveries=40)  # another process takes over
    assert await again.run_until_idle() == 2

    ids = [i for chunk in sent for i in chunk]
    assert len(ids) == len(set(ids)) == 90  # the failed insert's deliveries were kept
    assert max(map(len, sent)) <= 40
    events = [doc["_id"] async for doc in services.store.db["events"].find({}, {"_id": 1})]
    assert len(events) == 3
    event_of = {i: i.split(":")[0] for i in ids}
    order = list(dict.fromkeys(event_of[i] for i in ids))
    assert [event_of[i] for i in ids] == [e for e in order for _ in range(30)]
    stored = [doc["event"]["type"] async for doc in services.store.db["deliveries"].find({})]
    assert Counter(stored) == {"entity.created": 30, "entity.updated": 60}
    assert await services.store.entities.pending_outboxes(10) == []
    text = services.metrics.render().decode()
    assert "gateway_event_relay_lag_seconds_count 3.0" in text  # each event counted once


async def test_a_pass_takes_a_few_outboxes_of_a_tenant_while_another_waits_and_takes_turns(
    services: Services,
) -> None:
    """alpha's backlog fills the batch (4); bravo's one outbox, written last, is read beside
    alpha's 2 oldest and goes second; the rest of the batch is alpha's. A tenant alone gets
    the whole batch."""
    for i in range(6):
        await services.entities.upsert("alpha", "vehicle", {"plate": f"ALP1D{i}3"}, ORIGIN)
    await services.entities.upsert("bravo", "vehicle", {"plate": "BRV1D23"}, ORIGIN)
    batches: list[list[str]] = []

    async def record(events: Sequence[Doc]) -> int:
        batches.append([f"{e['tenant']}:{e['entity']['key']}" for e in events])
        return 0

    relay = EventRelay(
        services.store,
        services.metrics,
        on_relayed=record,
        doorbell=Doorbell(),
        batch=4,
        per_tenant=2,
    )
    assert await relay.run_until_idle() == 7
    assert batches == [
        ["alpha:ALP1D03", "bravo:BRV1D23", "alpha:ALP1D13", "alpha:ALP1D23"],
        ["alpha:ALP1D33", "alpha:ALP1D43", "alpha:ALP1D53"],
    ]


async def test_fresh_events_are_fanned_out_without_a_read_of_stored_deliveries_and_again_with_it(
    reads: Reads, services: Services
) -> None:
    """Three vehicle writes, one subscription (the entity write path). The first pass of
    their events, fresh in the event log, cannot find any of their deliveries stored: it
    inserts them without reading which are (before: one read of the deliveries' ids a pass,
    a round trip more on every write's way to its partner). Its insert lands and then fails
    (a deadline): the pass done again reads them and inserts none again."""
    await _subscribe(services, "alpha", 1)
    for i in range(3):
        await services.entities.upsert("alpha", "vehicle", {"plate": f"ALP1D{i}3"}, ORIGIN)
    sent = _record_inserts(services, fail_at=1)
    reads.sent.clear()

    with pytest.raises(StoreUnavailable):
        await services.relay.relay_once()
    assert reads_of(reads, "deliveries") == []
    assert [len(ids) for ids in sent] == [3]

    assert await services.relay.relay_once() == 3
    assert len(reads_of(reads, "deliveries")) == 1  # the pass done again reads them
    assert [len(ids) for ids in sent] == [3]  # and inserts none again
    assert await services.store.db["deliveries"].count_documents({}) == 3
    assert await services.store.entities.pending_outboxes(10) == []


async def test_a_hook_called_again_with_the_events_it_left_inserts_no_delivery_twice(
    services: Services,
) -> None:
    """The fold's pass calls the fan-out until its events are done (`relay_all`), each
    call with the events the last one left: the event it stopped in has deliveries stored,
    which the next call reads and does not insert again (nor count against its budget)."""
    await _subscribe(services, "alpha", 30)
    for year in (2020, 2021):
        data = {"plate": "ALP1D23", "year": year}
        await services.entities.upsert("alpha", "vehicle", data, ORIGIN)
    (entity,) = await services.store.entities.pending_outboxes(10)
    now = utcnow()
    events = [event_document("alpha", entity, entry, now) for entry in entity["outbox"]]
    await services.store.events.insert_many(events)
    sent = _record_inserts(services)

    await relay_all(FanOut(services.store, services.catalog, services.metrics, chunk=20,
                           max_deliveries=40), events)  # fmt: skip

    ids = [i for chunk in sent for i in chunk]
    assert len(ids) == len(set(ids)) == 60
    assert _created(services) == 60
