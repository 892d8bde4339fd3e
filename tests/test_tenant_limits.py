"""Every resource a tenant's admin creates stops at the tenant's limit
(GATEWAY_MAX_<RESOURCE>_PER_TENANT, store/turns.py `TenantLimits`): a create past it is a 409
problem with `limit`, another tenant keeps its own room, a deletion makes room again, and
creates side by side take turns (never both the last place)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from gateway.clock import utcnow
from gateway.store import turns
from gateway.store.client import with_folded_name
from gateway.store.turns import RECOUNT_AFTER_SECONDS
from gateway.web.state import services_key
from tests.partner_double import create_action, create_partner, post
from tests.support import auth
from tests.triggers_support import Client

MAPPING = """
name: {name}
direction: inbound
entity_type: vehicle
key: [plate]
items: items
fields:
  plate: {{from: placa, transforms: [plate]}}
"""
EMAIL = {"host": "127.0.0.1", "port": 2525, "security": "none"}


async def _send(client: Client, path: str, body: Any, tenant: str) -> tuple[int, Any, str]:
    if isinstance(body, str):
        headers = {**auth(tenant), "Content-Type": "application/yaml"}
        response = await client.post(path, data=body.encode(), headers=headers)
    else:
        response = await client.post(path, json=body, headers=auth(tenant))
    return response.status, await response.json(), response.headers.get("Content-Type", "")


async def _partner(client: Client, tenant: str) -> dict[str, Any]:
    body = {"name": "erp", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}}
    result: dict[str, Any] = await post(client, "/api/v1/partners", body, tenant=tenant)
    return result


async def _proxy_action(client: Client, tenant: str) -> dict[str, Any]:
    partner = await _partner(client, tenant)
    body = {
        "name": "feed",
        "partner_id": partner["id"],
        "method": "GET",
        "path": "/feed",
        "mode": "proxy",
    }
    result: dict[str, Any] = await post(client, "/api/v1/actions", body, tenant=tenant)
    return result


# resource → (what its creates need, made once a tenant; the body of the i-th one; its path)
Setup = Callable[[Client, str], Awaitable[dict[str, Any]]]
Body = Callable[[int, dict[str, Any]], Any]


async def _nothing(client: Client, tenant: str) -> dict[str, Any]:
    return {}


async def _action_of_a_partner(client: Client, tenant: str) -> dict[str, Any]:
    partner = await _partner(client, tenant)
    body = {"name": "push", "partner_id": partner["id"], "method": "POST", "path": "/x"}
    return {"action": await post(client, "/api/v1/actions", {**body, "mode": "deliver"}, tenant)}


async def _partner_only(client: Client, tenant: str) -> dict[str, Any]:
    return {"partner": await _partner(client, tenant)}


async def _schedule_needs(client: Client, tenant: str) -> dict[str, Any]:
    status, body, _ = await _send(client, "/api/v1/mappings", MAPPING.format(name="m"), tenant)
    assert status == 201, body
    return {"action": await _proxy_action(client, tenant)}


async def _flow_needs(client: Client, tenant: str) -> dict[str, Any]:
    channel = {"name": "e", "type": "email", "smtp": EMAIL, "from": "a@b.co"}
    await post(client, "/api/v1/channels", channel, tenant=tenant)
    template = {
        "name": "t",
        "channel_type": "email",
        "default_locale": "en",
        "locales": {"en": {"subject": "Hi", "text": "Hello"}},
    }
    await post(client, "/api/v1/templates", template, tenant=tenant)
    return {}


def _flow(i: int, _: dict[str, Any]) -> dict[str, Any]:
    step = {
        "id": "say",
        "notify": {"channel": "e", "template": "t", "recipients": [{"address": "a@b.co"}]},
    }
    return {"name": f"f{i}", "on": {"events": ["entity.created"]}, "steps": [step]}


RESOURCES: dict[str, tuple[str, Setup, Body]] = {
    "triggers": (
        "/api/v1/triggers",
        _nothing,
        lambda i, _: {"name": f"t{i}", "entity_type": "vehicle", "methods": ["POST"]},
    ),
    "partners": (
        "/api/v1/partners",
        _nothing,
        lambda i, _: {"name": f"p{i}", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}},
    ),
    "actions": (
        "/api/v1/actions",
        _partner_only,
        lambda i, had: {
            "name": f"a{i}",
            "partner_id": had["partner"]["id"],
            "method": "POST",
            "path": "/x",
            "mode": "deliver",
        },
    ),
    "subscriptions": (
        "/api/v1/subscriptions",
        _action_of_a_partner,
        lambda i, had: {"action_id": had["action"]["id"], "event_types": ["entity.updated"]},
    ),
    "schedules": (
        "/api/v1/schedules",
        _schedule_needs,
        lambda i, had: {
            "name": f"s{i}",
            "action_id": had["action"]["id"],
            "every": "1h",
            "target": {"entity_type": "vehicle", "mapping": "m"},
        },
    ),
    "channels": (
        "/api/v1/channels",
        _nothing,
        lambda i, _: {"name": f"c{i}", "type": "email", "smtp": EMAIL, "from": "a@b.co"},
    ),
    "templates": (
        "/api/v1/templates",
        _nothing,
        lambda i, _: {
            "name": f"t{i}",
            "channel_type": "sms",
            "default_locale": "en",
            "locales": {"en": {"text": "Hello"}},
        },
    ),
    "kinds": (
        "/api/v1/kinds",
        _nothing,
        lambda i, _: {"name": f"k{i}", "schema": {"type": "object"}},
    ),
    "mappings": ("/api/v1/mappings", _nothing, lambda i, _: MAPPING.format(name=f"m{i}")),
    "flows": ("/api/v1/flows", _flow_needs, _flow),
}


@pytest.mark.parametrize("resource", list(RESOURCES))
async def test_a_tenant_past_its_limit_gets_a_409_with_the_limit_and_others_do_not(
    aiohttp_client: Any, make_app: Any, resource: str
) -> None:
    path, setup, body = RESOURCES[resource]
    client = await aiohttp_client(make_app(**{f"max_{resource}_per_tenant": 2}))
    had = await setup(client, "acme")
    for i in range(2):
        status, answer, _ = await _send(client, path, body(i, had), "acme")
        assert status == 201, answer.get("errors", answer)
    status, problem, content_type = await _send(client, path, body(2, had), "acme")
    assert status == 409, problem
    assert content_type.startswith("application/problem+json")
    assert problem["limit"] == 2
    assert f"the tenant has 2 {resource}, the limit is 2" in problem["detail"]
    other = await setup(client, "other")  # another tenant's own room
    status, answer, _ = await _send(client, path, body(2, other), "other")
    assert status == 201, answer


async def test_a_new_version_of_a_mapping_at_the_limit_is_no_new_mapping(
    aiohttp_client: Any, make_app: Any
) -> None:
    """The limit counts names: a tenant at it still uploads versions of the ones it has, and
    a deleted one makes room."""
    client = await aiohttp_client(make_app(max_mappings_per_tenant=1))
    status, answer, _ = await _send(client, "/api/v1/mappings", MAPPING.format(name="m0"), "acme")
    assert status == 201, answer
    changed = MAPPING.format(name="m0") + "  attributes.x: {from: x}\n"
    status, answer, _ = await _send(client, "/api/v1/mappings", changed, "acme")
    assert status == 201, answer
    status, _, _ = await _send(client, "/api/v1/mappings", MAPPING.format(name="m1"), "acme")
    assert status == 409
    deleted = await client.delete("/api/v1/mappings/m0", headers=auth())
    assert deleted.status == 204, await deleted.text()
    status, answer, _ = await _send(client, "/api/v1/mappings", MAPPING.format(name="m1"), "acme")
    assert status == 201, answer


async def test_a_deleted_partner_makes_room(aiohttp_client: Any, make_app: Any) -> None:
    client = await aiohttp_client(make_app(max_partners_per_tenant=1))
    partner = await create_partner(client, "http://127.0.0.1:9", name="p0")
    partners = RESOURCES["partners"][2]
    status, _, _ = await _send(client, "/api/v1/partners", partners(1, {}), "acme")
    assert status == 409
    deleted = await client.delete(f"/api/v1/partners/{partner['id']}", headers=auth())
    assert deleted.status == 204, await deleted.text()
    await create_partner(client, "http://127.0.0.1:9", name="p1")


@pytest.mark.parametrize("resource", ["partners", "actions", "kinds", "mappings"])
async def test_creates_side_by_side_stop_at_the_limit(
    aiohttp_client: Any, make_app: Any, resource: str
) -> None:
    """Creates of a tenant take turns: eight sent together never pass a limit of three."""
    path, setup, body = RESOURCES[resource]
    client = await aiohttp_client(make_app(**{f"max_{resource}_per_tenant": 3}))
    had = await setup(client, "acme")
    answers = await asyncio.gather(*(_send(client, path, body(i, had), "acme") for i in range(8)))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses.count(201) == 3 and set(statuses) == {201, 409}, answers


async def test_an_action_past_the_limit_is_refused_whatever_its_partner(
    aiohttp_client: Any, make_app: Any
) -> None:
    """The limit is the tenant's, not a partner's."""
    client = await aiohttp_client(make_app(max_actions_per_tenant=1))
    first = await create_partner(client, "http://127.0.0.1:9", name="p0")
    second = await create_partner(client, "http://127.0.0.1:9", name="p1")
    await create_action(client, first["id"], name="a0")
    status, problem, _ = await _send(
        client,
        "/api/v1/actions",
        {
            "name": "a1",
            "partner_id": second["id"],
            "method": "POST",
            "path": "/x",
            "mode": "deliver",
        },
        "acme",
    )
    assert status == 409 and problem["limit"] == 1, problem


async def test_two_uploads_of_one_new_mapping_at_the_last_place_both_succeed(
    aiohttp_client: Any, make_app: Any
) -> None:
    """The second upload of a name takes no second place: it is a version of the first's."""
    client = await aiohttp_client(make_app(max_mappings_per_tenant=1))
    texts = [MAPPING.format(name="m0"), MAPPING.format(name="m0") + "  attributes.x: {from: x}\n"]
    answers = await asyncio.gather(
        *(_send(client, "/api/v1/mappings", text, "acme") for text in texts)
    )
    assert [status for status, _, _ in answers] == [201, 201], answers


