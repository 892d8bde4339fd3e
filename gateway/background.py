"""Stopping background tasks reliably.

On Python 3.11 `asyncio.wait_for` can swallow a cancellation that arrives just as the awaited
operation completes (fixed in 3.12). PyMongo's async driver awaits every socket write with
`wait_for` once operations have a deadline; that send now runs in the caller's task
(`store/client.py`), but other code may still lose a single `task.cancel()`, and a loop that
was asked to stop then goes on forever; so cancel again until the task is done.

What a task does on its way out once stopped (a job handing its shards or leases back) must not
be cut by those repeated cancels: `to_the_end` runs it shielded from them, within a deadline of
its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

_RETRY_SECONDS = 0.5
_CHECK_SECONDS = 0.25


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    given: list[asyncio.Task[Any]] = [t for t in tasks if t is not None]
    pending = {t for t in given if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_RETRY_SECONDS)
    for task in given:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task %s had failed", task.get_name(), exc_info=exc)


async def to_the_end(seconds: float, what: str, step: Callable[[], Awaitable[Any]]) -> bool:
    """Run `step` to its end, however often the caller is cancelled meanwhile, but for at most
    `seconds`: then it is cancelled (again every `_RETRY_SECONDS` until it ends), with a warning
    naming `what`. A cancellation of the caller is raised once the step is over. Whether the
    step finished in time (one that failed is logged).

    For a hand-back on the way out (a job's `_flush` and shard release, a runner's leases):
    `cancel_and_wait` cancels the stopping task again every 0.5 s, and a second cancel landing
    in the hand-back skipped it, leaving the shards to expire (a lease's length without their
    work); the deadline keeps a database that never answers from holding the shutdown."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    task = asyncio.ensure_future(step())
    cancelled = late = False
    while not task.done():
        if (left := deadline - loop.time()) <= 0:
            if not late:
                late = True
                log.warning("%s did not finish within %g s; cut short", what, seconds)
            task.cancel()
            left = _RETRY_SECONDS
        try:
            await asyncio.wait({task}, timeout=left)
        except asyncio.CancelledError:
            cancelled = True  # raised below, once the step is over
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s failed", what, exc_info=exc)
    if cancelled:
        raise asyncio.CancelledError
    return not late


async def within(seconds: float | Callable[[], float], what: str, *steps: Awaitable[Any]) -> bool:
    """Run `steps` side by side for at most `seconds` (or what `seconds()` says, asked again
    every `_CHECK_SECONDS`: a bound that may shrink meanwhile); what has not finished by then
    is cancelled (`cancel_and_wait`, with a warning naming `what`), and a step that failed is
    logged. Whether every step finished in time. For shutdown steps, which must end whatever
    the database does: a frozen one fails no call, it answers none."""
    bound = seconds if callable(seconds) else lambda: seconds
    loop = asyncio.get_running_loop()
    started = loop.time()
    tasks = [asyncio.ensure_future(step) for step in steps]
    pending = set(tasks)
    try:
        while pending and (left := bound() - (loop.time() - started)) > 0:
            _, pending = await asyncio.wait(pending, timeout=min(left, _CHECK_SECONDS))
    except asyncio.CancelledError:
        await cancel_and_wait(*tasks)
        raise
    if pending:
        log.warning("%s did not finish within %g s; cut short", what, bound())
    await cancel_and_wait(*pending)
    for task in tasks:
        if task not in pending and not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s failed", what, exc_info=exc)
    return not pending
