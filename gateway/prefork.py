"""`gateway serve --workers N`: N gateway processes serving one port.

The parent does no request work. It starts the embedded database once (when MONGODB_URI is
unset: N processes cannot each start one on the same files) and restarts it on the same port
when it dies (`store/supervisor.py` `RestartPlan`, as a one-process gateway's supervisor
does, and when it has refused every command for 30 s, as a panicked storage engine does;
the children reconnect), having raised its open-file limit first (the database inherits
it), makes an empty directory of its own (named by a random id and
locked while it runs, in PROMETHEUS_MULTIPROC_DIR: `metrics.prepare_multiprocess_dir`) for
the processes' metric files, then starts N `gateway serve` children that bind the same port
with SO_REUSEPORT, so the kernel spreads connections over them. Each child is a whole
gateway process: web, its cached trigger gates, and its share of the background jobs (relay
shards and delivery claims are leased in MongoDB). The parent restarts a child that dies
(and marks it dead in the metrics), forwards SIGTERM/SIGINT/SIGHUP (as SIGTERM) to all of
them (one that comes while it still starts them: no more are started), kills (and logs) one
still running when its own shutdown deadlines and a margin have passed (`stop_seconds`),
and stops the database last. Each child's event loop writes a heartbeat to a pipe every
second (`beat_to_parent`); a child silent for `GATEWAY_HUNG_SECONDS` (a deadlocked event loop, a
blocking call, a stopped process: it still takes its share of the port's connections and
answers none) is killed with SIGKILL, logged, and replaced like a child that died. A child
that exits 2 refused its configuration (a GATEWAY_SECRET_KEY the database's key check
refuses, a setting it cannot use): its successor, started with the same environment, would
be refused again, so the parent stops the others and exits 2 as well, as a single process
does, for the service manager to report it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from gateway.config import Settings
from gateway.metrics import MULTIPROCESS_DIR, mark_process_dead, prepare_multiprocess_dir
from gateway.outbound import open_files
from gateway.schemas.registry import SchemaRegistry
from gateway.shutdown import (
    CLOSE_SECONDS,
    HAND_BACK_SECONDS,
    STOP_SIGNALS,
    TEARDOWN_SECONDS,
)
from gateway.store.embedded import EmbeddedServer
from gateway.store.supervisor import RestartPlan

log = logging.getLogger(__name__)

_RESTART_DELAY = (1.0, 30.0)  # after a crash, doubling while a child keeps crashing
_STOP_MARGIN_SECONDS = 5.0  # past the children's own shutdown deadlines, before SIGKILL
BEAT_SECONDS = 1.0  # a child's heartbeat interval


@dataclass
class _Child:
    number: int
    proc: subprocess.Popen[bytes]
    lifeline: int  # the write end of the pipe the child watches; never written, see below
    heartbeat: int  # the read end of the pipe the child's event loop beats on (non-blocking)
    started: float = field(default_factory=time.monotonic)
    delay: float = _RESTART_DELAY[0]  # before the next restart, should this process die soon
    # Once it died: when its successor starts (`time.monotonic()`). The supervising loop
    # checks it, so the wait holds neither the database's supervision, nor the other
    # processes', nor SIGTERM.
    restart_at: float | None = None
    refused: bool = False  # exited 2: a configuration error, never restarted
    beat_at: float = field(default_factory=time.monotonic)  # its last heartbeat (or start)


def stop_seconds(settings: Settings) -> float:
    """How long the parent waits for its children after forwarding SIGTERM before it kills
    them: the most a child's own shutdown may take (docs/operations.md, Shutdown: the
    requests' deadline and aiohttp's second of rounding, the runners' work and the hand-back,
    the database client's close, the event loop's teardown; a child has no database of its
    own to stop), and a margin."""
    return (
        settings.request_shutdown_seconds
        + 1.0
        + settings.delivery_shutdown_seconds
        + HAND_BACK_SECONDS
        + CLOSE_SECONDS
        + TEARDOWN_SECONDS
        + _STOP_MARGIN_SECONDS
    )


def serve_processes(settings: Settings, count: int) -> int:
    """Run `count` serving children until SIGTERM, SIGINT or SIGHUP; the exit code."""
    if settings.port == 0:
        print("error: --workers needs a fixed --port (the children share it)", file=sys.stderr)
        return 2
    # Each process would refuse schemas it cannot use (exit 2): said once, before anything.
    SchemaRegistry.configured(settings.schema_dir)
    stop = threading.Event()
    restarting: list[EmbeddedServer] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        # A restart of the database under way (`check()`, in this thread) gives up at once
        # instead of holding the shutdown for as long as it takes (10 s and more).
        for server in restarting:
            server.give_up_starting()

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    # Before the embedded database starts: it inherits this limit, and holds every process's
    # pool (a soft limit of 1,024 ran it out of descriptors, and WiredTiger panicked).
    open_files.raise_for(settings.outbound_connections)
    with _database(settings) as database:
        if database is not None:
            restarting.append(database.server)
        base = os.environ.get(MULTIPROCESS_DIR) or Path(settings.data_dir) / "metrics"
        metrics = prepare_multiprocess_dir(Path(base))
        env = _child_env(metrics.path, database.server.uri if database else None)
        children: list[_Child] = []
        try:
            # A SIGTERM while they start: no more started, and those started are stopped
            # (the `finally`). Before, every one of the N was started first.
            for number in range(count):
                if stop.is_set():
                    break
                children.append(_start(number, settings, env))
            else:
                print(
                    f"gateway listening on {settings.listen_url} ({count} processes)",
                    file=sys.stderr,
                )
            while not stop.wait(0.5):
                if database is not None:
                    database.check()
                children = [_supervised(child, settings, env) for child in children]
                if any(child.refused for child in children):
                    return 2
        finally:
            _stop(children, metrics.path, stop_seconds(settings))
            metrics.remove()
    return 0


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[RestartPlan | None]:
    """The embedded database, started here once for every child, when no URI is set."""
    if settings.mongodb_uri:
        yield None
        return
    embedded = EmbeddedServer(Path(settings.data_dir) / "db")
    embedded.start()
    try:
        yield RestartPlan(embedded)
    finally:
        embedded.stop()


def _child_env(metrics: Path, uri: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env[MULTIPROCESS_DIR] = str(metrics.resolve())
    if uri is not None:
        env["MONGODB_URI"] = uri
    return env


def _start(number: int, settings: Settings, env: dict[str, str]) -> _Child:
    # The child stops when this process dies, however it dies (SIGKILL included): the kernel
    # closes the lifeline's write end, and the child reads EOF (`watch_parent`). Without it a
    # killed parent left its children serving on the port, against a database gone with it.
    read_fd, lifeline = os.pipe()
    heartbeat, beat_fd = os.pipe()
    os.set_blocking(heartbeat, False)
    cmd = [sys.executable, "-m", "gateway", "serve", "--host", settings.host]
    cmd += ["--port", str(settings.port), "--reuse-port", "--parent-pipe", str(read_fd)]
    cmd += ["--heartbeat-pipe", str(beat_fd)]
    try:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, pass_fds=(read_fd, beat_fd))
    finally:
        os.close(read_fd)
        os.close(beat_fd)
    log.info("gateway process %s started (pid %s)", number, proc.pid)
    return _Child(number, proc, lifeline, heartbeat)


def watch_parent(fd: int) -> None:
    """In a child: SIGTERM to itself (a graceful stop) once the parent's end of `fd` closes."""

    def wait_for_eof() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 1):
                pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait_for_eof, name="parent-watch", daemon=True).start()


