"""Real partners' payloads, as their public docs show them, through a trigger into the
vehicles and tracks they name: the shipped mappings with the variants partners really send
(a device not named by its plate, a vehicle without a licence plate), and formats an admin
integrates with a mapping of their own (Teltonika, Geotab StatusData, Webfleet)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import (
    PAYLOADS,
    Client,
    create_position_trigger,
    create_trigger,
    hook,
    upload_mapping,
    upload_shipped,
    vehicle_track,
)


async def _vehicle(client: Client, plate: str, **attributes: Any) -> None:
    response = await client.post(
        "/api/v1/entities/vehicle", headers=auth(), json={"plate": plate, "attributes": attributes}
    )
    assert response.status == 201, await response.text()


async def _get(client: Client, plate: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def _events(client: Client, etype: str) -> list[dict[str, Any]]:
    await client.app[services_key].relay.run_until_idle()
    response = await client.get(f"/api/v1/events?type={etype}", headers=auth())
    return list((await response.json())["items"])


async def _count(client: Client) -> int:
    response = await client.get("/api/v1/entities/vehicle?limit=200", headers=auth())
    return len((await response.json())["items"])


def _payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


async def test_a_traccar_event_of_a_device_not_named_by_its_plate_updates_its_vehicle(
    client: Client,
) -> None:
    """Traccar's device name is free text ("Caminhao 12"): the event finds the vehicle by the
    device's unique id, as the position forward does, instead of being refused (or creating
    a vehicle named after the device)."""
    await _vehicle(client, "ABC1D23", tracker_id="353861053849681")
    await upload_shipped(client, "traccar-event")
    trigger = await create_trigger(client, mapping="traccar-event")
    forward = _payload("traccar_event_forward_geofence_exit.json")
    forward["device"]["name"] = "Caminhao 12"
    status, answer = await hook(client, trigger, forward)
    assert status == 200, answer
    assert answer["key"] == "ABC1D23" and "vehicle.geofence.exited" in answer["events"]
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["odometer_km"] == 98765.0
    assert vehicle["last_position"]["time"] == "2026-11-20T13:45:12Z"
    assert await _count(client) == 1


async def test_an_event_naming_a_plate_the_fleet_lacks_finds_the_vehicle_by_its_tracker(
    client: Client,
) -> None:
    """traccar-event creates no vehicle (`create: false`); its key is `first_of: [tracker
    id, plate]`: a device named after a plate the fleet does not have (a mistyped name, the
    old plate of a converted vehicle) is found by its tracker id instead of being refused.
    A device that neither finds is refused, nothing created."""
    await _vehicle(client, "ABC1D23", tracker_id="353861053849681")
    await upload_shipped(client, "traccar-event")
    trigger = await create_trigger(client, mapping="traccar-event")
    forward = _payload("traccar_event_forward_geofence_exit.json")
    forward["device"]["name"] = "QWE4R56"
    dry = await client.post(
        "/api/v1/mappings/test", json={"name": "traccar-event", "payload": forward}, headers=auth()
    )
    [result] = (await dry.json())["results"]
    assert result["key"] == {"attributes.tracker_id": "353861053849681"}, result
    assert result["entity"]["write"] == "update", result  # as the trigger will find it
    status, answer = await hook(client, trigger, forward)
    assert status == 200, answer
    assert answer["key"] == "ABC1D23" and "vehicle.geofence.exited" in answer["events"]
    forward["device"]["uniqueId"] = "999999999999999"
    status, problem = await hook(client, trigger, forward)
    assert status == 422 and problem["errors"][0]["keyword"] == "not_found", problem
    assert await _count(client) == 1


async def test_the_fold_does_not_move_back_a_position_an_event_forward_stored_newer(
    client: Client,
) -> None:
    """Traccar's event forward writes the vehicle's `last_position` (only forward, by its fix
    time); fixes of the track older than it, folded after, move the odometer but leave the
    newer position where it is (SPEC §6: a late fix never replaces a newer one); a fix newer
    than it moves it on."""
    await _vehicle(client, "ABC1D23", tracker_id="353861053849681")
    await upload_shipped(client, "traccar-event")
    events = await create_trigger(client, mapping="traccar-event")
    forward = _payload("traccar_event_forward_geofence_exit.json")
    forward["position"]["fixTime"] = "2026-12-04T09:00:00.000-03:00"  # 12:00 UTC
    status, answer = await hook(client, events, forward)
    assert status == 200, answer
    positions = await create_position_trigger(client)
    older = [
        {"plate": "ABC1D23", "time": f"2026-12-04T11:0{m}:00Z", "lat": -23.55 - m / 100,
         "lon": -46.63, "speed_kmh": 40}
        for m in range(3)
    ]  # fmt: skip
    status, answer = await hook(client, positions, older)
    assert status == 200, answer
    await client.app[services_key].fold.run_until_idle()
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["last_position"]["time"] == "2026-12-04T12:00:00Z", vehicle
    assert vehicle["last_position"]["lat"] == forward["position"]["latitude"]
    start_km = forward["position"]["attributes"]["odometer"] / 1000
    assert vehicle["odometer_km"] == pytest.approx(start_km + 2.224, abs=0.002)  # 2 x 0.01°
    newer = [{**older[0], "time": "2026-12-04T12:00:30Z", "lat": -23.5}]
    status, answer = await hook(client, positions, newer)
    assert status == 200, answer
    await client.app[services_key].fold.run_until_idle()
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["last_position"]["time"] == "2026-12-04T12:00:30.000Z", vehicle
    assert vehicle["last_position"]["lat"] == -23.5


async def test_a_samsara_geofence_webhook_for_a_vehicle_without_a_licence_plate_finds_it_by_id(
    client: Client,
) -> None:
    """Samsara leaves `licensePlate` out (or blank) for a vehicle the fleet never gave one."""
    await _vehicle(client, "ABC1D23", samsara_vehicle_id="281474982859091")
    await upload_shipped(client, "samsara-geofence")
    trigger = await create_trigger(client, mapping="samsara-geofence")
    for plate in (None, "", "  "):
        body = _payload("samsara_v2_geofence_exit.json")
        if plate is None:
            del body["data"]["vehicle"]["licensePlate"]
        else:
            body["data"]["vehicle"]["licensePlate"] = plate
        status, answer = await hook(client, trigger, body)
        assert status == 200, answer
        assert answer["key"] == "ABC1D23" and "vehicle.geofence.exited" in answer["events"]
    [exited, *_] = await _events(client, "vehicle.geofence.exited")
    assert exited["detail"]["geofence"]["name"] == "Garagem SP"
    assert await _count(client) == 1


TELTONIKA = """
name: teltonika-aws-json
direction: inbound
target: positions
items: "to_array(@)"
fields:
  tracker_id: {from: imei, required: true, transforms: [string]}
  time: {from: state.reported.ts, required: true, transforms: [{datetime: {parse: unix_ms}}]}
  lat:
    from: state.reported.latlng
    required: true
    transforms: [{split: {separator: ",", index: 0}}, number]
  lon:
    from: state.reported.latlng
    required: true
    transforms: [{split: {separator: ",", index: 1}}, number]
  speed_kmh: {from: state.reported.sp, transforms: [number]}
  heading: {from: state.reported.ang, transforms: [number]}
  odometer_km: {from: 'state.reported."16"', transforms: [{convert: {from: m, to: km}}, {round: 1}]}
  ignition: {from: 'state.reported."239"', transforms: [boolean]}
  attributes.satellites: {from: state.reported.sat, transforms: [integer]}
  attributes.altitude_m: {from: state.reported.alt, transforms: [number]}
