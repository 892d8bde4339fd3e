"""Deterministic synthetic tracks for the fold's tests: the classes of real tracks a fleet
sends, each with its ground truth (SPEC §6, issue 10: "checked on tracks you have not seen").

A track is a noiseless path sampled every second by a simple motion model (speed changes at
most 2.5 m/s², heading changes by a turn rate), on a sphere of R = 6,371,008.8 m. Its
ground-truth length is the haversine sum over those 1 s samples (computed here, not with the
gateway's own function: this module is the oracle). At 1 s a curve's chords are within
0.01% of its arc, so that sum is the length of the road driven.

The device sees the path through its GPS: fixes at its own interval, each displaced by a
position error. The error while moving is correlated in time (an Ornstein-Uhlenbeck process
per axis, σ a few metres, τ a minute: consecutive fixes share most of their error, as real
receivers' do) plus a little white noise; while stopped, the receiver drifts: the fix lands
5 to 15 m from the vehicle in a direction that wanders (`Drift`). The device reports speed
(0 when stopped), heading and, when the class says so, an accuracy radius.

Every generator takes a `seed` and a `start` (device time of the first sample; tests pass a
time shortly before now, since the fold refuses fixes far from their arrival) and returns a
`Track`: its fixes in device-time order, what each one is expected to be (`expect`: None for
a good fix, else the quality gate that must refuse it), the batches in which a device would
send them (`sends`, in sending order), the ground truth and the tolerance the odometer must
meet. Pure Python, no gateway imports besides none: the tests compare the gateway against it.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

R_M = 6_371_008.8
SAO_PAULO = (-23.5505, -46.6333)
BANDEIRANTES = (-23.35, -46.86)  # a highway north of São Paulo


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * R_M * math.asin(min(1.0, math.sqrt(h)))


def destination(lat: float, lon: float, bearing_deg: float, metres: float) -> tuple[float, float]:
    """The point `metres` from (lat, lon) along the great circle at `bearing_deg`."""
    p1, l1, b = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    d = metres / R_M
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(
        math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
    )
    return math.degrees(p2), (math.degrees(l2) + 540) % 360 - 180


def offset(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    """(lat, lon) moved by a small local displacement in metres (longitude kept in
    [-180, 180): a fix east of 179.9999 is at -179.9999)."""
    dlat = math.degrees(north_m / R_M)
    dlon = math.degrees(east_m / (R_M * math.cos(math.radians(lat))))
    return lat + dlat, (lon + dlon + 540) % 360 - 180  # across the antimeridian: wrapped


@dataclass(frozen=True, slots=True)
class Sample:
    """The vehicle, noiseless, at one second of its path."""

    t: datetime
    lat: float
    lon: float
    speed_kmh: float
    heading: float


@dataclass(frozen=True, slots=True)
class GenFix:
    """A fix as the device sends it, and what the fold must make of it."""

    t: datetime
    lat: float
    lon: float
    speed_kmh: float | None = None
    heading: float | None = None
    accuracy_m: float | None = None
    expect: str | None = None  # None: accepted; else the quality gate's reason
    device: str | None = None  # the sending device's tracker id (None: named by plate only)

    def canonical(self, plate: str) -> dict[str, Any]:
        """The canonical fix (docs/fleet.md) for a vehicle's plate (and, when the fix says
        which device sent it, that device's `tracker_id`: the plate still names the vehicle)."""
        doc: dict[str, Any] = {
            "plate": plate,
            "time": iso(self.t),
            "lat": self.lat,
            "lon": self.lon,
        }
        if self.device is not None:
            doc["tracker_id"] = self.device
        for name in ("speed_kmh", "heading", "accuracy_m"):
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        return doc


@dataclass(frozen=True)
class Track:
    name: str
    fixes: list[GenFix]  # device-time order, unique times
    truth_m: float  # the noiseless path's length
    rel_tolerance: float  # the odometer must be within this of `expected_m`
    abs_tolerance_m: float = 0.0  # or within this many metres (a parked vehicle: 0 km)
    # Sending order: lists of indexes into `fixes`, one list per request (a batch).
    sends: list[list[int]] = field(default_factory=list)
    # What the odometer can measure by construction, when it is not `truth_m` (the chords
    # of sparse fixes across curves); None: `truth_m`.
    measurable_m: float | None = None
    note: str = ""

    @property
    def expected_m(self) -> float:
        return self.truth_m if self.measurable_m is None else self.measurable_m

    @property
    def accepted(self) -> list[GenFix]:
        return [f for f in self.fixes if f.expect is None]

    @property
    def newest_accepted(self) -> GenFix:
        return max(self.accepted, key=lambda f: f.t)

    def within(self, metres: float) -> bool:
        error = abs(metres - self.expected_m)
        return error <= max(self.abs_tolerance_m, self.rel_tolerance * self.expected_m)

    def batches(self) -> Iterator[list[GenFix]]:
        for indexes in self.sends or [list(range(len(self.fixes)))]:
            yield [self.fixes[i] for i in indexes]


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the path ---------------------------------------------------------------------------------


