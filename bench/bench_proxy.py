"""Proxy action latency (SPEC §8: a proxy action adds under 0.5 ms median over calling the
partner directly).

    python bench/bench_proxy.py [--requests 2000] [--warmup 300] [--calls proxy,entity]
                                [--bare] [--floor] [--idle 3] [--gateway-src DIR ...]
                                [--json FILE]

One run, side by side: a local partner (its own process) answers the current-driver lookup
of mappings/hr-current-driver.yaml; `gateway serve` (its own process, embedded SecantusDB)
has that partner and a proxy action using the mapping both ways. The client sends one
request at a time, in rounds: direct, then the others in a shuffled order

- direct:  GET partner/veiculos/{plate}/condutor-atual with the bearer token;
- proxy:   POST gateway/api/v1/actions/{id}/invoke {"payload": {"entity": {"plate"}}}
           (admin JWT check, request mapping, guarded send, response mapping, answer);
- entity:  the same with {"entity": {"type": "vehicle", "key": plate}}, which also reads the
           vehicle from the database (one indexed find_one, ~2 ms on this embedded DB);
- bare (with --bare): the floor, a bare aiohttp handler in its own process that parses the
           JSON, GETs the partner through a pooled ClientSession and answers its JSON, on
           asyncio's loop;
- bare-uvloop and relay (with --floor): the same bare handler on uvloop (the gateway's loop),
           and what the two extra loopback hops cost alone: the direct GET through a process
           that only copies bytes both ways (uvloop, one partner connection per client
           connection, no HTTP parsing),

and prints the median and p99 of each, the added medians, each server's CPU per call
(user + system, its calls of both kinds together), and the database operations per gateway
call (serverStatus opcounters during the calls, less the rate counted over `--idle` seconds
before them: the gateways' background jobs read while idle too). The order is shuffled
because a process called right after another finds the caches of a 2-core machine warmer or
colder.

`--gateway-src DIR` (repeatable) adds a gateway run from another source tree (a directory
holding gateway/, e.g. `git worktree add /tmp/proxy-base main`), with its own database on the
same embedded server and the same partner; its calls are named proxy@NAME and entity@NAME
(NAME: the directory's name) and alternate with this checkout's, so a before/after is
measured in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import uvloop
from aiohttp import web
from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.store.embedded import EmbeddedServer  # noqa: E402

SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789abcdef"
PLATE = "ABC1D23"
DRIVER = (ROOT / "tests/data/partner_payloads/driver_lookup_response.json").read_bytes()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_partner(port: int) -> None:
    """The partner: answers the lookup, as fast as aiohttp can."""

    async def lookup(request: web.Request) -> web.Response:
        return web.Response(body=DRIVER, content_type="application/json")

    app = web.Application()
    app.router.add_get("/veiculos/{plate}/condutor-atual", lookup)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def run_bare_proxy(port: int, partner: str, loop: str) -> None:
    """The floor: a bare aiohttp handler that parses the JSON, GETs the partner through one
    pooled ClientSession, parses its JSON and answers it (no auth, mapping or guard), on
    `loop` (asyncio or uvloop)."""

    async def session_ctx(app: web.Application) -> Any:
        app["session"] = aiohttp.ClientSession()
        yield
        await app["session"].close()

    async def invoke(request: web.Request) -> web.Response:
        plate = (await request.json())["payload"]["entity"]["plate"]
        url = f"{partner}/veiculos/{plate}/condutor-atual"
        headers = {"Authorization": "Bearer hr-token"}
        async with request.app["session"].get(url, headers=headers) as response:
            data = await response.json()
        return web.json_response({"status": response.status, "data": data})

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/invoke", invoke)
    event_loop = uvloop.new_event_loop() if loop == "uvloop" else asyncio.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=event_loop)


def run_relay(port: int, partner_port: int) -> None:
    """The hops alone: each client connection gets its own partner connection, and bytes are
    copied both ways as they come (uvloop; both sockets TCP_NODELAY, as asyncio sets)."""

    class Upstream(asyncio.Protocol):
        def __init__(self, down: asyncio.Transport) -> None:
            self.down = down

        def data_received(self, data: bytes) -> None:
            self.down.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.down.close()

    class Downstream(asyncio.Protocol):
        up: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.down, self.early = cast(asyncio.Transport, transport), bytearray()
            asyncio.get_running_loop().create_task(self.connect())

        async def connect(self) -> None:
            loop = asyncio.get_running_loop()
            up, _ = await loop.create_connection(
                lambda: Upstream(self.down), "127.0.0.1", partner_port
            )
            self.up = up
            if self.early:
                up.write(bytes(self.early))

        def data_received(self, data: bytes) -> None:
            if self.up is None:
                self.early += data
            else:
                self.up.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.up is not None:
                self.up.close()

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Downstream, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(serve())


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Gateway:
    suffix: str  # "" for this checkout, "@DIR" for another tree
    src: Path | None
    url: str = ""
    token: str = ""
    proc: subprocess.Popen[bytes] | None = None
    calls: int = 0
    cpu: float = 0.0
    env: dict[str, str] = field(default_factory=dict)


def start_gateway(gw: Gateway, index: int, db: EmbeddedServer, tmp: str) -> None:
    port = free_port()
    gw.url = f"http://127.0.0.1:{port}"
    gw.env = {
        **os.environ,
        "MONGODB_URI": db.uri,
        "GATEWAY_PORT": str(port),
        "GATEWAY_SECRET_KEY": SECRET_KEY,
        "GATEWAY_ADMIN_RATE_LIMIT": "100000",  # throughput, not the admin limit
        "GATEWAY_OUTBOUND_ALLOW": "127.0.0.1",
        "GATEWAY_DATABASE": f"bench_proxy_{index}",
        "GATEWAY_DATA_DIR": str(Path(tmp) / f"gateway{index}"),
        "GATEWAY_LOG_LEVEL": "WARNING",
    }
    if gw.src is not None:
        gw.env["PYTHONPATH"] = str(gw.src)
    cwd = gw.src or ROOT
    gw.token = subprocess.run(
        [sys.executable, "-m", "gateway", "admin-token", "--tenant", "bench"],
        env=gw.env,
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    gw.proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"], env=gw.env, cwd=cwd, stderr=subprocess.DEVNULL
    )


async def wait_ready(session: aiohttp.ClientSession, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as response:
                if response.status < 500:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout:.0f} s")


async def setup(
    session: aiohttp.ClientSession, gateway: str, partner: str, headers: dict[str, str]
) -> str:
    async def post(path: str, **kwargs: Any) -> Any:
        kwargs["headers"] = {**headers, **kwargs.get("headers", {})}
        async with session.post(gateway + path, **kwargs) as response:
            body = await response.json()
            assert response.status in (200, 201), body
            return body

    mapping = (ROOT / "mappings/hr-current-driver.yaml").read_bytes()
    await post(
        "/api/v1/mappings", data=mapping, headers={**headers, "Content-Type": "application/yaml"}
    )
    hr = await post(
        "/api/v1/partners",
        json={
            "name": "RH",
            "base_url": partner,
            "auth": {"type": "none"},
            "secrets": {"hr_token": "hr-token"},
            "max_concurrency": 50,
        },
    )
    action = await post(
        "/api/v1/actions",
        json={
            "name": "current driver",
            "partner_id": hr["id"],
            "method": "GET",
            "path": "/veiculos/{plate}/condutor-atual",
            "mode": "proxy",
            "request_mapping": "hr-current-driver",
            "response_mapping": "hr-current-driver",
        },
    )
    await post("/api/v1/entities/vehicle", json={"plate": PLATE})
    return str(action["id"])


Call = Callable[[], AbstractAsyncContextManager[aiohttp.ClientResponse]]


def db_operations(uri: str) -> int:
    """The database's CRUD operations so far (serverStatus opcounters)."""
    with MongoClient(uri) as client:
        counters = client.admin.command("serverStatus")["opcounters"]
    return sum(counters[k] for k in ("insert", "query", "update", "delete", "getmore"))


