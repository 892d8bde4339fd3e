"""Inline SVG maps for the admin pages: vehicles' recent tracks and geofences on one sheet,
with no tiles and no JavaScript.

A plain equirectangular projection around the sheet's mean latitude (x = longitude ×
cos(mean latitude), y = −latitude), scaled to fit the drawing with a margin: at the scale of a
city or a route it keeps distances true to a few per cent, which is what a glance at "is it
inside?" needs. Longitudes are taken the short way round the sheet's middle, so a track or an
area across the antimeridian (a MultiPolygon cut there) is drawn in one piece. Circles are
drawn with their radius in metres converted at the mean latitude.
The map is data (numbers and point lists) for the template to write into SVG attributes, so
every name and label stays escaped text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.fleet.geometry import centre_longitude

WIDTH: Final = 640.0
HEIGHT: Final = 400.0
MARGIN: Final = 16.0
METRES_PER_DEGREE: Final = 111_195.0  # one degree of a great circle, R = 6,371,008.8 m
# A sheet never shows less than this much ground (a parked vehicle is not a dot-sized map).
MIN_SPAN_DEGREES: Final = 0.005

LatLon = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Track:
    label: str
    points: str  # "x,y x,y ..." for a polyline
    last: tuple[float, float] | None  # where the newest fix is drawn
    rejected: tuple[tuple[float, float], ...]  # fixes the quality gates refused


@dataclass(frozen=True, slots=True)
class Fence:
    id: str
    name: str
    kind: str  # authorized | restricted
    circle: tuple[float, float, float] | None  # cx, cy, r
    path: str | None  # "M x,y L ... Z" per ring (holes too; fill-rule evenodd)


@dataclass(frozen=True, slots=True)
class SheetMap:
    width: float
    height: float
    tracks: tuple[Track, ...]
    fences: tuple[Fence, ...]


@dataclass(frozen=True, slots=True)
class TrackInput:
    label: str
    fixes: Sequence[Mapping[str, Any]]  # newest last: {lat, lon, rejected?}


def draw(tracks: Iterable[TrackInput], fences: Iterable[Mapping[str, Any]]) -> SheetMap | None:
    """The sheet for these tracks and fence documents; None when there is nothing to draw."""
    tracks, fences = list(tracks), list(fences)
    extent = [(float(f["lat"]), float(f["lon"])) for t in tracks for f in t.fixes if _on_globe(f)]
    for fence in fences:
        extent.extend(_fence_extent(fence))
    if not extent:
        return None
    projection = _Projection.fit(extent)
    return SheetMap(
        WIDTH,
        HEIGHT,
        tuple(_track(t, projection) for t in tracks if any(_on_globe(f) for f in t.fixes)),
        tuple(_fence(f, projection) for f in fences),
    )


class _Projection:
    def __init__(self, lat0: float, lon0: float, kx: float, scale: float, top: float) -> None:
        self._lat0, self._lon0, self._kx, self.scale, self._top = lat0, lon0, kx, scale, top

    @classmethod
    def fit(cls, points: Sequence[LatLon]) -> _Projection:
        lats = [p[0] for p in points]
        middle = centre_longitude([p[1] for p in points])
        lons = [_around(p[1], middle) for p in points]
        mid = (min(lats) + max(lats)) / 2
        kx = max(math.cos(math.radians(mid)), 0.01)
        span_x = max((max(lons) - min(lons)) * kx, MIN_SPAN_DEGREES)
        span_y = max(max(lats) - min(lats), MIN_SPAN_DEGREES)
        scale = min((WIDTH - 2 * MARGIN) / span_x, (HEIGHT - 2 * MARGIN) / span_y)
        # Centre the drawing on the sheet.
        lon0 = (min(lons) + max(lons)) / 2
        top = mid + (HEIGHT / 2) / scale
        return cls(mid, lon0, kx, scale, top)

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        x = WIDTH / 2 + (_around(lon, self._lon0) - self._lon0) * self._kx * self.scale
        y = (self._top - lat) * self.scale
        return round(x, 1), round(y, 1)


def _around(lon: float, middle: float) -> float:
    """The longitude within 180 degrees of `middle` (-179.9 round 179.9: 180.1)."""
    if lon - middle > 180.0:
        return lon - 360.0
    if lon - middle < -180.0:
        return lon + 360.0
    return lon


def _on_globe(fix: Mapping[str, Any]) -> bool:
    """Whether a fix can be drawn: a fix refused `invalid_coordinates` (latitude 95, a
    longitude in micro-degrees) is kept in the track, but has no place on a map, and would
    stretch the sheet past the poles."""
    lat, lon = float(fix["lat"]), float(fix["lon"])
    return abs(lat) <= 90.0 and abs(lon) <= 180.0  # (False for NaN too)


def _track(track: TrackInput, projection: _Projection) -> Track:
    drawn = [f for f in track.fixes if _on_globe(f)]
    accepted = [f for f in drawn if not f.get("rejected")]
    rejected = [f for f in drawn if f.get("rejected")]
    points = [projection.xy(float(f["lat"]), float(f["lon"])) for f in accepted]
    return Track(
        label=track.label,
        points=" ".join(f"{x},{y}" for x, y in points),
        last=points[-1] if points else None,
        rejected=tuple(projection.xy(float(f["lat"]), float(f["lon"])) for f in rejected),
    )


def _fence(doc: Mapping[str, Any], projection: _Projection) -> Fence:
    circle, path = None, None
    if (c := doc.get("circle")) is not None:
        cx, cy = projection.xy(float(c["lat"]), float(c["lon"]))
        r = float(c["radius_m"]) / METRES_PER_DEGREE * projection.scale
        circle = (cx, cy, round(r, 1))
    elif (p := doc.get("polygon")) is not None:
        rings = []
        for ring in (ring for polygon in _polygons(p) for ring in polygon):
            xys = [projection.xy(float(lat), float(lon)) for lon, lat, *_ in ring]
            rings.append("M " + " L ".join(f"{x},{y}" for x, y in xys) + " Z")
        path = " ".join(rings)
    return Fence(str(doc.get("id") or doc.get("_id")), doc["name"], doc["kind"], circle, path)


def _fence_extent(doc: Mapping[str, Any]) -> list[LatLon]:
    if (c := doc.get("circle")) is not None:
        lat, lon, radius = float(c["lat"]), float(c["lon"]), float(c["radius_m"])
        dlat = radius / METRES_PER_DEGREE
        dlon = dlat / max(math.cos(math.radians(lat)), 0.01)
        return [(lat - dlat, lon - dlon), (lat + dlat, lon + dlon)]
    if (p := doc.get("polygon")) is not None:
        return [(float(lat), float(lon)) for rings in _polygons(p) for lon, lat, *_ in rings[0]]
    return []


def _polygons(geometry: Mapping[str, Any]) -> list[Any]:
    """The polygons (each a list of rings) of a GeoJSON Polygon or MultiPolygon."""
    coordinates = geometry["coordinates"]
    return list(coordinates) if geometry.get("type") == "MultiPolygon" else [coordinates]
