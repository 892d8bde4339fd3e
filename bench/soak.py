"""Soak: a real `gateway serve` (embedded database) under a mixed load at 70% of its measured
peak for a long time, loopback only. Not a CI test: run it by hand before a release.

    python bench/soak.py [--minutes 10] [--fraction 0.7] [--window 30] [--tracemalloc DIR]

Mix (per request drawn at random): 55% trigger POST (an upsert of one of 500 vehicles whose
odometer moves, so every call writes, emits `entity.updated` and creates a delivery), 20%
trigger GET by plate, 15% admin reads (entity list, delivery list), 10% admin GET of one
vehicle. Every delivery goes to a local partner that answers 200 at once.

1. peak: a closed loop with 16 concurrent clients for 20 s; its rate is the peak.
2. soak: an open loop at `fraction` x peak (requests due at fixed times; latency counted
   from the due time, so a stall is not hidden by a waiting client).
Each window prints: requests, errors, p50/p99 latency, RSS of the gateway and of the
database, the CPU each used (% of one core), relay lag (now minus the newest relayed event's
time) and delivery lag p99 (a delivery's arrival at the partner minus its event's time). The
summary compares the first and last windows.

`--tracemalloc DIR` runs the gateway under tracemalloc (`PYTHONTRACEMALLOC`, frames set by
`--frames`; it runs slower, so its peak is lower) and takes a snapshot once the soak has run
60 s (warm-up) and one at the end (`bench/_tracemalloc/sitecustomize.py`, on SIGUSR2); then it
prints the allocation sites that grew most between the two, by traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import plate
from gateway.auth.keyring import KeyRing
from gateway.auth.tokens import issue_admin_token, parse_ttl

SECRET = "soak-secret-key-0123456789abcdef0123456789abcdef"
VEHICLES = 500
_ROW = (
    "{:8d}  {:8d}  {:6d}  {:6.1f}  {:6.1f}  {:15.1f}  {:10.1f}  {:11.2f}  {:18.2f}"
    "  {:15.0f}  {:10.0f}"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Window:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    delivery_lags: list[float] = field(default_factory=list)


class Partner:
    """Answers every delivery 200 at once and notes how late it arrived."""

    def __init__(self) -> None:
        self.window = Window()
        self.received = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        occurred = datetime.fromisoformat(body["occurred_at"])
        self.window.delivery_lags.append((datetime.now(UTC) - occurred).total_seconds())
        self.received += 1
        return web.json_response({})


class Soak:
    def __init__(self, base: str, session: aiohttp.ClientSession, admin: str) -> None:
        self.base, self.session = base, session
        self.admin = {"Authorization": f"Bearer {admin}"}
        self.trigger: dict[str, Any] = {}
        self.odometer = 0
        self.window = Window()
        self.vehicle_ids: list[str] = []
        self.posts = 0  # each one changes a vehicle: one delivery to the partner

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, **kwargs) as response:
            data = await response.json(content_type=None)
            return response.status, data

    async def setup(self, partner_url: str) -> None:
        status, self.trigger = await self.call(
            "POST",
            "/api/v1/triggers",
            json={"name": "soak", "entity_type": "vehicle", "methods": ["GET", "POST"]},
            headers=self.admin,
        )
        assert status == 201, self.trigger
        body = {"name": "sink", "base_url": partner_url, "auth": {"type": "none"}}
        _, partner = await self.call("POST", "/api/v1/partners", json=body, headers=self.admin)
        action = {
            "name": "push",
            "partner_id": partner["id"],
            "method": "POST",
            "path": "/events",
            "mode": "deliver",
        }
        _, action_doc = await self.call("POST", "/api/v1/actions", json=action, headers=self.admin)
        sub = {"action_id": action_doc["id"], "event_types": ["entity.updated"]}
        status, _ = await self.call("POST", "/api/v1/subscriptions", json=sub, headers=self.admin)
        assert status == 201
        for i in range(VEHICLES):
            status, body = await self.one_post(i)
            self.vehicle_ids.append(body["id"])

    async def one_post(self, i: int) -> tuple[int, Any]:
        self.odometer += 1
        return await self.call(
            "POST",
            f"/hooks/{self.trigger['id']}",
            json={"plate": plate(i), "odometer_km": self.odometer},
            headers={"Authorization": f"Bearer {self.trigger['token']}"},
        )

    async def one(self, rng: random.Random) -> bool:
        draw, i = rng.random(), rng.randrange(VEHICLES)
        hook = {"Authorization": f"Bearer {self.trigger['token']}"}
        if draw < 0.55:
            status, _ = await self.one_post(i)
            self.posts += status < 400
        elif draw < 0.75:
            status, _ = await self.call(
                "GET", f"/hooks/{self.trigger['id']}?plate={plate(i)}", headers=hook
            )
        elif draw < 0.825:
            status, _ = await self.call(
                "GET", "/api/v1/entities/vehicle?limit=20", headers=self.admin
            )
        elif draw < 0.9:
            status, _ = await self.call("GET", "/api/v1/deliveries?limit=20", headers=self.admin)
        else:
            status, _ = await self.call(
                "GET", f"/api/v1/entities/vehicle/{self.vehicle_ids[i]}", headers=self.admin
            )
        return status < 400

    async def timed(self, rng: random.Random, due: float) -> None:
        try:
            ok = await self.one(rng)
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        self.window.latencies.append(time.perf_counter() - due)
        if not ok:
            self.window.errors += 1

    async def relay_lag(self) -> float:
        """Now minus the newest relayed event's time (NaN when it cannot be read)."""
        try:
            status, page = await self.call("GET", "/api/v1/events?limit=1", headers=self.admin)
        except (aiohttp.ClientError, TimeoutError):
            return float("nan")
        if status != 200 or not page["items"]:
            return float("nan")
        newest = datetime.fromisoformat(page["items"][0]["occurred_at"])
        return (datetime.now(UTC) - newest).total_seconds()


