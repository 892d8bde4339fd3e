"""XML and SOAP partners, and JSON inside a form field, through HTTP: a trigger with
`"format": "xml"` reads the body into the tree mappings read (attributes, repeated elements,
namespaces, a SOAP envelope as a path), refuses DTDs (XXE, billion laughs), malformed, too
deep and oversized bodies with a clear problem and writes nothing; `from_json()` reads a form
field holding JSON; actions and schedules read a partner's XML answer the same way."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import pytest

from gateway.formats import DocumentRefused, parse_xml
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_vehicle,
    partner,
)
from tests.schedule_support import run_now, runner, runs
from tests.support import auth
from tests.triggers_support import (
    Client,
    bearer,
    create_position_trigger,
    create_trigger,
    entities,
    upload_mapping,
    upload_shipped,
    vehicle_track,
)

__all__ = ["partner"]  # the fixture

ROOT = Path(__file__).resolve().parents[1]
SASCAR = (ROOT / "tests/data/partner_payloads/sascar_pacote_posicoes.xml").read_bytes()
XML = {"Content-Type": "application/xml"}

ERP_VEHICLE = """
name: erp-xml-vehicle
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: Envelope.Body.veiculo.placa, transforms: [plate]}
  renavam: Envelope.Body.veiculo.renavam
  year: {from: Envelope.Body.veiculo.ano, transforms: [integer]}
  attributes.erp_id: Envelope.Body.veiculo."@id"
  attributes.fleet: Envelope.Body.veiculo.frota."#text"
  attributes.fleet_code: Envelope.Body.veiculo.frota."@codigo"
  attributes.tags: {from: Envelope.Body.veiculo.etiqueta, transforms: []}
  attributes.first_tag: Envelope.Body.veiculo.etiqueta[0]
  attributes.tare_kg: {from: Envelope.Body.veiculo.tara, transforms: [parse_number]}
"""

ERP_SOAP = """<?xml version="1.0" encoding="ISO-8859-1"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
                  xmlns:erp="urn:erp:frota" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <soapenv:Header/>
  <soapenv:Body>
    <erp:veiculo id="V-0042">
      <erp:placa> abc-1d23 </erp:placa>
      <erp:renavam>86769597308</erp:renavam>
      <erp:ano>2022</erp:ano>
      <erp:frota codigo="SP-01">Frota São Paulo</erp:frota>
      <erp:etiqueta>refrigerado</erp:etiqueta>
      <erp:etiqueta><![CDATA[rota <norte>]]></erp:etiqueta>
      <erp:tara>1.234,5</erp:tara>
      <erp:motorista xsi:nil="true"/>
      <!-- a comment is no data -->
    </erp:veiculo>
  </soapenv:Body>
</soapenv:Envelope>
"""


async def _post(
    client: Client, trigger: dict[str, Any], body: bytes | str, content_type: str = "text/xml"
) -> tuple[int, Any]:
    """(status, the JSON answer): these tests are about reading XML, so they ask for JSON
    answers even to SOAP envelopes (SOAP answers: tests/test_soap_answers.py)."""
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=body.encode("latin-1") if isinstance(body, str) else body,
        headers={**bearer(trigger), "Content-Type": content_type, "Accept": "application/json"},
    )
    return response.status, await response.json()


async def _xml_trigger(client: Client, **spec: Any) -> dict[str, Any]:
    await upload_mapping(client, ERP_VEHICLE)
    return await create_trigger(client, mapping="erp-xml-vehicle", format="xml", **spec)


# -- the tree --------------------------------------------------------------------------------


async def test_a_soap_envelope_with_namespaces_attributes_and_repeats_writes_the_entity(
    client: Client,
) -> None:
    trigger = await _xml_trigger(client)
    status, body = await _post(client, trigger, ERP_SOAP, "application/soap+xml")
    assert status == 201, body
    (vehicle,) = await entities(client)
    assert vehicle["plate"] == "ABC1D23" and vehicle["year"] == 2022
    assert vehicle["renavam"] == "86769597308"
    assert vehicle["attributes"] == {
        "erp_id": "V-0042",
        "fleet": "Frota São Paulo",  # the ISO-8859-1 declaration decides the encoding
        "fleet_code": "SP-01",
        "tags": ["refrigerado", "rota <norte>"],
        "first_tag": "refrigerado",
        "tare_kg": 1234.5,
    }


async def test_the_charset_of_the_media_type_decides_the_encoding(client: Client) -> None:
    await create_vehicle(client, "ABC1D23")
    mapping = """
