"""Schedules over page-numbered lists (TOTVS-style `?page=N&pageSize=M` answering
`{"hasNext", "items"}`, or offsets): the cursor steps through the pages and, once the list
ends, goes back to the first page, so every run reads the whole list again."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.mapping.limits import MAX_LIST_ITEMS
from gateway.schedules import sinks
from gateway.web.state import services_key
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

ERP_VEHICLES = """
name: erp-vehicles
direction: inbound
entity_type: vehicle
key: [plate]
items: items
fields:
  plate: {from: placa, transforms: [plate]}
  attributes.erp_id: {from: codigo, transforms: [string]}
"""


def _page(has_next: bool, *plates: str) -> dict[str, Any]:
    items = [{"placa": plate, "codigo": f"V{plate[-2:]}"} for plate in plates]
    return {"hasNext": has_next, "items": items}


async def _schedule(client: Client, partner: Partner, **cursor: Any) -> dict[str, Any]:
    await upload_mapping(client, ERP_VEHICLES)
    erp = await create_partner(client, partner.url, name="TOTVS", auth={"type": "none"})
    action = await create_action(
        client, erp["id"], name="veiculos", mode="proxy", method="GET", path="/api/veiculos"
    )
    body = {
        "name": "erp-veiculos",
        "action_id": action["id"],
        "every": "1h",
        "request": {"query": {"pageSize": 2}},
        "cursor": {"param": "query.page", "more": "hasNext", **cursor},
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
    }
    result: dict[str, Any] = await post(client, "/api/v1/schedules", body)
    return result


async def test_page_numbers_are_walked_and_the_next_run_reads_the_list_from_page_one(
    client: Client, partner: Partner
) -> None:
    schedule = await _schedule(client, partner, step=1, initial=1)
    partner.respond_with(body=_page(True, "ABC1D23", "BRA2E19"), times=1)
    partner.respond_with(body=_page(False, "RIO3F45"), times=1)

    assert await runner(client).run_until_idle() == {"ok": 1}
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["cursor"] == 1

    # The ERP's list grew at its end; the same first page comes back, then the longer last.
    partner.respond_with(body=_page(True, "ABC1D23", "BRA2E19"), times=1)
    partner.respond_with(body=_page(False, "RIO3F45", "SAO4G56"), times=1)
    await run_now(client, schedule["id"])
    assert await runner(client).run_until_idle() == {"ok": 1}

    assert [r.query["page"] for r in partner.requests] == ["1", "2", "1", "2"]
    assert all(r.query["pageSize"] == "2" for r in partner.requests)
    [second, first] = await runs(client, schedule["id"])
    assert (first["written"], second["written"]) == (3, 4)
    response = await client.get("/api/v1/entities/vehicle/SAO4G56", headers=auth())
    assert response.status == 200
    assert (await response.json())["attributes"] == {"erp_id": "V56"}


async def test_offsets_step_by_the_page_size_and_an_empty_page_ends_the_list(
    client: Client, partner: Partner
) -> None:
    schedule = await _schedule(client, partner, step=2, initial=0, param="query.offset", more=None)
    partner.respond_with(body={"items": []})  # from the third call on
    partner.respond_with(body=_page(True, "ABC1D23", "BRA2E19"), times=1)
    partner.respond_with(body=_page(True, "RIO3F45"), times=1)

    assert await runner(client).run_until_idle() == {"ok": 1}

    assert [r.query["offset"] for r in partner.requests] == ["0", "2", "4"]
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["cursor"] == 0


async def test_a_step_without_a_whole_first_page_or_with_from_is_a_422(client: Client) -> None:
    erp = await create_partner(client, "https://erp.example.com", name="TOTVS")
    action = await create_action(client, erp["id"], mode="proxy", method="GET", path="/v")
    base = {
        "name": "x",
        "action_id": action["id"],
        "every": "1h",
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
    }
    for cursor, pointer in (
        ({"step": 1, "param": "query.page"}, "/cursor/initial"),
        ({"step": 0, "initial": 1, "param": "query.page"}, "/cursor/step"),
        ({"step": 1, "initial": 1, "from": "next", "param": "query.page"}, "/cursor/from"),
    ):
        response = await client.post(
            "/api/v1/schedules", json={**base, "cursor": cursor}, headers=auth()
        )
        assert response.status == 422, cursor
        pointers = [e["pointer"] for e in (await response.json())["errors"]]
        assert pointer in pointers, (cursor, pointers)


async def test_a_time_cursor_the_partner_answers_older_is_kept_and_recorded(
    client: Client, partner: Partner
) -> None:
    """A partner that answers an older `since` than it was asked with (a reset, a replica
    behind) moved the cursor back: every later run read old data again."""
    await upload_mapping(client, ERP_VEHICLES)
    erp = await create_partner(client, partner.url, name="ERP", auth={"type": "none"})
    action = await create_action(
        client, erp["id"], name="veiculos", mode="proxy", method="GET", path="/api/veiculos"
    )
    cursor = {"from": "next", "param": "query.since", "more": "hasNext"}
    schedule = await post(
        client,
        "/api/v1/schedules",
        {
            "name": "erp-veiculos",
            "action_id": action["id"],
            "every": "1h",
            "cursor": {**cursor, "initial": "2026-11-01T00:00:00Z"},
            "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
        },
    )
    partner.respond_with(200, {**_page(False, "ABC1D23"), "next": "2026-11-20T10:00:00Z"})
    await runner(client).run_until_idle()
    partner.respond_with(200, {**_page(False, "BRA2E19"), "next": "2026-11-01T00:00:00Z"})
    await run_now(client, schedule["id"])
    await runner(client).run_until_idle()
    await run_now(client, schedule["id"])
    await runner(client).run_until_idle()

    assert [r.query["since"] for r in partner.requests] == [
        "2026-11-01T00:00:00Z",
        "2026-11-20T10:00:00Z",
        "2026-11-20T10:00:00Z",  # not back to the 1st
    ]
    second = (await runs(client, schedule["id"]))[1]
    assert (second["written"], second["cursor_after"], second["cursor_refused"]) == (
        1,
        "2026-11-20T10:00:00Z",
        "2026-11-01T00:00:00Z",
    )
    metrics = await (await client.get("/metrics")).text()
    refused = f'gateway_schedule_cursor_refused_total{{schedule="{schedule["id"]}"}}'
    assert f"{refused} 1.0" in metrics


@pytest.mark.parametrize(("yes", "no"), [("true", "false"), (1, 0), ("1", " FALSE ")])
async def test_a_partner_saying_no_more_in_text_or_as_zero_ends_the_list(
    client: Client, partner: Partner, yes: Any, no: Any
) -> None:
    """`more` as an XML answer (all text) or a PHP-style ERP (0/1) says it: its no ends
    the list, and the next run reads it from page one."""
    schedule = await _schedule(client, partner, step=1, initial=1)
    partner.respond_with(body={"hasNext": no, "items": []})  # past the end
    partner.respond_with(body={**_page(True, "ABC1D23", "BRA2E19"), "hasNext": yes}, times=1)
    partner.respond_with(body={**_page(False, "RIO3F45"), "hasNext": no}, times=1)

    assert await runner(client).run_until_idle() == {"ok": 1}

    assert [r.query["page"] for r in partner.requests] == ["1", "2"]
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["cursor"] == 1


async def test_a_run_whose_partner_secret_is_damaged_fails_naming_it(
    client: Client, partner: Partner
) -> None:
    """The partner's stored credentials open under no key, this process's key opens the key
    check: the run fails naming the secret (`secret_damaged`), counted in
    gateway_damaged_secrets_total, and the partner is not called (an `internal` failure).
    Saving the credentials again repairs it (the old ones, unread, name no account)."""
    await upload_mapping(client, ERP_VEHICLES)
    erp = await create_partner(client, partner.url, name="TOTVS")
    action = await create_action(
        client, erp["id"], name="veiculos", mode="proxy", method="GET", path="/api/veiculos"
    )
    body = {
        "name": "erp-veiculos",
        "action_id": action["id"],
        "every": "1h",
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
    }
    schedule = await post(client, "/api/v1/schedules", body)
    partners = client.app[services_key].store.db["partners"]
    doc = await partners.find_one({"name": "TOTVS"})
    sealed = doc["auth_sealed"]
    altered = sealed[:60] + ("B" if sealed[60] == "A" else "A") + sealed[61:]
    await partners.update_one({"_id": doc["_id"]}, {"$set": {"auth_sealed": altered}})

    assert await runner(client).run_until_idle() == {"failed": 1}
    [run] = await runs(client, schedule["id"])
    assert run["error"]["kind"] == "secret_damaged", run
    assert run["error"]["message"].startswith(
        f"stored secret damaged: partner 'TOTVS' ({erp['id']})"
    )
    metrics = await (await client.get("/metrics")).text()
    assert f'gateway_damaged_secrets_total{{secret="partner:{erp["id"]}:auth"}} 1.0' in metrics
    assert partner.requests == []
    again = {"auth": {"type": "none"}}  # saved again: the repair (its old account unread)
    repaired = await client.patch(f"/api/v1/partners/{erp['id']}", json=again, headers=auth())
    assert repaired.status == 200, await repaired.text()


async def test_a_page_of_more_items_than_a_batch_holds_writes_each_entity_in_the_partners_order(
    client: Client, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of more records than a batch holds is landed in batches, one after the other:
    a vehicle listed in the first batch and again in a later one ends as its later record
    says; the run counts the page once. The writes of a batch, concurrent, share their checks
    of the schedule's lease (a read begun after each asked), not one read each.

    A batch holds `MAX_BATCH_ITEMS` (the mapping's bound of a batch, 1,000): taken as 20 here,
    a page of 45 is three batches, as a page of 1,050 was two (and cost 1,050 entity writes
    for what 45 show)."""
    assert sinks.MAX_BATCH_ITEMS == MAX_LIST_ITEMS == 1000
    monkeypatch.setattr(sinks, "MAX_BATCH_ITEMS", 20)
    plates = [f"PG{chr(65 + n // 10)}{n // 10 % 10}{chr(65 + n % 10)}{n % 10}0" for n in range(45)]
    plates[40] = plates[5]  # listed again, 35 records later: two batches later
    items = [{"placa": plate, "codigo": f"C{n}"} for n, plate in enumerate(plates)]
    schedule = await _schedule(client, partner, step=1, initial=1)
    partner.respond_with(body={"hasNext": False, "items": items}, times=1)
    schedules = client.app[services_key].store.schedules
    holds, checks = schedules.holds, []

    async def counted(*args: Any) -> bool:
        checks.append(args)
        return await holds(*args)

    monkeypatch.setattr(schedules, "holds", counted)

    assert await runner(client).run_until_idle() == {"ok": 1}

    (run,) = await runs(client, schedule["id"])
    assert run["error"] is None, run
    assert (run["pages"], run["items_read"], run["written"], run["rejected"]) == (1, 45, 45, 0)
    for plate, erp_id in ((plates[0], "C0"), (plates[5], "C40"), (plates[44], "C44")):
        vehicle = await get(client, f"/api/v1/entities/vehicle/{plate}")
        assert vehicle["attributes"] == {"erp_id": erp_id}, plate
    assert 3 <= len(checks) < 45, len(checks)  # at least one a batch, fewer than one a write


