"""Fan-out: one stored event → one delivery per matching subscription (its filter, from
`actions/filters.py`, says which).

The relay (`gateway/events.py`) calls `FanOut` for every event it moves out of an entity's
outbox, before it drains the outbox. A delivery's `_id` is `<event id>:<subscription id>`,
so running the relay again after a crash re-creates nothing: at-least-once fan-out with
exactly one delivery per (event, subscription).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime

from gateway.actions.catalog import Action, Catalog
from gateway.actions.filters import EventFilter, compile_filter, wanted_by
from gateway.actions.ordering import event_place
from gateway.clock import utcnow
from gateway.errors import InvalidPayload, NotFound
from gateway.events import public_event
from gateway.metrics import Metrics
from gateway.models import DeliveryStatus
from gateway.store import Doc, Store
from gateway.store.deliveries import shard_of

_MAX_FILTERS_CACHED = 10_000


async def insert_deliveries(store: Store, metrics: Metrics, docs: Sequence[Doc]) -> int:
    """Store new deliveries, whoever made them (an event's fan-out here, a flow's `call` or
    `notify` step), each counted `created` in `gateway_deliveries_total` once: the number
    stored (one already stored, made again by a step or a relay run again, is not)."""
    created = await store.deliveries.insert_many(docs)
    if created:
        metrics.deliveries.labels("created").inc(created)
    return created


def delivery_document(event: Doc, sub: Doc, action: Action, now: datetime) -> Doc:
    """A new delivery, due now: the first attempt is made at once (retries on the schedule)."""
    event_id = str(event["_id"])
    entity_id = (event.get("entity") or {}).get("id")
    delivery_id = f"{event_id}:{sub['_id']}"
    doc: Doc = {
        "_id": delivery_id,
        "shard": shard_of(delivery_id),
        "tenant": event["tenant"],
        "event": public_event(event),
        "event_type": event["type"],
        "subscription_id": str(sub["_id"]),
        "action_id": action.id,
        "partner_id": action.partner_id,
        "entity_id": entity_id,
        "status": DeliveryStatus.PENDING.value,
        "next_attempt_at": now,
        "attempt_count": 0,
        "attempts": [],
        "created_at": now,
        "updated_at": now,
    }
    if action.ordered:
        doc.update(event_place(action.id, event, delivery_id))
    return doc


class FanOut:
    """`await fanout(events) -> created`; the relay (`gateway/events.py`) is built with it."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_created: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._metrics = metrics
        self._clock = clock
        self._on_created = on_created
        self._filters: dict[tuple[str, int], EventFilter] = {}

    async def __call__(self, events: Sequence[Doc]) -> int:
        """Create the deliveries of a batch of events: one subscription query per tenant,
        one insert for all (existing deliveries are left alone: re-running is harmless)."""
        by_tenant: dict[str, list[Doc]] = defaultdict(list)
        for event in events:
            by_tenant[event["tenant"]].append(event)
        now = self._clock()
        docs = []
        for tenant, tenant_events in by_tenant.items():
            subs = await self._store.subscriptions.active(tenant)
            for event in tenant_events:
                for sub in subs:
                    if wanted_by(event, sub["event_types"], str(sub["_id"])) is not None:
                        continue
                    if not self._filter(sub).matches(event):
                        continue
                    try:
                        action = await self._catalog.action(tenant, sub["action_id"])
                    except NotFound:
                        continue  # deleted since; the subscription goes with it
                    docs.append(delivery_document(event, sub, action, now))
        # Journaled: the relay drains the events' outboxes after this (store/client.py
        # `unjournaled` says why that needs it).
        created = await insert_deliveries(self._store, self._metrics, docs)
        if created and self._on_created is not None:  # due now: wake the worker
            self._on_created()
        return created

    def _filter(self, sub: Doc) -> EventFilter:
        key = (str(sub["_id"]), int(sub.get("rev", 0)))
        compiled = self._filters.get(key)
        if compiled is None:
            try:
                compiled = compile_filter(sub.get("filter") or {})
            except InvalidPayload:
                compiled = EventFilter(entity_types=frozenset())  # matches nothing
            if len(self._filters) >= _MAX_FILTERS_CACHED:
                self._filters.clear()
            self._filters[key] = compiled
        return compiled
