"""A flow's `call` requests carry Standard Webhooks headers (SPEC §5), signed with the flow's
own `whsec_` secret: shown once by the upload that gives the flow its first, rotated like a
subscription's (both sign for 24 h). The partner double checks them as a receiver would: its
own HMAC over "id.timestamp.body", the method of the published vector, checked first."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from gateway.actions.flow_secrets import flow_context
from gateway.auth.keyring import KeyRing
from gateway.auth.secretbox import SecretBox
from gateway.keys import reseal_secrets
from gateway.services import Services
from gateway.web.state import services_key
from tests.flow_support import (
    ANA,
    drain,
    erp_actions,
    sample,
    send_to,
    trigger_for,
    upload_flow,
)
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
)
from tests.support import SECRET_KEY, auth
from tests.ui_support import csrf, form_fields, log_in, make_user

__all__ = ["partner"]  # the fixture
Client = TestClient[Any, Any]
VECTOR = orjson.loads((Path(__file__).parent / "data" / "standard_webhooks.json").read_bytes())
NEW_KEY = "the-new-secret-key-0123456789abcdef0123456789"
CALLS = """\
name: tell-erp
on:
  events: [entity.created]
  filter: {entity_type: vehicle}
steps:
  - id: erp
    call: erp-vehicle
"""


def test_the_partner_check_agrees_with_the_standard_webhooks_vectors() -> None:
    for case in VECTOR["cases"]:
        headers = {k: case[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        assert signed_by(case["secret"], headers, case["body"].encode())
        assert not signed_by(case["secret"], headers, case["body"].encode() + b" ")


async def _flow(client: Client, partner: Partner, text: str = CALLS) -> dict[str, Any]:
    erp = await create_partner(client, partner.url, name="ERP")
    await create_action(client, erp["id"], name="erp-vehicle", method="POST", path="/veiculos")
    response = await client.post(
        "/api/v1/flows", data=text, headers={**auth(), "Content-Type": "application/yaml"}
    )
    body: dict[str, Any] = await response.json()
    assert response.status == 201, body
    return body


async def _vehicle(client: Client, plate: str) -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": plate})


def _calls(partner: Partner) -> list[Recorded]:
    return [r for r in partner.requests if r.path == "/veiculos"]


async def test_a_flow_call_carries_webhook_headers_its_partner_verifies(
    client: Client, partner: Partner
) -> None:
    uploaded = await _flow(client, partner)
    services = client.app[services_key]
    partner.respond_with(503, {"erro": "manutencao"}, times=1)
    await _vehicle(client, "ABC1D23")
    await drain(services)
    clock = FakeClock()
    services.flow_runner.clock = services.delivery_worker.clock = clock
    clock.advance(6)  # the retry 5 s later
    await drain(services)

    secret = uploaded["secret"]
    first, retry = _calls(partner)
    assert secret.startswith("whsec_")
    for sent in (first, retry):
        assert signed_by(secret, sent.headers, sent.body)
        assert abs(int(sent.headers["webhook-timestamp"]) - time.time()) < 60
    # The delivery's id, the same on every attempt (and the Idempotency-Key it carried before).
    assert first.headers["webhook-id"] == retry.headers["webhook-id"]
    assert first.headers["webhook-id"] == first.headers["Idempotency-Key"]
    assert first.headers["webhook-id"].endswith(":tell-erp:erp")
    again = await client.get("/api/v1/flows/tell-erp", headers=auth())
    assert "secret" not in str(await again.json())


async def test_a_rotated_flow_secret_signs_with_both_for_24_hours(
    client: Client, partner: Partner
) -> None:
    old = (await _flow(client, partner))["secret"]
    rotated = await post(client, "/api/v1/flows/tell-erp/rotate-secret", {}, status=200)
    new = rotated["secret"]
    services = client.app[services_key]
    clock = FakeClock()
    services.flow_runner.clock = services.delivery_worker.clock = clock
    await _vehicle(client, "ABC1D23")
    await drain(services)
    clock.advance(24 * 3600 + 1)
    await _vehicle(client, "DEF4G56")
    await drain(services)

    during, after = _calls(partner)
    assert rotated["name"] == "tell-erp" and new != old and new.startswith("whsec_")
    signed_through_rotation(old, new, during, after)


async def test_a_new_version_keeps_the_flow_secret_and_answers_none(
    client: Client, partner: Partner
) -> None:
    secret = (await _flow(client, partner))["secret"]
    response = await client.post(
        "/api/v1/flows",
        data=CALLS.replace("steps:", "description: v2\nsteps:"),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    second = await response.json()
    await _vehicle(client, "ABC1D23")
    await drain(client.app[services_key])

    [sent] = _calls(partner)
    assert response.status == 201 and second["version"] == 2 and "secret" not in second
    assert signed_by(secret, sent.headers, sent.body)


async def test_a_flow_stored_before_secrets_signs_and_its_secret_is_obtained_by_rotating(
    client: Client, partner: Partner
) -> None:
    """A flow uploaded by a release whose calls were not signed has no secret: its first call
    gets it one; the admin, never shown it, rotates to learn the current one."""
    await _flow(client, partner)
    services = client.app[services_key]
    await services.store.db["flow_heads"].update_one(
        {"name": "tell-erp"}, {"$unset": {"signing": ""}}
    )
    await _vehicle(client, "ABC1D23")
    await drain(services)
    rotated = await post(client, "/api/v1/flows/tell-erp/rotate-secret", {}, status=200)
    await _vehicle(client, "DEF4G56")
    await drain(services)

    before, after = _calls(partner)
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= set(before.headers)
    assert not signed_by(rotated["secret"], before.headers, before.body)
    assert signed_by(rotated["secret"], after.headers, after.body)


async def test_rotating_the_secret_of_no_flow_is_404(client: Client) -> None:
    response = await client.post("/api/v1/flows/nothing/rotate-secret", headers=auth())
    assert response.status == 404


async def test_the_shipped_erp_flows_are_signed_each_with_its_own_secret(
    client: Client, partner: Partner
) -> None:
    """Scenario 4: the ERP can tell who told it a fine was paid, and the mileage."""
    await erp_actions(client, partner.url)
    fine_secret = (await upload_flow(client, "fine-paid-erp"))["secret"]
    mileage_secret = (await upload_flow(client, "checklist-mileage-erp"))["secret"]
    payments = await trigger_for(client, "fine-payment", kind="fine")
    checklists = await trigger_for(client, "checklist", kind="checklist")
    await post(
        client,
        "/api/v1/entities/vehicle",
        {"plate": "ABC1D23", "renavam": "86769597308", "odometer_km": 151000},
    )
    await post(client, "/api/v1/entities/driver", ANA)
    fine = {
        "kind": "fine",
        "key": "261810:A123456789",
        "ait_number": "A123456789",
        "authority": "261810",
        "plate": "ABC1D23",
        "occurred_at": "2026-11-18T16:45:00Z",
        "amount_brl": 130.16,
        "status": "open",
    }
    await post(client, "/api/v1/entities/other", fine)
    services = client.app[services_key]
    await drain(services)
    await send_to(client, payments, sample("fine_payment.json"))
    await send_to(client, checklists, sample("checklist_completed.json"))
    await drain(services)

    sent = {r.path: r for r in partner.requests if r.method in ("PUT", "POST")}
    paid, mileage = sent["/multas/A123456789/pagamento"], sent["/veiculos/quilometragem"]
    assert signed_by(fine_secret, paid.headers, paid.body)
    assert signed_by(mileage_secret, mileage.headers, mileage.body)
    assert not signed_by(fine_secret, mileage.headers, mileage.body)


async def test_the_admin_ui_shows_a_flows_secret_once_and_rotates_it(
    client: Client, partner: Partner, services: Services
) -> None:
    erp = await create_partner(client, partner.url, name="ERP")
    await create_action(client, erp["id"], name="erp-vehicle", method="POST", path="/veiculos")
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/flows")
    uploaded = await client.post(
        "/admin/flows", data={"csrf": token, "source": CALLS, "activate": "on"}
    )
    first = _secret_shown(await uploaded.text())
    page = await (await client.get("/admin/flows/tell-erp")).text()
    action = "/admin/flows/tell-erp/rotate-secret"
    rotated = await client.post(action, data=form_fields(page, action))
    second = _secret_shown(await rotated.text())
    await _vehicle(client, "ABC1D23")
    await drain(client.app[services_key])

    [sent] = _calls(partner)
    assert uploaded.status == 201 and rotated.status == 200 and first != second
    assert signed_by(first, sent.headers, sent.body) and signed_by(second, sent.headers, sent.body)
    assert "whsec_" not in await (await client.get("/admin/flows/tell-erp")).text()


def _secret_shown(html: str) -> str:
    found = re.findall(r'<code id="flow-secret">(whsec_[^<]+)</code>', html)
    assert len(found) == 1, html
    return str(found[0])


async def test_gateway_reseal_seals_a_flows_secret_again_under_the_new_key(
    client: Client, partner: Partner, services: Services
) -> None:
    """Step 3 of rotating GATEWAY_SECRET_KEY: the old key can go, the flow's calls still sign."""
    secret = (await _flow(client, partner))["secret"]
    rotating = SecretBox(KeyRing.from_secret(f"{NEW_KEY},{SECRET_KEY}"))
    done = await reseal_secrets(services.store, rotating)
    head = await services.store.db["flow_heads"].find_one({"name": "tell-erp"})

    assert head is not None and done.unreadable == [] and done.resealed >= 1
    [entry] = head["signing"]["secrets"]
    new_only = SecretBox(KeyRing.from_secret(NEW_KEY))
    assert new_only.open_text(entry["sealed"], context=flow_context(str(head["_id"]))) == secret


