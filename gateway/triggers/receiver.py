"""Use case: a partner calls `/hooks/{trigger_id}` to write (POST) or read (GET) entities.

    admit:  gate (status, config version, live token ids; cached while current, see
            gates.py) → compiled config (cached per version) → authenticate (token | partner
            JWT | body signature: Standard Webhooks or the partner's own HMAC scheme)
            → enabled? → method allowed? → rate limit (per process)
    write:  read body (size limit) → parse (JSON, XML or form) → Idempotency-Key (a signed
            message's replay key instead: auth/signatures.py ReplayKey) → ingest
    read:   one entity by id/key, or a filtered page, shaped by the response mapping; a
            position trigger's: a vehicle's recent track (gateway/fleet/tracks.py)

Every 401 has the same body, whether the trigger is unknown, the token bad, expired or
revoked, so a caller learns nothing about which trigger ids exist. A valid token shown at
another trigger's URL is a 403, decided from the token alone (again whatever the URL names).
A revocation holds at once in the process that made it and within 1 s in every other
(`gates.py`: the gate cache follows the triggers' change stream, or re-reads).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote_plus

import orjson

from gateway.auth import partner_hmac, webhook_signature
from gateway.auth.keyring import KeyRing
from gateway.auth.signatures import ReplayKey, SignatureRejected
from gateway.auth.tokens import TriggerClaims, TriggerTokenVerifier, bearer_token
from gateway.clock import utc_timestamp
from gateway.entities import EntityService, Origin
from gateway.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    KeysUnavailable,
    PartnerError,
    RateLimited,
    StoreUnavailable,
    Unauthorized,
)
from gateway.fleet.tracks import Tracks
from gateway.formats.bodies import parse_form, parse_json, parse_xml, reads_as_json
from gateway.mapping_files.source import MappingSource
from gateway.metrics import Metrics
from gateway.outbound.breaker import RateLimits
from gateway.store import Doc, Store
from gateway.store.idempotency import RETENTION_SECONDS as IDEMPOTENCY_RETENTION
from gateway.triggers.compiled import CompiledTrigger, TriggerConfigs
from gateway.triggers.gates import TriggerGates
from gateway.triggers.idempotency import REPLAYED_HEADER, IdempotencyGuard
from gateway.triggers.ingest import Ingestor
from gateway.triggers.model import HookAnswer, HookCall
from gateway.triggers.outcomes import outcome_of
from gateway.triggers.reading import Reader
from gateway.triggers.spec import POSITION_READ_PARAMS, SIGNED_MODES

log = logging.getLogger(__name__)

DENIED: Final = "missing, invalid or revoked credentials"
# A signature covers the body, not the URL: a read's signature is the empty body's, the same
# for every read (for ever, in a scheme without a timestamp), so it would read any entity.
UNSIGNED_READ: Final = (
    "a signed trigger takes writes only: a signature covers the body, not the URL, so it "
    "cannot authorise a read (read through a token trigger)"
)
# Its GET is a device's write, and its token sits in every device's URL (one for the fleet).
FORM_READ: Final = (
    "a form trigger takes writes only: its GET writes the fields of its query string "
    "(OsmAnd), and its token, in every device's URL, reads nothing (read through a json "
    "trigger whose token goes in the Authorization header)"
)


@dataclass(slots=True)
class _Tally:
    trigger: str = "unknown"
    outcome: str = "error"


@dataclass(frozen=True, slots=True)
class _Admitted:
    trigger: CompiledTrigger
    raw: bytes | None = None  # read already (to check its signature)
    replay: ReplayKey | None = None  # a signed message's (e.g. its webhook-id)


_ORIGIN: Final = re.compile(r"^(?:\*|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)\Z")
_RATE: Final = re.compile(r"^[1-9][0-9]{0,8}\Z")
# How far apart the clocks of the gateway's processes (and the moment a signed message is
# verified and its idempotency record written) may be: a timestamped message is kept in the
# signature memory when a copy could verify this close to its record's end.
CLOCK_MARGIN_SECONDS: Final = 300


def _options(trigger: CompiledTrigger, call: HookCall) -> dict[str, str]:
    """An admitted OPTIONS: `Allow`, and the CloudEvents webhook validation handshake (HTTP 1.1
    Web Hooks §4) when it asks (`WebHook-Request-Origin`) at a URL that takes POST: consent
    for that origin and the rate the trigger's limit allows (requests per minute, `*` with no
    limit). A callback (`WebHook-Request-Callback`) is never called: consent is answered."""
    at_root = call.ref is None  # /hooks/{id}, where writes go
    gets = ["GET", "HEAD"] if trigger.reads else []
    if trigger.format == "form" and "GET" in trigger.methods and at_root:
        # A device's write (a HEAD never writes); a signed trigger's has nothing signed.
        gets = [] if trigger.auth_mode in SIGNED_MODES else ["GET"]
    posts = "POST" in trigger.methods and at_root
    allowed = [*gets, *(["POST"] if posts else []), "OPTIONS"]
    headers = {"Allow": ", ".join(allowed)}
    origin = call.headers.get("WebHook-Request-Origin")
    if origin is None or not posts:
        return headers
    asked = call.headers.get("WebHook-Request-Rate")
    if not _ORIGIN.match(origin.strip()) or (asked is not None and not _RATE.match(asked.strip())):
        raise BadRequest(
            "WebHook-Request-Origin must be a DNS name (or *) and WebHook-Request-Rate a "
            "positive whole number of requests per minute"
        )
    rate = None if trigger.rate is None else max(1, math.floor(trigger.rate[0] * 60))
    if asked is not None:
        rate = int(asked) if rate is None else min(rate, int(asked))
    headers["WebHook-Allowed-Origin"] = origin.strip()
    headers["WebHook-Allowed-Rate"] = "*" if rate is None else str(rate)
    return headers


def denied() -> Unauthorized:
    return Unauthorized(DENIED)


class HookReceiver:
    def __init__(
        self,
        store: Store,
        gates: TriggerGates,
        configs: TriggerConfigs,
        entities: EntityService,
        ingestor: Ingestor,
        mappings: MappingSource,
        ring: KeyRing,
        metrics: Metrics,
        tracks: Tracks,
        *,
        clients: RateLimits | None = None,
        client_rate: float = 1000,
        clock: Callable[[], float] = utc_timestamp,
    ) -> None:
        self._store = store
        self._gates = gates
        self._configs = configs
        self._ingestor = ingestor
        self._reader = Reader(entities, mappings)
        self._tracks = tracks
        self._idempotency = IdempotencyGuard(store, clock=clock)
        self._verifier = TriggerTokenVerifier(ring)
        self._metrics = metrics
        self._clock = clock
        self._newer_noted: set[tuple[str, str]] = set()  # (trigger, token id) logged once
        self._limits = RateLimits()
        # Calls refused for their credentials, per client (its address, an IPv6 one's /64:
        # web/client_address.py), shared with the admin API's (web/admin_auth.py),
        # `client_rate` a second, bursts of twice that.
        self._clients = RateLimits() if clients is None else clients
        self._client_rate = client_rate

    async def close(self) -> None:
        """At shutdown, while the store is open: the Idempotency-Key releases left, the
        trigger reads under way of calls that went away."""
        await asyncio.gather(self._idempotency.close(), self._configs.close())

    async def handle(self, call: HookCall) -> HookAnswer:
        tally = _Tally()
        started = time.perf_counter()
        try:
            return await self._handle(call, tally)
        except GatewayError as exc:
            tally.outcome = outcome_of(exc)
            raise
        finally:
            self._metrics.trigger_requests.labels(
                self._metrics.trigger_label(tally.trigger), call.method, tally.outcome
            ).inc()
            self._metrics.trigger_latency.labels(
                self._metrics.trigger_label(tally.trigger)
            ).observe(time.perf_counter() - started)

    async def _handle(self, call: HookCall, tally: _Tally) -> HookAnswer:
        counted = self._count_unknown(call)
        try:
            admitted = await self._admit(call, tally)
        except Unauthorized:
            if not counted:
                self._count(call)
            raise
        trigger = admitted.trigger
        if call.method == "OPTIONS":
            tally.outcome = "options"
            return HookAnswer(204, b"", _options(trigger, call))
        # OsmAnd devices write with GET; a HEAD never writes.
        writes = call.method == "POST" or (trigger.format == "form" and call.method == "GET")
        if call.ref is None and writes:
            return await self._write(admitted, call, tally)
        if not trigger.reads:
            raise Forbidden(UNSIGNED_READ if trigger.auth_mode in SIGNED_MODES else FORM_READ)
        if (key := call.headers.get("Idempotency-Key")) is not None:
            _check_key(key)  # a read has no use for one, but one it cannot be is the same 400
        if trigger.target == "positions":
            answer = await self._recent_track(trigger, call)
        else:
            answer = await self._reader.read(trigger, call.ref, call.query)
        tally.outcome = "read"
        return HookAnswer(200, orjson.dumps(answer, default=str))

    async def _recent_track(self, trigger: CompiledTrigger, call: HookCall) -> Any:
        """A position trigger's GET: a vehicle's recent track, by id or plate in the path, or
        by `?plate=` / `?tracker_id=`: one of them, once. Any other parameter (but the token
        parameter) is a 400: `?limit=1` or `?from=` silently answered with the 50 newest
        fixes would let the partner believe its filter applied."""
        taken = {*POSITION_READ_PARAMS, trigger.token_param}
        if unknown := sorted(set(call.query) - taken):
            raise BadRequest(
                f"a position trigger's read takes no {', '.join(unknown)}; it takes "
                f"{' or '.join(POSITION_READ_PARAMS)} (or the plate in the path), and answers "
                "the vehicle's newest fixes (the admin API pages a whole track)"
            )
        named = [k for k in POSITION_READ_PARAMS if len(_all_of(call.query, k)) > 1]
        ways = [call.ref is not None, *(k in call.query for k in POSITION_READ_PARAMS)]
        if named or sum(ways) > 1:
            # Which vehicle the caller meant would be a guess (an entity trigger's filters
            # given twice are refused alike).
            raise BadRequest("name one vehicle: one plate or one tracker_id")
        if call.ref is not None:
            return await self._tracks.recent(trigger.tenant, call.ref)
        if plate := call.query.get("plate"):
            return await self._tracks.recent(trigger.tenant, plate)
        if tracker_id := call.query.get("tracker_id"):
            return await self._tracks.recent_by_tracker(trigger.tenant, tracker_id)
        raise BadRequest("name a vehicle: /hooks/{id}/{plate}, ?plate= or ?tracker_id=")

    # -- admission -----------------------------------------------------------------------------

    def _count_unknown(self, call: HookCall) -> bool:
        """Whether the call was counted against its address's budget of refused calls before
        its trigger is read: when it names an id this process has not read as a trigger's
        (made up, most likely), so that a flood of such calls, however many at once, costs
        at most that budget in database reads. A call to a trigger this process knows costs
        no read, and is counted only if refused: devices behind one address (a NAT) keep
        writing beside a misconfigured one."""
        if self._gates.known(call.trigger_id):
            return False
        self._count(call)
        return True

    def _count(self, call: HookCall) -> None:
        """One more refused (or possibly refused) call from the caller's address: past the
        limit a 429 (SPEC §7: guessing trigger ids or tokens is limited, as on the admin API:
        the same budget)."""
        rate = self._client_rate
        if wait := self._clients.wait(f"client:{call.client}", rate, 2 * rate):
            raise RateLimited(
                f"over the limit of {rate:g} refused calls/s from this address",
                retry_after=max(1, math.ceil(wait)),
            )

    async def _admit(self, call: HookCall, tally: _Tally) -> _Admitted:
        gate = await self._gates.gate(call.trigger_id)
        if gate is None:
            token = bearer_token(call.headers)
            if token:
                # The same signature check a known trigger's bad token gets, so the time to
                # answer does not tell which trigger ids exist.
                with contextlib.suppress(Unauthorized):
                    self._verifier.verify(token, trigger_id=call.trigger_id)
            raise await self._refusal(token, call.trigger_id)
        tally.trigger = gate["_id"]
        trigger = await self._configs.for_gate(gate)
        if trigger is None:
            raise denied()
        admitted = await self._authenticate(trigger, gate, call)
        if trigger.answers == "as_called" and call.as_called is not None:
            call.as_called()  # a partner now known: its answers in the form it speaks
        if gate["status"] != "active":
            raise Forbidden("this trigger is disabled")
        method = "GET" if call.method == "HEAD" else call.method
        if method != "OPTIONS" and method not in trigger.methods:
            # SPEC §3.1: a valid token used beyond its scope is 403 (405 is for methods the
            # endpoint has at all, which the router answers).
            raise Forbidden(
                f"this trigger does not accept {method}; it accepts {', '.join(trigger.methods)}",
                allowed=list(trigger.methods),
            )
        self._limit(trigger)
        return admitted

    async def _authenticate(self, trigger: CompiledTrigger, gate: Doc, call: HookCall) -> _Admitted:
        if trigger.auth_mode in SIGNED_MODES:
            raw = await call.body.read(trigger.max_body_bytes)
            replay = self._verify_signature(trigger, call.headers, raw, call.query)
            return _Admitted(trigger, raw, replay)
        if trigger.secret_header is not None:
            self._check_shared_secret(trigger, call.headers)
            return _Admitted(trigger)
        token = bearer_token(call.headers)
        if token is None and trigger.token_param is not None:
            given = _all_of(call.query, trigger.token_param)
            # Which one counts would be a guess: refused as a wrong token is (a 400 would tell
            # a stranger that this trigger exists and reads its token there).
            token = given[0] if len(given) == 1 else None
        if not token:
            raise denied()
        if trigger.partner_jwt is not None:
            try:
                await trigger.partner_jwt.verify(token)
            except Unauthorized:
                raise denied() from None
            except PartnerError:
                # Their key server is down: a retry later may pass, so not a 401 (nor a 502,
                # which would blame the partner's own request).
                raise KeysUnavailable(
                    "the partner's signing keys cannot be fetched now", retry_after=30
                ) from None
            return _Admitted(trigger)
        try:
            claims = self._verifier.verify(token, trigger_id=trigger.id)
        except Unauthorized:
            raise await self._refusal(token, trigger.id) from None
        if claims.tenant != gate["tenant"] or not _live(gate, claims.token_id, self._now()):
            await self._note_newer_token(gate, claims)
            raise denied()
        return _Admitted(trigger)

    async def _note_newer_token(self, gate: Doc, claims: TriggerClaims) -> None:
        """A token this gateway signed for the trigger, issued after every token the database
        holds for it: the database is older than the token (a restored backup), not the
        token forged or revoked. Still a 401 (the token id is not stored); logged once per
        token and process so the operator can re-issue it (docs/operations.md "Backups")."""
        key = (str(gate["_id"]), claims.token_id)
        if claims.tenant != gate["tenant"] or key in self._newer_noted:
            return
        if not _issued_after_all(claims, gate):
            return  # revoked or rotated out: nothing read for it (a caller repeating it)
        # Read again, not the cached gate: one a rotation made by another process a moment
        # ago has not reached yet is no older database.
        doc = await self._store.triggers.get(claims.tenant, key[0])
        if doc is not None and _issued_after_all(claims, doc):
            self._newer_noted.add(key)
            log.warning(
                "trigger %s refused a token it issued after every token the database holds "
                "for it: the database is older than the token (a backup restored?); rotate "
                "the trigger and give the partner the new token",
                key[0],
                extra={"tenant": claims.tenant, "trigger": key[0], "token_id": claims.token_id},
            )

    def _verify_signature(
        self,
        trigger: CompiledTrigger,
        headers: Mapping[str, str],
        raw: bytes,
        query: Mapping[str, str],
    ) -> ReplayKey:
        """The signed message's replay key; a refusal is counted by reason and answered with
        the same 401 as any bad credential."""
        now = self._clock()
        secrets = trigger.secrets_at(now)
        try:
            if trigger.hmac is not None:
                scheme = trigger.hmac
                return partner_hmac.verify(scheme, secrets, headers, raw, now=now, query=query)
            msg_id = webhook_signature.verify(secrets, headers, raw, now=now)
            return ReplayKey(msg_id, webhook_signature.ID_HEADER)
        except SignatureRejected as exc:
            self._metrics.trigger_signature_rejections.labels(
                self._metrics.trigger_label(trigger.id), exc.reason
            ).inc()
            if exc.reason == "unusable_secret":
                log.error(
                    "trigger %s: %s; rotate it (or PATCH the partner's secret) to accept "
                    "its signed requests",
                    trigger.id,
                    exc.detail,
                    extra={"trigger": trigger.id},
                )
            raise denied() from None

    def _check_shared_secret(self, trigger: CompiledTrigger, headers: Mapping[str, str]) -> None:
        """The partner's header holds one of the trigger's live secrets, compared in constant
        time with each (every one compared, so the time tells none of them); a header given
        twice is refused as a wrong secret is. A refusal is counted by reason and answered
        with the same 401 as any bad credential."""
        assert trigger.secret_header is not None
        sent = _all_of(headers, trigger.secret_header)
        reason = "missing" if not sent else "malformed" if len(sent) > 1 else None
        if reason is None:
            given = sent[0].strip().encode("utf-8", "surrogateescape")
            matched = False
            for secret in trigger.secrets_at(self._clock()):
                matched |= hmac.compare_digest(given, secret.encode())
            reason = None if matched else "mismatch"
        if reason is not None:
            self._metrics.trigger_signature_rejections.labels(
                self._metrics.trigger_label(trigger.id), reason
            ).inc()
            raise denied()

    async def _refusal(self, token: str | None, trigger_id: str) -> GatewayError:
        """403 for a live token of another trigger (whatever `trigger_id` names), else 401."""
        subject = _unverified_subject(token) if token else None
        if token is None or subject is None or subject == trigger_id:
            return denied()
        try:
            claims = self._verifier.verify(token, trigger_id=subject)
        except Unauthorized:
            return denied()
        own = await self._store.triggers.get(claims.tenant, subject)
        if own is None or not _live(own, claims.token_id, self._now()):
            return denied()
        return Forbidden("this token belongs to another trigger")

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _limit(self, trigger: CompiledTrigger) -> None:
        """The trigger's rate limit, counted in this process only."""
        if trigger.rate is None:
            return
        wait = self._limits.wait(trigger.id, *trigger.rate)
        if wait:
            raise RateLimited(
                f"over this trigger's limit of {trigger.rate[0]:g} requests/s",
                retry_after=max(1, math.ceil(wait)),
            )

    # -- writing -------------------------------------------------------------------------------

    async def _refuse_old_copy(self, trigger: CompiledTrigger, replay: ReplayKey) -> None:
        """A copy of a message written before, whose idempotency record (and first answer) has
        expired: refused like a stale timestamp, counted as `replayed`."""
        memory = self._store.signature_memory
        keys = [replay.key, *replay.legacy]
        if replay.legacy_offered is not None:
            keys.append(replay.legacy_offered)
        if await memory.seen_at(trigger.tenant, trigger.id, keys, self._now()) is not None:
            self._metrics.trigger_signature_rejections.labels(
                self._metrics.trigger_label(trigger.id), "replayed"
            ).inc()
            raise denied()

    async def _remember(self, trigger: CompiledTrigger, key: str) -> None:
        """Keep the written message's key (store/signature_memory.py); the write is durable
        and answered whether or not this succeeds."""
        try:
            await self._store.signature_memory.remember(
                trigger.tenant, trigger.id, key, self._now()
            )
        except StoreUnavailable as exc:
            log.warning("signed message not remembered: %s", exc.detail)

    async def _write(self, admitted: _Admitted, call: HookCall, tally: _Tally) -> HookAnswer:
        trigger = admitted.trigger
        received = self._now()  # the device time of a tracker that sends none
        raw = admitted.raw
        if raw is None:
            raw = await call.body.read(trigger.max_body_bytes)
        payload = _payload(trigger, call, raw)
        replay = admitted.replay
        key, named = _idempotency_key(replay, call)
        digest, earlier_digests = (
            _body_hashes(replay, call, raw, trigger.token_param) if key is not None else ("", ())
        )
        checked, remembered = _memory_use(trigger, replay, self._clock())
        # A position trigger's copy is a duplicate of the fix it wrote (stored once, by vehicle
        # and time) unless a fix takes its time from its receipt: only then is it looked up,
        # once the fixes are mapped, and remembered (no database command for any other fix).
        at_receipt_only = trigger.target == "positions"

        async def refuse_old_copy() -> None:
            if checked is not None:
                await self._refuse_old_copy(trigger, checked)

        async def ingest() -> HookAnswer:
            if replay is not None and (replay.legacy or replay.legacy_offered):
                offered = () if replay.legacy_offered is None else (replay.legacy_offered,)
                earlier = await self._idempotency.answered(
                    trigger,
                    replay.legacy,
                    body_keys=offered,
                    body_hashes=(digest, *earlier_digests),
                )
                if earlier is not None:
                    return earlier  # a copy of a message written before its key changed
            if not at_receipt_only:
                await refuse_old_copy()
            ingested = await self._ingestor.ingest(
                trigger,
                payload,
                origin=Origin("trigger", trigger.id),
                received=received,
                caller_retries=True,
                new_at_receipt=refuse_old_copy,
            )
            tally.outcome = ingested.outcome
            kept = not at_receipt_only or ingested.at_receipt
            if remembered is not None and kept and ingested.status < 300:
                await self._remember(trigger, remembered)
            return HookAnswer(ingested.status, orjson.dumps(ingested.body))

        if key is None:
            return await ingest()
        answer = await self._idempotency.run(
            trigger, key, digest, ingest, named=named, earlier_hashes=earlier_digests
        )
        if REPLAYED_HEADER in answer.headers:
            tally.outcome = "replayed"
        return answer


