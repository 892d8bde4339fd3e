"""The `positions` collection: every vehicle's track (SPEC §6 "append, then fold").

Insert-only: one document per fix, `{_id, tenant, vehicle, t, at, seq, lat, lon, speed_kmh?,
heading?, accuracy_m?, odometer_km?, ignition?, valid?, attributes?, source, device}`.
`vehicle` is the vehicle entity's id (as text), `t` the device time, `at` when the gateway
received it, `seq` the number of the insert round that stored it (its inbox number: below),
`device` which device sent it (the fix's tracker id, absent when it named none: the fold
follows one device at a time).
A position is never updated: the fold's verdict on a fix it refused goes to
`positions_refused` (`{_id: the fix's _id, tenant, reason, at}`, insert-only), and the reads
flag those fixes with their reason (`rejected`). Retention is a TTL index on `at` in both
(default 90 days, `set_retention`); on the embedded database a plain index, through which the
gateway expires them itself (`store/expiry.py`).

A fix is identified by (vehicle, device time), and so is its document: `_id` is
`"<vehicle>-<device time, UTC, zero-padded to the millisecond>"` (SPEC §8: a deterministic
`_id` gives deduplication and range reads from the primary index for free). A resent fix is
a duplicate key, stored once; a vehicle's track, its newest fixes and a late fix's neighbours
are ranges of `_id`. No other index on MongoDB: SecantusDB charges every secondary index on
every insert (one unique compound index about quadruples an insert's cost), but reads `_id`
ranges by scanning, so there the `track` index (tenant, `_id`) serves them
(`PositionStore.ensure_indexes`).

Appends are group commits (`InsertRounds`): the fixes of concurrent requests leave in one
journaled `insert_many` per round, and the round's newly stored fixes then go to the fold's
inbox in one document (`store/fleet.py`); the request path is answered once they are stored.
A round takes its inbox number before it inserts and stamps its fixes with it (`seq`), so
that what a round stored can always be found again, by whoever finishes it: the round itself
after a failure (`InsertRounds._finish`), or, when its process died between the insert and
the inbox write, the fold that gives its number up (`PositionStore.of_rounds`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Container, Mapping, Sequence
from collections.abc import Collection as Collection_
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import BulkWriteError, OperationFailure

from gateway.clock import as_stored, utcnow
from gateway.errors import Conflict, StoreUnavailable
from gateway.store.client import (
    DUPLICATE_KEY,
    Collection,
    Doc,
    indexes_by_name,
    insert_new,
    scoped,
    translate_errors,
)
from gateway.store.expiry import Expiry
from gateway.store.fleet import FleetStore, shard_of
from gateway.store.newest import newest_in_range, oldest_in_range

DEFAULT_RETENTION_DAYS: Final = 90
HORIZON: Final = timedelta(days=DEFAULT_RETENTION_DAYS)  # where a track's first page begins
FINISH_SECONDS: Final = 600.0
"""How long a failed round keeps trying to hand its stored fixes to the fold (a database
restart takes seconds; a round that waited longer than the fold would wait for its number
takes a new one: `_Inbox.put_round`)."""
READ_BACK_GRACE_SECONDS: Final = 1.0
"""A failed round whose insert may have landed reads back what it stored this long after the
database first answers again."""
MAX_UNFINISHED_ROUNDS: Final = 1_000
"""Failed rounds waiting for the database at once (each holds its fixes in memory)."""
MAX_WAIT_SECONDS: Final = 30.0
"""A request whose fixes waited this long for their round's number fails (503, nothing
stored): a round's fixes were all received at most this long before its number came, which
bounds how far back `PositionStore.of_rounds` looks."""
ROUND_SEARCH: Final = timedelta(days=7)
"""How far back from a given-up number's next document `PositionStore.of_rounds` looks for its
round's fixes (a gateway down this long after a round died: its fixes stay unfolded)."""
_FIRST_WINDOW: Final = timedelta(seconds=10)
_SHORTEST_WINDOW: Final = timedelta(seconds=1)
_LONGEST_WINDOW: Final = timedelta(seconds=60)
"""SecantusDB reads every document of a range before it returns the first (a limit, a count
or a probe of one costs the same): windows stay short, so that the first one with fixes after
a quiet stretch is never a busy hour read at once (a quiet day is 1,440 empty reads, unless
the nearest older fix can be had in one small read: `PositionStore._small_read`)."""
_SEEK_FIXES: Final = 2_000
"""Fixes a SecantusDB read for the nearest older fix may have to go through (a window's)."""
ROUND_LOOKBACK: Final = timedelta(seconds=120)
"""How much earlier than a fix of an earlier round a round's own fixes may have been received:
`MAX_WAIT_SECONDS` (checked once the number has come, however long that took), and room for
the clocks of different processes."""
log = logging.getLogger(__name__)
_RETENTION_INDEX: Final = "retention"
TRACK_INDEX: Final = IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="track")
_RETIRED_INDEXES: Final = ("fix",)  # (tenant, vehicle, t) unique: the `_id` is the fix now
# The fix's fields the fold reads, copied into its inbox item.
_FOLD_FIELDS: Final = (
    "t", "lat", "lon", "accuracy_m", "speed_kmh", "heading", "odometer_km", "ignition",
    "valid", "device",
)  # fmt: skip


