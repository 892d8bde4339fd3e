"""Geofence evaluation, pure: the geometry (distances, validation) and the hysteresis that
turns noisy fixes into one crossing per real crossing."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import InvalidPayload
from gateway.fleet.geofences import Crossing, FenceState, Geofence, step
from gateway.fleet.geometry import (
    EARTH_RADIUS_M,
    Circle,
    Polygon,
    circle_from,
    haversine_m,
    polygon_from,
    shape_from,
)
from tests import tracks

TRACK = Path(__file__).parent / "data" / "tracks" / "route1.geojson"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
M_PER_DEG_LAT = math.radians(1) * EARTH_RADIUS_M


def track() -> list[list[float]]:
    coordinates: list[list[float]] = json.loads(TRACK.read_text())["geometry"]["coordinates"]
    return coordinates


def north(lon: float, lat: float, metres: float) -> tuple[float, float]:
    return lon, lat + metres / M_PER_DEG_LAT


def square(lon: float, lat: float, half_deg: float) -> list[list[float]]:
    return [
        [lon - half_deg, lat - half_deg],
        [lon + half_deg, lat - half_deg],
        [lon + half_deg, lat + half_deg],
        [lon - half_deg, lat + half_deg],
        [lon - half_deg, lat - half_deg],
    ]


def run(
    fence: Geofence, fixes: Iterable[tuple[float, float, float | None]], every_s: float = 5
) -> list[Crossing]:
    """Feed (lon, lat, accuracy) fixes in order, the state going through its document each
    time as the fold persists it; the crossings confirmed."""
    state: FenceState | None = None
    crossings = []
    for i, (lon, lat, accuracy) in enumerate(fixes):
        at = T0 + timedelta(seconds=i * every_s)
        state, crossing = step(fence, state, lat, lon, accuracy, at)
        state = FenceState.from_doc(state.to_doc())
        if crossing is not None:
            crossings.append(crossing)
    return crossings


def test_haversine_gives_the_shared_tracks_length() -> None:
    points = track()
    length = sum(haversine_m(a[1], a[0], b[1], b[0]) for a, b in itertools.pairwise(points))
    assert round(length) == 325_737
    assert haversine_m(0, 0, 0, 1) == pytest.approx(math.radians(1) * EARTH_RADIUS_M)


def test_circle_distance_is_negative_inside_and_metres_to_the_border() -> None:
    circle = Circle(lat=-23.55, lon=-46.63, radius_m=500)
    assert circle.signed_distance_m(-23.55, -46.63) == pytest.approx(-500)
    lon, lat = north(-46.63, -23.55, 800)
    assert circle.signed_distance_m(lat, lon) == pytest.approx(300, abs=0.01)


def test_polygon_distance_counts_holes_as_outside() -> None:
    outer = square(-46.63, -23.55, 0.01)  # about 2.2 km a side
    hole = square(-46.63, -23.55, 0.002)[::-1]
    polygon = polygon_from({"type": "Polygon", "coordinates": [outer, hole]})
    # the centre is in the hole: outside, nearest to the hole's east and west sides
    to_side = haversine_m(-23.55, -46.63, -23.55, -46.628)
    assert polygon.signed_distance_m(-23.55, -46.63) == pytest.approx(to_side, 1e-3)
    # between the hole and the exterior border: inside
    lon, lat = north(-46.63, -23.55, 0.006 * M_PER_DEG_LAT)
    assert polygon.signed_distance_m(lat, lon) == pytest.approx(-0.004 * M_PER_DEG_LAT, 1e-3)
    # beyond the exterior border, measured across the projection to within a metre
    lon, lat = north(-46.63, -23.55, 0.011 * M_PER_DEG_LAT)
    assert polygon.signed_distance_m(lat, lon) == pytest.approx(0.001 * M_PER_DEG_LAT, abs=1)


def test_polygon_distance_agrees_with_haversine_at_fence_scale() -> None:
    polygon = polygon_from({"type": "Polygon", "coordinates": [square(-79.0, 37.6, 0.05)]})
    # a point due east of the east border: the distance along a parallel
    expected = haversine_m(37.6, -78.95, 37.6, -78.94)
    assert polygon.signed_distance_m(37.6, -78.94) == pytest.approx(expected, rel=2e-3)


def border_fence(segment: list[list[float]], **overrides: object) -> Geofence:
    """A polygon whose northern border is the track segment itself; its inside is south."""
    south = min(p[1] for p in segment) - 0.02
    ring = [*segment, [segment[-1][0], south], [segment[0][0], south], segment[0]]
    fields: dict[str, object] = {
        "id": "f1",
        "name": "yard",
        "kind": "authorized",
        "shape": polygon_from({"type": "Polygon", "coordinates": [ring]}),
        **overrides,
    }
    return Geofence(**fields)  # type: ignore[arg-type]


def test_a_track_wandering_along_the_border_with_gps_noise_exits_once() -> None:
    segment = track()[2100:2251]  # 6.3 km heading east, longitudes increasing
    fence = border_fence(segment)
    rng = random.Random(10)
    noise_m = 6.0  # per axis: a good receiver reports about 10 m accuracy (95%)
    lead_in = [(*north(*segment[0], -300 + 20 * i), 10.0) for i in range(5)]
    along: list[tuple[float, float, float | None]] = []
    for k, (lon, lat) in enumerate(segment):
        dlon = rng.gauss(0, noise_m) / (M_PER_DEG_LAT * math.cos(math.radians(lat)))
        dlat = rng.gauss(0, noise_m) / M_PER_DEG_LAT
        along.append((lon + dlon, lat + dlat, None if k % 7 == 0 else 10.0))
    lead_out = [(*north(*segment[-1], 100 + 50 * i), 10.0) for i in range(5)]

    crossings = run(fence, [*lead_in, *along, *lead_out])

    # the naive rule (inside = distance < 0) would flap all along the border
    signs = [fence.signed_distance_m(lat, lon) < 0 for lon, lat, _ in along]
    assert sum(a != b for a, b in itertools.pairwise(signs)) >= 20
    assert [c.kind for c in crossings] == ["exited"]
    assert crossings[0].at >= T0 + timedelta(seconds=5 * (5 + len(along)))


def test_the_first_fix_sets_the_state_without_a_crossing() -> None:
    fence = Geofence("f", "depot", "authorized", Circle(-23.55, -46.63, 500))
    far = north(-46.63, -23.55, 5_000)
    assert run(fence, [(*far, 5.0), (*far, 5.0)]) == []
    state, crossing = step(fence, None, -23.55, -46.63, None, T0)
    assert (state.inside, crossing) == (True, None)


def test_leaving_needs_the_margin_plus_the_accuracy() -> None:
    fence = Geofence("f", "depot", "authorized", Circle(-23.55, -46.63, 500), margin_m=25)
    inside = FenceState(inside=True)
    lon, lat = north(-46.63, -23.55, 560)  # 60 m outside the border
    assert step(fence, inside, lat, lon, 50.0, T0)[1] is None  # 60 < 25 + 50: not sure yet
    state, crossing = step(fence, inside, lat, lon, 20.0, T0)  # 60 > 25 + 20
    assert crossing == Crossing("exited", T0, lat, lon)
    assert state.inside is False
    # coming back needs to be inside by the margin plus the accuracy too
    lon, lat = north(-46.63, -23.55, 490)
    assert step(fence, state, lat, lon, 1.0, T0)[1] is None
    lon, lat = north(-46.63, -23.55, 470)
    assert step(fence, state, lat, lon, 1.0, T0)[1] == Crossing("entered", T0, lat, lon)


def test_entering_needs_the_margin_plus_the_accuracy_as_leaving_does() -> None:
    """A fix 50 m inside a restricted area that reports 150 m of accuracy may well be
    outside it: it is no entry. The same point reported with 20 m is one (50 > 25 + 20)."""
    fence = Geofence("f", "quarry", "restricted", Circle(-23.55, -46.63, 2_000), margin_m=25)
    outside = FenceState(inside=False)
    lon, lat = north(-46.63, -23.55, 1_950)  # 50 m inside the border
    assert step(fence, outside, lat, lon, 150.0, T0) == (outside, None)
    assert step(fence, outside, lat, lon, 30.0, T0) == (outside, None)  # 50 < 25 + 30
    assert step(fence, outside, lat, lon, 20.0, T0)[1] == Crossing("entered", T0, lat, lon)
    lon, lat = north(-46.63, -23.55, 1_800)  # 200 m in: sure even at 150 m
    assert step(fence, outside, lat, lon, 150.0, T0)[1] == Crossing("entered", T0, lat, lon)


def test_a_small_fence_is_entered_only_with_the_accuracy_circle_inside_it() -> None:
    """A 50 m bay with the 25 m margin: too small for margin plus accuracy, so a fix enters
    it when it is more than half the bay's depth in and its accuracy circle lies within the
    bay; a fix less accurate than the bay is deep never enters it, even at its centre."""
    fence = Geofence("f", "bay", "restricted", Circle(-23.55, -46.63, 50), margin_m=25)
    outside = FenceState(inside=False)
    lon, lat = north(-46.63, -23.55, 20)  # 30 m in
    assert step(fence, outside, lat, lon, None, T0)[1] == Crossing("entered", T0, lat, lon)
    assert step(fence, outside, lat, lon, 0.0, T0)[1] == Crossing(
        "entered", T0, lat, lon
    )  # unknown
    assert step(fence, outside, lat, lon, 25.0, T0)[1] == Crossing("entered", T0, lat, lon)
    assert step(fence, outside, lat, lon, 35.0, T0)[1] is None  # 30 < 35
    assert step(fence, outside, -23.55, -46.63, 49.0, T0)[1] == Crossing(
        "entered", T0, -23.55, -46.63
    )
    assert step(fence, outside, -23.55, -46.63, 60.0, T0)[1] is None
    # a polygon bay as well (about 56 m square: 28 m deep)
    bay = Geofence("p", "bay", "restricted", polygon_from(
        {"type": "Polygon", "coordinates": [square(-46.63, -23.55, 0.00025)]}
    ))  # fmt: skip
    assert step(bay, outside, -23.55, -46.63, 10.0, T0)[1] == Crossing(
        "entered", T0, -23.55, -46.63
    )
    assert step(bay, outside, -23.55, -46.63, 40.0, T0)[1] is None


def test_a_dwell_ignores_a_short_excursion_and_dates_a_long_one_from_its_start() -> None:
    fence = Geofence("f", "depot", "authorized", Circle(-23.55, -46.63, 500), dwell_s=60)
    centre = (-46.63, -23.55, 5.0)
    out = (*north(-46.63, -23.55, 700), 5.0)
    # out for 30 s (fixes every 10 s), then back: nothing
    assert run(fence, [centre, out, out, out, out, centre, centre], every_s=10) == []
    # out for 60 s: one exit, dated and placed where the vehicle left (the second fix), not
    # at the fix 60 s later that confirms it (farther on)
    farther = [(*north(-46.63, -23.55, 700 + 100 * i), 5.0) for i in range(6)]
    crossings = run(fence, [centre, out, *farther, *farther[-1:]], every_s=10)
    assert crossings == [Crossing("exited", T0 + timedelta(seconds=10), out[1], out[0])]


def test_a_restricted_area_reports_entering_and_leaving() -> None:
    fence = Geofence("f", "quarry", "restricted", Circle(-23.55, -46.63, 200))
    away = (*north(-46.63, -23.55, 1_000), 5.0)
    centre = (-46.63, -23.55, 5.0)
    assert [c.kind for c in run(fence, [away, centre, centre, away])] == ["entered", "exited"]


def test_a_fence_applies_to_its_plates_and_group_or_to_everyone() -> None:
    shape = Circle(0, 0, 10)
    assert Geofence("f", "all", "authorized", shape).applies_to("ABC1D23", [])
    fence = Geofence(
        "f", "some", "authorized", shape, vehicles=frozenset({"ABC1D23"}), group="north"
    )
    assert fence.applies_to("ABC1D23", [])
    assert fence.applies_to("XYZ9A87", ["north", "vans"])
    assert not fence.applies_to("XYZ9A87", ["south"])


def test_fence_state_survives_its_document() -> None:
    state = FenceState(inside=True, candidate=False, candidate_since=T0, candidate_at=(1.5, 2.5))
    assert FenceState.from_doc(state.to_doc()) == state
    naive = {**state.to_doc(), "candidate_since": T0.replace(tzinfo=None)}
    assert FenceState.from_doc(naive) == state


def test_a_candidate_kept_before_its_place_was_is_placed_at_the_confirming_fix() -> None:
    """A state written before the candidate's place was kept (no `candidate_at`): the
    crossing is still dated at the candidate's start, placed at the fix that confirms it."""
    fence = Geofence("f", "depot", "authorized", Circle(-23.55, -46.63, 500), dwell_s=60)
    old = {"inside": True, "candidate": False, "candidate_since": T0}
    lon, lat = north(-46.63, -23.55, 900)
    state = FenceState.from_doc(old)
    assert state.candidate_at is None
    later = T0 + timedelta(seconds=60)
    assert step(fence, state, lat, lon, 5.0, later)[1] == Crossing("exited", T0, lat, lon)


