"""Hostile and broken calls: each gets its documented status and problem body, writes nothing,
and the gateway keeps serving (a normal call succeeds afterwards)."""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import ClientResponse
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth.keyring import KeyRing, Purpose
from gateway.auth.webhook_signature import signed_headers
from gateway.web.state import services_key
from tests.support import SECRET_KEY, auth
from tests.triggers_support import VEHICLE, Client, bearer, create_trigger, entities

Send = Callable[[Client, dict[str, Any]], Awaitable[ClientResponse]]
TRIGGER_KEY = KeyRing.from_secret(SECRET_KEY).signing_key(Purpose.TRIGGER_TOKEN)


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def _forged(trigger: dict[str, Any], *, key: Any = None, alg: str = "HS256", **changes: Any) -> str:
    """A token with the trigger's real claims (its live jti) and some changed."""
    claims = {**_claims(trigger["token"]), **changes}
    return jwt.encode(
        claims,
        TRIGGER_KEY.key if key is None else key,
        algorithm=alg,
        headers={"kid": TRIGGER_KEY.kid},
    )


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def _with_token(token: str) -> Send:
    async def send(client: Client, trigger: dict[str, Any]) -> ClientResponse:
        return await client.post(
            f"/hooks/{trigger['id']}", json=VEHICLE, headers={"Authorization": f"Bearer {token}"}
        )

    return send


def _post(body: bytes, content_type: str = "application/json") -> Send:
    async def send(client: Client, trigger: dict[str, Any]) -> ClientResponse:
        return await client.post(
            f"/hooks/{trigger['id']}",
            data=body,
            headers={**bearer(trigger), "Content-Type": content_type},
        )

    return send


def _alg_none(trigger: dict[str, Any]) -> Send:
    header = {"alg": "none", "typ": "JWT", "kid": TRIGGER_KEY.kid}
    return _with_token(f"{_b64(header)}.{_b64(_claims(trigger['token']))}.")


def _rsa_signed(trigger: dict[str, Any]) -> Send:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _with_token(_forged(trigger, key=private, alg="RS256"))


def _tampered(trigger: dict[str, Any]) -> Send:
    head, _, signature = trigger["token"].split(".")
    payload = _b64({**_claims(trigger["token"]), "tenant": "other"})
    return _with_token(f"{head}.{payload}.{signature}")


def _deep() -> Send:
    return _post(b'{"plate": "ABC1D23", "attributes": {"a": ' + b"[" * 40 + b"]" * 40 + b"}}")


async def _unknown_trigger(client: Client, trigger: dict[str, Any]) -> ClientResponse:
    return await client.post("/hooks/trg_doesnotexist0000000", json=VEHICLE)


async def _no_token(client: Client, trigger: dict[str, Any]) -> ClientResponse:
    return await client.post(f"/hooks/{trigger['id']}", json=VEHICLE)


async def _wrong_method(client: Client, trigger: dict[str, Any]) -> ClientResponse:
    return await client.get(f"/hooks/{trigger['id']}", headers=bearer(trigger))


async def _unsupported_method(client: Client, trigger: dict[str, Any]) -> ClientResponse:
    return await client.put(f"/hooks/{trigger['id']}", json=VEHICLE, headers=bearer(trigger))


async def _huge(client: Client, trigger: dict[str, Any]) -> ClientResponse:
    body = orjson.dumps({**VEHICLE, "attributes": {"blob": "x" * 5000}})
    return await _post(body)(client, trigger)


async def _revoked(client: Client, trigger: dict[str, Any]) -> ClientResponse:
    await client.post(f"/api/v1/triggers/{trigger['id']}/revoke", headers=auth())
    return await _with_token(trigger["token"])(client, trigger)


async def _rotated_out(client: Client, trigger: dict[str, Any]) -> ClientResponse:
    await client.post(f"/api/v1/triggers/{trigger['id']}/rotate", headers=auth())
    return await _with_token(trigger["token"])(client, trigger)


