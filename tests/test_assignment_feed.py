"""Driver changes that partners report through triggers reach the vehicle's history: a
checklist names who drove, an ERP's vehicle feed names the current driver. An unknown driver
is skipped and holds nothing up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.flow_support import drain, get, sample, send_to, trigger_for
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    partner,
    post,
    upload_mapping,
)
from tests.support import auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]
ANA = {"name": "Ana Souza", "cpf": "52998224725"}
BRUNO = {"name": "Bruno Lima", "cpf": "11144477735"}
CARLA = {"name": "Carla Dias", "cpf": "39053344705"}


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


ERP_VEHICLES = """
name: erp-vehicles
direction: inbound
entity_type: vehicle
key: [plate]
items: items
fields:
  plate: {from: placa, required: true}
  current_driver.cpf: condutorCpf
"""


async def _driven_by_bruno(client: Client) -> None:
    await _fleet(client)
    await post(
        client,
        "/api/v1/entities/vehicle/ABC1D23/drivers",
        {"driver": BRUNO["cpf"], "start": "2026-01-01T00:00:00Z"},
    )


async def _now(client: Client) -> tuple[dict[str, Any], dict[str, Any]]:
    """The change in force and the vehicle's `current_driver`."""
    history = await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers")
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    return history["driver"], vehicle.get("current_driver")


async def test_an_erp_vehicle_feed_read_by_a_schedule_records_the_driver_as_if_pushed(
    client: Client, partner: Partner
) -> None:
    """Only a trigger's writes were read: polled, the ERP's driver never reached the history,
    and the vehicle's `current_driver` held Ana's CPF with Bruno's id and name."""
    await _driven_by_bruno(client)
    await upload_mapping(client, ERP_VEHICLES)
    erp = await create_partner(client, partner.url, name="ERP")
    action = await create_action(client, erp["id"], name="erp-list", method="GET", path="/v")
    partner.respond_with(200, {"items": [{"placa": "ABC1D23", "condutorCpf": ANA["cpf"]}]})
    target = {"entity_type": "vehicle", "mapping": "erp-vehicles"}
    schedule = await post(
        client,
        "/api/v1/schedules",
        {"name": "erp", "action_id": action["id"], "every": "1d", "target": target},
    )
    services = client.app[services_key]
    assert await services.schedule_runner.run_until_idle() == {"ok": 1}
    await drain(services)
    change, field = await _now(client)
    assert change["driver"]["cpf"] == ANA["cpf"] and change["source"] == "erp"
    assert change["ref"] == f"schedule:{schedule['id']}"
    assert field == change["driver"]


async def test_an_admin_write_of_the_current_driver_is_recorded_in_the_history(
    client: Client,
) -> None:
    """An admin's PATCH of `current_driver` was kept as written (Ana's CPF and name with
    Bruno's id) while the history, which notifications ask, still said Bruno."""
    await _driven_by_bruno(client)
    patch = {"current_driver": {"cpf": ANA["cpf"], "name": ANA["name"]}}
    response = await client.patch("/api/v1/entities/vehicle/ABC1D23", json=patch, headers=auth())
    assert response.status == 200, await response.text()
    await drain(client.app[services_key])
    change, field = await _now(client)
    assert change["driver"]["cpf"] == ANA["cpf"] and change["source"] == "admin"
    assert field == change["driver"]
    ana = field["id"]
    patch = {
        "current_driver": {"id": (await get(client, "/api/v1/entities/driver/11144477735"))["id"]}
    }
    response = await client.patch("/api/v1/entities/vehicle/ABC1D23", json=patch, headers=auth())
    assert response.status == 200, await response.text()
    await drain(client.app[services_key])
    change, field = await _now(client)  # named by its id: the driver the id is
    assert change["driver"]["cpf"] == BRUNO["cpf"] and field == change["driver"] != ana
    events = (await get(client, "/api/v1/events?type=entity.updated&limit=100"))["items"]
    followed = [
        e["origin"]
        for e in events
        if e["origin"]["kind"] == "admin" and "assignment" in e["origin"]
    ]
    assert len(followed) == 3  # the history's own writes (Bruno, Ana, Bruno), never reports
    assert len((await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]) == 3


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


async def _erp_vehicles(client: Client) -> dict[str, Any]:
    body = {"name": "erp-vehicles", "entity_type": "vehicle", "methods": ["POST"]}
    return dict(await post(client, "/api/v1/triggers", body))


async def test_an_erp_report_of_the_driver_in_force_in_its_own_spelling_gets_the_id_back(
    client: Client,
) -> None:
    """The ERP's `{cpf, name}` replaced the history's `{id, cpf, name}`: only the name and the
    id changed, so the write was taken for no report, and the field stayed without its id
    (and with the ERP's spelling of the name) for good."""
    await _driven_by_bruno(client)
    erp = await _erp_vehicles(client)
    spelled = {"cpf": BRUNO["cpf"], "name": "BRUNO LIMA"}
    await send_to(client, erp, {"plate": "ABC1D23", "current_driver": spelled})
    await drain(client.app[services_key])
    change, field = await _now(client)
    assert field == change["driver"] and field["name"] == "Bruno Lima" and field["id"]
    history = await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers")
    assert len(history["items"]) == 1  # a repeat: nothing more recorded


