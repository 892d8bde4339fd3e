"""An SMS goes to its provider through the channel's action, so it carries Standard Webhooks
headers signed with the action's secret, as the action's proxy calls and schedules' pages do
(SPEC §5): `webhook-id` the notification delivery's id, the same on its retries, and the body
as the mapping built it. A push goes to Google's FCM API, not through an action: unsigned,
authenticated by OAuth. The provider doubles check the headers as a receiver would
(`partner_double.signed_by`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.fcm_double import Fcm, fcm
from tests.flow_support import add_template, drain, get, push_channel, sms_channel
from tests.partner_double import (
    FakeClock,
    Partner,
    Recorded,
    create_action,
    create_partner,
    partner,
    post,
    signed_by,
    upload_mapping,
)

__all__ = ["fcm", "partner"]  # the fixtures
Client = TestClient[Any, Any]
MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
SIGNED = ("webhook-id", "webhook-timestamp", "webhook-signature")
TWILIO_PATH = "/2010-04-01/Accounts/AC0123/Messages.json"


async def _twilio_channel(client: Client, partner: Partner) -> dict[str, Any]:
    """Channel `sms` through a Twilio-shaped provider (a form-encoded body); its action."""
    await upload_mapping(client, (MAPPINGS / "sms-twilio.yaml").read_text())
    basic = {"type": "basic", "username": "AC0123", "password": "twilio-token"}
    twilio = await create_partner(client, partner.url, name="twilio", auth=basic)
    action = await create_action(
        client, twilio["id"], name="sms-twilio", path=TWILIO_PATH, request_mapping="sms-twilio"
    )
    channel = {"name": "sms", "type": "sms", "action_id": action["id"], "from": "+15005550006"}
    await post(client, "/api/v1/channels", channel)
    return action


async def _test_send(client: Client, channel: str, to: str) -> None:
    result = await post(client, f"/api/v1/channels/{channel}/test", {"to": to}, status=200)
    assert result["result"] == "success", result


def _recent(sent: Recorded) -> bool:
    return abs(int(sent.headers["webhook-timestamp"]) - time.time()) < 60


async def test_an_sms_is_signed_with_its_actions_secret_and_keeps_its_webhook_id_on_retry(
    client: Client, partner: Partner
) -> None:
    """An SMS delivery went out unsigned, though it goes through an action as a proxy call
    does: its provider (or the partner behind the action) could not tell it from a forged
    one. Each attempt is signed over the bytes sent, with the same `webhook-id` (the
    delivery's id, its `Idempotency-Key` too) on the retry after a 503."""
    action = await sms_channel(client, partner.url)
    await add_template(client, "maintenance-due-sms")
    notify = {
        "channel": "sms",
        "template": "maintenance-due-sms",
        "recipients": [{"address": "+5511987654321"}],
    }
    flow = {
        "name": "s",
        "on": {"events": ["entity.created"]},
        "steps": [{"id": "sms", "notify": notify}],
    }
    await post(client, "/api/v1/flows", flow)
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    partner.respond_with(200, {"id": "zenvia-1"})
    partner.respond_with(503, {}, times=1)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(services)
    clock.advance(10)
    await drain(services)

    failed, retried = partner.requests
    (delivered,) = (await get(client, "/api/v1/deliveries?status=succeeded"))["items"]
    for sent in (failed, retried):
        assert signed_by(action["secret"], sent.headers, sent.body)
        assert _recent(sent)
        assert sent.headers["webhook-id"] == sent.headers["Idempotency-Key"] == delivered["id"]
    assert len(failed.headers["webhook-signature"].split()) == 1
    # Headers only: the provider's body as the mapping built it, the same on the retry.
    assert failed.body == retried.body
    assert failed.json()["to"] == "5511987654321" and failed.json()["from"] == "RABBOT"
    assert failed.headers["X-API-TOKEN"] == "z"


async def test_a_form_encoded_sms_is_signed_over_its_bytes_and_a_test_send_gets_a_fresh_id(
    client: Client, partner: Partner
) -> None:
    """Twilio's form body is signed as sent; a channel's test send is no delivery (no key):
    each gets a fresh `<action id>:<id>`, and no `Idempotency-Key`."""
    action = await _twilio_channel(client, partner)
    partner.respond_with(201, {"sid": "SM123", "status": "queued"})
    await _test_send(client, "sms", "+55 11 98765-4321")
    await _test_send(client, "sms", "+55 11 98765-4321")

    first, second = partner.requests
    for sent in (first, second):
        assert signed_by(action["secret"], sent.headers, sent.body) and _recent(sent)
        assert sent.headers["webhook-id"].startswith(f"{action['id']}:")
        assert "Idempotency-Key" not in sent.headers
        assert dict(parse_qsl(sent.body.decode())) == {
            "To": "+5511987654321",
            "From": "+15005550006",
            "Body": "Rabbot: este canal funciona. / This channel works.",
        }
    assert first.headers["webhook-id"] != second.headers["webhook-id"]


async def test_an_sms_action_without_a_secret_gets_one_at_its_first_send_and_rotates(
    client: Client, partner: Partner
) -> None:
    """An action stored before actions had secrets gets one at its first signed request, an
    SMS's as a proxy call's; the admin obtains it by rotating, and for 24 h after that both
    secrets sign."""
    action = await _twilio_channel(client, partner)
    services = client.app[services_key]
    actions = services.store.db["actions"]
    await actions.update_one({}, {"$unset": {"signing": ""}})
    services.catalog.forget(action["id"])
    partner.respond_with(201, {"sid": "SM123", "status": "queued"})
    await _test_send(client, "sms", "+55 11 98765-4321")
    rotated = await post(client, f"/api/v1/actions/{action['id']}/rotate-secret", {}, status=200)
    await _test_send(client, "sms", "+55 11 98765-4321")

    before, after = partner.requests
    assert set(SIGNED) <= set(before.headers)
    assert not signed_by(action["secret"], before.headers, before.body)
    assert (await actions.find_one({}) or {}).get("signing")
    assert len(after.headers["webhook-signature"].split()) == 2  # the first one's, the new
    assert signed_by(rotated["secret"], after.headers, after.body)


async def test_a_push_goes_to_fcm_unsigned_authenticated_by_oauth(client: Client, fcm: Fcm) -> None:
    """FCM is Google's API, reached with the tenant's service account, not through an action:
    no action secret signs it and Google checks no Standard Webhooks headers."""
    await push_channel(client, fcm)
    await _test_send(client, "push", "device-token-1")

    (headers,) = fcm.headers
    assert not {h.lower() for h in headers} & set(SIGNED)
    assert headers["Authorization"] == f"Bearer {fcm.tokens_issued[-1]}"
