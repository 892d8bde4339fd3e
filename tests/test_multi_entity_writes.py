"""One payload writes several entities (a mapping's `also`) in one durable write, all or
nothing; only-forward fields keep a late reading from moving a value back. Through HTTP,
against the real database."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.services import Services
from gateway.store import entities as entity_store
from gateway.web.state import services_key
from tests.flow_support import sample
from tests.support import auth
from tests.triggers_support import (
    Client,
    bearer,
    create_trigger,
    entities,
    hook,
    upload_mapping,
    upload_shipped,
)
from tests.ui_support import csrf, log_in, make_user

CHECKLIST = sample("checklist_completed.json")  # ABC1D23 at 152,340 km, 25 Nov 10:58 UTC

# The shipped checklist mapping, plus the vehicle's status from the checklist app: a value
# the vehicle schema refuses fails the vehicle write, and with it the checklist's.
WITH_STATUS = """
name: checklist-with-status
direction: inbound
entity_type: other
kind: checklist
key: [key]
emit: [checklist.completed]
fields:
  key: checklistId
  vehicle_plate: placa
  driver_cpf: condutorCpf
  answers: {each: respostas, fields: {question: item, answer: ok}}
  completed_at: {from: concluidoEm, transforms: [{datetime: {parse: iso8601}}]}
also:
  - entity_type: vehicle
    key: [plate]
    emit: [vehicle.inspected]
    fields:
      plate: {main: vehicle_plate}
      status: situacaoVeiculo
      odometer_km: odometroKm
"""

# A partner's meter readings: the odometer goes forward only, unless the trigger says its
# source is authoritative (the ERP correcting a typo).
METER = """
name: meter
direction: inbound
entity_type: vehicle
key: [plate]
params:
  authoritative: {enum: [true, false], default: false}
fields:
  plate: plate
  odometer_km: {from: km, only_forward: {unless: {param: authoritative}}}
  attributes.engine_hours: {from: hours, only_forward: {by: attributes.hours_read_at}}
  attributes.hours_read_at: read_at
