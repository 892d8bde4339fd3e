"""Malformed HTTP that aiohttp's parser refuses before any middleware still gets a problem
document and one log line (SPEC §3: every error is application/problem+json)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import hmac
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from aiohttp import ClientSession, web

from gateway.auth.keyring import KeyRing, Purpose
from gateway.services import Services
from gateway.web.server import GatewayRunner, ProblemRequestHandler
from tests.processes import free_port
from tests.support import SECRET_KEY, auth
from tests.triggers_support import (
    VEHICLE,
    Client,
    bearer,
    create_trigger,
    entities,
    stored_with_get,
)
from tests.ui_support import PASSWORD, csrf, make_user


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


def _names_the_request(headers: dict[str, str], body: dict[str, Any]) -> bool:
    """A refusal before any path is read names its occurrence by its request id (docs/api.md
    "Problem types"): every problem has an `instance`."""
    return body["instance"] == f"urn:rabbot:request:{headers['X-Request-ID']}"


async def test_url_over_8190_bytes_is_a_414_problem_of_a_named_type(served: int) -> None:
    path = "/healthz?pad=" + "x" * 9000
    status, headers, body = await _raw(served, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 414 and headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == 414 and body["title"] == "URI too long"
    assert body["type"] == "https://rabbot.dev/problems/uri-too-long"
    assert _names_the_request(headers, body)


async def test_nul_in_a_header_is_a_400_problem_logged_once_at_debug_without_traceback(
    served: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal (4xx) is logged at DEBUG, as docs/operations.md "Logs" says: at WARNING,
    any client could write the log's WARNING lines (one per request it sent)."""
    with caplog.at_level(logging.DEBUG):
        status, headers, body = await _raw(
            served, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n"
        )
    assert status == 400 and headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == 400 and "malformed HTTP request" in body["detail"]
    assert body["type"] == "https://rabbot.dev/problems/bad-request"
    assert _names_the_request(headers, body)
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].exc_info is None
    assert refusals[0].levelno == logging.DEBUG
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG], caplog.text


async def test_oversized_header_is_a_431_problem_of_a_named_type(served: int) -> None:
    request = f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'y' * 9000}\r\n\r\n".encode()
    status, headers, body = await _raw(served, request)
    assert status == 431 and body["status"] == 431
    assert body["type"] == "https://rabbot.dev/problems/header-fields-too-large"
    assert _names_the_request(headers, body)


def _post_vehicle(headers: str, body: bytes) -> bytes:
    """A raw admin POST creating a vehicle (the test tenant's admin token)."""
    token = auth()["Authorization"]
    return (
        f"POST /api/v1/entities/vehicle HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
        f"Content-Type: application/json\r\n{headers}\r\n"
    ).encode() + body


async def _vehicle_exists(port: int) -> bool:
    async with (
        ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}/api/v1/entities/vehicle/ABC1D23", headers=auth()
        ) as response,
    ):
        assert response.status in (200, 404)
        return response.status == 200


async def test_a_body_whose_content_coding_does_not_decode_is_a_400_problem_without_trace(
    served: int, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"plate": "ABC1D23"}'  # said to be gzip, and it is not
    with caplog.at_level(logging.DEBUG):
        status, headers, problem = await _raw(
            served,
            _post_vehicle(f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n", body),
        )
    assert status == 400 and headers["Content-Type"].startswith("application/problem+json")
    assert problem["detail"] == (
        "malformed request body: the gzip body does not decode: incorrect header check"
    )
    assert headers["Connection"] == "close"  # the rest of such a body is not read
    logged = [r for r in caplog.records if "refused" in r.getMessage()]
    assert [r.levelno for r in logged] == [logging.DEBUG] and logged[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG], caplog.text
    assert not await _vehicle_exists(served)


async def test_a_transfer_coding_other_than_chunked_is_a_501_problem_and_writes_nothing(
    served: int,
) -> None:
    """aiohttp checks only that `chunked` comes last and drops the other codings: a `gzip,
    chunked` body was read still gzipped (a misleading charset 400), `x-foo, chunked` as if
    plain. RFC 9112 §6.1: a transfer coding the server does not understand is a 501."""
    body = gzip.compress(b'{"plate": "ABC1D23"}')
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    for coding in ("gzip, chunked", "x-foo, chunked", "gzip;q=1, chunked"):
        status, headers, problem = await _raw(
            served,
            _post_vehicle(f"Transfer-Encoding: {coding}\r\nConnection: close\r\n", chunked),
        )
        assert status == 501, (coding, problem)
        assert headers["Content-Type"].startswith("application/problem+json")
        assert "X-Request-ID" in headers and problem["title"] == "Not implemented"
        assert "Transfer-Encoding" in problem["detail"] and "charset" not in problem["detail"]
    assert not await _vehicle_exists(served)
    plain = b'{"plate": "ABC1D23"}'
    status, _, _ = await _raw(
        served,
        _post_vehicle(
            "Transfer-Encoding: chunked\r\nConnection: close\r\n",
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(plain), plain),
        ),
    )
    assert status == 201 and await _vehicle_exists(served)