"""


async def test_teltonika_json_records_of_two_devices_in_one_body_reach_each_vehicles_track(
    client: Client,
) -> None:
    """Teltonika's JSON codec (FMB devices to AWS IoT, forwarded by an IoT rule that adds the
    IMEI): epoch milliseconds, "lat,lng" in one text, every value text or number, IO elements
    by their numeric id (16 total odometer in metres, 239 ignition)."""
    await _vehicle(client, "ABC1D23", tracker_id="352093081429150")
    await _vehicle(client, "XYZ9A87", tracker_id="352093081429151")
    await upload_mapping(client, TELTONIKA)
    trigger = await create_position_trigger(client, mapping="teltonika-aws-json")
    body = [
        {
            "imei": "352093081429150",
            "state": {
                "reported": {
                    "ts": 1795685112000,
                    "pr": 0,
                    "latlng": "-23.561180,-46.655780",
                    "alt": "761",
                    "ang": "88",
                    "sat": "11",
                    "sp": "47",
                    "evt": "0",
                    "239": "1",
                    "16": "152340400",
                }
            },
        },
        {
            "imei": 352093081429151,
            "state": {
                "reported": {
                    "ts": "1795685113500",
                    "latlng": "-22.906850,-43.172900",
                    "alt": 33,
                    "ang": 180,
                    "sat": 9,
                    "sp": 0,
                    "239": 0,
                    "16": 94123000,
                }
            },
        },
    ]
    status, answer = await hook(client, trigger, body)
    assert status in (200, 201), answer
    [first] = (await vehicle_track(client, "ABC1D23"))["items"]
    assert first["time"] == "2026-11-26T09:25:12Z"
    assert (first["lat"], first["lon"]) == (-23.56118, -46.65578)
    assert first["speed_kmh"] == 47 and first["heading"] == 88 and first["ignition"] is True
    assert first["odometer_km"] == 152340.4
    [second] = (await vehicle_track(client, "XYZ9A87"))["items"]
    assert second["time"] == "2026-11-26T09:25:13.500Z"
    assert second["ignition"] is False and second["odometer_km"] == 94123.0


GEOTAB_STATUS = """
name: geotab-statusdata-meters
direction: inbound
entity_type: vehicle
key: [attributes.tracker_id]
items: >-
  result.data[?diagnostic.id=='DiagnosticOdometerAdjustmentId'
  || diagnostic.id=='DiagnosticEngineHoursAdjustmentId']
