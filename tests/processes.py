"""Real `gateway serve` processes for the fault tests: start, wait until ready, kill."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config import Settings
from tests.support import SECRET_KEY, auth

# Each test process (pytest-xdist worker gwN) hands out ports of its own range, below the
# kernel's ephemeral ports (32768 and up: `bind(0)`'s and outgoing connections'), one after
# the other: a port chosen here is free until a process binds it, and two workers choosing
# at once used to get the same one (a gateway then saw the other worker's answer on its
# port as its own readiness).
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_PORTS_EACH = 1000
_FIRST_PORT = 20_000 + (_WORKER % 12) * _PORTS_EACH
_next_ports = itertools.count(random.randrange(_PORTS_EACH))


def skewed_gateway(seconds: float) -> list[str]:
    """The command that runs `gateway` (its arguments after it) as on a host whose clock is
    `seconds` ahead (`gateway.clock.host_now` shifted)."""
    shim = (
        "import sys; from datetime import UTC, datetime, timedelta; import gateway.clock as c; "
        f"c.host_now = lambda: datetime.now(UTC) + timedelta(seconds={seconds}); "
        "from gateway.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    return [sys.executable, "-c", shim]


def free_port() -> int:
    """A loopback port free now that no other test process of this run hands out."""
    for _ in range(_PORTS_EACH):
        port = _FIRST_PORT + next(_next_ports) % _PORTS_EACH
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (a server of an earlier test of this process)
            return port
    raise AssertionError(f"no free port in {_FIRST_PORT}-{_FIRST_PORT + _PORTS_EACH - 1}")


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, every: float = 0.05
) -> None:
    """`condition` looked at every `every` seconds (longer for a look that is a request to a
    gateway and reads of its database) until it holds, or an AssertionError at `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """`wait_until` for a test's event loop: it keeps running meanwhile."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}") from None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def beside(data_dir: Path, mongodb_uri: str, database: str) -> dict[str, str]:
    """The environment of a gateway process beside a test's app: its database, its key."""
    return {
        **os.environ,
        "MONGODB_URI": mongodb_uri,
        "GATEWAY_DATABASE": database,
        "GATEWAY_SECRET_KEY": SECRET_KEY,
        "GATEWAY_OUTBOUND_ALLOW": "127.0.0.1",
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_LOG_JSON": "false",
    }


async def start_worker(
    data_dir: Path, mongodb_uri: str, database: str, *args: str, log: str = "worker", **env: str
) -> asyncio.subprocess.Process:
    """A real `gateway worker` beside a test's app (`beside`, and `env` over it), its
    arguments `args`, its output in `data_dir/<log>.log`."""
    environment = {**beside(data_dir, mongodb_uri, database), **env}
    with (data_dir / f"{log}.log").open("wb") as out:  # the child keeps its own handle
        command = (sys.executable, "-m", "gateway", "worker", *args)
        return await asyncio.create_subprocess_exec(
            *command, env=environment, stdout=out, stderr=out
        )


async def until_ready(url: str, worker: asyncio.subprocess.Process, timeout: float) -> None:
    """Until `url` (a process's `/readyz`) answers 200; an AssertionError if the process
    exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert worker.returncode is None, "the worker exited"
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"the worker was not ready within {timeout:.0f} s")


class Gateway:
    """`gateway serve` in a real process; its log goes to `data_dir/gateway.log`."""

    def __init__(self, data_dir: Path, *args: str, **env: str) -> None:
        self.data_dir = data_dir
        self.args = args  # after `gateway serve`, e.g. "--workers", "2"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "GATEWAY_DATA_DIR": str(data_dir),
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_SECRET_KEY": SECRET_KEY,
            "GATEWAY_OUTBOUND_ALLOW": "127.0.0.1",
            "GATEWAY_LOG_JSON": "false",
            **env,
        }
        if "MONGODB_URI" not in env:
            self.env.pop("MONGODB_URI", None)  # the embedded database
        self.log_path = data_dir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30, *, serving: str = "/readyz") -> Gateway:
        """Once `serving` answers 200 (`/healthz` for a gateway that starts not ready)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", *self.args],
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_until(
                lambda: self.ready(serving), timeout, f"gateway on port {self.port} to be ready"
            )
        except BaseException:
            # Not ready in time (a loaded machine): stopped here, as no test's `finally` will.
            # Left running, each such gateway (under --workers N, its children and database
            # too) served on for good after the test run ended.
            self.stop()
            raise
        return self

    def ready(self, path: str = "/readyz") -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
        return self.get(path)[0] == 200

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def db_pid(self) -> int:
        return int((self.data_dir / "db.pid").read_text().strip())

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), _json(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), _json(exc.read())
        except OSError as exc:  # refused, reset, timed out
            return 0, {}, str(exc)

    def create(self, path: str, body: Any) -> Any:
        """POST an admin resource (the test tenant's admin token); its answer, once 201."""
        status, _, answer = self.request("POST", path, body, headers=auth())
        assert status == 201, answer
        return answer

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, _, body = self.request("GET", path, headers=headers, timeout=10)
        return status, body

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def two_gateways(
    tmp_path: Path, settings: Settings, mongodb_uri: str, **env: str
) -> Iterator[list[Gateway]]:
    """Two `gateway serve` processes on the test's database (every background job in both),
    stopped after the block."""
    gateways = [
        Gateway(
            tmp_path / f"gateway{i}",
            MONGODB_URI=mongodb_uri,
            GATEWAY_DATABASE=settings.database,
            **env,
        )
        for i in range(2)
    ]
    try:
        for gateway in gateways:
            gateway.start(timeout=90)
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


class ClientThreads(ABC):
    """`workers` threads calling a trigger of a real gateway until stopped (`with` starts and
    stops them): each runs `_run(worker)`, counting answers by status under the lock."""

    def __init__(self, gateway: Gateway, trigger: dict[str, Any], workers: int) -> None:
        self._gateway = gateway
        self._path = f"/hooks/{trigger['id']}"
        self._headers = {"Authorization": f"Bearer {trigger['token']}"}
        self.stop = threading.Event()
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(w,)) for w in range(workers)]

    def __enter__(self) -> ClientThreads:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)

    @abstractmethod
    def _run(self, worker: int) -> None:
        """One worker's calls, until `stop` is set."""

    def _post(self, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """POST to the trigger; the status is counted."""
        status, _, body = self._gateway.request(
            "POST", self._path, payload, headers={**self._headers, **(headers or {})}, timeout=15
        )
        with self._lock:
            self.statuses[status] += 1
        return status, body