async def test_a_transfer_encoding_not_ending_in_chunked_is_a_400_problem_and_writes_nothing(
    served: int,
) -> None:
    """docs/security.md §13: a transfer coding before the final `chunked` is the 501 above;
    one whose last coding is not `chunked` (or `chunked` twice) has no length the server can
    know (RFC 9112 §6.3): the parser's 400 `bad-request`, and the connection closes. The docs
    said every coding other than `chunked` was a 501."""
    plain = b'{"plate": "ABC1D23"}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(plain), plain)
    for coding in ("gzip", "compress", "identity", "chunked, chunked"):
        status, headers, problem = await _raw(
            served, _post_vehicle(f"Transfer-Encoding: {coding}\r\n", chunked)
        )  # no Connection: close asked: the server closes it
        assert status == 400, (coding, problem)
        assert headers["Content-Type"].startswith("application/problem+json")
        assert problem["type"] == "https://rabbot.dev/problems/bad-request", problem
        assert "Transfer-Encoding" in problem["detail"], problem
    assert not await _vehicle_exists(served)
    docs = Path(__file__).resolve().parents[1] / "docs"
    row = next(
        line
        for line in (docs / "api.md").read_text().splitlines()
        if line.startswith("| `not-implemented` | 501 |")
    )
    assert "`gzip` alone" in row and "`400` `bad-request`" in row, row
    bullet = (docs / "security.md").read_text().split("- **`Transfer-Encoding`**", 1)[1]
    assert "`gzip` alone" in bullet.split("\n- ")[0] and "RFC 9112 §6.3" in bullet


