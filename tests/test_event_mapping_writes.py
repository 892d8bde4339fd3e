"""What the shipped event and reading mappings (traccar-event, the Samsara events,
geotab-logrecord, samsara-vehicle-stats-feed, fleetio-meter-entry, checklist) write onto a
vehicle, through their triggers: a partner id never moves from one vehicle to another, an
odometer of 0 is no reading, a fix without a GPS lock is no position, and a time far in the
future freezes nothing (docs/partners.md "Which vehicle an event is", docs/fleet.md)."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.store.position_names import STEP as rename_step
from gateway.store.position_names import rename_position_members
from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import (
    PAYLOADS,
    Client,
    create_trigger,
    hook,
    upload_mapping,
    upload_shipped,
)


def _payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


def _at(seconds: float) -> str:
    """A time `seconds` from now (negative: ago), as Traccar writes it."""
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds")


async def _vehicle(client: Client, plate: str, **fields: Any) -> None:
    response = await client.post(
        "/api/v1/entities/vehicle", headers=auth(), json={"plate": plate, **fields}
    )
    assert response.status == 201, await response.text()


async def _get(client: Client, plate: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def _traccar(client: Client) -> dict[str, Any]:
    await upload_shipped(client, "traccar-event")
    return await create_trigger(client, mapping="traccar-event")


def _event(unique_id: str, name: str, event_id: int, **position: Any) -> dict[str, Any]:
    forward = _payload("traccar_event_forward_geofence_exit.json")
    forward["device"].update(uniqueId=unique_id, name=name)
    forward["event"]["id"] = event_id
    forward["position"].update(position)
    return dict(forward)


async def test_an_event_named_after_another_vehicles_plate_writes_its_trackers_vehicle(
    client: Client,
) -> None:
    """A Traccar device named with another vehicle's plate (a typo, a unit moved without
    updating the name): the event is the vehicle's that has its tracker id, and the other
    vehicle keeps its own id; the tracker's fixes then still find one vehicle. A device
    whose id no vehicle has is found by its plate, and takes the id only when that vehicle
    has none."""
    await _vehicle(client, "ABC1D23", attributes={"tracker_id": "861110"})
    await _vehicle(client, "XYZ9A87", attributes={"tracker_id": "862220"})
    await _vehicle(client, "QWE4R56")
    trigger = await _traccar(client)
    status, answer = await hook(client, trigger, _event("861110", "XYZ9A87", 1))
    assert status == 200, answer
    assert answer["key"] == "ABC1D23" and "vehicle.geofence.exited" in answer["events"], answer
    mine, other = await _get(client, "ABC1D23"), await _get(client, "XYZ9A87")
    assert other["attributes"] == {"tracker_id": "862220"}, other
    assert "last_position" not in other and "odometer_km" not in other, other
    assert mine["attributes"]["tracker_id"] == "861110"
    assert mine["last_position"]["lat"] == -23.5611
    status, answer = await hook(client, trigger, _event("861110", "Caminhao 12", 2))
    assert status == 200 and answer["key"] == "ABC1D23", answer  # not ambiguous

    status, answer = await hook(client, trigger, _event("863330", "XYZ9A87", 3))
    assert status == 200 and answer["key"] == "XYZ9A87", answer
    assert (await _get(client, "XYZ9A87"))["attributes"]["tracker_id"] == "862220"
    status, answer = await hook(client, trigger, _event("864440", "QWE4R56", 4))
    assert status == 200 and answer["key"] == "QWE4R56", answer
    assert (await _get(client, "QWE4R56"))["attributes"]["tracker_id"] == "864440"


async def test_a_samsara_event_with_another_vehicles_plate_moves_no_samsara_id(
    client: Client,
) -> None:
    """samsara-geofence (as every Samsara event mapping) finds the vehicle by its Samsara id
    first: a licensePlate of another vehicle neither moves that vehicle's id nor lets both
    share it, and the next event naming only the id still finds one vehicle."""
    await _vehicle(client, "ABC1D23", attributes={"samsara_vehicle_id": "111"})
    await _vehicle(client, "XYZ9A87", attributes={"samsara_vehicle_id": "222"})
    await upload_shipped(client, "samsara-geofence")
    trigger = await create_trigger(client, mapping="samsara-geofence")
    webhook = _payload("samsara_v2_geofence_exit.json")
    webhook["data"]["vehicle"].update(id="111", licensePlate="XYZ9A87")
    status, answer = await hook(client, trigger, webhook)
    assert status == 200 and answer["key"] == "ABC1D23", answer
    assert (await _get(client, "XYZ9A87"))["attributes"]["samsara_vehicle_id"] == "222"
    only_id = copy.deepcopy(webhook)
    only_id["eventId"] = "another-event"
    del only_id["data"]["vehicle"]["licensePlate"]
    status, answer = await hook(client, trigger, only_id)
    assert status == 200 and answer["key"] == "ABC1D23", answer


async def test_a_traccar_event_odometer_of_zero_leaves_the_odometer(client: Client) -> None:
    """Many Traccar protocols say 0 for an odometer they do not know: no reading, the
    vehicle's odometer stays (the fix itself is written)."""
    await _vehicle(client, "ABC1D23", attributes={"tracker_id": "861110"})
    trigger = await _traccar(client)
    status, answer = await hook(client, trigger, _event("861110", "ABC1D23", 1))
    assert status == 200, answer
    assert (await _get(client, "ABC1D23"))["odometer_km"] == 98765.0
    later = _event("861110", "ABC1D23", 2, fixTime="2026-11-20T13:50:00.000+00:00")
    later["position"]["attributes"]["odometer"] = 0
    status, answer = await hook(client, trigger, later)
    assert status == 200 and "last_position.time" in answer["changed"], answer
    assert (await _get(client, "ABC1D23"))["odometer_km"] == 98765.0