"""


async def _vehicle(client: Client, plate: str = "ABC1D23", **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/entities/vehicle", json={"plate": plate, **fields}, headers=auth()
    )
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def _get(client: Client, path: str) -> Any:
    response = await client.get(path, headers=auth())
    assert response.status == 200, await response.text()
    return await response.json()


async def _checklist_trigger(client: Client, mapping: str = "checklist") -> dict[str, Any]:
    return await create_trigger(
        client, entity_type="other", kind="checklist", methods=["POST"], mapping=mapping
    )


async def test_a_checklist_writes_the_checklist_and_the_vehicles_odometer_in_one_write(
    client: Client,
) -> None:
    await _vehicle(client, odometer_km=151000)
    await upload_shipped(client, "checklist")
    trigger = await _checklist_trigger(client)

    status, answer = await hook(client, trigger, CHECKLIST)

    assert status == 201, answer
    assert answer["key"] == "chk-20261125-0042" and answer["created"] is True
    [vehicle_write] = answer["also"]
    assert vehicle_write["entity_type"] == "vehicle" and vehicle_write["key"] == "ABC1D23"
    assert vehicle_write["created"] is False
    assert vehicle_write["changed"] == ["attributes", "odometer_km"]  # it had no attributes
    vehicle = await _get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["odometer_km"] == 152340
    assert vehicle["attributes"]["odometer_read_at"] == "2026-11-25T10:58:00Z"
    [checklist] = await entities(client, "other")
    assert checklist["key"] == "chk-20261125-0042" and checklist["odometer_km"] == 152340


async def test_a_late_checklist_leaves_the_odometer_where_a_newer_reading_put_it(
    client: Client,
) -> None:
    await _vehicle(client, odometer_km=151000)
    await upload_shipped(client, "checklist")
    trigger = await _checklist_trigger(client)
    assert (await hook(client, trigger, CHECKLIST))[0] == 201

    late = {
        **copy.deepcopy(CHECKLIST),
        "checklistId": "chk-20261124-0007",
        "odometroKm": 152900,  # a bigger number, read a day earlier: a typo or another unit
        "concluidoEm": "2026-11-24T07:58:00-03:00",
    }
    status, answer = await hook(client, trigger, late)

    assert status == 201, answer  # the checklist itself is stored
    [vehicle_write] = answer["also"]
    assert vehicle_write["changed"] == []
    reading = ["odometer_km", "attributes.odometer_read_at", "attributes.odometer_source"]
    assert vehicle_write["skipped"] == reading
    vehicle = await _get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["odometer_km"] == 152340
    assert vehicle["attributes"]["odometer_read_at"] == "2026-11-25T10:58:00Z"
    assert len(await entities(client, "other")) == 2
    metrics = await (await client.get("/metrics")).text()
    assert (
        f'gateway_stale_fields_skipped_total{{field="odometer_km",trigger="{trigger["id"]}"}} 1.0'
        in metrics
    )


async def test_a_second_target_that_fails_validation_writes_nothing(client: Client) -> None:
    await _vehicle(client, odometer_km=151000, status="active")
    await upload_mapping(client, WITH_STATUS)
    trigger = await _checklist_trigger(client, "checklist-with-status")

    response = await client.post(
        f"/hooks/{trigger['id']}",
        json={**CHECKLIST, "situacaoVeiculo": "scrapped"},
        headers=bearer(trigger),
    )

    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["reason"] == "entity"
    assert [e["entity_type"] for e in problem["errors"]] == ["vehicle"]
    assert await entities(client, "other") == []  # the checklist is not half-written
    vehicle = await _get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert (vehicle["status"], vehicle["odometer_km"], vehicle["version"]) == ("active", 151000, 1)
    events = await _get(client, "/api/v1/events?type=checklist.completed")
    assert events["items"] == []
    [kept] = (await _get(client, f"/api/v1/rejected?trigger_id={trigger['id']}"))["items"]
    assert kept["reason"] == "entity"

    fixed = await client.post(
        f"/hooks/{trigger['id']}",
        json={**CHECKLIST, "situacaoVeiculo": "maintenance"},
        headers=bearer(trigger),
    )
    assert fixed.status == 201, await fixed.text()
    answer = await fixed.json()
    assert answer["events"] == ["entity.created", "checklist.completed"]
    assert answer["also"][0]["events"] == ["entity.updated", "vehicle.inspected"]
    vehicle = await _get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert (vehicle["status"], vehicle["odometer_km"], vehicle["version"]) == (
        "maintenance",
        152340,
        2,
    )


async def test_a_target_the_database_refuses_mid_write_takes_the_others_back(
    aiohttp_client: Any, make_app: Callable[..., web.Application], monkeypatch: Any
) -> None:
    """The checklist is inserted first; the vehicle's update is then refused inside the same
    transaction (its outbox is full): the answer is a 503 and the checklist is not there."""
    monkeypatch.setattr(entity_store, "MAX_OUTBOX", 2)
    client = await aiohttp_client(make_app())
    await _vehicle(client, odometer_km=151000)
    patched = await client.patch(
        "/api/v1/entities/vehicle/ABC1D23", json={"year": 2020}, headers=auth()
    )
    assert patched.status == 200  # two events wait in the vehicle's outbox: it is full
    await upload_shipped(client, "checklist")
    trigger = await _checklist_trigger(client)

    status, problem = await hook(client, trigger, CHECKLIST)

    assert status == 503, problem
    assert await entities(client, "other") == []
    vehicle = await _get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert (vehicle["odometer_km"], vehicle["version"]) == (151000, 2)
    await client.app[services_key].relay.run_until_idle()
    status, answer = await hook(client, trigger, CHECKLIST)
    assert status == 201, answer
    assert [c["key"] for c in await entities(client, "other")] == ["chk-20261125-0042"]
    assert (await _get(client, "/api/v1/entities/vehicle/ABC1D23"))["odometer_km"] == 152340


async def test_a_checklist_for_a_vehicle_the_fleet_does_not_have_is_rejected_whole(
    client: Client,
) -> None:
    await upload_shipped(client, "checklist")
    trigger = await _checklist_trigger(client)

    status, problem = await hook(client, trigger, CHECKLIST)

    assert status == 422, problem
    assert problem["errors"][0]["keyword"] == "not_found"
    assert await entities(client, "driver") == [] and await entities(client) == []


async def test_an_idempotent_retry_of_a_checklist_writes_it_once(client: Client) -> None:
    await _vehicle(client, odometer_km=151000)
    await upload_shipped(client, "checklist")
    trigger = await _checklist_trigger(client)
    headers = {**bearer(trigger), "Idempotency-Key": "chk-42"}

    first = await client.post(f"/hooks/{trigger['id']}", json=CHECKLIST, headers=headers)
    again = await client.post(f"/hooks/{trigger['id']}", json=CHECKLIST, headers=headers)

    assert (first.status, again.status) == (201, 201)
    assert await again.json() == await first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    [checklist] = await entities(client, "other")
    assert checklist["version"] == 1
    assert (await _get(client, "/api/v1/entities/vehicle/ABC1D23"))["version"] == 2


async def test_a_batch_of_checklists_reaches_each_vehicle_in_order(client: Client) -> None:
    await _vehicle(client, odometer_km=100)
    await _vehicle(client, "BRA2E19", odometer_km=100)
    await upload_shipped(client, "checklist")
    trigger = await _checklist_trigger(client)
    batch = [
        {
            **CHECKLIST,
            "checklistId": f"chk-{n}-{plate}",
            "placa": plate,
            "odometroKm": 1000 + n,
            "concluidoEm": f"2026-11-25T{10 + n:02d}:00:00Z",
        }
        for n in range(8)
        for plate in ("ABC1D23", "BRA2E19")
    ]

    status, answer = await hook(client, trigger, batch)

    assert status == 200, answer
    assert answer["summary"] == {"items": 16, "created": 16, "updated": 0, "failed": 0}
    for plate in ("ABC1D23", "BRA2E19"):
        vehicle = await _get(client, f"/api/v1/entities/vehicle/{plate}")
        assert vehicle["odometer_km"] == 1007 and vehicle["version"] == 9


async def test_only_forward_fields_skip_stale_values_unless_the_source_is_authoritative(
    client: Client,
) -> None:
    await upload_mapping(client, METER)
    meters = await create_trigger(client, mapping="meter")
    erp = await create_trigger(client, name="erp", mapping="meter", params={"authoritative": True})
    first = {"plate": "ABC1D23", "km": 5000, "hours": 120, "read_at": "2026-11-25T10:00:00Z"}
    assert (await hook(client, meters, first))[0] == 201

    late = {"plate": "ABC1D23", "km": 4990, "hours": 130, "read_at": "2026-11-25T09:00:00Z"}
    status, answer = await hook(client, meters, late)
    assert status == 200, answer
    assert answer["changed"] == []
    assert answer["skipped"] == [
        "odometer_km",
        "attributes.engine_hours",
        "attributes.hours_read_at",
    ]

    newer = {"plate": "ABC1D23", "km": 5000, "hours": 118, "read_at": "2026-11-25T11:00:00.5Z"}
    status, answer = await hook(client, meters, newer)  # same km: not behind; hours by time
    assert status == 200, answer
    assert answer["changed"] == ["attributes.engine_hours", "attributes.hours_read_at"]
    assert "skipped" not in answer

    correction = {"plate": "ABC1D23", "km": 4500}
    status, answer = await hook(client, erp, correction)
    assert status == 200, answer
    assert answer["changed"] == ["odometer_km"]
    vehicle = await _get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["odometer_km"] == 4500
    assert vehicle["attributes"] == {"engine_hours": 118, "hours_read_at": "2026-11-25T11:00:00.5Z"}


async def test_the_dry_run_shows_every_target_and_what_would_be_skipped(client: Client) -> None:
    await _vehicle(
        client,
        odometer_km=160000,
        attributes={"odometer_read_at": "2026-12-01T10:00:00Z"},
    )
    await upload_shipped(client, "checklist")

    response = await client.post(
        "/api/v1/mappings/test", json={"name": "checklist", "payload": CHECKLIST}, headers=auth()
    )

    assert response.status == 200, await response.text()
    [result] = (await response.json())["results"]
    assert result["entity"]["write"] == "create"
    assert result["events"] == ["entity.created", "checklist.completed"]
    [vehicle] = result["also"]
    assert vehicle["entity_type"] == "vehicle" and vehicle["key"] == {"plate": "ABC1D23"}
    assert vehicle["document"]["odometer_km"] == 152340
    reading = ["odometer_km", "attributes.odometer_read_at", "attributes.odometer_source"]
    assert vehicle["entity"]["skipped"] == reading
    assert vehicle["entity"]["changes"] == []  # a stale reading's source goes with it
    assert await entities(client, "other") == []


BY_ERP_ID = """
name: checklist-by-erp-id
direction: inbound
entity_type: other
kind: checklist
key: [key]
fields:
  key: checklistId
  vehicle_plate: placa
  driver_cpf: condutorCpf
  answers: {each: respostas, fields: {question: item, answer: ok}}
  completed_at: {from: concluidoEm, transforms: [{datetime: {parse: iso8601}}]}
