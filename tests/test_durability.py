"""The kill experiment (SPEC §5: "a database killed right after an answer loses nothing"):
a real `gateway serve` on its embedded database takes concurrent vehicle POSTs while the
database process is SIGKILLed several times; afterwards every write answered 2xx must be
stored, not stale, with its events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest
import yaml

from gateway.store.connection import REAP_SECONDS
from gateway.store.embedded import EmbeddedServer
from tests.processes import ClientThreads, Gateway, free_port, wait_until
from tests.support import auth

WORKERS = 8
# CI keeps the experiment short; KILL_EXPERIMENT_KILLS / _WRITES run a longer one by hand.
KILLS = int(os.environ.get("KILL_EXPERIMENT_KILLS", "3"))
WRITES_BETWEEN_KILLS = int(os.environ.get("KILL_EXPERIMENT_WRITES", "60"))


def _plate(worker: int, n: int) -> str:
    """A Mercosul plate (LLLNLNN) unique per (worker, n)."""
    letters = f"K{chr(65 + worker)}{chr(65 + n // 1000 % 26)}"
    return f"{letters}{n // 100 % 10}{chr(65 + n // 10 % 10)}{n % 10}{worker % 10}"


class _Stream(ClientThreads):
    """WORKERS threads POSTing until stopped: odd calls create a new vehicle, even ones move
    the worker's own vehicle's odometer forward (one writer per vehicle, so the last
    answered value is the least the database must hold)."""

    def __init__(self, gateway: Gateway, trigger: dict[str, Any]) -> None:
        super().__init__(gateway, trigger, WORKERS)
        self.unknown: list[tuple[dict[str, Any], dict[str, str], dict[str, Any]]] = []
        self.sent = 0
        self.answered: list[tuple[str, int, dict[str, Any]]] = []  # plate, odometer, answer
        self.last_sent: dict[str, int] = {}

    def _run(self, worker: int) -> None:
        own = f"UP{chr(65 + worker)}1A00"
        n = 0
        while not self.stop.is_set():
            n += 1
            plate, odometer = (_plate(worker, n), 1) if n % 2 else (own, n)
            with self._lock:
                self.sent += 1
                self.last_sent[plate] = odometer
            payload = {"plate": plate, "odometer_km": odometer}
            headers = {**self._headers, "Idempotency-Key": f"{worker}-{n}"}
            status, body = self._post(payload, headers)
            with self._lock:
                if status in (200, 201):
                    self.answered.append((plate, odometer, body))
                elif status == 503 and body.get("outcome") == "unknown":
                    self.unknown.append((payload, headers, body))

    def count(self) -> int:
        with self._lock:
            return len(self.answered)


def test_no_answered_write_is_lost_when_the_database_is_killed_mid_stream(
    tmp_path: Path,
) -> None:
    gateway = Gateway(tmp_path, GATEWAY_DB_TIMEOUT_MS="3000").start()
    try:
        status, _, trigger = gateway.request(
            "POST",
            "/api/v1/triggers",
            {"name": "durability", "entity_type": "vehicle", "methods": ["POST"]},
            headers=auth(),
        )
        assert status == 201, trigger
        with _Stream(gateway, trigger) as stream:
            for _ in range(KILLS):
                target = stream.count() + WRITES_BETWEEN_KILLS
                wait_until(lambda t=target: stream.count() >= t, 60, "writes to be answered")
                os.kill(gateway.db_pid, signal.SIGKILL)  # mid-stream: requests are in flight
                wait_until(gateway.ready, 60, "the database to be restarted")
            target = stream.count() + WRITES_BETWEEN_KILLS
            wait_until(lambda: stream.count() >= target, 60, "writes after the last restart")
    finally:
        gateway.stop()
    report = _verify(tmp_path, stream)
    print(
        f"\nkill experiment: {KILLS} SIGKILLs, {stream.sent} sent, {len(stream.answered)} "
        f"answered 2xx, {report['lost']} lost, {report['stale']} stale, "
        f"{report['events_lost']} events lost, {report['duplicated']} duplicated; "
        f"statuses {dict(stream.statuses)}"
    )
    assert report == {"lost": 0, "stale": 0, "events_lost": 0, "duplicated": 0}
    assert "the embedded database killed by signal 9" in gateway.log()


def test_database_freeze_bounds_requests_and_says_which_outcomes_are_unknown(
    tmp_path: Path,
) -> None:
    gateway = Gateway(tmp_path, GATEWAY_DB_TIMEOUT_MS="1000").start()
    try:
        status, _, trigger = gateway.request(
            "POST",
            "/api/v1/triggers",
            {"name": "freeze", "entity_type": "vehicle", "methods": ["POST"]},
            headers=auth(),
        )
        assert status == 201, trigger
        database = gateway.db_pid
        with _Stream(gateway, trigger) as stream:
            wait_until(lambda: stream.count() >= WRITES_BETWEEN_KILLS, 60, "writes")
            os.kill(database, signal.SIGSTOP)
            try:
                # In-flight requests end at the deadline (outcome unknown); once the
                # database is known frozen, new ones are refused at once.
                wait_until(lambda: stream.statuses[503] >= 50, 60, "503 answers")
                wait_until(lambda: gateway.get("/readyz")[0] == 503, 30, "readiness to drop")
            finally:
                os.kill(database, signal.SIGCONT)
            wait_until(gateway.ready, 60, "the database to answer again")
            target = stream.count() + WRITES_BETWEEN_KILLS
            wait_until(lambda: stream.count() >= target, 60, "writes after the freeze")
        assert stream.statuses[0] == 0  # no request hung past the client's 15 s
        assert stream.unknown, "no write was in flight when the database froze"
        for _, _, problem in stream.unknown:
            assert "Idempotency-Key" in problem["retry"] and problem["status"] == 503
        # The retry the problem document asks for: answered from the first call or applied
        # once (or, while the first call's marker is leased, told to retry later).
        retried: Counter[int] = Counter()
        for payload, headers, _ in stream.unknown:
            status, _, body = gateway.request(
                "POST", f"/hooks/{trigger['id']}", payload, headers=headers
            )
            retried[status] += 1
            if status in (200, 201):  # now the last answered write of its vehicle
                stream.answered.append((payload["plate"], payload["odometer_km"], body))
        assert set(retried) <= {200, 201, 409}, retried
    finally:
        gateway.stop()
    report = _verify(tmp_path, stream)
    print(
        f"\nfreeze experiment: {stream.sent} sent, {len(stream.answered)} answered 2xx, "
        f"{len(stream.unknown)} answered 503 outcome unknown (retried: {dict(retried)}), "
        f"{report['lost']} lost, {report['duplicated']} duplicated; "
        f"statuses {dict(stream.statuses)}"
    )
    assert report == {"lost": 0, "stale": 0, "events_lost": 0, "duplicated": 0}


def _event_key(entity_id: str, event: dict[str, Any]) -> tuple[str, str, int]:
    return (entity_id, event["type"], event["data"]["odometer_km"])


def _verify(data_dir: Path, stream: _Stream) -> dict[str, int]:
    """Read what the database holds, with the gateway stopped."""
    server = EmbeddedServer(data_dir / "db")
    server.start()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(server.uri)
    try:
        db = client["gateway"]
        entities = {d["data"]["plate"]: d for d in db.entities.find({"type": "vehicle"})}
        # (entity id, event type, odometer): each answered write's event, relayed or not yet.
        events = {_event_key(d["entity"]["id"], d) for d in db.events.find()}
        events |= {
            _event_key(str(d["_id"]), e) for d in entities.values() for e in d.get("outbox", [])
        }
        created = Counter(
            d["entity"]["id"] for d in db.events.find({"type": "entity.created"}, {"entity": 1})
        )
    finally:
        client.close()
        server.stop()
    newest: dict[str, int] = {}
    expected: list[tuple[str, str, int]] = []
    for plate, odometer, body in stream.answered:
        newest[plate] = odometer  # one writer per vehicle: the last answered is the newest
        expected += [(body["id"], event_type, odometer) for event_type in body["events"]]
    lost = [p for p in newest if p not in entities]
    stale = [
        p
        for p, odometer in newest.items()
        if p in entities and entities[p]["data"]["odometer_km"] < odometer
    ]
    return {
        "lost": len(lost),
        "stale": len(stale),
        "events_lost": len([e for e in expected if e not in events]),
        "duplicated": sum(n - 1 for n in created.values() if n > 1),
    }


def test_no_answered_write_is_lost_when_the_gateway_is_killed_mid_stream(
    tmp_path: Path,
) -> None:
    first = Gateway(tmp_path).start()
    status, _, trigger = first.request(
        "POST",
        "/api/v1/triggers",
        {"name": "gateway-kill", "entity_type": "vehicle", "methods": ["POST"]},
        headers=auth(),
    )
    assert status == 201, trigger
    with _Stream(first, trigger) as stream:
        wait_until(lambda: stream.count() >= WRITES_BETWEEN_KILLS, 60, "writes")
        first.kill()  # SIGKILL: requests in flight get no answer; the database goes with it
        stream.stop.set()
    second = Gateway(tmp_path).start()  # same data dir: it takes over the outboxes
    try:
        status, _, answer = second.request(
            "POST",
            f"/hooks/{trigger['id']}",
            {"plate": "ZZZ9Z99", "odometer_km": 1},
            headers={"Authorization": f"Bearer {trigger['token']}"},
        )
        assert status == 201, answer
    finally:
        second.stop()
    report = _verify(tmp_path, stream)
    print(
        f"\ngateway kill: {stream.sent} sent, {len(stream.answered)} answered 2xx, "
        f"{report['lost']} lost, {report['duplicated']} duplicated"
    )
    assert report == {"lost": 0, "stale": 0, "events_lost": 0, "duplicated": 0}


class _Checklists(ClientThreads):
    """WORKERS threads POSTing checklists, each for its own vehicle with a growing odometer:
    each answered checklist wrote the checklist and the vehicle's reading together."""

    def __init__(self, gateway: Gateway, trigger: dict[str, Any]) -> None:
        super().__init__(gateway, trigger, WORKERS)
        self.answered: list[tuple[str, str, int]] = []  # checklist key, plate, odometer

    def _run(self, worker: int) -> None:
        plate = f"CK{chr(65 + worker)}1A00"
        start = datetime(2026, 11, 25, tzinfo=UTC)
        n = 0
        while not self.stop.is_set():
            n += 1
            key = f"chk-{worker}-{n}"
            payload = {
                "checklistId": key,
                "placa": plate,
                "condutorCpf": "52998224725",
                "odometroKm": 1000 + n,
                "concluidoEm": (start + timedelta(minutes=n)).isoformat(),
                "respostas": [{"item": "pneus", "ok": True}],
            }
            status = 0
            while status not in (200, 201) and not self.stop.is_set():
                status, _ = self._post(payload, {"Idempotency-Key": key})
                if status not in (200, 201):
                    time.sleep(0.1)  # the database restarts: the same checklist again
            if status in (200, 201):
                with self._lock:
                    self.answered.append((key, plate, 1000 + n))

    def count(self) -> int:
        with self._lock:
            return len(self.answered)


