"""The shipped partner mappings end to end: each partner's sample, signed as that partner
signs it, through a trigger with its preset and params, into the vehicles it names."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
from datetime import datetime, timedelta
from typing import Any

from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    partner,
)
from tests.support import auth, gateway_command
from tests.triggers_support import (
    MAPPINGS,
    PAYLOADS,
    Client,
    create_position_trigger,
    create_trigger,
    hook,
    upload_shipped,
    vehicle_track,
)

__all__ = ["partner"]  # the fixture


async def _vehicle(client: Client, plate: str, **attributes: Any) -> None:
    response = await client.post(
        "/api/v1/entities/vehicle", headers=auth(), json={"plate": plate, "attributes": attributes}
    )
    assert response.status == 201, await response.text()


async def _get(client: Client, plate: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())
    return dict(await response.json())


async def _signed(client: Client, trigger: dict[str, Any], body: bytes, headers: Any) -> Any:
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
    )
    return response.status, await response.json()


async def _motive_trigger(client: Client, *, distance: str, speed: str, volume: str) -> Any:
    """A position trigger of the shipped Motive mapping, signed as Motive signs, in the
    account's units."""
    await upload_shipped(client, "motive-vehicle-location")
    return await create_position_trigger(
        client,
        mapping="motive-vehicle-location",
        params={"distance_unit": distance, "speed_unit": speed, "volume_unit": volume},
        auth={"mode": "hmac", "preset": "motive"},
    )


async def test_motive_location_signed_with_sha1_in_a_us_accounts_units(client: Client) -> None:
    await _vehicle(client, "ABC1D23", tracker_id="1984895")  # the id as text; Motive sends 1984895
    trigger = await _motive_trigger(client, distance="mi", speed="mph", volume="gal")
    # Motive checks the endpoint with a signed array of the webhook's actions: no write.
    check = b'["vehicle_location_updated"]'
    signature = hmac.new(trigger["secret"].encode(), check, hashlib.sha1).hexdigest()
    headers = {"X-KT-Webhook-Signature": signature}
    assert await _signed(client, trigger, check, headers) == (200, {"ok": True})
    body = (PAYLOADS / "motive_vehicle_location_updated.json").read_bytes()
    signature = hmac.new(trigger["secret"].encode(), body, hashlib.sha1).hexdigest()
    status, answer = await _signed(client, trigger, body, {"X-KT-Webhook-Signature": signature})
    assert status == 201, answer
    assert answer["vehicle"]["plate"] == "ABC1D23" and answer["time"] == "2026-11-20T13:45:22Z"
    [fix] = (await vehicle_track(client))["items"]
    assert fix["odometer_km"] == 151476.9
    assert fix["speed_kmh"] == 24.5
    unsigned = await client.post(f"/hooks/{trigger['id']}", data=body)
    assert unsigned.status == 401


async def test_a_motive_action_the_mapping_does_not_read_is_refused_and_kept(
    client: Client,
) -> None:
    """A Motive webhook subscribed to more than locations (fault codes, engine toggles, users:
    not mapped, their payloads undocumented where we could read Motive's reference) posts
    bodies without a location: each is a 422 kept for replay, never a fix or a silent 200."""
    await _vehicle(client, "ABC1D23", tracker_id="123")
    trigger = await _motive_trigger(client, distance="km", speed="km/h", volume="l")
    body = b'{"action":"fault_code_opened","vehicle_id":123}'
    mac = hmac.new(trigger["secret"].encode(), body, hashlib.sha1).hexdigest()
    status, answer = await _signed(client, trigger, body, {"X-KT-Webhook-Signature": mac})
    assert status == 422, answer
    assert [e["pointer"] for e in answer["errors"]] == ["/located_at", "/lat", "/lon"]
    assert (await vehicle_track(client))["items"] == []
    kept = await client.get(f"/api/v1/rejected?trigger_id={trigger['id']}", headers=auth())
    [rejected] = (await kept.json())["items"]
    assert rejected["trigger_id"] == trigger["id"]


