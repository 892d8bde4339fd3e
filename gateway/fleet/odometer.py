"""The odometer of one vehicle, from its accepted fixes (pure).

Distance is the haversine length between fixes on a sphere of radius 6,371,008.8 m (the
mean Earth radius, IUGG). GPS jitter is left out: a fix adds distance only when it is
farther from the last counted fix (the anchor) than the noise could put it (`jitter_m`);
the anchor stays put until then, so slow real movement still counts once it adds up. How
far that is depends on what the fix says of its motion (`motion`). A moving fix (a reported
speed of `still_kmh` or more; or, reporting none, steady progress over its last steps:
`progressing`) counts beyond the two accuracy radii but never beyond `MOVING_M` (15 m; at
least `jitter_min_m`): a moving receiver's error changes little from fix to fix, whatever
accuracy it reports, and a threshold of two accuracy radii measured every street corner as
a chord (3-13% short at 15-50 m, 48% without speed). A reported speed is believed only when
the positions agree (`belied`): a parked receiver reporting a few km/h at rest is standing
still. A fix that may be standing still (a reported speed under `still_kmh`, or one the
positions belie; or, reporting none, within a standing vehicle's drift of where the
vehicle was `still_window_s` before) must be farther than `still_m` and than
`STILL_RADII` (2.5) times the two radii: a stopped receiver's drift is often larger than
the accuracy it reports, and a parked night, or an hour idling at a dock, must not add up.
Any other fix (no speed, nothing known) counts beyond the two accuracy radii together (at
least `jitter_min_m`). A late fix L that falls between two folded fixes A and B adds
d(A,L) + d(L,B) − d(A,B), the detour the vehicle really took. A receiver whose error changes
by metres from one fix to the next (white noise) zig-zags across the road: its noise is
measured on the vehicle's fixes in order (`noise_sample`, `noise_m2`), and when it asks for
more than these thresholds a step counts beyond `NOISE_SIGMAS` times its change and without
its zig-zag's excess (`step_m`). A device odometer or an
odometer reading (checklist, ERP, admin) re-baselines the count; `precedence` says which
source wins when both speak within `hold_hours`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.fleet.geometry import haversine_m

SOURCES = ("reading", "device")
# A fix that may be standing still counts only beyond this many times the two fixes'
# accuracy radii (and `still_m`): a parked receiver's fixes, honest 68% radii or not, are two
# radii apart in one pair of ten, and an anchor moved by each such pair walked 1-3 km a night
# at 25-65 m; 2.5 radii is passed about once in 10,000 pairs.
STILL_RADII = 2.5
# How many steps (of the trail, one every `still_window_s / 10` at most) a fix reporting no
# speed must have made in a row, each on from the one before, to be judged moving on its
# trail alone (`progressing`): 5 judged a parked phone's slowly wandering 50 m fixes moving
# often enough to gain up to 0.9 km an hour at 1 Hz; 8 waited 30 s after every red light.
PROGRESS_STEPS = 6
# A moving fix counts beyond the two accuracy radii, `jitter_min_m` at least, but never
# beyond this (`jitter_m`): a moving receiver's error changes by a few metres between fixes
# a second apart whatever accuracy it reports. 10 m let a fast-changing error (σ 4-5 m
# correlated over 10 s) add 2-4% at 1 Hz; 20 m cut a sharp corner's chord (−3%).
MOVING_M = 15.0
# A receiver whose error changes by metres from one fix to the next (white noise, an honest
# 50 m wandering within seconds) zig-zags across the road, and each step beyond `MOVING_M`
# counted its zig-zag (σ 5 m afresh every second: +11 … +16%). Its noise is measured on its
# recent fixes (`noise_m2`); when it asks for more than the rule, a step counts beyond
# `NOISE_SIGMAS` times the standard deviation of the error's change between two fixes
# (√2 σ), less the excess its lateral part adds: σ 5 m white −1.4 … +2.2%. 3.5 left
# −0.9 … +3.8%, 5.5 took too much (−2.2 … 0.0%) and more of the corners.
NOISE_SIGMAS = 4.5
# The three fixes of a `noise_sample` are at most this far apart (s): across longer gaps a
# curve's sagitta is not noise (a highway curve at 10 s is metres off the chord).
NOISE_GAP_S = 3.0
# The noise is the median of the vehicle's last `NOISE_KEPT` samples (`noise_m2`: three fixes
# in a row each, `noise_sample`; kept through a stop, where fixes give none), and not known
# from fewer than `NOISE_SAMPLES`.
NOISE_KEPT = 31
NOISE_SAMPLES = 5
# The median of a χ² variable of one degree of freedom, in units of its mean: what turns the
# median of squared Gaussian residuals into their variance.
MEDIAN_CHI2_1 = 0.4549364231195724
METRES_PER_DEGREE = 6_371_008.8 * math.pi / 180


@dataclass(frozen=True, slots=True)
class TrackPoint:
    """A fix as the fold sees it: device time, place and how sure the device was of it."""

    t: datetime
    lat: float
    lon: float
    accuracy_m: float | None = None
    speed_kmh: float | None = None  # as the device reported it
    # Which device sent it (the fix's `tracker_id`; None: it named none, or was stored before
    # fixes carried it: any device's): `state.device_reason`.
    device: str | None = None
    # False: the device had no position fix (the fix's `valid`): refused (`quality`).
    valid: bool = True

    def distance_m(self, other: TrackPoint) -> float:
        return haversine_m(self.lat, self.lon, other.lat, other.lon)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"t": self.t, "lat": self.lat, "lon": self.lon}
        if self.accuracy_m is not None:
            doc["accuracy_m"] = self.accuracy_m
        if self.speed_kmh is not None:
            doc["speed_kmh"] = self.speed_kmh
        if self.device is not None:
            doc["device"] = self.device
        if not self.valid:
            doc["valid"] = False
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> TrackPoint:
        accuracy, speed, device = doc.get("accuracy_m"), doc.get("speed_kmh"), doc.get("device")
        return cls(
            doc["t"],
            float(doc["lat"]),
            float(doc["lon"]),
            None if accuracy is None else float(accuracy),
            None if speed is None else float(speed),
            None if device is None else str(device),
            doc.get("valid") is not False,
        )


@dataclass(frozen=True, slots=True)
class OdometerSettings:
    # Which sources re-baseline the count, the first winning: within `hold_hours` of a
    # re-baseline by a source, a later one from a source ranked below it is ignored.
    precedence: tuple[str, ...] = SOURCES
    hold_hours: float = 24.0
    jitter_min_m: float = 10.0
    # The accuracy assumed for a fix that reports none.
    default_accuracy_m: float = 10.0
    # A device odometer that moves the count by less than this re-baselines it silently.
    event_km: float = 1.0
    # A fix slower than this is standing still: it counts only beyond `still_m`.
    still_kmh: float = 3.0
    still_m: float = 50.0
    still_window_s: float = 30.0
    # A vehicle's fixes from a device other than the last position's are refused
    # (`other_device`) until that device has been silent this long (device time): 0 lets
    # every device's fixes in, interleaved.
    device_handover_s: float = 600.0

    def to_doc(self) -> dict[str, Any]:
        return {
            "precedence": list(self.precedence),
            "hold_hours": self.hold_hours,
            "jitter_min_m": self.jitter_min_m,
            "default_accuracy_m": self.default_accuracy_m,
            "event_km": self.event_km,
            "still_kmh": self.still_kmh,
            "still_m": self.still_m,
            "still_window_s": self.still_window_s,
            "device_handover_s": self.device_handover_s,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> OdometerSettings:
        fields = {**cls().to_doc(), **doc}
        return cls(
            precedence=tuple(fields["precedence"]),
            hold_hours=float(fields["hold_hours"]),
            jitter_min_m=float(fields["jitter_min_m"]),
            default_accuracy_m=float(fields["default_accuracy_m"]),
            event_km=float(fields["event_km"]),
            still_kmh=float(fields["still_kmh"]),
            still_m=float(fields["still_m"]),
            still_window_s=float(fields["still_window_s"]),
            device_handover_s=float(fields["device_handover_s"]),
        )


def motion(
    fix: TrackPoint,
    history: Sequence[TrackPoint],
    settings: OdometerSettings,
    since: TrackPoint | None = None,
) -> bool | None:
    """Whether `fix` is moving (True), may be standing still (False), or neither is known
    (None). A reported speed says it: moving from `still_kmh` up, unless the positions
    belie it (`belied`: `since` is the anchor, the last counted fix). Without one, from where
    the vehicle was (`history`, oldest first: `state.VehicleState.trail`, a point every
    `still_window_s / TRAIL_STEPS` at most): moving when its last steps show steady progress
    (`progressing`); standing still when it is within a standing vehicle's drift (`jitter_m`
    of a still fix: `still_m`, or `STILL_RADII` times the two accuracy radii when that is
    more) of where it was `still_window_s` before (the newest point at least that much
    older); else (farther, or no point that old) not known. A stopped receiver's drift stays
    within that, a vehicle on its way is far from where it was. The same drift the count
    asks of a still fix: a parked phone's honest 25-65 m fixes are more than 50 m apart in a
    large share of pairs, and judged moving by a fixed 50 m they needed only the two radii
    to move the anchor (0.2-2.7 km a night)."""
    if fix.speed_kmh is not None:
        return fix.speed_kmh >= settings.still_kmh and not belied(fix, history, settings, since)
    if progressing(fix, history, settings):
        return True
    window, older = settings.still_window_s, None
    for point in history:  # (oldest first: the trail holds one or two that old)
        if (fix.t - point.t).total_seconds() < window:
            break
        older = point
    if older is None:
        return None
    return False if fix.distance_m(older) <= jitter_m(older, fix, settings, still=True) else None


def belied(
    fix: TrackPoint,
    history: Sequence[TrackPoint],
    settings: OdometerSettings,
    since: TrackPoint | None,
) -> bool:
    """Whether the positions belie the moving speed `fix` reports: since the anchor (`since`)
    or since the vehicle last said it stood (the newest point of `history`, the trail,
    reporting a speed under `still_kmh`), whichever is newer, it covered less than
    `still_kmh` would in that time, even granted a moving fix's noise (`jitter_m` of a moving
    fix, 10-15 m). A parked receiver reporting a few km/h at rest (multipath; phones and
    cheap trackers without static navigation) is 5-15 m from where it was a minute or an
    hour before, not the 50 m or more that 3 km/h covers: judged moving, each drift farther
    than 15 m from the anchor counted (1.8-4 km a night at a fix a minute). A vehicle that
    really stood and drives off said it stood (0 km/h) a few seconds before, and is judged by
    its progress since then; one that stood while reporting a speed counts from where it
    stood once the positions show it left (beyond `still_m`, or at 3 km/h on average)."""
    for point in reversed(history):
        if point.t < fix.t and point.speed_kmh is not None and point.speed_kmh < settings.still_kmh:
            if since is None or point.t > since.t:
                since = point
            break
    if since is None or since.t >= fix.t:
        return False
    seconds = (fix.t - since.t).total_seconds()
    noise = jitter_m(since, fix, settings, moving=True)
    return fix.distance_m(since) + noise < settings.still_kmh / 3.6 * seconds


def progressing(fix: TrackPoint, history: Sequence[TrackPoint], settings: OdometerSettings) -> bool:
    """Whether a vehicle reporting no speed is on its way at `fix`, by where it was before
    (`history`, oldest first, one point every few seconds: the trail): its last
    `PROGRESS_STEPS` steps up to `fix` each longer than `jitter_min_m`, each one farther from
    where they began, none turning back (no two in a row more than 90° apart: a street
    corner is 90°), and `fix` farther from where they began than a standing vehicle's drift
    (`still_m`, or the two accuracy radii when that is more). A parked receiver's fixes jump
    about, each step in any direction (two steps in a row turn back more often than not,
    drifting afresh or wandering): six steps that never turn back, always away, and end that
    far away are rarely its drift."""
    points = [p for p in history[-PROGRESS_STEPS:] if p.t < fix.t]
    if len(points) < PROGRESS_STEPS:
        return False
    points.append(fix)
    first = points[0]
    default = settings.default_accuracy_m
    radii = (first.accuracy_m or default) + (fix.accuracy_m or default)
    if first.distance_m(fix) <= max(settings.still_m, radii):
        return False
    before: tuple[float, float] | None = None
    reach = 0.0
    for a, b in itertools.pairwise(points):
        if a.distance_m(b) <= settings.jitter_min_m:
            return False
        if (far := first.distance_m(b)) <= reach:
            return False
        reach = far
        step = _east_north(a, b)
        if before is not None and step[0] * before[0] + step[1] * before[1] <= 0:
            return False
        before = step
    return True


def _east_north(a: TrackPoint, b: TrackPoint) -> tuple[float, float]:
    """The step from `a` to `b` in a local plane (its direction is all `progressing` asks)."""
    dlon = (b.lon - a.lon + 540.0) % 360.0 - 180.0  # (across the antimeridian: the short way)
    return dlon * math.cos(math.radians((a.lat + b.lat) / 2)), b.lat - a.lat


def jitter_m(
    a: TrackPoint,
    b: TrackPoint,
    settings: OdometerSettings,
    *,
    still: bool = False,
    moving: bool = False,
) -> float:
    """How far apart two fixes may be from noise alone (`still`: `b` stands still;
    `moving`: `b` is on its way, `motion`). A moving receiver's error changes little from
    one fix to the next (it is correlated over tens of seconds), however large the accuracy
    it reports: the two radii but no more than `MOVING_M` (and at least `jitter_min_m`);
    the radii alone cut every street corner by a chord two accuracies long (3-13% of a city
    track at 15-50 m)."""
    default = settings.default_accuracy_m
    radii = (a.accuracy_m or default) + (b.accuracy_m or default)
    if moving:
        return max(settings.jitter_min_m, min(radii, MOVING_M))
    if still:
        return max(settings.jitter_min_m, STILL_RADII * radii, settings.still_m)
    return max(settings.jitter_min_m, radii)


def noise_sample(
    a: TrackPoint, b: TrackPoint, c: TrackPoint, settings: OdometerSettings
) -> float | None:
    """What three fixes in a row say of how much a moving receiver's error changes from one
    fix to the next (`noise_m2`): `b`'s distance across the road from where `a` and `c` put
    it (interpolated by time), squared and scaled to a coordinate's variance of white noise.
    A vehicle does not zig-zag within seconds, and an error that stays (a receiver's is
    correlated over tens of seconds) moves all three alike: what is left is noise. None when
    the three say nothing of it: more than `NOISE_GAP_S` apart (a curve's sagitta), a fix
    reporting a speed under `still_kmh` (a stop's drift), or spanning `jitter_min_m` or less
    (no direction of travel)."""
    still = settings.still_kmh
    if any(p.speed_kmh is not None and p.speed_kmh < still for p in (a, b, c)):
        return None
    ab, bc = (b.t - a.t).total_seconds(), (c.t - b.t).total_seconds()
    if not (0 < ab <= NOISE_GAP_S and 0 < bc <= NOISE_GAP_S):
        return None
    # (a local plane, b at its origin: fixes seconds apart)
    east = math.cos(math.radians(b.lat)) * METRES_PER_DEGREE
    ax = ((a.lon - b.lon + 540.0) % 360.0 - 180.0) * east
    cx = ((c.lon - b.lon + 540.0) % 360.0 - 180.0) * east
    ay, cy = (a.lat - b.lat) * METRES_PER_DEGREE, (c.lat - b.lat) * METRES_PER_DEGREE
    span = math.hypot(cx - ax, cy - ay)
    if span <= settings.jitter_min_m:
        return None
    w = ab / (ab + bc)  # b's share of the time from a to c
    across = ((ax + w * (cx - ax)) * (cy - ay) - (ay + w * (cy - ay)) * (cx - ax)) / span
    # (of white noise σ² a coordinate, `across` has the variance σ² (1 + w² + (1 − w)²))
    return across * across / (1 + w * w + (1 - w) * (1 - w))


def noise_m2(samples: Sequence[float]) -> float:
    """How much the receiver's error changes from one fix to the next, as a coordinate's
    variance (m²), from the vehicle's last `noise_sample`s (`VehicleState.noise`): their
    median, so that a corner (one or two samples) does not count; 0 (not known) from fewer
    than `NOISE_SAMPLES`."""
    if len(samples) < NOISE_SAMPLES:
        return 0.0
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] / MEDIAN_CHI2_1


def step_m(
    anchor: TrackPoint,
    fix: TrackPoint,
    settings: OdometerSettings,
    history: Sequence[TrackPoint] = (),
    noise: Sequence[float] = (),
) -> float | None:
    """The distance `fix` adds after `anchor` (the last counted fix; `history`: where the
    vehicle was before, oldest first, `VehicleState.trail`; `noise`: the vehicle's last
    `noise_sample`s, `VehicleState.noise`); None when the move is within the jitter (the
    anchor stays). When the receiver's noise (`noise_m2`, σ² a coordinate) asks for more than
    the rule (`jitter_m`): beyond `NOISE_SIGMAS` times its change between two fixes (√2 σ),
    and the step without what that change across the road adds to it (√(d² − 2σ²): a
    zig-zag's excess)."""
    distance = anchor.distance_m(fix)
    moving = motion(fix, history, settings, anchor)
    threshold = jitter_m(anchor, fix, settings, still=moving is False, moving=moving is True)
    if distance <= threshold:
        return None
    variance = noise_m2(noise)
    noisy = NOISE_SIGMAS * math.sqrt(2 * variance)
    if distance <= max(threshold, noisy):
        return None
    if noisy <= threshold:
        return distance
    return math.sqrt(distance * distance - 2 * variance)


def detour_m(
    before: TrackPoint | None,
    late: TrackPoint,
    after: TrackPoint | None,
    settings: OdometerSettings,
) -> float | None:
    """What a late fix adds between its folded neighbours: d(A,L) + d(L,B) − d(A,B); None
    when it is within the jitter of either (it would not have counted in order either, and,
    like a fix in order that does not move the anchor, it is no neighbour of later ones)."""
    near = [p for p in (before, after) if p is not None]
    if not near:
        return 0.0
    moving = motion(late, () if before is None else (before,), settings, before)
    still, on = moving is False, moving is True
    if any(late.distance_m(p) <= jitter_m(p, late, settings, still=still, moving=on) for p in near):
        return None
    if before is None or after is None:
        return late.distance_m(near[0])  # before the first fix, or after the last
    return max(0.0, before.distance_m(late) + late.distance_m(after) - before.distance_m(after))


@dataclass(frozen=True, slots=True)
class Baseline:
    """The last re-baseline: its value, source and (device or reading) time."""

    km: float
    source: str
    at: datetime

    def to_doc(self) -> dict[str, Any]:
        return {"km": self.km, "source": self.source, "at": self.at}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Baseline:
        return cls(float(doc["km"]), str(doc["source"]), doc["at"])


def may_rebaseline(
    current: Baseline | None, source: str, at: datetime, settings: OdometerSettings
) -> bool:
    """Whether a value from `source` at `at` re-baselines the count."""
    if source not in settings.precedence:
        return False
    if current is None or current.source not in settings.precedence:
        return True
    outranked = settings.precedence.index(source) > settings.precedence.index(current.source)
    held = at - current.at < timedelta(hours=settings.hold_hours)
    return not (outranked and held)
