"""What a checklist writes to its vehicle, and what the ERP then hears (scenario 4's mileage):
the odometer only goes forward, by the reading's time and by its value, and the plate the
checklist names finds the vehicle without being written over its own. Through the shipped
checklist mapping at its trigger, the shipped flow and the ERP double."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.flow_support import (
    ANA,
    drain,
    erp_actions,
    get,
    send_to,
    trigger_for,
    upload_flow,
)
from tests.partner_double import Partner, partner, post
from tests.support import auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]


def _checklist(key: str, plate: str, km: float, completed: str) -> dict[str, Any]:
    return {
        "checklistId": key,
        "placa": plate,
        "condutorCpf": ANA["cpf"],
        "odometroKm": km,
        "concluidoEm": completed,
        "respostas": [{"item": "pneus", "ok": True}],
    }


async def _tenant(client: Client, erp: Partner) -> dict[str, Any]:
    """The ERP's mileage action and the shipped flow; the checklist app's trigger."""
    await erp_actions(client, erp.url)
    await upload_flow(client, "checklist-mileage-erp")
    await post(client, "/api/v1/entities/driver", ANA)
    erp.respond_with(200, {"ok": True})
    return await trigger_for(client, "checklist", kind="checklist")


def _mileages(erp: Partner) -> list[tuple[str, str, float]]:
    """(placa, checklistId, quilometragemKm) of each mileage the ERP was sent."""
    sent = [r.json() for r in erp.requests if r.path == "/veiculos/quilometragem"]
    return [(s["placa"], s["checklistId"], s["quilometragemKm"]) for s in sent]


async def test_a_checklist_with_fewer_km_than_the_vehicle_moves_nothing_back(
    client: Client, partner: Partner
) -> None:
    """C2, half an hour after C1, says 152,000 km where C1 said 152,500 (mistyped, not
    late). The reading was ordered by its time alone: the vehicle went back to 152,000 and
    the ERP was sent 152,500, then 152,000."""
    checklists = await _tenant(client, partner)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "odometer_km": 151000})
    services = client.app[services_key]

    await send_to(
        client, checklists, _checklist("C1", "ABC1D23", 152500, "2026-11-25T08:30:00-03:00")
    )
    await drain(services)
    answer = await send_to(
        client, checklists, _checklist("C2", "ABC1D23", 152000, "2026-11-25T09:00:00-03:00")
    )
    await drain(services)

    (vehicle_write,) = answer["also"]
    skipped = ["attributes.odometer_read_at", "attributes.odometer_source", "odometer_km"]
    assert sorted(vehicle_write["skipped"]) == skipped
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["odometer_km"] == 152500
    assert vehicle["attributes"]["odometer_read_at"] == "2026-11-25T11:30:00Z"  # C1's
    # The ERP hears of C2 with the vehicle's mileage, which did not go back, captured when
    # C2 came, not at C2's 09:00: that mileage is C1's, read at 08:30 (an ERP that orders by
    # capture time must not see it go back either).
    assert _mileages(partner) == [("ABC1D23", "C1", 152500.0), ("ABC1D23", "C2", 152500.0)]
    captured = [
        r.json()["capturadoEm"] for r in partner.requests if r.path == "/veiculos/quilometragem"
    ]
    assert captured[0] == "2026-11-25T08:30:00-03:00"
    assert captured[1] > "2026-11-25T09:00:00-03:00", captured

    # A later checklist with more km is taken, and the ERP hears it.
    await send_to(
        client, checklists, _checklist("C3", "ABC1D23", 152650, "2026-11-25T17:00:00-03:00")
    )
    await drain(services)
    assert (await get(client, "/api/v1/entities/vehicle/ABC1D23"))["odometer_km"] == 152650
    assert _mileages(partner)[-1] == ("ABC1D23", "C3", 152650.0)


async def test_a_checklist_naming_the_old_plate_leaves_the_mercosul_plate(
    client: Client, partner: Partner
) -> None:
    """ABC1234 is the old spelling of ABC1C34, and finds it; the checklist wrote it over the
    vehicle's plate, and the ERP was told ABC1234. An inspection is no re-plating."""
    checklists = await _tenant(client, partner)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1C34", "odometer_km": 1000})

    answer = await send_to(
        client, checklists, _checklist("C5", "ABC1234", 1200, "2026-11-25T08:30:00-03:00")
    )
    await drain(client.app[services_key])

    (vehicle_write,) = answer["also"]
    assert sorted(vehicle_write["changed"]) == ["attributes", "odometer_km"]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1C34")
    assert vehicle["plate"] == "ABC1C34" and vehicle["odometer_km"] == 1200
    assert _mileages(partner) == [("ABC1C34", "C5", 1200.0)]
    checklist = await get(client, "/api/v1/entities/other/checklist:C5")
    assert checklist["vehicle_plate"] == "ABC1234"  # the checklist keeps what it said


