"""The one place outbound HTTP happens: an aiohttp client behind the SSRF guard, partner
limits and credentials, turning every answer or failure into an `Outcome`.

No aiohttp exception leaves this module. The signing headers are offered here too, because
they shape the bytes the sender puts on the wire; URLs are built in `urls.py`.
"""

from __future__ import annotations

import asyncio
import codecs
import errno
import logging
import math
import re
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Protocol
from urllib.parse import urlencode

import aiohttp
import orjson
from aiohttp import hdrs
from aiohttp.abc import AbstractResolver
from aiohttp.helpers import is_ip_address
from aiohttp.http_exceptions import LineTooLong

# Standard Webhooks headers for a delivery body; re-exported as part of the sender's API.
from gateway.auth.webhook_signature import signed_headers as signed_headers
from gateway.clock import utcnow
from gateway.errors import GatewayError, PartnerUnavailable, RateLimited, Unavailable
from gateway.formats import DocumentRefused, parse_xml
from gateway.formats import is_xml as is_xml_type
from gateway.formats.charsets import storable, text_codec, utf8_json
from gateway.formats.headers import reserved_in, reserved_message
from gateway.formats.json_tree import ANSWER_DEPTH, json_depth_exceeds, loads_exact
from gateway.outbound.bodies import written_codec
from gateway.outbound.breaker import BreakerState, Gate, PartnerGuard
from gateway.outbound.codings import ACCEPT_ENCODING, Inflater, Undecodable
from gateway.outbound.connection import (
    HEAD_FIELD_MOST,
    HEAD_FIELDS_MOST,
    BodyRefused,
    Connector,
    Dropped,
    declared_body,
    refused_status,
    single_send,
)
from gateway.outbound.partner_auth import (
    NO_AUTH,
    Applied,
    PartnerAuth,
    TokenFetchFailed,
    TokenResponse,
)
from gateway.outbound.redaction import NO_REDACTION, Redactor
from gateway.outbound.resolver import Call, PartnerResolver, ResolverBusy
from gateway.outbound.resolver import call as resolver_call
from gateway.outbound.ssrf import GuardedResolver, OutboundBlocked, OutboundPolicy
from gateway.outbound.urls import without_params
from gateway.outbound.verdict import (
    AT_CREDENTIALS,
    HELD,
    NOT_SENT,
    ErrorKind,
    Verdict,
    classify,
    parse_retry_after,
    throttled,
)

log = logging.getLogger(__name__)

KIB = 1024
OFF_LOOP_BYTES: Final = 8 * KIB
"""An answer larger than this is redacted in a thread: a text dense with escapes is read escape
by escape (1 MiB of `a&amp;b%20c\\/`: 0.1–0.9 s, 8 KiB up to 7 ms), and the event loop would
wait for it; from a thread it runs again within the interpreter's switch interval (5 ms). A
smaller one, as most are, is redacted where it is read (the thread's hop costs more)."""
# Response headers worth keeping in an attempt record (redirects are answers, see ssrf.py).
KEPT_HEADERS = ("Retry-After", "Content-Type", "Location")
USER_AGENT = "rabbot-gateway (+https://rabbot.dev)"


BeforeSending = Callable[[], Awaitable[None]]
"""Awaited right before a request goes out (`OutboundRequest.before_sending`)."""


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    method: str
    url: str  # absolute; see build_url
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Sequence[tuple[str, str]] = ()  # added to the URL's own query
    body: bytes | None = None
    timeout: float = 10.0  # total seconds, the partner's setting
    # Headers computed from the exact bytes sent (Standard Webhooks), called once the body is
    # final: after the credentials set in it (a Geotab session), again for a renewed session.
    sign: Callable[[bytes], Mapping[str, str]] | None = field(default=None, repr=False)
    # What the request carries besides the credentials that must never come back: the
    # partner's named secrets, which a mapping or an XML body may put anywhere in it.
    secrets: tuple[str, ...] = field(default=(), repr=False)
    # Awaited right before the request goes out, after every wait (the partner's guard, the
    # process's capacity, a token fetch), again before a retry with renewed credentials:
    # what it raises reaches the caller, and nothing goes out (a delivery whose lease was
    # lost meanwhile: `leased_loop.LeaseCheck`).
    before_sending: BeforeSending | None = field(default=None, repr=False)
    # The answer is data its caller writes (a schedule's page: SPEC §6, exactly as if it had
    # been pushed): in `json_body` and `other_body` a credential of digits is not masked
    # (`_redactor`), a value equal to a numeric PIN being data far more often than an echo;
    # what is said of the answer (`message`, the excerpt) is masked of every credential, and
    # the caller masks what it says of the data so too (`Outcome.redactor`).
    answer_is_data: bool = False
    # Response headers kept in `Outcome.headers` besides KEPT_HEADERS, each field of a name
    # joined with ", " (a schedule's next page named in `Link`: `schedules/calls.py`).
    answer_headers: tuple[str, ...] = ()
    # The action's own judgement of an answer (`actions/answer_rules.py`), made once by the
    # sender and kept in `Outcome.judgement`: its verdict, where one of the action's answer
    # rules decides it, is what the partner's breaker counts, so a final SOAP fault in a 500
    # is an answer, not a failure.
    judge: Callable[[Outcome], Judgement] | None = field(default=None, repr=False)


class Judgement(Protocol):
    """What a request's `judge` made of an answer (an action's answer rule that matched it)."""

    @property
    def verdict(self) -> Verdict | None:
        """The verdict it decides; None: the status's (`Outcome.verdict`)."""


