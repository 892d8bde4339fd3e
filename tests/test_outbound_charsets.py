"""Outbound bodies in the charset the request mapping's Content-Type names: a Delphi/Protheus
ERP that takes `application/x-www-form-urlencoded; charset=ISO-8859-1` or JSON in windows-1252
got UTF-8 bytes under that label and stored `JoÃ£o da ConceiÃ§Ã£o`. A form's escapes are the
charset's bytes (`Jo%E3o`); JSON writes a character the charset lacks as its `\\uXXXX`
escape; an XML body its character reference; a form field the charset cannot write is a
problem naming it (a proxy call's `422`, a delivery's recorded error), never a replacement;
an unknown charset is refused at upload. Every case goes to a partner double over HTTP."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
    upload_mapping,
)
from tests.support import auth
from tests.triggers_support import Client

__all__ = ["partner"]  # the fixture

NAME = "João da Conceição – “Zé”"


def _mapping(name: str, content_type: str, body: str = "  NOME: nome\n  CIDADE: cidade\n") -> str:
    return (
        f"name: {name}\ndirection: outbound\n"
        f'headers:\n  Content-Type: {{value: "{content_type}"}}\nbody:\n{body}'
    )


async def _invoke(
    client: Client, partner: Partner, mapping: str, payload: dict[str, Any], **action: Any
) -> tuple[int, Any]:
    await upload_mapping(client, mapping)
    erp = await create_partner(client, partner.url, auth={"type": "none"})
    name = mapping.split("\n", 1)[0].removeprefix("name: ")
    proxy = await create_action(
        client, erp["id"], mode="proxy", path="/motoristas", request_mapping=name, **action
    )
    response = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke", headers=auth(), json={"payload": payload}
    )
    return response.status, await response.json()


async def test_a_form_body_is_percent_encoded_in_the_charset_its_content_type_names(
    client: Client, partner: Partner
) -> None:
    content_type = "application/x-www-form-urlencoded; charset=windows-1252"
    mapping = _mapping("protheus-form", content_type)
    status, answer = await _invoke(client, partner, mapping, {"nome": NAME, "cidade": "São Paulo"})
    assert status == 200, answer
    (request,) = partner.requests
    assert request.headers["Content-Type"] == content_type
    assert request.body == (b"NOME=Jo%E3o+da+Concei%E7%E3o+%96+%93Z%E9%94&CIDADE=S%E3o+Paulo")
    fields = dict(parse_qsl(request.body.decode("ascii"), encoding="cp1252"))
    assert fields == {"NOME": NAME, "CIDADE": "São Paulo"}


async def test_a_form_field_the_charset_cannot_write_is_a_422_naming_it_and_nothing_is_sent(
    client: Client, partner: Partner
) -> None:
    """ISO-8859-1 is Latin-1 to a receiver that honours it: no `–`, no `ő` (a form has no
    escape for a character outside its charset)."""
    mapping = _mapping("protheus-latin1", "application/x-www-form-urlencoded; charset=ISO-8859-1")
    status, answer = await _invoke(
        client, partner, mapping, {"nome": "Lőrinc Szabó", "cidade": "Győr"}
    )
    assert status == 422, answer
    (problem,) = answer["errors"]
    assert problem["pointer"] == "/body/NOME", problem
    assert problem["message"].startswith(
        "form field 'NOME': 'ő' (U+0151) cannot be written in ISO-8859-1, the charset the "
        "Content-Type names"
    ), problem
    assert partner.requests == []


async def test_a_json_body_is_in_the_charset_named_with_what_it_lacks_as_json_escapes(
    client: Client, partner: Partner
) -> None:
    content_type = "application/json; charset=windows-1252"
    mapping = _mapping("protheus-json", content_type, "  nome: nome\n  cidade: cidade\n")
    payload = {"nome": NAME, "cidade": "Győr 🚚"}
    status, answer = await _invoke(client, partner, mapping, payload)
    assert status == 200, answer
    (request,) = partner.requests
    assert request.headers["Content-Type"] == content_type
    assert request.body == (
        '{"nome":"João da Conceição – “Zé”","cidade":"Gy\\u0151r \\ud83d\\ude9a"}'
    ).encode("cp1252")
    assert json.loads(request.body.decode("cp1252")) == payload


async def test_a_utf_8_or_unlabelled_body_is_sent_as_before(
    client: Client, partner: Partner
) -> None:
    mapping = _mapping("utf8-form", "application/x-www-form-urlencoded; charset=UTF-8")
    status, answer = await _invoke(client, partner, mapping, {"nome": NAME, "cidade": "Győr"})
    assert status == 200, answer
    (request,) = partner.requests
    assert dict(parse_qsl(request.body.decode("ascii"))) == {"NOME": NAME, "CIDADE": "Győr"}


async def test_an_xml_body_is_in_the_charset_the_mappings_content_type_names(
    client: Client, partner: Partner
) -> None:
    """docs/actions.md: a header the request mapping sets wins over the xml_body's defaults;
    the body follows its charset (RFC 7303: the media type's charset wins), a character it
    lacks written as its character reference."""
    mapping = _mapping("soap-latin1", "text/xml; charset=ISO-8859-1", "  nome: nome\n")
    template = "<motorista><nome>{{ body.nome }}</nome></motorista>"
    status, answer = await _invoke(
        client, partner, mapping, {"nome": "João Lőrinc"}, xml_body={"template": template}
    )
    assert status == 200, answer
    (request,) = partner.requests
    assert request.headers["Content-Type"] == "text/xml; charset=ISO-8859-1"
    assert request.body == "<motorista><nome>João L&#337;rinc</nome></motorista>".encode("latin-1")


async def test_an_xml_declaration_must_name_the_charset_the_body_is_sent_in(
    client: Client, partner: Partner
) -> None:
    mapping = _mapping("soap-declared", "text/xml; charset=ISO-8859-1", "  nome: nome\n")
    latin = '<?xml version="1.0" encoding="ISO-8859-1"?><m><n>{{ body.nome }}</n></m>'
    status, answer = await _invoke(
        client, partner, mapping, {"nome": "João"}, xml_body={"template": latin}
    )
    assert status == 200, answer
    assert partner.requests[0].body == latin.replace("{{ body.nome }}", "João").encode("latin-1")
    utf8 = '<?xml version="1.0" encoding="UTF-8"?><m><n>{{ body.nome }}</n></m>'
    erp = await create_partner(client, partner.url, name="ERP 2", auth={"type": "none"})
    other = await create_action(
        client,
        erp["id"],
        name="declared-utf8",
        mode="proxy",
        path="/m",
        request_mapping="soap-declared",
        xml_body={"template": utf8},
    )
    response = await client.post(
        f"/api/v1/actions/{other['id']}/invoke", headers=auth(), json={"payload": {"nome": "x"}}
    )
    answer = await response.json()
    assert response.status == 422, answer
    assert "the body is sent in iso8859-1; its declaration says UTF-8" in json.dumps(answer)
    assert len(partner.requests) == 1
    # Without a request mapping nothing can name another charset: refused when saved.
    response = await client.post(
        "/api/v1/actions",
        json={
            "name": "unmapped",
            "partner_id": erp["id"],
            "method": "POST",
            "path": "/m",
            "mode": "proxy",
            "xml_body": {"template": latin},
        },
        headers=auth(),
    )
    answer = await response.json()
    assert response.status == 422, answer
    assert answer["errors"][0]["message"] == (
        "xml_body: the body is sent as UTF-8; its declaration says ISO-8859-1"
    )


async def test_a_mapping_naming_an_unknown_charset_is_refused_at_upload(client: Client) -> None:
    response = await client.post(
        "/api/v1/mappings",
        data=_mapping("typo", "application/json; charset=windows-1525").encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    answer = await response.json()
    assert response.status == 422, answer
    (problem,) = answer["errors"]
    assert problem["pointer"] == "/headers/Content-Type/value", problem
    assert problem["message"].startswith("unknown charset 'windows-1525'"), problem


async def test_a_delivery_whose_form_field_the_charset_cannot_write_records_the_error(
    client: Client, partner: Partner
) -> None:
    await upload_mapping(
        client,
        _mapping(
            "erp-latin1",
            "application/x-www-form-urlencoded; charset=ISO-8859-1",
            "  PLACA: entity.plate\n  OBS: entity.attributes.obs\n",
        ),
    )
    erp = await create_partner(client, partner.url, auth={"type": "none"})
    action = await create_action(client, erp["id"], request_mapping="erp-latin1", retry_schedule=[])
    await create_subscription(client, action["id"], ("entity.created",))
    await create_vehicle(client, "ABC1D23", attributes={"obs": "Motorista Lőrinc"})
    await create_vehicle(client, "DEF4G56", attributes={"obs": "Motorista João"})
    services = client.app[services_key]
    await services.relay.run_until_idle()
    await services.delivery_worker.run_until_idle()

    (sent,) = partner.requests
    assert dict(parse_qsl(sent.body.decode("ascii"), encoding="latin-1")) == {
        "PLACA": "DEF4G56",
        "OBS": "Motorista João",
    }
    response = await client.get("/api/v1/deliveries", headers=auth())
    deliveries = {d["status"]: d for d in (await response.json())["items"]}
    assert set(deliveries) == {"succeeded", "failed"}, deliveries
    assert (
        "form field 'OBS': 'ő' (U+0151) cannot be written in ISO-8859-1"
        in (deliveries["failed"]["last_error"])
    ), deliveries["failed"]


async def test_a_deliverys_record_shows_the_body_in_its_charset_with_secrets_masked(
    client: Client, partner: Partner
) -> None:
    """The attempt's request summary was read as UTF-8: a Latin-1 body showed `Jo�o`, and a
    secret with a character past ASCII, percent-encoded in Latin-1, went unmasked."""
    await upload_mapping(
        client,
        _mapping(
            "erp-secret",
            "application/x-www-form-urlencoded; charset=ISO-8859-1",
            "  OBS: entity.attributes.obs\n  SENHA: {secret: erp_senha}\n",
        ),
    )
    erp = await create_partner(
        client, partner.url, auth={"type": "none"}, secrets={"erp_senha": "s3nhã-Ç"}
    )
    action = await create_action(client, erp["id"], request_mapping="erp-secret")
    await create_subscription(client, action["id"], ("entity.created",))
    await create_vehicle(client, "ABC1D23", attributes={"obs": "Motorista João"})
    services = client.app[services_key]
    await services.relay.run_until_idle()
    await services.delivery_worker.run_until_idle()

    (sent,) = partner.requests
    assert sent.body == b"OBS=Motorista+Jo%E3o&SENHA=s3nh%E3-%C7"
    response = await client.get("/api/v1/deliveries", headers=auth())
    (delivery,) = (await response.json())["items"]
    response = await client.get(f"/api/v1/deliveries/{delivery['id']}", headers=auth())
    (attempt,) = (await response.json())["attempts"]
    shown = attempt["request"]["body"]
    assert shown.startswith("OBS=Motorista+Jo%C3%A3o&SENHA="), shown
    assert "s3nh" not in shown and "%E3" not in shown, shown
