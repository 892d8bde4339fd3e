"""An ordered action's line: where a delivery stands among the deliveries of its action for
its entity (`order_key`, `seq`), and the shard that keeps the line together.

A subscription's delivery is placed by the entity's revision, then the event's place in that
write; a flow's `call` by the version of the entity it hands over, after the subscriptions'
deliveries of that version. The worker sends a line's deliveries in `seq` order, one at a
time (`worker._in_line`), and drops one a delivery of a newer version already reached the
partner before it (`newer_than`). A delivery is placed when it is made, and, when an action is made
ordered, each of its open ones that has no place yet (`place_of`): the line starts with what
is still to be sent, not with the next event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.models import DeliveryKind
from gateway.store import Doc
from gateway.store.deliveries import shard_of


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


def newer_than(seq: Any) -> str | None:
    """Where the deliveries of a newer version of the entity than `seq`'s start in its line
    (None: a `seq` of no version, not placed by this module)."""
    version, dot, _ = seq.partition(".") if isinstance(seq, str) else ("", "", "")
    if not (dot and len(version) == 12 and version.isdigit()):
        return None
    return f"{int(version) + 1:012d}."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
