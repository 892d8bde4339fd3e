"""Answers to XML and SOAP calls, through HTTP: a SOAP 1.1 or 1.2 call is answered with an
envelope of its version (a Response carrying what the JSON answer carries, always HTTP 200;
a refusal as a Fault whose detail is the same RFC 9457 problem, with SOAP's 500 / 400 except
the statuses partners retry by: 401, 413, 415, 429, 503 with their headers); a plain XML call
in XML when its Accept prefers it; everything else in JSON as before. Every answer is read
with an XML parser (the standard library's ElementTree)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse

from gateway.triggers.ingest import Ingestor
from tests.partner_double import create_vehicle
from tests.support import auth
from tests.test_command_faults import FAULTS, Injector, app, faults
from tests.test_xml_payloads import ERP_VEHICLE, SASCAR
from tests.triggers_support import (
    Client,
    bearer,
    create_position_trigger,
    create_trigger,
    entities,
    upload_mapping,
    upload_shipped,
)

__all__ = ["app", "faults"]  # the fixtures
FAULTS_BY_NAME = {f.name: f for f in FAULTS}

SOAP = {
    "1.1": "http://schemas.xmlsoap.org/soap/envelope/",
    "1.2": "http://www.w3.org/2003/05/soap-envelope",
}
# What a JAX-WS or .NET client sends with each version.
SOAP_HEADERS = {
    "1.1": {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"urn:erp:frota/veiculo"'},
    "1.2": {"Content-Type": 'application/soap+xml; charset=utf-8; action="urn:erp:frota/veiculo"'},
}
ANSWER_TYPES = {"1.1": "text/xml", "1.2": "application/soap+xml"}
RABBOT = "urn:rabbot:gateway:1"
PROBLEM = "urn:ietf:rfc:7807"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
VERSIONS = pytest.mark.parametrize("version", ["1.1", "1.2"])
YEAR_SCHEMA = {
    "type": "object",
    "properties": {
        "Envelope": {
            "properties": {
                "Body": {
                    "properties": {
                        "veiculo": {
                            "properties": {"ano": {"type": "string", "pattern": "^[0-9]{4}$"}}
                        }
                    }
                }
            }
        }
    },
}
FINE = """
name: soap-fine
direction: inbound
entity_type: other
kind: fine
key: [key]
fields:
  key: {from: Envelope.Body.multa.ait, required: true}
  ait_number: Envelope.Body.multa.ait
  plate: {from: Envelope.Body.multa.placa, transforms: [plate]}
  amount_brl: {from: Envelope.Body.multa.valor, transforms: [number]}
  status: {value: open}
"""


def envelope(version: str, inner: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP[version]}" '
        f'xmlns:erp="urn:erp:frota"><s:Header/><s:Body>{inner}</s:Body></s:Envelope>'
    ).encode()


def vehicle(year: str = "2022", plate: str = "ABC1D23") -> str:
    return (
        f'<erp:veiculo id="V-1"><erp:placa>{plate}</erp:placa><erp:ano>{year}</erp:ano>'
        "</erp:veiculo>"
    )


async def _vehicle_trigger(client: Client, **spec: Any) -> dict[str, Any]:
    """An XML trigger that answers its callers in the form they speak."""
    await upload_mapping(client, ERP_VEHICLE)
    spec = {"answers": "as_called", **spec}
    return await create_trigger(client, mapping="erp-xml-vehicle", format="xml", **spec)


async def _post(
    client: Client, trigger: dict[str, Any], body: bytes, headers: dict[str, str]
) -> ClientResponse:
    response = await client.post(
        f"/hooks/{trigger['id']}", data=body, headers={**bearer(trigger), **headers}
    )
    await response.read()
    return response


async def _xml(response: ClientResponse, content_type: str) -> ET.Element:
    """The answer parsed, after checking its media type (always UTF-8)."""
    assert response.content_type == content_type, await response.text()
    assert response.charset == "utf-8"
    return ET.fromstring(await response.read())


async def _soap_body(response: ClientResponse, version: str) -> ET.Element:
    """The one element inside the answer's Body."""
    root = await _xml(response, ANSWER_TYPES[version])
    assert root.tag == f"{{{SOAP[version]}}}Envelope"
    (body,) = root
    assert body.tag == f"{{{SOAP[version]}}}Body"
    (content,) = body
    return content


