"""The events feed (`GET /api/v1/events?after=`): events in the order they were stored, each a
settle window after, so a follower sees every event once, whichever process wrote it."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from bson import ObjectId

from gateway.clock import utcnow
from gateway.config import ConfigError, Settings
from gateway.services import Services
from gateway.store.events import EventStore
from gateway.web.state import services_key
from tests.processes import Gateway, two_gateways, wait_until
from tests.support import auth

Client = TestClient[Any, Any]
SETTLE = {"GATEWAY_EVENTS_FEED_SETTLE_SECONDS": "6"}  # past the 5 s database deadline


def _now_text() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Follower:
    """Reads the feed on from its cursor, as an integrator's sync job would."""

    def __init__(self, gateway: Gateway, start: str) -> None:
        self._gateway = gateway
        self.cursor = start
        self.seen: list[dict[str, Any]] = []

    def read(self) -> None:
        while True:
            status, page = self._gateway.get(f"/api/v1/events?after={self.cursor}&limit=50", auth())
            assert status == 200, page
            self.seen += page["items"]
            self.cursor = page["next_cursor"]
            if len(page["items"]) < 50:
                return


def _whole_log(gateway: Gateway) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor = ""
    while True:
        status, page = gateway.get(f"/api/v1/events?limit=200{cursor}", auth())
        assert status == 200, page
        events += page["items"]
        if not page["next_cursor"]:
            return events
        cursor = f"&cursor={page['next_cursor']}"


def test_a_follower_of_the_feed_sees_every_event_once_while_two_processes_write(
    tmp_path: Path, settings: Settings, mongodb_uri: str
) -> None:
    with two_gateways(tmp_path, settings, mongodb_uri, **SETTLE) as gateways:
        follower = Follower(gateways[0], _now_text())
        plates = [f"FED{i}A{j}3" for i in range(3) for j in range(4)]
        for plate in plates:
            gateways[0].create("/api/v1/entities/vehicle", {"plate": plate})
        stop = threading.Event()

        def write(worker: int) -> None:
            n = 0
            while not stop.is_set():
                plate = plates[(worker * 5 + n) % len(plates)]
                gateways[(worker + n) % 2].request(
                    "PATCH", f"/api/v1/entities/vehicle/{plate}", {"attributes": {"n": n}}, auth()
                )
                n += 1

        writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for writer in writers:
            writer.start()
        try:
            until = time.monotonic() + 8
            while time.monotonic() < until:
                follower.read()
                time.sleep(0.1)
        finally:
            stop.set()
            for writer in writers:
                writer.join()

        def caught_up() -> bool:  # with the log, whose last writes the relays still store
            follower.read()
            return len(follower.seen) >= len(_whole_log(gateways[1]))

        wait_until(caught_up, 60, "the follower to reach the end of the log", every=0.5)
        log = _whole_log(gateways[1])
        assert len(log) > 100
        ids = [e["id"] for e in follower.seen]
        assert len(ids) == len(set(ids))  # none twice
        assert set(ids) == {e["id"] for e in log}  # none missed
        stored = [(e["relayed_at"], e["id"]) for e in follower.seen]
        assert stored == sorted(stored)


def test_a_late_fixs_geofence_exit_reaches_the_follower_of_the_feed(
    tmp_path: Path, settings: Settings, mongodb_uri: str
) -> None:
    """A tracker uploads its buffer (fixes of 10 minutes ago) leaving an authorized
    geofence: the exit's id carries the fix's time, minutes down the newest-first list; the
    feed answers it when it was stored."""
    env = {"MONGODB_URI": mongodb_uri, "GATEWAY_DATABASE": settings.database, **SETTLE}
    gateway = Gateway(tmp_path / "gateway", **env).start(timeout=90)
    try:
        gateway.create("/api/v1/entities/vehicle", {"plate": "BUF1A23"})
        circle = {"lat": -23.55, "lon": -46.63, "radius_m": 300}
        gateway.create(
            "/api/v1/geofences", {"name": "depot", "kind": "authorized", "circle": circle}
        )
        trigger = gateway.create(
            "/api/v1/triggers",
            {"name": "gps", "entity_type": "vehicle", "target": "positions", "methods": ["POST"]},
        )
        follower = Follower(gateway, _now_text())
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
        fixes = [
            {
                "plate": "BUF1A23",
                "time": (start + timedelta(seconds=10 * i)).isoformat(),
                "lat": round(-23.55 + (0 if i < 10 else 0.0012 * (i - 9)), 6),
                "lon": -46.63,
                "speed_kmh": 48,
                "accuracy_m": 5,
            }
            for i in range(40)
        ]
        status, _, answer = gateway.request(
            "POST",
            f"/hooks/{trigger['id']}",
            fixes,
            headers={"Authorization": f"Bearer {trigger['token']}"},
        )
        assert status < 300, answer

        def exited() -> bool:
            follower.read()
            return any(e["type"] == "vehicle.geofence.exited" for e in follower.seen)

        wait_until(exited, 60, "the geofence exit in the feed", every=0.5)
        [exit_event] = [e for e in follower.seen if e["type"] == "vehicle.geofence.exited"]
        late = datetime.fromisoformat(exit_event["relayed_at"]) - datetime.fromisoformat(
            exit_event["occurred_at"]
        )
        assert late > timedelta(minutes=5)
    finally:
        gateway.stop()


