"""Fan-out: one stored event → one delivery per matching subscription; the filter language.

The relay (`gateway/events.py`) calls `FanOut` for every event it moves out of an entity's
outbox, before it drains the outbox. A delivery's `_id` is `<event id>:<subscription id>`,
so running the relay again after a crash re-creates nothing: at-least-once fan-out with
exactly one delivery per (event, subscription).

Filters (a subscription's `filter`, every member optional, all must match):

    {"entity_type": "vehicle" | ["vehicle", "driver"],
     "changed": ["odometer_km", "position"],     any of these fields (or below them) changed
     "entity": {"group": "north", "status": ["active", "maintenance"], "plate": null},
                                                  the entity's data at the event: a value, any
                                                  of a list, null for "absent"; dotted paths
     "origin": {"kind": "trigger"}}              who caused the event (kind, id)
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.actions.catalog import Action, Catalog
from gateway.delivery.retry import DeliveryStatus, next_attempt_at
from gateway.errors import FieldProblem, InvalidPayload, NotFound
from gateway.events import public_event
from gateway.metrics import Metrics
from gateway.store import Doc, Store
from gateway.store.deliveries import shard_of

_EVENT_TYPE = re.compile(r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$")
_MAX_VALUES = 100
_MAX_FILTERS_CACHED = 10_000
_SCALARS = (str, int, float, bool, type(None))

Values = tuple[tuple[str, tuple[Any, ...]], ...]


def event_type_problem(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 100 or not _EVENT_TYPE.match(value):
        return 'an event type is like "entity.updated", "vehicle.*" (a family) or "*" (everything)'
    return None


def event_type_keys(event_type: str) -> list[str]:
    """The subscription event_types that name `event_type`: itself, its families, "*"."""
    parts = event_type.split(".")
    families = [".".join(parts[:i]) + ".*" for i in range(len(parts) - 1, 0, -1)]
    return [event_type, *families, "*"]


@dataclass(frozen=True, slots=True)
class EventFilter:
    entity_types: frozenset[str] | None = None
    changed: tuple[str, ...] = ()
    entity: Values = ()
    origin: Values = ()

    def matches(self, event: Mapping[str, Any]) -> bool:
        entity = event.get("entity") or {}
        if self.entity_types is not None and entity.get("type") not in self.entity_types:
            return False
        if self.changed:
            fields = [c.get("field", "") for c in event.get("changes") or ()]
            if not any(_related(f, want) for f in fields for want in self.changed):
                return False
        return _all_match(self.entity, event.get("data") or {}) and _all_match(
            self.origin, event.get("origin") or {}
        )


def _related(changed: str, wanted: str) -> bool:
    """A change at `a.b` concerns a filter on `a` and on `a.b.c` (a whole object replaced)."""
    return changed == wanted or changed.startswith(wanted + ".") or wanted.startswith(changed + ".")


def _all_match(values: Values, document: Mapping[str, Any]) -> bool:
    return all(_dig(document, path) in allowed for path, allowed in values)


def _dig(document: Mapping[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def compile_filter(raw: Any) -> EventFilter:
    """A subscription's filter, checked whole; InvalidPayload names every bad member."""
    problems: list[FieldProblem] = []
    if not isinstance(raw, Mapping):
        raise InvalidPayload(
            "invalid filter", [FieldProblem("/filter", "filter must be an object", "type")]
        )
    for key in raw:
        if key not in ("entity_type", "changed", "entity", "origin"):
            problems.append(
                FieldProblem(
                    f"/filter/{key}",
                    f"unknown filter {key!r}; use entity_type, changed, entity, origin",
                    "additionalProperties",
                )
            )
    result = EventFilter(
        entity_types=_entity_types(raw.get("entity_type"), problems),
        changed=_fields(raw.get("changed"), problems),
        entity=_values(raw.get("entity"), "/filter/entity", problems),
        origin=_values(raw.get("origin"), "/filter/origin", problems),
    )
    if problems:
        raise InvalidPayload("invalid filter", problems)
    return result


def _entity_types(value: Any, problems: list[FieldProblem]) -> frozenset[str] | None:
    if value is None:
        return None
    types = [value] if isinstance(value, str) else value
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        problems.append(
            FieldProblem("/filter/entity_type", "entity_type is a type or a list of types", "type")
        )
        return None
    return frozenset(types)


def _fields(value: Any, problems: list[FieldProblem]) -> tuple[str, ...]:
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or not value
        or len(value) > _MAX_VALUES
        or not all(isinstance(f, str) and f for f in value)
    ):
        problems.append(
            FieldProblem(
                "/filter/changed", "changed is a list of field names (dotted paths)", "type"
            )
        )
        return ()
    return tuple(value)


def _values(value: Any, at: str, problems: list[FieldProblem]) -> Values:
    if value is None:
        return ()
    if not isinstance(value, Mapping) or len(value) > _MAX_VALUES:
        problems.append(FieldProblem(at, "expected an object of field: value", "type"))
        return ()
    out = []
    for path, wanted in value.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if (
            not path
            or len(options) > _MAX_VALUES
            or not all(isinstance(o, _SCALARS) for o in options)
        ):
            problems.append(
                FieldProblem(
                    f"{at}/{path}",
                    "a value, or a list of values, each a string, number, boolean or null",
                    "type",
                )
            )
            continue
        out.append((str(path), tuple(options)))
    return tuple(out)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def delivery_document(event: Doc, sub: Doc, action: Action, now: datetime, first: datetime) -> Doc:
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
        "next_attempt_at": first,
        "attempt_count": 0,
        "attempts": [],
        "created_at": now,
        "updated_at": now,
    }
    if action.ordered and entity_id:
        doc["order_key"] = f"{action.id}:{entity_id}"
        # Sorts by the entity's revision, then the event's place in that write.
        rev = int((event.get("entity") or {}).get("rev", 0))
        doc["seq"] = f"{rev:012d}.{int(event.get('position', 0)):03d}.{delivery_id}"
        # One shard per order key: a worker claims them together and sends them in turn.
        doc["shard"] = shard_of(doc["order_key"])
    return doc


class FanOut:
    """`await fanout(events) -> created`; the relay (`gateway/events.py`) is built with it."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = _utcnow,
        rng: Callable[[], float] = random.random,
        on_created: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._metrics = metrics
        self._clock = clock
        self._rng = rng
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
                keys = set(event_type_keys(event["type"]))
                for sub in subs:
                    if keys.isdisjoint(sub["event_types"]) or not self._filter(sub).matches(event):
                        continue
                    try:
                        action = await self._catalog.action(tenant, sub["action_id"])
                    except NotFound:
                        continue  # deleted since; the subscription goes with it
                    first = next_attempt_at(0, action.retry_schedule, now, rng=self._rng) or now
                    docs.append(delivery_document(event, sub, action, now, first))
        created = await self._store.deliveries.insert_many(docs)
        if created:
            self._metrics.deliveries.labels("created").inc(created)
            if self._on_created is not None:
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