class Path:
    """A noiseless path, one sample a second, driven by `drive` and `stop`."""

    def __init__(self, start: datetime, lat: float, lon: float, heading: float) -> None:
        self.samples = [Sample(start, lat, lon, 0.0, heading % 360)]
        self._speed = 0.0  # m/s

    @property
    def now(self) -> Sample:
        return self.samples[-1]

    def drive(self, seconds: int, speed_kmh: float, turn_deg_s: float = 0.0) -> Path:
        """`seconds` at up to `speed_kmh` (accelerating or braking at 2.5 m/s² towards it),
        turning `turn_deg_s` a second."""
        target = speed_kmh / 3.6
        for _ in range(seconds):
            last = self.samples[-1]
            speed = self._speed + max(-2.5, min(2.5, target - self._speed))
            metres = (self._speed + speed) / 2
            heading = (last.heading + turn_deg_s) % 360
            mid = (last.heading + turn_deg_s / 2) % 360
            lat, lon = destination(last.lat, last.lon, mid, metres)
            self._speed = speed
            t = last.t + timedelta(seconds=1)
            self.samples.append(Sample(t, lat, lon, speed * 3.6, heading))
        return self

    def stop(self, seconds: int) -> Path:
        """Brake to a halt, then stand still for `seconds`."""
        while self._speed > 0:
            self.drive(1, 0.0)
        last = self.samples[-1]
        for i in range(1, seconds + 1):
            self.samples.append(replace(last, t=last.t + timedelta(seconds=i), speed_kmh=0.0))
        return self

    def turn(self, degrees: float, speed_kmh: float = 20.0, seconds: int = 8) -> Path:
        """A corner: `degrees` (positive: right) in `seconds` at `speed_kmh`."""
        return self.drive(seconds, speed_kmh, degrees / seconds)

    @property
    def length_m(self) -> float:
        return length_m(self.samples)


def length_m(points: Sequence[Sample | GenFix]) -> float:
    return sum(haversine_m(a.lat, a.lon, b.lat, b.lon) for a, b in itertools.pairwise(points))


# -- the receiver -----------------------------------------------------------------------------


class Receiver:
    """A GPS receiver's error: correlated while moving, a 5–15 m drift while stopped."""

    def __init__(
        self,
        rng: random.Random,
        sigma_m: float = 3.0,
        tau_s: float = 60.0,
        white_m: float = 0.5,
        drift_m: tuple[float, float] = (5.0, 15.0),
        accuracy: bool = True,
        speed: bool = True,
        drift_tau_s: float = 0.0,
    ) -> None:
        self.rng = rng
        self.speed = speed
        # 0: each stopped fix drifts afresh (harsh at 1 s, what sparse fixes see); else the
        # drift wanders with this time constant, as a receiver's does between close fixes.
        self.drift_tau = drift_tau_s
        self._r = rng.uniform(*drift_m)
        self.sigma, self.tau, self.white = sigma_m, tau_s, white_m
        self.drift = drift_m
        self.accuracy = accuracy
        self._e = [rng.gauss(0, sigma_m), rng.gauss(0, sigma_m)]
        self._t: datetime | None = None
        self._bearing = rng.uniform(0, 360)

    def see(self, sample: Sample) -> GenFix:
        dt = 1.0 if self._t is None else max(0.0, (sample.t - self._t).total_seconds())
        self._t = sample.t
        keep = math.exp(-dt / self.tau)
        fresh = self.sigma * math.sqrt(1 - keep * keep)
        self._e = [e * keep + self.rng.gauss(0, fresh) for e in self._e]
        if sample.speed_kmh < 0.5:
            # stopped: the fix wanders 5–15 m around the vehicle
            low, high = self.drift
            if self.drift_tau:
                keep = math.exp(-dt / self.drift_tau)
                self._bearing += self.rng.gauss(0, 60 * math.sqrt(1 - keep))
                middle, spread = (low + high) / 2, (high - low) / 4
                fresh = spread * math.sqrt(1 - keep * keep) * self.rng.gauss(0, 1)
                self._r = middle + (self._r - middle) * keep + fresh
                r = min(high, max(low, self._r))
            else:
                self._bearing += self.rng.gauss(0, 60)
                r = self.rng.uniform(low, high)
            east = r * math.sin(math.radians(self._bearing))
            north = r * math.cos(math.radians(self._bearing))
            lat, lon = offset(sample.lat, sample.lon, east, north)
            # what receivers report: a 68% radius, so often less than the real error
            accuracy = round(max(5.0, r * self.rng.uniform(0.6, 1.3)), 1)
            speed = 0.0
        else:
            east = self._e[0] + self.rng.gauss(0, self.white)
            north = self._e[1] + self.rng.gauss(0, self.white)
            lat, lon = offset(sample.lat, sample.lon, east, north)
            accuracy = round(self.rng.uniform(2.0, 2.5) * self.sigma, 1)
            speed = max(0.0, round(sample.speed_kmh + self.rng.gauss(0, 1.0), 1))
        return GenFix(
            t=sample.t,
            lat=round(lat, 7),
            lon=round(lon, 7),
            speed_kmh=speed if self.speed else None,
            heading=round(sample.heading, 1) if self.speed else None,
            accuracy_m=accuracy if self.accuracy else None,
        )


