"""Admin UI password hashes: salted scrypt, parameters stored in the hash string.

scrypt$<n>$<r>$<p>$<salt, base64>$<hash, base64>
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Final

N: Final = 2**15  # ~32 MiB and tens of milliseconds per hash: costly to guess, cheap to log in
R: Final = 8
P: Final = 1
MAX_PASSWORD_LENGTH: Final = 1024
_SALT_BYTES: Final = 16
_HASH_BYTES: Final = 32
_PREFIX: Final = "scrypt"


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    _check_password(password)
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    return "$".join((_PREFIX, str(n), str(r), str(p), _b64(salt), _b64(digest)))


def verify_password(password: str, stored: str | None) -> bool:
    """Whether `password` matches `stored`, in constant time.

    Pass `stored=None` for an unknown user: a hash is still computed, so the answer takes
    as long as for a real account and does not reveal which user names exist.
    """
    parsed = _parse(stored) if stored else None
    if parsed is None or len(password) > MAX_PASSWORD_LENGTH:
        _scrypt(password[:MAX_PASSWORD_LENGTH], b"\0" * _SALT_BYTES, N, R, P)
        return False
    n, r, p, salt, expected = parsed
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), expected)


def needs_rehash(stored: str) -> bool:
    """Whether `stored` was made with other parameters than today's (rehash at next login)."""
    parsed = _parse(stored)
    return parsed is None or parsed[:3] != (N, R, P)


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _PREFIX:
        return None
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, digest = base64.b64decode(parts[4]), base64.b64decode(parts[5])
    except (ValueError, binascii.Error):
        return None
    # Bounds keep a tampered hash from asking for gigabytes of memory.
    if not (1 < n and n & (n - 1) == 0 and 0 < r <= 32 and 0 < p <= 16 and 128 * r * n <= 2**28):
        return None
    return n, r, p, salt, digest


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * r * n + 2**20, dklen=_HASH_BYTES
    )


def _check_password(password: str) -> None:
    if not password:
        raise ValueError("a password must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"a password must be at most {MAX_PASSWORD_LENGTH} characters")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
