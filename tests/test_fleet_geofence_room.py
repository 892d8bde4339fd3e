"""How narrow a fence is, where the fix is: a bay of a MultiPolygon beside a large yard is
entered as the bay alone is; a yard drawn with long thin roads (other parts of its
MultiPolygon, or its own access road) keeps the yard's hysteresis in its driveway. Through
HTTP to a position trigger and the real database (docs/fleet.md "How a crossing is decided").
Before 2026-12-07 the "too small" rule used one depth per fence, searched in at most four
part boxes: the bay took the yard's, the yards the roads' (or, drawn with its road, a sample
of the road's 4 km box that missed the yard)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.web.state import services_key
from tests import tracks
from tests.support import auth
from tests.test_fleet_tracks import fold, new_vehicle
from tests.triggers_support import Client, create_position_trigger, hook

TENANT = "acme"
ORIGIN = (-12.97, -38.50)


def ring(corners: list[tuple[float, float]]) -> list[list[float]]:
    """A closed GeoJSON ring of (east, north) metres from ORIGIN."""
    points = [tracks.offset(*ORIGIN, east, north) for east, north in corners]
    return [[lon, lat] for lat, lon in [*points, points[0]]]


def square(east: float, north: float, half: float) -> list[list[list[float]]]:
    west, south, east_, north_ = east - half, north - half, east + half, north + half
    return [ring([(west, south), (east_, south), (east_, north_), (west, north_)])]


def corridor(east: float, north: float, length: float = 4000, half: float = 10) -> list[Any]:
    """A road 20 m wide, `length` long, north-east from (east, north)."""
    d, e = half / math.sqrt(2), length / math.sqrt(2)
    corners = [(d, -d), (e + d, e - d), (e - d, e + d), (-d, d)]
    return [ring([(east + x, north + y) for x, y in corners])]


def fixes(plate: str, path: list[tuple[float, float]], accuracy_m: float) -> list[dict[str, Any]]:
    """One fix a second at each (east, north), an hour ago."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    out = []
    for i, (east, north) in enumerate(path):
        lat, lon = tracks.offset(*ORIGIN, east, north)
        time = (start + timedelta(seconds=i)).isoformat()
        out.append({"plate": plate, "time": time, "lat": lat, "lon": lon, "accuracy_m": accuracy_m})
    return out


def line(start: tuple[float, float], end: tuple[float, float], step_m: float) -> list[Any]:
    n = max(1, round(math.dist(start, end) / step_m))
    return [
        (start[0] + (end[0] - start[0]) * k / n, start[1] + (end[1] - start[1]) * k / n)
        for k in range(n)
    ]


async def crossings(client: Client, plate: str) -> list[tuple[str, str]]:
    found = []
    for kind in ("entered", "exited"):
        events = await client.app[services_key].events.find(
            TENANT, event_type=f"vehicle.geofence.{kind}"
        )
        found += [
            (e["occurred_at"], kind, e["detail"]["geofence"]["name"])
            for e in events
            if e["data"].get("plate") == plate
        ]
    return [(kind, name) for _, kind, name in sorted(found)]


async def drive(client: Client, plate: str, path: list[tuple[float, float]]) -> None:
    trigger = await create_position_trigger(client, name=f"t-{plate.lower()}")
    await new_vehicle(client, plate)
    status, answer = await hook(client, trigger, fixes(plate, path, 5.0))
    assert status == 200 and answer["summary"]["failed"] == 0, answer
    await fold(client)


async def fence(client: Client, name: str, plate: str, kind: str, coordinates: Any) -> None:
    polygon = {"type": "MultiPolygon" if kind == "multi" else "Polygon", "coordinates": coordinates}
    body = {"name": name, "kind": "restricted", "vehicles": [plate], "polygon": polygon}
    response = await client.post("/api/v1/geofences", json=body, headers=auth())
    assert response.status == 201, await response.text()


async def test_a_bay_of_a_multipolygon_beside_a_large_yard_is_entered_as_the_bay_alone(
    client: Client,
) -> None:
    """A restricted MultiPolygon of a 300 m yard and a 30 m bay 2 km away: a vehicle driving
    through the bay's middle at 18 km/h with fixes of 5 m enters and leaves it, as the bay
    as its own fence. Before, the fence's one depth was the yard's 150 m: a fix had to be
    30 m in, deeper than the bay goes, and it was never entered."""
    bay, yard = square(1000, 0, 15), square(-1000, 0, 150)
    through = line((700, 0), (1300, 0), 5.0)
    await fence(client, "bay alone", "BAY7A01", "single", bay)
    await fence(client, "yard and bay", "BAY7A02", "multi", [yard, bay])
    for plate in ("BAY7A01", "BAY7A02"):
        await drive(client, plate, through)
    assert await crossings(client, "BAY7A01") == [("entered", "bay alone"), ("exited", "bay alone")]
    assert await crossings(client, "BAY7A02") == [
        ("entered", "yard and bay"),
        ("exited", "yard and bay"),
    ]


def turning_round() -> list[tuple[float, float]]:
    """A truck on the road 3 m south of a yard's southern fence (north = 0), east at 36 km/h,
    that turns round 12 m into the yard's driveway at east = 60 and drives on."""
    road = line((-300, -3), (60, -3), 10.0)
    turn = [(60, -3)] * 5 + line((60, -3), (60, 9), 1.0) + [(60, 9)] * 10
    back = line((60, 9), (60, -3), 1.0)
    return road + turn + back + line((60, -3), (500, -3), 10.0)


async def test_a_yard_drawn_with_thin_roads_keeps_its_own_hysteresis_in_its_driveway(
    client: Client,
) -> None:
    """A 400 m restricted yard as one MultiPolygon with four 20 m-wide, 4 km roads, and a
    120 m yard drawn as one Polygon with its 4 km access road: a truck turning round 12 m
    into the driveway (fixes of 5 m: clearly inside is 30 m in) is no crossing, as for the
    yards alone. Before, the fence's depth came from the roads (10 m), and the driveway was
    entered and left."""
    roads = [corridor(-20000 + 6000 * k, 10000) for k in range(4)]
    side, far = 120, 4000
    with_road = [(0, 0), (side, 0), (side, side - 14), (side + far, side - 14 + far)]
    with_road += [(side - 14 + far, side + far), (side - 14, side), (0, side)]
    await fence(client, "yard alone", "RDY7A01", "single", square(200, 200, 200))
    await fence(client, "roads and yard", "RDY7A02", "multi", [*roads, square(200, 200, 200)])
    await fence(client, "yard with its road", "RDY7A03", "single", [ring(with_road)])
    for plate in ("RDY7A01", "RDY7A02", "RDY7A03"):
        await drive(client, plate, turning_round())
    plates = ("RDY7A01", "RDY7A02", "RDY7A03")
    found = {plate: await crossings(client, plate) for plate in plates}
    assert found == {plate: [] for plate in plates}
