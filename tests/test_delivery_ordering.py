"""An ordered action's line (docs/actions.md "Ordering"): what goes when, what a newer
delivery outdates (the entity's state, never an occurrence), who wakes whom, and replaying a
delivery the line suppressed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.clock import utcnow
from gateway.services import Services
from gateway.web.state import services_key
from tests.flow_support import drain, send_to
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
    post,
)
from tests.support import auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]
LAT, LON = -23.5613, -46.6565
_MINUTE = timedelta(minutes=1)


async def test_a_geofence_exit_stored_while_an_update_of_its_vehicle_is_sent_is_delivered(
    client: Client, partner: Partner
) -> None:
    """The fold reads the vehicle's revision for its events, then stores and fans them out
    outside the vehicle's outbox: an update written and delivered in between (an ERP's
    trigger, an admin) has a newer revision, and the exit's delivery was `suppressed` as
    outdated, never sent. An occurrence is not replaced by a newer version: it goes."""
    services = client.app[services_key]
    p = await create_partner(client, partner.url)
    a = await create_action(client, p["id"], ordered=True)
    await create_subscription(client, a["id"], ("entity.updated", "vehicle.geofence.exited"))
    vehicle = await create_vehicle(client)
    circle = {"lat": LAT, "lon": LON, "radius_m": 1000}
    await post(client, "/api/v1/geofences", {"name": "G", "kind": "authorized", "circle": circle})
    body = {"name": "pos", "target": "positions", "methods": ["POST"]}
    trigger = dict(await post(client, "/api/v1/triggers", body))
    await drain(services)
    t0 = datetime.now(UTC).replace(microsecond=0) - 10 * _MINUTE
    for i in range(3):  # inside, then 2 km out
        at = (t0 + i * _MINUTE).isoformat()
        lon = LON + (0.0196 + i * 1e-3 if i else 0)
        await send_to(client, trigger, {"plate": "ABC1D23", "time": at, "lat": LAT, "lon": lon})

    events, store_events = services.store.events, services.store.events.insert_many
    meanwhile: list[int] = []

    async def insert_many(docs: Any, *args: Any, **kwargs: Any) -> Any:
        if not meanwhile and any(d.get("type") == "vehicle.geofence.exited" for d in docs):
            url = f"/api/v1/entities/vehicle/{vehicle['id']}"
            r = await client.patch(url, headers=auth(), json={"status": "maintenance"})
            meanwhile.append(r.status)
            await services.relay.run_until_idle()
            await services.delivery_worker.run_until_idle()
        return await store_events(docs, *args, **kwargs)

    events.insert_many = insert_many  # type: ignore[method-assign]
    await services.fold.run_until_idle()
    await drain(services)

    assert meanwhile == [200]
    sent = [r.json()["type"] for r in partner.requests]
    assert sent == ["entity.updated", "vehicle.geofence.exited"]
    items = (await (await client.get("/api/v1/deliveries", headers=auth())).json())["items"]
    assert {i["status"] for i in items} == {"succeeded"}


async def _two_updates(client: Client, partner: Partner) -> tuple[Services, Any, Any]:
    """An ordered action, a vehicle's mileage updated to 100 then 200: the two deliveries
    (older, newer) pending, the newer one in flight under another worker's claim."""
    services = client.app[services_key]
    p = await create_partner(client, partner.url)
    a = await create_action(client, p["id"], ordered=True, retry_schedule=[600])
    await create_subscription(client, a["id"])
    vehicle = await create_vehicle(client)
    for km in (100, 200):
        url = f"/api/v1/entities/vehicle/{vehicle['id']}"
        response = await client.patch(url, headers=auth(), json={"odometer_km": km})
        assert response.status == 200
    await services.relay.run_until_idle()
    deliveries = services.store.db["deliveries"]
    older, newer = await deliveries.find().sort("seq", 1).to_list(None)
    claim = {"status": "in_flight", "lease_owner": "other", "lease_until": utcnow() + _MINUTE}
    await deliveries.update_one({"_id": newer["_id"]}, {"$set": claim})
    await services.delivery_worker.run_until_idle()
    waiting = await deliveries.find_one({"_id": older["_id"]})
    assert (waiting["status"], waiting["waiting_for"]) == ("pending", newer["_id"])
    assert waiting["next_attempt_at"] > utcnow() + _MINUTE / 2
    assert not partner.requests
    return services, older, newer


