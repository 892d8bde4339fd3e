"""The sender's connections: aiohttp's, tolerant of one malformed answer partners send, a
body on a `204 No Content` or a `304 Not Modified` (FastAPI before 0.79 wrote `null` after
a 204; some servers write the `Content-Length` body anyway), or on the answer to a `HEAD`
(a hand-written handler, some PHP or IIS setups write the GET's body: a disabled partner's
probe is a HEAD).

HTTP says such an answer ends with its head. aiohttp's C parser then reads the stray bytes
as the start of the next answer and, when they came in the same packet, refuses the whole
packet ("Bad status line"): the status it had read was lost, and a partner that had taken a
delivery got it again, as after a transport failure (a probe never re-enabled its partner).
`AnswerHandler` hands aiohttp the head of a 204 or 304, or of any answer to a HEAD, alone
and drops what follows it on that connection until the next request, closing the connection
(after stray bytes nothing on it can be trusted); a 204 or 304 whose head announces a body
(`Content-Length` above 0 on a 204, or `Transfer-Encoding`) is not kept for another request
either, since its body may still be on the way (a HEAD's answer announces the GET's body,
which does not follow). Stray bytes that come only after the next request went on the
connection (a 204 or a HEAD's answer that announced nothing kept it) are skipped before that
request's status line. Every other answer goes to aiohttp as it
arrives: `AnswerHandler` only looks at the head of each answer, which ends where the parser
ends it, at an empty line after lines ending in CRLF or a bare LF (hand-written servers and
small embedded stacks write `\n`). A head reaches the parser whole (held while it comes in
pieces), read as RFC 9110/9112 tell a client to read it where aiohttp's parser refused the
whole head and the status was lost (`_framed`): no `Content-Length` beside a chunked
`Transfer-Encoding` (§6.3: the Transfer-Encoding overrides the length, as Python's, Go's and
.NET's clients read it), no `Transfer-Encoding: identity` beside a length (no coding: the
length frames the body), one length for a list of identical ones, obs-folds joined,
whitespace before a colon removed. The connection is not kept after such an answer. A final head the
parser still refuses keeps the status its status line said (`HeadRefused`).

The head of an answer with a body reaches aiohttp's parser alone, before a byte of the
body: the parser has the answer, and its status, before it reads the body's framing. A body
it then refuses (`Transfer-Encoding: chunked` on a body that is not chunked, as an app or a
proxy copying its upstream's header sends; chunk lines ending in a bare LF, as small
embedded stacks write them; a trailer past the field limit) ends the body's read at once
with `BodyRefused`, the status kept: in the same packet as the head the parser refused the
whole packet and the status was lost, in a later one the body's read waited for the
partner's whole timeout (aiohttp sets the parser's error on the connection, never on the
body being read). A body cut by the gateway (a head past `HEAD_MOST`) ends so too, never as
a complete one.

Interim 1xx heads are read in a loop (one read may hold hundreds: a long-running partner's
`102 Processing` keep-alives waiting in the socket), at most `INTERIM_MOST` before one answer;
past that the answer is refused, as a head too long is. Each is read as a final head is
(`_framed`): a partner's stack writes all its heads alike.

The head of an answer is read as large as partners send them (a 9 KB session cookie, a long
`Content-Security-Policy`, a CDN's 150 tracing headers: aiohttp's defaults, 8,190 bytes a line
and 128 fields, refused such an answer whole and lost its status): a status line or a field
of up to `HEAD_FIELD_MOST` bytes, up to `HEAD_FIELDS_MOST` fields (the session's parser
limits, `Sender.start`), the whole head at most `HEAD_MOST` bytes (`AnswerHandler`, since
the parser bounds each field and their number, not their sum). Past them the answer is
refused, as not HTTP the gateway reads.
"""

from __future__ import annotations

import asyncio
import functools
import re
from typing import Any, Final

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import _EXC_SENTINEL
from aiohttp.helpers import set_exception as _set_exception
from aiohttp.http_exceptions import HttpProcessingError

