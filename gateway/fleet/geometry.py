"""Pure geometry for geofences: great-circle distance, the signed distance from a fix to a
circle's or a polygon's border, and the validation of both shapes.

Distances are metres. `haversine_m` uses the mean Earth radius R = 6,371,008.8 m (IUGG);
a circle's distance is exact on that sphere. A polygon's distance is measured in a local
equirectangular projection centred on the polygon (x = R·cos φ₀·Δλ, y = R·Δφ, φ₀ the
latitude of the centre of its bounding box): at fence scale (tens of kilometres) the error
is a fraction of a percent, far below GPS accuracy; far from the fence only the sign and
"far" matter. Coordinates are GeoJSON's [lon, lat] (RFC 7946) in degrees; a polygon must
not cross the antimeridian: an area across it is a MultiPolygon of its parts cut there
(RFC 7946 §3.1.9), one fence whose inside is the inside of any of its polygons. Its parts are
projected together, their longitudes taken the short way round the fence's centre, so the
two sides of the cut meet.

Signed distance: negative inside, positive outside, the magnitude being the distance to the
nearest border (a hole's border included: a point in a hole is outside; where the parts of a
MultiPolygon meet at the antimeridian there is no border).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import FieldProblem, InvalidPayload

EARTH_RADIUS_M = 6_371_008.8
MAX_RADIUS_M = 1_000_000.0
MAX_POSITIONS = 2_000
# A polygon wider than this (either way) is no fence: the local projection would be wrong.
MAX_EXTENT_DEG = 20.0

Point = tuple[float, float]  # (lon, lat)
Rings = Sequence[Sequence[Point]]  # a polygon's: the exterior ring, then holes
Box = tuple[float, float, float, float]  # projected: x0, y0, x1, y1
Edge = tuple[float, float, float, float, float, float, float, float]  # a, b, and its box


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

    def signed_distance_m(self, lat: float, lon: float, exact_within_m: float = math.inf) -> float:
        """Metres to the border: < 0 inside, > 0 outside (exact: `exact_within_m` is for
        polygons, whose distance far from the border is bounded rather than measured)."""
        return haversine_m(self.lat, self.lon, lat, lon) - self.radius_m

    def outside_by_at_least_m(self, lat: float, lon: float) -> float:
        """A cheap lower bound of how far outside the point is (here: exact)."""
        return self.signed_distance_m(lat, lon)

    def holds_circle_around(self, lat: float, lon: float, radius_m: float, depth_m: float) -> bool:
        """Whether a circle of `radius_m` inside this one covers the point, `depth_m` inside
        it (`signed_distance_m`'s, negated): every point inside is covered by one, if it is
        no larger than this circle (exact)."""
        return depth_m >= 0.0 and radius_m <= self.radius_m

    def to_doc(self) -> dict[str, Any]:
        return {"lat": self.lat, "lon": self.lon, "radius_m": self.radius_m}


class Polygon:
    """A GeoJSON Polygon (exterior ring, then holes) or MultiPolygon (several such, their
    insides apart), already validated, with its rings projected once around the centre of
    the whole. Inside is decided by the even-odd rule over every ring (the parts do not
    overlap: inside one part is inside), distances by the border's edges: every edge but the
    stretches where parts on either side of the antimeridian meet (`_border`). A shape of
    more than `_GRID_MIN_EDGES` edges answers through a grid over them (`_Grid`), built when
    it has been asked `_GRID_AFTER_QUERIES` times (and no other grid was built in the last
    `_GRID_BUILD_SPACING_S`), or found built for a shape of the same edges."""

    __slots__ = (
        "_box",
        "_edges",
        "_grid",
        "_hash",
        "_kx",
        "_lat0",
        "_lon0",
        "_parts",
        "_queries",
        "multi",
        "parts",
    )

    def __init__(self, *parts: Rings, multi: bool = False) -> None:
        if not parts or (len(parts) > 1 and not multi):
            raise ValueError("a Polygon has one part; a MultiPolygon one or more")
        self.parts: tuple[tuple[tuple[Point, ...], ...], ...] = tuple(
            tuple(tuple(r) for r in rings) for rings in parts
        )
        self.multi = multi
        self._lon0 = centre_longitude([p[0] for rings in self.parts for p in rings[0]])
        lats = [p[1] for rings in self.parts for p in rings[0]]
        self._lat0 = (min(lats) + max(lats)) / 2
        self._kx = math.radians(1) * EARTH_RADIUS_M * math.cos(math.radians(self._lat0))
        # Per part: its bounding box (its exterior ring holds it) and its edges. A fix far
        # from a part is spared the walk over its edges, as a fix far from a fence is.
        parts_: list[tuple[Box, tuple[Edge, ...]]] = []
        for exterior, border in _border(unwrapped(self.parts, self._lon0)):
            xs, ys = zip(*(self._project(*p) for p in exterior), strict=True)
            edges: list[Edge] = []
            for a, b in border:
                (ax, ay), (bx, by) = self._project(*a), self._project(*b)
                edges.append((ax, ay, bx, by, min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)))
            parts_.append(((min(xs), min(ys), max(xs), max(ys)), tuple(edges)))
        self._parts = tuple(parts_)
        boxes = [box for box, _ in parts_]
        self._box = (  # the whole shape's
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )
        self._edges = sum(len(edges) for _, edges in parts_)
        self._grid: _Grid | None = None
        self._queries = 0
        self._hash: int | None = None

    def _project(self, lon: float, lat: float) -> tuple[float, float]:
        """A position in the fence's projection (the rings' positions included: a fix on a
        corner lands on it exactly)."""
        lon0 = self._lon0
        if lon - lon0 > 180.0:  # `_unwrap`, inline: once per fix and fence
            lon -= 360.0
        elif lon - lon0 < -180.0:
            lon += 360.0
        return (lon - lon0) * self._kx, (lat - self._lat0) * math.radians(1) * EARTH_RADIUS_M

    def signed_distance_m(self, lat: float, lon: float, exact_within_m: float = math.inf) -> float:
        """Metres to the border: < 0 inside, > 0 outside. Exact when the point is within
        `exact_within_m` of the border; farther, a number of the same sign beyond it (a lower
        bound of the distance: a fix deep inside a large fence need not find its nearest edge
        when all the caller asks is whether it is more than its margin in)."""
        return self._signed_xy(*self._project(lon, lat), exact_within_m)

    def holds_circle_around(self, lat: float, lon: float, radius_m: float, depth_m: float) -> bool:
        """Whether a circle of `radius_m` lies in the shape and covers the point, `depth_m`
        inside it (`signed_distance_m`'s, negated): how much room the shape has *there*, not
        anywhere in it (a bay of a MultiPolygon beside a large yard has the bay's; a yard's
        driveway the yard's, not its access road's). To about 4 % of `radius_m`, erring
        towards "it holds one"; at most `_ROOM_BUDGET` distances (`_holds_around`)."""
        px, py = self._project(lon, lat)
        return _holds_around(self, px, py, radius_m, depth_m)

    def _signed_xy(self, px: float, py: float, exact_within_m: float = math.inf) -> float:
        grid = self._grid
        if grid is None and self._edges > _GRID_MIN_EDGES:
            self._queries += 1
            if self._queries == 1:
                grid = self._grid = _grid_for(self, build=False)
            elif self._queries >= _GRID_AFTER_QUERIES and _may_build():
                grid = self._grid = _grid_for(self, build=True)
        if grid is not None:
            return grid.signed(px, py, exact_within_m)
        return _walked_xy(self, px, py)

    def outside_by_at_least_m(self, lat: float, lon: float) -> float:
        """A cheap lower bound of how far outside the point is: its distance to the whole
        shape's bounding box, or within that, to the nearest part's (0 within one). Most
        fixes are far from most fences; this spares them the walk over every edge."""
        px, py = self._project(lon, lat)
        whole = _gap2(self._box, px, py)
        if whole or len(self._parts) == 1:
            return math.sqrt(whole)
        return math.sqrt(min(_gap2(box, px, py) for box, _ in self._parts))

    def to_doc(self) -> dict[str, Any]:
        parts = [[[list(p) for p in r] for r in rings] for rings in self.parts]
        if self.multi:
            return {"type": "MultiPolygon", "coordinates": parts}
        return {"type": "Polygon", "coordinates": parts[0]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Polygon) and (other.parts, other.multi) == (
            self.parts,
            self.multi,
        )

    def __hash__(self) -> int:
        # kept: it hashes every position
        if self._hash is None:
            self._hash = hash((self.parts, self.multi))
        return self._hash

    def __repr__(self) -> str:
        rings = sum(len(rings) for rings in self.parts)
        positions = sum(len(r) for rings in self.parts for r in rings)
        if self.multi:
            return f"MultiPolygon({len(self.parts)} polygons, {rings} rings, {positions} positions)"
        return f"Polygon({rings} rings, {positions} positions)"


def _gap2(box: Box, px: float, py: float) -> float:
    """The squared distance from the point to the box (0 within it)."""
    x0, y0, x1, y1 = box
    gx = x0 - px if px < x0 else px - x1 if px > x1 else 0.0
    gy = y0 - py if py < y0 else py - y1 if py > y1 else 0.0
    return gx * gx + gy * gy


def _walked_xy(polygon: Polygon, px: float, py: float) -> float:
    """The signed distance by the walk over every edge of every part the point's rightward ray
    or nearest edge may reach: what a shape of few edges does, and what `_Grid` answers as."""
    inside = False
    nearest2 = math.inf  # squared: one square root at the end
    for box, edges in polygon._parts:
        # The rightward ray from the point crosses no edge of a part whose box it misses;
        # such a part is walked only when its box is nearer than the nearest edge so far.
        _, y0, x1, y1 = box
        ray = y0 <= py <= y1 and px <= x1
        if ray or _gap2(box, px, py) < nearest2:
            inside, nearest2 = _walk(edges, px, py, inside, nearest2)
    nearest = math.sqrt(nearest2)
    return -nearest if inside else nearest


def _walk(
    edges: tuple[Edge, ...], px: float, py: float, inside: bool, nearest2: float
) -> tuple[bool, float]:
    """The even-odd count and the squared distance to the nearest edge, carried over `edges`."""
    for ax, ay, bx, by, *_ in edges:
        # even-odd rule over every ring: a point in a hole is outside
        if (ay > py) != (by > py) and px < ax + (py - ay) * (bx - ax) / (by - ay):
            inside = not inside
    return inside, _nearer2(edges, px, py, nearest2)


def _nearer2(edges: Iterable[Edge], px: float, py: float, nearest2: float) -> float:
    """The squared distance to the nearest of `edges`, or `nearest2` if none is nearer."""
    for ax, ay, bx, by, x0, y0, x1, y1 in edges:
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
    return nearest2


# A shape of more edges than this answers through a grid (`_Grid`); fewer are walked, as
# fast as a grid's few cells. It is built at its shape's `_GRID_AFTER_QUERIES`-th distance
# (about what building it costs in walks): a shape asked once (a hole's when it is checked)
# is walked; a fence the fold measures fixes against is not, from its eighth fix on.
_GRID_MIN_EDGES = 64
_GRID_AFTER_QUERIES = 8
# One grid is built at a time per this many seconds in the process (the others walk till
# their turn): the fold's fences reach their eighth fix together, and the fold gives the
# event loop a turn between fixes, not within one (25 builds of 2,000 edges: 0.25 s).
_GRID_BUILD_SPACING_S = 0.02
_GRID_BUILT_AT = [-math.inf]  # (monotonic) when the last one was


def _may_build() -> bool:
    """Whether a grid may be built now (`_GRID_BUILD_SPACING_S`); if so, now is its time."""
    now = time.monotonic()
    if now - _GRID_BUILT_AT[0] < _GRID_BUILD_SPACING_S:
        return False
    _GRID_BUILT_AT[0] = now
    return True


# Cells per edge: fewer cells to search rings of, or fewer edges to measure in each.
_GRID_CELLS_PER_EDGE = 1.0
# Metres by which the grid's bounds are widened where a rounding could matter: an edge is
# listed in every cell it comes within _SLACK_M of, an edge whose box ends _SLACK_M left of
# a point is not crossed by its ray, a ring of cells is no nearer than its bound less
# _SLACK_M. Projected coordinates are at most ~2,500 km: rounding errs by nanometres.
_SLACK_M = 1e-3


class _Grid:
    """A uniform grid over a shape's box (about one cell per edge, the cells about square),
    answering what `_walked_xy` answers: the same side to the bit, the same distance (but for
    its last bits where two edges are as near, at a corner: the walk measures the one it
    meets first, the grid the one its cells list first):

    - each cell lists the edges that pass within _SLACK_M of it; a cell that lists none is
      all inside or all outside (no border crosses it), as its centre is (`_inside`: 1 or 0;
      2 for a cell the border crosses);
    - each row of cells lists the edges that are not horizontal and whose y-range meets the
      row, by their right end, rightmost first: a point in a cell the border crosses casts
      the walk's rightward ray over its row's edges that reach right of it, with the walk's
      test (a vertex or a horizontal edge on the ray counts as the walk counts it);
    - the nearest edge is searched in rings of cells around the point's cell (the nearest
      cell, for a point outside the grid), from the first ring that lists an edge
      (`_reach`: the rings before it are empty), until a ring is farther than the nearest
      edge found, or farther than `exact_within_m` (then that ring's distance is the answer:
      a lower bound beyond it).

    The edges measured are the walk's edges, with the walk's arithmetic. A fix deep inside a
    large fence measures no edge; one near its border, the few in the cells around it; the
    rightward ray tests the edges of one row right of it (about the square root of the
    edges for a round shape: 2,000 corners, some 20)."""

    __slots__ = (
        "_cells",
        "_ch",
        "_cw",
        "_inside",
        "_nx",
        "_ny",
        "_reach",
        "_rows",
        "_x0",
        "_x1",
        "_y0",
        "_y1",
        "edges",
    )

    def __init__(self, box: Box, edges: Sequence[Edge]) -> None:
        self.edges = len(edges)
        x0, y0, x1, y1 = box
        width, height = max(x1 - x0, _SLACK_M), max(y1 - y0, _SLACK_M)  # (never 0)
        side = math.sqrt(width * height / (len(edges) * _GRID_CELLS_PER_EDGE))
        nx = max(1, min(4 * len(edges), math.ceil(width / side)))
        ny = max(1, min(4 * len(edges), math.ceil(height / side)))
        self._x0, self._y0, self._x1, self._y1 = box
        self._nx, self._ny = nx, ny
        self._cw, self._ch = width / nx, height / ny
        cells: list[list[Edge]] = [[] for _ in range(nx * ny)]
        rows: list[list[Edge]] = [[] for _ in range(ny)]
        pad, row, col = _SLACK_M, self._row, self._col
        for edge in edges:
            ax, ay, bx, by, ex0, ey0, ex1, ey1 = edge
            if ay != by:
                for j in range(row(ey0), row(ey1) + 1):
                    rows[j].append(edge)
            i0, i1, j0, j1 = col(ex0 - pad), col(ex1 + pad), row(ey0 - pad), row(ey1 + pad)
            if i0 == i1 or j0 == j1:  # within a column or a row: the cells of its box
                for j in range(j0, j1 + 1):
                    for i in range(i0, i1 + 1):
                        cells[j * nx + i].append(edge)
                continue
            for j in range(j0, j1 + 1):
                # the stretch of the edge within the row (widened by pad), then its columns
                low = max(ey0, y0 + j * self._ch - pad)
                high = min(ey1, y0 + (j + 1) * self._ch + pad)
                if ay == by or low > high:
                    left, right = ex0, ex1
                else:
                    xl = ax + (low - ay) * (bx - ax) / (by - ay)
                    xh = ax + (high - ay) * (bx - ax) / (by - ay)
                    left, right = max(ex0, min(xl, xh)), min(ex1, max(xl, xh))
                for i in range(col(left - pad), col(right + pad) + 1):
                    cells[j * nx + i].append(edge)
        self._cells: tuple[tuple[Edge, ...], ...] = tuple(tuple(c) if c else () for c in cells)
        self._rows: tuple[tuple[Edge, ...], ...] = tuple(
            tuple(sorted(r, key=lambda e: e[6], reverse=True)) for r in rows
        )
        self._inside = self._sides()
        self._reach = self._reaches()

    def _col(self, x: float) -> int:
        i = int((x - self._x0) / self._cw)
        return 0 if i < 0 else self._nx - 1 if i >= self._nx else i

    def _row(self, y: float) -> int:
        j = int((y - self._y0) / self._ch)
        return 0 if j < 0 else self._ny - 1 if j >= self._ny else j

    def _sides(self) -> bytes:
        """Per cell: 1 inside, 0 outside, 2 crossed by the border. A cell no edge comes near
        is on the side of its centre, counted over its row's edges as a point's ray is."""
        nx = self._nx
        sides = bytearray(2 if c else 0 for c in self._cells)
        for j in range(self._ny):
            yc = self._y0 + (j + 0.5) * self._ch
            crossings = sorted(
                ax + (yc - ay) * (bx - ax) / (by - ay)
                for ax, ay, bx, by, *_ in self._rows[self._row(yc)]
                if (ay > yc) != (by > yc)
            )
            for i in range(nx):
                if not sides[j * nx + i]:
                    xc = self._x0 + (i + 0.5) * self._cw
                    right = len(crossings) - bisect.bisect_right(crossings, xc)
                    sides[j * nx + i] = right & 1
        return bytes(sides)

    def _reaches(self) -> array[int]:
        """Per cell: how many rings of cells around it list no edge (0 for a cell that lists
        some): the chessboard distance to the nearest such cell. The cells within k rings of
        one are a bit mask per row, widened by a cell each way per ring."""
        nx, ny, cells = self._nx, self._ny, self._cells
        reach = array("i", [0]) * (nx * ny)
        full = (1 << nx) - 1
        near = [sum(1 << i for i in range(nx) if cells[j * nx + i]) for j in range(ny)]
        k = 0
        while any(m != full for m in near):
            k += 1
            wide = [(m | m << 1 | m >> 1) & full for m in near]
            wider = [
                wide[j] | (wide[j - 1] if j else 0) | (wide[j + 1] if j + 1 < ny else 0)
                for j in range(ny)
            ]
            for j in range(ny):
                fresh = wider[j] & ~near[j]
                while fresh:
                    bit = fresh & -fresh
                    reach[j * nx + bit.bit_length() - 1] = k
                    fresh ^= bit
            near = wider
        return reach

    def signed(self, px: float, py: float, exact_within_m: float) -> float:
        """`_walked_xy`'s answer, or beyond `exact_within_m` a bound of the same sign."""
        nx, ny = self._nx, self._ny
        i = int((px - self._x0) / self._cw)
        i = 0 if i < 0 else nx - 1 if i >= nx else i
        j = int((py - self._y0) / self._ch)
        j = 0 if j < 0 else ny - 1 if j >= ny else j
        nearest = self._nearest(px, py, i, j, max(exact_within_m, 0.0))
        return -nearest if self._within(px, py, i, j) else nearest

    def _within(self, px: float, py: float, i: int, j: int) -> bool:
        """Inside: the cell's side, or the walk's rightward ray over the row's edges right of
        the point."""
        if not (self._x0 <= px <= self._x1 and self._y0 <= py <= self._y1):
            return False
        side = self._inside[j * self._nx + i]
        if side < 2:
            return side == 1
        inside = False
        left = px - _SLACK_M
        for ax, ay, bx, by, _, _, ex1, _ in self._rows[j]:
            if ex1 < left:
                break
            if (ay > py) != (by > py) and px < ax + (py - ay) * (bx - ax) / (by - ay):
                inside = not inside
        return inside

    def _nearest(self, px: float, py: float, i: int, j: int, exact_within_m: float) -> float:
        """The distance to the nearest edge, by rings of cells outward from (i, j), the empty
        ones skipped; or, past `exact_within_m`, the distance of the first ring beyond it."""
        nx, ny, cells = self._nx, self._ny, self._cells
        nearest2 = math.inf
        k = self._reach[j * nx + i]
        while True:
            ring: Iterator[int] | tuple[int]
            if k:
                bound = self._ring_bound(px, py, i, j, k)
                if bound == math.inf:
                    break  # past every side of the grid: every cell searched
                if bound > 0.0 and bound * bound > nearest2:
                    break
                if bound > exact_within_m:
                    return min(math.sqrt(nearest2), bound)
                ring = _ring_cells(i, j, k, nx, ny)
            else:
                ring = (j * nx + i,)
            for c in ring:
                nearest2 = _nearer2(cells[c], px, py, nearest2)
            k += 1
        return math.sqrt(nearest2)

    def _ring_bound(self, px: float, py: float, i: int, j: int, k: int) -> float:
        """How near the cells k rings around (i, j) may be to the point: the nearest of the
        ring's four sides in the grid, less _SLACK_M (infinite once none is)."""
        nx, ny, x0, y0, cw, ch = self._nx, self._ny, self._x0, self._y0, self._cw, self._ch
        bound = math.inf
        if i + k < nx:
            bound = x0 + (i + k) * cw - px
        if i - k >= 0:
            bound = min(bound, px - (x0 + (i - k + 1) * cw))
        if j + k < ny:
            bound = min(bound, y0 + (j + k) * ch - py)
        if j - k >= 0:
            bound = min(bound, py - (y0 + (j - k + 1) * ch))
        return bound - _SLACK_M


