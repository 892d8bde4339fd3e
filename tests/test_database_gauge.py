"""`gateway_database_up` follows what the process knows of its database, whether or not
anything asks /readyz (a `--workers N` scrape shows the lowest of the processes' values, so
one process never asked read 0 for all of them)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.web.state import services_key
from tests.triggers_support import Client


async def _gauge(client: Client) -> float:
    text = await (await client.get("/metrics")).text()
    found = re.search(r"^gateway_database_up (\S+)$", text, re.M)
    assert found is not None, text
    return float(found[1])


async def test_the_database_gauge_is_1_from_the_start_without_a_readiness_call(
    client: Client,
) -> None:
    assert await _gauge(client) == 1.0


async def test_the_database_gauge_follows_a_loss_and_a_recovery_between_scrapes(
    client: Client,
) -> None:
    health = client.app[services_key].store.health
    health.mark_down("embedded", "the embedded database exited (status -9)")
    assert await _gauge(client) == 0.0
    health.mark_up("embedded")
    assert await _gauge(client) == 1.0


WAITING = (
    "gateway_event_relay_oldest_waiting_seconds",
    "gateway_fleet_fold_oldest_waiting_seconds",
)


async def _waiting(client: Client) -> list[float]:
    text = await (await client.get("/metrics")).text()
    return [float(re.findall(rf"^{name} (\S+)$", text, re.M)[0]) for name in WAITING]


async def test_a_web_only_process_reads_its_waiting_gauges_again_once_the_database_is_back(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """It runs no relay or fold pass to measure them again: they stayed NaN for ever after
    one blip, and under `--workers N` that NaN could be the `livemax` GatewayEventRelayBehind
    reads. NaN through the outage as in every process (a 0 could be that `livemax` too)."""
    client = await aiohttp_client(make_app(run_workers=False))
    health = client.app[services_key].store.health
    health.mark_down("embedded", "the embedded database exited (status -9)")
    assert all(math.isnan(v) for v in await _waiting(client))
    health.mark_up("embedded")
    assert await _waiting(client) == [0.0, 0.0]


async def test_a_waiting_gauge_unknown_through_an_outage_reads_0_once_the_database_is_back(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """Measured before the outage, NaN through it; back, 0 until a pass measures it again (a
    loop whose shards all went elsewhere meanwhile runs none)."""
    client = await aiohttp_client(make_app(run_workers=False))
    services = client.app[services_key]
    metrics, health = services.metrics, services.store.health
    metrics.measured(metrics.relay_oldest_waiting, 42.0)
    metrics.measured(metrics.fold_oldest_waiting, 7.0)
    health.mark_down("embedded", "the embedded database exited (status -9)")
    assert all(math.isnan(v) for v in await _waiting(client))
    health.mark_up("embedded")
    assert await _waiting(client) == [0.0, 0.0]
    metrics.measured(metrics.relay_oldest_waiting, 3.0)
    assert await _waiting(client) == [3.0, 0.0]
