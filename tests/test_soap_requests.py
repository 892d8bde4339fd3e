"""Actions and schedules that call a SOAP service: the action's `xml_body` template, rendered
with every value escaped for XML, sent with SOAP 1.1's or 1.2's content type and action, read
back by the partner double with the project's XML reader; the Sascar poll end to end; partner
secrets in the envelope never stored, shown or logged; bad templates refused when saved."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.formats import parse_xml
from gateway.outbound.redaction import MASK
from gateway.web.state import services_key
from tests.flow_support import FINE_EVENT, add_mapping, upload_flow
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
    post,
)
from tests.schedule_support import runner, runs
from tests.support import auth
from tests.triggers_support import Client, upload_shipped, vehicle_track

__all__ = ["partner"]  # the fixture

ROOT = Path(__file__).resolve().parents[1]
SASCAR = (ROOT / "tests/data/partner_payloads/sascar_pacote_posicoes.xml").read_bytes()
SASCAR_NS = "http://webservice.web.integracao.sascar.com.br/"
SASCAR_ENVELOPE = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
                  xmlns:web="{SASCAR_NS}">
  <soapenv:Header/>
  <soapenv:Body>
    <web:obterPacotePosicoes>
      <usuario>{{{{ secrets.sascar_usuario }}}}</usuario>
      <senha>{{{{ secrets.sascar_senha }}}}</senha>
      <quantidade>{{{{ body.quantidade }}}}</quantidade>
    </web:obterPacotePosicoes>
  </soapenv:Body>
</soapenv:Envelope>"""
# A password with the characters XML escapes: it is sent escaped and redacted in that form.
SENHA = "s3nh@&'Sascar<9>"
ERP_ENVELOPE = """<soap:Envelope xmlns:soap="{ns}" xmlns:erp="urn:erp:frota">
  <soap:Header><erp:auth><erp:senha>{{{{ secrets.erp_senha }}}}</erp:senha></erp:auth></soap:Header>
  <soap:Body>
    <erp:veiculoAtualizado placa="{{{{ entity.plate }}}}">
      <erp:observacao>{{{{ entity.attributes.observacao }}}}</erp:observacao>
    </erp:veiculoAtualizado>
  </soap:Body>
</soap:Envelope>"""
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NASTY = "Frota <Sul> & \"Norte\" 'Leste' </erp:observacao><x>"


async def _sascar_schedule(client: Client, partner: Partner) -> dict[str, Any]:
    await upload_shipped(client, "sascar-pacote-posicoes")
    sascar = await create_partner(
        client,
        partner.url,
        name="Sascar",
        auth={"type": "none"},
        secrets={"sascar_usuario": "rabbot.integra", "sascar_senha": SENHA},
        timeout_seconds=1,
    )
    action = await create_action(
        client,
        sascar["id"],
        name="obter-pacote-posicoes",
        method="POST",
        path="/SasIntegra/SasIntegraWSService",
        mode="proxy",
        read_only=True,
        xml_body={"soap": "1.1", "soap_action": "", "template": SASCAR_ENVELOPE},
    )
    response = await client.post(
        "/api/v1/schedules",
        headers=auth(),
        json={
            "name": "sascar-posicoes",
            "action_id": action["id"],
            "every": "1m",
            "request": {"body": {"quantidade": 100}},
            "dedupe": {"by": "idPacote", "keep": 5000},
            "target": {"type": "positions", "mapping": "sascar-pacote-posicoes"},
        },
    )
    schedule: dict[str, Any] = await response.json()
    assert response.status == 201, schedule
    return schedule


