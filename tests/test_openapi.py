"""/openapi.json is a valid OpenAPI 3.1 document generated from the routes; /docs renders it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema_rs
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from gateway.config import Secret
from gateway.store.client import EVENT_CHILD_CURSOR, KIND_CURSOR, NAME_CURSOR, TRIGGER_CURSOR
from gateway.web.openapi import ID_CURSOR, text_cursor
from gateway.web.state import services_key
from tests.feed_doubles import ScriptedFeed, scripted
from tests.schedule_support import run_now, runner, scripted_schedule
from tests.support import auth
from tests.triggers_support import (
    bearer,
    create_position_trigger,
    create_trigger,
    hook,
    upload_mapping,
)

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[1]
__all__ = ["scripted"]  # the fixture


async def test_openapi_document_is_valid_and_covers_every_route(client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    doc = await response.json()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    for route in client.app.router.routes():
        # /admin is the HTML admin UI (docs/admin-ui.md), not part of the JSON API.
        ui = route.resource is not None and route.resource.canonical.startswith("/admin/")
        if route.method != "HEAD" and route.resource is not None and not ui:
            path = route.resource.canonical
            assert (route.method, path) in documented, f"{route.method} {path} undocumented"


async def test_entity_schemas_are_components_of_the_document(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    vehicle = doc["components"]["schemas"]["Vehicle"]
    assert "plate" in vehicle["properties"]
    create = doc["paths"]["/api/v1/entities/{type}"]["post"]
    assert create["responses"]["422"]["content"]["application/problem+json"]


async def test_docs_page_renders_offline_without_external_assets(client: Client) -> None:
    response = await client.get("/docs")
    assert response.status == 200
    html = await response.text()
    assert "/api/v1/entities/{type}" in html
    assert "http://" not in html.replace("http://www.w3.org", "")
    assert "https://" not in html.replace("https://rabbot.dev", "")


async def test_routes_that_answer_200_or_201_declare_both(client: Client) -> None:
    """An identical re-upload of a mapping or flow is a 200 (the version that exists), and so
    is assigning the driver a vehicle already has: the document declares what is answered."""
    doc = await (await client.get("/openapi.json")).json()
    for path in ("/api/v1/mappings", "/api/v1/flows", "/api/v1/entities/vehicle/{ref}/drivers"):
        responses = doc["paths"][path]["post"]["responses"]
        assert {"200", "201"} <= set(responses), path
        assert responses["200"]["content"] == responses["201"]["content"], path


async def test_a_trigger_patchs_null_clears_a_member_to_its_default_as_documented(
    client: Client,
) -> None:
    """PATCH is a merge patch: null clears a member back to its default, and the document says
    so (it listed `format` and the limits as never null, which schemathesis found)."""
    doc = await (await client.get("/openapi.json")).json()
    patch = doc["paths"]["/api/v1/triggers/{id}"]["patch"]["requestBody"]["content"]
    validator = jsonschema_rs.validator_for(patch["application/json"]["schema"])
    cleared = {"format": None, "max_body_bytes": None, "methods": None, "answers": None}
    assert validator.is_valid(cleared)
    assert not validator.is_valid({"name": None})  # required: no default to go back to
    created = await client.post(
        "/api/v1/triggers",
        headers=auth(),
        json={"name": "form", "entity_type": "vehicle", "format": "form", "methods": ["GET"]},
    )
    assert created.status == 201, await created.text()
    trigger = await created.json()
    changed = await client.patch(f"/api/v1/triggers/{trigger['id']}", headers=auth(), json=cleared)
    assert changed.status == 200, await changed.text()
    body = await changed.json()
    assert (body["format"], body["methods"], body["answers"]) == ("json", ["POST"], "json")


async def test_documents_changed_by_patch_or_put_declare_their_etag_and_if_match(
    client: Client,
) -> None:
    """The admin API's documents answer an `ETag` and take `If-Match` on PATCH and PUT (412
    when stale: gateway/web/conditional.py); the document says so for each of them, and the
    tag it declares is the one a GET answers."""
    doc = await (await client.get("/openapi.json")).json()
    validate(doc)
    conditional = {
        path: ops
        for path, ops in doc["paths"].items()
        if path.startswith("/api/v1/") and "get" in ops and {"patch", "put"} & set(ops)
    }
    assert "/api/v1/triggers/{id}" in conditional
    for path, ops in conditional.items():
        assert "ETag" in ops["get"]["responses"]["200"]["headers"], path
        names = [p["name"] for p in ops["get"]["parameters"] if p["in"] == "header"]
        assert "If-None-Match" in names and "ETag" in ops["get"]["responses"]["304"]["headers"]
        for method in {"patch", "put", "delete"} & set(ops):
            names = [p["name"] for p in ops[method]["parameters"] if p["in"] == "header"]
            assert {"If-Match", "If-None-Match"} <= set(names), (method, path)
            assert "412" in ops[method]["responses"], (method, path)
    created = await client.post(
        "/api/v1/triggers", headers=auth(), json={"name": "tagged", "entity_type": "vehicle"}
    )
    assert created.status == 201, await created.text()
    trigger = await created.json()
    read = await client.get(f"/api/v1/triggers/{trigger['id']}", headers=auth())
    assert read.headers["ETag"].startswith('"')
    stale = await client.patch(
        f"/api/v1/triggers/{trigger['id']}",
        headers={**auth(), "If-Match": '"an-older-version"'},
        json={"name": "renamed"},
    )
    assert stale.status == 412
    assert stale.content_type == "application/problem+json"


# A cursor of each documented shape, none of them on any page here.
_CURSOR_OF_SHAPE = {
    ID_CURSOR["pattern"]: "0" * 24,
    text_cursor(NAME_CURSOR)["pattern"]: "zz",
    text_cursor(TRIGGER_CURSOR)["pattern"]: "trg_zz",
    text_cursor(EVENT_CHILD_CURSOR)["pattern"]: "0" * 24 + ":zz",
    text_cursor(KIND_CURSOR)["pattern"]: "zz",
}


async def test_every_lists_cursor_is_documented_as_the_list_accepts_it(client: Client) -> None:
    """schemathesis sends cursors the document allows and fails a 400 for one: each list's
    `cursor` has the pattern its store checks. A cursor of that pattern reads a page (empty,
    nothing being there), and text outside it is a 400 naming the cursor."""
    doc = await (await client.get("/openapi.json")).json()
    listed = [
        (path, next(p for p in op["parameters"] if p["name"] == "cursor")["schema"])
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if method == "get" and any(p["name"] == "cursor" for p in op.get("parameters", []))
    ]
    assert len(listed) > 10, listed
    for path, schema in listed:
        assert "pattern" in schema, f"{path}: its cursor is documented as any text"
        path = path.replace("{type}", "vehicle")
        if "{" in path:
            continue  # the pages of one resource (a track, a flow's runs, a vehicle's drivers):
            # their own tests
        fits = _CURSOR_OF_SHAPE.get(schema["pattern"])
        assert fits is not None, f"{path}: a cursor of {schema['pattern']} for this test?"
        assert re.fullmatch(schema["pattern"], fits), (path, fits)
        page = await client.get(path, params={"cursor": fits}, headers=auth())
        assert page.status == 200, (path, fits, await page.text())
        junk = await client.get(path, params={"cursor": "\u00e9"}, headers=auth())
        assert junk.status == 400, (path, await junk.text())
        assert "cursor" in (await junk.json())["detail"], path


async def _declared(client: Client, path: str, method: str) -> set[str]:
    doc = await (await client.get("/openapi.json")).json()
    return set(doc["paths"][path][method]["responses"])


async def test_a_trigger_read_s_real_statuses_are_declared(client: Client) -> None:
    """`GET /hooks/{trigger_id}` answers 201 (a form trigger writes from its query) and 404
    (a positions trigger asked for a vehicle that does not exist): both were undeclared, and
    the 409 its form writes share with POST (an Idempotency-Key still in use) too."""
    form = await create_trigger(client, name="form", format="form", methods=["GET"])
    written = await client.get(
        f"/hooks/{form['id']}?plate=ABC1D23&status=active", headers=bearer(form)
    )
    assert written.status == 201, await written.text()
    track = await create_position_trigger(client)
    missing = await client.get(f"/hooks/{track['id']}?plate=ZZZ9Z99", headers=bearer(track))
    assert missing.status == 404, await missing.text()
    assert missing.content_type == "application/problem+json"
    declared = await _declared(client, "/hooks/{trigger_id}", "get")
    assert {"200", "201", "404", "409"} <= declared


async def test_a_hook_s_409_declares_its_retry_after(client: Client) -> None:
    """An Idempotency-Key still being processed is a 409 with `Retry-After`, as 429 and 503."""
    document = await (await client.get("/openapi.json")).json()
    for method in ("get", "post"):
        responses = document["paths"]["/hooks/{trigger_id}"][method]["responses"]
        for status in ("409", "429", "503"):
            assert "Retry-After" in responses[status]["headers"], (method, status)


async def test_metrics_401_behind_its_token_is_declared(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app(metrics_token=Secret("scrape-me-please")))
    refused = await client.get("/metrics")
    assert refused.status == 401
    assert refused.content_type == "application/problem+json"
    assert "401" in await _declared(client, "/metrics", "get")
    scraped = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me-please"})
    assert scraped.status == 200


async def test_write_bodies_the_document_allows_are_those_the_server_takes(
    client: Client,
) -> None:
    """Each write's request schema says what the server takes: a body it allows is taken, and
    one the server refuses with a `422` (a member the route does not know, an empty name, a
    member of another channel type) is refused by the schema too, so a client or a validator
    built from the document sends no body the server refuses."""
    doc = await (await client.get("/openapi.json")).json()

    def schema(method: str, path: str) -> Any:
        body = doc["paths"][path][method]["requestBody"]["content"]["application/json"]
        return jsonschema_rs.validator_for(body["schema"])

    partner = await _created(
        client,
        "/api/v1/partners",
        {"name": "p", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}},
    )
    action = {
        "name": "a",
        "partner_id": partner["id"],
        "method": "POST",
        "path": "/x",
        "mode": "deliver",
    }
    email = {
        "name": "mail",
        "type": "email",
        "smtp": {"host": "127.0.0.1", "port": 2525, "security": "none"},
        "from": "alertas@acme.com.br",
    }
    template = {
        "name": "t1",
        "channel_type": "email",
        "locales": {"en": {"subject": "s", "text": "t"}},
    }
    settings = {"cooldown_seconds": 60}
    taken = [
        ("post", "/api/v1/actions", action),
        ("post", "/api/v1/channels", email),
        ("post", "/api/v1/templates", template),
        ("put", "/api/v1/notification-settings", settings),
    ]
    for method, path, body in taken:
        assert schema(method, path).is_valid(body), (path, body)
        response = await client.request(method, path, json=body, headers=auth())
        assert response.status in (200, 201), (path, await response.text())
    refused = [
        ("post", "/api/v1/actions", {**action, "name": "b", "bogus": 1}),
        ("post", "/api/v1/actions", {**action, "name": ""}),
        (
            "post",
            "/api/v1/partners",
            {"name": "", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}},
        ),
        (
            "post",
            "/api/v1/partners",
            {"name": "q", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}, "x": 1},
        ),
        ("post", "/api/v1/channels", {**email, "name": "m2", "partner_id": partner["id"]}),
        ("post", "/api/v1/channels", {**email, "name": "m3", "smtp": {"host": "h", "bogus": 1}}),
        ("post", "/api/v1/subscriptions", {"action_id": "x", "event_types": ["*"], "bogus": 1}),
        (
            "post",
            "/api/v1/schedules",
            {"name": "", "action_id": "x", "every": "5m", "target": {"mapping": "m"}},
        ),
        ("post", "/api/v1/templates", {**template, "name": "t2", "bogus": 1}),
        ("put", "/api/v1/templates/{ref}", {**template, "bogus": 1}),
        ("post", "/api/v1/templates/preview", {"template": "t1", "locle": "en"}),
        ("post", "/api/v1/flows/test", {"flow": "f", "event": {"type": "x"}, "bogus": 1}),
        ("post", "/api/v1/flows/{name}/activate", {"version": 1, "bogus": 1}),
        ("post", "/api/v1/mappings/{name}/activate", {"version": 1, "bogus": 1}),
        ("put", "/api/v1/notification-settings", {"cooldown_seconds": 60, "bogus": 1}),
        ("post", "/api/v1/actions/{id}/invoke", {"payload": {}, "dry_run": True}),
    ]
    for method, path, body in refused:
        assert not schema(method, path).is_valid(body), (path, body)
        url = path.replace("{ref}", "t1").replace("{name}", "n").replace("{id}", "0" * 24)
        response = await client.request(method, url, json=body, headers=auth())
        assert response.status == 422, (path, body, await response.text())


async def _created(client: Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=auth())
    answer: dict[str, Any] = await response.json()
    assert response.status == 201, answer
    return answer


def _answer_validator(doc: dict[str, Any], path: str, status: int, method: str = "get") -> Any:
    """A validator of the JSON a `method` of `path` answers with `status`, against the
    document."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource(
        "urn:doc", Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    escaped = path.replace("~", "~0").replace("/", "~1")
    pointer = f"paths/{escaped}/{method}/responses/{status}/content/application~1json/schema"
    return Draft202012Validator({"$ref": f"urn:doc#/{pointer}"}, registry=registry)


