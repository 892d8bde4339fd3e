"""Logging in (password or admin token), logging out, and choosing the language."""

from __future__ import annotations

import math

from aiohttp import web

from gateway.accounts import MAX_FAILURES, UiSession
from gateway.auth.sessions import csrf_token, sign_session
from gateway.clock import utcnow
from gateway.errors import GatewayError, KeysUnavailable, RateLimited, Unauthorized, Unavailable
from gateway.ui.forms import AUTHOR, NOT_KEPT, TYPED_AGAIN, Form, hide_secrets, read_values
from gateway.ui.i18n import COOKIE as LANG_COOKIE
from gateway.ui.i18n import LANGUAGES
from gateway.ui.middleware import end_session_cookie, session_cookie, typed_by
from gateway.ui.rendering import local_path, page_path, redirect, render
from gateway.ui.state import PREFIX, form_of, visitor_of
from gateway.web.client_address import client_key
from gateway.web.state import services_of

_ONE_YEAR = 365 * 24 * 3600
# Password logins a client (an address, an IPv6 one's /64: web/client_address.py) may try, a
# second and at once: a few, below what the process holds (passwords.MAX_CHECKS), so one
# client cannot fill that; the burst lets one more than the lockout's failures through, so a
# mistyping admin is told of the lockout.
LOGIN_RATE = 2
LOGIN_BURST = MAX_FAILURES + 1
# The prefix of a login form's fields that carry a form typed before the session ended.
KEPT = "kept:"
# The login forms' fields that name a secret field of that form: typed, but not kept.
RETYPE = "retype"
# The prefix of a login form's fields that name a file chosen in that form (and the file's
# name): not kept either.
REFILE = "refile:"


async def login_page(request: web.Request) -> web.Response:
    if visitor_of(request).session is not None:
        return redirect(page_path(request, request.query.get("next")))
    return _login(request, Form(), Form())


