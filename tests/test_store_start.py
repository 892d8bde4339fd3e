"""A process's start against a database that refuses one of its indexes: an index of the same
name with another definition, as a restore from another server or an older version can leave.
The process serves (its health is the database's), and says so until the indexes exist."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import replace
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from gateway.app import create_app
from gateway.auth.keyring import KeyRing
from gateway.auth.secretbox import SecretBox
from gateway.config import ConfigError, Settings
from gateway.keys import check_secret_key
from gateway.services import open_services
from gateway.store import connection
from gateway.store.connection import open_store
from gateway.store.sealed import FIELDS, LISTS
from tests.support import SECRET_KEY


class _Waiter(logging.Handler):
    """An event per message fragment, set when a log record carrying it is emitted."""

    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.seen = {f: asyncio.Event() for f in fragments}

    def emit(self, record: logging.LogRecord) -> None:
        for fragment, event in self.seen.items():
            if fragment in record.getMessage():
                event.set()


async def _index_names(db: Any, collection: str) -> set[str]:
    return {i["name"] for i in await (await db[collection].list_indexes()).to_list(None)}


async def test_indexes_refused_at_start_are_tried_again_each_failure_logged_until_created(
    settings: Settings,
    mongodb_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(connection, "INDEX_RETRY_SECONDS", 0.05)
    caplog.set_level(logging.INFO, logger="gateway.store.connection")
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri)
    db = client[settings.database]
    await db["events"].create_index([("somewhere", 1)], name="by_tenant")
    waiter = _Waiter("creating the indexes failed at start", "failed again", "indexes created")
    logger = logging.getLogger("gateway.store.connection")
    logger.addHandler(waiter)
    try:
        async with open_store(settings, mongodb_uri) as store:
            await asyncio.wait_for(waiter.seen["creating the indexes failed at start"].wait(), 10)
            await asyncio.wait_for(waiter.seen["failed again"].wait(), 10)
            assert await _index_names(db, "triggers") <= {"_id_"}  # none of its own yet
            assert store.health.up  # the database answers: the process serves
            await db["events"].drop_index("by_tenant")
            await asyncio.wait_for(waiter.seen["indexes created"].wait(), 10)
            assert len(await _index_names(db, "triggers")) > 1
    finally:
        logger.removeHandler(waiter)
        await client.drop_database(settings.database)
        await client.close()


async def test_readiness_answers_503_naming_the_refused_index_until_it_is_created(
    settings: Settings,
    mongodb_uri: str,
    make_app: Any,
    aiohttp_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "INDEX_RETRY_SECONDS", 0.05)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri)
    db = client[settings.database]
    await db["events"].create_index([("somewhere", 1)], name="by_tenant")
    try:
        http = await aiohttp_client(make_app())
        refused = await http.get("/readyz")
        assert refused.status == 503
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        assert "indexes are not all created" in (await refused.json())["detail"]
        assert (await http.get("/healthz")).status == 200  # alive: not a restart's reason
        await db["events"].drop_index("by_tenant")
        async with asyncio.timeout(10):
            while (await http.get("/readyz")).status != 200:
                await asyncio.sleep(0.05)
    finally:
        await client.drop_database(settings.database)
        await client.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_database_unreachable_at_start_is_known_down_and_its_address_logged(
    settings: Settings, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listened on MONGODB_URI: the log said only `ServerSelectionTimeoutError`, and
    the database was not known down (the driver counts only the loss of a server it had),
    so every /readyz waited GATEWAY_DB_TIMEOUT_MS before its 503: a load balancer's check
    with a shorter timeout saw no answer at all."""
    caplog.set_level(logging.INFO, logger="gateway.store.connection")
    port = _closed_port()
    app = create_app(
        replace(settings, db_timeout_ms=500, fold_gap_seconds=30),
        mongodb_uri=f"mongodb://127.0.0.1:{port}/",
    )
    http = await aiohttp_client(app)  # its start: the indexes fail after the 500 ms deadline
    (line,) = [r.getMessage() for r in caplog.records if "failed at start" in r.getMessage()]
    assert f"127.0.0.1:{port}: [Errno 111]" in line, line  # refused: nothing listens
    ready = await http.get("/readyz")
    assert ready.status == 503
    problem = await ready.json()
    # From what the process knows (no wait on the database): the known-down refusal's words.
    assert problem["detail"].startswith("the database is unavailable ("), problem
    assert str(port) not in problem["detail"]


