"""Use case: the history the gateway keeps, and how long (`gateway cleanup`).

Positions, idempotency keys, sessions and cooldowns expire by themselves; rejected items and
schedule runs are kept to a bounded number. What an operator bounds by age is the history
that nothing else does: events, finished deliveries and finished flow runs
(`store/history.py`). Work not yet done (pending or in-flight deliveries, pending or running
flow runs) is never dropped, whatever its age. `gateway cleanup` is meant to run from cron
or a Kubernetes CronJob (docs/operations.md "Data retention").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from gateway.clock import utcnow
from gateway.store import Store

MIN_DAYS: Final = 1
"""Below a day, a fold replaying its last pass or a relay re-running its batch could find
the events and runs of that pass gone, and write them again."""


@dataclass(frozen=True, slots=True)
class Cleaned:
    before: datetime
    events: int
    deliveries: int
    flow_runs: int


async def clean_up(
    store: Store,
    older_than: timedelta,
    *,
    dry_run: bool = False,
    clock: Callable[[], datetime] = utcnow,
) -> Cleaned:
    """Drop (or, `dry_run`, count) the history older than `older_than`."""
    if older_than < timedelta(days=MIN_DAYS):
        raise ValueError(f"history is kept at least {MIN_DAYS} day")
    before = clock() - older_than
    return Cleaned(
        before,
        events=await store.events.drop_before(before, dry_run=dry_run),
        deliveries=await store.deliveries.drop_finished_before(before, dry_run=dry_run),
        flow_runs=await store.notify.runs.drop_finished_before(before, dry_run=dry_run),
    )
