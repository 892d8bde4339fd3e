"""Admin UI session cookies and CSRF tokens: HMAC-SHA256 with the key ring's own subkeys.

A session cookie is `<session id>.<mac>`: the id names a record in the store (which holds the
tenant, role and expiry, and which logout deletes); the MAC lets a forged or tampered cookie
be refused before any database read. A CSRF token is a MAC of the session id under another
subkey, so it needs no storage and dies with its session. Both verify under every root key
of `GATEWAY_SECRET_KEY`, so rotating the key does not log everyone out at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final

from gateway.auth.keyring import KeyRing, Purpose

_ID_BYTES: Final = 32
MAX_COOKIE_LENGTH: Final = 200


def _mac(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_session_id() -> str:
    return secrets.token_urlsafe(_ID_BYTES)


def sign_session(ring: KeyRing, session_id: str) -> str:
    return f"{session_id}.{_mac(ring.signing_key(Purpose.SESSION).key, session_id)}"


def unsign_session(ring: KeyRing, cookie: str) -> str | None:
    """The session id of a cookie we signed, or None (one with a character we never write,
    non-ASCII, too: hmac.compare_digest raises on such a string)."""
    if len(cookie) > MAX_COOKIE_LENGTH or not cookie.isascii():
        return None
    session_id, _, mac = cookie.partition(".")
    if not session_id or not mac:
        return None
    for key in ring.verification_keys(Purpose.SESSION):
        if hmac.compare_digest(_mac(key.key, session_id), mac):
            return session_id
    return None


def csrf_token(ring: KeyRing, session_id: str) -> str:
    return _mac(ring.signing_key(Purpose.CSRF).key, session_id)


def author_token(ring: KeyRing, tenant: str, subject: str) -> str:
    """Who typed a form (a UI form's hidden `author`): the tenant and the account of its
    session, so that a form kept through a session's end is offered to them alone."""
    return _mac(ring.signing_key(Purpose.CSRF).key, f"author\0{tenant}\0{subject}")


def check_author(ring: KeyRing, tenant: str, subject: str, token: str) -> bool:
    return check_csrf(ring, f"author\0{tenant}\0{subject}", token)


def check_csrf(ring: KeyRing, session_id: str, token: str) -> bool:
    """Whether `token` is the CSRF token (or author mark) of `session_id`; never for a token
    with a character we never write (non-ASCII: hmac.compare_digest raises on it)."""
    if not token or len(token) > MAX_COOKIE_LENGTH or not token.isascii():
        return False
    return any(
        hmac.compare_digest(_mac(key.key, session_id), token)
        for key in ring.verification_keys(Purpose.CSRF)
    )
