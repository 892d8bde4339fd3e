"""The seed scenarios under what partners really do (flows3): a fines provider writing local
time without an offset or sending the same fine again, FCM refusing a malformed token, an
ERP down while checklists pile up. Through HTTP, with the real SMTP server (aiosmtpd) and
local partner doubles."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import gateway.entities as entities_module
from gateway.clock import utcnow
from gateway.services import Services
from gateway.web.state import services_key
from tests.fcm_double import Fcm, fcm
from tests.flow_support import (
    ANA,
    FINE_EVENT,
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
from tests.ui_support import csrf_of, log_in, make_user

_MINUTE = timedelta(minutes=1)

__all__ = ["fcm", "partner", "smtp_server"]  # the fixtures

Client = TestClient[Any, Any]


async def _scenario3(client: Client, hr: Partner, smtp_port: int) -> dict[str, Any]:
    """The tenant of scenario 3: the fines trigger, the HR lookup, the e-mail channel."""
    await hr_lookup(client, hr.url)
    await email_channel(client, smtp_port)
    await add_template(client, "fine-received")
    await upload_flow(client, "fine-email-driver")
    hr.respond_with(200, sample("driver_lookup_response.json"))
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    return await trigger_for(client, "fine-feed", kind="fine")


async def test_a_fines_local_time_without_offset_asks_hr_about_sao_paulos_time(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """`"dataHora": "2026-11-18T13:45:00"` (local time, as many providers write it) was read
    as UTC: HR was asked about 13:45Z, three hours before the infraction (another shift's
    driver), and the e-mail said 10:45."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    await send_to(client, fines, {**sample("fine_feed.json"), "dataHora": "2026-11-18T13:45:00"})
    await drain(client.app[services_key])

    (lookup,) = partner.requests
    assert lookup.query == {"em": "2026-11-18T16:45:00Z"}
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert fine["occurred_at"] == "2026-11-18T16:45:00Z"
    (mail,) = smtp.received
    assert "que você dirigia em\n18/11/2026 13:45." in mail.part("plain").replace("\r\n", "\n")


async def test_a_checklists_local_completion_time_is_sao_paulos(client: Client) -> None:
    checklists = await trigger_for(client, "checklist", kind="checklist")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    payload = {**sample("checklist_completed.json"), "concluidoEm": "2026-11-25T07:58:00"}
    written = await send_to(client, checklists, payload)
    checklist = await get(client, f"/api/v1/entities/other/{written['id']}")
    assert checklist["completed_at"] == "2026-11-25T10:58:00Z"


