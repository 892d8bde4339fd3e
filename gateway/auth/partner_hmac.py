"""Partners' own webhook signatures: an HMAC of the body (or of a template over the body, a
timestamp and a message id) in a header, as Motive, Samsara, Fleetio and GitHub send them.

    scheme = scheme_from({"preset": "samsara"})           # or algorithm, header, encoding, ...
    replay = verify(scheme, secrets, headers, body, now=utc_timestamp())  # a ReplayKey

A scheme is algorithm (sha1, sha256, sha512), header, encoding of the signature (hex,
base64), prefix (`sha256=`, `v1=`), signed content (`{body}`, or e.g.
`v1:{timestamp}:{body}` with `timestamp_header`, `{id}` with `id_header`), timestamp
tolerance, and how the secret is the key (`text`: its UTF-8 bytes; `base64`: decoded).

A header may offer several signatures (a partner rolling its secret sends the old and the
new), any of which may match any live secret: a header of `name=value` pairs
(`t=1795685112,v1=<hex>,v1=<hex>`, Stripe's layout, which many partners copy) is read by
`signature_field` (and `timestamp_field`); any other header is a list separated by blanks
(`v1,<b64> v1,<b64>`, Standard Webhooks' layout under a partner's own header names, as Svix
sends it), its signatures the parts that start with the prefix (others are of versions not
checked). A signature has no blank in it, so one alone is a list of one; only a prefix with
a blank in it (`HMAC <hex>`) makes the header one signature. Pairs and lists are split by
`signatures.header_parts`, at most MAX_PARTS parts.

A timestamp is Unix seconds, milliseconds (13 digits), or an ISO 8601 date-time with its
offset (Box).
Comparison is constant-time; every refusal is a `SignatureRejected` with a reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final

from gateway.auth.signatures import (
    ReplayKey,
    SignatureRejected,
    base64_key,
    header_parts,
    header_value,
)
from gateway.clock import from_iso

ALGORITHMS: Final = ("sha1", "sha256", "sha512")
ENCODINGS: Final = ("hex", "base64")
SECRET_ENCODINGS: Final = ("text", "base64")
PLACEHOLDERS: Final = ("body", "timestamp", "id")
# `{query.NAME}`: a query parameter of the request, sent once (Mercado Pago signs `data.id`).
QUERY_PLACEHOLDER: Final = "query."
_QUERY_NAME: Final = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")
_MAX_QUERY_PLACEHOLDERS: Final = 4
_MAX_QUERY_VALUE: Final = 200
MAX_TOLERANCE: Final = 86_400
_DIGEST_SIZES: Final = {name: hashlib.new(name).digest_size for name in ALGORITHMS}
_MAX_ID: Final = 200
_MS_DIGITS: Final = 13  # a timestamp this long is in milliseconds (seconds have 10 until 2286)
_FORMATTER = string.Formatter()

# From the partners' published docs (see docs/partners.md for each recipe and its source).
PRESETS: Final[dict[str, dict[str, Any]]] = {
    # HMAC-SHA1 hex digest of the JSON body with the webhook's shared secret.
    "motive": {"algorithm": "sha1", "header": "X-KT-Webhook-Signature"},
    # v1=<hex HMAC-SHA256 of "v1:<X-Samsara-Timestamp>:<body>">, keyed by the base64-decoded
    # secret key of the webhook.
    "samsara": {
        "algorithm": "sha256",
        "header": "X-Samsara-Signature",
        "prefix": "v1=",
        "signed_content": "v1:{timestamp}:{body}",
        "timestamp_header": "X-Samsara-Timestamp",
        "secret_encoding": "base64",
    },
    # Hex HMAC-SHA256 of the raw body with the webhook's secret key.
    "fleetio": {"algorithm": "sha256", "header": "X-Fleetio-Webhook-Signature"},
    # sha256=<hex HMAC-SHA256 of the body>.
    "github": {"algorithm": "sha256", "header": "X-Hub-Signature-256", "prefix": "sha256="},
    # x-signature: ts=<ts>,v1=<hex HMAC-SHA256 of "id:<data.id of the query>;request-id:
    # <x-request-id>;ts:<ts>;">: a manifest, not the body (which is then not authenticated).
    "mercadopago": {
        "algorithm": "sha256",
        "header": "x-signature",
        "signature_field": "v1",
        "timestamp_field": "ts",
        "id_header": "x-request-id",
        "signed_content": "id:{query.data.id};request-id:{id};ts:{timestamp};",
    },
}


class SchemeError(ValueError):
    """A scheme that cannot work; `field` names the member of `auth` that is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class HmacScheme:
    algorithm: str
    header: str
    encoding: str = "hex"
    prefix: str = ""
    signed_content: str = "{body}"
    timestamp_header: str | None = None
    id_header: str | None = None
    tolerance_seconds: int = 300
    secret_encoding: str = "text"
    signature_field: str | None = None
    timestamp_field: str | None = None
    _parts: tuple[tuple[bytes, str | None], ...] = field(default=(), repr=False, compare=False)

    @property
    def timestamped(self) -> bool:
        """Whether a signed timestamp bounds how long a copy of a message verifies."""
        return self.timestamp_header is not None or self.timestamp_field is not None

    def key(self, secret: str) -> bytes:
        """The HMAC key in a secret; ValueError when the secret does not fit the scheme."""
        if self.secret_encoding == "text":
            if not secret:
                raise ValueError("the secret is empty")
            return secret.encode()
        needed = "this scheme's secret is base64 (secret_encoding: base64)"
        if secret.startswith("whsec_"):  # a Standard Webhooks secret: its key is the rest
            raise ValueError(f"{needed}: give what follows whsec_")
        try:
            key = base64_key(secret)
        except ValueError as exc:
            raise ValueError(f"{needed}: {exc}") from None
        if not key:
            raise ValueError("the secret is empty")
        return key

    @property
    def signs_body(self) -> bool:
        """Whether the body is signed: a template without `{body}` (Mercado Pago's manifest of
        ids and a timestamp) authenticates the sender and those values, not the body."""
        return any(name == "body" for _, name in self._parts)

    @property
    def query_params(self) -> tuple[str, ...]:
        """The query parameters the signed content names (`{query.data.id}` → `data.id`)."""
        return tuple(
            name.removeprefix(QUERY_PLACEHOLDER)
            for _, name in self._parts
            if name is not None and name.startswith(QUERY_PLACEHOLDER)
        )

    def content(
        self,
        body: bytes,
        timestamp: str = "",
        msg_id: str = "",
        query: Mapping[str, str] | None = None,
    ) -> bytes:
        """What is signed: the body, or the signed-content template filled in (`query`: the
        values of the query parameters it names, by name)."""
        values = {"body": body, "timestamp": timestamp.encode(), "id": msg_id.encode()}
        for name, value in (query or {}).items():
            values[QUERY_PLACEHOLDER + name] = value.encode()
        return b"".join(literal + (values[name] if name else b"") for literal, name in self._parts)

    def sign(
        self,
        key: bytes,
        body: bytes,
        *,
        timestamp: str = "",
        msg_id: str = "",
        query: Mapping[str, str] | None = None,
    ) -> str:
        """The signature header's value, as the partner would send it."""
        mac = hmac.digest(key, self.content(body, timestamp, msg_id, query), self.algorithm)
        encoded = mac.hex() if self.encoding == "hex" else base64.b64encode(mac).decode()
        return self.prefix + encoded