def position_id(vehicle: str, t: datetime) -> str:
    """A fix's `_id`: its vehicle and device time (UTC, to the millisecond, zero-padded, so
    that the ids of one vehicle sort by device time)."""
    t = t.astimezone(UTC)  # (not strftime: several times slower, once a fix)
    return (
        f"{vehicle}-{t.year:04d}{t.month:02d}{t.day:02d}T{t.hour:02d}{t.minute:02d}"
        f"{t.second:02d}.{t.microsecond // 1000:03d}Z"
    )


def _track_bounds(vehicle: str) -> tuple[str, str]:
    """The `_id` range of a whole track ("." and "~" sort before and after every digit)."""
    return f"{vehicle}-", f"{vehicle}-~"


def _sort_out(
    docs: Sequence[Doc], numbers: range, found: dict[int, list[Doc]], newest: dict[int, datetime]
) -> datetime | None:
    """The fixes of `numbers`' rounds into `found` (and each round's newest receipt into
    `newest`); the newest receipt of an earlier round's fix, if any."""
    earlier: datetime | None = None
    for doc in docs:
        number = doc.get("seq")
        if number in found:
            found[number].append(doc)
            newest[number] = max(newest.get(number, doc["at"]), doc["at"])
        elif number is None or number < numbers.start:
            earlier = doc["at"] if earlier is None else max(earlier, doc["at"])
    return earlier


def retention_index(days: int) -> IndexModel:
    return IndexModel(
        [("at", ASCENDING)], name=_RETENTION_INDEX, expireAfterSeconds=int(days) * 86_400
    )


@dataclass(slots=True)
class _Slot:
    inserting: bool = True  # a round's phase: its number and insert, or its hand-on


@dataclass(slots=True)
class _Waiting:
    docs: Sequence[Doc]
    done: asyncio.Future[list[bool]]  # the insert's outcome
    handed: asyncio.Future[None]  # the round's hand-on ended (done, or left to `_finish`)
    since: float  # when it began to wait (monotonic)


class HandOn(Protocol):
    """Where a round's newly inserted documents go next (the fold's inbox): a number taken
    before the insert (the documents carry it as `seq`), then the documents under it; a round
    that stored nothing gives its number up."""

    async def take_number(self) -> int: ...

    async def put_round(self, seq: int, docs: list[Doc]) -> None: ...

    async def tombstone(self, seq: int) -> None: ...


