"""Gateway-signed JWTs: trigger tokens (aud "hooks") and admin tokens (aud "admin").

Both are HS256 only, signed with the current `KeyRing` subkey of their own purpose, with that
key's `kid` in the header; verification picks the key by `kid` with a dict lookup, so tokens
issued before a key rotation keep working while the old key stays in `GATEWAY_SECRET_KEY`.

Trigger tokens: iss, aud, sub (the trigger id), tenant, jti (the token id the store revokes
by) and iat are required; exp is optional, because a GPS tracker is configured once and
cannot renew a token, so trigger tokens live until they are rotated or revoked.
Admin tokens: the same plus a required exp and a role (admin | viewer).

Every failure is an `Unauthorized`: "token expired" when that is the only fault, otherwise
"invalid token", so a caller learns nothing about which check failed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeGuard, get_args

import jwt

from gateway.auth.keyring import KeyRing, Purpose, SubKey
from gateway.auth.partner_jwt import (
    MAX_NUMERIC_DATE,
    ON_GATEWAY_CLOCK,
    PartnerJwtVerifier,
    check_numeric_dates,
    check_times,
    unverified_header,
)
from gateway.clock import utc_timestamp
from gateway.errors import Forbidden, KeysUnavailable, PartnerError, Unauthorized
from gateway.formats import at_path

AdminRole = Literal["admin", "viewer"]
ADMIN_ROLES: Final[tuple[AdminRole, ...]] = get_args(AdminRole)
ISSUER: Final = "rabbot-gateway"
TRIGGER_AUDIENCE: Final = "hooks"
ADMIN_AUDIENCE: Final = "admin"
LEEWAY_SECONDS: Final = 30
# Far above any token we issue; bounds the work an attacker's junk costs us before we refuse it.
MAX_TOKEN_LENGTH: Final = 2048
_ALGORITHMS: Final = ["HS256"]  # never mixed with an asymmetric algorithm
_TRIGGER_REQUIRED: Final = ["iat", "iss", "aud", "sub", "jti"]
_ADMIN_REQUIRED: Final = [*_TRIGGER_REQUIRED, "exp"]


@dataclass(frozen=True, slots=True)
class TriggerClaims:
    tenant: str
    trigger_id: str
    token_id: str  # the jti: the caller checks it against the store (revocation)
    issued_at: datetime
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AdminClaims:
    tenant: str
    role: AdminRole
    subject: str
    token_id: str | None = None
    expires_at: datetime | None = None
    leeway: float = LEEWAY_SECONDS  # seconds past `expires_at` it is still taken (its verifier's)


def issue_trigger_token(
    ring: KeyRing,
    *,
    tenant: str,
    trigger_id: str,
    token_id: str,
    ttl: timedelta | None = None,
    now: float | None = None,
) -> str:
    """A token for `POST/GET /hooks/{trigger_id}`; without `ttl` it never expires."""
    claims = _base_claims(TRIGGER_AUDIENCE, trigger_id, tenant, token_id, ttl, now)
    return _sign(ring.signing_key(Purpose.TRIGGER_TOKEN), claims)


def verify_trigger_token(ring: KeyRing, token: str, *, trigger_id: str) -> TriggerClaims:
    """Check a trigger token for the trigger in the URL. Revocation (jti) is the caller's."""
    claims = _trigger_claims(_decode(ring.keys_by_kid(Purpose.TRIGGER_TOKEN), token))
    if claims.trigger_id != trigger_id:
        raise _invalid()
    return claims


class TriggerTokenVerifier:
    """`verify_trigger_token` with a bounded memory of tokens that already passed.

    A partner sends the same token on every call, and full JWT verification dominates the
    per-request budget, so a token that verified once is remembered: a hit costs a dict
    lookup plus the expiry and trigger checks. Only valid tokens enter the memory, so junk
    cannot evict them; the revocation check in the store still runs on every request.
    """

    def __init__(
        self, ring: KeyRing, *, cache_size: int = 10_000, clock: Callable[[], float] = utc_timestamp
    ) -> None:
        self._keys = ring.keys_by_kid(Purpose.TRIGGER_TOKEN)
        self._cache: dict[str, tuple[TriggerClaims, float | None]] = {}
        self._cache_size = cache_size
        self._clock = clock

    def verify(self, token: str, *, trigger_id: str) -> TriggerClaims:
        hit = self._cache.get(token)
        if hit is None:
            claims = _trigger_claims(_decode(self._keys, token))
            expiry = claims.expires_at.timestamp() if claims.expires_at else None
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]  # oldest first
            self._cache[token] = (claims, expiry)
        else:
            claims, expiry = hit
            if expiry is not None and expiry <= self._clock() - LEEWAY_SECONDS:
                del self._cache[token]
                raise Unauthorized("token expired")
        if claims.trigger_id != trigger_id:
            raise _invalid()
        return claims


