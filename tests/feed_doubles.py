"""Local stand-ins for polled partner feeds (aiohttp servers on 127.0.0.1): a MyGeotab
JSON-RPC server (Authenticate, GetFeed of LogRecords with a version cursor, sessions that
expire) and a Samsara-style vehicle stats feed (`after` cursor, `hasNextPage`). Both serve
pages from the records a test adds, advance their cursors, record every call, and misbehave
on demand (`misbehave(kind, times)`): garbage, a wrong shape, a status with Retry-After, a
delay longer than the client waits, or the same page and cursor over and over. A scripted
feed (`GET /feed?after=`) answers whatever a test's function gives for each call."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Misbehaviour:
    kind: str  # garbage | shape | status | slow | loop | repeat (Geotab)
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)


class FeedDouble:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []  # what each feed call asked for
        self._plans: deque[Misbehaviour] = deque()
        self._stuck: Any = None  # the answer repeated by "loop"
        self.release = asyncio.Event()
        self.delay = 0.0  # seconds each feed call takes to answer
        self._arrivals = asyncio.Condition()
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def record(self, call: dict[str, Any]) -> None:
        async with self._arrivals:
            self.calls.append(call)
            self._arrivals.notify_all()
        if self.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.delay)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Until a call arrives after which `predicate()` holds (a condition, not a sleep)."""
        async with self._arrivals:
            await asyncio.wait_for(self._arrivals.wait_for(predicate), timeout)

    def misbehave(self, kind: str, times: int = 1, **options: Any) -> None:
        self._plans.extend(Misbehaviour(kind, **options) for _ in range(times))

    def _misbehaviour(self) -> Misbehaviour | None:
        return self._plans.popleft() if self._plans else None

    async def _odd(self, plan: Misbehaviour, normal: Any) -> web.Response | None:
        """The answer a misbehaviour gives, or None to answer normally."""
        if plan.kind == "garbage":
            return web.Response(text="<html>Service Unavailable</html>", content_type="text/html")
        if plan.kind == "shape":
            return web.json_response({"unexpected": {"data": "not a list"}})
        if plan.kind == "status":
            return web.json_response({"error": "no"}, status=plan.status, headers=plan.headers)
        if plan.kind == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 30)
            return web.json_response(normal)
        if plan.kind == "loop":
            if self._stuck is None:
                self._stuck = normal
            return web.json_response(self._stuck)
        return None


class GeotabDouble(FeedDouble):
    """POST /apiv1: `Authenticate` (form JSON-RPC=... or JSON) and `GetFeed` (JSON)."""

    DATABASE, USER, PASSWORD = "demo_fleet", "api@example.com", "s3cret"

    def __init__(self) -> None:
        super().__init__()
        self.sessions: set[str] = set()
        self.authentications = 0
        self.path = "ThisServer"  # or the server that really holds the database

    def add_records(self, count: int, devices: tuple[str, ...] = ("b3A", "b7")) -> None:
        for _ in range(count):
            n = len(self.records) + 1
            device = devices[n % len(devices)]
            self.records.append(
                {
                    "id": f"b{n:04X}",
                    "device": {"id": device},
                    "dateTime": f"2026-11-20T13:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
                    "latitude": -23.5 - n / 10000,
                    "longitude": -46.6 - n / 10000,
                    "speed": n % 90,
                }
            )

    def expire_sessions(self) -> None:
        self.sessions.clear()

    async def handle(self, request: web.Request) -> web.Response:
        call = await _rpc_call(request)
        params = call.get("params") or {}
        if call.get("method") == "Authenticate":
            return self._authenticate(params)
        credentials = params.get("credentials") or {}
        if credentials.get("sessionId") not in self.sessions:
            return _rpc_error("InvalidUserException", "Incorrect login credentials")
        await self.record({"fromVersion": params.get("fromVersion"), "params": params})
        start = int(params.get("fromVersion") or "0", 16)
        limit = int(params.get("resultsLimit") or 1000)
        data = self.records[start : start + limit]
        answer = {
            "jsonrpc": "2.0",
            "result": {"data": data, "toVersion": f"{start + len(data):016x}"},
        }
        plan = self._misbehaviour()
        if plan is not None and plan.kind == "repeat":  # the first page under a new version
            answer["result"]["data"] = self.records[:limit]
        if plan is not None and (odd := await self._odd(plan, answer)) is not None:
            return odd
        if self._stuck is not None:
            return web.json_response(self._stuck)
        return web.json_response(answer)

    def _authenticate(self, params: dict[str, Any]) -> web.Response:
        if (params.get("database"), params.get("userName"), params.get("password")) != (
            self.DATABASE,
            self.USER,
            self.PASSWORD,
        ):
            return _rpc_error("InvalidUserException", "Incorrect login credentials")
        self.authentications += 1
        session = f"session-{self.authentications}"
        self.sessions.add(session)
        credentials = {"database": self.DATABASE, "userName": self.USER, "sessionId": session}
        return web.json_response({"result": {"credentials": credentials, "path": self.path}})


