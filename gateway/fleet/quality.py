"""Quality gates: which fixes the fold accepts (pure).

A fix that fails a gate stays in the track, flagged with the reason, and never moves the
last position or the odometer. The gates, in the order they are tried:

- `invalid_coordinates`: latitude outside [-90, 90], longitude outside [-180, 180] (the
  append stores such fixes, `fix.parse_fix`), or not a finite number (which it refuses);
- `null_island`: exactly (0, 0), what a tracker without a fix sends;
- `no_fix`: the fix says the device had no position fix (`valid: false`: no GPS lock, the
  coordinates the last ones the device held);
- `future`: device time later than its arrival by more than `future_tolerance_s`;
- `too_old`: device time earlier than its arrival by more than `horizon_hours`;
- `inaccurate`: reported accuracy worse than `max_accuracy_m`;
- `duplicate`: the same place as a neighbouring accepted fix within `duplicate_s`;
- `impossible_speed`: reaching it from a neighbouring accepted fix (the one before and, for
  a late fix, the one after) takes more than `max_speed_kmh`, after allowing for both fixes'
  accuracy. Should the vehicle really have moved (the last accepted fix was the outlier),
  `relocate_after` consecutive fixes that agree with each other are accepted again, from the
  last of them, without adding the jump to the odometer;
- `spike` (found one fix later): a fix that counted a jump away from where the vehicle stood
  still, the next fix back where it stood, none of the three saying it moved (a reflection
  off a building while parked); its distance is taken back (`state.fold_fix`); two in a
  row, each to its own place, likewise;
- `other_device`: a vehicle with two devices (a tracker and the driver's phone, an old and a
  new tracker) is followed one device at a time: a fix from another device than the last
  position's, before that one has been silent for `device_handover_s`, or a late fix whose
  accepted neighbours are all another device's (`state.device_reason`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway.fleet.odometer import TrackPoint


class Reason(StrEnum):
    INVALID_COORDINATES = "invalid_coordinates"
    NULL_ISLAND = "null_island"
    NO_FIX = "no_fix"
    FUTURE = "future"
    TOO_OLD = "too_old"
    INACCURATE = "inaccurate"
    DUPLICATE = "duplicate"
    IMPOSSIBLE_SPEED = "impossible_speed"
    SPIKE = "spike"
    OTHER_DEVICE = "other_device"


@dataclass(frozen=True, slots=True)
class QualitySettings:
    """A tenant's gates (PUT /api/v1/fleet/settings); the defaults are documented."""

    future_tolerance_s: float = 300.0
    horizon_hours: float = 7 * 24.0
    max_accuracy_m: float = 200.0
    max_speed_kmh: float = 300.0
    duplicate_s: float = 1.0
    relocate_after: int = 3

    def to_doc(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> QualitySettings:
        values = {**cls().to_doc(), **doc}
        return cls(**{f.name: type(getattr(cls(), f.name))(values[f.name]) for f in fields(cls)})


def place_reason(lat: float, lon: float) -> Reason | None:
    """The gates a fix's coordinates fail: `invalid_coordinates` (not finite, or out of
    range), `null_island`. The mappings that write a vehicle's last position read the same
    gates (`is_fix()`, `mapping/expressions.py`)."""
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        return Reason.INVALID_COORDINATES
    if lat == 0 and lon == 0:
        return Reason.NULL_ISLAND
    return None


def static_reason(
    fix: TrackPoint, received_at: datetime, settings: QualitySettings
) -> Reason | None:
    """The gates a fix passes or fails on its own."""
    if (refused := place_reason(fix.lat, fix.lon)) is not None:
        return refused
    if not fix.valid:
        return Reason.NO_FIX
    ahead = (fix.t - received_at).total_seconds()
    if ahead > settings.future_tolerance_s:
        return Reason.FUTURE
    if -ahead > settings.horizon_hours * 3600:
        return Reason.TOO_OLD
    if fix.accuracy_m is not None and fix.accuracy_m > settings.max_accuracy_m:
        return Reason.INACCURATE
    return None


def neighbour_reason(
    fix: TrackPoint, neighbour: TrackPoint | None, settings: QualitySettings
) -> Reason | None:
    """The gates a fix fails against an accepted fix next to it in device time."""
    if neighbour is None:
        return None
    seconds = abs((fix.t - neighbour.t).total_seconds())
    distance = fix.distance_m(neighbour)
    if distance < 1.0 and seconds < settings.duplicate_s:
        return Reason.DUPLICATE
    slack = (fix.accuracy_m or 0.0) + (neighbour.accuracy_m or 0.0)
    moved = max(0.0, distance - slack)
    if moved > 0 and moved * 3.6 > settings.max_speed_kmh * max(seconds, 1e-3):
        return Reason.IMPOSSIBLE_SPEED
    return None
