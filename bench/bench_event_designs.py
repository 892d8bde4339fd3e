"""What storing an entity write's event costs the embedded database, design by design (issue 12).

    python bench/bench_event_designs.py [--requests 3000] [--writers 16] [--repeat 1] [--json FILE]

One embedded SecantusDB (gateway.store.embedded.EmbeddedServer), a fleet of 1,000 vehicles
shaped as the gateway stores them (bench/_common.py `position_doc`, the gateway's filter keys)
in an `entities` collection with the gateway's own indexes (gateway/store/entities.py
INDEXES) and an `events` collection with its (gateway/store/events.py INDEXES), a fresh
database per design. `--writers` concurrent writers each own a share of the fleet (one write
at a time per vehicle, as the gateway's lanes do) and write `--requests` requests in all; a
request is one vehicle's new data and its event (`vehicle.position`):

- A, outbox (the gateway today): the gateway's own `EntityStore.replace_data` through its
  `GroupCommit` (journaled, rounds sealed) pushes the event into the entity's outbox; a
  relay alongside, as `gateway/events.py` runs it (passes 0.1 s apart, 100 outboxes a
  batch), reads the waiting outboxes, inserts their events and drains them (`EntityStore.
  drain_outboxes`: one more update of each entity); the events journaled (since
  2026-12-04), the drain not;
- B, beside, one round: the entity update (no outbox) and the event's insert in the same
  client-level `bulkWrite` round of concurrent requests, then the journaled seal (as
  `group_commit.py` does); no relay. Not "stored with the write": SecantusDB runs each
  operation of the command on its own, so a crash can keep one without the other;
- C, beside, a transaction per round: the round's entity updates and event inserts in one
  multi-document transaction, then the journaled seal (SecantusDB's `commitTransaction`
  ignores `j`); no relay;
- C+mark, C with a `pending` mark on each event (sparse index) and a relay that clears it
  after the fan-out (one update per batch): what a relay needs to find new events durably
  when they are not in an outbox;
- C-idx, C without the entity index only the outbox needs (`outbox_pending_by_shard`);
- U, the entity update alone in the same rounds and seal, no event: the floor of any design
  that stores the gateway's entity document with its indexes;
- D, Node-RED's equivalent (the floor): one upsert of the vehicle by plate per request, one
  command each, in a collection with that one unique index.

Every measurement window ends when every event is stored and relayed. Prints, per design,
the database server's CPU per request (/proc/PID/stat, relay included), this process's, and
requests/s, with each as a ratio to D and to A in the same run, and the database's busy cores
(CPU per request × requests/s: well below one core, the database was not what held the rate
back). `--repeat 2` runs the designs twice, alternating, and reports the median of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bson import ObjectId
from pymongo import ASCENDING, AsyncMongoClient, IndexModel, InsertOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from bench._common import PLATES, cpu_seconds, position_doc
from gateway.events import event_document
from gateway.store.client import Doc, unjournaled
from gateway.store.embedded import EmbeddedServer
from gateway.store.entities import INDEXES as ENTITY_INDEXES
from gateway.store.entities import EntityStore, filter_keys
from gateway.store.events import INDEXES as EVENT_INDEXES
from gateway.store.events import EventStore
from gateway.store.group_commit import SEALS, GroupCommit

TENANT = "bench"
PENDING_EVENTS = IndexModel([("pending", ASCENDING)], name="pending", sparse=True)
OUTBOX_INDEX = "outbox_pending_by_shard"  # only the outbox needs it
NATURAL_KEY = IndexModel([("plate", ASCENDING)], unique=True)  # Node-RED's `vehicles`
Client = AsyncMongoClient[Doc]


def outbox_entry(data: Doc) -> Doc:
    """An outbox entry as gateway/entities.py `_event` makes it for a position change."""
    return {
        "id": ObjectId(),
        "type": "vehicle.position",
        "occurred_at": datetime.now(UTC),
        "entity_type": "vehicle",
        "data": data,
        "changes": [{"field": "last_position.lat", "old": -23.5, "new": -23.6}],
        "origin": {"kind": "trigger", "id": "trg_bench"},
    }


def now() -> datetime:
    return datetime.now(UTC)


class Rounds:
    """The group commit of `group_commit.py`, but a request hands over all its writes at
    once and they leave in the same round: at most two rounds in flight, each one
    client-level `bulkWrite` (even alone: 16 writers leave few rounds of one request), or
    (`transaction`) the round in one transaction, followed by the journaled seal: SecantusDB
    honours `j: true` neither on a bulkWrite's operations nor on `commitTransaction` (its
    `_commit_transaction` ignores the write concern), so without the seal neither would be
    journaled before the answer."""

    def __init__(self, client: Client, db: AsyncDatabase[Doc], transaction: bool) -> None:
        self._client, self._db, self._transaction = client, db, transaction
        self._queue: list[tuple[list[Any], asyncio.Future[None]]] = []
        self._in_flight = 0
        self.commands = 0  # round trips: a round's bulkWrite, its commit, its seal

    async def write(self, models: list[Any]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((models, done))
        if self._in_flight < 2:
            self._start()
        await done

    def _start(self) -> None:
        self._in_flight += 1
        batch, self._queue = self._queue, []
        asyncio.create_task(self._round(batch)).add_done_callback(self._ended)

    def _ended(self, _: asyncio.Task[None]) -> None:
        self._in_flight -= 1
        if self._queue and self._in_flight < 2:
            self._start()

    async def _round(self, batch: list[tuple[list[Any], asyncio.Future[None]]]) -> None:
        models = [model for request, _ in batch for model in request]
        try:
            self.commands += 1
            if self._transaction:
                self.commands += 1  # its commitTransaction
                async with self._client.start_session() as session:
                    async with await session.start_transaction():
                        await self._client.bulk_write(models, ordered=False, session=session)
            else:
                await self._client.bulk_write(models, ordered=False)
            self.commands += 1
            await self._db[SEALS].update_one({"_id": "bench"}, {"$inc": {"n": 1}}, upsert=True)
        except Exception as exc:
            return self._settle(batch, exc)
        self._settle(batch, None)

    @staticmethod
    def _settle(batch: list[tuple[list[Any], asyncio.Future[None]]], exc: Exception | None) -> None:
        for _, done in batch:
            if exc is None:
                done.set_result(None)
            else:
                done.set_exception(exc)


class Design:
    """One fresh database: the fleet, its indexes, and this design's request and relay."""

    def __init__(self, client: Client, name: str, seed: int) -> None:
        self.client, self.name = client, name
        self.db = client[f"design_{name.replace('+', '_')}_{seed}"]
        self.entities = self.db["entities"]
        self.events = self.db["events"]
        self.rng = random.Random(seed)
        self.current: dict[int, Doc] = {}
        self.relay_rounds = 0
        self.entity_indexes = ENTITY_INDEXES
        self.has_events = True

    async def setup(self, mark: bool = False) -> None:
        await self.entities.create_indexes(self.entity_indexes)
        await self.events.create_indexes(EVENT_INDEXES + ([PENDING_EVENTS] if mark else []))
        now = datetime.now(UTC)
        for i, plate in enumerate(PLATES):
            data = self.data(i)
            self.current[i] = {
                "_id": ObjectId(), "tenant": TENANT, "type": "vehicle", "nk": plate, "data": data,
                "fk": filter_keys("vehicle", data), "rev": 1, "created_at": now, "updated_at": now,
            }  # fmt: skip
        await self.entities.insert_many(list(self.current.values()))

    def data(self, i: int) -> Doc:
        _, fields = position_doc(self.rng, TENANT)
        return {**fields["data"], "plate": PLATES[i]}

    async def request(self, i: int) -> None:
        raise NotImplementedError

    async def relay(self, stop: asyncio.Event) -> None:
        """Runs beside the writers until `stop`, then until nothing waits."""

    def round_trips(self) -> int:
        """Commands the requests sent: bulkWrites, commits, seals (D: not counted)."""
        return 0

    def entity_update(self, i: int) -> tuple[Doc, Doc, Doc]:
        """(current, its filter, the update of its data): what replace_data writes, no outbox."""
        current, data = self.current[i], self.data(i)
        update = {
            "$set": {"data": data, "fk": filter_keys("vehicle", data), "updated_at": now()},
            "$inc": {"rev": 1},
        }
        return current, {"_id": current["_id"], "rev": current["rev"]}, update