async def test_reads_answer_what_the_document_says_lists_and_channels_included(
    client: Client,
) -> None:
    """The response schemas describe the answers: an e-mail channel's `smtp.password` is
    `{"configured": ...}` (the request's write-only string was reused), and a list's items
    are typed as the read of one of them (they were `{"type": "array"}`)."""
    partner = await _created(
        client,
        "/api/v1/partners",
        {"name": "p", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}},
    )
    action = {"name": "a", "partner_id": partner["id"], "method": "POST", "path": "/x"}
    await _created(client, "/api/v1/actions", {**action, "mode": "deliver"})
    smtp = {"host": "127.0.0.1", "port": 2525, "security": "none"}
    channel = {"name": "mail", "type": "email", "from": "alertas@acme.com.br"}
    login = {"username": "u", "password": "p", "cleartext_auth": True}
    await _created(client, "/api/v1/channels", {**channel, "smtp": {**smtp, **login}})
    await _created(client, "/api/v1/channels", {**channel, "name": "open", "smtp": smtp})
    await _created(
        client,
        "/api/v1/templates",
        {"name": "t1", "channel_type": "email", "locales": {"en": {"subject": "s", "text": "t"}}},
    )
    await create_trigger(client)
    created = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "ABC1D23"}, headers=auth()
    )
    assert created.status == 201
    await client.app[services_key].relay.run_until_idle()
    trigger = await create_trigger(client, name="refusing")
    refused = await client.post(
        f"/hooks/{trigger['id']}", json={"plate": 5}, headers=bearer(trigger)
    )
    assert refused.status == 422, await refused.text()
    doc = await (await client.get("/openapi.json")).json()
    lists = ["/api/v1/partners", "/api/v1/actions", "/api/v1/channels", "/api/v1/templates"]
    lists += ["/api/v1/triggers", "/api/v1/events", "/api/v1/rejected"]
    checked = 0
    for path in lists:
        page = await (await client.get(path, headers=auth())).json()
        assert page["items"], path
        assert (
            "items"
            in doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"][
                "schema"
            ]["properties"]["items"]
        ), f"{path}: untyped items"
        errors = [e.message for e in _answer_validator(doc, path, 200).iter_errors(page)]
        assert errors == [], path
        one = next(p for p in doc["paths"] if re.fullmatch(re.escape(path) + r"/\{\w+\}", p))
        for item in page["items"]:
            read = await client.get(f"{path}/{item['id']}", headers=auth())
            assert read.status == 200
            body = await read.json()
            errors = [e.message for e in _answer_validator(doc, one, 200).iter_errors(body)]
            assert errors == [], (one, body)
            checked += 1
    assert checked == 9
    runs = doc["paths"]["/api/v1/flows/{name}/runs"]["get"]["responses"]["200"]["content"]
    one = doc["paths"]["/api/v1/flow-runs/{id}"]["get"]["responses"]["200"]["content"]
    assert (
        runs["application/json"]["schema"]["properties"]["items"]["items"]
        == (one["application/json"]["schema"])
    )


