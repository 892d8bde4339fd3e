"""Group commit of entity writes (gateway/store/group_commit.py): concurrent requests' writes
reach the database together, each request gets its own outcome, and writes to one entity
keep their order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bson import ObjectId

from gateway.entities import Origin
from gateway.errors import Conflict
from gateway.services import Services
from gateway.store.group_commit import GroupCommit
from gateway.web.state import services_key
from tests.triggers_support import VEHICLE, Client, create_trigger, hook

ADMIN = Origin("admin", "tester")


def _plate(i: int) -> str:
    return f"ABC{i % 10}D{i // 10 % 10}{i % 10}"


async def test_concurrent_trigger_posts_share_round_trips_and_each_gets_its_own_answer(
    client: Client, services: Services
) -> None:
    trigger = await create_trigger(client)
    plates = [_plate(i) for i in range(40)]
    for plate in plates:  # every vehicle exists and is in the app's memory
        assert (await hook(client, trigger, {**VEHICLE, "plate": plate}))[0] == 201
    commits = _app_commits(client)
    before = commits.round_trips
    answers = await asyncio.gather(
        *(
            hook(client, trigger, {**VEHICLE, "plate": p, "year": 1980 + i})
            for i, p in enumerate(plates)
        )
    )
    assert [status for status, _ in answers] == [200] * len(plates)
    assert [body["key"] for _, body in answers] == plates
    assert all(body["changed"] == ["year"] for _, body in answers)
    assert commits.round_trips - before < len(plates)  # shared round trips
    for i, plate in enumerate(plates):
        stored = await services.entities.get("acme", "vehicle", plate)
        assert stored["data"]["year"] == 1980 + i


def _app_commits(client: Client) -> GroupCommit:
    return client.app[services_key].store.commits


async def test_writes_to_one_entity_are_applied_in_the_order_they_arrived(
    services: Services,
) -> None:
    await services.entities.upsert("acme", "vehicle", {**VEHICLE}, ADMIN)
    years = list(range(2001, 2021))
    results = await asyncio.gather(
        *(services.entities.upsert("acme", "vehicle", {**VEHICLE, "year": y}, ADMIN) for y in years)
    )
    revs = [r.entity["rev"] for r in results]
    assert revs == sorted(revs) and len(set(revs)) == len(revs)
    assert [r.changes[0].old for r in results] == [2022, *years[:-1]]  # each saw the one before
    stored = await services.entities.get("acme", "vehicle", VEHICLE["plate"])
    assert stored["data"]["year"] == 2020


@pytest.mark.parametrize("client_bulk", [True, False], ids=["bulkWrite", "one by one"])
async def test_a_refused_write_fails_alone_in_its_round_trip(
    services: Services, client_bulk: bool
) -> None:
    collection: Any = services.store.db["group_commit_probe"]
    commits = GroupCommit(services.store.db.client, client_bulk=client_bulk)
    taken = ObjectId()
    await commits.insert(collection, {"_id": taken, "n": 0})
    outcomes = await asyncio.gather(
        commits.insert(collection, {"_id": ObjectId(), "n": 1}),
        commits.insert(collection, {"_id": taken, "n": 2}),
        commits.update(collection, {"_id": taken}, {"$set": {"n": 3}}),
        commits.update(collection, {"_id": ObjectId()}, {"$set": {"n": 4}}),
        return_exceptions=True,
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], Conflict)
    assert outcomes[2:] == [1, 0]  # matched: the one that exists, not the one that does not
    assert (await collection.find_one({"_id": taken}))["n"] == 3
    assert await commits.delete(collection, {"n": 1}) == 1