async def test_creates_side_by_side_of_a_large_tenant_under_its_limit_all_succeed(
    aiohttp_client: Any, make_app: Any
) -> None:
    """A tenant with 4,900 triggers (room for 100) sending 40 creates together: all are
    created. The count is kept beside the turn (store/turns.py), not counted in it: a count of
    4,900 documents in the turn took 0.25-0.3 s, so most of them waited past the turn's 5 s."""
    client = await aiohttp_client(make_app())
    triggers = client.app[services_key].store.triggers._c
    docs = [
        with_folded_name(
            {
                "_id": f"trg_fill{i:06d}",
                "tenant": "acme",
                "name": f"fill{i}",
                "status": "active",
                "version": 1,
                "rev": 1,
                "tokens": [],
            }
        )
        for i in range(4900)
    ]
    for start in range(0, len(docs), 500):  # in pieces: the app's client has a 5 s deadline
        await triggers.insert_many(docs[start : start + 500])
    path, _, body = RESOURCES["triggers"]
    answers = await asyncio.gather(*(_send(client, path, body(i, {}), "acme") for i in range(40)))
    refused = [answer for status, answer, _ in answers if status != 201]
    assert not refused, f"{len(refused)} of 40 refused (room for 100): {refused[0]}"


@pytest.mark.parametrize("resource", list(RESOURCES))
async def test_a_deletion_at_the_limit_makes_room_at_once(
    aiohttp_client: Any, make_app: Any, resource: str
) -> None:
    """Every resource's deletion marks the tenant's count stale: the next create at the
    limit counts again and finds the room."""
    path, setup, body = RESOURCES[resource]
    client = await aiohttp_client(make_app(**{f"max_{resource}_per_tenant": 2}))
    had = await setup(client, "acme")
    made = [(await _send(client, path, body(i, had), "acme"))[1] for i in range(2)]
    assert (await _send(client, path, body(2, had), "acme"))[0] == 409
    key = made[0].get("id") or made[0]["name"]
    deleted = await client.delete(f"{path}/{key}", headers=auth())
    assert deleted.status == 204, await deleted.text()
    status, answer, _ = await _send(client, path, body(2, had), "acme")
    assert status == 201, answer


