"""Malformed HTTP that aiohttp's parser refuses before any middleware still gets a problem
document and one log line (SPEC §3: every error is application/problem+json)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession, web

from gateway.web.server import GatewayRunner
from tests.processes import free_port
from tests.support import auth
from tests.triggers_support import VEHICLE, Client, bearer, create_trigger, entities


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
    with caplog.at_level(logging.INFO):
        status, headers, problem = await _raw(
            served,
            _post_vehicle(f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n", body),
        )
    assert status == 400 and headers["Content-Type"].startswith("application/problem+json")
    assert problem["detail"] == (
        "malformed request body: the gzip body does not decode: incorrect header check"
    )
    assert headers["Connection"] == "close"  # the rest of such a body is not read
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelno for r in logged] == [logging.WARNING] and logged[0].exc_info is None
    assert not await _vehicle_exists(served)


async def test_a_client_gone_before_its_body_arrived_is_no_server_error_and_writes_nothing(
    served: int, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"plate": "ABC1D23", "odometer_km": 1'  # 40 bytes of the 100 announced
    with caplog.at_level(logging.INFO):
        _, writer = await asyncio.open_connection("127.0.0.1", served)
        writer.write(_post_vehicle("Content-Length: 100\r\n", body))
        await writer.drain()
        writer.close()  # gone before the rest
        deadline = asyncio.get_running_loop().time() + 5
        while not any("closed the connection" in r.getMessage() for r in caplog.records):
            assert asyncio.get_running_loop().time() < deadline, caplog.text
            await asyncio.sleep(0.01)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
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
