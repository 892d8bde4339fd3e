"""The deliveries and events lists read newest first in windows of time (store/newest.py), so
their cost follows recent documents, not a tenant's history: the pages must be exactly those
of one sorted query, whatever the ages of the documents, across every window's edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient
from bson import ObjectId

from gateway.store.deliveries import shard_of
from gateway.web.state import services_key
from tests.support import auth

Client = TestClient[Any, Any]

# Ages on both sides of the windows' edges (8 s, x8 each: 64 s, 512 s, ... 24 days, then
# the rest), a document from the future (a skewed clock) and several within one second.
AGES = [-90, 0, 0, 0, 1, 7, 9, 63, 65, 500, 600, 4000, 5000, 40_000, 300_000, 3e6, 9e7]


def object_id(age_seconds: float, n: int) -> ObjectId:
    when = datetime.now(UTC) - timedelta(seconds=age_seconds)
    return ObjectId(f"{ObjectId.from_datetime(when)}"[:8] + f"{n:016x}")


async def walk(client: Client, path: str, limit: int) -> list[str]:
    ids: list[str] = []
    path += "&" if "?" in path else "?"
    url = f"{path}limit={limit}"
    while True:
        response = await client.get(url, headers=auth())
        assert response.status == 200, await response.text()
        page = await response.json()
        ids += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return ids
        url = f"{path}limit={limit}&cursor={page['next_cursor']}"


async def test_deliveries_list_pages_newest_first_across_every_window(client: Client) -> None:
    db = client.app[services_key].store.db
    # Every delivery id starts with its event's id (a cursor that does not is a 400:
    # tests/test_list_cursors.py).
    ids = [f"{object_id(age, n)}:sub" for n, age in enumerate(AGES)]
    docs = [
        {"_id": i, "tenant": "acme", "shard": shard_of(i), "status": "succeeded", "event": {}}
        for i in ids
    ]
    others = [{**d, "_id": d["_id"] + ":other", "tenant": "other"} for d in docs]
    await db["deliveries"].insert_many(docs + others)
    expected = sorted(ids, reverse=True)
    for limit in (1, 3, 7, 200):
        assert await walk(client, "/api/v1/deliveries", limit) == expected
    # A filter the index does not cover: one query, the same order.
    await db["deliveries"].update_many({"_id": {"$in": ids[::2]}}, {"$set": {"status": "dead"}})
    dead = await client.get("/api/v1/deliveries?status=dead&limit=200", headers=auth())
    listed = [item["id"] for item in (await dead.json())["items"]]
    assert listed == sorted(ids[::2], reverse=True)


async def test_events_list_pages_newest_first_across_every_window(client: Client) -> None:
    db = client.app[services_key].store.db
    ids = [object_id(age, n) for n, age in enumerate(AGES)]
    types = ["entity.created", "entity.updated"]
    docs = [
        {"_id": i, "tenant": "acme", "type": types[n % 2], "entity": {"id": "v1"}, "data": {}}
        for n, i in enumerate(ids)
    ]
    await db["events"].insert_many(docs)
    expected = [str(i) for i in sorted(ids, reverse=True)]
    for limit in (1, 4, 200):
        assert await walk(client, "/api/v1/events", limit) == expected
    updated = [str(d["_id"]) for d in sorted(docs[1::2], key=lambda d: d["_id"], reverse=True)]
    assert await walk(client, "/api/v1/events?type=entity.updated", 3) == updated


async def test_a_cursor_from_the_first_days_of_the_epoch_pages_on_not_a_500(
    client: Client,
) -> None:
    """A window below a cursor of 1970 would start before the epoch, where no ObjectId is:
    it is the last window, not an error (an id from 1970 is rare, a crafted cursor is not)."""
    db = client.app[services_key].store.db
    old = [ObjectId(f"{seconds:08x}{n:016x}") for n, seconds in enumerate((0, 1, 5, 86_400))]
    await db["events"].insert_many(
        {"_id": i, "tenant": "acme", "type": "entity.created", "entity": {"id": "v1"}, "data": {}}
        for i in old
    )
    ids = [f"{i}:sub" for i in old]
    await db["deliveries"].insert_many(
        {"_id": i, "tenant": "acme", "shard": shard_of(i), "status": "dead", "event": {}}
        for i in ids
    )
    assert await walk(client, "/api/v1/events", 1) == [str(i) for i in reversed(old)]
    assert await walk(client, "/api/v1/deliveries", 1) == list(reversed(ids))
    for path, cursor in (("/api/v1/events", "0" * 24), ("/api/v1/deliveries", "0" * 24 + ":sub")):
        first = await client.get(f"{path}?cursor={cursor}", headers=auth())
        assert first.status == 200 and (await first.json())["items"] == [], path
