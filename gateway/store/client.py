"""The MongoDB connection: opening it, translating driver errors, and tenant scoping."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import re
import sys
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Container, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar

import bson
import pymongo.asynchronous.pool
import pymongo.lock
from bson import ObjectId
from bson.codec_options import TypeDecoder, TypeRegistry
from bson.dbref import DBRef
from bson.errors import InvalidDocument, InvalidId
from pymongo import AsyncMongoClient, WriteConcern, uri_parser
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ClientBulkWriteException,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WriteError,
    _OperationCancelled,
)
from pymongo.monitoring import TopologyListener

from gateway.clock import utcnow
from gateway.config import ConfigError
from gateway.errors import BadRequest, Conflict, InvalidPayload, StoreUnavailable
from gateway.formats.unicode_forms import folded

Doc = dict[str, Any]
Collection = AsyncCollection[Doc]
Database = AsyncDatabase[Doc]
_T = TypeVar("_T")


async def _wait_in_this_task(awaitable: Awaitable[_T], timeout: float | None) -> _T:
    """`asyncio.wait_for` as 3.12 has it: the awaitable runs in the caller's task."""
    async with asyncio.timeout(timeout):
        return await awaitable


if sys.version_info < (3, 12):
    # PyMongo waits on its topology's and pools' conditions with `asyncio.wait_for`, which on
    # 3.11 runs the wait in a task of its own. A caller cancelled twice (`cancel_and_wait`
    # cancels again until the task ends) while another task held the lock across an await
    # returned without that inner wait, which then took the lock for nobody: the holder's
    # release raised RuntimeError("Lock is not acquired"), and the lock stayed taken, every
    # later server selection and the client's close waiting on it (tests/test_driver_lock.py).
    # In the caller's task, the condition's own wait takes the lock again whatever the
    # cancellations, before the caller's `async with` releases it.
    pymongo.lock.wait_for = _wait_in_this_task  # type: ignore[attr-defined,assignment]


async def _send_in_this_task(conn: Any, buf: bytes) -> None:
    """`pymongo.network_layer.async_sendall`, its deadline kept in the caller's task."""
    try:
        await _wait_in_this_task(conn.write(buf), conn.gettimeout)
    except TimeoutError as exc:
        raise TimeoutError("timed out") from exc  # the driver's own wording


if sys.version_info < (3, 12) and hasattr(pymongo.asynchronous.pool, "async_sendall"):
    # Every command goes out through `async_sendall`, which bounds the send with
    # `asyncio.wait_for`: on 3.11 the send runs in a task of its own, and a caller cancelled
    # between that task's end and its own resumption got the send's result instead of its
    # CancelledError. The cancellation was lost: the operation went on, and so did the loop
    # that awaited it (a fold stopped at shutdown, its task `cancelling` but running on for
    # good: a SIGTERM that never ended the process; tests/test_driver_send_cancel.py).
    pymongo.asynchronous.pool.async_sendall = _send_in_this_task


_OpenConnection = Callable[..., Awaitable[Any]]
_opening: set[asyncio.Future[Any]] = set()
"""Connection attempts whose caller was cancelled, held until they end (see below)."""


async def cancelled_connections_closed() -> None:
    """Once the attempts still running for cancelled callers (a client's close cancels its
    monitors mid-connect) have ended and what they opened is closed: at shutdown, before the
    event loop that runs them goes."""
    loop = asyncio.get_running_loop()
    if running := [attempt for attempt in _opening if attempt.get_loop() is loop]:
        await asyncio.wait(running)
        await asyncio.sleep(0)  # the transports' close runs on the next turn of the loop


def _close_if_opened(attempt: asyncio.Future[Any]) -> None:
    _opening.discard(attempt)
    if not attempt.cancelled() and attempt.exception() is None:
        attempt.result().conn[0].abort()  # AsyncNetworkingInterface.conn: (transport, protocol)


def _closed_when_cancelled(open_connection: _OpenConnection) -> _OpenConnection:
    """PyMongo opens a pool's connection in the task of the operation that needs it, and
    closes the new socket on a timeout or an OSError only: a task cancelled while it connects
    (a request's deadline, a job stopped at shutdown) dropped the socket, open, until the
    garbage collector closed it (a ResourceWarning, then). Here the attempt runs on, shielded,
    and what it opens for a caller that is gone is closed (tests/test_driver_connect_cancel.py)."""

    async def opened(*args: Any, **kwargs: Any) -> Any:
        attempt = asyncio.ensure_future(open_connection(*args, **kwargs))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            _opening.add(attempt)
            attempt.add_done_callback(_close_if_opened)
            raise

    opened.__wrapped__ = open_connection  # type: ignore[attr-defined]
    return opened


