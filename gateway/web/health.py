"""/healthz, /readyz and /metrics."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import StoreUnavailable
from gateway.keys import metrics_key, store_key
from gateway.web.problems import json_response


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    metrics = request.app[metrics_key]
    try:
        await request.app[store_key].ping()
    except StoreUnavailable:
        metrics.database_up.set(0)
        raise
    metrics.database_up.set(1)
    return json_response({"status": "ready", "database": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[metrics_key].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})
