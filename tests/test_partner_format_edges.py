"""What partners really send at the edges of their formats, through triggers with the shipped
mappings (and the fine flow with a local HR system): a pt-BR odometer in a checklist, a VIN
Samsara admins left blank or typed wrong, a batch whose mapping leaves items out, an HR
system that names nobody or writes "N/A" for a CPF, a negative payment, a battery level of -1.
"""

from __future__ import annotations

import copy
from typing import Any

from gateway.web.state import services_key
from tests.flow_support import (
    FINE_EVENT,
    add_template,
    drain,
    email_channel,
    get,
    hr_lookup,
    sample,
    send_to,
    trigger_for,
    upload_flow,
)
from tests.partner_double import Partner, partner, post
from tests.smtp_double import SmtpFactory, smtp_server
from tests.support import auth
from tests.triggers_support import (
    Client,
    bearer,
    create_position_trigger,
    create_trigger,
    hook,
    upload_shipped,
    vehicle_track,
)

__all__ = ["partner", "smtp_server"]  # the fixtures

CHECKLIST_AT = "2026-12-04T09:00:00-03:00"


async def _vehicle(client: Client, plate: str = "ABC1D23", **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/entities/vehicle", json={"plate": plate, **fields}, headers=auth()
    )
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def _get_vehicle(client: Client, plate: str = "ABC1D23") -> dict[str, Any]:
    return dict(await get(client, f"/api/v1/entities/vehicle/{plate}"))


async def _rejected(client: Client, trigger: dict[str, Any]) -> list[dict[str, Any]]:
    kept = await get(client, f"/api/v1/rejected?trigger_id={trigger['id']}")
    return list(kept["items"])


# -- #2: a checklist's odometer as pt-BR text ----------------------------------------------------


async def test_a_checklist_odometer_written_in_pt_br_is_read_with_its_thousands(
    client: Client,
) -> None:
    """ "150.200" is 150,200 km (not 150.2, which moved the odometer back 1000-fold and told
    the ERP so); "150.200,5" keeps its tenth; a point that is no thousands separator ("150.2")
    is a 422 that leaves the odometer alone. The service's km is read the same way."""
    await _vehicle(client, odometer_km=150_000)
    await upload_shipped(client, "checklist")
    trigger = await create_trigger(
        client, entity_type="other", kind="checklist", mapping="checklist"
    )
    checklist = sample("checklist_completed.json")
    checklist.update(checklistId="chk-ptbr-1", odometroKm="150.200", concluidoEm=CHECKLIST_AT)
    status, answer = await hook(client, trigger, checklist)
    assert status == 201, answer
    assert (await _get_vehicle(client))["odometer_km"] == 150_200

    later = dict(checklist, checklistId="chk-ptbr-2", odometroKm="150.300,5")
    later.update(
        concluidoEm="2026-12-04T10:00:00-03:00", servico={"plano": "oleo", "km": "150.300"}
    )
    status, answer = await hook(client, trigger, later)
    assert status == 201, answer
    assert (await _get_vehicle(client))["odometer_km"] == 150_300.5
    stored = await get(client, "/api/v1/entities/other/checklist:chk-ptbr-2")
    assert stored["service"]["km"] == 150_300

    misread = dict(checklist, checklistId="chk-ptbr-3", odometroKm="150.4")
    misread["concluidoEm"] = "2026-12-04T11:00:00-03:00"
    status, problem = await hook(client, trigger, misread)
    assert status == 422, problem
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [("/odometroKm", "cast")]
    assert (await _get_vehicle(client))["odometer_km"] == 150_300.5


# -- #3: a VIN that only describes the vehicle -----------------------------------------------------


