"""An outbound request that may change something (POST, PUT, DELETE) is sent once: a
connection the partner drops before answering is the call's `reset`; a read (GET, HEAD,
OPTIONS) is sent once more, as HTTP clients do (gateway/outbound/connection.py
`single_send`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from gateway.outbound.sender import OutboundRequest, Sender
from gateway.outbound.ssrf import OutboundPolicy
from gateway.outbound.verdict import Verdict

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@contextlib.asynccontextmanager
async def _hanging_up_once(heads: list[bytes]) -> AsyncIterator[str]:
    """A partner that reads the first request whole (an ERP that processed it) and hangs up
    without answering; any later request is answered 200."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            heads.append(head)
            if len(heads) > 1:
                writer.write(OK)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/estoque/baixa"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_a_write_whose_connection_drops_is_sent_once_and_is_a_reset(method: str) -> None:
    """aiohttp sent a PUT or DELETE again, on a new connection, when the partner dropped the
    first after reading it: a stock write-off by PUT was made twice, the caller told 200, one
    attempt recorded, the breaker never told. A POST was a `reset`, and so is every write
    now: the delivery's schedule retries it, a proxy call is a 502."""
    heads: list[bytes] = []
    body = b'{"sku": "X1", "qtd": 1}'
    policy = OutboundPolicy.from_entries(["127.0.0.1"])
    async with Sender(policy, connect_timeout=1) as sender, _hanging_up_once(heads) as url:
        outcome = await sender.send(
            OutboundRequest(method, url, body=body, timeout=5), partner_id="erp"
        )
        await asyncio.sleep(0.1)  # a re-send, were there one, reaches the partner
    assert len(heads) == 1, heads
    assert (outcome.status, outcome.error, outcome.verdict) == (None, "reset", Verdict.RETRY)
    assert outcome.message == "connection lost: ServerDisconnectedError: Server disconnected"


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
async def test_a_read_whose_connection_drops_is_sent_once_more_and_answered(method: str) -> None:
    """A read changes nothing at the partner (RFC 9110 §9.2.1): cut before its answer (most
    often a kept-alive connection the partner closed as the request went), it is sent once
    more on a new connection, as every HTTP client does, and the caller gets the answer."""
    heads: list[bytes] = []
    policy = OutboundPolicy.from_entries(["127.0.0.1"])
    async with Sender(policy, connect_timeout=1) as sender, _hanging_up_once(heads) as url:
        outcome = await sender.send(OutboundRequest(method, url, timeout=5), partner_id="erp")
    assert len(heads) == 2, heads
    assert (outcome.status, outcome.error) == (200, None)


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_a_kept_alive_connection_dropped_after_the_request_is_a_reset_too(
    method: str,
) -> None:
    """The same drop on a connection the sender kept from the previous answer (where aiohttp's
    re-send was meant for a keep-alive race): a write went once, the outcome is `reset`."""
    heads: list[bytes] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                heads.append(await reader.readuntil(b"\r\n\r\n"))
                if len(heads) == 2:
                    return  # the second request read, then the partner hangs up
                writer.write(OK)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/estoque"
    policy = OutboundPolicy.from_entries(["127.0.0.1"])
    try:
        async with Sender(policy, connect_timeout=1) as sender:
            first = await sender.send(OutboundRequest(method, url, timeout=5), partner_id="erp")
            second = await sender.send(OutboundRequest(method, url, timeout=5), partner_id="erp")
            await asyncio.sleep(0.1)
    finally:
        server.close()
        await server.wait_closed()
    assert (first.status, second.status, second.error) == (200, None, "reset")
    assert (len(heads), connections) == (2, 1)
