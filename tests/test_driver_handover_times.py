"""A partner's driver report says from when the driver drives: an ERP's feed and an HR
lookup's write-back map the handover time they send to `current_driver.since`, and the
history records the driver from then, not from the write's time (SPEC §6: a fine goes to
the driver at its time)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.flow_support import FINE_EVENT, drain, fine_email_flow, get, send_to
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
BRASILIA = ZoneInfo("America/Sao_Paulo")

ERP = """
name: totvs-troca-condutor
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: PLACA, transforms: [plate], required: true}
  current_driver.cpf: {from: CPF_MOTORISTA, transforms: [cpf]}
  current_driver.since:
    from: DATA_TROCA
    transforms: [{datetime: {parse: "%d/%m/%Y %H:%M", input_tz: America/Sao_Paulo}}]
"""

HR = """
name: rh-condutor-atual
direction: outbound
entity_type: vehicle
path:
  placa: {from: entity.plate, required: true}
response:
  current_driver.cpf: {from: condutor.cpf, transforms: [cpf]}
  current_driver.name: condutor.nome
  current_driver.since:
    from: condutor.desde
    transforms: [{datetime: {parse: "%d/%m/%Y %H:%M", input_tz: America/Sao_Paulo}}]
"""


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _local(at: datetime) -> str:
    return at.astimezone(BRASILIA).strftime("%d/%m/%Y %H:%M")


def _minute(hours_ago: float) -> datetime:
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).replace(second=0, microsecond=0)


async def _driven_by_bruno(client: Client) -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    await post(client, "/api/v1/entities/driver", BRUNO)
    await post(
        client,
        "/api/v1/entities/vehicle/ABC1D23/drivers",
        {"driver": BRUNO["cpf"], "start": "2026-01-01T00:00:00Z"},
    )


async def _erp(client: Client) -> dict[str, Any]:
    await upload_mapping(client, ERP)
    body = {
        "name": "erp",
        "entity_type": "vehicle",
        "methods": ["POST"],
        "mapping": "totvs-troca-condutor",
    }
    return dict(await post(client, "/api/v1/triggers", body))


async def _driver_at(client: Client, at: datetime) -> dict[str, Any]:
    found = await get(client, f"/api/v1/entities/vehicle/ABC1D23/drivers?at={_iso(at)}")
    return dict(found["driver"])


async def test_an_erp_handover_posted_late_is_recorded_from_the_time_the_erp_says(
    client: Client,
) -> None:
    """The ERP posts two hours after the handover: the fine in between was Bruno's, since
    the history recorded Ana from the post's arrival."""
    await _driven_by_bruno(client)
    erp = await _erp(client)
    handover = _minute(2)
    payload = {"PLACA": "ABC-1D23", "CPF_MOTORISTA": "529.982.247-25", "DATA_TROCA": ""}
    payload["DATA_TROCA"] = _local(handover)
    await send_to(client, erp, payload)
    await drain(client.app[services_key])

    at_fine = await _driver_at(client, handover + timedelta(minutes=30))
    assert at_fine["driver"]["cpf"] == ANA["cpf"], at_fine
    assert at_fine["start"] == handover.isoformat() and at_fine["source"] == "erp"
    before = await _driver_at(client, handover - timedelta(minutes=1))
    assert before["driver"]["cpf"] == BRUNO["cpf"]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"] == at_fine["driver"]  # the history's copy, no `since`


async def test_an_older_handover_arriving_late_is_inserted_in_order(client: Client) -> None:
    """A retried post of a handover before the one in force fills only the gap before it,
    as the admin API's `start` does: the later change stays, and so does the field."""
    await _driven_by_bruno(client)
    erp = await _erp(client)
    await post(client, "/api/v1/entities/driver", CARLA)
    later, earlier = _minute(1), _minute(3)
    for who, at in ((ANA, later), (CARLA, earlier)):  # the older one's post comes last
        payload = {"PLACA": "ABC1D23", "CPF_MOTORISTA": who["cpf"], "DATA_TROCA": _local(at)}
        await send_to(client, erp, payload)
        await drain(client.app[services_key])

    history = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [(c["driver"]["cpf"], c["start"]) for c in history] == [
        (ANA["cpf"], later.isoformat()),
        (CARLA["cpf"], earlier.isoformat()),
        (BRUNO["cpf"], "2026-01-01T00:00:00+00:00"),
    ]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"]["cpf"] == ANA["cpf"]


