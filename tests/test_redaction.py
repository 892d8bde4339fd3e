"""A partner that echoes the credential it received never gets it stored in a delivery
attempt, shown in a proxy 502 nor logged (SPEC §7), whatever the auth type, in whatever
encoding its framework writes (PHP's `\\/`, .NET's `\\u002B`, percent-encoding in lower
case, base64)."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, unquote

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
        if request.path.startswith("/as/"):  # the credentials only, as a framework writes
            text = ENCODINGS[request.path[4:]](_credentials(request))
            return web.Response(status=500, text=text, content_type="application/json")
        if request.path == "/redirect":  # a 302 quoting the query back, lower-case %xx
            location = "http://example.com/cb?" + _lower_hex(request.query_string)
            return web.Response(status=302, headers={"Location": location})
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


def _credentials(request: web.Request) -> dict[str, str]:
    """What carries a credential: the header as received, the key after its scheme, the
    query's values (decoded)."""
    found = {f"query {k}": v for k, v in request.query.items()}
    if key := request.headers.get("X-Api-Key"):
        found["x-api-key"] = key
    if header := request.headers.get("Authorization"):
        found |= {"authorization": header, "key": header.partition(" ")[2]}
    return found


def _lower_hex(text: str) -> str:
    return re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def _mixed_hex(text: str) -> str:
    count = iter(range(len(text)))
    return re.sub(
        "%[0-9A-F]{2}", lambda m: m.group().lower() if next(count) % 2 else m.group(), text
    )


def _dotnet(text: str) -> str:
    """System.Text.Json's default: HTML-sensitive characters and non-ASCII as \\uXXXX."""
    escaped = json.dumps(text)[1:-1]  # non-ASCII already \\uXXXX
    return re.sub(r"[+<>&']", lambda m: f"\\u{ord(m.group()):04X}", escaped)


def _every_char(text: str) -> str:
    units = text.encode("utf-16-be")
    return "".join(
        f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2)
    )


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _json_with(escape: Callable[[str], str]) -> Callable[[dict[str, str]], str]:
    return lambda found: "{" + ", ".join(f'"{k}": "{escape(v)}"' for k, v in found.items()) + "}"


def _form_with(hex_case: Callable[[str], str]) -> Callable[[dict[str, str]], str]:
    return lambda found: "&".join(f"{k}={hex_case(quote(v, safe=''))}" for k, v in found.items())


ENCODINGS: dict[str, Callable[[dict[str, str]], str]] = {
    "raw": _json_with(lambda v: json.dumps(v, ensure_ascii=False)[1:-1]),
    "php": _json_with(lambda v: json.dumps(v, ensure_ascii=False)[1:-1].replace("/", "\\/")),
    "dotnet": _json_with(_dotnet),
    "every-char-escaped": _json_with(_every_char),
    "percent-lower": _form_with(_lower_hex),
    "percent-mixed": _form_with(_mixed_hex),
    "base64": _json_with(_b64),
    "base64url": _json_with(lambda v: base64.urlsafe_b64encode(v.encode()).decode().rstrip("=")),
    "base64-whole": lambda found: orjson.dumps({"request": _b64(json.dumps(found))}).decode(),
}


def _revealed(text: str) -> str:
    """What a reader gets back from an excerpt, undoing every encoding above: JSON escapes,
    percent-encoding, and base64 runs read at each alignment."""
    unescaped = re.sub(
        r"\\u[dD][89abAB]..\\u....|\\u....|\\[^u]",
        lambda m: json.loads(f'"{m.group()}"', strict=False),
        text,
    )
    found = [unescaped, unquote(unescaped)]
    for run in re.findall(r"[A-Za-z0-9+/_-]{8,}", unescaped):
        run = run.replace("-", "+").replace("_", "/")
        for skip in range(4):
            usable = run[skip:][: (len(run) - skip) // 4 * 4]
            found.append(base64.b64decode(usable).decode(errors="replace"))
    return "\n".join(found)


def _leaks(secret: str, revealed: str) -> bool:
    """Any 8 characters of the secret in a row: a part of it is as good as all of it."""
    return any(secret[i : i + 8] in revealed for i in range(max(len(secret) - 7, 1)))


def _gateway_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the gateway logged (not the partner double's own access log)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway"))


def _strings(document: Any) -> list[str]:
    if isinstance(document, dict):
        return [s for value in document.values() for s in _strings(value)]
    if isinstance(document, list):
        return [s for value in document for s in _strings(value)]
    return [document] if isinstance(document, str) else []


# The characters frameworks escape: `/` (PHP), `+ < > & '` (.NET), `=` and non-ASCII.
SPECIAL = "Zr9/Qx+Lm2=&<>'é🔑"


def _encoded_cases(base: str) -> list[tuple[dict[str, Any], list[str]]]:
    """(auth document, the values that must never come back), any scheme on a header."""
    pair = base64.b64encode(f"erp-user:bp-{SPECIAL}".encode()).decode()
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"type": "bearer", "token": f"bt-{SPECIAL}"}, [f"bt-{SPECIAL}"]),
        ({"type": "header", "name": "X-Api-Key", "value": f"xk-{SPECIAL}"}, [f"xk-{SPECIAL}"]),
        (
            {"type": "basic", "username": "erp-user", "password": f"bp-{SPECIAL}"},
            [f"bp-{SPECIAL}", pair],
        ),
        ({"type": "query", "name": "api_key", "value": f"q k-{SPECIAL}"}, [f"q k-{SPECIAL}"]),
    ]
    for scheme in ("Token", "ApiKey", "bearer"):
        key = f"{scheme.lower()}-{SPECIAL}"
        auth_doc = {"type": "header", "name": "Authorization", "value": f"{scheme} {key}"}
        cases.append((auth_doc, [key]))
    return cases


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