def _ring_cells(i: int, j: int, k: int, nx: int, ny: int) -> Iterator[int]:
    """The cells k rings around cell (i, j), those in the grid: its top and bottom rows, then
    the columns between them."""
    low, high = max(0, i - k), min(nx - 1, i + k)
    for row in (j - k, j + k):
        if 0 <= row < ny:
            yield from range(row * nx + low, row * nx + high + 1)
    for col in (i - k, i + k):
        if 0 <= col < nx:
            for row in range(max(0, j - k + 1), min(ny, j + k)):
                yield row * nx + col


# The grids built, by a digest of what they are built from: the shape's box and edges,
# projected (the rules are read again every 2 s: a fence's next Polygon finds its grid here,
# for the cost of a digest of its edges, a fraction of a millisecond). The least recently
# found are dropped first past _GRIDS_KEPT_EDGES edges in all: two tenants' worth at
# MAX_TENANT_POSITIONS, about 25 MB (a grid holds its edges).
_GRIDS: OrderedDict[bytes, _Grid] = OrderedDict()
_GRIDS_KEPT_EDGES = 100_000
_GRIDS_LOCK = threading.Lock()  # shapes are checked in threads (rule_service `_checked`)


def _grid_for(polygon: Polygon, build: bool) -> _Grid | None:
    """The grid of a shape of the same box and edges as `polygon` (the same digest of their
    numbers: BLAKE2b, 256 bits), or, with `build`, a new one."""
    edges = [e for _, part in polygon._parts for e in part]
    numbers = array("d", itertools.chain(polygon._box, itertools.chain.from_iterable(edges)))
    key = hashlib.blake2b(numbers.tobytes()).digest()
    with _GRIDS_LOCK:
        grid = _GRIDS.get(key)
        if grid is not None:
            _GRIDS.move_to_end(key)
            return grid
    if not build:
        return None
    grid = _Grid(polygon._box, edges)
    with _GRIDS_LOCK:
        _GRIDS[key] = grid
        kept = sum(g.edges for g in _GRIDS.values())
        while kept > _GRIDS_KEPT_EDGES and len(_GRIDS) > 1:
            _, dropped = _GRIDS.popitem(last=False)
            kept -= dropped.edges
    return grid


