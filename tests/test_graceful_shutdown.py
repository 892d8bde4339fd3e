"""SIGTERM to a real `gateway serve` while it works: trigger POSTs streaming in, a delivery on
a partner that never answers, a proxy call on it too. Every write answered 2xx must be in the
database afterwards, and no lease left held (shards, deliveries): the process gave back what
it had instead of leaving it to expire (docs/operations.md, "Shutdown")."""

from __future__ import annotations

import contextlib
import http.server
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymongo
import pytest

from gateway.store.embedded import EmbeddedServer
from tests.processes import ClientThreads, Gateway, wait_until
from tests.support import auth

NO_AUTH = {"auth": {"type": "none"}}


class _Partner(http.server.ThreadingHTTPServer):
    """`/slow` never answers (until the test ends); anything else answers 200 at once."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.release = threading.Event()
        self.slow = 0  # requests on /slow arrived
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Partner

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/slow"):
            with self.server.lock:
                self.server.slow += 1
            self.server.release.wait(120)
        with contextlib.suppress(OSError):  # the gateway gave up on it (its shutdown)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def _partner() -> Iterator[_Partner]:
    server = _Partner()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


class _Stream(ClientThreads):
    """Threads creating vehicles until stopped; the plates answered 2xx."""

    def __init__(self, gateway: Gateway, trigger: dict[str, Any]) -> None:
        super().__init__(gateway, trigger, 4)
        self.answered: list[str] = []

    def _run(self, worker: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            letters = f"SH{chr(65 + worker)}"  # a Mercosul plate (LLLNLNN), unique per call
            plate = f"{letters}{n // 1000 % 10}{chr(65 + n // 100 % 10)}{n % 100:02d}"
            status, _ = self._post({"plate": plate, "odometer_km": n})
            if status in (200, 201):
                with self._lock:
                    self.answered.append(plate)

    def count(self) -> int:
        with self._lock:
            return len(self.answered)


@dataclass
class Shutdown:
    seconds: float  # SIGTERM to exit
    code: int | None
    answered: list[str]
    stored: set[str]
    leases_held: list[str]
    deliveries_leased: list[str]
    log: str


def sigterm_while_working(data_dir: Path, **env: str) -> Shutdown:
    """The scenario: answered writes streaming, a delivery and a proxy call in flight on a
    partner that never answers, then SIGTERM; what the database holds afterwards. `env`:
    the gateway's settings beyond the defaults (`bench/shutdown_time.py` measures those)."""
    with _partner() as partner:
        gateway = Gateway(data_dir, **env).start()
        try:
            fast = gateway.create(
                "/api/v1/partners", {"name": "fast", "base_url": partner.url} | NO_AUTH
            )
            slow = gateway.create(
                "/api/v1/partners",
                {"name": "slow", "base_url": partner.url, "timeout_seconds": 60} | NO_AUTH,
            )
            for who, path in ((fast, "/hooks"), (slow, "/slow")):
                action = gateway.create(
                    "/api/v1/actions",
                    {"name": f"push-{who['name']}", "partner_id": who["id"], "method": "POST"}
                    | {"path": path, "mode": "deliver"},
                )
                gateway.create(
                    "/api/v1/subscriptions",
                    {"action_id": action["id"], "event_types": ["entity.created"]},
                )
            proxy = gateway.create(
                "/api/v1/actions",
                {"name": "ask", "partner_id": slow["id"], "method": "POST", "path": "/slow"}
                | {"mode": "proxy"},
            )
            trigger = gateway.create(
                "/api/v1/triggers",
                {"name": "stream", "entity_type": "vehicle", "methods": ["POST"]},
            )
            invoke = threading.Thread(
                target=gateway.request,
                args=("POST", f"/api/v1/actions/{proxy['id']}/invoke", {"payload": {"a": 1}}),
                kwargs={"headers": auth(), "timeout": 60},
                daemon=True,
            )
            with _Stream(gateway, trigger) as stream:
                wait_until(lambda: stream.count() >= 20, 60, "writes to be answered")
                invoke.start()
                # Deliveries on the slow partner, and the proxy call, are in flight.
                wait_until(lambda: partner.slow >= 2, 60, "calls in flight on the slow partner")
                assert gateway.proc is not None
                started = time.monotonic()
                gateway.proc.send_signal(signal.SIGTERM)
                code = gateway.proc.wait(60)
                seconds = time.monotonic() - started
        finally:
            gateway.stop()
    stored, leases, leased = _read(data_dir)
    return Shutdown(seconds, code, stream.answered, stored, leases, leased, gateway.log())


def _read(data_dir: Path) -> tuple[set[str], list[str], list[str]]:
    server = EmbeddedServer(data_dir / "db")
    server.start()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(server.uri)
    try:
        db = client["gateway"]
        now = datetime.now(UTC)
        plates = {d["data"]["plate"] for d in db.entities.find({"type": "vehicle"})}
        leases = [
            d["_id"] for d in db.leases.find({"shard": {"$exists": True}, "owner": {"$ne": None}})
        ]
        leases += [d["_id"] for d in db.leases.find({"shard": {"$exists": False}})]  # members
        leased = [
            d["_id"]
            for d in db.deliveries.find(
                {"$or": [{"status": "in_flight"}, {"lease_until": {"$gt": now}}]}
            )
        ]
    finally:
        client.close()
        server.stop()
    return plates, leases, leased


@pytest.mark.timeout(180)  # a gateway held by its request, then the database alone
def test_sigterm_while_working_keeps_every_answered_write_and_leaves_no_lease_held(
    tmp_path: Path,
) -> None:
    # Shorter deadlines than the defaults' 15 s and 10 s: the request and the send in flight
    # on the partner that never answers are cut short all the same, sooner.
    done = sigterm_while_working(
        tmp_path, GATEWAY_REQUEST_SHUTDOWN_SECONDS="3", GATEWAY_DELIVERY_SHUTDOWN_SECONDS="2"
    )
    print(f"\nSIGTERM to exit: {done.seconds:.1f} s; {len(done.answered)} writes answered")
    assert done.code == 0, done.log[-3000:]
    assert "the requests in flight get 3 s" in done.log
    assert done.answered and set(done.answered) <= done.stored
    assert done.leases_held == [], done.leases_held
    assert done.deliveries_leased == [], done.deliveries_leased
    # The delivery on the slow partner was cut short and handed back, not left to expire.
    assert "did not finish within" not in done.log
