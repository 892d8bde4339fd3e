"""The seed scenarios end to end: each starts from a partner's own payload sent to a trigger
and ends at what the recipient receives — an e-mail on a real SMTP server (aiosmtpd), the
ERP's request body, a push at the FCM double, an SMS at the provider double.

Scenarios 1 and 2 start from events the telemetry fold will emit (the `fleet` lane): here
scenario 1 starts from Traccar's own geofence event forward, and scenario 2 from a trigger
whose mapping emits `vehicle.maintenance.due` with the plan's limit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.errors import EntityContended
from gateway.flows import steps
from gateway.web.state import services_key
from tests.fcm_double import Fcm, fcm
from tests.flow_support import (
    ANA,
    add_template,
    drain,
    email_channel,
    erp_actions,
    get,
    hr_lookup,
    push_channel,
    sample,
    send_to,
    sms_channel,
    trigger_for,
    upload_flow,
)
from tests.partner_double import FakeClock, Partner, partner, post
from tests.smtp_double import SmtpFactory, smtp_server
from tests.support import auth

__all__ = ["fcm", "partner", "smtp_server"]  # the fixtures

Client = TestClient[Any, Any]
# She drives ABC1D23 since before the samples' events (the shipped flows ask who drove then).
SINCE = "2026-11-01T00:00:00Z"


async def _scenario3(client: Client, hr: Partner, smtp_port: int) -> dict[str, Any]:
    """The tenant of scenario 3: the fines trigger, the HR lookup, the e-mail channel."""
    await hr_lookup(client, hr.url)
    await email_channel(client, smtp_port)
    await add_template(client, "fine-received")
    await upload_flow(client, "fine-email-driver")
    hr.respond_with(200, sample("driver_lookup_response.json"))
    return await trigger_for(client, "fine-feed", kind="fine")


async def test_scenario_3_a_fine_reaches_the_driver_hr_names_by_email(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)  # the tenant knows her, not her e-mail
    written = await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])

    (lookup,) = partner.requests
    assert lookup.method == "GET" and lookup.path == "/veiculos/ABC1D23/condutor-atual"
    assert lookup.query == {"em": "2026-11-18T16:45:00Z"}  # the infraction's time
    assert lookup.headers["Authorization"] == "Bearer hr-token"
    (mail,) = smtp.received
    assert mail.recipients == ["ana.souza@example.com"]
    assert mail.message["Subject"] == "Multa A123456789 - ABC1D23"
    assert mail.message["From"] == "Frota Acme <alertas@acme.com.br>"
    text = mail.part("plain").replace("\r\n", "\n")  # SMTP lines end in CRLF
    assert text.startswith("Olá Ana Souza,")
    assert "que você dirigia em\n18/11/2026 13:45." in text
    assert "Valor: R$ 130,16" in text and "Pontos: 4" in text
    assert "Prazo para indicação do condutor: 18/12/2026" in text
    assert "<b>ABC1D23</b>" in mail.part("html")
    assert "Prazo para indicação do condutor: 18/12/2026" in mail.part("html")

    runs = await get(client, "/api/v1/flows/fine-email-driver/runs")
    (run,) = runs["items"]
    assert run["status"] == "succeeded" and run["id"].endswith(":fine-email-driver")
    assert run["event"]["type"] == "fine.received"
    assert run["event"]["entity"]["id"] == written["id"]
    assert [(s["id"], s["outcome"]) for s in run["steps"]] == [
        ("hr", "answered"),
        ("driver", "written"),
        ("has_email", "passed"),
        ("email", "queued"),
    ]
    # What HR said went into the vehicle's driver history, from when HR says she drives it.
    assert run["steps"][0]["assignment"] == {
        "recorded": True,
        "changed": True,
        "start": "2026-11-01T11:00:00+00:00",
    }
    history = await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers?at=2026-11-18T16:45:00Z")
    assert history["driver"]["driver"]["cpf"] == ANA["cpf"]
    assert history["driver"]["source"] == "hr" and history["driver"]["ref"] == run["id"]
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert fine["driver_cpf"] == "52998224725"
    detail = await get(client, f"/api/v1/flow-runs/{run['id']}")
    assert detail["answers"]["hr"]["email"] == "ana.souza@example.com"
    (message,) = detail["steps"][3]["messages"]
    delivery = await get(client, f"/api/v1/deliveries/{message['delivery']}")
    assert delivery["kind"] == "notification" and delivery["status"] == "succeeded"
    assert delivery["run_id"] == run["id"] and delivery["step_id"] == "email"
    assert delivery["notification"]["recipient"]["address"] == "ana.souza@example.com"
    assert delivery["notification"]["parts"]["subject"] == "Multa A123456789 - ABC1D23"
    assert delivery["attempts"][0]["response"] == mail.message["Message-ID"]


@pytest.mark.parametrize(
    ("offset", "instant"),
    [("-05:00", "2026-11-18T18:45:00Z"), ("-04:00", "2026-11-18T17:45:00Z")],
)
async def test_scenario_3_a_fine_issued_in_another_zone_is_e_mailed_on_the_notices_clock(
    client: Client, partner: Partner, smtp_server: SmtpFactory, offset: str, instant: str
) -> None:
    """A fine of Rio Branco (Acre, UTC-5) or Manaus (UTC-4) at 13:45 there: HR is asked about
    the instant, the fine keeps the notice's own clock (`occurred_at_local`), the driver
    reads 13:45 as on the AIT, and the authority's end of day there, 23:59:59 of 18/12, is
    the deadline 18/12 (01:59:59 of 19/12 in Brasília)."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    notice = {
        **sample("fine_feed.json"),
        "dataHora": f"2026-11-18T13:45:00{offset}",
        "municipioIbge": "1200401",
        "dataLimiteIndicacao": f"2026-12-18T23:59:59{offset}",
    }
    await send_to(client, fines, notice)
    await drain(client.app[services_key])

    (lookup,) = partner.requests
    assert lookup.query == {"em": instant}
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert fine["occurred_at"] == instant
    assert fine["occurred_at_local"] == f"2026-11-18T13:45:00{offset}"
    assert fine["indication_deadline"] == "2026-12-18"
    (mail,) = smtp.received
    text = mail.part("plain").replace("\r\n", "\n")
    assert "que você dirigia em\n18/11/2026 13:45." in text
    assert "Prazo para indicação do condutor: 18/12/2026" in text
    assert "18/11/2026 13:45." in mail.part("html")