@pytest.mark.parametrize(
    ("ring", "pointer", "words"),
    [
        ([[0, 0], [1, 0], [1, 1], [0, 1]], "/polygon/coordinates/0", "does not close"),
        ([[0, 0], [1, 0], [0, 0]], "/polygon/coordinates/0", "at least 4 positions"),
        ([[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]], "/polygon/coordinates/0", "intersects itself"),
        ([[0, 0], [2, 0], [1, 0], [1, 1], [0, 0]], "/polygon/coordinates/0", "intersects itself"),
        ([[0, 0], [1, 0], [2, 0], [0, 0]], "/polygon/coordinates/0", "intersects itself"),
        ([[0, 0], [1, 0], [1, 0], [0, 0]], "/polygon/coordinates/0", "no area"),
        ([[0, 0], [1, 0], [1, 91], [0, 0]], "/polygon/coordinates/0/2/1", "latitude"),
        ([[0, 0], [181, 0], [1, 1], [0, 0]], "/polygon/coordinates/0/1/0", "longitude"),
        ([[0, 0], [1, 0], [1, True], [0, 0]], "/polygon/coordinates/0/2/1", "latitude"),
        ([[0, 0], [1, 0], [1, 1, 2, 3], [0, 0]], "/polygon/coordinates/0/2", "position"),
        ([[0, 0], [30, 0], [30, 1], [0, 0]], "/polygon/coordinates/0", "spans at most"),
    ],
)
def test_a_bad_polygon_is_refused_naming_where(ring: object, pointer: str, words: str) -> None:
    with pytest.raises(InvalidPayload) as refused:
        polygon_from({"type": "Polygon", "coordinates": [ring]})
    problem = refused.value.problems[0]
    assert problem.pointer == pointer
    assert words in problem.message


