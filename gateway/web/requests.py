"""Reading requests: JSON bodies, pagination and boolean query parameters."""

from __future__ import annotations

import asyncio
import io
import zlib
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson
from aiohttp import BodyPartReader, HttpVersion11, hdrs, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.multipart import MultipartReader
from aiohttp.streams import StreamReader
from multidict import MultiDict, MultiDictProxy

from gateway import paging
from gateway.config import parse_flag
from gateway.errors import (
    BadRequest,
    ExpectationFailed,
    FieldProblem,
    InvalidPayload,
    NotImplementedCoding,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedContentCoding,
    UnsupportedMediaType,
)
from gateway.formats.bodies import check_json, malformed, utf8_body
from gateway.formats.charsets import text_codec
from gateway.formats.json_tree import WideInt, loads_exact, shown, whole_number

# A client gets this long to send its whole body; a slow one must not hold a connection
# (and its memory) for as long as it likes.
BODY_TIMEOUT_SECONDS = 30.0


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


async def read_json(request: web.Request) -> Any:
    """The body as JSON; 415 for another media type, 400 (with the reason) if malformed.
    aiohttp's `client_max_size` answers 413 for a body over the limit while it is read."""
    if not is_json(request.content_type):
        raise UnsupportedMediaType(
            f"expected application/json, got {request.content_type or 'no content type'}"
        )
    return parse_json(await read_body(request), request.charset)


# The content codings decoded here (the server's own decompression is off: app.py), and the
# ones aiohttp's parser refused before anything else when it decoded (kept as early: edge).
DECODED_CODINGS: Final = ("gzip", "deflate")
REFUSED_EARLY: Final = frozenset({"br", "zstd"})
_DECODE_CHUNK: Final = 64 * 1024  # the most one inflate step may produce


def content_coding(request: web.Request) -> str | None:
    """The body's content coding (`gzip` or `deflate`), None for a plain one. 415 (with
    `Accept-Encoding`) for a coding that is not decoded: `br`, `zstd`, one nobody knows
    (`compress`, `x-gzip`), a stack of them (`gzip, gzip`), or the header given twice.
    `identity` is no coding; without a body (a GET's), the header says nothing."""
    if hdrs.CONTENT_ENCODING not in request.headers or not request.body_exists:
        return None  # the common case, at once (getall's default costs an exception)
    given = request.headers.getall(hdrs.CONTENT_ENCODING)
    codings = [c for c in (t.strip().lower() for v in given for t in v.split(",")) if c]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if len(given) == 1 and codings == [given[0].strip().lower()] and codings[0] in DECODED_CODINGS:
        return codings[0]
    shown = ", ".join(v.strip() for v in given)
    raise UnsupportedContentCoding(
        f"the body's Content-Encoding {shown!r} is not supported: send it as it is, or in "
        f"one of {', '.join(DECODED_CODINGS)}",
        supported=DECODED_CODINGS,
    )


_CONTINUE: Final = "100-continue"
_continued: Final = web.RequestKey("continued", bool)


async def expect_later(request: web.Request) -> None:
    """Every route's `expect_handler`: aiohttp's default answers `100 Continue` before a route
    could refuse the request (a bad token, a declared size over the limit: RFC 9110 §10.1.1
    wants the final status instead) and an unknown expectation with a bare `text/plain` 417
    that no middleware sees. Here the edge refuses an unknown one (`check_refused_early`) and
    `send_continue` invites the body when it is about to be read."""
    return None


async def send_continue(request: web.Request) -> None:
    """`100 Continue` to a client that waits for it (`Expect: 100-continue`, HTTP/1.1), once,
    before anything of the answer."""
    if (
        request.version == HttpVersion11
        and request.headers.get(hdrs.EXPECT, "").strip().lower() == _CONTINUE
        and not request.get(_continued)
        and request.writer.output_size == 0
    ):
        request[_continued] = True
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # (as aiohttp's own: the answer has not started)


def check_refused_early(request: web.Request) -> None:
    """Before anything else (authentication included): 417 for an `Expect` other than
    `100-continue`; 501 for a transfer coding other than
    `chunked` (aiohttp's parser checks only that `chunked` comes last and drops the others,
    so a `gzip, chunked` body would be read still gzipped: RFC 9112 §6.1); 415 for a lone
    `br` or `zstd` body, as aiohttp's parser answered when it decoded bodies itself (without
    their library)."""
    expect = request.headers.get(hdrs.EXPECT)
    if expect is not None and expect.strip().lower() != _CONTINUE:
        raise ExpectationFailed(
            f"Expect: {expect} is no expectation the gateway meets (only 100-continue)"
        )
    codings = [
        coding.split(";", 1)[0].strip().lower()
        for value in request.headers.getall(hdrs.TRANSFER_ENCODING, ())
        for coding in value.split(",")
    ]
    if others := [coding for coding in codings if coding and coding != "chunked"]:
        raise NotImplementedCoding(
            f"Transfer-Encoding {', '.join(others)} is not implemented: send the body as "
            "it is, chunked or with a Content-Length, and a gzip or deflate body with "
            "Content-Encoding (which is decoded)"
        )
    if hdrs.CONTENT_ENCODING not in request.headers:
        return
    given = request.headers.getall(hdrs.CONTENT_ENCODING)
    if len(given) == 1 and given[0].strip().lower() in REFUSED_EARLY:
        content_coding(request)


