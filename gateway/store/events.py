"""The `events` collection: what happened, one immutable document per event."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel

from gateway.clock import Floors, from_iso, utcnow
from gateway.errors import BadRequest
from gateway.store.client import (
    ID_BATCH,
    Collection,
    Doc,
    canonical_filters,
    cursor_id,
    find_by_id,
    insert_new_held,
    scoped,
    translate_errors,
)
from gateway.store.history import drop_events
from gateway.store.newest import FIRST, GROWTH, newest_first

FEED_SETTLE = 10
"""Seconds the feed holds an event back once stored (`GATEWAY_EVENTS_FEED_SETTLE_SECONDS`)."""

INDEXES = [
    IndexModel([("tenant", ASCENDING), ("_id", DESCENDING)], name="by_tenant"),
    IndexModel([("tenant", ASCENDING), ("type", ASCENDING), ("_id", DESCENDING)], name="by_type"),
    IndexModel(
        [("tenant", ASCENDING), ("entity.id", ASCENDING), ("_id", DESCENDING)], name="by_entity"
    ),
    # The feed (`stored_after`): events in the order they were stored.
    IndexModel(
        [("tenant", ASCENDING), ("relayed_at", ASCENDING), ("_id", ASCENDING)], name="by_relayed"
    ),
]
_BY_RELAYED = [("relayed_at", ASCENDING), ("_id", ASCENDING)]
# The filters an index covers with the tenant and `_id` (INDEXES).
_COVERED = [set(), {"type"}, {"entity.id"}]


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
FEED_CURSOR: Final = re.compile(r"([0-9]{1,14})\.([0-9a-f]{24})")
"""A feed cursor: the event's `relayed_at` in milliseconds since the epoch, a dot, its id."""


def feed_cursor(event: Doc) -> str:
    return f"{(event['relayed_at'] - _EPOCH) // _MS}.{event['_id']}"


def parse_feed_cursor(text: str) -> tuple[datetime, ObjectId | None]:
    """The point a feed cursor names (its time and id), or an RFC 3339 date-time's (no id:
    what was stored after it); BadRequest for any other text."""
    if found := FEED_CURSOR.fullmatch(text):
        return _EPOCH + int(found[1]) * _MS, ObjectId(found[2])
    try:
        at = from_iso(text) if "T" in text.upper() else None
        at = at.astimezone(UTC) if at is not None and at.tzinfo is not None else None
    except (ValueError, OverflowError):  # not a date-time, or past year 9999 in UTC
        at = None
    if at is None:
        raise BadRequest(
            "after must be the next_cursor of the feed's previous page, or a date-time with "
            "its offset (2026-12-07T00:00:00Z)"
        )
    return at, None


