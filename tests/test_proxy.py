"""Proxy actions: POST /api/v1/actions/{id}/invoke calls the partner now and answers with its
mapped reply; partner failures are 502/504 problems naming the partner's status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.actions.proxy import Proxy
from gateway.auth.keyring import KeyRing
from gateway.auth.secretbox import SecretBox
from gateway.errors import BadRequest
from gateway.formats.json_tree import ANSWER_DEPTH
from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
    raw_partner,
    upload_mapping,
)
from tests.support import SECRET_KEY, auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[1]
DRIVER_ANSWER = (ROOT / "tests/data/partner_payloads/driver_lookup_response.json").read_bytes()


ERP_VEHICLE = """
name: erp-vehicle
direction: outbound
entity_type: vehicle
body:
  placa: entity.plate
  categoria: entity.type
  id: entity.id
  tipo: entity.entity_type
  versao: entity.version
"""


async def test_a_request_mapping_reads_the_same_entity_in_a_proxy_call_and_a_delivery(
    client: Client, partner: Partner
) -> None:
    """`entity.type` is the vehicle's own field (`truck`) in both modes: a delivery laid the
    event's reference (`type: vehicle`, `key`, `rev`) over the entity's data, and the ERP was
    told the category is `vehicle`; its metadata is `id`, `entity_type` and `version`."""
    services = client.app[services_key]
    await upload_mapping(client, ERP_VEHICLE)
    erp = await create_partner(client, partner.url)
    proxy = await create_action(
        client, erp["id"], name="now", mode="proxy", request_mapping="erp-vehicle"
    )
    push = await create_action(client, erp["id"], name="push", request_mapping="erp-vehicle")
    await create_subscription(client, push["id"])
    vehicle = await create_vehicle(client, type="truck")
    patched = await client.patch(
        f"/api/v1/entities/vehicle/{vehicle['id']}", headers=auth(), json={"odometer_km": 3}
    )
    assert patched.status == 200, await patched.text()
    await services.relay.run_until_idle()
    await services.delivery_worker.run_until_idle()
    invoked = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke",
        headers=auth(),
        json={"entity": {"type": "vehicle", "id": vehicle["id"]}},
    )
    assert invoked.status == 200, await invoked.text()

    delivered, proxied = (request.json() for request in partner.requests)
    expected = {
        "placa": "ABC1D23",
        "categoria": "truck",
        "id": vehicle["id"],
        "tipo": "vehicle",
        "versao": 2,
    }
    assert delivered == expected
    assert proxied == expected


async def _proxy_action(client: Client, base_url: str, **overrides: Any) -> str:
    partner_doc = await create_partner(client, base_url, timeout_seconds=1)
    body = {"mode": "proxy", "method": "GET", "path": "/lookup", **overrides}
    action = await create_action(client, partner_doc["id"], **body)
    return str(action["id"])


async def test_current_driver_lookup_is_mapped_and_written_into_the_vehicle(
    client: Client, partner: Partner
) -> None:
    await upload_mapping(client, (ROOT / "mappings/hr-current-driver.yaml").read_text())
    hr = await create_partner(
        client, partner.url, name="RH", auth={"type": "none"}, secrets={"hr_token": "hr-t0ken"}
    )
    action = await create_action(
        client,
        hr["id"],
        name="current driver",
        mode="proxy",
        method="GET",
        path="/veiculos/{plate}/condutor-atual",
        request_mapping="hr-current-driver",
        response_mapping="hr-current-driver",
        write_back=True,
    )
    vehicle = await create_vehicle(client, "ABC1D23")
    partner.respond_with(raw=DRIVER_ANSWER)

    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke",
        headers=auth(),
        json={"entity": {"type": "vehicle", "key": "ABC1D23"}},
    )

    body = await response.json()
    assert response.status == 200, body
    sent = partner.requests[0]
    assert (sent.method, sent.path) == ("GET", "/veiculos/ABC1D23/condutor-atual")
    assert sent.headers["Authorization"] == "Bearer hr-t0ken"
    # (the shipped sample keeps phone and e-mail beside condutorAtual, so only these map)
    driver = {"name": "Ana Souza", "cpf": "52998224725"}
    assert body["status"] == 200
    assert body["data"] == {"current_driver": driver}
    assert body["written"] == {
        "entity": {"type": "vehicle", "id": vehicle["id"]},
        "changed": ["current_driver"],
    }
    stored = await (
        await client.get(f"/api/v1/entities/vehicle/{vehicle['id']}", headers=auth())
    ).json()
    assert stored["current_driver"] == driver
    await client.app[services_key].relay.run_until_idle()
    events = await (await client.get("/api/v1/events?type=entity.updated", headers=auth())).json()
    assert events["items"][0]["origin"]["kind"] == "action"


ODOMETER_MAPPING = """
name: odo
direction: outbound
entity_type: vehicle
path:
  plate: {from: entity.plate, required: true}