def sample_every(
    path: Path, rng: random.Random, low_s: float, high_s: float, receiver: Receiver
) -> list[GenFix]:
    """The path seen by `receiver` at intervals drawn from [low_s, high_s] (whole seconds:
    the path's samples), the last sample always included."""
    fixes: list[GenFix] = []
    i = 0
    samples = path.samples
    while i < len(samples):
        fixes.append(receiver.see(samples[i]))
        i += max(1, round(rng.uniform(low_s, high_s)))
    if fixes[-1].t != samples[-1].t:
        fixes.append(receiver.see(samples[-1]))
    return fixes


def in_batches(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(n, i + size))) for i in range(0, n, size)]


# -- the classes ------------------------------------------------------------------------------


def urban(
    seed: int, start: datetime, *, accuracy: bool = True, speed: bool = True, drift_tau_s: float = 0
) -> Track:
    """Stop and go in a city: blocks of 150–400 m at 30–50 km/h, corners, red lights of
    30–90 s (the fix drifting 5–15 m while stopped: afresh at every fix, or wandering with
    `drift_tau_s`), fixes every 1–10 s, with or without accuracy and speed."""
    rng = random.Random(seed)
    path = Path(start, *SAO_PAULO, heading=rng.uniform(0, 360))
    for _ in range(14):
        kmh = rng.uniform(30, 50)
        path.drive(round(rng.uniform(150, 400) / (kmh / 3.6)), kmh)
        if rng.random() < 0.6:
            path.stop(rng.randint(30, 90))  # a red light
        if rng.random() < 0.5:
            path.turn(rng.choice((-90, 90)))
        else:
            path.drive(rng.randint(5, 15), rng.uniform(5, 15))  # crawling in traffic
    receiver = Receiver(rng, sigma_m=3.0, accuracy=accuracy, speed=speed, drift_tau_s=drift_tau_s)
    fixes = sample_every(path, rng, 1, 10, receiver)
    return Track(
        f"urban{'' if accuracy else '-no-accuracy'}{'' if speed else '-no-speed'}",
        fixes,
        path.length_m,
        0.025,
        sends=in_batches(len(fixes), 50),
        note="stop and go, red lights with 5–15 m drift, fixes every 1–10 s",
    )


def highway(seed: int, start: datetime) -> Track:
    """100–120 km/h with gentle curves (radius 1–3 km), a fix a second."""
    rng = random.Random(seed)
    path = Path(start, *BANDEIRANTES, heading=rng.uniform(0, 360))
    for _ in range(6):
        speed = rng.uniform(100, 120)
        path.drive(rng.randint(40, 80), speed)
        radius = rng.uniform(1000, 3000)
        turn = math.degrees(speed / 3.6 / radius) * rng.choice((-1, 1))
        path.drive(rng.randint(20, 50), speed, turn)
    fixes = sample_every(path, rng, 1, 1, Receiver(rng, sigma_m=3.0))
    return Track("highway", fixes, path.length_m, 0.005, sends=in_batches(len(fixes), 100))