async def test_an_erp_sending_the_driver_in_force_by_cpf_again_and_again_changes_nothing(
    client: Client,
) -> None:
    """Each send of `{cpf}` stripped the field's id and name (an `entity.updated`, the partner
    told they changed) and the history wrote them back (a second one): two vehicle events on
    every send of the same record, for ever."""
    await _driven_by_bruno(client)
    erp = await _erp_vehicles(client)
    services = client.app[services_key]
    await drain(services)
    before = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    events = "/api/v1/events?type=entity.updated&limit=200"
    settled = len((await get(client, events))["items"])
    for spelling in (BRUNO["cpf"], "111.444.777-35", BRUNO["cpf"]):
        answer = await send_to(
            client, erp, {"plate": "ABC1D23", "current_driver": {"cpf": spelling}}
        )
        assert answer["changed"] == [] and answer["events"] == [], answer
        await drain(services)
    assert len((await get(client, events))["items"]) == settled
    assert (await get(client, "/api/v1/entities/vehicle/ABC1D23"))["current_driver"] == (
        before["current_driver"]
    )
    history = await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers")
    assert len(history["items"]) == 1


@pytest.mark.parametrize(
    "sent",
    [
        {"cpf": BRUNO["cpf"], "name": "BRUNO LIMA"},  # an ERP's export: upper case
        {"cpf": "111.444.777-35", "name": "Bruno  Lima "},  # extra spaces
        {"cpf": BRUNO["cpf"], "name": "Bruno S. Lima"},  # the ERP's own record of the name
    ],
    ids=["upper-case", "spaces", "another-name-string"],
)
async def test_an_erp_sending_the_driver_in_force_with_its_own_name_changes_nothing(
    client: Client, sent: dict[str, str]
) -> None:
    """Only a `{cpf}` exactly as ours was a repeat: the ERP's `{cpf, name}` in its own
    spelling replaced the field whole (id and name gone, `changed` told the partner), the
    history saw a repeat of Bruno and wrote his `{id, cpf, name}` back: two vehicle
    `entity.updated` on every send, for ever. The CPF names the driver; the name is the
    driver's own, which the history copies."""
    await _driven_by_bruno(client)
    erp = await _erp_vehicles(client)
    services = client.app[services_key]
    await drain(services)
    before = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    events = "/api/v1/events?type=entity.updated&limit=200"
    settled = len((await get(client, events))["items"])
    for _ in range(3):
        answer = await send_to(client, erp, {"plate": "ABC1D23", "current_driver": sent})
        assert answer["changed"] == [] and answer["events"] == [], answer
        await drain(services)
    assert len((await get(client, events))["items"]) == settled
    after = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert after["current_driver"] == before["current_driver"]
    assert after["current_driver"]["name"] == "Bruno Lima" and after["current_driver"]["id"]
    assert len((await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]) == 1


async def test_an_erp_sending_the_driver_in_force_with_another_drivers_id_reports_that_one(
    client: Client,
) -> None:
    """The repeat is by the members that name the driver (`x-named-by`: id, CPF): one of
    them another's is another report, replaced whole and recorded."""
    await _driven_by_bruno(client)
    erp = await _erp_vehicles(client)
    services = client.app[services_key]
    await drain(services)
    ana = await get(client, f"/api/v1/entities/driver/{ANA['cpf']}")
    sent = {"id": ana["id"], "name": "Bruno Lima"}
    answer = await send_to(client, erp, {"plate": "ABC1D23", "current_driver": sent})
    assert answer["events"] == ["entity.updated"], answer
    await drain(services)
    change, field = await _now(client)
    assert change["driver"]["cpf"] == ANA["cpf"] and field == change["driver"]


@pytest.mark.parametrize(
    "member", [{"id": None}, {"id": None, "name": None}], ids=["id-null", "id-and-name-null"]
)
async def test_the_driver_in_force_named_by_cpf_beside_a_null_changes_nothing(
    client: Client, member: dict[str, None]
) -> None:
    """An ERP mapping whose `current_driver.id` source is absent sends it as null: the null
    named nothing, so `{cpf, id: null}` was taken for another driver, the field replaced
    (id and name announced as removed) and the history wrote them back, two events a send
    (rev28 F5)."""
    await _driven_by_bruno(client)
    erp = await _erp_vehicles(client)
    services = client.app[services_key]
    await drain(services)
    before = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    sent = {"cpf": BRUNO["cpf"], **member}
    for _ in range(2):
        answer = await send_to(client, erp, {"plate": "ABC1D23", "current_driver": sent})
        assert answer["changed"] == [] and answer["events"] == [], answer
        await drain(services)
    after = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert after["current_driver"] == before["current_driver"]
    assert after["version"] == before["version"]


