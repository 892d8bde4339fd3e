"""/api/v1/entities and /api/v1/events through HTTP against the real database."""

from __future__ import annotations

import time
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.support import admin_token, auth

Client = TestClient[Any, Any]

VEHICLE = {
    "plate": "abc-1234",
    "renavam": "86769597308",
    "make": "Fiat",
    "model": "Strada",
    "year": 2022,
    "status": "active",
    "odometer_km": 1200.5,
    "group": "north",
}
DRIVER = {
    "name": "Maria Souza",
    "cpf": "529.982.247-25",
    "phone": "+5511999990000",
    "cnh": {"number": "09770304734", "category": "B", "expires_on": "2030-01-31"},
}


async def _create(
    client: Client, etype: str, doc: dict[str, Any], tenant: str = "acme"
) -> dict[str, Any]:
    response = await client.post(f"/api/v1/entities/{etype}", json=doc, headers=auth(tenant))
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def test_created_vehicle_is_normalised_and_has_a_stable_id(client: Client) -> None:
    created = await _create(client, "vehicle", VEHICLE)
    assert created["plate"] == "ABC1234" and created["id"] and created["version"] == 1
    by_id = await client.get(f"/api/v1/entities/vehicle/{created['id']}", headers=auth())
    assert (await by_id.json())["id"] == created["id"]


async def test_vehicle_is_found_by_its_mercosul_twin_plate(client: Client) -> None:
    created = await _create(client, "vehicle", VEHICLE)
    response = await client.get("/api/v1/entities/vehicle/ABC1C34", headers=auth())
    assert response.status == 200
    assert (await response.json())["id"] == created["id"]


async def test_duplicate_natural_key_is_409_even_across_plate_formats(client: Client) -> None:
    await _create(client, "vehicle", VEHICLE)
    response = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "ABC1C34"}, headers=auth()
    )
    assert response.status == 409
    assert (await response.json())["status"] == 409


async def test_invalid_identifier_names_the_field_and_the_reason(client: Client) -> None:
    response = await client.post(
        "/api/v1/entities/driver", json={**DRIVER, "cpf": "529.982.247-26"}, headers=auth()
    )
    assert response.status == 422
    body = await response.json()
    assert response.content_type == "application/problem+json"
    [error] = body["errors"]
    assert error["pointer"] == "/cpf" and "check digit" in error["message"]


async def test_every_failing_field_is_listed(client: Client) -> None:
    bad = {"plate": "AB12345", "year": "new", "status": "flying", "colour": "red"}
    response = await client.post("/api/v1/entities/vehicle", json=bad, headers=auth())
    assert response.status == 422
    pointers = {e["pointer"] for e in (await response.json())["errors"]}
    assert {"/plate", "/year", "/status"} <= pointers


async def test_patch_reports_changes_and_emits_entity_updated_with_old_and_new(
    client: Client,
) -> None:
    created = await _create(client, "vehicle", VEHICLE)
    response = await client.patch(
        f"/api/v1/entities/vehicle/{created['id']}",
        json={"odometer_km": 1300, "status": "maintenance"},
        headers=auth(),
    )
    assert response.status == 200
    body = await response.json()
    assert body["changed"] == ["odometer_km", "status"] and body["version"] == 2
    await client.app[services_key].relay.run_until_idle()
    events = await (await client.get("/api/v1/events?type=entity.updated", headers=auth())).json()
    [event] = events["items"]
    assert event["entity"]["id"] == created["id"]
    assert {"field": "odometer_km", "old": 1200.5, "new": 1300} in event["changes"]


async def test_create_and_delete_emit_events_and_free_the_key(client: Client) -> None:
    created = await _create(client, "driver", DRIVER)
    response = await client.delete(f"/api/v1/entities/driver/{created['id']}", headers=auth())
    assert response.status == 204
    gone = await client.get(f"/api/v1/entities/driver/{created['id']}", headers=auth())
    assert gone.status == 404
    await _create(client, "driver", DRIVER)  # the CPF is free again
    await client.app[services_key].relay.run_until_idle()
    events = await (await client.get("/api/v1/events", headers=auth())).json()
    assert [e["type"] for e in events["items"]] == [
        "entity.created",
        "entity.deleted",
        "entity.created",
    ]


async def test_list_filters_on_indexed_fields_and_paginates(client: Client) -> None:
    for n in range(5):
        await _create(client, "vehicle", {"plate": f"ABC1D2{n}", "group": "g1" if n % 2 else "g2"})
    first = await (
        await client.get("/api/v1/entities/vehicle?group=g2&limit=2", headers=auth())
    ).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = await (
        await client.get(
            f"/api/v1/entities/vehicle?group=g2&limit=2&cursor={first['next_cursor']}",
            headers=auth(),
        )
    ).json()
    assert [v["plate"] for v in first["items"] + rest["items"]] == ["ABC1D20", "ABC1D22", "ABC1D24"]
    assert rest["next_cursor"] is None
    bad = await client.get("/api/v1/entities/vehicle?colour=red", headers=auth())
    assert bad.status == 400 and "cannot filter vehicle by colour" in (await bad.json())["detail"]


async def test_filters_are_normalised_like_the_stored_identifiers(client: Client) -> None:
    """The admin list and a trigger's GET share one filter rule (EntityService.filters)."""
    await _create(client, "vehicle", {"plate": "ABC1D23", "renavam": "86769597308"})
    fine = {"kind": "fine", "key": "SP1", "ait_number": "SP1", "plate": "ABC1D23"}
    await _create(client, "other", {**fine, "amount_brl": 130.16, "status": "open"})
    for query in ("vehicle?plate=abc-1d23", "vehicle?renavam=8676959730-8", "other?key=SP1"):
        answer = await client.get(f"/api/v1/entities/{query}", headers=auth())
        assert answer.status == 200 and len((await answer.json())["items"]) == 1, query


