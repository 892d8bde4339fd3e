"""Helpers for the admin UI's tests: users, logging in over HTTP, reading forms; a polled
feed's mapping and an alert flow (a partner call and an e-mail) the pages show."""

from __future__ import annotations

import functools
import re
from html.parser import HTMLParser
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import TestClient

from gateway import accounts
from gateway.auth.passwords import hash_password
from gateway.services import Services
from gateway.web.state import services_key
from tests.flow_support import drain
from tests.partner_double import post
from tests.support import auth

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
    """A user of `tenant` whose password is PASSWORD, made by `create_user` (its checks, its
    document) with PASSWORD's hash made once per process (`_password_hash`): each new scrypt
    of the same password cost ~0.1 s of CPU and proved nothing a login does not. Logging in
    still checks the password against the stored hash with the gateway's own scrypt cost."""
    with mock.patch.object(accounts, "hashed", _hashed):
        await services.accounts.create_user(tenant, email, role, PASSWORD)
    return email


_hash_anew = accounts.hashed


@functools.cache
def _password_hash() -> str:
    """PASSWORD hashed as `create_user` hashes it (the same parameters, a random salt)."""
    return hash_password(PASSWORD)


async def _hashed(password: str) -> str:
    """PASSWORD's hash made once; any other password (an app's own work meanwhile) anew."""
    return _password_hash() if password == PASSWORD else await _hash_anew(password)


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


async def log_in_from(
    client: Client, login_page: str, tenant: str = "acme", email: str = "ana@acme.com.br"
) -> Any:
    """Log in again from a login page a form posted after its session ended answered: its
    form, carrying what that form kept, with the credentials filled in."""
    login = replaced(
        form_fields(login_page, "/admin/login"), tenant=tenant, email=email, password=PASSWORD
    )
    return await client.post("/admin/login", data=login, allow_redirects=False)


class _FormReader(HTMLParser):
    """The fields one form of a page submits, as a browser would send them untouched."""

    def __init__(self, action: str) -> None:
        super().__init__(convert_charrefs=True)
        self._action = action
        self._inside = False
        self._textarea: str | None = None
        self._select: str | None = None
        self._first_option: str | None = None
        self._selected = False
        self.fields: list[tuple[str, str]] = []
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._inside = a.get("action") == self._action and not self.fields
        if not self._inside:
            return
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.fields.append((name, a.get("value", "on" if a.get("type") == "checkbox" else "")))
        elif tag == "textarea" and name:
            self._textarea, self._text = name, []
        elif tag == "select" and name:
            self._select, self._first_option, self._selected = name, None, False
        elif tag == "option" and self._select is not None:
            value = a.get("value", "")
            if self._first_option is None:
                self._first_option = value
            if "selected" in a and not self._selected:
                self._selected = True
                self.fields.append((self._select, value))

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False
        elif tag == "textarea" and self._textarea is not None:
            self.fields.append((self._textarea, "".join(self._text).removeprefix("\n")))
            self._textarea = None
        elif tag == "select" and self._select is not None:
            if not self._selected and self._first_option is not None:
                self.fields.append((self._select, self._first_option))
            self._select = None


def form_fields(html: str, action: str) -> list[tuple[str, str]]:
    """What the form posting to `action` sends when submitted as the page shows it."""
    reader = _FormReader(action)
    reader.feed(html)
    assert reader.fields, f"the page has no form posting to {action}"
    return reader.fields


def replaced(fields: list[tuple[str, str]], **changes: str) -> list[tuple[str, str]]:
    """A form's fields with some typed over (dots in names written as `__`)."""
    typed = {k.replace("__", "."): v for k, v in changes.items()}
    return [(name, typed.get(name, value)) for name, value in fields]


def queries(monkeypatch: pytest.MonkeyPatch, *collections: Any) -> dict[str, int]:
    """How many queries (find, find_one) the app sends to each of its `collections` (the
    services' own collection objects) from now on, by collection name: what a page costs."""
    counts = dict.fromkeys((c.name for c in collections), 0)

    def counting(name: str, call: Any) -> Any:
        def counted(*args: Any, **kw: Any) -> Any:
            counts[name] += 1
            return call(*args, **kw)

        return counted

    for collection in collections:
        for method in ("find", "find_one"):
            call = getattr(collection, method)
            monkeypatch.setattr(collection, method, counting(collection.name, call))
    return counts


# A supplier is created → `seen` passes its guard, `guarded` is skipped (no such field) and
# `mark` sets an attribute: a run with a passed, a skipped and a `set` step.
GUARDED_FLOW: dict[str, Any] = {
    "name": "marca-fornecedor",
    "on": {"events": ["entity.created"], "filter": {"entity_type": "supplier"}},
    "steps": [
        {"id": "seen", "when": "entity.name"},
        {
            "id": "guarded",
            "when": "entity.nonexistent",
            "set": {
                "entity": {"type": "supplier", "ref": "entity.cnpj"},
                "fields": {"contact": "'x'"},
            },
        },
        {
            "id": "mark",
            "when": "entity.name",
            "set": {
                "entity": {"type": "supplier", "ref": "entity.cnpj"},
                "fields": {"attributes.seen": "'y'"},
            },
        },
    ],
}


async def guarded_run(client: Client) -> dict[str, Any]:
    """GUARDED_FLOW's run for a new supplier, finished."""
    await post(client, "/api/v1/flows", GUARDED_FLOW)
    supplier = {"name": "Fornecedor Ação", "cnpj": "11444777000161"}
    await post(client, "/api/v1/entities/supplier", supplier)
    await drain(client.app[services_key])
    response = await client.get(f"/api/v1/flows/{GUARDED_FLOW['name']}/runs", headers=auth())
    (run,) = (await response.json())["items"]
    assert [s["outcome"] for s in run["steps"]] == ["passed", "skipped", "written"], run
    return dict(run)
