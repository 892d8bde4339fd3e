"""`gateway serve --workers N` (gateway/prefork.py): N processes on one port, one embedded
database, metrics added up across them, a dead process replaced, all stopped together."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.__main__ import MAX_WORKERS, _parser
from gateway.config import Settings
from gateway.metrics import prepare_multiprocess_dir
from gateway.outbound import open_files
from gateway.prefork import stop_seconds
from tests.processes import Gateway, alive, free_port, wait_until
from tests.support import SECRET_KEY, auth


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _servers(gateway: Gateway) -> list[int]:
    """The serving children (the embedded database is a child too)."""
    assert gateway.proc is not None
    return [pid for pid in _children(gateway.proc.pid) if b"--reuse-port" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    """A process's command line; empty once it has exited (a child may end between the
    listing and the read)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _catches_sigterm(pid: int) -> bool:
    """Whether a process has its SIGTERM handler (the signals it catches, in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def _settled(gateway: Gateway) -> float:
    """The count once the last answers' counts have landed (two reads 0.2 s apart agree)."""
    previous = _served(gateway)
    while True:
        time.sleep(0.2)
        if (now := _served(gateway)) == previous:
            return now
        previous = now


def _served(gateway: Gateway) -> float:
    status, text = gateway.get("/metrics")
    assert status == 200
    prefix = 'gateway_http_requests_total{method="GET",route="/healthz",status_class="2xx"}'
    lines = [line for line in str(text).splitlines() if line.startswith(prefix)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_two_processes_share_one_port_and_one_metrics_view(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, "--workers", "2").start()
    try:
        servers = _servers(gateway)
        assert len(servers) == 2
        for _ in range(30):
            assert gateway.get("/healthz")[0] == 200
        # Every process's count, added up. A request is counted just after its answer is
        # written (web/middlewares.py), so a scrape may arrive a moment before the last count.
        wait_until(lambda: _served(gateway) >= 30, 5, "the 30 requests to be counted")
        assert _served(gateway) == 30
        os.kill(servers[0], signal.SIGKILL)
        wait_until(lambda: not alive(servers[0]), 10, "the killed process to be gone")
        # The other one serves meanwhile (a connection caught in the dying socket's queue
        # may be refused: a load balancer retries it).
        wait_until(lambda: gateway.get("/healthz")[0] == 200, 5, "the other process to answer")
        wait_until(lambda: len(_servers(gateway)) == 2, 30, "the dead process to be replaced")
        assert servers[0] not in _servers(gateway)
        served = _settled(gateway)
        for _ in range(30):
            assert gateway.get("/healthz")[0] == 200
        # The dead process's count still counts.
        wait_until(lambda: _served(gateway) >= served + 30, 5, "the 30 requests to be counted")
        assert _served(gateway) == served + 30
        assert served >= 31
        everyone = [*_children(gateway.proc.pid)] if gateway.proc else []
    finally:
        gateway.stop()
    assert gateway.proc is not None and gateway.proc.returncode == 0
    assert not any(alive(pid) for pid in everyone)  # the servers and the database


def test_workers_need_a_fixed_port(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--workers", "2", "--port", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "GATEWAY_DATA_DIR": str(tmp_path)},
        timeout=60,
    )
    assert done.returncode == 2
    assert "--workers needs a fixed --port" in done.stderr


def test_workers_with_a_key_the_database_refuses_exit_2_instead_of_restarting(
    tmp_path: Path, mongodb_uri: str
) -> None:
    """Each process refuses to start (exit 2, GATEWAY_SECRET_KEY): so does the parent, for
    the service manager to report it, instead of restarting the processes for ever."""
    env = {
        **os.environ,
        "MONGODB_URI": mongodb_uri,
        "GATEWAY_DATABASE": f"keycheck_workers_{os.getpid()}",
        "GATEWAY_DATA_DIR": str(tmp_path),
        "GATEWAY_LOG_JSON": "false",
        "GATEWAY_SECRET_KEY": SECRET_KEY,
    }
    sealed = subprocess.run(  # the first process: seals the key check
        [sys.executable, "-m", "gateway", "reseal"], capture_output=True, env=env, timeout=60
    )
    assert sealed.returncode == 0, sealed.stderr
    other = {**env, "GATEWAY_SECRET_KEY": "another-secret-key-of-another-host-0000000"}
    port = str(free_port())
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--workers", "2", "--port", port],
        capture_output=True,
        text=True,
        env=other,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    assert "none of its keys opens the key check" in done.stderr
    assert "restarting in" not in done.stderr
    assert "refused its configuration" in done.stderr


def test_a_crashed_database_is_restarted_and_every_process_serves_again(tmp_path: Path) -> None:
    """The parent starts the embedded database for its children, so it supervises it too
    (as a one-process gateway does): a crash is logged and the database started again on
    the same port, and the children reconnect."""
    gateway = Gateway(tmp_path, "--workers", "2").start()
    vehicle = "/api/v1/entities/vehicle/ABC1D23"
    try:
        status, _, _ = gateway.request(
            "POST", "/api/v1/entities/vehicle", {"plate": "ABC1D23"}, headers=auth()
        )
        assert status == 201
        database = gateway.db_pid
        os.kill(database, signal.SIGKILL)
        wait_until(lambda: not alive(database), 10, "the database to die")
        # Each new connection lands on either process (SO_REUSEPORT): ten answers in a row.
        wait_until(
            lambda: all(gateway.get(vehicle, headers=auth())[0] == 200 for _ in range(10)),
            30,
            "every process to read from the restarted database",
        )
        assert gateway.db_pid != database
    finally:
        gateway.stop()
    assert "the embedded database killed by signal 9; restarting it" in gateway.log()


def test_the_parent_raises_its_open_file_limit_for_the_database_it_starts(
    tmp_path: Path,
) -> None:
    """Started with a plain host's soft limit of 1,024, the parent kept it, and so did the
    embedded database it starts, which holds every process's pool: ~1,000 connections ran it
    out of descriptors and WiredTiger panicked for good (the children raised theirs)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < open_files.needed(1024):
        pytest.skip(f"a hard open-file limit of {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        gateway = Gateway(tmp_path, "--workers", "2").start(timeout=120)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        limits = Path(f"/proc/{gateway.db_pid}/limits").read_text().splitlines()
        [line] = [line for line in limits if line.startswith("Max open files")]
        assert int(line.split()[3]) >= open_files.needed(1024), line
    finally:
        gateway.stop()


@pytest.mark.timeout(400)  # two gateways started, the second taking the first's leases
def test_a_single_process_keeps_its_metrics_in_memory_whatever_prometheus_multiproc_dir(
    tmp_path: Path,
) -> None:
    """A plain `serve` with PROMETHEUS_MULTIPROC_DIR wrote its files into the directory
    itself, with no instance dir and nobody to mark it dead: after a SIGKILL and a restart
    its successor's scrape added the dead pid's live gauges (`gateway_event_relay_shards
    32`), and a `serve --workers N` on the same directory deleted its live files. Only `serve
    --workers N` reads the variable; any other process keeps its metrics in memory."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
        # The second takes the killed first's relay shards once their leases expire: after
        # 4 s, not the default 10 (a lease outlasts the database deadline, so 3 s for that).
        "GATEWAY_SHARD_LEASE_SECONDS": "4",
        "GATEWAY_DB_TIMEOUT_MS": "3000",
    }
    for _ in range(2):  # the second after the first was killed
        gateway = Gateway(tmp_path / "data", **env).start(timeout=120)
        database = gateway.db_pid
        try:
            wait_until(
                lambda g=gateway: "gateway_event_relay_shards 16.0" in str(g.get("/metrics")[1]),
                90,
                "the relay's 16 shards owned",
            )
            assert list(shared.iterdir()) == []
        finally:
            assert gateway.proc is not None
            gateway.proc.kill()
            gateway.proc.wait()
            wait_until(lambda d=database: not alive(d), 30, "the database to stop")
    assert "PROMETHEUS_MULTIPROC_DIR is read by `serve --workers N` only" in gateway.log()