def _payload(trigger: CompiledTrigger, call: HookCall, raw: bytes) -> Any:
    """The body parsed as the trigger's format says (a form trigger's, or its query string).
    JSON, a form and a query string not in UTF-8 are read in the charset the request names,
    else the trigger's (`charset`: a partner that cannot set its headers); XML names its own
    in its declaration, and only XML that names none is read in the trigger's."""
    charset = call.charset or trigger.charset
    if trigger.format == "form" and reads_as_json(call.content_type, raw):
        return parse_json(call.content_type, raw, charset)
    if trigger.format == "form":
        if trigger.auth_mode in SIGNED_MODES and call.query_string:
            # No scheme signs the URL: its fields would be written on a signature of
            # something else (any captured body, the empty body of a GET).
            raise BadRequest(
                "the query string is not covered by the signature: a signed trigger "
                "takes its fields from the signed body only"
            )
        # The token parameter is the query's credential, not content: a body field of that
        # name is the partner's (OsmAnd's `id=dev1` under `?id=<token>`).
        query = call.query_string
        if trigger.token_param is not None:
            query = _request_query(query, trigger.token_param)
        return parse_form(
            call.content_type, raw, query, charset, call.headers.get("Content-Type", "")
        )
    if trigger.format == "xml":
        return parse_xml(call.content_type, raw, call.charset, trigger.charset)
    return parse_json(call.content_type, raw, charset)


