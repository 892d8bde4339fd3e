"""A proxy call (`POST /api/v1/actions/{id}/invoke`) and a schedule's pages carry Standard
Webhooks headers (SPEC §5) signed with the action's own `whsec_` secret: an action is the
partner endpoint both go through. Shown once by the answer that creates the action, rotated
like a subscription's (both sign for 24 h), sealed at rest and resealed by `gateway reseal`.
The partner double checks them as a receiver would (`partner_double.signed_by`)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.actions.action_secrets import action_context
from gateway.auth.keyring import KeyRing
from gateway.auth.secretbox import SecretBox
from gateway.keys import reseal_secrets
from gateway.services import Services
from gateway.web.state import services_key
from tests.partner_double import (
    FakeClock,
    Partner,
    Recorded,
    create_action,
    create_partner,
    partner,
    post,
    signed_by,
    signed_through_rotation,
    upload_mapping,
)
from tests.schedule_support import ERP_MAPPING, run_now, runner
from tests.support import SECRET_KEY, auth
from tests.ui_support import csrf, form_fields, log_in, make_user

__all__ = ["partner"]  # the fixture
Client = TestClient[Any, Any]
NEW_KEY = "the-new-secret-key-0123456789abcdef0123456789"


async def _proxy(client: Client, partner: Partner, **overrides: Any) -> dict[str, Any]:
    erp = await create_partner(client, partner.url, name="ERP")
    fields = {"name": "erp-lookup", "method": "POST", "path": "/consulta", "mode": "proxy"}
    return await create_action(client, erp["id"], **{**fields, **overrides})


async def _invoke(
    client: Client, action: dict[str, Any], payload: Any, key: str | None = None
) -> None:
    headers = auth() if key is None else {**auth(), "Idempotency-Key": key}
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", json={"payload": payload}, headers=headers
    )
    assert response.status == 200, await response.text()


def _sent(partner: Partner, path: str) -> list[Recorded]:
    return [r for r in partner.requests if r.path == path]


async def test_a_proxy_call_carries_webhook_headers_its_partner_verifies(
    client: Client, partner: Partner
) -> None:
    action = await _proxy(client, partner)
    await _invoke(client, action, {"placa": "ABC1D23"})
    await _invoke(client, action, {"placa": "ABC1D23"})
    await _invoke(client, action, {"placa": "DEF4G56"}, key="pedido-7")
    await _invoke(client, action, {"placa": "DEF4G56"}, key="pedido-7")  # the caller's retry

    secret = action["secret"]
    first, second, keyed, retried = _sent(partner, "/consulta")
    assert secret.startswith("whsec_")
    for sent in (first, second, keyed, retried):
        assert signed_by(secret, sent.headers, sent.body)
        assert abs(int(sent.headers["webhook-timestamp"]) - time.time()) < 60
    # A fresh id per call; the caller's Idempotency-Key names its retries' one.
    assert first.headers["webhook-id"] != second.headers["webhook-id"]
    assert first.headers["webhook-id"].startswith(f"{action['id']}:")
    assert keyed.headers["webhook-id"] == retried.headers["webhook-id"]
    assert keyed.headers["webhook-id"] == f"{action['id']}:pedido-7"
    shown = await client.get(f"/api/v1/actions/{action['id']}", headers=auth())
    listed = await client.get("/api/v1/actions", headers=auth())
    assert "secret" not in str(await shown.json()) + str(await listed.json())


async def test_a_mappings_own_webhook_headers_in_another_case_give_way_to_the_signature(
    client: Client, partner: Partner
) -> None:
    """HTTP header names are case-insensitive: a request mapping's `Webhook-Id` is the
    signature's `webhook-id`. One of each name goes out, the gateway's (signed), not both
    for the receiver to read either (aiohttp's client replaces a header given again in
    another case); a header the mapping alone sets is sent as written."""
    await upload_mapping(
        client,
        "name: with-ids\ndirection: outbound\nheaders:\n"
        "  Webhook-Id: {value: mine}\n  WEBHOOK-SIGNATURE: {value: 'v1,forged'}\n"
        "  X-Origem: {value: rabbot}\nbody:\n  placa: placa\n",
    )
    action = await _proxy(client, partner, request_mapping="with-ids")
    await _invoke(client, action, {"placa": "ABC1D23"}, key="pedido-8")
    (sent,) = _sent(partner, "/consulta")
    names = [name.lower() for name in sent.headers]
    assert names.count("webhook-id") == 1 and names.count("webhook-signature") == 1
    assert sent.headers["webhook-id"] == f"{action['id']}:pedido-8"
    assert signed_by(action["secret"], sent.headers, sent.body)
    assert sent.headers["X-Origem"] == "rabbot" and sent.json() == {"placa": "ABC1D23"}


async def test_a_proxy_calls_idempotency_key_that_cannot_be_a_webhook_id_is_a_400(
    client: Client, partner: Partner
) -> None:
    action = await _proxy(client, partner)
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke",
        json={"payload": {"placa": "ABC1D23"}},
        headers={**auth(), "Idempotency-Key": "k" * 256},
    )

    assert response.status == 400, await response.text()
    assert "Idempotency-Key" in (await response.json())["detail"]
    assert _sent(partner, "/consulta") == []


async def test_a_get_proxy_call_signs_its_empty_body(client: Client, partner: Partner) -> None:
    action = await _proxy(client, partner, method="GET", path="/veiculos/{placa}")
    await _invoke(client, action, {"placa": "ABC1D23"})

    [sent] = _sent(partner, "/veiculos/ABC1D23")
    assert sent.body == b"" and signed_by(action["secret"], sent.headers, b"")


async def test_a_rotated_action_secret_signs_proxy_calls_with_both_for_24_hours(
    client: Client, partner: Partner
) -> None:
    action = await _proxy(client, partner)
    old = action["secret"]
    rotated = await post(client, f"/api/v1/actions/{action['id']}/rotate-secret", {}, status=200)
    new = rotated["secret"]
    clock = FakeClock()
    client.app[services_key].proxy.clock = clock
    await _invoke(client, action, {"placa": "ABC1D23"})
    clock.advance(24 * 3600 + 1)
    await _invoke(client, action, {"placa": "DEF4G56"})

    during, after = _sent(partner, "/consulta")
    assert rotated["id"] == action["id"] and new != old and new.startswith("whsec_")
    signed_through_rotation(old, new, during, after)


async def test_an_action_stored_before_secrets_signs_and_its_secret_is_obtained_by_rotating(
    client: Client, partner: Partner
) -> None:
    """An action created by a release whose proxy calls were not signed has no secret: its
    first call gets it one; the admin, never shown it, rotates to learn the current one."""
    action = await _proxy(client, partner)
    services = client.app[services_key]
    await services.store.db["actions"].update_one({}, {"$unset": {"signing": ""}})
    services.catalog.forget(action["id"])
    await _invoke(client, action, {"placa": "ABC1D23"})
    rotated = await post(client, f"/api/v1/actions/{action['id']}/rotate-secret", {}, status=200)
    await _invoke(client, action, {"placa": "DEF4G56"})

    before, after = _sent(partner, "/consulta")
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= set(before.headers)
    assert not signed_by(action["secret"], before.headers, before.body)
    assert not signed_by(rotated["secret"], before.headers, before.body)
    assert signed_by(rotated["secret"], after.headers, after.body)


async def test_rotating_the_secret_of_no_action_is_404(client: Client) -> None:
    response = await client.post(
        "/api/v1/actions/65a000000000000000000000/rotate-secret", headers=auth()
    )
    assert response.status == 404


async def _schedule(client: Client, action: dict[str, Any]) -> dict[str, Any]:
    await upload_mapping(client, ERP_MAPPING)
    body = {
        "name": "erp-feed",
        "action_id": action["id"],
        "every": "1h",
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
    }
    result: dict[str, Any] = await post(client, "/api/v1/schedules", body)
    return result


async def test_a_schedule_page_is_signed_and_keeps_its_webhook_id_across_retries(
    client: Client, partner: Partner
) -> None:
    """Each page is signed with the action's secrets over the bytes sent (a GET: none); a
    page tried again after a failure keeps its `webhook-id` (a receiver drops a repeat), and
    the feed read again by a later run is a new request."""
    action = await _proxy(client, partner, method="GET", path="/feed")
    partner.respond_with(200, {"items": [{"placa": "ABC1D23", "codigo": 1}]})
    partner.respond_with(503, {"erro": "manutencao"}, times=1)
    schedule = await _schedule(client, action)
    await asyncio.wait_for(runner(client).run_until_idle(), 10)  # the 503
    await run_now(client, schedule["id"])
    await asyncio.wait_for(runner(client).run_until_idle(), 10)  # its retry, answered
    rotated = await post(client, f"/api/v1/actions/{action['id']}/rotate-secret", {}, status=200)
    await run_now(client, schedule["id"])
    await asyncio.wait_for(runner(client).run_until_idle(), 10)  # the next read

    failed, retried, next_read = _sent(partner, "/feed")
    for sent in (failed, retried, next_read):
        assert sent.body == b"" and signed_by(action["secret"], sent.headers, b"")
        assert abs(int(sent.headers["webhook-timestamp"]) - time.time()) < 60
    assert failed.headers["webhook-id"] == retried.headers["webhook-id"]
    assert failed.headers["webhook-id"].startswith(f"{schedule['id']}:")
    assert next_read.headers["webhook-id"] != retried.headers["webhook-id"]
    assert failed.headers["webhook-timestamp"] <= retried.headers["webhook-timestamp"]
    # After a rotation, both secrets sign.
    assert signed_by(rotated["secret"], next_read.headers, b"")
    assert not signed_by(rotated["secret"], retried.headers, b"")


async def test_a_schedule_page_with_a_body_is_signed_over_the_bytes_sent(
    client: Client, partner: Partner
) -> None:
    """A read-only POST (JSON-RPC) page: the body with the schedule's fixed parts, signed."""
    action = await _proxy(client, partner, method="POST", path="/rpc", read_only=True)
    partner.respond_with(200, {"items": []})
    await upload_mapping(client, ERP_MAPPING)
    body = {
        "name": "erp-rpc",
        "action_id": action["id"],
        "every": "1h",
        "request": {"body": {"method": "Listar", "params": {"limite": 2}}},
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
    }
    await post(client, "/api/v1/schedules", body)
    await asyncio.wait_for(runner(client).run_until_idle(), 10)

    [sent] = _sent(partner, "/rpc")
    assert sent.json()["method"] == "Listar"
    assert signed_by(action["secret"], sent.headers, sent.body)


