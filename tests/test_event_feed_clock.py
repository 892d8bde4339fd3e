"""The events feed (`GET /api/v1/events?after=`) across a step back of the gateway's time (the
database server's clock; with the embedded database, the host's: a clock that ran fast, set
right by NTP): a follower reads on from its last event's `relayed_at`, so an event stamped
below it after the step was never answered. Stamps stay above the last one given to the
tenant: this process's own, and at a tenant's first stamp in a process (one that started or
took the relay over after the step) or after its time went back, the newest in the log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from bson import ObjectId

from gateway import clock
from gateway.clock import from_iso
from gateway.services import Services
from gateway.store.events import EventStore
from gateway.web.state import services_key
from tests.support import HeldFirstRead, auth

Client = TestClient[Any, Any]
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


async def _read_on(client: Client, cursor: str) -> tuple[list[str], str]:
    seen: list[str] = []
    while True:
        answer = await client.get(f"/api/v1/events?after={cursor}&limit=50", headers=auth())
        assert answer.status == 200, await answer.text()
        page = await answer.json()
        seen += [event["id"] for event in page["items"]]
        cursor = page["next_cursor"]
        if len(page["items"]) < 50:
            return seen, cursor


async def _create(client: Client, plate: str) -> str:
    answer = await client.post("/api/v1/entities/vehicle", json={"plate": plate}, headers=auth())
    assert answer.status == 201, await answer.text()
    await client.app[services_key].relay.run_until_idle()
    return str((await answer.json())["id"])


@pytest.mark.parametrize("step", [5, 30, 120])
async def test_a_follower_gets_the_events_stored_after_a_step_back_of_the_time(
    client: Client, gateway_time: Callable[[datetime], None], step: int
) -> None:
    """Steps past the settle window (10 s) lost every event stored until the time caught up
    with the follower's cursor: `got [], log [B, A]`."""
    gateway_time(T0)
    await _create(client, "ABC1D23")
    gateway_time(T0 + timedelta(seconds=15))  # past the settle window
    seen, cursor = await _read_on(client, "2026-12-07T11:00:00Z")
    assert len(seen) == 1
    gateway_time(T0 + timedelta(seconds=15 - step))  # the clock was `step` s fast: set right
    await _create(client, "BCD2E34")
    gateway_time(T0 + timedelta(minutes=10))
    more, _ = await _read_on(client, cursor)
    listed = await (await client.get("/api/v1/events", headers=auth())).json()
    log = [event["id"] for event in listed["items"]]
    assert len(log) == 2
    assert more == [i for i in log if i not in seen], f"got {more}, log {log}"


def _event(tenant: str = "acme") -> dict[str, Any]:
    return {"_id": ObjectId(), "tenant": tenant, "type": "entity.updated", "occurred_at": T0}


async def test_a_process_that_stamps_after_the_step_stays_above_the_stamps_of_another(
    services: Services, gateway_time: Callable[[datetime], None]
) -> None:
    """Two processes, or a relay taken over after the step: the one that stamps after it
    never stamped this tenant, so its floor is the log's newest stamp ahead of its time."""
    gateway_time(T0 + timedelta(minutes=2))  # two minutes fast
    await services.store.events.insert_many([_event()])  # the first process
    until = T0 + timedelta(hours=1)
    [fast] = await services.store.events.stored_after("acme", T0, None, until=until, limit=5)
    gateway_time(T0)  # set right; another process (no floor of its own) takes the relay over
    taker = EventStore(services.store.db["events"])
    later = _event()
    await taker.insert_many([later])
    stored = await taker.get("acme", str(later["_id"]))
    assert stored is not None and stored["relayed_at"] > fast["relayed_at"]
    other = _event("beta")  # another tenant's stamp is its own: on the time
    await taker.insert_many([other])
    stored = await taker.get("beta", str(other["_id"]))
    assert stored is not None and stored["relayed_at"] < fast["relayed_at"]


class _CountedFinds:
    def __init__(self, real: Any) -> None:
        self._real = real
        self.finds = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def find(self, *args: Any, **kw: Any) -> Any:
        self.finds += 1
        return self._real.find(*args, **kw)


async def test_a_stamp_reads_nothing_once_the_tenants_floor_is_known(
    services: Services, gateway_time: Callable[[datetime], None]
) -> None:
    """The floor costs a read at a tenant's first stamp in the process and after the time went
    back, none per event or batch otherwise."""
    gateway_time(clock.utcnow())  # a reading now (as it was after the test)
    counted = _CountedFinds(services.store.db["events"])
    events = EventStore(counted)
    await events.insert_many([_event()])
    assert counted.finds == 1
    for _ in range(20):
        await events.insert_many([_event(), _event()])
    assert counted.finds == 1
    gateway_time(clock.utcnow() - timedelta(seconds=30))
    await events.insert_many([_event()])
    assert counted.finds == 2  # the time went back: read again


