"""An hmac scheme whose signed content is a manifest of headers and query parameters, not the
body (Mercado Pago: `id:<data.id of the query>;request-id:<x-request-id>;ts:<ts>;`): the
sender and those values are authenticated, a signed timestamp bounds a copy, the body is not
signed (docs/security.md)."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from typing import Any

import orjson

from tests.support import auth
from tests.triggers_support import VEHICLE, Client, create_trigger, entities

SECRET = "mp-webhook-secret-0123456789"
BODY = orjson.dumps(VEHICLE)


def _signed(data_id: str, request_id: str, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    manifest = f"id:{data_id};request-id:{request_id};ts:{stamp};"
    mac = hmac.new(SECRET.encode(), manifest.encode(), hashlib.sha256).hexdigest()
    return {
        "x-signature": f"ts={stamp},v1={mac}",
        "x-request-id": request_id,
        "Content-Type": "application/json",
    }


async def _mercadopago(client: Client) -> dict[str, Any]:
    return await create_trigger(
        client, name="mp", auth={"mode": "hmac", "preset": "mercadopago", "secret": SECRET}
    )


async def test_a_mercado_pago_manifest_signature_opens_the_trigger(client: Client) -> None:
    trigger = await _mercadopago(client)
    url = f"/hooks/{trigger['id']}?data.id=123456&type=payment"
    request_id = str(uuid.uuid4())
    sent = await client.post(url, data=BODY, headers=_signed("123456", request_id))
    assert sent.status == 201, await sent.text()
    assert [v["plate"] for v in await entities(client)] == ["ABC1D23"]

    # The same call again (a partner's retry, or a copy): its first answer, not a new write.
    again = await client.post(url, data=BODY, headers=_signed("123456", request_id))
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"


async def test_a_manifest_of_other_values_a_stale_one_or_a_missing_id_is_refused(
    client: Client,
) -> None:
    trigger = await _mercadopago(client)
    hook = f"/hooks/{trigger['id']}"
    other_id = await client.post(
        f"{hook}?data.id=999", data=BODY, headers=_signed("123456", str(uuid.uuid4()))
    )
    stale = await client.post(
        f"{hook}?data.id=1",
        data=BODY,
        headers=_signed("1", str(uuid.uuid4()), int(time.time()) - 3600),
    )
    missing = await client.post(hook, data=BODY, headers=_signed("1", str(uuid.uuid4())))
    twice = await client.post(
        f"{hook}?data.id=1&data.id=2", data=BODY, headers=_signed("1", str(uuid.uuid4()))
    )
    assert [r.status for r in (other_id, stale, missing, twice)] == [401, 401, 401, 401]
    assert await entities(client) == []


async def test_a_scheme_without_body_needs_a_signed_timestamp(client: Client) -> None:
    base = {"name": "t", "entity_type": "vehicle", "methods": ["POST"]}
    scheme = {"mode": "hmac", "algorithm": "sha256", "header": "X-Sig", "id_header": "X-Id"}
    for content in ("id:{query.data.id};request-id:{id};", "{query.a b}{body}", "{body}{body}"):
        body = {**base, "auth": {**scheme, "signed_content": content}}
        response = await client.post("/api/v1/triggers", json=body, headers=auth())
        assert response.status == 422, content
        errors = (await response.json())["errors"]
        assert [e["pointer"] for e in errors] == ["/auth/signed_content"], errors
