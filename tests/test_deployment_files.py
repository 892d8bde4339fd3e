"""docker-compose.yml cannot run here (no Docker engine): its shape is checked instead, and
every command and setting in it against the code that will read them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gateway.__main__ import _parser
from gateway.config import parse_jobs

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _interpolated(args: list[str]) -> list[str]:
    """Compose's ${NAME:-default} with the defaults."""
    return [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", a) for a in args]


def test_the_compose_file_starts_a_three_member_replica_set() -> None:
    services = _compose()["services"]
    members = [name for name in services if name.startswith("mongo")]
    assert members == ["mongo1", "mongo2", "mongo3"]
    for name in members:
        assert services[name]["command"] == ["--replSet", "rs0", "--bind_ip_all"]
        assert services[name]["image"].startswith("mongo:8")  # client bulkWrite needs 8.0
    initiate = services["mongo1"]["healthcheck"]["test"][-1]
    for name in members:
        assert f"host: '{name}:27017'" in initiate
    uri = services["gateway"]["environment"]["MONGODB_URI"]
    assert uri.startswith("mongodb://mongo1:27017,mongo2:27017,mongo3:27017/")
    assert "replicaSet=rs0" in uri and "w=majority" in uri and "journal=true" in uri


def test_the_compose_file_starts_n_gateways_of_p_processes_and_a_worker() -> None:
    services = _compose()["services"]
    gateway, worker = services["gateway"], services["worker"]
    assert re.fullmatch(r"\$\{GATEWAY_REPLICAS:-\d+\}", str(gateway["deploy"]["replicas"]))
    assert gateway["ports"] == ["8080-8089:8080"]  # one host port per replica
    serve = _parser().parse_args(_interpolated(gateway["command"]))
    assert (serve.command, serve.workers) == ("serve", 2)
    assert parse_jobs(gateway["environment"]["GATEWAY_WORKERS"]) == ("relay", "fold")
    work = _parser().parse_args(worker["command"])
    assert (work.command, work.jobs) == ("worker", ("flows", "delivery", "schedules"))
    assert work.port == 8080  # where the image's HEALTHCHECK asks for /healthz
    for service in (gateway, worker):
        assert service["depends_on"]["mongo1"]["condition"] == "service_healthy"
        assert service["environment"]["MONGODB_URI"] == gateway["environment"]["MONGODB_URI"]


def test_the_image_holds_every_directory_the_gateway_reads_beside_its_schemas() -> None:
    """`gateway demo` (and an admin uploading the shipped files) read mappings/ and flows/
    beside GATEWAY_SCHEMA_DIR (cli.py `demo`): the image copies all three to /app."""
    copied = re.findall(r"^COPY (\w+) \./(\w+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert {"schemas", "mappings", "flows"} <= {src for src, dst in copied if src == dst}
    assert "GATEWAY_SCHEMA_DIR=/app/schemas" in (ROOT / "Dockerfile").read_text()