async def relay_passes(stop: asyncio.Event, once: Callable[[], Awaitable[int]]) -> int:
    """The relay's loop: a pass at most every 0.1 s while writers run, then until idle."""
    passes = 0
    while not stop.is_set():
        started = time.perf_counter()
        passes += 1
        if not await once():
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except TimeoutError:
                pass
        await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - started)))
    while await once():
        passes += 1
    return passes


class Outbox(Design):
    """A: the gateway's own store code, unchanged."""

    async def setup(self, mark: bool = False) -> None:
        await super().setup()
        self.commits = GroupCommit(self.client)
        self.store = EntityStore(
            self.entities, self.commits, GroupCommit(self.client, journaled=False), self.commits
        )
        self.event_store = EventStore(self.events)

    async def request(self, i: int) -> None:
        current, data = self.current[i], self.data(i)
        doc = await self.store.replace_data(TENANT, current, data, [outbox_entry(data)])
        assert doc is not None, "lost a write"
        self.current[i] = doc

    def round_trips(self) -> int:
        return self.commits.round_trips

    async def relay(self, stop: asyncio.Event) -> None:
        async def once() -> int:
            docs = await self.store.pending_outboxes(100)
            now = datetime.now(UTC)
            events = [event_document(TENANT, d, e, now) for d in docs for e in d["outbox"]]
            await self.event_store.insert_many(events)
            await self.store.drain_outboxes([(d, [e["id"] for e in d["outbox"]]) for d in docs])
            return len(docs)

        self.relay_rounds = await relay_passes(stop, once)