name: plain-xml
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: veiculo.placa
  attributes.city: veiculo.cidade
"""
    await upload_mapping(client, mapping)
    trigger = await create_trigger(client, name="latin", mapping="plain-xml", format="xml")
    body = "<veiculo><placa>ABC1D23</placa><cidade>São Paulo</cidade></veiculo>"
    latin = "text/xml; charset=ISO-8859-1"
    status, answer = await _post(client, trigger, body.encode("latin-1"), latin)
    assert status == 200, answer
    (vehicle,) = await entities(client)
    assert vehicle["attributes"] == {"city": "São Paulo"}
    status, problem = await _post(client, trigger, body.encode("latin-1"), "text/xml")
    assert status == 400  # UTF-8 by default: 0xE3 is no UTF-8, and the 400 says so
    assert problem["detail"].startswith(
        "malformed XML: line 1, column 41: the body is not valid UTF-8 (byte 40) and names no "
        "other encoding; a partner that sends another names it: Content-Type: text/xml; "
        "charset=ISO-8859-1"
    ), problem
    status, problem = await _post(client, trigger, body.encode(), "text/xml; charset=klingon")
    assert (status, problem["detail"]) == (400, "malformed XML: unknown charset 'klingon'")
    status, problem = await _post(client, trigger, body.encode(), "text/xml; charset=hex")
    assert (status, problem["detail"]) == (400, "malformed XML: unknown charset 'hex'")


DECLARED_LATIN = (
    '<?xml version="1.0" encoding="ISO-8859-1"?>'
    "<veiculo><placa>ABC1D23</placa><cidade>São Paulo</cidade></veiculo>"
)


@pytest.mark.parametrize(
    ("content_type", "encoded"),
    [
        ("text/xml", codecs.BOM_UTF8 + DECLARED_LATIN.encode()),  # a template's declaration
        ("text/xml; charset=ISO-8859-1", codecs.BOM_UTF8 + DECLARED_LATIN.encode()),
        ("text/xml; charset=ISO-8859-1", DECLARED_LATIN.encode("utf-16")),  # a Java default
    ],
)
def test_a_byte_order_mark_decides_the_encoding_before_the_label_and_the_declaration(
    content_type: str, encoded: bytes
) -> None:
    """Windows tools write a mark; a template keeps its `encoding="ISO-8859-1"`, a Java client
    labels everything `charset=ISO-8859-1`: the mark was read as Latin-1 text (`SÃ£o`) or as
    garbage before the root (a 400)."""
    charset = content_type.partition("charset=")[2] or None
    tree = parse_xml(encoded, charset=charset)
    assert tree == {"veiculo": {"placa": "ABC1D23", "cidade": "São Paulo"}}


@pytest.mark.parametrize("content_type", ["application/xml", "text/xml", "application/atom+xml"])
async def test_every_xml_media_type_is_read(client: Client, content_type: str) -> None:
    trigger = await _xml_trigger(client)
    status, body = await _post(client, trigger, ERP_SOAP, content_type)
    assert status == 201, body


def test_the_tree_convention() -> None:
    tree = parse_xml(
        b'<a:root xmlns:a="urn:a" xmlns:b="urn:b" b:kind="x" v="1">'
        b"<a:item>1</a:item><b:item>2</b:item><item>3</item>"
        b"<only>x</only><empty/><blank>  </blank><mixed>t<i>u</i>w</mixed>"
        b'<nil xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" />'
        b"<?pi ignored?></a:root>"
    )
    assert tree == {
        "root": {
            "@kind": "x",
            "@v": "1",
            "item": ["1", "2", "3"],  # prefixes dropped: names that meet are a list
            "only": "x",
            "empty": "",
            "blank": "",
            "mixed": {"i": "u", "#text": "tw"},
            "nil": None,
        }
    }


def test_attribute_names_that_meet_without_their_prefixes_are_a_list() -> None:
    tree = parse_xml('<r xmlns:p="urn:p" xmlns:q="urn:q" p:id="1" q:id="2">t</r>')
    assert tree == {"r": {"@id": ["1", "2"], "#text": "t"}}


async def test_the_input_schema_checks_the_tree_whose_values_are_text(client: Client) -> None:
    schema = {
        "type": "object",
        "required": ["Envelope"],
        "properties": {
            "Envelope": {
                "type": "object",
                "required": ["Body"],
                "properties": {
                    "Body": {
                        "type": "object",
                        "properties": {
                            "veiculo": {
                                "type": "object",
                                "properties": {"ano": {"type": "string", "pattern": "^[0-9]{4}$"}},
                            }
                        },
                    }
                },
            }
        },
    }
    trigger = await _xml_trigger(client, input_schema=schema)
    assert (await _post(client, trigger, ERP_SOAP))[0] == 201
    status, problem = await _post(client, trigger, ERP_SOAP.replace("2022", "dois mil"))
    assert status == 422 and problem["reason"] == "schema"
    assert [e["pointer"] for e in problem["errors"]] == ["/Envelope/Body/veiculo/ano"]


async def test_the_dry_run_reads_a_pasted_xml_sample_and_points_at_its_errors(
    client: Client,
) -> None:
    await upload_shipped(client, "sascar-pacote-posicoes")
    response = await client.post(
        "/api/v1/mappings/test",
        headers=auth(),
        json={"name": "sascar-pacote-posicoes", "payload": SASCAR.decode()},
    )
    answer = await response.json()
    assert response.status == 200, answer
    assert [r["document"]["time"] for r in answer["results"]] == [
        "2026-11-20T13:45:22Z",
        "2026-11-20T13:45:52Z",
        "2026-11-20T13:47:09Z",
    ]
    response = await client.post(
        "/api/v1/mappings/test",
        headers=auth(),
        json={"name": "sascar-pacote-posicoes", "payload": "<Envelope><Body></Envelope>"},
    )
    problem = await response.json()
    assert response.status == 422
    assert problem["errors"] == [
        {
            "pointer": "/payload",
            "message": "malformed XML: line 1, column 19: mismatched tag",
            "keyword": "xml",
        }
    ]


# -- refusals --------------------------------------------------------------------------------

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE veiculo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Envelope><Body><veiculo><placa>&xxe;</placa></veiculo></Body></Envelope>"""

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Envelope><Body><veiculo><placa>&lol9;</placa></veiculo></Body></Envelope>"""


@pytest.mark.parametrize("body", [XXE, LAUGHS], ids=["external-entity", "billion-laughs"])
async def test_a_dtd_is_refused_before_any_entity_is_read(client: Client, body: bytes) -> None:
    trigger = await _xml_trigger(client)
    status, problem = await _post(client, trigger, body)
    assert status == 400, problem
    assert problem["type"] == "https://rabbot.dev/problems/bad-request"
    assert "a DTD (<!DOCTYPE ...>) is not accepted" in problem["detail"]
    assert problem["line"] == 2
    assert await entities(client) == []


async def test_an_undeclared_entity_is_malformed(client: Client) -> None:
    trigger = await _xml_trigger(client)
    status, problem = await _post(client, trigger, b"<placa>&xxe;</placa>")
    assert status == 400
    assert (problem["line"], problem["column"]) == (1, 8)
    assert problem["detail"] == "malformed XML: line 1, column 8: undefined entity"


async def test_malformed_xml_is_a_400_naming_its_line_and_column(client: Client) -> None:
    trigger = await _xml_trigger(client)
    status, problem = await _post(client, trigger, b"<Envelope>\n  <Body>\n</Envelope>")
    assert status == 400
    assert problem["detail"] == "malformed XML: line 3, column 3: mismatched tag"
    assert (problem["line"], problem["column"]) == (3, 3)
    assert problem["instance"] == f"/hooks/{trigger['id']}"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "the request body is empty"),
        (b"<a/><b/>", "malformed XML: line 1, column 5: junk after document element"),
        (b"<a><p:b/></a>", "malformed XML: line 1, column 4: unbound prefix"),
        (b"<a>" * 33 + b"</a>" * 33, "malformed XML: line 1, column 97: elements nested"),
        (
            b'<?xml version="1.0" encoding="utf-32"?><a/>',
            "malformed XML: unsupported encoding in the XML declaration",
        ),
        (
            b'<?xml version="1.0" encoding="hex"?><a/>',
            "malformed XML: unsupported encoding in the XML declaration",
        ),
    ],
    ids=["empty", "two-roots", "unbound-prefix", "too-deep", "multi-byte", "not-a-text-codec"],
)
async def test_bodies_that_are_no_document_are_400s(
    client: Client, body: bytes, detail: str
) -> None:
    trigger = await _xml_trigger(client)
    status, problem = await _post(client, trigger, body)
    assert status == 400
    assert problem["detail"].startswith(detail)


async def test_an_oversized_xml_body_is_a_413_before_it_is_parsed(client: Client) -> None:
    trigger = await _xml_trigger(client, max_body_bytes=1024)
    status, problem = await _post(client, trigger, b"<a>" + b"x" * 2000 + b"</a>")
    assert status == 413
    assert problem["detail"] == "the body is over this trigger's limit of 1024 bytes"


async def test_an_xml_trigger_refuses_json_and_a_json_trigger_refuses_xml(client: Client) -> None:
    trigger = await _xml_trigger(client)
    status, problem = await _post(client, trigger, b'{"plate": "ABC1D23"}', "application/json")
    assert status == 415
    assert "expected application/xml, text/xml or application/soap+xml" in problem["detail"]
    plain = await create_trigger(client, name="json")
    assert (await _post(client, plain, ERP_SOAP))[0] == 415


async def test_xml_posted_as_a_form_or_as_text_is_read_as_xml(client: Client) -> None:
    """PHP's curl posts a string body as application/x-www-form-urlencoded: an XML trigger
    reads a body that starts as XML does whatever its label, and keeps the 415 for others."""
    trigger = await _xml_trigger(client)
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        status, answer = await _post(client, trigger, ERP_SOAP, content_type)
        assert status in (200, 201), (content_type, answer)
    status, problem = await _post(client, trigger, b"placa=ABC1D23", "text/plain")
    assert status == 415, problem


def test_a_refusal_knows_where() -> None:
    with pytest.raises(DocumentRefused) as caught:
        parse_xml(b"<a>\n<b></a>")
    assert (caught.value.line, caught.value.column, caught.value.message) == (
        2,
        6,  # at the name of the closing tag
        "mismatched tag",
    )


# -- the shipped SOAP position feed -------------------------------------------------------------


async def test_sascar_position_packets_in_a_soap_envelope_become_the_vehicles_fixes(
    client: Client,
) -> None:
    await create_vehicle(client, "ABC1D23", attributes={"tracker_id": "1231226"})
    await create_vehicle(client, "XYZ9A87")
    await upload_shipped(client, "sascar-pacote-posicoes")
    trigger = await create_position_trigger(client, mapping="sascar-pacote-posicoes", format="xml")
    status, body = await _post(client, trigger, SASCAR)
    assert status == 200, body
    assert body["summary"] == {"items": 3, "stored": 3, "duplicates": 0, "failed": 0}
    fixes = (await vehicle_track(client, "ABC1D23"))["items"]
    assert [(f["time"], f["lat"], f["lon"], f["speed_kmh"]) for f in fixes] == [
        ("2026-11-20T13:45:22Z", -23.56118, -46.65578, 24),
        ("2026-11-20T13:45:52Z", -23.56201, -46.65702, 31),
    ]
    assert fixes[0]["ignition"] is True and fixes[0]["heading"] == 236
    assert fixes[0]["attributes"]["sascar_packet_id"] == "98113204417"
    (parked,) = (await vehicle_track(client, "XYZ9A87"))["items"]
    assert parked["ignition"] is False and parked["time"] == "2026-11-20T13:47:09Z"
    again_status, again = await _post(client, trigger, SASCAR)  # a relay's retry
    assert again_status == 200 and again["summary"]["duplicates"] == 3


async def test_a_refused_xml_packet_is_kept_as_its_tree_and_replays(client: Client) -> None:
    await create_vehicle(client, "ABC1D23", attributes={"tracker_id": "1231226"})
    await upload_shipped(client, "sascar-pacote-posicoes")
    trigger = await create_position_trigger(client, mapping="sascar-pacote-posicoes", format="xml")
    status, body = await _post(client, trigger, SASCAR)  # XYZ9A87 is not registered yet
    assert status == 207 and body["summary"]["failed"] == 1
    response = await client.get(f"/api/v1/rejected?trigger_id={trigger['id']}", headers=auth())
    (kept,) = (await response.json())["items"]
    detail = await (await client.get(f"/api/v1/rejected/{kept['id']}", headers=auth())).json()
    assert detail["payload"]["placa"] == "XYZ9A87" and detail["payload"]["idPacote"] == (
        "98113204688"
    )
    await create_vehicle(client, "XYZ9A87")
    replayed = await client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=auth())
    assert replayed.status == 200, await replayed.text()
    (fix,) = (await vehicle_track(client, "XYZ9A87"))["items"]
    assert fix["time"] == "2026-11-20T13:47:09Z"


# -- JSON inside a form field ------------------------------------------------------------------

FORM_JSON = """
name: form-json-positions
direction: inbound
target: positions
fields:
  plate: {from: from_json(payload).placa, transforms: [plate]}
  time: {from: from_json(payload).dataHora, transforms: [{datetime: {parse: iso8601}}]}
  lat: {from: from_json(payload).lat, required: true}
  lon: {from: from_json(payload).lon, required: true}
  attributes.sender: remetente
