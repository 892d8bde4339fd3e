"""The fold's input and state: the `fleet_inbox`, `fleet` and `fleet_marks` collections.

**The inbox** (`fleet_inbox`, insert-only but for trimming) is what the fold reads: one
document per append round, `{_id: seq, at, items: [...]}`, where `seq` is a number taken from
one counter (`fleet_marks` `{_id: "seq", n}`) and `items` are the round's newly stored fixes,
one item per vehicle and request (`{k: "fixes", tenant, vehicle, shard, at, fixes: [...]}`,
the fields the fold uses; `store/positions.py` `inbox_items` lays them out one per fix), or an
odometer reading, a recorded service, a deleted vehicle (`k: "reading"`, `"service"`,
`"deleted"`) or the clock's ticks (`"tick"`). One inbox insert
per round instead of one queue update per vehicle is what makes an append cost about the
database's raw insert (SPEC §6, §8): SecantusDB charges an update about eight times a small
insert.

The counter gives the inbox a total order without clocks: numbers are taken in one order and
their documents may land in another, so the fold reads them in number order and stops at a
gap (a number taken whose document has not landed yet). A round that stored nothing leaves an
empty document under its number (a tombstone) so that nobody waits for it; a round that
failed after storing fixes puts them under its number once the database answers again
(`store/positions.py` `InsertRounds`); a writer that died in between leaves a gap (at the
end of the inbox too: the counter is past the last document) the fold gives up after a
while (`Fold`, `missing_seconds`) by writing the document there itself (`give_up`), with
the fixes the round stored (they carry its number) or none. A writer frozen
in between then finds its number taken and hands on what that document lacks under a new
number, instead of writing behind the fold.

A number can also be taken without its taker hearing which: the counter's update ran, but
its answer was lost (the round's deadline passed while the database was paused or stalled,
the connection dropped). The round fails before storing anything, and nobody would write
that number: the fold used to wait `missing_seconds` (30 s) for it after every such pause.
So each take also records a token of its taker among the counter's latest (`{_id: "seq", n,
takers: [...]}`, the last `TAKERS_KEPT`): the number of the token at position i of `takers`
is `n - (len(takers) - 1 - i)`. A process whose take failed looks for its token once the
database answers again (`settle`, in the background: woken at once by its next take that
succeeds, else every second) and writes a tombstone under the number it finds; a tombstone
that could not be written is retried the same way. What it cannot find (never applied, more
than `TAKERS_KEPT` takes later, or one of more than `LOST_KEPT` lost takes) is left to the
fold's give-up, as before. Every process must run this release: a take of an earlier one
pushes no token, and shifts the numbers read from the positions (a tombstone then lands on
another process's number, whose writer hands its items on under a new number: nothing is
lost, the gap waits for the give-up as before).

**The state** (`fleet`, one document per vehicle): `{_id: "<tenant>:<vehicle>", tenant,
vehicle, shard, state, through}`: the fold's state of the vehicle as of inbox number
`through`. A state is written only forward (`through` never goes down).

**The failures** (`fold_failures`, one document per vehicle and batch set aside): a vehicle
whose fold raised an error of the code (not the database's: a rule's bug, a value nobody
expected) is set aside for that batch (`Fold`), recorded as `{_id: "<tenant>:<vehicle>:<through>",
tenant, vehicle, through, inbox, fixes, items, reason, error, at}` (the batch's last inbox
number for the vehicle, its numbers, the fix ids, the inbox items themselves, the exception's
class and text, when); once (`_id`), so a batch folded again after a crash with the same
bounds is not recorded twice (with other bounds, the records overlap). Listed by
`fleet/failures.py`; kept until an operator deletes them.

**The checkpoints** (`fleet_marks` `{_id: "shard:NN", through}`): every fold shard's inbox
number up to which its vehicles' states are written. The fold reads the inbox from the lowest
checkpoint of its shards; inbox documents every shard is past are trimmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Collection as Collection_
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import bson
from bson import ObjectId
from bson.codec_options import CodecOptions
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError

from gateway.clock import utcnow
from gateway.errors import Conflict, InvalidPayload, StoreUnavailable
from gateway.store.client import (
    Collection,
    Doc,
    find_by_ids,
    insert_new,
    only_duplicates,
    scoped,
    translate_errors,
)
from gateway.store.expiry import Expiry

log = logging.getLogger(__name__)

SHARDS: Final = 16
"""The fold's shards (gateway/shares.py leases them): a vehicle's `shard`."""
_SEQ: Final = "seq"
GIVEN_UP_KEPT: Final = timedelta(days=1)
"""How long an inbox number the fold gave up stays taken after the fold is past it."""
MAX_WRITTEN_ITEMS: Final = 50_000
"""Fixes (and other items) of the inbox documents a process keeps for its own fold."""
TAKERS_KEPT: Final = 16
"""The latest takers of inbox numbers the counter keeps (`take_number`): a process looks for
its lost take among them as soon as the database answers again (its next take that succeeds
wakes the settling). The takers kept cost every take (measured on SecantusDB: 16, about
+120 µs a take; 64, about +270 µs; a take alone is about 650 µs)."""
LOST_SECONDS: Final = 120.0
"""How long a process looks for an inbox number it took without hearing which (`settle`)."""
LOST_KEPT: Final = 4 * TAKERS_KEPT
"""The lost takes a process looks for at most (the newest): past `TAKERS_KEPT` takes of
anyone's after it, a take can no longer be found anyway."""
_SETTLE_DELAYS: Final = (0.2, 0.5, 1.0)  # between attempts of `settle`, the last repeated