fields:
  attributes.tracker_id: {from: device.id, required: true}
  odometer_km:
    when: {from: diagnostic.id, equals: DiagnosticOdometerAdjustmentId}
    then: {from: data, transforms: [{convert: {from: m, to: km}}, {round: 1}]}
    only_forward: true
  attributes.engine_hours:
    when: {from: diagnostic.id, equals: DiagnosticEngineHoursAdjustmentId}
    then: {from: data, transforms: [{convert: {from: s, to: h}}, {round: 1}]}
    only_forward: true
"""


async def test_a_geotab_statusdata_page_moves_odometers_from_metres_and_engine_hours_from_seconds(
    client: Client,
) -> None:
    """Geotab's GetFeed of StatusData: every diagnostic in one list, told apart by its id; the
    odometer in metres, engine hours in seconds; other diagnostics left out."""
    await _vehicle(client, "ABC1D23", tracker_id="b3")
    await upload_mapping(client, GEOTAB_STATUS)
    trigger = await create_trigger(client, mapping="geotab-statusdata-meters")

    def status(record_id: str, diagnostic: str, value: float) -> dict[str, Any]:
        return {
            "id": record_id,
            "data": value,
            "dateTime": "2026-11-20T13:45:02.063Z",
            "device": {"id": "b3"},
            "diagnostic": {"id": diagnostic},
            "controller": "ControllerNoneId",
            "version": "00000000000a1b2c",
        }

    page = {
        "jsonrpc": "2.0",
        "result": {
            "data": [
                status("a1", "DiagnosticOdometerAdjustmentId", 152340412.5),
                status("a2", "DiagnosticEngineHoursAdjustmentId", 20885760.0),
                status("a3", "DiagnosticBatteryTemperatureId", 31.0),
            ],
            "toVersion": "00000000000a1b2d",
        },
    }
    status_code, answer = await hook(client, trigger, page)
    assert status_code == 200, answer
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["odometer_km"] == 152340.4
    assert vehicle["attributes"]["engine_hours"] == 5801.6
    assert "battery_temperature" not in json.dumps(vehicle)


async def test_traccar_alarm_and_overspeed_events_become_alert_and_speeding_events(
    client: Client,
) -> None:
    """Traccar forwards an `alarm` event (the alarm in its attributes: sos, powerCut, ...) and
    a `deviceOverspeed` one (speed and limit in knots), as Samsara's alerts become ours."""
    await _vehicle(client, "ABC1D23")
    await upload_shipped(client, "traccar-event")
    trigger = await create_trigger(client, mapping="traccar-event")
    alarm = _payload("traccar_event_forward_geofence_exit.json")
    del alarm["geofence"]
    alarm["event"].update(type="alarm", geofenceId=0, attributes={"alarm": "sos"})
    status, answer = await hook(client, trigger, alarm)
    assert status == 200, answer
    assert "vehicle.alert" in answer["events"], answer
    overspeed = json.loads(json.dumps(alarm))
    knots = {"speed": 54.0, "speedLimit": 43.2}
    overspeed["event"].update(type="deviceOverspeed", attributes=knots)
    status, answer = await hook(client, trigger, overspeed)
    assert status == 200 and "vehicle.speeding" in answer["events"], answer
    [sos] = await _events(client, "vehicle.alert")
    assert sos["detail"]["alarm"] == "sos" and sos["detail"]["traccar_event"] == "alarm"
    [speeding] = await _events(client, "vehicle.speeding")
    assert speeding["detail"]["speed_kmh"] == 100.0
    assert speeding["detail"]["speed_limit_kmh"] == 80.0


