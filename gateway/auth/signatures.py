"""What the inbound signature checks share: how they refuse, how they read headers (a
header offering several signatures included), and how they read a key written in base64."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from gateway.errors import Unauthorized

Reason = Literal["missing", "malformed", "stale", "mismatch", "unusable_secret"]
REASONS: Final[tuple[Reason, ...]] = (
    "missing",
    "malformed",
    "stale",
    "mismatch",
    "unusable_secret",
)
MAX_PARTS: Final = 16
"""Parts one signature header may have: its signatures (a partner rolling its secret sends 2;
this gateway up to 6, its secret and the last 5 rotated out, actions/signing.py), a timestamp
pair, signatures of versions not checked. A header of more is refused `malformed` before its
signatures are decoded or compared, so one of thousands costs no more than one of 16."""


class SignatureRejected(Unauthorized):
    """A signed request that does not verify. `reason` is a metrics label: a header is
    `missing`, a value is `malformed` (not the encoding, length or prefix of the scheme), the
    timestamp is `stale` (outside the tolerance: a replay), or no signature is a `mismatch`;
    `unusable_secret`: none of the trigger's live secrets can key its scheme (stored before
    the check on save, 2026-12-06): the operator's to fix, logged by the receiver. The
    partner sees the same 401 as for any bad credential."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason: Reason = reason


@dataclass(frozen=True, slots=True)
class ReplayKey:
    """What a verified message is known by, so that a copy of it is answered from the first
    call instead of written again. `key` is derived from what the signature covers only (a
    signed message id, or the signed content), never from how the signatures are offered:
    their order, an extra or junk one, the case of hex, a second secret's, so every copy of a
    message has one key. `named` is how answers name it ("webhook-id", the id header, "signed
    body").

    `legacy` and `legacy_offered` are the keys a copy written by an earlier version (until
    2026-12-05) was kept under: its first signature offered. `legacy` when that signature
    matched (it then covers the content), `legacy_offered` when it matched no secret (a
    partner rolling its secret puts the new one first): that key says nothing of the content,
    so a record kept under it is this message's only when its body is the same.

    `verifies_until`: the Unix time after which a copy no longer verifies (its signed
    timestamp plus the tolerance); None when nothing signed bounds it (no timestamp), and for
    Standard Webhooks, whose 5-minute tolerance ends long before a first answer's 24 h."""

    key: str
    named: str
    legacy: tuple[str, ...] = ()
    legacy_offered: str | None = None
    verifies_until: float | None = None


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    # aiohttp's headers are case-insensitive already; a plain dict may not be.
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def header_parts(text: str, separator: str | None) -> list[str]:
    """`text` split at `separator` (None: at runs of blanks), blanks around each part dropped.
    SignatureRejected `malformed` past MAX_PARTS parts, found without splitting the rest."""
    parts = text.split(separator, MAX_PARTS)
    if len(parts) > MAX_PARTS:
        message = f"the signature header has more than {MAX_PARTS} parts"
        raise SignatureRejected("malformed", message)
    return [part.strip() for part in parts]


def base64_key(text: str) -> bytes:
    """The bytes of a key written in base64, standard alphabet, its `=` padding optional: the
    Standard Webhooks libraries pad a secret given without it (Python's "add padding in case
    whsecret is unpadded base64"), and decode the standard alphabet only (Go's and
    JavaScript's refuse `-` and `_`, Python's drops them: another key), so URL-safe base64 is
    refused here, saying so. ValueError says what is wrong."""
    if "-" in text or "_" in text:
        raise ValueError("it is URL-safe base64 (- and _), not standard base64 (+ and /)")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("it is not base64") from None