async def test_a_schedule_polls_sascar_with_a_soap_envelope_and_lands_the_packets_as_fixes(
    client: Client, partner: Partner
) -> None:
    await create_vehicle(client, "ABC1D23", attributes={"tracker_id": "1231226"})
    await create_vehicle(client, "XYZ9A87")
    partner.respond_with(raw=SASCAR, headers={"Content-Type": "text/xml; charset=utf-8"})
    schedule = await _sascar_schedule(client, partner)

    assert await runner(client).run_until_idle() == {"ok": 1}

    (call,) = partner.requests
    assert (call.method, call.path) == ("POST", "/SasIntegra/SasIntegraWSService")
    assert call.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert call.headers["SOAPAction"] == '""'
    assert call.headers["Accept"] == "text/xml, application/xml"
    envelope = parse_xml(call.body, charset="utf-8")["Envelope"]
    assert envelope["Body"]["obterPacotePosicoes"] == {
        "usuario": "rabbot.integra",
        "senha": SENHA,
        "quantidade": "100",
    }
    assert b"s3nh@&amp;&#39;Sascar&lt;9&gt;" in call.body
    (run,) = await runs(client, schedule["id"])
    assert (run["outcome"], run["items_read"], run["written"], run["rejected"]) == ("ok", 3, 3, 0)
    track = (await vehicle_track(client, "ABC1D23"))["items"]
    assert [f["attributes"]["sascar_packet_id"] for f in track] == ["98113204417", "98113204502"]
    assert SENHA not in str(await (await client.get("/api/v1/schedules", headers=auth())).text())


async def test_a_proxy_action_posts_a_soap_1_2_envelope_with_entity_values_escaped(
    client: Client, partner: Partner
) -> None:
    vehicle = await create_vehicle(client, "ABC1D23", attributes={"observacao": NASTY + "\x01"})
    erp = await create_partner(client, partner.url, secrets={"erp_senha": "erp-pass-77"})
    action = await create_action(
        client,
        erp["id"],
        name="veiculo-soap12",
        mode="proxy",
        path="/ws/frota",
        xml_body={
            "soap": "1.2",
            "soap_action": "urn:erp:frota/veiculoAtualizado",
            "template": ERP_ENVELOPE.format(ns=SOAP12),
        },
    )
    answer = f'<env:Envelope xmlns:env="{SOAP12}"><env:Body><ok>sim</ok></env:Body></env:Envelope>'
    partner.respond_with(raw=answer.encode(), headers={"Content-Type": "application/soap+xml"})

    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke",
        json={"entity": {"type": "vehicle", "id": vehicle["id"]}},
        headers=auth(),
    )

    result = await response.json()
    assert response.status == 200, result
    assert result["data"] == {"Envelope": {"Body": {"ok": "sim"}}}
    (call,) = partner.requests
    assert call.headers["Content-Type"] == (
        'application/soap+xml; charset=utf-8; action="urn:erp:frota/veiculoAtualizado"'
    )
    assert "SOAPAction" not in call.headers
    sent = parse_xml(call.body, charset="utf-8")["Envelope"]
    # The value comes back whole, as text: nothing in it became markup.
    update = sent["Body"]["veiculoAtualizado"]
    assert update == {"@placa": "ABC1D23", "observacao": NASTY + "\ufffd"}
    assert sent["Header"]["auth"]["senha"] == "erp-pass-77"
    assert b"Frota &lt;Sul&gt; &amp; &#34;Norte&#34; &#39;Leste&#39; &lt;/erp:observacao&gt;" in (
        call.body
    )


