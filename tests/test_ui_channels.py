"""Channel pages over HTTP: a test send through a real SMTP server, editing a channel from
its document (the write-only password kept), the tenant's notification settings; problems
next to their fields with what was typed, a viewer changes and sends nothing, another
tenant's channel is a 404, markup stays text."""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.services import Services
from tests.flow_support import email_channel
from tests.partner_double import post
from tests.smtp_double import HOST, SmtpDouble, SmtpFactory, self_signed, smtp_server
from tests.support import auth
from tests.ui_support import ALERT_TEMPLATE, Client, csrf, log_in, make_user

__all__ = ["smtp_server"]  # the fixture


def _channel(double: SmtpDouble, **smtp: Any) -> dict[str, Any]:
    return {
        "name": "email",
        "type": "email",
        "description": "<b>Alertas</b><script>window.pwned=1</script>",
        "smtp": {"host": HOST, "port": double.port, "security": "none", **smtp},
        "from": "Frota Acme <alertas@acme.com.br>",
    }


async def _settings(client: Client, tenant: str = "acme") -> dict[str, Any]:
    response = await client.get("/api/v1/notification-settings", headers=auth(tenant))
    settings: dict[str, Any] = await response.json()
    return settings


async def test_a_test_send_goes_out_now_and_shows_its_result(
    client: Client, services: Services, smtp_server: SmtpFactory
) -> None:
    double = await smtp_server("plain")
    channel = await post(client, "/api/v1/channels", _channel(double))
    await make_user(services)
    await log_in(client)
    token = await csrf(client, f"/admin/channels/{channel['id']}")
    missing = await client.post(f"/admin/channels/{channel['id']}/test", data={"csrf": token})
    page = await missing.text()
    assert missing.status == 422 and 'data-field="to"' in page and double.received == []
    sent = await client.post(
        "/admin/channels/email/test", data={"csrf": token, "to": "ana@example.com.br"}
    )
    page = await sent.text()
    assert sent.status == 200, page
    assert 'data-testid="test-outcome"' in page and "enviada" in page
    assert 'value="ana@example.com.br"' in page
    (mail,) = double.received
    assert mail.recipients == ["ana@example.com.br"]
    assert mail.message["Subject"] == "Rabbot: mensagem de teste / test message"


async def test_a_channel_is_edited_from_its_document_and_keeps_its_password(
    client: Client, services: Services, smtp_server: SmtpFactory
) -> None:
    cert = self_signed()
    double = await smtp_server("starttls", logins={"frota": "s3nha"}, cert=cert)
    body = _channel(
        double, security="starttls", username="frota", password="s3nha", ca_certificate=cert.pem
    )
    channel = await post(client, "/api/v1/channels", body)
    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/channels/{channel['id']}")).text()
    form = page[page.index('data-testid="channel-edit"') :]
    assert "s3nha" not in page and "configured" not in form and "&#34;username&#34;" in form
    token = await csrf(client, f"/admin/channels/{channel['id']}")
    shown = {k: v for k, v in body.items() if k != "smtp"}
    smtp = {**body["smtp"], "timeout_seconds": 15}
    del smtp["password"]
    edited = {**shown, "smtp": smtp, "reply_to": "frota@acme.com.br"}
    saved = await client.post(
        f"/admin/channels/{channel['id']}/edit",
        data={"csrf": token, "document": json.dumps(edited)},
    )
    assert saved.status == 200 and "Canal salvo" in await saved.text()
    response = await client.get(f"/api/v1/channels/{channel['id']}", headers=auth())
    stored = await response.json()
    assert stored["reply_to"] == "frota@acme.com.br"
    assert stored["smtp"]["password"] == {"configured": True}
    test = await client.post(
        "/admin/channels/email/test", data={"csrf": token, "to": "ana@example.com.br"}
    )
    assert "enviada" in await test.text()
    (mail,) = double.received
    assert mail.login == "frota" and mail.message["Reply-To"] == "frota@acme.com.br"

    # A new server without its password: refused, the problem inside the document's field.
    moved = {**edited, "smtp": {**smtp, "host": "localhost"}}
    refused = await client.post(
        f"/admin/channels/{channel['id']}/edit",
        data={"csrf": token, "document": json.dumps(moved)},
    )
    page = await refused.text()
    assert refused.status == 422 and 'data-field="document"' in page
    assert "/smtp/password: username and password go together" in page
    malformed = await client.post(
        f"/admin/channels/{channel['id']}/edit", data={"csrf": token, "document": '{"name": '}
    )
    page = await malformed.text()
    assert malformed.status == 422 and "{&#34;name&#34;:</textarea>" in page
    response = await client.get(f"/api/v1/channels/{channel['id']}", headers=auth())
    assert (await response.json())["smtp"]["host"] == HOST


