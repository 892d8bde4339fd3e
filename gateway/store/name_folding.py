"""The one-time upgrade step that writes the folded name (`name_folded`, what a name search
reads: `store/client.py` `name_containing`) beside the name of every trigger and schedule
stored before it existed, so that `sao joao` finds a `São João` stored before, as it finds
one written since, in either Unicode form.

Done once per database, recorded in the `migrations` collection (`{_id: "names.folded",
done_at}`), at start, before the process serves (requests wait for the upgrade steps). Each
update is guarded by the name it folded: a name changed meanwhile was written with its own
folded form.
"""

from __future__ import annotations

from typing import Final

from pymongo import UpdateOne

from gateway.clock import utcnow
from gateway.formats.unicode_forms import folded
from gateway.store.client import NAME_FOLDED, Collection, translate_errors
from gateway.store.migrations import record_step, step_done

STEP: Final = "names.folded"
_BATCH: Final = 500


async def fold_names(collections: list[Collection], migrations: Collection) -> int:
    """Write the folded name of every document of `collections` that has none, once per
    database; how many it wrote (0 when the step is recorded as done)."""
    if await step_done(migrations, STEP):
        return 0
    written = 0
    for collection in collections:
        batch: list[UpdateOne] = []
        with translate_errors():
            query = {NAME_FOLDED: {"$exists": False}, "name": {"$type": "string"}}
            async for doc in collection.find(query, {"name": 1}):
                guard = {"_id": doc["_id"], "name": doc["name"]}
                batch.append(UpdateOne(guard, {"$set": {NAME_FOLDED: folded(doc["name"])}}))
                if len(batch) == _BATCH:
                    written += (await collection.bulk_write(batch, ordered=False)).modified_count
                    batch = []
            if batch:
                written += (await collection.bulk_write(batch, ordered=False)).modified_count
    await record_step(migrations, STEP, utcnow())
    return written
