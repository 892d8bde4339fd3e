"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging

from aiohttp import web

from gateway.auth.tokens import bearer_token
from gateway.errors import GatewayError, StoreUnavailable, Unauthorized, Unavailable
from gateway.services import Services, jobs_alive, running_jobs
from gateway.web.admin_auth import admit
from gateway.web.client_address import client_key
from gateway.web.openapi import operation, strict
from gateway.web.problems import json_response
from gateway.web.state import services_of

log = logging.getLogger(__name__)


@operation(
    "Liveness: the process answers",
    tag="operations",
    auth="none",
    database=False,
    response=strict(
        {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}
    ),
)
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@operation(
    "Readiness: the database answers and the workers make progress",
    tag="operations",
    auth="none",
    errors=(503,),
    database=False,
    response=strict(
        {
            "type": "object",
            "required": ["status", "database", "workers"],
            "properties": {
                "status": {"const": "ready"},
                "database": {"const": "ok"},
                "workers": {
                    "enum": ["running", "disabled"],
                    "description": "disabled: this process runs no background jobs",
                },
            },
        }
    ),
    error_texts={
        503: "Not ready (the problem's detail says why): the database unreachable or its "
        "start not done, the background workers not running or making no progress, or "
        "GATEWAY_SECRET_KEY refused by the stored key check (see Retry-After)"
    },
)
async def readyz(request: web.Request) -> web.Response:
    # Not ready, the problem's detail says why; the log says it once, when readiness changes
    # (the edge logs no refused probe: `middlewares.PROBES`).
    services = services_of(request)
    try:
        answer = await _readiness(services)
    except GatewayError as exc:
        if services.readiness.changed(exc.detail):
            log.warning("not ready: %s", exc.detail, extra={"status": exc.status})
        raise
    if services.readiness.changed(None):
        log.info("ready again")
    return answer


async def _readiness(services: Services) -> web.Response:
    metrics, health = services.metrics, services.store.health
    try:
        health.check()  # known down (crashed, restarting, frozen): no need to wait for a ping
        try:
            await services.store.ping()
        except StoreUnavailable as exc:
            health.report_failure(exc)
            raise
    except StoreUnavailable:
        metrics.database_up.set(0)
        raise
    metrics.database_up.set(1)
    services.store.check_prepared()
    if (refused := services.background.key_refused) is not None:
        raise Unavailable(refused)
    workers = "disabled"
    if running_jobs(services.settings):
        _check_workers(services)
        workers = "running"
    return json_response({"status": "ready", "database": "ok", "workers": workers})


def _check_workers(services: Services) -> None:
    """The jobs this process runs (`GATEWAY_WORKERS`) are running, and making progress."""
    if not jobs_alive(services):
        raise Unavailable("the background workers are not running")
    limit = services.settings.stall_seconds
    jobs = running_jobs(services.settings)
    watched = [("event relay", services.relay.progress)] if "relay" in jobs else []
    if "delivery" in jobs:
        watched.append(("delivery worker", services.delivery_worker.progress))
    if "fold" in jobs:
        watched.append(("fleet fold", services.fold.progress))
    for name, progress in watched:
        if (stalled := progress.stalled_for()) > limit:
            raise Unavailable(
                f"the {name} has made no progress for {stalled:.0f} s: {progress.reason}",
                retry_after=limit,
            )


@operation(
    "Prometheus metrics",
    tag="operations",
    auth="none",
    database=False,
    # With GATEWAY_METRICS_TOKEN set, a missing or wrong bearer token (401), counted in the
    # client's budget of refused calls (429 past it), as the admin API's are.
    errors=(401, 429),
    response={"type": "string", "description": "the Prometheus text format, version 0.0.4"},
    media="text/plain",
)
async def metrics(request: web.Request) -> web.Response:
    services = services_of(request)
    expected = services.settings.metrics_token
    given = bearer_token(request.headers) or ""
    if expected is not None and not _same_token(given, expected.value):
        admit(request, f"client:{client_key(request)}", "from this address")
        raise Unauthorized("the metrics token is missing or wrong")
    # Rendered in a thread: a scrape of thousands of series takes a CPU-bound second, which
    # every request of the process would wait for on the event loop (docs/operations.md).
    services.metrics.read_before_scrape()
    body = await asyncio.to_thread(services.metrics.rendered)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


def _same_token(given: str, expected: str) -> bool:
    """Compared as digests, in a time that says nothing of the token's length either
    (`compare_digest` on the texts returns at once when the lengths differ). A header's bytes
    that are no UTF-8 come as surrogates: compared as those bytes."""
    given_digest = hashlib.sha256(given.encode(errors="surrogateescape")).digest()
    return hmac.compare_digest(given_digest, hashlib.sha256(expected.encode()).digest())
