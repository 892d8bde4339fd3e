"""What a channel sends through stays fit for it: a change to an FCM partner's auth, or to an
SMS action's method or mapping, that the channel's own setup would refuse is refused while a
channel uses it (409 naming the channels), by the same check; other changes go through."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.fcm_double import Fcm, fcm
from tests.flow_support import get, push_channel, sms_channel
from tests.partner_double import create_partner, post, running_partner
from tests.support import auth

__all__ = ["fcm"]  # the fixture

Client = TestClient[Any, Any]


async def _patch(client: Client, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = await client.patch(path, json=body, headers=auth())
    return response.status, await response.json()


async def test_an_fcm_partner_a_push_channel_uses_keeps_its_service_account_auth(
    client: Client, fcm: Fcm
) -> None:
    """`auth: bearer` was accepted (200), and every push then failed with 401."""
    await push_channel(client, fcm)
    partner_id = (await get(client, "/api/v1/channels/push"))["partner_id"]
    path = f"/api/v1/partners/{partner_id}"
    status, problem = await _patch(client, path, {"auth": {"type": "bearer", "token": "t"}})
    assert status == 409, problem
    assert problem["detail"] == (
        "partner FCM is used by channel push, which needs it so: the partner's auth must be "
        "google_service_account (FCM's OAuth2 JWT grant)"
    )
    assert [u["name"] for u in problem["used_by"]] == ["push"]
    assert (await get(client, path))["auth"]["type"] == "google_service_account"
    status, changed = await _patch(client, path, {"timeout_seconds": 5})
    assert status == 200 and changed["timeout_seconds"] == 5
    sent = await post(client, "/api/v1/channels/push/test", {"to": "tok-1"}, status=200)
    assert sent["result"] == "success", sent
    # The same change is the channel setup's refusal, with the same words.
    other = await create_partner(client, fcm.url, name="not-fcm", auth={"type": "none"})
    body = {"name": "p2", "type": "push", "partner_id": other["id"], "project_id": "rabbot-test"}
    response = await client.post("/api/v1/channels", json=body, headers=auth())
    assert response.status == 422
    (refused,) = (await response.json())["errors"]
    assert refused["pointer"] == "/partner_id"
    assert problem["detail"].endswith(refused["message"])


async def test_an_sms_action_a_channel_uses_stays_a_post_or_put_with_its_mapping(
    client: Client,
) -> None:
    """`method: DELETE` was accepted, and the SMS then went out as a DELETE with a body."""
    async with running_partner() as sms:
        sms.respond_with(200, {"id": "zv-1"})
        await sms_channel(client, sms.url)
        action_id = (await get(client, "/api/v1/channels/sms"))["action_id"]
        path = f"/api/v1/actions/{action_id}"
        for change in ({"method": "DELETE"}, {"method": "GET"}, {"request_mapping": None}):
            status, problem = await _patch(client, path, change)
            assert status == 409, (change, problem)
            assert problem["detail"] == (
                "action sms is used by channel sms, which needs it so: an SMS action is a POST "
                "or PUT with a request_mapping"
            )
        status, changed = await _patch(client, path, {"method": "PUT"})
        assert status == 200 and changed["method"] == "PUT"
        sent = await post(
            client, "/api/v1/channels/sms/test", {"to": "(11) 98765-4321"}, status=200
        )
        assert sent["result"] == "success", sent
        assert [r.method for r in sms.requests] == ["PUT"]


async def test_a_partner_no_channel_uses_may_change_its_auth(client: Client) -> None:
    async with running_partner() as other:
        partner = await create_partner(client, other.url, name="erp", auth={"type": "none"})
        body = {"auth": {"type": "bearer", "token": "t"}}
        status, changed = await _patch(client, f"/api/v1/partners/{partner['id']}", body)
        assert status == 200 and changed["auth"]["type"] == "bearer"
