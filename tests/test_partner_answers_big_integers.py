"""Integers past 64 bits in a partner's answer keep every digit, as in a body pushed to a
trigger: a polled page writes what the same page pushed writes, ids that a float would round
together stay two, a cursor past 64 bits is stored and sent on, and a proxy call answers
(and maps) the exact digits."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.formats.json_tree import ANSWER_DEPTH
from tests.feed_doubles import ScriptedFeed, scripted
from tests.partner_double import (
    FakeClock,
    Partner,
    create_action,
    create_partner,
    partner,
    upload_mapping,
)
from tests.schedule_support import ERP_MAPPING, get, runner, runs, scripted_schedule
from tests.support import auth
from tests.triggers_support import create_trigger

__all__ = ["partner", "scripted"]  # fixtures
Client = TestClient[Any, Any]
WIDE = 12345678901234567890123  # past 2**64: orjson reads it as a float
U64 = 9223372036854775808  # 2**63: orjson reads it as an int, BSON stores none past 2**63 - 1
NANOS = 1733380000000000123  # 19 digits inside 64 bits (a nanosecond time): a number
PAGE = (
    b'{"items": [{"placa": "ABC1D23", "codigo": %d, "raw": 1},'
    b' {"placa": "BRA2E19", "codigo": 1, "raw": %d},'
    b' {"placa": "RIO3F45", "codigo": 2, "raw": %d}], "more": false}' % (WIDE, U64, NANOS)
)
PLATES = ("ABC1D23", "BRA2E19", "RIO3F45")


async def _attributes(client: Client, plate: str) -> dict[str, Any]:
    attributes: dict[str, Any] = (await get(client, f"/api/v1/entities/vehicle/{plate}"))[
        "attributes"
    ]
    return attributes


async def _until_idle(client: Client) -> dict[str, int]:
    return dict(await asyncio.wait_for(runner(client).run_until_idle(), 10))


async def test_a_polled_page_keeps_integers_past_64_bits_as_the_same_page_pushed_does(
    client: Client, scripted: ScriptedFeed
) -> None:
    await upload_mapping(client, ERP_MAPPING)
    trigger = await create_trigger(client, mapping="erp-vehicles")
    pushed = await client.post(
        f"/hooks/{trigger['id']}",
        data=PAGE,
        headers={"Authorization": f"Bearer {trigger['token']}", "Content-Type": "application/json"},
    )
    assert pushed.status in (200, 201, 207), await pushed.text()
    by_push = [await _attributes(client, p) for p in PLATES]
    assert by_push[0]["erp_id"] == str(WIDE)
    assert by_push[1]["raw"] == str(U64)
    assert by_push[2]["raw"] == NANOS
    for plate in PLATES:
        deleted = await client.delete(f"/api/v1/entities/vehicle/{plate}", headers=auth())
        assert deleted.status == 204, await deleted.text()

    scripted.answer = lambda after, n: PAGE
    schedule = await scripted_schedule(client, scripted)
    assert await _until_idle(client) == {"ok": 1}
    (run,) = await runs(client, schedule["id"])
    assert (run["written"], run["rejected"], run["item_errors"]) == (3, 0, [])
    assert [await _attributes(client, p) for p in PLATES] == by_push


async def test_deduplicated_ids_past_64_bits_that_a_float_rounds_together_stay_two(
    client: Client, scripted: ScriptedFeed
) -> None:
    page = (
        b'{"items": [{"id": 18446744073709551616, "placa": "ABC1D23", "codigo": "a"},'
        b' {"id": 18446744073709551617, "placa": "BRA2E19", "codigo": "b"}]}'
    )
    scripted.answer = lambda after, n: page
    schedule = await scripted_schedule(
        client, scripted, cursor=None, dedupe={"by": "id", "keep": 100}
    )
    assert await _until_idle(client) == {"ok": 1}
    (run,) = await runs(client, schedule["id"])
    assert (run["items_read"], run["written"], run["skipped"]) == (2, 2, 0)
    for plate in ("ABC1D23", "BRA2E19"):
        await get(client, f"/api/v1/entities/vehicle/{plate}")
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["remembered_ids"] == 2
    # The next run skips both: their ids were remembered exactly.
    runner(client).clock = clock = FakeClock()
    clock.advance(3600)
    assert await _until_idle(client) == {"ok": 1}
    assert (await runs(client, schedule["id"]))[0]["skipped"] == 2


async def test_a_cursor_past_64_bits_is_stored_and_sent_on_with_every_digit(
    client: Client, scripted: ScriptedFeed
) -> None:
    def answer(after: str | None, n: int) -> bytes:
        cursor = U64 + n  # the next call starts after this page
        item = b'{"placa": "RIO3F45", "codigo": "%d"}' % n
        more = b"true" if n == 1 else b"false"
        return b'{"items": [%s], "next": %d, "more": %s}' % (item, cursor, more)

    scripted.answer = answer
    schedule = await scripted_schedule(client, scripted)
    assert await _until_idle(client) == {"ok": 1}
    assert [c["after"] for c in scripted.calls] == [None, str(U64 + 1)]
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert (state["cursor"], state["failures"], state["last_error"]) == (str(U64 + 2), 0, None)
    (run,) = await runs(client, schedule["id"])
    assert (run["outcome"], run["error"], run["cursor_after"]) == ("ok", None, str(U64 + 2))
    assert (await _attributes(client, "RIO3F45"))["erp_id"] == "2"


RESPONSE_MAPPING = """
name: erp-answer
direction: outbound
response:
  erp_id: {from: codigo, transforms: [string]}
  raw: raw
