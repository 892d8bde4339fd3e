"""Admin tokens from an external identity provider, checked against its JWKS over HTTP."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.accounts import MAX_FAILURES
from gateway.web.state import services_key
from tests.support import admin_token
from tests.ui_support import csrf

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


async def _certs(request: web.Request) -> web.Response:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    return web.json_response({"keys": [{**jwk, "kid": "idp-1", "alg": "RS256"}]})


async def _app(
    aiohttp_client: Any,
    aiohttp_server: Any,
    make_app: Callable[..., web.Application],
    certs: Callable[[web.Request], Any] = _certs,
) -> Any:
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


BAD_TENANTS = ["acme/../globex", "acme\n", "acme corp", "a" * 101, "", "açme", {"$ne": None}, 7]


async def test_a_provider_token_whose_tenant_is_not_a_tenant_name_is_403_and_writes_nothing(
    aiohttp_client: Any, aiohttp_server: Any, make_app: Callable[..., web.Application]
) -> None:
    """The provider signs whatever its directory holds: a tenant claim outside the names the
    gateway issues tokens for (`TENANT`) is refused before any use case, never a query."""
    client = await _app(aiohttp_client, aiohttp_server, make_app)
    db = client.app[services_key].store.db
    for tenant in BAD_TENANTS:
        token = _idp_token(org=tenant, realm_access={"roles": ["admin"]})
        response = await client.post(
            "/api/v1/entities/vehicle",
            json={"plate": "ABC1D23"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status == 403, tenant
        assert response.content_type == "application/problem+json"
        problem = await response.json()
        assert problem["status"] == 403
        named = isinstance(tenant, str) and tenant != ""
        expected = "tenant claim 'org' is not a tenant name" if named else "names no tenant"
        assert expected in problem["detail"], problem
    assert await db["entities"].count_documents({}) == 0


async def test_the_admin_ui_refuses_a_provider_token_with_a_bad_tenant_and_opens_no_session(
    aiohttp_client: Any, aiohttp_server: Any, make_app: Callable[..., web.Application]
) -> None:
    client = await _app(aiohttp_client, aiohttp_server, make_app)
    db = client.app[services_key].store.db
    for tenant in ("acme/../globex", "a" * 101):
        token = _idp_token(org=tenant, realm_access={"roles": ["admin"]})
        csrf_token = await csrf(client, "/admin/login")
        response = await client.post(
            "/admin/login/token",
            data={"csrf": csrf_token, "token": token},
            allow_redirects=False,
        )
        assert response.status == 401
        assert "rabbot_session" not in response.cookies
    assert await db["ui_sessions"].count_documents({}) == 0
    good = _idp_token(realm_access={"roles": ["admin"]})
    response = await client.post(
        "/admin/login/token",
        data={"csrf": await csrf(client, "/admin/login"), "token": good},
        allow_redirects=False,
    )
    assert response.status == 303  # the same provider, a tenant name: a session


async def test_a_provider_subject_that_is_no_name_is_401(
    aiohttp_client: Any, aiohttp_server: Any, make_app: Callable[..., web.Application]
) -> None:
    """The subject becomes the session's and the audit's: control characters or a megabyte of
    it are refused like a bad signature."""
    client = await _app(aiohttp_client, aiohttp_server, make_app)
    for subject in ("ana\nadmin", "\x00", "a" * 257, ""):
        token = _idp_token(sub=subject, realm_access={"roles": ["admin"]})
        response = await client.get(
            "/api/v1/entities/vehicle", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status == 401, subject
    token = _idp_token(sub="Ana Lúcia", realm_access={"roles": ["admin"]})
    response = await client.get(
        "/api/v1/entities/vehicle", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 200


async def test_a_provider_whose_keys_cannot_be_fetched_is_503_with_retry_after(
    aiohttp_client: Any, aiohttp_server: Any, make_app: Callable[..., web.Application]
) -> None:
    """Its key server down is no fault of the caller's (not 401) nor an answer of a partner's
    (not 502): a 503 to retry, as for a trigger whose partner's keys are unreachable."""

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance")

    client = await _app(aiohttp_client, aiohttp_server, make_app, certs=down)
    token = _idp_token(realm_access={"roles": ["admin"]})
    response = await client.get(
        "/api/v1/entities/vehicle", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 503
    assert response.headers["Retry-After"] == "30"
    problem = await response.json()
    assert problem["detail"] == "the identity provider's signing keys cannot be fetched now"


async def test_a_ui_token_login_while_the_providers_keys_cannot_be_fetched_says_try_again(
    aiohttp_client: Any, aiohttp_server: Any, make_app: Callable[..., web.Application]
) -> None:
    """The admin UI's token login with the provider's keys down: the login page says they
    cannot be fetched, to try again (503, Retry-After), never that the token is not valid,
    and counts nothing toward the address's lockout (everyone behind the proxy shares it)."""

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance")

    client = await _app(aiohttp_client, aiohttp_server, make_app, certs=down)
    token = _idp_token(realm_access={"roles": ["admin"]})
    for _ in range(MAX_FAILURES + 2):
        data = {"csrf": await csrf(client, "/admin/login"), "token": token}
        refused = await client.post("/admin/login/token", data=data, allow_redirects=False)
        page = await refused.text()
        assert refused.status == 503 and refused.headers["Retry-After"] == "30", page
        assert "cannot be fetched now; try again in 30 s" in html.unescape(page)
        assert "not valid" not in page
    # Nothing counted: the address's first junk token is the first failure, not a lockout.
    data = {"csrf": await csrf(client, "/admin/login"), "token": "junk"}
    junk = await client.post("/admin/login/token", data=data, allow_redirects=False)
    assert junk.status == 401
