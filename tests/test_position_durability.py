"""The kill experiment for position triggers (SPEC §5 and §6): a real `gateway serve` on its
embedded database takes concurrent fixes while the database process is SIGKILLed three times (or
frozen with SIGSTOP for 3 s, so that rounds time out and their inserts land later). Each
tracker resends a fix until it is answered, as trackers do. Afterwards every answered fix
must be in its vehicle's track, and every stored fix must be folded: the vehicle's last
position is its newest fix and its odometer the length of its whole track.

The tracks zigzag (each fix 30 m off the straight line, alternately left and right), so a
fix left out of the fold shortens the odometer by tens of metres: a stored fix the fold never
saw cannot hide."""

from __future__ import annotations

import math
import os
import re
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pymongo
import pytest

from gateway.fleet.geometry import haversine_m
from gateway.fleet.odometer import NOISE_GAP_S
from tests.processes import ClientThreads, Gateway, wait_until
from tests.support import auth

TRACKERS = 6
FAULTS = int(os.environ.get("KILL_EXPERIMENT_KILLS", "3"))
FIXES_BETWEEN_FAULTS = int(os.environ.get("KILL_EXPERIMENT_WRITES", "60"))
STEP_M = 30.0
# 27 km/h between fixes; more than the odometer's NOISE_GAP_S apart, so that the zigzag is
# measured as the vehicle's path, not as its receiver's noise (gateway/fleet/odometer.py).
SECONDS_PER_FIX = 4
assert SECONDS_PER_FIX > NOISE_GAP_S
DEGREE_M = 111_195.0
# A number a killed or frozen round took and never wrote holds the fold this long (30 s by
# default): twice these tests' database deadlines (1.5 and 2 s) and more. A round still in
# flight past it hands its fixes on under a new number: more work, nothing lost.
GAP_SECONDS = "4"


def _plate(tracker: int) -> str:
    return f"KP{chr(65 + tracker)}1A23"


def _fix(tracker: int, n: int, start: datetime) -> dict[str, Any]:
    """The tracker's n-th fix: eastwards, zigzagging 30 m either side of its own parallel."""
    lat = -23.5 - tracker * 0.01 + (1 if n % 2 else -1) * STEP_M / DEGREE_M
    lon = -46.6 + n * STEP_M / (DEGREE_M * math.cos(math.radians(23.5)))
    time = start + timedelta(seconds=n * SECONDS_PER_FIX)
    return {
        "plate": _plate(tracker),
        "time": time.isoformat().replace("+00:00", "Z"),
        "lat": round(lat, 7),
        "lon": round(lon, 7),
        "accuracy_m": 5,
    }


class _Trackers(ClientThreads):
    """TRACKERS threads, one per vehicle, each sending its fixes in order and resending one
    until it is answered 2xx."""

    def __init__(self, gateway: Gateway, trigger: dict[str, Any], start: datetime) -> None:
        super().__init__(gateway, trigger, TRACKERS)
        self._start = start
        self.answered: dict[str, list[str]] = {_plate(t): [] for t in range(TRACKERS)}

    def _run(self, tracker: int) -> None:
        n = 0
        while not self.stop.is_set():
            fix = _fix(tracker, n, self._start)
            status, body = self._post(fix)
            if status in (200, 201):
                with self._lock:
                    self.answered[fix["plate"]].append(body["id"])
                n += 1
            else:
                time.sleep(0.01)  # down, or refusing: resend a little later

    def count(self) -> int:
        with self._lock:
            return sum(len(ids) for ids in self.answered.values())


def _track(gateway: Gateway, plate: str) -> list[dict[str, Any]]:
    fixes: list[dict[str, Any]] = []
    cursor = ""
    while True:
        query = f"?limit=200&cursor={cursor}" if cursor else "?limit=200"
        status, page = gateway.get(f"/api/v1/entities/vehicle/{plate}/positions{query}", auth())
        assert status == 200, page
        fixes += page["items"]
        if not page["next_cursor"]:
            return fixes
        cursor = page["next_cursor"]


def _folded(gateway: Gateway, plate: str, track: list[dict[str, Any]]) -> dict[str, Any]:
    """What the fold holds for the vehicle, beside what its track says it should."""
    accepted = [f for f in track if not f["rejected"]]
    length = sum(haversine_m(a["lat"], a["lon"], b["lat"], b["lon"]) for a, b in pairwise(accepted))
    status, vehicle = gateway.get(f"/api/v1/entities/vehicle/{plate}", auth())
    assert status == 200, vehicle
    data = vehicle.get("data", vehicle)
    return {
        "track_km": round(length / 1000, 3),
        "odometer_km": data.get("odometer_km"),
        "newest": (accepted[-1]["lat"], accepted[-1]["lon"]),
        "last_position": (
            data.get("last_position", {}).get("lat"),
            data.get("last_position", {}).get("lon"),
        ),
    }


