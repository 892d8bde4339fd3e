import asyncio
import base64
import gzip
import hashlib
import hmac
import json
import resource
import socket
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from gateway.errors import InvalidPayload
from gateway.formats.json_tree import ANSWER_DEPTH
from gateway.outbound import resolver as resolver_module
from gateway.outbound import sender as sender_module
from gateway.outbound.breaker import BreakerState, GuardSettings, PartnerGuard, PartnerGuards
from gateway.outbound.partner_auth import NO_AUTH, OAuth2ClientCredentials, build_auth
from gateway.outbound.sender import OutboundRequest, Outcome, Sender, signed_headers
from gateway.outbound.ssrf import OutboundBlocked, OutboundPolicy
from gateway.outbound.urls import build_url
from gateway.outbound.verdict import Verdict
from tests.partner_double import raw_partner

LOCAL = OutboundPolicy.from_entries(["127.0.0.1"])
VECTORS = Path(__file__).parent / "data" / "standard_webhooks.json"
KNOWN_VECTOR = {  # data/standard_webhooks.json, kept here so the suite runs without shared/
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "body": '{"test": 2432232314}',
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}


# A local partner that records requests and whose answer a test changes mid-way.


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    raw_path: str = ""  # path and query as they came on the wire, still percent-encoded


@dataclass
class Answer:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    stall: bool = False


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()  # stalled answers wait for this (set at teardown)
        self._standing = Answer()
        self._queued: deque[Answer] = deque()
        self.server: TestServer | None = None

    def respond_with(
        self,
        status: int = 200,
        body: bytes = b"",
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        times: int | None = None,
        stall: bool = False,
    ) -> None:
        """The answer from now on, or for the next `times` requests only."""
        answer = Answer(status, body, dict(headers or {}), stall)
        if json_body is not None:
            answer.body = json.dumps(json_body).encode()
            answer.headers.setdefault("Content-Type", "application/json")
        if times is None:
            self._standing = answer
        else:
            self._queued.extend([answer] * times)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                await request.read(),
                request.raw_path,
            )
        )
        self.arrived.set()
        answer = self._queued.popleft() if self._queued else self._standing
        if answer.stall:
            await self.release.wait()
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    def url(self, path: str = "/hook") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))


MakeReceiver = Callable[[], Awaitable[Receiver]]


@pytest.fixture
async def make_receiver(aiohttp_server: AiohttpServer) -> AsyncIterator[MakeReceiver]:
    made: list[Receiver] = []

    async def make() -> Receiver:
        receiver = Receiver()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", receiver.handle)
        receiver.server = await aiohttp_server(app)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.release.set()


@pytest.fixture
async def receiver(make_receiver: MakeReceiver) -> Receiver:
    return await make_receiver()


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    async with Sender(LOCAL, max_body=64 * 1024, excerpt_bytes=1024, connect_timeout=1) as s:
        yield s


def post(url: str, body: bytes = b'{"plate": "ABC1D23"}', **kw: Any) -> OutboundRequest:
    return OutboundRequest("POST", url, body=body, timeout=kw.pop("timeout", 2), **kw)


# Answers and failures become Outcomes.


async def test_success_keeps_status_json_headers_and_latency(
    sender: Sender, receiver: Receiver
) -> None:
    receiver.respond_with(201, json_body={"id": "v1"}, headers={"X-Other": "no"})
    outcome = await sender.send(
        post(receiver.url(), headers={"Content-Type": "application/json"}, query=[("a", "1")]),
        partner_id="erp",
    )
    assert (outcome.status, outcome.error, outcome.verdict) == (201, None, Verdict.SUCCESS)
    assert outcome.is_json and outcome.json_body == {"id": "v1"}
    assert dict(outcome.headers) == {"Content-Type": "application/json"}
    assert outcome.body_excerpt == '{"id": "v1"}'
    assert outcome.latency_ms > 0
    [seen] = receiver.requests
    assert (seen.method, seen.path, seen.query) == ("POST", "/hook", {"a": "1"})
    assert seen.body == b'{"plate": "ABC1D23"}'
    assert "Cookie" not in seen.headers


async def test_partner_answer_changes_mid_way(sender: Sender, receiver: Receiver) -> None:
    receiver.respond_with(500, b"boom")
    first = await sender.send(post(receiver.url()), partner_id="erp")
    receiver.respond_with(200)
    second = await sender.send(post(receiver.url()), partner_id="erp")
    assert (first.status, first.verdict, first.body_excerpt) == (500, Verdict.RETRY, "boom")
    assert (second.status, second.verdict) == (200, Verdict.SUCCESS)
    assert len(receiver.requests) == 2


async def test_429_carries_retry_after(sender: Sender, receiver: Receiver) -> None:
    receiver.respond_with(429, headers={"Retry-After": "7"})
    outcome = await sender.send(post(receiver.url()), partner_id="erp")
    assert outcome.verdict is Verdict.RETRY
    assert outcome.retry_after(datetime.now(UTC)) == 7.0


async def test_410_means_gone(sender: Sender, receiver: Receiver) -> None:
    receiver.respond_with(410)
    assert (await sender.send(post(receiver.url()), partner_id="erp")).verdict is Verdict.GONE