async def test_a_fleetio_or_checklist_odometer_of_zero_leaves_the_odometer(
    client: Client,
) -> None:
    """A Fleetio meter not set up yet (value "0") and a checklist left at 0 say nothing of
    the odometer: neither it nor the time of its last reading moves."""
    await _vehicle(client, "ABC1D23", odometer_km=98765.0, attributes={"fleetio_vehicle_id": 987})
    await upload_shipped(client, "fleetio-meter-entry")
    fleetio = await create_trigger(
        client, name="fleetio", mapping="fleetio-meter-entry", params={"meter_unit": "km"}
    )
    entry = _payload("fleetio_meter_entry_created.json")
    entry["payload"].update(value="0", date="2026-11-30T10:00:00-03:00")
    status, answer = await hook(client, fleetio, entry)
    assert status == 200, answer
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["odometer_km"] == 98765.0 and "odometer_read_at" not in vehicle["attributes"]

    await upload_shipped(client, "checklist")
    checklist = await create_trigger(
        client,
        name="checklist",
        entity_type="other",
        kind="checklist",
        methods=["POST"],
        mapping="checklist",
    )
    for number, zero in enumerate((0, "0,0")):
        completed = _payload("checklist_completed.json")
        completed.update(checklistId=f"chk-zero-{number}", odometroKm=zero)
        status, answer = await hook(client, checklist, completed)
        assert status == 201 and "also" not in answer, answer  # the checklist alone
        assert (await _get(client, "ABC1D23"))["odometer_km"] == 98765.0