class InsertRounds:
    """Group commit of inserts into one collection: the documents of concurrent callers leave
    together in one `insert_many(ordered=False)` (journaled: the client writes with `j: true`),
    up to `max_docs` per round and `max_in_flight` rounds inserting at once (a second one only
    when `parallel_from` documents wait); whatever arrives while rounds are in flight waits for
    the next one, so the window is as short as a round trip and as wide as the load makes it. Each
    caller gets its own outcome per document: True inserted, False a duplicate key (already
    stored); a failure of the command fails the callers it concerns with StoreUnavailable (the
    others of the round get theirs).

    With a `hand_on`, a round first takes a number and stamps its documents with it (`seq`),
    then inserts them, then hands the inserted ones on under that number (the position store:
    to the fold's inbox). Single documents wait for that (they gather into the next round);
    with `parallel_from` documents waiting, the next round takes its number and inserts while
    the last one hands on (batched ingest: the database's next insert does not wait for the
    inbox write, measured in docs/benchmarks.md). A caller hears once the
    round handed on, or (`early`) once its documents are stored. If the hand-on fails, or the
    insert's outcome is unknown (its callers then fail), the round is finished in the
    background once the database answers again: what it stored (read back by `seq` if need
    be) is handed on all the same (retries find duplicates, so nobody else would), or its
    number given up. Callers that waited `MAX_WAIT_SECONDS` for their round's number fail
    instead.

    One insert command per round instead of one per document (a client-level bulkWrite runs
    each insert as its own command on SecantusDB) is what brings batched ingest near the
    database's raw insert_many rate."""

    def __init__(
        self,
        collection: Collection,
        *,
        hand_on: HandOn | None = None,
        max_docs: int = 2000,
        max_in_flight: int = 2,
        parallel_from: int = 1,
    ) -> None:
        self._c = collection
        self._hand_on = hand_on
        self._max = max_docs
        self._max_in_flight = max_in_flight
        self._parallel_from = parallel_from
        self._queue: list[_Waiting] = []
        self._in_flight = 0  # rounds taking their number or inserting
        self._handing = 0  # rounds past their insert, handing on
        self.rounds = 0  # commands sent (tests and benchmarks read it)
        self._finishing: set[asyncio.Task[None]] = set()  # failed rounds (`_finish`)
        self._rounds: set[asyncio.Task[None]] = set()  # in flight
        self._closing = False  # the store closes: no failed round is finished any more
        # Told where a round's stored documents went: ("handed_on_now", n) in the round,
        # ("handed_on" | "not_handed_on", n) after it failed.
        self.on_finished: Callable[[str, int], None] | None = None

    async def insert(self, docs: Sequence[Doc], *, early: bool = False) -> list[bool]:
        """The documents' outcomes, once the round handed them on; `early`: once they are
        stored (journaled), while the round hands them on."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(docs, loop.create_future(), loop.create_future(), time.monotonic())
        self._queue.append(waiting)
        if self._may_start():
            self._start()
        outcome = await waiting.done
        if not early:
            await asyncio.shield(waiting.handed)
        return outcome

    async def settled(self, timeout: float) -> None:
        """Until the rounds in flight now have handed their documents on (or left them to be
        finished later), at most `timeout` seconds: a fold in this process reads after them."""
        rounds = list(self._rounds)
        if rounds:
            await asyncio.wait(rounds, timeout=timeout)

    def closing(self) -> list[asyncio.Task[None]]:
        """The rounds in flight and the failed rounds still being finished, for the store's
        close to cancel and await before its client closes (a `_finish` left to wake against a
        closed client died of an exception nobody retrieved); no round is finished from now on.
        Their fixes are left to the fold, which finds them by their number when it gives it
        up (`PositionStore.of_rounds`)."""
        self._closing = True
        return [*self._rounds, *self._finishing]

    def _may_start(self) -> bool:
        """A round starts when none is under way (inserting or handing on), or when fewer
        than `max_in_flight` are inserting and fewer than `max_in_flight` handing on, and at
        least `parallel_from` documents wait: big batches overlap their round trips, and the
        next one inserts while the last one writes the fold's inbox; single documents gather
        into the next round instead, which starts once the last one has handed on. So at
        most `max_in_flight` + 1 numbers are taken and not yet written (two inserting
        beside one writing, then all three writing)."""
        if not self._queue or self._in_flight >= self._max_in_flight:
            return False
        if self._in_flight + self._handing == 0:
            return True
        if self._handing >= self._max_in_flight:
            return False
        return sum(len(w.docs) for w in self._queue) >= self._parallel_from

    def _not_too_old(self, waiting: list[_Waiting]) -> list[_Waiting]:
        """The callers that have waited less than `MAX_WAIT_SECONDS`; the others fail (503,
        nothing stored)."""
        too_old = time.monotonic() - MAX_WAIT_SECONDS
        if stale := [w for w in waiting if w.since < too_old]:
            _fail(stale, StoreUnavailable("the database is too slow to take fixes"))
            return [w for w in waiting if w.since >= too_old]
        return waiting

    def _start(self) -> None:
        self._queue = self._not_too_old(self._queue)
        if not self._queue:
            return
        batch: list[_Waiting] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].docs) <= self._max):
            waiting = self._queue.pop(0)
            batch.append(waiting)
            size += len(waiting.docs)
        self._in_flight += 1
        slot = _Slot()
        task = asyncio.create_task(self._round(batch, slot))
        self._rounds.add(task)
        task.add_done_callback(lambda done: self._ended(done, slot))

    def _inserted(self, slot: _Slot) -> None:
        """The round's insert is over (or never came): it only hands on from now on, beside
        the next round's insert when that may start (`_may_start`)."""
        if slot.inserting:
            slot.inserting = False
            self._in_flight -= 1
            self._handing += 1
            if self._may_start():
                self._start()

    def _ended(self, task: asyncio.Task[None], slot: _Slot) -> None:
        if slot.inserting:
            self._in_flight -= 1
        else:
            self._handing -= 1
        self._rounds.discard(task)
        if self._may_start():
            self._start()

    async def _round(self, batch: list[_Waiting], slot: _Slot) -> None:
        """Take the round's number, insert its documents stamped with it, answer its callers,
        then hand the new ones on (beside the next round's insert when that one may start:
        `_may_start`; the fold reads the inbox in number order whatever order they land in).
        If anything fails once the insert may have stored documents, the round is finished
        later (`_finish`)."""
        self.rounds += 1
        hand_on = self._hand_on
        everyone, docs = batch, []
        try:
            seq = None
            try:
                if hand_on is not None:
                    seq = await hand_on.take_number()
                    batch = self._not_too_old(batch)  # its number may have been slow to come
                    if not batch:
                        await hand_on.tombstone(seq)
                        return
                docs = [doc for waiting in batch for doc in waiting.docs]
                for doc in docs if seq is not None else ():
                    doc["seq"] = seq
                refused = await self._insert(docs)
            except BaseException as exc:
                self._inserted(slot)
                if seq is not None and docs:
                    self._finish_later(seq, docs, None)
                _fail(batch, exc)
                if not isinstance(exc, Exception):
                    raise
                return
            self._inserted(slot)
            _answer(batch, refused)
            if hand_on is None or seq is None:
                return
            inserted = [doc for i, doc in enumerate(docs) if i not in refused]
            try:
                await hand_on.put_round(seq, inserted)
            except Exception:
                self._finish_later(seq, docs, inserted)
            else:
                self._finished("handed_on_now", len(inserted))
        finally:
            for waiting in everyone:
                if not waiting.handed.done():
                    waiting.handed.set_result(None)

    async def _insert(self, docs: list[Doc]) -> dict[int, int]:
        refused: dict[int, int] = {}
        try:
            with translate_errors():
                await self._c.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors", []):
                refused[int(error["index"])] = int(error.get("code", 0))
            if exc.details.get("writeConcernErrors"):
                raise StoreUnavailable("write concern failed") from exc
        return refused

    def _finish_later(self, seq: int, docs: list[Doc], inserted: list[Doc] | None) -> None:
        if self._closing:
            log.warning(
                "position store: closing; %d fixes of a failed round (inbox number %d) are "
                "left to the fold",
                len(docs),
                seq,
            )
            self._finished("not_handed_on", len(docs if inserted is None else inserted))
            return
        if len(self._finishing) >= MAX_UNFINISHED_ROUNDS:
            log.error(
                "position store: %d failed rounds already wait for the database; %d fixes "
                "of one more may stay stored without being folded",
                len(self._finishing),
                len(docs),
            )
            self._finished("not_handed_on", len(docs if inserted is None else inserted))
            return
        task = asyncio.create_task(self._finish(seq, docs, inserted))
        self._finishing.add(task)
        task.add_done_callback(lambda done: self._finish_ended(done, docs, inserted))

    def _finish_ended(
        self, task: asyncio.Task[None], docs: list[Doc], inserted: list[Doc] | None
    ) -> None:
        """A `_finish` cancelled (the store closes), or dead of anything but the database
        being away (which it waits out: its exception retrieved and logged here, as nobody
        awaits it): its fixes counted as not handed on (the fold finds them by their number
        when it gives it up)."""
        self._finishing.discard(task)
        if task.cancelled():  # the store closes (`closing`)
            self._finished("not_handed_on", len(docs if inserted is None else inserted))
            return
        if (exc := task.exception()) is None:
            return
        log.error(
            "position store: finishing a failed round failed; its %d fixes are left to the fold",
            len(docs),
            exc_info=exc,
        )
        self._finished("not_handed_on", len(docs if inserted is None else inserted))

    async def _finish(self, seq: int, docs: list[Doc], inserted: list[Doc] | None) -> None:
        """A round that failed after its insert was sent: whatever it stored still goes to
        the fold, or nobody would fold it (its callers' retries find duplicates). Once the
        database answers again: which of `docs` this round stored (`inserted`, or read back by
        its number when the insert's outcome is unknown), handed on under the round's number
        (`put_round`: what a fold that gave the number up did not take, under a new one); or,
        nothing stored, the number given up. Tried for `FINISH_SECONDS`; after that the fixes
        are left to the fold, which finds them by their number when it gives it up."""
        assert self._hand_on is not None
        deadline = time.monotonic() + FINISH_SECONDS
        delay = 0.2
        while True:
            try:
                if inserted is None:
                    # Once the database answers again, an insert it took before it stalled
                    # (a frozen server, a timed-out round) may still be landing: read what
                    # the round stored only after it has had time to.
                    with translate_errors():
                        await self._c.find_one({"_id": docs[0]["_id"]}, {"_id": 1})
                    await asyncio.sleep(READ_BACK_GRACE_SECONDS)
                    inserted = await self._stored_of(docs, seq)
                if not inserted:
                    await self._hand_on.tombstone(seq)
                    return
                await self._hand_on.put_round(seq, inserted)
                log.warning(
                    "position store: a failed round's %d stored fixes handed to the fold late",
                    len(inserted),
                )
                self._finished("handed_on", len(inserted))
                return
            except StoreUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    log.error(
                        "position store: %d fixes of a failed round (inbox number %d) are left "
                        "to the fold: the database did not answer for %.0f s (%s)",
                        len(docs),
                        seq,
                        FINISH_SECONDS,
                        exc,
                    )
                    self._finished("not_handed_on", len(docs if inserted is None else inserted))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _finished(self, outcome: str, count: int) -> None:
        if self.on_finished is not None and count:
            self.on_finished(outcome, count)

    async def _stored_of(self, docs: Sequence[Doc], seq: int) -> list[Doc]:
        """Which of `docs` are stored by this round (stamped with its number: a fix stored
        before by another request is a duplicate, not this round's). One range of `_id` per
        vehicle, with its tenant (the `track` index's reads), the number checked here: sent
        with them, SecantusDB read every fix of the tenant (no index holds `seq`)."""
        wanted = {doc["_id"]: doc for doc in docs}
        by_vehicle: dict[tuple[str, str], list[str]] = {}
        for doc in docs:
            by_vehicle.setdefault((doc["tenant"], doc["vehicle"]), []).append(doc["_id"])
        stored: list[Doc] = []
        for (tenant, _), ids in by_vehicle.items():
            query = scoped(tenant, {"_id": {"$gte": min(ids), "$lte": max(ids)}})
            with translate_errors():
                found = await self._c.find(query, {"_id": 1, "seq": 1}).to_list(None)
            stored += [
                wanted[doc["_id"]]
                for doc in found
                if doc["_id"] in wanted and doc.get("seq") == seq
            ]
        return stored


