"""The `driver_assignments` collection: who drove which vehicle from when.

A vehicle's history is a list of *changes*: `{_id, tenant, vehicle_id, plate, start, driver:
{id, cpf, name} | null, source, ref?, author, recorded_at, due?, repeats?, beneath?, unsynced?,
version}`. A
change lasts until the next one; `driver: null` means nobody drives the vehicle from
`start`. The `_id` is `<tenant>:<vehicle id>:<start as fixed-width UTC text>`, so the primary
index alone answers
"the driver at T" (the last change at or before T) and pages through a history, and two
reports of the same instant are one document: the later write stands (unless both name the
same driver: then the first stands, and the second is told it changed nothing), and the
reports it was written over stay beneath it (`beneath`, oldest first: `{driver, source, ref,
author, recorded_at, chain, repeats?}`), so that withdrawing it leaves the latest of them
standing (`AssignmentService.withdraw`). One reporter (source and ref) says one thing at an
instant: its later word replaces its earlier one, which is not kept. An HR answer recorded
`behind` another source's change at its instant is kept beneath it, not written over it.

A change recorded ahead of its start (a scheduled one) carries `due` (its start) until the
vehicle's `current_driver` has followed it (`due`, `done`): a sparse index holds only those.
A report of the driver already in force records no change; the change keeps it in `repeats`
(`{start, source, ref, author}`, `add_repeat`), so that a withdrawn change leaves what the
later reports said (`AssignmentService.withdraw`); a change of another driver inserted before
some of them has them recorded again after it, then takes them out (`take_repeats`). A change
whose vehicle's `current_driver` could not follow a driver's rename carries `unsynced` until
it has (`mark_unsynced`). Each
write at an instant gives the document a new `version`, which the next one is guarded by.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.errors import DuplicateKeyError

from gateway.clock import utcnow
from gateway.store.client import Collection, Doc, cursor_text, scoped, translate_errors
from gateway.store.migrations import record_step, step_done
from gateway.store.newest import newest_in_range

# What change_id writes (ASCII digits: `\d` would take any script's).
_TIME_SHAPE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z"
HISTORY_CURSOR = re.compile(r"[A-Za-z0-9_.-]{1,100}:[0-9a-f]{24}:" + _TIME_SHAPE)
"""A driver history's cursor (`<tenant>:<vehicle id>:<start>`), whatever the vehicle: the
store takes only one of the vehicle read (a cursor of another vehicle is a 400)."""
ASSIGNMENT_RANGES = IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="ranges")
"""Where the server scans for a range of `_id` (SecantusDB): every read here is one."""
DUE_INDEX = IndexModel([("due", ASCENDING)], name="due", sparse=True)
"""Scheduled changes not yet followed by `current_driver` (most changes have no `due`)."""
DRIVERS_INDEX = IndexModel([("tenant", ASCENDING), ("driver.cpf", ASCENDING)], name="drivers")
"""A driver's changes, by CPF (`of_driver`): what a driver's write or deletion makes the
history follow (a rare write: a new driver, a corrected name, a deletion)."""
UNSYNCED_INDEX = IndexModel([("unsynced", ASCENDING)], name="unsynced", sparse=True)
"""The changes a vehicle's `current_driver` could not follow yet (`unsynced`): usually none,
so a driver's write looks them up without reading the driver's history (`unsynced` hints it:
SecantusDB plans a scan of the collection for that query otherwise)."""
DUE_MIGRATION = "driver_assignments.due"
"""The `migrations` marker: changes scheduled before `due` existed have it (`mark_scheduled`)."""
_MARK_BATCH = 500
MAX_REPEATS = 50
"""The later reports of its driver a change keeps (`repeats`), the first of each reporter."""
MAX_BENEATH = 50
"""The reports at its instant a change was written over that it keeps (`beneath`), the latest."""
REPORT_FIELDS = ("driver", "source", "ref", "author", "recorded_at", "chain", "repeats")
"""What a report written over keeps of its change (`beneath`): enough to stand again."""
_RECORD_TRIES = 5
_REMOVE_TRIES = 5

AtInstant = Literal["replace", "behind", "never"]
"""What a report does to a change of another driver already at its instant: `replace` it
(the later write stands; the one written over is kept beneath it), stay `behind` it when
another source recorded it (replacing one of its own source), or `never` write there (an
end: the identification at that instant stands)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    written: bool
    replaced: Doc | None = None  # the change at that instant it was written over (kept beneath)
    behind: Doc | None = None  # the other source's change at that instant it was kept behind