# What `AsyncPool.connect` calls to open a connection; present since the asyncio protocol
# networking (PyMongo 4.13). A release without it is told by the test above, not at run time:
# the driver then works as it does, leaking only what a cancellation cuts short.
if hasattr(pymongo.asynchronous.pool, "_configured_protocol_interface"):
    pymongo.asynchronous.pool._configured_protocol_interface = _closed_when_cancelled(
        pymongo.asynchronous.pool._configured_protocol_interface
    )


class _PlainReference(TypeDecoder):
    """An object with `$ref` and `$id` members read back as the object it is. PyMongo decodes
    every such embedded document as a `bson.DBRef` (the DBRef convention), with no option to
    turn that off; the gateway stores JSON, where the pair is ordinary (a JSON Reference, a
    JSON-LD or serialiser's link, a JSON Schema with its `$id` beside a `$ref`). An entity, an
    event, a kind's schema or a flow came back as a DBRef, which the JSON answer wrote as its
    Python text and a re-send compared as a change (tests/test_entity_writes.py). The mapping
    is rebuilt member for member; what a DBRef keeps no trace of is lost: the members' order
    (`$ref`, `$id`, `$db` come first) and a `"$db": null` beside the pair."""

    bson_type = DBRef

    def transform_bson(self, value: Any) -> Doc:
        return dict(value.as_doc())


PLAIN_DOCUMENTS = TypeRegistry([_PlainReference()])
"""The client's decoders: every read of a stored document goes through them."""


def check_uri(name: str, uri: str) -> None:
    """A ConfigError naming the setting `name` when the driver's own parser refuses `uri`
    (no host, a port out of range, an unescaped `@`, an SRV URI with a port), said at start
    instead of a traceback at the first connection. An option the driver knows with a value
    it cannot take (`tls=yes`, a mistyped readPreference or authMechanism, a tlsCAFile it
    cannot read) is refused too: the client drops such an option with a warning and goes on
    without it (without TLS, for `tls=yes`). An unknown option stays the driver's warning (a
    newer driver's option, tolerated). An SRV name is read as a host: no DNS query here."""
    scheme, _, rest = uri.partition("://")
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            parsed = uri_parser.parse_uri(f"mongodb://{rest}", warn=True)
    except (PyMongoError, ValueError, OSError) as exc:  # the messages hold no password
        raise ConfigError(f"{name} is not a valid connection string: {exc}") from None
    # The driver's messages name the option, never its value (nor the URI's password).
    refused = [
        str(warning.message)
        for warning in said
        if warning.category is UserWarning and not str(warning.message).startswith("Unknown option")
    ]
    if refused:
        raise ConfigError(f"{name} has an option the driver refuses: {refused[0]}")
    if scheme == "mongodb+srv" and (
        len(parsed["nodelist"]) != 1
        or ":" in rest.partition("?")[0].partition("/")[0].rpartition("@")[2]
        or parsed["options"].get("directConnection")
    ):
        raise ConfigError(
            f"{name} is not a valid connection string: a mongodb+srv:// URI names one host, "
            "without a port, and no directConnection"
        )


POOL_MAX_IDLE_MS: Final = 60_000
"""How long a pooled connection may sit idle before the driver closes it (`open_client`)."""


class _GatedClient(AsyncMongoClient[Doc]):
    """A client whose writes ask `write_gate` first (it raises to refuse one: nothing is sent).

    Every command goes through the driver's `_retry_internal` (inserts, updates, deletes,
    find-and-modify, bulk and client bulk writes, index builds, a transaction's statements,
    finds, counts and aggregations); a read (`is_read`), an aggregation writing nothing and a
    transaction's end, its commit or abort, and the seal of writes already let through
    (`finishing`), are let through. The driver sends every
    `Database.command` as a read (`is_run_command`): one is let through only when its name
    is a read's (`READ_COMMANDS`: `ping`, `hello`, `buildInfo` …), and any other (the TTL
    and retention `collMod`s of `store/expiry.py` and `store/positions.py`, a `drop`, an
    `insert`) asks the gate. So the gate holds for every writer of the process alike, a
    request, a background job or a one-shot command. (A
    transaction's statements were asked each: its commit writes nothing they did not. A
    refused commit left the transaction open on the server, holding its documents until the
    server reaped it, ~60 s: the driver counts a commit that raised as ended, and sends no
    abort.)"""

    def __init__(self, *args: Any, write_gate: Callable[[], None], **kwargs: Any) -> None:
        self.__write_gate = write_gate
        super().__init__(*args, **kwargs)

    async def _retry_internal(self, *args: Any, **kwargs: Any) -> Any:
        # The driver's own arguments, read by name against its own signature and handed on
        # untouched: another driver version that reorders or adds them is still served (one
        # that renames the method leaves the gate unasked: tests/test_embedded_database.py).
        # Every read and write of the process comes through here: the positions are looked up
        # once (`_RETRY_POSITIONS`), not bound against the signature each call.
        operation = _argument("operation", args, kwargs)
        writes = (
            not _argument("is_read", args, kwargs)
            or _argument("is_aggregate_write", args, kwargs)
            or (
                _argument("is_run_command", args, kwargs)
                and str(operation).lower() not in READ_COMMANDS
            )
        )
        if writes and operation not in _TRANSACTION_ENDS and not _FINISHING.get():
            self.__write_gate()
        return await super()._retry_internal(*args, **kwargs)