"""
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_json_inside_a_form_field_is_read_with_from_json(client: Client) -> None:
    await create_vehicle(client, "ABC1D23")
    await upload_mapping(client, FORM_JSON)
    trigger = await create_position_trigger(client, mapping="form-json-positions", format="form")
    payload = (
        '{"placa": "ABC-1D23", "dataHora": "2026-12-01T12:00:00Z", "lat": -23.5, "lon": -46.6}'
    )
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data={"payload": payload, "remetente": "erp"},
        headers=bearer(trigger),
    )
    assert response.status == 201, await response.text()
    (stored,) = (await vehicle_track(client))["items"]
    assert (stored["lat"], stored["lon"], stored["attributes"]) == (-23.5, -46.6, {"sender": "erp"})


async def test_a_form_field_that_is_not_json_is_a_422_naming_the_field(client: Client) -> None:
    await create_vehicle(client, "ABC1D23")
    await upload_mapping(client, FORM_JSON)
    trigger = await create_position_trigger(client, mapping="form-json-positions", format="form")
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data="payload=%7B%22placa%22%3A+ABC&remetente=erp",
        headers={**bearer(trigger), **FORM},
    )
    problem = await response.json()
    assert response.status == 422 and problem["reason"] == "mapping"
    first = problem["errors"][0]
    assert first["keyword"] == "decode"
    assert first["message"].startswith("the text is not JSON: line 1, column 11:")
    assert (first["target"], first["source"]) == ("plate", "from_json(payload).placa")
    assert {e["target"] for e in problem["errors"]} == {"plate", "time", "lat", "lon"}


SOAP_JSON = """
name: soap-json-positions
direction: inbound
target: positions
items: from_json(Envelope.Body.obterPacotePosicoesJSONResponse.return)
fields:
  tracker_id: idVeiculo
  time: {from: dataPosicao, transforms: [{datetime: {parse: iso8601}}]}
  lat: latitude
  lon: longitude
