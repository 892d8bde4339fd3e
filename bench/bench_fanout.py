"""Durable fan-out throughput (SPEC §8): deliveries per second to a local partner with 1 and
2 `gateway worker` processes on one embedded SecantusDB.

    python bench/bench_fanout.py [--deliveries 3000] [--workers 1,2] [--concurrency 32]
                                 [--partner-ms 0]

For each worker count, on a fresh database: a partner, a deliver action and a subscription
are created through the gateway's own services; N pending deliveries (one per synthetic
`entity.updated` event, exactly the documents the fan-out writes) are inserted; then K worker
processes start and drain the queue into a local partner that answers 200 at once. The rate
is measured from the partner's first request to its N-th; every delivery must end
`succeeded`. Printed per run: deliveries/s, CPU per delivery of the worker processes and of
the database process (/proc), worker RSS at the end; then the 2-vs-1 ratio.

With `--partner-ms M` the partner takes M ms to answer, as partners on the internet do: each
worker then has at most `--concurrency` deliveries in flight, and the partner's latency, not
the embedded database, is what limits one process (SPEC §8: "deliveries per second scale
with processes on a database that is not the limit"; at 0 ms the embedded database is the
limit, and a second process only adds contention).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from bson import ObjectId

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import cpu_seconds  # noqa: E402
from gateway.config import Secret, Settings  # noqa: E402
from gateway.delivery.fanout import delivery_document  # noqa: E402
from gateway.services import open_services  # noqa: E402
from gateway.store.embedded import EmbeddedServer  # noqa: E402

SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789abcdef"
TENANT = "bench"


@dataclass
class Result:
    workers: int
    rate: float
    worker_cpu_us: float
    db_cpu_us: float
    rss_mb: list[float]


class Receiver:
    def __init__(self, expected: int, delay: float = 0.0) -> None:
        self.expected = expected
        self.delay = delay
        self.ids: set[str] = set()
        self.requests = 0
        self.first = self.last = 0.0
        self.done = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        now = time.perf_counter()
        self.first = self.first or now
        self.requests += 1
        self.ids.add(request.headers.get("webhook-id", ""))
        if len(self.ids) >= self.expected and not self.done.is_set():
            self.last = now
            self.done.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({})


def _event(n: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "_id": ObjectId(),
        "tenant": TENANT,
        "type": "entity.updated",
        "occurred_at": now,
        "entity": {"type": "vehicle", "id": str(ObjectId()), "key": f"RBT{n % 10}A{n % 100:02d}"},
        "data": {"plate": f"RBT{n % 10}A{n % 100:02d}", "odometer_km": 1000.0 + n},
        "changes": [{"field": "odometer_km", "old": 999.0 + n, "new": 1000.0 + n}],
        "origin": {"kind": "trigger", "id": "bench"},
    }


async def _prepare(settings: Settings, uri: str, partner_url: str, count: int) -> None:
    """Partner, action, subscription through the services; N deliveries as fan-out makes them."""
    async with open_services(settings, mongodb_uri=uri) as services:
        service = services.actions
        partner = await service.create_partner(
            TENANT,
            {
                "name": "ERP",
                "base_url": partner_url,
                "auth": {"type": "bearer", "token": "t"},
                "max_concurrency": 200,
            },
        )
        action = await service.create_action(
            TENANT,
            {
                "name": "mileage",
                "partner_id": str(partner["_id"]),
                "method": "POST",
                "path": "/mileage",
                "mode": "deliver",
            },
        )
        sub, _ = await service.create_subscription(
            TENANT, {"action_id": str(action["_id"]), "event_types": ["entity.updated"]}
        )
        catalog_action = await service._catalog.action(TENANT, str(action["_id"]))
        now = datetime.now(UTC)
        docs = [delivery_document(_event(n), sub, catalog_action, now) for n in range(count)]
        for start in range(0, count, 500):
            await services.store.deliveries.insert_many(docs[start : start + 500])


async def _count_succeeded(settings: Settings, uri: str) -> int:
    async with open_services(settings, mongodb_uri=uri) as services:
        return await services.store.db["deliveries"].count_documents({"status": "succeeded"})


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def run_once(
    db: EmbeddedServer, tmp: Path, workers: int, count: int, concurrency: int, partner_ms: float
) -> Result:
    receiver = Receiver(count, partner_ms / 1000)
    app = web.Application()
    app.router.add_post("/mileage", receiver.handle)
    partner = web.AppRunner(app, access_log=None)
    await partner.setup()
    site = web.TCPSite(partner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    database = f"bench_fanout_{workers}_{int(partner_ms)}_{os.getpid()}"
    settings = Settings(
        secret_key=Secret(SECRET_KEY),
        data_dir=tmp,
        database=database,
        run_workers=False,
        outbound_allow=("127.0.0.1",),
        log_json=False,
    )
    await _prepare(settings, db.uri, f"http://127.0.0.1:{port}", count)
    env = {
        **os.environ,
        "MONGODB_URI": db.uri,
        "GATEWAY_DATABASE": database,
        "GATEWAY_SECRET_KEY": SECRET_KEY,
        "GATEWAY_ADMIN_RATE_LIMIT": "100000",  # throughput, not the admin limit
        "GATEWAY_OUTBOUND_ALLOW": "127.0.0.1",
        "GATEWAY_DATA_DIR": str(tmp),
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_DELIVERY_CONCURRENCY": str(concurrency),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway", "worker"], env=env, stderr=subprocess.DEVNULL
        )
        for _ in range(workers)
    ]
    try:
        while not receiver.first:  # the workers' start-up is not part of the rate
            await asyncio.sleep(0.01)
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        db0 = cpu_seconds(db.pid) if db.pid else 0.0
        await asyncio.wait_for(receiver.done.wait(), 600)
        cpu1 = sum(cpu_seconds(p.pid) for p in procs)
        db1 = cpu_seconds(db.pid) if db.pid else 0.0
        rss = [_rss_mb(p.pid) for p in procs]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:  # the partner (this loop) answers the sends they finish meanwhile
            await asyncio.to_thread(proc.wait, 30)
        await partner.cleanup()
    succeeded = await _count_succeeded(settings, db.uri)
    assert succeeded == count, f"{succeeded} of {count} deliveries succeeded"
    elapsed = receiver.last - receiver.first
    duplicates = receiver.requests - count
    rate = count / elapsed
    print(
        f"{workers} worker process(es): {rate:7.0f} deliveries/s  "
        f"({count} in {elapsed:.2f} s, {duplicates} duplicates; CPU per delivery: workers "
        f"{(cpu1 - cpu0) / count * 1e6:.0f} µs, database {(db1 - db0) / count * 1e6:.0f} µs; "
        f"worker RSS {', '.join(f'{r:.0f}' for r in rss)} MB)",
        flush=True,
    )
    return Result(workers, rate, (cpu1 - cpu0) / count * 1e6, (db1 - db0) / count * 1e6, rss)


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = EmbeddedServer(Path(tmp) / "db")
        db.start()
        try:
            results = [
                await run_once(db, Path(tmp), k, args.deliveries, args.concurrency, args.partner_ms)
                for k in args.workers
            ]
        finally:
            db.stop()
    base = results[0]
    for result in results[1:]:
        print(
            f"{result.workers} vs {base.workers} worker process(es): "
            f"{result.rate / base.rate:.2f}x the deliveries/s"
        )
    if args.json:
        figures = [
            {"workers": r.workers, "rate": r.rate, "cpu_us": r.worker_cpu_us, "db_us": r.db_cpu_us}
            for r in results
        ]
        args.json.write_text(json.dumps(figures))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="GATEWAY_DELIVERY_CONCURRENCY of each worker process",
    )
    parser.add_argument(
        "--partner-ms", type=float, default=0.0, help="the partner's time to answer, in ms"
    )
    parser.add_argument("--json", type=Path, help="write the rates to this file")
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
