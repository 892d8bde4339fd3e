"""Group commit of entity writes (gateway/store/group_commit.py): concurrent requests' writes
reach the database together, each request gets its own outcome, and writes to one entity
keep their order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from gateway.config import Settings
from gateway.entities import Origin, Upsert
from gateway.errors import Conflict, InvalidPayload, StoreUnavailable
from gateway.services import Services, open_services
from gateway.store import connection, group_commit
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


@pytest.mark.parametrize(
    "unstorable",
    [{"a\u0000b": 1}, {"odometer": 2**64 - 1}],
    ids=["NUL in a key", "integer past 8 bytes"],
)
async def test_a_document_bson_cannot_hold_fails_alone_in_its_round_trip(
    services: Services, unstorable: dict[str, Any]
) -> None:
    """Found while encoding the round's bulkWrite, before anything is sent: only its own
    writer hears it (a 422), the others of the round (other requests, other tenants) are
    stored, not answered that their document cannot be stored."""
    collection: Any = services.store.db["group_commit_probe"]
    commits = GroupCommit(services.store.db.client)
    # Two writes leave alone (two rounds in flight); the rest share the third round.
    good = [{"_id": ObjectId(), "n": n} for n in range(5)]
    outcomes = await asyncio.gather(
        *(commits.insert(collection, doc) for doc in good[:2]),
        commits.insert(collection, {"_id": ObjectId(), **unstorable}),
        *(commits.insert(collection, doc) for doc in good[2:]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[2], InvalidPayload), outcomes[2]
    assert outcomes[:2] + outcomes[3:] == [None] * 5, outcomes
    assert await collection.count_documents({"_id": {"$in": [d["_id"] for d in good]}}) == 5


async def test_a_write_bson_cannot_hold_is_refused_alone_and_concurrent_writes_are_stored(
    services: Services,
) -> None:
    """An attribute with an integer past 8 bytes (a Python caller's: the HTTP API reads one
    as its exact text, tests/test_entities_api.py): InvalidPayload, never a crash; and the
    writes that share its round trip are stored, not refused with its problem."""

    async def create(plate: str, attributes: dict[str, Any]) -> Any:
        data = {**VEHICLE, "plate": plate, "attributes": attributes}
        return await services.entities.create("acme", "vehicle", data, ADMIN)

    with pytest.raises(InvalidPayload, match="8-byte"):
        await create("BIG1A11", {"odometer_raw": 2**64 - 1})
    plates = [_plate(i) for i in range(12)]
    outcomes = await asyncio.gather(
        *(create(p, {"n": i}) for i, p in enumerate(plates)),
        create("BIG1A12", {"odometer_raw": 2**64 - 1}),
        return_exceptions=True,
    )
    assert isinstance(outcomes[-1], InvalidPayload), outcomes[-1]
    assert not any(isinstance(o, BaseException) for o in outcomes[:-1]), outcomes
    for plate in plates:
        assert (await services.entities.get("acme", "vehicle", plate))["data"]["plate"] == plate


async def test_a_round_whose_server_restarted_before_its_seal_tells_nobody_it_is_stored(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server killed after a round's unjournaled writes and restarted before the seal took
    the seal on the new process, which never had the round: every writer heard "stored" of
    writes that were gone. The round's mark is what the seal must find; here it is gone as it
    is on a restarted server, and every writer of the round hears the outcome is unknown."""
    collection: Any = services.store.db["group_commit_probe"]
    commits = GroupCommit(services.store.db.client)

    async def restarted_then_sealed(db: Any, mark: str) -> None:
        await db[group_commit.SEALS].delete_one({"_id": mark})  # what the new process lacks
        await sealed(db, mark)

    sealed = group_commit.seal
    monkeypatch.setattr(group_commit, "seal", restarted_then_sealed)
    outcomes = await asyncio.gather(
        *(commits.insert(collection, {"_id": ObjectId(), "n": n}) for n in range(6)),
        return_exceptions=True,
    )
    # The first two went alone (two rounds in flight), each its own journaled command; the
    # others shared a round and its seal.
    assert outcomes[:2] == [None, None]
    assert all(isinstance(o, StoreUnavailable) for o in outcomes[2:]), outcomes
    assert all("outcome is unknown" in o.detail for o in outcomes[2:] if isinstance(o, Exception))
    monkeypatch.setattr(group_commit, "seal", sealed)
    stored = await asyncio.gather(
        *(commits.insert(collection, {"_id": ObjectId(), "n": n}) for n in range(6))
    )
    assert stored == [None] * 6  # sealed on the server that had them: stored, and told so
    assert await services.store.db[group_commit.SEALS].count_documents({}) == 0  # no mark left


