"""Soak: a real `gateway serve` (embedded database) under a mixed load at 70% of its measured
peak for a long time, loopback only. Not a CI test: run it by hand before a release.

    python bench/soak.py [--mix entities|positions] [--minutes 10] [--fraction 0.7]
                         [--window 30] [--tracemalloc DIR]

Mix `entities` (the default; per request drawn at random): 55% trigger POST (an upsert of one
of 500 vehicles whose odometer moves, so every call writes, emits `entity.updated` and creates
a delivery), 20% trigger GET by plate, 15% admin reads (entity list, delivery list), 10%
admin GET of one vehicle. Every delivery goes to a local partner that answers 200 at once.

1. peak: a closed loop with 16 concurrent clients for 20 s; its rate is the peak.
2. soak: an open loop at `fraction` x peak (requests due at fixed times; latency counted
   from the due time, so a stall is not hidden by a waiting client).
Each window prints: requests, errors, p50/p99 latency, RSS of the gateway and of the
database, the CPU each used (% of one core), relay lag (now minus the newest relayed event's
time) and delivery lag p99 (a delivery's arrival at the partner minus its event's time). The
summary compares the first and last windows.

Mix `positions`: every request is one fix posted to a position trigger (bench/fix_mapping.yaml,
the tracker payload of ../shared/bench) for one of 1,000 vehicles drawn at random, made as
post_fix.lua and fixed_rate.py make them (vehicle i circles its own centre, 2 km radius, 54
km/h; device time the wall clock, at least 0.5 s after its previous fix): every fix passes the
fold's quality gates and moves the odometer. Three authorized circles (20, 40, 60 km) and a
restricted rectangle with a 30 s dwell cut some of the vehicles' circles, and a maintenance
plan (every 5 km, due soon 1 km before) watches the whole fleet, so the fold emits geofence
crossings and maintenance announcements; they are delivered to the local partner. The peak is
counted until the fold has caught up with the fixes appended. Each window prints requests,
errors, p50/p99, RSS and CPU of both processes, the fold lag (`gateway_fleet_fold_lag_seconds`
over the window: its mean, and the upper bound of the bucket holding its p99), the age of the
oldest inbox document not folded (`gateway_fleet_fold_oldest_waiting_seconds`), the fixes
stored so far (`gateway_fixes_total{outcome="appended"}`), and the fleet events the partner
received in the window.

`--tracemalloc DIR` runs the gateway under tracemalloc (`PYTHONTRACEMALLOC`, frames set by
`--frames`; it runs slower, so its peak is lower) and takes a snapshot once the soak has run
60 s (warm-up) and one at the end (`bench/_tracemalloc/sitecustomize.py`, on SIGUSR2); then it
prints the allocation sites that grew most between the two, by traceback.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import json
import math
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import SHARED_BENCH, plate
from gateway.auth.keyring import KeyRing
from gateway.auth.tokens import issue_admin_token, parse_ttl

SECRET = "soak-secret-key-0123456789abcdef0123456789abcdef"
VEHICLES = 500
FLEET = 1000  # the position mix's vehicles
BENCH = Path(__file__).resolve().parent
SCHEMA = BENCH.parent / "tests" / "data" / "position_schema.json"
RADIUS_M, SPEED_MS, DEGREE_M = 2000.0, 15.0, 111_195.0  # as in post_fix.lua and fixed_rate.py
FLEET_EVENTS = ["vehicle.geofence.*", "vehicle.maintenance.*"]
_POSITION_HEADER = (
    "window_s  requests  errors  p50_ms  p99_ms  rss_gateway_mib  rss_db_mib  cpu_gateway_pct"
    "  cpu_db_pct  fold_lag_mean_s  fold_lag_p99_le_s  fold_oldest_s  fixes_stored  events"
)
_POSITION_ROW = (
    "{:8d}  {:8d}  {:6d}  {:6.1f}  {:6.1f}  {:15.1f}  {:10.1f}  {:15.0f}  {:10.0f}"
    "  {:15.3f}  {:17.3f}  {:13.2f}  {:12.0f}  {:6d}"
)
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
        self.types: dict[str, int] = {}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        occurred = datetime.fromisoformat(body["occurred_at"])
        self.window.delivery_lags.append((datetime.now(UTC) - occurred).total_seconds())
        self.received += 1
        kind = str(body.get("type"))
        self.types[kind] = self.types.get(kind, 0) + 1
        return web.json_response({})


class _Mix(abc.ABC):
    """A mix of requests: the gateway's address and admin token, the window being measured,
    and one request drawn at a time (`one`), timed from when it was due."""

    def __init__(self, base: str, session: aiohttp.ClientSession, admin: str) -> None:
        self.base, self.session = base, session
        self.admin = {"Authorization": f"Bearer {admin}"}
        self.window = Window()

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, **kwargs) as response:
            data = await response.json(content_type=None)
            return response.status, data

    async def subscribe(self, partner_url: str, event_types: list[str]) -> None:
        """The sink partner, a deliver action to it and a subscription to these events."""
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
        sub = {"action_id": action_doc["id"], "event_types": event_types}
        status, answer = await self.call(
            "POST", "/api/v1/subscriptions", json=sub, headers=self.admin
        )
        assert status == 201, answer

    @abc.abstractmethod
    async def one(self, rng: random.Random) -> bool:
        """One request of the mix; whether it was answered as expected."""

    async def timed(self, rng: random.Random, due: float) -> None:
        try:
            ok = await self.one(rng)
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        self.window.latencies.append(time.perf_counter() - due)
        if not ok:
            self.window.errors += 1


class Soak(_Mix):
    def __init__(self, base: str, session: aiohttp.ClientSession, admin: str) -> None:
        super().__init__(base, session, admin)
        self.trigger: dict[str, Any] = {}
        self.odometer = 0
        self.vehicle_ids: list[str] = []
        self.posts = 0  # each one changes a vehicle: one delivery to the partner

    async def setup(self, partner_url: str) -> None:
        status, self.trigger = await self.call(
            "POST",
            "/api/v1/triggers",
            json={"name": "soak", "entity_type": "vehicle", "methods": ["GET", "POST"]},
            headers=self.admin,
        )
        assert status == 201, self.trigger
        await self.subscribe(partner_url, ["entity.updated"])
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


def place(i: int, ms: int) -> tuple[float, float]:
    """Where vehicle `i` is at `ms` (Unix milliseconds): post_fix.lua's circle."""
    clat = -23.55052 + (i % 40) * 0.05
    clon = -46.633308 + (i // 40) * 0.05
    angle = i + (ms / 1000.0) * SPEED_MS / RADIUS_M
    lat = clat + RADIUS_M * math.sin(angle) / DEGREE_M
    lon = clon + RADIUS_M * math.cos(angle) / (DEGREE_M * math.cos(math.radians(clat)))
    return round(lat, 6), round(lon, 6)


def fleet_rules() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The geofences and the maintenance plan of the position mix. The vehicles' centres are
    a 40 x 25 grid 0.05 degrees apart from (-23.55, -46.63); each fence's border cuts the
    circles of some of them, which then cross it now and then."""
    mid_lat, mid_lon = -23.55052 + 20 * 0.05, -46.633308 + 12 * 0.05
    fences: list[dict[str, Any]] = [
        {
            "name": f"soak ring {km} km",
            "kind": "authorized",
            "circle": {"lat": mid_lat, "lon": mid_lon, "radius_m": km * 1000},
            "group": "soak",
        }
        for km in (20, 40, 60)
    ]
    west, east, south, north = -46.40, -46.00, -23.30, -22.90
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    fences.append(
        {
            "name": "soak restricted area",
            "kind": "restricted",
            "polygon": {"type": "Polygon", "coordinates": [ring]},
            "dwell_seconds": 30,
        }
    )
    plan = {"name": "soak service", "every_km": 5, "due_soon_km": 1}
    return fences, plan


class PositionSoak(_Mix):
    """The position mix: one fix per request (see the module's docstring)."""

    def __init__(self, base: str, session: aiohttp.ClientSession, admin: str) -> None:
        super().__init__(base, session, admin)
        self.payload = json.loads((SHARED_BENCH / "position_payload.json").read_text())
        self.last: dict[int, int] = {}  # vehicle → its previous fix's device time (ms)
        self.url, self.hook = "", {}

    async def setup(self, partner_url: str) -> None:
        post = self.admin
        for i in range(0, FLEET, 50):
            answers = await asyncio.gather(
                *(
                    self.call(
                        "POST",
                        "/api/v1/entities/vehicle",
                        json={"plate": plate(n), "group": "soak"},
                        headers=post,
                    )
                    for n in range(i, i + 50)
                )
            )
            assert all(status == 201 for status, _ in answers), answers
        async with self.session.post(
            self.base + "/api/v1/mappings",
            data=(BENCH / "fix_mapping.yaml").read_bytes(),
            headers={**post, "Content-Type": "application/yaml"},
        ) as response:
            assert response.status == 201, await response.text()
        spec = {
            "name": "soak fixes",
            "target": "positions",
            "methods": ["POST"],
            "mapping": "bench-fix",
            "input_schema": json.loads(SCHEMA.read_text()),
        }
        status, trigger = await self.call("POST", "/api/v1/triggers", json=spec, headers=post)
        assert status == 201, trigger
        self.url = f"/hooks/{trigger['id']}"
        self.hook = {"Authorization": f"Bearer {trigger['token']}"}
        fences, plan = fleet_rules()
        for fence in fences:
            status, body = await self.call("POST", "/api/v1/geofences", json=fence, headers=post)
            assert status == 201, body
        status, body = await self.call("POST", "/api/v1/maintenance-plans", json=plan, headers=post)
        assert status == 201, body
        await self.subscribe(partner_url, FLEET_EVENTS)

    def fix(self, i: int) -> dict[str, Any]:
        """A new fix of vehicle `i`, as post_fix.lua makes it."""
        ms = max(int(time.time() * 1000), self.last.get(i, 0) + 500)
        self.last[i] = ms
        lat, lon = place(i, ms)
        at = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
        body = json.loads(json.dumps(self.payload))
        body["device"]["plate"] = plate(i)
        body["position"].update(latitude=lat, longitude=lon, fixTime=at.replace("+00:00", "Z"))
        return body

    async def one(self, rng: random.Random) -> bool:
        body = self.fix(rng.randrange(FLEET))
        status, _ = await self.call("POST", self.url, json=body, headers=self.hook)
        return status < 400

    async def metrics(self) -> dict[str, list[tuple[str, float]]]:
        """The gateway's metrics: name → [(labels, value)] (empty when they cannot be read)."""
        try:
            async with self.session.get(self.base + "/metrics") as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return {}
        out: dict[str, list[tuple[str, float]]] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            name, _, labels = head.partition("{")
            out.setdefault(name, []).append((labels, float(value)))
        return out


def _total(metrics: dict[str, list[tuple[str, float]]], name: str, *labels: str) -> float:
    """The sum of a metric's series whose labels hold every one of `labels`."""
    return sum(v for got, v in metrics.get(name, []) if all(want in got for want in labels))


def _fold_lag(
    old: dict[str, list[tuple[str, float]]], new: dict[str, list[tuple[str, float]]]
) -> tuple[float, float]:
    """The fold lag over a window from two readings of its histogram: (mean, the upper bound
    of the bucket that holds the 99th percentile); NaN when nothing was folded."""
    name = "gateway_fleet_fold_lag_seconds"
    count = _total(new, name + "_count") - _total(old, name + "_count")
    if count <= 0:
        return float("nan"), float("nan")
    mean = (_total(new, name + "_sum") - _total(old, name + "_sum")) / count
    buckets: dict[float, float] = {}
    for reading, sign in ((new, 1), (old, -1)):
        for labels, value in reading.get(name + "_bucket", []):
            le = float(labels.split('le="')[1].split('"')[0])
            buckets[le] = buckets.get(le, 0.0) + sign * value
    p99 = next((le for le in sorted(buckets) if buckets[le] >= 0.99 * count), math.inf)
    return mean, p99


def _folded(metrics: dict[str, list[tuple[str, float]]]) -> float:
    """Fixes the fold has judged: taken (accepted, late) or refused by a quality gate."""
    taken = _total(metrics, "gateway_fleet_fixes_folded_total", 'outcome="accepted"')
    taken += _total(metrics, "gateway_fleet_fixes_folded_total", 'outcome="late"')
    # a fix refused one fix later is counted accepted and rejected: once here
    taken -= _total(metrics, "gateway_fleet_fixes_folded_total", 'outcome="taken_back"')
    return taken + _total(metrics, "gateway_fleet_fixes_rejected_total")


def _appended(metrics: dict[str, list[tuple[str, float]]]) -> float:
    return _total(metrics, "gateway_fixes_total", 'outcome="appended"')


async def peak(soak: Soak | PositionSoak, partner: Partner, seconds: float) -> float:
    """The sustainable rate of the mix: requests of a closed loop divided by the time until
    the deliveries they caused have all arrived, or (positions) until the fold has judged
    every fix appended (the async work is part of the cost)."""
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
    while time.perf_counter() < started + 10 * seconds:
        if isinstance(soak, Soak):
            if partner.received >= soak.posts:
                break
        elif _folded(now := await soak.metrics()) >= _appended(now):
            break
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
        "GATEWAY_ADMIN_RATE_LIMIT": "100000",  # throughput, not the admin limit
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
            ready = time.monotonic() + 120  # slower to start under tracemalloc
            while True:
                try:
                    async with session.get(base + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > ready or gateway.poll() is not None:
                    raise SystemExit(f"the gateway did not become ready: see {data_dir}")
                await asyncio.sleep(0.1)
            admin = issue_admin_token(
                KeyRing.from_secret(SECRET),
                tenant="soak",
                role="admin",
                subject="soak",
                ttl=parse_ttl("1d"),
            )
            soak = (PositionSoak if args.mix == "positions" else Soak)(base, session, admin)
            await soak.setup(f"http://127.0.0.1:{partner_port}")
            top = await peak(soak, partner, args.peak_seconds)
            rate = top * args.fraction
            print(
                f"peak {top:.0f} req/s (16 clients); soak at {rate:.0f} req/s "
                f"for {args.minutes} min",
                flush=True,
            )
            db_pid = int((data_dir / "db.pid").read_text())
            if isinstance(soak, PositionSoak):
                await _soak_positions(soak, partner, rate, args, gateway.pid, db_pid)
            else:
                await _soak(soak, partner, rate, args, gateway.pid, db_pid)
    finally:
        await runner.cleanup()
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(60)


async def _open_loop(
    mix: _Mix,
    rate: float,
    args: argparse.Namespace,
    gateway_pid: int,
    db_pid: int,
    header: str,
    row: str,
    columns: Callable[[Window, list[float]], Awaitable[tuple[Any, ...]]],
) -> list[tuple[Any, ...]]:
    """Requests due at fixed times, `rate` a second for `args.minutes`; a row a window, printed
    with `row`: its end (s), requests, errors, p50 and p99 (ms), the RSS of the gateway and of
    the database (MiB), then the mix's own `columns` (given the window and the CPU the gateway
    and the database used in it, % of a core). With --tracemalloc: a snapshot once the soak has
    run 60 s and one at the end, compared."""
    rng = random.Random(2)
    start = time.perf_counter()
    end = start + args.minutes * 60
    pending: set[asyncio.Task[None]] = set()
    rows: list[tuple[Any, ...]] = []
    print(header, flush=True)
    n, next_report = 0, start + args.window
    snapshots: list[Path] = []
    mix.window = Window()
    cpu = (_cpu_seconds(gateway_pid), _cpu_seconds(db_pid))
    while (now := time.perf_counter()) < end:
        due = start + n / rate
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(mix.timed(rng, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
        if time.perf_counter() >= next_report:
            w = mix.window
            used = (_cpu_seconds(gateway_pid), _cpu_seconds(db_pid))
            busy = [(u - c) / args.window * 100 for u, c in zip(used, cpu, strict=True)]
            cpu = used
            line = (
                round(next_report - start),
                len(w.latencies),
                w.errors,
                _pct(w.latencies, 0.5) * 1000,
                _pct(w.latencies, 0.99) * 1000,
                _rss_mib(gateway_pid),
                _rss_mib(db_pid),
                *await columns(w, busy),
            )
            rows.append(line)
            print(row.format(*line), flush=True)
            mix.window = Window()
            next_report += args.window
            if args.tracemalloc and not snapshots and next_report - start > 60:
                snapshots.append(await _snapshot(args.tracemalloc, gateway_pid, 1))
    await asyncio.gather(*pending)
    if args.tracemalloc:
        snapshots.append(await _snapshot(args.tracemalloc, gateway_pid, len(snapshots) + 1))
        _compare(snapshots[0], snapshots[-1], _rss_mib(gateway_pid))
    return rows


def _summary(rows: list[tuple[Any, ...]]) -> str:
    """What every mix's summary starts with: requests, errors, p99 and RSS over the run."""
    total = sum(r[1] for r in rows)
    errors = sum(r[2] for r in rows)
    return (
        f"\nsummary: {total} requests, {errors} errors ({errors / max(total, 1):.4%}); "
        f"p99 first/last window {rows[0][4]:.1f}/{rows[-1][4]:.1f} ms, "
        f"median of windows {statistics.median(r[4] for r in rows):.1f} ms; "
        f"RSS gateway {rows[0][5]:.0f} -> {rows[-1][5]:.0f} MiB, "
        f"database {rows[0][6]:.0f} -> {rows[-1][6]:.0f} MiB; "
    )


async def _soak(
    soak: Soak,
    partner: Partner,
    rate: float,
    args: argparse.Namespace,
    gateway_pid: int,
    db_pid: int,
) -> None:
    header = (
        "window_s  requests  errors  p50_ms  p99_ms  rss_gateway_mib  rss_db_mib  "
        "relay_lag_s  delivery_lag_p99_s  cpu_gateway_pct  cpu_db_pct"
    )

    async def columns(window: Window, busy: list[float]) -> tuple[Any, ...]:
        lag = await soak.relay_lag()
        delivered, partner.window = partner.window, Window()
        return (lag, _pct(delivered.delivery_lags, 0.99), *busy)

    partner.window = Window()
    rows = await _open_loop(soak, rate, args, gateway_pid, db_pid, header, _ROW, columns)
    print(
        _summary(rows) + f"relay lag max {_finite_max(r[7] for r in rows):.2f} s; "
        f"delivery lag p99 max {_finite_max(r[8] for r in rows):.2f} s; "
        f"{partner.received} deliveries received",
        flush=True,
    )


async def _soak_positions(
    soak: PositionSoak,
    partner: Partner,
    rate: float,
    args: argparse.Namespace,
    gateway_pid: int,
    db_pid: int,
) -> None:
    """The open loop of the position mix; its own columns (see the module's docstring)."""
    received = partner.received
    metrics = await soak.metrics()

    async def columns(window: Window, busy: list[float]) -> tuple[Any, ...]:
        nonlocal received, metrics
        latest = await soak.metrics()
        lag_mean, lag_p99 = _fold_lag(metrics, latest) if latest else (math.nan,) * 2
        metrics = latest or metrics
        events, received = partner.received - received, partner.received
        return (
            *busy,
            lag_mean,
            lag_p99,
            _total(latest, "gateway_fleet_fold_oldest_waiting_seconds") if latest else math.nan,
            _appended(latest) if latest else math.nan,
            events,
        )

    rows = await _open_loop(
        soak, rate, args, gateway_pid, db_pid, _POSITION_HEADER, _POSITION_ROW, columns
    )
    caught_up = time.perf_counter() + 60
    while _folded(latest := await soak.metrics()) < _appended(latest):
        if time.perf_counter() > caught_up:
            break
        await asyncio.sleep(0.2)
    outcomes = ", ".join(
        f"{labels.split(chr(34))[1]} {v:.0f}"
        for labels, v in latest.get("gateway_fleet_fixes_folded_total", [])
    )
    types = ", ".join(f"{k} {v}" for k, v in sorted(partner.types.items()))
    print(
        _summary(rows) + f"fold lag p99 max {_finite_max(r[10] for r in rows):.3f} s "
        f"(bucket bound); "
        f"{_appended(latest):.0f} fixes stored, {_folded(latest):.0f} judged by the fold "
        f"(folded: {outcomes or 'none'}; "
        f"refused by a gate {_total(latest, 'gateway_fleet_fixes_rejected_total'):.0f}); "
        f"events received: {types or 'none'}",
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
    parser.add_argument("--mix", choices=["entities", "positions"], default="entities")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--fraction", type=float, default=0.7)
    parser.add_argument("--window", type=float, default=30)
    parser.add_argument("--peak-seconds", type=float, default=20)
    parser.add_argument("--tracemalloc", metavar="DIR", help="snapshot the gateway's memory")
    parser.add_argument("--frames", type=int, default=8, help="tracemalloc frames (with DIR)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
