"""Partner credentials compiled into request decorations, OAuth2 client credentials included.

`build_auth(credentials)` runs once per partner (when its decrypted credentials are loaded);
`apply()` runs per request. Nothing here does I/O itself: the OAuth2 token request goes
through a `TokenFetcher` the sender provides, so it passes the same SSRF guard and limits.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, TypeVar
from urllib.parse import quote

from gateway.clock import utc_timestamp
from gateway.errors import FieldProblem, InvalidPayload, PartnerError, empty_keyword
from gateway.formats.headers import is_reserved_header, reserved_message
from gateway.outbound.verdict import NOT_SENT, ErrorKind, throttled
from gateway.schemas.problems import unknown_field


class TokenFetchFailed(PartnerError):
    """The token endpoint could not be reached or gave no usable token."""

    title, slug = "Partner token request failed", "partner-token-failed"

    def __init__(
        self, detail: str, *, kind: ErrorKind = "auth_failed", retry_after: float | None = None
    ) -> None:
        super().__init__(detail)
        self.kind: ErrorKind = kind
        # Seconds the token endpoint asked us to wait (its Retry-After), already bounded.
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class TokenResponse:
    status: int
    json: Any  # the parsed JSON body, None when it was not JSON
    retry_after: float | None = None  # seconds, from the answer's Retry-After
    location: str | None = None  # a redirect's Location

    def wait(self) -> float | None:
        """The Retry-After of a busy answer (a 503, or a throttle: a 429, or a JSON-RPC sign-in
        answering HTTP 200 with an over-limit error such as Geotab's `OverLimitException`,
        `verdict.throttled`), within the bound deliveries honour: a token endpoint can't park
        every delivery of a partner for a week either."""
        if self.retry_after is None:
            return None
        if self.status != 503 and not throttled(self.status, self.json, retry_after=True):
            return None
        return min(max(self.retry_after, 0.0), MAX_TOKEN_WAIT)


# POST `form` (urlencoded) with extra `headers` to a token URL. Raises TokenFetchFailed when
# nothing usable came back (timeout, refused, blocked by the SSRF guard).
TokenFetcher = Callable[[str, Mapping[str, str], Mapping[str, str]], Awaitable[TokenResponse]]


@dataclass(frozen=True, slots=True)
class Applied:
    """What a credential adds to one request, and which values must never be logged."""

    headers: Mapping[str, str] = field(default_factory=dict)
    query: tuple[tuple[str, str], ...] = ()
    token: str | None = None  # the token or session used, to invalidate it once refused
    # Members set in a JSON body: (path of keys, value), e.g. a JSON-RPC call's
    # params.credentials (Geotab). A request without a JSON object body cannot take them.
    body_members: tuple[tuple[tuple[str, ...], Any], ...] = ()
    # The headers that sign the body as sent (`hmac`): called with its final bytes.
    sign: Callable[[bytes], Mapping[str, str]] | None = None

    def __repr__(self) -> str:  # names only: the values are credentials
        return f"Applied(headers={list(self.headers)}, query={[n for n, _ in self.query]})"

    @property
    def secrets(self) -> tuple[str, ...]:
        token = (self.token,) if self.token and self.body_members else ()
        return (*self.headers.values(), *(value for _, value in self.query), *token)

    def credential_values(self) -> tuple[str, ...]:
        """The secrets and what they carry (the key of a header value, the password in a
        Basic one): every value redaction.py removes from what comes back."""
        return tuple(v for secret in self.secrets for v in _parts(secret))


class PartnerAuth(Protocol):
    @property
    def refreshable(self) -> bool:
        """True when a 401 is worth one retry with fresh credentials."""
        ...

    async def apply(self, fetch: TokenFetcher) -> Applied: ...

    def invalidate(self, applied: Applied) -> None: ...

    def credential_values(self) -> tuple[str, ...]:
        """Every value that must never come back out of us (see redaction.py)."""
        ...

    def refused(self, status: int | None, body: Any) -> bool:
        """Whether an answer refused the credentials (worth one retry when refreshable)."""
        ...


@dataclass(frozen=True, slots=True)
class StaticAuth:
    """bearer, header, basic, query and none: fixed headers and query parameters."""

    applied: Applied = field(default_factory=Applied)
    refreshable: bool = False

    async def apply(self, fetch: TokenFetcher) -> Applied:
        return self.applied

    def invalidate(self, applied: Applied) -> None:
        return None

    def credential_values(self) -> tuple[str, ...]:
        return self.applied.credential_values()

    def refused(self, status: int | None, body: Any) -> bool:
        return status == 401


NO_AUTH = StaticAuth()


@dataclass(frozen=True, slots=True)
class HmacAuth:
    """`hmac`: the partner's own signature of each request's body, an HMAC with a shared
    secret in a header of its choosing (`X-Signature: sha256=<hex>`, as GitHub- and
    Shopify-style receivers and many ERP inboxes check it), over the body's bytes as sent,
    or over `before + body + after` with the Unix time in place of `{timestamp}` (also sent in
    `timestamp_header`): Stripe's `{timestamp}.{body}`, Slack's `v0:{timestamp}:{body}`."""

    secret: bytes
    header: str
    digest: Callable[[], Any]  # hashlib's constructor
    base64: bool
    prefix: str
    timestamp_header: str | None
    before: str
    after: str
    clock: Callable[[], float] = utc_timestamp  # the gateway's time, as signatures take

    @property
    def refreshable(self) -> bool:
        return False

    async def apply(self, fetch: TokenFetcher) -> Applied:
        return Applied(sign=self.signed)

    def signed(self, body: bytes) -> dict[str, str]:
        stamp = str(int(self.clock()))
        before = self.before.replace("{timestamp}", stamp).encode()
        after = self.after.replace("{timestamp}", stamp).encode()
        mac = hmac.new(self.secret, before + body + after, self.digest).digest()
        value = base64.b64encode(mac).decode() if self.base64 else mac.hex()
        headers = {self.header: self.prefix + value}
        if self.timestamp_header:
            headers[self.timestamp_header] = stamp
        return headers

    def invalidate(self, applied: Applied) -> None:
        return None

    def credential_values(self) -> tuple[str, ...]:
        return (self.secret.decode(),)

    def refused(self, status: int | None, body: Any) -> bool:
        return status == 401


_REFUSAL_MEMORY = 60.0  # seconds a token endpoint's refusal of our credentials is believed
# The cap on a token endpoint's Retry-After: delivery/retry.py's DEFAULT_MAX_RETRY_AFTER.
MAX_TOKEN_WAIT = 3600.0

T = TypeVar("T")


class RefusalMemory:
    """A refusal of our credentials (`auth_refused`) is believed for `_REFUSAL_MEMORY` s: the
    calls in that time raise it again without asking, and `on_refused` hears of each new one.

    A busy token endpoint's `Retry-After` is honoured the same way: until then, calls raise
    `auth_waiting` (nothing sent, the seconds left as `retry_after`) without asking."""

    def __init__(self, clock: Callable[[], float], on_refused: Callable[[], None] | None) -> None:
        self._clock = clock
        self._on_refused = on_refused
        self._refusal: TokenFetchFailed | None = None
        self._until = 0.0
        self._busy: TokenFetchFailed | None = None
        self._busy_until = 0.0

    async def ask(self, attempt: Callable[[], Awaitable[T]]) -> T:
        now = self._clock()
        if self._refusal is not None and now < self._until:
            raise self._refusal
        if self._busy is not None and now < self._busy_until:
            left = self._busy_until - now
            raise TokenFetchFailed(
                f"{self._busy.detail}; asked to wait: not asked again for {left:.0f} s",
                kind="auth_waiting",
                retry_after=left,
            )
        try:
            return await attempt()
        except TokenFetchFailed as exc:
            if exc.kind == "auth_refused":
                self._refusal, self._until = exc, self._clock() + _REFUSAL_MEMORY
                if self._on_refused is not None:
                    self._on_refused()
            elif exc.retry_after and exc.kind not in NOT_SENT:
                # The token endpoint's own Retry-After; a wait of ours (`overloaded`: this
                # process's capacity) is not the endpoint's, and not remembered for it.
                self._busy, self._busy_until = exc, self._clock() + exc.retry_after
            raise


class OAuth2ClientCredentials:
    """RFC 6749 §4.4: a cached bearer token, fetched with grant_type=client_credentials.

    The token is reused until `expires_in` minus a safety margin (at most half its lifetime),
    or until the partner answers 401 with it. Concurrent callers wait on one refresh.
    """

    refreshable = True

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        *,
        client_auth: Literal["basic", "body"] = "basic",
        extra_params: Mapping[str, str] | None = None,
        margin: float = 30.0,
        default_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        on_refresh: Callable[[], None] | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._client_auth = client_auth
        self._extra_params = dict(extra_params or {})
        self._margin = margin
        self._default_ttl = default_ttl
        self._clock = clock
        self._on_refresh = on_refresh
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._refusals = RefusalMemory(clock, on_refused)

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentials(token_url={self.token_url!r}, client_id=...)"

    async def apply(self, fetch: TokenFetcher) -> Applied:
        token = await self._current_token(fetch)
        return Applied(headers={"Authorization": f"Bearer {token}"}, token=token)

    def credential_values(self) -> tuple[str, ...]:
        pair = f"{quote(self._client_id, safe='')}:{quote(self._client_secret, safe='')}"
        basic = base64.b64encode(pair.encode()).decode()
        token = (self._token,) if self._token else ()
        return (self._client_secret, basic, *token)

    def invalidate(self, applied: Applied) -> None:
        # Only the token that was refused: after N concurrent 401s, one refresh, not N.
        if applied.token is not None and applied.token == self._token:
            self._token = None

    def refused(self, status: int | None, body: Any) -> bool:
        return status == 401

    def _cached(self) -> str | None:
        if self._token is not None and self._clock() < self._expires_at:
            return self._token
        return None

    async def _current_token(self, fetch: TokenFetcher) -> str:
        token = self._cached()
        if token is not None:
            return token
        async with self._lock:
            token = self._cached()  # another caller may have refreshed while we waited
            if token is None:
                token, ttl = await self._fresh_token(fetch)
                self._token = token
                self._expires_at = self._clock() + ttl - min(self._margin, ttl / 2)
                if self._on_refresh is not None:
                    self._on_refresh()
            return token

    async def _fresh_token(self, fetch: TokenFetcher) -> tuple[str, float]:
        """A refusal is remembered for a while: a burst of sends with a revoked key asks the
        token endpoint once, not once per send (new credentials build a new object)."""
        return await self._refusals.ask(lambda: self._request_token(fetch))

    async def _request_token(self, fetch: TokenFetcher) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        form |= self._extra_params  # `audience` and the IdP's own (Azure AD v1's `resource`)
        headers: dict[str, str] = {}
        if self._client_auth == "basic":
            # RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
            pair = f"{quote(self._client_id, safe='')}:{quote(self._client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form |= {"client_id": self._client_id, "client_secret": self._client_secret}
        response = await fetch(self.token_url, form, headers)
        return parse_token_response(response, self._default_ttl)


# A token endpoint's 4xx refuses the client's credentials or grant (RFC 6749 §5.2:
# invalid_client, invalid_grant, unauthorized_client, invalid_scope, ... ; a 401 or 403):
# nothing changes until someone fixes them. 408 and 429 ask us to come back.
_TRANSIENT_TOKEN_STATUSES = frozenset({408, 425, 429})
# RFC 6749 §5.2's error codes, all of them the client's or its grant's fault; some token
# endpoints send them with a 200 (the refusal is in the body, as with Geotab's JSON-RPC).
_REFUSING_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    }
)


def parse_token_response(response: TokenResponse, default_ttl: float) -> tuple[str, float]:
    if 300 <= response.status < 400:
        # Not followed (the client's secret would go where an answer points): the token_url
        # is wrong, as the answer says, until someone changes it.
        where = (
            f"redirecting to {_without_query(response.location)}"
            if response.location
            else "a redirect without a Location"
        )
        raise TokenFetchFailed(
            f"token endpoint answered {response.status} {where}; redirects are not followed: "
            "set the partner's token_url to where it points",
            kind="auth_refused",
        )
    body = response.json if isinstance(response.json, dict) else {}
    token = body.get("access_token")
    success = 200 <= response.status < 300
    if not success or not (isinstance(token, str) and token):
        # Whole: the sender redacts the partner's credentials from it, then cuts it (cut
        # first, a secret across the cut would keep its start in clear).
        reason = " ".join(str(body.get(k, "")) for k in ("error", "error_description"))
        answered = f"token endpoint answered {response.status}" + (
            f": {reason.strip()}" if reason.strip() else ""
        )
        refusing = (
            400 <= response.status < 500 and response.status not in _TRANSIENT_TOKEN_STATUSES
        ) or (success and str(body.get("error")) in _REFUSING_ERRORS)
        if refusing:
            raise TokenFetchFailed(
                f"credentials refused: {answered}; fix the partner's credentials",
                kind="auth_refused",
            )
        raise TokenFetchFailed(
            answered if not success else "token endpoint answer has no access_token",
            retry_after=response.wait(),
        )
    token_type = body.get("token_type", "bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        # A configuration matter (the client is registered for DPoP, MAC, ...), not a busy
        # endpoint: asking again gives the same answer, so it is refused, not retried.
        # Not cut here: the sender masks the whole refusal, then shortens it (`_TOKEN_SAID`).
        raise TokenFetchFailed(
            f"token endpoint issued a {str(token_type)!r} token; only Bearer tokens can be used: "
            "register the client for Bearer tokens",
            kind="auth_refused",
        )
    if _CONTROL.search(token):
        # Not sendable in a header (base64 with its line break, `encodebytes`): a garbled
        # answer, never cached, asked again at the next send.
        raise TokenFetchFailed(
            "token endpoint answer's access_token holds a line break or another control "
            "character: it cannot be sent"
        )
    return token, _ttl(body.get("expires_in"), default_ttl)


def _without_query(location: str) -> str:
    """Where a redirect points, without its query or fragment (a key may ride in them).
    Not cut here: the sender masks the whole refusal, then shortens it (`_TOKEN_SAID`)."""
    bare = location.split("?", 1)[0].split("#", 1)[0]
    return bare + ("?…" if len(bare) < len(location) else "")


def _ttl(expires_in: Any, default: float) -> float:
    try:
        ttl = float(expires_in)
    except (TypeError, ValueError):
        return default  # absent or garbled: RFC 6749 lets the server omit it
    return ttl if 0 < ttl < 10 * 365 * 86400 else default


def _parts(secret: str) -> tuple[str, ...]:
    """A header value and what it carries: "<scheme> K" → K, whatever the scheme ("Bearer",
    "Token", "ApiKey", "bearer", ...: a partner may echo the key alone); "Basic B" → B, and
    the password inside B (a partner may echo it decoded)."""
    scheme, _, rest = secret.partition(" ")
    rest = rest.lstrip(" ")
    if not rest or not _TOKEN.fullmatch(scheme):
        return (secret,)
    if scheme.lower() == "basic":
        try:
            user_pass = base64.b64decode(rest, validate=True).decode()
        except ValueError:
            return (secret, rest)
        return (secret, rest, user_pass, user_pass.partition(":")[2])
    return (secret, rest)


# RFC 9110 token characters, for header and query names.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What no credential saved now may hold: C0 controls but a tab (which a header value allows),
# and DEL. The HTTP client refuses them in a header, so the partner could never be called; in
# a query they are no more a key. A partner saved before with one in a value that is still
# sent (base64 in Basic, percent-encoded in a query) keeps working.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def unsavable(value: str) -> bool:
    """Whether a credential value holds a character none saved now may hold (a partner's
    named secrets too: a mapping may put them in a header)."""
    return _CONTROL.search(value) is not None


def build_auth(
    credentials: Mapping[str, Any],
    *,
    on_refresh: Callable[[], None] | None = None,
    on_refused: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    saving: bool = False,
) -> PartnerAuth:
    """Compile a partner's decrypted `auth` document (SPEC §3.5) into a PartnerAuth.
    `on_refresh` counts tokens obtained; `on_refused` a token endpoint refusing the
    credentials (OAuth2, Google service accounts, Geotab's Authenticate); `clock` (monotonic
    seconds) times a token's life and a token endpoint's wait. `saving`: the document is being
    saved, and held to what may be saved now (no control characters), not only to what a
    partner stored before can still be sent with.

    Raises InvalidPayload naming each bad field (pointers under /auth).
    """
    kind = credentials.get("type")
    if kind == "oauth2_client_credentials":
        fields = _Fields(credentials, saving, _OAUTH2_MEMBERS)
        return _build_oauth2(fields, on_refresh, on_refused, clock)
    if kind == "google_service_account":
        # Imported here: that module builds on this one's token cache (a cycle at import time).
        from gateway.outbound.service_account import build_service_account_auth

        return build_service_account_auth(credentials, on_refresh, on_refused, clock)
    if kind == "geotab":
        from gateway.outbound.geotab import build_geotab_auth  # same cycle as above

        return build_geotab_auth(credentials, on_refresh, on_refused, clock)
    if kind == "hmac":
        return _build_hmac(_Fields(credentials, saving, _HMAC_MEMBERS))
    static = _STATIC_BUILDERS.get(kind) if isinstance(kind, str) else None
    if static is None:
        known = ", ".join(AUTH_TYPES)
        raise _invalid("/auth/type", f"unknown auth type {kind!r}; expected one of {known}")
    builder, members = static
    return StaticAuth(builder(_Fields(credentials, saving, members)))


class _Fields:
    """Reads required string fields, collecting every problem before raising. A line break
    (or NUL) in a header value is refused always; when `saving`, any control character, and
    any member the type does not know (`members`), named with a hint as every admin document
    names one (a misspelt `scopes` would be saved and never sent). A partner saved before with
    such a member keeps working: it is read as it always was, the member ignored."""

    def __init__(
        self, credentials: Mapping[str, Any], saving: bool = False, members: tuple[str, ...] = ()
    ) -> None:
        self._credentials = credentials
        self._saving = saving
        known = ("type", *members)
        self.problems: list[FieldProblem] = (
            [unknown_field("/auth", str(k), known) for k in credentials if k not in known]
            if saving
            else []
        )

    @property
    def saving(self) -> bool:
        return self._saving

    def raw(self, name: str, default: Any) -> Any:
        return self._credentials.get(name, default)

    def text(self, name: str, *, required: bool = True, header_safe: bool = True) -> str:
        value = self._credentials.get(name)
        pointer = f"/auth/{name}"
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value:
            keyword = empty_keyword(value)
            self.problems.append(
                FieldProblem(pointer, f"{name} must be a non-empty string", keyword)
            )
            return ""
        unsendable = header_safe and any(c in value for c in "\r\n\0")
        if unsendable or (self._saving and unsavable(value)):
            message = f"{name} must not contain line breaks or other control characters"
            self.problems.append(FieldProblem(pointer, message, "pattern"))
        return value

    def name(self, name: str) -> str:
        value = self.text(name)
        if value and not _TOKEN.fullmatch(value):
            self.problems.append(
                FieldProblem(
                    f"/auth/{name}", f"{name} must be an HTTP token (no spaces)", "pattern"
                )
            )
        return value

    def done(self) -> None:
        if self.problems:
            raise InvalidPayload("invalid partner credentials", self.problems)


def _bearer(f: _Fields) -> Applied:
    token = f.text("token")
    f.done()
    return Applied(headers={"Authorization": f"Bearer {token}"})


def _header(f: _Fields) -> Applied:
    name, value = f.name("name"), f.text("value")
    if is_reserved_header(name):
        f.problems.append(FieldProblem("/auth/name", reserved_message(name), "reserved"))
    f.done()
    return Applied(headers={name: value})


def _basic(f: _Fields) -> Applied:
    username, password = f.text("username"), f.text("password")
    if ":" in username:
        f.problems.append(
            FieldProblem("/auth/username", "username must not contain ':' (RFC 7617)", "pattern")
        )
    f.done()
    pair = base64.b64encode(f"{username}:{password}".encode()).decode()
    return Applied(headers={"Authorization": f"Basic {pair}"})


def _query(f: _Fields) -> Applied:
    name, value = f.name("name"), f.text("value", header_safe=False)  # percent-encoded
    f.done()
    return Applied(query=((name, value),))


def _none(f: _Fields) -> Applied:
    f.done()
    return Applied()


_STATIC_BUILDERS: dict[str, tuple[Callable[[_Fields], Applied], tuple[str, ...]]] = {
    "bearer": (_bearer, ("token",)),
    "header": (_header, ("name", "value")),
    "basic": (_basic, ("username", "password")),
    "query": (_query, ("name", "value")),
    "none": (_none, ()),
}
_OAUTH2_MEMBERS: Final = (
    "token_url",
    "client_id",
    "client_secret",
    "scope",
    "client_auth",
    "audience",
    "extra_params",
)
# Token-request parameters `extra_params` may not set: the grant's own, and those that have
# their own member (so a secret never rides in a form its server did not ask for).
_OWN_PARAMS: Final = frozenset(
    {"grant_type", "client_id", "client_secret", "client_assertion", "scope", "audience"}
)
_MAX_EXTRA_PARAMS: Final = 20
# Every credential type `build_auth` builds (what the UI must name, and the API accepts).
AUTH_TYPES: Final = (
    *_STATIC_BUILDERS,
    "hmac",
    "oauth2_client_credentials",
    "google_service_account",
    "geotab",
)


# The members of each kind of credential that a replace typed in a form showing none of the
# stored ones (the admin UI's: credentials are write-only) keeps when it leaves them out and
# names the same type: optional, and no secret (a secret is typed again, and goes only where
# it was given for). An OAuth2 client's secret rotated there keeps its `audience`.
KEPT_WHEN_LEFT_OUT: Final[Mapping[str, tuple[str, ...]]] = {
    "oauth2_client_credentials": ("scope", "client_auth", "audience", "extra_params"),
    "hmac": ("algorithm", "encoding", "prefix", "timestamp_header", "signed"),
}


# The members of each kind of credential that say whose data a call reads (the account), not
# the secrets that prove it: a new password or key is the same account, another Geotab
# `database` or `username` is not. A bearer token, an API key or a service account is its own
# secret: only the kind of credential names it.
_ACCOUNT_MEMBERS: Final[Mapping[str, tuple[str, ...]]] = {
    "basic": ("username",),
    "oauth2_client_credentials": ("token_url", "client_id"),
    "geotab": ("url", "database", "username"),
}


def account_of(credentials: Mapping[str, Any]) -> dict[str, Any]:
    """The account a partner's decrypted `auth` reads with: its type and the members that
    name the account (`_ACCOUNT_MEMBERS`), no secret."""
    kind = credentials.get("type")
    members = _ACCOUNT_MEMBERS.get(kind, ()) if isinstance(kind, str) else ()
    return {"type": kind, **{name: credentials.get(name) for name in members}}


def _build_oauth2(
    f: _Fields,
    on_refresh: Callable[[], None] | None,
    on_refused: Callable[[], None] | None,
    clock: Callable[[], float],
) -> OAuth2ClientCredentials:
    token_url, client_id = f.text("token_url"), f.text("client_id")
    client_secret, scope = f.text("client_secret"), f.text("scope", required=False)
    client_auth = f.raw("client_auth", "basic")
    extra_params = _extra_params(f)
    if audience := f.text("audience", required=False, header_safe=False):
        extra_params["audience"] = audience
    if token_url and not token_url.startswith(("http://", "https://")):
        f.problems.append(
            FieldProblem("/auth/token_url", "token_url must be an http(s) URL", "format")
        )
    if client_auth not in ("basic", "body"):
        f.problems.append(
            FieldProblem("/auth/client_auth", "client_auth must be 'basic' or 'body'", "enum")
        )
    f.done()
    return OAuth2ClientCredentials(
        token_url,
        client_id,
        client_secret,
        scope or None,
        client_auth="body" if client_auth == "body" else "basic",
        extra_params=extra_params,
        clock=clock,
        on_refresh=on_refresh,
        on_refused=on_refused,
    )


_HMAC_MEMBERS: Final = (
    "secret",
    "header",
    "algorithm",
    "encoding",
    "prefix",
    "timestamp_header",
    "signed",
)


# The members each credential type that a form can type is made of (the admin UI's partner
# form sends these and no other `auth.*` field): one table with what `build_auth` reads, so a
# member added to a type reaches the form (a replace dropped OAuth2's `audience` when the two
# were kept apart). A Google service account is uploaded as its key file, not typed.
AUTH_MEMBERS: Final[Mapping[str, tuple[str, ...]]] = {
    **{kind: members for kind, (_, members) in _STATIC_BUILDERS.items()},
    "oauth2_client_credentials": _OAUTH2_MEMBERS,
    "hmac": _HMAC_MEMBERS,
    "geotab": ("url", "database", "username", "password"),  # geotab.py `_KEYS` (a cycle)
}
_HMAC_DIGESTS: Final[Mapping[str, Callable[[], Any]]] = {
    "sha256": hashlib.sha256,
    "sha1": hashlib.sha1,
    "sha512": hashlib.sha512,
}
_BODY, _STAMP = "{body}", "{timestamp}"


def _build_hmac(f: _Fields) -> HmacAuth:
    secret = f.text("secret", header_safe=False)
    header = f.name("header")
    algorithm = f.raw("algorithm", "sha256")
    encoding = f.raw("encoding", "hex")
    prefix = f.text("prefix", required=False)
    stamp_header = f.name("timestamp_header") if f.raw("timestamp_header", None) else None
    signed = f.raw("signed", _BODY)
    for name, value in (("header", header), ("timestamp_header", stamp_header)):
        if value and is_reserved_header(value):
            f.problems.append(FieldProblem(f"/auth/{name}", reserved_message(value), "reserved"))
    if stamp_header and header and stamp_header.lower() == header.lower():
        message = "timestamp_header must be another header than the signature's"
        f.problems.append(FieldProblem("/auth/timestamp_header", message, "enum"))
    if algorithm not in _HMAC_DIGESTS:
        message = f"algorithm is one of {', '.join(_HMAC_DIGESTS)}"
        f.problems.append(FieldProblem("/auth/algorithm", message, "enum"))
    if encoding not in ("hex", "base64"):
        f.problems.append(FieldProblem("/auth/encoding", "encoding is hex or base64", "enum"))
    before, after = _signed_parts(f, signed, stamp_header is not None)
    f.done()
    return HmacAuth(
        secret.encode(),
        header,
        _HMAC_DIGESTS[algorithm],
        encoding == "base64",
        prefix,
        stamp_header,
        before,
        after,
    )


def _signed_parts(f: _Fields, signed: Any, stamped: bool) -> tuple[str, str]:
    """`signed`: what the HMAC covers, `{body}` once, `{timestamp}` only with a
    timestamp_header, other text as it is (no other braces: a misspelt placeholder would be
    signed as text)."""
    why = None
    if not isinstance(signed, str) or signed.count(_BODY) != 1:
        why = "signed is text with {body} once, e.g. {timestamp}.{body}"
    elif _STAMP in signed and not stamped:
        why = "{timestamp} in signed needs a timestamp_header to send it in"
    elif any(c in signed.replace(_BODY, "").replace(_STAMP, "") for c in "{}"):
        why = "signed takes only the placeholders {body} and {timestamp}"
    if why is not None:
        f.problems.append(FieldProblem("/auth/signed", why, "pattern"))
        return "", ""
    before, _, after = signed.partition(_BODY)
    return before, after


def _extra_params(f: _Fields) -> dict[str, str]:
    """`extra_params`: more token-request parameters an IdP needs (Azure AD v1's `resource`, a
    `tenant`), names to non-empty text, sent form-encoded beside grant_type."""
    value = f.raw("extra_params", None)
    if value is None:
        return {}
    shape = f"extra_params is an object of at most {_MAX_EXTRA_PARAMS} name: non-empty text"
    if not isinstance(value, dict) or len(value) > _MAX_EXTRA_PARAMS:
        f.problems.append(FieldProblem("/auth/extra_params", shape, "type"))
        return {}
    params: dict[str, str] = {}
    for name, text in value.items():
        pointer = f"/auth/extra_params/{name}"
        if name in _OWN_PARAMS:
            why = f"{name} is set by the gateway or by its own member of auth, not extra_params"
            f.problems.append(FieldProblem(pointer, why, "reserved"))
        elif not (name and isinstance(text, str) and text):
            f.problems.append(FieldProblem(pointer, shape, empty_keyword(text)))
        elif f.saving and (unsavable(name) or unsavable(text)):
            why = "must not contain line breaks or other control characters"
            f.problems.append(FieldProblem(pointer, why, "pattern"))
        else:
            params[name] = text
    return params


def _invalid(pointer: str, message: str) -> InvalidPayload:
    return InvalidPayload("invalid partner credentials", [FieldProblem(pointer, message, "enum")])