response:
  odometer_km: km
"""


async def _written_back(
    client: Client, partner: Partner, mapping: str, name: str, answer: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    """Partner "ERP" with a proxy action `GET /v/{plate}` whose answer (`answer`, mapped by
    `mapping`, named `name`) is written back; invoked on ABC1D23: (the partner, the answer)."""
    await upload_mapping(client, mapping)
    partner_doc = await create_partner(client, partner.url, name="ERP")
    action = await create_action(
        client,
        partner_doc["id"],
        mode="proxy",
        method="GET",
        path="/v/{plate}",
        request_mapping=name,
        response_mapping=name,
        write_back=True,
    )
    partner.respond_with(200, answer)
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke",
        headers=auth(),
        json={"entity": {"type": "vehicle", "key": "ABC1D23"}},
    )
    return partner_doc, response


async def test_a_written_back_answer_the_entity_refuses_is_the_partners_502_not_a_422(
    client: Client, partner: Partner
) -> None:
    """The caller sent no `odometer_km`: the entity schema refusing the partner's mapped
    answer was a 422 "Invalid payload" pointing at it."""
    vehicle = await create_vehicle(client, "ABC1D23")
    partner_doc, response = await _written_back(
        client, partner, ODOMETER_MAPPING, "odo", {"km": "muito"}
    )

    body = await response.json()
    assert response.status == 502, body
    assert body["type"].endswith("partner-error") and body["partner_id"] == partner_doc["id"]
    assert body["detail"].startswith("partner ERP's answer does not fit the entity: ")
    assert [e["pointer"] for e in body["errors"]] == ["/odometer_km"]
    stored = await (
        await client.get(f"/api/v1/entities/vehicle/{vehicle['id']}", headers=auth())
    ).json()
    assert "odometer_km" not in stored or stored["odometer_km"] is None


PLATE_MAPPING = """
name: placa
direction: outbound
entity_type: vehicle
path:
  plate: {from: entity.plate, required: true}
response:
  plate: placa
"""


@pytest.mark.parametrize("answer", ["XYZ1A23", "QWE4R56"])
async def test_a_written_back_answer_naming_another_vehicle_is_the_partners_502_not_a_409(
    client: Client, partner: Partner, answer: str
) -> None:
    """The partner's record of the vehicle holds another plate (taken by another vehicle, or
    free): the natural key cannot change, and the caller, who asked nothing of the kind, was
    told `409 conflict` as if its request were at fault (outbound5 OB5-3)."""
    await create_vehicle(client, "ABC1D23")
    await create_vehicle(client, "XYZ1A23")
    partner_doc, response = await _written_back(
        client, partner, PLATE_MAPPING, "placa", {"placa": answer}
    )

    body = await response.json()
    assert response.status == 502, body
    assert body["type"].endswith("partner-error") and body["partner_id"] == partner_doc["id"]
    assert body["detail"].startswith("partner ERP's answer does not fit the entity: ")
    stored = await (await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    assert stored["plate"] == "ABC1D23"


async def test_payload_is_the_body_and_fills_the_path_without_mappings(
    client: Client, partner: Partner
) -> None:
    action_id = await _proxy_action(client, partner.url, method="POST", path="/fines/{ait}")
    partner.respond_with(201, {"accepted": True})

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke",
        headers=auth(),
        json={"payload": {"ait": "A 12/3", "amount": 130.16}},
    )

    assert response.status == 200
    assert await response.json() == {"status": 201, "data": {"accepted": True}}
    sent = partner.requests[0]
    assert sent.path == "/fines/A 12/3"  # one percent-encoded segment, decoded by the server
    assert sent.json() == {"ait": "A 12/3", "amount": 130.16}
    assert sent.headers["Authorization"] == "Bearer s3cr3t"


async def test_a_request_mapping_formats_the_invoked_entitys_updated_at(
    client: Client, partner: Partner
) -> None:
    """An entity's metadata times reach the request mapping as the ISO 8601 text a read shows:
    they were the stored datetimes, a 422 "cannot read ... as a date-time" and no call."""
    changed = """
