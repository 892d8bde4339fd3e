"""A template keeps the channel type of the flows that use it: changing it is refused while an
active flow names it (as activation refuses a template of the wrong type); a run pinned to a
version no longer active fails its step saying so; a message whose parts do not fit its
channel fails its delivery with the reason, never a crash."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.flow_support import drain, email_channel, get
from tests.partner_double import post
from tests.smtp_double import SmtpFactory, smtp_server
from tests.support import auth

__all__ = ["smtp_server"]  # the fixture

Client = TestClient[Any, Any]
HELLO = {
    "name": "hello",
    "channel_type": "email",
    "default_locale": "en",
    "locales": {"en": {"subject": "New {{ entity.plate }}", "text": "Hi"}},
}
HELLO_SMS = {**HELLO, "channel_type": "sms", "locales": {"en": {"text": "New {{ entity.plate }}"}}}


def _flow(template: str) -> dict[str, Any]:
    notify = {
        "channel": "email",
        "template": template,
        "recipients": [{"address": "ops@acme.com.br"}],
    }
    return {
        "name": "f",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
        "steps": [{"id": "say", "notify": notify}],
    }


async def _setup(client: Client, port: int) -> None:
    await email_channel(client, port)
    await post(client, "/api/v1/templates", HELLO)
    await post(client, "/api/v1/templates", {**HELLO, "name": "other"})
    await post(client, "/api/v1/flows", _flow("hello"))


async def test_a_template_an_active_flow_uses_keeps_its_channel_type(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """It was retyped to SMS with a 200; the next e-mail was parked with KeyError: 'subject'."""
    smtp = await smtp_server()
    await _setup(client, smtp.port)
    response = await client.put("/api/v1/templates/hello", json=HELLO_SMS, headers=auth())
    assert response.status == 409
    problem = await response.json()
    assert "flow f" in problem["detail"] and "channel_type stays email" in problem["detail"]
    assert [u["name"] for u in problem["used_by"]] == ["f"]
    assert (await get(client, "/api/v1/templates/hello"))["channel_type"] == "email"
    # Its text may change; the flow still sends.
    changed = {**HELLO, "locales": {"en": {"subject": "Novo {{ entity.plate }}", "text": "Oi"}}}
    response = await client.put("/api/v1/templates/hello", json=changed, headers=auth())
    assert response.status == 200
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(client.app[services_key])
    assert [m.message["Subject"] for m in smtp.received] == ["Novo ABC1D23"]
    # No longer used by an active flow, it may become an SMS template.
    await post(client, "/api/v1/flows", _flow("other"))
    response = await client.put("/api/v1/templates/hello", json=HELLO_SMS, headers=auth())
    assert response.status == 200, await response.text()


async def test_a_run_of_an_older_version_fails_its_step_when_its_template_was_retyped(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await _setup(client, smtp.port)
    services = client.app[services_key]
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await services.relay.run_until_idle()  # the run is stored, pinned to version 1
    await post(client, "/api/v1/flows", _flow("other"))  # version 2, active
    response = await client.put("/api/v1/templates/hello", json=HELLO_SMS, headers=auth())
    assert response.status == 200
    await drain(services)
    (run,) = (await get(client, "/api/v1/flows/f/runs"))["items"]
    assert run["status"] == "failed", run
    (step,) = run["steps"]
    assert step["outcome"] == "failed"
    assert step["detail"] == "template 'hello' is for sms, channel 'email' is email"
    assert smtp.received == []
    assert (await get(client, "/api/v1/deliveries"))["items"] == []
    event = {"type": "entity.created", "entity": {"type": "vehicle", "id": "x"}}
    dry = await post(
        client, "/api/v1/flows/test", {"flow": "f", "version": 1, "event": event}, status=200
    )
    (shown,) = dry["steps"]
    assert shown["outcome"] == "failed", shown  # it showed the SMS text as an e-mail
    assert shown["detail"] == step["detail"]


async def test_a_message_that_does_not_fit_its_channel_fails_with_the_reason(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """A delivery queued before a template was retyped (as the code before this fix let it)
    holds an SMS text for an e-mail channel: it fails saying so, it is not parked by a
    KeyError."""
    smtp = await smtp_server()
    await _setup(client, smtp.port)
    services = client.app[services_key]
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await services.relay.run_until_idle()
    await services.flow_runner.run_until_idle()  # the delivery is queued, not sent
    deliveries = services.store.db["deliveries"]
    changed = await deliveries.update_one(
        {"kind": "notification"}, {"$set": {"notification.parts": {"text": "New ABC1D23"}}}
    )
    assert changed.modified_count == 1
    await drain(services)
    assert smtp.received == []
    (failed,) = (await get(client, "/api/v1/deliveries?status=failed"))["items"]
    assert failed["last_error"] == (
        "the message does not fit channel email (email): it has no subject (it has text); "
        "was its template changed to another channel type?"
    )
