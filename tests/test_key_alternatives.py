"""A mapping's `key: {first_of: [...]}`: a tracker that sends a plate when it is configured
with one and its device id otherwise finds its vehicle by the first alternative the item has.
The natural key upserts (and may create); any other alternative is a lookup that must find
one existing entity of the tenant. All through HTTP against the app."""

from __future__ import annotations

from typing import Any

from tests.support import auth
from tests.triggers_support import Client, create_trigger, entities, hook, upload_mapping

PLATE_FIRST = """
name: plate-or-tracker
direction: inbound
entity_type: vehicle
key: {first_of: [plate, attributes.tracker_id]}
fields:
  plate: {from: placa, transforms: [plate]}
  attributes.tracker_id: {from: deviceId, transforms: [string]}
  odometer_km: km
"""

TRACKER_FIRST = PLATE_FIRST.replace("name: plate-or-tracker", "name: tracker-or-plate").replace(
    "[plate, attributes.tracker_id]", "[attributes.tracker_id, plate]"
)


async def _vehicle(client: Client, plate: str, tenant: str = "acme", **attributes: Any) -> None:
    response = await client.post(
        "/api/v1/entities/vehicle",
        headers=auth(tenant),
        json={"plate": plate, "attributes": attributes},
    )
    assert response.status == 201, await response.text()


async def _get(client: Client, plate: str, tenant: str = "acme") -> dict[str, Any]:
    response = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth(tenant))
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def _trigger(client: Client, mapping: str, tenant: str = "acme") -> dict[str, Any]:
    await upload_mapping(client, mapping, tenant)
    name = mapping.split("name: ", 1)[1].split("\n", 1)[0]
    return await create_trigger(client, tenant, mapping=name)


async def test_an_item_with_a_plate_is_upserted_by_it_and_one_without_found_by_its_tracker_id(
    client: Client,
) -> None:
    await _vehicle(client, "ABC1D23", tracker_id="4711")
    trigger = await _trigger(client, PLATE_FIRST)

    status, answer = await hook(client, trigger, {"placa": "xyz-9a87", "km": 5})
    assert status == 201, answer  # the plate is the natural key: a new vehicle
    assert answer["key"] == "XYZ9A87" and answer["created"] is True

    status, answer = await hook(client, trigger, {"deviceId": 4711, "km": 10})
    assert status == 200, answer  # no plate: found by the tracker id, never created
    assert answer["key"] == "ABC1D23" and answer["changed"] == ["odometer_km"]
    assert (await _get(client, "ABC1D23"))["odometer_km"] == 10

    status, problem = await hook(client, trigger, {"deviceId": "9999", "km": 10})
    assert status == 422
    assert problem["errors"][0]["keyword"] == "not_found"
    assert len(await entities(client)) == 2


async def test_an_item_with_none_of_the_alternatives_is_a_clear_422_and_is_kept(
    client: Client,
) -> None:
    trigger = await _trigger(client, PLATE_FIRST)

    # A device name that is not a plate gives no plate (the `plate` transform), and no id.
    status, problem = await hook(client, trigger, {"placa": "Truck 12", "km": 5})

    assert status == 422
    assert problem["reason"] == "mapping"
    [error] = problem["errors"]
    assert error["keyword"] == "key" and error["target"] == "key"
    assert error["message"] == (
        "the item has none of the key's alternatives: plate; attributes.tracker_id"
    )
    rejected = await client.get(f"/api/v1/rejected?trigger_id={trigger['id']}", headers=auth())
    assert len((await rejected.json())["items"]) == 1
    assert await entities(client) == []


async def test_the_first_alternative_the_item_has_decides_even_when_it_has_a_plate_too(
    client: Client,
) -> None:
    """Tracker id first: the device's id finds the vehicle whatever plate it was configured
    with (a mistyped plate neither creates a vehicle nor renames the one found); a plate
    finds the vehicle only when the device sends no id."""
    await _vehicle(client, "ABC1D23", tracker_id="4711")
    trigger = await _trigger(client, TRACKER_FIRST)

    status, answer = await hook(client, trigger, {"deviceId": "4711", "placa": "XYZ9A87", "km": 7})
    assert status == 200, answer
    assert answer["key"] == "ABC1D23"
    assert (await _get(client, "ABC1D23"))["odometer_km"] == 7

    status, problem = await hook(client, trigger, {"deviceId": "5000", "placa": "XYZ9A87", "km": 7})
    assert status == 422 and problem["errors"][0]["keyword"] == "not_found"

    status, answer = await hook(client, trigger, {"placa": "XYZ9A87", "km": 3})
    assert status == 201 and answer["key"] == "XYZ9A87"
    assert sorted(v["plate"] for v in await entities(client)) == ["ABC1D23", "XYZ9A87"]


async def test_an_empty_tracker_id_is_no_identifier_and_the_plate_finds_the_vehicle(
    client: Client,
) -> None:
    await _vehicle(client, "ABC1D23", tracker_id="4711")
    trigger = await _trigger(client, TRACKER_FIRST)

    status, answer = await hook(client, trigger, {"deviceId": "", "placa": "ABC1D23", "km": 7})

    assert status == 200, answer
    assert answer["key"] == "ABC1D23" and "odometer_km" in answer["changed"]
    assert (await _get(client, "ABC1D23"))["odometer_km"] == 7
    status, problem = await hook(client, trigger, {"deviceId": "", "km": 7})
    assert status == 422 and problem["errors"][0]["keyword"] == "key", problem


