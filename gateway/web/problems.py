"""RFC 9457 problem details: the one place where errors become HTTP responses (in JSON, or
in the XML or SOAP a /hooks call speaks: gateway/web/replies.py)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import (
    BadRequest,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StillProcessing,
    Unauthorized,
    Unavailable,
    UnsupportedContentCoding,
    UnsupportedMediaType,
)
from gateway.web import replies

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=str)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_bytes_response(data, dumps=dumps, status=status, headers=headers)


def problem_response(error: GatewayError, request: web.Request) -> web.Response:
    body = error.problem()
    body["instance"] = request.path
    headers: dict[str, str] = {}
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = f'{error.challenge} realm="rabbot-gateway"'
    elif isinstance(error, RateLimited | Unavailable | StillProcessing):
        headers["Retry-After"] = str(error.retry_after)
    elif isinstance(error, MethodNotAllowed) and error.allowed:
        headers["Allow"] = ", ".join(error.allowed)
    elif isinstance(error, UnsupportedContentCoding):
        headers["Accept-Encoding"] = ", ".join(error.supported)
    return _respond(request, body, error.status, headers)


# aiohttp's own refusals (no route, a method the route lacks, a body over the app's limit)
# get the same problem types as ours.
_HTTP_ERRORS: dict[int, type[GatewayError]] = {
    cls.status: cls
    for cls in (BadRequest, NotFound, MethodNotAllowed, PayloadTooLarge, UnsupportedMediaType)
}


def http_exception_problem(exc: web.HTTPException, request: web.Request) -> web.Response:
    """aiohttp's own 404/405/413 become problem bodies too."""
    known = _HTTP_ERRORS.get(exc.status)
    text = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
    body = (
        known(text).problem()
        if known
        else {"type": "about:blank", "title": exc.reason, "status": exc.status, "detail": text}
    )
    body["instance"] = request.path
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return _respond(request, body, exc.status, headers)


def internal_error(request: web.Request, request_id: str) -> web.Response:
    body = {
        **GatewayError(f"An unexpected error occurred; request id {request_id}.").problem(),
        "instance": request.path,
        "request_id": request_id,
    }
    return _respond(request, body, 500, {})


def _respond(
    request: web.Request, body: dict[str, Any], status: int, headers: dict[str, str]
) -> web.Response:
    """The problem as `application/problem+json`, or in the XML form the request speaks."""
    spoken = replies.problem(request, body, status, headers)
    if spoken is not None:
        return spoken
    return web.json_bytes_response(
        body, dumps=dumps, status=status, headers=headers, content_type=PROBLEM_JSON
    )
