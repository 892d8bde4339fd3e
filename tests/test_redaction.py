"""A partner that echoes the credential it received never gets it stored in a delivery
attempt, shown in a proxy 502 nor logged (SPEC §7), whatever the auth type, in whatever
encoding its framework writes (PHP's `\\/`, .NET's `\\u002B`, percent-encoding in lower
case, base64)."""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from html.entities import html5
from typing import Any
from urllib.parse import quote, unquote

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.mapping.secret_marks import SecretMarks
from gateway.outbound import redaction
from gateway.outbound.redaction import MASK, Redactor
from gateway.outbound.sender import OutboundRequest, Sender
from gateway.outbound.ssrf import OutboundPolicy
from gateway.web.state import services_key
from tests.flow_support import drain
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    partner,
    post,
    raw_partner,
    upload_mapping,
)
from tests.support import auth

Client = TestClient[Any, Any]
__all__ = ["partner"]  # the fixture
TOKEN = "oauth-access-token-7f3a9c1e"


class Echo:
    """Answers 500 with everything it received: method, URL with query, headers, body (200
    under `/ok`, as JSON, or as text under `/ok/text`: a debug or whoami endpoint), and what
    its token endpoint received."""

    def __init__(self) -> None:
        self.server: TestServer | None = None
        # What its token endpoint was sent (an OAuth2 client's secret), quoted back by every
        # answer after to the client holding the token it gave: a partner's configuration
        # page (another partner's client, sharing this server in a test, is not told it).
        self.token_request: dict[str, str] = {}

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/token":
            self.token_request = {
                "authorization": request.headers.get("Authorization", ""),
                "form": await request.text(),
            }
            body = {"access_token": TOKEN, "token_type": "bearer", "expires_in": 3600}
            return web.json_response(body)
        if request.path.startswith("/as/"):  # the credentials only, as a framework writes
            text = ENCODINGS[request.path[4:]](_credentials(request))
            return web.Response(status=500, text=text, content_type="application/json")
        if request.path == "/redirect":  # a 302 quoting the query back, lower-case %xx
            location = "http://example.com/cb?" + _lower_hex(request.query_string)
            return web.Response(status=302, headers={"Location": location})
        if request.path == "/login":  # a login page to come back from: our URL, quoted again
            came = quote(f"http://{request.host}{request.raw_path}", safe="")
            return web.Response(
                status=302, headers={"Location": f"http://example.com/login?next={came}"}
            )
        if request.path == "/moved":  # moved for good, our query quoted past character 280
            head = "http://example.com/moved/" + ("w" * 59 + " ") * 4
            query = f"?{request.query_string}"
            location = head + "q" * (MOVED_CUT - len(head) - len(query) + 20) + query
            return web.Response(status=301, headers={"Location": location})
        if request.path.startswith("/mime/"):
            return _mime(request, request.path[6:])
        if request.path == "/long":
            return _cut_in_a_character(request)
        if request.path == "/whole":  # a short answer, whole, ending as the key begins
            return web.Response(status=500, text="key expected: s3cr", content_type="text/plain")
        told = self.token_request if _bearer(request) == TOKEN else {}
        echoed = {
            **told,
            "url": str(request.url),
            "headers": {str(k): v for k, v in request.headers.items()},
            "body": (await request.read()).decode(errors="replace"),
        }
        if request.path == "/ok/text":  # not JSON-looking: returned as it came
            heads = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
            said = "\n".join(told.values())
            return web.Response(text=f"{said}\n{request.url}\n{heads}", content_type="text/plain")
        status = 200 if request.path.startswith("/ok") else 500
        return web.Response(
            status=status, body=orjson.dumps(echoed), content_type="application/json"
        )


MOVED_CUT = 300  # characters of a redirect's Location its message quotes


def _bearer(request: web.Request) -> str:
    return request.headers.get("Authorization", "").removeprefix("Bearer ")


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    double = Echo()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", double.handle)
    double.server = TestServer(app, host="127.0.0.1")
    await double.server.start_server()
    yield double
    await double.server.close()


def _mime(request: web.Request, form: str) -> web.Response:
    """The request line and Authorization header as received, in MIME base64 (76 columns),
    after enough padding that the key runs across a line break."""
    head = f"{request.method} {request.raw_path} HTTP/1.1\r\n".encode()
    authorization = f"Authorization: {request.headers['Authorization']}".encode()
    scheme = authorization.index(b" ", len("Authorization: ")) + 1
    pad = b"Y" * ((57 - 12 - len(head) - scheme) % 57)  # 57 bytes a line: 12 of the key on it
    echoed = base64.encodebytes(pad + head + authorization + b"\r\n\r\n").decode()
    if form == "text":
        return web.Response(status=500, text=echoed, content_type="text/plain")
    crlf = echoed.replace("\n", "\r\n")  # Java's MIME encoder
    return web.Response(
        status=500, body=orjson.dumps({"request": crlf}), content_type="application/json"
    )


EXCERPT_BYTES = 4096  # what the sender keeps of an answer


def _cut_in_a_character(request: web.Request) -> web.Response:
    """The key, echoed where the sender's excerpt ends: inside one of its characters."""
    key = request.headers["Authorization"].partition(" ")[2].encode()
    for pad in range(6):
        body = b'{"pad": "' + b"x" * pad + b'", "key": "' + key + b'"}'
        if body[EXCERPT_BYTES - 1] >= 0xC0:  # the first byte of a character of two or more
            return web.Response(status=500, body=body, content_type="application/json")
    raise AssertionError("no padding puts the cut inside a character of the key")


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


