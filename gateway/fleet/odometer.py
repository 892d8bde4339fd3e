"""The odometer of one vehicle, from its accepted fixes (pure).

Distance is the haversine length between fixes on a sphere of radius 6,371,008.8 m (the
mean Earth radius, IUGG). GPS jitter is left out: a fix adds distance only when it is
farther from the last counted fix (the anchor) than the two fixes' accuracy radii together
(at least `jitter_min_m`), that is when the move cannot be noise; the anchor stays put
until then, so slow real movement still counts once it adds up. A fix that may be standing
still (a reported speed under `still_kmh`; or, reporting none, within a standing vehicle's
drift of where the vehicle was `still_window_s` before: `is_still`) must be farther than
`still_m` and than `STILL_RADII` (2.5) times the two radii: a stopped receiver's drift is
often larger than the accuracy it reports, and a parked night, or an hour idling at a dock,
must not add up. A late fix L that falls
between two folded fixes A and B adds d(A,L) + d(L,B) − d(A,B), the detour the vehicle
really took. A device odometer or an odometer reading (checklist, ERP, admin) re-baselines
the count; `precedence` says which source wins when both speak within `hold_hours`.
"""

from __future__ import annotations

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


def is_still(fix: TrackPoint, history: Sequence[TrackPoint], settings: OdometerSettings) -> bool:
    """Whether `fix` may be standing still: its reported speed is under `still_kmh`; or,
    reporting none, it is within a standing vehicle's drift (`jitter_m` of a still fix:
    `still_m`, or `STILL_RADII` times the two accuracy radii when that is more) of where the
    vehicle was `still_window_s` before (the newest fix of `history`, oldest first, at least
    that much older: `state.VehicleState.trail` keeps one however often the fixes come). A
    stopped receiver's drift stays within it, a vehicle on its way is far from where it was.
    The same drift the count asks of a still fix: a parked phone's honest 25-65 m fixes are
    more than 50 m apart in a large share of pairs, and judged moving by a fixed 50 m they
    needed only the two radii to move the anchor (0.2-2.7 km a night)."""
    if fix.speed_kmh is not None:
        return fix.speed_kmh < settings.still_kmh
    window, older = settings.still_window_s, None
    for point in history:  # (oldest first: the trail holds one or two that old)
        if (fix.t - point.t).total_seconds() < window:
            break
        older = point
    return older is not None and fix.distance_m(older) <= jitter_m(older, fix, settings, still=True)


def jitter_m(
    a: TrackPoint, b: TrackPoint, settings: OdometerSettings, *, still: bool = False
) -> float:
    """How far apart two fixes may be from noise alone (`still`: `b` stands still)."""
    default = settings.default_accuracy_m
    radii = (a.accuracy_m or default) + (b.accuracy_m or default)
    if still:
        return max(settings.jitter_min_m, STILL_RADII * radii, settings.still_m)
    return max(settings.jitter_min_m, radii)


def step_m(
    anchor: TrackPoint,
    fix: TrackPoint,
    settings: OdometerSettings,
    history: Sequence[TrackPoint] = (),
) -> float | None:
    """The distance `fix` adds after `anchor` (the last counted fix; `history`: where the
    vehicle was before, oldest first, `VehicleState.trail`); None when the move is within the
    jitter (the anchor stays)."""
    distance = anchor.distance_m(fix)
    still = is_still(fix, history, settings)
    return distance if distance > jitter_m(anchor, fix, settings, still=still) else None


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
    still = is_still(late, () if before is None else (before,), settings)
    if any(late.distance_m(p) <= jitter_m(p, late, settings, still=still) for p in near):
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
