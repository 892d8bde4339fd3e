"""End-to-end trigger POST benchmark of SPEC §8: bare aiohttp, Node-RED and the gateway, one after
the other in one run on one embedded SecantusDB, driven by the same wrk script and payload mix.

    python bench/bench_http.py [--duration 10] [--warmup 3] [--connections 16]
                               [--servers bare,nodered,gateway,gateway-web] [--gateway-src DIR]
                               [--json FILE] [--trace DIR]

A gateway key may name another source tree to A/B a change in the same run, e.g.
--servers bare,nodered,gateway-web,gateway-web@/tmp/patched (a directory holding gateway/,
schemas/ and mappings/, put first on PYTHONPATH), and a number of processes:
`gateway-x2` runs `gateway serve --workers 2` (one port, SO_REUSEPORT), and settings of its
own after "%", e.g. `gateway-positions%GATEWAY_FOLD_ENTITY_SECONDS=30` (A/B a setting).
--json writes every server's figures to FILE (bench/figures.py reads it for `make bench`).
--trace writes each server's half-of-peak requests to DIR/<n>-<server>.csv (fixed_rate.py
--trace: when each was due, its latency, its status), to line its tail up with the server.

Needs `wrk` (apt-get install wrk) and Node.js 20 with npm (Node-RED 4 and
node-red-contrib-mongodb4 are installed into bench/.nodered/ on first use).

For each server: a warm-up, then `wrk -t1 -cN --latency` with post_position.lua (requests/s,
p50/p99), then fixed_rate.py at half of that peak (p99 without coordinated omission). Around
each measured run the CPU time (utime+stime, /proc/PID/stat) of the server's process tree and
of the database process is read; CPU per request = its change / requests served.

- bare: bare_aiohttp.py parses the JSON and answers (the floor);
- nodered: ../shared/bench/nodered (HS256 check, ajv, mapping, upsert by plate, answer);
- gateway: `gateway serve` with a tenant, the position mapping (position_mapping.yaml) and a
  vehicle trigger with ../shared/bench/position_schema.json as input schema, POST
  /hooks/{id} with the trigger's token; workers (event relay) in the same process. A
  subscription of a `deliver` action to `vehicle.position` (the event every request emits:
  the mapping says `announce: every`, since the payload repeats, so a plate seen before has
  no changed field, no entity.updated, and by default would announce nothing)
  makes every request store one delivery too; the process runs every background job but the
  delivery worker (GATEWAY_WORKERS), so deliveries are stored and not sent (sending is
  bench_fanout.py's: since the first attempt is made at once, SPEC §5, a retry schedule can no
  longer hold them back);
- gateway-web: the same with GATEWAY_RUN_WORKERS=false (request path only);
- gateway-probe: the same as gateway, posting a partner's probe (probe_mapping.yaml,
  probe_payload.json) that the mapping answers without a write: the request path without the
  database, to show what one more process adds where the database is not the limit;
- gateway-positions: `gateway serve` with a position trigger (target positions,
  fix_mapping.yaml, the same input schema) and the 1,000 vehicles; post_fix.lua (and
  fixed_rate.py --fresh-times) make every request a new fix of a vehicle that drives (each
  circles its own centre at 54 km/h, device time the wall clock), so each one appends a new
  fix that passes the quality gates and moves the odometer (SPEC §6 "append"; the fold, when
  it runs, is in the process's CPU too);
- gateway-positions-apart: the same with the fold in a `gateway worker --jobs fold` process
  of its own (the serving process runs the other jobs): its CPU is counted with the server's.

Every client writes with `journal=true` (SPEC §5: a 2xx is journaled), Node-RED included.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    PLATES,
    ROOT,
    SHARED_BENCH,
    cpu_seconds,
    process_tree,
    tree_cpu_seconds,
)
from gateway.store.embedded import EmbeddedServer

BENCH = ROOT / "bench"
NODERED_DIR = BENCH / ".nodered"
NODERED_PACKAGES = ["node-red@4", "node-red-contrib-mongodb4@3.4.0"]
PAYLOAD = ROOT / "tests" / "data" / "position_payload.json"  # copies of ../shared/bench/
PROBE_PAYLOAD = BENCH / "probe_payload.json"
SCHEMA = ROOT / "tests" / "data" / "position_schema.json"
PYTHON = sys.executable
GATEWAY = str(Path(PYTHON).with_name("gateway"))
GATEWAY_ENV: dict[str, str] = {}  # --gateway-src sets PYTHONPATH here
RUNS = itertools.count(1)  # a server named twice in --servers runs twice, on its own database
TRACES = itertools.count(1)  # --trace: one file per server, numbered in the run's order
PROCESSES = re.compile(r"-x(\d+)$")  # gateway-x2: `gateway serve --workers 2`


def journaled(db: EmbeddedServer) -> str:
    """The database's URI with journaled writes (SPEC §5), for every server of the run."""
    return db.uri + "&journal=true"