async def beat_to_parent(fd: int) -> None:
    """In a child, awaited first in its app's start-up (which may wait for the database):
    from then to the process's end its event loop writes a byte to `fd` every `BEAT_SECONDS`.
    A loop that stops turning stops the beat, and the parent replaces the process
    (`_listened`)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)

    def beat() -> None:
        with contextlib.suppress(OSError):  # a full pipe (a busy parent), or none left
            os.write(fd, b".")
        loop.call_later(BEAT_SECONDS, beat)

    beat()


def _listened(child: _Child, hung_seconds: float) -> None:
    """The child's heartbeats read; one silent for `hung_seconds` (`GATEWAY_HUNG_SECONDS`,
    from its start too) killed (SIGKILL), which the supervision then sees die and replaces."""
    now = time.monotonic()
    with contextlib.suppress(BlockingIOError):
        while os.read(child.heartbeat, 4096):
            child.beat_at = now
    if now - child.beat_at > hung_seconds:
        log.error(
            "gateway process %s (pid %s) gave no heartbeat for %.0f s (its event loop is stuck, "
            "or the process stopped): killed with SIGKILL, to be replaced",
            child.number,
            child.proc.pid,
            now - child.beat_at,
        )
        child.proc.kill()
        child.beat_at = float("inf")  # killed once; it is reaped at the next look


def _supervised(child: _Child, settings: Settings, env: dict[str, str]) -> _Child:
    """`child` as it is (its heartbeat read: `_listened`), or, once it died, its restart due
    (`restart_at`), then its successor when that time comes."""
    if child.restart_at is None:
        if child.proc.poll() is None:
            _listened(child, settings.hung_seconds)
            return child
        _died(child, env)
    assert child.restart_at is not None
    if child.refused or time.monotonic() < child.restart_at:
        return child
    restarted = _start(child.number, settings, env)
    restarted.delay = child.delay
    return restarted


def _died(child: _Child, env: dict[str, str]) -> None:
    """Mark a dead child's restart due: at once after a while running; one that keeps dying
    right after starting is restarted ever more slowly."""
    code = child.proc.returncode
    mark_process_dead(child.proc.pid, Path(env[MULTIPROCESS_DIR]))
    os.close(child.lifeline)
    os.close(child.heartbeat)
    if code == 2:
        log.critical(
            "gateway process %s refused its configuration (exit 2, said above): stopping",
            child.number,
        )
        child.refused = True
        child.restart_at = float("inf")  # gone: `_stop` leaves it alone
        return
    quick = time.monotonic() - child.started < 60
    delay = child.delay if quick else 0.0
    log.error("gateway process %s exited with %s; restarting in %.0fs", child.number, code, delay)
    child.restart_at = time.monotonic() + delay
    child.delay = min(child.delay * 2, _RESTART_DELAY[1]) if quick else _RESTART_DELAY[0]


def _stop(children: list[_Child], metrics: Path, seconds: float) -> None:
    """SIGTERM to every child, then SIGKILL (logged) to those still running `seconds` later."""
    # A child waiting for its restart is gone already (reaped, its lifeline closed).
    children = [child for child in children if child.restart_at is None]
    for child in children:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + seconds
    for child in children:
        try:
            child.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning(
                "gateway process %s (pid %s) still running %g s after SIGTERM, past its "
                "shutdown deadlines: killed (SIGKILL)",
                child.number,
                child.proc.pid,
                seconds,
            )
            child.proc.kill()
            child.proc.wait()
        os.close(child.lifeline)
        os.close(child.heartbeat)
        mark_process_dead(child.proc.pid, metrics)