async def test_a_handover_time_ahead_of_the_clock_is_refused_naming_it(client: Client) -> None:
    await _driven_by_bruno(client)
    erp = await _erp(client)
    ahead = _minute(-1)
    response = await client.post(
        f"/hooks/{erp['id']}",
        json={"PLACA": "ABC1D23", "CPF_MOTORISTA": ANA["cpf"], "DATA_TROCA": _local(ahead)},
        headers={"Authorization": f"Bearer {erp['token']}"},
    )
    body = await response.json()
    assert response.status == 422, body
    (problem,) = body["errors"]
    assert problem["target"] == "current_driver.since" and problem["pointer"] == "/DATA_TROCA"
    assert "300 s ahead of now" in problem["message"]
    # An admin's write is refused alike; the admin API schedules a change ahead instead.
    response = await client.patch(
        "/api/v1/entities/vehicle/ABC1D23",
        json={"current_driver": {"cpf": ANA["cpf"], "since": _iso(ahead)}},
        headers=auth(),
    )
    assert response.status == 422, await response.text()


@pytest.mark.parametrize("relayed", [True, False], ids=["relayed", "events-waiting"])
async def test_a_handover_time_before_a_later_report_of_the_driver_in_force_moves_their_start(
    client: Client, relayed: bool
) -> None:
    """A checklist at ignition recorded Ana at 10:00; the ERP's batch then says Ana took the
    vehicle at 08:00 (the keys at the yard). The fine at 09:00 is Ana's, as when anyone
    else drives now: the report was taken for the driver in force sent again (`changed:
    []`), unless the vehicle's events happened to wait for the relay. Sent again, it is
    then a repeat."""
    await _driven_by_bruno(client)
    checklist_at, handover = _minute(1), _minute(3)
    checklist = {
        "kind": "checklist",
        "key": "chk-1",
        "vehicle_plate": "ABC1D23",
        "driver_cpf": ANA["cpf"],
        "completed_at": _iso(checklist_at),
        "answers": [{"question": "pneus", "answer": True}],
    }
    await post(client, "/api/v1/entities/other", checklist)
    await drain(client.app[services_key])
    erp = await _erp(client)
    if not relayed:  # a write whose events wait for the relay when the ERP's comes
        await client.patch(
            "/api/v1/entities/vehicle/ABC1D23", json={"odometer_km": 10}, headers=auth()
        )
    payload = {"PLACA": "ABC1D23", "CPF_MOTORISTA": ANA["cpf"], "DATA_TROCA": _local(handover)}
    answer = await send_to(client, erp, payload)
    await drain(client.app[services_key])

    assert "current_driver.since" in answer["changed"], answer
    at_fine = await _driver_at(client, handover + timedelta(hours=1))
    assert at_fine["driver"]["cpf"] == ANA["cpf"] and at_fine["source"] == "erp", at_fine
    assert at_fine["start"] == handover.isoformat()
    assert (await _driver_at(client, handover - timedelta(minutes=1)))["driver"]["cpf"] == (
        BRUNO["cpf"]
    )
    history = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [(c["driver"]["cpf"], c["source"]) for c in history] == [
        (ANA["cpf"], "erp"),  # Ana's start moved to the ERP's time; the checklist a repeat
        (BRUNO["cpf"], "admin"),
    ]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"] == at_fine["driver"]  # the history's copy, no `since`
    again = await send_to(client, erp, payload)
    assert again["changed"] == [] and again["events"] == [], again
    # The checklist taken back: what the ERP said stands.
    response = await client.delete("/api/v1/entities/other/checklist:chk-1", headers=auth())
    assert response.status in (200, 204), await response.text()
    await drain(client.app[services_key])
    assert (await _driver_at(client, handover + timedelta(hours=1)))["driver"]["cpf"] == ANA["cpf"]
    assert (await _driver_at(client, datetime.now(UTC)))["driver"]["cpf"] == ANA["cpf"]


async def test_the_mapping_dry_run_refuses_the_handover_time_the_write_refuses(
    client: Client,
) -> None:
    """An ERP sending UTC through `input_tz: America/Sao_Paulo` puts its handover times hours
    ahead: the trigger refuses them (422), and the integrator's dry run with the same
    sample said nothing. It lists the write's problem, for a driver in force now too."""
    await _driven_by_bruno(client)
    erp = await _erp(client)
    for who in (ANA, BRUNO):  # BRUNO: the driver in force, sent again with the time
        payload = {"PLACA": "ABC1D23", "CPF_MOTORISTA": who["cpf"]}
        payload["DATA_TROCA"] = _local(_minute(-3))
        real = await client.post(
            f"/hooks/{erp['id']}",
            json=payload,
            headers={"Authorization": f"Bearer {erp['token']}"},
        )
        assert real.status == 422, await real.text()
        dry = await client.post(
            "/api/v1/mappings/test",
            headers=auth(),
            json={"name": "totvs-troca-condutor", "payload": payload},
        )
        assert dry.status == 200, await dry.text()
        (result,) = (await dry.json())["results"]
        (problem,) = result["entity"]["errors"]
        assert problem["pointer"] == "/current_driver/since", problem
        assert "300 s ahead of now" in problem["message"]
    # and says what the write does with a time it takes (R3: the driver in force, earlier)
    payload = {"PLACA": "ABC1D23", "CPF_MOTORISTA": BRUNO["cpf"], "DATA_TROCA": "01/01/2025 08:00"}
    dry = await client.post(
        "/api/v1/mappings/test",
        headers=auth(),
        json={"name": "totvs-troca-condutor", "payload": payload},
    )
    (result,) = (await dry.json())["results"]
    assert result["entity"]["write"] == "update" and "errors" not in result["entity"], result


