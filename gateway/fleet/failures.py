"""Use case: the vehicles' batches the fold set aside (a poison pill: folding them raised an
error of the code, `fold.py`), listed and replayed (`gateway fold-failures`, docs/operations.md).

A replay hands a batch's items (fixes, readings, services) to the fold again, under a new
inbox number: the fold folds them from the vehicle's state as it is now (fixes older than its
last position are late ones: their segment joins the odometer, docs/fleet.md). The entry is
taken off the record first, and put back if handing its items on fails (unless they may have
landed): a replay may be lost (killed in between, or the database gone at that moment: the
items stay in the track, as before the replay; the log names the batch), never folded twice.
A batch that fails again is recorded again (under its new number)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.store import Store
from gateway.store.fleet import FoldFailure

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SetAside:
    """One vehicle's batch the fold set aside."""

    tenant: str
    vehicle: str
    through: int  # the batch's last inbox number for the vehicle
    inbox: list[int]
    fixes: int
    items: list[dict[str, Any]]
    reason: str
    error: str
    at: datetime | None


async def set_aside(store: Store, tenant: str | None = None) -> list[SetAside]:
    """The batches set aside, of one tenant or of all, oldest first per vehicle."""
    found = []
    for doc in await store.fleet.failures(tenant):
        for entry in doc.get("poisoned") or ():
            found.append(
                SetAside(
                    str(doc["tenant"]),
                    str(doc["vehicle"]),
                    int(entry["through"]),
                    [int(n) for n in entry.get("inbox") or ()],
                    len(entry.get("fixes") or ()),
                    list(entry.get("items") or ()),
                    str(entry.get("reason") or ""),
                    str(entry.get("error") or ""),
                    entry.get("at"),
                )
            )
    return found


async def replay(store: Store, tenant: str | None = None) -> list[SetAside]:
    """Every batch set aside (of one tenant or of all) handed to the fold again; those
    replayed (one replayed meanwhile by another is skipped)."""
    replayed = []
    for batch in await set_aside(store, tenant):
        entry = await store.fleet.take_failure(batch.tenant, batch.vehicle, batch.through)
        if entry is None:
            continue
        items = list(entry.get("items") or ())
        if items:
            await _hand_on(store, FoldFailure(batch.tenant, batch.vehicle, entry), items)
        replayed.append(batch)
    return replayed


async def _hand_on(store: Store, failure: FoldFailure, items: list[dict[str, Any]]) -> None:
    """The items in an inbox document of their own; if that fails, the entry back on the
    record, unless the document landed after all (its answer lost) or that is not known (the
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
