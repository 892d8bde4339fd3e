"""The `idempotency` collection: the first answer to a trigger call, by Idempotency-Key.

A record is `{_id: "<trigger id>:<sha256 of the key>", tenant, trigger_id, body_hash, state:
"pending"|"done", status, body, created_at, lease_until, claim}` (`claim`: a random token of
the call that wrote the marker, by which that call, and no other, releases it). A pending
marker is inserted *before* the call is processed, so of two concurrent first calls only one
wins the unique insert; the other sees the marker. A TTL index drops records after
`RETENTION_SECONDS` (reads also ignore expired ones, because TTL deletion runs only now and
then). A record's age is judged at the expiry's time (`Expiry.now`), as the gateway's own TTL
pass judges it: a step of the clock forward, which that time does not follow before its time,
makes no kept record count as expired (its retry processed again, its first answer replaced).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from pymongo import ASCENDING, IndexModel

from gateway.errors import Conflict
from gateway.store.client import Collection, Doc, scoped, translate_errors
from gateway.store.expiry import Expiry

RETENTION_SECONDS = 24 * 3600
INDEXES = [
    IndexModel([("created_at", ASCENDING)], expireAfterSeconds=RETENTION_SECONDS, name="ttl"),
]


def record_id(trigger_id: str, key: str) -> str:
    """Keys of any length and alphabet (a webhook-id's bytes that are not UTF-8 included, read
    as lone surrogates) are stored by their digest."""
    digest = hashlib.sha256(key.encode(errors="surrogateescape")).hexdigest()
    return f"{trigger_id}:{digest}"


_RETENTION = timedelta(seconds=RETENTION_SECONDS)


class IdempotencyStore:
    def __init__(self, collection: Collection, expiry: Expiry) -> None:
        self._c = collection
        self._expiry = expiry

    async def claim(
        self,
        tenant: str,
        trigger_id: str,
        key: str,
        body_hash: str,
        *,
        claim: str,
        now: datetime,
        lease: timedelta,
    ) -> Doc | None:
        """Take the key for this call (`claim`: its token): None when it is ours to process,
        else the record that holds it (a finished answer, or a marker whose lease has not run
        out)."""
        marker = scoped(
            tenant,
            {
                "_id": record_id(trigger_id, key),
                "trigger_id": trigger_id,
                "body_hash": body_hash,
                "state": "pending",
                "created_at": now,
                "lease_until": now + lease,
                "claim": claim,
            },
        )
        for _ in range(3):
            try:
                with translate_errors():
                    await self._c.insert_one(marker)
                return None
            except Conflict:
                pass
            with translate_errors():
                existing = await self._c.find_one(scoped(tenant, {"_id": marker["_id"]}))
            if existing is None:
                continue  # expired and removed meanwhile: insert again
            stale = existing["created_at"] <= self._expiry.now(now) - _RETENTION
            abandoned = existing["state"] == "pending" and existing["lease_until"] <= now
            if not (stale or abandoned):
                return existing
            # Take over an expired record or a crashed caller's marker, unless someone else
            # did first (then its record is what we answer with, next round).
            with translate_errors():
                taken = await self._c.replace_one(
                    scoped(
                        tenant,
                        {
                            "_id": marker["_id"],
                            "created_at": existing["created_at"],
                            "state": existing["state"],
                        },
                    ),
                    marker,
                )
            if taken.modified_count == 1:
                return None
        raise Conflict("the Idempotency-Key is being used concurrently; retry")

    async def holds(self, tenant: str, record: str, claim: str, now: datetime) -> bool:
        """Whether the marker `record` is still the call `claim`'s and within its lease: not
        answered, released, or taken over by a retry since."""
        query = {"_id": record, "claim": claim, "state": "pending", "lease_until": {"$gt": now}}
        with translate_errors():
            return await self._c.find_one(scoped(tenant, query), {"_id": 1}) is not None

    async def answered(
        self,
        tenant: str,
        trigger_id: str,
        keys: Sequence[str],
        now: datetime,
        *,
        body_keys: Sequence[str] = (),
        body_hashes: Sequence[str] = (),
    ) -> Doc | None:
        """A finished answer kept under any of `keys`, or under any of `body_keys` for a body
        of one of `body_hashes`, within the retention (at the expiry's time for `now`)."""
        since = self._expiry.now(now) - _RETENTION
        ids = [record_id(trigger_id, key) for key in keys]
        by_body = [record_id(trigger_id, key) for key in body_keys]
        # One `_id $in` over both, the body checked here: an `$or` around it is a whole
        # collection's scan for SecantusDB (every write of a partner rolling its secret was).
        query = {"_id": {"$in": ids + by_body}, "state": "done", "created_at": {"$gt": since}}
        with translate_errors():
            found = [doc async for doc in self._c.find(scoped(tenant, query))]
        hashes = set(body_hashes)
        return next((doc for doc in found if doc["_id"] in ids), None) or next(
            (doc for doc in found if doc.get("body_hash") in hashes), None
        )

    async def complete(
        self, tenant: str, trigger_id: str, key: str, *, status: int, body: bytes
    ) -> None:
        with translate_errors():
            await self._c.update_one(
                scoped(tenant, {"_id": record_id(trigger_id, key)}),
                {"$set": {"state": "done", "status": status, "body": body}},
            )

    async def release(self, tenant: str, claims: Sequence[tuple[str, str]]) -> None:
        """Forget the markers of calls that failed, so a retry is processed afresh: each
        `(record id, claim)` names one call's marker, never one a later call took over."""
        ids = sorted({record for record, _ in claims})
        tokens = sorted({claim for _, claim in claims})
        query = {"_id": {"$in": ids}, "claim": {"$in": tokens}, "state": "pending"}
        with translate_errors():
            await self._c.delete_many(scoped(tenant, query))
