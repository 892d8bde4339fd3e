"""`gateway cleanup`: events, finished deliveries and finished flow runs older than the
retention are dropped, for every tenant; work not done yet (a delivery still retrying, however
old) is never dropped; `--dry-run` only counts."""

from __future__ import annotations

import asyncio
import copy
import subprocess
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from gateway.config import Settings
from gateway.retention import clean_up
from gateway.services import Services
from gateway.store import Doc, Store, history
from gateway.store.deliveries import DeliveryStore
from gateway.web.state import services_key
from tests.flow_support import drain
from tests.partner_double import (
    Client,
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
    post,
)
from tests.query_plans import PlanListener
from tests.support import cli_env, run_command
from tests.test_fleet_fold import events_of, make_vehicle

__all__ = ["partner"]  # the fixture

STOPPING_FLOW = {
    "name": "gate",
    "on": {"events": ["entity.created"]},
    "steps": [{"id": "stop", "when": "`false`"}],
}


async def _counts(services: Services) -> dict[str, Any]:
    db = services.store.db
    return {
        "events": await db["events"].count_documents({}),
        "deliveries": sorted(d["status"] for d in await db["deliveries"].find({}).to_list(None)),
        "flow_runs": sorted(r["status"] for r in await db["flow_runs"].find({}).to_list(None)),
    }


async def _history(client: Client, partner: Partner) -> Services:
    """Two vehicles of acme and one of another tenant: each write's `entity.created`
    delivered to the partner (the first answered, the second refused with 503, so still
    retrying) and run by a flow that stops at once."""
    services: Services = client.app[services_key]
    erp = await create_partner(client, partner.url)
    action = await create_action(client, erp["id"])
    await create_subscription(client, action["id"], ("entity.created",))
    await post(client, "/api/v1/flows", STOPPING_FLOW)
    partner.respond_with(503)
    partner.respond_with(200, times=1)
    await create_vehicle(client, "ABC1D23")
    await drain(services)
    await create_vehicle(client, "DEF4G56")
    await drain(services)
    await post(client, "/api/v1/entities/vehicle", {"plate": "GHI7J89"}, tenant="beta")
    await drain(services)
    return services


@pytest.mark.parametrize("chunk", [1_000, 2])
async def test_cleanup_drops_old_history_of_every_tenant_and_keeps_work_not_done(
    client: Client, partner: Partner, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "CHUNK", chunk)  # 2: the 3 events go in two deletes
    services = await _history(client, partner)
    before = await _counts(services)
    assert before == {
        "events": 3,
        "deliveries": ["pending", "succeeded"],
        "flow_runs": ["stopped", "stopped"],
    }

    recent = await clean_up(services.store, timedelta(days=1))
    assert (recent.events, recent.deliveries, recent.flow_runs) == (0, 0, 0)

    later = datetime.now(UTC) + timedelta(days=91)  # the same history, 91 days on
    counted = await clean_up(services.store, timedelta(days=90), dry_run=True, clock=lambda: later)
    assert (counted.events, counted.deliveries, counted.flow_runs) == (3, 1, 2)
    assert await _counts(services) == before  # a dry run drops nothing

    dropped = await clean_up(services.store, timedelta(days=90), clock=lambda: later)
    assert (dropped.events, dropped.deliveries, dropped.flow_runs) == (3, 1, 2)
    assert await _counts(services) == {"events": 0, "deliveries": ["pending"], "flow_runs": []}


async def test_a_finished_delivery_changed_recently_is_kept_whenever_it_was_first_due(
    client: Client, partner: Partner
) -> None:
    services = await _history(client, partner)
    later = datetime.now(UTC) + timedelta(days=91)
    # Replayed, succeeded again "yesterday" (91 days on): its last change is recent.
    await services.store.db["deliveries"].update_one(
        {"status": "succeeded"}, {"$set": {"updated_at": later - timedelta(days=1)}}
    )
    dropped = await clean_up(services.store, timedelta(days=90), clock=lambda: later)
    assert dropped.deliveries == 0
    assert (await _counts(services))["deliveries"] == ["pending", "succeeded"]


def test_less_than_a_day_of_history_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 day"):
        asyncio.run(clean_up(None, timedelta(hours=23)))  # type: ignore[arg-type]


@pytest.mark.timeout(180)  # three child processes, each opening the services
async def test_the_cli_counts_then_drops_and_refuses_zero_days(
    client: Client, partner: Partner, settings: Settings, mongodb_uri: str
) -> None:
    services = await _history(client, partner)
    env = cli_env(settings, mongodb_uri)

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await run_command(env, "cleanup", *args)

    counted = await cli("--days", "1", "--dry-run")
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.startswith(
        "would drop 0 events, 0 finished deliveries and 0 finished flow runs from before "
    )
    dropped = await cli("--days", "1")
    assert dropped.returncode == 0 and dropped.stdout.startswith("dropped 0 events")
    assert (await _counts(services))["events"] == 3
    refused = await cli("--days", "0")
    assert refused.returncode == 2 and "must be at least 1" in refused.stderr


