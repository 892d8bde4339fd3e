"""End-to-end trigger POST benchmark of SPEC §8: bare aiohttp, Node-RED and the gateway, one after
the other in one run on one embedded SecantusDB, driven by the same wrk script and payload mix.

    python bench/bench_http.py [--duration 10] [--warmup 3] [--connections 16]
                               [--servers bare,nodered,gateway,gateway-web] [--gateway-src DIR]

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
  /hooks/{id} with the trigger's token; workers (event relay) in the same process;
- gateway-web: the same with GATEWAY_RUN_WORKERS=false (request path only).
"""

from __future__ import annotations

import argparse
import json
import os
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
from pathlib import Path

import jwt
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT, SHARED_BENCH, cpu_seconds, process_tree, tree_cpu_seconds
from gateway.store.embedded import EmbeddedServer

BENCH = ROOT / "bench"
NODERED_DIR = BENCH / ".nodered"
NODERED_PACKAGES = ["node-red@4", "node-red-contrib-mongodb4@3.4.0"]
PAYLOAD = SHARED_BENCH / "position_payload.json"
SCHEMA = SHARED_BENCH / "position_schema.json"
PYTHON = sys.executable
GATEWAY = str(Path(PYTHON).with_name("gateway"))
GATEWAY_ENV: dict[str, str] = {}  # --gateway-src sets PYTHONPATH here


