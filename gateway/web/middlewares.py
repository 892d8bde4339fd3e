"""One middleware at the edge: request id, metrics, access log, and errors → problem+json."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest

from gateway import write_fence
from gateway.auth.secretbox import SecretBoxError
from gateway.errors import BadRequest, GatewayError, StoreUnavailable
from gateway.logs import request_id_var
from gateway.metrics import Metrics
from gateway.services import Services
from gateway.web import conditional, problems, replies
from gateway.web.openapi import Operation, operation_of
from gateway.web.requests import check_refused_early, send_continue
from gateway.web.state import services_of

log = logging.getLogger("gateway.access")

# A caller's id is echoed only if it is short and plain: it ends up in every log line.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The methods counted under their name; any other is `other` (aiohttp's Python parser takes
# any token as a method: a label per token would be unbounded).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Probes asked every few seconds: their refusals are logged by the route, once per change
# of its answer, not by the edge (two WARNING lines per probe).
PROBES = frozenset({"/readyz"})
# Headers whose second copy would make the request ambiguous: which credential, which key.
_ONCE = ("Authorization", "Idempotency-Key")


def _matched_route(request: web.Request) -> str | None:
    """The template of the route the request reached, None when it reached none."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


async def _route_label(request: web.Request) -> str:
    """The template of the route the request reached; for a method the route does not take (a
    405) the route whose path it is, `unmatched` only for a path no route has."""
    if (route := _matched_route(request)) is not None:
        return route
    refused = request.match_info.http_exception
    if refused is not None and refused.status == 405:
        for candidate in request.app.router.resources():
            _, allowed = await candidate.resolve(request)
            if allowed:
                return candidate.canonical
    return "unmatched"


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-ID", "")
    request_id = given if _REQUEST_ID.match(given) else os.urandom(16).hex()
    request_id_var.set(request_id)
    write_fence.clear()  # no deadline but a partner call's, once its body is read (hooks.py)
    services = services_of(request)
    metrics = services.metrics
    started = time.perf_counter()
    metrics.http_in_flight.inc()
    try:
        response = await _call(request, handler, request_id, services)
    finally:
        metrics.http_in_flight.dec()
    response.headers["X-Request-ID"] = request_id
    # Problems echo what the caller sent (`instance` is the path, `<script>` included): no
    # browser may read a JSON or XML answer as a page.
    response.headers["X-Content-Type-Options"] = "nosniff"
    elapsed = time.perf_counter() - started
    route = await _route_label(request)
    if isinstance(response, web.FileResponse):
        # A file's status is known only once aiohttp looks at it, as it sends it: a 404 (no
        # such file), 304 (not modified), 416 (a range past its end) or 206 starts as a 200.
        # Counted and logged once it is sent (aiohttp's FileResponse has no hook for it, and
        # its `prepare` may run only once: here it is wrapped, not called).
        send = response.prepare

        async def send_then_count(sent_to: BaseRequest) -> AbstractStreamWriter | None:
            try:
                return await send(sent_to)
            finally:
                _count(metrics, route, request.method, response, elapsed)
                _log_request(request, route, response, elapsed)

        response.prepare = send_then_count  # type: ignore[method-assign,assignment]
        return response
    # Counted off the answer's path: for most answers aiohttp writes them before the loop runs
    # this (a large body that must drain may be counted first, with the same status).
    asyncio.get_running_loop().call_soon(_count, metrics, route, request.method, response, elapsed)
    _log_request(request, route, response, elapsed)
    return response


