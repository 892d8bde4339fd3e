"""SMS through an HTTP provider: the channel's action (a partner endpoint, a path, and an
outbound mapping shaped like the provider's send API: `mappings/sms-zenvia.yaml`,
`mappings/sms-twilio.yaml`) applied to `{"message": {"to", "text", "from"}}`.

The request carries Standard Webhooks headers signed with the action's secrets
(`action_secrets.py`, as its proxy calls and schedules' pages): `webhook-id` is the delivery's
key (its id), the same on each retry and replay of the send (its `Idempotency-Key` too), and
`<action id>:<a fresh id>` for a send that has none (a channel's test send), as a proxy
call's. Headers only: the body goes as the mapping built it, and a provider that does not
check them ignores them.

A mapping whose headers say `Content-Type: application/x-www-form-urlencoded` (Twilio) gets
its flat body form-encoded; any other body goes as JSON (Zenvia). The action's own success
codes count; 429 and 5xx are retried, other 4xx fail (an invalid number, say); a 2xx whose
answer reports an error in a provider's usual shape fails too (`provider_error`).

The recipient's number reaches the mapping in E.164 (`+5511987654321`): a number written
without its country code is a Brazilian one, as people write it ("(11) 98765-4321",
"011 98765-4321", "0 21 11 98765-4321" with a carrier code), so the shipped mappings never send
it to another country; 12 digits or more without "+" are E.164 without its "+" (their own
country code); a number without its area code cannot be sent (the delivery fails).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson

from gateway.actions.catalog import Action, Partner
from gateway.actions.partner_calls import PartnerCalls
from gateway.actions.signing import SigningSecrets, with_signature
from gateway.clock import utcnow
from gateway.errors import InvalidPayload
from gateway.mapping import CompiledMapping
from gateway.metrics import Metrics
from gateway.notify.messages import SendOutcome, SmsMessage
from gateway.outbound.bodies import encode_body
from gateway.outbound.sender import BeforeSending, OutboundRequest, Outcome
from gateway.outbound.urls import build_url
from gateway.outbound.verdict import Verdict
from gateway.schemas.ids import e164, non_geographic
from gateway.store import new_id

IDEMPOTENCY_HEADER = "Idempotency-Key"


def sms_context(message: SmsMessage, sender_id: str, key: str | None = None) -> dict[str, Any]:
    try:
        to = e164(message.to)
    except ValueError as exc:
        raise InvalidPayload(str(exc)) from None
    if non_geographic(to):
        message_text = f"{message.to!r} is a toll-free or shared-cost number: it takes no SMS"
        raise InvalidPayload(message_text)
    fields = {"to": to, "text": message.text, "from": sender_id}
    return {"message": fields | ({"id": key} if key else {})}


def sms_request(
    action: Action,
    partner: Partner,
    mapping: CompiledMapping,
    message: SmsMessage,
    sender_id: str,
    key: str | None = None,
) -> OutboundRequest:
    """The provider request; InvalidPayload when the mapping cannot build it. `key` (stable
    per delivery) goes as `Idempotency-Key`, unless the mapping sets that header itself, and
    is `message.id` for a mapping that puts it in a field of the provider's."""
    context = sms_context(message, sender_id, key)
    parts = mapping.build_request(context, secrets=dict(partner.secrets))
    headers = {"Accept": "application/json", **parts.headers}
    if key and not any(name.lower() == "idempotency-key" for name in headers):
        headers[IDEMPOTENCY_HEADER] = key
    body = encode_body(headers, parts.body)
    url = build_url(partner.base_url, action.path, parts.path_params, parts.query)
    request = OutboundRequest(
        action.method,
        url,
        headers=headers,
        body=body,
        timeout=partner.timeout,
        secrets=tuple(partner.secrets.values()),
    )
    return action.reading_answers(request)  # its answer rules' headers and breaker verdict


