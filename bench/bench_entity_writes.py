"""Where an entity write's events go, measured on the embedded database (issue 12): inside the
entity document (the outbox the gateway uses) or beside it, in the `events` collection, in
the same batch.

    python bench/bench_entity_writes.py [--writes 3000] [--batch 16] [--json FILE]

Every design writes the same thing per request: one vehicle's data (1,000 vehicles, the
gateway's entity indexes) and two events (the gateway's event indexes), in batches of
`--batch` concurrent requests, journaled (j: true). And every design must then hand each new
event to the relay's fan-out (deliveries, flow starts) durably, so its cost counts too (the
relay's own writes are not journaled, as in the gateway):

- outbox: one update per entity pushes the events into its outbox (atomic on any MongoDB);
  the relay reads pending outboxes, inserts the events, and drains each outbox (one write);
- beside, transaction: the entity update and the events' insert in one transaction per
  batch (replica sets only); the relay finds new events by a `pending` mark (sparse index)
  and clears it (one write per event);
- beside, no transaction: the same without the transaction. Not "stored with the write": a
  crash between the two commands leaves a write without its events (or, events first,
  events of a write that never happened);
- beside, no relay mark: the transaction alone, a lower bound for a design that creates
  deliveries inside the request and needs nothing after it (flows hook onto the relay).

Prints, per design, the database's CPU per request (write + relay), the client's, and the
write rate; SPEC §8's table says what each kind of write costs this server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bson import ObjectId
from pymongo import AsyncMongoClient, IndexModel, UpdateOne, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase

from bench._common import PLATES, cpu_seconds
from gateway.store.embedded import EmbeddedServer
from gateway.store.entities import INDEXES as ENTITY_INDEXES
from gateway.store.events import INDEXES as EVENT_INDEXES

Doc = dict[str, Any]
PENDING_EVENTS = IndexModel([("pending", 1)], name="pending", sparse=True)


def vehicle(i: int, rng: random.Random) -> Doc:
    fix = {"latitude": -23.5 + rng.random(), "longitude": -46.6 + rng.random()}
    return {"plate": PLATES[i], "last_position": {**fix, "fix_time": datetime.now(UTC)}}


def event(kind: str, entity: Doc, data: Doc, position: int) -> Doc:
    return {
        "_id": ObjectId(),
        "tenant": "bench",
        "type": kind,
        "occurred_at": datetime.now(UTC),
        "entity": {"type": "vehicle", "id": str(entity["_id"]), "key": entity["nk"]},
        "position": position,
        "data": data,
        "changes": [{"field": "last_position.latitude", "old": 1.0, "new": 2.0}],
        "origin": {"kind": "trigger", "id": "trg_bench"},
    }


class Design:
    def __init__(self, db: AsyncDatabase[Doc], client: AsyncMongoClient[Doc], name: str) -> None:
        self.db, self.client, self.name = db, client, name
        self.rng = random.Random(1)
        self.entities: dict[int, Doc] = {}

    async def setup(self, mark: bool) -> None:
        await self.db["entities"].create_indexes(ENTITY_INDEXES)
        await self.db["events"].create_indexes(EVENT_INDEXES + ([PENDING_EVENTS] if mark else []))
        now = datetime.now(UTC)
        for i in range(1000):
            self.entities[i] = {
                "_id": ObjectId(), "tenant": "bench", "type": "vehicle", "nk": PLATES[i],
                "data": vehicle(i, self.rng), "fk": [f"plate={PLATES[i]}"], "rev": 1,
                "created_at": now, "updated_at": now,
            }  # fmt: skip
        await self.db["entities"].insert_many(list(self.entities.values()))

    def write(self, i: int, outbox: bool) -> tuple[UpdateOne, list[Doc]]:
        entity = self.entities[i]
        data = vehicle(i, self.rng)
        events = [
            event("entity.updated", entity, data, 0),
            event("vehicle.position", entity, data, 1),
        ]
        update: Doc = {"$set": {"data": data, "updated_at": datetime.now(UTC)}, "$inc": {"rev": 1}}
        if outbox:
            update["$push"] = {"outbox": {"$each": events}}
            update["$min"] = {"pending": datetime.now(UTC)}
        query = {"_id": entity["_id"], "rev": entity["rev"]}
        entity["rev"] += 1
        return UpdateOne(query, update), events


async def outbox(design: Design, batch: list[int]) -> None:
    ops = [design.write(i, outbox=True)[0] for i in batch]
    await design.db["entities"].bulk_write(ops, ordered=False)


def relayed(design: Design, name: str) -> Any:
    """The relay's writes back no answer: not journaled, in every design (as in the gateway)."""
    return design.db[name].with_options(write_concern=WriteConcern(j=False))


