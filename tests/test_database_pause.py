"""The embedded database paused (SIGSTOP) and continued (SIGCONT) under a real `gateway serve`
while it works: trigger POSTs of vehicles and of positions being answered, the delivery worker
sending to a partner, the fleet fold folding the fixes. A paused database answers nothing and
fails nothing; so every request must be answered within its deadline (503 problem+json with
Retry-After, never a hang nor a 500), nothing answered as written may be lost, deliveries
repeat at most what was in flight (at least once, docs/reliability.md), and the process
recovers by itself once the database is continued (docs/operations.md, "A paused database").
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pymongo
import pytest

from gateway.store.embedded import EmbeddedServer, running_uri
from tests.processes import ClientThreads, Gateway, alive, wait_until
from tests.triggers_support import bearer

DB_TIMEOUT_MS = 1000
CONCURRENCY = 4  # deliveries a worker sends at once: the most sent twice after a pause
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class _Partner(http.server.ThreadingHTTPServer):
    """Answers 200 after a moment (so that sends are in flight when the database pauses),
    counting the webhook ids it got."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.release = threading.Event()
        self.gate = threading.Event()  # cleared: sends are held until it is set
        self.gate.set()
        self.held = 0  # sends waiting at the gate

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self) -> int:
        with self.lock:
            return sum(self.received.values())


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Partner

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        with self.server.lock:
            self.server.held += 1
        self.server.gate.wait(60)
        self.server.release.wait(0.1)
        with self.server.lock:
            self.server.held -= 1
            self.server.received[body["entity"]["id"]] += 1
        with contextlib.suppress(OSError):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _partner() -> Iterator[_Partner]:
    server = _Partner()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