async def test_a_traccar_event_without_a_gps_lock_is_no_last_position(client: Client) -> None:
    """A Traccar event whose fix is (0, 0) or `valid: false` leaves the vehicle's last
    position where it was (the positions path refuses (0, 0) as `null_island`); the event
    itself is still announced."""
    await _vehicle(client, "ABC1D23", attributes={"tracker_id": "861110"})
    trigger = await _traccar(client)
    status, answer = await hook(client, trigger, _event("861110", "ABC1D23", 1))
    assert status == 200, answer
    before = (await _get(client, "ABC1D23"))["last_position"]
    for event_id, fix in enumerate(
        (
            {"latitude": 0, "longitude": 0, "valid": False},
            {"latitude": 0.0, "longitude": 0.0, "valid": True},
            {"latitude": -23.6, "longitude": -46.7, "valid": False},
        ),
        start=2,
    ):
        event = _event("861110", "ABC1D23", event_id, fixTime="2026-11-20T14:00:00.000Z", **fix)
        event["event"]["type"] = "alarm"
        event["event"]["attributes"] = {"alarm": "sos"}
        status, answer = await hook(client, trigger, event)
        assert status == 200 and answer["events"] == ["vehicle.alert"], answer
        assert not any(c.startswith("last_position") for c in answer["changed"]), answer
        assert (await _get(client, "ABC1D23"))["last_position"] == before


async def test_a_geotab_record_at_null_island_is_no_last_position(client: Client) -> None:
    """A Geotab LogRecord at (0, 0) (no fix; `null_island` on the positions path) changes
    nothing and announces no vehicle.position."""
    await _vehicle(client, "XYZ9A87", attributes={"tracker_id": "b3A"})
    await upload_shipped(client, "geotab-logrecord")
    geotab = await create_trigger(client, name="geotab", mapping="geotab-logrecord")
    record = {"id": "a1", "device": {"id": "b3A"}, "dateTime": "2026-12-04T10:00:00.000Z"}
    page = {"result": {"data": [{**record, "latitude": -23.1, "longitude": -46.6}]}}
    status, answer = await hook(client, geotab, page)
    assert status == 200, answer
    null_island = {**record, "id": "a2", "dateTime": "2026-12-04T10:01:00.000Z"}
    page = {"result": {"data": [{**null_island, "latitude": 0, "longitude": 0}]}}
    status, answer = await hook(client, geotab, page)
    [result] = answer["results"]
    assert status == 200 and result["changed"] == [] and result["events"] == [], answer
    vehicle = await _get(client, "XYZ9A87")
    assert vehicle["last_position"]["lat"] == -23.1, vehicle
    assert vehicle["attributes"]["geotab_log_id"] == "a1"
    await client.app[services_key].relay.run_until_idle()
    response = await client.get("/api/v1/events?type=vehicle.position", headers=auth())
    assert len((await response.json())["items"]) == 1


async def test_a_samsara_stats_point_at_null_island_is_no_last_position(client: Client) -> None:
    """The stats feed's newest GPS point at (0, 0) writes no position (the odometer it lists
    is still read) and announces no vehicle.position."""
    await _vehicle(client, "ABC1D23", attributes={"samsara_vehicle_id": "281474982859091"})
    await upload_shipped(client, "samsara-vehicle-stats-feed")
    feed = await create_trigger(client, name="stats", mapping="samsara-vehicle-stats-feed")
    page = _payload("samsara_vehicle_stats_feed.json")
    page["data"] = page["data"][:1]
    status, answer = await hook(client, feed, page)
    assert status == 200, answer
    point = {"time": "2026-11-20T13:50:00Z", "latitude": 0, "longitude": 0}
    page["data"][0].update(gps=[point], obdOdometerMeters=[{"value": 151480000}])
    status, answer = await hook(client, feed, page)
    [result] = answer["results"]
    assert status == 200 and result["changed"] == ["odometer_km"], answer
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["last_position"]["lat"] == -23.56118, vehicle
    await client.app[services_key].relay.run_until_idle()
    response = await client.get("/api/v1/events?type=vehicle.position", headers=auth())
    assert len((await response.json())["items"]) == 1