async def read_body(request: web.Request, limit: int | None = None) -> bytes:
    """The body, decoded from its content coding; 413 past `limit` bytes (by default
    `client_max_size`, GATEWAY_MAX_BODY_BYTES) as sent and, when coded, as decoded."""
    coding = content_coding(request)
    await send_continue(request)
    if coding is None:
        if request.content.is_eof():  # all of it arrived with the headers: nothing to wait for
            return await request.read()
        async with body_deadline():
            return await request.read()
    async with body_deadline():
        return await _decode(request, coding, limit or request.client_max_size)


async def _decode(request: web.Request, coding: str, limit: int) -> bytes:
    """A gzip or deflate body inflated step by step, never past `limit` + 1 bytes (a small
    body that inflates to gigabytes is a 413 at the limit), and whole: a stream cut short
    (its end or gzip trailer missing, aiohttp took that as the end) or corrupt is a 400. A
    `deflate` body is zlib (RFC 9110), or raw deflate as some clients send it."""
    max_raw = request.client_max_size
    raw = 0
    out = bytearray()
    inflate: Any = None
    tail = b""
    while True:
        chunk = tail or await request.content.readany()
        tail = b""
        if not chunk:
            break
        raw += len(chunk)
        if 0 < max_raw < raw:
            raise web.HTTPRequestEntityTooLarge(max_size=max_raw, actual_size=raw)
        if inflate is None:
            raw_deflate = coding == "deflate" and chunk[0] & 0x0F != 8
            inflate = zlib.decompressobj(31 if coding == "gzip" else -15 if raw_deflate else 15)
        data = chunk
        try:
            while True:
                room = min(_DECODE_CHUNK, limit + 1 - len(out))
                piece = inflate.decompress(data, room)
                out += piece
                if len(out) > limit:
                    raise _inflated_too_large(limit)
                data = inflate.unconsumed_tail
                if inflate.eof and inflate.unused_data:
                    if coding != "gzip":
                        raise _undecodable(coding, "bytes follow the end of the stream")
                    # gzip allows members one after another (RFC 1952 §2.2)
                    raw -= len(inflate.unused_data)
                    tail = inflate.unused_data
                    inflate = None
                    break
                if not data and len(piece) < room:
                    break  # this chunk used up, and no output held back
        except zlib.error as exc:
            raise _undecodable(
                coding, str(exc).removeprefix("Error -3 while decompressing data: ")
            ) from None
    if inflate is None or not inflate.eof:
        raise _undecodable(coding, "the stream is cut short (its end is missing)")
    return bytes(out)


def _undecodable(coding: str, why: str) -> web.RequestPayloadError:
    """Answered by the edge like a body aiohttp could not read: a 400, the connection closed."""
    return web.RequestPayloadError(f"the {coding} body does not decode: {why}")


def _inflated_too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body inflates past the limit of {limit} bytes")


FormValue = str | bytes | bytearray | web.FileField


async def read_form(request: web.Request) -> MultiDictProxy[FormValue]:
    """A form's fields (urlencoded or multipart), within the same deadline as a body.
    ValueError for a multipart body that cannot be read."""
    if content_coding(request) is not None:
        return await _read_coded_form(request)
    async with body_deadline():
        if request.content_type == "multipart/form-data":
            return await _read_multipart(request)
        return await request.post()


async def _read_coded_form(request: web.Request) -> MultiDictProxy[FormValue]:
    """A form in a content coding, read as `post()` reads a plain one, from its decoded body."""
    if request.content_type == "multipart/form-data":
        async with body_deadline():
            return await _read_multipart(request)
    if request.content_type not in ("", "application/x-www-form-urlencoded"):
        return MultiDictProxy(MultiDict())
    body = await read_body(request)
    charset = text_codec(request.charset or "utf-8")
    if charset is None:
        raise ValueError("a form in an unknown charset")
    pairs = parse_qsl(body.rstrip().decode(charset), keep_blank_values=True, encoding=charset)
    return MultiDictProxy(MultiDict[FormValue](pairs))