async def test_the_name_of_a_driver_the_tenant_does_not_have_can_be_corrected(
    client: Client,
) -> None:
    """An ERP's `{cpf, name}` of a driver the tenant does not have is kept as sent: no driver
    entity holds that CPF, so no rename can reach it, and a write of the same CPF with the
    name corrected was taken for the same value sent again: the typo stayed for good
    (rev28 F3). The CPF names the value only in the history's copy of a driver (its id)."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    erp = await _erp_vehicles(client)
    services = client.app[services_key]
    typo = {"cpf": CARLA["cpf"], "name": "Carla Dais"}
    await send_to(client, erp, {"plate": "ABC1D23", "current_driver": typo})
    await drain(services)
    assert (await get(client, "/api/v1/entities/driver"))["items"] == []
    fixed = {"cpf": CARLA["cpf"], "name": CARLA["name"]}
    answer = await send_to(client, erp, {"plate": "ABC1D23", "current_driver": fixed})
    assert answer["changed"] == ["current_driver.name"], answer
    await drain(services)
    stored = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert stored["current_driver"] == fixed
    response = await client.patch(
        "/api/v1/entities/vehicle/ABC1D23",
        json={"current_driver": {"cpf": CARLA["cpf"], "name": "Carla D."}},
        headers=auth(),
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["current_driver"]["name"] == "Carla D."


@pytest.mark.parametrize("member", [{"id": None}, {"name": None}], ids=["id-null", "name-null"])
async def test_a_null_beside_the_cpf_of_a_driver_the_tenant_does_not_have_changes_nothing(
    client: Client, member: dict[str, None]
) -> None:
    """Over an ERP's `{cpf, name}` of a driver the tenant does not have (no copy of a driver),
    the same report with a null beside the CPF (an ERP mapping whose `id` or `name` source is
    absent) changes nothing, as `{cpf}` does: a null names nothing. It was taken for another
    value, the field replaced and the name dropped, and the next report with the name put it
    back: two `entity.updated` per alternation (rev29 F5)."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    erp = await _erp_vehicles(client)
    services = client.app[services_key]
    held = {"cpf": CARLA["cpf"], "name": CARLA["name"]}
    await send_to(client, erp, {"plate": "ABC1D23", "current_driver": held})
    await drain(services)
    assert (await get(client, "/api/v1/entities/driver"))["items"] == []
    sent = {"cpf": CARLA["cpf"], **member}
    answer = await send_to(client, erp, {"plate": "ABC1D23", "current_driver": sent})
    await drain(services)
    after = await get(client, "/api/v1/entities/vehicle/ABC1D23")

    assert (answer["changed"], answer["events"]) == ([], []), answer
    assert after["current_driver"] == held


async def test_removing_the_current_driver_reports_that_nobody_drives(client: Client) -> None:
    """A PATCH of `current_driver: null` removed the field while the history still said Bruno
    drove, and a later report of Bruno stayed without an id."""
    await _driven_by_bruno(client)
    response = await client.patch(
        "/api/v1/entities/vehicle/ABC1D23", json={"current_driver": None}, headers=auth()
    )
    assert response.status == 200, await response.text()
    await drain(client.app[services_key])
    change, field = await _now(client)
    assert change["driver"] is None and change["source"] == "admin" and field is None


async def test_the_latest_erp_report_wins_over_the_history_catching_up_with_an_earlier_one(
    client: Client,
) -> None:
    """The ordering rule, step by step: while the ERP's report of Ana waits for the relay,
    the history writes Bruno's `{id, cpf, name}` on the field (a change recorded meanwhile);
    the ERP then reports Bruno, `{cpf}`: that write changed only the id and the name, so it
    was no report, and the vehicle ended on Ana, whom the ERP no longer says drives it."""
    await _fleet(client)
    erp = await _erp_vehicles(client)
    await send_to(client, erp, {"plate": "ABC1D23", "current_driver": {"cpf": ANA["cpf"]}})
    # Recorded before the relay passes the ERP's write: the field becomes Bruno's, whole.
    await post(
        client,
        "/api/v1/entities/vehicle/ABC1D23/drivers",
        {"driver": BRUNO["cpf"], "start": "2026-01-01T00:00:00Z"},
    )
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"]["cpf"] == BRUNO["cpf"] and vehicle["current_driver"]["id"]
    await send_to(client, erp, {"plate": "ABC1D23", "current_driver": {"cpf": BRUNO["cpf"]}})
    await drain(client.app[services_key])
    change, field = await _now(client)
    assert change["driver"]["cpf"] == BRUNO["cpf"] and change["source"] == "erp"
    assert field == change["driver"]
    history = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [c["driver"]["cpf"] for c in history] == [BRUNO["cpf"], ANA["cpf"], BRUNO["cpf"]]


