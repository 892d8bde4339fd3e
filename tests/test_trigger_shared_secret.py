"""A `shared_secret` trigger: the partner sends a fixed secret in its own header (Asaas's
`asaas-access-token`, GitLab's `X-Gitlab-Token`), ours or its own, compared in constant time
with each live secret of the trigger."""

from __future__ import annotations

from multidict import CIMultiDict

from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import VEHICLE, Client, bearer, create_trigger

ASAAS_TOKEN = "aSs7-kq2Rz9xWm4Lp0Vt8Nb3Hc6Yd1Fg"  # the kind Asaas's "Gerar token" makes


def _rejections(client: Client, trigger_id: str, reason: str) -> float:
    metrics = client.app[services_key].metrics
    label = metrics.trigger_label(trigger_id)
    return float(metrics.trigger_signature_rejections.labels(label, reason)._value.get())


async def test_the_partners_secret_in_its_own_header_opens_the_trigger(client: Client) -> None:
    trigger = await create_trigger(
        client,
        name="asaas",
        methods=["POST"],
        auth={"mode": "shared_secret", "header": "asaas-access-token", "secret": ASAAS_TOKEN},
    )
    assert trigger["auth"] == {"mode": "shared_secret", "header": "asaas-access-token"}
    assert "secret" not in trigger  # the partner's: never shown back
    url = f"/hooks/{trigger['id']}"

    sent = await client.post(url, json=VEHICLE, headers={"Asaas-Access-Token": ASAAS_TOKEN})
    assert sent.status == 201, await sent.text()
    wrong = await client.post(url, json=VEHICLE, headers={"asaas-access-token": ASAAS_TOKEN[:-1]})
    assert wrong.status == 401
    assert (await client.post(url, json=VEHICLE)).status == 401
    twice = CIMultiDict([("asaas-access-token", ASAAS_TOKEN), ("asaas-access-token", "x")])
    assert (await client.post(url, json=VEHICLE, headers=twice)).status == 401
    assert [
        _rejections(client, trigger["id"], r) for r in ("mismatch", "missing", "malformed")
    ] == [
        1,
        1,
        1,
    ]


async def test_a_secret_the_gateway_issues_is_shown_once_and_rotates(client: Client) -> None:
    trigger = await create_trigger(
        client,
        name="gitlab",
        methods=["POST"],
        auth={"mode": "shared_secret", "header": "X-Gitlab-Token"},
    )
    secret = trigger["secret"]
    assert len(secret) == 64
    url = f"/hooks/{trigger['id']}"
    first = await client.post(url, json=VEHICLE, headers={"X-Gitlab-Token": secret})
    assert first.status == 201, await first.text()
    # Not a token trigger: the same secret as a bearer token opens nothing.
    assert (
        await client.post(url, json=VEHICLE, headers=bearer(trigger | {"token": secret}))
    ).status == 401

    rotate = f"/api/v1/triggers/{trigger['id']}/rotate"
    rotated = await (await client.post(rotate, json={"grace_seconds": 0}, headers=auth())).json()
    old = await client.post(url, json=VEHICLE, headers={"X-Gitlab-Token": secret})
    assert old.status == 401
    new = await client.post(url, json=VEHICLE, headers={"X-Gitlab-Token": rotated["secret"]})
    assert new.status in (200, 201), await new.text()


async def test_a_shared_secret_trigger_is_checked_when_saved(client: Client) -> None:
    base = {"name": "t", "entity_type": "vehicle", "methods": ["POST"]}
    for given, pointer, keyword in (
        ({"mode": "shared_secret"}, "/auth/header", "required"),
        ({"mode": "shared_secret", "header": "Authorization"}, "/auth/header", "not"),
        ({"mode": "shared_secret", "header": "X-T", "secret": "short"}, "/auth/secret", "secret"),
        ({"mode": "shared_secret", "header": "X-T", "secret": "a b" * 8}, "/auth/secret", "secret"),
    ):
        body = {**base, "auth": given}
        response = await client.post("/api/v1/triggers", json=body, headers=auth())
        assert response.status == 422, given
        assert response.content_type == "application/problem+json"
        errors = (await response.json())["errors"]
        assert [(e["pointer"], e["keyword"]) for e in errors] == [(pointer, keyword)], errors