def scheme_from(auth: Mapping[str, Any]) -> HmacScheme:
    """The scheme a trigger's `auth` describes: a preset, with any member overridden.
    Raises SchemeError naming the member that cannot work."""
    preset = auth.get("preset")
    if preset is not None and preset not in PRESETS:
        raise SchemeError("preset", f"preset is one of {', '.join(PRESETS)}")
    names = [f.name for f in fields(HmacScheme) if not f.name.startswith("_")]
    given = {name: auth[name] for name in names if auth.get(name) is not None}
    merged = {**PRESETS.get(preset or "", {}), **given}
    for name in ("algorithm", "header"):
        if name not in merged:
            raise SchemeError(name, f"{name} is required without a preset")
    _check_members(merged)
    parts = _template(merged)
    return HmacScheme(**merged, _parts=parts)


def _check_members(merged: Mapping[str, Any]) -> None:
    choices = {
        "algorithm": ALGORITHMS,
        "encoding": ENCODINGS,
        "secret_encoding": SECRET_ENCODINGS,
    }
    for name, allowed in choices.items():
        if name in merged and merged[name] not in allowed:
            raise SchemeError(name, f"{name} is one of {', '.join(allowed)}")
    tolerance = merged.get("tolerance_seconds", 300)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int):
        raise SchemeError("tolerance_seconds", "tolerance_seconds is a number of seconds")
    if not 1 <= tolerance <= MAX_TOLERANCE:
        message = f"tolerance_seconds is between 1 and {MAX_TOLERANCE}"
        raise SchemeError("tolerance_seconds", message)


