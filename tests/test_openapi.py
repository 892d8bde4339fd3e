"""/openapi.json is a valid OpenAPI 3.1 document generated from the routes; /docs renders it."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

Client = TestClient[Any, Any]


async def test_openapi_document_is_valid_and_covers_every_route(client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    doc = await response.json()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    for route in client.app.router.routes():
        # /admin is the HTML admin UI (docs/admin-ui.md), not part of the JSON API.
        ui = route.resource is not None and route.resource.canonical.startswith("/admin/")
        if route.method != "HEAD" and route.resource is not None and not ui:
            path = route.resource.canonical
            assert (route.method, path) in documented, f"{route.method} {path} undocumented"


async def test_entity_schemas_are_components_of_the_document(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    vehicle = doc["components"]["schemas"]["Vehicle"]
    assert "plate" in vehicle["properties"]
    create = doc["paths"]["/api/v1/entities/{type}"]["post"]
    assert create["responses"]["422"]["content"]["application/problem+json"]


async def test_docs_page_renders_offline_without_external_assets(client: Client) -> None:
    response = await client.get("/docs")
    assert response.status == 200
    html = await response.text()
    assert "/api/v1/entities/{type}" in html
    assert "http://" not in html.replace("http://www.w3.org", "")
    assert "https://" not in html.replace("https://rabbot.dev", "")


async def test_routes_that_answer_200_or_201_declare_both(client: Client) -> None:
    """An identical re-upload of a mapping or flow is a 200 (the version that exists), and so
    is assigning the driver a vehicle already has: the document declares what is answered."""
    doc = await (await client.get("/openapi.json")).json()
    for path in ("/api/v1/mappings", "/api/v1/flows", "/api/v1/entities/vehicle/{ref}/drivers"):
        responses = doc["paths"][path]["post"]["responses"]
        assert {"200", "201"} <= set(responses), path
        assert responses["200"]["content"] == responses["201"]["content"], path
