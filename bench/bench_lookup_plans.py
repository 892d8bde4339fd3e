"""What the store's reads by a filter cost before and after they were shaped for SecantusDB's
planner (docs/benchmarks.md, "A lookup by id"), side by side in one run on one database.

    python bench/bench_lookup_plans.py [--vehicles 20000] [--lookups 50]

Tenant `acme` gets `vehicles` vehicles (status, group and a tracker id each, the filter keys
the store writes) and tenant `bigco` as many; `deliveries` gets as many deliveries. Then, in
turns (before, after, before, after), each read `lookups` times:
- a lookup by a partner id (the position trigger's by `tracker_id`), with its second query,
  the entities that hold more partner ids than the index keeps (`MORE_IDS`);
- a list by two filters (`status` and `group`: a group is matched on two fields, `$or`);
- the second page of a list by one filter (`status`, from a cursor);
- an entity by id, the tenant's field first and last (the planner reads the first field an
  index serves alone: `tenant` before `_id` is every entity of the tenant);
- a delivery's replay by id (the `$or` of replayable statuses, in one update, against one
  update per status);
- a refused payload's earlier copies (`vehicles` rejected payloads a tenant, 20 triggers),
  with `status` beside the `copies` index's fields, against those fields alone first.
Before: the filter as the store sent it (a find). After: as it sends it now (an aggregation
whose first `$match` one index holds whole; two updates without `$or`). Seconds per read,
and the ratio. The machine is shared: the ratio is the figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, MongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.store.deliveries import INDEXES as DELIVERY_INDEXES  # noqa: E402
from gateway.store.deliveries import REPLAYABLE  # noqa: E402
from gateway.store.embedded import EmbeddedServer  # noqa: E402
from gateway.store.entities import INDEXES, MORE_IDS, filter_keys, index_first  # noqa: E402
from gateway.store.rejected import INDEXES as REJECTED_INDEXES  # noqa: E402


def _vehicles(tenant: str, n: int) -> list[dict[str, Any]]:
    docs = []
    for i in range(n):
        data = {
            "plate": f"ABC{i % 10}D{i % 100:02d}",
            "status": "active" if i % 3 else "inactive",
            "group": f"g{i % 20}",
            "attributes": {"tracker_id": f"dev-{i}"},
        }
        docs.append(
            {
                "_id": ObjectId(),
                "tenant": tenant,
                "type": "vehicle",
                "nk": f"{tenant}-{i}",
                "data": data,
                "fk": filter_keys("vehicle", data),
                "rev": 1,
            }
        )
    return docs


def _timed(
    label: str, rounds: int, before: Callable[[int], Any], after: Callable[[int], Any]
) -> None:
    spent = {"before": 0.0, "after": 0.0}
    for turn in range(2):
        for name, read in (("before", before), ("after", after)):
            started = time.perf_counter()
            for i in range(rounds):
                read(turn * rounds + i)
            spent[name] += time.perf_counter() - started
    calls = 2 * rounds
    per_before, per_after = spent["before"] / calls, spent["after"] / calls
    print(
        f"{label:<44} before {per_before * 1000:9.2f} ms  after {per_after * 1000:7.2f} ms"
        f"  ratio {per_before / per_after:6.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vehicles", type=int, default=20_000)
    parser.add_argument("--lookups", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(Path(tmp) / "db")
        server.start()
        try:
            run(MongoClient(server.uri), args.vehicles, args.lookups)
        finally:
            server.stop()


def run(client: MongoClient[Any], n: int, rounds: int) -> None:
    db = client["bench_lookups"]
    entities, deliveries = db["entities"], db["deliveries"]
    entities.create_indexes(INDEXES)
    deliveries.create_indexes(DELIVERY_INDEXES)
    for tenant in ("acme", "bigco"):
        entities.insert_many(_vehicles(tenant, n))
        deliveries.insert_many(
            {
                "_id": f"{ObjectId()}:sub{i}",
                "tenant": tenant,
                "status": "dead" if i % 50 == 0 else "succeeded",
                "kind": "action",
            }
            for i in range(n)
        )
    print(f"{n:,} vehicles and {n:,} deliveries a tenant, two tenants; {2 * rounds} reads each")
    acme = {"tenant": "acme", "type": "vehicle"}
    page = list(entities.find({**acme, "fk": "status=active"}).sort("_id", 1).limit(50))
    cursor = page[-1]["_id"]

    def old_find(query: dict[str, Any]) -> list[Any]:
        return list(entities.find(query, {"outbox": 0}).sort("_id", ASCENDING).limit(50))

    def new_find(query: dict[str, Any]) -> list[Any]:
        stages = [*index_first(query), {"$sort": {"_id": 1}}, {"$limit": 50}]
        return list(entities.aggregate(stages))

    def by_tracker(find: Callable[[dict[str, Any]], list[Any]]) -> Callable[[int], Any]:
        def read(i: int) -> None:
            tracker = f"dev-{(i * 7919) % n}"
            query = {"type": "vehicle", "fk": f"attributes.tracker_id={tracker}"}
            assert len(find({**query, "tenant": "acme"})) == 1
            more = {"type": "vehicle", "fk": MORE_IDS, "data.attributes.tracker_id": tracker}
            assert find({**more, "tenant": "acme"}) == []

        return read

    _timed("lookup by tracker_id (two queries)", rounds, by_tracker(old_find), by_tracker(new_find))

    group = {"$or": [{"data.group": {"$in": ["g4"]}}, {"data.groups": {"$in": ["g4"]}}]}
    two_filters = {"type": "vehicle", "fk": "status=active", "$and": [group], "tenant": "acme"}
    _timed(
        "list ?status=active&group=g4",
        rounds,
        lambda i: old_find(two_filters),
        lambda i: new_find(two_filters),
    )
    second = {"type": "vehicle", "_id": {"$gt": cursor}, "fk": "status=active", "tenant": "acme"}
    _timed(
        "list ?status=active, second page",
        rounds,
        lambda i: old_find(second),
        lambda i: new_find(second),
    )

    ids = [page[i % len(page)]["_id"] for i in range(2 * rounds)]
    _timed(
        "an entity by id: {tenant, _id} / {_id, tenant}",
        rounds,
        lambda i: entities.find_one({"tenant": "acme", "_id": ids[i]}),
        lambda i: entities.find_one({"_id": ids[i], "tenant": "acme"}),
    )

    dead = [d["_id"] for d in deliveries.find({"tenant": "acme", "status": "dead"}, {"_id": 1})]
    replayable = {"status": {"$in": REPLAYABLE}}
    outdated = {"status": "suppressed", "kind": {"$ne": "notification"}}
    reopen = {"$set": {"status": "dead"}}  # as it was: each replay finds it again

    def old_replay(i: int) -> None:
        query = {"$or": [replayable, outdated], "_id": dead[i % len(dead)], "tenant": "acme"}
        assert deliveries.update_many(query, reopen).matched_count == 1

    def new_replay(i: int) -> None:
        matched = 0
        for part in (replayable, outdated):
            query = {"_id": dead[i % len(dead)], **part, "tenant": "acme"}
            matched += deliveries.update_many(query, reopen).matched_count
        assert matched == 1

    _timed("delivery replay by id", rounds, old_replay, new_replay)

    rejected = db["rejected"]
    rejected.create_indexes(REJECTED_INDEXES)
    for tenant in ("acme", "bigco"):
        rejected.insert_many(
            {
                "tenant": tenant,
                "trigger_id": f"trg_{i % 20}",
                "status": "pending",
                "scope": "call",
                "payload_sha256": f"{i:064x}",
            }
            for i in range(n)
        )
    waiting = {"$in": ["pending", "replaying"]}

    def old_copies(i: int) -> None:
        query = {"trigger_id": "trg_3", "status": waiting, "payload_sha256": {"$in": ["x"]}}
        assert list(rejected.find({**query, "tenant": "acme"}).sort("_id", 1)) == []

    def new_copies(i: int) -> None:
        copies = {"tenant": "acme", "trigger_id": "trg_3", "payload_sha256": {"$in": ["x"]}}
        stages = [{"$match": copies}, {"$match": {"status": waiting}}, {"$sort": {"_id": 1}}]
        assert list(rejected.aggregate(stages)) == []

    _timed("a refused payload's earlier copies", rounds, old_copies, new_copies)


if __name__ == "__main__":
    main()
