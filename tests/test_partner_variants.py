"""Real partners' payloads, as their public docs show them, through a trigger into the
vehicles and tracks they name: the shipped mappings with the variants partners really send
(a device not named by its plate, a vehicle without a licence plate), and formats an admin
integrates with a mapping of their own (Teltonika, Geotab StatusData, Webfleet)."""

from __future__ import annotations

import json
from typing import Any

from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import (
    PAYLOADS,
    Client,
    create_trigger,
    hook,
    upload_shipped,
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
    assert vehicle["last_position"]["fix_time"] == "2026-11-20T13:45:12Z"
    assert await _count(client) == 1


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
