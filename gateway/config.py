"""Settings, read once from the environment into a frozen, typed object. Besides the
environment, the only I/O here looks at the directories settings name (one that must exist
does, one the gateway creates can be)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL


class ConfigError(ValueError):
    """A missing or malformed environment variable (or command-line option); the message
    names it. The command exits with status 2."""


class StartRefused(RuntimeError):
    """Well-formed settings this process cannot start with now: its port is taken, another
    process holds its data dir. One line on stderr naming the setting; exit status 1."""


def parse_flag(raw: str) -> bool:
    """A boolean as settings and query parameters spell it: true/1 or false/0, any case."""
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


MIN_SECRET_KEY_LENGTH = 16
"""Characters in each key of GATEWAY_SECRET_KEY (the key ring refuses shorter ones too)."""

LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""The levels GATEWAY_LOG_LEVEL takes, in any case."""

EVENT_LOOPS: tuple[str, ...] = ("uvloop", "asyncio")
# The headers a trusted proxy may name the client in (GATEWAY_FORWARDED_HEADER).
FORWARDED_HEADERS: tuple[str, ...] = ("x-forwarded-for", "forwarded")
"""The event loops a long-running process can run on (`gateway/eventloop.py`)."""

JOBS: tuple[str, ...] = ("relay", "flows", "delivery", "schedules", "fold")
"""The background jobs: the event relay (outboxes → events → deliveries and flow runs), the
flow runner, the delivery worker, the schedule runner and the fleet fold (positions →
vehicle state and events). A process runs all of them unless
told otherwise."""

LIMITED_RESOURCES: tuple[str, ...] = (
    "triggers",
    "partners",
    "actions",
    "subscriptions",
    "schedules",
    "channels",
    "templates",
    "kinds",
    "mappings",
    "flows",
)
"""What a tenant's admin creates, each stopped at GATEWAY_MAX_<RESOURCE>_PER_TENANT a tenant
(`Settings.tenant_limits`; geofences and maintenance plans at 5,000: fleet/rule_service.py)."""


def parse_jobs(raw: str) -> tuple[str, ...]:
    """`relay,delivery` → ("relay", "delivery"); `none` → (); unknown names are an error."""
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    if not names:  # only commas: a slip, not `none`, which must be said
        raise ValueError(f"no job named; jobs: {', '.join(JOBS)} or none")
    if names == ("none",):
        return ()
    if unknown := [n for n in names if n not in JOBS]:
        raise ValueError(f"unknown job {', '.join(unknown)}; jobs: {', '.join(JOBS)} or none")
    return names