async def test_a_fold_event_stored_today_for_a_reading_days_old_is_kept_until_it_is_old(
    services: Services,
) -> None:
    # The fold's event ids carry the reading's (or fix's) device time, days before the
    # event is stored: cleanup counts from when it was stored, not from that id.
    vehicle = await make_vehicle(services)
    at = datetime.now(UTC) - timedelta(days=5)
    reading = {"km": 42_000.0, "at": at, "source": "checklist"}
    await services.store.fleet.push_reading("acme", vehicle, reading)
    await services.fold.run_until_idle()
    (event,) = await events_of(services, "vehicle.odometer.rebaselined")
    assert ObjectId(event["_id"]).generation_time < datetime.now(UTC) - timedelta(days=4)

    kept = await clean_up(services.store, timedelta(days=3))
    assert kept.events == 0
    assert len(await events_of(services, "vehicle.odometer.rebaselined")) == 1

    later = datetime.now(UTC) + timedelta(days=4)
    dropped = await clean_up(services.store, timedelta(days=3), clock=lambda: later)
    assert dropped.events == 1
    assert await events_of(services, "vehicle.odometer.rebaselined") == []


class _ReplayedMeanwhile:
    """The deliveries collection, as cleanup sees it, with an admin replaying a dead delivery
    after cleanup read it and before cleanup drops it (the database itself is the real one)."""

    def __init__(
        self,
        c: Any,
        delivery_id: str,
        replay: Callable[[], Awaitable[int]],
        *,
        at_delete: bool = False,
    ) -> None:
        self._c, self._id, self._replay, self.replayed = c, delivery_id, replay, 0
        self._at_delete = at_delete  # not before a read by id: as the delete is sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._c, name)

    def find(self, doc_filter: Doc, *args: Any, **kwargs: Any) -> Any:
        cursor = self._c.find(doc_filter, *args, **kwargs)
        if "_id" not in doc_filter:  # cleanup looking for what is old
            return cursor
        racing = self

        class ReadAgain:  # cleanup reading its chunk again just before it drops it
            async def to_list(self, length: int | None) -> list[Doc]:
                if not racing._at_delete:
                    await racing._before_drop(doc_filter)
                return list(await cursor.to_list(length))

        return ReadAgain()

    async def _before_drop(self, doc_filter: Doc) -> None:
        target = doc_filter["_id"]
        ids = target["$in"] if isinstance(target, dict) else [target]
        if self._id in ids and not self.replayed:
            self.replayed = await self._replay()

    async def delete_many(self, doc_filter: Doc, *args: Any, **kwargs: Any) -> Any:
        await self._before_drop(doc_filter)
        return await self._c.delete_many(doc_filter, *args, **kwargs)

    async def delete_one(self, doc_filter: Doc, *args: Any, **kwargs: Any) -> Any:
        await self._before_drop(doc_filter)
        return await self._c.delete_one(doc_filter, *args, **kwargs)


async def _dead_delivery_replayed_meanwhile(
    client: Client, partner: Partner, *, at_delete: bool = False
) -> tuple[Services, Doc, datetime, _ReplayedMeanwhile, Store]:
    """The history, its delivery still retrying given up (dead) and, 91 days on, replayed by
    an admin just as cleanup (a store whose deliveries are `racing`) drops its chunk:
    (services, the dead delivery, that day, racing, the store)."""
    services = await _history(client, partner)
    deliveries = services.store.db["deliveries"]
    await deliveries.update_one({"status": "pending"}, {"$set": {"status": "dead"}})
    (dead,) = await deliveries.find({"status": "dead"}).to_list(None)
    later = datetime.now(UTC) + timedelta(days=91)

    async def replay() -> int:
        return await services.store.deliveries.replay("acme", {}, later, delivery_id=dead["_id"])

    racing = _ReplayedMeanwhile(deliveries, dead["_id"], replay, at_delete=at_delete)
    store = copy.copy(services.store)
    store.deliveries = DeliveryStore(racing)
    return services, dead, later, racing, store


async def test_a_delivery_replayed_while_cleanup_drops_its_chunk_is_not_dropped(
    client: Client, partner: Partner
) -> None:
    # Cleanup, having read it among the old finished ones, drops them.
    services, dead, later, racing, store = await _dead_delivery_replayed_meanwhile(client, partner)
    deliveries = services.store.db["deliveries"]
    dropped = await clean_up(store, timedelta(days=90), clock=lambda: later)

    assert racing.replayed == 1
    assert dropped.deliveries == 1  # the one that succeeded
    assert (await _counts(services))["deliveries"] == ["pending"]
    assert (await deliveries.find_one({"_id": dead["_id"]}) or {}).get("replayed_at")


async def test_a_delivery_replayed_as_cleanup_sends_its_delete_is_not_dropped(
    query_plans: PlanListener, client: Client, partner: Partner
) -> None:
    """The delete of a chunk checks the status and last change in its own filter, on the
    embedded database too, where that filter is read through `_id` (a point lookup each,
    the rest matched on what it read): read again by id just before an unguarded delete, a
    replay in between was dropped."""
    services, _, later, racing, store = await _dead_delivery_replayed_meanwhile(
        client, partner, at_delete=True
    )
    query_plans.plans.clear()
    dropped = await clean_up(store, timedelta(days=90), clock=lambda: later)
    plans = query_plans.of("deliveries") + query_plans.of("flow_runs")

    assert racing.replayed == 1
    assert dropped.deliveries == 1  # the one that succeeded
    assert (await _counts(services))["deliveries"] == ["pending"]
    assert [p for p in plans if p.command == "delete"]
    assert [f"{p.collection} {p.shape}: {p.stage}" for p in plans if p.scans] == []