async def test_motive_test_request_and_documented_location_through_a_signed_trigger(
    client: Client,
) -> None:
    """KeepTruckin enables a webhook only once its test request {"action":"test"} is answered
    200; then the documented vehicle_location_received payload is a fix on the track."""
    await _vehicle(client, "ABC1D23", tracker_id="123")
    trigger = await _motive_trigger(client, distance="km", speed="km/h", volume="l")

    def signed(body: bytes) -> dict[str, str]:
        mac = hmac.new(trigger["secret"].encode(), body, hashlib.sha1).hexdigest()
        return {"X-KT-Webhook-Signature": mac}

    test = b'{"action":"test"}'
    assert await _signed(client, trigger, test, signed(test)) == (200, {"ok": True})
    assert (await vehicle_track(client))["items"] == []
    documented = json.loads((PAYLOADS / "motive_vehicle_location_documented.json").read_text())
    body = json.dumps({**documented, "action": "vehicle_location_received"}).encode()
    status, answer = await _signed(client, trigger, body, signed(body))
    assert status == 201, answer
    assert answer["vehicle"]["plate"] == "ABC1D23" and answer["time"] == "2017-01-01T12:00:00Z"
    [fix] = (await vehicle_track(client))["items"]
    assert (fix["lat"], fix["lon"], fix["speed_kmh"]) == (34.123, -84.123, 123.5)
    assert fix["odometer_km"] == 2343232.2


async def test_traccar_device_named_otherwise_than_its_plate_is_found_by_its_unique_id(
    client: Client,
) -> None:
    await _vehicle(client, "ABC1D23", tracker_id="353861053849681")
    await upload_shipped(client, "traccar-position")
    trigger = await create_position_trigger(client, mapping="traccar-position")
    forward = json.loads((PAYLOADS / "traccar_position_forward.json").read_text())
    forward["device"]["name"] = "Caminhao 12"
    forward["position"]["accuracy"] = 0.0  # Traccar's "unknown"
    status, answer = await hook(client, trigger, forward)
    assert status == 201, answer
    assert answer["vehicle"]["plate"] == "ABC1D23"
    [fix] = (await vehicle_track(client))["items"]
    assert "accuracy_m" not in fix


async def test_samsara_ping_and_geofence_webhook_with_the_partners_secret(client: Client) -> None:
    """The geofence event of a vehicle the fleet does not have is refused (`create: false`:
    nothing created, kept to replay); once the vehicle exists, the same event is written."""
    secret = base64.b64encode(b"the key Samsara shows").decode()
    await upload_shipped(client, "samsara-geofence")
    trigger = await create_trigger(
        client,
        mapping="samsara-geofence",
        auth={"mode": "hmac", "preset": "samsara", "secret": secret},
    )

    def signed(body: bytes) -> dict[str, str]:
        stamp = str(int(time.time()))
        message = b"v1:" + stamp.encode() + b":" + body
        mac = hmac.new(base64.b64decode(secret), message, hashlib.sha256).hexdigest()
        return {"X-Samsara-Signature": f"v1={mac}", "X-Samsara-Timestamp": stamp}

    ping = b'{"eventId": "bf72239c", "eventMs": 1795685112000, "eventType": "Ping"}'
    assert await _signed(client, trigger, ping, signed(ping)) == (200, {"ok": True})
    body = (PAYLOADS / "samsara_v2_geofence_exit.json").read_bytes()
    status, answer = await _signed(client, trigger, body, signed(body))
    assert status == 422 and answer["errors"][0]["keyword"] == "not_found", answer
    listed = await client.get("/api/v1/entities/vehicle", headers=auth())
    assert (await listed.json())["items"] == []
    await _vehicle(client, "ABC1D23")
    status, answer = await _signed(client, trigger, body, signed(body))
    assert status == 200 and "vehicle.geofence.exited" in answer["events"], answer


