"""Entity writes across processes: the version guard keeps every change."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import bson
import pytest
from aiohttp import web

from gateway import write_fence
from gateway.background import cancel_and_wait
from gateway.doorbell import Doorbell
from gateway.entities import EntityService, Origin
from gateway.events import EventRelay
from gateway.mapping import Emit
from gateway.services import Services
from gateway.store.entities import EntityStore
from gateway.triggers import idempotency
from gateway.triggers.pipeline import Mapped, Pipeline, Prepared
from gateway.web import requests
from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import Client, create_trigger, hook, upload_mapping

BIG = "/api/v1/entities/vehicle/BIG1234"

ORIGIN = Origin("trigger", "t1")


async def test_upsert_from_a_stale_process_keeps_the_other_process_change(
    services: Services, aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    b = await aiohttp_client(make_app())  # same database: a second gateway process
    entities_a = services.entities
    await entities_a.upsert("acme", "vehicle", {"plate": "ABC1D23", "odometer_km": 10}, ORIGIN)
    # B changes the vehicle behind A's back; A's remembered copy is now stale.
    response = await b.patch(
        "/api/v1/entities/vehicle/ABC1D23", json={"status": "maintenance"}, headers=auth()
    )
    assert response.status == 200
    result = await entities_a.upsert(
        "acme", "vehicle", {"plate": "ABC1D23", "odometer_km": 12}, ORIGIN
    )
    assert result.entity["data"]["status"] == "maintenance"
    assert result.entity["data"]["odometer_km"] == 12
    assert [c.field for c in result.changes] == ["odometer_km"]
    stored = await (await b.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    assert (stored["status"], stored["odometer_km"], stored["version"]) == ("maintenance", 12, 3)


async def test_upsert_after_another_process_deleted_the_entity_creates_it_again(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    a = await aiohttp_client(make_app())
    b = await aiohttp_client(make_app())
    entities_a = a.app[services_key].entities
    await entities_a.upsert("acme", "vehicle", {"plate": "ABC1D23"}, ORIGIN)
    assert (await b.delete("/api/v1/entities/vehicle/ABC1D23", headers=auth())).status == 204
    result = await entities_a.upsert("acme", "vehicle", {"plate": "ABC1D23", "year": 2020}, ORIGIN)
    assert result.created


async def test_concurrent_writes_to_one_entity_from_two_processes_are_all_written(
    aiohttp_client: Any, make_app: Callable[..., web.Application], monkeypatch: Any
) -> None:
    """`serve --workers 2`: each process writes from the copy it remembers, and one that lost
    a round kept losing to the other's queue (8 rounds, then a 409 for some writes in a
    hundred). A write that keeps losing takes its turn (the revision moved on as it reads):
    every write is stored."""
    from tests.triggers_support import create_trigger, hook

    # 160 writes of one entity queued in one test process: on a loaded machine the last
    # wait longer than a request's write deadline (`write_fence`), which is not in question.
    monkeypatch.setattr(write_fence, "WRITE_SECONDS", 300.0)
    one = await aiohttp_client(make_app())
    two = await aiohttp_client(make_app())  # same database: a second gateway process
    trigger = await create_trigger(one)
    assert (await hook(one, trigger, {"plate": "RAC1234"}))[0] == 201

    async def write(i: int) -> int:
        body = {"plate": "RAC1234", "attributes": {f"h{i}": i}}
        status, _ = await hook(one if i % 2 else two, trigger, body)
        return status

    statuses = await asyncio.gather(*(write(i) for i in range(160)))
    assert set(statuses) == {200}, sorted(statuses)
    stored = await (await one.get("/api/v1/entities/vehicle/RAC1234", headers=auth())).json()
    assert stored["attributes"] == {f"h{i}": i for i in range(160)}


async def test_also_writes_contending_with_another_process_take_their_turn_and_are_stored(
    aiohttp_client: Any, make_app: Callable[..., web.Application], monkeypatch: Any
) -> None:
    """A mapping's `also` (a checklist writing its vehicle's odometer) read the vehicle by a
    plain read every round: against another process writing the vehicle from its remembered
    copy it kept losing, and some checklists were a 503 entity-contended where single writes
    take their turn. They take it the same way now: every write of both is stored (within
    fewer rounds than the default, which the single writes of the same load need too)."""
    from gateway import entities
    from tests.flow_support import sample
    from tests.triggers_support import upload_shipped

    monkeypatch.setattr(entities, "WRITE_ATTEMPTS", 12)
    # 200 writes queued in one test process: on a loaded machine the last wait longer than a
    # request's write deadline (`write_fence`), which is not in question here.
    monkeypatch.setattr(write_fence, "WRITE_SECONDS", 300.0)
    one = await aiohttp_client(make_app())
    two = await aiohttp_client(make_app())  # same database: a second gateway process
    body = {"plate": "ABC1D23", "odometer_km": 100}
    assert (await one.post("/api/v1/entities/vehicle", json=body, headers=auth())).status == 201
    await upload_shipped(one, "checklist")
    checklist = await create_trigger(
        one, entity_type="other", kind="checklist", mapping="checklist", name="chk"
    )
    plain = await create_trigger(one, name="plain")
    n = 100

    async def from_one(i: int) -> int:  # process one: the vehicle's own writes
        status, _ = await hook(one, plain, {"plate": "ABC1D23", "attributes": {f"h{i}": i}})
        return status

    async def from_two(i: int) -> int:  # process two: checklists writing the vehicle too
        doc = {**sample("checklist_completed.json"), "checklistId": f"chk-{i}"}
        doc |= {"odometroKm": 200 + i, "concluidoEm": f"2026-11-25T10:{i % 60:02d}:{i // 60:02d}Z"}
        status, _ = await hook(two, checklist, doc)
        return status

    statuses = await asyncio.gather(*(f(i) for i in range(n) for f in (from_one, from_two)))
    assert sorted(statuses[1::2]) == [201] * n and sorted(statuses[0::2]) == [200] * n, statuses
    stored = await (await one.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    written = {k: v for k, v in stored["attributes"].items() if k.startswith("h")}
    assert written == {f"h{i}": i for i in range(n)} and stored["odometer_km"] >= 200


async def test_a_write_that_keeps_losing_to_another_process_is_a_503_with_retry_after(
    aiohttp_client: Any, make_app: Callable[..., web.Application], monkeypatch: Any
) -> None:
    """Past its rounds a write lost to other writers is a 503 with Retry-After (SPEC's
    triggers have no 409 for it), counted as `contended`; in a batch the call is the 503, to
    be sent again whole (docs/triggers.md, Batches)."""
    from gateway import entities
    from tests.triggers_support import create_trigger, hook

    monkeypatch.setattr(entities, "WRITE_ATTEMPTS", 1)  # the first round lost is the last
    one = await aiohttp_client(make_app())
    two = await aiohttp_client(make_app())
    trigger = await create_trigger(one)
    for plate in ("RAC1234", "RAD1234"):
        assert (await hook(one, trigger, {"plate": plate}))[0] == 201
        # Changed by the other process: `one`'s remembered copy loses its round.
        url = f"/api/v1/entities/vehicle/{plate}"
        assert (await two.patch(url, json={"year": 2020}, headers=auth())).status == 200
    response = await one.post(
        f"/hooks/{trigger['id']}",
        json={"plate": "RAC1234", "year": 2021},
        headers={"Authorization": f"Bearer {trigger['token']}"},
    )
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    problem = await response.json()
    assert problem["detail"].startswith("the entity is being changed concurrently")
    batch = [{"plate": "RAE1234"}, {"plate": "RAD1234", "year": 2022}]
    status, problem = await hook(one, trigger, batch)
    assert status == 503, problem
    for app in (one, two):  # no relay of `two`'s change drains the entity mid-transaction
        await app.app[services_key].relay.run_until_idle()
    status, answer = await hook(one, trigger, batch)  # the partner's to send again, whole
    assert (status, answer["summary"]["failed"]) == (200, 0), answer
    assert (await hook(one, trigger, {"plate": "RAC1234", "year": 2021}))[0] == 200
    metrics = await (await one.get("/metrics")).text()
    assert f'outcome="contended",trigger="{trigger["id"]}"}} 2.0' in metrics


async def test_domain_events_carry_the_mapping_detail(services: Services) -> None:
    await services.entities.upsert(
        "acme",
        "vehicle",
        {"plate": "ABC1D23"},
        ORIGIN,
        extra_events=[Emit("vehicle.geofence.exited", "every")],
        event_detail={"geofence": "Depot"},
    )
    await services.relay.run_until_idle()
    events = await services.store.events.find("acme", {}, before=None, limit=10)
    by_type = {e["type"]: e for e in events}
    assert by_type["vehicle.geofence.exited"]["detail"] == {"geofence": "Depot"}
    assert "detail" not in by_type["entity.created"]


async def test_upsert_that_looks_unchanged_to_a_stale_process_is_still_written(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    a = await aiohttp_client(make_app())
    b = await aiohttp_client(make_app())
    entities_a = a.app[services_key].entities
    await entities_a.upsert("acme", "vehicle", {"plate": "ABC1D23", "status": "active"}, ORIGIN)
    await b.patch(
        "/api/v1/entities/vehicle/ABC1D23", json={"status": "maintenance"}, headers=auth()
    )
    result = await entities_a.upsert(
        "acme", "vehicle", {"plate": "ABC1D23", "status": "active"}, ORIGIN
    )
    assert [c.field for c in result.changes] == ["status"]
    stored = await (await b.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    assert stored["status"] == "active"
    # Deleted elsewhere, then sent again unchanged: created again, not answered "no change".
    assert (await b.delete("/api/v1/entities/vehicle/ABC1D23", headers=auth())).status == 204
    again = await entities_a.upsert(
        "acme", "vehicle", {"plate": "ABC1D23", "status": "active"}, ORIGIN
    )
    assert again.created


async def test_a_poisoned_outbox_is_set_aside_and_the_others_are_relayed(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    from bson import ObjectId

    client = await aiohttp_client(make_app())
    service = client.app[services_key].entities
    bad = await service.upsert("acme", "vehicle", {"plate": "ABC1D23"}, ORIGIN)
    await client.app[services_key].relay.run_until_idle()
    entities = client.app[services_key].store.db["entities"]
    # An entry the relay cannot turn into an event (written by a bug, say).
    await entities.update_one(
        {"_id": bad.entity["_id"]},
        {"$set": {"pending": True, "pending_shard": 0}, "$push": {"outbox": {"id": ObjectId()}}},
    )
    await service.upsert("acme", "vehicle", {"plate": "BRA2E19"}, ORIGIN)
    await client.app[services_key].relay.run_until_idle()
    events = await client.app[services_key].store.events.find("acme", {}, before=None, limit=10)
    assert [e["entity"]["key"] for e in events].count("BRA2E19") == 1
    parked = await entities.find_one({"_id": bad.entity["_id"]})
    assert parked is not None and "pending" not in parked and parked["relay_error"]["reason"]
    assert len(parked["outbox"]) == 1  # kept for an operator, not lost
    metrics = await (await client.get("/metrics")).text()
    assert "gateway_outboxes_parked_total 1.0" in metrics


async def test_writes_wait_with_503_while_an_entity_outbox_is_full(
    aiohttp_client: Any, make_app: Callable[..., web.Application], monkeypatch: Any
) -> None:
    from gateway.store import entities as entity_store

    monkeypatch.setattr(entity_store, "MAX_OUTBOX", 2)
    client = await aiohttp_client(make_app())
    url = "/api/v1/entities/vehicle/ABC1D23"
    await client.post("/api/v1/entities/vehicle", json={"plate": "ABC1D23"}, headers=auth())
    assert (await client.patch(url, json={"year": 2020}, headers=auth())).status == 200
    full = await client.patch(url, json={"year": 2021}, headers=auth())
    assert full.status == 503 and full.headers["Retry-After"]
    await client.app[services_key].relay.run_until_idle()
    assert (await client.patch(url, json={"year": 2021}, headers=auth())).status == 200


async def test_writes_to_a_large_entity_wait_with_503_while_its_outbox_holds_its_bytes(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """Each waiting event carries a copy of the entity: an entity of 1 MB filled MongoDB's
    16 MiB document after 15 events, and a small write (a DELETE too) was the database's
    refusal, a 422 blaming the payload. The outbox is bounded by its bytes as by its count:
    a 503 with Retry-After until the relay catches up, and every write answered is kept."""
    client = await aiohttp_client(make_app(max_body_bytes=1024 * 1024))
    url = "/api/v1/entities/vehicle/BIG1234"
    big = {"plate": "BIG1234", "attributes": {"notes": "y" * 1_000_000}}
    assert (await client.post("/api/v1/entities/vehicle", json=big, headers=auth())).status == 201
    statuses = []
    for km in range(1, 20):  # the relay is not running: its events wait in the outbox
        response = await client.patch(url, json={"odometer_km": km}, headers=auth())
        statuses.append(response.status)
        if response.status == 503:
            assert response.headers["Retry-After"]
            assert (await response.json())["detail"].startswith("events of this entity")
    assert set(statuses) == {200, 503} and statuses.index(503) > 5, statuses
    answered = statuses.count(200)
    full = await client.delete(url, headers=auth())
    assert full.status == 503 and full.headers["Retry-After"]
    relay = client.app[services_key].relay
    await relay.run_until_idle()
    assert (await client.patch(url, json={"odometer_km": 100}, headers=auth())).status == 200
    assert (await client.delete(url, headers=auth())).status == 204
    await relay.run_until_idle()
    events = await client.app[services_key].store.events.find(
        "acme", {"entity.key": "BIG1234"}, before=None, limit=100
    )
    kms = sorted(e["data"].get("odometer_km", 0) for e in events if e["type"] == "entity.updated")
    assert kms == [*range(1, answered + 1), 100]
    assert [e["type"] for e in events].count("entity.deleted") == 1


async def test_an_outbox_drained_in_part_counts_the_bytes_still_waiting(
    services: Services,
) -> None:
    """The outbox's byte count (its bound, above) follows its entries: a relay pass that
    drains the events it read while a write added one leaves the count of that one alone,
    and a drained outbox has none."""
    store = services.store
    await services.entities.upsert("acme", "vehicle", {"plate": "ABC1D23"}, ORIGIN)
    [read] = await store.entities.pending_outboxes(10)  # what a relay pass read
    await services.entities.upsert("acme", "vehicle", {"plate": "ABC1D23", "year": 2020}, ORIGIN)
    await store.entities.drain_outboxes([(read, [e["id"] for e in read["outbox"]])])
    raw = await store.db["entities"].find_one({"_id": read["_id"]})
    assert raw is not None and [e["type"] for e in raw["outbox"]] == ["entity.updated"]
    assert raw["outbox_bytes"] == _outbox_size(raw)
    await services.relay.run_until_idle()
    raw = await store.db["entities"].find_one({"_id": read["_id"]})
    assert raw is not None and "outbox" not in raw and "outbox_bytes" not in raw


def _outbox_size(raw: dict[str, Any]) -> int:
    return sum(len(bson.encode(entry)) for entry in raw.get("outbox", ()))


async def _large_vehicle_patched(client: Any, times: int) -> None:
    big = {"plate": "BIG1234", "attributes": {"notes": "y" * 1_000_000}}
    assert (await client.post("/api/v1/entities/vehicle", json=big, headers=auth())).status == 201
    for km in range(1, times + 1):  # the relay is not running: its events wait in the outbox
        response = await client.patch(BIG, json={"odometer_km": km}, headers=auth())
        assert response.status == 200


async def _patched_until_refused(client: Any) -> int:
    """The status of the first small write to the large vehicle that is not stored."""
    for km in range(100, 140):
        response = await client.patch(BIG, json={"odometer_km": km}, headers=auth())
        if response.status != 200:
            return response.status
    raise AssertionError("40 events of 1 MB waiting in one document")


async def test_two_relays_draining_the_same_read_count_the_bytes_left_once(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """In a lease hand-over two relay passes may drain what they both read, while a write
    added an event: the second pull removed nothing but took the bytes off the count again,
    which went negative, and the byte bound was gone: the database's 422 was back."""
    client = await aiohttp_client(make_app(max_body_bytes=1024 * 1024))
    store = client.app[services_key].store
    await _large_vehicle_patched(client, 7)
    [read] = await store.entities.pending_outboxes(10)  # relay A's and relay B's pass
    assert (await client.patch(BIG, json={"odometer_km": 50}, headers=auth())).status == 200
    ids = [e["id"] for e in read["outbox"]]
    await store.entities.drain_outboxes([(read, ids)])  # relay A
    await store.entities.drain_outboxes([(read, ids)])  # relay B, the same read
    raw = await store.db["entities"].find_one({"_id": read["_id"]})
    assert raw is not None and [e["data"]["odometer_km"] for e in raw["outbox"]] == [50]
    assert raw["outbox_bytes"] == _outbox_size(raw)
    assert await _patched_until_refused(client) == 503