async def test_an_hr_write_back_records_the_driver_from_the_time_hr_says(
    client: Client, partner: Partner
) -> None:
    await _driven_by_bruno(client)
    await upload_mapping(client, HR)
    hr = await create_partner(client, partner.url, name="RH")
    action = await create_action(
        client,
        hr["id"],
        name="condutor",
        mode="proxy",
        method="GET",
        path="/veiculos/{placa}/condutor-atual",
        request_mapping="rh-condutor-atual",
        response_mapping="rh-condutor-atual",
        write_back=True,
    )
    since = _minute(3)
    answer = {"condutor": {"cpf": "529.982.247-25", "nome": "Ana Souza", "desde": _local(since)}}
    partner.respond_with(200, answer)
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke",
        headers=auth(),
        json={"entity": {"type": "vehicle", "key": "ABC1D23"}},
    )
    assert response.status == 200, await response.text()
    await drain(client.app[services_key])

    at = await _driver_at(client, since + timedelta(hours=1))
    assert at["driver"]["cpf"] == ANA["cpf"] and at["source"] == "hr", at
    assert at["start"] == since.isoformat()


async def test_a_handover_time_without_a_driver_leaves_the_driver_as_it_is(
    client: Client,
) -> None:
    """The ERP's record of a vehicle it has no driver for (a blank CPF) still carries the date
    column: the write left the vehicle's field `{since}`, no driver, while the history kept
    Bruno, until the next change. A `since` naming no driver is no write of the field;
    the rest of the record is written."""
    await _driven_by_bruno(client)
    await upload_mapping(client, ERP.replace("fields:", "fields:\n  odometer_km: KM"))
    body = {"name": "erp", "entity_type": "vehicle", "mapping": "totvs-troca-condutor"}
    erp = await post(client, "/api/v1/triggers", body)
    payload = {"PLACA": "ABC1D23", "CPF_MOTORISTA": "", "DATA_TROCA": _local(_minute(5))}
    answer = await send_to(client, erp, {**payload, "KM": 1200})
    await drain(client.app[services_key])
    assert answer["changed"] == ["odometer_km"], answer
    in_force = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["driver"]
    assert in_force["driver"]["cpf"] == BRUNO["cpf"], in_force
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"] == in_force["driver"]
    response = await client.patch(
        "/api/v1/entities/vehicle/ABC1D23",
        json={"current_driver": {"cpf": None, "since": _iso(_minute(1))}},
        headers=auth(),
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["current_driver"] == in_force["driver"]
    created = await post(
        client,
        "/api/v1/entities/vehicle",
        {"plate": "XYZ9K88", "current_driver": {"since": _iso(_minute(1))}},
    )
    assert "current_driver" not in created, created
    dry = await client.post(
        "/api/v1/mappings/test",
        headers=auth(),
        json={"name": "totvs-troca-condutor", "payload": {**payload, "KM": 1300}},
    )
    assert dry.status == 200, await dry.text()
    (result,) = (await dry.json())["results"]
    assert [c["field"] for c in result["entity"]["changes"]] == ["odometer_km"], result


async def test_a_handover_time_with_a_name_and_no_cpf_leaves_the_driver_as_it_is(
    client: Client,
) -> None:
    """An ERP exporting a name column beside a blank CPF (`SEM CONDUTOR`) with the date
    column filled: the write left the vehicle's field `{name, since}`, nobody, while the
    history kept Bruno. A `since` with no `cpf` nor `id` names no driver, whatever else the
    value gives: no write of the field, by a mapping or by an admin's PATCH."""
    await _driven_by_bruno(client)
    named = ERP.replace("fields:", "fields:\n  odometer_km: KM\n  current_driver.name: NOME")
    await upload_mapping(client, named)
    body = {"name": "erp", "entity_type": "vehicle", "mapping": "totvs-troca-condutor"}
    erp = await post(client, "/api/v1/triggers", body)
    payload = {"PLACA": "ABC1D23", "CPF_MOTORISTA": "", "NOME": "SEM CONDUTOR", "KM": 1200}
    answer = await send_to(client, erp, {**payload, "DATA_TROCA": _local(_minute(1))})
    await drain(client.app[services_key])
    assert answer["changed"] == ["odometer_km"], answer
    in_force = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["driver"]
    assert in_force["driver"]["cpf"] == BRUNO["cpf"], in_force
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"] == in_force["driver"]
    response = await client.patch(
        "/api/v1/entities/vehicle/ABC1D23",
        json={"odometer_km": 1300, "current_driver": {"name": "Fulano", "since": _iso(_minute(1))}},
        headers=auth(),
    )
    assert response.status == 200, await response.text()
    written = await response.json()
    assert written["current_driver"] == in_force["driver"], written
    assert written["changed"] == ["odometer_km"], written


_NAMING_NOBODY = {
    "no-date-column": {"CPF_MOTORISTA": "", "NOME": "SEM CONDUTOR"},
    "date-null": {"CPF_MOTORISTA": "", "NOME": "SEM CONDUTOR", "DATA_TROCA": None},
    "date-blank": {"CPF_MOTORISTA": "", "NOME": "SEM CONDUTOR", "DATA_TROCA": ""},
}


@pytest.mark.parametrize("record", list(_NAMING_NOBODY.values()), ids=list(_NAMING_NOBODY))
async def test_a_name_without_cpf_or_id_leaves_the_driver_with_or_without_a_date(
    client: Client, record: dict[str, Any]
) -> None:
    """The ERP's record of a vehicle it has no driver for: a blank CPF beside its name column,
    and no date (most ERPs leave it blank when nobody drives). The write left the vehicle's
    field `{name: "SEM CONDUTOR"}` while the history kept Bruno, for good (no report is read
    from a value without cpf or id). One rule for every writer: a `current_driver` with
    neither `cpf` nor `id` names no driver and is no write of the field, with or without a
    `since`; the rest is written (a mapping's record, an admin's PATCH `{name}`, the dry run)."""
    await _driven_by_bruno(client)
    named = ERP.replace("fields:", "fields:\n  odometer_km: KM\n  current_driver.name: NOME")
    await upload_mapping(client, named)
    body = {"name": "erp", "entity_type": "vehicle", "mapping": "totvs-troca-condutor"}
    erp = await post(client, "/api/v1/triggers", body)
    payload = {"PLACA": "ABC1D23", "KM": 1200, **record}
    answer = await send_to(client, erp, payload)
    await drain(client.app[services_key])
    assert answer["changed"] == ["odometer_km"], answer
    in_force = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["driver"]
    assert in_force["driver"]["cpf"] == BRUNO["cpf"], in_force
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"] == in_force["driver"], vehicle
    response = await client.patch(
        "/api/v1/entities/vehicle/ABC1D23",
        json={"odometer_km": 1300, "current_driver": {"name": "Fulano"}},
        headers=auth(),
    )
    assert response.status == 200, await response.text()
    written = await response.json()
    assert (written["current_driver"], written["changed"]) == (
        in_force["driver"],
        ["odometer_km"],
    ), written
    dry = await client.post(
        "/api/v1/mappings/test",
        headers=auth(),
        json={"name": "totvs-troca-condutor", "payload": {**payload, "KM": 1400}},
    )
    assert dry.status == 200, await dry.text()
    (result,) = (await dry.json())["results"]
    assert [c["field"] for c in result["entity"]["changes"]] == ["odometer_km"], result
    created = await post(
        client, "/api/v1/entities/vehicle", {"plate": "XYZ9K88", "current_driver": {"name": "X"}}
    )
    assert "current_driver" not in created, created


async def test_a_stale_handover_of_the_previous_driver_sent_again_changes_nothing(
    client: Client,
) -> None:
    """The ERP's "Ana since 08:00" (recorded), then a checklist hands the vehicle to Bruno at
    10:00; the ERP's feed keeps sending its record of Ana. The history has Ana at 08:00 (a
    repeat): each send wrote Ana into the vehicle's field and the history wrote Bruno back,
    `changed` and two `entity.updated` a send. Now the field stays Bruno's, nothing changes."""
    await _driven_by_bruno(client)
    erp = await _erp(client)
    payload = {"PLACA": "ABC1D23", "CPF_MOTORISTA": ANA["cpf"], "DATA_TROCA": _local(_minute(3))}
    await send_to(client, erp, payload)
    await drain(client.app[services_key])
    checklist = {
        "kind": "checklist",
        "key": "chk-bruno",
        "vehicle_plate": "ABC1D23",
        "driver_cpf": BRUNO["cpf"],
        "completed_at": _iso(_minute(1)),
        "answers": [{"question": "pneus", "answer": True}],
    }
    await post(client, "/api/v1/entities/other", checklist)
    await drain(client.app[services_key])
    before = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert before["current_driver"]["cpf"] == BRUNO["cpf"], before
    for _ in range(2):
        answer = await send_to(client, erp, payload)
        await drain(client.app[services_key])
        assert (answer["changed"], answer["events"]) == ([], []), answer
    after = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert (after["current_driver"], after["version"]) == (
        before["current_driver"],
        before["version"],
    )
    history = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [(c["driver"]["cpf"], c["source"]) for c in history] == [
        (BRUNO["cpf"], "checklist"),
        (ANA["cpf"], "erp"),
        (BRUNO["cpf"], "admin"),
    ], history


def _checklist(key: str, driver: dict[str, str], at: datetime) -> dict[str, Any]:
    return {
        "kind": "checklist",
        "key": key,
        "vehicle_plate": "ABC1D23",
        "driver_cpf": driver["cpf"],
        "completed_at": _iso(at),
        "answers": [{"question": "pneus", "answer": True}],
    }


async def test_a_report_of_a_past_driver_left_out_of_the_write_stands_when_its_change_is_taken_back(
    client: Client,
) -> None:
    """Ana's checklist at t-3h, Bruno's at t-1h (he drives now), then the ERP's first and only
    report "Ana since t-2h": the history has Ana then, so the write leaves the field Bruno's,
    no event. It was dropped there, and the history, which reads reports from events, never
    kept it: Ana's checklist taken back (a wrong plate), Bruno (admin, since January) drove
    at t-90min. The write now hands the report to the history, which keeps it as a repeat of
    Ana's change: taken back, the ERP's report stands (Ana from t-2h, source erp)."""
    await _driven_by_bruno(client)
    erp = await _erp(client)
    t_ana, t_erp, t_bruno = _minute(3), _minute(2), _minute(1)
    await post(client, "/api/v1/entities/other", _checklist("chk-ana", ANA, t_ana))
    await drain(client.app[services_key])
    await post(client, "/api/v1/entities/other", _checklist("chk-bruno", BRUNO, t_bruno))
    await drain(client.app[services_key])
    before = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    payload = {"PLACA": "ABC1D23", "CPF_MOTORISTA": ANA["cpf"], "DATA_TROCA": _local(t_erp)}
    answer = await send_to(client, erp, payload)
    await drain(client.app[services_key])
    assert (answer["changed"], answer["events"]) == ([], []), answer
    after = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert (after["current_driver"], after["version"]) == (
        before["current_driver"],
        before["version"],
    )
    deleted = await client.delete("/api/v1/entities/other/checklist:chk-ana", headers=auth())
    assert deleted.status in (200, 204), await deleted.text()
    await drain(client.app[services_key])
    at_fine = await _driver_at(client, t_erp + timedelta(minutes=30))
    assert (at_fine["driver"]["cpf"], at_fine["source"]) == (ANA["cpf"], "erp"), at_fine
    assert at_fine["start"] == t_erp.isoformat()
    assert (await _driver_at(client, t_ana))["driver"]["cpf"] == BRUNO["cpf"]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"]["cpf"] == BRUNO["cpf"], vehicle


@pytest.mark.parametrize("erp_first", [False, True], ids=["checklist-first", "erp-first"])
async def test_a_report_inserted_before_a_repeat_of_the_driver_before_records_that_repeat(
    client: Client, erp_first: bool
) -> None:
    """Ana's checklist at t-1h and the ERP's "Ana since t-3h" (in either order: her start
    moves to t-3h, or her checklist repeats it), then Bruno's checklist at t-2h, synced
    late. In time order: Ana t-3h, Bruno t-2h, Ana t-1h. The insertion left Bruno in force
    up to now (Ana's checklist kept only as a repeat of her t-3h change), every later fine
    his; it now records the repeats after it again, as a withdrawal does."""
    await _driven_by_bruno(client)
    erp = await _erp(client)
    t_erp, t_bruno, t_ana = _minute(3), _minute(2), _minute(1)
    ana_erp = {"PLACA": "ABC1D23", "CPF_MOTORISTA": ANA["cpf"], "DATA_TROCA": _local(t_erp)}
    reports: list[dict[str, Any] | None] = [None, _checklist("chk-ana", ANA, t_ana)]
    for report in reports[::-1] if erp_first else reports:
        if report is None:
            await send_to(client, erp, ana_erp)
        else:
            await post(client, "/api/v1/entities/other", report)
        await drain(client.app[services_key])
    await post(client, "/api/v1/entities/other", _checklist("chk-bruno", BRUNO, t_bruno))
    await drain(client.app[services_key])
    history = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [(c["driver"]["cpf"], c["source"], c["start"]) for c in history] == [
        (ANA["cpf"], "checklist", t_ana.isoformat()),
        (BRUNO["cpf"], "checklist", t_bruno.isoformat()),
        (ANA["cpf"], "erp", t_erp.isoformat()),
        (BRUNO["cpf"], "admin", "2026-01-01T00:00:00+00:00"),
    ], history
    assert (await _driver_at(client, t_ana + timedelta(minutes=30)))["driver"]["cpf"] == ANA["cpf"]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"]["cpf"] == ANA["cpf"], vehicle
    # Bruno's checklist taken back: Ana drives from t-3h on.
    deleted = await client.delete("/api/v1/entities/other/checklist:chk-bruno", headers=auth())
    assert deleted.status in (200, 204), await deleted.text()
    await drain(client.app[services_key])
    for at in (t_bruno, t_ana + timedelta(minutes=30)):
        assert (await _driver_at(client, at))["driver"]["cpf"] == ANA["cpf"], at
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"]["cpf"] == ANA["cpf"], vehicle


_FAILURES = [
    ("record", 1, "after"),  # Bruno's change written, the answer lost
    ("_report_again", 1, "before"),  # the repeats not yet recorded again
    ("record", 2, "after"),  # Ana's checklist recorded again, not yet taken out
    ("take_repeats", 1, "before"),
    ("take_repeats", 1, "after"),  # taken out, the vehicle's field not yet followed
]


@pytest.mark.parametrize(
    ("method", "nth", "when"), _FAILURES, ids=[f"{m}-{n}-{w}" for m, n, w in _FAILURES]
)
async def test_an_insertion_a_failure_stopped_is_finished_by_the_relays_retry(
    client: Client, monkeypatch: pytest.MonkeyPatch, method: str, nth: int, when: str
) -> None:
    """Inserting Bruno's late checklist (t-2h) into Ana's change (t-3h, her t-1h checklist kept
    as its repeat) is several writes: the change, Ana's report recorded again, the repeat
    taken out. A store error (or a process stopped) between two of them, then the relay's
    retry of the batch: the retry found Bruno's change at its instant, a repeat, and did
    nothing, so Ana's t-1h report was lost and Bruno stayed in force up to now. The retry
    now finishes the insertion, whichever write the failure came after."""
    from gateway.assignments import AssignmentService
    from gateway.errors import StoreUnavailable
    from gateway.store.assignments import AssignmentStore

    await _driven_by_bruno(client)
    erp = await _erp(client)
    t_erp, t_bruno, t_ana = _minute(3), _minute(2), _minute(1)
    ana_erp = {"PLACA": "ABC1D23", "CPF_MOTORISTA": ANA["cpf"], "DATA_TROCA": _local(t_erp)}
    await send_to(client, erp, ana_erp)
    await drain(client.app[services_key])
    await post(client, "/api/v1/entities/other", _checklist("chk-ana", ANA, t_ana))
    await drain(client.app[services_key])

    owner = AssignmentStore if hasattr(AssignmentStore, method) else AssignmentService
    original = getattr(owner, method)
    calls = [0]

    async def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] != nth:
            return await original(self, *args, **kwargs)
        if when == "after":
            await original(self, *args, **kwargs)
        raise StoreUnavailable("injected: the database went away")

    monkeypatch.setattr(owner, method, failing)
    await post(client, "/api/v1/entities/other", _checklist("chk-bruno", BRUNO, t_bruno))
    failed = 0
    for _ in range(3):  # the relay runs the batch again
        try:
            await drain(client.app[services_key])
            break
        except StoreUnavailable:
            failed += 1
    assert failed == 1 and calls[0] >= nth
    history = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [(c["driver"]["cpf"], c["source"], c["start"]) for c in history] == [
        (ANA["cpf"], "checklist", t_ana.isoformat()),
        (BRUNO["cpf"], "checklist", t_bruno.isoformat()),
        (ANA["cpf"], "erp", t_erp.isoformat()),
        (BRUNO["cpf"], "admin", "2026-01-01T00:00:00+00:00"),
    ], history
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"]["cpf"] == ANA["cpf"], vehicle
    # Nothing left twice: Bruno's checklist taken back leaves Ana from t-3h on.
    deleted = await client.delete("/api/v1/entities/other/checklist:chk-bruno", headers=auth())
    assert deleted.status in (200, 204), await deleted.text()
    await drain(client.app[services_key])
    for at in (t_bruno, t_ana + timedelta(minutes=30)):
        assert (await _driver_at(client, at))["driver"]["cpf"] == ANA["cpf"], at


