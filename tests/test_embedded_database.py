"""The embedded database as an operator meets it, with real processes and real signals: it
dies with its gateway, a leftover one is stopped, a crash is survived (SPEC §3.4, §3.1)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest
import time_machine
from pymongo import AsyncMongoClient, monitoring

from gateway.background import cancel_and_wait
from gateway.config import Settings
from gateway.entities import Origin
from gateway.errors import StoreUnavailable
from gateway.services import Services, open_services
from gateway.store import Store, connection, embedded, launcher
from gateway.store import supervisor as supervisor_module
from gateway.store.client import open_client
from gateway.store.embedded import EmbeddedServer, EmbeddedServerError, child_environment
from gateway.store.health import DatabaseHealth
from gateway.store.supervisor import EmbeddedSupervisor, FreeSpaceFloor, RestartPlan
from tests.processes import Gateway, alive, free_port, until, wait_until
from tests.support import SECRET_KEY, auth

_ORIGIN = Origin("trigger", "t1")


def test_database_child_gets_none_of_the_gateway_secrets(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, GATEWAY_METRICS_TOKEN="metrics-token-not-for-the-db").start()
    try:
        environ = Path(f"/proc/{gateway.db_pid}/environ").read_bytes()
    finally:
        gateway.stop()
    assert SECRET_KEY.encode() not in environ
    assert b"metrics-token-not-for-the-db" not in environ
    assert b"GATEWAY_" not in environ


def test_child_environment_keeps_only_what_the_database_needs() -> None:
    env = child_environment(
        {"PATH": "/bin", "GATEWAY_SECRET_KEY": "k", "MONGODB_URI": "mongodb://u:p@h", "LANG": "C"}
    )
    assert env == {"PATH": "/bin", "LANG": "C", "PYTHONUNBUFFERED": "1"}


def test_killed_gateway_takes_its_database_along_and_the_next_one_starts(tmp_path: Path) -> None:
    first = Gateway(tmp_path).start()
    database = first.db_pid
    first.kill()
    wait_until(lambda: not alive(database), 20, "the database of the killed gateway to stop")
    second = Gateway(tmp_path).start()  # same data dir: the storage lock is free again
    try:
        assert second.get("/readyz")[0] == 200
    finally:
        second.stop()


def test_a_second_process_on_a_running_gateway_s_data_dir_is_refused_its_database_untouched(
    tmp_path: Path,
) -> None:
    """`gateway worker` beside `gateway serve` on the embedded database (docs/scaling.md's
    "Processes on one machine") took the serve's live database for a leftover and stopped
    it; the serve's supervisor restarted its own, stopping the worker's: they fought on."""
    first = Gateway(tmp_path).start()
    try:
        database = first.db_pid
        env = {**first.env, "GATEWAY_LOG_JSON": "false"}
        for command in (["worker", "--jobs", "relay"], ["serve", "--port", str(free_port())]):
            second = subprocess.run(
                [sys.executable, "-m", "gateway", *command],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
            assert second.returncode == 1, second.stderr
            assert "another gateway process manages the embedded database" in second.stderr
            assert "GATEWAY_DATA_DIR" in second.stderr
            assert "Traceback" not in second.stderr and "command failed" not in second.stderr
            assert f"on {tmp_path / 'db'} (mongodb://127.0.0.1:" in second.stderr
        assert alive(database) and first.db_pid == database
        assert "stopping a database left running" not in first.log()
        assert "restarting it" not in first.log()
        assert first.get("/readyz")[0] == 200
    finally:
        first.stop()


def test_start_stops_a_database_left_running_on_the_same_storage(tmp_path: Path) -> None:
    # As a gateway from before the launcher left it: secantusd-py alone on our storage.
    server = EmbeddedServer(tmp_path / "db")
    leftover = subprocess.Popen(
        [_secantusd(), "--port", str(free_port()), "--storage-path", str(tmp_path / "db")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        server.pid_file.write_text(f"{leftover.pid}\n")
        gateway = Gateway(tmp_path).start()
        gateway.stop()
        assert leftover.wait(5) is not None
        assert "stopping a database left running" in gateway.log()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_the_database_s_files_are_its_user_s_alone_whatever_the_umask(tmp_path: Path) -> None:
    """Under the usual umask (022) the database's directory was 0755 and its files 0644 beside
    the 0600 secret key: every local user read every tenant's data and the UI's password
    hashes. The directory is 0700 (an open one an earlier gateway left is closed, with a
    warning), the files the database, its launcher and its log write 0600."""
    storage = tmp_path / "db"
    storage.mkdir()
    storage.chmod(0o755)  # a data dir of a gateway from before
    before = os.umask(0o022)
    try:
        gateway = Gateway(tmp_path).start()  # inherits the umask
    finally:
        os.umask(before)
    try:
        body = {"name": "t", "entity_type": "vehicle"}
        created = gateway.request("POST", "/api/v1/triggers", body, auth("acme"))
        assert created[0] == 201, created
        files = [tmp_path / "db.log", tmp_path / "db.pid", *storage.rglob("*")]
        modes = {str(p): stat.S_IMODE(p.stat().st_mode) for p in files if p.is_file()}
    finally:
        gateway.stop()
    assert stat.S_IMODE(storage.stat().st_mode) == 0o700
    assert len(modes) > 10, modes  # the collections, the journal, the log and the pid
    assert {p: oct(m) for p, m in modes.items() if m & 0o077} == {}
    assert f"the embedded database's directory {storage} was open to other users" in gateway.log()


def test_pid_file_naming_another_process_is_left_alone(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "db.pid").write_text(f"{other.pid}\n")
        Gateway(tmp_path).start().stop()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_crashed_database_is_restarted_and_requests_get_503_at_once_meanwhile(
    tmp_path: Path,
) -> None:
    # The readiness probe that finds the database gone waits out a server selection: 2 s,
    # not the default 5 (a request after it is refused from the known state, deadline or not).
    gateway = Gateway(tmp_path, GATEWAY_DB_TIMEOUT_MS="2000").start()
    try:
        database = gateway.db_pid
        launcher = _parent_of(database)
        # The launcher, stopped, cannot report the death yet: the down window is ours to
        # observe, whatever the machine's speed; the driver alone knows the database is gone.
        os.kill(launcher, signal.SIGSTOP)
        try:
            os.kill(database, signal.SIGKILL)
            wait_until(lambda: gateway.get("/readyz")[0] == 503, 10, "readiness to drop")
            status, headers, body = gateway.request(
                "POST", "/api/v1/entities/vehicle", {"plate": "ABC1D23"}, headers=auth()
            )
            assert status == 503 and headers["Retry-After"]
            # From the known state, checked before anything: not a 5 s server-selection wait.
            assert body["detail"].startswith("the database is unavailable (")
            assert "outcome" not in body  # refused before anything was attempted
            assert gateway.get("/healthz")[0] == 200
        finally:
            os.kill(launcher, signal.SIGCONT)
        wait_until(gateway.ready, 30, "the restarted database")
        status, _, _ = gateway.request(
            "POST", "/api/v1/entities/vehicle", {"plate": "ABC1D23"}, headers=auth()
        )
        assert status == 201
        assert "the embedded database killed by signal 9; restarting it" in gateway.log()
    finally:
        gateway.stop()


# docs/operations.md "Shutdown": with the database known down and no request in flight, the
# background jobs get 3 s and the client 2 s; the database, continued, stops in about a second
# (unloaded: 4 s in all; the deadlines one after the other took 20 s, and 35 s before the
# database was continued). A loaded machine slows the work, not the deadlines.
FROZEN_SHUTDOWN_SECONDS = 12


def test_a_gateway_stopped_while_its_database_is_frozen_exits_within_its_deadlines(
    tmp_path: Path,
) -> None:
    """One 5 s deadline after another (each runner's claim under way, then each hand-back),
    then 15 s for a frozen database that could not act on its SIGTERM, killed at last: such
    a shutdown took about 35 s, past Kubernetes' 30 s grace. Before that, a cancellation that
    landed while the driver waited to select a server came out of pymongo's asyncio lock as
    RuntimeError("Lock is not acquired"): the loops retried it, and SIGTERM never ended the
    process. The deadlines are the defaults (GATEWAY_DB_TIMEOUT_MS 5 s)."""
    gateway = Gateway(tmp_path).start()
    database = gateway.db_pid
    os.kill(database, signal.SIGSTOP)
    try:
        wait_until(lambda: gateway.get("/readyz")[0] == 503, 20, "the database known down")
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        try:
            code = gateway.proc.wait(FROZEN_SHUTDOWN_SECONDS)
        except subprocess.TimeoutExpired:
            gateway.proc.kill()
            gateway.proc.wait()
            database_log = (tmp_path / "db.log").read_text()[-1500:]
            message = f"SIGTERM did not stop the gateway in time:\n{gateway.log()[-3000:]}"
            raise AssertionError(f"{message}\n{database_log}") from None
        wait_until(lambda: not alive(database), 5, "the database reaped")
    finally:
        if alive(database):
            os.kill(database, signal.SIGKILL)
    assert code == 0
    log = gateway.log()
    # Stopped, not killed at its bound: it was continued before its SIGTERM.
    assert "embedded database did not stop" not in log
    assert "killed by signal" not in (tmp_path / "db.log").read_text()
    assert "Lock is not acquired" not in log


_STAND_IN = r"""
import os, signal, socket, sys, threading
# A stand-in for secantusd-py: it listens, its main thread waits, and its SIGTERM handler
# closes the listening socket first, then exits; but the first SIGTERM has no effect, as a
# signal CPython delivered and never ran the handler of.
listener = socket.create_server((sys.argv[2], int(sys.argv[4])))
received = []
def stop(signum, frame):
    received.append(signum)
    if len(received) > 1:
        listener.close()
        sys.exit(0)
signal.signal(signal.SIGTERM, stop)
threading.Event().wait()
"""


def test_a_frozen_database_that_ignores_its_stop_signal_is_sent_it_again(tmp_path: Path) -> None:
    """Continued by its launcher's SIGCONT and sent SIGTERM, a Python process blocked in its
    main thread's wait (secantusd-py's) now and then never ran the handler: the kernel had
    delivered the signal, CPython had not run it (2-5 in 1,000 under load, either order of
    the two signals: `bench/signal_race.py`). The gateway stopped while its database was
    frozen then waited the launcher's whole 10 s bound (the test above, past its 12 s). The
    launcher now sends the stop again a second later while the database still holds its
    listening socket (one that acts on it closes it first). Through the real launcher, with
    a stand-in database whose first SIGTERM is lost that way."""
    with _launched(tmp_path, _STAND_IN) as (proc, log):
        database = int((tmp_path / "db.pid").read_text())
        os.kill(database, signal.SIGSTOP)
        wait_until(lambda: _state(database) == "T", 5, "the stand-in database stopped")
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(5)
        except subprocess.TimeoutExpired:
            raise AssertionError("the database never got its stop signal again") from None
        assert code == 0
        assert "has not acted on its stop signal; again" in log.read_text()


def test_a_database_that_acts_on_its_stop_signal_is_sent_it_once(tmp_path: Path) -> None:
    """The real database, stopped: it closes its listening socket first, and the launcher
    sends no second SIGTERM into its stop (which would run the handler again inside it and
    exit without closing the storage). Asking "does it still accept connections?" said yes:
    a listening socket closed while a thread waits in its `accept` still takes them."""
    server = EmbeddedServer(tmp_path / "db")
    server.start()
    try:
        with pymongo.MongoClient(server.uri) as client:
            client["probe"]["c"].insert_one({"n": 1})
    finally:
        server.stop()
    log = (tmp_path / "db.log").read_text()
    assert "has not acted on its stop signal" not in log
    assert "killed by signal" not in log


def test_a_listening_socket_closed_under_a_waiting_accept_is_not_held_any_more() -> None:
    """What the launcher asks before it sends a stop again (`launcher._holds_listener`):
    whether the process still holds its listening socket, which SecantusDB closes first when
    it acts on its stop, though a thread of it may still wait in `accept` on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    waiting = threading.Thread(target=lambda: _accept_once(listener), daemon=True)
    waiting.start()
    try:
        assert launcher._holds_listener(os.getpid(), port)
    finally:
        listener.close()
    assert not launcher._holds_listener(os.getpid(), port)
    assert not launcher._holds_listener(os.getpid(), free_port())  # nobody listens there
    # Closed, yet still taking connections (what a connection probe took for "listening"):
    # the waiting `accept` takes this one and ends.
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    waiting.join(5)
    assert not waiting.is_alive()


