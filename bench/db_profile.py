"""Where the embedded database's time goes for the gateway: idle, and under the entity POST
load of bench_http.py (or its position POST load: a source named `gateway-positions`, e.g.
`--sources gateway-positions,gateway-positions@/tmp/main`). For each gateway (this checkout,
or a directory after "@" to A/B a change), on a fresh embedded SecantusDB:

    python bench/db_profile.py [--sources gateway,gateway@/tmp/main] [--idle 10] [--duration 10]

1. idle for `--idle` seconds right after start, 2. a wrk warm-up, 3. `wrk -c16` for
`--duration` seconds plus the event relay's drain (as bench_http.py measures it), 4. idle again
after the load (the database now holds a fleet, events and waiting deliveries). Each phase
prints the cores busy in the gateway's process tree and in the database process, and the
database's `top` counters per collection and kind of command: how many per second (idle) or
per request (load), and the server's time in them (wall time inside the server, waits for
its locks and journal flushes included, so a guide to where to look, not CPU).

The database's own CPU per phase is the figure to compare; a profile of the database process
(py-spy on its pid, printed at start) says which of its code paths the time is in.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_http
from bench._common import cpu_seconds, process_tree, tree_cpu_seconds
from gateway.store.embedded import EmbeddedServer

_SECTIONS = ("queries", "getmore", "insert", "update", "remove", "commands")


def _top(uri: str) -> dict[str, tuple[int, int]]:
    """{"collection kind": (count, microseconds)} from the server's `top` command."""
    with MongoClient(uri) as client:
        totals = client.admin.command("top")["totals"]
    out = {}
    for ns, sections in totals.items():
        if not isinstance(sections, dict):
            continue
        for kind in _SECTIONS:
            if kind in sections:
                out[f"{ns.split('.', 1)[-1]} {kind}"] = (
                    sections[kind]["count"],
                    sections[kind]["time"],
                )
    return out


def phase(
    label: str,
    server: bench_http.Server,
    db: EmbeddedServer,
    seconds: float,
    load: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Run `load` (returns requests served) or sleep `seconds`; print what it cost."""
    assert server.proc and db.pid
    pids = process_tree(server.proc.pid)
    top0, gw0, db0 = _top(db.uri), tree_cpu_seconds(pids), cpu_seconds(db.pid)
    started = time.monotonic()
    requests = load() if load else 0
    if not load:
        time.sleep(seconds)
    wall = time.monotonic() - started
    gw, dbc = tree_cpu_seconds(pids) - gw0, cpu_seconds(db.pid) - db0
    top1 = _top(db.uri)
    per, unit = (requests, "/request") if requests else (wall, "/s")
    line = f"{label}: {wall:.1f} s, gateway {gw / wall:.3f} cores, database {dbc / wall:.3f} cores"
    if requests:
        line += f"; {requests} requests: database {dbc / requests * 1e6:,.0f} µs/request"
    print(line)
    rows = []
    for key, (count, micros) in top1.items():
        count0, micros0 = top0.get(key, (0, 0))
        if count > count0:
            rows.append((key, (count - count0) / per, (micros - micros0) / per))
    for key, count, micros in sorted(rows, key=lambda r: -r[2])[:12]:
        print(f"    {key:<36}{count:9.3f}{unit:<9}{micros:10,.0f} µs{unit} in the server")
    return {"label": label, "gateway_cores": gw / wall, "db_cores": dbc / wall}


def profile(key: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="db-profile-") as name:
        tmp = Path(name)
        db = EmbeddedServer(tmp / "db")
        db.start()
        server = bench_http.Server(key)
        try:
            if key.partition("@")[0] == "gateway-positions":
                bench_http.gateway_positions(server, tmp, db)
            else:
                bench_http.gateway_server(workers=True)(server, tmp, db)
            src = key.partition("@")[2]
            print(f"\n{server.name}: gateway/ from {src or bench_http.ROOT}; database pid {db.pid}")
            time.sleep(2)
            phase("idle after start", server, db, args.idle)
            bench_http.wrk(server, args.warmup, args.connections)
            bench_http.settle(server, db)

            def load() -> int:
                served = bench_http.wrk(server, args.duration, args.connections)["requests"]
                bench_http.settle(server, db)
                return int(served)

            phase(f"wrk -c{args.connections} and the relay's drain", server, db, 0, load)
            phase("idle after the load", server, db, args.idle)
        finally:
            if server.proc:
                server.proc.terminate()
                server.proc.wait(15)
            db.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default="gateway")
    parser.add_argument("--idle", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    for key in args.sources.split(","):
        profile(key, args)


if __name__ == "__main__":
    main()