async def login_password(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    form = Form({k: values.get(k, "") for k in ("tenant", "email", "next")})
    services = services_of(request)
    try:
        wait = services.admin_limits.wait(f"login:{client_key(request)}", LOGIN_RATE, LOGIN_BURST)
        if wait:
            raise RateLimited(
                f"over {LOGIN_RATE} logins a second from this address",
                retry_after=max(1, math.ceil(wait)),
            )
        session = await services.accounts.login(
            values.get("tenant", ""), values.get("email", ""), str(values.get("password", ""))
        )
    except (Unauthorized, RateLimited) as exc:
        return _retry_after(_login(request, form.refuse(exc, ()), Form(), status=exc.status), exc)
    return await _signed_in(request, session, form.value("next"))


async def login_token(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    client = client_key(request) or "unknown"
    try:
        session = await services_of(request).accounts.login_with_token(
            str(values.get("token", "")), client
        )
    except KeysUnavailable as exc:
        # No token was judged (nor counted): the identity provider's keys could not be
        # fetched. The page says to try again, as the API's 503 does.
        detail = f"{exc.detail}; try again in {exc.retry_after} s"
        later = KeysUnavailable(detail, retry_after=exc.retry_after)
        token_form = Form({"next": values.get("next", "")}).refuse(later, ())
        return _retry_after(_login(request, Form(), token_form, status=exc.status), exc)
    except (Unauthorized, RateLimited) as exc:
        token_form = Form({"next": values.get("next", "")}).refuse(exc, ())
        return _retry_after(_login(request, Form(), token_form, status=exc.status), exc)
    return await _signed_in(request, session, values.get("next"))


def _retry_after(response: web.Response, refused: GatewayError) -> web.Response:
    """A refused login's page, with `Retry-After` when the refusal says when to try again."""
    if isinstance(refused, RateLimited | Unavailable):
        response.headers["Retry-After"] = str(refused.retry_after)
    return response


async def logout(request: web.Request) -> web.Response:
    session = visitor_of(request).session
    if session is not None:
        await services_of(request).accounts.logout(session.id)
    response = redirect(f"{PREFIX}/login", flash="login.logged_out")
    end_session_cookie(response)
    return response


async def language(request: web.Request) -> web.Response:
    """GET /admin/lang/{code}?next=...: a link, so the switch works without JavaScript; it
    changes nothing but the visitor's own cookie."""
    code = request.match_info["code"]
    response = redirect(page_path(request, request.query.get("next")))
    if code in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE, code, path=PREFIX, max_age=_ONE_YEAR, samesite="Lax", httponly=True
        )
    return response


def _login(request: web.Request, password: Form, token: Form, *, status: int = 200) -> web.Response:
    next_path = local_path(
        request.query.get("next") or password.value("next") or token.value("next") or None
    )
    kept, retype, refile = _kept(request), _retype(request), _refile(request)
    return render(
        request,
        "login.html",
        {
            "form": password,
            "token_form": token,
            "next": next_path,
            "expired": request.query.get("expired") == "1" or bool(kept or retype or refile),
            "kept": kept,
            "retype": retype,
            "refile": refile,
        },
        status=status,
    )


def _kept(request: web.Request) -> list[tuple[str, str]]:
    """A form typed before the session ended, carried by the login forms (`kept:` fields):
    never a secret field (the middleware keeps none; one posted so is dropped)."""
    if request.method != "POST":
        return []
    kept = [(k.removeprefix(KEPT), v) for k, v in form_of(request).items() if k.startswith(KEPT)]
    return [
        (name, hide_secrets(name, v)[0])
        for name, v in kept
        if isinstance(v, str) and name not in NOT_KEPT
    ]


def _retype(request: web.Request) -> list[str]:
    """The secret fields typed in that form (`retype` fields), to be typed again: only names
    of forms.SECRET_FIELDS (or forms.RETYPED_MEMBERS: a document's secret; forms.PASTED_AGAIN:
    a document withheld whole), each once."""
    if request.method != "POST":
        return []
    named = form_of(request).getall(RETYPE, [])
    return sorted({n for n in named if isinstance(n, str) and n in TYPED_AGAIN})


def _refile(request: web.Request) -> list[tuple[str, str]]:
    """The files chosen in that form (`refile:` fields: the field, the file's name), to be
    chosen again: an upload is never kept."""
    if request.method != "POST":
        return []
    form = form_of(request)
    named = [(k.removeprefix(REFILE), v) for k, v in form.items() if k.startswith(REFILE)]
    return [(name, v) for name, v in named if isinstance(v, str) and name]


async def _signed_in(
    request: web.Request, session: UiSession, next_path: str | None
) -> web.Response:
    """The answer to a login: the new session's cookie replaces the browser's, and the session
    that cookie named, if it was live (another account logging in at a shared browser), ends
    as at a logout: a copy of its cookie must not outlive what the browser holds."""
    if (replaced := visitor_of(request).session) is not None:
        await services_of(request).accounts.logout(replaced.id)
    kept, retype, refile = _kept(request), _retype(request), _refile(request)
    if not typed_by(request, session, dict(kept).get(AUTHOR)):
        # Typed in another tenant's or account's session (a shared browser): whoever logs in
        # now neither sees nor saves it.
        kept, retype, refile = [], [], []
    if kept or retype or refile:
        # What was typed before the session ended, not saved yet: one click saves it, with
        # the new session's CSRF token (the use case's checks, and the form's revision, apply);
        # its secrets and files were not kept: the page asks for them again.
        context = {
            "kept": kept,
            "retype": retype,
            "refile": refile,
            "action": local_path(next_path),
            "resume_csrf": csrf_token(services_of(request).keyring, session.id),
        }
        response = render(request, "resume.html", context)
    else:
        response = redirect(page_path(request, next_path))
    lifetime = int((session.expires_at - utcnow()).total_seconds())
    session_cookie(
        response, request, sign_session(services_of(request).keyring, session.id), lifetime
    )
    return response