def test_a_hole_must_sit_inside_and_not_cross_the_exterior() -> None:
    outer = square(0, 0, 1)
    crossing_hole = square(1, 0, 0.5)
    with pytest.raises(InvalidPayload, match="cross"):
        polygon_from({"type": "Polygon", "coordinates": [outer, crossing_hole]})
    with pytest.raises(InvalidPayload, match="inside the exterior") as refused:
        polygon_from({"type": "Polygon", "coordinates": [outer, square(5, 5, 0.5)]})
    assert refused.value.problems[0].pointer == "/polygon/coordinates/1"


@pytest.mark.parametrize(
    ("circle", "pointer"),
    [
        ({"lat": 0, "lon": 0, "radius_m": 0}, "/circle/radius_m"),
        ({"lat": 0, "lon": 0, "radius_m": -5}, "/circle/radius_m"),
        ({"lat": 0, "lon": 0, "radius_m": 5e6}, "/circle/radius_m"),
        ({"lat": 91, "lon": 0, "radius_m": 10}, "/circle/lat"),
        ({"lat": 0, "lon": -180.5, "radius_m": 10}, "/circle/lon"),
        ({"lat": float("nan"), "lon": 0, "radius_m": 10}, "/circle/lat"),
        ({"lat": 0, "lon": 0}, "/circle/radius_m"),
    ],
)
def test_a_bad_circle_is_refused_naming_the_field(circle: object, pointer: str) -> None:
    with pytest.raises(InvalidPayload) as refused:
        circle_from(circle)
    assert refused.value.problems[0].pointer == pointer