async def peak(soak: Soak, partner: Partner, seconds: float) -> float:
    """The sustainable rate of the mix: requests of a closed loop divided by the time until
    the deliveries they caused have all arrived (the async work is part of the cost)."""
    rng = random.Random(1)
    done = 0
    end = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await soak.timed(rng, time.perf_counter())
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(16)))
    while partner.received < soak.posts and time.perf_counter() < started + 10 * seconds:
        await asyncio.sleep(0.1)
    return done / (time.perf_counter() - started)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")  # nothing arrived in the window: not "no lag"
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="soak-"))
    port = _free_port()
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_PORT": str(port),
        "GATEWAY_SECRET_KEY": SECRET,
        "GATEWAY_OUTBOUND_ALLOW": "127.0.0.1",
        "GATEWAY_LOG_LEVEL": "WARNING",
    }
    env.pop("MONGODB_URI", None)
    if args.tracemalloc:
        Path(args.tracemalloc).mkdir(parents=True, exist_ok=True)
        hook = str(Path(__file__).resolve().parent / "_tracemalloc")
        env["PYTHONTRACEMALLOC"] = str(args.frames)
        env["SOAK_TRACEMALLOC_DIR"] = str(Path(args.tracemalloc).resolve())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [hook, env.get("PYTHONPATH")]))
    with (data_dir / "gateway.log").open("wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"], env=env, stdout=log, stderr=log
        )
    partner = Partner()
    app = web.Application()
    app.router.add_post("/events", partner.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    partner_port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", partner_port).start()
    connector = aiohttp.TCPConnector(limit=128)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    async with session.get(base + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            admin = issue_admin_token(
                KeyRing.from_secret(SECRET),
                tenant="soak",
                role="admin",
                subject="soak",
                ttl=parse_ttl("1d"),
            )
            soak = Soak(base, session, admin)
            await soak.setup(f"http://127.0.0.1:{partner_port}")
            top = await peak(soak, partner, args.peak_seconds)
            rate = top * args.fraction
            print(
                f"peak {top:.0f} req/s (16 clients); soak at {rate:.0f} req/s "
                f"for {args.minutes} min",
                flush=True,
            )
            db_pid = int((data_dir / "db.pid").read_text())
            await _soak(soak, partner, rate, args, gateway.pid, db_pid)
    finally:
        await runner.cleanup()
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(60)


async def _soak(
    soak: Soak,
    partner: Partner,
    rate: float,
    args: argparse.Namespace,
    gateway_pid: int,
    db_pid: int,
) -> None:
    rng = random.Random(2)
    start = time.perf_counter()
    end = start + args.minutes * 60
    pending: set[asyncio.Task[None]] = set()
    rows = []
    print(
        "window_s  requests  errors  p50_ms  p99_ms  rss_gateway_mib  rss_db_mib  "
        "relay_lag_s  delivery_lag_p99_s  cpu_gateway_pct  cpu_db_pct",
        flush=True,
    )
    n, next_report = 0, start + args.window
    snapshots: list[Path] = []
    soak.window, partner.window = Window(), Window()
    cpu = (_cpu_seconds(gateway_pid), _cpu_seconds(db_pid))
    while (now := time.perf_counter()) < end:
        due = start + n / rate
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(soak.timed(rng, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
        if time.perf_counter() >= next_report:
            lag = await soak.relay_lag()
            w, d = soak.window, partner.window
            used = (_cpu_seconds(gateway_pid), _cpu_seconds(db_pid))
            busy = [(u - c) / args.window * 100 for u, c in zip(used, cpu, strict=True)]
            cpu = used
            row = (
                round(next_report - start),
                len(w.latencies),
                w.errors,
                _pct(w.latencies, 0.5) * 1000,
                _pct(w.latencies, 0.99) * 1000,
                _rss_mib(gateway_pid),
                _rss_mib(db_pid),
                lag,
                _pct(d.delivery_lags, 0.99),
                *busy,
            )
            rows.append(row)
            print(_ROW.format(*row), flush=True)
            soak.window, partner.window = Window(), Window()
            next_report += args.window
            if args.tracemalloc and not snapshots and next_report - start > 60:
                snapshots.append(await _snapshot(args.tracemalloc, gateway_pid, 1))
    await asyncio.gather(*pending)
    if args.tracemalloc:
        snapshots.append(await _snapshot(args.tracemalloc, gateway_pid, len(snapshots) + 1))
        _compare(snapshots[0], snapshots[-1], _rss_mib(gateway_pid))
    total = sum(r[1] for r in rows)
    errors = sum(r[2] for r in rows)
    print(
        f"\nsummary: {total} requests, {errors} errors ({errors / max(total, 1):.4%}); "
        f"p99 first/last window {rows[0][4]:.1f}/{rows[-1][4]:.1f} ms, "
        f"median of windows {statistics.median(r[4] for r in rows):.1f} ms; "
        f"RSS gateway {rows[0][5]:.0f} -> {rows[-1][5]:.0f} MiB, "
        f"database {rows[0][6]:.0f} -> {rows[-1][6]:.0f} MiB; "
        f"relay lag max {_finite_max(r[7] for r in rows):.2f} s; "
        f"delivery lag p99 max {_finite_max(r[8] for r in rows):.2f} s; "
        f"{partner.received} deliveries received",
        flush=True,
    )


async def _snapshot(directory: str, pid: int, n: int) -> Path:
    """Ask the gateway for its n-th tracemalloc snapshot and wait until it is written."""
    path = Path(directory) / f"snapshot-{n}.pickle"
    os.kill(pid, signal.SIGUSR2)
    while not path.exists():
        await asyncio.sleep(0.2)
    print(f"tracemalloc snapshot {path} (RSS gateway {_rss_mib(pid):.1f} MiB)", flush=True)
    return path


def _compare(first: Path, last: Path, rss: float, top: int = 15) -> None:
    """The allocation sites (by traceback) that grew most between two snapshots."""
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    old = tracemalloc.Snapshot.load(str(first)).filter_traces(filters)
    new = tracemalloc.Snapshot.load(str(last)).filter_traces(filters)
    diff = new.compare_to(old, "traceback")
    traced = [sum(s.size for s in snap.statistics("filename")) / 2**20 for snap in (old, new)]
    print(f"\ntraced Python memory {traced[0]:.1f} -> {traced[1]:.1f} MiB (RSS now {rss:.1f} MiB)")
    print(f"top {top} growing allocation sites:")
    for stat in diff[:top]:
        print(
            f"  {stat.size_diff / 1024:+9.1f} KiB  {stat.count_diff:+7d} blocks  "
            f"(now {stat.size / 1024:.1f} KiB)"
        )
        for line in stat.traceback.format(most_recent_first=True)[:10]:
            print(f"      {line}")
    print(flush=True)


def _finite_max(values: Any) -> float:
    finite = [v for v in values if v == v]  # NaN is a window where nothing could be read
    return max(finite) if finite else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--fraction", type=float, default=0.7)
    parser.add_argument("--window", type=float, default=30)
    parser.add_argument("--peak-seconds", type=float, default=20)
    parser.add_argument("--tracemalloc", metavar="DIR", help="snapshot the gateway's memory")
    parser.add_argument("--frames", type=int, default=8, help="tracemalloc frames (with DIR)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