# -- a handover to a driver the tenant does not have yet ---------------------------------------


async def _erp_vehicles(client: Client) -> dict[str, Any]:
    body = {"name": "erp-vehicles", "entity_type": "vehicle", "methods": ["POST"]}
    return dict(await post(client, "/api/v1/triggers", body))


async def test_a_handover_to_a_driver_not_yet_known_ends_the_previous_drivers_assignment(
    client: Client,
) -> None:
    """The ERP hands the vehicle to a new hire HR has not synced: the report was skipped, so
    the history kept Bruno driving, for good, while the vehicle showed Carla."""
    await _driven_by_bruno(client)
    erp = await _erp_vehicles(client)
    carla = {"cpf": CARLA["cpf"], "name": CARLA["name"]}
    await send_to(client, erp, {"plate": "ABC1D23", "current_driver": carla})
    await drain(client.app[services_key])

    pending = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["driver"]
    assert pending["driver"] == carla and pending["source"] == "erp", pending  # no id yet
    assert (await _driver_at(client, datetime.now(UTC)))["driver"] == carla
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"] == carla

    hr = await post(
        client, "/api/v1/triggers", {"name": "hr", "entity_type": "driver", "methods": ["POST"]}
    )
    await send_to(client, hr, CARLA)  # HR's nightly sync
    await drain(client.app[services_key])
    history = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [c["driver"]["cpf"] for c in history] == [CARLA["cpf"], BRUNO["cpf"]]
    completed = history[0]
    assert completed["driver"]["id"] and completed["start"] == pending["start"]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"] == completed["driver"]


