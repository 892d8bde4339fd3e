"""Fixes for the API tester's findings (2026-12-05): each test reproduces one finding through
HTTP against the app and proves the behaviour the contract asks for."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
from aiohttp import web
from bson import ObjectId

from gateway.auth.keyring import KeyRing
from gateway.auth.tokens import verify_admin_token
from gateway.config import Settings
from gateway.services import Services
from gateway.web.server import GatewayRunner
from gateway.web.state import services_key
from tests.flow_support import drain
from tests.partner_double import create_partner
from tests.processes import free_port
from tests.support import SECRET_KEY, auth, cli_env, gateway_command, run_command
from tests.triggers_support import (
    Client,
    bearer,
    create_position_trigger,
    create_trigger,
    hook,
    upload_mapping,
    vehicle_track,
)

JSON = {"Content-Type": "application/json"}
ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"


async def _raw(client: Client, method: str, path: str, text: str) -> tuple[int, Any]:
    """A JSON body sent as written: `600.0` stays a float on the wire."""
    response = await client.request(method, path, data=text, headers={**auth(), **JSON})
    return response.status, await response.json()


# -- 1. integer settings written as floats ---------------------------------------------------


async def test_trigger_limits_written_as_floats_meet_the_operators_caps(client: Client) -> None:
    status, body = await _raw(
        client,
        "POST",
        "/api/v1/triggers",
        '{"name": "f", "entity_type": "vehicle", "max_batch_items": 600.0}',
    )
    assert status == 422, body
    assert body["errors"][0]["pointer"] == "/max_batch_items"
    assert "GATEWAY_MAX_BATCH_ITEMS" in body["errors"][0]["message"]
    status, body = await _raw(
        client,
        "POST",
        "/api/v1/triggers",
        '{"name": "f", "entity_type": "vehicle", "max_body_bytes": 2000000.0}',
    )
    assert status == 422, body
    assert "GATEWAY_MAX_BODY_BYTES" in body["errors"][0]["message"]

    trigger = await create_trigger(client)
    path = f"/api/v1/triggers/{trigger['id']}"
    status, body = await _raw(client, "PATCH", path, '{"max_batch_items": 700.0}')
    assert status == 422, body
    assert body["errors"][0]["pointer"] == "/max_batch_items"

    # Within the caps, an integral float is the integer, stored as one.
    status, body = await _raw(
        client,
        "PATCH",
        path,
        '{"max_batch_items": 3.0, "max_body_bytes": 4096.0, '
        '"rate_limit": {"per_second": 5, "burst": 7.0}}',
    )
    assert status == 200, body
    assert body["max_batch_items"] == 3 and body["max_body_bytes"] == 4096
    stored = await client.app[services_key].store.db["triggers"].find_one({"_id": trigger["id"]})
    assert type(stored["max_batch_items"]) is int and type(stored["max_body_bytes"]) is int
    assert type(stored["rate_limit"]["burst"]) is int
    items = [{"plate": f"FLT{n}A1{n}"} for n in range(4)]
    response = await client.post(f"/hooks/{trigger['id']}", json=items, headers=bearer(trigger))
    assert response.status == 413, await response.text()
    assert (await response.json())["detail"].endswith("limit of 3")

    status, body = await _raw(client, "PATCH", path, '{"max_batch_items": 2.5}')
    assert status == 422 and body["errors"][0]["pointer"] == "/max_batch_items", body


async def test_other_integer_settings_read_integral_floats_as_integers(client: Client) -> None:
    partner = await create_partner(client, "https://erp.example.com", max_concurrency=4.0)
    partners = client.app[services_key].store.db["partners"]
    stored = await partners.find_one({"_id": ObjectId(partner["id"])})
    assert stored["max_concurrency"] == 4 and type(stored["max_concurrency"]) is int
    status, body = await _raw(
        client, "POST", "/api/v1/partners", orjson.dumps({"max_concurrency": 4.5}).decode()
    )
    assert status == 422 and "/max_concurrency" in {e["pointer"] for e in body["errors"]}

    trigger = await create_trigger(client)
    rotate = f"/api/v1/triggers/{trigger['id']}/rotate"
    status, body = await _raw(client, "POST", rotate, '{"grace_seconds": 60.0}')
    assert status == 200, body
    assert [c["valid_until"] is not None for c in body["credentials"]] == [True, False]
    status, body = await _raw(client, "POST", rotate, '{"grace_seconds": -1}')
    assert status == 422, body
    assert body["errors"][0]["pointer"] == "/grace_seconds"
    assert body["errors"][0]["keyword"] == "minimum"


# -- 2. a token parameter that would hide a read's parameter ---------------------------------


async def _create(client: Client, **spec: Any) -> tuple[int, Any]:
    body = {"name": "reads", "entity_type": "vehicle", "methods": ["GET", "POST"], **spec}
    response = await client.post("/api/v1/triggers", json=body, headers=auth())
    return response.status, await response.json()


async def test_token_in_query_cannot_take_a_name_the_reads_use(client: Client) -> None:
    for name in ("status", "plate", "limit", "cursor", "renavam"):
        status, body = await _create(client, auth={"mode": "token", "token_in_query": name})
        assert status == 422, body
        assert [e["pointer"] for e in body["errors"]] == ["/auth/token_in_query"]
        assert repr(name) in body["errors"][0]["message"]
    status, body = await _create(client, auth={"token_in_query": "cpf"}, entity_type="driver")
    assert status == 422 and "'cpf'" in body["detail"], body
    # A specification the schema refuses is a 422 still, not a 500 from the clash check.
    status, body = await _create(client, auth={"token_in_query": "status"}, entity_type={})
    assert status == 422 and "/entity_type" in {e["pointer"] for e in body["errors"]}, body

    # A name the reads do not take works, and the filter it would have hidden still filters.
    status, trigger = await _create(client, auth={"mode": "token", "token_in_query": "token"})
    assert status == 201, trigger
    for plate, state in (("TIQ1A11", "active"), ("TIQ2B22", "maintenance")):
        response = await client.post(
            "/api/v1/entities/vehicle", json={"plate": plate, "status": state}, headers=auth()
        )
        assert response.status == 201, await response.text()
    response = await client.get(
        f"/hooks/{trigger['id']}", params={"status": "maintenance", "token": trigger["token"]}
    )
    assert response.status == 200, await response.text()
    assert [v["plate"] for v in (await response.json())["items"]] == ["TIQ2B22"]


async def test_token_in_query_clash_is_refused_when_a_patch_adds_the_reads(client: Client) -> None:
    # POST only (no reads), or a form trigger whose GET is a write: the name is free.
    status, body = await _create(client, methods=["POST"], auth={"token_in_query": "status"})
    assert status == 201, body
    status, form = await _create(
        client, name="form", format="form", auth={"token_in_query": "plate"}
    )
    assert status == 201, form
    response = await client.patch(
        f"/api/v1/triggers/{body['id']}", json={"methods": ["GET", "POST"]}, headers=auth()
    )
    assert response.status == 422, await response.text()
    problem = await response.json()
    assert problem["errors"][0]["pointer"] == "/auth/token_in_query"
    response = await client.patch(
        f"/api/v1/triggers/{form['id']}", json={"format": "json"}, headers=auth()
    )
    assert response.status == 422, await response.text()


async def test_a_trigger_stored_before_the_token_parameter_rule_stays_editable(
    client: Client,
) -> None:
    """A trigger saved with a clashing token parameter before the rule existed keeps it
    through a change of anything else (a rename from the UI form); a change of its auth or
    methods is held to the rule."""
    status, body = await _create(client, methods=["POST"], auth={"token_in_query": "status"})
    assert status == 201, body
    triggers = client.app[services_key].store.db["triggers"]
    await triggers.update_one({"_id": body["id"]}, {"$set": {"methods": ["GET", "POST"]}})
    url = f"/api/v1/triggers/{body['id']}"
    renamed = await client.patch(url, json={"name": "renamed"}, headers=auth())
    assert renamed.status == 200, await renamed.text()
    restated = await client.patch(url, json={"methods": ["POST", "GET"]}, headers=auth())
    assert restated.status == 200, await restated.text()
    reauth = await client.patch(url, json={"auth": {"token_in_query": "status"}}, headers=auth())
    assert reauth.status == 422, await reauth.text()


async def test_a_position_trigger_token_parameter_cannot_be_its_reads_vehicle_name(
    client: Client,
) -> None:
    for name in ("plate", "tracker_id"):
        status, body = await _create(client, target="positions", auth={"token_in_query": name})
        assert status == 422, body
        assert [e["pointer"] for e in body["errors"]] == ["/auth/token_in_query"]
    status, body = await _create(client, target="positions", auth={"token_in_query": "token"})
    assert status == 201, body


# -- 3. a response mapping that cannot shape an entity ---------------------------------------

ANSWER = """\
name: placa-pos
direction: outbound
entity_type: vehicle
body:
  placa: {from: entity.plate, required: true}
  grupo: {from: entity.group, required: true}
