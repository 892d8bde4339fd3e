"""What the database plans for each query the gateway sends: a command listener (registered
for every client made while it listens) that, for each new (collection, filter shape) of a
find, count, distinct, aggregation (its first `$match`), update, delete, findAndModify or
client-level `bulkWrite`, asks the same database for the `explain` of a find with that
filter, and notes the plan and the line of `gateway/` that sent it.

SecantusDB's `explain` is not the whole story. Its executor reads through an index a filter
whose every field one index holds (`{tenant, type, _id}`: `by_type`); for any other it reads
through an index the first field, in the filter's order, that an index serves alone, and
matches the rest on the documents that read fetched: `{_id, tenant}` is a point lookup (its
`_id`), `{tenant, type, fk, data.status}` reads every entity of the tenant (its `tenant`,
the first field an index leads with), while `explain` calls both a COLLSCAN. A filter with
an operator at its top (`$or`, `$and`, `$nor`) it matches against every document of the
collection, and so the write of a `findAndModify`, whatever its filter (`{_id, $and:
[filter]}`; `explain` tells its find): on SecantusDB such a command is planned a COLLSCAN
here. (secantus/storage.py `_try_index_id_keys`; measured: a `find_one` by `{_id, tenant}`
took 2 ms on 20,000 documents, one by a field no index has 1,000 ms.) So
for a COLLSCAN `explain` reports, each field alone is explained too, in order, and the first
one an index serves is the plan (`Plan.via`). A scan's cost grows with the collection (every
tenant's data), a read of the tenant's with the tenant's: tests/test_query_plans.py keeps
the hot paths off both.

Two uses:
- `RABBOT_PLAN_AUDIT=/path/plans.jsonl pytest ...`: every test process (xdist's too) appends
  one JSON line per new (collection, shape) to the file (tests/conftest.py wires it);
- the `query_plans` fixture: the plans of the queries one test's gateway sends.

The listener runs in the test process: the worker and server subprocesses some tests start
(`python -m gateway worker`, `gateway serve`) are not heard, but most tests run the same
store code in-process. The explain blocks the event loop for a moment, once per new shape."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import MongoClient, monitoring
from pymongo.errors import PyMongoError

AUDIT_ENV = "RABBOT_PLAN_AUDIT"
COMMANDS = frozenset(
    {"find", "count", "distinct", "aggregate", "update", "delete", "findAndModify", "bulkWrite"}
)
GATEWAY = f"{os.sep}gateway{os.sep}"
TESTS = f"{os.sep}tests{os.sep}"


def shape(value: Any) -> Any:
    """A filter with its values dropped: its keys and operators, in order. An `$in` or
    `$nin` list is one value (its length is no shape); `$and`/`$or` keep their clauses."""
    if isinstance(value, Mapping):
        return {key: shape(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        if value and all(isinstance(inner, Mapping) for inner in value):
            return [shape(inner) for inner in value]
        return "[…]"
    return "·"


def shape_text(filter_: Mapping[str, Any]) -> str:
    return json.dumps(shape(filter_), ensure_ascii=False)


def filters_of(name: str, command: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The filters a command reads its documents with (an aggregation's: its first stage's,
    when that is a `$match`; one without reads the whole collection: `{}`)."""
    if name == "find":
        return [command.get("filter") or {}]
    if name in ("count", "distinct", "findAndModify"):
        return [command.get("query") or {}]
    if name == "aggregate":
        pipeline = command.get("pipeline") or []
        first = pipeline[0] if pipeline else {}
        if "$match" in first:
            return [first["$match"]]
        if set(first) & {"$changeStream", "$collStats", "$indexStats", "$documents", "$currentOp"}:
            return []
        return [{}]
    if name == "update":
        return [statement.get("q") or {} for statement in command.get("updates", ())]
    if name == "delete":
        return [statement.get("q") or {} for statement in command.get("deletes", ())]
    return []


