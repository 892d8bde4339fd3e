"""Batches answered per item, Idempotency-Key replays, and the per-trigger rate limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from multidict import CIMultiDict

from gateway.clock import utcnow
from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import (
    PAYLOADS,
    VEHICLE,
    Client,
    bearer,
    create_position_trigger,
    create_trigger,
    entities,
    hook,
    upload_mapping,
    upload_shipped,
    vehicle_track,
)

MESSAGES_MAPPING = """
name: fleet-messages
direction: inbound
entity_type: vehicle
key: [plate]
items: messages
fields:
  plate: {from: placa, required: true}
  odometer_km: km
"""


async def test_batch_answers_each_item_and_a_failing_item_does_not_stop_the_others(
    client: Client,
) -> None:
    trigger = await create_trigger(client)
    items = [{"plate": "ABC1D23"}, {"plate": "not a plate"}, {"plate": "BRA2E19"}]
    status, answer = await hook(client, trigger, items)
    assert status == 207
    assert [r["status"] for r in answer["results"]] == [201, 422, 201]
    assert [r["index"] for r in answer["results"]] == [0, 1, 2]
    assert answer["results"][1]["problem"]["errors"][0]["pointer"] == "/plate"
    assert answer["summary"] == {"items": 3, "created": 2, "updated": 0, "failed": 1}
    assert sorted(v["plate"] for v in await entities(client)) == ["ABC1D23", "BRA2E19"]
    status, answer = await hook(client, trigger, [{"plate": "ABC1D23", "make": "VW"}])
    assert status == 200 and answer["results"][0]["changed"] == ["make"]


async def test_a_batch_where_every_item_fails_is_still_answered_per_item(client: Client) -> None:
    trigger = await create_trigger(client)
    status, answer = await hook(client, trigger, [{"make": "VW"}, "not an object"])
    assert status == 207
    assert [r["status"] for r in answer["results"]] == [422, 422]
    assert answer["summary"]["failed"] == 2 and await entities(client) == []


async def test_flespi_array_is_mapped_item_by_item(client: Client) -> None:
    await client.post("/api/v1/entities/vehicle", json=VEHICLE, headers=auth())
    await upload_shipped(client, "flespi")
    trigger = await create_position_trigger(client, mapping="flespi")
    stream = json.loads((PAYLOADS / "flespi_stream.json").read_text())
    status, answer = await hook(client, trigger, stream)
    assert status == 200, answer
    assert [r["status"] for r in answer["results"]] == [201, 201]
    track = (await vehicle_track(client))["items"]
    assert [f["odometer_km"] for f in track] == [152340.4, 152340.6]


async def test_an_object_whose_mapping_has_items_is_a_batch(client: Client) -> None:
    await upload_mapping(client, MESSAGES_MAPPING)
    trigger = await create_trigger(
        client, mapping="fleet-messages", input_schema={"type": "object", "required": ["messages"]}
    )
    status, answer = await hook(
        client, trigger, {"messages": [{"placa": "ABC1D23", "km": 10}, {"km": 5}]}
    )
    assert status == 207
    assert [r["status"] for r in answer["results"]] == [201, 422]
    status, problem = await hook(client, trigger, {"mensagens": []})
    assert status == 422 and problem["reason"] == "schema"


async def test_a_batch_over_the_triggers_limit_is_413_and_writes_nothing(
    client: Client,
) -> None:
    trigger = await create_trigger(client, max_batch_items=2)
    status, problem = await hook(client, trigger, [{"plate": "ABC1D23"}] * 3)
    assert status == 413 and "limit of 2" in problem["detail"]
    assert await entities(client) == []


async def test_same_idempotency_key_and_body_replays_the_first_answer(client: Client) -> None:
    trigger = await create_trigger(client)
    key = {"Idempotency-Key": "order-42"}
    first = await client.post(
        f"/hooks/{trigger['id']}", json=VEHICLE, headers={**bearer(trigger), **key}
    )
    again = await client.post(
        f"/hooks/{trigger['id']}", json=VEHICLE, headers={**bearer(trigger), **key}
    )
    assert (first.status, again.status) == (201, 201)
    assert await again.json() == await first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await client.post(
        f"/hooks/{trigger['id']}",
        json={**VEHICLE, "make": "VW"},
        headers={**bearer(trigger), **key},
    )
    assert other.status == 422
    assert (await other.json())["reason"] == "idempotency"
    [vehicle] = await entities(client)
    assert vehicle["make"] == "Fiat" and vehicle["version"] == 1


async def test_a_step_of_the_servers_clock_forgets_no_idempotency_key_before_its_time(
    client: Client, gateway_time: Callable[[datetime], None]
) -> None:
    """The database server's clock steps 25 h forward (the next reading follows it) between
    a call and its retry an hour later: the TTL expiry keeps the key's record (held back,
    clockfix), and the reads no longer take it for expired on the stepped time: the retry
    gets the first answer, not processed again with the first answer replaced for good."""
    store = client.app[services_key].store
    trigger = await create_trigger(client)
    headers = {**bearer(trigger), "Idempotency-Key": "order-42"}
    now = utcnow()
    gateway_time(now)
    first = await client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)
    await store.expiry.expire()  # a pass on the right time
    gateway_time(now + timedelta(hours=25))
    assert await store.expiry.expire() == 0  # the record kept
    retry = await client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)
    kept = await store.idempotency.answered("acme", trigger["id"], ["order-42"], utcnow())

    assert (first.status, retry.status) == (201, 201)
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert kept is not None and kept["status"] == 201


async def test_a_rejected_call_releases_its_idempotency_key(client: Client) -> None:
    trigger = await create_trigger(client)
    key = {"Idempotency-Key": "k-1"}
    for _ in range(2):
        response = await client.post(
            f"/hooks/{trigger['id']}", json={"make": "VW"}, headers={**bearer(trigger), **key}
        )
        assert response.status == 422 and "Idempotent-Replayed" not in response.headers
    bad = await client.post(
        f"/hooks/{trigger['id']}",
        json=VEHICLE,
        headers={**bearer(trigger), "Idempotency-Key": "x" * 300},
    )
    assert bad.status == 400


async def test_two_concurrent_first_calls_with_one_key_write_once(client: Client) -> None:
    trigger = await create_trigger(client)
    headers = {**bearer(trigger), "Idempotency-Key": "same"}
    responses = await asyncio.gather(
        *[client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers) for _ in range(4)]
    )
    statuses = sorted(r.status for r in responses)
    assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}, statuses
    fresh = [r for r in responses if r.status == 201 and "Idempotent-Replayed" not in r.headers]
    assert len(fresh) == 1
    [vehicle] = await entities(client)
    assert vehicle["version"] == 1


async def test_a_key_still_being_processed_answers_409_with_retry_after_until_its_takeover(
    client: Client,
) -> None:
    """The 409 "still being processed; retry" says when: the seconds until the marker can be
    taken over (a client that gets no hint may take a 4xx as final and drop the message)."""
    trigger = await create_trigger(client)
    headers = {**bearer(trigger), "Idempotency-Key": "held"}
    first = await client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)
    assert first.status == 201
    # The key as a call still running (or one whose process died) holds it: its marker
    # pending, its lease 12 s away.
    records = client.app[services_key].store.db["idempotency"]
    until = datetime.now(UTC) + timedelta(seconds=12)
    held = await records.update_one(
        {"trigger_id": trigger["id"]}, {"$set": {"state": "pending", "lease_until": until}}
    )
    assert held.modified_count == 1
    busy = await client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)
    assert busy.status == 409 and "still being processed" in (await busy.json())["detail"]
    assert 11 <= int(busy.headers["Retry-After"]) <= 12
    # Past its lease, never less than 1 s; then the key is taken over and processed.
    await records.update_one(
        {"trigger_id": trigger["id"]},
        {"$set": {"lease_until": datetime.now(UTC) + timedelta(milliseconds=200)}},
    )
    soon = await client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)
    assert soon.status == 409 and soon.headers["Retry-After"] == "1"
    await asyncio.sleep(0.3)
    again = await client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)
    assert again.status == 200 and "Idempotent-Replayed" not in again.headers


async def test_over_the_rate_limit_is_429_with_retry_after(client: Client) -> None:
    trigger = await create_trigger(client, rate_limit={"per_second": 0.01, "burst": 2})
    statuses = [(await hook(client, trigger, VEHICLE))[0] for _ in range(3)]
    assert statuses == [201, 200, 429]
    response = await client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=bearer(trigger))
    assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
    other = await create_trigger(client, name="other")
    assert (await hook(client, other, VEHICLE))[0] == 200  # limits are per trigger


async def test_a_rate_limit_without_burst_takes_a_seconds_worth_of_calls_at_once(
    client: Client,
) -> None:
    """The default burst was 1: ten calls at once under a limit of 100/s were mostly 429;
    it is now `per_second` rounded up (at least 1)."""
    trigger = await create_trigger(client, rate_limit={"per_second": 4})
    assert trigger["rate_limit"] == {"per_second": 4}  # stored as given

    async def ask() -> int:  # an OPTIONS counts like any call, and costs the least
        return (await client.options(f"/hooks/{trigger['id']}", headers=bearer(trigger))).status

    statuses = await asyncio.gather(*(ask() for _ in range(5)))
    assert sorted(statuses) == [204] * 4 + [429]  # (one more token comes each 250 ms)
    slow = await create_trigger(client, name="slow", rate_limit={"per_second": 0.01})
    assert [(await hook(client, slow, VEHICLE))[0] for _ in range(2)] == [201, 429]  # at least 1


async def test_a_rate_slower_than_one_call_in_10000_s_is_a_422_at_save(client: Client) -> None:
    """per_second 1e-320 was accepted (exclusiveMinimum 0), and every call over it was a 500
    (the wait overflowed to infinity) or a 429 with a 300-digit Retry-After."""
    for rate in (1e-320, 1e-300, 0.00009):
        response = await client.post(
            "/api/v1/triggers",
            headers=auth(),
            json={"name": "slow", "entity_type": "vehicle", "rate_limit": {"per_second": rate}},
        )
        assert response.status == 422, (rate, await response.text())
        [error] = (await response.json())["errors"]
        assert error["pointer"] == "/rate_limit/per_second" and "0.0001" in error["message"]
    slowest = await create_trigger(client, rate_limit={"per_second": 0.0001, "burst": 1})
    assert slowest["rate_limit"]["per_second"] == 0.0001


async def test_a_tiny_rate_stored_before_the_rule_answers_a_429_with_a_bounded_retry_after(
    client: Client,
) -> None:
    trigger = await create_trigger(client)
    await (
        client.app[services_key]
        .store.db["triggers"]
        .update_one(
            {"_id": trigger["id"]},
            {"$set": {"rate_limit": {"per_second": 1e-320, "burst": 1}}, "$inc": {"version": 1}},
        )
    )
    assert (await hook(client, trigger, VEHICLE))[0] == 201
    for _ in range(2):
        response = await client.post(
            f"/hooks/{trigger['id']}", json=VEHICLE, headers=bearer(trigger)
        )
        assert response.status == 429, await response.text()
        assert 1 <= int(response.headers["Retry-After"]) <= 10_000


async def test_items_of_one_entity_are_written_in_order_within_a_concurrent_batch(
    client: Client,
) -> None:
    trigger = await create_trigger(client)
    plates = ["ABC1D23", "BRA2E19", "XYZ9K88"]
    items = [{"plate": plates[n % 3], "odometer_km": n} for n in range(30)]
    status, answer = await hook(client, trigger, items)
    assert status == 200
    assert [r["index"] for r in answer["results"]] == list(range(30))
    assert [r["status"] for r in answer["results"][:3]] == [201, 201, 201]
    odometers = {v["plate"]: v["odometer_km"] for v in await entities(client)}
    assert odometers == {"ABC1D23": 27, "BRA2E19": 28, "XYZ9K88": 29}


async def test_a_call_with_two_idempotency_keys_or_two_credentials_is_refused_unwritten(
    client: Client,
) -> None:
    trigger = await create_trigger(client)
    [(_, credential)] = bearer(trigger).items()
    for name, headers in (
        ("Idempotency-Key", [("Idempotency-Key", "k-1"), ("Idempotency-Key", "k-2")]),
        ("Authorization", [("Authorization", "Bearer another")]),
    ):
        response = await client.post(
            f"/hooks/{trigger['id']}",
            json=VEHICLE,
            headers=CIMultiDict([("Authorization", credential), *headers]),
        )
        assert response.status == 400
        assert f"the {name} header is given more than once" in (await response.json())["detail"]
    assert await entities(client) == []


async def test_a_read_with_an_idempotency_key_it_cannot_be_is_refused(client: Client) -> None:
    """The key is declared for every `/hooks` call (a form trigger's GET writes): one that is
    no key at all is the same 400 on a read as on a write, not silently ignored."""
    trigger = await create_trigger(client, methods=["GET", "POST"])
    headers = {**bearer(trigger), "Idempotency-Key": " "}
    response = await client.get(f"/hooks/{trigger['id']}?limit=1", headers=headers)
    assert response.status == 400, await response.text()
    assert "Idempotency-Key" in (await response.json())["detail"]
    fine = await client.get(f"/hooks/{trigger['id']}?limit=1", headers=bearer(trigger))
    assert fine.status == 200