async def test_an_event_dated_in_the_future_freezes_nothing(client: Client) -> None:
    """A device clock a year ahead: its fix is skipped (more than 300 s ahead, as the
    positions path's `future` gate), so the next correct event still moves the position,
    odometer and ignition; one 2 minutes ahead is within the tolerance."""
    await _vehicle(client, "ABC1D23", attributes={"tracker_id": "861110"})
    trigger = await _traccar(client)
    ahead = _event("861110", "ABC1D23", 1, fixTime=_at(365 * 86400), latitude=-23.0)
    status, answer = await hook(client, trigger, ahead)
    assert status == 200 and "vehicle.geofence.exited" in answer["events"], answer
    assert "last_position.time" in answer["skipped"], answer
    assert "last_position" not in await _get(client, "ABC1D23")

    now = _event("861110", "ABC1D23", 2, fixTime=_at(-60), latitude=-23.1)
    now["position"]["attributes"].update(odometer=98766000, ignition=False)
    status, answer = await hook(client, trigger, now)
    assert status == 200 and "skipped" not in answer, answer
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["last_position"]["lat"] == -23.1
    assert vehicle["odometer_km"] == 98766.0 and vehicle["attributes"]["ignition"] is False

    close = _event("861110", "ABC1D23", 3, fixTime=_at(120), latitude=-23.2)
    status, answer = await hook(client, trigger, close)
    assert status == 200 and "skipped" not in answer, answer
    assert (await _get(client, "ABC1D23"))["last_position"]["lat"] == -23.2


async def test_a_vehicle_frozen_by_a_future_fix_time_before_moves_again(client: Client) -> None:
    """A stored fix time a year ahead (written before the rule) holds no later event back."""
    trigger = await _traccar(client)
    frozen_at = (datetime.now(UTC) + timedelta(days=365)).isoformat().replace("+00:00", "Z")
    frozen = {"lat": -10.0, "lon": -40.0, "time": frozen_at}
    await _vehicle(client, "XYZ9A87", attributes={"tracker_id": "862220"}, last_position=frozen)
    status, answer = await hook(client, trigger, _event("862220", "XYZ9A87", 4, fixTime=_at(-5)))
    assert status == 200 and "skipped" not in answer, answer
    assert (await _get(client, "XYZ9A87"))["last_position"]["lat"] == -23.5611


LICENCE = """
name: vehicle-licence
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: placa
  attributes.licence_expires_at:
    from: vence
    transforms: [{datetime: {parse: iso8601}}]
    only_forward: true
  odometer_km: {from: km, only_forward: {by: attributes.odometer_read_at}}
  attributes.odometer_read_at: {from: lido, transforms: [{datetime: {parse: iso8601}}]}
"""


async def test_a_date_ordered_by_itself_may_lie_ahead_but_a_readings_time_may_not(
    client: Client,
) -> None:
    """The future rule is for a reading's time (`{by: ...}`): a date ordered by itself (a
    licence's expiry, next year) is written and moves only forward, as before."""
    await upload_mapping(client, LICENCE)
    trigger = await create_trigger(client, mapping="vehicle-licence")
    next_year, later = _at(365 * 86400), _at(2 * 365 * 86400)
    body = {"placa": "ABC1D23", "vence": next_year, "km": 1000, "lido": _at(3600)}
    status, answer = await hook(client, trigger, body)
    assert status == 201, answer
    assert answer["skipped"] == ["odometer_km", "attributes.odometer_read_at"], answer
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["attributes"]["licence_expires_at"].startswith(next_year[:16])
    assert "odometer_km" not in vehicle
    body = {"placa": "ABC1D23", "vence": later, "km": 1000, "lido": _at(-60)}
    status, answer = await hook(client, trigger, body)
    assert status == 200 and "skipped" not in answer, answer
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["attributes"]["licence_expires_at"].startswith(later[:16])
    assert vehicle["odometer_km"] == 1000
    status, answer = await hook(client, trigger, {"placa": "ABC1D23", "vence": next_year})
    assert answer["skipped"] == ["attributes.licence_expires_at"], answer