async def test_scenario_3_the_drivers_e_mail_says_what_the_infraction_was(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """The provider's `descricao` and `desdobramento` were dropped by fine-feed: the e-mail
    named the AIT but not the infraction. Now it shows the code with its unfolding and the
    notice's words; a fine without them (keyed in by hand, or stored before the fix) is
    e-mailed without that line."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    words = "Transitar em velocidade superior a maxima permitida em ate 20%"
    assert (fine["infraction_code"], fine["description"]) == ("745-50", words)
    # As a fine stored before the fix reads: its code as sent, no description.
    kept = ("authority", "plate", "occurred_at", "occurred_at_local", "place", "amount_brl")
    older = {m: fine[m] for m in kept} | {"kind": "fine", "status": "open", "ait_number": "B1"}
    await post(
        client, "/api/v1/entities/other", {**older, "key": "261810:B1", "infraction_code": "7455"}
    )
    await post(client, "/api/v1/entities/other", {**older, "key": "261810:B2", "ait_number": "B2"})
    await drain(client.app[services_key])

    mails = {m.message["Subject"].split()[1]: m for m in smtp.received}
    assert sorted(mails) == ["A123456789", "B1", "B2"]
    text = mails["A123456789"].part("plain").replace("\r\n", "\n")
    assert f"Auto de infração: A123456789\nInfração: 745-50 - {words}\nLocal:" in text
    assert f"<li>Infração: 745-50 - {words}</li>" in mails["A123456789"].part("html")
    assert "\nInfração: 7455\nLocal:" in mails["B1"].part("plain").replace("\r\n", "\n")
    text = mails["B2"].part("plain").replace("\r\n", "\n")
    assert "Auto de infração: B2\nLocal: Av. Paulista, 1000" in text
    assert "Infração" not in mails["B2"].part("html")


async def test_scenario_3_a_fine_sent_again_months_later_is_not_e_mailed_again(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """A fine's life is years (the driver's indication, the penalty notice, an appeal): the
    provider's feed sends it again months later, and the driver already has its e-mail. Before,
    a cooldown lasted at most 30 days, and the fine came a second time 31 days on; now the feed's
    mapping announces fine.received only with the write that gives the fine its infraction time
    (`announce: {changed: [occurred_at]}`), so a resent fine starts no run at all."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(services)
    assert len(smtp.received) == 1
    for days in (31, 400):
        clock.advance(timedelta(days=days).total_seconds())
        await send_to(client, fines, sample("fine_feed.json"))
        await drain(services)
    assert len(smtp.received) == 1
    runs = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    assert [r["status"] for r in runs] == ["succeeded"]
    received = (await get(client, "/api/v1/events?type=fine.received"))["items"]
    assert len(received) == 1


async def test_scenario_3_a_fine_whose_time_is_corrected_reaches_the_driver_at_the_new_time(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """The provider corrects the infraction's day (18/11 was a typo for 17/11): HR names Bia,
    who drove on the 17th, and the fine became hers, but her e-mail was `suppressed` by the
    cooldown keyed by the fine alone: only Ana, who did not drive then, had been told. The
    same driver named again is still told once."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    bia = {"name": "Bia Lima", "cpf": "11144477735", "language": "pt-BR"}
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    await post(client, "/api/v1/entities/driver", bia)
    answer = sample("driver_lookup_response.json")
    ana_then = dict(answer["condutorAtual"], desde="2026-11-18T08:00:00-03:00")
    bia_then = {
        "nome": "Bia Lima",
        "cpf": "111.444.777-35",
        "email": "bia.lima@example.com",
        "desde": "2026-11-01T08:00:00-03:00",
    }
    services = client.app[services_key]
    partner.respond_with(200, {**answer, "condutorAtual": ana_then}, times=1)
    await send_to(client, fines, sample("fine_feed.json"))  # 18/11 13:45
    await drain(services)
    for day in ("17", "16"):  # corrected to the 17th; then again, to Bia's 16th
        partner.respond_with(200, {**answer, "condutorAtual": bia_then}, times=1)
        await send_to(
            client, fines, {**sample("fine_feed.json"), "dataHora": f"2026-11-{day}T13:45:00-03:00"}
        )
        await drain(services)

    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert fine["driver_cpf"] == bia["cpf"]
    assert [m.recipients for m in smtp.received] == [
        ["ana.souza@example.com"],
        ["bia.lima@example.com"],
    ]


@pytest.mark.parametrize(
    ("notice", "corrected", "told"),
    [
        ("2026-11-18T13:45:00-03:00", "2026-11-17T13:45:00-03:00", "17/11/2026 13:45"),
        # Rio Branco's notice (UTC-5), corrected by the back office in UTC: still its clock
        ("2026-11-18T13:45:00-05:00", "2026-11-17T18:45:00Z", "17/11/2026 13:45"),
    ],
)
async def test_scenario_3_a_time_corrected_by_hand_is_the_time_the_driver_is_e_mailed(
    client: Client,
    partner: Partner,
    smtp_server: SmtpFactory,
    notice: str,
    corrected: str,
    told: str,
) -> None:
    """The provider's notice says 18/11 13:45 (Ana, e-mailed). The back office corrects the
    infraction's time to the 17th (a PATCH of `occurred_at` alone): HR is asked about the
    17th, names Bia, and Bia is e-mailed the corrected time on the notice's clock (she was
    told 18/11 13:45, the notice's `occurred_at_local` the PATCH left behind, a time at which
    HR says Ana drove): the local time follows the corrected instant, at the notice's offset."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    services = client.app[services_key]
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    for driver in (ANA, BIA):
        await post(client, "/api/v1/entities/driver", driver)
    partner.respond_with(200, _hr_names("Ana Souza", ANA["cpf"], "2026-11-18T08:00:00-03:00"))
    await send_to(client, fines, {**sample("fine_feed.json"), "dataHora": notice})
    await drain(services)
    partner.respond_with(200, _hr_names("Bia Lima", BIA["cpf"], "2026-11-01T08:00:00-03:00"))
    response = await client.patch(
        "/api/v1/entities/other/fine:261810:A123456789",
        json={"occurred_at": corrected},
        headers=auth(),
    )
    assert response.status == 200, await response.text()
    await drain(services)

    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    offset = notice[-6:]
    assert fine["occurred_at_local"] == f"2026-11-17T13:45:00{offset}"
    assert fine["driver_cpf"] == BIA["cpf"]
    assert [m.recipients for m in smtp.received][-1] == ["bia.lima@example.com"]
    text = smtp.received[-1].part("plain").replace("\r\n", "\n")
    assert f"que você dirigia em\n{told}." in text, text