def _template(merged: Mapping[str, Any]) -> tuple[tuple[bytes, str | None], ...]:
    text = merged.get("signed_content", "{body}")
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise SchemeError("signed_content", f"signed_content is malformed: {exc}") from None
    names = [name for _, name, _, _ in parsed if name is not None]
    for _, name, spec, conversion in parsed:
        if name is not None and (not _placeholder(name) or spec or conversion):
            message = "signed_content takes only {body}, {timestamp}, {id} and {query.NAME}"
            raise SchemeError("signed_content", message)
    queried = [name for name in names if name.startswith(QUERY_PLACEHOLDER)]
    if len(queried) > _MAX_QUERY_PLACEHOLDERS or len(set(queried)) != len(queried):
        message = (
            f"signed_content names at most {_MAX_QUERY_PLACEHOLDERS} query parameters, each once"
        )
        raise SchemeError("signed_content", message)
    if names.count("body") > 1:
        raise SchemeError("signed_content", "signed_content has {body} at most once")
    if "body" not in names and ("timestamp" not in names or not ("id" in names or queried)):
        # Without the body (Mercado Pago's manifest), a signed timestamp bounds how long a
        # captured call verifies, and a signed id or query value says which message it is:
        # a signature of a timestamp alone would stand for any body.
        message = (
            "signed_content without {body} needs {timestamp}, and {id} or a {query.NAME}, "
            "so that a copy goes stale and names its message"
        )
        raise SchemeError("signed_content", message)
    if merged.get("timestamp_field") and not merged.get("signature_field"):
        message = "timestamp_field names a pair of the signature header: set signature_field"
        raise SchemeError("timestamp_field", message)
    if merged.get("timestamp_field") and merged.get("timestamp_header"):
        message = "the timestamp is in timestamp_header or in timestamp_field, not both"
        raise SchemeError("timestamp_field", message)
    # A header of pairs carries its timestamp in a pair, else it is a header of its own.
    in_pairs = merged.get("timestamp_field") or merged.get("signature_field")
    timestamp = (
        "timestamp_field"
        if in_pairs and not merged.get("timestamp_header")
        else ("timestamp_header")
    )
    for name, header in (("timestamp", timestamp), ("id", "id_header")):
        if name in names and not merged.get(header):
            raise SchemeError(header, f"{{{name}}} in signed_content needs {header}")
        if name not in names and merged.get(header):
            message = f"{header} is set but signed_content has no {{{name}}}: it would be unsigned"
            raise SchemeError("signed_content", message)
    return tuple((literal.encode(), name) for literal, name, _, _ in parsed)


def _placeholder(name: str) -> bool:
    if name in PLACEHOLDERS:
        return True
    param = name.removeprefix(QUERY_PLACEHOLDER)
    return name.startswith(QUERY_PLACEHOLDER) and bool(_QUERY_NAME.fullmatch(param))


def generate_secret(scheme: HmacScheme) -> str:
    """A new secret for a partner to sign with: 32 random bytes, as the scheme reads it."""
    raw = _random.token_bytes(32)
    return raw.hex() if scheme.secret_encoding == "text" else base64.b64encode(raw).decode()