async def _head_of_first_answer(
    port: int, request: bytes, body: bytes | None = None
) -> tuple[bytes, bytes]:
    """(the first answer's head, the second's after `body` is sent, if any) on one
    connection: a client that asked `Expect: 100-continue` sends its body on a 100."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        second = b""
        if body is not None:
            writer.write(body)
            second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        return first, second
    finally:
        writer.close()


async def test_expect_is_answered_by_the_gateway_a_continue_only_once_the_call_may_go_on(
    served: int,
) -> None:
    """aiohttp answered `Expect` before any route or middleware: `100 Continue` to a call it
    would refuse (a bad token, a declared 50 MB over a 4 KiB limit: the client was invited to
    upload it), and an unknown expectation with a bare text/plain 417 without X-Request-ID."""
    async with ClientSession() as session:
        created = await session.post(
            f"http://127.0.0.1:{served}/api/v1/triggers",
            json={"name": "erp", "entity_type": "vehicle", "max_body_bytes": 4096},
            headers=auth(),
        )
        trigger = await created.json()
    body = b'{"plate": "ABC1D23"}'

    def post(token: str, length: int, expect: str) -> bytes:
        return (
            f"POST /hooks/{trigger['id']} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}"
            f"\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
            f"Expect: {expect}\r\n\r\n"
        ).encode()

    head, _ = await _head_of_first_answer(served, post(trigger["token"], len(body), "200-ok"))
    assert head.startswith(b"HTTP/1.1 417 "), head
    assert b"application/problem+json" in head and b"X-Request-ID" in head
    for token, status in (("junk", b"401"), (trigger["token"], b"413")):
        head, _ = await _head_of_first_answer(served, post(token, 50_000_000, "100-continue"))
        assert head.startswith(b"HTTP/1.1 " + status), head
    head, answer = await _head_of_first_answer(
        served, post(trigger["token"], len(body), "100-continue"), body
    )
    assert head == b"HTTP/1.1 100 Continue\r\n\r\n" and answer.startswith(b"HTTP/1.1 201 ")
    other = b'{"plate": "XYZ9K88"}'
    admin = _post_vehicle(f"Content-Length: {len(other)}\r\nExpect: 100-continue\r\n", b"")
    head, answer = await _head_of_first_answer(served, admin, other)
    assert head == b"HTTP/1.1 100 Continue\r\n\r\n", head  # an admin body: invited at once
    assert answer.startswith(b"HTTP/1.1 201 "), answer


async def test_a_client_trickling_its_headers_gets_a_408_problem_at_the_head_deadline(
    served: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slowloris: a header line every so often held a connection 75 s (aiohttp's keep-alive
    timeout), then closed it without an answer; the documented bound is that of a slow body
    (30 s, here shortened), answered with a 408 problem."""
    monkeypatch.setattr(ProblemRequestHandler, "header_timeout", 0.6)
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    started = time.monotonic()
    writer.write(b"POST /hooks/trg_x HTTP/1.1\r\nHost: x\r\n")
    answer = b""
    try:
        for n in range(30):
            # read(n), not read(): a read to the end cancelled by the timeout loses what it
            # had read (the 408 sent just before the close)
            with contextlib.suppress(TimeoutError):
                answer = await asyncio.wait_for(reader.read(65536), 0.2)
            if answer or reader.at_eof():
                break
            writer.write(b"X-Slow-%d: 1\r\n" % n)
        answer += await asyncio.wait_for(reader.read(), 5)  # the rest, to the close
    finally:
        writer.close()
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head and b"X-Request-ID" in head
    assert json.loads(body)["status"] == 408 and 0.6 <= elapsed < 3, elapsed
    request_id = head.split(b"X-Request-ID: ")[1].split(b"\r\n")[0].decode()
    assert json.loads(body)["instance"] == f"urn:rabbot:request:{request_id}"
    # A request whose head comes whole in time is answered as ever, on a kept-alive connection.
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    try:
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await asyncio.sleep(0.8)  # idle between requests: the keep-alive's, not a head's
    finally:
        writer.close()


async def test_a_client_gone_before_its_body_arrived_is_no_server_error_and_writes_nothing(
    served: int, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"plate": "ABC1D23", "odometer_km": 1'  # 40 bytes of the 100 announced
    with caplog.at_level(logging.DEBUG):
        _, writer = await asyncio.open_connection("127.0.0.1", served)
        writer.write(_post_vehicle("Content-Length: 100\r\n", body))
        await writer.drain()
        writer.close()  # gone before the rest
        deadline = asyncio.get_running_loop().time() + 5
        while not any("closed the connection" in r.getMessage() for r in caplog.records):
            assert asyncio.get_running_loop().time() < deadline, caplog.text
            await asyncio.sleep(0.01)
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG], caplog.text
    assert not await _vehicle_exists(served)


async def test_a_coding_the_parser_cannot_decode_is_a_415_problem_naming_those_it_can(
    served: int, caplog: pytest.LogCaptureFixture
) -> None:
    """`br` and `zstd` are not decoded: aiohttp's parser refused them while it read the headers
    (a 400 telling the caller to "install `Brotli`"); the edge does, before anything else."""
    body = b'{"plate": "ABC1D23"}'
    for coding in ("br", "zstd"):
        with caplog.at_level(logging.INFO):
            status, headers, problem = await _raw(
                served,
                _post_vehicle(
                    f"Content-Encoding: {coding}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n",
                    body,
                ),
            )
        assert status == 415 and headers["Content-Type"].startswith("application/problem+json")
        assert headers["Accept-Encoding"] == "gzip, deflate"
        assert problem["detail"] == (
            f"the body's Content-Encoding {coding!r} is not supported: send it as it is, or in "
            "one of gzip, deflate"
        )
        assert problem["type"] == "https://rabbot.dev/problems/unsupported-media-type"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert not await _vehicle_exists(served)


