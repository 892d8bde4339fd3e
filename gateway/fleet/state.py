"""The fold state of one vehicle, and what one fix does to it (pure, serialisable).

The state is what the fold keeps between passes in the vehicle's `fleet` document: the last
accepted fix (the last position, only ever moved forward in device time), the odometer and
its anchor and baseline (`odometer.py`), the fixes suspected of a relocation (`quality.py`),
and the per-geofence and per-plan states the `geo` evaluators own (kept as their documents).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from gateway.fleet.odometer import (
    NOISE_KEPT,
    Baseline,
    OdometerSettings,
    TrackPoint,
    detour_m,
    jitter_m,
    may_rebaseline,
    motion,
    noise_sample,
    step_m,
)
from gateway.fleet.quality import QualitySettings, Reason, neighbour_reason, static_reason

# What a fix may carry besides its place, kept with the last position.
DETAIL_FIELDS = ("speed_kmh", "heading", "ignition")
# The newest accepted fixes kept in the state: a late fix newer than the oldest of them finds
# its neighbours there, without a query (fixes arrive out of order by seconds, not hours).
RECENT = 32
# Where the vehicle was over the last `still_window_s` (`VehicleState.trail`): a fix kept
# every `still_window_s / TRAIL_STEPS` at most, so a dozen points span the window however
# often the fixes come (the 32 newest fixes spanned 16 s at 2 Hz, 6 s at 5 Hz: no fix was
# that old, and every fix without a speed was judged moving).
TRAIL_STEPS = 10
# How far a device odometer may stray from the count beyond what the GPS count explains (the
# GPS count between two device values is a little off), and two device values from each other
# beyond what the vehicle could drive between them.
DEVICE_SLACK_KM = 1.0
# How far ahead of the count a device odometer may be, as a share of the GPS distance the count
# has grown since the last device value (beyond `DEVICE_SLACK_KM`): the GPS count is short of
# the road by its chords (4-17% on winding roads sampled every 60-120 s, docs/fleet.md) and
# across a gap. Farther ahead, the value is a suspect until the next one agrees with it
# (`rebaseline`): a register misread once (a CAN frame at ignition-on, a bit flip) after a
# long stop is not taken at once as "drivable in the hours parked".
DEVICE_AHEAD_SHARE = 0.25
# How far below the count a device odometer may re-baseline it (held: `rebaseline`), as a share
# of the distance the count has grown since its last re-baseline (beyond `DEVICE_SLACK_KM`):
# the GPS count's error over that distance (at most +3.1% on the tracks measured,
# docs/fleet.md). Farther below, the device counts from another value (a replaced tracker, a
# reset): `is_behind`.
DEVICE_BEHIND_SHARE = 0.05
# A register's all-ones: 2**32 - 1 metres, 4,294,967.295 km (what a tracker sends for an
# odometer it cannot read). Never a count, however often it comes (`is_glitch`).
ALL_ONES_KM = 4_294_967.295
# A signed register's largest value, 2**31 - 1 metres (2,147,483.647 km): the same sentinel
# from a tracker that keeps its odometer in a signed 32-bit count.
SIGNED_MAX_KM = 2_147_483.647
GLITCH_KM = (ALL_ONES_KM, SIGNED_MAX_KM)
# How much further ahead of its arrival a fix may be dated than the vehicle's fix before it was
# credited with (s) and still be the present of the late-fix rule at its own time
# (`VehicleState.present`): a device clock running ahead is credited step by step, a single
# fix dated ahead (GPS time before its leap seconds, a record stamped by a drifting RTC) is
# not.
AHEAD_STEP_S = 1.0
# The count at the vehicle's fixes in order (`VehicleState.marks`), kept for a reading that
# arrives late, dated before fixes already folded (`distance_after`): one mark a fix while it
# moves at most every `MARK_STEP_S`, the first and the last fix of a stop, the newest fix
# always; the newest `MARKS` of them (4-5 hours of driving, more with stops).
MARK_STEP_S = 240.0
MARKS = 64
# A reading without a time of its own (an admin's, an ERP's that says only the value) is
# placed just after the last position (`at_reading`): the next fix counts from there when it
# follows within this (s; a tracker reports every 1-120 s on the move), not across a longer
# silence, in which the reading was taken (a dead zone, a garage): the reading has it in it.
READING_SILENCE_S = 300.0


@dataclass(frozen=True, slots=True)
class VehicleState:
    last: TrackPoint | None = None
    last_detail: dict[str, Any] = field(default_factory=dict)
    anchor: TrackPoint | None = None
    odometer_km: float = 0.0
    baseline: Baseline | None = None
    suspects: tuple[TrackPoint, ...] = ()
    fences: dict[str, Any] = field(default_factory=dict)
    plans: dict[str, Any] = field(default_factory=dict)
    recent: tuple[TrackPoint, ...] = ()  # the newest accepted fixes, oldest first
    # Where the vehicle was over the last `still_window_s`, oldest first: accepted fixes in
    # order, one every `still_window_s / TRAIL_STEPS` at most, from the newest one at least
    # `still_window_s` before the last position (`odometer.motion`'s look-back: `_trail_with`).
    trail: tuple[TrackPoint, ...] = ()
    # Device time of the last `vehicle.position` event, per subscription that asked for
    # them (each one's sampling).
    position_sent: dict[str, datetime] = field(default_factory=dict)
    # The last position's own step: the anchor and the odometer before it, and the odometer
    # it left, so that its distance is taken back should it turn out to be a lone outlier
    # (`_suspect`).
    step_from: TrackPoint | None = None
    step_km: tuple[float, float] | None = None
    # The step before it, likewise (two reflections in a row: `_double_spike`).
    prior_from: TrackPoint | None = None
    prior_km: tuple[float, float] | None = None
    # A device odometer farther ahead of the count than the GPS distance since the last one
    # explains (a glitch, or a change the next value confirms): `rebaseline`.
    device_suspect: Baseline | None = None
    # The vehicle's odometer when the count went back below it: a device odometer a little
    # behind the count re-baselined it (`rebaseline`), or an outlier's distance was taken back
    # (`_take_back`, `_suspect`). The vehicle's odometer does not go below it (`shown_km`)
    # while GPS distance catches up: it only moves forward.
    held_km: float = 0.0
    # Per reason the quality gates refused a fix for: when the last such fix was received
    # (the fold's `vehicle.position.rejected`, once per run of them).
    rejecting: dict[str, datetime] = field(default_factory=dict)
    # The newest reading folded (its write's revision of the vehicle, `readings.py`): the
    # vehicle's odometer gets the count only once the count has the last reading written to
    # it (`store/entities.py` `set_folded`).
    reading_rev: int = 0
    # The count is GPS distance from an unknown start: a vehicle registered without an
    # odometer, given none since (no reading, no device value). The first value given it sets
    # the odometer; it was not driven there (the fold's plans: `maintenance.step`).
    gps_count: bool = False
    # The late-fix rule's present: a fix dated at or before it is late. The last position's
    # time, but for a last position dated further ahead of its arrival than the vehicle's
    # clock is credited with: then its arrival plus that credit (`_clock`), so that the fixes
    # recorded after it arrived are in order, not late fixes to measure as detours. None:
    # the last position's time (a state kept before).
    present: datetime | None = None
    # The lead over its arrival (s) the last position was credited with: its own, but at most
    # `AHEAD_STEP_S` more than the one before it was, and never below 0.
    lead_s: float = 0.0
    # What the last fixes in order said of how much the receiver's error changes from one
    # fix to the next (`odometer.noise_sample`: the newest `NOISE_KEPT`, oldest first; kept
    # through a stop, where fixes say nothing of it): `odometer.noise_m2`.
    noise: tuple[float, ...] = ()
    # The device time of the last reading the count was re-baselined from (a checklist's
    # `completed_at`; a reading without a time of its own: a millisecond after the last
    # position when the fold took it): the reading has the distance driven up to then in it,
    # so a fix dated before it adds nothing (`counts`), and the first step after it starts
    # at the first fix at or after it (`at_reading`). None: no reading since this rule.
    reading_at: datetime | None = None
    # (device time, count) at fixes in order, oldest first (`_marks_with`): what the count
    # was at a reading's time, when the reading comes after fixes dated after it
    # (`distance_after`).
    marks: tuple[tuple[datetime, float], ...] = ()
    # Fixes refused `future` that may only have looked ahead because the gateway's clock was
    # behind (their inbox items, with the receipt they were judged by), oldest receipt
    # first: judged again once a later fix of their device agrees with the gateway's time
    # (the fold's `_VehicleRun.release`).
    held: tuple[dict[str, Any], ...] = ()

    @property
    def shown_km(self) -> float:
        """The vehicle's odometer: the count, never below what a device value a little
        behind it, or an outlier taken back, took it down from (SPEC §6: a partner's odometer
        only increases; what an ERP has read of it never goes back)."""
        return self.odometer_km if self.odometer_km >= self.held_km else self.held_km

    def to_doc(self) -> dict[str, Any]:
        return {
            "last": None if self.last is None else self.last.to_doc(),
            "last_detail": self.last_detail,
            "anchor": None if self.anchor is None else self.anchor.to_doc(),
            "odometer_km": self.odometer_km,
            "baseline": None if self.baseline is None else self.baseline.to_doc(),
            "suspects": [p.to_doc() for p in self.suspects],
            "recent": [p.to_doc() for p in self.recent],
            "trail": [p.to_doc() for p in self.trail],
            "fences": self.fences,
            "plans": self.plans,
            "position_sent": self.position_sent,
            "step_from": None if self.step_from is None else self.step_from.to_doc(),
            "step_km": None if self.step_km is None else list(self.step_km),
            "prior_from": None if self.prior_from is None else self.prior_from.to_doc(),
            "prior_km": None if self.prior_km is None else list(self.prior_km),
            "device_suspect": None if self.device_suspect is None else self.device_suspect.to_doc(),
            "held_km": self.held_km,
            "rejecting": self.rejecting,
            "reading_rev": self.reading_rev,
            "gps_count": self.gps_count,
            "present": self.present,
            "lead_s": self.lead_s,
            "noise": list(self.noise),
            "reading_at": self.reading_at,
            "marks": [list(m) for m in self.marks],
            "held": [dict(h) for h in self.held],
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> VehicleState:
        if not doc:
            return cls()
        point = TrackPoint.from_doc
        return cls(
            last=point(doc["last"]) if doc.get("last") else None,
            last_detail=dict(doc.get("last_detail") or {}),
            anchor=point(doc["anchor"]) if doc.get("anchor") else None,
            odometer_km=float(doc.get("odometer_km") or 0.0),
            baseline=Baseline.from_doc(doc["baseline"]) if doc.get("baseline") else None,
            suspects=tuple(point(p) for p in doc.get("suspects") or ()),
            recent=tuple(point(p) for p in doc.get("recent") or ()),
            # (a state kept before: the recent fixes, thinned by the next fixes)
            trail=tuple(point(p) for p in doc.get("trail", doc.get("recent")) or ()),
            fences=dict(doc.get("fences") or {}),
            plans=dict(doc.get("plans") or {}),
            position_sent=dict(doc.get("position_sent") or {}),
            step_from=point(doc["step_from"]) if doc.get("step_from") else None,
            step_km=_pair(doc.get("step_km")),
            prior_from=point(doc["prior_from"]) if doc.get("prior_from") else None,
            prior_km=_pair(doc.get("prior_km")),
            device_suspect=(
                Baseline.from_doc(doc["device_suspect"]) if doc.get("device_suspect") else None
            ),
            held_km=float(doc.get("held_km") or 0.0),  # (none in a state kept before)
            rejecting=dict(doc.get("rejecting") or {}),
            reading_rev=int(doc.get("reading_rev") or 0),  # (none in a state kept before)
            gps_count=doc.get("gps_count") is True,
            present=doc.get("present"),
            lead_s=float(doc.get("lead_s") or 0.0),
            noise=tuple(float(x) for x in doc.get("noise") or ()),
            reading_at=doc.get("reading_at"),  # (none in a state kept before)
            marks=tuple((m[0], float(m[1])) for m in doc.get("marks") or ()),
            held=tuple(dict(h) for h in doc.get("held") or ()),  # (none in a state kept before)
        )

    def is_late(self, fix: TrackPoint) -> bool:
        """Whether `fix` is older than the present (`present`: the last position's time, or
        its arrival and credit when it was dated further ahead): it then never replaces the
        last position."""
        if self.last is None:
            return False
        return fix.t <= (self.last.t if self.present is None else self.present)

    def counts(self, fix: TrackPoint) -> bool:
        """Whether `fix` may add distance: it is not dated before the last reading, which has
        the distance driven up to its time in it (`reading_at`)."""
        return self.reading_at is None or fix.t >= self.reading_at

    def remember(self, fix: TrackPoint) -> VehicleState:
        """`fix` accepted: kept among the newest ones (in device-time order)."""
        return replace(self, recent=_recent_with(self.recent, fix))


def _recent_with(recent: tuple[TrackPoint, ...], fix: TrackPoint) -> tuple[TrackPoint, ...]:
    """The newest accepted fixes with `fix` among them, in device-time order (a fix of the
    same time after the ones before it). Most fixes are the newest: appended, not sorted."""
    if not recent or recent[-1].t <= fix.t:
        return (*recent[1 - RECENT :], fix) if len(recent) >= RECENT else (*recent, fix)
    return tuple(sorted((*recent, fix), key=lambda p: p.t)[-RECENT:])


def _noise_with(
    noise: tuple[float, ...],
    recent: tuple[TrackPoint, ...],
    fix: TrackPoint,
    odometer: OdometerSettings,
) -> tuple[float, ...]:
    """The noise samples once `fix` (in order) follows the recent fixes: with what it and
    the two newest of them say, when they say something (`odometer.noise_sample`)."""
    if len(recent) < 2 or (sample := noise_sample(recent[-2], recent[-1], fix, odometer)) is None:
        return noise
    return (*noise[1 - NOISE_KEPT :], sample) if len(noise) >= NOISE_KEPT else (*noise, sample)


def _marks_with(
    marks: tuple[tuple[datetime, float], ...],
    t: datetime,
    km: float,
    since: datetime | None = None,
) -> tuple[tuple[datetime, float], ...]:
    """The marks once a fix in order at `t` left the count at `km` (`VehicleState.marks`):
    the newest mark is always the last fix; it replaces the one before it within a stop
    (the stop's first fix stays) and while the vehicle moves, until that one is
    `MARK_STEP_S` old. So the count is known at a stop's both ends, and between two marks
    it grew evenly (moving) or not at all (stopped). A step across a gap of `MARK_STEP_S`
    or more from the fix before it (`since`, the newest mark: a dead zone) is dated at its
    start, a millisecond after that fix: a reading taken in the gap has the straight line
    in it (the first step after a reading starts at the first fix after it)."""
    if since is not None and marks and marks[-1][0] == since and marks[-1][1] != km:
        if (t - since).total_seconds() >= MARK_STEP_S:
            marks = _marks_with(marks, since + timedelta(milliseconds=1), km)
    if len(marks) >= 2:
        (t0, k0), (t1, k1) = marks[-2], marks[-1]
        stopped = k0 == k1 == km
        moving = k0 != k1 and k1 != km and (t1 - t0).total_seconds() < MARK_STEP_S
        if stopped or moving:
            return (*marks[:-1], (t, km))
    return (*marks[1 - MARKS :], (t, km)) if len(marks) >= MARKS else (*marks, (t, km))


def distance_after(state: VehicleState, at: datetime) -> float:
    """The distance the count has grown by since device time `at` (km): 0 for a time at or
    after the last position; else the count now less the count at `at`, interpolated by
    time between the marks around it (a step across a gap counted at the gap's start,
    `_marks_with`; the oldest mark's when `at` is older than all of them: the count is not
    known further back)."""
    last = state.last
    if last is None or at >= last.t or not state.marks:
        return 0.0
    marks = state.marks
    if marks[-1][0] < last.t:
        marks = (*marks, (last.t, state.odometer_km))
    at_km = marks[0][1]
    for (t0, k0), (t1, k1) in itertools.pairwise(marks):
        if t0 <= at < t1:
            at_km = k0 + (k1 - k0) * (at - t0).total_seconds() / (t1 - t0).total_seconds()
            break
    return max(0.0, state.odometer_km - at_km)


def at_reading(
    state: VehicleState, at: datetime | None, odometer: OdometerSettings | None = None
) -> VehicleState:
    """The state once a reading at device time `at` re-baselined the count: fixes dated
    before `at` add nothing from now on, and a reading dated at or after the last position
    restarts the count's anchor when the vehicle was moving at that position (it drove on
    into a dead zone, a garage: the reading has the straight line across it in it), so that
    the first step after it starts at the first fix at or after it; when it stood there
    (`_stood`: a pre-trip checklist where it is parked) it was still there at `at`, and the
    anchor stays: the way from there to the first fix after it was driven after `at`. A
    reading without a time of its own (`at` None) is placed a millisecond after the last
    position: the count goes on from there, but not across a silence of
    `READING_SILENCE_S` (`_across_reading`) unless the vehicle stood at that position; never
    before a reading the state already has (`reading_at` after the last position: it
    changes nothing but the count)."""
    last = state.last
    stood = _stood(state, odometer or OdometerSettings())
    if at is None:  # no time of its own: just after the last position (if any)
        if last is None:
            return state
        # (the fold's present, not the last fix's own time when it is dated ahead of its
        # arrival: the fixes after it, dated before that wrong time, would add nothing)
        present = last.t if state.present is None else min(last.t, state.present)
        at, anchor = present + timedelta(milliseconds=1), last
        if state.reading_at is not None and state.reading_at >= at:
            # (a reading dated after the last position came before it, a checklist: this
            # one is placed there too, its anchor kept; moved back, the fixes dated
            # between would count again)
            return state
        if stood:
            anchor = state.anchor if state.anchor is not None else last
    elif last is not None and at < last.t:
        return replace(state, reading_at=at)  # a late reading: the anchor is after it
    elif stood:
        return replace(state, reading_at=at)  # it stood at `at` where the anchor is
    else:
        anchor = None
    return replace(
        state,
        reading_at=at,
        anchor=anchor,
        step_from=None,
        step_km=None,
        prior_from=None,
        prior_km=None,
    )


def _stood(state: VehicleState, odometer: OdometerSettings) -> bool:
    """Whether the vehicle stood at its last position: that fix may be standing still
    (`motion`: a reported speed under `still_kmh`, or no way made) or, not known from it, the
    count did not grow from the mark before it (a stop's both ends, `_marks_with`)."""
    last = state.last
    if last is None:
        return False
    moving = motion(last, state.trail, odometer, state.anchor)
    if moving is not None:
        return not moving
    marks = state.marks
    return len(marks) >= 2 and marks[-1][0] == last.t and marks[-2][1] == marks[-1][1]


def _trail_with(
    trail: tuple[TrackPoint, ...], fix: TrackPoint, odometer: OdometerSettings
) -> tuple[TrackPoint, ...]:
    """The trail once `fix` (accepted, in order) is the last position: `fix` joins it unless
    it comes within `still_window_s / TRAIL_STEPS` of the trail's newest point, and the points
    before the newest one at least `still_window_s` older than `fix` leave it."""
    window = odometer.still_window_s
    trail = _not_after(trail, fix)
    if trail and (fix.t - trail[-1].t).total_seconds() < window / TRAIL_STEPS:
        return trail
    start = 0
    while start + 1 < len(trail) and (fix.t - trail[start + 1].t).total_seconds() >= window:
        start += 1
    return (*trail[start:], fix)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the fold made of one fix."""

    reason: Reason | None = None  # None: accepted
    added_km: float = 0.0
    late: bool = False
    relocated: bool = False
    # Whether the fix is a neighbour for the late fixes after it: False for a late fix
    # within the jitter of its neighbours (it counts nothing, as the anchor would not move).
    counted: bool = True
    # The last position found to be a lone outlier (by a relocation, or as a spike): that
    # fix, refused after all with `outlier_reason`.
    outlier: TrackPoint | None = None
    outlier_reason: Reason = Reason.IMPOSSIBLE_SPEED
    # Two reflections in a row: the one before `outlier`, refused with it as a `spike`.
    earlier_outlier: TrackPoint | None = None

    @property
    def accepted(self) -> bool:
        return self.reason is None


@dataclass(frozen=True, slots=True)
class Rebaselined:
    from_km: float
    to_km: float
    source: str
    at: datetime
    # A device value a little behind the count: the count re-baselined from it, the
    # vehicle's odometer held where it was (`VehicleState.shown_km`); no event.
    held: bool = False


def fold_fix(
    state: VehicleState,
    fix: TrackPoint,
    received_at: datetime,
    quality: QualitySettings,
    odometer: OdometerSettings,
    *,
    detail: dict[str, Any] | None = None,
    before: TrackPoint | None = None,
    after: TrackPoint | None = None,
) -> tuple[VehicleState, Verdict]:
    """Apply one fix. A late fix (`state.is_late`) is judged between its accepted neighbours
    `before` and `after` (the caller looks them up) and only adds its detour to the odometer;
    any other fix is judged against the last position and moves it."""
    if (reason := static_reason(fix, received_at, quality)) is not None:
        return state, Verdict(reason)
    if (reason := device_reason(state, fix, before, after, odometer)) is not None:
        return state, Verdict(reason, late=state.is_late(fix))
    if state.is_late(fix):
        return _late(state, fix, quality, odometer, before, after)
    reason = neighbour_reason(fix, state.last, quality)
    if reason is Reason.IMPOSSIBLE_SPEED:
        return _moved_on(state, _suspect(state, fix, quality, odometer, detail), received_at)
    if reason is not None:
        return state, Verdict(reason)
    if _spike(state, fix, odometer):
        taken = _take_back(state, fix, odometer, detail, reflections=1)
        return _moved_on(state, taken, received_at)
    if _double_spike(state, fix, odometer):
        taken = _take_back(state, fix, odometer, detail, reflections=2)
        return _moved_on(state, taken, received_at)
    before_fix = _not_after(state.recent, fix)
    noise = _noise_with(state.noise, before_fix, fix, odometer)
    if not state.counts(fix):  # before the last reading: the first fix after it anchors
        added_m, anchor = None, None
    elif _across_reading(state, fix, odometer):
        added_m, anchor = None, fix
    else:
        added_m = (
            None
            if state.anchor is None
            else step_m(state.anchor, fix, odometer, state.trail, noise)
        )
        anchor = state.anchor if state.anchor is not None and added_m is None else fix
    added = (added_m or 0.0) / 1000
    present, lead_s = _clock(state, fix, received_at)
    # Every field named (what `replace` would carry, carried by hand: `replace` walks the
    # fields on each call, a third of this step's time once a fix).
    moved = VehicleState(
        last=fix,
        last_detail=_detail(detail),
        anchor=anchor,
        odometer_km=state.odometer_km + added,
        baseline=state.baseline,
        suspects=(),
        fences=state.fences,
        plans=state.plans,
        recent=_recent_with(before_fix, fix),
        noise=noise,
        trail=_trail_with(state.trail, fix, odometer),
        position_sent=state.position_sent,
        step_from=state.anchor,
        step_km=(state.odometer_km, state.odometer_km + added),
        prior_from=state.step_from,
        prior_km=state.step_km,
        device_suspect=state.device_suspect,
        held_km=state.held_km,
        rejecting=state.rejecting,
        reading_rev=state.reading_rev,
        gps_count=state.gps_count,
        present=present,
        lead_s=lead_s,
        reading_at=state.reading_at,
        marks=_marks_with(state.marks, fix.t, state.odometer_km + added, _time_of(state.last)),
        held=state.held,
    )
    return moved, Verdict(added_km=added)


def _across_reading(state: VehicleState, fix: TrackPoint, odometer: OdometerSettings) -> bool:
    """Whether `fix` comes after a silence of `READING_SILENCE_S` or more from an anchor
    from before the last reading (a reading without a time of its own, placed just after
    the last position, `at_reading`) at which the vehicle was moving: the reading, taken in
    that silence, has the straight line across it in it. One that stood there (parked
    overnight, `_stood`) was still there when the reading was taken: the line counts."""
    anchor, read_at = state.anchor, state.reading_at
    if anchor is None or read_at is None or anchor.t >= read_at:
        return False
    if (fix.t - anchor.t).total_seconds() < READING_SILENCE_S:
        return False
    return not _stood(state, odometer)


def _late(
    state: VehicleState,
    fix: TrackPoint,
    quality: QualitySettings,
    odometer: OdometerSettings,
    before: TrackPoint | None,
    after: TrackPoint | None,
) -> tuple[VehicleState, Verdict]:
    """A late fix between its accepted neighbours: its detour on the odometer, or nothing
    when it is dated before the last reading (which has that distance in it); one after the
    reading whose neighbour before is from before it counts from itself on (the count
    restarted at the first fix after the reading, `at_reading`)."""
    for neighbour in (before, after):
        if (reason := neighbour_reason(fix, neighbour, quality)) is not None:
            return state, Verdict(reason, late=True)
    if not state.counts(fix):
        return state.remember(fix), Verdict(late=True)
    if before is not None and not state.counts(before):
        before = None
    detour = detour_m(before, fix, after, odometer)
    if detour is None:  # within the jitter of a neighbour: nothing, and no neighbour
        return state, Verdict(late=True, counted=False)
    added = detour / 1000
    moved = replace(
        state,
        odometer_km=state.odometer_km + added,
        # (the marks after it counted on from a count without it)
        marks=tuple((t, km + added if t > fix.t else km) for t, km in state.marks),
    )
    return moved.remember(fix), Verdict(added_km=added, late=True)


def _clock(state: VehicleState, fix: TrackPoint, received_at: datetime) -> tuple[datetime, float]:
    """The present and the credited lead (`VehicleState.present`, `lead_s`) once `fix` is the
    last position: its own time, unless it is dated further ahead of its arrival than the
    fix before it was credited with plus `AHEAD_STEP_S`; then its arrival plus that much. A
    vehicle's fixes cannot be recorded after they arrive, so the fixes recorded after that
    one arrived (by their own times) are newer than it really is, whatever its time says:
    they are in order (and it leaves the recent fixes at the first of them, `_not_after`),
    not late fixes each measured as a detour back to it (one fix dated 242 s ahead made the
    next 48 live fixes late: +19% on the odometer, 13 refused as too fast, a geofence exit
    3 minutes late). A device whose clock runs ahead of the gateway's is credited its lead
    step by step, and one whose clock is right (a lead of 0 or less: the fix's delay) never
    reaches the limit."""
    lead = (fix.t - received_at).total_seconds()
    credit = max(0.0, state.lead_s) + AHEAD_STEP_S
    if lead <= credit:
        return fix.t, max(0.0, lead)
    return received_at + timedelta(seconds=credit), credit


def _not_after(recent: tuple[TrackPoint, ...], fix: TrackPoint) -> tuple[TrackPoint, ...]:
    """The recent fixes (or the trail) without those dated after `fix`, a fix in order: a last
    position dated ahead of its arrival that `fix` shows up (`_clock`) is no neighbour of a
    late fix at its wrong time, nor where the vehicle was then."""
    if not recent or recent[-1].t <= fix.t:
        return recent
    return tuple(p for p in recent if p.t <= fix.t)


def _without(
    trail: tuple[TrackPoint, ...], outliers: tuple[TrackPoint, ...]
) -> tuple[TrackPoint, ...]:
    """The trail without fixes refused after all (a spike, a lone outlier): not where the
    vehicle was."""
    return tuple(p for p in trail if p not in outliers)


def _moved_on(
    state: VehicleState, outcome: tuple[VehicleState, Verdict], received_at: datetime
) -> tuple[VehicleState, Verdict]:
    """`outcome` of a fix that, accepted, becomes the last position (a relocation, a spike
    taken back), with the present it sets (`_clock`)."""
    moved, verdict = outcome
    fix = moved.last
    if not verdict.accepted or fix is None:
        return outcome
    present, lead_s = _clock(state, fix, received_at)
    outliers = [p.t for p in (verdict.earlier_outlier, verdict.outlier) if p is not None]
    marks = tuple(m for m in moved.marks if not outliers or m[0] < min(outliers))
    return replace(
        moved,
        present=present,
        lead_s=lead_s,
        recent=_not_after(moved.recent, fix),
        marks=_marks_with(marks, fix.t, moved.odometer_km),
    ), verdict


def device_reason(
    state: VehicleState,
    fix: TrackPoint,
    before: TrackPoint | None,
    after: TrackPoint | None,
    odometer: OdometerSettings,
) -> Reason | None:
    """`other_device` when `fix` comes from another device than the one the vehicle follows.

    Two devices on one vehicle (a tracker and the driver's phone app, an old tracker and its
    replacement) each see the road through their own receiver and clock: their fixes
    interleaved zigzag between two errors, and a clock seconds (or hours) off makes each
    one's fixes late among the other's, each adding a detour. So the fold follows one device
    at a time: the last position's. A fix from another device moves nothing until the
    followed one has been silent for `device_handover_s` of device time (a tracker unplugged,
    replaced, out of coverage); then it takes over, measured from the last position like any
    fix. A late fix belongs to the device its accepted neighbours came from: refused when
    neither of them is its own. A fix (or a last position) without a device, stored before
    fixes named theirs, is any device's; one device alone is never refused here."""
    if fix.device is None or not odometer.device_handover_s:
        return None
    if state.is_late(fix):
        near = [p for p in (before, after) if p is not None]
        if not near or any(p.device in (None, fix.device) for p in near):
            return None
        return Reason.OTHER_DEVICE
    last = state.last
    if last is None or last.device in (None, fix.device):
        return None
    silent = (fix.t - last.t).total_seconds()
    return Reason.OTHER_DEVICE if silent < odometer.device_handover_s else None


def _spike(state: VehicleState, fix: TrackPoint, odometer: OdometerSettings) -> bool:
    """Whether the last position is a spike that `fix` shows up: it counted a jump away from
    where the vehicle stood (its anchor before it), and `fix` is back there, within what a
    standing vehicle's drift covers, while none of the three reported a speed of moving (a
    reflection off a building while parked: one fix 100-300 m off, then back)."""
    if _moving(fix, odometer):  # (first: the cheapest test, and most fixes are moving)
        return False
    spike, anchor, steps = state.last, state.step_from, state.step_km
    if spike is None or anchor is None or steps is None or not state.recent:
        return False
    if state.recent[-1] != spike or steps[1] != state.odometer_km or steps[1] <= steps[0]:
        return False  # not counted, or the odometer moved since (a reading, a late fix)
    if _moving(anchor, odometer) or _moving(spike, odometer):
        return False
    back = fix.distance_m(anchor) <= jitter_m(anchor, fix, odometer, still=True)
    return back and fix.distance_m(spike) > jitter_m(spike, fix, odometer, still=True)


def _moving(point: TrackPoint, odometer: OdometerSettings) -> bool:
    """Whether the device reported a speed of moving (`_spike`, `_double_spike`)."""
    return point.speed_kmh is not None and point.speed_kmh >= odometer.still_kmh


def _take_back(
    state: VehicleState,
    fix: TrackPoint,
    odometer: OdometerSettings,
    detail: dict[str, Any] | None,
    reflections: int,
) -> tuple[VehicleState, Verdict]:
    """The last `reflections` positions (1: `_spike`, 2: `_double_spike`) taken back: their
    distance off the count, they out of the recent fixes, and `fix` counted from the anchor
    before them, as if they had never come. The vehicle's odometer is held where it was
    (`held_km`) until the count passes it again."""
    if reflections == 1:
        assert state.step_from is not None and state.step_km is not None  # `_spike`
        anchor, km, earlier = state.step_from, state.step_km[0], None
    else:
        assert state.prior_from is not None and state.prior_km is not None  # `_double_spike`
        anchor, km, earlier = state.prior_from, state.prior_km[0], state.step_from
    recent = state.recent[:-reflections]
    trail = _without(state.trail, state.recent[-reflections:])
    added_m = step_m(anchor, fix, odometer, trail, state.noise)
    odometer_km = km + (added_m or 0.0) / 1000
    moved = replace(
        state,
        last=fix,
        last_detail=_detail(detail),
        anchor=anchor if added_m is None else fix,
        odometer_km=odometer_km,
        held_km=state.shown_km,
        suspects=(),
        recent=recent,
        trail=_trail_with(trail, fix, odometer),
        step_from=anchor,
        step_km=(km, odometer_km),
        prior_from=None,
        prior_km=None,
    )
    verdict = Verdict(
        added_km=odometer_km - state.odometer_km,
        outlier=state.last,
        outlier_reason=Reason.SPIKE,
        earlier_outlier=earlier,
    )
    return moved.remember(fix), verdict


def _double_spike(state: VehicleState, fix: TrackPoint, odometer: OdometerSettings) -> bool:
    """Whether the last two positions are reflections in a row that `fix` shows up: each
    counted a jump (the first away from where the vehicle stood, the second on from the
    first: two places, not one where the vehicle stopped), `fix` is back within a standing
    vehicle's drift of where it stood and far from both, and none of the four reported a
    speed of moving. A vehicle that really drove out, stopped for two fixes and came back
    stood at one place out there (its second fix within the first's drift: no jump, not
    this pattern)."""
    if _moving(fix, odometer):  # (first: the cheapest test, and most fixes are moving)
        return False
    second, first, anchor = state.last, state.step_from, state.prior_from
    steps, before = state.step_km, state.prior_km
    if second is None or first is None or anchor is None or steps is None or before is None:
        return False
    if len(state.recent) < 2 or state.recent[-1] != second or state.recent[-2] != first:
        return False
    if steps[1] != state.odometer_km or steps[1] <= steps[0]:
        return False
    if before[1] != steps[0] or before[1] <= before[0]:
        return False  # the first did not count a jump, or something moved the count since
    if any(_moving(p, odometer) for p in (anchor, first, second)):
        return False
    if fix.distance_m(anchor) > jitter_m(anchor, fix, odometer, still=True):
        return False
    return all(fix.distance_m(p) > jitter_m(p, fix, odometer, still=True) for p in (first, second))


def _suspect(
    state: VehicleState,
    fix: TrackPoint,
    quality: QualitySettings,
    odometer: OdometerSettings,
    detail: dict[str, Any] | None,
) -> tuple[VehicleState, Verdict]:
    """A fix too far from the last position: refused, unless it is the `relocate_after`-th
    in a row of fixes that agree with each other (the last position was the outlier, or the
    vehicle was carried): then the vehicle is there, without the jump on the odometer.

    When the last position was a lone outlier (one fix far off, accepted because it came
    after a long silence: a 30 km jump after a night parked), the fixes agree with the
    accepted fix before it and are nearer to it: the outlier's distance is taken back (off
    the count; the vehicle's odometer held where it was until the count passes it) and the
    vehicle counts on from the anchor before it to this fix."""
    agree = state.suspects and neighbour_reason(fix, state.suspects[-1], quality) is None
    suspects = (*state.suspects, fix) if agree else (fix,)
    if len(suspects) < quality.relocate_after:
        return replace(state, suspects=suspects), Verdict(Reason.IMPOSSIBLE_SPEED)
    moved = replace(
        state,
        last=fix,
        last_detail=_detail(detail),
        anchor=fix,
        suspects=(),
        step_from=None,
        step_km=None,
        prior_from=None,
        prior_km=None,
    )
    outlier, recent = state.last, state.recent
    if (
        outlier is not None
        and state.step_from is not None
        and state.step_km is not None
        and state.step_km[1] == state.odometer_km  # nothing else moved it since
        and len(recent) >= 2
        and recent[-1] == outlier
        and neighbour_reason(suspects[0], recent[-2], quality) is None
        and suspects[0].distance_m(recent[-2]) < suspects[0].distance_m(outlier)
    ):
        anchor, km = state.step_from, state.step_km[0]
        trail = _without(state.trail, (outlier,))
        added_m = step_m(anchor, fix, odometer, trail, state.noise)
        if added_m is not None:
            km, anchor = km + added_m / 1000, fix
        moved = replace(
            moved,
            recent=recent[:-1],
            trail=_trail_with(trail, fix, odometer),
            anchor=anchor,
            odometer_km=km,
            held_km=state.shown_km,
        )
        added = km - state.odometer_km
        return moved.remember(fix), Verdict(relocated=True, added_km=added, outlier=outlier)
    moved = replace(moved, trail=_trail_with(state.trail, fix, odometer))
    return moved.remember(fix), Verdict(relocated=True)


def rebaseline(
    state: VehicleState,
    km: float,
    source: str,
    at: datetime,
    odometer: OdometerSettings,
    *,
    max_speed_kmh: float | None = None,
) -> tuple[VehicleState, Rebaselined | None]:
    """A device odometer or a reading: the count starts again from `km` if `source` may
    re-baseline it now; the event to emit (a reading always, a device odometer when it moves
    the count by `event_km` or more, or takes over from another source).

    With `max_speed_kmh`, a device odometer after a device odometer must agree with the GPS
    distance counted since (`is_ahead`: no more than `DEVICE_SLACK_KM` plus
    `DEVICE_AHEAD_SHARE` of it ahead of the count): one that does not (a register misread
    once) is held as a suspect and changes nothing, unless the next one agrees with it
    (within what the vehicle could drive between the two, at that speed, plus
    `DEVICE_SLACK_KM`: the device's count really is ahead, another unit, or distance GPS did
    not see). A register's all-ones (`is_glitch`) changes nothing, ever.

    A device is a partner, whose odometer only moves the vehicle's forward (SPEC §6). One far
    below the count never re-baselines it (`is_behind`): a tracker replaced by one counting
    from its own, lower value, or a device reset to 0, would otherwise take the vehicle's
    odometer (and the plans counting on it) back by its whole life; the count goes on by GPS
    distance, and the device's value re-baselines it again once it is ahead. One a little
    behind (a coarse register, GPS chords a little long) re-baselines the count, held: the
    vehicle's odometer stays where it was (`held_km`) until GPS distance from the device's
    value passes it, so the count follows the device without going back, and without
    drifting ahead of it fix after fix. An admin's (or an authoritative) reading corrects it
    down, and drops the hold. A device value equal to the last one taken says nothing new
    (`is_unchanged`): the count goes on by GPS distance from it."""
    if not may_rebaseline(state.baseline, source, at, odometer):
        return state, None
    if is_glitch(km, source) or is_unchanged(state, km, source) or is_behind(state, km, source):
        return state, None
    if max_speed_kmh is not None and is_ahead(state, km, source):
        suspect = state.device_suspect
        if suspect is None or not _drivable(suspect.km, suspect.at, km, at, max_speed_kmh):
            return replace(state, device_suspect=Baseline(km, source, at)), None
    before = state.shown_km
    held = source == "device" and km < before
    shift = km - state.odometer_km  # (the marks count distance on from the new value)
    moved = replace(
        state,
        odometer_km=km,
        marks=tuple((t, mark_km + shift) for t, mark_km in state.marks),
        baseline=Baseline(km, source, at),
        device_suspect=None,
        held_km=before if held else 0.0,
        gps_count=False,
    )
    if held:
        return moved, Rebaselined(before, km, source, at, held=True)
    quiet = (
        source == "device"
        and state.baseline is not None
        and state.baseline.source == "device"
        and abs(km - before) < odometer.event_km
    )
    return moved, None if quiet else Rebaselined(before, km, source, at)


def is_glitch(km: float, source: str) -> bool:
    """Whether a device odometer is a register's sentinel (`GLITCH_KM`: all-ones, or a
    signed register's largest value; to the km: sent rounded or not): it never re-baselines
    the count, repeated or not, the vehicle's first device value or not. (Other wrong values
    are held as suspects by `rebaseline`, and taken when the next one agrees: a new unit.)"""
    return source == "device" and any(abs(km - glitch) < 1.0 for glitch in GLITCH_KM)


def is_unchanged(state: VehicleState, km: float, source: str) -> bool:
    """Whether a device odometer is the value the count last re-baselined to from the device:
    the register has not moved since. It re-baselines nothing (the GPS distance since stays
    on the count): a register stuck at one value while the vehicle drives, or a coarse one
    between two steps, would otherwise take the count back to that value at every fix, and
    the vehicle's odometer would never pass its first step again."""
    baseline = state.baseline
    return (
        source == "device"
        and baseline is not None
        and baseline.source == "device"
        and km == baseline.km
    )


def is_ahead(state: VehicleState, km: float, source: str) -> bool:
    """Whether a device odometer after a device odometer is farther ahead of the count than
    the GPS distance counted since explains: more than `DEVICE_SLACK_KM` plus
    `DEVICE_AHEAD_SHARE` of what the count has grown since that value (`rebaseline`)."""
    baseline = state.baseline
    if source != "device" or baseline is None or baseline.source != "device":
        return False
    grown = max(0.0, state.odometer_km - baseline.km)
    return km > state.odometer_km + DEVICE_SLACK_KM + DEVICE_AHEAD_SHARE * grown


def is_behind(state: VehicleState, km: float, source: str) -> bool:
    """Whether a device odometer is too far below the count to re-baseline it (`rebaseline`):
    more than `DEVICE_SLACK_KM` plus `DEVICE_BEHIND_SHARE` of what the count has grown since
    its last re-baseline. A device's coarse or lagging count a little behind the GPS count,
    or one that sends its odometer once a day, 3% below what GPS counted that day, still
    does."""
    if source != "device":
        return False
    grown = 0.0 if state.baseline is None else max(0.0, state.odometer_km - state.baseline.km)
    return km < state.odometer_km - DEVICE_SLACK_KM - DEVICE_BEHIND_SHARE * grown


def _drivable(
    from_km: float, since: datetime, km: float, at: datetime, max_speed_kmh: float
) -> bool:
    hours = max(0.0, (at - since).total_seconds() / 3600)
    return abs(km - from_km) <= DEVICE_SLACK_KM + max_speed_kmh * hours


def _time_of(point: TrackPoint | None) -> datetime | None:
    return None if point is None else point.t


def _pair(value: Any) -> tuple[float, float] | None:
    return None if not value else (float(value[0]), float(value[1]))


def _detail(detail: dict[str, Any] | None) -> dict[str, Any]:
    """The detail fields `detail` holds (a fix's document: its few, not its every field)."""
    if not detail:
        return {}
    return {k: v for k in DETAIL_FIELDS if (v := detail.get(k)) is not None}