name: vehicle-changed
direction: outbound
entity_type: vehicle
body:
  placa: entity.plate
  alterado: {from: entity.updated_at, transforms: [{datetime: {output_tz: America/Sao_Paulo}}]}
"""
    await upload_mapping(client, changed)
    action_id = await _proxy_action(
        client, partner.url, method="POST", request_mapping="vehicle-changed"
    )
    vehicle = await create_vehicle(client, "ABE1234")

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke",
        headers=auth(),
        json={"entity": {"type": "vehicle", "key": "ABE1234"}},
    )

    assert response.status == 200, await response.text()
    sent = partner.requests[0].json()
    assert sent["placa"] == "ABE1234"
    alterado = datetime.fromisoformat(sent["alterado"])
    assert alterado == datetime.fromisoformat(vehicle["updated_at"])
    assert alterado.utcoffset() == timedelta(hours=-3)


async def test_encoded_delimiters_in_the_base_url_and_path_params_reach_the_partner_encoded(
    client: Client, partner: Partner
) -> None:
    # A partner whose ids hold ";", "=" or "," gets exactly the escapes the gateway wrote;
    # decoded, "A;B=C,D" is another resource to it (matrix parameters, a key=value id).
    base = f"{partner.url}/tenant%3Dacme%2Cbr"
    action_id = await _proxy_action(client, base, method="POST", path="/fines/{ait}")

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke",
        headers=auth(),
        json={"payload": {"ait": "A;B=C,D"}},
    )

    assert response.status == 200
    assert partner.requests[0].raw_path == "/tenant%3Dacme%2Cbr/fines/A%3BB%3DC%2CD"


async def test_path_values_without_a_mapping_are_written_as_a_mapping_writes_them(
    client: Client, partner: Partner
) -> None:
    """Filled from the payload without a mapping, `true` went to the partner as `/True` and an
    object as Python's `{'a': 1}`: a boolean is `true`, an object refused (422) and not sent."""
    action_id = await _proxy_action(client, partner.url, path="/veiculos/refrigerado/{r}")
    invoke = f"/api/v1/actions/{action_id}/invoke"

    answered = await client.post(invoke, headers=auth(), json={"payload": {"r": True}})
    refused = await client.post(invoke, headers=auth(), json={"payload": {"r": {"a": 1}}})

    assert answered.status == 200
    assert [r.raw_path for r in partner.requests] == ["/veiculos/refrigerado/true"]
    problem = await refused.json()
    assert (refused.status, refused.content_type) == (422, "application/problem+json")
    [error] = problem["errors"]
    assert error["pointer"] == "/path/r"
    assert error["message"] == "path parameter r is an object, not text for one segment"


async def test_a_redirect_is_a_502_naming_where_it_pointed(
    client: Client, partner: Partner
) -> None:
    action_id = await _proxy_action(client, partner.url)
    partner.respond_with(302, raw=b"", headers={"Location": "http://169.254.169.254/latest"})

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    problem = await response.json()
    assert response.status == 502
    assert "answered 302: redirected to http://169.254.169.254/latest;" in problem["detail"]
    assert len(partner.requests) == 1  # not followed


async def test_calls_to_a_partner_reuse_one_kept_alive_connection(
    client: Client, partner: Partner
) -> None:
    action_id = await _proxy_action(client, partner.url)

    for n in range(5):
        response = await client.post(
            f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {"n": n}}
        )
        assert response.status == 200

    assert len(partner.requests) == 5
    assert len({r.peer for r in partner.requests}) == 1  # one TCP connection for all five


