"""Admin tokens from an external identity provider, checked against its JWKS over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import admin_token

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ISSUER, AUDIENCE = "https://idp.example.com/realms/fleet", "rabbot-gateway"


def _idp_token(**claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "ana",
        "iat": now,
        "exp": now + 300,
        "org": "acme",
        "realm_access": {"roles": ["fleet-admin"]},
        **claims,
    }
    return jwt.encode(payload, KEY, algorithm="RS256", headers={"kid": "idp-1"})


async def _app(
    aiohttp_client: Any, aiohttp_server: Any, make_app: Callable[..., web.Application]
) -> Any:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))

    async def certs(request: web.Request) -> web.Response:
        return web.json_response({"keys": [{**jwk, "kid": "idp-1", "alg": "RS256"}]})

    idp = web.Application()
    idp.router.add_get("/certs", certs)
    server = await aiohttp_server(idp, host="127.0.0.1")
    app = make_app(
        admin_jwks_url=str(server.make_url("/certs")),
        admin_jwt_issuer=ISSUER,
        admin_jwt_audience=AUDIENCE,
        admin_tenant_claim="org",
        admin_role_claim="realm_access.roles",
    )
    return await aiohttp_client(app)


async def test_identity_provider_admin_token_reaches_its_tenant(
    aiohttp_client: Any, aiohttp_server: Any, make_app: Callable[..., web.Application]
) -> None:
    client = await _app(aiohttp_client, aiohttp_server, make_app)
    # Role values map to ours only by name here; an unknown role is refused.
    denied = await client.get(
        "/api/v1/entities/vehicle", headers={"Authorization": f"Bearer {_idp_token()}"}
    )
    assert denied.status == 403
    token = _idp_token(realm_access={"roles": ["admin"]})
    created = await client.post(
        "/api/v1/entities/vehicle",
        json={"plate": "ABC1D23"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status == 201
    # The gateway's own admin tokens keep working beside the provider's.
    ours = await client.get(
        "/api/v1/entities/vehicle/ABC1D23",
        headers={"Authorization": f"Bearer {admin_token('acme')}"},
    )
    assert ours.status == 200


async def test_identity_provider_token_with_wrong_audience_or_key_is_401(
    aiohttp_client: Any, aiohttp_server: Any, make_app: Callable[..., web.Application]
) -> None:
    client = await _app(aiohttp_client, aiohttp_server, make_app)
    wrong_aud = _idp_token(aud="someone-else", realm_access={"roles": ["admin"]})
    response = await client.get(
        "/api/v1/entities/vehicle", headers={"Authorization": f"Bearer {wrong_aud}"}
    )
    assert response.status == 401
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "x",
            "org": "acme",
            "exp": int(time.time()) + 60,
            "realm_access": {"roles": ["admin"]},
        },
        other_key,
        algorithm="RS256",
        headers={"kid": "idp-1"},
    )
    response = await client.get(
        "/api/v1/entities/vehicle", headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.status == 401
