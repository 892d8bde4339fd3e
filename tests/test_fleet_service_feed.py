"""Services reported by a checklist app or an ERP reach the fold's inbox (and so reset
its maintenance plans) without an admin: through the relay, like driver changes."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.flow_support import add_mapping, sample, send_to
from tests.partner_double import post
from tests.support import auth, inbox_items

Client = TestClient[Any, Any]


async def _queued(client: Client, vehicle_id: str) -> list[dict[str, Any]]:
    services = client.app[services_key]
    await services.relay.run_until_idle()
    return await inbox_items(services.store, "acme", vehicle_id, "service")


async def test_a_service_checklist_resets_the_named_plan(client: Client) -> None:
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    plan = await post(client, "/api/v1/maintenance-plans", {"name": "revisao", "every_km": 10_000})
    await add_mapping(client, "checklist")
    trigger = await post(
        client,
        "/api/v1/triggers",
        {"name": "checklists", "entity_type": "other", "kind": "checklist", "mapping": "checklist"},
    )
    routine = sample("checklist_completed.json")
    await send_to(client, trigger, routine)  # an inspection, not a service
    assert await _queued(client, vehicle["id"]) == []

    serviced = {**routine, "checklistId": "chk-2", "servico": {"plano": "revisao"}}
    await send_to(client, trigger, serviced)
    (service,) = await _queued(client, vehicle["id"])
    assert service["plan"] == plan["id"]
    assert service["km"] == 152_340  # the checklist's odometer
    assert service["at"].isoformat() == "2026-11-25T10:58:00+00:00"
    assert service["source"] == "checklist:chk-2"


async def test_an_erp_writing_last_service_resets_every_plan(client: Client) -> None:
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    path = "/api/v1/entities/vehicle/ABC1D23"
    last = {"at": "2026-11-30T08:00:00-03:00", "km": 20_050}
    patched = await client.patch(path, json={"last_service": last}, headers=auth())
    assert patched.status == 200, await patched.text()
    other = await client.patch(path, json={"status": "active"}, headers=auth())
    assert other.status == 200
    (service,) = await _queued(client, vehicle["id"])
    assert (service["km"], "plan" in service) == (20_050, False)
    assert service["at"].isoformat() == "2026-11-30T11:00:00+00:00"


async def test_a_reported_service_naming_no_such_plan_is_skipped(client: Client) -> None:
    vehicle = await post(
        client,
        "/api/v1/entities/vehicle",
        {"plate": "ABC1D23", "last_service": {"at": "2026-11-30T08:00:00Z", "plan": "nope"}},
    )
    assert await _queued(client, vehicle["id"]) == []
    events = await (await client.get("/api/v1/events", headers=auth())).json()
    assert [e["type"] for e in events["items"]] == ["entity.created"]  # relayed, not stuck


async def test_a_service_checklist_written_without_a_mapping_resets_the_plan_and_assigns_its_driver(
    client: Client,
) -> None:
    """A checklist is completed when it is first stored, whoever writes it: an admin keying in
    a paper checklist, or a checklist app posting the canonical document to a mapping-less
    trigger. Its `service` is recorded and its driver drives the vehicle from `completed_at`;
    a correction is an update, not a second completion."""
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "CHK1234"})
    await post(client, "/api/v1/entities/driver", {"name": "Maria", "cpf": "52998224725"})
    plan = await post(client, "/api/v1/maintenance-plans", {"name": "revisao", "every_km": 10_000})
    checklist = {
        "kind": "checklist",
        "key": "CL1",
        "vehicle_plate": "CHK1234",
        "driver_cpf": "529.982.247-25",
        "answers": [{"question": "Pneus ok?", "answer": True}],
        "completed_at": "2026-12-06T03:00:00Z",
        "odometer_km": 1500,
        "service": {"plan": "revisao"},
    }
    await post(client, "/api/v1/entities/other", checklist)
    fixed = await client.patch(
        "/api/v1/entities/other/checklist:CL1", json={"odometer_km": 1501}, headers=auth()
    )
    assert fixed.status == 200, await fixed.text()
    (service,) = await _queued(client, vehicle["id"])
    assert (service["plan"], service["km"]) == (plan["id"], 1500)
    assert service["source"] == "checklist:CL1"
    drivers = await client.get("/api/v1/entities/vehicle/CHK1234/drivers", headers=auth())
    [held] = (await drivers.json())["items"]
    assert held["source"] == "checklist"

    trigger = await post(
        client,
        "/api/v1/triggers",
        {"name": "app", "entity_type": "other", "kind": "checklist", "methods": ["POST"]},
    )
    second = {**checklist, "key": "CL2", "completed_at": "2026-12-06T04:00:00Z"}
    answer = await send_to(client, trigger, second)
    assert answer["events"] == ["entity.created", "checklist.completed"]
    await _queued(client, vehicle["id"])
    events = await (await client.get("/api/v1/events", headers=auth())).json()
    completed = [e["entity"]["key"] for e in events["items"] if e["type"] == "checklist.completed"]
    assert completed == ["checklist:CL2", "checklist:CL1"]