async def _fault(response: ClientResponse, version: str) -> tuple[str, str, ET.Element]:
    """(the fault code, the reason, the RFC 9457 problem element) of a SOAP Fault."""
    fault = await _soap_body(response, version)
    env = SOAP[version]
    assert fault.tag == f"{{{env}}}Fault"
    if version == "1.1":
        assert [child.tag for child in fault] == ["faultcode", "faultstring", "detail"]
        code, reason = fault.findtext("faultcode"), fault.findtext("faultstring")
        detail = fault.find("detail")
    else:
        code = fault.findtext(f"{{{env}}}Code/{{{env}}}Value")
        text = fault.find(f"{{{env}}}Reason/{{{env}}}Text")
        assert text is not None
        assert text.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
        reason = text.text
        detail = fault.find(f"{{{env}}}Detail")
    assert detail is not None
    (problem,) = detail
    assert problem.tag == f"{{{PROBLEM}}}problem"
    assert code is not None and reason is not None
    return code, reason, problem


def tree(element: ET.Element) -> Any:
    """An element read back by RFC 9457's XML convention: children named `i` are an array,
    other children an object, no children its text; `xsi:nil` is null."""
    if element.get(f"{{{XSI}}}nil") == "true":
        return None
    children = list(element)
    if not children:
        return element.text or ""
    if all(_local(child.tag) == "i" for child in children):
        return [tree(child) for child in children]
    return {_local(child.tag): tree(child) for child in children}


def as_text(value: Any) -> Any:
    """A JSON answer as its XML form reads back: scalars as text, empty arrays and objects
    as empty text."""
    if isinstance(value, dict):
        return {k: as_text(v) for k, v in value.items()} if value else ""
    if isinstance(value, list):
        return [as_text(v) for v in value] if value else ""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


# -- success -------------------------------------------------------------------------------


@VERSIONS
async def test_a_soap_call_is_answered_with_an_envelope_of_its_version_carrying_the_result(
    client: Client, version: str
) -> None:
    trigger = await _vehicle_trigger(client)
    headers = {**SOAP_HEADERS[version], "Idempotency-Key": "soap-1"}
    response = await _post(client, trigger, envelope(version, vehicle()), headers)
    assert response.status == 200  # SOAP stacks take 200 as success: the 201 is inside
    result = await _soap_body(response, version)
    assert result.tag == f"{{{RABBOT}}}Response"
    assert result.get("status") == "201"
    assert all(child.tag.startswith(f"{{{RABBOT}}}") for child in result.iter() if child != result)
    answer = tree(result)
    assert answer["key"] == "ABC1D23" and answer["created"] == "true"
    assert answer["events"] == ["entity.created"]
    assert answer["id"] == (await entities(client))[0]["id"]
    # The same information as the JSON answer: the first answer, replayed as JSON.
    replay = await _post(
        client,
        trigger,
        envelope(version, vehicle()),
        {**headers, "Accept": "application/json"},
    )
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert (replay.status, replay.content_type) == (201, "application/json")
    assert answer == as_text(await replay.json())


