"""Bodies schemathesis reached once the OpenAPI document was exact (tests/test_schemathesis.py):
each answered 500 before; each is a clear 422 now, with nothing written."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.support import auth

Client = TestClient[Any, Any]


async def test_trigger_patch_with_an_auth_that_is_not_an_object_is_refused(
    client: Client,
) -> None:
    created = await client.post(
        "/api/v1/triggers",
        json={"name": "t", "entity_type": "vehicle", "methods": ["POST"]},
        headers=auth(),
    )
    trigger = await created.json()
    for auth_value in ([], "token", 3):
        response = await client.patch(
            f"/api/v1/triggers/{trigger['id']}", json={"auth": auth_value}, headers=auth()
        )
        assert response.status == 422, await response.text()
        assert any(e["pointer"].startswith("/auth") for e in (await response.json())["errors"])
    unchanged = await client.get(f"/api/v1/triggers/{trigger['id']}", headers=auth())
    assert (await unchanged.json())["auth"]["mode"] == "token"


async def test_a_kind_schema_the_database_cannot_store_is_refused(client: Client) -> None:
    schema = {"type": "object", "properties": {"a\u0000b": {"type": "string"}}}
    created = await client.post(
        "/api/v1/kinds", json={"name": "nul", "schema": schema}, headers=auth()
    )
    assert created.status == 422, await created.text()
    assert "cannot be stored" in (await created.json())["detail"]
    assert (await client.get("/api/v1/kinds/nul", headers=auth())).status == 404
    sound = {"type": "object", "properties": {"ab": {"type": "string"}}}
    ok = await client.post("/api/v1/kinds", json={"name": "nul", "schema": sound}, headers=auth())
    assert ok.status == 201
    replaced = await client.put("/api/v1/kinds/nul", json={"schema": schema}, headers=auth())
    assert replaced.status == 422, await replaced.text()
    kept = await client.get("/api/v1/kinds/nul", headers=auth())
    assert (await kept.json())["schema"] == sound
