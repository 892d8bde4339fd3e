"""The only home of prometheus_client: one registry per app, so tests and processes never share.

Under `gateway serve --workers N` the N processes share one port, so a scrape reaches any of
them: each then writes its values to files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode, chosen by that variable, which the parent sets) and `/metrics` adds up
every process's files. Each gauge says how its values combine across processes
(`multiprocess_mode`): the sum of the live ones, or their minimum or maximum. Those files
have every block allocated (`use_allocated_files`): prometheus_client writes through a
mapping of them, and a hole a full disk cannot fill was a SIGBUS that killed the process.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.mmap_dict import MmapedDict

from gateway.outbound.verdict import Verdict, request_result

if TYPE_CHECKING:
    from gateway.outbound.sender import Outcome

log = logging.getLogger(__name__)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_FILE_BYTES = 1 << 16  # a metric file's first size, as prometheus_client's own


_NOT_SUPPORTED: Final = frozenset({errno.EOPNOTSUPP, errno.EINVAL})


def _grow(fd: int, size: int) -> None:
    """The file `fd` (open for reading and writing) grown to `size` bytes, every new block
    allocated: an allocation that finds no room raises ENOSPC. glibc allocates by writing
    where the file system cannot (NFSv3, ZFS before 2.2, FUSE), which a descriptor opened
    to append (prometheus_client's own, `a+b`) refuses with EBADF. A C library that does not
    (musl) answers EOPNOTSUPP or EINVAL: the file grows with a hole, as prometheus_client
    grows it."""
    start = os.fstat(fd).st_size
    if start >= size:
        return
    try:
        os.posix_fallocate(fd, start, size - start)
    except OSError as error:
        if error.errno not in _NOT_SUPPORTED:
            raise
        os.ftruncate(fd, size)


class _AllocatedFile:
    """A metric file whose growth allocates its blocks (`_grow`) instead of leaving a hole
    (`truncate`): prometheus_client writes through a mapping of the file, and a page the file
    system cannot back when it is first written is a SIGBUS, which kills the process. An
    allocation that finds no room raises ENOSPC, before the mapping grows. It grows through
    a descriptor of its own, opened to read and write."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def truncate(self, size: int) -> None:  # the only growth MmapedDict makes
        fd = os.open(self._file.name, os.O_RDWR)
        try:
            _grow(fd, size)
        finally:
            os.close(fd)

    def fileno(self) -> int:
        return int(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class _AllocatedMmapedDict(MmapedDict):
    """prometheus_client's metric file, every block of it allocated: created at its first
    size (or refused, removed, with the OSError), grown by `_AllocatedFile`."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            _allocate_new(filename)
        super().__init__(filename, read_mode)  # type: ignore[no-untyped-call]
        if not read_mode:
            self._f = _AllocatedFile(self._f)  # type: ignore[assignment]

    def _init_value(self, key: str) -> None:
        capacity = self._capacity
        try:
            super()._init_value(key)  # type: ignore[no-untyped-call]
        except OSError:
            self._capacity = capacity  # as it was: the mapping did not grow
            raise


def _allocate_new(filename: str) -> None:
    fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if os.fstat(fd).st_size == 0:  # new: this process's own (its name has its pid)
            try:
                _grow(fd, _FILE_BYTES)
            except OSError:
                os.unlink(filename)  # an empty file would break every scrape's read
                raise
    finally:
        os.close(fd)


_UNRECORDED: Final = "gateway_metric_series_unrecorded"


@dataclass
class _Unrecorded:
    """This process's series its metric files could not take (kept in memory); whether the
    counter of them is one (`in_memory`: the scrape adds it, `_WithUnrecorded`); whether its
    metrics are set up (`serving`: a failure before is a setting to correct)."""

    count: int = 0
    counter: Counter | None = None
    in_memory: bool = False
    serving: bool = False


_unrecorded = _Unrecorded()
_UNRECORDED_HELP: Final = (
    "Metric series a process of `serve --workers N` found no room for in its metric files "
    "(a full disk under PROMETHEUS_MULTIPROC_DIR): kept in its memory, missing from the scrape"
)


_NO_ROOM: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


def _value_class(files: Any) -> Callable[..., Any]:
    """prometheus_client's value class under `serve --workers N`: a series' value in this
    process's files (`files`, with `_AllocatedMmapedDict`), or, when they have no room for
    it (a full disk or quota: ENOSPC, EDQUOT), in memory: the request or job that made it
    goes on, the series is missing from `/metrics`, logged once and counted. Any other
    failure of the process's first series (a directory that does not exist, no permission)
    is a setting to correct: it stops `serve` at its start, naming the file; once it serves,
    a metric file's failure, whatever it is, is never the request's or the job's."""

    def value(*args: Any, **kwargs: Any) -> Any:
        try:
            return files(*args, **kwargs)
        except OSError as error:
            if error.errno not in _NO_ROOM and not _unrecorded.serving:
                raise
            _not_recorded(error)
            if args[1] == _UNRECORDED:  # (typ, metric_name, ...)
                _unrecorded.in_memory = True
            return values.MutexValue(*args, **kwargs)  # type: ignore[no-untyped-call]

    return value


def _not_recorded(error: OSError) -> None:
    _unrecorded.count += 1
    if _unrecorded.counter is not None:
        _unrecorded.counter.inc()
    if _unrecorded.count == 1:
        path = os.environ.get(MULTIPROCESS_DIR, "")
        try:
            free = f"{shutil.disk_usage(path).free} bytes free"
        except OSError as unreadable:
            free = f"free space unknown: {unreadable.strerror}"
        log.error(
            "metric files in %s (PROMETHEUS_MULTIPROC_DIR): %s (%s): this process keeps the "
            "series it cannot write there in memory, missing from /metrics (counted in "
            "gateway_metric_series_unrecorded_total); it serves on. Free space on that disk",
            path,
            error.strerror or error,
            free,
        )


def use_allocated_files() -> None:
    """Under `serve --workers N` (PROMETHEUS_MULTIPROC_DIR set): every metric file allocated
    (no SIGBUS on a full disk), a series without room kept in memory. Once per process,
    before the first metric."""
    if values.MmapedDict is _AllocatedMmapedDict:  # type: ignore[attr-defined]
        return
    values.MmapedDict = _AllocatedMmapedDict  # type: ignore[attr-defined]
    values.ValueClass = _value_class(values.MultiProcessValue())  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class InstanceMetricsDir:
    """One instance's metric directory, `base/<id>`, and the lock it holds for as long as it
    runs: `base/<id>.lock`, flock'ed by an open file (the kernel drops the lock when the
    process ends, however it ends)."""

    path: Path
    lock: Path
    fd: int

    def remove(self) -> None:
        """At the instance's end: its directory, then its lock file (a directory without one
        is a crashed instance's to every other)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.lock.unlink(missing_ok=True)
        os.close(self.fd)


def prepare_multiprocess_dir(base: Path) -> InstanceMetricsDir:
    """An empty directory for the metric files of one instance's N processes, named by a
    random id: another instance running on the same `base` (two `serve --workers N` on one
    GATEWAY_DATA_DIR with MONGODB_URI: a blue/green, a restart that overlaps the old one's
    drain; in containers, where every instance's parent is PID 1, a pid told them apart no
    more) keeps its own. Those of instances no longer running (whose lock nobody holds) are
    removed: their files would be counted again (counters would not start at zero)."""
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob("*.db"):  # an older release's files in `base` itself
        stale.unlink()
    name = secrets.token_hex(8)
    # Locked before it is named `*.lock`: another instance's sweep never sees it unlocked.
    draft = base / f".{name}.new"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock = draft.rename(base / f"{name}.lock")
    _remove_ended_instances(base)
    path = base / name
    path.mkdir()
    return InstanceMetricsDir(path, lock, fd)


def _remove_ended_instances(base: Path) -> None:
    # A draft is an instance's lock before its name: one left unlocked died before naming it.
    for lock in [*base.glob("*.lock"), *base.glob(".*.new")]:
        try:
            fd = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:  # its instance just ended
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a running instance's
        else:
            shutil.rmtree(base / lock.stem, ignore_errors=True)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    for entry in base.iterdir():
        if entry.is_dir() and not (base / f"{entry.name}.lock").exists():
            # A crashed instance's (its lock removed by a sweep), or an older release's,
            # named by its parent's pid: kept while that process runs.
            if not (entry.name.isdigit() and _running(int(entry.name))):
                shutil.rmtree(entry, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def mark_process_dead(pid: int, path: Path) -> None:
    """A process of `serve --workers N` exited: its live gauges stop counting (its counters
    and histograms keep counting what it did)."""
    multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


M = TypeVar("M", bound=MetricWrapperBase)

# Each latency histogram's buckets cover the range its metric takes (they stopped at 10 s for
# all: a partner's 15 s call, its 60 s timeout and a 10-minute schedule run were all +Inf).
_REQUEST_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 120.0),
)
"""A request served: most in milliseconds; a proxy call waits on its partner, up to the
longest partner timeout (60 s, `actions.partners.MAX_TIMEOUT_SECONDS`) and a retry."""
_PARTNER_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(15.0, 30.0, 60.0, 90.0),
)
"""A call to a partner: up to its `timeout_seconds` (0.1-60); 15 s tells a call at the
default 10 s timeout from one answered in time."""
_RUN_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""A schedule run: up to `max_pages` (100) pages, each a partner call of up to 60 s."""
_ITEM_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Items of a trigger's batch or a schedule's page: one scale, to compare them."""


OTHER: Final = "other"
"""The label of the things past a bounded label's bound (`BoundedLabel`), and of none else: our
ids start with a prefix (`trg_`) or are 24 hex digits, and field names and secret records
called "other" share it, as they would past the bound."""
OTHER_TRIGGERS: Final = OTHER

MAX_FIELDS: Final = 200
"""Field names (`gateway_stale_fields_skipped_total`'s `field`) a process keeps series by: a
tenant's admin names the fields of its kinds and mappings."""
GONE_KEPT: Final = 100_000
"""Deleted ids a process remembers (`Metrics.forget`), the latest: a call in flight when its
trigger (partner, schedule) was deleted ends after the delete and counts under "other", not
its id again. ~10 MB at most."""
MAX_SECRETS: Final = 100
"""Stored secrets (`gateway_damaged_secrets_total`'s `secret`, a record naming its partner's,
action's ... id) a process keeps series by."""


class BoundedLabel:
    """The values of one label that come from what tenants create (ids of their triggers,
    partners, schedules; the fields they name): the first `most` seen since the process
    started keep series of their own (`fixed` ones always do), every other value counts under
    "other". A deleted thing's place (`discard`) goes to the next one seen."""

    def __init__(self, most: int, fixed: Iterable[str] = ()) -> None:
        self.most = most
        self._fixed = frozenset(fixed)
        self._kept: set[str] = set()
        self._retired: set[str] = set()  # of `_kept`: deleted, their places kept (`retire`)

    def __call__(self, value: str) -> str:
        if value in self._retired:
            return OTHER
        if value in self._kept or value in self._fixed:
            return value
        if len(self._kept) < self.most:
            self._kept.add(value)
            return value
        return OTHER

    def holds(self, value: str) -> bool:
        """Whether `value` has series of its own."""
        return value in self._kept or value in self._fixed

    def discard(self, value: str) -> None:
        self._kept.discard(value)
        self._retired.discard(value)

    def retire(self, value: str) -> None:
        """A deleted thing whose place stays taken (its series live on in the process's file
        under `serve --workers N`): counted under "other" from now on, and no longer among
        `values`. Kept here, bounded by the places: the ids `Metrics.forget` remembers are
        only the latest GONE_KEPT, and past them a deleted partner was taken for one held
        again (read50 L9)."""
        if value in self._kept:
            self._retired.add(value)

    def values(self) -> frozenset[str]:
        """The values that took a place (not the `fixed` ones), but those retired."""
        return frozenset(self._kept - self._retired)


class Metrics:
    """Label values are route templates, methods, status classes and our own ids: never a
    token, a tenant-controlled string or anything else unbounded. The labels whose values come
    from what tenants create are bounded per process (`label`, `BoundedLabel`): trigger,
    partner and schedule ids (GATEWAY_METRICS_MAX_TRIGGERS, _PARTNERS, _SCHEDULES), field
    names (MAX_FIELDS) and secret records (MAX_SECRETS): a tenant's admin creates triggers,
    partners and schedules at will (up to GATEWAY_MAX_..._PER_TENANT each), each of which
    would add series for every tenant's scrape."""

    def __init__(
        self,
        version: str,
        event_loop: str,
        *,
        max_triggers: int = 500,
        max_partners: int = 500,
        max_schedules: int = 500,
    ) -> None:
        multiprocess_files = bool(os.environ.get(MULTIPROCESS_DIR))
        if multiprocess_files:
            use_allocated_files()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._bounded = {
            "trigger": BoundedLabel(max_triggers, fixed=["unknown"]),
            "partner": BoundedLabel(max_partners),
            "schedule": BoundedLabel(max_schedules),
            "field": BoundedLabel(MAX_FIELDS),
            "secret": BoundedLabel(MAX_SECRETS),
        }
        self._gone: dict[str, None] = {}  # `forget`'s ids, the latest GONE_KEPT, in order
        self._before_scrape: list[Callable[[], object]] = []
        self._unknown: set[Gauge] = set()  # made NaN by an outage, not measured since
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.series_unrecorded = Counter(
            _UNRECORDED,
            _UNRECORDED_HELP,
            registry=r,
        )
        if multiprocess_files:
            self.series_unrecorded.inc(_unrecorded.count)  # those before it (its own too)
            _unrecorded.counter = self.series_unrecorded
        self.http_requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests served",
            ["route", "method", "status_class"],
            registry=r,
        )
        self.http_latency = Histogram(
            "gateway_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "gateway_http_requests_in_flight",
            "HTTP requests being served",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.build_info = Gauge(
            "gateway_build_info",
            "Build information: the version, and the event loop the process runs on",
            ["version", "event_loop"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.build_info.labels(version=version, event_loop=event_loop).set(1)
        self.events_relayed = Counter(
            "gateway_events_relayed_total",
            "Events moved from entity outboxes to the log (at least once)",
            ["type_family"],
            registry=r,
        )
        self.events_repeated = Counter(
            "gateway_events_repeated_total",
            "Events the relay dropped: their occurrence (occurrence_id) was already announced",
            registry=r,
        )
        self.occurrence_ids_missing = Counter(
            "gateway_occurrence_ids_missing_total",
            "Items with events whose mapping declares occurrence_id but which gave none "
            "(absent, null, blank): announced as announce says, each copy again",
            ["trigger"],
            registry=r,
        )
        self.relay_lag = Histogram(
            "gateway_event_relay_lag_seconds",
            "From an event's write to its storage in the log (and its deliveries' creation)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.relay_oldest_waiting = Gauge(
            "gateway_event_relay_oldest_waiting_seconds",
            "How long the longest waiting outbox of this process's relay shards has waited",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.relay_shards = Gauge(
            "gateway_event_relay_shards",
            "Relay shards this process holds (leases in MongoDB)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.fold_lag = Histogram(
            "gateway_fleet_fold_lag_seconds",
            "From a fix's append to its fold",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.fold_oldest_waiting = Gauge(
            "gateway_fleet_fold_oldest_waiting_seconds",
            "How long the oldest fold inbox document this process has not folded has waited",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.fold_shards = Gauge(
            "gateway_fleet_fold_shards",
            "Fold shards this process holds (leases in MongoDB)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.fold_fixes = Counter(
            "gateway_fleet_fixes_folded_total",
            "Fixes the fold took, by outcome: accepted, late (inserted behind the last"
            " position), missing (an inbox number whose round never wrote it: given up),"
            " recovered (fixes such a round stored, found by its number and folded),"
            " taken_back (fixes counted accepted, refused one fix later: rejected too),"
            " released (fixes held `future`, judged again once the clock agreed)",
            ["outcome"],
            registry=r,
        )
        self.fold_rejected = Counter(
            "gateway_fleet_fixes_rejected_total",
            "Fixes the quality gates refused, by reason",
            ["reason"],
            registry=r,
        )
        self.fold_readings = Counter(
            "gateway_fleet_readings_total",
            "Odometer readings the fold saw, by outcome: taken (re-baselined), stale (behind"
            " the odometer, from a partner), outranked (a higher source re-baselined lately),"
            " included (a reading the count already has in it: skipped),"
            " device_behind (a device odometer far below the count: another unit, not taken),"
            " device_held (one a little below: the count follows it, the vehicle's odometer"
            " held where it was until GPS distance passes it),"
            " device_glitch (a register's all-ones, 4,294,967.295 km, or a signed register's"
            " largest value, 2,147,483.647 km: never taken),"
            " device_unchanged (the value the count last took from the device: nothing new,"
            " the count goes on by GPS distance)",
            ["outcome"],
            registry=r,
        )
        self.fold_vehicle_failures = Counter(
            "gateway_fleet_fold_vehicle_failures_total",
            "Vehicles' batches the fold set aside because folding them raised an error of the"
            " code (not the database's), by the exception's class; recorded in"
            " `fold_failures`",
            ["reason"],
            registry=r,
        )
        self.fold_events = Counter(
            "gateway_fleet_events_total",
            "Events the fold emitted, by type",
            ["type"],
            registry=r,
        )
        self.outboxes_parked = Counter(
            "gateway_outboxes_parked_total",
            "Entity outboxes the relay could not store and set aside (see relay_error)",
            registry=r,
        )
        self.clock_offset = Gauge(
            "gateway_clock_offset_seconds",
            "The database server's clock minus this host's, as last measured: leases and due "
            "times follow the server's clock (under --workers N, the largest of the processes')",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.database_up = Gauge(
            "gateway_database_up",
            "1 while the database is known up (and /readyz's last ping passed)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.change_stream_up = Gauge(
            "gateway_change_stream_up",
            "1 while the change stream a cache follows is open (0: it re-reads instead)",
            ["collection"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self._add_trigger_metrics(r)

        self._add_delivery_metrics(r)
        self.flow_runs = Counter(
            "gateway_flow_runs_total",
            "Flow runs by what happened: started, succeeded, stopped, failed, waiting (a step "
            "retries later), held (its flow is paused), loop_guard (an event of a chain of flows "
            "too deep started none), lease_lost, unrecorded (the database failed its record), "
            "faulted (a step failed unexpectedly: tried again a lease later)",
            ["outcome"],
            registry=r,
        )
        self._add_schedule_metrics(r)
        self._add_position_metrics(r)
        if multiprocess_files:
            _unrecorded.serving = True

    def _add_position_metrics(self, r: CollectorRegistry) -> None:
        self.fixes = Counter(
            "gateway_fixes_total",
            "Position fixes received: appended, duplicate (stored before: answered as stored), "
            "refused (422) by reason (invalid, mapping, unknown_vehicle, ambiguous_vehicle)",
            ["outcome", "reason"],
            registry=r,
        )
        self.fixes_after_failure = Counter(
            "gateway_fixes_after_failure_total",
            "Fixes an append round stored before it failed (its callers got a 503): handed_on "
            "(to the fold, once the database answered again) or not_handed_on (the database "
            "stayed away, or too many failed rounds waited: left for the fold to find when "
            "it gives the round's number up)",
            ["outcome"],
            registry=r,
        )

    def _add_schedule_metrics(self, r: CollectorRegistry) -> None:
        # `schedule` is our schedule id: bounded by the schedules admins create.
        self.schedule_runs = Counter(
            "gateway_schedule_runs_total",
            "Schedule runs by outcome (ok, more, held, failed, lost_lease)",
            ["schedule", "outcome"],
            registry=r,
        )
        self.schedule_items = Counter(
            "gateway_schedule_items_total",
            "Items of polled pages: read, written, rejected, skipped (already seen)",
            ["schedule", "result"],
            registry=r,
        )
        self.schedule_errors = Counter(
            "gateway_schedule_errors_total",
            "Failed schedule runs by kind (timeout, http_status, rate_limited, not_json, "
            "partner_error, bad_cursor, loop, mapping, ...)",
            ["schedule", "kind"],
            registry=r,
        )
        self.schedule_cursor_refused = Counter(
            "gateway_schedule_cursor_refused_total",
            "Time cursors a partner answered that went back (the cursor was kept)",
            ["schedule"],
            registry=r,
        )
        self.schedule_paced = Counter(
            "gateway_schedule_paced_total",
            "Runs after which a partner that still had more waited for the regular time "
            "(the bound of more runs in a row)",
            ["schedule"],
            registry=r,
        )
        self.schedule_page_items = Histogram(
            "gateway_schedule_page_items",
            "Items per polled page (as gateway_trigger_batch_items counts a trigger's batches)",
            ["schedule"],
            buckets=_ITEM_BUCKETS,
            registry=r,
        )
        self.schedule_run_duration = Histogram(
            "gateway_schedule_run_duration_seconds",
            "Schedule run duration",
            ["schedule"],
            buckets=_RUN_BUCKETS,
            registry=r,
        )

    def _add_delivery_metrics(self, r: CollectorRegistry) -> None:
        # `partner` is our partner id: bounded by the partners admins register.
        self.deliveries = Counter(
            "gateway_deliveries_total",
            "Delivery attempts by what they led to "
            "(succeeded, retry, failed, dead, gone, deferred, suppressed, parked, key_refused: "
            "handed back unsent, a secret it needs not opening with GATEWAY_SECRET_KEY)",
            ["outcome"],
            registry=r,
        )
        self.damaged_secrets = Counter(
            "gateway_damaged_secrets_total",
            "Sends stopped (deliveries, notifications, flow steps, schedule runs, proxy "
            "calls, test sends) because a stored secret they need does not open though "
            "GATEWAY_SECRET_KEY opens the key check (`secret`: its record, partner:<id>:auth)",
            ["secret"],
            registry=r,
        )
        self.partner_requests = Counter(
            "gateway_partner_requests_total",
            "Requests to partners by verdict or unsent reason",
            ["partner", "mode", "result"],
            registry=r,
        )
        self.partner_latency = Histogram(
            "gateway_partner_request_duration_seconds",
            "Partner request latency",
            ["partner", "mode"],
            buckets=_PARTNER_BUCKETS,
            registry=r,
        )
        self.delivery_queue = Gauge(
            "gateway_delivery_queue_depth",
            "Deliveries due and waiting for a worker (pending) or being sent (in_flight)",
            ["status"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.delivery_oldest_due = Gauge(
            "gateway_delivery_oldest_due_age_seconds",
            "How long the oldest due delivery has been waiting (0 when none)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.partner_circuit = Gauge(
            "gateway_partner_circuit_state",
            "1 for a partner's current circuit breaker state",
            ["partner", "state"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.partner_disabled = Counter(
            "gateway_partner_status_changes_total",
            "Partners disabled or re-enabled",
            ["change"],
            registry=r,
        )
        self.oauth_refreshes = Counter(
            "gateway_partner_oauth_token_refreshes_total",
            "Access tokens fetched for partners: OAuth2, Google service account, Geotab session",
            ["partner"],
            registry=r,
        )
        self.oauth_refusals = Counter(
            "gateway_partner_oauth_token_refusals_total",
            "Partners' token endpoints refusing our credentials (a configuration error)",
            ["partner"],
            registry=r,
        )

    def _add_trigger_metrics(self, r: CollectorRegistry) -> None:
        # `trigger` is our trigger id (bounded by the triggers admins create) or "unknown";
        # never the id a caller put in the URL, a token or the trigger's name.
        self.trigger_requests = Counter(
            "gateway_trigger_requests_total",
            "Partner calls to triggers by outcome (created, accepted, partial, rejected_auth, "
            "rejected_schema, rejected_mapping, rate_limited, unavailable, ...)",
            ["trigger", "method", "outcome"],
            registry=r,
        )
        self.trigger_latency = Histogram(
            "gateway_trigger_request_duration_seconds",
            "Trigger call latency in the gateway",
            ["trigger"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.trigger_gate_reads = Counter(
            "gateway_trigger_gate_reads_total",
            "Trigger gates read from the database (the rest came from this process's cache)",
            registry=r,
        )
        self.trigger_batch_items = Histogram(
            "gateway_trigger_batch_items",
            "Items per batch trigger call (a schedule's pages: gateway_schedule_page_items)",
            ["trigger"],
            buckets=_ITEM_BUCKETS,
            registry=r,
        )
        self.trigger_signature_rejections = Counter(
            "gateway_trigger_signature_rejections_total",
            "Signed trigger calls refused (401), by reason: missing, malformed, stale, mismatch, "
            "replayed",
            ["trigger", "reason"],
            registry=r,
        )
        self.trigger_rejected_kept = Counter(
            "gateway_trigger_rejected_payloads_total",
            "Rejected payloads kept for replay",
            ["trigger", "reason"],
            registry=r,
        )
        self.stale_fields_skipped = Counter(
            "gateway_stale_fields_skipped_total",
            "Only-forward fields left unwritten because their value was behind the stored one",
            ["trigger", "field"],
            registry=r,
        )

    def observe_partner_call(
        self, partner_id: str, mode: str, outcome: Outcome, verdict: Verdict
    ) -> None:
        """One call to a partner, whatever sent it: `mode` is proxy, deliver, schedule, flow
        or notify (an SMS or push send); `verdict` the caller's, with its own idea of success
        (an action's, an SMS provider's error in a 2xx). Counted in
        `gateway_partner_requests_total` (`verdict.request_result`); the latency of a request
        that went to the partner's API (an answer, or a timeout, a reset) in its histogram,
        not of a call that ended at the partner's credentials (`Outcome.requested`)."""
        if outcome.error == "partner_disabled":  # no call: the partner is disabled (as for
            return  # a delivery, or a proxy call's 503), which its status says
        result = request_result(outcome.status, outcome.error, verdict)
        partner = self.label("partner", partner_id)
        self.child(self.partner_requests, partner, mode, result).inc()
        if outcome.requested:
            self.child(self.partner_latency, partner, mode).observe(outcome.latency_ms / 1000)

    def report_partner_circuit(self, partner_id: str, state: str, states: Iterable[str]) -> None:
        """A partner's breaker now in `state`: 1 for it, 0 for the others. A partner past the
        bound of partners has no circuit series (a state is one partner's: "other" would
        say whichever partner changed last); its calls count under partner="other"."""
        partner = self.label("partner", partner_id)
        if partner == OTHER:
            return
        for each in states:
            self.partner_circuit.labels(partner, each).set(int(each == state))

    def forget_partner_circuit(self, partner_id: str, states: Iterable[str]) -> None:
        """A deleted partner has no breaker state: its series are removed (under `serve
        --workers N` a series lives on in the process's file and cannot be removed, so it is
        zeroed first). A partner without series of its own (past the bound) has none to drop."""
        if not self._bounded["partner"].holds(partner_id):
            return
        for state in states:
            self.partner_circuit.labels(partner_id, state).set(0)
            if not os.environ.get(MULTIPROCESS_DIR):
                self.partner_circuit.remove(partner_id, state)

    def label(self, name: str, value: str) -> str:
        """The `name` label of `value`'s series (`name` one of trigger, partner, schedule,
        field, secret): `value` while fewer than the bound's values have series of their own
        in this process (the first seen since it started, a deleted one's place taken
        again), else "other", whose series add up the rest. A deleted one's (`forget`: a call
        in flight when it was deleted, ending after) is "other": its series stay removed."""
        if value in self._gone:
            return OTHER
        return self._bounded[name](value)

    def kept(self, name: str) -> set[str]:
        """The values of the `name` label (trigger, partner, ...) that hold a place among its
        bound's with series of their own in this process, but those forgotten (`forget`):
        under `serve --workers N` a forgotten value keeps its place, its series living on in
        the process's file (`BoundedLabel.retire`)."""
        return set(self._bounded[name].values())

    def counts(self, metric: Counter, name: str, value: str) -> Callable[[], None]:
        """What adds one to `metric`'s series of `value` (its one label `name`, bounded),
        when it happens: the place among the bound's values is taken then, not now."""
        return lambda: metric.labels(self.label(name, value)).inc()

    def trigger_label(self, trigger_id: str, *, polled: bool = False) -> str:
        """`label("trigger", trigger_id)`; "unknown" (no trigger of that id) stays itself.
        `polled`: the trigger is a schedule's target (its id the schedule's, `trigger.polled`):
        its `trigger` label takes a place among the schedules' (GATEWAY_METRICS_MAX_SCHEDULES),
        never one of the triggers', and goes with the schedule (`forget("schedule", id)`)."""
        return self.label("schedule" if polled else "trigger", trigger_id)

    def forget(self, label: str, value: str) -> None:
        """Every series that names `value` (a deleted trigger's, partner's or schedule's id)
        under any of the bounded labels removed, and its place among each bound's values
        given to the next (a schedule's id is also the `trigger` label of its refused items),
        so deleting and creating objects does not grow /metrics for good. Not under
        PROMETHEUS_MULTIPROC_DIR (`serve --workers N`): a series lives on in its process's
        file, which prometheus_client cannot remove, until the instance ends."""
        del label  # ids are unique: no other object's label holds this value
        self._gone[value] = None  # what counts it later (a call in flight) counts "other"
        if len(self._gone) > GONE_KEPT:
            del self._gone[next(iter(self._gone))]
        if os.environ.get(MULTIPROCESS_DIR):
            for bound in self._bounded.values():
                bound.retire(value)  # its place kept, as its series are
            return
        for bound in self._bounded.values():
            bound.discard(value)  # its place for another
        for metric in vars(self).values():
            if isinstance(metric, MetricWrapperBase):
                for name in metric._labelnames:
                    if name in self._bounded:
                        metric.remove_by_labels({name: value})
        for key in [key for key in self._children if value in key[1]]:
            del self._children[key]

    def child(self, metric: M, *labels: str) -> M:
        """`metric.labels(*labels)`, kept: `labels()` checks its values and takes a lock on
        every call, which hot paths (every request, every proxy call) need not pay again."""
        key = (metric, labels)
        child: M | None = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def measured(self, gauge: Gauge, value: float) -> None:
        """`gauge.set(value)` by a pass that read it from the database: known again."""
        gauge.set(value)
        self._unknown.discard(gauge)

    def database_known(self, up: bool) -> None:
        """`gateway_database_up`; and, as the database is lost, the gauges measured by
        reading it made unknown (NaN) until a pass measures them again: the relay's and
        the fold's oldest waiting, the delivery queue's series this process exports. Kept,
        they went on saying the last values (0: nothing waits) through an outage. As the
        database is back, the relay's and the fold's not measured since read 0 until a pass
        does: a process that runs no such pass (web only, without those jobs, no shard held)
        kept NaN for ever, and under `--workers N` that NaN could be the `livemax` read.
        Every process makes them NaN (not only those that measure them): a 0 of another
        could be the `livemax` of an outage as well."""
        self.database_up.set(1 if up else 0)
        if up:
            for gauge in self._unknown:
                gauge.set(0)
            self._unknown.clear()
            return
        self._unknown = {self.relay_oldest_waiting, self.fold_oldest_waiting}
        for gauge in self._unknown:
            gauge.set(math.nan)
        queue = {s.labels["status"] for m in self.delivery_queue.collect() for s in m.samples}
        for status in queue:  # none where the delivery job does not run (an alert reads that)
            self.delivery_queue.labels(status).set(math.nan)
        if queue:
            self.delivery_oldest_due.set(math.nan)

    def before_scrape(self, read: Callable[[], object]) -> None:
        """Have `read` run before each scrape: what it reads sets its gauges as of then."""
        self._before_scrape.append(read)

    def render(self) -> bytes:
        """This process's metrics; every process's, added up, under `serve --workers N`."""
        self.read_before_scrape()
        return self.rendered()

    def read_before_scrape(self) -> None:
        """What `before_scrape` asked for, read (on the event loop: they read its state)."""
        for read in self._before_scrape:
            read()

    def rendered(self) -> bytes:
        """The scrape's text, as `render` but without the reads before it: may run in another
        thread (prometheus_client takes its locks to copy each metric's series, and the
        event loop goes on counting meanwhile), as `/metrics` does."""
        path = os.environ.get(MULTIPROCESS_DIR)
        if not path:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        files = multiprocess.MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]
        registry.register(_WithUnrecorded(files))
        return generate_latest(registry)


class _WithUnrecorded:
    """The processes' metric files, added up, and this process's count of series they could
    not take when that count could not be written there either (a start on a full disk): the
    one series meant to show the gap is never missing from the scrape with it."""

    def __init__(self, files: Any) -> None:
        self._files = files

    def collect(self) -> Iterable[Metric]:
        found = False
        for metric in self._files.collect():
            if metric.name == _UNRECORDED:
                found = True
                if _unrecorded.in_memory:
                    metric.samples = [
                        sample._replace(value=sample.value + _unrecorded.count)
                        for sample in metric.samples
                    ]
            yield metric
        if not found and _unrecorded.in_memory:
            yield CounterMetricFamily(_UNRECORDED, _UNRECORDED_HELP, value=_unrecorded.count)