async def multipart_reader(request: web.Request, limit: int | None = None) -> MultipartReader:
    """The body's multipart reader; of the decoded body when it has a content coding (read
    whole first: its size is the limit's, `limit` or `client_max_size`, as decoded)."""
    if content_coding(request) is None:
        return await request.multipart()
    stream = StreamReader(
        BaseProtocol(asyncio.get_running_loop()), 2**16, loop=asyncio.get_running_loop()
    )
    stream.feed_data(await read_body(request, limit))
    stream.feed_eof()
    return MultipartReader(request.headers, stream)


# A form part's Content-Transfer-Encoding aiohttp decodes (none given: as it is).
TRANSFER_ENCODINGS: Final = frozenset({"", "base64", "quoted-printable", "binary", "8bit", "7bit"})


async def next_part(reader: MultipartReader) -> MultipartReader | BodyPartReader | None:
    """The form's next part (None at its end). ValueError for a part whose headers cannot be
    read (a control character in one, too many): aiohttp raises its HTTP parser's error, which
    no caller of a form reading takes for a malformed body (a 500)."""
    try:
        return await reader.next()
    except BadHttpMessage as exc:
        raise ValueError(f"a form part's headers cannot be read: {exc.message}") from None


async def _read_multipart(request: web.Request) -> MultiDictProxy[FormValue]:
    """A multipart form as aiohttp's `post()` reads it, but each file in memory (a BytesIO;
    the body is within `client_max_size` anyway): `post()` spools a file part into a
    temporary file, and drops those of the parts read so far unclosed when a later part
    fails (a part without a name, a body cut short or too big): a ResourceWarning ("Unclosed
    file") whenever the garbage collector came by."""
    out: MultiDict[FormValue] = MultiDict()
    reader = await multipart_reader(request)
    while (part := await next_part(reader)) is not None:
        if not isinstance(part, BodyPartReader):
            raise ValueError("a nested multipart body is not a form")
        if part.name is None:
            raise ValueError("a form part without a name")
        raw = bytearray()
        while chunk := await part.read_chunk():
            if 0 < request.client_max_size < request.content.total_bytes:
                raise web.HTTPRequestEntityTooLarge(
                    max_size=request.client_max_size, actual_size=request.content.total_bytes
                )
            raw.extend(chunk)
        coding = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING, "").lower()
        if coding not in TRANSFER_ENCODINGS:  # aiohttp raises RuntimeError (a 500) for one
            raise ValueError(f"a form part in an unknown transfer encoding: {coding[:40]!r}")
        value = bytearray()
        async for decoded in part.decode_iter(raw):
            value.extend(decoded)
        content_type = part.headers.get(hdrs.CONTENT_TYPE)
        if part.filename:
            media = content_type or "application/octet-stream"
            upload = io.BytesIO(value)
            out.add(part.name, web.FileField(part.name, part.filename, upload, media, part.headers))
        elif content_type is None or content_type.startswith("text/"):
            charset = text_codec(part.get_charset(default="utf-8"))
            if charset is None:  # a charset Python does not read as text
                raise ValueError("a form part in an unknown charset")
            out.add(part.name, value.decode(charset))
        else:
            out.add(part.name, value)
    return MultiDictProxy(out)


def charset_of(content_type: str | None) -> str | None:
    """The charset a Content-Type names (`application/yaml; charset=windows-1252`, a multipart
    part's own), or None for none."""
    if not content_type:
        return None
    return parse_mimetype(content_type).parameters.get("charset") or None


@asynccontextmanager
async def body_deadline() -> AsyncIterator[None]:
    """What reads a body inside must be done within BODY_TIMEOUT_SECONDS, else a 408."""
    try:
        async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
            yield
    except TimeoutError:
        raise RequestTimeout(f"the body took over {BODY_TIMEOUT_SECONDS:.0f} s to arrive") from None


def parse_json(body: bytes, charset: str | None = None) -> Any:
    """The body's JSON, read as a trigger's is (gateway/formats/bodies.py): UTF-8, a byte
    order mark ignored, or else the charset its media type names; an integer past the 64-bit
    range as its exact decimal text, a `WideInt` (orjson makes one past 2**64 a float that
    lost digits, and BSON stores none past 2**63 - 1): a number to every type check, so a
    route that wants text or a number refuses it at its pointer, and a free-form field keeps
    every digit. Nested at most 32 deep (the size is capped while it is read:
    `client_max_size`, GATEWAY_MAX_BODY_BYTES)."""
    if not body:
        raise BadRequest("the request body is empty")
    body = utf8_body(body, charset)
    try:
        data = loads_exact(body)
    except orjson.JSONDecodeError as exc:
        raise malformed(body, exc) from None
    check_json(body, data)
    return data


async def read_object(request: web.Request) -> dict[str, Any]:
    data = await read_json(request)
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


async def read_optional_object(request: web.Request) -> dict[str, Any]:
    """The body's object, or {} for a POST without a body."""
    return await read_object(request) if request.body_exists else {}


