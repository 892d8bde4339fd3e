"""Delivery retries and leases set while the gateway's clock ran fast (the database server's:
with the embedded database, this host's), after the clock is set right: waited from the
step, not for as long as the clock was ahead (docs/scaling.md "One clock")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
)
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