"""

SOAP_ESCAPED_XML = """
name: soap-escaped-xml
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: from_xml(Envelope.Body.consultarResponse.return).veiculo.placa
  attributes.erp_id: from_xml(Envelope.Body.consultarResponse.return).veiculo."@id"
"""


async def test_json_text_inside_a_soap_answer_gives_the_items(client: Client) -> None:
    await create_vehicle(client, "ABC1D23", attributes={"tracker_id": "1231226"})
    await upload_mapping(client, SOAP_JSON)
    trigger = await create_position_trigger(client, mapping="soap-json-positions", format="xml")
    packets = (
        '[{"idVeiculo": 1231226, "dataPosicao": "2026-11-20T10:45:22-03:00",'
        ' "latitude": -23.56118, "longitude": -46.65578},'
        ' {"idVeiculo": 1231226, "dataPosicao": "2026-11-20T10:45:52-03:00",'
        ' "latitude": -23.56201, "longitude": -46.65702}]'
    )
    envelope = (
        '<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body>'
        '<ns2:obterPacotePosicoesJSONResponse xmlns:ns2="urn:x">'
        f"<return><![CDATA[{packets}]]></return>"
        "</ns2:obterPacotePosicoesJSONResponse></S:Body></S:Envelope>"
    )
    status, body = await _post(client, trigger, envelope)
    assert status == 200, body
    assert body["summary"]["stored"] == 2
    assert [f["lat"] for f in (await vehicle_track(client))["items"]] == [-23.56118, -23.56201]


async def test_escaped_xml_inside_a_soap_answer_is_read_with_from_xml(client: Client) -> None:
    await upload_mapping(client, SOAP_ESCAPED_XML)
    trigger = await create_trigger(client, mapping="soap-escaped-xml", format="xml")
    envelope = (
        '<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body>'
        "<consultarResponse><return>"
        "&lt;veiculo id=&quot;V-7&quot;&gt;&lt;placa&gt;ABC1D23&lt;/placa&gt;&lt;/veiculo&gt;"
        "</return></consultarResponse></S:Body></S:Envelope>"
    )
    status, body = await _post(client, trigger, envelope)
    assert status == 201, body
    (vehicle,) = await entities(client)
    assert (vehicle["plate"], vehicle["attributes"]) == ("ABC1D23", {"erp_id": "V-7"})
    dtd = envelope.replace("&lt;veiculo", "&lt;!DOCTYPE v&gt;&lt;veiculo")
    status, problem = await _post(client, trigger, dtd)
    assert status == 422 and problem["errors"][0]["keyword"] == "decode"
    assert "a DTD (<!DOCTYPE ...>) is not accepted" in problem["errors"][0]["message"]


# -- partners that answer XML ------------------------------------------------------------------


async def test_a_proxy_action_answers_a_partner_s_soap_reply_as_its_tree(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(client, partner.url, timeout_seconds=1)
    action = await create_action(client, erp["id"], mode="proxy", method="GET", path="/frota")
    partner.respond_with(raw=ERP_SOAP.encode("latin-1"), headers={"Content-Type": "text/xml"})
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", headers=auth(), json={"payload": {}}
    )
    answer = await response.json()
    assert response.status == 200, answer
    veiculo = answer["data"]["Envelope"]["Body"]["veiculo"]
    assert veiculo["@id"] == "V-0042" and veiculo["placa"] == "abc-1d23"


async def test_a_partner_s_malformed_xml_answer_is_a_502_naming_where(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(client, partner.url, timeout_seconds=1)
    action = await create_action(client, erp["id"], mode="proxy", method="GET", path="/frota")
    partner.respond_with(raw=b"<a>\n<b></a>", headers={"Content-Type": "application/xml"})
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", headers=auth(), json={"payload": {}}
    )
    problem = await response.json()
    assert response.status == 502, problem
    assert "body is not valid XML: line 2, column 6: mismatched tag" in problem["detail"]


async def test_a_schedule_polls_a_partner_that_answers_soap_xml(
    client: Client, partner: Partner
) -> None:
    await create_vehicle(client, "ABC1D23", attributes={"tracker_id": "1231226"})
    await create_vehicle(client, "XYZ9A87")
    await upload_shipped(client, "sascar-pacote-posicoes")
    sascar = await create_partner(client, partner.url, name="Sascar", timeout_seconds=1)
    action = await create_action(
        client, sascar["id"], name="pacotes", mode="proxy", method="GET", path="/SasIntegra"
    )
    partner.respond_with(raw=SASCAR, headers={"Content-Type": "text/xml; charset=utf-8"})
    response = await client.post(
        "/api/v1/schedules",
        headers=auth(),
        json={
            "name": "sascar",
            "action_id": action["id"],
            "every": "1m",
            "target": {"type": "positions", "mapping": "sascar-pacote-posicoes"},
        },
    )
    schedule = await response.json()
    assert response.status == 201, schedule
    assert await runner(client).run_until_idle() == {"ok": 1}
    (run,) = await runs(client, schedule["id"])
    assert (run["items_read"], run["written"], run["rejected"]) == (3, 3, 0)
    assert len((await vehicle_track(client, "ABC1D23"))["items"]) == 2
    # No new packets: Sascar answers an empty response element, which is no items.
    empty = (
        b'<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body>'
        b'<ns2:obterPacotePosicoesResponse xmlns:ns2="urn:x"/></S:Body></S:Envelope>'
    )
    partner.respond_with(raw=empty, headers={"Content-Type": "text/xml"})
    await run_now(client, schedule["id"])
    assert await runner(client).run_until_idle() == {"ok": 1}
    latest = (await runs(client, schedule["id"]))[0]
    assert (latest["outcome"], latest["items_read"], latest["written"]) == ("ok", 0, 0)


async def test_a_charset_whose_codec_fails_otherwise_than_undecodable_bytes_is_a_400(
    client: Client,
) -> None:
    trigger = await _xml_trigger(client)
    # The punycode codec raises a bare UnicodeError (not a UnicodeDecodeError) on this text:
    # a host-name codec, no charset (`charsets.text_codec`).
    body = b"<veiculo><placa>-9999999</placa></veiculo>"
    status, problem = await _post(client, trigger, body, "text/xml; charset=punycode")
    assert status == 400, problem
    assert problem["detail"] == "malformed XML: unknown charset 'punycode'"


async def test_a_partner_s_xml_answer_in_a_charset_whose_codec_fails_is_a_502(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(client, partner.url, timeout_seconds=1)
    action = await create_action(client, erp["id"], mode="proxy", method="GET", path="/frota")
    partner.respond_with(
        raw=b"<a>-9999999</a>", headers={"Content-Type": "text/xml; charset=punycode"}
    )
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", headers=auth(), json={"payload": {}}
    )
    problem = await response.json()
    assert response.status == 502, problem
    assert "body is not valid XML: unknown charset 'punycode'" in problem["detail"]


TWO_DOCUMENTS = """
name: two-documents
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: placa
  attributes.a: length(from_json(a))
  attributes.b: length(from_json(b))
"""


async def test_the_documents_from_json_reads_count_against_the_item_s_work(
    client: Client,
) -> None:
    """Each document read is values built for the item, like a multi-select's: two texts of
    60,000 values each are more than the 100,000 of one item's work, not 60,000 twice."""
    await upload_mapping(client, TWO_DOCUMENTS)
    trigger = await create_trigger(client, mapping="two-documents")
    one = "[" + ",".join(["0"] * 60_000) + "]"
    response = await client.post(
        f"/hooks/{trigger['id']}",
        json={"placa": "ABC1D23", "a": one, "b": one.replace("0", "1")},
        headers=bearer(trigger),
    )
    problem = await response.json()
    assert response.status == 422, problem
    (error,) = problem["errors"]
    assert error["keyword"] == "limit" and error["target"] == "attributes.b"
    assert "the work to evaluate this item exceeds the limit of 100,000" in error["message"]
    response = await client.post(
        f"/hooks/{trigger['id']}",
        json={"placa": "ABC1D23", "a": one, "b": "[1]"},
        headers=bearer(trigger),
    )
    assert response.status == 201, await response.text()
