"""Durable fan-out and the delivery worker against a local partner: signatures, filters,
retries on schedule, Retry-After, 410, ordering, replay, secret rotation, shutdown."""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from bson import ObjectId

from gateway import clock as host_clock
from gateway.auth.keyring import KeyRing
from gateway.auth.secretbox import SecretBox
from gateway.auth.webhook_signature import verify
from gateway.config import ConfigError, Secret, Settings
from gateway.delivery import recording
from gateway.delivery.worker import DAMAGED_PER_ROUND, DeliveryWorker
from gateway.errors import StoreUnavailable
from gateway.formats.json_tree import ANSWER_DEPTH
from gateway.keys import check_secret_key, key_still_opens
from gateway.server_clock import ServerClock
from gateway.services import Background, Services, open_services
from gateway.web.state import services_key
from tests.partner_double import (
    FakeClock,
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
    post,
    raw_partner,
    running_partner,
    upload_mapping,
)
from tests.support import SECRET_KEY, auth, set_offset
from tests.ui_support import log_in, make_user

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]
NEW_KEY = "the-next-secret-key-0123456789abcdef0123"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def worker(client: Client, clock: FakeClock) -> DeliveryWorker:
    worker = client.app[services_key].delivery_worker
    worker.clock = clock
    worker.rng = lambda: 0.5  # no jitter: delays are exactly the schedule's
    return worker


async def _deliver(client: Client, worker: DeliveryWorker) -> Counter[str]:
    await client.app[services_key].relay.run_until_idle()
    return await worker.run_until_idle()


BEARER = {"type": "bearer", "token": "s3cr3t"}


async def _subscribed(
    client: Client,
    partner: Partner,
    *,
    action: dict[str, Any] | None = None,
    partner_fields: dict[str, Any] | None = None,
    **subscription: Any,
) -> dict[str, Any]:
    partner_doc = await create_partner(client, partner.url, **(partner_fields or {}))
    action_doc = await create_action(client, partner_doc["id"], **(action or {}))
    sub = await create_subscription(client, action_doc["id"], **subscription)
    return {"partner": partner_doc, "action": action_doc, "subscription": sub}


