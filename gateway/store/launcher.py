"""The embedded database's launcher: runs `secantusd-py` and stops it when the gateway dies.

Run as a separate process by `EmbeddedServer` (standard library only, never imported by the
gateway): `python -I launcher.py WATCH_FD PID_FILE -- secantusd-py ARGS...`.

- The gateway holds the write end of a pipe whose read end is WATCH_FD and never writes to
  it. However the gateway ends (SIGKILL included, from any thread) the kernel closes that
  end, the launcher reads EOF, and stops the database (SIGTERM, then SIGKILL after 10 s).
  A parent-death signal alone would not do: on Linux it fires when the *thread* that forked
  the child exits, not the process.
- SIGTERM/SIGINT to the launcher (the gateway's graceful stop) go to the database. Each
  signal it sends the database comes after a SIGCONT and goes to its main thread (Linux), so
  that a frozen (stopped) database acts on it at once (`_terminate`). One the database has
  not acted on a second later (it still holds its listening socket) is sent again
  (`_Stopping`).
- On Linux the database also gets SIGKILL if the launcher itself is killed (prctl
  PR_SET_PDEATHSIG, set from the launcher's only thread).
- The database's pid goes into PID_FILE while it runs, so the next start can find a
  leftover one (see `embedded.stop_stale`).
- The launcher exits with the database's exit code (128 + N when signal N killed it) and
  says why in the database log, which its stdout and stderr are.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1
_STOP_SECONDS = 10.0
_AGAIN_SECONDS = 1.0


def _die_with_launcher() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _terminate(child: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    """SIGCONT, then `signum` to the database's main thread. A stopped process (SIGSTOP, a
    debugger's, a frozen container's) acts on no signal but SIGKILL until it continues. And
    a signal sent to the whole process just as it continues is taken by whichever of its
    threads can, not always the main thread, where Python runs the handler: blocked in its
    wait, it never ran it. Either way the graceful stop of a frozen database waited its whole
    bound, then killed it."""
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGCONT)
        if child.poll() is None and _tgkill(child.pid, signum) != 0:
            child.send_signal(signum)


def _tgkill(pid: int, signum: int) -> int:
    """`signum` to the main thread of `pid` (Linux); -1 where that cannot be done."""
    if not sys.platform.startswith("linux"):
        return -1
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "tgkill"):  # glibc before 2.30
        return -1
    return int(libc.tgkill(pid, pid, signum))


class _Stopping:
    """A stop asked of the database, sent again while the database has not acted on it.

    A Python process whose main thread is blocked in a wait (secantusd-py's, in
    `server.wait()`) now and then runs no handler for a signal it was sent as it was
    continued after a SIGSTOP: the kernel delivered the signal (nothing left pending) but
    CPython's handler never ran, the main thread back in its wait until another signal came
    (2-5 in 1,000 such stops under load, in either order of SIGCONT and SIGTERM:
    `bench/signal_race.py`). A gateway stopped while its database was frozen then waited the
    launcher's whole bound for it. A database that has acted on its SIGTERM has closed its
    listening socket (SecantusDB's stop does it first): the signal goes again only while the
    database's process still holds it (`_holds_listener`), since a second signal while a
    stop runs would run the handler's whole stop again inside it, and its exit would cut the
    first one short, perhaps in the middle of closing the storage. (Not "while it accepts
    connections": on Linux a listening socket closed while a thread is blocked in its
    `accept` still takes them.)

    The signal handlers only record the stop (`ask`); it is sent from the launcher's loop
    (`send`), so that a signal landing while one is being sent cannot send another."""

    def __init__(self, child: subprocess.Popen[bytes], command: list[str]) -> None:
        self._child = child
        options = dict(itertools.pairwise(command))
        port = options.get("--port", "")
        self._port = int(port) if port.isdigit() else None
        self._host = options.get("--host") or "127.0.0.1"
        self._signum: int | None = None
        self._sent: float | None = None
        self._woken = False

    @property
    def asked(self) -> bool:
        return self._signum is not None

    def ask(self, signum: int = signal.SIGTERM) -> None:
        if self._signum is None:
            self._signum = signum

    def send(self) -> None:
        """The stop asked, sent once; again each `_AGAIN_SECONDS` while ignored."""
        if self._signum is None or self._child.poll() is not None:
            return
        now = time.monotonic()
        if self._sent is None:
            self._sent = now
            _terminate(self._child, self._signum)
        elif not self._woken and self._acted_on():
            self._woken = True
            self._wake_accept()
        elif now - self._sent >= _AGAIN_SECONDS:
            self._sent = now
            if self._port is not None and _holds_listener(self._child.pid, self._port):
                print("launcher: the database has not acted on its stop signal; again", flush=True)
                _terminate(self._child, self._signum)
            else:  # stopping: continued, should it have been frozen again meanwhile
                with contextlib.suppress(ProcessLookupError):
                    self._child.send_signal(signal.SIGCONT)

    def _acted_on(self) -> bool:
        """Whether the database has acted on its stop: it closed its listening socket, which
        is still there, a thread of it waiting in `accept` on it (Linux: `/proc`)."""
        if self._port is None:
            return False
        return _listener_exists(self._port) and not _holds_listener(self._child.pid, self._port)

    def _wake_accept(self) -> None:
        """One connection to the closed listening socket, for the accept waiting on it to
        return. SecantusDB's stop closes the socket, which on Linux does not wake a thread
        blocked in its `accept`, then waits up to 2 s for that thread: every stop of the
        database took 2 s more than its work. Taking a connection, the thread sees the stop
        and ends; the stop closes that connection with the others."""
        assert self._port is not None
        with contextlib.suppress(OSError):
            socket.create_connection((self._host, self._port), timeout=0.5).close()

    def wait(self, timeout: float) -> None:
        """Until the database exits, asking again as above; past `timeout` it is killed."""
        deadline = time.monotonic() + timeout
        while self._child.poll() is None:
            if time.monotonic() >= deadline:
                self._child.kill()
                self._child.wait()
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._child.wait(0.1)
            self.send()


def _listener_exists(port: int) -> bool:
    """Whether a socket listens on `port` (Linux); False where that cannot be read."""
    return bool(_listeners(port))


def _listeners(port: int) -> set[str]:
    """The sockets listening on `port`, as `/proc/PID/fd` links name them (Linux:
    `/proc/net/tcp*` name the listening sockets' inodes); none where that cannot be read."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            with open(table) as fh:
                for line in fh.read().splitlines()[1:]:
                    fields = line.split()
                    listening = len(fields) > 9 and fields[3] == "0A"
                    if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
    return inodes


def _holds_listener(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on `port` (`_listeners`, and
    `/proc/PID/fd` the process's). False where that cannot be read: no second signal then,
    the launcher's bound still applies."""
    inodes = _listeners(port)
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
    return False


def _stop(stopping: _Stopping) -> None:
    """The gateway is gone: its stop, if it had asked one, or one now; sent again while
    ignored, killed past the bound."""
    stopping.ask()
    stopping.send()
    stopping.wait(_STOP_SECONDS)


def _exit_code(code: int) -> int:
    if code < 0:
        print(f"launcher: the database was killed by signal {-code}", flush=True)
        return 128 - code
    if code:
        print(f"launcher: the database exited with code {code}", flush=True)
    return code


def main(argv: list[str]) -> int:
    watch_fd, pid_file, command = int(argv[1]), argv[2], argv[4:]
    child = subprocess.Popen(command, preexec_fn=_die_with_launcher, close_fds=True)
    with open(pid_file, "w") as fh:
        fh.write(f"{child.pid}\n")
    stopping = _Stopping(child, command)
    # SIGTERM/SIGINT to the launcher (a graceful stop by the gateway) go to the database.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stopping.ask(signum))
    try:
        while (code := child.poll()) is None:
            with contextlib.suppress(InterruptedError):
                readable, _, _ = select.select([watch_fd], [], [], 0.1)
                if readable and not os.read(watch_fd, 1):
                    print("launcher: the gateway is gone; stopping the database", flush=True)
                    _stop(stopping)
                    return 0
            stopping.send()
        return _exit_code(code)
    finally:
        # Only while it names our database: a gateway started meanwhile (this launcher was
        # slow to stop a database its SIGKILLed gateway left) has written its own there.
        with contextlib.suppress(OSError, ValueError):
            with open(pid_file) as fh:
                named = int(fh.read().strip())
            if named == child.pid:
                os.unlink(pid_file)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
