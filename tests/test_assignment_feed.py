"""Driver changes that partners report through triggers reach the vehicle's history: a
checklist names who drove, an ERP's vehicle feed names the current driver. An unknown driver
is skipped and holds nothing up."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.flow_support import drain, get, sample, send_to, trigger_for
from tests.partner_double import post

Client = TestClient[Any, Any]
ANA = {"name": "Ana Souza", "cpf": "52998224725"}
BRUNO = {"name": "Bruno Lima", "cpf": "11144477735"}


async def _fleet(client: Client) -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    await post(client, "/api/v1/entities/driver", BRUNO)


async def test_a_checklist_puts_its_driver_in_the_history_from_its_completion(
    client: Client,
) -> None:
    await _fleet(client)
    await post(
        client,
        "/api/v1/entities/vehicle/ABC1D23/drivers",
        {"driver": BRUNO["cpf"], "start": "2026-11-01T08:00:00-03:00"},
    )
    checklists = await trigger_for(client, "checklist", kind="checklist")
    await send_to(client, checklists, sample("checklist_completed.json"))  # Ana, 25 Nov 07:58
    await drain(client.app[services_key])

    history = await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers")
    newest, older = history["items"]
    assert newest["driver"]["cpf"] == ANA["cpf"] and newest["source"] == "checklist"
    assert newest["start"] == "2026-11-25T10:58:00+00:00"
    assert newest["ref"] == "checklist:chk-20261125-0042"
    assert older["driver"]["cpf"] == BRUNO["cpf"] and older["end"] == newest["start"]


async def test_an_erp_vehicle_feed_carrying_the_current_driver_records_it(
    client: Client,
) -> None:
    await _fleet(client)
    erp = await post(
        client,
        "/api/v1/triggers",
        {"name": "erp-vehicles", "entity_type": "vehicle", "methods": ["POST"]},
    )
    await send_to(client, erp, {"plate": "ABC1D23", "current_driver": {"cpf": "111.444.777-35"}})
    await drain(client.app[services_key])

    now = await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers")
    assert now["driver"]["driver"]["cpf"] == BRUNO["cpf"]
    assert now["driver"]["source"] == "erp" and now["driver"]["ref"] == f"trigger:{erp['id']}"
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"]["name"] == "Bruno Lima"  # the history's, with the id
    # The ERP repeats itself: nothing more is recorded.
    await send_to(client, erp, {"plate": "ABC1D23", "current_driver": {"cpf": "11144477735"}})
    await drain(client.app[services_key])
    assert len((await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]) == 1


async def test_a_report_naming_an_unknown_driver_is_skipped_and_holds_nothing_up(
    client: Client,
) -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    checklists = await trigger_for(client, "checklist", kind="checklist")
    await send_to(client, checklists, sample("checklist_completed.json"))
    services = client.app[services_key]
    await drain(services)
    assert (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"] == []
    assert (await get(client, "/api/v1/events?type=checklist.completed"))["items"] != []
    pending = await services.store.entities.pending_outboxes(10)
    assert pending == []  # the relay drained everything
