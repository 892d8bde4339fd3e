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
  that a frozen (stopped) database acts on it at once (`_terminate`).
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
import os
import select
import signal
import subprocess
import sys

_PR_SET_PDEATHSIG = 1
_STOP_SECONDS = 10.0


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


def _stop(child: subprocess.Popen[bytes]) -> None:
    _terminate(child)
    try:
        child.wait(_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


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
    # SIGTERM/SIGINT to the launcher (a graceful stop by the gateway) go to the database.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: _terminate(child, signum))
    try:
        while (code := child.poll()) is None:
            with contextlib.suppress(InterruptedError):
                readable, _, _ = select.select([watch_fd], [], [], 0.1)
                if readable and not os.read(watch_fd, 1):
                    print("launcher: the gateway is gone; stopping the database", flush=True)
                    _stop(child)
                    return 0
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