async def test_the_same_fine_sent_again_is_emailed_once(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """Fines providers send a fine again (a daily full feed, a retry after a timeout, an
    update): the feed's mapping announces `fine.received` only when it creates the fine, so a
    resent or updated fine starts no run, and the driver gets one e-mail per fine."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    services = client.app[services_key]
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(services)
    again = await send_to(client, fines, sample("fine_feed.json"))
    updated = await send_to(client, fines, {**sample("fine_feed.json"), "valor": 104.13})
    assert (again["events"], updated["events"]) == ([], ["entity.updated"])
    await drain(services)

    assert len(smtp.received) == 1
    runs = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    assert len(runs) == 1
    # Another fine of the same driver is another e-mail.
    await send_to(client, fines, {**sample("fine_feed.json"), "ait": "B987654321"})
    await drain(services)
    assert [m.message["Subject"] for m in smtp.received] == [
        "Multa A123456789 - ABC1D23",
        "Multa B987654321 - ABC1D23",
    ]


async def test_a_fine_whose_email_bounced_goes_out_on_its_retry_not_by_a_resend(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """A fine sent again announces nothing (it is not new): an e-mail the mail server put off
    (450) goes out on its delivery's retry, once."""
    smtp = await smtp_server()
    smtp.refuse["ana.souza@example.com"] = "450 4.2.1 Mailbox busy, try later"
    fines = await _scenario3(client, partner, smtp.port)
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(services)
    assert smtp.received == []
    del smtp.refuse["ana.souza@example.com"]
    again = await send_to(client, fines, sample("fine_feed.json"))
    assert again["events"] == []
    await drain(services)
    assert smtp.received == []
    clock.advance(3600)
    await drain(services)
    assert len(smtp.received) == 1


async def _scenario1(client: Client, fcm: Fcm, tokens: list[str]) -> None:
    """A geofence exit (Traccar's forward) for ABC1D23, which Ana drives with `tokens`."""
    await push_channel(client, fcm)
    await add_template(client, "geofence-exit")
    await upload_flow(client, "geofence-exit-push")
    traccar = await trigger_for(client, "traccar-event", entity_type="vehicle")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", {**ANA, "push_tokens": tokens})
    drivers = "/api/v1/entities/vehicle/ABC1D23/drivers"
    await post(client, drivers, {"driver": ANA["cpf"], "start": "2026-11-01T00:00:00Z"})
    await send_to(client, traccar, sample("traccar_event_forward_geofence_exit.json"))
    await drain(client.app[services_key])


async def test_a_token_fcm_calls_invalid_leaves_the_driver_and_her_other_phone_gets_the_push(
    client: Client, fcm: Fcm
) -> None:
    """FCM answers 400 INVALID_ARGUMENT "The registration token is not a valid FCM
    registration token" for a token that is no token (cut when copied, an APNs token): it
    was kept, and every later alert to the driver failed on it again."""
    fcm.invalid["apns-token-by-mistake"] = "message.token"
    await _scenario1(client, fcm, ["apns-token-by-mistake", "ana-phone"])

    assert [m["token"] for m in fcm.messages] == ["ana-phone"]
    driver = await get(client, f"/api/v1/entities/driver/{ANA['cpf']}")
    assert driver["push_tokens"] == ["ana-phone"]
    (failed,) = (await get(client, "/api/v1/deliveries?status=failed"))["items"]
    assert failed["last_error"].startswith("FCM answered 400 INVALID_ARGUMENT")
    assert failed["last_error"].endswith("; token removed from driver")


async def test_an_invalid_argument_about_the_message_keeps_the_token(
    client: Client, fcm: Fcm
) -> None:
    fcm.invalid["ana-phone"] = "message.data[0].value"
    await _scenario1(client, fcm, ["ana-phone"])

    driver = await get(client, f"/api/v1/entities/driver/{ANA['cpf']}")
    assert driver["push_tokens"] == ["ana-phone"]
    (failed,) = (await get(client, "/api/v1/deliveries?status=failed"))["items"]
    assert "INVALID_ARGUMENT" in failed["last_error"] and "removed" not in failed["last_error"]


async def _mileage_to_an_ordered_erp(client: Client, erp: Partner) -> dict[str, Any]:
    """Scenario 4b with the ERP's mileage action `ordered`; the checklist trigger."""
    await erp_actions(client, erp.url)
    actions = (await get(client, "/api/v1/actions"))["items"]
    (mileage,) = [a for a in actions if a["name"] == "erp-mileage"]
    response = await client.patch(
        f"/api/v1/actions/{mileage['id']}", json={"ordered": True}, headers=auth()
    )
    assert response.status == 200, await response.text()
    await upload_flow(client, "checklist-mileage-erp")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "odometer_km": 150000})
    return await trigger_for(client, "checklist", kind="checklist")


def _checklist(n: int, km: int, at: str) -> dict[str, Any]:
    return {
        **sample("checklist_completed.json"),
        "checklistId": f"chk-{n}",
        "odometroKm": km,
        "concluidoEm": at,
    }


async def test_an_ordered_erp_never_hears_the_mileage_go_back_after_an_outage(
    client: Client, partner: Partner
) -> None:
    """SPEC §5: an `ordered` action's later delivery for the same vehicle waits for the
    earlier one. The flow's `call` ignored it: the first checklist's mileage, waiting for its
    retry while the ERP was down, reached the ERP after the second's, which went at once."""
    checklists = await _mileage_to_an_ordered_erp(client, partner)
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    partner.respond_with(503, {"erro": "manutenção"}, times=1)  # the ERP is down, then back
    await send_to(client, checklists, _checklist(1, 152340, "2026-11-25T07:58:00-03:00"))
    await drain(services)
    await send_to(client, checklists, _checklist(2, 152900, "2026-11-25T18:10:00-03:00"))
    await drain(services)
    clock.advance(7)  # the first one's retry: 5 s (± 20%)
    await drain(services)
    clock.advance(7)
    await drain(services)

    # the first (refused), the first again, then the second: never 152,900 before 152,340
    sent = [r.json()["quilometragemKm"] for r in partner.requests]
    assert sent == [152340.0, 152340.0, 152900.0]
    deliveries = (await get(client, "/api/v1/deliveries?status=succeeded"))["items"]
    assert len(deliveries) == 2


