"""Cooldowns are claimed atomically in the database: of two processes alerting for the same
(vehicle, condition) at once, one sends; the next alert waits for the cooldown to pass."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key

Client = TestClient[Any, Any]
HOUR = timedelta(hours=1)


async def test_one_of_two_concurrent_claims_wins(client: Client) -> None:
    cooldowns = client.app[services_key].store.notify.cooldowns
    now = datetime.now(UTC).replace(microsecond=0)
    results = await asyncio.gather(
        *(
            cooldowns.claim("acme", "ABC1D23:geofence", now, now - HOUR, now + HOUR)
            for _ in range(2)
        )
    )
    assert sorted(results, key=lambda r: r is not None) == [None, now]
    assert await cooldowns.last_sent("acme", "ABC1D23:geofence") == now


async def test_a_claim_after_the_cooldown_wins_again(client: Client) -> None:
    cooldowns = client.app[services_key].store.notify.cooldowns
    first = datetime.now(UTC).replace(microsecond=0)
    assert await cooldowns.claim("acme", "k", first, first - HOUR, first + HOUR) is None
    soon = first + timedelta(minutes=10)
    assert await cooldowns.claim("acme", "k", soon, soon - HOUR, soon + HOUR) == first
    later = first + timedelta(hours=2)
    assert await cooldowns.claim("acme", "k", later, later - HOUR, later + HOUR) is None
    assert await cooldowns.claim("other", "k", soon, soon - HOUR, soon + HOUR) is None