async def test_a_failed_create_takes_no_place(aiohttp_client: Any, make_app: Any) -> None:
    client = await aiohttp_client(make_app(max_triggers_per_tenant=2))
    path, _, body = RESOURCES["triggers"]
    assert (await _send(client, path, body(0, {}), "acme"))[0] == 201
    status, problem, _ = await _send(client, path, body(0, {}), "acme")  # the name is taken
    assert status == 409 and "limit" not in problem, problem
    status, answer, _ = await _send(client, path, body(1, {}), "acme")
    assert status == 201, answer


async def test_a_count_left_too_high_is_counted_again(aiohttp_client: Any, make_app: Any) -> None:
    """The kept count is never below what the tenant has; one a dead process left too high
    (a create counted, never inserted) is counted again once older than RECOUNT_AFTER_SECONDS,
    and one gone is counted again at once."""
    client = await aiohttp_client(make_app(max_triggers_per_tenant=2))
    path, _, body = RESOURCES["triggers"]
    assert (await _send(client, path, body(0, {}), "acme"))[0] == 201
    counts = client.app[services_key].store.db["turns"]
    key = "count:triggers:acme"
    assert (await counts.find_one({"_id": key}))["n"] == 1
    await counts.update_one({"_id": key}, {"$set": {"n": 2}})  # a create that never inserted
    assert (await _send(client, path, body(1, {}), "acme"))[0] == 409  # counted just now
    old = utcnow().timestamp() - RECOUNT_AFTER_SECONDS - 1
    await counts.update_one({"_id": key}, {"$set": {"counted_at": old}})
    assert (await _send(client, path, body(1, {}), "acme"))[0] == 201
    await counts.delete_one({"_id": key})
    status, problem, _ = await _send(client, path, body(2, {}), "acme")
    assert status == 409 and problem["limit"] == 2, problem


