"""A `notify` step's messages: its channel and template as they are now, its recipients, and
each recipient's message rendered in their language. Shared by the dry run (which shows them)
and the runner (which stores each as a notification delivery).

A recipient whose message fails to render carries the failure (`error`), the others go on; a
recipient without the contact the channel needs is `unreachable` (see `recipients.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import NotFound
from gateway.flows.context import evaluate
from gateway.flows.model import NotifySpec
from gateway.flows.recipients import RecipientResolver
from gateway.flows.references import StepFailed
from gateway.notify.channels import ChannelService
from gateway.notify.messages import Channel
from gateway.notify.notifier import Recipient
from gateway.notify.sandbox import off_loop
from gateway.notify.templates import TemplateService
from gateway.notify.templating import CompiledTemplate, Rendered, RenderFailed


@dataclass(frozen=True, slots=True)
class Message:
    recipient: Recipient
    rendered: Rendered | None
    error: RenderFailed | None = None


@dataclass(frozen=True, slots=True)
class Composed:
    channel: Channel
    template: CompiledTemplate
    messages: list[Message]
    unreachable: list[dict[str, Any]]


class MessageComposer:
    def __init__(
        self,
        channels: ChannelService,
        templates: TemplateService,
        recipients: RecipientResolver,
    ) -> None:
        self._channels = channels
        self._templates = templates
        self._recipients = recipients

    async def compose(self, tenant: str, spec: NotifySpec, context: Mapping[str, Any]) -> Composed:
        """StepFailed when the channel or template is gone; the mapping engine's EvalError
        when a recipient or context expression fails."""
        try:
            channel = self._channels.compile(await self._channels.get(tenant, spec.channel))
            template = await self._templates.compiled(tenant, spec.template)
        except NotFound as exc:
            raise StepFailed(exc.detail) from None
        if template.channel_type != channel.type:  # retyped since (a flow no longer active)
            raise StepFailed(
                f"template {template.name!r} is for {template.channel_type}, "
                f"channel {channel.name!r} is {channel.type}"
            )
        found = await self._recipients.resolve(tenant, spec.recipients, channel.type, context)
        base = evaluate(spec.context, context) if spec.context is not None else context
        messages = []
        for recipient in found.recipients:
            data = {**base, "recipient": {"name": recipient.name, "language": recipient.language}}
            try:
                rendered = await off_loop(template.render, data, recipient.language)
                messages.append(Message(recipient, rendered))
            except RenderFailed as exc:
                messages.append(Message(recipient, None, exc))
        return Composed(channel, template, messages, found.unreachable)