async def test_scenario_3_and_4_ask_hr_and_tell_the_erp_the_plate_the_fleet_registered(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """The fleet registers ABC1C34; a fines export still writes its old plate, ABC1234. HR
    was asked about /veiculos/ABC1234 (an HR system keyed by the fleet's plate answers 404:
    the run failed, nobody e-mailed) and the ERP was told `placa` ABC1234. The fine keeps the
    authority's spelling."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    await erp_actions(client, partner.url)
    await upload_flow(client, "fine-paid-erp")
    payments = await trigger_for(client, "fine-payment", kind="fine")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1C34"})
    await post(client, "/api/v1/entities/driver", ANA)
    services = client.app[services_key]
    await send_to(client, fines, {**sample("fine_feed.json"), "placa": "ABC1234"})
    await drain(services)
    await send_to(client, payments, sample("fine_payment.json"))
    await drain(services)

    lookup, paid = sorted(partner.requests, key=lambda r: r.method)
    assert lookup.path == "/veiculos/ABC1C34/condutor-atual"
    assert paid.json()["placa"] == "ABC1C34"
    assert [m.recipients for m in smtp.received] == [["ana.souza@example.com"]]
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert fine["plate"] == "ABC1234"


async def test_scenario_4_a_fine_paid_before_hr_named_its_driver_tells_the_erp_the_driver(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """HR is down while the fine's payment notice comes (scenario 3's run waits): the ERP was
    told the payment without `condutorCpf`, and never heard of the driver HR named later.
    Now the driver recorded on a paid fine tells the ERP again, with what the notice said
    was paid and when."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)  # the HR system and the ERP: one double
    await erp_actions(client, partner.url)
    await upload_flow(client, "fine-paid-erp")
    payments = await trigger_for(client, "fine-payment", kind="fine")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "renavam": "86769597308"})
    await post(client, "/api/v1/entities/driver", ANA)
    services = client.app[services_key]
    clock = FakeClock()
    services.flow_runner.clock = services.delivery_worker.clock = clock
    partner.respond_with(503, {"erro": "manutencao"}, times=2)  # HR down: the run waits
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(services)
    await send_to(client, payments, sample("fine_payment.json"))
    await drain(services)
    clock.advance(60)  # HR's retry is due, and HR answers
    await drain(services)

    first, second = [r.json() for r in partner.requests if r.method == "PUT"]
    assert "condutorCpf" not in first
    assert second == sample("erp_fine_paid.json")
    assert [m.recipients for m in smtp.received] == [["ana.souza@example.com"]]


async def test_scenario_4_the_erp_hears_of_a_paid_fine_and_a_checklists_mileage(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """With scenario 3 before it: HR's answer names the fine's driver, whom the ERP hears of."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)  # the HR system and the ERP: one double
    await erp_actions(client, partner.url)
    await upload_flow(client, "fine-paid-erp")
    await upload_flow(client, "checklist-mileage-erp")
    payments = await trigger_for(client, "fine-payment", kind="fine")
    checklists = await trigger_for(client, "checklist", kind="checklist")
    await post(
        client,
        "/api/v1/entities/vehicle",
        {"plate": "ABC1D23", "renavam": "86769597308", "odometer_km": 151000},
    )
    await post(client, "/api/v1/entities/driver", ANA)

    services = client.app[services_key]
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(services)  # scenario 3: HR names the driver, the fine records her
    await send_to(client, payments, sample("fine_payment.json"))  # a week later, it is paid
    await send_to(client, checklists, sample("checklist_completed.json"))
    await drain(services)

    lookup, paid, mileage = sorted(
        partner.requests,
        key=lambda r: ["GET", "PUT"].index(r.method) if r.method in ("GET", "PUT") else 2,
    )
    assert lookup.path == "/veiculos/ABC1D23/condutor-atual"
    assert (paid.method, paid.path) == ("PUT", "/multas/A123456789/pagamento")
    assert paid.json() == sample("erp_fine_paid.json")
    assert (mileage.method, mileage.path) == ("POST", "/veiculos/quilometragem")
    assert mileage.json() == sample("erp_mileage_update.json")
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["odometer_km"] == 152340
    # HR named her from 1 November; the checklist names her again: one change in the history.
    drivers = await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers?at=2026-11-25T11:00:00Z")
    assert drivers["driver"]["driver"]["cpf"] == ANA["cpf"]
    assert [d["source"] for d in drivers["items"]] == ["hr"]


async def test_scenario_3_an_hr_answer_without_since_records_the_driver_from_the_infraction(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """HR says who drove at the infraction's time; without its `desde`, that is all it says.
    The history used to record that driver from the run's start (now), making them the
    vehicle's current driver: the next geofence alert went to whoever drove on the fine's day."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    answer = sample("driver_lookup_response.json")
    del answer["condutorAtual"]["desde"]
    partner.respond_with(200, answer)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])

    (run,) = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    assert run["steps"][0]["assignment"] == {
        "recorded": True,
        "changed": True,
        "start": "2026-11-18T16:45:00+00:00",  # the infraction's time, not the run's
    }
    (mail,) = smtp.received
    assert mail.recipients == ["ana.souza@example.com"]


async def test_scenario_3_an_hr_system_answering_todays_driver_fines_nobody(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """An HR system that ignores `?em=` answers whoever drives now, since after the
    infraction: the fine went to that driver, and the history recorded them. The answer's
    own `desde` shows it is not about the infraction's time: the run fails, saying so."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    answer = sample("driver_lookup_response.json")
    answer["condutorAtual"]["desde"] = "2026-11-25T08:00:00-03:00"  # a week after the fine
    partner.respond_with(200, answer)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])

    assert smtp.received == []
    (run,) = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    assert run["status"] == "failed"
    (hr,) = run["steps"]
    assert hr["outcome"] == "failed"
    assert "since 2026-11-25T08:00:00-03:00, after the time asked" in hr["detail"]
    history = await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers")
    assert history["items"] == []
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert fine.get("driver_cpf") is None


async def _assigned_from_hr(
    client: Client, partner: Partner, since: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A fine through a flow whose fetch asks the HR system and assigns its answer from
    `steps.hr.since`, the answer's `desde` being `since`: the step's assignment note and the
    vehicle's driver history."""
    await hr_lookup(client, partner.url)
    answer = sample("driver_lookup_response.json")
    answer["condutorAtual"]["desde"] = since
    partner.respond_with(200, answer)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    assign = {"vehicle": "entity.plate", "driver": "steps.hr.cpf", "start": "steps.hr.since"}
    flow = {
        "name": "who",
        "on": {"events": ["fine.received"]},
        "steps": [{"id": "hr", "fetch": "hr-driver-lookup", "assign": assign}],
    }
    await post(client, "/api/v1/flows", flow)
    fines = await trigger_for(client, "fine-feed", kind="fine")
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])
    (run,) = (await get(client, "/api/v1/flows/who/runs"))["items"]
    history = await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers")
    return run["steps"][0]["assignment"], history["items"]