async def test_a_samsara_event_with_a_blank_or_malformed_vin_is_recorded_without_it(
    client: Client,
) -> None:
    """A VIN left blank, or typed wrong in Samsara, used to refuse the whole crossing, speeding
    or fault (422 on /vin): now it is left out and the event recorded; a valid one is kept."""
    await _vehicle(client, vin="9BWZZZ377VT004251")
    await _vehicle(client, "XYZ9A87", attributes={"samsara_vehicle_id": "494123"})
    geofence = sample("samsara_v2_geofence_exit.json")
    speeding = sample("samsara_speeding_event_started.json")
    fault = sample("samsara_engine_fault_on.json")
    cases = [
        ("samsara-geofence", geofence, "vin", "vehicle.geofence.exited", "ABC1D23"),
        ("samsara-speeding", speeding, "vehicleVin", "vehicle.speeding", "XYZ9A87"),
        ("samsara-engine-fault", fault, "vin", "vehicle.fault.opened", "XYZ9A87"),
    ]
    triggers = {}
    for mapping, payload, field, event, plate in cases:
        await upload_shipped(client, mapping)
        trigger = triggers[mapping] = await create_trigger(client, name=mapping, mapping=mapping)
        for n, vin in enumerate(["", "   ", "9BWZZZ377VT00425", "ABC123", "9BWZZZ377VT0O4251"]):
            sent = copy.deepcopy(payload)
            sent["data"]["vehicle"][field] = vin
            sent["eventId"] = f"{mapping}-{n}"
            status, answer = await hook(client, trigger, sent)
            assert status == 200, (mapping, vin, answer)
            assert answer["key"] == plate and event in answer["events"], (mapping, vin, answer)
    assert (await _get_vehicle(client))["vin"] == "9BWZZZ377VT004251"  # kept, not cleared
    assert "vin" not in await _get_vehicle(client, "XYZ9A87")

    # A blank `vin` beside a valid `vehicleVin` (Samsara has named it both ways): the valid one.
    faults = triggers["samsara-engine-fault"]
    both = copy.deepcopy(fault)
    both["eventId"] = "valid-vin"
    both["data"]["vehicle"].update(vin=" ", vehicleVin="1gbj6p1b2hv112765")
    status, answer = await hook(client, faults, both)
    assert status == 200, answer
    assert (await _get_vehicle(client, "XYZ9A87"))["vin"] == "1GBJ6P1B2HV112765"


# -- #5: batch indexes after the mapping's `items` left some out ----------------------------------


def _flespi(n: int, **fields: Any) -> dict[str, Any]:
    message = {
        "ident": "353861053849681",
        "timestamp": 1795685112.0 + 10 * n,
        "position.latitude": -23.56 + n * 0.0001,
        "position.longitude": -46.65,
        "position.speed": 40,
    }
    message.update(fields)
    return {k: v for k, v in message.items() if v is not None}


async def test_batch_results_and_refusals_name_the_partners_index_past_left_out_items(
    client: Client,
) -> None:
    """flespi's message 1 has no position (left out by `items`): message 3's refusal is index
    3 in the answer and in the rejected record, not 2 (which was a message stored). Wialon's
    units never positioned are left out the same way."""
    await _vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "flespi")
    trigger = await create_position_trigger(client, mapping="flespi")
    stream = [
        _flespi(0),
        _flespi(1, **{"position.latitude": None}),  # telemetry only
        _flespi(2),
        _flespi(3, **{"position.longitude": None}),  # a fix without its longitude
        _flespi(4),
    ]
    status, answer = await hook(client, trigger, stream)
    assert status == 207, answer
    assert [(r["index"], r["status"]) for r in answer["results"]] == [
        (0, 201),
        (2, 201),
        (3, 422),
        (4, 201),
    ]
    (kept,) = await _rejected(client, trigger)
    assert kept["index"] == 3
    assert len((await vehicle_track(client))["items"]) == 3

    await upload_shipped(client, "wialon-units-positions")
    wialon = await create_position_trigger(client, name="wialon", mapping="wialon-units-positions")
    units = sample("wialon_search_items_units.json")
    first = units["items"][0]
    units["items"] = [
        {**first, "pos": None},
        {**first, "pos": {**first["pos"], "t": first["pos"]["t"] + 60, "y": None}},
        {**first, "pos": {**first["pos"], "t": first["pos"]["t"] + 120}},
    ]
    status, answer = await hook(client, wialon, units)
    assert status == 207, answer
    assert [(r["index"], r["status"]) for r in answer["results"]] == [(1, 422), (2, 201)]
    (kept,) = await _rejected(client, wialon)
    assert kept["index"] == 1


