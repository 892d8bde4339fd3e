"""Malformed HTTP that aiohttp's parser refuses before any middleware still gets a problem
document and one log line (SPEC §3: every error is application/problem+json)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gateway.web.server import GatewayRunner
from tests.processes import free_port


@pytest.fixture
async def served(make_app: Any) -> AsyncIterator[int]:
    runner = GatewayRunner(make_app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


async def test_url_over_8190_bytes_is_a_414_problem(served: int) -> None:
    path = "/healthz?pad=" + "x" * 9000
    status, headers, body = await _raw(served, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 414 and headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == 414 and body["title"] == "URI too long"


async def test_nul_in_a_header_is_a_400_problem_logged_once_without_traceback(
    served: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        status, headers, body = await _raw(
            served, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n"
        )
    assert status == 400 and headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == 400 and "malformed HTTP request" in body["detail"]
    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(refusals) == 1 and refusals[0].exc_info is None
    assert refusals[0].levelno == logging.WARNING


async def test_oversized_header_is_a_431_problem(served: int) -> None:
    request = f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'y' * 9000}\r\n\r\n".encode()
    status, _, body = await _raw(served, request)
    assert status == 431 and body["status"] == 431
