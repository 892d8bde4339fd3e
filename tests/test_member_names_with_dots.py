"""Members whose names have dots (flat-keyed partners: flespi's `engine.ignition.status`):
a path brackets such a name (`attributes["fuel.card"]`) and paths are matched member by
member, so a change to one is no change to `attributes.fuel`; a plain dotted path in a filter
still reaches it (docs/concepts.md "Paths", docs/actions.md filters). Found by the outside
tester `fuzz`."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.delivery.worker import DeliveryWorker
from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
)
from tests.support import auth
from tests.triggers_support import create_trigger, hook, upload_mapping

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]


@pytest.fixture
def worker(client: Client) -> DeliveryWorker:
    worker: DeliveryWorker = client.app[services_key].delivery_worker
    worker.rng = lambda: 0.5
    return worker


async def _deliver(client: Client, worker: DeliveryWorker) -> Counter[str]:
    await client.app[services_key].relay.run_until_idle()
    return await worker.run_until_idle()


async def _subscribed(client: Client, partner: Partner, filters: list[dict[str, Any]]) -> None:
    """One subscription per filter, each to its own action (`path` `/n`, its place)."""
    created = await create_partner(client, partner.url)
    for n, event_filter in enumerate(filters):
        action = await create_action(client, created["id"], name=f"push{n}", path=f"/{n}")
        await create_subscription(client, action["id"], filter=event_filter)


async def _patch(client: Client, entity: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    response = await client.patch(
        f"/api/v1/entities/vehicle/{entity['id']}", json=body, headers=auth()
    )
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def _events(client: Client) -> list[dict[str, Any]]:
    await client.app[services_key].relay.run_until_idle()
    response = await client.get("/api/v1/events?type=entity.updated", headers=auth())
    assert response.status == 200, await response.text()
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


def _reached(partner: Partner) -> list[str]:
    """The paths (the subscriptions' places) the partner got deliveries at, in order."""
    return sorted(r.path for r in partner.requests)


async def test_a_change_to_a_name_with_a_dot_is_no_change_to_the_name_before_it(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    await _subscribed(client, partner, [{"changed": ["attributes.fuel"]}])
    vehicle = await create_vehicle(client, attributes={"fuel": {"level": 50}, "fuel.card": "1111"})

    answer = await _patch(client, vehicle, {"attributes": {"fuel.card": "2222"}})

    assert answer["changed"] == ['attributes["fuel.card"]']
    [event] = await _events(client)
    assert event["changes"] == [{"field": 'attributes["fuel.card"]', "old": "1111", "new": "2222"}]
    assert await _deliver(client, worker) == Counter()  # attributes.fuel did not change
    assert partner.requests == []

    await _patch(client, vehicle, {"attributes": {"fuel": {"level": 40}}})
    assert await _deliver(client, worker) == Counter(succeeded=1)
    [sent] = partner.requests
    assert sent.json()["changes"] == [
        {"field": "attributes.fuel.level", "old": 50, "new": 40}  # as ever: a plain path
    ]


async def test_the_write_answer_tells_a_name_with_a_dot_from_nested_names(
    client: Client,
) -> None:
    answers = []
    for plate, attributes in (("DOT1A11", {"a.b": 1}), ("DOT1A12", {"a": {"b": 1}})):
        vehicle = await create_vehicle(client, plate, attributes={"a": {"b": 0}, "a.b": 0})
        answers.append((await _patch(client, vehicle, {"attributes": attributes}))["changed"])

    assert answers == [['attributes["a.b"]'], ["attributes.a.b"]]


async def test_names_that_need_brackets_are_written_as_json_strings(client: Client) -> None:
    vehicle = await create_vehicle(client, attributes={"x": 0})
    odd = {"": 1, "a[0]": 2, 'say "hi".': 3, "ção.ok": 4, "plain]": 5}

    answer = await _patch(client, vehicle, {"attributes": odd})

    assert sorted(answer["changed"]) == sorted(
        [
            'attributes[""]',
            'attributes["a[0]"]',
            'attributes["say \\"hi\\"."]',
            'attributes["ção.ok"]',
            "attributes.plain]",
        ]
    )


async def test_a_filter_reaches_a_name_with_dots_by_its_plain_or_bracketed_path(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """A filter written for a flat key before its name was bracketed (`changed` on
    `attributes.engine.ignition.status`, as a change to it was then reported) keeps matching;
    so do the bracketed path and the object holding it, but not a part of the name."""
    await _subscribed(
        client,
        partner,
        [
            {"changed": ["attributes.engine.ignition.status"]},
            {"changed": ['attributes["engine.ignition.status"]']},
            {"changed": ["attributes"]},
            {"changed": ["attributes.engine"]},
            {"changed": ["attributes.engine.ignition"]},
            {"entity": {"attributes.engine.ignition.status": "on"}},
            {"entity": {'attributes["engine.ignition.status"]': "on"}},
            {"entity": {"attributes.engine.ignition": "on"}},
        ],
    )
    vehicle = await create_vehicle(client, attributes={"engine.ignition.status": "off"})

    await _patch(client, vehicle, {"attributes": {"engine.ignition.status": "on"}})

    assert await _deliver(client, worker) == Counter(succeeded=5)
    assert _reached(partner) == ["/0", "/1", "/2", "/5", "/6"]


async def test_a_plain_entity_path_reads_nested_names_before_a_name_with_dots(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    await _subscribed(
        client,
        partner,
        [
            {"entity": {"attributes.fuel.card": "nested"}},
            {"entity": {"attributes.fuel.card": "flat"}},
            {"entity": {'attributes["fuel.card"]': "flat"}},
            {"entity": {'attributes.fuel["card"]': "nested"}},
        ],
    )
    vehicle = await create_vehicle(
        client, attributes={"fuel": {"card": "nested"}, "fuel.card": "flat"}
    )

    await _patch(client, vehicle, {"status": "maintenance"})

    assert await _deliver(client, worker) == Counter(succeeded=3)
    assert _reached(partner) == ["/0", "/2", "/3"]


FLAT = """
name: flat-telemetry
direction: inbound
entity_type: vehicle
key: [plate]
emit:
  - {type: vehicle.telemetry, announce: {changed: [attributes]}}
  - {type: vehicle.moved, announce: {changed: [odometer_km]}}
fields:
  plate: ident
  odometer_km: km
  attributes: telemetry
"""


async def test_a_trigger_shows_the_changes_to_names_with_dots_under_what_it_exposes(
    client: Client,
) -> None:
    """A flat-keyed partner's object written whole: a trigger exposing `attributes` shows the
    partner the changes to its members whose names have dots, and `announce: {changed}` on
    `attributes` is announced by them (the rule of the filters)."""
    await upload_mapping(client, FLAT)
    trigger = await create_trigger(client, mapping="flat-telemetry", expose=["plate", "attributes"])
    sent = {"ident": "ABC1D23", "km": 10, "telemetry": {"fuel": {"level": 50}, "fuel.card": "1"}}
    status, answer = await hook(client, trigger, sent)
    assert status == 201, answer

    sent["telemetry"] = {"fuel": {"level": 50}, "fuel.card": "2"}
    status, answer = await hook(client, trigger, sent)

    assert status == 200, answer
    assert answer["changed"] == ['attributes["fuel.card"]']

    sent["km"] = 11
    status, answer = await hook(client, trigger, sent)
    assert status == 200, answer
    assert answer["changed"] == []  # odometer_km is not exposed
    await client.app[services_key].relay.run_until_idle()
    response = await client.get("/api/v1/events?limit=50", headers=auth())
    types = sorted(e["type"] for e in (await response.json())["items"])
    assert types.count("vehicle.telemetry") == 2  # created, then the card
    assert types.count("vehicle.moved") == 2  # created, then the km