"""


async def test_an_entity_the_response_mapping_cannot_shape_is_named_not_a_500(
    client: Client,
) -> None:
    await upload_mapping(client, ANSWER)
    status, trigger = await _create(client, methods=["GET"], response_mapping="placa-pos")
    assert status == 201, trigger
    for body in ({"plate": "RSP1A11", "group": "norte"}, {"plate": "RSP2B22"}):
        response = await client.post("/api/v1/entities/vehicle", json=body, headers=auth())
        assert response.status == 201, await response.text()
    missing = await client.get("/api/v1/entities/vehicle/RSP2B22", headers=auth())
    missing_id = (await missing.json())["id"]

    response = await client.get(f"/hooks/{trigger['id']}?limit=50", headers=bearer(trigger))
    assert response.status == 200, await response.text()
    items = (await response.json())["items"]
    assert [i for i in items if "placa" in i] == [{"placa": "RSP1A11", "grupo": "norte"}]
    (entry,) = [i for i in items if "problem" in i]
    assert entry["id"] == missing_id and entry["problem"]["status"] == 422
    assert entry["problem"]["entity"] == missing_id and entry["problem"]["errors"]

    response = await client.get(f"/hooks/{trigger['id']}/RSP2B22", headers=bearer(trigger))
    assert response.status == 422, await response.text()
    problem = await response.json()
    assert missing_id in problem["detail"] and problem["errors"], problem
    response = await client.get(f"/hooks/{trigger['id']}/RSP1A11", headers=bearer(trigger))
    assert response.status == 200 and (await response.json())["placa"] == "RSP1A11"


async def test_expose_hiding_a_field_the_response_mapping_requires_is_refused(
    client: Client,
) -> None:
    await upload_mapping(client, ANSWER)
    status, body = await _create(client, response_mapping="placa-pos", expose=["status"])
    assert status == 422, body
    messages = [e["message"] for e in body["errors"] if e["pointer"] == "/expose"]
    assert len(messages) == 2 and "entity.plate" in messages[0], messages
    status, body = await _create(client, response_mapping="placa-pos", expose=["plate", "group"])
    assert status == 201, body
    response = await client.patch(
        f"/api/v1/triggers/{body['id']}", json={"expose": ["plate"]}, headers=auth()
    )
    assert response.status == 422, await response.text()
    assert "entity.group" in await response.text()


# -- 4. the mapping dry run diffs what the write would store ---------------------------------

DRY = """\
name: dry
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: placa
  odometer_km: km
