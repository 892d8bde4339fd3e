"""Admin API authentication: gateway-signed admin JWTs, roles enforced on every route."""

from __future__ import annotations

from aiohttp import web

from gateway.auth.tokens import AdminClaims, bearer_token
from gateway.errors import BadRequest, Forbidden, Unauthorized
from gateway.web.openapi import operation_of
from gateway.web.state import services_of

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def authenticate(request: web.Request, *, writes: bool | None = None) -> AdminClaims:
    """The caller's claims; 401 without a valid admin token, 403 for a viewer that writes.
    `writes=False` for a POST that writes nothing (a dry run, a preview): a viewer may run
    it, as in the admin UI."""
    token = bearer_token(request.headers)
    if token is None:
        raise Unauthorized("an admin bearer token is required")
    claims = await services_of(request).admin_verifier.verify(token)
    if writes is None:
        writes = request.method not in _READ_METHODS
    if writes and claims.role != "admin":
        raise Forbidden("the viewer role is read-only")
    _check_query(request)
    return claims


def _check_query(request: web.Request) -> None:
    """400 for a query parameter the route does not declare: a typo (`?stauts=dead`,
    `?activte=false`) must not silently list everything or do the default."""
    op = operation_of(request.match_info.handler)
    if op is None or op.open_query:
        return
    known = [name for name, _ in op.query]
    if unknown := sorted(set(request.query) - set(known)):
        takes = ", ".join(known) if known else "none"
        raise BadRequest(f"unknown query parameter {unknown[0]!r} (this route takes: {takes})")
