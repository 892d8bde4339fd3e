"""Helpers for the admin UI's tests: users, logging in over HTTP, reading forms; a polled
feed's mapping and an alert flow (a partner call and an e-mail) the pages show."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.services import Services

Client = TestClient[Any, Any]
PASSWORD = "correct horse battery staple"
# A partner's list of vehicles, as a schedule reads it page by page.
POLLED_MAPPING = """\
name: frota-api
direction: inbound
entity_type: vehicle
key: [plate]
items: veiculos
fields:
  plate: {from: placa, transforms: [upper]}
  odometer_km: {from: km, transforms: [number]}
"""
# A vehicle is created → the ERP is told (action `push`) and the fleet e-mailed (channel
# `email`, template ALERT_TEMPLATE); one cooldown key for every vehicle.
ALERT_FLOW: dict[str, Any] = {
    "name": "alerta-frota",
    "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
    "steps": [
        {"id": "erp", "call": "push"},
        {
            "id": "aviso",
            "notify": {
                "channel": "email",
                "template": "alerta",
                "recipients": [{"address": "frota@acme.com.br"}],
                "cooldown": {"key": "'novos-veiculos'", "seconds": 3600},
            },
        },
    ],
}
ALERT_TEMPLATE: dict[str, Any] = {
    "name": "alerta",
    "channel_type": "email",
    "default_locale": "pt-BR",
    "locales": {
        "pt-BR": {
            "subject": "Novo veículo {{ entity.plate }}: {{ entity.model }}",
            "text": "Modelo {{ entity.model }}",
        }
    },
}


async def make_user(
    services: Services, tenant: str = "acme", email: str = "ana@acme.com.br", role: str = "admin"
) -> str:
    await services.accounts.create_user(tenant, email, role, PASSWORD)
    return email


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


async def csrf(client: Client, path: str = "/admin/") -> str:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return csrf_of(await response.text())


async def log_in(
    client: Client, tenant: str = "acme", email: str = "ana@acme.com.br", password: str = PASSWORD
) -> Any:
    token = await csrf(client, "/admin/login")
    return await client.post(
        "/admin/login",
        data={"csrf": token, "tenant": tenant, "email": email, "password": password},
        allow_redirects=False,
    )
