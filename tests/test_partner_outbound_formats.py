"""Partners that speak other than JSON to our actions: form-encoded APIs (Twilio, Pushover,
many Brazilian SMS gateways and ERPs' token-style endpoints), answers in Latin-1 or with a
byte order mark (legacy ERPs), and refusals inside a 200 (OneSignal, SOAP services, JSON-RPC).
Through the admin API, against a local partner double."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
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


async def _pushover_action(client: Client, partner: Partner) -> dict[str, Any]:
    """A proxy action to a Pushover-like partner through the uploaded `push-form` mapping,
    and the vehicle it is invoked for."""
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
    return action


async def test_an_action_whose_mapping_says_form_sends_its_body_form_encoded(
    client: Client, partner: Partner
) -> None:
    await upload_mapping(client, PUSH_FORM)
    action = await _pushover_action(client, partner)

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
    action = await _pushover_action(client, partner)

    status, problem = await _invoke(client, action)

    assert status == 422, problem
    assert "'priority' is not" in json.dumps(problem)
    assert partner.requests == []


TRACCAR_ROUTE = """
name: traccar-route
direction: outbound
query:
  deviceId: ids
  from: {value: "2026-12-07T00:00:00Z"}
  group: groups
"""


async def _traccar_route(client: Client, partner: Partner, payload: Any) -> tuple[int, Any]:
    await upload_mapping(client, TRACCAR_ROUTE)
    traccar = await create_partner(client, partner.url, name="Traccar", auth={"type": "none"})
    action = await create_action(
        client,
        traccar["id"],
        name="route",
        mode="proxy",
        method="GET",
        path="/api/reports/route",
        request_mapping="traccar-route",
    )
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", headers=auth(), json={"payload": payload}
    )
    return response.status, await response.json()


async def test_a_query_list_is_sent_as_the_parameter_repeated(
    client: Client, partner: Partner
) -> None:
    # Traccar's reports take `deviceId=1&deviceId=2` (its OpenAPI: an exploded array).
    partner.respond_with(body=[])

    status, answer = await _traccar_route(
        client, partner, {"ids": [1, "2", None, 7.0], "groups": []}
    )

    assert status == 200, answer
    assert partner.requests[0].raw_path == (
        "/api/reports/route?deviceId=1&deviceId=2&deviceId=7&from=2026-12-07T00%3A00%3A00Z"
    )


async def test_an_object_in_a_query_or_in_its_list_is_refused_before_anything_is_sent(
    client: Client, partner: Partner
) -> None:
    for ids, message in (
        ({"a": 1}, "an object is not text"),
        ([1, {"a": 1}], "an object is not text (an item of a list)"),
        ([1, [2]], "an array is not text (an item of a list)"),
    ):
        status, problem = await _traccar_route(client, partner, {"ids": ids})
        assert status == 422, problem
        assert message in json.dumps(problem), problem
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


ONESIGNAL_REFUSAL = {"id": "", "errors": ["All included players are not subscribed"]}


async def test_a_proxy_answer_that_reports_an_error_in_a_200_is_a_502_naming_it(
    client: Client, partner: Partner
) -> None:
    onesignal = await create_partner(client, partner.url, name="OneSignal")
    action = await create_action(
        client, onesignal["id"], name="push", mode="proxy", path="/notifications", error="errors"
    )
    await create_vehicle(client, "ABC1D23")

    partner.respond_with(body=ONESIGNAL_REFUSAL)
    status, problem = await _invoke(client, action)
    assert status == 502, problem
    assert problem["detail"] == (
        'partner OneSignal answered 200 reporting an error: ["All included players are not '
        'subscribed"]'
    )

    partner.respond_with(body={"id": "b98881cc-1e94-4366-bbd9-db8f3429292b", "errors": []})
    status, answer = await _invoke(client, action)
    assert status == 200, answer


async def test_a_soap_answer_that_says_it_failed_in_a_200_is_a_failure(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(client, partner.url, name="ERP")
    action = await create_action(
        client,
        erp["id"],
        name="baixa",
        mode="proxy",
        path="/ws",
        error="Envelope.Body.informarPagamentoResponse.return.sucesso == 'false' "
        "&& Envelope.Body.informarPagamentoResponse.return.mensagem",
    )
    await create_vehicle(client, "ABC1D23")
    refused = (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
        '<ns2:informarPagamentoResponse xmlns:ns2="urn:erp"><return><sucesso>false</sucesso>'
        "<mensagem>AIT nao encontrado</mensagem></return></ns2:informarPagamentoResponse>"
        "</soap:Body></soap:Envelope>"
    )
    partner.respond_with(raw=refused.encode(), headers={"Content-Type": "text/xml"})
    status, problem = await _invoke(client, action)
    assert (status, problem["detail"]) == (
        502,
        "partner ERP answered 200 reporting an error: AIT nao encontrado",
    )
    accepted = refused.replace("false", "true").replace("AIT nao encontrado", "ok")
    partner.respond_with(raw=accepted.encode(), headers={"Content-Type": "text/xml"})
    status, answer = await _invoke(client, action)
    assert status == 200, answer


async def test_a_delivery_refused_inside_a_200_fails_at_once_with_the_partners_words(
    client: Client, partner: Partner
) -> None:
    onesignal = await create_partner(client, partner.url, name="OneSignal")
    action = await create_action(client, onesignal["id"], path="/notifications", error="errors")
    await create_subscription(client, action["id"])
    vehicle = await create_vehicle(client, "ABC1D23")
    partner.respond_with(body=ONESIGNAL_REFUSAL)
    response = await client.patch(
        f"/api/v1/entities/vehicle/{vehicle['id']}", headers=auth(), json={"odometer_km": 5}
    )
    assert response.status == 200

    await client.app[services_key].relay.run_until_idle()
    counts = await client.app[services_key].delivery_worker.run_until_idle()

    assert counts == {"failed": 1}
    listed = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    [failed] = listed["items"]
    assert failed["status"] == "failed" and failed["attempt_count"] == 1
    assert 'reporting an error: ["All included players' in failed["last_error"]


async def test_an_error_expression_that_does_not_compile_is_a_422(client: Client) -> None:
    erp = await create_partner(client, "https://erp.example.com", name="ERP")
    response = await client.post(
        "/api/v1/actions",
        headers=auth(),
        json={
            "name": "x",
            "partner_id": erp["id"],
            "method": "POST",
            "path": "/x",
            "mode": "proxy",
            "error": "errors[?",
        },
    )
    assert response.status == 422
    assert [e["pointer"] for e in (await response.json())["errors"]] == ["/error"]
