"""Access changes of triggers (rotate, revoke, disable, enable, delete) are logged at INFO on
`gateway.audit`, outside the database: a restore of an older backup undoes them silently (a
revoked token writes again), and these lines are how an operator finds them to redo
(docs/operations.md "Backups"). Never a credential in them."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import VEHICLE, Client, create_trigger


async def test_every_access_change_of_a_trigger_is_logged_outside_the_database(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    trigger = await create_trigger(client)
    path = f"/api/v1/triggers/{trigger['id']}"
    caplog.set_level(logging.INFO, logger="gateway.audit")
    rotated = await client.post(f"{path}/rotate", json={"grace_seconds": 60}, headers=auth())
    assert rotated.status == 200, await rotated.text()
    token = (await rotated.json())["token"]
    for action in ("revoke", "disable", "enable"):
        answer = await client.post(f"{path}/{action}", headers=auth())
        assert answer.status == 200, await answer.text()
    assert (await client.delete(path, headers=auth())).status == 204

    lines = [r for r in caplog.records if r.name == "gateway.audit"]
    changes = [(r.__dict__["trigger"], r.__dict__["change"]) for r in lines]
    assert changes == [
        (trigger["id"], change)
        for change in ("rotated", "revoked", "disabled", "enabled", "deleted")
    ]
    assert all(r.levelno == logging.INFO and r.__dict__["tenant"] == "acme" for r in lines)
    assert lines[0].__dict__["grace_seconds"] == 60
    assert trigger["id"] in lines[1].getMessage() and "revoked" in lines[1].getMessage()
    for secret in (trigger["token"], token):
        assert not any(secret in f"{r.getMessage()} {r.__dict__}" for r in lines)


async def test_a_token_issued_after_the_restored_database_is_refused_and_logged_as_such(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A trigger rotated after the backup, the backup restored: the partner's new token,
    signed by this gateway, is refused with the 401 a forged one gets (its id is not in the
    database). Logged once, at WARNING, naming the trigger: the database is older than the
    token. A revoked token, older than what the database holds, is refused without a line."""
    trigger = await create_trigger(client)
    triggers = client.app[services_key].store.db["triggers"]
    backup = (await triggers.find_one({"_id": trigger["id"]}))["tokens"]
    path = f"/api/v1/triggers/{trigger['id']}"
    rotated = await client.post(f"{path}/rotate", json={"grace_seconds": 0}, headers=auth())
    new_token = (await rotated.json())["token"]
    # the restore: the trigger's tokens as the backup held them (taken a while before)
    restored = [{**t, "issued_at": t["issued_at"] - timedelta(seconds=5)} for t in backup]
    await triggers.update_one({"_id": trigger["id"]}, {"$set": {"tokens": restored}})
    caplog.set_level(logging.WARNING, logger="gateway.triggers.receiver")

    async def call(token: str) -> int:
        hook = f"/hooks/{trigger['id']}"
        headers = {"Authorization": f"Bearer {token}"}
        return (await client.post(hook, json=VEHICLE, headers=headers)).status

    for _ in range(40):  # the gate cache follows the change within a second
        if await call(new_token) == 401:
            break
        await asyncio.sleep(0.05)
    assert await call(new_token) == 401
    lines = [r for r in caplog.records if "older than the token" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert lines[0].__dict__["trigger"] == trigger["id"] and new_token not in str(lines[0].__dict__)
    await client.post(f"{path}/revoke", headers=auth())
    caplog.clear()
    assert await call(trigger["token"]) == 401
    assert not [r for r in caplog.records if "older than the token" in r.getMessage()]


async def test_a_patch_replacing_the_signing_secret_or_the_auth_is_logged_never_the_secret(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The partner's new secret replaces the old ones at once (no grace): a restore brings
    the old one back, so the PATCH is on the redo list like a rotation."""
    motive = {"mode": "hmac", "preset": "motive"}
    trigger = await create_trigger(client, auth={**motive, "secret": "my partner's secret!"})
    path = f"/api/v1/triggers/{trigger['id']}"
    merge = {**auth(), "Content-Type": "application/merge-patch+json"}
    caplog.set_level(logging.INFO, logger="gateway.audit")
    for patch in (
        {"auth": {**motive, "secret": "the partner's NEW secret"}},
        {"auth": {**motive, "tolerance_seconds": 60}},
        {"auth": {**motive, "tolerance_seconds": 60}},  # restated: no change
        {"name": "renamed"},
    ):
        answer = await client.patch(path, json=patch, headers=merge)
        assert answer.status == 200, await answer.text()

    lines = [r for r in caplog.records if r.name == "gateway.audit"]
    assert [r.__dict__["change"] for r in lines] == ["secret_replaced", "auth_changed"]
    assert all(r.__dict__["trigger"] == trigger["id"] for r in lines)
    assert not any("secret!" in f"{r.getMessage()} {r.__dict__}" for r in lines)
    assert not any("NEW secret" in f"{r.getMessage()} {r.__dict__}" for r in lines)
