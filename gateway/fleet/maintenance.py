"""Maintenance plans, pure: when a vehicle's next service is due, and the announcements.

A plan counts services from a base: the last recorded service (its km and time), or, before
any, the plan's `start_km` and the moment the plan first saw the vehicle (not before the fold
received what it saw it by: `step`). Distance and time
count their own cycles, each from its own base: by distance at `base_km + n·every_km`, by
time at `base_at + m·every_days`, whichever the vehicle reaches first (a plan has either
interval or both: an annual inspection is `every_days` alone, its `due_km` None); `due_soon`
is announced `due_soon_km` before the next distance (or `due_soon_days` before the next
time). A vehicle far past its first km cycle (152,340 km from `start_km` 0) still comes due
by time 180 days after the plan first saw it.

Each point is announced once: `PlanState.notified` keeps the last point announced per
measure and kind (km, or time), so a step over several km multiples announces each (the last
`MAX_CROSSED`, counting the ones before them: `_crossed`), an odometer corrected downwards
does not announce again, and a plan whose interval is edited
does not repeat what it already said. A due (or due_soon) on one measure counts for the
other measure's cycle it falls in, as the plan is now (one service is due, whichever came
first): the other announces at its next point after that. An announcement more than a
whole cycle past the odometer (made at a device odometer's glitch up, since taken back)
holds nothing back: the plan is not silent until the bad value is reached again.

The first evaluation sets the state without announcing what is already behind the vehicle
(like a geofence's first fix): a plan added to a fleet does not page every vehicle at once.
A vehicle past its due point when the plan starts gets its next announcement at the next
cycle; record a service (or set `start_km`) to line the plan up with reality.

An odometer of 0 is unknown (a vehicle registered without one, no fix counted yet): the plan
counts time but not distance until it knows one. A plan without a recorded service that
evaluated the vehicle only at an odometer given no value (unknown, or GPS distance counted
from it) takes the odometer then set (a reading, the device's) as its first check by
distance: it announces no `due` already behind it (152,340 km on a plan counting from 0), as
a plan's first evaluation does.

`record_service` resets the cycles: the service's km (or, unknown, the vehicle's odometer as
the fold has it) and time become the base of both; nothing announced is kept. Who may move
the base back depends on where the service comes from: an admin's (`authoritative`: the API,
the admin UI, an admin's `last_service`) is the base as given, an earlier `at` too (a
correction); a feed's (a checklist, an ERP) only when strictly newer than the plan's last
one. A report seen before (its event, `PlanState.reports`: a relayed batch replayed) changes
nothing, whichever came since.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from gateway.fleet.geofences import reaches, utc
from gateway.schemas.ids import plate_match_key

DueKind = Literal["due_soon", "due"]
DueReason = Literal["distance", "time"]
# km compared with this slack: an odometer summed from floats lands on 9999.999999
_EPS_KM = 1e-6
# marks (km, or epoch seconds) compared with this slack
_EPS = 1e-3
# The reports (events) a plan's state remembers having seen, the newest last: a relayed batch
# is replayed soon after, not after this many services.
_REPORTS_KEPT = 20


@dataclass(frozen=True)
class Plan:
    id: str
    name: str
    every_km: float | None
    due_soon_km: float | None = None
    every_days: float | None = None
    start_km: float = 0.0
    vehicles: frozenset[str] = field(default_factory=frozenset)
    group: str | None = None
    due_soon_days: float | None = None

    def __post_init__(self) -> None:
        # (the plates as they are compared: `applies_to`)
        object.__setattr__(self, "vehicles", frozenset(map(plate_match_key, self.vehicles)))

    def applies_to(self, plate: str, groups: Collection[str]) -> bool:
        return reaches(self.vehicles, self.group, plate, groups)


@dataclass(frozen=True)
class PlanState:
    last_service_km: float | None = None
    last_service_at: datetime | None = None
    notified: Mapping[str, float] = field(default_factory=dict)
    # When the plan first saw the vehicle (time base): not before the fold received it (`step`).
    started_at: datetime | None = None
    seen_km: float | None = None  # the last odometer the plan saw
    # Whether `notified` keeps distance and time apart (`step`): false in a state kept before.
    apart: bool = False
    # The last reports (event ids) of services seen, applied or not (`record_service`).
    reports: tuple[str, ...] = ()
    # The plan's clock: the latest time it evaluated the vehicle at, which time is measured
    # at from then on (`step`: it only moves forward).
    seen_at: datetime | None = None

    def to_doc(self) -> dict[str, Any]:
        return {
            "last_service_km": self.last_service_km,
            "last_service_at": self.last_service_at,
            "notified": dict(self.notified),
            "started_at": self.started_at,
            "seen_km": self.seen_km,
            "apart": self.apart,
            "reports": list(self.reports),
            "seen_at": self.seen_at,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> PlanState:
        return cls(
            last_service_km=_float(doc.get("last_service_km")),
            last_service_at=utc(doc.get("last_service_at")),
            notified={str(k): float(v) for k, v in (doc.get("notified") or {}).items()},
            started_at=utc(doc.get("started_at")),
            seen_km=_float(doc.get("seen_km")),
            apart=doc.get("apart") is True,
            reports=tuple(str(r) for r in doc.get("reports") or ()),
            seen_at=utc(doc.get("seen_at")),
        )


@dataclass(frozen=True)
class Due:
    kind: DueKind
    due_km: float | None  # None: a time-only plan
    due_at: datetime | None
    reason: DueReason
    # Multiples crossed in the same step before this one and not announced on their own
    # (more than `MAX_CROSSED` at once: a huge jump), announced with it.
    earlier: int = 0


# The km multiples one step (two fixes, a reading) may announce each, at most: the last ones
# crossed; the ones before them are counted in the first (`Due.earlier`). A tracker every 5
# minutes on a highway crosses two of a 5 km plan; a mistyped reading, thousands.
MAX_CROSSED = 3


def step(
    plan: Plan,
    state: PlanState | None,
    odometer_km: float,
    now: datetime,
    *,
    odometer_set: bool = False,
    received_at: datetime | None = None,
) -> tuple[PlanState, list[Due]]:
    """The state after reading the odometer at `now`, and what to announce (the `due`s of
    the km multiples the step crossed, or one by time; then at most one `due_soon`).

    Distance and time each count their own cycles from their own base (`_Cycle.reached`): a
    vehicle far past its first km cycle still comes due by time. `PlanState.notified` keeps
    the last point announced on each: `due`/`due_soon` the km (distance), `due_at`/
    `due_soon_at` the time (epoch seconds). One announced on one of them counts for the
    other's cycle it falls in: the service is due (or soon) once, whichever comes first, and
    the other announces again at its next point after that cycle.

    An unknown odometer (0) is not evaluated by distance (time goes on). `odometer_set`: the
    vehicle's odometer, given no value until now (unknown, or GPS distance counted from an
    unknown start), has just been given one (a reading, the device's own), not driven there:
    a plan without a recorded service takes it as its first check by distance (`_first_km`).
    One counted from 0 by GPS distance is driven until then: its cycles are announced as they
    are crossed.

    Time is measured on the plan's clock, which only moves forward (`PlanState.seen_at`):
    a step dated before a time the plan was evaluated at (fixes buffered for days, folded in
    device time after the hourly tick, a reading or a service evaluated it at the wall clock)
    measures time at that later one, and finds nothing new by time. Measured at its own
    date, it took the cycle announced then for a glitch a cycle ahead and announced it again,
    after the ones before it.

    The plan's time base, before any service, is when it first saw the vehicle: `now`, or
    `received_at` (when the fold received what it evaluates, a fix's receipt) when that is
    later. A first sighting through a fix days old (a tracker's buffered upload, kept fixes
    replayed once their vehicle exists) does not start the cycles days back, where the same
    upload's later fixes each crossed one: a daily plan announced a `due` for every day of it
    when the upload reached the fold before anything else (a reading, the hourly tick) had
    evaluated the plan, and none when something had."""
    first = state is None
    if state is not None and state.seen_at is not None and state.seen_at > now:
        now = state.seen_at
    first_seen = now if received_at is None or received_at < now else received_at
    if state is None:
        state = PlanState(started_at=first_seen)
    elif state.started_at is None:
        state = replace(state, started_at=first_seen)
    known = _known(odometer_km)
    # What is already behind the vehicle on a measure's first check: kept, not announced.
    quiet: dict[DueReason, bool] = {
        "distance": first or (odometer_set and _first_km(state, odometer_km)),
        "time": first,
    }
    state = _serviced_at(state, odometer_km)
    cycle = _Cycle(plan, state)
    n_km, n_time = cycle.reached(odometer_km, now)
    next_km, next_at = cycle.km(n_km + 1), cycle.at(n_time + 1)
    notified = dict(state.notified) if state.apart else _marks(plan, state.notified, cycle)
    marks = _Announced(notified, cycle, {"distance": next_km, "time": _epoch(next_at)})
    here: dict[DueReason, float | None] = {
        "distance": odometer_km if known else None,
        "time": now.timestamp(),
    }
    found: list[Due] = []
    # The point each measure reached (a due), and its next one (due_soon), not yet announced.
    reached = {
        "distance": cycle.km(n_km) if known and n_km >= 1 else None,
        "time": _epoch(cycle.at(n_time)) if n_time >= 1 else None,
    }
    due = [m for m in _MEASURES if marks.new(m, "due", reached[m])]
    for measure in due:
        if quiet[measure]:
            marks.take(measure, "due", reached[measure])
    due = [m for m in due if not quiet[m]]
    if due:
        measure = due[0]
        if measure == "distance":
            found += _crossed(cycle, state, n_km, marks.said("distance", "due"), next_at)
        else:
            found.append(Due("due", next_km, cycle.at(n_time), "time"))
        marks.take(measure, "due", reached[measure])
        marks.carry(_OTHER[measure], "due", here[_OTHER[measure]])
    # A point already announced due (on its own measure, or the other's) is not announced
    # soon afterwards (an odometer taken back below it after a jump over its due_soon).
    near = {
        "distance": known and cycle.soon_km(n_km + 1, odometer_km),
        "time": cycle.soon_at(n_time + 1, now),
    }
    soon = [m for m in _MEASURES if near[m] and marks.new(m, "due_soon", marks.ceiling[m])]
    if first:
        for measure in soon:
            marks.take(measure, "due_soon", marks.ceiling[measure])
    elif soon:
        measure = soon[0]
        found.append(Due("due_soon", next_km, next_at, measure))
        marks.take(measure, "due_soon", marks.ceiling[measure])
        marks.carry(_OTHER[measure], "due_soon", here[_OTHER[measure]])  # the same service
    # (an unknown odometer is kept as 0 until one is known: the plan has seen the vehicle)
    seen = odometer_km if known else state.seen_km if _known(state.seen_km) else 0.0
    moved = replace(state, notified=notified, seen_km=seen, apart=True, seen_at=now)
    return moved, found


def _crossed(
    cycle: _Cycle, state: PlanState, n_km: int, said: float, next_at: datetime | None
) -> list[Due]:
    """The `due`s of the km multiples this step crossed (SPEC §6: an event each time a
    multiple is crossed, once): those past the last odometer the plan saw (or its base, none
    known) and past what was announced (`said`), up to cycle `n_km`; the last `MAX_CROSSED`
    of them, the first one counting those before it (`Due.earlier`)."""
    since = state.seen_km if _known(state.seen_km) else cycle.base_km
    first = max(cycle.reached_km(since or 0.0) + 1, 1)
    if math.isfinite(said):
        first = max(first, cycle.reached_km(said) + 1)
    first = min(first, n_km)  # (at least the cycle reached, which is past `said`)
    listed = range(max(first, n_km - MAX_CROSSED + 1), n_km + 1)
    dues = [Due("due", cycle.km(n), next_at, "distance") for n in listed]
    dues[0] = replace(dues[0], earlier=listed.start - first)
    return dues


def _known(km: float | None) -> bool:
    """Whether an odometer is known: 0 (or none) is a vehicle registered without one, no fix
    counted yet."""
    return km is not None and km > 0


def _first_km(state: PlanState, odometer_km: float) -> bool:
    """Whether this odometer, just set (`step`), is the plan's first check by distance: the
    plan has seen the vehicle only at odometers given no value (unknown, or GPS distance from
    an unknown start: 4 km of it are not the 4 km before a dashboard's 152,340) and has no
    recorded service (one counts from the service, announcing what is due from it, as it
    does with no check before)."""
    return _known(odometer_km) and state.seen_km is not None and state.last_service_at is None


_MEASURES: tuple[DueReason, DueReason] = ("distance", "time")
_OTHER: dict[DueReason, DueReason] = {"distance": "time", "time": "distance"}


class _Announced:
    """`PlanState.notified` as `step` reads and writes it: per measure and kind, the last
    point announced (`due`, `due_soon`: km; `due_at`, `due_soon_at`: epoch seconds), and
    where the vehicle stood on that measure when the other one announced (`…_in`: km, epoch
    seconds), which counts for that measure's cycle it falls in, the cycle read with the
    plan as it is now: a plan edited to a shorter interval (10 days to 5) does not take the
    point next under the old one (day 20) for a glitch and announce again what it covers.

    A point more than a whole cycle past where the vehicle is now (`ceiling`, the measure's
    next point: a device odometer's glitch up, a tracker moved from another vehicle) does
    not hold back the cycles the vehicle reaches from here, as if nothing had been announced
    until the odometer reached the bad value; it is kept until one is, so that an odometer
    glitch down for a moment (a device's 0) announces nothing again once it is back."""

    def __init__(
        self, notified: dict[str, float], cycle: _Cycle, ceiling: dict[DueReason, float | None]
    ):
        self.notified, self.cycle, self.ceiling = notified, cycle, ceiling

    @staticmethod
    def key(measure: DueReason, kind: DueKind) -> str:
        return kind if measure == "distance" else f"{kind}_at"

    def said(self, measure: DueReason, kind: DueKind) -> float:
        return max(self._own(measure, kind), self._carried(measure, kind))

    def _own(self, measure: DueReason, kind: DueKind) -> float:
        return self._below_ceiling(measure, self.notified.get(self.key(measure, kind)))

    def _carried(self, measure: DueReason, kind: DueKind) -> float:
        """The end of the cycle (as the plan is now) where the vehicle stood on `measure`
        when the other measure announced `kind`."""
        stood = self.notified.get(self.key(measure, kind) + "_in")
        return self._below_ceiling(measure, None if stood is None else self.end(measure, stood))

    def _below_ceiling(self, measure: DueReason, mark: float | None) -> float:
        top = self.ceiling[measure]
        if mark is None or (top is not None and mark > top + _EPS):
            return -math.inf
        return mark

    def end(self, measure: DueReason, stood: float) -> float | None:
        """The due point ending the cycle `stood` (km, epoch seconds) falls in."""
        if measure == "distance":
            return self.cycle.km(self.cycle.reached_km(stood) + 1)
        when = datetime.fromtimestamp(stood, UTC)
        return _epoch(self.cycle.at(self.cycle.reached_at(when) + 1))

    def new(self, measure: DueReason, kind: DueKind, point: float | None) -> bool:
        """Whether `point` is past what was announced (a due_soon: or announced due)."""
        told = self.said(measure, kind)
        if kind == "due_soon":
            told = max(told, self.said(measure, "due"))
        return point is not None and point > told + _EPS

    def take(self, measure: DueReason, kind: DueKind, point: float | None) -> None:
        if point is not None:
            self.notified[self.key(measure, kind)] = max(point, self._own(measure, kind))

    def carry(self, measure: DueReason, kind: DueKind, stood: float | None) -> None:
        """The other measure announced `kind` with the vehicle at `stood` on this one: kept
        unless a later place is (an odometer corrected down after), one past the ceiling
        (a glitch up, since taken back) replaced."""
        if stood is None:  # (an unknown odometer: nothing to carry)
            return
        key = self.key(measure, kind) + "_in"
        if self._carried(measure, kind) == -math.inf or stood > self.notified[key]:
            self.notified[key] = stood


def _serviced_at(state: PlanState, odometer_km: float) -> PlanState:
    """A service recorded without km before the vehicle's odometer was known (a vehicle
    registered without one, no fix counted yet: `record_service`) was done at the first known
    odometer the plan sees, not at `start_km` (nor at the unknown 0 of a tick or a fix
    before)."""
    if state.last_service_at is None or state.last_service_km is not None:
        return state
    if not _known(odometer_km) or _known(state.seen_km):  # (the base it was evaluated from)
        return state
    return replace(state, last_service_km=round(odometer_km, 3))


def _marks(plan: Plan, notified: Mapping[str, float], cycle: _Cycle) -> dict[str, float]:
    """The points announced, on each measure, from a state kept before distance and time
    counted apart (`PlanState.apart` false): it holds one mark per kind, the due km of the
    cycle announced (a time-only plan's, its number), which also stood for that cycle's
    time: read as both."""
    marks = dict(notified)
    if plan.every_km is None:  # (a time-only plan keeps no km marks)
        marks.pop("due", None)
        marks.pop("due_soon", None)
    if plan.every_days is None:
        return marks
    for kind in ("due", "due_soon"):
        old = notified.get(kind)
        if old is None:
            continue
        n = old if plan.every_km is None else (old - cycle.base_km) / plan.every_km
        if math.isfinite(n) and 0 <= n < 1e7 and (at := _epoch(cycle.at(round(n)))) is not None:
            marks[f"{kind}_at"] = at
    return marks


def _epoch(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def record_service(
    plan: Plan,
    state: PlanState | None,
    km: float | None,
    at: datetime,
    odometer_km: float | None = None,
    *,
    authoritative: bool = False,
    report: str | None = None,
) -> PlanState:
    """A service done at `km` and `at`: the new base. Without `km`, the vehicle's odometer
    `odometer_km` as the fold has it when it applies the service (what the plan last saw
    when it has seen the vehicle; what the vehicle shows when the plan has not evaluated it
    yet, so that the next due counts from the service, not from `start_km`), else the last
    odometer the plan saw. With neither known (0: a vehicle registered without one), the
    service's km is the first known odometer the plan sees after it (`step`).

    Who may move the base back depends on where the service comes from. An admin's
    (`authoritative`) is the base as given, an earlier `at` too: a correction of a mistyped
    date or km (to the minute the admin UI has, not the report's millisecond). A feed's (a
    checklist, an ERP) changes the base only when strictly newer than the plan's last
    service: a late report, a report of a service corrected since, changes nothing.

    `report` names the report (its event) a feed's service came from: one seen before (a
    relayed batch replayed) changes nothing, whatever was recorded since. The same service
    again (same time, and same km or none given) changes nothing either."""
    previous = state or PlanState()
    if report is not None and report in previous.reports:
        return previous
    reports = previous.reports if report is None else (*previous.reports, report)[-_REPORTS_KEPT:]
    kept = replace(previous, reports=reports)
    last_at = previous.last_service_at
    if last_at is not None and not authoritative and at <= last_at:
        return kept  # a feed's service not newer than the plan's last one
    base_km = km
    if base_km is None:
        if _known(odometer_km):
            base_km = odometer_km
        elif _known(previous.seen_km):
            base_km = previous.seen_km
    if base_km is not None:
        base_km = round(base_km, 3)  # (the odometer as the vehicle shows it: no float noise)
    if last_at is not None and at == last_at and km is None:
        return kept  # the same service again: the base it set stands
    if state is not None and (state.last_service_km, last_at) == (base_km, at):
        return kept
    return PlanState(
        last_service_km=base_km,
        last_service_at=at,
        notified={},
        started_at=previous.started_at or at,
        seen_km=previous.seen_km,
        apart=True,
        reports=reports,
        seen_at=previous.seen_at,
    )


class _Cycle:
    """The due points of a plan from a state's base."""

    def __init__(self, plan: Plan, state: PlanState) -> None:
        self.plan = plan
        self.base_km = state.last_service_km if state.last_service_km is not None else plan.start_km
        self.base_at = state.last_service_at or state.started_at
        self.every = timedelta(days=plan.every_days) if plan.every_days else None

    def km(self, n: int) -> float | None:
        if self.plan.every_km is None:
            return None
        return self.base_km + n * self.plan.every_km

    def at(self, n: int) -> datetime | None:
        """Cycle n's due time; None without one, or past the calendar (year 9999): an
        odometer of millions of km, in cycles of a few km, is that many cycles of days."""
        if self.every is None or self.base_at is None:
            return None
        try:
            return self.base_at + n * self.every
        except OverflowError:
            return None

    def reached(self, odometer_km: float, now: datetime) -> tuple[int, int]:
        """The last cycle reached by distance, and by time (0: none)."""
        return self.reached_km(odometer_km), self.reached_at(now)

    def reached_km(self, odometer_km: float) -> int:
        every_km = self.plan.every_km
        if every_km is None:
            return 0
        return max(0, math.floor((odometer_km - self.base_km + _EPS_KM) / every_km))

    def reached_at(self, now: datetime) -> int:
        if self.every is None or self.base_at is None or now <= self.base_at:
            return 0
        return max(0, math.floor((now - self.base_at) / self.every))

    def soon_km(self, n: int, odometer_km: float) -> bool:
        """Whether km cycle n is within due_soon_km."""
        plan, due_km = self.plan, self.km(n)
        if not plan.due_soon_km or due_km is None:
            return False
        return odometer_km + _EPS_KM >= due_km - plan.due_soon_km

    def soon_at(self, n: int, now: datetime) -> bool:
        """Whether time cycle n is within due_soon_days."""
        plan, due_at = self.plan, self.at(n)
        if not plan.due_soon_days or due_at is None:
            return False
        # (a difference of two times never leaves the calendar; due_at - days may)
        return due_at - now <= timedelta(days=plan.due_soon_days)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Outlook:
    """Where a vehicle stands on a plan: the next due point and whether it is due now
    (a cycle reached since the last service), soon, or not yet."""

    condition: Literal["ok", "due_soon", "due"]
    next_km: float | None  # None: a time-only plan
    next_at: datetime | None


def outlook(plan: Plan, state: PlanState | None, odometer_km: float, now: datetime) -> Outlook:
    """Due: a cycle reached since the base, on either measure; the next point of each."""
    cycle = _Cycle(plan, _serviced_at(state or PlanState(started_at=now), odometer_km))
    n_km, n_time = cycle.reached(odometer_km, now)
    if n_km >= 1 or n_time >= 1:
        condition: Literal["ok", "due_soon", "due"] = "due"
    elif cycle.soon_km(n_km + 1, odometer_km) or cycle.soon_at(n_time + 1, now):
        condition = "due_soon"
    else:
        condition = "ok"
    return Outlook(condition, cycle.km(n_km + 1), cycle.at(n_time + 1))
