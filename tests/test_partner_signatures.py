"""Partner signature layouts beyond the presets, through HTTP: the Stripe-style header of
`name=value` pairs (`t=…,v1=…`) that many webhook senders copy, a list of signatures
(`v1,<b64> v1,<b64>`: Standard Webhooks under a partner's own header names, as Svix sends
it), and timestamps in milliseconds (Brazilian payment and fines providers)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import orjson

from gateway.auth.webhook_signature import signed_headers
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


# Svix's layout described as an hmac scheme (its secrets are `whsec_` + base64: the base64).
SVIX = {
    "mode": "hmac",
    "algorithm": "sha256",
    "header": "svix-signature",
    "encoding": "base64",
    "prefix": "v1,",
    "signed_content": "{id}.{timestamp}.{body}",
    "id_header": "svix-id",
    "timestamp_header": "svix-timestamp",
    "secret_encoding": "base64",
}
OLD_KEY = base64.b64encode(b"o" * 24).decode()
NEW_KEY = base64.b64encode(b"n" * 24).decode()


def _mac(secret: str, content: bytes) -> str:
    return hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()


def _svix(msg_id: str, keys: list[str], extra: str = "") -> dict[str, str]:
    """A Svix partner's headers: a signature per key, space-separated (`extra` put first)."""
    stamp = str(int(time.time()))
    content = f"{msg_id}.{stamp}.".encode() + BODY
    macs = [hmac.digest(base64.b64decode(key), content, "sha256") for key in keys]
    offered = [extra] if extra else []
    offered += ["v1," + base64.b64encode(mac).decode() for mac in macs]
    return {"svix-id": msg_id, "svix-timestamp": stamp, "svix-signature": " ".join(offered)}


async def _rejections(client: Client, trigger: dict[str, Any]) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    counts = {}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name == "gateway_trigger_signature_rejections_total" and trigger["id"] in rest:
            counts[rest.split('reason="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return counts


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


async def test_a_list_of_signatures_verifies_by_any_of_them_through_both_sides_rotations(
    client: Client,
) -> None:
    """Svix keeps the old and the new secret's signatures in one header, space-separated, for
    24 h after a partner rotates: any of them matching any live secret of the trigger
    verifies, before the admin gives the new secret and after, during the rotation's grace.
    The scheme as an admin described it before (nothing says "list") reads them."""
    trigger = await create_trigger(client, auth={**SVIX, "secret": OLD_KEY})
    assert await _post(client, trigger, _svix("msg_1", [OLD_KEY])) in (200, 201)
    assert await _post(client, trigger, _svix("msg_2", [NEW_KEY, OLD_KEY])) in (200, 201)
    # A signature of a version the scheme does not check (Standard Webhooks' ed25519) is
    # ignored, as the standard has a receiver do.
    assert await _post(client, trigger, _svix("msg_3", [OLD_KEY], "v1a,c2lnbmF0dXJl")) in (200, 201)
    assert await _post(client, trigger, _svix("msg_4", [NEW_KEY])) == 401

    rotate = f"/api/v1/triggers/{trigger['id']}/rotate"
    grace = {"secret": NEW_KEY, "grace_seconds": 86_400}
    rotated = await client.post(rotate, json=grace, headers=auth())
    assert rotated.status == 200, await rotated.text()
    for msg_id, keys in (("msg_5", [NEW_KEY, OLD_KEY]), ("msg_6", [NEW_KEY]), ("msg_7", [OLD_KEY])):
        assert await _post(client, trigger, _svix(msg_id, keys)) in (200, 201), msg_id
    unknown = base64.b64encode(b"u" * 24).decode()
    assert await _post(client, trigger, _svix("msg_8", [unknown, unknown])) == 401
    assert await _rejections(client, trigger) == {"mismatch": 2}


async def test_a_header_of_too_many_signatures_is_refused_malformed_before_any_is_read(
    client: Client,
) -> None:
    """A header may carry 16 parts: more is a 401 `malformed`, the matching one among them or
    not, so a header of thousands costs no more to refuse."""
    trigger = await create_trigger(client, auth={**SVIX, "secret": OLD_KEY})
    crowded = _svix("msg_1", [OLD_KEY] * 16)
    assert await _post(client, trigger, crowded) in (200, 201)
    crowded = _svix("msg_2", [OLD_KEY] * 17)
    assert await _post(client, trigger, crowded) == 401
    assert await _rejections(client, trigger) == {"malformed": 1}


async def test_a_standard_webhooks_partner_sending_svix_header_names_is_verified(
    client: Client,
) -> None:
    """`svix-id`, `svix-timestamp`, `svix-signature` are Standard Webhooks under Svix's
    names: a `webhook_signature` trigger reads them, rotation's two signatures included."""
    trigger = await create_trigger(client, auth={"mode": "webhook_signature"})
    other = "whsec_" + base64.b64encode(b"x" * 24).decode()

    def svix(secrets: list[str], msg_id: str) -> dict[str, str]:
        headers = signed_headers(secrets, msg_id, int(time.time()), BODY)
        return {name.replace("webhook-", "svix-"): value for name, value in headers.items()}

    assert await _post(client, trigger, svix([trigger["secret"]], "msg_1")) in (200, 201)
    assert await _post(client, trigger, svix([other, trigger["secret"]], "msg_2")) in (200, 201)
    assert await _post(client, trigger, svix([other], "msg_3")) == 401
    half = {**svix([trigger["secret"]], "msg_4"), "svix-id": ""}  # a set is read whole
    assert await _post(client, trigger, half) == 401