def test_a_polygon_keeps_its_rings_through_its_document() -> None:
    doc = {"type": "Polygon", "coordinates": [square(10, 10, 0.1)]}
    polygon = polygon_from(doc)
    assert polygon.to_doc() == doc
    assert Polygon([[tuple(p) for p in doc["coordinates"][0]]]) == polygon


def test_the_quick_bound_never_overstates_how_far_outside_a_point_is() -> None:
    outer = square(-46.63, -23.55, 0.01)
    hole = square(-46.63, -23.55, 0.002)[::-1]
    polygon = polygon_from({"type": "Polygon", "coordinates": [outer, hole]})
    circle = Circle(-23.55, -46.63, 900)
    rng = random.Random(3)
    for _ in range(2_000):
        lat, lon = -23.55 + rng.uniform(-0.05, 0.05), -46.63 + rng.uniform(-0.05, 0.05)
        for shape in (polygon, circle):
            exact = shape.signed_distance_m(lat, lon)
            bound = shape.outside_by_at_least_m(lat, lon)
            assert bound <= max(exact, 0.0) + 1e-6
            if bound > 0:
                assert exact > 0


def comb(teeth: int) -> list[list[float]]:
    """A valid ring of 4·teeth + 4 positions: thin teeth hanging from a spine."""
    ring: list[list[float]] = []
    for i in range(teeth):
        x = i * 0.002
        ring += [[x, 0.0], [x, -0.5], [x + 0.001, -0.5], [x + 0.001, 0.0]]
    end = teeth * 0.002
    return [*ring, [end, 0.0], [end, 0.1], [0.0, 0.1], [0.0, 0.0]]