def centre_longitude(lons: Sequence[float]) -> float:
    """The middle of the shortest arc of longitudes that holds them all, in [-180, 180]: the
    arc is the circle less its widest gap between two of them (179.8 and -179.8: -180)."""
    if max(lons) - min(lons) <= 180.0:  # the arc that does not cross the antimeridian
        return (min(lons) + max(lons)) / 2
    ordered = sorted(lon % 360.0 for lon in lons)
    gaps = [(ordered[0] + 360.0 - ordered[-1], 0)]
    gaps += [(b - a, k) for k, (a, b) in enumerate(itertools.pairwise(ordered), start=1)]
    _, start = max(gaps)
    width = (ordered[start - 1] - ordered[start]) % 360.0
    return (ordered[start] + width / 2 + 180.0) % 360.0 - 180.0


def _unwrap(lon: float, lon0: float) -> float:
    """The longitude as it lies within 180 degrees of `lon0`: 360 added or taken away, so
    that a position given at -180 and one at 180 become the same number."""
    if lon - lon0 > 180.0:
        return lon - 360.0
    if lon - lon0 < -180.0:
        return lon + 360.0
    return lon


def unwrapped(parts: Sequence[Rings], lon0: float) -> list[list[list[Point]]]:
    """The parts' positions with their longitudes taken round `lon0` (`_unwrap`)."""
    return [[[(_unwrap(lon, lon0), lat) for lon, lat in r] for r in rings] for rings in parts]


