"""A stand-in MyGeotab server for `gateway demo` only: `POST /demo/geotab/apiv1` answers the
JSON-RPC calls `Authenticate` and `GetFeed` (typeName LogRecord, `fromVersion`), so the demo
tenant's Geotab schedule has a partner to poll without leaving the machine.

Its feed is two demo trucks driving along Av. Paulista: `START_RECORDS` records exist when
the demo starts and one more appears every `SECONDS_PER_RECORD` seconds, so each run of the
schedule finds the records since the last one. Version n is the n-th record.
"""

from __future__ import annotations

import math
import time
from typing import Any, Final
from urllib.parse import parse_qs

import orjson
from aiohttp import web

PATH: Final = "/demo/geotab/apiv1"
DATABASE: Final = "rabbot_demo"
USER: Final = "api@rabbot.dev"
PASSWORD: Final = "demo-password"  # a demo double's, not a secret
DEVICES: Final = (("b3A", -23.5614, -46.6559), ("b7", -23.5572, -46.6622))
START_RECORDS: Final = 12
SECONDS_PER_RECORD: Final = 10.0
_SESSION: Final = "demo-session"
_demo_started_key = web.AppKey("demo_geotab_started", float)


def add_demo_partner(app: web.Application) -> None:
    app[_demo_started_key] = time.monotonic()
    app.router.add_post(PATH, _apiv1)


def record(n: int) -> dict[str, Any]:
    """The n-th LogRecord (from 1): devices in turn, moving ~30 m per record."""
    device, lat, lon = DEVICES[n % len(DEVICES)]
    step = n // len(DEVICES)
    seconds = 1_795_700_000 + n * int(SECONDS_PER_RECORD)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))
    return {
        "id": f"b{n:X}",
        "device": {"id": device},
        "dateTime": stamp,
        "latitude": round(lat + 0.00027 * step * math.cos(step / 7), 6),
        "longitude": round(lon + 0.00027 * step, 6),
        "speed": 20 + (n * 7) % 40,
    }


async def _apiv1(request: web.Request) -> web.Response:
    call = await _call(request)
    params = call.get("params") if isinstance(call.get("params"), dict) else {}
    assert isinstance(params, dict)
    if call.get("method") == "Authenticate":
        if (params.get("database"), params.get("userName"), params.get("password")) != (
            DATABASE,
            USER,
            PASSWORD,
        ):
            return _error("InvalidUserException", "Incorrect login credentials")
        credentials = {"database": DATABASE, "userName": USER, "sessionId": _SESSION}
        return web.json_response({"result": {"credentials": credentials, "path": "ThisServer"}})
    if (params.get("credentials") or {}).get("sessionId") != _SESSION:
        return _error("InvalidUserException", "Incorrect login credentials")
    if call.get("method") != "GetFeed" or params.get("typeName") != "LogRecord":
        return _error("MissingMethodException", "this demo serves GetFeed of LogRecord only")
    elapsed = time.monotonic() - request.app[_demo_started_key]
    available = START_RECORDS + int(elapsed / SECONDS_PER_RECORD)
    start = _version(params.get("fromVersion"))
    limit = min(int(params.get("resultsLimit") or 1000), 5000)
    end = min(start + limit, available)
    data = [record(n) for n in range(start + 1, end + 1)]
    return web.json_response({"result": {"data": data, "toVersion": f"{max(end, start):016x}"}})


async def _call(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    try:
        if request.content_type == "application/x-www-form-urlencoded":
            body = parse_qs(body.decode()).get("JSON-RPC", ["{}"])[0].encode()
        call = orjson.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return call if isinstance(call, dict) else {}


def _version(value: Any) -> int:
    try:
        return max(int(str(value), 16), 0) if value else 0
    except ValueError:
        return 0


def _error(name: str, message: str) -> web.Response:
    error = {
        "name": "JSONRPCError",
        "message": message,
        "errors": [{"name": name, "message": message}],
    }
    return web.json_response({"error": error})
