"""Who a `notify` step reaches, at which address: a phone with letters is never read as
another number, from any source; a fetched contact that is not text is skipped, listed
unreachable with why, and the driver record's contact used; `operators: {role}` reaches every
active operator with the role, however many inactive ones share it."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.flows import recipients
from gateway.web.state import services_key
from tests.flow_support import (
    ANA,
    drain,
    email_channel,
    get,
    hr_lookup,
    sample,
    send_to,
    sms_channel,
    trigger_for,
)
from tests.partner_double import Partner, post, running_partner
from tests.smtp_double import SmtpFactory, smtp_server
from tests.support import auth

__all__ = ["smtp_server"]  # the fixture

Client = TestClient[Any, Any]
ANA_PHONE, ANA_EMAIL = "+5511911112222", "ana@frota.com.br"
WITH_LETTERS = ("(11) 98765-4321 r. 5", "+55 11 98765-4321 ramal 22", "+55 11 98765-4321 ext 7")


async def _templates(client: Client) -> None:
    await post(
        client,
        "/api/v1/templates",
        {
            "name": "fine-sms",
            "channel_type": "sms",
            "default_locale": "pt-BR",
            "locales": {"pt-BR": {"text": "Multa {{ entity.ait_number }}"}},
        },
    )
    await post(
        client,
        "/api/v1/templates",
        {
            "name": "fine-email",
            "channel_type": "email",
            "default_locale": "pt-BR",
            "locales": {"pt-BR": {"subject": "Multa", "text": "Multa {{ entity.ait_number }}"}},
        },
    )


async def _hr_flow(client: Client, hr: Partner, channel: str) -> dict[str, Any]:
    """fine.received → fetch the driver from HR → notify them on `channel`."""
    await hr_lookup(client, hr.url)
    await _templates(client)
    await post(
        client,
        "/api/v1/flows",
        {
            "name": "fine",
            "on": {"events": ["fine.received"]},
            "steps": [
                {"id": "hr", "fetch": "hr-driver-lookup"},
                {
                    "id": "say",
                    "notify": {
                        "channel": channel,
                        "template": f"fine-{channel}",
                        "recipients": [{"driver": {"from": "steps.hr"}}],
                    },
                },
            ],
        },
    )
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    return await trigger_for(client, "fine-feed", kind="fine")


async def _hr_answers(client: Client, hr: Partner, fines: dict[str, Any], **contact: Any) -> Any:
    """HR names Ana with `contact` (celular, email); the fine arrives; the run's notify step."""
    answer = sample("driver_lookup_response.json")
    answer["condutorAtual"].update(contact)
    hr.respond_with(200, answer)
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])
    (run,) = (await get(client, "/api/v1/flows/fine/runs"))["items"]
    assert run["status"] == "succeeded", run
    return run["steps"][-1]


# -- a phone with letters -------------------------------------------------------------------


async def test_a_channel_test_to_a_phone_with_letters_fails_and_sends_nothing(
    client: Client,
) -> None:
    """ "(11) 98765-4321 r. 5" was sent to 119876543215, a North American number: its letters
    were dropped and the extension's digit joined the number."""
    async with running_partner() as sms:
        sms.respond_with(200, {"id": "zv-1"})
        await sms_channel(client, sms.url)
        for written in WITH_LETTERS:
            result = await post(client, "/api/v1/channels/sms/test", {"to": written}, status=200)
            assert result["result"] == "fail", (written, result)
            assert "is not a phone number" in result["detail"], result
        assert sms.requests == []
        ok = await post(client, "/api/v1/channels/sms/test", {"to": "(11) 98765-4321"}, status=200)
        assert ok["result"] == "success", ok
        assert [r.json()["to"] for r in sms.requests] == ["5511987654321"]


@pytest.mark.parametrize("celular", WITH_LETTERS[:2])
async def test_a_fetched_phone_with_an_extension_fails_its_delivery(
    client: Client, celular: str
) -> None:
    async with running_partner() as hr, running_partner() as sms:
        sms.respond_with(200, {"id": "zv-1"})
        await sms_channel(client, sms.url)
        fines = await _hr_flow(client, hr, "sms")
        await post(client, "/api/v1/entities/driver", {**ANA, "phone": ANA_PHONE})
        step = await _hr_answers(client, hr, fines, celular=celular)
        assert step["outcome"] == "queued", step
        assert sms.requests == []
        (failed,) = (await get(client, "/api/v1/deliveries?status=failed"))["items"]
        assert "is not a phone number" in failed["last_error"], failed


