"""A list's `cursor` is the `next_cursor` of a previous page: one that cannot be is a 400
problem, never the first page again (a client that mangled its cursor would otherwise read
page one twice and think it had read everything)."""

from __future__ import annotations

import pytest

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
]


@pytest.mark.parametrize("path", LISTS)
async def test_a_cursor_that_no_page_gave_is_a_400(client: Client, path: str) -> None:
    for cursor in ("not-a-cursor", "6b116d37b41c0324ef461cf"):
        response = await client.get(f"{path}?cursor={cursor}", headers=auth())
        assert response.status == 400, (path, cursor, await response.text())
        problem = await response.json()
        assert response.content_type == "application/problem+json"
        assert problem["detail"] == "cursor must be the next_cursor of the previous page"


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