class EventStore:
    def __init__(self, collection: Collection, settle_seconds: float = FEED_SETTLE) -> None:
        self._c = collection
        self._settle = timedelta(seconds=settle_seconds)
        self._floors: Floors[str, datetime] = Floors()  # per tenant (`_stamp`)

    async def insert_many(self, events: Sequence[Doc]) -> set[Any]:
        """The relay's insert (and the fold's). Idempotent: an event keeps the id it got in
        the outbox, so a relay that died half-way and runs again stores nothing twice.
        Journaled, like everything the relay writes before a drain (`client.py`
        `unjournaled` says why). Returns the ids of those the log held already: stored by
        an earlier pass, which may have fanned them out (`gateway/events.py` `AGAIN`).

        Each event's `relayed_at` is set here, as the insert leaves (the events are changed
        in place): the feed answers an event once the settle window has passed since, and
        counts on it being visible by then. Those not visible in time are stamped again
        (`_restamp`). A stamp never sorts below one given before to the same tenant
        (`_stamp`); each tenant of a batch has its own."""
        began = utcnow()
        stamps = await self._stamp({event["tenant"] for event in events}, began)
        for event in events:
            event["relayed_at"] = stamps[event["tenant"]]
        held = await insert_new_held(self._c, events)
        if held or utcnow() - began >= self._settle:
            await self._restamp([event["_id"] for event in events])
        return held

    async def _stamp(self, tenants: set[str], now: datetime) -> dict[str, datetime]:
        """Each tenant's stamp: `now`, or just above the newest `relayed_at` that tenant's
        events were given when that is `now` or later: the gateway's time went back (a clock
        that ran fast, set right), and a follower of the feed reading on from its last
        event's stamp would never get events stamped below it. A tenant's stamp and floor
        are its own: another tenant's (stamped on the fast clock) holds none of its events
        back. The floors are this process's own stamps, read from the log at a tenant's
        first stamp in the process and after its time went back (`clock.Floors`): events
        another process stamped on the fast clock, or this one before it restarted. No read
        otherwise."""
        stamps: dict[str, datetime] = {}
        for tenant in tenants:
            if not self._floors.known(tenant):
                self._floors.note(tenant, await self._newest_stamp(tenant, now))
            floor = self._floors.get(tenant)
            stamp = floor + _MS if floor is not None and floor >= now else now
            self._floors.note(tenant, stamp)
            stamps[tenant] = stamp
        return stamps

    async def _newest_stamp(self, tenant: str, now: datetime) -> datetime | None:
        """The tenant's newest `relayed_at` if it is after `now` (none otherwise): a range of
        `by_relayed` empty unless the time went back."""
        query = scoped(tenant, {"relayed_at": {"$gt": now}})
        with translate_errors():
            cursor = self._c.find(query, {"relayed_at": 1}).sort("relayed_at", DESCENDING)
            found = await cursor.limit(1).to_list(1)
        return found[0]["relayed_at"] if found else None

    async def _restamp(self, event_ids: Sequence[Any]) -> None:
        """Stamp these events again, now, those stored a settle window ago or more: an insert
        that took that long (a stalled database), or one that passed its deadline and landed
        later, which the next pass finds stored. A follower of the feed past their first
        stamp would never see them; now it does (one that saw them sees them again, with the
        same ids: docs/api.md)."""
        ids = list(event_ids)
        # Read and written by `_id` alone, a batch at a time: a filter on `relayed_at` beside
        # the `$in` had SecantusDB read every event, past the deadline for a fold's thousands
        # of events; each retry of the fold's pass (its events duplicates now) did it again.
        # Each batch is stamped when it is written (each tenant's events above that tenant's
        # floor: `_stamp`), and only forward (`$max`): a pass that stalled between its read
        # and its write (the case this is for) lands after the pass that took over, and would
        # have set an event back behind a follower's cursor.
        for i in range(0, len(ids), ID_BATCH):
            batch = {"_id": {"$in": ids[i : i + ID_BATCH]}}
            with translate_errors():
                seen = await self._c.find(batch, {"relayed_at": 1, "tenant": 1}).to_list(None)
            now = utcnow()
            cutoff = now - self._settle
            stale = [d for d in seen if d.get("relayed_at", cutoff) < cutoff]
            if stale:
                stamps = await self._stamp({d["tenant"] for d in stale}, now)
                for tenant, stamp in stamps.items():
                    with translate_errors():
                        await self._c.update_many(
                            {"_id": {"$in": [d["_id"] for d in stale if d["tenant"] == tenant]}},
                            {"$max": {"relayed_at": stamp}},
                        )

    async def stored_after(
        self, tenant: str, at: datetime, after: Any | None, *, until: datetime, limit: int
    ) -> list[Doc]:
        """Up to `limit` events stored after the point (`at`, `after`): those stored at `at`
        with an id above `after` (none when None), then those stored after `at` up to
        `until`, in the order (`relayed_at`, `_id`), by the `by_relayed` index. Read in
        windows forward from `at` (8 s, then each 8 times wider, the last up to `until`),
        stopping at those that fill the page: SecantusDB reads every document a query
        matches before it applies the limit (`newest.py`), so a follower's page costs what
        was stored since its cursor, not the history."""
        found: list[Doc] = []
        if after is not None:
            query = scoped(tenant, {"relayed_at": at, "_id": {"$gt": after}})
            found += await self._read(query, limit)
        lower, width = at, FIRST
        while len(found) < limit and lower < until:
            upper = until if until - lower <= width else lower + width
            query = scoped(tenant, {"relayed_at": {"$gt": lower, "$lte": upper}})
            found += await self._read(query, limit - len(found))
            lower, width = upper, width * GROWTH
        return found

    async def _read(self, query: Doc, limit: int) -> list[Doc]:
        with translate_errors():
            return await self._c.find(query).sort(_BY_RELAYED).limit(limit).to_list(limit)

    async def stored(self, event_ids: Sequence[Any]) -> set[Any]:
        """Those of these event ids the log holds."""
        if not event_ids:
            return set()
        with translate_errors():
            cursor = self._c.find({"_id": {"$in": list(event_ids)}}, {"_id": 1})
            return {doc["_id"] async for doc in cursor}

    async def get(self, tenant: str, event_id: str) -> Doc | None:
        return await find_by_id(self._c, tenant, event_id)

    async def drop_before(self, before: datetime, *, dry_run: bool = False) -> int:
        """Every tenant's events that occurred before `before` (`gateway cleanup`)."""
        return await drop_events(self._c, before, dry_run=dry_run)

    async def find(
        self, tenant: str, filters: Mapping[str, Any], *, before: str | None, limit: int
    ) -> list[Doc]:
        """Newest first, in windows of time (`newest.py`) when an index covers the filter:
        the cost follows the latest events, not the tenant's history."""
        query: Doc = canonical_filters(filters)
        picked: Doc | None = None
        if "entity.id" in query and "type" in query:
            # An entity's events of one type: its events through `by_entity`, the type
            # picked here (with both sent, SecantusDB read every event of the tenant).
            picked = {"type": query.pop("type")}
        return await newest_first(
            self._c,
            tenant,
            query,
            before=cursor_id(before) if before is not None else None,
            limit=limit,
            windowed=set(query) in _COVERED,
            ids=ObjectId,
            picked=picked,
        )
