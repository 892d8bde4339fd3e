"""Stopping background tasks reliably.

On Python 3.11 `asyncio.wait_for` can swallow a cancellation that arrives just as the awaited
operation completes (fixed in 3.12), and PyMongo's async driver awaits every socket write
with `wait_for` once operations have a deadline. A single `task.cancel()` may then be lost
and a loop that was asked to stop goes on forever; so cancel again until the task is done.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

_RETRY_SECONDS = 0.5


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