async def test_a_late_handover_to_a_driver_not_yet_known_starts_at_its_time(
    client: Client,
) -> None:
    await _driven_by_bruno(client)
    erp = await _erp(client)
    handover = _minute(2)
    payload = {"PLACA": "ABC1D23", "CPF_MOTORISTA": CARLA["cpf"], "DATA_TROCA": _local(handover)}
    await send_to(client, erp, payload)
    await drain(client.app[services_key])

    at_fine = await _driver_at(client, handover + timedelta(minutes=1))
    assert at_fine["driver"] == {"cpf": CARLA["cpf"]} and at_fine["start"] == handover.isoformat()
    assert (await _driver_at(client, handover - timedelta(minutes=1)))["driver"]["cpf"] == (
        BRUNO["cpf"]
    )


async def test_a_handover_to_a_driver_not_yet_known_sent_again_changes_nothing(
    client: Client,
) -> None:
    """A feed re-sending the handover to a new hire with its time (a poll, a retry): the
    repeats wrote the vehicle twice a send (the `since` over the pending `{cpf, name}`, then
    the history taking it back off), until HR's sync; as for a known driver, they change
    nothing."""
    await _driven_by_bruno(client)
    await upload_mapping(client, ERP.replace("fields:", "fields:\n  current_driver.name: NOME"))
    body = {"name": "erp", "entity_type": "vehicle", "mapping": "totvs-troca-condutor"}
    erp = await post(client, "/api/v1/triggers", body)
    handover = _minute(2)
    payload = {"PLACA": "ABC1D23", "CPF_MOTORISTA": CARLA["cpf"], "NOME": CARLA["name"]}
    payload["DATA_TROCA"] = _local(handover)
    first = await send_to(client, erp, payload)
    await drain(client.app[services_key])
    assert "current_driver.cpf" in first["changed"], first
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    before = (await get(client, f"/api/v1/events?entity_id={vehicle['id']}&limit=100"))["items"]
    for _ in range(2):
        again = await send_to(client, erp, payload)
        await drain(client.app[services_key])
        assert again["changed"] == [] and again["events"] == [], again
    after = (await get(client, f"/api/v1/events?entity_id={vehicle['id']}&limit=100"))["items"]
    assert len(after) == len(before)
    pending = await _driver_at(client, handover)
    assert pending["driver"] == {"cpf": CARLA["cpf"], "name": CARLA["name"]}, pending
    assert pending["start"] == handover.isoformat()
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"] == pending["driver"]


