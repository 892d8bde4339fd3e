"""Group commit: concurrent writers' operations go to the database together.

Each caller hands over one write (an insert, or an update or delete by a filter) and awaits
its own outcome; the operations that arrive while a round trip is in flight leave together in
the next one: one client-level `bulkWrite` command (MongoDB 8.0+, and SecantusDB), unordered,
with a result per operation (`verbose_results`). Under load a round trip carries dozens of
writes for the price of one, which is most of a write's cost in the driver (~250 µs of CPU
each, ~35 µs in a batch of 16) and some of the database's; alone, a write leaves at once, as
an ordinary command (journaled by its own write concern: no seal needed).

A round is journaled as a whole: one journaled write after it flushes the journal for all of
its writes (`seal`), before any caller hears that its write is stored.

The caller keeps its own order: at most one write per document is in flight (the entity
service writes one entity at a time), so operations of one round trip never touch the same
document and need no order among them.

A server without the command (MongoDB before 8.0) gets the same operations one command each,
sent side by side: correct, without the saving.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, Literal, cast

from pymongo import AsyncMongoClient, DeleteOne, InsertOne, UpdateOne
from pymongo.errors import ClientBulkWriteException, InvalidOperation
from pymongo.results import ClientBulkWriteResult

from gateway.clock import as_stored, utcnow
from gateway.errors import Conflict, InvalidPayload, StoreUnavailable
from gateway.store.client import (
    DUPLICATE_KEY,
    Collection,
    Doc,
    concern_failed,
    finishing,
    refused,
    translate_errors,
    unjournaled,
    without_journal,
)

log = logging.getLogger(__name__)

SEALS: Final = "group_commits"
"""A round's mark, `{_id, at}` (`mark_doc`): inserted by its last operation, deleted
(journaled) by its seal (`seal`); one whose seal never reached the database (a deadline
passed, the process killed) is removed once no round can be that old (`sweep_marks`)."""

MARK_PAUSE_SECONDS: Final = 3600.0
"""What a mark is kept beyond the database deadlines a round spends at most
(`mark_lifetime`): a process paused between its round and its seal (a stopped container, a
paused VM) still finds its mark within it."""


def mark_lifetime(deadline_seconds: float) -> float:
    """How old a round's mark may be while its round can still seal it, in seconds: a group
    commit round is its write and its seal, a multi-entity write (`EntityStore.write_together`)
    its mark's insert, its commit and its seal, each within the database deadline
    (GATEWAY_DB_TIMEOUT_MS: `deadline_seconds`); plus `MARK_PAUSE_SECONDS`."""
    return 3 * deadline_seconds + MARK_PAUSE_SECONDS


def mark_doc(mark: str) -> Doc:
    """The mark's document: its id and when it was made (the gateway's time)."""
    return {"_id": mark, "at": as_stored(utcnow())}


async def sweep_marks(db: Any, now: datetime, lifetime: float) -> int:
    """Remove the marks older than `lifetime` seconds at `now`: no round can seal them any
    more (their seal missed its deadline, their process was killed or the database restarted
    before it). A mark without a time (left by a version before 2026-12-07) is given `now`,
    so it goes one lifetime later. How many were removed.

    No index: the collection holds the marks of the rounds in flight and those left within
    the lifetime, a few documents, which one read passes over cheaper than an index every
    round would have to keep up (an insert and a delete a round, the hottest writes there
    are); not a TTL index (on SecantusDB one reads its collection under the storage lock,
    docs/operations.md), and this runs in the housekeeping pass that expires the others."""
    with translate_errors():
        await db[SEALS].update_many({"at": {"$exists": False}}, {"$set": {"at": as_stored(now)}})
        cutoff = as_stored(now - timedelta(seconds=lifetime))
        removed = await db[SEALS].delete_many({"at": {"$lt": cutoff}})
    return int(removed.deleted_count)


class Marks:
    """The ids of one writer's round marks (`seal`): unique to this instance, a restart with
    the same pid included, so a mark left by a crashed round is never taken for one of ours."""

    def __init__(self, kind: str) -> None:
        self._prefix = f"{kind}:{os.uname().nodename}:{os.getpid()}:{os.urandom(6).hex()}"
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}:{next(self._count)}"


async def seal(db: Any, mark: str) -> None:
    """Make a round's writes journaled before anyone is told they are stored, and make sure
    the server that journals them is the one that had them.

    SecantusDB runs each operation of a client-level bulkWrite (and of a transaction) as its
    own command without the command's write concern, so `j: true` does not reach them
    (measured: a killed server lost an answered write, tests/test_durability.py). One small
    journaled write after them flushes the journal, which holds them in order, so they are
    durable once it returns: one journal flush per round trip instead of one per write, which
    is what a group commit is. But a server killed after the round and restarted before the
    seal (its supervisor restarts it within a second, and the driver waits for it) would
    take the seal on a process that never had the round. So the round's last operation
    inserts the document `mark` (an id no other round uses), and the seal is its journaled
    delete: a seal that finds no mark means the round went with the process that had it, and
    it is StoreUnavailable, the outcome unknown; nobody is told their write is stored. On
    MongoDB, which honours `j` in the bulkWrite, it costs a tiny insert and delete a round.

    The write gate lets the seal through (`finishing`), as it lets a commit through: the
    writes it seals were let through and are stored, so a free-space floor reached after
    them must not answer them refused (they are sealed and answered as stored)."""
    with translate_errors(), finishing():
        sealed = await db[SEALS].delete_one({"_id": mark})
    if sealed.deleted_count != 1:
        raise StoreUnavailable(
            "the database restarted before the writes were journaled; their outcome is unknown"
        )


@dataclass(frozen=True, slots=True)
class _Write:
    """One insert (`doc`), update (`query`, `update`) or delete (`query`)."""

    collection: Collection
    kind: Literal["insert", "update", "delete"]
    query: Doc  # {} for an insert
    doc: Doc | list[Doc]  # the inserted document, the update's operators or pipeline; {}
    upsert: bool = False  # an update that inserts the document when `query` matches none

    def model(self) -> Any:
        """The write for a client-level bulk, which names its collection per operation."""
        namespace = self.collection.full_name
        if self.kind == "insert":
            return InsertOne(self.doc, namespace=namespace)
        if self.kind == "update":
            return UpdateOne(self.query, self.doc, upsert=self.upsert, namespace=namespace)
        return DeleteOne(self.query, namespace=namespace)

    async def run_alone(self) -> int:
        with translate_errors():
            if self.kind == "insert":
                assert isinstance(self.doc, dict)  # an update's pipeline is a list
                await self.collection.insert_one(self.doc)
                return 1
            if self.kind == "update":
                result = await self.collection.update_one(self.query, self.doc, upsert=self.upsert)
                return result.matched_count or int(result.upserted_id is not None)
            return (await self.collection.delete_one(self.query)).deleted_count

    def count_in(self, result: ClientBulkWriteResult | None, index: int) -> int | None:
        """Documents inserted, matched or deleted by this write; None without a result."""
        if result is None:
            return None
        if self.kind == "insert":
            return 1 if index in result.insert_results else None
        if self.kind == "update":
            updated = result.update_results.get(index)
            if updated is None:
                return None
            return updated.matched_count or int(updated.upserted_id is not None)
        deleted = result.delete_results.get(index)
        return None if deleted is None else deleted.deleted_count


@dataclass(frozen=True, slots=True)
class _Pending:
    write: _Write
    done: asyncio.Future[int]


class GroupCommit:
    def __init__(
        self,
        client: AsyncMongoClient[Doc],
        *,
        max_writes: int = 500,
        max_in_flight: int = 2,
        client_bulk: bool = True,
        journaled: bool = True,
    ) -> None:
        """`client_bulk=False` sends every write alone (what a server before 8.0 gets);
        `journaled=False` is for the event relay's drains (`client.py` `unjournaled`)."""
        self._client = client
        self._concern = None if journaled else without_journal(client.write_concern)
        # Seal rounds when the client journals (gateway/store/client.py open_client does).
        self._journaled = journaled and client.write_concern.document.get("j") is True
        self._marks = Marks("round")
        self._max = max_writes
        self._max_in_flight = max_in_flight
        self._queue: list[_Pending] = []
        self._in_flight = 0
        self._bulk_supported = client_bulk
        self.round_trips = 0  # commands sent (tests and benchmarks read it)

    async def insert(self, collection: Collection, doc: Doc) -> None:
        """Insert `doc`; Conflict if a unique key (its `_id` included) is taken."""
        await self._write(_Write(collection, "insert", {}, doc))

    async def update(
        self, collection: Collection, query: Doc, update: Doc | list[Doc], *, upsert: bool = False
    ) -> int:
        """Update the one document `query` matches (`update`: operators, or a pipeline); how
        many matched (0 or 1). With `upsert`, a query that matches none inserts the document,
        and that counts as 1."""
        return await self._write(_Write(collection, "update", query, update, upsert))

    async def delete(self, collection: Collection, query: Doc) -> int:
        return await self._write(_Write(collection, "delete", query, {}))

    async def updates(
        self, collection: Collection, writes: Sequence[tuple[Doc, Doc]]
    ) -> list[int | BaseException]:
        """Several updates handed over at once (`update`'s each): they leave together, one
        round and one seal, where writes arriving one by one would send the first alone.
        Each one's outcome, or what it failed with."""
        loop = asyncio.get_running_loop()
        pending = [
            _Pending(_Write(collection, "update", q, u), loop.create_future()) for q, u in writes
        ]
        self._queue += pending
        while self._queue and self._in_flight < self._max_in_flight:
            self._start_round()
        return await asyncio.gather(*(p.done for p in pending), return_exceptions=True)

    async def _write(self, write: _Write) -> int:
        """Queue one write and wait for its own outcome. A database that fails is
        StoreUnavailable (and the write may or may not have landed)."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(write, done))
        if self._in_flight < self._max_in_flight:
            self._start_round()
        return await done

    def _start_round(self) -> None:
        self._in_flight += 1
        batch, self._queue = self._queue[: self._max], self._queue[self._max :]
        task = asyncio.create_task(self._round(batch))
        task.add_done_callback(self._round_ended)

    def _round_ended(self, task: asyncio.Task[None]) -> None:
        self._in_flight -= 1
        if self._queue and self._in_flight < self._max_in_flight:
            self._start_round()

    async def _round(self, batch: list[_Pending]) -> None:
        try:
            if len(batch) == 1:
                # Alone, a write is one command with the client's write concern (journaled
                # where the client journals): no bulkWrite, no seal, one round trip.
                await self._alone(batch[0])
                return
            if self._bulk_supported:
                try:
                    await self._bulk(batch)
                    return
                except InvalidOperation as exc:  # a server before 8.0
                    log.warning("no client-level bulkWrite (%s): writes go one by one", exc)
                    self._bulk_supported = False
                except InvalidPayload:
                    # A document BSON cannot hold, found while encoding the command (before
                    # it was sent, unless the round filled more than one 48 MB message): one
                    # by one, so that only its own writer hears of it, not the whole round
                    # (other requests, other tenants).
                    pass
            await asyncio.gather(*(self._alone(pending) for pending in batch))
        except BaseException as exc:
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(_unavailable(exc))
            if not isinstance(exc, Exception):
                raise

    async def _bulk(self, batch: list[_Pending]) -> None:
        models = [pending.write.model() for pending in batch]
        mark = None
        if self._journaled:
            mark = self._marks.next()
            seals = batch[0].write.collection.database[SEALS].full_name
            models.append(InsertOne(mark_doc(mark), namespace=seals))
        self.round_trips += 1
        result: ClientBulkWriteResult | None = None
        errors: dict[int, Any] = {}
        failure: Any = None
        try:
            with translate_errors():
                result = await self._client.bulk_write(
                    models, ordered=False, verbose_results=True, write_concern=self._concern
                )
        except ClientBulkWriteException as exc:
            # Documents, whatever pymongo's annotation says.
            reported = cast(list[dict[str, Any]], exc.write_errors or [])
            errors = {int(e["idx"]): e for e in reported}
            failure = exc.error or exc.write_concern_errors
            result = exc.partial_result
        if isinstance(failure, BaseException):
            # The command failed as a whole (a deadline: a document held by a transaction a
            # dead process left open, or a slow database): the writes after the one it
            # stopped at were never run, the round's mark neither, and the ones before it
            # are not known journaled. Every outcome is unknown, said as it is: a seal would
            # find no mark and blame a database restart.
            unknown = _whole_round_failed(failure)
            for pending in batch:
                _reject(pending, unknown)
            return
        if mark is not None:
            await seal(batch[0].write.collection.database, mark)
            self.round_trips += 1
        for index, pending in enumerate(batch):
            _settle(pending, result, index, errors.get(index), failure)

    async def _alone(self, pending: _Pending) -> None:
        self.round_trips += 1
        write = pending.write
        if self._concern is not None:
            write = replace(write, collection=unjournaled(write.collection))
        try:
            outcome = await write.run_alone()
        except Exception as exc:
            _reject(pending, exc)
        else:
            _resolve(pending, outcome)


def _settle(
    pending: _Pending,
    result: ClientBulkWriteResult | None,
    index: int,
    error: Any,
    failure: Any,
) -> None:
    """Give one write its outcome: its own error, its result, or StoreUnavailable when the
    command failed as a whole before reporting on it, or its write concern failed (the write
    was applied, but is not known to be durable: no one may hear it is stored)."""
    if error is not None:
        if error.get("code") == DUPLICATE_KEY:
            _reject(pending, Conflict("a resource with this key already exists"))
        else:  # refused for what it holds, as `translate_errors` has it
            _reject(pending, refused(error))
        return
    count = pending.write.count_in(result, index)
    if isinstance(failure, list) and failure:  # the round's write concern errors
        concern = failure[0] if isinstance(failure[0], dict) else {"errmsg": str(failure[0])}
        _reject(pending, concern_failed(concern))
    elif count is None:
        detail = str(failure)[:200]
        _reject(pending, StoreUnavailable(f"write outcome unknown: {detail}"))
    else:
        _resolve(pending, count)


def _resolve(pending: _Pending, count: int) -> None:
    """The write's outcome to its caller, unless the caller is gone (its request cancelled:
    its future with it), which must not keep the round's other callers from theirs."""
    if not pending.done.done():
        pending.done.set_result(count)


def _reject(pending: _Pending, exc: BaseException) -> None:
    if not pending.done.done():
        pending.done.set_exception(exc)


def _whole_round_failed(failure: BaseException) -> StoreUnavailable:
    try:
        with translate_errors():
            raise failure
    except StoreUnavailable as exc:
        translated = exc
    except Exception as exc:  # any other error of the command: the outcome is unknown too
        translated = StoreUnavailable(f"database write failed: {type(exc).__name__}")
    if translated.deadline:
        return StoreUnavailable(
            f"the writes did not finish within the deadline ({type(failure).__name__}): a "
            "document they change is held by an unfinished transaction (one a killed process "
            "left open is aborted within about 75 s), or the database is slow; their outcome "
            "is unknown",
            deadline=True,
        )
    return StoreUnavailable(
        f"{translated.detail}; the outcome of the writes is unknown",
        answered=translated.answered,
        refused=translated.refused,
    )


def _unavailable(exc: BaseException) -> Exception:
    if isinstance(exc, Conflict | InvalidPayload | StoreUnavailable):
        return exc
    return StoreUnavailable(f"database write failed: {type(exc).__name__}")