class Beside(Design):
    """B, C and its variants: the event in the `events` collection, written in the request's
    round (U: no event at all)."""

    def __init__(
        self,
        client: Client,
        name: str,
        seed: int,
        *,
        transaction: bool,
        mark: bool = False,
        event: bool = True,
        outbox_index: bool = True,
    ) -> None:
        super().__init__(client, name, seed)
        self.rounds = Rounds(client, self.db, transaction)
        self.mark = mark
        self.has_events = event
        if not outbox_index:
            self.entity_indexes = [i for i in ENTITY_INDEXES if i.document["name"] != OUTBOX_INDEX]
            assert len(self.entity_indexes) == len(ENTITY_INDEXES) - 1

    def round_trips(self) -> int:
        return self.rounds.commands

    async def request(self, i: int) -> None:
        current, query, update = self.entity_update(i)
        entry = outbox_entry(update["$set"]["data"])
        event = event_document(
            TENANT, current, {**entry, "entity_rev": current["rev"] + 1}, entry["occurred_at"]
        )
        if self.mark:
            event["pending"] = True
        writes: list[Any] = [UpdateOne(query, update, namespace=self.entities.full_name)]
        if self.has_events:
            writes.append(InsertOne(event, namespace=self.events.full_name))
        await self.rounds.write(writes)
        self.current[i] = {**current, **update["$set"], "rev": current["rev"] + 1}

    async def relay(self, stop: asyncio.Event) -> None:
        if not self.mark:
            return
        relayed = unjournaled(self.events)

        async def once() -> int:
            found = await relayed.find({"pending": True}, {"_id": 1}).limit(100).to_list(100)
            if found:
                ids = [d["_id"] for d in found]
                await relayed.update_many({"_id": {"$in": ids}}, {"$unset": {"pending": ""}})
            return len(found)

        self.relay_rounds = await relay_passes(stop, once)


class NodeRed(Design):
    """D: one upsert of the vehicle's data by plate per request (Node-RED's flow)."""

    async def setup(self, mark: bool = False) -> None:
        self.has_events = False
        self.vehicles = self.db["vehicles"]
        await self.vehicles.create_indexes([NATURAL_KEY])
        await self.vehicles.insert_many(
            [{"plate": p, **self.data(i)} for i, p in enumerate(PLATES)]
        )

    async def request(self, i: int) -> None:
        data = self.data(i)
        await self.vehicles.update_one({"plate": data["plate"]}, {"$set": data}, upsert=True)


def designs(client: Client, seed: int) -> dict[str, Callable[[], Design]]:
    return {
        "A": lambda: Outbox(client, "A", seed),
        "B": lambda: Beside(client, "B", seed, transaction=False),
        "C": lambda: Beside(client, "C", seed, transaction=True),
        "C+mark": lambda: Beside(client, "C+mark", seed, transaction=True, mark=True),
        "C-idx": lambda: Beside(client, "C-idx", seed, transaction=True, outbox_index=False),
        "U": lambda: Beside(client, "U", seed, transaction=False, event=False),
        "D": lambda: NodeRed(client, "D", seed),
    }


TITLES = {
    "A": "outbox in the entity + relay drain (today)",
    "B": "beside, same bulkWrite round + seal",
    "C": "beside, one transaction per round",
    "C+mark": "C + relay mark on each event",
    "C-idx": "C without the outbox's entity index",
    "U": "the entity update alone, rounds + seal",
    "D": "Node-RED: one upsert by plate",
}


