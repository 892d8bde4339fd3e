"""Notifications are deliveries: stored when the flow's step runs, sent by the delivery worker
with the tenant's quiet hours and the step's cooldown applied at send time, retried, listed,
replayable with the same Message-ID; what goes wrong is an outcome, never a lost run."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth.keyring import KeyRing
from gateway.auth.secretbox import SecretBox
from gateway.leased_loop import LeaseLost
from gateway.notify.settings import SettingsService
from gateway.web.state import services_key
from tests.fcm_double import Fcm, fcm
from tests.flow_support import drain, email_channel, get, push_channel, sms_channel
from tests.partner_double import FakeClock, Partner, create_partner, partner, post
from tests.smtp_double import SmtpFactory, smtp_server
from tests.support import SECRET_KEY, auth

__all__ = ["fcm", "partner", "smtp_server"]  # the fixtures

Client = TestClient[Any, Any]
ANA = {"name": "Ana Souza", "cpf": "52998224725"}
SAO_PAULO = ZoneInfo("America/Sao_Paulo")


async def _flow(client: Client, channel: str, recipients: list[Any], **notify: Any) -> None:
    """A vehicle is created → a message on `channel` (templates `hello-<type>`)."""
    await post(
        client,
        "/api/v1/flows",
        {
            "name": "hello",
            "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
            "steps": [
                {
                    "id": "say",
                    "notify": {
                        "channel": channel,
                        "template": f"hello-{channel}",
                        "recipients": recipients,
                        **notify,
                    },
                }
            ],
        },
    )


async def _templates(client: Client) -> None:
    for body in (
        {
            "name": "hello-email",
            "channel_type": "email",
            "default_locale": "en",
            "locales": {
                "en": {"subject": "New {{ entity.plate }}", "text": "Hi {{ recipient.name }}"}
            },
        },
        {
            "name": "hello-push",
            "channel_type": "push",
            "default_locale": "en",
            "locales": {"en": {"title": "New vehicle", "body": "{{ entity.plate }}"}},
        },
    ):
        await post(client, "/api/v1/templates", body)


async def _email_setup(client: Client, port: int, recipients: list[Any], **notify: Any) -> None:
    await email_channel(client, port)
    await _templates(client)
    await _flow(client, "email", recipients, **notify)


async def _push_setup(client: Client, fcm: Fcm, tokens: list[str]) -> None:
    await push_channel(client, fcm)
    await _templates(client)
    await post(client, "/api/v1/entities/driver", {**ANA, "push_tokens": tokens})
    await _flow(client, "push", [{"driver": {"from": '`{"cpf": "52998224725"}`'}}])


async def _vehicle(client: Client, plate: str = "ABC1D23") -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": plate})


async def _deliveries(client: Client, query: str = "") -> list[dict[str, Any]]:
    return list((await get(client, f"/api/v1/deliveries{query}"))["items"])


async def test_a_refused_recipient_fails_with_the_reason_and_a_replay_keeps_the_message_id(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    smtp.refuse["nobody@acme.com.br"] = "550 5.1.1 no such user"
    await _email_setup(client, smtp.port, [{"address": "nobody@acme.com.br"}])
    await _vehicle(client)
    services = client.app[services_key]
    await drain(services)

    (failed,) = await _deliveries(client, "?status=failed")
    assert failed["kind"] == "notification" and failed["attempt_count"] == 1
    assert "550" in failed["last_error"] and "no such user" in failed["last_error"]
    (run,) = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    assert run["status"] == "succeeded"  # the step stored the message; sending is the delivery's
    assert smtp.received == []

    del smtp.refuse["nobody@acme.com.br"]  # the mailbox exists now
    await post(client, f"/api/v1/deliveries/{failed['id']}/replay", {}, status=200)
    await drain(services)
    (mail,) = smtp.received
    stored = await services.store.db["deliveries"].find_one({"_id": failed["id"]})
    assert mail.message["Message-ID"] == stored["notification"]["message_id"]
    assert stored["status"] == "succeeded"


async def test_a_notify_step_rerun_after_the_upgrade_does_not_send_what_the_old_version_queued(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """The version before numbered a step's messages `<run>:<step>:<n>`; a step it queued
    but had not recorded (a rolling restart) ran again on the new version, whose address ids
    matched none of them: every recipient was sent the message twice. A step that finds its
    numbered deliveries queues nothing again."""
    smtp = await smtp_server()
    await _email_setup(client, smtp.port, [{"address": "marta@example.com"}])
    await _vehicle(client)
    services = client.app[services_key]
    await drain(services)
    (run,) = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    assert [r for m in smtp.received for r in m.recipients] == ["marta@example.com"]
    # What the previous version stored: the same delivery, numbered.
    deliveries = services.store.db["deliveries"]
    address_id = run["steps"][0]["messages"][0]["delivery"]
    doc = await deliveries.find_one({"_id": address_id})
    await deliveries.insert_one({**doc, "_id": address_id.rsplit(":", 1)[0] + ":0"})
    await deliveries.delete_one({"_id": address_id})
    # The runner stopped before recording the step: it runs again, on the new version.
    await services.store.db["flow_runs"].update_one(
        {"_id": run["id"]}, {"$set": {"status": "pending", "next_step": 0, "steps": []}}
    )
    await drain(services)
    assert [r for m in smtp.received for r in m.recipients] == ["marta@example.com"]
    (rerun,) = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    assert rerun["status"] == "succeeded"
    assert rerun["steps"][0]["note"].startswith("queued before an upgrade")
    assert await deliveries.count_documents({"run_id": run["id"]}) == 1


async def test_a_busy_mail_server_is_retried_on_the_schedule(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    smtp.refuse["ops@acme.com.br"] = "451 4.7.1 greylisted, try again later"
    await _email_setup(client, smtp.port, [{"address": "ops@acme.com.br"}])
    await _vehicle(client)
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    await drain(services)
    (waiting,) = await _deliveries(client, "?status=pending")
    assert waiting["attempt_count"] == 2 and "451" in waiting["last_error"]  # retried at once
    del smtp.refuse["ops@acme.com.br"]
    clock.advance(7)  # the schedule's second retry: 5 s (± 20%)
    await drain(services)
    assert [m.recipients for m in smtp.received] == [["ops@acme.com.br"]]


async def test_quiet_hours_hold_a_message_until_they_end_without_spending_an_attempt(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await _email_setup(client, smtp.port, [{"address": "ops@acme.com.br"}])
    now = datetime.now(SAO_PAULO)
    start, end = (
        (now - timedelta(hours=1)).strftime("%H:00"),
        (now + timedelta(hours=2)).strftime("%H:00"),
    )
    await client.put(
        "/api/v1/notification-settings",
        json={"quiet_hours": {"start": start, "end": end, "channels": ["email"]}},
        headers=auth(),
    )
    await _vehicle(client)
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    await drain(services)
    (held,) = await _deliveries(client, "?status=pending")
    assert held["attempt_count"] == 0 and held["last_error"].startswith("held: quiet hours")
    quiet_end = datetime.fromisoformat(held["next_attempt_at"])
    assert quiet_end.astimezone(SAO_PAULO).strftime("%H:%M") == end
    assert smtp.received == []
    clock.advance((quiet_end - datetime.now(UTC)).total_seconds() + 1)
    await drain(services)
    assert len(smtp.received) == 1


@pytest.mark.parametrize("change", ["lifted", "shortened"])
async def test_quiet_hours_changed_judge_again_what_they_held(
    client: Client, smtp_server: SmtpFactory, change: str
) -> None:
    """What quiet hours held waited for the end of the period as computed then (up to a
    night) after the admin lifted or shortened them: they are asked at send time, so a save
    of the settings makes what they held due, judged again under the new ones."""
    smtp = await smtp_server()
    await _email_setup(client, smtp.port, [{"address": "ops@acme.com.br"}])
    now = datetime.now(SAO_PAULO)

    def window(hours: int) -> dict[str, Any]:
        start, end = now - timedelta(hours=1), now + timedelta(hours=hours)
        return {"start": start.strftime("%H:00"), "end": end.strftime("%H:00")}

    async def put(quiet_hours: dict[str, Any] | None) -> None:
        body = {"quiet_hours": quiet_hours}
        response = await client.put("/api/v1/notification-settings", json=body, headers=auth())
        assert response.status == 200, await response.text()

    await put(window(3))
    await _vehicle(client)
    services = client.app[services_key]
    await drain(services)
    (held,) = await _deliveries(client, "?status=pending")
    assert held["last_error"].startswith("held: quiet hours") and smtp.received == []
    shorter = window(1)
    await put(None if change == "lifted" else shorter)
    await drain(services)
    again = await get(client, f"/api/v1/deliveries/{held['id']}")
    if change == "lifted":
        assert again["status"] == "succeeded" and len(smtp.received) == 1
        return
    assert again["status"] == "pending" and again["attempt_count"] == 0 and smtp.received == []
    new_end = datetime.fromisoformat(again["next_attempt_at"]).astimezone(SAO_PAULO)
    assert new_end.strftime("%H:%M") == shorter["end"]


async def test_a_settings_save_while_a_held_message_is_judged_still_releases_it(
    client: Client, smtp_server: SmtpFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The save's release makes due what is held, pending; a message in flight, judged under
    the old quiet hours while the admin lifted them, is written held after that release:
    the worker asks once it has written the hold whether the settings changed meanwhile."""
    smtp = await smtp_server()
    await _email_setup(client, smtp.port, [{"address": "ops@acme.com.br"}])
    now = datetime.now(SAO_PAULO)
    start, end = now - timedelta(hours=1), now + timedelta(hours=3)
    quiet = {"start": start.strftime("%H:00"), "end": end.strftime("%H:00")}
    body = {"quiet_hours": quiet}
    r = await client.put("/api/v1/notification-settings", json=body, headers=auth())
    assert r.status == 200
    services = client.app[services_key]
    read = SettingsService.read
    saved: list[int] = []

    async def read_then_admin_saves(self: SettingsService, tenant: str) -> Any:
        judged = await read(self, tenant)
        if not saved:  # the admin lifts quiet hours while the worker judges
            await self.put(tenant, {"quiet_hours": None}, "admin")
            saved.append(1)
        return judged

    monkeypatch.setattr(SettingsService, "read", read_then_admin_saves)
    await _vehicle(client)
    await drain(services)
    assert saved
    monkeypatch.setattr(SettingsService, "read", read)
    await drain(services)
    (delivery,) = await _deliveries(client)
    assert delivery["status"] == "succeeded", delivery
    assert len(smtp.received) == 1


