"""The `occurrences` collection: which event announced a partner's occurrence, kept the
retention (`GATEWAY_OCCURRENCE_RETENTION_DAYS`, 7 days by default), so that a redelivery of
the same occurrence (a webhook the partner sends again) is not announced a second time.

A record is `{_id: "<sha256 of tenant, origin, entity type, event type, occurrence id>",
tenant, event_id, at}`: the first event of that occurrence the relay stored, and when. The
relay claims an event's occurrence before storing it (`first`): of two events of one
occurrence, relayed together or by two processes at once, only one wins the unique insert;
the other is dropped. A TTL index drops records after the retention, and a record older
than that is taken over (TTL deletion runs only now and then). The index follows a changed
retention when the indexes are created at start (`store/expiry.py`). A record's age is judged
at the expiry's time (`Expiry.now`), as the gateway's own TTL pass judges it: a step of the
clock forward, which that time does not follow before its time, makes no kept record count as
expired (its occurrence announced a second time).

A claim can outlive an event that was never stored: the database refused the event after
its occurrence was claimed, and the relay parked the outbox. The relay then releases the
claims of the parked events it did not store (`release`), before it parks the outbox, so
that the partner's next copy of the occurrence is announced. That, rather than taking a
claim whose event is not in `events` for no claim at all, is what holds under concurrency
and crash: between its claim and its insert every event is not yet stored, so a second
relay reading that as "not announced" would announce the occurrence twice; and a relay that
dies between claim and park leaves its outbox pending, so the next pass relays the same
event again, which keeps its own claim. Released, a parked event an operator relays again
later (`pending: true`) claims anew: a copy announced meanwhile wins, and it is the repeat.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from pymongo import ASCENDING, IndexModel

from gateway.store.client import Collection, Doc, insert_new, translate_errors
from gateway.store.expiry import Expiry

DEFAULT_RETENTION_SECONDS: Final = 7 * 24 * 3600


def indexes(retention_seconds: int) -> list[IndexModel]:
    return [IndexModel([("at", ASCENDING)], expireAfterSeconds=retention_seconds, name="ttl")]


def occurrence_key(
    tenant: str, origin: Doc, entity_type: str, event_type: str, occurrence: str
) -> str:
    """The record id of an occurrence: the same occurrence id is another occurrence from
    another trigger (`origin`), entity type or event type."""
    parts = (
        tenant,
        str(origin.get("kind", "")),
        str(origin.get("id", "")),
        entity_type,
        event_type,
        occurrence,
    )
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _event_key(event: Doc) -> str | None:
    occurrence = event.get("occurrence_id")
    if occurrence is None:
        return None
    origin = event.get("origin") or {}
    return occurrence_key(
        event["tenant"], origin, event["entity"]["type"], event["type"], occurrence
    )


class OccurrenceStore:
    def __init__(
        self,
        collection: Collection,
        expiry: Expiry,
        retention_seconds: int = DEFAULT_RETENTION_SECONDS,
    ) -> None:
        self._c = collection
        self._expiry = expiry
        self.retention_seconds = retention_seconds

    async def announced(self, keys: Sequence[str], now: datetime) -> set[str]:
        """Those of these occurrence keys an event announced within the retention."""
        since = self._since(now)
        query = {"_id": {"$in": sorted(set(keys))}, "at": {"$gt": since}}
        with translate_errors():
            return {doc["_id"] async for doc in self._c.find(query, {"_id": 1})}

    async def repeats(self, events: Sequence[Doc], now: datetime) -> set[Any]:
        """Claim the occurrence of each event that names one; the ids of the events whose
        occurrence another event announced within the retention (to drop). An event that
        already holds its claim (a relay that died before draining, running again) keeps it."""
        claims: list[Doc] = []
        for event in events:
            key = _event_key(event)
            if key is not None:
                claims.append({"_id": key, "tenant": event["tenant"], "event_id": event["_id"]})
        if not claims:
            return set()
        await insert_new(self._c, [{**claim, "at": now} for claim in claims])
        keys = sorted({claim["_id"] for claim in claims})
        with translate_errors():
            cursor = self._c.find({"_id": {"$in": keys}}, {"event_id": 1, "at": 1})
            held = {doc["_id"]: doc async for doc in cursor}
        since = self._since(now)
        repeats: set[Any] = set()
        for claim in claims:
            record = held.get(claim["_id"])
            if record is None or record["event_id"] == claim["event_id"]:
                continue  # ours (or gone meanwhile: announced, as before the window)
            if record["at"] <= since and await self._take_over(record, claim, now):
                held[claim["_id"]] = {**claim, "at": now}
                continue
            repeats.add(claim["event_id"])
        return repeats

    async def release(self, events: Sequence[Doc]) -> int:
        """Drop the claims these events hold (events the relay never stored: their outbox
        was parked), so that a later copy of their occurrence is announced; a claim another
        event holds stays. Returns how many were dropped."""
        keys: list[str] = []
        ids: list[Any] = []
        for event in events:
            if (key := _event_key(event)) is not None:
                keys.append(key)
                ids.append(event["_id"])
        if not keys:
            return 0
        # An event has one key: a record of these keys held by one of these events is its own.
        query = {"_id": {"$in": sorted(set(keys))}, "event_id": {"$in": ids}}
        with translate_errors():
            result = await self._c.delete_many(query)
        return result.deleted_count

    def _since(self, now: datetime) -> datetime:
        """Records from before this are past the retention: counted back from the expiry's
        time for `now`, which a step of the clock forward does not move before its time."""
        return self._expiry.now(now) - timedelta(seconds=self.retention_seconds)

    async def _take_over(self, record: Doc, claim: Doc, now: datetime) -> bool:
        """Replace a claim older than the retention the TTL has not dropped yet, unless
        another relay did first."""
        with translate_errors():
            taken = await self._c.replace_one(
                {"_id": record["_id"], "at": record["at"]}, {**claim, "at": now}
            )
        return taken.modified_count == 1