async def test_a_create_that_waits_past_its_turn_is_a_503_busy_with_retry_after(
    aiohttp_client: Any, make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(turns, "WAIT_SECONDS", 0.3)
    client = await aiohttp_client(make_app())
    held = {"owner": "another", "until": utcnow() + timedelta(seconds=30)}
    await client.app[services_key].store.db["turns"].insert_one({"_id": "triggers:acme", **held})
    path, _, body = RESOURCES["triggers"]
    response = await client.post(path, json=body(0, {}), headers=auth())
    problem = await response.json()
    assert response.status == 503, problem
    assert problem["type"] == "https://rabbot.dev/problems/busy"
    assert response.headers["Retry-After"] == "1"
    assert "being created; retry" in problem["detail"]


async def test_a_tenant_above_a_lowered_limit_creates_nothing_once_it_is_raised_short_of_it(
    aiohttp_client: Any, make_app: Any
) -> None:
    """A count taken under a lowered limit stops at it ("at least that many"): once the
    limit is raised, but not to what the tenant has, the tenant is counted again and creates
    nothing (docs/operations.md: never below what the tenant has)."""
    client = await aiohttp_client(make_app(max_partners_per_tenant=10))
    limit = client.app[services_key].store.partners.limit
    path, _, body = RESOURCES["partners"]
    made = [(await _send(client, path, body(i, {}), "acme"))[1]["id"] for i in range(8)]
    limit.limit = 2  # the operator lowers it (a restart): 8 kept
    assert (await client.delete(f"{path}/{made[0]}", headers=auth("acme"))).status == 204
    assert (await _send(client, path, body(100, {}), "acme"))[0] == 409  # 7 counted as "2"
    limit.limit = 5  # raised, still under the 7 the tenant has
    statuses = [(await _send(client, path, body(i, {}), "acme"))[0] for i in range(101, 104)]
    assert statuses == [409, 409, 409]
    limit.limit = 9  # room for two
    statuses = [(await _send(client, path, body(i, {}), "acme"))[0] for i in range(104, 108)]
    assert statuses == [201, 201, 409, 409]
