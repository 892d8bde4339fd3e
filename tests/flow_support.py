"""Setting a tenant up for the shipped flows: the partners, actions, mappings, channels and
templates that flows/*.yaml name, pointed at local doubles."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from aiohttp.test_utils import TestClient

from gateway.services import Services
from tests.fcm_double import PROJECT, Fcm
from tests.partner_double import create_action, create_partner, post, upload_mapping
from tests.support import auth

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[1]
FLOWS = ROOT / "flows"
SAMPLES = ROOT / "tests" / "data" / "partner_payloads"
# The sample driver of the scenarios: the shipped flows e-mail her (ana.souza@example.com).
ANA = {"name": "Ana Souza", "cpf": "52998224725", "language": "pt-BR"}


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


async def upload_flow(client: Client, name: str, status: int = 201) -> Any:
    response = await client.post(
        "/api/v1/flows",
        data=(FLOWS / f"{name}.yaml").read_bytes(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    body = await response.json()
    assert response.status == status, body
    return body


async def add_template(client: Client, name: str) -> None:
    await post(
        client, "/api/v1/templates", yaml.safe_load((FLOWS / f"templates/{name}.yaml").read_text())
    )


async def add_mapping(client: Client, name: str) -> None:
    await upload_mapping(client, (ROOT / "mappings" / f"{name}.yaml").read_text())


async def hr_lookup(client: Client, hr_url: str) -> dict[str, Any]:
    """The HR system's driver lookup (scenario 3's fetch)."""
    await add_mapping(client, "hr-driver-lookup")
    partner = await create_partner(
        client, hr_url, name="HR", auth={"type": "bearer", "token": "hr-token"}
    )
    return await create_action(
        client,
        partner["id"],
        name="hr-driver-lookup",
        method="GET",
        path="/veiculos/{plate}/condutor-atual",
        mode="proxy",
        request_mapping="hr-driver-lookup",
        response_mapping="hr-driver-lookup",
    )


async def erp_actions(client: Client, erp_url: str) -> None:
    """The ERP's fine-paid and mileage endpoints (scenario 4)."""
    await add_mapping(client, "erp-fine-paid")
    await add_mapping(client, "erp-mileage")
    partner = await create_partner(client, erp_url, name="ERP", secrets={"erp_token": "erp-t"})
    await create_action(
        client,
        partner["id"],
        name="erp-fine-paid",
        method="PUT",
        path="/multas/{ait}/pagamento",
        request_mapping="erp-fine-paid",
    )
    await create_action(
        client,
        partner["id"],
        name="erp-mileage",
        method="POST",
        path="/veiculos/quilometragem",
        request_mapping="erp-mileage",
    )


async def email_channel(client: Client, port: int = 2525) -> dict[str, Any]:
    return await post(
        client,
        "/api/v1/channels",
        {
            "name": "email",
            "type": "email",
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none"},
            "from": "Frota Acme <alertas@acme.com.br>",
        },
    )


async def push_channel(client: Client, fcm: Fcm) -> None:
    """Channel `push`: FCM (the double) through a partner with its service account."""
    fcm_partner = await create_partner(
        client,
        fcm.url,
        name="FCM",
        auth={"type": "google_service_account", "service_account": fcm.service_account()},
    )
    await post(
        client,
        "/api/v1/channels",
        {"name": "push", "type": "push", "partner_id": fcm_partner["id"], "project_id": PROJECT},
    )


async def push_on_new_vehicle(client: Client, fcm: Fcm, fetched: str) -> None:
    """Channel `push` (`push_channel`), a "New vehicle" push template, and a flow `hello`
    that pushes, when a vehicle is created, to the driver `fetched` names (a JMESPath literal
    standing for a fetch's answer: `'`{"cpf": "52998224725"}`'`)."""
    await push_channel(client, fcm)
    template = {"title": "New vehicle", "body": "{{ entity.plate }}"}
    await post(
        client,
        "/api/v1/templates",
        {
            "name": "hello-push",
            "channel_type": "push",
            "default_locale": "en",
            "locales": {"en": template},
        },
    )
    step = {
        "channel": "push",
        "template": "hello-push",
        "recipients": [{"driver": {"from": fetched}}],
    }
    flow = {
        "name": "hello",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
        "steps": [{"id": "say", "notify": step}],
    }
    await post(client, "/api/v1/flows", flow)