async def test_an_assign_start_that_names_no_time_records_nothing(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """A `start` the flow gives but the answer does not fill is not "now": the history is
    left alone and the step says why."""
    smtp = await smtp_server()
    assignment, history = await _assigned_from_hr(client, partner, "ontem")
    assert assignment == {
        "recorded": False,
        "reason": (
            "start steps.hr.since is not a time (RFC 3339, or ISO 8601 or dd/mm/yyyy "
            "HH:MM[:SS] in São Paulo's time, or a date alone (that day's start)): 'ontem'"
        ),
    }
    assert history == [] and smtp.received == []


async def test_an_hr_answers_local_time_without_an_offset_is_taken_in_sao_paulo(
    client: Client, partner: Partner
) -> None:
    """`"desde": "2026-11-01T08:00:00"`, as Brazilian HR systems write local time, recorded
    nothing (not RFC 3339): the driver was never assigned. It is São Paulo's time."""
    assignment, history = await _assigned_from_hr(client, partner, "2026-11-01T08:00:00")
    assert assignment["recorded"] is True, assignment
    assert datetime.fromisoformat(assignment["start"]) == datetime(2026, 11, 1, 11, tzinfo=UTC)
    assert [item["driver"]["cpf"] for item in history] == [ANA["cpf"]]


async def test_scenario_1_traccars_geofence_exit_pushes_to_the_drivers_phone(
    client: Client, fcm: Fcm
) -> None:
    await push_channel(client, fcm)
    await add_template(client, "geofence-exit")
    await upload_flow(client, "geofence-exit-push")
    traccar = await trigger_for(client, "traccar-event", entity_type="vehicle")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", {**ANA, "push_tokens": ["fcm-device-token"]})
    await post(
        client, "/api/v1/entities/vehicle/ABC1D23/drivers", {"driver": ANA["cpf"], "start": SINCE}
    )

    forward = sample("traccar_event_forward_geofence_exit.json")
    await send_to(client, traccar, forward)
    await send_to(client, traccar, forward)  # Traccar forwards it again: one alert
    await drain(client.app[services_key])
    # The same event.id is one occurrence (the mapping's occurrence_id): one event, one run.

    (message,) = fcm.messages
    assert message == {
        "token": "fcm-device-token",
        "notification": {
            "title": "Veículo fora da área autorizada",
            "body": "ABC1D23 saiu de Garagem SP em 20/11 às 10:45",  # not the run's day
        },
        "data": {"event": "vehicle.geofence.exited", "plate": "ABC1D23"},
        "android": {"priority": "high"},
    }
    assert len(fcm.tokens_issued) == 1
    runs = (await get(client, "/api/v1/flows/geofence-exit-push/runs"))["items"]
    assert [r["status"] for r in runs] == ["succeeded"]
    # Another exit within the flow's cooldown (another event.id): announced, not pushed.
    await send_to(client, traccar, {**forward, "event": {**forward["event"], "id": 1217}})
    await drain(client.app[services_key])
    assert len(fcm.messages) == 1
    statuses = await get(client, "/api/v1/deliveries?status=suppressed")
    (suppressed,) = statuses["items"]
    assert suppressed["kind"] == "notification"
    assert suppressed["last_error"].startswith("suppressed: cooldown")


async def test_scenario_1_a_late_upload_alerts_the_driver_at_the_exit_not_todays(
    client: Client, fcm: Fcm
) -> None:
    """A tracker that uploads hours late: the exit happened at 13:45 (device time), when Ana
    drove; Bruno has driven since 14:00. `driver: current` alerted Bruno, for an exit he had
    nothing to do with; the shipped flow asks for the driver at the event's time."""
    await push_channel(client, fcm)
    await add_template(client, "geofence-exit")
    await upload_flow(client, "geofence-exit-push")
    traccar = await trigger_for(client, "traccar-event", entity_type="vehicle")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    bruno = {"name": "Bruno Lima", "cpf": "11144477735", "push_tokens": ["bruno-phone"]}
    await post(client, "/api/v1/entities/driver", {**ANA, "push_tokens": ["ana-phone"]})
    await post(client, "/api/v1/entities/driver", bruno)
    drivers = "/api/v1/entities/vehicle/ABC1D23/drivers"
    await post(client, drivers, {"driver": ANA["cpf"], "start": "2026-11-20T08:00:00Z"})
    await post(client, drivers, {"driver": bruno["cpf"], "start": "2026-11-20T14:00:00Z"})

    await send_to(client, traccar, sample("traccar_event_forward_geofence_exit.json"))
    await drain(client.app[services_key])
    assert [m["token"] for m in fcm.messages] == ["ana-phone"]


async def test_scenario_2_the_service_alert_goes_out_by_push_email_and_sms(
    client: Client, partner: Partner, fcm: Fcm, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await push_channel(client, fcm)
    await email_channel(client, smtp.port)
    await sms_channel(client, partner.url, "zenvia-token")
    for name in ("maintenance-due-push", "maintenance-due-email", "maintenance-due-sms"):
        await add_template(client, name)
    await upload_flow(client, "maintenance-due-alert")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "model": "Strada"})
    await post(
        client,
        "/api/v1/entities/driver",
        {
            **ANA,
            "phone": "+5511987654321",
            "email": "ana.souza@example.com",
            "push_tokens": ["fcm-device-token"],
        },
    )
    await post(
        client, "/api/v1/entities/vehicle/ABC1D23/drivers", {"driver": ANA["cpf"], "start": SINCE}
    )
    await post(
        client,
        "/api/v1/entities/operator",
        {
            "name": "Bruno Lima",
            "cpf": "11144477735",
            "email": "bruno@acme.com.br",
            "role": "fleet_manager",
        },
    )
    maintenance = await _maintenance_trigger(client)

    await send_to(client, maintenance, {"placa": "ABC1D23", "odometro": 10012.4, "limite": 10000})
    await drain(client.app[services_key])

    (push,) = fcm.messages
    assert push["notification"] == {
        "title": "Revisão do ABC1D23",
        "body": "ABC1D23 atingiu 10.000 km. Agende a revisão.",
    }
    assert sorted(m.recipients[0] for m in smtp.received) == [
        "ana.souza@example.com",
        "bruno@acme.com.br",
    ]
    assert {m.message["Subject"] for m in smtp.received} == {"Revisão: ABC1D23 atingiu 10.000 km"}
    (sms,) = [r for r in partner.requests if r.path == "/v2/channels/sms/messages"]
    assert sms.json() == sample("sms_request.json")
    assert sms.headers["X-API-TOKEN"] == "zenvia-token"

    # The same limit reported again (a resent reading, a re-baselined odometer): once per
    # vehicle and limit on every channel, not only the push.
    await send_to(client, maintenance, {"placa": "ABC1D23", "odometro": 10020.7, "limite": 10000})
    await drain(client.app[services_key])
    assert len(fcm.messages) == 1
    assert len(smtp.received) == 2
    assert len([r for r in partner.requests if r.path == "/v2/channels/sms/messages"]) == 1
    suppressed = await get(client, "/api/v1/deliveries?status=suppressed")
    assert len(suppressed["items"]) == 4  # push, e-mail to Ana and to Bruno, SMS