@pytest.mark.parametrize("encoding", list(ENCODINGS))
async def test_echoed_credentials_are_redacted_in_the_encoding_a_partner_s_framework_writes(
    client: Client, echo: Echo, caplog: pytest.LogCaptureFixture, encoding: str
) -> None:
    caplog.set_level(logging.DEBUG)
    for n, (auth_doc, secrets) in enumerate(_encoded_cases(echo.url)):
        partner = await create_partner(client, echo.url, name=f"echo-{n}", auth=auth_doc)
        path = f"/as/{encoding}"
        deliver = await create_action(client, partner["id"], name=f"deliver-{n}", path=path)
        await create_subscription(client, deliver["id"], ("entity.created",))
        proxy = await create_action(
            client, partner["id"], name=f"proxy-{n}", mode="proxy", path=path
        )
        vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": f"ABC1D{n:02d}"})
        await client.app[services_key].relay.run_until_idle()
        await client.app[services_key].delivery_worker.run_until_idle()

        listed = await client.get(
            f"/api/v1/deliveries?partner_id={partner['id']}", headers=auth(role="viewer")
        )
        (delivery,) = (await listed.json())["items"]
        full = await client.get(f"/api/v1/deliveries/{delivery['id']}", headers=auth(role="viewer"))
        stored = _strings(await full.json())
        invoked = await client.post(
            f"/api/v1/actions/{proxy['id']}/invoke",
            json={"entity": {"type": "vehicle", "id": vehicle["id"]}},
            headers=auth(),
        )
        problem = await invoked.json()
        assert invoked.status == 502 and MASK in problem["partner_body"], problem
        assert any(MASK in text for text in stored), stored
        revealed = _revealed("\n".join([*stored, *_strings(problem), _gateway_log(caplog)]))
        for secret in secrets:
            assert not _leaks(secret, revealed), (auth_doc, secret, revealed)


async def test_a_query_key_quoted_back_in_a_redirect_is_neither_returned_nor_logged(
    client: Client, echo: Echo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Zz/Yy+Xx=Ww/Vv"
    query = {"type": "query", "name": "api_key", "value": secret}
    partner = await create_partner(client, echo.url, name="redirecting", auth=query)
    proxy = await create_action(client, partner["id"], mode="proxy", path="/redirect")
    invoked = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    problem = await invoked.json()
    assert invoked.status == 502 and "redirected to" in problem["detail"], problem
    assert MASK in problem["detail"]
    logged = _gateway_log(caplog)
    assert "request failed" in logged
    assert not _leaks(secret, _revealed(f"{problem} {logged}"))


def test_a_credential_cut_at_the_end_of_an_excerpt_leaves_nothing_behind() -> None:
    redactor = Redactor(["s3cr3t-value-0123456789"])
    assert redactor.redact('{"seen": "s3cr3t-val') == '{"seen": "' + MASK
    assert redactor.redact("a s3cr3t-value-0123456789 b") == f"a {MASK} b"
    assert redactor.redact("ordinary text") == "ordinary text"
    # Cut inside an escape: `\\u002` of a `+`, a `%2` of a `/`.
    plus = Redactor(["s3cr3t+value-0123456789"])
    assert plus.redact('{"seen": "s3cr3t\\u002') == '{"seen": "' + MASK
    assert plus.redact("?key=s3cr3t%2") == "?key=" + MASK
