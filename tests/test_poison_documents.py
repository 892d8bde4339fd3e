"""Hostile nesting is refused on every route, and what the background work cannot process is
parked with its reason instead of stopping everyone's events and deliveries (SPEC §7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient
from bson import ObjectId

from gateway.progress import Progress
from gateway.store.deliveries import shard_of
from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    partner,
    post,
)
from tests.processes import until
from tests.support import auth

__all__ = ["partner"]
Client = TestClient[Any, Any]


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_admin_body_nested_past_32_is_refused_and_nothing_written(client: Client) -> None:
    deep = {"plate": "ABC1D23", "attributes": nested(33)}  # 33 levels with the body
    response = await client.post("/api/v1/entities/vehicle", json=deep, headers=auth())
    assert response.status == 400
    assert "nested deeper than 32" in (await response.json())["detail"]
    assert (await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).status == 404
    ok = {"plate": "ABC1D23", "attributes": nested(30)}
    assert (await client.post("/api/v1/entities/vehicle", json=ok, headers=auth())).status == 201


async def test_every_route_that_reads_json_refuses_a_deep_body(client: Client) -> None:
    from gateway.web.openapi import operation_of

    body = nested(40)
    checked = 0
    for route in client.app.router.routes():
        op = operation_of(route.handler)
        if op is None or op.request is None or op.auth != "admin" or route.resource is None:
            continue
        path = route.resource.canonical.replace("{type}", "vehicle")
        path = path.replace("{id}", "x").replace("{name}", "x").replace("{ref}", "x")
        response = await client.request(route.method, path, json=body, headers=auth())
        assert response.status in (400, 422), (route.method, path, response.status)
        checked += 1
    assert checked >= 15


async def test_entity_the_database_cannot_update_does_not_stop_the_others_events(
    client: Client,
) -> None:
    # Written before the limit existed: nested so deep that the database stores and reads
    # it but refuses to update it, so its outbox can neither be drained nor parked.
    store = client.app[services_key].store
    poison = ObjectId()
    entry = {
        "id": ObjectId(),
        "type": "entity.created",
        "entity_type": "vehicle",
        "occurred_at": datetime.now(UTC),
        "data": {},
        "changes": [],
        "origin": {"kind": "admin"},
    }
    await store.db["entities"].insert_one(
        {
            "_id": poison,
            "tenant": "acme",
            "type": "vehicle",
            "nk": "POI1S00",
            "data": {"plate": "POI1S00", "attributes": nested(500)},
            "outbox": [entry],
            "pending": True,
            "pending_shard": 0,
        }
    )
    relay = client.app[services_key].relay
    await relay.run_until_idle()
    created = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await relay.run_until_idle()  # returns: the poison is left aside, not retried forever
    events = await client.get(f"/api/v1/events?entity_id={created['id']}", headers=auth())
    assert [e["type"] for e in (await events.json())["items"]] == ["entity.created"]


def poison_delivery(delivery_id: str, **fields: Any) -> dict[str, Any]:
    """A delivery as a bug, a hand edit or an older release might have left it, due now."""
    due = {"status": "pending", "next_attempt_at": datetime.now(UTC) - timedelta(seconds=1)}
    return {"_id": delivery_id, "shard": shard_of(delivery_id), **due, **fields}


async def test_delivery_the_worker_cannot_process_is_parked_visible_and_counted(
    client: Client, partner: Partner
) -> None:
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"])
    sub = await create_subscription(client, action["id"], ("entity.created",))
    store = client.app[services_key].store
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await client.app[services_key].relay.run_until_idle()
    sound = await store.db["deliveries"].find_one({"subscription_id": sub["id"]})
    assert sound is not None
    # Its event is a string, its attempt count too, its attempts no list, its order key and
    # seq numbers: preparing it raises, and so would sorting its batch or recording a failure
    # the usual way. In the sound delivery's shard, so that one claim takes both.
    poison_id = f"{ObjectId()}:{sub['id']}"
    await store.db["deliveries"].insert_one(
        poison_delivery(
            poison_id,
            shard=sound["shard"],
            tenant="acme",
            event="not an event",
            subscription_id=sub["id"],
            action_id=action["id"],
            partner_id=partner_doc["id"],
            attempt_count="none",
            attempts={"n": 1},
            order_key=7,
            seq=3,
        )
    )
    worker = client.app[services_key].delivery_worker
    counts = await worker.run_until_idle()

    assert len(partner.requests) == 1  # the others went out
    assert counts["parked"] == 1 and counts["succeeded"] == 1
    listed = await client.get("/api/v1/deliveries?status=parked", headers=auth())
    assert listed.status == 200
    [parked] = (await listed.json())["items"]
    assert parked["id"] == poison_id and parked["status"] == "parked"
    assert parked["last_error"].startswith("cannot be processed: AttributeError")
    detail = await client.get(f"/api/v1/deliveries/{poison_id}", headers=auth())
    assert detail.status == 200 and (await detail.json())["status"] == "parked"
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_deliveries_total{outcome="parked"} 1.0' in metrics

    # Set aside for good: a later round (leases long expired) does not pick it up again.
    worker.clock = lambda: datetime.now(UTC) + timedelta(hours=1)
    assert (await worker.run_until_idle())["parked"] == 0
    # Fixed by hand, it is replayed like a failed delivery.
    await store.db["deliveries"].update_one({"_id": poison_id}, {"$set": {"attempts": []}})
    replayed = await client.post(f"/api/v1/deliveries/{poison_id}/replay", headers=auth())
    assert replayed.status == 200 and (await replayed.json())["status"] == "pending"


async def test_a_delivery_of_no_tenant_is_parked_and_does_not_stop_the_worker(
    client: Client, partner: Partner
) -> None:
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"])
    await create_subscription(client, action["id"], ("entity.created",))
    store = client.app[services_key].store
    await store.db["deliveries"].insert_one(poison_delivery("no-tenant", kind="unheard-of"))
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await client.app[services_key].relay.run_until_idle()
    await client.app[services_key].delivery_worker.run_until_idle()
    assert len(partner.requests) == 1
    parked = await store.db["deliveries"].find_one({"_id": "no-tenant"})
    assert parked is not None and parked["status"] == "parked"
    assert parked["last_error"] == "cannot be processed: KeyError: 'tenant'"


async def test_readiness_drops_when_the_relay_is_stuck_past_the_threshold(
    aiohttp_client: Any, make_app: Any
) -> None:
    client = await aiohttp_client(make_app(run_workers=True, stall_seconds=5))
    now = [1000.0]
    relay = client.app[services_key].relay
    relay.progress = Progress(clock=lambda: now[0])

    async def failing(shards: object = None) -> int:  # a relay round that keeps failing
        raise RuntimeError("cannot relay")

    relay.relay_once = failing  # type: ignore[method-assign]
    await until(lambda: relay.progress.reason is not None, 10, "the relay's stall reason")
    now[0] += 4
    assert (await client.get("/readyz")).status == 200
    now[0] += 2
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 503 and response.headers["Retry-After"]
    assert "event relay has made no progress for 6 s: RuntimeError: cannot relay" in body["detail"]
