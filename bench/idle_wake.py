"""How long an idle `gateway worker` takes to send a delivery another process created, and what
its idle waiting and its wake-ups cost the database. On a fresh embedded SecantusDB, a web
process that relays (`GATEWAY_WORKERS=relay gateway serve`: it creates the deliveries, sends
none) beside `gateway worker --jobs delivery,flows`, and a local partner double:

    python bench/idle_wake.py [--tries 20] [--idle 60] [--gateway-src DIR]

1. idle: `--idle` seconds with nothing to do, the database's commands a minute (`top` and
   `serverStatus` opcounters) and the two processes' and the database's CPU;
2. latency: `--tries` POSTs to a position trigger whose vehicle.position event has a `deliver`
   subscription, each after the worker has been idle long enough for its poll to be at its
   longest (8-10 s); the time from the POST's 2xx to the partner double's receiving the call;
3. writes: `--writes` seconds of an insert loop into a collection nobody reads (on SecantusDB
   any write ends a change-stream wait early), the cost of the worker's waiting under write load;
4. load: `--load` seconds of `wrk -c8` on the trigger (every request a delivery, sent by the
   worker), the database's CPU and commands per request.

`--gateway-src DIR` runs the gateway from DIR (PYTHONPATH), to A/B a change.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import cpu_seconds, process_tree, tree_cpu_seconds
from bench.bench_http import (
    BENCH,
    GATEWAY,
    PAYLOAD,
    SCHEMA,
    admin_token,
    free_port,
    http,
    journaled,
    spawn,
)
from gateway.store.embedded import EmbeddedServer

_SECTIONS = ("queries", "getmore", "insert", "update", "remove", "commands")


class Partner:
    """A partner that answers 200 at once and notes when each call arrived."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.arrived = threading.Condition()
        partner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with partner.arrived:
                    partner.arrivals.append(time.monotonic())
                    partner.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float) -> float | None:
        """The monotonic time the `count`-th call arrived, or None after `timeout`."""
        with self.arrived:
            if self.arrived.wait_for(lambda: len(self.arrivals) >= count, timeout):
                return self.arrivals[count - 1]
        return None


def top(uri: str) -> Counter[str]:
    """{"collection kind": count} from the server's `top` command (and "... µs": the server's
    time in them), and "all" (opcounters)."""
    with MongoClient(uri) as client:
        totals = client.admin.command("top")["totals"]
        counters = client.admin.command("serverStatus")["opcounters"]
    out: Counter[str] = Counter()
    for ns, sections in totals.items():
        if isinstance(sections, dict) and ns.split(".", 1)[-1] in ("deliveries", "flow_runs"):
            for kind in _SECTIONS:
                if kind in sections:
                    out[f"{ns.split('.', 1)[-1]} {kind}"] = sections[kind]["count"]
                    out[f"{ns.split('.', 1)[-1]} {kind} µs"] = sections[kind]["time"]
    out["all"] = sum(counters[k] for k in ("insert", "query", "update", "delete", "getmore"))
    out["all"] += counters.get("command", 0)
    return out


class Meter:
    """CPU seconds of the web process, the worker and the database, and commands, meanwhile."""

    def __init__(self, db: EmbeddedServer, web: int, worker: int) -> None:
        assert db.pid
        self.db, self.uri = db.pid, db.uri
        self.web, self.worker = process_tree(web), process_tree(worker)

    def __enter__(self) -> Meter:
        self.t0 = top(self.uri)
        self.cpu0 = self._cpu()
        self.wall0 = time.monotonic()
        return self

    def _cpu(self) -> tuple[float, float, float]:
        return tree_cpu_seconds(self.web), tree_cpu_seconds(self.worker), cpu_seconds(self.db)

    def __exit__(self, *exc: object) -> None:
        self.wall = time.monotonic() - self.wall0
        cpu = self._cpu()
        spent = (b - a for a, b in zip(self.cpu0, cpu, strict=True))
        self.web_cpu, self.worker_cpu, self.db_cpu = spent
        self.commands = top(self.uri) - self.t0

    def print(self, label: str, per: float, unit: str) -> dict[str, float]:
        print(
            f"  {label}: cores busy web {self.web_cpu / self.wall:.3f}, worker "
            f"{self.worker_cpu / self.wall:.3f}, database {self.db_cpu / self.wall:.3f}"
        )
        print(
            f"    CPU ms {unit}: database {self.db_cpu / per * 1000:.2f}, worker "
            f"{self.worker_cpu / per * 1000:.2f}, web {self.web_cpu / per * 1000:.2f}"
        )
        figures = {
            "worker_cores": self.worker_cpu / self.wall,
            "db_cores": self.db_cpu / self.wall,
            "db_ms": self.db_cpu / per * 1000,
            "worker_ms": self.worker_cpu / per * 1000,
        }
        for key, count in sorted(self.commands.items()):
            print(f"    {key}: {count / per:.2f} {unit}")
            figures[key] = count / per
        return figures