TENANT: Final = re.compile(r"^[A-Za-z0-9_.-]{1,100}\Z")  # \Z: "$" lets "acme\n" in
"""A tenant's name: what admin tokens are issued for and UI users belong to."""


def issue_admin_token(
    ring: KeyRing,
    *,
    tenant: str,
    role: AdminRole,
    subject: str,
    ttl: timedelta,
    now: float | None = None,
) -> str:
    if role not in ADMIN_ROLES:
        raise ValueError(f"role must be one of {', '.join(ADMIN_ROLES)}, not {role!r}")
    if not TENANT.match(tenant):
        raise ValueError(f"a tenant is 1-100 letters, digits, _.-, not {tenant!r}")
    claims = _base_claims(ADMIN_AUDIENCE, subject, tenant, _new_token_id(), ttl, now)
    claims["role"] = role
    return _sign(ring.signing_key(Purpose.ADMIN_TOKEN), claims)


def verify_admin_token(ring: KeyRing, token: str) -> AdminClaims:
    claims = _decode(ring.keys_by_kid(Purpose.ADMIN_TOKEN), token, ADMIN_AUDIENCE, _ADMIN_REQUIRED)
    tenant, role = claims.get("tenant"), claims.get("role")
    if not _is_tenant(tenant) or role not in ADMIN_ROLES:
        raise _invalid()
    return AdminClaims(tenant, role, claims["sub"], claims["jti"], _timestamp(claims["exp"]))


_TTL = re.compile(r"(\d{1,9})([smhdw])")
_TTL_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_ttl(text: str) -> timedelta:
    """ "30d", "12h", "15m", "3600s", "2w" → timedelta; anything else is a ValueError."""
    match = _TTL.fullmatch(text.strip())
    problem = "" if match else "expected a whole number followed by s, m, h, d or w"
    if match and int(match[1]) == 0:
        problem = "it must be longer than zero"
    if match and not problem:
        try:
            return timedelta(**{_TTL_UNITS[match[2]]: int(match[1])})
        except OverflowError:
            problem = "it is too long"
    raise ValueError(f"invalid TTL {text!r}: {problem} (e.g. 30d, 12h, 15m, 3600s)")


class ExternalAdminVerifier:
    """Admin tokens minted by an external identity provider, checked against its JWKS.

    The claim names are the provider's: `tenant_claim` and `role_claim` are looked up as
    top-level names first, then as dotted paths (`realm_access.roles`). A role claim may be a
    string or a list; `role_values` maps the provider's values to ours, and admin wins.
    A valid token that carries no tenant, one that is not a tenant name (`TENANT`), or no
    known role is `Forbidden`: it reaches no use case, so no query nor stored document.
    """

    def __init__(
        self,
        verifier: PartnerJwtVerifier,
        *,
        tenant_claim: str = "tenant",
        role_claim: str = "role",
        role_values: Mapping[str, AdminRole] | None = None,
    ) -> None:
        self._verifier = verifier
        self._tenant_claim = tenant_claim
        self._role_claim = role_claim
        self._role_values = dict(role_values or {"admin": "admin", "viewer": "viewer"})

    async def verify(self, token: str) -> AdminClaims:
        try:
            claims = await self._verifier.verify(token)
        except PartnerError:
            # Its key server is down: a retry later may pass (not a 401, nor a 502 that
            # would blame the caller), as for a trigger's partner keys.
            raise KeysUnavailable(
                "the identity provider's signing keys cannot be fetched now", retry_after=30
            ) from None
        subject, tenant = claims.get("sub"), _lookup(claims, self._tenant_claim)
        if not _is_name(subject):
            raise _invalid()
        if not isinstance(tenant, str) or not tenant:
            raise Forbidden("the token names no tenant")
        if not _is_tenant(tenant):  # the same names as ours: never a query or a key's part
            raise Forbidden(
                f"the token's tenant claim {self._tenant_claim!r} is not a tenant name "
                "(1-100 letters, digits, _.-)"
            )
        raw = _lookup(claims, self._role_claim)
        values = raw if isinstance(raw, list) else [raw]
        roles = {
            self._role_values[v] for v in values if isinstance(v, str) and v in self._role_values
        }
        if not roles:
            raise Forbidden("the token grants no gateway role")
        role: AdminRole = "admin" if "admin" in roles else "viewer"
        jti, exp = claims.get("jti"), claims.get("exp")
        expires = _timestamp(exp) if isinstance(exp, int | float) else None
        token_id = jti if isinstance(jti, str) else None
        return AdminClaims(tenant, role, subject, token_id, expires, self._verifier.leeway)


