"""Batched position ingest (SPEC §8: "batched ingest at least 70% of the database's raw
insert_many rate for the same documents"), one run, side by side on one embedded SecantusDB.

    python bench/bench_positions_ingest.py [--fixes 20000] [--batch 500] [--vehicles 10]
                                           [--concurrency 4] [--web-only] [--json FILE]
                                           [--sources gateway,gateway@DIR] [--pairs N]

1. raw: the same position documents the gateway stores (gateway/store/positions.py: their
   ids and fields, `j: true`) written with `insert_many(ordered=False)` in batches of
   --batch, --concurrency batches in flight, into a `positions` collection twice: with the
   indexes the gateway gives it on this server (SecantusDB: `retention` on `at`, a plain
   index since the gateway expires fixes itself, and `track` on tenant and `_id`, which
   SecantusDB needs to read an `_id` range without scanning the collection), and with none
   but `_id` (the floor: what the documents alone cost);
2. gateway: `gateway serve` with a position trigger (no mapping: canonical fixes) and
   --vehicles vehicles; the same fixes POSTed as JSON arrays of --batch to /hooks/{id},
   --concurrency requests in flight: the gateway's append rate, each fix validated, its vehicle
   resolved, stored and handed to the fold's inbox, answered once journaled.

Prints fixes/s, the gateway's and the database's CPU per fix, and the ratios gateway ÷ raw
with the gateway's indexes and gateway ÷ raw with `_id` alone. Every gateway run is measured
between two raw runs with the gateway's indexes, and its ratio is against their mean (a shared
machine's load moves the raw rate by 2× between minutes).

A/B: `--sources gateway@/tmp/base,gateway --pairs 3` runs the gateway from each source tree
in turn (after "@": a directory put first on PYTHONPATH; none: this checkout), the whole
sequence `--pairs` times, on one database, and prints each run and the mean ratio per source.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from bson import ObjectId
from pymongo import ASCENDING, AsyncMongoClient, IndexModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import PLATES, cpu_seconds, process_tree, tree_cpu_seconds
from bench.bench_http import GATEWAY, admin_token, free_port, http, journaled, spawn
from gateway.store.embedded import EmbeddedServer
from gateway.store.positions import TRACK_INDEX, position_id

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def fixes(count: int, vehicles: int) -> list[dict[str, Any]]:
    """Canonical fixes: each vehicle in turn, one every 5 s of device time, driving north at
    about 64 km/h (89 m a fix) on a line of its own, so the fold's quality gates take them
    (a fleet's real tracks; jumps of a kilometre every 5 s would be refused as impossible)."""
    out = []
    for i in range(count):
        vehicle, step = i % vehicles, i // vehicles
        at = T0 + timedelta(seconds=5 * step)
        out.append(
            {
                "plate": PLATES[vehicle],
                "time": at.isoformat().replace("+00:00", "Z"),
                "lat": round(-23.55 + step * 8e-4, 6),
                "lon": round(-46.63 - vehicle * 1e-2, 6),
                "speed_kmh": 64.0,
            }
        )
    return out


def documents(batch: list[dict[str, Any]], vehicle_ids: dict[str, str]) -> list[dict[str, Any]]:
    """What the gateway stores for these fixes (store/positions.py PositionStore.append)."""
    now = datetime.now(UTC)
    return [
        {
            "_id": position_id(vehicle_ids[fix["plate"]], datetime.fromisoformat(fix["time"])),
            "t": datetime.fromisoformat(fix["time"]),
            "lat": fix["lat"],
            "lon": fix["lon"],
            "speed_kmh": fix["speed_kmh"],
            "tenant": "bench",
            "vehicle": vehicle_ids[fix["plate"]],
            "at": now,
            "source": "raw",
            "seq": 1,
        }
        for fix in batch
    ]


# The positions collection's indexes as the gateway creates them on SecantusDB
# (PositionStore.ensure_indexes with the gateway's own expiry).
GATEWAY_INDEXES = [IndexModel([("at", ASCENDING)], name="retention"), TRACK_INDEX]


async def raw(
    uri: str,
    db_pid: int,
    batches: list[list[dict[str, Any]]],
    concurrency: int,
    indexes: list[IndexModel],
) -> dict:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        coll = client["bench_raw"]["positions"]
        if indexes:
            await coll.create_indexes(indexes)
        ids = {plate: str(ObjectId()) for plate in PLATES}
        prepared = [documents(batch, ids) for batch in batches]
        gate = asyncio.Semaphore(concurrency)

        async def write(docs: list[dict[str, Any]]) -> None:
            async with gate:
                await coll.insert_many(docs, ordered=False)

        cpu0, db0, wall0 = time.process_time(), cpu_seconds(db_pid), time.perf_counter()
        await asyncio.gather(*(write(docs) for docs in prepared))
        wall = time.perf_counter() - wall0
        count = sum(len(b) for b in batches)
        stored = await coll.count_documents({})
        await client.drop_database("bench_raw")
    finally:
        await client.close()
    return {
        "fixes": count,
        "stored": stored,
        "rate": count / wall,
        "client_us": (time.process_time() - cpu0) / count * 1e6,
        "db_us": (cpu_seconds(db_pid) - db0) / count * 1e6,
    }


async def through_gateway(
    url: str, token: str, pids: list[int], db_pid: int, batches: list[list[dict]], concurrency: int
) -> dict:
    bodies = [json.dumps(batch).encode() for batch in batches]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    gate = asyncio.Semaphore(concurrency)
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:

        async def post(body: bytes) -> None:
            async with gate, session.post(url, data=body, headers=headers) as response:
                answer = await response.json()
                statuses.append(response.status)
                if response.status != 200:
                    print(f"  {response.status}: {str(answer)[:300]}")

        gw0, db0 = tree_cpu_seconds(pids), cpu_seconds(db_pid)
        wall0 = time.perf_counter()
        await asyncio.gather(*(post(body) for body in bodies))
        wall = time.perf_counter() - wall0
    count = sum(len(b) for b in batches)
    return {
        "fixes": count,
        "ok_requests": statuses.count(200),
        "rate": count / wall,
        "gateway_us": (tree_cpu_seconds(pids) - gw0) / count * 1e6,
        "db_us": (cpu_seconds(db_pid) - db0) / count * 1e6,
    }


def start_gateway(
    tmp: Path,
    db: EmbeddedServer,
    vehicles: int,
    workers: bool = True,
    *,
    source: str = "",
    name: str = "bench_gateway",
) -> tuple[subprocess.Popen, str, str]:
    """`gateway serve` from this checkout, or from the tree `source` names, on its own
    database `name`, with `vehicles` vehicles and a position trigger."""
    port = free_port()
    env = {
        **({"PYTHONPATH": str(Path(source).resolve())} if source else {}),
        "MONGODB_URI": journaled(db),
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATA_DIR": str(tmp / name),
        "GATEWAY_SECRET_KEY": os.urandom(32).hex(),
        "GATEWAY_ADMIN_RATE_LIMIT": "100000",  # throughput, not the admin limit
        "GATEWAY_DATABASE": name,
        "GATEWAY_LOG_JSON": "true",
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_RUN_WORKERS": "true" if workers else "false",
        "GATEWAY_MAX_BODY_BYTES": str(8 * 1024 * 1024),
        "GATEWAY_MAX_BATCH_ITEMS": "10000",
    }
    proc = spawn([GATEWAY, "serve"], tmp / f"{name}.log", env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while http("GET", f"{base}/healthz")[0] != 200:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(
                "gateway did not start: " + (tmp / f"{name}.log").read_text()[-2000:]
            )
        time.sleep(0.2)
    headers = {"Authorization": f"Bearer {admin_token(env)}", "Content-Type": "application/json"}
    for plate in PLATES[:vehicles]:
        body = json.dumps({"plate": plate}).encode()
        status, answer = http("POST", f"{base}/api/v1/entities/vehicle", body, **headers)
        if status != 201:
            raise RuntimeError(f"vehicle {plate}: {status} {answer[:300]!r}")
    spec = {"name": "ingest", "target": "positions", "max_batch_items": 10000}
    status, answer = http("POST", f"{base}/api/v1/triggers", json.dumps(spec).encode(), **headers)
    if status != 201:
        raise RuntimeError(f"trigger: {status} {answer[:300]!r}")
    trigger = json.loads(answer)
    return proc, trigger["url"], trigger["token"]


def run_gateway(
    tmp: Path,
    db: EmbeddedServer,
    args: argparse.Namespace,
    batches: list[list[dict[str, Any]]],
    source: str,
    name: str,
) -> dict:
    """One gateway run: started from `source`, warmed up, the fixes POSTed, stopped."""
    warm = fixes(args.batch * 2, args.vehicles)
    for fix in warm:  # another day: not duplicates of the measured fixes
        fix["time"] = fix["time"].replace("2026-12-01", "2026-11-30")
    proc, url, token = start_gateway(
        tmp, db, args.vehicles, not args.web_only, source=source, name=name
    )
    try:
        pids, db_pid, concurrency = process_tree(proc.pid), db.pid or 0, args.concurrency
        warmup = [warm[: args.batch], warm[args.batch :]]
        asyncio.run(through_gateway(url, token, pids, db_pid, warmup, concurrency))
        return asyncio.run(through_gateway(url, token, pids, db_pid, batches, concurrency))
    finally:
        proc.terminate()
        proc.wait(15)


def _mean(runs: list[dict]) -> dict:
    return {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixes", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--vehicles", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--web-only", action="store_true", help="GATEWAY_RUN_WORKERS=false (no background jobs)"
    )
    parser.add_argument("--sources", default="gateway", help="gateway[@DIR],... (A/B)")
    parser.add_argument("--pairs", type=int, default=1, help="times the sources run, in turn")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sources = [key.partition("@")[2] for key in args.sources.split(",")]
    all_fixes = fixes(args.fixes, args.vehicles)
    batches = [all_fixes[i : i + args.batch] for i in range(0, len(all_fixes), args.batch)]
    runs: list[tuple[str, dict, float]] = []  # (source, gateway figures, ratio)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as name:
        tmp = Path(name)
        db = EmbeddedServer(tmp / "db")
        db.start()
        try:
            assert db.pid is not None
            uri = journaled(db)

            def raw_run(indexes: list[IndexModel]) -> dict:
                return asyncio.run(raw(uri, db.pid or 0, batches, args.concurrency, indexes))

            raws = [raw_run(GATEWAY_INDEXES)]
            floor = raw_run([])
            for n in range(args.pairs):
                for i, source in enumerate(sources):
                    gw = run_gateway(tmp, db, args, batches, source, f"bench_gateway_{n}_{i}")
                    raws.append(raw_run(GATEWAY_INDEXES))
                    around = (raws[-2]["rate"] + raws[-1]["rate"]) / 2
                    runs.append((source, gw, gw["rate"] / around))
        finally:
            db.stop()
    raw_figures = _mean(raws)
    print(
        f"{args.fixes:,} fixes of {args.vehicles} vehicles, batches of {args.batch}, "
        f"{args.concurrency} in flight, j:true"
    )
    for label, r in (("gateway's indexes", raw_figures), ("_id alone", floor)):
        print(
            f"  raw insert_many, {label:<17} {r['rate']:>9,.0f} fixes/s   DB "
            f"{r['db_us']:>6,.0f} µs/fix   driver {r['client_us']:>5,.0f} µs/fix"
            + (f"   ({len(raws)} runs)" if r is raw_figures and len(raws) > 1 else "")
        )
    if len(raws) > 1:
        print("  raw runs in order, fixes/s: " + ", ".join(f"{r['rate']:,.0f}" for r in raws))
    for source, gw, ratio in runs:
        label = f"gateway{'@' + source if source else ''} (HTTP)"
        print(
            f"  {label:<35} {gw['rate']:>9,.0f} fixes/s   DB {gw['db_us']:>6,.0f} µs/fix   "
            f"gateway {gw['gateway_us']:>5,.0f} µs/fix   ({gw['ok_requests']} × 200)   "
            f"÷ raw around it {ratio:.2f}"
        )
    for source in dict.fromkeys(sources):
        mine = [r for s, _, r in runs if s == source]
        gw = _mean([g for s, g, _ in runs if s == source])
        label = f"gateway{'@' + source if source else ''}"
        print(f"  {label} ÷ raw with the gateway's indexes {sum(mine) / len(mine):6.2f}   [≥ 0.70]")
        print(f"  {label} ÷ raw with _id alone             {gw['rate'] / floor['rate']:6.2f}")
    if args.json:
        gw = _mean([g for s, g, _ in runs if s == sources[0]])
        first = [r for s, _, r in runs if s == sources[0]]
        ratio = sum(first) / len(first)
        figures = {"raw": raw_figures, "raw_id_only": floor, "gateway": gw}
        args.json.write_text(
            json.dumps({**figures, "ratio": ratio, "ratio_id_only": gw["rate"] / floor["rate"]})
        )


if __name__ == "__main__":
    main()