async def measure(
    args: argparse.Namespace,
    gateways: list[Gateway],
    peers: list[Gateway],
    partner: str,
    db_uri: str,
) -> dict[str, float]:
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, partner + "/veiculos/x/condutor-atual")
        calls: dict[str, tuple[Call, Gateway | None]] = {
            "direct": (
                lambda: session.get(
                    f"{partner}/veiculos/{PLATE}/condutor-atual",
                    headers={"Authorization": "Bearer hr-token"},
                ),
                None,
            )
        }
        for peer in peers:
            await wait_ready(session, peer.url + "/")
            if peer.suffix == "relay":
                calls["relay"] = (
                    lambda url=peer.url: session.get(
                        f"{url}/veiculos/{PLATE}/condutor-atual",
                        headers={"Authorization": "Bearer hr-token"},
                    ),
                    peer,
                )
            else:
                calls[peer.suffix] = (
                    lambda url=peer.url: session.post(
                        f"{url}/invoke", json={"payload": {"entity": {"plate": PLATE}}}
                    ),
                    peer,
                )
        for gw in gateways:
            await wait_ready(session, gw.url + "/healthz")
            headers = {"Authorization": f"Bearer {gw.token}"}
            invoke = (
                f"{gw.url}/api/v1/actions/{await setup(session, gw.url, partner, headers)}/invoke"
            )
            bodies = {
                "proxy": {"payload": {"entity": {"plate": PLATE}}},
                "entity": {"entity": {"type": "vehicle", "key": PLATE}},
            }
            for kind in args.calls.split(","):
                body = bodies[kind]
                calls[kind + gw.suffix] = (
                    lambda invoke=invoke, headers=headers, body=body: session.post(
                        invoke, headers=headers, json=body
                    ),
                    gw,
                )
        samples: dict[str, list[float]] = {name: [] for name in calls}
        servers = [*peers, *gateways]
        # The gateways' own background work (relay, jobs) reads the database while idle too:
        # its rate, measured now, is taken out of what the calls' phase counts.
        idle_ops, idle_started = await asyncio.to_thread(db_operations, db_uri), time.monotonic()
        await asyncio.sleep(args.idle)
        idle_rate = (await asyncio.to_thread(db_operations, db_uri) - idle_ops) / (
            time.monotonic() - idle_started
        )
        first, *others = calls.items()
        shuffle = random.Random(12).shuffle
        for i in range(args.warmup + args.requests):
            if i == args.warmup:
                for gw in servers:
                    assert gw.proc is not None
                    gw.cpu = -cpu_seconds(gw.proc.pid)
                ops = await asyncio.to_thread(db_operations, db_uri)
                ops_started = time.monotonic()
            shuffle(others)  # none always follows the same other (whose caches it would share)
            for name, (call, target) in [first, *others]:
                started = time.perf_counter()
                async with call() as response:
                    await response.read()
                    assert response.status == 200, (name, response.status)
                if i >= args.warmup:
                    samples[name].append((time.perf_counter() - started) * 1000)
                    if target is not None:
                        target.calls += 1
        for gw in servers:
            assert gw.proc is not None
            gw.cpu += cpu_seconds(gw.proc.pid)
        ops = await asyncio.to_thread(db_operations, db_uri) - ops
        seconds = time.monotonic() - ops_started
    medians = report(samples, servers)
    gateway_calls = sum(gw.calls for gw in gateways)
    print(
        f"database: {ops} operations in the {seconds:.1f} s of calls, {idle_rate:.1f}/s when "
        f"idle ({args.idle:g} s before): {(ops - idle_rate * seconds) / gateway_calls:.3f} "
        f"per gateway call beyond the idle rate ({gateway_calls} calls, every gateway's)"
    )
    return medians