async def test_a_tracker_id_finds_only_the_tenants_own_vehicle(client: Client) -> None:
    await _vehicle(client, "ABC1D23", tenant="other", tracker_id="4711")
    trigger = await _trigger(client, PLATE_FIRST)

    status, problem = await hook(client, trigger, {"deviceId": "4711", "km": 10})
    assert status == 422 and problem["errors"][0]["keyword"] == "not_found"

    status, answer = await hook(client, trigger, {"placa": "ABC1D23", "km": 10})
    assert status == 201, answer  # the plate is this tenant's to create
    assert "odometer_km" not in await _get(client, "ABC1D23", tenant="other")


async def test_two_vehicles_with_one_tracker_id_are_ambiguous_not_guessed(
    client: Client,
) -> None:
    await _vehicle(client, "ABC1D23", tracker_id="4711")
    await _vehicle(client, "XYZ9A87", tracker_id="4711")
    trigger = await _trigger(client, PLATE_FIRST)

    status, problem = await hook(client, trigger, {"deviceId": "4711", "km": 10})

    assert status == 422 and problem["errors"][0]["keyword"] == "ambiguous"
    assert all("odometer_km" not in v for v in await entities(client))


CHECKLIST_BY_PLATE_OR_ERP_ID = """
name: checklist-plate-or-erp
direction: inbound
entity_type: other
kind: checklist
key: [key]
fields:
  key: checklistId
  vehicle_plate: {value: ABC1D23}
  driver_cpf: {value: "52998224725"}
  answers: {value: [{question: pneus, answer: true}]}
  completed_at: {value: "2026-11-25T10:58:00Z"}
also:
  - entity_type: vehicle
    key: {first_of: [plate, attributes.erp_id]}
    create: false
    fields:
      plate: {from: placa, transforms: [plate]}
      attributes.erp_id: veiculoId
      odometer_km: {from: odometroKm, only_forward: true}
"""


async def test_a_further_entity_is_found_by_its_plate_or_else_its_partner_id(
    client: Client,
) -> None:
    await _vehicle(client, "ABC1D23", erp_id=77)
    await upload_mapping(client, CHECKLIST_BY_PLATE_OR_ERP_ID)
    trigger = await create_trigger(
        client,
        name="checklists",
        entity_type="other",
        kind="checklist",
        mapping="checklist-plate-or-erp",
    )

    status, answer = await hook(
        client, trigger, {"checklistId": "c1", "veiculoId": "77", "odometroKm": 100}
    )
    assert status == 201, answer
    assert answer["also"][0]["key"] == "ABC1D23"
    status, answer = await hook(
        client, trigger, {"checklistId": "c2", "placa": "ABC1D23", "odometroKm": 200}
    )
    assert status == 201, answer
    assert (await _get(client, "ABC1D23"))["odometer_km"] == 200

    status, problem = await hook(client, trigger, {"checklistId": "c3", "odometroKm": 300})
    assert status == 422
    assert problem["errors"][0]["target"] == "also.0.key"
    assert (await _get(client, "ABC1D23"))["odometer_km"] == 200


async def test_the_dry_run_shows_the_alternative_the_item_has_and_the_entity_it_finds(
    client: Client,
) -> None:
    await _vehicle(client, "ABC1D23", tracker_id="4711")
    response = await client.post(
        "/api/v1/mappings/test",
        headers=auth(),
        json={
            "mapping": TRACKER_FIRST,
            "payload": [{"deviceId": "4711", "placa": "XYZ9A87", "km": 9}, {"placa": "XYZ9A87"}],
        },
    )
    assert response.status == 200, await response.text()
    by_id, by_plate = (await response.json())["results"]
    assert by_id["key"] == {"attributes.tracker_id": "4711"}
    assert by_id["entity"]["write"] == "update" and by_id["entity"]["id"] is not None
    # The vehicle found keeps its plate, as the write keeps it: only the odometer changes.
    assert [c["field"] for c in by_id["entity"]["changes"]] == ["odometer_km"]
    assert by_plate["key"] == {"plate": "XYZ9A87"}
    assert by_plate["entity"]["write"] == "create"


CHECKLIST_BY_DRIVER = """
name: checklist-by-driver
direction: inbound
entity_type: other
kind: checklist
key: {first_of: [key, driver_cpf]}
emit: [checklist.completed]
fields:
  key: checklistId
  driver_cpf: {from: cpf, transforms: [digits]}
"""


async def test_a_lookup_key_finds_only_entities_of_the_triggers_kind(client: Client) -> None:
    """A checklist trigger whose item is found by its driver's CPF (a lookup) never reaches a
    fine that carries the same CPF: the trigger writes checklists only."""
    fine = {
        "kind": "fine",
        "key": "AIT123",
        "ait_number": "AIT123",
        "plate": "ABC1D23",
        "amount_brl": 195.23,
        "status": "open",
        "driver_cpf": "52998224725",
    }
    created = await client.post("/api/v1/entities/other", json=fine, headers=auth())
    assert created.status == 201, await created.text()
    await upload_mapping(client, CHECKLIST_BY_DRIVER)
    trigger = await create_trigger(
        client, entity_type="other", kind="checklist", mapping="checklist-by-driver"
    )

    status, answer = await hook(client, trigger, {"cpf": "529.982.247-25"})

    assert status == 422, answer  # no checklist of that driver
    assert answer["errors"][0]["keyword"] == "not_found"
    stored = await client.get("/api/v1/entities/other/fine:AIT123", headers=auth())
    assert (await stored.json())["version"] == 1