WEBFLEET = """
name: webfleet-objects
direction: inbound
target: positions
items: "[?latitude_mdeg != null]"
fields:
  plate: {from: objectname, transforms: [plate]}
  tracker_id: {from: objectno, required: true}
  # pos_time is the account's local time, dd/mm/yyyy, unless the call says useISO8601=true
  time:
    coalesce:
      - from: pos_time
        when: "!contains(pos_time, 'T')"
        transforms: [{datetime: {parse: "%d/%m/%Y %H:%M:%S", input_tz: America/Sao_Paulo}}]
      - {from: pos_time, transforms: [{datetime: {parse: iso8601}}]}
    required: true
  lat: {from: latitude_mdeg, required: true, transforms: [{scale: 0.000001}, {round: 6}]}
  lon: {from: longitude_mdeg, required: true, transforms: [{scale: 0.000001}, {round: 6}]}
  speed_kmh: speed
  heading: course
  odometer_km: {from: odometer, transforms: [{scale: 0.1}, {round: 1}]}
  ignition: {from: ignition, transforms: [boolean]}
"""


async def test_webfleet_objects_in_micro_degrees_hectometres_and_local_time_reach_their_tracks(
    client: Client,
) -> None:
    """WEBFLEET.connect's showObjectReportExtern (outputformat=json): a list of objects, the
    position in micro-degrees, the odometer in 100 m, the time in the account's zone as
    dd/mm/yyyy unless the call asked for ISO 8601; an object never positioned has no position."""
    await _vehicle(client, "ABC1D23")
    await _vehicle(client, "XYZ9A87", tracker_id="070")
    await upload_mapping(client, WEBFLEET)
    trigger = await create_position_trigger(client, mapping="webfleet-objects")
    objects = [
        {
            "objectno": "069",
            "objectname": "ABC-1D23",
            "objectuid": "1-44370-66C54A2FB",
            "pos_time": "26/11/2026 06:25:12",
            "latitude_mdeg": -23561180,
            "longitude_mdeg": -46655780,
            "speed": 47,
            "course": 88,
            "odometer": 1523404,
            "ignition": 1,
        },
        {
            "objectno": "070",
            "objectname": "Carreta 7",
            "pos_time": "2026-11-26T06:25:13-03:00",
            "latitude_mdeg": -22906850,
            "longitude_mdeg": -43172900,
            "speed": 0,
            "course": 180,
            "odometer": 941230,
            "ignition": 0,
        },
        {"objectno": "071", "objectname": "Reserva"},
    ]
    status, answer = await hook(client, trigger, objects)
    assert status == 200 and answer["summary"]["stored"] == 2, answer
    [first] = (await vehicle_track(client, "ABC1D23"))["items"]
    assert first["time"] == "2026-11-26T09:25:12Z"
    assert (first["lat"], first["lon"]) == (-23.56118, -46.65578)
    assert first["odometer_km"] == 152340.4 and first["ignition"] is True
    [second] = (await vehicle_track(client, "XYZ9A87"))["items"]
    assert second["time"] == "2026-11-26T09:25:13Z"
    assert second["odometer_km"] == 94123.0 and second["ignition"] is False


