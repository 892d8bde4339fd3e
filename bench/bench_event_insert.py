"""What the feed's index (`by_relayed`, gateway/store/events.py) costs the relay's event insert.

    python bench/bench_event_insert.py [--events 20000] [--batch 100] [--rounds 10]

Starts `secantusd-py` (gateway.store.embedded.EmbeddedServer) in a temporary directory and
inserts event documents (an `entity.updated` of a vehicle, as the relay stores it) in batches
of `--batch` with `j: true` into two collections, one with the events' indexes without
`by_relayed` and one with all of them, alternating in `--rounds` rounds so that the shared
machine's drift falls on both alike. Prints each one's database CPU per event
(/proc/PID/stat) and rate, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bson import ObjectId
from pymongo import AsyncMongoClient
from pymongo.write_concern import WriteConcern

from bench._common import cpu_seconds
from gateway.store.embedded import EmbeddedServer
from gateway.store.events import INDEXES


def event(i: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "_id": ObjectId(),
        "tenant": "acme",
        "type": "entity.updated",
        "occurred_at": now,
        "relayed_at": now,
        "entity": {"type": "vehicle", "id": str(ObjectId()), "key": f"BEN{i % 10}A{i % 100:02d}"},
        "position": 0,
        "data": {"plate": f"BEN{i % 10}A{i % 100:02d}", "odometer_km": i, "status": "active"},
        "changes": [{"field": "odometer_km", "old": i - 1, "new": i}],
        "origin": {"kind": "trigger", "id": "trg_bench"},
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        server = EmbeddedServer(Path(tmp) / "db")
        server.start()
        try:
            assert server.pid is not None
            client: AsyncMongoClient[Any] = AsyncMongoClient(server.uri, tz_aware=True)
            db = client.get_database("bench", write_concern=WriteConcern(j=True))
            without = [i for i in INDEXES if i.document["name"] != "by_relayed"]
            kinds = {"without by_relayed": without, "with by_relayed": INDEXES}
            for name, indexes in kinds.items():
                await db[name].create_indexes(indexes)
            cpu = dict.fromkeys(kinds, 0.0)
            wall = dict.fromkeys(kinds, 0.0)
            each = args.events // args.rounds
            for _ in range(args.rounds):
                for name in kinds:
                    docs = [event(i) for i in range(each)]
                    c0, t0 = cpu_seconds(server.pid), time.perf_counter()
                    for i in range(0, each, args.batch):
                        await db[name].insert_many(docs[i : i + args.batch], ordered=False)
                    cpu[name] += cpu_seconds(server.pid) - c0
                    wall[name] += time.perf_counter() - t0
            total = each * args.rounds
            for name in kinds:
                print(
                    f"{name:<20} {total / wall[name]:8,.0f} events/s "
                    f"{cpu[name] / total * 1e6:6.0f} µs DB CPU/event"
                )
            a, b = kinds
            print(f"ratio with/without: DB CPU {cpu[b] / cpu[a]:.2f}, time {wall[b] / wall[a]:.2f}")
            await client.close()
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