class _Usable:
    """Whether a stored fix may be a late fix's neighbour: not refused (flagged), not one of
    `exclude`, and folded already: a round numbered after `through` is not."""

    def __init__(self, exclude: Collection_[str], through: int | None) -> None:
        self._skip = set(exclude)
        self._through = through

    def __call__(self, doc: Doc) -> bool:
        if doc["_id"] in self._skip or doc.get("rejected"):
            return False
        seq = doc.get("seq")
        return self._through is None or not isinstance(seq, int) or seq <= self._through


def _fail(batch: Sequence[_Waiting], exc: BaseException) -> None:
    failure = exc if isinstance(exc, StoreUnavailable) else None
    for waiting in batch:
        if not waiting.done.done():
            message = f"database write failed: {type(exc).__name__}"
            waiting.done.set_exception(failure or StoreUnavailable(message))


def _answer(batch: Sequence[_Waiting], refused: Mapping[int, int]) -> None:
    """Each caller its documents' outcomes: True stored now, False a duplicate; a caller with
    a document the database refused otherwise fails."""
    at = 0
    for waiting in batch:
        codes = [refused.get(at + i) for i in range(len(waiting.docs))]
        at += len(waiting.docs)
        if waiting.done.done():  # the caller is gone (its request cancelled)
            continue
        if any(code not in (None, DUPLICATE_KEY) for code in codes):
            waiting.done.set_exception(StoreUnavailable("a fix was refused by the database"))
        else:
            waiting.done.set_result([code is None for code in codes])