def test_processes_left_by_a_killed_parent_stop_by_themselves(tmp_path: Path) -> None:
    """A parent SIGKILLed (or killed after its 30 s stop) used to leave its children serving
    on the port, against a database that died with it: a parent started again shared the
    port with them, and they answered a share of its connections with 503s forever."""
    # Each child stops gracefully, its database gone: a short deadline keeps that short.
    gateway = Gateway(tmp_path, "--workers", "2", GATEWAY_DB_TIMEOUT_MS="1000").start()
    servers = _servers(gateway)
    assert len(servers) == 2
    try:
        gateway.kill()
        wait_until(lambda: not any(alive(pid) for pid in servers), 30, "the children to stop")
    finally:
        for pid in servers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# A restart held in its first step (stopping a frozen database left on the storage: 10 s for
# its SIGTERM, then a start); a SIGTERM meanwhile waited for all of it (12 s and more), and
# then stopped the database it had just started. Now the restart gives up at once: what is
# left is the children's shutdown (their database gone).
STOPPED_WITHIN_SECONDS = 10  # 4 s at a load of 10 on 2 cores; before, 12 s at the least


def test_a_sigterm_while_the_parent_restarts_the_database_is_not_held_by_the_restart(
    tmp_path: Path,
) -> None:
    # The children stop with their database gone: a short deadline keeps that short.
    gateway = Gateway(tmp_path, "--workers", "2", GATEWAY_DB_TIMEOUT_MS="1000").start()
    assert gateway.proc is not None
    storage = tmp_path / "db"
    leftover: subprocess.Popen[bytes] | None = None
    try:
        database = gateway.db_pid
        # The parent stopped, the database dies and its launcher takes its pid file along;
        # a frozen database on the storage is named in it before the parent looks again.
        os.kill(gateway.proc.pid, signal.SIGSTOP)
        try:
            os.kill(database, signal.SIGKILL)
            wait_until(lambda: not (tmp_path / "db.pid").exists(), 10, "the launcher to end")
            leftover = subprocess.Popen(
                [_secantusd(), "--port", str(free_port()), "--storage-path", str(storage)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            os.kill(leftover.pid, signal.SIGSTOP)
            (tmp_path / "db.pid").write_text(f"{leftover.pid}\n")
        finally:
            os.kill(gateway.proc.pid, signal.SIGCONT)
        pid = leftover.pid
        wait_until(lambda: _sigterm_pending(pid), 15, "the restart stopping the leftover")
        started = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        code = gateway.proc.wait(30)
        took = time.monotonic() - started
        assert code == 0 and took < STOPPED_WITHIN_SECONDS, (code, took, gateway.log()[-2000:])
        assert "embedded database started" not in gateway.log().split("restarting it")[-1]
    finally:
        gateway.stop()
        if leftover is not None:
            leftover.kill()
            leftover.wait()


def test_a_process_waiting_for_its_restart_holds_neither_the_database_nor_sigterm(
    tmp_path: Path,
) -> None:
    """A process that keeps dying right after its start is restarted ever more slowly (1, 2,
    4, 8, 16, 30 s). That wait was a sleep in the parent's supervising loop: meanwhile a dead
    database was not restarted (the other processes answered 503 to everything) and SIGTERM
    waited it out, then started the process anew just to stop it."""
    gateway = Gateway(tmp_path, "--workers", "2", GATEWAY_DB_TIMEOUT_MS="1000").start()
    assert gateway.proc is not None
    try:
        for delay in (1, 2, 4, 8, 16):
            wait_until(lambda: len(_servers(gateway)) == 2, 60, "both processes to run")
            newest = max(_servers(gateway))  # the one restarted last (pids grow)
            os.kill(newest, signal.SIGKILL)
            wait_until(
                lambda d=delay: f"restarting in {d}s" in gateway.log(),  # type: ignore[misc]
                30,
                f"a restart in {delay} s",
            )
        waiting = time.monotonic()  # 16 s before the process's restart
        database = gateway.db_pid
        os.kill(database, signal.SIGKILL)
        wait_until(
            lambda: (tmp_path / "db.pid").exists() and gateway.db_pid != database,
            30,
            "the database to be restarted",
        )
        assert time.monotonic() - waiting < 16, "the database waited for the process's restart"
        gateway.proc.send_signal(signal.SIGTERM)
        code = gateway.proc.wait(30)
        took = time.monotonic() - waiting
    finally:
        gateway.stop()
    assert code == 0 and took < 16, (code, took, gateway.log()[-2000:])
    # The process waiting for its restart was not started only to be stopped.
    assert "started (pid" not in gateway.log().split("restarting in 16s")[-1]


def _secantusd() -> str:
    return str(Path(sys.executable).with_name("secantusd-py"))


def _sigterm_pending(pid: int) -> bool:
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return bool(int(status["ShdPnd"], 16) & 1 << (signal.SIGTERM - 1))


def test_a_hung_process_is_killed_and_replaced(tmp_path: Path) -> None:
    """A process whose event loop no longer turns (a deadlock, a blocking call; SIGSTOP here)
    kept its share of the port's connections, none answered, and the parent, which watched
    exits only, never noticed: its heartbeat now stops, and the parent kills it (SIGKILL) and
    starts another once it was silent for GATEWAY_HUNG_SECONDS (30 s by default)."""
    hung_seconds = 12  # above a process's start on a loaded machine (it counts from the start)
    gateway = Gateway(tmp_path, "--workers", "2", GATEWAY_HUNG_SECONDS=str(hung_seconds)).start()
    servers = _servers(gateway)
    assert len(servers) == 2 and all(servers)
    hung = servers[0]
    try:
        os.kill(hung, signal.SIGSTOP)
        # Well before the default's 30 s (its last heartbeat may be older than the SIGSTOP)
        wait_until(lambda: not alive(hung), hung_seconds + 12, "the hung process to be killed")
        wait_until(lambda: len(_servers(gateway)) == 2, 30, "the hung process to be replaced")
        assert hung not in _servers(gateway)
        for _ in range(20):
            assert gateway.get("/healthz")[0] == 200
    finally:
        if alive(hung):
            os.kill(hung, signal.SIGKILL)
        gateway.stop()
    silent = re.search(rf"\(pid {hung}\) gave no heartbeat for (\d+) s", gateway.log())
    assert silent is not None and hung_seconds <= int(silent[1]) < 30, gateway.log()[-2000:]


def test_the_parent_waits_its_processes_shutdown_deadlines_then_kills_and_says_so(
    tmp_path: Path,
) -> None:
    """The parent killed its processes 30 s after SIGTERM whatever their shutdown deadlines
    granted (a request promised 50 s was cut with no answer), and logged nothing. It now
    waits what their deadlines add up to, and a margin, and logs the kill."""
    env = {"GATEWAY_REQUEST_SHUTDOWN_SECONDS": "1", "GATEWAY_DELIVERY_SHUTDOWN_SECONDS": "0"}
    wait = stop_seconds(Settings.from_env(env))
    assert wait == 15.0  # 1 + 1 (aiohttp's rounding) + 0 + 3 + 2 + 3, and 5 s of margin
    assert stop_seconds(Settings.from_env({"GATEWAY_REQUEST_SHUTDOWN_SECONDS": "50"})) > 60
    gateway = Gateway(tmp_path, "--workers", "2", **env).start()
    assert gateway.proc is not None
    # One process ready is not both: stopped before it handles SIGTERM, the other was killed
    # by the SIGTERM the parent forwards (a stopped process dies of a signal it does not catch).
    wait_until(lambda: all(map(_catches_sigterm, _servers(gateway))), 30, "both to catch it")
    stuck, other = _servers(gateway)
    os.kill(stuck, signal.SIGSTOP)  # it cannot act on the SIGTERM the parent forwards
    try:
        started = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        gateway.proc.wait(40)
        took = time.monotonic() - started
    finally:
        if alive(stuck):
            os.kill(stuck, signal.SIGKILL)
        gateway.stop()
    assert wait <= took < 30  # not the fixed 30 s of before (the database's stop is after)
    assert f"(pid {stuck}) still running 15 s after SIGTERM" in gateway.log()
    assert f"(pid {other}) still running" not in gateway.log()  # it stopped by itself


def test_two_instances_on_one_data_dir_keep_their_own_metrics(
    tmp_path: Path, mongodb_uri: str, settings: Settings
) -> None:
    """Two `serve --workers 2` on one GATEWAY_DATA_DIR with MONGODB_URI (a blue/green, a
    restart overlapping the old instance's drain): the second emptied the metrics directory
    the first's processes wrote to, whose /metrics then showed the second's counts and never
    its own again. Each instance now writes to a directory of its own."""
    env = {"MONGODB_URI": mongodb_uri, "GATEWAY_DATABASE": settings.database}
    first = Gateway(tmp_path, "--workers", "2", GATEWAY_WORKERS="none", **env).start()
    second = None
    try:
        for _ in range(20):
            assert first.get("/healthz")[0] == 200
        wait_until(lambda: _served(first) >= 20, 5, "the 20 requests to be counted")
        before = _settled(first)
        second = Gateway(tmp_path, "--workers", "2", GATEWAY_WORKERS="none", **env).start()
        for _ in range(5):
            assert second.get("/healthz")[0] == 200
        wait_until(lambda: _served(second) >= 5, 5, "the second's 5 requests to be counted")
        assert _settled(first) == before
        assert _settled(second) < before
    finally:
        for gateway in (second, first):
            if gateway is not None:
                gateway.stop()
    assert list((tmp_path / "metrics").iterdir()) == []  # each removed its own at its end


_INSTANCE = """
import sys
from pathlib import Path
from gateway.metrics import prepare_multiprocess_dir
from gateway.outbound import open_files
mine = prepare_multiprocess_dir(Path(sys.argv[1]))
(mine.path / "counter_2.db").write_bytes(b"its counts")
print(mine.path.name, flush=True)
sys.stdin.read()  # runs until the test closes its stdin; ends without removing anything
"""


def test_instances_whose_parents_share_a_pid_keep_their_own_metrics_dir(tmp_path: Path) -> None:
    """In containers every instance's parent is PID 1: the directory named by the parent's pid
    was the same for two instances on one data dir, and the second emptied the first's. Each
    now has a random name and a lock held while it runs: a running instance's directory is
    kept whatever its pid, an ended one's (its lock released by the kernel) removed."""
    base = tmp_path / "metrics"
    with subprocess.Popen(
        [sys.executable, "-c", _INSTANCE, str(base)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as other:
        assert other.stdout is not None and other.stdin is not None
        theirs = base / other.stdout.readline().strip()
        mine = prepare_multiprocess_dir(base)
        assert mine.path != theirs and mine.path.parent == base
        assert (theirs / "counter_2.db").read_bytes() == b"its counts"  # kept: it runs
    # Leaving `with` closed its stdin and waited for it: it ended as if killed.
    third = prepare_multiprocess_dir(base)  # the other's files go
    assert not theirs.exists() and not base.joinpath(f"{theirs.name}.lock").exists()
    assert mine.path.is_dir() and third.path.is_dir()
    mine.remove()
    third.remove()
    assert list(base.iterdir()) == []


def test_a_number_of_processes_past_the_bound_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--workers 100000` (a slip for 10) used to start processes until the host gave way: a
    load of 670 on 2 cores, and hundreds of them alive long after the SIGTERM."""
    for n in ("65", "100000", "1000000000000"):
        with pytest.raises(SystemExit) as exit_:
            _parser().parse_args(["serve", "--workers", n])
        assert exit_.value.code == 2, n
        assert f"must be at most {MAX_WORKERS}, not {n}" in capsys.readouterr().err
    assert _parser().parse_args(["serve", "--workers", str(MAX_WORKERS)]).workers == MAX_WORKERS


# The parent as `gateway`, each child's start followed by a pause: a SIGTERM lands while the
# children are still being started.
_SLOW_STARTS = (
    "import sys, time; import gateway.prefork as p; start = p._start\n"
    "def slow(*args, **kwargs):\n"
    "    child = start(*args, **kwargs); time.sleep(3); return child\n"
    "p._start = slow\n"
    "from gateway.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def test_a_sigterm_while_the_parent_starts_its_processes_starts_no_more_and_stops_those_started(
    tmp_path: Path,
) -> None:
    """The parent started every one of its N processes before it looked at a SIGTERM: under
    `--workers 100000` it went on starting them (669 alive 18 minutes after the SIGTERM)."""
    gateway = Gateway(tmp_path, GATEWAY_DB_TIMEOUT_MS="1000")  # its environment and log only
    with gateway.log_path.open("ab") as log:
        parent = subprocess.Popen(
            [sys.executable, "-c", _SLOW_STARTS, "serve", "--workers", "3"],
            env=gateway.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    started = re.compile(r"gateway process (\d) started \(pid (\d+)\)")
    try:
        wait_until(lambda: started.search(gateway.log()), 60, "the first process's start", 0.01)
        parent.send_signal(signal.SIGTERM)
        code = parent.wait(60)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    children = {int(n): int(pid) for n, pid in started.findall(gateway.log())}
    try:
        assert code == 0, gateway.log()[-2000:]
        assert list(children) == [0], gateway.log()[-2000:]
        assert not any(alive(pid) for pid in children.values())
        assert "embedded database stopped" in gateway.log()
    finally:
        for pid in children.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_sighup_to_the_parent_is_a_graceful_stop_with_the_database_stopped_last(
    tmp_path: Path,
) -> None:
    """SIGHUP (a terminal or SSH session closed, a `kill -HUP` for a log reopen) killed the
    parent outright: its database stopped at once, under the processes' own shutdown (`event
    relay paused: database unavailable`, the client's close cut short)."""
    gateway = Gateway(tmp_path, "--workers", "2").start(90)
    assert gateway.proc is not None
    servers = _servers(gateway)
    try:
        gateway.proc.send_signal(signal.SIGHUP)
        code = gateway.proc.wait(60)
        log = gateway.log()
        assert code == 0, log[-2000:]
        assert not any(alive(pid) for pid in servers)
        assert "embedded database stopped" in log
        for cut_short in ("did not finish within", "database unavailable", "marked down"):
            assert cut_short not in log, log[-2000:]
    finally:
        gateway.stop()