def change_id(tenant: str, vehicle_id: str, start: datetime) -> str:
    # Fixed width, so that text order is time order: isoformat pads the year to four digits
    # (strftime's %Y does not: year 500 sorted after 2026, and was asked about as today).
    moment = _utc(start).replace(tzinfo=None).isoformat(timespec="microseconds")
    return f"{_prefix(tenant, vehicle_id)}{moment}Z"


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC; a time past the calendar once in UTC (`9999-12-31T23:00:00-05:00`,
    a driver asked about "then") is its first or last instant: no change starts beyond."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return (
            datetime.max.replace(tzinfo=UTC)
            if moment.year > 1
            else datetime.min.replace(tzinfo=UTC)
        )


def _start_of(change: str, prefix: str) -> datetime:
    """The start a change's id holds (`change_id`); the earliest time for one of that shape
    that is no time (month 13): the page is then read in one query."""
    try:
        return datetime.fromisoformat(change[len(prefix) : -1]).replace(tzinfo=UTC)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _prefix(tenant: str, vehicle_id: str) -> str:
    return f"{tenant}:{vehicle_id}:"


def report_of(change: Mapping[str, Any]) -> dict[str, Any]:
    """What a change keeps of a report at its instant that it was written over (`beneath`)."""
    return {k: change[k] for k in REPORT_FIELDS if change.get(k) is not None}


def _reporter(report: Mapping[str, Any]) -> tuple[Any, Any]:
    """Who reported it (source and ref): one reporter says one thing at an instant."""
    return report["source"], report.get("ref")