"""


async def test_mapping_dry_run_changes_are_the_writes_changes(client: Client) -> None:
    response = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "DRY4J75", "odometer_km": 1}, headers=auth()
    )
    assert response.status == 201, await response.text()
    payload = {"placa": "dry-4J75", "km": 5}
    response = await client.post(
        "/api/v1/mappings/test", json={"mapping": DRY, "payload": payload}, headers=auth()
    )
    assert response.status == 200, await response.text()
    (result,) = (await response.json())["results"]
    dry_changes = [c["field"] for c in result["entity"]["changes"]]
    assert result["entity"]["write"] == "update" and result["events"] == ["entity.updated"]

    await upload_mapping(client, DRY)
    trigger = await create_trigger(client, mapping="dry")
    response = await client.post(f"/hooks/{trigger['id']}", json=payload, headers=bearer(trigger))
    assert response.status == 200, await response.text()
    assert dry_changes == (await response.json())["changed"] == ["odometer_km"]

    # The same plate again, nothing else new: the dry run says unchanged, as the write does.
    response = await client.post(
        "/api/v1/mappings/test",
        json={"mapping": DRY, "payload": {"placa": "dry4j75", "km": 5}},
        headers=auth(),
    )
    (result,) = (await response.json())["results"]
    assert result["entity"]["write"] == "unchanged" and result["entity"]["changes"] == []


DRY_DRIVER = """\
name: dry-driver
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: placa
  current_driver.cpf: cpf
  current_driver.name: {from: nome, required: false}
