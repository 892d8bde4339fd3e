"""What the second round of outside fuzzing reached (the admin UI's forms, crawled with a
session; the API from its own document; entity data in outbound URLs): each answered 500 or
reached what it must not before, each is a clear refusal now."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jsonschema_rs
import pytest
from aiohttp.test_utils import TestClient

from gateway.errors import InvalidPayload
from gateway.outbound.urls import build_url
from gateway.services import Services
from gateway.web import requests
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_vehicle,
    partner,
    upload_mapping,
)
from tests.support import auth
from tests.ui_support import csrf, log_in, make_user

Client = TestClient[Any, Any]
__all__ = ["partner"]  # the fixture

INBOUND = (
    "name: frota\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields: {plate: placa}\n"
)


async def test_a_ui_dry_run_with_params_that_are_not_an_object_is_refused_at_the_field(
    client: Client, services: Services
) -> None:
    """The mapping page's dry run read `params` as any JSON: a number, a list or a string
    reached the binding of the mapping's parameters, a 500 page."""
    upload = await client.post(
        "/api/v1/mappings",
        data=INBOUND.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert upload.status == 201, await upload.text()
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/mappings/frota")
    for params in ("-1", "1.5", "true", '"s"', "[1]"):
        response = await client.post(
            "/admin/mappings/frota/test",
            data={"csrf": token, "payload": '{"placa": "ABC1D23"}', "params": params},
        )
        page = await response.text()
        assert response.status == 422, (params, page[:300])
        assert 'data-field="params"' in page and "params must be an object" in page, params
    fine = await client.post(
        "/admin/mappings/frota/test",
        data={"csrf": token, "payload": '{"placa": "ABC1D23"}', "params": "{}"},
    )
    assert fine.status == 200 and "ABC1D23" in await fine.text()


@pytest.mark.parametrize(
    "value", ["..;", "..;jsessionid=x", ".;", ".;a=b", "../../admin", "..\\admin", "a/..", "a/./b"]
)
def test_a_path_parameter_a_server_reads_as_a_dot_segment_is_refused(value: str) -> None:
    """The URL library writes a parameter's `%3B` back as `;` on the wire, and Tomcat, Jetty
    and Spring cut `;...` from a segment before resolving dot segments: an entity's field
    "..;" in "/fines/{ait}/pay" reached such a partner's "/pay". And "..%2F..%2Fadmin" is
    "../../admin" to a proxy that decodes before it normalises (nginx, a URI in proxy_pass)."""
    with pytest.raises(InvalidPayload) as caught:
        build_url("https://erp.example.com/api", "/fines/{ait}/pay", {"ait": value})
    assert [p.pointer for p in caught.value.problems] == ["/path/ait"]


def test_a_path_parameter_with_a_semicolon_or_slash_elsewhere_is_still_one_segment() -> None:
    url = build_url("https://erp.example.com/api", "/fines/{ait}/pay", {"ait": "A;1..;/..x"})
    assert url == "https://erp.example.com/api/fines/A%3B1..%3B%2F..x/pay"


async def _trickled(client: Client, head: bytes) -> bytes:
    """The status line answered to a request whose body stops after its first bytes."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(head)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_login_form_sent_too_slowly_is_408_not_a_connection_held_for_ever(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's bodies had a deadline; the admin UI's forms, read before anyone is logged in
    (the login), and the mapping uploads did not: a client trickling a body held the
    connection, and its buffer, for as long as it liked."""
    monkeypatch.setattr(requests, "BODY_TIMEOUT_SECONDS", 0.2)
    login = await _trickled(
        client,
        b"POST /admin/login HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ncsrf=",
    )
    assert login.split()[1] == b"408"
    token = auth()["Authorization"].encode()
    for ctype, start in (
        (b"application/yaml", b"name: m\n"),
        (b"multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="f'),
    ):
        upload = await _trickled(
            client,
            b"POST /api/v1/mappings HTTP/1.1\r\nHost: x\r\nContent-Type: "
            + ctype
            + b"\r\nContent-Length: 1000\r\nAuthorization: "
            + token
            + b"\r\n\r\n"
            + start,
        )
        assert upload.split()[1] == b"408", ctype


async def _kind_and_mapping(client: Client, name: str, pattern: str, field: str) -> Any:
    kind = await client.post(
        "/api/v1/kinds",
        json={
            "name": name,
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"external_id": {"type": "string"}},
                "patternProperties": {pattern: {"type": "string"}},
            },
        },
        headers=auth(),
    )
    assert kind.status == 201, await kind.text()
    mapping = (
        f"name: {name}\ndirection: inbound\nentity_type: other\nkind: {name}\n"
        f"key: [external_id]\nfields:\n  external_id: id\n  {field}: x\n"
    )
    return await client.post(
        "/api/v1/mappings",
        data=mapping.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )


