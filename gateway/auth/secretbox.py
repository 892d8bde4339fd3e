"""Encryption at rest for partner credentials and signing secrets.

Fernet (AES-128-CBC + HMAC-SHA256, authenticated) under the key ring's "secretbox" subkeys:
the current key seals, every key opens, and `rotate` re-seals under the current key. A
`context` (e.g. "partner:<id>:auth") is sealed with the value and checked when it is opened,
so a ciphertext copied onto another document does not open there.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from gateway.auth.keyring import KeyRing, Purpose
from gateway.errors import GatewayError, KeyRefused


class SecretBoxError(GatewayError):
    """A stored secret cannot be opened. The message never includes the value. `record`: the
    context it was opened for (`partner:<id>:auth`), when known; a reader that knows whose
    secret it is names it in the message (`naming`)."""

    def __init__(
        self, detail: str = "", *, record: str = "", keyless: bool = False, lost: bool = False
    ) -> None:
        super().__init__(detail)
        self.record = record
        self.keyless = keyless  # no key decrypts it (not: opened, but for another record)
        self.lost = lost  # forgotten with the key that sealed it (`LOST`): save it again

    def naming(self, whose: str) -> SecretBoxError:
        """The same error, its message starting with whose secret it is (never its value)."""
        return SecretBoxError(
            f"{whose}: {self.detail}", record=self.record, keyless=self.keyless, lost=self.lost
        )


LOST = "lost:"
"""What a stored secret reads once `gateway reseal --forget-unreadable` cleared it (`LOST` and
the date): no key opened it (the key that sealed it is gone for good). It opens as lost, never
as an empty secret: what needs it fails until an admin saves it again."""


def lost_secret(on: str) -> str:
    """The value standing for a secret forgotten on `on` (an ISO date)."""
    return f"{LOST}{on}"


def is_lost(token: str) -> bool:
    return token.startswith(LOST)


def lost_on(value: object) -> str | None:
    """The date a stored value was forgotten on (`lost_secret`); None when it is not lost."""
    return value.removeprefix(LOST) if isinstance(value, str) and is_lost(value) else None


def shown_lost(value: object) -> dict[str, Any]:
    """What an answer shows of a stored secret beside `configured` (false when lost): the
    `lost` date of one forgotten, so that an admin sees it must be saved again."""
    on = lost_on(value)
    return {} if on is None else {"lost": on}


class SecretBox:
    def __init__(self, ring: KeyRing) -> None:
        keys = ring.verification_keys(Purpose.SECRETBOX)
        fernets = [Fernet(base64.urlsafe_b64encode(k.key)) for k in keys]
        # Public fingerprints of the keys, the sealing one first: a sealed value carries none
        # (Fernet), so the key check records which keys the stored values need (keys.py).
        self.kids = tuple(k.kid for k in keys)
        self._current = fernets[0]
        self._all = MultiFernet(fernets)
        self._refused: str | None = None  # why this key may seal nothing (`refuse`)

    def __repr__(self) -> str:
        return "SecretBox()"

    def refuse(self, reason: str) -> None:
        """Seal nothing from now on (KeyRefused, a 503 naming `reason`): the key was found
        not to open what the database holds, so nothing sealed under it would open elsewhere."""
        self._refused = reason

    def seal(self, plaintext: str | Mapping[str, Any], *, context: str = "") -> str:
        if self._refused is not None:
            raise KeyRefused(f"this process seals no secret: {self._refused}", retry_after=60)
        if isinstance(plaintext, str):
            envelope: dict[str, Any] = {"c": context, "s": plaintext}
        else:
            envelope = {"c": context, "j": dict(plaintext)}
        return self._current.encrypt(orjson.dumps(envelope)).decode()

    def open(self, token: str, *, context: str = "") -> str | dict[str, Any]:
        try:
            envelope = self._decrypt(token)
        except SecretBoxError as exc:
            raise SecretBoxError(
                exc.detail, record=context, keyless=exc.keyless, lost=exc.lost
            ) from None
        if not isinstance(envelope, dict) or envelope.get("c") != context:
            raise SecretBoxError("a stored secret was sealed for another record", record=context)
        value = envelope.get("s", envelope.get("j"))
        if not isinstance(value, str | dict):
            raise SecretBoxError("a stored secret is malformed", record=context)
        return value

    def open_text(self, token: str, *, context: str = "") -> str:
        value = self.open(token, context=context)
        if not isinstance(value, str):
            raise SecretBoxError("a stored secret is not text", record=context)
        return value

    def open_json(self, token: str, *, context: str = "") -> dict[str, Any]:
        value = self.open(token, context=context)
        if not isinstance(value, dict):
            raise SecretBoxError("a stored secret is not an object", record=context)
        return value

    def rotate(self, token: str) -> str:
        """The same secret sealed under the current key (its original timestamp kept)."""
        try:
            return self._all.rotate(token.encode()).decode()
        except InvalidToken:
            raise _cannot_open() from None

    def needs_rotation(self, token: str) -> bool:
        """Whether `token` was sealed under an older key (and `rotate` would change it)."""
        try:
            self._current.decrypt(token.encode())
        except InvalidToken:
            self._decrypt(token)  # raises when no key opens it at all
            return True
        return False

    def opens(self, token: str) -> bool:
        """Whether one of the keys opens `token` (whatever its context)."""
        try:
            self._decrypt(token)
        except SecretBoxError:
            return False
        return True

    def _decrypt(self, token: str) -> Any:
        if is_lost(token):
            raise SecretBoxError(
                f"a stored secret was lost with the key that sealed it (forgotten by `gateway "
                f"reseal --forget-unreadable` on {token.removeprefix(LOST)})",
                lost=True,
            )
        try:
            return orjson.loads(self._all.decrypt(token.encode()))
        except (InvalidToken, orjson.JSONDecodeError):
            raise _cannot_open() from None


def _cannot_open() -> SecretBoxError:
    return SecretBoxError(
        "a stored secret cannot be decrypted: GATEWAY_SECRET_KEY lacks the key that sealed "
        "it, or the value is damaged",
        keyless=True,
    )