async def test_partner_error_is_502_naming_its_status(client: Client, partner: Partner) -> None:
    action_id = await _proxy_action(client, partner.url)
    partner.respond_with(500, {"erro": "interno"})

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    problem = await response.json()
    assert response.status == 502
    assert response.content_type == "application/problem+json"
    assert problem["detail"] == "partner ERP answered 500"
    assert problem["partner_status"] == 500
    assert "interno" in problem["partner_body"]


async def test_slow_partner_is_504_bounded_by_its_timeout(client: Client, partner: Partner) -> None:
    partner_doc = await create_partner(client, partner.url, timeout_seconds=0.3)
    action = await create_action(client, partner_doc["id"], mode="proxy", method="GET")
    partner.respond_with(200, {}, delay=5)

    started = time.monotonic()
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", headers=auth(), json={"payload": {}}
    )

    assert response.status == 504
    assert "did not answer within 0.3 s" in (await response.json())["detail"]
    assert time.monotonic() - started < 4  # not the partner's 5 s


async def test_unreachable_partner_is_502(client: Client, unused_tcp_port: int) -> None:
    action_id = await _proxy_action(client, f"http://127.0.0.1:{unused_tcp_port}")

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    assert response.status == 502
    assert "could not be reached" in (await response.json())["detail"]


async def test_garbage_json_from_partner_is_502(client: Client, partner: Partner) -> None:
    action_id = await _proxy_action(client, partner.url)
    partner.respond_with(200, raw=b"{not json")

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    assert response.status == 502
    assert "unusable body" in (await response.json())["detail"]


async def test_answer_that_does_not_fit_the_response_mapping_is_502(
    client: Client, partner: Partner
) -> None:
    await upload_mapping(client, (ROOT / "mappings/hr-current-driver.yaml").read_text())
    action_id = await _proxy_action(client, partner.url, response_mapping="hr-current-driver")
    partner.respond_with(200, {"condutorAtual": None})

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    problem = await response.json()
    assert response.status == 502
    assert "does not fit the response mapping" in problem["detail"]
    assert problem["errors"]


async def test_partner_not_on_the_allow_list_is_refused(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    client = await aiohttp_client(make_app(outbound_allow=()))
    action_id = await _proxy_action(client, partner.url)

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    assert response.status == 502
    assert "loopback" in (await response.json())["detail"]
    assert partner.requests == []


async def test_a_call_to_an_oauth2_partner_is_bounded_by_one_timeout_across_token_and_refresh(
    client: Client,
) -> None:
    """The token fetch, the request, the refresh after a 401 and the retried request each had
    the whole `timeout_seconds`: up to four times it for the caller."""
    tokens = iter(["t1", "t2", "t3"])

    async def token(request: web.Request) -> web.Response:
        await asyncio.sleep(0.6)
        return web.json_response({"access_token": next(tokens), "token_type": "bearer"})

    async def api(request: web.Request) -> web.Response:
        await asyncio.sleep(0.6)
        ok = request.headers.get("Authorization") == "Bearer t2"
        return web.json_response({"ok": ok}, status=200 if ok else 401)

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_get("/x", api)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        oauth = {"type": "oauth2_client_credentials", "token_url": f"{url}/token"}
        partner_doc = await create_partner(
            client,
            url,
            name="ERP",
            timeout_seconds=1,
            auth=oauth | {"client_id": "c", "client_secret": "secret-1"},
        )
        action = await create_action(
            client, partner_doc["id"], mode="proxy", method="GET", path="/x"
        )
        started = time.monotonic()
        response = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", headers=auth(), json={"payload": {}}
        )
        took = time.monotonic() - started
        body = await response.json()
    finally:
        await runner.cleanup()

    # token 0.6 s, then 0.4 s left for the request (0.6 s): the deadline, not 2.4 s later
    assert response.status == 504, body
    assert body["detail"] == "partner ERP did not answer within 1 s"
    assert took < 2, took  # the 1 s deadline with room for a loaded machine, not 2.4 s


