"""Partners, actions and subscriptions as ready objects: credentials opened and compiled,
limits turned into guard settings, filters compiled. Cached briefly per process.

The proxy's hot path reads no database document it has seen in the last `ttl` seconds.
Writes through this process take effect here at once (`forget`); other processes see a
change within `ttl` seconds. Compiled credentials are kept across refreshes while the
partner's `rev` is unchanged, so an OAuth2 token survives a cache refresh.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson

from gateway.actions.action_secrets import ActionSecrets
from gateway.actions.answer_rules import (
    AnswerRule,
    Ruling,
    compile_rules,
    kept_headers,
    rule_on,
    status_listed,
)
from gateway.actions.flow_secrets import FlowSecrets
from gateway.actions.signing import SigningSecrets, open_live
from gateway.actions.xml_body import XmlBody, compile_xml_body
from gateway.auth.secretbox import SecretBox, SecretBoxError
from gateway.clock import utcnow
from gateway.errors import FieldProblem, InvalidPayload, NotFound
from gateway.mapping import CompiledMapping
from gateway.mapping.expressions import Getter, Run, compile_expression, is_truthy
from gateway.mapping.model import EvalError, LimitExceeded
from gateway.mapping.secret_marks import SecretMarks
from gateway.metrics import Metrics
from gateway.notify.sandbox import off_loop
from gateway.outbound.bodies import body_codec, encode_body
from gateway.outbound.breaker import BreakerState, GuardSettings, PartnerGuards
from gateway.outbound.partner_auth import PartnerAuth, build_auth
from gateway.outbound.sender import OutboundRequest, Outcome
from gateway.outbound.urls import build_url
from gateway.outbound.verdict import Verdict
from gateway.store import Doc, Store
from gateway.store.client import canonical_ref

_T = TypeVar("_T")

DEFAULT_TTL_SECONDS = 2.0
# An action's retry schedule unless it sets its own (see `delivery/retry.py`): the delays of
# the retries, in seconds, after the first attempt (made at once) failed. SPEC §5: retries
# immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h. Nine attempts in all, ~27.5 h.
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
_MAX_CACHED = 10_000
_MAX_PROBE_WAIT = 3600  # seconds; the same cap as a partner's Retry-After on deliveries


def auth_context(partner_id: str) -> str:
    return f"partner:{partner_id}:auth"


def secrets_context(partner_id: str) -> str:
    return f"partner:{partner_id}:secrets"


def subscription_context(subscription_id: str) -> str:
    return f"subscription:{subscription_id}:secret"


@dataclass(frozen=True, slots=True)
class Partner:
    id: str
    tenant: str
    name: str
    base_url: str
    timeout: float
    status: str  # "active" | "disabled"
    guard: GuardSettings
    auth: PartnerAuth = field(repr=False)
    secrets: Mapping[str, str] = field(repr=False)  # for mappings' {secret: name}
    disable_after: timedelta | None
    failing_since: datetime | None
    probe_at: datetime | None = None  # a disabled partner's next probe (far away: an admin's)

    @property
    def disabled(self) -> bool:
        return self.status == "disabled"

    def refusal(self) -> Outcome | None:
        """None when the partner may be called. A disabled one is not called until it is
        enabled again: this is the outcome of a call to it, never sent, held (`Outcome.hold`,
        `partner_disabled`) until its next probe, within [1 s, 1 h] (an admin disabled it:
        no probe is planned, and an hour is as good a guess as any)."""
        if not self.disabled:
            return None
        message = f"partner {self.name} is disabled; it is not called until it is enabled again"
        return Outcome(error="partner_disabled", message=message, retry_in=self.seconds_to_probe())

    def seconds_to_probe(self) -> int:
        if self.probe_at is None:
            return _MAX_PROBE_WAIT
        probe_at = self.probe_at
        if probe_at.tzinfo is None:  # as read from the database
            probe_at = probe_at.replace(tzinfo=UTC)
        try:
            seconds = (probe_at - utcnow()).total_seconds()
        except OverflowError:
            return _MAX_PROBE_WAIT
        return min(max(math.ceil(seconds), 1), _MAX_PROBE_WAIT)


@dataclass(frozen=True, slots=True)
class Action:
    id: str
    tenant: str
    name: str
    partner_id: str
    method: str
    path: str
    mode: str  # "proxy" | "deliver"
    request_mapping: str | None
    response_mapping: str | None
    success: tuple[int | str, ...]  # empty: any 2xx
    retry_schedule: tuple[float, ...]
    ordered: bool
    write_back: bool
    read_only: bool = False  # a POST that only reads (JSON-RPC): schedules may run it
    xml_body: XmlBody | None = None  # the body is this XML (SOAP) template, not JSON
    # On a success answer: a non-empty value is the partner refusing in a 2xx.
    error: Getter | None = field(default=None, repr=False, compare=False)
    # Which answers are retried and which are final, before SPEC §5's defaults.
    answer_rules: tuple[AnswerRule, ...] = ()

    @property
    def reads(self) -> bool:
        """Whether a schedule may run it: a GET, or an action marked read-only."""
        return self.method == "GET" or self.read_only

    def verdict(self, outcome: Outcome) -> Verdict:
        """The sender's verdict, with the action's own idea of success (e.g. [201], or 404
        for an idempotent DELETE) when it has one, and its `error` expression: a 2xx whose
        answer reports an error is a failure (not retried: the partner refused it), unless
        the error is the partner's throttle (`verdict.throttled`: MyGeotab answers its
        `OverLimitException` with HTTP 200), which is a 429's: retried after its wait. An
        answer rule that matches decides before all of these (`rule_verdict`)."""
        if (ruled := self.rule_verdict(outcome)) is not None:
            return ruled
        verdict = outcome.verdict
        status = outcome.status
        if status is not None and self.success:
            if status_listed(status, self.success):
                verdict = Verdict.SUCCESS
            elif verdict is Verdict.SUCCESS:
                return Verdict.FAIL
        if verdict is Verdict.SUCCESS:
            reported = self.reported_error(outcome)
            if outcome.throttled(reported=reported is not None):
                return Verdict.RETRY
            if reported or self.unchecked(outcome):
                return Verdict.FAIL
        return verdict

    def reading_answers(self, request: OutboundRequest) -> OutboundRequest:
        """`request` reading its answer as the action's rules do: the headers they read kept
        (`kept_headers`) besides those the request already keeps, and the sender's breaker
        judging it by them (`rule_verdict`: a `fail` is an answer, not an outage). Every
        request built for the action passes here (`build_request`, an SMS channel's
        `sms_request`)."""
        if not self.answer_rules:
            return request
        wanted = (*request.answer_headers, *kept_headers(self.answer_rules))
        return replace(request, answer_headers=tuple(dict.fromkeys(wanted)), judge=self.ruling)

    def ruling(self, outcome: Outcome) -> Ruling:
        """What the action's answer rules make of the answer: the sender's judgement, made
        once as it came (`rule_on`)."""
        return rule_on(self.answer_rules, outcome)

    def matched_rule(self, outcome: Outcome) -> AnswerRule | None:
        """The first of the action's answer rules that matches the answer, if any."""
        return self.ruling(outcome).rule if self.answer_rules else None

    def rule_verdict(self, outcome: Outcome) -> Verdict | None:
        """`retry` or `fail` when an answer rule decides the answer, else None."""
        return self.ruling(outcome).verdict if self.answer_rules else None

    def unchecked(self, outcome: Outcome) -> bool:
        """Whether a 2xx answer could not be read as the action reads it: its body unusable
        (not the JSON it claims, nested too deep, too large, cut short, its head refused)
        while the `error` expression or an answer rule for its status must read it, or its
        head refused while such a rule reads a header (`AnswerRule.blind_to`). The partner
        may have refused or throttled inside it, so it is no success (not retried: it may
        have taken it)."""
        if outcome.error is None or not 200 <= (outcome.status or 0) < 300:
            return False
        return self.error is not None or any(r.blind_to(outcome) for r in self.answer_rules)

    def reported_error(self, outcome: Outcome) -> str | None:
        """What the `error` expression finds in a success answer (short text: OneSignal's
        `errors`, a SOAP `<sucesso>false</sucesso>` read by `sucesso == 'false'`), else None.
        An expression that fails on the answer (a function given null) finds nothing."""
        if self.error is None or not outcome.readable or outcome.status is None:
            return None
        if not 200 <= outcome.status < 300:
            return None
        try:
            found = self.error(outcome.json_body, Run())
        except (EvalError, LimitExceeded):
            return None
        if not is_truthy(found):
            return None
        text = found if isinstance(found, str) else orjson.dumps(found, default=str).decode()
        return text[:200]


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    tenant: str
    action_id: str
    status: str
    secrets: tuple[tuple[str, datetime | None], ...] = field(repr=False)  # newest first

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret, plus the previous one during its rotation grace period."""
        return [s for s, expires in self.secrets if expires is None or expires > now]


class Catalog:
    def __init__(
        self,
        store: Store,
        box: SecretBox,
        metrics: Metrics,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._box = box
        self._metrics = metrics
        self._ttl = ttl
        # Monotonic seconds: the cache's, and the partners' credentials' (a token's expiry, a
        # token endpoint's wait). Read at each call: tests move time by replacing it.
        self.clock = clock
        self._cache: dict[tuple[str, str, str], tuple[float, Any]] = {}
        # Opened credentials by partner, compiled XML bodies and answer rules by action, by
        # revision: the least recently used go past `_MAX_CACHED` (a backstop: a partner
        # deleted through another process goes at the next housekeeping pass,
        # `PartnerUseCases` `forget_deleted_partners`).
        self._auth: OrderedDict[str, tuple[int, PartnerAuth]] = OrderedDict()
        self._xml: OrderedDict[str, tuple[int, XmlBody]] = OrderedDict()
        self._rules: OrderedDict[str, tuple[int, tuple[AnswerRule, ...]]] = OrderedDict()
        self.flow_secrets = FlowSecrets(store, box)
        self.action_secrets = ActionSecrets(store, box)

    def _now(self) -> float:
        return self.clock()

    def forget(self, resource_id: str) -> None:
        """A resource changed through this process: drop it from every cache."""
        resource_id = canonical_ref(resource_id)
        for key in [k for k in self._cache if k[2] == resource_id]:
            del self._cache[key]
        self._auth.pop(resource_id, None)
        self._xml.pop(resource_id, None)
        self._rules.pop(resource_id, None)

    def drop_partner(self, partner_id: str) -> None:
        """A partner deleted (through this process, or found deleted by another,
        `PartnerUseCases.forget_deleted_partners`): out of every cache, and its metric series
        (calls, latency, OAuth) out of /metrics, their place another's."""
        self.forget(partner_id)
        self._metrics.forget("partner", canonical_ref(partner_id))

    def partners_held(self) -> set[str]:
        """The partners this process keeps something of: opened credentials, or a place among
        the `partner` label's with series of their own (not one already forgotten)."""
        return {*self._auth, *self._metrics.kept("partner")}

    async def partner(self, tenant: str, partner_id: str) -> Partner:
        partner: Partner = await self._cached("partner", tenant, partner_id, self._load_partner)
        return partner

    async def action(self, tenant: str, action_id: str) -> Action:
        action: Action = await self._cached("action", tenant, action_id, self._load_action)
        return action

    async def subscription(self, tenant: str, subscription_id: str) -> Subscription:
        sub: Subscription = await self._cached(
            "subscription", tenant, subscription_id, self._load_subscription
        )
        return sub

    async def flow_signer(self, tenant: str, flow: str) -> SigningSecrets:
        """The secrets a flow's `call` deliveries are signed with (`flow_secrets.py`)."""
        signer: SigningSecrets = await self._cached("flow", tenant, flow, self._load_flow_signer)
        return signer

    async def _load_flow_signer(self, tenant: str, flow: str) -> SigningSecrets:
        return await self.flow_secrets.signing(tenant, flow, utcnow())

    async def action_signer(self, tenant: str, action_id: str) -> SigningSecrets:
        """The secrets a proxy call or a schedule's page through the action is signed with
        (`action_secrets.py`)."""
        signer: SigningSecrets = await self._cached(
            "action_signer", tenant, action_id, self._load_action_signer
        )
        return signer

    async def _load_action_signer(self, tenant: str, action_id: str) -> SigningSecrets:
        return await self.action_secrets.signing(tenant, action_id, utcnow())

    async def _cached(self, kind: str, tenant: str, rid: str, load: Any) -> Any:
        # Cached by the id as stored: a URL may spell it in upper case, and `forget` must
        # find the entry whichever spelling loaded it.
        key = (kind, tenant, canonical_ref(rid))
        hit = self._cache.get(key)
        now = self.clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await load(tenant, rid)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (now + self._ttl, value)
        return value

    async def _load_partner(self, tenant: str, partner_id: str) -> Partner:
        doc = await self._store.partners.get(tenant, partner_id)
        if doc is None:
            raise NotFound(f"no partner {partner_id!r}")
        return self.compile_partner(doc)

    def compile_partner(self, doc: Doc) -> Partner:
        pid = str(doc["_id"])
        cached = self._auth.get(pid)
        whose = f"partner {doc['name']!r} ({pid})"
        if cached is not None and cached[0] == doc["rev"]:
            auth = cached[1]
            self._auth.move_to_end(pid)
        else:
            try:
                opened_auth = self._box.open_json(doc["auth_sealed"], context=auth_context(pid))
            except SecretBoxError as exc:
                raise exc.naming(f"{whose}: its stored credentials (`auth`)") from None
            auth = build_auth(
                opened_auth,
                on_refresh=self._metrics.counts(self._metrics.oauth_refreshes, "partner", pid),
                on_refused=self._metrics.counts(self._metrics.oauth_refusals, "partner", pid),
                clock=self._now,
            )
            _keep(self._auth, pid, (doc["rev"], auth))
        secrets: dict[str, str] = {}
        if doc.get("secrets_sealed"):
            try:
                opened = self._box.open_json(doc["secrets_sealed"], context=secrets_context(pid))
            except SecretBoxError as exc:
                raise exc.naming(f"{whose}: its stored `secrets`") from None
            secrets = {str(k): str(v) for k, v in opened.items()}
        rate = doc.get("rate_limit") or {}
        timeout = float(doc["timeout_seconds"])
        hours = doc.get("disable_after_hours")
        return Partner(
            id=pid,
            tenant=doc["tenant"],
            name=doc["name"],
            base_url=doc["base_url"],
            timeout=timeout,
            status=doc.get("status", "active"),
            guard=GuardSettings(
                max_concurrency=int(doc["max_concurrency"]),
                rate_per_second=rate.get("per_second"),
                burst=float(rate.get("burst", 1)),
                max_wait=min(5.0, timeout),
                tenant=doc["tenant"],
            ),
            auth=auth,
            secrets=secrets,
            disable_after=timedelta(hours=hours) if hours else None,
            failing_since=doc.get("failing_since"),
            probe_at=doc.get("probe_at"),
        )

    async def _load_action(self, tenant: str, action_id: str) -> Action:
        doc = await self._store.actions.get(tenant, action_id)
        if doc is None:
            raise NotFound(f"no action {action_id!r}")
        return Action(
            id=str(doc["_id"]),
            tenant=tenant,
            name=doc["name"],
            partner_id=doc["partner_id"],
            method=doc["method"],
            path=doc["path"],
            mode=doc["mode"],
            request_mapping=doc.get("request_mapping"),
            response_mapping=doc.get("response_mapping"),
            success=tuple(doc.get("success") or ()),
            retry_schedule=_schedule(doc.get("retry_schedule")),
            ordered=bool(doc.get("ordered")),
            write_back=bool(doc.get("write_back")),
            read_only=bool(doc.get("read_only")),
            xml_body=self._xml_body(doc),
            error=compile_expression(doc["error"])[0] if doc.get("error") else None,
            answer_rules=self._answer_rules(doc),
        )

    def _answer_rules(self, doc: Doc) -> tuple[AnswerRule, ...]:
        """The action's answer rules, compiled once per revision (what does not compile is
        logged once, not at each load)."""
        if not doc.get("answer_rules"):
            return ()
        aid = str(doc["_id"])
        cached = self._rules.get(aid)
        if cached is not None and cached[0] == doc["rev"]:
            self._rules.move_to_end(aid)
            return cached[1]
        rules = compile_rules(doc["answer_rules"], f"action {doc['name']!r} ({aid})")
        _keep(self._rules, aid, (doc["rev"], rules))
        return rules

    def _xml_body(self, doc: Doc) -> XmlBody | None:
        """The action's XML template, compiled once per revision (it was checked when saved)."""
        if not doc.get("xml_body"):
            return None
        aid = str(doc["_id"])
        cached = self._xml.get(aid)
        if cached is not None and cached[0] == doc["rev"]:
            self._xml.move_to_end(aid)
            return cached[1]
        problems: list[FieldProblem] = []
        mapped = bool(doc.get("request_mapping"))
        body = compile_xml_body(
            {**doc["xml_body"], "sample": None}, problems, mapped_charset=mapped
        )
        if body is None:
            raise InvalidPayload(f"action {doc['name']!r} has an unusable xml_body", problems)
        _keep(self._xml, aid, (doc["rev"], body))
        return body

    async def _load_subscription(self, tenant: str, subscription_id: str) -> Subscription:
        doc = await self._store.subscriptions.get(tenant, subscription_id)
        if doc is None:
            raise NotFound(f"no subscription {subscription_id!r}")
        context = subscription_context(subscription_id)
        try:  # the live secrets only: a lost rotated-out one skipped (`open_live`)
            secrets = open_live(self._box, doc["secrets"], context, utcnow()).secrets
        except SecretBoxError as exc:
            raise exc.naming(f"subscription {subscription_id}: its stored signing secret") from None
        return Subscription(
            id=subscription_id,
            tenant=tenant,
            action_id=doc["action_id"],
            status=doc["status"],
            secrets=secrets,
        )


