"""The UI's typed state: its template environment and message catalog (per app), and who is
asking (per request)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web
from multidict import MultiDictProxy

from gateway.accounts import UiSession
from gateway.ui.i18n import LANGUAGES, Catalog

PREFIX = "/admin"
templates_key = web.AppKey("ui_templates", jinja2.Environment)
catalog_key = web.AppKey("ui_catalog", Catalog)


@dataclass(slots=True)
class Visitor:
    """The person behind a UI request: their language, their session (None before login),
    the CSRF token their forms carry, and whether a session of theirs just ended."""

    lang: str
    session: UiSession | None
    csrf: str
    author: str = ""  # who typed the forms the page shows (sessions.author_token)
    expired: bool = False
    new_pre_session: str | None = None  # set: the login page's cookie is still to be sent
    flash: str | None = None


visitor_key = web.RequestKey("ui_visitor", Visitor)
form_key = web.RequestKey("ui_form", MultiDictProxy[Any])


def visitor_of(request: web.Request) -> Visitor:
    return request[visitor_key]


# The hidden field beside a form's CSRF token that names the language it was shown in.
FORM_LANG = "lang"
# And the one that names the page it is on (rendering.py `page_back`).
FORM_BACK = "back"


def form_lang(request: web.Request) -> str:
    """The language of a form's numbers (forms.number_field reads them, number_text writes
    them, and an edit's revision digests them): on a POST, the language the form was shown
    in, which it posts (`csrf_field` in _macros.html) when it names one of ours: a language
    switched between loading a form and saving it changes neither the numbers read nor the
    revision compared. Else (a GET; a post of a client of its own) the page's."""
    if request.method == "POST" and form_key in request:
        posted = request[form_key].get(FORM_LANG)
        if posted in LANGUAGES:
            return str(posted)
    return visitor_of(request).lang


def form_of(request: web.Request) -> MultiDictProxy[Any]:
    """A POST's form, read by the middleware (`web/requests.py` `read_form`): the body is
    read once, there."""
    return request[form_key]


def session_of(request: web.Request) -> UiSession:
    """The signed-in session (the middleware lets no other request reach a page)."""
    session = request[visitor_key].session
    assert session is not None, "a page handler ran without a session"
    return session


def tenant_of(request: web.Request) -> str:
    return session_of(request).tenant


def catalog_of(request: web.Request) -> Catalog:
    return request.config_dict[catalog_key]
