"""Partner signature layouts beyond the presets, through HTTP: the Stripe-style header of
`name=value` pairs (`t=…,v1=…`) that many webhook senders copy, and timestamps in
milliseconds (Brazilian payment and fines providers)."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import orjson

from tests.support import auth
from tests.triggers_support import VEHICLE, Client, create_trigger

BODY = orjson.dumps(VEHICLE)
SECRET = "whsec-partner-gave-us"
PAIRS = {
    "mode": "hmac",
    "algorithm": "sha256",
    "header": "X-Partner-Signature",
    "signature_field": "v1",
    "timestamp_field": "t",
    "signed_content": "{timestamp}.{body}",
    "secret": SECRET,
}


def _mac(secret: str, content: bytes) -> str:
    return hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()


async def _post(client: Client, trigger: dict[str, Any], headers: dict[str, str]) -> int:
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=BODY,
        headers={**headers, "Content-Type": "application/json"},
    )
    return response.status


async def test_a_header_of_pairs_is_verified_by_its_timestamp_and_any_of_its_signatures(
    client: Client,
) -> None:
    trigger = await create_trigger(client, auth=PAIRS)
    stamp = str(int(time.time()))
    good = _mac(SECRET, stamp.encode() + b"." + BODY)
    old = _mac("the secret before the rotation", stamp.encode() + b"." + BODY)

    assert await _post(client, trigger, {"X-Partner-Signature": f"t={stamp},v1={good}"}) == 201
    rolling = f"t={stamp}, v1={old}, v1={good}"  # the partner rolling its secret: both sent
    assert await _post(client, trigger, {"X-Partner-Signature": rolling}) in (200, 201)

    stale = str(int(time.time()) - 3600)
    stale_mac = _mac(SECRET, stale.encode() + b"." + BODY)
    for refused in (
        f"t={stale},v1={stale_mac}",  # a captured request, an hour later
        f"t={stamp},v1={old}",  # no signature of ours
        f"v1={good}",  # no timestamp
        f"t={stamp}",  # no signature
        good,  # not pairs
    ):
        assert await _post(client, trigger, {"X-Partner-Signature": refused}) == 401, refused


async def test_a_timestamp_in_milliseconds_is_within_the_tolerance_like_seconds(
    client: Client,
) -> None:
    trigger = await create_trigger(
        client,
        auth={
            "mode": "hmac",
            "algorithm": "sha256",
            "header": "X-Webhook-Signature",
            "timestamp_header": "X-Webhook-Timestamp",
            "signed_content": "{timestamp}.{body}",
            "secret": SECRET,
        },
    )
    millis = str(int(time.time() * 1000))
    signed = {
        "X-Webhook-Timestamp": millis,
        "X-Webhook-Signature": _mac(SECRET, millis.encode() + b"." + BODY),
    }
    assert await _post(client, trigger, signed) == 201

    old = str(int(time.time() * 1000) - 3_600_000)
    stale = {
        "X-Webhook-Timestamp": old,
        "X-Webhook-Signature": _mac(SECRET, old.encode() + b"." + BODY),
    }
    assert await _post(client, trigger, stale) == 401


async def test_pair_fields_that_cannot_work_are_refused_on_save(client: Client) -> None:
    cases = [
        ("/auth/timestamp_field", {**PAIRS, "signature_field": None}),
        ("/auth/timestamp_field", {**PAIRS, "timestamp_header": "X-Ts"}),
        ("/auth/timestamp_field", {**PAIRS, "timestamp_field": None}),
        ("/auth/signature_field", {**PAIRS, "signature_field": "v 1"}),
    ]
    for pointer, spec in cases:
        spec = {k: v for k, v in spec.items() if v is not None}
        response = await client.post(
            "/api/v1/triggers",
            json={"name": "x", "entity_type": "vehicle", "auth": spec},
            headers=auth(),
        )
        assert response.status == 422, pointer
        pointers = [e["pointer"] for e in (await response.json())["errors"]]
        assert pointer in pointers, (pointer, pointers)