def _keep(kept: OrderedDict[str, _T], key: str, value: _T) -> None:
    """`kept[key] = value`, the most recently used; the least recently used past
    `_MAX_CACHED` go."""
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > _MAX_CACHED:
        kept.popitem(last=False)


async def build_request(
    action: Action,
    partner: Partner,
    mapping: CompiledMapping | None,
    context: Mapping[str, Any],
    *,
    default_body: Any = None,
    path_values: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    marks: SecretMarks | None = None,
) -> tuple[OutboundRequest, bytes | None]:
    """The partner request for an action: the request mapping on `context`, or, without
    one, `default_body` as JSON and path parameters taken from `path_values`. An action with
    an `xml_body` sends its template rendered on `context` plus `body` (that JSON value) and
    `secrets` (the partner's) instead, rendered on a render thread (`off_loop`: a template
    that spends its whole budget holds no other request). Returns the request and its exact
    body bytes (what a signature covers). `headers` (a schedule's, without a mapping) are
    sent too; a body goes as JSON, or form-encoded when the headers say
    `application/x-www-form-urlencoded`.

    The mapping and the template read the partner's secrets as marks (`marks`: those the
    caller's own mapping used, else new ones), put in their place only once the request is
    built, so nothing they do depends on a secret's value. A problem raised (InvalidPayload)
    shows a mark as `<secret:name>` and never quotes a secret: every problem is found on the
    marks (`_revealed`); nothing is masked in what the admin wrote, which would tell which of
    their words is a secret. The build never reads the partner's credentials (`auth`)."""
    marks = marks if marks is not None else SecretMarks(partner.secrets)
    try:
        return await _build_request(
            action, partner, mapping, context, default_body, path_values, headers, timeout, marks
        )
    except InvalidPayload as exc:
        raise exc.restated(problems=marks.shown(exc.problems)) from None


