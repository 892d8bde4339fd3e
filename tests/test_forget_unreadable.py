"""`gateway reseal --forget-unreadable`: the last resort once a key the stored secrets are
sealed under is lost for good. Every start is refused (the key check records the key), and
`gateway reseal` cannot narrow the keys while a secret under it remains: the command lists
what no key opens, clears it with `--yes` so that it reads as lost, and the gateway starts;
a delivery that needs a lost secret fails naming it, never sent unsigned
(docs/operations.md "A lost key")."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiohttp.test_utils import TestClient
from bson import ObjectId

from gateway.auth.keyring import KeyRing
from gateway.auth.secretbox import SecretBox, lost_secret
from gateway.auth.webhook_signature import signed_headers
from gateway.store import sealed
from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
)
from tests.processes import Gateway, free_port
from tests.support import SECRET_KEY, admin_token, auth, cli_env, run_cli
from tests.triggers_support import VEHICLE, create_trigger
from tests.ui_support import log_in, make_user

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]
NEW_KEY = "the-new-secret-key-0123456789abcdef0123456789"
ROTATING = SecretBox(KeyRing([NEW_KEY, SECRET_KEY]))
OLD_KID = SecretBox(KeyRing([SECRET_KEY])).kids[0]


async def _subscriptions(client: Client, partner_url: str) -> tuple[str, str]:
    """Two subscriptions of one partner, one action each (`/lost`, `/kept`)."""
    partner_doc = await create_partner(client, partner_url)
    ids = []
    for path in ("/lost", "/kept"):
        action = await create_action(client, partner_doc["id"], path=path)
        ids.append((await create_subscription(client, action["id"], ("entity.created",)))["id"])
    return ids[0], ids[1]


async def test_a_lost_key_is_forgotten_then_the_gateway_starts_and_fails_only_what_it_sealed(
    client: Client, partner: Partner, mongodb_uri: str, tmp_path: Path
) -> None:
    services = client.app[services_key]
    lost, kept = await _subscriptions(client, partner.url)  # sealed under the old key
    env = cli_env(services.settings, mongodb_uri)
    # Step 2 of a rotation (`<new>,<old>`): the key check records both keys; everything but
    # the first subscription's secret is sealed under the new key; then the old key is lost.
    step = await run_cli(
        {**env, "GATEWAY_SECRET_KEY": f"{NEW_KEY},{SECRET_KEY}"}, "reseal", "--dry-run"
    )
    assert step.returncode == 0, step.stderr
    under_old = {
        entry["sealed"]
        for entry in (await services.store.db["subscriptions"].find_one({"_id": ObjectId(lost)}))[
            "secrets"
        ]
    }
    await sealed.reseal(
        services.store.db, lambda token: token if token in under_old else ROTATING.rotate(token)
    )
    new_only = {**env, "GATEWAY_SECRET_KEY": NEW_KEY}

    refused = await run_cli(new_only, "serve", "--port", str(free_port()))
    assert refused.returncode == 2 and "lacks a key the stored secrets" in refused.stderr
    listed = await run_cli(new_only, "reseal", "--forget-unreadable")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0] == (
        f"no key opens: tenant acme subscription {lost} secrets[0]"
    )
    assert "nothing changed" in listed.stdout and "sealed" not in listed.stdout
    still = await services.store.db["subscriptions"].find_one({"_id": ObjectId(lost)})
    assert {entry["sealed"] for entry in still["secrets"]} == under_old

    forgotten = await run_cli(
        new_only, "reseal", "--forget-unreadable", "--yes", "--forget-key", OLD_KID
    )
    assert forgotten.returncode == 0, forgotten.stderr
    assert "cleared 1 stored secrets no key opens: save the 1 listed again" in forgotten.stdout

    gateway = Gateway(
        tmp_path / "gateway",
        MONGODB_URI=mongodb_uri,
        GATEWAY_DATABASE=services.settings.database,
        GATEWAY_SECRET_KEY=NEW_KEY,
    )
    await asyncio.to_thread(gateway.start)
    try:
        status, _, answer = await asyncio.to_thread(
            gateway.request, "POST", "/api/v1/entities/vehicle", {"plate": "RBT1A23"}, _admin()
        )
        assert status == 201, answer
        await partner.wait_for(1, timeout=30)
        failed = await _delivery_of(client, lost, "failed")
        await _delivery_of(client, kept, "succeeded")
        assert [request.path for request in partner.requests] == ["/kept"]
        said = failed["last_error"]
        assert "lost with the key that sealed it" in said and "save the secret again" in said
        # Saved again (a new secret, for its partner): the lost one is not kept for a grace.
        path = f"/api/v1/subscriptions/{lost}/rotate-secret"
        status, _, answer = await asyncio.to_thread(gateway.request, "POST", path, {}, _admin())
        assert status == 200, answer
        status, _, answer = await asyncio.to_thread(
            gateway.request, "POST", "/api/v1/entities/vehicle", {"plate": "RBT1A24"}, _admin()
        )
        assert status == 201, answer
        await partner.wait_for(3, timeout=30)
    finally:
        await asyncio.to_thread(gateway.stop)
    assert sorted(request.path for request in partner.requests[1:]) == ["/kept", "/lost"]


async def test_a_key_list_that_does_not_open_the_key_check_forgets_nothing(
    client: Client, partner: Partner, mongodb_uri: str
) -> None:
    """A wrong GATEWAY_SECRET_KEY opens no secret: it would forget them all."""
    services = client.app[services_key]
    lost, _ = await _subscriptions(client, partner.url)
    before = await services.store.db["subscriptions"].find_one({"_id": ObjectId(lost)})
    wrong = {**cli_env(services.settings, mongodb_uri), "GATEWAY_SECRET_KEY": NEW_KEY}
    refused = await run_cli(wrong, "reseal", "--forget-unreadable", "--yes")
    assert refused.returncode == 2, refused.stderr
    assert "none of its keys opens the gateway's key check" in refused.stderr
    assert await services.store.db["subscriptions"].find_one({"_id": ObjectId(lost)}) == before


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(secret=NEW_KEY)}"}


async def _delivery_of(client: Client, subscription: str, status: str) -> dict[str, Any]:
    deliveries = client.app[services_key].store.db["deliveries"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        doc = await deliveries.find_one(
            {"subscription_id": {"$in": [subscription, ObjectId(subscription)]}}
        )
        if doc is not None and doc["status"] == status:
            return dict(doc)
        await asyncio.sleep(0.1)
    raise AssertionError(f"the delivery of {subscription} is not {status}")


async def test_a_trigger_s_lost_secret_refuses_its_calls_until_rotated_and_no_grace_keeps_it(
    client: Client,
) -> None:
    """A signed call is never taken unchecked on a lost secret; the rotation that saves it again
    drops the lost one at once, even with a grace (kept, it failed every call meanwhile)."""
    trigger = await create_trigger(client, auth={"mode": "webhook_signature"})
    triggers = client.app[services_key].store.db["triggers"]
    await triggers.update_one(
        {"_id": trigger["id"]}, {"$set": {"auth.secrets.0.sealed": lost_secret("2026-12-07")}}
    )
    body = orjson.dumps(VEHICLE)

    async def call(secret: str) -> int:
        headers = signed_headers([secret], "msg_1", int(time.time()), body)
        response = await client.post(
            f"/hooks/{trigger['id']}",
            data=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        return response.status

    assert await call("whsec_" + "A" * 32) == 500  # secret-damaged, not taken
    rotate = f"/api/v1/triggers/{trigger['id']}/rotate"
    rotated = await (await client.post(rotate, json={"grace_seconds": 600}, headers=auth())).json()
    stored = await triggers.find_one({"_id": trigger["id"]})
    assert [s["sealed"].startswith("lost:") for s in stored["auth"]["secrets"]] == [False]
    assert await call(rotated["secret"]) == 201


async def test_forgetting_drops_a_rotated_out_secret_in_its_grace_and_keeps_the_current(
    client: Client, partner: Partner
) -> None:
    """Mid-grace, the rotated-out secret sealed under the lost key is dropped, not cleared:
    listed as nothing to redo, and the subscription's current secret goes on signing."""
    services = client.app[services_key]
    lost, _ = await _subscriptions(client, partner.url)
    r = await client.post(f"/api/v1/subscriptions/{lost}/rotate-secret", headers=auth(), json={})
    assert r.status == 200, await r.text()
    subs = services.store.db["subscriptions"]
    doc = await subs.find_one({"_id": ObjectId(lost)})
    current, previous = doc["secrets"]
    done = await sealed.forget(
        services.store.db,
        lambda token: token != previous["sealed"],
        "lost:x",
        _now(),
        dry_run=False,
    )
    assert [(s.id, s.field, s.ended) for s in done.secrets] == [(lost, "secrets[1]", True)]
    assert (await subs.find_one({"_id": ObjectId(lost)}))["secrets"] == [current]


