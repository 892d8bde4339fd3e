"""A large geofence polygon answers through a grid over its edges (geometry.py `_Grid`); these
tests hold it to the walk over every edge it replaces, over seeded random shapes: the same
side (inside, outside) and the same distance, on corners, on edges, along horizontal edges,
in holes, between the parts of a MultiPolygon, across the antimeridian, far away."""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import InvalidPayload
from gateway.fleet import geometry
from gateway.fleet.geofences import FenceState, Geofence, step
from gateway.fleet.geometry import Polygon, polygon_from

Ring = list[list[float]]
Geometry = dict[str, object]


def star(
    rng: random.Random, lon: float, lat: float, radius: float, corners: int, low: float
) -> Ring:
    """A ring around (lon, lat) through `corners` points at sorted random angles, each at a
    random fraction in [low, 1] of `radius` (low 1: convex; low 0.1: spiky), anticlockwise."""
    angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(corners))
    ring = [
        [lon + r * math.cos(a), lat + r * math.sin(a) * 0.8]
        for a in angles
        for r in [radius * rng.uniform(low, 1.0)]
    ]
    return [*ring, ring[0]]


def skyline(rng: random.Random, lon: float, lat: float, columns: int, step_deg: float) -> Ring:
    """An orthogonal ring on a lattice: a row of columns of random heights on a common base.
    Horizontal edges everywhere, many corners on one line: the ray's tie rules at work."""
    heights = [rng.randint(1, 12) for _ in range(columns)]
    ring = [[lon, lat], [lon + columns * step_deg, lat]]
    for i in reversed(range(columns)):
        top = lat + heights[i] * step_deg
        ring += [[lon + (i + 1) * step_deg, top], [lon + i * step_deg, top]]
    ring.append([lon, lat])
    return ring