def setup(base: str, env: dict[str, str], partner: Partner) -> tuple[str, str]:
    """The bench's position trigger, and a `deliver` action to the partner double subscribed
    to vehicle.position: every POST stores one delivery."""
    auth = {"Authorization": f"Bearer {admin_token(env)}"}

    def post(path: str, body: bytes, kind: str = "application/json") -> dict[str, Any]:
        status, answer = http("POST", f"{base}{path}", body, **auth, **{"Content-Type": kind})
        if status != 201:
            raise RuntimeError(f"POST {path}: {status} {answer[:500]!r}")
        return dict(json.loads(answer))

    post("/api/v1/mappings", (BENCH / "position_mapping.yaml").read_bytes(), "application/yaml")
    trigger = post(
        "/api/v1/triggers",
        json.dumps(
            {
                "name": "bench positions",
                "entity_type": "vehicle",
                "methods": ["POST"],
                "mapping": "bench-position",
                "input_schema": json.loads(SCHEMA.read_text()),
            }
        ).encode(),
    )
    partner_doc = post(
        "/api/v1/partners",
        json.dumps({"name": "double", "base_url": partner.url, "auth": {"type": "none"}}).encode(),
    )
    action = post(
        "/api/v1/actions",
        json.dumps(
            {
                "name": "double update",
                "partner_id": partner_doc["id"],
                "method": "POST",
                "path": "/vehicles",
                "mode": "deliver",
            }
        ).encode(),
    )
    post(
        "/api/v1/subscriptions",
        json.dumps({"action_id": action["id"], "event_types": ["vehicle.position"]}).encode(),
    )
    return trigger["url"], trigger["token"]


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        if http("GET", url)[0] == 200:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout:.0f} s")


