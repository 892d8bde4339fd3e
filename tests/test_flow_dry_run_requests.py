"""The dry run's provider requests are the ones really sent, built by the same functions: the
FCM body with its `data`, the SMS request with its idempotency key (`Idempotency-Key` and
`message.id`), `<run id>` standing for the run's id, which the dry run does not make."""

from __future__ import annotations

import html
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from gateway.services import Services
from gateway.web.state import services_key
from tests.fcm_double import Fcm, fcm
from tests.flow_support import drain, get, push_channel
from tests.partner_double import (
    create_action,
    create_partner,
    post,
    running_partner,
    upload_mapping,
)
from tests.ui_support import form_fields, log_in, make_user, replaced

__all__ = ["fcm"]  # the fixture

Client = TestClient[Any, Any]
ANA = {"name": "Ana", "cpf": "52998224725", "push_tokens": ["tok-1"], "phone": "+5511987654321"}
# A provider whose API takes its deduplication key in the body: the mapping requires it.
SMS_WITH_ID = """
name: sms-with-id
direction: outbound
body:
  id: {from: message.id, required: true}
  from: {from: message.from, required: true}
  to: {from: message.to, required: true}
  text: {from: message.text, required: true}
"""
DRIVER = {"driver": {"from": '`{"cpf": "52998224725"}`'}}


async def _setup(client: Client, fcm: Fcm, sms_url: str) -> None:
    await push_channel(client, fcm)
    await upload_mapping(client, SMS_WITH_ID)
    provider = await create_partner(client, sms_url, name="sms-provider", auth={"type": "none"})
    action = await create_action(
        client, provider["id"], name="sms", path="/messages", request_mapping="sms-with-id"
    )
    channel = {"name": "sms", "type": "sms", "action_id": action["id"], "from": "RABBOT"}
    await post(client, "/api/v1/channels", channel)
    for name, channel_type, texts in (
        ("p", "push", {"title": "T", "body": "{{ entity.plate }}"}),
        ("s", "sms", {"text": "{{ entity.plate }}"}),
    ):
        template = {"name": name, "channel_type": channel_type, "locales": {"en": texts}}
        await post(client, "/api/v1/templates", {**template, "default_locale": "en"})
    await post(client, "/api/v1/entities/driver", ANA)
    steps = [
        {"id": "push", "notify": {"channel": "push", "template": "p", "recipients": [DRIVER]}},
        {"id": "text", "notify": {"channel": "sms", "template": "s", "recipients": [DRIVER]}},
    ]
    flow = {
        "name": "f",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
        "steps": steps,
    }
    await post(client, "/api/v1/flows", flow)


async def test_the_dry_runs_push_and_sms_requests_are_the_ones_sent(
    client: Client, fcm: Fcm
) -> None:
    """The dry run's FCM body had no `data`, and its SMS request neither key: a mapping that
    requires `message.id` passed the real send and failed the dry run."""
    async with running_partner() as sms:
        sms.respond_with(200, {"id": "zv-1"})
        await _setup(client, fcm, sms.url)
        event = {
            "type": "entity.created",
            "entity": {"type": "vehicle", "id": "x"},
            "data": {"plate": "ABC1D23"},
        }
        dry = await post(client, "/api/v1/flows/test", {"flow": "f", "event": event}, status=200)
        (push,), (text,) = (step["messages"] for step in dry["steps"])
        assert "error" not in text["request"], text
        await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
        await drain(client.app[services_key])
        (run,) = (await get(client, "/api/v1/flows/f/runs"))["items"]

        (sent_push,) = fcm.messages
        assert push["request"]["body"] == {"message": sent_push}
        assert sent_push["data"] == {"event": "entity.created", "plate": "ABC1D23"}

        (sent_sms,) = sms.requests
        key = run["steps"][1]["messages"][0]["delivery"]  # the delivery's id
        to = key.rpartition(":")[2]
        assert sent_sms.headers["Idempotency-Key"] == key == f"{run['id']}:text:{to}"
        shown = text["request"]
        assert shown["headers"]["Idempotency-Key"] == f"<run id>:text:{to}"
        assert shown["body"] == {**orjson.loads(sent_sms.body), "id": f"<run id>:text:{to}"}
        assert orjson.loads(sent_sms.body)["id"] == key
        assert "<run id> stands for the run's" in shown["note"]
        # Signed with the action's secrets when sent: the id shown as the run forms it.
        assert sent_sms.headers["webhook-id"] == key
        assert shown["headers"]["webhook-id"] == f"<run id>:text:{to}"
        assert shown["headers"]["webhook-signature"].startswith("<computed when sent")
        assert "action's secrets" in shown["note"]


