"""Google service accounts: their JSON key file, checked, and the signed JWT that trades it
for an access token (OAuth 2.0 JWT-bearer grant, RFC 7523 §2.1; Google's "server to server"
flow). Pure: the token request itself goes through the partner's SSRF-guarded sender."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.errors import FieldProblem, InvalidPayload
from gateway.formats.json_tree import text_refused

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
ASSERTION_LIFETIME = 3600  # Google accepts at most an hour
_AT = "/auth/service_account"


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    client_email: str
    token_uri: str
    private_key_id: str | None
    project_id: str | None
    private_key: RSAPrivateKey = field(repr=False)


def parse_service_account(raw: Any) -> ServiceAccount:
    """The key file as Google gives it (an object, or its JSON text); InvalidPayload names
    every bad member under /auth/service_account."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise _invalid(_AT, "service_account is the key file's JSON", "format") from None
    if not isinstance(raw, Mapping):
        raise _invalid(_AT, "service_account is the key file (JSON) Google gives", "type")
    problems: list[FieldProblem] = []
    if raw.get("type") != "service_account":
        problems.append(FieldProblem(f"{_AT}/type", 'type must be "service_account"', "const"))
    email = _text(raw, "client_email", problems)
    token_uri = raw.get("token_uri", GOOGLE_TOKEN_URI)
    if not isinstance(token_uri, str) or not token_uri.startswith(("https://", "http://")):
        problems.append(FieldProblem(f"{_AT}/token_uri", "token_uri is an http(s) URL", "format"))
    key = _private_key(raw.get("private_key"), problems)
    if problems or key is None:
        raise InvalidPayload("invalid service account", problems)
    return ServiceAccount(
        client_email=email,
        token_uri=token_uri,
        private_key_id=_optional(raw, "private_key_id"),
        project_id=_optional(raw, "project_id"),
        private_key=key,
    )


def jwt_bearer_assertion(account: ServiceAccount, *, scope: str, now: float) -> str:
    """The signed assertion to post as `assertion` with grant_type=JWT_BEARER_GRANT."""
    issued = int(now)
    claims = {
        "iss": account.client_email,
        "sub": account.client_email,
        "scope": scope,
        "aud": account.token_uri,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
    }
    headers = {"kid": account.private_key_id} if account.private_key_id else None
    return jwt.encode(claims, account.private_key, algorithm="RS256", headers=headers)


def _private_key(value: Any, problems: list[FieldProblem]) -> RSAPrivateKey | None:
    at = f"{_AT}/private_key"
    if not isinstance(value, str) or "PRIVATE KEY" not in value:
        problems.append(FieldProblem(at, "private_key is the key file's PEM RSA key", "format"))
        return None
    try:
        key = load_pem_private_key(value.encode(), password=None)
    except (ValueError, TypeError):
        problems.append(FieldProblem(at, "private_key does not load as a PEM key", "format"))
        return None
    if not isinstance(key, RSAPrivateKey):
        problems.append(FieldProblem(at, "private_key must be an RSA key (RS256)", "format"))
        return None
    return key


def _text(raw: Mapping[str, Any], name: str, problems: list[FieldProblem]) -> str:
    value = raw.get(name)
    if (keyword := text_refused(value, 320, nonblank=True)) is not None:
        message = f"{name} is required text of at most 320 characters"
        problems.append(FieldProblem(f"{_AT}/{name}", message, keyword))
        return ""
    return str(value)


def _optional(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return value if isinstance(value, str) and value else None


def _invalid(pointer: str, message: str, keyword: str) -> InvalidPayload:
    return InvalidPayload("invalid service account", [FieldProblem(pointer, message, keyword)])
