"""Partners that speak other than JSON to our actions: form-encoded APIs (Twilio, Pushover,
many Brazilian SMS gateways and ERPs' token-style endpoints), and answers in Latin-1 or with a
byte order mark (legacy ERPs). Through the admin API, against a local partner double."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from aiohttp.test_utils import TestClient

from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_vehicle,
    partner,
    post,
    upload_mapping,
)
from tests.schedule_support import runner
from tests.support import auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]

PUSH_FORM = """
name: push-form
direction: outbound
entity_type: vehicle
headers:
  content-type: {value: application/x-www-form-urlencoded}
body:
  token: {secret: app_token}
  title: {template: "Veículo {plate}", vars: {plate: entity.plate}}
  message: {value: "Manutenção vencida & revisão"}
  priority: {value: 1}
  html: {value: false}
  attachments: {list: [{value: "https://a.example/1.jpg"}, {value: "https://a.example/2.jpg"}]}
"""
DRIVER_ANSWER = """
name: erp-driver
direction: outbound
entity_type: vehicle
path:
  plate: entity.plate
response:
  current_driver.name: condutor.nome
"""


async def _invoke(client: Client, action: dict[str, Any]) -> tuple[int, Any]:
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke",
        headers=auth(),
        json={"entity": {"type": "vehicle", "key": "ABC1D23"}},
    )
    return response.status, await response.json()


async def test_an_action_whose_mapping_says_form_sends_its_body_form_encoded(
    client: Client, partner: Partner
) -> None:
    await upload_mapping(client, PUSH_FORM)
    pushover = await create_partner(
        client, partner.url, name="Pushover", auth={"type": "none"}, secrets={"app_token": "az9"}
    )
    action = await create_action(
        client,
        pushover["id"],
        name="push",
        mode="proxy",
        method="POST",
        path="/1/messages.json",
        request_mapping="push-form",
    )
    await create_vehicle(client, "ABC1D23")

    status, answer = await _invoke(client, action)

    assert status == 200, answer
    sent = partner.requests[0]
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qsl(sent.body.decode("ascii"), strict_parsing=True) == [
        ("token", "az9"),
        ("title", "Veículo ABC1D23"),
        ("message", "Manutenção vencida & revisão"),
        ("priority", "1"),
        ("html", "false"),
        ("attachments", "https://a.example/1.jpg"),
        ("attachments", "https://a.example/2.jpg"),
    ]


async def test_a_form_body_that_is_not_flat_is_refused_before_anything_is_sent(
    client: Client, partner: Partner
) -> None:
    await upload_mapping(
        client,
        PUSH_FORM.replace("  priority: {value: 1}", "  priority: {object: {level: {value: 1}}}"),
    )
    pushover = await create_partner(
        client, partner.url, name="Pushover", auth={"type": "none"}, secrets={"app_token": "az9"}
    )
    action = await create_action(
        client,
        pushover["id"],
        name="push",
        mode="proxy",
        method="POST",
        path="/1/messages.json",
        request_mapping="push-form",
    )
    await create_vehicle(client, "ABC1D23")

    status, problem = await _invoke(client, action)

    assert status == 422, problem
    assert "'priority' is not" in json.dumps(problem)
    assert partner.requests == []


async def test_a_schedule_whose_action_mapping_says_form_posts_the_cursor_form_encoded(
    client: Client, partner: Partner
) -> None:
    await upload_mapping(
        client,
        """
name: erp-page-request
direction: outbound
headers:
  Content-Type: {value: application/x-www-form-urlencoded; charset=utf-8}
body:
  chave: {secret: erp_key}
  limite: {value: 50}
""",
    )
    await upload_mapping(
        client,
        """
name: erp-vehicles
direction: inbound
entity_type: vehicle
key: [plate]
items: veiculos
fields:
  plate: {from: placa, transforms: [plate]}
  attributes.erp_id: {from: codigo, transforms: [string]}
""",
    )
    erp = await create_partner(
        client, partner.url, name="ERP", auth={"type": "none"}, secrets={"erp_key": "k-1"}
    )
    action = await create_action(
        client,
        erp["id"],
        name="veiculos",
        mode="proxy",
        method="POST",
        path="/veiculos",
        request_mapping="erp-page-request",
        read_only=True,
    )
    partner.respond_with(body={"veiculos": []})
    partner.respond_with(
        body={"veiculos": [{"placa": "ABC-1D23", "codigo": 77}], "proxima": 2}, times=1
    )
    await post(
        client,
        "/api/v1/schedules",
        {
            "name": "erp-veiculos",
            "action_id": action["id"],
            "every": "1h",
            "cursor": {"from": "proxima", "param": "body.pagina", "initial": 1},
            "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
        },
    )

    assert await runner(client).run_until_idle() == {"ok": 1}

    sent = partner.requests[0]
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded; charset=utf-8"
    assert dict(parse_qsl(sent.body.decode("ascii"))) == {
        "chave": "k-1",
        "limite": "50",
        "pagina": "1",
    }
    assert dict(parse_qsl(partner.requests[1].body.decode("ascii")))["pagina"] == "2"


async def test_a_latin_1_json_answer_that_names_its_charset_is_mapped(
    client: Client, partner: Partner
) -> None:
    await upload_mapping(client, DRIVER_ANSWER)
    erp = await create_partner(client, partner.url, name="ERP", auth={"type": "none"})
    action = await create_action(
        client,
        erp["id"],
        name="driver",
        mode="proxy",
        method="GET",
        path="/veiculos/{plate}/condutor",
        request_mapping="erp-driver",
        response_mapping="erp-driver",
    )
    await create_vehicle(client, "ABC1D23")
    answer = json.dumps({"condutor": {"nome": "João Conceição"}}, ensure_ascii=False)
    partner.respond_with(
        raw=answer.encode("latin-1"),
        headers={"Content-Type": "application/json; charset=ISO-8859-1"},
    )
    status, body = await _invoke(client, action)
    assert (status, body["data"]) == (200, {"current_driver": {"name": "João Conceição"}}), body

    partner.respond_with(raw=b"\xef\xbb\xbf" + answer.encode())
    status, body = await _invoke(client, action)
    assert (status, body["data"]) == (200, {"current_driver": {"name": "João Conceição"}}), body