async def _deliveries(client: Client, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    response = await client.get(f"/api/v1/deliveries?{query}", headers=auth())
    assert response.status == 200
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


async def _delivery(client: Client, delivery_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/deliveries/{delivery_id}", headers=auth())
    assert response.status == 200
    result: dict[str, Any] = await response.json()
    return result


async def _odometer(client: Client, vehicle: dict[str, Any], km: float) -> None:
    response = await client.patch(
        f"/api/v1/entities/vehicle/{vehicle['id']}", headers=auth(), json={"odometer_km": km}
    )
    assert response.status == 200


async def test_an_object_with_ref_and_id_members_is_delivered_as_written(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    await _subscribed(client, partner, event_types=["entity.created"])
    link = {"$ref": "vehicles", "$id": "abc", "extra": [1]}
    await create_vehicle(client, attributes={"r": link})

    assert await _deliver(client, worker) == Counter(succeeded=1)
    assert partner.requests[0].json()["data"]["attributes"]["r"] == link


async def test_matching_event_is_delivered_once_signed_with_the_event_as_body(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    setup = await _subscribed(
        client,
        partner,
        filter={"changed": ["odometer_km"], "entity": {"group": "north"}, "entity_type": "vehicle"},
    )
    vehicle = await create_vehicle(client, group="north")
    await _odometer(client, vehicle, 1200.5)

    counts = await _deliver(client, worker)

    assert counts == Counter(succeeded=1)
    sent = partner.requests[0]
    secret = setup["subscription"]["secret"]
    assert secret.startswith("whsec_")
    assert verify([secret], sent.headers, sent.body, now=time.time()) == sent.webhook_id
    event = sent.json()
    assert event["type"] == "entity.updated"
    assert event["entity"]["id"] == vehicle["id"]
    assert event["changes"] == [{"field": "odometer_km", "old": None, "new": 1200.5}]
    assert sent.headers["Authorization"] == "Bearer s3cr3t"
    [listed] = await _deliveries(client)
    assert listed["id"] == sent.webhook_id == f"{event['id']}:{setup['subscription']['id']}"
    delivery = await _delivery(client, listed["id"])
    assert delivery["status"] == "succeeded"
    [attempt] = delivery["attempts"]
    assert attempt["status"] == 200 and attempt["latency_ms"] > 0
    assert attempt["response"] == '{"ok": true}'


async def test_a_path_without_a_mapping_names_the_event_s_entity_by_type_key_and_rev(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """`{key}` and `{rev}` are the event's entity reference, not data fields: every such
    delivery failed "cannot build the partner URL"; `{type}` took the vehicle's own `type`."""
    await _subscribed(client, partner, action={"path": "/v/{type}/{key}/{rev}"})
    await _odometer(client, await create_vehicle(client, "ABC1D23", type="truck"), 100)
    assert await _deliver(client, worker) == Counter(succeeded=1)

    [request] = partner.requests
    assert request.path == f"/v/vehicle/ABC1D23/{request.json()['entity']['rev']}"


async def test_events_the_filter_rejects_create_no_delivery(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    await _subscribed(
        client, partner, filter={"changed": ["odometer_km"], "entity": {"group": ["north", "east"]}}
    )
    south = await create_vehicle(client, "ABC1D23", group="south")
    north = await create_vehicle(client, "BRA2E19", group="north")
    await _odometer(client, south, 10)  # wrong group
    response = await client.patch(
        f"/api/v1/entities/vehicle/{north['id']}", headers=auth(), json={"status": "maintenance"}
    )  # another field
    assert response.status == 200

    await _deliver(client, worker)

    assert partner.requests == []
    assert await _deliveries(client) == []


async def test_a_relay_that_runs_again_creates_no_duplicate(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    await _subscribed(client, partner, event_types=("vehicle.*", "entity.created"))
    await create_vehicle(client)
    await client.app[services_key].relay.run_until_idle()
    [event] = await client.app[services_key].store.events.find("acme", {}, before=None, limit=10)

    again = await client.app[services_key].fanout([event])

    assert again == 0
    assert len(await _deliveries(client)) == 1


async def test_500_then_200_is_retried_at_once_then_on_the_schedule(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock
) -> None:
    """SPEC §5: retries "immediately, then 5 s, 5 min, ...": the first retry goes at once."""
    await _subscribed(client, partner)
    vehicle = await create_vehicle(client)
    partner.respond_with(500, {"erro": "x"}, times=2)
    await _odometer(client, vehicle, 5)

    first = await _deliver(client, worker)
    [pending] = await _deliveries(client)
    not_yet = await worker.run_until_idle()
    clock.advance(5.1)
    then = await worker.run_until_idle()

    assert first == Counter(retry=2)  # the first attempt, and the immediate retry
    assert pending["status"] == "pending" and pending["last_error"] == "partner answered 500"
    attempts = (await _delivery(client, pending["id"]))["attempts"]
    delay = datetime.fromisoformat(pending["next_attempt_at"]) - datetime.fromisoformat(
        attempts[1]["at"]
    )
    assert abs(delay.total_seconds() - 5) < 0.01  # the second retry, no jitter
    assert not_yet == Counter()
    assert then == Counter(succeeded=1)
    delivery = await _delivery(client, pending["id"])
    assert [a["status"] for a in delivery["attempts"]] == [500, 500, 200]
    assert delivery["attempt_count"] == 3
    assert len({r.webhook_id for r in partner.requests}) == 1  # same id: receivers dedupe


async def test_an_empty_retry_schedule_makes_the_first_attempt_only(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    setup = await _subscribed(client, partner, action={"retry_schedule": []})
    vehicle = await create_vehicle(client)
    partner.respond_with(503, {})
    await _odometer(client, vehicle, 5)

    counts = await _deliver(client, worker)

    assert setup["action"]["retry_schedule"] == []
    assert counts == Counter(dead=1)
    [dead] = await _deliveries(client)
    assert dead["attempt_count"] == 1 and len(partner.requests) == 1


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_the_first_retry_after_a_reset_is_immediate(
    client: Client, partner: Partner, worker: DeliveryWorker, method: str
) -> None:
    """The commonest transient failure (a reset on a reused keep-alive connection) waited 5 s:
    the schedule's first delay was read as the wait before the first attempt. Whatever the
    method: aiohttp sent a PUT or DELETE again itself, unrecorded (one attempt for two
    requests, the reset never counted against the partner)."""
    await _subscribed(client, partner, action={"method": method})
    vehicle = await create_vehicle(client)
    partner.respond_with(200, {}, reset=True, times=1)
    await _odometer(client, vehicle, 5)

    counts = await _deliver(client, worker)

    assert counts == Counter(retry=1, succeeded=1)
    [delivered] = await _deliveries(client)
    assert delivered["status"] == "succeeded" and delivered["attempt_count"] == 2
    assert len(partner.requests) == 2
    assert partner.requests[0].webhook_id == partner.requests[1].webhook_id is not None


async def test_retry_after_is_honoured_as_a_floor(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock
) -> None:
    await _subscribed(client, partner)
    vehicle = await create_vehicle(client)
    partner.respond_with(429, {}, headers={"Retry-After": "120"}, times=1)
    await _odometer(client, vehicle, 5)

    await _deliver(client, worker)
    clock.advance(100)
    early = await worker.run_until_idle()
    clock.advance(21)
    late = await worker.run_until_idle()

    assert early == Counter()
    assert late == Counter(succeeded=1)


async def test_delivery_dead_after_schedule_exhausted_then_replayed(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock
) -> None:
    setup = await _subscribed(client, partner, action={"retry_schedule": [1, 1]})
    vehicle = await create_vehicle(client)
    partner.respond_with(503, {})
    await _odometer(client, vehicle, 5)

    counts = await _deliver(client, worker)
    for _ in range(2):
        clock.advance(1.1)
        counts += await worker.run_until_idle()
    [dead] = await _deliveries(client, status="dead")
    partner.respond_with(200, {})
    replay = await client.post(f"/api/v1/deliveries/{dead['id']}/replay", headers=auth())
    again = await client.post(f"/api/v1/deliveries/{dead['id']}/replay", headers=auth())
    after = await worker.run_until_idle()

    assert counts == Counter(retry=2, dead=1)
    assert dead["attempt_count"] == 3  # the first attempt and the schedule's two retries
    assert replay.status == 200 and (await replay.json())["status"] == "pending"
    assert again.status == 409
    assert after == Counter(succeeded=1)
    assert (await _deliveries(client, action_id=setup["action"]["id"]))[0]["status"] == "succeeded"


async def test_the_queue_gauge_counts_deliveries_due_not_those_waiting_for_a_later_attempt(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock
) -> None:
    # The first retry waits a minute: pending, due later.
    await _subscribed(
        client, partner, action={"retry_schedule": [60, 60]}, event_types=("entity.created",)
    )
    partner.respond_with(503, {}, times=1)
    await create_vehicle(client)
    assert await _deliver(client, worker) == Counter(retry=1)

    await worker.housekeeping()
    waiting = await (await client.get("/metrics")).text()
    clock.advance(100)
    await worker.housekeeping()
    due = await (await client.get("/metrics")).text()

    assert 'gateway_delivery_queue_depth{status="pending"} 0.0' in waiting
    assert "gateway_delivery_oldest_due_age_seconds 0.0" in waiting
    assert 'gateway_delivery_queue_depth{status="pending"} 1.0' in due
    [age] = [
        float(line.split()[-1])
        for line in due.splitlines()
        if line.startswith("gateway_delivery_oldest_due_age_seconds ")
    ]
    assert 25 <= age <= 55


async def test_other_4xx_fails_at_once(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    await _subscribed(client, partner)
    vehicle = await create_vehicle(client)
    partner.respond_with(422, {"erro": "placa desconhecida"})
    await _odometer(client, vehicle, 5)

    counts = await _deliver(client, worker)

    assert counts == Counter(failed=1)
    [failed] = await _deliveries(client)
    assert failed["status"] == "failed" and failed["attempt_count"] == 1
    assert (
        "placa desconhecida" in (await _delivery(client, failed["id"]))["attempts"][0]["response"]
    )


async def test_a_redirect_fails_unfollowed_and_says_where_it_pointed(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """docs/outbound.md: a 3xx is "recorded with its Location"; it said only "answered 308"."""
    await _subscribed(client, partner)
    vehicle = await create_vehicle(client)
    partner.respond_with(308, raw=b"", headers={"Location": "https://erp2.example.com/hooks"})
    await _odometer(client, vehicle, 5)

    assert await _deliver(client, worker) == Counter(failed=1)

    [failed] = await _deliveries(client)
    said = "redirected to https://erp2.example.com/hooks; redirects are not followed"
    assert failed["last_error"].startswith(f"partner answered 308: {said}")
    [attempt] = (await _delivery(client, failed["id"]))["attempts"]
    assert said in attempt["message"] and len(partner.requests) == 1


async def test_410_gone_disables_the_subscription(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    setup = await _subscribed(client, partner)
    vehicle = await create_vehicle(client)
    partner.respond_with(410, {})
    await _odometer(client, vehicle, 5)

    counts = await _deliver(client, worker)
    await _odometer(client, vehicle, 6)
    later = await _deliver(client, worker)

    assert counts == Counter(gone=1)
    sub = await (
        await client.get(f"/api/v1/subscriptions/{setup['subscription']['id']}", headers=auth())
    ).json()
    assert sub["status"] == "disabled" and "410" in sub["disabled_reason"]
    # When it was disabled (it kept its creation time).
    assert sub["updated_at"] > setup["subscription"]["updated_at"]
    assert later == Counter()
    assert len(partner.requests) == 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"delay": 5}, "timeout"),
        ({"reset": True}, "reset"),
        ({"status": 503, "cut": True}, "reset"),
        (
            {"status": 502, "raw": b"<html>bad gateway", "headers": {"Content-Type": "text/html"}},
            None,
        ),
    ],
)
async def test_network_faults_are_retried_and_nothing_is_lost(
    client: Client,
    partner: Partner,
    worker: DeliveryWorker,
    clock: FakeClock,
    answer: dict[str, Any],
    error: str | None,
) -> None:
    await _subscribed(client, partner, partner_fields={"timeout_seconds": 0.3})
    vehicle = await create_vehicle(client)
    partner.respond_with(times=2, **answer)
    await _odometer(client, vehicle, 5)

    first = await _deliver(client, worker)  # the first attempt and the immediate retry
    clock.advance(6)
    second = await worker.run_until_idle()

    assert first == Counter(retry=2) and second == Counter(succeeded=1)
    [delivery] = await _deliveries(client)
    attempts = (await _delivery(client, delivery["id"]))["attempts"]
    assert attempts[0]["error"] == error


@pytest.mark.parametrize("answer", [{"raw": b"\x00{garbage"}, {"cut": True}])
async def test_a_2xx_counts_as_delivered_even_if_its_body_is_garbage_or_cut(
    client: Client, partner: Partner, worker: DeliveryWorker, answer: dict[str, Any]
) -> None:
    await _subscribed(client, partner)
    vehicle = await create_vehicle(client)
    partner.respond_with(200, **answer)
    await _odometer(client, vehicle, 5)

    assert await _deliver(client, worker) == Counter(succeeded=1)


async def test_partner_down_keeps_the_delivery_until_it_is_reachable(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock, unused_tcp_port: int
) -> None:
    setup = await _subscribed(client, partner)
    await client.patch(
        f"/api/v1/partners/{setup['partner']['id']}",
        headers=auth(),
        json={"base_url": f"http://127.0.0.1:{unused_tcp_port}", "auth": BEARER},
    )
    vehicle = await create_vehicle(client)
    await _odometer(client, vehicle, 5)

    down = await _deliver(client, worker)
    await client.patch(
        f"/api/v1/partners/{setup['partner']['id']}",
        headers=auth(),
        json={"base_url": partner.url, "auth": BEARER},  # a new origin needs the credentials
    )
    clock.advance(6)
    up = await worker.run_until_idle()

    assert down == Counter(retry=2) and up == Counter(succeeded=1)  # retried at once, then 5 s
    [delivery] = await _deliveries(client)
    assert (await _delivery(client, delivery["id"]))["attempts"][0]["error"] == "connect"


async def test_rotated_secret_signs_with_both_for_24_hours(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock
) -> None:
    setup = await _subscribed(client, partner)
    old = setup["subscription"]["secret"]
    rotated = await post(
        client, f"/api/v1/subscriptions/{setup['subscription']['id']}/rotate-secret", {}, status=200
    )
    new = rotated["secret"]
    vehicle = await create_vehicle(client)
    await _odometer(client, vehicle, 5)
    await _deliver(client, worker)
    clock.advance(24 * 3600 + 1)
    await _odometer(client, vehicle, 6)
    await _deliver(client, worker)

    during, after = partner.requests
    assert new != old and new.startswith("whsec_")
    assert len(during.headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        verify([secret], during.headers, during.body, now=time.time())
    assert len(after.headers["webhook-signature"].split()) == 1
    verify([new], after.headers, after.body, now=time.time())
    with pytest.raises(Exception, match="signature"):
        verify([old], after.headers, after.body, now=time.time())


async def test_a_second_rotation_within_the_day_keeps_the_first_secret_signing(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """The second rotation dropped the original secret at once: a receiver still on it,
    within the 24 h it was promised, refused every delivery. Every secret rotated out in the
    last 24 h signs, the newest 5 of them."""
    setup = await _subscribed(client, partner)
    path = f"/api/v1/subscriptions/{setup['subscription']['id']}/rotate-secret"
    secrets = [setup["subscription"]["secret"]]
    for _ in range(2):
        secrets.append((await post(client, path, {}, status=200))["secret"])
    vehicle = await create_vehicle(client)
    await _odometer(client, vehicle, 5)
    await _deliver(client, worker)
    for _ in range(5):
        secrets.append((await post(client, path, {}, status=200))["secret"])
    await _odometer(client, vehicle, 6)
    await _deliver(client, worker)

    twice, bounded = partner.requests
    assert len(twice.headers["webhook-signature"].split()) == 3
    for secret in secrets[:3]:
        verify([secret], twice.headers, twice.body, now=time.time())
    assert len(bounded.headers["webhook-signature"].split()) == 6
    for secret in secrets[-6:]:  # the current one and the 5 rotated out last
        verify([secret], bounded.headers, bounded.body, now=time.time())
    with pytest.raises(Exception, match="signature"):
        verify(secrets[:2], bounded.headers, bounded.body, now=time.time())


async def test_a_secret_rotated_by_the_subscription_id_in_upper_case_signs(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """It was sealed to the URL's spelling of the id and opened with the stored one: every
    delivery of the subscription then failed."""
    setup = await _subscribed(client, partner)
    path = f"/api/v1/subscriptions/{setup['subscription']['id'].upper()}/rotate-secret"
    new = (await post(client, path, {}, status=200))["secret"]
    vehicle = await create_vehicle(client)
    await _odometer(client, vehicle, 5)
    assert await _deliver(client, worker) == Counter(succeeded=1)
    [sent] = partner.requests
    verify([new], sent.headers, sent.body, now=time.time())


async def test_ordered_action_never_sends_a_later_event_first(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock
) -> None:
    await _subscribed(client, partner, action={"ordered": True})
    vehicle = await create_vehicle(client)
    partner.respond_with(503, {}, times=2)
    await _odometer(client, vehicle, 100)
    await _odometer(client, vehicle, 200)

    first = await _deliver(client, worker)
    clock.advance(6)
    second = await worker.run_until_idle()

    sent = [r.json()["data"]["odometer_km"] for r in partner.requests]
    assert sent == [100, 100, 100, 200]
    assert first == Counter(retry=2, waiting=1)
    assert second == Counter(succeeded=2)


async def test_an_action_made_ordered_sends_a_new_delivery_after_the_pending_ones(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock
) -> None:
    """Mileage arrived out of order, so the admin made the action ordered: the next update's
    delivery went before the one still waiting for its retry, and the ERP kept 100."""
    setup = await _subscribed(client, partner, action={"retry_schedule": [5, 5]})
    vehicle = await create_vehicle(client)
    partner.respond_with(503, {}, times=1)
    await _odometer(client, vehicle, 100)
    assert await _deliver(client, worker) == Counter(retry=1)

    made = await client.patch(
        f"/api/v1/actions/{setup['action']['id']}", headers=auth(), json={"ordered": True}
    )
    assert made.status == 200, await made.text()
    await _odometer(client, vehicle, 200)
    first = await _deliver(client, worker)
    clock.advance(6)
    second = await worker.run_until_idle()

    sent = [r.json()["data"]["odometer_km"] for r in partner.requests]
    assert sent == [100, 100, 200]
    assert (first, second) == (Counter(waiting=1), Counter(succeeded=2))


async def test_a_delivery_in_flight_when_its_action_is_made_ordered_wakes_the_next_when_it_ends(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """Placed while in flight, it ended by its worker's claimed copy, which had no place in
    the line: the next delivery parked behind it waited out the head's lease."""
    setup = await _subscribed(client, partner)
    vehicle = await create_vehicle(client)
    relay = client.app[services_key].relay
    partner.respond_with(400, {"erro": "placa"}, times=1, delay=30)
    await _odometer(client, vehicle, 100)
    await relay.run_until_idle()
    first = asyncio.create_task(worker.run_until_idle())
    await partner.wait_for(1)
    url = f"/api/v1/actions/{setup['action']['id']}"
    assert (await client.patch(url, headers=auth(), json={"ordered": True})).status == 200
    await _odometer(client, vehicle, 200)
    await relay.run_until_idle()
    assert await worker.run_until_idle() == Counter(waiting=1)

    partner.release.set()
    ended = await first + await worker.run_until_idle()
    assert ended == Counter(failed=1, succeeded=1)
    assert [r.json()["data"]["odometer_km"] for r in partner.requests] == [100, 200]


async def test_an_action_made_ordered_by_a_patch_retried_after_a_fault_places_the_pending_ones(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock
) -> None:
    """The PATCH stored `ordered` and met a fault placing the open deliveries (503); its
    retry saw the action ordered already and placed nothing: the 200 went before the 100."""
    setup = await _subscribed(client, partner, action={"retry_schedule": [5, 5]})
    vehicle = await create_vehicle(client)
    partner.respond_with(503, {}, times=1)
    await _odometer(client, vehicle, 100)
    assert await _deliver(client, worker) == Counter(retry=1)
    deliveries = client.app[services_key].store.deliveries
    unplaced, calls = deliveries.unplaced, []

    async def faulty_once(*args: Any) -> list[dict[str, Any]]:
        calls.append(args)
        if len(calls) == 1:
            raise StoreUnavailable("operation exceeded time limit", deadline=True)
        return await unplaced(*args)

    deliveries.unplaced = faulty_once  # type: ignore[method-assign]
    url = f"/api/v1/actions/{setup['action']['id']}"
    assert (await client.patch(url, headers=auth(), json={"ordered": True})).status == 503
    made = await client.patch(url, headers=auth(), json={"ordered": True})
    assert made.status == 200, await made.text()
    await _odometer(client, vehicle, 200)
    await _deliver(client, worker)
    clock.advance(6)
    await worker.run_until_idle()

    assert [r.json()["data"]["odometer_km"] for r in partner.requests] == [100, 100, 200]


@pytest.mark.parametrize("how", ["deleted", "disabled"])
async def test_a_removed_subscription_s_pending_delivery_no_longer_holds_the_line(
    client: Client, partner: Partner, worker: DeliveryWorker, how: str
) -> None:
    """Two subscriptions on one ordered action: the first's delivery waits 10 h for its
    retry, the second's waits behind it. Deleting or disabling the first (its delivery can
    never be sent) fails that delivery now, and the second's goes."""
    setup = await _subscribed(client, partner, action={"ordered": True, "retry_schedule": [36000]})
    second = await create_subscription(client, setup["action"]["id"])
    vehicle = await create_vehicle(client)
    partner.respond_with(503, {}, times=1)
    await _odometer(client, vehicle, 100)
    assert await _deliver(client, worker) == Counter(retry=1, waiting=1)

    url = f"/api/v1/subscriptions/{setup['subscription']['id']}"
    if how == "deleted":
        removed = await client.delete(url, headers=auth())
    else:
        removed = await client.patch(url, headers=auth(), json={"status": "disabled"})
    assert removed.status in (200, 204), await removed.text()
    assert await worker.run_until_idle() == Counter(succeeded=1)

    items = {d["subscription_id"]: d for d in await _deliveries(client)}
    gone = items[setup["subscription"]["id"]]
    reason = "the subscription was deleted" if how == "deleted" else "the subscription is disabled"
    assert (gone["status"], gone["last_error"]) == ("failed", reason)
    assert items[second["id"]]["status"] == "succeeded"


@pytest.mark.parametrize("how", ["deleted", "disabled"])
async def test_deliveries_a_removed_subscription_fails_are_counted_as_failed(
    client: Client, partner: Partner, worker: DeliveryWorker, how: str
) -> None:
    """The admin's removal failed the waiting delivery without counting it: the created
    deliveries no longer added up to their outcomes."""
    setup = await _subscribed(client, partner, action={"retry_schedule": [36000]})
    partner.respond_with(503, {}, times=1)
    await _odometer(client, await create_vehicle(client), 100)
    assert await _deliver(client, worker) == Counter(retry=1)

    url = f"/api/v1/subscriptions/{setup['subscription']['id']}"
    if how == "deleted":
        removed = await client.delete(url, headers=auth())
    else:
        removed = await client.patch(url, headers=auth(), json={"status": "disabled"})
    assert removed.status in (200, 204), await removed.text()

    text = await (await client.get("/metrics")).text()
    assert 'gateway_deliveries_total{outcome="failed"} 1.0' in text


async def test_a_delete_retried_after_a_fault_fails_the_deliveries_the_first_left_pending(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """The DELETE deleted, then met a fault failing the pending deliveries (503); its retry
    was a 404, and the other subscription's delivery waited 10 h behind one never sent."""
    setup = await _subscribed(client, partner, action={"ordered": True, "retry_schedule": [36000]})
    second = await create_subscription(client, setup["action"]["id"])
    partner.respond_with(503, {}, times=1)
    await _odometer(client, await create_vehicle(client), 100)
    assert await _deliver(client, worker) == Counter(retry=1, waiting=1)
    deliveries = client.app[services_key].store.deliveries
    fail_unsendable, calls = deliveries.fail_unsendable, []

    async def faulty_once(*args: Any) -> int:
        calls.append(args)
        if len(calls) == 1:
            raise StoreUnavailable("operation exceeded time limit", deadline=True)
        return await fail_unsendable(*args)

    deliveries.fail_unsendable = faulty_once  # type: ignore[method-assign]
    url = f"/api/v1/subscriptions/{setup['subscription']['id']}"
    assert (await client.delete(url, headers=auth())).status == 503
    assert (await client.delete(url, headers=auth())).status == 204
    assert (await client.get(url, headers=auth())).status == 404
    assert await worker.run_until_idle() == Counter(succeeded=1)

    items = {d["subscription_id"]: d for d in await _deliveries(client)}
    gone = items[setup["subscription"]["id"]]
    assert (gone["status"], gone["last_error"]) == ("failed", "the subscription was deleted")
    assert items[second["id"]]["status"] == "succeeded"


@pytest.mark.parametrize("how", ["deleted", "disabled"])
async def test_a_subscription_removed_while_its_delivery_is_in_flight_fails_it_on_a_retry(
    client: Client, partner: Partner, worker: DeliveryWorker, how: str
) -> None:
    """The removal fails the pending deliveries; the one in flight then got a 503 and went
    back to pending for its 10 h retry, the other subscription's delivery parked behind it."""
    setup = await _subscribed(client, partner, action={"ordered": True, "retry_schedule": [36000]})
    second = await create_subscription(client, setup["action"]["id"])
    partner.respond_with(503, {}, times=1, delay=30)
    await _odometer(client, await create_vehicle(client), 100)
    await client.app[services_key].relay.run_until_idle()
    running = asyncio.create_task(worker.run_until_idle())
    await partner.wait_for(1)

    url = f"/api/v1/subscriptions/{setup['subscription']['id']}"
    if how == "deleted":
        removed = await client.delete(url, headers=auth())
    else:
        removed = await client.patch(url, headers=auth(), json={"status": "disabled"})
    assert removed.status in (200, 204), await removed.text()
    partner.release.set()
    await running
    await worker.run_until_idle()

    items = {d["subscription_id"]: d for d in await _deliveries(client)}
    gone = items[setup["subscription"]["id"]]
    reason = "the subscription was deleted" if how == "deleted" else "the subscription is disabled"
    assert (gone["status"], gone["last_error"]) == ("failed", reason)
    assert items[second["id"]]["status"] == "succeeded"


async def test_attempts_after_a_replay_go_on_numbering_and_counting(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """A replay restarts the schedule: the attempts after it were numbered 1 again (`n` 1, 1,
    1 for three requests) and the list said `attempt_count: 1`."""
    await _subscribed(client, partner)
    partner.respond_with(400, {"erro": "placa"})
    await _odometer(client, await create_vehicle(client), 3)
    await _deliver(client, worker)
    [listed] = await _deliveries(client)
    for _ in range(2):
        await post(client, f"/api/v1/deliveries/{listed['id']}/replay", {}, status=200)
        await worker.run_until_idle()

    delivery = await _delivery(client, listed["id"])
    [relisted] = await _deliveries(client)
    assert len(partner.requests) == 3
    assert [a["n"] for a in delivery["attempts"]] == [1, 2, 3]
    assert delivery["attempt_count"] == relisted["attempt_count"] == 3


async def test_replay_by_filter_counts_what_it_replayed(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    setup = await _subscribed(client, partner)
    partner.respond_with(400, {})
    for plate in ("ABC1D23", "BRA2E19"):
        await _odometer(client, await create_vehicle(client, plate), 1)
    await _deliver(client, worker)
    partner.respond_with(200, {})

    replayed = await post(
        client,
        "/api/v1/deliveries/replay",
        {"partner_id": setup["partner"]["id"], "status": "failed"},
        status=200,
    )
    counts = await worker.run_until_idle()

    assert replayed == {"replayed": 2}
    assert counts == Counter(succeeded=2)


async def test_deliveries_list_is_paginated_and_filtered(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    await _subscribed(client, partner, event_types=("entity.created",))
    vehicles = [await create_vehicle(client, plate) for plate in ("ABC1D23", "BRA2E19", "XYZ9A88")]
    await _deliver(client, worker)

    first = await (await client.get("/api/v1/deliveries?limit=2", headers=auth())).json()
    rest = await (
        await client.get(
            f"/api/v1/deliveries?limit=2&cursor={first['next_cursor']}", headers=auth()
        )
    ).json()
    one = await _deliveries(client, entity_id=vehicles[1]["id"])
    other_tenant = await client.get("/api/v1/deliveries", headers=auth("globex"))
    bad = await client.get("/api/v1/deliveries?status=lost", headers=auth())

    assert len(first["items"]) == 2 and len(rest["items"]) == 1
    assert rest["next_cursor"] is None
    assert [d["entity"]["id"] for d in one] == [vehicles[1]["id"]]
    assert (await other_tenant.json())["items"] == []
    assert bad.status == 400


async def test_metrics_count_outcomes_latency_and_queue(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    setup = await _subscribed(client, partner, event_types=("entity.created",))
    await create_vehicle(client)
    await _deliver(client, worker)
    await worker.housekeeping()

    text = await (await client.get("/metrics")).text()

    pid = setup["partner"]["id"]
    assert 'gateway_deliveries_total{outcome="succeeded"} 1.0' in text
    assert 'gateway_deliveries_total{outcome="created"} 1.0' in text
    assert (
        f'gateway_partner_requests_total{{mode="deliver",partner="{pid}",result="success"}} 1.0'
    ) in text
    assert (
        f'gateway_partner_request_duration_seconds_count{{mode="deliver",partner="{pid}"}}' in text
    )
    assert 'gateway_delivery_queue_depth{status="pending"} 0.0' in text
    assert "gateway_delivery_oldest_due_age_seconds 0.0" in text
    assert "s3cr3t" not in text


async def test_ordered_deliveries_follow_the_entity_revision_not_the_event_id(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """Two processes writing one vehicle in the same second make event ids that do not sort
    by time; the entity revision does."""
    from datetime import UTC, datetime

    from bson import ObjectId

    await _subscribed(client, partner, action={"ordered": True})
    vehicle = await create_vehicle(client)
    await client.app[services_key].relay.run_until_idle()
    later_id, earlier_id = ObjectId(), ObjectId()  # the later write gets the smaller id

    def entry(event_id: ObjectId, rev: int, km: int) -> dict[str, Any]:
        return {
            "id": event_id,
            "type": "entity.updated",
            "occurred_at": datetime.now(UTC),
            "entity_type": "vehicle",
            "data": {"plate": vehicle["plate"], "odometer_km": km},
            "changes": [],
            "origin": {"kind": "trigger", "id": "t"},
            "entity_rev": rev,
            "position": 0,
        }

    await (
        client.app[services_key]
        .store.db["entities"]
        .update_one(
            {"_id": ObjectId(vehicle["id"])},
            {
                "$set": {"pending": True, "pending_shard": 0},
                "$push": {
                    "outbox": {"$each": [entry(later_id, 3, 200), entry(earlier_id, 2, 100)]}
                },
            },
        )
    )
    await _deliver(client, worker)
    sent = [r.json()["data"]["odometer_km"] for r in partner.requests]
    assert sent == [100, 200]


async def test_a_rotated_out_secret_past_its_grace_is_not_opened_once_its_key_is_dropped(
    client: Client,
    partner: Partner,
    aiohttp_client: Any,
    make_app: Callable[..., web.Application],
) -> None:
    """docs/security.md's key rotation: rotate the subscription's secret under `new,old`, let
    the grace pass, drop the old key. The previous secret, sealed under the old key, stays in
    the subscription until the next rotation: it must not be needed any more."""
    setup = await _subscribed(client, partner)  # its secret sealed under the old key
    subscription_id = setup["subscription"]["id"]
    both = await aiohttp_client(make_app(secret_key=Secret(f"{NEW_KEY},{SECRET_KEY}")))
    path = f"/api/v1/subscriptions/{subscription_id}/rotate-secret"
    rotated = await post(both, path, {}, status=200)
    partner_path = f"/api/v1/partners/{setup['partner']['id']}"
    resealed = await both.patch(partner_path, headers=auth(), json={"auth": BEARER})
    assert resealed.status == 200, await resealed.text()  # step 2 for the partner
    # and for the action's signing secret (a secret still under the old key refuses the
    # start on the new key alone: tests/test_key_list_restore.py)
    actions = client.app[services_key].store.db["actions"]
    action = await actions.find_one({})
    assert action is not None
    box = both.app[services_key].box
    renewed = [{**s, "sealed": box.rotate(s["sealed"])} for s in action["signing"]["secrets"]]
    await actions.update_one({"_id": action["_id"]}, {"$set": {"signing.secrets": renewed}})
    subscriptions = client.app[services_key].store.db["subscriptions"]
    await subscriptions.update_one(  # the grace (24 h) has passed
        {"_id": ObjectId(subscription_id)},
        {"$set": {"secrets.1.expires_at": datetime.now(UTC) - timedelta(seconds=1)}},
    )
    vehicle = await create_vehicle(both)
    await _odometer(both, vehicle, 7)

    dropped = await aiohttp_client(make_app(secret_key=Secret(NEW_KEY)))
    counts = await _deliver(dropped, dropped.app[services_key].delivery_worker)

    assert counts == Counter(succeeded=1)
    [sent] = partner.requests
    verify([rotated["secret"]], sent.headers, sent.body, now=time.time())


@pytest.mark.parametrize("change", ["disable", "delete"])
async def test_a_pending_delivery_of_a_subscription_disabled_or_deleted_meanwhile_is_not_sent(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock, change: str
) -> None:
    setup = await _subscribed(client, partner)
    vehicle = await create_vehicle(client)
    partner.respond_with(500, {}, times=2)
    await _odometer(client, vehicle, 5)
    assert await _deliver(client, worker) == Counter(retry=2)  # at once, then 5 s

    path = f"/api/v1/subscriptions/{setup['subscription']['id']}"
    if change == "disable":
        response = await client.patch(path, headers=auth(), json={"status": "disabled"})
    else:
        response = await client.delete(path, headers=auth())
    assert response.status in (200, 204), await response.text()
    clock.advance(5.1)
    then = await worker.run_until_idle()

    [delivery] = await _deliveries(client)
    # Failed by the change itself: nothing left for the worker, no third send.
    assert then == Counter() and len(partner.requests) == 2
    assert delivery["status"] == "failed"
    reason = "disabled" if change == "disable" else "deleted"
    assert reason in delivery["last_error"]


async def test_deliveries_wait_out_a_busy_token_endpoints_retry_after_without_failing(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock
) -> None:
    """The token endpoint's 429 + Retry-After was not honoured: the next delivery asked it
    again at once, and every attempt spent one of the schedule's."""
    oauth = {
        "type": "oauth2_client_credentials",
        "token_url": f"{partner.url}/oauth/token",
        "client_id": "gw",
        "client_secret": "cl1ent-s3cret",
    }
    await _subscribed(client, partner, partner_fields={"auth": oauth}, event_types=["*"])
    partner.respond_with(429, {"error": "slow_down"}, headers={"Retry-After": "120"}, times=1)
    await create_vehicle(client, "ABC1D23")
    await create_vehicle(client, "BRA2E19")

    counts = await _deliver(client, worker)

    assert counts == Counter(retry=1, deferred=1)
    assert partner.paths() == ["/oauth/token"]
    items = await _deliveries(client)
    assert {d["status"] for d in items} == {"pending"}
    assert sorted(d["attempt_count"] for d in items) == [0, 1]
    for item in items:
        due = datetime.fromisoformat(item["next_attempt_at"])
        assert due >= clock.now + timedelta(seconds=110)
    waiting = next(d for d in items if d["attempt_count"] == 0)
    assert "asked to wait" in waiting["last_error"]
    clock.advance(100)
    assert await worker.run_until_idle() == Counter()


async def test_a_geotab_deliverys_signature_covers_the_body_sent_with_its_session(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """Geotab's session went into `params.credentials` after the body was signed: the
    partner got a body its webhook-signature did not cover, and every check failed."""
    geotab = {
        "type": "geotab",
        "url": f"{partner.url}/apiv1",
        "database": "frota",
        "username": "api@frota",
        "password": "g30tab-pw",
    }
    session = {"database": "frota", "userName": "api@frota", "sessionId": "sess-1"}
    setup = await _subscribed(
        client, partner, partner_fields={"auth": geotab}, action={"path": "/apiv1"}
    )
    partner.respond_with(200, {"result": "ok"})
    partner.respond_with(200, {"result": {"credentials": session, "path": "ThisServer"}}, times=1)
    vehicle = await create_vehicle(client)
    await _odometer(client, vehicle, 10)

    counts = await _deliver(client, worker)

    assert counts == Counter(succeeded=1)
    sent = next(r for r in partner.requests if r.webhook_id)
    assert sent.json()["params"]["credentials"] == session
    secret = setup["subscription"]["secret"]
    assert verify([secret], sent.headers, sent.body, now=time.time()) == sent.webhook_id


async def test_a_partner_answering_204_with_a_body_is_delivered_once(
    client: Client, worker: DeliveryWorker, clock: FakeClock
) -> None:
    """aiohttp refused a 204 with a body whole, its status lost: the partner had taken the
    delivery and got it again, on the action's schedule. The answer ends with its head
    (docs/outbound.md): the delivery succeeded, at its first attempt, status 204."""
    heads: list[bytes] = []
    reply = b"HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\nnull"
    async with raw_partner(reply, heads) as url:
        partner_doc = await create_partner(client, url.removesuffix("/hook"))
        action_doc = await create_action(client, partner_doc["id"])
        await create_subscription(client, action_doc["id"])
        vehicle = await create_vehicle(client)
        await _odometer(client, vehicle, 5)
        assert await _deliver(client, worker) == Counter(succeeded=1)
        clock.advance(3600)
        assert await worker.run_until_idle() == Counter()  # nothing left to send
    assert len(heads) == 1 and heads[0].startswith(b"POST /hooks ")  # the action's path
    [delivery] = await _deliveries(client)
    shown = await _delivery(client, delivery["id"])
    assert shown["status"] == "succeeded" and len(shown["attempts"]) == 1
    [attempt] = shown["attempts"]
    assert (attempt["status"], attempt["error"]) == (204, None)
    assert attempt["message"] == "a 204 announcing a 4-byte body; the body was not read"


@pytest.mark.parametrize(
    ("status", "outcome"), [(200, "succeeded"), (400, "failed")], ids=["200", "400"]
)
async def test_a_partner_answering_with_a_malformed_chunked_body_is_sent_once(
    client: Client, worker: DeliveryWorker, clock: FakeClock, status: int, outcome: str
) -> None:
    """`Transfer-Encoding: chunked` on a body that is not chunked, in the packet of the head:
    the status was lost (`invalid_response`), a 200 the partner took sent again on the
    whole schedule, a 400 retried, each a failure of the partner. The status decides: sent
    once, the body said unusable."""
    heads: list[bytes] = []
    reply = (
        b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'{"ok":true}' % status
    )
    async with raw_partner(reply, heads) as url:
        partner_doc = await create_partner(client, url.removesuffix("/hook"))
        action_doc = await create_action(client, partner_doc["id"])
        await create_subscription(client, action_doc["id"])
        vehicle = await create_vehicle(client)
        await _odometer(client, vehicle, 5)
        assert await _deliver(client, worker) == Counter({outcome: 1})
        clock.advance(3600)
        assert await worker.run_until_idle() == Counter()  # nothing left to send
    assert len(heads) == 1
    [delivery] = await _deliveries(client)
    shown = await _delivery(client, delivery["id"])
    assert (shown["status"], shown["last_status"]) == (outcome, status)
    [attempt] = shown["attempts"]
    assert (attempt["status"], attempt["error"]) == (status, "invalid_response")


@pytest.mark.parametrize(
    "fields",
    [
        b"Content-Length: 11\r\nContent-Length: 11\r\n",
        b"Transfer-Encoding: identity\r\nContent-Length: 11\r\n",
        b"Content-Length: 11, 12\r\n",
    ],
    ids=["length-twice", "identity-coding-and-length", "lengths-that-differ"],
)
async def test_a_200_with_odd_framing_is_delivered_once(
    client: Client, worker: DeliveryWorker, clock: FakeClock, fields: bytes
) -> None:
    """Framing RFC 9110/9112 tell a client to read (a list of identical lengths, a length
    beside a `Transfer-Encoding` that is not chunked) was refused whole, the 200 lost: the
    partner got the delivery again on the action's schedule. Lengths that differ stay
    refused, and the status decides too."""
    heads: list[bytes] = []
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + fields
    async with raw_partner(reply + b'\r\n{"ok":true}', heads) as url:
        partner_doc = await create_partner(client, url.removesuffix("/hook"))
        action_doc = await create_action(client, partner_doc["id"])
        await create_subscription(client, action_doc["id"])
        vehicle = await create_vehicle(client)
        await _odometer(client, vehicle, 5)
        assert await _deliver(client, worker) == Counter(succeeded=1)
        clock.advance(3600)
        assert await worker.run_until_idle() == Counter()  # nothing left to send
    assert len(heads) == 1
    [delivery] = await _deliveries(client)
    shown = await _delivery(client, delivery["id"])
    [attempt] = shown["attempts"]
    assert attempt["status"] == 200


@pytest.mark.parametrize(
    "line",
    [b"HTTP/1.1 0200 OK", b"HTTP/1.1 123456789012345678901234567890 OK"],
    ids=["leading-zero", "thirty-digits"],
)
async def test_a_garbled_status_line_is_retried_not_delivered_nor_parked(
    client: Client, worker: DeliveryWorker, clock: FakeClock, line: bytes
) -> None:
    """A status line the parser refuses has no status: `0200` was recorded a delivered 200,
    30 digits a status no database holds, the delivery parked with an ERROR."""
    reply = line + b'\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
    async with raw_partner(reply) as url:
        partner_doc = await create_partner(client, url.removesuffix("/hook"))
        action_doc = await create_action(client, partner_doc["id"])
        await create_subscription(client, action_doc["id"])
        vehicle = await create_vehicle(client)
        await _odometer(client, vehicle, 5)
        # the first attempt, and the immediate retry
        assert await _deliver(client, worker) == Counter(retry=2)
    [delivery] = await _deliveries(client)
    shown = await _delivery(client, delivery["id"])
    assert delivery["status"] == "pending"
    assert [(a.get("status"), a["error"]) for a in shown["attempts"]] == [
        (None, "invalid_response")
    ] * 2


OTHER_KEY = "another-secret-key-of-another-host-0000000"


async def test_a_process_whose_key_opens_nothing_the_database_holds_does_not_start(
    client: Client, settings: Settings, mongodb_uri: str
) -> None:
    """A process started with another GATEWAY_SECRET_KEY was ready, and parked every signed
    delivery for good: now the key check the first process sealed refuses it at start."""

    async def start(key: str) -> None:
        async with open_services(
            replace(settings, secret_key=Secret(key)), mongodb_uri=mongodb_uri
        ):
            pass

    with pytest.raises(ConfigError, match="GATEWAY_SECRET_KEY: none of its keys opens"):
        await start(OTHER_KEY)
    # Rotating: `<new>,<old>` opens it, and seals it again under the new key; then the new
    # key alone starts, and the old one alone no longer does.
    await start(f"{NEW_KEY},{SECRET_KEY}")
    await start(NEW_KEY)
    with pytest.raises(ConfigError, match="GATEWAY_SECRET_KEY"):
        await start(SECRET_KEY)


async def test_a_wrong_key_first_to_start_after_the_upgrade_is_refused_not_trusted(
    client: Client, settings: Settings, mongodb_uri: str
) -> None:
    """A gateway upgraded from a version without the key check holds secrets but no check:
    the first process to start seals it only with a key that opens a stored secret. One with
    another key is refused and seals nothing, and the correctly keyed processes start."""
    store = client.app[services_key].store
    sealed = SecretBox(KeyRing.from_secret(SECRET_KEY)).seal({"token": "x"})
    await store.db["partners"].insert_one({"_id": "p1", "tenant": "t1", "auth_sealed": sealed})
    await store.db["meta"].delete_one({"_id": "secret_key"})

    async def start(key: str) -> None:
        async with open_services(
            replace(settings, secret_key=Secret(key)), mongodb_uri=mongodb_uri
        ):
            pass

    with pytest.raises(ConfigError, match="GATEWAY_SECRET_KEY: none of its keys opens the sec"):
        await start(OTHER_KEY)
    assert await store.db["meta"].find_one({"_id": "secret_key"}) is None
    await start(SECRET_KEY)  # seals the check under the key of the stored secrets
    with pytest.raises(ConfigError, match="GATEWAY_SECRET_KEY: none of its keys opens the key"):
        await start(OTHER_KEY)


async def test_two_processes_starting_at_once_with_different_new_keys_do_not_both_start(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling restart starts two processes at once, each given `<new>,<old>` with a new
    key of its own (generated per host): both read the check under the old key before
    either seals it again. Only one re-seal lands (a compare-and-set); the other process
    reads the check again, finds it under a key it lacks, and does not start: a started
    process always holds a key that opens the check."""
    store = client.app[services_key].store
    read = store.key_check.sealed
    reads: list[str | None] = []
    both_read = asyncio.Event()

    async def read_in_step() -> str | None:
        value = await read()
        reads.append(value)
        if len(reads) == 2:
            both_read.set()
        await asyncio.wait_for(both_read.wait(), 5)
        return value

    monkeypatch.setattr(store.key_check, "sealed", read_in_step)
    boxes = [SecretBox(KeyRing([new, SECRET_KEY])) for new in (NEW_KEY, OTHER_KEY)]
    results = await asyncio.gather(
        *(check_secret_key(store, box) for box in boxes), return_exceptions=True
    )
    [started] = [box for box, result in zip(boxes, results, strict=True) if result is None]
    [refused] = [result for result in results if result is not None]
    assert isinstance(refused, ConfigError), refused
    monkeypatch.setattr(store.key_check, "sealed", read)
    assert await key_still_opens(store, started)


async def test_a_secret_that_does_not_open_hands_the_delivery_back_instead_of_parking_it(
    client: Client,
    partner: Partner,
    worker: DeliveryWorker,
    clock: FakeClock,
    aiohttp_client: Any,
    make_app: Callable[..., web.Application],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The gateway's other processes were given `OTHER_KEY,SECRET_KEY` (a rotation), this
    one only SECRET_KEY: starting, they sealed the key check under OTHER_KEY, and a
    subscription's secret too. Its key no longer opening the check, the secret that does not
    open is a configuration error of this process, not the delivery's: handed back pending
    (counted, logged once), it goes out from a process with the key."""
    setup = await _subscribed(client, partner)
    services = client.app[services_key]
    rotated = SecretBox(KeyRing([OTHER_KEY, SECRET_KEY]))
    check = await services.store.key_check.sealed()
    assert check is not None
    await services.store.key_check.replace(check, rotated.rotate(check))
    subscriptions = services.store.db["subscriptions"]
    [stored] = (await subscriptions.find_one({"_id": ObjectId(setup["subscription"]["id"])}))[
        "secrets"
    ]
    other = rotated.rotate(stored["sealed"])
    await subscriptions.update_one(
        {"_id": ObjectId(setup["subscription"]["id"])}, {"$set": {"secrets.0.sealed": other}}
    )
    vehicle = await create_vehicle(client)
    await _odometer(client, vehicle, 5)

    with caplog.at_level(logging.ERROR, logger="gateway.delivery.worker"):
        assert await _deliver(client, worker) == Counter(key_refused=1)
        clock.advance(60)
        assert await worker.run_until_idle() == Counter(key_refused=1)
    refused = [r for r in caplog.records if "configuration error" in r.getMessage()]
    assert len(refused) == 1 and "GATEWAY_SECRET_KEY" in refused[0].getMessage()
    assert partner.requests == []
    deliveries = await _deliveries(client)
    assert [d["status"] for d in deliveries] == ["pending"]
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_deliveries_total{outcome="key_refused"} 2.0' in metrics

    keyed = await aiohttp_client(make_app(secret_key=Secret(f"{SECRET_KEY},{OTHER_KEY}")))
    keyed_worker = keyed.app[services_key].delivery_worker
    keyed_worker.clock = lambda: clock() + timedelta(seconds=600)
    assert await keyed_worker.run_until_idle() == Counter(succeeded=1)
    assert len(partner.requests) == 1


async def test_a_secret_sealed_under_a_key_the_gateway_lacks_says_so_not_save_it_again(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """This process's key opens the key check, a subscription's signing secret is sealed
    under a key it does not hold (a backup restored without the key list of its time): the
    failure names the key list and `gateway reseal`, and saving the secret again (a new
    secret the partner does not have) only as the last resort. It said "save the secret
    again" alone."""
    setup = await _subscribed(client, partner)
    services = client.app[services_key]
    subscriptions = services.store.db["subscriptions"]
    sid = ObjectId(setup["subscription"]["id"])
    [stored] = (await subscriptions.find_one({"_id": sid}))["secrets"]
    elsewhere = SecretBox(KeyRing([OTHER_KEY, SECRET_KEY])).rotate(stored["sealed"])
    await subscriptions.update_one({"_id": sid}, {"$set": {"secrets.0.sealed": elsewhere}})
    await _odometer(client, await create_vehicle(client), 5)

    assert await _deliver(client, worker) == Counter(secret_damaged=1)
    [failed] = await _deliveries(client, status="failed")
    error = failed["last_error"]
    assert "sealed under a key the gateway does not have" in error
    assert f"(ids {services.box.kids[0]})" in error
    assert "start with that list, e.g. `<new>,<old>`, then run `gateway reseal`" in error
    assert error.endswith(
        "only if no key opens it (saved again, a subscription's is a new secret its partner "
        "must be given), save the secret again, then replay the delivery"
    )


async def test_a_damaged_partner_secret_fails_its_delivery_naming_it_and_the_queue_goes_on(
    client: Client,
    partner: Partner,
    worker: DeliveryWorker,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """This process's key opens the key check, and a partner's stored credentials open under
    no key (their sealed bytes altered): no process can send its deliveries, and no wait
    mends it. Such a delivery is failed at once naming the partner and which secret (never
    its value), logged at ERROR once, counted; another partner's delivery goes out. Until
    2026-12-06 it was handed back as `key_refused` for ever, and nobody was told."""
    damaged = await _subscribed(client, partner)
    async with running_partner() as healthy:
        await _subscribed(client, healthy, partner_fields={"name": "CRM"})
        partners = client.app[services_key].store.db["partners"]
        pid = damaged["partner"]["id"]
        sealed = (await partners.find_one({"_id": ObjectId(pid)}))["auth_sealed"]
        altered = sealed[:60] + ("B" if sealed[60] == "A" else "A") + sealed[61:]
        await partners.update_one({"_id": ObjectId(pid)}, {"$set": {"auth_sealed": altered}})
        vehicle = await create_vehicle(client)
        await _odometer(client, vehicle, 5)

        with caplog.at_level(logging.ERROR, logger="gateway.keys"):
            assert await _deliver(client, worker) == Counter(secret_damaged=1, succeeded=1)
            await _odometer(client, vehicle, 6)
            assert await _deliver(client, worker) == Counter(secret_damaged=1, succeeded=1)
            clock.advance(3600)
            assert await worker.run_until_idle() == Counter()  # nothing handed back

        assert partner.requests == [] and len(healthy.requests) == 2
    failed = await _deliveries(client, status="failed")
    assert len(failed) == 2
    for each in failed:
        error = each["last_error"]
        assert error.startswith(f"stored secret damaged: partner 'ERP' ({pid}): its stored ")
        assert "credentials (`auth`)" in error and "save the secret again" in error
        assert "s3cr3t" not in error
    logged = [r for r in caplog.records if "stored secret damaged" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
    assert pid in logged[0].getMessage() and "s3cr3t" not in logged[0].getMessage()
    metrics = await (await client.get("/metrics")).text()
    assert f'gateway_damaged_secrets_total{{secret="partner:{pid}:auth"}} 2.0' in metrics
    assert 'outcome="key_refused"' not in metrics


async def test_a_disabled_partners_damaged_secret_fails_its_backlog_at_its_probe(
    client: Client, partner: Partner, worker: DeliveryWorker, caplog: pytest.LogCaptureFixture
) -> None:
    """A partner disabled after failing, whose deliveries only its probe reaches, and whose
    stored credentials are then found damaged: the probe fails its backlog, named, logged
    and counted, and housekeeping goes on (its probe raised, every round, and the
    deliveries stayed pending for ever)."""
    setup = await _subscribed(client, partner)
    services = client.app[services_key]
    partners = services.store.db["partners"]
    pid = setup["partner"]["id"]
    vehicle = await create_vehicle(client)
    await _odometer(client, vehicle, 5)
    await _odometer(client, vehicle, 6)
    await services.relay.run_until_idle()
    now = worker.clock()
    sealed = (await partners.find_one({"_id": ObjectId(pid)}))["auth_sealed"]
    altered = sealed[:60] + ("B" if sealed[60] == "A" else "A") + sealed[61:]
    await partners.update_one(
        {"_id": ObjectId(pid)},
        {
            "$set": {
                "auth_sealed": altered,
                "status": "disabled",
                "disabled_at": now - timedelta(hours=1),
                "failing_since": now - timedelta(hours=80),
                "probe_at": now - timedelta(seconds=1),
            },
            "$inc": {"rev": 1},
        },
    )
    with caplog.at_level(logging.ERROR):
        await worker.housekeeping()
    assert [r for r in caplog.records if "housekeeping failed" in r.getMessage()] == []
    failed = await _deliveries(client, status="failed")
    assert len(failed) == 2 and await _deliveries(client, status="pending") == []
    for each in failed:
        assert each["last_error"].startswith(f"stored secret damaged: partner 'ERP' ({pid})")
    metrics = await (await client.get("/metrics")).text()
    assert f'gateway_damaged_secrets_total{{secret="partner:{pid}:auth"}} 2.0' in metrics, [
        m for m in metrics.splitlines() if "damaged_secrets_total{" in m
    ]
    assert partner.requests == []


async def test_a_damaged_secrets_large_backlog_fails_over_rounds_and_housekeeping_goes_on(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock
) -> None:
    """A disabled partner with a damaged secret and a backlog longer than one round's share:
    its probe fails DAMAGED_PER_ROUND of them, named, and the round goes on at once with the
    rest of housekeeping (another disabled partner's probe re-enables it, the queue gauges
    are measured); the next round fails the rest. Until 2026-12-06 one round failed the
    whole backlog, however long, and lease take-back, the other probes and the gauges
    waited for it."""
    backlog = DAMAGED_PER_ROUND + 7
    setup = await _subscribed(client, partner)
    services = client.app[services_key]
    partners = services.store.db["partners"]
    deliveries = services.store.db["deliveries"]
    pid = setup["partner"]["id"]
    vehicle = await create_vehicle(client)
    for km in range(backlog):
        await _odometer(client, vehicle, km + 1)
    await services.relay.run_until_idle()
    assert await deliveries.count_documents({"status": "pending"}) == backlog
    now = clock()
    sealed = (await partners.find_one({"_id": ObjectId(pid)}))["auth_sealed"]
    altered = sealed[:60] + ("B" if sealed[60] == "A" else "A") + sealed[61:]
    disabled = {
        "status": "disabled",
        "disabled_at": now - timedelta(hours=1),
        "failing_since": now - timedelta(hours=80),
    }
    await partners.update_one(
        {"_id": ObjectId(pid)},
        {
            "$set": {**disabled, "auth_sealed": altered, "probe_at": now - timedelta(seconds=2)},
            "$inc": {"rev": 1},
        },
    )
    async with running_partner() as other:
        other.respond_with(200, {})
        crm = (await _subscribed(client, other, partner_fields={"name": "CRM"}))["partner"]
        await partners.update_one(  # probed after the damaged one
            {"_id": ObjectId(crm["id"])},
            {"$set": {**disabled, "probe_at": now - timedelta(seconds=1)}, "$inc": {"rev": 1}},
        )

        await worker.housekeeping()

        assert await deliveries.count_documents({"status": "failed"}) == DAMAGED_PER_ROUND
        assert (await partners.find_one({"_id": ObjectId(crm["id"])}))["status"] == "active"
        assert [r.method for r in other.requests] == ["HEAD"]
    metrics = await (await client.get("/metrics")).text()
    # Measured: the rest wait for their disabled partner's next probe, not for a worker.
    assert await deliveries.count_documents({"status": "pending"}) == backlog - DAMAGED_PER_ROUND
    assert 'gateway_delivery_queue_depth{status="pending"} 0.0' in metrics

    clock.advance(1)  # the next round
    await worker.housekeeping()
    assert await deliveries.count_documents({"status": "failed"}) == backlog
    async for each in deliveries.find({}):
        assert each["last_error"].startswith(f"stored secret damaged: partner 'ERP' ({pid})")
    assert partner.requests == []
    health = await partners.find_one({"_id": ObjectId(pid)})
    assert health["status"] == "disabled" and health["probe_at"] > clock() + timedelta(seconds=60)


async def test_a_key_found_wrong_once_the_database_answers_runs_no_job_and_seals_nothing(
    client: Client, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process whose database did not answer at start checks its key once it does, and
    starts its background jobs only then: never with a key that opens nothing there. Nor
    does it seal new secrets under that key (the others could not open them): the admin
    API's writes of secrets answer 503 naming GATEWAY_SECRET_KEY, and store nothing."""
    monkeypatch.setattr("gateway.services.INDEX_RETRY_SECONDS", 0.05)
    services = client.app[services_key]
    # the gateway's other processes sealed the key check under another key
    await services.store.db["meta"].delete_one({"_id": "secret_key"})
    await check_secret_key(services.store, SecretBox(KeyRing([OTHER_KEY])))
    services.background.start_once_checked(services, ServerClock(services.store, services.metrics))
    for _ in range(100):
        if services.background.key_refused is not None:
            break
        await asyncio.sleep(0.05)
    assert services.background.jobs == {}
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert "GATEWAY_SECRET_KEY: none of its keys opens" in (await ready.json())["detail"]
    body = {"name": "ERP", "base_url": partner.url, "auth": {"type": "bearer", "token": "x"}}
    refused = await client.post("/api/v1/partners", json=body, headers=auth())
    assert refused.status == 503
    assert refused.content_type == "application/problem+json"
    assert "GATEWAY_SECRET_KEY" in (await refused.json())["detail"]
    assert await services.store.db["partners"].count_documents({}) == 0


async def test_jobs_of_a_process_whose_database_blinked_at_start_wait_for_its_clock(
    settings: Settings, mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first measurement of the database's clock failed (the database down, or a blip
    and the key check right after passed): the background jobs start once the offset is
    measured, never on this host's clock (60 s ahead here: its leases took over the
    others')."""
    monkeypatch.setattr("gateway.services.INDEX_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(host_clock, "host_now", lambda: datetime.now(UTC) + timedelta(seconds=60))
    measure = ServerClock.measure
    failures = [StoreUnavailable("the database does not answer")]

    async def blinking(self: ServerClock) -> None:
        if failures:
            raise failures.pop()
        await measure(self)

    monkeypatch.setattr(ServerClock, "measure", blinking)
    offsets: list[timedelta] = []
    start = Background.start

    def started(self: Background, services: Services) -> None:
        offsets.append(host_clock.offset())
        start(self, services)

    monkeypatch.setattr(Background, "start", started)
    try:
        async with open_services(replace(settings, run_workers=True), mongodb_uri=mongodb_uri):
            for _ in range(100):
                if offsets:
                    break
                await asyncio.sleep(0.05)
        assert len(offsets) == 1 and offsets[0] < timedelta(seconds=-59), offsets
    finally:
        set_offset(timedelta())


def _oauth_to(url: str) -> dict[str, Any]:
    return {
        "type": "oauth2_client_credentials",
        "token_url": f"{url}/oauth/token",
        "client_id": "gw",
        "client_secret": "cl1ent-s3cret",
    }


# One attempt a pass: the default schedule's first retry is immediate (SPEC §5).
ONE_RETRY_IN_5_S = {"retry_schedule": [5]}
ONE_RETRY_LATER = {"retry_schedule": [60]}


async def test_a_token_holding_a_line_break_is_retried_not_cached(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock
) -> None:
    """The token was cached and every call for its lifetime `blocked`: failed at once."""
    await _subscribed(
        client, partner, partner_fields={"auth": _oauth_to(partner.url)}, action=ONE_RETRY_IN_5_S
    )
    line_broken = {"access_token": "dG9rZW4tZm9y\n", "token_type": "Bearer", "expires_in": 3600}
    partner.respond_with(200, line_broken, times=1)
    await _odometer(client, await create_vehicle(client), 5)

    assert await _deliver(client, worker) == Counter(retry=1)
    [pending] = await _deliveries(client)
    assert pending["last_error"].startswith("auth_failed: token endpoint answer's access_token")

    partner.respond_with(200, {"access_token": "dG9rZW4tZm9y", "token_type": "Bearer"}, times=1)
    clock.advance(6)
    assert await worker.run_until_idle() == Counter(succeeded=1)
    assert partner.paths() == ["/oauth/token", "/oauth/token", "/hooks"]
    assert partner.requests[-1].headers["Authorization"] == "Bearer dG9rZW4tZm9y"


async def test_a_token_url_that_redirects_fails_naming_where_it_points(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """Retried for 27 h as `token endpoint answered 301`, the Location never shown."""
    await _subscribed(client, partner, partner_fields={"auth": _oauth_to(partner.url)})
    partner.respond_with(301, raw=b"", headers={"Location": "https://idp.example.com/token"})
    await _odometer(client, await create_vehicle(client), 5)

    assert await _deliver(client, worker) == Counter(failed=1)

    [failed] = await _deliveries(client)
    said = "redirecting to https://idp.example.com/token; redirects are not followed: set the"
    assert said in failed["last_error"]
    assert partner.paths() == ["/oauth/token"]


# A partner's answer alone never parks a delivery: what it writes is recorded as storable
# text, and the status decides.


@pytest.mark.parametrize(("status", "result"), [(503, "retry"), (200, "succeeded")])
async def test_an_answer_in_utf7_with_a_lone_surrogate_is_recorded_by_its_status(
    client: Client, partner: Partner, worker: DeliveryWorker, status: int, result: str
) -> None:
    """`+2AA-` (U+D800 alone) in the attempt's response: BSON refused it and the delivery
    was parked, a 200 included (a replay would send it twice)."""
    await _subscribed(client, partner, action=ONE_RETRY_LATER)
    vehicle = await create_vehicle(client)
    partner.respond_with(
        status, raw=b"erro +2AA- depois", headers={"Content-Type": "text/plain; charset=utf-7"}
    )
    await _odometer(client, vehicle, 5)

    assert await _deliver(client, worker) == Counter({result: 1})

    [delivery] = await _deliveries(client)
    [attempt] = (await _delivery(client, delivery["id"]))["attempts"]
    assert (attempt["status"], attempt["response"]) == (status, "erro \ufffd depois")


@pytest.mark.parametrize(("status", "result"), [(503, "retry"), (200, "succeeded")])
async def test_a_utf16_answer_without_byte_order_mark_cut_in_a_character_keeps_its_status(
    client: Client, partner: Partner, worker: DeliveryWorker, status: int, result: str
) -> None:
    """Its excerpt's decoder raised on the emoji across byte 4096: `blocked`, status null,
    the delivery failed at once (a 503 not retried, a 200 the partner took called failed)."""
    await _subscribed(client, partner, action=ONE_RETRY_LATER)
    vehicle = await create_vehicle(client)
    text = '{"msg": "' + "a" * 2038 + "\U0001f600" + "b" * 3000 + '"}'
    partner.respond_with(
        status,
        raw=text.encode("utf-16-le"),
        headers={"Content-Type": "application/json; charset=utf-16"},
    )
    await _odometer(client, vehicle, 5)

    assert await _deliver(client, worker) == Counter({result: 1})

    [delivery] = await _deliveries(client)
    [attempt] = (await _delivery(client, delivery["id"]))["attempts"]
    assert (attempt["status"], attempt["error"]) == (status, None)


async def test_a_redirect_to_a_location_that_is_not_utf8_fails_naming_it(
    client: Client, worker: DeliveryWorker
) -> None:
    """aiohttp's surrogates for the Latin-1 byte reached BSON: parked."""
    reply = (
        b"HTTP/1.1 302 Found\r\nLocation: http://erp.example.com/relat\xf3rio\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    async with raw_partner(reply) as url:
        partner_doc = await create_partner(client, url.removesuffix("/hook"))
        action_doc = await create_action(client, partner_doc["id"], path="/hook")
        await create_subscription(client, action_doc["id"])
        vehicle = await create_vehicle(client)
        await _odometer(client, vehicle, 5)
        assert await _deliver(client, worker) == Counter(failed=1)

    [failed] = await _deliveries(client)
    assert failed["last_error"].startswith(
        "partner answered 302: redirected to http://erp.example.com/relat\ufffdrio;"
    )


async def test_a_2xx_the_error_expression_cannot_read_fails(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """A 300-level `errors` value could not be quoted (orjson writes 254 levels): parked.
    Past ANSWER_DEPTH the answer is unusable, and an action whose `error` expression reads
    its 2xx answers cannot call it a success: failed, not retried (it may have taken it)."""
    await _subscribed(client, partner, action={"error": "errors"})
    vehicle = await create_vehicle(client)
    partner.respond_with(200, raw=b'{"errors": ' + b"[" * 300 + b'"bad"' + b"]" * 300 + b"}")
    await _odometer(client, vehicle, 5)

    assert await _deliver(client, worker) == Counter(failed=1)

    [failed] = await _deliveries(client)
    assert failed["last_error"] == (
        "partner answered 200 with an unusable body: body is JSON nested deeper than "
        f"{ANSWER_DEPTH} levels, which is not read"
    )


async def test_an_answer_that_cannot_be_recorded_as_it_came_is_recorded_bare_not_parked(
    client: Client, partner: Partner, worker: DeliveryWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker parked a delivery on any error, its recording of a partner's answer
    included: a 503 went unretried until an admin replayed it. Whatever this release cannot
    record of an answer (here an excerpt no BSON takes, as UTF-7's were), its status still
    decides, with the reason in the attempt."""
    real = recording._attempt

    def unstorable(doc: Any, outcome: Any, *args: Any) -> Any:
        attempt = real(doc, outcome, *args)
        if outcome.body_excerpt:
            attempt["response"] += "\ud800"
        return attempt

    monkeypatch.setattr(recording, "_attempt", unstorable)
    await _subscribed(client, partner, action=ONE_RETRY_LATER)
    partner.respond_with(503, {"erro": "fora do ar"})
    await _odometer(client, await create_vehicle(client), 5)

    assert await _deliver(client, worker) == Counter(retry=1)

    [pending] = await _deliveries(client)
    [attempt] = (await _delivery(client, pending["id"]))["attempts"]
    assert (attempt["status"], attempt["error"]) == (503, "invalid_response")
    assert attempt["message"].startswith("the answer could not be recorded: UnicodeEncodeError")
    assert pending["last_status"] == 503


async def test_a_stored_partner_host_no_lookup_can_take_fails_its_delivery_not_parks_it(
    client: Client, worker: DeliveryWorker
) -> None:
    """A partner saved before its `base_url` was checked for a host name a lookup can take
    (`api..example.com`, a typo): its delivery fails as the partner's `connect` attempt,
    pending for a retry, never parked; its proxy call answers a 502, not a 500."""
    created = await create_partner(client, "https://api.example.com")
    partners = client.app[services_key].store.db["partners"]
    await partners.update_one(
        {"_id": ObjectId(created["id"])}, {"$set": {"base_url": "https://api..example.com"}}
    )
    action = await create_action(client, created["id"])
    await create_subscription(client, action["id"])
    vehicle = await create_vehicle(client)
    await _odometer(client, vehicle, 5)
    counts = await _deliver(client, worker)
    [delivery] = await _deliveries(client)
    assert "parked" not in counts and delivery["status"] == "pending", (counts, delivery)
    attempts = (await _delivery(client, delivery["id"]))["attempts"]
    assert attempts and all(
        a["error"] == "connect" and "not a valid host name" in a["message"] for a in attempts
    ), attempts
    proxy = await create_action(
        client, created["id"], name="lookup", mode="proxy", method="GET", path="/x"
    )
    invoked = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke",
        headers=auth(),
        json={"entity": {"type": "vehicle", "key": "ABC1D23"}},
    )
    assert invoked.status == 502, await invoked.text()


async def test_an_attempt_records_the_request_sent_with_its_credentials_masked(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """SPEC §2: a delivery's attempts carry a request summary (method, the URL its path
    template made, the body its request mapping made, its size) beside the answer, in the API
    and on the delivery's page; the partner's credential in the query and a named secret the
    mapping put in the body are masked, never stored."""
    await upload_mapping(
        client,
        "name: km\ndirection: outbound\nentity_type: vehicle\npath:\n  placa: entity.plate\n"
        "body:\n  placa: entity.plate\n  token: {secret: erp_token}\n",
    )
    partner.respond_with(500, {"erro": "fora do ar"})
    await _subscribed(
        client,
        partner,
        action={"path": "/veiculos/{placa}/km", "request_mapping": "km", "retry_schedule": []},
        partner_fields={
            "auth": {"type": "query", "name": "api_key", "value": "query-key-5e1f"},
            "secrets": {"erp_token": "named-secret-77aa"},
        },
        event_types=["entity.created"],
    )
    await create_vehicle(client, "ABC1D23")
    assert await _deliver(client, worker) == Counter(dead=1)
    (listed,) = await _deliveries(client)
    delivery = await _delivery(client, listed["id"])
    (attempt,) = delivery["attempts"]
    sent = attempt["request"]
    assert sent["method"] == "POST" and sent["url"] == f"{partner.url}/veiculos/ABC1D23/km"
    assert orjson.loads(sent["body"]) == {"placa": "ABC1D23", "token": "[redacted]"}
    assert sent["body_bytes"] == len(partner.requests[0].body)
    assert partner.requests[0].query["api_key"] == "query-key-5e1f"  # sent, not recorded
    stored = orjson.dumps(delivery).decode()
    assert "named-secret-77aa" not in stored and "query-key-5e1f" not in stored
    assert attempt["status"] == 500 and "fora do ar" in attempt["response"]
    await make_user(client.app[services_key])
    await log_in(client)
    page = html.unescape(await (await client.get(f"/admin/deliveries/{listed['id']}")).text())
    assert f"POST {partner.url}/veiculos/ABC1D23/km" in page and "corpo de" in page
    assert sent["body"] in page
    assert "named-secret-77aa" not in page


# MyGeotab's throttle as its SDK guide shows it: HTTP 200, a JSON-RPC error naming
# OverLimitException (tests/test_schedules_bad_input.py has the whole answer).
_GEOTAB_OVER_LIMIT = {
    "error": {
        "message": "API calls quota exceeded. Maximum admitted 100 per 1m.",
        "name": "JSONRPCError",
        "errors": [{"name": "OverLimitException", "message": "API calls quota exceeded."}],
    },
    "jsonrpc": "2.0",
}


@pytest.mark.parametrize("action", [ONE_RETRY_LATER, {**ONE_RETRY_LATER, "error": "error"}])
async def test_a_partner_s_throttle_answered_with_200_retries_the_delivery_after_its_wait(
    client: Client, partner: Partner, worker: DeliveryWorker, action: dict[str, Any]
) -> None:
    """A delivery MyGeotab throttled (HTTP 200 OverLimitException) was a success without an
    `error` expression (the call it refused, lost) and a failure with one (never retried):
    it is a 429's, retried no sooner than its `Retry-After`; the proxy answers 502 saying so."""
    made = await _subscribed(client, partner, action=action)
    partner.respond_with(200, _GEOTAB_OVER_LIMIT, headers={"Retry-After": "300"})
    await _odometer(client, await create_vehicle(client), 5)

    assert await _deliver(client, worker) == Counter(retry=1)

    [pending] = await _deliveries(client)
    assert pending["status"] == "pending" and pending["last_status"] == 200
    assert pending["last_error"] == "partner answered 200 asking to slow down: OverLimitException"
    wait = datetime.fromisoformat(pending["next_attempt_at"]) - worker.clock()
    assert wait >= timedelta(seconds=299), wait  # its Retry-After, not the schedule's 60 s

    proxied = {k: v for k, v in action.items() if k == "error"}
    proxy = await create_action(
        client, made["partner"]["id"], name="look", mode="proxy", path="/x", **proxied
    )
    invoked = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke",
        headers=auth(),
        json={"entity": {"type": "vehicle", "key": "ABC1D23"}},
    )
    assert invoked.status == 502
    assert (await invoked.json())["detail"].endswith("asking to slow down: OverLimitException")
