"""Admin API authentication: gateway-signed admin JWTs, roles enforced on every route."""

from __future__ import annotations

from aiohttp import web

from gateway.auth.tokens import AdminClaims, bearer_token
from gateway.errors import Forbidden, Unauthorized
from gateway.web.state import services_of

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def authenticate(request: web.Request) -> AdminClaims:
    """The caller's claims; 401 without a valid admin token, 403 for a viewer that writes."""
    token = bearer_token(request.headers)
    if token is None:
        raise Unauthorized("an admin bearer token is required")
    claims = await services_of(request).admin_verifier.verify(token)
    if request.method not in _READ_METHODS and claims.role != "admin":
        raise Forbidden("the viewer role is read-only")
    return claims
