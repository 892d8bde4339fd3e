"""Geofence and maintenance evaluations per second, the fold's per-fix rule cost:
`python bench/bench_geofences.py`.

Fixes are the shared route (tests/data/tracks/route1.geojson); fences are a circle, a
100-corner polygon, a 2,000-corner polygon (the largest allowed) around a stretch of it and a
MultiPolygon of 48 small depots, one of them on it,
so most fixes are far from them (the bounding-box bound decides) and some are near (a large
polygon's grid answers them, a small one's edges are walked). Printed as steps per second
(best of 5) and as ratios to the circle over every fix, one run.

Then fixes inside large fences (every fix within a polygon's bounding box is measured
exactly): microseconds per fix through the fence's grid (geometry.py `_Grid`) and through
the walk over every edge it replaced (the same shape, its grid never built), in the same run:
a 2,000-position round fence (the largest allowed) that the route crosses, a 2,000-position
municipality-like outline the route drives deep into, and a tenant at its limit
(MAX_TENANT_POSITIONS: 25 nested 2,000-position outlines every fix is inside of); and what a
grid costs to build and to keep.
"""

from __future__ import annotations

import gc
import json
import math
import random
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.fleet import geofences, geometry, maintenance  # noqa: E402
from gateway.fleet.geometry import MAX_POSITIONS, Circle, Polygon, Shape  # noqa: E402
from gateway.fleet.rule_service import MAX_TENANT_POSITIONS  # noqa: E402