def sparse(seed: int, start: datetime) -> Track:
    """A fix every 60–120 s on roads with curves (a tracker saving data). The odometer sums
    chords between fixes, so it is short of the road by construction wherever a curve falls
    between two fixes: the tolerance is against the chords of the noiseless fixes, and the
    shortfall against the road is the note."""
    rng = random.Random(seed)
    path = Path(start, *BANDEIRANTES, heading=rng.uniform(0, 360))
    for _ in range(10):
        speed = rng.uniform(60, 100)
        path.drive(rng.randint(60, 180), speed)
        radius = rng.uniform(300, 1500)
        turn = math.degrees(speed / 3.6 / radius) * rng.choice((-1, 1))
        path.drive(rng.randint(30, 90), speed, turn)
    receiver = Receiver(rng, sigma_m=4.0)
    fixes = sample_every(path, rng, 60, 120, receiver)
    by_time = {s.t: s for s in path.samples}
    chords = length_m([by_time[f.t] for f in fixes])
    shortfall = 1 - chords / path.length_m
    return Track(
        "sparse",
        fixes,
        path.length_m,
        0.005,
        measurable_m=chords,
        sends=[[i] for i in range(len(fixes))],
        note=f"chords {chords:.0f} m of a {path.length_m:.0f} m road: {shortfall:.1%} short",
    )


def parked_night(
    seed: int,
    start: datetime,
    *,
    accuracy: bool = True,
    speed: bool = True,
    hours: float = 8,
    every_s: tuple[float, float] = (60, 300),
) -> Track:
    """Parked overnight: a fix every 60–300 s (or `every_s`: a tracker idling at a dock
    reports every few seconds), each 5–15 m from the car in a direction that wanders, with or
    without accuracy and speed. Truth: 0 m; the odometer may gain at most 50 m."""
    rng = random.Random(seed)
    path = Path(start, *SAO_PAULO, heading=0).stop(int(hours * 3600))
    receiver = Receiver(rng, accuracy=accuracy, speed=speed)
    fixes = sample_every(path, rng, *every_s, receiver)
    kind = "parked-night" if every_s[0] >= 60 else "idling"
    name = f"{kind}{'' if accuracy else '-no-accuracy'}{'' if speed else '-no-speed'}"
    return Track(name, fixes, 0.0, 0.0, abs_tolerance_m=50.0, sends=in_batches(len(fixes), 100))


def tunnel(seed: int, start: datetime) -> Track:
    """A coverage gap: 10 minutes without a fix (a long tunnel, a dead zone on a straight
    road) while driving on at 60 km/h, then fixes again. The odometer bridges the gap with a
    chord: exact on the straight road the gap falls on."""
    rng = random.Random(seed)
    heading = rng.uniform(0, 360)
    path = Path(start, *SAO_PAULO, heading=heading)
    path.drive(120, 50).turn(90, 30).drive(60, 50)
    gap_from = len(path.samples)
    path.drive(600, 60)  # straight, no fixes
    gap_to = len(path.samples)
    path.drive(60, 50).turn(-90, 30).drive(120, 50)
    receiver = Receiver(rng, sigma_m=3.0)
    every = sample_every(path, rng, 2, 5, receiver)
    gap = (path.samples[gap_from].t, path.samples[gap_to].t)
    fixes = [f for f in every if not gap[0] < f.t < gap[1]]
    return Track("tunnel", fixes, path.length_m, 0.01, sends=in_batches(len(fixes), 20))


def store_and_forward(seed: int, start: datetime, *, hours: float = 2.0) -> Track:
    """A tracker out of coverage for `hours` buffers its fixes (every 5 s, urban driving),
    comes back, sends live fixes first, then uploads the buffer in one batch."""
    rng = random.Random(seed)
    path = Path(start, *SAO_PAULO, heading=rng.uniform(0, 360))
    while (path.now.t - start).total_seconds() < hours * 3600:
        speed = rng.uniform(25, 60)
        path.drive(round(rng.uniform(200, 1500) / (speed / 3.6)), speed)
        if rng.random() < 0.4:
            path.stop(rng.randint(20, 60))
        path.turn(rng.choice((-90, -45, 45, 90)))
    live_from = len(path.samples)
    path.drive(600, 50)
    fixes = sample_every(path, rng, 5, 5, Receiver(rng, sigma_m=3.0))
    live_t = path.samples[live_from].t
    buffered = [i for i, f in enumerate(fixes) if f.t < live_t]
    live = [i for i, f in enumerate(fixes) if f.t >= live_t]
    sends = [live[i : i + 10] for i in range(0, len(live), 10)]
    sends += in_batches(len(buffered), 400)  # the buffer, oldest first, as large as allowed
    return Track("store-and-forward", fixes, path.length_m, 0.005, sends=sends)


