"""A mapping's `answer`: the acknowledgement a partner waits for before it drops what it sent
(Overland keeps and resends a batch until the answer holds `"result": "ok"`), added to every
2xx answer of a call the mapping maps and to no error; the gateway's own members stay its own."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.support import auth
from tests.triggers_support import (
    PAYLOADS,
    VEHICLE,
    Client,
    bearer,
    create_position_trigger,
    create_trigger,
    hook,
    upload_mapping,
    upload_shipped,
    vehicle_track,
)

OVERLAND = json.loads((PAYLOADS / "overland_locations.json").read_text())
ACKNOWLEDGED = """
name: acknowledged
direction: inbound
entity_type: vehicle
key: [plate]
answer: {received: true, note: [obrigado]}
fields:
  plate: {from: plate, required: true}
  make: make
"""


async def _overland_vehicle(client: Client) -> None:
    vehicle = {**VEHICLE, "attributes": {"tracker_id": "353861053849681"}}
    response = await client.post("/api/v1/entities/vehicle", json=vehicle, headers=auth())
    assert response.status == 201, await response.text()


async def test_an_overland_batch_and_its_resend_are_acknowledged_and_stored_once(
    client: Client,
) -> None:
    await _overland_vehicle(client)
    await upload_shipped(client, "overland")
    trigger = await create_position_trigger(client, mapping="overland")
    status, answer = await hook(client, trigger, OVERLAND)
    assert status == 200 and answer["result"] == "ok"
    assert answer["summary"] == {"items": 2, "stored": 2, "duplicates": 0, "failed": 0}
    # The app did not see our answer (a timeout) and sends the same batch again.
    status, answer = await hook(client, trigger, OVERLAND)
    assert status == 200 and answer["result"] == "ok"
    assert answer["summary"] == {"items": 2, "stored": 0, "duplicates": 2, "failed": 0}
    track = await vehicle_track(client)
    assert [p["time"] for p in track["items"]] == ["2026-12-06T06:48:07Z", "2026-12-06T06:48:17Z"]


async def test_a_batch_with_a_refused_point_is_acknowledged_and_the_point_kept(
    client: Client,
) -> None:
    await _overland_vehicle(client)
    await upload_shipped(client, "overland")
    trigger = await create_position_trigger(client, mapping="overland")
    body = copy.deepcopy(OVERLAND)
    body["locations"][1]["geometry"]["coordinates"] = [-46.6, "-23.5"]  # text: no number
    status, answer = await hook(client, trigger, body)
    assert status == 207 and answer["result"] == "ok"
    assert [r["status"] for r in answer["results"]] == [201, 422]
    kept = await (await client.get("/api/v1/rejected", headers=auth())).json()
    assert [(k["scope"], k["index"]) for k in kept["items"]] == [("item", 1)]


async def test_an_error_answer_carries_no_acknowledgement(client: Client) -> None:
    await _overland_vehicle(client)
    await upload_shipped(client, "overland")
    trigger = await create_position_trigger(client, mapping="overland")
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=b'{"locations": [',
        headers={**bearer(trigger), "Content-Type": "application/json"},
    )
    assert response.status == 400 and "result" not in await response.json()
    await upload_mapping(client, ACKNOWLEDGED)
    entity_trigger = await create_trigger(client, mapping="acknowledged")
    status, answer = await hook(client, entity_trigger, {"make": "Fiat"})  # no plate
    assert status == 422 and "received" not in answer


async def test_an_entity_write_and_its_idempotent_replay_carry_the_acknowledgement(
    client: Client,
) -> None:
    await upload_mapping(client, ACKNOWLEDGED)
    trigger = await create_trigger(client, mapping="acknowledged")
    key = {"Idempotency-Key": "erp-0001"}
    status, answer = await hook(client, trigger, {"plate": "ABC1D23"}, headers=key)
    assert status == 201 and answer["created"] is True
    assert (answer["received"], answer["note"]) == (True, ["obrigado"])
    status, again = await hook(client, trigger, {"plate": "ABC1D23"}, headers=key)
    assert (status, again) == (201, answer)
    status, batch = await hook(client, trigger, [{"plate": "ABC1D23"}, {"plate": "XYZ9A87"}])
    assert status == 200 and batch["received"] is True and len(batch["results"]) == 2


async def test_a_batch_refusing_an_item_the_partner_must_resend_is_not_acknowledged(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An item refused with a 503 (its entity's events wait for the relay) is not kept: the
    partner is told to send it again, so the 207 carries no acknowledgement that would make
    it drop the batch."""
    from gateway.store import entities as entity_store

    monkeypatch.setattr(entity_store, "MAX_OUTBOX", 2)
    await upload_mapping(client, ACKNOWLEDGED)
    trigger = await create_trigger(client, mapping="acknowledged")
    assert (await hook(client, trigger, {"plate": "ABC1D23", "make": "Fiat"}))[0] == 201
    assert (await hook(client, trigger, {"plate": "ABC1D23", "make": "VW"}))[0] == 200
    batch = [{"plate": "ABC1D23", "make": "GM"}, {"plate": "XYZ9A87", "make": "Ford"}]
    status, answer = await hook(client, trigger, batch)
    assert status == 207 and [r["status"] for r in answer["results"]] == [503, 201]
    assert "received" not in answer


@pytest.mark.parametrize(
    ("answer", "pointer", "keyword"),
    [
        ("{results: []}", "/answer/results", "reserved"),
        ("{result: ok, summary: x}", "/answer/summary", "reserved"),
        ("{status: ok}", "/answer/status", "reserved"),  # a replay's answer has its own
        ("ok", "/answer", "type"),
    ],
)
async def test_an_answer_that_is_not_an_object_of_the_partners_own_members_is_refused(
    client: Client, answer: str, pointer: str, keyword: str
) -> None:
    text = ACKNOWLEDGED.replace("answer: {received: true, note: [obrigado]}", f"answer: {answer}")
    response = await client.post(
        "/api/v1/mappings",
        data=text.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert response.status == 422
    problem = await response.json()
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [(pointer, keyword)]


async def test_the_dry_run_shows_the_acknowledgement_beside_the_results(client: Client) -> None:
    await upload_shipped(client, "overland")
    body: dict[str, Any] = {"name": "overland", "payload": OVERLAND}
    response = await client.post("/api/v1/mappings/test", json=body, headers=auth())
    assert response.status == 200, await response.text()
    tested = await response.json()
    assert tested["answer"] == {"result": "ok"} and len(tested["results"]) == 2