async def test_a_delivery_posts_a_signed_soap_1_1_envelope_with_the_secret_and_escaped_values(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(
        client, partner.url, auth={"type": "none"}, secrets={"erp_senha": SENHA}
    )
    action = await create_action(
        client,
        erp["id"],
        name="veiculo-soap11",
        path="/ws/frota",
        xml_body={
            "soap": "1.1",
            "soap_action": "urn:erp:frota/veiculoAtualizado",
            "template": ERP_ENVELOPE.format(ns=SOAP11),
        },
    )
    await create_subscription(client, action["id"], ("entity.created",))
    partner.respond_with(raw=b"<ok/>", headers={"Content-Type": "text/xml"})
    services = client.app[services_key]
    await create_vehicle(client, "ABC1D23", attributes={"observacao": NASTY})
    await services.relay.run_until_idle()
    await services.delivery_worker.run_until_idle()

    (call,) = partner.requests
    assert call.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert call.headers["SOAPAction"] == '"urn:erp:frota/veiculoAtualizado"'
    assert call.headers["webhook-signature"].startswith("v1,")
    sent = parse_xml(call.body, charset="utf-8")["Envelope"]
    assert sent["Header"]["auth"]["senha"] == SENHA
    assert sent["Body"]["veiculoAtualizado"]["observacao"] == NASTY


async def test_an_echoed_soap_secret_is_redacted_from_the_attempt_record_and_logs(
    client: Client, partner: Partner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    erp = await create_partner(
        client, partner.url, auth={"type": "none"}, secrets={"erp_senha": SENHA}
    )
    deliver = await create_action(
        client,
        erp["id"],
        name="veiculo-soap11",
        path="/ws/frota",
        retry_schedule=[],
        xml_body={"soap": "1.1", "template": ERP_ENVELOPE.format(ns=SOAP11)},
    )
    await create_subscription(client, deliver["id"], ("entity.created",))
    proxy = await create_action(
        client,
        erp["id"],
        name="veiculo-proxy",
        mode="proxy",
        path="/ws/frota",
        xml_body={"soap": "1.1", "template": ERP_ENVELOPE.format(ns=SOAP11)},
    )
    vehicle = await create_vehicle(client, "ABC1D23", attributes={"observacao": "ok"})
    # A partner that quotes the request it refuses: the escaped secret comes back.
    echo = SENHA.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    quoted = echo.replace("'", "&#39;")
    fault = f'<s:Fault xmlns:s="{SOAP11}"><faultstring>bad login: {quoted}</faultstring></s:Fault>'
    partner.respond_with(500, raw=fault.encode(), headers={"Content-Type": "text/xml"})
    services = client.app[services_key]
    await services.relay.run_until_idle()
    await services.delivery_worker.run_until_idle()
    invoked = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke",
        json={"entity": {"type": "vehicle", "id": vehicle["id"]}},
        headers=auth(),
    )
    problem = await invoked.json()

    assert [r.body.count(b"s3nh@&amp;&#39;Sascar&lt;9&gt;") for r in partner.requests] == [1, 1]
    listed = await client.get(f"/api/v1/deliveries?partner_id={erp['id']}", headers=auth())
    (delivery,) = (await listed.json())["items"]
    full = await client.get(f"/api/v1/deliveries/{delivery['id']}", headers=auth())
    stored = await full.text()
    (attempt,) = (await full.json())["attempts"]
    assert attempt["status"] == 500 and f"bad login: {MASK}<" in attempt["response"]
    assert invoked.status == 502 and f"bad login: {MASK}<" in problem["partner_body"]
    everything = " ".join([stored, str(problem), caplog.text])
    for form in (SENHA, echo, echo.replace("'", "&#39;"), "s3nh@"):
        assert form not in everything, form


@pytest.mark.parametrize(
    ("xml_body", "pointer", "says"),
    [
        ({"template": "<a>{% if %}</a>"}, "/xml_body/template", "Expected an expression"),
        ({"template": "<a><b></a>"}, "/xml_body/template", "not well-formed XML: line 1"),
        ({"template": "<web:a/>"}, "/xml_body/template", "unbound prefix"),
        ({"template": "<a>{{ x|safe }}</a>"}, "/xml_body/template", "No filter named 'safe'"),
        (
            {"template": "<a>{% autoescape false %}{{ x }}{% endautoescape %}</a>"},
            "/xml_body/template",
            "autoescape cannot be turned off",
        ),
        ({"template": "<a>{{ x.__class__ }}</a>"}, "/xml_body/template", "Python internals"),
        (
            {"template": f'<e:Envelope xmlns:e="{SOAP11}"><e:Body/></e:Envelope>', "soap": "1.2"},
            "/xml_body/template",
            "a SOAP 1.2 body is an Envelope in " + SOAP12,
        ),
        ({"template": "<a/>", "soap": "2.0"}, "/xml_body/soap", '"1.1", "1.2"'),
        ({"template": "<a/>", "soap_action": 'urn:"x"'}, "/xml_body/soap_action", "quotes"),
        ({"template": "<a/>", "soap_action": "urn:x\n"}, "/xml_body/soap_action", "ASCII"),
        (
            {"template": "<a>{{ body.n + 1 }}</a>", "sample": {"body": {"n": "x"}}},
            "/xml_body/template",
            "xml_body:",
        ),
        ({"template": "<a>{{ body.n }}</a>", "extra": 1}, "/xml_body/extra", "unknown field"),
        (
            {"template": '<?xml version="1.0" encoding="ISO-8859-1"?><a/>'},
            "/xml_body/template",
            "sent as UTF-8",
        ),
        ("<a/>", "/xml_body", "an object with a template"),
    ],
)
async def test_an_xml_body_that_does_not_compile_or_render_well_formed_is_a_422_naming_it(
    client: Client, partner: Partner, xml_body: Any, pointer: str, says: str
) -> None:
    erp = await create_partner(client, partner.url)
    response = await client.post(
        "/api/v1/actions",
        headers=auth(),
        json={
            "name": "soap",
            "partner_id": erp["id"],
            "method": "POST",
            "path": "/ws",
            "mode": "proxy",
            "xml_body": xml_body,
        },
    )
    problem = await response.json()
    assert response.status == 422, problem
    (error,) = problem["errors"]
    assert error["pointer"] == pointer and says in error["message"], error


async def test_a_get_action_cannot_have_an_xml_body(client: Client, partner: Partner) -> None:
    erp = await create_partner(client, partner.url)
    response = await client.post(
        "/api/v1/actions",
        headers=auth(),
        json={
            "name": "soap",
            "partner_id": erp["id"],
            "method": "GET",
            "path": "/ws",
            "mode": "proxy",
            "xml_body": {"template": "<a/>"},
        },
    )
    problem = await response.json()
    assert response.status == 422
    assert [e["pointer"] for e in problem["errors"]] == ["/xml_body"]


async def test_a_body_rendered_past_the_size_limit_is_a_422_and_nothing_is_sent(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(client, partner.url)
    action = await create_action(
        client,
        erp["id"],
        name="soap",
        mode="proxy",
        path="/ws",
        xml_body={"template": "<a>{% for n in range(9) %}{{ body.text }}{% endfor %}</a>"},
    )
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke",
        json={"payload": {"text": "&" * 10_000}},
        headers=auth(),
    )
    problem = await response.json()
    assert response.status == 422, problem
    assert problem["errors"][0]["pointer"] == "/xml_body/template"
    assert "262,144" in problem["errors"][0]["message"]
    assert partner.requests == []


ERP_FINE_PAID = """<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
                  xmlns:erp="urn:erp:multas">
  <soapenv:Body>
    <erp:informarPagamento>
      <token>{{ secrets.erp_token }}</token>
      <ait>{{ body.ait }}</ait>
      <placa>{{ body.placa }}</placa>
      <valorPago>{{ body.valorPago }}</valorPago>
      <dataPagamento>{{ body.dataPagamento }}</dataPagamento>
    </erp:informarPagamento>
  </soapenv:Body>
</soapenv:Envelope>"""


async def test_the_flow_dry_run_shows_the_soap_body_with_secrets_masked(
    client: Client, partner: Partner
) -> None:
    await add_mapping(client, "erp-fine-paid")
    erp = await create_partner(client, partner.url, secrets={"erp_token": "erp-token-5ec2e7"})
    await create_action(
        client,
        erp["id"],
        name="erp-fine-paid",
        path="/multas/{ait}/pagamento",
        request_mapping="erp-fine-paid",
        xml_body={
            "soap": "1.1",
            "soap_action": "urn:erp:multas/informar",
            "template": ERP_FINE_PAID,
        },
    )
    await upload_flow(client, "fine-paid-erp")
    paid = {
        **FINE_EVENT,
        "type": "fine.paid",
        "data": {**FINE_EVENT["data"], "status": "paid"},
        "changes": [{"field": "status", "old": "open", "new": "paid"}],
        "detail": {"amount_paid_brl": 104.13, "paid_on": "2026-11-25"},
    }
    result = await post(
        client, "/api/v1/flows/test", {"flow": "fine-paid-erp", "event": paid}, status=200
    )

    (step,) = result["steps"]
    request = step["request"]
    assert request["headers"]["SOAPAction"] == '"urn:erp:multas/informar"'
    sent = parse_xml(request["body"])["Envelope"]["Body"]["informarPagamento"]
    assert sent == {
        "token": "<secret:erp_token>",
        "ait": "A123456789",
        "placa": "ABC1D23",
        "valorPago": "104.13",
        "dataPagamento": "2026-11-25",
    }
    assert "5ec2e7" not in str(result) and partner.requests == []


async def test_a_soap_fault_quoting_the_password_is_redacted_from_the_schedule_s_run(
    client: Client, partner: Partner
) -> None:
    quoted = SENHA.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    fault = (
        f'<S:Envelope xmlns:S="{SOAP11}"><S:Body><S:Fault><faultcode>S:Server</faultcode>'
        f"<faultstring>usuario ou senha invalidos: {quoted.replace(chr(39), '&#39;')}"
        "</faultstring></S:Fault></S:Body></S:Envelope>"
    )
    partner.respond_with(500, raw=fault.encode(), headers={"Content-Type": "text/xml"})
    schedule = await _sascar_schedule(client, partner)

    assert await runner(client).run_until_idle() == {"failed": 1}

    (run,) = await runs(client, schedule["id"])
    got = await (await client.get(f"/api/v1/schedules/{schedule['id']}", headers=auth())).text()
    assert run["error"]["kind"] == "http_status"
    assert f"senha invalidos: {MASK}<" in run["error"]["message"]
    assert "s3nh@" not in str(run) + got


async def test_a_schedule_whose_body_the_action_s_envelope_cannot_render_is_a_422(
    client: Client, partner: Partner
) -> None:
    await upload_shipped(client, "sascar-pacote-posicoes")
    sascar = await create_partner(client, partner.url, name="Sascar")
    action = await create_action(
        client,
        sascar["id"],
        name="pacotes",
        mode="proxy",
        path="/ws",
        read_only=True,
        xml_body={"template": "<q>{{ body.quantidade + 1 }}</q>"},
    )
    response = await client.post(
        "/api/v1/schedules",
        headers=auth(),
        json={
            "name": "sascar",
            "action_id": action["id"],
            "every": "1m",
            "request": {"body": {"quantidade": "cem"}},
            "target": {"type": "positions", "mapping": "sascar-pacote-posicoes"},
        },
    )
    problem = await response.json()
    assert response.status == 422, problem
    (error,) = problem["errors"]
    assert error["pointer"] == "/request/body"
    assert error["message"].startswith("action 'pacotes': xml_body:"), error


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [
        ("text/xml; charset=utf-16", "utf-16"),  # a BOM and the media type's charset
        ("text/xml", "utf-16"),  # the BOM alone says it
        ("text/xml; charset=ISO-8859-1", "latin-1"),
    ],
)
async def test_a_soap_fault_in_another_encoding_quoting_the_password_is_redacted(
    client: Client, partner: Partner, content_type: str, encoding: str
) -> None:
    quoted = SENHA.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    fault = f"<fault>usuário ou senha inválidos: {quoted}</fault>"
    partner.respond_with(500, raw=fault.encode(encoding), headers={"Content-Type": content_type})
    schedule = await _sascar_schedule(client, partner)

    assert await runner(client).run_until_idle() == {"failed": 1}

    (run,) = await runs(client, schedule["id"])
    assert f"usuário ou senha inválidos: {MASK}<" in run["error"]["message"]
    stored = str(run).replace("\x00", "")  # UTF-16 read as UTF-8 interleaves NULs
    assert "s3nh@" not in stored and "Sascar" not in stored.split("inv")[-1]


