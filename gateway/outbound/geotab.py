"""The `geotab` partner auth: a MyGeotab session, obtained with the JSON-RPC call
`Authenticate` and put into each JSON-RPC body's `params.credentials`; kept until Geotab
refuses it (`InvalidUserException`), then renewed once for the refused request. The same
answer to `Authenticate` refuses the credentials themselves: `auth_refused` (not retried),
believed for a minute (Geotab locks an account that keeps failing to sign in).

    {"type": "geotab", "url": "https://my.geotab.com/apiv1", "database", "username",
     "password"}

The password goes to `url` only (Authenticate is posted as `JSON-RPC=<the call>`, the form
Geotab's own JavaScript client sends); the session id is redacted like any credential. When
Geotab answers that the database lives on another server (`path` other than "ThisServer"),
the session is refused with a message naming that server: the partner's `base_url` and
`url` must point at it, so credentials never follow a server name from an answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.errors import FieldProblem, InvalidPayload, empty_keyword
from gateway.outbound.partner_auth import Applied, RefusalMemory, TokenFetcher, TokenFetchFailed
from gateway.outbound.verdict import error_names
from gateway.schemas.problems import unknown_field

AUTH_TYPE = "geotab"
REFUSED = "InvalidUserException"
_KEYS = frozenset({"type", "url", "database", "username", "password"})


class GeotabSession:
    refreshable = True

    def __init__(
        self,
        url: str,
        database: str,
        username: str,
        password: str,
        *,
        on_refresh: Callable[[], None] | None = None,
        on_refused: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._database = database
        self._username = username
        self._password = password
        self._on_refresh = on_refresh
        self._clock = clock
        self._lock = asyncio.Lock()
        self._credentials: dict[str, str] | None = None
        self._refusals = RefusalMemory(clock, on_refused)

    def __repr__(self) -> str:
        return f"GeotabSession(url={self.url!r}, database={self._database!r})"

    async def apply(self, fetch: TokenFetcher) -> Applied:
        credentials = self._credentials
        if credentials is None:
            async with self._lock:  # concurrent callers wait on one Authenticate
                if self._credentials is None:
                    self._credentials = await self._fresh_session(fetch)
                    if self._on_refresh is not None:
                        self._on_refresh()
                credentials = self._credentials
        return Applied(
            body_members=((("params", "credentials"), credentials),),
            token=credentials["sessionId"],
        )

    def invalidate(self, applied: Applied) -> None:
        # Only the session that was refused: after N concurrent refusals, one Authenticate.
        if self._credentials is not None and applied.token == self._credentials["sessionId"]:
            self._credentials = None

    def credential_values(self) -> tuple[str, ...]:
        session = (self._credentials or {}).get("sessionId")
        return (self._password, *((session,) if session else ()))

    def refused(self, status: int | None, body: Any) -> bool:
        """Geotab answers an expired or unknown session with HTTP 200 and a JSON-RPC error."""
        return status == 401 or REFUSED in error_names(body)

    async def _fresh_session(self, fetch: TokenFetcher) -> dict[str, str]:
        return await self._refusals.ask(lambda: self._authenticate(fetch))

    async def _authenticate(self, fetch: TokenFetcher) -> dict[str, str]:
        call = {
            "id": -1,
            "method": "Authenticate",
            "params": {
                "database": self._database,
                "userName": self._username,
                "password": self._password,
            },
        }
        response = await fetch(self.url, {"JSON-RPC": json.dumps(call)}, {})
        body = response.json if isinstance(response.json, dict) else {}
        if response.status != 200 or "error" in body:
            found = error_names(body)
            names = ", ".join(found) or f"status {response.status}"
            if REFUSED in found:  # wrong database, user or password; not Geotab being busy
                raise TokenFetchFailed(
                    f"Geotab Authenticate failed: {names}: credentials refused; fix the "
                    "partner's credentials",
                    kind="auth_refused",
                )
            raise TokenFetchFailed(
                f"Geotab Authenticate failed: {names}", retry_after=response.wait()
            )
        result = body.get("result")
        if not isinstance(result, dict):
            result = {}
        path = result.get("path", "ThisServer")
        if path != "ThisServer":
            raise TokenFetchFailed(
                f"Geotab says database {self._database!r} is served by {path}: set the "
                f"partner's base_url and auth.url to https://{path}"
            )
        creds = result.get("credentials")
        if not isinstance(creds, dict) or not all(
            isinstance(creds.get(k), str) and creds[k]
            for k in ("database", "userName", "sessionId")
        ):
            raise TokenFetchFailed("Geotab Authenticate answered without credentials")
        return {k: creds[k] for k in ("database", "userName", "sessionId")}


def build_geotab_auth(
    credentials: Mapping[str, Any],
    on_refresh: Callable[[], None] | None = None,
    on_refused: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> GeotabSession:
    """Raises InvalidPayload naming each bad member (pointers under /auth)."""
    known = sorted(_KEYS)
    problems = [unknown_field("/auth", str(k), known) for k in credentials if k not in _KEYS]
    values: dict[str, str] = {}
    for name in ("url", "database", "username", "password"):
        value = credentials.get(name)
        if isinstance(value, str) and value and not any(c in value for c in "\r\n\0"):
            values[name] = value
            continue
        # Left out (a form's field left empty) is required, as the API says it; a line
        # break or NUL is a pattern no header could hold.
        keyword = "pattern" if isinstance(value, str) and value else empty_keyword(value)
        message = f"{name} must be a non-empty string"
        problems.append(FieldProblem(f"/auth/{name}", message, keyword))
    if "url" in values and not values["url"].startswith(("http://", "https://")):
        problems.append(FieldProblem("/auth/url", "url is the http(s) URL of /apiv1", "format"))
    if problems:
        raise InvalidPayload("invalid partner credentials", problems)
    return GeotabSession(
        values["url"],
        values["database"],
        values["username"],
        values["password"],
        on_refresh=on_refresh,
        on_refused=on_refused,
        clock=clock,
    )
