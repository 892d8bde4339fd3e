"""Every configured field that makes the gateway open a connection, tried against an internal
service in production settings (`GATEWAY_OUTBOUND_ALLOW` empty): a partner's base URL (its
actions' invokes, deliveries, flow fetches, schedule polls, SMS and push channels), a
partner's token endpoints (OAuth2 `token_url`, a Google service account's `token_uri`,
Geotab's `url`), a trigger's `jwks_url`, an e-mail channel's SMTP host. Each is refused for
every spelling of an internal address — loopback as decimal, octal, hex, short, with a
trailing dot, IPv4-mapped IPv6, a DNS name resolving to it — and for cloud metadata,
private and link-local addresses, and the internal service sees no connection at all.

gateway/outbound/ssrf.py holds the checks (tests/test_ssrf.py tests them one by one); this
walks the fields, so a new field that opened its own connection would show here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.web.state import services_key
from tests.fcm_double import Fcm, fcm
from tests.partner_double import (
    create_action,
    create_partner,
    create_subscription,
    post,
    upload_mapping,
)
from tests.support import auth
from tests.triggers_support import MAPPINGS, create_trigger

Client = TestClient[Any, Any]
__all__ = ["fcm"]  # the fixture


class Internal:
    """An internal service on 127.0.0.1 that counts every connection made to it (and answers
    each with a JSON 200, so a connection that got through would also look served)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            body = b'{"access_token": "t", "expires_in": 3600, "keys": []}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def spellings(self) -> list[str]:
        """Base URLs that all reach this service, or an internal address like it."""
        port = self.port
        return [
            f"http://127.0.0.1:{port}",
            f"http://2130706433:{port}",  # decimal
            f"http://017700000001:{port}",  # octal
            f"http://0177.0.0.1:{port}",  # octal parts
            f"http://0x7f.0.0.1:{port}",  # hex
            f"http://127.1:{port}",  # short
            f"http://127.0.0.1.:{port}",  # trailing dot
            f"http://[::ffff:127.0.0.1]:{port}",  # IPv4-mapped IPv6
            f"http://[::ffff:7f00:1]:{port}",
            f"http://localhost:{port}",  # a DNS name resolving to loopback
            f"http://LocalHost:{port}",
            "http://169.254.169.254",  # cloud metadata
            "http://[fd00:ec2::254]",
            "http://[::ffff:169.254.169.254]",
            "http://10.0.0.1:9",  # private
            "http://[fe80::1]:9",  # link-local
        ]


@pytest.fixture
async def internal() -> AsyncIterator[Internal]:
    service = Internal()
    await service.start()
    yield service
    assert service.server is not None
    service.server.close()
    await service.server.wait_closed()


