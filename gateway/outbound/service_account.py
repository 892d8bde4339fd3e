"""The `google_service_account` partner auth: a Google service account's key (write-only,
sealed like every partner credential) traded for an access token by the JWT-bearer grant
(RFC 7523), the token cached until shortly before it expires and renewed after a 401 that
refuses it (not FCM's `THIRD_PARTY_AUTH_ERROR`: `GoogleServiceAccountAuth.refused`).

    {"type": "google_service_account", "service_account": <the key file>, "scope"?: "..."}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.auth.service_account import (
    JWT_BEARER_GRANT,
    ServiceAccount,
    jwt_bearer_assertion,
    parse_service_account,
)
from gateway.clock import utc_timestamp
from gateway.errors import FieldProblem, InvalidPayload
from gateway.outbound.partner_auth import (
    OAuth2ClientCredentials,
    TokenFetcher,
    parse_token_response,
)
from gateway.schemas.problems import unknown_field

AUTH_TYPE = "google_service_account"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_KEYS = frozenset({"type", "service_account", "scope"})
_THIRD_PARTY = "THIRD_PARTY_AUTH_ERROR"


class GoogleServiceAccountAuth(OAuth2ClientCredentials):
    """The client-credentials token cache (one refresh for many callers, a margin before
    expiry, invalidation after a 401), with a signed assertion instead of a client secret."""

    def __init__(
        self,
        account: ServiceAccount,
        scope: str,
        *,
        on_refresh: Callable[[], None] | None = None,
        on_refused: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = utc_timestamp,
    ) -> None:
        super().__init__(
            account.token_uri,
            account.client_email,
            "",
            scope,
            on_refresh=on_refresh,
            on_refused=on_refused,
            clock=clock,
        )
        self._account = account
        self._scope_text = scope
        self._wall_clock = wall_clock

    def __repr__(self) -> str:
        return f"GoogleServiceAccountAuth({self._account.client_email!r})"

    def refused(self, status: int | None, body: Any) -> bool:
        """A 401 refuses our access token, unless Google's answer says whose credentials it
        refused were another's: FCM's `THIRD_PARTY_AUTH_ERROR` is the project's APNs key or
        Web Push credentials, which no new access token mends (a refresh and a second call
        for every push to an iOS device)."""
        return status == 401 and _THIRD_PARTY not in _error_codes(body)

    async def _request_token(self, fetch: TokenFetcher) -> tuple[str, float]:
        assertion = jwt_bearer_assertion(
            self._account, scope=self._scope_text, now=self._wall_clock()
        )
        form = {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
        return parse_token_response(await fetch(self.token_url, form, {}), self._default_ttl)


def _error_codes(body: Any) -> list[str]:
    """The `errorCode`s of a Google API error's details (`{"error": {"details": [...]}}`)."""
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return [
        str(d["errorCode"])
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, dict) and "errorCode" in d
    ]


def build_service_account_auth(
    credentials: Mapping[str, Any],
    on_refresh: Callable[[], None] | None = None,
    on_refused: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> GoogleServiceAccountAuth:
    """Raises InvalidPayload naming each bad member (pointers under /auth)."""
    known = sorted(_KEYS)
    problems = [unknown_field("/auth", str(k), known) for k in credentials if k not in _KEYS]
    scope = credentials.get("scope", FCM_SCOPE)
    if not isinstance(scope, str) or not scope or len(scope) > 1000:
        problems.append(FieldProblem("/auth/scope", "scope is a space-separated list", "type"))
    try:
        account = parse_service_account(credentials.get("service_account"))
    except InvalidPayload as exc:
        problems += exc.problems
    if problems:
        raise InvalidPayload("invalid partner credentials", problems)
    return GoogleServiceAccountAuth(
        account, scope, on_refresh=on_refresh, on_refused=on_refused, clock=clock
    )
