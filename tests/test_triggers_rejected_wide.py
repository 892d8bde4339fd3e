"""A kept (422) payload is replayed as the partner sent it (docs/triggers.md "Rejected
payloads and replay"): a wide integer must stay a number, not become text."""

from __future__ import annotations

from gateway.formats.json_tree import WideInt, dumps_exact, loads_exact
from tests.support import auth
from tests.triggers_support import Client, create_trigger


async def test_a_replayed_wide_integer_is_still_a_number(client: Client) -> None:
    kind = await client.post(
        "/api/v1/kinds",
        headers=auth(),
        json={
            "name": "tyre",
            "schema": {
                "type": "object",
                "required": ["serial"],
                "properties": {"serial": {"type": "string"}},
            },
        },
    )
    assert kind.status == 201, await kind.text()
    trigger = await create_trigger(client, name="tyres", entity_type="other", kind="tyre")
    sent = await client.post(
        f"/hooks/{trigger['id']}",
        data=b'{"key": "T9", "serial": 123456789012345678901234567}',
        headers={"Authorization": f"Bearer {trigger['token']}", "Content-Type": "application/json"},
    )
    assert sent.status == 422, await sent.text()  # a number where the kind wants text
    listed = await (
        await client.get(
            f"/api/v1/rejected?trigger_id={trigger['id']}&status=pending", headers=auth()
        )
    ).json()
    record = listed["items"][0]["id"]
    # nothing changed: the same payload through the same trigger is refused the same way
    replayed = await client.post(f"/api/v1/rejected/{record}/replay", headers=auth())
    body = await replayed.json()
    assert replayed.status == 422, body
    got = await client.get("/api/v1/entities/other/tyre:T9", headers=auth())
    assert got.status == 404, await got.text()


def test_a_kept_payload_text_reads_back_with_its_wide_integers_as_numbers() -> None:
    payload = loads_exact(b'{"a": [123456789012345678901234567, -98765432109876543210], "b": "x"}')
    text = dumps_exact({**payload, "made": 2**70})  # one a mapping's items made, too
    assert text == (
        b'{"a":[123456789012345678901234567,-98765432109876543210],"b":"x",'
        b'"made":1180591620717411303424}'
    )
    again = loads_exact(text)
    assert [type(v) for v in again["a"]] == [WideInt, WideInt]
    assert dumps_exact({"plain": 1}) == b'{"plain":1}'