@dataclass(frozen=True, slots=True)
class Hold:
    """A send our own guard refused before anything left, for a while: an open circuit, our
    rate or concurrency limit, a token endpoint that asked us to wait, a disabled partner
    (`verdict.HELD`; `catalog.Partner.refusal`), this process's full outbound capacity. The
    same request goes again in `seconds`, and was no attempt: no retry spent, no failure.

    Every sender acts on it the same way: a delivery (an action's or a notification's) is
    pending again at that time, an interactive call (a proxy call, a channel's test send)
    answers `problem()`."""

    error: ErrorKind
    message: str  # what held it, e.g. "circuit open after repeated failures; probe in 30 s"
    seconds: int  # whole seconds to wait, at least 1

    def describe(self) -> str:
        """The reason shown on the delivery and in a test send's answer."""
        return f"not sent: {self.message}, retry in {self.seconds} s"

    def problem(self, detail: str, **extra: Any) -> GatewayError:
        """The RFC 9457 answer for a call that was held: 429 for our own rate or concurrency
        limit for the partner, 503 `unavailable` for this process's full outbound capacity
        (the gateway's, not the partner's), 503 `partner-unavailable` otherwise, with
        `Retry-After: seconds`."""
        if self.error == "rate_limited":
            return RateLimited(detail, retry_after=self.seconds, **extra)
        if self.error == "overloaded":
            return Unavailable(detail, retry_after=self.seconds, **extra)
        return PartnerUnavailable(detail, retry_after=self.seconds, **extra)


@dataclass(frozen=True, slots=True)
class OtherBody:
    """An answer's body that is neither JSON nor XML, with what its Content-Type says."""

    body: bytes
    media_type: str  # e.g. text/plain ("application/octet-stream" when none is given)
    charset: str | None


def other_charset(other: OtherBody) -> str:
    """The codec an answer's text is read in: its charset, UTF-8 when it names none or one
    that is no charset Python reads as text (`undefined`, `idna`, `hex`: `text_codec`)."""
    return (other.charset and text_codec(other.charset)) or "utf-8"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one request. `status` is None when no HTTP answer came back.

    What the partner said is masked of every value we sent it that must not come back (the
    credentials, the request's `secrets`): `message`, `json_body` and `other_body` as made
    (`Sender._exchange`), the excerpt when it is read (`redacted_excerpt`: most never are)."""

    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # KEPT_HEADERS only
    # False: the answer's head was not read into `headers` (refused after its status line,
    # `HeadRefused`, or an answer that could not be read at all): a header is unknown there.
    headers_read: bool = True
    body_excerpt: str = ""  # the first bytes of the body, decoded leniently
    body_cut: bool = False  # the body goes on past the excerpt (or was not read to its end)
    json_body: Any = None  # the parsed body: JSON, or an XML answer's tree (gateway/formats)
    is_json: bool = False  # json_body holds a parsed JSON body (which may be JSON null)
    is_xml: bool = False  # json_body holds the tree of an answer with an XML content type

    def redacted_excerpt(self, limit: int | None = None) -> str:
        """The answer's excerpt with what we sent masked, whole, then cut to `limit` (cut
        first, a credential across the cut would keep its start); a start of one at its end
        is masked only when the body went on past it (`body_cut`)."""
        return self.redactor.redact(self.body_excerpt, cut=self.body_cut)[:limit]

    @property
    def readable(self) -> bool:
        """Whether json_body holds the answer, read from JSON or from XML, for mappings."""
        return self.is_json or self.is_xml

    latency_ms: float = 0.0
    error: ErrorKind | None = None
    message: str | None = None  # human detail for `error`, never carrying credentials
    # A 2xx body that is neither JSON nor XML, whole (within the read cap): the proxy
    # returns it as it came.
    other_body: OtherBody | None = None
    # Seconds to wait that we know of without a Retry-After header: for an unsent outcome,
    # until our guard lets a request through; for a token endpoint's answer, its Retry-After.
    retry_in: float | None = None
    # What masks the values sent from the excerpt (`redacted_excerpt`).
    redactor: Redactor = field(default=NO_REDACTION, repr=False, compare=False)
    # No answer came in time once the connection was made and the request written: the
    # partner may have taken it (a notification keeps its cooldown note: notify/dispatch.py).
    unanswered: bool = False
    # The request's judge's judgement of the answer (`OutboundRequest.judge`), made once as
    # the answer came (`_judged`) and read by every caller after (the action's verdict, the
    # rule named in an error); None: not judged.
    judgement: Judgement | None = field(default=None, repr=False, compare=False)

    @property
    def verdict(self) -> Verdict:
        return classify(self.status, self.error)

    @property
    def sent(self) -> bool:
        return self.error not in NOT_SENT

    @property
    def requested(self) -> bool:
        """Whether a request went to the partner's API (its latency is `latency_ms`): sent,
        and not ended at the partner's credentials (`verdict.AT_CREDENTIALS`)."""
        return self.sent and self.error not in AT_CREDENTIALS

    @property
    def hold(self) -> Hold | None:
        """The hold, when our own guard refused the request for a while (`Hold`); None when
        it was sent, or `blocked` (never sendable: a permanent failure)."""
        if self.error is None or self.error not in HELD:
            return None
        seconds = math.ceil(max(self.retry_in or 1.0, 1.0))
        return Hold(self.error, self.message or self.error, seconds)

    def retry_after(self, now: datetime) -> float | None:
        said = parse_retry_after(self.headers.get("Retry-After"), now)
        return self.retry_in if said is None else said

    def throttled(self, *, reported: bool = False) -> bool:
        """Whether the partner answered that we call too often (`verdict.throttled`): a 429,
        or a 2xx reporting an over-limit error or an error with a `Retry-After` (`reported`:
        the caller found one where its configuration says errors are)."""
        body = self.json_body if self.is_json else None
        has_wait = self.headers.get("Retry-After") is not None
        return throttled(self.status, body, retry_after=has_wait, reported=reported)


