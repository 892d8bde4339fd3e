"""A partner's answer framed by both `Transfer-Encoding: chunked` and `Content-Length` (an
app setting the length behind a server that chunks anyway): read as chunked, the length
ignored, as RFC 9112 §6.3 says (gateway/outbound/connection.py `_framed`)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.outbound.sender import Sender
from gateway.outbound.verdict import Verdict
from tests.partner_double import plate_post as _post
from tests.partner_double import raw_partner, raw_sender

BODY = b'{"received": true}'
CHUNKED = b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"
TE = b"Transfer-Encoding: chunked\r\n"
CL = b"Content-Length: %d\r\n" % len(CHUNKED)
START = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"


sender = raw_sender  # the fixture, under the name the tests take


@pytest.mark.parametrize(
    ("reply", "status", "verdict"),
    [
        ([START % 200 + TE + CL + b"\r\n" + CHUNKED], 200, Verdict.SUCCESS),
        ([START % 200 + CL + TE + b"\r\n" + CHUNKED], 200, Verdict.SUCCESS),
        (
            [START % 503 + b"content-length: 3\r\ntransfer-encoding: CHUNKED\r\n\r\n" + CHUNKED],
            503,
            Verdict.RETRY,
        ),
        ([START % 200 + TE + CL + b"\r\n", CHUNKED], 200, Verdict.SUCCESS),
        (
            [START % 200 + TE + CL[:9], CL[9:] + b"\r\n" + CHUNKED[:5], CHUNKED[5:]],
            200,
            Verdict.SUCCESS,
        ),
    ],
    ids=["te-then-cl", "cl-then-te", "lowercase-503", "body-in-a-later-read", "head-in-two-reads"],
)
async def test_a_chunked_answer_naming_a_length_too_is_read_as_chunked(
    sender: Sender, reply: list[bytes], status: int, verdict: Verdict
) -> None:
    """aiohttp's parser refused the whole head ("Content-Length can't be present with
    Transfer-Encoding"): the status lost, a delivery the partner took was sent again on its
    whole schedule, each send a failure against its breaker, a proxy call a 502."""
    async with raw_partner(reply) as url:
        outcome = await sender.send(_post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (status, None, verdict)
    assert outcome.json_body == {"received": True}


async def test_a_body_framed_by_its_length_under_a_chunked_head_keeps_its_status(
    sender: Sender,
) -> None:
    """Chunked wins: a body that is not chunked after all is refused as such a body is, the
    status kept."""
    reply = START % 200 + TE + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
    async with raw_partner(reply) as url:
        outcome = await sender.send(_post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (
        200,
        "invalid_response",
        Verdict.SUCCESS,
    )
    assert outcome.message == "invalid HTTP answer body: Invalid character in chunk size"


async def test_the_connection_of_such_an_answer_is_not_kept(sender: Sender) -> None:
    """Its partner's stack got the framing wrong: nothing after it on that connection is
    trusted. A second request goes on a new connection."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(len(_post("x").body or b""))
                writer.write(START % 200 + TE + CL + b"\r\n" + CHUNKED)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    try:
        outcomes = [await sender.send(_post(url), partner_id="erp") for _ in range(2)]
    finally:
        server.close()
        await server.wait_closed()
    assert [(o.status, o.error) for o in outcomes] == [(200, None), (200, None)]
    assert connections == 2
