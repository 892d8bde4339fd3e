"""`gateway worker`'s own small HTTP listener: `/healthz`, `/readyz` and `/metrics` of a process
that runs background jobs without the web app. The same handlers as `gateway serve`'s (readiness
includes the jobs' progress; `GATEWAY_METRICS_TOKEN` guards `/metrics`); nothing else is
served, so the admin API and `/hooks` stay with `serve`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from gateway.services import Services
from gateway.web import health
from gateway.web.middlewares import edge
from gateway.web.server import GatewayRunner
from gateway.web.state import services_key


def create_worker_app(services: Services) -> web.Application:
    app = web.Application(middlewares=[edge])
    app[services_key] = services
    app.router.add_routes(
        [
            web.get("/healthz", health.healthz),
            web.get("/readyz", health.readyz),
            web.get("/metrics", health.metrics),
        ]
    )
    return app


@asynccontextmanager
async def worker_listener(services: Services, host: str, port: int) -> AsyncIterator[str | None]:
    """Listen while the block runs; yields the base URL, or None when `port` is 0 (off)."""
    if port == 0:
        yield None
        return
    runner = GatewayRunner(
        create_worker_app(services),
        access_log=None,
        write_timeout=services.settings.write_timeout_seconds,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