async def test_the_feed_answers_an_event_once_its_settle_window_has_passed(
    aiohttp_client: Any, make_app: Any
) -> None:
    client: Client = await aiohttp_client(make_app(events_feed_settle_seconds=3))
    start = _now_text()
    answer = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "SET1A23"}, headers=auth()
    )
    assert answer.status == 201
    await client.app[services_key].relay.run_until_idle()
    first = await (await client.get(f"/api/v1/events?after={start}", headers=auth())).json()
    assert first == {"items": [], "next_cursor": start}  # stored less than 3 s ago
    await _until_in_feed(client, start)
    page = await (await client.get(f"/api/v1/events?after={start}", headers=auth())).json()
    [created] = page["items"]
    assert created["type"] == "entity.created"
    after = await client.get(f"/api/v1/events?after={page['next_cursor']}", headers=auth())
    assert (await after.json()) == {"items": [], "next_cursor": page["next_cursor"]}


async def _until_in_feed(client: Client, start: str) -> None:
    for _ in range(200):
        page = await (await client.get(f"/api/v1/events?after={start}", headers=auth())).json()
        if page["items"]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("nothing in the feed")


async def test_the_feed_takes_a_cursor_or_a_date_time_alone(client: Client) -> None:
    for query in (
        "after=yesterday",
        "after=2026-12-07T00:00:00",  # no offset: whose time?
        "after=2026-12-07",
        "after=123.nothex",
        "after=2026-12-07T00:00:00Z&type=entity.updated",
        "after=2026-12-07T00:00:00Z&cursor=0123456789abcdef01234567",
    ):
        answer = await client.get(f"/api/v1/events?{query}", headers=auth())
        assert answer.status == 400, query
    answer = await client.get(
        "/api/v1/events?after=2026-12-07T00:00:00-03:00&limit=5", headers=auth()
    )
    assert answer.status == 200
    document = await (await client.get("/openapi.json")).json()
    params = document["paths"]["/api/v1/events"]["get"]["parameters"]
    assert "after" in {p["name"] for p in params}


def test_a_settle_window_within_the_database_deadline_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_EVENTS_FEED_SETTLE_SECONDS must be longer"):
        Settings.from_env({"GATEWAY_EVENTS_FEED_SETTLE_SECONDS": "5"})  # the deadline's 5 s
    assert Settings.from_env({"GATEWAY_EVENTS_FEED_SETTLE_SECONDS": "6"})


async def test_an_insert_that_landed_after_its_deadline_is_stamped_again(
    services: Services,
) -> None:
    """A relay's insert that passed its deadline (a stalled database) and landed later has
    the stamp of its pass, older than the settle window: a follower may have read past it.
    The next pass, which finds it stored, stamps it again, so the feed answers it (again)."""
    events = services.store.events
    late = {"_id": ObjectId(), "tenant": "acme", "type": "entity.updated"}
    landed = datetime.now(UTC) - timedelta(minutes=1)
    await services.store.db["events"].insert_one({**late, "relayed_at": landed})
    await events.insert_many([dict(late)])  # the next pass's copy
    [stored] = await events.stored_after(
        "acme", landed, None, until=datetime.now(UTC) + timedelta(seconds=1), limit=5
    )
    assert stored["relayed_at"] > datetime.now(UTC) - timedelta(seconds=5)
    fresh = {"_id": ObjectId(), "tenant": "acme", "type": "entity.updated"}
    await services.store.db["events"].insert_one({**fresh, "relayed_at": datetime.now(UTC)})
    before = (await events.get("acme", str(fresh["_id"])) or {})["relayed_at"]
    await events.insert_many([dict(fresh)])  # a relay racing another: the copy just stored
    assert (await events.get("acme", str(fresh["_id"])) or {})["relayed_at"] == before


