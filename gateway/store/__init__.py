"""The only home of pymongo: one module per collection family, gathered in `Store`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

import pymongo

from gateway import clock
from gateway.errors import StoreUnavailable
from gateway.store import actions, entities, events, kinds, partners, schedules
from gateway.store.actions import ActionStore, SubscriptionStore
from gateway.store.activity import ActivityStore
from gateway.store.assignments import DUE_MIGRATION
from gateway.store.client import (
    Database,
    Doc,
    derived_id,
    indexes_by_name,
    new_id,
    open_client,
    translate_errors,
)
from gateway.store.deliveries import DeliveryStore
from gateway.store.entities import DERIVED_MIGRATION, EntityStore
from gateway.store.events import FEED_SETTLE, EventStore
from gateway.store.expiry import Expiry
from gateway.store.fine_keys import STEP as FINE_KEYS
from gateway.store.fine_keys import rekey_fines
from gateway.store.fleet import FleetStore
from gateway.store.fleet_rules import FleetRuleStores
from gateway.store.fleet_settings import FleetSettingsStore
from gateway.store.group_commit import GroupCommit, sweep_marks
from gateway.store.health import DatabaseHealth, KnownDown
from gateway.store.idempotency import INDEXES as IDEMPOTENCY_INDEXES
from gateway.store.idempotency import IdempotencyStore
from gateway.store.key_check import KeyCheckStore
from gateway.store.kinds import KindStore
from gateway.store.leases import LeaseStore
from gateway.store.mappings import MappingStore
from gateway.store.migrations import record_steps, steps_done
from gateway.store.name_folding import COMPOSE_STEP as NAME_COMPOSING
from gateway.store.name_folding import STEP as NAME_FOLDING
from gateway.store.name_folding import compose_names, fold_names
from gateway.store.notify import NotifyStores
from gateway.store.occurrences import DEFAULT_RETENTION_SECONDS as OCCURRENCE_RETENTION
from gateway.store.occurrences import OccurrenceStore
from gateway.store.occurrences import indexes as occurrence_indexes
from gateway.store.partners import PartnerStore
from gateway.store.position_names import STEP as POSITION_NAMES
from gateway.store.position_names import rename_position_members
from gateway.store.positions import PositionStore
from gateway.store.rejected import RejectedStore
from gateway.store.schedules import HEADER_MEMBER_STEP, ScheduleStore, quote_header_members
from gateway.store.signature_memory import INDEXES as SIGNATURE_MEMORY_INDEXES
from gateway.store.signature_memory import SignatureMemory
from gateway.store.triggers import INDEXES as TRIGGER_INDEXES
from gateway.store.triggers import TriggerStore
from gateway.store.turns import TenantLimits, Turns
from gateway.store.ui_accounts import EMAIL_STEP, UiAccountStores, put_emails_in_form

__all__ = ["Doc", "Store", "derived_id", "new_id", "open_client"]


UPGRADE_STEPS: Final = (
    POSITION_NAMES,
    DERIVED_MIGRATION,
    FINE_KEYS,
    DUE_MIGRATION,
    EMAIL_STEP,
    NAME_FOLDING,
    NAME_COMPOSING,
    HEADER_MEMBER_STEP,
)
"""Every one-time upgrade step's marker (`Store._upgrade` runs them in this order)."""

INDEX_RETRY_SECONDS: Final = 5.0
"""How long a process whose indexes or upgrade steps failed waits before it tries again."""

INDEX_BUILD_SECONDS: Final = 3600
"""The bound of each index build and upgrade step (GATEWAY_INDEX_BUILD_TIMEOUT_SECONDS)."""

log = logging.getLogger(__name__)

FENCES: Final = "fences"
"""The collection of `Store.fence`'s one document, apart from the round seals' (on SecantusDB
a journaled write holds its collection's lock across the journal flush)."""


class ClockSample(NamedTuple):
    """One reading of the database server's clock (`Store.clock_sample`)."""

    server: datetime  # the server's time
    at: float  # `clock.ticks()` when the server read it (halfway through the round trip)
    offset: timedelta  # the server's clock minus this host's then
    trip: float  # the round trip, in seconds