async def test_a_retried_older_identification_without_a_gps_lock_keeps_the_newer_driver(
    client: Client,
) -> None:
    """Driver B identified at 14:00, then Traccar retries driver A's identification of 13:00
    from a fix without a GPS lock (no fix time to order it by): the vehicle keeps B, ordered
    by the events' own times."""
    await _vehicle(client, "ABC1D23", attributes={"tracker_id": "861110"})
    trigger = await _traccar(client)
    for event_id, (driver, at, fix) in enumerate(
        (
            ("DRIVER-B", "2026-11-20T14:00:00.000Z", {"valid": True}),
            ("DRIVER-A", "2026-11-20T13:00:00.000Z", {"valid": False}),
        ),
        start=1,
    ):
        event = _event("861110", "ABC1D23", event_id, fixTime=at, **fix)
        event["event"].update(
            type="driverChanged", eventTime=at, attributes={"driverUniqueId": driver}
        )
        status, answer = await hook(client, trigger, event)
        assert status == 200, answer
    attributes = (await _get(client, "ABC1D23"))["attributes"]
    assert attributes["traccar_driver_unique_id"] == "DRIVER-B", attributes


OLD_NAMES = """
name: old-position-names
direction: inbound
entity_type: vehicle
key: [plate]
emit: [{type: vehicle.position, announce: {changed: [last_position.latitude]}}]
fields:
  plate: placa
  last_position.latitude: {from: lat, only_forward: {by: last_position.fix_time}}
  last_position.longitude: {from: lon, only_forward: {by: last_position.fix_time}}
  last_position.course: {from: rumo, only_forward: {by: last_position.fix_time}}
  last_position.fix_time: {from: em, only_forward: true}
"""


async def test_a_mapping_with_the_old_position_names_writes_the_spec_names(
    client: Client,
) -> None:
    """A mapping uploaded before `last_position` took SPEC §3.5's names (`latitude`,
    `longitude`, `fix_time`, `course`) writes `lat`, `lon`, `time`, `heading`; its ordering by
    the old `fix_time` still holds an older fix back and its `changed` still announces; its
    upload is taken with a warning per old name."""
    uploaded = await upload_mapping(client, OLD_NAMES)
    assert len(uploaded["warnings"]) == 8, uploaded["warnings"]
    assert "'last_position.fix_time' is a deprecated name, write 'last_position.time'" in (
        " ".join(uploaded["warnings"])
    )
    trigger = await create_trigger(client, mapping="old-position-names")
    fix = {"placa": "ABC1D23", "lat": -23.5, "lon": -46.6, "rumo": 90, "em": _at(-60)}
    earlier = {"time": _at(-600), "lat": -23.0, "lon": -46.0}
    await _vehicle(client, "ABC1D23", last_position=earlier)
    status, answer = await hook(client, trigger, fix)
    assert status == 200 and "vehicle.position" in answer["events"], answer
    position = (await _get(client, "ABC1D23"))["last_position"]
    assert position == {"time": position["time"], "lat": -23.5, "lon": -46.6, "heading": 90}
    older = {**fix, "lat": -20.0, "em": _at(-120)}
    status, answer = await hook(client, trigger, older)
    assert status == 200 and "last_position.lat" in answer["skipped"], answer
    assert "vehicle.position" not in answer["events"], answer
    assert (await _get(client, "ABC1D23"))["last_position"] == position


OLD_NAMES_READ = """
name: old-position-answer
direction: outbound
body:
  placa: entity.plate
  latitude: {from: entity.last_position.latitude, required: true}
  longitude: entity.last_position.longitude
  quando: entity.last_position.fix_time
  onde: "join(',', [to_string(entity.last_position.latitude), to_string(entity.last_position.lon)])"
"""


async def test_an_outbound_mapping_reading_the_old_position_names_reads_the_spec_names(
    client: Client,
) -> None:
    """A customer's answer mapping written before the rename reads `last_position.latitude`:
    it reads `lat` (it read null, and a required one refused every read), in a plain path and
    inside an expression alike; its upload is taken with a warning per old name read."""
    uploaded = await upload_mapping(client, OLD_NAMES_READ)
    assert uploaded["warnings"] == [
        "/body/latitude/from: 'last_position.latitude' is a deprecated name, read "
        "'last_position.lat'",
        "/body/longitude: 'last_position.longitude' is a deprecated name, read 'last_position.lon'",
        "/body/quando: 'last_position.fix_time' is a deprecated name, read 'last_position.time'",
        "/body/onde: 'last_position.latitude' is a deprecated name, read 'last_position.lat'",
    ], uploaded["warnings"]
    trigger = await create_trigger(client, response_mapping="old-position-answer")
    at = "2026-12-01T10:00:00Z"
    await _vehicle(client, "ABC1D23", last_position={"time": at, "lat": -23.5, "lon": -46.6})
    response = await client.get(
        f"/hooks/{trigger['id']}/ABC1D23", headers={"Authorization": f"Bearer {trigger['token']}"}
    )
    assert response.status == 200, await response.text()
    assert await response.json() == {
        "placa": "ABC1D23",
        "latitude": -23.5,
        "longitude": -46.6,
        "quando": at,
        "onde": "-23.5,-46.6",
    }