def test_a_write_of_several_entities_is_never_lost_nor_half_kept_when_the_database_is_killed(
    tmp_path: Path,
) -> None:
    """The checklist mapping writes a checklist and its vehicle's reading in one transaction.
    After SIGKILLs of the database mid-stream, every answered checklist is stored, and each
    vehicle's odometer is exactly the highest reading among its stored checklists: no
    checklist kept without its reading, no reading without its checklist."""
    gateway = Gateway(tmp_path, GATEWAY_DB_TIMEOUT_MS="3000").start()
    mapping = (Path(__file__).resolve().parents[1] / "mappings" / "checklist.yaml").read_text()
    try:
        for worker in range(WORKERS):
            vehicle = {"plate": f"CK{chr(65 + worker)}1A00", "odometer_km": 0}
            status, _, body = gateway.request(
                "POST", "/api/v1/entities/vehicle", vehicle, headers=auth()
            )
            assert status == 201, body
        status, _, body = gateway.request(
            "POST", "/api/v1/mappings", yaml.safe_load(mapping), headers=auth()
        )
        assert status == 201, body
        spec = {
            "name": "checklists",
            "entity_type": "other",
            "kind": "checklist",
            "methods": ["POST"],
            "mapping": "checklist",
        }
        status, _, trigger = gateway.request("POST", "/api/v1/triggers", spec, headers=auth())
        assert status == 201, trigger
        with _Checklists(gateway, trigger) as stream:
            for _ in range(2):
                target = stream.count() + WRITES_BETWEEN_KILLS // 2
                wait_until(lambda t=target: stream.count() >= t, 60, "checklists answered")
                os.kill(gateway.db_pid, signal.SIGKILL)
                wait_until(gateway.ready, 60, "the database to be restarted")
            target = stream.count() + WRITES_BETWEEN_KILLS // 2
            wait_until(lambda: stream.count() >= target, 60, "checklists after the restart")
    finally:
        gateway.stop()
    server = EmbeddedServer(tmp_path / "db")
    server.start()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(server.uri)
    try:
        db = client["gateway"]
        checklists = {d["data"]["key"]: d["data"] for d in db.entities.find({"type": "other"})}
        odometers = {
            d["data"]["plate"]: d["data"]["odometer_km"]
            for d in db.entities.find({"type": "vehicle"})
        }
    finally:
        client.close()
        server.stop()
    lost = [key for key, _, _ in stream.answered if key not in checklists]
    highest: dict[str, int] = {}
    for data in checklists.values():
        plate = data["vehicle_plate"]
        highest[plate] = max(highest.get(plate, 0), data["odometer_km"])
    half = {
        p: (odometers[p], highest.get(p, 0)) for p in odometers if odometers[p] != highest.get(p, 0)
    }
    print(
        f"\nkill experiment (several entities per write): {len(stream.answered)} answered, "
        f"{len(checklists)} stored, {len(lost)} lost, {len(half)} half-kept; "
        f"statuses {dict(stream.statuses)}"
    )
    assert lost == [] and half == {}