async def test_quiet_hours_that_suppress_drop_the_message_as_suppressed(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await _email_setup(client, smtp.port, [{"address": "ops@acme.com.br"}])
    now = datetime.now(SAO_PAULO)
    window = {
        "start": (now - timedelta(hours=1)).strftime("%H:00"),
        "end": (now + timedelta(hours=2)).strftime("%H:00"),
        "during": "suppress",
    }
    await client.put("/api/v1/notification-settings", json={"quiet_hours": window}, headers=auth())
    await _vehicle(client)
    await drain(client.app[services_key])
    (dropped,) = await _deliveries(client, "?status=suppressed")
    assert dropped["last_error"].startswith("suppressed: quiet hours")
    assert dropped["attempt_count"] == 0 and smtp.received == []


async def test_a_cooldown_lets_every_message_of_one_alert_through_and_stops_the_next_alert(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await _email_setup(
        client,
        smtp.port,
        [{"address": ["ops@acme.com.br", "boss@acme.com.br"]}],
        cooldown={"key": "'new-vehicles'", "seconds": 600},
    )
    await _vehicle(client, "ABC1D23")
    await drain(client.app[services_key])
    await _vehicle(client, "BRA2E19")  # a second alert within ten minutes
    await drain(client.app[services_key])
    assert sorted(m.recipients[0] for m in smtp.received) == ["boss@acme.com.br", "ops@acme.com.br"]
    assert {m.message["Subject"] for m in smtp.received} == {"New ABC1D23"}
    assert len(await _deliveries(client, "?status=suppressed")) == 2


async def test_a_cooldown_counts_from_a_send_that_went_out_not_from_a_failed_one(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """The cooldown was noted before the send and kept when the send then failed: the next
    alert inside the cooldown was suppressed, and nobody was told of either."""
    smtp = await smtp_server()
    smtp.refuse["ops@acme.com.br"] = "550 5.2.2 mailbox full"
    await _email_setup(
        client,
        smtp.port,
        [{"address": "ops@acme.com.br"}],
        cooldown={"key": "'new-vehicles'", "seconds": 600},
    )
    await _vehicle(client, "ABC1D23")
    await drain(client.app[services_key])
    assert len(await _deliveries(client, "?status=failed")) == 1
    del smtp.refuse["ops@acme.com.br"]
    await _vehicle(client, "BRA2E19")  # the next two alerts, within the ten minutes:
    await _vehicle(client, "CAR3F40")  # one goes out, and the cooldown counts from it
    await drain(client.app[services_key])
    (mail,) = smtp.received
    assert mail.message["Subject"] in {"New BRA2E19", "New CAR3F40"}
    (dropped,) = await _deliveries(client, "?status=suppressed")
    assert dropped["last_error"].startswith("suppressed: cooldown")


async def test_a_cooldown_is_free_while_an_alert_waits_for_its_retry(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    smtp.refuse["ops@acme.com.br"] = "451 4.7.1 greylisted, try again later"
    await _email_setup(
        client,
        smtp.port,
        [{"address": "ops@acme.com.br"}],
        cooldown={"key": "'new-vehicles'", "seconds": 600},
    )
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    await _vehicle(client, "ABC1D23")
    await drain(services)
    del smtp.refuse["ops@acme.com.br"]
    await _vehicle(client, "BRA2E19")  # goes out at once; the retry then finds it noted
    await drain(services)
    clock.advance(7)
    await drain(services)
    assert [m.message["Subject"] for m in smtp.received] == ["New BRA2E19"]
    (dropped,) = await _deliveries(client, "?status=suppressed")
    assert dropped["attempt_count"] == 2 and "cooldown" in dropped["last_error"]


async def test_an_email_the_relay_may_have_taken_still_silences_the_next_alert(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """The relay takes the message and does not answer its end within the DATA timeout: the
    outcome is unknown, the e-mail is retried (at least once: a copy with the same Message-ID
    may arrive), and the alert counts as sent: the next alert inside the cooldown is
    suppressed. Before, the note was given back and every repeat went out too."""
    smtp = await smtp_server()
    smtp.data_delays = [3.0, 3.0]  # the first two attempts get no answer in time
    server = {"host": "127.0.0.1", "port": smtp.port, "security": "none"}
    server |= {"timeout_seconds": 1, "data_timeout_seconds": 1}
    channel = {"name": "email", "type": "email", "from": "Frota Acme <alertas@acme.com.br>"}
    await post(client, "/api/v1/channels", {**channel, "smtp": server})
    await _templates(client)
    await _flow(
        client,
        "email",
        [{"address": "ops@acme.com.br"}],
        cooldown={"key": "'new-vehicles'", "seconds": 600},
    )
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    await _vehicle(client, "ABC1D23")
    await drain(services)
    (waiting,) = await _deliveries(client, "?status=pending")
    assert "relay may have it" in waiting["last_error"]
    await _vehicle(client, "BRA2E19")  # a repeat inside the cooldown
    await drain(services)
    clock.advance(7)
    await drain(services)
    assert {m.message["Subject"] for m in smtp.received} == {"New ABC1D23"}
    assert len({m.message["Message-ID"] for m in smtp.received}) == 1
    (dropped,) = await _deliveries(client, "?status=suppressed")
    assert dropped["last_error"].startswith("suppressed: cooldown")
    assert len(await _deliveries(client, "?status=succeeded")) == 1


async def test_an_sms_the_provider_may_have_taken_still_silences_the_next_alert(
    client: Client, partner: Partner
) -> None:
    """The provider takes the request and answers after the partner's timeout: retried (the
    same Idempotency-Key), and the alert counts as sent: the repeat inside the cooldown is
    suppressed, not texted."""
    await sms_channel(client, partner.url, timeout_seconds=1)
    partner.respond_with(200, {"id": "z2"})
    partner.respond_with(200, {"id": "z1"}, delay=2.0, times=2)
    sms = {"en": {"text": "New {{ entity.plate }}"}}
    template = {"name": "hello-sms", "channel_type": "sms", "default_locale": "en"}
    await post(client, "/api/v1/templates", {**template, "locales": sms})
    await _flow(
        client,
        "sms",
        [{"address": "+5511987654321"}],
        cooldown={"key": "'new-vehicles'", "seconds": 600},
    )
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    await _vehicle(client, "ABC1D23")
    await drain(services)
    await _vehicle(client, "BRA2E19")  # a repeat inside the cooldown
    await drain(services)
    clock.advance(7)
    await drain(services)
    texts = [r.json()["contents"][0]["text"] for r in partner.requests]
    assert texts and set(texts) == {"New ABC1D23"}, texts
    (dropped,) = await _deliveries(client, "?status=suppressed")
    assert dropped["last_error"].startswith("suppressed: cooldown")


@pytest.mark.parametrize("lost", ["before_the_note", "while_the_send_waited"])
async def test_a_worker_that_lost_its_lease_leaves_no_cooldown_behind(
    client: Client, smtp_server: SmtpFactory, lost: str
) -> None:
    """Worker A claims an alert and pauses past its lease; worker B takes it over, its send
    fails and gives the cooldown back. A then wakes: it sends nothing, and must not leave a
    cooldown noted either (neither the one its pause let it write, nor one written before its
    lease was lost while the send waited), or the next alert is suppressed though none went out."""
    smtp = await smtp_server()
    smtp.refuse["ops@acme.com.br"] = "550 5.2.2 mailbox full"
    await _email_setup(
        client,
        smtp.port,
        [{"address": "ops@acme.com.br"}],
        cooldown={"key": "'new-vehicles'", "seconds": 600},
    )
    await _vehicle(client, "ABC1D23")
    services = client.app[services_key]
    await services.relay.run_until_idle()
    await services.flow_runner.run_until_idle()
    (doc,) = await services.store.db["deliveries"].find({}).to_list(None)
    await services.delivery_worker.run_until_idle()  # B: sent, refused, the note given back
    assert len(await _deliveries(client, "?status=failed")) == 1
    cooldowns = services.store.db["notify_cooldowns"]
    assert await cooldowns.count_documents({}) == 0
    checks = 0

    async def before_sending() -> None:  # A's lease check: lost at once, or at the request
        nonlocal checks
        checks += 1
        if lost == "before_the_note" or checks > 1:
            raise LeaseLost("delivery taken over")

    with pytest.raises(LeaseLost):
        await services.notify.notification_sender.send(doc, datetime.now(UTC), before_sending)
    assert await cooldowns.count_documents({}) == 0
    del smtp.refuse["ops@acme.com.br"]
    await _vehicle(client, "BRA2E19")
    await drain(services)
    assert [m.message["Subject"] for m in smtp.received] == ["New BRA2E19"]


async def test_a_cooldown_key_missing_on_the_event_does_not_silence_other_vehicles(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """A key that evaluates to null is no condition at all: it used to become the text "None",
    one key for every vehicle, so the first alert suppressed every other vehicle's."""
    smtp = await smtp_server()
    await _email_setup(
        client,
        smtp.port,
        [{"address": "ops@acme.com.br"}],
        cooldown={"key": "entity.attributes.alert_group", "seconds": 600},
    )
    await _vehicle(client, "ABC1D23")
    await _vehicle(client, "BRA2E19")
    await drain(client.app[services_key])
    assert sorted(m.message["Subject"] for m in smtp.received) == ["New ABC1D23", "New BRA2E19"]
    assert await _deliveries(client, "?status=suppressed") == []
    runs = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    assert {run["steps"][0]["cooldown_key"] for run in runs} == {None}
    assert all("is null" in run["steps"][0]["cooldown_note"] for run in runs)


async def test_a_fetched_email_naming_two_addresses_reaches_nobody(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """One notification is one recipient: a partner's answer whose e-mail is a list used to
    put every address in To and in the envelope, sending a driver's message to someone else."""
    smtp = await smtp_server()
    driver = '`{"name": "Ana", "email": "ana@example.com, leak@example.net"}`'
    await _email_setup(client, smtp.port, [{"driver": {"from": driver}}])
    await _vehicle(client)
    await drain(client.app[services_key])
    assert smtp.received == []
    (failed,) = await _deliveries(client, "?status=failed")
    assert "not one e-mail address" in failed["last_error"], failed


async def test_an_email_address_with_an_international_domain_is_sent_to_its_ascii_form(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    driver = '`{"name": "Ana", "email": "Ana Souza <ana@exämple.com.br>"}`'
    await _email_setup(client, smtp.port, [{"driver": {"from": driver}}])
    await _vehicle(client)
    await drain(client.app[services_key])
    (mail,) = smtp.received
    assert mail.recipients == ["ana@xn--exmple-cua.com.br"]
    assert mail.message["To"] == "Ana Souza <ana@xn--exmple-cua.com.br>"


async def test_a_message_sent_with_a_value_missing_names_it_on_the_run(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """A missing value prints as nothing (docs), a null too (it printed "None"); the dry run
    lists what was missing, and so does the run, so "o veículo  chegou" that went out can be
    traced to the typo or the absent field."""
    smtp = await smtp_server()
    await email_channel(client, smtp.port)
    await post(
        client,
        "/api/v1/templates",
        {
            "name": "hello-email",
            "channel_type": "email",
            "default_locale": "pt-BR",
            "locales": {
                "pt-BR": {
                    "subject": "Veículo {{ entity.plate }}",
                    "text": "Olá {{ recipient.name }}, o veículo {{ entity.placa }} chegou.",
                }
            },
        },
    )
    await _flow(client, "email", [{"address": "ops@acme.com.br"}])
    await _vehicle(client)
    await drain(client.app[services_key])
    (mail,) = smtp.received
    assert mail.message["Subject"] == "Veículo ABC1D23"
    assert mail.part("plain").strip() == "Olá , o veículo  chegou."
    (run,) = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    (message,) = run["steps"][0]["messages"]
    assert message["undefined"] == ["placa"], message  # recipient.name is null: no typo


_EXTRA_SORTED = {
    "name": "hello-email",
    "channel_type": "email",
    "default_locale": "en",
    # Valid on its sample, where `extra` is an object.
    "sample": {"entity": {"attributes": {"extra": {"a": 1}}}},
    "locales": {"en": {"subject": "s", "text": "{{ entity.attributes.extra|dictsort }}"}},
}


async def test_a_message_a_filter_cannot_render_on_this_data_fails_alone_and_the_run_ends(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """`dictsort` given a list raised AttributeError, which was no render failure: the step
    raised, and the run was tried again every lease for ever. The message is listed as failed
    to render (nothing is sent) and the run ends."""
    smtp = await smtp_server()
    await email_channel(client, smtp.port)
    await post(client, "/api/v1/templates", _EXTRA_SORTED)
    await _flow(client, "email", [{"address": "ops@acme.com.br"}])
    await post(
        client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "attributes": {"extra": [1]}}
    )
    await drain(client.app[services_key])
    (run,) = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    assert run["status"] == "succeeded", run
    step = run["steps"][0]
    assert step["outcome"] == "nobody"
    (message,) = step["messages"]
    assert message["outcome"] == "failed", message
    assert "'list' object has no attribute 'items'" in message["detail"]
    assert smtp.received == []


async def test_an_international_domain_with_sharp_s_is_not_sent_to_its_ss_namesake(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """IDNA 2003 (Python's "idna" codec) maps ß to ss: `straße.de` became `strasse.de`, another
    domain with another owner. Registries use IDNA 2008, which keeps the ß."""
    smtp = await smtp_server()
    driver = '`{"name": "Ana", "email": "ana@straße.de"}`'
    await _email_setup(client, smtp.port, [{"driver": {"from": driver}}])
    await _vehicle(client)
    await drain(client.app[services_key])
    (mail,) = smtp.received
    assert mail.recipients == ["ana@xn--strae-oqa.de"]


async def test_a_driver_without_an_email_is_listed_unreachable_and_the_run_goes_on(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await post(client, "/api/v1/entities/driver", ANA)
    await _email_setup(
        client,
        smtp.port,
        [{"driver": {"from": '`{"cpf": "52998224725"}`'}}, {"address": "ops@acme.com.br"}],
    )
    await _vehicle(client)
    await drain(client.app[services_key])
    (run,) = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    assert run["status"] == "succeeded"
    (step,) = run["steps"]
    assert step["unreachable"] == [
        {"recipient": "driver Ana Souza", "reason": "driver Ana Souza has no e-mail address"}
    ]
    assert [m["recipient"] for m in step["messages"]] == ["ops@acme.com.br"]
    assert [m.recipients for m in smtp.received] == [["ops@acme.com.br"]]


async def test_a_role_nobody_has_is_listed_unreachable(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await _email_setup(client, smtp.port, [{"operators": {"role": "fleet_manager"}}])
    await _vehicle(client)
    await drain(client.app[services_key])
    (run,) = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    (step,) = run["steps"]
    assert step["outcome"] == "nobody" and smtp.received == []
    (nobody,) = step["unreachable"]
    assert nobody == {
        "recipient": "operators fleet_manager",
        "reason": "no active operator has role fleet_manager",
    }


async def test_fcm_unregistered_fails_that_message_and_forgets_the_token(
    client: Client, fcm: Fcm
) -> None:
    await _push_setup(client, fcm, ["old-phone", "new-phone"])
    fcm.unregistered.add("old-phone")
    await _vehicle(client)
    await drain(client.app[services_key])
    assert [m["token"] for m in fcm.messages] == ["new-phone"]
    (failed,) = await _deliveries(client, "?status=failed")
    assert "UNREGISTERED" in failed["last_error"] and "token removed" in failed["last_error"]
    driver = await get(client, "/api/v1/entities/driver/52998224725")
    assert driver["push_tokens"] == ["new-phone"]


@pytest.mark.parametrize("driver_as", ["stored_before_the_phone_rule", "backlogged"])
async def test_fcm_unregistered_is_the_sends_outcome_whatever_the_token_removal_meets(
    client: Client, fcm: Fcm, driver_as: str
) -> None:
    """The removal re-validated the whole driver: one stored with an 8-digit mobile (refused
    since the phone rule) made the push `parked`, its attempt lost and its cooldown note kept,
    silencing the next alert; so did a driver whose events wait for the relay. The removal
    takes the token out of the list alone, and a removal that cannot be written now is noted
    on the outcome and tried again at the token's next UNREGISTERED answer."""
    await push_channel(client, fcm)
    await _templates(client)
    await post(client, "/api/v1/entities/driver", {**ANA, "push_tokens": ["old-phone"]})
    recipients = [{"driver": {"from": '`{"cpf": "52998224725"}`'}}]
    await _flow(client, "push", recipients, cooldown={"key": "'k'", "seconds": 3600})
    services = client.app[services_key]
    await drain(services)  # the driver's own event relayed
    entities = services.store.db["entities"]
    if driver_as == "backlogged":  # the relay lags: the driver's outbox has no room left
        await entities.update_one({"data.cpf": ANA["cpf"]}, {"$set": {"outbox_bytes": 2**24}})
    else:  # as a version before the phone rule stored it
        await entities.update_one(
            {"data.cpf": ANA["cpf"]}, {"$set": {"data.phone": "+551187654321"}}
        )
    fcm.unregistered.add("old-phone")
    await _vehicle(client, "ABC1D23")
    await drain(services)
    (failed,) = await _deliveries(client)
    assert failed["status"] == "failed" and failed["attempt_count"] == 1, failed
    assert await services.store.db["notify_cooldowns"].find_one({}) is None
    driver = await get(client, "/api/v1/entities/driver/52998224725")
    if driver_as == "stored_before_the_phone_rule":
        assert failed["last_error"].endswith("; token removed from driver"), failed
        assert "push_tokens" not in driver and driver["phone"] == "+551187654321"
        return
    assert "; token not removed from driver: events of this entity" in failed["last_error"]
    assert driver["push_tokens"] == ["old-phone"]
    await entities.update_one({"data.cpf": ANA["cpf"]}, {"$set": {"outbox_bytes": 0}})
    await _vehicle(client, "BRA2E19")  # the next alert, not silenced, removes it
    await drain(services)
    assert len(await _deliveries(client, "?status=failed")) == 2
    assert "push_tokens" not in await get(client, "/api/v1/entities/driver/52998224725")


async def test_the_driver_write_forgetting_a_refused_token_is_a_link_of_its_runs_chain(
    client: Client, fcm: Fcm
) -> None:
    """The driver's `entity.updated` that drops a token FCM refused a flow's notification
    carries the run and its depth + 1, as the run's own writes do: the loop guard counts it
    (a flow on driver updates that pushes to the driver is a chain like any other)."""
    await _push_setup(client, fcm, ["old-phone", "new-phone"])
    fcm.unregistered.add("old-phone")
    await _vehicle(client)
    await drain(client.app[services_key])
    (run,) = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    (channel,) = (await get(client, "/api/v1/channels"))["items"]
    events = (await get(client, "/api/v1/events?type=entity.updated"))["items"]
    (forgot,) = [e for e in events if e["entity"]["type"] == "driver"]
    assert forgot["origin"] == {
        "kind": "notification",
        "id": channel["id"],
        "reason": "fcm_unregistered",
        "run": run["id"],
        "depth": 1,
    }


async def test_fcm_throttling_is_retried_no_sooner_than_it_asks(client: Client, fcm: Fcm) -> None:
    await _push_setup(client, fcm, ["phone"])
    fcm.answer_next(429, {"Retry-After": "120"})
    await _vehicle(client)
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    await drain(services)
    (waiting,) = await _deliveries(client, "?status=pending")
    assert waiting["attempt_count"] == 1 and waiting["last_status"] == 429
    due = datetime.fromisoformat(waiting["next_attempt_at"])
    assert due - clock.now > timedelta(seconds=115)  # not the schedule's 5 s
    clock.advance(125)
    await drain(services)
    assert [m["token"] for m in fcm.messages] == ["phone"]


async def test_a_refused_service_account_fails_fast_and_sends_again_once_fixed(
    client: Client, fcm: Fcm
) -> None:
    """FCM's token exchange answering invalid_grant (a revoked or wrong key, a skewed clock)
    was retried for some 38 hours like a network error; the driver was told nothing."""
    await _push_setup(client, fcm, ["phone"])
    (partner,) = (await get(client, "/api/v1/partners"))["items"]
    right = fcm.service_account()
    revoked = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fcm.key, original = revoked, fcm.key  # the double now knows another key: ours is refused
    await _vehicle(client, "ABC1D23")
    await drain(client.app[services_key])
    (failed,) = await _deliveries(client, "?status=failed")
    assert failed["attempt_count"] == 1
    assert "credentials refused" in failed["last_error"] and "invalid_grant" in failed["last_error"]
    metrics = await (await client.get("/metrics")).text()
    assert f'gateway_partner_oauth_token_refusals_total{{partner="{partner["id"]}"}} 1.0' in metrics

    fcm.key = original  # the admin uploads a valid key: the next alert goes out
    fixed = await client.patch(
        f"/api/v1/partners/{partner['id']}",
        headers=auth(),
        json={"auth": {"type": "google_service_account", "service_account": right}},
    )
    assert fixed.status == 200
    await _vehicle(client, "BRA2E19")
    await drain(client.app[services_key])
    assert [m["notification"]["body"] for m in fcm.messages] == ["BRA2E19"]


async def test_a_push_through_a_disabled_partner_waits_unsent_until_it_is_enabled_again(
    client: Client, fcm: Fcm
) -> None:
    await _push_setup(client, fcm, ["phone"])
    (partner,) = (await get(client, "/api/v1/partners"))["items"]
    where = f"/api/v1/partners/{partner['id']}"
    disabled = await client.patch(where, headers=auth(), json={"status": "disabled"})
    assert disabled.status == 200
    await _vehicle(client)
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    await drain(services)
    (waiting,) = await _deliveries(client)
    clock.advance(3600)
    held_again = await services.delivery_worker.run_until_idle()  # held again, not tried
    sent_while_disabled = list(fcm.messages)
    enabled = await client.patch(where, headers=auth(), json={"status": "active"})
    assert enabled.status == 200
    flowed = await services.delivery_worker.run_until_idle()

    assert waiting["status"] == "pending" and waiting["attempt_count"] == 0
    assert waiting["partner_id"] == partner["id"]
    assert "partner FCM is disabled" in waiting["last_error"]
    assert held_again == Counter(deferred=1) and sent_while_disabled == []
    assert flowed == Counter(succeeded=1)
    assert [m["token"] for m in fcm.messages] == ["phone"]


async def test_a_push_held_for_a_disabled_partner_goes_through_the_partner_its_channel_names_now(
    client: Client, fcm: Fcm
) -> None:
    await _push_setup(client, fcm, ["phone"])
    (first,) = (await get(client, "/api/v1/partners"))["items"]
    where = f"/api/v1/partners/{first['id']}"
    assert (await client.patch(where, headers=auth(), json={"status": "disabled"})).status == 200
    await _vehicle(client)
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    await drain(services)
    (held,) = await _deliveries(client)
    second = await create_partner(
        client,
        fcm.url,
        name="FCM2",
        auth={"type": "google_service_account", "service_account": fcm.service_account()},
    )
    switch = {"partner_id": second["id"]}
    assert (await client.patch("/api/v1/channels/push", headers=auth(), json=switch)).status == 200
    clock.advance(61)  # the held push is tried again; its channel names the second partner
    sent = await services.delivery_worker.run_until_idle()

    assert held["partner_id"] == first["id"] and held["status"] == "pending"
    assert sent == Counter(succeeded=1)
    assert [m["token"] for m in fcm.messages] == ["phone"]


async def test_a_notify_step_repeated_after_a_crash_reaches_each_recipient_once(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """Messages were numbered by their place among the recipients: run again after a crash
    with a driver reported meanwhile, the driver's message took the manager's id (so it was
    "already stored") and the manager's took a new one: the manager got two e-mails, the
    driver none. Each recipient's message id is theirs (their address)."""
    smtp = await smtp_server()
    await email_channel(client, smtp.port)
    await _templates(client)
    await post(client, "/api/v1/entities/driver", {**ANA, "email": "ana@example.com"})
    manager = {"name": "Marta", "cpf": "11144477735", "email": "marta@example.com"}
    await post(client, "/api/v1/entities/operator", {**manager, "role": "fleet_manager"})
    await _flow(
        client,
        "email",
        [{"driver": {"vehicle": "entity.plate"}}, {"operators": {"role": "fleet_manager"}}],
    )
    await _vehicle(client)
    services = client.app[services_key]
    await drain(services)
    (run,) = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    assert [m["recipient"] for m in run["steps"][0]["messages"]] == ["Marta"]

    # The runner died before recording the step; HR reports Ana as the driver meanwhile; the
    # step runs again.
    await post(
        client,
        "/api/v1/entities/vehicle/ABC1D23/drivers",
        {"driver": ANA["cpf"], "start": "2026-01-01T00:00:00Z", "source": "hr"},
    )
    await services.store.db["flow_runs"].update_one(
        {"_id": run["id"]}, {"$set": {"status": "pending", "next_step": 0, "steps": []}}
    )
    await drain(services)
    (again,) = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    assert [m["recipient"] for m in again["steps"][0]["messages"]] == ["Ana Souza", "Marta"]
    assert (
        again["steps"][0]["messages"][1]["delivery"] == run["steps"][0]["messages"][0]["delivery"]
    )
    assert sorted(to for mail in smtp.received for to in mail.recipients) == [
        "ana@example.com",
        "marta@example.com",
    ]


# Stored secrets a notification needs that do not open (`keys.StoredSecrets`).

OTHER_KEY = "another-secret-key-of-another-host-0000000"


async def _damage(client: Client, collection: str, name: str, field: str) -> str:
    """The sealed `field` of the `name`d record altered (its bytes, not its key): its id."""
    records = client.app[services_key].store.db[collection]
    doc = await records.find_one({"name": name})
    sealed = doc[field]
    altered = sealed[:60] + ("B" if sealed[60] == "A" else "A") + sealed[61:]
    await records.update_one({"_id": doc["_id"]}, {"$set": {field: altered}, "$inc": {"rev": 1}})
    return str(doc["_id"])


async def _sealed_elsewhere(client: Client, collection: str, name: str, field: str) -> None:
    """A rotation under way that this process was not given: the others run
    `OTHER_KEY,SECRET_KEY`, sealed the key check under OTHER_KEY, and the record's secret was
    saved again through one of them."""
    services = client.app[services_key]
    rotated = SecretBox(KeyRing([OTHER_KEY, SECRET_KEY]))
    check = await services.store.key_check.sealed()
    assert await services.store.key_check.replace(check, rotated.rotate(check))
    records = services.store.db[collection]
    doc = await records.find_one({"name": name})
    await records.update_one(
        {"_id": doc["_id"]}, {"$set": {field: rotated.rotate(doc[field])}, "$inc": {"rev": 1}}
    )


async def _email_with_password(client: Client, port: int, password: str) -> None:
    """Channel `email` with an SMTP password, a flow mailing ops@acme.com.br."""
    smtp = {"host": "127.0.0.1", "port": port, "security": "none"}
    channel = {"name": "email", "type": "email", "from": "Frota Acme <alertas@acme.com.br>"}
    smtp |= {"username": "alerts", "password": password, "cleartext_auth": True}
    await post(client, "/api/v1/channels", {**channel, "smtp": smtp})
    await _templates(client)
    await _flow(client, "email", [{"address": "ops@acme.com.br"}])


async def _damaged_metric(client: Client) -> list[str]:
    metrics = await (await client.get("/metrics")).text()
    return [m for m in metrics.splitlines() if m.startswith("gateway_damaged_secrets_total{")]


async def test_a_push_whose_partner_secret_this_processs_key_lacks_is_handed_back_pending(
    client: Client, fcm: Fcm
) -> None:
    """A rolling restart mid-rotation: the FCM partner's credentials were saved again by a
    process with the new key, which this one lacks. The push is this process's problem, not
    the message's: pending, no attempt spent (it was failed for good)."""
    await _push_setup(client, fcm, ["tok-1"])
    await _sealed_elsewhere(client, "partners", "FCM", "auth_sealed")
    await _vehicle(client)
    done = await drain(client.app[services_key])
    (pending,) = await _deliveries(client)
    assert (pending["status"], pending["attempt_count"]) == ("pending", 0), pending
    assert done["key_refused"] >= 1 and fcm.messages == []
    assert await _damaged_metric(client) == []


async def test_a_push_whose_partner_secret_is_damaged_fails_named_logged_and_counted(
    client: Client, fcm: Fcm, caplog: pytest.LogCaptureFixture
) -> None:
    """This process's key opens the key check, the FCM partner's credentials open under no
    key: the push fails naming the partner and its secret, logged at ERROR, counted; its
    cooldown is given back (nothing was sent), so the next alert is not suppressed."""
    await push_channel(client, fcm)
    await _templates(client)
    await post(client, "/api/v1/entities/driver", {**ANA, "push_tokens": ["tok-1"]})
    driver = [{"driver": {"from": '`{"cpf": "52998224725"}`'}}]
    await _flow(client, "push", driver, cooldown={"key": "'new-vehicles'", "seconds": 600})
    pid = await _damage(client, "partners", "FCM", "auth_sealed")
    with caplog.at_level(logging.ERROR, logger="gateway.keys"):
        for plate in ("ABC1D23", "BRA2E19"):
            await _vehicle(client, plate)
            await drain(client.app[services_key])
    failed = await _deliveries(client, "?status=failed")
    assert len(failed) == 2 and await _deliveries(client, "?status=suppressed") == []
    for each in failed:
        assert each["last_error"].startswith(f"stored secret damaged: partner 'FCM' ({pid})")
        assert "save the secret again, then replay the delivery" in each["last_error"]
    assert [r.levelno for r in caplog.records if "stored secret damaged" in r.getMessage()] == [
        logging.ERROR
    ]
    assert await _damaged_metric(client) == [
        f'gateway_damaged_secrets_total{{secret="partner:{pid}:auth"}} 2.0'
    ]
    assert fcm.messages == []


async def test_a_flow_step_whose_channel_password_is_damaged_fails_the_run_naming_it(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """The notify step opens its channel (the SMTP password) before any message is stored:
    damaged, the run fails at that step naming the channel's secret, counted, at once (it
    was a fault, retried after a lease three times, "failed unexpectedly")."""
    smtp = await smtp_server()
    await _email_with_password(client, smtp.port, "smtp-pass-123")
    cid = await _damage(client, "channels", "email", "smtp_sealed")
    await _vehicle(client)
    done = await drain(client.app[services_key])
    (run,) = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    assert (run["status"], done["failed"]) == ("failed", 1), run
    assert run["last_error"].startswith("step 'say' stored secret damaged: channel 'email'")
    assert "save the secret again" in run["last_error"] and "smtp-pass-123" not in str(run)
    assert await _damaged_metric(client) == [
        f'gateway_damaged_secrets_total{{secret="channel:{cid}:smtp"}} 1.0'
    ]
    assert await _deliveries(client) == [] and smtp.received == []


async def test_a_flow_step_whose_channel_password_this_processs_key_lacks_is_handed_back(
    client: Client, smtp_server: SmtpFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The channel's password saved again by a process with a key this one lacks: the run
    is handed back pending, no fault counted, never failed, one error in the log however
    often it comes back (a warning at each hand-back until 2026-12-06); a process with the
    key runs it."""
    smtp = await smtp_server()
    await _email_with_password(client, smtp.port, "smtp-pass-123")
    await _sealed_elsewhere(client, "channels", "email", "smtp_sealed")
    await _vehicle(client)
    services = client.app[services_key]
    await services.relay.run_until_idle()
    runner = services.flow_runner
    with caplog.at_level(logging.WARNING, logger="gateway.flows.runner"):
        assert await runner.run_until_idle() == Counter(key_refused=1)
        runner.clock = lambda: datetime.now(UTC) + timedelta(seconds=600)  # its pause is over
        assert await runner.run_until_idle() == Counter(key_refused=1)
    logged = [r for r in caplog.records if r.name == "gateway.flows.runner"]
    assert [r.levelno for r in logged] == [logging.ERROR], [r.getMessage() for r in logged]
    assert "configuration error" in logged[0].getMessage()
    assert "GATEWAY_SECRET_KEY" in logged[0].getMessage()
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_flow_runs_total{outcome="key_refused"} 2.0' in metrics
    doc = await services.store.db["flow_runs"].find_one({})
    assert doc["status"] == "pending" and not doc.get("faults"), doc
    assert await _damaged_metric(client) == []