async def _checklist(
    client: Client, key: str, plate: str, cpf: str, at: str = "2026-11-25T10:00:00Z"
) -> None:
    body = {
        "kind": "checklist",
        "key": key,
        "vehicle_plate": plate,
        "driver_cpf": cpf,
        "answers": [{"question": "pneus", "answer": True}],
        "completed_at": at,
    }
    await post(client, "/api/v1/entities/other", body)


async def _patch(client: Client, path: str, body: dict[str, Any]) -> None:
    response = await client.patch(path, json=body, headers=auth())
    assert response.status == 200, await response.text()


async def test_a_checklist_corrected_to_another_driver_puts_that_driver_in_the_history(
    client: Client,
) -> None:
    """A PATCH of a checklist's `driver_cpf` was ignored: the history kept the driver the
    checklist no longer names, and fines of that time went to that person."""
    await _fleet(client)
    await _checklist(client, "ck-1", "ABC1D23", ANA["cpf"])
    await drain(client.app[services_key])
    await _patch(client, "/api/v1/entities/other/checklist:ck-1", {"driver_cpf": BRUNO["cpf"]})
    await drain(client.app[services_key])
    history = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [(c["driver"]["cpf"], c["start"]) for c in history] == [
        (BRUNO["cpf"], "2026-11-25T10:00:00+00:00")
    ]
    assert history[0]["ref"] == "checklist:ck-1"
    _, field = await _now(client)
    assert field == history[0]["driver"]


async def test_a_checklist_corrected_to_another_vehicle_moves_its_driver_there(
    client: Client,
) -> None:
    """A corrected `vehicle_plate` moved the odometer reading but left the driver on the
    vehicle the checklist no longer names, and the right one without a driver."""
    await _fleet(client)
    await post(client, "/api/v1/entities/vehicle", {"plate": "XYZ9K87"})
    await post(
        client,
        "/api/v1/entities/vehicle/ABC1D23/drivers",
        {"driver": BRUNO["cpf"], "start": "2026-11-01T00:00:00Z"},
    )
    await _checklist(client, "ck-2", "ABC1D23", ANA["cpf"])
    await drain(client.app[services_key])
    await _patch(client, "/api/v1/entities/other/checklist:ck-2", {"vehicle_plate": "XYZ9K87"})
    await drain(client.app[services_key])
    wrong = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [c["driver"]["cpf"] for c in wrong] == [BRUNO["cpf"]]  # Bruno's lasts on
    assert (await get(client, "/api/v1/entities/vehicle/ABC1D23"))["current_driver"]["cpf"] == (
        BRUNO["cpf"]
    )
    right = await get(client, "/api/v1/entities/vehicle/XYZ9K87/drivers?at=2026-11-25T11:00:00Z")
    assert right["driver"]["driver"]["cpf"] == ANA["cpf"]
    assert right["driver"]["ref"] == "checklist:ck-2"


async def _driven_by_bruno_from_november(client: Client) -> None:
    await _fleet(client)
    await post(
        client,
        "/api/v1/entities/vehicle/ABC1D23/drivers",
        {"driver": BRUNO["cpf"], "start": "2026-11-01T00:00:00Z"},
    )


async def _driver_at(client: Client, plate: str, at: str) -> dict[str, Any]:
    found = await get(client, f"/api/v1/entities/vehicle/{plate}/drivers?at={at}")
    return found.get("driver") or {}


async def test_a_corrected_checklist_leaves_what_a_later_checklist_of_its_driver_said(
    client: Client,
) -> None:
    """The second checklist of the same driver recorded nothing (a repeat), so withdrawing
    the first one's change went back to the driver before: fines after the second checklist
    went to Bruno though it says Ana drove."""
    await _driven_by_bruno_from_november(client)
    await post(client, "/api/v1/entities/vehicle", {"plate": "XYZ9K87"})
    services = client.app[services_key]
    await _checklist(client, "ck-1", "ABC1D23", ANA["cpf"], "2026-11-25T10:00:00Z")
    await drain(services)
    await _checklist(client, "ck-2", "ABC1D23", ANA["cpf"], "2026-11-25T12:00:00Z")
    await drain(services)
    await _patch(client, "/api/v1/entities/other/checklist:ck-1", {"vehicle_plate": "XYZ9K87"})
    await drain(services)
    history = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [(c["driver"]["cpf"], c["start"], c["ref"]) for c in history] == [
        (ANA["cpf"], "2026-11-25T12:00:00+00:00", "checklist:ck-2"),
        (BRUNO["cpf"], "2026-11-01T00:00:00+00:00", None),
    ]
    _, field = await _now(client)
    assert field == history[0]["driver"]
    # ck-2 corrected too: nothing says Ana drove ABC1D23 any more
    await _patch(client, "/api/v1/entities/other/checklist:ck-2", {"vehicle_plate": "XYZ9K87"})
    await drain(services)
    history = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [c["driver"]["cpf"] for c in history] == [BRUNO["cpf"]]


