"""Push through FCM HTTP v1: `POST {base}/v1/projects/{project}/messages:send`, authenticated
by the partner's Google service account (see `service_account.py`).

FCM's answers, as outcomes: 200 → sent (the message name is the provider id); an error whose
`FcmError` detail says `UNREGISTERED`, or an `INVALID_ARGUMENT` about the token (a token that is
no FCM token at all: cut, mistyped, an APNs token; `_token_refused`) → failed, and the device
token is marked for removal from the driver; 429 and 5xx → retry (Retry-After kept); other 4xx
(an `INVALID_ARGUMENT` about the message itself, a message over FCM's size limit,
`THIRD_PARTY_AUTH_ERROR`) → failed, the token kept. Data values are strings, as FCM requires.

Not signed with Standard Webhooks headers, unlike every request through an action (an SMS
included): a push goes to Google's API through the channel's partner, not an action, so no
action secret exists for it, and Google verifies no such signature. The request is
authenticated by the OAuth access token the service account obtains.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.actions.catalog import Partner
from gateway.actions.partner_calls import PartnerCalls
from gateway.clock import utcnow
from gateway.metrics import Metrics
from gateway.notify.messages import PushMessage, PushSettings, SendOutcome
from gateway.outbound.sender import BeforeSending, OutboundRequest, Outcome
from gateway.outbound.urls import build_url
from gateway.outbound.verdict import Verdict

SEND_PATH = "/v1/projects/{project}/messages:send"
_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_NOT_A_TOKEN = "registration token is not a valid fcm registration token"


def fcm_body(message: PushMessage, priority: str = "high") -> dict[str, Any]:
    body: dict[str, Any] = {
        "token": message.token,
        "notification": {"title": message.title, "body": message.body},
        "android": {"priority": priority},
    }
    if message.data:
        body["data"] = {str(k): str(v) for k, v in message.data.items()}
    return {"message": body}


class FcmSender:
    def __init__(self, calls: PartnerCalls, metrics: Metrics) -> None:
        self._calls = calls
        self._metrics = metrics

    async def send(
        self,
        settings: PushSettings,
        partner: Partner,
        message: PushMessage,
        *,
        before_sending: BeforeSending | None = None,
    ) -> SendOutcome:
        url = build_url(partner.base_url, SEND_PATH, {"project": settings.project_id})
        request = OutboundRequest(
            "POST",
            url,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            body=orjson.dumps(fcm_body(message, settings.priority)),
            timeout=partner.timeout,
            before_sending=before_sending,
        )
        outcome = await self._calls.send(partner, request)
        summary = {"method": "POST", "url": url, "title": message.title}
        result = _push_outcome(outcome, summary)
        self._metrics.observe_partner_call(partner.id, "notify", outcome, result.verdict)
        return result


def _push_outcome(outcome: Outcome, summary: dict[str, Any]) -> SendOutcome:
    """What one FCM call did; what it quotes of the answer (the sender masks the partner's
    credentials in it, whole, then it is cut)."""
    if (hold := outcome.hold) is not None:
        return SendOutcome.held(hold, summary)
    body = outcome.json_body if outcome.is_json and isinstance(outcome.json_body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else None
    codes = _fcm_error_codes(error)
    retry_after = outcome.retry_after(utcnow()) if outcome.verdict is Verdict.RETRY else None
    if outcome.verdict is Verdict.SUCCESS:
        detail, provider = "sent", body.get("name")
    elif outcome.status is None:
        detail, provider = outcome.message or "not sent", None
    else:
        if isinstance(message := (error or {}).get("message"), str) and message:
            reason = message
        else:
            reason = outcome.redacted_excerpt(200)
        detail, provider = f"FCM answered {outcome.status} {'/'.join(codes)}: {reason}", None
    unregistered = "UNREGISTERED" in codes or _token_refused(error, codes)
    verdict = Verdict.FAIL if unregistered else outcome.verdict
    if verdict is Verdict.GONE:
        verdict = Verdict.FAIL
    return SendOutcome(
        verdict,
        detail.strip(),
        outcome.status,
        provider if isinstance(provider, str) else None,
        retry_after,
        outcome.latency_ms,
        unregistered,
        summary,
        unknown=outcome.unanswered,
    )


def _token_refused(error: dict[str, Any] | None, codes: list[str]) -> bool:
    """An INVALID_ARGUMENT about the token itself, which FCM tells by its message: "The
    registration token is not a valid FCM registration token" (an `FcmError`
    INVALID_ARGUMENT, no field violation). The same code comes for the message's own faults
    (a `BadRequest` field violation on a data value, "Android message is too big" with an
    `FcmError` too): those cost no valid token."""
    if error is None or "INVALID_ARGUMENT" not in codes:
        return False
    said = error.get("message")
    return isinstance(said, str) and _NOT_A_TOKEN in said.lower()


def _fcm_error_codes(error: dict[str, Any] | None) -> list[str]:
    """FCM's own error codes (UNREGISTERED, QUOTA_EXCEEDED, ...), else the Google status."""
    if error is None:
        return []
    details = error.get("details")
    if not isinstance(details, list):
        details = []
    codes = [
        str(d.get("errorCode"))
        for d in details
        if isinstance(d, dict) and d.get("@type") == _FCM_ERROR and d.get("errorCode")
    ]
    status = error.get("status")
    return codes or ([status] if isinstance(status, str) else [])