async def test_an_idempotent_replay_of_a_soap_call_is_the_same_envelope(client: Client) -> None:
    trigger = await _vehicle_trigger(client)
    headers = {**SOAP_HEADERS["1.1"], "Idempotency-Key": "soap-2"}
    first = await _post(client, trigger, envelope("1.1", vehicle()), headers)
    again = await _post(client, trigger, envelope("1.1", vehicle()), headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (again.status, await again.read()) == (first.status, await first.read())
    assert tree(await _soap_body(again, "1.1"))["created"] == "true"


async def test_text_with_xml_special_characters_round_trips_escaped(client: Client) -> None:
    await upload_mapping(client, FINE)
    trigger = await create_trigger(
        client,
        name="fines",
        entity_type="other",
        kind="fine",
        mapping="soap-fine",
        format="xml",
        answers="as_called",
    )
    inner = "<multa><ait>A&lt;&amp;\"'1</ait><placa>ABC1D23</placa><valor>130.16</valor></multa>"
    response = await _post(client, trigger, envelope("1.2", inner), SOAP_HEADERS["1.2"])
    assert response.status == 200, await response.text()
    raw = await response.read()
    assert b"A&lt;&amp;" in raw  # escaped by the serializer, not dropped or doubled
    result = await _soap_body(response, "1.2")
    assert result.findtext(f"{{{RABBOT}}}key") == "A<&\"'1"
    (fine,) = await entities(client, "other")
    assert fine["ait_number"] == "A<&\"'1"


async def test_a_batch_with_a_refused_item_is_a_soap_success_saying_207(client: Client) -> None:
    await create_vehicle(client, "ABC1D23", attributes={"tracker_id": "1231226"})
    await upload_shipped(client, "sascar-pacote-posicoes")
    trigger = await create_position_trigger(
        client, mapping="sascar-pacote-posicoes", format="xml", answers="as_called"
    )
    response = await _post(client, trigger, SASCAR, SOAP_HEADERS["1.1"])  # XYZ9A87 unknown
    assert response.status == 200
    result = await _soap_body(response, "1.1")
    assert result.get("status") == "207"
    answer = tree(result)
    assert answer["summary"] == {"items": "3", "stored": "2", "duplicates": "0", "failed": "1"}
    refused = answer["results"][2]
    assert (refused["index"], refused["status"]) == ("2", "422")
    assert refused["problem"]["errors"][0]["pointer"] == "/plate"


# -- faults --------------------------------------------------------------------------------


@VERSIONS
async def test_a_schema_error_is_a_fault_carrying_the_problem_and_its_pointers(
    client: Client, version: str
) -> None:
    trigger = await _vehicle_trigger(client, input_schema=YEAR_SCHEMA)
    bad = envelope(version, vehicle(year="dois mil"))
    response = await _post(client, trigger, bad, SOAP_HEADERS[version])
    assert response.status == {"1.1": 500, "1.2": 400}[version]
    code, reason, problem = await _fault(response, version)
    assert code == {"1.1": "soap:Client", "1.2": "env:Sender"}[version]
    detail = tree(problem)
    assert (detail["status"], detail["reason"]) == ("422", "schema")
    assert detail["type"] == "https://rabbot.dev/problems/invalid-payload"
    assert [e["pointer"] for e in detail["errors"]] == ["/Envelope/Body/veiculo/ano"]
    assert reason == detail["detail"]
    # The same problem as the JSON one (already redacted), nothing more.
    json_answer = await _post(
        client, trigger, bad, {**SOAP_HEADERS[version], "Accept": "application/json"}
    )
    assert json_answer.content_type == "application/problem+json"
    assert detail == as_text(await json_answer.json())
    assert await entities(client) == []


@VERSIONS
async def test_malformed_xml_is_a_fault_naming_its_line_and_column(
    client: Client, version: str
) -> None:
    trigger = await _vehicle_trigger(client)
    body = f'<s:Envelope xmlns:s="{SOAP[version]}">\n  <s:Body>\n</s:Envelope>'.encode()
    response = await _post(client, trigger, body, SOAP_HEADERS[version])
    assert response.status == {"1.1": 500, "1.2": 400}[version]
    code, reason, problem = await _fault(response, version)
    assert code == {"1.1": "soap:Client", "1.2": "env:Sender"}[version]
    assert reason == "malformed XML: line 3, column 3: mismatched tag"
    detail = tree(problem)
    assert (detail["status"], detail["line"], detail["column"]) == ("400", "3", "3")


async def test_a_body_no_parser_can_start_is_answered_by_its_content_type(
    client: Client,
) -> None:
    trigger = await _vehicle_trigger(client)
    response = await _post(client, trigger, b"not xml at all", SOAP_HEADERS["1.2"])
    assert response.status == 400
    code, _, problem = await _fault(response, "1.2")
    assert code == "env:Sender" and tree(problem)["line"] == "1"


@VERSIONS
async def test_a_bad_token_is_answered_json_401_with_its_challenge_whatever_the_call_speaks(
    client: Client, version: str
) -> None:
    """Before the caller is authenticated, its trigger's `answers` is not known to it: JSON,
    as for an unknown trigger (the answer tells no trigger id apart)."""
    trigger = await _vehicle_trigger(client)
    forged = {**trigger, "token": trigger["token"][:-4] + "AAAA"}
    response = await _post(client, forged, envelope(version, vehicle()), SOAP_HEADERS[version])
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="rabbot-gateway"'
    assert response.content_type == "application/problem+json"
    assert (await response.json())["detail"] == "missing, invalid or revoked credentials"
    unknown = {**forged, "id": "trg_" + "x" * 20}
    other = await _post(client, unknown, envelope(version, vehicle()), SOAP_HEADERS[version])
    assert other.status == 401
    assert (await other.read()).replace(b"x" * 20, trigger["id"][4:].encode()) == (
        await response.read()
    )


async def test_an_xml_trigger_answers_a_soap_call_in_json_unless_it_answers_as_called(
    client: Client,
) -> None:
    """SPEC §3: JSON by default. `answers: as_called` is the trigger's choice, and a PATCH
    changes it."""
    trigger = await _vehicle_trigger(client, answers="json")
    response = await _post(client, trigger, envelope("1.1", vehicle()), SOAP_HEADERS["1.1"])
    assert (response.status, response.content_type) == (201, "application/json")
    assert (await response.json())["key"] == "ABC1D23"
    refused = await _post(client, trigger, b"<Envelope", SOAP_HEADERS["1.1"])
    assert (refused.status, refused.content_type) == (400, "application/problem+json")
    patched = await client.patch(
        f"/api/v1/triggers/{trigger['id']}", json={"answers": "as_called"}, headers=auth()
    )
    assert patched.status == 200 and (await patched.json())["answers"] == "as_called"
    answered = await _post(client, trigger, envelope("1.1", vehicle()), SOAP_HEADERS["1.1"])
    assert (answered.status, answered.content_type) == (200, "text/xml")


async def test_a_rate_limited_soap_call_keeps_429_and_retry_after(client: Client) -> None:
    trigger = await _vehicle_trigger(client, rate_limit={"per_second": 0.01, "burst": 1})
    first = await _post(client, trigger, envelope("1.1", vehicle()), SOAP_HEADERS["1.1"])
    assert first.status == 200
    second = await _post(client, trigger, envelope("1.1", vehicle()), SOAP_HEADERS["1.1"])
    assert second.status == 429
    assert int(second.headers["Retry-After"]) >= 1
    code, _, problem = await _fault(second, "1.1")
    assert (code, tree(problem)["status"]) == ("soap:Client", "429")


async def test_an_oversized_soap_body_is_a_fault_keeping_413(client: Client) -> None:
    trigger = await _vehicle_trigger(client, max_body_bytes=1024)
    big = envelope("1.2", vehicle() + "<!--" + "x" * 2000 + "-->")
    response = await _post(client, trigger, big, SOAP_HEADERS["1.2"])
    assert response.status == 413
    code, reason, _ = await _fault(response, "1.2")
    assert (code, reason) == ("env:Sender", "the body is over this trigger's limit of 1024 bytes")


async def test_a_json_trigger_refuses_a_soap_call_with_a_fault_keeping_415(
    client: Client,
) -> None:
    trigger = await create_trigger(client, name="json", answers="as_called")
    response = await _post(client, trigger, envelope("1.1", vehicle()), SOAP_HEADERS["1.1"])
    assert response.status == 415
    code, reason, _ = await _fault(response, "1.1")
    assert code == "soap:Client" and reason.startswith("expected application/json")


async def test_a_database_failure_after_the_caller_is_known_is_a_fault_keeping_503(
    app: Client, faults: Injector
) -> None:
    """The entity write fails on the server (a failpoint): a Fault that keeps 503 and its
    Retry-After, and says the outcome is unknown. (A database down before the caller is
    authenticated is a JSON 503, as a bad token is a JSON 401.)"""
    trigger = await _vehicle_trigger(app)
    async with faults.failing(FAULTS_BY_NAME["ShutdownInProgress"]):
        response = await _post(app, trigger, envelope("1.1", vehicle()), SOAP_HEADERS["1.1"])
    assert response.status == 503
    assert int(response.headers["Retry-After"]) >= 1
    code, _, problem = await _fault(response, "1.1")
    assert code == "soap:Server"
    detail = tree(problem)
    assert detail["type"] == "https://rabbot.dev/problems/store-unavailable"
    assert detail["outcome"] == "unknown"


@VERSIONS
async def test_an_unexpected_error_is_a_receiver_fault_with_the_request_id_and_no_internals(
    client: Client, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A defect of ours (an exception nobody expected, here put in the ingest path) is the
    server's fault in the caller's SOAP version: 500, `soap:Server` / `env:Receiver`, the
    internal-error problem with the request id to quote, and not a word of the exception."""
    trigger = await _vehicle_trigger(client)

    async def defect(*_: Any, **__: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Ingestor, "ingest", defect)
    response = await _post(client, trigger, envelope(version, vehicle()), SOAP_HEADERS[version])
    assert response.status == 500
    code, reason, problem = await _fault(response, version)
    assert code == {"1.1": "soap:Server", "1.2": "env:Receiver"}[version]
    detail = tree(problem)
    assert (detail["status"], detail["type"]) == ("500", "https://rabbot.dev/problems/internal")
    assert detail["request_id"] == response.headers["X-Request-Id"]
    assert detail["request_id"] in reason
    assert "secret" not in (await response.text())


# -- which form ------------------------------------------------------------------------------


async def test_the_envelope_decides_the_soap_version_not_the_headers(client: Client) -> None:
    trigger = await _vehicle_trigger(client)
    # A hand-made SOAP 1.1 call without SOAPAction, and one labelled application/xml.
    for content_type in ("text/xml", "application/xml"):
        response = await _post(
            client, trigger, envelope("1.1", vehicle()), {"Content-Type": content_type}
        )
        assert (await _soap_body(response, "1.1")).tag == f"{{{RABBOT}}}Response"
    # A SOAP 1.2 media type on a document that is no envelope: plain XML, answered JSON.
    plain = await _post(
        client, trigger, b"<veiculo><placa>ABC1D23</placa></veiculo>", SOAP_HEADERS["1.2"]
    )
    assert (plain.status, plain.content_type) == (422, "application/problem+json")


async def test_a_soap_client_that_asks_for_json_keeps_json_answers(client: Client) -> None:
    trigger = await _vehicle_trigger(client, input_schema=YEAR_SCHEMA)
    json_please = {**SOAP_HEADERS["1.2"], "Accept": "application/json"}
    ok = await _post(client, trigger, envelope("1.2", vehicle()), json_please)
    assert (ok.status, ok.content_type) == (201, "application/json")
    assert (await ok.json())["key"] == "ABC1D23"
    refused = await _post(client, trigger, envelope("1.2", vehicle(year="x")), json_please)
    assert (refused.status, refused.content_type) == (422, "application/problem+json")


@pytest.mark.parametrize("accept", ["application/xml", "text/xml", "application/xml, */*;q=0.1"])
async def test_plain_xml_is_answered_in_xml_when_accept_prefers_it(
    client: Client, accept: str
) -> None:
    await upload_mapping(
        client,
        ERP_VEHICLE.replace("erp-xml-vehicle", "plain-vehicle").replace("Envelope.Body.", ""),
    )
    trigger = await create_trigger(
        client,
        mapping="plain-vehicle",
        format="xml",
        answers="as_called",
        input_schema={"required": ["veiculo"]},
    )
    headers = {"Content-Type": "application/xml", "Accept": accept}
    body = b'<veiculo id="V-1"><placa>ABC1D23</placa><ano>2022</ano></veiculo>'
    response = await _post(client, trigger, body, headers)
    assert response.status == 201  # plain XML keeps the HTTP statuses of the JSON answer
    result = await _xml(response, "application/xml")
    assert (result.tag, result.get("status")) == (f"{{{RABBOT}}}Response", "201")
    assert tree(result)["key"] == "ABC1D23"
    refused = await _post(client, trigger, b"<frota/>", headers)
    assert refused.status == 422
    problem = await _xml(refused, "application/problem+xml")
    assert problem.tag == f"{{{PROBLEM}}}problem"
    detail = tree(problem)
    assert detail["status"] == "422" and detail["errors"][0]["keyword"] == "required"


@pytest.mark.parametrize("accept", [None, "*/*", "application/json, application/xml;q=0.5"])
async def test_plain_xml_is_answered_json_unless_accept_prefers_xml(
    client: Client, accept: str | None
) -> None:
    trigger = await _vehicle_trigger(client)
    headers = {"Content-Type": "application/xml"} | ({"Accept": accept} if accept else {})
    body = b"<Envelope><Body><veiculo><placa>ABC1D23</placa></veiculo></Body></Envelope>"
    response = await _post(client, trigger, body, headers)
    assert (response.status, response.content_type) == (201, "application/json")
    assert (await response.json())["key"] == "ABC1D23"
    refused = await _post(client, trigger, b"<a>", headers)
    assert (refused.status, refused.content_type) == (400, "application/problem+json")


async def test_a_json_trigger_answers_json_whatever_the_accept(client: Client) -> None:
    trigger = await create_trigger(client, name="json")
    xml_please = {**bearer(trigger), "Accept": "application/xml"}
    url = f"/hooks/{trigger['id']}"
    ok = await client.post(url, json={"plate": "ABC1D23"}, headers=xml_please)
    assert (ok.status, ok.content_type) == (201, "application/json")
    refused = await client.post(url, json={"plate": "no plate"}, headers=xml_please)
    assert (refused.status, refused.content_type) == (422, "application/problem+json")


async def test_a_get_through_an_xml_trigger_stays_json(client: Client) -> None:
    trigger = await _vehicle_trigger(client)
    await _post(client, trigger, envelope("1.1", vehicle()), SOAP_HEADERS["1.1"])
    soapy = {**bearer(trigger), **SOAP_HEADERS["1.1"], "Accept": "text/xml"}
    one = await client.get(f"/hooks/{trigger['id']}/ABC1D23", headers=soapy)
    assert (one.status, one.content_type) == (200, "application/json")
    missing = await client.get(f"/hooks/{trigger['id']}/XYZ9A87", headers=soapy)
    assert (missing.status, missing.content_type) == (404, "application/problem+json")


async def test_the_hook_s_xml_and_soap_answers_are_documented(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    post = doc["paths"]["/hooks/{trigger_id}"]["post"]["responses"]
    assert {"application/json", "application/xml", "text/xml", "application/soap+xml"} <= set(
        post["200"]["content"]
    )
    assert {"application/problem+json", "application/problem+xml", "text/xml"} <= set(
        post["422"]["content"]
    )
    assert "SOAP 1.1 Fault" in post["500"]["description"]
    get = doc["paths"]["/hooks/{trigger_id}"]["get"]["responses"]
    assert set(get["200"]["content"]) == {"application/json"}
