"""The crash test: real `gateway worker` processes deliver against a slow partner, one is
killed with SIGKILL mid-flight, and the test's own worker finishes once the leases expire.
Nothing may be lost, no delivery may be sent by two workers at the same time, and duplicates
stay within what at-least-once allows (what the killed process had claimed)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.flow_support import sms_channel
from tests.partner_double import (
    FakeClock,
    Partner,
    create_action,
    create_partner,
    create_subscription,
    partner,
    post,
)
from tests.processes import beside, free_port, skewed_gateway, start_worker
from tests.support import auth

__all__ = ["partner"]  # the fixture


Client = TestClient[Any, Any]
DELIVERIES = 40
LEASE_SECONDS = 3
CONCURRENCY = 6


async def _start_worker(
    client: Client, mongodb_uri: str, data_dir: Path, name: str
) -> asyncio.subprocess.Process:
    database = client.app[services_key].settings.database
    return await start_worker(
        data_dir,
        mongodb_uri,
        database,
        log=name,
        GATEWAY_DELIVERY_LEASE_SECONDS=str(LEASE_SECONDS),
        GATEWAY_DELIVERY_CONCURRENCY=str(CONCURRENCY),
    )


async def test_killed_worker_loses_nothing_and_never_overlaps_a_delivery(
    client: Client, partner: Partner, mongodb_uri: str, tmp_path: Path
) -> None:
    partner_doc = await create_partner(client, partner.url, timeout_seconds=10, max_concurrency=20)
    action = await create_action(client, partner_doc["id"])
    await create_subscription(client, action["id"], ("entity.created",))
    partner.respond_with(200, {}, delay=0.25)
    for n in range(DELIVERIES):
        await post(client, "/api/v1/entities/vehicle", {"plate": f"RBT1A{n:02d}"})
    victim = await _start_worker(client, mongodb_uri, tmp_path, "victim")
    survivor = await _start_worker(client, mongodb_uri, tmp_path, "survivor")
    try:
        await partner.wait_for(DELIVERIES // 3, timeout=40)
        in_flight_at_kill = sum(partner.in_flight.values())
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        # The survivor stops gracefully: it finishes what it sends and releases the rest.
        survivor.send_signal(signal.SIGTERM)
        await asyncio.wait_for(survivor.wait(), 30)
        # The killed process's last requests are still being answered; its leases (3 s)
        # outlive them, as a lease must outlive the partner's answers.
        await partner.wait_idle()
        await client.app[services_key].relay.run_until_idle()
        worker = client.app[services_key].delivery_worker
        clock = FakeClock()
        clock.advance(LEASE_SECONDS + 1)  # the killed worker's leases have expired
        worker.clock = clock
        counts: Counter[str] = Counter()
        for _ in range(5):
            counts += await worker.run_until_idle()
            if not await _unfinished(client):
                break
    finally:
        for process in (victim, survivor):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 20)

    statuses = await _statuses(client)
    delivered = Counter(r.webhook_id for r in partner.requests)
    duplicates = sum(delivered.values()) - len(delivered)
    print(
        f"\n{DELIVERIES} deliveries, {in_flight_at_kill} in flight at SIGKILL, "
        f"{duplicates} sent twice, test worker: {dict(counts)}"
    )
    assert statuses == Counter(succeeded=DELIVERIES)
    assert len(delivered) == DELIVERIES
    assert partner.overlaps == []
    assert duplicates <= CONCURRENCY  # at most what the killed worker held, unrecorded
    # 0, or -SIGTERM when the signal came before the process installed its handler (then
    # it stopped like the killed one: its leases expire, nothing is lost).
    assert survivor.returncode in (0, -signal.SIGTERM)


async def _statuses(client: Client) -> Counter[str]:
    docs = (
        await client.app[services_key].store.db["deliveries"].find({}, {"status": 1}).to_list(None)
    )
    return Counter(d["status"] for d in docs)


async def _unfinished(client: Client) -> int:
    statuses = await _statuses(client)
    return statuses["pending"] + statuses["in_flight"]


SKEW_SECONDS = 120  # more than the delivery lease (90 s)


async def test_a_worker_whose_host_clock_is_ahead_takes_over_no_delivery_in_flight(
    client: Client, partner: Partner, mongodb_uri: str, tmp_path: Path
) -> None:
    """A worker on a host whose clock was 2 minutes ahead saw every lease as expired and sent
    the deliveries in flight again: leases now follow the database server's clock, which
    each process measures its host's offset to (`gateway_clock_offset_seconds`)."""
    partner_doc = await create_partner(client, partner.url, timeout_seconds=30)
    action = await create_action(client, partner_doc["id"])
    await create_subscription(client, action["id"], ("entity.created",))
    partner.respond_with(200, {}, delay=25)  # until released (below), within its 30 s
    await post(client, "/api/v1/entities/vehicle", {"plate": "RBT1A00"})
    await client.app[services_key].relay.run_until_idle()
    here = asyncio.create_task(client.app[services_key].delivery_worker.run_until_idle())
    await partner.wait_for(1, timeout=10)  # in flight here, leased for 90 s
    port = free_port()
    env = beside(tmp_path, mongodb_uri, client.app[services_key].settings.database)
    with (tmp_path / "ahead.log").open("wb") as log:
        ahead = await asyncio.create_subprocess_exec(
            *skewed_gateway(SKEW_SECONDS), "worker", "--jobs", "delivery", "--port", str(port),
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
    try:
        metrics = await _metrics_when_ready(f"http://127.0.0.1:{port}", timeout=30)
        [offset] = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("gateway_clock_offset_seconds")
        ]
        assert abs(offset + SKEW_SECONDS) < 5, offset
        # Ready, it polls every second: a few of its rounds with the delivery in flight (the
        # partner holds its answer until then), then the partner answers at once.
        await asyncio.sleep(3)
        assert not here.done()
        partner.release.set()
        assert await here == Counter(succeeded=1)
        await asyncio.sleep(2)  # a few of its rounds (1 s) after the answer
    finally:
        ahead.send_signal(signal.SIGTERM)
        await asyncio.wait_for(ahead.wait(), 30)
    assert len(partner.requests) == 1 and partner.overlaps == []
    log_text = (tmp_path / "ahead.log").read_text()
    assert "took back" not in log_text
    assert "this host's clock is 120.0 s ahead of the database server's" in log_text


