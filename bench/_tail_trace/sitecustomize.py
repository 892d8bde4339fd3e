"""Loaded by `bench/trace_tail.py run` into every gateway it starts (this directory is put first
on PYTHONPATH): with TAIL_TRACE_DIR set, `gateway serve` logs what it does (instrument.py)."""

import os

if os.environ.get("TAIL_TRACE_DIR"):
    import instrument

    instrument.install()