@dataclass
class Server:
    key: str  # bare | nodered | gateway | gateway-web, the last two optionally @SOURCE_DIR
    name: str = ""
    url: str = ""
    token: str = ""
    proc: subprocess.Popen | None = None
    results: dict[str, float] = field(default_factory=dict)
    db_name: str | None = None  # the gateway's database
    outbox_db: str | None = None  # the same, when its event relay runs
    fold_db: str | None = None  # the same, when its fleet fold runs (position triggers)
    payload: Path = PAYLOAD
    script: str = "post_position.lua"  # the wrk script
    fresh: bool = False  # every request a new fix (position triggers store a resent one once)
    env: dict[str, str] = field(default_factory=dict)  # "%NAME=value" after the key
    metrics: str = ""  # where the fold's metrics are, when not the server's /metrics

    def __post_init__(self) -> None:
        self.name = self.name or self.key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(method: str, url: str, body: bytes | None = None, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def wait_until(server: Server, ready: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc and server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with code {server.proc.returncode}")
        if http("GET", ready)[0] == 200 or (ready == server.url and post_ok(server)):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready within {timeout:.0f}s")


def post_ok(server: Server) -> bool:
    status, _ = http(
        "POST",
        server.url,
        server.payload.read_bytes(),
        **{"Content-Type": "application/json", "Authorization": f"Bearer {server.token}"},
    )
    return 200 <= status < 300


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd
        )


def bare(server: Server, tmp: Path, db: EmbeddedServer) -> None:
    port = free_port()
    server.name, server.url = "bare aiohttp", f"http://127.0.0.1:{port}/hook"
    server.proc = spawn(
        [PYTHON, str(BENCH / "bare_aiohttp.py"), "--port", str(port)], tmp / "bare.log"
    )
    wait_until(server, server.url)


def install_nodered() -> Path:
    red = NODERED_DIR / "node_modules" / "node-red" / "red.js"
    if not red.exists():
        NODERED_DIR.mkdir(exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", *NODERED_PACKAGES],
            cwd=NODERED_DIR,
            check=True,
        )
    return red


def nodered(server: Server, tmp: Path, db: EmbeddedServer) -> None:
    red = install_nodered()
    user_dir = tmp / "nodered"
    user_dir.mkdir()
    shutil.copy(SHARED_BENCH / "nodered" / "settings.js", user_dir)
    secret = os.urandom(32).hex()
    make_flows = SHARED_BENCH / "nodered" / "make_flows.py"
    flows = subprocess.run(
        [PYTHON, str(make_flows), str(SCHEMA), secret, journaled(db)],
        check=True,
        capture_output=True,
    ).stdout
    (user_dir / "flows.json").write_bytes(flows)
    # The flow upserts by plate: without an index every upsert scans the collection.
    with MongoClient(db.uri) as client:
        client["fleet"]["vehicles"].create_index("plate", unique=True)
    port = free_port()
    claims = {"aud": "hooks", "sub": "bench", "exp": int(time.time()) + 86_400}
    server.name, server.url = "Node-RED", f"http://127.0.0.1:{port}/hook"
    server.token = jwt.encode(claims, secret, "HS256")
    cmd = ["node", str(red), "-s", str(user_dir / "settings.js"), "-u", str(user_dir)]
    server.proc = spawn(cmd, tmp / "nodered.log", {"PORT": str(port)})
    wait_until(server, server.url)


def gateway_server(
    workers: bool, probe: bool = False
) -> Callable[[Server, Path, EmbeddedServer], None]:
    def start(server: Server, tmp: Path, db: EmbeddedServer) -> None:
        """`gateway serve` from this checkout, or from the directory after "@" in the key."""
        port = free_port()
        base_key, _, src = server.key.partition("@")
        match = PROCESSES.search(base_key)
        processes = int(match[1]) if match else 1
        kind = "gateway-probe" if probe else "gateway" if workers else "gateway-web"
        name = kind + (f"-x{processes}" if match else "")
        name += f"-{Path(src).name}" if src else ""
        server.db_name = name.replace("-", "_").replace(".", "_") + f"_{next(RUNS)}"
        source = {"PYTHONPATH": str(Path(src).resolve())} if src else GATEWAY_ENV
        env = {
            "MONGODB_URI": journaled(db),
            "GATEWAY_PORT": str(port),
            "GATEWAY_DATA_DIR": str(tmp / name),
            "GATEWAY_SECRET_KEY": os.urandom(32).hex(),
            "GATEWAY_ADMIN_RATE_LIMIT": "100000",  # throughput, not the admin limit
            "GATEWAY_DATABASE": server.db_name,
            "GATEWAY_LOG_JSON": "true",
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_RUN_WORKERS": "true" if workers else "false",
            "GATEWAY_WORKERS": "relay,flows,schedules,fold",  # deliveries stored, not sent
            "GATEWAY_OUTBOUND_ALLOW": "127.0.0.1",
            **source,
            **server.env,
        }
        base = f"http://127.0.0.1:{port}"
        server.name = name + (" (probe)" if probe else " (+workers)" if workers else " (web only)")
        server.name += "".join(f" {k}={v}" for k, v in server.env.items())
        server.outbox_db = server.db_name if workers and not probe else None
        serve = [GATEWAY, "serve"] + (["--workers", str(processes)] if processes > 1 else [])
        server.proc = spawn(serve, tmp / f"{name}.log", env)
        wait_until(server, f"{base}/healthz")
        mapping = "probe_mapping.yaml" if probe else "position_mapping.yaml"
        server.url, server.token = create_trigger(base, env, mapping)
        server.payload = PROBE_PAYLOAD if probe else PAYLOAD
        wait_until(server, server.url)

    return start


def gateway_positions(
    server: Server, tmp: Path, db: EmbeddedServer, *, apart: bool = False
) -> None:
    """`gateway serve` with a position trigger (target positions, bench/fix_mapping.yaml, the
    same input schema) and the 1,000 vehicles post_fix.lua names: each request appends one
    new fix to a vehicle's track (no event per fix: SPEC §6). `apart`: the fold in a `gateway
    worker` process of its own, off the event loop that answers the requests."""
    port = free_port()
    server.db_name = f"gateway_positions_{next(RUNS)}"
    src = server.key.partition("@")[2]
    source = {"PYTHONPATH": str(Path(src).resolve())} if src else GATEWAY_ENV
    env = {
        "MONGODB_URI": journaled(db),
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATA_DIR": str(tmp / "gateway-positions"),
        "GATEWAY_SECRET_KEY": os.urandom(32).hex(),
        "GATEWAY_ADMIN_RATE_LIMIT": "100000",  # throughput, not the admin limit
        "GATEWAY_DATABASE": server.db_name,
        "GATEWAY_LOG_JSON": "true",
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_RUN_WORKERS": "true",
        **source,
        **server.env,
    }
    base = f"http://127.0.0.1:{port}"
    server.name = "gateway-positions" + (f"-{Path(src).name}" if src else "") + " (+workers)"
    server.name += "".join(f" {k}={v}" for k, v in server.env.items())
    server.script, server.fresh = "post_fix.lua", True
    server.fold_db = server.db_name
    log = tmp / f"gateway-positions-{server.db_name}.log"
    if apart:  # serve without the fold, and `gateway worker --jobs fold` beside it
        jobs = "relay,flows,delivery,schedules"
        server.name += " (fold in a worker process)"
        serve = f"GATEWAY_WORKERS={jobs} exec {shlex.quote(GATEWAY)} serve"
        worker_port = free_port()
        worker = f"{shlex.quote(GATEWAY)} worker --jobs fold --port {worker_port}"
        server.metrics = f"http://127.0.0.1:{worker_port}/metrics"
        # One process tree (the meter counts both); TERM stops both.
        script = f'{worker} & w=$!; {serve} & s=$!; trap "kill $w $s; wait" TERM; wait'
        server.proc = spawn(["sh", "-c", script], log, env)
    else:
        server.proc = spawn([GATEWAY, "serve"], log, env)
    wait_until(server, f"{base}/healthz")
    auth = {"Authorization": f"Bearer {admin_token(env)}"}
    headers = {**auth, "Content-Type": "application/json"}
    for plate in [*PLATES, "ABC1D23"]:  # and the payload's own plate (the readiness probe)
        body = json.dumps({"plate": plate}).encode()
        status, answer = http("POST", f"{base}/api/v1/entities/vehicle", body, **headers)
        if status not in (201, 409):
            raise RuntimeError(f"vehicle {plate}: {status} {answer[:300]!r}")
    mapping = (BENCH / "fix_mapping.yaml").read_bytes()
    yaml = {**auth, "Content-Type": "application/yaml"}
    status, body = http("POST", f"{base}/api/v1/mappings", mapping, **yaml)
    if status != 201:
        raise RuntimeError(f"mapping upload: {status} {body[:500]!r}")
    spec = {
        "name": "bench fixes",
        "target": "positions",
        "methods": ["POST"],
        "mapping": "bench-fix",
        "input_schema": json.loads(SCHEMA.read_text()),
    }
    status, body = http("POST", f"{base}/api/v1/triggers", json.dumps(spec).encode(), **headers)
    if status != 201:
        raise RuntimeError(f"trigger creation: {status} {body[:500]!r}")
    trigger = json.loads(body)
    server.url, server.token = trigger["url"], trigger["token"]
    # The vehicles' entity.created events are relayed before the measurement (settle waits).
    server.outbox_db = server.db_name
    wait_until(server, server.url)


def admin_token(env: dict[str, str]) -> str:
    return subprocess.run(
        [GATEWAY, "admin-token", "--tenant", "bench"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def create_trigger(base: str, env: dict[str, str], mapping_file: str) -> tuple[str, str]:
    """Tenant `bench`: upload the mapping, create a vehicle trigger with it; (url, token)."""
    admin = subprocess.run(
        [GATEWAY, "admin-token", "--tenant", "bench"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    auth = {"Authorization": f"Bearer {admin}"}
    mapping = (BENCH / mapping_file).read_bytes()
    status, body = http(
        "POST", f"{base}/api/v1/mappings", mapping, **auth, **{"Content-Type": "application/yaml"}
    )
    if status != 201:
        raise RuntimeError(f"mapping upload: {status} {body[:500]!r}")
    spec = {
        "name": "bench positions",
        "entity_type": "vehicle",
        "methods": ["POST"],
        "mapping": "bench-probe" if "probe" in mapping_file else "bench-position",
        "input_schema": json.loads(SCHEMA.read_text()),
    }
    status, body = http(
        "POST",
        f"{base}/api/v1/triggers",
        json.dumps(spec).encode(),
        **auth,
        **{"Content-Type": "application/json"},
    )
    if status != 201:
        raise RuntimeError(f"trigger creation: {status} {body[:500]!r} (is POST /hooks/ there?)")
    trigger = json.loads(body)
    store_deliveries(base, auth)
    return trigger["url"], trigger["token"]


def store_deliveries(base: str, auth: dict[str, str]) -> None:
    """A `deliver` action subscribed to vehicle.position: every request stores one delivery,
    which no delivery worker sends (the server runs without that job). (A disabled partner
    would hold them too, but every claim then scans its backlog.)"""

    def post(path: str, spec: dict) -> dict:
        headers = {**auth, "Content-Type": "application/json"}
        status, body = http("POST", f"{base}{path}", json.dumps(spec).encode(), **headers)
        if status != 201:
            raise RuntimeError(f"POST {path}: {status} {body[:500]!r}")
        return json.loads(body)

    partner = post(
        "/api/v1/partners",
        {"name": "bench erp", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}},
    )
    action = post(
        "/api/v1/actions",
        {"name": "bench erp update", "partner_id": partner["id"], "method": "POST",
         "path": "/vehicles", "mode": "deliver"},
    )  # fmt: skip
    post("/api/v1/subscriptions", {"action_id": action["id"], "event_types": ["vehicle.position"]})


SERVERS = {
    "bare": bare,
    "nodered": nodered,
    "gateway": gateway_server(workers=True),
    "gateway-web": gateway_server(workers=False),
    "gateway-probe": gateway_server(workers=True, probe=True),
    "gateway-positions": gateway_positions,
    "gateway-positions-apart": functools.partial(gateway_positions, apart=True),
}


class CpuMeter:
    """CPU seconds of the server's process tree and of the database, and the database's CRUD
    operations (serverStatus opcounters), between start and stop."""

    def __init__(self, server: Server, db: EmbeddedServer) -> None:
        assert server.proc and db.pid
        self.pids, self.db_pid, self.uri = process_tree(server.proc.pid), db.pid, db.uri

    def _ops(self) -> int:
        with MongoClient(self.uri) as client:
            counters = client.admin.command("serverStatus")["opcounters"]
        return sum(counters[k] for k in ("insert", "query", "update", "delete", "getmore"))

    def __enter__(self) -> CpuMeter:
        self.ops0 = self._ops()
        self.server0, self.db0 = tree_cpu_seconds(self.pids), cpu_seconds(self.db_pid)
        self.wall0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server = tree_cpu_seconds(self.pids) - self.server0
        self.db = cpu_seconds(self.db_pid) - self.db0
        self.ops = self._ops() - self.ops0
        self.wall = time.monotonic() - self.wall0


def wrk(server: Server, seconds: float, connections: int) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    cmd += ["-s", str(BENCH / server.script), server.url]
    env = {**os.environ, "TOKEN": server.token, "PAYLOAD": str(server.payload)}
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    requests, errors, duration, p50, p99, peak = (int(v) for v in line.split()[1:])
    return {"requests": requests, "errors": errors, "rps": requests / (duration / 1e6),
            "p50_us": p50, "p99_us": p99, "max_us": peak}  # fmt: skip


def fixed_rate(
    server: Server, rate: float, seconds: float, trace: Path | None = None
) -> dict[str, float]:
    cmd = [PYTHON, str(BENCH / "fixed_rate.py"), server.url, "--rate", f"{rate:.0f}"]
    cmd += ["--duration", str(seconds), "--token", server.token, "--payload", str(server.payload)]
    cmd += ["--fresh-times"] if server.fresh else []
    cmd += ["--trace", str(trace)] if trace else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def folded(database: Any) -> bool:
    """Whether the fold has folded and written everything appended: every shard's checkpoint
    is past the last inbox number (a gateway from before the inbox: no vehicle waits)."""
    seq = database["fleet_marks"].find_one({"_id": "seq"})
    if seq is None:
        return database["fleet"].find_one({"dirty": True}, {"_id": 1}) is None
    marks = database["fleet_marks"].find({"_id": {"$regex": "^shard:"}})
    written = [int(mark["through"]) for mark in marks]
    return len(written) == 16 and min(written) >= int(seq["n"])


def settle(server: Server, db: EmbeddedServer, limit: float = 120) -> tuple[float, int]:
    """Wait until the gateway's event relay has drained every outbox and its fold has folded
    and written everything appended: what a request causes is paid for before the meter
    stops. (Seconds waited, events waiting when it began.)"""
    started = time.monotonic()
    if server.fold_db is not None:
        with MongoClient(db.uri) as client:
            while not folded(client[server.fold_db]):
                if time.monotonic() - started > limit:
                    print(f"  {server.name}: the fold still behind after {limit:.0f}s")
                    break
                time.sleep(0.05)
    if server.outbox_db is None:
        return time.monotonic() - started, 0
    pending = {"pending": {"$exists": True}}
    with MongoClient(db.uri) as client:
        entities = client[server.outbox_db]["entities"]
        backlog = sum(
            len(doc.get("outbox", ())) for doc in entities.find(pending, {"outbox.id": 1})
        )
        while entities.find_one(pending, {"_id": 1}) is not None:
            if time.monotonic() - started > limit:
                print(f"  {server.name}: outboxes still pending after {limit:.0f}s")
                break
            time.sleep(0.05)
    return time.monotonic() - started, backlog


def relay_lag(server: Server, db: EmbeddedServer, since: datetime) -> dict[str, float]:
    """Event relay lag (relayed_at - occurred_at) of the events that occurred since `since`:
    p50, p99 and max in seconds; {} for a gateway that does not stamp relayed_at."""
    if server.outbox_db is None:
        return {}
    with MongoClient(db.uri, tz_aware=True) as client:
        events = client[server.outbox_db]["events"].find(
            {"occurred_at": {"$gte": since}, "relayed_at": {"$exists": True}},
            {"occurred_at": 1, "relayed_at": 1, "_id": 0},
        )
        lags = sorted((e["relayed_at"] - e["occurred_at"]).total_seconds() for e in events)
    if not lags:
        return {}
    return {
        "lag_p50_s": lags[len(lags) // 2],
        "lag_p99_s": lags[min(len(lags) - 1, int(len(lags) * 0.99))],
        "lag_max_s": lags[-1],
    }


FOLD_LAG = re.compile(r'^gateway_fleet_fold_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)


def fold_lag_buckets(server: Server) -> dict[float, float]:
    """The fold lag histogram's cumulative buckets (upper bound → count), from /metrics."""
    if server.fold_db is None:
        return {}
    metrics = server.metrics or server.url.split("/hooks/")[0] + "/metrics"
    status, body = http("GET", metrics)
    found = FOLD_LAG.findall(body.decode()) if status == 200 else []
    return {float(le): float(count) for le, count in found}


def fold_lag(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    """Fold lag between two readings: p99 as the bucket bound it falls under, and the share
    of fixes folded within 1 s; {} without a fold."""
    counts = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    if not total:
        return {}
    p99 = next(le for le, n in counts.items() if n >= 0.99 * total)
    return {"fold_lag_p99_s": p99, "fold_within_1s": counts.get(1.0, 0.0) / total}


def measure(server: Server, db: EmbeddedServer, args: argparse.Namespace) -> None:
    wrk(server, args.warmup, args.connections)
    settle(server, db)
    with CpuMeter(server, db) as cpu:
        began, lags = datetime.now(UTC), fold_lag_buckets(server)
        peak = wrk(server, args.duration, args.connections)
        drained, backlog = settle(server, db)
    server.results.update(
        {f"peak_{k}": v for k, v in fold_lag(lags, fold_lag_buckets(server)).items()}
    )
    served = max(peak["requests"], 1)
    server.results.update(peak, drain_s=drained, backlog=backlog)
    server.results.update(
        cpu_us=cpu.server / served * 1e6, db_us=cpu.db / served * 1e6, db_ops=cpu.ops / served
    )
    # Cores busy during the peak (and its drain): where the limit is on this machine.
    server.results.update(server_cores=cpu.server / cpu.wall, db_cores=cpu.db / cpu.wall)
    server.results.update({f"peak_{k}": v for k, v in relay_lag(server, db, began).items()})
    with CpuMeter(server, db) as cpu:
        began, lags = datetime.now(UTC), fold_lag_buckets(server)
        trace = None
        if args.trace:
            args.trace.mkdir(parents=True, exist_ok=True)
            trace = args.trace / f"{next(TRACES)}-{server.name.split()[0]}.csv"
        half = fixed_rate(server, peak["rps"] / 2, args.duration, trace)
        settle(server, db)
    server.results.update(
        {f"half_{k}": v for k, v in fold_lag(lags, fold_lag_buckets(server)).items()}
    )
    ok = max(half["ok"], 1)
    server.results.update(
        half_rate=half["rate"], half_p50_us=half["p50_us"], half_p99_us=half["p99_us"],
        half_errors=half["errors"], half_cpu_us=cpu.server / ok * 1e6, half_db_us=cpu.db / ok * 1e6,
    )  # fmt: skip
    server.results.update({f"half_{k}": v for k, v in relay_lag(server, db, began).items()})


def print_lags(r: dict[str, float]) -> None:
    """The fold's and the event relay's lag lines of one server."""
    for phase in ("peak", "half"):
        if f"{phase}_fold_lag_p99_s" in r:
            print(
                f"{'':<24}fold lag at {phase}: p99 ≤ {r[f'{phase}_fold_lag_p99_s']:g} s, "
                f"{r[f'{phase}_fold_within_1s']:.1%} of fixes folded within 1 s"
            )
        if f"{phase}_lag_p99_s" in r:
            print(
                f"{'':<24}event relay lag at {phase}: p50 {r[f'{phase}_lag_p50_s']:.3f} s, "
                f"p99 {r[f'{phase}_lag_p99_s']:.3f} s, max {r[f'{phase}_lag_max_s']:.3f} s"
            )


def report(servers: list[Server]) -> None:
    head = (
        f"{'server':<24}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'err':>6}{'CPU µs/req':>12}"
        f"{'DB µs/req':>11}{'DB ops/req':>11} | {'half req/s':>10}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'err':>6}{'CPU µs/req':>12}{'DB µs/req':>11}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for s in servers:
        r = s.results
        if not r:
            print(f"{s.name:<24} (failed)")
            continue
        print(
            f"{s.name:<24}{r['rps']:>8,.0f}{r['p50_us'] / 1e3:>8.2f}{r['p99_us'] / 1e3:>8.2f}"
            f"{r['errors']:>6.0f}{r['cpu_us']:>12,.0f}{r['db_us']:>11,.0f}{r['db_ops']:>11.1f} | "
            f"{r['half_rate']:>10,.0f}{r['half_p50_us'] / 1e3:>8.2f}{r['half_p99_us'] / 1e3:>8.2f}"
            f"{r['half_errors']:>6.0f}{r['half_cpu_us']:>12,.0f}{r['half_db_us']:>11,.0f}"
        )
        if r["drain_s"]:
            rate = r["backlog"] / r["drain_s"]
            print(
                f"{'':<24}(CPU and DB figures include {r['drain_s']:.1f} s of event relay drain: "
                f"{r['backlog']:,.0f} events waiting at the end of the peak, {rate:,.0f}/s)"
            )
        print_lags(r)
    by = {s.key: s.results for s in servers if s.results}
    bare_r, red = by.get("bare"), by.get("nodered")
    print("\nratios (SPEC §8 target in brackets):")
    for s in servers:
        name, gw = s.name.split()[0], s.results
        if not gw or not s.key.startswith("gateway"):
            continue
        if red and "positions" in s.key:
            both, red_both = gw["cpu_us"] + gw["db_us"], red["cpu_us"] + red["db_us"]
            print(f"  {name} req/s ÷ Node-RED    {gw['rps'] / red['rps']:5.2f}  [≥ 3]")
            print(f"  {name} CPU+DB/req ÷ Node-RED {both / red_both:5.2f}  [≤ 0.33]")
        elif red:
            print(f"  {name} CPU/req ÷ Node-RED  {gw['cpu_us'] / red['cpu_us']:5.2f}  [≤ 0.5]")
            print(f"  {name} req/s ÷ Node-RED    {gw['rps'] / red['rps']:5.2f}  [≥ 1.5]")
        if bare_r:
            print(f"  {name} CPU/req ÷ bare      {gw['cpu_us'] / bare_r['cpu_us']:5.2f}  [≤ 3]")
        print(f"  {name} p99 at half peak    {gw['half_p99_us'] / 1e3:5.1f} ms [< 20 ms]")
        if "half_fold_lag_p99_s" in gw:
            print(f"  {name} fold lag p99 at half ≤ {gw['half_fold_lag_p99_s']:g} s [< 1 s]")
    if red and bare_r:
        print(f"  Node-RED CPU/req ÷ bare   {red['cpu_us'] / bare_r['cpu_us']:5.2f}")


def store_and_drop(server: Server, db: EmbeddedServer) -> None:
    """What the server stored (into its results), then its database goes: the next server of
    the run starts on a database server that does not carry this one's data."""
    with MongoClient(db.uri) as client:
        if server.key.startswith("nodered"):
            stored = {"vehicles": client["fleet"]["vehicles"].count_documents({})}
            client.drop_database("fleet")
        elif server.db_name:
            gateway = client[server.db_name]
            stored = {
                "vehicles": gateway["entities"].count_documents({"type": "vehicle"}),
                "events": gateway["events"].count_documents({}),
                "deliveries": gateway["deliveries"].count_documents({}),
                "positions": gateway["positions"].count_documents({}),
            }
            client.drop_database(server.db_name)
        else:
            return
    server.results.update({f"stored_{k}": v for k, v in stored.items()})


def stored_counts(servers: list[Server]) -> str:
    return "; ".join(
        f"{s.name}: "
        + ", ".join(f"{k[7:]} {v}" for k, v in s.results.items() if k[:7] == "stored_")
        for s in servers
        if any(k.startswith("stored_") for k in s.results)
    )


def source_version(src: str | None) -> str:
    """The commit the gateway runs from, and whether gateway/ has uncommitted changes."""
    where = ["-C", str(src or ROOT)]
    head = subprocess.run(["git", *where, "rev-parse", "--short", "HEAD"], capture_output=True)
    dirty = subprocess.run(["git", *where, "status", "--porcelain", "gateway"], capture_output=True)
    if head.returncode:
        return "not a git checkout"
    return head.stdout.decode().strip() + (" + uncommitted changes" if dirty.stdout else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--servers", default="bare,nodered,gateway,gateway-web")
    parser.add_argument(
        "--gateway-src", help="run the gateway from this directory's gateway/ (A/B a change)"
    )
    parser.add_argument("--json", type=Path, help="write every server's figures to this file")
    parser.add_argument(
        "--trace", type=Path, help="write each server's half-of-peak requests to a CSV here"
    )
    args = parser.parse_args()
    if args.gateway_src:
        GATEWAY_ENV["PYTHONPATH"] = str(Path(args.gateway_src).resolve())
    for tool in ("wrk", "node"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install wrk nodejs npm")
    with tempfile.TemporaryDirectory(prefix="bench-http-") as name:
        tmp = Path(name)
        db = EmbeddedServer(tmp / "db")
        db.start()
        load = f"wrk -t1 -c{args.connections} -d{args.duration:g}s"
        print(f"embedded SecantusDB pid {db.pid}; {load}")
        servers = []
        try:
            for spec in args.servers.split(","):
                # "gateway-positions%GATEWAY_FOLD_ENTITY_SECONDS=30": a setting for this one
                key, *settings = spec.split("%")
                server = Server(key, env=dict(s.split("=", 1) for s in settings))
                try:
                    SERVERS[PROCESSES.sub("", key.partition("@")[0])](server, tmp, db)
                    print(f"{server.name}: {server.url}", flush=True)
                    if key.startswith("gateway"):
                        src = key.partition("@")[2] or args.gateway_src
                        print(f"  gateway/ from {src or ROOT} ({source_version(src)})")
                    measure(server, db, args)
                    store_and_drop(server, db)
                except Exception as exc:  # report the others even if one server fails
                    print(f"{key}: FAILED: {exc}", flush=True)
                    logs = sorted(tmp.glob(f"{key.split('-')[0]}*.log"))
                    for log in logs:
                        print("  " + "\n  ".join(log.read_text().splitlines()[-10:]))
                finally:
                    if server.proc:
                        server.proc.terminate()
                        server.proc.wait(15)
                servers.append(server)
            report(servers)
            print(f"\nstored: {stored_counts(servers)}")
            if args.json:
                figures = [{"key": s.key, "name": s.name, **s.results} for s in servers]
                args.json.write_text(json.dumps({"load": os.getloadavg(), "servers": figures}))
        finally:
            db.stop()


if __name__ == "__main__":
    main()