async def test_a_checklist_of_the_same_instant_stands_when_the_first_is_taken_back(
    client: Client,
) -> None:
    await _driven_by_bruno_from_november(client)
    services = client.app[services_key]
    await _checklist(client, "ck-1", "ABC1D23", ANA["cpf"])
    await drain(services)
    await _checklist(client, "ck-2", "ABC1D23", ANA["cpf"])  # the same time: a repeat
    await drain(services)
    response = await client.delete("/api/v1/entities/other/checklist:ck-1", headers=auth())
    assert response.status == 204, await response.text()
    await drain(services)
    at = await _driver_at(client, "ABC1D23", "2026-11-25T11:00:00Z")
    assert (at["driver"]["cpf"], at["ref"]) == (ANA["cpf"], "checklist:ck-2")


async def _history(client: Client) -> list[tuple[str, str, str | None]]:
    items = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    return [(c["driver"]["cpf"], c["start"], c["ref"]) for c in items]


async def _delete_checklist(client: Client, key: str) -> None:
    response = await client.delete(f"/api/v1/entities/other/checklist:{key}", headers=auth())
    assert response.status == 204, await response.text()
    await drain(client.app[services_key])


async def test_a_checklist_written_over_at_its_instant_stands_again_when_the_later_is_deleted(
    client: Client,
) -> None:
    """Two checklists at one instant (a shift handover, stamped to the minute) naming two
    drivers: the later stands. It was filed by mistake and deleted, and the vehicle fell back
    to Bruno, whom no checklist names, although the first one still says Carla drove."""
    await _driven_by_bruno_from_november(client)
    await post(client, "/api/v1/entities/driver", CARLA)
    services = client.app[services_key]
    await _checklist(client, "ck-1", "ABC1D23", CARLA["cpf"], "2026-11-25T12:00:00Z")
    await drain(services)
    await _checklist(client, "ck-2", "ABC1D23", ANA["cpf"], "2026-11-25T12:00:00Z")
    await drain(services)
    assert (await _history(client))[0] == (
        ANA["cpf"],
        "2026-11-25T12:00:00+00:00",
        "checklist:ck-2",
    )

    await _delete_checklist(client, "ck-2")

    assert await _history(client) == [
        (CARLA["cpf"], "2026-11-25T12:00:00+00:00", "checklist:ck-1"),
        (BRUNO["cpf"], "2026-11-01T00:00:00+00:00", None),
    ]
    in_force, field = await _now(client)
    assert field == in_force["driver"] and field["cpf"] == CARLA["cpf"]


async def test_a_checklist_corrected_onto_another_ones_instant_then_deleted_leaves_that_one(
    client: Client,
) -> None:
    await _driven_by_bruno_from_november(client)
    await post(client, "/api/v1/entities/driver", CARLA)
    services = client.app[services_key]
    await _checklist(client, "ck-1", "ABC1D23", ANA["cpf"], "2026-11-25T10:00:00Z")
    await _checklist(client, "ck-2", "ABC1D23", CARLA["cpf"], "2026-11-25T12:00:00Z")
    await drain(services)
    await _patch(
        client, "/api/v1/entities/other/checklist:ck-1", {"completed_at": "2026-11-25T12:00:00Z"}
    )
    await drain(services)
    assert await _history(client) == [
        (ANA["cpf"], "2026-11-25T12:00:00+00:00", "checklist:ck-1"),
        (BRUNO["cpf"], "2026-11-01T00:00:00+00:00", None),
    ]

    await _delete_checklist(client, "ck-1")

    at = await _driver_at(client, "ABC1D23", "2026-11-25T12:30:00Z")
    assert (at["driver"]["cpf"], at["ref"]) == (CARLA["cpf"], "checklist:ck-2")


async def test_a_checklist_written_over_and_deleted_does_not_stand_again(client: Client) -> None:
    await _driven_by_bruno_from_november(client)
    await post(client, "/api/v1/entities/driver", CARLA)
    services = client.app[services_key]
    await _checklist(client, "ck-1", "ABC1D23", CARLA["cpf"], "2026-11-25T12:00:00Z")
    await drain(services)
    await _checklist(client, "ck-2", "ABC1D23", ANA["cpf"], "2026-11-25T12:00:00Z")
    await drain(services)

    await _delete_checklist(client, "ck-1")  # the one written over
    assert (await _history(client))[0] == (
        ANA["cpf"],
        "2026-11-25T12:00:00+00:00",
        "checklist:ck-2",
    )
    await _delete_checklist(client, "ck-2")

    assert await _history(client) == [(BRUNO["cpf"], "2026-11-01T00:00:00+00:00", None)]


