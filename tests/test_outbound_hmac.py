"""A partner that authenticates calls by its own HMAC of the body (`X-Signature: sha256=<hex>`,
GitHub/Shopify-style receivers, ERP inboxes; Stripe- and Slack-style with a signed timestamp)
is called with `auth: {"type": "hmac", ...}`: the signature covers the body's bytes exactly as
sent, on proxy calls and deliveries alike. Bad settings are a `422` naming them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import pytest

from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
)
from tests.support import auth
from tests.triggers_support import Client

__all__ = ["partner"]  # the fixture

SECRET = "s3cr3t-hm@c"
HMAC = {"type": "hmac", "secret": SECRET, "header": "X-Signature"}


async def test_a_delivery_carries_the_partners_hmac_of_the_body_as_sent(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(client, partner.url, auth={**HMAC, "prefix": "sha256="})
    action = await create_action(client, erp["id"])
    await create_subscription(client, action["id"], ("entity.created",))
    await create_vehicle(client, "ABC1D23", attributes={"obs": "João"})
    services = client.app[services_key]
    await services.relay.run_until_idle()
    await services.delivery_worker.run_until_idle()

    (request,) = partner.requests
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Signature"] == f"sha256={expected}"
    assert request.headers["webhook-signature"].startswith("v1,")  # Standard Webhooks still


async def test_a_proxy_call_signs_a_timestamp_and_the_body_in_base64(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(
        client,
        partner.url,
        auth={
            **HMAC,
            "algorithm": "sha1",
            "encoding": "base64",
            "timestamp_header": "X-Timestamp",
            "signed": "v0:{timestamp}:{body}",
        },
    )
    proxy = await create_action(client, erp["id"], mode="proxy")
    before = int(time.time())
    response = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke",
        headers=auth(),
        json={"payload": {"nome": "João"}},
    )
    assert response.status == 200, await response.text()
    (request,) = partner.requests
    stamp = request.headers["X-Timestamp"]
    assert before - 5 <= int(stamp) <= time.time() + 5  # the gateway's time: the database's
    signed = f"v0:{stamp}:".encode() + request.body
    mac = hmac.new(SECRET.encode(), signed, hashlib.sha1).digest()
    assert request.headers["X-Signature"] == base64.b64encode(mac).decode()
    assert request.body == '{"nome":"João"}'.encode()


@pytest.mark.parametrize(
    ("changes", "pointer", "keyword"),
    [
        ({"algorithm": "md5"}, "/auth/algorithm", "enum"),
        ({"encoding": "base32"}, "/auth/encoding", "enum"),
        ({"header": "Content-Length"}, "/auth/header", "reserved"),
        ({"header": "X Signature"}, "/auth/header", "pattern"),
        ({"secret": ""}, "/auth/secret", "minLength"),
        ({"signed": "{timestamp}.body"}, "/auth/signed", "pattern"),
        ({"signed": "{timestamp}.{body}"}, "/auth/signed", "pattern"),
        ({"timestamp_header": "X-T", "signed": "{tstamp}.{body}"}, "/auth/signed", "pattern"),
        ({"timestamp_header": "x-signature"}, "/auth/timestamp_header", "enum"),
        ({"prefix": "sha256=\n"}, "/auth/prefix", "pattern"),
        ({"algoritm": "sha1"}, "/auth/algoritm", "additionalProperties"),
    ],
)
async def test_hmac_settings_that_cannot_sign_are_a_422_naming_them(
    client: Client, changes: dict[str, Any], pointer: str, keyword: str
) -> None:
    response = await client.post(
        "/api/v1/partners",
        json={"name": "ERP", "base_url": "https://erp.example.com", "auth": {**HMAC, **changes}},
        headers=auth(),
    )
    body = await response.json()
    assert response.status == 422, body
    (problem,) = body["errors"]
    assert (problem["pointer"], problem["keyword"]) == (pointer, keyword), problem


async def test_the_hmac_secret_quoted_back_by_the_partner_is_redacted(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(client, partner.url, auth=HMAC)
    proxy = await create_action(client, erp["id"], mode="proxy")
    partner.respond_with(401, {"error": f"bad signature for key {SECRET}"})
    response = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke", headers=auth(), json={"payload": {}}
    )
    assert SECRET not in await response.text()