async def test_oauth2_token_is_fetched_once_and_reused(client: Client, partner: Partner) -> None:
    partner_doc = await create_partner(
        client,
        partner.url,
        auth={
            "type": "oauth2_client_credentials",
            "token_url": f"{partner.url}/oauth/token",
            "client_id": "gw",
            "client_secret": "cl1ent-s3cret",
        },
    )
    action = await create_action(client, partner_doc["id"], mode="proxy", method="GET", path="/api")
    partner.respond_with(
        200, {"access_token": "tok-1", "token_type": "Bearer", "expires_in": 3600}, times=1
    )

    for _ in range(3):
        response = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", headers=auth(), json={"payload": {}}
        )
        assert response.status == 200

    assert partner.paths() == ["/oauth/token", "/api", "/api", "/api"]
    assert {r.headers["Authorization"] for r in partner.requests[1:]} == {"Bearer tok-1"}
    metrics = await (await client.get("/metrics")).text()
    assert (
        f'gateway_partner_oauth_token_refreshes_total{{partner="{partner_doc["id"]}"}} 1.0'
        in metrics
    )
    assert "cl1ent-s3cret" not in metrics and "tok-1" not in metrics


async def test_invoke_needs_an_entity_or_a_payload(client: Client, partner: Partner) -> None:
    action_id = await _proxy_action(client, partner.url)

    both = await client.post(
        f"/api/v1/actions/{action_id}/invoke",
        headers=auth(),
        json={"payload": {}, "entity": {"type": "vehicle", "id": "x"}},
    )
    missing_entity = await client.post(
        f"/api/v1/actions/{action_id}/invoke",
        headers=auth(),
        json={"entity": {"type": "vehicle", "key": "ZZZ9Z99"}},
    )

    assert both.status == 422  # the body does not fit the route
    assert missing_entity.status == 404
    assert partner.requests == []


async def test_viewer_cannot_invoke(client: Client, partner: Partner) -> None:
    action_id = await _proxy_action(client, partner.url)

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(role="viewer"), json={"payload": {}}
    )

    assert response.status == 403


async def test_a_partner_answering_204_with_a_body_is_answered_as_its_204(
    client: Client,
) -> None:
    """aiohttp refused a 204 with a body whole, its status lost: the caller got a 502 for a
    call the partner took. The answer ends with its head (docs/outbound.md): it is the
    partner's 204, without data."""
    async with raw_partner(b"HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\nnull") as url:
        action_id = await _proxy_action(client, url.removesuffix("/hook"))
        response = await client.post(
            f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
        )
    body = await response.json()
    assert response.status == 200, body
    assert body == {"status": 204, "data": None}


