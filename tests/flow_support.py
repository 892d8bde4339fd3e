"""Setting a tenant up for the shipped flows: the partners, actions, mappings, channels and
templates that flows/*.yaml name, pointed at local doubles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from aiohttp.test_utils import TestClient

from tests.partner_double import create_action, create_partner, post, upload_mapping
from tests.support import auth

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[1]
FLOWS = ROOT / "flows"
SAMPLES = ROOT / "tests" / "data" / "partner_payloads"


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


FINE_EVENT: dict[str, Any] = {
    "type": "fine.received",
    "occurred_at": "2026-11-19T09:00:00Z",
    "entity": {"type": "other", "id": "65f000000000000000000001", "key": "fine:A123456789"},
    "data": {
        "kind": "fine",
        "key": "A123456789",
        "ait_number": "A123456789",
        "plate": "ABC1D23",
        "occurred_at": "2026-11-18T16:45:00Z",
        "place": "Av. Paulista, 1000",
        "amount_brl": 130.16,
        "points": 4,
        "indication_deadline": "2026-12-18",
        "status": "open",
    },
}