_BROKEN = """
name: erp-vehicle
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa_veiculo, required: true}
  make: marca
"""
_FLOW = """
name: tag
on:
  events: [fine.received]
steps:
  - {id: gate, when: entity.plate}
  - id: tag
    set:
      entity: {type: vehicle, ref: entity.plate}
      fields: {model: "'Uno'"}
"""


async def test_dry_runs_diffs_replays_hook_reads_and_schedule_runs_answer_what_the_document_says(
    client: Client, scripted: ScriptedFeed
) -> None:
    """These answers were `{"type": "object"}` (a schedule's runs `{"type": "array"}`): each
    is described now, closed where the code's answer is, and real answers fit it."""
    doc = await (await client.get("/openapi.json")).json()
    answers: list[tuple[str, str, Any]] = []

    async def answered(method: str, path: str, url: str, **kwargs: Any) -> Any:
        response = await client.request(method, url, headers=auth(), **kwargs)
        assert response.status == 200, (url, await response.text())
        body = await response.json()
        answers.append((method, path, body))
        return body

    # Rejected payloads: one replays once its mapping is fixed, one is refused again.
    await upload_mapping(client, _BROKEN)
    trigger = await create_trigger(client, mapping="erp-vehicle")
    for payload in ({"placa": "ABC1D23", "marca": "Fiat"}, {"marca": "VW"}, {"placa": "B"}):
        assert (await hook(client, trigger, payload))[0] == 422
    await upload_mapping(client, _BROKEN.replace("placa_veiculo", "placa"))
    kept = (await (await client.get("/api/v1/rejected?status=pending", headers=auth())).json())[
        "items"
    ]
    first = next(
        k
        for k in kept
        if k["index"] is None and k["received_at"] == min(r["received_at"] for r in kept)
    )
    replayed = await answered(
        "post", "/api/v1/rejected/{id}/replay", f"/api/v1/rejected/{first['id']}/replay"
    )
    assert replayed["status"] == "replayed"
    summary = await answered("post", "/api/v1/rejected/replay", "/api/v1/rejected/replay", json={})
    assert summary["failed"] >= 1 and any("problem" in r for r in summary["results"])
    # The mapping's versions, diffed, and its dry run; a hook's read of the entity written.
    diff = await answered(
        "get", "/api/v1/mappings/{name}/diff", "/api/v1/mappings/erp-vehicle/diff?from=1&to=2"
    )
    assert diff["changed"]
    test = {"name": "erp-vehicle", "payload": [{"placa": "ABC1D23"}, {"marca": "x"}]}
    assert (await answered("post", "/api/v1/mappings/test", "/api/v1/mappings/test", json=test))[
        "results"
    ]
    read = await client.get(f"/hooks/{trigger['id']}/ABC1D23", headers=bearer(trigger))
    assert read.status == 200, await read.text()
    answers.append(("get", "/hooks/{trigger_id}/{key}", await read.json()))
    # A flow's two versions, diffed, and dry runs of the stored flow and of a draft.
    yaml = {**auth(), "Content-Type": "application/yaml"}
    for text in (_FLOW, _FLOW.replace("Uno", "Mobi")):
        uploaded = await client.post("/api/v1/flows", data=text.encode(), headers=yaml)
        assert uploaded.status == 201, await uploaded.text()
    await answered("get", "/api/v1/flows/{name}/diff", "/api/v1/flows/tag/diff?from=1&to=2")
    event = {"type": "fine.received", "entity": {"type": "fine"}, "data": {"plate": "ABC1D23"}}
    ran = await answered(
        "post", "/api/v1/flows/test", "/api/v1/flows/test", json={"flow": "tag", "event": event}
    )
    assert ran["starts"] and ran["steps"]
    other = {"flow": _FLOW, "event": {**event, "type": "fine.paid"}}
    await answered("post", "/api/v1/flows/test", "/api/v1/flows/test", json=other)
    # A schedule's runs: one with a refused item, one the partner failed.
    scripted.answer = lambda after, n: {"items": [{"placa": "RIO3F45", "codigo": 1}, {}]}
    schedule = await scripted_schedule(client, scripted, cursor=None)
    await asyncio.wait_for(runner(client).run_until_idle(), 10)
    scripted.answer = lambda after, n: web.Response(status=500)
    await run_now(client, schedule["id"])
    await asyncio.wait_for(runner(client).run_until_idle(), 10)
    runs = await answered(
        "get",
        "/api/v1/schedules/{id}/runs",
        f"/api/v1/schedules/{schedule['id']}/runs",
    )
    assert [r["error"] is None for r in runs["items"]] == [False, True], runs
    assert runs["items"][1]["item_errors"], runs

    for method, path, body in answers:
        schema = doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]
        assert schema["schema"] != {"type": "object"}, f"{path}: untyped"
        errors = [e.message for e in _answer_validator(doc, path, 200, method).iter_errors(body)]
        assert errors == [], (path, errors, body)