async def test_a_multi_entity_write_whose_server_restarted_before_its_seal_is_not_answered(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a write of several entities in one transaction (`write_together`)."""
    from gateway.store import entities

    async def restarted_then_sealed(db: Any, mark: str) -> None:
        await db[group_commit.SEALS].delete_one({"_id": mark})
        await group_commit.seal(db, mark)

    monkeypatch.setattr(entities, "seal", restarted_then_sealed)
    upserts = [
        Upsert("vehicle", {"plate": "ABC1D23"}, create=True),
        Upsert("driver", {"name": "Ana Souza", "cpf": "52998224725"}, create=True),
    ]
    with pytest.raises(StoreUnavailable, match="outcome is unknown"):
        await services.entities.upsert_together("acme", upserts, ADMIN)


async def test_a_cancelled_writer_leaves_its_roundmates_their_own_outcomes(
    services: Services,
) -> None:
    """A caller cancelled while its round is in flight (aiohttp cancels handlers still running
    at shutdown): the round's other writes hear their own outcomes, not a 503 for a write
    that landed, and none is left waiting."""
    commits = GroupCommit(services.store.db.client, max_in_flight=1)
    collection = services.store.db["gc_cancel"]
    first = asyncio.create_task(commits.insert(collection, {"_id": "a"}))
    while commits.round_trips < 1:  # round 1 (alone) in flight
        await asyncio.sleep(0)
    gone = asyncio.create_task(commits.insert(collection, {"_id": "b"}))
    kept = asyncio.create_task(commits.insert(collection, {"_id": "c"}))
    while len(commits._queue) < 2:  # both wait for round 2
        await asyncio.sleep(0)
    gone.cancel()
    await first
    await asyncio.wait_for(kept, 10)  # round 2 ([b, c]): c hears it is stored
    assert sorted(await collection.distinct("_id")) == ["a", "b", "c"]


async def test_updates_handed_over_together_leave_in_one_round_each_with_its_own_outcome(
    services: Services,
) -> None:
    """`GroupCommit.updates` (the fold's vehicle writes): one round trip for all of them, a
    refused one failing alone, the others applied."""
    collection: Any = services.store.db["group_commit_probe"]
    commits = GroupCommit(services.store.db.client)
    ids = [ObjectId() for _ in range(4)]
    for oid in ids:
        await commits.insert(collection, {"_id": oid, "n": 0})
    before = commits.round_trips
    outcomes = await commits.updates(
        collection,
        [
            ({"_id": ids[0]}, {"$set": {"n": 1}}),
            ({"_id": ids[1]}, {"$inc": {"n": "not a number"}}),  # refused by the server
            ({"_id": ObjectId()}, {"$set": {"n": 3}}),  # matches nothing
            ({"_id": ids[3]}, {"$set": {"n": 4}}),
        ],
    )
    assert commits.round_trips - before == 2  # the bulkWrite and its seal
    assert outcomes[0] == 1 and outcomes[2:] == [0, 1]
    assert isinstance(outcomes[1], InvalidPayload)
    stored = {doc["_id"]: doc["n"] async for doc in collection.find({"_id": {"$in": ids}})}
    assert stored == {ids[0]: 1, ids[1]: 0, ids[2]: 0, ids[3]: 4}
    assert await commits.updates(collection, []) == []


async def test_a_round_stored_as_the_free_space_floor_is_reached_is_sealed_and_answered_stored(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round's bulk write passed the write gate, then the embedded database's free-space
    floor was reached before its seal: the seal was refused, and every writer of the round
    heard "the database takes no writes" of a write that was stored. The seal finishes what
    the gate let through, as a commit does: it goes through, and every writer hears stored."""
    health = services.store.health
    sealed: list[str] = []
    real_seal = group_commit.seal

    async def seal_as_the_floor_is_reached(db: Any, mark: str) -> None:
        sealed.append(mark)
        health.mark_down("disk", "the embedded database's disk has 1 bytes free, under 2")
        await real_seal(db, mark)

    monkeypatch.setattr(group_commit, "seal", seal_as_the_floor_is_reached)
    plates = [_plate(i) for i in range(20)]
    try:
        outcomes = await asyncio.gather(
            *(services.entities.upsert("acme", "vehicle", {"plate": p}, ADMIN) for p in plates),
            return_exceptions=True,
        )
    finally:
        health.mark_up("disk")
    assert sealed, "no round shared a seal"
    # The round sealed as the floor was reached is answered stored; a round that came to the
    # gate after it is refused whole (how the upserts fall into rounds is the loop's).
    answered = sorted(
        p for p, o in zip(plates, outcomes, strict=True) if not isinstance(o, Exception)
    )
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert all("takes no writes" in str(o) for o in refused), refused
    entities = services.store.db["entities"]
    assert (
        sorted(await entities.distinct("data.plate", {"data.plate": {"$in": plates}})) == answered
    )
    assert answered, outcomes
    assert await services.store.db[group_commit.SEALS].count_documents({}) == 0


async def test_a_multi_entity_write_committed_as_the_floor_is_reached_is_answered_stored(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The floor reached between a multi-entity write's statements and its commit
    (`write_together`): the commit went through, the seal after it was refused, and the
    write was answered 503 "the database takes no writes" with both entities stored and
    its mark left in `group_commits`. Now it is sealed and answered stored."""
    from pymongo.asynchronous.client_session import AsyncClientSession

    health = services.store.health
    real_commit = AsyncClientSession.commit_transaction

    async def commit_as_the_floor_is_reached(self: AsyncClientSession) -> None:
        health.mark_down("disk", "the embedded database's disk has 1 bytes free, under 2")
        await real_commit(self)

    monkeypatch.setattr(AsyncClientSession, "commit_transaction", commit_as_the_floor_is_reached)
    upserts = [Upsert("vehicle", {"plate": "FLR1A03"}), Upsert("vehicle", {"plate": "FLR1A04"})]
    try:
        await services.entities.upsert_together("acme", upserts, ADMIN)
        with pytest.raises(StoreUnavailable, match="takes no writes"):  # the next is refused
            await services.entities.upsert("acme", "vehicle", {"plate": "FLR1A05"}, ADMIN)
    finally:
        health.mark_up("disk")
    monkeypatch.setattr(AsyncClientSession, "commit_transaction", real_commit)
    plates = ["FLR1A03", "FLR1A04", "FLR1A05"]
    entities = services.store.db["entities"]
    stored = await entities.distinct("data.plate", {"data.plate": {"$in": plates}})
    assert sorted(stored) == ["FLR1A03", "FLR1A04"]
    assert await services.store.db[group_commit.SEALS].count_documents({}) == 0


async def test_round_marks_no_round_can_seal_any_more_are_removed_at_start_and_by_housekeeping(
    services: Services, settings: Settings, mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round whose seal never reached the database (the driver refused to send it past the
    deadline, the process was killed, the database restarted) left its mark for good: nothing
    ever deleted one (the soak's `group_commits` grew with every database hiccup). A mark
    older than any round can live (three database deadlines and an hour) goes at the next
    start and in every process's housekeeping pass; a fresh one stays (its round may still
    seal it), and one of an earlier version, without a time, is given one and goes later."""
    real_seal = group_commit.seal

    async def deadline_passed(db: Any, mark: str) -> None:
        raise StoreUnavailable("database deadline passed: ExecutionTimeout (50)")

    monkeypatch.setattr(group_commit, "seal", deadline_passed)
    outcomes = await asyncio.gather(
        *(
            services.entities.upsert("acme", "vehicle", {"plate": _plate(i)}, ADMIN)
            for i in range(20)
        ),
        return_exceptions=True,
    )
    assert any(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
    monkeypatch.setattr(group_commit, "seal", real_seal)
    seals = services.store.db[group_commit.SEALS]
    missed = [doc["_id"] for doc in await seals.find().to_list(None)]
    assert missed, "the rounds whose seal missed left their marks"

    lifetime = group_commit.mark_lifetime(settings.db_timeout_ms / 1000)
    now = datetime.now(UTC)
    too_old = now - timedelta(seconds=lifetime + 60)
    await seals.update_many({}, {"$set": {"at": too_old}})  # an hour and more later
    await seals.insert_many(
        [{"_id": "round:earlier-version:1"}, {"_id": "round:live:1", "at": now}]
    )
    async with open_services(settings, mongodb_uri=mongodb_uri):
        left = {doc["_id"]: doc.get("at") for doc in await seals.find().to_list(None)}
    assert set(left) == {"round:earlier-version:1", "round:live:1"}, left
    assert left["round:earlier-version:1"] is not None  # given a time: it goes one lifetime on

    monkeypatch.setattr(connection, "EXPIRE_SECONDS", 0.05)
    async with open_services(settings, mongodb_uri=mongodb_uri):
        await seals.update_many({}, {"$set": {"at": too_old}})
        async with asyncio.timeout(10):
            while await seals.count_documents({}):
                await asyncio.sleep(0.05)
