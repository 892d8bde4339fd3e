"""docker-compose.yml cannot run here (no Docker engine): its shape is checked instead, and
every command and setting in it against the code that will read them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.__main__ import _parser
from gateway.config import Settings, parse_jobs
from gateway.prefork import stop_seconds
from gateway.shutdown import CLOSE_SECONDS, HAND_BACK_SECONDS, TEARDOWN_SECONDS

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


def test_each_service_s_grace_period_outlasts_its_own_shutdown_deadlines() -> None:
    """Docker SIGKILLs a container its `stop_grace_period` after SIGTERM: the gateway's
    `serve --workers` parent waits its children's deadlines and a margin (39 s on the
    defaults, `prefork.stop_seconds`) before it kills them itself, and was given 30 s (a proxy
    call on a slow partner cut off before its client closed and its Idempotency-Key was
    released). A worker has no requests: its runners' work, the hand-back, the close, the
    teardown."""
    services = _compose()["services"]
    defaults = Settings()  # the image's environment sets no deadline
    worker_needs = (
        defaults.delivery_shutdown_seconds + HAND_BACK_SECONDS + CLOSE_SECONDS + TEARDOWN_SECONDS
    )
    for name, needed in (("gateway", stop_seconds(defaults)), ("worker", worker_needs)):
        grace = services[name]["stop_grace_period"]
        assert re.fullmatch(r"\d+s", grace), grace
        assert int(grace[:-1]) >= needed + 5, (name, grace, needed)


def test_the_image_copies_only_the_installed_package() -> None:
    """The image installs the package (`pip install .` of gateway/, pyproject.toml and
    README.md) and copies nothing else: what the gateway reads ships inside the package."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (?!--from)(.+) \./?\S*$", dockerfile, re.M)
    assert copied == ["pyproject.toml README.md", "gateway"]
    assert "ENV" in dockerfile and "GATEWAY_SCHEMA_DIR=" not in dockerfile


def test_an_installed_package_compiles_flows_and_finds_the_demo_data(tmp_path: Path) -> None:
    """Built into a wheel from what the Dockerfile copies and installed outside the source
    tree: the flow schema, the default entity schemas and the demo's mappings, flows and
    templates all come with the package."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "gateway", source / "gateway", ignore=shutil.ignore_patterns("__pycache__")
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheel = ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), "."]
    subprocess.run([*pip, *wheel], cwd=source, check=True, timeout=120)
    (built,) = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    install = ["install", "--no-deps", "--no-index", "--target", str(site), str(built)]
    subprocess.run([*pip, *install], check=True, timeout=120)
    shutil.rmtree(source)
    probe = """
import gateway, sys
from pathlib import Path
from gateway.flows.compiler import check_flow
from gateway.schemas.registry import SchemaRegistry, default_schema_dir
assert Path(gateway.__file__).is_relative_to(sys.argv[1]), gateway.__file__
tiny = "name: tiny\\non:\\n  events: [entity.created]\\nsteps:\\n  - id: s\\n    when: entity.key"
assert not check_flow(tiny).problems
SchemaRegistry.load(default_schema_dir())
from gateway import shipped
flows = sorted(shipped.FLOWS.glob("*.yaml"))
for flow in flows:
    assert not check_flow(flow.read_text()).problems, flow
print(len(flows), len(list(shipped.MAPPINGS.glob("*.yaml"))),
      len(list((shipped.FLOWS / "templates").glob("*.yaml"))))
"""
    # Only the installed package and the virtualenv's dependencies: no source tree anywhere.
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(site)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    counts = [
        len(list(ROOT.joinpath(*p).glob("*.yaml")))
        for p in [("flows",), ("mappings",), ("flows", "templates")]
    ]
    assert [int(n) for n in done.stdout.split()] == counts
    assert all(counts)