class SamsaraDouble(FeedDouble):
    """GET /fleet/vehicles/stats/feed?types=...&after=... with a bearer token."""

    TOKEN = "samsara-token"
    PAGE = 2

    def add_vehicle_stats(self, vehicle_id: str, name: str, minute: int) -> None:
        self.records.append(
            {
                "id": vehicle_id,
                "name": name,
                "gps": [
                    {
                        "time": f"2026-11-20T14:{minute:02d}:00Z",
                        "latitude": -23.56,
                        "longitude": -46.65,
                        "headingDegrees": 90,
                        "speedMilesPerHour": 10.0,
                    }
                ],
                "obdOdometerMeters": [
                    {"time": f"2026-11-20T14:{minute:02d}:00Z", "value": 1000 * minute}
                ],
            }
        )

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.TOKEN}":
            return web.json_response({"message": "unauthorized"}, status=401)
        after = request.query.get("after")
        await self.record({"after": after, "types": request.query.get("types")})
        start = int(after[1:]) if after else 0
        data = self.records[start : start + self.PAGE]
        end = start + len(data)
        answer = {
            "data": data,
            # Samsara's endCursor moves on even when a page is empty.
            "pagination": {"endCursor": f"c{end}", "hasNextPage": end < len(self.records)},
        }
        plan = self._misbehaviour()
        if plan is not None and (odd := await self._odd(plan, answer)) is not None:
            return odd
        if self._stuck is not None:
            return web.json_response(self._stuck)
        return web.json_response(answer)


class ScriptedFeed(FeedDouble):
    """GET /feed?after=...: whatever `answer(after, n)` gives for the n-th call (a JSON value,
    raw bytes sent as JSON, or a `web.Response` as it is); `gate`, when set, holds the calls
    it names (by n) until released. For partners that misbehave in ways the other doubles do
    not: cursors that cycle, endless empty pages, integers past 64 bits."""

    def __init__(self) -> None:
        super().__init__()
        self.answer: Callable[[str | None, int], Any] = lambda after, n: {"items": []}
        self.gated: set[int] = set()
        self.gate = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        after = request.query.get("after")
        await self.record({"after": after})
        n = len(self.calls)
        if n in self.gated:
            await asyncio.wait_for(self.gate.wait(), 30)
        answer = self.answer(after, n)
        if isinstance(answer, web.Response):
            return answer
        body = answer if isinstance(answer, bytes) else orjson.dumps(answer)
        return web.Response(body=body, content_type="application/json")


async def _rpc_call(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    if request.content_type == "application/x-www-form-urlencoded":
        form = parse_qs(body.decode())
        return dict(json.loads(form["JSON-RPC"][0]))
    return dict(orjson.loads(body))


def _rpc_error(name: str, message: str) -> web.Response:
    error = {
        "name": "JSONRPCError",
        "message": message,
        "errors": [{"name": name, "message": message}],
    }
    return web.json_response({"jsonrpc": "2.0", "error": error})


async def _serve(double: FeedDouble, path: str) -> TestServer:
    app = web.Application()
    app.router.add_route("*", path, double.handle)  # type: ignore[attr-defined]
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    double.server = server
    return server


@pytest.fixture
async def geotab() -> AsyncIterator[GeotabDouble]:
    double = GeotabDouble()
    server = await _serve(double, "/apiv1")
    yield double
    double.release.set()
    await server.close()


@pytest.fixture
async def samsara() -> AsyncIterator[SamsaraDouble]:
    double = SamsaraDouble()
    server = await _serve(double, "/fleet/vehicles/stats/feed")
    yield double
    double.release.set()
    await server.close()


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedFeed]:
    double = ScriptedFeed()
    server = await _serve(double, "/feed")
    yield double
    double.release.set()
    double.gate.set()
    await server.close()