async def sms_channel(
    client: Client, provider_url: str, token: str = "z", **partner_fields: Any
) -> dict[str, Any]:
    """Channel `sms`: a Zenvia-shaped provider at `provider_url` (its partner with
    `partner_fields` too: a rate limit, say); the answer that created its action (its secret,
    shown once)."""
    await add_mapping(client, "sms-zenvia")
    zenvia = await create_partner(
        client,
        provider_url,
        name="Zenvia",
        auth={"type": "header", "name": "X-API-TOKEN", "value": token},
        **partner_fields,
    )
    action = await create_action(
        client,
        zenvia["id"],
        name="sms",
        path="/v2/channels/sms/messages",
        request_mapping="sms-zenvia",
    )
    await post(
        client,
        "/api/v1/channels",
        {"name": "sms", "type": "sms", "action_id": action["id"], "from": "RABBOT"},
    )
    return action


FINE_EVENT: dict[str, Any] = {
    "type": "fine.received",
    "occurred_at": "2026-11-19T09:00:00Z",
    "entity": {"type": "other", "id": "65f000000000000000000001", "key": "fine:261810:A123456789"},
    "data": {
        "kind": "fine",
        "key": "261810:A123456789",
        "ait_number": "A123456789",
        "authority": "261810",
        "plate": "ABC1D23",
        "occurred_at": "2026-11-18T16:45:00Z",
        "place": "Av. Paulista, 1000",
        "amount_brl": 130.16,
        "points": 4,
        "indication_deadline": "2026-12-18",
        "status": "open",
    },
}


async def drain(services: Services) -> Counter[str]:
    """Relay events, run flows and send deliveries until none of them has anything left
    (a condition, not a sleep); what the runner and the worker did, by result."""
    done: Counter[str] = Counter()
    for _ in range(20):
        relayed = await services.relay.run_until_idle()
        ran = await services.flow_runner.run_until_idle()
        sent = await services.delivery_worker.run_until_idle()
        done += ran + sent
        if not relayed and not ran and not sent:
            return done
    raise AssertionError(f"still busy after 20 rounds: {done}")


async def trigger_for(
    client: Client, mapping: str, entity_type: str = "other", **spec: Any
) -> dict[str, Any]:
    """A POST trigger with a shipped inbound mapping; its answer carries the token."""
    await add_mapping(client, mapping)
    body = {"name": mapping, "entity_type": entity_type, "methods": ["POST"], "mapping": mapping}
    return dict(await post(client, "/api/v1/triggers", {**body, **spec}))


async def send_to(client: Client, trigger: dict[str, Any], payload: Any) -> Any:
    """What a partner does: POST its own payload with the trigger's token."""
    response = await client.post(
        f"/hooks/{trigger['id']}",
        json=payload,
        headers={"Authorization": f"Bearer {trigger['token']}"},
    )
    body = await response.json()
    assert response.status in (200, 201), body
    return body


async def get(client: Client, path: str, status: int = 200) -> Any:
    response = await client.get(path, headers=auth())
    body = await response.json()
    assert response.status == status, body
    return body


async def fine_email_flow(client: Client, port: int) -> None:
    """The fine scenario (SPEC §6): an SMTP channel on `port`, a template, and a flow that
    e-mails the driver who drove the fine's vehicle at the infraction."""
    await email_channel(client, port)
    await post(
        client,
        "/api/v1/templates",
        {
            "name": "fine",
            "channel_type": "email",
            "default_locale": "en",
            "locales": {"en": {"subject": "{{ entity.key }}", "text": "A fine"}},
        },
    )
    driver_at = {"vehicle": "entity.plate", "at": "entity.occurred_at"}
    await post(
        client,
        "/api/v1/flows",
        {
            "name": "fine",
            "on": {"events": ["entity.created"], "filter": {"entity_type": "other"}},
            "steps": [
                {
                    "id": "mail",
                    "notify": {
                        "channel": "email",
                        "template": "fine",
                        "recipients": [{"driver": driver_at}],
                    },
                }
            ],
        },
    )