@pytest.mark.parametrize(
    ("fields", "status", "answer"),
    [
        (b"Content-Length: 9, 9\r\n", 200, {"data": {"ok": 7}}),
        (b"Content-Length: 9\r\nContent-Length: 9\r\n", 200, {"data": {"ok": 7}}),
        (b"Transfer-Encoding: identity\r\nContent-Length: 9\r\n", 200, {"data": {"ok": 7}}),
        (
            b"Content-Length: 9\r\nContent-Length: 8\r\n",
            502,
            {
                "partner_status": 200,
                "detail": "partner ERP answered 200 with an unusable body: "
                "invalid HTTP answer: Duplicate Content-Length",
            },
        ),
    ],
    ids=["length-list", "length-twice", "identity-coding-and-length", "two-lengths"],
)
async def test_an_answer_with_odd_but_readable_framing_is_the_partners_answer(
    client: Client, fields: bytes, status: int, answer: dict[str, object]
) -> None:
    """RFC 9110 §8.6 and RFC 9112 §6.3 tell a client how to read these; aiohttp's parser
    refused them whole and the caller got a `502` without the partner's status. A head
    still refused (lengths that differ) keeps its status."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Type : application/json\r\n" + fields
    async with raw_partner(reply + b'\r\n{"ok": 7}') as url:
        partner_doc = await create_partner(client, url.removesuffix("/hook"))
        action = await create_action(client, partner_doc["id"], mode="proxy", path="/lookup")
        response = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", headers=auth(), json={"payload": {}}
        )
    body = await response.json()
    assert response.status == status, body
    assert {key: body.get(key) for key in answer} == answer


async def test_a_200_whose_chunked_body_is_malformed_is_a_502_at_once_naming_its_status(
    client: Client,
) -> None:
    """`Transfer-Encoding: chunked` on a body that is not chunked, the body in a packet after
    the head: the body's read never ended, the caller got a `504` after the partner's whole
    timeout for a partner that answered 200 at once. Now the 200 is read and its body said
    unusable, at once."""
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    async with raw_partner([head, b'{"ok":true}']) as url:
        partner_doc = await create_partner(client, url.removesuffix("/hook"), timeout_seconds=10)
        action = await create_action(
            client, partner_doc["id"], mode="proxy", method="GET", path="/lookup"
        )
        started = time.monotonic()
        response = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", headers=auth(), json={"payload": {}}
        )
    assert time.monotonic() - started < 3
    problem = await response.json()
    assert (response.status, problem["partner_status"]) == (502, 200)
    assert problem["detail"] == (
        "partner ERP answered 200 with an unusable body: "
        "invalid HTTP answer body: Invalid character in chunk size"
    )


@pytest.mark.parametrize(
    ("raw", "content_type", "answer"),
    [
        (b"hello plain", "text/plain", {"data": "hello plain", "content_type": "text/plain"}),
        (
            "ação 42".encode("latin-1"),
            "text/plain; charset=iso-8859-1",
            {"data": "ação 42", "content_type": "text/plain"},
        ),
        (b"<p>ok</p>", "text/html", {"data": "<p>ok</p>", "content_type": "text/html"}),
        (
            b"\x89PNG\r\n\x1a\n\xff",
            "image/png",
            {"data": "iVBORw0KGgr/", "content_type": "image/png", "encoding": "base64"},
        ),
    ],
    ids=["text", "latin-1 text", "html", "binary"],
)
async def test_an_answer_neither_json_nor_xml_is_returned_as_it_came(
    client: Client, partner: Partner, raw: bytes, content_type: str, answer: dict[str, Any]
) -> None:
    action_id = await _proxy_action(client, partner.url)
    partner.respond_with(200, raw=raw, headers={"Content-Type": content_type})

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    assert response.status == 200
    assert await response.json() == {"status": 200, **answer}


@pytest.mark.parametrize("charset", ["undefined", "idna", "punycode", "hex", "x-unknown"])
async def test_a_text_answer_in_a_charset_that_is_no_text_codec_is_read_as_utf8(
    client: Client, partner: Partner, charset: str
) -> None:
    """`undefined`, `idna` and `punycode` refuse bytes with a bare UnicodeError, which the
    proxy did not expect: a `500 internal` for every call of the action. Like a charset
    Python does not know, they name no charset: the text is read as UTF-8."""
    action_id = await _proxy_action(client, partner.url)
    content_type = f"text/plain; charset={charset}"
    partner.respond_with(200, raw="OK 42 ação".encode(), headers={"Content-Type": content_type})

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    assert response.status == 200, await response.text()
    answer = {"status": 200, "data": "OK 42 ação", "content_type": "text/plain"}
    assert await response.json() == answer


async def test_a_text_answer_past_the_read_cap_is_502_like_any_answer(
    client: Client, partner: Partner
) -> None:
    action_id = await _proxy_action(client, partner.url)
    partner.respond_with(200, raw=b"x" * (1024 * 1024 + 1), headers={"Content-Type": "text/plain"})

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    assert response.status == 502
    assert "cap" in (await response.json())["detail"]


# A partner's answer is never a 500: what it writes is decoded into text JSON can carry, and
# one the gateway cannot write again is a 502 naming its status.

UTF7_TEXT = b"erro interno +2AA- tente depois"  # `+2AA-`: UTF-7 for a lone U+D800


async def test_an_error_answer_in_utf7_with_a_lone_surrogate_is_a_502_problem(
    client: Client, partner: Partner
) -> None:
    """Its excerpt could not be written in the problem: aiohttp answered a bare text/plain
    500."""
    action_id = await _proxy_action(client, partner.url)
    partner.respond_with(500, raw=UTF7_TEXT, headers={"Content-Type": "text/plain; charset=utf-7"})

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    assert (response.status, response.content_type) == (502, "application/problem+json")
    problem = await response.json()
    assert problem["partner_status"] == 500
    assert problem["partner_body"] == "erro interno \ufffd tente depois"


async def test_a_text_answer_in_utf7_with_a_lone_surrogate_is_returned_as_text(
    client: Client, partner: Partner
) -> None:
    action_id = await _proxy_action(client, partner.url)
    partner.respond_with(200, raw=UTF7_TEXT, headers={"Content-Type": "text/plain; charset=utf-7"})

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    assert response.status == 200
    answer = await response.json()
    assert answer == {
        "status": 200,
        "data": "erro interno \ufffd tente depois",
        "content_type": "text/plain",
    }


async def test_a_redirect_to_a_location_that_is_not_utf8_is_a_502_problem(client: Client) -> None:
    reply = (
        b"HTTP/1.1 302 Found\r\nLocation: http://erp.example.com/relat\xf3rio\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    async with raw_partner(reply) as url:
        action_id = await _proxy_action(client, url.removesuffix("/hook"), path="/hook")
        response = await client.post(
            f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
        )

    assert (response.status, response.content_type) == (502, "application/problem+json")
    detail = (await response.json())["detail"]
    assert "answered 302: redirected to http://erp.example.com/relat\ufffdrio;" in detail


async def test_a_utf16_error_answer_without_byte_order_mark_is_a_502_naming_its_status(
    client: Client, partner: Partner
) -> None:
    """Its 4 KiB excerpt ending inside an emoji made the decoder raise: `could not be
    reached: request not sendable`, the partner's 500 lost."""
    text = '{"msg": "' + "a" * 2038 + "\U0001f600" + "b" * 3000 + '"}'  # emoji on byte 4096
    action_id = await _proxy_action(client, partner.url)
    partner.respond_with(
        500,
        raw=text.encode("utf-16-le"),
        headers={"Content-Type": "application/json; charset=utf-16"},
    )

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    problem = await response.json()
    assert response.status == 502 and problem["partner_status"] == 500
    assert problem["detail"] == "partner ERP answered 500"