async def test_a_body_that_does_not_decode_sent_where_no_body_is_read_logs_nothing(
    served: int, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp reads what a route left of a body after the answer; a gzip body that is not
    gzip logged an ERROR with a traceback there (a route without a body, a 405). Bodies are
    decoded only by the routes that read them now: nothing is decoded, nothing logged."""
    body = b"not gzip at all"
    coded = f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    for request in (
        f"GET /healthz HTTP/1.1\r\nHost: x\r\n{coded}\r\n".encode() + body,
        f"DELETE /hooks/trg_x HTTP/1.1\r\nHost: x\r\n{coded}\r\n".encode() + body,
    ):
        with caplog.at_level(logging.INFO):
            status, _, answer = await _raw(served, request)
        assert status in (200, 405), answer
    assert not [r for r in caplog.records if "decode" in r.getMessage()], caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def _requests_counted(port: int) -> dict[str, float]:
    async with ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_http_requests_total{")
    }


@pytest.mark.parametrize("method", ["FOO", "PROPFIND", "get"])
async def test_a_request_with_a_method_we_do_not_serve_is_counted_as_method_other(
    served: int, method: str
) -> None:
    """A method aiohttp's parser refuses (FOO) was answered before the edge counted it, and
    one it took (PROPFIND) counted under its own name: unbounded with aiohttp's Python
    parser, which takes any token. Both are counted, as `method="other"`."""
    request = f"{method} /hooks/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    status, _, _ = await _raw(served, request)
    assert status in (400, 404, 405)
    counted = await _requests_counted(served)
    others = {k: v for k, v in counted.items() if 'method="other"' in k}
    assert sum(others.values()) == 1, counted
    assert not [k for k in counted if f'method="{method}"' in k]


async def test_a_request_in_flight_at_shutdown_holds_it_for_the_shutdown_timeout_not_twice() -> (
    None
):
    """aiohttp waits its `shutdown_timeout` for a request in flight, then cancels the
    request's body and waits as long again before it cancels the handler: a request waiting
    on a slow partner held `gateway serve`'s shutdown 30 s, not the 15 s it is given (and a
    healthy gateway's shutdown took about 43 s at worst, past Kubernetes' 30 s grace)."""
    started = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        started.set()
        await asyncio.Event().wait()  # a partner that never answers
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/slow", slow)
    runner = GatewayRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with ClientSession() as session:
        pending = asyncio.ensure_future(session.get(f"http://127.0.0.1:{port}/slow"))
        await started.wait()
        loop = asyncio.get_running_loop()
        begun = loop.time()
        await runner.cleanup()
        took = loop.time() - begun
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await pending
    assert 0.9 <= took < 1.6, took


# -- request bodies in a content coding (decoded by the gateway, not aiohttp) -------------------

MAPPING = (
    "name: edge-gzip\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
    "fields:\n  plate: plate\n"
)
LINES = b"".join(
    json.dumps({"plate": f"ABC1D{n:02d}", "make": "Fiat"}).encode() + b"\n" for n in range(20)
)


def _deflate(data: bytes, *, raw: bool = False) -> bytes:
    packer = zlib.compressobj(wbits=-15 if raw else 15)
    return packer.compress(data) + packer.flush()


async def _post_hook(
    client: Client, trigger: dict[str, Any], body: bytes, coding: str, ctype: str
) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=body,
        headers={**bearer(trigger), "Content-Type": ctype, "Content-Encoding": coding},
    )
    return response.status, await response.json()


async def test_a_gzip_batch_cut_before_its_trailer_is_a_400_and_writes_nothing(
    client: Client,
) -> None:
    """A JSON Lines batch gzipped and cut at a line's end, its Content-Length the cut one:
    aiohttp decoded it to the lines that arrived and the trigger wrote them."""
    trigger = await create_trigger(client)
    whole = gzip.compress(LINES)
    for cut in (whole[:-8], whole[: len(whole) // 2], whole[:10]):
        status, problem = await _post_hook(client, trigger, cut, "gzip", "application/x-ndjson")
        assert status == 400, problem
        assert problem["detail"] == (
            "malformed request body: the gzip body does not decode: the stream is cut short "
            "(its end is missing)"
        ), problem
    assert await entities(client) == []
    status, answer = await _post_hook(client, trigger, whole, "gzip", "application/x-ndjson")
    assert status == 200 and answer["summary"]["created"] == 20, answer


async def test_deflate_bodies_zlib_or_raw_are_read_and_a_corrupt_or_cut_one_is_a_400(
    client: Client,
) -> None:
    trigger = await create_trigger(client)
    body = json.dumps(VEHICLE).encode()
    zlib_body, raw_body = _deflate(body), _deflate(body, raw=True)
    corrupt = zlib_body[:2] + bytes(b ^ 0xFF for b in zlib_body[2:])
    for sent, why in (
        (zlib_body[:-4], "the stream is cut short (its end is missing)"),
        (corrupt, "invalid"),
        (zlib_body + b"junk", "bytes follow the end of the stream"),
    ):
        status, problem = await _post_hook(client, trigger, sent, "deflate", "application/json")
        assert status == 400 and problem["detail"].startswith(
            "malformed request body: the deflate body does not decode: "
        ), problem
        assert why in problem["detail"], problem
    assert await entities(client) == []
    for sent, expected in ((zlib_body, 201), (raw_body, 200)):
        status, answer = await _post_hook(client, trigger, sent, "deflate", "application/json")
        assert status == expected, answer


async def test_gzip_members_one_after_another_are_one_body(client: Client) -> None:
    """RFC 1952 §2.2: a gzip file may be several members (`cat a.gz b.gz`)."""
    trigger = await create_trigger(client)
    half = len(LINES) // 2
    cut = LINES.index(b"\n", half) + 1
    body = gzip.compress(LINES[:cut]) + gzip.compress(LINES[cut:])
    status, answer = await _post_hook(client, trigger, body, "gzip", "application/x-ndjson")
    assert status == 200 and answer["summary"]["created"] == 20, answer


async def test_a_decompression_bomb_is_a_413_at_the_limit_without_inflating_it_all(
    client: Client,
) -> None:
    """2 KiB that inflate to 2 MiB (64 KiB to 64 MiB). The rest of the stream past what the
    limit needs is cut away: inflating it all would find it cut short (a 400); stopping at
    the limit, the gateway never gets there (a 413), for a trigger's limit and for the
    admin API's."""
    small = gzip.compress(b"[" + b" " * (2 * 1024 * 1024) + b"]", compresslevel=9)
    trigger = await create_trigger(client, max_body_bytes=4096)
    for sent in (small, small[: len(small) // 2]):
        assert len(sent) < 4096
        status, problem = await _post_hook(client, trigger, sent, "gzip", "application/json")
        assert status == 413, problem
        assert problem["detail"] == "the body inflates past the limit of 4096 bytes", problem
    bomb = gzip.compress(b"[" + b" " * (64 * 1024 * 1024) + b"]", compresslevel=9)
    response = await client.post(
        "/api/v1/entities/vehicle",
        data=bomb[: len(bomb) // 2],
        headers={**auth(), "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status == 413, await response.text()
    limit = client.app._client_max_size
    assert (await response.json())["detail"] == (
        f"the body inflates past the limit of {limit} bytes"
    )


async def test_br_and_zstd_are_refused_before_authentication_other_codings_after_it(
    client: Client,
) -> None:
    """As when aiohttp's parser refused `br` and `zstd` while it read the headers (before any
    route), and a coding nobody decodes once the route reads the body (after its token)."""
    body = b'{"plate": "ABC1D23"}'
    for coding, status in (("br", 415), ("zstd", 415), ("BR", 415), ("compress", 401)):
        response = await client.post(
            "/api/v1/entities/vehicle",
            data=body,
            headers={"Content-Type": "application/json", "Content-Encoding": coding},
        )
        assert response.status == status, (coding, await response.text())
        if status == 415:
            assert response.headers["Accept-Encoding"] == "gzip, deflate"
    response = await client.post(
        "/hooks/trg_unknown",
        data=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "br, gzip"},
    )
    assert response.status == 401, await response.text()  # a stack: the route's to refuse


async def test_a_gzip_mapping_upload_in_a_multipart_form_is_decoded(client: Client) -> None:
    form = (
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="m.yaml"\r\n'
        b"Content-Type: application/yaml\r\n\r\n" + MAPPING.encode() + b"\r\n--b0undary--\r\n"
    )
    response = await client.post(
        "/api/v1/mappings",
        data=gzip.compress(form),
        headers={
            **auth(),
            "Content-Type": "multipart/form-data; boundary=b0undary",
            "Content-Encoding": "gzip",
        },
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["name"] == "edge-gzip"


# -- admin tokens whose dates or tenant are not what we sign --------------------------------------

YEAR_10000 = 253402300800  # 10000-01-01T00:00:00Z


def _forged_admin(**changes: Any) -> dict[str, str]:
    """An admin token signed with the real key, whose claims a test bends."""
    key = KeyRing.from_secret(SECRET_KEY).signing_key(Purpose.ADMIN_TOKEN)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "rabbot-gateway",
        "aud": "admin",
        "sub": "tester",
        "tenant": "acme",
        "jti": "forged",
        "iat": now,
        "exp": now + 3600,
        "role": "admin",
    }
    claims.update(changes)
    body = orjson.dumps(claims)
    header = orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid})
    signing_input = f"{_b64(header)}.{_b64(body)}"
    mac = hmac.new(key.key, signing_input.encode(), hashlib.sha256).digest()
    return {"Authorization": f"Bearer {signing_input}.{_b64(mac)}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_claims(**claims: str) -> dict[str, Any]:
    """Claims whose JSON text a test writes itself (NaN, 1e999: not what json.dumps writes)."""
    return {name: orjson.Fragment(text.encode()) for name, text in claims.items()}


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"exp": True}, id="exp-true"),
        pytest.param({"iat": True}, id="iat-true"),
        pytest.param({"nbf": False}, id="nbf-false"),
        pytest.param({"exp": str(int(time.time()) + 3600)}, id="exp-string"),
        pytest.param({"iat": str(int(time.time()))}, id="iat-string"),
        pytest.param({"nbf": str(int(time.time()))}, id="nbf-string"),
        pytest.param({"exp": [int(time.time()) + 3600]}, id="exp-list"),
        pytest.param({"nbf": None}, id="nbf-null"),
        pytest.param(_raw_claims(exp="NaN"), id="exp-nan"),
        pytest.param(_raw_claims(iat="NaN"), id="iat-nan"),
        pytest.param(_raw_claims(exp="1e999"), id="exp-infinite"),
        pytest.param(_raw_claims(nbf="-1e999"), id="nbf-minus-infinite"),
        pytest.param({"exp": YEAR_10000}, id="exp-year-10000"),
        pytest.param(_raw_claims(exp="1" + "0" * 30), id="exp-huge-integer"),
        pytest.param({"exp": 1e300}, id="exp-huge-float"),
        pytest.param({"iat": -1e300}, id="iat-huge-negative"),
        pytest.param(_raw_claims(nbf="-1" + "0" * 30), id="nbf-huge-negative"),
        pytest.param({"iat": -1}, id="iat-before-1970"),
    ],
)
async def test_an_admin_token_with_dates_that_are_not_numeric_dates_is_a_401(
    client: Client, changes: dict[str, Any]
) -> None:
    """RFC 7519 §2: a NumericDate is a JSON number of seconds. PyJWT takes `True` and
    `"1700000000"` as numbers, and any size; none of them is a date we sign."""
    for path in ("/api/v1/entities/vehicle", "/api/v1/triggers"):
        response = await client.get(path, headers=_forged_admin(**changes))
        assert response.status == 401, (path, await response.text())
        assert response.headers["Content-Type"].startswith("application/problem+json")