@dataclass(frozen=True, slots=True)
class Secret:
    """A string that hides itself from repr/str so it never lands in a log line."""

    value: str

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Settings:
    mongodb_uri: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    # `gateway worker`'s own listener (/healthz, /readyz, /metrics); 0 (the default): none, so
    # that several workers can share a host.
    worker_port: int = 0
    data_dir: Path = Path("var")
    # Several comma-separated keys rotate: the first signs and encrypts, all verify and decrypt.
    secret_key: Secret | None = None
    public_url: str | None = None
    outbound_allow: tuple[str, ...] = ()
    # Requests to partners in flight at once in a process (`Sender(connections=...)`); one
    # partner may hold half of it (`PartnerGuards.share`).
    outbound_connections: int = 2000
    database: str = "gateway"
    db_timeout_ms: int = 5000
    # The bound of an index build and of a one-time upgrade step's pass over a collection at
    # start (`Store.ensure_indexes`), instead of db_timeout_ms: on a large collection they last
    # minutes, and one cut at the requests' deadline was thrown away and started again.
    index_build_timeout_seconds: int = 3600
    # The write concern's `w` (journaling is always on): "majority" on a replica set, or a
    # number of members; None keeps the URI's (default 1).
    db_write_concern: str | int | None = None
    max_body_bytes: int = 1024 * 1024
    # How long an answer may wait on a client that takes none of its bytes (a reader that
    # never reads, ACKing zero-window probes) before its connection is closed
    # (gateway/web/server.py): aiohttp has no write timeout.
    write_timeout_seconds: int = 30
    # Admin API and UI requests per second per tenant and per process (bursts of twice that);
    # the same for calls without a valid admin token, per client (its address, an IPv6 one's
    # /64: gateway/web/client_address.py). A guard against runaway clients and floods, set
    # above what a fuzzer or the proxy's callers send.
    admin_rate_limit: int = 1000
    # The proxies (addresses, CIDRs) whose Forwarded / X-Forwarded-For name the client, for
    # those per-client budgets and the token login's lockout (gateway/web/client_address.py).
    trusted_proxies: tuple[str, ...] = ()
    # The one header those proxies write the client into: "x-forwarded-for" or "forwarded"
    # (RFC 7239); the other is never read (a proxy passes a client's own through).
    forwarded_header: str = "x-forwarded-for"
    max_batch_items: int = 500
    # Triggers a tenant may have (a create past it is a 409), and triggers whose metric series
    # a process keeps by id (the rest are counted under trigger="other"): /metrics stays
    # bounded whatever a tenant's admin creates (docs/operations.md).
    max_triggers_per_tenant: int = 5000
    metrics_max_triggers: int = 500
    # The same for partners and schedules (their series by id; the rest under "other"), and
    # each other resource a tenant's admin creates (store/turns.py `TenantLimits`): one
    # tenant's admin cannot fill the database, the caches and the scrape every tenant shares.
    metrics_max_partners: int = 500
    metrics_max_schedules: int = 500
    max_partners_per_tenant: int = 5000
    max_actions_per_tenant: int = 5000
    max_subscriptions_per_tenant: int = 5000
    max_schedules_per_tenant: int = 5000
    max_channels_per_tenant: int = 5000
    max_templates_per_tenant: int = 5000
    max_kinds_per_tenant: int = 5000
    max_mappings_per_tenant: int = 5000
    max_flows_per_tenant: int = 5000
    # Versions of one mapping or flow kept past a new one (its active one and those still in
    # use kept too); 0 keeps every one (GATEWAY_VERSIONS_KEPT).
    versions_kept: int = 50
    run_workers: bool = True
    # Which background jobs a process with workers runs (GATEWAY_WORKERS): scale one alone by
    # giving a `gateway worker` process only it.
    jobs: tuple[str, ...] = JOBS
    # Caches follow change streams where the deployment has them; false: re-read instead.
    change_streams: bool = True
    log_level: str = "INFO"
    log_json: bool = True
    # The long-running processes' event loop (gateway/eventloop.py): one of EVENT_LOOPS, or
    # None: uvloop where it is installed.
    event_loop: str | None = None
    # When set, /metrics asks for `Authorization: Bearer <it>` (label values name our ids).
    metrics_token: Secret | None = None
    # An external identity provider's admin tokens (RS256/ES256/EdDSA), checked on its JWKS.
    admin_jwks_url: str | None = None
    admin_jwt_issuer: str | None = None
    admin_jwt_audience: str | None = None
    admin_tenant_claim: str = "tenant"
    admin_role_claim: str = "role"
    # Delivery workers (issue 5): a lease longer than any partner timeout (capped at 60 s).
    delivery_lease_seconds: int = 90
    delivery_concurrency: int = 32
    delivery_poll_seconds: int = 1
    delivery_shutdown_seconds: int = 10
    # On SIGTERM, how long a request in flight may take before it is cancelled.
    request_shutdown_seconds: int = 15
    partner_probe_seconds: int = 300
    # /readyz turns unready when the event relay, the delivery worker or the fleet fold has
    # failed for this long with work waiting.
    stall_seconds: int = 60
    # `serve --workers N`: a process whose heartbeat stops this long (from its start too) is
    # killed and replaced (prefork.py).
    hung_seconds: int = 30
    # The embedded database is marked down while its disk has less free than this
    # (store/supervisor.py `MIN_FREE_MB`); 0: never.
    embedded_min_free_mb: int = 64
    # ... or fewer free inodes than this (store/supervisor.py `FreeSpaceFloor`); 0: never.
    embedded_min_free_inodes: int = 1000
    # The fleet fold writes a moving vehicle's last position and odometer to its entity at
    # least this often, and its whole state with a checkpoint this often (docs/fleet.md).
    fold_entity_seconds: int = 10
    fold_checkpoint_seconds: int = 30
    # An inbox number taken by a round that never wrote it (killed, or its write lost) holds
    # the fold this long before the fold gives it up: far beyond a round's deadlines.
    fold_gap_seconds: int = 30
    # The event relay's and the fleet fold's shard leases (gateway/shares.py), renewed every
    # third of it: a process killed holds its shards this long before the others take them.
    shard_lease_seconds: int = 10
    # Schedule runners (issue 13): one run holds its schedule's lease, renewed while it runs.
    schedule_lease_seconds: int = 60
    schedule_concurrency: int = 4
    # How long a partner's announced occurrence (a mapping's `occurrence_id`) is remembered:
    # a redelivery within it is not announced again (store/occurrences.py).
    occurrence_retention_days: int = 7
    # The events feed (`GET /api/v1/events?after=`) answers an event this long after it was
    # stored, not before: longer than an insert of the relay may take to become visible.
    events_feed_settle_seconds: int = 10
    # Where schemas/ lives; None = beside the package (a source checkout or editable install).
    schema_dir: Path | None = None
    # PROMETHEUS_MULTIPROC_DIR: where `serve --workers N`'s processes write their metric
    # files (prometheus_client reads the variable itself; it is here to be checked and named).
    metrics_dir: Path | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def tenant_limits(self) -> dict[str, int]:
        """Each of LIMITED_RESOURCES and how many of it a tenant may have."""
        return {r: int(getattr(self, f"max_{r}_per_tenant")) for r in LIMITED_RESOURCES}

    def setting_of(self, path: str | os.PathLike[str] | None) -> str | None:
        """The variable naming the directory `path` is in (or is): what to name when the
        system refuses it (a data dir on a read-only file system, ...); None for others."""
        if path is None:
            return None
        where = Path(os.path.abspath(path))
        named = [
            ("GATEWAY_DATA_DIR", self.data_dir),
            ("GATEWAY_SCHEMA_DIR", self.schema_dir),
            ("PROMETHEUS_MULTIPROC_DIR", self.metrics_dir),
        ]
        for name, directory in named:
            if directory is not None and where.is_relative_to(os.path.abspath(directory)):
                return name
        return None

    @property
    def base_url(self) -> str:
        """The base of the trigger URLs handed to partners: GATEWAY_PUBLIC_URL, else
        `listen_url`."""
        return (self.public_url or self.listen_url).rstrip("/")

    @property
    def listen_url(self) -> str:
        """The address this process listens on (never GATEWAY_PUBLIC_URL: a proxy's)."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"http://{host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        env = _Env(environ)
        if env.text("GATEWAY_ADMIN_JWKS_URL") and not env.text("GATEWAY_ADMIN_JWT_AUDIENCE"):
            # Without an audience, any token the identity provider signs for any application
            # with a tenant and a role claim would be an admin token here.
            raise ConfigError("GATEWAY_ADMIN_JWT_AUDIENCE must be set with GATEWAY_ADMIN_JWKS_URL")
        settings = cls(
            mongodb_uri=env.mongodb_uri("MONGODB_URI"),
            host=env.text("GATEWAY_HOST") or "127.0.0.1",
            port=env.integer("GATEWAY_PORT", 8080, low=0, high=65535),
            worker_port=env.integer("GATEWAY_WORKER_PORT", 0, low=0, high=65535),
            data_dir=env.directory("GATEWAY_DATA_DIR") or Path("var"),
            secret_key=env.secret_keys("GATEWAY_SECRET_KEY"),
            public_url=env.url("GATEWAY_PUBLIC_URL", base=True),
            outbound_allow=env.allow_list("GATEWAY_OUTBOUND_ALLOW"),
            trusted_proxies=env.networks("GATEWAY_TRUSTED_PROXIES"),
            forwarded_header=env.choice("GATEWAY_FORWARDED_HEADER", FORWARDED_HEADERS)
            or "x-forwarded-for",
            outbound_connections=env.integer(
                "GATEWAY_OUTBOUND_CONNECTIONS", 2000, low=2, high=100_000
            ),
            database=env.database("GATEWAY_DATABASE"),
            db_timeout_ms=env.integer("GATEWAY_DB_TIMEOUT_MS", 5000, low=100, high=600_000),
            index_build_timeout_seconds=env.integer(
                "GATEWAY_INDEX_BUILD_TIMEOUT_SECONDS", 3600, low=1, high=604_800
            ),
            db_write_concern=env.write_concern("GATEWAY_WRITE_CONCERN"),
            max_body_bytes=env.integer(
                "GATEWAY_MAX_BODY_BYTES", 1024 * 1024, low=1024, high=1_073_741_824
            ),
            write_timeout_seconds=env.integer(
                "GATEWAY_WRITE_TIMEOUT_SECONDS", 30, low=1, high=3600
            ),
            admin_rate_limit=env.integer("GATEWAY_ADMIN_RATE_LIMIT", 1000, low=1, high=100_000),
            max_batch_items=env.integer("GATEWAY_MAX_BATCH_ITEMS", 500, low=1, high=10_000),
            max_triggers_per_tenant=env.integer(
                "GATEWAY_MAX_TRIGGERS_PER_TENANT", 5000, low=1, high=1_000_000
            ),
            metrics_max_triggers=env.integer(
                "GATEWAY_METRICS_MAX_TRIGGERS", 500, low=0, high=100_000
            ),
            metrics_max_partners=env.integer(
                "GATEWAY_METRICS_MAX_PARTNERS", 500, low=0, high=100_000
            ),
            metrics_max_schedules=env.integer(
                "GATEWAY_METRICS_MAX_SCHEDULES", 500, low=0, high=100_000
            ),
            max_partners_per_tenant=env.integer(
                "GATEWAY_MAX_PARTNERS_PER_TENANT", 5000, low=1, high=1_000_000
            ),
            max_actions_per_tenant=env.integer(
                "GATEWAY_MAX_ACTIONS_PER_TENANT", 5000, low=1, high=1_000_000
            ),
            max_subscriptions_per_tenant=env.integer(
                "GATEWAY_MAX_SUBSCRIPTIONS_PER_TENANT", 5000, low=1, high=1_000_000
            ),
            max_schedules_per_tenant=env.integer(
                "GATEWAY_MAX_SCHEDULES_PER_TENANT", 5000, low=1, high=1_000_000
            ),
            max_channels_per_tenant=env.integer(
                "GATEWAY_MAX_CHANNELS_PER_TENANT", 5000, low=1, high=1_000_000
            ),
            max_templates_per_tenant=env.integer(
                "GATEWAY_MAX_TEMPLATES_PER_TENANT", 5000, low=1, high=1_000_000
            ),
            max_kinds_per_tenant=env.integer(
                "GATEWAY_MAX_KINDS_PER_TENANT", 5000, low=1, high=1_000_000
            ),
            max_mappings_per_tenant=env.integer(
                "GATEWAY_MAX_MAPPINGS_PER_TENANT", 5000, low=1, high=1_000_000
            ),
            max_flows_per_tenant=env.integer(
                "GATEWAY_MAX_FLOWS_PER_TENANT", 5000, low=1, high=1_000_000
            ),
            versions_kept=env.integer("GATEWAY_VERSIONS_KEPT", 50, low=0, high=100_000),
            run_workers=env.flag("GATEWAY_RUN_WORKERS", True),
            jobs=env.jobs("GATEWAY_WORKERS"),
            change_streams=env.flag("GATEWAY_CHANGE_STREAMS", True),
            log_level=env.log_level("GATEWAY_LOG_LEVEL"),
            log_json=env.flag("GATEWAY_LOG_JSON", True),
            event_loop=env.choice("GATEWAY_EVENT_LOOP", EVENT_LOOPS),
            metrics_token=env.bearer_token("GATEWAY_METRICS_TOKEN"),
            admin_jwks_url=env.url("GATEWAY_ADMIN_JWKS_URL"),
            admin_jwt_issuer=env.text("GATEWAY_ADMIN_JWT_ISSUER"),
            admin_jwt_audience=env.text("GATEWAY_ADMIN_JWT_AUDIENCE"),
            admin_tenant_claim=env.text("GATEWAY_ADMIN_TENANT_CLAIM") or "tenant",
            admin_role_claim=env.text("GATEWAY_ADMIN_ROLE_CLAIM") or "role",
            delivery_lease_seconds=env.integer(
                "GATEWAY_DELIVERY_LEASE_SECONDS", 90, low=1, high=86_400
            ),
            delivery_concurrency=env.integer("GATEWAY_DELIVERY_CONCURRENCY", 32, low=1, high=1000),
            delivery_poll_seconds=env.integer("GATEWAY_DELIVERY_POLL_SECONDS", 1, low=1, high=3600),
            delivery_shutdown_seconds=env.integer(
                "GATEWAY_DELIVERY_SHUTDOWN_SECONDS", 10, low=0, high=3600
            ),
            request_shutdown_seconds=env.integer(
                "GATEWAY_REQUEST_SHUTDOWN_SECONDS", 15, low=1, high=3600
            ),
            partner_probe_seconds=env.integer(
                "GATEWAY_PARTNER_PROBE_SECONDS", 300, low=1, high=86_400
            ),
            stall_seconds=env.integer("GATEWAY_STALL_SECONDS", 60, low=1, high=86_400),
            hung_seconds=env.integer("GATEWAY_HUNG_SECONDS", 30, low=5, high=3600),
            embedded_min_free_mb=env.integer(
                "GATEWAY_EMBEDDED_MIN_FREE_MB", 64, low=0, high=1_073_741_824
            ),
            embedded_min_free_inodes=env.integer(
                "GATEWAY_EMBEDDED_MIN_FREE_INODES", 1000, low=0, high=1_000_000_000_000
            ),
            fold_entity_seconds=env.integer("GATEWAY_FOLD_ENTITY_SECONDS", 10, low=1, high=3600),
            fold_checkpoint_seconds=env.integer(
                "GATEWAY_FOLD_CHECKPOINT_SECONDS", 30, low=1, high=3600
            ),
            fold_gap_seconds=env.integer("GATEWAY_FOLD_GAP_SECONDS", 30, low=2, high=3600),
            shard_lease_seconds=env.integer("GATEWAY_SHARD_LEASE_SECONDS", 10, low=2, high=3600),
            schedule_lease_seconds=env.integer(
                "GATEWAY_SCHEDULE_LEASE_SECONDS", 60, low=1, high=86_400
            ),
            schedule_concurrency=env.integer("GATEWAY_SCHEDULE_CONCURRENCY", 4, low=1, high=100),
            occurrence_retention_days=env.integer(
                "GATEWAY_OCCURRENCE_RETENTION_DAYS", 7, low=1, high=365
            ),
            events_feed_settle_seconds=env.integer(
                "GATEWAY_EVENTS_FEED_SETTLE_SECONDS", 10, low=1, high=3600
            ),
            schema_dir=env.directory("GATEWAY_SCHEMA_DIR", holding="entities"),
            metrics_dir=env.directory("PROMETHEUS_MULTIPROC_DIR"),
        )
        if settings.fold_gap_seconds * 1000 <= settings.db_timeout_ms:
            # A round still within its deadline would have its number given up under it.
            raise ConfigError(
                "GATEWAY_FOLD_GAP_SECONDS must be longer than GATEWAY_DB_TIMEOUT_MS "
                f"({settings.fold_gap_seconds} s against {settings.db_timeout_ms} ms)"
            )
        if settings.shard_lease_seconds * 1000 <= settings.db_timeout_ms:
            # A renewal still within its deadline would see its shards taken under it.
            raise ConfigError(
                "GATEWAY_SHARD_LEASE_SECONDS must be longer than GATEWAY_DB_TIMEOUT_MS "
                f"({settings.shard_lease_seconds} s against {settings.db_timeout_ms} ms)"
            )
        if settings.events_feed_settle_seconds * 1000 <= settings.db_timeout_ms:
            # An insert still within its deadline, not visible yet, would be passed over.
            raise ConfigError(
                "GATEWAY_EVENTS_FEED_SETTLE_SECONDS must be longer than GATEWAY_DB_TIMEOUT_MS "
                f"({settings.events_feed_settle_seconds} s against {settings.db_timeout_ms} ms)"
            )
        if settings.versions_kept == 1:  # a roll back from the newest needs the one before
            raise ConfigError("GATEWAY_VERSIONS_KEPT must be 0 (keep every version) or at least 2")
        return settings


_INTEGER = re.compile(r"-?[0-9]+")
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750's b64token


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        """Every number has a ceiling: past it a duration overflowed the date arithmetic (a
        crash at start, or a job failing for ever behind a ready /readyz) and a size the
        database's 8-byte integers."""
        raw = self.text(name)
        if raw is None:
            return default
        if not _INTEGER.fullmatch(raw):  # `int()` also reads "1_000" and other scripts' digits
            raise ConfigError(f"{name} must be an integer, got {raw!r}")
        value = int(raw)
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            return parse_flag(raw)
        except ValueError:
            raise ConfigError(f"{name} must be one of true, 1, false, 0, got {raw!r}") from None

    def jobs(self, name: str) -> tuple[str, ...]:
        raw = self.text(name)
        if raw is None:
            return JOBS
        try:
            return parse_jobs(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        raw = self.text(name)
        if raw is not None and raw not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    def secret_keys(self, name: str) -> Secret | None:
        """Comma-separated keys, newest first; the message never shows one."""
        raw = self.text(name)
        if raw is None:
            return None
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        if not keys or any(len(k) < MIN_SECRET_KEY_LENGTH for k in keys):
            raise ConfigError(
                f"{name}: every key must be at least {MIN_SECRET_KEY_LENGTH} characters "
                "(generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return Secret(raw)

    def bearer_token(self, name: str) -> Secret | None:
        """A token clients send as `Authorization: Bearer <it>`: RFC 6750's token characters
        (another can never arrive as set), and as long as a secret key (a short one is
        guessed within the budget of refused calls); the message never shows it."""
        raw = self.text(name)
        if raw is None:
            return None
        if len(raw) < MIN_SECRET_KEY_LENGTH or not _BEARER_TOKEN.fullmatch(raw):
            raise ConfigError(
                f"{name} must be at least {MIN_SECRET_KEY_LENGTH} characters of letters, digits "
                "and -._~+/ (generate one with `openssl rand -hex 32`)"
            )
        return Secret(raw)

    def database(self, name: str) -> str:
        """A name MongoDB takes: under 64 bytes, none of `/\\. "$` or NUL."""
        raw = self.text(name) or "gateway"
        if len(raw.encode()) > 63 or any(c in raw for c in '/\\. "$\0'):
            raise ConfigError(
                f"{name} must be a MongoDB database name (under 64 bytes, none of "
                f'/\\. "$), got {raw!r}'
            )
        return raw

    def log_level(self, name: str) -> str:
        raw = self.text(name) or "INFO"
        if raw.upper() not in LOG_LEVELS:
            raise ConfigError(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
        return raw.upper()

    def write_concern(self, name: str) -> str | int | None:
        raw = self.text(name)
        if raw is None or raw == "majority":
            return raw
        if raw.isdecimal() and int(raw) >= 1:
            return int(raw)
        raise ConfigError(f"{name} must be majority or a number of members, got {raw!r}")

    def mongodb_uri(self, name: str) -> str | None:
        """A MongoDB connection string. The driver would take `db.example.com` or a typo such
        as `mongodb:/db` as a host name and wait for it on every start; the message does not
        show the value (it may carry a password)."""
        raw = self.text(name)
        if raw is None:
            return None
        scheme, found, _ = raw.partition("://")
        if not found or scheme not in ("mongodb", "mongodb+srv"):
            raise ConfigError(f"{name} must start with mongodb:// or mongodb+srv://")
        return raw

    def url(self, name: str, *, base: bool = False) -> str | None:
        """An http(s) URL with a host, a port (if given) of 1-65,535 and no blanks; `base` (a
        base for paths, as GATEWAY_PUBLIC_URL is): no query, fragment or user either."""
        raw = self.text(name)
        if raw is None:
            return None
        problem = _url_problem(raw, base=base)
        if problem is not None:
            raise ConfigError(f"{name} must be an http(s) URL ({problem}), got {raw!r}")
        scheme, rest = raw.split(":", 1)
        return scheme.lower() + ":" + rest  # `HTTPS://…` is https (the UI's Secure cookies)

    def directory(self, name: str, *, holding: str | None = None) -> Path | None:
        """A directory the process uses: `holding` (a directory it reads, which must hold
        that) must exist; one it may create must exist or be creatable where it is named."""
        raw = self.text(name)
        if raw is None:
            return None
        path = Path(raw)
        try:
            problem = _directory_problem(path, holding)
        except OSError as exc:  # a parent it may not look into
            problem = f"cannot be read: {exc.strerror or exc}"
        if problem is not None:
            raise ConfigError(f"{name}: {raw} {problem}")
        return path

    def networks(self, name: str) -> tuple[str, ...]:
        """Comma-separated addresses and CIDRs."""
        entries = tuple(e.strip() for e in (self.text(name) or "").split(",") if e.strip())
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ConfigError(f"{name}: {entry!r} is no address or CIDR") from None
        return entries

    def allow_list(self, name: str) -> tuple[str, ...]:
        entries = tuple(e.strip() for e in (self.text(name) or "").split(",") if e.strip())
        for entry in entries:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ConfigError(f"{name}: {entry!r} is not a valid CIDR") from None
        return entries


def _url_problem(raw: str, *, base: bool) -> str | None:
    if any(c.isspace() for c in raw):
        return "no blanks"
    try:
        url = URL(raw)
        port = url.explicit_port  # a port yarl cannot read raises here too
    except ValueError as exc:
        return str(exc).removeprefix("Invalid URL: ")
    if url.scheme not in ("http", "https"):
        return "http:// or https://"
    if not url.host:
        return "a host is required"
    if port is not None and not 1 <= port <= 65535:
        return "the port must be 1-65535"
    # In the text, not only yarl's reading: an empty `?`, `#` or user (`https://@host`) is no
    # query, fragment or user to yarl, and a path appended after `#` is a fragment. (An `@`
    # in the path is a path's.)
    authority = raw.split("://", 1)[-1].split("/", 1)[0]
    if base and (url.user is not None or set("?#") & set(raw) or "@" in authority):
        return "no user, query or fragment: trigger URLs are made by appending paths to it"
    return None


def _directory_problem(path: Path, holding: str | None) -> str | None:
    if path.exists():
        if not path.is_dir():
            return "is not a directory"
        if holding is not None and not (path / holding).is_dir():
            return f"has no {holding}/ directory (it must be the gateway's schemas/ directory)"
        return None
    if holding is not None:
        return "does not exist"
    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists():
            if not parent.is_dir():
                return f"cannot be created: {parent} is not a directory"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"cannot be created: {parent} is not writable"
            return None
    return None
