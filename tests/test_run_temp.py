"""Where the suite keeps its temporary files (tests/conftest.py): in memory only where the
memory is there, the memory cgroup's limit included (tmpfs pages count against it); those of
a run that ended removed by a later run, never those of a run still going."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from tests.conftest import RUN_TEMP_PREFIX, _cgroup_room, _remove_ended_runs


def _group(root: Path, path: str, files: dict[str, str]) -> None:
    node = root / path
    node.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (node / name).write_text(text)


def test_a_v1_memory_cgroups_limit_and_its_parents_bound_the_room(tmp_path: Path) -> None:
    own = tmp_path / "cgroup"
    own.write_text("9:pids:/\n4:memory:/jobs/run7\n0::/\n")
    unlimited = {"memory.limit_in_bytes": "9223372036854771712\n", "memory.usage_in_bytes": "10\n"}
    _group(tmp_path, "memory", unlimited)
    _group(
        tmp_path,
        "memory/jobs",
        {"memory.limit_in_bytes": "3000\n", "memory.usage_in_bytes": "1000\n"},
    )
    _group(
        tmp_path,
        "memory/jobs/run7",
        {"memory.limit_in_bytes": "5000\n", "memory.usage_in_bytes": "900\n"},
    )
    assert _cgroup_room(tmp_path, own) == 2000  # the parent's: 3000 - 1000


def test_a_v2_cgroup_without_a_limit_bounds_nothing_and_one_with_it_does(tmp_path: Path) -> None:
    own = tmp_path / "cgroup"
    own.write_text("0::/user.slice/ci.scope\n")
    _group(tmp_path, "", {"memory.current": "5\n"})  # the root has no memory.max
    _group(tmp_path, "user.slice", {"memory.max": "max\n", "memory.current": "100\n"})
    _group(tmp_path, "user.slice/ci.scope", {"memory.max": "max\n", "memory.current": "50\n"})
    assert _cgroup_room(tmp_path, own) == 1 << 62
    (tmp_path / "user.slice/ci.scope/memory.max").write_text("8192\n")
    assert _cgroup_room(tmp_path, own) == 8192 - 50


def test_a_cgroup_path_not_mounted_here_is_read_from_the_mounted_root(tmp_path: Path) -> None:
    """In a container the host's path may not exist under /sys/fs/cgroup: its root, the
    container's own group, is read."""
    own = tmp_path / "cgroup"
    own.write_text("4:memory:/host/path/of/this/container\n")
    _group(tmp_path, "memory", {"memory.limit_in_bytes": "4096\n", "memory.usage_in_bytes": "96\n"})
    assert _cgroup_room(tmp_path, own) == 4000


def test_a_run_starting_removes_the_files_of_ended_runs_only(tmp_path: Path) -> None:
    """Runs start beside each other (several pytest runs on one machine): each removes the
    files of those that ended, whose lock no process holds, and leaves a live run's alone
    however long it has run, and a run's that is starting (its lock not taken yet)."""
    runs = {name: tmp_path / f"{RUN_TEMP_PREFIX}{name}" for name in ("live", "ended", "starting")}
    for run in runs.values():
        run.mkdir()
        (run / "db.log").write_text("a database's log")
        run.with_name(run.name + ".lock").touch()
    an_hour_ago = time.time() - 3600
    for name in ("live", "ended"):
        os.utime(runs[name].with_name(runs[name].name + ".lock"), (an_hour_ago, an_hour_ago))
    held = os.open(runs["live"].with_name(runs["live"].name + ".lock"), os.O_WRONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # the live run's, held until it ends
        _remove_ended_runs(tmp_path)
    finally:
        os.close(held)
    assert (runs["live"] / "db.log").exists()
    assert (runs["starting"] / "db.log").exists()
    assert not runs["ended"].exists()
    assert not runs["ended"].with_name(runs["ended"].name + ".lock").exists()
