"""Geofence and maintenance evaluations per second, the fold's per-fix rule cost:
`python bench/bench_geofences.py`.

Fixes are the shared route (tests/data/tracks/route1.geojson); fences are a circle, a
100-corner polygon, a 2,000-corner polygon (the largest allowed) around a stretch of it and a
MultiPolygon of 48 small depots, one of them on it,
so most fixes are far from them (the bounding-box bound decides) and some are near (every
edge is walked). Printed as steps per second (best of 5) and as ratios to the circle over
every fix, one run.
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.fleet import geofences, maintenance  # noqa: E402
from gateway.fleet.geometry import Circle, Polygon, Shape  # noqa: E402

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


REPEATS = 5  # best of: the machine is shared


def steps_per_second(shape: Shape, fixes: list[list[float]], near_only: bool) -> float:
    fence = geofences.Geofence("f", "bench", "authorized", shape)
    if near_only:  # within 100 m of the border: every edge is walked
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


if __name__ == "__main__":
    main()