async def _create_as(client: Client, tenant: str, plate: str) -> None:
    answer = await client.post(
        "/api/v1/entities/vehicle", json={"plate": plate}, headers=auth(tenant)
    )
    assert answer.status == 201, await answer.text()


async def _feed_of(client: Client, tenant: str) -> list[dict[str, Any]]:
    answer = await client.get(
        "/api/v1/events?after=2026-12-07T11:00:00Z&limit=50", headers=auth(tenant)
    )
    assert answer.status == 200, await answer.text()
    return list((await answer.json())["items"])


async def test_a_tenants_floor_holds_back_no_other_tenants_events_relayed_with_its_own(
    client: Client, gateway_time: Callable[[datetime], None]
) -> None:
    """After a step back, acme's floor (its event stamped on the clock an hour fast) was
    given to globex's event relayed in the same pass, and noted as globex's floor: globex's
    feed stayed empty for the hour, its later events too (rev49 F1). Each tenant's stamp
    is above its own floor only."""
    relay = client.app[services_key].relay
    gateway_time(T0 + timedelta(hours=1))  # the clock runs an hour fast
    await _create_as(client, "acme", "ABC1D23")
    await relay.run_until_idle()
    gateway_time(T0)  # set right; one relay pass moves both tenants' events
    await _create_as(client, "acme", "BCD2E34")
    await _create_as(client, "globex", "CDE3F45")
    await relay.run_until_idle()
    gateway_time(T0 + timedelta(minutes=1))  # well past the 10 s settle window
    assert len(await _feed_of(client, "globex")) == 1
    gateway_time(T0 + timedelta(minutes=2))  # globex alone, in a pass of its own
    await _create_as(client, "globex", "DEF4G56")
    await relay.run_until_idle()
    gateway_time(T0 + timedelta(minutes=5))
    globex = await _feed_of(client, "globex")
    assert len(globex) == 2
    assert all(from_iso(e["relayed_at"]) < T0 + timedelta(minutes=3) for e in globex), globex
    # acme's own events still stay above its floor (the documented pause, its own)
    assert await _feed_of(client, "acme") == []


async def test_a_restamp_gives_each_tenant_of_a_batch_its_own_stamp(
    services: Services, gateway_time: Callable[[datetime], None]
) -> None:
    """The restamp of late-landed events of several tenants took one stamp above every
    tenant's floor: beta's event went an hour ahead with acme's (rev49 F1)."""
    gateway_time(T0 + timedelta(hours=1))
    await services.store.events.insert_many([_event()])  # acme, on the fast clock
    gateway_time(T0)
    landed = [_event(), _event("beta")]  # stored a minute ago by a pass that stalled
    await services.store.db["events"].insert_many(
        [{**e, "relayed_at": T0 - timedelta(minutes=1)} for e in landed]
    )
    await services.store.events.insert_many([dict(e) for e in landed])  # the next pass
    acme = await services.store.events.get("acme", str(landed[0]["_id"]))
    beta = await services.store.events.get("beta", str(landed[1]["_id"]))
    assert acme is not None and acme["relayed_at"] > T0 + timedelta(hours=1)
    assert beta is not None and T0 <= beta["relayed_at"] < T0 + timedelta(minutes=1), beta


async def test_a_concurrent_first_stamp_of_a_tenant_never_lowers_its_floor(
    services: Services, gateway_time: Callable[[datetime], None]
) -> None:
    """Two relay batches of one tenant, both the tenant's first stamp in the process, after a
    step back: the one whose read of the log lands last noted what it read (the stamp on the
    fast clock) over the floor the other had raised since, and stamped with or below the
    other's events (read50 L3)."""
    gateway_time(T0 + timedelta(minutes=2))  # another process, on a clock two minutes fast
    await services.store.events.insert_many([_event()])
    gateway_time(T0)  # set right; this process has not stamped acme yet
    held = HeldFirstRead(services.store.db["events"])
    events = EventStore(held)
    late = _event()
    slow = asyncio.create_task(events.insert_many([late]))
    await held.read.wait()  # its read is made: the fast stamp, answered late
    first, second = _event(), _event()
    await events.insert_many([first])
    await events.insert_many([second])
    held.release.set()
    await slow
    stamps = {}
    for event in (first, second, late):
        stored = await events.get("acme", str(event["_id"]))
        assert stored is not None
        stamps[event["_id"]] = stored["relayed_at"]
    assert stamps[late["_id"]] > stamps[second["_id"]] > stamps[first["_id"]], stamps