def _settled(report: dict[str, Any]) -> bool:
    odometer = report["odometer_km"]
    return (
        odometer is not None
        and abs(odometer - report["track_km"]) < 0.002
        and report["last_position"] == report["newest"]
    )


def _kill(gateway: Gateway) -> None:
    os.kill(gateway.db_pid, signal.SIGKILL)  # mid-stream: rounds are in flight
    wait_until(gateway.ready, 60, "the database to be restarted")


def _freeze(gateway: Gateway) -> None:
    """SIGSTOP for 3 s: the rounds in flight time out (their outcome unknown to the gateway),
    and their inserts may land once the database runs again."""
    os.kill(gateway.db_pid, signal.SIGSTOP)
    try:
        time.sleep(3)
    finally:
        os.kill(gateway.db_pid, signal.SIGCONT)
    wait_until(gateway.ready, 60, "the database to answer again")


def _killable(tmp_path: Path, mongodb_uri: str, database: str) -> Gateway:
    """A `gateway serve` to SIGKILL: short database deadlines and fold gap, and its fold and
    relay shards free 3 s after it dies (not the default 10)."""
    return Gateway(
        tmp_path,
        MONGODB_URI=mongodb_uri,
        GATEWAY_DATABASE=database,
        GATEWAY_DB_TIMEOUT_MS="2000",
        GATEWAY_FOLD_GAP_SECONDS=GAP_SECONDS,
        GATEWAY_SHARD_LEASE_SECONDS="3",
    ).start()


def _setup(gateway: Gateway) -> dict[str, Any]:
    """The trackers' vehicles and the position trigger they post to."""
    for tracker in range(TRACKERS):
        gateway.create("/api/v1/entities/vehicle", {"plate": _plate(tracker)})
    spec = {"name": "trackers", "target": "positions", "methods": ["POST"]}
    return dict(gateway.create("/api/v1/triggers", spec))


def _under_faults(
    gateway: Gateway, fault: Callable[[Gateway], None], times: int
) -> tuple[_Trackers, dict[str, list[dict[str, Any]]]]:
    """The trackers post while `fault` strikes `times` times, each after another
    FIXES_BETWEEN_FAULTS answered fixes; then what `_check` finds."""
    trigger = _setup(gateway)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    with _Trackers(gateway, trigger, start) as trackers:
        for _ in range(times):
            target = trackers.count() + FIXES_BETWEEN_FAULTS
            wait_until(lambda t=target: trackers.count() >= t, 60, "fixes to be answered")
            fault(gateway)
        target = trackers.count() + FIXES_BETWEEN_FAULTS
        wait_until(lambda: trackers.count() >= target, 60, "fixes after the last fault")
    return trackers, _check(gateway, trackers)


def _check(gateway: Gateway, trackers: _Trackers) -> dict[str, list[dict[str, Any]]]:
    """Every answered fix is in its vehicle's track, and every stored fix is folded (within
    90 s: a number taken but never written holds the fold back until it gives it up)."""
    tracks = {plate: _track(gateway, plate) for plate in trackers.answered}
    stored = {plate: {f["id"] for f in track} for plate, track in tracks.items()}
    lost = [i for plate, ids in trackers.answered.items() for i in ids if i not in stored[plate]]
    assert not lost, f"answered fixes missing from the tracks: {lost}"
    reports: dict[str, dict[str, Any]] = {}

    def all_folded() -> bool:
        reports.update({p: _folded(gateway, p, t) for p, t in tracks.items()})
        return all(_settled(r) for r in reports.values())

    try:
        wait_until(all_folded, 90, "every stored fix to be folded")
    except AssertionError:
        unsettled = {p: r for p, r in reports.items() if not _settled(r)}
        raise AssertionError(f"stored fixes left out of the fold: {unsettled}") from None
    return tracks


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("fault", "times"),
    # One freeze: each leaves an inbox number whose taking timed out, which the fold waits
    # GAP_SECONDS for before it skips it.
    [(_kill, FAULTS), (_freeze, 1)],
    ids=["killed", "frozen"],
)
def test_no_answered_fix_is_lost_nor_left_unfolded_when_the_database_fails_mid_stream(
    tmp_path: Path, fault: Callable[[Gateway], None], times: int
) -> None:
    gateway = Gateway(
        tmp_path, GATEWAY_DB_TIMEOUT_MS="1500", GATEWAY_FOLD_GAP_SECONDS=GAP_SECONDS
    ).start()
    try:
        trackers, tracks = _under_faults(gateway, fault, times)
    finally:
        gateway.stop()
    print(
        f"\nposition fault experiment: {times} x {fault.__name__}, {trackers.count()} fixes "
        f"answered, {sum(len(t) for t in tracks.values())} stored; statuses "
        f"{dict(trackers.statuses)}"
    )


