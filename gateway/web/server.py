"""Serving the app: aiohttp's server, whose refusals of malformed HTTP are problem documents too.

aiohttp answers what its parser refuses (a request line over 8,190 bytes, a NUL byte in a
header, a bad method...) before any middleware runs, with a `text/plain` 400 and an ERROR log
line carrying a traceback. Here those become RFC 9457 problems like every other error (414
for a URL too long, 431 for headers too large, 400 otherwise) and one DEBUG line without a
traceback: a client's garbage is not our error (any client could fill the log with WARNINGs;
docs/operations.md "Logs": refusals, 4xx, at DEBUG). A body that cannot be read (a broken chunked
encoding), found while aiohttp drains what a route did not read, is one DEBUG line. Bodies are
not decoded here (the app turns aiohttp's decompression off): `web/requests.py` decodes them.

aiohttp has no public hook for this; the handler class is chosen by the low-level server,
so `GatewayRunner` gives its server a handler subclass (tests/test_http_edge.py pins the
behaviour, so an aiohttp upgrade that changes it fails there).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import gc
import logging
import os
import re
import socket
import struct
import sys
import termios
import threading
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway import eventloop
from gateway.errors import (
    BadRequest,
    GatewayError,
    HeaderFieldsTooLarge,
    RequestTimeout,
    UriTooLong,
)
from gateway.logs import request_id_var
from gateway.shutdown import STOP_SIGNALS, TEARDOWN_SECONDS
from gateway.web.problems import PROBLEM_JSON, dumps
from gateway.web.requests import BODY_TIMEOUT_SECONDS
from gateway.web.state import services_key

log = logging.getLogger("gateway.access")
_log = logging.getLogger(__name__)

# Linux's `struct tcp_info`: where `tcpi_last_ack_recv` (u32, ms), `tcpi_bytes_acked` (u64)
# and `tcpi_snd_wnd` (u32) are; SIOCOUTQ is termios' TIOCOUTQ there.
_TCP_INFO: Final = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
_LAST_ACK_AT: Final = 56
_ACKED_AT: Final = 120
_WINDOW_AT: Final = 228
_TCP_INFO_SIZE: Final = _WINDOW_AT + 4

WRITE_TIMEOUT_SECONDS: Final = 30.0
"""The default of `GATEWAY_WRITE_TIMEOUT_SECONDS` (config.py): a client that takes no byte of
its answer for this long loses its connection."""

_REFUSALS: dict[int, type[GatewayError]] = {
    cls.status: cls for cls in (BadRequest, UriTooLong, HeaderFieldsTooLarge)
}


def _unread_instance(request_id: str) -> str:
    """The `instance` of a problem answered before any request line was read whole (a
    refusal of the parser, a head too slow): the path is not known (nor echoed: a URL may hold
    a token), so the occurrence is named by the request id its `X-Request-ID` carries."""
    return f"urn:rabbot:request:{request_id}"


# aiohttp's LineTooLong names the start of what was too long: a request target (the URL)
# starts with "/", a scheme or "*"; anything else is a header.
_TARGET = re.compile(r"reading: (?:bytearray\()?b'(?:/|https?:|\*)")


def _refusal(exc: BadHttpMessage, status: int) -> tuple[int, str]:
    """The status and a detail that quotes nothing the client sent (a URL may hold a token)."""
    text = exc.message if isinstance(exc.message, str) else str(exc)
    if isinstance(exc, LineTooLong):
        if _TARGET.search(text):
            return 414, "the request line (method and URL) is longer than 8190 bytes"
        return 431, "a header line is longer than 8190 bytes"
    return status, text.splitlines()[0].rstrip(":") if text else "malformed request"


class ProblemRequestHandler(RequestHandler):
    # How long a request's head (request line and headers) may take to arrive once its first
    # byte did: a client trickling its headers (slowloris) holds the connection no longer than
    # a slow body does (web/requests.py BODY_TIMEOUT_SECONDS), then gets a 408 problem. aiohttp
    # bounds that phase only by its keep-alive timeout (75 s), closing without an answer.
    header_timeout: float = BODY_TIMEOUT_SECONDS
    _header_deadline: asyncio.TimerHandle | None = None
    # How long an answer may wait on a client that takes none of its bytes before the
    # connection is closed (`GATEWAY_WRITE_TIMEOUT_SECONDS`, set by the server): aiohttp has
    # no write timeout, and a client that never reads a large answer (`/openapi.json`, 436 KB,
    # no login) while it ACKs zero-window probes held the connection, its handler and the
    # unsent answer for good. Watched from the first time the transport's buffer fills
    # (`pause_writing`), or an answer ends with bytes the kernel still holds, until nothing is
    # left unsent. Progress is what the client acknowledged (the kernel's count, Linux): the
    # transport's buffer shrinks only when the kernel's has room again (a third of it free),
    # so a steady slow reader looked stalled for most of the time it was reading. Not the
    # kernel's TCP_USER_TIMEOUT either: it resets a connection whose window stayed near zero
    # that long, though small window updates let bytes through all along.
    write_timeout: float = WRITE_TIMEOUT_SECONDS
    _write_watch: asyncio.TimerHandle | None = None
    _write_left = 0  # bytes in the transport's buffer at the last look
    _acked = 0  # bytes the client had acknowledged at the last look (Linux)
    _taken_at = 0.0  # when the client last took bytes (loop time)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._request_in_progress or self._messages:  # a whole head arrived
            self._cancel_header_deadline()
        elif self._header_deadline is None and self.transport is not None:
            self._header_deadline = self._loop.call_later(
                self.header_timeout, self._head_too_slow, self._request_count
            )

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_deadline()
        if self._write_watch is not None:
            self._write_watch.cancel()
            self._write_watch = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._start_write_watch()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._taken_at = self._loop.time()  # the buffer drained below its low-water mark

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """An answer the kernel's send buffer took whole (on loopback or a fast link, up to
        megabytes) never fills the transport's: watched from its end while the kernel holds
        some of it."""
        done = await super().finish_response(request, resp, start_time)
        if self._write_watch is None and (sent := _sent_so_far(self.transport)) and sent.held:
            self._start_write_watch()
        return done

    def _start_write_watch(self) -> None:
        if self._write_watch is None and self.transport is not None:
            self._taken_at = self._loop.time()
            self._write_left = self.transport.get_write_buffer_size()
            sent = _sent_so_far(self.transport)
            self._acked = sent.acked if sent else 0
            self._watch_writes()

    def _watch_writes(self) -> None:
        self._write_watch = self._loop.call_later(self.write_timeout / 4, self._look_at_writes)

    def _look_at_writes(self) -> None:
        """Whether the client took bytes since the last look; the connection aborted (its
        unsent bytes dropped, the handler's write failing) when none for `write_timeout`.
        Aborted, not closed: a close waits for the buffer to be sent, which is the wait."""
        self._write_watch = None
        if self.transport is None:
            return
        left, now = self.transport.get_write_buffer_size(), self._loop.time()
        sent = _sent_so_far(self.transport)
        if sent is None:  # not Linux: only the transport's buffer is seen
            taken, unsent = left < self._write_left, left
        else:
            taken, unsent = sent.acked > self._acked, left + sent.held
            self._acked = sent.acked
        if unsent == 0:
            return  # all taken: watched again the next time an answer waits
        if taken:
            self._taken_at = now
        self._write_left = left
        if now - self._taken_at < self.write_timeout or not _refusing(sent, self.write_timeout):
            self._watch_writes()
            return
        log.debug(
            "client took no bytes of its answer for %g s: connection closed",
            self.write_timeout,
            extra={"unsent_bytes": unsent},
        )
        _drop_unsent(self.transport)
        self.transport.abort()

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _head_too_slow(self, count: int) -> None:
        self._header_deadline = None
        if (
            self.transport is None
            or self._request_in_progress
            or self._messages
            or self._request_count != count
        ):
            return
        request_id = os.urandom(16).hex()
        log.debug("request head too slow: answered 408", extra={"status": 408})
        self._count(408)
        problem = RequestTimeout(
            f"the request's headers took over {self.header_timeout:g} s to arrive; retry"
        ).problem()
        body = dumps({**problem, "instance": _unread_instance(request_id)})
        head = (
            "HTTP/1.1 408 Request Timeout\r\n"
            f"Content-Type: {PROBLEM_JSON}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\nX-Request-ID: {request_id}\r\n"
            "X-Content-Type-Options: nosniff\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, BadHttpMessage) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        status, detail = _refusal(exc, status)
        # A fresh id: the caller's X-Request-ID cannot be echoed, since aiohttp hands over a
        # request it could not parse without any of its headers (docs/api.md).
        request_id = os.urandom(16).hex()
        request_id_var.set(request_id)
        log.debug("malformed request refused: %s", detail, extra={"status": status})
        self._count(status)
        error = _REFUSALS.get(status, BadRequest)(f"malformed HTTP request: {detail}")
        body = {**error.problem(), "instance": _unread_instance(request_id)}
        response = web.Response(status=error.status, body=dumps(body), content_type=PROBLEM_JSON)
        response.headers["X-Request-ID"] = request_id
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """After the answer, aiohttp reads what is left of a body a route did not read (a 405,
        a route without a body): one that cannot be read (a chunk size that is not hex) is the
        client's mistake, told in one line; the connection is closed anyway."""
        exc = kw.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):
            cause = exc.__cause__
            text = cause.message if isinstance(cause, BadHttpMessage) else str(exc)
            reason = str(text).strip().splitlines()[0].rstrip(":") if str(text).strip() else ""
            log.debug("the unread rest of a request body did not decode: %s", reason)
            return
        super().log_exception(*args, **kw)

    def _count(self, status: int) -> None:
        """In the HTTP metrics like any request (the edge never saw this one): route
        `malformed`, method `other` (the parser may have refused the method itself)."""
        app = getattr(self._manager, "gateway_app", None)
        if app is None or (services := app.get(services_key)) is None:
            return
        metrics = services.metrics
        metrics.child(metrics.http_requests, "malformed", "other", f"{status // 100}xx").inc()


