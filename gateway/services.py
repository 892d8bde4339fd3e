"""The composition root: every long-lived object of a gateway process, built in one place.

`open_services(settings)` opens, in order, the store, the one outbound HTTP client, the use
cases, the event relay, the flow runner and the delivery worker, and closes them in reverse.
The web app (`create_app`), `gateway worker`, the CLI commands and the tests all start here;
nothing else constructs a use case.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.accounts import AccountService
from gateway.actions.catalog import Catalog, partner_guards
from gateway.actions.definitions import FlowUsers
from gateway.actions.partner_calls import PartnerCalls
from gateway.actions.proxy import Proxy
from gateway.actions.service import ActionService
from gateway.auth.keyring import KeyRing, generate_secret_key
from gateway.auth.partner_jwt import Fetch, JwtPolicy, PartnerJwtVerifier
from gateway.auth.secretbox import SecretBox
from gateway.auth.tokens import AdminTokenVerifier, ExternalAdminVerifier
from gateway.background import cancel_and_wait, within
from gateway.config import ConfigError, Settings
from gateway.dashboard import Dashboard
from gateway.delivery.deliveries import DeliveryService
from gateway.delivery.fanout import FanOut
from gateway.delivery.worker import DeliveryWorker, WorkerSettings
from gateway.doorbell import Doorbell
from gateway.entities import EntityService
from gateway.errors import StoreUnavailable
from gateway.eventloop import running_loop
from gateway.events import EventLog, EventRelay, OnRelayed, Unfinished
from gateway.fleet.append import PositionAppender
from gateway.fleet.checklist_readings import ChecklistReadings
from gateway.fleet.fold import FOLD_JOB, FOLD_SHARDS, Fold, FoldSettings
from gateway.fleet.overview import FleetOverview
from gateway.fleet.readings import OdometerReadings
from gateway.fleet.rule_service import GeofenceService, PlanService
from gateway.fleet.rules import FleetRules
from gateway.fleet.service_feed import ServiceFeed
from gateway.fleet.servicing import ServiceRecorder
from gateway.fleet.settings import FleetSettingsService
from gateway.fleet.tracks import Tracks
from gateway.flows.runner import FlowRunner
from gateway.flows.runner import RunnerSettings as FlowRunnerSettings
from gateway.flows.service import FlowService
from gateway.flows.starter import FlowStarter
from gateway.keys import StoredSecrets, check_secret_key
from gateway.kinds import KindService
from gateway.mapping_files.service import MappingService
from gateway.metrics import Metrics
from gateway.models import DeliveryKind
from gateway.notify.email import helo_name
from gateway.notify.wiring import NotifyServices, assemble_flow_runtime, assemble_notify
from gateway.outbound import open_files
from gateway.outbound.breaker import PartnerGuards, RateLimits
from gateway.outbound.jwks import jwks_fetcher
from gateway.outbound.sender import Sender
from gateway.outbound.ssrf import OutboundPolicy
from gateway.progress import Readiness
from gateway.schedules import RunnerSettings, ScheduleRunner, ScheduleService
from gateway.schedules.poll import PollContext
from gateway.schedules.sinks import EntitySink, PageSink, compile_target
from gateway.schemas.registry import SchemaRegistry
from gateway.server_clock import ServerClock
from gateway.shares import Shares
from gateway.shutdown import HAND_BACK_SECONDS
from gateway.store import INDEX_RETRY_SECONDS, Doc, Store
from gateway.store.connection import open_store
from gateway.store.entities import RELAY_SHARDS
from gateway.triggers.compiled import CompiledTrigger, TriggerConfigs
from gateway.triggers.gates import TriggerGates
from gateway.triggers.ingest import Ingestor
from gateway.triggers.pipeline import Pipeline
from gateway.triggers.receiver import HookReceiver
from gateway.triggers.rejected import RejectedKeeper
from gateway.triggers.replay import OtherTargets, RejectedPayloads
from gateway.triggers.service import TriggerService

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    """What a gateway process runs on, ready to use. `settings.run_workers` says whether this
    process runs the relay, the flow runner and the delivery worker in the background."""

    settings: Settings
    metrics: Metrics
    keyring: KeyRing
    box: SecretBox  # seals and opens every stored secret (refuses to seal: `start_once_checked`)
    # What a stored secret that does not open for a send is: this process's key, or damage.
    secrets: StoredSecrets
    schemas: SchemaRegistry
    store: Store
    kinds: KindService
    entities: EntityService
    positions: PositionAppender
    tracks: Tracks
    mappings: MappingService
    admin_verifier: AdminTokenVerifier
    # Admin API and UI requests counted per tenant (or client address), in this process; the
    # client addresses' counts are those of /hooks calls without valid credentials too.
    admin_limits: RateLimits
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
    schedules: ScheduleService
    schedule_runner: ScheduleRunner
    accounts: AccountService
    dashboard: Dashboard
    flow_starter: FlowStarter
    flow_runner: FlowRunner
    fleet_settings: FleetSettingsService
    fold: Fold
    fleet_rules: FleetRules
    geofences: GeofenceService
    maintenance_plans: PlanService
    vehicle_services: ServiceRecorder
    fleet_overview: FleetOverview
    # The partner catalog and guards every sender shares; their `clock`s are monotonic
    # seconds (credentials' lifetimes, breakers, rate limits), which tests move.
    catalog: Catalog
    guards: PartnerGuards
    readiness: Readiness = field(default_factory=Readiness)  # what /readyz last answered
    background: Background = field(default_factory=lambda: Background())


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    mongodb_uri: str | None = None,
    run_workers: bool | None = None,
    attach: bool = False,
) -> AsyncIterator[Services]:
    """`mongodb_uri` overrides the settings (tests point every process at their own database);
    `run_workers` overrides `settings.run_workers`; `attach`: a one-shot command's, which uses
    the embedded database a running gateway has on the data dir (`open_store`)."""
    if run_workers is not None:
        settings = replace(settings, run_workers=run_workers)
    metrics = Metrics(
        __version__,
        running_loop(),
        max_triggers=settings.metrics_max_triggers,
        max_partners=settings.metrics_max_partners,
        max_schedules=settings.metrics_max_schedules,
    )
    ring = KeyRing.from_secret(load_secret_key(settings, generate=not attach))
    schemas = SchemaRegistry.configured(settings.schema_dir)
    policy = OutboundPolicy.from_entries(settings.outbound_allow)
    open_files.raise_for(settings.outbound_connections)
    async with (
        open_store(settings, mongodb_uri or settings.mongodb_uri, attach=attach) as store,
        Sender(policy, connections=settings.outbound_connections) as sender,
    ):
        # 1 while the process knows its database up, whether or not /readyz is asked (under
        # `--workers N` the scrape shows the lowest of the processes' values); the gauges read
        # from the database unknown (NaN) from its loss until they are measured again.
        store.health.watch(metrics.database_known)
        services = _assemble(settings, metrics, ring, schemas, store, sender, policy)
        # The clock every lease and due time is compared on, and the key, before any job
        # takes a lease or opens a secret; and the indexes and one-time upgrade steps before
        # any job writes (a poll storing a fine before the fines are re-keyed would store a
        # second one). A database known down at start (open_store) is not waited for again:
        # the jobs start once all are done.
        server_clock = ServerClock(store, metrics)
        try:
            store.health.check()
            store.check_prepared()
            await server_clock.measure()
            await check_secret_key(store, services.box)
        except StoreUnavailable as exc:
            log.error(
                "the background jobs start once the database's indexes and upgrade steps are "
                "done and its clock and GATEWAY_SECRET_KEY are checked against it (%s); tried "
                "again every %g s",
                exc.detail,
                INDEX_RETRY_SECONDS,
            )
            services.background.start_once_checked(services, server_clock)
        else:
            services.background.start(services)
        following = asyncio.create_task(server_clock.follow(), name="following the clock")
        try:
            yield services
        finally:
            await _stop(services)  # before the store closes: they use it
            await cancel_and_wait(following)


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
    secrets = StoredSecrets(store, box, metrics)
    guards = partner_guards(metrics, share=settings.outbound_connections // 2)
    calls = PartnerCalls(sender, guards, store)  # every call of a partner goes through it
    notify = assemble_notify(
        store,
        entities,
        mappings,
        box,
        catalog,
        calls,
        policy,
        schemas,
        kinds,
        metrics,
        helo=helo_name(settings.public_url),
    )
    worker = DeliveryWorker(
        store,
        catalog,
        calls,
        mappings,
        metrics,
        secrets=secrets,
        settings=_worker_settings(settings),
        senders={DeliveryKind.NOTIFICATION: notify.notification_sender},
    )
    fanout = FanOut(store, catalog, metrics, on_created=worker.notify)
    flow_runtime = assemble_flow_runtime(
        notify,
        store,
        catalog,
        mappings,
        calls,
        entities,
        metrics,
        secrets,
        settings=_runner_settings(settings),
        on_deliveries=worker.notify,
        also_on_time=kinds.restate_pending,
    )
    configs = TriggerConfigs(store, box, fetch)
    gates = TriggerGates(store, metrics, follow_changes=settings.change_streams)
    admin_verifier = _admin_verifier(settings, ring, fetch)
    keeper = RejectedKeeper(store, metrics)
    fold_doorbell = Doorbell()  # the appends wake their process's fold
    positions = PositionAppender(store, entities, metrics, doorbell=fold_doorbell)
    tracks = Tracks(store, positions)
    ingestor = Ingestor(Pipeline(entities, schemas, mappings, metrics), keeper, metrics, positions)
    # Where a schedule's pages land, by target type: the trigger ingest path for both.
    sinks: dict[str, PageSink] = {
        "entities": EntitySink(ingestor),
        "positions": EntitySink(ingestor),
    }
    runner = ScheduleRunner(
        PollContext(
            store,
            catalog,
            calls,
            mappings,
            sinks,
            keeper,
            metrics,
            settings.max_body_bytes,
            secrets,
        ),
        settings=RunnerSettings(
            lease_seconds=settings.schedule_lease_seconds,
            concurrency=settings.schedule_concurrency,
            shutdown_seconds=settings.delivery_shutdown_seconds,
        ),
    )
    fleet_settings = FleetSettingsService(store)
    fleet_rules = FleetRules(store)
    services_done = ServiceRecorder(store, entities, store.fleet_rules.plans)
    relayed = each_of(
        fanout,
        # Before the flow starter: a run the same checklist starts reads its vehicle read.
        ChecklistReadings(entities),
        flow_runtime.starter,
        notify.assignment_feed,
        ServiceFeed(services_done),
        OdometerReadings(store),
    )
    # Per tenant and, for calls without valid credentials (admin and /hooks alike), per
    # client address: SPEC §7, request rate limited on every route.
    client_limits = RateLimits()
    # An action's or a partner's change that names another feed starts its schedules again.
    schedules = ScheduleService(
        store,
        mappings,
        list(sinks),
        on_due=runner.notify,
        on_delete=functools.partial(metrics.forget, "schedule"),
    )
    actions = ActionService(
        store,
        box,
        catalog,
        guards,
        mappings,
        flow_users=_flow_users_of_actions(notify.flows),
        on_unsendable=_counted_and_due(metrics, worker.notify),
        read_with_changed=schedules.read_with_changed,
    )
    # A partner deleted through another process, forgotten here at the next pass.
    store.housekeeping.append(
        ("forgot partners deleted through another process", actions.forget_deleted_partners)
    )
    return Services(
        settings=settings,
        metrics=metrics,
        keyring=ring,
        box=box,
        secrets=secrets,
        schemas=schemas,
        store=store,
        kinds=kinds,
        entities=entities,
        positions=positions,
        tracks=tracks,
        mappings=mappings,
        admin_verifier=admin_verifier,
        admin_limits=client_limits,
        triggers=TriggerService(
            store,
            mappings,
            kinds,
            ring,
            box,
            base_url=settings.base_url,
            max_body_bytes=settings.max_body_bytes,
            max_batch_items=settings.max_batch_items,
            fetch=fetch,
            on_change=gates.forget,
            on_delete=functools.partial(metrics.forget, "trigger"),
        ),
        gates=gates,
        hooks=HookReceiver(
            store,
            gates,
            configs,
            entities,
            ingestor,
            mappings,
            ring,
            metrics,
            tracks,
            clients=client_limits,
            client_rate=settings.admin_rate_limit,
        ),
        rejected=RejectedPayloads(
            store, configs, ingestor, other_targets=_schedule_targets(store, settings)
        ),
        actions=actions,
        proxy=Proxy(catalog, calls, entities, mappings, metrics),
        catalog=catalog,
        guards=guards,
        fanout=fanout,
        deliveries=DeliveryService(store, on_replay=worker.notify),
        delivery_worker=worker,
        events=EventLog(store, settle_seconds=settings.events_feed_settle_seconds),
        # Built with its fan-out and the flow starter: no event is ever relayed without its
        # deliveries and its flow runs (and the driver changes it reports).
        relay=EventRelay(
            store,
            metrics,
            on_relayed=relayed,
            doorbell=relay_doorbell,
            shares=Shares(
                store, "event-relay", RELAY_SHARDS, ttl_seconds=settings.shard_lease_seconds
            ),
        ),
        notify=notify,
        flow_starter=flow_runtime.starter,
        flow_runner=flow_runtime.runner,
        schedules=schedules,
        schedule_runner=runner,
        accounts=AccountService(store, admin_verifier),
        dashboard=Dashboard(store, guards.states),
        fleet_settings=fleet_settings,
        # Its events go through the relay's hook: deliveries, flow runs, driver changes.
        fold=Fold(
            store,
            metrics,
            fleet_settings,
            fleet_rules,
            on_relayed=relayed,
            doorbell=fold_doorbell,
            shares=Shares(store, FOLD_JOB, FOLD_SHARDS, ttl_seconds=settings.shard_lease_seconds),
            config=FoldSettings(
                entity_seconds=settings.fold_entity_seconds,
                checkpoint_seconds=max(
                    settings.fold_checkpoint_seconds, settings.fold_entity_seconds
                ),
                missing_seconds=settings.fold_gap_seconds,
            ),
            flows=flow_runtime.starter.naming,
        ),
        fleet_rules=fleet_rules,
        geofences=GeofenceService(store.fleet_rules.geofences, on_change=fleet_rules.forget),
        maintenance_plans=PlanService(store.fleet_rules.plans, on_change=fleet_rules.forget),
        vehicle_services=services_done,
        fleet_overview=FleetOverview(store, fleet_rules),
    )


def _schedule_targets(store: Store, settings: Settings) -> OtherTargets:
    """Rejected items of a schedule's pages are kept under its id: a replay finds the target
    there (as it is now) when no trigger has that id."""

    async def find(tenant: str, target_id: str) -> CompiledTrigger | None:
        doc = await store.schedules.get(tenant, target_id)
        return None if doc is None else compile_target(doc, max_body_bytes=settings.max_body_bytes)

    return find


def each_of(*hooks: OnRelayed) -> OnRelayed:
    """One relay hook that calls `hooks` in turn with each batch (each is idempotent, so a
    batch relayed again after a failure in a later hook repeats nothing). A hook that stops
    at its budget (`Unfinished`: the fan-out) leaves the later hooks the events it finished,
    and the relay drains those alone."""

    async def relayed(events: Sequence[Doc]) -> int:
        done = 0
        unfinished: Unfinished | None = None
        for hook in hooks:
            if unfinished is not None:
                events = [e for e in events if e["_id"] in unfinished.finished]
            if not events:
                break
            try:
                done += await hook(events)
            except Unfinished as stop:
                unfinished = stop  # of the events given it: those the earlier ones finished
        if unfinished is not None:
            raise unfinished
        return done

    return relayed


ARRIVALS_AWAIT_MS = 2000  # the runners' change-stream waits (`_arrivals_await_ms`)


def _worker_settings(settings: Settings) -> WorkerSettings:
    return WorkerSettings(
        lease_seconds=settings.delivery_lease_seconds,
        concurrency=settings.delivery_concurrency,
        poll_seconds=settings.delivery_poll_seconds,
        probe_seconds=settings.partner_probe_seconds,
        shutdown_seconds=settings.delivery_shutdown_seconds,
        arrivals_await_ms=_arrivals_await_ms(settings),
    )


def _arrivals_await_ms(settings: Settings) -> int | None:
    """How long a wait of the runners' change streams lasts (`leased_loop.follow_arrivals`):
    2 s, shorter than half an operation's deadline (GATEWAY_DB_TIMEOUT_MS) that bounds it
    too; None without change streams (GATEWAY_CHANGE_STREAMS=false: they poll)."""
    if not settings.change_streams:
        return None
    return min(ARRIVALS_AWAIT_MS, settings.db_timeout_ms // 2)


def _runner_settings(settings: Settings) -> FlowRunnerSettings:
    """Flow runs are leased, polled, woken and stopped like deliveries."""
    worker = _worker_settings(settings)
    return FlowRunnerSettings(
        worker.lease_seconds,
        worker.concurrency,
        worker.poll_seconds,
        worker.shutdown_seconds,
        arrivals_await_ms=worker.arrivals_await_ms,
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
    running = {
        "relay": services.relay.running,
        "flows": services.flow_runner.running,
        "delivery": services.delivery_worker.running,
        "schedules": services.schedule_runner.running,
        "fold": services.fold.running,
    }
    return all(running[job] for job in running_jobs(services.settings))


class Background:
    """The background jobs of `settings.jobs` a process runs (the relay, the flow runner, the
    delivery worker, the schedule runner and the fleet fold), and their stop.

    The three leased runners depend on no request: `stop_runners()` (the web app calls it on
    SIGTERM, as it stops accepting) has them stop claiming and finish their work under way
    while the requests in flight are answered, instead of after them. The relay and the fold
    carry what the answered requests wrote (their outboxes, their positions) and stop once
    those are answered, in `stop()`. Both are idempotent."""

    def __init__(self) -> None:
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self._stops: dict[str, Callable[[], Awaitable[None]]] = {}
        self._runners: asyncio.Task[None] | None = None
        self._key_check: asyncio.Task[None] | None = None
        # Why this process runs no background job: its GATEWAY_SECRET_KEY opens nothing the
        # database holds, found once the database answered (/readyz answers 503 with it).
        self.key_refused: str | None = None

    def start_once_checked(self, services: Services, server_clock: ServerClock) -> None:
        """The database did not answer at start, or its indexes and one-time upgrade steps
        are not done (`Store.prepared`): once they are and it answers, the offset to its clock is
        measured (unless a measurement passed already, or the server gives no time) and
        GATEWAY_SECRET_KEY checked against it (`check_secret_key`), and the jobs started
        then: never on this host's clock (its leases would take over the others'), never
        when the key check fails (no job of a process with another key may fail deliveries
        for good: its box then seals nothing either, the admin API's writes of secrets are
        refused with a 503)."""

        async def check_then_start() -> None:
            while True:
                await asyncio.sleep(INDEX_RETRY_SECONDS)
                await services.store.prepared.wait()
                try:
                    if not server_clock.known:
                        await server_clock.measure()
                    await check_secret_key(services.store, services.box)
                except StoreUnavailable:
                    continue
                except ConfigError as exc:
                    self.key_refused = str(exc)
                    services.box.refuse(str(exc))
                    log.critical("running no background job: %s", exc)
                    return
                log.info("GATEWAY_SECRET_KEY checked against the database")
                if self._runners is None:  # not stopping already
                    self.start(services)
                return

        self._key_check = asyncio.create_task(check_then_start(), name="checking the key")

    def start(self, services: Services) -> None:
        jobs = running_jobs(services.settings)
        runs = {
            "relay": services.relay.run,
            "flows": services.flow_runner.run,
            "delivery": services.delivery_worker.run,
            "schedules": services.schedule_runner.run,
            "fold": services.fold.run,
        }
        self._stops = {
            "schedules": services.schedule_runner.stop,
            "flows": services.flow_runner.stop,
            "delivery": services.delivery_worker.stop,
        }
        self.jobs = {job: asyncio.create_task(run()) for job, run in runs.items() if job in jobs}

    def stop_runners(self) -> asyncio.Task[None]:
        """The runners stopping side by side (claiming no more at once, their work under way
        bounded by GATEWAY_DELIVERY_SHUTDOWN_SECONDS from this call, then their leases handed
        back): started on the first call, the same task after."""
        if self._runners is None:
            if running := [job for job in self._stops if job in self.jobs]:
                log.info("stopping the background runners: %s", ", ".join(running))
            self._runners = asyncio.create_task(self._stop_runners(), name="stopping runners")
        return self._runners

    async def _stop_runners(self) -> None:
        async def stopped(job: str) -> None:
            await self._stops[job]()
            await self.jobs[job]

        await asyncio.gather(*(stopped(job) for job in self._stops if job in self.jobs))

    async def stop(self) -> None:
        """Every job stopped: the runners (`stop_runners`, under way already or started now)
        beside the fold and the relay, which are cancelled (a fold pass cut short is repeated;
        both hand their shards back on the way out)."""
        if self._key_check is not None:
            await cancel_and_wait(self._key_check)
        sharded = [self.jobs[job] for job in ("relay", "fold") if job in self.jobs]
        await asyncio.gather(self.stop_runners(), cancel_and_wait(*sharded))


async def _stop(services: Services) -> None:
    """What the background holds, given back side by side within one bound, once the requests
    in flight are answered: the runners (stopping since SIGTERM under `gateway serve`,
    `Background.stop_runners`, now under `gateway worker`) finish their work under way and
    hand back the leases they still hold, the fold and the relay stop and hand back their
    shards, the Idempotency-Keys left are released and the trigger gates stop following their
    change stream; all of it within GATEWAY_DELIVERY_SHUTDOWN_SECONDS and `HAND_BACK_SECONDS`
    more, or `HAND_BACK_SECONDS` alone once the database is known down (no work under way can
    record its outcome then). One after the other, a frozen database held each step a deadline
    of its own. What is cut short is cancelled and its leases expire; deliveries a flow run
    queued meanwhile wait in the database for the next worker (docs/operations.md,
    "Shutdown")."""
    health, most = services.store.health, services.settings.delivery_shutdown_seconds

    def bound() -> float:  # known down meanwhile (a ping under way): shorter from then on
        return HAND_BACK_SECONDS + (most if health.up else 0.0)

    log.info("stopping the background jobs (at most %g s)", bound())
    await within(
        bound,
        "stopping the background jobs",
        services.background.stop(),
        services.hooks.close(),
        services.gates.close(),
    )
    # A single cancel can be lost on Python 3.11; what was cut short is cancelled here.
    await cancel_and_wait(*services.background.jobs.values())


def load_secret_key(settings: Settings, *, generate: bool = True) -> str:
    """GATEWAY_SECRET_KEY, or the key generated once into the data dir (with a warning) by a
    gateway process. `generate=False` (a one-shot command: `admin-token`, `ui-user`, ...):
    never a new key, whose tokens and sealed secrets the running gateway could not read; no
    key at all is a ConfigError that says what to set."""
    if settings.secret_key is not None:
        return settings.secret_key.value
    path = settings.data_dir / "secret_key"
    if path.exists():
        return _read_key_file(path)
    if not generate:
        raise ConfigError(
            f"GATEWAY_SECRET_KEY is unset and {path} does not exist: set GATEWAY_SECRET_KEY "
            "to the running gateway's key, or GATEWAY_DATA_DIR to its data directory (a "
            "key made here would sign tokens the gateway does not accept)"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = generate_secret_key()
    # Written whole and on disk under another name, then linked to its own: a crash, a full
    # disk or a power loss never leaves an empty or partial key file (while the database's
    # key check, and every secret sealed since, would be under the key lost).
    draft = path.with_name(f".secret_key.{os.getpid()}.new")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:  # another process of this gateway generated it first
            return _read_key_file(path)
    finally:
        draft.unlink(missing_ok=True)
    directory = os.open(settings.data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    log.warning("GATEWAY_SECRET_KEY is unset: generated one into %s; set it in production", path)
    return key


def _read_key_file(path: Path) -> str:
    """The generated key file's key; a damaged one (empty, truncated) is a ConfigError naming
    the file, not the unset variable."""
    key = path.read_text().strip()
    try:
        KeyRing.from_secret(key)
    except ValueError:
        raise ConfigError(
            f"GATEWAY_SECRET_KEY is unset and the key file {path} is damaged (empty, or a "
            "key shorter than 16 characters): restore it from a backup of the data "
            "directory, or set GATEWAY_SECRET_KEY to the gateway's key"
        ) from None
    return key


def _counted_and_due(metrics: Metrics, notify: Callable[[], None]) -> Callable[[int], None]:
    """Deliveries an admin's change failed as unsendable: counted as the worker counts its
    failures, and the worker woken for those they held in their lines."""

    def failed(count: int) -> None:
        metrics.deliveries.labels("failed").inc(count)
        notify()

    return failed


def _flow_users_of_actions(flows: FlowService) -> FlowUsers:
    async def users(tenant: str, name: str) -> list[dict[str, Any]]:
        return await flows.users_of(tenant, "action", name)

    return users