def same_driver(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two changes' drivers are one person, or nobody both: a driver by their id; a
    pending one (a CPF a report named before the tenant had the driver: no `id`) by CPF."""
    if a is None or b is None:
        return a is None and b is None
    if a.get("id") is not None and b.get("id") is not None:
        return bool(a["id"] == b["id"])
    return bool(a.get("cpf") == b.get("cpf"))


def _kept(stack: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The latest `MAX_BENEATH` reports written over (the ones next to stand again)."""
    return list(stack[-MAX_BENEATH:])


def _version() -> str:
    return uuid.uuid4().hex


def _driver_guard(change: Mapping[str, Any]) -> Doc:
    """A filter that matches `change` only while it names its driver as read (each field:
    an embedded document's equality would depend on the order of its fields)."""
    driver = change.get("driver")
    if not isinstance(driver, Mapping):
        return {"driver": driver}
    return {f"driver.{key}": value for key, value in driver.items()}


class AssignmentStore:
    def __init__(self, collection: Collection) -> None:
        self._c = collection
        # Read in windows of time where `ranges` serves them (SecantusDB reads every change
        # a query matches before the limit); MongoDB reads its primary index up to the limit.
        self.windowed = False

    async def record(
        self,
        tenant: str,
        vehicle_id: str,
        fields: Mapping[str, Any],
        *,
        at_instant: AtInstant = "replace",
    ) -> Recorded:
        """Store the change at `fields["start"]` unless that instant already holds a change to
        the same driver (a concurrent report of the same change: the first one stands), or,
        as `at_instant` says, a change of another driver (`AtInstant`). Each try reads the
        change at that instant and writes guarded by its `version`: a concurrent write
        there makes it decide again against what that one left."""
        doc_id = change_id(tenant, vehicle_id, fields["start"])
        document = {**fields, "_id": doc_id, "tenant": tenant, "vehicle_id": vehicle_id}
        said = _reporter(fields)
        with translate_errors():
            for _ in range(_RECORD_TRIES):
                held: Doc | None = await self._c.find_one(scoped(tenant, {"_id": doc_id}))
                if held is None:
                    try:
                        await self._c.insert_one({**document, "version": _version()})
                    except DuplicateKeyError:
                        continue
                    return Recorded(True)
                if at_instant == "never" or same_driver(held.get("driver"), fields["driver"]):
                    return Recorded(False)
                guard = scoped(tenant, {"_id": doc_id, "version": held.get("version")})
                stack = [r for r in held.get("beneath") or () if _reporter(r) != said]
                if at_instant == "behind" and held["source"] != fields["source"]:
                    update = {"beneath": _kept([*stack, report_of(fields)]), "version": _version()}
                    if (await self._c.update_one(guard, {"$set": update})).matched_count:
                        return Recorded(False, behind=held)
                    continue
                if _reporter(held) != said:
                    stack.append(report_of(held))
                replacement = {**document, "beneath": _kept(stack), "version": _version()}
                if (await self._c.replace_one(guard, replacement)).matched_count:
                    return Recorded(True, replaced=held)
        return Recorded(False)

    async def restore(self, tenant: str, vehicle_id: str, fields: Mapping[str, Any]) -> bool:
        """Put a report back at its instant (`fields`: a change's, with its `beneath`) where
        a change was just withdrawn. A report written there meanwhile is later than it: it
        stands, with the restored one (and what that one kept) beneath it; then False."""
        doc_id = change_id(tenant, vehicle_id, fields["start"])
        document = {**fields, "_id": doc_id, "tenant": tenant, "vehicle_id": vehicle_id}
        with translate_errors():
            try:
                await self._c.insert_one({**document, "version": _version()})
            except DuplicateKeyError:
                older = [*(fields.get("beneath") or ()), report_of(fields)]
                await self._c.update_one(
                    scoped(tenant, {"_id": doc_id}),
                    {"$push": {"beneath": {"$each": older}}, "$set": {"version": _version()}},
                )
                return False
        return True

    async def at(self, tenant: str, vehicle_id: str, when: datetime) -> Doc | None:
        """The change in force at `when`: the last one that started at or before it."""
        found = await newest_in_range(
            self._c,
            tenant,
            (_prefix(tenant, vehicle_id), change_id(tenant, vehicle_id, when)),
            lambda t: change_id(tenant, vehicle_id, t),
            anchor=_utc(when),
            limit=1,
            upper_op="$lte",
            windowed=self.windowed,
        )
        return found[0] if found else None

    async def next_after(self, change: Doc) -> Doc | None:
        """The change after this one (where this one ends). By its id, not its `start`: a
        change stored before starts were kept to the millisecond has microseconds in its id
        that its `start` (a BSON date) lost, and would otherwise follow itself."""
        prefix = _prefix(change["tenant"], change["vehicle_id"])
        query = {"_id": {"$gt": change["_id"], "$lt": prefix + "~"}}
        tenant = change["tenant"]
        with translate_errors():
            return await self._c.find_one(scoped(tenant, query), sort=[("_id", 1)])

    async def of_driver(self, tenant: str, cpf: str) -> list[Doc]:
        """Every change naming the driver of this CPF (through `drivers`), whatever its id."""
        with translate_errors():
            return await self._c.find(scoped(tenant, {"driver.cpf": cpf})).to_list(None)

    async def unsynced(self, tenant: str, cpf: str) -> list[Doc]:
        """The changes naming the driver of this CPF whose vehicle's `current_driver` could not
        follow them (`mark_unsynced`): usually none."""
        query = {"driver.cpf": cpf, "unsynced": True}
        with translate_errors():
            found = self._c.find(scoped(tenant, query)).hint(UNSYNCED_INDEX.document["name"])
            return await found.to_list(None)

    async def mark_unsynced(self, tenant: str, ids: list[str], unsynced: bool) -> None:
        """Mark the changes `ids` as ones their vehicle's `current_driver` could not follow
        (the driver's next write tries again), or take the mark off."""
        update = {"$set": {"unsynced": True}} if unsynced else {"$unset": {"unsynced": ""}}
        with translate_errors():
            await self._c.update_many(scoped(tenant, {"_id": {"$in": ids}}), update)

    async def set_driver(self, tenant: str, ids: list[str], driver: Mapping[str, str]) -> None:
        """The changes `ids` (of one driver, by CPF) name `driver` as it now is, marked
        `unsynced` until their vehicles' `current_driver` has followed (`mark_unsynced`): a
        process stopped in between leaves them for the driver's next write to finish."""
        query = {"_id": {"$in": ids}, "driver.cpf": driver["cpf"]}
        update = {"$set": {"driver": dict(driver), "unsynced": True}}
        with translate_errors():
            await self._c.update_many(scoped(tenant, query), update)

    async def remove(self, tenant: str, doc_id: str, match: Mapping[str, Any]) -> Doc | None:
        """Take the change `doc_id` out of the history if it still matches `match` (the report
        that recorded it, the driver it names); the removed change, or None. The change before
        it then lasts up to the next one.

        Read, then deleted guarded by what was read, not a `find_one_and_delete`: SecantusDB
        writes that with `{_id, $and: [filter]}`, matched against every change of every
        tenant (200 ms a withdrawal at 10,000 changes; docs/operations.md). The delete checks
        `match` again, the `version` read (every write of `repeats`, `beneath` or the report
        at the instant gives a new one) and the driver read (a rename, `set_driver`, keeps
        the version): the change deleted is the one returned, as the one atomic call
        returned it. A delete that misses (a write came between) reads again; a change no
        longer there or no longer matching is None, as before. After `_REMOVE_TRIES` misses
        the one atomic call takes it (a change rewritten that often at once)."""
        query = scoped(tenant, {"_id": doc_id, **match})
        with translate_errors():
            for _ in range(_REMOVE_TRIES):
                found: Doc | None = await self._c.find_one(query)
                if found is None:
                    return None
                guard = {**query, "version": found.get("version"), **_driver_guard(found)}
                if (await self._c.delete_one(guard)).deleted_count:
                    return found
            removed: Doc | None = await self._c.find_one_and_delete(query)
            return removed

    async def add_repeat(self, change: Doc, repeat: Mapping[str, Any]) -> None:
        """Keep on `change` (the one in force) a later report of its driver (`repeat`: start,
        source, ref, author): it records nothing, but stands if the change is withdrawn. One
        per report (source and ref), its first, and at most `MAX_REPEATS` per change. A
        reporter repeating the driver at the change's instant no longer says what it said
        there before (its report `beneath`, which leaves)."""
        kept = change.get("repeats") or []
        said = _reporter(repeat)
        update: dict[str, Any] = {}
        beneath = change.get("beneath") or ()
        if repeat["start"] == change["start"] and any(_reporter(r) == said for r in beneath):
            update["$pull"] = {"beneath": {"source": said[0], "ref": said[1]}}
        if not (
            len(kept) >= MAX_REPEATS
            or any(_reporter(r) == said for r in kept)
            # the change's own report, relayed again
            or (*_reporter(change), change["start"]) == (*said, repeat["start"])
        ):
            update["$push"] = {"repeats": dict(repeat)}
        if not update:
            return
        update["$set"] = {"version": _version()}  # a record() at its instant reads it again
        query = {"_id": change["_id"], "driver.id": (change.get("driver") or {}).get("id")}
        with translate_errors():
            await self._c.update_one(scoped(change["tenant"], query), update)

    async def take_repeats(self, change: Doc, reports: Sequence[Mapping[str, Any]]) -> None:
        """Take `reports` out of `change`'s `repeats`: a change of another driver inserted
        after `change`'s start stands between them and the change, and they were recorded
        again after it (`AssignmentService._finish_insertion`). Guarded by the change's
        `version` (a concurrent write there makes it read again); the ones no longer there
        (taken by a run before) are none to take."""
        if not reports:
            return
        tenant = change["tenant"]
        with translate_errors():
            for _ in range(_RECORD_TRIES):
                held: Doc | None = await self._c.find_one(scoped(tenant, {"_id": change["_id"]}))
                if held is None:
                    return
                kept = list(held.get("repeats") or ())
                left = [r for r in kept if r not in reports]
                if len(left) == len(kept):
                    return
                guard = scoped(tenant, {"_id": held["_id"], "version": held.get("version")})
                update = {"$set": {"repeats": left, "version": _version()}}
                if (await self._c.update_one(guard, update)).matched_count:
                    return

    async def drop_report(
        self, tenant: str, vehicle_id: str, start: datetime, match: Mapping[str, Any]
    ) -> None:
        """A report taken back (`match`: its source and ref) that recorded no change of its
        own: a repeat leaves the `repeats` of the change in force at `start`, a report
        written over leaves the `beneath` of the change at `start`."""
        in_force = await self.at(tenant, vehicle_id, start)
        if in_force is None:
            return
        update: dict[str, Any] = {}
        if in_force.get("repeats"):
            update["repeats"] = {**match, "start": start}
        if in_force["_id"] == change_id(tenant, vehicle_id, start) and in_force.get("beneath"):
            update["beneath"] = dict(match)
        if not update:
            return
        # a new `version`: a record() at this instant that read the change before writes
        # nothing from that read (it would put the report taken back beneath again)
        change = {"$pull": update, "$set": {"version": _version()}}
        with translate_errors():
            await self._c.update_one(scoped(tenant, {"_id": in_force["_id"]}), change)

    async def history(
        self, tenant: str, vehicle_id: str, *, before: str | None, limit: int
    ) -> list[Doc]:
        """Changes newest first; `before` is the `_id` the previous page ended with (of this
        vehicle's history: another one's, or junk, is a 400, not the first page again)."""
        prefix = _prefix(tenant, vehicle_id)
        shape = re.compile(re.escape(prefix) + _TIME_SHAPE)
        cursor = cursor_text(before, shape)
        # Windows back from the cursor's start, or from now (changes ahead of it first).
        anchor = _start_of(cursor, prefix) if cursor is not None else utcnow()
        return await newest_in_range(
            self._c,
            tenant,
            (prefix, cursor or prefix + "~"),
            lambda t: change_id(tenant, vehicle_id, t),
            anchor=anchor,
            limit=limit,
            windowed=self.windowed,
        )

    async def times_ahead(
        self, tenant: str, vehicle_id: str, after: datetime, *, limit: int
    ) -> list[Doc]:
        """The `start` and `recorded_at` of the vehicle's changes that start after `after`,
        the latest first: one range of `_id`, empty unless a change is scheduled or the time
        went back (`AssignmentService._after_changes_made_now`, at each handover dated now
        and each sync of `current_driver`)."""
        ids = {
            "$gt": change_id(tenant, vehicle_id, after),
            "$lt": _prefix(tenant, vehicle_id) + "~",
        }
        with translate_errors():
            found = self._c.find(
                scoped(tenant, {"_id": ids}), {"_id": 0, "start": 1, "recorded_at": 1}
            )
            return await found.sort("_id", DESCENDING).limit(limit).to_list(limit)

    # -- scheduled changes: system work across tenants, never reached from a request ---------

    async def due(self, now: datetime, limit: int) -> list[Doc]:
        """Scheduled changes whose start has come (`now`) that `current_driver` has not
        followed yet, the earliest first."""
        with translate_errors():
            found = self._c.find({"due": {"$lte": now}}).sort("due", ASCENDING)
            return await found.to_list(limit)

    async def mark_scheduled(self, now: datetime) -> int:
        """Once per database (a marker in `migrations`), at start: give `due` to the changes
        the version before `due` existed scheduled (recorded before their start, `start` >
        `recorded_at`, and `current_driver` never followed them when they started), so that
        `follow_scheduled` brings their vehicles up to date: each one still ahead of `now`,
        and of each vehicle the newest one that started (the one in force, unless a change
        recorded at once came later, which `current_driver` followed when it was written;
        an older one is superseded, and following it would change nothing). It reads every
        change once (the old version's carry nothing an index holds); later starts find the
        marker. Two processes starting at once both mark (each write guarded by `due`
        missing) and both set the marker: a change one of them marks again after the other's
        runner followed it is followed again, which writes nothing (the field is up to date).
        How many changes it marked."""
        migrations = self._c.database["migrations"]
        if await step_done(migrations, DUE_MIGRATION):
            return 0
        with translate_errors():
            ahead: list[Doc] = []
            started: dict[tuple[str, str], Doc] = {}  # a vehicle's newest started one
            projection = {"tenant": 1, "vehicle_id": 1, "start": 1, "recorded_at": 1}
            unmarked = self._c.find({"due": {"$exists": False}}, projection)
            async for change in unmarked:
                if not change["start"] > change["recorded_at"]:
                    continue  # in force when recorded: followed then
                if change["start"] > now:
                    ahead.append(change)
                    continue
                vehicle = (change["tenant"], change["vehicle_id"])
                if vehicle not in started or started[vehicle]["start"] < change["start"]:
                    started[vehicle] = change
            marks = [
                UpdateOne(
                    {"_id": change["_id"], "due": {"$exists": False}},
                    {"$set": {"due": change["start"]}},
                )
                for change in [*started.values(), *ahead]
            ]
            marked = 0
            for first in range(0, len(marks), _MARK_BATCH):
                batch = marks[first : first + _MARK_BATCH]
                marked += (await self._c.bulk_write(batch, ordered=False)).modified_count
        await record_step(migrations, DUE_MIGRATION, now)
        return marked

    async def done(self, change: Doc) -> None:
        """`current_driver` followed this change (unless it was written again meanwhile,
        with another `due`)."""
        with translate_errors():
            await self._c.update_one(
                {"_id": change["_id"], "due": change["due"]}, {"$unset": {"due": ""}}
            )
