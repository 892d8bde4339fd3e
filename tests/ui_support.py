"""Helpers for the admin UI's tests: users, logging in over HTTP, reading forms."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.services import Services

Client = TestClient[Any, Any]
PASSWORD = "correct horse battery staple"


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