"""


@pytest.mark.parametrize(
    "payload",
    [
        {"placa": "ABC1D23", "cpf": "111.444.777-35"},
        {"placa": "ABC1D23", "cpf": "11144477735", "nome": "BRUNO LIMA"},
    ],
    ids=["cpf", "cpf-and-name"],
)
async def test_mapping_dry_run_of_the_driver_in_force_says_unchanged_as_the_write_does(
    client: Client, payload: dict[str, str]
) -> None:
    """The write leaves the stored `current_driver` as it is when a whole value names the
    one stored (`known_whole`); the dry run merged without that rule and told of an
    `update` and an `entity.updated` (the driver's id and name removed) that never came."""
    bruno = {"name": "Bruno Lima", "cpf": "11144477735"}
    for path, body in (("vehicle", {"plate": "ABC1D23"}), ("driver", bruno)):
        response = await client.post(f"/api/v1/entities/{path}", json=body, headers=auth())
        assert response.status == 201, await response.text()
    drivers = "/api/v1/entities/vehicle/ABC1D23/drivers"
    assigned = {"driver": bruno["cpf"], "start": "2026-01-01T00:00:00Z"}
    assert (await client.post(drivers, json=assigned, headers=auth())).status == 201
    services = client.app[services_key]
    await drain(services)  # the history's write of the field relayed: no event waits
    test = {"mapping": DRY_DRIVER, "payload": payload}
    response = await client.post("/api/v1/mappings/test", json=test, headers=auth())
    assert response.status == 200, await response.text()
    (result,) = (await response.json())["results"]
    await upload_mapping(client, DRY_DRIVER)
    trigger = await create_trigger(client, mapping="dry-driver")
    response = await client.post(f"/hooks/{trigger['id']}", json=payload, headers=bearer(trigger))
    assert response.status == 200, await response.text()
    written = await response.json()
    assert written["changed"] == [] and written["events"] == [], written
    assert result["entity"]["write"] == "unchanged" and result["entity"]["changes"] == []
    assert result["events"] == written["events"], result


# -- 5. the served OpenAPI document matches the server ---------------------------------------


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A validator for a schema of the document, its `#/components/...` refs resolvable."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


async def test_a_track_with_a_device_fits_the_documented_answer(client: Client) -> None:
    trigger = await create_position_trigger(client)
    response = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "DEV1A11"}, headers=auth()
    )
    assert response.status == 201, await response.text()
    fix = {"plate": "DEV1A11", "time": "2026-12-01T10:00:00Z", "lat": -23.5, "lon": -46.6}
    status, _ = await hook(client, trigger, [{**fix, "tracker_id": "TRK-7"}])
    assert status in (200, 201, 207), _
    track = await vehicle_track(client, "DEV1A11")
    assert [f["device"] for f in track["items"]] == ["TRK-7"]
    doc = await (await client.get("/openapi.json")).json()
    get = doc["paths"]["/api/v1/entities/vehicle/{ref}/positions"]["get"]
    schema = get["responses"]["200"]["content"]["application/json"]["schema"]
    errors = [e.message for e in _validator(doc, schema).iter_errors(track)]
    assert errors == [], errors


async def test_documented_request_bodies_accept_what_the_server_accepts(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    for action in ("pause", "resume"):
        operation = doc["paths"][f"/api/v1/flows/{{name}}/{action}"]["post"]
        assert operation["requestBody"]["required"] is False, action
    test = doc["paths"]["/api/v1/channels/{ref}/test"]["post"]["requestBody"]
    schema = test["content"]["application/json"]["schema"]
    validator = _validator(doc, schema)
    assert validator.is_valid({"to": "a@b.com.br", "template": None, "locale": None})
    assert not validator.is_valid({"to": "a@b.com.br", "template": ""})


# -- 6. a NUL byte in a member name ----------------------------------------------------------

NUL_VEHICLE = '{"plate": "NUL1B12", "attributes": {"ok": 1, "a\\u0000b": 1}}'


async def test_a_nul_byte_in_a_member_name_is_a_422_pointing_at_it(client: Client) -> None:
    status, body = await _raw(client, "POST", "/api/v1/entities/vehicle", NUL_VEHICLE)
    assert status == 422, body
    assert [e["pointer"] for e in body["errors"]] == ["/attributes/a\x00b"], body
    assert "NUL byte" in body["errors"][0]["message"] and "Invalid document" not in body["detail"]
    response = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "NUL1B12"}, headers=auth()
    )
    assert response.status == 201, await response.text()
    status, body = await _raw(client, "PATCH", "/api/v1/entities/vehicle/NUL1B12", NUL_VEHICLE)
    assert status == 422 and body["errors"][0]["pointer"] == "/attributes/a\x00b", body

    trigger = await create_trigger(client)
    batch = f'[{{"plate": "NUL2C23"}}, {NUL_VEHICLE.replace("NUL1B12", "NUL3D34")}]'
    response = await client.post(
        f"/hooks/{trigger['id']}", data=batch, headers={**bearer(trigger), **JSON}
    )
    answer = await response.json()
    assert response.status == 207, answer
    assert [r["status"] for r in answer["results"]] == [201, 422]
    problem = answer["results"][1]["problem"]
    assert problem["errors"][0]["pointer"] == "/attributes/a\x00b", answer
    stored = await client.get("/api/v1/entities/vehicle/NUL3D34", headers=auth())
    assert stored.status == 404


