"""The notification and flow components of one process, assembled by `services.py`:
`assemble_notify` (channels, templates, senders, flows and their dry run: no workers), then,
once the delivery worker exists, `assemble_flow_runtime` (the starter and the runner)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.actions.catalog import Catalog
from gateway.actions.partner_calls import PartnerCalls
from gateway.assignment_feed import AssignmentFeed
from gateway.assignments import AssignmentService
from gateway.auth.secretbox import SecretBox
from gateway.entities import EntityService
from gateway.flows.dry_run import DryRunParts, FlowDryRun
from gateway.flows.messages import MessageComposer
from gateway.flows.recipients import RecipientResolver
from gateway.flows.runner import FlowRunner, RunnerSettings
from gateway.flows.runs import FlowRunService
from gateway.flows.service import FlowService
from gateway.flows.starter import FlowStarter
from gateway.flows.steps import StepParts, StepRunner
from gateway.keys import StoredSecrets
from gateway.kinds import KindService
from gateway.metrics import Metrics
from gateway.notify.channels import ChannelService
from gateway.notify.dispatch import NotificationSender
from gateway.notify.email import EmailSender
from gateway.notify.notifier import MappingSource, Notifier
from gateway.notify.push import FcmSender
from gateway.notify.settings import SettingsService
from gateway.notify.sms import SmsSender
from gateway.notify.templates import TemplateService, Users
from gateway.outbound.ssrf import OutboundPolicy
from gateway.schemas.registry import SchemaRegistry
from gateway.store import Store


@dataclass(frozen=True, slots=True)
class NotifyServices:
    assignments: AssignmentService
    assignment_feed: AssignmentFeed
    templates: TemplateService
    channels: ChannelService
    settings: SettingsService
    notifier: Notifier
    notification_sender: NotificationSender  # the delivery worker's, for notifications
    composer: MessageComposer
    flows: FlowService
    flow_runs: FlowRunService
    flow_dry_run: FlowDryRun


@dataclass(frozen=True, slots=True)
class FlowRuntime:
    starter: FlowStarter  # the relay calls it with every batch of events
    runner: FlowRunner


def assemble_notify(
    store: Store,
    entities: EntityService,
    mappings: MappingSource,
    box: SecretBox,
    catalog: Catalog,
    calls: PartnerCalls,
    policy: OutboundPolicy,
    schemas: SchemaRegistry,
    kinds: KindService,
    metrics: Metrics,
    *,
    helo: str | None = None,
) -> NotifyServices:
    """Driver assignments, channels, templates, senders and flows over the process's one
    outbound client and partner catalog (shared with the delivery worker). `helo`: the name
    e-mail says in EHLO for a channel that names none (`email.helo_name`)."""
    channels = ChannelService(store, box)
    templates = TemplateService(store.notify.templates)
    assignments = AssignmentService(store.notify.assignments, entities)
    entities.drives_at = assignments.drives_at  # a handover time the history has not heard
    assignment_feed = AssignmentFeed(assignments, entities)
    entities.hear = assignment_feed.heard  # a report it has heard: kept, not written
    notify_settings = SettingsService(store.notify.settings, store.deliveries)
    flows = FlowService(store, catalog)
    channels.users = _users_of(flows, "channel")
    templates.users = _users_of(flows, "template")
    composer = MessageComposer(channels, templates, RecipientResolver(entities, assignments))
    dry_run = FlowDryRun(
        DryRunParts(
            store, flows, catalog, mappings, entities, schemas, kinds, composer, notify_settings
        )
    )
    notifier = Notifier(
        channels,
        catalog,
        mappings,
        entities,
        email=EmailSender(policy, helo=helo),
        push=FcmSender(calls, metrics),
        sms=SmsSender(calls, metrics),
    )
    return NotifyServices(
        assignments=assignments,
        assignment_feed=assignment_feed,
        templates=templates,
        channels=channels,
        settings=notify_settings,
        notifier=notifier,
        notification_sender=NotificationSender(notifier, notify_settings, store.notify.cooldowns),
        composer=composer,
        flows=flows,
        flow_runs=FlowRunService(store),
        flow_dry_run=dry_run,
    )


def assemble_flow_runtime(
    notify: NotifyServices,
    store: Store,
    catalog: Catalog,
    mappings: MappingSource,
    calls: PartnerCalls,
    entities: EntityService,
    metrics: Metrics,
    secrets: StoredSecrets,
    *,
    settings: RunnerSettings,
    on_deliveries: Callable[[], None],
    also_on_time: Callable[[], Awaitable[Any]] | None = None,
) -> FlowRuntime:
    """The runner wakes the delivery worker (`on_deliveries`) when a step queued messages or
    calls; the starter, and a flow's resume, wake the runner. Its housekeeping brings the
    vehicles' `current_driver` up to date when a scheduled driver change starts, then does
    `also_on_time` (the restatement of replaced kinds' entities: `KindService`)."""

    async def on_time() -> None:
        await notify.assignments.follow_scheduled()
        if also_on_time is not None:
            await also_on_time()

    steps = StepRunner(
        StepParts(
            store,
            catalog,
            mappings,
            calls,
            entities,
            notify.assignments,
            notify.composer,
            metrics,
        )
    )
    runner = FlowRunner(
        store,
        notify.flows,
        steps,
        metrics,
        secrets,
        settings=settings,
        on_deliveries=on_deliveries,
        on_time=on_time,
    )
    starter = FlowStarter(store, notify.flows, metrics, on_started=runner.notify)
    notify.flows.on_released = runner.notify  # a resume: the held runs are due now
    return FlowRuntime(starter, runner)


def _users_of(flows: FlowService, kind: str) -> Users:
    async def users(tenant: str, name: str) -> list[dict[str, Any]]:
        return await flows.users_of(tenant, kind, name)

    return users