def test_a_polygon_may_have_up_to_2000_positions() -> None:
    ring = comb(499)
    assert len(ring) == 2_000
    polygon = polygon_from({"type": "Polygon", "coordinates": [ring]})
    assert polygon.signed_distance_m(-0.25, 0.0005) < 0  # in the first tooth
    assert polygon.signed_distance_m(-0.25, 0.0015) > 0  # between the first two
    bigger = comb(500)
    with pytest.raises(InvalidPayload, match="at most 2000 positions"):
        polygon_from({"type": "Polygon", "coordinates": [bigger]})


def room(shape: Circle | Polygon, lat: float, lon: float) -> float:
    """The radius of the largest circle inside the shape covering the point (bisected with
    `holds_circle_around`, which answers to ~4 %, erring towards "it holds one")."""
    depth = -shape.signed_distance_m(lat, lon)
    low, high = 0.0, 1e6
    for _ in range(40):
        middle = (low + high) / 2
        holds = shape.holds_circle_around(lat, lon, middle, depth)
        low, high = (middle, high) if holds else (low, middle)
    return low


def test_the_room_round_a_fix_is_the_largest_circle_covering_it() -> None:
    """How narrow a fence is where a fix is (`holds_circle_around`): the largest circle inside
    it that covers the fix. A circle's radius, anywhere in it; a square of side 2·s deg → s
    deg at its middle; a thin strip slanted across its bounding box → half its width; a ring
    around a hole → at its corners, the circle there."""
    circle = Circle(-23.5, -46.6, 20.0)
    for east in (0.0, 15.0):
        lat, lon = tracks.offset(-23.5, -46.6, east, 0.0)
        assert circle.holds_circle_around(lat, lon, 20.0, 20.0 - east)
        assert not circle.holds_circle_around(lat, lon, 20.01, 20.0 - east)
    half = 0.001
    deep = polygon_from({"type": "Polygon", "coordinates": [square(-46.6, 0.0, half)]})
    assert room(deep, 0.0, -46.6) == pytest.approx(half * M_PER_DEG_LAT, rel=0.05)
    strip = [[-46.6, -23.5], [-46.59, -23.49], [-46.59, -23.4899], [-46.6, -23.4999]]
    slanted = polygon_from({"type": "Polygon", "coordinates": [[*strip, strip[0]]]})
    # the strip is 0.0001 deg of latitude high, slanted at 45 deg: ~7.9 m across
    width = 0.0001 * M_PER_DEG_LAT / math.sqrt(2)
    assert room(slanted, -23.49495, -46.595) == pytest.approx(width / 2, rel=0.05)
    ringed = polygon_from(
        {"type": "Polygon", "coordinates": [square(-46.6, 0.0, 2 * half), square(-46.6, 0.0, half)]}
    )
    # in a corner of the ring, on the diagonal: (2 - √2)·s from both borders
    corner = (2 - math.sqrt(2)) * half
    at = (-2 * half + corner, -46.6 - 2 * half + corner)
    assert room(ringed, *at) == pytest.approx(corner * M_PER_DEG_LAT, rel=0.05)
    # along its side, the band's half width
    assert room(ringed, -1.5 * half, -46.6) == pytest.approx(half / 2 * M_PER_DEG_LAT, rel=0.05)


