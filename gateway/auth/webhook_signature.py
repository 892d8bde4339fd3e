"""Standard Webhooks signatures (https://www.standardwebhooks.com), outbound and inbound.

    webhook-signature: v1,<base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))> [v1,... ...]

where `key` is the base64 text after "whsec_". Several signatures, space-separated, let a
secret rotate: we sign with the old and the new secret for a while, and a receiver accepts
the message when any signature matches any of its secrets.

Inbound, the same three headers under Svix's names (`svix-id`, `svix-timestamp`,
`svix-signature`: the reference implementation, whose senders use them) are read when the
`webhook-*` ones are not all there, as Svix's own libraries read both.
"""

from __future__ import annotations

import base64
import hmac
import secrets as _random
from collections.abc import Mapping, Sequence
from typing import Final

from gateway.auth.signatures import SignatureRejected, base64_key, header_parts, header_value

SECRET_PREFIX: Final = "whsec_"
TOLERANCE_SECONDS: Final = 300
ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"
HEADER_NAMES: Final = (
    (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER),
    ("svix-id", "svix-timestamp", "svix-signature"),
)


def generate_secret() -> str:
    """A new signing secret: "whsec_" + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(24)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a secret ("whsec_" is optional; the base64's `=` padding too, as
    the official libraries take it); ValueError when malformed."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64_key(encoded)
    except ValueError as exc:
        message = f"a webhook secret is 'whsec_' followed by base64 ('=' padding optional): {exc}"
        raise ValueError(message) from None
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, "v1,<base64>"."""
    return "v1," + _digest(secret_key(secret), msg_id, timestamp, body)


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret (old and new while rotating)."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def signed_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers an outbound delivery carries."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature_header(secrets, msg_id, timestamp, body),
    }


def verify(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> str:
    """Check an inbound signed message and return its webhook-id (a natural idempotency key:
    signed, and the same for every copy). The specification sets no length or alphabet for
    it: any id is taken as sent (bytes that are not UTF-8 too, as the server read them).

    Raises `SignatureRejected` (a 401) when a header is missing, the timestamp is more than
    `tolerance` seconds away from `now` (replays), the signature header has more than
    MAX_PARTS parts, no signature matches any of `secrets`, or none of them is a webhook
    secret (`unusable_secret`).
    """
    msg_id, stamp, offered = _signed_headers(headers)
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise SignatureRejected("malformed", "invalid webhook timestamp")
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance:
        raise SignatureRejected("stale", "webhook timestamp outside the tolerance")
    candidates = [
        value.encode(errors="surrogateescape")
        for version, _, value in (s.partition(",") for s in header_parts(offered, None))
        if version == "v1"
    ]
    usable = False
    for secret in secrets:
        try:
            key = secret_key(secret)
        except ValueError:
            continue  # stored before secrets were checked on save: it cannot match
        usable = True
        expected = _digest(key, msg_id, timestamp, body).encode()
        # Every candidate is compared, in constant time, whatever matched before.
        if sum(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return msg_id
    if secrets and not usable:
        raise SignatureRejected("unusable_secret", "no secret of the trigger is a webhook secret")
    raise SignatureRejected("mismatch", "no matching webhook signature")


def _signed_headers(headers: Mapping[str, str]) -> tuple[str, str, str]:
    """The id, timestamp and signature headers: the `webhook-*` ones, else Svix's."""
    for names in HEADER_NAMES:
        msg_id, stamp, offered = (header_value(headers, name) for name in names)
        if msg_id and stamp and offered:
            return msg_id, stamp, offered
    raise SignatureRejected("missing", "missing webhook signature headers")


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    # hmac.digest is the one-shot C path: several times cheaper than an hmac.new object.
    # The id's bytes as sent: aiohttp keeps bytes that are not UTF-8 as lone surrogates.
    signed = f"{msg_id}.{timestamp}.".encode(errors="surrogateescape")
    mac = hmac.digest(key, signed + body, "sha256")
    return base64.b64encode(mac).decode()