EMPTY_ANSWERS: Final = frozenset({204, 304})
"""The statuses whose answers end with their head (as does every answer to a HEAD)."""
HEAD_FIELD_MOST: Final = 64 * 1024
"""The longest status line, or header field (its name and value), of an answer read."""
HEAD_FIELDS_MOST: Final = 256
"""The most header fields an answer read has."""
HEAD_MOST: Final = 256 * 1024
"""The largest head of an answer read, its status line and every field."""
INTERIM_MOST: Final = 100
"""The most interim 1xx heads (`102 Processing`, `103 Early Hints`) read before an answer:
a long-running partner's keep-alive every second over the longest partner timeout (60 s)
fits; Go's client accepts 5."""
_ODD_HEAD: Final = re.compile(
    rb"\n(?:content-length[ \t]*:[^\n]*,|[ \t]+\S|[^:\n]*?[ \t]:)", re.IGNORECASE
)
"""A field `_framed` may have to mend: a `Content-Length` list, an obs-fold, whitespace
before a colon. With `_CONTENT_LENGTH` found twice, or beside `_TRANSFER_ENCODING`, the
framing too. The common head is none of these, and is passed on as it came."""
_CONTENT_LENGTH: Final = re.compile(rb"\ncontent-length[ \t]*:", re.IGNORECASE)
_TRANSFER_ENCODING: Final = re.compile(rb"\ntransfer-encoding[ \t]*:", re.IGNORECASE)
_STATUS_LINE: Final = re.compile(rb"HTTP/(?:1\.[01]|2\.0|0\.9) ([0-9]{3})(?: [^\r]*)?")
"""A status line aiohttp's C parser (llhttp) reads, its CR at most before the LF: the versions
it knows, one space, three ASCII digits (`0200`, `2000`, `20` refused), a reason phrase after
a space or none (`200\tOK` refused), no CR inside."""
_HEAD_END: Final = re.compile(rb"\n\r?\n")
"""The empty line ending a head, its lines ending in CRLF or a bare LF, as the parser reads
them (aiohttp's C parser is lenient of a missing CR)."""


class BodyRefused(aiohttp.ClientPayloadError):
    """The parser refused an answer's body after its head (its chunk framing, a trailer), or
    the gateway cut it: the body is unusable, the answer's status stands. `message` is the
    parser's, which may quote the bytes it refused."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HeadRefused(HttpProcessingError):
    """The head of a final answer refused (by the parser, or past `HEAD_MOST`) after its
    status line was read: the answer's framing is unusable, its status (`answer_status`)
    stands, as when a body is refused (`BodyRefused`). The partner did answer: a delivery
    it took is not sent again because the rest of its head was odd."""

    def __init__(self, answer_status: int, message: str) -> None:
        super().__init__(code=400, message=message)
        self.answer_status = answer_status


def refused_status(exc: BaseException) -> int | None:
    """The status of an answer whose head was refused (`HeadRefused`, the cause of aiohttp's
    `ClientResponseError`), None when `exc` is no such refusal."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, HeadRefused):
        cause = cause.__cause__
    return None if cause is None else cause.answer_status