def border_wander(
    seed: int, start: datetime, centre: tuple[float, float], radius_m: float
) -> Track:
    """Starting 300 m inside a circle, driving out to its border, then five minutes along it
    at 40 km/h on a road that weaves ±15 m across it (a fix a second, the receiver's error on
    top), then out, 600 m beyond. A fence with hysteresis sees one exit, at the end."""
    rng = random.Random(seed)
    receiver = Receiver(rng, sigma_m=4.0, tau_s=20.0, white_m=2.0)
    speed = 40 / 3.6
    bearing0 = rng.uniform(0, 360)
    samples: list[Sample] = []
    t = start

    def at(bearing: float, radius: float) -> None:
        nonlocal t
        lat, lon = destination(*centre, bearing, radius)
        samples.append(Sample(t, lat, lon, speed * 3.6, bearing))
        t += timedelta(seconds=1)

    for step in range(round(300 / speed)):  # out to the border
        at(bearing0, radius_m - 300 + step * speed)
    for step in range(300):  # along it, weaving across
        bearing = bearing0 + math.degrees(step * speed / radius_m)
        at(bearing, radius_m + 15 * math.sin(2 * math.pi * step / 25))
    last = bearing0 + math.degrees(300 * speed / radius_m)
    for step in range(1, round(600 / speed)):  # away
        at(last, radius_m + step * speed)
    fixes = [receiver.see(s) for s in samples]
    return Track("border-wander", fixes, length_m(samples), 0.05, sends=in_batches(len(fixes), 100))


def with_bad_fixes(track: Track, seed: int) -> Track:
    """`track` with bad fixes mixed in, each flagged with the gate that must refuse it:
    (0, 0), a fix dated 1970 and one next year, a teleport of one fix (5 km off the route,
    back on it at the next fix), a position resent 0.5 s later (the same place: a duplicate);
    and a batch sent twice (a tracker that missed the answer: stored once). The good fixes
    and the truth are unchanged."""
    rng = random.Random(seed)
    good = track.fixes
    extra: list[GenFix] = []
    picks = sorted(rng.sample(range(5, len(good) - 5), 4))

    def between(i: int) -> datetime:
        a, b = good[i].t, good[i + 1].t
        return a + (b - a) / 2

    a, b, c, d = picks
    extra.append(GenFix(between(a), 0.0, 0.0, expect="null_island"))
    lat, lon = destination(good[b].lat, good[b].lon, rng.uniform(0, 360), 5000)
    extra.append(GenFix(between(b), lat, lon, accuracy_m=5.0, expect="impossible_speed"))
    extra.append(
        GenFix(
            good[c].t + timedelta(milliseconds=500), good[c].lat, good[c].lon, expect="duplicate"
        )
    )
    first = good[d]
    year_1970 = first.t.replace(year=1970)
    next_year = first.t.replace(year=first.t.year + 1)
    extra.append(replace(first, t=year_1970, expect="too_old"))
    extra.append(replace(first, t=next_year, expect="future"))
    fixes = sorted([*good, *extra], key=lambda f: f.t)
    sends = in_batches(len(fixes), 50)
    sends.insert(2, sends[1])
    return replace(track, name=f"{track.name}+bad", fixes=fixes, sends=sends)


# -- tracks the fold had not seen (issue 10, second round) ------------------------------------


def traffic_lights(seed: int, start: datetime, *, every_s: tuple[float, float] = (1, 3)) -> Track:
    """Stop and go on an avenue with a traffic light every block: 20 blocks of 100–300 m at
    30–60 km/h, a red light of 20–90 s at most of them (the receiver sending 0 km/h while
    its fix drifts 5–15 m, wandering), fixes every 1–3 s (or `every_s`)."""
    rng = random.Random(seed)
    path = Path(start, *SAO_PAULO, heading=rng.uniform(0, 360))
    for _ in range(20):
        kmh = rng.uniform(30, 60)
        path.drive(round(rng.uniform(100, 300) / (kmh / 3.6)), kmh)
        if rng.random() < 0.8:
            path.stop(rng.randint(20, 90))
        if rng.random() < 0.3:
            path.turn(rng.choice((-90, 90)))
    receiver = Receiver(rng, sigma_m=3.0, drift_tau_s=30)
    fixes = sample_every(path, rng, *every_s, receiver)
    return Track("traffic-lights", fixes, path.length_m, 0.01, sends=in_batches(len(fixes), 100))


