"""TTL indexes, and expiry by the gateway itself where the server's sweep reads whole
collections.

MongoDB drops what a TTL index says has expired by walking that index. SecantusDB's sweep
reads and decodes every document of each collection with a TTL index, every 60 s, holding its
storage lock: the whole database stops for about 1.3 s per 100,000 documents kept, and the
positions alone are kept 90 days (docs/benchmarks.md, "The embedded database's TTL sweep").
There (`by_gateway`), a TTL index is created as a plain index of the same name and keys, and
the gateway drops what has expired through it (`expire`, every 60 s in every process:
`store/connection.py`): a range delete of what expired since the last time, not a read of the
documents that stay. Every collection with a TTL goes through `create_indexes` here.

A pass deletes what is older than the gateway's time less the TTL, and that time may step: the
database server's clock stepped forward (on a host whose RTC keeps local time, by hand, by
NTP), or this host's before a first reading of it. A step of 25 h expired every idempotency
record and the signature memory, one past the retention every stored position, at once and for
good. So a pass's time never moves past the last pass's by more than this host's clock counted
since (`clock.ticks`, the clock the gateway's time counts on between readings, which counts a
suspend too; give or take `MARGIN`): beyond that the pass expires only up to there, and says
why; once the time is back where that clock puts it, passes take it as it is again.

That time (`Expiry.now`) is what everything else that judges an age against a retention takes
too, one hold for all: the fleet fold's purge of a tenant's shorter position retention and its
trim of the inbox numbers it gave up (kept a day), and the reads that take a record past its
retention for expired: the Idempotency-Key records' (a record the pass keeps through a step
would be processed again, its first answer replaced), the signature memory's (a copy of a
signed message written again) and the partners' occurrences' (an occurrence announced again).
Until 2026-12-06 they cut at the stepped time: a step of 2 days forward dropped for good the
6-day-old fixes of a tenant keeping them 7, a step of 25 h made every kept Idempotency-Key
record count as expired, one of 31 days every remembered signed message.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import IndexModel
from pymongo.errors import OperationFailure

from gateway.clock import ticks, utcnow
from gateway.store.client import Collection, Doc, indexes_by_name, translate_errors

log = logging.getLogger(__name__)

INDEX_NOT_FOUND = 27
MARGIN = timedelta(seconds=5)
"""How far a pass's time may run ahead of the last pass's plus the time counted since: what a
reading of the server's clock corrects of a minute's drift is milliseconds."""


@dataclass(slots=True)
class _Ttl:
    collection: Collection
    field: str
    seconds: float
    partial: Doc | None


class Expiry:
    def __init__(self, *, follow_settings: bool = True) -> None:
        self.by_gateway = False  # set from the server before the indexes are created
        # False (a one-shot command): an existing TTL index keeps the TTL it has, whatever
        # this process's settings say; the serving processes' settings decide it.
        self.follow_settings = follow_settings
        self._ttls: dict[tuple[str, str], _Ttl] = {}  # (collection, index name)
        # (the time last given (`now`), or `ticks` counted on to since, whichever is later;
        # `ticks()` then); None before the first
        self._passed: tuple[datetime, float] | None = None
        self._held: timedelta | None = None  # how far the last pass's time was held back

    async def create_indexes(
        self,
        collection: Collection,
        models: Sequence[IndexModel],
        present: Container[str] | None = None,
    ) -> None:
        """`collection.create_indexes(models)`; where the gateway expires documents itself,
        each TTL index as a plain one (an earlier TTL index of that name is replaced), its TTL
        kept here. Elsewhere a TTL index whose `expireAfterSeconds` a setting changed since
        it was created is changed first (collMod; dropped and created again where the server
        cannot), since creating it anew with another TTL is refused; unless this process
        does not follow its settings (`follow_settings`): then it is left as it is. `present`:
        the collections at start (`indexes_by_name`)."""
        existing = await indexes_by_name(collection, present)
        if not self.by_gateway:
            with translate_errors():
                if self.follow_settings:
                    for model in models:
                        await _follow_ttl(collection, model.document, existing)
                    kept = list(models)
                else:
                    kept = [m for m in models if not _ttl_differs(m.document, existing)]
                if kept:
                    await collection.create_indexes(kept)
            return
        plain: list[IndexModel] = []
        for model in models:
            spec = dict(model.document)
            seconds = spec.pop("expireAfterSeconds", None)
            if seconds is not None:
                key = spec.pop("key")
                (field,) = list(key)
                partial = spec.get("partialFilterExpression")
                self._ttls[(collection.name, spec["name"])] = _Ttl(
                    collection, field, float(seconds), partial
                )
                if "expireAfterSeconds" in existing.get(spec["name"], {}):
                    with translate_errors():
                        await collection.drop_index(spec["name"])
                model = IndexModel(list(key.items()), **spec)
            plain.append(model)
        with translate_errors():
            await collection.create_indexes(plain)

    def seconds(self, collection: str, index: str) -> float | None:
        """The TTL the gateway applies itself to this index (None: the server's, or none)."""
        ttl = self._ttls.get((collection, index))
        return None if ttl is None else ttl.seconds

    def set_seconds(self, collection: str, index: str, seconds: float) -> None:
        self._ttls[(collection, index)].seconds = float(seconds)

    def now(self, now: datetime | None = None) -> datetime:
        """The time by which what has a lifetime has expired: `now` (by default the gateway's
        time), never further past the last time given than this host's clock counted since
        (`_cutoff`). A pass cuts at it, and so does whatever else judges an age against a
        retention: a step of the clock forward expires nothing, nor makes anything count as
        expired, before its time."""
        return self._cutoff(now or utcnow(), ticks())

    async def expire(self, now: datetime | None = None) -> int:
        """Where the gateway expires documents itself: delete, through each TTL index, what
        it says has expired at `self.now(now)`; how many went (0 elsewhere: the server does
        it)."""
        moment = self.now(now)
        deleted = 0
        for ttl in list(self._ttls.values()):
            query: Doc = {ttl.field: {"$lt": moment - timedelta(seconds=ttl.seconds)}}
            if ttl.partial:
                query = {"$and": [query, dict(ttl.partial)]}
            with translate_errors():
                deleted += (await ttl.collection.delete_many(query)).deleted_count
        return deleted

    def _cutoff(self, now: datetime, at: float) -> datetime:
        """`now`; the last time given plus the time `ticks` counted since when `now` is
        further than `MARGIN` past that: a step of the clock expires nothing before its time."""
        if self._passed is not None:
            passed, then = self._passed
            counted = passed + timedelta(seconds=at - then)
            if now > counted + MARGIN:
                self._hold(now - counted)
                now = counted
            else:
                self._release()
            self._passed = (max(now, counted), at)
        else:
            self._passed = (now, at)
        return now

    def _hold(self, ahead: timedelta) -> None:
        if self._held is None or abs((ahead - self._held).total_seconds()) >= MARGIN.seconds:
            log.warning(
                "the gateway's time is %.0f s ahead of where the last expiry pass and this "
                "host's clock put it (a step of the database server's clock, or of this host's "
                "before a first reading of it): documents past their TTL are expired only up "
                "to the time this host's clock counted, which keeps them that much longer, "
                "until the time is back (a restart of the process takes it as it is)",
                ahead.total_seconds(),
            )
        self._held = ahead

    def _release(self) -> None:
        if self._held is not None:
            log.info("the expiry of documents past their TTL follows the gateway's time again")
            self._held = None


def _ttl_differs(spec: Mapping[str, Any], existing: Mapping[str, Mapping[str, Any]]) -> bool:
    """A TTL index whose existing index of the same name has another `expireAfterSeconds`."""
    seconds = spec.get("expireAfterSeconds")
    index = existing.get(spec["name"])
    return seconds is not None and index is not None and index.get("expireAfterSeconds") != seconds


async def _follow_ttl(
    collection: Collection, spec: Mapping[str, Any], existing: Mapping[str, Mapping[str, Any]]
) -> None:
    """An existing index of this TTL index's name whose `expireAfterSeconds` differs: given
    the new one in place (collMod), or dropped (for `create_indexes` to create again) where
    the server refuses that."""
    if not _ttl_differs(spec, existing):
        return
    seconds = spec["expireAfterSeconds"]
    try:
        await collection.database.command(
            "collMod", collection.name, index={"name": spec["name"], "expireAfterSeconds": seconds}
        )
    except OperationFailure:  # a server without collMod, or an index that is no TTL index
        try:
            await collection.drop_index(spec["name"])
        except OperationFailure as exc:
            if exc.code != INDEX_NOT_FOUND:
                raise
            # Another process starting at the same time dropped it first.