# -- #6: the HR system names nobody, or no CPF -----------------------------------------------------


async def test_the_fine_flow_stops_when_hr_names_nobody(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """HR answers {"condutorAtual": null}: the run stops at has_email as docs/flows.md says
    (before, the response mapping's required name failed the run), records no driver and
    e-mails nobody."""
    smtp = await smtp_server()
    await hr_lookup(client, partner.url)
    await email_channel(client, smtp.port)
    await add_template(client, "fine-received")
    await upload_flow(client, "fine-email-driver")
    partner.respond_with(200, {"condutorAtual": None})
    fines = await trigger_for(client, "fine-feed", kind="fine")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])

    assert len(partner.requests) == 1 and smtp.received == []
    (run,) = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    assert run["status"] == "stopped", run
    assert [(s["id"], s["outcome"]) for s in run["steps"]] == [
        ("hr", "answered"),
        ("driver", "unchanged"),
        ("has_email", "stopped"),
    ]
    assert run["steps"][0]["assignment"]["recorded"] is False
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert "driver_cpf" not in fine


async def test_an_hr_cpf_that_is_not_one_is_left_out_never_padded_into_a_made_up_cpf(
    client: Client, partner: Partner
) -> None:
    """ "N/A", "" or a CPF a digit short became "00000000000" or "05299822472", which the
    flow's assign step received: now the answer has no CPF, nothing is assigned, and the
    driver is still e-mailed at the address HR gave. Nobody at all stops the run."""
    await hr_lookup(client, partner.url)
    await email_channel(client)
    await add_template(client, "fine-received")
    await upload_flow(client, "fine-email-driver")
    ana = sample("driver_lookup_response.json")
    for cpf in ("N/A", "", "529.982.247-2", "5299822472"):
        answer = {"condutorAtual": {**ana["condutorAtual"], "cpf": cpf}}
        result = await post(
            client,
            "/api/v1/flows/test",
            {"flow": "fine-email-driver", "event": FINE_EVENT, "samples": {"hr": answer}},
            status=200,
        )
        hr, driver, gate, email = result["steps"]
        assert hr["outcome"] == "answered" and "cpf" not in hr["result"], (cpf, hr)
        assert hr["assign"]["driver"] is None, (cpf, hr)  # the history records nobody
        assert driver["fields"] == {"driver_cpf": None} and gate["outcome"] == "passed", cpf
        assert email["messages"][0]["recipient"]["address"] == "ana.souza@example.com"
    for nobody in ({}, {"condutorAtual": {"nome": None, "cpf": None, "email": None}}):
        result = await post(
            client,
            "/api/v1/flows/test",
            {"flow": "fine-email-driver", "event": FINE_EVENT, "samples": {"hr": nobody}},
            status=200,
        )
        assert [s["outcome"] for s in result["steps"]] == [
            "answered",
            "rendered",
            "stopped",
            "not reached",
        ], result
    written = await post(
        client,
        "/api/v1/flows/test",
        {"flow": "fine-email-driver", "event": FINE_EVENT, "samples": {"hr": ana}},
        status=200,
    )
    assert written["steps"][0]["result"]["cpf"] == "52998224725"  # written as HR writes it


