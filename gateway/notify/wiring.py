"""The notification and flow components of one process, assembled by `services.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.actions.catalog import Catalog
from gateway.assignments import AssignmentService
from gateway.auth.secretbox import SecretBox
from gateway.entities import EntityService
from gateway.flows.dry_run import DryRunParts, FlowDryRun
from gateway.flows.recipients import RecipientResolver
from gateway.flows.service import FlowService
from gateway.kinds import KindService
from gateway.notify.channels import ChannelService
from gateway.notify.email import EmailSender
from gateway.notify.notifier import MappingSource, Notifier
from gateway.notify.push import FcmSender
from gateway.notify.settings import SettingsService
from gateway.notify.sms import SmsSender
from gateway.notify.templates import TemplateService, Users
from gateway.outbound.breaker import PartnerGuards
from gateway.outbound.sender import Sender
from gateway.outbound.ssrf import OutboundPolicy
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


def assemble_notify(
    store: Store,
    entities: EntityService,
    mappings: MappingSource,
    box: SecretBox,
    catalog: Catalog,
    sender: Sender,
    guards: PartnerGuards,
    policy: OutboundPolicy,
    schemas: SchemaRegistry,
    kinds: KindService,
) -> NotifyServices:
    """Driver assignments, channels, templates, senders and flows over the process's one
    outbound client and partner catalog (shared with the delivery worker)."""
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
    notifier = Notifier(
        channels,
        catalog,
        mappings,
        entities,
        email=EmailSender(policy),
        push=FcmSender(sender, guards),
        sms=SmsSender(sender, guards),
    )
    return NotifyServices(
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