def verify(
    scheme: HmacScheme,
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    query: Mapping[str, str] | None = None,
) -> ReplayKey:
    """Check a signed request; return its replay key: a request sent again, by the partner or
    by someone who captured it, is answered from the first one instead of being written twice.

    The key is the signed message id, or else the digest of the signed content (the timestamp
    and the body, as the template joins them): it depends on nothing a sender can change
    without the secret, so reordering the signatures, putting a junk one first, writing the
    hex in upper case or signing with another secret of a rotation all give the same key.

    Raises SignatureRejected: a header is missing, a value malformed, the timestamp outside
    the tolerance, no secret's signature matches, or no secret fits the scheme.
    """
    header_text = _required(headers, scheme.header).strip()
    msg_id = ""
    offered_texts, timestamp = _offered(scheme, header_text, now)
    if scheme.timestamp_header:
        timestamp = _timestamp(scheme, _required(headers, scheme.timestamp_header), now)
    if scheme.id_header:
        msg_id = _required(headers, scheme.id_header)
        if len(msg_id) > _MAX_ID or not msg_id.isascii() or not msg_id.isprintable():
            raise SignatureRejected("malformed", "the message id is not printable ASCII")
    signed_query = _signed_query(scheme, query or {})
    offered = [_decoded(scheme, text) for text in offered_texts]
    content = scheme.content(body, timestamp, msg_id, signed_query)
    matched: list[bytes] = []
    usable = False
    for secret in secrets:
        try:
            key = scheme.key(secret)
        except ValueError:
            continue  # stored before secrets were checked on save: it cannot match
        usable = True
        expected = hmac.digest(key, content, scheme.algorithm)
        # Every secret and every offered signature is tried, in constant time, whatever
        # matched before.
        if sum(hmac.compare_digest(expected, each) for each in offered):
            matched.append(expected)
    if secrets and not usable:
        raise SignatureRejected("unusable_secret", "no secret of the trigger fits its scheme")
    if not matched:
        raise SignatureRejected("mismatch", "no matching signature")
    until = _seconds(timestamp) + scheme.tolerance_seconds if timestamp else None
    if msg_id:
        return ReplayKey(f"id:{msg_id}", scheme.id_header or "message id", verifies_until=until)
    named = "signed timestamp and body" if timestamp else "signed body"
    if not scheme.signs_body:
        named = "signed timestamp and query"
    # Until 2026-12-05 the key was the first signature offered (a junk one let a copy in),
    # exactly `sig:<timestamp>:<its hex>`: copies of messages written before are found under
    # their matching signature's key, or under the first offered one when it matched none
    # (a partner rolling its secret sends the new one first). Their records last 30 days at
    # most: `legacy` and `legacy_offered` can go once every gateway has run this version
    # that long.
    legacy = tuple(f"sig:{timestamp}:{mac.hex()}" for mac in matched)
    first = f"sig:{timestamp}:{offered[0].hex()}"
    return ReplayKey(
        f"signed:{hashlib.sha256(content).hexdigest()}",
        named,
        legacy,
        legacy_offered=None if first in legacy else first,
        verifies_until=until,
    )


def _signed_query(scheme: HmacScheme, query: Mapping[str, str]) -> dict[str, str]:
    """The values of the query parameters the scheme signs: each given once, else the call is
    refused (which one is signed would be a guess)."""
    values = {}
    getall = getattr(query, "getall", None)
    for name in scheme.query_params:
        if getall is not None:
            given = list(getall(name, ()))
        else:
            given = [query[name]] if name in query else []
        if not given:
            raise SignatureRejected("missing", f"missing query parameter {name}")
        if len(given) > 1 or len(given[0]) > _MAX_QUERY_VALUE:
            raise SignatureRejected("malformed", f"query parameter {name} is not one short value")
        values[name] = given[0]
    return values


def _offered(scheme: HmacScheme, text: str, now: float) -> tuple[list[str], str]:
    """The signatures the header offers, and its timestamp ("" unless a pair holds it): the
    header is pairs (`signature_field`), else a list separated by blanks, else (a prefix with
    a blank in it) one signature."""
    if scheme.signature_field:
        return _paired(scheme, text, now)
    if any(c.isspace() for c in scheme.prefix):
        return [text], ""
    return _listed(scheme, text), ""