def _nested(levels: int, leaf: bytes = b"1") -> bytes:
    return b"[" * levels + leaf + b"]" * levels


async def test_an_answer_nested_deeper_than_the_gateway_writes_is_a_502_not_a_500(
    client: Client, partner: Partner
) -> None:
    """Read up to 1,024 levels, written up to 254: a 300-level answer was a 500."""
    action_id = await _proxy_action(client, partner.url)
    invoke = f"/api/v1/actions/{action_id}/invoke"
    partner.respond_with(200, raw=_nested(ANSWER_DEPTH))
    response = await client.post(invoke, headers=auth(), json={"payload": {}})
    assert response.status == 200
    assert response.content_type == "application/json"

    for levels in (ANSWER_DEPTH + 1, 300, 1000):
        partner.respond_with(200, raw=_nested(levels))
        response = await client.post(invoke, headers=auth(), json={"payload": {}})
        problem = await response.json()
        assert (response.status, problem["partner_status"]) == (502, 200)
        assert problem["detail"] == (
            f"partner ERP answered 200 with an unusable body: body is JSON nested deeper "
            f"than {ANSWER_DEPTH} levels, which is not read"
        )


async def test_an_answer_the_error_expression_cannot_read_is_a_502(
    client: Client, partner: Partner
) -> None:
    """The `error` expression found a 300-level value that could not be quoted: a 500."""
    action_id = await _proxy_action(client, partner.url, error="errors")
    partner.respond_with(200, raw=b'{"errors": ' + _nested(300, b'"bad"') + b"}")

    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    assert (response.status, response.content_type) == (502, "application/problem+json")
    assert "answered 200 with an unusable body" in (await response.json())["detail"]