@pytest.mark.parametrize(
    ("ends", "older_ends", "sent"),
    [("pending", "succeeded", [100]), ("succeeded", "suppressed", [])],
)
async def test_a_delivery_waiting_for_a_later_one_in_flight_goes_when_that_flight_ends(
    client: Client, partner: Partner, ends: str, older_ends: str, sent: list[int]
) -> None:
    """The older delivery waits for the outcome of the newer one's flight. When that ends
    (the other worker writes it pending for a retry, or succeeded), the older one is due at
    once: sent (the newer one then goes after it), or suppressed as outdated. Until
    2026-12-06 it waited out the newer one's lease."""
    services, older, newer = await _two_updates(client, partner)
    now = utcnow()
    fields = {"status": ends, "updated_at": now, "next_attempt_at": now + 10 * _MINUTE}
    assert await services.store.deliveries.finish(newer["_id"], "other", fields)

    await services.delivery_worker.run_until_idle()
    ended = await services.store.db["deliveries"].find_one({"_id": older["_id"]})
    assert ended["status"] == older_ends
    assert [r.json()["data"]["odometer_km"] for r in partner.requests] == sent


async def _outdated(client: Client, partner: Partner) -> tuple[Services, Any]:
    """The older of `_two_updates` suppressed: the newer one taken by the partner first."""
    services, older, newer = await _two_updates(client, partner)
    fields = {"status": "succeeded", "updated_at": utcnow()}
    assert await services.store.deliveries.finish(newer["_id"], "other", fields)
    due = {"next_attempt_at": utcnow()}
    await services.store.db["deliveries"].update_one({"_id": older["_id"]}, {"$set": due})
    await services.delivery_worker.run_until_idle()
    return services, older


async def test_a_suppressed_delivery_replayed_goes_out_in_its_line(
    client: Client, partner: Partner
) -> None:
    """An outdated delivery (`suppressed`) could not be replayed (409): the admin who wants
    it sent anyway replays it by id, or with `status: suppressed`; a bulk replay of every
    status leaves it alone. Replayed, it is pending now, never outdated again, and goes out
    in its line as a new attempt."""
    services, older = await _outdated(client, partner)
    url = f"/api/v1/deliveries/{older['_id']}"
    assert (await (await client.get(url, headers=auth())).json())["status"] == "suppressed"

    everything = await client.post("/api/v1/deliveries/replay", headers=auth(), json={})
    assert (await everything.json())["replayed"] == 0
    replayed = await client.post(f"{url}/replay", headers=auth())
    assert replayed.status == 200, await replayed.text()
    assert (await replayed.json())["status"] == "pending"
    await services.delivery_worker.run_until_idle()

    assert [r.json()["data"]["odometer_km"] for r in partner.requests] == [100]
    done = await (await client.get(url, headers=auth())).json()
    assert (done["status"], done["attempt_count"]) == ("succeeded", 1)
    assert [a["error"] for a in done["attempts"]] == ["suppressed", None]


async def test_suppressed_deliveries_are_replayed_in_bulk_when_named(
    client: Client, partner: Partner
) -> None:
    services, _ = await _outdated(client, partner)

    body = {"status": "suppressed"}
    replayed = await client.post("/api/v1/deliveries/replay", headers=auth(), json=body)
    assert (await replayed.json())["replayed"] == 1
    await services.delivery_worker.run_until_idle()
    assert [r.json()["data"]["odometer_km"] for r in partner.requests] == [100]


async def test_a_notification_its_cooldown_suppressed_is_not_replayed(
    client: Client, partner: Partner
) -> None:
    """Replaying suppressed deliveries is for an ordered line's outdated ones: a notification
    its cooldown or quiet hours suppressed stays so, by id (409) or in bulk."""
    services = client.app[services_key]
    await _outdated(client, partner)
    deliveries = services.store.db["deliveries"]
    notice = {
        "_id": "n1",
        "tenant": "acme",
        "kind": "notification",
        "status": "suppressed",
        "last_error": "suppressed: cooldown",
        "next_attempt_at": utcnow(),
        "shard": 0,
    }
    await deliveries.insert_one(notice)

    by_id = await client.post("/api/v1/deliveries/n1/replay", headers=auth())
    assert by_id.status == 409, await by_id.text()
    body = {"status": "suppressed"}
    bulk = await client.post("/api/v1/deliveries/replay", headers=auth(), json=body)
    assert (await bulk.json())["replayed"] == 1  # the webhook, not the notification
    assert (await deliveries.find_one({"_id": "n1"}))["status"] == "suppressed"
