"""A mapping condition's `gt`, `gte`, `lt`, `lte` compare numbers, an integer wider than
64 bits too (docs/triggers.md "Content types": a number to every type check)."""

from __future__ import annotations

from gateway.formats.json_tree import loads_exact
from gateway.mapping import load_mapping
from tests.support import auth
from tests.triggers_support import Client, create_trigger, upload_mapping

WIDE = b'{"plate": "WID1A11", "counter": 123456789012345678901234567}'

COND = """
name: wide-cond
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: plate
  attributes.positive: {when: {from: counter, gt: 0}, then: {value: true}, else: {value: false}}
"""


async def _post(client: Client, mapping: str) -> tuple[int, dict]:
    await upload_mapping(client, mapping)
    name = mapping.split("name: ", 1)[1].split("\n", 1)[0]
    trigger = await create_trigger(client, mapping=name, name=name)
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=WIDE,
        headers={"Authorization": f"Bearer {trigger['token']}", "Content-Type": "application/json"},
    )
    return response.status, await response.json()


async def test_a_gt_condition_holds_for_a_wide_positive_integer(client: Client) -> None:
    status, answer = await _post(client, COND)
    assert status == 201, answer
    got = await client.get("/api/v1/entities/vehicle/WID1A11", headers=auth())
    doc = await got.json()
    # 123456789012345678901234567 > 0: the condition must hold
    assert doc["attributes"]["positive"] is True, doc


DIGITS = "123456789012345678901234567"
PAYLOAD = loads_exact(
    b'{"counter": 123456789012345678901234567, "neg": -123456789012345678901234567,'
    b' "items": [{"n": 1}, {"n": 123456789012345678901234567}, {"n": 3}]}'
)


def test_ordering_conditions_compare_wide_integers_as_numbers() -> None:
    mapping = load_mapping(
        "name: t\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields:\n"
        "  plate: plate\n"
        "  attributes.low: {when: {from: neg, lt: 1}, then: {value: true}, else: {value: false}}\n"
        "  attributes.high: {when: {from: counter, lte: 5}, then: {value: 1}, else: {value: 0}}\n"
    )
    document = mapping.apply({"plate": "ABC1D23", **PAYLOAD}).document
    assert document["attributes"] == {"low": True, "high": 0}