async def test_an_admin_token_with_fractional_seconds_is_a_numeric_date_still(
    client: Client,
) -> None:
    now = time.time()
    headers = _forged_admin(iat=now - 0.5, nbf=now - 0.25, exp=now + 3600.75)
    response = await client.get("/api/v1/entities/vehicle", headers=headers)
    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    "tenant", ["acme\n", "ac me", "../acme", "acme/other", "é", "a" * 101, 7, ["acme"], {}]
)
async def test_an_admin_token_whose_tenant_is_not_a_tenant_name_is_a_401(
    client: Client, tenant: Any
) -> None:
    response = await client.get("/api/v1/entities/vehicle", headers=_forged_admin(tenant=tenant))
    assert response.status == 401, await response.text()
    assert (await response.json())["detail"] == "invalid token"


# -- OPTIONS on a trigger URL: Allow, and the CloudEvents webhook validation handshake ------------

ORIGIN = {"WebHook-Request-Origin": "eventemitter.example.com"}


async def test_options_on_a_trigger_answers_allow_and_the_cloudevents_handshake(
    client: Client,
) -> None:
    """CloudEvents HTTP 1.1 Web Hooks §4: a sender asks with OPTIONS and
    `WebHook-Request-Origin` before it delivers; without `WebHook-Allowed-Origin` in the
    answer it does not send (Azure Event Grid). It was a 405."""
    trigger = await create_trigger(client, methods=["GET", "POST"])
    url = f"/hooks/{trigger['id']}"
    plain = await client.options(url, headers=bearer(trigger))
    assert plain.status == 204, await plain.text()
    assert plain.headers["Allow"] == "GET, HEAD, POST, OPTIONS"
    assert "WebHook-Allowed-Origin" not in plain.headers and await plain.read() == b""
    asked = await client.options(url, headers={**bearer(trigger), **ORIGIN})
    assert asked.status == 204, await asked.text()
    assert asked.headers["WebHook-Allowed-Origin"] == "eventemitter.example.com"
    assert asked.headers["WebHook-Allowed-Rate"] == "*"  # no rate limit on this trigger
    assert trigger["token"] not in str(dict(asked.headers)) and await asked.read() == b""
    entity_url = await client.options(f"{url}/ABC1D23", headers={**bearer(trigger), **ORIGIN})
    assert entity_url.status == 204, await entity_url.text()
    assert entity_url.headers["Allow"] == "GET, HEAD, OPTIONS"  # no POST there: no consent
    assert "WebHook-Allowed-Origin" not in entity_url.headers


