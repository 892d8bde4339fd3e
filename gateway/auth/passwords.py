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
# Scrypt work a process holds at once, running and waiting, on users that exist (their
# logins, a new user, a password change): a login past it is refused (429, `matches`)
# rather than queued, so a flood of logins never makes an admin's login, a new user or a
# password change wait more than these checks and the few below (~2 s). The UI also gives
# each client a few logins a second.
MAX_CHECKS: Final = 8
# Checks of logins that name no user (against `dummy_hash`, so that they take as long as a
# wrong password) held at once, apart from those: past it such a login is answered as a
# wrong password after as long as a check takes, unchecked. So logins for made-up e-mails,
# from however many clients, hold at most this many checks: never the room of the users'.
MAX_UNKNOWN_CHECKS: Final = 2


class _Held:
    """Scrypt work of one kind the process holds, running and waiting, and a bound on it."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.count = 0

    @property
    def full(self) -> bool:
        return self.count >= self.most


_USERS: Final = _Held(MAX_CHECKS)
_UNKNOWN: Final = _Held(MAX_UNKNOWN_CHECKS)
# How long the last check took, from its submission to its answer (queueing included): an
# unknown e-mail's login answered unchecked waits as long.
_took = 0.2


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
    return await _on_scrypt(_USERS, functools.partial(hash_password, password))


async def matches(password: str, stored: str | None) -> bool:
    """`verify_password` on the scrypt threads; `stored` None (no such user) is checked
    against `dummy_hash()`, so that a login takes as long either way, in a bound of its own
    (MAX_UNKNOWN_CHECKS; past it answered False as late as a check would be). RateLimited when
    the process holds MAX_CHECKS of its users' already, whatever user the login names: the
    refusal says nothing of which exist."""
    if _USERS.full:
        raise RateLimited("too many logins are being checked; try again in a second")
    if stored is not None:
        return await _on_scrypt(_USERS, functools.partial(verify_password, password, stored))
    if _UNKNOWN.full:
        await asyncio.sleep(_took)
        return False
    return await _on_scrypt(_UNKNOWN, lambda: verify_password(password, dummy_hash()))


async def _on_scrypt(held: _Held, work: Callable[[], _T]) -> _T:
    global _took
    loop = asyncio.get_running_loop()
    started = loop.time()
    held.count += 1
    try:
        answer = await loop.run_in_executor(_SCRYPT, work)
    finally:
        held.count -= 1
    _took = loop.time() - started
    return answer


@functools.cache
def dummy_hash() -> str:
    """Checked against when the e-mail is unknown, so that a login takes as long either way."""
    return hash_password(secrets.token_urlsafe(16))