def _border(parts: Sequence[Rings]) -> list[tuple[Sequence[Point], list[tuple[Point, Point]]]]:
    """Each part's exterior ring and edges (their positions unwrapped), less the stretches
    where two of them meet on the antimeridian: there the area goes on, from one part into
    the other. Parts meet only there (`_check_apart`), along an edge of each on the same
    meridian, one part west of it and one east; both edges' common stretch goes. The
    even-odd rule counts such a stretch twice or not at all, so what it says is unchanged."""
    sides = [_side(rings) for rings in parts]
    if len(set(sides) - {0}) < 2:
        return [
            (rings[0], [(a, b) for r in rings for a, b in itertools.pairwise(r)]) for rings in parts
        ]
    # the antimeridian, as the unwrapped longitudes have it (180 or -180)
    cut = next(max(p[0] for p in rings[0]) for rings, s in zip(parts, sides, strict=True) if s < 0)
    on_cut: dict[int, list[tuple[float, float]]] = {-1: [], 1: []}
    for rings, side in zip(parts, sides, strict=True):
        for r in rings:
            for a, b in itertools.pairwise(r):
                if side and a[0] == b[0] == cut:
                    on_cut[side].append((min(a[1], b[1]), max(a[1], b[1])))
    borders: list[tuple[Sequence[Point], list[tuple[Point, Point]]]] = []
    for rings, side in zip(parts, sides, strict=True):
        border: list[tuple[Point, Point]] = []
        for r in rings:
            for a, b in itertools.pairwise(r):
                if not side or not a[0] == b[0] == cut:
                    border.append((a, b))
                    continue
                for low, high in _less(min(a[1], b[1]), max(a[1], b[1]), on_cut[-side]):
                    border.append(((cut, low), (cut, high)))
        borders.append((rings[0], border))
    return borders


