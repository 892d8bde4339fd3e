"""The one-time upgrade step that keys stored fines by their issuing authority and AIT number.

An AIT number is unique only within its authority (órgão autuador), so the shipped fine
mappings key a fine `<authority>:<AIT>` (`261810:A123456789`, mappings/fine-feed.yaml). A
fine an older gateway stored under its AIT alone (`A123456789`) would not be found by them:
the provider's next notice would store it again, and its payment notice be refused. So every
stored fine whose key is its `ait_number` and that has an `authority` is keyed
`<AUTHORITY>:<AIT>` (the authority trimmed and upper-cased, as the mappings write it); its id,
data and history stay. A fine without an authority keeps its key: nothing says which
authority's it is (docs/entities.md says what to do with one).

Done once per database at start, before the process serves, recorded in `migrations` as every
one-time step is. Each update is guarded by the fine's revision (and raises it); a fine whose
new key is taken already (another process of the new version stored that fine first) keeps
its old one and is counted apart, never merged or lost.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Final

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from gateway.store.client import Collection, Doc, translate_errors
from gateway.store.migrations import record_step, step_done

log = logging.getLogger(__name__)

STEP: Final = "other.fine.authority_key"
_BATCH: Final = 500


def fine_key(authority: str, ait_number: str) -> str:
    """A fine's key as the shipped mappings write it."""
    return f"{authority.strip().upper()}:{ait_number.strip().upper()}"


async def rekey_fines(entities: Collection, migrations: Collection) -> tuple[int, int]:
    """Key every stored fine keyed by its AIT alone by authority and AIT, once per database:
    (fines rekeyed, fines whose new key was taken), (0, 0) when the step is recorded done."""
    if await step_done(migrations, STEP):
        return 0, 0
    query: Doc = {"type": "other", "data.kind": "fine", "data.authority": {"$type": "string"}}
    projection = {"data.key": 1, "data.ait_number": 1, "data.authority": 1, "rev": 1}
    rekeyed = taken = 0
    batch: list[UpdateOne] = []

    async def write() -> None:
        nonlocal rekeyed, taken
        try:
            rekeyed += (await entities.bulk_write(batch, ordered=False)).modified_count
        except BulkWriteError as exc:
            rekeyed += exc.details.get("nModified", 0)
            taken += len(exc.details.get("writeErrors", []))
        batch.clear()

    with translate_errors():
        async for doc in entities.find(query, projection):
            data = doc["data"]
            ait, authority = data.get("ait_number"), data["authority"]
            if not isinstance(ait, str) or data.get("key") != ait or not authority.strip():
                continue
            key = fine_key(authority, ait)
            guard = {"_id": doc["_id"], "rev": doc["rev"]}
            change = {"$set": {"data.key": key, "nk": f"fine:{key}"}, "$inc": {"rev": 1}}
            batch.append(UpdateOne(guard, change))
            if len(batch) == _BATCH:
                await write()
        if batch:
            await write()
    if rekeyed or taken:
        log.warning(
            "fines keyed by authority and AIT: %d rekeyed, %d kept their AIT key (taken)",
            rekeyed,
            taken,
        )
    await record_step(migrations, STEP, datetime.now(UTC))
    return rekeyed, taken
