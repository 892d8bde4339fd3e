"""The key ring: purpose-specific subkeys derived once from `GATEWAY_SECRET_KEY`.

`GATEWAY_SECRET_KEY` may hold several comma-separated root keys so they can rotate: the first
signs and encrypts, every one of them verifies and decrypts. Each root key is stretched with
HKDF-SHA256 into one independent subkey per `Purpose`, so a trigger-token key can never
verify an admin token, and the encryption key is never an HMAC key. Every subkey carries a
`kid`, a short public fingerprint that token headers use to pick the verification key.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.config import MIN_SECRET_KEY_LENGTH

MIN_SECRET_LENGTH = MIN_SECRET_KEY_LENGTH
_HKDF_SALT = b"rabbot-gateway/keyring/v1"
_SUBKEY_BYTES = 32


class Purpose(StrEnum):
    """What a subkey is for; the value is the HKDF `info`, so never rename one."""

    TRIGGER_TOKEN = "trigger-token"
    ADMIN_TOKEN = "admin-token"
    SESSION = "session"
    CSRF = "csrf"
    SECRETBOX = "secretbox"
    IDEMPOTENCY = "idempotency"


@dataclass(frozen=True, slots=True)
class SubKey:
    """One derived key. `kid` is public (it travels in token headers); `key` is not."""

    purpose: Purpose
    kid: str
    key: bytes = field(repr=False)


def generate_secret_key() -> str:
    """A fresh root key for `GATEWAY_SECRET_KEY` (256 random bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def derive_subkey(root: str, purpose: Purpose) -> SubKey:
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=_SUBKEY_BYTES,
        salt=_HKDF_SALT,
        info=b"rabbot-gateway:" + purpose.value.encode(),
    ).derive(root.encode())
    fingerprint = hashlib.sha256(key).digest()[:8]
    kid = base64.urlsafe_b64encode(fingerprint).rstrip(b"=").decode()
    return SubKey(purpose, kid, key)


class KeyRing:
    """Every subkey of every root key, derived at construction; lookups are dict reads."""

    __slots__ = ("_by_kid", "_keys")

    def __init__(self, root_keys: Sequence[str]) -> None:
        roots = list(dict.fromkeys(root_keys))  # a repeated key is harmless: drop it
        if not roots:
            raise ValueError("GATEWAY_SECRET_KEY holds no key")
        for root in roots:
            if len(root) < MIN_SECRET_LENGTH or root != root.strip():
                raise ValueError(
                    f"every key in GATEWAY_SECRET_KEY must be at least {MIN_SECRET_LENGTH} "
                    "characters without surrounding spaces (generate one with "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                )
        self._keys: dict[Purpose, tuple[SubKey, ...]] = {
            purpose: tuple(derive_subkey(root, purpose) for root in roots) for purpose in Purpose
        }
        self._by_kid: dict[Purpose, Mapping[str, SubKey]] = {
            purpose: MappingProxyType({k.kid: k for k in keys})
            for purpose, keys in self._keys.items()
        }

    @classmethod
    def from_secret(cls, value: str) -> KeyRing:
        """Parse the `GATEWAY_SECRET_KEY` value: comma-separated keys, newest first."""
        return cls([part.strip() for part in value.split(",") if part.strip()])

    def __repr__(self) -> str:
        return f"KeyRing(keys={len(self._keys[Purpose.SESSION])})"

    __str__ = __repr__

    def signing_key(self, purpose: Purpose) -> SubKey:
        """The current key: the one derived from the first root key."""
        return self._keys[purpose][0]

    def verification_keys(self, purpose: Purpose) -> tuple[SubKey, ...]:
        """Every key for `purpose`, current first."""
        return self._keys[purpose]

    def keys_by_kid(self, purpose: Purpose) -> Mapping[str, SubKey]:
        """A read-only kid → key map, for callers that look keys up per request."""
        return self._by_kid[purpose]