class _Sent(monitoring.CommandListener):
    """Each command's name and the collection it names, in order."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        self.commands.append((event.command_name, target if isinstance(target, str) else ""))
        if event.command_name == "aggregate":  # the collections it reads beside its own
            self.commands += [
                ("$unionWith", stage["$unionWith"]["coll"])
                for stage in event.command.get("pipeline", ())
                if "$unionWith" in stage
            ]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _recording(monkeypatch: pytest.MonkeyPatch) -> _Sent:
    """The commands of the stores opened from now on (their client's own listener)."""
    sent = _Sent()
    opened = connection.open_client

    def open_client(*args: Any, listeners: Any = (), **kwargs: Any) -> Any:
        return opened(*args, listeners=[*listeners, sent], **kwargs)

    monkeypatch.setattr(connection, "open_client", open_client)
    return sent


async def _markers(settings: Settings, mongodb_uri: str) -> set[str]:
    """The one-time upgrade steps recorded done once a process started on the database."""
    async with open_services(settings, mongodb_uri=mongodb_uri) as services:
        return {m["_id"] for m in await services.store.db["migrations"].find().to_list(None)}


async def test_a_start_on_a_new_database_reads_none_of_it_and_records_its_upgrades_at_once(
    settings: Settings, mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database with no collection yet holds nothing an upgrade step would change, no index
    to compare a TTL with: its start lists the collections once and reads nothing else but
    the key check (and the secrets sealed since, by another process starting beside it),
    and records every upgrade step in one write. (Every test starts the app on a new
    database: each command is ~2 ms of CPU between the test process and its database, over
    some 2,200 tests.)"""
    sent = _recording(monkeypatch)
    async with open_services(settings, mongodb_uri=mongodb_uri) as services:
        start = list(sent.commands)
        assert await services.store.db["migrations"].count_documents({})
    reads = [c for c in start if c[0] in ("find", "aggregate", "$unionWith", "listIndexes")]
    # the key check (none there yet), and the secrets sealed since this start looked (none),
    # every collection of them read in one round trip
    first, *others = (*FIELDS, *LISTS)
    assert reads == [
        ("find", "meta"),
        ("aggregate", first),
        *(("$unionWith", name) for name in others),
    ], reads
    assert [c for c in start if c[1] == "migrations"] == [("insert", "migrations")]
    assert {name for name, target in start if target == "entities"} == {"createIndexes"}
    assert start.count(("listCollections", "")) == 1


async def test_a_start_on_a_database_whose_upgrades_are_done_reads_their_markers_at_once(
    settings: Settings, mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart (every process after the first, every one-shot command) reads the one-time
    upgrade steps' markers in one query and starts none of the steps (each read its own
    marker: seven round trips at every start). A step not recorded still runs: one marker
    removed, that step reads it again, runs and records it."""
    await _markers(settings, mongodb_uri)  # the first start: every step recorded
    sent = _recording(monkeypatch)
    async with open_services(settings, mongodb_uri=mongodb_uri):
        pass
    assert [c for c in sent.commands if c[1] == "migrations"] == [("find", "migrations")]
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri)
    try:
        await client[settings.database]["migrations"].delete_one({"_id": "names.composed"})
        sent.commands.clear()
        assert "names.composed" in await _markers(settings, mongodb_uri)
        assert [c for c in sent.commands if c[1] == "migrations"] == [
            ("find", "migrations"),  # every marker
            ("find", "migrations"),  # the folding step's, run beside the one missing
            ("find", "migrations"),  # the composing step's
            ("update", "migrations"),  # recorded
            ("find", "migrations"),  # `_markers`' own read
        ]
    finally:
        await client.close()


async def test_a_new_database_records_every_upgrade_step_a_database_from_before_runs(
    settings: Settings, mongodb_uri: str
) -> None:
    """The steps recorded at once on a new database are those an upgraded database's start
    runs and records one by one: a step left out would run on every later start's database
    (correct, not free), and one recorded but not run would never run."""
    before = replace(settings, database=f"{settings.database}_before")
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri)
    try:
        await client[before.database]["events"].insert_one({"tenant": "t"})  # not new
        assert await _markers(settings, mongodb_uri) == await _markers(before, mongodb_uri)
    finally:
        await client.drop_database(before.database)
        await client.close()


