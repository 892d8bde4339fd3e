"""The `signature_memory` collection: the replay keys of signed messages whose copies verify
past their idempotency record's 24 h (a scheme without timestamp, as Motive, Fleetio, GitHub:
the signature alone; or a timestamp ahead of the clock with a tolerance over 12 h: see
`triggers/receiver.py` `_memory_use`), kept `RETENTION_SECONDS` (30 days), so that a copy
sent again after those is refused instead of written a second time.

A record is `{_id: "<trigger id>:<sha256 of the key>", tenant, trigger_id, seen_at}` (the
first time the message was written); a TTL index drops it after RETENTION_SECONDS, and reads
ignore older ones too (TTL deletion runs only now and then). A record's age is judged at the
expiry's time (`Expiry.now`), as the gateway's own TTL pass judges it: a step of the clock
forward, which that time does not follow before its time, makes no kept record count as
expired (a copy of its message written a second time).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from pymongo import ASCENDING, IndexModel

from gateway.store.client import Collection, scoped, translate_errors
from gateway.store.expiry import Expiry
from gateway.store.idempotency import record_id

RETENTION_SECONDS: Final = 30 * 24 * 3600
INDEXES: Final = [
    IndexModel([("seen_at", ASCENDING)], expireAfterSeconds=RETENTION_SECONDS, name="ttl"),
]

_RETENTION: Final = timedelta(seconds=RETENTION_SECONDS)


class SignatureMemory:
    def __init__(self, collection: Collection, expiry: Expiry) -> None:
        self._c = collection
        self._expiry = expiry

    async def seen_at(
        self, tenant: str, trigger_id: str, keys: Sequence[str], now: datetime
    ) -> datetime | None:
        """When the message known by any of these replay keys (its key, and the keys an
        earlier version kept it under) was first written, within the memory (at the expiry's
        time for `now`)."""
        since = self._expiry.now(now) - _RETENTION
        ids = [record_id(trigger_id, key) for key in keys]
        query = {"_id": {"$in": ids}, "seen_at": {"$gt": since}}
        with translate_errors():
            found = await self._c.find_one(scoped(tenant, query), {"seen_at": 1})
        return None if found is None else found["seen_at"]

    async def remember(self, tenant: str, trigger_id: str, key: str, now: datetime) -> None:
        with translate_errors():
            await self._c.update_one(
                scoped(tenant, {"_id": record_id(trigger_id, key)}),
                {"$set": {"trigger_id": trigger_id, "seen_at": now}},
                upsert=True,
            )