@dataclass(frozen=True, slots=True)
class FoldFailure:
    """One vehicle's batch the fold set aside (`fold_failures`)."""

    tenant: str
    vehicle: str
    entry: Doc  # {through, inbox, fixes, items, reason, error, at}

    def document(self) -> Doc:
        return {
            **self.entry,
            "_id": f"{fleet_id(self.tenant, self.vehicle)}:{self.entry['through']}",
            "tenant": self.tenant,
            "vehicle": self.vehicle,
        }


def fleet_id(tenant: str, vehicle: str) -> str:
    return f"{tenant}:{vehicle}"


def shard_of(tenant: str, vehicle: str) -> int:
    return zlib.crc32(fleet_id(tenant, vehicle).encode()) % SHARDS


def _item(kind: str, tenant: str, vehicle: str, fields: Doc) -> Doc:
    return {
        **fields,
        "k": kind,
        "tenant": tenant,
        "vehicle": vehicle,
        "shard": shard_of(tenant, vehicle),
    }


_SHARD_MARK: Final = "shard:"
_AFTER_SHARD_MARKS: Final = "shard;"  # the next prefix: ";" follows ":"


def _mark(shard: int) -> str:
    return f"{_SHARD_MARK}{shard:02d}"


@dataclass(frozen=True, slots=True)
class SavedState:
    """One vehicle's fold state to write, as of inbox number `through`."""

    tenant: str
    vehicle: str
    state: Doc
    through: int


class _Written:
    """The inbox documents this process wrote, as a read from the database would give them
    (through BSON), for its own fold: where one process appends and folds (the usual case, and
    a process's own share of the rounds where several do), the fold reads the new rounds
    without asking the database for them again. Only what the database acknowledged; at most
    `MAX_WRITTEN_ITEMS` items (oldest dropped); what the fold has read past goes."""

    def __init__(self, codec: CodecOptions[Doc]) -> None:
        self._codec = codec
        self._docs: OrderedDict[int, tuple[Doc, int]] = OrderedDict()  # seq → (doc, size)
        self._size = 0

    def add(self, doc: Doc) -> None:
        size = sum(len(item.get("fixes", ())) or 1 for item in doc["items"]) + 1
        self._docs[int(doc["_id"])] = (bson.decode(bson.encode(doc), self._codec), size)
        self._size += size
        while self._size > MAX_WRITTEN_ITEMS:
            _, (_, dropped) = self._docs.popitem(last=False)
            self._size -= dropped

    def after(self, seq: int, limit: int) -> list[Doc]:
        """The documents numbered seq + 1, seq + 2, ... this process holds, up to the first it
        does not (or `limit`); those up to `seq` are dropped (read past)."""
        while self._docs and next(iter(self._docs)) <= seq:
            _, (_, dropped) = self._docs.popitem(last=False)
            self._size -= dropped
        found: list[Doc] = []
        while len(found) < limit and (held := self._docs.get(seq + 1 + len(found))):
            found.append(held[0])
        return found


