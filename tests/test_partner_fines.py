"""A Brazilian fines provider's amounts and dates as providers write them, read through the
shipped fine-feed and fine-payment mappings at their triggers over HTTP: what the partners
page (docs/partners.md) says is read is stored as meant, anything else is a 422 naming the
field, never a number 1000 times off."""

from __future__ import annotations

import json
from typing import Any

from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import PAYLOADS, Client, bearer, create_trigger, hook, upload_shipped

FINE = json.loads((PAYLOADS / "fine_feed.json").read_text())
PAYMENT = json.loads((PAYLOADS / "fine_payment.json").read_text())


async def _triggers(client: Client) -> tuple[dict[str, Any], dict[str, Any]]:
    await upload_shipped(client, "fine-feed")
    await upload_shipped(client, "fine-payment")
    fines = await create_trigger(client, entity_type="other", kind="fine", mapping="fine-feed")
    payments = await create_trigger(
        client, name="payments", entity_type="other", kind="fine", mapping="fine-payment"
    )
    return fines, payments


async def _fine(client: Client, trigger: dict[str, Any], key: str) -> dict[str, Any]:
    response = await client.get(f"/hooks/{trigger['id']}/{key}", headers=bearer(trigger))
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def _paid(client: Client) -> list[dict[str, Any]]:
    await client.app[services_key].relay.run_until_idle()
    response = await client.get("/api/v1/events?type=fine.paid", headers=auth())
    return [event["detail"] for event in (await response.json())["items"]]


async def test_an_amount_is_read_only_in_the_documented_forms_and_refused_otherwise(
    client: Client,
) -> None:
    """`"1,130.16"` (the separators the other way round) was stored as 1.13 and `"1.1.30,16"`
    (misgrouped) as 1130.16, both with a 201. A decimal comma after thousands points in
    groups of three, or text with a decimal point and no comma, is read; anything else is
    a 422 naming the field and the text, and nothing is written."""
    fines, payments = await _triggers(client)
    read = {
        "1.130,16": 1130.16,
        "130,16": 130.16,
        "1130,16": 1130.16,
        "1.234.567,8": 1234567.8,
        " 13,5 ": 13.5,
        "130.16": 130.16,
        "130": 130,
    }
    for i, (text, amount) in enumerate(read.items()):
        status, answer = await hook(client, fines, {**FINE, "ait": f"R{i}", "valor": text})
        assert status == 201, (text, answer)
        assert (await _fine(client, fines, f"R{i}"))["amount_brl"] == amount, text
    refused = ["1,130.16", "1.1.30,16", "1.13,16", "11.30,16", "1.130.16", ",", "1,", "1.130,1,6"]
    for i, text in enumerate(refused):
        status, problem = await hook(client, fines, {**FINE, "ait": f"X{i}", "valor": text})
        assert status == 422, (text, problem)
        [error] = problem["errors"]
        assert (error["pointer"], error["target"]) == ("/valor", "amount_brl"), error
        assert repr(text) in error["message"], error
        missing = await client.get(f"/hooks/{fines['id']}/X{i}", headers=bearer(fines))
        assert missing.status == 404, text
    status, answer = await hook(client, fines, FINE)
    assert status == 201, answer
    for field in ("valorPago", "desconto"):
        status, problem = await hook(client, payments, {**PAYMENT, field: "1,130.16"})
        assert status == 422, (field, problem)
        assert [e["pointer"] for e in problem["errors"]] == [f"/{field}"]
    status, answer = await hook(client, payments, {**PAYMENT, "valorPago": "1.104,13"})
    assert status == 200, answer
    assert [d["amount_paid_brl"] for d in await _paid(client)] == [1104.13]
