"""Use case: the vehicles' batches the fold set aside (a poison pill: folding them raised an
error of the code, `fold.py`), listed and replayed (`gateway fold-failures`, docs/operations.md).

A replay hands a batch's items (fixes, readings, services) to the fold again, under a new
inbox number: the fold folds them from the vehicle's state as it is now (fixes older than its
last position are late ones: their segment joins the odometer, docs/fleet.md). The record is
taken off first, and put back if handing its items on fails (unless they may have landed): a
replay may be lost (killed in between, or the database gone at that moment: the items stay in
the track, as before the replay; the log names the batch), never folded twice. A batch that
fails again is recorded again (under its new number)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.store import Doc, Store
from gateway.store.fleet import FoldFailure

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SetAside:
    """One vehicle's batch the fold set aside."""

    id: str
    tenant: str
    vehicle: str
    through: int  # the batch's last inbox number for the vehicle
    inbox: list[int]
    fixes: int
    items: int  # what a replay hands on (0: dropped, the record was too large to hold them)
    reason: str
    error: str
    at: datetime | None

    @classmethod
    def from_doc(cls, doc: Doc) -> SetAside:
        return cls(
            str(doc["_id"]),
            str(doc["tenant"]),
            str(doc["vehicle"]),
            int(doc["through"]),
            [int(n) for n in doc.get("inbox") or ()],
            len(doc.get("fixes") or ()),
            len(doc.get("items") or ()),
            str(doc.get("reason") or ""),
            str(doc.get("error") or ""),
            doc.get("at"),
        )


async def set_aside(store: Store, tenant: str | None = None) -> list[SetAside]:
    """The batches set aside, of one tenant or of all."""
    return [SetAside.from_doc(doc) for doc in await store.fleet.failures(tenant)]


async def replay(store: Store, tenant: str | None = None) -> list[SetAside]:
    """Every batch set aside (of one tenant or of all) handed to the fold again; those
    replayed (one replayed meanwhile by another is skipped)."""
    replayed = []
    for batch in await set_aside(store, tenant):
        doc = await store.fleet.take_failure(batch.id)
        if doc is None:
            continue
        items = list(doc.get("items") or ())
        if items:
            entry = {k: v for k, v in doc.items() if k not in ("_id", "tenant", "vehicle")}
            await _hand_on(store, FoldFailure(batch.tenant, batch.vehicle, entry), items)
        replayed.append(batch)
    return replayed


async def _hand_on(store: Store, failure: FoldFailure, items: list[dict[str, Any]]) -> None:
    """The items in an inbox document of their own; if that fails, the record put back,
    unless the document landed after all (its answer lost) or that is not known (the
    database does not answer: then the replay is lost, not folded twice)."""
    seq = await store.fleet.take_number()
    log.warning(
        "fleet fold: replaying vehicle %s of tenant %s (set aside at inbox number %s, %d "
        "items) under inbox number %d",
        failure.vehicle,
        failure.tenant,
        failure.entry.get("through"),
        len(items),
        seq,
    )
    try:
        await store.fleet.put(seq, items)
    except BaseException:
        await asyncio.shield(store.fleet.tombstone(seq))  # nobody waits for the number
        landed = await store.fleet.document(seq)
        if not (landed or {}).get("items"):
            await store.fleet.record_failures([failure])
        raise
