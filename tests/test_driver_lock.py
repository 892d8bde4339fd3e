"""PyMongo's asyncio lock under the gateway's cancellations (Python 3.11).

`cancel_and_wait` cancels a task again every 0.5 s until it ends (a single cancellation
can be lost on 3.11). A task in server selection waits on the topology's condition through
`asyncio.wait_for`, which on 3.11 runs the wait in a task of its own: cancelled twice while
another task held the topology lock across an await (a pool reset, a close), it returned
without that inner wait, which went on to take the lock for nobody. The holder then found
its lock released under it, RuntimeError("Lock is not acquired") (in a shutdown's log, under
load), and the lock stayed taken for good: every later selection, and the client's close,
waited on it."""

from __future__ import annotations

import asyncio

from pymongo.lock import _async_cond_wait, _async_create_condition, _async_create_lock

import gateway.store.client  # noqa: F401  (what every process imports before a client)
from gateway.background import cancel_and_wait


async def test_a_selection_cancelled_twice_while_another_task_holds_the_lock_leaves_it_whole() -> (
    None
):
    lock = _async_create_lock()
    condition = _async_create_condition(lock)
    held = asyncio.get_running_loop().create_future()
    released = asyncio.get_running_loop().create_future()

    async def selection() -> None:  # Topology._select_servers_loop
        async with lock:
            await _async_cond_wait(condition, 10)

    async def holder() -> None:  # Topology.on_change, close: the lock held across an await
        async with lock:
            held.set_result(None)
            await released

    selecting = asyncio.create_task(selection())
    await asyncio.sleep(0)  # it waits on the condition: the lock is free
    holding = asyncio.create_task(holder())
    await held
    selecting.cancel()  # its wait must take the lock again before it ends: the holder has it
    await asyncio.sleep(0)
    selecting.cancel()  # cancel_and_wait's next round
    released.set_result(None)
    await asyncio.gather(holding, cancel_and_wait(selecting))
    assert selecting.cancelled()
    assert not lock.locked()
    async with asyncio.timeout(1):  # the next selection gets the lock
        async with lock:
            pass
