"""The positions, fleet inbox and fleet state collections (gateway/store/positions.py,
gateway/store/fleet.py) against the real embedded database: a fix's id is its vehicle and
device time, so a resent fix is stored once; every append round hands its newly stored fixes
to the fold's inbox in one numbered document; states and checkpoints only move forward."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pymongo
import pytest

from gateway import clock
from gateway.config import Settings
from gateway.errors import StoreUnavailable
from gateway.services import Services
from gateway.store import derived_id
from gateway.store import positions as positions_module
from gateway.store.connection import open_store
from gateway.store.expiry import Expiry
from gateway.store.fleet import FleetStore, SavedState
from gateway.store.positions import InsertRounds, PositionStore, position_id
from gateway.store.positions import inbox_items as inbox_items_of
from tests.processes import until
from tests.support import inbox_items

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _fix(seconds: int, lat: float = -23.5, lon: float = -46.6) -> dict[str, object]:
    return {"t": T0 + timedelta(seconds=seconds), "lat": lat, "lon": lon}


def _store(services: Services) -> PositionStore:
    return services.store.positions


def _fleet(services: Services) -> FleetStore:
    return services.store.fleet


async def _inbox(services: Services) -> list[dict[str, Any]]:
    docs = await services.store.db["fleet_inbox"].find({}).sort("_id", 1).to_list(None)
    return list(docs)


async def test_append_stores_fixes_under_their_vehicle_and_time_and_hands_them_on(
    services: Services,
) -> None:
    store = _store(services)
    appended = await store.append("acme", "v1", [_fix(0), _fix(5)], "trigger-1")
    assert [a.duplicate for a in appended] == [False, False]
    assert [a.id for a in appended] == ["v1-20261201T120000.000Z", "v1-20261201T120005.000Z"]
    track = await store.track("acme", "v1", None, None, None, 10)
    assert [f["_id"] for f in track] == [a.id for a in appended]
    assert track[0]["source"] == "trigger-1" and track[0]["at"] >= track[0]["t"]
    # One inbox document for the round, numbered from 1, with what the fold reads.
    [doc] = await _inbox(services)
    assert doc["_id"] == 1
    assert [item["k"] for item in doc["items"]] == ["fixes"]  # one item per vehicle
    first, second = inbox_items_of(doc)
    assert (first["k"], first["tenant"], first["vehicle"], first["id"]) == (
        "fix",
        "acme",
        "v1",
        appended[0].id,
    )
    assert (first["t"], first["lat"], first["lon"]) == (T0, -23.5, -46.6)
    assert "source" not in first and second["t"] == T0 + timedelta(seconds=5)


def test_a_fix_id_sorts_by_device_time_and_keeps_milliseconds() -> None:
    early = position_id("v1", datetime(999, 1, 1, tzinfo=UTC))
    late = position_id("v1", datetime(2026, 12, 1, 9, 0, 0, 123_456, tzinfo=UTC))
    assert early == "v1-09990101T000000.000Z" and late == "v1-20261201T090000.123Z"
    assert early < late
    other_zone = datetime(2026, 12, 1, 6, 0, 0, 123_000, tzinfo=timezone(timedelta(hours=-3)))
    assert position_id("v1", other_zone) == late


async def test_a_resent_fix_is_a_duplicate_stored_once_and_handed_on_once(
    services: Services,
) -> None:
    store = _store(services)
    first = await store.append("acme", "v1", [_fix(0)], "t")
    again = await store.append("acme", "v1", [_fix(0), _fix(10)], "t")
    assert [a.duplicate for a in again] == [True, False]
    assert again[0].id == first[0].id
    track = await store.track("acme", "v1", None, None, None, 10)
    assert len(track) == 2
    items = await inbox_items(services.store, "acme", "v1", "fix")
    assert [i["id"] for i in items] == [first[0].id, again[1].id]


async def test_concurrent_appends_share_rounds_and_each_fix_reaches_the_inbox_once(
    services: Services,
) -> None:
    store = _store(services)
    await store.append("acme", "v0", [_fix(0)], "t")
    before = store.inserts.rounds
    batches = await asyncio.gather(
        *(store.append("acme", f"v{i % 5}", [_fix(i), _fix(0)], "t") for i in range(1, 41))
    )
    assert store.inserts.rounds - before < 40  # shared rounds
    # Each request's own outcome: its new fix stored, the fix at 0 s a duplicate for v0 (and
    # stored once for each other vehicle, by whichever request came first).
    assert all(not batch[0].duplicate for batch in batches)
    assert len([batch[1] for batch in batches if not batch[1].duplicate]) == 4
    for vehicle in range(5):
        track = await store.track("acme", f"v{vehicle}", None, None, None, 100)
        items = await inbox_items(services.store, "acme", f"v{vehicle}", "fix")
        assert sorted(i["id"] for i in items) == [fix["_id"] for fix in track]
    # One document per round, numbered without a gap.
    numbers = [doc["_id"] for doc in await _inbox(services)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) < 41


class _BrokenInbox:
    """The fold's inbox as a round sees it, its puts failing the first `failures` times (the
    numbers are real)."""

    def __init__(self, fleet: FleetStore, failures: int) -> None:
        self._fleet, self._failures = fleet, failures
        self.tombstones: list[int] = []

    async def take_number(self) -> int:
        return await self._fleet.take_number()

    async def put_round(self, seq: int, docs: list[dict[str, Any]]) -> None:
        if self._failures:
            self._failures -= 1
            raise StoreUnavailable("inbox down")
        await self._fleet.put(seq, [{"k": "fixes", "ids": [d["_id"] for d in docs]}])

    async def tombstone(self, seq: int) -> None:
        self.tombstones.append(seq)
        await self._fleet.tombstone(seq)


class _LostAnswer:
    """A collection whose inserts are stored but answered with a failure (the database died
    after journaling them): the round cannot know what it stored."""

    def __init__(self, collection: Any) -> None:
        self._c = collection

    async def insert_many(self, docs: list[dict[str, Any]], **options: Any) -> None:
        with contextlib.suppress(Exception):  # duplicates too: what is stored is stored
            await self._c.insert_many(docs, **options)
        raise StoreUnavailable("connection closed")

    def find(self, *args: Any, **kwargs: Any) -> Any:
        return self._c.find(*args, **kwargs)

    async def find_one(self, *args: Any, **kwargs: Any) -> Any:
        return await self._c.find_one(*args, **kwargs)


async def _finished(services: Services) -> dict[str, Any]:
    """The newest inbox document, once a failed round has written it under its number."""
    for _ in range(200):
        seq = await _fleet(services).last_number()
        docs = await _fleet(services).after(seq - 1, 1)
        if seq and docs and docs[0]["_id"] == seq:
            return docs[0]
        await asyncio.sleep(0.05)
    raise AssertionError("the failed round never wrote its inbox document")


async def test_a_round_whose_inbox_write_fails_answers_its_callers_and_hands_its_fixes_on_later(
    services: Services,
) -> None:
    collection = services.store.db["positions"]
    inbox = _BrokenInbox(_fleet(services), failures=2)
    docs = [{"_id": position_id("v9", T0), "tenant": "acme", "vehicle": "v9", "t": T0}]
    rounds = InsertRounds(collection, hand_on=inbox)
    told: list[tuple[str, int]] = []
    rounds.on_finished = lambda outcome, count: told.append((outcome, count))
    assert await rounds.insert(docs) == [True]  # stored (journaled): answered as stored
    # The round itself hands it on, under its own number, once the inbox takes writes again.
    assert await collection.count_documents({"_id": docs[0]["_id"]}) == 1
    assert (await _finished(services))["items"] == [{"k": "fixes", "ids": [docs[0]["_id"]]}]
    for _ in range(100):  # the round tells once its own write has returned
        if told:
            break
        await asyncio.sleep(0.02)
    assert inbox.tombstones == [] and told == [("handed_on", 1)]
    working = _BrokenInbox(_fleet(services), failures=0)
    assert await InsertRounds(collection, hand_on=working).insert(docs) == [False]


async def test_a_round_that_cannot_know_what_it_stored_reads_it_back_and_hands_only_its_own_on(
    services: Services,
) -> None:
    await round_with_a_lost_answer(services)


async def round_with_a_lost_answer(
    services: Services, before: Callable[[], None] = lambda: None
) -> None:
    """A round of two fixes, one stored before by another source, whose insert's answer is
    lost: it reads back which it stored, and hands on only its own. `before`: called just
    before the round (tests/test_query_plans.py watches its reads from there)."""
    collection = services.store.db["positions"]
    earlier = {"_id": position_id("v9", T0), "tenant": "acme", "vehicle": "v9", "t": T0}
    await collection.insert_one({**earlier, "at": T0, "source": "other"})
    now = datetime.now(UTC).replace(microsecond=0)
    docs = [
        {**earlier, "at": now, "source": "s"},  # a duplicate of a fix stored before
        {"_id": position_id("v9", T0 + timedelta(seconds=5)), "tenant": "acme",
         "vehicle": "v9", "t": T0 + timedelta(seconds=5), "at": now, "source": "s"},
    ]  # fmt: skip
    inbox = _BrokenInbox(_fleet(services), failures=0)
    before()
    with pytest.raises(StoreUnavailable):
        await InsertRounds(_LostAnswer(collection), hand_on=inbox).insert(docs)  # type: ignore[arg-type]
    assert (await _finished(services))["items"] == [{"k": "fixes", "ids": [docs[1]["_id"]]}]


async def test_a_round_that_stored_nothing_gives_its_number_up(services: Services) -> None:
    collection = services.store.db["positions"]
    inbox = _BrokenInbox(_fleet(services), failures=0)
    fix = {"_id": position_id("v9", T0), "tenant": "acme", "vehicle": "v9", "t": T0, "at": T0}
    await collection.insert_one({**fix, "source": "other"})
    docs = [{**fix, "source": "s"}]
    with pytest.raises(StoreUnavailable):
        await InsertRounds(_LostAnswer(collection), hand_on=inbox).insert(docs)  # type: ignore[arg-type]
    finished = await _finished(services)
    assert finished["items"] == [] and inbox.tombstones == [finished["_id"]]


async def test_fixes_that_waited_too_long_for_a_round_fail_without_being_stored(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round's fixes were all received at most `MAX_WAIT_SECONDS` before its number came
    (what bounds a fold's search for a dead round's fixes): a caller whose round's number came
    later than that, or that waited longer for a round behind one stuck on the database, fails
    (503) with nothing stored; a number left without fixes is given up."""
    monkeypatch.setattr(positions_module, "MAX_WAIT_SECONDS", 0.2)
    collection = services.store.db["positions"]
    asked, release = asyncio.Event(), asyncio.Event()

    class _SlowNumbers(_BrokenInbox):
        async def take_number(self) -> int:
            asked.set()
            await release.wait()
            return await super().take_number()

    slow = _SlowNumbers(_fleet(services), failures=0)
    rounds = InsertRounds(collection, hand_on=slow, max_in_flight=1)
    docs = [
        {"_id": position_id("v9", T0 + timedelta(seconds=s)), "tenant": "acme", "vehicle": "v9",
         "t": T0 + timedelta(seconds=s), "at": T0}
        for s in (0, 5)
    ]  # fmt: skip
    first = asyncio.create_task(rounds.insert(docs[:1]))
    await asked.wait()  # its round waits for a number
    second = asyncio.create_task(rounds.insert(docs[1:]))  # waits for a round
    await asyncio.sleep(0.3)
    release.set()
    for caller in (first, second):
        with pytest.raises(StoreUnavailable):
            await caller
    assert await collection.count_documents({}) == 0
    assert slow.tombstones == [await _fleet(services).last_number()]
    working = InsertRounds(collection, hand_on=_BrokenInbox(_fleet(services), 0))
    assert await working.insert(docs) == [True, True]  # their resends are stored