def _kill_between_insert_and_inbox(gateway: Gateway, db: Any, tries: int = 500) -> bool:
    """SIGKILL the gateway while a round has stored fixes (answered, or about to be) but not
    yet written them to the fold's inbox, freezing it (SIGSTOP) to look and letting it run
    between looks; after `tries` looks, kill it wherever it is. Whether it was caught so."""
    assert gateway.proc is not None
    for _ in range(tries):
        gateway.proc.send_signal(signal.SIGSTOP)
        newest = db["positions"].find({}, {"seq": 1}).sort("at", -1).limit(TRACKERS * 2)
        numbers = {doc["seq"] for doc in newest}
        if missing := [n for n in numbers if not _in_inbox(db, n)]:
            gateway.kill()
            return _stays_missing(db, missing)
        gateway.proc.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    gateway.kill()
    return False


def _in_inbox(db: Any, number: int) -> bool:
    return db["fleet_inbox"].find_one({"_id": number}, {"_id": 1}) is not None


def _stays_missing(db: Any, numbers: list[int], settle_seconds: float = 2.0) -> bool:
    """Whether one of these inbox numbers is still missing once the killed gateway's last
    commands have landed: frozen, it may have sent a round's inbox write already, which the
    database applies after the kill (the kill then caught nothing: the number is not given
    up, it is read)."""
    deadline = time.monotonic() + settle_seconds
    while time.monotonic() < deadline:
        if all(_in_inbox(db, n) for n in numbers):
            return False
        time.sleep(0.05)
    return True


@pytest.mark.timeout(300)
def test_no_answered_fix_is_lost_nor_left_unfolded_when_the_gateway_is_killed_mid_stream(
    tmp_path: Path, mongodb_uri: str
) -> None:
    """`gateway serve` SIGKILLed three times under the trackers, each time after a round
    stored its fixes and before it wrote them to the fold's inbox, and started again: the
    fold, giving the round's number up, finds them by that number and folds them."""
    database = f"gateway_kill_{os.getpid()}"
    gateway = _killable(tmp_path, mongodb_uri, database)
    db = pymongo.MongoClient(mongodb_uri)[database]
    caught: list[bool] = []

    def kill_and_restart(gateway: Gateway) -> None:
        caught.append(_kill_between_insert_and_inbox(gateway, db))
        gateway.start(timeout=60)  # same port and database: the trackers resend

    try:
        trackers, tracks = _under_faults(gateway, kill_and_restart, FAULTS)
    finally:
        gateway.stop()
        db.client.drop_database(database)
        db.client.close()
    recovered = sum(int(n) for n in re.findall(r"given up, with the (\d+) fixes", gateway.log()))
    print(
        f"\ngateway kill experiment: {FAULTS} x SIGKILL ({sum(caught)} between a round's insert "
        f"and its inbox write), {trackers.count()} fixes answered, "
        f"{sum(len(t) for t in tracks.values())} stored, {recovered} found by the fold; "
        f"statuses {dict(trackers.statuses)}"
    )
    assert any(caught) and recovered


@pytest.mark.timeout(300)
def test_fixes_stored_by_a_gateway_killed_before_its_inbox_write_are_folded_with_nothing_after(
    tmp_path: Path, mongodb_uri: str
) -> None:
    """`gateway serve` SIGKILLed after a round stored its fixes (answered, or about to be) and
    before it wrote them to the fold's inbox, then started again with nothing posted after:
    no later inbox document makes the round's number a gap between two, but the counter is
    past the last document, so the fold gives the number up all the same (after GAP_SECONDS)
    and folds the round's fixes, found by its number."""
    database = f"gateway_quiet_kill_{os.getpid()}"
    gateway = _killable(tmp_path, mongodb_uri, database)
    db = pymongo.MongoClient(mongodb_uri)[database]
    caught = False
    try:
        trigger = _setup(gateway)
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        with _Trackers(gateway, trigger, start) as trackers:
            for _ in range(5):  # until a kill is caught between a round's insert and inbox write
                target = trackers.count() + FIXES_BETWEEN_FAULTS
                wait_until(lambda t=target: trackers.count() >= t, 60, "fixes to be answered")
                caught = _kill_between_insert_and_inbox(gateway, db)
                if caught:
                    break
                gateway.start(timeout=60)
        # The trackers are stopped: nothing is posted after the restart.
        assert caught, "no kill caught a round between its insert and its inbox write"
        gateway.start(timeout=60)
        _check(gateway, trackers)
    finally:
        gateway.stop()
        db.client.drop_database(database)
        db.client.close()
    assert re.search(r"given up, with the [1-9]\d* fixes", gateway.log())
