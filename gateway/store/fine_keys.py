"""The one-time upgrade step that keys stored fines by their issuing authority and AIT number.

An AIT number is unique only within its authority (órgão autuador), so the shipped fine
mappings key a fine `<authority>:<AIT>` (`261810:A123456789`, mappings/fine-feed.yaml). A
fine an older gateway stored under its AIT alone (`A123456789`) would not be found by them:
the provider's next notice would store it again, and its payment notice be refused. So every
stored fine whose key is its `ait_number` and that has an `authority` is keyed
`<AUTHORITY>:<AIT>` (the authority trimmed and upper-cased, as the mappings write it); its id,
data and history stay, and so does its e-mail's once-per-fine note (the shipped
fine-email-driver's cooldown, `fine-received:<fine key>`, copied under the new key). A fine
without an authority keeps its key: nothing says which authority's it is (docs/entities.md says
what to do with one). So does one keyed otherwise (by hand, `SP-1A2B3C4D`): counted and logged;
it stays writable under that key (`schemas/kind_keys.py`), and is found by it only.

Done once per database at start, before the process serves, recorded in `migrations` as every
one-time step is. Each update is guarded by the fine's revision (and raises it); a fine whose
new key is taken already (in a rolling upgrade, a new process stored the fine's notice under
the new key while an older one still wrote the old) keeps its old one and is counted apart
(logged), never merged or lost.
"""

from __future__ import annotations

import logging
from typing import Final

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from gateway.clock import utcnow
from gateway.schemas.kind_keys import composed_key
from gateway.store.client import Collection, Doc, bulk_failure, translate_errors
from gateway.store.migrations import record_step, step_done

log = logging.getLogger(__name__)

STEP: Final = "other.fine.authority_key"
NOTE: Final = "fine-received:"  # the prefix of the shipped fine-email-driver's cooldown key
_BATCH: Final = 500


async def rekey_fines(
    entities: Collection, cooldowns: Collection, migrations: Collection
) -> tuple[int, int, int]:
    """Key every stored fine keyed by its AIT alone by authority and AIT, once per database:
    (fines rekeyed, fines whose new key was taken, fines with an authority keyed otherwise),
    (0, 0, 0) when the step is recorded done."""
    if await step_done(migrations, STEP):
        return 0, 0, 0
    query: Doc = {"type": "other", "data.kind": "fine", "data.authority": {"$type": "string"}}
    projection = {"tenant": 1, "data.key": 1, "data.ait_number": 1, "data.authority": 1, "rev": 1}
    rekeyed = taken = kept = 0
    batch: list[UpdateOne] = []
    moved: dict[str, str] = {}  # the batch's cooldown note ids: old key's → new key's

    async def write() -> None:
        nonlocal rekeyed, taken
        # The notes first: a start that dies after the fines' update would find them keyed
        # by authority and AIT already, and never copy their notes (a second e-mail).
        await _carry_notes(cooldowns, moved)
        try:
            rekeyed += (await entities.bulk_write(batch, ordered=False)).modified_count
        except BulkWriteError as exc:
            bulk_failure(exc)  # anything but a new key taken: the step is not done
            rekeyed += exc.details.get("nModified", 0)
            taken += len(exc.details.get("writeErrors", []))
        batch.clear()
        moved.clear()

    with translate_errors():
        async for doc in entities.find(query, projection):
            data = doc["data"]
            ait, authority = data.get("ait_number"), data["authority"]
            if not isinstance(ait, str) or not authority.strip():
                continue
            key = composed_key([authority, ait])
            if data.get("key") != ait:
                if data.get("key") != key:  # keyed by hand: its key stays
                    kept += 1
                continue
            guard = {"_id": doc["_id"], "rev": doc["rev"]}
            change = {"$set": {"data.key": key, "nk": f"fine:{key}"}, "$inc": {"rev": 1}}
            batch.append(UpdateOne(guard, change))
            moved[f"{doc['tenant']}:{NOTE}{ait}"] = f"{doc['tenant']}:{NOTE}{key}"
            if len(batch) == _BATCH:
                await write()
        if batch:
            await write()
    if rekeyed or taken or kept:
        log.warning(
            "fines keyed by authority and AIT: %d rekeyed, %d kept their AIT key (taken), "
            "%d keyed otherwise kept their key",
            rekeyed,
            taken,
            kept,
        )
    await record_step(migrations, STEP, utcnow())
    return rekeyed, taken, kept


async def _carry_notes(cooldowns: Collection, moved: dict[str, str]) -> None:
    """The shipped fine-email-driver's once-per-fine notes (`fine-received:<fine key>`) of the
    fines about to be rekeyed, copied under their new keys: a fine e-mailed before the upgrade
    is not e-mailed again when it is announced again (its time corrected). Copied before the
    fines are rekeyed, so a start that dies between the two leaves nothing a rerun would not
    find; a fine whose new key is taken is the same fine there, e-mailed as well. The old note
    stays until it expires; a note under the new key already (another process) is left alone,
    and any other failure fails the step (not recorded done: the next start runs it again)."""
    notes = await cooldowns.find({"_id": {"$in": list(moved)}}).to_list(None)
    copies = [
        UpdateOne(
            {"_id": moved[note["_id"]]},
            {
                "$setOnInsert": {
                    **{k: v for k, v in note.items() if k != "_id"},
                    "key": moved[note["_id"]].removeprefix(f"{note['tenant']}:"),
                }
            },
            upsert=True,
        )
        for note in notes
    ]
    if copies:
        try:
            await cooldowns.bulk_write(copies, ordered=False)
        except BulkWriteError as exc:
            bulk_failure(exc)  # only a note another process copied first (a duplicate) stands