def _judged(request: OutboundRequest, outcome: Outcome) -> Outcome:
    """`outcome` with the request's judgement of it (`OutboundRequest.judge`), made once. A
    judge that fails leaves the answer to its status (logged): what it raised replaced the
    answer, and the breaker's permit was never given back."""
    if request.judge is None or outcome.judgement is not None:
        return outcome
    try:
        judgement = request.judge(outcome)
    except Exception:
        log.exception("an answer (%s) could not be judged: its status decides", outcome.status)
        return outcome
    return replace(outcome, judgement=judgement)


def _breaker_verdict(outcome: Outcome) -> Verdict:
    """The verdict the partner's breaker counts: the judgement's when it decides, else the
    status's."""
    judged = None if outcome.judgement is None else outcome.judgement.verdict
    return outcome.verdict if judged is None else judged


def _not_sent(error: ErrorKind, message: str, retry_in: float) -> Outcome:
    return Outcome(error=error, message=message, retry_in=max(retry_in, 1.0))


class _Written:
    """Whether a request's head went out (aiohttp's `on_request_headers_sent`): a timeout
    before it (a connection that never came, the total timeout firing while connecting) left
    nothing at the partner; one after it is an unknown outcome (`Outcome.unanswered`)."""

    def __init__(self) -> None:
        self.headers = False


async def _headers_sent(
    session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestHeadersSentParams
) -> None:
    if isinstance(written := context.trace_request_ctx, _Written):
        written.headers = True


_WRITTEN: Final = aiohttp.TraceConfig()
_WRITTEN.on_request_headers_sent.append(_headers_sent)
_WRITTEN.freeze()


