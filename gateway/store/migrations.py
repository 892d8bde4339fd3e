"""One-time upgrade steps' markers: a step that stored data needs once per database (a
backfill, a rename) is recorded as `{_id: <step>, done_at}` in the `migrations` collection, and
a later start that finds its marker skips it. Processes starting together may both run a step
(each step's writes are idempotent and guarded); both record it, the second as a no-op. A new
database (no collection when its first start looked) holds nothing a step would change: its
start records every step at once (`record_steps`) and runs none."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from gateway.errors import Conflict
from gateway.store.client import Collection, insert_new, translate_errors


async def step_done(migrations: Collection, step: str) -> bool:
    """Whether `step` is recorded as done in this database."""
    with translate_errors():
        return await migrations.find_one({"_id": step}) is not None


async def steps_done(migrations: Collection, steps: Iterable[str]) -> frozenset[str]:
    """Which of `steps` are recorded as done in this database: one read for all of them."""
    with translate_errors():
        found = await migrations.find({"_id": {"$in": list(steps)}}, {"_id": 1}).to_list(None)
    return frozenset(doc["_id"] for doc in found)


async def record_step(migrations: Collection, step: str, at: datetime) -> None:
    """`step` recorded as done (at `at`); one recorded meanwhile by another process stands."""
    try:
        with translate_errors():
            await migrations.update_one({"_id": step}, {"$set": {"done_at": at}}, upsert=True)
    except Conflict:
        pass  # another process starting at once recorded it first


async def record_steps(migrations: Collection, steps: Iterable[str], at: datetime) -> None:
    """Every one of `steps` recorded as done (at `at`), in one write; one recorded meanwhile
    by another process stands."""
    await insert_new(migrations, [{"_id": step, "done_at": at} for step in steps])
