"""Geofences, pure: which vehicles a fence watches, and the hysteresis that turns a noisy
stream of fixes into one crossing per real crossing.

A fence's state for one vehicle is `FenceState`: `inside` (None until the first fix), and a
`candidate` side seen but not yet confirmed by the dwell. `step` moves it with one fix:

- the first fix sets `inside` (by the sign of the distance) and emits nothing (the fold
  gives a fence new to a vehicle where the vehicle was when it last knew its fences first,
  `fold._Memory.anchor`: a crossing since then is the next fix's);
- a fix is *clearly outside* when it is outside the border by more than `margin_m` plus the
  fix's accuracy, *clearly inside* when it is inside by as much, or, where the fence is too
  narrow for that around the fix, by more than its accuracy and more than half as deep as
  the largest circle in the fence that covers it (`_clearly_inside`): a fence no deeper than
  its margin (a 20 m circle, a narrow yard, a bay of a MultiPolygon whose other part is a
  large yard) is entered too, by a fix whose accuracy circle lies within it;
  anything in between (the band along the border) changes nothing, so GPS noise along a
  border does not flap the state, and a fix too inaccurate to say which side it is on does
  not flap it either;
- a clear fix on the other side switches the state at once (`dwell_s` = 0), or, with a
  dwell, becomes the candidate; the switch happens at the first clear fix on that side at
  least `dwell_s` after the candidate started (a clear fix back on the current side drops
  the candidate). The crossing's `at` and place are the candidate's first fix's: when and
  where the vehicle crossed, not the fix that confirmed it.

Both kinds of fence report both crossings; which one is the alert is the fence's `kind`
("authorized": exited, "restricted": entered) and the fold's business.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.clock import from_iso
from gateway.fleet.geometry import Shape
from gateway.formats.unicode_forms import nfc
from gateway.schemas.ids import plate_match_key

FenceKind = Literal["authorized", "restricted"]
CrossingKind = Literal["entered", "exited"]
DEFAULT_MARGIN_M = 25.0


def reaches(keys: Collection[str], group: str | None, plate: str, groups: Collection[str]) -> bool:
    """Whether a rule (a geofence, a plan) naming the plates whose `plate_match_key` are
    `keys` and `group` applies to a vehicle: no plates and no group, every vehicle; otherwise
    the named plates and the members of the group (either): any spelling of the vehicle's
    plate, or its old or Mercosul twin, matches. A group is one group in either Unicode
    form: `groups` are in NFC (`vehicle_groups`), and so is `group` compared."""
    if not keys and group is None:
        return True
    if group is not None and nfc(group) in groups:
        return True
    return bool(keys) and plate_match_key(plate) in keys


@dataclass(frozen=True)
class Geofence:
    id: str
    name: str
    kind: FenceKind
    shape: Shape
    vehicles: frozenset[str] = field(default_factory=frozenset)
    group: str | None = None
    margin_m: float = DEFAULT_MARGIN_M
    dwell_s: float = 0.0

    def __post_init__(self) -> None:
        # (the plates as they are compared: `applies_to`)
        object.__setattr__(self, "vehicles", frozenset(map(plate_match_key, self.vehicles)))

    def applies_to(self, plate: str, groups: Collection[str]) -> bool:
        return reaches(self.vehicles, self.group, plate, groups)

    def signed_distance_m(self, lat: float, lon: float, exact_within_m: float = math.inf) -> float:
        """Metres to the border: < 0 inside, > 0 outside (beyond `exact_within_m` of it, a
        bound of the same sign: `Shape.signed_distance_m`)."""
        return self.shape.signed_distance_m(lat, lon, exact_within_m)


@dataclass(frozen=True)
class FenceState:
    inside: bool | None = None
    candidate: bool | None = None
    candidate_since: datetime | None = None
    # The candidate's first fix's place, (lat, lon): where the crossing is (None in a state
    # kept before it was: that crossing is placed at the fix that confirms it).
    candidate_at: tuple[float, float] | None = None

    def settled(self) -> FenceState:
        """The side alone, without a candidate: what a fence keeps through a fix it does not
        evaluate (it does not apply to the vehicle for a while). A dwell is confirmed by the
        fixes that follow its first one, each evaluated: one the fence skipped may have been
        back on the vehicle's side, so a candidate from before it could confirm a crossing
        that did not happen there, then, without its dwell."""
        return FenceState(inside=self.inside)

    def to_doc(self) -> dict[str, Any]:
        return {
            "inside": self.inside,
            "candidate": self.candidate,
            "candidate_since": self.candidate_since,
            "candidate_at": None if self.candidate_at is None else list(self.candidate_at),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> FenceState:
        place = doc.get("candidate_at")
        return cls(
            inside=doc.get("inside"),
            candidate=doc.get("candidate"),
            candidate_since=utc(doc.get("candidate_since")),
            candidate_at=None if not place else (float(place[0]), float(place[1])),
        )


@dataclass(frozen=True)
class Crossing:
    kind: CrossingKind
    at: datetime  # when the vehicle crossed: the first fix clearly on the other side
    lat: float  # and where
    lon: float


def step(
    fence: Geofence,
    state: FenceState | None,
    lat: float,
    lon: float,
    accuracy_m: float | None,
    at: datetime,
) -> tuple[FenceState, Crossing | None]:
    """The state after one fix (in device-time order), and the crossing it confirms, if any."""
    accuracy = accuracy_m if accuracy_m is not None and accuracy_m > 0 else 0.0
    # far outside (the common case): no need for the exact distance to decide; nor deep
    # inside: every test below is of the distance within the margin plus the accuracy
    distance = fence.shape.outside_by_at_least_m(lat, lon)
    if distance <= fence.margin_m + accuracy:
        distance = fence.signed_distance_m(lat, lon, fence.margin_m + accuracy)
    if state is None or state.inside is None:
        return FenceState(inside=distance <= 0), None
    if distance > fence.margin_m + accuracy:
        seen: bool | None = False
    elif _clearly_inside(fence, lat, lon, -distance, accuracy):
        seen = True
    else:
        seen = None  # in the band along the border: no evidence either way
    if seen is None:
        return state, None
    if seen == state.inside:
        return FenceState(inside=state.inside), None  # back on its side: any candidate is off
    since, place = at, (lat, lon)
    if state.candidate == seen and state.candidate_since:  # a candidate going on
        since, place = state.candidate_since, state.candidate_at or place
    if (at - since).total_seconds() < fence.dwell_s:
        candidate = FenceState(state.inside, seen, since, place)
        return candidate, None
    return FenceState(inside=seen), Crossing("entered" if seen else "exited", since, *place)


def _clearly_inside(fence: Geofence, lat: float, lon: float, depth: float, accuracy: float) -> bool:
    """Whether a fix `depth` metres in is clearly inside: farther in than the margin plus its
    accuracy, as for leaving. Where the fence is too narrow for that around the fix (no
    circle twice as deep as the fix lies in it and covers the fix), farther in than its
    accuracy and than half the largest such circle (its radius, to ~4 %: a circle's own, a
    bay's half width): the fix's accuracy circle lies within the fence there. A fix less
    accurate than the fence is deep there never is. The room is the fence's around the fix,
    not its deepest point anywhere: a bay of a MultiPolygon is as narrow as the bay beside a
    large yard, and a yard's driveway as roomy as the yard beside a narrow access road."""
    wanted = fence.margin_m + accuracy
    if depth > wanted:
        return True
    if depth <= accuracy or depth <= 0:
        return False
    return not fence.shape.holds_circle_around(lat, lon, 2 * depth, depth)


def utc(value: Any) -> datetime | None:
    """A stored time back as an aware UTC datetime (BSON gives datetimes, JSON ISO strings)."""
    if isinstance(value, str):
        value = from_iso(value)
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
