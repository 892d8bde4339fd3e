"""SPEC §7, request rate limited "on every route, admin included": the admin API and the admin
UI answer 429 with Retry-After past `GATEWAY_ADMIN_RATE_LIMIT` requests/s (bursts of twice
that) per tenant and process; calls without a valid token count per client address; one
tenant's burst leaves another's calls alone."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config import Settings
from gateway.web.state import services_key
from tests.support import auth
from tests.ui_support import log_in, make_user

Client = TestClient[Any, Any]
RATE = 5  # requests/s; bursts of 10


async def _limited(
    aiohttp_client: Callable[..., Any], make_app: Callable[..., web.Application]
) -> Client:
    client: Client = await aiohttp_client(make_app(admin_rate_limit=RATE))
    return client


async def test_an_admin_burst_past_the_limit_is_429_with_retry_after(
    aiohttp_client: Callable[..., Any], make_app: Callable[..., web.Application]
) -> None:
    client = await _limited(aiohttp_client, make_app)
    statuses: Counter[int] = Counter()
    for _ in range(2 * RATE + 5):
        response = await client.get("/api/v1/partners", headers=auth())
        statuses[response.status] += 1
        if response.status == 429:
            problem = await response.json()
            assert response.content_type == "application/problem+json"
            assert int(response.headers["Retry-After"]) >= 1
            assert "over the admin limit of 5 requests/s for this tenant" in problem["detail"]
    assert statuses[200] >= 2 * RATE and statuses[429] >= 1, statuses
    # Another tenant has its own budget.
    assert (await client.get("/api/v1/partners", headers=auth("beta"))).status == 200


async def test_guessing_tokens_is_limited_per_client_address(
    aiohttp_client: Callable[..., Any], make_app: Callable[..., web.Application]
) -> None:
    client = await _limited(aiohttp_client, make_app)
    bad = {"Authorization": "Bearer not-a-token"}
    statuses = Counter(
        [(await client.get("/api/v1/partners", headers=bad)).status for _ in range(15)]
    )
    assert statuses[401] >= 2 * RATE and statuses[429] >= 1, statuses
    # A tenant's valid token is counted on its own.
    assert (await client.get("/api/v1/partners", headers=auth())).status == 200


async def test_the_admin_ui_answers_a_429_page_past_the_limit(
    aiohttp_client: Callable[..., Any], make_app: Callable[..., web.Application], settings: Settings
) -> None:
    client = await _limited(aiohttp_client, make_app)
    await make_user(client.app[services_key])
    await log_in(client)
    statuses: Counter[int] = Counter()
    for _ in range(2 * RATE + 5):
        response = await client.get("/admin/triggers", allow_redirects=False)
        statuses[response.status] += 1
        if response.status == 429:
            assert response.content_type == "text/html"
            assert int(response.headers["Retry-After"]) >= 1
    assert statuses[200] >= 2 * RATE - 1 and statuses[429] >= 1, statuses


async def test_the_limit_is_a_setting_with_a_default() -> None:
    assert Settings().admin_rate_limit == 1000
    assert Settings.from_env({"GATEWAY_ADMIN_RATE_LIMIT": "20"}).admin_rate_limit == 20