@dataclass
class Server:
    name: str
    url: str = ""
    token: str = ""
    proc: subprocess.Popen | None = None
    results: dict[str, float] = field(default_factory=dict)


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
        PAYLOAD.read_bytes(),
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
    flows = subprocess.run(
        [PYTHON, str(SHARED_BENCH / "nodered" / "make_flows.py"), str(SCHEMA), secret, db.uri],
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


def gateway_server(workers: bool) -> Callable[[Server, Path, EmbeddedServer], None]:
    def start(server: Server, tmp: Path, db: EmbeddedServer) -> None:
        port = free_port()
        name = "gateway" if workers else "gateway-web"
        env = {
            "MONGODB_URI": db.uri,
            "GATEWAY_PORT": str(port),
            "GATEWAY_DATA_DIR": str(tmp / name),
            "GATEWAY_SECRET_KEY": os.urandom(32).hex(),
            "GATEWAY_DATABASE": name.replace("-", "_"),
            "GATEWAY_LOG_JSON": "true",
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_RUN_WORKERS": "true" if workers else "false",
            **GATEWAY_ENV,
        }
        base = f"http://127.0.0.1:{port}"
        server.name = name + (" (+workers)" if workers else " (web only)")
        server.proc = spawn([GATEWAY, "serve"], tmp / f"{name}.log", env)
        wait_until(server, f"{base}/healthz")
        server.url, server.token = create_trigger(base, env)
        wait_until(server, server.url)

    return start


def create_trigger(base: str, env: dict[str, str]) -> tuple[str, str]:
    """Tenant `bench`: upload the position mapping, create a vehicle trigger; (url, token)."""
    admin = subprocess.run(
        [GATEWAY, "admin-token", "--tenant", "bench"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    auth = {"Authorization": f"Bearer {admin}"}
    mapping = (BENCH / "position_mapping.yaml").read_bytes()
    status, body = http(
        "POST", f"{base}/api/v1/mappings", mapping, **auth, **{"Content-Type": "application/yaml"}
    )
    if status != 201:
        raise RuntimeError(f"mapping upload: {status} {body[:500]!r}")
    spec = {
        "name": "bench positions",
        "entity_type": "vehicle",
        "methods": ["POST"],
        "mapping": "bench-position",
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
    return trigger["url"], trigger["token"]


SERVERS = {
    "bare": bare,
    "nodered": nodered,
    "gateway": gateway_server(workers=True),
    "gateway-web": gateway_server(workers=False),
}


class CpuMeter:
    """CPU seconds of the server's process tree and of the database between start and stop."""

    def __init__(self, server: Server, db: EmbeddedServer) -> None:
        assert server.proc and db.pid
        self.pids, self.db_pid = process_tree(server.proc.pid), db.pid

    def __enter__(self) -> CpuMeter:
        self.server0, self.db0 = tree_cpu_seconds(self.pids), cpu_seconds(self.db_pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server = tree_cpu_seconds(self.pids) - self.server0
        self.db = cpu_seconds(self.db_pid) - self.db0


def wrk(server: Server, seconds: float, connections: int) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    cmd += ["-s", str(BENCH / "post_position.lua"), server.url]
    env = {**os.environ, "TOKEN": server.token, "PAYLOAD": str(PAYLOAD)}
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    requests, errors, duration, p50, p99, peak = (int(v) for v in line.split()[1:])
    return {"requests": requests, "errors": errors, "rps": requests / (duration / 1e6),
            "p50_us": p50, "p99_us": p99, "max_us": peak}  # fmt: skip


def fixed_rate(server: Server, rate: float, seconds: float) -> dict[str, float]:
    cmd = [PYTHON, str(BENCH / "fixed_rate.py"), server.url, "--rate", f"{rate:.0f}"]
    cmd += ["--duration", str(seconds), "--token", server.token, "--payload", str(PAYLOAD)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(server: Server, db: EmbeddedServer, args: argparse.Namespace) -> None:
    wrk(server, args.warmup, args.connections)
    with CpuMeter(server, db) as cpu:
        peak = wrk(server, args.duration, args.connections)
    served = max(peak["requests"], 1)
    server.results.update(peak)
    server.results.update(cpu_us=cpu.server / served * 1e6, db_us=cpu.db / served * 1e6)
    with CpuMeter(server, db) as cpu:
        half = fixed_rate(server, peak["rps"] / 2, args.duration)
    ok = max(half["ok"], 1)
    server.results.update(
        half_rate=half["rate"], half_p50_us=half["p50_us"], half_p99_us=half["p99_us"],
        half_errors=half["errors"], half_cpu_us=cpu.server / ok * 1e6, half_db_us=cpu.db / ok * 1e6,
    )  # fmt: skip


def report(servers: list[Server]) -> None:
    head = (
        f"{'server':<24}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'err':>6}{'CPU µs/req':>12}"
        f"{'DB µs/req':>11} | {'half req/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'err':>6}"
        f"{'CPU µs/req':>12}{'DB µs/req':>11}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for s in servers:
        r = s.results
        if not r:
            print(f"{s.name:<24} (failed)")
            continue
        print(
            f"{s.name:<24}{r['rps']:>8,.0f}{r['p50_us'] / 1e3:>8.2f}{r['p99_us'] / 1e3:>8.2f}"
            f"{r['errors']:>6.0f}{r['cpu_us']:>12,.0f}{r['db_us']:>11,.0f} | "
            f"{r['half_rate']:>10,.0f}{r['half_p50_us'] / 1e3:>8.2f}{r['half_p99_us'] / 1e3:>8.2f}"
            f"{r['half_errors']:>6.0f}{r['half_cpu_us']:>12,.0f}{r['half_db_us']:>11,.0f}"
        )
    by = {s.name.split()[0]: s.results for s in servers if s.results}
    bare_r, red = by.get("bare"), by.get("Node-RED")
    print("\nratios (SPEC §8 target in brackets):")
    for name in ("gateway", "gateway-web"):
        gw = by.get(name)
        if not gw:
            continue
        if red:
            print(f"  {name} CPU/req ÷ Node-RED  {gw['cpu_us'] / red['cpu_us']:5.2f}  [≤ 0.5]")
            print(f"  {name} req/s ÷ Node-RED    {gw['rps'] / red['rps']:5.2f}  [≥ 1.5]")
        if bare_r:
            print(f"  {name} CPU/req ÷ bare      {gw['cpu_us'] / bare_r['cpu_us']:5.2f}  [≤ 2]")
        print(f"  {name} p99 at half peak    {gw['half_p99_us'] / 1e3:5.1f} ms [< 20 ms]")
    if red and bare_r:
        print(f"  Node-RED CPU/req ÷ bare   {red['cpu_us'] / bare_r['cpu_us']:5.2f}")


def stored_counts(db: EmbeddedServer) -> str:
    with MongoClient(db.uri) as client:
        counts = {"nodered fleet.vehicles": client["fleet"]["vehicles"].count_documents({})}
        for name in ("gateway", "gateway_web"):
            counts[f"{name} vehicles"] = client[name]["entities"].count_documents(
                {"type": "vehicle"}
            )
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--servers", default="bare,nodered,gateway,gateway-web")
    parser.add_argument(
        "--gateway-src", help="run the gateway from this directory's gateway/ (A/B a change)"
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
        print(f"embedded SecantusDB pid {db.pid}; wrk -t1 -c{args.connections} -d{args.duration}s")
        servers = []
        try:
            for key in args.servers.split(","):
                server = Server(key)
                try:
                    SERVERS[key](server, tmp, db)
                    print(f"{server.name}: {server.url}", flush=True)
                    measure(server, db, args)
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
            print(f"\nstored: {stored_counts(db)}")
        finally:
            db.stop()


if __name__ == "__main__":
    main()