def provider_error(body: Mapping[str, Any]) -> str | None:
    """What a provider's 2xx answer says went wrong, in the shapes SMS providers use, else
    None: Twilio's `error_code`/`error_message` or a `status` of failed/undelivered; an error
    document (`code` and `message`, Zenvia's; `error`/`errors`) that names no message id;
    Zenvia's legacy `sendSmsResponse` with a `statusCode` other than 00-03. The action's own
    `error` expression, when it has one, is asked first (`Action.verdict`)."""
    if body.get("error_code") not in (None, "", 0):
        return f"{body['error_code']}: {body.get('error_message') or body.get('status') or ''}"
    status = body.get("status")
    if isinstance(status, str) and status.lower() in ("failed", "undelivered", "rejected"):
        return f"status {status}"
    if not any(body.get(k) for k in ("id", "sid", "messageId")):
        for key in ("errors", "error"):
            if body.get(key):
                return _text(body[key])
        if body.get("code") not in (None, "", 0) and body.get("message"):
            return f"{body['code']}: {_text(body['message'])}"
    legacy = body.get("sendSmsResponse")
    if isinstance(legacy, dict):
        code = str(legacy.get("statusCode", ""))
        if code not in ("00", "01", "02", "03"):
            said = legacy.get("detailDescription") or legacy.get("statusDescription") or ""
            return f"{code} {legacy.get('detailCode') or ''} {said}".strip()
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class SmsSender:
    def __init__(self, calls: PartnerCalls, metrics: Metrics) -> None:
        self._calls = calls
        self._metrics = metrics

    async def send(
        self,
        action: Action,
        partner: Partner,
        mapping: CompiledMapping,
        message: SmsMessage,
        sender_id: str,
        *,
        signing: SigningSecrets,
        key: str | None = None,
        before_sending: BeforeSending | None = None,
    ) -> SendOutcome:
        """`signing`: the action's secrets (`Catalog.action_signer`); `key`: the delivery's,
        stable across its retries (its `webhook-id` and `Idempotency-Key`)."""
        try:
            request = sms_request(action, partner, mapping, message, sender_id, key)
        except InvalidPayload as exc:
            problems = "; ".join(p.message for p in exc.problems[:3])
            detail = f"cannot build the SMS request: {exc.detail}" + (
                f" ({problems})" if problems else ""
            )
            return SendOutcome(Verdict.FAIL, detail)
        msg_id = key or f"{action.id}:{new_id()}"
        request = with_signature(request, signing, msg_id, utcnow())
        outcome = await self._calls.send(
            partner, replace(request, before_sending=before_sending), action=action
        )
        summary = {"method": request.method, "url": request.url.split("?")[0], "to": message.to}
        result = _sms_outcome(action, outcome, summary)
        self._metrics.observe_partner_call(partner.id, "notify", outcome, result.verdict)
        return result


def _sms_outcome(action: Action, outcome: Outcome, summary: dict[str, Any]) -> SendOutcome:
    """What one provider call did; what it quotes of the answer redacted of the provider's
    credentials (a 401 may echo the key it refused: the sender masks them), whole, then cut."""
    if (hold := outcome.hold) is not None:
        return SendOutcome.held(hold, summary)
    verdict = action.verdict(outcome)
    body = outcome.json_body if outcome.is_json and isinstance(outcome.json_body, dict) else {}
    provider = next((body[k] for k in ("id", "sid", "messageId") if k in body), None)
    refused = provider_error(body) if verdict is Verdict.SUCCESS else None
    if refused is not None:  # a 2xx whose answer says the message was not taken
        verdict = Verdict.FAIL
        said = refused[:300]
        detail = f"provider answered {outcome.status} reporting an error: {said}"
    elif verdict is Verdict.SUCCESS:
        detail = "sent"
    elif (rule := action.matched_rule(outcome)) is not None:
        # The action's own rule decided it: named, with what its body expression found, else
        # the answer's start (as a delivery's `last_error`, docs/actions.md "Answer rules").
        said = rule.describe(outcome)
        if rule.body is None and (excerpt := " ".join(outcome.redacted_excerpt(300).split())):
            said += f": {excerpt}"
        detail = f"provider answered {outcome.status}{said}"
    elif outcome.status is None:
        detail = outcome.message or "not sent"
    else:
        said = outcome.redacted_excerpt(300)
        detail = f"provider answered {outcome.status}: {said}"
    return SendOutcome(
        Verdict.FAIL if verdict is Verdict.GONE else verdict,
        detail,
        outcome.status,
        str(provider) if provider is not None else None,
        outcome.retry_after(utcnow()) if verdict is Verdict.RETRY else None,
        outcome.latency_ms,
        request=summary,
        unknown=outcome.unanswered,
    )