async def test_notification_settings_are_saved_and_problems_shown_by_field(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/notification-settings")).text()
    assert 'value="3600"' in page
    token = await csrf(client, "/admin/notification-settings")
    quiet = {
        "cooldown_seconds": "600",
        "quiet_hours.enabled": "on",
        "quiet_hours.start": "22:00",
        "quiet_hours.end": "06:30",
        "quiet_hours.timezone": "America/Manaus",
        "quiet_hours.during": "suppress",
    }
    data = [("csrf", token), *quiet.items(), ("quiet_hours.channels", "push")]
    data.append(("quiet_hours.channels", "sms"))
    saved = await client.post("/admin/notification-settings", data=data)
    assert saved.status == 200 and "Configurações salvas" in await saved.text()
    assert await _settings(client) == {
        "cooldown_seconds": 600,
        "quiet_hours": {
            "start": "22:00",
            "end": "06:30",
            "timezone": "America/Manaus",
            "during": "suppress",
            "channels": ["push", "sms"],
        },
    }
    typed = {**quiet, "quiet_hours.start": "25:00", "cooldown_seconds": "muito"}
    bad = [("csrf", token), *typed.items()]  # and no channel ticked
    refused = await client.post("/admin/notification-settings", data=bad)
    page = await refused.text()
    assert refused.status == 422
    for field in ("cooldown_seconds", "quiet_hours.start", "quiet_hours.channels"):
        assert f'data-field="{field}"' in page, field
    assert 'value="25:00"' in page and 'value="muito"' in page
    off = await client.post(
        "/admin/notification-settings", data={"csrf": token, "cooldown_seconds": "0"}
    )
    assert off.status == 200
    assert await _settings(client) == {"cooldown_seconds": 0, "quiet_hours": None}
    assert (await _settings(client, "globex"))["cooldown_seconds"] == 3600


async def test_a_checkbox_groups_problem_is_tied_to_each_of_its_checkboxes(
    client: Client, services: Services
) -> None:
    """Quiet hours with no channel ticked: the problem is read with every checkbox of the
    group (aria-invalid, aria-describedby naming it), as a field's is with the field."""
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/notification-settings")
    quiet = {
        "cooldown_seconds": "600",
        "quiet_hours.enabled": "on",
        "quiet_hours.start": "22:00",
        "quiet_hours.end": "06:30",
        "quiet_hours.timezone": "America/Sao_Paulo",
        "quiet_hours.during": "suppress",
    }
    refused = await client.post("/admin/notification-settings", data={"csrf": token, **quiet})
    page = await refused.text()
    assert refused.status == 422
    assert 'id="e-quiet_hours.channels" data-field="quiet_hours.channels"' in page
    boxes = re.findall(r'<input type="checkbox" name="quiet_hours\.channels"[^>]*>', page)
    assert len(boxes) >= 2, page
    for box in boxes:
        assert 'aria-invalid="true"' in box and 'aria-describedby="e-quiet_hours.channels"' in box
    # Without a problem, no checkbox says it is invalid.
    page = await (await client.get("/admin/notification-settings")).text()
    assert (
        "aria-invalid"
        not in page.split('name="quiet_hours.channels"', 1)[1].split("</fieldset>")[0]
    )


async def test_a_viewer_can_neither_send_nor_change(
    client: Client, services: Services, smtp_server: SmtpFactory
) -> None:
    double = await smtp_server("plain")
    channel = await post(client, "/api/v1/channels", _channel(double))
    await make_user(services, email="vera@acme.com.br", role="viewer")
    await log_in(client, email="vera@acme.com.br")
    page = await (await client.get(f"/admin/channels/{channel['id']}")).text()
    assert 'data-testid="channel-test"' not in page and 'data-testid="channel-edit"' not in page
    token = await csrf(client, "/admin/")
    base = f"/admin/channels/{channel['id']}"
    for path, data in (
        (f"{base}/test", {"to": "ana@example.com.br"}),
        (f"{base}/edit", {"document": '{"from": "x@y.com.br"}'}),
        ("/admin/notification-settings", {"cooldown_seconds": "1"}),
    ):
        response = await client.post(path, data={"csrf": token, **data})
        assert response.status == 403, path
    assert double.received == []
    assert (await _settings(client))["cooldown_seconds"] == 3600


async def test_another_tenants_channel_is_not_found_and_sends_nothing(
    client: Client, services: Services, smtp_server: SmtpFactory
) -> None:
    double = await smtp_server("plain")
    theirs = await post(client, "/api/v1/channels", _channel(double), tenant="globex")
    await make_user(services)
    await log_in(client)
    base = f"/admin/channels/{theirs['id']}"
    response = await client.get(base)
    assert response.status == 404 and "alertas@acme" not in await response.text()
    token = await csrf(client)
    for path, data in (
        (f"{base}/test", {"to": "ana@example.com.br"}),
        (f"{base}/edit", {"document": '{"from": "x@y.com.br"}'}),
    ):
        assert (await client.post(path, data={"csrf": token, **data})).status == 404
    assert double.received == []


async def test_markup_in_a_channel_is_shown_as_text(
    client: Client, services: Services, smtp_server: SmtpFactory
) -> None:
    double = await smtp_server("plain")
    channel = await post(client, "/api/v1/channels", _channel(double))
    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/channels/{channel['id']}")).text()
    assert "<script>window.pwned" not in page and "<b>Alertas" not in page
    assert "&lt;b&gt;Alertas&lt;/b&gt;&lt;script&gt;" in page


async def test_a_test_send_offers_every_template_of_the_channels_type(
    client: Client, services: Services
) -> None:
    await make_user(services)
    channel = await email_channel(client)
    sms = {"name": "sms-aviso", "channel_type": "sms", "default_locale": "pt-BR"}
    sms["locales"] = {"pt-BR": {"text": "Aviso {{ entity.plate }}"}}
    await post(client, "/api/v1/templates", sms)
    for n in range(201):  # more than a list page holds
        await post(client, "/api/v1/templates", {**ALERT_TEMPLATE, "name": f"alerta-{n:03d}"})
    await log_in(client)
    page = await (await client.get(f"/admin/channels/{channel['id']}")).text()
    offered = re.findall(r'<option value="([^"]+)"', page)
    assert [name for name in offered if name.startswith("alerta-")] == [
        f"alerta-{n:03d}" for n in range(201)
    ]
    assert "sms-aviso" not in offered
