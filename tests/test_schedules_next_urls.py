"""Schedules over lists whose partner names the next page's whole URL: in the `Link` header
(RFC 8288 `rel="next"`: Shopify REST's `page_info`, GitHub, Sentry, Zendesk) or in the body
(OData's `@odata.nextLink` with an opaque `$skiptoken`: Dynamics 365 / Business Central,
Graph, SAP Business One's relative `odata.nextLink`). The cursor `follow` calls it as it is,
on the partner's own origin only; once no next page is named the next run reads the list
again from the action's own URL. And a `cursor.from` that finds nothing where the partner
says it has more is not silent; one that names a response header (`header.x-next-cursor`:
ServiceM8's next page token) reads the cursor from it."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from bson import ObjectId

from gateway.services import Services
from gateway.store.schedules import HEADER_MEMBER_STEP
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    partner,
    post,
    upload_mapping,
)
from tests.schedule_support import get, run_now, runner, runs
from tests.support import auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]

VEHICLES = """
name: erp-vehicles-pages
direction: inbound
entity_type: vehicle
key: [plate]
items: {items}
fields:
  plate: {{from: placa, transforms: [plate]}}
"""


async def _schedule(
    client: Client,
    partner: Partner,
    items: str,
    cursor: dict[str, Any],
    path: str = "/list",
    partner_auth: dict[str, str] | None = None,
) -> dict[str, Any]:
    await upload_mapping(client, VEHICLES.format(items=items))
    erp = await create_partner(
        client, partner.url, name="ERP", auth=partner_auth or {"type": "none"}
    )
    action = await create_action(
        client, erp["id"], name="list", mode="proxy", method="GET", path=path
    )
    body = {
        "name": "erp-list",
        "action_id": action["id"],
        "every": "1h",
        "request": {"query": {"limit": 2}},
        "cursor": cursor,
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles-pages"},
    }
    result: dict[str, Any] = await post(client, "/api/v1/schedules", body)
    return result


def _rows(*plates: str) -> list[dict[str, str]]:
    return [{"placa": plate} for plate in plates]


async def _plates(client: Client) -> list[str]:
    response = await client.get("/api/v1/entities/vehicle?limit=50", headers=auth())
    return sorted(v["plate"] for v in (await response.json())["items"])


async def test_link_header_next_pages_are_followed_and_the_list_is_read_again_next_run(
    client: Client, partner: Partner
) -> None:
    base = f"{partner.url}/admin/api/2024-10/vehicles.json"
    # Several links in one field and in two fields, quoted parameters holding "," and ";",
    # `rel` a list of relation types: only rel="next" is followed.
    second = (
        f'<{base}?limit=2&page_info=cD0x>; rel="previous"; title="a, b; c", '
        f'<{base}?limit=2&page_info=cD0y>; title="page; 2"; rel="last next"'
    )
    schedule = await _schedule(
        client,
        partner,
        "vehicles",
        {"follow": "header.Link"},
        path="/admin/api/2024-10/vehicles.json",
    )
    partner.respond_with(
        body={"vehicles": _rows("ABC1D23", "BRA2E19")}, headers={"Link": second}, times=1
    )
    partner.respond_with(
        body={"vehicles": _rows("XYZ9J87", "QWE1R23")},
        headers={"Link": f"<{base}?limit=2&page_info=cD0z>; rel=NEXT"},
        times=1,
    )
    partner.respond_with(
        body={"vehicles": _rows("RTY4U56")},
        headers={"Link": f'<{base}?limit=2&page_info=cD0y>; rel="previous"'},
        times=1,
    )

    assert await runner(client).run_until_idle() == {"ok": 1}

    assert [r.raw_path for r in partner.requests] == [
        "/admin/api/2024-10/vehicles.json?limit=2",
        "/admin/api/2024-10/vehicles.json?limit=2&page_info=cD0y",
        "/admin/api/2024-10/vehicles.json?limit=2&page_info=cD0z",
    ]
    assert await _plates(client) == ["ABC1D23", "BRA2E19", "QWE1R23", "RTY4U56", "XYZ9J87"]
    [run] = await runs(client, schedule["id"])
    assert (run["outcome"], run["pages"], run["cursor_after"], run["note"]) == ("ok", 3, None, None)
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["cursor"] is None

    # The next run reads the list again from its first page (the action's own URL).
    partner.respond_with(body={"vehicles": _rows("ABC1D23", "BRA2E19")}, times=1)
    await run_now(client, schedule["id"])
    counts = await runner(client).run_until_idle()
    assert counts == {"ok": 1}, (await runs(client, schedule["id"]))[0]["error"]
    assert partner.requests[-1].raw_path == "/admin/api/2024-10/vehicles.json?limit=2"


async def test_a_run_stopped_at_max_pages_goes_on_from_the_next_url(
    client: Client, partner: Partner
) -> None:
    schedule = await _schedule(client, partner, "value", {"follow": 'body."@odata.nextLink"'})
    await client.patch(f"/api/v1/schedules/{schedule['id']}", json={"max_pages": 1}, headers=auth())
    partner.respond_with(
        body={"value": _rows("ABC1D23"), "@odata.nextLink": f"{partner.url}/list?$skiptoken=a%2B1"},
        times=1,
    )
    partner.respond_with(body={"value": _rows("BRA2E19")}, times=1)

    assert await runner(client).run_until_idle() == {"more": 1, "ok": 1}

    assert [r.raw_path for r in partner.requests] == ["/list?limit=2", "/list?$skiptoken=a%2B1"]
    assert partner.requests[1].query == {"$skiptoken": "a+1"}
    assert await _plates(client) == ["ABC1D23", "BRA2E19"]


async def test_a_next_url_echoing_the_query_key_is_sent_with_the_real_key_once(
    client: Client, partner: Partner
) -> None:
    # Legacy REST APIs repeat every query parameter in their next link, the key included.
    key = "qk-7Rf2pLx9Wm3Zt8Vb"
    schedule = await _schedule(
        client,
        partner,
        "value",
        {"follow": 'body."@odata.nextLink"'},
        partner_auth={"type": "query", "name": "api_key", "value": key},
    )
    await client.patch(f"/api/v1/schedules/{schedule['id']}", json={"max_pages": 1}, headers=auth())
    partner.respond_with(
        body={"value": _rows("ABC1D23"), "@odata.nextLink": f"/list?api_key={key}&page=2"},
        times=1,
    )
    partner.respond_with(body={"value": _rows("BRA2E19")}, times=1)

    assert await runner(client).run_until_idle() == {"more": 1, "ok": 1}

    assert [r.raw_path for r in partner.requests] == [
        f"/list?limit=2&api_key={key}",
        f"/list?page=2&api_key={key}",
    ]
    assert await _plates(client) == ["ABC1D23", "BRA2E19"]
    # The cursor kept between the two runs is the URL with the key masked.
    cursors = [run["cursor_after"] for run in await runs(client, schedule["id"])]
    assert any("/list?api_key=" in (c or "") and "page=2" in (c or "") for c in cursors), cursors
    assert not any(key in (c or "") for c in cursors), cursors


async def test_an_odata_next_link_relative_to_the_page_is_followed(
    client: Client, partner: Partner
) -> None:
    # SAP Business One Service Layer names the next page relative to the service root.
    await _schedule(
        client, partner, "value", {"follow": 'body."odata.nextLink"'}, path="/b1s/v1/Vehicles"
    )
    partner.respond_with(
        body={"value": _rows("ABC1D23"), "odata.nextLink": "Vehicles?$skip=1"}, times=1
    )
    partner.respond_with(body={"value": _rows("BRA2E19"), "odata.nextLink": None}, times=1)

    assert await runner(client).run_until_idle() == {"ok": 1}

    assert [r.raw_path for r in partner.requests] == [
        "/b1s/v1/Vehicles?limit=2",
        "/b1s/v1/Vehicles?$skip=1",
    ]
    assert await _plates(client) == ["ABC1D23", "BRA2E19"]


async def test_a_next_url_off_the_partners_origin_is_not_followed(
    client: Client, partner: Partner
) -> None:
    schedule = await _schedule(client, partner, "value", {"follow": 'body."@odata.nextLink"'})
    port = partner.url.rsplit(":", 1)[1]
    # The same server under another host name: another origin, its credentials not sent.
    partner.respond_with(
        body={"value": _rows("ABC1D23"), "@odata.nextLink": f"http://localhost:{port}/list?p=2"}
    )

    assert await runner(client).run_until_idle() == {"failed": 1}

    assert len(partner.requests) == 1
    [run] = await runs(client, schedule["id"])
    assert run["error"]["kind"] == "bad_cursor"
    assert "off its base URL's scheme, host and port: not followed" in run["error"]["message"]
    assert await _plates(client) == []


async def test_a_next_url_naming_the_page_just_read_is_a_loop(
    client: Client, partner: Partner
) -> None:
    schedule = await _schedule(client, partner, "value", {"follow": 'body."@odata.nextLink"'})
    again = f"{partner.url}/list?page=2"
    partner.respond_with(body={"value": _rows("ABC1D23"), "@odata.nextLink": again}, times=1)
    partner.respond_with(body={"value": _rows("BRA2E19"), "@odata.nextLink": again})

    assert await runner(client).run_until_idle() == {"failed": 1}

    assert len(partner.requests) == 2
    [run] = await runs(client, schedule["id"])
    assert (run["error"]["kind"], run["written"]) == ("loop", 1)  # page 2 not written
    assert "as its next page: it is looping" in run["error"]["message"]


async def test_cursor_from_finding_nothing_where_the_partner_has_more_is_noted(
    client: Client, partner: Partner
) -> None:
    # A typo (`endCursr`): every run would read the first page again, `ok`, saying nothing.
    cursor = {
        "from": "pagination.endCursr",
        "param": "query.after",
        "more": "pagination.hasNextPage",
    }
    schedule = await _schedule(client, partner, "data", cursor)
    page = {"data": _rows("ABC1D23"), "pagination": {"endCursor": "c1", "hasNextPage": True}}
    partner.respond_with(body=page)

    assert await runner(client).run_until_idle() == {"ok": 1}

    [run] = await runs(client, schedule["id"])
    assert run["note"] == (
        "cursor.from (pagination.endCursr) found no cursor on a page of 1 record(s) where the "
        "partner says it has more (cursor.more): the cursor stays at None and the next run "
        "reads this page again; check the expression against the partner's answer"
    )


async def test_cursor_from_finding_nothing_on_the_first_page_is_noted(
    client: Client, partner: Partner
) -> None:
    cursor = {"from": "headers.Link", "param": "query.page_info"}  # no such member
    schedule = await _schedule(client, partner, "vehicles", cursor)
    partner.respond_with(body={"vehicles": _rows("ABC1D23", "BRA2E19")})

    assert await runner(client).run_until_idle() == {"ok": 1}

    [run] = await runs(client, schedule["id"])
    assert "found no cursor on a page of 2 record(s) read from the schedule's first" in run["note"]


async def test_a_follow_cursor_is_checked_when_saved(client: Client) -> None:
    erp = await create_partner(client, "https://erp.example.com", name="ERP")
    action = await create_action(client, erp["id"], mode="proxy", method="GET", path="/v")
    base = {
        "name": "x",
        "action_id": action["id"],
        "every": "1h",
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles-pages"},
    }
    await upload_mapping(client, VEHICLES.format(items="value"))
    for cursor, pointer in (
        ({"follow": "header.Link", "param": "query.page"}, "/cursor/param"),
        ({"follow": "body.value", "from": "next"}, "/cursor/from"),
        ({"follow": "link"}, "/cursor/follow"),
        ({"follow": "header.bad name"}, "/cursor/follow"),
        ({"follow": "body.[["}, "/cursor/follow"),
    ):
        response = await client.post(
            "/api/v1/schedules", json={**base, "cursor": cursor}, headers=auth()
        )
        assert response.status == 422, cursor
        assert pointer in [e["pointer"] for e in (await response.json())["errors"]], cursor
    for follow in ("header.Link", "header.X-Next-Page-Url", 'body."@odata.nextLink"'):
        created = await post(client, "/api/v1/schedules", {**base, "cursor": {"follow": follow}})
        assert created["cursor"] == {"follow": follow}
        response = await client.delete(f"/api/v1/schedules/{created['id']}", headers=auth())
        assert response.status == 204


async def test_a_follow_cursor_naming_a_credential_header_is_refused_when_saved(
    client: Client,
) -> None:
    # As an answer rule's header: what may carry a credential or a cookie is not kept.
    erp = await create_partner(client, "https://erp.example.com", name="ERP")
    action = await create_action(client, erp["id"], mode="proxy", method="GET", path="/v")
    await upload_mapping(client, VEHICLES.format(items="value"))
    base = {
        "name": "x",
        "action_id": action["id"],
        "every": "1h",
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles-pages"},
    }
    for name in ("Set-Cookie", "WWW-Authenticate", "authorization", "Proxy-Authorization"):
        cursor = {"follow": f"header.{name}"}
        response = await client.post(
            "/api/v1/schedules", json={**base, "cursor": cursor}, headers=auth()
        )
        assert response.status == 422, name
        [error] = (await response.json())["errors"]
        assert error["pointer"] == "/cursor/follow", name
        assert error["message"] == f"{name} may carry a credential: it is not read", error


async def test_a_next_url_in_another_header_is_followed(client: Client, partner: Partner) -> None:
    await _schedule(client, partner, "data", {"follow": "header.X-Next-Page-Url"})
    partner.respond_with(
        body={"data": _rows("ABC1D23")}, headers={"X-Next-Page-Url": "/list?cursor=b%2F2"}, times=1
    )
    partner.respond_with(body={"data": _rows("BRA2E19")}, times=1)

    assert await runner(client).run_until_idle() == {"ok": 1}

    assert [r.raw_path for r in partner.requests] == ["/list?limit=2", "/list?cursor=b%2F2"]
    assert await _plates(client) == ["ABC1D23", "BRA2E19"]


async def test_a_next_page_token_in_a_response_header_is_read_as_the_cursor(
    client: Client, partner: Partner
) -> None:
    # ServiceM8 pages its lists by a token in `x-next-cursor` (sent back as `cursor=`), absent
    # on the last page; many ERPs do the same with `X-Next-Page-Token`.
    cursor = {"from": "header.x-next-cursor", "param": "query.cursor", "initial": "-1"}
    schedule = await _schedule(client, partner, "'@'", cursor, path="/api_1.0/vehicle.json")
    token = "9a8f1c2e-7b3d-4e5f-8a6b-1c2d3e4f5a6b"
    partner.respond_with(
        body=_rows("ABC1D23", "BRA2E19"), headers={"x-next-cursor": token}, times=1
    )
    # Any case of the header's name, blanks around its value dropped.
    partner.respond_with(
        body=_rows("XYZ9J87", "QWE1R23"), headers={"X-Next-Cursor": " t3 "}, times=1
    )
    partner.respond_with(body=_rows("RTY4U56"), times=1)  # the last page: no header

    assert await runner(client).run_until_idle() == {"ok": 1}

    assert [r.query.get("cursor") for r in partner.requests] == ["-1", token, "t3"]
    assert await _plates(client) == ["ABC1D23", "BRA2E19", "QWE1R23", "RTY4U56", "XYZ9J87"]
    [run] = await runs(client, schedule["id"])
    assert (run["outcome"], run["pages"], run["cursor_after"]) == ("ok", 3, "t3")
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["cursor"] == "t3"

    # As a body cursor's: the next run reads on from the last token it was given.
    partner.respond_with(body=_rows("RTY4U56", "ASD5F67"), headers={"x-next-cursor": "t4"}, times=1)
    partner.respond_with(body=[], times=1)
    await run_now(client, schedule["id"])
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert [r.query.get("cursor") for r in partner.requests[3:]] == ["t3", "t4"]
    assert "ASD5F67" in await _plates(client)


async def test_an_idle_header_token_list_read_again_ends_ok_with_nothing_new(
    client: Client, partner: Partner
) -> None:
    """The docs' ServiceM8 setup on a list nobody added to: the next run sends the last token
    again and gets the same last page, which names no next token. That is the list's end read
    again, no loop: the run ends `ok`, nothing written again, no failure streak."""
    cursor = {"from": "header.x-next-cursor", "param": "query.cursor", "initial": "-1"}
    schedule = await _schedule(client, partner, "'@'", cursor, path="/api_1.0/vehicle.json")
    partner.respond_with(body=_rows("ABC1D23", "BRA2E19"), headers={"x-next-cursor": "t2"}, times=1)
    partner.respond_with(body=_rows("RTY4U56"), times=1)  # the last page: no header
    assert await runner(client).run_until_idle() == {"ok": 1}

    for _ in range(2):  # nothing added since, run after run
        partner.respond_with(body=_rows("RTY4U56"), times=1)
        await run_now(client, schedule["id"])
        assert await runner(client).run_until_idle() == {"ok": 1}
        last = (await runs(client, schedule["id"]))[0]
        assert (last["outcome"], last["written"], last["skipped"], last["error"]) == (
            "ok",
            0,
            1,
            None,
        )
    assert [r.query.get("cursor") for r in partner.requests] == ["-1", "t2", "t2", "t2"]
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert (state["cursor"], state["failures"], state["last_error"]) == ("t2", 0, None)

    # A record added: the last page is read again with it, and it is written.
    partner.respond_with(body=_rows("RTY4U56", "ASD5F67"), times=1)
    await run_now(client, schedule["id"])
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert "ASD5F67" in await _plates(client)


async def test_a_header_cursor_is_checked_when_saved(client: Client) -> None:
    erp = await create_partner(client, "https://erp.example.com", name="ERP")
    action = await create_action(client, erp["id"], mode="proxy", method="GET", path="/v")
    await upload_mapping(client, VEHICLES.format(items="value"))
    base = {
        "name": "x",
        "action_id": action["id"],
        "every": "1h",
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles-pages"},
    }
    refused = {
        "header.bad name": "'bad name' is not a header name (header.NAME)",
        "header.": "'' is not a header name (header.NAME)",
        **{
            f"header.{name}": f"{name} may carry a credential: it is not read"
            for name in ("Set-Cookie", "WWW-Authenticate", "authorization", "Cookie")
        },
    }
    for given, message in refused.items():
        cursor = {"from": given, "param": "query.cursor"}
        response = await client.post(
            "/api/v1/schedules", json={**base, "cursor": cursor}, headers=auth()
        )
        assert response.status == 422, given
        [error] = (await response.json())["errors"]
        assert (error["pointer"], error["message"]) == ("/cursor/from", message), error
    cursor = {"from": "header.X-Next-Page-Token", "param": "query.pageToken", "more": "hasMore"}
    created = await post(client, "/api/v1/schedules", {**base, "cursor": cursor})
    assert created["cursor"] == {**cursor, "initial": None}


async def test_a_cursor_stored_before_header_names_reads_its_body_member_after_the_upgrade(
    client: Client, partner: Partner, services: Services
) -> None:
    """Before `header.NAME` named an answer header, a `cursor.from` beginning `header.` was a
    JMESPath reading the body's member `header`: the upgrade step quotes it (`"header".`),
    so such a schedule pages as it did, and the step is recorded once."""
    schedule = await _schedule(client, partner, "items", {"from": "page.next", "param": "query.c"})
    db = services.store.db
    # As an earlier version stored it, in a database from before the step.
    await db["schedules"].update_one(
        {"_id": ObjectId(schedule["id"])}, {"$set": {"cursor.from": "header.next"}}
    )
    await db["migrations"].delete_one({"_id": HEADER_MEMBER_STEP})
    await services.store.ensure_indexes()

    state = await get(client, f"/api/v1/schedules/{schedule['id']}")
    assert state["cursor"]["from"] == '"header".next'
    partner.respond_with(body={"items": _rows("ABC1D23"), "header": {"next": "p2"}}, times=1)
    partner.respond_with(body={"items": _rows("BRA2E19"), "header": {"next": None}}, times=1)
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert [r.query.get("c") for r in partner.requests] == [None, "p2"]
    assert await _plates(client) == ["ABC1D23", "BRA2E19"]
    assert await db["migrations"].find_one({"_id": HEADER_MEMBER_STEP}) is not None


async def test_the_cursor_upgrade_step_passes_over_a_cursor_from_that_is_no_string(
    client: Client, partner: Partner, services: Services
) -> None:
    """A query's regex also matches the strings inside an array, so a hand-edited
    `cursor.from` stored as a list (or a `cursor` stored as a list of objects) is found by the
    upgrade step: it leaves such a document as it is, and the store still becomes ready."""
    schedule = await _schedule(client, partner, "items", {"from": "page.next", "param": "query.c"})
    db = services.store.db
    first = await db["schedules"].find_one({"_id": ObjectId(schedule["id"])})
    assert first is not None
    # The same schedule twice more by hand, under other names, each with an odd cursor.
    odd = [{**first["cursor"], "from": ["header.next"]}, [{"from": "header.next"}]]
    ids = [ObjectId() for _ in odd]
    for n, (_id, cursor) in enumerate(zip(ids, odd, strict=True)):
        names = {
            k: f"{v}-{n}" for k, v in first.items() if k.startswith("name") and isinstance(v, str)
        }
        await db["schedules"].insert_one({**first, **names, "_id": _id, "cursor": cursor})
    await db["migrations"].delete_one({"_id": HEADER_MEMBER_STEP})
    await services.store.ensure_indexes()

    assert await db["migrations"].find_one({"_id": HEADER_MEMBER_STEP}) is not None
    stored = [await db["schedules"].find_one({"_id": i}, {"cursor": 1}) for i in ids]
    assert [doc["cursor"] for doc in stored if doc] == [
        {**first["cursor"], "from": ["header.next"]},
        [{"from": "header.next"}],
    ]
