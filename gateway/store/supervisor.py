"""Keeps the embedded database running: a crash is logged with why it died (exit code or
signal, and the tail of its log), the database health is marked down at once, and the
database is restarted on the same port with backoff. A database that ran for a while before
crashing restarts quickly again; one that keeps dying backs off up to 30 s between tries.

A database that lives on but refuses every command is restarted the same way (by
`EmbeddedSupervisor` in one process, by `RestartPlan` in `serve --workers`' parent): SecantusDB
whose storage engine panicked (its disk filled) answers every read and write with an error
until its process restarts, freeing space or not. "Refuses" is what the health's prober saw
(`DatabaseHealth.refusing_since`): every ping for `REFUSING_SECONDS` answered, and failed. A
database that answers nothing (frozen, stopped, overloaded past its deadlines) is never
restarted for it: it may come back by itself, and a kill would cost what it had under way.

A disk with too little room for the database's next journal file is refused for it too
(`FreeSpaceFloor`, which any process using the embedded database of its data dir runs):
SecantusDB acknowledges a `j: true` write whose journal record it then fails to write for want
of room, and the write is gone after its restart (measured: its WiredTiger journal files are
10 MiB each, the next one allocated whole when one fills). So while its storage's file system
has less than GATEWAY_EMBEDDED_MIN_FREE_MB free, the database is marked down (`disk`):
requests get their 503 at once, `/readyz` says why, and the client sends no write of the
process (`DatabaseHealth.check_write`: background jobs and one-shot commands included), so
nothing is acknowledged that the disk could lose; it is marked up again once there is room.
Room is inodes too: SecantusDB creates files as it goes (a journal file every 10 MiB, a table
file for each new shard of documents), and one it cannot create for want of an inode panics
it mid-commit, and a table whose creation failed half-way leaves its files unopenable: it never
started again (`table ... cannot be used until all column groups are created`). So the
database is held down the same way while the file system has fewer than
GATEWAY_EMBEDDED_MIN_FREE_INODES free inodes.

The server's start and stop block: they run in a worker thread, which cancelling the
supervision does not stop. So `stop()` (a shutdown) tells a start under way to give up, and
waits for whatever runs in that thread before it stops the database: a restart under way no
longer launched a database after the shutdown had stopped it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway.background import cancel_and_wait
from gateway.store.embedded import EmbeddedServer, EmbeddedServerError
from gateway.store.health import DISK, DatabaseHealth

log = logging.getLogger(__name__)

BACKOFF_SECONDS = (0.2, 1.0, 2.0, 5.0, 10.0, 30.0)
REFUSING_SECONDS = 30.0
"""How long the embedded database may refuse every ping of the prober before it is
restarted."""
DISK_SECONDS = 1.0
"""How often the free space under the embedded database is read."""


def describe_exit(code: int) -> str:
    """The launcher's exit code as a cause: 128 + N means signal N killed the database."""
    if code > 128:
        return f"killed by signal {code - 128}"
    return f"exited with code {code}"


class EmbeddedSupervisor:
    def __init__(
        self,
        server: EmbeddedServer,
        health: DatabaseHealth,
        *,
        backoff: Sequence[float] = BACKOFF_SECONDS,
        poll_seconds: float = 0.05,
        stable_seconds: float = 60.0,
        refusing_seconds: float = REFUSING_SECONDS,
    ) -> None:
        self.server = server
        self._health = health
        self._backoff = backoff
        self._poll = poll_seconds
        self._stable = stable_seconds
        self._refusing = refusing_seconds
        self._task: asyncio.Task[None] | None = None
        self._blocking: asyncio.Future[None] | None = None  # the server's start or stop, if any
        self.restarts = 0

    async def start(self) -> None:
        """Start the database (in a thread: it waits until the server listens), then watch."""
        await asyncio.to_thread(self.server.start)
        self._task = asyncio.create_task(self._supervise())

    async def stop(self) -> None:
        """Stop watching, then the database: a restart under way gives up first (within a
        poll: its database, if launched, is stopped), a stop under way is waited for."""
        self.server.give_up_starting()
        await cancel_and_wait(self._task)
        if self._blocking is not None:
            with contextlib.suppress(Exception):  # a start given up
                await self._blocking
        await asyncio.to_thread(self.server.stop)

    async def _in_thread(self, call: Callable[[], None]) -> None:
        """The server's blocking `call` in a worker thread, which outlives a cancellation of
        the caller: `stop()` waits for it."""
        self._blocking = asyncio.ensure_future(asyncio.to_thread(call))
        await asyncio.shield(self._blocking)

    async def _supervise(self) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            cause = await self._wait_for_failure(started)
            self._health.mark_down("embedded", f"the embedded database {cause}")
            log.error(
                "the embedded database %s; restarting it. Its log ends with:\n%s",
                cause,
                self.server.log_tail(),
            )
            if time.monotonic() - started >= self._stable:
                failures = 0
            failures = await self._restart(failures)
            self._health.mark_up("embedded")
            self.restarts += 1

    async def _wait_for_failure(self, started: float) -> str:
        """Until the database exits, or has refused every command for `refusing_seconds`
        (this process, started at `started`), when it is stopped (killed past its bound).
        What happened, said after "the embedded database"."""
        while (code := self.server.exit_code()) is None:
            since = self._health.refusing_since()
            if since is not None:  # counted from this process's start at the earliest
                refusing = time.monotonic() - max(since, started)
                if refusing >= self._refusing:
                    await self._in_thread(self.server.stop)
                    return (
                        f"refused every command for {refusing:.0f} s (as a storage engine "
                        "that panicked does until its process restarts)"
                    )
            await asyncio.sleep(self._poll)
        return describe_exit(code)

    async def _restart(self, failures: int) -> int:
        """Start again after the backoff for `failures`; returns the failure count reached."""
        while True:
            await asyncio.sleep(self._backoff[min(failures, len(self._backoff) - 1)])
            failures += 1
            try:
                await self._in_thread(self.server.start)
            except EmbeddedServerError as exc:
                log.error("restarting the embedded database failed (try %d): %s", failures, exc)
                continue
            log.info("embedded database restarted (try %d)", failures)
            return failures


