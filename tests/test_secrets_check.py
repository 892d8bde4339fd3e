"""The secrets check: a scenario that creates every kind of secret (admin and trigger tokens,
every partner credential type, mapping secrets, a subscription's signing secret), uses them
(ingest, a rejected payload, deliveries and a proxy call to a partner that echoes what it
gets), then reads everything back. No log line, no metric, no stored attempt and no answer
may contain any of them, except the one answer that hands a new secret out (SPEC §7)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.partner_double import create_action, create_partner, create_subscription
from tests.support import admin_token
from tests.test_redaction import Echo, _cases, echo
from tests.triggers_support import create_trigger

__all__ = ["echo"]
Client = TestClient[Any, Any]


class _Recorder:
    """Calls the app and keeps every answer (headers and body) for the final check."""

    def __init__(self, client: Client, token: str) -> None:
        self.client, self.headers = client, {"Authorization": f"Bearer {token}"}
        self.answers: list[tuple[str, str]] = []  # (what, text)

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        response = await self.client.request(method, path, headers=headers, **kwargs)
        text = await response.text()
        self.answers.append((f"{method} {path}", f"{dict(response.headers)} {text}"))
        return await response.json() if text else None


async def test_no_secret_the_suite_creates_leaks_anywhere(
    client: Client, echo: Echo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = admin_token()
    app = _Recorder(client, admin)
    secrets: dict[str, str] = {"admin token": admin, "mapping secret": "mapping-pin-2"}
    handed_out: dict[str, str] = {}  # secret → the one answer allowed to carry it
    for n, (auth_doc, values) in enumerate(_cases(echo.url)):
        partner = await create_partner(
            client, echo.url, name=f"echo-{n}", auth=auth_doc, secrets={"pin": "mapping-pin-2"}
        )
        secrets.update({f"{auth_doc['type']} credential {i}": v for i, v in enumerate(values)})
        deliver = await create_action(client, partner["id"], name=f"deliver-{n}")
        sub = await create_subscription(client, deliver["id"], ("entity.created",))
        secrets[f"subscription secret {n}"] = sub["secret"]
        proxy = await create_action(client, partner["id"], name=f"proxy-{n}", mode="proxy")
        vehicle = await app.call("POST", "/api/v1/entities/vehicle", json={"plate": f"ABC1D{n}0"})
        await app.call(
            "POST",
            f"/api/v1/actions/{proxy['id']}/invoke",
            json={"entity": {"type": "vehicle", "id": vehicle["id"]}},
        )
    trigger = await create_trigger(client, methods=["GET", "POST"])
    secrets["trigger token"] = trigger["token"]
    hook = {"Authorization": f"Bearer {trigger['token']}"}
    await app.call("POST", f"/hooks/{trigger['id']}", json={"plate": "XYZ9A87"}, headers=hook)
    await app.call("POST", f"/hooks/{trigger['id']}", json={"plate": "bad!"}, headers=hook)
    await app.call("GET", f"/hooks/{trigger['id']}?plate=XYZ9A87", headers=hook)
    rotated = await app.call("POST", f"/api/v1/triggers/{trigger['id']}/rotate")
    secrets["rotated trigger token"] = handed_out_token = rotated["token"]
    handed_out[handed_out_token] = f"POST /api/v1/triggers/{trigger['id']}/rotate"
    await client.app[services_key].relay.run_until_idle()
    await client.app[services_key].delivery_worker.run_until_idle()
    for path in (
        "/api/v1/partners",
        "/api/v1/triggers",
        "/api/v1/subscriptions",
        "/api/v1/actions",
        "/api/v1/deliveries",
        "/api/v1/rejected",
        "/api/v1/events",
    ):
        page = await app.call("GET", path)
        for item in page["items"]:
            await app.call("GET", f"{path}/{item['id']}")
    metrics = await (await client.get("/metrics")).text()
    attempts = (
        await client.app[services_key]
        .store.db["deliveries"]
        .find({}, {"attempts": 1})
        .to_list(None)
    )

    assert len(secrets) >= 15
    places = {
        # aiohttp.access is the partner double's own access log (what it received); the
        # gateway serves without one (`access_log=None`) and logs through gateway.access.
        "logs": "\n".join(
            f"{r.getMessage()} {r.__dict__}" for r in caplog.records if r.name != "aiohttp.access"
        ),
        "metrics": metrics,
        "stored attempts": repr(attempts),
        **{f"answer to {what}": text for what, text in app.answers if what},
    }
    leaks = [
        (name, where)
        for name, secret in secrets.items()
        for where, text in places.items()
        if secret in text and handed_out.get(secret) != where.removeprefix("answer to ")
    ]
    assert leaks == []
