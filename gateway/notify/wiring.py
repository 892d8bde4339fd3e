"""The notify lane's components of one process, opened and closed together (app.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway.assignments import AssignmentService
from gateway.auth.keys import KeyRing
from gateway.auth.secretbox import SecretBox
from gateway.config import Settings
from gateway.entities import EntityService
from gateway.flows.dry_run import DryRunParts, FlowDryRun
from gateway.flows.recipients import RecipientResolver
from gateway.flows.service import FlowService
from gateway.kinds import KindService
from gateway.metrics import Metrics
from gateway.notify.channels import ChannelService
from gateway.notify.email import EmailSender
from gateway.notify.notifier import MappingSource, Notifier
from gateway.notify.outbound import Catalog, OutboundPolicy, Sender, partner_guards
from gateway.notify.push import FcmSender
from gateway.notify.settings import SettingsService
from gateway.notify.sms import SmsSender
from gateway.notify.templates import TemplateService, Users
from gateway.schemas.registry import SchemaRegistry
from gateway.store import Store


@dataclass(frozen=True, slots=True)
class NotifyServices:
    assignments: AssignmentService
    templates: TemplateService
    channels: ChannelService
    settings: SettingsService
    notifier: Notifier
    flows: FlowService
    flow_dry_run: FlowDryRun


@contextlib.asynccontextmanager
async def open_notify(
    settings: Settings,
    store: Store,
    entities: EntityService,
    mappings: MappingSource,
    ring: KeyRing,
    metrics: Metrics,
    schemas: SchemaRegistry,
    kinds: KindService,
) -> AsyncIterator[NotifyServices]:
    """Senders share one SSRF-guarded HTTP client of their own and their own partner catalog
    (phase B moves both onto the composition root's, with the delivery worker's)."""
    box = SecretBox(ring)
    policy = OutboundPolicy.from_entries(settings.outbound_allow)
    catalog = Catalog(store, box, metrics)
    channels = ChannelService(store, box)
    templates = TemplateService(store.notify.templates)
    assignments = AssignmentService(store.notify.assignments, entities)
    notify_settings = SettingsService(store.notify.settings)
    flows = FlowService(store)
    channels.users = _users_of(flows, "channel")
    templates.users = _users_of(flows, "template")
    dry_run = FlowDryRun(
        DryRunParts(
            store,
            flows,
            catalog,
            mappings,
            entities,
            schemas,
            kinds,
            RecipientResolver(entities, assignments),
            templates,
            channels,
            notify_settings,
        )
    )
    async with Sender(policy) as sender:
        guards = partner_guards(metrics)
        notifier = Notifier(
            channels,
            catalog,
            mappings,
            entities,
            email=EmailSender(policy),
            push=FcmSender(sender, guards),
            sms=SmsSender(sender, guards),
        )
        yield NotifyServices(
            assignments=assignments,
            templates=templates,
            channels=channels,
            settings=notify_settings,
            notifier=notifier,
            flows=flows,
            flow_dry_run=dry_run,
        )


def _users_of(flows: FlowService, kind: str) -> Users:
    async def users(tenant: str, name: str) -> list[dict[str, Any]]:
        return await flows.users_of(tenant, kind, name)

    return users
