"""Walked from the URL table, so a new route cannot skip them: every protected route refuses
every class of forged credential (401, problem+json, nothing done), and every route that
names a resource answers another tenant's id with 404, never its data (SPEC §7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import jwt
import orjson
from aiohttp.test_utils import TestClient

from gateway.auth.keyring import KeyRing, Purpose
from gateway.web.openapi import operation_of
from gateway.web.state import services_key
from tests.partner_double import create_action, create_partner, create_subscription, post
from tests.support import SECRET_KEY, admin_token, auth
from tests.triggers_support import bearer, create_trigger

Client = TestClient[Any, Any]
RING = KeyRing.from_secret(SECRET_KEY)


def _sign(claims: dict[str, Any], *, purpose: Purpose = Purpose.ADMIN_TOKEN, **header: Any) -> str:
    key = RING.signing_key(purpose)
    return jwt.encode(claims, key.key, algorithm="HS256", headers={"kid": key.kid, **header})


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": "rabbot-gateway",
        "aud": "admin",
        "sub": "mallory",
        "tenant": "acme",
        "role": "admin",
        "jti": "j1",
        "iat": now,
        "exp": now + 3600,
    }
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def _unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


def _hs256(claims: dict[str, Any], key: bytes, kid: str) -> str:
    """Signed by hand: PyJWT itself refuses an empty HMAC key."""
    unsigned = _unsigned(claims, {"alg": "HS256", "typ": "JWT", "kid": kid})[:-1]
    mac = hmac.new(key, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def forged_admin_tokens(trigger_token: str) -> Iterator[tuple[str, str]]:
    kid = RING.signing_key(Purpose.ADMIN_TOKEN).kid
    good = admin_token()
    yield "alg none", _unsigned(_claims(), {"alg": "none", "typ": "JWT", "kid": kid})
    yield (
        "HS256 with an empty key",
        _hs256(_claims(), b"", kid),
    )
    yield (
        "HS256 with the public kid as key",
        jwt.encode(
            _claims(), kid.encode().ljust(32, b"0"), algorithm="HS256", headers={"kid": kid}
        ),
    )
    yield "another secret", admin_token(secret="another-secret-0123456789abcdef0123")
    yield "unknown kid", _sign(_claims(), kid="k-unknown")
    yield "wrong audience", _sign(_claims(aud="hooks"))
    yield "wrong issuer", _sign(_claims(iss="someone-else"))
    yield "expired", _sign(_claims(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200))
    yield "not yet valid", _sign(_claims(nbf=int(time.time()) + 3600))
    yield "no expiry", _sign(_claims(exp=None))
    yield "unknown role", _sign(_claims(role="root"))
    yield "truncated", good[:-10]
    yield "oversized", good + "A" * 4096
    yield "garbage", "not.a.jwt"
    yield "trigger token", trigger_token


def _protected(client: Client) -> Iterator[tuple[str, str]]:
    for route in client.app.router.routes():
        op = operation_of(route.handler)
        if op is None or op.auth != "admin" or route.resource is None or route.method == "HEAD":
            continue
        path = route.resource.canonical
        for name, value in (
            ("{type}", "vehicle"),
            ("{id}", "x"),
            ("{ref}", "x"),
            ("{name}", "x"),
            ("{version}", "1"),
        ):
            path = path.replace(name, value)
        yield route.method, path


async def test_every_admin_route_refuses_every_forged_token(client: Client) -> None:
    trigger = await create_trigger(client)
    routes = list(_protected(client))
    assert len(routes) >= 50
    for label, token in forged_admin_tokens(trigger["token"]):
        for method, path in routes:
            response = await client.request(
                method, path, json={}, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status == 401, (label, method, path, response.status)
            assert response.content_type == "application/problem+json"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # Nothing was created by any of them.
    listed = await client.get("/api/v1/triggers", headers=auth())
    assert [t["id"] for t in (await listed.json())["items"]] == [trigger["id"]]


async def test_hooks_refuse_admin_tokens_and_forged_trigger_tokens(client: Client) -> None:
    trigger = await create_trigger(client)
    claims = {
        "iss": "rabbot-gateway",
        "aud": "hooks",
        "sub": trigger["id"],
        "tenant": "acme",
        "jti": "forged",
        "iat": int(time.time()),
    }
    forged = {
        "admin token": admin_token(),
        "alg none": _unsigned(claims, {"alg": "none"}),
        "unknown token id": _sign(claims, purpose=Purpose.TRIGGER_TOKEN),
        "truncated": trigger["token"][:-5],
    }
    for label, token in forged.items():
        for method in ("GET", "POST"):
            response = await client.request(
                method,
                f"/hooks/{trigger['id']}",
                json={"plate": "ABC1D23"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status == 401, (label, method, response.status)


async def _acme_resources(client: Client, partner_url: str) -> dict[str, str]:
    """One of each resource in tenant acme: the ids another tenant will try."""
    partner = await create_partner(client, partner_url)
    action = await create_action(client, partner["id"])
    sub = await create_subscription(client, action["id"], ("entity.created",))
    trigger = await create_trigger(client)
    flow = (
        "name: acme-flow\non:\n  events: [entity.created]\n  filter: {origin: {kind: [admin]}}\n"
        "steps:\n  - id: v\n    set:\n"
        "      entity: {type: vehicle, ref: entity.plate}\n"
        "      fields: {attributes.x: entity.plate}\n"
    )
    uploaded = await client.post(
        "/api/v1/flows", data=flow.encode(), headers={**auth(), "Content-Type": "application/yaml"}
    )
    assert uploaded.status == 201, await uploaded.text()
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", {"name": "Ana Souza", "cpf": "52998224725"})
    mapping = (
        "name: acme-map\ndirection: inbound\nentity_type: vehicle\n"
        "key: [plate]\nfields: {plate: placa}\n"
    )
    upload = await client.post(
        "/api/v1/mappings",
        data=mapping.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert upload.status == 201, await upload.text()
    kind = await post(client, "/api/v1/kinds", {"name": "acme_kind", "schema": {"type": "object"}})
    fence = await post(
        client,
        "/api/v1/geofences",
        {
            "name": "acme-fence",
            "kind": "authorized",
            "circle": {"lat": -23.5, "lon": -46.6, "radius_m": 800},
        },
    )
    plan = await post(client, "/api/v1/maintenance-plans", {"name": "acme-plan", "every_km": 10000})
    channel = await post(
        client,
        "/api/v1/channels",
        {
            "name": "acme-mail",
            "type": "email",
            "smtp": {"host": "127.0.0.1", "port": 9, "security": "none"},
            "from": "acme@acme.com.br",
        },
    )
    template = await post(
        client,
        "/api/v1/templates",
        {
            "name": "acme-tpl",
            "channel_type": "email",
            "default_locale": "pt-BR",
            "locales": {"pt-BR": {"subject": "s", "text": "t"}},
        },
    )
    reader = await create_action(
        client, partner["id"], name="acme-read", method="GET", mode="proxy", read_only=True
    )
    schedule = await post(
        client,
        "/api/v1/schedules",
        {
            "name": "acme-poll",
            "action_id": reader["id"],
            "every": "1h",
            "target": {"entity_type": "vehicle", "mapping": "acme-map"},
        },
    )

    mapped = await create_trigger(client, name="acme-mapped", mapping="acme-map")
    refused = await client.post(
        f"/hooks/{mapped['id']}", json={"placa": "not a plate"}, headers=bearer(mapped)
    )
    assert refused.status == 422, await refused.text()  # kept as a rejected payload
    for path, settings in (
        ("/api/v1/fleet/settings", {"retention_days": 30}),
        ("/api/v1/notification-settings", {"cooldown_seconds": 600}),
    ):
        changed = await client.put(path, json=settings, headers=auth())
        assert changed.status == 200, (path, await changed.text())

    services = client.app[services_key]
    await services.relay.run_until_idle()
    await services.flow_runner.run_until_idle()
    events = await (await client.get("/api/v1/events", headers=auth())).json()
    deliveries = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    rejected = await (await client.get("/api/v1/rejected", headers=auth())).json()
    runs = await (await client.get("/api/v1/flows/acme-flow/runs", headers=auth())).json()
    return {
        "partners": partner["id"],
        "actions": action["id"],
        "subscriptions": sub["id"],
        "triggers": trigger["id"],
        "entities": vehicle["id"],
        "mappings": "acme-map",
        "kinds": kind["name"],
        "events": events["items"][0]["id"],
        "deliveries": deliveries["items"][0]["id"],
        "rejected": rejected["items"][0]["id"],
        "flow-runs": runs["items"][0]["id"],
        "geofences": fence["id"],
        "maintenance-plans": plan["id"],
        "channels": channel["id"],
        "templates": template["id"],
        "flows": "acme-flow",
        "schedules": schedule["id"],
    }


# Bodies the tenant itself is answered for (checked at the end of the walk), by method and
# OpenAPI path: sent by another tenant they must find nothing, a 404, so that no refusal of
# the body (a 400 or 422 before any lookup) hides whether the lookup is the tenant's own.
# A route not listed is sent `{}`.
_OWN_BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/api/v1/actions/{id}"): {"method": "PUT"},
    ("POST", "/api/v1/actions/{id}/invoke"): {"entity": {"type": "vehicle", "key": "ABC1D23"}},
    ("PATCH", "/api/v1/channels/{ref}"): {"from": "frota@acme.com.br"},
    ("POST", "/api/v1/channels/{ref}/test"): {"to": "ops@acme.com.br"},
    ("POST", "/api/v1/entities/vehicle/{ref}/drivers"): {"driver": "52998224725"},
    ("POST", "/api/v1/entities/vehicle/{ref}/services"): {"plan": "acme-plan", "km": 12.5},
    ("PATCH", "/api/v1/entities/{type}/{ref}"): {"attributes": {"color": "blue"}},
    ("POST", "/api/v1/flows/{name}/activate"): {"version": 1},
    ("POST", "/api/v1/mappings/{name}/activate"): {"version": 1},
    ("PATCH", "/api/v1/geofences/{ref}"): {"name": "acme-fence-2"},
    ("PUT", "/api/v1/kinds/{name}"): {"schema": {"type": "object"}},
    ("PATCH", "/api/v1/maintenance-plans/{ref}"): {"every_km": 20000},
    ("PATCH", "/api/v1/partners/{id}"): {"name": "acme-partner-2"},
    ("PATCH", "/api/v1/schedules/{id}"): {"every": "2h"},
    ("PATCH", "/api/v1/subscriptions/{id}"): {"status": "disabled"},
    ("PUT", "/api/v1/templates/{ref}"): {
        "name": "acme-tpl",
        "channel_type": "email",
        "default_locale": "pt-BR",
        "locales": {"pt-BR": {"subject": "s2", "text": "t2"}},
    },
    ("PATCH", "/api/v1/triggers/{id}"): {"name": "partner-2"},
}
# The tenant's settings: one document each, no id; another tenant reads its own.
_SETTINGS = ("/api/v1/fleet/settings", "/api/v1/notification-settings")


def _admin_operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            if {"admin": []} in op.get("security", []):
                yield method.upper(), path, op


def _named(path: str, ids: dict[str, str]) -> str:
    family = path.split("/")[3]
    assert family in ids, (
        f"{path} names a resource of a family the walk has none of ({family!r}): "
        "create one in _acme_resources so another tenant's access to it is tried"
    )
    return (
        path.replace("{type}", "vehicle")
        .replace("{id}", ids[family])
        .replace("{ref}", ids[family])
        .replace("{name}", ids[family])
        .replace("{version}", "1")
    )


async def _state(client: Client, ids: dict[str, str]) -> dict[str, Any]:
    """Everything of acme's the walk could reach, as acme reads it."""
    paths = [f"/api/v1/{family}/{ref}" for family, ref in ids.items() if family != "entities"]
    paths += [f"/api/v1/entities/vehicle/{ids['entities']}", *_SETTINGS]
    paths += ["/api/v1/entities/vehicle/ABC1D23/drivers", "/api/v1/flows/acme-flow/pause"]
    state = {}
    for path in paths:
        response = await client.get(path, headers=auth())
        assert response.status == 200, (path, response.status)
        state[path] = await response.json()
    state["/api/v1/entities/vehicle/ABC1D23/drivers"].pop("at")  # the time it was asked
    return state


