"""`gateway worker` runs the background jobs without the web app, and serves its own
/healthz, /readyz and /metrics on `--port` (GATEWAY_WORKER_PORT): a real process, delivering
a real event to a local partner, scraped from outside."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    partner,
    post,
)
from tests.processes import free_port, start_worker

__all__ = ["partner"]  # the fixture
Client = TestClient[Any, Any]
METRICS_TOKEN = "scrape-me-0123456789"


async def _start_worker(
    client: Client, mongodb_uri: str, data_dir: Path, *args: str, **env: str
) -> asyncio.subprocess.Process:
    database = client.app[services_key].settings.database
    return await start_worker(data_dir, mongodb_uri, database, *args, **env)


async def _get(url: str, **headers: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as response:
            return response.status, await response.text()


async def _until_ready(url: str, worker: asyncio.subprocess.Process, log: Path) -> None:
    async with asyncio.timeout(30):
        while True:
            assert worker.returncode is None, log.read_text()
            try:
                if (await _get(f"{url}/readyz"))[0] == 200:
                    return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def test_worker_serves_health_readiness_and_the_metrics_of_its_jobs(
    client: Client, partner: Partner, mongodb_uri: str, tmp_path: Path
) -> None:
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"])
    await create_subscription(client, action["id"], ("entity.created",))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    worker = await _start_worker(
        client, mongodb_uri, tmp_path, "--port", str(port), GATEWAY_METRICS_TOKEN=METRICS_TOKEN
    )
    try:
        await _until_ready(url, worker, tmp_path / "worker.log")
        status, ready = await _get(f"{url}/readyz")
        assert status == 200 and '"workers":"running"' in ready.replace(" ", "")
        assert (await _get(f"{url}/healthz"))[0] == 200
        # The web app (this test's) stores the entity; the worker relays and delivers it.
        await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
        await partner.wait_for(1, timeout=20)
        bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        async with asyncio.timeout(10):  # the delivery is recorded just after its answer
            while 'gateway_deliveries_total{outcome="succeeded"} 1.0' not in (
                metrics := (await _get(f"{url}/metrics", **bearer))[1]
            ):
                await asyncio.sleep(0.05)
        assert "gateway_delivery_queue_depth" in metrics
        assert 'gateway_http_requests_total{method="GET",route="/readyz"' in metrics
        assert (await _get(f"{url}/metrics"))[0] == 401  # the token guards it here too
        # Only health and metrics: the admin API and /hooks stay with `gateway serve`.
        assert (await _get(f"{url}/api/v1/deliveries"))[0] == 404
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 30)
    assert worker.returncode == 0
    log = (tmp_path / "worker.log").read_text()
    assert f"health and metrics at {url}/readyz" in log


async def test_worker_without_a_port_runs_its_jobs_without_a_listener(
    client: Client, mongodb_uri: str, tmp_path: Path
) -> None:
    worker = await _start_worker(client, mongodb_uri, tmp_path, "--jobs", "relay")
    try:
        async with asyncio.timeout(30):
            while "gateway worker running" not in (tmp_path / "worker.log").read_text():
                assert worker.returncode is None, (tmp_path / "worker.log").read_text()
                await asyncio.sleep(0.1)
        assert "health and metrics" not in (tmp_path / "worker.log").read_text()
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 30)
    assert worker.returncode == 0
