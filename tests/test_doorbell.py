"""A loop waiting on its doorbell stops on one cancellation, even one that comes as the bell
rings (gateway/doorbell.py; the fleet fold's and the event relay's loops wait on one).

On Python 3.11 `asyncio.wait_for` waits in a task of its own, and a caller cancelled between
that task's end (the ring) and its own resumption got the ring instead of its CancelledError:
the loop went on, though asked to stop."""

from __future__ import annotations

import asyncio

from gateway.doorbell import Doorbell


async def test_a_waiter_cancelled_as_the_bell_rings_ends_cancelled() -> None:
    landed = []
    for turns in range(4):  # the cancellation 0 to 3 turns of the event loop after the ring
        bell = Doorbell()
        waiting = asyncio.create_task(bell.wait(10))
        await asyncio.sleep(0)  # it waits
        bell.ring()
        for _ in range(turns):
            await asyncio.sleep(0)
        if waiting.cancel():  # not woken yet: the cancellation is what it must end with
            landed.append(turns)
            async with asyncio.timeout(5):
                await asyncio.wait({waiting})
            assert waiting.cancelled(), f"cancelled {turns} turns after the ring, it returned"
    assert landed  # the window was hit at least once