async def _rotated_out_after_grace(client: Client, trigger: dict[str, Any]) -> ClientResponse:
    rotated = await client.post(
        f"/api/v1/triggers/{trigger['id']}/rotate", headers=auth(), json={"grace_seconds": 3600}
    )
    assert rotated.status == 200
    during = await _with_token(trigger["token"])(client, trigger)
    assert during.status == 201  # still valid while the grace lasts
    # The grace period ends: move its end into the past instead of waiting for it.
    triggers = client.app[services_key].store.db["triggers"]
    doc = await triggers.find_one({"_id": trigger["id"]})
    ended = [
        {**t, "until": t["until"].replace(year=2000)} if t["until"] else t for t in doc["tokens"]
    ]
    await triggers.update_one({"_id": trigger["id"]}, {"$set": {"tokens": ended}})
    await client.delete(f"/api/v1/entities/vehicle/{VEHICLE['plate']}", headers=auth())  # undo
    return await _with_token(trigger["token"])(client, trigger)


async def _stale_signature(client: Client, trigger: dict[str, Any]) -> ClientResponse:
    signed = await create_trigger(client, name="signed", auth={"mode": "webhook_signature"})
    body = orjson.dumps(VEHICLE)
    headers = signed_headers([signed["secret"]], "msg_1", int(time.time()) - 400, body)
    return await client.post(
        f"/hooks/{signed['id']}", data=body, headers={**headers, "Content-Type": "application/json"}
    )


async def _bad_check_digit(client: Client, trigger: dict[str, Any]) -> ClientResponse:
    drivers = await create_trigger(client, name="drivers", entity_type="driver")
    return await client.post(
        f"/hooks/{drivers['id']}",
        headers=bearer(drivers),
        json={"name": "Maria", "cpf": "529.982.247-26"},
    )


def _cases() -> dict[str, tuple[Any, int, str]]:
    """name → (request, status, problem slug)."""
    now = int(time.time())
    return {
        "alg_none": (_alg_none, 401, "unauthorized"),
        "hs_rs_key_confusion": (_rsa_signed, 401, "unauthorized"),
        "expired": (lambda t: _with_token(_forged(t, exp=now - 3600)), 401, "unauthorized"),
        "not_yet_valid": (lambda t: _with_token(_forged(t, nbf=now + 3600)), 401, "unauthorized"),
        "wrong_audience": (lambda t: _with_token(_forged(t, aud="admin")), 401, "unauthorized"),
        "wrong_issuer": (lambda t: _with_token(_forged(t, iss="someone")), 401, "unauthorized"),
        "tampered": (_tampered, 401, "unauthorized"),
        "no_token": (lambda t: _no_token, 401, "unauthorized"),
        "revoked": (lambda t: _revoked, 401, "unauthorized"),
        "rotated_out": (lambda t: _rotated_out, 401, "unauthorized"),
        "rotated_out_after_grace": (lambda t: _rotated_out_after_grace, 401, "unauthorized"),
        "unknown_trigger": (lambda t: _unknown_trigger, 401, "unauthorized"),
        "stale_webhook_signature": (lambda t: _stale_signature, 401, "unauthorized"),
        "wrong_method": (lambda t: _wrong_method, 403, "forbidden"),
        "unsupported_method": (lambda t: _unsupported_method, 405, "method-not-allowed"),
        "huge_body": (lambda t: _huge, 413, "payload-too-large"),
        "deep_nesting": (lambda t: _deep(), 400, "bad-request"),
        "invalid_utf8": (
            lambda t: _post(b'{"plate": "ABC1D23", "make": "\xff"}'),
            400,
            "bad-request",
        ),
        "malformed_json": (lambda t: _post(b'{"plate": '), 400, "bad-request"),
        "wrong_content_type": (
            lambda t: _post(b"plate=ABC1D23", "text/plain"),
            415,
            "unsupported-media-type",
        ),
        "missing_key_field": (lambda t: _post(b'{"make": "Fiat"}'), 422, "invalid-payload"),
        "bad_check_digit": (lambda t: _bad_check_digit, 422, "invalid-payload"),
    }


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_call_gets_its_status_writes_nothing_and_the_gateway_keeps_serving(
    client: Client, case: str
) -> None:
    trigger = await create_trigger(client, methods=["POST"], max_body_bytes=1024)
    make_request, status, slug = CASES[case]
    before = await entities(client)
    response = await make_request(trigger)(client, trigger)
    problem = await response.json()
    assert response.status == status, problem
    assert response.content_type == "application/problem+json"
    assert problem["type"].endswith(f"/{slug}") and problem["status"] == status
    assert await entities(client) == before
    assert await entities(client, "driver") == []
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert problem["detail"] == "missing, invalid or revoked credentials"
    if status == 405:
        assert "POST" in response.headers["Allow"]
    if case == "wrong_method":
        assert problem["allowed"] == ["POST"]
    fresh = await create_trigger(client, name="after")
    ok = await client.post(f"/hooks/{fresh['id']}", json=VEHICLE, headers=bearer(fresh))
    assert ok.status in (200, 201)


