"""Does a frozen Python process act on the stop signal the embedded database's launcher
sends it? (Why `gateway/store/launcher.py` sends the stop again while the database has not
acted on it.)

A child stands in for `secantusd-py`: its main thread blocked in `threading.Event().wait()`
(as the database's is, in `server.wait()`), its SIGTERM handler in Python, and busy threads
(the database's connection threads, woken by the SIGCONT). Each round freezes it (SIGSTOP),
then sends one stop, the launcher's way (`_terminate`: SIGCONT, then SIGTERM to its main
thread) or the other way round, and counts the rounds whose handler did not run within 2 s.
For each lost one it checks that the kernel holds no SIGTERM pending (delivered: CPython
never ran the handler), then sends a second SIGTERM, which wakes it, as the launcher's
second one woke the database when the gateway, killed past the test's bound, closed its
pipe. On 2026-12-04 (2 shared cores, loaded; `--rounds 1000 --threads 8`): 3 of 1,000 lost
the launcher's way, 2 of 1,000 the other way (5 of 1,500 with 4 threads).

    python bench/signal_race.py [--rounds 600] [--threads 8] [--order cont-term|term-cont|both]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.store.launcher import _terminate

CHILD = r"""
import os, signal, sys, threading
signal.signal(signal.SIGTERM, lambda signum, frame: os.write(1, b"x"))
def busy():
    while True:
        sum(range(2000))
for _ in range(int(sys.argv[1])):
    threading.Thread(target=busy, daemon=True).start()
os.write(1, b"r")
threading.Event().wait()
"""


def _term_then_cont(child: subprocess.Popen[bytes]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.tgkill(child.pid, child.pid, signal.SIGTERM)
    child.send_signal(signal.SIGCONT)


def _pending(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("SigPnd", "ShdPnd")):
            if int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)):
                return "pending in the kernel"
    return "delivered"


def lost_signals(order: str, rounds: int, threads: int) -> int:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(threads)], stdout=subprocess.PIPE)
    assert child.stdout is not None
    out = child.stdout.fileno()
    try:
        if os.read(out, 1) != b"r":
            raise RuntimeError("the child did not start")
        lost = 0
        for _ in range(rounds):
            os.kill(child.pid, signal.SIGSTOP)
            time.sleep(0.02)
            (_terminate if order == "cont-term" else _term_then_cont)(child)
            if not select.select([out], [], [], 2.0)[0]:
                lost += 1
                print(f"  lost: SIGTERM {_pending(child.pid)}, its handler not run")
                os.kill(child.pid, signal.SIGTERM)  # a second one wakes it
                if not select.select([out], [], [], 5.0)[0]:
                    raise RuntimeError("not even a second SIGTERM was acted on")
            time.sleep(0.01)
            while select.select([out], [], [], 0)[0]:
                os.read(out, 16)
        return lost
    finally:
        child.kill()
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--order", choices=("cont-term", "term-cont", "both"), default="both")
    args = parser.parse_args()
    orders = ("cont-term", "term-cont") if args.order == "both" else (args.order,)
    for order in orders:
        started = time.monotonic()
        lost = lost_signals(order, args.rounds, args.threads)
        print(
            f"{order}: {lost} of {args.rounds} SIGTERMs to a frozen process not acted "
            f"on within 2 s ({time.monotonic() - started:.0f} s)"
        )


if __name__ == "__main__":
    main()