async def test_an_outbox_stored_before_its_byte_count_is_counted_at_its_first_partial_drain(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """An outbox stored by the version before the byte bound has no count: the writes after
    the upgrade count their own events only, and a partial drain took the old entries' bytes
    off too, a negative count loosening the bound by the whole old outbox."""
    client = await aiohttp_client(make_app(max_body_bytes=1024 * 1024))
    store = client.app[services_key].store
    await _large_vehicle_patched(client, 5)
    await store.db["entities"].update_one({"type": "vehicle"}, {"$unset": {"outbox_bytes": ""}})
    assert (await client.patch(BIG, json={"odometer_km": 6}, headers=auth())).status == 200
    [read] = await store.entities.pending_outboxes(10)
    assert (await client.patch(BIG, json={"odometer_km": 7}, headers=auth())).status == 200
    await store.entities.drain_outboxes([(read, [e["id"] for e in read["outbox"]])])
    raw = await store.db["entities"].find_one({"_id": read["_id"]})
    assert raw is not None and [e["data"]["odometer_km"] for e in raw["outbox"]] == [7]
    assert raw["outbox_bytes"] == _outbox_size(raw)
    assert await _patched_until_refused(client) == 503


async def test_a_batch_past_a_large_entitys_byte_bound_answers_its_later_items_503_in_a_207(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """More changes of a 1 MB entity in one batch than its outbox holds: the whole call was a
    503 whose retry (the whole batch) wrote its first items again (new events, the mileage
    going back) and stopped at the same item, forever. Now the items past the bound are
    refused one by one (503), the others written and answered, in a 207: a retry of the
    refused items once the relay caught up lands them, in order."""
    client = await aiohttp_client(make_app(max_body_bytes=1024 * 1024))
    big = {"plate": "BIG1234", "attributes": {"notes": "y" * 1_000_000}}
    assert (await client.post("/api/v1/entities/vehicle", json=big, headers=auth())).status == 201
    trigger = await create_trigger(client)
    batch = [{"plate": "BIG1234", "odometer_km": km} for km in range(1, 31)]
    status, answer = await hook(client, trigger, batch)
    assert status == 207, answer
    statuses = [r["status"] for r in answer["results"]]
    written = statuses.count(200)
    assert written > 5 and statuses == [200] * written + [503] * (30 - written), statuses
    refused = answer["results"][written]
    assert refused["index"] == written and refused["problem"]["status"] == 503
    assert refused["problem"]["detail"].startswith("events of this entity are waiting")
    relay = client.app[services_key].relay
    await relay.run_until_idle()
    status, answer = await hook(client, trigger, batch[written : written + 5])
    assert status == 200, answer
    await relay.run_until_idle()
    vehicle = await client.get("/api/v1/entities/vehicle/BIG1234", headers=auth())
    assert (await vehicle.json())["odometer_km"] == written + 5
    events = await client.app[services_key].store.events.find(
        "acme",
        {"entity.key": "BIG1234"},  # the plate the vehicle holds
        before=None,
        limit=100,
    )
    kms = [e["data"]["odometer_km"] for e in events if e["type"] == "entity.updated"]
    assert sorted(kms) == list(range(1, written + 6))  # each change once, none written again


async def test_batch_items_refused_as_backlogged_are_the_partners_to_resend_not_replayed_later(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """The items a 207 refused with a 503 (the entity's events waiting for the relay) were
    also kept pending to replay: the partner resent them as told, then wrote a newer value,
    and an admin's "replay all" wrote the old items again over it (the model back from b30
    to b24, the events going backwards). The partner owns that retry: nothing is kept."""
    client = await aiohttp_client(make_app(max_body_bytes=1024 * 1024))
    big = {"plate": "BIG1234", "attributes": {"notes": "y" * 1_000_000}}
    assert (await client.post("/api/v1/entities/vehicle", json=big, headers=auth())).status == 201
    trigger = await create_trigger(client)
    batch = [{"plate": "BIG1234", "model": f"b{n}"} for n in range(25)]
    status, answer = await hook(client, trigger, batch)
    assert status == 207, answer
    refused = [r["index"] for r in answer["results"] if r["status"] == 503]
    assert refused and refused[-1] == 24, answer
    relay = client.app[services_key].relay
    await relay.run_until_idle()
    status, answer = await hook(client, trigger, [batch[i] for i in refused])  # as told
    assert status == 200, answer
    status, answer = await hook(client, trigger, {"plate": "BIG1234", "model": "b30"})
    assert status == 200, answer
    await relay.run_until_idle()  # the admin replays once the relay caught up
    replay = await client.post(
        "/api/v1/rejected/replay", json={"trigger_id": trigger["id"]}, headers=auth()
    )
    assert replay.status == 200 and (await replay.json())["replayed"] == 0
    await relay.run_until_idle()
    vehicle = await client.get("/api/v1/entities/vehicle/BIG1234", headers=auth())
    assert (await vehicle.json())["model"] == "b30"
    events = await client.app[services_key].store.events.find(
        "acme", {"entity.key": "BIG1234"}, before=None, limit=100
    )
    models = [e["data"]["model"] for e in reversed(events) if e["type"] == "entity.updated"]
    assert models == [f"b{n}" for n in range(25)] + ["b30"], models


PLATE_OR_TRACKER = """
name: plate-or-tracker
direction: inbound
entity_type: vehicle
key: {first_of: [plate, attributes.tracker_id]}
fields:
  plate: {from: placa, transforms: [plate]}
  attributes.tracker_id: {from: deviceId, transforms: [string]}
  model: m
"""


async def test_an_entitys_items_after_a_backlogged_one_stay_refused_across_a_lookup_flush(
    aiohttp_client: Any, make_app: Callable[..., web.Application], monkeypatch: Any
) -> None:
    """An item found by tracker after items that write the tracker is looked up once those
    are written (a flush): the entity's items refused 503 before it stay the partner's to
    resend first, so it is refused too, even when the relay caught up meanwhile (as it
    does beside a live batch; simulated before its lookup)."""
    client = await aiohttp_client(make_app(max_body_bytes=1024 * 1024))
    big = {"plate": "BIG1234", "attributes": {"notes": "y" * 1_000_000, "tracker_id": "t1"}}
    assert (await client.post("/api/v1/entities/vehicle", json=big, headers=auth())).status == 201
    await upload_mapping(client, PLATE_OR_TRACKER)
    trigger = await create_trigger(client, mapping="plate-or-tracker")
    relay = client.app[services_key].relay
    locate = Pipeline.locate

    async def locate_after_the_relay(
        self: Pipeline, trigger: Any, mapping: Any, mapped: Mapped
    ) -> Prepared:
        if mapped.fields.get("model") == "late":
            await relay.run_until_idle()
        return await locate(self, trigger, mapping, mapped)

    monkeypatch.setattr(Pipeline, "locate", locate_after_the_relay)
    batch = [{"placa": "BIG1234", "deviceId": "t1", "m": f"b{n}"} for n in range(25)]
    batch.append({"deviceId": "t1", "m": "late"})
    status, answer = await hook(client, trigger, batch)
    statuses = [r["status"] for r in answer["results"]]
    assert status == 207 and 503 in statuses[:25], statuses
    assert statuses[25] == 503, statuses  # not written ahead of the refused older items
    vehicle = await client.get("/api/v1/entities/vehicle/BIG1234", headers=auth())
    assert (await vehicle.json()).get("model") != "late"


async def test_an_entity_write_wakes_the_relay_before_its_poll(services: Services) -> None:
    """No caller tells the relay about a write: the entity service rings it."""
    doorbell = Doorbell()
    entities = EntityService(services.store, services.schemas, services.kinds, doorbell)
    relay = EventRelay(
        services.store,
        services.metrics,
        on_relayed=services.fanout,
        doorbell=doorbell,
        poll_seconds=3600,
    )
    task = asyncio.create_task(relay.run())
    try:
        for plate in ("ABC1D23", "BRA2E19"):  # the second arrives while the relay waits
            await entities.create("acme", "vehicle", {"plate": plate}, ORIGIN)
            async with asyncio.timeout(10):
                while not await services.store.events.find(
                    "acme", {"entity.key": plate}, before=None, limit=1
                ):
                    await asyncio.sleep(0.01)
    finally:
        await cancel_and_wait(task)


async def test_a_trigger_write_refused_for_an_events_backlog_is_counted_as_backlogged(
    aiohttp_client: Any, make_app: Callable[..., web.Application], monkeypatch: Any
) -> None:
    """The 503 of an entity whose events wait to be relayed has its own outcome in
    `gateway_trigger_requests_total` (not a partner's keys, not a 500)."""
    from gateway.store import entities as entity_store
    from tests.triggers_support import create_trigger, hook

    monkeypatch.setattr(entity_store, "MAX_OUTBOX", 2)
    client = await aiohttp_client(make_app())
    trigger = await create_trigger(client)
    statuses = [
        (await hook(client, trigger, {"plate": "ABC1D23", "year": year}))[0]
        for year in (2020, 2021, 2022)
    ]
    assert statuses == [201, 200, 503], statuses
    metrics = await (await client.get("/metrics")).text()
    outcomes = [
        line.split('outcome="')[1].split('"')[0]
        for line in metrics.splitlines()
        if line.startswith("gateway_trigger_requests_total{") and not line.endswith(" 0.0")
    ]
    assert "backlogged" in outcomes and not {"keys_unavailable", "error"} & set(outcomes)


async def test_a_partner_call_whose_body_trickled_in_past_the_fence_is_written(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fence counts from the body's arrival, not the headers': a batch sent over a slow
    link (its body up to BODY_TIMEOUT_SECONDS, twice the fence) is written, not refused at
    every try. Scaled: a 0.5 s fence, a 1 s body deadline, the body sent over 0.8 s."""
    trigger = await create_trigger(client)
    created = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "ABC1D23", "model": "old"}, headers=auth()
    )
    assert created.status == 201
    monkeypatch.setattr(write_fence, "WRITE_SECONDS", 0.5)
    monkeypatch.setattr(requests, "BODY_TIMEOUT_SECONDS", 1.0)
    body = json.dumps({"plate": "ABC1D23", "model": "slow"}).encode()
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"POST /hooks/{trigger['id']} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {trigger['token']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    )
    for i in range(0, len(body), 8):  # the body trickles in over ~0.8 s
        writer.write(body[i : i + 8])
        await writer.drain()
        await asyncio.sleep(0.8 / (len(body) / 8))
    answer = (await reader.read()).decode(errors="replace")
    writer.close()
    assert answer.split(" ", 2)[1] == "200", answer
    stored = await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())
    assert (await stored.json())["model"] == "slow"


async def test_a_partner_create_held_up_past_the_fence_is_not_sent(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create is a write too: held up past the fence it would bring back an entity deleted
    meanwhile, with its old data."""
    trigger = await create_trigger(client)
    check = EntityService._check

    async def held_up(self: EntityService, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.4)  # the process is held up (a 0.2 s fence here)
        return await check(self, *args, **kwargs)

    monkeypatch.setattr(write_fence, "WRITE_SECONDS", 0.2)
    monkeypatch.setattr(EntityService, "_check", held_up)
    status, answer = await hook(client, trigger, {"plate": "XYZ9A87", "model": "late"})
    assert status == 503 and answer["outcome"] == "unknown", answer
    monkeypatch.setattr(EntityService, "_check", check)
    missing = await client.get("/api/v1/entities/vehicle/XYZ9A87", headers=auth())
    assert missing.status == 404


async def test_a_request_held_up_before_its_read_does_not_land_over_the_newer_write(
    aiohttp_client: Any,
    make_app: Callable[..., web.Application],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Process A is held up after m1 arrived and before it read the vehicle (it remembers no
    copy); the partner, past its patience, sends m2 through process B. A, resuming, reads m2
    and would write m1 over it under the revision it has just read: past its deadline it
    sends nothing, and answers 503, outcome unknown."""
    a = await aiohttp_client(make_app())
    b = await aiohttp_client(make_app())  # same database: a second gateway process
    trigger = await create_trigger(b)
    assert (await hook(b, trigger, {"plate": "ZMB0001", "model": "m0"}))[0] == 201
    monkeypatch.setattr(write_fence, "WRITE_SECONDS", 0.5)
    a_entities = a.app[services_key].store.entities
    paused, resume = asyncio.Event(), asyncio.Event()
    get = EntityStore.get

    async def held_up(self: EntityStore, *args: Any, **kwargs: Any) -> Any:
        if self is a_entities and not paused.is_set():  # A's first read, once
            paused.set()
            await resume.wait()
        return await get(self, *args, **kwargs)

    monkeypatch.setattr(EntityStore, "get", held_up)
    held = asyncio.create_task(hook(a, trigger, {"plate": "ZMB0001", "model": "m1"}))
    await asyncio.wait_for(paused.wait(), 10)
    await asyncio.sleep(1.2)  # past the fence
    status, answer = await hook(b, trigger, {"plate": "ZMB0001", "model": "m2"})
    assert status == 200, answer
    resume.set()
    status, answer = await held
    assert status == 503 and answer["outcome"] == "unknown", answer
    response = await b.get("/api/v1/entities/vehicle/ZMB0001", headers=auth())
    assert (await response.json())["model"] == "m2"


@pytest.mark.parametrize("fence", ["deadline", "claim"])
async def test_a_write_held_up_past_its_fence_does_not_land_over_the_newer_one(
    fence: str,
    aiohttp_client: Any,
    make_app: Callable[..., web.Application],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Process A is held up (paused) as it writes model m1, past its partner's patience;
    meanwhile the partner writes through process B: its retry of m1 with the same key once
    A's marker lease ran out (`claim`), then a newer m2. A, resuming, loses its round to B's
    writes and must not write m1 again over m2: past the request's deadline (`deadline`: 15 s
    from its arrival, here 0.5 s) or with its Idempotency-Key taken over (`claim`: the lease,
    here 1 s), nothing more is sent, and A answers 503, outcome unknown."""
    a = await aiohttp_client(make_app())
    b = await aiohttp_client(make_app())  # same database: a second gateway process
    trigger = await create_trigger(b)
    assert (await hook(b, trigger, {"plate": "ZMB0001", "model": "m0"}))[0] == 201
    if fence == "deadline":
        monkeypatch.setattr(write_fence, "WRITE_SECONDS", 0.5)
    else:
        monkeypatch.setattr(idempotency, "LEASE", timedelta(seconds=1))
    paused, resume = asyncio.Event(), asyncio.Event()
    replace_data = EntityStore.replace_data

    async def held_up(self: EntityStore, tenant: str, current: Any, *args: Any) -> Any:
        if args[0].get("model") == "m1" and not paused.is_set():  # A's write, once
            paused.set()
            await resume.wait()
        return await replace_data(self, tenant, current, *args)

    monkeypatch.setattr(EntityStore, "replace_data", held_up)
    first = {"Idempotency-Key": "k1"} if fence == "claim" else {}
    m1 = {"plate": "ZMB0001", "model": "m1"}
    held = asyncio.create_task(hook(a, trigger, m1, headers=first))
    await asyncio.wait_for(paused.wait(), 10)
    await asyncio.sleep(1.2)  # past the fence
    if fence == "claim":
        assert (await hook(b, trigger, m1, headers=first))[0] == 200  # the key taken over
    newer = {"Idempotency-Key": "k2"} if fence == "claim" else {}
    status, answer = await hook(b, trigger, {"plate": "ZMB0001", "model": "m2"}, headers=newer)
    assert status == 200, answer
    resume.set()
    status, answer = await held
    assert status == 503 and answer["outcome"] == "unknown", answer
    response = await b.get("/api/v1/entities/vehicle/ZMB0001", headers=auth())
    assert (await response.json())["model"] == "m2"
    services = b.app[services_key]
    await services.relay.run_until_idle()
    updated = services.store.db["events"].find({"type": "entity.updated"}, {"data.model": 1})
    models = sorted([e["data"]["model"] async for e in updated])
    assert models == (["m1", "m2"] if fence == "claim" else ["m2"])  # m1 once at most


async def test_a_null_for_a_required_member_is_its_value_so_a_creating_payload_resent_is_no_change(
    client: Client,
) -> None:
    """A create stores a required nullable member's null (`"removed_at": null`); every later
    write's merge removed it, so the very payload that created the entity was a 422 "required
    field is missing" when the partner sent it again, kept in `rejected`."""
    schema = {
        "type": "object",
        "required": ["removed_at", "s"],
        "properties": {"removed_at": {"type": ["string", "null"]}, "s": {"type": "string"}},
    }
    kind = {"name": "baixa", "schema": schema}
    assert (await client.post("/api/v1/kinds", json=kind, headers=auth())).status == 201
    trigger = await create_trigger(client, entity_type="other", kind="baixa")
    payload = {"key": "B1", "removed_at": None, "s": "a"}
    assert (await hook(client, trigger, payload))[0] == 201
    status, answer = await hook(client, trigger, payload)
    assert (status, answer["changed"]) == (200, []), answer
    status, answer = await hook(client, trigger, {**payload, "s": "b"})
    assert (status, answer["changed"]) == (200, ["s"]), answer
    path = "/api/v1/entities/other/baixa:B1"
    patched = await client.patch(path, json={"removed_at": "2026-12-06"}, headers=auth())
    assert patched.status == 200, await patched.text()
    patched = await client.patch(path, json={"removed_at": None}, headers=auth())
    assert (await patched.json())["removed_at"] is None  # set back to null, not removed
    refused = await client.patch(path, json={"s": None}, headers=auth())  # no null allowed
    problem = await refused.json()
    assert refused.status == 422, problem
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [("/s", "type")]


async def test_a_partners_nulls_are_read_alike_whether_or_not_the_entity_exists_yet(
    client: Client,
) -> None:
    """A trigger's payload creating an entity was stored as sent, nulls included: an ERP's
    full record with `"renavam": null` was a 422 (`null` is no text) while the vehicle did not
    exist, and a 200 once it did (the null removes the member). Merged into nothing, a null
    removes its member on a create too, nested ones included."""
    trigger = await create_trigger(client, entity_type="vehicle")
    payload = {
        "plate": "NUL2000",
        "make": "Fiat",
        "renavam": None,
        "current_driver": {"name": "Ana", "cpf": "52998224725", "id": None},
    }
    status, created = await hook(client, trigger, payload)
    assert status == 201, created
    stored = await (await client.get("/api/v1/entities/vehicle/NUL2000", headers=auth())).json()
    assert "renavam" not in stored
    assert stored["current_driver"] == {"name": "Ana", "cpf": "52998224725"}
    status, again = await hook(client, trigger, payload)
    assert (status, again["changed"]) == (200, []), again
    mapping = "name: nulls\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields:\n"
    mapping += "  plate: placa\n  renavam: r\n"
    tried = await client.post(
        "/api/v1/mappings/test",
        json={"mapping": mapping, "payload": {"placa": "NUL3000", "r": None}},
        headers=auth(),
    )
    assert tried.status == 200, await tried.text()
    (item,) = (await tried.json())["results"]
    assert item["entity"]["write"] == "create" and "errors" not in item["entity"], item


async def test_a_driver_a_service_record_or_a_contact_is_replaced_whole_by_a_write(
    client: Client,
) -> None:
    """Merged member by member, an ERP's report of another driver ({name, cpf}) kept the
    assigned driver's `id` beside them, a service without a plan kept the last one's `plan`
    (the fleet then reset that plan alone), a new contact kept the old one's phone."""
    vehicle = {
        "plate": "CDR1234",
        "current_driver": {"id": "drv-ana", "cpf": "39053344705", "name": "Ana"},
        "last_service": {"at": "2026-11-01T10:00:00Z", "km": 9000, "plan": "Troca de óleo"},
    }
    created = await client.post("/api/v1/entities/vehicle", json=vehicle, headers=auth())
    assert created.status == 201, await created.text()
    trigger = await create_trigger(client)
    report = {
        "plate": "CDR1234",
        "current_driver": {"name": "Bruno", "cpf": "111.444.777-35"},
        "last_service": {"at": "2026-12-05T10:00:00Z", "km": 20000},
    }
    status, answer = await hook(client, trigger, report)
    assert status == 200, answer
    stored = await (await client.get("/api/v1/entities/vehicle/CDR1234", headers=auth())).json()
    assert stored["current_driver"] == {"name": "Bruno", "cpf": "11144477735"}
    assert stored["last_service"] == {"at": "2026-12-05T10:00:00Z", "km": 20000}
    supplier = {
        "name": "Guincho",
        "cnpj": "11.222.333/0001-81",
        "contact": {"name": "Carlos", "phone": "(11) 3333-4444"},
    }
    created = await client.post("/api/v1/entities/supplier", json=supplier, headers=auth())
    assert created.status == 201, await created.text()
    path = "/api/v1/entities/supplier/11222333000181"
    contact = {"name": "Dora", "email": "dora@example.com"}
    patched = await client.patch(path, json={"contact": contact}, headers=auth())
    assert (await patched.json())["contact"] == contact
