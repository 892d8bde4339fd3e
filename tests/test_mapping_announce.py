"""A mapping's events announce changes (`emit[].announce`, docs/mappings.md "Which writes
announce an event"): posted through a trigger, a write that changed nothing (the same payload
again, a stale only-forward value) announces nothing unless the mapping says `every`."""

from __future__ import annotations

from typing import Any

from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import Client, create_trigger, hook, upload_mapping

MAPPING = """
name: tracker-state
direction: inbound
entity_type: vehicle
key: [plate]
emit:
  - vehicle.state
  - {type: vehicle.position, announce: {changed: [last_position]}}
  - {type: vehicle.registered, announce: create}
  - {type: vehicle.ping, announce: every}
  - {type: vehicle.alarm, when: alarm, announce: every}
fields:
  plate: plate
  odometer_km: {from: km, only_forward: true}
  last_position.lat: {from: lat, only_forward: {by: last_position.time}}
  last_position.lon: {from: lon, only_forward: {by: last_position.time}}
  last_position.time: {from: at, transforms: [{datetime: {parse: iso8601}}]}
"""


def fix(at: str, lat: float, km: float, **more: Any) -> dict[str, Any]:
    return {"plate": "ABC1D23", "at": at, "lat": lat, "lon": -46.6, "km": km, **more}


async def post(client: Client, trigger: dict[str, Any], body: dict[str, Any]) -> list[str]:
    status, answer = await hook(client, trigger, body)
    assert status in (200, 201), answer
    return list(answer["events"])


async def stored_types(client: Client) -> list[str]:
    response = await client.get("/api/v1/events?limit=200", headers=auth())
    page = await response.json()
    assert response.status == 200, page
    return sorted(e["type"] for e in page["items"])


async def test_mapping_events_follow_what_each_write_changed(client: Client) -> None:
    await upload_mapping(client, MAPPING)
    trigger = await create_trigger(client, mapping="tracker-state")
    first = fix("2026-11-20T13:45:22Z", -23.5, 1000)
    created = ["vehicle.state", "vehicle.position", "vehicle.registered", "vehicle.ping"]
    assert await post(client, trigger, first) == ["entity.created", *created]
    # The same payload again (a duplicate delivery): nothing changed, only `every` announces.
    assert await post(client, trigger, first) == ["vehicle.ping"]
    # A stale position (older than the stored one) with a newer odometer: the odometer changed,
    # the position did not move, so no vehicle.position; nor vehicle.registered.
    stale = fix("2026-11-20T13:40:00Z", -23.9, 1005)
    assert await post(client, trigger, stale) == ["entity.updated", "vehicle.state", "vehicle.ping"]
    # Stale in everything: no change at all.
    older = fix("2026-11-20T13:30:00Z", -23.9, 900)
    assert await post(client, trigger, older) == ["vehicle.ping"]
    moved = fix("2026-11-20T13:46:00Z", -23.6, 1005, alarm="sos")
    assert await post(client, trigger, moved) == [
        "entity.updated",
        "vehicle.state",
        "vehicle.position",
        "vehicle.ping",
        "vehicle.alarm",
    ]
    # The answers are what was stored: the events listed are the events relayed.
    await client.app[services_key].relay.run_until_idle()
    types = await stored_types(client)
    assert types.count("vehicle.position") == 2
    assert types.count("vehicle.registered") == 1
    assert types.count("vehicle.state") == 3
    assert types.count("vehicle.ping") == 5


async def test_an_also_target_announces_only_what_changed_it(client: Client) -> None:
    """The second entity of a payload (`also`) follows the same rule: a checklist sent twice
    announces its vehicle's reading once."""
    await upload_mapping(
        client,
        """
name: checklist-reading
direction: inbound
entity_type: other
kind: checklist
key: [key]
emit: [{type: checklist.completed, announce: create}]
fields:
  key: id
  vehicle_plate: placa
  driver_cpf: cpf
  answers: answers
  odometer_km: km
  completed_at: {from: at, transforms: [{datetime: {parse: iso8601}}]}
also:
  - entity_type: vehicle
    key: [plate]
    emit: [vehicle.reading]
    fields:
      plate: {main: vehicle_plate}
      odometer_km: {main: odometer_km, only_forward: true}
""",
    )
    trigger = await create_trigger(
        client, entity_type="other", kind="checklist", mapping="checklist-reading"
    )
    body = {
        "id": "chk-1",
        "placa": "ABC1D23",
        "cpf": "52998224725",
        "answers": [{"question": "Pneus ok?", "answer": True}],
        "km": 1500,
        "at": "2026-11-20T10:00:00Z",
    }
    status, first = await hook(client, trigger, body)
    assert status == 201, first
    assert first["events"] == ["entity.created", "checklist.completed"]
    assert first["also"][0]["events"] == ["entity.created", "vehicle.reading"]
    status, again = await hook(client, trigger, body)
    assert status == 200, again
    assert (again["events"], again["also"][0]["events"]) == ([], [])
    corrected = {**body, "km": 1600}
    status, third = await hook(client, trigger, corrected)
    assert status == 200, third
    assert third["events"] == ["entity.updated"]  # completed once, on create
    assert third["also"][0]["events"] == ["entity.updated", "vehicle.reading"]