async def test_the_latest_standing_report_at_an_instant_takes_the_place_of_one_deleted(
    client: Client,
) -> None:
    """Carla, then Ana twice, at one instant: the second Ana (a repeat) came after the first
    Carla, so it stands when the first Ana is deleted; Carla once both Anas are."""
    await _driven_by_bruno_from_november(client)
    await post(client, "/api/v1/entities/driver", CARLA)
    services = client.app[services_key]
    for key, cpf in (("ck-1", CARLA["cpf"]), ("ck-2", ANA["cpf"]), ("ck-3", ANA["cpf"])):
        await _checklist(client, key, "ABC1D23", cpf, "2026-11-25T12:00:00Z")
        await drain(services)

    await _delete_checklist(client, "ck-2")
    assert (await _history(client))[0] == (
        ANA["cpf"],
        "2026-11-25T12:00:00+00:00",
        "checklist:ck-3",
    )
    await _delete_checklist(client, "ck-3")
    assert (await _history(client))[0] == (
        CARLA["cpf"],
        "2026-11-25T12:00:00+00:00",
        "checklist:ck-1",
    )


async def test_a_checklist_that_repeated_the_driver_is_taken_back_from_the_repeats(
    client: Client,
) -> None:
    """A report that only repeated the driver in force, once withdrawn, no longer stands
    when the change it repeated is withdrawn later."""
    await _driven_by_bruno_from_november(client)
    await post(client, "/api/v1/entities/vehicle", {"plate": "XYZ9K87"})
    services = client.app[services_key]
    await _checklist(client, "ck-1", "ABC1D23", ANA["cpf"], "2026-11-25T10:00:00Z")
    await _checklist(client, "ck-2", "ABC1D23", ANA["cpf"], "2026-11-25T12:00:00Z")
    await drain(services)
    for key in ("ck-2", "ck-1"):
        moved = {"vehicle_plate": "XYZ9K87"}
        await _patch(client, f"/api/v1/entities/other/checklist:{key}", moved)
        await drain(services)
    history = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [c["driver"]["cpf"] for c in history] == [BRUNO["cpf"]]


async def test_a_deleted_checklist_takes_its_driver_report_back(client: Client) -> None:
    """A checklist deleted (filed by mistake) kept its driver in the history: fines after
    its time went to the driver only the deleted record named."""
    await _driven_by_bruno_from_november(client)
    services = client.app[services_key]
    await _checklist(client, "ck-9", "ABC1D23", ANA["cpf"])
    await drain(services)
    response = await client.delete("/api/v1/entities/other/checklist:ck-9", headers=auth())
    assert response.status == 204, await response.text()
    await drain(services)
    history = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [c["driver"]["cpf"] for c in history] == [BRUNO["cpf"]]
    assert (await get(client, "/api/v1/entities/vehicle/ABC1D23"))["current_driver"]["cpf"] == (
        BRUNO["cpf"]
    )


async def test_a_checklist_corrected_to_an_unknown_driver_no_longer_names_the_old_one(
    client: Client,
) -> None:
    """The corrected CPF is no driver of the tenant (not yet in HR): the report was skipped,
    and the change of the driver the checklist no longer names stayed."""
    await _driven_by_bruno_from_november(client)
    services = client.app[services_key]
    await _checklist(client, "ck-5", "ABC1D23", ANA["cpf"])
    await drain(services)
    await _patch(client, "/api/v1/entities/other/checklist:ck-5", {"driver_cpf": "39053344705"})
    await drain(services)
    at = await _driver_at(client, "ABC1D23", "2026-11-25T11:00:00Z")
    assert at["driver"]["cpf"] == BRUNO["cpf"] and at["ref"] is None


async def test_a_checklist_stamped_hours_ahead_records_no_driver_until_corrected(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """An app writing local time as UTC (3 h ahead): the checklist's odometer reading was
    refused as a clock gone wrong, but its driver recorded as a handover scheduled 3 h ahead,
    so alerts and fines of those hours went to the driver before. The same rule now: more
    than 300 s ahead, the driver report is logged and not recorded; corrected, it is."""
    await _driven_by_bruno_from_november(client)
    services = client.app[services_key]
    ahead = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    with caplog.at_level("INFO", logger="gateway.assignment_feed"):
        await _checklist(client, "ck-f", "ABC1D23", ANA["cpf"], ahead)
        await drain(services)
    assert await _history(client) == [(BRUNO["cpf"], "2026-11-01T00:00:00+00:00", None)]
    assert "is more than 300 s ahead (a clock gone wrong)" in caplog.text
    in_force, field = await _now(client)
    assert in_force["driver"]["cpf"] == field["cpf"] == BRUNO["cpf"]

    done = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)
    await _patch(
        client, "/api/v1/entities/other/checklist:ck-f", {"completed_at": done.isoformat()}
    )
    await drain(services)
    assert (await _history(client))[0] == (ANA["cpf"], done.isoformat(), "checklist:ck-f")


