"""`gateway_database_up` follows what the process knows of its database, whether or not
anything asks /readyz (a `--workers N` scrape shows the lowest of the processes' values, so
one process never asked read 0 for all of them)."""

from __future__ import annotations

import re

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