def inbox_items(doc: Doc) -> list[Doc]:
    """The items of an inbox document, a vehicle's fixes of a round one item each (`k`
    "fix", with the fix's `id` and the round's `at`), readings and services as they are."""
    items: list[Doc] = []
    for item in doc.get("items", ()):
        if item.get("k") != "fixes":
            items.append(item)
            continue
        common = {k: item[k] for k in ("tenant", "vehicle", "shard", "at")}
        for fix in item["fixes"]:
            fix_id = position_id(item["vehicle"], fix["t"])
            items.append({**fix, **common, "k": "fix", "id": fix_id})
    return items


def round_items(docs: Sequence[Doc]) -> list[Doc]:
    """A round's stored fixes as inbox items: one per vehicle and request (`{k: "fixes",
    tenant, vehicle, shard, at, fixes}`), each fix with the fields the fold reads."""
    groups: dict[tuple[str, str, datetime], Doc] = {}
    for d in docs:
        key = (d["tenant"], d["vehicle"], d["at"])
        if key not in groups:
            groups[key] = {"k": "fixes", "tenant": key[0], "vehicle": key[1],
                           "shard": shard_of(key[0], key[1]), "at": key[2],
                           "fixes": []}  # fmt: skip
        groups[key]["fixes"].append({k: v for k in _FOLD_FIELDS if (v := d.get(k)) is not None})
    return list(groups.values())