async def _build_request(
    action: Action,
    partner: Partner,
    mapping: CompiledMapping | None,
    context: Mapping[str, Any],
    default_body: Any,
    path_values: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
    marks: SecretMarks,
) -> tuple[OutboundRequest, bytes | None]:
    xml = action.xml_body
    sent: dict[str, str] = {"Accept": xml.accept() if xml else "application/json"}
    if mapping is not None:
        parts = mapping.build_request(context, secrets=marks)
        params: Mapping[str, Any] = parts.path_params
        query: Mapping[str, Any] = parts.query
        sent.update(parts.headers)
        body_value = parts.body
    else:
        params, query, body_value = path_values or {}, {}, default_body
        sent.update(headers or {})
    sent = marks.reveal(sent)
    body = None
    if xml is not None and action.method != "GET":
        template_context = {**context, "body": body_value or {}, "secrets": marks.marks}
        sent = {**xml.headers(), **sent}  # the mapping's Content-Type (and charset) wins
        body = await off_loop(xml.render, template_context, marks, body_codec(sent))
    elif body_value is not None and action.method != "GET":
        body = _revealed(lambda value: encode_body(sent, value), marks, body_value)
    url = _revealed(build_url, marks, partner.base_url, action.path, params, query)
    request = OutboundRequest(
        action.method,
        url,
        headers=sent,
        body=body,
        timeout=partner.timeout if timeout is None else timeout,
        secrets=tuple(partner.secrets.values()),
    )
    return action.reading_answers(request), body


