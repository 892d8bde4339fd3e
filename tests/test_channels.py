"""Notification channels: e-mail over SMTP, SMS through a provider's send API (Zenvia- and
Twilio-shaped mappings shipped), with write-only credentials and a test send."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    partner,
    post,
    upload_mapping,
)
from tests.smtp_double import HOST, SmtpDouble, SmtpFactory, self_signed, smtp_server
from tests.support import auth
from tests.test_templates import FINE_EMAIL

__all__ = ["partner", "smtp_server"]  # the fixtures

Client = TestClient[Any, Any]
MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
PHONE = "+55 11 98765-4321"


def _email_channel(double: SmtpDouble, **smtp: Any) -> dict[str, Any]:
    return {
        "name": "email",
        "type": "email",
        "smtp": {"host": HOST, "port": double.port, "security": "none", **smtp},
        "from": "Frota Acme <alertas@acme.com.br>",
        "reply_to": "frota@acme.com.br",
    }


async def test_an_email_channel_sends_a_rendered_template(
    client: Client, smtp_server: SmtpFactory
) -> None:
    double = await smtp_server("plain")
    await post(client, "/api/v1/channels", _email_channel(double))
    await post(client, "/api/v1/templates", FINE_EMAIL)
    result = await post(
        client,
        "/api/v1/channels/email/test",
        {"to": "ana.souza@example.com", "template": "fine-received"},
        status=200,
    )
    assert result["result"] == "success", result
    (got,) = double.received
    assert got.message["Subject"] == "Multa A123456789 - ABC1D23"
    assert got.part("plain").strip() == "Olá Ana Souza, multa de R$ 130,16 em 18/11/2026 13:45."
    assert got.part("html").strip() == "<p>Olá Ana Souza</p>"
    assert got.message["Reply-To"] == "frota@acme.com.br"


async def test_a_long_portuguese_subject_and_sender_arrive_as_previewed(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """The preview showed '… no fornecedor São João Peças', the reader got 'SãoJoão'; the
    channel's 'Transportadora São João Ltda' arrived 'São Jo ão'."""
    double = await smtp_server("plain")
    sender = '"Gestão de Frota — Transportadora São João Ltda, Filial Ribeirão Preto" <a@acme.com>'
    await post(client, "/api/v1/channels", {**_email_channel(double), "from": sender})
    subject = (
        "Manutenção do veículo {{ vehicle.plate }} vencida em {{ km|number }} km — agende a "
        "revisão no fornecedor {{ supplier }}"
    )
    sample = {"vehicle": {"plate": "ABC1D23"}, "km": 152340, "supplier": "São João Peças"}
    locales = {"pt-BR": {"subject": subject, "text": "Olá"}}
    template = {"name": "due", "channel_type": "email", "default_locale": "pt-BR"}
    await post(client, "/api/v1/templates", {**template, "locales": locales, "sample": sample})
    preview = await post(
        client, "/api/v1/templates/preview", {"template": "due", "locale": "pt-BR"}, status=200
    )
    assert preview["parts"]["subject"].endswith("no fornecedor São João Peças")
    test = {"to": "Conceição Guimarães São João <ana@example.com>", "template": "due"}
    result = await post(client, "/api/v1/channels/email/test", test, status=200)
    assert result["result"] == "success", result
    (got,) = double.received
    assert got.message["Subject"] == preview["parts"]["subject"]
    assert got.message["From"].addresses[0].display_name == sender.split('"')[1]
    assert got.message["To"].addresses[0].display_name == "Conceição Guimarães São João"


async def test_the_smtp_password_is_write_only_sealed_and_kept_on_change(
    client: Client, smtp_server: SmtpFactory
) -> None:
    cert = self_signed()
    double = await smtp_server("starttls", logins={"frota": "s3nha"}, cert=cert)
    body = _email_channel(
        double, security="starttls", username="frota", password="s3nha", ca_certificate=cert.pem
    )
    created = await post(client, "/api/v1/channels", body)
    assert created["smtp"]["password"] == {"configured": True}
    assert "s3nha" not in str(created)
    stored = await client.app[services_key].store.db["channels"].find_one({"name": "email"})
    assert stored is not None and "s3nha" not in str(stored)
    renamed = await client.patch(
        f"/api/v1/channels/{created['id']}", json={"reply_to": "outro@acme.com.br"}, headers=auth()
    )
    assert renamed.status == 200
    result = await post(client, "/api/v1/channels/email/test", {"to": "a@b.com.br"}, status=200)
    assert result["result"] == "success", result
    assert double.received[0].login == "frota" and double.received[0].tls