async def test_a_problem_whose_own_text_cannot_be_written_is_still_a_problem_document(
    client: Client, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error raised while a problem was written (its detail held a lone surrogate, as a
    partner's Latin-1 `Location` did) escaped the error middleware: aiohttp answered its own
    text/plain 500."""
    action_id = await _proxy_action(client, partner.url)

    async def unwritable(*args: Any, **kwargs: Any) -> Any:
        raise BadRequest("the entity named /relat\udcf3rio is not one")

    monkeypatch.setattr(Proxy, "invoke", unwritable)
    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )

    assert (response.status, response.content_type) == (500, "application/problem+json")
    problem = await response.json()
    assert problem["type"] == "https://rabbot.dev/problems/internal"
    assert problem["request_id"] == response.headers["X-Request-ID"]


OTHER_KEY = "another-secret-key-of-another-host-0000000"


async def _seal_partner_auth(client: Client, seal: Callable[[str], str]) -> str:
    """The only partner's stored credentials replaced by `seal(sealed)`: its id."""
    partners = client.app[services_key].store.db["partners"]
    doc = await partners.find_one({})
    await partners.update_one(
        {"_id": doc["_id"]}, {"$set": {"auth_sealed": seal(doc["auth_sealed"])}, "$inc": {"rev": 1}}
    )
    return str(doc["_id"])


async def test_a_proxy_call_whose_partner_secret_is_damaged_is_a_named_secret_damaged_problem(
    client: Client, partner: Partner
) -> None:
    """The partner's stored credentials open under no key, this process's key opens the key
    check: a `500 secret-damaged` naming the partner and its secret (not `internal`), counted
    in gateway_damaged_secrets_total; the partner is not called."""
    action_id = await _proxy_action(client, partner.url, method="POST", path="/fines")
    pid = await _seal_partner_auth(
        client, lambda s: s[:60] + ("B" if s[60] == "A" else "A") + s[61:]
    )
    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )
    problem = await response.json()
    assert (response.status, problem["type"]) == (
        500,
        "https://rabbot.dev/problems/secret-damaged",
    ), problem
    assert problem["detail"].startswith(f"stored secret damaged: partner 'ERP' ({pid})")
    assert "save the secret again" in problem["detail"] and "s3cr3t" not in problem["detail"]
    metrics = await (await client.get("/metrics")).text()
    assert f'gateway_damaged_secrets_total{{secret="partner:{pid}:auth"}} 1.0' in metrics
    assert partner.requests == []


async def test_a_proxy_call_whose_partner_secret_this_processs_key_lacks_is_a_503_to_retry(
    client: Client, partner: Partner
) -> None:
    """The others run with a key this process lacks (they re-sealed the key check, and the
    partner's credentials, under it): the call is this process's `503 key-refused` with a
    Retry-After (another process takes it), never a 500, nothing counted as damaged."""
    action_id = await _proxy_action(client, partner.url, method="POST", path="/fines")
    store = client.app[services_key].store
    rotated = SecretBox(KeyRing([OTHER_KEY, SECRET_KEY]))
    check = await store.key_check.sealed()
    assert await store.key_check.replace(check, rotated.rotate(check))
    await _seal_partner_auth(client, rotated.rotate)
    response = await client.post(
        f"/api/v1/actions/{action_id}/invoke", headers=auth(), json={"payload": {}}
    )
    problem = await response.json()
    assert (response.status, problem["type"]) == (503, "https://rabbot.dev/problems/key-refused")
    assert response.headers["Retry-After"] == "5"
    assert "GATEWAY_SECRET_KEY" in problem["detail"]
    metrics = await (await client.get("/metrics")).text()
    assert "gateway_damaged_secrets_total{" not in metrics


@pytest.mark.parametrize(
    ("body", "pointers"),
    [
        ({"payload": {"a": 1}, "dry_run": True}, ["/dry_run"]),
        ({"entity": {"type": "vehicle", "key": "ABC1D23", "bogus": 1}}, ["/entity/bogus"]),
        ({"": {}, "payload": {"": {}}}, ["/"]),
        ({"paylod": {"a": 1}}, ["", "/paylod"]),
        ({}, [""]),
    ],
)
async def test_an_invoke_body_with_a_member_it_does_not_know_is_a_422_and_calls_no_partner(
    client: Client, partner: Partner, body: dict[str, Any], pointers: list[str]
) -> None:
    """`dry_run` is no option of invoke: a body naming it (or any member invoke does not know,
    or neither entity nor payload) is refused before the partner is called."""
    await create_vehicle(client, "ABC1D23")
    action = await _proxy_action(client, partner.url)
    response = await client.post(f"/api/v1/actions/{action}/invoke", headers=auth(), json=body)
    problem = await response.json()
    assert response.status == 422, problem
    assert sorted(e["pointer"] for e in problem["errors"]) == pointers
    assert partner.requests == []