@pytest.mark.parametrize(
    "escape",
    [
        # ElementTree in an attribute: `"` as &quot;, `'` as written.
        lambda s: _xml_text(s).replace('"', "&quot;"),
        # Hexadecimal character references for the quotes.
        lambda s: _xml_text(s).replace("'", "&#x27;").replace('"', "&#x22;"),
        # Canonical XML (signed SOAP) in an attribute: `>` and `'` as written.
        lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;"),
    ],
)
async def test_a_password_quoted_back_in_any_xml_escaping_is_redacted(
    client: Client, partner: Partner, escape: Any
) -> None:
    password = "p'w\"d<&>x"
    erp = await create_partner(
        client, partner.url, auth={"type": "none"}, secrets={"erp_senha": password}
    )
    proxy = await create_action(
        client,
        erp["id"],
        name="veiculo-proxy",
        mode="proxy",
        path="/ws/frota",
        xml_body={"template": "<login>{{ secrets.erp_senha }}</login>"},
    )
    fault = f'<fault><login senha="{escape(password)}"/></fault>'
    partner.respond_with(500, raw=fault.encode(), headers={"Content-Type": "text/xml"})
    invoked = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    problem = await invoked.json()
    assert invoked.status == 502, problem
    assert problem["partner_body"] == f'<fault><login senha="{MASK}"/></fault>'