"""


async def test_a_proxy_answer_and_its_response_mapping_keep_integers_past_64_bits(
    client: Client, partner: Partner
) -> None:
    partner.respond_with(raw=b'{"codigo": %d, "raw": %d, "small": 7}' % (WIDE, U64))
    await upload_mapping(client, RESPONSE_MAPPING)
    erp = await create_partner(client, partner.url, auth={"type": "none"})
    plain = await create_action(client, erp["id"], name="read", method="GET", mode="proxy")
    mapped = await create_action(
        client,
        erp["id"],
        name="read-mapped",
        method="GET",
        mode="proxy",
        response_mapping="erp-answer",
    )
    answers = []
    for action in (plain, mapped):
        response = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
        )
        assert response.status == 200, await response.text()
        answers.append(orjson.loads(await response.read())["data"])
    assert answers[0] == {"codigo": str(WIDE), "raw": str(U64), "small": 7}
    assert answers[1] == {"erp_id": str(WIDE), "raw": str(U64)}


async def test_a_19_digit_integer_inside_64_bits_stays_a_number_in_a_proxy_answer(
    client: Client, partner: Partner
) -> None:
    """The exact reader reads an answer again only for an integer that may be past 64 bits:
    a nanosecond time (19 digits, inside) stays the number it is, as does -2**63."""
    partner.respond_with(raw=b'{"at": %d, "low": -9223372036854775808, "f": 0.%d}' % (NANOS, U64))
    erp = await create_partner(client, partner.url, auth={"type": "none"})
    action = await create_action(client, erp["id"], name="read", method="GET", mode="proxy")
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    assert response.status == 200, await response.text()
    data = orjson.loads(await response.read())["data"]
    assert data == {"at": NANOS, "low": -(2**63), "f": float(f"0.{U64}")}


def _nested(depth: int, inner: bytes) -> bytes:
    return b'{"x": ' * depth + inner + b"}" * depth


@pytest.mark.parametrize("depth", [33, ANSWER_DEPTH - 1])
async def test_a_polled_answer_nested_deep_keeps_its_ids_and_cursor_past_64_bits(
    client: Client, scripted: ScriptedFeed, depth: int
) -> None:
    """A partner's metadata nested deeper than a pushed body may be (33 levels), or as deep
    as an answer is read (the page itself one level more, ANSWER_DEPTH): the page's id and
    cursor keep their digits all the same."""
    # Digits in a string, after escaped quotes and backslashes, stay the string they are.
    text = b'"tel \\\\\\"%d\\" -%d"' % (WIDE, WIDE)
    page = b'{"items": [{"placa": "ABC1D23", "codigo": %d, "raw": %s}], "next": %d, "more": false'
    page += b', "meta": %s}'
    scripted.answer = lambda after, n: page % (WIDE, text, U64, _nested(depth, b"-%d" % WIDE))
    schedule = await scripted_schedule(client, scripted)
    assert await _until_idle(client) == {"ok": 1}
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert (state["cursor"], state["failures"], state["last_error"]) == (str(U64), 0, None)
    attributes = await _attributes(client, "ABC1D23")
    assert (attributes["erp_id"], attributes["raw"]) == (str(WIDE), orjson.loads(text))


async def test_a_proxy_answer_that_is_a_bare_integer_past_64_bits_or_one_33_levels_deep_keeps_it(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(client, partner.url, auth={"type": "none"})
    action = await create_action(client, erp["id"], name="read", method="GET", mode="proxy")
    deep: Any = str(WIDE)
    for _ in range(33):
        deep = {"x": deep}
    for raw, expected in ((b"%d" % WIDE, str(WIDE)), (_nested(33, b"%d" % WIDE), deep)):
        partner.respond_with(raw=raw)
        response = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
        )
        assert response.status == 200, await response.text()
        assert orjson.loads(await response.read())["data"] == expected
