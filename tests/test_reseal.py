"""`gateway reseal` (step 2 of rotating GATEWAY_SECRET_KEY): every stored secret (partner
credentials and named secrets, subscription and signed-trigger secrets, SMTP passwords) sealed
again under the new key with the same plaintext and record, so the old key can go; what no
key opens is named and left; a record an admin changed meanwhile is not overwritten."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from pymongo import MongoClient

from gateway.actions.catalog import auth_context, secrets_context, subscription_context
from gateway.auth.keyring import KeyRing
from gateway.auth.secretbox import SecretBox, SecretBoxError
from gateway.config import Settings
from gateway.keys import reseal_secrets
from gateway.notify.channels import smtp_context
from gateway.services import Services
from gateway.store import sealed
from gateway.triggers.compiled import secret_context
from tests.partner_double import Client, create_action, create_partner, create_subscription, post
from tests.support import SECRET_KEY, cli_env
from tests.triggers_support import create_trigger

NEW_KEY = "the-new-secret-key-0123456789abcdef0123456789"
OLD = SecretBox(KeyRing.from_secret(SECRET_KEY))  # what the app sealed with
ROTATING = SecretBox(KeyRing.from_secret(f"{NEW_KEY},{SECRET_KEY}"))  # step 1 deployed
NEW_ONLY = SecretBox(KeyRing.from_secret(NEW_KEY))  # step 4: the old key dropped
Sealed = tuple[str, str, str]  # (where, context, sealed value)


async def _store_secrets(client: Client) -> dict[str, str]:
    """A partner with credentials and a named secret, a subscription, a signed trigger and
    an e-mail channel with an SMTP password: their ids."""
    erp = await create_partner(client, "http://127.0.0.1:9/", secrets={"api_key": "k-123"})
    action = await create_action(client, erp["id"])
    sub = await create_subscription(client, action["id"])
    trigger = await create_trigger(client, auth={"mode": "hmac", "preset": "motive"})
    channel = await post(
        client,
        "/api/v1/channels",
        {
            "name": "email",
            "type": "email",
            "smtp": {"host": "127.0.0.1", "port": 2525, "username": "u", "password": "smtp-pw"},
            "from": "Frota Acme <alertas@acme.com.br>",
        },
    )
    ids = (erp["id"], sub["id"], trigger["id"], channel["id"])
    return dict(zip(("partner", "subscription", "trigger", "channel"), ids, strict=True))


async def _sealed(services: Services, ids: dict[str, str]) -> list[Sealed]:
    """Every sealed value stored for those records, with the context it opens under."""
    db = services.store.db
    partner = await db["partners"].find_one({"name": "ERP"})
    sub = await db["subscriptions"].find_one({})
    trigger = await db["triggers"].find_one({})
    channel = await db["channels"].find_one({"name": "email"})
    assert partner and sub and trigger and channel
    return [
        ("partner auth", auth_context(ids["partner"]), partner["auth_sealed"]),
        ("partner secrets", secrets_context(ids["partner"]), partner["secrets_sealed"]),
        *[
            ("subscription", subscription_context(ids["subscription"]), s["sealed"])
            for s in sub["secrets"]
        ],
        *[
            ("trigger", secret_context(ids["trigger"]), s["sealed"])
            for s in trigger["auth"]["secrets"]
        ],
        ("smtp", smtp_context(ids["channel"]), channel["smtp_sealed"]),
    ]


async def test_every_stored_secret_opens_under_the_new_key_alone_with_the_same_value(
    client: Client, services: Services
) -> None:
    ids = await _store_secrets(client)
    before = await _sealed(services, ids)
    assert len(before) == 5
    for _, context, value in before:
        with pytest.raises(SecretBoxError):
            NEW_ONLY.open(value, context=context)  # why the old key cannot simply go

    counted = await reseal_secrets(services.store, ROTATING, dry_run=True)
    assert (counted.resealed, counted.current, counted.unreadable) == (5, 0, [])
    assert await _sealed(services, ids) == before  # a dry run changes nothing

    done = await reseal_secrets(services.store, ROTATING)
    assert (done.resealed, done.current, done.changed, done.unreadable) == (5, 0, 0, [])
    after = await _sealed(services, ids)
    for (where, context, old), (_, _, new) in zip(before, after, strict=True):
        assert new != old, where
        assert NEW_ONLY.open(new, context=context) == OLD.open(old, context=context), where
    again = await reseal_secrets(services.store, ROTATING)
    assert (again.resealed, again.current) == (0, 5)


async def test_a_secret_no_key_opens_is_named_and_left_as_it_is(
    client: Client, services: Services
) -> None:
    ids = await _store_secrets(client)
    stranger = SecretBox(KeyRing.from_secret("a-key-nobody-deployed-0123456789abcdef"))
    foreign = stranger.seal("x", context=smtp_context(ids["channel"]))
    db = services.store.db
    await db["channels"].update_one({"name": "email"}, {"$set": {"smtp_sealed": foreign}})
    done = await reseal_secrets(services.store, ROTATING)
    assert done.resealed == 4
    assert done.unreadable == [f"channels/{(await db['channels'].find_one({}))['_id']}/smtp_sealed"]
    assert (await db["channels"].find_one({}))["smtp_sealed"] == foreign


async def test_a_record_changed_while_it_is_resealed_keeps_the_change(
    client: Client, services: Services, settings: Settings, mongodb_uri: str
) -> None:
    """An admin replaces a partner's credentials between the read and the write: the new
    credentials (sealed under the new key by the admin's process) stay."""
    await _store_secrets(client)
    admins = MongoClient(mongodb_uri, retryWrites=False)
    partners = admins[settings.database]["partners"]
    replaced = ROTATING.seal({"type": "bearer", "token": "new"}, context="whatever")

    def renew_while_an_admin_writes(token: str) -> str | None:
        if partners.find_one({"auth_sealed": token}) is not None:
            partners.update_one({"auth_sealed": token}, {"$set": {"auth_sealed": replaced}})
        return ROTATING.rotate(token) if ROTATING.needs_rotation(token) else token

    try:
        done = await sealed.reseal(services.store.db, renew_while_an_admin_writes)
    finally:
        admins.close()
    assert done.changed == 1
    assert (await services.store.db["partners"].find_one({}))["auth_sealed"] == replaced


@pytest.mark.timeout(120)  # two child processes, each opening the services
async def test_the_cli_counts_then_reseals_and_the_old_key_can_go(
    client: Client, services: Services, settings: Settings, mongodb_uri: str
) -> None:
    ids = await _store_secrets(client)
    env = {**cli_env(settings, mongodb_uri), "GATEWAY_SECRET_KEY": f"{NEW_KEY},{SECRET_KEY}"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "gateway", "reseal", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)

    counted = await asyncio.to_thread(cli, "--dry-run")
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.startswith("would seal 5 secrets again under the current key; 0")
    done = await asyncio.to_thread(cli)
    assert done.returncode == 0 and done.stdout.startswith("sealed 5 secrets again")
    for where, context, value in await _sealed(services, ids):
        assert NEW_ONLY.open(value, context=context), where
