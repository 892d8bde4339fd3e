"""Which background jobs a process runs (GATEWAY_WORKERS, `gateway worker --jobs`): scale the
relay or the delivery worker alone by giving a process only it."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from gateway.config import ConfigError, Settings
from gateway.web.state import services_key


def test_the_jobs_come_from_gateway_workers() -> None:
    assert Settings.from_env({}).jobs == ("relay", "flows", "delivery", "schedules", "fold")
    assert Settings.from_env({"GATEWAY_WORKERS": "delivery"}).jobs == ("delivery",)
    assert Settings.from_env({"GATEWAY_WORKERS": " relay , relay "}).jobs == ("relay",)
    assert Settings.from_env({"GATEWAY_WORKERS": "none"}).jobs == ()
    with pytest.raises(ConfigError, match="GATEWAY_WORKERS: unknown job folding"):
        Settings.from_env({"GATEWAY_WORKERS": "relay,folding"})


async def test_a_process_runs_only_its_jobs_and_is_ready_with_them(
    aiohttp_client: Any, make_app: Any
) -> None:
    client = await aiohttp_client(make_app(run_workers=True, jobs=("relay",)))
    services = client.app[services_key]
    body = await (await client.get("/readyz")).json()
    assert body["workers"] == "running"
    assert services.relay.running
    assert not (services.delivery_worker.running or services.flow_runner.running)
    assert not services.schedule_runner.running


def test_gateway_worker_refuses_an_unknown_job() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "worker", "--jobs", "relay,sending"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown job sending" in done.stderr