async def test_flespi_takes_a_webhooks_single_message_and_a_rest_answers_result_list(
    client: Client,
) -> None:
    """flespi sends its messages three ways: a stream posts an array, a webhook on the device
    messages topic posts one message (the MQTT payload), and the REST API
    (GET /gw/devices/{id}/messages, polled by a schedule) answers {"result": [...]}."""
    await _vehicle(client, "ABC1D23")
    await upload_shipped(client, "flespi")
    trigger = await create_position_trigger(client, mapping="flespi")
    first, second = _payload("flespi_stream.json")
    status, answer = await hook(client, trigger, first)
    assert status == 200 and answer["summary"]["stored"] == 1, answer
    telemetry = {k: v for k, v in second.items() if not k.startswith("position.")}
    status, answer = await hook(client, trigger, {"result": [second, telemetry]})
    assert status == 200 and answer["summary"] == {
        "items": 1,
        "stored": 1,
        "duplicates": 0,
        "failed": 0,
    }, answer
    fixes = (await vehicle_track(client, "ABC1D23"))["items"]
    assert [fix["time"] for fix in fixes] == ["2026-11-26T09:25:12Z", "2026-11-26T09:25:22Z"]
    assert fixes[1]["odometer_km"] == 152340.6


async def test_geotab_get_answers_a_plain_result_list_of_logrecords_or_device_status_infos(
    client: Client,
) -> None:
    """Geotab's `Get` (a LogRecord search by date, or the DeviceStatusInfo of every device)
    answers {"result": [...]}, not GetFeed's {"result": {"data": [...], "toVersion"}}."""
    await _vehicle(client, "ABC1D23", tracker_id="b3A")
    await _vehicle(client, "XYZ9A87", tracker_id="b7")
    await upload_shipped(client, "geotab-positions")
    await upload_shipped(client, "geotab-logrecord")
    positions = await create_position_trigger(client, mapping="geotab-positions")
    vehicles = await create_trigger(client, mapping="geotab-logrecord")
    records = _payload("geotab_getfeed_logrecord.json")["result"]["data"]
    status, answer = await hook(client, positions, {"jsonrpc": "2.0", "result": records})
    assert status == 200 and answer["summary"]["stored"] == 3, answer
    status_info = {
        "bearing": 91,
        "currentStateDuration": "00:03:12",
        "dateTime": "2026-11-20T13:46:05.000Z",
        "device": {"id": "b7"},
        "driver": "UnknownDriverId",
        "isDeviceCommunicating": True,
        "isDriving": True,
        "latitude": -22.9061,
        "longitude": -43.1711,
        "speed": 18,
    }
    status, answer = await hook(client, positions, {"jsonrpc": "2.0", "result": [status_info]})
    assert status == 200 and answer["summary"]["stored"] == 1, answer
    track = (await vehicle_track(client, "XYZ9A87"))["items"]
    assert [fix["time"] for fix in track] == ["2026-11-20T13:45:10Z", "2026-11-20T13:46:05Z"]
    status, answer = await hook(client, vehicles, {"jsonrpc": "2.0", "result": [status_info]})
    assert status == 200 and answer["summary"]["updated"] == 1, answer
    assert (await _get(client, "XYZ9A87"))["last_position"]["speed_kmh"] == 18
    # an empty page of either call stores nothing and is no error
    for empty in ({"result": []}, {"result": {"data": [], "toVersion": "00000000000a3f22"}}):
        status, answer = await hook(client, positions, empty)
        assert status == 200 and answer["summary"]["items"] == 0, answer