async def test_a_fixed_phone_with_letters_is_refused_at_upload(client: Client) -> None:
    """Its every message failed (`is not a phone number`): the upload checks it as the SMS
    sender reads it."""
    async with running_partner() as sms:
        await sms_channel(client, sms.url)
        await _templates(client)
        recipients = [{"address": [WITH_LETTERS[0], "(11) 98765-4321"]}]
        notify = {"channel": "sms", "template": "fine-sms", "recipients": recipients}
        flow = {
            "name": "fixed",
            "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
            "steps": [{"id": "say", "notify": notify}],
        }
        response = await client.post("/api/v1/flows", json=flow, headers=auth())
        assert response.status == 422
        (problem,) = (await response.json())["errors"]
        assert problem["pointer"] == "/steps/0/notify/recipients/0/address/0"
        assert "is not a phone number" in problem["message"], problem
        del recipients[0]["address"][0]
        await post(client, "/api/v1/flows", flow)


async def test_a_driver_record_with_a_phone_with_letters_is_refused(client: Client) -> None:
    response = await client.post(
        "/api/v1/entities/driver", json={**ANA, "phone": WITH_LETTERS[0]}, headers=auth()
    )
    assert response.status == 422
    (problem,) = (await response.json())["errors"]
    assert problem["pointer"] == "/phone"


async def test_a_drivers_stored_phone_a_newer_rule_refuses_fails_its_sms_alone_saying_why(
    client: Client,
) -> None:
    """A phone the gateway stored before a stricter rule (`+551187654321`, an 8-digit mobile
    stored in E.164 before mobiles were checked) stays on the driver (a write leaving it is
    no 422: docs/entities.md). An SMS to it is that delivery's failure, with the reason
    recorded, and the step's other recipients are sent to."""
    async with running_partner() as hr, running_partner() as sms:
        sms.respond_with(200, {"id": "zv-1"})
        await sms_channel(client, sms.url)
        await hr_lookup(client, hr.url)
        await _templates(client)
        recipients = [{"driver": {"from": "steps.hr"}}, {"operators": {"role": "fleet"}}]
        flow = {
            "name": "fine",
            "on": {"events": ["fine.received"]},
            "steps": [
                {"id": "hr", "fetch": "hr-driver-lookup"},
                {
                    "id": "say",
                    "notify": {"channel": "sms", "template": "fine-sms", "recipients": recipients},
                },
            ],
        }
        await post(client, "/api/v1/flows", flow)
        await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
        fines = await trigger_for(client, "fine-feed", kind="fine")
        operator = {
            "name": "Op",
            "cpf": "39053344705",
            "email": "op@acme.com.br",
            "role": "fleet",
            "phone": ANA_PHONE,
        }
        await post(client, "/api/v1/entities/operator", operator)
        await post(client, "/api/v1/entities/driver", {**ANA, "phone": "+5511987654321"})
        entities = client.app[services_key].store.db["entities"]
        stored = {"type": "driver", "data.cpf": ANA["cpf"]}
        await entities.update_one(stored, {"$set": {"data.phone": "+551187654321"}})
        renamed = await client.patch(
            f"/api/v1/entities/driver/{ANA['cpf']}", json={"name": "Ana S."}, headers=auth()
        )
        assert renamed.status == 200, await renamed.text()
        step = await _hr_answers(client, hr, fines, celular="")  # the driver record's stands
        assert step["outcome"] == "queued", step
        assert [r.json()["to"] for r in sms.requests] == [ANA_PHONE[1:]]  # the operator's
        (failed,) = (await get(client, "/api/v1/deliveries?status=failed"))["items"]
        assert failed["last_error"].startswith("cannot build the SMS request: "), failed
        assert "an 8-digit mobile number" in failed["last_error"], failed


# -- a fetched contact that is not text ------------------------------------------------------


@pytest.mark.parametrize("celular", [11987654321, ["+5511987654321"]])
async def test_a_fetched_phone_that_is_not_text_gives_way_to_the_driver_records(
    client: Client, celular: Any
) -> None:
    """A number or a list where HR's phone goes used to reach nobody and say nothing."""
    async with running_partner() as hr, running_partner() as sms:
        sms.respond_with(200, {"id": "zv-1"})
        await sms_channel(client, sms.url)
        fines = await _hr_flow(client, hr, "sms")
        await post(client, "/api/v1/entities/driver", {**ANA, "phone": ANA_PHONE})
        step = await _hr_answers(client, hr, fines, celular=celular)
        assert step["outcome"] == "queued", step
        assert [r.json()["to"] for r in sms.requests] == [ANA_PHONE[1:]]
        (skipped,) = step["unreachable"]
        assert skipped["recipient"] == "driver Ana Souza"
        assert skipped["reason"].startswith("the fetched phone "), skipped
        assert "is not text" in skipped["reason"]
        assert skipped["reason"].endswith("the driver record's is used"), skipped


