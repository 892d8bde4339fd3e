"""Use case: send one rendered notification through its channel, and act on what came back.

    Notifier.send(tenant, Notification) -> SendOutcome

A `Notification` is what a delivery will store (phase B: flows render it once, the delivery
worker sends and retries it): the channel, one recipient, the rendered parts. Everything that
can go wrong with the notification is an outcome: a deleted channel, partner, action or
mapping fails it with a message saying which. The database failing a read is not the
notification's fault: StoreUnavailable passes, and the delivery worker hands it back. A
message whose parts do not fit the channel (rendered from a template of another type) fails,
saying so. When FCM says a device token is UNREGISTERED, the token is removed from the driver
it came from; a removal that cannot be written is noted in the outcome and never changes it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from gateway.actions.catalog import Catalog, Partner
from gateway.auth.secretbox import SecretBoxError
from gateway.entities import EntityService, Origin
from gateway.errors import GatewayError, NotFound, StoreUnavailable
from gateway.mapping import CompiledMapping
from gateway.notify.channels import ChannelService
from gateway.notify.email import EmailSender
from gateway.notify.messages import Channel, EmailMessage, PushMessage, SendOutcome, SmsMessage
from gateway.notify.push import FcmSender
from gateway.notify.sms import SmsSender
from gateway.notify.templating import REQUIRED
from gateway.outbound.sender import BeforeSending
from gateway.outbound.verdict import Verdict

log = logging.getLogger(__name__)


class MappingSource(Protocol):
    async def active(self, tenant: str, name: str) -> CompiledMapping: ...


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str  # an e-mail address, a phone number or a device token
    name: str | None = None
    driver_id: str | None = None  # a driver's: an UNREGISTERED token is removed from it
    language: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("address", "name", "driver_id", "language")}


@dataclass(frozen=True, slots=True)
class Notification:
    channel: str  # a channel id or name
    recipient: Recipient
    parts: Mapping[str, str]  # subject/text/html, title/body, or text
    data: Mapping[str, str] = field(default_factory=dict)  # push data
    message_id: str | None = None  # stable across retries (e-mail Message-ID)
    # Stable per delivery (its id): an SMS provider's idempotency key, so a send retried after
    # a timeout whose request did arrive is one the provider can drop (sms.py).
    key: str | None = None
    # Awaited right before it goes out (a delivery worker's lease check: its LeaseLost passes
    # to the worker, nothing sent); none for a channel's test send.
    before_sending: BeforeSending | None = field(default=None, repr=False)
    # The flow run that queued it (`RunRef.chain`): on the driver's write when FCM refuses
    # the token, so that the loop guard counts it.
    chain: Mapping[str, Any] = field(default_factory=dict)
    # Someone waits on the answer (an admin's test send, `testing.py`): the relay's reply to
    # the message's end gets the channel's `timeout_seconds`, not its `data_timeout_seconds`
    # (up to 10 minutes, for a delivery worker that can wait).
    waited_on: bool = False


class Notifier:
    def __init__(
        self,
        channels: ChannelService,
        catalog: Catalog,
        mappings: MappingSource,
        entities: EntityService,
        *,
        email: EmailSender,
        push: FcmSender,
        sms: SmsSender,
    ) -> None:
        self._channels = channels
        self._catalog = catalog
        self._mappings = mappings
        self._entities = entities
        self._email = email
        self._push = push
        self._sms = sms

    async def send(self, tenant: str, notification: Notification) -> SendOutcome:
        try:
            channel = await self._channels.ready(tenant, notification.channel)
            outcome = await self._dispatch(tenant, channel, notification)
        except NotFound as exc:
            return SendOutcome(Verdict.FAIL, f"{exc.detail}: it was deleted")
        except (StoreUnavailable, SecretBoxError):
            # The database's failure, or a stored secret that does not open (the channel's
            # SMTP password, its partner's credentials): not the notification's. The caller
            # judges it as every sender does (`keys.StoredSecrets`): the worker hands it back
            # or fails it as damaged, a test send answers the problem.
            raise
        except GatewayError as exc:
            return SendOutcome(Verdict.FAIL, exc.detail)
        if outcome.unregistered and notification.recipient.driver_id:
            outcome = replace(
                outcome,
                detail=outcome.detail + await self._forget_token(tenant, channel, notification),
            )
        return outcome

    async def _dispatch(
        self, tenant: str, channel: Channel, notification: Notification
    ) -> SendOutcome:
        parts, to = notification.parts, notification.recipient.address
        missing = [p for p in REQUIRED[channel.type] if not isinstance(parts.get(p), str)]
        if missing:  # rendered for another channel type (a template retyped since)
            return SendOutcome(
                Verdict.FAIL,
                f"the message does not fit channel {channel.name} ({channel.type}): it has no "
                f"{', '.join(missing)} (it has {', '.join(sorted(parts)) or 'nothing'}); was "
                "its template changed to another channel type?",
            )
        if channel.email is not None:
            message = EmailMessage(
                (to,), parts["subject"], parts["text"], parts.get("html"), notification.message_id
            )
            settings = channel.email
            if notification.waited_on:
                settings = replace(
                    settings, data_timeout=min(settings.data_timeout, settings.timeout)
                )
            return await self._email.send(
                settings, message, before_sending=notification.before_sending
            )
        if channel.push is not None:
            partner = await self._catalog.partner(tenant, channel.push.partner_id)
            if (refused := _refused(partner)) is not None:
                return refused
            push = PushMessage(to, parts["title"], parts["body"], notification.data)
            return await self._push.send(
                channel.push, partner, push, before_sending=notification.before_sending
            )
        assert channel.sms is not None
        action = await self._catalog.action(tenant, channel.sms.action_id)
        partner = await self._catalog.partner(tenant, action.partner_id)
        if (refused := _refused(partner)) is not None:
            return refused
        if action.request_mapping is None:
            return SendOutcome(Verdict.FAIL, f"action {action.name} has no request mapping")
        mapping = await self._mappings.active(tenant, action.request_mapping)
        # Signed as every request through an action (an action without a secret gets one).
        signing = await self._catalog.action_signer(tenant, action.id)
        sms = SmsMessage(to, parts["text"])
        return await self._sms.send(
            action,
            partner,
            mapping,
            sms,
            channel.sms.sender,
            signing=signing,
            key=notification.key,
            before_sending=notification.before_sending,
        )

    async def _forget_token(self, tenant: str, channel: Channel, notification: Notification) -> str:
        """The token out of the driver's list (`EntityService.remove_item`); what became of it,
        for the outcome's detail. Housekeeping after a send FCM answered: a removal that
        cannot be written now (the database, a relay backlog, writers contending) leaves the
        send's outcome as it is, and is tried again at the token's next UNREGISTERED answer
        (the token stays with the driver until then)."""
        recipient = notification.recipient
        assert recipient.driver_id is not None
        extra = {"reason": "fcm_unregistered", **notification.chain}
        origin = Origin("notification", channel.id, extra)
        try:
            written = await self._entities.remove_item(
                tenant, "driver", recipient.driver_id, "push_tokens", recipient.address, origin
            )
        except NotFound:
            return ""
        except GatewayError as exc:
            log.warning(
                "token not removed from driver %s (tenant %s): %s",
                recipient.driver_id,
                tenant,
                exc.detail,
            )
            return f"; token not removed from driver: {exc.detail}"
        return "; token removed from driver" if written is not None else ""


def _refused(partner: Partner) -> SendOutcome | None:
    """A disabled partner is not called until it is enabled again (as by `invoke`)."""
    refusal = partner.refusal()
    if refusal is None or refusal.hold is None:
        return None
    hold = refusal.hold
    return SendOutcome(
        Verdict.RETRY,
        hold.describe(),
        retry_after=hold.seconds,
        request={"partner_id": partner.id},
        hold=hold,
        waits_for=partner.id,
    )
