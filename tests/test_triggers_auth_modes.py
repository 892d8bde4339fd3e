"""Trigger credentials: partner JWTs (PEM or JWKS), Standard Webhooks signatures, tokens in the
query, and revocation that holds in every gateway process (within 1 s in the others)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.warnings import InsecureKeyLengthWarning

from gateway.auth.secretbox import SecretBox
from gateway.auth.webhook_signature import signed_headers
from gateway.config import Secret
from gateway.errors import Unauthorized
from gateway.services import Services
from gateway.triggers.compiled import TriggerConfigs
from gateway.triggers.ingest import Ingestor
from gateway.triggers.model import HookCall
from gateway.triggers.pipeline import Pipeline
from gateway.triggers.receiver import HookReceiver
from gateway.triggers.rejected import RejectedKeeper
from gateway.web.state import services_key
from tests.support import SECRET_KEY, auth
from tests.triggers_support import (
    VEHICLE,
    Client,
    bearer,
    create_trigger,
    entities,
    stored_with_get,
)

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PEM = (
    RSA_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
NEW_KEY = "the-next-secret-key-0123456789abcdef0123"
JSON = {"Content-Type": "application/json"}


def _partner_token(
    key: Any = RSA_KEY, alg: str = "RS256", headers: dict[str, str] | None = None, **changes: Any
) -> str:
    claims = {
        "iss": "erp",
        "aud": "rabbot",
        "sub": "erp-1",
        "exp": int(time.time()) + 300,
        **changes,
    }
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


async def _post(client: Client, trigger: dict[str, Any], token: str) -> int:
    response = await client.post(
        f"/hooks/{trigger['id']}", json=VEHICLE, headers={"Authorization": f"Bearer {token}"}
    )
    return response.status


def _hs256_with_public_key() -> str:
    """The classic key-confusion forgery: HMAC keyed with the partner's public key."""
    segments = [
        base64.urlsafe_b64encode(orjson.dumps(part)).rstrip(b"=")
        for part in (
            {"alg": "HS256", "typ": "JWT"},
            {"iss": "erp", "aud": "rabbot", "exp": int(time.time()) + 300},
        )
    ]
    signing_input = b".".join(segments)
    mac = hmac.new(RSA_PEM.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


async def test_partner_jwt_from_a_pem_key_is_checked_with_its_policy(client: Client) -> None:
    trigger = await create_trigger(
        client,
        auth={
            "mode": "partner_jwt",
            "public_key_pem": RSA_PEM,
            "issuer": "erp",
            "audience": "rabbot",
            "algorithms": ["RS256"],
        },
    )
    assert "token" not in trigger and trigger["auth"]["mode"] == "partner_jwt"
    assert await _post(client, trigger, _partner_token()) == 201
    refused = {
        "wrong audience": _partner_token(aud="someone-else"),
        "wrong issuer": _partner_token(iss="mallory"),
        "expired": _partner_token(exp=int(time.time()) - 3600),
        "not yet valid": _partner_token(nbf=int(time.time()) + 3600),
        "alg none": jwt.encode({"iss": "erp", "aud": "rabbot"}, None, algorithm="none"),
        "HS256 keyed with the public key": _hs256_with_public_key(),
        "another key": _partner_token(
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ),
    }
    for name, token in refused.items():
        assert await _post(client, trigger, token) == 401, name
    rotate = await client.post(f"/api/v1/triggers/{trigger['id']}/rotate", headers=auth())
    assert rotate.status == 409  # the partner's keys are the partner's to rotate


async def _jwks_trigger(
    client: Client, aiohttp_server: Callable[..., Any], keys: Callable[..., Any], alg: str = "ES256"
) -> dict[str, Any]:
    """A partner_jwt trigger (ES256, or `alg`) whose keys the partner serves with `keys`."""
    partner = web.Application()
    partner.router.add_get("/.well-known/jwks.json", keys)
    server = await aiohttp_server(partner)
    return await create_trigger(
        client,
        auth={
            "mode": "partner_jwt",
            "jwks_url": str(server.make_url("/.well-known/jwks.json")),
            "audience": "rabbot",
            "algorithms": [alg],
        },
    )


async def test_partner_jwt_keys_come_from_a_jwks_url(
    client: Client, aiohttp_server: Callable[..., Any]
) -> None:
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True)
    fetched: list[str] = []

    async def jwks(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.json_response({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]})

    trigger = await _jwks_trigger(client, aiohttp_server, jwks)
    token = _partner_token(EC_KEY, "ES256", headers={"kid": "k1"})
    assert await _post(client, trigger, token) == 201
    assert await _post(client, trigger, token) == 200
    assert fetched == ["/.well-known/jwks.json"]  # fetched once, then cached
    assert await _post(client, trigger, _partner_token(headers={"kid": "k1"})) == 401