def tries(url: str, token: str, partner: Partner, count: int) -> list[float]:
    """Seconds from each POST's 2xx to the partner's call, each after an idle 8-10 s."""
    payload = json.loads(PAYLOAD.read_text())
    waits: list[float] = []
    for n in range(count):
        time.sleep(random.uniform(8, 10))
        payload["position"]["fixTime"] = f"2026-12-07T10:{n // 60:02d}:{n % 60:02d}Z"
        expected = len(partner.arrivals) + 1
        status, body = http(
            "POST",
            url,
            json.dumps(payload).encode(),
            **{"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        answered = time.monotonic()
        if not 200 <= status < 300:
            raise RuntimeError(f"POST: {status} {body[:300]!r}")
        arrived = partner.wait_for(expected, 60)
        if arrived is None:
            raise RuntimeError("the delivery did not arrive within 60 s")
        waits.append(arrived - answered)
        print(f"  try {n + 1}: {arrived - answered:.3f} s", flush=True)
    return waits


def insert_loop(uri: str, seconds: float) -> int:
    """Inserts one at a time into a collection nobody reads, for `seconds`; how many."""
    with MongoClient(uri) as client:
        noise = client["bench_noise"]["noise"]
        end, done = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            noise.insert_one({"n": done})
            done += 1
    return done


def wrk(url: str, token: str, seconds: float) -> int:
    cmd = ["wrk", "-t1", "-c8", f"-d{seconds:g}s", "-s", str(BENCH / "post_position.lua"), url]
    env = {**os.environ, "TOKEN": token, "PAYLOAD": str(PAYLOAD)}
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    return int(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--idle", type=float, default=60)
    parser.add_argument("--writes", type=float, default=20)
    parser.add_argument("--load", type=float, default=15)
    parser.add_argument("--gateway-src", help="run the gateway from this directory")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    source = {"PYTHONPATH": str(Path(args.gateway_src).resolve())} if args.gateway_src else {}
    figures: dict[str, Any] = {"load_average": os.getloadavg()}
    partner = Partner()
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as name:
        tmp = Path(name)
        db = EmbeddedServer(tmp / "db")
        db.start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            env = {
                "MONGODB_URI": journaled(db),
                "GATEWAY_DATABASE": "idle_wake",
                "GATEWAY_SECRET_KEY": os.urandom(32).hex(),
                "GATEWAY_ADMIN_RATE_LIMIT": "100000",
                "GATEWAY_LOG_LEVEL": "WARNING",
                "GATEWAY_OUTBOUND_ALLOW": "127.0.0.1",
                **source,
            }
            port, worker_port = free_port(), free_port()
            web_env = {**env, "GATEWAY_PORT": str(port), "GATEWAY_WORKERS": "relay"}
            web_env["GATEWAY_DATA_DIR"] = str(tmp / "web")
            web = spawn([GATEWAY, "serve"], tmp / "web.log", web_env)
            procs.append(web)
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}/readyz", web)
            url, token = setup(base, env, partner)
            worker_env = {**env, "GATEWAY_WORKER_PORT": str(worker_port)}
            worker_env["GATEWAY_DATA_DIR"] = str(tmp / "worker")
            command = [GATEWAY, "worker", "--jobs", "delivery,flows"]
            worker = spawn(command, tmp / "worker.log", worker_env)
            procs.append(worker)
            wait_ready(f"http://127.0.0.1:{worker_port}/readyz", worker)
            print(f"database pid {db.pid}, web {web.pid}, worker {worker.pid}", flush=True)
            time.sleep(10)  # the worker's poll at its longest

            if args.idle:
                print(f"idle {args.idle:g} s:", flush=True)
                with Meter(db, web.pid, worker.pid) as idle:
                    time.sleep(args.idle)
                figures["idle"] = idle.print("idle", idle.wall / 60, "a minute")

            if args.tries:
                print(f"{args.tries} deliveries, each after 8-10 s idle:", flush=True)
                waits = sorted(tries(url, token, partner, args.tries))
                quantiles = statistics.quantiles(waits, n=20) if len(waits) > 1 else waits * 19
                figures["latency"] = {
                    "min": waits[0],
                    "p50": statistics.median(waits),
                    "p90": quantiles[17],
                    "max": waits[-1],
                    "mean": statistics.fmean(waits),
                }
                print("  " + ", ".join(f"{k} {v:.3f} s" for k, v in figures["latency"].items()))
                time.sleep(10)

            if args.writes:
                print(f"writes {args.writes:g} s (an insert loop elsewhere):", flush=True)
                with Meter(db, web.pid, worker.pid) as writes:
                    inserted = insert_loop(db.uri, args.writes)
                print(f"  {inserted / writes.wall:.0f} inserts/s")
                figures["writes"] = writes.print("writes", inserted / 1000, "per 1000 inserts")
                figures["writes"]["inserts_per_second"] = inserted / writes.wall
                time.sleep(5)

            # Measured until every delivery of the load was sent (or 120 s after): a worker
            # that falls behind does its claims after the load.
            print(f"load {args.load:g} s (wrk -c8 on the trigger), and its drain:", flush=True)
            sent_before = len(partner.arrivals)
            with Meter(db, web.pid, worker.pid) as load:
                started = time.monotonic()
                requests = wrk(url, token, args.load)
                loaded = time.monotonic() - started
                partner.wait_for(sent_before + requests, 120)
            sent = len(partner.arrivals) - sent_before
            print(
                f"  {requests / loaded:.1f} req/s; {sent} of {requests} sent, the last "
                f"{load.wall - loaded:.1f} s after the load"
            )
            figures["load"] = load.print("load", requests, "per request")
            figures["load"]["requests_per_second"] = requests / loaded
            figures["load"]["drain_seconds"] = load.wall - loaded
            figures["load"]["sent"] = sent
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            db.stop()
            for log in sorted(tmp.glob("*.log")):  # what went wrong, if anything
                warned = [line for line in log.read_text().splitlines() if "WARNING" in line]
                for line in warned[:20]:
                    print(f"  {log.name}: {line[:300]}")
    figures["load_average_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
