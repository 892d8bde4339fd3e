"""An open-loop, fixed-rate load generator (wrk has no -R and wrk2 is not packaged in Debian).

    python bench/fixed_rate.py URL --rate 500 --duration 10 [--token T] [--payload FILE]

Request i is due at start + i/rate whatever happened to the earlier ones; its latency is measured
from that due time, so a server that stalls is not excused by a client that waited for it
(no coordinated omission). Posts the benchmark payload with the plate varied over 1,000
vehicles, like post_position.lua, over keep-alive HTTP/1.1 connections (one request in flight
per connection, a new connection when all are busy). The client is a bare asyncio protocol with
pre-encoded requests and callbacks: on 2 cores an aiohttp client cost more CPU than the server
it measured. `--fresh-times` makes each request a new fix of a vehicle that drives (post_fix.lua's
tracks: a position trigger stores a resent fix once, and refuses implausible ones).
Prints one JSON line: rate, sent, ok, errors, p50/p99/max µs. `--trace FILE` also writes every
request as a CSV line (when it was due, wall clock in seconds; its latency in ms; its status,
0 for a failed connection), to line the tail up with what the server did at those instants.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import PLATES, SHARED_BENCH

FIX_TIME = "2026-11-29T03:40:00Z"  # the device time in position_payload.json

MAX_CONNECTIONS = 256


class Load:
    """Callbacks only (no task per request): idle connections, requests waiting for one."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Connection] = []
        self.waiting: deque[tuple[float, bytes]] = deque()
        self.opened = 0
        self.latencies: list[float] = []
        self.errors = 0
        self.answers: list[tuple[float, float, int]] = []  # (due, latency, status), --trace

    def submit(self, due: float, request: bytes) -> None:
        if self.idle:
            self.idle.pop().send(due, request)
            return
        self.waiting.append((due, request))
        if self.opened < MAX_CONNECTIONS:
            self.opened += 1
            task = asyncio.get_running_loop().create_task(self.open())
            task.add_done_callback(lambda t: t.exception() and self.failed(None))

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: Connection(self), self.host, self.port)
        self.release(conn)

    def release(self, conn: Connection) -> None:
        if self.waiting:
            conn.send(*self.waiting.popleft())
        else:
            self.idle.append(conn)

    def answered(self, conn: Connection, status: int, due: float) -> None:
        latency = time.perf_counter() - due
        self.answers.append((due, latency, status))
        if status >= 300:
            self.errors += 1
        else:
            self.latencies.append(latency)
        self.release(conn)

    def failed(self, conn: Connection | None, due: float | None = None) -> None:
        if due is not None:
            self.answers.append((due, time.perf_counter() - due, 0))
        self.errors += 1
        self.opened -= 1


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.buffer = b""
        self.due: float | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.due is not None:
            due, self.due = self.due, None
            self.load.failed(self, due)

    def send(self, due: float, request: bytes) -> None:
        if self.transport is None:
            self.load.failed(self, due)
            return
        self.due = due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        if b"transfer-encoding: chunked" in head:
            if not self.buffer.endswith(b"0\r\n\r\n"):
                return
        else:
            start = head.find(b"content-length:")
            length = int(head[start + 15 : head.find(b"\r\n", start)]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
        status, self.buffer = int(self.buffer[9:12]), b""
        due, self.due = self.due, None
        if due is not None:
            self.load.answered(self, status, due)


RADIUS_M, SPEED_MS, DEGREE_M = 2000.0, 15.0, 111_195.0  # as in post_fix.lua


def place(i: int, ms: int) -> tuple[str, str]:
    """Where vehicle `i` is at `ms` (Unix milliseconds): post_fix.lua's circle (keep them in
    step, so that a vehicle's track goes on from one tool to the other)."""
    clat = -23.55052 + (i % 40) * 0.05
    clon = -46.633308 + (i // 40) * 0.05
    angle = i + (ms / 1000.0) * SPEED_MS / RADIUS_M
    lat = clat + RADIUS_M * math.sin(angle) / DEGREE_M
    lon = clon + RADIUS_M * math.cos(angle) / (DEGREE_M * math.cos(math.radians(clat)))
    return f"{lat:.6f}", f"{lon:.6f}"


def fresh_times(payload: str, count: int, rate: float) -> list[str]:
    """`count` payloads at `rate` a second, each a new fix of a random one of the 1,000
    vehicles, as post_fix.lua makes them: device time the time it is due to be sent (at
    least 0.5 s after the vehicle's previous fix), place on the vehicle's circle at that
    time. Position triggers store a resent fix once, and refuse implausible tracks."""
    start = int(time.time() * 1000)
    last: dict[int, int] = {}
    out = []
    for n in range(count):
        i = random.randrange(len(PLATES))
        ms = max(start + int(n * 1000 / rate), last.get(i, 0) + 500)
        last[i] = ms
        at = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
        lat, lon = place(i, ms)
        body = payload.replace(FIX_TIME, at.replace("+00:00", "Z")).replace("ABC1D23", PLATES[i])
        out.append(body.replace("-23.55052", lat).replace("-46.633308", lon))
    return out


async def run(
    url: str,
    rate: float,
    duration: float,
    token: str,
    payload: str,
    fresh: bool = False,
    trace: Path | None = None,
) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
    )
    total = int(rate * duration)
    if fresh:
        bodies = fresh_times(payload, total, rate)
    else:
        bodies = [payload.replace("ABC1D23", plate) for plate in PLATES]
    requests = [
        f"{head}Content-Length: {len(body.encode())}\r\n\r\n".encode() + body.encode()
        for body in bodies
    ]
    load = Load(host, port)
    start, wall = time.perf_counter(), time.time()
    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and start + i / rate <= now:
            request = requests[i] if fresh else random.choice(requests)
            load.submit(start + i / rate, request)
            i += 1
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
    sent_for = time.perf_counter() - start
    deadline = time.perf_counter() + 10
    while len(load.latencies) + load.errors < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    latencies = sorted(load.latencies)
    if trace is not None:
        with trace.open("w") as out:
            out.write("due_s,latency_ms,status\n")
            for due, latency, status in sorted(load.answers):
                out.write(f"{wall + due - start:.4f},{latency * 1e3:.2f},{status}\n")

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6 if latencies else 0

    return {
        "target_rate": rate,
        "rate": total / sent_for,
        "sent": total,
        "ok": len(latencies),
        "errors": total - len(latencies),
        "connections": load.opened,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "max_us": latencies[-1] * 1e6 if latencies else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="open-loop fixed-rate POST load")
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--token", default="")
    parser.add_argument("--payload", default=str(SHARED_BENCH / "position_payload.json"))
    parser.add_argument(
        "--fresh-times", action="store_true", help="a new device time per request (positions)"
    )
    parser.add_argument("--trace", type=Path, help="write every request's latency to this CSV")
    args = parser.parse_args()
    payload = Path(args.payload).read_text()
    figures = run(
        args.url, args.rate, args.duration, args.token, payload, args.fresh_times, args.trace
    )
    print(json.dumps(asyncio.run(figures)))


if __name__ == "__main__":
    main()
