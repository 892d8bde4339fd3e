"""`gateway reseal` (step 3 of rotating GATEWAY_SECRET_KEY): every stored secret (partner
credentials and named secrets, action, subscription and signed-trigger secrets, SMTP
passwords) sealed again under the new key with the same plaintext and record, so the old key
can go; what no key opens is named and left; a record an admin changed meanwhile is not
overwritten."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from bson import ObjectId
from pymongo import MongoClient

from gateway.actions.action_secrets import action_context
from gateway.actions.catalog import auth_context, secrets_context, subscription_context
from gateway.auth.keyring import KeyRing
from gateway.auth.secretbox import SecretBox, SecretBoxError
from gateway.config import Secret, Settings
from gateway.keys import reseal_secrets
from gateway.notify.channels import smtp_context
from gateway.services import Services
from gateway.store import sealed
from gateway.triggers.compiled import secret_context
from gateway.web.state import services_key
from tests.partner_double import Client, create_action, create_partner, create_subscription, post
from tests.support import SECRET_KEY, admin_token, cli_env, run_command
from tests.triggers_support import create_trigger

NEW_KEY = "the-new-secret-key-0123456789abcdef0123456789"
OLD = SecretBox(KeyRing.from_secret(SECRET_KEY))  # what the app sealed with
ROTATING = SecretBox(KeyRing.from_secret(f"{NEW_KEY},{SECRET_KEY}"))  # step 1 deployed
NEW_ONLY = SecretBox(KeyRing.from_secret(NEW_KEY))  # step 4: the old key dropped
Sealed = tuple[str, str, str]  # (where, context, sealed value)


async def _store_secrets(client: Client) -> dict[str, str]:
    """A partner with credentials and a named secret, an action (its signing secret), a
    subscription, a signed trigger and an e-mail channel with an SMTP password: their ids."""
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
    ids = (erp["id"], action["id"], sub["id"], trigger["id"], channel["id"])
    names = ("partner", "action", "subscription", "trigger", "channel")
    return dict(zip(names, ids, strict=True))


async def _sealed(services: Services, ids: dict[str, str]) -> list[Sealed]:
    """Every sealed value stored for those records, with the context it opens under."""
    db = services.store.db
    partner = await db["partners"].find_one({"name": "ERP"})
    action = await db["actions"].find_one({})
    sub = await db["subscriptions"].find_one({})
    trigger = await db["triggers"].find_one({})
    channel = await db["channels"].find_one({"name": "email"})
    assert partner and action and sub and trigger and channel
    return [
        ("partner auth", auth_context(ids["partner"]), partner["auth_sealed"]),
        ("partner secrets", secrets_context(ids["partner"]), partner["secrets_sealed"]),
        *[
            ("action", action_context(ids["action"]), s["sealed"])
            for s in action["signing"]["secrets"]
        ],
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
    assert len(before) == 6
    for _, context, value in before:
        with pytest.raises(SecretBoxError):
            NEW_ONLY.open(value, context=context)  # why the old key cannot simply go

    counted = await reseal_secrets(services.store, ROTATING, dry_run=True)
    assert (counted.resealed, counted.current, counted.unreadable) == (6, 0, [])
    assert await _sealed(services, ids) == before  # a dry run changes nothing

    done = await reseal_secrets(services.store, ROTATING)
    assert (done.resealed, done.current, done.changed, done.unreadable) == (6, 0, 0, [])
    after = await _sealed(services, ids)
    for (where, context, old), (_, _, new) in zip(before, after, strict=True):
        assert new != old, where
        assert NEW_ONLY.open(new, context=context) == OLD.open(old, context=context), where
    again = await reseal_secrets(services.store, ROTATING)
    assert (again.resealed, again.current) == (0, 6)


async def test_a_secret_no_key_opens_is_named_and_left_as_it_is(
    client: Client, services: Services
) -> None:
    ids = await _store_secrets(client)
    stranger = SecretBox(KeyRing.from_secret("a-key-nobody-deployed-0123456789abcdef"))
    foreign = stranger.seal("x", context=smtp_context(ids["channel"]))
    db = services.store.db
    await db["channels"].update_one({"name": "email"}, {"$set": {"smtp_sealed": foreign}})
    done = await reseal_secrets(services.store, ROTATING)
    assert done.resealed == 5
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


async def test_the_cli_counts_then_reseals_and_the_old_key_can_go(
    client: Client, services: Services, settings: Settings, mongodb_uri: str
) -> None:
    """The commands run in this process (`run_command`); real `reseal` processes:
    tests/test_start_errors.py, tests/test_serve_workers.py."""
    ids = await _store_secrets(client)
    env = {**cli_env(settings, mongodb_uri), "GATEWAY_SECRET_KEY": f"{NEW_KEY},{SECRET_KEY}"}
    counted = await run_command(env, "reseal", "--dry-run")
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.startswith("would seal 6 secrets again under the current key; 0")
    done = await run_command(env, "reseal")
    assert done.returncode == 0 and done.stdout.startswith("sealed 6 secrets again")
    for where, context, value in await _sealed(services, ids):
        assert NEW_ONLY.open(value, context=context), where


SECURITY = Path(__file__).resolve().parents[1] / "docs" / "security.md"
KEYS = {"<old>": SECRET_KEY, "<new>": NEW_KEY}


def _rotation_steps() -> list[tuple[str, str]]:
    """The documented rotation, step by step: ("deploy", key list) or ("reseal", key list
    deployed then), read from docs/security.md "Rotating GATEWAY_SECRET_KEY"."""
    section = SECURITY.read_text().split("### Rotating `GATEWAY_SECRET_KEY`", 1)[1]
    section = section.split("\n## ", 1)[0]
    steps, deployed = [], "<old>"
    for item in re.split(r"\n(?=\d+\. )", section)[1:]:
        if listed := re.search(r"`GATEWAY_SECRET_KEY=([^`]+)`", item):
            deployed = listed.group(1)
            steps.append(("deploy", deployed))
        elif "`gateway reseal`" in item:
            steps.append(("reseal", deployed))
    return steps


async def test_every_step_of_the_documented_rotation_works_beside_the_step_before(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """A rolling update runs each step's key list beside the previous step's: a token one
    process issues (a trigger's, an admin's) is taken by the other, a secret one seals opens
    in the other, and both start (the key check). Deploying `<new>,<old>` beside `<old>` (the
    procedure before) refused the new trigger tokens with 401: the partner's calls were lost."""
    steps = _rotation_steps()
    assert [list_ for what, list_ in steps if what == "deploy"][-1] == "<new>"
    processes: dict[str, Client] = {}

    async def process(key_list: str) -> Client:
        if key_list not in processes:
            app = make_app(secret_key=Secret(_key(key_list)))
            processes[key_list] = await aiohttp_client(app)
        return processes[key_list]

    before = "<old>"
    for n, (what, key_list) in enumerate(steps):
        if what == "reseal":
            resealed = await reseal_secrets(
                (await process(key_list)).app[services_key].store, _box(key_list)
            )
            assert resealed.unreadable == [], resealed
            continue
        for issuer, taker in ((before, key_list), (key_list, before)):
            by, to = await process(issuer), await process(taker)
            admin = {"Authorization": f"Bearer {admin_token(secret=_key(issuer))}"}
            listed = await to.get("/api/v1/triggers", headers=admin)
            assert listed.status == 200, (issuer, taker, await listed.text())
            made = await by.post(
                "/api/v1/triggers",
                headers=admin,
                json={"name": f"rot-{n}-{issuer}", "entity_type": "vehicle", "methods": ["POST"]},
            )
            trigger = await made.json()
            assert made.status == 201, trigger
            hook = await to.post(
                f"/hooks/{trigger['id']}",
                headers={"Authorization": f"Bearer {trigger['token']}"},
                json={"plate": f"ROT{n}{'AB'[issuer == before]}23"},  # one per call
            )
            assert hook.status == 201, (issuer, taker, await hook.text())
            partner = await by.post(
                "/api/v1/partners",
                headers=admin,
                json={
                    "name": f"erp-{n}-{issuer}",
                    "base_url": "http://127.0.0.1:9/",
                    "auth": {"type": "bearer", "token": "s3cr3t"},
                },
            )
            assert partner.status == 201, await partner.text()
            pid = (await partner.json())["id"]
            doc = await to.app[services_key].store.db["partners"].find_one({"_id": ObjectId(pid)})
            assert doc is not None
            opened = to.app[services_key].box.open(doc["auth_sealed"], context=auth_context(pid))
            assert opened, (issuer, taker)
        before = key_list


def _key(key_list: str) -> str:
    return ",".join(KEYS[name] for name in key_list.split(","))


def _box(key_list: str) -> SecretBox:
    return SecretBox(KeyRing.from_secret(_key(key_list)))
