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

from gateway.ui.forms import PASTED_AGAIN, input_type
from gateway.ui.navigation import NAV
from gateway.ui.state import PREFIX, catalog_of, form_lang, templates_key, visitor_of

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
        "nav": NAV,
        "path": request.path,
        "path_qs": request.path_qs,
        "page_limit": request.query.get("limit") if request.method == "GET" else None,
        "flash": visitor.flash if visitor.flash in catalog else None,
        **(context or {}),
    }
    response = aiohttp_jinja2.render_template(
        template, request, page, app_key=templates_key, status=status
    )
    if visitor.flash is not None:
        response.del_cookie(FLASH_COOKIE, path=PREFIX)
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


def login_url(next_path: str, *, expired: bool = False) -> str:
    url = f"{PREFIX}/login?next={quote(next_path, safe='/')}"
    return url + "&expired=1" if expired else url
