"""The trigger gate cache (gateway/triggers/gates.py): a process keeps what it verified about a
trigger, and a revocation made anywhere holds in every process within 1 s (SPEC §7)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.services import Services
from gateway.triggers.gates import TriggerGates
from tests.processes import Gateway
from tests.support import auth
from tests.triggers_support import VEHICLE, Client, bearer, create_trigger

_databases = itertools.count()


def _gate_reads(gateway: Gateway) -> float:
    """How many times the process read a trigger gate from the database (its metric)."""
    status, text = gateway.get("/metrics")
    assert status == 200
    total = 0.0
    for line in str(text).splitlines():
        if line.startswith("gateway_trigger_gate_reads_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def two_gateways(
    mongodb_uri: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Gateway, Gateway]]:
    """Two `gateway serve` processes on one database; env from the test's `gateway_env`."""
    env: dict[str, str] = getattr(request, "param", {})
    database = f"gates_{os.getpid()}_{next(_databases)}"
    common = {"MONGODB_URI": mongodb_uri, "GATEWAY_DATABASE": database, **env}
    a = Gateway(tmp_path / "a", **common)
    b = Gateway(tmp_path / "b", **common)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def _post(gateway: Gateway, trigger: dict[str, Any]) -> int:
    return gateway.request("POST", f"/hooks/{trigger['id']}", VEHICLE, headers=bearer(trigger))[0]


def _seconds_until_refused(gateway: Gateway, trigger: dict[str, Any], since: float) -> float:
    """Calls the trigger until it answers 401; seconds from `since` to the first 401."""
    while (status := _post(gateway, trigger)) != 401:
        assert status == 200, status
        assert time.monotonic() - since < 5, "still admitted 5 s after the revocation"
    return time.monotonic() - since


@pytest.mark.parametrize(
    "two_gateways",
    [{}, {"GATEWAY_CHANGE_STREAMS": "false"}],
    ids=["change stream", "re-read without change streams"],
    indirect=True,
)
def test_a_revocation_in_one_process_refuses_calls_in_another_within_a_second(
    two_gateways: tuple[Gateway, Gateway],
) -> None:
    a, b = two_gateways
    status, _, trigger = a.request("POST", "/api/v1/triggers", {
        "name": "erp", "entity_type": "vehicle", "methods": ["POST"]
    }, headers=auth())  # fmt: skip
    assert status == 201
    assert _post(b, trigger) == 201
    reads = _gate_reads(b)
    for _ in range(20):
        assert _post(b, trigger) == 200
    # Twenty calls in well under the re-read interval cost (at most) a read or two.
    assert _gate_reads(b) - reads <= 2
    revoked = time.monotonic()
    assert a.request("POST", f"/api/v1/triggers/{trigger['id']}/revoke", headers=auth())[0] == 200
    assert _seconds_until_refused(b, trigger, revoked) < 1.0
    assert _post(a, trigger) == 401  # the process that revoked: at once


async def test_the_process_that_changes_a_trigger_sees_it_at_once(client: Client) -> None:
    trigger = await create_trigger(client)
    headers = bearer(trigger)
    assert (
        await client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)
    ).status == 201
    disabled = await client.post(f"/api/v1/triggers/{trigger['id']}/disable", headers=auth())
    assert disabled.status == 200
    response = await client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)
    assert response.status == 403
    await client.post(f"/api/v1/triggers/{trigger['id']}/enable", headers=auth())
    assert (
        await client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)
    ).status == 200
    await client.delete(f"/api/v1/triggers/{trigger['id']}", headers=auth())
    response = await client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)
    assert response.status == 401


async def test_without_change_streams_a_gate_is_read_again_once_it_is_half_a_second_old(
    client: Client, services: Services
) -> None:
    """`services` shares the app's database: its trigger use case plays another process."""
    trigger = await create_trigger(client)
    now = [100.0]
    gates = TriggerGates(
        services.store, services.metrics, follow_changes=False, clock=lambda: now[0]
    )
    gate = await gates.gate(trigger["id"])
    assert gate is not None and gate["status"] == "active"
    await services.triggers.set_status("acme", trigger["id"], "disabled")
    now[0] += 0.49
    assert (await gates.gate(trigger["id"]))["status"] == "active"  # type: ignore[index]
    now[0] += 0.02
    assert (await gates.gate(trigger["id"]))["status"] == "disabled"  # type: ignore[index]


async def test_a_change_stream_makes_every_process_forget_a_changed_trigger(
    client: Client, services: Services
) -> None:
    trigger = await create_trigger(client)
    gates = TriggerGates(services.store, services.metrics)
    try:
        assert (await gates.gate(trigger["id"]))["status"] == "active"  # type: ignore[index]
        started = time.monotonic()
        while not gates.following:  # the stream opened and caught up
            assert time.monotonic() - started < 5
            await asyncio.sleep(0.01)
        assert (await gates.gate(trigger["id"]))["status"] == "active"  # type: ignore[index]
        changed = time.monotonic()
        # Another process (the app) disables it: this one hears of it from the stream.
        await client.post(f"/api/v1/triggers/{trigger['id']}/disable", headers=auth())
        while (await gates.gate(trigger["id"]))["status"] == "active":  # type: ignore[index]
            assert time.monotonic() - changed < 1.0
            await asyncio.sleep(0.005)  # a cached answer never yields to the stream's task
    finally:
        await gates.close()