def _listed(scheme: HmacScheme, text: str) -> list[str]:
    """The signatures of a list separated by blanks: its parts that start with the prefix.
    Others are ignored, as Standard Webhooks has a receiver ignore a version it does not check
    (`v1a,<ed25519>`); none is malformed."""
    offered = [part for part in header_parts(text, None) if part.startswith(scheme.prefix)]
    if not offered:
        starting = f" starting with {scheme.prefix}" if scheme.prefix else ""
        raise SignatureRejected("malformed", f"no signature{starting} in {scheme.header}")
    return offered


def _paired(scheme: HmacScheme, text: str, now: float) -> tuple[list[str], str]:
    """The signatures and the timestamp ("" without timestamp_field) of a header of pairs."""
    pairs = _header_fields(text)
    offered = pairs.get(scheme.signature_field or "", [])
    if not offered:
        raise SignatureRejected("missing", f"no {scheme.signature_field}= in {scheme.header}")
    if not scheme.timestamp_field:
        return offered, ""
    stamps = pairs.get(scheme.timestamp_field, [])
    if len(stamps) != 1:
        message = f"not one {scheme.timestamp_field}= in {scheme.header}"
        raise SignatureRejected("missing" if not stamps else "malformed", message)
    return offered, _timestamp(scheme, stamps[0], now)


def _header_fields(text: str) -> dict[str, list[str]]:
    """`t=1795685112,v1=ab12,v1=cd34` (commas or semicolons, blanks around them) as
    {name: [values]}; a part without `=` is malformed."""
    found: dict[str, list[str]] = {}
    for part in header_parts(text.replace(";", ","), ","):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise SignatureRejected("malformed", "the signature header is not name=value pairs")
        found.setdefault(name.strip(), []).append(value.strip())
    return found


def _required(headers: Mapping[str, str], name: str) -> str:
    value = header_value(headers, name)
    if not value:
        raise SignatureRejected("missing", f"missing {name}")
    return value


def _timestamp(scheme: HmacScheme, text: str, now: float) -> str:
    """The timestamp as sent (what is signed), once it is Unix seconds, milliseconds (13
    digits) or an ISO 8601 date-time with its offset (Box's `2026-12-01T09:00:00-03:00`),
    within the tolerance."""
    text = text.strip()
    if abs(now - _seconds(text)) > scheme.tolerance_seconds:
        raise SignatureRejected("stale", "the timestamp is outside the tolerance")
    return text


def _seconds(text: str) -> float:
    """A timestamp's Unix time: Unix seconds, milliseconds (13 digits), or ISO 8601."""
    if text.isascii() and text.isdigit() and len(text) <= _MS_DIGITS:
        return int(text) / 1000 if len(text) == _MS_DIGITS else int(text)
    return _iso_seconds(text)


def _iso_seconds(text: str) -> float:
    """An ISO 8601 date-time's Unix time; one without an offset names no instant: malformed."""
    try:
        moment = from_iso(text) if text.isascii() and len(text) <= 40 else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        message = "the timestamp is not Unix seconds or milliseconds, or ISO 8601 with an offset"
        raise SignatureRejected("malformed", message)
    return moment.timestamp()


def _decoded(scheme: HmacScheme, text: str) -> bytes:
    """The signature's bytes: prefix, encoding and length as the scheme says, else malformed."""
    if not text.startswith(scheme.prefix):
        raise SignatureRejected("malformed", f"the signature does not start with {scheme.prefix}")
    encoded = text[len(scheme.prefix) :]
    try:
        if scheme.encoding == "hex":
            if not all(c in string.hexdigits for c in encoded):
                raise ValueError
            offered = bytes.fromhex(encoded)
        else:
            offered = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        raise SignatureRejected("malformed", f"the signature is not {scheme.encoding}") from None
    if len(offered) != _DIGEST_SIZES[scheme.algorithm]:
        # A truncated signature, or one made with another algorithm.
        raise SignatureRejected("malformed", f"the signature is not a {scheme.algorithm} digest")
    return offered
