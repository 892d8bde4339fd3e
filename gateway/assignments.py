"""Use case: who drives which vehicle, as a history of changes (see `store/assignments.py`).

    assign(tenant, vehicle, driver, start=, source=, ref=, author=, chain=, behind_others=,
           pending=)
        -> AssignResult
        `vehicle` is an id or a plate, `driver` an id or a CPF (or None: nobody drives it
        from `start`); with `pending` (a vehicle write's `{cpf, name}`), a CPF the tenant
        has no driver of yet is recorded as that driver, pending (no `id`), which
        `follow_driver` completes when the driver is written. Written by the admin API
        today; by triggers, actions, checklists and flows through the same call (their
        `source` and a `ref` such as the checklist id). A flow gives its run's `chain`
        (`{run, depth}`), kept with the change for the origin of the `entity.updated` it
        causes, at once or when its start comes: the loop guard counts it.
        At an instant that holds another driver's change, the later report stands and the
        one written over is kept beneath it (`replaced`); `behind_others` (a flow's HR
        answer) leaves another source's change standing and keeps the report beneath it
        (`behind`, not `changed`).
    end(tenant, vehicle, at=, source=, ref=, author=) -> AssignResult | None
        The reporter says its driver stopped driving at `at` (a tracker's logout): the change
        in force then, if it names a driver and came from `source` (and, given `ref`, with
        that ref), is followed by "nobody" from `at`; so is no change at all (the end came
        before the identification it ends: that one then lasts up to `at`). A change any
        other source recorded (an admin's, an ERP's), and an identification at `at` itself,
        are left alone. None when nothing was recorded.
    withdraw(tenant, vehicle, start, source=, ref=) -> bool
        A report taken back (a corrected or deleted checklist): its change at `start` leaves
        the history while it is still that report's; at that instant the latest standing
        report stands in its place (a later report of its driver there, kept in `repeats`,
        else the latest one it was written over, kept in `beneath`), and the later reports
        of its driver after it are recorded as reported again.
    follow_driver(tenant, driver, copied=) -> int
        The history's copies of a driver (by CPF) become the driver's as stored: a corrected
        name, the id of a driver deleted and created again.
    driver_deleted(tenant, driver id, cpf, at=, source=, ref=, author=) -> int
        A deleted driver drives nothing from `at`: their changes in force end there, the
        later (scheduled) ones leave the history.
    driver_at(tenant, vehicle, when) -> Assignment | None     "who drove at the infraction"
    current(tenant, vehicle) -> Assignment | None              driver_at(now)
    history(tenant, vehicle, before=, limit=) -> [Assignment]  newest first
    follow_scheduled() -> int                                  current_driver of the vehicles
                                                               whose scheduled change started

Rules (docs/notifications.md, "Drivers of vehicles"):
- A change lasts until the next change of the same vehicle: no two assignments overlap.
- A late report (a start before later changes) is inserted at its place in time; the later
  changes stay, so it only covers the gap up to the next one; a next one of the same driver
  becomes its repeat (`_move_start_earlier`): that driver starts at the late report's time.
  The repeats after it that the change it splits kept (reports of that change's driver)
  are recorded again (`_report_again`, as a withdrawal does), then taken out of it
  (`_finish_insertion`): the history is what the reports in time order give, whatever order
  they came in. A failure between those writes is finished by the relay's retry (the
  report, at its change's own instant, finds the insertion and completes it).
- Reporting the driver who already drives at `start` records no change (HR systems and ERPs
  repeat "current driver" answers): the change in force keeps it in `repeats`, for a
  withdrawal; two changes at the same instant: the later write wins, and keeps the one it
  was written over (`beneath`), for a withdrawal; a flow's HR answer stays behind another
  source's change at its instant (docs/flows.md `assign`).
- Of two concurrent reports of the same change, exactly one reports `changed`: the store
  writes a change only over a different driver's, and an end only where no change is
  recorded at its instant (an end relayed twice at once is recorded once; an identification
  at that instant stands, whether it was written before the end or meanwhile).
- The vehicle's `current_driver` field follows the history (an `entity.updated` event when
  it changes, origin the change's source, ref and id, and a flow's chain: `_origin`), so
  mappings and filters can read it: at once for a change in force now, and,
  for a scheduled one (a start ahead), once its start has come. Such a change is stored with
  `due` (its start); every flow runner's housekeeping (each second, in every process that
  runs flows) calls `follow_scheduled`, which brings the vehicles of the due changes up to
  date, then clears `due`. It survives restarts (the database holds what is due), and two
  processes doing it at once write the field once (the second finds it up to date). The
  changes a version before `due` scheduled get it once, at the first start after the upgrade
  (`AssignmentStore.mark_scheduled`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from gateway.clock import as_stored, utcnow
from gateway.entities import EntityService, Origin
from gateway.errors import Conflict, FieldProblem, InvalidPayload, NotFound
from gateway.schemas.ids import normalize_identifier
from gateway.store import Doc
from gateway.store.assignments import AssignmentStore, AtInstant, change_id, same_driver

log = logging.getLogger(__name__)

Source = Literal["erp", "hr", "checklist", "admin", "flow", "tracker"]
SOURCES: tuple[str, ...] = ("erp", "hr", "checklist", "admin", "flow", "tracker")
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(days=366)  # a scheduled change, at most a year ahead
_SYNC_ROUNDS = 3
_DUE_BATCH = 100
# The changes ahead of now read for the latest one dated "now" on a clock that ran fast
# (`_after_changes_made_now`): scheduled ones (ahead of when they were recorded) are rare.
_AHEAD_READ = 10
_INSTANT = timedelta(microseconds=1)  # the finest step of a change's id: just before a start


@dataclass(frozen=True, slots=True)
class Assignment:
    vehicle_id: str
    plate: str
    driver: dict[str, str] | None  # {id, cpf, name}; {cpf, name?}: pending; None: nobody
    start: datetime
    end: datetime | None  # the next change's start; None while it lasts
    source: str
    ref: str | None
    author: str
    recorded_at: datetime
    id: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "vehicle": {"id": self.vehicle_id, "plate": self.plate},
            "driver": self.driver,
            "start": self.start,
            "end": self.end,
            "source": self.source,
            "ref": self.ref,
            "author": self.author,
            "recorded_at": self.recorded_at,
        }


@dataclass(frozen=True, slots=True)
class AssignResult:
    assignment: Assignment
    changed: bool  # False: that driver already drove the vehicle at `start`, or `behind`
    replaced: Assignment | None = None  # a change at the same instant, written over (kept)
    behind: Assignment | None = None  # another source's change at that instant: it stands


class AssignmentService:
    def __init__(
        self,
        store: AssignmentStore,
        entities: EntityService,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._entities = entities
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    async def assign(
        self,
        tenant: str,
        vehicle_ref: str,
        driver_ref: str | None,
        *,
        start: datetime | None = None,
        source: str = "admin",
        ref: str | None = None,
        author: str,
        chain: Mapping[str, Any] | None = None,
        behind_others: bool = False,
        pending: Mapping[str, str] | None = None,
    ) -> AssignResult:
        """`behind_others`: a change another source recorded at `start` stands, and this
        report is kept beneath it (`behind`) instead of written over it (an HR answer).
        `pending`: the reporter's copy (`{cpf, name}`) of the driver `driver_ref` names by
        CPF, recorded as that driver, pending (no `id`), when the tenant has no driver of
        that CPF yet (an ERP's handover to a new hire HR has not synced): the driver before
        stops driving at `start`, and the driver's record, when it is written, completes
        the change (`follow_driver`). Without it, an unknown driver is a 422."""
        now = self._clock()
        dated_now = start is None
        start = self._check(start or now, now, source, ref)
        vehicle = await self._entities.get(tenant, "vehicle", vehicle_ref)
        moved = False
        if dated_now:
            after = await self._after_changes_made_now(vehicle, start)
            moved, start = after != start, after
        driver = None
        if driver_ref is not None:
            driver = await self._stored_driver(tenant, driver_ref)
            if driver is None and pending is not None and pending.get("cpf") == driver_ref:
                driver = {k: pending[k] for k in ("cpf", "name") if pending.get(k)}
            elif driver is None:
                raise _no_driver(driver_ref)
        at_instant: AtInstant = "behind" if behind_others else "replace"
        result = await self._change(
            vehicle,
            driver,
            start,
            source,
            ref,
            author,
            at_instant=at_instant,
            chain=chain,
            moved=moved,
        )
        assert result is not None  # only an end leaves a change at its instant alone
        return result

    async def _after_changes_made_now(self, vehicle: Doc, now: datetime) -> datetime:
        """`now`, or just after the vehicle's latest change dated "now" when that one is
        later: after a step back of the gateway's time (a clock that ran fast, set right) a
        handover dated now on it was filed before the one dated now on the fast clock, as a
        late report covering the gap up to it, and the history kept the earlier driver in
        force while the vehicle's `current_driver` said the later one (a fine from then on
        went to the earlier driver). A change dated "now" starts at or before it was recorded;
        one recorded ahead of its start is a scheduled change, which stays ahead. The change
        moved so is no scheduled one (no `due`): the vehicle's `current_driver` follows it at
        once (`_sync_current_driver` reads the history at this instant, not at the clock).
        What remains: the history read at a time before it (a fine in the gap up to it, the
        length of the step) still names the driver then in force."""
        vid = str(vehicle["_id"])
        ahead = await self._store.times_ahead(vehicle["tenant"], vid, now, limit=_AHEAD_READ)
        for change in ahead:  # the latest first
            start: datetime = change["start"]
            recorded = change.get("recorded_at")
            if isinstance(recorded, datetime) and start <= recorded:
                return start + timedelta(milliseconds=1)
        return now

    async def _change(
        self,
        vehicle: Doc,
        driver: dict[str, str] | None,
        start: datetime,
        source: str,
        ref: str | None,
        author: str,
        *,
        at_instant: AtInstant,
        chain: Mapping[str, Any] | None = None,
        moved: bool = False,
    ) -> AssignResult | None:
        """Record `driver` from `start`, over a change of another driver already at that
        instant as `at_instant` says (`AtInstant`): `never` (an end) records nothing there
        (None). `chain`: the flow run that reports it. `moved`: a handover dated now moved
        after a change dated now on a clock that ran fast (`_after_changes_made_now`): ahead
        of the clock, yet not scheduled."""
        tenant, now = vehicle["tenant"], self._clock()
        vid = str(vehicle["_id"])
        in_force = await self._store.at(tenant, vid, start)
        if in_force is not None and same_driver(in_force.get("driver"), driver):
            # A repeat records nothing, and the field still follows the history: a report
            # written on the vehicle as its reporter spells it (`{cpf, name}`) gets the
            # driver's `{id, cpf, name}` back. Its origin is the report's (with a flow run's
            # chain: the loop guard counts a write-back that keeps being answered so).
            said = {"source": source, "ref": ref, "author": author, "chain": chain}
            await self._store.add_repeat(
                in_force, {"start": start, "source": source, "ref": ref, "author": author}
            )
            if in_force["_id"] == change_id(tenant, vid, start):
                # At the change's own instant (its report relayed again: the relay's retry of a
                # batch a failure stopped): an insertion the failure left half done finishes.
                await self._finish_insertion(vehicle, start)
            await self._sync_current_driver(
                tenant, vehicle, _origin({**said, "_id": in_force["_id"]})
            )
            return AssignResult(await self._assignment(in_force), changed=False)
        fields = {
            "plate": vehicle["data"]["plate"],
            "start": start,
            "driver": driver,
            "source": source,
            "ref": ref,
            "author": author,
            "recorded_at": now,
            # Always written: a change replacing one at the same instant drops its chain.
            "chain": dict(chain) if chain else None,
        }
        if start > now and not moved:  # scheduled: current_driver follows it when it starts
            fields["due"] = start
        recorded = await self._store.record(tenant, vid, fields, at_instant=at_instant)
        if recorded.behind is not None:
            # Another source's change at that instant stands; the report is kept beneath it.
            standing = await self._assignment(recorded.behind)
            return AssignResult(standing, changed=False, behind=standing)
        if not recorded.written and at_instant == "never":
            # An identification at the very instant of the end, or the same end relayed
            # twice at once, came first: it stands.
            return None
        if not recorded.written:
            # A concurrent report of the same change (an HR answer posted twice at once)
            # came first: one of the two reports the change.
            stored = await self._store.at(tenant, vid, start)
            assert stored is not None  # that driver's change at `start`
            return AssignResult(await self._assignment(stored), changed=False)
        said = {**fields, "_id": change_id(tenant, vid, start), "vehicle_id": vid}
        await self._name_as_stored(tenant, said)
        if in_force is not None and in_force["start"] < start:
            await self._finish_insertion(vehicle, start)
        if driver is not None:
            await self._move_start_earlier(tenant, vid, start)
        await self._sync_current_driver(tenant, vehicle, _origin(said))
        written = await self._store.at(tenant, vid, start)
        assert written is not None  # just recorded
        replaced = recorded.replaced
        return AssignResult(
            await self._assignment(written),
            changed=True,
            replaced=None if replaced is None else await self._assignment(replaced),
        )

    async def _finish_insertion(self, vehicle: Doc, start: datetime) -> None:
        """The change at `start`, inserted into the change before it, ends that one there: the
        later reports of its driver that one kept as repeats (after `start`, before the next
        change) are no longer repeats of it but reports after this one, recorded again
        (`_report_again`), and only then taken out of it (`take_repeats`). Each step is one
        a second run does again or finds done: a report recorded again is a repeat of what
        the first run recorded, and the repeats are left where they were until then. So a
        failure between the writes (a store error, a process stopped) loses nothing: the
        relay runs the batch again, the report at this change's own instant finds it
        (`_change`'s repeat) and finishes here what the failure left."""
        tenant, vid = vehicle["tenant"], str(vehicle["_id"])
        written = await self._store.at(tenant, vid, start)
        if written is None or written["_id"] != change_id(tenant, vid, start):
            return  # taken back meanwhile: nothing stands between
        split = await self._store.at(tenant, vid, start - _INSTANT)
        if split is None or not split.get("repeats"):
            return
        following = await self._store.next_after(written)
        until = None if following is None else following["start"]
        again = sorted(
            (
                r
                for r in split["repeats"]
                if start < r["start"] and (until is None or r["start"] < until)
            ),
            key=lambda r: r["start"],
        )
        if not again:
            return
        await self._report_again(vehicle, split.get("driver"), again)
        # Taken out only where a change now stands between them and `split` (the change at
        # `start` withdrawn meanwhile: they are its repeats again, and stay).
        ends = await self._store.next_after(split)
        if ends is not None:
            await self._store.take_repeats(split, [r for r in again if r["start"] >= ends["start"]])

    async def _move_start_earlier(self, tenant: str, vid: str, start: datetime) -> None:
        """The change just recorded at `start`, before a later change of the same driver (an
        ERP's handover at 08:00 after a checklist's at 10:00), is where that driver starts:
        the later change leaves the history, and its report (and the repeats it kept)
        become repeats of this one, as had the reports come in time order; a withdrawal of
        one of them then leaves what the others said (`withdraw`). A later change holding
        reports it was written over (`beneath`) or still scheduled (`due`) stays."""
        written = await self._store.at(tenant, vid, start)
        following = None if written is None else await self._store.next_after(written)
        if (
            written is None
            or following is None
            or not same_driver(following.get("driver"), written.get("driver"))
            or following.get("beneath")
            or following.get("due")
        ):
            return
        match = {"source": following["source"], "ref": following.get("ref")}
        removed = await self._store.remove(tenant, following["_id"], match)
        if removed is None:  # written again meanwhile: it stays
            return
        own = {k: removed.get(k) for k in ("start", "source", "ref", "author")}
        for report in [own, *(removed.get("repeats") or ())]:
            change = await self._store.at(tenant, vid, start)  # its version, each time
            if change is None:
                return
            await self._store.add_repeat(change, report)

    async def end(
        self,
        tenant: str,
        vehicle_ref: str,
        *,
        at: datetime,
        source: str,
        ref: str | None = None,
        author: str,
    ) -> AssignResult | None:
        vehicle = await self._entities.get(tenant, "vehicle", vehicle_ref)
        vid = str(vehicle["_id"])
        at = self._check(at, self._clock(), source, ref)
        in_force = await self._store.at(tenant, vid, at)
        if in_force is None:
            # The end came before the identification it ends (a partner's retry, a feed
            # read late): recorded all the same, so that the identification, when it comes,
            # lasts only up to it.
            ended = ref
        elif (
            in_force.get("driver") is None
            or in_force["source"] != source
            or (ref is not None and in_force.get("ref") != ref)
            # An identification at the very instant of the end (the next driver's key read
            # as the last one's session ends): the identification stands, whichever of the
            # two came first.
            or in_force["_id"] == change_id(tenant, vid, at)
        ):
            return None
        else:
            # The ended change's ref says what ended: "nobody, after geotab_driver_id:b3A".
            ended = in_force.get("ref")
        return await self._change(vehicle, None, at, source, ended, author, at_instant="never")

    async def withdraw(
        self, tenant: str, vehicle_ref: str, start: datetime, *, source: str, ref: str
    ) -> bool:
        """A report taken back (a checklist corrected to another vehicle, time or driver, or
        deleted): the change it recorded at `start`, while it is still that report's
        (`source`, `ref`: a later report at that instant stands), leaves the history, and
        what the other reports said stands. At that instant, the latest standing report: a
        later report of its driver there (the change's `repeats`, which recorded nothing),
        else the latest report it was written over (`beneath`, a driver by CPF as the tenant
        now has it), which is put back with the rest beneath it; with none, the change before
        it lasts on. The later reports of its driver after that instant and before the next
        change are recorded as reported again: the first records the change (when another
        driver stands at its time), the others repeat it. A report that recorded no change
        of its own (a repeat, one written over) leaves the `repeats` or `beneath` it is kept
        in. The vehicle's `current_driver` follows. Whether a change was removed."""
        vehicle = await self._entities.get(tenant, "vehicle", vehicle_ref)
        vid = str(vehicle["_id"])
        start = as_stored(start.astimezone(UTC))
        said = {"source": source, "ref": ref}
        removed = await self._store.remove(tenant, change_id(tenant, vid, start), said)
        if removed is None:
            await self._store.drop_report(tenant, vid, start, said)
            return False
        following = await self._store.next_after(removed)
        standing = sorted(
            (r for r in removed.get("repeats") or () if r["start"] >= removed["start"]),
            key=lambda r: r["start"],
        )
        if following is not None:
            standing = [r for r in standing if r["start"] < following["start"]]
        stack = list(removed.get("beneath") or ())
        if standing and standing[0]["start"] == removed["start"]:
            first = standing.pop(0)
            said_again = {k: first.get(k) for k in ("source", "ref", "author")}
            stack.append({"driver": removed["driver"], **said_again, "recorded_at": self._clock()})
        if stack:
            await self._put_back(vehicle, removed["start"], stack)
        await self._report_again(vehicle, removed["driver"], standing)
        await self._sync_current_driver(tenant, vehicle, _origin(removed), by_in_force=True)
        return True

    async def _report_again(
        self, vehicle: Doc, driver: dict[str, str] | None, reports: list[Doc]
    ) -> None:
        """The reports of `driver` (oldest first) a change kept as repeats, recorded as
        reported again, now that the change no longer stands before them (withdrawn, or
        another driver's change inserted between): each as had the reports come in time
        order, the first recording a change where another driver stands at its time, the
        next ones repeating it. The one mechanism of a withdrawal and an insertion."""
        for repeat in reports:
            await self._change(
                vehicle,
                driver,
                repeat["start"],
                repeat["source"],
                repeat.get("ref"),
                repeat["author"],
                at_instant="never",
            )

    async def _put_back(self, vehicle: Doc, start: datetime, stack: list[Doc]) -> None:
        """The latest of the reports `stack` (oldest first) at `start`, where a change was
        withdrawn, stands there again, the others beneath it; its driver as the tenant now
        has them (renamed, created again), else as kept (deleted since: they drove then)."""
        *beneath, top = stack
        driver = top.get("driver")
        if driver is not None:
            try:
                driver = await self._driver(vehicle["tenant"], driver["cpf"])
            except InvalidPayload:
                pass
        fields = {
            "ref": None,
            "chain": None,
            **top,
            "plate": vehicle["data"]["plate"],
            "start": start,
            "driver": driver,
            "beneath": beneath,
        }
        if start > self._clock():  # scheduled: current_driver follows it when it starts
            fields["due"] = start
        tenant, vid = vehicle["tenant"], str(vehicle["_id"])
        if await self._store.restore(tenant, vid, fields):
            said = {**fields, "_id": change_id(tenant, vid, start), "vehicle_id": vid}
            await self._name_as_stored(tenant, said)

    async def _name_as_stored(self, tenant: str, change: Doc) -> None:
        """A change just written names its driver as the tenant has them after the write: a
        rename (or a re-creation) committed between the writer's read of the driver and its
        write, whose follow (`follow_driver`) read the history before the change was in it,
        left the old copy, which only another rename would have rewritten. One read of the
        driver; on a difference the change takes the driver's copy, marked `unsynced`, and
        its vehicle follows (`_follow_vehicles`, which takes the mark off)."""
        copy = change.get("driver")
        if copy is None:
            return
        stored = await self._stored_driver(tenant, copy["cpf"])
        if stored is None or stored == copy:  # deleted since: left as written
            return
        await self._store.set_driver(tenant, [change["_id"]], stored)
        await self._follow_vehicles(tenant, [{**change, "driver": stored, "unsynced": True}])

    async def follow_driver(self, tenant: str, driver_ref: str, *, copied: bool) -> int:
        """The history's copies of a driver (`{id, cpf, name}`) become the driver's as stored:
        a corrected name, and the id of a driver deleted and created again (one person by CPF,
        the natural key: the changes of before the deletion name the driver there is now).
        `copied`: the write may have changed them (a creation, a write of `name` or `cpf`);
        otherwise (an e-mail, a phone) no copy is read. The changes rewritten are marked
        `unsynced` with the copy, and the `current_driver` of their vehicles follows, and of
        any vehicle marked before (one a follow could not write, or not reached when the
        process stopped): the driver's next write, of whatever, finishes it. How many changes
        it rewrote."""
        try:
            driver = await self._driver(tenant, driver_ref)
        except InvalidPayload:  # deleted since: its deletion is followed (`driver_deleted`)
            return 0
        if not copied:
            await self._follow_vehicles(tenant, await self._store.unsynced(tenant, driver["cpf"]))
            return 0
        theirs = await self._store.of_driver(tenant, driver["cpf"])
        stale = [c for c in theirs if c["driver"] != driver]
        if stale:
            await self._store.set_driver(tenant, [c["_id"] for c in stale], driver)
        rewritten = [{**c, "driver": driver, "unsynced": True} for c in stale]
        await self._follow_vehicles(tenant, [*rewritten, *(c for c in theirs if c.get("unsynced"))])
        return len(stale)

    async def driver_deleted(
        self,
        tenant: str,
        driver_id: str,
        cpf: str,
        *,
        at: datetime,
        source: str,
        ref: str,
        author: str,
    ) -> int:
        """A deleted driver drives nothing from `at` (the deletion): each change of theirs in
        force then is followed by "nobody" from `at`, and the ones starting later (scheduled)
        leave the history (what such a one was written over at its instant, another
        driver's report, stands again); the changes before stay (they drove then). The
        `current_driver` of their vehicles follows. How many changes it recorded or removed."""
        at = self._check(at, self._clock(), source, ref)
        theirs = [
            c
            for c in await self._store.of_driver(tenant, cpf)
            if (c.get("driver") or {}).get("id") == driver_id
        ]
        touched = 0
        for change in theirs:
            if change["start"] > at:
                match = {"driver.id": driver_id}
                removed = await self._store.remove(tenant, change["_id"], match)
                touched += removed is not None
                if removed is not None:
                    await self._put_back_others(tenant, removed, driver_id)
        for vid in sorted({c["vehicle_id"] for c in theirs}):
            in_force = await self._store.at(tenant, vid, at)
            if in_force is None or (in_force.get("driver") or {}).get("id") != driver_id:
                continue
            try:
                vehicle = await self._entities.get(tenant, "vehicle", vid)
            except NotFound:  # deleted since: nothing to end
                continue
            result = await self._change(
                vehicle, None, at, source, ref, author, at_instant="replace"
            )
            touched += result is not None and result.changed
        await self._follow_vehicles(tenant, theirs)  # those whose scheduled change left
        return touched

    async def _put_back_others(self, tenant: str, removed: Doc, driver_id: str) -> None:
        """What a deleted driver's scheduled change `removed` was written over, but for the
        driver's own reports, stands at its instant again."""
        stack = [
            r
            for r in removed.get("beneath") or ()
            if (r.get("driver") or {}).get("id") != driver_id
        ]
        if not stack:
            return
        try:
            vehicle = await self._entities.get(tenant, "vehicle", removed["vehicle_id"])
        except NotFound:  # deleted since: nothing to put back
            return
        await self._put_back(vehicle, removed["start"], stack)

    async def _follow_vehicles(self, tenant: str, changes: list[Doc]) -> None:
        """The `current_driver` of the vehicles of `changes` (rewritten) follows the history
        (origin the first of them). A vehicle that cannot be written (a plate stored before
        its rule, a write racing ours) is logged and its changes marked `unsynced`,
        for the driver's next write to try again; the others follow (their marks taken off)."""
        for vid in sorted({c["vehicle_id"] for c in changes}):
            of_vehicle = [c for c in changes if c["vehicle_id"] == vid]
            try:
                vehicle = await self._entities.get(tenant, "vehicle", vid)
                await self._sync_current_driver(
                    tenant, vehicle, _origin(of_vehicle[0]), by_in_force=True
                )
            except NotFound:  # deleted since: nothing to follow
                pass
            except (InvalidPayload, Conflict) as exc:
                log.warning(
                    "vehicle %s of tenant %s: current_driver not brought up to date: %s",
                    vid,
                    tenant,
                    exc.detail,
                )
                await self._store.mark_unsynced(tenant, [c["_id"] for c in of_vehicle], True)
                continue
            if marked := [c["_id"] for c in of_vehicle if c.get("unsynced")]:
                await self._store.mark_unsynced(tenant, marked, False)

    async def drives_at(
        self, tenant: str, vehicle_id: str, when: datetime, value: Mapping[str, Any]
    ) -> bool:
        """Whether the change in force at `when` names the driver a vehicle's
        `current_driver` value names: by its `id`, by its `cpf` (any spelling; a pending
        driver by CPF alone); each member given as the change has it. A report of that
        driver from `when` is one the history has heard (`EntityService.news`)."""
        try:
            at = as_stored(when.astimezone(UTC))
        except (OverflowError, ValueError):  # no time the history holds
            return False
        in_force = await self._store.at(tenant, vehicle_id, at)
        return in_force is not None and _names(in_force.get("driver"), value)

    async def hear(
        self,
        tenant: str,
        vehicle_id: str,
        value: Mapping[str, Any],
        since: datetime,
        *,
        source: str,
        ref: str,
        author: str,
    ) -> bool:
        """A report of the driver `value` names from `since` that the vehicle's write left
        out (the history has that driver then: `EntityService.heard`, so no event brings it
        here) is kept by the change in force then as a repeat, as one relayed would be
        (`_change`), so that it stands if that change is taken back. It records no change
        and writes no field. Whether it was kept (the history still has that driver then)."""
        start = self._check(since, self._clock(), source, ref)
        in_force = await self._store.at(tenant, vehicle_id, start)
        if in_force is None or not _names(in_force.get("driver"), value):
            return False
        report = {"start": start, "source": source, "ref": ref, "author": author}
        await self._store.add_repeat(in_force, report)
        return True

    async def driver_at(self, tenant: str, vehicle_ref: str, when: datetime) -> Assignment | None:
        vehicle = await self._entities.get(tenant, "vehicle", vehicle_ref)
        doc = await self._store.at(tenant, str(vehicle["_id"]), when)
        return None if doc is None else await self._assignment(doc)

    async def current(self, tenant: str, vehicle_ref: str) -> Assignment | None:
        return await self.driver_at(tenant, vehicle_ref, self._clock())

    async def history(
        self, tenant: str, vehicle_ref: str, *, before: str | None, limit: int
    ) -> list[Assignment]:
        vehicle = await self._entities.get(tenant, "vehicle", vehicle_ref)
        docs = await self._store.history(tenant, str(vehicle["_id"]), before=before, limit=limit)
        if not docs:
            return []
        # Each change ends where the newer one (listed before it) starts; the page's newest
        # ends at a change on the previous page, or lasts.
        first = await self._assignment(docs[0])
        return [first] + [
            _to_assignment(doc, newer["start"]) for newer, doc in itertools.pairwise(docs)
        ]

    async def follow_scheduled(self) -> int:
        """The `current_driver` of every vehicle whose scheduled change has started (with its
        `entity.updated`, origin the change's source and ref); how many changes were due."""
        total = 0
        while changes := await self._store.due(self._clock(), _DUE_BATCH):
            for change in changes:
                try:
                    vehicle = await self._entities.get(
                        change["tenant"], "vehicle", change["vehicle_id"]
                    )
                except NotFound:  # deleted since: nothing to follow
                    pass
                else:
                    origin = _origin(change)
                    await self._sync_current_driver(
                        change["tenant"], vehicle, origin, by_in_force=True
                    )
                await self._store.done(change)
            total += len(changes)
            if len(changes) < _DUE_BATCH:
                break
        return total

    # -- helpers -----------------------------------------------------------------------------

    def _check(self, start: datetime, now: datetime, source: str, ref: str | None) -> datetime:
        problems = []
        if ref is not None and not 0 < len(ref) <= 200:
            problems.append(FieldProblem("/ref", "ref is text of at most 200", "maxLength"))
        if start.tzinfo is None:
            problems.append(FieldProblem("/start", "start needs a UTC offset", "format"))
        elif not EARLIEST <= start <= now + MAX_AHEAD:
            problems.append(
                FieldProblem("/start", "start must be after 2000 and at most a year ahead", "range")
            )
        if source not in SOURCES:
            problems.append(
                FieldProblem("/source", f"source is one of {', '.join(SOURCES)}", "enum")
            )
        if problems:
            raise InvalidPayload("invalid driver assignment", problems)
        # Kept to the millisecond, as the database keeps a time: a change's id holds its start,
        # and one with microseconds (`now`'s, by default) sorted after its own stored start,
        # so it was read as ending where it began, and not yet in force in that millisecond.
        return as_stored(start.astimezone(UTC))

    async def _driver(self, tenant: str, driver_ref: str) -> dict[str, str]:
        copy = await self._stored_driver(tenant, driver_ref)
        if copy is None:
            raise _no_driver(driver_ref)
        return copy

    async def _stored_driver(self, tenant: str, driver_ref: str) -> dict[str, str] | None:
        """The history's copy of the driver `driver_ref` (an id or a CPF), None if none."""
        try:
            doc = await self._entities.get(tenant, "driver", driver_ref)
        except NotFound:
            return None
        data = doc["data"]
        return {"id": str(doc["_id"]), "cpf": data["cpf"], "name": data["name"]}

    async def _assignment(self, doc: Doc) -> Assignment:
        following = await self._store.next_after(doc)
        return _to_assignment(doc, None if following is None else following["start"])

    async def _sync_current_driver(
        self, tenant: str, vehicle: Doc, origin: Origin, *, by_in_force: bool = False
    ) -> None:
        """The vehicle's `current_driver` follows the history (at the clock, or just after a
        change dated now on a clock that ran fast: `_after_changes_made_now`). Re-checked
        after writing: a concurrent assignment may have changed the history between our read
        and our write. The `entity.updated` names `origin`, or, `by_in_force`, the change in
        force (of several scheduled ones that came due together, the newest, whichever is
        followed first; `origin` if none is)."""
        vid = str(vehicle["_id"])
        for _ in range(_SYNC_ROUNDS):
            # After a step back of the gateway's time, a change dated now on the fast clock
            # (and a handover dated now moved after it) is in force, though ahead of it.
            now = await self._after_changes_made_now(vehicle, self._clock())
            in_force = await self._store.at(tenant, vid, now)
            latest = await self._entities.get(tenant, "vehicle", vid)
            held = latest["data"].get("current_driver")
            wanted = _current_field(None if in_force is None else in_force.get("driver"), held)
            if held == wanted:
                return
            by = _origin(in_force) if by_in_force and in_force is not None else origin
            # The driver's copy as the history holds it: a rename keeps the id and the CPF,
            # which would take it for the stored driver sent again (`known_whole`).
            await self._entities.patch(
                tenant, "vehicle", vid, {"current_driver": wanted}, by, as_sent=True
            )


def _no_driver(driver_ref: str) -> InvalidPayload:
    message = f"no driver {driver_ref!r} (an id or a CPF) in this tenant"
    return InvalidPayload(message, [FieldProblem("/driver", message, "reference")])


def _names(held: Mapping[str, Any] | None, value: Mapping[str, Any]) -> bool:
    """Whether a change's driver `held` is the one a `current_driver` value names: each of
    its `id` and `cpf` (any spelling) given, one at least, as `held` has it."""
    if held is None:
        return False
    named = [(name, value[name]) for name in ("id", "cpf") if isinstance(value.get(name), str)]
    return bool(named) and all(
        held.get(name) == (normalize_identifier(name, given) if name == "cpf" else given)
        for name, given in named
    )


def _origin(change: Mapping[str, Any]) -> Origin:
    """A change's origin on the `entity.updated` of `current_driver`: its source and ref, the
    chain of the flow run that reported it (`assign`'s `chain`), and the change's id
    (`assignment`): the history's own write, which `assignment_feed.py` never reads as a
    report of who drives."""
    by = change.get("ref") or change["author"]
    return Origin(
        change["source"], by, {**(change.get("chain") or {}), "assignment": change["_id"]}
    )


def _current_field(driver: dict[str, str] | None, held: Any) -> dict[str, str] | None:
    """The vehicle's `current_driver` for the change in force's `driver`: their `{id, cpf,
    name}`; for a pending one (a CPF the tenant has no driver of yet), the reporter's copy
    the vehicle holds when it names that CPF (its spelling of the name, a correction of it),
    else the CPF and name the report gave. Never a report's `since`."""
    if driver is None:
        return None
    if "id" in driver:
        return {k: driver[k] for k in ("id", "cpf", "name")}
    if isinstance(held, dict) and "id" not in held and held.get("cpf") == driver["cpf"]:
        return {k: v for k, v in held.items() if k != "since"}
    return {k: driver[k] for k in ("cpf", "name") if k in driver}


def _to_assignment(doc: Doc, end: datetime | None) -> Assignment:
    return Assignment(
        vehicle_id=doc["vehicle_id"],
        plate=doc["plate"],
        driver=doc.get("driver"),
        start=doc["start"],
        end=end,
        source=doc["source"],
        ref=doc.get("ref"),
        author=doc["author"],
        recorded_at=doc["recorded_at"],
        id=doc["_id"],
    )
