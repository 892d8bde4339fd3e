"""What the gateway knows about its database right now: up, or down and why.

Four sources feed it, each able to hold it down on its own:
- `embedded`: the supervisor of the embedded database (the child died / listens again);
- `disk`: the embedded database's disk under its free-space floor / with room again
  (`supervisor.FreeSpaceFloor`);
- `driver`: pymongo's topology monitor, as a listener (no usable server / one again): a
  server that refused or dropped the connection holds it down at once; one whose `hello`
  timed out (maybe only slow) or answered that it takes no writes is left to the prober;
- `probe`: after an operation failed mid-way (a deadline, a lost connection, which the
  driver does not count as the server being down), a ping with a short deadline decides;
  while it fails, the prober pings again every `probe_interval` until one passes.

Requests check it before they touch the database (`check()`), so while the database is
known down they get their 503 at once instead of after a server-selection wait. Under the
disk's floor every write of the process is refused too, whoever makes it (`check_write()`,
which the client asks before each write): the background jobs and one-shot commands, which
do not ask `check()`, write nothing either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pymongo
from pymongo.errors import ConnectionFailure, _OperationCancelled
from pymongo.monitoring import (
    TopologyClosedEvent,
    TopologyDescriptionChangedEvent,
    TopologyListener,
    TopologyOpenedEvent,
)
from pymongo.topology_description import TopologyDescription

from gateway.errors import StoreUnavailable

log = logging.getLogger(__name__)

Ping = Callable[[], Awaitable[None]]
DISK = "disk"
"""The source that holds the database down while its disk is under the free-space floor."""
RETRY_AFTER_SECONDS = 2


class KnownDown(StoreUnavailable):
    """Refused from what the process already knows (`DatabaseHealth.check`), nothing tried."""


class DatabaseHealth(TopologyListener):
    def __init__(self, *, probe_timeout: float = 1.0, probe_interval: float = 0.5) -> None:
        self._down: dict[str, str] = {}  # source → why
        self._since: float | None = None
        self._probe_timeout = probe_timeout
        self._probe_interval = probe_interval
        self._suspect = asyncio.Event()
        self._closing = False
        self._refusing_since: float | None = None
        self._watchers: list[Callable[[bool], None]] = []

    # -- state ---------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return not self._down

    @property
    def reason(self) -> str | None:
        return "; ".join(self._down.values()) or None

    def down_for(self) -> float:
        return time.monotonic() - self._since if self._since is not None else 0.0

    def refusing_since(self) -> float | None:
        """Since when (`time.monotonic()`) the database has answered every ping of the prober
        with an error: it is reachable and serves nothing (SecantusDB whose storage engine
        panicked, e.g. after its disk filled). None while pings pass, and while they go
        unanswered (a frozen or unreachable database is not known to refuse anything)."""
        return self._refusing_since

    def watch(self, watcher: Callable[[bool], None]) -> None:
        """`watcher(up)` now and at each change between up and down (the metrics' gauge)."""
        self._watchers.append(watcher)
        watcher(self.up)

    def _tell(self) -> None:
        for watcher in self._watchers:
            watcher(self.up)

    def mark_down(self, source: str, reason: str) -> None:
        if self.up:
            self._since = time.monotonic()
            log.warning("database marked down (%s): %s", source, reason)
        was_up = self.up
        self._down[source] = reason
        if was_up:
            self._tell()
        # Pinging also asks the driver to check the server now rather than at its next
        # heartbeat (10 s), so "up again" is known as soon as it is true.
        self._suspect.set()

    def mark_up(self, source: str) -> None:
        if self._down.pop(source, None) is not None and self.up:
            log.info("database up again after %.1f s", self.down_for())
            self._since = None
            self._tell()

    def check(self) -> None:
        """Raise the 503 at once while the database is known down."""
        if self._down:
            raise KnownDown(
                f"the database is unavailable ({self.reason})", retry_after=RETRY_AFTER_SECONDS
            )

    def check_write(self) -> None:
        """Refuse a write at once while the embedded database's disk is under its floor
        (`disk`): SecantusDB would acknowledge it and might lose it. Asked by the client
        before every write it sends (`store.client.open_client`'s `write_gate`), so it holds
        for every writer of the process: requests, background jobs, one-shot commands."""
        if (why := self._down.get(DISK)) is not None:
            raise KnownDown(
                f"the database takes no writes ({why})", retry_after=RETRY_AFTER_SECONDS
            )

    def report_failure(self, error: StoreUnavailable) -> None:
        """An operation failed for want of the database. No server or a lost connection: known
        down until a ping passes (the prober starts at once; on a healthy database that takes
        milliseconds). A deadline passed: maybe only a slow query under load, so the prober
        decides (a ping with a short deadline) before anything is refused; so does a command
        the server answered with an error (it is reachable: a ping says if it still serves).
        A refusal from the known state (`check`) is no news: its reason would nest in itself."""
        if isinstance(error, KnownDown):
            return
        if error.deadline or error.answered:
            self._suspect.set()
        else:
            self.mark_down("probe", error.detail)

    # -- the prober ------------------------------------------------------------------------

    async def run_prober(self, ping: Ping) -> None:
        """Until cancelled: after each suspicion or loss, ping until the database answers."""
        while True:
            await self._suspect.wait()
            self._suspect.clear()
            while not await self._ping(ping):
                await asyncio.sleep(self._probe_interval)
            self.mark_up("probe")

    async def _ping(self, ping: Ping) -> bool:
        try:
            with pymongo.timeout(self._probe_timeout):
                await ping()
        except StoreUnavailable as exc:
            if not (exc.answered and not exc.deadline):
                self._refusing_since = None
            elif self._refusing_since is None:
                self._refusing_since = time.monotonic()
            self.mark_down("probe", exc.detail)
            return False
        self._refusing_since = None
        return True

    # -- pymongo's topology events (called by the driver) -----------------------------------

    def opened(self, event: TopologyOpenedEvent) -> None:
        return None

    def close(self) -> None:
        """The client is being closed on purpose: what the driver reports now is not news."""
        self._closing = True

    def description_changed(self, event: TopologyDescriptionChangedEvent) -> None:
        if self._closing:
            return
        description = event.new_description
        if description.has_writable_server():
            self.mark_up("driver")
        elif event.previous_description.has_writable_server():
            # Only a loss counts: before the first answer the topology is unknown, not down.
            self._lost(description)

    def _lost(self, description: TopologyDescription) -> None:
        """The driver has no writable server any more: known down at once when each server
        refused or dropped the connection (nothing listens: as `report_failure` treats an
        operation's lost connection); else the prober decides, as after a passed deadline.
        A `hello` that timed out is a database slower than the deadline, maybe only for a
        moment (a stall, a loaded host): marked down at once, the database was refused for
        seconds while it answered every operation within its deadline, and the
        `gateway_database_up` gauge said it down. A server that answered it takes no writes
        (a primary stepping down) is reachable: a ping says if it serves."""
        errors = [server.error for server in description.server_descriptions().values()]
        if errors and all(_gone(error) for error in errors):
            self.mark_down("driver", "no writable database server is reachable")
        else:
            self._suspect.set()

    def closed(self, event: TopologyClosedEvent) -> None:
        return None


def _gone(error: Exception | None) -> bool:
    """Whether a server's error says it is not there (a connection refused, reset or closed),
    rather than slow (a timeout, or an operation the driver cancelled after one) or answering."""
    return (
        isinstance(error, ConnectionFailure)
        and not error.timeout
        and not isinstance(error, _OperationCancelled)
    )
