"""A test hung in its event loop is ended by the suite's timeout (pyproject.toml).

pytest-timeout's default method raises its failure from a SIGALRM handler in the main thread,
once. In an asyncio test that exception lands wherever the loop is: in the selector's wait it
ends the test, but in a task's step or a callback asyncio takes it for that task's outcome
(or logs it), and the test hangs on with no timer left. A CI run sat 12 minutes on a hung
test (tests/test_fold_mid_stream.py, a fold that ignored its cancellation) past the 60 s
timeout. The thread method dumps every thread's stack and ends the process (a worker, under
pytest-xdist, which starts another): the run fails and goes on, it does not hang."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HUNG = """
import asyncio
import time


async def test_hung() -> None:
    async def busy() -> None:  # a loaded loop: the alarm lands in a task's step
        while True:
            end = time.perf_counter() + 0.05
            while time.perf_counter() < end:
                pass
            await asyncio.sleep(0)

    burner = asyncio.create_task(busy())
    await asyncio.get_running_loop().create_future()  # never resolved
    burner.cancel()
"""


def test_a_test_hung_in_a_busy_event_loop_is_ended_by_the_timeout(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(HUNG)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), "-o", "timeout=2"]
    ended = subprocess.run(
        [*command, str(tmp_path / "test_hung.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=45,  # raises (the test fails) where the timeout did not end it
    )
    assert ended.returncode != 0
    assert "Timeout" in ended.stdout + ended.stderr