async def test_a_checklist_before_the_vehicles_first_fold_reports_no_odometer_going_down(
    client: Client, partner: Partner
) -> None:
    """Registered at 151,000 km, read at 152,500 by a checklist, then folded for the first
    time: the fold started from the vehicle's odometer as it stood (152,500) and replayed the
    registration, announcing 152,500 → 151,000 and then 151,000 → 152,500, an odometer that
    never went down."""
    checklists = await _tenant(client, partner)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "odometer_km": 151000})
    await send_to(
        client, checklists, _checklist("C1", "ABC1D23", 152500, "2026-11-25T08:30:00-03:00")
    )
    services = client.app[services_key]
    for _ in range(3):  # the readings relayed, then folded
        await drain(services)
        await services.fold.run_until_idle()

    rebased = (await get(client, "/api/v1/events?type=vehicle.odometer.rebaselined"))["items"]
    moves = sorted((e["detail"]["from_km"], e["detail"]["to_km"]) for e in rebased)
    assert moves == [(151000.0, 151000.0), (151000.0, 152500.0)]  # the registration, C1
    assert (await get(client, "/api/v1/entities/vehicle/ABC1D23"))["odometer_km"] == 152500


async def test_a_driver_cpf_missing_a_digit_or_blank_is_refused_never_padded(
    client: Client,
) -> None:
    """ "317.669.079-7" (317.066.907-97 with a digit dropped) was padded into 03176690797,
    someone else's valid CPF, and stored; a blank CPF became "00000000000", a value the app
    never sent. Now the first is refused as the digits it has, a blank one as missing."""
    checklists = await trigger_for(client, "checklist", kind="checklist")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    payload = {**_checklist("K1", "ABC1D23", 1000, "2026-11-25T10:58:00-03:00")}
    for cpf, message in (
        ("317.669.079-7", '"3176690797"'),
        ("", "required field is missing"),
        ("N/A", "required field is missing"),
    ):
        response = await client.post(
            f"/hooks/{checklists['id']}",
            json={**payload, "condutorCpf": cpf},
            headers={"Authorization": f"Bearer {checklists['token']}"},
        )
        problem = await response.json()
        assert response.status == 422, problem
        (error,) = problem["errors"]
        assert error["pointer"] == "/driver_cpf" and message in error["message"], problem
        assert "00000000000" not in error["message"] and "03176690797" not in str(problem)


async def test_a_driver_cpf_starting_with_zero_a_digit_short_is_refused_not_padded_into_another(
    client: Client,
) -> None:
    """ "0867565080" is the CPF 086.756.508-09 with its last digit lost: the `cpf` transform
    put a zero in front, 00867565080, another valid CPF, and stored it. A number or a
    spreadsheet drops every leading zero and keeps none, so text that starts with one lost
    none: it is refused as the digits it has, as a digit missing elsewhere is."""
    checklists = await trigger_for(client, "checklist", kind="checklist")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    payload = {**_checklist("K1", "ABC1D23", 1000, "2026-11-25T10:58:00-03:00")}
    response = await client.post(
        f"/hooks/{checklists['id']}",
        json={**payload, "condutorCpf": "0867565080"},
        headers={"Authorization": f"Bearer {checklists['token']}"},
    )
    problem = await response.json()
    assert response.status == 422, problem
    (error,) = problem["errors"]
    assert error["pointer"] == "/driver_cpf" and '"0867565080"' in error["message"], problem
    assert "00867565080" not in str(problem)


