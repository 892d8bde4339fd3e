"""A client that takes no bytes of its answer loses its connection at the write deadline
(`GATEWAY_WRITE_TIMEOUT_SECONDS`, gateway/web/server.py): aiohttp has no write timeout, and a
client that never read `/openapi.json` (436 KB, no login) held the connection, its handler
and the unsent answer for as long as it ACKed zero-window probes."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from gateway.web.server import GatewayRunner

ASK = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(params=["wan", "loopback"])
async def served(
    make_app: Callable[..., web.Application], request: pytest.FixtureRequest
) -> AsyncIterator[int]:
    """The gateway, its write deadline 1 s. `wan`: its connections' send buffers as small as
    over a WAN (accepted connections inherit the listener's): the answer waits in the
    gateway. `loopback`: the kernel's buffers take a whole 436 KB answer, watched from its end
    while the kernel holds some of it."""
    runner = GatewayRunner(make_app(), access_log=None, write_timeout=1.0)
    await runner.setup()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if request.param == "wan":
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    listener.bind(("127.0.0.1", 0))
    await web.SockSite(runner, listener).start()
    yield listener.getsockname()[1]
    await runner.cleanup()


async def _asking(
    port: int, receive_buffer: int | None = None, segment: int | None = None
) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # before connecting: the window the client offers
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    if segment is not None:  # a WAN's segments, not loopback's 64 KB
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, segment)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, ASK)
    return sock


async def _read(sock: socket.socket, quiet: float) -> tuple[bytes, bool]:
    """What comes on `sock` until it ends (True) or nothing comes for `quiet` s (False)."""
    loop, got = asyncio.get_running_loop(), bytearray()
    while True:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), quiet)
        except TimeoutError:
            return bytes(got), False
        except ConnectionError:
            return bytes(got), True
        if not data:
            return bytes(got), True
        got += data


def _answer_size(answer: bytes) -> int:
    head, _, _ = answer.partition(b"\r\n\r\n")
    length = next(
        line.split(b":", 1)[1]
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return len(head) + 4 + int(length)


async def test_a_client_that_never_reads_its_answer_loses_the_connection(served: int) -> None:
    whole = await _asking(served)
    try:
        answer, _ = await _read(whole, quiet=2)
    finally:
        whole.close()
    size = _answer_size(answer)
    assert len(answer) == size > 300_000  # a reader that reads gets it all
    stuck = await _asking(served, receive_buffer=4096)
    try:
        await asyncio.sleep(3.5)  # reads nothing: past the deadline (1 s, looked at each 0.25)
        started = time.monotonic()
        got, ended = await _read(stuck, quiet=2)
    finally:
        stuck.close()
    assert ended and time.monotonic() - started < 2, (len(got), ended)
    assert len(got) < size


async def test_a_client_reading_slowly_gets_its_whole_answer(served: int) -> None:
    """Every pause shorter than the deadline: bytes taken restart it."""
    sock = await _asking(served, receive_buffer=65536)
    loop, got = asyncio.get_running_loop(), bytearray()
    try:
        while b"\r\n\r\n" not in got or len(got) < _answer_size(bytes(got)):
            await asyncio.sleep(0.6)
            data: Any = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 2)
            assert data, len(got)
            got += data
    finally:
        sock.close()
    assert len(got) == _answer_size(bytes(got))


@pytest.mark.parametrize(("window", "per_tick"), [(16384, 8192), (65536, 2048)])
async def test_a_client_taking_bytes_steadily_but_slowly_is_not_cut(
    served: int, window: int, per_tick: int, caplog: pytest.LogCaptureFixture
) -> None:
    """8-32 KB/s through a small window, never a pause as long as the deadline: the window
    sits at zero most of the time, opening a little each time the client reads. Neither the
    transport's buffer (it shrinks only when a third of the kernel's is free) nor the
    kernel's zero-window rule (TCP_USER_TIMEOUT) tells that from a client that reads nothing;
    the bytes the client acknowledges do."""
    caplog.set_level("DEBUG", logger="gateway.access")
    sock = await _asking(served, receive_buffer=window, segment=1460)
    loop, got, started = asyncio.get_running_loop(), 0, time.monotonic()
    try:
        while time.monotonic() - started < 6:  # 6 times the deadline
            await asyncio.sleep(0.25)
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, per_tick), 2)
            except ConnectionError as exc:
                data, why = b"", repr(exc)
            else:
                why = "closed"
            said = [r.getMessage() for r in caplog.records if "took no bytes" in r.getMessage()]
            assert data, (why, got, round(time.monotonic() - started, 1), said)
            got += len(data)
    finally:
        sock.close()
