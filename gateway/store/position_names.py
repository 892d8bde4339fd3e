"""The one-time upgrade step that renames the members of vehicles' stored `last_position` to
the canonical fix's names (`fix_time` → `time`, `latitude` → `lat`, `longitude` → `lon`,
`course` → `heading`: SPEC §3.5, `gateway/schemas/renamed.py`).

Done once per database, recorded in the `migrations` collection as every one-time step is
(`{_id: "vehicle.last_position.names", done_at}`), at start, before the process serves. Two
processes starting at once may both run it: each vehicle's update is guarded by its revision
(and raises it, so a cached copy or an ETag of the old shape is stale), so a vehicle renamed
by one is read again by the other as done; both record the step (`store/migrations.py`).
"""

from __future__ import annotations

from typing import Final

from pymongo import UpdateOne

from gateway.clock import utcnow
from gateway.schemas.renamed import RENAMED, current_data
from gateway.store.client import Collection, Doc, translate_errors
from gateway.store.migrations import record_step, step_done

STEP: Final = "vehicle.last_position.names"
_BATCH: Final = 500


async def rename_position_members(entities: Collection, migrations: Collection) -> int:
    """Rename the old `last_position` members of every stored vehicle, once per database;
    how many vehicles it renamed (0 when the step is recorded as done)."""
    if await step_done(migrations, STEP):
        return 0
    old = [f"data.last_position.{name}" for name in RENAMED["vehicle"]["last_position"]]
    query: Doc = {"type": "vehicle", "$or": [{name: {"$exists": True}} for name in old]}
    renamed = 0
    batch: list[UpdateOne] = []
    with translate_errors():
        async for doc in entities.find(query, {"data.last_position": 1, "rev": 1}):
            position = doc["data"]["last_position"]
            fresh = current_data("vehicle", {"last_position": position})["last_position"]
            guard = {"_id": doc["_id"], "rev": doc["rev"]}
            change = {"$set": {"data.last_position": fresh}, "$inc": {"rev": 1}}
            batch.append(UpdateOne(guard, change))
            if len(batch) == _BATCH:
                renamed += (await entities.bulk_write(batch, ordered=False)).modified_count
                batch = []
        if batch:
            renamed += (await entities.bulk_write(batch, ordered=False)).modified_count
    await record_step(migrations, STEP, utcnow())
    return renamed