# -- 7. the CLI says what is wrong -----------------------------------------------------------


def _gateway(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return gateway_command(*map(str, args), env={**os.environ, "GATEWAY_SECRET_KEY": SECRET_KEY})


async def test_an_admin_token_past_year_9999_is_refused_not_issued(
    settings: Settings, mongodb_uri: str, services: Services
) -> None:
    env = cli_env(settings, mongodb_uri)
    for ttl in ("2920000d", "999999999d"):
        result = await run_command(env, "admin-token", "--tenant", "acme", "--ttl", ttl)
        assert result.returncode == 2 and result.stdout == "", result
        assert "ttl is too long" in result.stderr and "9999-12-31" in result.stderr
    result = await run_command(env, "admin-token", "--tenant", "acme", "--ttl", "2900000d")
    assert result.returncode == 0, result.stderr
    claims = verify_admin_token(KeyRing.from_secret(SECRET_KEY), result.stdout.strip())
    assert claims.tenant == "acme"


def test_mapping_test_with_a_sample_not_in_utf8_says_so(tmp_path: Path) -> None:
    sample = tmp_path / "latin1.txt"
    sample.write_bytes("name=João".encode("latin-1"))
    result = _gateway("mapping", "test", MAPPINGS / "osmand.yaml", sample)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr and "UnicodeDecodeError" not in result.stderr
    assert "the sample is not UTF-8 (byte 0xe3 at offset 7)" in result.stderr


def test_mapping_commands_on_a_directory_or_a_device_say_what_it_is(tmp_path: Path) -> None:
    result = _gateway("mapping", "validate", tmp_path)
    assert result.returncode == 2 and f"{tmp_path}: is a directory, not a file" in result.stderr
    result = _gateway("mapping", "test", MAPPINGS / "osmand.yaml", "/dev/zero")
    assert result.returncode == 2 and "/dev/zero: is not a regular file" in result.stderr
    result = _gateway("mapping", "validate", tmp_path / "nope.yaml")
    assert result.returncode == 2 and "nope.yaml: no such file" in result.stderr


# -- 8. malformed-HTTP refusals carry X-Request-ID -------------------------------------------


async def _raw_http(port: int, request: bytes) -> tuple[int, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head = raw.partition(b"\r\n\r\n")[0].decode().split("\r\n")
    return int(head[0].split()[1]), dict(line.split(": ", 1) for line in head[1:])


async def test_malformed_http_refusals_carry_a_request_id(make_app: Any) -> None:
    runner = GatewayRunner(make_app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        sent = "X-Request-ID: mine-123\r\n"
        seen = set()
        for expected, request in (
            (414, f"GET /healthz?pad={'x' * 9000} HTTP/1.1\r\nHost: x\r\n{sent}\r\n"),
            (431, f"GET /healthz HTTP/1.1\r\nHost: x\r\n{sent}X-Big: {'y' * 9000}\r\n\r\n"),
            (400, f"GET /healthz HTTP/1.1\r\nHost: x\r\n{sent}X-Bad: a\x00b\r\n\r\n"),
        ):
            status, headers = await _raw_http(port, request.encode())
            assert status == expected, (status, headers)
            assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"]), headers
            seen.add(headers["X-Request-ID"])
        assert len(seen) == 3
    finally:
        await runner.cleanup()


# -- 9. a repeated query parameter is a 400 on every admin list, as on hooks ----------------


async def test_a_repeated_query_parameter_is_a_400_on_events_and_deliveries(
    client: Client,
) -> None:
    for query, named in (
        ("/api/v1/events?type=entity.created&type=entity.updated", "type"),
        ("/api/v1/deliveries?status=failed&status=pending", "status"),
        ("/api/v1/events?limit=1&limit=3", "limit"),
        ("/api/v1/deliveries?limit=1&limit=3", "limit"),
        ("/api/v1/entities/vehicle?limit=1&limit=3", "limit"),
    ):
        response = await client.get(query, headers=auth())
        assert response.status == 400, (query, await response.text())
        detail = (await response.json())["detail"]
        assert detail == f"the query parameter {named} is given more than once", detail
    trigger = await create_trigger(client)
    response = await client.get(f"/hooks/{trigger['id']}?limit=1&limit=3", headers=bearer(trigger))
    assert response.status == 400, await response.text()
    assert "limit is given more than once" in (await response.json())["detail"]
    response = await client.get("/api/v1/events?type=entity.created&limit=3", headers=auth())
    assert response.status == 200, await response.text()


# -- 10. If-Match compares strongly; HEAD answers the GET's ETag ----------------------------


async def test_a_weak_if_match_tag_never_matches_and_head_has_the_gets_etag(
    client: Client,
) -> None:
    response = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "TAG1A11"}, headers=auth()
    )
    assert response.status == 201, await response.text()
    path = "/api/v1/entities/vehicle/TAG1A11"
    got = await client.get(path, headers=auth())
    etag = got.headers["ETag"]
    head = await client.head(path, headers=auth())
    assert head.status == 200 and head.headers.get("ETag") == etag

    weak = await client.patch(
        path, json={"model": "Strada"}, headers={**auth(), "If-Match": f"W/{etag}"}
    )
    assert weak.status == 412, await weak.text()
    unchanged = await (await client.get(path, headers=auth())).json()
    assert "model" not in unchanged
    strong = await client.patch(
        path, json={"model": "Strada"}, headers={**auth(), "If-Match": f'"x", {etag}'}
    )
    assert strong.status == 200, await strong.text()


FENCE = {"lat": -23.5505, "lon": -46.6333, "radius_m": 800}


async def test_every_create_answer_carries_the_timestamps_a_read_gives(client: Client) -> None:
    """The database keeps a time to the millisecond: the create answers of the admin
    resources (entities aside, fixed before) had the clock's microseconds, which no read
    gives back, so a client keeping `updated_at` saw every resource change at its first read."""
    partner = await create_partner(client, "http://127.0.0.1:9")
    action = await _posted(
        client,
        "/api/v1/actions",
        {
            "name": "a",
            "partner_id": partner["id"],
            "method": "POST",
            "path": "/x",
            "mode": "deliver",
        },
    )
    email = {"host": "127.0.0.1", "port": 2525, "security": "none"}
    kind = {"name": "tyre", "schema": {"type": "object"}}
    created = {
        f"/api/v1/partners/{partner['id']}": partner,
        f"/api/v1/actions/{action['id']}": action,
        **{
            f"{path}/{answer.get('id', answer.get('name'))}": answer
            for path, answer in [
                (path, await _posted(client, path, body))
                for path, body in (
                    ("/api/v1/subscriptions", {"action_id": action["id"], "event_types": ["*"]}),
                    ("/api/v1/triggers", {"name": "t", "entity_type": "vehicle"}),
                    ("/api/v1/geofences", {"name": "g", "kind": "authorized", "circle": FENCE}),
                    ("/api/v1/maintenance-plans", {"name": "oil", "every_km": 5_000}),
                    (
                        "/api/v1/channels",
                        {"name": "e", "type": "email", "smtp": email, "from": "a@b.co"},
                    ),
                    ("/api/v1/kinds", kind),
                )
            ]
        },
    }
    for url, answer in created.items():
        read = await (await client.get(url, headers=auth())).json()
        stamps = [(k, answer[k], read[k]) for k in ("created_at", "updated_at") if k in answer]
        assert stamps and all(a == r for _, a, r in stamps), (url, stamps)


async def _posted(client: Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=auth())
    answer: dict[str, Any] = await response.json()
    assert response.status == 201, (path, answer, body)
    return answer