def _reads(event: monitoring.CommandStartedEvent) -> list[tuple[str, Mapping[str, Any]]]:
    """(collection, filter) of each read or write of a command; a client-level `bulkWrite`
    (gateway/store/group_commit.py) names its collections in `nsInfo`."""
    command = event.command
    if event.command_name == "bulkWrite":
        namespaces = [info["ns"].partition(".")[2] for info in command.get("nsInfo", ())]
        return [
            (namespaces[op.get("update", op.get("delete", 0))], op.get("filter") or {})
            for op in command.get("ops", ())
            if "filter" in op
        ]
    collection = command.get(event.command_name)
    if not isinstance(collection, str):
        return []
    return [(collection, filter_) for filter_ in filters_of(event.command_name, command)]


def winning(plan: Mapping[str, Any]) -> tuple[str, str | None]:
    """The plan's reading stage (COLLSCAN, IXSCAN, IDHACK, …) and its index: a COLLSCAN
    anywhere is the plan's stage."""
    stages: list[tuple[str, str | None]] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            if "stage" in node and node["stage"] in ("COLLSCAN", "IXSCAN", "IDHACK", "EOF"):
                stages.append((node["stage"], node.get("indexName")))
            for key in ("inputStage", "inputStages", "queryPlan", "winningPlan"):
                if key in node:
                    walk(node[key])
        elif isinstance(node, list):
            for inner in node:
                walk(inner)

    walk(plan)
    for stage in stages:
        if stage[0] == "COLLSCAN":
            return stage
    return stages[0] if stages else ("UNKNOWN", None)


_DRIVER_WRAPPER = os.path.join("gateway", "store", "client.py")
_DRIVER_WRAPPERS = frozenset({"_retry_internal"})


def _plan(db: Any, collection: str, filter_: Mapping[str, Any]) -> tuple[str, str | None]:
    answer = db.command(
        "explain", {"find": collection, "filter": filter_}, verbosity="queryPlanner"
    )
    return winning(answer.get("queryPlanner", {}).get("winningPlan", {}))