async def test_what_fcm_quotes_of_its_refusal_is_redacted_of_the_access_token(
    client: Client, fcm: Fcm
) -> None:
    """The reason of a refused push, recorded on the delivery, quoted FCM's answer as it was:
    an error message echoing the request's bearer token kept it for every admin to read."""
    fcm.invalid["apns-token-by-mistake"] = "message.token"
    fcm.echo_authorization = True
    await _scenario1(client, fcm, ["apns-token-by-mistake", "ana-phone"])

    (failed,) = (await get(client, "/api/v1/deliveries?status=failed"))["items"]
    assert failed["last_error"].startswith("FCM answered 400 INVALID_ARGUMENT")
    assert "request authorized with" in failed["last_error"]
    assert fcm.tokens_issued and not any(t in str(failed) for t in fcm.tokens_issued)


@pytest.mark.parametrize(
    ("status", "answer", "reason"),
    [
        # Zenvia's error document, passed on with a 200 by a proxy or an SMS aggregator
        (200, {"code": "VALIDATION_ERROR", "message": "Invalid to", "details": []}, "Invalid to"),
        # Twilio's Message resource, created but failed at once
        (
            201,
            {"sid": "SM1", "status": "failed", "error_code": 21610, "error_message": "STOP"},
            "21610: STOP",
        ),
        # Zenvia's legacy API: HTTP 200, the outcome in statusCode
        (
            200,
            {
                "sendSmsResponse": {
                    "statusCode": "10",
                    "detailCode": "013",
                    "detailDescription": "Empty message",
                }
            },
            "10 013 Empty message",
        ),
    ],
)
async def test_an_sms_provider_reporting_an_error_in_a_2xx_fails_the_message(
    client: Client, partner: Partner, status: int, answer: dict[str, Any], reason: str
) -> None:
    """The SMS was `succeeded` on any 2xx: the driver never got the service alert and
    nobody saw why."""
    await sms_channel(client, partner.url)
    await add_template(client, "maintenance-due-sms")
    notify = {
        "channel": "sms",
        "template": "maintenance-due-sms",
        "recipients": [{"address": "+5511987654321"}],
    }
    steps = [{"id": "sms", "notify": notify}]
    await post(
        client, "/api/v1/flows", {"name": "s", "on": {"events": ["entity.created"]}, "steps": steps}
    )
    partner.respond_with(status, answer)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(client.app[services_key])

    (failed,) = (await get(client, "/api/v1/deliveries?status=failed"))["items"]
    assert failed["last_error"].startswith(f"provider answered {status} reporting an error")
    assert reason in failed["last_error"]
    assert failed["attempt_count"] == 1  # refused: not retried