def unknown_members(
    body: dict[str, Any], schema: dict[str, Any], at: str = ""
) -> list[FieldProblem]:
    """A problem for each member of `body` (at the pointer `at`) that `schema`, the request
    schema the route's OpenAPI operation publishes (`additionalProperties: false`), does not
    declare: the document and the server refuse the same members."""
    known = schema.get("properties", {})
    return [
        FieldProblem(f"{at}/{k}", f"unknown field {k!r}", "additionalProperties")
        for k in sorted(set(body) - set(known))
    ]


def refuse_unknown_members(body: dict[str, Any], schema: dict[str, Any]) -> None:
    """422 naming every member `schema` does not declare (`unknown_members`)."""
    if problems := unknown_members(body, schema):
        raise InvalidPayload("the body does not fit this route", problems)


def check_members(
    body: dict[str, Any],
    types: dict[str, type | tuple[type, ...]],
    required: Collection[str] = (),
) -> None:
    """422 for a member the route does not know, of the wrong JSON type, or `required` and
    missing, every one listed (the OpenAPI document declares exactly these, with
    additionalProperties false)."""
    problems = [
        FieldProblem(f"/{k}", f"{k} is not a member of this body", "additionalProperties")
        for k in sorted(set(body) - set(types))
    ]
    problems += [
        FieldProblem(f"/{k}", f"{k} is required", "required") for k in required if k not in body
    ]
    problems += [
        FieldProblem(f"/{k}", f"{k} has the wrong type", "type")
        for k, kind in types.items()
        if k in body and not _of_type(body[k], kind)
    ]
    if problems:
        raise InvalidPayload("the body does not fit this route", problems)


def _of_type(value: Any, kind: type | tuple[type, ...]) -> bool:
    """`value` is of JSON type `kind`; an integer as JSON Schema counts them (3.0 too). An
    integer past 64 bits (`WideInt`, its text) is of none: no member is text or such a
    number."""
    if isinstance(value, bool | WideInt):
        return False
    if kind is int:
        return whole_number(value) is not None
    return isinstance(value, kind)


def page_params(request: web.Request, default: int = paging.DEFAULT_PAGE) -> tuple[int, str | None]:
    return paging.page_params(request.query, default)


def query_flag(request: web.Request, name: str, default: bool) -> bool:
    """A boolean query parameter: true/1 or false/0 (any case); `default` when absent."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return parse_flag(raw)
    except ValueError:
        raise BadRequest(f"{name} must be true, false, 1 or 0, got {raw!r}") from None


def page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A page of API documents, each with its `id`."""
    return paging.page(items, limit, items[-1]["id"] if items else None)


VERSION_NUMBER: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
ACTIVATE: dict[str, Any] = {
    "type": "object",
    "required": ["version"],
    "additionalProperties": False,
    "properties": {"version": VERSION_NUMBER},
}
"""The body of activating a version (a mapping's, a flow's)."""
_LEAF: dict[str, Any] = {"type": "string", "description": "a JSON Pointer into the document"}
VERSION_DIFF: dict[str, Any] = {
    "type": "object",
    "required": ["name", "from", "to", "added", "removed", "changed", "unified"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "from": VERSION_NUMBER,
        "to": VERSION_NUMBER,
        "added": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "new"],
                "additionalProperties": False,
                "properties": {"path": _LEAF, "new": {}},
            },
        },
        "removed": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "old"],
                "additionalProperties": False,
                "properties": {"path": _LEAF, "old": {}},
            },
        },
        "changed": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "old", "new"],
                "additionalProperties": False,
                "properties": {"path": _LEAF, "old": {}, "new": {}},
            },
        },
        "unified": {"type": "string", "description": "the sources as a unified diff"},
    },
}
"""What a diff of two versions answers (gateway/versioned.py `diff`): the parsed documents'
leaves added, removed and changed, by JSON Pointer, and the sources' unified diff."""


async def read_version_to_activate(request: web.Request) -> int:
    """The version number of an ACTIVATE body; 422 for another member."""
    body = await read_object(request)
    refuse_unknown_members(body, ACTIVATE)
    return version_number(body.get("version"), "/version")


def version_number(value: Any, pointer: str) -> int:
    """A version number (VERSION_NUMBER) from a path or query parameter or a JSON member;
    `2.0` is the integer 2, as in JSON Schema."""
    if isinstance(value, str) and value.isdecimal() and len(value) <= 10:
        value = int(value)  # (int() refuses text past 4,300 digits: longer stays text, refused)
    value = value if (number := whole_number(value)) is None else number
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
        message = f"{pointer.lstrip('/')} must be a version number (1, 2, ...), got {shown(value)}"
        raise InvalidPayload(message, [FieldProblem(pointer, message, "type")])
    return value