async def test_expose_and_an_answer_mapping_reading_old_position_names_agree(
    client: Client,
) -> None:
    """An answer mapping requiring `entity.last_position.latitude` reads `lat`: a trigger
    exposing `last_position.lat` is taken, as one exposing the old name (which exposes the
    new one), and both answer the position; one exposing neither is a 422 on `/expose`. A new
    version reading the old names under a trigger exposing the new ones is taken."""
    await upload_mapping(client, OLD_NAMES_READ.replace("old-position-answer", "answer"))
    at = "2026-12-01T10:00:00Z"
    await _vehicle(client, "ABC1D23", last_position={"time": at, "lat": -23.5, "lon": -46.6})
    for i, shown in enumerate(("last_position.lat", "last_position.latitude", "last_position")):
        expose = ["plate", shown, "last_position.lon"]
        trigger = await create_trigger(
            client, name=f"t{i}", response_mapping="answer", expose=expose
        )
        response = await client.get(
            f"/hooks/{trigger['id']}/ABC1D23",
            headers={"Authorization": f"Bearer {trigger['token']}"},
        )
        assert response.status == 200, await response.text()
        assert (await response.json())["latitude"] == -23.5, shown
    spec = {"name": "hidden", "entity_type": "vehicle", "methods": ["GET"]}
    spec |= {"response_mapping": "answer", "expose": ["plate"]}
    response = await client.post("/api/v1/triggers", json=spec, headers=auth())
    problem = await response.json()
    assert response.status == 422 and problem["errors"][0]["pointer"] == "/expose", problem
    assert "requires entity.last_position.latitude" in problem["errors"][0]["message"], problem
    again = OLD_NAMES_READ.replace("old-position-answer", "answer") + "  extra: entity.plate\n"
    assert (await upload_mapping(client, again))["active"]


async def test_vehicles_stored_with_the_old_position_names_read_with_the_spec_names(
    client: Client,
) -> None:
    """The upgrade step renames every stored vehicle's old `last_position` members once,
    recorded in `migrations`; two processes running it at once rename each vehicle once."""
    store = client.app[services_key].store
    entities, meta = store.db["entities"], store.db["migrations"]
    await _vehicle(client, "ABC1D23", last_position={"lat": -23.5, "lon": -46.6, "time": _at(-9)})
    await _vehicle(client, "XYZ9A87")
    old = {
        "latitude": -23.5,
        "longitude": -46.6,
        "course": 12.5,
        "fix_time": "2026-12-01T10:00:00Z",
    }
    await entities.update_one({"nk": "ABC1D23"}, {"$set": {"data.last_position": old}})
    await meta.delete_one({"_id": rename_step})
    before = await _get(client, "ABC1D23")
    renamed = await asyncio.gather(
        rename_position_members(entities, meta), rename_position_members(entities, meta)
    )
    assert sum(renamed) == 1 and await meta.find_one({"_id": rename_step}) is not None
    after = await _get(client, "ABC1D23")
    assert after["last_position"] == {
        "time": "2026-12-01T10:00:00Z", "lat": -23.5, "lon": -46.6, "heading": 12.5
    }  # fmt: skip
    assert after["version"] == before["version"] + 1
    await entities.update_one({"nk": "XYZ9A87"}, {"$set": {"data.last_position": old}})
    assert await rename_position_members(entities, meta) == 0  # once per database