async def test_a_fine_after_a_handover_to_a_driver_not_yet_known_is_not_the_previous_drivers(
    client: Client,
) -> None:
    """The fine flow reading the history e-mailed Bruno for Carla's fine; it now names no
    one until Carla's record exists, and then Carla."""
    await _driven_by_bruno(client)
    response = await client.patch(
        "/api/v1/entities/driver/" + BRUNO["cpf"],
        json={"email": "bruno@example.com"},
        headers=auth(),
    )
    assert response.status == 200, await response.text()
    erp = await _erp_vehicles(client)
    carla = {"cpf": CARLA["cpf"], "name": CARLA["name"]}
    await send_to(client, erp, {"plate": "ABC1D23", "current_driver": carla})
    await drain(client.app[services_key])
    await fine_email_flow(client, 1)  # the channel is only stored: a dry run sends nothing
    event = copy.deepcopy(FINE_EVENT)
    event["type"] = "entity.created"
    event["data"]["occurred_at"] = _iso(datetime.now(UTC) + timedelta(minutes=1))

    async def dry_run() -> str:
        body = {"flow": "fine", "event": event}
        response = await client.post("/api/v1/flows/test", headers=auth(), json=body)
        text = await response.text()
        assert response.status == 200, text
        return text

    before = await dry_run()
    assert "bruno@example.com" not in before
    assert f"is CPF {CARLA['cpf']}, not yet a driver here" in before
    await post(client, "/api/v1/entities/driver", {**CARLA, "email": "carla@example.com"})
    await drain(client.app[services_key])
    after = await dry_run()
    assert "carla@example.com" in after and "bruno@example.com" not in after