async def test_another_tenants_ids_are_404_on_every_route_that_names_one(
    client: Client,
) -> None:
    """Walked from the OpenAPI document, so a route added later is tried too (and fails
    the walk until a resource of its family is created below): every admin operation on a
    path naming one of tenant acme's resources answers tenant globex 404, with the very
    body acme's own request is accepted with, with or without `If-Match` (a 412 would say
    the document exists), and never shows its data. Lists are empty; settings are its own."""
    ids = await _acme_resources(client, "http://127.0.0.1:9")
    doc = await (await client.get("/openapi.json")).json()
    before = await _state(client, ids)
    etags = {path: (await client.get(path, headers=auth())).headers.get("ETag") for path in before}
    other = auth("globex")
    named: list[tuple[str, str, str, dict[str, Any]]] = []
    for method, template, op in _admin_operations(doc):
        if "{" not in template.replace("{type}", ""):
            if method == "GET":  # a list: another tenant's lists are empty
                listed = await client.get(template.replace("{type}", "vehicle"), headers=other)
                body = await listed.json()
                assert listed.status == 200, (template, body)
                if template in _SETTINGS:
                    assert body != before[template], template  # its own, not acme's
                else:
                    assert body.get("items") == [], (template, body)
            continue
        named.append((method, template, _named(template, ids), op))
    for method, template, path, op in named:
        query = {
            p["name"]: "1"
            for p in op.get("parameters", [])
            if p["in"] == "query" and p.get("required")
        }
        body = _OWN_BODIES.get((method, template), {}) if "requestBody" in op else None
        tags: list[str | None] = [None]
        if method in ("PATCH", "PUT"):  # acme's own ETag, or any: still nothing there
            tags += ["*", etags.get(path) or '"x"']
        for if_match in tags:
            headers = {**other, **({"If-Match": if_match} if if_match else {})}
            response = await client.request(method, path, json=body, params=query, headers=headers)
            text = await response.text()
            assert response.status == 404, (method, path, if_match, response.status, text[:300])
            assert response.content_type == "application/problem+json"
            # Never its data: neither the vehicle, the partner's URL, nor any id the path did
            # not name (a 404 may echo the id it was asked for).
            leaked = {v for v in ("ABC1D23", "127.0.0.1:9", *ids.values()) if v not in path}
            assert not [v for v in leaked if v in text], (method, path, text[:300])
    assert len(named) >= 60
    # Nothing of acme's was changed, deleted, replayed or run by the walk.
    assert await _state(client, ids) == before
    # And the bodies were ones a lookup is reached with: acme's own requests are served.
    refused = []
    for method, template, path, op in named:
        if "requestBody" not in op or method == "DELETE":
            continue
        body = _OWN_BODIES.get((method, template), {})
        response = await client.request(method, path, json=body, headers=auth())
        if response.status in (400, 404, 405, 415, 422):
            refused.append((method, template, response.status, (await response.text())[:400]))
    assert refused == [], "\n".join(map(str, refused))