@pytest.fixture
async def production(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> Client:
    """The gateway as deployed: no outbound address allow-listed."""
    client: Client = await aiohttp_client(make_app(outbound_allow=()))
    return client


_REFUSED = ("loopback", "private", "link-local", "cloud metadata", "reserved")


def _says_refused(text: str) -> bool:
    return "GATEWAY_OUTBOUND_ALLOW" in text and any(why in text for why in _REFUSED)


async def _invoke(client: Client, partner_id: str, n: int) -> dict[str, Any]:
    """The problem answered to an invoke of a new action of the partner: nothing sent."""
    action = await create_action(
        client, partner_id, name=f"lookup-{n}", method="GET", path="/lookup", mode="proxy"
    )
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    problem: dict[str, Any] = await response.json()
    assert response.status == 502, problem
    return problem


async def test_a_partners_base_url_is_refused_in_every_spelling_of_an_internal_address(
    production: Client, internal: Internal
) -> None:
    for n, base_url in enumerate(internal.spellings()):
        partner = await create_partner(production, base_url, name=f"p{n}", timeout_seconds=1)
        problem = await _invoke(production, partner["id"], n)
        # Refused by the guard, or a URL the URL library cannot send (2130706433 as a host)
        assert problem["partner_error"] == "blocked", (base_url, problem)
    assert internal.connections == 0


async def test_a_partners_token_endpoints_are_refused_in_every_spelling(
    production: Client, internal: Internal, fcm: Fcm
) -> None:
    """OAuth2's `token_url`, a service account's `token_uri` and Geotab's `url` are called
    before the partner's base URL (a name that resolves nowhere here): each is refused."""
    n = 0
    for url in internal.spellings():
        for auth_config in (
            {
                "type": "oauth2_client_credentials",
                "token_url": f"{url}/oauth/token",
                "client_id": "gw",
                "client_secret": "s",
            },
            {
                "type": "google_service_account",
                "service_account": {**fcm.service_account(), "token_uri": f"{url}/token"},
            },
            {
                "type": "geotab",
                "url": f"{url}/apiv1",
                "database": "db",
                "username": "u",
                "password": "p",
            },
        ):
            n += 1
            partner = await create_partner(
                production,
                "https://partner.invalid",
                name=f"p{n}",
                auth=auth_config,
                timeout_seconds=1,
            )
            problem = await _invoke(production, partner["id"], n)
            assert problem["partner_error"] == "blocked", (auth_config["type"], url, problem)
    assert internal.connections == 0


_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def test_a_triggers_jwks_url_is_refused_in_every_spelling(
    production: Client, internal: Internal
) -> None:
    token = jwt.encode({"aud": "rabbot", "exp": 4102444800}, _KEY, algorithm="RS256")
    for n, url in enumerate(internal.spellings()):
        auth_config = {"mode": "partner_jwt", "jwks_url": f"{url}/jwks", "audience": "rabbot"}
        trigger = await create_trigger(production, name=f"t{n}", auth=auth_config)
        response = await production.post(
            f"/hooks/{trigger['id']}",
            json={"plate": "ABC1D23"},
            headers={"Authorization": f"Bearer {token}"},
        )
        # The keys cannot be fetched: a 503 (the partner may retry), nothing written
        assert response.status == 503, (url, response.status, await response.text())
    assert internal.connections == 0
    assert (await production.get("/api/v1/entities/vehicle", headers=auth())).status == 200
    listed = await (await production.get("/api/v1/entities/vehicle", headers=auth())).json()
    assert listed["items"] == []  # nothing written


async def test_an_email_channels_smtp_host_is_refused_in_every_spelling(
    production: Client, internal: Internal
) -> None:
    hosts = sorted({urlsplit(url).hostname or "" for url in internal.spellings()})
    refused_hosts = []
    for n, host in enumerate(hosts):
        channel = {
            "name": f"mail{n}",
            "type": "email",
            "smtp": {"host": host, "port": internal.port, "security": "none"},
            "from": "frota@acme.com.br",
        }
        created = await production.post("/api/v1/channels", json=channel, headers=auth())
        if created.status == 422:  # not a host name at all (2130706433)
            refused_hosts.append(host)
            continue
        assert created.status == 201, await created.text()
        result = await post(
            production, f"/api/v1/channels/mail{n}/test", {"to": "ops@acme.com.br"}, status=200
        )
        # Refused by the guard; an address with a trailing dot is a name no resolver knows
        unknown = host.endswith(".") and "Name or service not known" in result["detail"]
        assert _says_refused(result["detail"]) or unknown, (host, result)
    assert internal.connections == 0


async def test_deliveries_and_flow_fetches_to_an_internal_partner_are_refused(
    production: Client, internal: Internal
) -> None:
    services = production.app[services_key]
    partner = await create_partner(
        production, f"http://localhost:{internal.port}", timeout_seconds=1
    )
    action = await create_action(production, partner["id"])
    await create_subscription(production, action["id"], ("entity.created",))
    reader = await create_action(
        production,
        partner["id"],
        name="who-drives",
        method="GET",
        path="/x",
        mode="proxy",
        read_only=True,
    )
    flow = {
        "name": "lookup",
        "on": {"events": ["entity.created"]},
        "steps": [{"id": "hr", "fetch": reader["name"]}],
    }
    uploaded = await production.post("/api/v1/flows", json=flow, headers=auth())
    assert uploaded.status == 201, await uploaded.text()
    await post(production, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await services.relay.run_until_idle()
    await services.flow_runner.run_until_idle()
    await services.delivery_worker.run_until_idle()

    deliveries = await (await production.get("/api/v1/deliveries", headers=auth())).json()
    (delivery,) = deliveries["items"]
    detail = await (
        await production.get(f"/api/v1/deliveries/{delivery['id']}", headers=auth())
    ).json()
    assert _says_refused(str(detail)), detail
    runs = await (await production.get("/api/v1/flows/lookup/runs", headers=auth())).json()
    (run,) = runs["items"]
    detail = await (await production.get(f"/api/v1/flow-runs/{run['id']}", headers=auth())).json()
    assert _says_refused(str(detail)), detail
    assert internal.connections == 0


async def test_schedule_polls_and_sms_channels_to_an_internal_partner_are_refused(
    production: Client, internal: Internal
) -> None:
    partner = await create_partner(
        production, f"http://[::ffff:127.0.0.1]:{internal.port}", timeout_seconds=1
    )
    reader = await create_action(
        production,
        partner["id"],
        name="feed",
        method="GET",
        path="/feed",
        mode="proxy",
        read_only=True,
    )
    mapping = "name: feed\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
    uploaded = await production.post(
        "/api/v1/mappings",
        data=(mapping + "fields: {plate: placa}\n").encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert uploaded.status == 201, await uploaded.text()
    schedule = await post(
        production,
        "/api/v1/schedules",
        {
            "name": "poll",
            "action_id": reader["id"],
            "every": "1h",
            "target": {"entity_type": "vehicle", "mapping": "feed"},
        },
    )
    started = await production.post(f"/api/v1/schedules/{schedule['id']}/run", headers=auth())
    assert started.status == 202, await started.text()
    await production.app[services_key].schedule_runner.run_until_idle()
    runs = await production.get(f"/api/v1/schedules/{schedule['id']}/runs", headers=auth())
    (run,) = (await runs.json())["items"]
    assert _says_refused(str(run)), run

    await upload_mapping(production, (MAPPINGS / "sms-zenvia.yaml").read_text())
    sms = await create_action(
        production, partner["id"], name="sms", path="/sms", request_mapping="sms-zenvia"
    )
    channel = {"name": "sms", "type": "sms", "action_id": sms["id"], "from": "RABBOT"}
    await post(production, "/api/v1/channels", channel)
    result = await post(
        production, "/api/v1/channels/sms/test", {"to": "+5511987654321"}, status=200
    )
    assert _says_refused(result["detail"]), result
    assert internal.connections == 0


async def test_a_redirect_to_an_internal_address_is_an_answer_never_followed(
    aiohttp_client: Any,
    aiohttp_server: Any,
    make_app: Callable[..., web.Application],
    internal: Internal,
) -> None:
    """Only the partner's own host is allowed (by name): its redirect of a call or of a
    token request to an internal address is recorded as its answer, never requested."""
    target = f"http://127.0.0.1:{internal.port}/latest/meta-data/"

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(target)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    partner_server = await aiohttp_server(app, host="127.0.0.1")
    client: Client = await aiohttp_client(make_app(outbound_allow=("localhost",)))
    base_url = f"http://localhost:{partner_server.port}"

    plain = await create_partner(client, base_url, name="plain", timeout_seconds=1)
    problem = await _invoke(client, plain["id"], 1)
    assert "not followed" in problem["detail"] or "302" in problem["detail"], problem
    oauth = await create_partner(
        client,
        base_url,
        name="oauth",
        timeout_seconds=1,
        auth={
            "type": "oauth2_client_credentials",
            "token_url": f"{base_url}/oauth/token",
            "client_id": "gw",
            "client_secret": "s",
        },
    )
    problem = await _invoke(client, oauth["id"], 2)
    assert "token endpoint" in problem["detail"], problem
    assert internal.connections == 0


async def test_an_admin_identity_providers_jwks_url_is_refused_in_every_spelling(
    aiohttp_client: Any, make_app: Callable[..., web.Application], internal: Internal
) -> None:
    """GATEWAY_ADMIN_JWKS_URL is the operator's, yet fetched through the same guard: an
    internal address must be allow-listed like any other."""
    token = jwt.encode(
        {"aud": "rabbot-admin", "iss": "idp", "exp": 4102444800},
        _KEY,
        algorithm="RS256",
        headers={"kid": "idp-1"},
    )
    for url in internal.spellings()[:11]:  # those that reach the internal service
        client: Client = await aiohttp_client(
            make_app(
                outbound_allow=(),
                admin_jwks_url=f"{url}/certs",
                admin_jwt_issuer="idp",
                admin_jwt_audience="rabbot-admin",
            )
        )
        response = await client.get(
            "/api/v1/entities/vehicle", headers={"Authorization": f"Bearer {token}"}
        )
        # The keys could not be fetched (the guard refused the address): 503, never a 401
        # nor a token accepted.
        assert response.status == 503, (url, response.status, await response.text())
        await client.close()
    assert internal.connections == 0