async def test_gateway_reseal_seals_an_actions_secret_again_under_the_new_key(
    client: Client, partner: Partner, services: Services
) -> None:
    """Step 3 of rotating GATEWAY_SECRET_KEY: the old key can go, the action's calls sign."""
    action = await _proxy(client, partner)
    rotating = SecretBox(KeyRing.from_secret(f"{NEW_KEY},{SECRET_KEY}"))
    done = await reseal_secrets(services.store, rotating)
    doc = await services.store.db["actions"].find_one({})

    assert doc is not None and done.unreadable == [] and done.resealed >= 1
    [entry] = doc["signing"]["secrets"]
    new_only = SecretBox(KeyRing.from_secret(NEW_KEY))
    opened = new_only.open_text(entry["sealed"], context=action_context(action["id"]))
    assert opened == action["secret"]


async def test_the_admin_ui_shows_an_actions_secret_once_and_rotates_it(
    client: Client, partner: Partner, services: Services
) -> None:
    erp = await create_partner(client, partner.url, name="ERP")
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/actions")
    fields = {"name": "erp-lookup", "partner_id": erp["id"], "method": "POST"}
    created = await client.post(
        "/admin/actions",
        data={"csrf": token, **fields, "path": "/consulta", "mode": "proxy"},
    )
    first = _secret_shown(await created.text())
    [action] = (await (await client.get("/api/v1/actions", headers=auth())).json())["items"]
    path = f"/admin/actions/{action['id']}"
    page = await (await client.get(path)).text()
    rotate = f"{path}/rotate-secret"
    rotated = await client.post(rotate, data=form_fields(page, rotate))
    second = _secret_shown(await rotated.text())
    await _invoke(client, action, {"placa": "ABC1D23"})

    [sent] = _sent(partner, "/consulta")
    assert created.status == 201 and rotated.status == 200 and first != second
    assert signed_by(first, sent.headers, sent.body) and signed_by(second, sent.headers, sent.body)
    assert "whsec_" not in await (await client.get(path)).text()


def _secret_shown(html: str) -> str:
    found = re.findall(r'<code id="action-secret">(whsec_[^<]+)</code>', html)
    assert len(found) == 1, html
    return str(found[0])


async def test_the_openapi_document_shows_the_secret_its_rotation_and_the_invoke_key(
    client: Client,
) -> None:
    doc = await (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    created = paths["/api/v1/actions"]["post"]["responses"]["201"]["content"]
    rotated = paths["/api/v1/actions/{id}/rotate-secret"]["post"]["responses"]["200"]["content"]
    invoke = paths["/api/v1/actions/{id}/invoke"]["post"]["parameters"]

    assert created["application/json"]["schema"]["properties"]["secret"]["pattern"] == "^whsec_"
    required = rotated["application/json"]["schema"]["required"]
    assert required == ["id", "secret", "secret_rotated_at"]
    [key] = [p for p in invoke if p["name"] == "Idempotency-Key"]
    assert key["in"] == "header" and "webhook-id" in key["description"]