# -- nobody drives now: a mapping's removal --------------------------------------------------

ERP_UNASSIGN = """
name: erp-vinculo
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: PLACA, transforms: [plate], required: true}
  current_driver:
    when: {from: SITUACAO, equals: DESVINCULADO}
    then: {remove: true}
    else: {object: {cpf: {from: CPF_MOTORISTA, transforms: [cpf]}}}
"""


async def test_an_erp_mapping_can_say_nobody_drives_the_vehicle_now(client: Client) -> None:
    """A mapped null is left out, so the ERP's "back in the yard" was answered `changed: []`
    and the last driver stayed in charge."""
    await _driven_by_bruno(client)
    await upload_mapping(client, ERP_UNASSIGN)
    body = {"name": "erp", "entity_type": "vehicle", "methods": ["POST"], "mapping": "erp-vinculo"}
    erp = await post(client, "/api/v1/triggers", body)
    yard = {"PLACA": "ABC1D23", "CPF_MOTORISTA": "", "SITUACAO": "DESVINCULADO"}
    tried = await client.post(
        "/api/v1/mappings/test",
        json={"name": "erp-vinculo", "payload": yard},
        headers=auth(),
    )
    assert tried.status == 200, await tried.text()
    (item,) = (await tried.json())["results"]
    assert item["document"]["current_driver"] is None, item  # the dry run shows the removal

    answer = await send_to(client, erp, yard)
    assert answer["changed"] == ["current_driver"], answer
    await drain(client.app[services_key])
    now = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["driver"]
    assert now["driver"] is None and now["source"] == "erp", now
    assert "current_driver" not in await get(client, "/api/v1/entities/vehicle/ABC1D23")