async def test_a_failed_round_still_finishing_is_stopped_before_the_database_client_closes(
    settings: Settings, mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round whose inbox write failed is finished in the background (`_finish`), trying
    again while the database is away. Closing the store stops it before the client closes
    (its fixes are left to the fold, which finds them by their number): left running, it woke
    against a closed client and died of an exception nobody retrieved."""

    async def inbox_down(*args: Any) -> None:
        raise StoreUnavailable("inbox down")

    outcomes: list[tuple[str, int]] = []
    async with open_store(settings, mongodb_uri) as store:
        monkeypatch.setattr(store.fleet, "put", inbox_down)
        rounds = store.positions.inserts
        rounds.on_finished = lambda outcome, count: outcomes.append((outcome, count))
        assert await rounds.insert(_docs("v1", 0, 5), early=True) == [True, True]
        await rounds.settled(10)
        finishing = list(rounds._finishing)
        assert finishing  # trying again, the database being away
    assert all(task.done() for task in finishing), finishing
    assert all(task.cancelled() for task in finishing)
    assert outcomes == [("not_handed_on", 2)]


async def test_a_failed_round_whose_finishing_fails_unexpectedly_is_logged_and_counted(
    services: Services, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed round's `_finish` tries again while the database is away (StoreUnavailable);
    anything else ends it. Its exception is retrieved (logged, not left to the garbage
    collector's "Task exception was never retrieved") and its fixes counted as not handed on."""

    async def inbox_broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    rounds, outcomes = services.store.positions.inserts, []
    rounds.on_finished = lambda outcome, count: outcomes.append((outcome, count))
    monkeypatch.setattr(services.store.fleet, "put", inbox_broken)
    assert await rounds.insert(_docs("v1", 0, 5), early=True) == [True, True]
    await rounds.settled(10)
    await until(lambda: not rounds._finishing, 10, "the failed round's end")
    assert outcomes == [("not_handed_on", 2)]
    (logged,) = [r for r in caplog.records if "finishing a failed round" in r.getMessage()]
    assert logged.exc_info is not None and "a bug" in str(logged.exc_info[1])


class _HeldInbox(_BrokenInbox):
    """An inbox whose writes wait until `release` is set (a slow inbox write)."""

    def __init__(self, fleet: FleetStore) -> None:
        super().__init__(fleet, failures=0)
        self.release = asyncio.Event()
        self.writing = 0

    async def put_round(self, seq: int, docs: list[dict[str, Any]]) -> None:
        self.writing += 1
        await self.release.wait()
        await super().put_round(seq, docs)


class _HeldInserts:
    """A collection whose `held`-th insert (counting from 1) waits until `release` is set."""

    def __init__(self, collection: Any, held: int) -> None:
        self._c, self._held = collection, held
        self.release = asyncio.Event()
        self.inserts = 0

    async def insert_many(self, docs: list[dict[str, Any]], **options: Any) -> None:
        self.inserts += 1
        if self.inserts == self._held:
            await self.release.wait()
        await self._c.insert_many(docs, **options)


def _docs(vehicle: str, *seconds: int) -> list[dict[str, Any]]:
    return [
        {"_id": position_id(vehicle, T0 + timedelta(seconds=s)), "tenant": "acme",
         "vehicle": vehicle, "t": T0 + timedelta(seconds=s), "at": T0}
        for s in seconds
    ]  # fmt: skip


async def test_a_big_round_inserts_while_the_last_one_is_still_writing_the_inbox(
    services: Services,
) -> None:
    """Rounds that hand on (write the fold's inbox) no longer hold the inserts up: with one
    round writing its inbox document and another inserting, a third one of enough documents
    inserts and is answered; every round's document lands under its own number."""
    collection = services.store.db["positions"]
    inbox = _HeldInbox(_fleet(services))
    held = _HeldInserts(collection, held=2)
    rounds = InsertRounds(held, hand_on=inbox, max_in_flight=2, parallel_from=2)  # type: ignore[arg-type]
    first = await rounds.insert(_docs("v1", 0, 5), early=True)  # stored: its inbox write waits
    assert first == [True, True] and inbox.writing == 1
    second = asyncio.create_task(rounds.insert(_docs("v2", 0, 5), early=True))
    await until(lambda: held.inserts == 2, 5, "the insert")  # it waits on the database
    third = await asyncio.wait_for(rounds.insert(_docs("v3", 0, 5), early=True), 10)
    assert third == [True, True] and not second.done()
    held.release.set()
    assert await second == [True, True]
    inbox.release.set()
    await rounds.settled(10)
    documents = await _inbox(services)
    assert [doc["_id"] for doc in documents] == [1, 2, 3]
    by_number = {doc["_id"]: doc["items"][0]["ids"] for doc in documents}
    assert by_number == {n: [d["_id"] for d in _docs(v, 0, 5)] for n, v in ((1, "v1"),
                         (2, "v2"), (3, "v3"))}  # fmt: skip


async def test_single_fixes_wait_for_the_last_rounds_inbox_write_and_share_the_next_round(
    services: Services,
) -> None:
    """Fewer than `parallel_from` documents waiting: no second round while one is still
    writing its inbox document; what arrived meanwhile leaves together in the next one."""
    collection = services.store.db["positions"]
    inbox = _HeldInbox(_fleet(services))
    rounds = InsertRounds(collection, hand_on=inbox, max_in_flight=2, parallel_from=200)
    assert await rounds.insert(_docs("v1", 0), early=True) == [True]
    assert inbox.writing == 1 and rounds.rounds == 1
    waiting = [asyncio.create_task(rounds.insert(_docs("v2", s), early=True)) for s in (0, 5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert rounds.rounds == 1 and not any(task.done() for task in waiting)
    inbox.release.set()
    assert [await task for task in waiting] == [[True], [True]]
    await rounds.settled(10)
    assert rounds.rounds == 2
    assert [len(doc["items"][0]["ids"]) for doc in await _inbox(services)] == [1, 2]


async def test_a_round_of_duplicates_only_leaves_an_empty_inbox_document(
    services: Services,
) -> None:
    store = _store(services)
    await store.append("acme", "v1", [_fix(0)], "t")
    again = await store.append("acme", "v1", [_fix(0)], "t")
    assert again[0].duplicate
    assert [len(d["items"]) for d in await _inbox(services)] == [1, 0]


async def test_a_tombstone_stands_for_a_number_whose_round_failed(services: Services) -> None:
    fleet = _fleet(services)
    lost = await fleet.take_number()
    await fleet.tombstone(lost)
    await fleet.push_reading("acme", "v1", {"km": 10.0, "at": T0, "source": "erp"})
    docs = await fleet.after(0, 10)
    assert [(d["_id"], len(d["items"])) for d in docs] == [(lost, 0), (lost + 1, 1)]
    await fleet.tombstone(lost + 1)  # a number whose document landed after all: kept
    assert len((await fleet.after(lost, 10))[0]["items"]) == 1
    assert await fleet.last_number() == lost + 1
    assert await fleet.trim(lost) == 1
    assert [d["_id"] for d in await fleet.after(0, 10)] == [lost + 1]


async def test_a_step_of_the_servers_clock_keeps_a_given_up_number_taken_its_day(
    services: Services, gateway_time: Callable[[datetime], None]
) -> None:
    """A number the fold gave up stays taken `GIVEN_UP_KEPT` (a day) after the fold is past
    it, so that a frozen writer finds it taken: the database server's clock stepping 2 days
    forward (the next reading follows it) no longer lets the trim drop it at once; it cuts at
    the expiry's held time."""
    fleet = _fleet(services)
    now = clock.utcnow()
    gateway_time(now)
    lost = await fleet.take_number()
    assert await fleet.give_up(lost, [])
    await services.store.expiry.expire()  # a pass on the right time
    gateway_time(now + timedelta(days=2))

    await fleet.trim(lost)
    assert [d["_id"] for d in await fleet.after(0, 10)] == [lost]


class _CountedFinds:
    """A collection that records the filter of every `find` (the inbox as a reader uses it)."""

    def __init__(self, collection: Any) -> None:
        self._c = collection
        self.codec_options = collection.codec_options
        self.filters: list[dict[str, Any]] = []

    def find(self, query: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.filters.append(query)
        return self._c.find(query, *args, **kwargs)


async def test_a_reader_asks_the_inbox_only_for_numbers_taken_since_it_last_read(
    services: Services,
) -> None:
    """Another process's fold (nothing in its memory) reads the counter first: caught up, it
    reads no inbox document at all; a round behind, it looks up that round's number only,
    not the next 200 (each looked-up number costs the database a lookup, found or not)."""
    writer = _fleet(services)
    db = services.store.db
    inbox = _CountedFinds(db["fleet_inbox"])
    reader = FleetStore(inbox, db["fleet"], db["fleet_marks"], Expiry())  # type: ignore[arg-type]
    await writer.push_reading("acme", "v1", {"km": 10.0, "at": T0, "source": "erp"})
    assert [d["_id"] for d in await reader.after(0, 200)] == [1]
    assert inbox.filters == [{"_id": {"$in": [1]}}]
    assert await reader.after(1, 200) == [] and len(inbox.filters) == 1  # caught up
    await writer.push_reading("acme", "v1", {"km": 11.0, "at": T0, "source": "erp"})
    await writer.push_reading("acme", "v1", {"km": 12.0, "at": T0, "source": "erp"})
    assert [d["_id"] for d in await reader.after(1, 200)] == [2, 3]
    assert inbox.filters[1:] == [{"_id": {"$in": [2, 3]}}]


async def test_another_process_reads_the_inbox_past_more_missing_numbers_than_it_reads_at_once(
    services: Services,
) -> None:
    """A reader that did not write the documents (another process) reads them by number; a
    run of taken numbers without documents longer than what it reads at once does not hide
    the documents after it (the fold must see them to know the run is a gap)."""
    writer = _fleet(services)
    db = services.store.db
    reader = FleetStore(db["fleet_inbox"], db["fleet"], db["fleet_marks"], Expiry())
    await writer.push_reading("acme", "v1", {"km": 10.0, "at": T0, "source": "erp"})
    for _ in range(7):
        await writer.take_number()  # rounds that died before writing, or still under way
    await writer.push_reading("acme", "v1", {"km": 11.0, "at": T0, "source": "erp"})
    assert [d["_id"] for d in await reader.after(0, 3)] == [1]
    assert [d["_id"] for d in await reader.after(1, 3)] == [9]  # past numbers 2 to 8
    assert await reader.after(9, 3) == []
    await writer.take_number()  # a round under way: nothing to read yet, nothing beyond
    assert await reader.after(9, 3) == []


async def test_states_and_checkpoints_only_move_forward(services: Services) -> None:
    fleet = _fleet(services)
    await fleet.save_states([SavedState("acme", "v1", {"odometer_km": 2.0}, 20)])
    await fleet.save_states(
        [
            SavedState("acme", "v1", {"odometer_km": 1.0}, 10),  # an older fold: ignored
            SavedState("acme", "v2", {"odometer_km": 5.0}, 10),
        ]
    )
    doc = await fleet.state("acme", "v1")
    assert doc is not None and doc["state"] == {"odometer_km": 2.0} and doc["through"] == 20
    again = await fleet.states([("acme", "v1"), ("acme", "v2"), ("acme", "v3")])
    assert sorted(again) == [("acme", "v1"), ("acme", "v2")]
    assert again[("acme", "v2")]["shard"] in range(16)
    await fleet.save_checkpoints({0: 7, 3: 9})
    await fleet.save_checkpoints({0: 5})
    assert await fleet.checkpoints([0, 3, 4]) == {0: 7, 3: 9, 4: 0}


async def test_neighbours_skip_rejected_fixes_and_tracks_page_by_time(services: Services) -> None:
    store = _store(services)
    appended = await store.append("acme", "v1", [_fix(0), _fix(10), _fix(20), _fix(30)], "t")
    await store.mark_rejected("acme", {appended[1].id: "zero_position"})
    await store.mark_rejected("acme", {appended[1].id: "zero_position"})  # again: a no-op
    before, after = await store.neighbours("acme", "v1", T0 + timedelta(seconds=15))
    assert before is not None and after is not None
    assert before["t"] == T0 and after["t"] == T0 + timedelta(seconds=20)
    excluded = await store.neighbours("acme", "v1", T0 + timedelta(seconds=15), [appended[2].id])
    assert excluded[1] is not None and excluded[1]["t"] == T0 + timedelta(seconds=30)
    first, next_one = await store.neighbours("acme", "v1", T0)
    assert first is None and next_one is not None and next_one["t"] == after["t"]
    track = await store.track("acme", "v1", None, None, None, 10)
    assert [f.get("rejected") for f in track] == [None, "zero_position", None, None]
    # Pages: after the cursor, within [start, end).
    page = await store.track("acme", "v1", T0, T0 + timedelta(seconds=30), T0, 10)
    assert [f["t"] for f in page] == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)]
    newest = await store.latest("acme", "v1", 2)
    assert [f["t"] for f in newest] == [T0 + timedelta(seconds=30), T0 + timedelta(seconds=20)]
    # Another vehicle whose id starts like this one's shares nothing.
    await store.append("acme", "v10", [_fix(5)], "t")
    assert len(await store.track("acme", "v1", None, None, None, 10)) == 4


async def test_another_tenant_never_sees_the_track_or_the_state(services: Services) -> None:
    store = _store(services)
    await store.append("acme", "v1", [_fix(0)], "t")
    await _fleet(services).save_states([SavedState("acme", "v1", {}, 1)])
    assert await store.track("other", "v1", None, None, None, 10) == []
    assert await store.latest("other", "v1", 10) == []
    assert await _fleet(services).state("other", "v1") is None


async def test_on_the_embedded_database_the_gateway_expires_fixes_itself_through_an_index(
    services: Services,
) -> None:
    """SecantusDB's TTL sweep reads every document of a collection with a TTL index every
    60 s, holding its storage lock: there the retention index is a plain index on `at`, and
    the gateway drops what has expired through it (a TTL index left by an earlier version is
    replaced)."""
    assert services.store.expiry.by_gateway
    store = _store(services)
    for collection in ("positions", "positions_refused"):
        indexes = await services.store.db[collection].index_information()
        # Nothing else costs every insert, but the track index the embedded database needs
        # for `_id` ranges (MongoDB reads them from `_id_`).
        assert sorted(indexes) == ["_id_", "retention", "track"]
        assert "expireAfterSeconds" not in indexes["retention"]
    assert await store.retention_seconds() == 90 * 86_400
    appended = await store.append("acme", "v1", [_fix(0), _fix(10)], "t")
    await store.mark_rejected("acme", {appended[0].id: "zero_position"})
    now = datetime.now(UTC)
    # The passes below are dated 89 and 31 days ahead: a pass taken first (the start's sweep
    # of group commit marks reads the expiry's time) makes such a date a step of the clock,
    # held back (`Expiry._cutoff`). The test's passes are the first.
    services.store.expiry._passed = None
    assert await services.store.expiry.expire(now + timedelta(days=89)) == 0
    await store.set_retention(30)
    assert await store.retention_seconds() == 30 * 86_400
    assert await services.store.expiry.expire(now + timedelta(days=31)) == 3  # 2 + 1 refusal
    for collection in ("positions", "positions_refused"):
        assert await services.store.db[collection].count_documents({}) == 0
    await services.store.db["positions"].drop_index("retention")
    await services.store.db["positions"].create_index(
        "at", name="retention", expireAfterSeconds=86_400
    )
    await services.store.ensure_indexes()
    indexes = await services.store.db["positions"].index_information()
    assert "expireAfterSeconds" not in indexes["retention"]


async def test_where_the_server_walks_its_ttl_indexes_the_retention_is_one(
    services: Services,
) -> None:
    """MongoDB expires through a TTL index itself: there the retention index is one, and a
    new retention changes it."""
    expiry = Expiry()  # the server's own sweep
    store = PositionStore(
        services.store.db["positions_ttl"], services.store.db["refused_ttl"], _fleet(services),
        expiry,
    )  # fmt: skip
    await store.ensure_indexes()
    assert await store.retention_seconds() == 90 * 86_400
    await store.set_retention(30)
    assert await store.retention_seconds() == 30 * 86_400
    refused = await services.store.db["refused_ttl"].index_information()
    assert refused["retention"]["expireAfterSeconds"] == 30 * 86_400
    assert await expiry.expire() == 0  # the server does it


def test_derived_ids_are_deterministic_and_carry_the_time() -> None:
    a = derived_id(T0, "acme", "v1", "vehicle.geofence.exited", "g1")
    assert a == derived_id(T0, "acme", "v1", "vehicle.geofence.exited", "g1")
    assert a != derived_id(T0, "acme", "v1", "vehicle.geofence.entered", "g1")
    assert a.generation_time == T0


async def test_the_fold_reads_its_own_processs_rounds_as_the_database_holds_them(
    services: Services,
) -> None:
    """A process keeps the inbox documents it wrote for its own fold: the same documents a
    read gives (through BSON: milliseconds, aware datetimes), as long as they follow on from
    where the fold is; a number another process wrote sends the fold to the database."""
    store, fleet = _store(services), _fleet(services)
    await store.append("acme", "v1", [_fix(0), _fix(5)], "t")
    await store.append("acme", "v1", [_fix(0)], "t")  # a duplicate only: an empty document
    stored = await services.store.db["fleet_inbox"].find({}).sort("_id", 1).to_list(None)
    assert await fleet.after(0, 10) == stored and len(stored) == 2
    assert stored[0]["at"].tzinfo is not None and stored[0]["at"].microsecond % 1000 == 0
    other = await fleet.take_number()  # another process's round, written behind this one's back
    await services.store.db["fleet_inbox"].insert_one({"_id": other, "at": T0, "items": []})
    await store.append("acme", "v1", [_fix(10)], "t")
    assert [d["_id"] for d in await fleet.after(2, 10)] == [other, other + 1]
    assert [d["_id"] for d in await fleet.after(other, 10)] == [other + 1]


async def test_a_track_read_on_the_embedded_database_is_served_by_an_index_not_a_scan(
    services: Services,
) -> None:
    """SecantusDB reads an `_id` range by scanning the collection (the whole history of every
    vehicle, for each track read); the `track` index (tenant, `_id`) serves it instead."""
    assert await services.store.scans_id_ranges()
    store = _store(services)
    for vehicle in ("v1", "v2"):
        await store.append("acme", vehicle, [_fix(s) for s in range(0, 50, 5)], "t")
    low, high = "v1-", "v1-~"
    query = {"tenant": "acme", "_id": {"$gte": low, "$lt": high}}
    plan = await services.store.db["positions"].find(query).sort("_id", 1).limit(3).explain()
    assert "COLLSCAN" not in str(plan["queryPlanner"]) and "track" in str(plan), plan
    assert plan["executionStats"]["totalDocsExamined"] <= 10, plan["executionStats"]
    assert len(await store.track("acme", "v1", None, None, None, 3)) == 3


async def test_a_dead_rounds_fixes_are_looked_for_in_bounded_reads_after_a_quiet_stretch(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fold looks for a dead round's fixes backwards in time in windows that grow across
    quiet times and shrink again once one holds 2,000 fixes. After a quiet stretch (a night)
    the window has grown to an hour, and the busy hour before the quiet is then read whole, in
    one query, whatever it holds (every tenant's fixes of that hour: on a busy fleet a read
    that may outlive the database's deadline, retried by the fold at the gap each pass). No
    read may return more than the 2,000 fixes a window is meant to hold."""
    store, collection = _store(services), services.store.db["positions"]
    now = datetime.now(UTC).replace(microsecond=0)
    busy = now - timedelta(hours=3)
    earlier = [
        {"_id": position_id(f"v{i % 50}", T0 + timedelta(seconds=i)), "tenant": "acme",
         "vehicle": f"v{i % 50}", "t": T0 + timedelta(seconds=i), "lat": -23.5, "lon": -46.6,
         "at": busy + timedelta(milliseconds=100 * i), "seq": 1 + i // 500, "source": "s"}
        for i in range(5_000)
    ]  # fmt: skip
    dead = [
        {"_id": position_id("w1", T0 + timedelta(seconds=i)), "tenant": "acme",
         "vehicle": "w1", "t": T0 + timedelta(seconds=i), "lat": -23.5, "lon": -46.6,
         "at": now, "seq": 11, "source": "s"}
        for i in range(10)
    ]  # fmt: skip
    # The set-up's 5,010 fixes in one insert (the gateway's rounds hold 2,000 at most): under
    # the suite's load it outlasts the app's 5 s database deadline, so it gets its own. The
    # search below still reads under the app's deadline.
    with pymongo.timeout(120):
        await collection.insert_many([*earlier, *dead])
    reads = _count_reads(monkeypatch, store)
    found = (await store.of_rounds(range(11, 12), now + timedelta(seconds=60)))[11]
    assert sorted(doc["_id"] for doc in found) == [doc["_id"] for doc in dead]
    assert max(reads) <= 2_000, reads


class _CountedReads:
    """A collection's `find`, counting the documents each read returns."""

    def __init__(self, cursor: Any, reads: list[int]) -> None:
        self._cursor, self._reads = cursor, reads

    def sort(self, *args: Any) -> _CountedReads:
        return _CountedReads(self._cursor.sort(*args), self._reads)

    def limit(self, n: int) -> _CountedReads:
        return _CountedReads(self._cursor.limit(n), self._reads)

    async def to_list(self, length: int | None) -> list[Any]:
        docs = await self._cursor.to_list(length)
        self._reads.append(len(docs))
        return list(docs)


def _count_reads(monkeypatch: pytest.MonkeyPatch, store: PositionStore) -> list[int]:
    reads: list[int] = []
    real_find = store._p.find
    monkeypatch.setattr(store._p, "find", lambda *a, **k: _CountedReads(real_find(*a, **k), reads))
    return reads


async def test_the_search_for_a_dead_rounds_fixes_stops_at_what_the_fold_read_before_it(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a fix of an earlier round nearby (a fleet parked for days, readings and ticks
    only), the search would read back its whole bound, 60 s at a time; the newest receipt the
    fold read below the number bounds it instead. An empty track is not read at all."""
    store, collection = _store(services), services.store.db["positions"]
    now = datetime.now(UTC).replace(microsecond=0)
    assert await store.of_rounds(range(7, 8), now) == {7: []}
    old = {"_id": position_id("w1", T0), "tenant": "acme", "vehicle": "w1", "t": T0,
           "lat": -23.5, "lon": -46.6, "at": now - timedelta(days=6), "source": "s"}  # fmt: skip
    dead = {**old, "_id": position_id("w1", T0 + timedelta(seconds=5)), "at": now, "seq": 7}
    await collection.insert_many([old, dead])
    reads = _count_reads(monkeypatch, store)
    found = await store.of_rounds(range(7, 8), now, received_after=now - timedelta(minutes=1))
    assert [doc["_id"] for doc in found[7]] == [dead["_id"]]
    assert len(reads) < 20, len(reads)


def _stored(vehicle: str, seconds: int, at: datetime, seq: int | None) -> dict[str, Any]:
    """A fix as a round stored it: received at `at`, stamped with its round's number."""
    t = T0 + timedelta(seconds=seconds)
    doc = {"_id": position_id(vehicle, t), "tenant": "acme", "vehicle": vehicle, "t": t,
           "lat": -23.5, "lon": -46.6, "at": at, "source": "s"}  # fmt: skip
    return doc if seq is None else {**doc, "seq": seq}


async def test_a_dead_rounds_fixes_with_no_earlier_fix_are_found_in_a_few_reads_not_a_week(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No fix of an earlier round to stop the search (a new deployment), nor a receipt the
    fold read: once a fix of the round is found the rest are near (a round's fixes are
    received within 30 s of each other), and past them the nearest older fix is one read, so
    the search stops where the collection does instead of reading 7 days of empty windows."""
    store, collection = _store(services), services.store.db["positions"]
    now = datetime.now(UTC).replace(microsecond=0)
    # Round 11 died after its insert: 10 fixes received over 27 s, across windows.
    dead = [_stored("w1", i, now - timedelta(seconds=3 * i), 11) for i in range(10)]
    later = [_stored("w2", i, now + timedelta(seconds=5), 12) for i in range(3)]
    await collection.insert_many([*dead, *later])
    reads = _count_reads(monkeypatch, store)
    found = await store.of_rounds(range(11, 12), now + timedelta(seconds=60))
    assert sorted(doc["_id"] for doc in found[11]) == sorted(doc["_id"] for doc in dead)
    assert len(reads) <= 10, len(reads)
    # A round that stored nothing (it died before its insert), still with no earlier fix.
    reads.clear()
    assert await store.of_rounds(range(10, 11), now + timedelta(seconds=60)) == {10: []}
    assert len(reads) <= 10, len(reads)


async def test_a_dead_rounds_search_jumps_a_quiet_stretch_to_the_earlier_fix_that_ends_it(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round that stored nothing after two quiet days, the fold's memory gone (a restart):
    the earlier round's fix two days back still bounds the search, found in one read instead
    of 2,880 empty windows; and a round that stored fixes stops near them, not there."""
    store, collection = _store(services), services.store.db["positions"]
    now = datetime.now(UTC).replace(microsecond=0)
    old = _stored("w1", 0, now - timedelta(days=2), 6)
    dead = _stored("w1", 50, now, 8)
    await collection.insert_many([old, dead])
    reads = _count_reads(monkeypatch, store)
    assert await store.of_rounds(range(7, 8), now + timedelta(seconds=60)) == {7: []}
    assert len(reads) <= 10, len(reads)
    reads.clear()
    found = await store.of_rounds(range(8, 9), now + timedelta(seconds=60))
    assert [doc["_id"] for doc in found[8]] == [dead["_id"]]
    assert len(reads) <= 10, len(reads)


async def test_a_cancelled_caller_leaves_its_roundmates_answered_and_the_round_handed_on(
    services: Services,
) -> None:
    """A request cancelled while its round inserts (aiohttp cancels handlers still running at
    shutdown): the other callers of the round get their outcomes, and the round's inbox
    document is written (its fixes are folded)."""
    held = _HeldInserts(services.store.db["positions"], held=2)
    inbox = _HeldInbox(_fleet(services))  # round 1's inbox write held: the next two gather
    rounds = InsertRounds(held, hand_on=inbox, max_in_flight=2, parallel_from=200)  # type: ignore[arg-type]
    await rounds.insert(_docs("v0", 0), early=True)
    cancelled = asyncio.create_task(rounds.insert(_docs("v1", 0), early=True))
    answered = asyncio.create_task(rounds.insert(_docs("v2", 0), early=True))
    await until(lambda: len(rounds._queue) == 2, 5, "two rounds queued")
    inbox.release.set()
    await until(lambda: held.inserts == 2, 5, "round 2's insert")  # both callers, inserting
    cancelled.cancel()
    held.release.set()
    assert await asyncio.wait_for(answered, 10) == [True]
    await rounds.settled(10)
    assert [doc["_id"] for doc in await _inbox(services)] == [1, 2]
    assert await services.store.db["positions"].count_documents({}) == 3