class _LateCursor:
    """A cursor whose results come `delay` late."""

    def __init__(self, cursor: Any, delay: float) -> None:
        self._cursor, self._delay = cursor, delay

    def sort(self, *args: Any, **kwargs: Any) -> _LateCursor:
        return _LateCursor(self._cursor.sort(*args, **kwargs), self._delay)

    def limit(self, n: int) -> _LateCursor:
        return _LateCursor(self._cursor.limit(n), self._delay)

    async def to_list(self, n: Any) -> Any:
        await asyncio.sleep(self._delay)
        return await self._cursor.to_list(n)


class _Stalled:
    """The events collection of a relay pass that stalls: each read and write answers
    `delay` late, and a write waits for `go` once it was `reached` (when given)."""

    def __init__(self, inner: Any, delay: float = 0.0, go: asyncio.Event | None = None) -> None:
        self._inner, self._delay, self._go = inner, delay, go
        self.reached = asyncio.Event()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        return _LateCursor(self._inner.find(*args, **kwargs), self._delay)

    async def update_many(self, *args: Any, **kwargs: Any) -> Any:
        self.reached.set()
        await asyncio.sleep(self._delay)
        if self._go is not None:
            await self._go.wait()
        return await self._inner.update_many(*args, **kwargs)


async def _page(store: EventStore, at: Any, after: Any, settle: float) -> list[dict[str, Any]]:
    until = utcnow() - timedelta(seconds=settle)
    return await store.stored_after("acme", at, after, until=until, limit=500)


async def test_a_restamp_that_lands_late_never_moves_an_event_behind_a_follower(
    services: Services,
) -> None:
    """Two passes stamp the same late event again: the one that took over, then the one that
    stalled between its read and its write. Its write set the event back to its earlier time,
    behind a follower that had read past another event meanwhile: never answered (rev48 F4;
    the restamp's write had lost its guard in 9458c535). Stamps only move forward."""
    events, settle = services.store.db["events"], 1.0
    old = utcnow() - timedelta(hours=1)
    late = {"_id": ObjectId(), "tenant": "acme", "type": "x", "relayed_at": old}
    await events.insert_one(late)
    go = asyncio.Event()
    stalled_events = _Stalled(events, go=go)
    stalled, other = EventStore(stalled_events, settle), EventStore(events, settle)
    stalled_pass = asyncio.create_task(stalled._restamp([late["_id"]]))
    await asyncio.wait_for(stalled_events.reached.wait(), 5)
    await asyncio.sleep(0.1)
    meanwhile = {"_id": ObjectId(), "tenant": "acme", "type": "x", "relayed_at": utcnow()}
    await events.insert_one(meanwhile)
    await asyncio.sleep(0.4)
    await other._restamp([late["_id"]])  # the pass that took over
    await asyncio.sleep(settle - 0.2)
    first = await _page(other, old + timedelta(minutes=1), None, settle)
    go.set()
    await stalled_pass
    await asyncio.sleep(settle + 0.1)
    cursor = first[-1]
    then = await _page(other, cursor["relayed_at"], cursor["_id"], settle)

    assert [e["_id"] for e in first] == [meanwhile["_id"]]
    assert [e["_id"] for e in then] == [late["_id"]]


async def test_a_slow_restamp_of_many_events_hides_none_from_a_follower(
    services: Services,
) -> None:
    """A fold's 200 events that landed after its deadline, stamped again 50 a query on a
    database answering each query 0.3 s late, while a follower reads the feed every 0.1 s.
    One time taken before every batch stamped the last ones long after it, behind the
    follower: 150 of the 200 were never answered (rev48 F4). Each batch is stamped as it is
    written."""
    events, settle = services.store.db["events"], 1.5
    old = utcnow() - timedelta(hours=1)
    late = [
        {"_id": ObjectId(), "tenant": "acme", "type": "x", "relayed_at": old} for _ in range(200)
    ]
    await events.insert_many(late)
    feed = EventStore(events, settle)
    restamp = asyncio.create_task(
        EventStore(_Stalled(events, delay=0.3), settle)._restamp([e["_id"] for e in late])
    )
    await asyncio.sleep(0.1)
    await events.insert_one(
        {"_id": ObjectId(), "tenant": "acme", "type": "x", "relayed_at": utcnow()}
    )
    seen: set[Any] = set()
    at, after = old + timedelta(minutes=1), None
    while not restamp.done():
        await asyncio.sleep(0.1)
        if page := await _page(feed, at, after, settle):
            seen |= {e["_id"] for e in page}
            at, after = page[-1]["relayed_at"], page[-1]["_id"]
    await asyncio.sleep(settle + 0.1)
    seen |= {e["_id"] for e in await _page(feed, at, after, settle)}

    assert not [e["_id"] for e in late if e["_id"] not in seen]