async def test_the_current_driver_lookup_refuses_a_cpf_that_is_not_one(client: Client) -> None:
    """hr-current-driver keeps the answer on the vehicle: "N/A" is refused there (it became
    "00000000000"), and a CPF written with its separators or as a number still reads."""
    await upload_shipped(client, "hr-current-driver")

    async def mapped(cpf: Any) -> tuple[int, Any]:
        response = await client.post(
            "/api/v1/mappings/test",
            json={
                "name": "hr-current-driver",
                "response": {"condutorAtual": {"nome": "Ana Souza", "cpf": cpf}},
            },
            headers=auth(),
        )
        return response.status, await response.json()

    for cpf in ("N/A", "529.982.247-2"):
        status, problem = await mapped(cpf)
        assert status == 422, (cpf, problem)
        assert [e["keyword"] for e in problem["errors"]] == ["required"], problem
    for cpf in ("529.982.247-25", 52998224725, "52998224725"):
        status, answer = await mapped(cpf)
        assert status == 200, answer
        assert answer["response"]["current_driver"]["cpf"] == "52998224725"
    status, answer = await mapped(1234567890)  # a number that lost its leading zero
    assert answer["response"]["current_driver"]["cpf"] == "01234567890"


# -- #7: a negative or absurd payment ----------------------------------------------------------


async def test_a_negative_or_absurd_payment_is_refused_and_never_announced(
    client: Client,
) -> None:
    """valorPago -104.13, "-104,13" or 1e300 was announced in fine.paid (and sent to the
    ERP); as the fine's own amount, below zero is refused: the fine stays open."""
    fines = await trigger_for(client, "fine-feed", kind="fine")
    payments = await trigger_for(client, "fine-payment", kind="fine")
    await send_to(client, fines, sample("fine_feed.json"))
    notice = sample("fine_payment.json")
    for amount in (-104.13, "-104,13", 1e300, "1e300"):
        response = await client.post(
            f"/hooks/{payments['id']}",
            json=dict(notice, valorPago=amount),
            headers=bearer(payments),
        )
        problem = await response.json()
        assert response.status == 422, (amount, problem)
        assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [
            ("/valorPago", "range")
        ], problem
    refused = await client.post(
        f"/hooks/{payments['id']}", json=dict(notice, desconto="-5,00"), headers=bearer(payments)
    )
    assert refused.status == 422, await refused.text()
    await client.app[services_key].relay.run_until_idle()
    assert (await get(client, "/api/v1/events?type=fine.paid"))["items"] == []
    assert (await get(client, "/api/v1/entities/other/fine:261810:A123456789"))["status"] == "open"

    await send_to(client, payments, notice)  # the real notice still pays it
    await client.app[services_key].relay.run_until_idle()
    (paid,) = (await get(client, "/api/v1/events?type=fine.paid"))["items"]
    assert paid["detail"]["amount_paid_brl"] == 104.13


# -- #8: a battery level of -1 ---------------------------------------------------------------------


async def test_a_battery_level_of_minus_one_is_left_out_of_the_fix(client: Client) -> None:
    """Traccar forwards a phone's -1 ("cannot read it") as is, and OsmAnd's query sends
    batt=-1: the fix is stored without battery_percent (it was -1), as traccar-client and
    osmand's JSON form do; text that is no number is still a 422."""
    await _vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "traccar-position")
    traccar = await create_position_trigger(client, mapping="traccar-position")
    forward = sample("traccar_position_forward.json")
    forward["device"].update(name="Celular 3", uniqueId="353861053849681")
    forward["position"]["attributes"] = {"batteryLevel": -1, "motion": False}
    status, answer = await hook(client, traccar, forward)
    assert status == 201, answer

    await upload_shipped(client, "osmand")
    osmand = await create_position_trigger(client, name="osmand", mapping="osmand", format="form")
    base = "/hooks/{}?id=353861053849681&lat=-23.5&lon=-46.6&timestamp={}&batt={}"
    for n, (batt, expected) in enumerate([("-1", 201), ("87", 201), ("abc", 422)]):
        url = base.format(osmand["id"], 1795685200 + n, batt)
        response = await client.post(url, headers=bearer(osmand))
        assert response.status == expected, (batt, await response.text())
    fixes = (await vehicle_track(client))["items"]
    assert [(f.get("attributes") or {}).get("battery_percent") for f in fixes] == [None, None, 87]