async def test_an_hr_answer_of_no_driver_written_back_says_nobody_drives(
    client: Client, partner: Partner
) -> None:
    await _driven_by_bruno(client)
    mapping = """
name: rh-sem-condutor
direction: outbound
entity_type: vehicle
path:
  placa: {from: entity.plate, required: true}
response:
  current_driver:
    coalesce:
      - object:
          cpf: {from: condutor.cpf, transforms: [cpf]}
          name: condutor.nome
      - remove: true
"""
    await upload_mapping(client, mapping)
    hr = await create_partner(client, partner.url, name="RH")
    action = await create_action(
        client,
        hr["id"],
        name="condutor",
        mode="proxy",
        method="GET",
        path="/veiculos/{placa}/condutor-atual",
        request_mapping="rh-sem-condutor",
        response_mapping="rh-sem-condutor",
        write_back=True,
    )
    partner.respond_with(200, {"condutor": None})
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke",
        headers=auth(),
        json={"entity": {"type": "vehicle", "key": "ABC1D23"}},
    )
    answer = await response.json()
    assert response.status == 200 and answer["written"]["changed"] == ["current_driver"], answer
    await drain(client.app[services_key])
    now = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["driver"]
    assert now["driver"] is None and now["source"] == "hr", now


async def _refused(client: Client, mapping: str) -> list[dict[str, Any]]:
    headers = {**auth(), "Content-Type": "application/yaml"}
    response = await client.post("/api/v1/mappings", data=mapping, headers=headers)
    body = await response.json()
    assert response.status == 422, body
    return list(body["errors"])


async def test_a_null_constant_is_refused_at_upload_naming_remove(client: Client) -> None:
    """`{value: null}` wrote nothing, silently: the upload says so and names the removal."""
    errors = await _refused(client, ERP_UNASSIGN.replace("{remove: true}", "{value: null}"))
    (problem,) = errors
    assert problem["pointer"] == "/fields/current_driver/then/value", problem
    assert "{remove: true}" in problem["message"]


async def test_a_removal_is_refused_where_it_removes_no_entity_field(client: Client) -> None:
    inside = ERP_UNASSIGN.replace("then: {remove: true}", "then: {object: {cpf: {remove: true}}}")
    (problem,) = await _refused(client, inside)
    assert problem["pointer"] == "/fields/current_driver/then/object/cpf/remove", problem
    transformed = ERP_UNASSIGN.replace(
        "then: {remove: true}", "then: {remove: true}\n    transforms: [trim]"
    )
    (problem,) = await _refused(client, transformed)
    assert problem["pointer"] == "/fields/current_driver/transforms", problem
    outbound = """
name: push
direction: outbound
entity_type: vehicle
path:
  placa: {from: entity.plate, required: true}
body:
  motorista: {remove: true}
"""
    (problem,) = await _refused(client, outbound)
    assert problem["pointer"] == "/body/motorista/remove", problem