# A vehicle is created → the HR system is asked (fetch), the ERP told (call).
ASK_AND_TELL = {
    "name": "ask-and-tell",
    "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
    "steps": [{"id": "hr", "fetch": "hr-lookup"}, {"id": "erp", "call": "erp-vehicle"}],
}
SIGNED = ("webhook-id", "webhook-timestamp", "webhook-signature")


async def _ask_and_tell(client: Client, url: str) -> None:
    erp = await create_partner(client, url, name="ERP", auth={"type": "none"})
    await create_action(client, erp["id"], name="hr-lookup", method="GET", path="/hr")
    await create_action(client, erp["id"], name="erp-vehicle", method="POST", path="/veiculos")
    await post(client, "/api/v1/flows", ASK_AND_TELL)


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


async def test_the_dry_run_shows_the_signed_headers_a_call_and_a_fetch_would_send(
    client: Client,
) -> None:
    """The dry run showed a call's and a fetch's body and URL, not the headers the run adds:
    `webhook-id` as the run forms it (`<run id>` standing for the run's), the delivery id as
    a call's `Idempotency-Key`, and the timestamp and signature marked as made at send time
    (no secret read, no signature computed)."""
    async with running_partner() as erp:
        erp.respond_with(200, {"ok": True})
        await _ask_and_tell(client, erp.url)
        event = {"type": "entity.created", "entity": {"type": "vehicle", "id": "x"}, "data": {}}
        dry = await post(
            client, "/api/v1/flows/test", {"flow": "ask-and-tell", "event": event}, status=200
        )
        await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
        await drain(client.app[services_key])
        (run,) = (await get(client, "/api/v1/flows/ask-and-tell/runs"))["items"]

    shown = {step["id"]: step["request"] for step in dry["steps"]}
    sent = {r.method: _lower(r.headers) for r in erp.requests}
    for step, method in (("hr", "GET"), ("erp", "POST")):
        headers = _lower(shown[step]["headers"])
        for name in SIGNED:
            assert name in headers and name in sent[method], (step, name)
        real = sent[method]["webhook-id"]
        assert real == f"{run['id']}:{step}"
        assert headers["webhook-id"] == f"<run id>:{step}"
        assert "computed when sent" in headers["webhook-signature"]
        assert "v1," not in headers["webhook-signature"]
        assert headers["webhook-timestamp"] != sent[method]["webhook-timestamp"]
        assert "<run id> stands for the run's" in shown[step]["note"]
    assert _lower(shown["erp"]["headers"])["idempotency-key"] == "<run id>:erp"
    assert sent["POST"]["idempotency-key"] == f"{run['id']}:erp"
    assert "idempotency-key" not in _lower(shown["hr"]["headers"])
    assert "whsec_" not in orjson.dumps(dry).decode()


async def test_the_flow_pages_dry_run_shows_the_signed_headers(
    client: Client, services: Services
) -> None:
    await _ask_and_tell(client, "http://127.0.0.1:19302")
    await make_user(services)
    await log_in(client)
    page = "/admin/flows/ask-and-tell"
    action = f"{page}/test"
    event = '{"type": "entity.created", "entity": {"type": "vehicle", "id": "x"}, "data": {}}'
    fields = replaced(form_fields(await (await client.get(page)).text(), action), event=event)
    answer = await client.post(action, data=fields)
    shown = html.unescape(await answer.text())
    assert answer.status == 200, shown
    for text in (*SIGNED, "Idempotency-Key", "<run id>:erp", "<run id>:hr", "computed when sent"):
        assert text in shown, text
    assert "whsec_" not in shown