def _revealed(build: Callable[..., _T], marks: SecretMarks, *args: Any) -> _T:
    """`build(*args)` with the marks in `args` revealed. A problem it raises would quote the
    secrets: it is raised from the marks instead (the same problem, a mark in place of each
    secret), or, when the marks pass and only a secret's own value does not (a path segment
    "" or ".."), as one that names no value."""
    revealed = [marks.reveal(arg) for arg in args]
    try:
        return build(*revealed)
    except InvalidPayload:
        build(*args)  # raises the problem on the marks
        raise InvalidPayload(
            "a secret cannot be sent where the mapping puts it",
            [FieldProblem("", "a secret's value is not usable there", "secret")],
        ) from None


def _schedule(stored: list[float] | None) -> tuple[float, ...]:
    """An action's retry delays: its own (`[]`: no retry), else the default."""
    return DEFAULT_SCHEDULE if stored is None else tuple(stored)


def partner_guards(metrics: Metrics, *, share: int | None = None) -> PartnerGuards:
    """The process's partner guards, reporting every breaker transition as a gauge: an open
    breaker is read at the end of its cooldown and at each scrape, so that its turn to
    half_open is reported though no call came (`PartnerGuards.states`). `share`: the most
    requests one partner may have in flight, whatever its `max_concurrency`."""

    def report(partner_id: str, state: BreakerState) -> None:
        metrics.report_partner_circuit(
            partner_id, state.value, [each.value for each in BreakerState]
        )

    def drop(partner_id: str) -> None:
        metrics.forget_partner_circuit(partner_id, [each.value for each in BreakerState])

    guards = PartnerGuards(on_breaker_change=report, on_discard=drop, share=share)
    metrics.before_scrape(guards.states)
    return guards