def _samsara_signed(secret: str, body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    message = b"v1:" + stamp.encode() + b":" + body
    mac = hmac.new(base64.b64decode(secret), message, hashlib.sha256).hexdigest()
    return {"X-Samsara-Signature": f"v1={mac}", "X-Samsara-Timestamp": stamp}


async def _events(client: Client, etype: str) -> list[dict[str, Any]]:
    await client.app[services_key].relay.run_until_idle()
    response = await client.get(f"/api/v1/events?type={etype}", headers=auth())
    return list((await response.json())["items"])


async def test_samsara_alerts_become_geofence_speeding_and_alert_events_of_the_vehicle(
    client: Client,
) -> None:
    """Webhooks 1.0 alerts name the vehicle by Samsara's device: by its name when that is a
    plate, else by the Samsara id a vehicle carries. The alert is the events' detail."""
    await _vehicle(client, "XYZ9A87", samsara_vehicle_id="281474982859092")
    secret = base64.b64encode(b"the key Samsara shows").decode()
    await upload_shipped(client, "samsara-alert")
    trigger = await create_trigger(
        client,
        mapping="samsara-alert",
        auth={"mode": "hmac", "preset": "samsara", "secret": secret},
    )
    ping = json.dumps(
        {
            "eventId": "8928d556",
            "eventMs": 1589474494538,
            "eventType": "Ping",
            "event": {"text": "Ping"},
        }
    ).encode()
    assert await _signed(client, trigger, ping, _samsara_signed(secret, ping)) == (
        200,
        {"ok": True},
    )

    await _vehicle(client, "ABC1D23")
    body = (PAYLOADS / "samsara_v1_alert_geofence.json").read_bytes()
    status, answer = await _signed(client, trigger, body, _samsara_signed(secret, body))
    assert status == 200, answer  # named by its plate: the vehicle is written by it
    assert answer["key"] == "ABC1D23" and "vehicle.geofence.entered" in answer["events"]
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["attributes"]["samsara_vehicle_id"] == "281474982859091"
    [entered] = await _events(client, "vehicle.geofence.entered")
    assert entered["detail"]["occurred_at"] == "2026-11-26T09:25:12.539Z"
    assert entered["detail"]["alert"]["details"] == "'ABC1D23' is inside Garagem SP."
    assert "alert" not in entered["data"]

    speeding = json.loads(body)
    speeding["event"].update(
        alertConditionId="DeviceSpeedAboveSpeedLimit",
        alertConditionDescription="Vehicle is speeding above the speed limit",
        device={"id": 281474982859092, "name": "Caminhao 12", "serial": "GFRV-43N-VGY"},
    )
    body = json.dumps(speeding).encode()
    status, answer = await _signed(client, trigger, body, _samsara_signed(secret, body))
    assert status == 200, answer  # not a plate: found by the Samsara id, never created
    assert answer["key"] == "XYZ9A87" and answer["events"] == ["entity.updated", "vehicle.speeding"]
    [event] = await _events(client, "vehicle.speeding")
    assert event["data"]["plate"] == "XYZ9A87"

    speeding["event"]["alertConditionId"] = "EngineIdle"  # any other condition
    body = json.dumps(speeding).encode()
    status, answer = await _signed(client, trigger, body, _samsara_signed(secret, body))
    assert status == 200 and answer["events"] == ["vehicle.alert"], answer
    speeding["event"]["device"] = {"id": 5, "name": "Trator"}  # an id no vehicle carries
    body = json.dumps(speeding).encode()
    status, problem = await _signed(client, trigger, body, _samsara_signed(secret, body))
    assert status == 422 and problem["errors"][0]["keyword"] == "not_found"
    speeding["event"].pop("device")
    body = json.dumps(speeding).encode()
    status, problem = await _signed(client, trigger, body, _samsara_signed(secret, body))
    assert status == 422 and problem["errors"][0]["target"] == "key"


async def test_samsara_engine_fault_on_and_off_signed_become_fault_events_of_the_vehicle(
    client: Client,
) -> None:
    secret = base64.b64encode(b"the key Samsara shows").decode()
    await _vehicle(client, "ABC1D23", samsara_vehicle_id="494123")
    await upload_shipped(client, "samsara-engine-fault")
    trigger = await create_trigger(
        client,
        mapping="samsara-engine-fault",
        auth={"mode": "hmac", "preset": "samsara", "secret": secret},
    )
    body = (PAYLOADS / "samsara_engine_fault_on.json").read_bytes()
    status, answer = await _signed(client, trigger, body, _samsara_signed(secret, body))
    assert status == 200 and "vehicle.fault.opened" in answer["events"], answer
    off = json.dumps({**json.loads(body), "eventType": "EngineFaultOff"}).encode()
    status, answer = await _signed(client, trigger, off, _samsara_signed(secret, off))
    assert status == 200 and answer["events"] == ["vehicle.fault.closed"], answer
    [opened] = await _events(client, "vehicle.fault.opened")
    assert opened["detail"]["fault"]["code"] == "Short Code"
    assert opened["data"]["plate"] == "ABC1D23"
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["vin"] == "1GBJ6P1B2HV112765" and "fault" not in vehicle["attributes"]


async def test_samsara_speeding_of_either_documented_shape_is_a_speeding_event(
    client: Client,
) -> None:
    secret = base64.b64encode(b"the key Samsara shows").decode()
    await _vehicle(client, "ABC1D23", samsara_vehicle_id="494123")
    await upload_shipped(client, "samsara-speeding")
    trigger = await create_trigger(
        client,
        mapping="samsara-speeding",
        auth={"mode": "hmac", "preset": "samsara", "secret": secret},
    )
    # Samsara's reference gives both samples one eventId; two real events have two (one id
    # is one occurrence, announced once: docs/mappings.md "Occurrences reported again").
    for n, name in enumerate(
        ("samsara_speeding_event_started.json", "samsara_severe_speeding_started.json")
    ):
        sample = json.loads((PAYLOADS / name).read_bytes())
        body = json.dumps({**sample, "eventId": f"{sample['eventId']}-{n}"}).encode()
        status, answer = await _signed(client, trigger, body, _samsara_signed(secret, body))
        assert status == 200 and "vehicle.speeding" in answer["events"], answer
    events = await _events(client, "vehicle.speeding")
    assert [e["detail"]["severity"] for e in events] == ["Severe", "Severe"]
    assert {e["data"]["plate"] for e in events} == {"ABC1D23"}


async def test_samsara_feed_page_updates_each_vehicle(client: Client) -> None:
    await _vehicle(client, "ABC1D23", samsara_vehicle_id="281474982859091")
    await _vehicle(client, "XYZ9A87", samsara_vehicle_id=281474982859092)
    await upload_shipped(client, "samsara-vehicle-stats-feed")
    trigger = await create_trigger(client, mapping="samsara-vehicle-stats-feed")
    page = json.loads((PAYLOADS / "samsara_vehicle_stats_feed.json").read_text())
    status, answer = await hook(client, trigger, page)
    assert status == 200, answer
    assert answer["summary"] == {"items": 2, "created": 0, "updated": 2, "failed": 0}
    assert (await _get(client, "ABC1D23"))["odometer_km"] == 151476.9
    assert (await _get(client, "XYZ9A87"))["last_position"]["lat"] == -22.90685


async def test_samsara_feed_page_gives_every_gps_point_of_each_vehicle_to_its_track(
    client: Client,
) -> None:
    """`items: {from: data, each: gps, as: point}`: a fix per point, each named by the
    vehicle it is listed under (the page's vehicle id), not just the newest point."""
    await _vehicle(client, "ABC1D23", tracker_id="281474982859091")
    await _vehicle(client, "XYZ9A87", tracker_id=281474982859092)
    await upload_shipped(client, "samsara-vehicle-stats-positions")
    trigger = await create_position_trigger(client, mapping="samsara-vehicle-stats-positions")
    page = json.loads((PAYLOADS / "samsara_vehicle_stats_feed.json").read_text())

    status, answer = await hook(client, trigger, page)

    assert status == 200 and answer["summary"]["stored"] == 3, answer
    truck = (await vehicle_track(client, "ABC1D23"))["items"]
    assert [(f["time"], f["speed_kmh"]) for f in truck] == [
        ("2026-11-20T13:45:02Z", 29.9),
        ("2026-11-20T13:45:32Z", 24.5),
    ]
    [van] = (await vehicle_track(client, "XYZ9A87"))["items"]
    assert (van["lat"], van["lon"]) == (-22.90685, -43.1729)
    page["data"][1]["gps"] = []  # a vehicle without new points gives no fix
    page["data"][0]["id"] = "5"  # and a point of a vehicle we do not know is refused alone
    status, answer = await hook(client, trigger, page)
    assert [r.get("status") for r in answer["results"]] == [422, 422], answer


async def test_wialon_units_page_puts_each_units_last_location_in_its_own_units(
    client: Client,
) -> None:
    """A unit named by its plate, one found by its Wialon id whose account measures in US
    units (mph, miles, feet: converted), and a unit never positioned (left out)."""
    await _vehicle(client, "ABC1D23")
    await _vehicle(client, "XYZ9A87", tracker_id=734460)
    await upload_shipped(client, "wialon-units-positions")
    trigger = await create_position_trigger(client, mapping="wialon-units-positions")
    page = json.loads((PAYLOADS / "wialon_search_items_units.json").read_text())

    status, answer = await hook(client, trigger, page)

    assert status == 200 and answer["summary"]["stored"] == 2, answer
    [metric] = (await vehicle_track(client, "ABC1D23"))["items"]
    assert (metric["speed_kmh"], metric["odometer_km"]) == (47, 152340)
    [us] = (await vehicle_track(client, "XYZ9A87"))["items"]
    assert (us["time"], us["speed_kmh"], us["odometer_km"]) == (
        "2026-11-26T09:25:20Z",
        49.9,
        151476.3,
    )
    assert us["attributes"]["altitude_m"] == 10.1
    status, answer = await hook(client, trigger, page)  # polled again: nothing new
    assert answer["summary"]["duplicates"] == 2, answer


async def test_geotab_logrecord_page_updates_each_device_in_order(client: Client) -> None:
    await _vehicle(client, "ABC1D23", tracker_id="b3A")
    await _vehicle(client, "XYZ9A87", tracker_id="b7")
    await upload_shipped(client, "geotab-logrecord")
    trigger = await create_trigger(client, mapping="geotab-logrecord")
    page = json.loads((PAYLOADS / "geotab_getfeed_logrecord.json").read_text())
    status, answer = await hook(client, trigger, page)
    assert status == 200 and answer["summary"]["updated"] == 3, answer
    position = (await _get(client, "ABC1D23"))["last_position"]
    assert position["time"] == "2026-11-20T13:45:35Z"  # the later of its two records


async def test_geotab_records_out_of_order_leave_the_log_id_of_the_last_position(
    client: Client,
) -> None:
    """A page with a device's records out of time order: the older one moves neither the
    last position nor the record id it names back."""
    await _vehicle(client, "ABC1D23", tracker_id="b3A")
    await upload_shipped(client, "geotab-logrecord")
    trigger = await create_trigger(client, mapping="geotab-logrecord")
    records = [
        {"id": id_, "device": {"id": "b3A"}, "dateTime": at, "latitude": lat, "longitude": -46.6}
        for id_, at, lat in (
            ("a1", "2026-12-04T10:00:30.000Z", -23.1),
            ("a2", "2026-12-04T10:00:10.000Z", -23.2),
        )
    ]
    status, answer = await hook(client, trigger, {"result": {"data": records, "toVersion": "1"}})
    assert status == 200, answer
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["last_position"]["lat"] == -23.1
    assert vehicle["attributes"]["geotab_log_id"] == "a1"


async def test_geotab_meters_faults_exceptions_and_driver_changes_through_their_triggers(
    client: Client,
) -> None:
    """Each Geotab feed a schedule reads (StatusData, FaultData, ExceptionEvent, DriverChange)
    posted to a trigger with its shipped mapping: meters on the vehicle, the rest events."""
    await _vehicle(client, "ABC1D23", tracker_id="b2A")
    await _vehicle(client, "XYZ9A87", tracker_id="b6")
    await _vehicle(client, "QWE4R56", tracker_id="b1A")
    await _vehicle(client, "RTY7U89", tracker_id="b1")
    pages = {
        "geotab-statusdata": "geotab_getfeed_statusdata.json",
        "geotab-faultdata": "geotab_getfeed_faultdata.json",
        "geotab-exceptionevent": "geotab_getfeed_exceptionevent.json",
        "geotab-driverchange": "geotab_getfeed_driverchange.json",
    }
    for mapping, page in pages.items():
        trigger = await _trigger(client, mapping)
        status, answer = await hook(client, trigger, json.loads((PAYLOADS / page).read_text()))
        assert status == 200 and answer["summary"]["failed"] == 0, answer
    meters = await _get(client, "ABC1D23")
    assert meters["odometer_km"] == 99621.3 and meters["attributes"]["engine_hours"] == 4688.8
    [opened] = await _events(client, "vehicle.fault.opened")
    assert opened["detail"]["fault"]["code"] == "DiagnosticDeviceHasBeenUnpluggedId"
    assert len(await _events(client, "vehicle.fault.closed")) == 1
    [speeding] = await _events(client, "vehicle.speeding")
    assert speeding["detail"]["speed_limit_kmh"] == 80
    [alert] = await _events(client, "vehicle.alert")  # the invalidated one emits nothing
    assert alert["detail"]["alert"]["condition"] == "RuleHarshCorneringId"
    [identified] = await _events(client, "vehicle.driver.identified")
    assert identified["detail"]["driver"] == {
        "geotab_id": "b3A",
        "attributes": {"geotab_driver_id": "b3A"},
    }
    driver = await _get(client, "RTY7U89")
    assert driver["attributes"]["geotab_driver_id"] == "UnknownDriverId"  # the newer change


async def _trigger(client: Client, mapping: str) -> dict[str, Any]:
    await upload_shipped(client, mapping)
    return dict(await create_trigger(client, name=mapping, mapping=mapping))


async def _send(client: Client, trigger: dict[str, Any], payload: Any) -> dict[str, Any]:
    status, answer = await hook(client, trigger, payload)
    assert status in (200, 201), answer
    return dict(answer)


async def test_a_late_traccar_event_moves_no_position_or_odometer_back(client: Client) -> None:
    """Traccar retries a forward that failed: the event arrives after a newer one."""
    await _vehicle(client, "ABC1D23")
    newer = json.loads((PAYLOADS / "traccar_event_forward_geofence_exit.json").read_text())
    late = json.loads(json.dumps(newer))
    late["position"].update(fixTime="2026-11-20T13:40:00.000+00:00", latitude=-23.6)
    late["position"]["attributes"]["odometer"] = 98_000_000
    traccar = await _trigger(client, "traccar-event")
    await _send(client, traccar, newer)
    answer = await _send(client, traccar, late)
    assert "odometer_km" in answer["skipped"] and "last_position.lat" in answer["skipped"]
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["last_position"]["time"] == "2026-11-20T13:45:12Z"
    assert vehicle["last_position"]["lat"] == newer["position"]["latitude"]
    assert vehicle["odometer_km"] == 98765.0


async def test_traccar_ignition_maintenance_and_driver_events_reach_the_vehicle_and_its_events(
    client: Client,
) -> None:
    await _vehicle(client, "ABC1D23")
    traccar = await _trigger(client, "traccar-event")
    for name in ("maintenance", "driver_changed", "ignition_off"):
        await _send(
            client,
            traccar,
            json.loads((PAYLOADS / f"traccar_event_forward_{name}.json").read_text()),
        )
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["odometer_km"] == 100122.5
    assert vehicle["attributes"]["engine_hours"] == 13.2
    assert vehicle["attributes"]["ignition"] is False
    assert vehicle["attributes"]["traccar_driver_unique_id"] == "01A2B3C4D5E6"
    [reminder] = await _events(client, "vehicle.maintenance.reminder")
    assert reminder["detail"]["maintenance"]["period_km"] == 10000.0
    [identified] = await _events(client, "vehicle.driver.identified")
    assert identified["detail"]["driver_unique_id"] == "01A2B3C4D5E6"
    assert len(await _events(client, "vehicle.ignition.off")) == 1


async def test_a_polled_page_read_again_moves_no_position_or_odometer_back(
    client: Client,
) -> None:
    """Geotab's and Samsara's feeds: an older page (read again after a lost cursor) after a
    newer one."""
    await _vehicle(client, "ABC1D23", tracker_id="b3A", samsara_vehicle_id="281474982859091")
    await _vehicle(client, "XYZ9A87", tracker_id="b7", samsara_vehicle_id="281474982859092")
    geotab = json.loads((PAYLOADS / "geotab_getfeed_logrecord.json").read_text())
    records = geotab["result"]["data"]
    trigger = await _trigger(client, "geotab-logrecord")
    await _send(client, trigger, geotab)
    geotab["result"]["data"] = records[:1]  # the device's older record alone
    await _send(client, trigger, geotab)
    position = (await _get(client, "ABC1D23"))["last_position"]
    assert position["time"] == "2026-11-20T13:45:35Z"
    samsara = json.loads((PAYLOADS / "samsara_vehicle_stats_feed.json").read_text())
    trigger = await _trigger(client, "samsara-vehicle-stats-feed")
    await _send(client, trigger, samsara)
    moved = await _get(client, "ABC1D23")
    older = samsara["data"][0]
    older["gps"] = older["gps"][:1]
    older["obdOdometerMeters"] = [{"time": "2026-11-20T13:45:02Z", "value": 151_000_000}]
    await _send(client, trigger, samsara)
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["last_position"] == moved["last_position"]
    assert vehicle["odometer_km"] == moved["odometer_km"] == 151476.9


async def test_fleetio_meter_entry_signed_with_the_partners_key(client: Client) -> None:
    await _vehicle(client, "ABC1D23", fleetio_vehicle_id=987)
    await upload_shipped(client, "fleetio-meter-entry")
    secret = "fleetio-shared-key-of-the-webhook"
    trigger = await create_trigger(
        client,
        mapping="fleetio-meter-entry",
        params={"meter_unit": "mi"},
        auth={"mode": "hmac", "preset": "fleetio", "secret": secret},
    )
    body = (PAYLOADS / "fleetio_meter_entry_created.json").read_bytes()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Fleetio-Webhook-Signature": signature}
    status, answer = await _signed(client, trigger, body, headers)
    assert status == 200, answer
    assert (await _get(client, "ABC1D23"))["odometer_km"] == 151476.9


async def test_a_later_fleetio_odometer_reading_below_the_vehicles_moves_nothing_back(
    client: Client,
) -> None:
    """A reading of 94,000 km an hour after one of 94,123.4 km (mistyped): the odometer was
    ordered by the reading's time alone and went back. It only increases (SPEC §6)."""
    await _vehicle(client, "ABC1D23", fleetio_vehicle_id=987)
    await upload_shipped(client, "fleetio-meter-entry")
    secret = "fleetio-shared-key-of-the-webhook"
    trigger = await create_trigger(
        client,
        mapping="fleetio-meter-entry",
        params={"meter_unit": "km"},
        auth={"mode": "hmac", "preset": "fleetio", "secret": secret},
    )

    async def send(entry: dict[str, Any]) -> tuple[int, Any]:
        body = json.dumps(entry).encode()
        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return await _signed(client, trigger, body, {"X-Fleetio-Webhook-Signature": signature})

    first = json.loads((PAYLOADS / "fleetio_meter_entry_created.json").read_text())
    assert (await send(first))[0] == 200
    payload = {**first["payload"], "value": "94000", "date": "2026-11-25T08:55:00-03:00"}
    status, answer = await send({**first, "payload": payload})

    assert status == 200, answer
    assert sorted(answer["skipped"]) == ["attributes.odometer_read_at", "odometer_km"]
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["odometer_km"] == 94123.4
    assert vehicle["attributes"]["odometer_read_at"] == "2026-11-25T10:55:00Z"


async def test_fleetio_hour_meter_readings_move_the_engine_hours_forward_only(
    client: Client,
) -> None:
    """A secondary meter counting engine hours (the account's default) moves
    attributes.engine_hours, never the odometer; a late or void reading moves nothing."""
    await _vehicle(client, "ABC1D23", fleetio_vehicle_id=987)
    await upload_shipped(client, "fleetio-meter-entry")
    secret = "fleetio-shared-key-of-the-webhook"
    trigger = await create_trigger(
        client,
        mapping="fleetio-meter-entry",
        params={"meter_unit": "km"},
        auth={"mode": "hmac", "preset": "fleetio", "secret": secret},
    )

    async def send(entry: dict[str, Any]) -> tuple[int, Any]:
        body = json.dumps(entry).encode()
        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return await _signed(client, trigger, body, {"X-Fleetio-Webhook-Signature": signature})

    hours = json.loads((PAYLOADS / "fleetio_meter_entry_secondary_hours.json").read_text())
    status, answer = await send(hours)
    assert status == 200, answer
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["attributes"]["engine_hours"] == 4321.5
    assert vehicle["attributes"]["engine_hours_read_at"] == "2026-11-25T10:55:00Z"
    assert "odometer_km" not in vehicle

    late = {**hours, "payload": {**hours["payload"], "value": "4300", "date": "2026-11-24"}}
    status, answer = await send(late)
    assert status == 200, answer
    assert answer["skipped"] == ["attributes.engine_hours", "attributes.engine_hours_read_at"]
    void = {**hours, "payload": {**hours["payload"], "value": "9999", "void": True}}
    assert (await send(void))[0] == 200
    assert (await _get(client, "ABC1D23"))["attributes"]["engine_hours"] == 4321.5

    odometer = json.loads((PAYLOADS / "fleetio_meter_entry_created.json").read_text())
    assert (await send(odometer))[0] == 200
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["odometer_km"] == 94123.4 and vehicle["attributes"]["engine_hours"] == 4321.5


async def test_fleetio_account_whose_primary_meter_counts_hours(client: Client) -> None:
    await _vehicle(client, "ABC1D23", fleetio_vehicle_id=987)
    await upload_shipped(client, "fleetio-meter-entry")
    response = await client.post(
        "/api/v1/triggers",
        headers=auth(),
        json={
            "name": "fleetio-wrong",
            "entity_type": "vehicle",
            "mapping": "fleetio-meter-entry",
            "params": {"meter_unit": "km", "primary_meter": "litres"},
        },
    )
    assert response.status == 422
    assert (await response.json())["errors"][0]["pointer"] == "/params/primary_meter"
    trigger = await create_trigger(
        client,
        mapping="fleetio-meter-entry",
        params={"meter_unit": "km", "primary_meter": "hours"},
    )
    reading = json.loads((PAYLOADS / "fleetio_meter_entry_created.json").read_text())
    status, answer = await hook(client, trigger, reading)
    assert status == 200, answer
    vehicle = await _get(client, "ABC1D23")
    assert vehicle["attributes"]["engine_hours"] == 94123.4 and "odometer_km" not in vehicle


def _mapping_test(*extra: str) -> subprocess.CompletedProcess[str]:
    """`gateway mapping test` run in this process (`gateway_command`); real processes of it:
    tests/test_mapping_cli.py."""
    mapping, sample = (
        MAPPINGS / "fleetio-meter-entry.yaml",
        PAYLOADS / "fleetio_meter_entry_created.json",
    )
    return gateway_command("mapping", "test", str(mapping), str(sample), *extra)


def test_the_cli_binds_params() -> None:
    result = _mapping_test("--param", "meter_unit=mi")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["document"]["odometer_km"] == 151476.9
    unknown = _mapping_test("--param", "meter=mi")
    assert unknown.returncode == 1
    assert "/params/meter: unknown param 'meter'" in unknown.stderr


async def test_erp_mileage_subscription_sends_the_mileage_captured_at_the_events_time_in_brasilia(
    client: Client, partner: Partner
) -> None:
    """docs/partners.md "mileage out": the shipped `erp-mileage` formats `event.occurred_at`
    (no checklist time) in Brasília time. A subscription's delivery reads the stored event,
    whose times were datetimes no transform reads: every delivery failed `unsendable`."""
    await upload_shipped(client, "erp-mileage")
    erp = await create_partner(
        client, partner.url, auth={"type": "none"}, secrets={"erp_token": "tok-123"}
    )
    action = await create_action(
        client, erp["id"], path="/veiculos/quilometragem", request_mapping="erp-mileage"
    )
    await create_subscription(client, action["id"])
    await _vehicle(client, "KMS1A11")
    moved = await client.patch(
        "/api/v1/entities/vehicle/KMS1A11", headers=auth(), json={"odometer_km": 1200}
    )
    assert moved.status == 200, await moved.text()

    services = client.app[services_key]
    await services.relay.run_until_idle()
    assert await services.delivery_worker.run_until_idle() == {"succeeded": 1}

    [sent] = partner.requests
    body = sent.json()
    assert (body["placa"], body["quilometragemKm"], body["origem"]) == ("KMS1A11", 1200, "gateway")
    assert sent.headers["Authorization"] == "Bearer tok-123"
    events = await client.get("/api/v1/events?type=entity.updated", headers=auth())
    [event] = (await events.json())["items"]
    captured = datetime.fromisoformat(body["capturadoEm"])
    assert captured == datetime.fromisoformat(event["occurred_at"])
    assert captured.utcoffset() == timedelta(hours=-3)
