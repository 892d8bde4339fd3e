"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import hmac

from aiohttp import web

from gateway.auth.tokens import bearer_token
from gateway.errors import StoreUnavailable, Unauthorized, Unavailable
from gateway.services import jobs_alive, running_jobs
from gateway.web.openapi import operation
from gateway.web.problems import json_response
from gateway.web.state import services_of


@operation("Liveness: the process answers", tag="operations", auth="none")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@operation("Readiness: the database answers", tag="operations", auth="none", errors=(503,))
async def readyz(request: web.Request) -> web.Response:
    services = services_of(request)
    metrics = services.metrics
    try:
        await services.store.ping()
    except StoreUnavailable:
        metrics.database_up.set(0)
        raise
    metrics.database_up.set(1)
    workers = "disabled"
    if running_jobs(services.settings):
        workers = "running" if jobs_alive(services) else "stopped"
        if workers == "stopped":
            raise Unavailable("the background workers are not running")
    return json_response({"status": "ready", "database": "ok", "workers": workers})


@operation("Prometheus metrics", tag="operations", auth="none")
async def metrics(request: web.Request) -> web.Response:
    services = services_of(request)
    expected = services.settings.metrics_token
    if expected is not None:
        given = bearer_token(request.headers) or ""
        if not hmac.compare_digest(given.encode(), expected.value.encode()):
            raise Unauthorized("the metrics token is missing or wrong")
    body = services.metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})
