"""The UI's one middleware: who is asking (language, session), the CSRF check on every POST,
the roles (a viewer sees, an admin changes), errors as pages, and the security headers.

It runs inside the app's `edge` middleware (request id, metrics, access log), which never
sees a UI error: every failure here becomes an HTML page in the visitor's language.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from multidict import MultiDictProxy
from yarl import URL

from gateway.accounts import UiSession
from gateway.auth.sessions import (
    author_token,
    check_author,
    check_csrf,
    csrf_token,
    new_session_id,
    unsign_session,
)
from gateway.errors import (
    FieldProblem,
    GatewayError,
    InvalidPayload,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
)
from gateway.logs import request_id_var
from gateway.ui.forms import (
    AUTHOR,
    NOT_KEPT,
    ONCE,
    TYPED_AGAIN,
    Form,
    error_key,
    hide_secrets,
    number_shown,
    typed_values,
)
from gateway.ui.i18n import COOKIE as LANG_COOKIE
from gateway.ui.i18n import choose_language
from gateway.ui.rendering import FLASH_COOKIE, login_url, redirect, referer_page, render
from gateway.ui.state import Visitor, form_key, visitor_key, visitor_of
from gateway.web.admin_auth import admit
from gateway.web.client_address import client_key
from gateway.web.requests import read_form
from gateway.web.state import services_of

log = logging.getLogger(__name__)

SESSION_COOKIE: Final = "rabbot_session"
PRE_SESSION_COOKIE: Final = "rabbot_pre"
# Routes a visitor reaches without a session; every other one needs a live session.
PUBLIC: Final = frozenset({"login", "login_password", "login_token", "language", "static"})
# POSTs a viewer may make: logging in (as another account too) and out, and the dry runs,
# which write nothing. Every other POST changes something: admins only.
ANY_ROLE_POSTS: Final = frozenset(
    {
        "login_password",
        "login_token",
        "logout",
        "mapping_dry_run",
        "mapping_preview",
        "flow_dry_run",
        "template_preview",
    }
)
# The pages made for changing something (their paths end so): forms a viewer could not send.
CHANGE_PAGES: Final = ("/new", "/edit")
# Forms never kept through a session's end: a logout, and the logins (a token pasted in a
# second login tab would be written back into the page).
NEVER_KEPT: Final = frozenset({"logout", "login_password", "login_token"})
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@web.middleware
async def ui_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.match_info.route.name == "static":
            response = await _asset(request, handler)
        else:
            response = await _admit(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:
            _secure(exc, request)
            raise
        response = _error_page(request, exc.status, exc.reason)
    except GatewayError as exc:
        # An invalid payload's problems say what is wrong (a version naming a template
        # deleted since, refused at its activation): each with where, as the API lists them.
        problems = exc.problems if isinstance(exc, InvalidPayload) else []
        # A form posted to something deleted meanwhile (another admin's, the API's): nothing
        # was saved, and what was typed is shown to copy, not lost with a bare 404.
        form = request.get(form_key) if isinstance(exc, NotFound) else None
        typed = typed_values(form) if form is not None else []
        response = _error_page(request, exc.status, exc.detail, problems=problems, typed=typed)
        if isinstance(exc, Unavailable):
            # The database failed before the form's own page could show it again (its
            # one-time id not claimed, the page's reads failed too): what was typed, kept.
            response = _kept_through_outage(request, exc) or response
        if isinstance(exc, (RateLimited, Unavailable)):
            response.headers["Retry-After"] = str(exc.retry_after)
    except Exception:
        log.exception("unhandled error in the admin UI", extra={"path": request.path})
        response = _error_page(request, 500, f"request id {request_id_var.get()}")
    _secure(response, request)
    return response


async def _admit(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The start's indexes and upgrade steps not done: nothing is read or written meanwhile
    # (a form's write would let a duplicate in, or store a second fine), as in the API.
    services_of(request).store.check_prepared()
    visitor = await _visitor(request)
    request[visitor_key] = visitor
    route = request.match_info.route.name
    if visitor.session is not None:
        admit(request, f"ui:{visitor.session.tenant}", "for this tenant")
    else:  # a login page or form: counted as the API's calls without a valid token are
        admit(request, f"client:{client_key(request)}", "from this address")
    if route not in PUBLIC and visitor.session is None:
        return await _signed_out(request, visitor, route, handler)
    if request.method == "POST":
        form = await _posted(request)
        if isinstance(form, web.Response):  # unreadable, or too large
            return form
        request[form_key] = form
        token = form.get("csrf")
        if not isinstance(token, str) or not _csrf_ok(request, visitor, token):
            return _foreign_form(request, visitor, route, form)
        session = visitor.session
        if session is not None and route not in ANY_ROLE_POSTS and not session.can_change:
            return _error_page(request, 403, "viewer")
        claimed = await _claim_once(request, route, form)
        if claimed is False:
            return _error_page(request, 409, "resubmitted")
    elif _viewer_at_change_page(request, visitor):
        return _error_page(request, 403, "viewer")
    else:
        claimed = None
    try:
        response = await handler(request)
    except Exception as exc:  # an error page follows (ui_guard): nothing was done
        if not (isinstance(exc, web.HTTPException) and exc.status < 400):
            await _release_once(request, claimed)
        raise
    if response.status >= 500 or response.status == 409:  # a conflict: nothing was done
        await _release_once(request, claimed)
    return _pre_session(response, request, visitor)


async def _posted(request: web.Request) -> MultiDictProxy[Any] | web.Response:
    """A POST's form; or the error page of one that cannot be read (400), or is too large
    (the UI's 413 page): every form the UI reads, with a session or after it ended."""
    try:
        return await read_form(request)  # a 408 (GatewayError) when it trickles in
    except (web.HTTPRequestEntityTooLarge, PayloadTooLarge):
        return _too_large(request)
    except (ValueError, AssertionError, web.RequestPayloadError, HttpProcessingError) as exc:
        # a multipart body aiohttp cannot read (a part's header line past its limit too); a
        # gzip one that does not decode (a 500 before)
        return _error_page(request, 400, f"malformed form: {exc}")


async def _asset(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A static file: no session read, no cookie (the login forms set theirs). A missing one
    is the UI's 404 page: aiohttp answers an empty 404 labelled a file download."""
    if not _static_file(request):
        raise web.HTTPNotFound()
    return await handler(request)


def _static_file(request: web.Request) -> bool:
    """Whether the asset asked for is a file of the static directory."""
    resource = request.match_info.route.resource
    if resource is None:
        return False
    directory = Path(resource.get_info()["directory"])
    path = directory / request.match_info.get("filename", "")
    try:
        return path.resolve().is_relative_to(directory) and path.is_file()
    except (OSError, ValueError):  # a name too long, a loop of links, a NUL in it
        return False


async def _signed_out(
    request: web.Request, visitor: Visitor, route: str | None, handler: Handler
) -> web.StreamResponse:
    """A POST without a live session does nothing: the visitor logs in again first. A form
    posted from a page of a session that has since ended keeps what was typed: the login page
    carries it, and once logged in the visitor saves it with one click. A logout is the
    exception: logged out already (another tab's logout, or the session ended), it is done
    all the same, the login page saying so (it changes nothing: no form check is needed)."""
    if route == "logout":
        return await handler(request)
    kept = await _kept_form(request) if route not in NEVER_KEPT else None
    if isinstance(kept, web.Response):  # unreadable, or too large: its page
        return _pre_session(kept, request, visitor)
    if kept and (kept.fields or kept.retype or kept.files):
        context = {
            "form": Form(),
            "token_form": Form(),
            "next": request.path,
            "expired": True,
            "kept": kept.fields,
            "retype": kept.retype,
            "refile": kept.files,
        }
        page = render(request, "login.html", context)
        page.set_status(401)
        return _pre_session(page, request, visitor)
    target = request.path_qs if request.method == "GET" else request.path
    return redirect(login_url(target, expired=visitor.expired))


async def _claim_once(
    request: web.Request, route: str | None, form: Any
) -> tuple[str, str] | bool | None:
    """A page's form changes things once: the same form sent again (Back or Reload on the
    page its POST answered) is refused (False). Dry runs and previews may be sent again, and
    a post without the form's one-time id (a script) is not checked (None). Else the session
    and the id now claimed."""
    session = visitor_of(request).session
    once = form.get(ONCE)
    if session is None or route in ANY_ROLE_POSTS or not isinstance(once, str) or not once:
        return None
    if not await services_of(request).accounts.claim_form(session.id, once[:64]):
        return False
    return session.id, once[:64]


async def _release_once(request: web.Request, claimed: tuple[str, str] | bool | None) -> None:
    """A form whose handling failed (an error, a 5xx) may be sent again: nothing was done."""
    if isinstance(claimed, tuple):
        await services_of(request).accounts.release_form(*claimed)


def _viewer_at_change_page(request: web.Request, visitor: Visitor) -> bool:
    """A viewer asking for a page made for changing (a new one, an edit): an admin's, like
    the POST it sends."""
    if visitor.session is None or visitor.session.can_change:
        return False
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical.endswith(CHANGE_PAGES)


def _pre_session(
    response: web.StreamResponse, request: web.Request, visitor: Visitor
) -> web.StreamResponse:
    """The response, with the pre-session cookie (the login forms' CSRF) when it is new."""
    if visitor.new_pre_session is not None:
        response.set_cookie(
            PRE_SESSION_COOKIE,
            visitor.new_pre_session,
            path="/admin",
            httponly=True,
            samesite="Lax",
            secure=_https(request),
        )
    return response


async def _kept_form(request: web.Request) -> Kept | web.Response | None:
    """The text fields of a form posted after its session ended, when it came from a page of
    ours: its CSRF token is the ended session's while the browser still sends that session's
    cookie, else (the cookie expired with the session) the browser says the post is
    same-origin. None otherwise, and for anything but a POST. Uploaded files are not kept,
    nor is a secret typed (forms.SECRET_FIELDS: a password, a partner's credentials): the
    login page would carry it and the page after the login show it; only its name is kept,
    for the visitor to type it again. A secret inside a JSON document (a channel's SMTP
    password: forms.DOCUMENT_SECRETS) is blanked in it, and asked for again the same way.
    A form that cannot be read or is too large gets the page any other does (`_posted`)."""
    if request.method != "POST":
        return None
    ring = services_of(request).keyring
    cookie = request.cookies.get(SESSION_COOKIE)
    ended = unsign_session(ring, cookie) if cookie else None
    if ended is None and not _same_origin(request):
        return None
    form = await _posted(request)
    if isinstance(form, web.Response):
        return form
    token = form.get("csrf")
    if not isinstance(token, str) or (ended is not None and not check_csrf(ring, ended, token)):
        return None
    return _keep(form)


def _foreign_form(
    request: web.Request, visitor: Visitor, route: str | None, form: Any
) -> web.Response:
    """A POST whose CSRF token is not the session's: a 403, nothing done. When the browser
    says it comes from a page of ours (`_same_origin`) and a session is live, it is a form of
    a session that ended meanwhile (the admin logged in again in another tab, so the cookie
    names the new session): what was typed is shown, kept as after a login, for **Save it**
    with this session's token (every check of the form applies then); secrets are asked for
    again. Anything else (another site's form, a logout) gets the bare 403 page."""
    session = visitor.session
    kept = _keep(form)
    if session is None or route in NEVER_KEPT or not _same_origin(request):
        return _error_page(request, 403, "csrf")
    if not (kept.fields or kept.retype or kept.files):
        return _error_page(request, 403, "csrf")
    if not typed_by(request, session, form.get(AUTHOR)):
        # Typed in another tenant's or account's session: neither saved nor shown here.
        return _error_page(request, 403, "csrf_other")
    context = _resume(request, kept, visitor.csrf, "login.resume_replaced")
    return render(request, "resume.html", context, status=403)


def _kept_through_outage(request: web.Request, exc: Unavailable) -> web.Response | None:
    """A form of this session whose handling met the database busy or unavailable before its
    own page could show it again (its one-time id could not be claimed; the page's reads
    failed too): the page lists what was typed with **Save it** (this session's CSRF token),
    its secrets asked for again, as after a login. None for anything else: a GET, a login, a
    form whose token is not this session's, a form with nothing typed."""
    visitor = visitor_of(request) if visitor_key in request else None
    form = request.get(form_key)
    route = request.match_info.route.name
    if visitor is None or visitor.session is None or form is None or route in NEVER_KEPT:
        return None
    token = form.get("csrf")
    if not isinstance(token, str) or not _csrf_ok(request, visitor, token):
        return None
    kept = _keep(form)
    if not (kept.fields or kept.retype or kept.files):
        return None
    context = _resume(request, kept, visitor.csrf, "forms.unavailable_resume")
    return render(request, "resume.html", context | {"detail": exc.detail}, status=exc.status)


def _resume(request: web.Request, kept: Kept, csrf: str, intro: str) -> dict[str, Any]:
    """The "Save it" page's context: what was typed, the secrets and files to give again,
    posted back to this path with this session's CSRF token."""
    return {
        "kept": kept.fields,
        "retype": kept.retype,
        "refile": kept.files,
        "action": request.path,
        "resume_csrf": csrf,
        "intro": intro,
    }


def _keep(form: Any) -> Kept:
    """A posted form's text fields as typed but its secrets (named, to be typed again), and
    the files chosen in it (named, to be chosen again: an upload is not kept)."""
    typed = [(k, v) for k, v in form.items() if isinstance(v, str) and k != "csrf"]
    files = [(k, str(v.filename)) for k, v in form.items() if isinstance(v, web.FileField)]
    fields: list[tuple[str, str]] = []
    retype: set[str] = set()
    for name, value in typed:
        if name in NOT_KEPT:
            if value:
                retype.add(name)
            continue
        value, hidden = hide_secrets(name, value)
        # A secret's own field is typed again; a document withheld whole is pasted again,
        # not kept empty (the page after the login would offer to save nothing).
        retype.update(h for h in hidden if h in TYPED_AGAIN)
        if name not in hidden:
            fields.append((name, value))
    return Kept(fields, sorted(retype), [(k, name) for k, name in files if name])


@dataclass(frozen=True, slots=True)
class Kept:
    """A form kept through the login: its fields as typed but its secrets, the names of the
    secret fields typed in it and of the files chosen in it (the page after the login asks
    for them again)."""

    fields: list[tuple[str, str]]
    retype: list[str]
    files: list[tuple[str, str]]  # (field, the name of the file chosen): chosen again


def _same_origin(request: web.Request) -> bool:
    """The browser's own word that a request comes from a page of this site."""
    if request.headers.get("Sec-Fetch-Site") == "same-origin":
        return True
    origin = request.headers.get("Origin")
    return origin is not None and origin in (
        str(request.url.origin()),
        str(URL(services_of(request).settings.base_url).origin()),
    )


async def _visitor(request: web.Request) -> Visitor:
    services = services_of(request)
    lang = choose_language(request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language"))
    flash = request.cookies.get(FLASH_COOKIE)
    ring = services.keyring
    cookie = request.cookies.get(SESSION_COOKIE)
    session_id = unsign_session(ring, cookie) if cookie else None
    session = await services.accounts.session(session_id) if session_id else None
    if session is not None:
        author = author_token(ring, session.tenant, session.subject)
        return Visitor(lang, session, csrf_token(ring, session.id), author, flash=flash)
    pre = request.cookies.get(PRE_SESSION_COOKIE)
    fresh = None
    if not pre or len(pre) > 64 or not pre.isascii():  # not one of ours: a new one
        pre = fresh = new_session_id()
    return Visitor(
        lang,
        None,
        csrf_token(ring, "pre:" + pre),
        expired=session_id is not None,
        new_pre_session=fresh,
        flash=flash,
    )


def typed_by(request: web.Request, session: UiSession, author: Any) -> bool:
    """Whether a form kept through a session's end was typed in a session of `session`'s
    tenant and account: only then is it offered again."""
    ring = services_of(request).keyring
    return isinstance(author, str) and check_author(ring, session.tenant, session.subject, author)


def _csrf_ok(request: web.Request, visitor: Visitor, token: str) -> bool:
    ring = services_of(request).keyring
    if visitor.session is not None:
        return check_csrf(ring, visitor.session.id, token)
    pre = request.cookies.get(PRE_SESSION_COOKIE)
    if not pre or visitor.new_pre_session is not None:
        return False
    return check_csrf(ring, "pre:" + pre, token)


def _https(request: web.Request) -> bool:
    return services_of(request).settings.base_url.startswith("https://")


def _too_large(request: web.Request) -> web.Response:
    """A form over the body limit (GATEWAY_MAX_BODY_BYTES; aiohttp stops reading it there):
    the UI's page, in the visitor's language, naming the limit and leading back to the page
    the form was on (the browser's Back keeps what was typed there)."""
    limit = request.client_max_size
    back = referer_page(request) or "/admin/"
    words = {"limit": _size(limit, visitor_of(request).lang), "back": back}
    return _error_page(request, 413, "too_large", words)


def _size(size: int, lang: str) -> str:
    """A size in bytes as people read it: `1 MiB`, `256 KiB`, else bytes (grouped)."""
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{number_shown(size // scale, lang)} {unit}"
    return f"{number_shown(size, lang)} B"


def _error_page(
    request: web.Request,
    status: int,
    detail: str,
    words: dict[str, str] | None = None,
    *,
    problems: Sequence[FieldProblem] = (),
    typed: Sequence[tuple[str, str]] = (),
) -> web.Response:
    if visitor_key not in request:
        lang = choose_language(
            request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language")
        )
        request[visitor_key] = Visitor(lang, None, "")
    # csrf, viewer, resubmitted and too-large refusals have words of their own (filled from
    # `words`); other errors show the use case's.
    own = ("csrf", "csrf_other", "viewer", "resubmitted", "too_large")
    reason = detail if detail in own else None
    context = {
        "title": error_key(status),
        "reason": reason,
        "detail": None if reason else detail,
        "words": words or {},
        "problems": problems,
        "typed": typed,
    }
    return render(request, "error.html", context, status=status)


def _secure(response: web.StreamResponse, request: web.Request) -> None:
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith("/admin/static/"):
        # Pages show tokens once and tenants' data: never kept by a browser or a proxy.
        response.headers["Cache-Control"] = "no-store"


def session_cookie(
    response: web.StreamResponse, request: web.Request, value: str, max_age: int
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        path="/admin",
        httponly=True,
        samesite="Lax",
        secure=_https(request),
        max_age=max_age,
    )


def end_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/admin")
