"""Turning a page into a response: the template with what every page needs (the language,
the session, the CSRF token, the navigation), redirects, and flash messages."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from yarl import URL

from gateway.ui.forms import PASTED_AGAIN, RETYPED, Form, input_type, typed_field
from gateway.ui.navigation import NAV
from gateway.ui.state import (
    FORM_BACK,
    PREFIX,
    catalog_of,
    form_key,
    form_lang,
    templates_key,
    visitor_of,
)
from gateway.web.state import services_of

FLASH_COOKIE: Final = "rabbot_flash"
# What a Location keeps as written (reserved characters, and `%` of what is already encoded).
_URI_SAFE: Final = "!#$%&'()*+,/:;=?@[]~"


def render(
    request: web.Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
) -> web.Response:
    visitor = visitor_of(request)
    catalog = catalog_of(request)
    page = {
        "t": functools.partial(catalog.text, visitor.lang),
        "term": functools.partial(catalog.term, visitor.lang),  # an enumeration's value
        "lang": visitor.lang,
        "form_lang": form_lang(request),  # a form's hidden `lang` (_macros.html csrf_field)
        "session": visitor.session,
        "csrf": visitor.csrf,
        "author": visitor.author,  # _macros.html csrf_field: who typed the form
        "once": _once,
        "input_type": input_type,  # _macros.html `field`: a secret field is a password input
        "pasted_again": PASTED_AGAIN,  # resume.html: a document withheld whole, pasted again
        "retyped": RETYPED,  # _macros.html `field`: a secret of a refused form, asked again
        "typed_field": typed_field,  # _macros.html `typed_list`: what the admin typed
        "nav": NAV,
        "path": request.path,
        "return_to": page_back(request),  # the language links' way back; a form's `back`
        "page_limit": request.query.get("limit") if request.method == "GET" else None,
        "flash": visitor.flash if visitor.flash in catalog else None,
        **(context or {}),
    }
    # A page showing a form refused by a conflict or a busy database answers that status
    # (FORM_ERRORS), whatever the page's handler took a refused form for (a 422).
    refused = [v for v in page.values() if isinstance(v, Form) and v.status is not None]
    if refused:
        status = max(v.status or status for v in refused)
    response = aiohttp_jinja2.render_template(
        template, request, page, app_key=templates_key, status=status
    )
    if visitor.flash is not None:
        response.del_cookie(FLASH_COOKIE, path=PREFIX)
    # A form refused as the database is busy says when to save again, as the API's 503 does.
    waits = [v.retry_after for v in refused if v.retry_after]
    if waits:
        response.headers["Retry-After"] = str(max(waits))
    return response


def _once() -> str:
    """A form's one-time id (middleware: a form sent again is refused)."""
    return secrets.token_urlsafe(12)


def redirect(location: str, *, flash: str | None = None) -> web.Response:
    """303 See Other: a form's POST answered with the page to GET next. `flash` is a message
    key shown once on that page. The location is written as a URI: a `next` target's control
    characters (`?next=/admin/%0d%0a...`) made aiohttp drop the connection without an answer."""
    response = web.Response(status=303, headers={"Location": quote(location, safe=_URI_SAFE)})
    if flash is not None:
        response.set_cookie(
            FLASH_COOKIE, flash, path=PREFIX, httponly=True, samesite="Lax", max_age=60
        )
    return response


def page_back(request: web.Request) -> str:
    """The page a page's language links lead back to: the page itself, when it answered a
    GET. A page answering a form's POST is at a URL no GET reaches (most are POST-only; a
    GET of `/admin/mappings/preview` reads the mapping `preview`), so they lead to the page
    the form was on: the one the form names (its hidden `back`, `csrf_field` in
    _macros.html; a form on such a page names what that page leads back to), else the
    Referer when it is another page of this UI, else the dashboard."""
    if request.method in ("GET", "HEAD"):
        return request.path_qs
    posted = request[form_key].get(FORM_BACK) if form_key in request else None
    if isinstance(posted, str) and local_path(posted, "") == posted:
        return posted
    referer = referer_page(request)
    return referer if referer and URL(referer).path != request.path else PREFIX + "/"


def referer_page(request: web.Request) -> str | None:
    """The page of this UI a request came from (its Referer's path and query), if any. The
    Referer's host is this site's (the one the request reached, or the public URL's),
    whatever its scheme and port: behind the TLS proxy an https deployment has, the page was
    on https://host/ while the gateway sees http://host:80/. (A path, on this site anyway:
    never another site's page.)"""
    referer = URL(request.headers.get("Referer", ""))
    public = URL(services_of(request).settings.base_url).host
    ours = referer.host is not None and referer.host in (request.url.host, public)
    return referer.path_qs if ours and referer.path.startswith(PREFIX + "/") else None


def local_path(candidate: str | None, default: str = PREFIX + "/") -> str:
    """A `next` target only when it is a path of this UI: never another site."""
    if (
        candidate
        and candidate.startswith(PREFIX + "/")
        and not candidate.startswith("//")
        and "\\" not in candidate
    ):
        return candidate
    return default


def page_path(request: web.Request, candidate: str | None) -> str:
    """Where to lead the visitor next (`?next=` after a login, a language switch): a local_path
    that names a page. A path this UI is only posted to (a logout, a delete: a GET of it is a
    405) leads to the dashboard."""
    path = local_path(candidate)
    return PREFIX + "/" if _posted_only(request.app.router, URL(path).path) else path


def _posted_only(router: web.UrlDispatcher, path: str) -> bool:
    """Whether a path is one of the router's routes and none of them takes a GET."""
    methods: set[str] = set()
    for resource in router.resources():
        info = resource.get_info()
        pattern = info.get("pattern")
        if info.get("path") == path or (pattern is not None and pattern.fullmatch(path)):
            methods.update(route.method for route in resource)
    return bool(methods) and not methods & {"GET", "*"}


def login_url(next_path: str, *, expired: bool = False) -> str:
    url = f"{PREFIX}/login?next={quote(next_path, safe='/')}"
    return url + "&expired=1" if expired else url
