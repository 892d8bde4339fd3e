"""`only_forward` orders an integer wider than 64 bits as the number it is, the stored one
too (its text in the database): docs/mappings.md "Only-forward fields"."""

from __future__ import annotations

from gateway.entities import behind
from gateway.formats.json_tree import WideInt
from tests.support import auth
from tests.triggers_support import Client, create_trigger, upload_mapping

FORWARD = """
name: of-test
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: plate
  attributes.counter: {from: counter, only_forward: true}
"""


async def test_only_forward_does_not_move_a_wide_integer_back(client: Client) -> None:
    await upload_mapping(client, FORWARD)
    trigger = await create_trigger(client, mapping="of-test", name="of")
    headers = {"Authorization": f"Bearer {trigger['token']}", "Content-Type": "application/json"}
    first = await client.post(
        f"/hooks/{trigger['id']}",
        data=b'{"plate": "OFW1A11", "counter": 123456789012345678901234567}',
        headers=headers,
    )
    assert first.status == 201, await first.text()
    second = await client.post(
        f"/hooks/{trigger['id']}", data=b'{"plate": "OFW1A11", "counter": 5}', headers=headers
    )
    answer = await second.json()
    got = await (await client.get("/api/v1/entities/vehicle/OFW1A11", headers=auth())).json()
    # 5 is behind 123456789012345678901234567: skipped, not written
    assert got["attributes"]["counter"] == "123456789012345678901234567", (answer, got)
    assert answer.get("skipped") == ["attributes.counter"], answer


def test_a_stored_wide_integer_orders_only_forward_values() -> None:
    stored = "2" * 25  # a wide integer as the database holds it: its text
    assert behind(5, stored)
    assert behind(WideInt("1" * 25), stored)
    assert not behind(WideInt("3" * 25), stored)
    assert not behind(5, "0" * 24 + "1")  # zero-led digits: text a number never is
    assert not behind("5", stored)  # text is not ordered against it