@pytest.mark.parametrize(
    ("pattern", "field"),
    [(r"^\p{L}+$", "Ab"), ("^(?<letter>x)", "xy"), (r"^\cA|^b$", "b")],
)
async def test_a_kinds_pattern_in_the_validators_syntax_checks_a_mapping_target(
    client: Client, pattern: str, field: str
) -> None:
    """A custom kind's `patternProperties` are ECMA-262 patterns (the validator's); the
    check of a mapping's targets read them with Python's `re`, which refuses `\\p{L}`,
    `(?<name>...)` and `\\cA`: the mapping's upload was a 500."""
    uploaded = await _kind_and_mapping(client, "ecma", pattern, field)
    assert uploaded.status == 201, await uploaded.text()


async def test_a_kinds_backtracking_pattern_does_not_hold_the_process(client: Client) -> None:
    """`^(a+)+$` against a 27-letter target backtracked for half a minute in Python's `re`,
    the event loop (every tenant's requests) held all along; a linear engine answers at once."""
    started = time.process_time()  # the CPU spent backtracking: load does not stretch it
    uploaded = await _kind_and_mapping(client, "redos", "^(a+)+$", "a" * 27 + "_")
    assert uploaded.status == 422, await uploaded.text()
    assert "a" * 27 + "_" in (await uploaded.json())["errors"][0]["pointer"]
    assert time.process_time() - started < 5


HEADER_MAPPING = """\
name: tagged
direction: outbound
entity_type: vehicle
headers:
  X-Tag: entity.attributes.tag
body:
  placa: entity.plate
"""


async def test_an_entitys_control_character_in_a_mapped_header_is_refused_at_the_header(
    client: Client, partner: Partner
) -> None:
    """A header value from entity data (partner data) with a NUL or another control character
    passed the mapping (its dry run showed the request), then the HTTP client refused to send
    it: a 502 "partner ... could not be reached" blaming the partner. Line breaks were
    already refused at the header; now every control character but a tab is."""
    await upload_mapping(client, HEADER_MAPPING)
    for tag in ("a\x00b", "a\x7fb", "\x1b[31m"):
        tried = await client.post(
            "/api/v1/mappings/test",
            json={
                "name": "tagged",
                "context": {"entity": {"plate": "ABC1D23", "attributes": {"tag": tag}}},
            },
            headers=auth(),
        )
        problem = await tried.json()
        assert tried.status == 422, problem
        assert [e["target"] for e in problem["errors"]] == ["headers.X-Tag"], problem
    source = await create_partner(client, partner.url)
    action = await create_action(
        client, source["id"], name="tag", mode="proxy", request_mapping="tagged"
    )
    await create_vehicle(client, "TAG1D23", attributes={"tag": "a\x01b"})
    invoked = await client.post(
        f"/api/v1/actions/{action['id']}/invoke",
        json={"entity": {"type": "vehicle", "key": "TAG1D23"}},
        headers=auth(),
    )
    assert invoked.status == 422, await invoked.text()
    assert partner.requests == []
    await create_vehicle(client, "TAB1D23", attributes={"tag": "a\tb é"})
    fine = await client.post(
        f"/api/v1/actions/{action['id']}/invoke",
        json={"entity": {"type": "vehicle", "key": "TAB1D23"}},
        headers=auth(),
    )
    assert fine.status == 200, await fine.text()
    assert partner.requests[0].headers["X-Tag"] == "a\tb é"