async def test_the_handshake_grants_the_rate_the_triggers_limit_allows(client: Client) -> None:
    trigger = await create_trigger(client, rate_limit={"per_second": 2, "burst": 20})
    url = f"/hooks/{trigger['id']}"
    for asked, granted in ((None, "120"), ("600", "120"), ("30", "30")):
        rate = {} if asked is None else {"WebHook-Request-Rate": asked}
        response = await client.options(url, headers={**bearer(trigger), **ORIGIN, **rate})
        assert response.status == 204, await response.text()
        assert response.headers["Allow"] == "GET, HEAD, POST, OPTIONS"
        assert response.headers["WebHook-Allowed-Rate"] == granted
    for bad in ({"WebHook-Request-Rate": "0"}, {"WebHook-Request-Rate": "fast"}):
        response = await client.options(url, headers={**bearer(trigger), **ORIGIN, **bad})
        assert response.status == 400, await response.text()
    bad_origin = {"WebHook-Request-Origin": "evil.example.com\\x"}
    response = await client.options(url, headers={**bearer(trigger), **bad_origin})
    assert response.status == 400, await response.text()


async def test_options_is_authenticated_like_any_call_so_it_tells_no_trigger_ids(
    client: Client,
) -> None:
    """An unknown trigger, a known one without credentials and a wrong token get the same
    401 as a POST would: an OPTIONS must not tell which trigger ids exist."""
    trigger = await create_trigger(client)
    posted = await client.post("/hooks/trg_unknown", json=VEHICLE)
    expected = (posted.status, (await posted.json())["detail"])
    for url, headers in (
        ("/hooks/trg_unknown", ORIGIN),
        ("/hooks/trg_unknown", {**ORIGIN, "Authorization": "Bearer junk"}),
        (f"/hooks/{trigger['id']}", ORIGIN),
        (f"/hooks/{trigger['id']}", {**ORIGIN, "Authorization": "Bearer junk"}),
    ):
        response = await client.options(url, headers=headers)
        assert (response.status, (await response.json())["detail"]) == expected, url
        assert "WebHook-Allowed-Origin" not in response.headers
    await client.post(f"/api/v1/triggers/{trigger['id']}/disable", headers=auth())
    disabled = await client.options(
        f"/hooks/{trigger['id']}", headers={**bearer(trigger), **ORIGIN}
    )
    assert disabled.status == 403 and "WebHook-Allowed-Origin" not in disabled.headers


