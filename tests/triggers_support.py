"""Helpers for the trigger tests (tests/test_triggers_*.py): everything goes through HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.support import auth

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"
PAYLOADS = Path(__file__).resolve().parent / "data" / "partner_payloads"
VEHICLE = {"plate": "ABC1D23", "make": "Fiat", "model": "Strada", "year": 2022}
YAML = {"Content-Type": "application/yaml"}


def _methods(spec: dict[str, Any]) -> list[str]:
    """GET and POST, but POST alone for a trigger signed over its body (which takes no GET)."""
    signed = (spec.get("auth") or {}).get("mode") in ("hmac", "webhook_signature")
    return ["POST"] if signed else ["GET", "POST"]


async def create_trigger(client: Client, tenant: str = "acme", **spec: Any) -> dict[str, Any]:
    body = {"name": "partner", "entity_type": "vehicle", "methods": _methods(spec), **spec}
    response = await client.post("/api/v1/triggers", json=body, headers=auth(tenant))
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def create_position_trigger(
    client: Client, tenant: str = "acme", **spec: Any
) -> dict[str, Any]:
    """A trigger whose target is positions (SPEC §6): fixes appended to vehicles' tracks."""
    body = {"name": "trackers", "target": "positions", "methods": _methods(spec), **spec}
    response = await client.post("/api/v1/triggers", json=body, headers=auth(tenant))
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def vehicle_track(
    client: Client, ref: str = "ABC1D23", query: str = "", tenant: str = "acme"
) -> dict[str, Any]:
    """GET /api/v1/entities/vehicle/{ref}/positions: the vehicle's track, oldest first."""
    response = await client.get(
        f"/api/v1/entities/vehicle/{ref}/positions{query}", headers=auth(tenant)
    )
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def upload_mapping(client: Client, text: str, tenant: str = "acme") -> dict[str, Any]:
    response = await client.post(
        "/api/v1/mappings", data=text.encode(), headers={**auth(tenant), **YAML}
    )
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def upload_shipped(client: Client, name: str, tenant: str = "acme") -> None:
    await upload_mapping(client, (MAPPINGS / f"{name}.yaml").read_text(), tenant)


def bearer(trigger: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {trigger['token']}"}


async def hook(
    client: Client,
    trigger: dict[str, Any],
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """POST a JSON body with the trigger's token; (status, parsed answer)."""
    response = await client.post(
        f"/hooks/{trigger['id']}",
        json=body,
        headers={**bearer(trigger), **(headers or {})},
        **kwargs,
    )
    return response.status, await response.json()


async def entities(
    client: Client, etype: str = "vehicle", tenant: str = "acme"
) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/entities/{etype}?limit=200", headers=auth(tenant))
    assert response.status == 200, await response.text()
    return list((await response.json())["items"])


async def stored_with_get(client: Client, trigger: dict[str, Any]) -> None:
    """Give a signed trigger GET in its methods, as one stored before that was refused
    (docs/triggers.md#reading-get): it loads, and its GETs are refused at the door."""
    triggers = client.app[services_key].store.db["triggers"]
    changed = await triggers.update_one(
        {"_id": trigger["id"]},
        {"$set": {"methods": ["GET", "POST"]}, "$inc": {"version": 1, "rev": 1}},
    )
    assert changed.modified_count == 1