FAULT_HOOK = Path(__file__).parent / "fault_hook"
TRANSACTION_LIFETIME_SECONDS = 2 * REAP_SECONDS


class _ServerWithLifetime:
    """A SecantusDB server whose transactions idle at most `lifetime` seconds before it
    aborts them (tests/secantusd_lifetime.py), on a free loopback port."""

    def __init__(self, storage: Path, lifetime: float) -> None:
        self.storage, self.lifetime = storage, lifetime
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/?retryWrites=false&directConnection=true"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        script = Path(__file__).with_name("secantusd_lifetime.py")
        with self.storage.with_suffix(".log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, str(script), str(self.lifetime), "--host", "127.0.0.1"),
                    *("--port", str(self.port), "--storage-path", str(self.storage)),
                    *("--log-level", "WARNING", "--cache-size", "256M"),
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )

        def answers() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "the database exited"
            probe: pymongo.MongoClient[dict[str, Any]]
            with pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500) as probe:
                try:
                    probe.admin.command("ping")
                except pymongo.errors.PyMongoError:
                    return False
            return True

        wait_until(answers, 30, "the database to answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


DATA = Path(__file__).parent / "data"


def _bearer(trigger: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {trigger['token']}"}


def _fold_waiting(gateway: Gateway) -> float:
    status, _, text = gateway.request("GET", "/metrics", timeout=10)
    assert status == 200, text
    for line in text.splitlines():
        if line.startswith("gateway_fleet_fold_oldest_waiting_seconds"):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.timeout(240)  # the server's transaction lifetime, waited out
def test_a_vehicle_a_killed_process_left_in_an_open_transaction_is_writable_again_and_folded(
    tmp_path: Path,
) -> None:
    """A gateway SIGKILLed inside a checklist's transaction, after the vehicle's write and
    before the commit, leaves the transaction open in the database (SecantusDB reaps one only
    when another transaction reaches it): the vehicle's writes and the fold's wait on it. The
    gateway has it aborted: the vehicle is written again, and the fold's stuck batch (this
    vehicle and another) lands, within the server's transaction lifetime and a reaper's
    interval; meanwhile the fold's log says why and its waiting gauge counts the batch.

    The server's lifetime is TRANSACTION_LIFETIME_SECONDS here, not its default 60 s (as a
    MongoDB deployment's `transactionLifetimeLimitSeconds` may be): what is shown is that the
    gateway has the server reap it, not how long the server waits. It is twice the gateway's
    reaping interval (REAP_SECONDS, 15 s): the second gateway's first reap, 15 s after its
    start, cannot abort it yet (the held write and the gauge are looked at before), its
    second one, 30 s after its start, does."""
    server = _ServerWithLifetime(tmp_path / "db", TRANSACTION_LIFETIME_SECONDS)
    server.start()
    mapping = (Path(__file__).resolve().parents[1] / "mappings" / "checklist.yaml").read_text()
    common = {"MONGODB_URI": server.uri, "GATEWAY_DB_TIMEOUT_MS": "2000"}
    hook = {
        "PYTHONPATH": os.pathsep.join([str(FAULT_HOOK), os.environ.get("PYTHONPATH", "")]),
        "GATEWAY_TEST_FAULT_AT": "gateway.store.entities.EntityStore._write_in",
        "GATEWAY_TEST_FAULT_CALL": "2",  # the checklist's, then the vehicle's
        "GATEWAY_TEST_FAULT_WHEN": "return",
        "GATEWAY_TEST_FAULT_MARKER": str(tmp_path / "killed"),
    }
    killed = Gateway(tmp_path / "killed-gateway", **common, **hook).start()
    second: Gateway | None = None
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(server.uri)
    try:
        # No reading of their own: the checklist's is the vehicle's first, always written (an
        # older one than the vehicle's own, once the fold has taken that, would be skipped).
        for plate in ("ABC1D23", "XYZ9A88"):
            killed.create("/api/v1/entities/vehicle", {"plate": plate})
        killed.create("/api/v1/mappings", yaml.safe_load(mapping))
        checklists = killed.create(
            "/api/v1/triggers",
            {
                "name": "c",
                "entity_type": "other",
                "kind": "checklist",
                "mapping": "checklist",
                "methods": ["POST"],
            },
        )
        vehicles = killed.create(
            "/api/v1/triggers", {"name": "v", "entity_type": "vehicle", "methods": ["POST"]}
        )
        trackers = killed.create(
            "/api/v1/triggers", {"name": "p", "target": "positions", "methods": ["POST"]}
        )
        payload = json.loads((DATA / "partner_payloads" / "checklist_completed.json").read_text())
        status, _, _ = killed.request(
            "POST", f"/hooks/{checklists['id']}", payload, headers=_bearer(checklists)
        )
        assert status == 0 and (tmp_path / "killed").read_text() == "kill"  # no answer: killed
        assert killed.proc is not None and killed.proc.wait(10) == -signal.SIGKILL
        second = Gateway(tmp_path / "second-gateway", **common).start()
        started = time.monotonic()
        # The fold's batch of both vehicles: the first one's write waits on the open transaction.
        at = datetime.now(UTC).replace(microsecond=0).isoformat()
        fixes = [
            {"plate": plate, "time": at, "lat": -23.56, "lon": -46.65, "speed_kmh": 0}
            for plate in ("ABC1D23", "XYZ9A88")
        ]
        status, _, answer = second.request(
            "POST", f"/hooks/{trackers['id']}", fixes, headers=_bearer(trackers)
        )
        assert status == 200, answer
        write = {"plate": "ABC1D23", "model": "after"}
        status, _, answer = second.request(
            "POST", f"/hooks/{vehicles['id']}", write, headers=_bearer(vehicles)
        )
        assert status == 503 and answer["outcome"] == "unknown", answer  # held
        wait_until(lambda: _fold_waiting(second) >= 3, 30, "the gauge to count the stuck batch")
        wait_until(
            lambda: (
                second.request(
                    "POST", f"/hooks/{vehicles['id']}", write, headers=_bearer(vehicles)
                )[0]
                == 200
            ),
            100,
            "the vehicle to be writable again",
        )
        writable_after = time.monotonic() - started

        def folded() -> bool:
            docs = client["gateway"].entities.find({"type": "vehicle"})
            return all(d["data"].get("last_position") for d in docs)

        wait_until(folded, 30, "the fold's batch to be written")
        wait_until(lambda: _fold_waiting(second) < 3, 30, "the gauge to drop")
        vehicle = client["gateway"].entities.find_one({"data.plate": "ABC1D23"})
        assert vehicle is not None and vehicle["data"]["model"] == "after"
        # the checklist's reading taken back with it
        assert vehicle["data"].get("odometer_km") != payload["odometroKm"]
        assert client["gateway"].entities.count_documents({"type": "other"}) == 0
    finally:
        client.close()
        killed.stop()
        if second is not None:
            second.stop()
        server.stop()
    log = second.log()
    assert "held by an unfinished transaction" in log
    assert "restarted before the writes were journaled" not in log
    print(f"\norphaned transaction: the vehicle writable again after {writable_after:.0f} s")
