"""Test fixtures: one real SecantusDB server per test session, a fresh database per test."""

from __future__ import annotations

import fcntl
import gc
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import PyMongoError

from gateway import clock
from gateway.app import create_app
from gateway.config import Secret, Settings
from gateway.services import Services, open_services
from gateway.store.embedded import EmbeddedServer
from tests.query_plans import PlanListener, listening, register_audit
from tests.read_plans import Reads
from tests.support import SECRET_KEY, set_offset

_db_names = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    _cache_bytecode()
    _run_temp_in_memory(config)
    # RABBOT_PLAN_AUDIT=<file>: each query shape's plan, a JSON line (tests/query_plans.py).
    register_audit()


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection built (every test item, the modules, hypothesis' strategies) lives as
    long as the process: frozen out of the garbage collector's passes, which otherwise walked
    it again at each of its full collections (an eighth to a fifth of a test process's CPU went
    to them; frozen, about a third less of that)."""
    gc.collect()
    gc.freeze()


def _cache_bytecode() -> None:
    """Python caches the bytecode of what it imports (`__pycache__`, ignored by git) in this
    run and in every process it starts, even where PYTHONDONTWRITEBYTECODE says not to (this
    machine's environment sets it). Without the cache each test process parsed, rewrote and
    compiled every test module to collect them (~11 CPU-seconds each), and each of the
    hundreds of `python -m gateway` and `gateway serve` children compiled the gateway again
    before it started (~0.5 CPU-s each): 15 to 30 % of the CPU of the modules that start
    processes. A cached module is compiled again whenever its source changes (Python
    compares the source's modification time and size), so no test runs stale code. Set
    before xdist starts its test processes: they and their children inherit it."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False


def _run_temp_in_memory(config: pytest.Config) -> None:
    """The run's temporary files (every `tmp_path`, the session's databases) in memory
    (/dev/shm) where the machine has the room, unless `--basetemp` says where.

    SecantusDB answers a journaled write (all of the gateway's but the relay's drains) once
    its journal is on the disk (`fsync`): on a slow or busy disk each waits seconds
    (docs/operations.md, "The embedded database"; one 16 MiB batch test writes 130 MB,
    journal included), and CI's tests timed out. The suite tests the gateway, not the disk.
    A killed database loses on tmpfs what it loses on a disk: the writes it had not
    journaled. A run that passes removes its directory; one that fails keeps it for its logs,
    and a later run removes it (no process holds its lock any more)."""
    if config.option.basetemp or hasattr(config, "workerinput"):  # given, or an xdist worker
        return
    _remove_ended_runs(SHM)
    if _memory_room(SHM) < RUN_TEMP_ROOM:
        return
    path = Path(tempfile.mkdtemp(prefix=RUN_TEMP_PREFIX, dir=SHM))
    # Held until this process ends: a lock another run can take is of a run that ended.
    lock = os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_WRONLY, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    config.option.basetemp = str(path)
    config.stash[_RUN_TEMP] = path


@pytest.hookimpl(trylast=True)  # after the session's fixtures stopped their databases
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.stash.get(_RUN_TEMP, None)
    if path is not None and exitstatus == pytest.ExitCode.OK:
        shutil.rmtree(path, ignore_errors=True)
        path.with_name(path.name + ".lock").unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    path = config.stash.get(_RUN_TEMP, None)
    if path is not None and path.exists():
        terminalreporter.write_line(f"the run's temporary files, kept in memory: {path}")


SHM = Path("/dev/shm")
RUN_TEMP_PREFIX = "rabbot-tests-"
_RUN_TEMP = pytest.StashKey[Path]()
# What a run's temporary files may take: about 1 GB (two databases of 300 MB, 400 MB of
# tests' own), with room to spare.
RUN_TEMP_ROOM = 4 << 30


def _memory_room(shm: Path) -> int:
    """What a tmpfs at `shm` can take now: its free space, at most the memory available
    (its pages are memory; 0 without one)."""
    try:
        if not os.access(shm, os.W_OK):
            return 0
        free = shutil.disk_usage(shm).free
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return 0
    fields = dict(line.split(":", 1) for line in meminfo.splitlines() if ":" in line)
    available = int(fields.get("MemAvailable", "0 kB").split()[0]) * 1024
    return min(free, available, _cgroup_room())


CGROUP = Path("/sys/fs/cgroup")


def _cgroup_room(cgroup: Path = CGROUP, own: Path = Path("/proc/self/cgroup")) -> int:
    """What this process's memory cgroups (v1 or v2) and every one above them let it take
    still: a tmpfs's pages count against them. No limit is no bound."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        return 1 << 62
    room = 1 << 62
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: memory.max ("max": none) and memory.current
            base, limit_file, usage_file = cgroup, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):  # v1
            base, limit_file, usage_file = (
                cgroup / "memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        else:
            continue
        node = base / path.lstrip("/")
        for group in (node, *node.parents):
            try:
                limit = (group / limit_file).read_text().strip()
                usage = int((group / usage_file).read_text())
            except (OSError, ValueError):
                if group == base:
                    break
                continue
            if limit.isdigit():
                room = min(room, max(0, int(limit) - usage))
            if group == base:
                break
    return room


def _remove_ended_runs(shm: Path) -> None:
    """The temporary files of runs that ended (kept by a failure, or left by a killed run):
    those whose lock no process holds."""
    for lock_path in shm.glob(f"{RUN_TEMP_PREFIX}*.lock"):
        try:
            if time.time() - lock_path.stat().st_mtime < 60:
                continue  # maybe a run starting, between its directory and its lock
            lock = os.open(lock_path, os.O_WRONLY)
        except OSError:
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a run still going
        else:
            shutil.rmtree(lock_path.with_suffix(""), ignore_errors=True)
            lock_path.unlink(missing_ok=True)
        finally:
            os.close(lock)


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MONGODB_URI from the environment if set (a real MongoDB), else an embedded server."""
    if uri := os.environ.get("TEST_MONGODB_URI"):
        yield uri
        return
    # Test commands on: tests/test_command_faults.py injects faults with configureFailPoint.
    server = EmbeddedServer(tmp_path_factory.mktemp("secantus") / "db", test_commands=True)
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _dropping(mongodb_uri: str) -> Iterator[MongoClient[Any]]:
    """The client that drops each test's database once the test is done."""
    client: MongoClient[Any] = MongoClient(mongodb_uri, timeoutMS=30_000)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def settings(tmp_path: Path, _dropping: MongoClient[Any]) -> Iterator[Settings]:
    """A fresh database per test, dropped after it: the session's server keeps the tables
    of the tests running, not of every test run before (thousands of databases of some forty
    collections each pinned the server's WiredTiger cache until it stopped answering)."""
    database = f"test_{os.getpid()}_{next(_db_names)}"
    yield Settings(
        secret_key=Secret(SECRET_KEY),
        data_dir=tmp_path,
        database=database,
        run_workers=False,
        log_json=False,
        outbound_allow=("127.0.0.1",),
        max_body_bytes=256 * 1024,
        # Fuzzing runs hundreds of admin calls; tests/test_admin_limits.py sets its own limit.
        admin_rate_limit=100_000,
    )
    try:
        _dropping.drop_database(database)
    except PyMongoError:  # a test that stopped the server, or left it frozen: nothing to drop
        pass


@pytest.fixture
def make_app(settings: Settings, mongodb_uri: str) -> Callable[..., web.Application]:
    def factory(**overrides: Any) -> web.Application:
        return create_app(replace(settings, **overrides), mongodb_uri=mongodb_uri)

    return factory


@pytest.fixture
async def client(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> AsyncIterator[TestClient[Any, Any]]:
    yield await aiohttp_client(make_app())


@pytest.fixture
async def services(settings: Settings, mongodb_uri: str) -> AsyncIterator[Services]:
    """A gateway process without its web app, on the test's database (the same one the
    `client` fixture's app uses): for use cases driven directly."""
    async with open_services(settings, mongodb_uri=mongodb_uri) as opened:
        yield opened


@pytest.fixture
def gateway_time(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Sets the gateway's time (`gateway.clock.utcnow`) to a moment, as a reading of the
    database server's clock would, from which it counts on; as it was after the test. (The
    host's wall clock, which time-machine moves, no longer reaches it once the server's clock
    was read: every process and the `services` fixture read it at start.)"""
    monkeypatch.setattr(clock, "_reading", clock._reading)
    monkeypatch.setattr(clock, "_offset", clock._offset)

    def move_to(moment: datetime) -> None:
        set_offset(moment - clock.host_now())

    return move_to


# Debian's `chromium-headless-shell`: the same Chromium build as its `chromium`, in the old
# headless mode alone (no window system to stand in for): a third less CPU for the browser
# tests (docs/benchmarks.md, "The suite's CPU, cut again").
CHROMIUM = Path("/usr/bin/chromium-headless-shell")
CHROMIUM_ARGS = [
    "--no-sandbox",  # tests run as root in CI
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """One headless Debian Chromium for the whole session (each test opens its own context).
    A missing browser fails the run: `make test` installs it (`make browser`: `apt-get install
    chromium-headless-shell`)."""
    from playwright.async_api import async_playwright

    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make browser` (apt-get install -y chromium-headless-shell)"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
async def watched(services: Services, mongodb_uri: str) -> AsyncIterator[tuple[Any, Reads]]:
    """The test's database through a second client whose commands are recorded; the indexes
    are those the gateway made at start (`services`)."""
    reads = Reads()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_uri, event_listeners=[reads], tz_aware=True
    )
    try:
        yield client[services.store.db.name], reads
    finally:
        await client.close()


@pytest.fixture
def query_plans() -> Iterator[PlanListener]:
    """The plans of the queries sent by every client made during the test (the app's, the
    services'), one per collection and filter shape (tests/query_plans.py). Ask for it
    before the app or the services, so that their clients are made while it listens."""
    with listening() as listener:
        yield listener