class Sender:
    """Owns one ClientSession (pooled connections, SSRF-guarded resolver) for the process.

    Use `async with Sender(policy) as sender:` or pair `start()` with `close()` in a
    cleanup_ctx. The session keeps no cookies (partners share it) and ignores proxy
    environment variables (a proxy would resolve names where our guard cannot see).

    `connections`: the process's outbound capacity, the most requests in flight to partners
    at once (each holds one connection at a time). A request takes its place in it after its
    partner's own gate and before its timeout starts (`send`); the connection pool itself
    has no limit, so that no request ever waits in it, on a connection another partner's
    requests hold, with its partner's clock running.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        connect_timeout: float = 5.0,
        max_body: int = 1024 * KIB,
        excerpt_bytes: int = 4 * KIB,
        connections: int = 2000,
        resolver: AbstractResolver | None = None,
        resolver_threads: int = 64,
    ) -> None:
        self._policy = policy
        self._connect_timeout = connect_timeout
        self._max_body = max_body
        self._excerpt_bytes = excerpt_bytes
        self._connections = connections
        self._capacity = asyncio.Semaphore(connections)
        self._inner_resolver = resolver
        self._resolver_threads = resolver_threads
        # Ours unless a test gives another (`resolver`): names resolved before the partner's
        # timeout starts, on threads of their own (resolver.py).
        self._resolver: PartnerResolver | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        inner = self._inner_resolver
        if inner is None:
            inner = self._resolver = PartnerResolver(self._resolver_threads)
        connector = Connector(
            resolver=GuardedResolver(self._policy, inner),
            limit=0,  # bounded by the capacity a request takes first (`_admitted`)
            use_dns_cache=False,  # the resolver keeps answers itself (resolver.py)
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trace_configs=[_WRITTEN],
            middlewares=(single_send,),  # a request is sent once, whatever its method
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING},
            auto_decompress=False,  # answers are decoded as they are read (codings.py)
            # Heads as large as partners send them (connection.py).
            max_line_size=HEAD_FIELD_MOST,
            max_field_size=HEAD_FIELD_MOST,
            max_headers=HEAD_FIELDS_MOST,
        )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._resolver is not None:
            resolver, self._resolver = self._resolver, None
            await resolver.close()

    async def __aenter__(self) -> Sender:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(
        self,
        request: OutboundRequest,
        *,
        partner_id: str,
        guard: PartnerGuard | None = None,
        auth: PartnerAuth = NO_AUTH,
    ) -> Outcome:
        """Send through the partner's guard (circuit breaker, rate limit, concurrency gate),
        then its tenant's share of the process's outbound capacity, then the capacity."""
        if guard is None:
            return await self._admitted(request, auth, None, min(request.timeout, _MAX_WAIT))
        if guard.breaker.state is BreakerState.OPEN:
            return _circuit_open(guard)
        max_wait = guard.settings.max_wait
        limiter = guard.limiter
        if limiter is not None and not await limiter.acquire(max_wait):
            return _not_sent(
                "rate_limited", f"over the rate limit for partner {partner_id}", limiter.delay()
            )
        if not await _enter(guard.gate, max_wait):
            tenant_full = guard.tenant_gate is not None and guard.tenant_gate.locked()
            if guard.gate.awaiting_capacity or self._capacity.locked() or tenant_full:
                # Its places wait for our capacity (or the tenant's share of it), or would:
                # the wait is ours, not the partner's.
                return self._overloaded(guard)
            if self._resolver is not None and self._resolver.saturated():
                # Its places may wait for a resolver thread: ours too.
                return _not_sent(
                    "overloaded",
                    _shortage(ResolverBusy(self._resolver_threads)) or "",
                    _BUSY_RETRY,
                )
            # A slot frees when a request in flight ends: within the partner's timeout.
            return _not_sent(
                "rate_limited",
                f"{guard.concurrency} requests already in flight to partner {partner_id}",
                request.timeout,
            )
        try:
            return await self._admitted(request, auth, guard, max_wait)
        finally:
            guard.gate.release()

    async def _admitted(
        self,
        request: OutboundRequest,
        auth: PartnerAuth,
        guard: PartnerGuard | None,
        max_wait: float,
    ) -> Outcome:
        """The request sent once it has a place in its tenant's share of the process's
        outbound capacity (`PartnerGuards.share`), then in the capacity, both waited for
        within max_wait seconds: a wait for our own resources, which the partner's timeout
        (starting after it) does not count. Still full then, it is not sent, held as
        `overloaded`: ours, not the partner's (no failure of it, nor an attempt)."""
        share = None if guard is None else guard.tenant_gate
        if guard is not None:
            guard.gate.awaiting_capacity += 1
        try:
            admitted = await self._capacity_place(guard, max_wait)
        finally:
            if guard is not None:
                guard.gate.awaiting_capacity -= 1
        if admitted is not None:
            return admitted
        # A lookup waits for a resolver thread no longer than for the capacity.
        terms = resolver_call.set(Call(wait=max_wait))
        try:
            if (held := await self._resolve_ahead(request)) is not None:
                return held
            if guard is None:
                return _judged(request, await self._send_with_auth(request, auth))
            return await self._send_through_breaker(request, guard, auth)
        finally:
            resolver_call.reset(terms)
            self._capacity.release()
            if share is not None:
                share.release()

    async def _capacity_place(self, guard: PartnerGuard | None, max_wait: float) -> Outcome | None:
        """None once the request holds a place in its tenant's share (when its guard has
        one) and in the process's capacity, both within max_wait seconds; else the hold of
        the one still full, and no place held."""
        share = None if guard is None else guard.tenant_gate
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        if share is not None and not await _enter(share, max_wait):
            return self._overloaded(guard)
        try:
            admitted = await _enter(self._capacity, max(deadline - loop.time(), 0.0))
        except BaseException:
            if share is not None:
                share.release()
            raise
        if admitted:
            return None
        if share is not None:
            share.release()
        return self._overloaded()

    async def _resolve_ahead(self, request: OutboundRequest) -> Outcome | None:
        """The partner's host name resolved before its timeout starts (`resolver.py`): a
        wait for a resolver thread, or no file descriptor to resolve with, is our own
        `overloaded`; the name server's failure (or no answer within the partner's timeout)
        is this call's, met by its connection as the partner's `connect` failure."""
        if self._resolver is None:
            return None
        try:
            url = self._policy.check_url(request.url)
        except (OutboundBlocked, ValueError):
            return None  # refused as it is sent (`_exchange`), no name looked up
        host, port = url.raw_host, url.port
        if host is None or port is None or is_ip_address(host):
            return None  # no lookup: aiohttp connects to an address as it is
        try:
            await self._resolver.ahead(host, port, socket.AF_UNSPEC, request.timeout)
        except OSError as exc:
            return _not_sent("overloaded", _shortage(exc) or str(exc), _BUSY_RETRY)
        return None

    def _overloaded(self, guard: PartnerGuard | None = None) -> Outcome:
        """The hold for our own capacity: the tenant's share of it when that is what is full
        (the partner's tenant has `share` requests in flight, `PartnerGuards`), else the
        process's."""
        share = None if guard is None else guard.tenant_gate
        if share is not None and share.locked() and not self._capacity.locked():
            assert guard is not None
            return _not_sent(
                "overloaded",
                f"tenant {guard.settings.tenant} has {share.size} requests to partners in "
                "flight in this gateway process, its share (half of "
                "GATEWAY_OUTBOUND_CONNECTIONS)",
                _BUSY_RETRY,
            )
        return _not_sent(
            "overloaded",
            f"this gateway process has {self._connections} requests to partners in "
            "flight, its limit (GATEWAY_OUTBOUND_CONNECTIONS)",
            _BUSY_RETRY,
        )

    async def _send_through_breaker(
        self, request: OutboundRequest, guard: PartnerGuard, auth: PartnerAuth
    ) -> Outcome:
        breaker = guard.breaker
        if (permit := breaker.allow()) is None:  # opened while we waited, or a probe is out
            return _circuit_open(guard)
        try:
            outcome = await self._send_with_auth(request, auth)
        except BaseException:
            breaker.release(permit)
            raise
        outcome = _judged(request, outcome)  # raises nothing: the permit is given back below
        if not outcome.sent:
            breaker.release(permit)
        elif _breaker_verdict(outcome) is Verdict.RETRY:
            breaker.record_failure(permit)
        else:  # answered, even with a 4xx: the partner is up
            breaker.record_success(permit)
        return outcome

    async def _send_with_auth(self, request: OutboundRequest, auth: PartnerAuth) -> Outcome:
        # Every credential of the partner is masked in what its calls bring back, not only
        # those a call carries: a resource server may quote an OAuth2 client's secret too.
        request = replace(request, secrets=(*request.secrets, *auth.credential_values()))
        # One deadline spans the whole call: a token fetch, the request, a refreshed token
        # and the request again share the partner's timeout, each given what is left of it.
        started = time.perf_counter()
        deadline = time.monotonic() + request.timeout

        def left() -> float:
            return max(deadline - time.monotonic(), _LEAST_TIMEOUT)

        async def fetch(
            url: str, form: Mapping[str, str], headers: Mapping[str, str]
        ) -> TokenResponse:
            return await self._fetch_token(url, form, headers, left())

        try:
            applied = await auth.apply(fetch)
            await _before_sending(request)
            outcome = await self._exchange(replace(request, timeout=left()), applied)
            if auth.refreshable and auth.refused(outcome.status, outcome.json_body):
                auth.invalidate(applied)
                applied = await auth.apply(fetch)
                await _before_sending(request)
                outcome = await self._exchange(replace(request, timeout=left()), applied)
                if auth.refused(outcome.status, outcome.json_body):
                    return _refused_again(outcome)
        except TokenFetchFailed as exc:
            # The token endpoint's own words (`error_description`) may quote the client
            # secret it refused.
            values = (*auth.credential_values(), *request.secrets)
            redactor = Redactor.of(values, written_codec(request.headers))
            said = redactor.shortened(exc.detail, _TOKEN_SAID)
            return Outcome(
                error=exc.kind,
                message=said,
                retry_in=exc.retry_after,
                latency_ms=_since(started),  # the call's, waiting for the token endpoint
            )
        return outcome

    async def _fetch_token(
        self, url: str, form: Mapping[str, str], headers: Mapping[str, str], timeout: float
    ) -> TokenResponse:
        token_request = OutboundRequest(
            "POST",
            url,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            body=urlencode(form).encode(),
            timeout=timeout,
        )
        # As an Applied, the client's Basic credentials are also redacted from messages.
        outcome = await self._exchange(token_request, Applied(headers=headers))
        if outcome.status is None:
            # Held by our own capacity (`overloaded`), its hold's length goes with it.
            kind = outcome.error or "auth_failed"
            raise TokenFetchFailed(
                f"token endpoint: {outcome.message}", kind=kind, retry_after=outcome.retry_in
            )
        return TokenResponse(
            outcome.status,
            outcome.json_body if outcome.is_json else None,
            outcome.retry_after(utcnow()),
            outcome.headers.get("Location"),
        )

    async def _exchange(self, request: OutboundRequest, applied: Applied) -> Outcome:
        """One HTTP request and its bounded answer; every failure becomes an Outcome. What
        was sent that must not come back (the credentials `applied`, the request's
        `secrets`) is masked in the outcome wherever the partner may quote it, whatever the
        status: the message (a parser quoting a garbled answer, a redirect's `Location`), the
        answer, parsed or as it came, and the excerpt when it is read."""
        if self._session is None:
            raise RuntimeError("Sender.start() was not called")
        started = time.perf_counter()
        # A body written in another charset carried the secrets as its bytes (bodies.py).
        codec = written_codec(request.headers)
        redactor = _redactor(applied, request.secrets, codec)
        written = _Written()
        try:
            url = self._policy.check_url(request.url)
            data = _with_members(request.body, applied.body_members)
            headers = {**request.headers, **applied.headers}
            if request.sign is not None:
                headers |= request.sign(data or b"")
            if applied.sign is not None:  # the partner's own signature (`hmac` credentials)
                headers |= applied.sign(data or b"")
            if reserved := reserved_in(headers):
                # Saved configurations are refused these; this holds for any stored before.
                raise OutboundBlocked(reserved_message(reserved[0]))
            if applied.query:  # the credential replaces any of its name (an echoed, masked key)
                names = {name for name, _ in applied.query}
                url = without_params(url, names)
                query = [(k, v) for k, v in request.query if k not in names]
                url = url.extend_query([*query, *applied.query])
            elif request.query:
                url = url.extend_query(request.query)
            timeout = aiohttp.ClientTimeout(
                total=request.timeout, sock_connect=min(self._connect_timeout, request.timeout)
            )
            async with self._session.request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=timeout,
                trace_request_ctx=written,
            ) as response:
                kept = redactor
                if request.answer_is_data:
                    kept = _redactor(applied, request.secrets, codec, data=True)
                return await self._answer(response, started, redactor, kept, request.answer_headers)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, OutboundBlocked) as exc:
            kind, message = _describe(exc)
            return Outcome(
                status=refused_status(exc),  # a head refused after its status line: kept
                headers_read=False,
                error=kind,
                message=redactor.redact(message),
                latency_ms=_since(started),
                retry_in=_BUSY_RETRY if kind == "overloaded" else None,
                redactor=redactor,
                # a timeout once the request went out: not one while it still connected,
                # whichever timer fired (the total one is a plain TimeoutError)
                unanswered=kind == "timeout" and written.headers,
            )

    async def _answer(
        self,
        response: aiohttp.ClientResponse,
        started: float,
        redactor: Redactor,
        data: Redactor,
        wanted: Sequence[str] = (),
    ) -> Outcome:
        """The answer read (`_read`); should reading it fail in a way nobody foresaw, still an
        answer with its status, which decides (`verdict.classify`): what a partner sends is
        never a request of ours that could not be sent (`blocked`), nor an exception."""
        try:
            return await self._read(response, started, redactor, data, wanted)
        except (aiohttp.ClientError, OSError, TimeoutError):
            raise  # the connection's failures, described as such (`_describe`)
        except Exception as exc:
            log.exception("the answer of %s could not be read", response.url.host)
            return Outcome(
                status=response.status,
                headers_read=False,
                latency_ms=_since(started),
                error="invalid_response",
                message=redactor.redact(
                    storable(f"the answer could not be read: {type(exc).__name__}: {exc}")
                ),
                redactor=redactor,
            )

    async def _read(
        self,
        response: aiohttp.ClientResponse,
        started: float,
        redactor: Redactor,
        data: Redactor,
        wanted: Sequence[str] = (),
    ) -> Outcome:
        """The answer, its message masked by `redactor`, its data (`json_body`, `other_body`)
        by `data` (none: `OutboundRequest.answer_is_data`); the headers KEPT_HEADERS and
        `wanted` name."""
        body, error, message = await self._read_body(response)
        # Not read to its end: too large, or the partner hung up (or timed out) mid-body.
        cut = error is not None or len(body) > self._excerpt_bytes
        latency_ms = _since(started)
        is_json = is_xml = False
        parsed = None
        content_type, charset = response.content_type, response.charset
        xml = is_xml_type(content_type)
        if error is None and xml:
            is_xml, parsed, message = _parse_xml(body, charset)
            error = None if message is None else "invalid_response"
        elif error is None:
            is_json, parsed, message = _parse_json(body, content_type, charset)
            error = None if message is None else "invalid_response"
        # Header bytes that are not UTF-8 (an old server's Latin-1 `Location`) come from
        # aiohttp as surrogates: made storable, as an excerpt is.
        headers = {k: storable(response.headers[k]) for k in KEPT_HEADERS if k in response.headers}
        for name in wanted:
            if fields := response.headers.getall(name, ()):
                headers[name] = storable(", ".join(fields))
        if message is None:  # a 204 or 304 that announced a body (connection.py)
            message = declared_body(response)
        if message is None and 300 <= response.status < 400:
            message = _not_followed(headers.get("Location"), redactor)
        other = None
        if error is None and not (is_json or is_xml) and body and 200 <= response.status < 300:
            other = OtherBody(body, content_type, charset)
        if data.empty or len(body) <= OFF_LOOP_BYTES:
            parsed, other = _redacted_answer(parsed, other, data)
        else:
            parsed, other = await asyncio.to_thread(_redacted_answer, parsed, other, data)
        return Outcome(
            status=response.status,
            headers=headers,
            body_excerpt=_excerpt(body[: self._excerpt_bytes], charset, xml=xml, cut=cut),
            body_cut=cut,
            json_body=parsed,
            is_json=is_json,
            is_xml=is_xml,
            latency_ms=latency_ms,
            error=error,
            message=redactor.redact(message) if message else message,
            other_body=other,
            redactor=redactor,
        )

    async def _read_body(
        self, response: aiohttp.ClientResponse
    ) -> tuple[bytes, ErrorKind | None, str | None]:
        """Read at most max_body bytes, decoded from the body's content coding (codings.py);
        past that keep what we have and drop the connection. A body that does not decode is
        not read further, the status kept."""
        declared = response.content_length
        # A declared oversize body is refused after reading no more than the excerpt.
        declared_too_large = declared is not None and declared > self._max_body
        limit = self._excerpt_bytes if declared_too_large else self._max_body
        content = response.content
        chunks: list[bytes] = []
        size = 0
        inflater: Inflater | None = None
        refused: Undecodable | None = None  # a coding not decoded, said once a body comes
        try:
            inflater = Inflater.of(response.headers.getall(hdrs.CONTENT_ENCODING, ()))
        except Undecodable as exc:
            refused = exc
        try:
            ended = False
            while size <= limit:
                chunk = await content.read(64 * KIB)
                if not chunk:
                    ended = True
                    break
                if refused is not None:
                    raise refused
                if inflater is not None:
                    chunk = inflater.feed(chunk, limit - size)
                chunks.append(chunk)
                size += len(chunk)
                if content.at_eof():  # the rest came with it: no read for the end
                    ended = True
                    break
            if inflater is not None and ended and size <= limit:
                inflater.finish()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            kind, message = _describe(exc)
            return b"".join(chunks), kind, message
        except Undecodable as exc:
            response.close()  # the rest is not read, nor the connection kept
            return b"".join(chunks), "invalid_response", exc.message
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if declared_too_large or size > limit:
            response.close()  # don't drain (or pool) a connection with a huge body on it
            size_text = f"{declared}-byte" if declared_too_large else "larger"
            message = f"{size_text} body exceeds the {self._max_body}-byte cap; not read"
            return body[: self._excerpt_bytes], "too_large", message
        return body, None, None


