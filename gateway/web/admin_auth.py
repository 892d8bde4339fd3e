"""Admin API authentication: gateway-signed admin JWTs, roles enforced on every route."""

from __future__ import annotations

import math
from typing import Final

from aiohttp import web

from gateway.auth.tokens import AdminClaims, bearer_token
from gateway.errors import BadRequest, Forbidden, RateLimited, Unauthorized
from gateway.paging import refuse_repeated
from gateway.web.client_address import client_key
from gateway.web.openapi import operation_of
from gateway.web.state import services_of

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The claims a request was admitted with: a PATCH or PUT with `If-Match` runs its document's
# GET handler first (web/conditional.py), which authenticates the same request; it counts once.
_admitted: Final = web.RequestKey("admitted_claims", AdminClaims)


async def authenticate(request: web.Request, *, writes: bool | None = None) -> AdminClaims:
    """The caller's claims; 401 without a valid admin token, 403 for a viewer that writes.
    `writes=False` for a POST that writes nothing (a dry run, a preview): a viewer may run
    it, as in the admin UI. A request is verified and counted against the limit once,
    however many handlers authenticate it; the role and query checks run at every call."""
    claims = request.get(_admitted)
    if claims is None:
        claims = await _verify_and_admit(request)
        request[_admitted] = claims
    if writes is None:
        writes = request.method not in _READ_METHODS
    if writes and claims.role != "admin":
        raise Forbidden("the viewer role is read-only")
    _check_query(request)
    return claims


async def _verify_and_admit(request: web.Request) -> AdminClaims:
    token = bearer_token(request.headers)
    try:
        if token is None:
            raise Unauthorized("an admin bearer token is required")
        claims = await services_of(request).admin_verifier.verify(token)
    except Unauthorized:
        admit(request, f"client:{client_key(request)}", "from this address")
        raise
    admit(request, f"tenant:{claims.tenant}", "for this tenant")
    return claims


def _check_query(request: web.Request) -> None:
    """400 for a query parameter the route does not declare: a typo (`?stauts=dead`,
    `?activte=false`) must not silently list everything or do the default."""
    if not request.query_string:
        return
    refuse_repeated(request.query, "query parameter")
    op = operation_of(request.match_info.handler)
    if op is None or op.open_query:
        return
    known = [name for name, _ in op.query]
    if unknown := sorted(set(request.query) - set(known)):
        takes = ", ".join(known) if known else "none"
        raise BadRequest(f"unknown query parameter {unknown[0]!r} (this route takes: {takes})")


def admit(request: web.Request, key: str, whose: str) -> None:
    """429 with Retry-After over the admin limit (`GATEWAY_ADMIN_RATE_LIMIT` requests/s, bursts
    of twice that, counted per `key` in this process): SPEC §7, request rate limited on
    every route, admin included. Calls without a valid token count per client address, so
    guessing tokens is limited too."""
    services = services_of(request)
    rate = services.settings.admin_rate_limit
    wait = services.admin_limits.wait(key, rate, 2 * rate)
    if wait:
        raise RateLimited(
            f"over the admin limit of {rate} requests/s {whose}",
            retry_after=max(1, math.ceil(wait)),
        )
