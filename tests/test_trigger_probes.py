"""Partner probes (Samsara's Ping, {"action": "test"}): answered 200 by the trigger's mapping,
nothing written, nothing kept; every other payload is mapped and answered as before."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidPayload
from gateway.mapping import load_mapping
from tests.support import auth
from tests.triggers_support import Client, create_trigger, entities, hook, upload_mapping

PROBED = """
name: probed
direction: inbound
entity_type: vehicle
key: [plate]
probe:
  when: {from: action, equals: test}
  answer: {pong: true}
fields:
  plate: {from: plate, required: true}
  make: make
"""
# The schema every data payload meets and a probe does not.
SCHEMA = {"type": "object", "required": ["plate"]}


async def _metric(client: Client, outcome: str) -> float:
    text = await (await client.get("/metrics")).text()
    lines = [ln for ln in text.splitlines() if f'outcome="{outcome}"' in ln]
    prefix = "gateway_trigger_requests_total{"
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(prefix))


async def test_a_probe_is_answered_200_and_writes_nothing(client: Client) -> None:
    await upload_mapping(client, PROBED)
    trigger = await create_trigger(client, mapping="probed", input_schema=SCHEMA)
    status, answer = await hook(client, trigger, {"action": "test"})
    assert (status, answer) == (200, {"pong": True})
    assert await entities(client) == []
    kept = await (await client.get("/api/v1/rejected", headers=auth())).json()
    assert kept["items"] == []
    assert await _metric(client, "probe") == 1
    status, answer = await hook(client, trigger, {"plate": "ABC1D23", "make": "Fiat"})
    assert status == 201 and answer["created"] is True
    status, answer = await hook(client, trigger, [{"plate": "ABC1D23"}, {"plate": "XYZ9A87"}])
    assert status == 200 and answer["summary"]["items"] == 2
    status, _ = await hook(client, trigger, {"action": "other"})
    assert status == 422  # not a probe: the input schema refuses it


async def test_the_dry_run_shows_the_probes_answer(client: Client) -> None:
    await upload_mapping(client, PROBED)
    body = {"name": "probed", "payload": {"action": "test"}}
    response = await client.post("/api/v1/mappings/test", json=body, headers=auth())
    assert response.status == 200
    answer = await response.json()
    assert answer["probe"] == {"pong": True} and "results" not in answer


async def test_the_probe_needs_the_triggers_credentials(client: Client) -> None:
    await upload_mapping(client, PROBED)
    trigger = await create_trigger(client, mapping="probed")
    response = await client.post(
        f"/hooks/{trigger['id']}", json={"action": "test"}, headers={"Authorization": "Bearer x"}
    )
    assert response.status == 401


@pytest.mark.parametrize(
    ("when", "payload", "probe"),
    [
        ("eventType == 'Ping'", {"eventType": "Ping"}, True),
        ("eventType == 'Ping'", {"eventType": "Alert"}, False),
        ("eventType == 'Ping'", [{"eventType": "Ping"}], False),
        ("length(events) == `0`", {"events": []}, True),
        ("length(events) == `0`", {"events": 5}, False),  # a failing condition: not a probe
    ],
)
def test_probe_conditions(when: str, payload: Any, probe: bool) -> None:
    mapping = load_mapping(PROBED.replace("{from: action, equals: test}", f'"{when}"'))
    assert (mapping.probe(payload) == {"pong": True}) is probe


def test_the_answer_defaults_to_ok_and_is_a_fresh_copy() -> None:
    mapping = load_mapping(PROBED.replace("  answer: {pong: true}\n", ""))
    first = mapping.probe({"action": "test"})
    assert first == {"ok": True}
    assert first is not None
    first["ok"] = False
    assert mapping.probe({"action": "test"}) == {"ok": True}


@pytest.mark.parametrize(
    ("probe", "pointer"),
    [
        ("probe: {answer: {}}", "/probe"),
        ("probe: {when: a, answer: [1]}", "/probe/answer"),
        ("probe: {when: a, reply: {}}", "/probe/reply"),
        ("probe: {when: 'a ==', answer: {}}", "/probe/when"),
    ],
)
def test_bad_probes_are_refused_when_the_file_loads(probe: str, pointer: str) -> None:
    text = PROBED.replace(
        "probe:\n  when: {from: action, equals: test}\n  answer: {pong: true}", probe
    )
    with pytest.raises(InvalidPayload) as caught:
        load_mapping(text)
    assert pointer in {p.pointer for p in caught.value.problems}
