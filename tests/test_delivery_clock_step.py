"""Delivery retries and leases set while the gateway's clock ran fast (the database server's:
with the embedded database, this host's), after the clock is set right: waited from the
step, not for as long as the clock was ahead (docs/scaling.md "One clock")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.clock import utcnow
from gateway.errors import StoreUnavailable
from gateway.services import Services
from gateway.store.deliveries import DeliveryStore, shard_of
from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
)
from tests.read_plans import Reads, read_plans
from tests.support import auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]


async def test_a_retry_set_while_the_clock_ran_an_hour_fast_waits_its_minute_from_the_step(
    client: Client, partner: Partner, gateway_time: Callable[[datetime], None]
) -> None:
    """A retry due "in 1 min", set while the gateway's clock ran an hour fast, is sent a
    minute after NTP stepped the clock right, not an hour and a minute later; and not at
    once either: its wait is waited whole from the step."""
    services = client.app[services_key]
    services.delivery_worker.rng = lambda: 0.5  # no jitter: the retry waits its 60 s
    real = datetime.now(UTC).replace(microsecond=0)
    gateway_time(real + timedelta(hours=1))  # the clock an hour fast
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"], retry_schedule=[60])
    await create_subscription(client, action["id"], ("entity.created",))
    partner.respond_with(503, {}, times=1)
    await create_vehicle(client)
    await services.relay.run_until_idle()
    assert await services.delivery_worker.run_until_idle() == Counter(retry=1)

    gateway_time(real)  # NTP steps the clock right
    gateway_time(real + timedelta(seconds=30))
    assert await services.delivery_worker.run_until_idle() == Counter()  # not yet due
    gateway_time(real + timedelta(seconds=61))
    assert await services.delivery_worker.run_until_idle() == Counter(succeeded=1)
    response = await client.get("/api/v1/deliveries", headers=auth())
    [listed] = (await response.json())["items"]
    response = await client.get(f"/api/v1/deliveries/{listed['id']}", headers=auth())
    assert [a["status"] for a in (await response.json())["attempts"]] == [503, 200]


async def test_a_starting_worker_leaves_another_process_s_longer_lease_alone(
    client: Client, partner: Partner, gateway_time: Callable[[datetime], None]
) -> None:
    """A worker's first housekeeping (a process start, no step of the time) does not cut the
    lease of another process's worker configured with a longer lease: that delivery is not
    taken back and sent a second time while the other process still sends it."""
    services = client.app[services_key]
    worker = services.delivery_worker
    gateway_time(datetime.now(UTC).replace(microsecond=0))
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"])
    await create_subscription(client, action["id"], ("entity.created",))
    await create_vehicle(client)
    await services.relay.run_until_idle()
    deliveries = services.store.deliveries
    other_lease = worker._lease * 20  # another process's GATEWAY_DELIVERY_LEASE_SECONDS
    now = utcnow()
    taken = []
    for shard in range(32):
        taken += await deliveries.claim("otherproc:1", now, now + other_lease, 10, shard)
    assert len(taken) == 1
    await worker.housekeeping(measure=False)  # this process's worker starts
    # Past this worker's lease, before the other renews (every third of its own lease).
    gateway_time(now + worker._lease + timedelta(seconds=5))
    await worker.housekeeping(measure=False)
    assert await worker.run_until_idle() == Counter()
    [doc] = await deliveries._c.find({}).to_list(None)
    assert (doc["status"], doc["lease_owner"]) == ("in_flight", "otherproc:1")
    left = doc["lease_until"].replace(tzinfo=UTC) - now  # stored to the millisecond
    assert other_lease - timedelta(milliseconds=1) <= left <= other_lease
    assert partner.requests == []


def _pending(i: int, due: datetime, set_at: datetime) -> dict[str, Any]:
    _id = f"ev{i:06d}:sub"
    return {
        "_id": _id, "shard": shard_of(_id), "tenant": "acme", "partner_id": "p1",
        "kind": "webhook", "status": "pending", "next_attempt_at": due, "updated_at": set_at,
    }  # fmt: skip


async def test_a_worker_reads_the_retry_backlog_only_after_it_sees_the_time_go_back(
    services: Services, watched: tuple[Any, Reads]
) -> None:
    """A start reads none of the retries due later (a partner outage's backlog); a step back
    the worker sees reads them through the `due` index, and moves those set on the time as
    it was ahead only."""
    db, reads = watched
    now = datetime.now(UTC).replace(microsecond=0)
    ahead = now + timedelta(hours=1)
    docs = [_pending(i, now + timedelta(minutes=i % 60), now) for i in range(600)]
    docs.append(_pending(999999, ahead + timedelta(minutes=1), ahead))
    await db["deliveries"].insert_many(docs)
    worker = services.delivery_worker
    worker._store.deliveries = DeliveryStore(db["deliveries"])  # its reads recorded
    worker.clock = lambda: now
    await worker.housekeeping(measure=False)  # the first: a start
    assert await read_plans(db, reads) == []
    worker.clock = lambda: now + timedelta(seconds=30)
    await worker.housekeeping(measure=False)  # time went on
    assert await read_plans(db, reads) == []
    worker.clock = lambda: now
    await worker.housekeeping(measure=False)  # seen: back from now + 30 s to now
    plans = await read_plans(db, reads)
    assert plans and {index for index, _ in plans} == {"due"}
    moved = await db["deliveries"].find_one({"_id": "ev999999:sub"})
    assert moved["next_attempt_at"] == now + timedelta(minutes=1)


async def test_a_failing_rebase_holds_back_no_lease_take_back_and_is_tried_again(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebase after a step back fails (the database past its deadline): the round still
    takes back a dead worker's expired lease, and the next round rebases again."""
    worker = services.delivery_worker
    now = datetime.now(UTC).replace(microsecond=0)
    dead = _pending(1, now - timedelta(minutes=5), now - timedelta(minutes=5))
    await services.store.deliveries._c.insert_one(dead)
    taken = await services.store.deliveries.claim(
        "dead:1", now - timedelta(minutes=5), now - timedelta(minutes=3), 1, dead["shard"]
    )
    assert len(taken) == 1
    tried: list[datetime] = []

    async def rebase(at: datetime, *_: Any) -> int:
        tried.append(at)
        raise StoreUnavailable("past the deadline")

    monkeypatch.setattr(worker._store.deliveries, "rebase", rebase)
    worker.clock = lambda: now + timedelta(seconds=30)
    await worker.housekeeping(measure=False)  # the first
    worker.clock = lambda: now  # seen: back 30 s
    await worker.housekeeping(measure=False)
    doc = await services.store.deliveries._c.find_one({"_id": dead["_id"]})
    assert doc is not None and doc["status"] == "pending"
    await worker.housekeeping(measure=False)
    assert tried == [now, now]