def test_a_multipolygon_of_far_apart_parts_is_as_deep_as_its_deepest_part() -> None:
    """Two depots 10° apart in one fence: the depth search gridded the whole shape's box and
    never landed in a part (depth 0), so a fix 15 m inside a depot's border (accuracy 10 m,
    margin 25 m) entered it, where the same depot as a Polygon keeps it in the band."""
    depot = square(-50.0, -20.0, 0.005)
    alone = polygon_from({"type": "Polygon", "coordinates": [depot]})
    both = polygon_from(
        {"type": "MultiPolygon", "coordinates": [[depot], [square(-40.0, -10.0, 0.005)]]}
    )
    # 3 % apart: the fence is projected round its whole's middle, 5° from the depot's
    assert room(both, -20.0, -50.0) == pytest.approx(room(alone, -20.0, -50.0), rel=0.05)
    assert both.holds_circle_around(-20.0, -50.0, 128, -both.signed_distance_m(-20.0, -50.0))
    south = -20.0 - 0.005 + 15 / M_PER_DEG_LAT  # 15 m in from the depot's southern border
    at = datetime(2026, 12, 6, 12, tzinfo=UTC)
    for shape in (alone, both):
        fence = Geofence("f", "depot", "restricted", shape, margin_m=25.0)
        state, _ = step(fence, None, -20.02, -50.0, 10.0, at)  # well outside
        assert step(fence, state, south, -50.0, 10.0, at)[1] is None


def box(west: float, south: float, east: float, north: float) -> list[list[float]]:
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


# An area round Taveuni (Fiji) across 180°, cut there in two (RFC 7946 §3.1.9).
TAVEUNI_WEST = box(179.80, -16.95, 180.0, -16.70)
TAVEUNI_EAST = box(-180.0, -16.95, -179.80, -16.70)


def test_an_area_cut_at_the_antimeridian_is_one_fence_without_a_border_at_the_cut() -> None:
    """A MultiPolygon of the two halves: inside any half is inside, and at the cut the
    distance is to the area's real border (its southern and northern edges, 0.125° away),
    not to the cut, on either side of it; the area is as deep as a whole. A vehicle driving
    east across the line inside it crosses nothing; leaving by the eastern border, it exits
    once. Each half as a fence of its own is left at the line."""
    area = polygon_from({"type": "MultiPolygon", "coordinates": [[TAVEUNI_WEST], [TAVEUNI_EAST]]})
    half_lat_m = 0.125 * M_PER_DEG_LAT
    for lon in (179.95, 179.9999, 180.0, -180.0, -179.9999, -179.95):
        assert area.signed_distance_m(-16.825, lon) == pytest.approx(-half_lat_m, rel=1e-6)
    assert area.signed_distance_m(-16.825, -179.70) > 10_000  # east of the area
    assert room(area, -16.825, 180.0) == pytest.approx(half_lat_m, rel=0.05)
    west = polygon_from({"type": "Polygon", "coordinates": [TAVEUNI_WEST]})
    assert -20 < west.signed_distance_m(-16.825, 179.9999) < 0
    points = [tracks.destination(-16.82, 179.9, 90, 200 * i) for i in range(175)]
    road = [(lon, lat, 5.0) for lat, lon in points]  # east, 35 km: to -179.77°
    fence = Geofence("t", "Taveuni", "authorized", area)
    [exited] = run(fence, road)
    assert exited.kind == "exited" and -179.80 < exited.lon < -179.79
    west_half = Geofence("w", "w", "authorized", west)
    [cut] = run(west_half, road)  # a fence of its own: left at 180°, inside the area
    assert cut.kind == "exited" and cut.lon < -179.99