_MAX_WAIT = 5.0
"""Seconds a request without a partner guard (a JWKS) waits for the outbound capacity."""
_BUSY_RETRY = 5.0
"""Seconds after which a request the full outbound capacity held goes again."""
_TOKEN_SAID = 600
"""Characters of a token endpoint's refusal kept, once redacted."""
_LOCATION_SHOWN = 300
"""Characters of a redirect's `Location` quoted in its message, once redacted."""
_LEAST_TIMEOUT = 0.001
"""Seconds an exchange is given when its call's deadline has passed (aiohttp reads a timeout
of 0 as none): it times out at once."""


async def _before_sending(request: OutboundRequest) -> None:
    if request.before_sending is not None:
        await request.before_sending()


def _not_followed(location: str | None, redactor: Redactor) -> str:
    """What a 3xx says, since it is an answer and not followed (ssrf.py): where it points,
    masked whole, then shortened (it may quote our request's query key anywhere)."""
    if not location:
        return "a redirect without a Location; redirects are not followed"
    shown = redactor.shortened(location, _LOCATION_SHOWN)
    return f"redirected to {shown}; redirects are not followed: point the partner's URL there"


def _refused_again(outcome: Outcome) -> Outcome:
    """Fresh credentials refused too. A 401 says so by its status; a refusal inside a 2xx
    (Geotab's InvalidUserException) would read as a success: it becomes `auth_refused`."""
    if outcome.status is None or not 200 <= outcome.status < 300:
        return outcome
    return replace(
        outcome,
        status=None,
        error="auth_refused",
        message="the partner refused fresh credentials too; fix the partner's credentials",
    )


