"""A partner that echoes the credential it received never gets it stored in a delivery
attempt nor shown in a proxy 502 (SPEC §7), whatever the auth type."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.outbound.redaction import MASK, Redactor
from gateway.web.state import services_key
from tests.partner_double import create_action, create_partner, create_subscription, post
from tests.support import auth

Client = TestClient[Any, Any]
TOKEN = "oauth-access-token-7f3a9c1e"


class Echo:
    """Answers 500 with everything it received: method, URL with query, headers, body."""

    def __init__(self) -> None:
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/token":
            body = {"access_token": TOKEN, "token_type": "bearer", "expires_in": 3600}
            return web.json_response(body)
        echoed = {
            "url": str(request.url),
            "headers": {str(k): v for k, v in request.headers.items()},
            "body": (await request.read()).decode(errors="replace"),
        }
        return web.Response(status=500, body=orjson.dumps(echoed), content_type="application/json")


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    double = Echo()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", double.handle)
    double.server = TestServer(app, host="127.0.0.1")
    await double.server.start_server()
    yield double
    await double.server.close()


def _cases(base: str) -> list[tuple[dict[str, Any], list[str]]]:
    """(auth document, the values that must never come back)."""
    basic = base64.b64encode(b"erp-user:basic-pass-41d8").decode()
    client_pair = base64.b64encode(b"client-1:client-secret-9e2b").decode()
    return [
        ({"type": "bearer", "token": "bearer-token-5c0ffee"}, ["bearer-token-5c0ffee"]),
        (
            {"type": "header", "name": "X-Api-Key", "value": "header-key-a11ce"},
            ["header-key-a11ce"],
        ),
        (
            {"type": "basic", "username": "erp-user", "password": "basic-pass-41d8"},
            ["basic-pass-41d8", basic],
        ),
        (
            {"type": "query", "name": "api_key", "value": "query key/with+chars"},
            ["query key/with+chars", "query+key/with%2Bchars", "query%20key%2Fwith%2Bchars"],
        ),
        (
            {
                "type": "oauth2_client_credentials",
                "token_url": f"{base}/token",
                "client_id": "client-1",
                "client_secret": "client-secret-9e2b",
            },
            ["client-secret-9e2b", client_pair, TOKEN],
        ),
    ]


async def test_echoed_credentials_are_redacted_in_stored_attempts_and_proxy_502(
    client: Client, echo: Echo
) -> None:
    for n, (auth_doc, secrets) in enumerate(_cases(echo.url)):
        partner = await create_partner(
            client, echo.url, name=f"echo-{n}", auth=auth_doc, secrets={"pin": "mapping-pin-2"}
        )
        deliver = await create_action(client, partner["id"], name=f"deliver-{n}")
        await create_subscription(client, deliver["id"], ("entity.created",))
        proxy = await create_action(client, partner["id"], name=f"proxy-{n}", mode="proxy")
        vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": f"ABC1D{n:02d}"})
        await client.app[services_key].relay.run_until_idle()
        await client.app[services_key].delivery_worker.run_until_idle()

        listed = await client.get(
            f"/api/v1/deliveries?partner_id={partner['id']}", headers=auth(role="viewer")
        )
        (delivery,) = (await listed.json())["items"]
        full = await client.get(
            f"/api/v1/deliveries/{delivery['id']}", headers=auth("acme", "viewer")
        )
        stored = await full.text()
        assert MASK in stored, stored
        invoked = await client.post(
            f"/api/v1/actions/{proxy['id']}/invoke",
            json={"entity": {"type": "vehicle", "id": vehicle["id"]}},
            headers=auth(),
        )
        problem = await invoked.json()
        assert invoked.status == 502 and MASK in problem["partner_body"]
        for secret in secrets:
            assert secret not in stored, (auth_doc["type"], secret)
            assert secret not in orjson.dumps(problem).decode(), (auth_doc["type"], secret)


def test_a_credential_cut_at_the_end_of_an_excerpt_leaves_nothing_behind() -> None:
    redactor = Redactor(["s3cr3t-value-0123456789"])
    assert redactor.redact('{"seen": "s3cr3t-val') == '{"seen": "' + MASK
    assert redactor.redact("a s3cr3t-value-0123456789 b") == f"a {MASK} b"
    assert redactor.redact("ordinary text") == "ordinary text"
