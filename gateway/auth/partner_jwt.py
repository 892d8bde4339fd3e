"""Verification of JWTs signed by partners or an identity provider, against a JWKS or PEM keys.

Only asymmetric algorithms (RS256, ES256, EdDSA) are accepted and each key is bound to one
algorithm when it is loaded, so a token can never choose how its key is interpreted (no
alg=none, no HS256 keyed with a public key). A JWKS is fetched through an injected
`fetch(url) -> bytes` (the application passes its SSRF-guarded client with a timeout), kept
for `ttl` seconds, refreshed early when a token names an unknown kid, and never fetched more
than once per `min_refresh_interval`, so junk tokens cannot make us hammer the partner.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.types import Options

from gateway.clock import utc_timestamp
from gateway.errors import PartnerError, Unauthorized

Fetch = Callable[[str], Awaitable[bytes]]
ASYMMETRIC_ALGORITHMS: Final = ("RS256", "ES256", "EdDSA")
MAX_TOKEN_LENGTH: Final = 8192
MAX_JWKS_KEYS: Final = 20
# NIST SP 800-131A: shorter RSA keys are refused where a key is loaded, not at each token.
MIN_RSA_BITS: Final = 2048
_KEY_TYPES: Final = frozenset({"RSA", "EC", "OKP"})
# The last second of the year 9999: past it no datetime holds a date (nor does BSON's).
MAX_NUMERIC_DATE: Final = 253402300799
_DATE_CLAIMS: Final = ("exp", "iat", "nbf")
# PyJWT would check `exp`, `nbf` and `iat` on this host's clock: `check_times` does.
ON_GATEWAY_CLOCK: Final[Options] = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JwtPolicy:
    """What a token must satisfy besides its signature; `iss`/`aud` are required when set."""

    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    issuer: str | None = None
    audience: str | None = None
    require: tuple[str, ...] = ("exp",)
    leeway: float = 60.0

    def __post_init__(self) -> None:
        unsupported = sorted(set(self.algorithms) - set(ASYMMETRIC_ALGORITHMS))
        if not self.algorithms or unsupported:
            raise ValueError(
                f"partner JWT algorithms must be a non-empty subset of "
                f"{', '.join(ASYMMETRIC_ALGORITHMS)}; refused: {', '.join(unsupported)}"
            )

    def options(self) -> Options:
        required = [*self.require]
        required += ["iss"] if self.issuer is not None else []
        required += ["aud"] if self.audience is not None else []
        return {
            "require": required,
            "verify_aud": self.audience is not None,
            "enforce_minimum_key_length": True,
            **ON_GATEWAY_CLOCK,
        }


class KeySource(Protocol):
    async def candidates(self, kid: str | None, alg: str) -> Sequence[jwt.PyJWK]:
        """Keys that may have signed a token with this header; empty when none."""
        ...


class PartnerJwtVerifier:
    """Checks a partner's tokens; build one per trigger/IdP at configuration time."""

    def __init__(self, keys: KeySource, policy: JwtPolicy | None = None) -> None:
        self._keys = keys
        self._policy = policy or JwtPolicy()
        self.leeway = self._policy.leeway  # what `verify` allows `exp` past the gateway's time
        self._options = self._policy.options()
        self._algorithms = list(self._policy.algorithms)

    @classmethod
    def from_jwks(
        cls, url: str, fetch: Fetch, policy: JwtPolicy | None = None, **cache: Any
    ) -> PartnerJwtVerifier:
        policy = policy or JwtPolicy()
        return cls(JwksKeys(url, fetch, algorithms=policy.algorithms, **cache), policy)

    @classmethod
    def from_pem(
        cls, pems: Sequence[str | bytes], policy: JwtPolicy | None = None
    ) -> PartnerJwtVerifier:
        policy = policy or JwtPolicy()
        return cls(StaticKeys(pems, algorithms=policy.algorithms), policy)

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or `Unauthorized` ("token expired" / "invalid token")."""
        header = unverified_header(token) if len(token) <= MAX_TOKEN_LENGTH else {}
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self._algorithms or not isinstance(kid, str | None):
            raise _invalid()
        for key in await self._keys.candidates(kid, alg):
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=self._algorithms,
                    audience=self._policy.audience,
                    issuer=self._policy.issuer,
                    options=self._options,
                )
            except jwt.InvalidSignatureError:
                continue  # a kid-less token against several keys: try the next one
            except jwt.PyJWTError as exc:
                raise _invalid() from exc
            return check_times(check_numeric_dates(claims), self._policy.leeway)
        raise _invalid()


def check_numeric_dates(claims: dict[str, Any]) -> dict[str, Any]:
    """The claims, once `exp`, `iat` and `nbf` (those present) are NumericDates (RFC 7519 §2:
    a JSON number of seconds, fractions allowed) between 1970 and the end of year 9999.
    PyJWT takes `true`, `"1700000000"` and a number of any size, which no signer writes and a
    date cannot hold; NaN and infinities are not JSON, but Python's parser reads them."""
    for name in _DATE_CLAIMS:
        if name in claims:
            value = claims[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _invalid()
            if not 0 <= value <= MAX_NUMERIC_DATE:  # NaN compares false too
                raise _invalid()
    return claims


def check_times(claims: dict[str, Any], leeway: float) -> dict[str, Any]:
    """The claims, once `exp`, `nbf` and `iat` (those present, NumericDates) hold at the
    gateway's time (`utc_timestamp`, the database server's clock), give or take `leeway`
    seconds: "token expired" past `exp`, invalid before `nbf` or `iat`. PyJWT checks them on
    the host's own clock, where a host behind refused the tokens another host had just
    issued, and one ahead took them for expired early."""
    now = utc_timestamp()
    # A token not valid yet is invalid, whatever its `exp` says ("token expired" is for a
    # token that was good once).
    if any(int(claims[name]) > now + leeway for name in ("nbf", "iat") if name in claims):
        raise _invalid()
    if "exp" in claims and int(claims["exp"]) <= now - leeway:
        raise Unauthorized("token expired")
    return claims


class StaticKeys:
    """Public keys configured as PEM (keys or certificates), each bound to its algorithm."""

    def __init__(
        self, pems: Sequence[str | bytes], *, algorithms: Sequence[str] = ASYMMETRIC_ALGORITHMS
    ) -> None:
        self._keys = tuple(jwk_from_pem(pem) for pem in pems)
        if not self._keys:
            raise ValueError("no public key configured")
        for key in self._keys:
            if key.algorithm_name not in algorithms:
                raise ValueError(f"a configured key needs {key.algorithm_name}, not allowed here")

    async def candidates(self, kid: str | None, alg: str) -> Sequence[jwt.PyJWK]:
        return [key for key in self._keys if key.algorithm_name == alg]


class UnusableKeys:
    """The keys of a trigger saved before a rule refused them (an RSA key under 2048 bits):
    no token finds a key to be checked with, as with a JWKS without a usable key."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    async def candidates(self, kid: str | None, alg: str) -> Sequence[jwt.PyJWK]:
        raise PartnerError(f"no usable signing key: {self._reason}")


class JwksKeys:
    """A JWKS document, cached for `ttl` seconds and refetched at most once per interval."""

    def __init__(
        self,
        url: str,
        fetch: Fetch,
        *,
        algorithms: Sequence[str] = ASYMMETRIC_ALGORITHMS,
        ttl: float = 300.0,
        min_refresh_interval: float = 30.0,
        max_bytes: int = 256 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._fetch = fetch
        self._algorithms = frozenset(algorithms)
        self._ttl = ttl
        self._min_refresh_interval = min_refresh_interval
        self._max_bytes = max_bytes
        self._clock = clock
        self._keys: tuple[jwt.PyJWK, ...] = ()
        self._loaded_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"JwksKeys({self._url!r}, keys={len(self._keys)})"

    async def candidates(self, kid: str | None, alg: str) -> Sequence[jwt.PyJWK]:
        if self._loaded_at is None or self._clock() - self._loaded_at >= self._ttl:
            await self._refresh()
        if self._loaded_at is None:
            raise PartnerError("the partner's signing keys could not be fetched")
        found = self._match(kid, alg)
        if not found:  # perhaps a key the partner just added
            await self._refresh()
            found = self._match(kid, alg)
        return found

    def _match(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        return [
            key
            for key in self._keys
            if key.algorithm_name == alg and (kid is None or key.key_id == kid)
        ]

    async def _refresh(self) -> None:
        async with self._lock:
            now = self._clock()
            if self._attempted_at is not None:
                if now - self._attempted_at < self._min_refresh_interval:
                    return  # just refreshed by a concurrent caller, or backing off
            self._attempted_at = now
            try:
                keys = self._parse(await self._fetch(self._url))
            except Exception as exc:  # any failure of a partner's endpoint: keep what we have
                log.warning("JWKS refresh from %s failed: %s", self._url, type(exc).__name__)
                return
            self._keys, self._loaded_at = keys, now

    def _parse(self, body: bytes) -> tuple[jwt.PyJWK, ...]:
        if len(body) > self._max_bytes:
            raise ValueError("JWKS document too large")
        document = orjson.loads(body)
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError("not a JWKS document")
        usable = (_usable_jwk(entry, self._algorithms) for entry in entries)
        keys = tuple(key for key in usable if key is not None)[:MAX_JWKS_KEYS]
        if not keys:
            raise ValueError("the JWKS holds no usable signing key")
        return keys


def jwk_from_pem(pem: str | bytes) -> jwt.PyJWK:
    """A PEM public key or certificate as a PyJWK bound to the algorithm its type implies."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ValueError("not a PEM public key or certificate") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(
                f"an RSA key of {key.key_size} bits is too short: {MIN_RSA_BITS} at least"
            )
        alg = "RS256"
    elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        alg = "ES256"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        alg = "EdDSA"
    else:
        raise ValueError("unsupported public key: use RSA, EC P-256 or Ed25519")
    jwk = jwt.get_algorithm_by_name(alg).to_jwk(key, as_dict=True)
    return jwt.PyJWK(jwk, alg)


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, parsed only to choose a key: PyJWT re-parses it strictly."""
    head = token.partition(".")[0]
    try:
        header = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except ValueError:  # binascii.Error and orjson.JSONDecodeError are ValueErrors
        return {}
    return header if isinstance(header, dict) else {}


def _usable_jwk(entry: Any, algorithms: frozenset[str]) -> jwt.PyJWK | None:
    if not isinstance(entry, dict) or entry.get("kty") not in _KEY_TYPES:
        return None  # "oct" (HMAC) keys are never accepted from a JWKS
    if entry.get("use", "sig") != "sig":
        return None
    try:
        key = jwt.PyJWK(entry)
    except jwt.PyJWTError:
        return None
    if isinstance(key.key, rsa.RSAPublicKey) and key.key.key_size < MIN_RSA_BITS:
        return None  # a JWKS of only such keys has no usable key: the partner is told so
    return key if key.algorithm_name in algorithms else None


def _invalid() -> Unauthorized:
    return Unauthorized("invalid token")
