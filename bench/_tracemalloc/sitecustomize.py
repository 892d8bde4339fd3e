"""Loaded by `bench/soak.py --tracemalloc DIR` into the gateway it starts (this directory is put
on PYTHONPATH, PYTHONTRACEMALLOC=N starts tracing): on SIGUSR2 the process writes a tracemalloc
snapshot to $SOAK_TRACEMALLOC_DIR/snapshot-<n>.pickle (written aside, then renamed)."""

import os
import signal
import tracemalloc

_dir = os.environ.get("SOAK_TRACEMALLOC_DIR")
_count = 0


def _dump(signum: int, frame: object) -> None:
    global _count
    _count += 1
    path = os.path.join(_dir or ".", f"snapshot-{_count}.pickle")
    tracemalloc.take_snapshot().dump(path + ".part")
    os.replace(path + ".part", path)


if _dir and tracemalloc.is_tracing():
    signal.signal(signal.SIGUSR2, _dump)
