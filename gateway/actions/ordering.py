"""An ordered action's line: where a delivery stands among the deliveries of its action for
its entity (`order_key`, `seq`), and the shard that keeps the line together.

A subscription's delivery is placed by the entity's revision, then the event's place in that
write; a flow's `call` by the version of the entity it hands over, after the subscriptions'
deliveries of that version. The worker sends a line's deliveries in `seq` order, one at a
time (`worker._in_line`), and drops a delivery of the entity's state (`hands_over_state`) when
one of a newer version already reached the partner before it (`newer_than`): an occurrence is
never dropped so. A delivery is placed when it is made, and, when an action is made
ordered, each of its open ones that has no place yet (`place_of`): the line starts with what
is still to be sent, not with the next event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.models import DeliveryKind
from gateway.store import Doc
from gateway.store.deliveries import shard_of

STATE_EVENTS = frozenset({"entity.created", "entity.updated", "entity.deleted"})
"""The events that hand over their entity's state (its data as of their revision), which a
newer version replaces at the partner. Every other event tells of an occurrence (a geofence
exit or a maintenance crossing the fold saw, `fine.received`, `fine.paid`, a mapping's own
type): no later version of the entity replaces it."""


def event_place(action_id: str, event: Mapping[str, Any], delivery_id: str) -> Doc:
    """A subscription's delivery of `event`: by the entity's revision, then the event's place
    in that write (none for an event about no entity)."""
    ref = event.get("entity") or {}
    entity_id = ref.get("id")
    if not entity_id:
        return {}
    key = f"{action_id}:{entity_id}"
    rev = int(ref.get("rev", 0))
    seq = f"{rev:012d}.{int(event.get('position', 0)):03d}.{delivery_id}"
    # One shard per order key: a worker claims them together and sends them in turn.
    return {"order_key": key, "seq": seq, "shard": shard_of(key)}


def call_place(
    action_id: str, entity: Mapping[str, Any], event: Mapping[str, Any], delivery_id: str
) -> Doc:
    """A flow's call on `entity` (the mapping's `entity`: the event's, or one a `set` step
    wrote): in line with every delivery of that action for that entity, subscriptions'
    included, by the entity's version — so the ERP never hears a vehicle's mileage go back,
    however its retries fall. An entity whose version the run does not know (a fetched
    answer) cannot be placed: the call is not ordered."""
    entity_id = entity.get("id")
    version = entity.get("version")
    ref = event.get("entity") or {}
    if not _is_int(version) and entity_id is not None and entity_id == ref.get("id"):
        version = ref.get("rev")
    if not isinstance(entity_id, str) or not entity_id or not _is_int(version):
        return {}
    key = f"{action_id}:{entity_id}"
    # After a subscription's deliveries of the same version (their place in the write: 000…).
    return {"order_key": key, "seq": f"{version:012d}.999.{delivery_id}", "shard": shard_of(key)}


def place_of(doc: Doc, action_id: str) -> Doc:
    """A stored delivery's place in its action's line, as it would have been given when it
    was made had the action been ordered then (`{}`: it has none, and goes alone)."""
    if doc.get("kind", DeliveryKind.WEBHOOK) == DeliveryKind.FLOW_CALL:
        context = doc.get("context") or {}
        entity, event = context.get("entity"), context.get("event")
        if not isinstance(entity, dict):
            return {}
        return call_place(action_id, entity, event if isinstance(event, dict) else {}, doc["_id"])
    event = doc.get("event")
    return event_place(action_id, event, doc["_id"]) if isinstance(event, dict) else {}


def hands_over_state(doc: Doc) -> bool:
    """Whether a delivery hands over its entity's state, so that one of a newer version the
    partner already took makes it outdated (`suppressed`, `worker._in_line`): a flow's call
    (the entity as of its version) and an `entity.*` event's (`STATE_EVENTS`). An occurrence
    goes in its turn whatever was sent before it. Its revision may be older than the
    entity's when it is made: the fold reads the vehicle's revision for its events before it
    stores and fans them out, outside the entity's outbox, and a write landing in between
    is delivered first (until 2026-12-06 the geofence exit was then dropped as outdated)."""
    if doc.get("kind", DeliveryKind.WEBHOOK) == DeliveryKind.FLOW_CALL:
        return True
    event = doc.get("event")
    return isinstance(event, dict) and event.get("type") in STATE_EVENTS


def newer_than(seq: Any) -> str | None:
    """Where the deliveries of a newer version of the entity than `seq`'s start in its line
    (None: a `seq` of no version, not placed by this module)."""
    version, dot, _ = seq.partition(".") if isinstance(seq, str) else ("", "", "")
    if not (dot and len(version) == 12 and version.isdigit()):
        return None
    return f"{int(version) + 1:012d}."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