async def test_options_takes_the_token_in_the_query_as_the_registered_url_carries_it(
    client: Client,
) -> None:
    trigger = await create_trigger(client, auth={"token_in_query": "token"})
    response = await client.options(
        f"/hooks/{trigger['id']}?token={trigger['token']}", headers=ORIGIN
    )
    assert response.status == 204, await response.text()
    assert response.headers["WebHook-Allowed-Origin"] == "eventemitter.example.com"


def _motive(secret: str, body: bytes) -> dict[str, str]:
    return {"X-KT-Webhook-Signature": hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()}


async def test_options_on_a_signed_trigger_takes_the_empty_bodys_signature(
    client: Client,
) -> None:
    """It tells what a POST may do (Allow, the rate): no data, so the empty body's signature,
    the same for every OPTIONS, is enough; a read needs more (next test)."""
    trigger = await create_trigger(client, auth={"mode": "hmac", "preset": "motive"})
    url = f"/hooks/{trigger['id']}"
    assert (await client.options(url, headers=ORIGIN)).status == 401
    response = await client.options(url, headers={**ORIGIN, **_motive(trigger["secret"], b"")})
    assert response.status == 204, await response.text()
    assert response.headers["Allow"] == "POST, OPTIONS"
    assert response.headers["WebHook-Allowed-Origin"] == "eventemitter.example.com"