def _with_members(body: bytes | None, members: Sequence[tuple[Sequence[str], Any]]) -> bytes | None:
    """The JSON body with a credential's members set (ValueError: not a JSON object)."""
    if not members:
        return body
    try:
        document = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        raise ValueError("these credentials go into a JSON object body, and there is none")
    for path, value in members:
        node = document
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"the body's {key!r} is not an object")
        node[path[-1]] = value
    return orjson.dumps(document)


async def _enter(gate: Gate | asyncio.Semaphore, max_wait: float) -> bool:
    """Take a place in a partner's gate, or the process's capacity, within max_wait seconds
    (a free one is taken at once, without arming a timer)."""
    if not gate.locked():
        return await gate.acquire()
    try:
        async with asyncio.timeout(max_wait):
            return await gate.acquire()
    except TimeoutError:
        return False


def _circuit_open(guard: PartnerGuard) -> Outcome:
    wait = guard.breaker.retry_in()  # 0 in half_open with the probe out: ask for a second
    return _not_sent(
        "circuit_open", f"circuit open after repeated failures; probe in {wait:.0f} s", wait
    )


def _parse_json(
    body: bytes, content_type: str, charset: str | None = None
) -> tuple[bool, Any, str | None]:
    """(is_json, value, problem). A JSON content type must parse; other bodies may. UTF-8,
    or the charset the answer names (a legacy ERP's Latin-1), a byte order mark ignored, as
    a trigger reads a body (gateway/formats/charsets.py). Integers past 64 bits are their
    exact decimal text, as in a pushed body (`json_tree.loads_exact`): every reader of a
    partner's answer (a schedule's page, a proxy answer, a response mapping, a flow's fetch)
    keeps their digits, and what it stores can be stored. An answer nested deeper than
    ANSWER_DEPTH could not be written again: not JSON the gateway reads."""
    declared = content_type == "application/json" or content_type.endswith("+json")
    try:
        body = utf8_json(body, charset)
    except DocumentRefused as exc:
        return False, None, (f"body is not valid JSON: {exc.message}" if declared else None)
    if not declared and body.lstrip()[:1] not in (b"{", b"["):
        return False, None, None
    if declared and not body.strip():
        return False, None, None
    try:
        value = loads_exact(body)
    except orjson.JSONDecodeError as exc:
        return False, None, (f"body is not valid JSON: {exc}" if declared else None)
    if json_depth_exceeds(body, value, ANSWER_DEPTH):
        deep = f"body is JSON nested deeper than {ANSWER_DEPTH} levels, which is not read"
        return False, None, (deep if declared else None)
    return True, value, None


