"""Opening the database for a process, and closing it again: the embedded server under its
supervisor (when no URI is given) or MONGODB_URI, the journaled client with its deadline,
the indexes, and the health that requests check first (`store.health`), held down while the
embedded database's disk is under its free-space floor: then the client sends no write of
the process, whoever makes it (`DatabaseHealth.check_write`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.background import cancel_and_wait, within
from gateway.config import ConfigError, Settings
from gateway.errors import StoreUnavailable
from gateway.shutdown import CLOSE_SECONDS
from gateway.store import INDEX_RETRY_SECONDS, Store
from gateway.store.client import cancelled_connections_closed, open_client
from gateway.store.embedded import EmbeddedServer, running_uri
from gateway.store.group_commit import mark_lifetime
from gateway.store.health import DatabaseHealth
from gateway.store.supervisor import EmbeddedSupervisor, FreeSpaceFloor

log = logging.getLogger(__name__)


EXPIRE_SECONDS = 60.0
"""How often a process runs its housekeeping pass (`_housekeep`): expires documents past their
TTL itself, where the server's own sweep reads whole collections (as often as MongoDB's sweep
runs), and removes the group commit round marks no round can seal any more."""

REAP_SECONDS = 15.0
"""How often a process has the server abort transactions a dead process left open, where the
server does so only when a transaction reaches it (`Store.end_abandoned_transactions`): the
documents of such a transaction are writable again at most 60 s (the server's transaction
lifetime) plus this after its last statement."""


@contextlib.asynccontextmanager
async def open_store(
    settings: Settings, uri: str | None, *, attach: bool = False
) -> AsyncIterator[Store]:
    """The store on `uri`, or on an embedded server in the data dir when `uri` is None.
    `attach` (a one-shot command: `gateway cleanup`, `ui-user`, `trigger`): an embedded server
    a running gateway has on the data dir is used as it is; starting one would stop it. One is
    started on a gateway's stopped database, never on a data dir that holds none."""
    health = DatabaseHealth()
    supervisor = None
    storage = Path(settings.data_dir) / "db"
    if uri is None and attach:
        uri = running_uri(storage, storage.parent / "db.pid")
        if uri is not None:
            log.info("using the embedded database the running gateway has on %s", storage)
        elif not storage.is_dir():
            # A database of its own would hold what no gateway serves (a typo'd or relative
            # GATEWAY_DATA_DIR: a cron job's `cleanup` from another directory cleaned nothing).
            raise ConfigError(
                f"GATEWAY_DATA_DIR {settings.data_dir} holds no database ({storage} does not "
                "exist): set GATEWAY_DATA_DIR to the gateway's data directory (or "
                "MONGODB_URI to its database); `gateway serve` creates it at its first start"
            )
    if uri is None:
        supervisor = EmbeddedSupervisor(EmbeddedServer(storage, one_shot=attach), health)
        await _start(supervisor)
        uri = supervisor.server.uri
    # The embedded database of the data dir, whoever started it (this process, the parent of
    # `serve --workers N`, the `serve` a one-shot command or a `worker` runs beside): a disk
    # under the floor would lose writes it acknowledged.
    embedded = supervisor is not None or uri == running_uri(storage, storage.parent / "db.pid")
    client = open_client(
        uri,
        timeout_ms=settings.db_timeout_ms,
        write_concern=settings.db_write_concern,
        listeners=[health],
        write_gate=health.check_write,
    )
    tasks: list[asyncio.Task[Any]] = []
    store: Store | None = None
    try:
        store = Store(
            client[settings.database],
            health,
            occurrence_retention_seconds=settings.occurrence_retention_days * 86_400,
            feed_settle_seconds=settings.events_feed_settle_seconds,
            # A one-shot command run from a shell without the serving processes' settings
            # must not set their TTL indexes back to its defaults.
            follow_ttl_settings=not attach,
            tenant_limits=settings.tenant_limits(),
            versions_kept=settings.versions_kept,
            db_timeout_seconds=settings.db_timeout_ms / 1000,
            index_build_seconds=settings.index_build_timeout_seconds,
            round_mark_seconds=None if attach else mark_lifetime(settings.db_timeout_ms / 1000),
        )
        tasks.append(asyncio.create_task(health.run_prober(store.ping)))
        if embedded and (settings.embedded_min_free_mb or settings.embedded_min_free_inodes):
            floor = FreeSpaceFloor(
                storage,
                health,
                settings.embedded_min_free_mb * 1024 * 1024,
                settings.embedded_min_free_inodes,
            )
            await floor.look()  # before the first write: a one-shot command's comes at once
            tasks.append(asyncio.create_task(floor.watch()))
        tasks.append(asyncio.create_task(_housekeep(store)))
        tasks.append(asyncio.create_task(_end_abandoned_transactions(store)))
        # Awaited here, unless an index build or upgrade step outlasts the deadline (an
        # upgrade of a large database): then it goes on while the process serves, not ready.
        preparing = asyncio.create_task(_attempt(store))
        tasks.append(preparing)
        outlasting = asyncio.ensure_future(store.outlasting.wait())
        try:
            await asyncio.wait((preparing, outlasting), return_when=asyncio.FIRST_COMPLETED)
        finally:
            outlasting.cancel()
        if not preparing.done():
            log.warning(
                "creating the indexes goes on in the background; serving (not ready: requests "
                "that need the database answer 503 and the background jobs wait until they are "
                "created)"
            )
            tasks.append(asyncio.create_task(_ensure_indexes(store, preparing)))
        elif (exc := preparing.result()) is not None:
            store.indexes_missing = str(exc)
            # A database unreachable from the start is known down from now on (readiness and
            # requests answer 503 at once instead of each waiting the deadline): the driver
            # counts only the loss of a server it once had.
            health.report_failure(exc)
            log.error(
                "creating the indexes failed at start (%s); serving (not ready: requests that "
                "need the database answer 503 and the background jobs wait until they are "
                "created), trying again every %g s",
                _with_cause(exc),
                INDEX_RETRY_SECONDS,
            )
            tasks.append(asyncio.create_task(_ensure_indexes(store)))
        yield store
    finally:
        if store is not None and (settling := store.fleet.settling) is not None:
            tasks.append(settling)  # inbox numbers left unsettled: the fold's give-up's
        if store is not None:  # fix rounds in flight, and failed ones still being finished
            tasks += store.positions.inserts.closing()
        await cancel_and_wait(*tasks)
        log.info("closing the database")
        health.close()
        # Its endSessions to a frozen server would wait for an answer that never comes.
        await within(CLOSE_SECONDS, "closing the database client", client.close())
        await within(CLOSE_SECONDS, "closing cancelled connections", cancelled_connections_closed())
        if supervisor is not None:
            await supervisor.stop()


