"""Push through FCM HTTP v1 with a Google service account (OAuth2 JWT-bearer grant): the key
is write-only, the access token is cached, UNREGISTERED tokens leave the driver, 429 and 5xx
are worth a retry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.notify.notifier import Notification, Recipient
from gateway.outbound.redaction import MASK
from gateway.outbound.verdict import Verdict
from gateway.web.state import services_key
from tests.fcm_double import PROJECT, SCOPE, Fcm, fcm
from tests.flow_support import drain, get, push_on_new_vehicle
from tests.partner_double import post
from tests.support import auth

__all__ = ["fcm"]  # the fixture

Client = TestClient[Any, Any]
TOKEN = "fcm-device-token-of-the-driver"


async def _push_channel(client: Client, fcm: Fcm) -> dict[str, Any]:
    partner = await post(
        client,
        "/api/v1/partners",
        {
            "name": "FCM",
            "base_url": fcm.url,
            "auth": {"type": "google_service_account", "service_account": fcm.service_account()},
        },
    )
    assert partner["auth"] == {"type": "google_service_account", "configured": True}
    return await post(
        client,
        "/api/v1/channels",
        {"name": "push", "type": "push", "partner_id": partner["id"], "project_id": PROJECT},
    )


async def _test_send(client: Client, to: str = TOKEN) -> Any:
    return await post(client, "/api/v1/channels/push/test", {"to": to}, status=200)


async def test_a_push_reaches_fcm_with_a_token_from_the_service_account(
    client: Client, fcm: Fcm
) -> None:
    await _push_channel(client, fcm)
    result = await _test_send(client)
    assert result["result"] == "success", result
    assert result["provider_id"] == f"projects/{PROJECT}/messages/0:1"
    (message,) = fcm.messages
    assert message["token"] == TOKEN and message["notification"]["title"] == "Rabbot"
    assert message["android"] == {"priority": "high"}
    (claims,) = fcm.assertions
    assert claims["iss"] == "gateway@rabbot-demo.iam.gserviceaccount.com"
    assert claims["scope"] == SCOPE and claims["exp"] - claims["iat"] == 3600


async def test_a_message_name_quoting_the_access_token_is_returned_redacted(
    client: Client, fcm: Fcm
) -> None:
    """The provider id is taken from FCM's 200: one quoting the request's Authorization put
    the service account's access token into the test send's answer (and a delivery's)."""
    fcm.echo_authorization = True
    await _push_channel(client, fcm)
    result = await _test_send(client)
    assert result["result"] == "success", result
    assert result["provider_id"] == f"projects/{PROJECT}/messages/0:1 {MASK}", result
    assert fcm.tokens_issued and not any(t in str(result) for t in fcm.tokens_issued)


async def test_the_access_token_is_reused_until_fcm_refuses_it(client: Client, fcm: Fcm) -> None:
    await _push_channel(client, fcm)
    await _test_send(client)
    await _test_send(client)
    assert len(fcm.tokens_issued) == 1
    fcm.answer_next(401)
    again = await _test_send(client)
    assert again["result"] == "success" and len(fcm.tokens_issued) == 2


async def test_an_ios_push_refused_for_the_projects_apns_key_keeps_the_access_token(
    client: Client, fcm: Fcm
) -> None:
    """FCM's 401 THIRD_PARTY_AUTH_ERROR (the project's APNs key missing or refused) was read
    as our access token refused: every iOS push threw the valid token away, fetched a new
    one and called FCM twice."""
    await _push_channel(client, fcm)
    fcm.apns_key_missing.add("ios-token")
    for _ in range(3):
        refused = await _test_send(client, "ios-token")
        assert refused["result"] == "fail" and refused["code"] == 401, refused
        assert "THIRD_PARTY_AUTH_ERROR" in refused["detail"]
    android = await _test_send(client)
    assert android["result"] == "success", android
    assert fcm.token_requests == 1 and len(fcm.tokens_issued) == 1


async def test_the_service_account_key_is_write_only_and_sealed(client: Client, fcm: Fcm) -> None:
    await _push_channel(client, fcm)
    stored = await client.app[services_key].store.db["partners"].find_one({"name": "FCM"})
    assert stored is not None
    assert "PRIVATE KEY" not in str(stored) and stored["auth_type"] == "google_service_account"
    listed = await (await client.get("/api/v1/partners", headers=auth())).text()
    assert "PRIVATE KEY" not in listed and "gserviceaccount" not in listed


async def test_a_bad_service_account_is_refused_with_pointers(client: Client) -> None:
    response = await client.post(
        "/api/v1/partners",
        json={
            "name": "FCM",
            "base_url": "https://fcm.googleapis.com",
            "auth": {
                "type": "google_service_account",
                "service_account": {"type": "user", "private_key": "nope", "token_uri": "ftp://x"},
            },
        },
        headers=auth(),
    )
    assert response.status == 422
    pointers = {e["pointer"] for e in (await response.json())["errors"]}
    assert pointers == {
        "/auth/service_account/type",
        "/auth/service_account/client_email",
        "/auth/service_account/token_uri",
        "/auth/service_account/private_key",
    }


async def test_a_service_accounts_text_too_long_or_blank_is_named_by_its_keyword(
    client: Client,
) -> None:
    """A too-long e-mail was refused as "of the wrong type" (`type`)."""
    for email, keyword in [("a" * 321, "maxLength"), ("  ", "pattern"), (7, "type")]:
        account = {"type": "service_account", "client_email": email}
        response = await client.post(
            "/api/v1/partners",
            json={
                "name": "FCM",
                "base_url": "https://fcm.googleapis.com",
                "auth": {"type": "google_service_account", "service_account": account},
            },
            headers=auth(),
        )
        assert response.status == 422
        keywords = {e["pointer"]: e["keyword"] for e in (await response.json())["errors"]}
        assert keywords["/auth/service_account/client_email"] == keyword, keywords


async def test_unregistered_tokens_are_removed_from_the_driver(client: Client, fcm: Fcm) -> None:
    channel = await _push_channel(client, fcm)
    driver = await post(
        client,
        "/api/v1/entities/driver",
        {"name": "Ana Souza", "cpf": "52998224725", "push_tokens": [TOKEN, "phone-2"]},
    )
    fcm.unregistered.add(TOKEN)
    notification = Notification(
        channel["id"],
        Recipient(TOKEN, driver_id=driver["id"]),
        {"title": "Veículo fora da área", "body": "ABC1D23 saiu de Garagem SP"},
    )
    outcome = await client.app[services_key].notify.notifier.send("acme", notification)
    assert outcome.verdict is Verdict.FAIL and outcome.unregistered
    assert "UNREGISTERED" in outcome.detail and "token removed" in outcome.detail
    stored = await (
        await client.get(f"/api/v1/entities/driver/{driver['id']}", headers=auth())
    ).json()
    assert stored["push_tokens"] == ["phone-2"]


@pytest.mark.parametrize(
    ("invalid", "body", "removed"),
    [
        ("message.token", "ABC1D23 saiu de Garagem SP", True),  # an APNs token, say
        (None, "ABC1D23 saiu de Garagem SP " * 200, False),  # "Android message is too big"
    ],
)
async def test_fcms_invalid_argument_removes_a_token_only_when_it_is_no_fcm_token(
    client: Client, fcm: Fcm, invalid: str | None, body: str, removed: bool
) -> None:
    """FCM answers a token that is no FCM token with an FcmError INVALID_ARGUMENT saying so,
    without the field violation the gateway waited for: the token was kept for ever. A
    message over FCM's size limit has the same codes: its token stays."""
    channel = await _push_channel(client, fcm)
    tokens = [TOKEN, "phone-2"]
    driver = await post(
        client,
        "/api/v1/entities/driver",
        {"name": "Ana Souza", "cpf": "52998224725", "push_tokens": tokens},
    )
    if invalid is not None:
        fcm.invalid[TOKEN] = invalid
    notification = Notification(
        channel["id"],
        Recipient(TOKEN, driver_id=driver["id"]),
        {"title": "Veículo fora da área", "body": body},
    )
    outcome = await client.app[services_key].notify.notifier.send("acme", notification)
    assert outcome.verdict is Verdict.FAIL and outcome.code == 400
    assert "INVALID_ARGUMENT" in outcome.detail and outcome.unregistered is removed
    stored = await get(client, f"/api/v1/entities/driver/{driver['id']}")
    assert stored["push_tokens"] == (["phone-2"] if removed else tokens)


@pytest.mark.parametrize("hr_id", ['"HR-7731"', "7731"])
async def test_a_fetched_driver_with_its_own_id_still_loses_an_unregistered_token(
    client: Client, fcm: Fcm, hr_id: str
) -> None:
    """An HR answer carries the HR system's employee `id`: the recipient is still our driver
    its CPF finds, whose dead token is removed."""
    driver = await post(
        client,
        "/api/v1/entities/driver",
        {"name": "Ana Souza", "cpf": "52998224725", "push_tokens": ["tok-dead", "tok-live"]},
    )
    fetched = '`{"cpf": "52998224725", "id": ' + hr_id + "}`"  # as the HR system answers
    await push_on_new_vehicle(client, fcm, fetched)
    fcm.unregistered.add("tok-dead")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(client.app[services_key])
    stored = await get(client, f"/api/v1/entities/driver/{driver['id']}")
    assert stored["push_tokens"] == ["tok-live"]
    deliveries = (await get(client, "/api/v1/deliveries"))["items"]
    recipients = {d["notification"]["recipient"]["driver_id"] for d in deliveries}
    assert recipients == {driver["id"]}


@pytest.mark.parametrize("tokens", ["[]", '[""]'])
async def test_a_fetched_driver_listing_no_token_is_pushed_at_the_drivers_own(
    client: Client, fcm: Fcm, tokens: str
) -> None:
    """A directory answering "no device known here" (`"push_tokens": []`) replaced the stored
    driver's tokens: "driver Ana Souza has no push token", nothing sent. An empty list gives
    none, as blank text does, and the driver record's stand."""
    driver = {"name": "Ana Souza", "cpf": "52998224725", "push_tokens": ["tok-1"]}
    await post(client, "/api/v1/entities/driver", driver)
    fetched = '`{"cpf": "52998224725", "email": "", "push_tokens": ' + tokens + "}`"
    await push_on_new_vehicle(client, fcm, fetched)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(client.app[services_key])
    (run,) = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    assert run["steps"][0]["outcome"] == "queued", run["steps"][0]
    assert [m["token"] for m in fcm.messages] == ["tok-1"]


async def test_two_unregistered_tokens_removed_at_once_both_stay_removed(
    client: Client, fcm: Fcm
) -> None:
    """Each removal read the driver's tokens, then wrote the list without its own: two at once
    (two deliveries, two processes) each wrote back the token the other had removed."""
    channel = await _push_channel(client, fcm)
    driver = await post(
        client,
        "/api/v1/entities/driver",
        {"name": "Ana Souza", "cpf": "52998224725", "push_tokens": [TOKEN, "tablet", "phone-2"]},
    )
    fcm.unregistered.update({TOKEN, "tablet"})
    fcm.unregistered_together = asyncio.Barrier(2)  # both answered at the same moment
    notifier = client.app[services_key].notify.notifier
    parts = {"title": "Veículo fora da área", "body": "ABC1D23 saiu de Garagem SP"}
    outcomes = await asyncio.gather(
        *(
            notifier.send(
                "acme", Notification(channel["id"], Recipient(t, driver_id=driver["id"]), parts)
            )
            for t in (TOKEN, "tablet")
        )
    )
    assert all("token removed" in o.detail for o in outcomes)
    stored = await (
        await client.get(f"/api/v1/entities/driver/{driver['id']}", headers=auth())
    ).json()
    assert stored["push_tokens"] == ["phone-2"]


async def test_quota_and_outages_are_retryable(client: Client, fcm: Fcm) -> None:
    await _push_channel(client, fcm)
    await _test_send(client)  # a token first, so the queued answers reach the send itself
    fcm.answer_next(429, {"Retry-After": "30"})
    quota = await _test_send(client)
    assert quota["result"] == "retry" and quota["retry_after"] == 30 and quota["code"] == 429
    fcm.answer_next(503)
    outage = await _test_send(client)
    assert outage["result"] == "retry" and outage["code"] == 503


async def test_a_push_channel_needs_a_service_account_partner(client: Client, fcm: Fcm) -> None:
    partner = await post(
        client,
        "/api/v1/partners",
        {"name": "ERP", "base_url": fcm.url, "auth": {"type": "bearer", "token": "x"}},
    )
    response = await client.post(
        "/api/v1/channels",
        json={"name": "push", "type": "push", "partner_id": partner["id"], "project_id": "X"},
        headers=auth(),
    )
    pointers = {e["pointer"] for e in (await response.json())["errors"]}
    assert response.status == 422 and pointers == {"/partner_id", "/project_id"}


async def test_a_test_send_through_a_disabled_partner_is_503_and_reaches_nobody(
    client: Client, fcm: Fcm
) -> None:
    channel = await _push_channel(client, fcm)
    where = f"/api/v1/partners/{channel['partner_id']}"
    assert (await client.patch(where, headers=auth(), json={"status": "disabled"})).status == 200

    response = await client.post("/api/v1/channels/push/test", json={"to": TOKEN}, headers=auth())

    body = await response.json()
    assert response.status == 503, body
    assert "partner FCM is disabled; it is not called until it is enabled again" in body["detail"]
    assert 1 <= int(response.headers["Retry-After"]) <= 3600
    assert fcm.messages == [] and fcm.assertions == []