def _idempotency_key(replay: ReplayKey | None, call: HookCall) -> tuple[str | None, str]:
    """(the write's idempotency key, how answers name it). A signed message is keyed by what
    its signature covers (auth/signatures.py ReplayKey): an unsigned Idempotency-Key must not
    let a captured message be written again."""
    if replay is not None:
        return replay.key, replay.named
    key = call.headers.get("Idempotency-Key")
    if key is not None:
        _check_key(key)
    return key, "Idempotency-Key"


def _body_hashes(
    replay: ReplayKey | None, call: HookCall, raw: bytes, token_param: str | None
) -> tuple[str, tuple[str, ...]]:
    """(the digest an idempotency record keeps of this call, the other forms a record written
    by an earlier version may hold for it). An `Idempotency-Key`'s covers the body and the
    query string as the request's content (`_request_query`); a signed message's the body
    alone: the query string is not signed, and a copy with one added must get the first
    answer, not a 422.
    Until 2026-12-05 a signed message's covered the query string too, and until 2026-12-06
    an `Idempotency-Key`'s covered it as sent: a record written then holds that form, so a
    retry to the same URL is taken as the copy it is. Records last 24 h: the second form
    can go once every gateway has run this version that long."""
    digest = hashlib.sha256(raw)  # the body hashed once, not copied to append to it
    digest.update(b"\n")
    if not call.query_string:  # (no query: the forms are one)
        return digest.hexdigest(), ()
    if replay is not None:
        body_only = digest.hexdigest()
        digest.update(call.query_string.encode())
        return body_only, (digest.hexdigest(),)
    query = _request_query(call.query_string, token_param)
    as_sent = digest.copy()
    as_sent.update(call.query_string.encode())
    digest.update(query.encode())
    earlier = (as_sent.hexdigest(),) if query != call.query_string else ()
    return digest.hexdigest(), earlier


