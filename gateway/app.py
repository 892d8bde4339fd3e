"""create_app(settings): the application's table of contents."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway import __version__
from gateway.actions.catalog import Catalog, partner_guards
from gateway.actions.deliveries import DeliveryService
from gateway.actions.fanout import FanOut
from gateway.actions.jwks import jwks_fetcher
from gateway.actions.proxy import Proxy
from gateway.actions.sender import Sender
from gateway.actions.service import ActionService
from gateway.actions.ssrf import OutboundPolicy
from gateway.actions.worker import DeliveryWorker, WorkerSettings
from gateway.auth.keys import KeyRing, generate_secret_key
from gateway.auth.partner_jwt import JwtPolicy, PartnerJwtVerifier
from gateway.auth.secretbox import SecretBox
from gateway.auth.tokens import AdminTokenVerifier, ExternalAdminVerifier
from gateway.background import cancel_and_wait
from gateway.config import Settings
from gateway.entities import EntityService
from gateway.errors import StoreUnavailable
from gateway.events import EventRelay
from gateway.keys import (
    actions_key,
    admin_verifier_key,
    db_health_key,
    deliveries_key,
    delivery_worker_key,
    entities_key,
    fanout_key,
    hooks_key,
    keyring_key,
    kinds_key,
    mappings_key,
    metrics_key,
    proxy_key,
    rejected_key,
    relay_key,
    schemas_key,
    settings_key,
    store_key,
    triggers_key,
)
from gateway.kinds import KindService
from gateway.mappings import MappingService
from gateway.metrics import Metrics
from gateway.schemas.registry import SchemaRegistry, default_schema_dir
from gateway.store import Store
from gateway.store.connection import open_connection
from gateway.triggers.wiring import open_triggers
from gateway.web.middlewares import edge
from gateway.web.routes import add_routes

log = logging.getLogger(__name__)


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


def create_app(settings: Settings, *, mongodb_uri: str | None = None) -> web.Application:
    """`mongodb_uri` overrides the settings (tests point every app at their own database)."""
    app = web.Application(middlewares=[edge], client_max_size=settings.max_body_bytes)
    app[settings_key] = settings
    app[metrics_key] = Metrics(__version__)
    app[keyring_key] = KeyRing.from_secret(load_secret_key(settings))
    app[schemas_key] = SchemaRegistry.load(settings.schema_dir or default_schema_dir())
    app.cleanup_ctx.append(_database(mongodb_uri or settings.mongodb_uri))
    app.cleanup_ctx.append(_admin_auth)
    app.cleanup_ctx.append(_actions)  # before the relay: it fans out to deliveries
    app.cleanup_ctx.append(_triggers)
    app.cleanup_ctx.append(_event_relay)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("gateway.web", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    add_routes(app)
    return app


def _database(uri: str | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[settings_key]
        async with open_connection(
            uri,
            data_dir=Path(settings.data_dir),
            database=settings.database,
            timeout_ms=settings.db_timeout_ms,
            write_concern=settings.db_write_concern,
        ) as connection:
            store = connection.store
            app[db_health_key] = connection.health
            indexes = None
            try:
                await store.ensure_indexes()
            except StoreUnavailable as exc:
                log.error("database unavailable at start (%s); serving 503 until it answers", exc)
                indexes = asyncio.create_task(_ensure_indexes(store))
            app[store_key] = store
            app[kinds_key] = KindService(store, app[schemas_key])
            app[entities_key] = EntityService(store, app[schemas_key], app[kinds_key])
            app[mappings_key] = MappingService(
                store, app[schemas_key], app[entities_key], app[kinds_key]
            )
            yield
            await cancel_and_wait(indexes)

    return ctx


async def _ensure_indexes(store: Store) -> None:
    """The gateway starts even if the database is down: readiness answers 503 and the indexes
    are created as soon as it answers (creating an existing index is a no-op)."""
    while True:
        await asyncio.sleep(5)
        try:
            await store.ensure_indexes()
            return
        except StoreUnavailable:
            continue


async def _admin_auth(app: web.Application) -> AsyncIterator[None]:
    """Admin tokens: ours, and an identity provider's when GATEWAY_ADMIN_JWKS_URL is set (its
    keys fetched through the SSRF-guarded client)."""
    settings, ring = app[settings_key], app[keyring_key]
    if settings.admin_jwks_url is None:
        app[admin_verifier_key] = AdminTokenVerifier(ring)
        yield
        return
    async with Sender(OutboundPolicy.from_entries(settings.outbound_allow)) as sender:
        policy = JwtPolicy(issuer=settings.admin_jwt_issuer, audience=settings.admin_jwt_audience)
        keys = PartnerJwtVerifier.from_jwks(settings.admin_jwks_url, jwks_fetcher(sender), policy)
        external = ExternalAdminVerifier(
            keys, tenant_claim=settings.admin_tenant_claim, role_claim=settings.admin_role_claim
        )
        app[admin_verifier_key] = AdminTokenVerifier(ring, external)
        yield


async def _triggers(app: web.Application) -> AsyncIterator[None]:
    """Trigger admin, the partner-facing receiver and rejected payloads, for this process."""
    async with open_triggers(
        app[settings_key],
        app[store_key],
        app[entities_key],
        app[schemas_key],
        app[mappings_key],
        app[keyring_key],
        app[metrics_key],
    ) as triggers:
        app[triggers_key] = triggers.service
        app[hooks_key] = triggers.receiver
        app[rejected_key] = triggers.rejected
        yield


async def _event_relay(app: web.Application) -> AsyncIterator[None]:
    relay = app[relay_key] = EventRelay(app[store_key], app[metrics_key])
    relay.set_fanout(app[fanout_key])  # before the relay runs: no event without its deliveries
    task = asyncio.create_task(relay.run()) if app[settings_key].run_workers else None
    yield
    await cancel_and_wait(task)


async def _actions(app: web.Application) -> AsyncIterator[None]:
    """Partners, actions, proxy, fan-out and the delivery worker around one HTTP client."""
    settings, store, metrics = app[settings_key], app[store_key], app[metrics_key]
    box = SecretBox(app[keyring_key])
    catalog = Catalog(store, box, metrics)
    guards = partner_guards(metrics)
    async with Sender(OutboundPolicy.from_entries(settings.outbound_allow)) as sender:
        app[actions_key] = ActionService(store, box, catalog, app[mappings_key])
        app[proxy_key] = Proxy(
            catalog, sender, guards, app[entities_key], app[mappings_key], metrics
        )
        worker = app[delivery_worker_key] = DeliveryWorker(
            store,
            catalog,
            sender,
            guards,
            app[mappings_key],
            metrics,
            settings=WorkerSettings(
                lease_seconds=settings.delivery_lease_seconds,
                concurrency=settings.delivery_concurrency,
                poll_seconds=settings.delivery_poll_seconds,
                probe_seconds=settings.partner_probe_seconds,
                shutdown_seconds=settings.delivery_shutdown_seconds,
            ),
        )
        app[fanout_key] = FanOut(store, catalog, metrics, on_created=worker.notify)
        app[deliveries_key] = DeliveryService(store, on_replay=worker.notify)
        task = asyncio.create_task(worker.run()) if settings.run_workers else None
        yield
        if task:
            await worker.stop()
            await task
