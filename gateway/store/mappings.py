"""The `mappings` and `mapping_heads` collections: immutable mapping versions and, per name,
which version is active.

A version is `{tenant, name, version, source, format, document, checksum, author,
created_at, direction, entity_type}` and never changes once written. A head is
`{tenant, name, latest_version, claims, under_way, active_version?, direction, entity_type,
created_at, updated_at, deleted?, deletions?, deleted_up_to?, pruned_up_to?}`: it hands out
version numbers (`claim_version`: never the same twice, and with the checksum of the text each
is for, so copies of one text uploaded at once store it once), says which version is active
and the newest one pruning removed (`prune`: a number up to it not stored was pruned, one
never stored past it is no version at all). Deleting a mapping removes its versions and
leaves the head as a tombstone, so a later upload of the same name continues the numbering:
a (tenant, name, version) triple is never reused, which lets every process cache compiled
versions by it forever.

A delete wins over an upload under way: the head counts its deletions (`deletions`), an
upload reads it when it begins (`seen`), and its publish (or activation of the version it
found) is written only while the count is the one it read (`publish`, `set_active`). So an
upload begun before a delete never lists the name again: neither without a place under the
tenant's limit nor with a version the delete removed. An upload of a deleted name is a new
name, which `VersionedDocuments.add` takes a place for. A delete removes only the versions up
to the latest its tombstone was written over (`deleted_up_to`): an upload begun after the
tombstone (a re-create) numbers past it, and keeps its versions whenever the removal lands;
a version at or below it is never used again (`Seen.removed`).

A name keeps its newest `versions_kept` versions (`GATEWAY_VERSIONS_KEPT`; 0: every one), its
active version and the versions its service says are pinned (a flow's runs that may still run
or be replayed), whatever their age; the others go when a new version is stored (`prune`). An
activation holds its version (`hold`) before it is made active: a version `prune` marked
(`pruning`) cannot be held, one held is not marked, so an old version is never made active
while it is removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pymongo import ASCENDING, DESCENDING, IndexModel

from gateway.clock import as_stored, utcnow
from gateway.errors import Conflict, StoreUnavailable
from gateway.store.client import (
    NAME_CURSOR,
    Database,
    Doc,
    cursor_text,
    new_id,
    scoped,
    translate_errors,
)
from gateway.store.turns import UNLIMITED, Limit

VERSION_INDEXES = [
    IndexModel(
        [("tenant", ASCENDING), ("name", ASCENDING), ("version", ASCENDING)],
        unique=True,
        name="name_version",
    ),
]
HEAD_INDEXES = [
    IndexModel([("tenant", ASCENDING), ("name", ASCENDING)], unique=True, name="name"),
]
# Where other resources name a mapping: collection → the fields holding a mapping name.
USERS = {
    "triggers": ("mapping", "response_mapping"),
    "actions": ("request_mapping", "response_mapping"),
    "schedules": ("mapping",),
}
# A listed head: not a deleted mapping's tombstone, nor one an upload under way made (no
# version published on it yet). As a filter beside `name` it is not one the `name` index holds
# whole: SecantusDB then reads the tenant's every head (its first clause an index serves alone,
# `tenant`; docs/operations.md "How to write a store query"). So a head is read by its name
# alone and checked here (`_listed`), and written by its `_id` with `_LISTED` as the guard.
_LISTED = {"deleted": {"$ne": True}, "direction": {"$exists": True}}
_AS_LISTED = {"deleted": 1, "direction": 1}  # what `_listed` reads of a head
_AS_SEEN = {**_AS_LISTED, "deletions": 1, "deleted_up_to": 1}  # what an upload reads (`Seen`)
# what a delete reads of a head
_AS_DELETED = {**_AS_LISTED, "latest_version": 1, "deleted_up_to": 1}
_AS_PRUNED = {**_AS_LISTED, "active_version": 1, "deleted_up_to": 1}  # what `prune` reads
_NO_SOURCE = {"source": 0, "document": 0}
_ALLOCATE_TRIES = 100  # one upload at the same time takes a number per try
_CLAIMS_KEPT = 50
_UNDER_WAY_SECONDS = 10  # an upload's lease: how long its note counts if never removed
# How long a process may go on starting work on a version after it stopped being active (the
# flow starter caches the active flows that long, flows/starter.py).
ACTIVE_CACHE_SECONDS = 2.0


def retired_kept(db_timeout: float) -> timedelta:
    """How long a version that stopped being active is spared by `prune`: past the cache
    above and the write of what started on it (a flow's runs, under the database deadline,
    twice: read then insert), with a minute to spare (`utcnow` is the database's clock)."""
    return timedelta(seconds=ACTIVE_CACHE_SECONDS + 2 * db_timeout + 60)


def marks_kept(db_timeout: float) -> timedelta:
    """How long a `prune`'s mark (`pruning`) refuses a hold: past the prune's three writes
    after marking, each under the database deadline; an older one a failed prune left."""
    return timedelta(seconds=3 * db_timeout + 10)


@dataclass(frozen=True, slots=True)
class Seen:
    """A name's head as an upload read it when it began: `listed` (a new version of a listed
    name, or a new name) and its `deletions` then (None: never deleted, or no head). Its
    publish is written only over the same `deletions`: a delete since wins."""

    listed: bool
    deletions: int | None
    # The latest version a delete of the name removed (`deleted_up_to`; None: never deleted):
    # one at or below it is a deleted name's, gone or about to be, never the re-created one's.
    removed: int | None = None

    def of_a_deleted_name(self, version: int) -> bool:
        """Whether `version` is one a delete of the name removes (or has removed)."""
        return self.removed is not None and version <= self.removed


class MappingStore:
    # What a list of versions reads of each: no source nor document.
    version_listing: ClassVar[Doc] = _NO_SOURCE
    # The tenant's limit on names (store/turns.py `TenantLimits`; set by `Store`).
    limit: Limit = UNLIMITED
    # How many of a name's newest versions `prune` keeps (0: every one; set by `Store`).
    versions_kept: int = 0
    # How long `prune` spares a version after it stopped being active (`retired_at`): work
    # may still be starting on it in a process that read it active (set by `Store`).
    retired_kept: timedelta = retired_kept(5.0)
    # How long a version marked by `prune` cannot be held (set by `Store`).
    marks_kept: timedelta = marks_kept(5.0)

    def __init__(self, db: Database) -> None:
        self._db = db
        self._versions = db["mappings"]
        self._heads = db["mapping_heads"]

    def use_deadline(self, db_timeout: float) -> None:
        """Time `retired_kept` and `marks_kept` by the database deadline (seconds)."""
        self.retired_kept = retired_kept(db_timeout)
        self.marks_kept = marks_kept(db_timeout)

    async def ensure_indexes(self) -> None:
        with translate_errors():
            await self._versions.create_indexes(VERSION_INDEXES)
            await self._heads.create_indexes(HEAD_INDEXES)

    # -- versions ----------------------------------------------------------------------------

    async def latest(self, tenant: str, name: str) -> Doc | None:
        with translate_errors():
            return await self._versions.find_one(
                scoped(tenant, {"name": name}), sort=[("version", DESCENDING)]
            )

    async def version(self, tenant: str, name: str, version: int) -> Doc | None:
        with translate_errors():
            return await self._versions.find_one(scoped(tenant, {"name": name, "version": version}))

    async def versions(self, tenant: str, name: str) -> list[Doc]:
        """Every version's metadata, oldest first (no source: ask for one version for that)."""
        with translate_errors():
            cursor = self._versions.find(scoped(tenant, {"name": name}), self.version_listing)
            return await cursor.sort("version", ASCENDING).to_list(None)

    async def previous_version(self, tenant: str, name: str, before: int) -> int | None:
        with translate_errors():
            doc = await self._versions.find_one(
                scoped(tenant, {"name": name, "version": {"$lt": before}}),
                {"version": 1},
                sort=[("version", DESCENDING)],
            )
        return None if doc is None else int(doc["version"])

    async def begin_upload(self, tenant: str, name: str, since: int) -> tuple[str, int]:
        """Note an upload of `name` under way, that began when version `since` was the latest
        stored: its id (for `end_upload`) and the version from which texts claimed count as
        uploaded at once with it, the earliest `since` of the uploads under way. So a copy
        that comes in while any upload of its batch is still answering finds its text's
        version, though that one was stored and answered before it began; an upload after the
        whole batch is answered counts from its own start. A note is a lease of
        `_UNDER_WAY_SECONDS`: one its upload never removed (its process stopped, or the store
        failed its `end_upload`) counts no longer than that."""
        at = as_stored(utcnow())
        mark: Doc = {"id": str(new_id()), "since": since, "at": at}
        # An upsert then a read by name (the `name` index), not a `find_one_and_update`:
        # SecantusDB writes that with `{_id, $and: [filter]}`, matched against every tenant's
        # heads (179 ms an upload at 1,000 tenants of 20). The notes are read a moment after
        # the push, not in it: as if this upload's note were taken at the read. One ending in
        # between is one that ended before it; one begun in between, before it; its own note
        # stays until its `end_upload`.
        named = scoped(tenant, {"name": name})
        noted = {"$push": {"under_way": mark}, "$setOnInsert": {"created_at": mark["at"]}}
        for _ in range(_ALLOCATE_TRIES):
            try:
                with translate_errors():
                    await self._heads.update_one(named, noted, upsert=True)
            except Conflict:  # two first uploads of the name: the other created the head
                continue
            break
        else:
            raise StoreUnavailable(f"no head for {name!r}: it kept changing")
        with translate_errors():
            head = await self._heads.find_one(named) or {}  # a head is never removed
        cutoff = at - timedelta(seconds=_UNDER_WAY_SECONDS)
        counted = [m["since"] for m in head.get("under_way") or [] if m["at"] >= cutoff]
        return str(mark["id"]), min([since, *counted])

    async def end_upload(self, tenant: str, name: str, upload_id: str) -> None:
        """The upload is answered (stored, found, or refused); notes past their lease go too."""
        cutoff = utcnow() - timedelta(seconds=_UNDER_WAY_SECONDS)
        named = scoped(tenant, {"name": name})  # the `name` index (no `under_way.at` guard:
        # beside it SecantusDB read the tenant's every head; a pull of none changes nothing)
        with translate_errors():
            await self._heads.update_one(named, {"$pull": {"under_way": {"id": upload_id}}})
            await self._heads.update_one(named, {"$pull": {"under_way": {"at": {"$lt": cutoff}}}})

    async def allocate_version(self, tenant: str, name: str) -> int:
        """The next version number of `name`, for no text in particular."""
        return await self.claim_version(tenant, name, None, since=0)

    async def claim_version(
        self, tenant: str, name: str, checksum: str | None, *, since: int
    ) -> int:
        """A version number for the text of `checksum`: the number the same text was claimed
        under by an upload at the same time (after version `since`, from which `begin_upload`
        counts uploads at once), stored or not, so that uploads at once store each text
        once; otherwise a new number. Whichever upload of the text stores it first holds it
        (`insert_version`: a number is stored once), so a number whose upload never stored it
        (the insert failed, the process stopped) is stored by the next copy at once; one
        claimed before `since` is not reused (versions after it were stored).

        The head lists the texts of its `_CLAIMS_KEPT` latest numbers (`claims`); a number is
        taken by replacing the head only as it was read (compare and swap), so of uploads at
        the same time each text gets one number, whatever the order they come in."""
        for _ in range(_ALLOCATE_TRIES):
            with translate_errors():
                head = await self._heads.find_one(scoped(tenant, {"name": name}))
            claims = (head or {}).get("claims") or []
            if checksum is not None:
                at_once = [c for c in claims if c["checksum"] == checksum and c["version"] > since]
                if at_once:
                    return int(at_once[0]["version"])
            latest = (head or {}).get("latest_version")  # none yet: a head `begin_upload` made
            kept = [c for c in claims if c["checksum"] != checksum or checksum is None]
            number = (latest or 0) + 1
            update: Doc = {
                "$set": {
                    "latest_version": number,
                    "claims": [
                        *kept[-(_CLAIMS_KEPT - 1) :],
                        {"version": number, "checksum": checksum},
                    ],
                },
                "$unset": {"latest_checksum": ""},  # what heads held before claims
            }
            try:
                with translate_errors():
                    if head is None:  # no upload noted it (`allocate_version`): the first claim
                        first = {"name": name, **update["$set"], "created_at": utcnow()}
                        await self._heads.insert_one(scoped(tenant, first))
                        return number
                    as_read = latest if latest is not None else {"$exists": False}
                    # by its `_id` (a head is never removed nor renamed): `{name, latest_version:
                    # {$exists: false}}` had SecantusDB read the tenant's every head
                    taken = await self._heads.update_one(
                        scoped(tenant, {"_id": head["_id"], "latest_version": as_read}), update
                    )
            except Conflict:  # another upload created the head meanwhile
                continue
            if taken.matched_count == 1:
                return number
        raise StoreUnavailable(f"no version number for {name!r}: the head kept changing")

    async def insert_version(self, tenant: str, doc: Doc) -> None:
        with translate_errors(f"mapping {doc['name']!r} version {doc['version']} exists"):
            await self._versions.insert_one(scoped(tenant, doc))

    # -- pruning -----------------------------------------------------------------------------

    async def prune(self, tenant: str, name: str, pinned: Collection[int]) -> list[int]:
        """Remove the versions of `name` past its `versions_kept` newest, but its active one
        and the `pinned` ones; the versions removed. First marked (`pruning`: none held by an
        activation under way), then the head read again: a version made active before it was
        marked is spared (unmarked), and only the ones marked by this prune go. A prune that
        fails after marking takes its marks off (best effort: one left refuses a hold only
        `marks_kept`); a mark a failed prune left on a version kept now is taken off."""
        if not self.versions_kept:
            return []
        named = scoped(tenant, {"name": name})
        with translate_errors():
            head = _listed(await self._heads.find_one(named, _AS_PRUNED))
            if head is None:
                return []
            removed = head.get("deleted_up_to")
            floor = removed if isinstance(removed, int) else 0  # a deleted name's: not these
            stored = self._versions.find(
                scoped(tenant, {"name": name, "version": {"$gt": floor}}),
                {"version": 1, "retired_at": 1},
            )
            docs = await stored.sort("version", DESCENDING).to_list(None)
            numbers = [int(d["version"]) for d in docs]
            since = utcnow() - self.retired_kept
            recent = [int(d["version"]) for d in docs if _after(d.get("retired_at"), since)]
            keep = {*numbers[: self.versions_kept], *pinned, *recent, head.get("active_version")}
            doomed = [v for v in numbers[self.versions_kept :] if v not in keep]
            await self._versions.update_many(
                scoped(
                    tenant,
                    {"name": name, "pruning": {"$exists": True}, "version": {"$nin": doomed}},
                ),
                {"$unset": {"pruning": ""}},
            )
            if not doomed:
                return []
            mark = as_stored(utcnow())  # this prune's: what it removes, what it takes off
            await self._versions.update_many(
                scoped(
                    tenant, {"name": name, "version": {"$in": doomed}, "held": {"$exists": False}}
                ),
                {"$set": {"pruning": mark}},
            )
        try:
            return await self._remove_marked(tenant, name, doomed, mark)
        except Exception:
            with contextlib.suppress(Exception), translate_errors():
                await self._versions.update_many(
                    scoped(tenant, {"name": name, "pruning": mark}), {"$unset": {"pruning": ""}}
                )
            raise

    async def _remove_marked(
        self, tenant: str, name: str, doomed: list[int], mark: datetime
    ) -> list[int]:
        """`prune`'s end: the versions it marked (`mark`) removed, but one made active before
        the marks (the head read again)."""
        with translate_errors():
            head = await self._heads.find_one(scoped(tenant, {"name": name}), _AS_PRUNED)
            active = (head or {}).get("active_version")
            gone = [v for v in doomed if v != active]
            if active in doomed:
                await self._versions.update_one(
                    scoped(tenant, {"name": name, "version": active}), {"$unset": {"pruning": ""}}
                )
            if gone:  # written first: a version read missing after is known pruned (`_missing`)
                await self._heads.update_one(
                    scoped(tenant, {"name": name}), {"$max": {"pruned_up_to": max(gone)}}
                )
            await self._versions.delete_many(
                scoped(tenant, {"name": name, "version": {"$in": gone}, "pruning": mark})
            )
        return gone

    async def hold(self, tenant: str, name: str, version: int) -> bool:
        """Hold `version` while it is made active (`prune` does not mark it): False when it is
        being pruned, or gone. A mark older than `marks_kept` (a prune that failed after
        marking and could not take it off; `True`, a mark of before 2026-12-07) is taken off
        as it is held: it refused the activation of a listed version until a later prune."""
        one = {"name": name, "version": version}
        with translate_errors():
            held = await self._versions.update_one(
                scoped(tenant, {**one, "pruning": {"$exists": False}}),
                {"$set": {"held": utcnow()}},
            )
            if held.matched_count:
                return True
            doc = await self._versions.find_one(scoped(tenant, one), {"pruning": 1})
            mark = (doc or {}).get("pruning")
            if doc is None or _after(mark, utcnow() - self.marks_kept):
                return False
            # Over that very mark: a prune marking it again meanwhile is not overridden.
            held = await self._versions.update_one(
                scoped(tenant, {**one, "pruning": mark}),
                {"$set": {"held": utcnow()}, "$unset": {"pruning": ""}},
            )
        return held.matched_count == 1

    async def _retire(self, tenant: str, name: str, active: Any, version: int) -> None:
        """Note on `active` (the active version as read) that it stops being active, before
        the head says `version` is: a run started on it by a process that read it active
        meanwhile is stored after, and `prune` spares it till then (`retired_kept`)."""
        if isinstance(active, int) and active != version:
            with translate_errors():
                await self._versions.update_one(
                    scoped(tenant, {"name": name, "version": active}),
                    {"$set": {"retired_at": utcnow()}},
                )

    async def let_go(self, tenant: str, name: str, version: int) -> None:
        """The activation that held `version` is done (made active, or refused)."""
        with translate_errors():
            await self._versions.update_one(
                scoped(tenant, {"name": name, "version": version}), {"$unset": {"held": ""}}
            )

    # -- heads -------------------------------------------------------------------------------

    async def head(self, tenant: str, name: str) -> Doc | None:
        """The listed head of `name` (None: none, deleted, or no version published yet)."""
        with translate_errors():
            return _listed(await self._heads.find_one(scoped(tenant, {"name": name})))

    async def _listed_id(self, tenant: str, name: str) -> Any:
        """The `_id` of the listed head of `name`, to write it by (None: not listed)."""
        with translate_errors():
            head = _listed(await self._heads.find_one(scoped(tenant, {"name": name}), _AS_LISTED))
        return None if head is None else head["_id"]

    async def seen(self, tenant: str, name: str) -> Seen:
        """The head of `name` as an upload begins on it (`Seen`), read by its name alone."""
        with translate_errors():
            head = await self._heads.find_one(scoped(tenant, {"name": name}), _AS_SEEN)
        deletions = (head or {}).get("deletions")
        removed = (head or {}).get("deleted_up_to")
        return Seen(
            _listed(head) is not None,
            deletions if isinstance(deletions, int) else None,
            removed if isinstance(removed, int) else None,
        )

    async def how_many(self, tenant: str, *, up_to: int) -> int:
        """How many names the tenant has (deleted ones not), counted up to `up_to` (what a
        limit needs)."""
        with translate_errors():
            return await self._heads.count_documents(scoped(tenant, _LISTED), limit=up_to)

    async def publish(
        self,
        tenant: str,
        name: str,
        *,
        direction: str,
        entity_type: str | None,
        active_version: int | None,
        deletions: int | None,
    ) -> bool:
        """After a version is stored: the head shows it, and makes it active if asked unless
        a newer version is active already (two uploads at once: the one numbered first may
        finish last, and made its older version active over the newer one). Only while the
        head's `deletions` is the upload's (`Seen`): False, nothing written, when the name was
        deleted since the upload began (the delete wins; its version may be gone with it).

        The head's `direction` and `entity_type` describe its active version (what the list
        shows next to `active_version`, and what the admin UI picks mappings by): a version
        staged (`active_version=None`) sets them only while no version is active."""
        shown: Doc = {"direction": direction, "entity_type": entity_type}
        with translate_errors():
            head = await self._heads.find_one(scoped(tenant, {"name": name}), {"_id": 1})
            if head is None:  # (a head is never removed: not one this upload noted)
                return False
            # by its `_id`, guarded on the deletions read (`None` matches a head without any)
            unset = await self._heads.update_one(
                scoped(tenant, {"_id": head["_id"], "deletions": deletions}),
                {"$set": {"updated_at": utcnow()}, "$unset": {"deleted": ""}},
            )
        if not unset.matched_count:
            return False
        if active_version is None:
            return await self._show_over(
                tenant, name, lambda active: active is None, shown, deletions
            )
        return await self._show_over(
            tenant,
            name,
            lambda active: active is None or active < active_version,
            {"active_version": active_version, **shown},
            deletions,
        )

    async def _show_over(
        self,
        tenant: str,
        name: str,
        over: Callable[[Any], bool],
        changes: Doc,
        deletions: int | None,
    ) -> bool:
        """Set `changes` on the head while `over` its active version (None: none is). The
        head is read by its name and written by its `_id`, guarded on the active version read
        (`None` matches a head without one too): an `$or` of the versions it may have had
        SecantusDB match every tenant's heads. A write that misses (another upload or
        activation came between) reads again. False: the head was deleted since `deletions`
        (its tombstone is not written: a later upload of the name would list what it shows)."""
        for _ in range(_ALLOCATE_TRIES):
            with translate_errors():
                head = await self._heads.find_one(
                    scoped(tenant, {"name": name}), {"active_version": 1, "deletions": 1}
                )
                if head is None or head.get("deletions") != deletions:
                    return False
                if not over(active := head.get("active_version")):
                    return True
                if "active_version" in changes:
                    await self._retire(tenant, name, active, changes["active_version"])
                guarded = {"_id": head["_id"], "active_version": active, "deletions": deletions}
                written = await self._heads.update_one(scoped(tenant, guarded), {"$set": changes})
                if written.matched_count:
                    return True
        raise StoreUnavailable(f"{name!r} not published: its head kept changing")

    async def set_active(
        self,
        tenant: str,
        name: str,
        version: int,
        shown: Doc,
        *,
        checked: bool = False,
        expected: int | None = None,
        seen: Seen | None = None,
    ) -> bool:
        """Make `version` active; `shown`: its `direction` and `entity_type` (the head
        describes its active version). `checked`: only while `expected` is the active
        version (None: none is). `seen`: only while not deleted since (its `deletions`),
        `version` read before may be gone with it. False when no head matched. Written over
        the active version read (another activation between reads again), which is noted
        as it stops being active first (`_retire`)."""
        for _ in range(_ALLOCATE_TRIES):
            with translate_errors():
                head = _listed(await self._heads.find_one(scoped(tenant, {"name": name})))
            if head is None or (seen is not None and head.get("deletions") != seen.deletions):
                return False
            active = head.get("active_version")
            if checked and active != expected:
                return False
            await self._retire(tenant, name, active, version)
            # still listed, over the same active version (and deletions) when written
            query: Doc = {"_id": head["_id"], **_LISTED, "active_version": active}
            if seen is not None:
                query["deletions"] = seen.deletions
            with translate_errors():
                result = await self._heads.update_one(
                    scoped(tenant, query),
                    {"$set": {"active_version": version, **shown, "updated_at": utcnow()}},
                )
            if result.matched_count:
                return True
        raise StoreUnavailable(f"{name!r} not activated: its head kept changing")

    async def heads(self, tenant: str, *, after: str | None, limit: int) -> list[Doc]:
        query: Doc = dict(_LISTED)
        if cursor_text(after, NAME_CURSOR) is not None:
            query["name"] = {"$gt": after}
        with translate_errors():
            cursor = self._heads.find(scoped(tenant, query))
            return await cursor.sort("name", ASCENDING).limit(limit).to_list(limit)

    async def delete(self, tenant: str, name: str) -> bool:
        """Remove every version; the head stays as a tombstone that keeps the numbering.

        The tombstone is written over the latest version number as read (compare and swap:
        one claimed meanwhile reads again), and records it (`deleted_up_to`); only the
        versions up to it are removed after. An upload of the name begun once the tombstone
        is written (a re-create) numbers its versions past it, so a delete's removal landing
        after that upload's publish never takes the re-created name's version (it was listed
        with its active version gone: "has no version N"). A delete that finds the name
        deleted already (not listed) answers False, and removes again what the tombstone
        names: a delete whose removal failed after its tombstone was written (a 503) is
        finished by its retry; the versions stayed stored for good."""
        removed: int | None = None
        left: int | None = None  # a tombstone's versions, removed again
        for _ in range(_ALLOCATE_TRIES):
            with translate_errors():
                raw = await self._heads.find_one(scoped(tenant, {"name": name}), _AS_DELETED)
                head = _listed(raw)
                if head is None:
                    if raw is not None and raw.get("deleted") is True:
                        left = raw.get("deleted_up_to")
                    break
                latest = head.get("latest_version")
                as_read = latest if latest is not None else {"$exists": False}
                result = await self._heads.update_one(
                    # by its `_id`, still listed and numbered as read when written
                    scoped(tenant, {"_id": head["_id"], **_LISTED, "latest_version": as_read}),
                    {
                        "$set": {
                            "deleted": True,
                            "updated_at": utcnow(),
                            "deleted_up_to": latest or 0,
                        },
                        "$unset": {"active_version": "", "claims": ""},
                        "$inc": {"deletions": 1},  # an upload under way publishes nothing
                    },
                )
            if result.matched_count:
                removed = latest or 0
                break
        else:
            raise StoreUnavailable(f"{name!r} not deleted: its head kept changing")
        if (up_to := removed if removed is not None else left) is not None:
            with translate_errors():
                await self._versions.delete_many(
                    scoped(tenant, {"name": name, "version": {"$lte": up_to}})
                )
        if removed is None:
            return False
        await self.limit.freed(tenant)
        return True

    async def active_of_kind(self, tenant: str, kind: str) -> AsyncIterator[Doc]:
        """The active version (name, version, source) of each of the tenant's mappings whose
        document names the custom kind `kind`, as its own or an `also` target's, by name."""
        # One query per place the kind may be named (an `$or` at the filter's top had
        # SecantusDB match every tenant's versions): each reads the tenant's.
        found: list[Doc] = []
        seen: set[Any] = set()
        with translate_errors():
            for place in ("document.kind", "document.also.kind"):
                named = scoped(tenant, {place: kind})
                for doc in await self._versions.find(named, {"name": 1, "version": 1}).to_list(
                    None
                ):
                    if doc["_id"] not in seen:
                        seen.add(doc["_id"])
                        found.append(doc)
            names = sorted({doc["name"] for doc in found})
            query = scoped(tenant, {"name": {"$in": names}, **_LISTED})
            heads = await self._heads.find(query, {"name": 1, "active_version": 1}).to_list(None)
        active = {(h["name"], h.get("active_version")) for h in heads}
        for doc in sorted(found, key=lambda d: d["name"]):
            if (doc["name"], doc["version"]) in active:
                version = await self.version(tenant, doc["name"], doc["version"])
                if version is not None:  # (deleted meanwhile)
                    yield version

    # -- who uses a mapping ------------------------------------------------------------------

    async def users(self, tenant: str, name: str) -> list[dict[str, Any]]:
        """The triggers, actions and schedules of this tenant that name the mapping (at most
        50 of each kind): kind, id, name and the fields that name it."""
        return [user async for user, _ in self.users_with_documents(tenant, name, limit=50)]

    async def users_with_documents(
        self, tenant: str, name: str, *, limit: int = 0
    ) -> AsyncIterator[tuple[dict[str, Any], Doc]]:
        """Each user as `users` lists it, with its stored document: every one of them, or at
        most `limit` of each kind, oldest first. One query per field naming a mapping, each
        the tenant's documents (an `$or` at the filter's top had SecantusDB match every
        tenant's), merged by `_id` (a kind's users are configuration: read whole, then
        yielded): the first `limit` of all are among the first `limit` of each."""
        for collection, fields in USERS.items():
            found: dict[Any, Doc] = {}
            with translate_errors():
                for field in fields:
                    query = scoped(tenant, {field: name})
                    async for doc in self._db[collection].find(query).sort("_id", 1).limit(limit):
                        found.setdefault(doc["_id"], doc)
            ordered = sorted(found.values(), key=lambda doc: doc["_id"])
            for doc in ordered[:limit] if limit else ordered:
                user = {
                    "kind": collection.removesuffix("s"),
                    "id": str(doc["_id"]),
                    "name": doc.get("name"),
                    "fields": [f for f in fields if doc.get(f) == name],
                }
                yield user, doc


def _after(stamp: Any, since: datetime) -> bool:
    """Whether `stamp` (a stored time, None when absent) is later than `since`."""
    return isinstance(stamp, datetime) and stamp > since


def _listed(head: Doc | None) -> Doc | None:
    """`head` if `_LISTED` matches it (checked here: read by name alone), else None."""
    if head is None or head.get("deleted") is True or "direction" not in head:
        return None
    return head
