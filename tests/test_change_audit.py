"""Partner, subscription, admin-UI user and notification-channel changes are logged at INFO
on `gateway.audit`, as a trigger's access changes are: a restore of an older backup undoes
them silently (a partner's credentials or URL, a subscription added or removed, a UI user
added, removed or demoted, a channel's SMTP login), and these lines are the operator's redo
list (docs/operations.md "Backups"). They name what changed, never a credential."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.services import Services
from tests.partner_double import create_action, create_partner, create_subscription, post
from tests.support import auth
from tests.ui_support import PASSWORD, Client, csrf, log_in, make_user

SECRETS = ("s3cr3t", "n3w-t0ken", "smtp-s3nha", "outra-s3nha", PASSWORD)


def _audited(caplog: pytest.LogCaptureFixture, subject: str) -> list[tuple[Any, ...]]:
    """(id, change, members) of each `gateway.audit` line about a `subject`, in order; every
    line of the tenant acme, at INFO, with no credential in it."""
    lines = [r for r in caplog.records if r.name == "gateway.audit"]
    for record in lines:
        said = f"{record.getMessage()} {record.__dict__}"
        assert record.levelno == logging.INFO and record.__dict__["tenant"] == "acme", said
        assert not [secret for secret in SECRETS if secret in said], said
    return [
        (r.__dict__[subject], r.__dict__["change"], r.__dict__.get("members"))
        for r in lines
        if subject in r.__dict__
    ]


async def _call(client: Client, method: str, path: str, body: Any = None) -> Any:
    answer = await client.request(method, path, json=body, headers=auth())
    assert answer.status < 300, await answer.text()
    return None if answer.status == 204 else await answer.json()


async def test_partner_changes_are_logged_without_their_credentials(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    erp = await create_partner(client, "https://erp.example.com")
    path = f"/api/v1/partners/{erp['id']}"
    changed = {
        "base_url": "https://erp2.example.com",
        "auth": {"type": "bearer", "token": "n3w-t0ken"},
    }
    await _call(client, "PATCH", path, changed)
    await _call(client, "PATCH", path, {"timeout_seconds": 2})  # as it was: nothing to redo
    await _call(client, "DELETE", path)
    assert _audited(caplog, "partner") == [
        (erp["id"], "created", None),
        (erp["id"], "updated", ["auth", "base_url"]),
        (erp["id"], "deleted", None),
    ]
    [created] = [r for r in caplog.records if r.__dict__.get("change") == "created"]
    assert created.getMessage() == f"partner changed: {erp['id']} created of tenant acme"
    assert created.__dict__["partner_name"] == "ERP"


async def test_subscription_changes_are_logged(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    erp = await create_partner(client, "https://erp.example.com")
    action = await create_action(client, erp["id"])
    caplog.set_level(logging.INFO, logger="gateway.audit")
    subscription = await create_subscription(client, action["id"])
    path = f"/api/v1/subscriptions/{subscription['id']}"
    await _call(client, "PATCH", path, {"event_types": ["entity.created"], "status": "disabled"})
    rotated = await _call(client, "POST", f"{path}/rotate-secret")
    await _call(client, "DELETE", path)
    assert _audited(caplog, "subscription") == [
        (subscription["id"], "created", None),
        (subscription["id"], "updated", ["event_types", "status"]),
        (subscription["id"], "secret_rotated", None),
        (subscription["id"], "deleted", None),
    ]
    logged = str([(r.getMessage(), r.__dict__) for r in caplog.records])
    assert subscription["secret"] not in logged and rotated["secret"] not in logged


async def test_channel_changes_are_logged_without_the_smtp_password(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    smtp = {"host": "127.0.0.1", "port": 2525, "security": "none", "cleartext_auth": True}
    body = {
        "name": "email",
        "type": "email",
        "smtp": {**smtp, "username": "frota", "password": "smtp-s3nha"},
        "from": "Frota Acme <alertas@acme.com.br>",
    }
    channel = await post(client, "/api/v1/channels", body)
    path = f"/api/v1/channels/{channel['id']}"
    new_login = {**smtp, "username": "frota", "password": "outra-s3nha"}
    await _call(client, "PATCH", path, {"smtp": new_login})
    await _call(client, "PATCH", path, {"description": "alertas da frota"})
    await _call(client, "DELETE", path)
    assert _audited(caplog, "channel") == [
        (channel["id"], "created", None),
        (channel["id"], "updated", ["smtp"]),
        (channel["id"], "updated", ["description"]),
        (channel["id"], "deleted", None),
    ]


async def test_admin_ui_user_changes_are_logged_without_their_passwords(
    client: Client, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/users")
    caplog.set_level(logging.INFO, logger="gateway.audit")
    vera = "vera@acme.com.br"
    steps = [
        ("/admin/users", {"email": vera, "role": "viewer", "password": PASSWORD}),
        ("/admin/users/role", {"email": vera, "role": "admin"}),
        ("/admin/users/delete", {"email": vera}),
    ]
    for path, form in steps:
        answer = await client.post(path, data={"csrf": token, **form}, allow_redirects=False)
        assert answer.status == 303, await answer.text()
    assert _audited(caplog, "user") == [
        (vera, "created", None),
        (vera, "role_changed", None),
        (vera, "deleted", None),
    ]
    roles = [r.__dict__.get("role") for r in caplog.records if r.name == "gateway.audit"]
    assert roles == ["viewer", "admin", None]


async def test_a_change_that_stores_what_is_stored_is_not_logged(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A client re-applying its configuration (GET, then PATCH the same values, as an
    infrastructure-as-code tool does) changes nothing, though its body is not the stored form
    (defaults filled in, lists sorted, addresses written out): no line on the redo list."""
    erp = await create_partner(client, "https://erp.example.com", rate_limit={"per_second": 5})
    action = await create_action(client, erp["id"])
    types = ("entity.updated", "entity.created")
    subscription = await create_subscription(client, action["id"], types)
    smtp = {"host": "127.0.0.1", "port": 2525, "security": "none"}
    sent_from = "<alertas@acme.com.br>"
    email = {"name": "email", "type": "email", "smtp": smtp, "from": sent_from}
    channel = await post(client, "/api/v1/channels", email)
    caplog.set_level(logging.INFO, logger="gateway.audit")
    same_partner = {"rate_limit": {"per_second": 5}, "timeout_seconds": 2, "status": "active"}
    await _call(client, "PATCH", f"/api/v1/partners/{erp['id']}", same_partner)
    same_subscription = {"event_types": [*types, "entity.updated"], "status": "active"}
    await _call(client, "PATCH", f"/api/v1/subscriptions/{subscription['id']}", same_subscription)
    same_channel = {"name": "email", "from": sent_from, "description": None}
    await _call(client, "PATCH", f"/api/v1/channels/{channel['id']}", same_channel)
    assert [r.getMessage() for r in caplog.records if r.name == "gateway.audit"] == []
    await _call(client, "PATCH", f"/api/v1/partners/{erp['id']}", {"rate_limit": None})
    assert _audited(caplog, "partner") == [(erp["id"], "updated", ["rate_limit"])]