def test_a_multipolygons_holes_and_islands_are_respected() -> None:
    """A hole in one polygon is outside; a polygon in another's hole (an island in a lake)
    is inside."""
    lake = box(-46.70, -23.60, -46.60, -23.50)
    island = box(-46.66, -23.56, -46.64, -23.54)
    coordinates = [[box(-46.80, -23.70, -46.50, -23.40), lake], [island]]
    area = polygon_from({"type": "MultiPolygon", "coordinates": coordinates})
    assert area.signed_distance_m(-23.45, -46.75) < 0  # on land
    assert area.signed_distance_m(-23.52, -46.62) > 0  # in the lake
    assert area.signed_distance_m(-23.55, -46.65) < 0  # on the island
    to_shore = 0.01 * M_PER_DEG_LAT * math.cos(math.radians(23.55))  # east or west: 1,019 m
    assert area.signed_distance_m(-23.55, -46.65) == pytest.approx(-to_shore, rel=1e-3)


def test_a_multipolygon_keeps_its_polygons_through_its_document() -> None:
    doc = {"type": "MultiPolygon", "coordinates": [[TAVEUNI_WEST], [TAVEUNI_EAST]]}
    area = polygon_from(doc)
    assert area.to_doc() == doc
    assert shape_from({"polygon": doc}) == area
    one = {"type": "MultiPolygon", "coordinates": [[square(10, 10, 0.1)]]}
    assert polygon_from(one).to_doc() == one  # a MultiPolygon of one polygon stays one
    assert polygon_from(one) != polygon_from(
        {"type": "Polygon", "coordinates": one["coordinates"][0]}
    )


@pytest.mark.parametrize(
    ("coordinates", "pointer", "words"),
    [
        ([], "/polygon/coordinates", "non-empty array of polygons"),
        ([[]], "/polygon/coordinates/0", "non-empty array of linear rings"),
        ([[square(0, 0, 1)], [square(5, 5, 1)[:-1]]], "/polygon/coordinates/1/0", "does not close"),
        ([[square(0, 0, 1)], [[[5, 5], [6, 5], [6, 91], [5, 5]]]], "/polygon/coordinates/1/0/2/1",
         "latitude"),
        ([[box(179.9, 0, -179.9, 1)]], "/polygon/coordinates/0/0", "antimeridian"),
        ([[square(0, 0, 1)], [square(25, 0, 1)]], "/polygon/coordinates", "spans at most"),
        ([[box(179, 0, 180, 1)], [box(-170, 0, -160, 1)]], "/polygon/coordinates", "spans at most"),
        ([[square(0, 0, 1)], [square(1, 0, 1)]], "/polygon/coordinates/1", "cross or touch"),
        ([[box(0, 0, 1, 1)], [box(1, 0, 2, 1)]], "/polygon/coordinates/1", "cross or touch"),
        ([[box(0, 0, 1, 1)], [box(1, 1, 2, 2)]], "/polygon/coordinates/1", "cross or touch"),
        ([[square(0, 0, 1)], [square(0, 0, 1)]], "/polygon/coordinates/1", "cross or touch"),
        ([[box(179, 0, 180, 1)], [box(179, 1, 180, 2)]], "/polygon/coordinates/1",
         "cross or touch"),
        ([[square(0, 0, 1)], [square(0, 0, 0.2)]], "/polygon/coordinates/1", "lies inside"),
        ([[square(0, 0, 0.2)], [square(0, 0, 1)]], "/polygon/coordinates/0", "lies inside"),
        ([[comb(250)], [comb(250)]], "/polygon/coordinates", "at most 2000 positions"),
    ],
)  # fmt: skip
def test_a_bad_multipolygon_is_refused_naming_where(
    coordinates: object, pointer: str, words: str
) -> None:
    """Its polygons are checked as polygons, their positions and extent counted together,
    and they must not cross, touch or lie in one another: only the halves of an area cut at
    the antimeridian, one each side of it, meet (on it)."""
    with pytest.raises(InvalidPayload) as refused:
        polygon_from({"type": "MultiPolygon", "coordinates": coordinates})
    problem = refused.value.problems[0]
    assert (problem.pointer, words in problem.message) == (pointer, True), problem.message