def _with_cause(exc: Exception) -> str:
    """The error and, for the operator's log only, the driver's first words on it: the
    address it could not reach and why (`db:27017: [Errno 111] Connection refused`). Problem
    documents carry the error alone: partners have no business with our addresses."""
    cause = str(exc.__cause__ or "").split(" (configured timeouts")[0].split(", Timeout:")[0]
    return f"{exc}: {cause[:300]}" if cause else str(exc)


async def _start(supervisor: EmbeddedSupervisor) -> None:
    """Start the child; cancelled meanwhile (a SIGTERM), wait for it and stop it again: the
    database process never outlives the gateway."""
    starting = asyncio.ensure_future(supervisor.start())
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await starting
        await supervisor.stop()
        raise


async def _attempt(store: Store) -> StoreUnavailable | None:
    """One `Store.ensure_indexes`: what it failed for, None once done."""
    try:
        await store.ensure_indexes()
    except StoreUnavailable as exc:
        return exc
    return None


async def _ensure_indexes(
    store: Store, under_way: asyncio.Task[StoreUnavailable | None] | None = None
) -> None:
    """The gateway starts even if the database is down or refuses an index (one of the same
    name with another definition, which the database keeps refusing): tried again until
    created, each failure logged (creating an existing index is a no-op). Until then
    readiness, and every request that needs the database, answers 503 with the reason, and
    the background jobs wait (`Store.check_prepared`): a write before a unique index or an
    upgrade step (the fines' re-key) stored what they exist to prevent. `under_way`: the
    start's attempt, still building (`Store.outlasting`), waited for first. Any failure is
    tried again here, not only the database's unavailability: this task is all that would
    ever make the process ready (a unique index refused over duplicates, a step's error,
    raised after the start went on, ended it with the 503s still naming the build)."""
    if under_way is not None:
        exc: Exception | None
        try:
            exc = await under_way
        except Exception as failed:
            exc = failed
        if exc is None:
            log.info("indexes created")
            return
        _failed_again(store, exc)
    while True:
        await asyncio.sleep(INDEX_RETRY_SECONDS)
        try:
            await store.ensure_indexes()
        except Exception as exc:
            _failed_again(store, exc)
            continue
        log.info("indexes created")
        return