async def test_a_checklist_keyed_in_by_the_back_office_moves_the_vehicle_and_tells_the_erp(
    client: Client, partner: Partner
) -> None:
    """A paper checklist typed in through the admin API is completed as the app's is, but its
    reading reached the vehicle only through the checklist mapping's `also`: the vehicle kept
    151,000 km and the ERP was told 151,000 "captured" now, not the 152,340 read at 07:58."""
    await _tenant(client, partner)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "odometer_km": 151000})
    await post(
        client,
        "/api/v1/entities/other",
        {
            "kind": "checklist",
            "key": "P1",
            "vehicle_plate": "ABC1D23",
            "driver_cpf": ANA["cpf"],
            "odometer_km": 152340,
            "answers": [{"question": "pneus", "answer": True}],
            "completed_at": "2026-11-25T07:58:00-03:00",
        },
    )
    await drain(client.app[services_key])

    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["odometer_km"] == 152340
    assert vehicle["attributes"]["odometer_source"] == "checklist"
    assert _mileages(partner) == [("ABC1D23", "P1", 152340.0)]
    (sent,) = [r.json() for r in partner.requests if r.path == "/veiculos/quilometragem"]
    assert sent["capturadoEm"] == "2026-11-25T07:58:00-03:00"


async def test_a_checklist_resent_with_its_reading_corrected_tells_the_erp_the_new_mileage(
    client: Client, partner: Partner
) -> None:
    """15,234 km (a digit missed) leaves the vehicle at 151,000; the app resends the checklist
    with 152,340: the vehicle took it, but the correction is no new completion, and the ERP
    kept 151,000. A resend that changes no reading tells the ERP nothing more."""
    checklists = await _tenant(client, partner)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "odometer_km": 151000})
    services = client.app[services_key]
    mistyped = _checklist("C1", "ABC1D23", 15234, "2026-11-25T07:58:00-03:00")
    await send_to(client, checklists, mistyped)
    await drain(services)
    for _ in range(2):  # the correction, then the same checklist once more
        await send_to(client, checklists, {**mistyped, "odometroKm": 152340})
        await drain(services)

    assert (await get(client, "/api/v1/entities/vehicle/ABC1D23"))["odometer_km"] == 152340
    assert _mileages(partner) == [("ABC1D23", "C1", 151000.0), ("ABC1D23", "C1", 152340.0)]


async def test_a_reading_the_vehicle_does_not_take_leaves_its_source_and_announces_nothing(
    client: Client, partner: Partner
) -> None:
    """The vehicle read 160,000 km by its CAN bus on the 26th; a checklist of the 25th with
    152,340 (the app's, then a paper one keyed in) is late and lower: skipped. Its source was
    written all the same: the vehicle said its 160,000 km came from a checklist, and a
    vehicle `entity.updated` went out for it."""
    await post(client, "/api/v1/entities/driver", ANA)
    checklists = await trigger_for(client, "checklist", kind="checklist")
    services = client.app[services_key]
    can = {"odometer_read_at": "2026-11-26T10:00:00Z", "odometer_source": "can"}
    vehicle = {"plate": "ABC1D23", "odometer_km": 160000, "attributes": can}
    await post(client, "/api/v1/entities/vehicle", vehicle)
    late = _checklist("C1", "ABC1D23", 152340, "2026-11-25T07:58:00-03:00")
    await send_to(client, checklists, late)
    paper = {
        "kind": "checklist",
        "key": "P1",
        "vehicle_plate": "ABC1D23",
        "driver_cpf": ANA["cpf"],
        "odometer_km": 152340,
        "answers": [{"question": "pneus", "answer": True}],
        "completed_at": "2026-11-25T07:58:00-03:00",
    }
    await post(client, "/api/v1/entities/other", paper)
    await drain(services)

    after = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert (after["odometer_km"], after["attributes"]) == (160000, can)