def report(samples: dict[str, list[float]], gateways: list[Gateway]) -> dict[str, float]:
    medians = {name: statistics.median(values) for name, values in samples.items()}
    for name, values in samples.items():
        p99 = statistics.quantiles(values, n=100)[98]
        print(
            f"{name:14s} median {medians[name]:.3f} ms   p99 {p99:.3f} ms"
            f"   ({len(values)} requests)"
        )
    direct = medians["direct"]
    for name in medians:
        if name == "direct":
            continue
        added = medians[name] - direct
        print(
            f"{name} adds {added:.3f} ms median over direct "
            f"(ratio {medians[name] / direct:.2f}x){'  <0.5 ms: ok' if added < 0.5 else ''}"
        )
    for gw in gateways:
        name = f"gateway{gw.suffix}" if gw.suffix in ("", "@") or gw.src else gw.suffix
        print(f"{name} CPU {gw.cpu / gw.calls * 1e6:.0f} µs per call ({gw.calls} calls)")
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--calls", default="proxy,entity", help="proxy, entity or both")
    parser.add_argument(
        "--idle", type=float, default=3.0, help="seconds of idle database counting before"
    )
    parser.add_argument(
        "--bare", action="store_true", help="also measure the floor: a bare aiohttp proxy"
    )
    parser.add_argument(
        "--gateway-src",
        type=Path,
        action="append",
        default=[],
        help="also measure a gateway run from this source tree (repeatable)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure the bare proxy on uvloop and a byte relay (the hops alone)",
    )
    parser.add_argument("--partner-only", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bare-proxy-only", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--relay-only", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the medians to this file")
    args = parser.parse_args()
    if args.partner_only:
        run_partner(args.partner_only)
        return 0
    if args.bare_proxy_only:
        port, partner_url, loop = args.bare_proxy_only
        run_bare_proxy(int(port), partner_url, loop)
        return 0
    if args.relay_only:
        run_relay(*args.relay_only)
        return 0
    gateways = [Gateway("", None)] + [
        Gateway(f"@{src.resolve().name}", src.resolve()) for src in args.gateway_src
    ]
    with tempfile.TemporaryDirectory() as tmp:
        db = EmbeddedServer(Path(tmp) / "db")
        db.start()
        partner_port = free_port()
        partner_url = f"http://127.0.0.1:{partner_port}"
        partner = subprocess.Popen([sys.executable, __file__, "--partner-only", str(partner_port)])
        peers: list[Gateway] = []
        for name, wanted, options in (
            ("bare", args.bare, ["--bare-proxy-only", partner_url, "asyncio"]),
            ("bare-uvloop", args.floor, ["--bare-proxy-only", partner_url, "uvloop"]),
            ("relay", args.floor, ["--relay-only", str(partner_port)]),
        ):
            if wanted:
                port = free_port()
                peer = Gateway(name, None, url=f"http://127.0.0.1:{port}")
                options.insert(1, str(port))
                peer.proc = subprocess.Popen([sys.executable, __file__, *options])
                peers.append(peer)
        try:
            for index, gw in enumerate(gateways):
                start_gateway(gw, index, db, tmp)
            medians = asyncio.run(measure(args, gateways, peers, partner_url, db.uri))
            if args.json:
                args.json.write_text(json.dumps({"median_ms": medians}))
        finally:
            for gw in [*peers, *gateways]:
                if gw.proc is not None:
                    gw.proc.terminate()
                    gw.proc.wait(20)
            for proc in [partner]:
                proc.terminate()
                proc.wait(20)
            db.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