def _php(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1].replace("/", "\\/")


# HTML5's name for each character that has one (PHP's `htmlentities` with ENT_HTML5).
_HTML5_NAMES = {
    chars: name
    for name, chars in sorted(html5.items(), key=lambda item: (-len(item[0]), item[0]))
    if name.endswith(";") and len(chars) == 1
}


def _html5(text: str) -> str:
    return "".join(f"&{_HTML5_NAMES[c]}" if c in _HTML5_NAMES else c for c in text)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _json_with(escape: Callable[[str], str]) -> Callable[[dict[str, str]], str]:
    return lambda found: "{" + ", ".join(f'"{k}": "{escape(v)}"' for k, v in found.items()) + "}"


def _form_with(hex_case: Callable[[str], str]) -> Callable[[dict[str, str]], str]:
    return lambda found: "&".join(f"{k}={hex_case(quote(v, safe=''))}" for k, v in found.items())


ENCODINGS: dict[str, Callable[[dict[str, str]], str]] = {
    "raw": _json_with(lambda v: json.dumps(v, ensure_ascii=False)[1:-1]),
    "php": _json_with(_php),
    "dotnet": _json_with(_dotnet),
    # An echo of an echo: a JSON document quoted in a JSON string, by the same writer.
    "php-in-php": lambda found: '{"echo": "' + _php(_json_with(_php)(found)) + '"}',
    "dotnet-in-dotnet": lambda found: '{"echo": "' + _dotnet(_json_with(_dotnet)(found)) + '"}',
    "html5-entities": lambda found: (
        "<dl>" + "".join(f"<dt>{k}</dt><dd>{_html5(v)}</dd>" for k, v in found.items()) + "</dl>"
    ),
    "every-char-escaped": _json_with(_every_char),
    "percent-lower": _form_with(_lower_hex),
    "percent-mixed": _form_with(_mixed_hex),
    "percent-twice": _form_with(lambda once: quote(once, safe="")),
    "base64": _json_with(_b64),
    "base64url": _json_with(lambda v: base64.urlsafe_b64encode(v.encode()).decode().rstrip("=")),
    "base64-whole": lambda found: orjson.dumps({"request": _b64(json.dumps(found))}).decode(),
    "mime-base64-whole": lambda found: orjson.dumps(
        {"request": base64.encodebytes(json.dumps(found).encode()).decode()}
    ).decode(),
}


def _json_unescaped(text: str) -> str:
    def one(escape: re.Match[str]) -> str:
        try:
            return str(json.loads(f'"{escape.group()}"', strict=False))
        except ValueError:  # not a JSON escape
            return escape.group()

    return re.sub(r"\\u[dD][89abAB]..\\u....|\\u....|\\[^u]", one, text)


