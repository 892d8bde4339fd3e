"""Maintenance plans, pure: when a vehicle's next service is due, and the announcements.

A plan counts services in cycles from a base: the last recorded service (its km and time),
or, before any, the plan's `start_km` and the moment the plan first saw the vehicle. Service
n is due at `base_km + n·every_km` or at `base_at + n·every_days`, whichever comes first (a
plan has either interval or both: an annual inspection is `every_days` alone, its `due_km`
None); `due_soon` is announced `due_soon_km` before the distance (or `due_soon_days` before
the time). Each cycle's `due` and `due_soon` are announced once: `PlanState.notified` keeps
the cycle last announced per kind (its `due_km`; a time-only plan's, its number n), so a
jump over several cycles announces the last one only, an odometer corrected downwards does
not announce again, and a plan whose interval is edited does not repeat what it already
said. An announcement more than a whole cycle past
the odometer (made at a device odometer's glitch up, since taken back) holds nothing back:
the plan is not silent until the bad value is reached again.

The first evaluation sets the state without announcing what is already behind the vehicle
(like a geofence's first fix): a plan added to a fleet does not page every vehicle at once.
A vehicle past its due point when the plan starts gets its next announcement at the next
cycle; record a service (or set `start_km`) to line the plan up with reality.

`record_service` resets the cycles: the service's km (or, unknown, the last odometer the plan
saw) and time become the base; nothing announced is kept. Recording the same service (km and
time) again changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from gateway.fleet.geofences import utc

DueKind = Literal["due_soon", "due"]
DueReason = Literal["distance", "time"]
# km compared with this slack: an odometer summed from floats lands on 9999.999999
_EPS_KM = 1e-6


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

    def applies_to(self, plate: str, groups: Collection[str]) -> bool:
        """No `vehicles` and no `group`: every vehicle; otherwise the named plates and the
        members of the group (either)."""
        if not self.vehicles and self.group is None:
            return True
        return plate in self.vehicles or (self.group is not None and self.group in groups)


@dataclass(frozen=True)
class PlanState:
    last_service_km: float | None = None
    last_service_at: datetime | None = None
    notified: Mapping[str, float] = field(default_factory=dict)
    started_at: datetime | None = None  # when the plan first saw the vehicle (time base)
    seen_km: float | None = None  # the last odometer the plan saw

    def to_doc(self) -> dict[str, Any]:
        return {
            "last_service_km": self.last_service_km,
            "last_service_at": self.last_service_at,
            "notified": dict(self.notified),
            "started_at": self.started_at,
            "seen_km": self.seen_km,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> PlanState:
        return cls(
            last_service_km=_float(doc.get("last_service_km")),
            last_service_at=utc(doc.get("last_service_at")),
            notified={str(k): float(v) for k, v in (doc.get("notified") or {}).items()},
            started_at=utc(doc.get("started_at")),
            seen_km=_float(doc.get("seen_km")),
        )


@dataclass(frozen=True)
class Due:
    kind: DueKind
    due_km: float | None  # None: a time-only plan
    due_at: datetime | None
    reason: DueReason


def step(
    plan: Plan, state: PlanState | None, odometer_km: float, now: datetime
) -> tuple[PlanState, list[Due]]:
    """The state after reading the odometer at `now`, and what to announce (at most one
    `due` and one `due_soon`, in that order)."""
    first = state is None
    if state is None:
        state = PlanState(started_at=now)
    elif state.started_at is None:
        state = replace(state, started_at=now)
    cycle = _Cycle(plan, state)
    n_km, n_time = cycle.reached(odometer_km, now)
    current = max(n_km, n_time)
    notified = dict(state.notified)
    # An announcement more than a whole cycle past where the vehicle is now (a device
    # odometer's glitch up, a tracker moved from another vehicle) does not hold back the
    # cycles the vehicle reaches from here, as if nothing had been announced until the
    # odometer reached the bad value; it is kept until one is, so that an odometer glitch
    # down for a moment (a device's 0) announces nothing again once it is back.
    said = {
        kind: mark for kind, mark in notified.items() if mark <= cycle.mark(current + 1) + _EPS_KM
    }
    found: list[Due] = []
    if current >= 1 and cycle.mark(current) > said.get("due", -math.inf) + _EPS_KM:
        notified["due"] = cycle.mark(current)
        found.append(
            Due(
                "due",
                cycle.km(current),
                cycle.at(current),
                "distance" if n_km >= n_time else "time",
            )
        )
    upcoming = current + 1
    soon = cycle.soon(upcoming, odometer_km, now)
    # A cycle already announced due is not announced soon afterwards (an odometer taken
    # back below it after a jump over its due_soon).
    told = max(said.get("due_soon", -math.inf), said.get("due", -math.inf))
    if soon is not None and cycle.mark(upcoming) > told + _EPS_KM:
        notified["due_soon"] = cycle.mark(upcoming)
        found.append(Due("due_soon", cycle.km(upcoming), cycle.at(upcoming), soon))
    return replace(state, notified=notified, seen_km=odometer_km), [] if first else found


def record_service(
    plan: Plan, state: PlanState | None, km: float | None, at: datetime
) -> PlanState:
    """A service done at `km` (None: the last odometer seen) and `at`: the new base. The same
    service recorded again (a report relayed twice) changes nothing."""
    previous = state or PlanState()
    base_km = km if km is not None else previous.seen_km
    if state is not None and (state.last_service_km, state.last_service_at) == (base_km, at):
        return state
    return PlanState(
        last_service_km=base_km,
        last_service_at=at,
        notified={},
        started_at=previous.started_at or at,
        seen_km=previous.seen_km,
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

    def mark(self, n: int) -> float:
        """What `PlanState.notified` keeps of cycle n: its due km, or (a time-only plan, whose
        cycles are the days since the base) its number."""
        km = self.km(n)
        return float(n) if km is None else km

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
        every_km, n_km, n_time = self.plan.every_km, 0, 0
        if every_km is not None:
            n_km = max(0, math.floor((odometer_km - self.base_km + _EPS_KM) / every_km))
        if self.every is not None and self.base_at is not None and now > self.base_at:
            n_time = max(0, math.floor((now - self.base_at) / self.every))
        return n_km, n_time

    def soon(self, n: int, odometer_km: float, now: datetime) -> DueReason | None:
        """Why cycle n is near (within due_soon_km, or due_soon_days), or None."""
        plan, due_km = self.plan, self.km(n)
        if (
            plan.due_soon_km
            and due_km is not None
            and odometer_km + _EPS_KM >= due_km - plan.due_soon_km
        ):
            return "distance"
        due_at = self.at(n)
        if plan.due_soon_days and due_at is not None:
            # (a difference of two times never leaves the calendar; due_at - days may)
            if due_at - now <= timedelta(days=plan.due_soon_days):
                return "time"
        return None


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
    cycle = _Cycle(plan, state or PlanState(started_at=now))
    current = max(cycle.reached(odometer_km, now))
    upcoming = current + 1
    if current >= 1:
        condition: Literal["ok", "due_soon", "due"] = "due"
    elif cycle.soon(upcoming, odometer_km, now) is not None:
        condition = "due_soon"
    else:
        condition = "ok"
    return Outlook(condition, cycle.km(upcoming), cycle.at(upcoming))