async def test_calls_that_open_a_stored_secret_declare_secret_damaged_and_key_refused(
    client: Client,
) -> None:
    """docs/api.md: an action's invoke and a channel's test send answer `500` `secret-damaged`
    and `503` `key-refused` (tests/test_proxy.py, tests/test_channels.py) whatever the route:
    the document declares both, and no 500 for a route that opens no secret."""
    doc = await (await client.get("/openapi.json")).json()
    for path in ("/api/v1/actions/{id}/invoke", "/api/v1/channels/{ref}/test"):
        responses = doc["paths"][path]["post"]["responses"]
        assert {"500", "503"} <= responses.keys(), path
        assert "secret-damaged" in responses["500"]["description"]
        assert "application/problem+json" in responses["500"]["content"]
    assert "500" not in doc["paths"]["/api/v1/actions"]["post"]["responses"]


async def test_request_schemas_refuse_the_bodies_the_server_refuses_for_a_constraint(
    client: Client,
) -> None:
    """Bodies the schemas let through and the server refused (schemathesis' positive data
    acceptance): each constraint is in the schema now, so a validator built from the document
    refuses what the server refuses."""
    doc = await (await client.get("/openapi.json")).json()

    def valid(method: str, path: str, body: Any) -> bool:
        schema = doc["paths"][path][method]["requestBody"]["content"]["application/json"]
        return bool(jsonschema_rs.validator_for(schema["schema"]).is_valid(body))

    partner = await _created(
        client,
        "/api/v1/partners",
        {"name": "p", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}},
    )
    base = {"name": "q", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}}
    action = {"name": "a", "partner_id": partner["id"], "method": "POST", "path": "/x"}
    action["mode"] = "deliver"
    sms = {"name": "sms", "type": "sms", "action_id": "x" * 24, "from": "ACME"}
    template = {"name": "t1", "channel_type": "sms", "locales": {"en": {"text": "t"}}}
    trigger = await create_trigger(client, auth={"mode": "hmac", "preset": "motive"})
    limits = client.app[services_key].settings
    spec = {"name": "t2", "entity_type": "vehicle", "methods": ["POST"]}
    refused = [
        ("post", "/api/v1/templates", {**template, "locales": {}}),
        ("post", "/api/v1/partners", {**base, "rate_limit": {}}),
        ("post", "/api/v1/partners", {**base, "rate_limit": {"per_second": 1, "x": 1}}),
        ("post", "/api/v1/partners", {**base, "secrets": {"x-a": "v"}}),
        ("post", "/api/v1/partners", {**base, "secrets": {"token": ""}}),
        ("post", "/api/v1/partners", {**base, "timeout_seconds": None}),
        ("post", "/api/v1/partners", {**base, "max_concurrency": None}),
        ("post", "/api/v1/actions", {**action, "success": []}),
        ("post", "/api/v1/actions", {**action, "success": [42]}),
        ("put", "/api/v1/notification-settings", {"quiet_hours": {}}),
        ("put", "/api/v1/notification-settings", {"quiet_hours": {"start": "22:00", "end": "x"}}),
        (
            "put",
            "/api/v1/notification-settings",
            {"quiet_hours": {"start": "29:00", "end": "07:00"}},
        ),
        ("post", "/api/v1/channels", {**sms, "from": "A" * 21}),
        ("post", "/api/v1/channels", {**sms, "action_id": ""}),
        ("post", "/api/v1/triggers/{id}/rotate", {"secret": ""}),
        ("post", "/api/v1/triggers/{id}/rotate", {"secret": "s" * 1025}),
        # at most the operator's GATEWAY_MAX_BODY_BYTES / GATEWAY_MAX_BATCH_ITEMS
        ("post", "/api/v1/triggers", {**spec, "max_body_bytes": limits.max_body_bytes + 1}),
        ("post", "/api/v1/triggers", {**spec, "max_batch_items": limits.max_batch_items + 1}),
        ("patch", "/api/v1/triggers/{id}", {"max_body_bytes": limits.max_body_bytes + 1}),
    ]
    for method, path, body in refused:
        assert not valid(method, path, body), (path, body)
        url = path.replace("{id}", trigger["id"])
        response = await client.request(method, url, json=body, headers=auth())
        assert response.status == 422, (path, body, await response.text())
    taken = [
        ("post", "/api/v1/templates", template),
        ("post", "/api/v1/partners", {**base, "rate_limit": {"per_second": 1}}),
        ("post", "/api/v1/partners", {**base, "secrets": {"erp_token": "v"}}),
        ("post", "/api/v1/partners", {**base, "secrets": None, "disable_after_hours": None}),
        (
            "put",
            "/api/v1/notification-settings",
            {"quiet_hours": {"start": "22:00", "end": "07:00"}},
        ),
        ("post", "/api/v1/channels", {**sms, "from": "+5511999990000"}),
        ("post", "/api/v1/triggers/{id}/rotate", {"secret": "s" * 1024}),
        ("post", "/api/v1/triggers", {**spec, "max_body_bytes": limits.max_body_bytes}),
        ("patch", "/api/v1/triggers/{id}", {"max_batch_items": None}),
    ]
    for method, path, body in taken:
        assert valid(method, path, body), (path, body)
    assert valid("post", "/api/v1/partners", {**base, "rate_limit": {"per_second": 1}})
    assert valid("post", "/api/v1/actions", {**action, "success": [201, "2xx"]})
    activate = doc["paths"]["/api/v1/flows"]["post"]["parameters"]
    schema = next(p["schema"] for p in activate if p["name"] == "activate")
    assert not jsonschema_rs.validator_for(schema).is_valid("")
    response = await client.post("/api/v1/flows?activate=", data=b"name: f", headers=auth())
    assert response.status == 400, await response.text()