def _revealed(text: str) -> str:
    """What a reader gets back from an excerpt, undoing every encoding above, twice over (an
    echo of an echo): JSON escapes, percent-encoding, HTML entities, and base64 runs (a MIME
    text's lines joined) read at each alignment."""
    found = [text]
    for _ in range(2):
        found += [_json_unescaped(found[-1])]
        found += [unquote(found[-1])]
        found += [html.unescape(found[-1])]
    for unescaped in found[:]:
        for run in re.findall(r"[A-Za-z0-9+/_-]{8,}", re.sub(r"\r?\n", "", unescaped)):
            run = run.replace("-", "+").replace("_", "/")
            for skip in range(4):
                usable = run[skip:][: (len(run) - skip) // 4 * 4]
                found.append(base64.b64decode(usable).decode(errors="replace"))
    return "\n".join(found)


def _leaks(secret: str, revealed: str) -> bool:
    """Any 8 characters of the secret in a row: a part of it is as good as all of it."""
    return any(secret[i : i + 8] in revealed for i in range(max(len(secret) - 7, 1)))


def _gateway_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the gateway logged (not the partner double's own access log). The tests set
    DEBUG on the gateway's loggers alone: on the root logger it turned on the driver's DEBUG
    logs too (every command written out as JSON; never on in a gateway, gateway/logs.py),
    which nothing here reads and which took most of these tests' CPU."""
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
        # An escape's first character last: JSON's `"…\\"` reads `…\"`, which reads on.
        ({"type": "bearer", "token": f"bs-{SPECIAL}%\\"}, [f"bs-{SPECIAL}%\\"]),
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
    caplog.set_level(logging.DEBUG, logger="gateway")
    cases = _encoded_cases(echo.url)
    answers = await _each_delivered_and_proxied(
        client, echo, [auth_doc for auth_doc, _ in cases], f"/as/{encoding}"
    )
    for (auth_doc, secrets), (stored, problem) in zip(cases, answers, strict=True):
        assert MASK in problem["partner_body"], problem
        assert any(MASK in text for text in stored), stored
        revealed = _revealed("\n".join([*stored, *_strings(problem), _gateway_log(caplog)]))
        for secret in secrets:
            assert not _leaks(secret, revealed), (auth_doc, secret, revealed)


async def _delivered_and_proxied(
    client: Client, echo: Echo, auth_doc: dict[str, Any], path: str
) -> tuple[list[str], dict[str, Any]]:
    """A delivery to the echo's `path` and a proxy call to it, through a partner with
    `auth_doc`: the strings of the delivery as a viewer reads it, and the proxy's 502."""
    ((stored, problem),) = await _each_delivered_and_proxied(client, echo, [auth_doc], path)
    return stored, problem


async def _each_delivered_and_proxied(
    client: Client, echo: Echo, auth_docs: list[dict[str, Any]], path: str
) -> list[tuple[list[str], dict[str, Any]]]:
    """`_delivered_and_proxied` through one partner per auth document: one vehicle's event
    delivered to each partner's subscription (one relay and delivery pass for all; a vehicle
    per partner made each later event go to every earlier partner too), then each partner's
    delivery read and its proxy called."""
    made = []
    for n, auth_doc in enumerate(auth_docs):
        partner = await create_partner(client, echo.url, name=f"echo-{n}", auth=auth_doc)
        deliver = await create_action(client, partner["id"], name=f"deliver-{n}", path=path)
        await create_subscription(client, deliver["id"], ("entity.created",))
        proxy = await create_action(
            client, partner["id"], name=f"proxy-{n}", mode="proxy", path=path
        )
        made.append((partner, proxy))
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D00"})
    await client.app[services_key].relay.run_until_idle()
    await client.app[services_key].delivery_worker.run_until_idle()

    answers = []
    for partner, proxy in made:
        listed = await client.get(
            f"/api/v1/deliveries?partner_id={partner['id']}", headers=auth(role="viewer")
        )
        (delivery,) = (await listed.json())["items"]
        full = await client.get(f"/api/v1/deliveries/{delivery['id']}", headers=auth(role="viewer"))
        invoked = await client.post(
            f"/api/v1/actions/{proxy['id']}/invoke",
            json={"entity": {"type": "vehicle", "id": vehicle["id"]}},
            headers=auth(),
        )
        assert invoked.status == 502, await invoked.text()
        answers.append((_strings(await full.json()), await invoked.json()))
    return answers


async def test_a_query_key_quoted_back_in_a_redirect_is_neither_returned_nor_logged(
    client: Client, echo: Echo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
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
    accented = Redactor(["chave-secreta-ção-9f2"])
    # Cut inside a character: its first bytes percent-encoded, or read as U+FFFD.
    assert accented.redact("?key=chave-secreta-%C3") == "?key=" + MASK
    assert accented.redact("?key=chave-secreta-%C3%A") == "?key=" + MASK
    assert accented.redact('{"seen": "chave-secreta-\ufffd') == '{"seen": "' + MASK


def test_an_answer_known_whole_keeps_an_ending_that_only_begins_like_a_credential() -> None:
    redactor = Redactor(["s3cr3t-value-0123456789"])
    assert redactor.redact('{"seen": "s3cr3t-val', cut=False) == '{"seen": "s3cr3t-val'
    assert redactor.redact("a s3cr3t-value-0123456789", cut=False) == f"a {MASK}"


async def test_a_whole_answer_ending_as_a_credential_begins_is_stored_as_written(
    client: Client, echo: Echo
) -> None:
    """Only an excerpt cut short may end inside a credential: a whole answer's last
    characters, which read like the start of one, were masked (the operator read
    `key expected: [redacted]`)."""
    bearer = {"type": "bearer", "token": "s3cr3t-token-0123456789"}
    stored, problem = await _delivered_and_proxied(client, echo, bearer, "/whole")
    assert problem["partner_body"] == "key expected: s3cr", problem
    assert "key expected: s3cr" in stored, stored


def test_character_references_zero_padded_are_read() -> None:
    redactor = Redactor(["s3cr3t/Key+val==xyz"])
    padded = "s3cr3t&#x000002F;Key&#0000043;val&#x3D;&#x0003D;xyz"
    assert redactor.redact(f"<fault>{padded}</fault>") == f"<fault>{MASK}</fault>"


async def test_a_query_key_quoted_twice_by_a_login_redirect_is_stored_and_returned_redacted(
    client: Client, echo: Echo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    secret = "Zz/Yy+Xx=Ww/Vv"
    query = {"type": "query", "name": "api_key", "value": secret}
    stored, problem = await _delivered_and_proxied(client, echo, query, "/login")
    assert "redirected to" in problem["detail"] and MASK in problem["detail"], problem
    assert any("redirected to" in text and MASK in text for text in stored), stored
    revealed = _revealed("\n".join([*stored, *_strings(problem), _gateway_log(caplog)]))
    assert not _leaks(secret, revealed), revealed


async def test_a_query_key_in_a_long_redirect_location_is_masked_before_it_is_shortened(
    client: Client, echo: Echo, caplog: pytest.LogCaptureFixture
) -> None:
    """A partner that moved and quotes our query back in its `Location`, the key across the
    300th character: the Location was cut there first, then redacted, and the key's start
    (all but its last characters, with the cut moved) was stored, logged and returned."""
    caplog.set_level(logging.DEBUG)
    key = "K3yQabcdefghijklmnopqrstuvwxyz0123456789ZZ"
    query = {"type": "query", "name": "api_key", "value": key}
    stored, problem = await _delivered_and_proxied(client, echo, query, "/moved")
    assert "redirected to" in problem["detail"] and MASK in problem["detail"], problem
    assert any("redirected to" in text and MASK in text for text in stored), stored
    revealed = _revealed("\n".join([*stored, *_strings(problem), _gateway_log(caplog)]))
    assert not _leaks(key, revealed), revealed


@pytest.mark.parametrize("form", ["text", "json"])
async def test_a_key_echoed_in_mime_base64_across_a_line_break_is_redacted(
    client: Client, echo: Echo, form: str
) -> None:
    token = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
    bearer = {"type": "bearer", "token": token}
    stored, problem = await _delivered_and_proxied(client, echo, bearer, f"/mime/{form}")
    assert MASK in problem["partner_body"], problem
    assert any(MASK in text for text in stored), stored
    assert not _leaks(token, _revealed("\n".join([*stored, *_strings(problem)])))


async def test_a_key_cut_inside_one_of_its_characters_by_the_excerpt_leaves_nothing_behind(
    client: Client, echo: Echo
) -> None:
    token = "chave-secreta-" + "ção-" * 700  # past the 4 KiB excerpt
    bearer = {"type": "bearer", "token": token}
    stored, problem = await _delivered_and_proxied(client, echo, bearer, "/long")
    assert problem["partner_body"].endswith(MASK), problem
    assert any(text.endswith(MASK) for text in stored), stored
    assert not _leaks(token, _revealed("\n".join([*stored, *_strings(problem)])))


@pytest.mark.parametrize("before", ["", "x" * 186], ids=["short", "across_a_cut"])
async def test_a_token_endpoint_quoting_the_client_secret_it_refused_is_redacted(
    client: Client, partner: Partner, before: str
) -> None:
    """`invalid_client` with an `error_description` quoting the secret: the proxy's 502 and
    a delivery's `last_error` quoted it in clear (the token endpoint's words bypassed the
    redaction every partner answer goes through); and once that was fixed, a secret across
    the 200th character kept its start in clear (the words were cut before redaction)."""
    secret = "cl1ent-s3cret-Zq9"
    oauth = {
        "type": "oauth2_client_credentials",
        "token_url": f"{partner.url}/oauth/token",
        "client_id": "gw",
        "client_secret": secret,
    }
    partner_doc = await create_partner(client, partner.url, auth=oauth)
    proxy = await create_action(client, partner_doc["id"], mode="proxy", method="GET", path="/x")
    deliver = await create_action(client, partner_doc["id"], name="deliver", path="/x")
    await create_subscription(client, deliver["id"], ("entity.created",))
    said = f"{before}client_secret {secret} is wrong"
    refusal = {"error": "invalid_client", "error_description": said}
    partner.respond_with(401, refusal)
    invoked = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke", headers=auth(), json={"payload": {}}
    )
    problem = await invoked.text()
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await client.app[services_key].relay.run_until_idle()
    await client.app[services_key].delivery_worker.run_until_idle()
    listed = await client.get("/api/v1/deliveries", headers=auth(role="viewer"))
    (delivery,) = (await listed.json())["items"]

    assert invoked.status == 502 and "is wrong" in problem, problem
    assert "is wrong" in delivery["last_error"], delivery
    assert not _leaks(secret, problem) and not _leaks(secret, str(delivery))


async def test_an_answer_the_partner_hung_up_on_mid_body_is_redacted_as_cut(
    client: Client,
) -> None:
    """A 401 announcing 500 bytes, sending the start of the key it refused, then hanging up:
    the excerpt ends inside the credential, and was stored as if whole (its tail in clear)."""
    token = "sk_live_4f9Qa7Zx2Lm8Np3Rt6"
    said = b"invalid key " + token[:14].encode()
    head = b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 500\r\n\r\n"
    async with raw_partner(head + said) as url:
        bearer = {"type": "bearer", "token": token}
        partner_doc = await create_partner(client, url.removesuffix("/hook"), auth=bearer)
        deliver = await create_action(client, partner_doc["id"], path="/hook")
        await create_subscription(client, deliver["id"], ("entity.created",))
        await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
        await client.app[services_key].relay.run_until_idle()
        await client.app[services_key].delivery_worker.run_until_idle()
    listed = await client.get("/api/v1/deliveries", headers=auth(role="viewer"))
    (delivery,) = (await listed.json())["items"]
    full = await client.get(f"/api/v1/deliveries/{delivery['id']}", headers=auth(role="viewer"))
    stored = _strings(await full.json())

    assert any(text.startswith("invalid key ") and MASK in text for text in stored), stored
    assert not _leaks(token, "\n".join(stored))


PIN = "mapping-pin-2"
# An outbound mapping putting the partner's named secret `pin` on the request.
WITH_PIN = """
name: with-pin
direction: outbound
headers:
  X-Pin:
    template: "{pin}"
    vars: {pin: {secret: pin}}
body:
  hello: {value: world}
"""


@pytest.mark.parametrize("path", ["/ok", "/ok/text"], ids=["json", "text"])
async def test_a_success_answer_quoting_a_credential_is_returned_by_the_proxy_redacted(
    client: Client, echo: Echo, path: str
) -> None:
    """A 2xx echo (a whoami endpoint) came back verbatim in the proxy's answer, while the same
    echo in a 5xx was redacted: the status decided."""
    await upload_mapping(client, WITH_PIN)
    for n, (auth_doc, secrets) in enumerate(_cases(echo.url)):
        partner = await create_partner(
            client, echo.url, name=f"echo-{n}", auth=auth_doc, secrets={"pin": PIN}
        )
        proxy = await create_action(
            client,
            partner["id"],
            mode="proxy",
            name=f"who-{n}",
            path=path,
            request_mapping="with-pin",
        )
        invoked = await client.post(
            f"/api/v1/actions/{proxy['id']}/invoke", json={"payload": {}}, headers=auth()
        )
        answer = await invoked.text()
        assert invoked.status == 200 and MASK in answer, answer
        for secret in [*secrets, PIN]:
            assert not _leaks(secret, answer), (auth_doc["type"], secret, answer)


async def test_a_fetch_answer_quoting_a_credential_is_stored_on_the_run_redacted(
    client: Client, echo: Echo
) -> None:
    """A flow's fetch kept the partner's 2xx answer as it came: any viewer read the partner's
    bearer token and named secret in the run's `answers`."""
    token = "hr-bearer-token-31337"
    await upload_mapping(client, WITH_PIN)
    partner = await create_partner(
        client, echo.url, auth={"type": "bearer", "token": token}, secrets={"pin": PIN}
    )
    await create_action(
        client,
        partner["id"],
        name="whoami",
        method="GET",
        path="/ok",
        mode="proxy",
        request_mapping="with-pin",
    )
    flow = {
        "name": "echo",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
        "steps": [{"id": "ask", "fetch": "whoami"}],
    }
    await post(client, "/api/v1/flows", flow)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(client.app[services_key])
    listed = await client.get("/api/v1/flows/echo/runs", headers=auth(role="viewer"))
    (run,) = (await listed.json())["items"]
    read = await client.get(
        f"/api/v1/flow-runs/{quote(run['id'], safe='')}", headers=auth(role="viewer")
    )
    stored = await read.json()
    assert read.status == 200 and stored["status"] == "succeeded", stored
    assert stored["answers"]["ask"]["headers"]["Authorization"] == MASK, stored
    assert stored["answers"]["ask"]["headers"]["X-Pin"] == MASK, stored
    assert not _leaks(token, str(stored)) and not _leaks(PIN, str(stored))


ERP_VEHICLES = """
name: erp-vehicles
direction: inbound
entity_type: vehicle
key: [plate]
items: items
fields:
  plate: {from: placa, transforms: [plate]}
  attributes.erp_note: {from: nota}
"""


async def test_a_page_quoting_a_credential_is_mapped_into_entities_redacted(
    client: Client, partner: Partner
) -> None:
    """A schedule's page (a 2xx) quoting the key we sent was written into the entities it
    maps as it came."""
    token = "erp-bearer-token-8080"
    await upload_mapping(client, ERP_VEHICLES)
    erp = await create_partner(client, partner.url, auth={"type": "bearer", "token": token})
    action = await create_action(
        client, erp["id"], name="veiculos", mode="proxy", method="GET", path="/api/veiculos"
    )
    schedule = {
        "name": "erp-veiculos",
        "action_id": action["id"],
        "every": "1h",
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
    }
    await post(client, "/api/v1/schedules", schedule)
    note = f"called with Bearer {token}"
    partner.respond_with(body={"items": [{"placa": "ABC1D23", "nota": note}]})

    assert await client.app[services_key].schedule_runner.run_until_idle() == {"ok": 1}
    read = await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth(role="viewer"))
    vehicle = await read.json()
    assert vehicle["attributes"]["erp_note"] == f"called with {MASK}", vehicle


ERP_CODES = """
name: erp-codes
direction: inbound
entity_type: vehicle
key: [plate]
items: items
fields:
  plate: {from: placa, transforms: [plate]}
  attributes.erp_id: {from: codigo, transforms: [string]}
  attributes.odometer_km: {from: hodometro, transforms: [number]}
  attributes.erp_note: {from: nota}
"""


async def test_a_page_s_data_equal_to_a_numeric_pin_is_written_as_sent_and_its_run_masks_it(
    client: Client, partner: Partner
) -> None:
    """A feed whose login is a PIN of digits answers the same number as data (a code, an
    odometer): it was written as the string `[redacted]`, a number turned text (a mapping's
    cast refused it, and its kept copy failed every replay). A page is written as pushed: a
    numeric credential is not looked for in its data. What the run says of a page (its
    error) still masks it."""
    pin = "154320"
    await upload_mapping(client, ERP_CODES)
    erp = await create_partner(
        client, partner.url, auth={"type": "query", "name": "pin", "value": pin}
    )
    action = await create_action(
        client, erp["id"], name="veiculos", mode="proxy", method="GET", path="/api/veiculos"
    )
    schedule = {
        "name": "erp-codes",
        "action_id": action["id"],
        "every": "1h",
        "error": "erro",
        "target": {"entity_type": "vehicle", "mapping": "erp-codes"},
    }
    created = await post(client, "/api/v1/schedules", schedule)
    record = {"placa": "ABC1D23", "codigo": 154320, "hodometro": "154320", "nota": "senha 154320"}
    partner.respond_with(body={"items": [record]})
    runner = client.app[services_key].schedule_runner

    assert await runner.run_until_idle() == {"ok": 1}
    read = await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth(role="viewer"))
    attributes = (await read.json())["attributes"]
    assert attributes == {"erp_id": pin, "odometer_km": 154320, "erp_note": "senha 154320"}
    partner.respond_with(body={"erro": f"pin {pin} expirado", "items": []})
    ran = await client.post(f"/api/v1/schedules/{created['id']}/run", headers=auth())
    assert ran.status == 202, await ran.text()
    assert await runner.run_until_idle() == {"failed": 1}
    listed = await client.get(f"/api/v1/schedules/{created['id']}/runs", headers=auth())
    error = (await listed.json())["items"][0]["error"]
    assert error["kind"] == "partner_error" and error["message"].endswith(f"pin {MASK} expirado")
    stored = await client.get(f"/api/v1/schedules/{created['id']}", headers=auth())
    assert pin not in str((await stored.json())["state"]["last_error"])


def test_a_tree_nested_past_the_stack_is_redacted_without_recursion() -> None:
    """Answers are read up to 1,024 levels deep (deeper than orjson writes out)."""
    deep: Any = {"Bearer s3cr3t-value-0123456789": "s3cr3t-value-0123456789"}
    for _ in range(3000):
        deep = [deep, "plain"]
    tree = Redactor(["s3cr3t-value-0123456789"]).redact_tree(deep)
    for _ in range(3000):
        assert tree[1] == "plain"
        tree = tree[0]
    assert tree == {"Bearer s3cr3t-value-0123456789": MASK}  # keys are left as they are


async def test_a_numeric_key_quoted_as_a_number_is_masked_and_data_holding_it_is_kept(
    client: Client, partner: Partner
) -> None:
    """A whoami answer quoting a key of digits as a JSON number returned it in clear, while
    order ids merely holding it were rewritten (`8473625100` as `[redacted]00`)."""
    key = "84736251"
    auth_doc = {"type": "header", "name": "X-Api-Key", "value": key}
    erp = await create_partner(client, partner.url, auth=auth_doc)
    proxy = await create_action(client, erp["id"], mode="proxy", method="GET", path="/whoami")
    orders = {"8473625100": "paid", "x8473625101": "open", "A-84736251-B": "sent"}
    answer = {"account": {"api_key": 84736251, "id": 84736252}, "orders": orders}
    partner.respond_with(body={**answer, "said": f"key {key} accepted", "ref": f"R{key}9"})
    invoked = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    data = (await invoked.json())["data"]

    assert invoked.status == 200
    assert data["account"] == {"api_key": MASK, "id": 84736252}, data
    # A whole token between separators is the key; inside a longer one it is other data.
    assert data["orders"] == {"8473625100": "paid", "x8473625101": "open", "A-84736251-B": "sent"}
    assert data["said"] == f"key {MASK} accepted" and data["ref"] == f"R{key}9", data


def test_an_answer_s_keys_are_left_as_they_are() -> None:
    """Masking keys renamed members (`fleet_id` as `[redacted]_id`), and two keys masked to
    one lost a member."""
    redactor = Redactor(["1234", "5678", "fleet"])
    tree = {"1234": "a", "5678": "b", "fleet_id": "fleet", "order": "A-12345", "pin": "1234"}
    assert redactor.redact_tree(tree) == {
        "1234": "a",
        "5678": "b",
        "fleet_id": MASK,
        "order": "A-12345",
        "pin": MASK,
    }
    # Error texts stay strict: a credential is masked wherever it is in an excerpt.
    assert redactor.redact("order A-12345 refused", cut=False) == f"order A-{MASK}5 refused"


def test_a_large_answer_reads_only_the_texts_that_may_hold_a_credential(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 1 MiB answer quoting the credential once was read escape by escape, every text and
    key of it (1.1 to 1.7 s on the event loop); one holding nothing was read whole too."""
    redactor = Redactor(["s3cr3t-token-value"])
    readings: list[str] = []
    real = redaction.Reading

    def counted(text: str) -> redaction.Reading:
        readings.append(text)
        return real(text)

    monkeypatch.setattr(redaction, "Reading", counted)
    texts: list[Any] = ["a"] * 262_000
    keyed = {f"{i:x}": "b" for i in range(110_000)}
    assert redactor.redact_tree([texts, keyed]) == [texts, keyed]
    assert readings == []  # nothing read: the answer written out holds nothing
    texts[7] = "s3cr3t-token-value"
    keyed["5"] = "Bearer s3cr3t-token-value"
    assert redactor.redact_tree([texts, keyed]) == [texts, keyed]
    assert texts[7] == MASK and keyed["5"] == f"Bearer {MASK}"
    assert texts.count("a") == 261_999 and list(keyed.values()).count("b") == 109_999
    # The answer's texts read once together, then each of the two holding it.
    assert len(readings) == 3, [len(text) for text in readings]


async def test_a_named_secret_quoted_in_an_answer_that_is_not_http_is_nowhere(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A garbled answer quoting the request (`Bearer <secret>` where a status line belongs):
    the parser's message, with the secret a mapping put in a header, was the proxy's 502
    detail, the access log's line and the delivery's `last_error` as it came. It quotes
    nothing of the answer now, which no redactor knows all of (a session cookie)."""
    caplog.set_level(logging.DEBUG, logger="gateway")
    secret = "tok-SECRET-98765"
    mapping = """
name: bearer-from-secret
direction: outbound
headers:
  Authorization:
    template: "Bearer {token}"
    vars: {token: {secret: erp_token}}
body:
  plate: {value: x}
"""
    await upload_mapping(client, mapping)
    async with raw_partner(f"Bearer {secret}\r\n\r\n".encode()) as url:
        erp = await create_partner(
            client,
            url.removesuffix("/hook"),
            auth={"type": "none"},
            secrets={"erp_token": secret},
        )
        proxy = await create_action(
            client,
            erp["id"],
            name="proxy",
            mode="proxy",
            path="/hook",
            request_mapping="bearer-from-secret",
        )
        deliver = await create_action(
            client, erp["id"], path="/hook", request_mapping="bearer-from-secret"
        )
        await create_subscription(client, deliver["id"], ("entity.created",))
        invoked = await client.post(
            f"/api/v1/actions/{proxy['id']}/invoke", json={"payload": {}}, headers=auth()
        )
        problem = await invoked.json()
        await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
        await client.app[services_key].relay.run_until_idle()
        await client.app[services_key].delivery_worker.run_until_idle()
    listed = await client.get("/api/v1/deliveries", headers=auth(role="viewer"))
    (delivery,) = (await listed.json())["items"]
    full = await client.get(f"/api/v1/deliveries/{delivery['id']}", headers=auth(role="viewer"))
    stored = await full.text()

    assert invoked.status == 502 and "invalid HTTP answer" in problem["detail"], problem
    # The parser's message names what was wrong; it quotes none of the answer's bytes.
    said = "Bad status line: Expected HTTP/, RTSP/ or ICE/"
    assert said in problem["detail"] and said in delivery["last_error"], (problem, delivery)
    for text in (str(problem), stored, str(delivery), _gateway_log(caplog)):
        assert not _leaks(secret, text), text


LOCAL = OutboundPolicy.from_entries(["127.0.0.1"])
DENSE = "a&amp;b%20c\\/"  # an entity, a percent escape and a JSON escape in every 13 characters


@pytest.mark.parametrize("quoted", [False, True], ids=["nothing", "once"])
async def test_an_answer_dense_with_escapes_is_redacted_off_the_event_loop(
    quoted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 MiB of texts dense with escapes is read escape by escape (0.07 to 0.85 s): the event
    loop stood still meanwhile, every other request and lease with it. A large answer is now
    redacted in a thread, with the same result; a small one where it is read."""
    secret = "s3cr3t-token-value"
    texts = [DENSE * 100 for _ in range(780)]  # ~1 MiB written out
    if quoted:
        texts[400] = f"{DENSE} called with Bearer {secret} {DENSE}"
    answers = {"/large": orjson.dumps(texts), "/small": orjson.dumps(texts[399:402])}
    readers: list[int] = []
    real = redaction.Reading

    def watched(text: str) -> redaction.Reading:
        if len(text) > len(secret):  # not the credential's own forms (read once, cached)
            readers.append(threading.get_ident())
        return real(text)

    monkeypatch.setattr(redaction, "Reading", watched)

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=answers[request.path], content_type="application/json")

    app = web.Application()
    app.router.add_get("/{size}", handle)
    loop_thread = threading.get_ident()
    redacted = [*texts]
    if quoted:
        redacted[400] = f"{DENSE} called with Bearer {MASK} {DENSE}"
    async with (
        TestServer(app, host="127.0.0.1") as server,
        Sender(LOCAL, max_body=2 * 1024 * 1024, excerpt_bytes=4096, connect_timeout=1) as sender,
    ):
        for path, expected in (("/large", redacted), ("/small", redacted[399:402])):
            readers.clear()
            url = str(server.make_url(path))
            request = OutboundRequest("GET", url, timeout=30, secrets=(secret,))
            outcome = await sender.send(request, partner_id="erp")
            assert outcome.json_body == expected
            assert readers, "the answer was not read for credentials"
            on_loop = [reader == loop_thread for reader in readers]
            assert on_loop == [path == "/small"] * len(readers), path


MAPPED_SECRET = "Kq7zPass-2026"
SECRET_CASTS = (
    "[number]",
    "[integer]",
    "[boolean]",
    "[parse_number]",
    "[{datetime: {parse: iso8601}}]",
)


async def test_a_request_mapping_that_cannot_cast_a_secret_names_it_without_its_value(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(client, partner.url, secrets={"erp_token": MAPPED_SECRET})
    for n, transforms in enumerate(SECRET_CASTS):
        await upload_mapping(
            client,
            f"name: cast{n}\ndirection: outbound\nbody:\n"
            f"  x: {{secret: erp_token, transforms: {transforms}}}\n",
        )
        action = await create_action(
            client, erp["id"], name=f"cast{n}", mode="proxy", request_mapping=f"cast{n}"
        )
        response = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
        )
        text = await response.text()
        assert response.status == 422, text
        assert "Kq7z" not in text, transforms
        (problem,) = (await response.json())["errors"]
        assert "<secret:erp_token>" in problem["message"], problem
    assert partner.requests == []


async def test_a_delivery_whose_mapping_cannot_cast_a_secret_keeps_no_trace_of_its_value(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(client, partner.url, secrets={"erp_token": MAPPED_SECRET})
    await upload_mapping(
        client,
        "name: m\ndirection: outbound\nbody:\n  x: {secret: erp_token, transforms: [integer]}\n",
    )
    action = await create_action(client, erp["id"], request_mapping="m")
    await create_subscription(client, action["id"], ("entity.created",))
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    services = client.app[services_key]
    await services.relay.run_until_idle()
    await services.delivery_worker.run_until_idle()

    viewer = auth("acme", "viewer")
    (listed,) = (await (await client.get("/api/v1/deliveries", headers=viewer)).json())["items"]
    one = await client.get(f"/api/v1/deliveries/{listed['id']}", headers=viewer)
    text = await one.text()
    assert "a secret is sent whole" in text and "<secret:erp_token>" in text, text
    assert "Kq7z" not in text
    assert partner.requests == []


async def test_a_mapping_sends_a_secret_whole_and_refuses_one_a_transform_changed(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(client, partner.url, secrets={"erp_token": MAPPED_SECRET})
    header = "headers:\n  X-Erp-Token: {template: 'Bearer {t}', vars: {t: {secret: erp_token}}}\n"
    await upload_mapping(
        client, f"name: whole\ndirection: outbound\n{header}body:\n  token: {{secret: erp_token}}\n"
    )
    await upload_mapping(
        client,
        f"name: changed\ndirection: outbound\n{header}"
        "body:\n  token: {secret: erp_token, transforms: [upper]}\n",
    )
    changed = await create_action(
        client, erp["id"], name="changed", mode="proxy", request_mapping="changed"
    )
    response = await client.post(
        f"/api/v1/actions/{changed['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    text = await response.text()
    assert response.status == 422, text
    assert "a secret is sent whole" in text and "kq7z" not in text.lower()
    assert partner.requests == []

    whole = await create_action(
        client, erp["id"], name="whole", mode="proxy", request_mapping="whole"
    )
    response = await client.post(
        f"/api/v1/actions/{whole['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    assert response.status == 200, await response.text()
    (call,) = partner.requests
    assert call.headers["X-Erp-Token"] == f"Bearer {MAPPED_SECRET}"
    assert orjson.loads(call.body) == {"token": MAPPED_SECRET}


async def test_a_request_build_problem_quotes_the_admins_text_alike_whatever_the_secrets(
    client: Client, partner: Partner
) -> None:
    """Problems quote what the admin wrote as written: masking a word equal to a secret or
    to the partner's password would tell which of their guesses it is."""
    erp = await create_partner(
        client,
        partner.url,
        secrets={"pin": "4821"},
        auth={"type": "basic", "username": "fleet", "password": "verao2026"},
    )
    guesses = [f"{k}" for k in range(4815, 4825)] + [f"verao{y}" for y in range(2020, 2030)]
    fields = "".join(
        f"  g{n}: {{value: 'x {w} x', transforms: [integer]}}\n" for n, w in enumerate(guesses)
    )
    await upload_mapping(client, f"name: guess\ndirection: outbound\nbody:\n{fields}")
    action = await create_action(client, erp["id"], name="g", mode="proxy", request_mapping="guess")
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    assert response.status == 422
    messages = {p["target"]: p["message"] for p in (await response.json())["errors"]}
    assert messages == {
        f"body.g{n}": f'cannot cast string "x {w} x" to integer' for n, w in enumerate(guesses)
    }
    assert partner.requests == []


async def test_a_secret_that_is_no_usable_path_segment_is_refused_without_its_value(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(client, partner.url, secrets={"tenant_path": ".."})
    await upload_mapping(
        client, "name: seg\ndirection: outbound\npath:\n  account: {secret: tenant_path}\n"
    )
    action = await create_action(
        client, erp["id"], name="seg", mode="proxy", path="/a/{account}/x", request_mapping="seg"
    )
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    text = await response.text()
    assert response.status == 422, text
    assert "'..'" not in text and (await response.json())["errors"][0]["keyword"] == "secret"
    assert partner.requests == []


@pytest.mark.parametrize(
    "transforms",
    [
        "[{truncate: 4}]",
        "[{split: {separator: ':', index: 0}}]",
        "[digits]",
        "[lower]",
        "[trim]",
        "[string]",
    ],
)
async def test_any_transform_given_a_secret_is_refused_whatever_it_would_make_of_it(
    client: Client, partner: Partner, transforms: str
) -> None:
    """A transform that cuts the mark (truncate, split, digits) or leaves it as it is (lower,
    trim of a mark that is lower case and blank-free) would send a piece of the mark or the
    untransformed secret: any transform given a secret is a 422."""
    erp = await create_partner(client, partner.url, secrets={"pin": "AbC-1234:5678 "})
    await upload_mapping(
        client,
        "name: m\ndirection: outbound\nbody:\n"
        f"  x: {{template: 'k {{p}}', vars: {{p: {{secret: pin}}}}, transforms: {transforms}}}\n",
    )
    action = await create_action(client, erp["id"], name="a", mode="proxy", request_mapping="m")
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    text = await response.text()
    assert response.status == 422, text
    (problem,) = (await response.json())["errors"]
    assert problem["keyword"] == "secret" and "<secret:pin>" in problem["message"], problem
    assert "1234" not in text
    assert partner.requests == []


async def test_a_request_no_mapping_reads_a_secret_of_is_not_walked_for_marks(
    client: Client, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partner with named secrets: a proxy payload no mapping touched goes out as it is,
    without its every string searched for a mark (on the event loop); one whose mapping reads
    a secret still has it in place."""
    looked: list[str] = []
    reveal_text = SecretMarks.reveal_text

    def counted(self: SecretMarks, text: str, *args: Any) -> str:
        looked.append(text)
        return reveal_text(self, text, *args)

    monkeypatch.setattr(SecretMarks, "reveal_text", counted)
    erp = await create_partner(client, partner.url, secrets={"unused": MAPPED_SECRET})
    plain = await create_action(client, erp["id"], name="plain", mode="proxy")
    payload = {"items": [{"plate": f"ABC{n:04d}", "note": "x" * 20} for n in range(500)]}
    response = await client.post(
        f"/api/v1/actions/{plain['id']}/invoke", json={"payload": payload}, headers=auth()
    )
    assert response.status == 200, await response.text()
    assert orjson.loads(partner.requests[-1].body) == payload
    assert looked == []

    await upload_mapping(
        client, "name: reads\ndirection: outbound\nbody:\n  token: {secret: unused}\n"
    )
    reads = await create_action(
        client, erp["id"], name="reads", mode="proxy", request_mapping="reads"
    )
    response = await client.post(
        f"/api/v1/actions/{reads['id']}/invoke", json={"payload": payload}, headers=auth()
    )
    assert response.status == 200, await response.text()
    assert orjson.loads(partner.requests[-1].body) == {"token": MAPPED_SECRET}
    assert looked