async def test_slow_partner_times_out(sender: Sender, receiver: Receiver) -> None:
    receiver.respond_with(stall=True)
    outcome = await sender.send(post(receiver.url(), timeout=0.2), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (None, "timeout", Verdict.RETRY)
    assert len(receiver.requests) == 1


async def test_garbage_body_is_reported_not_raised(sender: Sender, receiver: Receiver) -> None:
    receiver.respond_with(200, b"\xff\xfe{not json", headers={"Content-Type": "application/json"})
    outcome = await sender.send(post(receiver.url()), partner_id="erp")
    assert (outcome.status, outcome.error) == (200, "invalid_response")
    assert outcome.verdict is Verdict.SUCCESS  # the partner did accept it
    assert not outcome.is_json and outcome.json_body is None
    assert outcome.body_excerpt == "\ufffd\ufffd{not json"


async def test_untyped_json_is_parsed_when_it_parses(sender: Sender, receiver: Receiver) -> None:
    receiver.respond_with(200, b"[1, 2]", headers={"Content-Type": "text/plain"})
    outcome = await sender.send(post(receiver.url()), partner_id="erp")
    assert outcome.is_json and outcome.json_body == [1, 2] and outcome.error is None
    receiver.respond_with(200, b"[oops", headers={"Content-Type": "text/plain"})
    outcome = await sender.send(post(receiver.url()), partner_id="erp")
    assert not outcome.is_json and outcome.error is None


async def test_declared_huge_body_is_not_read(sender: Sender, receiver: Receiver) -> None:
    receiver.respond_with(200, b"x" * (512 * 1024), headers={"Content-Type": "text/plain"})
    outcome = await sender.send(post(receiver.url()), partner_id="erp")
    assert (outcome.status, outcome.error) == (200, "too_large")
    assert outcome.body_excerpt == "x" * 1024
    assert outcome.message == "524288-byte body exceeds the 65536-byte cap; not read"


async def test_endless_streamed_body_is_capped(
    sender: Sender,
    aiohttp_server: AiohttpServer,
) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(160):  # 10 MiB, chunked, no Content-Length
                await response.write(b"y" * 65536)
        except ConnectionError:
            pass  # the sender hung up once it had enough, as it should
        return response

    app = web.Application()
    app.router.add_get("/hook", endless)
    server = await aiohttp_server(app)
    request = OutboundRequest("GET", str(server.make_url("/hook")), timeout=5)
    outcome = await sender.send(request, partner_id="gps")
    assert (outcome.status, outcome.error) == (200, "too_large")
    assert len(outcome.body_excerpt) == 1024


async def test_compressed_bomb_is_capped_after_decompression(
    sender: Sender, receiver: Receiver
) -> None:
    bomb = gzip.compress(b"0" * (32 * 1024 * 1024), compresslevel=1)
    receiver.respond_with(200, bomb, headers={"Content-Encoding": "gzip"})
    outcome = await sender.send(post(receiver.url()), partner_id="gps")
    assert (outcome.status, outcome.error) == (200, "too_large")
    assert outcome.body_excerpt == "0" * 1024


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, gzip"])
@pytest.mark.parametrize(("status", "verdict"), [(200, Verdict.SUCCESS), (503, Verdict.RETRY)])
async def test_an_answer_in_a_coding_not_decoded_keeps_its_status(
    sender: Sender, receiver: Receiver, coding: str, status: int, verdict: Verdict
) -> None:
    """A partner answering `br` or `zstd` unasked: aiohttp's parser refused the whole answer
    without their libraries, its status lost (a 200 the partner took sent again). The status
    decides; the body is said not decoded, not read."""
    receiver.respond_with(
        status,
        b"\x1b\x0a\x00\xf8\xa5\xa0\xa2\xa0\x5a",
        headers={"Content-Type": "application/json", "Content-Encoding": coding},
    )
    outcome = await sender.send(post(receiver.url()), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (status, "invalid_response", verdict)
    assert outcome.message == (
        f"the body's Content-Encoding {coding!r} is not one the gateway decodes "
        "(it asks for gzip, deflate); the body was not read"
    )
    assert receiver.requests[0].headers["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("coding", "body", "error", "json_body"),
    [
        ("gzip", gzip.compress(b'{"ok": true}'), None, {"ok": True}),
        ("x-gzip", gzip.compress(b'{"ok": true}'), None, {"ok": True}),
        ("gzip", gzip.compress(b'{"a": 1}') + gzip.compress(b"  "), None, {"a": 1}),
        ("deflate", zlib.compress(b'{"ok": true}'), None, {"ok": True}),
        ("deflate", zlib.compress(b'{"ok": true}')[2:-4], None, {"ok": True}),
        ("gzip", b'{"ok": true}', "the gzip body does not decode: incorrect header check", None),
        (
            "gzip",
            gzip.compress(b'{"ok": true}')[:-8],
            "the gzip body does not decode: the stream is cut short (its end is missing)",
            None,
        ),
    ],
    ids=["gzip", "x-gzip", "gzip-members", "zlib", "raw-deflate", "not-gzip", "cut-short"],
)
async def test_a_coded_answer_is_decoded_or_said_undecodable_with_its_status(
    sender: Sender, receiver: Receiver, coding: str, body: bytes, error: str | None, json_body: Any
) -> None:
    receiver.respond_with(
        200, body, headers={"Content-Type": "application/json", "Content-Encoding": coding}
    )
    outcome = await sender.send(post(receiver.url()), partner_id="erp")
    assert (outcome.status, outcome.json_body, outcome.verdict) == (200, json_body, Verdict.SUCCESS)
    assert (outcome.error, outcome.message) == (error and "invalid_response", error)


async def test_connection_reset_mid_body(sender: Sender) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"
    async with raw_partner(reply) as url:
        outcome = await sender.send(post(url), partner_id="erp")
    assert (outcome.status, outcome.error) == (200, "reset")
    assert outcome.body_excerpt == "0123456789"


async def test_connection_closed_before_status_line(sender: Sender) -> None:
    async with raw_partner(b"HTTP/1.1 2") as url:
        outcome = await sender.send(post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (None, "reset", Verdict.RETRY)


async def test_not_http_is_an_invalid_response(sender: Sender) -> None:
    async with raw_partner(b"SSH-2.0-OpenSSH_9.6\r\n\r\n") as url:
        outcome = await sender.send(post(url), partner_id="erp")
    assert (outcome.status, outcome.error) == (None, "invalid_response")


async def test_refused_connection(sender: Sender) -> None:
    async with raw_partner(b"") as url:
        pass  # the port is free again once the server is closed
    outcome = await sender.send(post(url, timeout=1), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (None, "connect", Verdict.RETRY)
    assert outcome.message is not None and "cannot connect to 127.0.0.1" in outcome.message


async def test_header_injection_is_refused_not_raised(sender: Sender, receiver: Receiver) -> None:
    request = post(receiver.url(), headers={"X-Plate": "ABC\r\nX-Evil: 1"})
    outcome = await sender.send(request, partner_id="erp")
    assert (outcome.error, outcome.sent) == ("blocked", False)
    assert receiver.requests == []


async def test_send_before_start_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        await Sender(LOCAL).send(post("http://127.0.0.1/"), partner_id="erp")


# Partner credentials.


@pytest.mark.parametrize(
    ("auth", "header", "query"),
    [
        ({"type": "bearer", "token": "t0k"}, ("Authorization", "Bearer t0k"), {}),
        ({"type": "header", "name": "X-Api-Key", "value": "k3y"}, ("X-Api-Key", "k3y"), {}),
        (
            {"type": "basic", "username": "rabbot", "password": "p@ss:wörd"},
            ("Authorization", "Basic " + base64.b64encode("rabbot:p@ss:wörd".encode()).decode()),
            {},
        ),
        ({"type": "query", "name": "api_key", "value": "a b&c"}, None, {"api_key": "a b&c"}),
        ({"type": "none"}, None, {}),
    ],
)
async def test_each_auth_type_is_applied(
    sender: Sender,
    receiver: Receiver,
    auth: dict[str, str],
    header: tuple[str, str] | None,
    query: dict[str, str],
) -> None:
    await sender.send(post(receiver.url()), partner_id="erp", auth=build_auth(auth))
    [seen] = receiver.requests
    if header is not None:
        assert seen.headers[header[0]] == header[1]
    else:
        assert "Authorization" not in seen.headers
    assert seen.query == query


async def test_a_query_credential_replaces_parameters_of_its_name_in_the_url(
    sender: Sender, receiver: Receiver
) -> None:
    """A next-page URL that echoes the key (masked when stored) goes out with the real key
    once, not the masked copy besides it; the rest of its query as written."""
    url = receiver.url("/list") + "?api%5Fkey=%5Bredacted%5D&raw=%3D%2C&api_key=old&page=2"
    request = OutboundRequest("GET", url, query=[("api_key", "x"), ("limit", "5")], timeout=2)
    auth = build_auth({"type": "query", "name": "api_key", "value": "k 1"})

    await sender.send(request, partner_id="erp", auth=auth)

    assert receiver.requests[0].raw_path == "/list?raw=%3D%2C&page=2&limit=5&api_key=k+1"


def test_bad_credentials_name_every_field() -> None:
    with pytest.raises(InvalidPayload) as caught:
        build_auth({"type": "header", "name": "X Api", "value": "a\r\nb"})
    assert {p.pointer for p in caught.value.problems} == {"/auth/name", "/auth/value"}
    with pytest.raises(InvalidPayload) as caught:
        build_auth({"type": "oauth2_client_credentials", "token_url": "ftp://x"})
    assert {p.pointer for p in caught.value.problems} == {
        "/auth/token_url",
        "/auth/client_id",
        "/auth/client_secret",
    }
    with pytest.raises(InvalidPayload) as caught:
        build_auth({"type": "basic", "username": "a:b", "password": 1})
    assert [p.pointer for p in caught.value.problems] == ["/auth/password", "/auth/username"]
    with pytest.raises(InvalidPayload, match="credentials"):
        build_auth({"type": "kerberos"})


def test_credentials_stay_out_of_reprs() -> None:
    bearer = build_auth({"type": "bearer", "token": "t0p-s3cret"})
    oauth2 = build_auth(oauth("https://idp.example.com/token"))
    assert "t0p-s3cret" not in repr(bearer)
    assert "s3cr3t" not in repr(oauth2) and "fleet app" not in repr(oauth2)


def token(value: str, expires_in: int = 3600) -> dict[str, Any]:
    return {"access_token": value, "token_type": "Bearer", "expires_in": expires_in}


def oauth(token_url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "oauth2_client_credentials",
        "token_url": token_url,
        "client_id": "fleet app",
        "client_secret": "s3cr3t",
        "scope": "fines:read",
        **overrides,
    }


async def test_oauth2_token_is_fetched_once_and_cached(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(json_body=token("tok-1"))
    refreshes: list[None] = []
    auth = build_auth(oauth(idp.url("/oauth/token")), on_refresh=lambda: refreshes.append(None))
    for _ in range(3):
        outcome = await sender.send(post(partner.url()), partner_id="hr", auth=auth)
        assert outcome.status == 200
    assert [r.headers["Authorization"] for r in partner.requests] == ["Bearer tok-1"] * 3
    [fetch] = idp.requests
    assert fetch.method == "POST"
    assert fetch.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert (
        fetch.headers["Authorization"]
        == "Basic " + base64.b64encode(b"fleet%20app:s3cr3t").decode()
    )
    assert dict(x.split("=") for x in fetch.body.decode().split("&")) == {
        "grant_type": "client_credentials",
        "scope": "fines%3Aread",
    }
    assert len(refreshes) == 1


async def test_oauth2_client_secret_in_body_when_configured(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(json_body=token("tok-1"))
    auth = build_auth(oauth(idp.url("/token"), client_auth="body", scope=None))
    await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    [fetch] = idp.requests
    assert "Authorization" not in fetch.headers
    assert fetch.body == b"grant_type=client_credentials&client_id=fleet+app&client_secret=s3cr3t"


async def test_concurrent_callers_share_one_refresh(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(json_body=token("tok-1"), stall=True)
    refreshes: list[None] = []
    auth = build_auth(oauth(idp.url("/token")), on_refresh=lambda: refreshes.append(None))
    sends = [
        asyncio.create_task(sender.send(post(partner.url()), partner_id="hr", auth=auth))
        for _ in range(5)
    ]
    await idp.arrived.wait()  # every sender is now waiting on the one refresh
    idp.release.set()
    outcomes = await asyncio.gather(*sends)
    assert [o.status for o in outcomes] == [200] * 5
    assert len(idp.requests) == 1 and len(refreshes) == 1


async def test_expired_token_is_refreshed_with_a_margin(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(json_body=token("tok-1", expires_in=100), times=1)
    idp.respond_with(json_body=token("tok-2", expires_in=100))
    now = [0.0]
    auth = OAuth2ClientCredentials(
        idp.url("/token"), "id", "secret", margin=30, clock=lambda: now[0]
    )
    await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    now[0] = 69.0
    await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    now[0] = 70.0  # 100 s lifetime - 30 s margin
    await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    assert [r.headers["Authorization"] for r in partner.requests] == [
        "Bearer tok-1",
        "Bearer tok-1",
        "Bearer tok-2",
    ]


async def test_401_refreshes_the_token_and_retries_once(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(json_body=token("tok-1"), times=1)
    idp.respond_with(json_body=token("tok-2"))
    partner.respond_with(401, times=1)
    outcome = await sender.send(
        post(partner.url()), partner_id="hr", auth=build_auth(oauth(idp.url("/token")))
    )
    assert outcome.status == 200
    assert [r.headers["Authorization"] for r in partner.requests] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]


async def test_persistent_401_is_retried_only_once(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(json_body=token("tok"))
    partner.respond_with(401)
    outcome = await sender.send(
        post(partner.url()), partner_id="hr", auth=build_auth(oauth(idp.url("/token")))
    )
    assert (outcome.status, outcome.verdict) == (401, Verdict.FAIL)
    assert len(partner.requests) == 2 and len(idp.requests) == 2


async def test_static_credentials_are_not_retried_on_401(
    sender: Sender, receiver: Receiver
) -> None:
    receiver.respond_with(401)
    await sender.send(
        post(receiver.url()), partner_id="erp", auth=build_auth({"type": "bearer", "token": "t"})
    )
    assert len(receiver.requests) == 1


async def test_a_failed_token_fetch_takes_the_time_the_call_waited_for_it(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    """Its outcome said 0 ms: the attempt recorded a call that had waited for the token
    endpoint as instant."""
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(503, json_body={"error": "temporarily_unavailable"}, times=1, stall=True)
    auth = build_auth(oauth(idp.url("/token")))
    asleep = asyncio.get_running_loop().call_later(0.3, idp.release.set)
    outcome = await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    asleep.cancel()
    assert (outcome.status, outcome.error, outcome.requested) == (None, "auth_failed", False)
    # The 0.3 s run from before the call's own clock started (a loaded loop: 299.3 ms seen).
    assert outcome.latency_ms >= 250 and partner.requests == []


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, "invalid_client"), (400, "invalid_grant"), (400, "unauthorized_client"), (403, "")],
)
async def test_token_endpoint_refusing_the_credentials_fails_without_retries(
    sender: Sender, make_receiver: MakeReceiver, status: int, error: str
) -> None:
    """A revoked key or a wrong secret is a configuration error: it was `auth_failed`, retried
    like a network error for the whole schedule."""
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(status, json_body={"error": error, "error_description": "nope"})
    auth = build_auth(oauth(idp.url("/token")))
    outcome = await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    assert (outcome.status, outcome.error, outcome.sent) == (None, "auth_refused", True)
    assert outcome.verdict is Verdict.FAIL
    assert outcome.message == (
        f"credentials refused: token endpoint answered {status}: {error} nope".replace("  ", " ")
        + "; fix the partner's credentials"
    )
    again = await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    assert again.error == "auth_refused" and len(idp.requests) == 1  # remembered for a while
    assert partner.requests == []


async def test_a_token_endpoint_refusing_in_a_200_answer_fails_without_retries(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    """Some token endpoints put RFC 6749's error in a 200: it was `auth_failed`, retried."""
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(json_body={"error": "invalid_client", "error_description": "bad secret"})
    auth = build_auth(oauth(idp.url("/token")))
    outcome = await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    assert (outcome.error, outcome.verdict) == ("auth_refused", Verdict.FAIL)
    assert outcome.message == (
        "credentials refused: token endpoint answered 200: invalid_client bad secret; "
        "fix the partner's credentials"
    )
    assert partner.requests == []


@pytest.mark.parametrize("status", [429, 503])
async def test_a_token_endpoint_that_is_busy_is_retried(
    sender: Sender, make_receiver: MakeReceiver, status: int
) -> None:
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(status, json_body={"error": "temporarily_unavailable"})
    auth = build_auth(oauth(idp.url("/token")))
    outcome = await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    assert (outcome.error, outcome.verdict) == ("auth_failed", Verdict.RETRY)
    await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    assert len(idp.requests) == 2 and partner.requests == []


@pytest.mark.parametrize(("status", "said", "waited"), [(429, "120", 120.0), (503, "86400", 3600)])
async def test_a_busy_token_endpoints_retry_after_is_honoured_within_the_bound(
    sender: Sender, make_receiver: MakeReceiver, status: int, said: str, waited: float
) -> None:
    """It was asked again at the next send, however long it had asked us to wait."""
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(status, json_body={"error": "slow_down"}, headers={"Retry-After": said})
    now = [0.0]
    auth = OAuth2ClientCredentials(idp.url("/token"), "id", "secret", clock=lambda: now[0])
    first = await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    now[0] = waited - 1
    held = await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    idp.respond_with(json_body=token("tok-1"))
    now[0] = waited
    after = await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    assert (first.error, first.verdict, first.sent) == ("auth_failed", Verdict.RETRY, True)
    assert first.retry_after(datetime.now(UTC)) == waited
    assert (held.error, held.verdict, held.sent) == ("auth_waiting", Verdict.RETRY, False)
    assert held.retry_in == 1.0
    assert after.status == 200
    assert len(idp.requests) == 2 and len(partner.requests) == 1


async def test_a_token_type_other_than_bearer_is_refused_with_its_reason_and_not_retried(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    """It was `auth_failed`: retried, and the token endpoint asked again, on every attempt."""
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(json_body={"access_token": "x", "token_type": "DPoP", "expires_in": 60})
    auth = build_auth(oauth(idp.url("/token")))
    outcome = await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    again = await sender.send(post(partner.url()), partner_id="hr", auth=auth)
    assert (outcome.error, outcome.verdict) == ("auth_refused", Verdict.FAIL)
    assert outcome.message is not None and "'DPoP'" in outcome.message
    assert "only Bearer" in outcome.message
    assert again.error == "auth_refused" and len(idp.requests) == 1
    assert partner.requests == []


@pytest.mark.parametrize(
    "answer",
    [
        {"token_type": "bearer"},
        "not an object",
        {"error": "temporarily_unavailable"},
        {"error": {"code": 1}},
    ],
)
async def test_unusable_token_answers_are_auth_failed(
    sender: Sender, make_receiver: MakeReceiver, answer: Any
) -> None:
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(json_body=answer)
    outcome = await sender.send(
        post(partner.url()), partner_id="hr", auth=build_auth(oauth(idp.url("/token")))
    )
    assert outcome.error == "auth_failed" and partner.requests == []


def geotab_error(name: str) -> dict[str, Any]:
    """A MyGeotab JSON-RPC error answer (HTTP 200)."""
    return {"error": {"name": "JSONRPCError", "errors": [{"name": name, "message": "..."}]}}


async def test_geotab_refusing_the_credentials_fails_without_retries(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    """Geotab says "wrong credentials" with HTTP 200 and InvalidUserException: it was
    `auth_failed`, retried like a network error (and each retry a failed sign-in, which
    Geotab answers by locking the account)."""
    partner, geotab = await make_receiver(), await make_receiver()
    geotab.respond_with(json_body=geotab_error("InvalidUserException"))
    refusals: list[None] = []
    auth = build_auth(
        {
            "type": "geotab",
            "url": geotab.url("/apiv1"),
            "database": "d",
            "username": "u",
            "password": "pw",
        },
        on_refused=lambda: refusals.append(None),
    )
    outcome = await sender.send(post(partner.url()), partner_id="gt", auth=auth)
    assert (outcome.status, outcome.error, outcome.verdict) == (None, "auth_refused", Verdict.FAIL)
    assert outcome.message is not None and "InvalidUserException: credentials refused" in (
        outcome.message
    )
    again = await sender.send(post(partner.url()), partner_id="gt", auth=auth)
    assert again.error == "auth_refused" and len(geotab.requests) == 1  # remembered a while
    assert refusals == [None] and partner.requests == []


async def test_geotab_refusing_a_fresh_session_too_is_no_success(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    """The call is refused (HTTP 200, InvalidUserException), the session renewed, the call
    refused again: that answer read as a delivered 200."""
    partner, geotab = await make_receiver(), await make_receiver()
    creds = {"database": "d", "userName": "u", "sessionId": "s1"}
    geotab.respond_with(json_body={"result": {"credentials": creds, "path": "ThisServer"}})
    partner.respond_with(json_body=geotab_error("InvalidUserException"))
    auth = build_auth(
        {
            "type": "geotab",
            "url": geotab.url("/apiv1"),
            "database": "d",
            "username": "u",
            "password": "pw",
        }
    )
    outcome = await sender.send(post(partner.url(), body=b"{}"), partner_id="gt", auth=auth)
    assert (outcome.status, outcome.error, outcome.verdict) == (None, "auth_refused", Verdict.FAIL)
    assert len(geotab.requests) == 2 and len(partner.requests) == 2  # renewed once, then no more


@pytest.mark.parametrize("name", ["OverLimitException", "DbUnavailableException"])
async def test_geotab_being_busy_at_sign_in_is_retried(
    sender: Sender, make_receiver: MakeReceiver, name: str
) -> None:
    partner, geotab = await make_receiver(), await make_receiver()
    geotab.respond_with(json_body=geotab_error(name))
    auth = build_auth(
        {
            "type": "geotab",
            "url": geotab.url("/apiv1"),
            "database": "d",
            "username": "u",
            "password": "pw",
        }
    )
    outcome = await sender.send(post(partner.url()), partner_id="gt", auth=auth)
    assert (outcome.error, outcome.verdict) == ("auth_failed", Verdict.RETRY)
    await sender.send(post(partner.url()), partner_id="gt", auth=auth)
    assert len(geotab.requests) == 2 and partner.requests == []


async def test_geotab_over_limit_at_sign_in_is_not_asked_again_before_its_retry_after(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    """MyGeotab limits `Authenticate` (failed ones too) and answers the limit with HTTP 200,
    an OverLimitException and `Retry-After`: a throttle like a 429, whose wait is honoured
    (`auth_waiting`, nothing sent). It was ignored: every call signed in again at once."""
    partner, geotab = await make_receiver(), await make_receiver()
    geotab.respond_with(json_body=geotab_error("OverLimitException"), headers={"Retry-After": "58"})
    auth = build_auth(
        {
            "type": "geotab",
            "url": geotab.url("/apiv1"),
            "database": "d",
            "username": "u",
            "password": "pw",
        }
    )
    outcome = await sender.send(post(partner.url()), partner_id="gt", auth=auth)
    assert (outcome.error, outcome.retry_in) == ("auth_failed", 58)
    again = await sender.send(post(partner.url()), partner_id="gt", auth=auth)
    assert again.error == "auth_waiting" and again.retry_in is not None
    assert 57 <= again.retry_in <= 58
    assert len(geotab.requests) == 1 and partner.requests == []


async def test_token_url_passes_the_ssrf_guard(sender: Sender, receiver: Receiver) -> None:
    auth = build_auth(oauth("http://169.254.169.254/token"))
    outcome = await sender.send(post(receiver.url()), partner_id="hr", auth=auth)
    assert outcome.error == "blocked"
    assert outcome.message is not None and "cloud metadata" in outcome.message
    assert receiver.requests == []


# Standard Webhooks signatures.


def test_signed_headers_match_the_known_vector() -> None:
    case = json.loads(VECTORS.read_text())["cases"][0] if VECTORS.exists() else KNOWN_VECTOR
    headers = signed_headers(
        [case["secret"]], case["webhook-id"], int(case["webhook-timestamp"]), case["body"].encode()
    )
    assert headers == {
        "webhook-id": case["webhook-id"],
        "webhook-timestamp": case["webhook-timestamp"],
        "webhook-signature": case["webhook-signature"],
    }


async def test_delivered_signatures_verify_for_both_secrets_during_rotation(
    sender: Sender, receiver: Receiver
) -> None:
    old, new = KNOWN_VECTOR["secret"], "whsec_" + base64.b64encode(b"n" * 24).decode()
    body = b'{"event": "fine.received"}'
    headers = signed_headers([old, new], "msg_1", 1_700_000_000, body)
    await sender.send(post(receiver.url(), body=body, headers=headers), partner_id="erp")
    [seen] = receiver.requests
    signatures = seen.headers["webhook-signature"].split(" ")
    for secret, signature in zip((old, new), signatures, strict=True):
        key = base64.b64decode(secret.removeprefix("whsec_"))
        mac = hmac.new(key, b"msg_1.1700000000." + seen.body, hashlib.sha256).digest()
        assert signature == "v1," + base64.b64encode(mac).decode()


# Guard integration: breaker, rate limit, concurrency.


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_breaker_opens_stops_sending_and_closes_after_a_probe(
    sender: Sender, receiver: Receiver
) -> None:
    clock = FakeClock()
    guard = PartnerGuard.build(GuardSettings(breaker_threshold=2, breaker_cooldown=60), clock=clock)
    receiver.respond_with(503)
    for _ in range(2):
        await sender.send(post(receiver.url()), partner_id="erp", guard=guard)
    assert guard.breaker.state is BreakerState.OPEN
    skipped = await sender.send(post(receiver.url()), partner_id="erp", guard=guard)
    assert (skipped.error, skipped.sent, skipped.verdict) == ("circuit_open", False, Verdict.RETRY)
    assert len(receiver.requests) == 2

    clock.now += 60
    receiver.respond_with(200)
    probe = await sender.send(post(receiver.url()), partner_id="erp", guard=guard)
    assert probe.status == 200
    assert guard.breaker.state is BreakerState.CLOSED


async def test_a_judge_that_fails_leaves_the_answer_to_its_status_and_ends_the_probe(
    sender: Sender, receiver: Receiver
) -> None:
    """The request's judge (an action's answer rules) ran in the breaker's `finally`: what it
    raised replaced the answer, and the half-open probe's permit was neither released nor
    recorded, so no probe went out again and the partner stayed cut off (read50 L4)."""

    def judge(outcome: Outcome) -> Any:
        raise RuntimeError("a bug in the judge")

    clock = FakeClock()
    guard = PartnerGuard.build(GuardSettings(breaker_threshold=1, breaker_cooldown=60), clock=clock)
    receiver.respond_with(503)
    await sender.send(post(receiver.url()), partner_id="erp", guard=guard)
    clock.now += 60
    assert guard.breaker.state is BreakerState.HALF_OPEN
    receiver.respond_with(200)

    probe = await sender.send(post(receiver.url(), judge=judge), partner_id="erp", guard=guard)

    assert (probe.status, probe.verdict) == (200, Verdict.SUCCESS)
    assert guard.breaker.state is BreakerState.CLOSED


async def test_client_errors_do_not_open_the_breaker(sender: Sender, receiver: Receiver) -> None:
    guard = PartnerGuard.build(GuardSettings(breaker_threshold=1))
    receiver.respond_with(422)
    await sender.send(post(receiver.url()), partner_id="erp", guard=guard)
    assert guard.breaker.state is BreakerState.CLOSED


async def test_blocked_sends_do_not_count_against_the_partner(sender: Sender) -> None:
    guard = PartnerGuard.build(GuardSettings(breaker_threshold=1))
    outcome = await sender.send(post("http://10.0.0.1/"), partner_id="erp", guard=guard)
    assert outcome.error == "blocked"
    assert guard.breaker.state is BreakerState.CLOSED


async def test_over_the_rate_limit_is_not_sent(sender: Sender, receiver: Receiver) -> None:
    guard = PartnerGuard.build(GuardSettings(rate_per_second=0.01, burst=1, max_wait=1))
    first = await sender.send(post(receiver.url()), partner_id="erp", guard=guard)
    second = await sender.send(post(receiver.url()), partner_id="erp", guard=guard)
    assert first.status == 200
    assert (second.error, second.sent) == ("rate_limited", False)
    assert second.retry_in is not None and 90 <= second.retry_in <= 100  # the bucket's wait
    assert len(receiver.requests) == 1


async def test_concurrency_gate_limits_requests_in_flight(
    sender: Sender, receiver: Receiver
) -> None:
    guard = PartnerGuard.build(GuardSettings(max_concurrency=1, max_wait=0.05))
    receiver.respond_with(stall=True, times=1)
    slow = asyncio.create_task(sender.send(post(receiver.url()), partner_id="erp", guard=guard))
    await receiver.arrived.wait()
    busy = await sender.send(post(receiver.url()), partner_id="erp", guard=guard)
    assert (busy.error, busy.sent) == ("rate_limited", False)
    assert busy.retry_in == 2  # a slot frees within the timeout of the request holding it
    receiver.release.set()
    assert (await slow).status == 200
    assert (await sender.send(post(receiver.url()), partner_id="erp", guard=guard)).status == 200
    assert len(receiver.requests) == 2


@pytest.fixture
async def small_sender() -> AsyncIterator[Sender]:
    """A process whose outbound capacity is 4 requests in flight (one partner: 2 of them)."""
    async with Sender(LOCAL, connect_timeout=1, connections=4) as s:
        yield s


async def _filled(
    sender: Sender, receiver: Receiver, guard: PartnerGuard, partner_id: str, n: int
) -> list[asyncio.Task[Any]]:
    """`n` calls of `partner_id` stalled at the receiver, holding their places."""
    before = len(receiver.requests)
    calls = [
        asyncio.create_task(
            sender.send(post(receiver.url("/slow"), timeout=30), partner_id=partner_id, guard=guard)
        )
        for _ in range(n)
    ]
    while len(receiver.requests) < before + n:
        await asyncio.sleep(0.01)
    return calls


async def test_a_partner_re_saved_while_its_calls_are_in_flight_keeps_to_its_share(
    small_sender: Sender, receiver: Receiver
) -> None:
    """New settings give a partner a new guard, but the same gate, resized: the calls in
    flight under the old settings still count, so re-saving a slow partner does not give it
    another share of the process's capacity (half of it), and another partner's call goes."""
    guards = PartnerGuards(share=2)
    receiver.respond_with(stall=True, times=2)
    first = guards.get("slow", GuardSettings(max_concurrency=1000, max_wait=0.3))
    calls = await _filled(small_sender, receiver, first, "slow", 2)
    second = guards.get("slow", GuardSettings(max_concurrency=999, max_wait=0.3))
    assert second is not first and second.concurrency == 2
    more = await small_sender.send(post(receiver.url("/slow")), partner_id="slow", guard=second)
    assert (more.error, more.sent) == ("rate_limited", False), more.message
    other = guards.get("other", GuardSettings(max_wait=0.3))
    answered = await small_sender.send(post(receiver.url()), partner_id="other", guard=other)
    receiver.release.set()
    await asyncio.gather(*calls)
    assert answered.status == 200, answered.message
    assert len(receiver.requests) == 3


async def test_calls_waiting_at_a_partners_gate_behind_our_full_capacity_are_held_as_ours(
    small_sender: Sender, receiver: Receiver
) -> None:
    """The capacity full (two slow partners), calls to partner P (`max_concurrency: 1`,
    nothing in flight to it) queue at P's gate behind one waiting for our capacity: each is
    the gateway's `overloaded`, never `rate_limited` "requests already in flight to P"."""
    guards = PartnerGuards(share=2)
    receiver.respond_with(stall=True, times=4)
    calls: list[asyncio.Task[Any]] = []
    for pid in ("s1", "s2"):
        guard = guards.get(pid, GuardSettings(max_concurrency=1000, max_wait=0.3))
        calls += await _filled(small_sender, receiver, guard, pid, 2)
    p = guards.get("p", GuardSettings(max_concurrency=1, max_wait=0.3))
    queued = []
    for _ in range(3):
        queued.append(
            asyncio.create_task(
                small_sender.send(post(receiver.url("/p")), partner_id="p", guard=p)
            )
        )
        await asyncio.sleep(0.02)
    outcomes = await asyncio.gather(*queued)
    receiver.release.set()
    await asyncio.gather(*calls)
    assert [(o.error, o.sent) for o in outcomes] == [("overloaded", False)] * 3, [
        o.message for o in outcomes
    ]
    assert all(o.hold is not None and o.hold.seconds == 5 for o in outcomes)
    assert len(receiver.requests) == 4


async def test_no_file_descriptor_left_is_the_gateways_own_hold_not_a_partner_failure(
    sender: Sender, receiver: Receiver
) -> None:
    """A connection this process cannot open for want of a file descriptor (its open-file
    limit reached) reached no partner: held as `overloaded`, like a full outbound capacity,
    never a `connect` failure counted against the partner (a breaker opening at 1 failure)."""
    guard = PartnerGuard.build(GuardSettings(breaker_threshold=1))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (0, hard))
    try:
        outcome = await sender.send(post(receiver.url()), partner_id="erp", guard=guard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (outcome.error, outcome.sent) == ("overloaded", False), outcome.message
    assert outcome.hold is not None and outcome.hold.seconds == 5
    assert "open-file limit" in (outcome.message or "")
    assert guard.breaker.state is BreakerState.CLOSED
    assert receiver.requests == []
    assert (await sender.send(post(receiver.url()), partner_id="erp", guard=guard)).status == 200


async def test_no_file_descriptor_at_the_token_fetch_is_the_same_five_second_hold(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    """An OAuth2 partner's call opens its first connection to fetch the token: out of file
    descriptors there, the call is held `overloaded` 5 s, as any other (not 1 s), and the
    token endpoint is not taken to have asked for a wait (the next call asks it)."""
    tokens, partner = await make_receiver(), await make_receiver()
    tokens.respond_with(json_body=token("t1"))
    auth = build_auth(oauth(tokens.url("/token")))
    guard = PartnerGuard.build(GuardSettings(breaker_threshold=1))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (0, hard))
    try:
        held = await sender.send(post(partner.url()), partner_id="erp", guard=guard, auth=auth)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (held.error, held.sent) == ("overloaded", False), held.message
    assert held.hold is not None and held.hold.seconds == 5
    assert guard.breaker.state is BreakerState.CLOSED
    sent = await sender.send(post(partner.url()), partner_id="erp", guard=guard, auth=auth)
    assert sent.status == 200
    assert len(tokens.requests) == 1


async def test_no_file_descriptor_to_resolve_a_host_name_is_the_gateways_own_hold(
    make_receiver: MakeReceiver,
) -> None:
    """Every real partner has a host name: out of file descriptors, its lookup fails first
    (glibc answers "Name or service not known": it cannot open /etc/hosts nor a socket).
    That is the gateway's `overloaded` hold too, not a `connect` failure of the partner."""
    receiver = await make_receiver()
    port = receiver.server.port  # type: ignore[union-attr]
    policy = OutboundPolicy.from_entries(["127.0.0.1", "localhost"])
    guard = PartnerGuard.build(GuardSettings(breaker_threshold=1))
    async with Sender(policy, connect_timeout=1) as sender:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (0, hard))
        try:
            held = await sender.send(
                post(f"http://localhost:{port}/hook"), partner_id="erp", guard=guard
            )
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert (held.error, held.sent) == ("overloaded", False), held.message
        assert held.hold is not None and held.hold.seconds == 5
        assert guard.breaker.state is BreakerState.CLOSED and receiver.requests == []
        sent = await sender.send(
            post(f"http://localhost:{port}/hook"), partner_id="erp", guard=guard
        )
        assert sent.status == 200, sent.message


def _name_server(monkeypatch: pytest.MonkeyPatch, slow: float = 3.0) -> None:
    """Names `slow*` take `slow` seconds and do not resolve (a name server that does not
    answer); `fast.test` resolves at once to 127.0.0.1."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.startswith("slow"):
            time.sleep(slow)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host == "fast.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


SLOW_NAMES = [f"slow{i}.tenant-a.test" for i in range(6)]
NAMES = OutboundPolicy.from_entries(["127.0.0.1", "fast.test", *SLOW_NAMES])


def _slow_calls(sender: Sender, port: int, names: list[str]) -> list[asyncio.Task[Any]]:
    return [
        asyncio.create_task(
            sender.send(
                OutboundRequest("GET", f"http://{name}:{port}/", timeout=10),
                partner_id=name,
                guard=PartnerGuard.build(GuardSettings()),
            )
        )
        for name in names
    ]


async def test_another_tenants_slow_names_do_not_make_a_healthy_partner_time_out(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tenant A's partners' names resolve slowly (as many as the loop's default executor
    has threads): tenant B's partner, whose name resolves at once, answers within its 2 s
    (its lookup waited behind theirs, inside its timeout, and it was blamed: `timeout`)."""
    _name_server(monkeypatch)
    port = receiver.server.port  # type: ignore[union-attr]
    async with Sender(NAMES) as sender:
        slow = _slow_calls(sender, port, SLOW_NAMES)
        await asyncio.sleep(0.2)
        guard = PartnerGuard.build(GuardSettings(breaker_threshold=1))
        fast = OutboundRequest("GET", f"http://fast.test:{port}/", timeout=2)
        outcome = await sender.send(fast, partner_id="b", guard=guard)
        failed = await asyncio.gather(*slow)
    assert outcome.status == 200, outcome.message
    # A slow name is its own partner's failure, within its timeout: `connect`, sent.
    assert {(o.error, o.sent) for o in failed} == {("connect", True)}, [o.message for o in failed]


async def test_every_resolver_thread_taken_is_the_gateways_overloaded_not_a_partner_timeout(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process's resolver threads all taken by slow names, a healthy partner's lookup
    waits for one no longer than its wait for our resources (`max_wait`), before its timeout
    starts: held `overloaded`, its breaker untouched, never `timeout`."""
    _name_server(monkeypatch)
    port = receiver.server.port  # type: ignore[union-attr]
    async with Sender(NAMES, resolver_threads=2) as sender:
        slow = _slow_calls(sender, port, SLOW_NAMES[:2])
        await asyncio.sleep(0.2)
        guard = PartnerGuard.build(GuardSettings(breaker_threshold=1, max_wait=0.5))
        fast = OutboundRequest("GET", f"http://fast.test:{port}/", timeout=2)
        started = time.monotonic()
        held = await sender.send(fast, partner_id="b", guard=guard)
        took = time.monotonic() - started
        await asyncio.gather(*slow)
        assert (held.error, held.sent) == ("overloaded", False), held.message
        assert "name lookups" in (held.message or "") and took < 1.5
        assert guard.breaker.state is BreakerState.CLOSED and receiver.requests == []
        assert (await sender.send(fast, partner_id="b", guard=guard)).status == 200


def _answers(monkeypatch: pytest.MonkeyPatch, table: dict[str, Any]) -> list[str]:
    """getaddrinfo answers from `table`: name -> (delay, address | exception | callable
    giving one); the names asked are listed in the order asked."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host in table:
            asked.append(host)
            delay, answer = table[host]
            if callable(answer):
                answer = answer()
            time.sleep(delay)
            if isinstance(answer, BaseException):
                raise answer
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer, int(port)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize("host", ["a" * 64 + ".example.com", "api..example.com"])
async def test_a_host_name_no_lookup_can_encode_is_the_partners_connect_failure(
    host: str,
) -> None:
    """A label over 63 characters or an empty one (a typo): Python's getaddrinfo raises
    UnicodeError encoding it. That is the partner's `connect` failure naming the host, an
    outcome like any other, never an exception out of `send`."""
    guard = PartnerGuard.build(GuardSettings(breaker_threshold=1))
    async with Sender(OutboundPolicy(), connect_timeout=1) as sender:
        out = await sender.send(post(f"https://{host}/h", timeout=2), partner_id="p", guard=guard)
    assert (out.status, out.error) == (None, "connect"), out
    assert "not a valid host name" in (out.message or ""), out.message
    assert guard.breaker.state is BreakerState.OPEN


async def test_a_short_timeout_partner_leaves_the_lookup_to_others_on_the_same_host(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two partners (two tenants) on one host name, its name server slow (2 s). Partner A
    (timeout 0.5 s) gives up on the lookup: its own `connect` failure. Partner B (timeout
    10 s), calling meanwhile, waits for that same lookup, which answers within its timeout."""
    asked = _answers(monkeypatch, {"shared.test": (2.0, "127.0.0.1")})
    port = receiver.server.port  # type: ignore[union-attr]
    policy = OutboundPolicy.from_entries(["shared.test"])
    guard_b = PartnerGuard.build(GuardSettings(breaker_threshold=1))
    async with Sender(policy, connect_timeout=1) as sender:
        a = asyncio.create_task(
            sender.send(
                post(f"http://shared.test:{port}/a", timeout=0.5),
                partner_id="a",
                guard=PartnerGuard.build(GuardSettings()),
            )
        )
        await asyncio.sleep(0.8)  # A gave up; the lookup is still under way
        b = await sender.send(
            post(f"http://shared.test:{port}/b", timeout=10), partner_id="b", guard=guard_b
        )
        gave_up = await a
    assert b.status == 200, (b.error, b.message, guard_b.breaker.state)
    assert (gave_up.error, gave_up.sent) == ("connect", True), gave_up.message
    assert "0.5 s" in (gave_up.message or "") and asked == ["shared.test"]


async def test_a_transient_lookup_failure_is_not_replayed_to_the_next_calls(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One EAI_AGAIN ("Temporary failure in name resolution") fails that call only: the next
    call asks the name server again and is sent."""
    failures = iter([socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")])
    asked = _answers(monkeypatch, {"flaky.test": (0, lambda: next(failures, "127.0.0.1"))})
    port = receiver.server.port  # type: ignore[union-attr]
    guard = PartnerGuard.build(GuardSettings())
    async with Sender(OutboundPolicy.from_entries(["flaky.test"]), connect_timeout=1) as sender:
        outs = [
            await sender.send(
                post(f"http://flaky.test:{port}/h", timeout=5), partner_id="p", guard=guard
            )
            for _ in range(3)
        ]
    assert [o.error for o in outs] == ["connect", None, None], [o.message for o in outs]
    assert asked == ["flaky.test", "flaky.test"]  # the answer is kept, the failure not


@pytest.mark.parametrize("timeout", [0.5, 2.0])
async def test_resolver_threads_taken_hold_a_partner_overloaded_whatever_its_timeout(
    timeout: float, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every resolver thread taken, a partner whose timeout is its max_wait (any timeout of
    5 s or less) is held `overloaded` too, never blamed; once threads are free its calls go."""
    _name_server(monkeypatch)
    port = receiver.server.port  # type: ignore[union-attr]
    async with Sender(NAMES, resolver_threads=2) as sender:
        slow = _slow_calls(sender, port, SLOW_NAMES[:2])
        await asyncio.sleep(0.2)
        guard = PartnerGuard.build(GuardSettings(breaker_threshold=1, max_wait=timeout))
        fast = OutboundRequest("GET", f"http://fast.test:{port}/", timeout=timeout)
        held = await sender.send(fast, partner_id="b", guard=guard)
        await asyncio.gather(*slow)
        after = await sender.send(fast, partner_id="b", guard=guard)
    assert (held.error, held.sent) == ("overloaded", False), held.message
    assert guard.breaker.state is BreakerState.CLOSED
    assert after.status == 200, after.message


async def test_calls_queued_behind_a_lookup_waiting_for_a_resolver_thread_are_held_overloaded(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every resolver thread taken, a partner's gate place is held by a call waiting for a
    thread: a call queued at that gate and giving up is held `overloaded` too (the wait is
    ours), never `rate_limited` "1 requests already in flight" (none is)."""
    _name_server(monkeypatch)
    port = receiver.server.port  # type: ignore[union-attr]
    async with Sender(NAMES, resolver_threads=2) as sender:
        slow = _slow_calls(sender, port, SLOW_NAMES[:2])
        await asyncio.sleep(0.2)
        guard = PartnerGuard.build(GuardSettings(max_concurrency=1, max_wait=0.5))
        fast = OutboundRequest("GET", f"http://fast.test:{port}/", timeout=2)
        first = [asyncio.create_task(sender.send(fast, partner_id="b", guard=guard)) for _ in "12"]
        await asyncio.sleep(0.3)
        third = await sender.send(fast, partner_id="b", guard=guard)  # gives up at 0.8 s
        outs = [*await asyncio.gather(*first), third]
        await asyncio.gather(*slow)
    assert [(o.error, o.sent) for o in outs] == [("overloaded", False)] * 3, [
        o.message for o in outs
    ]


async def test_a_new_connection_follows_a_host_names_new_address_once_its_answer_expires(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resolver keeps an answer `_FRESH` seconds, and the connector none of its own: a
    partner's name moving to another address is followed by its next new connection once
    the kept answer expired (not up to twice as long)."""
    monkeypatch.setattr(resolver_module, "_FRESH", 0.3)
    addresses = iter(["127.0.0.1"])
    asked = _answers(monkeypatch, {"moving.test": (0, lambda: next(addresses, "127.0.0.2"))})
    port = receiver.server.port  # type: ignore[union-attr]
    policy = OutboundPolicy.from_entries(["moving.test", "127.0.0.0/8"])
    receiver.respond_with(200, headers={"Connection": "close"})  # each call a new connection
    async with Sender(policy, connect_timeout=1) as sender:
        first = await sender.send(post(f"http://moving.test:{port}/h"), partner_id="p")
        await asyncio.sleep(0.5)
        moved = await sender.send(post(f"http://moving.test:{port}/h"), partner_id="p")
    assert first.status == 200, first.message
    assert asked == ["moving.test", "moving.test"]
    # Nothing listens on 127.0.0.2 at that port: the new address was the one tried.
    assert (moved.status, moved.error) == (None, "connect"), (moved.status, moved.message)


async def test_a_lookup_started_without_a_file_descriptor_is_the_gateways_hold(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process at its open-file limit when a lookup starts, one descriptor freed by the
    time the lookup failed ("Name or service not known"): still the gateway's `overloaded`
    hold, not the partner's `connect` failure."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))  # freed meanwhile
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    port = receiver.server.port  # type: ignore[union-attr]
    guard = PartnerGuard.build(GuardSettings(breaker_threshold=1))
    async with Sender(OutboundPolicy.from_entries(["crowded.test"]), connect_timeout=1) as sender:
        resource.setrlimit(resource.RLIMIT_NOFILE, (0, hard))
        try:
            held = await sender.send(
                post(f"http://crowded.test:{port}/hook"), partner_id="erp", guard=guard
            )
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (held.error, held.sent) == ("overloaded", False), held.message
    assert guard.breaker.state is BreakerState.CLOSED


# URLs.


def test_build_url_encodes_params_and_query() -> None:
    url = build_url(
        "https://erp.example.com/api/v2/",
        "/vehicles/{plate}/fines/{ait}",
        {"plate": "ABC1D23", "ait": "A 12/34?x#y%"},
        {"since": "2026-03-01T00:00:00-03:00", "paid": False, "skip": None},
    )
    assert url == (
        "https://erp.example.com/api/v2/vehicles/ABC1D23/fines/A%2012%2F34%3Fx%23y%25"
        "?since=2026-03-01T00%3A00%3A00-03%3A00&paid=false"
    )


def test_path_values_are_written_as_a_request_mapping_writes_them() -> None:
    """A path parameter filled without a mapping (from the entity's fields, a proxy call's
    payload) was Python's `str()`: `/True`, `/4711.0`, while the query of the same call said
    `true`. Both say what a request mapping writes."""
    url = build_url(
        "https://erp.example.com",
        "/veiculos/{id}/refrigerado/{r}/{f}",
        {"id": 4711.0, "r": True, "f": False},
        [("ativo", True), ("id", 4711.0), ("km", 12.5)],
    )
    assert url == (
        "https://erp.example.com/veiculos/4711/refrigerado/true/false?ativo=true&id=4711&km=12.5"
    )


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], []], ids=["object", "array", "empty-array"])
def test_an_object_or_array_path_value_is_refused_not_written_as_python(value: Any) -> None:
    """`{'a': 1}` went to the partner as `%7B%27a%27%3A%201%7D`, Python's repr: no segment
    a partner reads. It is refused, as a request mapping refuses it."""
    with pytest.raises(InvalidPayload) as caught:
        build_url("https://erp.example.com", "/v/{x}", {"x": value})
    [problem] = caught.value.problems
    assert (problem.pointer, problem.keyword) == ("/path/x", "type")
    kind = "an object" if isinstance(value, dict) else "an array"
    assert problem.message == f"path parameter x is {kind}, not text for one segment"


@pytest.mark.parametrize("value", ["..", ".", ""])
def test_path_params_cannot_escape_their_segment(value: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        build_url("https://erp.example.com/api", "/drivers/{id}", {"id": value})
    assert caught.value.problems[0].pointer == "/path/id"


async def test_a_slash_in_a_param_stays_in_one_segment(sender: Sender, receiver: Receiver) -> None:
    url = build_url(receiver.url("/api"), "/drivers/{id}/fines", {"id": "x/..a/b./.x"})
    await sender.send(OutboundRequest("GET", url, timeout=2), partner_id="hr")
    [seen] = receiver.requests
    assert seen.path == "/api/drivers/x/..a/b./.x/fines"  # decoded by the server: one segment
    assert url.endswith("/api/drivers/x%2F..a%2Fb.%2F.x/fines")


async def test_the_partner_gets_the_url_encoded_as_the_gateway_wrote_it(
    sender: Sender, receiver: Receiver
) -> None:
    base = receiver.url("/v2") + "/x%3By/./z/.."
    url = build_url(base, "/ids/{id}", {"id": "k=v;w,é"}, [("f", "a,b")])
    request = OutboundRequest("GET", f"{url}&raw=%3D%2C%3b", query=[("q", "1;2")], timeout=2)

    outcome = await sender.send(request, partner_id="hr")

    assert outcome.status == 200
    # Escapes kept (lowercase too), dot segments resolved, the added query encoded as before.
    assert receiver.requests[0].raw_path == (
        "/v2/x%3By/ids/k%3Dv%3Bw%2C%C3%A9?f=a%2Cb&raw=%3D%2C%3b&q=1%3B2"
    )


def test_a_url_with_an_encoded_host_is_checked_by_the_host_it_names() -> None:
    with pytest.raises(OutboundBlocked):
        OutboundPolicy().check_url("http://127.0.0.1/a%3Bb")
    assert OutboundPolicy().check_url("http://EXAMPLE.com/a%3Bb").raw_host == "example.com"


def test_build_url_reports_missing_params_and_bad_templates() -> None:
    with pytest.raises(InvalidPayload) as caught:
        build_url("https://x.example", "/a/{missing}/{0}", {})
    assert {p.pointer for p in caught.value.problems} == {"/path/missing", "/path"}
    assert build_url("https://x.example/base?k=1", "", {}, [("q", 2)]) == (
        "https://x.example/base?k=1&q=2"
    )


def test_no_auth_is_the_default() -> None:
    assert NO_AUTH.refreshable is False


@pytest.mark.parametrize(
    ("reply", "status", "verdict"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\nnull", 204, Verdict.SUCCESS),
        (
            b"HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4\r\n\r\nnull",
            204,
            Verdict.SUCCESS,
        ),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\nnull", 304, Verdict.FAIL),
        (b"HTTP/1.1 204 No Content\nContent-Length: 4\n\nnull", 204, Verdict.SUCCESS),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nnull",
            204,
            Verdict.SUCCESS,
        ),
    ],
    ids=["204", "204-with-length", "304", "204-bare-lf-head", "100-then-204"],
)
async def test_a_body_on_a_204_or_304_is_ignored_and_the_status_kept(
    sender: Sender, reply: bytes, status: int, verdict: Verdict
) -> None:
    """FastAPI before 0.79 wrote `null` after a 204: aiohttp's C parser refused the whole
    answer, its status lost, and a partner that took the request got it again. An answer of
    such a status ends with its head (gateway/outbound/connection.py): the stray bytes are
    not read, the status decides."""
    async with raw_partner(reply) as url:
        outcome = await sender.send(post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (status, None, verdict)
    assert outcome.body_excerpt == "" and not outcome.readable
    if b"Content-Length: 4" in reply and status == 204:
        assert outcome.message == "a 204 announcing a 4-byte body; the body was not read"


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Set-Cookie: ASP.NET_SessionId=" + b"a" * 9000 + b"; path=/; HttpOnly\r\n"
            b"Content-Length: 2\r\n\r\n{}",
            200,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + b"".join(b"X-Trace-%d: v\r\n" % i for i in range(200))
            + b"Content-Length: 2\r\n\r\n{}",
            200,
        ),
        (
            b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Type: application/json\r\n"
            b"Content-Security-Policy: " + b"a" * 60_000 + b"\r\nContent-Length: 2\r\n\r\n{}",
            503,
        ),
    ],
    ids=["9-kb-cookie", "200-fields", "60-kb-field-on-a-503"],
)
async def test_an_answer_with_large_headers_keeps_its_status(
    sender: Sender, reply: bytes, status: int
) -> None:
    """A large session cookie, a long Content-Security-Policy, a CDN's tracing headers: a
    head aiohttp's defaults refused whole (8,190 bytes a field, 128 fields), its status lost
    (a 200 the partner took sent again, a 503's Retry-After unheard)."""
    async with raw_partner(reply) as url:
        outcome = await sender.send(post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.json_body) == (status, None, {})
    if status == 503:
        assert outcome.retry_after(datetime.now(UTC)) == 7


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (
            b"HTTP/1.1 200 OK\r\nSet-Cookie: s=SESSION-SECRET" + b"a" * 70_000 + b"\r\n\r\n",
            "a status line or header field longer than 65536 bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\n"
            + b"".join(b"X-Part-%d: SESSION-SECRET%s\r\n" % (i, b"b" * 6000) for i in range(50))
            + b"Content-Length: 2\r\n\r\n{}",
            "a head longer than 262144 bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nSet-Cookie: s=SESSION-SECRET\x00\r\nContent-Length: 2\r\n\r\n{}",
            "Invalid HTTP header",
        ),
        (
            b"HTTP/1.1 200 OK\r\nSet Cookie: s=SESSION-SECRET\r\nContent-Length: 2\r\n\r\n{}",
            "Invalid header token",
        ),
    ],
    ids=["field-past-64-kib", "head-past-256-kib", "nul-in-a-value", "space-in-a-name"],
)
async def test_a_refused_head_is_described_without_quoting_its_values(
    sender: Sender, reply: bytes, said: str
) -> None:
    """aiohttp's parser quotes the line it refused (a partner's session cookie, a token):
    no redactor knows those values, so the message names what was wrong and quotes none of
    the head. The status line was read: the status stands (docs/outbound.md)."""
    async with raw_partner(reply) as url:
        outcome = await sender.send(post(url), partner_id="erp")
    assert (outcome.status, outcome.error) == (200, "invalid_response")
    assert outcome.message == f"invalid HTTP answer: {said}"
    assert "SESSION-SECRET" not in repr(outcome)


async def test_a_body_on_the_answer_to_a_head_is_ignored_and_the_status_kept(
    sender: Sender,
) -> None:
    """A server writing the GET's body on a HEAD's answer (a disabled partner's probe is a
    HEAD): in the same packet as the head, aiohttp's C parser refused the whole answer, the
    probe's status lost and the partner never enabled again. It ends with its head."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
    async with raw_partner(reply + b'{"ok":true}') as url:
        outcome = await sender.send(OutboundRequest("HEAD", url, timeout=2), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (200, None, Verdict.SUCCESS)
    assert (outcome.body_excerpt, outcome.message) == ("", None)


NOT_CHUNKED = "Invalid character in chunk size"
CHUNKED = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("reply", "status", "verdict", "said"),
    [
        ([CHUNKED % 200 + b'{"ok":true}'], 200, Verdict.SUCCESS, NOT_CHUNKED),
        (
            [CHUNKED % 400 + b'{"erro":"placa"}'],
            400,
            Verdict.FAIL,
            "Invalid character in chunk size",
        ),
        ([CHUNKED % 200 + b"2\n{}\n0\n\n"], 200, Verdict.SUCCESS, "Expected LF after chunk size"),
        ([CHUNKED % 200, b'{"ok":true}'], 200, Verdict.SUCCESS, NOT_CHUNKED),
        ([CHUNKED % 503, b"2\n{}\n0\n\n"], 503, Verdict.RETRY, "Expected LF after chunk size"),
        (
            [CHUNKED % 200 + b"2\r\n{}\r\n0\r\nX-Trace: " + b"a" * 70_000 + b"\r\n\r\n"],
            200,
            Verdict.SUCCESS,
            "a status line or header field longer than 65536 bytes",
        ),
    ],
    ids=[
        "not-chunked",
        "not-chunked-400",
        "bare-lf-chunk-lines",
        "not-chunked-in-a-later-packet",
        "bare-lf-chunk-lines-in-a-later-packet-503",
        "trailer-past-64-kib",
    ],
)
async def test_an_answer_whose_chunked_body_is_malformed_keeps_its_status_at_once(
    sender: Sender, reply: list[bytes], status: int, verdict: Verdict, said: str
) -> None:
    """`Transfer-Encoding: chunked` on a body that is not chunked (an app or proxy copying its
    upstream's header), chunk lines ending in a bare LF (small embedded stacks): aiohttp's C
    parser refused the packet holding the head whole, the status lost (a 200 the partner
    took sent again on the whole schedule, a 400 retried); in a later packet, the body's read
    never ended, the call a `timeout` after the partner's whole timeout. The status decides,
    `invalid_response` describes the body, and the call ends at once."""
    started = time.monotonic()
    async with raw_partner(reply) as url:
        outcome = await sender.send(post(url, timeout=5), partner_id="erp")
    assert time.monotonic() - started < 2
    assert (outcome.status, outcome.error, outcome.verdict) == (status, "invalid_response", verdict)
    assert outcome.message == f"invalid HTTP answer body: {said}"
    assert not outcome.readable


@pytest.mark.parametrize("status", [200, 400])
async def test_a_body_longer_than_its_content_length_keeps_its_status(
    sender: Sender, status: int
) -> None:
    """Bytes after a complete answer in the packet of its head: aiohttp's C parser refused
    the whole packet ("Bad status line"), the status lost, a delivery the partner took sent
    again. The head reaches the parser alone: the answer ends where its head says."""
    head = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
    async with raw_partner(head % status + b'{}{"ok":true}') as url:
        outcome = await sender.send(post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.json_body) == (status, None, {})


BARE_LF_CSV = b"HTTP/1.0 200 OK\nContent-Type: text/csv\n\n"
BARE_LF_JSON = b"HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: %d\n\n"


@pytest.mark.parametrize("kind", ["json-with-a-length", "close-delimited-text"])
async def test_an_answer_whose_head_lines_end_in_a_bare_lf_is_read_whole(kind: str) -> None:
    """A head of bare-LF line ends (hand-written servers, small embedded stacks), which
    aiohttp's parser reads: the sender looked for its end as CRLF CRLF only, kept reading
    the body as head and refused it past 256 KiB, mid-body; a close-delimited body was then
    cut and read as complete. The head ends where the parser says, the body is read whole."""
    if kind == "json-with-a-length":
        body = orjson.dumps([{"placa": f"ABC{n:04d}", "km": n} for n in range(11_000)])
        head = BARE_LF_JSON % len(body)
    else:
        body = b"".join(b"ABC%04d;%d\n" % (n, n * 7) for n in range(26_000))
        head = BARE_LF_CSV
    assert 300_000 < len(body) < 1024 * 1024
    parts = [head] + [body[at : at + 60_000] for at in range(0, len(body), 60_000)]
    async with Sender(LOCAL) as sender, raw_partner(parts) as url:
        outcome = await sender.send(post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.body_cut) == (200, None, True)
    if kind == "json-with-a-length":
        assert outcome.json_body == orjson.loads(body)
    else:
        assert outcome.other_body is not None and outcome.other_body.body == body


async def test_a_204_body_that_comes_after_the_next_request_is_skipped(sender: Sender) -> None:
    """A 204 that announces nothing keeps its connection for the next request; when its
    stray body comes only after that request went, it is skipped before the next answer's
    status line, and both requests are answered with their status."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            await reader.readexactly(len(post("x").body or b""))
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
            heads.append(await reader.readuntil(b"\r\n\r\n"))  # the next request came
            writer.write(b"null\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # the client's connection went
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    try:
        first = await sender.send(post(url), partner_id="erp")
        second = await sender.send(post(url), partner_id="erp")
    finally:
        server.close()
        await server.wait_closed()
    assert (first.status, first.verdict) == (204, Verdict.SUCCESS)
    assert (second.status, second.error, second.json_body) == (200, None, {})
    assert len(heads) == 2  # one connection, both requests on it


async def test_a_reset_on_a_reused_connection_names_no_url(sender: Sender) -> None:
    """A partner closing a kept-alive connection right after its answer (a keep-alive race):
    the next request on it failed with aiohttp's "Can not write request body for <URL>", and
    the message (a proxy's 502, a delivery's last_error, the log) carried the URL, its query
    (a key, a driver's CPF) included."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    path = "/hooks/cpf-52998224725?driver=cpf-52998224725-token-abc"
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}{path}"
    try:
        outcomes = [await sender.send(post(url), partner_id="erp") for _ in range(6)]
    finally:
        server.close()
        await server.wait_closed()
    resets = [o for o in outcomes if o.error == "reset" and o.status is None]
    assert resets, [(o.status, o.error, o.message) for o in outcomes]
    for outcome in resets:
        assert outcome.message is not None and "connection lost" in outcome.message
        assert "cpf-52998224725" not in outcome.message, outcome.message
        assert "127.0.0.1" not in outcome.message, outcome.message


# What a partner writes is decoded into text any store and any JSON can carry, and an answer
# the gateway could not write again is an answer with its status, never an exception.


def _cut_in_a_character(text: str, codec: str, at: int) -> bytes:
    """`text` encoded, its `at`-th byte inside a character of four bytes (an emoji)."""
    body = text.encode(codec)
    emoji = body.index("\U0001f600".encode(codec))
    assert emoji < at < emoji + 4
    return body


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-32-le"])
async def test_a_wide_answer_without_byte_order_mark_cut_in_a_character_keeps_its_status(
    sender: Sender, codec: str
) -> None:
    """.NET writes UTF-16 without a byte order mark: an excerpt (1 KiB here) or a body cut
    inside a character made Python's incremental decoder raise ("UTF-16 stream does not
    start with BOM", a ValueError): the outcome was `blocked`, `request not sendable`, its
    503 lost and the delivery failed at once."""
    width = 2 if codec == "utf-16-le" else 4
    text = '{"msg": "' + "a" * (1022 // width - 9) + "\U0001f600" + "b" * 600 + '"}'
    body = _cut_in_a_character(text, codec, 1023)
    charset = codec.removesuffix("-le")
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"Content-Type: application/json; charset={charset}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    # Cut short by the partner at an odd byte; and for UTF-16, whole, its excerpt cut.
    for reply in (head + body[:1023], *((head + body,) if width == 2 else ())):
        async with raw_partner(reply) as url:
            outcome = await sender.send(post(url), partner_id="erp")
        assert (outcome.status, outcome.verdict) == (503, Verdict.RETRY), outcome.message
        assert outcome.error != "blocked" and outcome.body_cut
        assert outcome.body_excerpt.startswith('{"msg": "aaa')
        assert outcome.body_excerpt.endswith("a")  # the cut character held back


async def test_an_xml_answer_declaring_utf16_in_ascii_bytes_is_read_as_its_bytes(
    sender: Sender,
) -> None:
    """.NET's StringWriter declares `utf-16` on what it writes as UTF-8: cut short, the
    excerpt's decoding raised and the answer's 500 was lost as `blocked`."""
    body = b'<?xml version="1.0" encoding="utf-16"?><erro>fora do ar</erro>'
    reply = (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/xml\r\n"
        b"Content-Length: 9999\r\nConnection: close\r\n\r\n" + body
    )
    async with raw_partner(reply) as url:
        outcome = await sender.send(post(url), partner_id="erp")
    assert (outcome.status, outcome.verdict) == (500, Verdict.RETRY)
    assert outcome.body_excerpt == body.decode()


async def test_a_utf7_answer_decoding_to_a_lone_surrogate_is_storable_text(
    sender: Sender, receiver: Receiver
) -> None:
    """UTF-7's `+2AA-` is U+D800 alone, even read leniently: no UTF-8 (BSON, orjson) can
    carry it, and the delivery recording the answer was parked."""
    receiver.respond_with(503, b"erro +2AA- tente depois", headers=UTF7)
    outcome = await sender.send(post(receiver.url()), partner_id="erp")
    assert outcome.status == 503
    assert outcome.body_excerpt == "erro \ufffd tente depois"
    bson.encode({"response": outcome.body_excerpt})
    orjson.dumps(outcome.body_excerpt)


UTF7 = {"Content-Type": "text/plain; charset=utf-7"}


async def test_a_redirect_whose_location_is_not_utf8_is_described_in_storable_text(
    sender: Sender,
) -> None:
    """An old server's Latin-1 `Location` came from aiohttp as surrogates (surrogateescape)
    into the outcome's message: the delivery was parked, the proxy answered a bare 500."""
    reply = (
        b"HTTP/1.1 302 Found\r\nLocation: http://erp.example.com/relat\xf3rio\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    async with raw_partner(reply) as url:
        outcome = await sender.send(post(url), partner_id="erp")
    assert (outcome.status, outcome.verdict) == (302, Verdict.FAIL)
    assert outcome.headers["Location"] == "http://erp.example.com/relat\ufffdrio"
    assert outcome.message is not None
    assert outcome.message.startswith("redirected to http://erp.example.com/relat\ufffdrio;")
    bson.encode({"message": outcome.message, "headers": dict(outcome.headers)})


async def test_json_nested_deeper_than_the_gateway_writes_is_an_unusable_body(
    sender: Sender, receiver: Receiver
) -> None:
    """orjson reads 1,024 levels and writes 254: an answer read at 300 levels made the proxy
    answer 500 and the action's `error` expression park the delivery. Past ANSWER_DEPTH the
    status is kept and the body is unusable; at it the answer is read and can be written."""
    receiver.respond_with(json_body=nested(ANSWER_DEPTH))
    outcome = await sender.send(post(receiver.url()), partner_id="erp")
    assert outcome.is_json and outcome.error is None
    orjson.dumps({"steps": {"fetch": {"data": outcome.json_body}}})

    receiver.respond_with(json_body=nested(ANSWER_DEPTH + 1))
    outcome = await sender.send(post(receiver.url()), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.json_body) == (200, "invalid_response", None)
    assert outcome.message == (
        f"body is JSON nested deeper than {ANSWER_DEPTH} levels, which is not read"
    )


def nested(levels: int) -> Any:
    value: Any = "bad"
    for _ in range(levels):
        value = [value]
    return value


async def test_a_token_holding_a_line_break_is_a_garbled_answer_never_cached(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    """`base64.encodebytes` ends a token with "\\n": it was cached, and every call for its
    lifetime was refused by the HTTP client as a header injection (`blocked`: failed)."""
    partner, idp = await make_receiver(), await make_receiver()
    idp.respond_with(json_body=token("dG9rZW4tZm9yLXRoZS1wYXJ0bmVy\n"))
    auth = build_auth(oauth(idp.url("/token")))
    for _ in range(2):
        outcome = await sender.send(post(partner.url()), partner_id="hr", auth=auth)
        assert (outcome.error, outcome.verdict) == ("auth_failed", Verdict.RETRY)
        assert outcome.message is not None and "control character" in outcome.message
    assert len(idp.requests) == 2 and partner.requests == []


async def test_a_token_url_that_redirects_is_refused_naming_where_it_points(
    sender: Sender, make_receiver: MakeReceiver
) -> None:
    """token_url written http:// for an https:// endpoint was retried for 27 h as
    `token endpoint answered 301`, never saying where it pointed. It is a configuration
    error: refused at once, naming the Location (its query left out)."""
    partner, idp = await make_receiver(), await make_receiver()
    target = "https://idp.example.com/oauth/token?client_secret=leak"
    idp.respond_with(301, headers={"Location": target})
    outcome = await sender.send(
        post(partner.url()), partner_id="hr", auth=build_auth(oauth(idp.url("/token")))
    )
    assert (outcome.error, outcome.verdict) == ("auth_refused", Verdict.FAIL)
    assert outcome.message == (
        "token endpoint answered 301 redirecting to https://idp.example.com/oauth/token?…; "
        "redirects are not followed: set the partner's token_url to where it points"
    )
    assert len(idp.requests) == 1 and partner.requests == []


async def test_an_answer_that_cannot_be_read_is_still_an_answer_with_its_status(
    sender: Sender, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ValueError raised while an answer was read (as UTF-16's decoder did) was taken for
    a request that could not be sent: `blocked`, the partner's status lost. Whatever fails
    in reading an answer, the answer's status decides."""

    def unreadable(*args: Any) -> Any:
        raise ValueError("no reader for this")

    monkeypatch.setattr(sender_module, "_parse_json", unreadable)
    receiver.respond_with(503, json_body={"erro": "fora do ar"})
    outcome = await sender.send(post(receiver.url()), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (
        503,
        "invalid_response",
        Verdict.RETRY,
    )
    assert outcome.message == "the answer could not be read: ValueError: no reader for this"


async def test_a_timeout_is_unanswered_only_once_the_request_went_out() -> None:
    """A partner that took the request and never answered: the outcome is unknown
    (`unanswered`). A request that never connected is not, whichever timer fired: the
    partner's total timeout (at or under the 5 s connect timeout, or what an OAuth token
    fetch left of it) firing while it connects is a plain TimeoutError, not aiohttp's
    ConnectionTimeoutError, and was taken for an unanswered one (a push or SMS counted as
    sent for its cooldown, though nothing left)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    full = listener.getsockname()[1]
    queued = socket.create_connection(("127.0.0.1", full))  # the accept queue is full

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    quiet = server.sockets[0].getsockname()[1]
    try:
        async with Sender(LOCAL, connect_timeout=5) as sender:
            outcomes = [
                await sender.send(
                    OutboundRequest("POST", f"http://127.0.0.1:{port}/sms", body=b"{}", timeout=1),
                    partner_id="sms",
                )
                for port in (full, quiet)
            ]
    finally:
        server.close()
        queued.close()
        listener.close()
    never_connected, unanswered = outcomes
    assert never_connected.error == "timeout" and not never_connected.unanswered, never_connected
    assert unanswered.error == "timeout" and unanswered.unanswered, unanswered
