"""Admin API authentication: gateway-signed admin JWTs, roles enforced on every route."""

from __future__ import annotations

from aiohttp import web

from gateway.auth.tokens import AdminClaims, bearer_token
from gateway.errors import Forbidden, Unauthorized
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
    return claims