def parked_multipath(
    seed: int, start: datetime, *, speed: bool = True, in_a_row: bool = False
) -> Track:
    """Parked 8 h (a fix every 1–5 min drifting 5–15 m), with six multipath reflections of
    100–300 m (one fix each, reporting 0 km/h and a good accuracy, as receivers do), then a
    real departure: 5 min through the city at 30–50 km/h, a fix every 10 s. Truth: the
    departure's road; the reflections may be refused (`expect` is then ignored for them:
    `Track.note` names them). `in_a_row`: the six come in three pairs, two fixes in a row
    each reflected somewhere else."""
    rng = random.Random(seed)
    path = Path(start, *SAO_PAULO, heading=rng.uniform(0, 360)).stop(8 * 3600)
    parked_until = path.now.t
    path.drive(100, 40).turn(90, 25).drive(100, 45).turn(-90, 25).drive(80, 35)
    receiver = Receiver(rng, accuracy=True, speed=speed, drift_tau_s=600)
    parked = [s for s in path.samples if s.t <= parked_until]
    moving = [s for s in path.samples if s.t > parked_until]
    fixes: list[GenFix] = []
    i = 0
    while i < len(parked):
        fixes.append(receiver.see(parked[i]))
        i += round(rng.uniform(60, 300))
    # the reflections: one fix each, far off, with a confident accuracy and no speed
    if in_a_row:
        firsts = sorted(rng.sample(range(2, len(fixes) - 3, 4), 3))
        reflected = [k + i for k in firsts for i in (0, 1)]
    else:
        reflected = sorted(rng.sample(range(2, len(fixes) - 2, 3), 6))  # none in a row
    for k in reflected:
        fix = fixes[k]
        lat, lon = destination(fix.lat, fix.lon, rng.uniform(0, 360), rng.uniform(100, 300))
        fixes[k] = replace(fix, lat=round(lat, 7), lon=round(lon, 7), expect="multipath")
    moving = moving[: len(moving) // 10 * 10]  # the road up to its last fix
    fixes += [receiver.see(s) for s in moving[9::10]]
    truth = length_m([parked[-1], *moving])
    return Track(
        f"parked-multipath{'' if speed else '-no-speed'}{'-in-a-row' if in_a_row else ''}",
        fixes,
        truth,
        0.02,
        abs_tolerance_m=50.0,
        sends=in_batches(len(fixes), 20),
        note="six 100–300 m reflections while parked",
    )


def tunnel_jump(seed: int, start: datetime, *, gap_s: int, road_kmh: float) -> Track:
    """A highway at 100 km/h, a fix every 5 s; then no fix for `gap_s` (a tunnel, a dead
    zone) while the vehicle goes on straight at `road_kmh`, and fixes again. The truth is the
    road, straight across the gap: the odometer bridges it with a chord."""
    rng = random.Random(seed)
    path = Path(start, *BANDEIRANTES, heading=rng.uniform(0, 360))
    path.drive(120, 100)
    gap_from = path.now.t
    path.drive(gap_s, road_kmh)
    gap_to = path.now.t
    path.drive(120, 100)
    every = sample_every(path, rng, 5, 5, Receiver(rng, sigma_m=3.0))
    fixes = [f for f in every if not gap_from < f.t < gap_to]
    return Track(f"tunnel-{gap_s}s", fixes, path.length_m, 0.01, sends=in_batches(len(fixes), 10))


def highway_sampled(seed: int, start: datetime, every_s: int) -> Track:
    """40 minutes at 110–130 km/h with gentle curves (radius 2–5 km), a fix every `every_s`
    seconds. The truth the odometer can reach is the chords of the noiseless fixes (at 300 s,
    10 km apart, a curve between two fixes is cut by construction)."""
    rng = random.Random(seed)
    path = Path(start, *BANDEIRANTES, heading=rng.uniform(0, 360))
    while (path.now.t - start).total_seconds() < 2400:
        kmh = rng.uniform(110, 130)
        path.drive(rng.randint(120, 300), kmh)
        turn = math.degrees(kmh / 3.6 / rng.uniform(2000, 5000)) * rng.choice((-1, 1))
        path.drive(rng.randint(30, 90), kmh, turn)
    fixes = sample_every(path, rng, every_s, every_s, Receiver(rng, sigma_m=3.0))
    by_time = {s.t: s for s in path.samples}
    chords = length_m([by_time[f.t] for f in fixes])
    return Track(
        f"highway-{every_s}s",
        fixes,
        path.length_m,
        0.005,
        measurable_m=chords,
        sends=in_batches(len(fixes), max(1, min(100, len(fixes) // 6))),
        note=f"chords {chords:.0f} m of {path.length_m:.0f} m",
    )


def shuffled_sends(track: Track, seed: int) -> Track:
    """The same fixes sent as a tracker with a bad link does: its batches out of order, one
    fix of every batch sent again in the next request (a duplicate), and one batch sent
    twice (re-sent after a timeout whose first attempt was stored)."""
    rng = random.Random(seed)
    sends = [list(b) for b in track.sends or [list(range(len(track.fixes)))]]
    order = list(range(len(sends)))
    for i in range(0, len(order) - 1, 2):  # neighbouring batches swapped
        if rng.random() < 0.7:
            order[i], order[i + 1] = order[i + 1], order[i]
    out = [list(sends[i]) for i in order]
    for i in range(1, len(out)):
        out[i].append(rng.choice(out[i - 1]))
    out.insert(len(out) // 2, list(out[len(out) // 2 - 1]))
    return replace(track, name=f"{track.name}-shuffled", sends=out)


def two_devices(
    seed: int, start: datetime, *, phone_clock_s: float = 1.5, named: bool = False
) -> tuple[Track, list[GenFix]]:
    """One vehicle, two devices: a tracker (a fix every 5 s, accurate clock) and the
    driver's phone app (a fix every 7 s, a less precise receiver, its clock `phone_clock_s`
    behind: it dates each fix that much early). Urban driving at 30–60 km/h. The track is
    both devices' fixes merged (a phone fix on the same device time as a tracker fix is the
    same fix: dropped); the phone's list is returned too. `named`: each fix carries its
    device's tracker id, and the fold follows the tracker (it sends first): every phone fix
    is refused `other_device` and the truth is the road."""
    rng = random.Random(seed)
    path = Path(start, *SAO_PAULO, heading=rng.uniform(0, 360))
    for _ in range(12):
        kmh = rng.uniform(30, 60)
        path.drive(round(rng.uniform(200, 600) / (kmh / 3.6)), kmh)
        if rng.random() < 0.3:
            path.stop(rng.randint(20, 60))
        path.turn(rng.choice((-90, 90)))
    tracker = sample_every(path, rng, 5, 5, Receiver(rng, sigma_m=3.0))
    phone_rx = Receiver(rng, sigma_m=6.0, tau_s=30.0, white_m=1.5)
    skew = timedelta(seconds=phone_clock_s)
    phone = [
        replace(phone_rx.see(s), t=s.t - skew) for s in path.samples[3::7] if s.t - skew >= start
    ]
    if named:
        tracker = [replace(f, device=f"trk-{seed}") for f in tracker]
        phone = [replace(f, device=f"phone-{seed}", expect="other_device") for f in phone]
    taken = {f.t for f in tracker}
    merged = sorted([*tracker, *(f for f in phone if f.t not in taken)], key=lambda f: f.t)
    sends: list[list[int]] = []  # each device sends its own fix as it has it
    index = {f.t: i for i, f in enumerate(merged)}
    arrivals = sorted(
        [(f.t, index[f.t]) for f in tracker]
        + [(f.t + skew, index[f.t]) for f in phone if f.t in index]
    )
    seen: set[int] = set()
    for _, i in arrivals:
        if i not in seen:
            seen.add(i)
            if sends and len(sends[-1]) < 10:
                sends[-1].append(i)
            else:
                sends.append([i])
    name = f"two-devices{'-named' if named else ''}"
    return Track(name, merged, path.length_m, 0.025, sends=sends), phone


def phone_hours_off(seed: int, start: datetime, *, hours: float = 3.0) -> Track:
    """A tracker parked `hours` (a fix every 2 min), then 30 minutes through the city (a fix
    every 5 s); the driver's phone app, its clock `hours` behind (local time sent as UTC),
    sends the drive every 7 s dated back among the tracker's parked fixes. Each device names
    itself (`tracker_id`): every phone fix is refused `other_device`, the truth is the road."""
    rng = random.Random(seed)
    path = Path(start, *SAO_PAULO, heading=rng.uniform(0, 360)).stop(round(hours * 3600))
    parked_until = path.now.t
    while (path.now.t - parked_until).total_seconds() < 1800:
        kmh = rng.uniform(30, 60)
        path.drive(round(rng.uniform(200, 600) / (kmh / 3.6)), kmh)
        if rng.random() < 0.3:
            path.stop(rng.randint(20, 60))
        path.turn(rng.choice((-90, 90)))
    receiver = Receiver(rng, sigma_m=3.0, drift_tau_s=600)
    parked = [s for s in path.samples if s.t <= parked_until]
    moving = [s for s in path.samples if s.t > parked_until]
    tracker = [receiver.see(s) for s in parked[::120]] + [receiver.see(s) for s in moving[::5]]
    phone_rx = Receiver(rng, sigma_m=6.0, tau_s=30.0, white_m=1.5)
    back = timedelta(hours=hours)
    phone = [
        replace(phone_rx.see(s), t=s.t - back, device=f"phone-{seed}", expect="other_device")
        for s in moving[3::7]
    ]
    taken = {f.t for f in tracker}
    tracker = [replace(f, device=f"trk-{seed}") for f in tracker]
    fixes = sorted([*tracker, *(f for f in phone if f.t not in taken)], key=lambda f: f.t)
    index = {f.t: i for i, f in enumerate(fixes)}
    # Sent as they come: the parked fixes first, then both devices' fixes of the drive.
    arrivals = sorted(
        [(f.t, index[f.t]) for f in tracker]
        + [(f.t + back, index[f.t]) for f in phone if f.t not in taken]
    )
    order = [i for _, i in arrivals]
    sends = [order[i : i + 10] for i in range(0, len(order), 10)]
    truth = length_m([parked[-1], *moving])
    return Track(f"phone-{hours:g}h-off", fixes, truth, 0.025, sends=sends)


def replaced_tracker(seed: int, start: datetime, *, handover_s: float = 600.0) -> Track:
    """A tracker replaced at the workshop: 10 minutes through the city with the old one (a
    fix every 5 s); parked 30 minutes, the old one still sending every minute until it is
    unplugged 15 minutes in, the new one sending every 30 s from 5 minutes in (both on for
    10 minutes); then 10 minutes through the city with the new one. The new one's fixes are
    refused `other_device` until the old one has been silent `handover_s`; the truth is the
    road."""
    rng = random.Random(seed)
    path = Path(start, *SAO_PAULO, heading=rng.uniform(0, 360))

    def city(seconds: int) -> None:
        begin = path.now.t
        while (path.now.t - begin).total_seconds() < seconds:
            kmh = rng.uniform(30, 50)
            path.drive(round(rng.uniform(150, 400) / (kmh / 3.6)), kmh)
            path.turn(rng.choice((-90, 90)))

    city(600)
    parked_from = path.now.t
    path.stop(1800)
    parked_until = path.now.t
    city(600)
    unplugged = parked_from + timedelta(minutes=15)
    plugged = parked_from + timedelta(minutes=5)
    old_rx, new_rx = Receiver(rng, drift_tau_s=600), Receiver(rng, drift_tau_s=600)
    old = [
        replace(old_rx.see(s), device=f"old-{seed}")
        for i, s in enumerate(path.samples)
        if (s.t <= parked_from and i % 5 == 0)
        or (parked_from < s.t <= unplugged and (s.t - parked_from).seconds % 60 == 0)
    ]
    last_old = old[-1].t
    new = []
    for i, s in enumerate(path.samples):
        parked = plugged <= s.t <= parked_until and (s.t - plugged).seconds % 30 == 0
        if parked or (s.t > parked_until and i % 5 == 0):
            fix = replace(new_rx.see(s), device=f"new-{seed}")
            held = (fix.t - last_old).total_seconds() < handover_s
            new.append(replace(fix, expect="other_device" if held else None))
    taken = {f.t for f in old}
    fixes = sorted([*old, *(f for f in new if f.t not in taken)], key=lambda f: f.t)
    return Track("replaced-tracker", fixes, path.length_m, 0.025, sends=in_batches(len(fixes), 10))


def through(
    waypoints: Sequence[tuple[float, float]], start: datetime, kmh: float, every_s: int = 1
) -> list[Sample]:
    """A noiseless drive along straight legs between `waypoints` (lat, lon) at `kmh`, a
    sample every `every_s` seconds (legs of a few kilometres: each is interpolated in a
    local flat projection)."""
    samples: list[Sample] = []
    t = start
    step = kmh / 3.6 * every_s
    for (lat1, lon1), (lat2, lon2) in itertools.pairwise(waypoints):
        metres = haversine_m(lat1, lon1, lat2, lon2)
        heading = (
            math.degrees(math.atan2((lon2 - lon1) * math.cos(math.radians(lat1)), lat2 - lat1))
            % 360
        )
        for i in range(max(1, round(metres / step))):
            k = i * step / metres
            samples.append(
                Sample(t, lat1 + k * (lat2 - lat1), lon1 + k * (lon2 - lon1), kmh, heading)
            )
            t += timedelta(seconds=every_s)
    lat, lon = waypoints[-1]
    samples.append(Sample(t, lat, lon, kmh, samples[-1].heading if samples else 0.0))
    return samples