def _request_query(query_string: str, token_param: str | None) -> str:
    """The query string as the request's content: without the token parameter (the
    credential, not content: a retry after a token rotation carries the new one, and is the
    same request), its fields in the order of their names, each name's values in the order
    sent (a form reads the last). `?tk=T&x=1` and `?x=1&tk=U` are one request; `?x=1` and
    `?x=2` two, and so are two spellings of one value (`%41`, `A`), kept as sent."""
    pairs = [(unquote_plus(p.partition("=")[0]), p) for p in query_string.split("&") if p]
    kept = sorted((pair for pair in pairs if pair[0] != token_param), key=lambda pair: pair[0])
    return "&".join(raw for _, raw in kept)


def _memory_use(
    trigger: CompiledTrigger, replay: ReplayKey | None, now: float
) -> tuple[ReplayKey | None, str | None]:
    """(the replay key to look up in the signature memory before writing, the key to
    remember once written), each None when not needed (store/signature_memory.py).

    The memory keeps a message whose copy could still verify once its idempotency record
    (and first answer) is gone after 24 h, so that such a copy is refused, not written
    again. A scheme without a timestamp verifies a copy forever: every message is remembered
    and looked up. A timestamped one verifies a copy while its timestamp is within the
    tolerance, on either side of the clock: a message is remembered when that lasts past its
    record (timestamp + tolerance, plus a margin for the clocks of the gateway's processes,
    beyond 24 h from now: a timestamp ahead of the clock with a tolerance over 12 h), and
    every write of such a scheme (tolerance over 12 h less the margin) looks its key up.
    Standard Webhooks' 5 minutes never outlast a record. A position trigger's fix sent again
    is a duplicate anyway (stored once, by vehicle and time), but not one stamped with its
    receipt (`Fix.at_receipt`): the caller applies the memory to those alone."""
    scheme = trigger.hmac
    if replay is None or scheme is None:
        return None, None
    if replay.verifies_until is None:
        return replay, replay.key
    window = 2 * scheme.tolerance_seconds + CLOCK_MARGIN_SECONDS
    checked = replay if window > IDEMPOTENCY_RETENTION else None
    outlives = replay.verifies_until + CLOCK_MARGIN_SECONDS > now + IDEMPOTENCY_RETENTION
    return checked, (replay.key if outlives else None)


def _check_key(key: str) -> None:
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters")


def _issued_after_all(claims: TriggerClaims, doc: Doc) -> bool:
    """Whether the token was issued after every token `doc` holds (it holds one at least)."""
    issued = [t["issued_at"] for t in doc.get("tokens", ()) if t.get("issued_at")]
    return bool(issued) and claims.issued_at > max(issued)


def _live(doc: Doc, token_id: str, now: datetime) -> bool:
    """Whether the token id is among the trigger's live ones (rotated-out ones until their
    grace period ends)."""
    for token in doc.get("tokens", ()):
        if token["id"] == token_id:
            until = token.get("until")
            return until is None or until > now
    return False


def _unverified_subject(token: str) -> str | None:
    """The `sub` a JWT claims, read without checking it: only to pick which check to run."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > 4096:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    return subject if isinstance(subject, str) else None


def _all_of(query: Mapping[str, str], name: str) -> list[str]:
    """Every value of a query parameter (a multidict's; a plain mapping has one at most)."""
    getall = getattr(query, "getall", None)
    if getall is not None:
        return list(getall(name, ()))
    return [query[name]] if name in query else []
