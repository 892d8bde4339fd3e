"""The trigger components of one process, opened and closed together (app.py's cleanup_ctx)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.actions.jwks import jwks_fetcher
from gateway.actions.sender import Sender
from gateway.actions.ssrf import OutboundPolicy
from gateway.auth.keys import KeyRing
from gateway.auth.secretbox import SecretBox
from gateway.config import Settings
from gateway.entities import EntityService
from gateway.metrics import Metrics
from gateway.schemas import SchemaRegistry
from gateway.store import Store
from gateway.triggers.ingest import Ingestor, MappingSource
from gateway.triggers.receiver import HookReceiver
from gateway.triggers.rejected import RejectedPayloads
from gateway.triggers.service import TriggerService


@dataclass(frozen=True, slots=True)
class Triggers:
    service: TriggerService
    receiver: HookReceiver
    rejected: RejectedPayloads


@contextlib.asynccontextmanager
async def open_triggers(
    settings: Settings,
    store: Store,
    entities: EntityService,
    schemas: SchemaRegistry,
    mappings: MappingSource,
    ring: KeyRing,
    metrics: Metrics,
) -> AsyncIterator[Triggers]:
    """One receiver (one token verifier, one compiled-config cache) per process; partner
    JWKS documents come through an SSRF-guarded client of its own."""
    box = SecretBox(ring)
    async with Sender(OutboundPolicy.from_entries(settings.outbound_allow)) as sender:
        fetch = jwks_fetcher(sender)
        ingestor = Ingestor(store, entities, schemas, mappings, metrics)
        receiver = HookReceiver(
            store, entities, ingestor, mappings, ring, box, metrics, fetch=fetch
        )
        service = TriggerService(
            store,
            mappings,
            ring,
            box,
            base_url=settings.base_url,
            max_body_bytes=settings.max_body_bytes,
            max_batch_items=settings.max_batch_items,
            fetch=fetch,
        )
        yield Triggers(service, receiver, RejectedPayloads(store, receiver, ingestor))
