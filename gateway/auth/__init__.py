"""Security primitives, pure and I/O-free: the key ring, gateway tokens, partner JWTs,
Standard Webhooks signatures, encryption at rest and password hashes.

The only home of PyJWT. Nothing here imports aiohttp.web or the store: the web layer calls
these with plain values, and a partner's JWKS is fetched through a callable it injects.
"""

from gateway.auth.keyring import KeyRing, Purpose, SubKey, generate_secret_key
from gateway.auth.partner_jwt import Fetch, JwksKeys, JwtPolicy, PartnerJwtVerifier, StaticKeys
from gateway.auth.secretbox import SecretBox, SecretBoxError
from gateway.auth.tokens import (
    AdminClaims,
    AdminRole,
    AdminTokenVerifier,
    ExternalAdminVerifier,
    TriggerClaims,
    TriggerTokenVerifier,
    issue_admin_token,
    issue_trigger_token,
    parse_ttl,
    verify_admin_token,
    verify_trigger_token,
)

__all__ = [
    "AdminClaims",
    "AdminRole",
    "AdminTokenVerifier",
    "ExternalAdminVerifier",
    "Fetch",
    "JwksKeys",
    "JwtPolicy",
    "KeyRing",
    "PartnerJwtVerifier",
    "Purpose",
    "SecretBox",
    "SecretBoxError",
    "StaticKeys",
    "SubKey",
    "TriggerClaims",
    "TriggerTokenVerifier",
    "generate_secret_key",
    "issue_admin_token",
    "issue_trigger_token",
    "parse_ttl",
    "verify_admin_token",
    "verify_trigger_token",
]
