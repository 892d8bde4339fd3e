"""When the gateway itself refuses a proxy call for a partner's sake (our rate limit, its
concurrency gate, an open circuit, a disabled partner), the answer is a problem document with a
`Retry-After` taken from the limiter's or breaker's state, so a caller knows when to return.
A partner's calls never wait on the connections of another partner's; a full outbound capacity
of the process is ours, answered as such, and blames no partner."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
    post,
    running_partner,
)
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


async def _other_tenants_proxy(
    client: Client, url: str, tenant: str = "other", **fields: Any
) -> tuple[str, str]:
    """Tenant `other`'s partner B (answering at once, `timeout_seconds: 2`) and its action
    (or `tenant`'s, with `fields`)."""
    body = {"name": "B", "base_url": url, "auth": {"type": "none"}, "timeout_seconds": 2}
    partner_doc = await post(client, "/api/v1/partners", {**body, **fields}, tenant=tenant)
    action = {"name": "b", "partner_id": partner_doc["id"], "method": "GET", "mode": "proxy"}
    action_doc = await post(client, "/api/v1/actions", action, tenant=tenant)
    return str(partner_doc["id"]), str(action_doc["id"])


def _calls(
    session: aiohttp.ClientSession, client: Client, action_id: str, n: int, tenant: str = "acme"
) -> list[Any]:
    """`n` proxy calls under way at once, from a session with no connection limit of its own."""
    url = str(client.make_url(f"/api/v1/actions/{action_id}/invoke"))
    return [
        asyncio.create_task(session.post(url, headers=auth(tenant), json={"payload": {}}))
        for _ in range(n)
    ]


async def test_another_tenants_slow_partner_does_not_make_my_partners_calls_wait(
    client: Client, partner: Partner
) -> None:
    """210 calls in flight to acme's slow partner (`max_concurrency: 1000`) took every one of
    the sender's 200 pooled connections: tenant other's call to its own partner B waited for
    one, the wait counted in B's 2 s timeout, and B was blamed with a 504."""
    partner.respond_with(200, {}, delay=30)
    _, slow = await _proxy(client, partner, timeout_seconds=30, max_concurrency=1000)
    async with running_partner() as fast:
        _, b_action = await _other_tenants_proxy(client, fast.url)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            hogs = _calls(session, client, slow, 210)
            await partner.wait_for(200)
            started = time.monotonic()
            answer = await client.post(
                f"/api/v1/actions/{b_action}/invoke", headers=auth("other"), json={"payload": {}}
            )
            took = time.monotonic() - started
            assert (answer.status, (await answer.json())["data"]) == (200, {"ok": True}), took
            assert took < 1.8  # under B's max_wait (2 s), past which it is refused
            await partner.wait_for(210)  # every one of them in flight: none waits for a connection
            partner.release.set()
            answers = await asyncio.gather(*hogs)
            assert [a.status for a in answers] == [200] * 210
            for each in answers:
                each.release()


async def test_a_full_outbound_capacity_is_a_503_of_the_gateway_blaming_no_partner(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """GATEWAY_OUTBOUND_CONNECTIONS=4: one partner holds at most 2 (half), however many
    calls and whatever its `max_concurrency`, and B's calls still go; two tenants' slow
    partners fill it, and B's call waits at most its `max_wait` for our capacity, outside its
    timeout, then is answered 503 `unavailable` with a Retry-After: not a timeout of B's, nor
    a failure. A delivery to another healthy partner meanwhile waits 5 s, no attempt spent,
    nothing noted against its partner."""
    client = await aiohttp_client(make_app(outbound_connections=4))
    services = client.app[services_key]
    partner.respond_with(200, {}, delay=30)
    _, first_slow = await _proxy(client, partner, timeout_seconds=30, max_concurrency=1000)
    slow = {"timeout_seconds": 30, "max_concurrency": 1000}
    _, second_slow = await _other_tenants_proxy(client, partner.url, "third", **slow)
    async with running_partner() as fast:
        b_id, b_action = await _other_tenants_proxy(client, fast.url)
        hooked = await create_partner(client, fast.url, name="Hooks")
        hooks = await create_action(client, hooked["id"])
        await create_subscription(client, hooks["id"])

        async def call_b() -> tuple[aiohttp.ClientResponse, float]:
            started = time.monotonic()
            answer = await client.post(
                f"/api/v1/actions/{b_action}/invoke", headers=auth("other"), json={"payload": {}}
            )
            return answer, time.monotonic() - started

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            hogs = _calls(session, client, first_slow, 4)
            await partner.wait_for(2)
            await asyncio.sleep(0.3)
            assert len(partner.requests) == 2  # its share: half the process's capacity
            answer, took = await call_b()
            assert answer.status == 200 and took < 1.8  # under B's max_wait (2 s)

            hogs += _calls(session, client, second_slow, 2, "third")
            await partner.wait_for(4)
            answer, took = await call_b()
            problem = await answer.json()
            assert answer.status == 503, problem
            assert answer.content_type == "application/problem+json"
            assert problem["type"].endswith("/unavailable")
            assert "GATEWAY_OUTBOUND_CONNECTIONS" in problem["detail"]
            assert answer.headers["Retry-After"] == "5"
            assert 1.5 < took < 5  # B's max_wait (its 2 s timeout): then refused, not queued

            vehicle = await create_vehicle(client)
            patched = await client.patch(
                f"/api/v1/entities/vehicle/{vehicle['id']}", headers=auth(), json={"odometer_km": 5}
            )
            assert patched.status == 200
            await services.relay.run_until_idle()
            assert await services.delivery_worker.run_until_idle() == Counter(deferred=1)
            [delivery] = (await (await client.get("/api/v1/deliveries", headers=auth())).json())[
                "items"
            ]
            assert (delivery["status"], delivery["attempt_count"]) == ("pending", 0)
            assert delivery["last_error"].startswith("not sent: this gateway process has 4 ")
            assert delivery["last_error"].endswith(", retry in 5 s")
            hooks_doc = await (
                await client.get(f"/api/v1/partners/{hooked['id']}", headers=auth())
            ).json()
            assert hooks_doc.get("failing_since") is None
            assert len(fast.requests) == 1
            partner.release.set()
            for each in await asyncio.gather(*hogs):
                each.release()
        metrics = await (await client.get("/metrics")).text()
    b_results = [line for line in metrics.splitlines() if f'partner="{b_id}"' in line]
    assert any('result="overloaded"} 1.0' in line for line in b_results), b_results
    assert not any('result="timeout"' in line for line in b_results), b_results


async def test_one_tenants_many_slow_partners_leave_the_other_tenants_half_the_capacity(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """GATEWAY_OUTBOUND_CONNECTIONS=4: tenant acme's two slow partners, each within its own
    share (2), would have filled it, and tenant other's call to its healthy partner B was a
    503 `overloaded` after its `max_wait`. A tenant's partners together hold at most half the
    capacity too: acme's calls past its share wait for it and are acme's own 503 (naming its
    share; no partner blamed, nothing sent), B's call goes at once."""
    client = await aiohttp_client(make_app(outbound_connections=4))
    partner.respond_with(200, {}, delay=30)
    _, first_slow = await _proxy(client, partner, timeout_seconds=30, max_concurrency=1000)
    _, second_slow = await _proxy(client, partner, timeout_seconds=2, max_concurrency=1000)
    async with running_partner() as fast:
        _, b_action = await _other_tenants_proxy(client, fast.url)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            hogs = _calls(session, client, first_slow, 2)
            await partner.wait_for(2)
            held = _calls(session, client, second_slow, 2)
            await asyncio.sleep(0.3)
            assert len(partner.requests) == 2  # acme's share: half the process's capacity
            started = time.monotonic()
            answer = await client.post(
                f"/api/v1/actions/{b_action}/invoke", headers=auth("other"), json={"payload": {}}
            )
            took = time.monotonic() - started
            assert (answer.status, (await answer.json())["data"]) == (200, {"ok": True}), took
            assert took < 1.8  # under B's max_wait (2 s), past which it is refused
            for refused in await asyncio.gather(*held):
                problem = await refused.json()
                assert refused.status == 503, problem
                assert problem["type"].endswith("/unavailable")
                assert "tenant acme has 2 requests to partners in flight" in problem["detail"]
                assert "GATEWAY_OUTBOUND_CONNECTIONS" in problem["detail"]
                assert refused.headers["Retry-After"] == "5"
            assert len(partner.requests) == 2
            partner.release.set()
            for each in await asyncio.gather(*hogs):
                each.release()