_JOINS_ITS_ACCEPT = r"""
import signal, socket, sys, threading
# A stand-in for secantusd-py's stop: its SIGTERM handler closes the listening socket, then
# waits for the thread blocked in `accept` on it (SecantusDB's for up to 2 s; this one for
# good), which on Linux closing the socket does not wake.
listener = socket.create_server((sys.argv[2], int(sys.argv[4])))
stopping = threading.Event()
def serve():
    while not stopping.is_set():
        try:
            listener.accept()[0].close()
        except OSError:
            return
accepting = threading.Thread(target=serve)
accepting.start()
def stop(signum, frame):
    stopping.set()
    listener.close()
    accepting.join()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
accepting.join()
"""


def test_a_database_stopping_is_not_held_by_the_accept_waiting_on_its_closed_socket(
    tmp_path: Path,
) -> None:
    """SecantusDB's stop closes its listening socket, then waits up to 2 s for its thread
    blocked in `accept` on it, which the close does not wake (Linux): every stop of the
    embedded database (each gateway's, each one-shot command's) took 2 s more than its work.
    The launcher now connects once to the closed socket, and the waiting `accept` returns.
    Through the real launcher, with a stand-in database that would wait for good."""
    with _launched(tmp_path, _JOINS_ITS_ACCEPT) as (proc, log):
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(5)  # the launcher's bound is 10 s
        except subprocess.TimeoutExpired:
            raise AssertionError("the database's accept was never woken") from None
        assert code == 0, log.read_text()