async def test_a_checklist_a_minute_ahead_records_its_driver(client: Client) -> None:
    """Within the tolerance (a phone's clock a little fast), as a reading's time is."""
    await _driven_by_bruno_from_november(client)
    ahead = (datetime.now(UTC) + timedelta(minutes=1)).replace(microsecond=0)
    await _checklist(client, "ck-m", "ABC1D23", ANA["cpf"], ahead.isoformat())
    await drain(client.app[services_key])
    assert (await _history(client))[0] == (ANA["cpf"], ahead.isoformat(), "checklist:ck-m")


async def test_a_deleted_driver_drives_nothing_from_the_deletion(client: Client) -> None:
    """The vehicle kept naming the deleted driver's id, and a change scheduled for them
    before the deletion still came into force."""
    await _fleet(client)
    await post(client, "/api/v1/entities/vehicle", {"plate": "XYZ9K87"})
    drivers = "/api/v1/entities/vehicle/{}/drivers"
    await post(
        client, drivers.format("ABC1D23"), {"driver": ANA["cpf"], "start": "2026-11-01T00:00:00Z"}
    )
    services = client.app[services_key]
    ahead = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    await post(client, drivers.format("XYZ9K87"), {"driver": ANA["cpf"], "start": ahead})
    response = await client.delete(f"/api/v1/entities/driver/{ANA['cpf']}", headers=auth())
    assert response.status == 204
    await drain(services)
    history = (await get(client, drivers.format("ABC1D23")))["items"]
    assert history[0]["driver"] is None and history[0]["ref"] == f"driver deleted:{ANA['cpf']}"
    assert history[1]["driver"]["cpf"] == ANA["cpf"]  # she drove before: that stays
    assert "current_driver" not in await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert (await get(client, drivers.format("XYZ9K87")))["items"] == []  # the scheduled one


async def test_a_deleted_drivers_scheduled_change_leaves_what_it_was_written_over(
    client: Client,
) -> None:
    """Bruno's handover scheduled by the ERP, then Ana's at the same instant by an admin
    (the later stands); Ana deleted: her scheduled change leaves, and Bruno's stands again."""
    await _fleet(client)
    drivers = "/api/v1/entities/vehicle/ABC1D23/drivers"
    ahead = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    await post(
        client, drivers, {"driver": BRUNO["cpf"], "start": ahead.isoformat(), "source": "erp"}
    )
    await post(client, drivers, {"driver": ANA["cpf"], "start": ahead.isoformat()})
    response = await client.delete(f"/api/v1/entities/driver/{ANA['cpf']}", headers=auth())
    assert response.status == 204
    await drain(client.app[services_key])
    assert await _history(client) == [(BRUNO["cpf"], ahead.isoformat(), None)]


async def test_a_renamed_driver_is_renamed_on_the_vehicles_they_drive(client: Client) -> None:
    await _driven_by_bruno(client)
    await _patch(client, f"/api/v1/entities/driver/{BRUNO['cpf']}", {"name": "Bruno Lima Neto"})
    await drain(client.app[services_key])
    change, field = await _now(client)
    assert change["driver"]["name"] == "Bruno Lima Neto" and field == change["driver"]