FETCHES = """\
name: look-up
on:
  events: [entity.created]
  filter: {entity_type: vehicle}
steps:
  - id: info
    fetch: erp-info
  - id: erp
    call: erp-vehicle
"""


async def test_a_flow_fetch_is_signed_with_the_flows_secret_and_keeps_its_id_on_retry(
    client: Client, partner: Partner
) -> None:
    """A fetch goes out now, not as a delivery, but it is the flow's request as its calls
    are: the same secret; `webhook-id` the run's step, the same when the step is tried again;
    a GET's empty body signed."""
    erp = await create_partner(client, partner.url, name="ERP-info")
    await create_action(client, erp["id"], name="erp-info", method="GET", path="/info")
    secret = (await _flow(client, partner, FETCHES))["secret"]
    services = client.app[services_key]
    clock = FakeClock()
    services.flow_runner.clock = services.delivery_worker.clock = clock
    partner.respond_with(503, {"erro": "manutencao"}, times=1)
    await _vehicle(client, "ABC1D23")
    await drain(services)
    clock.advance(6)
    await drain(services)

    first, retry = [r for r in partner.requests if r.path == "/info"]
    [call] = _calls(partner)
    for sent in (first, retry):
        assert sent.body == b"" and signed_by(secret, sent.headers, b"")
    assert first.headers["webhook-id"] == retry.headers["webhook-id"]
    assert first.headers["webhook-id"].endswith(":look-up:info")
    assert call.headers["webhook-id"].endswith(":look-up:erp")
    assert (
        first.headers["webhook-id"].rpartition(":look-up:")[0]
        == call.headers["webhook-id"].rpartition(":look-up:")[0]
    )
    assert signed_by(secret, call.headers, call.body)
