"""Change streams: which documents of a collection changed, as they change.

A process that caches what it read (the trigger gate, say) follows the collection's change
stream and forgets what changed. Change streams need a replica set (SecantusDB advertises a
single-node one); a standalone MongoDB refuses them, and the caller then falls back to
re-reading on a short interval (`ChangeStreamsUnavailable`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from pymongo.errors import OperationFailure

from gateway.errors import StoreUnavailable
from gateway.store.client import Collection, Doc, translate_errors

# "The $changeStream stage is only supported on replica sets" (standalone mongod), and
# "command not supported" from servers or proxies that have no change streams at all.
_UNSUPPORTED: Final = frozenset({40573, 115, 136})
_PROJECTION: Final = {"$project": {"operationType": 1, "documentKey": 1}}
# Operations after which the stream ends: the collection or database went away.
_ENDINGS: Final = frozenset({"invalidate", "drop", "rename", "dropDatabase"})

# The driver resumes a stream by itself after a lost connection, on a new cursor, from its
# last resume token. A database that crashed and restarted may have reused that token's
# oplog positions for other writes since (SecantusDB mints them again from what it made
# durable, and the relay's unjournaled writes were not): the resumed stream then skips the
# next changes without a word. Such a stream is given up instead; a new one starts at the
# restarted database's present, and its caller forgets what it read before.
_RESUMED: Final = "change stream resumed by the driver after a lost connection; reopening it"

# The changes that bring a leased unit (a delivery, a flow run) due: created, or pending again
# (a replay, a release, a retry's time set; `leased_loop.follow_arrivals`).
ARRIVALS: Final = {
    "$or": [
        {"operationType": "insert"},
        {"operationType": "update", "updateDescription.updatedFields.status": "pending"},
    ]
}

EVERYTHING: Final = "*"
"""Yielded (in the id list) when the stream cannot say which documents changed."""


class ChangeStreamsUnavailable(Exception):
    """This deployment has no change streams (a standalone MongoDB)."""


async def changed_ids(
    collection: Collection,
    *,
    await_ms: int,
    min_interval_ms: int = 200,
    match: Mapping[str, Any] | None = None,
    field: str | None = None,
) -> AsyncIterator[list[Any]]:
    """The `_id`s of documents changed since the stream opened, in order; with `match`, only
    of the changes it matches (a `$match` on the change events, which the server applies; the
    stream's endings always pass). With `field`, the changed documents' `field` instead, as
    stored (an update's document looked up: `updateLookup`); `EVERYTHING` for one that has
    none, nothing for one deleted since.

    Yields `[]` right after the stream opened and whenever a wait of `await_ms` brought no
    change: the caller knows then that it has seen every change up to about that moment.
    `[EVERYTHING]` when the collection was dropped or renamed (the stream then ends).
    Raises ChangeStreamsUnavailable, or StoreUnavailable when the database fails, the driver's
    own resumption of the stream included (`_RESUMED`): the caller opens a new one.

    A server may end a wait early whenever anything at all is written (SecantusDB does):
    under write load an empty answer then comes back at once, so successive waits start at
    least `min_interval_ms` apart instead of spinning.
    """
    projection = dict(_PROJECTION["$project"])
    if field is not None:
        projection[f"fullDocument.{field}"] = 1
    pipeline: list[Doc] = [{"$project": projection}]
    if match is not None:
        ended = {"operationType": {"$in": sorted(_ENDINGS)}}
        pipeline.insert(0, {"$match": {"$or": [dict(match), ended]}})
    with translate_errors():  # what is not the refusal below: StoreUnavailable
        try:
            stream = await collection.watch(
                pipeline,
                max_await_time_ms=await_ms,
                full_document=None if field is None else "updateLookup",
            )
        except OperationFailure as exc:
            # before translate_errors, which would make it StoreUnavailable (a stream to
            # reopen, again and again, on a standalone MongoDB)
            if exc.code in _UNSUPPORTED:
                raise ChangeStreamsUnavailable(str(exc)) from None
            raise
    loop = asyncio.get_running_loop()
    async with stream:
        yield []
        started = loop.time()
        while stream.alive:
            cursor = stream._cursor
            try:
                with translate_errors():
                    change = await stream.try_next()
            except OperationFailure as exc:
                raise StoreUnavailable(f"change stream failed: {exc}") from exc
            if stream._cursor is not cursor:
                raise StoreUnavailable(_RESUMED)
            if change is None:
                yield []
                await asyncio.sleep(max(0.0, started + min_interval_ms / 1000 - loop.time()))
                started = loop.time()
            elif change.get("operationType") in _ENDINGS:
                yield [EVERYTHING]
                return
            elif field is None:
                yield [change["documentKey"]["_id"]]
            elif (document := change.get("fullDocument")) is None:
                yield []  # deleted since
            else:
                yield [document.get(field, EVERYTHING)]