async def test_a_samsara_stats_snapshot_writes_each_vehicles_position_and_odometer(
    client: Client,
) -> None:
    """Samsara's snapshot (GET /fleet/vehicles/stats?types=gps,obdOdometerMeters) gives each
    stat as one object, where the feed gives a list of them: the same vehicles, the same
    values."""
    await _vehicle(client, "ABC1D23", samsara_vehicle_id="281474982859091")
    await upload_shipped(client, "samsara-vehicle-stats-feed")
    trigger = await create_trigger(client, mapping="samsara-vehicle-stats-feed")
    feed = _payload("samsara_vehicle_stats_feed.json")
    [vehicle, _] = feed["data"]
    snapshot = {
        "data": [
            {
                "id": vehicle["id"],
                "name": vehicle["name"],
                "gps": vehicle["gps"][-1],
                "obdOdometerMeters": vehicle["obdOdometerMeters"][-1],
            }
        ],
        "pagination": {"endCursor": "", "hasNextPage": False},
    }
    status, answer = await hook(client, trigger, snapshot)
    assert status == 200 and answer["summary"]["updated"] == 1, answer
    stored = await _get(client, "ABC1D23")
    assert stored["last_position"] == {
        "time": "2026-11-20T13:45:32Z",
        "lat": -23.56118,
        "lon": -46.65578,
        "heading": 88,
        "speed_kmh": 24.5,
    }
    assert stored["odometer_km"] == 151476.9


GARBLED = ((95.0, -46.6559), (-23.5611, 181.0), ("NaN", "NaN"), (-91, -181))
"""Fixes at no place: a latitude or a longitude out of range, Jackson's `"NaN"` (Traccar
writes a NaN double so), both beyond."""


@pytest.mark.parametrize(("lat", "lon"), GARBLED)
async def test_a_traccar_alarm_or_geofence_exit_with_a_garbled_fix_is_recorded_without_it(
    client: Client, lat: Any, lon: Any
) -> None:
    """The fix behind an event is no part of the event: one at no place is left out, as a
    fix Traccar marks `valid: false` is (the positions path flags it `invalid_coordinates`),
    instead of failing the vehicle's schema with the whole event, its SOS alarm or its
    geofence exit lost."""
    await _vehicle(client, "ABC1D23", tracker_id="353861053849681")
    await upload_shipped(client, "traccar-event")
    trigger = await create_trigger(client, mapping="traccar-event")
    good = _payload("traccar_event_forward_geofence_exit.json")
    status, answer = await hook(client, trigger, good)
    assert status == 200, answer
    before = await _get(client, "ABC1D23")

    exit_ = json.loads(json.dumps(good))
    exit_["event"].update(id=1217, eventTime="2026-11-20T13:50:01.000+00:00")
    exit_["position"].update(
        latitude=lat, longitude=lon, fixTime="2026-11-20T13:50:00.000+00:00", speed=30.0
    )
    exit_["position"]["attributes"].update(odometer=99999000, ignition=False)
    status, answer = await hook(client, trigger, exit_)
    assert status == 200, answer
    assert "vehicle.geofence.exited" in answer["events"], answer
    sos = json.loads(json.dumps(exit_))
    del sos["geofence"]
    sos["event"].update(id=1218, type="alarm", geofenceId=0, attributes={"alarm": "sos"})
    status, answer = await hook(client, trigger, sos)
    assert status == 200, answer
    assert "vehicle.alert" in answer["events"], answer

    [alert] = await _events(client, "vehicle.alert")
    assert alert["detail"]["alarm"] == "sos"
    assert len(await _events(client, "vehicle.geofence.exited")) == 2
    after = await _get(client, "ABC1D23")
    # Nothing read from the garbled fix is written: position, odometer, ignition.
    assert after["last_position"] == before["last_position"]
    assert after["odometer_km"] == before["odometer_km"] == 98765.0
    assert after["attributes"]["ignition"] is True


