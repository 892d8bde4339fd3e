"""Use case: the vehicles' batches the fold set aside (a poison pill: folding them raised an
error of the code, `fold.py`), listed (`gateway fold-failures`, docs/operations.md).

They are not folded again: a replay would have to know which of their fixes a retry of the
batch or a fold after a crash had counted after all (a record may outlive such a fold), and
the fold keeps no such ledger. Their fixes stay in the track; the record names them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.store import Doc, Store


@dataclass(frozen=True, slots=True)
class SetAside:
    """One vehicle's batch the fold set aside."""

    id: str
    tenant: str
    vehicle: str
    through: int  # the batch's last inbox number for the vehicle
    inbox: list[int]
    fixes: int
    items: int  # the inbox items kept (0: dropped, the record was too large to hold them)
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