async def test_a_test_send_to_a_relay_slow_to_answer_the_message_answers_within_the_timeout(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """An admin waits on a test send: the relay's reply to the message's end gets the
    channel's `timeout_seconds` (1 s here), not the delivery worker's `data_timeout_seconds`
    (600 s by default): the answer says the outcome is unknown, the relay has the message."""
    double = await smtp_server("plain")
    double.data_delays = [15.0]
    await post(client, "/api/v1/channels", _email_channel(double, timeout_seconds=1))
    started = asyncio.get_running_loop().time()
    result = await post(client, "/api/v1/channels/email/test", {"to": "a@b.com.br"}, status=200)
    assert asyncio.get_running_loop().time() - started < 12  # not the relay's 15 s, nor 600 s
    assert result["result"] == "retry", result
    assert "relay may have it" in result["detail"]
    assert len(double.received) == 1


async def test_a_test_send_whose_smtp_password_is_damaged_is_a_named_secret_damaged_problem(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """The channel's stored SMTP password opens under no key, this process's key opens the
    key check: the test send answers `500 secret-damaged` naming the channel and its secret
    (never the password), and nothing is sent (it was a `500 internal`)."""
    double = await smtp_server("plain", logins={"alertas": "s3nha-de-teste"})
    body = _email_channel(
        double, username="alertas", password="s3nha-de-teste", cleartext_auth=True
    )
    created = await post(client, "/api/v1/channels", body)
    channels = client.app[services_key].store.db["channels"]
    stored = await channels.find_one({"name": "email"})
    sealed = stored["smtp_sealed"]
    altered = sealed[:60] + ("B" if sealed[60] == "A" else "A") + sealed[61:]
    await channels.update_one(
        {"_id": stored["_id"]}, {"$set": {"smtp_sealed": altered}, "$inc": {"rev": 1}}
    )
    response = await client.post(
        "/api/v1/channels/email/test", json={"to": "a@b.com.br"}, headers=auth()
    )
    problem = await response.json()
    assert (response.status, problem["type"]) == (
        500,
        "https://rabbot.dev/problems/secret-damaged",
    ), problem
    assert problem["detail"].startswith(f"stored secret damaged: channel 'email' ({created['id']})")
    assert "s3nha-de-teste" not in str(problem) and double.received == []


async def test_an_smtp_server_quoting_the_auth_it_refused_never_returns_the_password(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """A relay refusing AUTH with `535 ... failed for [<what it got>]` put the channel's
    write-only password into the test send's answer (and a notification's last_error)."""
    password = "CanarySmtpPassw0rd-987"
    double = await smtp_server("plain", logins={"alertas": "another"}, quote_auth=True)
    body = _email_channel(double, username="alertas", password=password, cleartext_auth=True)
    await post(client, "/api/v1/channels", body)
    result = await post(client, "/api/v1/channels/email/test", {"to": "a@b.com.br"}, status=200)
    assert result["result"] == "fail" and result["code"] == 535, result
    assert result["detail"].startswith("authentication failed: 535"), result
    assert "alertas [redacted]; [redacted]; [redacted]" in result["detail"], result
    plain = base64.b64encode(f"\0alertas\0{password}".encode()).decode()
    for secret in (password, plain, base64.b64encode(password.encode()).decode()):
        assert secret not in str(result)


async def test_bad_channels_are_refused_with_every_problem(client: Client) -> None:
    response = await client.post(
        "/api/v1/channels",
        json={
            "name": "mail",
            "type": "email",
            "smtp": {"host": "smtp example", "port": 70000, "security": "ssl", "username": "u"},
            "from": "not an address",
            "color": "blue",
        },
        headers=auth(),
    )
    assert response.status == 422
    assert {e["pointer"] for e in (await response.json())["errors"]} == {
        "/smtp/host",
        "/smtp/port",
        "/smtp/security",
        "/smtp/password",
        "/from",
        "/color",
    }
    unknown = await client.post(
        "/api/v1/channels",
        json={"name": "sms", "type": "sms", "action_id": "64b000000000000000000000", "from": "X"},
        headers=auth(),
    )
    assert (await unknown.json())["errors"][0]["pointer"] == "/action_id"
    fax = await client.post("/api/v1/channels", json={"name": "f", "type": "fax"}, headers=auth())
    assert (await fax.json())["errors"][0]["pointer"] == "/type"


async def _sms_channel(client: Client, partner: Partner, provider: str) -> None:
    await upload_mapping(client, (MAPPINGS / f"sms-{provider}.yaml").read_text())
    if provider == "zenvia":
        auth_body = {"type": "header", "name": "X-API-TOKEN", "value": "zenvia-token"}
        path, sender = "/v2/channels/sms/messages", "RABBOT"
    else:
        auth_body = {"type": "basic", "username": "AC0123", "password": "twilio-token"}
        path, sender = "/2010-04-01/Accounts/AC0123/Messages.json", "+15005550006"
    created = await create_partner(client, partner.url, name=provider, auth=auth_body)
    action = await create_action(
        client,
        created["id"],
        name=f"sms-{provider}",
        path=path,
        request_mapping=f"sms-{provider}",
    )
    await post(
        client,
        "/api/v1/channels",
        {"name": "sms", "type": "sms", "action_id": action["id"], "from": sender},
    )


async def test_a_bracketed_smtp_host_is_the_address_it_encloses(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """`[127.0.0.1]`, as mail configurations write an address literal, was accepted and kept
    with its brackets, which no name lookup takes: every message was retried for a day as a
    network error. The brackets are read as the host they enclose; what encloses no host, or
    opens a bracket it does not close, is refused."""
    double = await smtp_server()
    created = await post(client, "/api/v1/channels", _email_channel(double, host="[127.0.0.1]"))
    assert created["smtp"]["host"] == "127.0.0.1"
    result = await post(client, "/api/v1/channels/email/test", {"to": "a@b.com.br"}, status=200)
    assert result["result"] == "success", result
    for written, kept in (
        ("[2001:DB8::25]", "2001:db8::25"),
        ("[smtp.acme.com.br]", "smtp.acme.com.br"),
    ):
        response = await client.patch(
            "/api/v1/channels/email", json={"smtp": {"host": written}}, headers=auth()
        )
        assert response.status == 200, await response.text()
        assert (await response.json())["smtp"]["host"] == kept
    for written in ("[127.0.0.1", "[]", "[smtp example]"):
        response = await client.patch(
            "/api/v1/channels/email", json={"smtp": {"host": written}}, headers=auth()
        )
        assert response.status == 422, written
        assert (await response.json())["errors"][0]["pointer"] == "/smtp/host"


async def test_a_channel_stored_with_a_bracketed_host_before_they_were_read_sends(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """Stored as an earlier version kept it, `[127.0.0.1]`: read as the host it encloses."""
    double = await smtp_server()
    await post(client, "/api/v1/channels", _email_channel(double))
    channels = client.app[services_key].store.db["channels"]
    changed = await channels.update_one({"name": "email"}, {"$set": {"smtp.host": "[127.0.0.1]"}})
    assert changed.modified_count == 1
    result = await post(client, "/api/v1/channels/email/test", {"to": "a@b.com.br"}, status=200)
    assert result["result"] == "success", result


async def test_a_login_over_smtp_without_tls_is_refused_unless_the_channel_allows_it(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """`security: none` with a username and password sent the tenant's mail password in clear
    text (AUTH PLAIN/LOGIN is base64) to a relay that offered AUTH without TLS: refused,
    naming `/smtp/security`, unless the channel says so (`cleartext_auth: true`, for a relay
    on a network the tenant trusts)."""
    double = await smtp_server("plain", logins={"alertas": "s3nha"})
    body = _email_channel(double, username="alertas", password="s3nha")
    response = await client.post("/api/v1/channels", json=body, headers=auth())
    problem = await response.json()
    assert response.status == 422, problem
    [refused] = [p for p in problem["errors"] if p["pointer"] == "/smtp/security"]
    assert "without TLS" in refused["message"] and "cleartext_auth" in refused["message"]
    assert "s3nha" not in str(problem)
    body["smtp"]["cleartext_auth"] = True
    created = await post(client, "/api/v1/channels", body)
    assert created["smtp"]["cleartext_auth"] is True
    result = await post(client, "/api/v1/channels/email/test", {"to": "a@b.com.br"}, status=200)
    assert result["result"] == "success", result
    assert [m.login for m in double.received] == ["alertas"]


async def test_a_channel_stored_with_a_login_without_tls_loads_and_sends_nothing(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """A channel stored before such logins were refused still loads (listed, shown, edited):
    its sends fail, saying why and what to change, and the relay sees no password."""
    double = await smtp_server("plain", logins={"alertas": "s3nha"})
    body = _email_channel(double, username="alertas", password="s3nha", cleartext_auth=True)
    await post(client, "/api/v1/channels", body)
    channels = client.app[services_key].store.db["channels"]
    changed = await channels.update_one({"name": "email"}, {"$unset": {"smtp.cleartext_auth": ""}})
    assert changed.modified_count == 1
    shown = await client.get("/api/v1/channels/email", headers=auth())
    assert shown.status == 200 and "cleartext_auth" not in (await shown.json())["smtp"]
    result = await post(client, "/api/v1/channels/email/test", {"to": "a@b.com.br"}, status=200)
    assert result["result"] == "fail", result
    assert "without TLS" in result["detail"] and "cleartext_auth" in result["detail"], result
    assert double.received == []


async def test_a_channel_names_the_gateway_in_ehlo_as_a_relay_accepts(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """`smtp.helo`: a fully-qualified name or an address literal, said in EHLO; a single
    label (what relays checking HELO refuse) is refused, naming the field."""
    double = await smtp_server()
    for refused in ("localhost", "3f2a1b9c8d7e", "[not-an-ip]", "gw..acme.com"):
        body = _email_channel(double, helo=refused)
        response = await client.post("/api/v1/channels", json=body, headers=auth())
        problem = await response.json()
        assert response.status == 422, (refused, problem)
        assert [p["pointer"] for p in problem["errors"]] == ["/smtp/helo"], problem
    created = await post(client, "/api/v1/channels", _email_channel(double, helo="gw.acme.com.br"))
    assert created["smtp"]["helo"] == "gw.acme.com.br"
    result = await post(client, "/api/v1/channels/email/test", {"to": "a@b.com.br"}, status=200)
    assert result["result"] == "success", result
    assert [m.helo for m in double.received] == ["gw.acme.com.br"]


async def test_an_ehlo_address_literal_with_an_ipv6_zone_is_refused(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """An IPv6 zone (`%eth0`) is no part of an SMTP address literal (RFC 5321 §4.1.3): refused,
    naming the field. It was taken (Python's `ip_address` reads a zone), and one with a
    non-ASCII zone failed every send at EHLO, one with a `]` sent a malformed literal."""
    double = await smtp_server()
    for refused in ("[IPv6:fe80::1%eth0]", "[IPv6:fe80::1%é]", "[IPv6:fe80::1%a]b]"):
        body = _email_channel(double, helo=refused)
        response = await client.post("/api/v1/channels", json=body, headers=auth())
        problem = await response.json()
        assert response.status == 422, (refused, problem)
        assert [p["pointer"] for p in problem["errors"]] == ["/smtp/helo"], problem
    created = await post(
        client, "/api/v1/channels", _email_channel(double, helo="[IPv6:2001:db8::25]")
    )
    assert created["smtp"]["helo"] == "[IPv6:2001:db8::25]"


async def test_sms_through_a_zenvia_shaped_provider(client: Client, partner: Partner) -> None:
    await _sms_channel(client, partner, "zenvia")
    partner.respond_with(200, {"id": "zv-1"})
    result = await post(client, "/api/v1/channels/sms/test", {"to": PHONE}, status=200)
    assert result["result"] == "success" and result["provider_id"] == "zv-1"
    (request,) = partner.requests
    assert request.path == "/v2/channels/sms/messages"
    assert request.headers["X-API-TOKEN"] == "zenvia-token"
    assert request.json() == {
        "from": "RABBOT",
        "to": "5511987654321",
        "contents": [
            {"type": "text", "text": "Rabbot: este canal funciona. / This channel works."}
        ],
    }


async def test_sms_through_a_twilio_shaped_provider(client: Client, partner: Partner) -> None:
    await _sms_channel(client, partner, "twilio")
    partner.respond_with(201, {"sid": "SM123", "status": "queued"})
    result = await post(client, "/api/v1/channels/sms/test", {"to": PHONE}, status=200)
    assert result["result"] == "success" and result["provider_id"] == "SM123"
    (request,) = partner.requests
    assert request.path == "/2010-04-01/Accounts/AC0123/Messages.json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Authorization"].startswith("Basic ")
    assert dict(parse_qsl(request.body.decode())) == {
        "To": "+5511987654321",
        "From": "+15005550006",
        "Body": "Rabbot: este canal funciona. / This channel works.",
    }


async def test_provider_refusals_fail_and_throttling_retries(
    client: Client, partner: Partner
) -> None:
    await _sms_channel(client, partner, "twilio")
    partner.respond_with(400, {"code": 21211, "message": "The 'To' number is not valid."})
    refused = await post(client, "/api/v1/channels/sms/test", {"to": PHONE}, status=200)
    assert refused["result"] == "fail" and "21211" in refused["detail"]
    partner.respond_with(429, {}, headers={"Retry-After": "12"})
    throttled = await post(client, "/api/v1/channels/sms/test", {"to": PHONE}, status=200)
    assert throttled["result"] == "retry" and throttled["retry_after"] == 12


async def test_a_template_for_another_channel_type_is_refused(
    client: Client, partner: Partner
) -> None:
    await _sms_channel(client, partner, "zenvia")
    await post(client, "/api/v1/templates", FINE_EMAIL)
    response = await client.post(
        "/api/v1/channels/sms/test", json={"to": PHONE, "template": "fine-received"}, headers=auth()
    )
    assert response.status == 422
    assert (await response.json())["errors"][0]["pointer"] == "/template"


async def test_notification_settings_are_stored_per_tenant(client: Client) -> None:
    default = await (await client.get("/api/v1/notification-settings", headers=auth())).json()
    assert default == {"cooldown_seconds": 3600, "quiet_hours": None}
    body = {"cooldown_seconds": 600, "quiet_hours": {"start": "22:00", "end": "07:00"}}
    response = await client.put("/api/v1/notification-settings", json=body, headers=auth())
    saved = await response.json()
    assert response.status == 200 and saved["quiet_hours"]["timezone"] == "America/Sao_Paulo"
    again = await (await client.get("/api/v1/notification-settings", headers=auth())).json()
    assert again == saved
    other = await (await client.get("/api/v1/notification-settings", headers=auth("other"))).json()
    assert other["cooldown_seconds"] == 3600
    bad = await client.put(
        "/api/v1/notification-settings", json={"cooldown_seconds": "1h"}, headers=auth()
    )
    assert bad.status == 422


async def test_a_phone_in_local_brazilian_format_reaches_the_provider_in_e164(
    client: Client, partner: Partner
) -> None:
    """A driver's phone as people write it in Brazil, "(11) 98765-4321", is the São Paulo
    mobile +55 11 98765-4321: Twilio must not get +11987654321 (a North American number),
    nor Zenvia 11987654321 (no country code)."""
    await _sms_channel(client, partner, "twilio")
    partner.respond_with(201, {"sid": "SM1"})
    for written in ("(11) 98765-4321", "011 98765-4321", "0 21 11 98765-4321", PHONE):
        result = await post(client, "/api/v1/channels/sms/test", {"to": written}, status=200)
        assert result["result"] == "success", (written, result)
    sent = [dict(parse_qsl(r.body.decode()))["To"] for r in partner.requests]
    assert sent == ["+5511987654321"] * 4


async def test_a_phone_without_its_area_code_is_not_sent_anywhere(
    client: Client, partner: Partner
) -> None:
    await _sms_channel(client, partner, "zenvia")
    partner.respond_with(200, {"id": "zv-1"})
    ok = await post(client, "/api/v1/channels/sms/test", {"to": "(11) 98765-4321"}, status=200)
    assert ok["result"] == "success", ok
    assert partner.requests[0].json()["to"] == "5511987654321"
    local = await post(client, "/api/v1/channels/sms/test", {"to": "98765-4321"}, status=200)
    assert local["result"] == "fail" and "area code" in local["detail"], local
    assert len(partner.requests) == 1


async def test_a_toll_free_number_takes_no_sms(client: Client, partner: Partner) -> None:
    """0800 and 4004 numbers are phones (a supplier's contact), but no SMS reaches one."""
    await _sms_channel(client, partner, "zenvia")
    for written in ("0800 727 0800", "4004-0001"):
        result = await post(client, "/api/v1/channels/sms/test", {"to": written}, status=200)
        assert result["result"] == "fail" and "takes no SMS" in result["detail"], result
    assert partner.requests == []


async def test_a_phone_in_e164_without_its_plus_keeps_its_own_country(
    client: Client, partner: Partner
) -> None:
    """Providers and HR exports write E.164 without the "+" ("447911123456", Zenvia's own
    "5511987654321"): 12 digits or more already carry their country code, none is added and
    the number is not refused."""
    await _sms_channel(client, partner, "twilio")
    partner.respond_with(201, {"sid": "SM1"})
    for written in ("447911123456", "351 912 345 678", "5511987654321", "+44 7911 123456"):
        result = await post(client, "/api/v1/channels/sms/test", {"to": written}, status=200)
        assert result["result"] == "success", (written, result)
    sent = [dict(parse_qsl(r.body.decode()))["To"] for r in partner.requests]
    assert sent == ["+447911123456", "+351912345678", "+5511987654321", "+447911123456"]


async def test_a_trunk_zero_written_after_the_country_code_is_not_dialled(
    client: Client, partner: Partner
) -> None:
    """ "+44 (0)7911 123456" and "+55 (011) 98765-4321" are how people write a number for callers
    at home and abroad: from abroad the 0 is not dialled, and E.164 has none."""
    await _sms_channel(client, partner, "twilio")
    partner.respond_with(201, {"sid": "SM1"})
    for written in ("+44 (0)7911 123456", "+55 (011) 98765-4321", "+55 0 11 98765-4321"):
        result = await post(client, "/api/v1/channels/sms/test", {"to": written}, status=200)
        assert result["result"] == "success", (written, result)
    sent = [dict(parse_qsl(r.body.decode()))["To"] for r in partner.requests]
    assert sent == ["+447911123456", "+5511987654321", "+5511987654321"]


async def test_phone_spellings_people_paste_reach_the_number_and_extensions_reach_nobody(
    client: Client, partner: Partner
) -> None:
    """The trunk-and-carrier "0xx", a country code in parentheses, a dash pasted from a word
    processor and a `tel:` link are one number; digits after a number written the national
    way ("(11) 98765-4321 5") are an extension or a second number, never part of another
    country's number (+1 198 765 43215)."""
    await _sms_channel(client, partner, "twilio")
    partner.respond_with(201, {"sid": "SM1"})
    spellings = (
        "0xx11 98765-4321",
        "(0xx11) 98765-4321",
        "(+55) 11 98765-4321",
        "(+55 11) 98765-4321",
        "(11) 98765\u20134321",
        "tel:+5511987654321",
        "\u202a+55 11 98765-4321\u202c",  # as WhatsApp Web copies it
    )
    for written in spellings:
        result = await post(client, "/api/v1/channels/sms/test", {"to": written}, status=200)
        assert result["result"] == "success", (written, result)
    sent = [dict(parse_qsl(r.body.decode()))["To"] for r in partner.requests]
    assert sent == ["+5511987654321"] * len(spellings)
    extended = ("(11) 98765-4321 5", "(11) 3333-4444 22", "+55 11 98765-4321 5")
    extended += ("(11) 3456-7890 5", "3456-7890 12", "(55) 99123-4567 22", "98765-4321 0xx")
    for written in extended:
        result = await post(client, "/api/v1/channels/sms/test", {"to": written}, status=200)
        assert result["result"] == "fail", (written, result)
    assert len(partner.requests) == len(spellings)


async def test_a_test_send_whose_template_a_filter_cannot_render_answers_a_422(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """`dictsort` on the context's list raised AttributeError through the test send: a 500."""
    double = await smtp_server("plain")
    await post(client, "/api/v1/channels", _email_channel(double))
    await post(
        client,
        "/api/v1/templates",
        {
            "name": "t",
            "channel_type": "email",
            "default_locale": "en",
            "sample": {"extra": {"a": 1}},
            "locales": {"en": {"subject": "s", "text": "{{ extra|dictsort }}"}},
        },
    )
    response = await client.post(
        "/api/v1/channels/email/test",
        json={"to": "ana@example.com", "template": "t", "context": {"extra": [1]}},
        headers=auth(),
    )
    assert response.status == 422, await response.text()
    assert (await response.json())["errors"][0]["pointer"] == "/locales/en/text"
    assert double.received == []