async def test_a_checklist_resent_with_its_time_corrected_tells_the_erp_the_mileage_it_takes(
    client: Client, partner: Partner
) -> None:
    """C1 sent with a wrong hour (before the vehicle's reading) is skipped as late and the ERP
    told 151,000; resent with the right hour, the vehicle takes 152,340, but the flow started
    only on a changed `odometer_km`: the ERP never heard it."""
    checklists = await _tenant(client, partner)
    reading = {"odometer_read_at": "2026-11-25T12:00:00Z"}
    await post(
        client,
        "/api/v1/entities/vehicle",
        {"plate": "ABC1D23", "odometer_km": 151000, "attributes": reading},
    )
    services = client.app[services_key]
    wrong_hour = _checklist("C1", "ABC1D23", 152340, "2026-11-25T07:58:00-03:00")
    await send_to(client, checklists, wrong_hour)
    await drain(services)
    await send_to(client, checklists, {**wrong_hour, "concluidoEm": "2026-11-25T09:58:00-03:00"})
    await drain(services)

    assert (await get(client, "/api/v1/entities/vehicle/ABC1D23"))["odometer_km"] == 152340
    assert _mileages(partner) == [("ABC1D23", "C1", 151000.0), ("ABC1D23", "C1", 152340.0)]


async def test_a_checklists_plate_corrected_tells_the_erp_the_vehicle_it_names_now(
    client: Client, partner: Partner
) -> None:
    """A paper checklist keyed in for XYZ9A87 by mistake, its plate corrected to ABC1D23:
    ABC1D23 took 152,340 (the relay hook), but the ERP only ever heard of XYZ9A87."""
    await _tenant(client, partner)
    for plate in ("ABC1D23", "XYZ9A87"):
        await post(client, "/api/v1/entities/vehicle", {"plate": plate, "odometer_km": 151000})
    paper = {
        "kind": "checklist",
        "key": "P1",
        "vehicle_plate": "XYZ9A87",
        "driver_cpf": ANA["cpf"],
        "odometer_km": 152340,
        "answers": [{"question": "pneus", "answer": True}],
        "completed_at": "2026-11-25T07:58:00-03:00",
    }
    await post(client, "/api/v1/entities/other", paper)
    services = client.app[services_key]
    await drain(services)
    response = await client.patch(
        "/api/v1/entities/other/checklist:P1", json={"vehicle_plate": "ABC1D23"}, headers=auth()
    )
    assert response.status == 200, await response.text()
    await drain(services)

    assert (await get(client, "/api/v1/entities/vehicle/ABC1D23"))["odometer_km"] == 152340
    assert _mileages(partner) == [("XYZ9A87", "P1", 152340.0), ("ABC1D23", "P1", 152340.0)]


async def test_a_checklists_flow_steps_read_the_fleets_vehicle_it_names(client: Client) -> None:
    """A checklist names its vehicle `vehicle_plate`: the steps' `vehicle` looked for a
    `plate` only, and was null for every checklist."""
    flow = {
        "name": "checklist-vehicle",
        "on": {"events": ["checklist.completed"]},
        "steps": [{"id": "has_vehicle", "when": "vehicle.plate == 'ABC1C34'"}],
    }
    await post(client, "/api/v1/flows", flow)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1C34"})
    await post(client, "/api/v1/entities/driver", ANA)
    paper = {
        "kind": "checklist",
        "key": "P1",
        "vehicle_plate": "ABC1234",  # the old spelling of ABC1C34
        "driver_cpf": ANA["cpf"],
        "answers": [{"question": "pneus", "answer": True}],
        "completed_at": "2026-11-25T07:58:00-03:00",
    }
    await post(client, "/api/v1/entities/other", paper)
    await drain(client.app[services_key])

    (run,) = (await get(client, "/api/v1/flows/checklist-vehicle/runs"))["items"]
    assert run["status"] == "succeeded"