def _failed_again(store: Store, exc: Exception) -> None:
    """An attempt failed: the 503s say why; the log too, with the traceback of what is not
    the database's unavailability (a refusal to fix, a step's error)."""
    unavailable = isinstance(exc, StoreUnavailable)
    store.indexes_missing = str(exc) if unavailable else f"{type(exc).__name__}: {exc}"
    log.error(
        "creating the indexes failed again (%s)",
        _with_cause(exc) if unavailable else store.indexes_missing,
        exc_info=not unavailable,
    )


async def _housekeep(store: Store) -> None:
    """Every `EXPIRE_SECONDS`: documents past their TTL, dropped through the TTL indexes where
    the gateway expires them itself (`store/expiry.py`), the group commit round marks no
    round can seal any more removed (`Store.sweep_round_marks`; at start too), and what the
    use cases registered (`Store.housekeeping`: the partners deleted through another
    process forgotten). Every process does: a delete of what has expired is the same from
    any of them, and costs little when nothing has. A step's failure is logged and the step
    tried again at the next pass; it never ends the loop (nor keeps the other steps from
    running)."""
    while True:
        await asyncio.sleep(EXPIRE_SECONDS)
        steps: list[tuple[str, Callable[[], Awaitable[int]]]] = []
        if store.expiry.by_gateway:
            steps.append(("documents past their TTL expired", store.expiry.expire))
        if store.prepared.is_set():
            steps.append(("round marks no round can seal removed", store.sweep_round_marks))
            steps += store.housekeeping
        for what, step in steps:
            await _housekeeping_step(what, step)


async def _housekeeping_step(what: str, step: Callable[[], Awaitable[int]]) -> None:
    try:
        if done := await step():
            log.info("housekeeping: %s: %d", what, done)
    except StoreUnavailable as exc:
        log.warning("housekeeping: %s: failed (%s); trying again", what, exc)
    except Exception:
        log.exception("housekeeping: %s: failed; trying again at the next pass", what)


async def _end_abandoned_transactions(store: Store) -> None:
    """Every `REAP_SECONDS`, where the server needs it (`Store.reaps_transactions_lazily`,
    known once the indexes are created): the transactions dead processes left open, aborted
    (`Store.end_abandoned_transactions`). Every process does: one of them is enough, and it
    costs one tiny read transaction; a process that is the only one left must still do it."""
    while True:
        await asyncio.sleep(REAP_SECONDS)
        if not (store.reaps_transactions_lazily and store.health.up):
            continue
        try:
            await store.end_abandoned_transactions()
        except StoreUnavailable as exc:
            log.warning("ending abandoned transactions failed (%s); trying again", exc)
