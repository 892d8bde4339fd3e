"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import hmac

from aiohttp import web

from gateway.errors import StoreUnavailable, Unauthorized, Unavailable
from gateway.keys import (
    db_health_key,
    delivery_worker_key,
    metrics_key,
    relay_key,
    settings_key,
    store_key,
)
from gateway.web.openapi import operation
from gateway.web.problems import json_response
from gateway.web.requests import bearer_token


@operation("Liveness: the process answers", tag="operations", auth="none", database=False)
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@operation(
    "Readiness: the database answers and the workers make progress",
    tag="operations",
    auth="none",
    errors=(503,),
    database=False,
)
async def readyz(request: web.Request) -> web.Response:
    metrics, health = request.app[metrics_key], request.app[db_health_key]
    try:
        health.check()  # known down (crashed, restarting, frozen): no need to wait for a ping
        try:
            await request.app[store_key].ping()
        except StoreUnavailable as exc:
            health.report_failure(exc)
            raise
    except StoreUnavailable:
        metrics.database_up.set(0)
        raise
    metrics.database_up.set(1)
    workers = "disabled"
    if request.app[settings_key].run_workers:
        _check_workers(request.app)
        workers = "running"
    return json_response({"status": "ready", "database": "ok", "workers": workers})


def _check_workers(app: web.Application) -> None:
    relay, worker = app[relay_key], app[delivery_worker_key]
    if not (relay.running and worker.running):
        raise Unavailable("the background workers are not running")
    limit = app[settings_key].stall_seconds
    for name, progress in (("event relay", relay.progress), ("delivery worker", worker.progress)):
        if (stalled := progress.stalled_for()) > limit:
            raise Unavailable(
                f"the {name} has made no progress for {stalled:.0f} s: {progress.reason}",
                retry_after=limit,
            )


@operation("Prometheus metrics", tag="operations", auth="none", database=False)
async def metrics(request: web.Request) -> web.Response:
    expected = request.app[settings_key].metrics_token
    if expected is not None:
        given = bearer_token(request) or ""
        if not hmac.compare_digest(given.encode(), expected.value.encode()):
            raise Unauthorized("the metrics token is missing or wrong")
    body = request.app[metrics_key].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})