async def _outcomes(client: Client, outcome: str) -> float:
    text = await (await client.get("/metrics")).text()
    prefix = "gateway_trigger_requests_total{"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and f'outcome="{outcome}"' in line
    )


async def test_a_partner_whose_keys_cannot_be_fetched_gets_a_503_counted_as_such(
    client: Client, aiohttp_server: Callable[..., Any]
) -> None:
    async def down(request: web.Request) -> web.Response:
        return web.Response(status=500, text="maintenance")

    trigger = await _jwks_trigger(client, aiohttp_server, down)
    before = await _outcomes(client, "keys_unavailable")
    token = _partner_token(EC_KEY, "ES256", headers={"kid": "k1"})
    assert await _post(client, trigger, token) == 503
    assert await _outcomes(client, "keys_unavailable") == before + 1
    assert await _outcomes(client, "error") == 0


async def test_a_jwks_whose_only_rsa_key_is_under_2048_bits_is_a_503_not_a_401(
    client: Client, aiohttp_server: Callable[..., Any]
) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(weak.public_key(), as_dict=True)

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]})

    trigger = await _jwks_trigger(client, aiohttp_server, jwks, alg="RS256")
    with pytest.warns(InsecureKeyLengthWarning):  # PyJWT signs with it, and only warns
        token = _partner_token(weak, headers={"kid": "k1"})
    before = await _outcomes(client, "keys_unavailable")
    response = await client.post(
        f"/hooks/{trigger['id']}", json=VEHICLE, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 503, await response.text()
    assert response.headers["Retry-After"]
    assert await _outcomes(client, "keys_unavailable") == before + 1


async def test_a_body_sent_too_slowly_to_a_trigger_is_a_408_counted_as_a_timeout(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.web import requests

    trigger = await create_trigger(client)
    monkeypatch.setattr(requests, "BODY_TIMEOUT_SECONDS", 0.2)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"POST /hooks/{trigger['id']} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: 100\r\nAuthorization: Bearer {trigger['token']}\r\n\r\n".encode()
        + b'{"plate": '
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    await writer.wait_closed()
    assert status_line.split()[1] == b"408"
    assert await _outcomes(client, "timeout") == 1
    assert await _outcomes(client, "error") == 0


async def test_invalid_partner_key_is_refused_when_the_trigger_is_saved(client: Client) -> None:
    response = await client.post(
        "/api/v1/triggers",
        headers=auth(),
        json={
            "name": "x",
            "entity_type": "vehicle",
            "auth": {"mode": "partner_jwt", "public_key_pem": "not a key", "audience": "rabbot"},
        },
    )
    assert response.status == 422
    assert (await response.json())["errors"][0]["pointer"] == "/auth/public_key_pem"


@pytest.mark.parametrize("bits", [1024, 1536])
async def test_an_rsa_key_under_2048_bits_is_refused_when_the_trigger_is_saved(
    client: Client, bits: int
) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    pem = weak.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    response = await client.post(
        "/api/v1/triggers",
        headers=auth(),
        json={
            "name": "x",
            "entity_type": "vehicle",
            "auth": {"mode": "partner_jwt", "public_key_pem": pem, "audience": "rabbot"},
        },
    )
    assert response.status == 422
    (error,) = (await response.json())["errors"]
    assert error["pointer"] == "/auth/public_key_pem"
    assert f"{bits} bits is too short" in error["message"]


async def test_a_trigger_saved_before_with_an_rsa_key_under_2048_bits_answers_503_not_500(
    client: Client,
) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    trigger = await create_trigger(
        client, auth={"mode": "partner_jwt", "public_key_pem": RSA_PEM, "audience": "rabbot"}
    )
    weak_pem = weak.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    triggers = client.app[services_key].store.db["triggers"]
    await triggers.update_one(
        {"_id": trigger["id"]}, {"$set": {"auth.public_key_pem": weak_pem.decode()}}
    )
    with pytest.warns(InsecureKeyLengthWarning):
        token = _partner_token(weak)
    before = await _outcomes(client, "keys_unavailable")
    response = await client.post(
        f"/hooks/{trigger['id']}", json=VEHICLE, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 503, await response.text()
    assert await _outcomes(client, "keys_unavailable") == before + 1


async def test_partner_jwt_trigger_requires_an_audience(client: Client) -> None:
    response = await client.post(
        "/api/v1/triggers",
        headers=auth(),
        json={
            "name": "x",
            "entity_type": "vehicle",
            "auth": {"mode": "partner_jwt", "public_key_pem": RSA_PEM},
        },
    )
    assert response.status == 422
    assert "audience" in await response.text()


async def test_signed_webhooks_are_accepted_and_a_resent_message_gets_its_first_answer(
    client: Client,
) -> None:
    trigger = await create_trigger(client, auth={"mode": "webhook_signature"})
    secret = trigger["secret"]
    assert secret.startswith("whsec_") and "token" not in trigger
    body = orjson.dumps(VEHICLE)

    async def send(secrets: list[str], msg_id: str, data: bytes = body) -> Any:
        headers = signed_headers(secrets, msg_id, int(time.time()), data)
        return await client.post(
            f"/hooks/{trigger['id']}",
            data=data,
            headers={**headers, "Content-Type": "application/json"},
        )

    first = await send([secret], "msg_1")
    assert first.status == 201
    again = await send([secret], "msg_1")  # the partner retries the same message
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await first.json()
    # A captured message replayed with an Idempotency-Key of the attacker's still gets the
    # first answer: signed messages are keyed by their signed webhook-id.
    headers = signed_headers([secret], "msg_1", int(time.time()), body)
    replayed = await client.post(
        f"/hooks/{trigger['id']}",
        data=body,
        headers={**headers, "Content-Type": "application/json", "Idempotency-Key": "fresh-1"},
    )
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert (await send(["whsec_" + base64.b64encode(b"x" * 24).decode()], "msg_2")).status == 401
    tampered = signed_headers([secret], "msg_3", int(time.time()), body)
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=body + b" ",
        headers={**tampered, "Content-Type": "application/json"},
    )
    assert response.status == 401
    rotated = await (
        await client.post(
            f"/api/v1/triggers/{trigger['id']}/rotate", json={"grace_seconds": 600}, headers=auth()
        )
    ).json()
    assert (await send([secret], "msg_4")).status == 200  # the old one, during the grace
    assert (await send([rotated["secret"]], "msg_5")).status == 200
    await client.post(f"/api/v1/triggers/{trigger['id']}/revoke", headers=auth())
    assert (await send([rotated["secret"]], "msg_6")).status == 401


async def test_a_rotated_out_signing_secret_past_its_grace_is_not_opened_once_its_key_is_gone(
    client: Client, aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """docs/security.md's key rotation: rotate the trigger's secret under `new,old`, let the
    grace pass, drop the old key. The previous secret, sealed under the old key, stays stored
    until the next rotation: it must not be needed any more."""
    trigger = await create_trigger(client, auth={"mode": "webhook_signature"})
    both = await aiohttp_client(make_app(secret_key=Secret(f"{NEW_KEY},{SECRET_KEY}")))
    rotate = f"/api/v1/triggers/{trigger['id']}/rotate"
    rotated = await (await both.post(rotate, json={"grace_seconds": 600}, headers=auth())).json()
    triggers = client.app[services_key].store.db["triggers"]
    stored = await triggers.find_one({"_id": trigger["id"]})
    assert stored is not None and len(stored["auth"]["secrets"]) == 2
    past = datetime.now(UTC) - timedelta(seconds=1)  # the grace has passed
    secrets = [{**s, "until": s["until"] and past} for s in stored["auth"]["secrets"]]
    await triggers.update_one({"_id": trigger["id"]}, {"$set": {"auth.secrets": secrets}})

    dropped = await aiohttp_client(make_app(secret_key=Secret(NEW_KEY)))
    body = orjson.dumps(VEHICLE)
    headers = signed_headers([rotated["secret"]], "msg_1", int(time.time()), body)
    response = await dropped.post(
        f"/hooks/{trigger['id']}",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
    )

    assert response.status == 201, await response.text()


async def test_token_in_the_query_only_when_the_trigger_allows_it(client: Client) -> None:
    plain = await create_trigger(client)
    response = await client.post(
        f"/hooks/{plain['id']}?access_token={plain['token']}", json=VEHICLE
    )
    assert response.status == 401
    allowed = await create_trigger(client, name="device", auth={"token_in_query": "access_token"})
    response = await client.post(
        f"/hooks/{allowed['id']}?access_token={allowed['token']}", json=VEHICLE
    )
    assert response.status == 201


async def test_a_query_token_given_twice_is_refused_as_a_wrong_one(client: Client) -> None:
    """Which one counts would be a guess (an Authorization header given twice is a 400); a
    401 like a wrong token's, so a stranger does not learn the trigger reads its token there."""
    trigger = await create_trigger(client, name="device", auth={"token_in_query": "token"})
    for query in (f"token={trigger['token']}&token=garbage", f"token=x&token={trigger['token']}"):
        response = await client.post(f"/hooks/{trigger['id']}?{query}", json=VEHICLE)
        assert response.status == 401, await response.text()
    listed = await client.get("/api/v1/entities/vehicle", headers=auth())
    assert (await listed.json())["items"] == []


async def test_an_idempotent_retry_after_a_token_rotation_gets_the_first_answer(
    client: Client,
) -> None:
    """A form ERP (it cannot set Authorization) retries a call with its Idempotency-Key after
    the admin rotated its token: the digest hashed the raw query string, the token in it, so
    the identical call was a 422 "already used with a different body". The token is the
    credential, not the request; the other parameters count, in any order."""
    trigger = await create_trigger(
        client,
        name="erp",
        format="form",
        methods=["POST"],
        auth={"mode": "token", "token_in_query": "tk"},
    )
    url, body = f"/hooks/{trigger['id']}", "plate=ABC1D23&make=Fiat"
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Idempotency-Key": "erp-lote-0001",
    }
    sent = f"{url}?tk={trigger['token']}&model=Strada"
    first = await client.post(sent, data=body, headers=headers)
    assert first.status == 201, await first.text()
    rotate = f"/api/v1/triggers/{trigger['id']}/rotate"
    rotated = await (await client.post(rotate, json={"grace_seconds": 3600}, headers=auth())).json()

    again = f"{url}?model=Strada&tk={rotated['token']}"  # the new token, the fields reordered
    retry = await client.post(again, data=body, headers=headers)
    assert retry.status == 201, await retry.text()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert await retry.json() == await first.json()
    other = await client.post(f"{url}?model=Uno&tk={rotated['token']}", data=body, headers=headers)
    problem = await other.json()
    assert other.status == 422 and problem["reason"] == "idempotency", problem
    assert "a different body or query string" in problem["detail"]


async def _answers_within_a_second(
    client: Any, trigger: dict[str, Any], status: int, token: dict[str, Any] | None = None
) -> None:
    """Another process learns of a trigger change within 1 s (SPEC §7; triggers/gates.py):
    milliseconds through the change stream; 2 s leave room for a loaded machine."""
    changed = time.monotonic()
    headers = bearer(token or trigger)
    while (
        await client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)
    ).status != status:
        assert time.monotonic() - changed < 2.0, f"no {status} within 2 s of the change"
        await asyncio.sleep(0.01)


async def test_a_trigger_changed_through_one_process_holds_in_another_within_a_second(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    a = await aiohttp_client(make_app())
    b = await aiohttp_client(make_app())
    trigger = await create_trigger(a)
    assert (
        await b.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=bearer(trigger))
    ).status == 201
    patched = await a.patch(
        f"/api/v1/triggers/{trigger['id']}", json={"methods": ["GET"]}, headers=auth()
    )
    assert patched.status == 200
    await _answers_within_a_second(b, trigger, 403)  # B compiled the new config version
    await a.patch(f"/api/v1/triggers/{trigger['id']}", json={"methods": ["POST"]}, headers=auth())
    await a.post(f"/api/v1/triggers/{trigger['id']}/disable", headers=auth())
    await _answers_within_a_second(b, trigger, 403)
    await a.post(f"/api/v1/triggers/{trigger['id']}/enable", headers=auth())
    await _answers_within_a_second(b, trigger, 200)
    await a.post(f"/api/v1/triggers/{trigger['id']}/revoke", headers=auth())
    await _answers_within_a_second(b, trigger, 401)
    rotated = await (
        await a.post(f"/api/v1/triggers/{trigger['id']}/rotate", headers=auth())
    ).json()
    await _answers_within_a_second(b, trigger, 200, rotated)
    await a.delete(f"/api/v1/triggers/{trigger['id']}", headers=auth())
    await _answers_within_a_second(b, trigger, 401, rotated)
    assert len(await entities(a)) == 1


class _NoBody:
    async def read(self, limit: int) -> bytes:
        raise AssertionError("a read never reads the body")


async def test_a_rotated_out_token_ends_by_the_receivers_own_clock(
    client: Client, services: Services
) -> None:
    trigger = await create_trigger(client)
    rotated = await client.post(
        f"/api/v1/triggers/{trigger['id']}/rotate", headers=auth(), json={"grace_seconds": 3600}
    )
    assert rotated.status == 200

    def receiver(clock: Callable[[], float]) -> HookReceiver:
        configs = TriggerConfigs(services.store, SecretBox(services.keyring), _no_fetch)
        pipeline = Pipeline(services.entities, services.schemas, services.mappings)
        keeper = RejectedKeeper(services.store, services.metrics)
        ingestor = Ingestor(pipeline, keeper, services.metrics, services.positions)
        return HookReceiver(
            services.store,
            services.gates,
            configs,
            services.entities,
            ingestor,
            services.mappings,
            services.keyring,
            services.metrics,
            services.tracks,
            clock=clock,
        )

    call = HookCall(trigger["id"], "GET", bearer(trigger), {}, "", "", _NoBody())
    assert (await receiver(time.time).handle(call)).status == 200  # within the grace
    two_hours_later = receiver(lambda: time.time() + 7200)
    with pytest.raises(Unauthorized):
        await two_hours_later.handle(call)


async def _no_fetch(url: str) -> bytes:
    raise AssertionError("no JWKS here")


@pytest.mark.parametrize(
    "mode", [{"mode": "hmac", "preset": "motive"}, {"mode": "webhook_signature"}]
)
async def test_a_trigger_signed_over_its_body_cannot_be_given_get(
    client: Client, mode: dict[str, str]
) -> None:
    """A GET has no body to sign and is refused at the door (403): GET in the methods of such
    a trigger is a 422 pointing at `methods`, at creation and by a PATCH of its methods or
    auth. A trigger stored with it before still loads and writes, and takes a PATCH of
    anything else (a rename could not be saved: every change had to drop GET too)."""
    spec = {"name": "signed", "entity_type": "vehicle", "methods": ["GET", "POST"], "auth": mode}
    refused = await client.post("/api/v1/triggers", json=spec, headers=auth())
    problem = await refused.json()
    assert refused.status == 422, problem
    [error] = problem["errors"]
    assert error["pointer"] == "/methods" and error["keyword"] == "signed"
    assert mode["mode"] in error["message"] and "POST only" in error["message"]
    listed = await client.get("/api/v1/triggers", headers=auth())
    assert (await listed.json())["items"] == []

    trigger = await create_trigger(client, auth=mode)
    assert trigger["methods"] == ["POST"]
    path = f"/api/v1/triggers/{trigger['id']}"
    patched = await client.patch(path, json={"methods": ["GET"]}, headers=auth())
    assert patched.status == 422, await patched.text()
    assert (await patched.json())["errors"][0]["pointer"] == "/methods"
    assert (await (await client.get(path, headers=auth())).json())["methods"] == ["POST"]

    await stored_with_get(client, trigger)  # as stored before the rule
    assert (await (await client.get(path, headers=auth())).json())["methods"] == ["GET", "POST"]
    renamed = await client.patch(path, json={"name": "renamed"}, headers=auth())
    assert renamed.status == 200, await renamed.text()
    assert (await renamed.json())["methods"] == ["GET", "POST"]  # kept: refused at the door
    limits = {"max_body_bytes": 4096, "rate_limit": {"per_second": 5, "burst": 10}}
    assert (await client.patch(path, json=limits, headers=auth())).status == 200
    restated = {"name": "renamed", "methods": ["POST", "GET"]}  # as read: no change of them
    assert (await client.patch(path, json=restated, headers=auth())).status == 200
    secret = trigger["secret"]
    signed = (
        {"X-KT-Webhook-Signature": hmac.new(secret.encode(), b"", hashlib.sha1).hexdigest()}
        if mode["mode"] == "hmac"
        else signed_headers([secret], "msg_get", int(time.time()), b"")
    )
    door = await client.get(f"/hooks/{trigger['id']}?plate=ABC1D23", headers=signed)
    assert door.status == 403, await door.text()  # a signed GET: refused at the door, as before
    for change in (
        {"methods": ["GET"]},
        {"methods": ["GET"], "name": "again"},
        {"auth": mode},
    ):
        refused = await client.patch(path, json=change, headers=auth())
        assert refused.status == 422 and "leave GET out" in await refused.text(), change
    shown = await (await client.get(path, headers=auth())).json()
    assert (shown["name"], shown["methods"]) == ("renamed", ["GET", "POST"])
    fixed = await client.patch(path, json={"name": "renamed", "methods": ["POST"]}, headers=auth())
    assert fixed.status == 200, await fixed.text()
    assert (await fixed.json())["methods"] == ["POST"]


async def test_an_auth_mode_that_is_not_text_is_a_422_beside_get_not_a_500(client: Client) -> None:
    """The signed-GET rule reads the mode before the schema's verdict is returned: a mode
    that is an object or a list is the schema's problem at /auth/mode (it was a 500)."""
    for mode in ({"a": 1}, ["hmac"], 7):
        spec = {"name": "odd", "entity_type": "vehicle", "methods": ["GET"], "auth": {"mode": mode}}
        response = await client.post("/api/v1/triggers", json=spec, headers=auth())
        problem = await response.json()
        assert response.status == 422, problem
        assert [e["pointer"] for e in problem["errors"]] == ["/auth/mode"]


async def test_a_partners_webhook_secret_is_checked_alike_on_create_patch_and_rotate(
    client: Client,
) -> None:
    """A Standard Webhooks secret is `whsec_` + base64: one the partner gives is taken on
    create, PATCH and rotate alike, and anything else is a 422 at the member."""
    body = {"name": "partner", "entity_type": "vehicle", "methods": ["POST"]}
    bad = {"mode": "webhook_signature", "secret": "my partner's secret!"}
    refused = await client.post("/api/v1/triggers", json={**body, "auth": bad}, headers=auth())
    assert refused.status == 422, await refused.text()
    assert [e["pointer"] for e in (await refused.json())["errors"]] == ["/auth/secret"]
    assert "secret!" not in await refused.text()

    given = "whsec_" + base64.b64encode(b"p" * 24).decode()
    auth_spec = {"mode": "webhook_signature", "secret": given}
    created = await client.post(
        "/api/v1/triggers", json={**body, "auth": auth_spec}, headers=auth()
    )
    assert created.status == 201, await created.text()
    trigger = await created.json()
    assert "secret" not in trigger and trigger["credentials"][0]["source"] == "partner"
    data = orjson.dumps(VEHICLE)

    async def send(secret: str, msg_id: str) -> int:
        headers = signed_headers([secret], msg_id, int(time.time()), data)
        response = await client.post(
            f"/hooks/{trigger['id']}",
            data=data,
            headers={**headers, "Content-Type": "application/json"},
        )
        return response.status

    assert await send(given, "msg_1") == 201
    merge = {**auth(), "Content-Type": "application/merge-patch+json"}
    patched = await client.patch(
        f"/api/v1/triggers/{trigger['id']}", json={"auth": bad}, headers=merge
    )
    assert patched.status == 422, await patched.text()
    assert [e["pointer"] for e in (await patched.json())["errors"]] == ["/auth/secret"]
    rotate = f"/api/v1/triggers/{trigger['id']}/rotate"
    refused = await client.post(rotate, json={"secret": "my partner's secret!"}, headers=auth())
    assert refused.status == 422
    assert [e["pointer"] for e in (await refused.json())["errors"]] == ["/secret"]
    new = "whsec_" + base64.b64encode(b"q" * 24).decode()
    rotated = await client.post(rotate, json={"secret": new, "grace_seconds": 60}, headers=auth())
    assert rotated.status == 200, await rotated.text()
    assert await send(given, "msg_2") == 200 and await send(new, "msg_3") == 200


async def test_a_partners_secret_in_unpadded_base64_is_taken_as_the_official_libraries_take_it(
    client: Client,
) -> None:
    """`whsec_` + base64 without its `=` (a 32-byte key is 43 characters) is what some
    partners issue; the Standard Webhooks libraries pad it. Taken on create and rotate, it
    verifies; URL-safe base64 and real garbage are still a 422 saying which."""
    body = {"name": "partner", "entity_type": "vehicle", "methods": ["POST"]}
    padded = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    unpadded = padded.rstrip("=")
    assert len(unpadded) == 6 + 43
    spec = {**body, "auth": {"mode": "webhook_signature", "secret": unpadded}}
    created = await client.post("/api/v1/triggers", json=spec, headers=auth())
    assert created.status == 201, await created.text()
    trigger = await created.json()
    data = orjson.dumps(VEHICLE)

    async def send(secret: str, msg_id: str) -> int:
        # Signed with the padded form: the key the partner's library uses.
        headers = signed_headers([secret], msg_id, int(time.time()), data)
        response = await client.post(
            f"/hooks/{trigger['id']}", data=data, headers={**headers, **JSON}
        )
        return response.status

    assert await send(padded, "msg_1") == 201
    new = "whsec_" + base64.b64encode(b"sixteen byte key").decode()
    rotate = f"/api/v1/triggers/{trigger['id']}/rotate"
    grace = {"secret": new.rstrip("="), "grace_seconds": 60}
    rotated = await client.post(rotate, json=grace, headers=auth())
    assert rotated.status == 200, await rotated.text()
    assert await send(new, "msg_2") == 200 and await send(padded, "msg_3") == 200

    url_safe = "whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode().rstrip("=")
    for secret, said in ((url_safe, "URL-safe base64"), ("whsec_abcde", "is not base64")):
        spec = {**body, "name": said, "auth": {"mode": "webhook_signature", "secret": secret}}
        refused = await client.post("/api/v1/triggers", json=spec, headers=auth())
        assert refused.status == 422, secret
        [error] = (await refused.json())["errors"]
        assert error["pointer"] == "/auth/secret" and said in error["message"], error

    # An hmac scheme keyed by base64 (Samsara's) takes its secret unpadded alike.
    key = b"samsara key, 25 bytes lon"
    samsara = {"mode": "hmac", "preset": "samsara", "secret": base64.b64encode(key).decode()}
    samsara["secret"] = samsara["secret"].rstrip("=")
    hmac_trigger = await create_trigger(client, name="samsara", auth=samsara)
    stamp = str(int(time.time()))
    mac = hmac.new(key, b"v1:" + stamp.encode() + b":" + data, hashlib.sha256).hexdigest()
    signed = {"X-Samsara-Signature": f"v1={mac}", "X-Samsara-Timestamp": stamp, **JSON}
    response = await client.post(f"/hooks/{hmac_trigger['id']}", data=data, headers=signed)
    assert response.status in (200, 201), await response.text()


async def test_a_stored_secret_that_cannot_key_the_scheme_is_a_logged_401_not_a_500(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A trigger stored before secrets were checked on save (a text secret under Standard
    Webhooks): its partner's signed requests are refused like any bad credential, counted
    as `unusable_secret` and logged for the operator, never a 500."""
    trigger = await create_trigger(
        client, auth={"mode": "hmac", "preset": "motive", "secret": "my partner's secret!"}
    )
    triggers = client.app[services_key].store.db["triggers"]
    await triggers.update_one(
        {"_id": trigger["id"]},
        {"$set": {"auth.mode": "webhook_signature"}, "$unset": {"auth.preset": ""}},
    )
    data = orjson.dumps(VEHICLE)
    secret = "whsec_" + base64.b64encode(b"x" * 24).decode()
    headers = signed_headers([secret], "msg_1", int(time.time()), data)
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=data,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status == 401, await response.text()
    metrics = await (await client.get("/metrics")).text()
    assert any(
        line.startswith("gateway_trigger_signature_rejections_total")
        and trigger["id"] in line
        and 'reason="unusable_secret"' in line
        and line.endswith(" 1.0")
        for line in metrics.splitlines()
    ), metrics
    assert any(
        trigger["id"] in r.getMessage() and "rotate" in r.getMessage() for r in caplog.records
    )


async def test_a_patch_that_keeps_the_scheme_opens_no_stored_secret(client: Client) -> None:
    """A PATCH of a name or the methods touches no member of the signing scheme: it is saved
    even for a trigger stored before secrets were checked on save (a text secret under
    Standard Webhooks) and for one whose sealed secret cannot be opened (damaged, or sealed
    under a key no longer in GATEWAY_SECRET_KEY); the stored secret stays as it was."""
    legacy = await create_trigger(
        client, auth={"mode": "hmac", "preset": "motive", "secret": "my partner's secret!"}
    )
    damaged = await create_trigger(client, name="damaged", auth={"mode": "webhook_signature"})
    triggers = client.app[services_key].store.db["triggers"]
    await triggers.update_one(
        {"_id": legacy["id"]},
        {"$set": {"auth.mode": "webhook_signature"}, "$unset": {"auth.preset": ""}},
    )
    await triggers.update_one(
        {"_id": damaged["id"]}, {"$set": {"auth.secrets.0.sealed": "gAAAAA-damaged"}}
    )
    merge = {**auth(), "Content-Type": "application/merge-patch+json"}
    for trigger in (legacy, damaged):
        before = await triggers.find_one({"_id": trigger["id"]})
        path = f"/api/v1/triggers/{trigger['id']}"
        name = f"{trigger['name']}: waiting for the partner's secret"
        for patch in ({"name": name}, {"methods": ["POST"]}):
            response = await client.patch(path, json=patch, headers=merge)
            assert response.status == 200, await response.text()
        after = await triggers.find_one({"_id": trigger["id"]})
        assert after["name"] == name
        assert after["auth"]["secrets"] == before["auth"]["secrets"]