def _xml_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


async def test_an_xml_body_cannot_branch_on_a_secret_s_value(
    client: Client, partner: Partner
) -> None:
    """A template sees each secret as a mark, put in place once the body is rendered: a
    comparison of it says nothing of the secret, and an index or a length of it is refused
    whatever the secret, so an admin cannot read a write-only secret back through the call's
    outcome (422 against 200)."""
    erp = await create_partner(client, partner.url, secrets={"erp_token": "Kq7z"})
    partner.respond_with(raw=b"<ok/>", headers={"Content-Type": "text/xml"})
    outcomes = []
    for n, test in enumerate(
        (
            "secrets.erp_token[0] == 'K'",
            "secrets.erp_token[0] == 'x'",
            "secrets.erp_token == 'Kq7z'",
            "secrets.erp_token|length == 4",
            "'q7' in secrets.erp_token",
            "secrets.erp_token < 'L'",
        )
    ):
        template = "{% if " + test + " %}<bad>{% else %}<ok/>{% endif %}"
        action = await create_action(
            client, erp["id"], name=f"branch{n}", mode="proxy", xml_body={"template": template}
        )
        response = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
        )
        outcomes.append(response.status)
    assert outcomes == [422, 422, 200, 422, 200, 200]
    assert {call.body for call in partner.requests} == {b"<ok/>"}

    action = await create_action(
        client,
        erp["id"],
        name="printed",
        mode="proxy",
        xml_body={
            "template": "<a t=\"{{ secrets.erp_token }}\">{{ 'T ' ~ secrets.erp_token }}</a>"
        },
    )
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    assert response.status == 200, await response.text()
    assert partner.requests[-1].body == b'<a t="Kq7z">T Kq7z</a>'


