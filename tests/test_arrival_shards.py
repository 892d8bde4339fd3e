"""A change stream's wake names the shard a unit is stored in (`leased_loop.follow_arrivals`,
the `shard` the store wrote), not one computed again from its id: an ordered action's
deliveries are stored in their order key's shard (`actions/ordering.py`), and a look that read
their id's shard found nothing; the delivery waited for the poll. Without change streams the
follower ends, said once, and the runner polls."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

import pytest
from pymongo.errors import OperationFailure

from gateway.actions.ordering import event_place
from gateway.leased_loop import follow_arrivals
from gateway.services import Services
from gateway.store.changes import ChangeStreamsUnavailable, changed_ids
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


class _Standalone:
    """A standalone MongoDB's collection: it refuses change streams."""

    def __init__(self) -> None:
        self.opened = 0

    async def watch(self, *args: Any, **kwargs: Any) -> Any:
        self.opened += 1
        raise OperationFailure(
            "The $changeStream stage is only supported on replica sets", code=40573
        )


async def test_without_change_streams_the_follower_ends_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A standalone MongoDB refuses `$changeStream` (40573): the follower ends and says so
    once, and the runner polls. The refusal was made StoreUnavailable before its code was
    looked at, so each follower reopened its stream every 30 s and warned each time."""
    collection = _Standalone()
    woken: list[set[int] | None] = []
    with pytest.raises(ChangeStreamsUnavailable):
        await anext(changed_ids(collection, await_ms=100))  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, logger="gateway.leased_loop")
    await asyncio.wait_for(
        follow_arrivals(
            lambda: changed_ids(collection, await_ms=100),  # type: ignore[arg-type]
            woken.append,
            "delivery worker",
        ),
        5,
    )
    assert collection.opened == 2 and woken == []
    (said,) = [r.getMessage() for r in caplog.records if r.name == "gateway.leased_loop"]
    assert said.startswith("no change streams"), said