class AdminTokenVerifier:
    """One entry point for admin bearer tokens: ours (HS256) or the identity provider's.

    Like `TriggerTokenVerifier`, it remembers tokens that passed (bounded, valid ones only):
    an admin client sends the same token on every call and full verification costs about
    100 µs here. Admin tokens are not revocable one by one, so a hit only rechecks expiry.
    """

    def __init__(
        self,
        ring: KeyRing,
        external: ExternalAdminVerifier | None = None,
        *,
        cache_size: int = 1_000,
        clock: Callable[[], float] = utc_timestamp,
    ) -> None:
        self._ring = ring
        self._external = external
        self._cache: dict[str, AdminClaims] = {}
        self._cache_size = cache_size
        self._clock = clock

    async def verify(self, token: str) -> AdminClaims:
        claims = self._cache.get(token)
        if claims is None:
            claims = await self._verify(token)
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]  # oldest first
            self._cache[token] = claims
        elif claims.expires_at and claims.expires_at.timestamp() <= self._clock() - claims.leeway:
            del self._cache[token]
            raise Unauthorized("token expired")
        return claims

    async def _verify(self, token: str) -> AdminClaims:
        # Routing on the unverified alg is safe: each branch enforces its own allow-list.
        if self._external is not None and unverified_header(token).get("alg") != "HS256":
            return await self._external.verify(token)
        return verify_admin_token(self._ring, token)


def _base_claims(
    audience: str,
    subject: str,
    tenant: str,
    token_id: str,
    ttl: timedelta | None,
    now: float | None,
) -> dict[str, Any]:
    if not (_is_name(subject) and _is_name(tenant) and _is_name(token_id)):
        raise ValueError("subject, tenant and token id must be 1-256 printable characters")
    issued = int(utc_timestamp() if now is None else now)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": audience,
        "sub": subject,
        "tenant": tenant,
        "jti": token_id,
        "iat": issued,
    }
    if ttl is not None:
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        claims["exp"] = issued + int(ttl.total_seconds())
        if claims["exp"] > MAX_NUMERIC_DATE:  # verification refuses a later one: every call
            raise ValueError(
                "ttl is too long: the token would expire after 9999-12-31, which no token "
                "may (it would be refused on every call)"
            )
    return claims


def _sign(key: SubKey, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, key.key, algorithm="HS256", headers={"kid": key.kid})


def _decode(
    keys: Mapping[str, SubKey],
    token: str,
    audience: str = TRIGGER_AUDIENCE,
    require: list[str] = _TRIGGER_REQUIRED,
) -> dict[str, Any]:
    if len(token) > MAX_TOKEN_LENGTH:
        raise _invalid()
    kid = unverified_header(token).get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise _invalid()
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=_ALGORITHMS,
            audience=audience,
            issuer=ISSUER,
            options={"require": require, "strict_aud": True, **ON_GATEWAY_CLOCK},
        )
    except jwt.PyJWTError as exc:
        raise _invalid() from exc
    return check_times(check_numeric_dates(claims), LEEWAY_SECONDS)


def _trigger_claims(claims: dict[str, Any]) -> TriggerClaims:
    tenant, exp = claims.get("tenant"), claims.get("exp")
    if not _is_tenant(tenant):
        raise _invalid()
    return TriggerClaims(
        tenant=tenant,
        trigger_id=claims["sub"],
        token_id=claims["jti"],
        issued_at=_timestamp(claims["iat"]),
        expires_at=None if exp is None else _timestamp(exp),
    )


def _lookup(claims: Mapping[str, Any], name: str) -> Any:
    return claims[name] if name in claims else at_path(claims, name)


def _is_name(value: object) -> TypeGuard[str]:
    """A subject or a claim's value fit to store and show: 1-256 printable characters (an
    identity provider signs what its users typed: no control characters, no megabyte)."""
    return isinstance(value, str) and 0 < len(value) <= 256 and value.isprintable()


def _is_tenant(value: object) -> TypeGuard[str]:
    """A tenant's name (TENANT), as tokens are issued for: a claim that is not one names
    nobody's data (`acme\n`, `../acme`), whatever signed it."""
    return isinstance(value, str) and TENANT.match(value) is not None


def _timestamp(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (OverflowError, ValueError, OSError):  # a signed but absurd date: the far future
        return datetime.max.replace(tzinfo=UTC)


def _new_token_id() -> str:
    return secrets.token_urlsafe(12)


def _invalid() -> Unauthorized:
    return Unauthorized("invalid token")


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme in any case), or None."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
