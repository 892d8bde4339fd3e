"""SPEC §6 quality gates: "reject invalid coordinates, (0,0), ...; rejected fixes are kept in
the track marked with the reason, counted by reason in metrics, and never move the last
position or the odometer". A latitude of 95 or a longitude of 181 (a firmware swapping them, a
unit sending micro-degrees) was a 422 at the append, while (0, 0) went through the gate: not
in the track, not under `gateway_fleet_fixes_rejected_total{reason="invalid_coordinates"}`.
Now both are the fold's: stored, flagged, counted, announced, and a coordinate that is no
number at all (text, missing, NaN) is still a 422."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema_rs

from gateway.ui.maps import TrackInput, draw
from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import (
    Client,
    bearer,
    create_position_trigger,
    hook,
    upload_shipped,
    vehicle_track,
)

PLATE = "ABC1D23"
START = (-23.5505, -46.6333)  # São Paulo
NEXT = (-23.5405, -46.6333)  # 1.11 km north


# Ten minutes ago when the module is read: within the gates' horizon, never ahead.
_BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)


def _at(seconds: float) -> str:
    return (_BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _fix(seconds: float, lat: Any, lon: Any) -> dict[str, Any]:
    return {"plate": PLATE, "time": _at(seconds), "lat": lat, "lon": lon}


async def _vehicle(client: Client, **data: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/entities/vehicle", json={"plate": PLATE, **data}, headers=auth()
    )
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def _get(client: Client, path: str) -> Any:
    response = await client.get(path, headers=auth())
    assert response.status == 200, await response.text()
    return await response.json()


async def _fold(client: Client) -> None:
    await client.app[services_key].fold.run_until_idle()


async def _rejected_series(client: Client) -> list[str]:
    metrics = await (await client.get("/metrics")).text()
    return [m for m in metrics.splitlines() if m.startswith("gateway_fleet_fixes_rejected_total")]


async def test_a_fix_off_the_globe_is_kept_flagged_counted_and_announced_like_null_island(
    client: Client,
) -> None:
    await _vehicle(client)
    response = await client.post(
        "/api/v1/geofences",
        headers=auth(),
        json={"name": "Base", "kind": "authorized",
              "circle": {"lat": START[0], "lon": START[1], "radius_m": 3000}},
    )  # fmt: skip
    assert response.status == 201, await response.text()
    trigger = await create_position_trigger(client)
    sent = [
        _fix(0, *START),
        _fix(60, *NEXT),
        _fix(70, 95.0, NEXT[1]),  # a latitude off the globe
        _fix(80, NEXT[0], 181.0),  # a longitude off the globe
        _fix(90, 0.0, 0.0),  # what SPEC groups them with
        _fix(100, -235405000, -466333000),  # a unit sending micro-degrees
    ]
    statuses = [(await hook(client, trigger, fix))[0] for fix in sent]
    assert statuses == [201] * 6, statuses
    await _fold(client)

    track = await vehicle_track(client)
    assert [(f["lat"], f["lon"], f["rejected"]) for f in track["items"]] == [
        (*START, None),
        (*NEXT, None),
        (95.0, NEXT[1], "invalid_coordinates"),
        (NEXT[0], 181.0, "invalid_coordinates"),
        (0.0, 0.0, "null_island"),
        (-235405000.0, -466333000.0, "invalid_coordinates"),
    ]
    series = await _rejected_series(client)
    assert 'gateway_fleet_fixes_rejected_total{reason="invalid_coordinates"} 3.0' in series
    assert 'gateway_fleet_fixes_rejected_total{reason="null_island"} 1.0' in series
    # Neither the last position, nor the odometer, nor the fence moved.
    car = await _get(client, f"/api/v1/entities/vehicle/{PLATE}")
    assert (car["last_position"]["lat"], car["last_position"]["lon"]) == NEXT
    assert datetime.fromisoformat(car["last_position"]["time"]) == _BASE + timedelta(seconds=60)
    assert abs(car["odometer_km"] - 1.112) < 0.002, car["odometer_km"]
    exits = await _get(client, "/api/v1/events?type=vehicle.geofence.exited")
    assert exits["items"] == []
    # One quality event for the run, as for (0, 0): its place is none an event can carry.
    announced = await _get(client, "/api/v1/events?type=vehicle.position.rejected")
    details = {e["detail"]["reason"]: e["detail"] for e in announced["items"]}
    assert sorted(details) == ["invalid_coordinates", "null_island"]
    first = details["invalid_coordinates"]
    when = datetime.fromisoformat(first["fix"]["time"])
    assert (first["count"], when) == (1, _BASE + timedelta(seconds=70))
    assert (first["fix"]["lat"], first["fix"]["lon"]) == (None, None)
    # The track's answer fits the documented schema (it said latitude within [-90, 90]).
    doc = await (await client.get("/openapi.json")).json()
    path = doc["paths"]["/api/v1/entities/vehicle/{ref}/positions"]["get"]
    schema = path["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]}).validate(track)


async def test_a_batch_stores_an_off_globe_fix_and_refuses_a_coordinate_that_is_no_number(
    client: Client,
) -> None:
    await _vehicle(client)
    trigger = await create_position_trigger(client)
    batch = [
        _fix(0, *START),
        _fix(10, -91, START[1]),  # an integer, off the globe: stored
        _fix(20, 1e300, -1e300),  # as far off as a float goes: stored
        _fix(30, 12345678901234567890123, START[1]),  # past 64 bits (read as its digits): stored
        _fix(40, "north", START[1]),  # no number: refused
        {"plate": PLATE, "time": _at(50), "lat": START[0]},  # no longitude: refused
        _fix(60, True, START[1]),  # a boolean: refused
    ]
    status, answer = await hook(client, trigger, batch)
    assert status == 207, answer
    assert [r["status"] for r in answer["results"]] == [201, 201, 201, 201, 422, 422, 422]
    refused = [r["problem"]["errors"] for r in answer["results"][4:]]
    assert [[(e["pointer"], e["keyword"]) for e in errors] for errors in refused] == [
        [("/lat", "type")],
        [("/lon", "required")],
        [("/lat", "type")],
    ]
    assert answer["summary"] == {"items": 7, "stored": 4, "duplicates": 0, "failed": 3}
    # 1e999 is no number JSON has (orjson reads it as none): the body is malformed.
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=f'{{"plate": "{PLATE}", "time": "{_at(70)}", "lat": 1e999, "lon": 0.5}}',
        headers={**bearer(trigger), "Content-Type": "application/json"},
    )
    assert response.status == 400, await response.text()
    await _fold(client)
    track = await vehicle_track(client)
    assert [f["rejected"] for f in track["items"]] == [None] + ["invalid_coordinates"] * 3
    assert track["items"][3]["lat"] == 1.2345678901234568e22
    series = await _rejected_series(client)
    assert 'gateway_fleet_fixes_rejected_total{reason="invalid_coordinates"} 3.0' in series
    car = await _get(client, f"/api/v1/entities/vehicle/{PLATE}")
    assert (car["last_position"]["lat"], car["last_position"]["lon"]) == START


async def test_an_osmand_query_off_the_globe_is_kept_flagged_and_text_still_refused(
    client: Client,
) -> None:
    """The OsmAnd protocol (a query string or a form, every value text that the mapping casts):
    `lat=95` is a number off the globe, stored and flagged; `lat=NaN` and `lat=north` are no
    numbers (the mapping's cast refuses them), a 422 naming `/lat`."""
    await _vehicle(client, attributes={"tracker_id": "7"})
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(client, mapping="osmand", format="form")
    stamp = int(datetime.now(UTC).timestamp()) - 60
    for query, expected in (
        (f"id=7&lat=-23.55&lon=-46.63&timestamp={stamp - 20}", 201),
        (f"id=7&lat=95&lon=-46.63&timestamp={stamp - 10}", 201),
        (f"id=7&lat=NaN&lon=-46.63&timestamp={stamp - 5}", 422),
        (f"id=7&lat=north&lon=-46.63&timestamp={stamp - 4}", 422),
        (f"id=7&location=-23.55,-181&timestamp={stamp}", 201),
    ):
        response = await client.post(f"/hooks/{trigger['id']}?{query}", headers=bearer(trigger))
        answer = await response.json()
        assert response.status == expected, (query, answer)
        if expected == 422:
            assert [e["pointer"] for e in answer["errors"]] == ["/lat"], answer
    await _fold(client)
    track = await vehicle_track(client)
    assert [(f["lat"], f["lon"], f["rejected"]) for f in track["items"]] == [
        (-23.55, -46.63, None),
        (95, -46.63, "invalid_coordinates"),
        (-23.55, -181, "invalid_coordinates"),
    ]


def test_the_admin_map_draws_no_fix_off_the_globe() -> None:
    """The vehicle and fleet pages draw the recent track, refused fixes as marks: a fix at
    latitude 95 stretched the sheet past the pole (1e300: to no number at all)."""
    good = [{"lat": -23.55 + i * 1e-3, "lon": -46.63} for i in range(5)]
    off = [
        {"lat": 95.0, "lon": -46.63, "rejected": "invalid_coordinates"},
        {"lat": 1e300, "lon": -1e300, "rejected": "invalid_coordinates"},
        {"lat": -23.55, "lon": 181.0, "rejected": "invalid_coordinates"},
    ]
    clean = draw([TrackInput(PLATE, good)], [])
    assert draw([TrackInput(PLATE, [*good[:2], *off, *good[2:]])], []) == clean
    assert draw([TrackInput(PLATE, off)], []) is None  # nothing to draw
