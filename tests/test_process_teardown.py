"""A process whose shutdown steps are done exits within a bound even when a task left behind
will not end (a database driver stuck on a frozen server): the event loop's teardown waits
for every task it cancels, and would hold the process past any grace period."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import Gateway, free_port, wait_until

SCRIPT = """
import asyncio, sys
from aiohttp import web
from gateway.web import server

async def stubborn(app):
    async def never_ends():
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue  # as a task that swallows its cancellation
    app["stuck"] = asyncio.get_running_loop().create_task(never_ends())

app = web.Application()
app.on_startup.append(stubborn)
server.run(app, host="127.0.0.1", port=int(sys.argv[1]), shutdown_timeout=1,
           on_listening=lambda url: print("listening", file=sys.stderr, flush=True))
"""


def test_a_task_that_will_not_end_does_not_hold_the_process_after_its_shutdown(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(free_port())],
            stderr=out,
            cwd=Path(__file__).resolve().parent.parent,
        )
    try:
        wait_until(lambda: "listening" in log.read_text(), 30, "the server to listen")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, log.read_text()
    assert elapsed < 15, elapsed  # the teardown's 3 s after the (instant) steps, with room
    assert "teardown did not finish within 3 s" in log.read_text()


def test_a_gateway_that_is_not_ready_in_time_is_stopped_not_left_serving(tmp_path: Path) -> None:
    """`Gateway.start` timed out on a loaded machine and raised with its process running: a
    `serve --workers 2` whose start outlived the test's 30 s served on, orphaned, with its
    children and its database, after the test run had ended."""
    gateway = Gateway(tmp_path, "--workers", "2")
    with pytest.raises(AssertionError, match="to be ready"):
        gateway.start(timeout=0.2)
    assert gateway.proc is not None and gateway.proc.poll() is not None
    assert not any(f"--port {gateway.port} --reuse-port" in cmd for cmd in _command_lines())


def _command_lines() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found.append((entry / "cmdline").read_bytes().replace(b"\\0", b" ").decode())
    return found