@contextlib.contextmanager
def _launched(tmp_path: Path, stand_in: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The real launcher running a stand-in database (Python source), once it listens: the
    launcher's process and its log; killed at the end if still running."""
    port, pid_file, log = free_port(), tmp_path / "db.pid", tmp_path / "db.log"
    launcher_py = Path(embedded.__file__).with_name("launcher.py")
    command = [sys.executable, "-c", stand_in, "--host", "127.0.0.1", "--port", str(port)]
    read_fd, write_fd = os.pipe()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-I", str(launcher_py), str(read_fd), str(pid_file), "--", *command],
            pass_fds=(read_fd,),
            stdout=out,
        )
    os.close(read_fd)
    try:
        wait_until(lambda: _listens(port), 10, "the stand-in database listening")
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(write_fd)


def _accept_once(listener: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection, _ = listener.accept()
        connection.close()


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_database_restarted_after_a_crash_keeps_no_descriptor_of_the_dead_one(
    tmp_path: Path,
) -> None:
    """Each start after a crash used to open a new pipe to its launcher and keep the dead
    launcher's too: a database crashing now and then slowly used up the descriptors."""
    server = EmbeddedServer(tmp_path / "db")
    server.start()
    try:
        opened = len(os.listdir("/proc/self/fd"))
        database = server.pid
        assert database is not None
        os.kill(database, signal.SIGKILL)
        wait_until(lambda: server.exit_code() is not None, 10, "the launcher to exit")
        server.start()
        assert len(os.listdir("/proc/self/fd")) == opened
    finally:
        server.stop()


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _secantusd() -> str:
    import sys

    return str(Path(sys.executable).with_name("secantusd-py"))


async def test_on_the_embedded_database_no_index_is_a_ttl_index_and_the_gateway_expires_instead(
    services: Services,
) -> None:
    """SecantusDB's TTL sweep reads and decodes every document of each collection with a TTL
    index every 60 s, holding its storage lock (about 1.3 s per 100,000 documents, every
    request waiting). The gateway keeps it from ever having one: each TTL index is a plain
    index there, and the gateway drops what has expired through it (`Store.expiry`)."""
    db = services.store.db
    for name in await db.list_collection_names():
        for index in await (await db[name].list_indexes()).to_list(None):
            assert "expireAfterSeconds" not in index, (name, index)
    now = datetime.now(UTC)
    old, fresh = now - timedelta(days=2), now - timedelta(minutes=1)
    await db["idempotency"].insert_many(
        [{"_id": "a", "created_at": old}, {"_id": "b", "created_at": fresh}]
    )
    await db["ui_sessions"].insert_many(
        [{"_id": "a", "expires_at": fresh}, {"_id": "b", "expires_at": now + timedelta(hours=1)}]
    )
    await db["ui_login_throttle"].insert_one({"_id": "a", "updated_at": old})
    await db["notify_cooldowns"].insert_one({"_id": "a", "expires_at": fresh})
    assert await services.store.expiry.expire(now) == 4
    assert [d["_id"] for d in await db["idempotency"].find().to_list(None)] == ["b"]
    assert [d["_id"] for d in await db["ui_sessions"].find().to_list(None)] == ["b"]
    assert await db["ui_login_throttle"].count_documents({}) == 0
    assert await db["notify_cooldowns"].count_documents({}) == 0


async def test_a_running_gateway_expires_documents_past_their_ttl_on_its_own(
    settings: Settings, mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every process runs the expiry (`store/connection.py`), as often as MongoDB's sweep
    would (60 s; shortened here): a record past its TTL goes without anyone asking."""
    monkeypatch.setattr(connection, "EXPIRE_SECONDS", 0.05)
    async with open_services(settings, mongodb_uri=mongodb_uri) as services:
        old = datetime.now(UTC) - timedelta(days=2)
        await services.store.db["idempotency"].insert_one({"_id": "old", "created_at": old})
        for _ in range(200):
            if not await services.store.db["idempotency"].count_documents({}):
                break
            await asyncio.sleep(0.05)
        assert await services.store.db["idempotency"].count_documents({}) == 0


async def test_a_housekeeping_step_that_fails_unexpectedly_stops_no_other_step(
    settings: Settings, mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The housekeeping pass caught only the database's unavailability: any other error of
    one of its steps (the partner forget pass, the round-mark sweep) ended the loop, and
    with it the expiry of every record past its TTL, silently, until a restart (read50 M4).
    The step is logged and tried again; the others run."""
    monkeypatch.setattr(connection, "EXPIRE_SECONDS", 0.05)
    async with open_services(settings, mongodb_uri=mongodb_uri) as services:
        calls = 0

        async def broken() -> int:
            nonlocal calls
            calls += 1
            raise RuntimeError("a step's bug")

        services.store.housekeeping.insert(0, ("a broken step", broken))
        for _ in range(200):
            if calls >= 2:
                break
            await asyncio.sleep(0.05)
        old = datetime.now(UTC) - timedelta(days=2)
        await services.store.db["idempotency"].insert_one({"_id": "old", "created_at": old})
        for _ in range(200):
            if not await services.store.db["idempotency"].count_documents({}):
                break
            await asyncio.sleep(0.05)
        assert calls >= 2
        assert await services.store.db["idempotency"].count_documents({}) == 0


async def test_a_forward_step_of_the_hosts_clock_expires_nothing_before_its_time(
    settings: Settings, mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step of a process's host clock (NTP, by hand, an RTC kept in local time; the
    monotonic clock untouched) reached the expiry's cutoff before the next reading of the
    database server's clock: 100 days ahead, every stored position and every Idempotency-Key
    record was deleted for good (25 h: the records, the signature memory, the cooldowns). The
    gateway's time counts on from its last reading on a clock that does not step."""
    monkeypatch.setattr(connection, "EXPIRE_SECONDS", 0.05)
    async with open_services(settings, mongodb_uri=mongodb_uri) as services:
        db = services.store.db
        now = datetime.now(UTC)
        fixes = [{"t": now - timedelta(minutes=m), "lat": -23.5, "lon": -46.6} for m in (2, 1)]
        await services.store.positions.append("acme", "v1", fixes, "t")
        await db["idempotency"].insert_one({"_id": "a", "created_at": now - timedelta(minutes=1)})
        await db["notify_cooldowns"].insert_one(
            {"_id": "a", "expires_at": now + timedelta(hours=3)}
        )
        passes = 0
        real_expire = services.store.expiry.expire

        async def counted() -> int:
            nonlocal passes
            passes += 1
            return await real_expire()

        monkeypatch.setattr(services.store.expiry, "expire", counted)
        with time_machine.travel(now + timedelta(days=100)):
            async with asyncio.timeout(10):
                while passes < 5:
                    await asyncio.sleep(0.05)
        assert await db["positions"].count_documents({}) == 2
        assert await db["idempotency"].count_documents({}) == 1
        assert await db["notify_cooldowns"].count_documents({}) == 1


async def test_an_expiry_pass_runs_no_further_than_the_monotonic_clock_when_the_time_steps(
    services: Services, gateway_time: Callable[[datetime], None], caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway's time follows the database server's clock, which may step too (on the
    gateway's own host for the embedded database): a pass's time never runs further past the
    last pass's than the monotonic clock counted since. Ahead of that it expires only up to
    there and says why; once the time is back, passes follow it again."""
    db, expiry = services.store.db, services.store.expiry
    now = datetime.now(UTC)
    await db["idempotency"].insert_many(
        [
            {"_id": "old", "created_at": now - timedelta(days=2)},
            {"_id": "fresh", "created_at": now - timedelta(minutes=1)},
        ]
    )
    assert await expiry.expire() == 1  # "old": a pass on the right time
    gateway_time(now + timedelta(days=100))  # a reading of a server whose clock stepped
    with caplog.at_level("INFO", "gateway.store.expiry"):
        assert await expiry.expire() == 0
        assert "8640000 s ahead of where the last expiry pass" in caplog.text
        gateway_time(datetime.now(UTC))  # the server's clock set right
        await db["idempotency"].insert_one({"_id": "older", "created_at": now - timedelta(days=3)})
        assert await expiry.expire() == 1
        assert "follows the gateway's time again" in caplog.text
    assert [d["_id"] for d in await db["idempotency"].find().to_list(None)] == ["fresh"]


@pytest.mark.timeout(180)  # a gateway and three commands, each its own process
def test_cleanup_and_ui_user_beside_a_running_gateway_use_its_database_and_leave_it_running(
    tmp_path: Path,
) -> None:
    # docs/operations.md: `gateway cleanup` from cron, with the same environment as `gateway
    # serve`; `ui-user set-role` ends the sessions of a gateway that is serving them.
    gateway = Gateway(tmp_path).start()
    try:
        database = gateway.db_pid

        def command(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "gateway", *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=60,
                env=gateway.env,
            )

        # The first two are independent: side by side, as cron and an operator may run them.
        with ThreadPoolExecutor(2) as pool:
            creating = pool.submit(
                command,
                "ui-user", "create", "--tenant", "acme", "--email", "ana@acme.com.br",
                stdin="a long enough password 1\n",
            )  # fmt: skip
            cleaning = pool.submit(command, "cleanup", "--days", "90")
            created, cleaned = creating.result(), cleaning.result()
        assert created.returncode == 0, created.stderr
        assert cleaned.returncode == 0, cleaned.stderr
        assert cleaned.stdout.startswith("dropped 0 events")
        listed = command("ui-user", "list", "--tenant", "acme")
        assert listed.returncode == 0 and listed.stdout.startswith("ana@acme.com.br\tadmin")
        assert alive(database) and gateway.db_pid == database
        assert gateway.get("/readyz")[0] == 200
    finally:
        gateway.stop()


# -- a database that lives on and refuses everything ------------------------------------------

REFUSING_SECONDS = 1.0


@contextlib.asynccontextmanager
async def _supervised(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedSupervisor, Store]]:
    """An embedded database under its supervisor (restarted after 1 s of refusals), with its
    test commands for fault injection, and the store and prober a gateway has on it."""
    health = DatabaseHealth()
    server = EmbeddedServer(tmp_path / "db", test_commands=True)
    supervisor = EmbeddedSupervisor(server, health, refusing_seconds=REFUSING_SECONDS)
    await supervisor.start()
    client = open_client(server.uri, timeout_ms=2000, listeners=[health])
    store = Store(client["gateway"], health)
    prober = asyncio.create_task(health.run_prober(store.ping))
    try:
        yield supervisor, store
    finally:
        await cancel_and_wait(prober)
        health.close()
        await client.close()
        await supervisor.stop()


async def _fails(store: Store) -> None:
    """A gateway's operation fails, and the web edge tells the health (its prober starts)."""
    with pytest.raises(StoreUnavailable) as failed:
        await store.ping()
    store.health.report_failure(failed.value)


async def test_an_embedded_database_that_refuses_every_command_while_alive_is_restarted(
    tmp_path: Path,
) -> None:
    """SecantusDB whose storage engine panicked (its disk filled) lives on and answers every
    read and write with InternalError until its process restarts, space freed or not; the
    supervisor restarted only a database that exited, so it never came back. The server's
    fault injection refuses them so here, and a restart clears it as it clears a panic."""
    async with _supervised(tmp_path) as (supervisor, store):
        first = supervisor.server.pid
        assert first is not None
        admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            supervisor.server.uri, appname="faults"
        )
        try:
            refuse = {"failCommands": ["listCollections", "find", "insert", "update"]}
            data = {**refuse, "appName": "rabbot-gateway", "errorCode": 1}
            await admin.admin.command(
                "configureFailPoint", "failCommand", mode="alwaysOn", data=data
            )
        finally:
            await admin.close()
        await _fails(store)
        await until(lambda: supervisor.restarts == 1, 30, "the refusing database restarted")
        assert supervisor.server.pid != first and not alive(first)
        await until(lambda: store.health.up, 15, "the restarted database up")
        await store.ping()


def test_serve_workers_parent_restarts_a_database_that_refuses_every_command_while_alive(
    tmp_path: Path,
) -> None:
    """`serve --workers N`'s parent restarted its embedded database only when it exited: one
    whose storage engine panicked (WT_PANIC: out of file descriptors, a full disk) answered
    every command InternalError for good, and every process served 503 until a human came.
    The parent now reads the catalog as the prober does and restarts a database that has
    answered it with an error for `refusing_seconds`."""
    server = EmbeddedServer(tmp_path / "db", test_commands=True)
    plan = RestartPlan(server, backoff=(0.1,), refusing_seconds=REFUSING_SECONDS)
    server.start()
    try:
        first = server.pid
        assert first is not None
        plan.check()
        assert plan.restarts == 0  # a database that serves is left alone
        with pymongo.MongoClient(server.uri) as admin:
            data = {"failCommands": ["listCollections"], "errorCode": 1}
            admin.admin.command("configureFailPoint", "failCommand", mode="alwaysOn", data=data)
        wait_until(lambda: (plan.check(), plan.restarts)[1] == 1, 30, "the database restarted")
        assert server.pid != first and not alive(first)
        with pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10_000) as client:
            client["gateway"].list_collection_names()
    finally:
        server.stop()


async def test_a_frozen_embedded_database_is_not_restarted_however_long_it_answers_nothing(
    tmp_path: Path,
) -> None:
    """A database that answers nothing (stopped, stalled on its disk, overloaded) may come
    back by itself: it is never restarted for refusing, which it does not."""
    async with _supervised(tmp_path) as (supervisor, store):
        database = supervisor.server.pid
        assert database is not None
        os.kill(database, signal.SIGSTOP)
        try:
            await _fails(store)
            await until(
                lambda: store.health.down_for() >= 3 * REFUSING_SECONDS, 30, "a long freeze"
            )
        finally:
            os.kill(database, signal.SIGCONT)
        await until(lambda: store.health.up, 20, "the database up again")
        assert supervisor.restarts == 0 and supervisor.server.pid == database


async def test_an_embedded_database_whose_disk_is_under_the_floor_is_refused_until_it_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk SecantusDB acknowledges a `j: true` write whose journal record it then
    fails to write, and loses it: under the free-space floor nothing is sent to it (503 at
    once, its reason said), and it serves again once the disk has room. (The free space as
    read: a full disk needs root to make.)"""
    free = [1 << 20]
    monkeypatch.setattr(supervisor_module, "_free_room", lambda storage: (free[0], 1 << 20))
    async with _supervised(tmp_path) as (supervisor, store):
        await store.ping()
        watching = asyncio.create_task(
            FreeSpaceFloor(supervisor.server.storage_path, store.health, 64 << 20).watch(0.05)
        )
        try:
            await until(lambda: not store.health.up, 10, "the database marked down")
            with pytest.raises(StoreUnavailable) as refused:
                store.health.check()  # what every request and job asks before the database
            assert refused.value.retry_after is not None
            detail = str(refused.value.detail)
            assert f"the embedded database's disk has {1 << 20} bytes free, under" in detail
            await store.ping()  # the database answers, and so do the prober's pings (each look
            await asyncio.sleep(0.5)  # under the floor asks for one): the disk holds it down
            assert not store.health.up

            free[0] = 1 << 30  # room again
            await until(lambda: store.health.up, 10, "the database up again")
            store.health.check()
            await store.ping()
        finally:
            await cancel_and_wait(watching)


async def test_an_embedded_database_whose_disk_is_short_of_inodes_is_refused_until_it_has_some(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk with bytes to spare but no free inode (small files of another program, a
    container's `nr_inodes`): SecantusDB panicked creating its next file (a journal file, a
    new shard's table) and, its table half-created, never started again. Under the inode floor
    it is held down as under the bytes one, and serves again once inodes are free."""
    inodes = [10]
    monkeypatch.setattr(supervisor_module, "_free_room", lambda storage: (1 << 30, inodes[0]))
    async with _supervised(tmp_path) as (supervisor, store):
        await store.ping()
        floor = FreeSpaceFloor(supervisor.server.storage_path, store.health, 64 << 20, 1000)
        watching = asyncio.create_task(floor.watch(0.05))
        try:
            await until(lambda: not store.health.up, 10, "the database marked down")
            with pytest.raises(StoreUnavailable) as refused:
                store.health.check()
            assert refused.value.retry_after is not None
            assert "the embedded database's disk has 10 inodes free, under 1000" in str(
                refused.value.detail
            )
            inodes[0] = 5000  # freed
            await until(lambda: store.health.up, 10, "the database up again")
            store.health.check()
            await store.ping()
        finally:
            await cancel_and_wait(watching)


async def test_under_the_free_space_floor_no_writer_of_the_process_writes_until_there_is_room(
    settings: Settings, mongodb_uri: str
) -> None:
    """Only requests asked the health: under the floor the background jobs (here the event
    relay) and every write not made by a request (a schedule's poll, a flow step, the fold:
    `services.entities`) went on writing to a database that may lose what it acknowledges.
    The client now refuses every write of the process; the jobs resume once there is room."""
    async with open_services(
        replace(settings, run_workers=True), mongodb_uri=mongodb_uri
    ) as services:
        health = services.store.health
        events = services.store.db["events"]
        before = await events.count_documents({})
        await services.entities.upsert("acme", "vehicle", {"plate": "FLR1A01"}, _ORIGIN)
        # at once, before the relay's pass: what the floor's watch does under it
        health.mark_down("disk", "the embedded database's disk has 1 bytes free, under 2")
        with pytest.raises(StoreUnavailable) as refused:
            await services.entities.upsert("acme", "vehicle", {"plate": "FLR1A02"}, _ORIGIN)
        assert "takes no writes (the embedded database's disk has 1 bytes free" in str(
            refused.value.detail
        )
        assert refused.value.retry_after is not None
        await services.store.ping()  # reads go on
        await asyncio.sleep(2)
        assert await events.count_documents({}) == before  # the relay waits
        entities = services.store.db["entities"]
        assert await entities.count_documents({"data.plate": "FLR1A02"}) == 0

        health.mark_up("disk")
        async with asyncio.timeout(15):  # the relay's pass, once there is room
            while await events.count_documents({}) == before:
                await asyncio.sleep(0.1)
        await services.entities.upsert("acme", "vehicle", {"plate": "FLR1A02"}, _ORIGIN)
        assert await entities.count_documents({"data.plate": "FLR1A02"}) == 1


@pytest.mark.parametrize("args", [(), ("--workers", "2")], ids=["serve", "serve-workers"])
def test_a_gateway_on_an_embedded_database_under_its_free_space_floor_refuses_and_says_why(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """The floor holds in every process using the data dir's embedded database: the one
    that started it, and the N of `serve --workers N`, whose parent started it. (A floor of
    1 PiB: a disk as good as full.)"""
    floor = "1073741824"
    gateway = Gateway(tmp_path, *args, GATEWAY_EMBEDDED_MIN_FREE_MB=floor)
    gateway.start(serving="/healthz")
    try:
        for _ in range(4):  # under --workers 2, each process is asked
            status, body = gateway.get("/readyz")
            assert status == 503, body
            assert "the embedded database's disk has" in body["detail"], body
        status, headers, body = gateway.request(
            "POST", "/api/v1/entities/vehicle", {"plate": "FLR1A01"}, auth()
        )
        assert status == 503, body
        assert headers["Retry-After"]
        assert "the embedded database's disk" in gateway.log()
        assert "GATEWAY_EMBEDDED_MIN_FREE_MB" in gateway.log()
        # A one-shot command beside it holds the floor too: it wrote the trigger.
        trigger = ["trigger", "create", "--tenant", "acme", "--entity-type", "vehicle"]
        created = _command(gateway, *trigger, "--name", "under-the-floor")
        assert created.returncode == 1, (created.stdout, created.stderr)
        assert "the embedded database's disk has" in created.stderr, created.stderr
        assert "Traceback" not in created.stderr, created.stderr
        listed = _command(gateway, "trigger", "list", "--tenant", "acme")
        assert listed.returncode == 0, listed.stderr
        assert "under-the-floor" not in listed.stdout
    finally:
        gateway.stop()


def test_a_gateway_whose_embedded_database_disk_has_too_few_free_inodes_refuses_and_says_why(
    tmp_path: Path,
) -> None:
    """The inode floor holds like the bytes one, read from the data dir's file system (a
    floor of 10^12 inodes: a disk as good as out of them)."""
    gateway = Gateway(tmp_path, GATEWAY_EMBEDDED_MIN_FREE_INODES="1000000000000")
    gateway.start(serving="/healthz")
    try:
        status, body = gateway.get("/readyz")
        assert status == 503, body
        assert "inodes free, under 1000000000000" in body["detail"], body
        status, headers, body = gateway.request(
            "POST", "/api/v1/entities/vehicle", {"plate": "INO1A01"}, auth()
        )
        assert status == 503, body
        assert headers["Retry-After"]
        assert "GATEWAY_EMBEDDED_MIN_FREE_INODES" in gateway.log()
    finally:
        gateway.stop()


def _command(gateway: Gateway, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *command],
        env={**gateway.env, "GATEWAY_LOG_JSON": "false"},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


# -- a shutdown while the database is being restarted ------------------------------------------


async def test_a_shutdown_while_a_crashed_database_is_restarted_leaves_nothing_starting_it(
    tmp_path: Path,
) -> None:
    """SIGTERM while the supervisor restarts a crashed database: the restart runs in a worker
    thread, which cancelling its task does not stop, so `stop()` returned while the start
    went on, and launched a database after the gateway had stopped its own (running until
    the process exited, with a teardown held by that thread). Here the restart is held in
    its first step: stopping a frozen database left on the storage (10 s for its SIGTERM)."""
    storage = tmp_path / "db"
    server = EmbeddedServer(storage)
    supervisor = EmbeddedSupervisor(server, DatabaseHealth(), backoff=(2.0,))
    await supervisor.start()
    leftover: subprocess.Popen[bytes] | None = None
    try:
        database = server.pid
        assert database is not None
        os.kill(database, signal.SIGKILL)
        await until(lambda: server.exit_code() is not None, 10, "the launcher to exit")
        # Within the 2 s backoff: a frozen database on the same storage, named by the pid file.
        leftover = subprocess.Popen(
            [_secantusd(), "--port", str(free_port()), "--storage-path", str(storage)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.kill(leftover.pid, signal.SIGSTOP)
        server.pid_file.write_text(f"{leftover.pid}\n")
        pid = leftover.pid
        await until(lambda: _sigterm_pending(pid), 15, "the restart stopping the leftover")
        async with asyncio.timeout(5):
            await supervisor.stop()
        assert not _starting_a_database()
        assert _databases_on(storage) == [leftover.pid]
    finally:
        if leftover is not None:
            leftover.kill()
            leftover.wait()


def _sigterm_pending(pid: int) -> bool:
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return bool(int(status["ShdPnd"], 16) & 1 << (signal.SIGTERM - 1))


def _starting_a_database() -> bool:
    """Whether a thread of this process is in `EmbeddedServer.start`."""
    for frame in sys._current_frames().values():
        at: Any = frame
        while at is not None:
            if at.f_code is EmbeddedServer.start.__code__:
                return True
            at = at.f_back
    return False


def _databases_on(storage: Path) -> list[int]:
    """The live secantusd-py processes on this storage."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if any(b"secantusd-py" in a for a in args[:3]) and str(storage).encode() in args:
                if alive(int(entry.name)):
                    found.append(int(entry.name))
    return sorted(found)


# -- a port taken between its choice and the database's bind -----------------------------------


def test_a_database_whose_port_another_server_took_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A free port is free until someone binds it: another database (another gateway's, of a
    test running beside) took the one chosen first. The start must not take that server,
    which answers on the port, for its own (a gateway would serve from another's data): it
    starts on another port."""
    other = EmbeddedServer(tmp_path / "other")
    other.start()
    try:
        chosen = iter([other.port])
        free = embedded._free_port
        monkeypatch.setattr(embedded, "_free_port", lambda host: next(chosen, 0) or free(host))
        ours = EmbeddedServer(tmp_path / "ours")
        ours.start()
        try:
            assert ours.port != other.port
            with pymongo.MongoClient(ours.uri) as client:
                assert client.admin.command("serverStatus")["pid"] == ours.pid != other.pid
        finally:
            ours.stop()
        # A restart keeps its port (clients reconnect to it): taken, it is an error.
        ours.port = other.port
        with pytest.raises(EmbeddedServerError, match="served by another process"):
            ours.start()
        assert alive(other.pid or 0)
    finally:
        other.stop()


def test_a_stopping_launcher_leaves_the_pid_file_a_newer_database_wrote(tmp_path: Path) -> None:
    """A launcher whose gateway was SIGKILLed stops its database slowly; a gateway started
    meanwhile on the same data dir has stopped it and written its own database's pid: the
    old launcher, ending, must not remove that (the new start, and the next, read it)."""
    server = EmbeddedServer(tmp_path / "db")
    server.start()
    server.stop()
    assert not server.pid_file.exists()  # its own: removed
    server.start()
    server.pid_file.write_text("999999\n")  # as a newer launcher would have
    server.stop()
    assert server.pid_file.read_text() == "999999\n"


async def test_the_pool_closes_an_idle_connection_before_the_database_would(
    mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SecantusDB closes a client connection idle for 300 s; a pooled one the driver kept
    longer could be closed as an operation took it, and the process refused every request
    for a second with the database up. The driver closes its own first."""
    import secantus.server

    from gateway.store import client as store_client

    assert store_client.POOL_MAX_IDLE_MS < secantus.server.DEFAULT_CLIENT_IDLE_TIMEOUT_S * 1000
    closed: list[str] = []

    class Closed(monitoring.ConnectionPoolListener):
        def connection_closed(self, event: monitoring.ConnectionClosedEvent) -> None:
            closed.append(event.reason)

        def __getattr__(self, name: str) -> Any:  # the other pool events: nothing to do
            return lambda event: None

    monkeypatch.setattr(store_client, "POOL_MAX_IDLE_MS", 300)
    client = store_client.open_client(mongodb_uri, listeners=[Closed()])
    try:
        await client.admin.command("ping")
        await asyncio.sleep(0.6)  # past the pool's idle time, within the server's
        await client.admin.command("ping")
        assert monitoring.ConnectionClosedReason.IDLE in closed
    finally:
        await client.close()


async def test_a_transaction_begun_before_the_floor_ends_and_holds_none_of_its_documents(
    mongodb_uri: str,
) -> None:
    """The floor marks the disk down between a transaction's statement and its commit (a
    checklist and its vehicle's odometer, `write_together`): its statements were asked, so
    its commit goes through, and its documents are writable at once when there is room.
    Before, the commit was refused too, and the driver, counting a commit that raised as
    ended, sent no abort: the transaction held its documents until the server reaped it
    (~60 s), every write of them waiting out its deadline ("outcome unknown")."""
    down = False

    def gate() -> None:
        if down:
            raise StoreUnavailable("the database takes no writes (disk)")

    client = open_client(mongodb_uri, timeout_ms=2000, write_gate=gate)
    name = f"gate_commit_{os.getpid()}"
    things = client[name]["things"]
    try:
        await things.insert_one({"_id": 1, "n": 0})
        async with client.start_session() as session:
            await session.start_transaction()
            await things.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)
            down = True
            await session.commit_transaction()
            with pytest.raises(StoreUnavailable):  # a new statement is refused
                await things.update_one({"_id": 1}, {"$inc": {"n": 100}})
        down = False
        async with asyncio.timeout(1):
            await things.update_one({"_id": 1}, {"$inc": {"n": 10}})
        assert (await things.find_one({"_id": 1})) == {"_id": 1, "n": 11}
    finally:
        await client.drop_database(name)
        await client.close()


async def test_a_write_sent_as_a_database_command_asks_the_gate_and_a_read_command_does_not(
    mongodb_uri: str,
) -> None:
    """The driver sends every `Database.command` as a read, so the TTL and retention
    `collMod`s (`store/expiry.py`, `store/positions.py`), or an insert sent as a command,
    went past the free-space floor. A command is now judged by its name: the reads pass
    (`ping`, `hello`, `buildInfo`, `listCollections` …), every other asks the gate."""
    down = False

    def gate() -> None:
        if down:
            raise StoreUnavailable("the database takes no writes (disk)")

    client = open_client(mongodb_uri, timeout_ms=3000, write_gate=gate)
    name = f"gate_command_{os.getpid()}"
    db = client[name]
    try:
        await db["things"].create_index("at", name="at_ttl", expireAfterSeconds=60)
        down = True
        with pytest.raises(StoreUnavailable):
            await db.command("insert", "things", documents=[{"_id": 1}])
        with pytest.raises(StoreUnavailable):
            await db.command("collMod", "things", index={"name": "at_ttl", "expireAfterSeconds": 5})
        with pytest.raises(StoreUnavailable):
            await db.command({"drop": "things"})
        for read in ("ping", "hello", "buildInfo", "isMaster", "serverStatus"):
            await client.admin.command(read)
        await db.command("listCollections")
        await db.command("count", "things")
        down = False
        assert await db["things"].count_documents({}) == 0
        indexes = {i["name"]: i for i in await (await db["things"].list_indexes()).to_list(None)}
        assert indexes["at_ttl"].get("expireAfterSeconds") == 60
    finally:
        down = False
        await client.drop_database(name)
        await client.close()


@pytest.mark.timeout(240)  # a gateway started twice, a one-shot between
def test_serve_started_while_a_one_shot_manages_the_stopped_gateway_s_database_waits_for_it(
    tmp_path: Path,
) -> None:
    """A cron `gateway cleanup` on a stopped gateway's data dir starts the embedded database
    itself (none runs to use) and holds it while it runs; a `gateway serve` started meanwhile
    (a restart by systemd or compose) exited 1 at once (`another gateway process manages the
    embedded database`), for as long as the one-shot ran. Now it waits, saying so, and
    starts once the one-shot has released the database."""
    Gateway(tmp_path).start(90).stop()  # the gateway's database, now stopped
    env = {**Gateway(tmp_path).env, "GATEWAY_LOG_JSON": "false"}
    one_shot = subprocess.Popen(
        [sys.executable, "-m", "gateway", "cleanup", "--days", "90"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    gateway = Gateway(tmp_path)
    try:
        wait_until(lambda: (tmp_path / "db.pid").exists(), 60, "the one-shot's database")
        os.kill(one_shot.pid, signal.SIGSTOP)  # a cleanup that takes a while
        assert gateway.proc is None
        with gateway.log_path.open("ab") as log:
            gateway.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve"],
                env=gateway.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        proc, waiting = gateway.proc, f"waiting for the one-shot command (pid {one_shot.pid}"
        said = lambda: proc.poll() is not None or waiting in gateway.log()  # noqa: E731
        wait_until(said, 60, "the serve to say it waits", 0.2)
        time.sleep(2)
        assert proc.poll() is None and waiting in gateway.log(), gateway.log()
        os.kill(one_shot.pid, signal.SIGCONT)
        out, err = one_shot.communicate(timeout=60)
        assert one_shot.returncode == 0, err
        assert out.startswith("dropped 0 events")
        wait_until(gateway.ready, 90, "the serve to start once the one-shot ended", 0.3)
        assert "another gateway process manages" not in gateway.log()
    finally:
        if one_shot.poll() is None:
            os.kill(one_shot.pid, signal.SIGCONT)
            one_shot.kill()
            one_shot.wait()
        gateway.stop()


@pytest.mark.parametrize("holder", ["one-shot", "serving"])
def test_the_wait_for_a_one_shot_is_bounded_and_a_gateway_holding_the_database_is_not_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, holder: str
) -> None:
    lock = os.open(tmp_path / "db.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(lock, f"{os.getpid()} {holder}\n".encode())
        started = time.monotonic()
        embedded.wait_for_one_shot(tmp_path / "db", timeout=1.0)
        took = time.monotonic() - started
    finally:
        os.close(lock)
    if holder == "serving":  # refused by the start at once, as before
        assert took < 0.5 and not caplog.records, took
        return
    assert 1.0 <= took < 3, took
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said[0][0] == "WARNING" and f"(pid {os.getpid()}: " in said[0][1], said
    assert said[-1][0] == "ERROR" and "not waiting longer" in said[-1][1], said
    embedded.wait_for_one_shot(tmp_path / "db", timeout=1.0)  # released: no wait


def test_a_database_s_lock_names_its_holder_while_held_and_no_one_after(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "db", one_shot=True)
    server.start()
    try:
        assert (tmp_path / "db.lock").read_text() == f"{os.getpid()} one-shot\n"
    finally:
        server.stop()
    assert (tmp_path / "db.lock").read_text() == ""