def shapes(seed: int) -> Iterator[tuple[str, Geometry, list[list[float]]]]:
    """(kind, GeoJSON geometry, extra points on its lattice) for a seed."""
    rng = random.Random(seed)
    lon, lat = rng.uniform(-60, 60), rng.uniform(-60, 60)
    corners = rng.choice([70, 150, 400, 1_000, 1_999])
    yield "convex", {"type": "Polygon", "coordinates": [star(rng, lon, lat, 0.3, corners, 1.0)]}, []
    yield (
        "concave",
        {"type": "Polygon", "coordinates": [star(rng, lon, lat, 0.3, corners, 0.6)]},
        [],
    )
    yield "spiky", {"type": "Polygon", "coordinates": [star(rng, lon, lat, 0.3, corners, 0.1)]}, []
    holes = [star(rng, lon, lat, 0.1, rng.randint(3, 300), 0.7)]
    holes += [
        star(rng, lon + 0.4 * math.cos(a), lat + 0.32 * math.sin(a), 0.08, rng.randint(3, 120), 0.5)
        for a in (0.5, 2.5, 4.5)
    ]
    exterior = star(rng, lon, lat, 0.6, corners // 2, 0.85)
    yield "holes", {"type": "Polygon", "coordinates": [exterior, *holes]}, []
    step_deg = 0.01
    ring = skyline(rng, lon, lat, rng.randint(40, 400), step_deg)
    lattice = [
        [lon + i * step_deg / 2, lat + j * step_deg / 2]
        for i in range(-2, 60)
        for j in range(-2, 28)
    ]
    yield "skyline", {"type": "Polygon", "coordinates": [ring]}, lattice
    parts = [
        [star(rng, lon + 0.7 * (k % 3), lat + 0.7 * (k // 3), 0.3, rng.randint(10, 300), 0.4)]
        for k in range(rng.randint(2, 6))
    ]
    yield "multi", {"type": "MultiPolygon", "coordinates": parts}, []
    yield "antimeridian", antimeridian(rng), []


def antimeridian(rng: random.Random) -> Geometry:
    """An area across 180°, cut there (RFC 7946 §3.1.9): a part west of it and one east of it,
    their cut edges over different stretches (the border goes on where only one reaches) and
    split by corners on the cut at different latitudes."""
    lat = rng.uniform(-50, 50)

    def side(sign: float, south: float, north: float) -> Ring:
        """A part on the cut from `south` to `north` (off `lat`), reaching 0.3-0.8° away from
        it (west of it for sign 1, east for -1) along a jagged side, with corners on the cut."""
        at = 180.0 * sign
        lats = sorted(rng.uniform(south - 0.2, north + 0.2) for _ in range(rng.randint(40, 300)))
        jagged = [[at - sign * rng.uniform(0.3, 0.8), lat + f] for f in lats]
        cuts = sorted(rng.uniform(south, north) for _ in range(rng.randint(0, 4)))
        return [
            [at, lat + south],
            [at - sign * 0.2, lat + south - 0.25],
            *jagged,
            [at - sign * 0.2, lat + north + 0.25],
            [at, lat + north],
            *([at, lat + c] for c in reversed(cuts)),
            [at, lat + south],
        ]

    west = side(1.0, rng.uniform(-0.5, 0.0), rng.uniform(0.3, 0.8))
    east = side(-1.0, rng.uniform(-0.5, 0.0), rng.uniform(0.3, 0.8))
    return {"type": "MultiPolygon", "coordinates": [[west], [east]]}


def valid(geometry: Geometry) -> Polygon | None:
    try:
        return polygon_from(geometry)
    except InvalidPayload:  # a random shape that crosses itself: not a fence
        return None


def probes(
    rng: random.Random, polygon: Polygon, extra: list[list[float]]
) -> Iterator[tuple[float, float]]:
    """(lon, lat) points to ask about: corners, points on edges, just off corners, the lattice,
    random points in and around the shape's box, far away."""
    ring_points = [p for rings in polygon.parts for r in rings for p in r]
    for lon, lat in rng.sample(ring_points, min(40, len(ring_points))):
        yield lon, lat
        for _ in range(2):
            yield lon + rng.uniform(-1e-7, 1e-7), lat + rng.uniform(-1e-7, 1e-7)
    edges = [(a, b) for rings in polygon.parts for r in rings for a, b in itertools.pairwise(r)]
    for (alon, alat), (blon, blat) in rng.sample(edges, min(40, len(edges))):
        t = rng.choice([0.5, 0.25, rng.random()])
        yield alon + t * (blon - alon), alat + t * (blat - alat)
    yield from ((lon, lat) for lon, lat in rng.sample(extra, min(300, len(extra))))
    lons, lats = [p[0] for p in ring_points], [p[1] for p in ring_points]
    west, east, south, north = min(lons), max(lons), min(lats), max(lats)
    if east - west > 180:  # across the antimeridian: around 180
        west, east = 178.0, 181.0
    for _ in range(150):
        lon = rng.uniform(west - 0.2 * (east - west), east + 0.2 * (east - west))
        lat = rng.uniform(south - 0.2 * (north - south), north + 0.2 * (north - south))
        yield (lon + 180.0) % 360.0 - 180.0, lat
    for _ in range(10):
        yield rng.uniform(-180, 180), rng.uniform(-89, 89)


SEEDS = range(10)


@functools.cache
def fences(seed: int) -> list[tuple[str, Polygon, list[list[float]]]]:
    """The seed's shapes that are fences (a random shape may cross itself: left out)."""
    found = [(kind, valid(shape), extra) for kind, shape, extra in shapes(seed)]
    return [(kind, polygon, extra) for kind, polygon, extra in found if polygon is not None]


def gridded(polygon: Polygon) -> geometry._Grid:
    return geometry._Grid(polygon._box, [e for _, edges in polygon._parts for e in edges])


def test_random_shapes_are_valid_fences_of_every_kind() -> None:
    """(The comparisons below are over real fences: each kind is among the shapes tested.)"""
    kinds = {kind for seed in SEEDS for kind, _, _ in fences(seed)}
    assert kinds == {"convex", "concave", "spiky", "holes", "skyline", "multi", "antimeridian"}


def answers_agree(polygon: Polygon, extra: list[list[float]], seed: int) -> Iterator[str]:
    """Where the grid and the walk differ: nothing for a right grid. (The distance may differ
    in its last bits: at a corner two edges are as near, and the walk measures the one it
    meets first, the grid the one its cells list first; either is the distance.)"""
    grid, rng = gridded(polygon), random.Random(seed)
    for lon, lat in probes(rng, polygon, extra):
        px, py = polygon._project(lon, lat)
        walked = geometry._walked_xy(polygon, px, py)
        answer = grid.signed(px, py, math.inf)
        same_side = math.copysign(1.0, walked) == math.copysign(1.0, answer)
        if not same_side or abs(answer - walked) > 1e-9 * max(1.0, abs(walked)):
            yield f"({lon!r}, {lat!r}): walk {walked!r}, grid {answer!r}"
        within = rng.choice([0.0, 25.0, 1_000.0, 10_000.0])
        bounded = grid.signed(px, py, within)
        if abs(answer) <= within and bounded != answer:
            yield f"({lon!r}, {lat!r}) within {within}: {bounded!r}, exactly {answer!r}"
        if abs(answer) > within and not (
            math.copysign(1.0, bounded) == math.copysign(1.0, answer)
            and within < abs(bounded) <= abs(answer)
        ):
            yield f"({lon!r}, {lat!r}) beyond {within}: {bounded!r}, exactly {answer!r}"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_gridded_polygon_answers_as_the_walk_over_its_edges(seed: int) -> None:
    """The side to the bit (a point on a corner or an edge, on a horizontal edge's line, in a
    hole, across the antimeridian) and the distance; asked for the distance only within a
    bound, the same distance within it and a lower bound of the same sign beyond it."""
    for kind, polygon, extra in fences(seed):
        wrong = list(answers_agree(polygon, extra, seed))
        assert not wrong, f"{kind} (seed {seed}, {polygon!r}): {wrong[:5]}"
    assert len(fences(seed)) >= 4


@pytest.fixture
def builds_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Grids built as soon as they are due (not one per `_GRID_BUILD_SPACING_S`)."""
    monkeypatch.setattr(geometry, "_GRID_BUILD_SPACING_S", 0.0)


@pytest.mark.usefixtures("builds_at_once")
def test_a_large_fence_answers_through_its_grid_and_a_small_one_walks() -> None:
    """From its `_GRID_AFTER_QUERIES`-th distance on a large shape has a grid (and an equal
    shape read again finds it); a small one never does."""
    rng = random.Random(7)
    large = polygon_from(
        {"type": "Polygon", "coordinates": [star(rng, -46.6, -23.5, 0.3, 500, 0.6)]}
    )
    small = polygon_from(
        {"type": "Polygon", "coordinates": [star(rng, -46.6, -23.5, 0.3, 40, 0.6)]}
    )
    for k in range(geometry._GRID_AFTER_QUERIES):
        assert large._grid is None, k
        large.signed_distance_m(-23.5, -46.6)
        small.signed_distance_m(-23.5, -46.6)
    assert large._grid is not None and small._grid is None
    again = Polygon(*large.parts)
    again.signed_distance_m(-23.5, -46.6)
    assert again._grid is large._grid


def test_grids_due_together_are_built_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fold's fences reach their `_GRID_AFTER_QUERIES`-th fix together: one grid is built
    per `_GRID_BUILD_SPACING_S`, the other shapes walk their edges till their turn (and
    answer the same)."""
    monkeypatch.setattr(geometry, "_GRID_BUILD_SPACING_S", 3_600.0)
    monkeypatch.setattr(geometry, "_GRID_BUILT_AT", [-math.inf])
    rng = random.Random(8)
    shapes_ = [
        polygon_from({"type": "Polygon", "coordinates": [star(rng, 10.0, 50.0, r, 300, 0.7)]})
        for r in (0.2, 0.21, 0.22)
    ]
    answers = []
    for _ in range(geometry._GRID_AFTER_QUERIES + 3):
        answers.append([s.signed_distance_m(50.05, 10.05) for s in shapes_])
    assert [s._grid is not None for s in shapes_] == [True, False, False]
    assert all(a == answers[0] for a in answers)
    monkeypatch.setattr(geometry, "_GRID_BUILD_SPACING_S", 0.0)
    shapes_[1].signed_distance_m(50.05, 10.05)
    assert shapes_[1]._grid is not None and shapes_[2]._grid is None


@pytest.mark.usefixtures("builds_at_once")
def test_a_fence_steps_as_it_did_with_the_walk_through_a_gridded_polygon() -> None:
    """The fold's `step` asks for the distance within the margin plus the accuracy: the states
    and crossings along a track in and out of a large fence are the walk's."""
    rng = random.Random(11)
    ring = star(rng, -46.6, -23.5, 0.2, 1_500, 0.5)
    shape = polygon_from({"type": "Polygon", "coordinates": [ring]})
    walked = Polygon(*shape.parts)
    walked._edges = 0  # (never gridded: walks every edge)
    fences = [Geofence("f", "zona", "authorized", s, margin_m=50.0) for s in (shape, walked)]
    states: list[FenceState | None] = [None, None]
    crossings = 0
    t0 = datetime(2026, 12, 7, tzinfo=UTC)
    for i in range(600):
        lat = -23.5 + 0.25 * math.sin(i / 40)
        lon = -46.6 + 0.25 * math.cos(i / 55)
        accuracy = rng.choice([None, 5.0, 40.0])
        at = t0 + timedelta(seconds=5 * i)
        results = [step(f, s, lat, lon, accuracy, at) for f, s in zip(fences, states, strict=True)]
        assert results[0] == results[1], i
        states = [state for state, _ in results]
        crossings += results[0][1] is not None
    assert shape._grid is not None and crossings >= 4
