"""Rejected payloads: a 422'd payload (or batch item, or an item of a schedule's page whose
entity's events wait for the relay: `backlogged`; a partner resends its own, `ingest.py`) is
kept, bounded, with its reason and problems, so an admin can fix the trigger and replay it
(`replay.py`).

The record is written here and read here (`public_rejected`); `store/rejected.py` keeps the
documents. Losing a record (database down, or a record it refuses) is logged, not raised: the
partner's answer is the 422 either way.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from gateway.clock import utcnow
from gateway.errors import EventsBacklogged, InvalidPayload, StoreUnavailable, clipped
from gateway.formats.json_tree import dumps_exact, loads_exact
from gateway.mapping import CompiledMapping
from gateway.metrics import Metrics
from gateway.store import Doc, Store
from gateway.triggers.compiled import CompiledTrigger

log = logging.getLogger(__name__)

MAX_KEPT_BYTES: Final = 64 * 1024
"""A rejected payload larger than this is kept truncated (for reading) and cannot be replayed."""
REASONS: Final = frozenset({"schema", "mapping", "entity", "backlogged"})
"""The pipeline stages that refuse a payload (`pipeline.py`), and a batch item refused while
its entity's events wait (`ingest.py`); other reasons count as "payload"."""


class RejectedKeeper:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock

    def record(
        self,
        trigger: CompiledTrigger,
        error: InvalidPayload | EventsBacklogged,
        payload: Any,
        *,
        scope: str,
        index: int | None = None,
        schema_applies: bool = True,
        repeatable: bool,
    ) -> Doc:
        """A rejected payload as it is kept: `scope` "body" (the whole call) or "item" (the
        batch item at `index`); `schema_applies` says whether a replay validates it.
        `repeatable`: the same payload refused again is the same write (its mapping does not
        read when it came, `{received: time}`), counted on this record while it is pending
        (`RejectedStore.add_many`); otherwise each refusal is a record of its own."""
        # An integer beyond 64 bits (the partner's, or one a mapping's items made) is kept
        # as the number it is: a replay reads it as the partner sent it, not as text.
        text = dumps_exact(payload)
        return {
            "trigger_id": trigger.id,
            "received_at": self._clock(),
            "reason": (
                "backlogged"
                if isinstance(error, EventsBacklogged)
                else str(error.extra.get("reason", "payload"))
            ),
            "detail": clipped(error.detail),
            "problems": (
                [p.as_dict() for p in error.problems] if isinstance(error, InvalidPayload) else []
            ),
            "problems_omitted": error.omitted if isinstance(error, InvalidPayload) else 0,
            "scope": scope,
            "index": index,
            "schema_applies": schema_applies,
            "payload": text[:MAX_KEPT_BYTES].decode("utf-8", "replace"),
            "size": len(text),
            "replayable": len(text) <= MAX_KEPT_BYTES,
            "status": "pending",
            "attempts": 0,
        } | ({"payload_sha256": hashlib.sha256(text).hexdigest()} if repeatable else {})

    async def keep(self, trigger: CompiledTrigger, records: Sequence[Doc]) -> None:
        """Store rejected payloads in one write."""
        if not records:
            return
        try:
            await self._store.rejected.add_many(trigger.tenant, trigger.id, records)
        except (StoreUnavailable, InvalidPayload) as exc:  # down, or refused what it holds
            log.warning("rejected payloads not kept: %s", exc.detail, extra={"trigger": trigger.id})
            return
        for record in records:
            label = record["reason"] if record["reason"] in REASONS else "payload"
            self._metrics.trigger_rejected_kept.labels(
                self._metrics.trigger_label(trigger.id, polled=trigger.polled), label
            ).inc()


def public_rejected(doc: Doc, *, payload: bool = False) -> dict[str, Any]:
    """A kept record as the admin API shows it (the payload itself only when asked)."""
    out = {
        "id": str(doc["_id"]),
        "trigger_id": doc["trigger_id"],
        "received_at": doc["received_at"],
        "reason": doc["reason"],
        "detail": doc["detail"],
        "errors": doc["problems"],
        "errors_omitted": doc.get("problems_omitted", 0),
        "scope": doc["scope"],
        "index": doc.get("index"),
        "status": doc["status"],
        "times_received": 1 + doc.get("repeats", 0),
        "first_received_at": doc.get("first_received_at") or doc["received_at"],
        "attempts": doc.get("attempts", 0),
        "replayable": doc["replayable"],
        "size": doc.get("size"),
        "replayed_at": doc.get("replayed_at"),
        "result": doc.get("result"),
    }
    if payload:
        out["payload"] = loads_exact(doc["payload"]) if doc["replayable"] else None
        if not doc["replayable"]:
            out["payload_excerpt"] = doc["payload"]
    return out


def repeatable(mapping: CompiledMapping | None) -> bool:
    """Whether a payload refused under `mapping` is the same write when it comes again
    (`RejectedKeeper.record`): not when the mapping reads when it came."""
    return mapping is None or not mapping.reads_received