async def test_a_geotab_logrecord_or_samsara_point_at_no_place_moves_no_position(
    client: Client,
) -> None:
    """The other shipped mappings that write a vehicle's last position read the same gates:
    a LogRecord at latitude 95 writes nothing (the page's other records are written, none
    refused); a Samsara point at longitude 181 writes no position, the odometer read beside
    it is written."""
    await _vehicle(client, "ABC1D23", tracker_id="b3A")
    await _vehicle(client, "XYZ9A87", tracker_id="b7")
    await upload_shipped(client, "geotab-logrecord")
    geotab = await create_trigger(client, mapping="geotab-logrecord")
    page = _payload("geotab_getfeed_logrecord.json")
    page["result"]["data"][2].update(latitude=95.0)  # b3A's newest record
    status, answer = await hook(client, geotab, page)
    assert status == 200, answer
    assert answer["summary"]["failed"] == 0, answer
    assert (await _get(client, "ABC1D23"))["last_position"]["time"] == "2026-11-20T13:45:05Z"
    assert (await _get(client, "XYZ9A87"))["last_position"]["lat"] == -22.90685

    await _vehicle(client, "BRA2E19", samsara_vehicle_id="281474982859091")
    await upload_shipped(client, "samsara-vehicle-stats-feed")
    samsara = await create_trigger(client, name="samsara", mapping="samsara-vehicle-stats-feed")
    feed = _payload("samsara_vehicle_stats_feed.json")
    feed["data"] = feed["data"][:1]
    feed["data"][0]["gps"][-1].update(longitude=181.0)
    status, answer = await hook(client, samsara, feed)
    assert status == 200, answer
    stored = await _get(client, "BRA2E19")
    assert "last_position" not in stored or stored["last_position"] is None, stored
    assert stored["odometer_km"] == 151476.9


@pytest.mark.parametrize(
    ("course", "speed", "heading", "speed_kmh"),
    [(360.0, 6.7, 0, 12.4), (-1.0, -1.0, None, None), ("NaN", 6.7, None, 12.4)],
)
async def test_a_traccar_course_of_360_or_a_negative_speed_costs_the_event_nothing(
    client: Client, course: Any, speed: float, heading: float | None, speed_kmh: float | None
) -> None:
    """A course of 360 (north, as 0: the positions path takes it and the fold writes 0) or a
    decoder's -1 for "unknown" is no reason to lose the event and its fix: 360 is written 0,
    a reading outside its range is left out, the rest of the fix written."""
    await _vehicle(client, "ABC1D23", tracker_id="353861053849681")
    await upload_shipped(client, "traccar-event")
    trigger = await create_trigger(client, mapping="traccar-event")
    forward = _payload("traccar_event_forward_geofence_exit.json")
    forward["position"].update(course=course, speed=speed)
    status, answer = await hook(client, trigger, forward)
    assert status == 200, answer["errors"]
    assert "vehicle.geofence.exited" in answer["events"], answer
    position = (await _get(client, "ABC1D23"))["last_position"]
    assert position["time"] == "2026-11-20T13:45:12Z"
    assert (position.get("heading"), position.get("speed_kmh")) == (heading, speed_kmh)


async def test_a_samsara_heading_of_360_is_north_and_a_negative_speed_no_reading(
    client: Client,
) -> None:
    await _vehicle(client, "ABC1D23", samsara_vehicle_id="281474982859091")
    await upload_shipped(client, "samsara-vehicle-stats-feed")
    trigger = await create_trigger(client, mapping="samsara-vehicle-stats-feed")
    feed = _payload("samsara_vehicle_stats_feed.json")
    feed["data"] = feed["data"][:1]
    feed["data"][0]["gps"][-1].update(headingDegrees=360, speedMilesPerHour=-1)
    status, answer = await hook(client, trigger, feed)
    assert status == 200, answer
    position = (await _get(client, "ABC1D23"))["last_position"]
    assert (position["heading"], position["lat"], position.get("speed_kmh")) == (0, -23.56118, None)


@pytest.mark.parametrize(
    ("member", "target"),
    [
        ("altitude", "last_position.altitude_m"),
        ("attributes.totalDistance", "attributes.traccar_total_distance_km"),
        ("attributes.hours", "attributes.engine_hours"),
        ("speed", "last_position.speed_kmh"),
        ("accuracy", "last_position.accuracy_m"),
        ("attributes.odometer", "odometer_km"),
    ],
)
async def test_a_traccar_reading_that_is_no_number_is_left_out_not_the_event(
    client: Client, member: str, target: str
) -> None:
    """Jackson writes a NaN double as `"NaN"`: any numeric reading of a good fix so garbled
    (its altitude, total distance, engine hours, speed...) is left out, the rest of the fix and
    the event written. The altitude failed the vehicle's schema, and the total distance and
    the hours their unit conversion: a `422` for the whole event, its geofence exit lost."""
    await _vehicle(client, "ABC1D23", tracker_id="353861053849681")
    await upload_shipped(client, "traccar-event")
    trigger = await create_trigger(client, mapping="traccar-event")
    forward = _payload("traccar_event_forward_geofence_exit.json")
    *path, last = member.split(".")
    where = forward["position"]
    for name in path:
        where = where[name]
    where[last] = "NaN"
    status, answer = await hook(client, trigger, forward)
    assert status == 200, answer.get("errors")
    assert "vehicle.geofence.exited" in answer["events"], answer
    stored = await _get(client, "ABC1D23")
    assert stored["last_position"]["time"] == "2026-11-20T13:45:12Z"
    group, name = target.split(".") if "." in target else ("", target)
    assert name not in (stored.get(group) or {} if group else stored), stored


