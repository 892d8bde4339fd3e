"""Conditional requests on the admin API's documents (RFC 9110 §13). A GET of a document that
PATCH, PUT or DELETE change answers its `ETag`: a digest of the representation it sends.

A PATCH, PUT or DELETE with `If-Match` first reads the document as that GET would and is
refused (412 problem+json, nothing changed) unless one of the tags given (or `*`) is its
current one: a client that read a document, and sends its change (or its deletion) only if
nobody changed it meanwhile, is never silently overwritten, nor deletes what someone else
changed since (§13.1.1: If-Match guards any method that changes state). With `If-None-Match`
the change is refused (412) when one of the tags (or `*`: the document exists) *is* the
current one (§13.1.2: "create only if absent", "only if not that version"); If-Match is
evaluated first (§13.2.2). A GET or HEAD with `If-None-Match` naming the current tag is a
`304 Not Modified` with that tag and no body. Without them a change applies as before. The
check reads, then writes: two changes of the same version within the same few milliseconds
are not told apart.
"""

from __future__ import annotations

import hashlib
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import AbstractRoute

from gateway.errors import NoActiveVersion, PreconditionFailed

CHANGES: Final = frozenset({"PATCH", "PUT", "DELETE"})
API: Final = "/api/v1/"
_KNOWN: dict[AbstractRoute, dict[str, Handler]] = {}


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def _handlers(request: web.Request) -> dict[str, Handler]:
    """The handlers of the request's document (the admin API's documents only) by method,
    found once per route: its GET, PATCH and PUT may be routes of their own."""
    route = request.match_info.route
    known = _KNOWN.get(route)
    if known is None:
        known = {}
        if request.path.startswith(API):
            for method in ("GET", *CHANGES):
                match = await request.app.router.resolve(request.clone(method=method))
                if match.http_exception is None:
                    known[method] = match.handler
        _KNOWN[route] = known
    return known


def _body(response: web.StreamResponse) -> bytes | None:
    body = response.body if isinstance(response, web.Response) else None
    return body if isinstance(body, bytes) else None


async def check_preconditions(request: web.Request) -> None:
    """Refuses (PreconditionFailed) a PATCH, PUT or DELETE whose `If-Match` does not name the
    document's current ETag, or whose `If-None-Match` does; anything else passes."""
    if_match = request.headers.get("If-Match")
    if_none_match = request.headers.get("If-None-Match")
    if (if_match is None and if_none_match is None) or request.method not in CHANGES:
        return
    if request.match_info.http_exception is not None:  # no such route or method: its 404/405
        return
    read = (await _handlers(request)).get("GET")
    if read is None:
        return
    # The GET handler is called with this request, so its `authenticate` decides the role
    # for the change's method first: a viewer's change is its 403 whatever the tag (tested
    # by walking the URL table, tests/test_route_table_security.py). The change's handler
    # authenticates the request again: the token is verified and counted against the admin
    # limit once a request (web/admin_auth.py keeps what it admitted).
    try:
        current: str | None = etag_of(_body(await read(request)) or b"")
    except NoActiveVersion:
        # It exists with no current representation (a mapping or flow with no active
        # version): no tag can match it, `*` included (RFC 9110 §13.1.1). A document that
        # does not exist stays a 404: preconditions are ignored where the change would fail
        # without them (§13.2.1).
        current = None
    if if_match is not None:
        _check_if_match(if_match, current)
    if if_none_match is not None and _matches(if_none_match, current, weak=True):
        raise PreconditionFailed(
            f"If-None-Match names the document's current version ({current}): the change "
            "applies only to another version (or, with `*`, to no document); nothing was "
            "changed"
        )


def _check_if_match(wanted: str, current: str | None) -> None:
    if current is None:
        raise PreconditionFailed(
            "the document has no current representation to match If-Match; nothing was "
            "changed (send the change without If-Match to act on it as it is)"
        )
    # Strong comparison (RFC 9110 §13.1.1): a weak tag `W/"…"` never matches, ours included.
    if not _matches(wanted, current, weak=False):
        raise PreconditionFailed(
            f"the document changed since it was read (its ETag is now {current}): "
            "read it again and send the change against what it is now; nothing was changed"
        )


def _matches(header: str, current: str | None, *, weak: bool) -> bool:
    """Whether the tag list `header` (or `*`) names the current representation's tag `current`
    (None: there is none). If-None-Match compares weakly (RFC 9110 §13.1.2): `W/"x"` is `"x"`."""
    if current is None:
        return False
    tags = {t.strip() for t in header.split(",")}
    if weak:
        tags = {t.removeprefix("W/") for t in tags}
    return "*" in tags or current in tags


async def tag(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """The ETag of a document's representation, when PATCH, PUT or DELETE change that
    document: on its GET, and on its HEAD, which answers the GET's headers. A GET whose
    `If-None-Match` names that tag (or `*`) gets a `304 Not Modified` in its place."""
    if request.method not in ("GET", "HEAD") or response.status != 200:
        return response
    if "ETag" not in response.headers:
        body = _body(response)
        if body is None or not CHANGES & (await _handlers(request)).keys():
            return response
        response.headers["ETag"] = etag_of(body)
    wanted = request.headers.get("If-None-Match")
    if wanted is None or not _matches(wanted, response.headers["ETag"], weak=True):
        return response
    # §15.4.5: the headers a 200 would have carried that describe the representation.
    kept = ("ETag", "Cache-Control", "Content-Location", "Date", "Expires", "Vary")
    headers = {name: response.headers[name] for name in kept if name in response.headers}
    return web.Response(status=304, headers=headers)
