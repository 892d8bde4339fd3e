"""The cost of a newest-first admin list page as a tenant's history grows: one sorted query
(what `GET /api/v1/deliveries?limit=20` used to send) against the windows of time it sends now
(`gateway/store/newest.py`), on the embedded database, as a ratio within one run.

    python bench/bench_lists.py [--deliveries 20000]

Deliveries are spread over the last hours (one every 0.3 s, as a busy tenant makes them);
each variant reads the first page five times, and both must return the same page.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.store.embedded import EmbeddedServer
from gateway.store.newest import newest_first

HIDDEN = {"attempts": 0, "event.data": 0}


async def timed(read: Callable[[], Awaitable[list[Any]]], rounds: int = 5) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        await read()
    return (time.perf_counter() - started) / rounds * 1000


async def run(count: int) -> None:
    server = EmbeddedServer(Path(tempfile.mkdtemp(prefix="bench-lists-")) / "db")
    server.start()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.uri)
    try:
        deliveries = client["bench"]["deliveries"]
        by_tenant = IndexModel([("tenant", ASCENDING), ("_id", DESCENDING)], name="by_tenant")
        await deliveries.create_indexes([by_tenant])
        now = datetime.now(UTC)
        docs = []
        for i in range(count):
            made = ObjectId.from_datetime(now - timedelta(seconds=(count - i) * 0.3))
            delivery_id = f"{str(made)[:8]}{os.urandom(8).hex()}:sub"
            event = {"id": "e", "data": {"plate": "ABC1D23", "odometer_km": i}}
            attempt = {"n": 1, "status": 200, "response": "x" * 200}
            docs.append(
                {"_id": delivery_id, "tenant": "t", "status": "succeeded", "event": event}
                | {"attempts": [attempt]}
            )
        await deliveries.insert_many(docs)

        async def one_query() -> list[Any]:
            cursor = deliveries.find({"tenant": "t"}, HIDDEN).sort("_id", DESCENDING)
            return await cursor.limit(20).to_list(20)

        async def windows() -> list[Any]:
            return await newest_first(
                deliveries, "t", {}, before=None, limit=20, windowed=True, projection=HIDDEN
            )

        assert [d["_id"] for d in await one_query()] == [d["_id"] for d in await windows()]
        before, after = await timed(one_query), await timed(windows)
        print(f"{count} deliveries: first page {before:.1f} ms as one query, {after:.1f} ms in")
        print(f"windows of time: {before / after:.0f}x less")
    finally:
        await client.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    asyncio.run(run(parser.parse_args().deliveries))


if __name__ == "__main__":
    main()