async def test_every_admin_route_refuses_a_query_parameter_it_does_not_take(
    client: Client,
) -> None:
    """A typo in a query parameter (`?stauts=dead`, `?activte=false`) is a 400 naming it, on
    every admin route, never a list unfiltered or a default applied; nothing is written."""
    for method, path in _protected(client):
        response = await client.request(method, f"{path}?stauts=dead", headers=auth())
        assert response.status == 400, (method, path, await response.text())
        detail = (await response.json())["detail"]
        assert "stauts" in detail, (method, path, detail)
    upload = await client.post(
        "/api/v1/mappings?activte=false",
        data=b"name: m\nversion: 1\n",
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert upload.status == 400
    assert (await (await client.get("/api/v1/mappings", headers=auth())).json())["items"] == []
    declared = await client.get("/api/v1/deliveries?status=dead&limit=5", headers=auth())
    assert declared.status == 200


# POSTs that write nothing, which a viewer may run (docs/api.md: as in the admin UI).
_VIEWER_POSTS = {"/api/v1/mappings/test", "/api/v1/flows/test", "/api/v1/templates/preview"}


async def test_a_viewer_is_refused_every_admin_route_that_changes_something(
    client: Client,
) -> None:
    """Walked from the URL table with the tenant's own ids, so a refusal is the role's and
    not a 404: every admin route but GET and the dry runs is a 403 to a viewer, whatever
    its `If-Match` (never a 412), and nothing of the tenant's changes."""
    ids = await _acme_resources(client, "http://127.0.0.1:9")
    families = [f for f in ids if f not in ("rejected", "events", "deliveries")]

    async def everything() -> list[Any]:
        return [
            await (await client.get(f"/api/v1/{f}/{ids[f]}", headers=auth())).json()
            for f in families
        ]

    before = await everything()
    viewer = auth(role="viewer")
    checked = 0
    for route in client.app.router.routes():
        op = operation_of(route.handler)
        if op is None or op.auth != "admin" or route.resource is None:
            continue
        template = route.resource.canonical
        if route.method in ("GET", "HEAD") or template in _VIEWER_POSTS:
            continue
        family = template.split("/")[3]
        path = (
            template.replace("{type}", "vehicle")
            .replace("{id}", ids.get(family, "x"))
            .replace("{ref}", ids.get(family, ids["entities"]))
            .replace("{name}", ids.get(family, "x"))
            .replace("{version}", "1")
        )
        query = {name: "1" for name in op.required_query}
        # The role is decided first: a stale, a current or any tag changes nothing of that.
        for if_match in (None, '"stale"', "*"):
            headers = {**viewer, **({"If-Match": if_match} if if_match else {})}
            response = await client.request(
                route.method, path, json={}, params=query, headers=headers
            )
            status = response.status
            assert status == 403, (route.method, path, if_match, status, await response.text())
            assert response.content_type == "application/problem+json"
        checked += 1
    assert checked >= 40
    assert await everything() == before


async def test_every_create_sent_again_answers_a_status_its_operation_declares(
    client: Client, monkeypatch: Any
) -> None:
    """Each create of the admin API that `_acme_resources` makes (one of every family), sent
    again as it was: a name or key the tenant has is a 409 where it must be unique, and the
    document declares it (templates and schedules answered an undeclared 409), or the create
    is taken again (a partner's, an action's name need not be unique)."""
    sent: list[tuple[str, Any, Any]] = []
    request = client._request

    async def recorded(method: str, path: Any, **kwargs: Any) -> Any:
        response = await request(method, path, **kwargs)
        if method == "POST" and response.status == 201 and str(path).startswith("/api/v1/"):
            sent.append((str(path), kwargs.get("json"), kwargs.get("data")))
        return response

    monkeypatch.setattr(client, "_request", recorded)
    await _acme_resources(client, "http://127.0.0.1:9")
    monkeypatch.undo()
    doc = await (await client.get("/openapi.json")).json()
    paths = {
        (method.upper(), path): op
        for path, operations in doc["paths"].items()
        for method, op in operations.items()
    }
    assert len(sent) >= 10, sent
    undeclared = []
    for path, body, data in sent:
        template = _template(path, paths)
        headers = auth() if data is None else {**auth(), "Content-Type": "application/yaml"}
        again = await client.post(path, json=body, data=data, headers=headers)
        if str(again.status) not in paths[("POST", template)]["responses"]:
            undeclared.append((template, again.status, (await again.text())[:200]))
    assert undeclared == []


def _template(path: str, paths: dict[tuple[str, str], Any]) -> str:
    """The document's path of a URL (`/api/v1/entities/vehicle` is `/api/v1/entities/{type}`)."""
    if ("POST", path) in paths:
        return path
    parts = path.split("/")
    for method, template in paths:
        shape = template.split("/")
        if method == "POST" and len(shape) == len(parts):
            if all(s == p or s.startswith("{") for s, p in zip(shape, parts, strict=True)):
                return template
    raise AssertionError(f"no operation for POST {path}")
