"""SIGTERM to exit of a working `gateway serve` (tests/test_graceful_shutdown.py's scenario:
trigger POSTs streaming, a delivery and a proxy call in flight on a partner that never
answers), with the shutdown's steps as the log says them. Run from the checkout to measure
(its `gateway` package is what the process runs):

    PYTHONPATH=. .venv/bin/python bench/shutdown_time.py
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_graceful_shutdown import sigterm_while_working

_STEPS = re.compile(
    r"shutting down|stopping the background|closing the database|did not finish|"
    r"stopping the embedded|embedded database stopped"
)


def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        done = sigterm_while_working(Path(data_dir))
    for line in done.log.splitlines():
        if _STEPS.search(line):
            print(line[:160])
    print(
        f"SIGTERM to exit: {done.seconds:.1f} s (exit {done.code}); {len(done.answered)} "
        f"writes answered, {len(set(done.answered) - done.stored)} lost; leases held "
        f"{len(done.leases_held)}, deliveries leased {len(done.deliveries_leased)}"
    )


if __name__ == "__main__":
    main()
