"""A local partner for action tests: it records every request, answers what a test tells it
(changed mid-way: `respond_with(500, times=1)` then the standing 200), can stall, be slow, send
garbage or drop the connection mid-answer, and notices two concurrent requests carrying the
same webhook-id. Plus helpers to register a partner, an action and a subscription."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.outbound.sender import OutboundRequest, Sender
from gateway.outbound.ssrf import OutboundPolicy
from tests.support import auth

Client = TestClient[Any, Any]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float
    peer: tuple[str, int] | None = None  # the caller's address and port: its connection
    raw_path: str = ""  # the path and query as they came on the wire, still percent-encoded

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")


def signed_by(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether any `v1` Standard Webhooks signature of a request is the secret's (a
    receiver's own check: HMAC over "id.timestamp.body", checked against the published vector
    by tests/test_flow_call_signatures.py)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.digest(key, signed, hashlib.sha256)).decode()
    return any(
        version == "v1" and hmac.compare_digest(value, expected)
        for version, _, value in (s.partition(",") for s in headers["webhook-signature"].split())
    )


def signed_through_rotation(old: str, new: str, during: Any, after: Any) -> None:
    """A request sent within a day of a rotation from `old` to `new` carries both secrets'
    signatures, one sent after it the new one's alone (`during`, `after`: requests with
    `headers` and `body`)."""
    assert len(during.headers["webhook-signature"].split()) == 2
    assert signed_by(old, during.headers, during.body)
    assert signed_by(new, during.headers, during.body)
    assert len(after.headers["webhook-signature"].split()) == 1
    assert signed_by(new, after.headers, after.body)
    assert not signed_by(old, after.headers, after.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0
    reset: bool = False  # drop the connection before answering
    cut: bool = False  # send the headers and part of the body, then drop the connection


class Partner:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.in_flight: Counter[str] = Counter()
        self.overlaps: list[str] = []  # webhook-ids seen twice at the same time
        self.release = asyncio.Event()  # ends every pending delay (set at teardown)
        self._standing = Answer()
        self._queued: deque[Answer] = deque()
        self._rejected: dict[bytes, int] = {}  # a request whose body holds it → that status
        self._arrivals = asyncio.Condition()
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def respond_with(
        self,
        status: int = 200,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        times: int | None = None,
        delay: float = 0.0,
        reset: bool = False,
        cut: bool = False,
    ) -> None:
        """The answer for the next `times` requests, or from now on when `times` is None."""
        data = raw if raw is not None else orjson.dumps(body if body is not None else {})
        answer = Answer(
            status, data, {"Content-Type": "application/json", **(headers or {})}, delay, reset, cut
        )
        if times is None:
            self._queued.clear()
            self._standing = answer
        else:
            self._queued.extend([answer] * times)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Until `count` requests arrived (a condition, not a sleep)."""
        async with self._arrivals:
            await asyncio.wait_for(
                self._arrivals.wait_for(lambda: len(self.requests) >= count), timeout
            )

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until no request is being answered (e.g. those of a killed worker finished)."""
        async with self._arrivals:
            await asyncio.wait_for(
                self._arrivals.wait_for(lambda: not any(self.in_flight.values())), timeout
            )

    def reject_bodies_with(self, marker: bytes, status: int) -> None:
        """Every request whose body holds `marker` is answered `status` (a payload that
        crashes the partner's handler), whatever the other answers are."""
        self._rejected[marker] = status

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorded = Recorded(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            body,
            time.monotonic(),
            request.transport.get_extra_info("peername") if request.transport else None,
            request.raw_path,
        )
        hook = recorded.webhook_id
        if hook is not None:
            if self.in_flight[hook]:
                self.overlaps.append(hook)
            self.in_flight[hook] += 1
        try:
            async with self._arrivals:
                self.requests.append(recorded)
                self._arrivals.notify_all()
            if rejected := [code for marker, code in self._rejected.items() if marker in body]:
                return web.Response(status=rejected[0], body=b"{}")
            answer = self._queued.popleft() if self._queued else self._standing
            if answer.delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.release.wait(), answer.delay)
            if answer.reset:
                assert request.transport is not None
                request.transport.abort()
            if answer.cut:
                return await _drop_mid_answer(request, answer)
            return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
        finally:
            if hook is not None:
                self.in_flight[hook] -= 1
                async with self._arrivals:
                    self._arrivals.notify_all()


