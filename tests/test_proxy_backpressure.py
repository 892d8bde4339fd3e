"""When the gateway itself refuses a proxy call for a partner's sake (our rate limit, its
concurrency gate, an open circuit, a disabled partner), the answer is a problem document with a
`Retry-After` taken from the limiter's or breaker's state, so a caller knows when to return."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.partner_double import Partner, create_action, create_partner, partner
from tests.support import auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]


async def _proxy(client: Client, partner: Partner, **fields: Any) -> tuple[str, str]:
    partner_doc = await create_partner(client, partner.url, **fields)
    action = await create_action(client, partner_doc["id"], mode="proxy", method="GET")
    return str(partner_doc["id"]), str(action["id"])


async def _invoke(client: Client, action_id: str) -> Any:
    return await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )


async def test_over_the_rate_limit_is_429_with_the_buckets_wait(
    client: Client, partner: Partner
) -> None:
    _, action_id = await _proxy(
        client, partner, rate_limit={"per_second": 0.01, "burst": 1}, timeout_seconds=1
    )

    first = await _invoke(client, action_id)
    second = await _invoke(client, action_id)

    assert first.status == 200
    assert second.status == 429
    assert second.content_type == "application/problem+json"
    # One token per 100 s: the next one is about 100 s away, not "1".
    assert 90 <= int(second.headers["Retry-After"]) <= 100
    assert len(partner.requests) == 1


async def test_open_circuit_is_503_with_the_seconds_until_its_probe(
    client: Client, partner: Partner
) -> None:
    partner_id, action_id = await _proxy(client, partner)
    partner.respond_with(503, {})
    for _ in range(5):
        assert (await _invoke(client, action_id)).status == 502

    refused = await _invoke(client, action_id)

    problem = await refused.json()
    assert refused.status == 503
    assert refused.content_type == "application/problem+json"
    assert 1 <= int(refused.headers["Retry-After"]) <= 30
    assert "circuit" in problem["detail"]
    assert problem["partner_id"] == partner_id
    assert len(partner.requests) == 5


async def test_disabled_partner_is_503_with_retry_after_and_not_called(
    client: Client, partner: Partner
) -> None:
    partner_id, action_id = await _proxy(client, partner)
    patched = await client.patch(
        f"/api/v1/partners/{partner_id}", headers=auth(), json={"status": "disabled"}
    )
    assert patched.status == 200

    refused = await _invoke(client, action_id)

    problem = await refused.json()
    assert refused.status == 503
    assert refused.content_type == "application/problem+json"
    assert int(refused.headers["Retry-After"]) >= 1
    assert "disabled" in problem["detail"]
    assert partner.requests == []