class RestartPlan:
    """The same supervision for a synchronous caller that looks now and then (`serve
    --workers`' parent, every 0.5 s): `check()` notices a crash, or a database that has
    refused every look for `refusing_seconds` (it has no prober: each look reads the catalog
    the prober reads, `EmbeddedServer.refuses`; a look unanswered breaks the run, as an
    unanswered ping does the prober's), logs it and restarts the database once its backoff
    has passed, without blocking in between (but for the stop of a refusing database)."""

    def __init__(
        self,
        server: EmbeddedServer,
        *,
        backoff: Sequence[float] = BACKOFF_SECONDS,
        stable_seconds: float = 60.0,
        refusing_seconds: float = REFUSING_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self._backoff = backoff
        self._stable = stable_seconds
        self._refusing = refusing_seconds
        self._clock = clock
        self._started = clock()
        self._refusing_since: float | None = None  # since when every look was refused
        self._failures = 0
        self._due: float | None = None  # when to try starting it again, while it is down
        self.restarts = 0

    def _failure(self, now: float) -> str | None:
        """What happened to the running database, said after "the embedded database"; None
        while it serves (or may)."""
        code = self.server.exit_code()
        if code is not None:
            return describe_exit(code)
        if not self.server.refuses():
            self._refusing_since = None
            return None
        self._refusing_since = self._refusing_since or now
        refusing = now - self._refusing_since
        if refusing < self._refusing:
            return None
        self.server.stop()
        return (
            f"refused every command for {refusing:.0f} s (as a storage engine that panicked "
            "does until its process restarts)"
        )

    def check(self) -> None:
        now = self._clock()
        if self._due is None:
            cause = self._failure(now)
            if cause is None:
                return
            self._refusing_since = None
            log.error(
                "the embedded database %s; restarting it. Its log ends with:\n%s",
                cause,
                self.server.log_tail(),
            )
            if now - self._started >= self._stable:
                self._failures = 0
            self._due = now + self._backoff[min(self._failures, len(self._backoff) - 1)]
            return
        if now < self._due:
            return
        self._failures += 1
        try:
            self.server.start()
        except EmbeddedServerError as exc:
            log.error("restarting the embedded database failed (try %d): %s", self._failures, exc)
            self._due = now + self._backoff[min(self._failures, len(self._backoff) - 1)]
            return
        log.info("embedded database restarted (try %d)", self._failures)
        self._due = None
        self._started = self._clock()
        self.restarts += 1


class FreeSpaceFloor:
    """The embedded database on `storage` marked down (`disk`) while its file system has less
    than `min_free_bytes` free, or fewer than `min_free_inodes` free inodes; up again once it
    has both. Said once each way. `look()` once before the process's first write (a one-shot
    command writes at once), then `watch()`."""

    def __init__(
        self, storage: Path, health: DatabaseHealth, min_free_bytes: int, min_free_inodes: int = 0
    ) -> None:
        self._storage = storage
        self._health = health
        self._min_free_bytes = min_free_bytes
        self._min_free_inodes = min_free_inodes
        self._short: str | None = None  # the setting of the floor the disk is under, if any

    async def look(self) -> None:
        room = await asyncio.to_thread(_free_room, self._storage)
        short = None if room is None else self._short_of(*room)
        if short is not None:
            setting, reason = short
            if setting != self._short:
                log.error(
                    "%s (%s: %s): the database is refused (503) and takes no write until there "
                    "is room, so that it loses no write it acknowledged",
                    reason,
                    self._storage,
                    setting,
                )
            self._health.mark_down(DISK, reason)
            self._short = setting
        elif self._short is not None and room is not None:
            log.info(
                "the embedded database's disk has room again (%d bytes, %s inodes free)", *room
            )
            self._health.mark_up(DISK)
            self._short = None

    def _short_of(self, free: int, inodes: int | None) -> tuple[str, str] | None:
        """(the setting of the floor the disk is under, why), or None."""
        if free < self._min_free_bytes:
            reason = (
                f"the embedded database's disk has {free} bytes free, under {self._min_free_bytes}"
            )
            return "GATEWAY_EMBEDDED_MIN_FREE_MB", reason
        if inodes is not None and inodes < self._min_free_inodes:
            reason = (
                f"the embedded database's disk has {inodes} inodes free, under "
                f"{self._min_free_inodes}"
            )
            return "GATEWAY_EMBEDDED_MIN_FREE_INODES", reason
        return None

    async def watch(self, seconds: float = DISK_SECONDS) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self.look()


def _free_room(storage: Path) -> tuple[int, int | None] | None:
    """(bytes, inodes) free to an unprivileged writer on `storage`'s file system; inodes
    None where it counts none (btrfs and some network file systems answer 0 of 0)."""
    try:
        stat = os.statvfs(storage)
    except OSError:  # not there yet, or gone for a moment: the next look tells
        return None
    return stat.f_bavail * stat.f_frsize, stat.f_favail if stat.f_files else None
