"""A list's `cursor` is the `next_cursor` of a previous page: one that cannot be is a 400
problem, never the first page again (a client that mangled its cursor would otherwise read
page one twice and think it had read everything)."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest

from gateway.store.client import CURSOR_PROBLEM
from tests.support import auth
from tests.triggers_support import Client, bearer, create_trigger

LISTS = [
    "/api/v1/entities/vehicle",
    "/api/v1/partners",
    "/api/v1/actions",
    "/api/v1/subscriptions",
    "/api/v1/schedules",
    "/api/v1/channels",
    "/api/v1/templates",
    "/api/v1/events",
    "/api/v1/rejected",
    "/api/v1/triggers",
    "/api/v1/deliveries",
    "/api/v1/deliveries?event_id=6b116d37b41c0324ef461cf0",
    "/api/v1/flows/aviso/runs",  # the flow is created first
    "/api/v1/geofences",
    "/api/v1/maintenance-plans",
]
# Lists paged by a name (mappings, flows, kinds): any name is a place in the list, but a cursor no
# name can be is refused like the ids above.
NAMED = ["/api/v1/mappings", "/api/v1/flows", "/api/v1/kinds"]


@pytest.mark.parametrize("path", LISTS)
async def test_a_cursor_that_no_page_gave_is_a_400(client: Client, path: str) -> None:
    if path.startswith("/api/v1/flows/"):
        steps = [{"id": "se", "when": "entity.plate"}]
        flow = {"name": "aviso", "on": {"events": ["entity.created"]}, "steps": steps}
        created = await client.post("/api/v1/flows", json=flow, headers=auth())
        assert created.status == 201, await created.text()
    for cursor in ("not-a-cursor", "6b116d37b41c0324ef461cf", "%00%FF", "%7B%7D"):
        sep = "&" if "?" in path else "?"
        response = await client.get(f"{path}{sep}cursor={cursor}", headers=auth())
        assert response.status == 400, (path, cursor, await response.text())
        problem = await response.json()
        assert response.content_type == "application/problem+json"
        assert problem["detail"] == CURSOR_PROBLEM


@pytest.mark.parametrize("path", NAMED)
async def test_a_cursor_that_no_name_can_be_is_a_400(client: Client, path: str) -> None:
    for cursor in ("%00%FF", "%7B%7D", "..", "a%20b", "x" * 101):
        response = await client.get(f"{path}?cursor={cursor}", headers=auth())
        assert response.status == 400, (path, cursor, await response.text())
        assert response.content_type == "application/problem+json"
        assert (await response.json())["detail"] == CURSOR_PROBLEM


async def test_a_drivers_history_cursor_of_another_vehicle_or_junk_is_a_400(
    client: Client,
) -> None:
    """The history's cursor is the last change's id, which names the vehicle: a cursor of
    another vehicle's history read the first page again, junk likewise. The cursors a page
    gives fit the pattern the API document has for them; the junk does not."""
    drivers = "/api/v1/entities/vehicle/{}/drivers"
    ana = {"name": "Ana Souza", "cpf": "52998224725"}
    assert (await client.post("/api/v1/entities/driver", json=ana, headers=auth())).status == 201
    for plate in ("ABC1D23", "BRA2E19"):
        created = await client.post(
            "/api/v1/entities/vehicle", json={"plate": plate}, headers=auth()
        )
        assert created.status == 201
        for day in (1, 2):
            body = {
                "driver": ana["cpf"] if day == 1 else None,
                "start": f"2026-11-0{day}T08:00:00Z",
            }
            answer = await client.post(drivers.format(plate), json=body, headers=auth())
            assert answer.status == 201, await answer.text()
    first = await (await client.get(drivers.format("ABC1D23") + "?limit=1", headers=auth())).json()
    cursor = first["next_cursor"]
    second = await client.get(
        drivers.format("ABC1D23") + f"?limit=1&cursor={cursor}", headers=auth()
    )
    assert second.status == 200 and (await second.json())["items"][0]["driver"] is not None
    document = await (await client.get("/openapi.json")).json()
    listing = document["paths"]["/api/v1/entities/vehicle/{ref}/drivers"]["get"]
    pattern = next(p for p in listing["parameters"] if p["name"] == "cursor")["schema"]["pattern"]
    assert re.fullmatch(pattern, cursor), (pattern, cursor)
    for junk in (cursor.replace(":2026", ":2O26"), "zzz", "%00"):
        assert not re.fullmatch(pattern, unquote(junk)), junk
        response = await client.get(drivers.format("ABC1D23") + f"?cursor={junk}", headers=auth())
        assert response.status == 400, (junk, await response.text())
    other = await client.get(drivers.format("BRA2E19") + f"?cursor={cursor}", headers=auth())
    assert other.status == 400 and (await other.json())["detail"] == CURSOR_PROBLEM


async def test_a_trigger_read_with_a_cursor_that_no_page_gave_is_a_400(client: Client) -> None:
    trigger = await create_trigger(client)
    response = await client.get(f"/hooks/{trigger['id']}?cursor=zzz", headers=bearer(trigger))
    assert response.status == 400
    assert (await response.json())["detail"].startswith("cursor must be")


@pytest.mark.parametrize("limit", ["5_0", "+5", " 5", "5 ", "%D9%A5", "0x10", "-1", "0", "201"])
async def test_a_limit_that_is_not_a_page_size_is_a_400(client: Client, limit: str) -> None:
    response = await client.get(f"/api/v1/entities/vehicle?limit={limit}", headers=auth())
    assert response.status == 400, (limit, await response.text())
    assert (await response.json())["detail"].startswith("limit must be")


async def test_a_cursor_of_another_event_or_flow_is_a_400(client: Client) -> None:
    """An event's deliveries and a flow's runs are paged by ids that name the event and the
    flow: another one's id is well formed but no page of this list wrote it (it would read an
    empty page, as if the list had ended)."""
    steps = [{"id": "se", "when": "entity.plate"}]
    flow = {"name": "aviso", "on": {"events": ["entity.created"]}, "steps": steps}
    created = await client.post("/api/v1/flows", json=flow, headers=auth())
    assert created.status == 201, await created.text()
    event, earlier = "6b116d37b41c0324ef461cf0", "6b116d37b41c0324ef461cef"
    for path in (
        f"/api/v1/deliveries?event_id={event}&cursor={earlier}:sub_1",
        f"/api/v1/flows/aviso/runs?cursor={earlier}:outro",
    ):
        response = await client.get(path, headers=auth())
        assert response.status == 400, (path, await response.text())
        assert (await response.json())["detail"] == CURSOR_PROBLEM
    own = await client.get(
        f"/api/v1/deliveries?event_id={event}&cursor={event}:sub_1", headers=auth()
    )
    assert own.status == 200 and (await own.json())["items"] == []
    runs = await client.get(f"/api/v1/flows/aviso/runs?cursor={earlier}:aviso", headers=auth())
    assert runs.status == 200, await runs.text()