@pytest.mark.parametrize(
    ("collection", "path"),
    [*((name, path) for name, paths in FIELDS.items() for path in paths), *LISTS.items()],
)
async def test_a_key_check_with_none_stored_tries_the_key_on_the_secrets_of_each_collection(
    settings: Settings, mongodb_uri: str, collection: str, path: str
) -> None:
    """Where no key check is stored yet, a key is tried on the secrets already sealed, in
    whichever collection they are (read in one round trip: `sealed.sample`): one that opens
    none of them is refused, the key they were sealed with passes."""
    sealed = SecretBox(KeyRing([SECRET_KEY])).seal("x")
    value: Any = sealed if collection in FIELDS else [{"id": "s1", "sealed": sealed}]
    for part in reversed(path.split(".")):
        value = {part: value}
    async with open_store(settings, mongodb_uri) as store:
        await store.db[collection].insert_one({"tenant": "default", "name": "n", **value})
        with pytest.raises(ConfigError, match="GATEWAY_SECRET_KEY"):
            await check_secret_key(store, SecretBox(KeyRing(["another-key-of-another-host-000"])))
        assert await store.key_check.sealed() is None
        await check_secret_key(store, SecretBox(KeyRing([SECRET_KEY])))
        assert await store.key_check.sealed() is not None


@pytest.mark.parametrize(
    ("collection", "path"),
    [*((name, path) for name, paths in FIELDS.items() for path in paths), *LISTS.items()],
)
async def test_a_key_check_with_none_stored_tries_a_secret_stored_after_documents_holding_none(
    settings: Settings, mongodb_uri: str, collection: str, path: str
) -> None:
    """Documents holding no sealed value at the field (an unsigned trigger's `auth.secrets:
    []`, a partner's `secrets_sealed: null`) stored before the one that does: the key is
    still tried on that one's secret, and a wrong key refused (the sample was the first three
    documents having the field, none of them sealed, and any key passed and was sealed as
    the key check)."""
    sealed = SecretBox(KeyRing([SECRET_KEY])).seal("x")

    def at(path: str, value: Any) -> dict[str, Any]:
        for part in reversed(path.split(".")):
            value = {part: value}
        return dict(value)

    full: Any = sealed if collection in FIELDS else [{"id": "s1", "sealed": sealed}]
    empty: Any = None if collection in FIELDS else []
    async with open_store(settings, mongodb_uri) as store:
        for i in range(4):
            await store.db[collection].insert_one(
                {"tenant": "default", "name": f"none{i}", **at(path, empty)}
            )
        await store.db[collection].insert_one({"tenant": "default", "name": "n", **at(path, full)})
        with pytest.raises(ConfigError, match="GATEWAY_SECRET_KEY"):
            await check_secret_key(store, SecretBox(KeyRing(["another-key-of-another-host-000"])))
        assert await store.key_check.sealed() is None
        await check_secret_key(store, SecretBox(KeyRing([SECRET_KEY])))
        assert await store.key_check.sealed() is not None


async def test_a_key_check_on_a_new_database_tries_the_key_on_secrets_sealed_since_it_looked(
    settings: Settings, mongodb_uri: str
) -> None:
    """Two processes start at once on an empty database with different keys; the first one
    serves before its key check passed (its clock not measured yet) and seals a partner's
    credential. The second, whose start found no collection, skipped the stored secrets and
    sealed the check under its wrong key: the credential was lost to every process after."""
    async with open_store(settings, mongodb_uri) as late:
        first = SecretBox(KeyRing([SECRET_KEY]))
        await late.db["partners"].insert_one(
            {"tenant": "default", "name": "ERP", "auth_sealed": first.seal({"token": "x"})}
        )
        assert await late.key_check.sealed() is None
        with pytest.raises(ConfigError, match="GATEWAY_SECRET_KEY"):
            await check_secret_key(late, SecretBox(KeyRing(["another-key-of-another-host-000"])))