@pytest.mark.parametrize("email", [12345, ["ana@x.com"]])
async def test_a_fetched_email_that_is_not_text_gives_way_to_the_driver_records(
    client: Client, smtp_server: SmtpFactory, email: Any
) -> None:
    smtp = await smtp_server()
    async with running_partner() as hr:
        await email_channel(client, smtp.port)
        fines = await _hr_flow(client, hr, "email")
        await post(client, "/api/v1/entities/driver", {**ANA, "email": ANA_EMAIL})
        step = await _hr_answers(client, hr, fines, email=email)
        assert [m.recipients for m in smtp.received] == [[ANA_EMAIL]]
        (skipped,) = step["unreachable"]
        assert skipped["reason"].startswith("the fetched email "), skipped
        assert skipped["reason"].endswith("the driver record's is used"), skipped


async def test_a_fetched_email_that_is_not_text_without_a_stored_one_says_why_nobody(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    async with running_partner() as hr:
        await email_channel(client, smtp.port)
        fines = await _hr_flow(client, hr, "email")
        await post(client, "/api/v1/entities/driver", ANA)
        step = await _hr_answers(client, hr, fines, email=12345)
        assert step["outcome"] == "nobody" and smtp.received == []
        assert step["unreachable"] == [
            {
                "recipient": "driver Ana Souza",
                "reason": "the fetched email 12345 is not text (a number): "
                "driver Ana Souza has no other",
            }
        ]


# -- operators with a role -------------------------------------------------------------------


def _cpf(n: int) -> str:
    digits = [int(c) for c in f"{n:09d}"]
    for _ in range(2):
        total = sum(v * w for v, w in zip(digits, range(len(digits) + 1, 1, -1), strict=True))
        digits.append(total * 10 % 11 % 10)
    return "".join(map(str, digits))


async def _operators_flow(client: Client, port: int, inactive: int, active: int) -> None:
    await email_channel(client, port)
    await _templates(client)
    notify = {
        "channel": "email",
        "template": "fine-email",
        "recipients": [{"operators": {"role": "fleet_manager"}}],
    }
    flow = {
        "name": "managers",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
        "steps": [{"id": "say", "notify": notify}],
    }
    await post(client, "/api/v1/flows", flow)
    for i in range(inactive + active):
        operator = {
            "name": f"Op {i}",
            "cpf": _cpf(100_000_000 + i * 7),
            "email": f"op{i}@acme.com.br",
            "role": "fleet_manager",
        }
        if i < inactive:
            operator["status"] = "inactive"
        elif i % 2:
            operator["status"] = "active"  # unset is active too
        await post(client, "/api/v1/entities/operator", operator)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(client.app[services_key])


async def test_every_active_operator_with_the_role_is_reached_past_inactive_ones(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """The first 50 operators with the role were read, and only then the inactive dropped:
    50 inactive ones hid every active one ("no active operator has role ...")."""
    smtp = await smtp_server()
    await _operators_flow(client, smtp.port, inactive=52, active=53)
    (run,) = (await get(client, "/api/v1/flows/managers/runs"))["items"]
    (step,) = run["steps"]
    assert step["outcome"] == "queued" and step["unreachable"] == [], step
    got = sorted(r for m in smtp.received for r in m.recipients)
    assert got == sorted(f"op{i}@acme.com.br" for i in range(52, 105))


async def test_operators_past_the_bound_are_named_in_the_step(
    client: Client, smtp_server: SmtpFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recipients, "MAX_OPERATORS", 3)
    smtp = await smtp_server()
    await _operators_flow(client, smtp.port, inactive=2, active=4)
    (run,) = (await get(client, "/api/v1/flows/managers/runs"))["items"]
    (step,) = run["steps"]
    assert sorted(r for m in smtp.received for r in m.recipients) == [
        "op2@acme.com.br",
        "op3@acme.com.br",
        "op4@acme.com.br",
    ]
    assert step["unreachable"] == [
        {
            "recipient": "operators fleet_manager",
            "reason": "more than 3 active operators have role fleet_manager: "
            "the 3 oldest are sent to, the others are not",
        }
    ]