def _parse_xml(body: bytes, charset: str | None) -> tuple[bool, Any, str | None]:
    """(is_xml, tree, problem) for an answer with an XML content type: it must parse (an
    empty one is no body), by the same safe reader as a trigger's XML."""
    if not body.strip():
        return False, None, None
    try:
        return True, parse_xml(body, charset=charset), None
    except DocumentRefused as exc:
        return False, None, f"body is not valid XML: {exc.located()}"


def _describe(exc: BaseException) -> tuple[ErrorKind, str]:
    """Our error kind for an exception, with a message that names no URL (its path and query
    may carry a key or a person's data): aiohttp names the request's in some of its
    exceptions (`Can not write request body for <URL>`), so none is taken as it is."""
    if isinstance(exc, Dropped):  # held from aiohttp's own re-send (`single_send`)
        exc = exc.dropped
    if isinstance(exc, OutboundBlocked):
        return "blocked", exc.detail
    if isinstance(exc, aiohttp.InvalidURL):
        return "blocked", "invalid URL"
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError & co. included
        return "timeout", f"no answer in time ({type(exc).__name__})"
    if isinstance(exc, aiohttp.ClientConnectorError) and (shortage := _shortage(exc.os_error)):
        # Nothing reached the partner: this process is out of file descriptors or resolver
        # threads, ours to mend.
        return "overloaded", shortage
    if isinstance(exc, aiohttp.ClientConnectorError):
        said = _without_urls(str(exc.os_error.strerror or exc.os_error))
        return "connect", f"cannot connect to {exc.host}:{exc.port}: {said}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "invalid_response", f"invalid HTTP answer: {_parser_said(exc, exc.message)}"
    if isinstance(exc, BodyRefused):  # after the head: the answer's status stands
        return "invalid_response", f"invalid HTTP answer body: {_parser_said(exc, exc.message)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | OSError):
        return "reset", f"connection lost: {type(exc).__name__}: {_without_urls(str(exc))}"
    if isinstance(exc, ValueError):
        return "blocked", f"request not sendable: {_without_urls(str(exc))}"
    return "connect", f"{type(exc).__name__}: {_without_urls(str(exc))}"


def _shortage(error: OSError) -> str | None:
    """What this process lacks, when `error` is its own shortage and not the partner's:
    a file descriptor (a connection or a name lookup), a resolver thread."""
    if isinstance(error, ResolverBusy):
        return f"{error.strerror} (name resolution; its threads are the gateway's)"
    if error.errno in _NO_DESCRIPTOR:
        return (
            "this gateway process has no file descriptor left for a connection "
            "(its open-file limit, `ulimit -n`)"
        )
    return None