def sender() -> str | None:
    """The innermost line of the gateway's own code on the stack (`file:line function`)."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.endswith(_DRIVER_WRAPPER) and frame.name in _DRIVER_WRAPPERS:
            continue  # the client's gate around the driver (store/client.py)
        if GATEWAY in frame.filename and "site-packages" not in frame.filename:
            name = frame.filename[frame.filename.rindex(GATEWAY) + 1 :]
            return f"{name}:{frame.lineno} {frame.name}"
    for frame in reversed(traceback.extract_stack()):  # a test's own query
        if TESTS in frame.filename and not frame.filename.endswith("query_plans.py"):
            name = frame.filename[frame.filename.rindex(TESTS) + 1 :]
            return f"{name}:{frame.lineno} {frame.name}"
    return None  # a task the gateway started (`asyncio.gather`): its stack starts there


@dataclass
class Plan:
    collection: str
    shape: str
    stage: str
    index: str | None
    via: str | None
    """The one clause the index was read for, the rest matched on what it fetched (None: the
    whole filter planned). `_id`: a point lookup; `tenant`: every document of the tenant."""
    example: str
    sent_by: str | None
    command: str

    @property
    def scans(self) -> bool:
        """Whether it reads the whole collection (every tenant's documents)."""
        return self.stage == "COLLSCAN"

    @property
    def reads_the_tenant(self) -> bool:
        """Whether it reads every document of the tenant (its one indexed clause `tenant`)."""
        return self.via == "tenant"


@dataclass
class PlanListener(monitoring.CommandListener):
    """The plans of the queries sent while it listens, one per (collection, shape)."""

    out: Path | None = None
    plans: dict[tuple[str, str], Plan] = field(default_factory=dict)
    _clients: dict[tuple[str, int | None], MongoClient[Any]] = field(default_factory=dict)
    _servers: dict[tuple[str, int], bool] = field(default_factory=dict)  # SecantusDB's?
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in COMMANDS:
            return
        for collection, filter_ in _reads(event):
            if collection.startswith("system."):
                continue
            key = (collection, shape_text(filter_))
            if key in self.plans:
                continue
            plan = self._explain(event, collection, filter_)
            if plan is None:
                continue
            self.plans[key] = plan
            if self.out is not None:
                self._write(plan)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def _explain(
        self, event: monitoring.CommandStartedEvent, collection: str, filter_: Mapping[str, Any]
    ) -> Plan | None:
        host, port = event.connection_id
        with self._lock:
            client = self._clients.get((host, port))
            if client is None:
                client = MongoClient(
                    host, port, directConnection=True, timeoutMS=10_000, tz_aware=True
                )
                self._clients[(host, port)] = client
        try:
            stage, index = _plan(client[event.database_name], collection, filter_)
            via = None
            if event.command_name == "findAndModify" and self._secantus(client):
                # Its write is matched against the whole collection, whatever its filter:
                # SecantusDB finds the document through the filter's plan, then writes with
                # `{_id, $and: [filter]}`, an operator at its top (secantus/commands.py
                # `_find_and_modify_impl`; measured: a delivery's `finish` took 14 ms at 100
                # deliveries, 465 ms at 10,000). `explain` tells only the find.
                stage, index = "COLLSCAN", None
            elif stage == "COLLSCAN" and not any(key.startswith("$") for key in filter_):
                # What the executor does then (and `explain` does not tell): the first clause,
                # in the filter's order, that an index serves alone is read through it, the
                # rest matched on the documents it fetched.
                for key, clause in filter_.items():
                    alone, alone_index = _plan(
                        client[event.database_name], collection, {key: clause}
                    )
                    if alone != "COLLSCAN":
                        stage, index, via = alone, alone_index, key
                        break
        except PyMongoError:  # a test that stopped or froze the server: no plan to tell
            return None
        return Plan(
            collection=collection,
            shape=shape_text(filter_),
            stage=stage,
            index=index,
            via=via,
            example=json.dumps(filter_, default=str, ensure_ascii=False)[:400],
            sent_by=sender(),
            command=event.command_name,
        )

    def _secantus(self, client: MongoClient[Any]) -> bool:
        """Whether the server is SecantusDB (it names itself in `buildInfo`)."""
        key = (client.address or ("", 0))[0], (client.address or ("", 0))[1]
        known = self._servers.get(key)
        if known is None:
            known = "secantusVersion" in client.admin.command("buildInfo")
            self._servers[key] = known
        return known

    def _write(self, plan: Plan) -> None:
        assert self.out is not None
        line = json.dumps(plan.__dict__, ensure_ascii=False) + "\n"
        # One write of one line, appended: the test processes of a run share the file.
        fd = os.open(self.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def scans(self, *collections: str) -> list[Plan]:
        """The plans that read the whole collection, of `collections` (of all, without)."""
        return [
            plan
            for plan in self.plans.values()
            if plan.scans and (not collections or plan.collection in collections)
        ]

    def of(self, collection: str) -> list[Plan]:
        return [plan for plan in self.plans.values() if plan.collection == collection]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def register_audit() -> PlanListener | None:
    """The run's audit listener, when `RABBOT_PLAN_AUDIT` names its file."""
    out = os.environ.get(AUDIT_ENV)
    if not out:
        return None
    listener = PlanListener(out=Path(out))
    monitoring.register(listener)
    return listener


@contextlib.contextmanager
def listening() -> Iterator[PlanListener]:
    """A listener heard by every client made until the end (the app's, the services')."""
    listener = PlanListener()
    commands = monitoring._LISTENERS.command_listeners
    commands.append(listener)
    try:
        yield listener
    finally:
        commands.remove(listener)
        listener.close()