TRACK = ROOT / "tests" / "data" / "tracks" / "route1.geojson"
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def regular(lat: float, lon: float, radius_deg: float, corners: int) -> Polygon:
    ring = [
        (
            lon + radius_deg * math.cos(2 * math.pi * k / corners),
            lat + radius_deg * math.sin(2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]
    return Polygon([[*ring, ring[0]]])


def depots(lat: float, lon: float, count: int) -> Polygon:
    """A fleet's depots as one MultiPolygon: `count` 40-corner parts 0.2° apart, the first
    on the route (fixes there walk its edges; the other parts are left out by their boxes)."""
    parts = [
        regular(lat + 0.2 * (k // 8), lon + 0.2 * (k % 8), 0.01, 40).parts[0] for k in range(count)
    ]
    return Polygon(*parts, multi=True)


def outline(lat: float, lon: float, radius_deg: float, corners: int, seed: int) -> Polygon:
    """A municipality-like outline: lobes, bays and a jagged edge round (lat, lon)."""
    rng = random.Random(seed)
    ring = []
    for k in range(corners):
        a = 2 * math.pi * k / corners
        r = radius_deg * (1 + 0.25 * math.sin(3 * a) + 0.1 * math.sin(17 * a + 1))
        r *= 1 + rng.uniform(-0.01, 0.01)
        ring.append((lon + r * math.cos(a), lat + r * math.sin(a)))
    return Polygon([[*ring, ring[0]]])


def along(shape: Polygon, count: int) -> list[list[float]]:
    """`count` fixes within 100 m of the shape's border, either side: a point of a random
    edge moved across it (seeded)."""
    rng = random.Random(2)
    ring = shape.parts[0][0]
    fixes = []
    for _ in range(count):
        k = rng.randrange(len(ring) - 1)
        (alon, alat), (blon, blat) = ring[k], ring[k + 1]
        t, off = rng.random(), rng.uniform(-100, 100) / 111_195
        dlon, dlat = blon - alon, blat - alat
        norm = math.hypot(dlon, dlat)
        fixes.append([alon + t * dlon + off * dlat / norm, alat + t * dlat - off * dlon / norm])
    return fixes


def walking(shape: Polygon) -> Polygon:
    """The same shape answering as before 2026-12-07: by the walk over every edge (its grid
    never built)."""
    twin = Polygon(*shape.parts, multi=shape.multi)
    twin._edges = 0
    return twin


REPEATS = 5  # best of: the machine is shared


def steps_per_second(shape: Shape, fixes: list[list[float]], near_only: bool) -> float:
    fence = geofences.Geofence("f", "bench", "authorized", shape)
    if near_only:  # within 100 m of the border: the distance is measured (grid or walk)
        fixes = [p for p in fixes if abs(shape.signed_distance_m(p[1], p[0])) < 100]
    best = math.inf
    for _ in range(REPEATS):
        state: geofences.FenceState | None = None
        start = time.perf_counter()
        for i, (lon, lat) in enumerate(fixes):
            at = T0 + timedelta(seconds=5 * i)
            state, _ = geofences.step(fence, state, lat, lon, 8.0, at)
        best = min(best, time.perf_counter() - start)
    return len(fixes) / best


def plan_steps_per_second(count: int) -> float:
    plan = maintenance.Plan("p", "oil", 10_000, 500, 180)
    best = math.inf
    for _ in range(REPEATS):
        state: maintenance.PlanState | None = None
        start = time.perf_counter()
        for i in range(count):
            state, _ = maintenance.step(plan, state, i * 0.05, T0 + timedelta(seconds=5 * i))
        best = min(best, time.perf_counter() - start)
    return count / best


def seconds_per_fix(fences: list[Shape], fixes: list[list[float]]) -> float:
    """Seconds per fix through `step` for every one of `fences` (best of REPEATS)."""
    steps = [geofences.Geofence(f"f{k}", "bench", "authorized", s) for k, s in enumerate(fences)]
    best = math.inf
    for _ in range(REPEATS):
        states: list[geofences.FenceState | None] = [None] * len(steps)
        start = time.perf_counter()
        for i, (lon, lat) in enumerate(fixes):
            at = T0 + timedelta(seconds=5 * i)
            for k, fence in enumerate(steps):
                states[k], _ = geofences.step(fence, states[k], lat, lon, 8.0, at)
        best = min(best, time.perf_counter() - start)
    return best / len(fixes)


def inside_large_fences(fixes: list[list[float]]) -> None:
    lon, lat = fixes[2200]
    round_ = regular(lat, lon, 0.03, MAX_POSITIONS - 1)
    town = outline(lat, lon, 0.25, MAX_POSITIONS - 1, seed=1)
    start_lon, start_lat = fixes[0]
    nested = [
        regular(start_lat, start_lon, 0.3 + 0.01 * i, MAX_POSITIONS - 1)
        for i in range(MAX_TENANT_POSITIONS // MAX_POSITIONS)
    ]

    def inside(shapes: list[Polygon]) -> list[list[float]]:
        return [p for p in fixes if all(s.signed_distance_m(p[1], p[0]) < 0 for s in shapes)]

    cases = [
        ("2,000-position round, inside", [round_], inside([round_])),
        ("  along its border (±100 m)", [round_], along(round_, 500)),
        ("2,000-position outline, inside", [town], inside([town])),
        ("  along its border (±100 m)", [town], along(town, 500)),
        # (the walk takes some 40 ms a fix here: 200 of them)
        (f"{len(nested)} x 2,000 nested, inside all", nested, inside(nested)[:200]),
    ]
    print()
    print(
        f"{'fixes inside large fences':<34} {'fixes':>6} {'walk µs':>9} {'grid µs':>9} {'ratio':>7}"
    )
    for name, shapes, inner in cases:
        walked = seconds_per_fix([walking(s) for s in shapes], inner) * 1e6
        gridded = seconds_per_fix(list(shapes), inner) * 1e6
        print(f"{name:<34} {len(inner):>6} {walked:>9.1f} {gridded:>9.1f} {walked / gridded:>7.1f}")
    for name, shape in (("round", round_), ("outline", town)):
        edges = [e for _, part in shape._parts for e in part]
        build = math.inf
        for _ in range(REPEATS):
            start = time.perf_counter()
            geometry._Grid(shape._box, edges)
            build = min(build, time.perf_counter() - start)
        gc.collect()
        tracemalloc.start()
        grid = geometry._Grid(shape._box, edges)
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        polygon = math.inf
        for _ in range(REPEATS):
            start = time.perf_counter()
            Polygon(*shape.parts)
            polygon = min(polygon, time.perf_counter() - start)
        print(
            f"grid of the 2,000-position {name}: {grid._nx} x {grid._ny} cells, built in "
            f"{build * 1e3:.1f} ms (the Polygon itself: {polygon * 1e3:.1f} ms), "
            f"{held / 1024:.0f} KiB beside its edges"
        )


def main() -> None:
    fixes: list[list[float]] = json.loads(TRACK.read_text())["geometry"]["coordinates"]
    lon, lat = fixes[2200]
    shapes: dict[str, Shape] = {
        "circle": Circle(lat, lon, 3_000),
        "polygon 100": regular(lat, lon, 0.03, 100),
        "polygon 2000": regular(lat, lon, 0.03, 1_999),
        "48 depots": depots(lat, lon, 48),
    }
    rates = {
        name: (steps_per_second(s, fixes, near_only=False), steps_per_second(s, fixes, True))
        for name, s in shapes.items()
    }
    base = rates["circle"][0]
    print(f"{'fence':<14} {'all fixes/s':>12} {'ratio':>7} {'near fixes/s':>13} {'ratio':>7}")
    for name, (every, near) in rates.items():
        print(f"{name:<14} {every:>12,.0f} {every / base:>7.2f} {near:>13,.0f} {near / base:>7.2f}")
    print(f"maintenance plan step: {plan_steps_per_second(len(fixes)):,.0f}/s")
    inside_large_fences(fixes)


if __name__ == "__main__":
    main()