also:
  - entity_type: vehicle
    key: [attributes.erp_id]
    create: false
    fields:
      attributes.erp_id: veiculoId
      odometer_km: {from: odometroKm, only_forward: true}
"""


async def test_a_further_entity_is_found_by_a_partner_id(client: Client) -> None:
    await _vehicle(client, odometer_km=151000, attributes={"erp_id": 77})
    await upload_mapping(client, BY_ERP_ID)
    trigger = await _checklist_trigger(client, "checklist-by-erp-id")

    status, answer = await hook(client, trigger, {**CHECKLIST, "veiculoId": "77"})

    assert status == 201, answer
    assert answer["also"][0]["key"] == "ABC1D23"
    assert "odometer_km" in answer["also"][0]["changed"]
    assert (await _get(client, "/api/v1/entities/vehicle/ABC1D23"))["odometer_km"] == 152340
    status, problem = await hook(client, trigger, {**CHECKLIST, "veiculoId": "78"})
    assert status == 422 and problem["errors"][0]["keyword"] == "not_found"


async def test_checklists_arriving_together_leave_the_newest_reading(client: Client) -> None:
    await _vehicle(client, odometer_km=0)
    await upload_shipped(client, "checklist")
    trigger = await _checklist_trigger(client)
    hours = [5, 2, 9, 1, 7, 3, 8, 0, 6, 4]  # completion hours, sent in this order at once

    answers = await asyncio.gather(
        *(
            hook(
                client,
                trigger,
                {
                    **CHECKLIST,
                    "checklistId": f"chk-{hour}",
                    "odometroKm": 1000 + hour,
                    "concluidoEm": f"2026-11-25T{hour:02d}:00:00Z",
                },
            )
            for hour in hours
        )
    )

    assert [status for status, _ in answers] == [201] * len(hours)
    vehicle = await _get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["odometer_km"] == 1009
    assert vehicle["attributes"]["odometer_read_at"] == "2026-11-25T09:00:00Z"
    assert len(await entities(client, "other")) == len(hours)


async def test_the_admin_uis_dry_run_shows_the_further_entity(
    client: Client, services: Services
) -> None:
    await _vehicle(
        client, odometer_km=160000, attributes={"odometer_read_at": "2026-12-01T10:00:00Z"}
    )
    await upload_shipped(client, "checklist")
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/mappings/checklist")

    response = await client.post(
        "/admin/mappings/checklist/test",
        data={"csrf": token, "payload": json.dumps(CHECKLIST)},
    )

    page = await response.text()
    assert response.status == 200, page
    also = page[page.index('data-testid="dry-run-also"') :]
    assert "Também grava: vehicle" in also
    # The reading is stale, and its source goes with it: nothing of the vehicle would change.
    assert "Nada mudaria no cadastro" in also
    skipped = "<code>odometer_km</code> <code>attributes.odometer_read_at</code>"
    assert f"{skipped} <code>attributes.odometer_source</code>" in also
    assert await entities(client, "other") == []


DRIVER_AND_TRACKED_VEHICLE = """
name: driver-tracked
direction: inbound
entity_type: driver
key: [cpf]
fields:
  cpf: cpf
  name: nome
  attributes.tracker_id: rastreador