async def test_odata_skip_offsets_are_sent_in_their_own_query_parameter(
    client: Client, partner: Partner
) -> None:
    # SAP Business One's Service Layer: `$skip` (docs' offset recipe with OData's name), and a
    # JSON:API-style `page[after]`; sent as they are named, percent-encoded where needed.
    schedule = await _schedule(
        client, partner, step=2, initial=0, param="query.$skip", more="hasNext"
    )
    partner.respond_with(body=_page(True, "ABC1D23", "BRA2E19"), times=1)
    partner.respond_with(body=_page(False, "RIO3F45"), times=1)

    assert await runner(client).run_until_idle() == {"ok": 1}

    assert [r.query.get("$skip") for r in partner.requests] == ["0", "2"]
    assert [r.raw_path for r in partner.requests] == [
        "/api/veiculos?pageSize=2&$skip=0",
        "/api/veiculos?pageSize=2&$skip=2",
    ]
    assert schedule["cursor"]["param"] == "query.$skip"


async def test_any_query_parameter_name_can_carry_the_cursor(client: Client) -> None:
    erp = await create_partner(client, "https://erp.example.com", name="ERP")
    action = await create_action(client, erp["id"], mode="proxy", method="GET", path="/v")
    await upload_mapping(client, ERP_VEHICLES)
    base = {
        "name": "x",
        "action_id": action["id"],
        "every": "1h",
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
    }
    for param in ("query.$skiptoken", "query.page[after]", "query.filter[updated_at]"):
        cursor = {"from": "next", "param": param}
        created = await post(client, "/api/v1/schedules", {**base, "cursor": cursor})
        assert created["cursor"]["param"] == param
        response = await client.delete(f"/api/v1/schedules/{created['id']}", headers=auth())
        assert response.status == 204
    for param in ("query.a&b", "query.a=b", "query.a b", "query.", "header.a b", "header.X\n"):
        cursor = {"from": "next", "param": param}
        response = await client.post(
            "/api/v1/schedules", json={**base, "cursor": cursor}, headers=auth()
        )
        assert response.status == 422, param
        assert "/cursor/param" in [e["pointer"] for e in (await response.json())["errors"]]


async def test_a_cursor_in_a_bracketed_query_parameter_is_percent_encoded(
    client: Client, partner: Partner
) -> None:
    schedule = await _schedule(
        client, partner, **{"from": "meta.next", "param": "query.page[after]", "more": None}
    )
    partner.respond_with(body={"items": [{"placa": "ABC1D23"}], "meta": {"next": "c+1"}}, times=1)
    partner.respond_with(body={"items": [], "meta": {"next": "c+1"}}, times=1)

    assert await runner(client).run_until_idle() == {"ok": 1}

    assert partner.requests[1].query["page[after]"] == "c+1"
    assert partner.requests[1].raw_path == "/api/veiculos?pageSize=2&page%5Bafter%5D=c%2B1"
    assert schedule["cursor"]["param"] == "query.page[after]"