async def test_an_xml_body_that_spends_its_budget_renders_off_the_event_loop(
    client: Client,
) -> None:
    """docs/security.md §10: a template spending its whole budget costs other requests only
    thread switches. An action's XML body rendered on the event loop, where it is sent:
    every other request of the process waited 0.16-0.37 s for each send."""
    template = (
        "<a>{% for i in range(body.n) %}{% for j in range(body.n) %}{% if j < 0 %}x{% endif %}"
        "{% endfor %}{% endfor %}</a>"
    )
    partner = await create_partner(client, "http://127.0.0.1:9")
    action = await post(
        client,
        "/api/v1/actions",
        {
            "name": "soap",
            "partner_id": partner["id"],
            "method": "POST",
            "path": "/ws",
            "mode": "proxy",
            "xml_body": {"template": template, "sample": {"body": {"n": 2}}},
        },
    )
    worst, stop = 0.0, False

    async def ticker() -> None:  # the event loop's longest stall, as a 5 ms ticker sees it
        nonlocal worst
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            worst, last = max(worst, now - last - 0.005), now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    answer = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", json={"payload": {"n": 3000}}, headers=auth()
    )
    took = time.perf_counter() - started
    stop = True
    await task
    assert answer.status == 422
    assert "steps" in (await answer.json())["errors"][0]["message"]  # the budget, spent
    # The render spends its step budget, some tens of milliseconds on a quiet machine: on the
    # loop the ticker would have stalled for (nearly) all of it.
    assert took > 0.03 and worst < took / 2, f"loop held {worst:.3f} s of a {took:.3f} s render"


@pytest.mark.parametrize(
    "printed",
    [
        "secrets.pin | first",
        "secrets.pin | truncate(9, True, '')",
        "('k ' ~ secrets.pin) | trim",
        "secrets.pin | lower",
        "secrets.pin[1:]",
    ],
)
async def test_an_xml_body_that_filters_cuts_or_calls_a_secret_is_refused(
    client: Client, partner: Partner, printed: str
) -> None:
    """A secret is printed whole or not at all: a filter, a slice or a method given one
    would send a piece of its mark, or the secret untransformed."""
    erp = await create_partner(client, partner.url, secrets={"pin": "1234:5678"})
    action = await create_action(
        client,
        erp["id"],
        name="cut",
        mode="proxy",
        xml_body={"template": "<a>{{ " + printed + " }}</a>"},
    )
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    text = await response.text()
    assert response.status == 422, text
    assert (await response.json())["errors"][0]["keyword"] == "secret"
    assert "1234" not in text
    assert partner.requests == []
