"""A change stream's wake names the shard a unit is stored in (`leased_loop.follow_arrivals`,
the `shard` the store wrote), not one computed again from its id: an ordered action's
deliveries are stored in their order key's shard (`actions/ordering.py`), and a look that read
their id's shard found nothing; the delivery waited for the poll."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from gateway.actions.ordering import event_place
from gateway.leased_loop import follow_arrivals
from gateway.services import Services
from gateway.store.deliveries import shard_of
from tests.processes import until
from tests.test_leased_claims import _Runner


def _ordered(delivery_id: str) -> dict[str, Any]:
    return event_place("act-1", {"entity": {"id": "veh-1", "rev": 3}, "position": 0}, delivery_id)


async def test_an_ordered_delivery_another_process_created_is_claimed_from_its_stored_shard(
    services: Services,
) -> None:
    delivery_id = next(
        f"d-{n:06d}"
        for n in range(100)
        if _ordered(f"d-{n:06d}")["shard"] != shard_of(f"d-{n:06d}")
    )
    place = _ordered(delivery_id)
    deliveries = services.store.db["deliveries"]
    runner = _Runner(shards=32, poll_seconds=60)
    running = asyncio.create_task(runner.loop.run(runner.look))
    follower = asyncio.create_task(
        follow_arrivals(
            partial(services.store.deliveries.arrivals, await_ms=200),
            runner.claims.arrived,
            "test runner",
        )
    )
    try:
        await until(lambda: len(runner.claimed) >= 64, 10, "the first look and the stream's")
        await asyncio.sleep(0.3)
        runner.claimed.clear()
        runner.due[place["shard"]] = [{"_id": delivery_id, "tenant": "acme"}]
        await deliveries.insert_one(
            {"_id": delivery_id, "tenant": "acme", "status": "pending", **place}
        )
        await until(lambda: delivery_id in runner.claims.held, 5, "the claim the insert woke")
        assert runner.claimed == [place["shard"]]

        # made pending again (a replay, a release): the update's document is looked up
        runner.claims.held.clear()
        runner.claimed.clear()
        await deliveries.update_one({"_id": delivery_id}, {"$set": {"status": "failed"}})
        runner.due[place["shard"]] = [{"_id": delivery_id, "tenant": "acme"}]
        await deliveries.update_one({"_id": delivery_id}, {"$set": {"status": "pending"}})
        await until(lambda: delivery_id in runner.claims.held, 5, "the claim the update woke")
        assert runner.claimed == [place["shard"]]
    finally:
        follower.cancel()
        await runner.loop.stop()
        await running