async def transactions_work(client: Client) -> bool:
    """Whether the server commits a client-level bulkWrite inside a transaction (and keeps
    nothing of an aborted one)."""
    coll = client["probe"]["t"]
    await coll.insert_one({"_id": 0})
    try:
        async with client.start_session() as session:
            async with await session.start_transaction():
                await client.bulk_write(
                    [InsertOne({"_id": 1}, namespace=coll.full_name)], session=session
                )
                await session.abort_transaction()
        aborted_left = await coll.count_documents({"_id": 1})
        async with client.start_session() as session:
            async with await session.start_transaction():
                await client.bulk_write(
                    [InsertOne({"_id": 2}, namespace=coll.full_name)], session=session
                )
        return aborted_left == 0 and await coll.count_documents({"_id": 2}) == 1
    except Exception as exc:  # any refusal means no
        print(f"transactions: {type(exc).__name__}: {exc}")
        return False


async def measure(design: Design, requests: int, writers: int, db_pid: int) -> dict[str, Any]:
    await design.setup(mark=isinstance(design, Beside) and design.mark)
    per_writer = requests // writers
    order = random.Random(3)

    async def writer(w: int) -> None:
        mine = list(range(w, len(PLATES), writers))
        for _ in range(per_writer):
            await design.request(order.choice(mine))

    stop = asyncio.Event()
    db0, cli0, t0 = cpu_seconds(db_pid), time.process_time(), time.perf_counter()
    relay = asyncio.create_task(design.relay(stop))
    await asyncio.gather(*(writer(w) for w in range(writers)))
    written = time.perf_counter() - t0
    stop.set()
    await relay
    elapsed = time.perf_counter() - t0
    done = per_writer * writers
    db_us = (cpu_seconds(db_pid) - db0) / done * 1e6
    client_us = (time.process_time() - cli0) / done * 1e6
    events = await design.events.count_documents({})
    if isinstance(design, Beside) and design.mark:
        assert await design.events.count_documents({"pending": True}) == 0
    if design.has_events:
        assert events == done, f"{design.name}: {events} events for {done} requests"
    return {
        "design": design.name, "db_us": db_us, "client_us": client_us, "rate": done / elapsed,
        "write_rate": done / written, "requests": done, "events": events,
        "relay_passes": design.relay_rounds,
        "round_trips": design.round_trips(),
    }  # fmt: skip


async def run(uri: str, db_pid: int, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    client: Client = AsyncMongoClient(uri, tz_aware=True, journal=True)
    try:
        names = list(TITLES)
        if not await transactions_work(client):
            print("the server has no working transactions: C and its variants left out")
            names = [n for n in names if not n.startswith("C")]
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for r in range(args.repeat):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                result = await measure(
                    designs(client, r)[name](), args.requests, args.writers, db_pid
                )
                runs[name].append(result)
                print(
                    f"  run {r + 1} {name:<7} database {result['db_us']:6,.0f} µs, client "
                    f"{result['client_us']:5,.0f} µs per request; {result['rate']:5,.0f} req/s "
                    f"(writes alone {result['write_rate']:5,.0f}/s)",
                    flush=True,
                )
        return {
            name: {**results[0], **{k: statistics.median(r[k] for r in results)
                                    for k in ("db_us", "client_us", "rate", "write_rate")}}
            for name, results in runs.items()
        }  # fmt: skip
    finally:
        await client.close()


def report(results: dict[str, dict[str, Any]], writers: int) -> None:
    a, d = results["A"], results["D"]
    print(f"\n{writers} writers; per request: the vehicle's data and one event (D: no event)")
    print(
        f"{'design':<46} {'DB µs/req':>9} {'÷D':>6} {'÷A':>6} {'req/s':>7} {'÷D':>6} {'÷A':>6}"
        f" {'client µs':>9} {'DB cores':>8}"
    )
    for name, r in results.items():
        busy = r["db_us"] * r["rate"] / 1e6
        print(
            f"{name + ' ' + TITLES[name]:<46} {r['db_us']:9,.0f} {r['db_us'] / d['db_us']:6.2f} "
            f"{r['db_us'] / a['db_us']:6.2f} {r['rate']:7,.0f} {r['rate'] / d['rate']:6.2f} "
            f"{r['rate'] / a['rate']:6.2f} {r['client_us']:9,.0f} {busy:8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-event-designs-") as tmp:
        server = EmbeddedServer(Path(tmp) / "db")
        server.start()
        try:
            assert server.pid is not None
            print(f"embedded SecantusDB pid {server.pid}; {args.requests} requests a design")
            results = asyncio.run(run(server.uri, server.pid, args))
        finally:
            server.stop()
    report(results, args.writers)
    if args.json:
        args.json.write_text(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
