"""What a gateway and its embedded SecantusDB do, logged with wall-clock times, to line up the
slow requests of `bench_http.py --trace` with it (`bench/trace_tail.py`). One line an event,
`kind,start (Unix s),duration (ms),details...`, into <dir>/<gw|db>-<pid>.log (flushed every
second).

Gateway (`install()`): `cmd` every database command (name, collection, documents or
operations), `gc` every collection (generation), `lag` the event loop late by more than 2 ms,
`span` the fold's passes and writes and the appender's rounds. Database (`install(database=
True)`): `dcmd` every command (name, collection, documents, its thread's CPU in ms), `lockhold`
a collection lock held over 2 ms, `lockwait` one waited for over 1 ms, `commit` a journaled
(or slow) WiredTiger commit. It patches SecantusDB 0.7's internals (`commands.dispatch`,
`storage.Storage._coll_lock`, `storage._commit_batch_transaction`): a measuring tool, not
something to run in production."""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

_lines: list[str] = []


def emit(kind: str, start: float, ms: float, *details: object) -> None:
    _lines.append(f"{kind},{start:.4f},{ms:.2f}," + ",".join(str(d) for d in details))


def _flush(path: str) -> None:
    global _lines
    lines, _lines = _lines, []
    if lines:
        with open(path, "a") as out:
            out.write("\n".join(lines) + "\n")


def _start(directory: str, role: str) -> None:
    path = os.path.join(directory, f"{role}-{os.getpid()}.log")

    def flusher() -> None:
        while True:
            time.sleep(1.0)
            _flush(path)

    threading.Thread(target=flusher, daemon=True).start()
    atexit.register(_flush, path)


def install(database: bool = False) -> None:
    if database:
        _start(os.environ["SECANTUS_TAIL_TRACE"], "db")
        _database()
    elif os.path.basename(sys.argv[0]) == "gateway" and "serve" in sys.argv:
        _start(os.environ["TAIL_TRACE_DIR"], "gw")
        _gateway()


def _gateway() -> None:
    _commands()
    _collections()
    _loop_lag()
    from gateway.fleet import append, fold
    from gateway.store import fleet, positions

    for cls, name in (
        (fold.Fold, "fold_once"),
        (fold.Fold, "_save"),
        (fold.Fold, "_continue_checkpoint"),
        (append.PositionAppender, "append"),
        (append.PositionAppender, "_resolve"),
        (positions.InsertRounds, "_round"),
        (fleet.FleetStore, "save_states"),
    ):
        _span(cls, name)


def _commands() -> None:
    from pymongo import monitoring

    class Commands(monitoring.CommandListener):
        def __init__(self) -> None:
            self.pending: dict[tuple[Any, int], tuple[float, str, str, int]] = {}

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            name, cmd = event.command_name, event.command
            target = cmd.get(name)
            coll, n = (target if isinstance(target, str) else ""), 0
            if name in ("insert", "update", "delete"):
                n = len(cmd.get({"insert": "documents"}.get(name, name + "s")) or ())
            elif name == "bulkWrite":
                n = len(cmd.get("ops") or ())
                spaces = {str(ns.get("ns", "")).split(".", 1)[-1] for ns in cmd.get("nsInfo") or ()}
                coll = "|".join(sorted(spaces))
            elif name == "getMore":
                coll = str(cmd.get("collection", ""))
            self.pending[(event.connection_id, event.request_id)] = (time.time(), name, coll, n)

        def _ended(self, event: Any, outcome: str) -> None:
            begun = self.pending.pop((event.connection_id, event.request_id), None)
            if begun:
                t0, name, coll, n = begun
                emit("cmd", t0, (time.time() - t0) * 1e3, name, coll, n, outcome)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            self._ended(event, "ok")

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            self._ended(event, "failed")

    monitoring.register(Commands())


def _collections() -> None:
    began = [0.0]

    def collected(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.time()
        else:
            emit("gc", began[0], (time.time() - began[0]) * 1e3, info.get("generation"))

    gc.callbacks.append(collected)


def _loop_lag() -> None:
    import gateway.eventloop as eventloop

    run = eventloop.run

    async def probe() -> None:
        while True:
            t0, wall = time.perf_counter(), time.time()
            await asyncio.sleep(0.002)
            late = (time.perf_counter() - t0) * 1e3 - 2.0
            if late > 2.0:
                emit("lag", wall, late)

    def traced_run(main: Any, loop: str | None) -> Any:
        async def with_probe() -> Any:
            task = asyncio.get_running_loop().create_task(probe())
            try:
                return await main
            finally:
                task.cancel()

        return run(with_probe(), loop)

    eventloop.run = traced_run


def _span(cls: type, name: str) -> None:
    method: Callable[..., Any] | None = getattr(cls, name, None)
    if method is None:
        return
    timed_method = method

    async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return await timed_method(self, *args, **kwargs)
        finally:
            emit("span", t0, (time.time() - t0) * 1e3, name.lstrip("_"))

    setattr(cls, name, timed)


def _database() -> None:
    from secantus import commands, server, storage

    dispatch = commands.dispatch

    def traced_dispatch(doc: dict[str, Any], ctx: Any) -> Any:
        t0, cpu0 = time.time(), time.thread_time()
        try:
            return dispatch(doc, ctx)
        finally:
            name = next(iter(doc), "?")
            if name not in ("hello", "isMaster", "ismaster"):
                target = doc.get(name)
                coll = target if isinstance(target, str) else str(doc.get("collection", ""))
                n = len(doc.get("documents") or doc.get("updates") or doc.get("ops") or ())
                cpu = (time.thread_time() - cpu0) * 1e3
                emit("dcmd", t0, (time.time() - t0) * 1e3, name, coll, n, f"{cpu:.2f}")

    commands.dispatch = traced_dispatch
    server.dispatch = traced_dispatch  # type: ignore[attr-defined]
    commit = storage._commit_batch_transaction

    def traced_commit(session: Any, sync: bool) -> None:
        t0 = time.time()
        try:
            commit(session, sync)
        finally:
            ms = (time.time() - t0) * 1e3
            if sync or ms > 1.0:
                emit("commit", t0, ms, int(bool(sync)))

    storage._commit_batch_transaction = traced_commit
    locks: dict[tuple[str, str], _TimedLock] = {}
    coll_lock = storage.Storage._coll_lock

    def traced_coll_lock(self: Any, db: str, coll: str) -> _TimedLock:
        found = locks.get((db, coll))
        if found is None:
            found = locks[(db, coll)] = _TimedLock(coll_lock(self, db, coll), coll)
        return found

    storage.Storage._coll_lock = traced_coll_lock  # type: ignore[method-assign]


class _TimedLock:
    """A collection's RLock, timing how long its outermost holder waited for it and held it."""

    def __init__(self, lock: Any, name: str) -> None:
        self._lock, self._name, self._held = lock, name, threading.local()

    def __enter__(self) -> _TimedLock:
        t0 = time.time()
        self._lock.acquire()
        depth = getattr(self._held, "depth", 0)
        if depth == 0:
            self._held.since = time.time()
            if (waited := (self._held.since - t0) * 1e3) > 1.0:
                emit("lockwait", t0, waited, self._name)
        self._held.depth = depth + 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._held.depth -= 1
        if self._held.depth == 0 and (held := (time.time() - self._held.since) * 1e3) > 2.0:
            emit("lockhold", self._held.since, held, self._name)
        self._lock.release()