async def test_a_traccar_fix_without_a_reading_leaves_none_of_the_previous_fix_in_last_position(
    client: Client,
) -> None:
    """The last position is one fix, whole: a later fix whose speed, course, altitude and
    accuracy are no numbers (left out) takes the earlier fix's with it, instead of showing
    the speed of another moment beside the new time and place."""
    await _vehicle(client, "ABC1D23", tracker_id="353861053849681")
    await upload_shipped(client, "traccar-event")
    trigger = await create_trigger(client, mapping="traccar-event")
    first = _payload("traccar_event_forward_geofence_exit.json")
    status, answer = await hook(client, trigger, first)
    assert status == 200, answer.get("errors")
    assert (await _get(client, "ABC1D23"))["last_position"]["speed_kmh"] == 12.4
    later = _payload("traccar_event_forward_geofence_exit.json")
    later["event"].update(id=1217, type="deviceMoving", eventTime="2026-11-20T13:45:23.000+00:00")
    later["position"].update(
        id=18337,
        fixTime="2026-11-20T13:45:22.000+00:00",
        latitude=-23.5621,
        speed="NaN",
        course="NaN",
        altitude="NaN",
        accuracy="NaN",
    )
    status, answer = await hook(client, trigger, later)
    assert status == 200, answer.get("errors")
    position = (await _get(client, "ABC1D23"))["last_position"]
    assert position == {"time": "2026-11-20T13:45:22Z", "lat": -23.5621, "lon": -46.6559}


async def test_a_geotab_or_samsara_reading_that_is_no_number_is_left_out_not_the_record(
    client: Client,
) -> None:
    """The same in the other shipped mappings that write a vehicle from a fix: a LogRecord's
    speed, a Samsara OBD odometer or engine seconds that are no number are left out (the OBD
    odometer gives way to the GPS one), the record's position written, none refused."""
    await _vehicle(client, "ABC1D23", tracker_id="b3A")
    await _vehicle(client, "XYZ9A87", tracker_id="b7")
    await upload_shipped(client, "geotab-logrecord")
    geotab = await create_trigger(client, mapping="geotab-logrecord")
    page = _payload("geotab_getfeed_logrecord.json")
    page["result"]["data"][2].update(speed="NaN")  # b3A's newest record (an older one has one)
    status, answer = await hook(client, geotab, page)
    assert status == 200, answer
    assert answer["summary"]["failed"] == 0, answer
    position = (await _get(client, "ABC1D23"))["last_position"]
    assert (position["time"], position.get("speed_kmh")) == ("2026-11-20T13:45:35Z", None)

    await _vehicle(client, "BRA2E19", samsara_vehicle_id="281474982859091")
    await upload_shipped(client, "samsara-vehicle-stats-feed")
    samsara = await create_trigger(client, name="samsara", mapping="samsara-vehicle-stats-feed")
    feed = _payload("samsara_vehicle_stats_feed.json")
    feed["data"] = feed["data"][:1]
    record = feed["data"][0]
    record["obdOdometerMeters"][-1]["value"] = "NaN"
    record["gpsOdometerMeters"] = [{"time": "2026-11-20T13:45:32Z", "value": 151470000}]
    record["obdEngineSeconds"] = [{"time": "2026-11-20T13:45:32Z", "value": "NaN"}]
    status, answer = await hook(client, samsara, feed)
    assert status == 200, answer
    stored = await _get(client, "BRA2E19")
    assert stored["last_position"]["time"] == "2026-11-20T13:45:32Z"
    assert stored["odometer_km"] == 151470.0
    assert "engine_hours" not in stored["attributes"], stored