async def test_a_lost_rotated_out_secret_in_grace_does_not_fail_deliveries_of_the_current(
    client: Client, partner: Partner
) -> None:
    """A database forgotten before rotated-out entries were dropped: the lost one is skipped."""
    services = client.app[services_key]
    lost, _ = await _subscriptions(client, partner.url)
    r = await client.post(f"/api/v1/subscriptions/{lost}/rotate-secret", headers=auth(), json={})
    assert r.status == 200, await r.text()
    await services.store.db["subscriptions"].update_one(
        {"_id": ObjectId(lost)}, {"$set": {"secrets.1.sealed": lost_secret("2026-12-07")}}
    )
    await create_vehicle(client)
    await services.relay.run_until_idle()
    assert await services.delivery_worker.run_until_idle() == Counter(succeeded=2)


async def test_a_lost_rotated_out_trigger_secret_in_grace_lets_calls_signed_by_the_current(
    client: Client,
) -> None:
    trigger = await create_trigger(client, auth={"mode": "webhook_signature"})
    rotate = f"/api/v1/triggers/{trigger['id']}/rotate"
    rotated = await (await client.post(rotate, json={"grace_seconds": 3600}, headers=auth())).json()
    triggers = client.app[services_key].store.db["triggers"]
    stored = await triggers.find_one({"_id": trigger["id"]})
    assert [s["until"] is None for s in stored["auth"]["secrets"]] == [False, True]  # oldest first
    await triggers.update_one(
        {"_id": trigger["id"]}, {"$set": {"auth.secrets.0.sealed": lost_secret("2026-12-07")}}
    )
    body = orjson.dumps(VEHICLE)
    headers = signed_headers([rotated["secret"]], "msg_1", int(time.time()), body)
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status == 201, await response.text()