async def test_a_failed_run_is_replayed_from_the_step_that_failed(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """HR did not know the driver yet (404): the run failed, with the reason, and nothing
    could run it again once HR was fixed (the fine's driver was never told)."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    partner.respond_with(404, {"erro": "veículo sem condutor cadastrado"})
    await send_to(client, fines, sample("fine_feed.json"))
    services = client.app[services_key]
    await drain(services)
    (run,) = (await get(client, "/api/v1/flows/fine-email-driver/runs?status=failed"))["items"]
    assert run["last_error"] == "HR: answered 404"
    assert [(s["id"], s["outcome"]) for s in run["steps"]] == [("hr", "failed")]

    partner.respond_with(200, sample("driver_lookup_response.json"))  # HR has it now
    replayed = await post(client, f"/api/v1/flow-runs/{run['id']}/replay", {}, status=200)
    assert replayed["status"] == "pending" and replayed["steps"] == []
    assert [(r["step"], r["detail"]) for r in replayed["replays"]] == [("hr", "HR: answered 404")]
    await drain(services)

    (mail,) = smtp.received
    assert mail.recipients == ["ana.souza@example.com"]
    done = await get(client, f"/api/v1/flow-runs/{run['id']}")
    assert done["status"] == "succeeded" and done["last_error"] is None
    outcomes = [s["outcome"] for s in done["steps"]]
    assert outcomes == ["answered", "written", "passed", "queued"]
    assert len(done["replays"]) == 1
    # Only a failed run is replayed: this one went through.
    conflict = await post(client, f"/api/v1/flow-runs/{run['id']}/replay", {}, status=409)
    assert "only a failed run" in conflict["detail"]


async def test_the_admin_ui_replays_a_failed_run(
    client: Client, services: Services, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    partner.respond_with(404, {"erro": "veículo sem condutor cadastrado"})
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(services)
    (run,) = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/flow-runs/{run['id']}")).text()
    assert "Executar de novo a partir da etapa que falhou" in page

    partner.respond_with(200, sample("driver_lookup_response.json"))
    response = await client.post(
        f"/admin/flow-runs/{run['id']}/replay",
        data={"csrf": csrf_of(page)},
        allow_redirects=False,
    )
    assert response.status in (302, 303), await response.text()
    await drain(services)
    assert len(smtp.received) == 1
    done = await (await client.get(f"/admin/flow-runs/{run['id']}")).text()
    assert "HR: answered 404" in done  # the replayed failure stays in sight
    assert "Executar de novo" not in done  # succeeded now: nothing to replay


async def test_a_payment_notice_sent_again_tells_the_erp_once(
    client: Client, partner: Partner
) -> None:
    """Each notice emits `fine.paid`; a repeat (the fine already paid) sent the ERP the same
    PUT again, which an ERP answers 409 "already paid": a failed delivery for nothing."""
    await erp_actions(client, partner.url)
    await upload_flow(client, "fine-paid-erp")
    fines = await trigger_for(client, "fine-feed", kind="fine")
    payments = await trigger_for(client, "fine-payment", kind="fine")
    services = client.app[services_key]
    await send_to(client, fines, sample("fine_feed.json"))
    await send_to(client, payments, sample("fine_payment.json"))
    await drain(services)
    partner.respond_with(409, {"erro": "multa já baixada"})
    await send_to(client, payments, sample("fine_payment.json"))
    await drain(services)

    (put,) = [r for r in partner.requests if r.method == "PUT"]
    assert put.json()["ait"] == "A123456789"
    assert (await get(client, "/api/v1/deliveries?status=failed"))["items"] == []
    assert len((await get(client, "/api/v1/flows/fine-paid-erp/runs"))["items"]) == 1


async def test_a_fine_the_back_office_marks_paid_tells_the_erp_then_the_notices_amount(
    client: Client, partner: Partner
) -> None:
    """The back office pays the boleto and marks the fine paid (admin PATCH): only the payment
    notice's mapping announced `fine.paid`, and the notice that came days later changed
    nothing (the fine already paid): the ERP kept the fine open for ever. Now the PATCH is
    the payment, and the notice completes it with the amount and day paid."""
    await erp_actions(client, partner.url)
    await upload_flow(client, "fine-paid-erp")
    fines = await trigger_for(client, "fine-feed", kind="fine")
    payments = await trigger_for(client, "fine-payment", kind="fine")
    services = client.app[services_key]
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(services)
    response = await client.patch(
        "/api/v1/entities/other/fine:261810:A123456789", json={"status": "paid"}, headers=auth()
    )
    assert response.status == 200
    await drain(services)
    await send_to(client, payments, sample("fine_payment.json"))
    await drain(services)

    marked, noticed = [r for r in partner.requests if r.method == "PUT"]
    assert marked.path == noticed.path == "/multas/A123456789/pagamento"
    assert (marked.json()["ait"], marked.json()["valorPago"]) == ("A123456789", 130.16)
    paid_as_noticed = (noticed.json()["valorPago"], noticed.json()["dataPagamento"])
    assert paid_as_noticed == (104.13, "2026-11-25")
    (paid,) = (await get(client, "/api/v1/events?type=fine.paid"))["items"]
    assert paid["origin"]["kind"] == "admin"
    await send_to(client, payments, sample("fine_payment.json"))  # the notice sent again
    await drain(services)
    assert len([r for r in partner.requests if r.method == "PUT"]) == 2


async def test_a_fine_keyed_in_already_paid_tells_the_erp(client: Client, partner: Partner) -> None:
    """The back office keys in a paper fine it has already paid: the create announces
    `fine.paid`, but fine-paid-erp started only on one whose changes named `status`, which a
    create's have none of: the ERP never heard of the payment."""
    await erp_actions(client, partner.url)
    await upload_flow(client, "fine-paid-erp")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    partner.respond_with(200, {"ok": True})
    await post(client, "/api/v1/entities/other", {**FINE_EVENT["data"], "status": "paid"})
    await drain(client.app[services_key])

    (put,) = [r for r in partner.requests if r.method == "PUT"]
    assert (put.path, put.json()["valorPago"]) == ("/multas/A123456789/pagamento", 130.16)


async def test_a_driver_recorded_days_after_the_payment_leaves_the_erps_payment_day(
    client: Client, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The back office marks the fine paid, and records its driver three days later: the ERP
    was sent the payment again dated the day of the driver's write (a fine marked paid kept
    no day). Now the write that makes a fine paid records the day. A fine paid before that
    (no `paid_on`) is not sent again on a driver's write: the ERP keeps the day it heard."""
    await erp_actions(client, partner.url)
    await upload_flow(client, "fine-paid-erp")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    await post(client, "/api/v1/entities/other", dict(FINE_EVENT["data"]))
    partner.respond_with(200, {"ok": True})
    services = client.app[services_key]
    fine = "/api/v1/entities/other/fine:261810:A123456789"

    async def patch(change: dict[str, Any], days_later: int) -> None:
        now = entities_module.utcnow()
        monkeypatch.setattr(entities_module, "utcnow", lambda: now + timedelta(days=days_later))
        response = await client.patch(fine, json=change, headers=auth())
        monkeypatch.undo()
        assert response.status == 200, await response.text()
        await drain(services)

    await patch({"status": "paid"}, 0)
    await patch({"driver_cpf": ANA["cpf"]}, 3)
    paid, with_driver = [r.json() for r in partner.requests if r.method == "PUT"]
    assert with_driver["condutorCpf"] == ANA["cpf"]
    assert with_driver["dataPagamento"] == paid["dataPagamento"]
    assert (await get(client, fine))["paid_on"] == paid["dataPagamento"]

    await patch({"paid_on": None, "driver_cpf": None}, 0)  # as a fine paid before the release
    await patch({"driver_cpf": ANA["cpf"]}, 5)
    assert len([r for r in partner.requests if r.method == "PUT"]) == 2


async def test_a_fine_paid_again_after_its_payment_was_reversed_tells_the_erp_the_new_day(
    client: Client, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paid on day 0, reopened on day 2 (the payment reversed), paid again on day 4 by the back
    office's PATCH: the stored first day was merged into the write, taken as the write's own,
    and the ERP was told the new payment with the old day."""
    await erp_actions(client, partner.url)
    await upload_flow(client, "fine-paid-erp")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/other", dict(FINE_EVENT["data"]))
    partner.respond_with(200, {"ok": True})
    services = client.app[services_key]
    fine = "/api/v1/entities/other/fine:261810:A123456789"
    start = entities_module.utcnow()

    async def patch(change: dict[str, Any], days_later: int) -> None:
        monkeypatch.setattr(entities_module, "utcnow", lambda: start + timedelta(days=days_later))
        response = await client.patch(fine, json=change, headers=auth())
        monkeypatch.undo()
        assert response.status == 200, await response.text()
        await drain(services)

    def day(days_later: int) -> str:
        when = start + timedelta(days=days_later)
        return when.astimezone(entities_module.BRASILIA).date().isoformat()

    await patch({"status": "paid"}, 0)
    await patch({"status": "open"}, 2)
    await patch({"status": "paid"}, 4)
    first, again = [r.json() for r in partner.requests if r.method == "PUT"]
    assert (first["dataPagamento"], again["dataPagamento"]) == (day(0), day(4))
    assert (await get(client, fine))["paid_on"] == day(4)
    await patch({"status": "open"}, 5)
    await patch({"status": "paid", "paid_on": day(1)}, 6)  # a notice says its own day
    assert (await get(client, fine))["paid_on"] == day(1)


async def _ordered_fine_paid_erp(client: Client, partner: Partner) -> Services:
    """fine-paid-erp on the ERP's ordered erp-fine-paid (as docs/flows.md says to make it),
    the fine open, the ERP answering."""
    await erp_actions(client, partner.url)
    await upload_flow(client, "fine-paid-erp")
    (action,) = [
        a for a in (await get(client, "/api/v1/actions"))["items"] if a["name"] == "erp-fine-paid"
    ]
    r = await client.patch(
        f"/api/v1/actions/{action['id']}", json={"ordered": True}, headers=auth()
    )
    assert r.status == 200, await r.json()
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    await post(client, "/api/v1/entities/other", dict(FINE_EVENT["data"]))
    services = client.app[services_key]
    await drain(services)
    partner.respond_with(200, {"ok": True})
    return services


async def test_an_erp_put_of_an_older_version_made_after_a_newer_one_was_sent_is_not_sent(
    client: Client, partner: Partner
) -> None:
    """The fine.paid run's runner dies before its call; the driver's run goes through; the
    paid run resumes once its lease expires and makes its call, of the fine's older version:
    the ordered line held a delivery only behind an earlier open one, so it went out last and
    the ERP's payment (a PUT replaces) lost its driver. It is suppressed, the ERP keeps the
    newer state."""
    services = await _ordered_fine_paid_erp(client, partner)
    fine = "/api/v1/entities/other/fine:261810:A123456789"
    r = await client.patch(fine, json={"status": "paid"}, headers=auth())
    assert r.status == 200
    await services.relay.run_until_idle()
    runs = services.store.db["flow_runs"]
    (paid_run,) = await runs.find({"status": "pending"}).to_list(None)
    lease = {"status": "running", "lease_owner": "dead", "lease_until": utcnow() + _MINUTE}
    await runs.update_one({"_id": paid_run["_id"]}, {"$set": lease})
    r = await client.patch(fine, json={"driver_cpf": ANA["cpf"]}, headers=auth())
    assert r.status == 200
    await drain(services)
    await runs.update_one({"_id": paid_run["_id"]}, {"$set": {"lease_until": utcnow() - _MINUTE}})
    await drain(services)

    (put,) = [r.json() for r in partner.requests if r.method == "PUT"]
    assert put["condutorCpf"] == ANA["cpf"]
    late = await services.store.db["deliveries"].find_one({"_id": f"{paid_run['_id']}:erp"})
    assert late is not None, [d["_id"] async for d in services.store.db["deliveries"].find()]
    assert late["status"] == "suppressed"
    assert late["last_error"].startswith("outdated: delivery ")


async def test_an_erp_put_of_an_older_version_waits_for_a_newer_one_in_flight(
    client: Client, partner: Partner
) -> None:
    """Two runs of one fine side by side: the newer one's call is out (in flight) when the
    older one's is claimed. It waits for that outcome instead of racing it; the newer one
    taken by the ERP, the older is not sent."""
    services = await _ordered_fine_paid_erp(client, partner)
    fine = "/api/v1/entities/other/fine:261810:A123456789"
    deliveries = services.store.db["deliveries"]
    await client.patch(fine, json={"status": "paid"}, headers=auth())
    await client.patch(fine, json={"driver_cpf": ANA["cpf"]}, headers=auth())
    await services.relay.run_until_idle()
    await services.flow_runner.run_until_idle()
    older, newer = await deliveries.find({"kind": "flow_call"}).sort("seq", 1).to_list(None)
    in_flight = {"status": "in_flight", "lease_owner": "other", "lease_until": utcnow() + _MINUTE}
    await deliveries.update_one({"_id": newer["_id"]}, {"$set": in_flight})
    await services.delivery_worker.run_until_idle()
    older = await deliveries.find_one({"_id": older["_id"]})
    assert (older["status"], older["waiting_for"]) == ("pending", newer["_id"])
    assert not [r for r in partner.requests if r.method == "PUT"]

    await deliveries.update_one(  # the other worker's send taken by the ERP
        {"_id": newer["_id"]}, {"$set": {"status": "succeeded"}, "$unset": {"lease_owner": ""}}
    )
    await deliveries.update_one({"_id": older["_id"]}, {"$set": {"next_attempt_at": utcnow()}})
    await services.delivery_worker.run_until_idle()
    assert (await deliveries.find_one({"_id": older["_id"]}))["status"] == "suppressed"
    assert not [r for r in partner.requests if r.method == "PUT"]


async def test_a_paid_fine_sent_again_by_the_feed_stays_paid(client: Client) -> None:
    """The fine feed wrote `status: open` on every post: a provider's full feed re-sending a
    paid fine reopened it (and its next payment notice told the ERP again)."""
    fines = await trigger_for(client, "fine-feed", kind="fine")
    payments = await trigger_for(client, "fine-payment", kind="fine")
    created = await send_to(client, fines, sample("fine_feed.json"))
    assert created["created"] is True
    await send_to(client, payments, sample("fine_payment.json"))
    again = await send_to(client, fines, {**sample("fine_feed.json"), "valor": 131.0})

    assert again["changed"] == ["amount_brl"] and "skipped" not in again
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert fine["status"] == "paid" and fine["amount_brl"] == 131.0


async def test_a_mappings_dry_run_keeps_an_if_absent_field_and_a_non_boolean_is_refused(
    client: Client,
) -> None:
    fines = await trigger_for(client, "fine-feed", kind="fine")
    payments = await trigger_for(client, "fine-payment", kind="fine")
    await send_to(client, fines, sample("fine_feed.json"))
    await send_to(client, payments, sample("fine_payment.json"))
    tried = await post(
        client,
        "/api/v1/mappings/test",
        {"name": "fine-feed", "payload": {**sample("fine_feed.json"), "valor": 131.0}},
        status=200,
    )
    (result,) = tried["results"]
    assert result["document"]["status"] == "open"  # what the mapping says, before the entity
    assert [c["field"] for c in result["entity"]["changes"]] == ["amount_brl"]

    draft = "name: d\ndirection: inbound\nentity_type: other\nkind: fine\nkey: [key]\n"
    draft += "fields:\n  key: ait\n  status: {value: open, if_absent: maybe}\n"
    refused = await post(
        client, "/api/v1/mappings/test", {"mapping": draft, "payload": {}}, status=422
    )
    assert any(e["pointer"].endswith("/status/if_absent") for e in refused["errors"]), refused


async def test_a_checklists_remark_on_an_answer_is_kept(client: Client) -> None:
    """`"obs": "abaixo do minimo"` beside a failed item (the oil level) was dropped: the
    checklist said only that the oil was not ok."""
    checklists = await trigger_for(client, "checklist", kind="checklist")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    written = await send_to(client, checklists, sample("checklist_completed.json"))
    checklist = await get(client, f"/api/v1/entities/other/{written['id']}")
    assert checklist["answers"][2] == {
        "question": "nivel_oleo",
        "answer": False,
        "comment": "abaixo do minimo",
    }
    assert "comment" not in checklist["answers"][0]


async def test_a_fine_with_a_blank_place_or_infraction_code_is_kept_and_e_mailed_without_them(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """A feed's blank cells: `"local": ""` and `"codigoInfracao": ""` refused the fine whole
    (422), so its driver never heard of it; `"local": "   "` was e-mailed as `Local:   `."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    services = client.app[services_key]
    for ait, blank in (("B1", {"local": "", "codigoInfracao": ""}), ("B2", {"local": "   "})):
        await send_to(client, fines, {**sample("fine_feed.json"), "ait": ait, **blank})
        await drain(services)
        fine = await get(client, f"/api/v1/entities/other/fine:261810:{ait}")
        assert "place" not in fine
    assert "infraction_code" not in await get(client, "/api/v1/entities/other/fine:261810:B1")
    places = [
        [line for line in m.part("plain").splitlines() if line.startswith("Local:")]
        for m in smtp.received
    ]
    assert places == [["Local: não informado"]] * 2


async def test_an_hr_answer_whose_driver_fields_are_blank_names_nobody(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """A fixed-width export's empty columns (`"nome": "   "`, ...) were a driver without a
    name: `has_email` passed on `"   "` and the run succeeded with a `nobody` e-mail step to
    "driver None", where null or "" fields end the run `stopped`."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    blank = dict.fromkeys(("nome", "cpf", "email", "celular", "desde"), "   ")
    partner.respond_with(200, {"condutorAtual": blank})
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])

    (run,) = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    assert run["status"] == "stopped"
    assert [(s["id"], s["outcome"]) for s in run["steps"]][-1] == ("has_email", "stopped")
    assert smtp.received == []


async def test_a_driver_hr_names_without_an_email_is_emailed_at_the_stored_address(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """HR's answer had no e-mail: the flow stopped (`has_email`), although the tenant's own
    driver record, which the recipient joins by CPF, had one. Nobody was told of the fine."""
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    await client.patch(
        f"/api/v1/entities/driver/{ANA['cpf']}",
        json={"email": "ana@frota.acme.com.br"},
        headers=auth(),
    )
    answer = sample("driver_lookup_response.json")
    del answer["condutorAtual"]["email"]
    partner.respond_with(200, answer)
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])

    (mail,) = smtp.received
    assert mail.recipients == ["ana@frota.acme.com.br"]


async def test_a_driver_nobody_has_an_email_for_is_listed_unreachable(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    fines = await _scenario3(client, partner, smtp.port)
    answer = sample("driver_lookup_response.json")
    del answer["condutorAtual"]["email"]
    partner.respond_with(200, answer)
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])

    assert smtp.received == []
    (run,) = (await get(client, "/api/v1/flows/fine-email-driver/runs"))["items"]
    email = run["steps"][-1]
    assert email["outcome"] == "nobody"
    assert email["unreachable"] == [
        {"recipient": "driver Ana Souza", "reason": "driver Ana Souza has no e-mail address"}
    ]


async def test_an_erp_refusal_names_its_reason_in_the_failed_delivery(
    client: Client, partner: Partner
) -> None:
    """A 400 is not retried; its answer (what the ERP wants) was only in the attempt: the
    list of failed deliveries said "partner answered 400" and nothing else."""
    await erp_actions(client, partner.url)
    await upload_flow(client, "fine-paid-erp")
    fines = await trigger_for(client, "fine-feed", kind="fine")
    payments = await trigger_for(client, "fine-payment", kind="fine")
    await send_to(client, fines, sample("fine_feed.json"))
    partner.respond_with(400, {"erro": "valorPago diverge do título", "campo": "valorPago"})
    await send_to(client, payments, sample("fine_payment.json"))
    await drain(client.app[services_key])

    (failed,) = (await get(client, "/api/v1/deliveries?status=failed"))["items"]
    assert failed["kind"] == "flow_call" and failed["attempt_count"] == 1
    assert failed["last_error"] == (
        'partner answered 400: {"erro":"valorPago diverge do título","campo":"valorPago"}'
    )


async def test_a_retried_sms_send_carries_the_same_idempotency_key(
    client: Client, partner: Partner
) -> None:
    """A retried send (after a 503 or a timeout whose request the provider did take) went
    without any key: a provider that drops repeats could not tell it from a second SMS."""
    await sms_channel(client, partner.url)
    await add_template(client, "maintenance-due-sms")
    notify = {
        "channel": "sms",
        "template": "maintenance-due-sms",
        "recipients": [{"address": "+5511987654321"}, {"address": "+5511912345678"}],
    }
    steps = [{"id": "sms", "notify": notify}]
    await post(
        client, "/api/v1/flows", {"name": "s", "on": {"events": ["entity.created"]}, "steps": steps}
    )
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    partner.respond_with(200, {"id": "zenvia-1"})
    partner.respond_with(503, {}, times=2)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(services)
    clock.advance(10)
    await drain(services)

    assert len(partner.requests) == 4
    keys = [r.headers.get("Idempotency-Key") for r in partner.requests]
    assert None not in keys and len(set(keys)) == 2  # one per message, the same on its retry
    by_phone: dict[str, set[str | None]] = {}
    for request, key in zip(partner.requests, keys, strict=True):
        by_phone.setdefault(request.json()["to"], set()).add(key)
    assert all(len(k) == 1 for k in by_phone.values()) and len(by_phone) == 2
    delivered = (await get(client, "/api/v1/deliveries?status=succeeded"))["items"]
    assert {d["id"] for d in delivered} == {k for k in keys}


async def test_what_an_sms_provider_quotes_of_its_refusal_is_redacted_of_its_key(
    client: Client, partner: Partner
) -> None:
    """A provider refusing the key it was given quotes it back (`invalid token <key>`): the
    message's reason kept it, for every admin to read."""
    key = "zenvia-key-7f3a9c2e51"
    await sms_channel(client, partner.url, token=key)
    await add_template(client, "maintenance-due-sms")
    notify = {
        "channel": "sms",
        "template": "maintenance-due-sms",
        "recipients": [{"address": "+5511987654321"}],
    }
    steps = [{"id": "sms", "notify": notify}]
    await post(
        client, "/api/v1/flows", {"name": "s", "on": {"events": ["entity.created"]}, "steps": steps}
    )
    partner.respond_with(400, {"code": "BAD_REQUEST", "message": f"invalid token {key}"})
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(client.app[services_key])

    (failed,) = (await get(client, "/api/v1/deliveries?status=failed"))["items"]
    assert failed["last_error"].startswith("provider answered 400")
    assert "invalid token" in failed["last_error"]
    assert key not in str(failed)
    assert partner.requests[-1].headers["X-API-TOKEN"] == key