class AnswerHandler(ResponseHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._head = bytearray()  # the current answer's head, as far as it came
        self._watching = False  # reading an answer's head
        self._dropping = False  # after an answer that ends with its head: what comes is stray
        self._resyncing = False  # the answer after that: skip stray bytes before it
        self._stray = bytearray()
        self._head_request = False  # a HEAD was asked: its answer ends with its head
        self._interims = 0  # interim 1xx heads before the current request's answer
        self._handing: int | None = None  # the status of the final head with the parser

    def set_response_params(self, **params: Any) -> None:
        """A request is about to be sent on this connection: watch its answer's head
        (`skip_payload`: aiohttp's word for a HEAD request)."""
        self._head_request = bool(params.get("skip_payload", False))
        self._head.clear()
        self._stray.clear()
        self._interims = 0
        self._resyncing = self._dropping
        self._watching, self._dropping = True, False
        super().set_response_params(**params)

    def data_received(self, data: bytes) -> None:
        if (cut := self._ordinary_head(data)) is not None:
            self._watching = False
            self._pass_on(data[:cut], data[cut:])
            return
        if self._dropping:
            if data:
                self._drop()
            return
        if self._resyncing and data:
            data = self._resync(data)
        if not self._watching or not data:
            super().data_received(data)
            return
        self._watch(data)

    def _watch(self, data: bytes) -> None:
        """The heads of an answer, as they come, interim 1xx ones first: in a loop, since
        one read may hold hundreds of them (a recursion per head overflowed Python's
        stack, an exception no caller expects)."""
        while data:
            data = self._watch_head(data)

    def _watch_head(self, data: bytes) -> bytes:
        """One head: a 204 or 304 is handed on without what follows it, an interim 1xx
        before the answer it announces (what follows it returned, to be watched in turn)."""
        before = len(self._head)
        self._head += data
        end = _head_end(self._head, max(before - 2, 0))
        if end > HEAD_MOST or (end == -1 and len(self._head) > HEAD_MOST):
            status = _status(bytes(self._head[:HEAD_FIELD_MOST]))
            self._refuse_head(f"a head longer than {HEAD_MOST} bytes", status)
            return b""
        if end == -1:
            return b""  # held until it ends: the parser gets a head whole (`_framed`)
        cut = end - before  # where the head ends in `data`
        head = bytes(self._head[:end])
        self._head.clear()
        status = _status(head)
        if self._ends_with_head(status):
            assert status is not None
            self._watching, self._dropping = False, True
            self._hand_head(head)
            if not self._head_request and _announces_body(status, head):
                self.force_close()
            if data[cut:]:
                self._drop()
        elif status is not None and 100 <= status < 200 and status != 101:
            self._interims += 1
            if self._interims > INTERIM_MOST:
                self._refuse_head(f"more than {INTERIM_MOST} interim (1xx) answers")
                return b""
            self._hand_interim(head)  # an interim answer: the real one follows
            return data[cut:]
        else:
            self._watching = False
            self._pass_on(head, data[cut:])
        return b""

    def _ordinary_head(self, data: bytes) -> int | None:
        """The common case, passed on at once: the whole head of an answer with a body in
        the first packet (what the rest of `data_received` would find, without copying it
        into `_head`): where the head ends in `data`, None when it is not that case."""
        if not self._watching or self._head or self._resyncing or self._dropping:
            return None
        end = _head_end(data)
        if not -1 < end <= HEAD_MOST:
            return None
        status = _status(data)
        if status is None or status < 200 or self._ends_with_head(status):
            return None
        return end

    def _pass_on(self, head: bytes, rest: bytes) -> None:
        """An answer's `head` handed to the parser, then what followed it in the packet:
        the head alone first, so that a body the parser refuses in the same packet does not
        take the answer with it (`set_exception`)."""
        self._hand_head(head)
        if rest and self.exception() is None:
            super().data_received(rest)

    def _hand_head(self, head: bytes) -> None:
        """A whole final head to the parser, a `Content-Length` beside a chunked
        `Transfer-Encoding` left out (`_framed`); the connection is not kept after such an
        answer, whose framing its partner's stack got wrong."""
        framed = _framed(head)
        if framed is not head:
            self.force_close()
        self._handing = _status(head)
        try:
            super().data_received(framed)
        finally:
            self._handing = None

    def _hand_interim(self, head: bytes) -> None:
        """An interim 1xx head to the parser, read as a final one is (`_framed`): a partner's
        stack writes every head alike (`Server : tiny`), and a refused interim head lost the
        answer after it. The connection is not kept after one mended."""
        framed = _framed(head)
        if framed is not head:
            self.force_close()
        super().data_received(framed)

    def set_exception(self, exc: BaseException, exc_cause: BaseException = _EXC_SENTINEL) -> None:
        """The parser refused what it read, or the gateway a head too long (both
        `HttpProcessingError`s): the body being read, if any, ends with `BodyRefused` (aiohttp
        sets the error on the connection only, and the body's read waited for the partner's
        whole timeout, or, cut by us, ended as if complete). A final head refused keeps its
        status (`HeadRefused`)."""
        if isinstance(exc, HttpProcessingError) and not isinstance(exc, HeadRefused):
            if self._handing is not None and self._handing >= 200:
                exc = HeadRefused(self._handing, exc.message)
        body = self._payload
        if (
            isinstance(exc, HttpProcessingError)
            and body is not None
            and not body.is_eof()
            and body.exception() is None
        ):
            cause = exc if exc_cause is _EXC_SENTINEL else exc_cause
            _set_exception(body, BodyRefused(exc.message), cause)
        super().set_exception(exc, exc_cause)

    def _ends_with_head(self, status: int | None) -> bool:
        """Whether the answer of `status` ends with its head: a 204 or 304, any final answer
        to a HEAD (an interim 1xx is followed by the real one)."""
        if status in EMPTY_ANSWERS:
            return True
        return self._head_request and status is not None and status >= 200

    def _refuse_head(self, why: str, status: int | None = None) -> None:
        """A head past `HEAD_MOST` bytes, or interim answers past `INTERIM_MOST`: the answer
        is refused as aiohttp refuses one past its own limits, the connection closed; the
        `status` of a final answer whose status line was read kept (`HeadRefused`)."""
        self._watching = False
        self._head.clear()
        if self.transport is not None:
            self.transport.close()
        if status is not None and status >= 200:
            self.set_exception(HeadRefused(status, why))
        else:
            self.set_exception(HttpProcessingError(code=400, message=why))

    def _resync(self, data: bytes) -> bytes:
        """The answer to the request after a 204 or 304 on this connection, without stray
        bytes of that answer's body that came too late to be dropped with it (a packet after
        the next request went): what is before its status line. Held until that is seen."""
        self._stray += data
        at = self._stray.find(b"HTTP/")
        if at == -1 and len(self._stray) <= HEAD_MOST:
            return b""
        self._resyncing = False
        if at > 0:
            self.force_close()
        data = bytes(self._stray[max(at, 0) :])
        self._stray.clear()
        return data

    def _drop(self) -> None:
        """Stray bytes after an answer that has no body: the connection goes (the answer,
        already parsed, is still read)."""
        self.force_close()
        if self.transport is not None:
            self.transport.close()


def _head_end(data: bytes | bytearray, start: int = 0) -> int:
    """Where the head in `data` ends (after its empty line), -1 when it does not yet."""
    found = _HEAD_END.search(data, start)
    return -1 if found is None else found.end()


def _framed(head: bytes) -> bytes:
    """`head` as a user agent reads it (RFC 9110/9112), for a parser that refuses it as it
    came: obs-fold lines joined to their field with a space (RFC 9112 §5.2), whitespace
    between a field name and its colon removed (§5.1, as a proxy must: the gateway forwards
    the answer's data to proxy callers), no `Content-Length` beside a `Transfer-Encoding`
    whose last coding is chunked (§6.3: the Transfer-Encoding overrides it), no
    `Transfer-Encoding` naming only `identity` beside a length (no transfer coding: RFC 2616
    named it, RFC 9112 has none such; Python's http.client frames such an answer by its
    length, which a partner keeping its connection open relies on), and one `Content-Length`
    for a list of identical values (RFC 9110 §8.6: `9, 9`, or two fields of `9`). `head`
    itself when none applies; a list of different lengths, or a length beside another coding
    not ending in chunked (`gzip`: §6.3 reads such a body until the connection closes, which
    a partner that framed it by its length never does; "ought to be handled as an error"),
    is left for the parser to refuse, the status kept (`HeadRefused`). aiohttp's parser
    refused each of these whole, and the answer's status was lost (llhttp's lenient flags
    are out of reach)."""
    if _ODD_HEAD.search(head) is None and not _lengths_to_mend(head):
        return head
    lines = _unfolded(head.split(b"\n"))
    fields = [_field_name(line) for line in lines]
    codings = _codings(lines, fields)
    identity = bool(codings) and all(coding == b"identity" for coding in codings)
    coded = not identity and codings[-1:] == [b"chunked"]
    lengths = {
        value.strip(b" \t\r")
        for line, name in zip(lines, fields, strict=True)
        if name == b"content-length"
        for value in line.partition(b":")[2].split(b",")
    }
    uncoded = identity and bool(lengths)  # `identity` is no coding: the length frames it
    length = lengths.pop() if len(lengths) == 1 and not coded else None
    kept: list[bytes] = [lines[0]]
    length_kept = False
    for line, name in zip(lines[1:], fields[1:], strict=True):
        if name == b"transfer-encoding" and uncoded:
            continue
        if name == b"content-length" and (coded or length is not None):
            if length is None or length_kept:
                continue
            line, length_kept = b"Content-Length: " + length + b"\r", True
        elif name is not None:
            written, colon, value = line.partition(b":")
            line = written.rstrip(b" \t") + colon + value
        kept.append(line)
    framed = b"\n".join(kept)
    return head if framed == head else framed


def _codings(lines: list[bytes], fields: list[bytes | None]) -> list[bytes]:
    """The transfer codings the head's `Transfer-Encoding` fields name, lowercased, in order."""
    named = (
        coding.strip(b" \t\r").lower()
        for line, name in zip(lines, fields, strict=True)
        if name == b"transfer-encoding"
        for coding in line.partition(b":")[2].split(b",")
    )
    return [coding for coding in named if coding]


def _lengths_to_mend(head: bytes) -> bool:
    """Whether `head` names a `Content-Length` twice, or one beside a `Transfer-Encoding`."""
    named = len(_CONTENT_LENGTH.findall(head))
    return named > 1 or (named == 1 and _TRANSFER_ENCODING.search(head) is not None)


def _unfolded(lines: list[bytes]) -> list[bytes]:
    """Header lines with each obs-fold (a line starting with a space or a tab) joined to the
    field above it by one space, as RFC 9112 §5.2 tells a user agent."""
    joined: list[bytes] = []
    for line in lines:
        if joined and len(joined) > 1 and line[:1] in (b" ", b"\t") and line.strip():
            joined[-1] = joined[-1].rstrip(b"\r") + b" " + line.lstrip(b" \t")
        else:
            joined.append(line)
    return joined


def _field_name(line: bytes) -> bytes | None:
    """The name of the header field on `line`, lowercased, without whitespace before its
    colon; None for a line that is no field."""
    name, colon, _ = line.partition(b":")
    return name.rstrip(b" \t").lower() if colon else None


def _status(head: bytes) -> int | None:
    """The status of the answer whose head starts `head`, None when it names none: when its
    status line is not one aiohttp's parser reads (`_STATUS_LINE`), or its status is none of
    HTTP's (100-599). A line the parser refuses (`0200`, `2000`, a run of 30 digits) is no
    status to keep (`HeadRefused`): a partner's garbage is no delivered 200, nor a number
    no database holds."""
    end = head.find(b"\n")
    line = (head if end == -1 else head[:end]).removesuffix(b"\r")
    read = _STATUS_LINE.fullmatch(line)
    if read is None:
        return None
    status = int(read[1])
    return status if 100 <= status <= 599 else None


def _announces_body(status: int, head: bytes) -> bool:
    """Whether the head of a 204 or 304 says a body follows: a `Transfer-Encoding`, or (on a
    204: a 304's is the length the document would have) a `Content-Length` above 0."""
    for line in head.split(b"\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and status == 204 and value.strip() not in (b"", b"0"):
            return True
    return False


def declared_body(response: aiohttp.ClientResponse) -> str | None:
    """What an answer of a status without a body says of the body it nonetheless announced
    (not read): a note for the attempt, None when there is nothing to say."""
    if response.status not in EMPTY_ANSWERS:
        return None
    length = response.headers.get("Content-Length", "").strip()
    if response.status == 204 and length not in ("", "0"):
        return f"a {response.status} announcing a {length}-byte body; the body was not read"
    if "Transfer-Encoding" in response.headers:
        return f"a {response.status} announcing a body; the body was not read"
    return None


SAFE: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""The methods that only read (RFC 9110 §9.2.1): the ones `single_send` lets aiohttp repeat."""


class Dropped(aiohttp.ClientConnectionError):
    """A connection dropped before the answer's head (`dropped`: aiohttp's exception), taken
    out of aiohttp's reach so that it does not send the request again (`single_send`)."""

    def __init__(self, dropped: aiohttp.ClientError) -> None:
        super().__init__(str(dropped))
        self.dropped = dropped


async def single_send(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """A session's middleware: a request that may change something is sent once.

    aiohttp's `ClientSession._request` sends a GET, HEAD, OPTIONS, TRACE, PUT or DELETE
    again, once, on a new connection, when the connection drops before the answer's head
    (`ClientOSError`, `ServerDisconnectedError`; its private `_retry_connection`, with no
    public switch): a partner that read a PUT, processed it and hung up got it twice, and the
    caller one answer (a proxy call 200, a delivery one successful attempt). For a PUT or a
    DELETE (and a POST, which aiohttp never repeats) the drop is re-raised as `Dropped` (a
    `ClientError` the loop passes on): the call's outcome is `reset`. A safe method (`SAFE`:
    it reads, RFC 9110 §9.2.1) keeps aiohttp's one re-send, as every HTTP client repeats a
    read cut by a kept-alive connection the partner closed as it went. A failure to connect
    is not touched: aiohttp never repeats it. tests/test_outbound_single_send.py fails should
    an aiohttp re-send on another exception."""
    try:
        return await handler(request)
    except aiohttp.ClientConnectorError:
        raise
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
        if request.method in SAFE:
            raise
        raise Dropped(exc) from exc


class Connector(aiohttp.TCPConnector):
    """aiohttp's TCP connector, its connections `AnswerHandler`s.

    Through a private hook: the protocol factory `_factory` (a partial of `ResponseHandler`)
    every `TCPConnector` sets and opens its connections with. pyproject.toml bounds aiohttp
    to the minor series checked to have it; a release without it fails here, loudly, rather
    than reading answers with aiohttp's own handler."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        hook = getattr(self, "_factory", None)
        if not (isinstance(hook, functools.partial) and hook.func is ResponseHandler):
            raise RuntimeError(
                f"gateway/outbound/connection.py: aiohttp {aiohttp.__version__} has no "
                "TCPConnector._factory making ResponseHandlers, the hook through which the "
                "sender reads partners' answers (AnswerHandler); check how this aiohttp "
                "creates connections, adapt Connector, then move the bound in pyproject.toml"
            )
        self._factory = functools.partial(_answer_handler, self._loop)


def _answer_handler(loop: asyncio.AbstractEventLoop) -> ResponseHandler:
    return AnswerHandler(loop)
