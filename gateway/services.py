"""The composition root: every long-lived object of a gateway process, built in one place.

`open_services(settings)` opens, in order, the store, the one outbound HTTP client, the use
cases, the event relay and the delivery worker, and closes them in reverse. The web app
(`create_app`), `gateway worker`, the CLI commands and the tests all start here; nothing
else constructs a use case.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from gateway import __version__
from gateway.actions.catalog import Catalog, partner_guards
from gateway.actions.proxy import Proxy
from gateway.actions.service import ActionService
from gateway.auth.keyring import KeyRing, generate_secret_key
from gateway.auth.partner_jwt import Fetch, JwtPolicy, PartnerJwtVerifier
from gateway.auth.secretbox import SecretBox
from gateway.auth.tokens import AdminTokenVerifier, ExternalAdminVerifier
from gateway.config import Settings
from gateway.delivery.deliveries import DeliveryService
from gateway.delivery.fanout import FanOut
from gateway.delivery.worker import DeliveryWorker, WorkerSettings
from gateway.doorbell import Doorbell
from gateway.entities import EntityService
from gateway.events import EventLog, EventRelay
from gateway.kinds import KindService
from gateway.mapping_files.service import MappingService
from gateway.metrics import Metrics
from gateway.notify.wiring import NotifyServices, assemble_notify
from gateway.outbound.jwks import jwks_fetcher
from gateway.outbound.sender import Sender
from gateway.outbound.ssrf import OutboundPolicy
from gateway.schemas.registry import SchemaRegistry, default_schema_dir
from gateway.shares import Shares
from gateway.store import Store
from gateway.store.connection import open_store
from gateway.store.entities import RELAY_SHARDS
from gateway.triggers.compiled import TriggerConfigs
from gateway.triggers.gates import TriggerGates
from gateway.triggers.ingest import Ingestor
from gateway.triggers.pipeline import Pipeline
from gateway.triggers.receiver import HookReceiver
from gateway.triggers.rejected import RejectedKeeper
from gateway.triggers.replay import RejectedPayloads
from gateway.triggers.service import TriggerService

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    """What a gateway process runs on, ready to use. `settings.run_workers` says whether this
    process runs the relay and the delivery worker in the background."""

    settings: Settings
    metrics: Metrics
    keyring: KeyRing
    schemas: SchemaRegistry
    store: Store
    kinds: KindService
    entities: EntityService
    mappings: MappingService
    admin_verifier: AdminTokenVerifier
    triggers: TriggerService
    gates: TriggerGates
    hooks: HookReceiver
    rejected: RejectedPayloads
    actions: ActionService
    proxy: Proxy
    fanout: FanOut
    deliveries: DeliveryService
    delivery_worker: DeliveryWorker
    events: EventLog
    relay: EventRelay
    notify: NotifyServices


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, *, mongodb_uri: str | None = None, run_workers: bool | None = None
) -> AsyncIterator[Services]:
    """`mongodb_uri` overrides the settings (tests point every process at their own database);
    `run_workers` overrides `settings.run_workers`."""
    if run_workers is not None:
        settings = replace(settings, run_workers=run_workers)
    metrics = Metrics(__version__)
    ring = KeyRing.from_secret(load_secret_key(settings))
    schemas = SchemaRegistry.load(settings.schema_dir or default_schema_dir())
    policy = OutboundPolicy.from_entries(settings.outbound_allow)
    async with (
        open_store(settings, mongodb_uri or settings.mongodb_uri) as store,
        Sender(policy) as sender,
    ):
        services = _assemble(settings, metrics, ring, schemas, store, sender, policy)
        try:
            async with _background(services):
                yield services
        finally:
            await services.gates.close()


def _assemble(
    settings: Settings,
    metrics: Metrics,
    ring: KeyRing,
    schemas: SchemaRegistry,
    store: Store,
    sender: Sender,
    policy: OutboundPolicy,
) -> Services:
    """Every use case, each given what it needs, in dependency order (no I/O here)."""
    box = SecretBox(ring)
    fetch = jwks_fetcher(sender)
    kinds = KindService(store, schemas)
    relay_doorbell = Doorbell()
    entities = EntityService(store, schemas, kinds, relay_doorbell)
    mappings = MappingService(store, schemas, entities, kinds)
    catalog = Catalog(store, box, metrics)
    guards = partner_guards(metrics)
    worker = DeliveryWorker(
        store, catalog, sender, guards, mappings, metrics, settings=_worker_settings(settings)
    )
    fanout = FanOut(store, catalog, metrics, on_created=worker.notify)
    configs = TriggerConfigs(store, box, fetch)
    gates = TriggerGates(store, metrics, follow_changes=settings.change_streams)
    ingestor = Ingestor(
        Pipeline(entities, schemas, mappings), RejectedKeeper(store, metrics), metrics
    )
    return Services(
        settings=settings,
        metrics=metrics,
        keyring=ring,
        schemas=schemas,
        store=store,
        kinds=kinds,
        entities=entities,
        mappings=mappings,
        admin_verifier=_admin_verifier(settings, ring, fetch),
        triggers=TriggerService(
            store,
            mappings,
            ring,
            box,
            base_url=settings.base_url,
            max_body_bytes=settings.max_body_bytes,
            max_batch_items=settings.max_batch_items,
            fetch=fetch,
            on_change=gates.forget,
        ),
        gates=gates,
        hooks=HookReceiver(store, gates, configs, entities, ingestor, mappings, ring, metrics),
        rejected=RejectedPayloads(store, configs, ingestor),
        actions=ActionService(store, box, catalog, mappings),
        proxy=Proxy(catalog, sender, guards, entities, mappings, metrics),
        fanout=fanout,
        deliveries=DeliveryService(store, on_replay=worker.notify),
        delivery_worker=worker,
        events=EventLog(store),
        # Built with its fan-out: no event is ever relayed without its deliveries.
        relay=EventRelay(
            store,
            metrics,
            on_relayed=fanout,
            doorbell=relay_doorbell,
            shares=Shares(store, "event-relay", RELAY_SHARDS),
        ),
        notify=assemble_notify(
            store, entities, mappings, box, catalog, sender, guards, policy, schemas, kinds
        ),
    )


def _worker_settings(settings: Settings) -> WorkerSettings:
    return WorkerSettings(
        lease_seconds=settings.delivery_lease_seconds,
        concurrency=settings.delivery_concurrency,
        poll_seconds=settings.delivery_poll_seconds,
        probe_seconds=settings.partner_probe_seconds,
        shutdown_seconds=settings.delivery_shutdown_seconds,
    )


def _admin_verifier(settings: Settings, ring: KeyRing, fetch: Fetch) -> AdminTokenVerifier:
    """Admin tokens: ours, and an identity provider's when GATEWAY_ADMIN_JWKS_URL is set (its
    keys fetched through the SSRF-guarded client)."""
    if settings.admin_jwks_url is None:
        return AdminTokenVerifier(ring)
    policy = JwtPolicy(issuer=settings.admin_jwt_issuer, audience=settings.admin_jwt_audience)
    keys = PartnerJwtVerifier.from_jwks(settings.admin_jwks_url, fetch, policy)
    external = ExternalAdminVerifier(
        keys, tenant_claim=settings.admin_tenant_claim, role_claim=settings.admin_role_claim
    )
    return AdminTokenVerifier(ring, external)


def running_jobs(settings: Settings) -> tuple[str, ...]:
    """The background jobs this process runs: none without workers."""
    return settings.jobs if settings.run_workers else ()


def jobs_alive(services: Services) -> bool:
    """Whether every background job this process should run is running."""
    jobs = running_jobs(services.settings)
    return ("relay" not in jobs or services.relay.running) and (
        "delivery" not in jobs or services.delivery_worker.running
    )


@contextlib.asynccontextmanager
async def _background(services: Services) -> AsyncIterator[None]:
    """The relay and the delivery worker (those of `settings.jobs`); on the way out the worker
    stops claiming and finishes its in-flight sends before the relay stops."""
    jobs = running_jobs(services.settings)
    relay = asyncio.create_task(services.relay.run()) if "relay" in jobs else None
    worker = asyncio.create_task(services.delivery_worker.run()) if "delivery" in jobs else None
    try:
        yield
    finally:
        if worker is not None:
            await services.delivery_worker.stop()
            await worker
        if relay is not None:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay


def load_secret_key(settings: Settings) -> str:
    """GATEWAY_SECRET_KEY, or a key generated once into the data dir (with a warning)."""
    if settings.secret_key is not None:
        return settings.secret_key.value
    path = settings.data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = generate_secret_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    log.warning("GATEWAY_SECRET_KEY is unset: generated one into %s; set it in production", path)
    return key
