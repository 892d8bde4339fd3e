"""An event's deliveries and flow runs (the event page, `GET /api/v1/deliveries?event_id=`)
are a range of ids, `<event id>:<...>`, read through an index: on the embedded SecantusDB
the primary index read every id of the collection (166 ms of its CPU at 10,000
deliveries), and the `_id`-descending index, given a bound the ids start with, found none.
Each test explains the very `find` commands the store sent (a command listener on a client
of the same database)."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from gateway.services import Services
from gateway.store.deliveries import DeliveryStore
from gateway.store.flow_runs import FlowRunStore
from tests.read_plans import Reads, read_plans

TENANTS = ("acme", "beta")


async def test_an_events_deliveries_are_read_through_an_index_and_all_found(
    services: Services, watched: tuple[Any, Reads]
) -> None:
    db, finds = watched
    events = [str(ObjectId()) for _ in range(300)]
    await db["deliveries"].insert_many(
        [
            {"_id": f"{event}:{sub}", "tenant": TENANTS[n % 2], "event": {"id": event}}
            for n, event in enumerate(events)
            for sub in ("sub_a", "sub_b", "aviso:erp:1")
        ]
    )
    store = DeliveryStore(db["deliveries"])
    event, tenant, stranger = events[101], TENANTS[1], TENANTS[0]
    found = await store.list(tenant, {"event_id": event}, before=None, limit=50)
    assert [d["_id"] for d in found] == [f"{event}:{s}" for s in ("sub_b", "sub_a", "aviso:erp:1")]
    assert await store.list(stranger, {"event_id": event}, before=None, limit=50) == []
    page = await store.list(tenant, {"event_id": event}, before=f"{event}:sub_b", limit=50)
    assert [d["_id"] for d in page] == [f"{event}:sub_a", f"{event}:aviso:erp:1"]
    plans = await read_plans(db, finds)
    assert {index for index, _ in plans} == {"by_tenant"} and max(n for _, n in plans) <= 3


async def test_an_events_deliveries_page_through_ids_that_prefix_one_another(
    services: Services, watched: tuple[Any, Reads]
) -> None:
    """A notification's recipients are `<run>:<step>:0` … `:11`: `…:1` is a prefix of the
    cursor `…:10` (SecantusDB's descending index misses such an id below such a bound)."""
    db, _ = watched
    event = str(ObjectId())
    ids = [f"{event}:aviso:push:{n}" for n in range(12)] + [f"{event}:sub_1"]
    await db["deliveries"].insert_many(
        [{"_id": i, "tenant": "acme", "event": {"id": event}} for i in ids]
    )
    store = DeliveryStore(db["deliveries"])
    for limit in (1, 5, 10, 50):
        seen: list[str] = []
        before = None
        while True:
            page = await store.list("acme", {"event_id": event}, before=before, limit=limit)
            seen += [d["_id"] for d in page]
            if len(page) < limit:
                break
            before = page[-1]["_id"]
        assert seen == sorted(ids, reverse=True), limit


async def test_an_event_id_that_is_no_event_id_lists_nothing(services: Services) -> None:
    """Not a range of other events' ids (`6` would be a prefix of many)."""
    event = "6b116d37b41c0324ef461cf0"
    await services.store.db["deliveries"].insert_one(
        {"_id": f"{event}:sub_1", "tenant": "acme", "event": {"id": event}}
    )
    store = services.store.deliveries
    assert len(await store.list("acme", {"event_id": event}, before=None, limit=50)) == 1
    for junk in ("6", "6b116d37b41c0324ef461cf", "x" * 24):
        assert await store.list("acme", {"event_id": junk}, before=None, limit=50) == []
    # The same id in upper case is that event (ids are compared canonically: idfix).
    upper = "6B116D37B41C0324EF461CF0"
    assert len(await store.list("acme", {"event_id": upper}, before=None, limit=50)) == 1


async def test_an_events_flow_runs_are_read_through_an_index_and_all_found(
    services: Services, watched: tuple[Any, Reads]
) -> None:
    db, finds = watched
    events = [str(ObjectId()) for _ in range(300)]
    await db["flow_runs"].insert_many(
        [
            {"_id": f"{event}:{flow}", "tenant": "acme", "flow": flow, "event": {"id": event}}
            for event in events
            for flow in ("aviso", "multa")
        ]
    )
    runs = FlowRunStore(db["flow_runs"])
    event = events[150]
    found = await runs.of_event("acme", event, 50)
    assert [r["_id"] for r in found] == [f"{event}:aviso", f"{event}:multa"]
    after = await runs.of_event("acme", event, 50, after=f"{event}:aviso")
    assert [r["_id"] for r in after] == [f"{event}:multa"]
    plans = await read_plans(db, finds)
    assert {index for index, _ in plans} == {"by_event"} and max(n for _, n in plans) <= 2


async def test_the_deliveries_list_pages_through_ids_that_prefix_one_another(
    services: Services,
) -> None:
    """The unfiltered list too: a page ending at `…:10` is followed by `…:1` and the rest."""
    events = sorted(str(ObjectId()) for _ in range(3))
    ids = [f"{e}:aviso:push:{n}" for e in events for n in range(12)]
    await services.store.db["deliveries"].insert_many(
        [{"_id": i, "tenant": "acme", "event": {"id": i[:24]}} for i in ids]
    )
    store = services.store.deliveries
    for limit in (1, 7, 10, 50):
        seen: list[str] = []
        before = None
        while True:
            page = await store.list("acme", {}, before=before, limit=limit)
            seen += [d["_id"] for d in page]
            if len(page) < limit:
                break
            before = page[-1]["_id"]
        assert seen == sorted(ids, reverse=True), limit
