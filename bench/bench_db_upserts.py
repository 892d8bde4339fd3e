"""Write rate of the embedded SecantusDB, the ceiling of every end-to-end figure (SPEC §8).

    python bench/bench_db_upserts.py [--upserts 15000] [--retry-upserts 6000] [--concurrency 16]
        [--index-upserts 3000] [--bulk-docs 15000] [--batch 100]

Starts `secantusd-py` (gateway.store.embedded.EmbeddedServer) in a temporary directory and,
through AsyncMongoClient, measures one after the other on it:

1. `update_one(..., upsert=True)` by natural key (1,000 plates, vehicle position documents,
   unique index like the gateway's) with retryWrites=false: the rate of the first and the last
   thousand, to show it holds;
2. the same with retryWrites=true on a shorter run: the server keeps every retryable write's
   reply and scans them all on each write, so its rate collapses (SPEC §8);
3. the same with every index of the gateway's `entities` collection (gateway/store/entities.py):
   what each extra index costs the embedded server per write;
4. raw `bulk_write` of the same position documents in batches (insert_many of fixes, and
   UpdateOne upserts by plate): the baseline of "batched position ingestion >= 70% of raw
   bulk_write".

Each line gives the database server's CPU per write too (/proc/PID/stat), and the last lines
the driver's: this process's CPU per write, one update_one at a time vs bulk_write.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import ASCENDING, AsyncMongoClient, IndexModel, InsertOne, UpdateOne

from bench._common import cpu_seconds, position_doc
from gateway.store.embedded import EmbeddedServer
from gateway.store.entities import INDEXES as ENTITY_INDEXES

DRIVER_CPU: dict[str, float] = {}  # this process's CPU per write (µs): the driver's cost
NATURAL_KEY = IndexModel(
    [("tenant", ASCENDING), ("type", ASCENDING), ("nk", ASCENDING)], unique=True
)


async def upserts(
    uri: str, name: str, total: int, concurrency: int, db_pid: int, indexes: list | None = None
) -> list[tuple[float, float]]:
    """`total` upserts from `concurrency` tasks: (rate, DB CPU µs) per 1,000 completions."""
    client: AsyncMongoClient = AsyncMongoClient(uri, tz_aware=True)
    coll = client["bench"][name]
    await coll.create_indexes(indexes or [NATURAL_KEY])
    rng = random.Random(42)
    docs = [position_doc(rng) for _ in range(total)]
    done = 0
    marks: list[tuple[float, float]] = [(time.perf_counter(), cpu_seconds(db_pid))]
    client_cpu = time.process_time()

    async def writer(my_docs: list) -> None:
        nonlocal done
        for key, fields in my_docs:
            await coll.update_one(key, {"$set": fields}, upsert=True)
            done += 1
            if done % 1000 == 0:
                marks.append((time.perf_counter(), cpu_seconds(db_pid)))

    await asyncio.gather(*(writer(docs[i::concurrency]) for i in range(concurrency)))
    DRIVER_CPU[f"update_one {name}"] = (time.process_time() - client_cpu) / total * 1e6
    await client.close()
    rates = []
    for (t0, c0), (t1, c1) in itertools.pairwise(marks):
        rates.append((1000 / (t1 - t0), (c1 - c0) / 1000 * 1e6))
    return rates


async def bulk(uri: str, total: int, batch: int, db_pid: int) -> dict[str, tuple[float, float]]:
    client: AsyncMongoClient = AsyncMongoClient(uri, tz_aware=True)
    db = client["bench"]
    await db["bulk_upserts"].create_indexes([NATURAL_KEY])
    rng = random.Random(7)
    docs = [position_doc(rng) for _ in range(total)]
    results = {}
    for label, coll, make in (
        ("insert", db["bulk_fixes"], lambda k, f: InsertOne({**k, **f})),
        ("upsert", db["bulk_upserts"], lambda k, f: UpdateOne(k, {"$set": f}, upsert=True)),
    ):
        t0, c0, p0 = time.perf_counter(), cpu_seconds(db_pid), time.process_time()
        for i in range(0, total, batch):
            await coll.bulk_write([make(k, f) for k, f in docs[i : i + batch]], ordered=False)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds(db_pid) - c0
        results[label] = (total / elapsed, cpu / total * 1e6)
        DRIVER_CPU[f"bulk {label}"] = (time.process_time() - p0) / total * 1e6
    await client.close()
    return results


def mean(rates: list[tuple[float, float]]) -> float:
    return sum(r for r, _ in rates) / len(rates)


def summary(label: str, rates: list[tuple[float, float]]) -> None:
    (first, cpu_first), (last, cpu_last) = rates[0], rates[-1]
    print(
        f"{label:<28} first 1k {first:7,.0f}/s ({cpu_first:4.0f} µs DB CPU)   "
        f"last 1k {last:7,.0f}/s ({cpu_last:4.0f} µs)   last/first {last / first:5.2f}"
    )
    print("  per 1k: " + " ".join(f"{r:,.0f}" for r, _ in rates))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upserts", type=int, default=15_000)
    parser.add_argument("--retry-upserts", type=int, default=6_000)
    parser.add_argument("--index-upserts", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bulk-docs", type=int, default=15_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-db-") as tmp:
        server = EmbeddedServer(Path(tmp) / "db")
        server.start()
        try:
            assert server.pid is not None
            no_retry = server.uri
            assert "retryWrites=false" in no_retry
            retry = no_retry.replace("retryWrites=false", "retryWrites=true")
            print(f"embedded SecantusDB pid {server.pid}, concurrency {args.concurrency}")
            conc, pid = args.concurrency, server.pid
            rates = await upserts(no_retry, "plain", args.upserts, conc, pid)
            summary(f"upsert retryWrites=false x{args.upserts}", rates)
            slow = await upserts(retry, "retrywrites", args.retry_upserts, conc, pid)
            summary(f"upsert retryWrites=true x{args.retry_upserts}", slow)
            indexed = await upserts(
                no_retry, "entity_indexes", args.index_upserts, conc, pid, ENTITY_INDEXES
            )
            summary(f"upsert +{len(ENTITY_INDEXES)} entity indexes x{args.index_upserts}", indexed)
            raw = await bulk(no_retry, args.bulk_docs, args.batch, server.pid)
            for label, (rate, cpu) in raw.items():
                print(
                    f"bulk_write {label} batch {args.batch:<10}  {rate:7,.0f} docs/s "
                    f"({cpu:4.0f} µs DB CPU/doc)"
                )
            print(
                "driver (AsyncMongoClient) CPU per write in this process: "
                + ", ".join(f"{k} {v:.0f} µs" for k, v in DRIVER_CPU.items())
            )
            print(
                "ratios: bulk upsert / single upsert (last 1k, retryWrites=false) "
                f"{raw['upsert'][0] / rates[-1][0]:.2f}; retryWrites=true last/first "
                f"{slow[-1][0] / slow[0][0]:.2f}; retryWrites=false last/first "
                f"{rates[-1][0] / rates[0][0]:.2f}; with the gateway's entity indexes / natural "
                f"key only {mean(indexed) / mean(rates[: len(indexed)]):.2f}"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