def _now() -> datetime:
    return datetime.now(UTC)


async def test_forgetting_names_the_recorded_key_it_gives_up_and_needs_it_named(
    client: Client, partner: Partner, mongodb_uri: str
) -> None:
    """Mid-rotation (`<new>,<old>` recorded, nothing resealed yet), `<new>` alone opens the key
    check; what is under `<old>` is keyless here, not damaged: `--yes` forgets nothing until
    the operator names the key id it gives up."""
    services = client.app[services_key]
    await _subscriptions(client, partner.url)
    env = cli_env(services.settings, mongodb_uri)
    step = await run_cli(
        {**env, "GATEWAY_SECRET_KEY": f"{NEW_KEY},{SECRET_KEY}"}, "reseal", "--dry-run"
    )
    assert step.returncode == 0, step.stderr
    new_only = {**env, "GATEWAY_SECRET_KEY": NEW_KEY}
    before = await services.store.db["subscriptions"].find({}).to_list(None)

    listed = await run_cli(new_only, "reseal", "--forget-unreadable")
    assert listed.returncode == 0, listed.stderr
    assert f"records key id(s) {OLD_KID}, which GATEWAY_SECRET_KEY lacks" in listed.stdout
    assert f"--yes --forget-key {OLD_KID}` clears them" in listed.stdout
    for given in ((), ("--forget-key", "k_other")):
        refused = await run_cli(new_only, "reseal", "--forget-unreadable", "--yes", *given)
        assert refused.returncode == 2, refused.stderr
        assert (
            f"lacks key id(s) {OLD_KID}" in refused.stderr and "Nothing forgotten" in refused.stderr
        )
    assert await services.store.db["subscriptions"].find({}).to_list(None) == before

    forgotten = await run_cli(
        new_only, "reseal", "--forget-unreadable", "--yes", "--forget-key", OLD_KID
    )
    assert forgotten.returncode == 0, forgotten.stderr
    assert "cleared 5 stored secrets" in forgotten.stdout  # the partner's, each signing one


