"""One tenant's admin cannot grow /metrics without bound: a tenant's triggers stop at
GATEWAY_MAX_TRIGGERS_PER_TENANT (409 `limit`), and a process keeps series by trigger id for
GATEWAY_METRICS_MAX_TRIGGERS triggers, the rest counted under trigger="other"."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import Client, bearer, create_trigger


def _series_by_trigger(text: str) -> set[str]:
    return set(re.findall(r'gateway_trigger_requests_total\{[^}]*trigger="([^"]+)"', text))


async def _scrape(client: Client) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    return await response.text()


async def test_a_tenant_past_its_trigger_limit_gets_a_409_others_do_not(
    aiohttp_client: Any, make_app: Any
) -> None:
    client = await aiohttp_client(make_app(max_triggers_per_tenant=3))
    made = [await create_trigger(client, name=f"t{i}") for i in range(3)]
    refused = await client.post(
        "/api/v1/triggers",
        json={"name": "t3", "entity_type": "vehicle", "methods": ["POST"]},
        headers=auth(),
    )
    problem = await refused.json()
    assert refused.status == 409, problem
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert problem["limit"] == 3
    assert "the tenant has 3 triggers, the limit is 3" in problem["detail"]
    await create_trigger(client, tenant="other", name="t0")  # another tenant's own room
    deleted = await client.delete(f"/api/v1/triggers/{made[0]['id']}", headers=auth())
    assert deleted.status == 204
    await create_trigger(client, name="t3")


async def test_creates_side_by_side_stop_at_the_limit(aiohttp_client: Any, make_app: Any) -> None:
    """Creates in the tenant's turn: two sent together never both take the last place."""
    client = await aiohttp_client(make_app(max_triggers_per_tenant=4))
    answers = await asyncio.gather(
        *(
            client.post(
                "/api/v1/triggers",
                json={"name": f"t{i}", "entity_type": "vehicle", "methods": ["POST"]},
                headers=auth(),
            )
            for i in range(8)
        )
    )
    statuses = sorted(answer.status for answer in answers)
    assert statuses.count(201) == 4 and set(statuses) == {201, 409}, statuses


async def test_triggers_past_the_metrics_bound_are_counted_under_other(
    aiohttp_client: Any, make_app: Any
) -> None:
    client = await aiohttp_client(make_app(metrics_max_triggers=3))
    triggers = [await create_trigger(client, name=f"t{i}") for i in range(6)]
    for trigger in triggers:
        answer = await client.post(
            f"/hooks/{trigger['id']}", json={"plate": "ABC1D23"}, headers=bearer(trigger)
        )
        assert answer.status in (200, 201), await answer.text()
    text = await _scrape(client)
    first = {trigger["id"] for trigger in triggers[:3]}
    assert _series_by_trigger(text) == first | {"other"}
    others = re.findall(r'gateway_trigger_requests_total\{[^}]*trigger="other"\} (\S+)', text)
    assert sum(map(float, others)) == 3.0  # the calls of the three past the bound
    # a deleted trigger's series go, and its place is another's
    deleted = await client.delete(f"/api/v1/triggers/{triggers[0]['id']}", headers=auth())
    assert deleted.status == 204
    await client.post(
        f"/hooks/{triggers[5]['id']}", json={"plate": "ABC1D23"}, headers=bearer(triggers[5])
    )
    assert triggers[5]["id"] in _series_by_trigger(await _scrape(client))


async def test_the_scrape_grows_no_more_past_the_bound(aiohttp_client: Any, make_app: Any) -> None:
    """Past the bound, triggers add no series to the scrape (~24 each before, ~2.5 KB)."""
    client = await aiohttp_client(make_app(metrics_max_triggers=2))
    metrics = client.app[services_key].metrics
    sizes = []
    for round_ in range(3):
        for i in range(4):
            trigger = await create_trigger(client, name=f"r{round_}t{i}")
            await client.post(
                f"/hooks/{trigger['id']}", json={"plate": "ABC1D23"}, headers=bearer(trigger)
            )
            await client.post(
                f"/hooks/{trigger['id']}",
                data=b"{",
                headers={**bearer(trigger), "Content-Type": "application/json"},
            )
        text = metrics.render().decode()
        sizes.append(sum(1 for line in text.splitlines() if not line.startswith("#")))
    assert sizes[1] == sizes[2], sizes


async def test_a_call_in_flight_during_the_delete_does_not_bring_the_deleted_trigger_back(
    aiohttp_client: Any, make_app: Any
) -> None:
    """A call admitted before its trigger's delete and ended after it (its body still
    arriving) counts under "other": the deleted trigger's series stay removed and its place
    goes to the next trigger called."""
    client = await aiohttp_client(make_app(metrics_max_triggers=1))
    doomed = await create_trigger(client, name="old")
    arrived = asyncio.Event()
    go_on = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"plate": '
        arrived.set()
        await go_on.wait()
        yield b'"ABC1D23"}'

    call = asyncio.ensure_future(
        client.post(
            f"/hooks/{doomed['id']}",
            data=slow_body(),
            headers={**bearer(doomed), "Content-Type": "application/json"},
        )
    )
    await arrived.wait()
    await asyncio.sleep(0.3)  # admitted, waiting for the rest of its body
    deleted = await client.delete(f"/api/v1/triggers/{doomed['id']}", headers=auth())
    assert deleted.status == 204
    go_on.set()
    await (await call).read()

    fresh = await create_trigger(client, name="new")
    hook = f"/hooks/{fresh['id']}"
    ok = await client.post(hook, json={"plate": "BRA2E19"}, headers=bearer(fresh))
    assert ok.status in (200, 201), await ok.text()
    text = await _scrape(client)
    assert doomed["id"] not in text
    assert _series_by_trigger(text) == {fresh["id"], "other"}  # the late call's count