async def outbox_relay(design: Design) -> None:
    entities = relayed(design, "entities")
    while docs := await entities.find({"pending": {"$exists": True}}).limit(100).to_list(100):
        events = [e for d in docs for e in d["outbox"]]
        await relayed(design, "events").insert_many(events, ordered=False)
        drains = [
            UpdateOne({"_id": d["_id"], "rev": d["rev"]}, {"$unset": {"outbox": "", "pending": ""}})
            for d in docs
        ]
        await entities.bulk_write(drains, ordered=False)


def beside(transaction: bool, mark: bool) -> Callable[[Design, list[int]], Awaitable[None]]:
    async def write(design: Design, batch: list[int]) -> None:
        ops, events = [], []
        for i in batch:
            op, evs = design.write(i, outbox=False)
            ops.append(op)
            events += [{**e, "pending": True} if mark else e for e in evs]
        if not transaction:
            await design.db["entities"].bulk_write(ops, ordered=False)
            await design.db["events"].insert_many(events, ordered=False)
            return
        async with design.client.start_session() as session, await session.start_transaction():
            await design.db["entities"].bulk_write(ops, ordered=False, session=session)
            await design.db["events"].insert_many(events, ordered=False, session=session)

    return write


async def marked_relay(design: Design) -> None:
    events = relayed(design, "events")
    while docs := await events.find({"pending": True}, {"_id": 1}).limit(100).to_list(100):
        await events.update_many(
            {"_id": {"$in": [d["_id"] for d in docs]}}, {"$unset": {"pending": ""}}
        )


async def no_relay(design: Design) -> None:
    return None


DESIGNS: dict[str, tuple[Callable[..., Awaitable[None]], Callable[..., Awaitable[None]], bool]] = {
    "outbox (the gateway's design)": (outbox, outbox_relay, False),
    "beside, transaction, relay mark": (beside(True, True), marked_relay, True),
    "beside, no transaction, relay mark": (beside(False, True), marked_relay, True),
    "beside, transaction, no relay mark": (beside(True, False), no_relay, False),
}


async def measure(uri: str, db_pid: int, writes: int, size: int) -> list[dict[str, Any]]:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(uri, tz_aware=True, journal=True)
    results = []
    for n, (name, (write, relay, mark)) in enumerate(DESIGNS.items()):
        design = Design(client[f"design_{n}"], client, name)
        await design.setup(mark)
        rng = random.Random(2)
        order = [rng.randrange(1000) for _ in range(writes)]
        db0, cli0, t0 = cpu_seconds(db_pid), time.process_time(), time.perf_counter()
        for k in range(0, writes, size):
            await write(design, list(dict.fromkeys(order[k : k + size])))
        elapsed = time.perf_counter() - t0
        await relay(design)
        db_us = (cpu_seconds(db_pid) - db0) / writes * 1e6
        cli_us = (time.process_time() - cli0) / writes * 1e6
        stored = await design.db["events"].count_documents({})
        results.append({"design": name, "db_us": db_us, "client_us": cli_us,
                        "rate": writes / elapsed, "events": stored})  # fmt: skip
        print(
            f"{name:<38} database {db_us:6,.0f} µs, client {cli_us:4,.0f} µs per request "
            f"(write + relay); writes {writes / elapsed:5,.0f}/s; {stored} events",
            flush=True,
        )
    await client.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-entity-writes-") as tmp:
        db = EmbeddedServer(Path(tmp) / "db")
        db.start()
        try:
            assert db.pid is not None
            results = asyncio.run(measure(db.uri, db.pid, args.writes, args.batch))
        finally:
            db.stop()
    if args.json:
        args.json.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