def test_a_geojson_feature_or_collection_is_refused_on_its_type() -> None:
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [TAVEUNI_WEST]}}
    for value in (feature, {"type": "GeometryCollection", "geometries": []}, None, []):
        with pytest.raises(InvalidPayload, match=r"Polygon.*MultiPolygon") as refused:
            polygon_from(value)
        assert refused.value.problems[0].pointer == "/polygon/type"


def test_a_fix_between_far_parts_of_a_multipolygon_is_spared_the_walk_over_its_edges() -> None:
    """Two depots 2° apart in one fence: a fix on the road between them is outside both
    parts' boxes, so its cheap bound says how far (the fold skips the edge walk for it, as
    for a fix far from a fence). The bound of the whole shape's box was 0 for it (rev23 F4:
    9 times the cost a fix of the same parts as two fences)."""
    depots = polygon_from(
        {
            "type": "MultiPolygon",
            "coordinates": [[square(-46.0, -23.0, 0.01)], [square(-44.0, -23.0, 0.01)]],
        }
    )
    between = depots.outside_by_at_least_m(-23.0, -45.0)
    assert between > 90_000  # ~1° of longitude less a depot's half-width, at 23° S
    assert between <= depots.signed_distance_m(-23.0, -45.0)
    assert depots.outside_by_at_least_m(-23.0, -46.0) == 0.0  # within a part's box


def test_a_multipolygon_measures_every_fix_as_its_nearest_part_does() -> None:
    """Depots of a fleet as one fence, one with a yard (a hole): for fixes in and between
    them, the fence's distance is its nearest part's, inside any part negative, in a hole
    outside. Parts far from a fix are not walked (rev25 F2); none that decides is left out."""
    centres = [(-48.0 + 0.5 * (i % 7), -24.0 + 0.5 * (i // 7)) for i in range(21)]
    yard = square(*centres[0], 0.002)
    parts = [[square(lon, lat, 0.01)] for lon, lat in centres]
    parts[0].append(yard[::-1])
    fence = polygon_from({"type": "MultiPolygon", "coordinates": parts})
    alone = [polygon_from({"type": "Polygon", "coordinates": rings}) for rings in parts]
    rng = random.Random(25)
    fixes = [
        (lat + rng.uniform(-0.03, 0.03), lon + rng.uniform(-0.03, 0.03)) for lon, lat in centres
    ]
    fixes += [(rng.uniform(-24.5, -22.5), rng.uniform(-48.5, -44.5)) for _ in range(200)]
    fixes += [(centres[0][1] + 0.001, centres[0][0])]  # in the yard
    for lat, lon in fixes:
        expected = min(part.signed_distance_m(lat, lon) for part in alone)
        got = fence.signed_distance_m(lat, lon)
        assert (got <= 0) == (expected <= 0), (lat, lon)
        assert got == pytest.approx(expected, rel=0.01, abs=0.5), (lat, lon)
        assert 0 <= fence.outside_by_at_least_m(lat, lon) <= max(got, 0.0) + 0.5
    assert fence.signed_distance_m(centres[0][1] + 0.001, centres[0][0]) > 0