async def _maintenance_trigger(client: Client) -> dict[str, Any]:
    """Stands in for the fold (fleet lane): a vehicle's odometer reported with the plan's
    limit it reached, emitting the event the fold will emit."""
    mapping = """
name: maintenance-report
direction: inbound
entity_type: vehicle
key: [plate]
emit: [vehicle.maintenance.due]
fields:
  plate: placa
  odometer_km: odometro
event_data:
  due_km: limite
"""
    response = await client.post(
        "/api/v1/mappings",
        data=mapping.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert response.status == 201, await response.text()
    body = {"name": "maintenance", "entity_type": "vehicle", "methods": ["POST"]}
    return dict(await post(client, "/api/v1/triggers", {**body, "mapping": "maintenance-report"}))


async def test_scenario_3_two_authorities_fines_of_one_ait_number_are_two_fines_each_e_mailed(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """An AIT number is unique only within its issuing authority: the state DETRAN's fine
    numbered as the city's is another fine, with its own plate, amount and driver's e-mail, and
    its payment marks it paid, not the city's."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    for plate in ("ABC1D23", "XYZ9A87"):
        await post(client, "/api/v1/entities/vehicle", {"plate": plate})
    await post(client, "/api/v1/entities/driver", ANA)
    services = client.app[services_key]
    city = sample("fine_feed.json")  # orgaoAutuador 261810, ABC1D23, R$ 130,16
    state = {**city, "orgaoAutuador": "125100", "placa": "XYZ9A87", "valor": 293.47}
    for fine in (city, state):
        await send_to(client, fines, fine)
        await drain(services)
    first = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    second = await get(client, "/api/v1/entities/other/fine:125100:A123456789")
    assert (first["plate"], first["amount_brl"]) == ("ABC1D23", 130.16)
    assert (second["plate"], second["amount_brl"]) == ("XYZ9A87", 293.47)
    subjects = sorted(m.message["Subject"] for m in smtp.received)
    assert subjects == ["Multa A123456789 - ABC1D23", "Multa A123456789 - XYZ9A87"]
    payments = await trigger_for(client, "fine-payment", kind="fine")
    await send_to(client, payments, {**sample("fine_payment.json"), "orgaoAutuador": "125100"})
    assert (await get(client, "/api/v1/entities/other/fine:125100:A123456789"))["status"] == "paid"
    assert (await get(client, "/api/v1/entities/other/fine:261810:A123456789"))["status"] == "open"


KEYED_IN = {
    "kind": "fine",
    "key": "261810:A123456789",
    "ait_number": "A123456789",
    "authority": "261810",
    "plate": "ABC1D23",
    "amount_brl": 130.16,
    "status": "open",
}


async def test_scenario_3_a_fine_keyed_in_before_its_notice_reaches_the_driver_with_the_notice(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """docs/entities.md: a fine is often keyed in from the paper notice before the provider's
    comes. Without its infraction time nobody can say who drove; the provider's notice brings
    it, and that write announces fine.received: the driver is e-mailed then, once."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    services = client.app[services_key]
    await post(client, "/api/v1/entities/other", KEYED_IN)
    await drain(services)
    assert partner.requests == [] and smtp.received == []
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(services)
    (lookup,) = partner.requests
    assert lookup.query == {"em": "2026-11-18T16:45:00Z"}
    (mail,) = smtp.received
    assert mail.message["Subject"] == "Multa A123456789 - ABC1D23"
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert (fine["occurred_at"], fine["driver_cpf"]) == ("2026-11-18T16:45:00Z", ANA["cpf"])
    # The notice sent again, its time corrected: HR is asked about the new time, no 2nd e-mail.
    await send_to(client, fines, {**sample("fine_feed.json"), "dataHora": "18/11/2026 13:50"})
    await drain(services)
    assert [r.query["em"] for r in partner.requests] == [
        "2026-11-18T16:45:00Z",
        "2026-11-18T16:50:00Z",
    ]
    assert len(smtp.received) == 1


async def test_scenario_3_a_fine_keyed_in_with_its_time_reaches_the_driver_then_once(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """Whichever write brings the infraction time starts the scenario: the paper notice typed in
    with it, and then the provider's notice with the same time, e-mail the driver once."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    services = client.app[services_key]
    await post(
        client, "/api/v1/entities/other", {**KEYED_IN, "occurred_at": "2026-11-18T16:45:00Z"}
    )
    await drain(services)
    (lookup,) = partner.requests
    assert lookup.query == {"em": "2026-11-18T16:45:00Z"}
    assert [m.message["Subject"] for m in smtp.received] == ["Multa A123456789 - ABC1D23"]
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(services)
    assert len(partner.requests) == 1 and len(smtp.received) == 1


async def test_scenario_3_a_fine_whose_time_is_keyed_in_later_reaches_the_driver(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await _scenario3(client, partner, smtp.port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    services = client.app[services_key]
    await post(client, "/api/v1/entities/other", KEYED_IN)
    await drain(services)
    response = await client.patch(
        "/api/v1/entities/other/fine:261810:A123456789",
        json={"place": "Av. Paulista, 1000"},
        headers=auth(),
    )
    assert response.status == 200, await response.text()
    await drain(services)
    assert partner.requests == [] and smtp.received == []  # no time yet: who drove?
    response = await client.patch(
        "/api/v1/entities/other/fine:261810:A123456789",
        json={"occurred_at": "2026-11-18T16:45:00Z"},
        headers=auth(),
    )
    assert response.status == 200, await response.text()
    await drain(services)
    assert len(partner.requests) == 1 and len(smtp.received) == 1
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert fine["driver_cpf"] == ANA["cpf"]  # the flow's own write started nothing more
    runs = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    assert [(r["event"]["type"], r["event"]["origin"]["kind"]) for r in runs] == [
        ("fine.received", "admin")
    ]


async def test_scenario_3_a_fine_whose_notice_came_first_is_e_mailed_once_when_keyed_in_later(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    services = client.app[services_key]
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(services)
    assert len(smtp.received) == 1
    # The back office types in the paper notice later: the fine is there, under the same key.
    response = await client.post("/api/v1/entities/other", json=KEYED_IN, headers=auth())
    assert response.status == 409, await response.text()
    response = await client.patch(
        "/api/v1/entities/other/fine:261810:A123456789",
        json={"description": "excesso de velocidade"},
        headers=auth(),
    )
    assert response.status == 200, await response.text()
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(services)
    assert len(partner.requests) == 1 and len(smtp.received) == 1


async def test_scenario_3_a_fine_e_mailed_before_the_upgrade_is_not_e_mailed_again_after_it(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """A fine stored under its AIT alone, its driver e-mailed (its once-per-fine note under that
    key), is keyed by authority and AIT at the upgrade with its note: the provider's notice
    correcting its time announces it again and asks HR again, but e-mails nobody twice."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    services = client.app[services_key]
    old = {**KEYED_IN, "key": "A123456789", "occurred_at": "2026-11-18T16:45:00Z"}
    del old["authority"]
    await post(client, "/api/v1/entities/other", old)
    await drain(services)
    assert len(smtp.received) == 1
    store = services.store
    # As an older gateway noted it: by the fine alone, `fine-received:A123456789`.
    notes = store.db["notify_cooldowns"]
    (note,) = await notes.find({"key": {"$regex": "^fine-received:"}}).to_list(None)
    assert note["key"] == f"fine-received:A123456789:{ANA['cpf']}"
    await notes.delete_one({"_id": note["_id"]})
    old_note = note["_id"].removesuffix(f":{ANA['cpf']}")
    await notes.insert_one({**note, "_id": old_note, "key": "fine-received:A123456789"})
    # As an older gateway's fine-feed stored it: with its authority, keyed by the AIT alone.
    await store.db["entities"].update_one(
        {"nk": "fine:A123456789"}, {"$set": {"data.authority": "261810"}}
    )
    await store.db["migrations"].delete_many({"_id": "other.fine.authority_key"})
    await store.ensure_indexes()  # the upgrade's first start

    await send_to(client, fines, {**sample("fine_feed.json"), "dataHora": "18/11/2026 13:50"})
    await drain(services)
    assert [r.query["em"] for r in partner.requests] == [
        "2026-11-18T16:45:00Z",
        "2026-11-18T16:50:00Z",
    ]
    assert len(smtp.received) == 1
    listed = await get(client, "/api/v1/entities/other?kind=fine")
    assert [f["key"] for f in listed["items"]] == ["261810:A123456789"]


BIA = {"name": "Bia Lima", "cpf": "11144477735", "language": "pt-BR"}


def _hr_names(name: str, cpf: str, since: str) -> dict[str, Any]:
    """HR's answer naming a driver (their e-mail `<first>.<last>@example.com`) since `since`."""
    email = name.lower().replace(" ", ".") + "@example.com"
    return {
        "veiculo": {"placa": "ABC1D23"},
        "condutorAtual": {"nome": name, "cpf": cpf, "email": email, "desde": since},
    }


async def test_scenario_3_a_correction_while_hr_is_down_reaches_the_driver_at_the_corrected_time(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """HR is down; the notice (18/11) and the provider's correction (17/11) both wait for it.
    HR back: the notice's run hears 18/11 is Ana, a time the fine no longer has: it stops
    before writing or e-mailing (its `driver` write expects 18/11); the correction's hears
    17/11 is Bia, the fine's driver, e-mailed. Only Bia, who drove then, is told."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    services = client.app[services_key]
    clock = FakeClock()
    services.flow_runner.clock = services.delivery_worker.clock = clock
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    for driver in (ANA, BIA):
        await post(client, "/api/v1/entities/driver", driver)
    partner.respond_with(503, {"erro": "manutencao"})
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(services)
    clock.advance(3)
    corrected = {**sample("fine_feed.json"), "dataHora": "2026-11-17T13:45:00-03:00"}
    await send_to(client, fines, corrected)
    await drain(services)
    partner.respond_with(200, _hr_names("Bia Lima", BIA["cpf"], "2026-11-01T08:00:00-03:00"))
    ana_then = _hr_names("Ana Souza", ANA["cpf"], "2026-11-18T08:00:00-03:00")
    partner.respond_with(200, ana_then, times=1)
    clock.advance(3)  # run 1's retry: 18/11, Ana
    await drain(services)
    clock.advance(400)  # run 2's: 17/11, Bia
    await drain(services)

    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert fine["driver_cpf"] == BIA["cpf"]
    assert [m.recipients for m in smtp.received] == [["bia.lima@example.com"]]
    runs = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    (stale,) = [r for r in runs if r["event"]["entity"]["rev"] == 1]  # the notice's
    assert stale["status"] == "stopped"
    assert [(s["id"], s["outcome"]) for s in stale["steps"]] == [
        ("hr", "answered"),
        ("driver", "stopped"),
    ]
    assert "corrected" in stale["steps"][1]["description"]


async def test_scenario_3_a_lookup_finishing_after_the_correction_does_not_overwrite_its_driver(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """The notice (17/11) waits for HR (503); the provider's correction (18/11) runs at once:
    Ana, the fine's driver, e-mailed. HR back, the notice's run hears 17/11 is Bia: about a
    time the fine no longer has, it stops (`driver`'s expect): the fine keeps Ana, Bia is not
    told, whichever HR answer comes back last."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    services = client.app[services_key]
    clock = FakeClock()
    services.flow_runner.clock = services.delivery_worker.clock = clock
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    for driver in (ANA, BIA):
        await post(client, "/api/v1/entities/driver", driver)
    partner.respond_with(503, {"erro": "manutencao"})
    notice = {**sample("fine_feed.json"), "dataHora": "2026-11-17T13:45:00-03:00"}
    await send_to(client, fines, notice)
    await drain(services)
    ana_then = _hr_names("Ana Souza", ANA["cpf"], "2026-11-18T08:00:00-03:00")
    partner.respond_with(200, ana_then, times=1)
    await send_to(client, fines, sample("fine_feed.json"))  # corrected: 18/11 13:45
    await drain(services)
    assert [m.recipients for m in smtp.received] == [["ana.souza@example.com"]]
    partner.respond_with(200, _hr_names("Bia Lima", BIA["cpf"], "2026-11-01T08:00:00-03:00"))
    clock.advance(400)  # the notice's retry: 17/11, Bia
    await drain(services)

    asked = [r.query["em"] for r in partner.requests]  # 17/11 (503) .. 18/11 .. 17/11 (Bia)
    assert asked.count("2026-11-18T16:45:00Z") == 1 and asked[-1] == "2026-11-17T16:45:00Z"
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert (fine["occurred_at"], fine["driver_cpf"]) == ("2026-11-18T16:45:00Z", ANA["cpf"])
    assert [m.recipients for m in smtp.received] == [["ana.souza@example.com"]]
    runs = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    assert sorted(r["status"] for r in runs) == ["stopped", "succeeded"]


async def test_scenario_3_a_driver_write_that_waited_puts_no_stale_driver_on_a_corrected_fine(
    client: Client, partner: Partner, smtp_server: SmtpFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notice's run (17/11) hears Bia; its `driver` write loses to another writer of the
    fine (EntityContended: the provider's correction being written) and waits. The correction
    (18/11) names Ana, e-mailed. The notice's run resumes at its write: the fine no longer has
    the time HR was asked about, so it writes nothing and e-mails nobody (before, it resumed
    past the check made before the wait and wrote and e-mailed Bia)."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    services = client.app[services_key]
    clock = FakeClock()
    services.flow_runner.clock = services.delivery_worker.clock = clock
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    for driver in (ANA, BIA):
        await post(client, "/api/v1/entities/driver", driver)
    entities = services.flow_runner._steps._p.entities
    real_patch = entities.patch
    contended: list[int] = []

    async def patch(*args: Any, **kwargs: Any) -> Any:
        if not contended and args[1] == "other":  # the first write of the fine by the flow
            contended.append(1)
            raise EntityContended("another process writes the fine")
        return await real_patch(*args, **kwargs)

    entities.patch = patch  # type: ignore[method-assign]
    monkeypatch.setattr(steps, "_CONFLICT_RETRY", (300.0,))  # waits until the clock moves
    partner.respond_with(200, _hr_names("Bia Lima", BIA["cpf"], "2026-11-01T08:00:00-03:00"))
    await send_to(
        client, fines, {**sample("fine_feed.json"), "dataHora": "2026-11-17T13:45:00-03:00"}
    )
    await drain(services)
    assert contended
    partner.respond_with(200, _hr_names("Ana Souza", ANA["cpf"], "2026-11-18T08:00:00-03:00"))
    await send_to(client, fines, sample("fine_feed.json"))  # corrected: 18/11 13:45
    await drain(services)
    clock.advance(600)  # the notice's run tries its write again
    await drain(services)

    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert (fine["occurred_at"], fine["driver_cpf"]) == ("2026-11-18T16:45:00Z", ANA["cpf"])
    assert [m.recipients for m in smtp.received] == [["ana.souza@example.com"]]
    runs = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    (stale,) = [r for r in runs if r["event"]["entity"]["rev"] == 1]  # the notice's
    assert stale["status"] == "stopped"
    (driver,) = [s for s in stale["steps"] if s["id"] == "driver"]
    assert driver["outcome"] == "stopped" and stale["steps"][-1] == driver
    assert driver["reason"].startswith("expect: the other is not as expected: its occurred_at")
    assert "corrected" in driver["description"]


async def test_scenario_3_a_correction_stored_just_before_the_driver_write_is_not_overwritten(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """No wait at all: another process stores the provider's correction (18/11) after the
    notice's run (17/11, HR: Bia) read the fine and right before its `driver` write: the
    write, conditioned on the fine still having the time HR was asked about, is not made,
    and Bia is not e-mailed; the correction's run names Ana."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    services = client.app[services_key]
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    for driver in (ANA, BIA):
        await post(client, "/api/v1/entities/driver", driver)
    entities = services.flow_runner._steps._p.entities
    real_patch = entities.patch
    corrected: list[dict[str, Any]] = []

    async def patch(*args: Any, **kwargs: Any) -> Any:
        if not corrected and args[1] == "other":  # another process stores the correction now
            corrected.append(await send_to(client, fines, sample("fine_feed.json")))
        return await real_patch(*args, **kwargs)

    entities.patch = patch  # type: ignore[method-assign]
    partner.respond_with(200, _hr_names("Ana Souza", ANA["cpf"], "2026-11-18T08:00:00-03:00"))
    bia_then = _hr_names("Bia Lima", BIA["cpf"], "2026-11-01T08:00:00-03:00")
    partner.respond_with(200, bia_then, times=1)
    await send_to(
        client, fines, {**sample("fine_feed.json"), "dataHora": "2026-11-17T13:45:00-03:00"}
    )
    await drain(services)
    assert corrected
    await drain(services)

    asked = [r.query["em"] for r in partner.requests]
    assert asked == ["2026-11-17T16:45:00Z", "2026-11-18T16:45:00Z"]
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert (fine["occurred_at"], fine["driver_cpf"]) == ("2026-11-18T16:45:00Z", ANA["cpf"])
    assert [m.recipients for m in smtp.received] == [["ana.souza@example.com"]]


async def test_scenario_3_a_fine_whose_plate_is_corrected_reaches_the_driver_of_that_vehicle(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """The notice read the plate wrong (ABC1D24: HR names Bia, e-mailed); the provider's
    corrected notice says ABC1D23: HR is asked about that vehicle, Ana (who drove it then)
    is e-mailed and becomes the fine's driver. So is an admin's correction of the plate."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    services = client.app[services_key]
    for plate in ("ABC1D23", "ABC1D24", "ABC1D25"):
        await post(client, "/api/v1/entities/vehicle", {"plate": plate})
    for driver in (ANA, BIA):
        await post(client, "/api/v1/entities/driver", driver)
    partner.respond_with(200, _hr_names("Bia Lima", BIA["cpf"], "2026-11-01T08:00:00-03:00"))
    await send_to(client, fines, {**sample("fine_feed.json"), "placa": "ABC1D24"})
    await drain(services)
    partner.respond_with(200, _hr_names("Ana Souza", ANA["cpf"], "2026-11-01T08:00:00-03:00"))
    answer = await send_to(client, fines, sample("fine_feed.json"))
    assert answer["changed"] == ["plate"] and answer["events"] == [
        "entity.updated",
        "fine.received",
    ]
    await drain(services)
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert (fine["plate"], fine["driver_cpf"]) == ("ABC1D23", ANA["cpf"])
    assert [m.recipients for m in smtp.received] == [
        ["bia.lima@example.com"],
        ["ana.souza@example.com"],
    ]
    # The back office corrects it again (ABC1D25, Bia's): HR asked, Bia the fine's driver,
    # not e-mailed twice the same fine.
    partner.respond_with(200, _hr_names("Bia Lima", BIA["cpf"], "2026-11-01T08:00:00-03:00"))
    response = await client.patch(
        "/api/v1/entities/other/fine:261810:A123456789", json={"plate": "ABC1D25"}, headers=auth()
    )
    assert response.status == 200, await response.text()
    await drain(services)
    assert [r.path for r in partner.requests] == [
        "/veiculos/ABC1D24/condutor-atual",
        "/veiculos/ABC1D23/condutor-atual",
        "/veiculos/ABC1D25/condutor-atual",
    ]
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert (fine["plate"], fine["driver_cpf"]) == ("ABC1D25", BIA["cpf"])
    assert len(smtp.received) == 2


async def test_scenario_3_a_fine_corrected_to_a_vehicle_hr_names_nobody_for_has_no_driver(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """The notice read the plate wrong (ABC1D24: HR names Bia, the fine is hers, e-mailed; the
    back office marks it paid: the ERP hears Bia). The corrected notice says ABC1D23, a pool
    car HR names nobody for then: Bia drove another vehicle, so the fine's driver is cleared
    (it kept hers) and the ERP is told the payment again without a driver; nobody e-mailed."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    await erp_actions(client, partner.url)
    await upload_flow(client, "fine-paid-erp")
    services = client.app[services_key]
    for plate in ("ABC1D23", "ABC1D24"):
        await post(client, "/api/v1/entities/vehicle", {"plate": plate})
    for driver in (ANA, BIA):
        await post(client, "/api/v1/entities/driver", driver)
    partner.respond_with(200, _hr_names("Bia Lima", BIA["cpf"], "2026-11-01T08:00:00-03:00"))
    await send_to(client, fines, {**sample("fine_feed.json"), "placa": "ABC1D24"})
    await drain(services)
    response = await client.patch(
        "/api/v1/entities/other/fine:261810:A123456789", json={"status": "paid"}, headers=auth()
    )
    assert response.status == 200, await response.text()
    await drain(services)
    partner.respond_with(200, {"veiculo": {"placa": "ABC1D23"}, "condutorAtual": None})
    answer = await send_to(client, fines, sample("fine_feed.json"))
    assert "fine.received" in answer["events"]
    await drain(services)

    asked = [r.path for r in partner.requests if r.method == "GET"]
    assert asked == ["/veiculos/ABC1D24/condutor-atual", "/veiculos/ABC1D23/condutor-atual"]
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    told = [r.json() for r in partner.requests if r.method == "PUT"]
    assert [t.get("condutorCpf") for t in told] == [BIA["cpf"], None]
    assert told[-1]["placa"] == "ABC1D23"
    assert fine["plate"] == "ABC1D23" and "driver_cpf" not in fine, fine
    assert [m.recipients for m in smtp.received] == [["bia.lima@example.com"]]
    runs = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    corrected = runs[0]  # the newest
    assert corrected["status"] == "stopped"
    assert [(s["id"], s["outcome"]) for s in corrected["steps"]][-2:] == [
        ("driver", "written"),
        ("has_email", "stopped"),
    ]


FINE = {**KEYED_IN, "occurred_at": "2026-11-18T13:45:00-03:00", "place": "Av. Paulista, 1000"}


async def test_scenario_3_a_fine_through_a_trigger_without_a_mapping_reaches_its_driver(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """A provider sending the canonical fine to a trigger without a mapping: the write that
    stores the fine announces fine.received (the fine's own event, as fine.paid is), HR is
    asked, the driver e-mailed, once; sent again, nothing more."""
    smtp = await smtp_server()
    await _scenario3(client, partner, smtp.port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    trigger = await post(
        client,
        "/api/v1/triggers",
        {"name": "fines", "entity_type": "other", "kind": "fine", "methods": ["POST"]},
    )
    for _ in range(2):
        answer = await send_to(client, trigger, FINE)
        await drain(client.app[services_key])
    assert answer["events"] == []  # sent again: nothing changed, nothing announced
    events = (await get(client, "/api/v1/events?type=fine.received"))["items"]
    assert [e["origin"]["kind"] for e in events] == ["trigger"]
    (run,) = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    assert run["status"] == "succeeded"
    (lookup,) = partner.requests
    assert lookup.query == {"em": "2026-11-18T13:45:00-03:00"}  # as the fine says it
    assert [m.recipients for m in smtp.received] == [["ana.souza@example.com"]]


async def test_scenario_3_a_fine_through_the_fine_feed_starts_one_run_and_one_e_mail(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """The shipped mapping announces no fine.received of its own: its write's derived one is
    the only one, so the notice starts one run, asks HR once and e-mails once."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    answer = await send_to(client, fines, sample("fine_feed.json"))
    assert answer["events"] == ["entity.created", "fine.received"]
    await drain(client.app[services_key])
    events = (await get(client, "/api/v1/events?type=fine.received"))["items"]
    assert len(events) == 1
    assert len((await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]) == 1
    assert len(partner.requests) == 1 and len(smtp.received) == 1


async def test_scenario_3_the_driver_hr_names_again_is_not_e_mailed_again(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """The back office keys the fine in with the driver it believes drove (Bia); the notice
    comes, HR names Ana: Ana is e-mailed (under a key naming her: the fine recorded Bia) and
    becomes the fine's driver. The provider corrects the time by 4 minutes, HR names Ana
    again: the fine now recorded Ana, so the key was the fine's alone, never used, and Ana
    got the same fine twice."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    services = client.app[services_key]
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    for driver in (ANA, BIA):
        await post(client, "/api/v1/entities/driver", driver)
    await post(client, "/api/v1/entities/other", {**KEYED_IN, "driver_cpf": BIA["cpf"]})
    await drain(services)
    partner.respond_with(200, _hr_names("Ana Souza", ANA["cpf"], "2026-11-01T08:00:00-03:00"))
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(services)
    await send_to(client, fines, {**sample("fine_feed.json"), "dataHora": "18/11/2026 13:41"})
    await drain(services)

    assert len([r for r in partner.requests if r.method == "GET"]) == 2  # HR asked twice
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert fine["driver_cpf"] == ANA["cpf"]
    assert [m.recipients for m in smtp.received] == [["ana.souza@example.com"]]


async def test_a_payment_notice_for_a_fine_the_gateway_lacks_is_refused(client: Client) -> None:
    payments = await trigger_for(client, "fine-payment", kind="fine")
    response = await client.post(
        f"/hooks/{payments['id']}",
        json=sample("fine_payment.json"),
        headers={"Authorization": f"Bearer {payments['token']}"},
    )
    body = await response.json()
    assert response.status == 422
    assert {e["pointer"] for e in body["errors"]} >= {"/ait_number", "/plate", "/amount_brl"}
    assert (await get(client, "/api/v1/events?type=fine.paid"))["items"] == []
