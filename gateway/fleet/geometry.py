"""Pure geometry for geofences: great-circle distance, the signed distance from a fix to a
circle's or a polygon's border, and the validation of both shapes.

Distances are metres. `haversine_m` uses the mean Earth radius R = 6,371,008.8 m (IUGG);
a circle's distance is exact on that sphere. A polygon's distance is measured in a local
equirectangular projection centred on the polygon (x = R·cos φ₀·Δλ, y = R·Δφ, φ₀ the
latitude of the centre of its bounding box): at fence scale (tens of kilometres) the error
is a fraction of a percent, far below GPS accuracy; far from the fence only the sign and
"far" matter. Coordinates are GeoJSON's [lon, lat] (RFC 7946) in degrees; a polygon must
not cross the antimeridian (RFC 7946 §3.1.9: cut it in two).

Signed distance: negative inside, positive outside, the magnitude being the distance to the
nearest border (a hole's border included: a point in a hole is outside).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import FieldProblem, InvalidPayload

EARTH_RADIUS_M = 6_371_008.8
MAX_RADIUS_M = 1_000_000.0
MAX_POSITIONS = 2_000
# A polygon wider than this (either way) is no fence: the local projection would be wrong.
MAX_EXTENT_DEG = 20.0

Point = tuple[float, float]  # (lon, lat)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two (lat, lon) points in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class Circle:
    lat: float
    lon: float
    radius_m: float

    def signed_distance_m(self, lat: float, lon: float) -> float:
        return haversine_m(self.lat, self.lon, lat, lon) - self.radius_m

    def outside_by_at_least_m(self, lat: float, lon: float) -> float:
        """A cheap lower bound of how far outside the point is (here: exact)."""
        return self.signed_distance_m(lat, lon)

    @property
    def depth_m(self) -> float:
        """How far inside its deepest point is: the radius."""
        return self.radius_m

    def depth_up_to_m(self, cap_m: float) -> float:
        """`depth_m`, or `cap_m` if that is less."""
        return min(self.radius_m, cap_m)

    def to_doc(self) -> dict[str, Any]:
        return {"lat": self.lat, "lon": self.lon, "radius_m": self.radius_m}


class Polygon:
    """A GeoJSON Polygon (exterior ring, then holes), already validated, with its rings
    projected once around its own centre."""

    __slots__ = ("_box", "_edges", "_kx", "_lat0", "_lon0", "rings")

    def __init__(self, rings: Sequence[Sequence[Point]]) -> None:
        self.rings: tuple[tuple[Point, ...], ...] = tuple(tuple(r) for r in rings)
        lons = [p[0] for p in self.rings[0]]
        lats = [p[1] for p in self.rings[0]]
        self._lon0 = (min(lons) + max(lons)) / 2
        self._lat0 = (min(lats) + max(lats)) / 2
        self._kx = math.radians(1) * EARTH_RADIUS_M * math.cos(math.radians(self._lat0))
        edges: list[tuple[float, float, float, float, float, float, float, float]] = []
        for ring in self.rings:
            xy = [self._project(lon, lat) for lon, lat in ring]
            for (ax, ay), (bx, by) in itertools.pairwise(xy):
                edges.append((ax, ay, bx, by, min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)))
        self._edges = tuple(edges)
        self._box = (
            min(e[4] for e in edges),
            min(e[5] for e in edges),
            max(e[6] for e in edges),
            max(e[7] for e in edges),
        )

    def _project(self, lon: float, lat: float) -> tuple[float, float]:
        dlon = (lon - self._lon0 + 180.0) % 360.0 - 180.0
        return dlon * self._kx, (lat - self._lat0) * math.radians(1) * EARTH_RADIUS_M

    def signed_distance_m(self, lat: float, lon: float) -> float:
        return self._signed_xy(*self._project(lon, lat))

    @property
    def depth_m(self) -> float:
        """How far inside its deepest point is (the radius of the largest circle it holds),
        to a few per cent: computed once per shape (`_depth_m`), when first asked."""
        return _depth_m(self, math.inf)

    def depth_up_to_m(self, cap_m: float) -> float:
        """`depth_m`, or `cap_m` if that is less: the search stops at the first point that
        deep (for most fences the first one tried, the middle of its bounding box)."""
        return _depth_m(self, cap_m)

    def _signed_xy(self, px: float, py: float) -> float:
        inside = False
        nearest2 = math.inf  # squared: one square root at the end
        for ax, ay, bx, by, x0, y0, x1, y1 in self._edges:
            # even-odd rule over every ring: a point in a hole is outside
            if (ay > py) != (by > py) and px < ax + (py - ay) * (bx - ax) / (by - ay):
                inside = not inside
            # an edge whose box is no nearer than the nearest edge so far is skipped
            gx = x0 - px if px < x0 else px - x1 if px > x1 else 0.0
            gy = y0 - py if py < y0 else py - y1 if py > y1 else 0.0
            if gx * gx + gy * gy >= nearest2:
                continue
            dx, dy = bx - ax, by - ay
            length2 = dx * dx + dy * dy
            t = ((px - ax) * dx + (py - ay) * dy) / length2 if length2 else 0.0
            t = 0.0 if t < 0.0 else 1.0 if t > 1.0 else t
            ex, ey = px - ax - t * dx, py - ay - t * dy
            nearest2 = min(nearest2, ex * ex + ey * ey)
        nearest = math.sqrt(nearest2)
        return -nearest if inside else nearest

    def outside_by_at_least_m(self, lat: float, lon: float) -> float:
        """A cheap lower bound of how far outside the point is: its distance to the polygon's
        bounding box (0 within the box). Most fixes are far from most fences; this spares
        them the walk over every edge."""
        px, py = self._project(lon, lat)
        x0, y0, x1, y1 = self._box
        return math.hypot(max(x0 - px, 0.0, px - x1), max(y0 - py, 0.0, py - y1))

    def to_doc(self) -> dict[str, Any]:
        return {"type": "Polygon", "coordinates": [[list(p) for p in r] for r in self.rings]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Polygon) and other.rings == self.rings

    def __hash__(self) -> int:
        return hash(self.rings)

    def __repr__(self) -> str:
        return f"Polygon({len(self.rings)} rings, {sum(len(r) for r in self.rings)} positions)"


Shape = Circle | Polygon


# The depths found, by the polygon's hash and the cap: numbers only, so that a process does not
# keep every polygon it has seen (the rules are read again every 2 s, and edited).
_DEPTHS: dict[tuple[int, float], float] = {}
_DEPTHS_KEPT = 4096


def _depth_m(polygon: Polygon, cap_m: float) -> float:
    """`_search_depth`, once per shape, cap and process."""
    key = (hash(polygon), cap_m)
    depth = _DEPTHS.get(key)
    if depth is None:
        if len(_DEPTHS) >= _DEPTHS_KEPT:
            _DEPTHS.clear()
        depth = _DEPTHS[key] = _search_depth(polygon, cap_m)
    return depth


def _search_depth(polygon: Polygon, cap_m: float) -> float:
    """The depth of a polygon's deepest point, or `cap_m` once a point that deep is found:
    the middle of its bounding box first, then a grid over the box, then finer grids around
    the deepest point found (a few hundred distances: at most a second for the largest
    polygon)."""
    x0, y0, x1, y1 = polygon._box
    bx, by = (x0 + x1) / 2, (y0 + y1) / 2
    best = max(0.0, -polygon._signed_xy(bx, by))
    if best >= cap_m:
        return cap_m
    width, height = x1 - x0, y1 - y0
    for n in (16, 8, 8, 8):
        cx, cy = bx, by
        for i, j in itertools.product(range(n), repeat=2):
            px = cx - width / 2 + (i + 0.5) * width / n
            py = cy - height / 2 + (j + 0.5) * height / n
            depth = -polygon._signed_xy(px, py)
            if depth >= cap_m:
                return cap_m
            if depth > best:
                best, bx, by = depth, px, py
        width, height = width * 2.5 / n, height * 2.5 / n
    return best


# ---------------------------------------------------------------- validation


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value) + 0.0  # -0.0 + 0.0 is 0.0: no negative zero is stored
    return number if math.isfinite(number) else None


def _problem(pointer: str, message: str, keyword: str) -> InvalidPayload:
    return InvalidPayload(message, [FieldProblem(pointer, message, keyword)])


def _latitude(value: Any, pointer: str) -> float:
    lat = _number(value)
    if lat is None or not -90.0 <= lat <= 90.0:
        raise _problem(pointer, f"latitude must be a number in [-90, 90], got {value!r}", "range")
    return lat


def _longitude(value: Any, pointer: str) -> float:
    lon = _number(value)
    if lon is None or not -180.0 <= lon <= 180.0:
        raise _problem(
            pointer, f"longitude must be a number in [-180, 180], got {value!r}", "range"
        )
    return lon


def circle_from(value: Any, pointer: str = "/circle") -> Circle:
    """A circle from `{"lat", "lon", "radius_m"}`; InvalidPayload naming the field otherwise."""
    if not isinstance(value, dict):
        raise _problem(pointer, "circle must be an object {lat, lon, radius_m}", "type")
    for name in ("lat", "lon", "radius_m"):
        if name not in value:
            raise _problem(f"{pointer}/{name}", f"circle.{name} is required", "required")
    extra = sorted(set(value) - {"lat", "lon", "radius_m"})
    if extra:
        raise _problem(f"{pointer}/{extra[0]}", f"unknown circle field {extra[0]!r}", "additional")
    radius = _number(value["radius_m"])
    if radius is None or not 0.0 < radius <= MAX_RADIUS_M:
        raise _problem(
            f"{pointer}/radius_m",
            f"radius_m must be a number > 0 and <= {MAX_RADIUS_M:.0f}, got {value['radius_m']!r}",
            "range",
        )
    return Circle(
        lat=_latitude(value["lat"], f"{pointer}/lat"),
        lon=_longitude(value["lon"], f"{pointer}/lon"),
        radius_m=radius,
    )


def polygon_from(value: Any, pointer: str = "/polygon") -> Polygon:
    """A polygon from a GeoJSON Polygon geometry, checked: every ring has at least 4
    positions, is closed (first = last), has coordinates in range, and neither crosses itself
    nor another ring; holes lie inside the exterior ring. InvalidPayload naming the field
    otherwise (the pointer names the ring and, where it helps, the position)."""
    if not isinstance(value, dict) or value.get("type") != "Polygon":
        raise _problem(
            f"{pointer}/type", 'polygon must be a GeoJSON geometry with "type": "Polygon"', "type"
        )
    coordinates = value.get("coordinates")
    if not isinstance(coordinates, list) or not coordinates:
        raise _problem(
            f"{pointer}/coordinates",
            "polygon.coordinates must be a non-empty array of linear rings",
            "type",
        )
    total = sum(len(r) for r in coordinates if isinstance(r, list))
    if total > MAX_POSITIONS:
        raise _problem(
            f"{pointer}/coordinates",
            f"a polygon has at most {MAX_POSITIONS} positions, got {total}",
            "maxItems",
        )
    rings = [_ring(r, f"{pointer}/coordinates/{i}") for i, r in enumerate(coordinates)]
    lons = [p[0] for p in rings[0]]
    lats = [p[1] for p in rings[0]]
    if max(lons) - min(lons) > MAX_EXTENT_DEG or max(lats) - min(lats) > MAX_EXTENT_DEG:
        raise _problem(
            f"{pointer}/coordinates/0",
            f"a geofence polygon spans at most {MAX_EXTENT_DEG:.0f} degrees either way "
            "(and must not cross the antimeridian)",
            "extent",
        )
    _check_simple(rings, f"{pointer}/coordinates")
    polygon = Polygon(rings)
    exterior = Polygon(rings[:1])
    holes = [Polygon([hole]) for hole in rings[1:]]
    for i, hole in enumerate(rings[1:], start=1):
        lon, lat = hole[0]
        if exterior.signed_distance_m(lat, lon) >= 0 or any(
            other.signed_distance_m(lat, lon) < 0 for k, other in enumerate(holes, 1) if k != i
        ):
            raise _problem(
                f"{pointer}/coordinates/{i}",
                "a hole must lie inside the exterior ring and outside the other holes",
                "hole",
            )
    return polygon


def _ring(value: Any, pointer: str) -> list[Point]:
    if not isinstance(value, list):
        raise _problem(pointer, "a linear ring must be an array of positions", "type")
    points: list[Point] = []
    for j, position in enumerate(value):
        where = f"{pointer}/{j}"
        if not isinstance(position, list) or not 2 <= len(position) <= 3:
            raise _problem(
                where, "a position must be an array [lon, lat] (or [lon, lat, alt])", "type"
            )
        points.append((_longitude(position[0], f"{where}/0"), _latitude(position[1], f"{where}/1")))
    if len(points) < 4:
        raise _problem(
            pointer, f"a linear ring needs at least 4 positions, got {len(points)}", "minItems"
        )
    if points[0] != points[-1]:
        raise _problem(
            pointer,
            f"the ring does not close: its first position {list(points[0])} differs from its "
            f"last {list(points[-1])}",
            "closed",
        )
    # consecutive repeats are harmless in GeoJSON; drop them so edges have a length
    ring = [p for k, p in enumerate(points) if k == 0 or p != points[k - 1]]
    if len(ring) < 4:
        raise _problem(pointer, "the ring has no area (fewer than 3 distinct corners)", "area")
    return ring


def _check_simple(rings: Sequence[Sequence[Point]], pointer: str) -> None:
    """No two edges of the polygon meet except consecutive edges of a ring at their shared
    corner. A sweep over x with a y filter keeps this near O(n log n) for ordinary shapes
    (a comb of long teeth is the worst case: about 1 s for MAX_POSITIONS)."""
    edges: list[tuple[float, float, float, float, int, int, Point, Point]] = []
    for r, ring in enumerate(rings):
        for i in range(len(ring) - 1):
            a, b = ring[i], ring[i + 1]
            edges.append(
                (min(a[0], b[0]), max(a[0], b[0]), min(a[1], b[1]), max(a[1], b[1]), r, i, a, b)
            )
    edges.sort(key=lambda e: e[0])
    for k, (_, right, low, high, r1, i1, a, b) in enumerate(edges):
        for left2, _, low2, high2, r2, i2, c, d in edges[k + 1 :]:
            if left2 > right:
                break
            if low2 > high or high2 < low:
                continue
            if r1 == r2 and _adjacent(i1, i2, len(rings[r1]) - 1):
                if _overlap_at_corner(a, b, c, d):
                    raise _crossing(pointer, r1, i1, i2)
                continue
            if _segments_meet(a, b, c, d):
                if r1 == r2:
                    raise _crossing(pointer, r1, i1, i2)
                raise _problem(
                    pointer, f"rings {min(r1, r2)} and {max(r1, r2)} cross or touch", "rings"
                )


def _crossing(pointer: str, ring: int, i: int, j: int) -> InvalidPayload:
    i, j = sorted((i, j))
    return _problem(
        f"{pointer}/{ring}",
        f"the ring intersects itself (edges {i}-{i + 1} and {j}-{j + 1})",
        "self_intersection",
    )


def _adjacent(i: int, j: int, edges: int) -> bool:
    return abs(i - j) == 1 or abs(i - j) == edges - 1


def _orientation(p: Point, q: Point, r: Point) -> float:
    return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])


def _on_segment(p: Point, q: Point, r: Point) -> bool:
    """r, collinear with p-q, lies within its bounding box."""
    return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])


def _segments_meet(a: Point, b: Point, c: Point, d: Point) -> bool:
    o1, o2 = _orientation(a, b, c), _orientation(a, b, d)
    o3, o4 = _orientation(c, d, a), _orientation(c, d, b)
    if ((o1 > 0 > o2) or (o1 < 0 < o2)) and ((o3 > 0 > o4) or (o3 < 0 < o4)):
        return True
    return (
        (o1 == 0 and _on_segment(a, b, c))
        or (o2 == 0 and _on_segment(a, b, d))
        or (o3 == 0 and _on_segment(c, d, a))
        or (o4 == 0 and _on_segment(c, d, b))
    )


def _overlap_at_corner(a: Point, b: Point, c: Point, d: Point) -> bool:
    """Two consecutive edges share a corner; they are wrong only if they fold back onto
    each other (collinear, overlapping beyond the corner)."""
    shared = next(p for p in (a, b) if p in (c, d))
    other1 = b if shared == a else a
    other2 = d if shared == c else c
    if _orientation(shared, other1, other2) != 0:
        return False
    v1 = (other1[0] - shared[0], other1[1] - shared[1])
    v2 = (other2[0] - shared[0], other2[1] - shared[1])
    return v1[0] * v2[0] + v1[1] * v2[1] > 0


def shape_from(doc: dict[str, Any]) -> Shape:
    """The shape of a stored geofence (validated when it was written): its `circle` or its
    `polygon`. Not validated again: a cache refresh must stay cheap."""
    if doc.get("circle") is not None:
        c = doc["circle"]
        return Circle(lat=float(c["lat"]), lon=float(c["lon"]), radius_m=float(c["radius_m"]))
    return Polygon(
        [[(float(p[0]), float(p[1])) for p in ring] for ring in doc["polygon"]["coordinates"]]
    )