_RETRY_PARAMETERS = list(inspect.signature(AsyncMongoClient._retry_internal).parameters.values())
_RETRY_POSITIONS: Final = {p.name: n for n, p in enumerate(_RETRY_PARAMETERS[1:])}  # not self
_RETRY_DEFAULTS: Final = {p.name: p.default for p in _RETRY_PARAMETERS if p.default is not p.empty}


def _argument(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The driver's argument `name` to `_retry_internal`, given by name or by position, else
    its default (None for one the driver's version does not have)."""
    if name in kwargs:
        return kwargs[name]
    position = _RETRY_POSITIONS.get(name)
    if position is not None and position < len(args):
        return args[position]
    return _RETRY_DEFAULTS.get(name)


_TRANSACTION_ENDS: Final = frozenset({"commitTransaction", "abortTransaction"})

_FINISHING: ContextVar[bool] = ContextVar("finishing", default=False)


@contextlib.contextmanager
def finishing() -> Iterator[None]:
    """The writes within complete a unit the write gate already let through, as a commit
    does (`_GatedClient`): the seal of a group commit round or of a committed transaction
    (`group_commit.seal`, the journaled delete of the round's mark). Its writes are stored
    once its bulk write or its commit returns; refusing the seal would answer "the database
    takes no writes" for writes that are stored, their events relayed later, and leave the
    mark behind. It is one small delete, which frees room rather than taking it."""
    token = _FINISHING.set(True)
    try:
        yield
    finally:
        _FINISHING.reset(token)


READ_COMMANDS: Final = frozenset(
    name.lower()
    for name in (
        "ping",
        "hello",
        "isMaster",
        "buildInfo",
        "serverStatus",
        "hostInfo",
        "connectionStatus",
        "getParameter",
        "getCmdLineOpts",
        "listCommands",
        "listDatabases",
        "listCollections",
        "listIndexes",
        "dbStats",
        "collStats",
        "dataSize",
        "count",
        "distinct",
        "find",
        "getMore",
        "explain",
        "top",
        "currentOp",
        "whatsmyuri",
        "getLog",
    )
)
"""The commands a `Database.command` may send past the write gate (`_GatedClient`), by
name, compared in lower case (`isMaster` is `ismaster` too): they read and write nothing.
Any other name asks the gate, an unknown one included; `aggregate` too, whose pipeline
(`$out`, `$merge`) the name does not tell."""


def open_client(
    uri: str,
    *,
    timeout_ms: int = 5000,
    write_concern: str | int | None = None,
    listeners: Sequence[TopologyListener] = (),
    write_gate: Callable[[], None] | None = None,
) -> AsyncMongoClient[Doc]:
    """The client every store module shares.

    - `journal=True`: a write is acknowledged only once it is in the database's journal, so a
      2xx survives the database being killed right after it (SPEC §5). Passed as a keyword, it
      wins over a `journal=false` in the URI.
    - `w`: GATEWAY_WRITE_CONCERN (e.g. "majority" on a replica set); unset keeps the URI's.
    - `timeoutMS`: every operation (server selection, connection checkout, the round trip)
      has this deadline; past it the driver gives up and the caller answers 503.
    - `type_registry`: documents read back as JSON objects, never as DBRefs
      (`_PlainReference`).
    - `serverMonitoringMode=poll`: after an error that marks the server unknown (a
      NotWritablePrimary, a ShutdownInProgress) the driver checks it again at once. With the
      streaming protocol its monitor was waiting in an awaitable `hello` that a server whose
      state did not change answers only after the heartbeat (10 s): every request failed
      server selection until then (tests/test_command_faults.py).
    - `connectTimeoutMS`: the operations' deadline too. The monitor's `hello` (every
      heartbeat, 10 s) waits on its socket that long (the SDAM spec: a monitor's socket
      timeout is connectTimeoutMS), and its timeout marks the server unknown and cancels
      every operation in flight on it (`_OperationCancelled`). At 2 s, a database that took
      2 to 5 s to answer (a stall, a loaded SecantusDB) had its writes cancelled, "outcome
      unknown", although each would have been answered within its deadline
      (tests/test_database_pause.py). The pool's connects are bounded by the operation's
      deadline (timeoutMS) whatever this says.
    - `maxIdleTimeMS` (`POOL_MAX_IDLE_MS`): a pooled connection idle that long is closed by
      the driver, before the server or a network hop closes it. SecantusDB closes one idle for
      300 s, cloud load balancers and NATs after 4 to 6 minutes; a connection the driver kept
      longer could be closed by the server as an operation took it ("connection closed":
      the driver marks the server unknown, and `health.py` the database down at once), and
      every request of the process was refused for about a second, with no fault at all.
    - `write_gate`: asked before each write, which it refuses by raising (`_GatedClient`):
      the embedded database's free-space floor (`DatabaseHealth.check_write`).
    """
    options: dict[str, Any] = {"journal": True}
    if write_concern is not None:
        options["w"] = write_concern
    if write_gate is not None:
        options["write_gate"] = write_gate
    client = _GatedClient if write_gate is not None else AsyncMongoClient
    return client(
        uri,
        tz_aware=True,
        timeoutMS=timeout_ms,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        maxIdleTimeMS=POOL_MAX_IDLE_MS,
        appname="rabbot-gateway",
        serverMonitoringMode="poll",
        type_registry=PLAIN_DOCUMENTS,
        event_listeners=list(listeners),
        **options,
    )


@contextlib.contextmanager
def translate_errors(
    conflict_detail: str = "a resource with this key already exists",
) -> Iterator[None]:
    """pymongo exceptions never leave store/: they become the gateway's own errors.

    - a duplicate key is a Conflict; a document BSON cannot hold, or one the server refuses
      for what it holds (a write error: nested too deep, too large), an InvalidPayload;
    - everything else the database or the way to it does is StoreUnavailable (503 with
      Retry-After at the edge, "outcome unknown" on a write): no server, a lost connection,
      a deadline, and a command the server failed as a whole, whatever its code (a primary
      stepping down, a full disk, a `writeConcernError`: then the write was applied but is
      not known to be durable). Never a 500: the request is not at fault.
    - a bulk write's own exceptions pass through: their callers read them per document."""
    try:
        yield
    except DuplicateKeyError:
        raise Conflict(conflict_detail) from None
    except InvalidDocument as exc:  # e.g. a key with a NUL byte: BSON cannot hold it
        raise InvalidPayload(f"the document cannot be stored: {exc}") from None
    except OverflowError as exc:  # an integer past 8 bytes (JSON allows it): BSON neither
        raise InvalidPayload(f"the document cannot be stored: {exc}") from None
    except WriteError as exc:
        raise InvalidPayload(f"the database refused the document: {_message(exc)}") from None
    except (BulkWriteError, ClientBulkWriteException):
        raise
    except ConnectionFailure as exc:  # server selection, AutoReconnect, NetworkTimeout
        # An operation the driver cancelled because its monitor's `hello` got no answer
        # within the deadline (`open_client`) met a deadline too: the database may be slow.
        deadline = (exc.timeout or isinstance(exc, _OperationCancelled)) and not isinstance(
            exc, ServerSelectionTimeoutError
        )
        raise StoreUnavailable(
            f"database unavailable: {type(exc).__name__}", deadline=deadline
        ) from exc
    except OperationFailure as exc:
        # The server answered and failed the command (`ok: 0`, or `writeConcernError`); a
        # passed `maxTimeMS` is a deadline like the driver's own.
        what = "deadline passed" if exc.timeout else "failed the command"
        raise StoreUnavailable(
            f"database {what}: {_message(exc)}",
            deadline=exc.timeout,
            answered=True,
            refused=not (exc.timeout or _server_state(exc)),
        ) from exc
    except PyMongoError as exc:
        if not exc.timeout:
            raise
        # A deadline passed (timeoutMS): the operation may still complete on the server; the
        # web edge says so on a write (outcome unknown).
        raise StoreUnavailable(
            f"database deadline passed: {type(exc).__name__}", deadline=True
        ) from exc
    except RuntimeError as exc:
        # pymongo's asyncio lock (`_asyncio_lock`) turns a cancellation that lands while the
        # driver waits to select a server into RuntimeError("Lock is not acquired"). It is
        # the cancellation: lost, a loop that retries on errors never ended, and a SIGTERM
        # with the database unreachable never stopped the process.
        if isinstance(exc.__context__, asyncio.CancelledError):
            raise asyncio.CancelledError from exc
        raise


# Command errors that speak of the server, not of what the command carried: the retryable
# writes spec's codes (a primary stepping down or shutting down, a host or the network gone),
# a full disk, and contention that passes (a lock wait timed out, a write conflict, an
# operation interrupted). The server may also say so with a label.
_SERVER_STATE_CODES = frozenset(
    {6, 7, 24, 89, 91, 112, 134, 189, 262, 9001, 10058, 10107, 11600, 11601, 11602, 13435, 13436}
    | {14031}
)
_TRANSIENT_LABELS = ("RetryableWriteError", "TransientTransactionError")


def _server_state(exc: OperationFailure) -> bool:
    """Whether the error is the server's state (the same command will pass once it changes),
    rather than a refusal of what this command carried (`StoreUnavailable.refused`)."""
    return (
        isinstance(exc, WriteConcernError)
        or exc.code in _SERVER_STATE_CODES
        or any(exc.has_error_label(label) for label in _TRANSIENT_LABELS)
    )


def _message(exc: OperationFailure) -> str:
    """The server's code name and code (what an operator looks up), and its message."""
    details = exc.details or {}
    concern = details.get("writeConcernError")
    if isinstance(exc, WriteConcernError) and isinstance(concern, dict):
        details = concern
    return server_error(
        {"codeName": type(exc).__name__, "code": exc.code, "errmsg": exc, **details}
    )


def server_error(error: Mapping[str, Any]) -> str:
    """A server's error document (a write error, a write concern error) as a log and problem
    detail: its code name and code, and its message."""
    message = str(error.get("errmsg") or "")[:200]
    return f"{error.get('codeName') or ''} ({error.get('code')}): {message}"


def refused(error: Mapping[str, Any]) -> InvalidPayload:
    """A write error on one document: the server refused it for what it holds."""
    return InvalidPayload(f"the database refused the document: {server_error(error)}")


def concern_failed(concern: Mapping[str, Any]) -> StoreUnavailable:
    """A failed write concern: the writes were applied, but are not known to be durable."""
    return StoreUnavailable(f"database failed the command: {server_error(concern)}", answered=True)


DUPLICATE_KEY = 11000  # the server's error code for a key that exists

INSERT_CHUNK: Final = 250
"""Documents per command of `insert_new`, each command under its own deadline
(GATEWAY_DB_TIMEOUT_MS). A fold pass after a takeover or a backlog stores thousands of events
and deliveries at once: one `insert_many` of 4,000 events took SecantusDB 13 s at a load of
11 on 2 cores (2.4 CPU-s; 250 take 0.6 s), so it never fit the deadline, and the pass was
folded again every few seconds while the server went on inserting what the client had given
up, duplicates of the last try included (docs/benchmarks.md, "A fold's backlog")."""


async def insert_new(collection: Collection, docs: Sequence[Doc]) -> int:
    """Insert the documents whose `_id` is new; those that exist are left as they are (the
    idempotent writes of the relay and the fan-out), `INSERT_CHUNK` a command, one after the
    other. Returns how many were inserted."""
    return len(docs) - len(await _insert_unordered(collection, docs))


async def insert_new_held(collection: Collection, docs: Sequence[Doc]) -> set[Any]:
    """`insert_new`, answering the ids of the documents the collection held already (its
    unordered inserts' duplicate keys: which a write done again had written before)."""
    return set(await _insert_unordered(collection, docs))


async def _insert_unordered(collection: Collection, docs: Sequence[Doc]) -> list[Any]:
    """Insert `docs`, each on its own, `INSERT_CHUNK` a command; the ids of those refused
    as duplicate keys."""
    held: list[Any] = []
    for start in range(0, len(docs), INSERT_CHUNK):
        chunk = list(docs[start : start + INSERT_CHUNK])
        try:
            with translate_errors():
                await collection.insert_many(chunk, ordered=False)
        except BulkWriteError as exc:
            bulk_failure(exc)  # raises unless every error is a duplicate key
            held += [chunk[error["index"]]["_id"] for error in exc.details.get("writeErrors", [])]
    return held


async def indexes_by_name(
    collection: Collection, present: Container[str] | None = None
) -> dict[str, Doc]:
    """The indexes of `collection`, by name. `present`: the collections the database had when
    this start listed them (`Store.ensure_indexes`); one not among them had none, and is not
    asked (a new database's start lists its collections once, not each one's indexes). A
    collection another process created since gets its indexes as this one asks: one of the
    same name with another definition is refused, and the start tried again (connection.py)."""
    if present is not None and collection.name not in present:
        return {}
    with translate_errors():
        return {i["name"]: dict(i) for i in await (await collection.list_indexes()).to_list(None)}


def stored_size(value: Any) -> int:
    """Bytes `value` takes in a database document (BSON, as a field of one)."""
    return len(bson.encode({"": value}))


_last_id_second = 0
ID_STEP_BACK_SECONDS: Final = 2


def new_id() -> ObjectId:
    """A fresh document id, for a caller that must know it before the insert (to seal a
    secret to it, or to name an event in an outbox), or whose id's time is read as the
    document's (lists newest first, activity). That time is the gateway's (`utcnow`), not
    the host's: the driver's own ids (`ObjectId()`) keep a skewed host's clock."""
    global _last_id_second
    made = ObjectId().binary  # its last 8 bytes: the process's random value, a counter
    # Not before this process's previous id when the clock's offset, measured again every
    # minute, steps back a little (a list read on from its last id would miss one); a step
    # back of more (a clock corrected) is followed.
    now = int(utcnow().timestamp())
    if not _last_id_second - ID_STEP_BACK_SECONDS <= now < _last_id_second:
        _last_id_second = now
    return ObjectId(_last_id_second.to_bytes(4, "big") + made[4:])


def id_above(made: ObjectId, floor: ObjectId | None) -> ObjectId:
    """`made`, or when it does not sort above `floor`, an id that does, with `made`'s counter:
    `floor`'s time and `floor`'s random value plus one. Within one second two processes' ids
    sort by their random values, not by when they were made: an entity's event ids each
    taken above its previous event's sort in the entity's write order (`store/entities.py`).
    The counter is `made`'s, not `floor`'s plus one: that is the next id the process of
    `floor` makes itself; a process whose random value is `floor`'s plus one is a 1 in 2**40
    chance."""
    if floor is None or made > floor:
        return made
    value = ((int.from_bytes(floor.binary, "big") >> 24) + 1) << 24
    value |= int.from_bytes(made.binary[9:], "big")
    return ObjectId(value.to_bytes(12, "big")) if value < 1 << 96 else made


def derived_id(at: datetime, *parts: str) -> ObjectId:
    """A deterministic document id: the 4-byte timestamp is `at` (seconds, so ids still sort
    by time), the other 8 bytes the first 8 of sha256 of the parts joined by "|". The same
    parts at the same second always give the same id: a repeated insert is a duplicate key,
    which is what makes a replayed write (an event the fold emits again after a crash)
    idempotent."""
    seconds = int(at.timestamp()) & 0xFFFFFFFF
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return ObjectId(seconds.to_bytes(4, "big") + digest[:8])


ID_BATCH: Final = 50
"""Ids a lookup of many by `_id` names a query (`{"_id": {"$in": ...}}`). Measured on the
embedded server: 1,000 vehicles in batches of 50 took a sixth to a twelfth of the time of
1,000 lookups by one id sent side by side (which queue at the server, the last past the
database deadline), and a single `$in` of 1,000 five to ten times as long as the batches."""


async def find_by_ids(
    collection: Collection,
    ids: Sequence[Any],
    also: Doc | None = None,
    projection: Doc | None = None,
) -> list[Doc]:
    """The documents of these `_id`s that match `also` too, `ID_BATCH` ids a query. `_id`
    comes first in the filter, so each is read through its index whatever `also` holds
    (docs/operations.md, "How to write a store query")."""
    found: list[Doc] = []
    for start in range(0, len(ids), ID_BATCH):
        query = {"_id": {"$in": list(ids[start : start + ID_BATCH])}, **(also or {})}
        with translate_errors():
            found += await collection.find(query, projection).to_list(None)
    return found


def parse_id(value: str) -> ObjectId | None:
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        return None


def canonical_ref(ref: str) -> str:
    """A reference by id or by name, in the form to compare: an ObjectId's text as `str(_id)`
    gives it (lower case; the store finds an id in either case), any other text as it is."""
    oid = parse_id(ref)
    return ref if oid is None else str(oid)


def canonical_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    """A list's filters with each id as stored: the value of an id field (`*_id`, `*.id`:
    another resource's id, a partner, an action, a subscription, an entity, an event) that
    is an ObjectId's text as `str(_id)` gives it, and a flow run's id `<event id>:<flow>`
    with its event id so. A filter matches the stored text, so `?partner_id=<the id in upper
    case>` listed nothing although the store finds the partner itself by that spelling.
    Other fields (a name, a type) are compared as given."""
    return {
        name: _canonical_value(value) if _ID_FIELD.search(name) else value
        for name, value in filters.items()
    }


_ID_FIELD = re.compile(r"[_.]id$")


def _canonical_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    head, colon, tail = value.partition(":")
    if colon and EVENT_ID.fullmatch(head.lower()):
        return f"{head.lower()}:{tail}"
    return canonical_ref(value)


CURSOR_PROBLEM = "cursor must be the next_cursor of the previous page"
# The text ids and names lists page by (the previous page's last one):
NAME_CURSOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # mapping and flow names
KIND_CURSOR = re.compile(r"[a-z][a-z0-9_]{0,62}")  # custom kinds' names
TRIGGER_CURSOR = re.compile(r"trg_[A-Za-z0-9_-]{1,64}")  # triggers/spec.py
# Deliveries and flow runs: `<event id>:<subscription id | flow[:step...]>`.
EVENT_ID = re.compile(r"[0-9a-f]{24}")  # an event's ObjectId as text
EVENT_CHILD_CURSOR = re.compile(r"[0-9a-f]{24}:[!-~]{1,300}")


def cursor_id(cursor: str) -> ObjectId:
    """A page cursor that is the last id of the previous page: a malformed one is a 400,
    never the first page again."""
    oid = parse_id(cursor)
    if oid is None:
        raise BadRequest(CURSOR_PROBLEM)
    return oid


def cursor_text(cursor: str | None, shape: re.Pattern[str]) -> str | None:
    """A text cursor (an id or name a page ended with) of the list's shape, else a 400: a junk
    or tampered cursor would otherwise read an empty page, or the first page again."""
    if cursor is not None and not shape.fullmatch(cursor):
        raise BadRequest(CURSOR_PROBLEM)
    return cursor


def event_children(event_id: str) -> Doc:
    """The `_id` range of an event's children (deliveries `<event id>:<sub>`, flow runs
    `<event id>:<flow>`). Its lower bound is no prefix of their ids: SecantusDB, reading a
    range through an index with `_id` descending, finds nothing when the ids start with the
    bound (`<event id>:`), and through the primary index it reads every id of the collection
    (166 ms of its CPU at 10,000 deliveries, 0.4 ms this way). `9` sorts just below `:`, and
    nothing of that shape lies between."""
    return {"$gt": f"{event_id}9", "$lt": f"{event_id};"}


def child_cursor(cursor: str, event_id: str) -> str:
    """A cursor of a list of one event's children (deliveries, runs): one of that event's ids,
    else a 400 (another event's would read an empty page, as if the list had ended)."""
    if not cursor.startswith(f"{event_id}:"):
        raise BadRequest(CURSOR_PROBLEM)
    return cursor


async def find_by_id(collection: Collection, tenant: str, doc_id: str) -> Doc | None:
    """The tenant's document with this ObjectId; None for another tenant's or a malformed id."""
    oid = parse_id(doc_id)
    if oid is None:
        return None
    with translate_errors():
        return await collection.find_one(scoped(tenant, {"_id": oid}))


MAX_NAME_SEARCH: Final = 200
"""The longest text a name search takes: the longest name (a schedule's; a trigger's is at most
100). Escaped, its punctuation doubled, it stays within the embedded server's 1,000-character
cap on a pattern; a longer text was a 503 "database unavailable" with the engine's message."""


NAME_FOLDED: Final = "name_folded"
"""The member beside a trigger's or schedule's `name` that its name search reads: the name
`folded` (any Unicode form, any case, no accents), written with the name (`with_folded_name`)
and, for the names stored before, by the one-time upgrade step `NAME_FOLDING`."""


def name_containing(text: str | None) -> Doc:
    """A list's name search: the names holding `text` in any Unicode form and case, accents
    or none (`sao joao` finds `São João`, composed or decomposed), its characters taken
    literally; no condition for none. It compares the folded forms (`NAME_FOLDED`; no regex
    option: both are case folded). A text longer than any name is a `BadRequest` saying
    so."""
    if not text:
        return {}
    if len(text) > MAX_NAME_SEARCH:
        raise BadRequest(
            f"a name search is at most {MAX_NAME_SEARCH} characters (no name is longer); "
            f"this one has {len(text):,}: shorten it"
        )
    return {NAME_FOLDED: {"$regex": re.escape(folded(text))}}


def with_folded_name(fields: Mapping[str, Any]) -> Doc:
    """`fields` (a new document, or an update's `$set`) with the folded form of the `name`
    they write, if they write one."""
    name = fields.get("name")
    return {**fields, NAME_FOLDED: folded(name)} if isinstance(name, str) else dict(fields)


def scoped(tenant: str, query: Mapping[str, Any] | None = None) -> Doc:
    """Every query names its tenant; the data layer refuses one that does not."""
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("a tenant is required for every query")
    return {**(query or {}), "tenant": tenant}


def unjournaled(collection: Collection) -> Collection:
    """The collection with the client's write concern minus `j`: for the event relay's
    drains of outboxes, which back no answer. A drain lost in a crash leaves its outbox
    pending, and the relay does the work again (idempotent ids).

    What a drain stands on (the events, their deliveries, the hooks' writes) is journaled,
    each write on its own. The journal keeps writes in order, but only within one server
    process: a database killed after an unjournaled write was acknowledged (its journal
    record still in the server's buffer: SecantusDB commits without waiting for the log
    write) and restarted within a second takes the next write (the driver waits for the
    restarted server and sends it on a new connection) without the first. An
    unjournaled events insert followed by a drain lost 64 answered writes' events so
    (tests/test_durability.py, under load); a journaled write is durable once acknowledged,
    whichever process takes the writes after it."""
    return collection.with_options(write_concern=without_journal(collection.write_concern))


def without_journal(concern: WriteConcern) -> WriteConcern:
    return WriteConcern(**{**concern.document, "j": False})


def bulk_failure(exc: BulkWriteError) -> None:
    """Raise what a bulk write's failure means, unless it failed only on duplicate keys (what
    an idempotent repeat runs into): StoreUnavailable when its write concern failed (the
    writes were applied, not known to be durable), InvalidPayload when the server refused a
    document for what it holds (the translation of `translate_errors`)."""
    if only_duplicates(exc):
        return
    if exc.details.get("writeConcernErrors"):
        raise concern_failed(exc.details["writeConcernErrors"][0]) from exc
    error = next(e for e in exc.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY)
    raise refused(error) from exc


def only_duplicates(exc: BulkWriteError) -> bool:
    """Whether a bulk write failed only on duplicate keys (documents written before: what an
    idempotent repeat of the write runs into), with its write concern met."""
    errors = exc.details.get("writeErrors", [])
    return not exc.details.get("writeConcernErrors") and all(
        e.get("code") == DUPLICATE_KEY for e in errors
    )


PASSED_OVER_MOST = 64
"""How many due units one read of a claim passes over (`admit` says no) before it stops. A
read leaves out what the runner knows it cannot start (`Admission.excluded`), so what it
passes over is the work of a tenant or partner that reached its share or room during that
very read; a read stopped so is made again, leaving that one out too (`admitted`)."""

EXCLUDED_MOST = 100
"""The most ids of one kind a claim adds, while it reads, to those it leaves out
(`Admission.exclude`: what reached its share or room during the claim); units of others the
runner cannot start are passed over (`PASSED_OVER_MOST`)."""


@dataclass(slots=True)
class Admission:
    """What one claim takes (`leased_loop.FairShares`). `excluded`, by kind ("tenant",
    "partner"): the ids whose units the claim's reads leave out, the runner knowing it cannot
    start one now (a tenant holding its share of the slots; a partner at its room, disabled,
    or whose circuit lets nothing through), more as the claim fills them (`exclude`); `admit`:
    of each unit a read returns, whether the claim takes it (and counts it taken)."""

    admit: Callable[[Doc], bool]
    excluded: dict[str, list[str]] = field(default_factory=dict)
    added: Counter[str] = field(default_factory=Counter)  # by kind, by `exclude`

    def __call__(self, doc: Doc) -> bool:
        return self.admit(doc)

    def exclude(self, kind: str, name: str) -> None:
        """The claim's further reads leave `name`'s units out (up to `EXCLUDED_MOST` added
        by the claim, of each kind)."""
        names = self.excluded.setdefault(kind, [])
        if name not in names and self.added[kind] < EXCLUDED_MOST:
            names.append(name)
            self.added[kind] += 1


Kept = Callable[[Mapping[str, Sequence[str]]], Doc]
"""(excluded ids by kind) → the filter of the units a claim reads besides theirs (a store's:
it knows its fields); {} when none are left out."""


def other_tenants(excluded: Mapping[str, Sequence[str]]) -> Doc:
    """`Kept` for units known by their tenant alone."""
    tenants = excluded.get("tenant")
    return {"tenant": {"$nin": list(tenants)}} if tenants else {}


async def admitted(
    collection: Collection,
    due: Doc,
    kept: Kept,
    order: str,
    projection: Mapping[str, Any],
    admission: Admission,
    limit: int,
) -> list[Doc]:
    """The first `limit` units `due` matches, oldest (`order`) first, that `admission` takes;
    those of the ids it excludes are not read (`kept`). A read passing `PASSED_OVER_MOST` over
    stops, and is made again when the claim excluded more meanwhile (what filled up during it,
    whose units it was passing over): at most once per id excluded, and rarely at all.

    Each read is one aggregation whose first stage is `due` alone: that stage is what the
    database plans (the claim's index; SecantusDB scans the whole collection for a find with
    one more predicate than the index has), the exclusion a stage after it. `projection`
    comes back of at most `limit + PASSED_OVER_MOST` units: when nothing is left out, what a
    find of `due` with that limit costs."""
    found: list[Doc] = []
    taken: set[Any] = set()
    while True:
        excluded = sum(map(len, admission.excluded.values()))
        pipeline: list[Doc] = [{"$match": due}]
        if leave_out := kept(admission.excluded):
            pipeline.append({"$match": leave_out})
        pipeline += [
            {"$sort": {order: 1}},
            {"$limit": limit + PASSED_OVER_MOST},  # what it took may come again
            {"$project": dict(projection)},
        ]
        passed = 0
        cursor = await collection.aggregate(pipeline)
        async for doc in cursor:
            if doc["_id"] in taken:  # an earlier read's
                continue
            if admission(doc):
                found.append(doc)
                taken.add(doc["_id"])
                if len(found) == limit:
                    break
            else:
                passed += 1
                if passed == PASSED_OVER_MOST:
                    break
        await cursor.close()
        more = sum(map(len, admission.excluded.values())) > excluded
        if len(found) == limit or passed < PASSED_OVER_MOST or not more:
            return found