async def test_another_tenants_ids_named_in_a_body_are_unknown_references(
    client: Client,
) -> None:
    """Paths naming another tenant's ids are 404 (tests/test_route_table_security.py); the
    ids a body names are looked up in the caller's tenant too: a 422 at the member, as for an
    id that does not exist, and nothing is created."""
    source = await create_partner(client, "http://127.0.0.1:9")
    reader = await create_action(
        client, source["id"], name="acme-read", method="GET", mode="proxy", read_only=True
    )
    pusher = await create_action(client, source["id"], name="acme-push")
    driver = await client.post(
        "/api/v1/entities/driver", json={"name": "Ana", "cpf": "52998224725"}, headers=auth()
    )
    plan = await client.post(
        "/api/v1/maintenance-plans", json={"name": "acme-plan", "every_km": 10000}, headers=auth()
    )
    other = auth("globex")
    vehicle = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "GLB1D23"}, headers=other
    )
    mapping = (
        "name: m\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields: {plate: p}\n"
    )
    await upload_mapping(client, mapping, tenant="globex")
    vehicle_path = f"/api/v1/entities/vehicle/{(await vehicle.json())['id']}"
    tries = [
        (
            "/api/v1/subscriptions",
            "/action_id",
            {
                "action_id": pusher["id"],
                "event_types": ["entity.created"],
            },
        ),
        (
            "/api/v1/schedules",
            "/action_id",
            {
                "name": "poll",
                "action_id": reader["id"],
                "every": "1h",
                "target": {"entity_type": "vehicle", "mapping": "m"},
            },
        ),
        (f"{vehicle_path}/drivers", "/driver", {"driver": (await driver.json())["id"]}),
        (f"{vehicle_path}/drivers", "/driver", {"driver": "52998224725"}),
        (f"{vehicle_path}/services", "/plan", {"plan": (await plan.json())["id"]}),
    ]
    for path, pointer, body in tries:
        response = await client.post(path, json=body, headers=other)
        problem = await response.json()
        assert response.status == 422, (path, problem)
        assert [e["pointer"] for e in problem["errors"]] == [pointer], (path, problem)
    for ref in (pusher["id"], "acme-push"):
        flow = f"name: f\non:\n  events: [fine.received]\nsteps:\n  - id: c\n    call: {ref}\n"
        uploaded = await client.post(
            "/api/v1/flows",
            data=flow.encode(),
            headers={**other, "Content-Type": "application/yaml"},
        )
        problem = await uploaded.json()
        assert uploaded.status == 422, problem
        assert [e["pointer"] for e in problem["errors"]] == ["/steps/0/call"], problem
    for family in ("subscriptions", "schedules", "flows"):
        listed = await client.get(f"/api/v1/{family}", headers=other)
        assert (await listed.json())["items"] == [], family
    drivers = await client.get(f"{vehicle_path}/drivers", headers=other)
    assert "52998224725" not in await drivers.text()


def _answer_problems(
    document: dict[str, Any], path: str, method: str, status: int, body: Any
) -> list[str]:
    """How `body` breaks the response schema the document gives for it (none: it fits)."""
    content = document["paths"][path][method]["responses"][str(status)]["content"]
    schema = {**content["application/json"]["schema"], "components": document["components"]}
    validator = jsonschema_rs.validator_for(schema, validate_formats=True)
    return [error.message for error in validator.iter_errors(body)]


async def test_entity_and_template_answers_match_the_documented_schemas(client: Client) -> None:
    """schemathesis, given real ids, found the document wrong where it had only met 404s: an
    entity answer (create, read, change) was described by the schema of what may be written,
    which allows neither its id nor its metadata; a template without a sample answers
    `"sample": null`, documented as an object; and a track's empty `to` (no bound) and
    `cursor` (the first page) were documented as a date-time and a number."""
    document = await (await client.get("/openapi.json")).json()
    created = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "DOC1D23", "model": "Uno"}, headers=auth()
    )
    read = await client.get("/api/v1/entities/vehicle/DOC1D23", headers=auth())
    changed = await client.patch(
        "/api/v1/entities/vehicle/DOC1D23", json={"model": "Palio"}, headers=auth()
    )
    template = await client.post(
        "/api/v1/templates",
        json={
            "name": "t",
            "channel_type": "sms",
            "default_locale": "pt-BR",
            "locales": {"pt-BR": {"text": "oi"}},
        },
        headers=auth(),
    )
    track = await client.get(
        "/api/v1/entities/vehicle/DOC1D23/positions",
        params={"to": "", "cursor": ""},
        headers=auth(),
    )
    answers = [
        ("/api/v1/entities/{type}", "post", created),
        ("/api/v1/entities/{type}/{ref}", "get", read),
        ("/api/v1/entities/{type}/{ref}", "patch", changed),
        ("/api/v1/templates", "post", template),
        ("/api/v1/entities/vehicle/{ref}/positions", "get", track),
    ]
    for path, method, response in answers:
        body = await response.json()
        assert response.status in (200, 201), (path, body)
        assert _answer_problems(document, path, method, response.status, body) == [], path
    params = document["paths"]["/api/v1/entities/vehicle/{ref}/positions"]["get"]["parameters"]
    to = next(p["schema"] for p in params if p["name"] == "to")
    assert jsonschema_rs.validator_for(to).is_valid("")
    assert not jsonschema_rs.validator_for(to, validate_formats=True).is_valid("ontem")
    cursor = next(p["schema"] for p in params if p["name"] == "cursor")
    assert jsonschema_rs.validator_for(cursor).is_valid("")