class _Stream(ClientThreads):
    """Half the threads create vehicles, half post fixes of a few vehicles, in time order per
    vehicle; every answer is kept with its headers (503s must carry Retry-After)."""

    def __init__(self, gateway: Gateway, vehicles: dict[str, Any], fixes: dict[str, Any]):
        super().__init__(gateway, vehicles, 4)
        self._fixes = f"/hooks/{fixes['id']}"
        self._fix_headers = {"Authorization": f"Bearer {fixes['token']}"}
        self.created: list[str] = []  # plates answered 2xx
        self.fixed: dict[str, datetime] = {}  # plate → newest fix answered 2xx
        self.refusals: list[tuple[int, dict[str, str], Any]] = []  # every non-2xx answer

    def _run(self, worker: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            if worker % 2:
                plate = (
                    f"PZ{chr(65 + worker)}{n // 1000 % 10}{chr(65 + n // 100 % 10)}{n % 100:02d}"
                )
                path, headers, body = self._path, self._headers, {"plate": plate}
            else:
                plate, at = f"FIX{worker}A00", T0 + timedelta(seconds=10 * n)
                lat = -23.55 + n * 0.0005
                body = {"plate": plate, "time": at.isoformat(), "lat": lat, "lon": -46.63}
                path, headers = self._fixes, self._fix_headers
            status, answer_headers, answer = self._gateway.request(
                "POST", path, body, headers=headers, timeout=15
            )
            with self._lock:
                self.statuses[status] += 1
                if status not in (200, 201):
                    self.refusals.append((status, answer_headers, answer))
                elif worker % 2:
                    self.created.append(plate)
                else:
                    self.fixed[plate] = at

    def count(self) -> int:
        with self._lock:
            return len(self.created) + len(self.fixed)


@pytest.mark.timeout(180)  # a gateway, its database, then the database alone to read it
def test_a_paused_database_bounds_every_answer_loses_nothing_and_the_gateway_recovers(
    tmp_path: Path,
) -> None:
    with _partner() as partner:
        gateway = Gateway(
            tmp_path,
            GATEWAY_DB_TIMEOUT_MS=str(DB_TIMEOUT_MS),
            GATEWAY_DELIVERY_CONCURRENCY=str(CONCURRENCY),
            # An inbox number taken as the database stopped, its answer lost, is given up
            # after this (30 s by default: docs/operations.md, "A paused database").
            GATEWAY_FOLD_GAP_SECONDS="3",
        ).start()
        try:
            target = gateway.create(
                "/api/v1/partners",
                {"name": "erp", "base_url": partner.url, "auth": {"type": "none"}},
            )
            action = gateway.create(
                "/api/v1/actions",
                {"name": "push", "partner_id": target["id"], "method": "POST", "path": "/hooks"}
                | {"mode": "deliver"},
            )
            gateway.create(
                "/api/v1/subscriptions",
                {"action_id": action["id"], "event_types": ["entity.created"]},
            )
            for worker in (0, 2):
                gateway.create("/api/v1/entities/vehicle", {"plate": f"FIX{worker}A00"})
            vehicles = gateway.create(
                "/api/v1/triggers", {"name": "cars", "entity_type": "vehicle", "methods": ["POST"]}
            )
            fixes = gateway.create(
                "/api/v1/triggers", {"name": "trackers", "target": "positions", "methods": ["POST"]}
            )
            database = gateway.db_pid
            with _Stream(gateway, vehicles, fixes) as stream:
                wait_until(lambda: stream.count() >= 40, 60, "writes to be answered")
                wait_until(lambda: partner.count() >= 5, 60, "deliveries to be sent")
                delivered_before = partner.count()
                partner.gate.clear()  # a send in flight: answered while the database is paused
                wait_until(lambda: partner.held > 0, 60, "a send in flight")
                os.kill(database, signal.SIGSTOP)
                partner.gate.set()
                try:
                    # Sends in flight end at the partner; their outcome waits on the database.
                    wait_until(lambda: stream.statuses[503] >= 20, 60, "503 answers")
                    wait_until(lambda: gateway.get("/readyz")[0] == 503, 30, "readiness to drop")
                    assert gateway.get("/healthz")[0] == 200  # alive: no restart wanted
                finally:
                    os.kill(database, signal.SIGCONT)
                wait_until(gateway.ready, 60, "the gateway ready again by itself")
                answered = stream.count()
                wait_until(lambda: stream.count() >= answered + 40, 60, "writes after the pause")
            created = list(stream.created)
            wait_until(
                lambda: set(created) <= _delivered_plates(gateway, partner),
                120,
                "every created vehicle's delivery",
            )
            # The fold went on after the pause: each vehicle's state reaches its newest fix.
            newest = dict(stream.fixed)
            wait_until(lambda: _folded(gateway, newest), 60, "the fold to fold every fix")
        finally:
            gateway.stop()
    assert stream.statuses[0] == 0 and stream.statuses[500] == 0, dict(stream.statuses)
    assert set(stream.statuses) <= {200, 201, 503}, dict(stream.statuses)
    for _, headers, problem in stream.refusals:
        assert headers["Content-Type"].startswith("application/problem+json"), problem
        assert int(headers["Retry-After"]) >= 1 and problem["status"] == 503, problem
    stored = _stored_plates(tmp_path)
    assert set(created) <= stored
    duplicates = sum(n - 1 for n in partner.received.values() if n > 1)
    print(
        f"\npause: {dict(stream.statuses)}; {partner.count()} deliveries "
        f"({delivered_before} before the pause), {duplicates} sent twice"
    )
    assert duplicates <= CONCURRENCY, partner.received


def _delivered_plates(gateway: Gateway, partner: _Partner) -> set[str]:
    with partner.lock:
        ids = set(partner.received)
    with _client(gateway) as client:
        plates = _plates(client)
    return {plate for entity_id, plate in plates.items() if entity_id in ids}


def _folded(gateway: Gateway, newest: dict[str, datetime]) -> bool:
    """Whether each vehicle's folded state (its `last` fix) has reached `newest`, by plate."""
    with _client(gateway) as client:
        plates = _plates(client)
        last = {
            plates[doc["vehicle"]]: doc["state"]["last"]["t"]
            for doc in client["gateway"]["fleet"].find({"state.last": {"$ne": None}})
        }
    return all(plate in last and last[plate] >= at for plate, at in newest.items())


def _client(gateway: Gateway) -> pymongo.MongoClient[dict[str, Any]]:
    uri = running_uri(gateway.data_dir / "db", gateway.data_dir / "db.pid")
    assert uri is not None
    return pymongo.MongoClient(uri, tz_aware=True)


def _plates(client: pymongo.MongoClient[dict[str, Any]]) -> dict[str, str]:
    vehicles = client["gateway"]["entities"].find({"type": "vehicle"}, {"data.plate": 1})
    return {str(d["_id"]): d["data"]["plate"] for d in vehicles}


def _stored_plates(data_dir: Path) -> set[str]:
    server = EmbeddedServer(data_dir / "db")
    server.start()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(server.uri)
    try:
        return {d["data"]["plate"] for d in client["gateway"]["entities"].find({"type": "vehicle"})}
    finally:
        client.close()
        server.stop()


class _Fixes(ClientThreads):
    """Each thread posts fixes of its own vehicle, in time order, without a pause: an append
    round is under way (its inbox number being taken) whenever the database stops."""

    def _run(self, worker: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            at = T0 + timedelta(seconds=n)
            self._post(
                {"plate": f"FIX{worker}A00", "time": at.isoformat(), "lat": -23.55, "lon": -46.63}
            )


@pytest.mark.timeout(120)
def test_the_fold_goes_on_within_seconds_of_a_paused_database_continued(tmp_path: Path) -> None:
    """A round whose inbox number was being taken as the database stopped loses the answer
    (its deadline passes) while the database takes the number when it is continued: nobody
    wrote that number, and the fold waited GATEWAY_FOLD_GAP_SECONDS (30 s, kept here) before
    giving it up, so a fix appended after the pause was folded 30 s late. The round's process
    gives its number up itself once the database answers (store/fleet.py)."""
    gateway = Gateway(tmp_path, GATEWAY_DB_TIMEOUT_MS=str(DB_TIMEOUT_MS)).start()
    try:
        for worker in range(4):
            gateway.create("/api/v1/entities/vehicle", {"plate": f"FIX{worker}A00"})
        fixes = gateway.create(
            "/api/v1/triggers", {"name": "trackers", "target": "positions", "methods": ["POST"]}
        )
        database = gateway.db_pid
        with _Fixes(gateway, fixes, 4) as stream:
            wait_until(lambda: stream.statuses[200] + stream.statuses[201] >= 40, 60, "fixes")
            os.kill(database, signal.SIGSTOP)
            try:
                wait_until(lambda: stream.statuses[503] >= 4, 60, "503 answers")
            finally:
                os.kill(database, signal.SIGCONT)
            wait_until(gateway.ready, 60, "the gateway ready again by itself")
        later = T0 + timedelta(days=1)
        fix = {"plate": "FIX0A00", "time": later.isoformat(), "lat": -23.6, "lon": -46.63}
        path = f"/hooks/{fixes['id']}"
        headers = {"Authorization": f"Bearer {fixes['token']}"}
        wait_until(
            lambda: gateway.request("POST", path, fix, headers=headers)[0] in (200, 201),
            30,
            "the fix after the pause to be stored",
        )
        # Well under the 30 s a number taken as the database stopped was waited for.
        wait_until(lambda: _folded(gateway, {"FIX0A00": later}), 10, "the fold to fold it")
    finally:
        gateway.stop()


class _Timed(ClientThreads):
    """Each thread creates vehicles of its own, one after the other; each answer's status and
    how long it took are kept."""

    def __init__(self, gateway: Gateway, trigger: dict[str, Any], workers: int) -> None:
        super().__init__(gateway, trigger, workers)
        self.slowest = 0.0
        self.refusals: list[Any] = []

    def _run(self, worker: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            started = time.monotonic()
            status, body = self._post({"plate": f"ST{chr(65 + worker)}{n % 10_000:04d}"})
            with self._lock:
                self.slowest = max(self.slowest, time.monotonic() - started)
                if status not in (200, 201):
                    self.refusals.append((status, body))
            time.sleep(0.05)

    def answered(self) -> int:
        with self._lock:
            return self.statuses[200] + self.statuses[201]


class _Gauge(threading.Thread):
    """Reads `gateway_database_up` from /metrics every 0.1 s, keeping every value other than 1."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(daemon=True)
        self._gateway = gateway
        self.stop = threading.Event()
        self.lows: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(0.1):
            if (value := self.value()) != "1.0":
                self.lows.append(value)

    def value(self) -> str:
        status, _, text = self._gateway.request("GET", "/metrics", timeout=10)
        if status != 200:
            return f"/metrics {status}"
        found = re.search(r"^gateway_database_up (\S+)$", str(text), re.M)
        return found[1] if found else "missing"


@contextlib.contextmanager
def _own_database(tmp_path: Path) -> Iterator[tuple[EmbeddedServer, Gateway]]:
    """A SecantusDB of the test's own and a `gateway serve` on it (MONGODB_URI, the default
    5 s deadline) whose driver checks the server every 0.5 s instead of 10 s
    (`heartbeatFrequencyMS` in the URI): a heartbeat is under way whenever the database
    stalls for more than that, rather than in one stall of three."""
    server = EmbeddedServer(tmp_path / "db")
    server.start()
    gateway = Gateway(tmp_path / "gateway", MONGODB_URI=f"{server.uri}&heartbeatFrequencyMS=500")
    try:
        gateway.start()
        yield server, gateway
    finally:
        gateway.stop()
        server.stop()


@pytest.mark.timeout(120)
def test_a_database_stalled_for_less_than_the_deadline_slows_answers_and_refuses_none(
    tmp_path: Path,
) -> None:
    """The driver's heartbeat waited 2 s on its socket (connectTimeoutMS): a database that
    stalled 3 s (a slow disk flush, a loaded host; SIGSTOP here) had the server marked
    unknown, the writes in flight cancelled ("outcome unknown"), the process marked the
    database down at once and refused every request for seconds; `gateway_database_up` said
    0. Each operation has 5 s: the answers are slower, none is refused."""
    with _own_database(tmp_path) as (server, gateway):
        trigger = gateway.create(
            "/api/v1/triggers", {"name": "cars", "entity_type": "vehicle", "methods": ["POST"]}
        )
        gauge = _Gauge(gateway)
        gauge.start()
        try:
            with _Timed(gateway, trigger, 4) as stream:
                wait_until(lambda: stream.answered() >= 20, 60, "writes to be answered")
                database = server.pid
                assert database is not None
                os.kill(database, signal.SIGSTOP)
                try:
                    time.sleep(3)
                finally:
                    os.kill(database, signal.SIGCONT)
                answered = stream.answered()
                wait_until(lambda: stream.answered() >= answered + 20, 60, "writes after it")
        finally:
            gauge.stop.set()
            gauge.join(15)
        log = gateway.log()
    assert stream.refusals == [], stream.refusals[:3]
    assert stream.slowest > 2, stream.slowest  # the stall was felt: answers waited on it
    assert gauge.lows == [], gauge.lows
    assert "database marked down" not in log, log[-3000:]


@pytest.mark.timeout(120)
def test_a_killed_database_is_known_down_within_a_heartbeat_and_refused_at_once(
    tmp_path: Path,
) -> None:
    """A database that is not running refuses the connection: the driver's next heartbeat
    (here every 0.5 s) says so and the process knows it down at once, without waiting for a
    request or a ping; requests then get their 503 at once. Started again, it is used again."""
    with _own_database(tmp_path) as (server, gateway):
        trigger = gateway.create(
            "/api/v1/triggers", {"name": "cars", "entity_type": "vehicle", "methods": ["POST"]}
        )
        gauge = _Gauge(gateway)
        database = server.pid
        assert database is not None and gauge.value() == "1.0"
        os.kill(database, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: gauge.value() == "0.0", 10, "the database known down")
        assert time.monotonic() - killed < 2.5
        started = time.monotonic()
        status, headers, problem = gateway.request(
            "POST", f"/hooks/{trigger['id']}", {"plate": "KIL0001"}, headers=bearer(trigger)
        )
        assert (status, headers["Retry-After"]) == (503, "2"), problem
        assert problem["detail"].startswith("the database is unavailable"), problem
        assert time.monotonic() - started < 1
        wait_until(
            lambda: not alive(database) and server.exit_code() is not None, 10, "it to be gone"
        )
        server.start()
        wait_until(gateway.ready, 30, "the gateway ready again")
        assert gauge.value() == "1.0"
