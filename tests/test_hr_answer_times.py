"""Scenario 3's HR answer, as HR systems write it: since when the driver drives the vehicle
as a date alone or the Brazilian way (`25/11/2026 08:00`), and a driver the history already
has someone else for at the infraction's time. Through the shipped fine flow: the fine feed's
payload at its trigger, the HR double's answer, the e-mail at a real SMTP server."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.flow_support import (
    ANA,
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
from tests.smtp_double import SmtpDouble, SmtpFactory, smtp_server

__all__ = ["partner", "smtp_server"]  # the fixtures

Client = TestClient[Any, Any]
BRUNO = {"name": "Bruno Lima", "cpf": "11144477735", "language": "pt-BR"}
INFRACTION = "2026-11-18T16:45:00Z"  # the sample fine's, 13:45 in São Paulo


async def _fleet(client: Client) -> None:
    """Vehicle ABC1D23 and its driver Ana."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)


async def _fine_through_hr(
    client: Client, hr: Partner, smtp: SmtpDouble, answer: dict[str, Any]
) -> dict[str, Any]:
    """The sample fine through the shipped flow, HR answering `answer`'s condutorAtual
    (over the sample's), for the tenant `_fleet` made; the run."""
    await hr_lookup(client, hr.url)
    await email_channel(client, smtp.port)
    await add_template(client, "fine-received")
    await upload_flow(client, "fine-email-driver")
    body = sample("driver_lookup_response.json")
    body["condutorAtual"].update(answer)
    hr.respond_with(200, body)
    fines = await trigger_for(client, "fine-feed", kind="fine")
    await post(client, "/api/v1/entities/driver", BRUNO)
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])
    (run,) = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    return dict(run)


