"""The embedded database's launcher: runs `secantusd-py` and stops it when the gateway dies.

Run as a separate process by `EmbeddedServer` (standard library only, never imported by the
gateway): `python -I launcher.py WATCH_FD PID_FILE -- secantusd-py ARGS...`.

- The gateway holds the write end of a pipe whose read end is WATCH_FD and never writes to
  it. However the gateway ends (SIGKILL included, from any thread) the kernel closes that
  end, the launcher reads EOF, and stops the database (SIGTERM, then SIGKILL after 10 s).
  A parent-death signal alone would not do: on Linux it fires when the *thread* that forked
  the child exits, not the process.
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


def _stop(child: subprocess.Popen[bytes]) -> None:
    child.terminate()
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
        signal.signal(sig, lambda signum, frame: child.send_signal(signum))
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
        with contextlib.suppress(OSError):
            os.unlink(pid_file)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
