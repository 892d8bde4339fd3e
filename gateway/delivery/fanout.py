"""Fan-out: one stored event → one delivery per matching subscription (its filter, from
`actions/filters.py`, says which).

The relay (`gateway/events.py`) calls `FanOut` for every event it moves out of an entity's
outbox, before it drains the outbox. A delivery's `_id` is `<event id>:<subscription id>`,
so running the relay again after a crash re-creates nothing: at-least-once fan-out with
exactly one delivery per (event, subscription).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Awaitable, Callable, Sequence, Set
from datetime import datetime
from typing import Any

from gateway.actions.catalog import Action, Catalog
from gateway.actions.filters import EventFilter, compile_filter, wanted_by
from gateway.actions.ordering import event_place
from gateway.clock import utcnow
from gateway.errors import InvalidPayload, NotFound
from gateway.events import AGAIN, Unfinished, public_event
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


FANOUT_CHUNK = 250
"""Deliveries a fan-out inserts in one round trip (each under its own deadline)."""
FANOUT_BUDGET = 500
"""Deliveries a fan-out inserts in one call (one relay pass) before it stops (`Unfinished`)."""


class FanOut:
    """`await fanout(events) -> created`; the relay (`gateway/events.py`) is built with it.

    Its work is bounded by deliveries, whatever the events' fan-out: each tenant's events
    in their order, the tenants taking turns of up to `chunk` deliveries, inserted `chunk`
    or so at a time (each insert under its own deadline); it stops once `max_deliveries`
    were inserted in one call, raising `Unfinished` with the events whose deliveries are
    all stored (the relay drains those), so one tenant's large fan-out neither holds up
    another tenant's events nor makes a pass the database cannot finish. A chunk stored is
    kept: done again (the next pass, a crash), its stored ids are read and skipped, not
    inserted again nor counted against the budget. Until 2026-12-07 a pass was one insert
    of every delivery of its 100 outboxes (up to 500,000), past the database's deadline,
    and redone every pass.

    That read is made only for the events marked `AGAIN` (`gateway/events.py`): those the
    event log held already when the pass stored them, or that an unfinished pass left.
    Any other event was stored by this very pass, and deliveries are inserted only after
    their event is stored, so none of its deliveries can exist: the normal path, an entity
    write's events relayed once, is one insert, no read (until 2026-12-08 every chunk was
    read first). The mark costs no database operation (the events' insert says which it
    held: its duplicate keys) and no write; inserting a pass done again blind instead
    (duplicate keys counted as such) would cost the database far more than the read, as
    the 500,000-delivery pass redone every pass showed, and would leave a pass's work
    unbounded by its budget."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_created: Callable[[], None] | None = None,
        chunk: int = FANOUT_CHUNK,
        max_deliveries: int = FANOUT_BUDGET,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._metrics = metrics
        self._clock = clock
        self._on_created = on_created
        self._chunk = chunk
        self._max = max_deliveries
        self._filters: dict[tuple[str, int], EventFilter] = {}

    async def __call__(self, events: Sequence[Doc]) -> int:
        """Create the deliveries of a batch of events: one subscription query per tenant,
        an insert per `chunk` or so (existing deliveries are left alone: re-running is
        harmless), read first for the stored ones of the events handed again."""
        now = self._clock()
        lines: dict[str, _Line] = {}
        for event in events:
            tenant = event["tenant"]
            if tenant not in lines:
                subs = await self._store.subscriptions.active(tenant)
                make = functools.partial(self._deliveries, subs=subs, now=now)
                lines[tenant] = _Line(make)
            lines[tenant].events.append(event)
        again = {str(event["_id"]) for event in events if event.get(AGAIN)}
        done = _Chunks(self._store, self._metrics, again)
        try:
            while lines:
                for tenant, line in list(lines.items()):
                    done.add(line, await line.take(self._chunk))
                    if line.exhausted:
                        del lines[tenant]
                    if done.size >= self._chunk or not lines:
                        await done.flush()
                        if done.inserted >= self._max and lines:
                            raise Unfinished(done.finished)  # the next pass goes on
        finally:
            if done.created and self._on_created is not None:  # due now: wake the worker
                self._on_created()
        return done.created

    async def _deliveries(self, event: Doc, *, subs: Sequence[Doc], now: datetime) -> list[Doc]:
        """The deliveries of one event, in the order of its tenant's subscriptions."""
        docs = []
        for sub in subs:
            if wanted_by(event, sub["event_types"], str(sub["_id"])) is not None:
                continue
            if not self._filter(sub).matches(event):
                continue
            try:
                action = await self._catalog.action(event["tenant"], sub["action_id"])
            except NotFound:
                continue  # deleted since; the subscription goes with it
            docs.append(delivery_document(event, sub, action, now))
        return docs

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


class _Line:
    """A tenant's events in a fan-out, in their order, and their deliveries made (`make`)
    but not yet handed out."""

    def __init__(self, make: Callable[[Doc], Awaitable[list[Doc]]]) -> None:
        self.events: deque[Doc] = deque()
        self._make = make
        self._docs: list[Doc] = []
        self._ends: deque[tuple[int, Any]] = deque()  # (where an event's deliveries end, its id)
        self._taken = 0
        self._stored = 0

    @property
    def exhausted(self) -> bool:
        return not self.events and not self._docs

    async def take(self, size: int) -> list[Doc]:
        """The next deliveries, up to `size` (made from the next events as needed)."""
        while len(self._docs) < size and self.events:
            event = self.events.popleft()
            self._docs += await self._make(event)
            self._ends.append((self._taken + len(self._docs), event["_id"]))
        taken, self._docs = self._docs[:size], self._docs[size:]
        self._taken += len(taken)
        return taken

    def stored(self, count: int) -> list[Any]:
        """`count` more of the deliveries taken are stored: the ids of the events whose
        deliveries are now all stored."""
        self._stored += count
        finished = []
        while self._ends and self._ends[0][0] <= self._stored:
            finished.append(self._ends.popleft()[1])
        return finished


class _Chunks:
    """The deliveries the lines handed out, inserted together (`flush`), and what is done."""

    def __init__(self, store: Store, metrics: Metrics, again: Set[str]) -> None:
        self._store = store
        self._metrics = metrics
        self._again = again  # the ids of the events handed again (`AGAIN`)
        self._parts: list[tuple[_Line, list[Doc]]] = []
        self.size = 0
        self.finished: list[Any] = []  # the events whose deliveries are all stored
        self.inserted = 0  # sent to the database (those found stored are not)
        self.created = 0

    def add(self, line: _Line, docs: list[Doc]) -> None:
        self._parts.append((line, docs))
        self.size += len(docs)

    async def flush(self) -> None:
        """Insert the deliveries handed out, those not stored yet. Journaled: the relay
        drains the events' outboxes after this (store/client.py `unjournaled` says why that
        needs it)."""
        docs = [doc for _, part in self._parts for doc in part]
        # Only an event handed again may have deliveries stored (`FanOut` says why).
        maybe = [doc["_id"] for doc in docs if doc["event"]["id"] in self._again]
        stored = await self._store.deliveries.stored(maybe)
        new = [doc for doc in docs if doc["_id"] not in stored]
        if new:
            self.inserted += len(new)
            self.created += await insert_deliveries(self._store, self._metrics, new)
        for line, part in self._parts:
            self.finished += line.stored(len(part))
        self._parts, self.size = [], 0