@pytest.mark.parametrize(
    ("since", "read_as"),
    [
        ("2026-11-25", "2026-11-25T00:00:00-03:00"),
        ("25/11/2026", "2026-11-25T00:00:00-03:00"),
        ("25/11/2026 08:00", "2026-11-25T08:00:00-03:00"),
        ("25/11/2026 08:00:30", "2026-11-25T08:00:30-03:00"),
    ],
)
async def test_an_hr_answer_since_a_later_day_written_as_a_date_or_brazilian_fines_nobody(
    client: Client, partner: Partner, smtp_server: SmtpFactory, since: str, read_as: str
) -> None:
    """An HR system that ignores `?em=` names today's driver, since a week after the fine. A
    `desde` written as a date alone or dd/mm/yyyy was not read: nothing to check, so the run
    succeeded and fined today's driver for the older infraction."""
    smtp = await smtp_server()
    await _fleet(client)
    run = await _fine_through_hr(client, partner, smtp, {"desde": since})

    assert smtp.received == []
    assert run["status"] == "failed"
    (hr,) = run["steps"]
    assert hr["outcome"] == "failed"
    assert f"since {read_as}, after the time asked" in hr["detail"]
    assert (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"] == []
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert fine.get("driver_cpf") is None


@pytest.mark.parametrize("since", ["2026-11-17", "17/11/2026"])
async def test_an_hr_answer_since_an_earlier_day_is_read_from_that_days_start_in_brasilia(
    client: Client, partner: Partner, smtp_server: SmtpFactory, since: str
) -> None:
    """A date alone is that day's start in São Paulo (03:00 UTC), the day before the 13:45
    infraction: the driver HR names is the one, recorded from then."""
    smtp = await smtp_server()
    await _fleet(client)
    run = await _fine_through_hr(client, partner, smtp, {"desde": since})

    assert run["status"] == "succeeded", run
    assert run["steps"][0]["assignment"] == {
        "recorded": True,
        "changed": True,
        "start": "2026-11-17T03:00:00+00:00",
    }
    (mail,) = smtp.received
    assert mail.recipients == ["ana.souza@example.com"]
    drivers = await get(client, f"/api/v1/entities/vehicle/ABC1D23/drivers?at={INFRACTION}")
    assert drivers["driver"]["driver"]["cpf"] == ANA["cpf"]


@pytest.mark.parametrize("since", ["2026-11-18", "18/11/2026", "2026-11-18-03:00", "2026-11-18Z"])
async def test_an_hr_answer_since_the_infractions_own_day_fines_nobody(
    client: Client, partner: Partner, smtp_server: SmtpFactory, since: str
) -> None:
    """A date alone on the infraction's own day (with its zone too, as SOAP and Java write an
    xs:date) cannot say whether the handover came before the 13:45 infraction: read as that
    day's start, it fined (and recorded from midnight) a driver who may have taken the
    vehicle in the afternoon."""
    smtp = await smtp_server()
    await _fleet(client)
    run = await _fine_through_hr(client, partner, smtp, {"desde": since})

    assert smtp.received == []
    assert run["status"] == "failed"
    (hr,) = run["steps"]
    assert "since the day of the time asked" in hr["detail"], hr
    assert (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"] == []
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert fine.get("driver_cpf") is None


async def test_an_hr_answer_whose_since_is_no_time_fails_rather_than_fine_someone(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """`"desde": "ontem"` cannot say whether the answer is about the infraction's time: the
    run succeeded and e-mailed the driver, with only a note on the step."""
    smtp = await smtp_server()
    await _fleet(client)
    run = await _fine_through_hr(client, partner, smtp, {"desde": "ontem"})

    assert smtp.received == []
    assert run["status"] == "failed"
    (hr,) = run["steps"]
    assert hr["detail"].startswith("HR: the answer's start steps.hr.since || entity.occurred_at")
    assert '= "ontem" is not a time' in hr["detail"]
    assert "cannot be told" in hr["detail"]
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert fine.get("driver_cpf") is None


async def test_an_hr_driver_the_history_does_not_name_at_the_infraction_is_not_claimed_recorded(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """The ERP says Ana drives since 1 November; HR answers Bruno since 1 October for a fine
    of 18 November. A late report fills only the gap before a later change, so the history
    learned Bruno for October alone and still names Ana at the infraction, yet the step said
    `recorded: true`. It now says who the history names then."""
    smtp = await smtp_server()
    await _fleet(client)
    await post(
        client,
        "/api/v1/entities/vehicle/ABC1D23/drivers",
        {"driver": ANA["cpf"], "start": "2026-11-01T08:00:00-03:00", "source": "erp"},
    )
    answer = {
        "nome": "Bruno Lima",
        "cpf": "111.444.777-35",
        "email": "bruno@example.com",
        "desde": "2026-10-01T08:00:00-03:00",
    }
    run = await _fine_through_hr(client, partner, smtp, answer)

    assignment = run["steps"][0]["assignment"]
    assert assignment["recorded"] is False, assignment
    assert assignment["changed"] is True  # October: the gap before the ERP's change
    assert assignment["start"] == "2026-10-01T11:00:00+00:00"
    assert assignment["reason"] == (
        "the history names Ana Souza (erp, since 2026-11-01T11:00:00+00:00) at the time asked "
        "(entity.occurred_at = 2026-11-18T16:45:00+00:00), a later change than the answer's "
        "start: the answer's driver is recorded only before it"
    )
    drivers = await get(client, f"/api/v1/entities/vehicle/ABC1D23/drivers?at={INFRACTION}")
    assert drivers["driver"]["driver"]["cpf"] == ANA["cpf"]
    october = await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers?at=2026-10-15T12:00:00Z")
    assert october["driver"]["driver"]["cpf"] == BRUNO["cpf"]
    # The flow asked HR about the fine, and HR's driver is who it fines and e-mails.
    (mail,) = smtp.received
    assert mail.recipients == ["bruno@example.com"]
    assert run["status"] == "succeeded"


async def test_an_hr_answer_starting_at_the_instant_of_an_erp_change_is_kept_behind_it(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """The ERP says Ana drives from 08:00 on the day of the fine; HR answers Bruno since the
    same 08:00 (shifts start on the hour). The answer was written over the ERP's change (the
    later write at an instant wins), which was gone for good, and the step said `recorded:
    true`. Which of the two is right, only people can tell: the ERP's change stands, the
    answer is kept behind it, and the note says so."""
    smtp = await smtp_server()
    await _fleet(client)
    since = "2026-11-18T08:00:00-03:00"
    erp = {"driver": ANA["cpf"], "start": since, "source": "erp", "ref": "erp-77"}
    await post(client, "/api/v1/entities/vehicle/ABC1D23/drivers", erp)
    answer = {
        "nome": "Bruno Lima",
        "cpf": "111.444.777-35",
        "email": "bruno@example.com",
        "desde": since,
    }
    run = await _fine_through_hr(client, partner, smtp, answer)

    assert run["steps"][0]["assignment"] == {
        "recorded": False,
        "changed": False,
        "start": "2026-11-18T11:00:00+00:00",
        "reason": "the history names Ana Souza (erp, since 2026-11-18T11:00:00+00:00) from the "
        "answer's start, another source's change: the answer is not written over it (kept "
        "behind it)",
    }
    history = (await get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"]
    assert [(c["driver"]["cpf"], c["source"], c["ref"]) for c in history] == [
        (ANA["cpf"], "erp", "erp-77")
    ]
    stored = client.app[services_key].store.db["driver_assignments"]
    (change,) = await stored.find({"tenant": "acme"}).to_list(None)
    assert [(r["driver"]["cpf"], r["source"], r["ref"]) for r in change["beneath"]] == [
        (BRUNO["cpf"], "hr", run["id"])
    ]
    # The run goes on with the answer: HR's driver is who it fines and e-mails.
    (mail,) = smtp.received
    assert mail.recipients == ["bruno@example.com"]
    assert run["status"] == "succeeded"


async def test_an_assign_with_the_time_asked_and_no_start_records_the_driver_from_that_time(
    client: Client, partner: Partner
) -> None:
    """`assign` with `at` and no `start` recorded HR's driver from the run's start (after the
    infraction) and noted `recorded: true`, yet the history named nobody at the infraction.
    The answer names the driver at the time asked: recorded from then."""
    await _fleet(client)
    await hr_lookup(client, partner.url)
    partner.respond_with(200, sample("driver_lookup_response.json"))
    fines = await trigger_for(client, "fine-feed", kind="fine")
    assign = {"vehicle": "entity.plate", "driver": "steps.hr.cpf", "at": "entity.occurred_at"}
    step = {"id": "hr", "fetch": "hr-driver-lookup", "assign": assign}
    await post(
        client,
        "/api/v1/flows",
        {"name": "who", "on": {"events": ["fine.received"]}, "steps": [step]},
    )
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])
    (run,) = (await get(client, "/api/v1/flows/who/runs"))["items"]
    assert run["steps"][0]["assignment"] == {
        "recorded": True,
        "changed": True,
        "start": "2026-11-18T16:45:00+00:00",
    }
    drivers = await get(client, f"/api/v1/entities/vehicle/ABC1D23/drivers?at={INFRACTION}")
    assert drivers["driver"]["driver"]["cpf"] == ANA["cpf"]