async def _drop_mid_answer(request: web.Request, answer: Answer) -> web.StreamResponse:
    response = web.StreamResponse(
        status=answer.status, headers={**answer.headers, "Content-Length": "100000"}
    )
    await response.prepare(request)
    await response.write(answer.body[:5])
    assert request.transport is not None
    request.transport.abort()
    return response


@contextlib.asynccontextmanager
async def running_partner() -> AsyncIterator[Partner]:
    """A partner double on a local port (the `partner` fixture; a test may want two)."""
    double = Partner()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", double.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    double.server = server
    try:
        yield double
    finally:
        double.release.set()
        await server.close()


@pytest.fixture
async def partner() -> AsyncIterator[Partner]:
    async with running_partner() as double:
        yield double


class FakeClock:
    """The worker's clock: the real time, plus however far a test moved it forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    @property
    def now(self) -> datetime:
        return self()

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


async def post(
    client: Client, path: str, body: Any, tenant: str = "acme", status: int = 201
) -> Any:
    response = await client.post(path, json=body, headers=auth(tenant))
    data = await response.json()
    assert response.status == status, data
    return data


async def create_partner(client: Client, base_url: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": "ERP",
        "base_url": base_url,
        "auth": {"type": "bearer", "token": "s3cr3t"},
        "timeout_seconds": 2,
        **overrides,
    }
    result: dict[str, Any] = await post(client, "/api/v1/partners", body)
    return result


async def create_action(client: Client, partner_id: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": "push",
        "partner_id": partner_id,
        "method": "POST",
        "path": "/hooks",
        "mode": "deliver",
        **overrides,
    }
    result: dict[str, Any] = await post(client, "/api/v1/actions", body)
    return result


async def create_subscription(
    client: Client,
    action_id: str,
    event_types: tuple[str, ...] = ("entity.updated",),
    **overrides: Any,
) -> dict[str, Any]:
    body = {"action_id": action_id, "event_types": list(event_types), **overrides}
    result: dict[str, Any] = await post(client, "/api/v1/subscriptions", body)
    return result


async def upload_mapping(client: Client, text: str, tenant: str = "acme") -> None:
    headers = {**auth(tenant), "Content-Type": "application/yaml"}
    response = await client.post("/api/v1/mappings", data=text.encode(), headers=headers)
    assert response.status in (200, 201), await response.text()


async def create_vehicle(client: Client, plate: str = "ABC1D23", **fields: Any) -> dict[str, Any]:
    body = {"plate": plate, **fields}
    result: dict[str, Any] = await post(client, "/api/v1/entities/vehicle", body)
    return result


@contextlib.asynccontextmanager
async def raw_partner(
    reply: bytes | Sequence[bytes], heads: list[bytes] | None = None
) -> AsyncIterator[str]:
    """A TCP server that answers every request with `reply` bytes and hangs up; the head of
    each request it got goes into `heads` when given. A list of parts is written part by
    part, each in a packet of its own (a pause between them)."""
    handlers: list[asyncio.Task[None]] = []
    parts = [reply] if isinstance(reply, bytes) else list(reply)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if heads is not None:
                heads.append(head)
            for index, part in enumerate(parts):
                if index:
                    await asyncio.sleep(0.05)
                writer.write(part)
                await writer.drain()
        except ConnectionError:
            pass  # the client hung up mid-answer, having refused what it read
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
        await asyncio.gather(*handlers)
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def raw_sender() -> AsyncIterator[Sender]:
    """A sender allowed to loopback, for answers `raw_partner` writes byte by byte."""
    policy = OutboundPolicy.from_entries(["127.0.0.1"])
    async with Sender(policy, max_body=64 * 1024, excerpt_bytes=1024, connect_timeout=1) as s:
        yield s


def plate_post(url: str) -> OutboundRequest:
    """A small JSON POST, as a delivery sends."""
    return OutboundRequest("POST", url, body=b'{"plate": "ABC1D23"}', timeout=5)