async def test_announce_is_checked_when_the_mapping_is_uploaded(client: Client) -> None:
    text = """
name: bad-announce
direction: inbound
entity_type: vehicle
key: [plate]
emit:
  - {type: vehicle.state, announce: sometimes}
  - {type: vehicle.position, announce: {changed: [last_position]}}
fields:
  plate: plate
"""
    response = await client.post(
        "/api/v1/mappings",
        data=text.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    problem = await response.json()
    assert response.status == 422, problem
    pointers = sorted(e["pointer"] for e in problem["errors"])
    assert "/emit/0/announce" in pointers
    assert any(p.startswith("/emit/1/announce") for p in pointers), problem


NESTED = """
name: nested-announce
direction: inbound
entity_type: vehicle
key: [plate]
emit:
  - {type: vehicle.moved, announce: {changed: [last_position.lat]}}
  - {type: vehicle.tagged, announce: {changed: [attributes.tag]}}
fields:
  plate: plate
  last_position.lat: lat
  last_position.lon: lon
  last_position.time: at
  attributes.tag: tag
  attributes.color: color
"""


async def dry_events(client: Client, payload: dict[str, Any]) -> list[str]:
    response = await client.post(
        "/api/v1/mappings/test", json={"mapping": NESTED, "payload": payload}, headers=auth()
    )
    answer = await response.json()
    assert response.status == 200, answer
    (result,) = answer["results"]
    return list(result["events"])


async def test_a_nested_target_is_announced_by_the_write_that_gives_its_object(
    client: Client,
) -> None:
    """`changed: [last_position.lat]` on a vehicle that has no `last_position` yet (created by
    the admin): its first position makes the whole object appear, ONE change at
    `last_position`, and the target under it went from absent to a value: announced, as a
    creation with a value there is, in the dry run as in the write. An object that appears
    without the target (`attributes` with a colour only) does not announce it."""
    await upload_mapping(client, NESTED)
    trigger = await create_trigger(client, mapping="nested-announce", methods=["POST"])
    response = await client.post(
        "/api/v1/entities/vehicle", headers=auth(), json={"plate": "ANN1A11", "make": "Fiat"}
    )
    assert response.status == 201, await response.text()
    place = {"plate": "ANN1A11", "lat": -23.5, "lon": -46.6, "at": "2026-12-06T15:00:00Z"}
    first = {**place, "color": "red"}
    expected = ["entity.updated", "vehicle.moved"]
    assert await dry_events(client, first) == expected
    status, answer = await hook(client, trigger, first)
    assert status == 200, answer
    assert sorted(answer["changed"]) == ["attributes", "last_position"]
    assert answer["events"] == expected
    tagged = {**first, "tag": "x"}
    assert await dry_events(client, tagged) == ["entity.updated", "vehicle.tagged"]
    status, answer = await hook(client, trigger, tagged)
    assert (status, answer["events"]) == (200, ["entity.updated", "vehicle.tagged"]), answer


def test_a_filter_on_a_nested_field_hears_the_object_that_brings_it() -> None:
    """A subscription filter's `changed` follows the same rule (`change_reaches`): a change
    of the whole `attributes` concerns `attributes.tag` when the tag's value differs."""
    from gateway.actions.filters import compile_filter

    wanted = compile_filter({"changed": ["attributes.tag"]})

    def event(old: Any, new: Any) -> dict[str, Any]:
        return {"changes": [{"field": "attributes", "old": old, "new": new}]}

    assert wanted.matches(event(None, {"tag": "x"}))
    assert wanted.matches(event({"tag": "x"}, None))
    assert not wanted.matches(event(None, {"color": "red"}))
    assert wanted.matches({"changes": [{"field": "attributes"}]})  # values unknown: it may
    assert wanted.matches({"changes": [{"field": "attributes.tag", "old": 1, "new": 2}]})
