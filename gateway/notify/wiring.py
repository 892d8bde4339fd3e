"""The notify lane's components of one process, opened and closed together (app.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.actions.catalog import partner_guards
from gateway.assignments import AssignmentService
from gateway.auth.keys import KeyRing
from gateway.auth.secretbox import SecretBox
from gateway.config import Settings
from gateway.entities import EntityService
from gateway.metrics import Metrics
from gateway.notify.channels import ChannelService
from gateway.notify.email import EmailSender
from gateway.notify.notifier import MappingSource, Notifier
from gateway.notify.outbound import Catalog, OutboundPolicy, Sender
from gateway.notify.push import FcmSender
from gateway.notify.settings import SettingsService
from gateway.notify.sms import SmsSender
from gateway.notify.templates import TemplateService
from gateway.store import Store


@dataclass(frozen=True, slots=True)
class NotifyServices:
    assignments: AssignmentService
    templates: TemplateService
    channels: ChannelService
    settings: SettingsService
    notifier: Notifier


@contextlib.asynccontextmanager
async def open_notify(
    settings: Settings,
    store: Store,
    entities: EntityService,
    mappings: MappingSource,
    ring: KeyRing,
    metrics: Metrics,
) -> AsyncIterator[NotifyServices]:
    """Senders share one SSRF-guarded HTTP client of their own and their own partner catalog
    (phase B moves both onto the composition root's, with the delivery worker's)."""
    box = SecretBox(ring)
    policy = OutboundPolicy.from_entries(settings.outbound_allow)
    channels = ChannelService(store, box)
    async with Sender(policy) as sender:
        guards = partner_guards(metrics)
        notifier = Notifier(
            channels,
            Catalog(store, box, metrics),
            mappings,
            entities,
            email=EmailSender(policy),
            push=FcmSender(sender, guards),
            sms=SmsSender(sender, guards),
        )
        yield NotifyServices(
            assignments=AssignmentService(store.notify.assignments, entities),
            templates=TemplateService(store.notify.templates),
            channels=channels,
            settings=SettingsService(store.notify.settings),
            notifier=notifier,
        )