async def test_a_rename_reaches_every_vehicle_though_one_of_them_cannot_be_written(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A vehicle whose write the schema refuses (a plate stored before its rule: a natural
    key's problem is every write's) stopped the rename half way, silently: the vehicles
    after it kept the old name for good, and the relay's retry found the history renamed
    and nothing left to do."""
    await _driven_by_bruno(client)
    await post(client, "/api/v1/entities/vehicle", {"plate": "XYZ9K87"})
    drivers = "/api/v1/entities/vehicle/XYZ9K87/drivers"
    await post(client, drivers, {"driver": BRUNO["cpf"], "start": "2026-01-01T00:00:00Z"})
    services = client.app[services_key]
    await drain(services)
    entities = services.store.entities._c
    poisoned = {"type": "vehicle", "data.plate": "ABC1D23"}  # the first vehicle followed
    assert (await entities.update_one(poisoned, {"$set": {"data.plate": "ABCD123"}})).modified_count
    await _patch(client, f"/api/v1/entities/driver/{BRUNO['cpf']}", {"name": "Bruno Neto"})
    await drain(services)
    other = await get(client, "/api/v1/entities/vehicle/XYZ9K87")
    assert other["current_driver"]["name"] == "Bruno Neto"
    stuck = await entities.find_one({"type": "vehicle", "data.plate": "ABCD123"})
    assert stuck["data"]["current_driver"]["name"] == "Bruno Lima"
    assert any("current_driver not brought up to date" in r.getMessage() for r in caplog.records)
    history = services.store.notify.assignments._c
    assert await history.count_documents({"unsynced": True}) == 1  # ABC1D23's change of Bruno
    # the vehicle corrected, the driver's next write (of anything) finishes what was left
    await _patch(client, "/api/v1/entities/vehicle/ABC1D23", {"plate": "ABC1D23"})
    await _patch(client, f"/api/v1/entities/driver/{BRUNO['cpf']}", {"email": "bruno@example.com"})
    await drain(services)
    change, field = await _now(client)
    assert field == change["driver"] and field["name"] == "Bruno Neto"
    assert await history.count_documents({"unsynced": True}) == 0


async def test_a_change_recorded_as_its_driver_is_renamed_names_them_as_renamed(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An assignment reads its driver, then writes the change with that copy: a rename
    committed in between, whose follow read the history before the change was in it, left
    the old name on the change and the vehicle, which only another rename rewrote (rev25 F7)."""
    await post(client, "/api/v1/entities/driver", BRUNO)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    services = client.app[services_key]
    await drain(services)
    store = services.store.notify.assignments
    real_record = store.record

    async def renamed_meanwhile(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(store, "record", real_record)
        await _patch(client, f"/api/v1/entities/driver/{BRUNO['cpf']}", {"name": "Bruno Neto"})
        await drain(services)  # the rename followed: nothing of Bruno's in the history yet
        return await real_record(*args, **kwargs)

    monkeypatch.setattr(store, "record", renamed_meanwhile)
    drivers = "/api/v1/entities/vehicle/ABC1D23/drivers"
    await post(client, drivers, {"driver": BRUNO["cpf"], "start": "2026-01-01T00:00:00Z"})
    await drain(services)
    assert store.record == real_record  # the rename did land between the read and the write
    change, field = await _now(client)
    assert (change["driver"]["name"], field["name"]) == ("Bruno Neto", "Bruno Neto")
    assert not await store._c.count_documents({"unsynced": True})


async def test_a_drivers_write_that_keeps_their_name_reads_none_of_their_vehicles(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write of a driver (an e-mail, an HR feed's hourly field) read every vehicle the
    driver ever drove, three round trips each, on the relay's path: only a creation or a
    rename changes what the history and the vehicles copy of a driver."""
    await post(client, "/api/v1/entities/driver", ANA)
    await post(client, "/api/v1/entities/driver", BRUNO)
    for plate in ("ABC1D23", "XYZ9K87", "QWE4R56"):
        await post(client, "/api/v1/entities/vehicle", {"plate": plate})
        drivers = f"/api/v1/entities/vehicle/{plate}/drivers"
        await post(client, drivers, {"driver": BRUNO["cpf"], "start": "2025-01-01T00:00:00Z"})
    await post(
        client,
        "/api/v1/entities/vehicle/XYZ9K87/drivers",
        {"driver": ANA["cpf"], "start": "2025-06-01T00:00:00Z"},
    )
    services = client.app[services_key]
    await drain(services)
    reads: list[str] = []
    real_get = services.entities.get

    async def counted(tenant: str, etype: str, ref: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(etype)
        return await real_get(tenant, etype, ref, *args, **kwargs)

    monkeypatch.setattr(services.entities, "get", counted)
    await _patch(client, f"/api/v1/entities/driver/{BRUNO['cpf']}", {"email": "bruno@example.com"})
    await drain(services)
    assert "vehicle" not in reads
    await _patch(client, f"/api/v1/entities/driver/{BRUNO['cpf']}", {"name": "Bruno Neto"})
    await drain(services)
    assert "vehicle" in reads  # a rename follows, and leaves no change marked to finish
    assert not await services.store.notify.assignments._c.count_documents({"unsynced": True})
    for plate, name in (("ABC1D23", "Bruno Neto"), ("XYZ9K87", ANA["name"])):
        vehicle = await get(client, f"/api/v1/entities/vehicle/{plate}")
        assert vehicle["current_driver"]["name"] == name


async def test_a_drivers_write_looks_up_unfinished_changes_without_reading_their_history(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver's write asks for the changes their vehicles could not follow yet (usually
    none): the embedded database planned that as a scan of every tenant's history, ~100 ms
    per write of a pool driver's e-mail with 3,000 changes (rev25 F3)."""
    services = client.app[services_key]
    store = services.store.notify.assignments
    bruno = {"id": "b", "cpf": BRUNO["cpf"], "name": BRUNO["name"]}
    changes = [
        {"_id": f"acme:v{i % 300}:{i:08d}", "tenant": "acme", "driver": bruno, "source": "erp"}
        for i in range(1_000)
    ]
    changes[7]["unsynced"] = True
    await store._c.insert_many(changes)
    cursors: list[Any] = []
    collection = store._c

    class Recorded:
        def __getattr__(self, name: str) -> Any:
            return getattr(collection, name)

        def find(self, *args: Any, **kwargs: Any) -> Any:
            cursors.append(collection.find(*args, **kwargs))
            return cursors[-1]

    monkeypatch.setattr(store, "_c", Recorded())
    assert [c["_id"] for c in await store.unsynced("acme", BRUNO["cpf"])] == [changes[7]["_id"]]
    plan = await cursors[-1].explain()
    assert plan["executionStats"]["totalDocsExamined"] == 1