class Store:
    def __init__(
        self,
        db: Database,
        health: DatabaseHealth | None = None,
        *,
        occurrence_retention_seconds: int = OCCURRENCE_RETENTION,
        follow_ttl_settings: bool = True,
        tenant_limits: Mapping[str, int] | None = None,
        versions_kept: int = 0,
        db_timeout_seconds: float | None = None,
        feed_settle_seconds: float = FEED_SETTLE,
        index_build_seconds: float = INDEX_BUILD_SECONDS,
        round_mark_seconds: float | None = None,
    ) -> None:
        self.db = db
        # How old a group commit round's mark may be while its round can still seal it
        # (`group_commit.mark_lifetime`): older ones are removed at start and by every
        # housekeeping pass (`sweep_round_marks`). None: never (a one-shot command, whose
        # settings may not be the serving processes').
        self.round_mark_seconds = round_mark_seconds
        # What else every housekeeping pass runs (`connection._housekeep`, every 60 s): the use
        # cases' passes over what their process keeps, registered as they are assembled
        # (services.py), each named for the log; each returns how many things it dropped.
        self.housekeeping: list[tuple[str, Callable[[], Awaitable[int]]]] = []
        # Each index build and one-time upgrade step of `ensure_indexes` has this bound, not
        # the client's deadline (`_building`); one that outlasts the deadline sets `outlasting`.
        self.index_build_seconds = index_build_seconds
        self.outlasting = asyncio.Event()
        # TTL indexes, and expiry by the gateway where the server's sweep reads whole
        # collections (expiry.py); a one-shot command leaves the server's TTLs as the serving
        # processes set them (`follow_ttl_settings` False).
        self.expiry = Expiry(follow_settings=follow_ttl_settings)
        # Whether the server leaves a dead writer's transaction open until another transaction
        # starts (SecantusDB; set from the server with the indexes): `end_abandoned_transactions`.
        self.reaps_transactions_lazily = False
        # What requests check before touching the database (see health.py).
        self.health = health or DatabaseHealth()
        # Why the indexes and the one-time upgrade steps are not done (`ensure_indexes`, run
        # at start and tried again by connection.py after a failure), until they are: /readyz
        # answers 503 meanwhile, and so does every request that needs the database
        # (`check_prepared`), and the background jobs wait (`prepared`). A missing unique
        # index lets duplicates in; a fine not re-keyed yet is stored a second time by the
        # provider's next notice.
        self.indexes_missing: str | None = "not created yet"
        self.prepared = asyncio.Event()
        # Concurrent requests' entity writes go to the database together (group_commit.py).
        self.commits = GroupCommit(db.client)
        # The relay's drains back no answer: not journaled (store/client.py `unjournaled`).
        self.relay_commits = GroupCommit(db.client, journaled=False)
        # The fleet fold's vehicle writes: journaled rounds of their own, beside the requests'.
        self.fold_commits = GroupCommit(db.client)
        self.entities = EntityStore(
            db["entities"], self.commits, self.relay_commits, self.fold_commits
        )
        self.events = EventStore(db["events"], feed_settle_seconds)
        self.occurrences = OccurrenceStore(
            db["occurrences"], self.expiry, occurrence_retention_seconds
        )
        self.kinds = KindStore(db["kinds"], db["entities"])
        self.mappings = MappingStore(db)
        self.triggers = TriggerStore(db["triggers"])
        self.idempotency = IdempotencyStore(db["idempotency"], self.expiry)
        self.signature_memory = SignatureMemory(db["signature_memory"], self.expiry)
        self.rejected = RejectedStore(db["rejected"])
        self.partners = PartnerStore(db["partners"])
        self.actions = ActionStore(db["actions"])
        self.subscriptions = SubscriptionStore(db["subscriptions"])
        self.deliveries = DeliveryStore(db["deliveries"])
        self.notify = NotifyStores(db, self.expiry)
        self.schedules = ScheduleStore(db["schedules"], db["schedule_runs"])
        self.ui = UiAccountStores(db, self.expiry)
        self.activity = ActivityStore(db)
        self.leases = LeaseStore(db["leases"])
        self.key_check = KeyCheckStore(db["meta"])
        self.fleet_settings = FleetSettingsStore(db["fleet_settings"])
        # Telemetry: the fold's inbox, states, checkpoints and failures, and the track.
        self.fleet = FleetStore(
            db["fleet_inbox"], db["fleet"], db["fleet_marks"], self.expiry, db["fold_failures"]
        )
        self.positions = PositionStore(
            db["positions"], db["positions_refused"], self.fleet, self.expiry
        )
        self.fleet_rules = FleetRuleStores(db)
        # What a tenant's admin creates, each stopped at the tenant's limit (a 409 past it):
        # none without `tenant_limits` (a store opened without the settings, in a test).
        self.limits = TenantLimits(Turns(db["turns"]), tenant_limits or {})
        limited: dict[str, Any] = {
            "triggers": self.triggers,
            "partners": self.partners,
            "actions": self.actions,
            "subscriptions": self.subscriptions,
            "schedules": self.schedules,
            "channels": self.notify.channels,
            "templates": self.notify.templates,
            "kinds": self.kinds,
            "mappings": self.mappings,
            "flows": self.notify.flows,
        }
        for resource, resources in limited.items():
            resources.limit = self.limits.of(resource, resources)
        # A name's versions past its newest `versions_kept` are pruned as new ones are stored
        # (0, a store opened without the settings: every one kept).
        self.mappings.versions_kept = self.notify.flows.versions_kept = versions_kept
        if db_timeout_seconds is not None:  # (None: the default 5 s deadline's)
            self.mappings.use_deadline(db_timeout_seconds)
            self.notify.flows.use_deadline(db_timeout_seconds)

    async def ensure_indexes(self) -> None:
        """Idempotent: creating an index that exists with the same spec is a no-op. The
        collections are listed once first: one that did not exist has no index to compare or
        retire and nothing to upgrade, and a database that had none (new) has every one-time
        upgrade step recorded done at once instead of run (`_upgrade`).

        The server's kind and the collections are read under the client's deadline (a
        database down at start fails as fast as a request); the index builds and upgrade
        steps after them each under `index_build_seconds` (`_building`): on a collection of
        an older version's hundreds of thousands of documents a build lasts minutes."""
        scans = await self.scans_id_ranges()
        with translate_errors():
            present = frozenset(await self.db.list_collection_names())
        # The same server sweeps its TTL indexes by reading every document of their
        # collections (every 60 s, under its storage lock): there the gateway expires itself.
        self.expiry.by_gateway = scans
        # The same server aborts a transaction idle past 60 s only when a transaction
        # statement arrives: the gateway sends it one now and then (`end_abandoned_transactions`).
        self.reaps_transactions_lazily = scans
        with self._building("the entities' indexes"):
            with translate_errors():
                await self.db["entities"].create_indexes(entities.INDEXES)
            existing = await indexes_by_name(self.db["entities"], present)
            with translate_errors():
                for name in set(entities.RETIRED_INDEXES) & set(existing):
                    await self.db["entities"].drop_index(name)
                if "entities" in present:
                    await self.entities.shard_unsharded_outboxes()
        with self._building("the events', triggers', partners' and schedules' indexes"):
            with translate_errors():
                await self.db["events"].create_indexes(events.INDEXES)
                await self.db["kinds"].create_indexes(kinds.INDEXES)
                await self.db["triggers"].create_indexes(TRIGGER_INDEXES)
                await self.db["partners"].create_indexes(partners.INDEXES)
                await self.db["actions"].create_indexes(actions.ACTION_INDEXES)
                await self.db["subscriptions"].create_indexes(actions.SUBSCRIPTION_INDEXES)
                await self.db["schedules"].create_indexes(schedules.INDEXES)
                await self.db["schedule_runs"].create_indexes(schedules.RUN_INDEXES)
        with self._building("the deliveries' indexes"):
            await self.deliveries.ensure_indexes(scans_id_ranges=scans)
        with self._building("the rejected calls' indexes"):
            await self.rejected.ensure_indexes(scans_id_ranges=scans)
        with self._building("the idempotency records' and occurrences' indexes"):
            await self.expiry.create_indexes(self.db["idempotency"], IDEMPOTENCY_INDEXES, present)
            await self.expiry.create_indexes(
                self.db["signature_memory"], SIGNATURE_MEMORY_INDEXES, present
            )
            await self.expiry.create_indexes(
                self.db["occurrences"],
                occurrence_indexes(self.occurrences.retention_seconds),
                present,
            )
        with self._building("the mappings' indexes"):
            await self.mappings.ensure_indexes()
        with self._building("the positions' indexes"):
            await self.positions.ensure_indexes(scans_id_ranges=scans, present=present)
            await self.fleet.ensure_counter()
        with self._building("the notifications', flows' and assignments' indexes"):
            await self.notify.ensure_indexes(scans_id_ranges=scans, present=present)
        with self._building("the admin UI's and fleet rules' indexes"):
            await self.ui.ensure_indexes(present)
            await self.fleet_rules.ensure_indexes()
        await self._upgrade(new=not present)
        self.indexes_missing = None
        self.prepared.set()
        try:
            if removed := await self.sweep_round_marks():
                log.info("removed %d group commit round marks no round can seal any more", removed)
        except StoreUnavailable as exc:  # the housekeeping pass tries again
            log.warning("removing round marks no round can seal failed (%s)", exc)

    async def sweep_round_marks(self) -> int:
        """The group commit rounds' marks older than any round can live removed
        (`group_commit.sweep_marks`), at the gateway's time as the expiry holds it
        (`Expiry.now`: a step of the clock removes no mark before its time); how many."""
        if self.round_mark_seconds is None:
            return 0
        return await sweep_marks(self.db, self.expiry.now(), self.round_mark_seconds)

    @contextlib.contextmanager
    def _building(self, what: str) -> Iterator[None]:
        """The commands within (index builds, an upgrade step's pass over a collection) bounded
        by `index_build_seconds` instead of the client's deadline (GATEWAY_DB_TIMEOUT_MS). That
        deadline cut a large build (an older version's collection, at an upgrade), whose
        `maxTimeMS` had the server throw it away, every attempt again: the process never got
        ready. A step still running at the deadline is logged, named in the 503s meanwhile
        (`indexes_missing`), and sets `outlasting`: the start serves, not ready, while it goes
        on (connection.py); its end is logged with how long it took. A timer, no command: a
        new database's start sends the commands it did. A process stopped meanwhile drops its
        connection: MongoDB and SecantusDB go on with the build under way all the same (a
        disconnect does not abort it, an expired `maxTimeMS` does), and the next start's
        `createIndexes` finds the index built or builds it again."""
        deadline = self.db.client.options.timeout
        started, since = clock.ticks(), clock.utcnow()
        outlasted = False

        def outlast() -> None:
            nonlocal outlasted
            outlasted = True
            self.indexes_missing = (
                f"building {what} since {since:%H:%M:%S} UTC, "
                "longer than GATEWAY_DB_TIMEOUT_MS (GATEWAY_INDEX_BUILD_TIMEOUT_SECONDS bounds "
                f"it: {self.index_build_seconds:g} s)"
            )
            log.warning(
                "building %s outlasts GATEWAY_DB_TIMEOUT_MS; serving, not ready, until it is done",
                what,
            )
            self.outlasting.set()

        timer = asyncio.get_running_loop().call_later(deadline, outlast) if deadline else None
        try:
            with pymongo.timeout(self.index_build_seconds):
                yield
        finally:
            if timer is not None:
                timer.cancel()
        if outlasted:
            log.info("built %s in %.1f s", what, clock.ticks() - started)

    async def _upgrade(self, *, new: bool) -> None:
        """The one-time upgrade steps (store/migrations.py), each once per database, after the
        indexes (a user's e-mail put in form meets the unique index); on a new database,
        every one recorded done at once: it holds nothing they would change. On another, the
        markers are read together first: a step recorded done is not started (each step
        that runs reads its own marker again, and records it)."""
        migrations = self.db["migrations"]
        if new:
            await record_steps(migrations, UPGRADE_STEPS, clock.utcnow())
            return
        done = await steps_done(migrations, UPGRADE_STEPS)
        # Before `position_at` is derived from the new names (`backfill_derived`).
        if POSITION_NAMES not in done:
            with self._building("the upgrade of the positions' names"):
                await rename_position_members(self.db["entities"], migrations)
        if DERIVED_MIGRATION not in done:
            with self._building("the upgrade of the entities' derived fields"):
                await self.entities.backfill_derived()
        if FINE_KEYS not in done:
            with self._building("the upgrade of the fines' keys"):
                await rekey_fines(self.db["entities"], self.db["notify_cooldowns"], migrations)
        if DUE_MIGRATION not in done:
            with self._building("the upgrade of the assignments' schedule"):
                await self.notify.assignments.mark_scheduled(clock.utcnow())
        if EMAIL_STEP not in done:
            with self._building("the upgrade of the UI users' e-mails"):
                await put_emails_in_form(self.db["ui_users"], migrations)
        named = ("triggers", "schedules", "geofences", "maintenance_plans")
        if not {NAME_FOLDING, NAME_COMPOSING} <= done:
            with self._building("the upgrade of the names"):
                await fold_names([self.db["triggers"], self.db["schedules"]], migrations)
                await compose_names([self.db[name] for name in named], migrations)
        if HEADER_MEMBER_STEP not in done:
            with self._building("the upgrade of the schedules' cursors"):
                await quote_header_members(self.db["schedules"], migrations)

    def check_prepared(self) -> None:
        """Raise the 503 at once while the indexes and the one-time upgrade steps are not
        done (`indexes_missing`): as while the database is known down, nothing is tried."""
        if self.indexes_missing is not None:
            raise KnownDown(
                "the database's indexes are not all created yet, nor its one-time upgrade "
                f"steps run (a failed attempt is tried again every {INDEX_RETRY_SECONDS:g} s): "
                f"{self.indexes_missing}",
                retry_after=math.ceil(INDEX_RETRY_SECONDS),
            )

    async def scans_id_ranges(self) -> bool:
        """Whether the server reads a range of `_id` by scanning the collection (SecantusDB,
        which names itself in `buildInfo`; MongoDB serves it from the primary index)."""
        with translate_errors():
            info = await self.db.client.admin.command("buildInfo")
        return "secantusVersion" in info

    async def end_abandoned_transactions(self) -> None:
        """Have the server abort the transactions their processes left open: a process killed
        between the first write of a transaction and its commit (`EntityStore.write_together`:
        a checklist and its vehicle's odometer) leaves it holding its documents, and every
        other write of them waits its deadline and fails ("outcome unknown"), the fleet fold's
        of that vehicle included. MongoDB aborts such a transaction itself once it has been
        open `transactionLifetimeLimitSeconds` (60 s by default), in the background.
        SecantusDB aborts the ones idle for 60 s too, but only when a transaction statement
        reaches it (its registry reaps on every access), and plain writes are none: on a quiet
        tenant, never. So this starts a transaction that reads one document and aborts it:
        its statement and its abort are such accesses. Run every `REAP_SECONDS` by every
        process where `reaps_transactions_lazily` (connection.py)."""
        with translate_errors():
            async with self.db.client.start_session() as session:
                await session.start_transaction()
                try:
                    await self.db[FENCES].find_one({"_id": "relay"}, session=session)
                finally:
                    await session.abort_transaction()

    async def server_process(self) -> Any:
        """Which database server process answers now (`hello`'s `topologyVersion`: a
        restarted server has another `processId`, a stepdown moves its `counter`), where
        one server takes every command (a standalone, SecantusDB, a direct connection).
        None elsewhere, where it would not name the server a write lands on (a replica set's
        members, several `mongos`), and from a server that does not tell (before 4.4)."""
        if self.db.client.topology_description.topology_type_name != "Single":
            return None
        with translate_errors():
            reply = await self.db.client.admin.command("hello")
        return reply.get("topologyVersion")

    async def fence(self, process: Any) -> None:
        """Make everything the server `process` (`server_process`) applied so far durable:
        one journaled write that changes something flushes the journal, which holds writes
        in order. StoreUnavailable if another process answers by now: what was read from
        `process` before may be gone with it (a write applied but not yet journaled: a
        group-commit round before its seal, whose requests hear "outcome unknown").

        Without a process to compare (a replica set, a sharded cluster), the journaled write
        is all: with `GATEWAY_WRITE_CONCERN=majority` it waits for the majority, which holds
        what the primary applied before it; a primary that loses its place before that still
        rolls back what was read (docs/reliability.md)."""
        with translate_errors():
            await self.db[FENCES].update_one({"_id": "relay"}, {"$inc": {"n": 1}}, upsert=True)
        if process is not None and await self.server_process() != process:
            raise StoreUnavailable("the database restarted; what was read from it is read again")

    async def clock_sample(self) -> ClockSample | None:
        """The server's clock as `hello`'s `localTime` gives it, taken as read halfway through
        the round trip. None from a server that gives no time."""
        with translate_errors():
            sent, started = clock.host_now(), clock.ticks()
            reply = await self.db.client.admin.command("hello")
            trip = clock.ticks() - started
        server = reply.get("localTime")
        if not isinstance(server, datetime):
            return None
        if server.tzinfo is None:  # a command's reply is decoded without the client's tz_aware
            server = server.replace(tzinfo=UTC)
        half = timedelta(seconds=trip / 2)
        return ClockSample(server, started + trip / 2, server - (sent + half), trip)

    async def ping(self) -> None:
        """The database answers from its storage, not only on the wire: SecantusDB whose disk
        filled up (its storage engine panicked) still answers `ping` while it fails every
        read and write, so readiness and the prober read the catalog instead (one name,
        a cheap read on any server)."""
        with translate_errors():
            await self.db.list_collection_names(filter={"name": "triggers"})