async def test_plate_filter_finds_the_vehicle_by_either_spelling(client: Client) -> None:
    """A filter by plate finds the vehicle under its old or Mercosul spelling, as a get does."""
    created = await _create(client, "vehicle", {"plate": "ABC1234", "group": "north"})
    await _create(client, "vehicle", {"plate": "XYZ9K87", "group": "north"})
    for plate in ("ABC1234", "abc-1c34", "ABC1C34"):
        for query in (f"plate={plate}", f"plate={plate}&group=north"):
            answer = await client.get(f"/api/v1/entities/vehicle?{query}", headers=auth())
            items = (await answer.json())["items"]
            assert [v["id"] for v in items] == [created["id"]], query
    for query in ("plate=ABC1C34&group=south", "plate=not-a-plate"):
        answer = await client.get(f"/api/v1/entities/vehicle?{query}", headers=auth())
        assert answer.status == 200 and (await answer.json())["items"] == [], query


async def test_plate_filter_finds_fines_issued_to_either_spelling_of_the_plate(
    client: Client,
) -> None:
    """A vehicle re-plated FIN1234 -> FIN1C34 is one vehicle: its fines under both plates."""
    fine = {"kind": "fine", "ait_number": "SP900", "amount_brl": 10, "status": "open"}
    old = await _create(client, "other", {**fine, "key": "SP900", "plate": "fin-1234"})
    new = await _create(client, "other", {**fine, "key": "SP901", "plate": "FIN1C34"})
    await _create(client, "other", {**fine, "key": "SP902", "plate": "FIN1D34"})
    for plate in ("FIN1234", "fin-1c34", "FIN1C34"):
        for query in (f"plate={plate}", f"kind=fine&plate={plate}", f"plate={plate}&status=open"):
            answer = await client.get(f"/api/v1/entities/other?{query}", headers=auth())
            items = (await answer.json())["items"]
            assert [f["id"] for f in items] == [old["id"], new["id"]], query
    for query in ("plate=FIN1C34&status=paid", "plate=not-a-plate"):
        answer = await client.get(f"/api/v1/entities/other?{query}", headers=auth())
        assert answer.status == 200 and (await answer.json())["items"] == [], query


async def test_other_tenant_sees_404_never_the_data(client: Client) -> None:
    created = await _create(client, "vehicle", VEHICLE, tenant="acme")
    response = await client.get(f"/api/v1/entities/vehicle/{created['id']}", headers=auth("globex"))
    assert response.status == 404
    assert "Fiat" not in await response.text()
    listed = await (await client.get("/api/v1/entities/vehicle", headers=auth("globex"))).json()
    assert listed["items"] == []


async def test_fine_is_an_other_entity_reachable_by_kind_and_key(client: Client) -> None:
    fine = {
        "kind": "fine",
        "key": "AIT123",
        "ait_number": "AIT123",
        "plate": "ABC1D23",
        "amount_brl": 195.23,
        "status": "open",
    }
    created = await _create(client, "other", fine)
    response = await client.get("/api/v1/entities/other/fine:AIT123", headers=auth())
    assert response.status == 200
    assert (await response.json())["id"] == created["id"]


async def test_admin_token_problems_are_401_and_viewer_writes_are_403(client: Client) -> None:
    url = "/api/v1/entities/vehicle"
    assert (await client.get(url)).status == 401
    forged = admin_token(secret="another-secret-key-that-nobody-here-uses-000")
    assert (await client.get(url, headers={"Authorization": f"Bearer {forged}"})).status == 401
    expired = admin_token(now=time.time() - 7200)
    response = await client.get(url, headers={"Authorization": f"Bearer {expired}"})
    assert response.status == 401 and "WWW-Authenticate" in response.headers
    assert (await client.get(url, headers=auth(role="viewer"))).status == 200
    response = await client.post(url, json=VEHICLE, headers=auth(role="viewer"))
    assert response.status == 403


async def test_bad_bodies_get_clear_errors_and_write_nothing(client: Client) -> None:
    url = "/api/v1/entities/vehicle"
    malformed = await client.post(
        url, data=b'{"plate": ', headers={**auth(), "Content-Type": "application/json"}
    )
    assert malformed.status == 400 and "malformed JSON" in (await malformed.json())["detail"]
    wrong_type = await client.post(
        url,
        data=b"plate=ABC1234",
        headers={**auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert wrong_type.status == 415
    unknown = await client.post("/api/v1/entities/spaceship", json={}, headers=auth())
    assert unknown.status == 404
    listed = await (await client.get(url, headers=auth())).json()
    assert listed["items"] == []


async def test_list_combines_filters_and_follows_changes(client: Client) -> None:
    await _create(client, "vehicle", {"plate": "ABC1D20", "group": "g1", "status": "active"})
    await _create(client, "vehicle", {"plate": "ABC1D21", "group": "g1", "status": "inactive"})
    await _create(client, "vehicle", {"plate": "ABC1D22", "group": "g2", "status": "active"})
    url = "/api/v1/entities/vehicle?group=g1&status=active"
    listed = await (await client.get(url, headers=auth())).json()
    assert [v["plate"] for v in listed["items"]] == ["ABC1D20"]
    await client.patch(
        "/api/v1/entities/vehicle/ABC1D21", json={"status": "active"}, headers=auth()
    )
    listed = await (await client.get(url, headers=auth())).json()
    assert [v["plate"] for v in listed["items"]] == ["ABC1D20", "ABC1D21"]