async def test_unknown_trigger_gets_the_same_401_as_a_bad_token(client: Client) -> None:
    trigger = await create_trigger(client)
    bad = await client.post(
        f"/hooks/{trigger['id']}", json=VEHICLE, headers={"Authorization": "Bearer not-a-token"}
    )
    unknown = await client.post(
        "/hooks/trg_doesnotexist0000000",
        json=VEHICLE,
        headers={"Authorization": "Bearer not-a-token"},
    )
    assert bad.status == unknown.status == 401
    strip = ("instance",)
    bad_body, unknown_body = await bad.json(), await unknown.json()
    assert {k: v for k, v in bad_body.items() if k not in strip} == {
        k: v for k, v in unknown_body.items() if k not in strip
    }
    assert bad.headers["WWW-Authenticate"] == unknown.headers["WWW-Authenticate"]


async def test_a_valid_token_at_another_triggers_url_is_403(client: Client) -> None:
    mine = await create_trigger(client)
    other = await create_trigger(client, name="other")
    for url in (f"/hooks/{other['id']}", "/hooks/trg_doesnotexist0000000"):
        response = await client.post(url, json=VEHICLE, headers=bearer(mine))
        assert response.status == 403, url
    assert await entities(client) == []


async def test_bad_check_digit_names_the_field_and_why(client: Client) -> None:
    response = await _bad_check_digit(client, {})
    [error] = (await response.json())["errors"]
    assert error["pointer"] == "/cpf" and "check digit" in error["message"]


async def test_a_natural_key_of_the_wrong_type_is_named_as_such_not_as_missing(
    client: Client,
) -> None:
    """An ERP that sends the CPF as a number is told the CPF is not text, not that it is
    missing (the admin API said so already)."""
    drivers = await create_trigger(client, name="drivers", entity_type="driver")
    for cpf, shown in ((52998224725, "52998224725"), (["52998224725"], '["52998224725"]')):
        response = await client.post(
            f"/hooks/{drivers['id']}", headers=bearer(drivers), json={"name": "Ana", "cpf": cpf}
        )
        assert response.status == 422
        [error] = (await response.json())["errors"]
        assert error == {
            "pointer": "/cpf",
            "message": f'/cpf: {shown} is not of type "string"',
            "keyword": "type",
        }
    missing = await client.post(
        f"/hooks/{drivers['id']}", headers=bearer(drivers), json={"name": "Ana"}
    )
    [error] = (await missing.json())["errors"]
    assert error["keyword"] == "required" and error["pointer"] == "/cpf"


class _CountingVerifier:
    """The receiver's token verifier, counting signature checks."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def verify(self, token: str, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.verify(token, **kwargs)


async def test_unknown_trigger_costs_the_same_checks_as_a_known_one_with_a_bad_token(
    client: Client,
) -> None:

    trigger = await create_trigger(client)
    receiver = client.app[services_key].hooks
    counting = receiver._verifier = _CountingVerifier(receiver._verifier)
    checks = {}
    for trigger_id in (trigger["id"], "trg_doesnotexist0000000"):
        # Signed with another key, naming the trigger of the URL: the forger's best guess.
        forged = jwt.encode({"sub": trigger_id, "tid": "x"}, "another-key-0123456789abcdef0123")
        counting.calls = 0
        response = await client.post(
            f"/hooks/{trigger_id}", json=VEHICLE, headers={"Authorization": f"Bearer {forged}"}
        )
        assert response.status == 401
        checks[trigger_id] = counting.calls
    assert checks[trigger["id"]] == checks["trg_doesnotexist0000000"] == 1