class _Sent(NamedTuple):
    """What Linux tells of a connection's sending (`tcp_info`, `SIOCOUTQ`)."""

    acked: int  # bytes the client has acknowledged (`tcpi_bytes_acked`, 4.1+)
    held: int  # bytes the kernel still holds, unsent or unacknowledged
    window: int | None  # the client's window in its last ACK (`tcpi_snd_wnd`, 5.4+)
    ack_age: float  # seconds since that ACK (`tcpi_last_ack_recv`)
    asking: bool  # retransmissions or window probes sent since (`tcpi_retransmits`, `_probes`)


def _sent_so_far(transport: asyncio.BaseTransport | None) -> _Sent | None:
    """None where the kernel does not tell (not Linux, not TCP, closed meanwhile)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if _TCP_INFO is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
        held = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))
    except (OSError, ValueError):
        return None
    if len(info) < _ACKED_AT + 8:
        return None
    (acked,) = struct.unpack_from("=Q", info, _ACKED_AT)
    (last_ack,) = struct.unpack_from("=I", info, _LAST_ACK_AT)
    window = struct.unpack_from("=I", info, _WINDOW_AT)[0] if len(info) >= _TCP_INFO_SIZE else None
    held_bytes = int.from_bytes(held, sys.byteorder, signed=True)
    return _Sent(acked, held_bytes, window, last_ack / 1000, bool(info[2] or info[3]))


def _refusing(sent: _Sent | None, deadline: float) -> bool:
    """Whether a client that acknowledged nothing for the deadline is the one holding the
    answer up: its latest ACK, fresh, offered no room (the answer to a window probe), or the
    kernel's retransmissions or probes got no answer at all. A stale window of 0 with
    nothing asked since is the kernel's own wait: a window smaller than its next segment is
    filled on its probe timer, which backs off to seconds, while a client that read all it
    got (a window update withheld for a small read) waits on us."""
    if sent is None or sent.window is None:
        return True
    fresh = sent.ack_age < deadline / 2
    return (fresh and sent.window == 0) or (sent.asking and not fresh)


def _drop_unsent(transport: asyncio.BaseTransport) -> None:
    """A close resets the connection, dropping what the kernel still holds (SO_LINGER 0):
    else the kernel goes on offering it to the client that takes none of it, for minutes
    (an orphaned socket's zero-window probes), and a client that reads later gets it all."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _ProblemServer(web.Server):
    gateway_app: web.Application | None = None  # whose metrics count its refusals
    write_timeout: float = WRITE_TIMEOUT_SECONDS  # its handlers' (`ProblemRequestHandler`)

    def __call__(self) -> RequestHandler:
        handler = ProblemRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.write_timeout = self.write_timeout
        return handler


class GatewayRunner(web.AppRunner):
    """An AppRunner whose connections answer malformed HTTP with problem documents, and
    whose `shutdown_timeout` bounds a request in flight at shutdown. aiohttp waits that
    long for the request, then cancels its body and waits as long again before it cancels
    the handler: a request on a slow partner held a shutdown twice its bound (30 s, not
    15). Each of aiohttp's two waits gets half of it."""

    def __init__(
        self,
        app: web.Application,
        *,
        shutdown_timeout: float = 60.0,
        write_timeout: float = WRITE_TIMEOUT_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, shutdown_timeout=shutdown_timeout / 2, **kwargs)
        self._write_timeout = write_timeout

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _ProblemServer  # same state, one method different
        assert isinstance(server, _ProblemServer)
        server.gateway_app = self.app
        server.write_timeout = self._write_timeout
        return server


def run(
    app: web.Application,
    *,
    host: str,
    port: int,
    on_listening: Callable[[str], None] = lambda url: None,
    reuse_port: bool = False,
    event_loop: str | None = None,
    sock: socket.socket | None = None,
    **runner_options: Any,
) -> None:
    """Serve until SIGTERM, SIGINT or SIGHUP, then shut down gracefully (stop accepting, finish the
    requests in flight, run every cleanup context). `reuse_port`: bind with SO_REUSEPORT,
    beside the other processes of `serve --workers N` (`gateway/prefork.py`). `event_loop`:
    `gateway/eventloop.py`. `on_listening(url)` once it listens, with the address it bound
    (`http://127.0.0.1:8080`: the port the system chose for port 0). `sock`: a socket
    already bound (`bind_any_port`), served instead of binding `host:port`."""
    site = (
        (lambda runner: web.SockSite(runner, sock))
        if sock is not None
        else (lambda runner: web.TCPSite(runner, host, port, reuse_port=reuse_port or None))
    )
    eventloop.run(_serve(app, site, on_listening, runner_options), event_loop)


def bind_any_port(host: str) -> socket.socket:
    """A socket bound on `host` (its first address) to a port the system chose, for port 0:
    bound before the app is built, so that the URLs it hands out (a trigger's) name the port
    it will listen on, not 0."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def listening_url(address: Any) -> str:
    """The URL of a bound socket's address (`(host, port, ...)`, as `getsockname` gives it)."""
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve(
    app: web.Application,
    site: Callable[[web.AppRunner], web.BaseSite],
    on_listening: Callable[[str], None],
    runner_options: dict[str, Any],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    runner = GatewayRunner(app, **runner_options)
    await runner.setup()
    # What start-up built (modules, schemas, the services) lives as long as the process: kept
    # out of the collector's full passes, which paused every request in flight for 30-45 ms
    # every ~8 s at the position bench's half of peak, 8 ms after (docs/benchmarks.md).
    gc.collect()
    gc.freeze()
    try:
        if not stop.is_set():
            await site(runner).start()
            on_listening(listening_url(runner.addresses[0]))
            await stop.wait()
            _log.info(
                "shutting down: no new connections; the requests in flight get %g s",
                runner_options.get("shutdown_timeout", 60.0),
            )
    finally:
        await runner.cleanup()
    exit_after(TEARDOWN_SECONDS)


def taken(
    host: str,
    port: int,
    port_names: str = "--port, GATEWAY_PORT",
    host_names: str = "--host, GATEWAY_HOST",
) -> str | None:
    """A message naming the option or variable to change when `host:port` cannot be listened
    on (a bind test, as the server will bind: SO_REUSEADDR, every address the host resolves
    to), else None. Asked before the database starts: the server binds only once it has, and
    the indexes exist (20 s and more)."""
    if port == 0:
        return None
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror or exc} ({host_names})"
    with contextlib.ExitStack() as sockets:
        for family, kind, proto, _, address in found:
            sock = sockets.enter_context(socket.socket(family, kind, proto))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            where = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return (
                        f"{where}:{port} is already in use (another gateway or program listens "
                        f"there): stop it, or choose another port ({port_names})"
                    )
                return f"cannot listen on {where}:{port}: {exc.strerror or exc} ({host_names})"
    return None


def exit_after(seconds: float) -> None:
    """Exit (0) in `seconds` unless the process has ended by itself before: called once the
    shutdown's steps are done (not on an error, whose exit status must stay), what remains
    must not outlive a bound."""

    def cut_short() -> None:
        _log.warning("the event loop's teardown did not finish within %g s; exiting", seconds)
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(seconds, cut_short)
    timer.daemon = True
    timer.start()