async def test_patch_bodies_name_the_members_each_update_takes_and_which_may_be_null(
    client: Client, scripted: ScriptedFeed
) -> None:
    """docs/api.md: a member a route does not know is a 422, and the request schemas say
    `additionalProperties: false`. The PATCH bodies of partners, actions, schedules,
    subscriptions, channels and entities were a bare `{"type": "object"}`. Each now names its
    members: an unknown one is refused by the schema as by the server, and a null is allowed
    by the schema exactly where the server takes it (it clears the member)."""
    doc = await (await client.get("/openapi.json")).json()
    schedule = await scripted_schedule(client, scripted)
    partner = await _created(
        client,
        "/api/v1/partners",
        {"name": "hooks", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}},
    )
    action = await _created(
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
    subscription = await _created(
        client, "/api/v1/subscriptions", {"action_id": action["id"], "event_types": ["*"]}
    )
    await _created(
        client,
        "/api/v1/channels",
        {
            "name": "mail",
            "type": "email",
            "smtp": {"host": "127.0.0.1", "port": 2525, "security": "none"},
            "from": "alertas@acme.com.br",
        },
    )
    await _created(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    routes = {
        "/api/v1/partners/{id}": (f"/api/v1/partners/{partner['id']}", None),
        "/api/v1/actions/{id}": (f"/api/v1/actions/{action['id']}", None),
        "/api/v1/schedules/{id}": (f"/api/v1/schedules/{schedule['id']}", None),
        "/api/v1/subscriptions/{id}": (f"/api/v1/subscriptions/{subscription['id']}", None),
        "/api/v1/channels/{ref}": ("/api/v1/channels/mail", "email"),
        "/api/v1/entities/{type}/{ref}": ("/api/v1/entities/vehicle/ABC1D23", "VehiclePatch"),
    }
    wrong = []
    for path, (url, variant) in routes.items():
        body = doc["paths"][path]["patch"]["requestBody"]["content"]["application/json"]
        schema = body["schema"]
        if variant == "email":  # one variant by type: the channel's
            (own,) = [s for s in schema["anyOf"] if s["properties"]["type"] == {"const": "email"}]
        elif variant is not None:  # one route for every type: the type's own
            assert {"$ref": f"#/components/schemas/{variant}"} in schema["anyOf"], path
            own = doc["components"]["schemas"][variant]
        else:
            own = schema
        assert own["additionalProperties"] is False and own["properties"], path
        validator = jsonschema_rs.validator_for({**own, "components": doc["components"]})
        assert not validator.is_valid({"bogus": 1}), path
        response = await client.patch(url, json={"bogus": 1}, headers=auth())
        problem = await response.json()
        assert response.status == 422, (path, problem)
        assert [e["pointer"] for e in problem["errors"]] == ["/bogus"], (path, problem)
        for member in own["properties"]:
            allowed = validator.is_valid({member: None})
            response = await client.patch(url, json={member: None}, headers=auth())
            answer = await response.json()
            refused = response.status == 422 and any(
                e["pointer"] == f"/{member}" for e in answer.get("errors", ())
            )
            if allowed == refused or response.status not in (200, 422):
                wrong.append((path, member, allowed, response.status, answer))
    assert [w[:4] for w in wrong] == [], "\n".join(map(str, (w[:4] for w in wrong)))


async def test_health_readiness_and_metrics_declare_what_they_answer(client: Client) -> None:
    """/readyz's and /metrics' 200 declared no content (the 200 of /readyz is JSON with
    `status`, `database`, `workers`; /metrics' the Prometheus text), and /readyz's 503 was
    "Database unavailable" though stalled workers and a refused key answer it too."""
    doc = await (await client.get("/openapi.json")).json()
    for path in ("/healthz", "/readyz"):
        response = await client.get(path)
        assert response.status == 200 and response.content_type == "application/json"
        assert _answer_validator(doc, path, 200).is_valid(await response.json()), path
    refused = doc["paths"]["/readyz"]["get"]["responses"]["503"]["description"]
    assert "workers" in refused and "GATEWAY_SECRET_KEY" in refused, refused
    response = await client.get("/metrics")
    declared = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert response.content_type in declared and declared[response.content_type]["schema"] == {
        "type": "string",
        "description": "the Prometheus text format, version 0.0.4",
    }


async def test_entity_list_filters_are_the_documents_query_parameters(client: Client) -> None:
    """docs/api.md: a query parameter a route does not take is a 400 and `/openapi.json` lists
    each route's parameters. The entity list takes each type's filters (vehicle `plate`,
    `status`, `group`, `renavam`; driver `cpf`; ...), which the document left out (only
    `limit`, `cursor`): each is declared, naming the types it filters, and each filter the
    document names for a type lists that type (200), another type's is a 400."""
    doc = await (await client.get("/openapi.json")).json()
    operation = doc["paths"]["/api/v1/entities/{type}"]["get"]
    declared = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert {"plate", "status", "group", "renavam", "cpf", "cnpj", "role", "kind"} <= set(declared)
    filters = set(declared) - {"limit", "cursor"}
    for etype in ("vehicle", "driver", "supplier", "operator", "other"):
        for name in sorted(filters):
            listed = await client.get(f"/api/v1/entities/{etype}?{name}=x", headers=auth())
            takes = f"`{etype}`" in declared[name]["description"]
            assert listed.status == (200 if takes else 400), (etype, name, await listed.text())


# A valid create body of each entity type: the server stores each (201).
_ENTITY_BODIES = {
    "vehicle": {"plate": "ABC1D23", "status": "active"},
    "driver": {"name": "Ana Souza", "cpf": "52998224725", "email": "ana@example.com"},
    "supplier": {"name": "Oficina", "cnpj": "11222333000181", "contact": {"phone": "11 3011-1234"}},
    "operator": {"name": "Rui Lima", "cpf": "11144477735", "email": "rui@example.com"},
    "other": {
        "kind": "fine",
        "key": "SP1",
        "ait_number": "SP1",
        "plate": "ABC1D23",
        "amount_brl": 130.16,
        "status": "open",
    },
}


def _request_validator(doc: dict[str, Any], path: str, method: str) -> Any:
    """A validator of `method` `path`'s JSON request body against the document."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource(
        "urn:doc", Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    at = path.replace("~", "~0").replace("/", "~1")
    pointer = f"urn:doc#/paths/{at}/{method}/requestBody/content/application~1json/schema"
    return Draft202012Validator({"$ref": pointer}, registry=registry)


async def test_every_entity_type_s_valid_body_fits_the_documented_create_body(
    client: Client,
) -> None:
    """`POST /api/v1/entities/{type}` was `oneOf` the types' schemas: a driver with an e-mail
    or an operator without a `role` is valid as both (they share `name`, `cpf`, `email`,
    ...), so the document called it invalid while the server stores it. Each type's valid
    body fits the document (`anyOf`: nothing in the body names its type, the path does)."""
    doc = await (await client.get("/openapi.json")).json()
    validator = _request_validator(doc, "/api/v1/entities/{type}", "post")
    for etype, body in _ENTITY_BODIES.items():
        made = await client.post(f"/api/v1/entities/{etype}", json=body, headers=auth())
        assert made.status == 201, (etype, await made.text())
        assert [e.message for e in validator.iter_errors(body)] == [], etype


def _one_ofs(node: Any, at: str = "") -> list[tuple[str, list[Any]]]:
    """Every `oneOf` of a document, with where it is."""
    found = []
    if isinstance(node, dict):
        if "oneOf" in node and "discriminator" not in node:
            found.append((at, node["oneOf"]))
        for key, value in node.items():
            found += _one_ofs(value, f"{at}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _one_ofs(value, f"{at}/{i}")
    return found


def _tags(branch: dict[str, Any]) -> dict[str, Any]:
    """The members a branch fixes (`const`) and requires: what tells it from the others."""
    fixed = {
        name: member["const"]
        for name, member in branch.get("properties", {}).items()
        if isinstance(member, dict) and "const" in member
    }
    return {name: value for name, value in fixed.items() if name in branch.get("required", ())}


def _only_one_required(branches: list[Any]) -> list[str] | None:
    """The members of a oneOf of `{"required": [member]}` branches (exactly one of them is
    given), else None."""
    members = [b.get("required", ()) for b in branches]
    if all(len(m) == 1 for m in members):
        return [m[0] for m in members]
    return None


async def test_every_one_of_in_the_document_has_branches_that_cannot_overlap(
    client: Client,
) -> None:
    """`oneOf` refuses a value that fits two branches. Each `oneOf` of the document has a
    discriminator, or branches told apart by a required member's `const` (a channel's
    `type`), by their JSON types, or by the `not` of each other, or it says "exactly one of
    these members" (a geofence's `circle` or `polygon`): a value two branches fit is then
    one the server refuses too (a test below each), never a valid body."""
    doc = await (await client.get("/openapi.json")).json()
    exactly_one = []
    for at, branches in _one_ofs(doc):
        tags = [_tags(b) for b in branches]
        if all(tags) and len({tuple(sorted(t.items())) for t in tags}) == len(branches):
            continue  # tagged: each fixes a required member to its own value
        types = [b.get("type") for b in branches]
        if all(isinstance(t, str) for t in types) and len(set(types)) == len(types):
            continue
        if len(branches) == 2 and all("not" in b for b in branches):
            continue  # each refuses what the other requires
        members = _only_one_required(branches)
        assert members is not None, f"{at}: a oneOf whose branches may overlap"
        exactly_one.append((at, members))
    assert sorted(exactly_one) == [
        (f"/paths/{path}/{method}/requestBody/content/application/json/schema{inner}", members)
        for path, method, inner, members in sorted(_EXACTLY_ONE)
    ]
    trigger_auth = {"mode": "partner_jwt", "jwks_url": "https://idp.example/jwks"}
    geofence = {"name": "depot", "kind": "depot"}
    circle = {"center": {"lat": -23.5, "lon": -46.6}, "radius_m": 100}
    polygon = {"ring": [[-46.6, -23.5], [-46.5, -23.5], [-46.5, -23.4], [-46.6, -23.5]]}
    both = [
        ("/api/v1/mappings/test", {"name": "m", "mapping": "name: m", "payload": {}}),
        (
            "/api/v1/triggers",
            {
                "name": "t",
                "entity_type": "vehicle",
                "auth": {**trigger_auth, "public_key_pem": "-----BEGIN PUBLIC KEY-----"},
            },
        ),
        ("/api/v1/geofences", {**geofence, "circle": circle, "polygon": polygon}),
    ]
    for path, body in both:
        refused = await client.post(path, json=body, headers=auth())
        assert refused.status == 422, (path, await refused.text())


# The oneOfs that say "exactly one of these members": (path, method, where in the body,
# the members).
_EXACTLY_ONE = [
    ("/api/v1/geofences", "post", "", ["circle", "polygon"]),
    ("/api/v1/mappings/test", "post", "", ["name", "mapping"]),
    ("/api/v1/triggers", "post", "/properties/auth/then", ["jwks_url", "public_key_pem"]),
    (
        "/api/v1/triggers/{id}",
        "patch",
        "/properties/auth/anyOf/0/then",
        ["jwks_url", "public_key_pem"],
    ),
]


_FLESPI = (ROOT / "mappings" / "flespi.yaml").read_text()
# A body of each media type the probe sends, with its Content-Type.
_PROBE_BODIES: dict[str, bytes] = {
    "application/yaml": b"name: probe\n",
    "text/yaml": b"name: probe\n",
    "application/x-www-form-urlencoded": b"plate=ABC1D23",
    "text/xml": b"<vehicle><plate>ABC1D23</plate></vehicle>",
    "application/x-ndjson": b'{"plate": "ABC1D23"}\n',
}


async def test_request_media_types_are_those_the_server_reads(client: Client) -> None:
    """Uploads of mappings (YAML, or a multipart `file`) and flows (YAML), and a `form` or
    `xml` trigger's bodies were taken by the server and undeclared (the document said
    `application/json` only). Each media type the server reads is declared, and one it
    refuses (415) is not, on every route with a body."""
    doc = await (await client.get("/openapi.json")).json()
    declared = {
        (method, path): set(op["requestBody"]["content"])
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if "requestBody" in op
    }
    form = FormData()
    form.add_field("file", _FLESPI, filename="flespi.yaml")
    uploaded = await client.post("/api/v1/mappings", data=form, headers=auth())
    assert uploaded.status == 201, await uploaded.text()
    assert "multipart/form-data" in declared[("post", "/api/v1/mappings")]
    for path in ("/api/v1/mappings", "/api/v1/flows"):
        assert {"application/json", "application/yaml", "text/yaml"} <= declared[("post", path)]
    # A trigger reads what its `format` says: the route reads what one of them reads.
    triggers = [
        await create_trigger(client, name=fmt, format=fmt) for fmt in ("json", "form", "xml")
    ]
    wrong = []
    for (method, path), media in sorted(declared.items()):
        url = re.sub(r"{(\w+)}", "x", path).replace("/entities/x", "/entities/vehicle")
        calls = [(url, auth())]
        if path == "/hooks/{trigger_id}":
            calls = [(f"/hooks/{t['id']}", bearer(t)) for t in triggers]
        for ctype, body in _PROBE_BODIES.items():
            statuses = [
                (
                    await client.request(
                        method, target, data=body, headers={**headers, "Content-Type": ctype}
                    )
                ).status
                for target, headers in calls
            ]
            read = any(s < 300 or s == 422 for s in statuses)
            if (set(statuses) == {415} and ctype in media) or (read and ctype not in media):
                wrong.append((method, path, ctype, statuses))
    assert wrong == []


_ROUTE = re.compile(r"`(POST|PUT|PATCH|DELETE) (/[^`\s?]*)")


def _documented_409s() -> set[tuple[str, str]]:
    """(method, path) of each write the docs say answers a 409: a route named in the sentence
    (or the table row) that says `409`; paths with `{}` for each parameter, under /api/v1."""
    found = set()
    for page in sorted((ROOT / "docs").glob("*.md")):
        for paragraph in re.split(r"\n\s*\n", page.read_text()):
            if paragraph.lstrip().startswith("|"):
                units = paragraph.split("\n")
            else:
                units = re.split(r"(?<=[.;])\s+(?=[A-Z`(])", paragraph.replace("\n", " "))
            for unit in units:
                if re.search(r"\b409\b", unit) is None:
                    continue
                for method, path in _ROUTE.findall(unit):
                    path = path.rstrip(".,)")
                    if not path.startswith(("/api/", "/hooks")):
                        path = "/api/v1" + path
                    found.add((method.lower(), re.sub(r"{\w*}", "{}", path)))
    return found


async def test_every_409_the_docs_give_a_write_is_in_the_document(client: Client) -> None:
    """The docs' 409s (a mapping version its users would refuse, a template or schedule name
    that exists, a flow run replayed in another status...) are declared on their operation:
    uploads and activations of mappings, creates of templates and schedules and the replay of
    a flow run answered an undeclared 409."""
    doc = await (await client.get("/openapi.json")).json()
    declared = {
        (method, re.sub(r"{\w+}", "{}", path)): set(op["responses"])
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
    }
    documented = _documented_409s()
    for operation in [
        ("post", "/api/v1/mappings"),
        ("post", "/api/v1/mappings/{}/activate"),
        ("post", "/api/v1/templates"),
        ("post", "/api/v1/schedules"),
        ("post", "/api/v1/flow-runs/{}/replay"),
    ]:
        assert operation in documented, operation
    undeclared = sorted(o for o in documented if "409" not in declared[o])
    assert undeclared == []


_LIVE_VEHICLES = "name: live\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields:\n"
_LIVE_VEHICLES += "  plate: placa\n"
_LIVE_DRIVERS = "name: live\ndirection: inbound\nentity_type: driver\nkey: [cpf]\nfields:\n"
_LIVE_DRIVERS += "  cpf: cpf\n  name: nome\n"


async def test_the_409s_of_uploads_activations_and_taken_names_are_declared(
    client: Client, scripted: ScriptedFeed
) -> None:
    """Each answers a 409 its operation now declares: a mapping version a trigger naming the
    mapping would refuse (uploaded, or staged then activated), a template's or a schedule's
    name the tenant has."""
    doc = await (await client.get("/openapi.json")).json()
    yaml = {**auth(), "Content-Type": "application/yaml"}
    await upload_mapping(client, _LIVE_VEHICLES)
    await create_trigger(client, name="live", mapping="live")
    conflicts = [
        ("post", "/api/v1/mappings", "/api/v1/mappings", {"data": _LIVE_DRIVERS, "headers": yaml}),
    ]
    staged = await client.post("/api/v1/mappings?activate=false", data=_LIVE_DRIVERS, headers=yaml)
    assert staged.status == 201, await staged.text()
    activate = {"json": {"version": 2}, "headers": auth()}
    conflicts.append(
        ("post", "/api/v1/mappings/{name}/activate", "/api/v1/mappings/live/activate", activate)
    )
    template = {"name": "t1", "channel_type": "sms", "locales": {"en": {"text": "t"}}}
    await _created(client, "/api/v1/templates", template)
    conflicts.append(
        ("post", "/api/v1/templates", "/api/v1/templates", {"json": template, "headers": auth()})
    )
    schedule = await scripted_schedule(client, scripted)
    again = {key: schedule[key] for key in ("name", "action_id", "every", "cursor", "target")}
    conflicts.append(
        ("post", "/api/v1/schedules", "/api/v1/schedules", {"json": again, "headers": auth()})
    )
    for method, path, url, call in conflicts:
        answer = await client.request(method, url, **call)
        assert answer.status == 409, (url, await answer.text())
        assert "409" in doc["paths"][path][method]["responses"], path


async def test_the_document_is_built_once_off_the_loop_for_every_anonymous_caller(
    client: Client, monkeypatch: Any
) -> None:
    """/docs and /openapi.json take no token: built per call, the document held the event
    loop 30–300 ms a request, and twenty anonymous callers held every partner's call for
    seconds (outside tester spec4, S2). It is built once, in a thread, whatever the order."""
    import time

    from gateway.web import openapi

    built: list[float] = []
    real = openapi.build_document

    def slow_build(app: web.Application) -> dict[str, Any]:
        built.append(time.monotonic())
        time.sleep(0.5)  # a large document on a loaded machine
        return real(app)

    monkeypatch.setattr(openapi, "build_document", slow_build)
    calls = [asyncio.ensure_future(client.get(path)) for path in ["/docs", "/openapi.json"] * 5]
    await asyncio.sleep(0.05)
    health = await client.get("/healthz")
    pending_when_healthy = sum(not call.done() for call in calls)
    answers = await asyncio.gather(*calls)
    pages = {await a.text() for a in answers if a.url.path == "/docs"}
    documents = [await a.json() for a in answers if a.url.path == "/openapi.json"]

    assert health.status == 200 and pending_when_healthy == len(calls)
    assert len(built) == 1 and all(a.status == 200 for a in answers)
    assert len(pages) == 1 and all(d == documents[0] for d in documents)
    assert answers[0].content_type == "text/html" and answers[1].content_type == "application/json"
