"""Plain types of the notify lane: channels ready to use, messages, and what a send did."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.outbound.sender import Hold
from gateway.outbound.verdict import Verdict

Security = Literal["none", "starttls", "tls"]


@dataclass(frozen=True, slots=True)
class EmailSettings:
    host: str
    port: int
    security: Security
    sender: str  # the From header, e.g. "Frota Acme <alertas@acme.com.br>"
    reply_to: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 15.0  # seconds for each SMTP reply but the one to the end of DATA
    # Seconds for the DATA exchange, the relay's reply to the message's end above all (RFC
    # 5321 §4.5.3.2.6: 10 minutes; a relay scans the message before it answers).
    data_timeout: float = 600.0
    # `security: none` with a login: the password may go without TLS (the channel says so)
    cleartext_auth: bool = False
    # The name said in EHLO (a fully-qualified domain name or an address literal); None: the
    # sender's default (`email.helo_name`)
    helo: str | None = None
    ca_certificate: str | None = (
        None  # PEM: trust only this CA (a private relay), else the system's
    )


@dataclass(frozen=True, slots=True)
class PushSettings:
    partner_id: str  # a partner with auth google_service_account, base URL FCM's
    project_id: str
    priority: Literal["high", "normal"] = "high"


@dataclass(frozen=True, slots=True)
class SmsSettings:
    action_id: str  # a POST action with the provider mapping (Zenvia-, Twilio-shaped)
    sender: str  # the "from": a short code, a sender id or an E.164 number


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    tenant: str
    name: str
    type: Literal["email", "push", "sms"]
    email: EmailSettings | None = None
    push: PushSettings | None = None
    sms: SmsSettings | None = None


@dataclass(frozen=True, slots=True)
class EmailMessage:
    to: tuple[str, ...]
    subject: str
    text: str
    html: str | None = None
    message_id: str | None = None  # stable per notification, so receivers can drop a repeat


@dataclass(frozen=True, slots=True)
class PushMessage:
    token: str
    title: str
    body: str
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SmsMessage:
    to: str
    text: str


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What one send did. `verdict` is the delivery worker's: success, retry later, or fail
    for good. `code` is the HTTP status or SMTP reply code when there was one."""

    verdict: Verdict
    detail: str
    code: int | None = None
    provider_id: str | None = None  # the provider's message id
    retry_after: float | None = None
    latency_ms: float = 0.0
    unregistered: bool = False  # push: the device token no longer exists
    request: Mapping[str, Any] = field(default_factory=dict)  # a summary, no credentials
    # Not sent: our own guard held the request back for a while (an open circuit, a rate
    # limit, a token endpoint's wait). No attempt: the delivery waits `hold.seconds`.
    hold: Hold | None = None
    # Not sent because this partner (the push channel's, the SMS action's) is disabled: the
    # delivery waits for it like the partner's other deliveries.
    waits_for: str | None = None
    # Handed over, and no answer came (a timeout, or the connection lost, once the e-mail's
    # DATA command went out; a timeout once the HTTP request was sent): it may have arrived.
    # Retried (at least once), and the alert counts as sent: its cooldown note is kept.
    unknown: bool = False

    @classmethod
    def held(cls, hold: Hold, request: Mapping[str, Any]) -> SendOutcome:
        return cls(
            Verdict.RETRY, hold.describe(), retry_after=hold.seconds, request=request, hold=hold
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": self.verdict.value,
            "detail": self.detail,
            "code": self.code,
            "provider_id": self.provider_id,
            "retry_after": self.retry_after,
            "latency_ms": self.latency_ms,
            "unregistered": self.unregistered,
            "request": dict(self.request),
        }