class _Inbox:
    """A round's newly stored fixes to the fold's inbox, one document (`store/fleet.py`)."""

    def __init__(self, fleet: FleetStore) -> None:
        self._fleet = fleet
        # A number taken by a fold that gave it up → the number the rest of its round's fixes
        # went under instead (a later attempt of the same round walks the same chain).
        self._moved: dict[int, int] = {}

    async def take_number(self) -> int:
        return await self._fleet.take_number()

    async def tombstone(self, seq: int) -> None:
        await self._fleet.tombstone(seq)

    async def put_round(self, seq: int, docs: list[Doc]) -> None:
        """The round's fixes under its number. If that number is taken (by an earlier attempt
        of this round that landed after all, or by a fold that gave it up with the fixes
        stored under it by then: `PositionStore.of_rounds`), what its document lacks goes
        under a new number, the same one on every attempt of this round."""
        items = round_items(docs)
        if not items:  # every fix a duplicate: the number stands for nothing
            await self._fleet.tombstone(seq)
            return
        number, rest, chain = seq, docs, [seq]
        while rest:
            try:
                await self._fleet.put(number, items if rest is docs else round_items(rest))
                break
            except Conflict:
                held = await self._fleet.document(number)
                taken = {item["id"] for item in inbox_items(held)} if held else set()
                rest = [doc for doc in rest if doc["_id"] not in taken]
                if rest:
                    if number not in self._moved:
                        while len(self._moved) >= MAX_UNFINISHED_ROUNDS:  # abandoned rounds'
                            self._moved.pop(next(iter(self._moved)))
                        self._moved[number] = await self._fleet.take_number()
                    number = self._moved[number]
                    chain.append(number)
        for number in chain:
            self._moved.pop(number, None)


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of one fix: stored now, or a duplicate of one stored before."""

    id: str
    duplicate: bool


class PositionStore:
    def __init__(
        self,
        positions: Collection,
        refusals: Collection,
        fleet: FleetStore,
        expiry: Expiry,
    ) -> None:
        self._expiry = expiry
        self._p = positions
        self._r = refusals  # the fold's verdicts on refused fixes, by the fix's `_id`
        # A second round in flight only for big batches: single fixes gather into the next
        # round instead (each round is three commands whatever its size). Measured, one round
        # in flight against two, A/B twice in one run of single-fix POSTs: 503 / 468 against
        # 453 / 405 requests/s with less CPU per fix; but batched ingest (500-fix POSTs) lost
        # its overlap (0.66 of raw against 0.75).
        self.inserts = InsertRounds(
            positions, hand_on=_Inbox(fleet), max_in_flight=2, parallel_from=200
        )
        # Whether the server reads a whole range before the first of it (SecantusDB), as
        # `ensure_indexes` finds out; until then, as if it did.
        self._whole_ranges = True

    async def ensure_indexes(
        self,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        *,
        scans_id_ranges: bool = False,
        present: Container[str] | None = None,
    ) -> None:
        """The TTL index (`store/expiry.py`: a plain one where the gateway expires the fixes
        itself); and where the server reads an `_id` range by scanning the whole collection
        (SecantusDB: 1.3 s for 50 fixes of 100,000, growing with the track), the `track` index
        (tenant, `_id`) that every track read is served by (27 ms), paid for on every insert.
        MongoDB reads `_id` ranges from its primary index: no such index there. `present`: the
        collections at start (`indexes_by_name`)."""
        self._whole_ranges = scans_id_ranges
        for collection in (self._p, self._r):
            names = set(await indexes_by_name(collection, present))
            with translate_errors():
                for name in set(_RETIRED_INDEXES) & names:
                    await collection.drop_index(name)
            models = []
            if _RETENTION_INDEX not in names or self._expiry.by_gateway:
                models.append(retention_index(retention_days))
            if scans_id_ranges and TRACK_INDEX.document["name"] not in names:
                models.append(TRACK_INDEX)
            if models:  # one command
                await self._expiry.create_indexes(collection, models, present)

    async def set_retention(self, days: int) -> None:
        """Positions (and their refusals) older than `days` (by receipt) expire: the TTL index
        is changed in place (collMod), or dropped and created where the server cannot; where
        the gateway expires them itself, in this process from now on."""
        seconds = int(days) * 86_400
        if self._expiry.by_gateway:
            for collection in (self._p, self._r):
                self._expiry.set_seconds(collection.name, _RETENTION_INDEX, seconds)
            return
        with translate_errors():
            for collection in (self._p, self._r):
                try:
                    await collection.database.command(
                        "collMod",
                        collection.name,
                        index={"name": _RETENTION_INDEX, "expireAfterSeconds": seconds},
                    )
                    continue
                except OperationFailure:  # a server without collMod: drop and create
                    pass
                existing = await (await collection.list_indexes()).to_list(None)
                if any(index["name"] == _RETENTION_INDEX for index in existing):
                    await collection.drop_index(_RETENTION_INDEX)
                await collection.create_indexes([retention_index(days)])

    async def retention_seconds(self) -> int | None:
        if (seconds := self._expiry.seconds(self._p.name, _RETENTION_INDEX)) is not None:
            return int(seconds)
        with translate_errors():
            existing = await (await self._p.list_indexes()).to_list(None)
        for index in existing:
            if index["name"] == _RETENTION_INDEX:
                return int(index["expireAfterSeconds"])
        return None

    # --- append side ---------------------------------------------------------------------

    async def append(
        self, tenant: str, vehicle: str, fixes: Sequence[Doc], source: str
    ) -> list[Appended]:
        """Store one vehicle's fixes (each `{t, lat, lon, ...}`) for the fold (`append_batch`
        for one vehicle)."""
        return (await self.append_batch(tenant, [(vehicle, fixes)], source))[0]

    async def append_batch(
        self,
        tenant: str,
        batch: Sequence[tuple[str, Sequence[Doc]]],
        source: str,
        *,
        early: bool = False,
    ) -> list[list[Appended]]:
        """Store the fixes of several vehicles (`[(vehicle, fixes), ...]`); the outcomes in the
        same shape. They join the next insert round (`InsertRounds`: one `insert_many` for
        every request in flight, then one inbox document for the fold). A fix whose vehicle
        and device time are stored already is a duplicate: answered as stored, handed to the
        fold once. StoreUnavailable when the database failed (then some fixes may be stored:
        a retry finds them as duplicates, and the round hands them on). Answered once they
        are in the fold's inbox, or `early`: once they are stored (journaled), while their
        round writes the inbox (the request path: one journaled write less to wait for)."""
        now = as_stored(utcnow())
        docs = [
            {**fix, "_id": position_id(vehicle, fix["t"]), "tenant": tenant, "vehicle": vehicle,
             "at": now, "source": source}
            for vehicle, fixes in batch
            for fix in fixes
        ]  # fmt: skip
        if not docs:
            return [[] for _ in batch]
        stored = iter(await self.inserts.insert(docs, early=early))
        ids = iter(doc["_id"] for doc in docs)
        return [[Appended(next(ids), not next(stored)) for _ in fixes] for _, fixes in batch]

    async def of_rounds(
        self, numbers: range, received_by: datetime, received_after: datetime | None = None
    ) -> dict[int, list[Doc]]:
        """The fixes the rounds of these numbers stored, received at `received_by` or before:
        for a fold giving up numbers whose rounds never wrote their inbox documents (their
        process died after the insert). Read backwards in time through the retention index,
        in windows of 1 to 60 s (SecantusDB reads every document of a range before it answers
        with the first, whatever the limit), down to `ROUND_LOOKBACK` before the newest fix of
        an earlier round, or before `received_after` (the newest receipt the fold has read
        below these numbers), or, once a fix of every round is found, before the oldest of
        those (a round's fixes are received within `MAX_WAIT_SECONDS` of each other); at most
        `ROUND_SEARCH` back. A round's fixes are received at most `MAX_WAIT_SECONDS` before
        its number comes, so before none of these. An empty window is not followed by the
        next one but by the nearest older fix (`_nearest`), one indexed read, wherever that
        read is small: on MongoDB always, on SecantusDB when the rest of the collection is;
        so that a search with no earlier fix to stop it (a new deployment) does not read a
        week of empty windows."""
        found: dict[int, list[Doc]] = {n: [] for n in numbers}
        if not found:
            return found
        with translate_errors():
            stored = await self._p.estimated_document_count()
        if not stored:
            return found
        projection = {k: 1 for k in ("tenant", "vehicle", "at", "seq", *_FOLD_FIELDS)}
        floor = received_by - ROUND_SEARCH
        if received_after is not None:
            floor = max(floor, received_after - ROUND_LOOKBACK)
        newest: dict[int, datetime] = {}  # per round, the newest of its fixes found
        end, span, read = received_by, _FIRST_WINDOW, 0
        while end > floor:
            start = max(end - span, floor)
            query = {"at": {"$gt": start, "$lte": end}}
            with translate_errors():
                docs = await self._p.find(query, projection).to_list(None)
            read += len(docs)
            earlier = _sort_out(docs, numbers, found, newest)
            if earlier is not None:
                floor = max(floor, earlier - ROUND_LOOKBACK)
            if len(newest) == len(found):
                floor = max(floor, min(newest.values()) - ROUND_LOOKBACK)
            end = start
            if not docs and end > floor and self._small_read(stored - read):
                nearest = await self._nearest(floor, end)
                if nearest is None:
                    break  # nothing older to search
                end, span = nearest, _FIRST_WINDOW
                continue
            # Quiet times are crossed in longer windows, busy ones in shorter (a read holds
            # about 500 to 2,000 fixes, or fewer at the ends of the range).
            if len(docs) >= 2_000:
                span = max(span / 4, _SHORTEST_WINDOW)
            elif len(docs) < 500:
                span = min(span * 2, _LONGEST_WINDOW)
        return found

    def _small_read(self, left: int) -> bool:
        """Whether one read of the fixes received in a range is small whatever the range:
        MongoDB reads the newest of an index range without the rest; SecantusDB reads them
        all first, so only when the collection holds few more (`left`, an estimate) than
        were read already."""
        return not self._whole_ranges or left <= _SEEK_FIXES

    async def _nearest(self, after: datetime, through: datetime) -> datetime | None:
        """The receipt time of the newest fix received in (`after`, `through`], if any."""
        query = {"at": {"$gt": after, "$lte": through}}
        with translate_errors():
            docs = await self._p.find(query, {"at": 1}).sort("at", DESCENDING).limit(1).to_list(1)
        return docs[0]["at"] if docs else None

    # --- the fold's writes ---------------------------------------------------------------

    async def mark_rejected(self, tenant: str, ids_with_reasons: Mapping[str, str]) -> None:
        """Record the fixes the quality gates refused, with the reason: one insert each into
        the refusals collection, under the fix's own `_id` (a fix is never updated: an update
        costs the embedded database about eight small inserts). Recording one again (a fold
        repeated after a crash) is a no-op."""
        if not ids_with_reasons:
            return
        now = utcnow()
        docs = [
            {"_id": fix_id, "tenant": tenant, "reason": reason, "at": now}
            for fix_id, reason in ids_with_reasons.items()
        ]
        await insert_new(self._r, docs)

    async def unmark_rejected(self, tenant: str, ids: Collection_[str]) -> None:
        """Take back the refusals of fixes the fold judged again and took (held `future`
        fixes, `fleet/fold.py` `_VehicleRun.release`): the one delete of a refusal, so a
        fold repeated after a crash, which flags them again first, ends the same."""
        if not ids:
            return
        with translate_errors():
            await self._r.delete_many(scoped(tenant, {"_id": {"$in": sorted(ids)}}))

    async def purge(self, tenant: str, before: datetime) -> int:
        """Drop a tenant's fixes (and refusals) received before `before` (a retention shorter
        than the TTL index's, counted back from `Expiry.now`); how many fixes went. It scans:
        it runs hourly, on one process."""
        with translate_errors():
            await self._r.delete_many(scoped(tenant, {"at": {"$lt": before}}))
            result = await self._p.delete_many(scoped(tenant, {"at": {"$lt": before}}))
        return int(result.deleted_count)

    # --- reads ---------------------------------------------------------------------------

    async def neighbours(
        self,
        tenant: str,
        vehicle: str,
        t: datetime,
        exclude: Collection_[str] = (),
        through: int | None = None,
    ) -> tuple[Doc | None, Doc | None]:
        """The accepted (not refused) fixes just before and just after device time `t`;
        `exclude` names fixes not folded yet (the fold's own pending ones), and `through` the
        last inbox number the fold has taken: fixes of rounds numbered after it are stored but
        not folded yet, so nobody's neighbours yet."""
        low, high = _track_bounds(vehicle)
        at = position_id(vehicle, t)
        usable = _Usable(exclude, through)
        before = await self._accepted(tenant, "$gte", low, "$lt", at, DESCENDING, usable)
        after = await self._accepted(tenant, "$gt", at, "$lt", high, ASCENDING, usable)
        return before, after

    async def window(
        self,
        tenant: str,
        vehicle: str,
        start: datetime,
        end: datetime,
        exclude: Sequence[str],
        limit: int = 5_000,
        through: int | None = None,
    ) -> list[Doc] | None:
        """The accepted (not refused, not excluded, folded: `neighbours`) fixes with device
        time in [`start`, `end`], with the accepted one just before and the one just after, in
        device-time order: every neighbour a batch of late fixes in that span can have, in
        three reads instead of a few per fix. None when the span holds more than `limit`
        fixes."""
        low, high = _track_bounds(vehicle)
        first, last = position_id(vehicle, start), position_id(vehicle, end)
        usable = _Usable(exclude, through)
        query = scoped(tenant, {"_id": {"$gte": first, "$lte": last}})
        with translate_errors():
            docs = await self._p.find(query).sort("_id", ASCENDING).limit(limit + 1).to_list(None)
        if len(docs) > limit:
            return None
        await self._flag(tenant, docs)
        inside = [d for d in docs if usable(d)]
        before = await self._accepted(tenant, "$gte", low, "$lt", first, DESCENDING, usable)
        after = await self._accepted(tenant, "$gt", last, "$lt", high, ASCENDING, usable)
        return [d for d in (before, *inside, after) if d is not None]

    async def _accepted(
        self,
        tenant: str,
        low_op: str,
        low: str,
        high_op: str,
        high: str,
        order: int,
        usable: _Usable,
        page: int = 32,
    ) -> Doc | None:
        """The first fix in this `_id` range, in this order, that is `usable`."""
        while True:
            query = scoped(tenant, {"_id": {low_op: low, high_op: high}})
            with translate_errors():
                docs = await self._p.find(query).sort("_id", order).limit(page).to_list(page)
            await self._flag(tenant, docs)
            for doc in docs:
                if usable(doc):
                    return doc
            if len(docs) < page:
                return None
            if order == ASCENDING:
                low_op, low = "$gt", docs[-1]["_id"]
            else:
                high_op, high = "$lt", docs[-1]["_id"]

    async def _flag(self, tenant: str, docs: list[Doc]) -> list[Doc]:
        """Fixes with the reason the fold refused them (`rejected`), read from the refusals
        over the same `_id` range (one query)."""
        if not docs:
            return docs
        ids = [doc["_id"] for doc in docs]
        query = scoped(tenant, {"_id": {"$gte": min(ids), "$lte": max(ids)}})
        with translate_errors():
            refused = {
                doc["_id"]: doc["reason"] async for doc in self._r.find(query, {"reason": 1})
            }
        for doc in docs:
            if doc["_id"] in refused:
                doc["rejected"] = refused[doc["_id"]]
        return docs

    async def track(
        self,
        tenant: str,
        vehicle: str,
        start: datetime | None,
        end: datetime | None,
        after: datetime | None,
        limit: int,
        now: datetime | None = None,
    ) -> list[Doc]:
        """A vehicle's fixes in device-time order, `start` <= t < `end`, after the cursor
        `after` (the last device time of the previous page); refused ones included (flagged)."""
        low, high = _track_bounds(vehicle)
        lower_op, lower = "$gte", low if start is None else position_id(vehicle, start)
        if after is not None and position_id(vehicle, after) >= lower:
            lower_op, lower = "$gt", position_id(vehicle, after)
        # In windows of device time forward (`newest.py` `oldest_in_range`; SecantusDB reads
        # every fix a query matches before the limit): from the cursor, else `start`, else
        # the later of the retention's horizon and the vehicle's creation (what is older is
        # read first, in one window).
        anchor = after if lower_op == "$gt" and after is not None else start
        if anchor is None:
            anchor = (now or utcnow()) - HORIZON
            if ObjectId.is_valid(vehicle):
                anchor = max(anchor, ObjectId(vehicle).generation_time)
        docs = await oldest_in_range(
            self._p,
            tenant,
            (lower, high if end is None else position_id(vehicle, end)),
            lambda t: position_id(vehicle, t),
            anchor=anchor,
            limit=limit,
            lower_op=lower_op,
            windowed=self._whole_ranges,
        )
        return await self._flag(tenant, docs)

    async def latest(
        self, tenant: str, vehicle: str, limit: int, now: datetime | None = None
    ) -> list[Doc]:
        """A vehicle's newest fixes by device time, newest first (refused ones flagged). Read
        in windows of device time back from now (`newest.py`: SecantusDB reads every fix a
        query matches before it applies the limit, the whole track in one query): the first
        one takes every fix from 8 s ago on (a clock ahead included), each next one 8 times
        wider, the last everything older than 30 days. They partition the track: the same
        fixes, in the same order, as one query."""
        anchor = now or utcnow()
        docs = await newest_in_range(
            self._p,
            tenant,
            _track_bounds(vehicle),
            lambda t: position_id(vehicle, t),
            anchor=anchor,
            limit=limit,
            windowed=self._whole_ranges,
        )
        return await self._flag(tenant, docs)
