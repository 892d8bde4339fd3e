"""A partner's answer framed by both `Transfer-Encoding: chunked` and `Content-Length` (an
app setting the length behind a server that chunks anyway): read as chunked, the length
ignored, as RFC 9112 §6.3 says (gateway/outbound/connection.py `_framed`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

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


JSON = b'{"ok": 7}'
OK = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    "fields",
    [
        b"Content-Length: 9\r\nContent-Length: 9\r\n",
        b"Content-Length: 9, 9\r\n",
        b"Content-Length: 9,9\r\nContent-Length: 9\r\n",
        b"Transfer-Encoding: identity\r\nContent-Length: 9\r\n",
        b"Content-Length: 9\r\nTransfer-Encoding: identity\r\n",
        b"X-Trace: a\r\n b\r\nContent-Length: 9\r\n",
        b"Content-Type : application/json\r\nContent-Length : 9\r\n",
    ],
    ids=[
        "length-twice",
        "length-list",
        "length-list-and-field",
        "identity-coding-beside-a-length",
        "length-beside-an-identity-coding",
        "obs-fold",
        "space-before-colon",
    ],
)
async def test_an_answer_framed_as_rfc_9110_and_9112_let_a_client_read_it_keeps_its_status(
    sender: Sender, fields: bytes
) -> None:
    """A list of identical lengths is one (RFC 9110 §8.6); a `Transfer-Encoding` naming only
    `identity` is none, the length frames the body; an obs-fold is a space (RFC 9112 §5.2);
    whitespace before a colon is removed (§5.1, as a proxy must: the gateway forwards the
    answer). aiohttp's parser refused each whole: a 200 became `invalid_response` without a
    status, retried, sent twice."""
    reply = b"HTTP/1.1 200 X\r\n" + fields
    if b"Content-Type" not in fields:
        reply += b"Content-Type: application/json\r\n"
    async with raw_partner(reply + b"\r\n" + JSON) as url:
        outcome = await sender.send(_post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (200, None, Verdict.SUCCESS)
    assert (outcome.is_json, outcome.json_body) == (True, {"ok": 7})


async def test_a_folded_transfer_encoding_beside_a_length_is_read_as_chunked(
    sender: Sender,
) -> None:
    reply = START % 200 + b"Transfer-Encoding:\r\n chunked\r\n" + CL + b"\r\n" + CHUNKED
    async with raw_partner(reply) as url:
        outcome = await sender.send(_post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.json_body) == (200, None, {"received": True})


@pytest.mark.parametrize(
    ("head", "status", "verdict", "said"),
    [
        (
            OK % 200 + b"Content-Length: 9\r\nContent-Length: 8\r\n",
            200,
            Verdict.SUCCESS,
            "Duplicate Content-Length",
        ),
        (
            OK % 200 + b"Content-Length: 9, 8\r\n",
            200,
            Verdict.SUCCESS,
            "Invalid character in Content-Length",
        ),
        (
            OK % 503 + b"Set-Cookie: s=SECRET\x00\r\nContent-Length: 9\r\n",
            503,
            Verdict.RETRY,
            "Invalid HTTP header",
        ),
        (
            OK % 400 + b"Set Cookie: s=SECRET\r\nContent-Length: 9\r\n",
            400,
            Verdict.FAIL,
            "Invalid header token",
        ),
    ],
    ids=["two-lengths", "a-list-of-two-lengths", "nul-in-a-value", "space-in-a-name"],
)
async def test_a_head_still_refused_keeps_the_status_its_status_line_said(
    sender: Sender, head: bytes, status: int, verdict: Verdict, said: str
) -> None:
    """Lengths that differ cannot frame the body (RFC 9112 §6.3: the connection is closed,
    the body discarded), nor can a head that is not HTTP past its status line: the partner
    did answer, and its status decides, as for a body refused."""
    async with raw_partner(head + b"\r\n" + JSON) as url:
        outcome = await sender.send(_post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (status, "invalid_response", verdict)
    assert outcome.message == f"invalid HTTP answer: {said}"
    assert outcome.json_body is None


@contextlib.asynccontextmanager
async def open_partner(reply: bytes) -> AsyncIterator[str]:
    """A partner that answers `reply` and keeps its connection open (as a partner that framed
    its answer by a length does) until the test is done."""
    held = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        await held.wait()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    finally:
        held.set()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "fields",
    [
        b"Content-Length: 9\r\nContent-Length: 9\r\n",
        b"Content-Length: 9, 9\r\n",
        b"Content-Length : 9\r\n",
        b"Transfer-Encoding: identity\r\nContent-Length: 9\r\n",
        b"Content-Length: 9\r\nTransfer-Encoding: Identity\r\n",
        b"Transfer-Encoding:\r\n identity\r\nContent-Length: 9, 9\r\n",
    ],
    ids=[
        "length-twice",
        "length-list",
        "space-before-colon",
        "identity-coding-beside-a-length",
        "length-beside-an-identity-coding",
        "folded-identity-coding-beside-a-length-list",
    ],
)
async def test_a_mended_length_frames_the_body_on_a_connection_left_open(
    sender: Sender, fields: bytes
) -> None:
    """The length read is the length: the body ends after it, not when the partner closes
    the connection (this one stays open). `Transfer-Encoding: identity` names no transfer
    coding: the answer waited for a close that never came, the partner's whole timeout, and
    ended `timeout` (a proxy call: 504 "did not answer")."""
    async with open_partner(OK % 200 + fields + b"\r\n" + JSON) as url:
        outcome = await sender.send(replace(_post(url), timeout=2), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.json_body) == (200, None, {"ok": 7})
    assert outcome.latency_ms < 1000, outcome.latency_ms


@pytest.mark.parametrize(
    "fields",
    [
        b"Transfer-Encoding: gzip\r\nContent-Length: 9\r\n",
        b"Content-Length: 9\r\nTransfer-Encoding: chunked, identity\r\n",
    ],
    ids=["gzip-coding", "identity-after-chunked"],
)
async def test_a_length_beside_a_coding_not_ending_in_chunked_is_refused_at_once(
    sender: Sender, fields: bytes
) -> None:
    """RFC 9112 §6.3 reads such a body until the connection closes, and says the pair ought
    to be handled as an error: a partner that framed it by its length keeps its connection
    open, and the read waited the whole timeout. Refused at once, the status kept."""
    async with open_partner(OK % 200 + fields + b"\r\n" + JSON) as url:
        outcome = await sender.send(replace(_post(url), timeout=2), partner_id="erp")
    assert (outcome.status, outcome.error) == (200, "invalid_response")
    assert "can't be present with" in (outcome.message or ""), outcome.message
    assert outcome.latency_ms < 1000, outcome.latency_ms


@pytest.mark.parametrize(
    "line",
    [
        b"HTTP/1.1 0200 OK",
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1 000000000000000000000000000201 OK",
        b"HTTP/1.1 123456789012345678901234567890 OK",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1  200 OK",
        b"HTTP/1.1 200\tOK",
        b"HTTP/1.2 200 OK",
        b"HTTP/1.1 200 O\rK",
    ],
    ids=[
        "leading-zero",
        "four-digits",
        "zero-padded",
        "thirty-digits",
        "two-digits",
        "two-spaces",
        "tab-after-status",
        "unknown-version",
        "cr-in-reason",
    ],
)
async def test_a_status_line_the_parser_refuses_keeps_no_status(
    sender: Sender, line: bytes
) -> None:
    """The status kept from a refused head is one the parser would have read: three digits
    after a version it knows. Any run of digits was kept: `0200` a delivered 200, `2000` a
    status 2000, 30 digits a number no database holds (the delivery parked)."""
    reply = line + b"\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n" + JSON
    async with raw_partner(reply) as url:
        outcome = await sender.send(_post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (
        None,
        "invalid_response",
        Verdict.RETRY,
    )
    assert (outcome.message or "").startswith("invalid HTTP answer: "), outcome


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"HTTP/1.1 200", 200),
        (b"HTTP/1.0 503 Service Unavailable", 503),
        (b"HTTP/1.1 600 Odd", None),
        (b"HTTP/1.1 099 Odd", None),
    ],
    ids=["no-reason", "http-1.0", "past-599", "below-100"],
)
async def test_a_refused_head_keeps_only_an_http_status(
    sender: Sender, line: bytes, status: int | None
) -> None:
    """A status line the parser reads, the head after it refused (a space in a name): the
    status is kept when it is one of HTTP's (100-599)."""
    reply = line + b"\r\nSet Cookie: s=1\r\nContent-Length: 9\r\n\r\n" + JSON
    async with raw_partner(reply) as url:
        outcome = await sender.send(_post(url), partner_id="erp")
    assert (outcome.status, outcome.error) == (status, "invalid_response")