# -- reads through a trigger authenticated by a body signature ------------------------------------


async def test_a_read_through_a_signed_trigger_is_a_403_whatever_its_signature(
    client: Client,
) -> None:
    """A GET's signature is the empty body's: it covers neither the URL nor its query, is
    the same for every read, and for ever in a scheme without a timestamp (Motive, GitHub):
    one captured read any entity of the trigger's type. Writes are unchanged. Such a trigger
    can no longer be given GET; one stored with it before is refused at the door."""
    trigger = await create_trigger(client, auth={"mode": "hmac", "preset": "motive"})
    await stored_with_get(client, trigger)
    body = json.dumps(VEHICLE).encode()
    written = await client.post(
        f"/hooks/{trigger['id']}",
        data=body,
        headers={"Content-Type": "application/json", **_motive(trigger["secret"], body)},
    )
    assert written.status == 201, await written.text()
    empty = _motive(trigger["secret"], b"")
    for url in (f"/hooks/{trigger['id']}?plate=ABC1D23", f"/hooks/{trigger['id']}/ABC1D23"):
        for method in ("GET", "HEAD"):
            response = await client.request(method, url, headers=empty)
            assert response.status == 403, (method, url)
            if method == "GET":
                text = await response.text()
                assert "signed trigger takes writes only" in text and "Strada" not in text
    unsigned = await client.get(f"/hooks/{trigger['id']}?plate=ABC1D23")
    assert unsigned.status == 401  # no signature at all: refused as any bad credential
    options = await client.options(f"/hooks/{trigger['id']}", headers=empty)
    assert options.headers["Allow"] == "POST, OPTIONS"  # GET is in its methods, but reads nothing


async def test_a_gzip_form_is_read_like_a_plain_one_urlencoded_or_multipart(
    client: Client, services: Services
) -> None:
    """The admin UI's forms (`read_form`): aiohttp's `post()` reads a body as it came once the
    server no longer decodes it, so a coded one is decoded first."""
    await make_user(services)
    for as_multipart in (False, True):
        token = await csrf(client, "/admin/login")
        fields = {"csrf": token, "tenant": "acme", "email": "ana@acme.com.br", "password": PASSWORD}
        if as_multipart:
            body = (
                b"".join(
                    f'--b0undary\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                    f"{value}\r\n".encode()
                    for name, value in fields.items()
                )
                + b"--b0undary--\r\n"
            )
            ctype = "multipart/form-data; boundary=b0undary"
        else:
            body, ctype = urlencode(fields).encode(), "application/x-www-form-urlencoded"
        answer = await client.post(
            "/admin/login",
            data=gzip.compress(body),
            headers={"Content-Type": ctype, "Content-Encoding": "gzip"},
            allow_redirects=False,
        )
        assert answer.status == 303, (as_multipart, await answer.text())
        client.session.cookie_jar.clear()
    cut = await client.post(
        "/admin/login",
        data=gzip.compress(urlencode({"tenant": "acme"}).encode())[:-4],
        headers={"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"},
        allow_redirects=False,
    )
    assert cut.status == 400, await cut.text()