async def test_naming_a_key_the_key_check_does_not_lack_forgets_nothing(
    client: Client, partner: Partner, mongodb_uri: str
) -> None:
    services = client.app[services_key]
    await _subscriptions(client, partner.url)
    env = cli_env(services.settings, mongodb_uri)
    refused = await run_cli(env, "reseal", "--forget-unreadable", "--yes", "--forget-key", OLD_KID)
    assert refused.returncode == 2 and "records no key id" in refused.stderr, refused.stderr


async def test_a_lost_smtp_password_is_shown_lost_not_configured(client: Client) -> None:
    channel = {
        "name": "email",
        "type": "email",
        "smtp": {"host": "smtp.example.com", "port": 2525, "security": "starttls"}
        | {"username": "u", "password": "p"},
        "from": "Frota Acme <alertas@acme.com.br>",
    }
    made = await client.post("/api/v1/channels", json=channel, headers=auth())
    assert made.status == 201, await made.text()
    cid = (await made.json())["id"]
    shown = await (await client.get(f"/api/v1/channels/{cid}", headers=auth())).json()
    assert shown["smtp"]["password"] == {"configured": True}
    channels = client.app[services_key].store.db["channels"]
    key = ObjectId(cid) if ObjectId.is_valid(cid) else cid
    lost = {"$set": {"smtp_sealed": lost_secret("2026-12-07")}}
    assert (await channels.update_one({"_id": key}, lost)).matched_count == 1
    shown = await (await client.get(f"/api/v1/channels/{cid}", headers=auth())).json()
    assert shown["smtp"]["password"] == {"configured": False, "lost": "2026-12-07"}


async def test_lost_partner_credentials_are_shown_lost_in_the_api_and_the_admin_ui(
    client: Client, partner: Partner
) -> None:
    services = client.app[services_key]
    made = await create_partner(client, partner.url, secrets={"erp_token": "sec-9f8e7d"})
    path = f"/api/v1/partners/{made['id']}"
    shown = await (await client.get(path, headers=auth())).json()
    assert shown["auth"]["configured"] is True and "lost" not in shown["auth"]
    assert "secrets_lost" not in shown
    lost = lost_secret("2026-12-07")
    await services.store.db["partners"].update_one(
        {"_id": ObjectId(made["id"])}, {"$set": {"auth_sealed": lost, "secrets_sealed": lost}}
    )
    shown = await (await client.get(path, headers=auth())).json()
    assert shown["auth"] == {"type": "bearer", "configured": False, "lost": "2026-12-07"}
    assert shown["secrets"] == ["erp_token"] and shown["secrets_lost"] == "2026-12-07"

    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/partners/{made['id']}")).text()
    assert page.count("2026-12-07") >= 2 and 'data-testid="auth-lost"' in page, page
    assert 'data-testid="secrets-lost"' in page
