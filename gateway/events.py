"""Use cases: move events from entity outboxes into the event log and fan them out (the
relay), and read the log.

The relay is at-least-once and idempotent: an event keeps the id it was given in the outbox,
so a relay that dies between storing an event and draining it stores nothing twice. Several
processes relay at once, each the outboxes of its share of the relay shards (leased in
MongoDB, `gateway/shares.py`); during a hand-over two may race, to do the same idempotent
work. A relay is woken by its own process's writes (the doorbell) and otherwise looks for
other processes' every `poll_seconds`, the longest waiting outbox first; its passes start at
least `gather_seconds` apart, so that under light load the events of that time share a batch.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from collections.abc import Collection as Items
from datetime import datetime, timedelta
from typing import Any, Final

from gateway.clock import utcnow
from gateway.doorbell import Doorbell
from gateway.errors import NotFound, StoreUnavailable
from gateway.metrics import Metrics
from gateway.shares import ShardedJob, ShardedLoop, Shares
from gateway.store import Doc, Store
from gateway.store.events import FEED_SETTLE, feed_cursor, parse_feed_cursor

TYPE_FAMILIES = frozenset({"entity", "vehicle", "fine", "checklist"})
"""The event families `gateway_events_relayed_total` names: the gateway's own (`entity.*`,
the fleet's `vehicle.*`) and those of its shipped mappings (`fine.*`, `checklist.*`). A
mapping's custom type (`emit: [acme.thing]`) counts as `custom`: a label value a tenant
chose would make the series as many as the types tenants invent."""


def type_family(event_type: str) -> str:
    family = event_type.split(".", 1)[0]
    return family if family in TYPE_FAMILIES else "custom"


log = logging.getLogger(__name__)

LOOK_FOR_OTHERS_SECONDS: Final = 1.0
"""How long a relay whose batch one tenant crowds waits, after it found no other tenant's
outbox behind it, before it looks again (`EventRelay._pending`)."""
_MAX_CARRIED: Final = 100_000  # events an unfinished pass stored, remembered for the next

# An outbox the relay moved, with the ids of the entries it moved (`drain_outboxes`).
Drain = tuple[Doc, list[Any]]

# Called with each batch of relayed events before their outboxes are drained (the delivery
# fan-out, `delivery/fanout.py`, creates their deliveries); returns how many it created, or
# raises `Unfinished` when it stopped at its budget.
OnRelayed = Callable[[Sequence[Doc]], Awaitable[int]]


AGAIN: Final = "again"
"""The member (never stored, never shown: `_INTERNAL`) set true on an event handed to the
relay hooks not for the first time: the event log held it already when the pass stored it
(an earlier pass's, of any process, that failed or died after storing it), or it is one an
unfinished pass left (`Unfinished`: this relay's carried events, `relay_all`'s next call).
Only such an event may have deliveries stored: the fan-out reads which of its deliveries
are stored only for these (`delivery/fanout.py` `_Chunks.flush`)."""


def mark_again(events: Iterable[Doc]) -> None:
    for event in events:
        event[AGAIN] = True


class Unfinished(Exception):
    """A relay hook stopped at its budget for one call (the fan-out: `max_deliveries`
    inserted): the events it names (`finished`, ids) are done, what it stored of the others
    is kept (deterministic ids), and it is called again with those. Of each entity's events
    the finished ones come first (each tenant's events are taken in their order). The relay
    drains only the finished ones; the next pass takes the others."""

    def __init__(self, finished: Iterable[Any]) -> None:
        self.finished = frozenset(finished)
        super().__init__(f"{len(self.finished)} events finished")

    def left(self, events: Sequence[Doc]) -> list[Doc]:
        """Those of `events` not finished."""
        return [event for event in events if event["_id"] not in self.finished]


async def relay_all(on_relayed: OnRelayed, events: Sequence[Doc]) -> None:
    """Call `on_relayed` until every one of `events` is done (the fold's pass, which
    writes its events and their deliveries before its state): each call does a bounded
    share and keeps it."""
    while events:
        try:
            await on_relayed(events)
            return
        except Unfinished as stop:
            events = stop.left(events)
            mark_again(events)


def event_document(tenant: str, entity: Doc, entry: Doc, relayed_at: datetime | None) -> Doc:
    """The stored event of an outbox entry; `relayed_at` - `occurred_at` is the relay's lag
    (None: an entry not relayed yet, read from its outbox)."""
    data = entry["data"]
    event: Doc = {
        "_id": entry["id"],
        "tenant": tenant,
        "type": entry["type"],
        "occurred_at": entry["occurred_at"],
        "relayed_at": relayed_at,
        "entity": {
            "type": entry["entity_type"],
            "id": str(entity["_id"]),
            "key": entity_key(entry["entity_type"], entity["nk"], data),
            "rev": entry.get("entity_rev", 0),
        },
        "position": entry.get("position", 0),
        "data": data,
        "changes": entry["changes"],
        "origin": entry["origin"],
    }
    if "detail" in entry:
        event["detail"] = entry["detail"]
    if "occurrence_id" in entry:
        event["occurrence_id"] = entry["occurrence_id"]
    return event


def entity_key(entity_type: str, nk: str, data: Any) -> str:
    """The key an event names its entity by, the one its writers answer and read it by: a
    vehicle's plate as its document holds it (the plate on the vehicle, as last sent; the
    stored natural key `nk` is the plate's Mercosul form, a twin no one may have written),
    any other entity's natural key (`kind:key` for an `other`, its admin reference)."""
    if entity_type == "vehicle" and isinstance(data, dict) and isinstance(data.get("plate"), str):
        return str(data["plate"])
    return nk.split("#deleted#")[0]


# Stored members that are not the event document: whose it is, and whom the fold made it for
# (`audience`: the subscription ids and `flow:<name>`s the fan-out and the flow starter route it
# to, `actions/filters.py` `wanted_by`), never shown to a partner, the events API or a flow.
_INTERNAL: Final = frozenset({"_id", "tenant", "audience", AGAIN})


def public_event(doc: Doc) -> dict[str, Any]:
    """The event document: what a webhook carries, the events API lists and a flow reads."""
    return {"id": str(doc["_id"]), **{k: v for k, v in doc.items() if k not in _INTERNAL}}


class EventLog:
    """Use case: the tenant's event log, newest first (what the relay stored), and its feed
    (`follow`)."""

    def __init__(self, store: Store, *, settle_seconds: float = FEED_SETTLE) -> None:
        self._store = store
        self._settle = timedelta(seconds=settle_seconds)

    async def follow(self, tenant: str, after: str, limit: int) -> tuple[list[Doc], str]:
        """The feed: up to `limit` events stored after the point `after` names, in the order
        they were stored (`relayed_at`, then id), and the cursor to read on from (the last
        one's, or `after`'s again). Only events stored a settle window ago or more: one
        stored at a time already answered, by a relay whose insert took long to become
        visible, would be passed over for good. `after` is a feed cursor or an RFC 3339
        date-time (the events stored after that moment)."""
        at, after_id = parse_feed_cursor(after)
        until = utcnow() - self._settle
        docs = await self._store.events.stored_after(tenant, at, after_id, until=until, limit=limit)
        return docs, feed_cursor(docs[-1]) if docs else after

    async def find(
        self,
        tenant: str,
        *,
        event_type: str | None = None,
        entity_id: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> list[Doc]:
        filters = {}
        if event_type:
            filters["type"] = event_type
        if entity_id:
            filters["entity.id"] = entity_id
        return await self._store.events.find(tenant, filters, before=before, limit=limit)

    async def deletion(self, tenant: str, etype: str, entity_id: str, *, recent: int) -> Doc | None:
        """The `entity.deleted` event of the entity of this type and id, if it was deleted:
        from the entity's outbox while the relay has not moved it yet (the delete writes it
        there, in the same update that deletes), else from the event log while it holds it
        (the newest of the entity's `recent` events, by the index of an entity's events).
        Read in that order: the relay stores an event before it drains its outbox, so a
        deletion relayed between the two reads is in the log."""
        pending = await self._store.entities.deleted_outbox(tenant, etype, entity_id)
        if pending is not None:
            for entry in pending.get("outbox", ()):
                if entry.get("type") == "entity.deleted":
                    return event_document(tenant, pending, entry, None)
        for event in await self.find(tenant, entity_id=entity_id, limit=recent):
            if (
                event["type"] == "entity.deleted"
                and (event.get("entity") or {}).get("type") == etype
            ):
                return event
        return None

    async def get(self, tenant: str, event_id: str) -> Doc:
        doc = await self._store.events.get(tenant, event_id)
        if doc is None:
            raise NotFound(f"no event {event_id!r}")
        return doc


class EventRelay(ShardedJob):
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        on_relayed: OnRelayed,
        doorbell: Doorbell,
        shares: Shares | None = None,
        batch: int = 100,
        per_tenant: int = 10,
        poll_seconds: float = 0.2,
        gather_seconds: float = 0.1,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._on_relayed = on_relayed
        self._batch = batch
        self._per_tenant = per_tenant
        self._look_again = 0.0  # when to look for other tenants' outboxes behind a crowd
        # `shares` None: every shard (a single relay, or a test driving it). Passes start at
        # least `gather_seconds` apart: under light load the writes of that time go in one
        # batch (three writes and one read for all) instead of one batch each. The doorbell
        # is rung by the entity service after every write that added events.
        self._loop = ShardedLoop(
            "event relay",
            shares,
            self.run_until_idle,
            doorbell=doorbell,
            poll_seconds=poll_seconds,
            min_interval=gather_seconds,
            on_shards=metrics.relay_shards.set,
        )
        self._unparkable: list[Any] = []  # entities this process skips (see _park)
        # The drains the database failed, with their events (see _settle).
        self._in_doubt: list[tuple[Sequence[Drain], list[Doc], datetime]] = []
        # The events stored by a pass whose fan-out stopped at its budget, with their stamp.
        self._stored: dict[Any, datetime] = {}

    async def relay_once(self, shards: Items[int] | None = None) -> int:
        """Relay one batch of outboxes (of these relay shards; all when None), the longest
        waiting first; returns how many outbox entries it handled.

        Three writes a batch: the events (new ones only), their deliveries (an insert per
        250 or so, up to 500 a pass: `delivery/fanout.py`; a pass that stops there drains
        the events it finished), and the drain of the outboxes. The fan-out runs even for
        events stored by an earlier relay that died before draining: deliveries have
        deterministic ids, so that re-creates nothing, and no event is left without its
        deliveries."""
        process = await self._store.server_process()
        await self._settle()
        entities = await self._pending(shards)
        self._measure_waiting(entities)
        if not entities:
            return 0
        # An outbox read may be a write applied but not yet journaled (a group-commit round
        # before its seal): durable once the same process flushes its journal. A database
        # restarted meanwhile may have lost it, and its events must not be announced.
        await self._store.fence(process)
        try:
            return await self._relay(entities)
        except Exception as exc:
            if _database_failed(exc):  # not the outboxes: they all wait for the next pass
                raise
            await self._store.ping()  # raises if the database itself is the problem
        # One entity's outbox must not stall everyone's: relay them one by one, and set aside
        # those that still fail while the database answers.
        handled = 0
        for entity in entities:
            try:
                handled += await self._relay([entity])
            except Exception as exc:
                if _database_failed(exc):
                    raise
                await self._store.ping()
                await self._park(entity)
        return handled or len(entities)

    async def _pending(self, shards: Items[int] | None) -> list[Doc]:
        """The outboxes of a pass, shared fairly between tenants: the longest waiting, at
        most `per_tenant` of one tenant while others' wait (read beside them), the rest of
        the batch filled with more of theirs; in turns by tenant (each tenant's longest
        waiting first), so that a tenant's one event is not queued behind another's backlog
        and its fan-out (which stops at its budget, `delivery/fanout.py`)."""
        pending = self._store.entities.pending_outboxes
        read = await pending(self._batch, shards, self._unparkable)
        taken, left_over = _capped(read, self._per_tenant)
        # A read that found no other tenant is not made again for a second: a tenant alone
        # with a backlog (the relay's peak) pays it once a second, not every pass.
        if left_over and len(read) == self._batch and time.monotonic() >= self._look_again:
            crowded = {doc["tenant"] for doc in left_over}
            seen = [*self._unparkable, *(doc["_id"] for doc in taken)]
            others = await pending(self._batch - len(taken), shards, seen, other_than=crowded)
            if not others:
                self._look_again = time.monotonic() + LOOK_FOR_OTHERS_SECONDS
            taken, more = _capped(taken + others, self._per_tenant)
            left_over = more + left_over
        taken += left_over[: self._batch - len(taken)]
        return _in_turns(taken)

    async def _park(self, entity: Doc) -> None:
        reason = traceback.format_exc(limit=1).strip().splitlines()[-1]
        log.error("outbox of entity %s parked: %s", entity["_id"], reason)
        self._metrics.outboxes_parked.inc()
        await self._release_claims(entity)
        try:
            await self._store.entities.park_outbox(entity, reason)
        except Exception as exc:
            if _database_failed(exc):
                raise
            # The database refuses even to update it (e.g. nested deeper than it can
            # rewrite): this process leaves it aside from now on, the log says which.
            log.error("outbox of entity %s cannot be parked either (%s)", entity["_id"], exc)
            self._unparkable.append(entity["_id"])

    async def _release_claims(self, entity: Doc) -> None:
        """Release the occurrence claims of the events of an outbox being parked that the
        log does not hold: nothing announced them, so a later copy of their occurrence must
        be (store/occurrences.py says why this, and why before the park)."""
        now = utcnow()
        try:
            events = []
            for entry in entity.get("outbox", []):
                with contextlib.suppress(Exception):  # not an event: it claimed nothing
                    events.append(event_document(entity["tenant"], entity, entry, now))
            stored = await self._store.events.stored([event["_id"] for event in events])
            await self._store.occurrences.release([e for e in events if e["_id"] not in stored])
        except Exception as exc:
            if _database_failed(exc):
                raise
            log.error("occurrence claims of entity %s kept: %s", entity["_id"], exc)

    def _measure_waiting(self, entities: Sequence[Doc]) -> None:
        """How long the longest waiting outbox of this relay's shards has waited (the oldest
        `pending` read: the pass reads the oldest first); 0 when none waits."""
        times = [e["pending"] for e in entities if isinstance(e.get("pending"), datetime)]
        waiting = min(times, default=None)
        age = (utcnow() - waiting).total_seconds() if waiting is not None else 0
        self._metrics.measured(self._metrics.relay_oldest_waiting, max(age, 0.0))

    async def _relay(self, entities: Sequence[Doc]) -> int:
        now = utcnow()
        events: list[Doc] = []
        drained: list[Drain] = []
        for entity in entities:
            entries = entity.get("outbox", [])
            events += [event_document(entity["tenant"], entity, entry, now) for entry in entries]
            drained.append((entity, [entry["id"] for entry in entries]))
        # An occurrence the partner reported again (a redelivered webhook) is announced once:
        # its repeats are drained without being stored (store/occurrences.py).
        if repeats := await self._store.occurrences.repeats(events, now):
            events = [event for event in events if event["_id"] not in repeats]
            self._metrics.events_repeated.inc(len(repeats))
        await self._store_events(events)
        try:
            await self._on_relayed(events)
        except Unfinished as stop:  # a large fan-out: drain the events it finished
            return await self._drain_finished(drained, events, stop, now)
        await self._drain(drained, events, now)
        return len(events) or len(drained)

    async def _store_events(self, events: list[Doc]) -> None:
        """Store the events, but those an earlier pass of this relay stored and did not
        finish (a large fan-out): they keep their stamp (`relayed_at`), as their deliveries
        made then carry it, and are not stamped again as stored late (`store/events.py`
        `_restamp`: the feed would answer them twice). Those and the ones the log held
        already are marked `AGAIN`."""
        fresh = []
        for event in events:
            if (stamp := self._stored.get(event["_id"])) is not None:
                event["relayed_at"] = stamp
                event[AGAIN] = True
            else:
                fresh.append(event)
        if len(self._stored) > _MAX_CARRIED:  # outboxes another relay took over meanwhile
            self._stored.clear()
        held = await self._store.events.insert_many(fresh)
        mark_again(event for event in fresh if event["_id"] in held)

    async def _drain(self, drained: Sequence[Drain], events: list[Doc], began: datetime) -> None:
        try:
            await self._store.entities.drain_outboxes(drained)
        except Exception as exc:
            if _database_failed(exc):
                self._in_doubt.append((drained, events, began))
            raise
        self._count(events, began)

    def _count(self, events: Sequence[Doc], began: datetime) -> None:
        """Count relayed (drained) events and observe their lag: their `relayed_at` -
        `occurred_at`, or, for an event stored by an earlier pass that did not finish its
        fan-out, from its write to the pass (begun at `began`) that finished it."""
        now = utcnow()
        for event in events:
            self._stored.pop(event["_id"], None)
            self._metrics.events_relayed.labels(type_family(event["type"])).inc()
            # Not past now: after a step back of the time the stamp is held above its floor.
            lag = min(max(event["relayed_at"], began), now) - event["occurred_at"]
            self._metrics.relay_lag.observe(lag.total_seconds())

    async def _drain_finished(
        self, drained: Sequence[Drain], events: list[Doc], stop: Unfinished, began: datetime
    ) -> int:
        """Drain, of each outbox, its entries up to its first event not finished (the
        repeats among them too: never stored); the others wait in their outboxes for the
        next pass, which does not store their events again (`_store_events`). Returns 1
        when no event was finished: deliveries were stored all the same, and the relay goes
        on."""
        left = {event["_id"] for event in stop.left(events)}
        heads: list[Drain] = []
        for entity, ids in drained:
            head = list(itertools.takewhile(lambda i: i not in left, ids))
            if head:
                heads.append((entity, head))
        going = {i for _, head in heads for i in head}
        self._stored.update((e["_id"], e["relayed_at"]) for e in events if e["_id"] not in going)
        done = [event for event in events if event["_id"] in going]
        await self._drain(heads, done, began)
        return len(done) or 1

    async def _settle(self) -> None:
        """Finish the passes whose drain the database failed, before anything else: a
        deadline passed, the connection broke, a write concern failed, and the drain may
        have landed all the same (a stalled server applies what it had queued once it
        resumes), so the next pass would find those outboxes empty and nobody would count
        their events, the ones that waited longest. Their events are stored and their
        deliveries created; the same drain again (idempotent: the outboxes of the same
        `rev` go, otherwise only those entries) makes them drained whatever became of the
        first, and then they are counted, once."""
        while self._in_doubt:
            drained, events, began = self._in_doubt[0]
            try:
                await self._store.entities.drain_outboxes(drained)
            except Exception as exc:
                if _database_failed(exc):
                    raise  # still in doubt: the next pass tries again
                # Refused: the pass handles these outboxes (stored, and counted, again).
                log.error("drain of %d outboxes refused: %s", len(drained), exc)
            else:
                self._count(events, began)
            del self._in_doubt[0]

    async def run_until_idle(
        self, shards: Items[int] | None = None, until: float = math.inf
    ) -> int:
        """Relay until no outbox (of these shards; all when None) holds anything or, once a
        batch is done, past `until` (monotonic: the loop's next renewal of the shards, which
        a steady stream of writes would otherwise put off for as long as it lasts); returns
        how many entries were handled."""
        total = 0
        while handled := await self.relay_once(shards):
            total += handled
            if time.monotonic() >= until:
                break
        return total


def _capped(docs: Sequence[Doc], per_tenant: int) -> tuple[list[Doc], list[Doc]]:
    """`docs` (in their order) up to `per_tenant` of each tenant, and the others."""
    seen: dict[str, int] = {}
    taken: list[Doc] = []
    left_over: list[Doc] = []
    for doc in docs:
        seen[doc["tenant"]] = seen.get(doc["tenant"], 0) + 1
        (taken if seen[doc["tenant"]] <= per_tenant else left_over).append(doc)
    return taken, left_over


def _in_turns(docs: Sequence[Doc]) -> list[Doc]:
    """`docs` taken a tenant at a time, round after round, each tenant's in their order
    (the tenants in the order of their first)."""
    by_tenant: dict[str, list[Doc]] = {}
    for doc in docs:
        by_tenant.setdefault(doc["tenant"], []).append(doc)
    rounds = itertools.zip_longest(*by_tenant.values())
    return [doc for turn in rounds for doc in turn if doc is not None]


def _database_failed(exc: Exception) -> bool:
    """The database failed (unreachable, a deadline, its state: a primary stepping down, a
    full disk, a failed write concern), as opposed to refusing what an outbox holds: a
    database that still answers a ping used to be taken for the latter, and every outbox of
    the batch was parked."""
    return isinstance(exc, StoreUnavailable) and not exc.refused