_NO_DESCRIPTOR: Final = frozenset({errno.EMFILE, errno.ENFILE})
_URL: Final = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://\S*")


def _without_urls(text: str) -> str:
    return _URL.sub("the partner's URL", text)


def _parser_said(exc: BaseException, said: str) -> str:
    """What the parser refused (`said`, raised as `exc`), on one line, without the bytes it
    quotes: they are the partner's head, whose values may be a session cookie or a token
    (`Set-Cookie`), or its body, and no redactor knows them."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, LineTooLong):
        cause = cause.__cause__
    if isinstance(cause, LineTooLong):
        return f"a status line or header field longer than {HEAD_FIELD_MOST} bytes"
    lines = [line.strip() for line in said.splitlines()]
    text = _QUOTED.sub("", " ".join(line for line in lines if line.strip("^")))
    return " ".join(text.split()).rstrip(" :.")


# A Python literal of bytes or text, as the parser quotes what it read.
_QUOTED: Final = re.compile(r"""(?<![\w'"])b?(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


# Byte order marks, longest first (UTF-32 LE starts like UTF-16 LE).
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_XML_ENCODING: Final = re.compile(
    rb"""<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9._-]{1,40})["']"""
)


def _excerpt(head: bytes, charset: str | None, *, xml: bool, cut: bool) -> str:
    """The first bytes of an answer as text, read in the answer's encoding (its media type's
    charset; for XML, else a byte order mark, else its declaration's; else UTF-8), leniently:
    what the redactor searches for credentials must be the text the partner wrote (a UTF-16
    SOAP fault read as UTF-8 hides an echoed password between NULs). `cut`: the answer goes
    on past `head`, which ends at the last whole character (the first bytes of one cut in two,
    read as U+FFFD, would hide the start of a credential there from the redactor)."""
    encoding = charset
    if encoding is None and xml:
        encoding = next((name for bom, name in _BOMS if head.startswith(bom)), None)
    if encoding is None and xml and (declared := _XML_ENCODING.match(head)):
        # A declaration read as ASCII is in no UTF-16 or UTF-32 (.NET's StringWriter writes
        # `utf-16` on UTF-8): its bytes are.
        encoding = _ascii_based(declared.group(1).decode("ascii"))
    # A charset that names no text codec (`hex`, `undefined`) is none: UTF-8.
    encoding = (encoding and text_codec(encoding)) or "utf-8"
    text = head.decode(encoding, "replace")
    if cut and text.endswith("\ufffd"):  # not final: a character's first bytes are held back
        text = _held_back(head, encoding, text)
    # UTF-7 decodes `+2AA-` to a lone surrogate, leniently or not: no store takes it.
    return storable(text)


def _ascii_based(encoding: str) -> str | None:
    """`encoding`, or None when it names a UTF-16 or UTF-32 codec."""
    name = text_codec(encoding)
    return None if name is not None and name.startswith(("utf-16", "utf-32")) else encoding


def _held_back(head: bytes, encoding: str, text: str) -> str:
    """`head` decoded with a character cut at its end held back (`text` when it cannot be).
    Without a byte order mark UTF-16 and UTF-32 are read in the machine's byte order, as
    `bytes.decode` does: their incremental decoders refuse such a stream (a ValueError)."""
    if codecs.lookup(encoding).name in ("utf-16", "utf-32") and not head.startswith(
        (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)
    ):
        encoding += "-le" if sys.byteorder == "little" else "-be"
    try:
        return codecs.getincrementaldecoder(encoding)("replace").decode(head)
    except ValueError:  # a codec that fails anyway: the lenient text
        return text


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _redactor(
    applied: Applied, secrets: tuple[str, ...], codec: str | None, *, data: bool = False
) -> Redactor:
    """What masks the values sent that must not come back, in every form the request could
    carry them, its body written in `codec` (None: UTF-8); none for a partner without
    credentials (nothing to do on its answers). `data`: in an answer that is data written as
    it came (`OutboundRequest.answer_is_data`), a credential of digits is not looked for:
    digits are what data is made of (an odometer, a packet id, a code equal to a PIN)."""
    if not applied.secrets and not secrets:
        return NO_REDACTION
    values = (*applied.credential_values(), *secrets)
    if data:
        values = tuple(v for v in values if not (v.isascii() and v.isdigit()))
    return Redactor.of(values, codec) if values else NO_REDACTION


def _redacted_answer(
    parsed: Any, other: OtherBody | None, redactor: Redactor
) -> tuple[Any, OtherBody | None]:
    """The answer's parsed body (masked in place) and its other body, redacted."""
    return redactor.redact_tree(parsed), None if other is None else _redacted_body(other, redactor)


def _redacted_body(other: OtherBody, redactor: Redactor) -> OtherBody:
    """An answer neither JSON nor XML, masked: read in its charset, else as UTF-8 with the
    bytes that are not UTF-8 kept as they came (`surrogateescape`); written back the same
    way, the mask in that charset (or `?` where it has no such characters)."""
    if redactor.empty:
        return other
    try:
        encoding, errors = other_charset(other), "replace"
        text = other.body.decode(encoding)
    except UnicodeDecodeError:  # bytes that are not text in it
        encoding, errors = "utf-8", "surrogateescape"
        text = other.body.decode(encoding, errors)
    masked = redactor.redact(text, cut=False, whole=True)
    if masked == text:
        return other
    return replace(other, body=masked.encode(encoding, errors))