def _side(rings: Rings) -> int:
    """Which side of the antimeridian a part (its positions unwrapped) lies on, when it
    touches it: -1 west of it, 1 east of it; 0 when it does not reach it."""
    lons = [p[0] for p in rings[0]]
    if max(lons) in (180.0, -180.0):
        return -1
    if min(lons) in (180.0, -180.0):
        return 1
    return 0


def _less(
    low: float, high: float, taken: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The stretches of [low, high] outside every interval of `taken`."""
    left = [(low, high)]
    for t0, t1 in taken:
        left = [
            piece
            for a, b in left
            for piece in ((a, min(b, t0)), (max(a, t1), b))
            if piece[1] > piece[0]
        ]
    return left


Shape = Circle | Polygon


# `Polygon.holds_circle_around`: a branch and bound over cells of the square round the point,
# the most hopeful first, split down to r / 2**_ROOM_SPLITS across: a circle of radius r less
# ~4 % is taken for one of r (so the answer "none" is exact, "one" within ~4 %). Past
# _ROOM_BUDGET distances measured for one question (some 110 where a fix is just half as deep
# as a long strip 2r wide, the worst; 4 to 18 in a large fence, 16 in a small one's middle)
# the answer is "it holds one": the fix is not taken for inside on that evidence.
_ROOM_SPLITS = 4
_ROOM_BUDGET = 128


def _holds_around(polygon: Polygon, px: float, py: float, r: float, depth: float) -> bool:
    """Whether a circle of radius `r` lies in the shape and covers the point (px, py), which
    is `depth` in (the distance to the border; < 0 outside).

    Such a circle has a centre c within r of the point and at least r deep, and if a larger
    circle covers the point, so does one of radius r within it: so the question is whether
    φ(c) = min(depth(c) − r, r − |c − p|) reaches 0 somewhere. φ changes by no more than c
    moves (both distances do), so a cell whose centre gives φ cannot reach more than φ plus
    its half diagonal anywhere (`_room_bound`): such cells are dropped, the others split, the
    most hopeful first."""
    if r <= 0.0:
        return depth >= 0.0
    side = r / 2
    pending = [
        (px - r + (i + 0.5) * side, py - r + (j + 0.5) * side, side)
        for i, j in itertools.product(range(4), repeat=2)
    ]
    # the most hopeful first, by the bound from the point's own depth: the ring of cells that
    # may hold a circle's centre at once (the circle tangent to the border nearest the point,
    # in a large fence), then the others
    pending.sort(key=lambda c: -_near_bound(px, py, r, depth, c[0], c[1]))
    hopeful: list[tuple[float, float, float, float]] = []  # (−bound, x, y, side)
    measured = 0
    while measured < _ROOM_BUDGET:
        for cx, cy, cell in pending:
            bound = _room_bound(polygon, px, py, r, depth, cx, cy, cell)
            if bound == math.inf:
                return True
            measured += bound != -math.inf
            if bound >= 0.0:
                heapq.heappush(hopeful, (-bound, cx, cy, cell))
        if not hopeful:
            return False
        _, cx, cy, cell = heapq.heappop(hopeful)
        cell /= 2
        pending = [
            (cx + dx * cell / 2, cy + dy * cell / 2, cell) for dx in (-1, 1) for dy in (-1, 1)
        ]
    return True


def _near_bound(px: float, py: float, r: float, depth: float, cx: float, cy: float) -> float:
    """A bound of φ (`_holds_around`) at (cx, cy) from the point's own depth, unmeasured."""
    away = math.hypot(cx - px, cy - py)
    return min(depth + away - r, r - away)


def _room_bound(
    polygon: Polygon,
    px: float,
    py: float,
    r: float,
    depth: float,
    cx: float,
    cy: float,
    side: float,
) -> float:
    """How high φ (`_holds_around`) may reach in the cell of centre (cx, cy): infinite once
    its centre is found (φ ≥ 0, or within the smallest cells' reach of it), minus infinite,
    without measuring, when even the bound from the point's own depth (depth(c) ≤ depth +
    |c − p|) leaves it no chance."""
    half = side * math.sqrt(0.5)
    if _near_bound(px, py, r, depth, cx, cy) + half < 0.0:
        return -math.inf
    phi = min(-polygon._signed_xy(cx, cy, r) - r, r - math.hypot(cx - px, cy - py))
    if phi >= 0.0 or (phi + half >= 0.0 and side <= r / 2**_ROOM_SPLITS):
        return math.inf
    return phi + half


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
    """A polygon from a GeoJSON Polygon or MultiPolygon geometry, checked: every ring has at
    least 4 positions, is closed (first = last), has coordinates in range, and neither
    crosses itself nor another ring; holes lie inside the exterior ring; no polygon crosses
    the antimeridian, and a MultiPolygon's polygons neither cross, touch nor lie in one
    another, but where the antimeridian cuts an area in parts (RFC 7946 §3.1.9: there a part
    west of it and one east of it meet); at most MAX_POSITIONS positions and MAX_EXTENT_DEG
    across in all. InvalidPayload naming the field otherwise (the pointer names the polygon,
    the ring and, where it helps, the position)."""
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in ("Polygon", "MultiPolygon"):
        raise _problem(
            f"{pointer}/type",
            'polygon must be a GeoJSON geometry with "type": "Polygon" or "MultiPolygon"',
            "type",
        )
    coordinates = value.get("coordinates")
    where = f"{pointer}/coordinates"
    multi = kind == "MultiPolygon"
    if multi and (not isinstance(coordinates, list) or not coordinates):
        raise _problem(
            where, "MultiPolygon coordinates must be a non-empty array of polygons", "type"
        )
    given = coordinates if multi else [coordinates]
    wheres = [f"{where}/{k}" for k in range(len(given))] if multi else [where]
    for part, at in zip(given, wheres, strict=True):
        if not isinstance(part, list) or not part:
            raise _problem(
                at, "a polygon's coordinates must be a non-empty array of linear rings", "type"
            )
    total = sum(len(r) for part in given for r in part if isinstance(r, list))
    if total > MAX_POSITIONS:
        raise _problem(
            where,
            f"a geofence polygon has at most {MAX_POSITIONS} positions, got {total}",
            "maxItems",
        )
    parts = [
        [_ring(r, f"{at}/{i}") for i, r in enumerate(part)]
        for part, at in zip(given, wheres, strict=True)
    ]
    for rings, at in zip(parts, wheres, strict=True):
        _check_extent([p[0] for p in rings[0]], [p[1] for p in rings[0]], f"{at}/0")
    lon0 = centre_longitude([p[0] for rings in parts for p in rings[0]])
    around = unwrapped(parts, lon0)
    if multi:
        lons = [p[0] for rings in around for p in rings[0]]
        _check_extent(lons, [p[1] for rings in parts for p in rings[0]], where)
    for rings, at in zip(parts, wheres, strict=True):
        _check_simple(rings, at)
        _check_holes(rings, at)
    if multi:
        _check_apart(around, wheres)
    return Polygon(*parts, multi=multi)


def _check_extent(lons: Sequence[float], lats: Sequence[float], pointer: str) -> None:
    if max(lons) - min(lons) > MAX_EXTENT_DEG or max(lats) - min(lats) > MAX_EXTENT_DEG:
        raise _problem(
            pointer,
            f"a geofence polygon spans at most {MAX_EXTENT_DEG:.0f} degrees either way "
            "(and must not cross the antimeridian: give the parts cut there as a MultiPolygon)",
            "extent",
        )


def _check_holes(rings: Rings, pointer: str) -> None:
    exterior = Polygon(rings[:1])
    holes = [Polygon([hole]) for hole in rings[1:]]
    for i, hole in enumerate(rings[1:], start=1):
        lon, lat = hole[0]
        if exterior.signed_distance_m(lat, lon) >= 0 or any(
            other.signed_distance_m(lat, lon) < 0 for k, other in enumerate(holes, 1) if k != i
        ):
            raise _problem(
                f"{pointer}/{i}",
                "a hole must lie inside the exterior ring and outside the other holes",
                "hole",
            )


def _check_apart(parts: Sequence[Rings], pointers: Sequence[str]) -> None:
    """A MultiPolygon's polygons (positions unwrapped, each checked on its own) have no
    inside in common: their rings neither cross nor touch, and none lies in another (its
    first position off the antimeridian is outside the others). Only two parts on either
    side of the antimeridian may meet: only on it, where it cut the area (`_border`)."""
    sides = [_side(rings) for rings in parts]
    edges: list[_Edge] = []
    for k, rings in enumerate(parts):
        for r in rings:
            edges += [_edge(a, b, k, 0) for a, b in itertools.pairwise(r)]
    for (*_, k1, _i, a, b), (*_, k2, _j, c, d) in _near_pairs(edges):
        if k1 == k2 or sides[k1] * sides[k2] < 0:
            continue
        if _segments_meet(a, b, c, d):
            k1, k2 = sorted((k1, k2))
            raise _problem(
                pointers[k2],
                f"polygons {k1} and {k2} cross or touch (the polygons of a MultiPolygon "
                "meet only where the antimeridian cuts an area)",
                "polygons",
            )
    shapes = [Polygon(rings) for rings in parts]
    for k, rings in enumerate(parts):
        lon, lat = next((p for p in rings[0] if abs(p[0]) != 180.0), rings[0][0])
        for j, other in enumerate(shapes):
            if j != k and other.signed_distance_m(lat, lon) < 0:
                raise _problem(
                    pointers[k],
                    f"polygon {k} lies inside polygon {j}: the polygons of a MultiPolygon "
                    "must not overlap",
                    "polygons",
                )


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


# An edge for the sweeps: its box (x0, x1, y0, y1), its polygon, its index, its ends.
_Edge = tuple[float, float, float, float, int, int, Point, Point]


def _edge(a: Point, b: Point, owner: int, index: int) -> _Edge:
    return (min(a[0], b[0]), max(a[0], b[0]), min(a[1], b[1]), max(a[1], b[1]), owner, index, a, b)


def _near_pairs(edges: list[_Edge]) -> Iterator[tuple[_Edge, _Edge]]:
    """The pairs of edges whose boxes meet: a sweep over x with a y filter, near O(n log n)
    for ordinary shapes (a comb of long teeth is the worst case: about 1 s for
    MAX_POSITIONS)."""
    edges.sort(key=lambda e: e[0])
    for k, first in enumerate(edges):
        right, low, high = first[1], first[2], first[3]
        for second in edges[k + 1 :]:
            if second[0] > right:
                break
            if second[2] > high or second[3] < low:
                continue
            yield first, second


def _check_simple(rings: Rings, pointer: str) -> None:
    """No two edges of the polygon meet except consecutive edges of a ring at their shared
    corner."""
    edges = [
        _edge(a, b, r, i)
        for r, ring in enumerate(rings)
        for i, (a, b) in enumerate(itertools.pairwise(ring))
    ]
    for (*_, r1, i1, a, b), (*_, r2, i2, c, d) in _near_pairs(edges):
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
    `polygon` (a Polygon or a MultiPolygon). Not validated again: a cache refresh must stay
    cheap."""
    if doc.get("circle") is not None:
        c = doc["circle"]
        return Circle(lat=float(c["lat"]), lon=float(c["lon"]), radius_m=float(c["radius_m"]))
    polygon = doc["polygon"]
    multi = polygon.get("type") == "MultiPolygon"
    parts = polygon["coordinates"] if multi else [polygon["coordinates"]]
    return Polygon(
        *([[(float(p[0]), float(p[1])) for p in ring] for ring in rings] for rings in parts),
        multi=multi,
    )