class FleetStore:
    def __init__(
        self,
        inbox: Collection,
        states: Collection,
        marks: Collection,
        expiry: Expiry,
        failures: Collection | None = None,
    ) -> None:
        self._inbox = inbox
        self._expiry = expiry
        self._states = states
        self._marks = marks
        self._failures = states.database["fold_failures"] if failures is None else failures
        self._written = _Written(inbox.codec_options)
        self._lost: dict[ObjectId, float] = {}  # a take's token → when its answer was lost
        self._unwritten: set[int] = set()  # numbers whose tombstone could not be written
        self._settling: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # a take succeeded: the database answers again
        self._last_seen = 0  # the counter, as its latest read found it

    # --- the inbox ---------------------------------------------------------------------

    async def ensure_counter(self) -> None:
        """The inbox counter exists before any round takes a number (two first rounds'
        upserts racing on SecantusDB can leave one without an answer)."""
        with translate_errors():
            await self._marks.update_one({"_id": _SEQ}, {"$setOnInsert": {"n": 0}}, upsert=True)

    async def take_number(self) -> int:
        """The next inbox number (one counter for every process). A take whose answer is lost
        (or that is refused, or cancelled: it may have run all the same) is settled later:
        the number it may have taken gets a tombstone (module docstring)."""
        for _ in range(3):
            token = ObjectId()
            taken = {"$each": [token], "$slice": -TAKERS_KEPT}
            try:
                with translate_errors():
                    doc = await self._marks.find_one_and_update(
                        {"_id": _SEQ},
                        {"$inc": {"n": 1}, "$push": {"takers": taken}},
                        projection={"n": 1},
                        upsert=True,
                        return_document=ReturnDocument.AFTER,
                    )
            except BaseException:
                self._settle_later(lost=token)
                raise
            if doc is not None:
                if self._lost or self._unwritten:  # the database answers again: settle now,
                    self._wake.set()  # while the lost take is among the latest (beside this
                    # round, which neither waits for it nor is lost with it if cancelled)
                return int(doc["n"])
            self._settle_later(lost=token)
        raise StoreUnavailable("the fold's inbox counter was not written")

    @property
    def settling(self) -> asyncio.Task[None] | None:
        """The background settling of lost inbox numbers, while it runs (cancelled when the
        store closes)."""
        return self._settling if self._settling is not None and not self._settling.done() else None

    def _settle_later(self, *, lost: ObjectId | None = None, unwritten: int | None = None) -> None:
        if lost is not None:
            self._lost[lost] = time.monotonic()
            while len(self._lost) > LOST_KEPT:  # the oldest: the fold's give-up
                del self._lost[next(iter(self._lost))]
        if unwritten is not None:
            self._unwritten.add(unwritten)
        if self._settling is None or self._settling.done():
            self._settling = asyncio.get_running_loop().create_task(self._settle_until_done())

    async def _settle_until_done(self) -> None:
        attempt = 0
        while self._lost or self._unwritten:
            delay = _SETTLE_DELAYS[min(attempt, len(_SETTLE_DELAYS) - 1)]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            attempt += 1
            try:
                await self.settle()
            except StoreUnavailable:
                continue  # the database does not answer yet
            except Exception:
                log.exception("fleet inbox: settling lost inbox numbers failed")
                return

    async def settle(self) -> int:
        """Tombstones under the numbers this process took without hearing which (found by
        their takers' tokens among the counter's latest takers) and under those whose
        tombstone failed; a token not found yet (its take may still land) is looked for
        again until `LOST_SECONDS` have passed. How many numbers were settled;
        StoreUnavailable while the database does not answer (nothing is forgotten)."""
        settled = 0
        if self._lost:
            with translate_errors():
                doc = await self._marks.find_one({"_id": _SEQ}, {"n": 1, "takers": 1})
            takers = list((doc or {}).get("takers") or [])
            last = int((doc or {}).get("n") or 0)
            too_old = time.monotonic() - LOST_SECONDS
            for token, since in list(self._lost.items()):
                if token in takers:
                    self._unwritten.add(last - (len(takers) - 1 - takers.index(token)))
                    del self._lost[token]
                elif since < too_old:  # never applied, or past the window: the fold's give-up
                    del self._lost[token]
        for number in sorted(self._unwritten):
            if await self._write_tombstone(number):
                log.warning(
                    "fleet inbox: number %d given up by its taker, which failed with the database",
                    number,
                )
                settled += 1
            self._unwritten.discard(number)
        return settled

    async def put(self, seq: int, items: Sequence[Doc]) -> None:
        """The inbox document of number `seq` (journaled, like every write)."""
        doc = {"_id": seq, "at": utcnow(), "items": list(items)}
        with translate_errors():
            await self._inbox.insert_one(doc)
        self._written.add(doc)

    async def tombstone(self, seq: int) -> None:
        """An empty document under a number whose writer failed, so the fold does not wait for
        it; if the database fails this too, it is written once it answers again (`settle`)."""
        try:
            await self._write_tombstone(seq)
        except StoreUnavailable:
            self._settle_later(unwritten=seq)

    async def _write_tombstone(self, seq: int) -> bool:
        """Whether the tombstone was written (False: a document was there)."""
        doc = {"_id": seq, "at": utcnow(), "items": []}
        try:
            with translate_errors():
                await self._inbox.insert_one(doc)
        except Conflict:  # the document landed after all, or the fold gave the number up
            return False
        self._written.add(doc)
        return True

    async def document(self, seq: int) -> Doc | None:
        """The inbox document under `seq`, if there is one."""
        with translate_errors():
            return await self._inbox.find_one({"_id": seq})

    async def give_up(self, seq: int, items: Sequence[Doc]) -> bool:
        """The fold gives up a number whose document never landed: a document under it with
        the items it found of its round (none for a round that stored nothing), so that a
        writer that lands after all gets a duplicate key (and hands on what they lack under a
        new number) instead of writing behind the fold. Whether it was still missing (a
        document that landed meanwhile stands)."""
        doc = {"_id": seq, "at": utcnow(), "items": list(items), "given_up": True}
        return await insert_new(self._inbox, [doc]) == 1

    async def add(self, items: Sequence[Doc]) -> None:
        """Items in a document of their own (a reading, a service: a number each)."""
        seq = await self.take_number()
        try:
            await self.put(seq, items)
        except BaseException:
            await asyncio.shield(self.tombstone(seq))
            raise

    async def push_reading(self, tenant: str, vehicle: str, reading: Doc) -> None:
        """An odometer reading from another source (`{km, at, source}`, and a flow run's
        `chain`) for the fold."""
        await self.add([_item("reading", tenant, vehicle, reading)])

    async def push_service(self, tenant: str, vehicle: str, service: Doc) -> None:
        """A recorded service (`{km?, at, plan?, source}`) for the fold."""
        await self.add([_item("service", tenant, vehicle, service)])

    async def push_deleted(self, tenant: str, vehicle: str) -> None:
        """A vehicle deleted: the fold forgets it and drops its state."""
        await self.add([_item("deleted", tenant, vehicle, {"at": utcnow()})])

    async def push_ticks(self, tenants: Sequence[str], at: datetime) -> None:
        """The fold's clock: a tick at `at` for each of these tenants, in one document. The fold
        runs every vehicle of the tenant in its shards that a time-based plan applies to
        through the tenant's maintenance plans at `at`, so a time interval comes due on a
        parked vehicle too, and on one without a tracker."""
        if tenants:
            await self.add([{"k": "tick", "tenant": t, "at": at} for t in tenants])

    async def after(self, seq: int, limit: int) -> list[Doc]:
        """Inbox documents numbered above `seq`, in number order, at most `limit`; the ones
        this process wrote itself from memory, as long as they follow on.

        Read by their numbers: the counter first (the last number taken: nothing to read past
        it, so a fold that has caught up asks for nothing more), then the numbers up to it, at
        most `limit`, looked up one by one in the primary index, since numbers are taken one
        after another. SecantusDB answers an `_id` range by reading and decoding the whole
        collection (the inbox holds up to a checkpoint interval of rounds: 14 ms a read at the
        position bench's peak, most of the database's time spent on the fold's inbox); a list
        of numbers is point lookups there, and on MongoDB too, each one paid for whether a
        document is there or not (a list of 200 numbers: 2.25 ms of SecantusDB's CPU; the
        counter 0.25 ms). Only when none of them has a document while later numbers were
        taken (`limit` rounds in a row dead or in flight) is the range read, so that the fold
        sees what lies beyond the gap."""
        written = self._written.after(seq, limit)
        if written:
            return written
        last = await self.last_number()
        if last <= seq:
            return []
        numbers = list(range(seq + 1, min(seq + limit, last) + 1))
        with translate_errors():
            found = await self._inbox.find({"_id": {"$in": numbers}}).sort("_id", 1).to_list(None)
            if found or last <= numbers[-1]:
                return found
            cursor = self._inbox.find({"_id": {"$gt": seq}}).sort("_id", 1).limit(limit)
            return await cursor.to_list(limit)

    async def last_number(self) -> int:
        """The last number taken (0 before any)."""
        with translate_errors():
            doc = await self._marks.find_one({"_id": _SEQ}, {"n": 1})
        self._last_seen = int(doc["n"]) if doc else 0
        return self._last_seen

    @property
    def last_seen(self) -> int:
        """The last number taken, as the latest read of the counter found it: when `after`
        found nothing, the one it read first (the numbers above its `seq` up to this one are
        taken and have no document yet)."""
        return self._last_seen

    async def trim(self, through: int) -> int:
        """Drop the inbox documents numbered up to `through` (every shard is past them); the
        numbers the fold gave up stay taken for `GIVEN_UP_KEPT` longer, so that a writer
        that stalled past them still finds its number taken (counted back from the expiry's
        time, which a step of the clock forward does not move before its time)."""
        older = {"_id": {"$lte": through}}
        kept = self._expiry.now() - GIVEN_UP_KEPT
        with translate_errors():
            result = await self._inbox.delete_many({**older, "given_up": {"$exists": False}})
            await self._inbox.delete_many({**older, "given_up": True, "at": {"$lt": kept}})
        return int(result.deleted_count)

    # --- checkpoints -------------------------------------------------------------------

    async def checkpoints(self, shards: Iterable[int]) -> dict[int, int]:
        """Each shard's checkpoint (0 for a shard never written), in one round trip: the
        collection holds the sequence and one mark per shard, so a range on `_id` reads at
        most those. (One lookup per shard, side by side, took as many pooled connections at
        once: after a lost connection each had to be opened again, and under load they
        waited past the pool's wait-queue deadline.)"""
        wanted = sorted(set(shards))
        with translate_errors():
            found = {
                doc["_id"]: int(doc["through"])
                async for doc in self._marks.find(
                    {"_id": {"$gte": _SHARD_MARK, "$lt": _AFTER_SHARD_MARKS}}
                )
            }
        return {shard: found.get(_mark(shard), 0) for shard in wanted}

    async def save_checkpoints(self, through: dict[int, int]) -> None:
        """Checkpoints only move forward (`$max`)."""
        if not through:
            return
        writes = [
            UpdateOne({"_id": _mark(shard)}, {"$max": {"through": n}}, upsert=True)
            for shard, n in sorted(through.items())
        ]
        with translate_errors():
            await self._marks.bulk_write(writes, ordered=False)

    # --- vehicle states ----------------------------------------------------------------

    async def state(self, tenant: str, vehicle: str) -> Doc | None:
        """A vehicle's written fold state document (tenant-scoped)."""
        with translate_errors():
            return await self._states.find_one(scoped(tenant, {"_id": fleet_id(tenant, vehicle)}))

    async def states_of(
        self, tenant: str, vehicles: Collection_[str], plans: Collection_[str]
    ) -> dict[str, Doc]:
        """Several vehicles' written fold states (tenant-scoped), by vehicle id, in one query
        (`_id` `$in`): what an admin page over the whole fleet reads, not one read a vehicle.
        Only the state's odometer and the state of the `plans` named: a vehicle's state holds
        every plan of its tenant's (thousands), a page shows a few."""
        query = {"_id": {"$in": [fleet_id(tenant, v) for v in vehicles]}}
        projection = {"state.odometer_km": 1, "state.held_km": 1}
        projection |= {f"state.plans.{plan}": 1 for plan in plans}
        with translate_errors():
            found = await self._states.find(scoped(tenant, query), projection).to_list(None)
        return {str(doc["_id"])[len(tenant) + 1 :]: doc for doc in found}

    async def states(self, keys: Collection_[tuple[str, str]]) -> dict[tuple[str, str], Doc]:
        """The fold's own read of several vehicles' states, `ID_BATCH` ids a query."""
        by_id = {fleet_id(*key): key for key in keys}
        return {by_id[doc["_id"]]: doc for doc in await find_by_ids(self._states, list(by_id))}

    async def drop_states(self, keys: Collection_[tuple[str, str]]) -> None:
        """Deleted vehicles' states go (a delete by `_id` each: SecantusDB scans for `$in`)."""

        async def one(key: tuple[str, str]) -> None:
            with translate_errors():
                await self._states.delete_one({"_id": fleet_id(*key)})

        await asyncio.gather(*(one(key) for key in keys))

    async def record_failures(self, failures: Sequence[FoldFailure]) -> None:
        """Vehicles' batches the fold set aside, each recorded once (by its `_id`: a batch
        folded again after a crash fails the same way and finds itself there). One that the
        database refuses for its size keeps everything but its items (its fix ids remain): a
        record must never hold the fold up."""
        docs = [f.document() for f in failures]
        try:
            await insert_new(self._failures, docs)
        except InvalidPayload:
            for doc in docs:
                try:
                    await insert_new(self._failures, [doc])
                except InvalidPayload:
                    items = doc.pop("items", [])
                    await insert_new(self._failures, [{**doc, "items_dropped": len(items)}])

    async def failures(self, tenant: str | None = None) -> list[Doc]:
        """The batches the fold set aside, of one tenant or of all: by tenant, vehicle, and
        inbox number."""
        query: Doc = {} if tenant is None else {"tenant": tenant}
        order = [("tenant", 1), ("vehicle", 1), ("through", 1)]
        with translate_errors():
            return await self._failures.find(query).sort(order).to_list(None)

    async def save_states(self, saved: Sequence[SavedState]) -> None:
        """Write states, each only over an older one (`through` lower or equal: an equal one
        is the same fold of the same input, written again after a crash)."""
        if not saved:
            return
        writes = [
            UpdateOne(
                {"_id": fleet_id(s.tenant, s.vehicle), "through": {"$not": {"$gt": s.through}}},
                {
                    "$set": {"state": s.state, "through": s.through},
                    "$setOnInsert": {
                        "tenant": s.tenant,
                        "vehicle": s.vehicle,
                        "shard": shard_of(s.tenant, s.vehicle),
                    },
                },
                upsert=True,
            )
            for s in saved
        ]
        try:
            with translate_errors():
                await self._states.bulk_write(writes, ordered=False)
        except BulkWriteError as exc:
            # A duplicate key is a state written further by another fold (the filter missed
            # it, the upsert's insert collided): that one stands.
            if not only_duplicates(exc):
                raise StoreUnavailable("writing fold states failed") from exc