also:
  - entity_type: vehicle
    key: [attributes.tracker_id]
    fields:
      attributes.tracker_id: dispositivo.id
"""

DRIVER_OF_A_KNOWN_VEHICLE = """
name: driver-known-vehicle
direction: inbound
entity_type: driver
key: [cpf]
fields:
  cpf: cpf
  name: nome
  attributes.vehicle_plate: {from: placa, transforms: [trim, upper]}
also:
  - entity_type: vehicle
    key: [plate]
    create: false
    fields:
      plate: {main: attributes.vehicle_plate}
"""


async def test_an_also_entity_that_is_not_found_is_a_problem_at_its_own_source_in_the_body(
    client: Client,
) -> None:
    """An `also` target's lookup key that finds no entity, and a `create: false` one that
    does not exist, pointed at the also entity's own field (`/attributes/tracker_id`, the
    main driver's `rastreador` as far as the partner could tell; `/plate`, in no body): it
    is a problem where that target's source sits in the payload, naming it and its type."""
    await upload_mapping(client, DRIVER_AND_TRACKED_VEHICLE)
    drivers = await create_trigger(client, entity_type="driver", mapping="driver-tracked")
    driver = {
        "cpf": "52998224725",
        "nome": "Ana",
        "rastreador": "T-1",
        "dispositivo": {"id": "D-4"},
    }
    status, problem = await hook(client, drivers, driver)
    assert status == 422, problem
    assert problem["errors"] == [
        {
            "pointer": "/dispositivo/id",
            "message": "attributes.tracker_id (from dispositivo.id): "
            "no vehicle with attributes.tracker_id 'D-4'",
            "keyword": "not_found",
            "target": "attributes.tracker_id",
            "entity_type": "vehicle",
            "source": "dispositivo.id",
        }
    ]
    await upload_mapping(client, DRIVER_OF_A_KNOWN_VEHICLE)
    assigned = await create_trigger(
        client, name="assigned", entity_type="driver", mapping="driver-known-vehicle"
    )
    status, problem = await hook(client, assigned, {**driver, "placa": "abc1d23"})
    assert status == 422, problem
    [error] = problem["errors"]
    assert (error["pointer"], error["source"], error["target"], error["entity_type"]) == (
        "/placa",
        "placa",
        "plate",
        "vehicle",
    ), error
    assert await entities(client, "driver") == [] and await entities(client) == []
