"""Admin UI passwords: scrypt (memory-hard), self-describing hashes, constant-time checks.

A hash reads `scrypt$<log2 n>$<r>$<p>$<salt>$<key>` (base64url), so the cost can rise later
without breaking the hashes already stored: each is checked with the parameters it names.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

from gateway.errors import RateLimited

_T = TypeVar("_T")

# 2**15 × 8 × 128 bytes = 32 MiB of memory per hash, about 0.2 s on a shared 2-core machine:
# cheap for one login, expensive for guessing in bulk. OWASP's floor for scrypt is n=2**17
# (or 2**15 with p=3); we take p=1 to keep a login under a second on small machines, and
# pair it with the lockout of `gateway/accounts.py`. Raising it later breaks no stored hash.
LOG2_N: Final = 15
R: Final = 8
P: Final = 1
_KEY_BYTES: Final = 32
_MAXMEM: Final = 64 * 1024 * 1024
MIN_LENGTH: Final = 10
MAX_LENGTH: Final = 1024  # bounds the work one login costs us
# Every scrypt of the process runs on these threads, off the event loop and never on its
# default executor: two checks at a time (64 MiB, two cores at most), queueing none of the
# work the default executor does (a partner answer's redaction, another process's start-up).
_SCRYPT: Final = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scrypt")
# Scrypt work a process holds at once, running and waiting: a login past it is refused (429,
# `matches`) rather than queued, so a flood of logins (each one a check, an unknown e-mail
# too) never makes an admin's login, a new user or a password change wait more than this
# many checks (~2 s). The UI also gives each client address a few logins a second.
MAX_CHECKS: Final = 8
_held = 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=2**log2_n, r=r, p=p, maxmem=_MAXMEM, dklen=_KEY_BYTES
    )


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"a password has at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters"
    return None


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = _derive(password, salt, LOG2_N, R, P)
    return f"scrypt${LOG2_N}${R}${P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored`; a malformed hash never matches."""
    try:
        scheme, log2_n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt" or len(password) > MAX_LENGTH:
            return False
        derived = _derive(password, _unb64(salt), int(log2_n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(derived, _unb64(key))


async def hashed(password: str) -> str:
    """`hash_password` on the scrypt threads (an admin's own change: never refused, but
    counted, so that logins leave room for it)."""
    return await _on_scrypt(functools.partial(hash_password, password))


async def matches(password: str, stored: str | None) -> bool:
    """`verify_password` on the scrypt threads; `stored` None (no such user) is checked
    against `dummy_hash()`, so that a login takes as long either way. RateLimited when the
    process holds MAX_CHECKS already."""
    if _held >= MAX_CHECKS:
        raise RateLimited("too many logins are being checked; try again in a second")

    def check() -> bool:
        return verify_password(password, stored if stored is not None else dummy_hash())

    return await _on_scrypt(check)


async def _on_scrypt(work: Callable[[], _T]) -> _T:
    global _held
    _held += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_SCRYPT, work)
    finally:
        _held -= 1


@functools.cache
def dummy_hash() -> str:
    """Checked against when the e-mail is unknown, so that a login takes as long either way."""
    return hash_password(secrets.token_urlsafe(16))