async def _metrics_when_ready(url: str, timeout: float) -> str:
    """The worker's /metrics, once its /readyz answers 200 (its jobs run)."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{url}/readyz") as ready:
                    if ready.status == 200:
                        async with session.get(f"{url}/metrics") as metrics:
                            return await metrics.text()
            except aiohttp.ClientError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "the worker was never ready"
            await asyncio.sleep(0.2)


async def test_a_worker_paused_past_its_lease_sends_none_of_what_was_taken_over(
    client: Client, partner: Partner, mongodb_uri: str, tmp_path: Path
) -> None:
    """Ordered action, partner limited to a request every 2 s: a worker process claims three
    vehicles' first deliveries, sends one, and is paused (SIGSTOP: a stopped container, a VM
    pause) with the other two waiting for their rate tokens, past its lease. The test's
    worker takes them over and sends them, then the vehicles' next deliveries. Continued, the
    paused worker's sends must not go out: its leases are another's, and the ERP would see
    mileage go back."""
    partner_doc = await create_partner(
        client, partner.url, rate_limit={"per_second": 0.5, "burst": 1}
    )
    action = await create_action(client, partner_doc["id"], ordered=True)
    await create_subscription(client, action["id"], ("entity.created", "entity.updated"))
    partner.respond_with(200, {})
    plates = [f"RBT2B{n:02d}" for n in range(3)]
    ids = [
        (await post(client, "/api/v1/entities/vehicle", {"plate": p, "odometer_km": 1}))["id"]
        for p in plates
    ]
    services = client.app[services_key]
    await services.relay.run_until_idle()
    paused = await _start_worker(client, mongodb_uri, tmp_path, "paused")
    try:
        await partner.wait_for(1, timeout=40)
        while (await _statuses(client))["succeeded"] < 1:  # its first one recorded
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # the other two wait for their tokens (2 s, 4 s)
        paused.send_signal(signal.SIGSTOP)
        await asyncio.sleep(LEASE_SECONDS + 1)  # its leases have expired
        here = services.delivery_worker
        assert await here.run_until_idle() == Counter(succeeded=2)  # the two taken over
        for vehicle in ids:
            response = await client.patch(
                f"/api/v1/entities/vehicle/{vehicle}", headers=auth(), json={"odometer_km": 2}
            )
            assert response.status == 200
        await services.relay.run_until_idle()
        assert await here.run_until_idle() == Counter(succeeded=3)
        paused.send_signal(signal.SIGCONT)
        await asyncio.sleep(3)  # its rate tokens are due at once; a few of its rounds
    finally:
        paused.send_signal(signal.SIGCONT)
        paused.send_signal(signal.SIGTERM)
        await asyncio.wait_for(paused.wait(), 30)

    received: dict[str, list[float]] = {}
    for request in partner.requests:
        data = request.json()["data"]
        received.setdefault(data["plate"], []).append(data["odometer_km"])
    assert received == {plate: [1, 2] for plate in plates}


async def test_a_worker_paused_past_its_lease_sends_no_notification_that_was_taken_over(
    client: Client, partner: Partner, mongodb_uri: str, tmp_path: Path
) -> None:
    """The same pause for notifications: a flow's notify step queues three SMS through a
    provider limited to a request every 2 s; a worker process claims them, sends one, and is
    paused with the other two waiting for their rate tokens, past its lease. The test's
    worker takes them over and sends them. Continued, the paused worker must send none of
    them: every recipient gets its SMS once (a notification checked no lease before its send
    until 2026-12-06, and each of the two went out twice)."""
    await sms_channel(client, partner.url, rate_limit={"per_second": 0.5, "burst": 1})
    template = {"en": {"text": "New vehicle {{ entity.plate }}"}}
    await post(
        client,
        "/api/v1/templates",
        {"name": "hello-sms", "channel_type": "sms", "default_locale": "en", "locales": template},
    )
    phones = [f"+55119876543{n:02d}" for n in range(3)]
    notify = {
        "channel": "sms",
        "template": "hello-sms",
        "recipients": [{"address": phone} for phone in phones],
    }
    flow = {
        "name": "hello",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
        "steps": [{"id": "say", "notify": notify}],
    }
    await post(client, "/api/v1/flows", flow)
    partner.respond_with(200, {"id": "sms-1"})
    await post(client, "/api/v1/entities/vehicle", {"plate": "RBT2C01"})
    services = client.app[services_key]
    await services.relay.run_until_idle()
    assert await services.flow_runner.run_until_idle() == Counter(succeeded=1)
    assert await _statuses(client) == Counter(pending=3)
    paused = await _start_worker(client, mongodb_uri, tmp_path, "paused")
    try:
        await partner.wait_for(1, timeout=40)
        while (await _statuses(client))["succeeded"] < 1:  # its first one recorded
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # the other two wait for their tokens (2 s, 4 s)
        paused.send_signal(signal.SIGSTOP)
        await asyncio.sleep(LEASE_SECONDS + 1)  # its leases have expired
        assert await services.delivery_worker.run_until_idle() == Counter(succeeded=2)
        paused.send_signal(signal.SIGCONT)
        await asyncio.sleep(3)  # its rate tokens are due at once; a few of its rounds
    finally:
        paused.send_signal(signal.SIGCONT)
        paused.send_signal(signal.SIGTERM)
        await asyncio.wait_for(paused.wait(), 30)

    sent = Counter(request.json()["to"] for request in partner.requests)
    assert sent == Counter({phone.lstrip("+"): 1 for phone in phones})
    assert await _statuses(client) == Counter(succeeded=3)
