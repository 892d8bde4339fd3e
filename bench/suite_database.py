"""What the test suite's database per test costs (tests/conftest.py: one SecantusDB per test
process, a fresh database per test), and what reusing indexed databases would save.

Per round of `--tests` app starts, for each step its median wall time, and its mean CPU time
in this process and in the database server (from /proc, counted in 10 ms ticks: a mean over
the round, not a median of ticks):

- `fresh`: the gateway's start on a new database (`open_services`: its indexes, its one-time
  upgrade steps, its key check), what every test's `client`/`services` fixture does;
- `indexed`: the same start on a database that already has them (a reused database);
- `emptied`: `delete_many({})` on each of its collections (what a reused one needs between
  tests), and `dropped`: `dropDatabase`.

A pool of indexed databases saves `fresh - indexed` and pays `emptied` per test. Then
`--accumulate N` databases are started, each with a few documents, as the suite leaves them
on its server (it drops none), and the round is measured again: whether a server holding
many databases starts a test's database more slowly.

    .venv/bin/python -m bench.suite_database --tests 20 --accumulate 1500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from pymongo import AsyncMongoClient

from bench._common import cpu_seconds
from gateway.config import Secret, Settings
from gateway.services import open_services
from gateway.store.embedded import EmbeddedServer

SECRET_KEY = "bench-suite-database-secret-key-0123456789"


class Meter:
    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.rows: dict[str, list[tuple[float, float, float]]] = {}

    def start(self) -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), cpu_seconds(self.server_pid)

    def stop(self, step: str, started: tuple[float, float, float]) -> None:
        now = self.start()
        self.rows.setdefault(step, []).append(
            (now[0] - started[0], now[1] - started[1], now[2] - started[2])
        )

    def report(self, title: str) -> None:
        print(f"{title} (load average {os.getloadavg()[0]:.1f})")
        for step, rows in self.rows.items():
            wall = statistics.median(r[0] for r in rows) * 1000
            own, server = (statistics.fmean(r[i] for r in rows) * 1000 for i in (1, 2))
            print(f"  {step:8} wall {wall:6.1f} ms  cpu {own:5.1f} ms  server cpu {server:5.1f} ms")
        self.rows.clear()


def settings(data_dir: Path, database: str) -> Settings:
    return Settings(
        secret_key=Secret(SECRET_KEY),
        data_dir=data_dir,
        database=database,
        run_workers=False,
        log_json=False,
        outbound_allow=("127.0.0.1",),
    )


async def round_of(meter: Meter, uri: str, data_dir: Path, prefix: str, tests: int) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri)
    try:
        for step in ("fresh", "indexed"):
            for n in range(tests):
                started = meter.start()
                async with open_services(settings(data_dir, f"{prefix}{n}"), mongodb_uri=uri):
                    meter.stop(step, started)
        for n in range(tests):
            db = client[f"{prefix}{n}"]
            started = meter.start()
            for name in await db.list_collection_names():
                await db[name].delete_many({})
            meter.stop("emptied", started)
            started = meter.start()
            await client.drop_database(db.name)
            meter.stop("dropped", started)
    finally:
        await client.close()


async def accumulate(uri: str, data_dir: Path, count: int) -> None:
    for n in range(count):
        async with open_services(settings(data_dir, f"kept{n}"), mongodb_uri=uri) as services:
            await services.store.db["scratch"].insert_many([{"n": i} for i in range(20)])


async def main(tests: int, count: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-suite-database-", dir="/dev/shm"))
    server = EmbeddedServer(root / "db", test_commands=True)
    server.start()
    try:
        assert server.pid is not None
        meter = Meter(server.pid)
        await round_of(meter, server.uri, root, "first", tests)
        meter.report(f"a server holding no other database, {tests} starts")
        if count:
            await accumulate(server.uri, root, count)
            await round_of(meter, server.uri, root, "later", tests)
            meter.report(f"a server holding {count} databases, {tests} starts")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=20, help="app starts per step")
    parser.add_argument("--accumulate", type=int, default=0, help="databases left before")
    args = parser.parse_args()
    asyncio.run(main(args.tests, args.accumulate))