def _log_request(
    request: web.Request, route: str, response: web.StreamResponse, elapsed: float
) -> None:
    failed = response.status >= 500 and route not in PROBES
    if failed or log.isEnabledFor(logging.DEBUG):
        log.log(
            logging.WARNING if failed else logging.DEBUG,
            "request",
            extra={
                "method": request.method,
                "route": route,
                "status": response.status,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )


def _count(
    metrics: Metrics, route: str, method: str, response: web.StreamResponse, elapsed: float
) -> None:
    method = method if method in METHODS else "other"
    metrics.child(metrics.http_requests, route, method, f"{response.status // 100}xx").inc()
    metrics.child(metrics.http_latency, route, method).observe(elapsed)


async def _call(
    request: web.Request, handler: Handler, request_id: str, services: Services
) -> web.StreamResponse:
    op = operation_of(request.match_info.handler)
    if op is not None and op.xml_answers and replies.may_speak_xml(request):
        request[replies.reply_key] = replies.Reply.of(request)
    if (refused := _refused_at_once(request)) is not None:
        return _answer(refused, request)
    health = services.store.health
    if op is not None and op.database:
        try:
            health.check()  # known down: 503 at once, nothing attempted
            services.store.check_prepared()  # the start's indexes and upgrade steps not done
        except StoreUnavailable as exc:
            return _answer(exc, request)
    if op is None or op.auth != "trigger":
        # An admin or UI request's body is invited now; a partner's once its trigger took the
        # token and the declared size (web/hooks.py reads it through `read_body`).
        await send_continue(request)
    try:
        return await _handled(handler, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error: Exception = exc
    except SecretBoxError as exc:
        # A stored secret the request needs (a proxy call's partner credentials, a test
        # send's channel) does not open: this process's key refused (503 `key-refused`), or
        # the secret damaged (500 `secret-damaged`), as for every sender.
        try:
            error = await services.secrets.judge(exc)
        except StoreUnavailable as unread:
            error = unread
    except Exception as exc:
        error = exc
    # Apart from the handler's: an error raised while its problem is written (a text no JSON
    # can carry) is a 500 in problem+json too, not aiohttp's bare text/plain one.
    try:
        return _problem_for(error, request, op, services)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return problems.internal_error(request, request_id)


def _problem_for(
    exc: Exception, request: web.Request, op: Operation | None, services: Services
) -> web.Response:
    """The problem answering a handler's error; an unknown error is raised again."""
    if isinstance(exc, StoreUnavailable):
        services.store.health.report_failure(exc)
        if request.method in _WRITES:
            exc = _outcome_unknown(exc, op)
        return _answer(exc, request)
    if isinstance(exc, GatewayError):
        return _answer(exc, request)
    if isinstance(exc, web.HTTPException):
        return problems.http_exception_problem(exc, request)
    raise exc


def _answer(exc: GatewayError, request: web.Request) -> web.Response:
    """The problem answering `exc`. A 5xx says why first (`request failed: <detail>`, the
    line docs/operations.md promises before its access line), whoever refused: the handler,
    or this middleware before it (the database known down, the start not done, a transfer
    coding refused)."""
    if exc.status >= 500:
        _failed(request, exc)
    return problems.problem_response(exc, request)


def _failed(request: web.Request, exc: GatewayError) -> None:
    quiet = _matched_route(request) in PROBES
    level = logging.DEBUG if quiet else logging.WARNING
    log.log(level, "request failed: %s", exc.detail, extra={"status": exc.status})


def _refused_at_once(request: web.Request) -> GatewayError | None:
    """A body in `br` or `zstd` (as aiohttp's parser refused them), or a header whose second
    copy would make the request ambiguous: refused before the route does anything."""
    try:
        check_refused_early(request)
    except GatewayError as exc:
        return exc
    for name in _ONCE:
        if len(request.headers.getall(name, ())) > 1:
            return BadRequest(f"the {name} header is given more than once: send it once")
    return None


async def _handled(handler: Handler, request: web.Request) -> web.StreamResponse:
    """The handler's answer; a body the client did not deliver whole is its error, not ours
    (never a 500 nor a traceback)."""
    try:
        await conditional.check_preconditions(request)
        return await conditional.tag(request, await handler(request))
    except web.RequestPayloadError as exc:  # a content coding that does not decode, ...
        return _unreadable_body(request, exc)
    except ConnectionResetError:
        if request.transport is not None:
            raise  # not the client's connection: an error of ours
        # Gone before its whole body arrived: nothing was read, so nothing was done, and
        # nobody reads this answer.
        log.debug("the client closed the connection before its body arrived")
        gone = BadRequest("the connection closed before the whole body arrived")
        return problems.problem_response(gone, request)


def _unreadable_body(request: web.Request, exc: web.RequestPayloadError) -> web.Response:
    """400 for a body aiohttp could not read; the connection closes after the answer, and
    what is left of the body is not read (it would fail the same way)."""
    cause = exc.__cause__
    text = (cause.message if isinstance(cause, BadHttpMessage) else str(exc)) or ""
    reason = text.strip().splitlines()[0].rstrip(":") if text.strip() else "unreadable"
    refused = BadRequest(f"malformed request body: {reason}")
    log.debug("request refused: %s", refused.detail, extra={"status": refused.status})
    request.content.feed_eof()
    response = problems.problem_response(refused, request)
    response.force_close()
    return response


def _outcome_unknown(exc: StoreUnavailable, op: Operation | None) -> StoreUnavailable:
    """The database failed while this write was being processed (a deadline passed or the
    connection was lost): it may or may not have been stored, and the caller must know."""
    if op is not None and op.idempotency_key:
        retry = "retry with the same Idempotency-Key: that is safe, the write is applied once"
    else:
        retry = "read the resource before retrying: a retry may repeat the write"
    return StoreUnavailable(
        f"{exc.detail}; the outcome of this write is unknown",
        retry_after=exc.retry_after,
        outcome="unknown",
        retry=retry,
    )
