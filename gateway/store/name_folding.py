"""The one-time upgrade steps of stored names:

- `fold_names` writes the folded name (`name_folded`, what a name search reads:
  `store/client.py` `name_containing`) beside the name of every trigger and schedule stored
  before it existed, so that `sao joao` finds a `São João` stored before, as it finds one
  written since, in either Unicode form;
- `compose_names` puts in NFC the unique names stored before they were written so (a
  trigger's, schedule's, geofence's or maintenance plan's: `São Paulo` sent decomposed, as
  macOS and iOS send it, was another name than `São Paulo` composed). A name whose NFC is
  already another's of its tenant (twins stored before) is left as it was, and logged: it is
  reached by id, or by the name as stored (`NamedResources.by_ref`).

Each done once per database, recorded in the `migrations` collection (`{_id: <step>,
done_at}`), at start, before the process serves (requests wait for the upgrade steps). Each
update is guarded by the name it read: a name changed meanwhile was written in its own form.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any, Final

from pymongo import UpdateOne

from gateway.clock import utcnow
from gateway.errors import Conflict
from gateway.formats.unicode_forms import folded, nfc
from gateway.store.client import NAME_FOLDED, Collection, scoped, translate_errors
from gateway.store.migrations import record_step, step_done

log = logging.getLogger(__name__)

STEP: Final = "names.folded"
COMPOSE_STEP: Final = "names.composed"
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


async def compose_names(collections: list[Collection], migrations: Collection) -> int:
    """Put in NFC every name of `collections` stored in another form, once per database; how
    many it changed (0 when the step is recorded as done). Twins are kept, each as stored."""
    if await step_done(migrations, COMPOSE_STEP):
        return 0
    changed = 0
    for collection in collections:
        with translate_errors():
            stored = await collection.find(
                {"name": {"$type": "string"}}, {"tenant": 1, "name": 1}
            ).to_list(None)
        for doc in stored:
            name = nfc(doc["name"])
            if name == doc["name"]:
                continue
            try:
                with translate_errors():
                    guard = {"_id": doc["_id"], "name": doc["name"]}
                    result = await collection.update_one(guard, {"$set": {"name": name}})
                changed += result.modified_count
            except Conflict:
                log.warning(
                    "%s %r of tenant %r kept as stored (another Unicode form): %r in NFC is "
                    "another's name; rename one of them",
                    collection.name,
                    doc["name"],
                    doc.get("tenant"),
                    name,
                )
    await record_step(migrations, COMPOSE_STEP, utcnow())
    return changed


async def kept_twin_of(collection: Collection, tenant: str, name: str, own: Any = None) -> bool:
    """Whether another of the tenant's documents (not `own`, by id) has `name` (in NFC)
    decomposed (NFD, as macOS and iOS send it): a twin `compose_names` kept as stored, which
    the name would be a new twin of (a 409 like any duplicate; other mixed forms are not
    looked for)."""
    decomposed = unicodedata.normalize("NFD", name)
    if decomposed == name:
        return False
    with translate_errors():
        found = await collection.find_one(scoped(tenant, {"name": decomposed}), {"_id": 1})
    return found is not None and (own is None or str(found["_id"]) != str(own))
