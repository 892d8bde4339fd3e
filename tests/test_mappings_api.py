"""/api/v1/mappings: upload, versions, activation, diff, delete, dry run, through HTTP."""

from __future__ import annotations

import asyncio
import codecs
import gzip
import hashlib
import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from pymongo import AsyncMongoClient

from gateway.mapping.limits import MAX_FILE_BYTES
from gateway.web.state import services_key
from tests.support import auth
from tests.ui_support import log_in, make_user

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"
PAYLOADS = ROOT / "tests" / "data" / "partner_payloads"
YAML = {"Content-Type": "application/yaml"}
ENTITY_MAPPINGS = ROOT / "tests" / "data" / "entity_mappings"
OSMAND = (ENTITY_MAPPINGS / "osmand.yaml").read_text()
FLESPI = (ENTITY_MAPPINGS / "flespi.yaml").read_text()
BAD = """name: broken
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, transforms: [no_such_transform]}
  not_a_vehicle_field: placa
"""


async def _upload(
    client: Client, text: str, *, tenant: str = "acme", query: str = "", status: int = 201
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/mappings{query}", data=text.encode(), headers={**auth(tenant), **YAML}
    )
    body = await response.json()
    assert response.status == status, body
    return dict(body)


async def _json(client: Client, method: str, url: str, status: int = 200, **kw: Any) -> Any:
    kw.setdefault("headers", auth())
    response = await client.request(method, url, **kw)
    body = await response.json() if response.status != 204 else None
    assert response.status == status, body
    return body


async def test_yaml_upload_becomes_version_1_and_is_active(client: Client) -> None:
    created = await _upload(client, OSMAND)
    assert created["name"] == "osmand" and created["version"] == 1 and created["active"]
    assert created["format"] == "yaml" and created["author"] == "tester"
    assert created["direction"] == "inbound" and created["entity_type"] == "vehicle"
    shown = await _json(client, "GET", "/api/v1/mappings/osmand")
    assert shown["source"] == OSMAND and shown["document"]["name"] == "osmand"
    assert shown["used_by"] == []
    compiled = await client.app[services_key].mappings.active("acme", "osmand")
    assert compiled.key_fields == ("attributes.tracker_id",)


async def test_json_body_and_multipart_file_are_uploads_too(client: Client) -> None:
    document = {
        "name": "as-json",
        "direction": "inbound",
        "entity_type": "vehicle",
        "key": ["plate"],
        "fields": {"plate": "placa"},
    }
    created = await _json(client, "POST", "/api/v1/mappings", 201, json=document, headers=auth())
    assert created["format"] == "json" and created["version"] == 1
    form = aiohttp.FormData()
    form.add_field("file", OSMAND.encode(), filename="osmand.yaml", content_type="application/yaml")
    uploaded = await _json(client, "POST", "/api/v1/mappings", 201, data=form, headers=auth())
    assert uploaded["name"] == "osmand"
    listed = await _json(client, "GET", "/api/v1/mappings")
    assert [m["name"] for m in listed["items"]] == ["as-json", "osmand"]


ACCENTED = (
    "name: acentos\ndescription: veículos — São Paulo\ndirection: inbound\n"
    "entity_type: vehicle\nkey: [plate]\nfields:\n  plate: placa\n  status:\n"
    "    from: situacao\n    transforms:\n"
    "      - map: {values: {ativo: active, manutenção: maintenance}, default: active}\n"
)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        # a Windows editor's ANSI file, labelled (YAML, or JSON) as an entity POST is read
        (ACCENTED.encode("cp1252"), "application/yaml; charset=windows-1252"),
        (ACCENTED.encode("cp1252"), "text/yaml; charset=ISO-8859-1"),  # read as windows-1252
        (
            json.dumps(
                {
                    "name": "acentos",
                    "description": "veículos — São Paulo",
                    "direction": "inbound",
                    "entity_type": "vehicle",
                    "key": ["plate"],
                    "fields": {"plate": "placa"},
                },
                ensure_ascii=False,
            ).encode("cp1252"),
            "application/json; charset=windows-1252",
        ),
        # Notepad's "Unicode" (UTF-16 with its byte order mark), UTF-32 too, whatever the label
        (ACCENTED.encode("utf-16"), "application/yaml"),
        (ACCENTED.encode("utf-32"), "application/yaml; charset=utf-8"),
        (codecs.BOM_UTF8 + ACCENTED.encode(), "application/yaml"),
        (ACCENTED.encode("utf-16-le"), "application/yaml; charset=utf-16le"),
    ],
)
async def test_a_mapping_upload_is_read_in_the_charset_it_names_or_its_byte_order_mark(
    client: Client, body: bytes, content_type: str
) -> None:
    """docs/api.md: admin API bodies are read "as a trigger reads its bodies: UTF-8, a byte
    order mark ignored, or else the charset the Content-Type names". A mapping upload read
    UTF-8 alone: `422 file is not UTF-8` for a windows-1252 file labelled so, and for UTF-16."""
    headers = {**auth(), "Content-Type": content_type}
    created = await _json(client, "POST", "/api/v1/mappings", 201, data=body, headers=headers)
    shown = await _json(client, "GET", f"/api/v1/mappings/{created['name']}")
    assert shown["document"]["description"] == "veículos — São Paulo"
    if created["format"] == "yaml":
        assert shown["source"] == ACCENTED  # stored as text, its bytes' encoding gone
        status = shown["document"]["fields"]["status"]["transforms"][0]["map"]["values"]
        assert status["manutenção"] == "maintenance"


async def test_a_mapping_file_part_is_read_in_its_charset_and_a_file_of_none_says_how_to_fix_it(
    client: Client,
) -> None:
    form = aiohttp.FormData()
    form.add_field(
        "file",
        ACCENTED.encode("cp1252"),
        filename="acentos.yaml",
        content_type="application/yaml; charset=windows-1252",
    )
    await _json(client, "POST", "/api/v1/mappings", 201, data=form, headers=auth())
    form = aiohttp.FormData()
    form.add_field("file", ACCENTED.encode("utf-16"), filename="acentos.yaml")
    await _json(client, "POST", "/api/v1/mappings", 200, data=form, headers=auth())  # the same
    unlabelled = {**auth(), **YAML}
    refused = await _json(
        client, "POST", "/api/v1/mappings", 422, data=ACCENTED.encode("cp1252"), headers=unlabelled
    )
    (problem,) = refused["errors"]
    assert problem["keyword"] == "encoding", problem
    assert problem["message"].startswith("file is not UTF-8: invalid continuation byte at byte")
    assert "charset=windows-1252" in problem["message"]
    unknown = {**auth(), "Content-Type": "application/yaml; charset=no-such-charset"}
    refused = await _json(
        client, "POST", "/api/v1/mappings", 422, data=ACCENTED.encode("cp1252"), headers=unknown
    )
    assert refused["errors"][0]["message"].startswith("file: unknown charset 'no-such-charset'")


async def test_invalid_upload_lists_every_problem_with_its_line_and_stores_nothing(
    client: Client,
) -> None:
    problem = await _upload(client, BAD, status=422)
    assert problem["status"] == 422
    lines = {e["pointer"]: e.get("line") for e in problem["errors"]}
    assert len(problem["errors"]) >= 2, problem
    assert any("no_such_transform" in e["message"] for e in problem["errors"])
    assert lines.get("/fields/not_a_vehicle_field") == 7, problem["errors"]
    assert all(e.get("line") for e in problem["errors"])
    assert (await _json(client, "GET", "/api/v1/mappings"))["items"] == []
    await _json(client, "GET", "/api/v1/mappings/broken", 404)


async def test_malformed_yaml_is_422_with_its_line(client: Client) -> None:
    problem = await _upload(client, "name: x\ndirection: inbound\nfields: {a: [1, 2\n", status=422)
    [error] = problem["errors"]
    assert error["keyword"] == "yaml" and error["line"] >= 3 and "YAML" in error["message"]


async def test_an_unclosed_quote_is_422_at_the_line_that_opened_it(client: Client) -> None:
    """Not where the parser gave up: past the end of the file (line 4 of 3)."""
    text = 'name: "x\ndirection: inbound\nentity_type: vehicle\n'
    problem = await _upload(client, text, status=422)
    [error] = problem["errors"]
    assert error["keyword"] == "yaml" and error["line"] == 1, error
    assert "(line 1)" in error["message"] and "at the end of the file" in error["message"]


async def test_oversized_upload_is_413_and_other_media_types_415(client: Client) -> None:
    big = OSMAND + "#" * (MAX_FILE_BYTES + 1)
    response = await client.post("/api/v1/mappings", data=big.encode(), headers={**auth(), **YAML})
    assert response.status == 413
    assert "256" in (await response.json())["detail"]
    response = await client.post(
        "/api/v1/mappings",
        data=b"x",
        headers={**auth(), "Content-Type": "application/octet-stream"},
    )
    assert response.status == 415
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("other", "x")
    problem = await _json(client, "POST", "/api/v1/mappings", 422, data=form, headers=auth())
    assert problem["errors"][0]["pointer"] == "/file"


async def test_versions_increment_and_an_identical_upload_returns_the_latest(
    client: Client,
) -> None:
    await _upload(client, OSMAND)
    again = await _upload(client, OSMAND, status=200)
    assert again["version"] == 1 and again["created"] is False
    second = await _upload(client, OSMAND + "# v2\n")
    assert second["version"] == 2 and second["active"]
    versions = await _json(client, "GET", "/api/v1/mappings/osmand/versions")
    assert [(v["version"], v["active"]) for v in versions["items"]] == [(1, False), (2, True)]
    one = await _json(client, "GET", "/api/v1/mappings/osmand/versions/1")
    assert one["source"] == OSMAND and one["checksum"] != second["checksum"]


async def test_staged_upload_leaves_the_active_version_alone(client: Client) -> None:
    await _upload(client, OSMAND)
    staged = await _upload(client, OSMAND + "# staged\n", query="?activate=false")
    assert staged["version"] == 2 and not staged["active"]
    assert (await _json(client, "GET", "/api/v1/mappings/osmand"))["version"] == 1
    await _json(
        client,
        "POST",
        "/api/v1/mappings?activate=maybe",
        400,
        data=OSMAND,
        headers={**auth(), **YAML},
    )


async def test_a_roll_back_whose_active_version_changed_before_its_write_is_a_conflict(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A roll back from v3 writes v2 only while v3 is still active: another admin's
    activation of v1, made between its read and its write, stays."""
    for n in (1, 2, 3):
        await _upload(client, OSMAND.replace("[vehicle.position]", f"[vehicle.position, v.n{n}]"))
    store = client.app[services_key].mappings._versions._store
    read_version = store.version

    async def another_admin_activates_v1_meanwhile(tenant: str, name: str, version: int) -> Any:
        await store.set_active(tenant, name, 1, {"direction": "inbound"})
        return await read_version(tenant, name, version)

    monkeypatch.setattr(store, "version", another_admin_activates_v1_meanwhile)
    problem = await _json(client, "POST", "/api/v1/mappings/osmand/rollback", 409)
    assert "version 1 is active, not version 3; nothing was changed" in problem["detail"]
    monkeypatch.undo()
    assert (await _json(client, "GET", "/api/v1/mappings/osmand"))["version"] == 1


async def test_activate_and_rollback_change_what_triggers_run(client: Client) -> None:
    service = client.app[services_key].mappings
    await _upload(client, OSMAND)
    await _upload(client, OSMAND.replace("[vehicle.position]", "[vehicle.position, custom.fix]"))
    assert (await service.active("acme", "osmand")).emit == ("vehicle.position", "custom.fix")
    activated = await _json(client, "POST", "/api/v1/mappings/osmand/activate", json={"version": 1})
    assert activated["version"] == 1 and activated["active"]
    assert (await service.active("acme", "osmand")).emit == ("vehicle.position",)
    assert (await _json(client, "GET", "/api/v1/mappings/osmand"))["version"] == 1
    await _json(client, "POST", "/api/v1/mappings/osmand/activate", json={"version": 2})
    rolled = await _json(client, "POST", "/api/v1/mappings/osmand/rollback")
    assert rolled["version"] == 1
    assert (await service.active("acme", "osmand")).emit == ("vehicle.position",)
    problem = await _json(client, "POST", "/api/v1/mappings/osmand/rollback", 409)
    assert problem["detail"].endswith("first version of 'osmand'; nothing to roll back to")
    await _json(client, "POST", "/api/v1/mappings/osmand/activate", 404, json={"version": 9})
    bad = await _json(
        client, "POST", "/api/v1/mappings/osmand/activate", 422, json={"version": "two"}
    )
    assert bad["errors"][0]["pointer"] == "/version"


async def test_activating_a_mapping_with_a_member_it_does_not_know_is_a_422_and_changes_nothing(
    client: Client,
) -> None:
    await _upload(client, OSMAND)
    await _upload(client, OSMAND + "# staged\n", query="?activate=false")
    body = {"version": 2, "bogus": 1}
    problem = await _json(client, "POST", "/api/v1/mappings/osmand/activate", 422, json=body)
    assert [e["pointer"] for e in problem["errors"]] == ["/bogus"]
    assert (await _json(client, "GET", "/api/v1/mappings/osmand"))["version"] == 1


async def test_diff_lists_changed_paths_and_a_unified_diff_of_the_sources(
    client: Client,
) -> None:
    await _upload(client, OSMAND)
    changed = OSMAND.replace("emit: [vehicle.position]", "emit: [vehicle.moved]").replace(
        "  attributes.ignition: {from: ignition, transforms: [boolean]}\n", ""
    )
    await _upload(client, changed + "  odometer_km: {from: odometer, transforms: [number]}\n")
    diff = await _json(client, "GET", "/api/v1/mappings/osmand/diff?from=1&to=2")
    assert {"path": "/emit/0", "old": "vehicle.position", "new": "vehicle.moved"} in diff["changed"]
    assert [r["path"] for r in diff["removed"]] == ["/fields/attributes.ignition"]
    assert diff["added"] == [
        {"path": "/fields/odometer_km", "new": {"from": "odometer", "transforms": ["number"]}}
    ]
    assert "-emit: [vehicle.position]" in diff["unified"]
    assert "+emit: [vehicle.moved]" in diff["unified"]
    await _json(client, "GET", "/api/v1/mappings/osmand/diff?from=1", 422)
    await _json(client, "GET", "/api/v1/mappings/osmand/diff?from=1&to=7", 404)


def _comment_lines(count: int, distinct: int, seed: int) -> str:
    """`count` comment lines drawn from `distinct` short ones, in an order of `seed`'s."""
    draw = random.Random(seed)
    return "".join(f"# l{draw.randrange(distinct):04d}\n" for _ in range(count))


async def test_a_diff_too_costly_to_match_is_refused_at_once_by_the_api_and_the_page(
    client: Client,
) -> None:
    """Two 240 KB versions of 30,000 lines drawn from 110 distinct ones, in two orders: their
    line by line diff took seconds of the event loop (every request of the process waited);
    it is an `over-budget` 422 as soon as the pairs of equal lines are counted."""
    head = "name: pool\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
    head += "fields:\n  plate: {from: placa}\n"
    await _upload(client, head + _comment_lines(30_000, 110, seed=1))
    await _upload(client, head + _comment_lines(30_000, 110, seed=2))
    started = time.monotonic()
    problem = await _json(client, "GET", "/api/v1/mappings/pool/diff?from=1&to=2", 422)
    assert time.monotonic() - started < 1.5
    assert problem["type"].endswith("/over-budget")
    assert "too costly to show line by line" in problem["detail"]
    await make_user(client.app[services_key])
    await log_in(client)
    page = await client.get("/admin/mappings/pool/diff?from=1&to=2")
    assert page.status == 422
    assert "too costly to show line by line" in await page.text()


async def test_a_diff_of_more_lines_than_a_page_shows_is_refused_naming_the_limit(
    client: Client,
) -> None:
    """Two versions with no line in common: 24,000 lines of unified diff, over the 20,000
    a diff answers."""
    head = "name: rewrite\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
    head += "fields:\n  plate: {from: placa}\n"
    await _upload(client, head + "".join(f"# a{n}\n" for n in range(12_000)))
    await _upload(client, head + "".join(f"# b{n}\n" for n in range(12_000)))
    problem = await _json(client, "GET", "/api/v1/mappings/rewrite/diff?from=1&to=2", 422)
    assert "differ by more than 20,000 lines of unified diff" in problem["detail"]
    small = await _json(client, "GET", "/api/v1/mappings/rewrite/diff?from=1&to=1")
    assert small["unified"] == ""


async def test_delete_is_refused_while_a_trigger_or_action_uses_the_mapping(
    client: Client,
) -> None:
    await _upload(client, OSMAND)
    db = client.app[services_key].store.db
    trigger = await db["triggers"].insert_one(
        {"tenant": "acme", "name": "phones", "mapping": "osmand"}
    )
    await db["actions"].insert_one({"tenant": "acme", "name": "erp", "response_mapping": "osmand"})
    await db["triggers"].insert_one({"tenant": "other", "name": "theirs", "mapping": "osmand"})
    problem = await _json(client, "DELETE", "/api/v1/mappings/osmand", 409)
    assert "trigger phones" in problem["detail"] and "action erp" in problem["detail"]
    assert {u["name"] for u in problem["used_by"]} == {"phones", "erp"}
    shown = await _json(client, "GET", "/api/v1/mappings/osmand")
    assert len(shown["used_by"]) == 2
    await db["triggers"].delete_one({"_id": trigger.inserted_id})
    await db["actions"].delete_many({"tenant": "acme"})
    await _json(client, "DELETE", "/api/v1/mappings/osmand", 204)
    await _json(client, "GET", "/api/v1/mappings/osmand", 404)
    assert (await _json(client, "GET", "/api/v1/mappings"))["items"] == []
    again = await _upload(client, OSMAND)
    assert again["version"] == 2  # numbers are never reused: caches stay correct


async def test_another_tenant_can_neither_see_nor_change_a_mapping(client: Client) -> None:
    await _upload(client, OSMAND)
    await _upload(client, OSMAND + "# v2\n")
    other = auth("globex")
    for method, url, body in [
        ("GET", "/api/v1/mappings/osmand", None),
        ("GET", "/api/v1/mappings/osmand/versions", None),
        ("GET", "/api/v1/mappings/osmand/versions/1", None),
        ("GET", "/api/v1/mappings/osmand/diff?from=1&to=2", None),
        ("POST", "/api/v1/mappings/osmand/activate", {"version": 1}),
        ("POST", "/api/v1/mappings/osmand/rollback", None),
        ("DELETE", "/api/v1/mappings/osmand", None),
    ]:
        await _json(client, method, url, 404, json=body, headers=other)
    assert (await _json(client, "GET", "/api/v1/mappings", headers=other))["items"] == []
    assert (await _json(client, "GET", "/api/v1/mappings/osmand"))["version"] == 2
    mine = await _upload(client, OSMAND, tenant="globex")
    assert mine["version"] == 1


async def test_viewer_reads_but_cannot_upload_activate_or_delete(client: Client) -> None:
    await _upload(client, OSMAND)
    viewer = auth(role="viewer")
    await _json(client, "GET", "/api/v1/mappings", headers=viewer)
    await _json(client, "GET", "/api/v1/mappings/osmand", headers=viewer)
    await _json(client, "POST", "/api/v1/mappings", 403, data=OSMAND, headers={**viewer, **YAML})
    await _json(
        client, "POST", "/api/v1/mappings/osmand/activate", 403, json={"version": 1}, headers=viewer
    )
    await _json(client, "DELETE", "/api/v1/mappings/osmand", 403, headers=viewer)
    await _json(client, "GET", "/api/v1/mappings", 401, headers={})


async def test_list_is_cursor_paginated_by_name(client: Client) -> None:
    for name in ("c", "a", "b"):
        await _upload(client, OSMAND.replace("name: osmand", f"name: {name}"))
    first = await _json(client, "GET", "/api/v1/mappings?limit=2")
    assert [m["name"] for m in first["items"]] == ["a", "b"]
    assert first["items"][0] | {"updated_at": None} == {
        "name": "a",
        "active_version": 1,
        "latest_version": 1,
        "direction": "inbound",
        "entity_type": "vehicle",
        "updated_at": None,
    }
    rest = await _json(client, "GET", f"/api/v1/mappings?limit=2&cursor={first['next_cursor']}")
    assert [m["name"] for m in rest["items"]] == ["c"] and rest["next_cursor"] is None


async def _counts(client: Client) -> tuple[int, int]:
    db = client.app[services_key].store.db
    return await db["entities"].count_documents({}), await db["events"].count_documents({})


async def test_dry_run_shows_documents_keys_events_and_diff_and_writes_nothing(
    client: Client,
) -> None:
    vehicle = {"plate": "ABC1D23", "odometer_km": 150000, "status": "active"}
    await _json(client, "POST", "/api/v1/entities/vehicle", 201, json=vehicle)
    await _upload(client, FLESPI)
    stream = json.loads((PAYLOADS / "flespi_stream.json").read_text())
    before = await _counts(client)
    result = await _json(
        client, "POST", "/api/v1/mappings/test", json={"name": "flespi", "payload": stream}
    )
    assert await _counts(client) == before
    assert len(result["results"]) == len(stream)
    first = result["results"][0]
    assert first["key"] == {"plate": "ABC1D23"}
    assert first["document"]["last_position"]["lat"] == -23.56118
    assert first["events"] == ["entity.updated", "vehicle.position"]
    assert first["entity"]["write"] == "update"
    assert {"field": "odometer_km", "old": 150000, "new": 152340.4} in first["entity"]["changes"]
    stored = await _json(client, "GET", "/api/v1/entities/vehicle/ABC1D23")
    assert stored["odometer_km"] == 150000


async def test_dry_run_of_a_draft_reports_a_new_entity_and_bad_items_one_by_one(
    client: Client,
) -> None:
    draft = FLESPI
    stream = json.loads((PAYLOADS / "flespi_stream.json").read_text())
    stream[1].pop("device.name")
    result = await _json(
        client, "POST", "/api/v1/mappings/test", json={"mapping": draft, "payload": stream}
    )
    ok, bad = result["results"][0], result["results"][1]
    assert ok["entity"] == {"id": None, "write": "create", "changes": []}
    assert ok["events"] == ["entity.created", "vehicle.position"]
    assert bad["errors"][0]["target"] == "plate"
    assert (await _json(client, "GET", "/api/v1/mappings"))["items"] == []
    osmand = (PAYLOADS / "osmand_query.txt").read_text()
    found = await _json(
        client, "POST", "/api/v1/mappings/test", json={"mapping": OSMAND, "payload": osmand}
    )
    assert found["results"][0]["key"] == {"attributes.tracker_id": "353861053849681"}


async def test_a_dry_runs_items_list_a_hundred_problems_over_them_all(client: Client) -> None:
    """As a trigger's batch answer: 500 items of 100 problems each would be 50,000."""
    draft = {
        "name": "groups",
        "direction": "inbound",
        "entity_type": "vehicle",
        "key": ["plate"],
        "items": "units",
        "fields": {"plate": {"from": "placa", "required": True}, "groups": "grupos"},
    }
    units = [{"placa": "ABC1D23", "grupos": list(range(n, n + 49))} for n in range(4)]
    result = await _json(
        client,
        "POST",
        "/api/v1/mappings/test",
        json={"mapping": draft, "payload": {"units": units}},
    )
    entities = [r["entity"] for r in result["results"]]
    assert [len(e["errors"]) for e in entities] == [49, 49, 2, 1]
    assert [e.get("errors_omitted", 0) for e in entities] == [0, 0, 47, 48]


async def test_dry_run_of_a_position_mapping_shows_each_fix_and_what_the_append_refuses(
    client: Client,
) -> None:
    await _upload(client, (MAPPINGS / "flespi.yaml").read_text())
    stream = json.loads((PAYLOADS / "flespi_stream.json").read_text())
    stream[1]["position.latitude"] = "north"  # (91 is a number: stored, the fold refuses it)
    before = await _counts(client)
    result = await _json(
        client, "POST", "/api/v1/mappings/test", json={"name": "flespi", "payload": stream}
    )
    assert await _counts(client) == before
    assert result["target"] == "positions"
    ok, bad = result["results"]
    assert ok["document"]["plate"] == "ABC1D23" and ok["document"]["lat"] == -23.56118
    assert ok["events"] == [] and ok["fix"] == {"errors": []}
    # named where the payload has it, as the trigger names it (not the fix's `/lat`)
    (problem,) = bad["fix"]["errors"]
    assert (problem["pointer"], problem["target"]) == ("/position.latitude", "lat"), problem
    assert problem["message"].startswith("lat (from "), problem


async def test_dry_run_failure_points_into_the_test_request(client: Client) -> None:
    problem = await _json(
        client,
        "POST",
        "/api/v1/mappings/test",
        422,
        json={"mapping": OSMAND, "payload": {"id": "x"}},
    )
    pointers = {e["pointer"] for e in problem["errors"]}
    assert all(p.startswith("/payload") for p in pointers), pointers
    problem = await _json(
        client, "POST", "/api/v1/mappings/test", 422, json={"mapping": BAD, "payload": {}}
    )
    assert all(e["pointer"].startswith("/mapping/") for e in problem["errors"])
    problem = await _json(client, "POST", "/api/v1/mappings/test", 422, json={"payload": {}})
    assert problem["errors"][0]["pointer"] == "/name"
    await _json(client, "POST", "/api/v1/mappings/test", 404, json={"name": "nope", "payload": {}})


async def test_dry_run_of_an_outbound_mapping_builds_the_request_and_maps_the_answer(
    client: Client,
) -> None:
    # The shipped file also maps the driver's phone and e-mail, which vehicle.current_driver
    # does not have (yet): the upload checks targets against the entity schemas.
    shipped = (MAPPINGS / "hr-current-driver.yaml").read_text().splitlines(keepends=True)
    text = "".join(line for line in shipped if "phone" not in line and "email" not in line)
    await _upload(client, text)
    answer = json.loads((PAYLOADS / "driver_lookup_response.json").read_text())
    result = await _json(
        client,
        "POST",
        "/api/v1/mappings/test",
        json={
            "name": "hr-current-driver",
            "version": 1,
            "context": {"entity": {"plate": "ABC1D23"}},
            "response": answer,
        },
    )
    assert result["request"]["path_params"] == {"plate": "ABC1D23"}
    assert result["request"]["headers"]["Authorization"] == "Bearer <secret:hr_token>"
    assert result["response"]["current_driver"]["cpf"].isdigit()


TYRE_MAPPING = """name: tyres
direction: inbound
entity_type: other
kind: tyre
key: [key]
fields:
  key: serie
  serial: serie
  position: posicao
"""


async def test_mapping_for_a_tenant_kind_is_checked_against_that_kind(client: Client) -> None:
    problem = await _upload(client, TYRE_MAPPING, status=422)
    assert problem["errors"][0]["pointer"] == "/kind"
    schema = {
        "type": "object",
        "required": ["serial"],
        "additionalProperties": False,
        "properties": {"serial": {"type": "string"}, "position": {"enum": ["FL", "FR"]}},
    }
    await _json(client, "POST", "/api/v1/kinds", 201, json={"name": "tyre", "schema": schema})
    await _upload(client, TYRE_MAPPING)
    wrong = await _upload(client, TYRE_MAPPING + "  tread: sulco\n", status=422)
    assert wrong["errors"][0]["pointer"] == "/fields/tread"
    result = await _json(
        client,
        "POST",
        "/api/v1/mappings/test",
        json={"name": "tyres", "payload": {"serie": "T-1", "posicao": "XX"}},
    )
    entity = result["results"][0]["entity"]
    assert entity["write"] == "create" and entity["errors"][0]["pointer"] == "/position"


class _CountedHeads:
    """The store's reads of which version is active (the real reads, against the real
    database), counted; the first one's answer held back while `gate` is closed."""

    def __init__(self, client: Client) -> None:
        self._read = client.app[services_key].store.mappings.head
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def head(self, tenant: str, name: str) -> Any:
        self.reads += 1
        first = self.reads == 1
        doc = await self._read(tenant, name)
        if first:
            await self.gate.wait()
        return doc


async def test_callers_that_miss_the_active_version_together_read_it_once(
    client: Client, monkeypatch: Any
) -> None:
    await _upload(client, OSMAND)
    service = client.app[services_key].mappings
    heads = _CountedHeads(client)
    monkeypatch.setattr(client.app[services_key].store.mappings, "head", heads.head)
    service._active.clear()  # the cache expired
    compiled = await asyncio.gather(*(service.active("acme", "osmand") for _ in range(20)))
    assert {c.name for c in compiled} == {"osmand"} and heads.reads == 1


async def test_a_version_activated_while_the_active_one_is_read_is_not_hidden_by_that_read(
    client: Client, monkeypatch: Any
) -> None:
    await _upload(client, OSMAND)
    await _upload(client, OSMAND.replace("description: OsmAnd", "description: v2 OsmAnd"))
    service = client.app[services_key].mappings
    heads = _CountedHeads(client)
    monkeypatch.setattr(client.app[services_key].store.mappings, "head", heads.head)
    service._active.clear()
    heads.gate.clear()
    stale = asyncio.create_task(service.active("acme", "osmand"))  # reads "2 is active"
    while not heads.reads:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # its read has answered; it waits at the gate
    await _json(client, "POST", "/api/v1/mappings/osmand/activate", json={"version": 1})
    heads.gate.set()
    described = (await stale).source["description"]
    assert described.startswith("v2 ")  # it asked before the change
    now = await service.active("acme", "osmand")  # not the stale read's version, cached
    assert now.source["description"].startswith("OsmAnd")


async def test_a_viewer_may_run_dry_runs_and_previews_which_write_nothing(client: Client) -> None:
    """As in the admin UI (docs/admin-ui.md#roles): a viewer's dry run of a mapping or a flow,
    or preview of a template, gets the answer an admin's does, not a 403."""
    osmand = (PAYLOADS / "osmand_query.txt").read_text()
    template = {
        "name": "t",
        "channel_type": "email",
        "locales": {"pt-BR": {"subject": "{{ x }}", "text": "-"}},
    }
    calls = {
        "/api/v1/mappings/test": {"mapping": OSMAND, "payload": osmand},
        "/api/v1/templates/preview": {"template": template, "context": {"x": "y"}},
        "/api/v1/flows/test": {"flow": "nope", "event": {"type": "fine.received"}},
    }
    for path, body in calls.items():
        answers = []
        for role in ("admin", "viewer"):
            response = await client.post(path, json=body, headers=auth(role=role))
            answers.append((response.status, await response.json()))
        assert answers[0][0] in (200, 404) and answers[1] == answers[0], path
    refused = await client.post("/api/v1/mappings", json={}, headers=auth(role="viewer"))
    assert refused.status == 403


async def test_of_two_uploads_at_once_the_newer_version_stays_active(
    client: Client, mongodb_uri: str
) -> None:
    """Two uploads of one mapping at once: each takes its number, stores its version, then
    makes it active. The one numbered first, finishing last, made its older version active
    over the newer one, whose upload had been answered as active."""
    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, appname="faults")
    heads = admin[client.app[services_key].settings.database]["mapping_heads"]
    try:
        # The first upload's version insert is held 1.5 s on the server (the gateway's next
        # insert, once): the second upload, numbered after it, is stored and active meanwhile.
        await admin.admin.command(
            "configureFailPoint",
            "failCommand",
            mode={"times": 1},
            data={
                "failCommands": ["insert"],
                "appName": "rabbot-gateway",
                "blockConnection": True,
                "blockTimeMS": 1500,
            },
        )
        first = asyncio.create_task(_upload(client, OSMAND))
        async with asyncio.timeout(10):
            while ((await heads.find_one({"name": "osmand"})) or {}).get("latest_version") != 1:
                await asyncio.sleep(0.01)
        second = await _upload(client, OSMAND + "# the second\n")
        assert second["version"] == 2 and second["active"]
        assert (await first)["version"] == 1
    finally:
        await admin.admin.command("configureFailPoint", "failCommand", mode="off")
        await admin.close()
    shown = await _json(client, "GET", "/api/v1/mappings/osmand")
    assert shown["version"] == 2 and shown["active"]
    assert (await _json(client, "GET", "/api/v1/mappings/osmand/versions/1"))["active"] is False


async def test_a_coded_mapping_upload_is_inflated_only_to_the_mappings_own_limit(
    aiohttp_client: Any, make_app: Any
) -> None:
    """A gzip body that inflates far past a mapping file's limit (but within the gateway's
    body limit) is a 413 at the mapping's limit, found while inflating: it is never inflated
    whole first. The same for a gzip multipart form."""
    client = await aiohttp_client(make_app(max_body_bytes=16 * 1024 * 1024))
    yaml_bomb = gzip.compress(OSMAND.encode() + b"#" * (8 * 1024 * 1024))
    headers = {**auth(), **YAML, "Content-Encoding": "gzip"}
    response = await client.post("/api/v1/mappings", data=yaml_bomb, headers=headers)
    problem = await response.json()
    assert response.status == 413, problem
    assert problem["detail"] == f"the body inflates past the limit of {MAX_FILE_BYTES} bytes"
    form = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="m.yaml"\r\n'
        b"Content-Type: application/yaml\r\n\r\n"
        + OSMAND.encode()
        + b"#" * (8 * 1024 * 1024)
        + b"\r\n--b--\r\n"
    )
    headers = {
        **auth(),
        "Content-Type": "multipart/form-data; boundary=b",
        "Content-Encoding": "gzip",
    }
    response = await client.post("/api/v1/mappings", data=gzip.compress(form), headers=headers)
    problem = await response.json()
    assert response.status == 413, problem
    assert problem["detail"].startswith("the body inflates past the limit of ")
    listed = await client.get("/api/v1/mappings", headers=auth())
    assert (await listed.json())["items"] == []
    # Within the limit, a gzip upload is read as it was sent.
    headers = {**auth(), **YAML, "Content-Encoding": "gzip"}
    response = await client.post(
        "/api/v1/mappings", data=gzip.compress(OSMAND.encode()), headers=headers
    )
    assert response.status == 201, await response.text()


async def test_an_upload_whose_form_part_has_a_control_character_in_a_header_is_a_400(
    client: Any,
) -> None:
    """aiohttp's header parser refuses a part header with a control character with its own
    HTTP error, which the upload did not take for a malformed body: a 500 (suitefast5)."""
    form = (
        b'--b\r\nContent-Disposition: form-data; name="\x1c"\r\n\r\nx\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="m.yaml"\r\n'
        b"Content-Type: application/yaml\r\n\r\n" + OSMAND.encode() + b"\r\n--b--\r\n"
    )
    headers = {**auth(), "Content-Type": "multipart/form-data; boundary=b"}
    response = await client.post("/api/v1/mappings", data=form, headers=headers)
    problem = await response.json()
    assert response.status == 400, problem
    assert problem["detail"].startswith("malformed multipart body: a form part's headers")
    listed = await client.get("/api/v1/mappings", headers=auth())
    assert (await listed.json())["items"] == []


LIVE_VEHICLE = """name: live
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, transforms: [plate]}
"""
LIVE_CHANGES = {
    "/mapping: 'live' is for driver entities": """name: live
direction: inbound
entity_type: driver
key: [cpf]
fields:
  cpf: {from: cpf, transforms: [cpf]}
""",
    "/mapping: 'live' maps to positions; this trigger's target is entities": """name: live
direction: inbound
target: positions
fields:
  plate: {from: placa, transforms: [plate]}
  time: {received: time}
  lat: {value: -23.5}
  lon: {value: -46.6}
""",
    "/mapping: 'live' is outbound; mapping must be inbound": """name: live
direction: outbound
entity_type: vehicle
path: {plate: entity.plate}
""",
}


async def test_a_new_active_version_cannot_change_what_a_live_trigger_writes(
    client: Client,
) -> None:
    """A trigger on a driver mapping is refused when saved; a new version of its vehicle
    mapping that maps drivers (or positions, or answers) must not become active under it,
    by an upload or an activation: every payload of the trigger would be refused."""
    await _upload(client, LIVE_VEHICLE)
    trigger = {"name": "live", "entity_type": "vehicle", "mapping": "live"}
    await _json(client, "POST", "/api/v1/triggers", 201, json=trigger)
    for changed, text in LIVE_CHANGES.items():
        problem = await _upload(client, text, status=409)
        assert "trigger live" in problem["detail"] and changed in problem["detail"], problem
        assert [u["name"] for u in problem["used_by"]] == ["live"]
        staged = await _upload(client, text, query="?activate=false")
        problem = await _json(
            client,
            "POST",
            "/api/v1/mappings/live/activate",
            409,
            json={"version": staged["version"]},
        )
        assert changed in problem["detail"], problem
    assert (await _json(client, "GET", "/api/v1/mappings/live"))["version"] == 1
    same_shape = LIVE_VEHICLE + "  attributes.note: {value: v2}\n"
    assert (await _upload(client, same_shape))["active"]


async def test_a_new_version_is_refused_only_for_what_its_users_own_save_checks_refuse(
    client: Client,
) -> None:
    """Each user is asked its own save rule: a vehicle trigger's answer mapping may declare
    `vehicle` (or none) but not `driver`; an action's request mapping only has to stay
    outbound; a schedule's mapping must compile with the schedule's params."""
    from tests.partner_double import create_action, create_partner

    answer = "name: answer\ndirection: outbound\nbody:\n  placa: {from: entity.plate}\n"
    await _upload(client, answer)
    trigger = {"name": "t", "entity_type": "vehicle", "response_mapping": "answer"}
    await _json(client, "POST", "/api/v1/triggers", 201, json=trigger)
    declared = answer.replace("direction: outbound", "direction: outbound\nentity_type: vehicle")
    assert (await _upload(client, declared))["version"] == 2
    driver = answer.replace("direction: outbound", "direction: outbound\nentity_type: driver")
    problem = await _upload(client, driver, status=409)
    assert problem["detail"].startswith(
        "mapping 'answer' is used by trigger t, which would refuse this version as active: "
        "trigger t /response_mapping: 'answer' is for driver entities"
    ), problem
    assert [u["name"] for u in problem["used_by"]] == ["t"]
    assert (await _json(client, "GET", "/api/v1/mappings/answer"))["version"] == 2

    body = "name: push-body\ndirection: outbound\nbody:\n  plate: entity.plate\n"
    await _upload(client, body)
    partner = await create_partner(client, "http://127.0.0.1:9")
    await create_action(client, partner["id"], request_mapping="push-body")
    for_drivers = body.replace("direction: outbound", "direction: outbound\nentity_type: driver")
    assert (await _upload(client, for_drivers))["active"]
    inbound = "name: push-body\ndirection: inbound\nentity_type: driver\nkey: [cpf]\nfields:\n"
    problem = await _upload(client, inbound + "  cpf: cpf\n", status=409)
    assert (
        "action push /request_mapping: mapping 'push-body' is inbound; an action needs an "
        "outbound mapping" in problem["detail"]
    ), problem

    await _upload(client, PLACES.replace("name: places", "name: meter"))
    action = await create_action(
        client, partner["id"], name="feed", method="GET", path="/feed", mode="proxy"
    )
    target = {"entity_type": "vehicle", "mapping": "meter", "params": {"places": 3}}
    schedule = {"name": "meter-feed", "action_id": action["id"], "every": "1h", "target": target}
    await _json(client, "POST", "/api/v1/schedules", 201, json=schedule)
    two_places = PLACES.replace("name: places", "name: meter").replace(
        "places: {default: 1}", "places: {default: 1, enum: [1, 2]}"
    )
    problem = await _upload(client, two_places, status=409)
    assert "schedule meter-feed /target/params/places: " in problem["detail"], problem
    assert "None" not in problem["detail"], problem


FINES = """name: other-in
direction: inbound
entity_type: other
kind: fine
key: [key]
fields:
  key: ait
  plate: {from: placa, transforms: [plate]}
  ait_number: ait
  amount_brl: valor
  status: situacao
"""
FINE = {"ait": "A1", "placa": "ABC1D23", "valor": 10, "situacao": "open"}


async def test_a_mapping_of_another_kind_is_refused_under_a_kinds_trigger_and_schedule(
    client: Client,
) -> None:
    """A `fine` trigger writes through its mapping only `fine` documents: a mapping that writes
    checklists is refused when the trigger is saved, and a new version that would make it write
    checklists is a 409 naming it; a schedule of the kind is held the same way."""
    from tests.partner_double import create_action, create_partner

    checklists = FINES.replace("kind: fine", "kind: checklist").split("  plate:")[0]
    await _upload(client, checklists.replace("name: other-in", "name: lists"))
    spec = {"name": "fines", "entity_type": "other", "kind": "fine", "mapping": "lists"}
    problem = await _json(client, "POST", "/api/v1/triggers", 422, json=spec)
    assert problem["errors"][0]["pointer"] == "/mapping", problem
    assert "writes checklist documents; this trigger's kind is fine" in str(problem), problem

    await _upload(client, FINES)
    trigger = await _json(
        client, "POST", "/api/v1/triggers", 201, json={**spec, "mapping": "other-in"}
    )
    hook = {"Authorization": f"Bearer {trigger['token']}"}
    written = await client.post(f"/hooks/{trigger['id']}", json=FINE, headers=hook)
    assert written.status in (200, 201), await written.text()
    problem = await _upload(client, checklists, status=409)
    assert "trigger fines /mapping: 'other-in' writes checklist documents" in problem["detail"]
    assert (await _json(client, "GET", "/api/v1/mappings/other-in"))["version"] == 1
    again = await client.post(f"/hooks/{trigger['id']}", json={**FINE, "ait": "A2"}, headers=hook)
    assert again.status in (200, 201), await again.text()

    await _upload(client, FINES.replace("name: other-in", "name: feed-in"))
    partner = await create_partner(client, "http://127.0.0.1:9")
    action = await create_action(
        client, partner["id"], name="feed", method="GET", path="/feed", mode="proxy"
    )
    target = {"entity_type": "other", "kind": "fine", "mapping": "feed-in"}
    schedule = {"name": "fines-feed", "action_id": action["id"], "every": "1h", "target": target}
    await _json(client, "POST", "/api/v1/schedules", 201, json=schedule)
    problem = await _upload(
        client, checklists.replace("name: other-in", "name: feed-in"), status=409
    )
    assert "schedule fines-feed /target/mapping: 'feed-in' writes checklist" in problem["detail"]
    target = {**target, "mapping": "lists"}
    schedule = {**schedule, "name": "lists-feed", "target": target}
    problem = await _json(client, "POST", "/api/v1/schedules", 422, json=schedule)
    assert problem["errors"][0]["pointer"] == "/target/mapping", problem


async def test_a_user_the_active_version_does_not_fit_either_does_not_block_a_version(
    client: Client,
) -> None:
    """A trigger saved before a rule (its params no longer fit the mapping) fails with the
    active version already: that problem does not hold back a version, which may be the fix;
    a new problem does."""
    await _upload(client, LIVE_VEHICLE)
    trigger = {"name": "live", "entity_type": "vehicle", "mapping": "live"}
    saved = await _json(client, "POST", "/api/v1/triggers", 201, json=trigger)
    triggers = client.app[services_key].store.db["triggers"]
    await triggers.update_one({"_id": saved["id"]}, {"$set": {"params": {"places": 20}}})
    fixed = LIVE_VEHICLE.replace("fields:", "params:\n  places: {default: 1}\nfields:")
    assert (await _upload(client, LIVE_VEHICLE + "  attributes.note: {value: v2}\n"))["active"]
    driver = LIVE_CHANGES["/mapping: 'live' is for driver entities"]
    problem = await _upload(client, driver, status=409)  # a new problem: it does block
    assert "trigger live /mapping: 'live' is for driver entities" in problem["detail"], problem
    assert (await _upload(client, fixed))["active"]


PLACES = """name: places
direction: inbound
entity_type: vehicle
key: [plate]
params:
  places: {default: 1}
  p: {enum: [1, 2, 30], default: 1}
fields:
  plate: plate
  odometer_km: {from: km, transforms: [{round: {param: places}}]}
  attributes.rounded: {from: r, transforms: [{round: {param: p}}]}
"""


async def test_a_new_version_is_refused_for_any_of_many_users_not_only_the_first_50(
    client: Client,
) -> None:
    """Every user is asked, however many name the mapping: of 60 triggers rounding to 1 place
    and one rounding to 3, a version allowing 1 or 2 places is refused for that one."""
    await _upload(client, PLACES)
    for i in range(60):
        spec = {"name": f"v{i}", "entity_type": "vehicle", "mapping": "places"}
        await _json(client, "POST", "/api/v1/triggers", 201, json={**spec, "params": {"places": 1}})
    spec = {"name": "three", "entity_type": "vehicle", "mapping": "places"}
    await _json(client, "POST", "/api/v1/triggers", 201, json={**spec, "params": {"places": 3}})
    two = PLACES.replace("places: {default: 1}", "places: {default: 1, enum: [1, 2]}")
    problem = await _upload(client, two, status=409)
    assert [u["name"] for u in problem["used_by"]] == ["three"], problem
    assert "trigger three /params/places" in problem["detail"], problem
    assert (await _json(client, "GET", "/api/v1/mappings/places"))["version"] == 1
    three = PLACES.replace("places: {default: 1}", "places: {default: 1, enum: [1, 3]}")
    assert (await _upload(client, three))["active"]


async def test_trigger_params_the_mapping_does_not_compile_with_are_refused_on_save(
    client: Client,
) -> None:
    """Every payload of such a trigger would be refused for a fault of its settings: the
    mapping is compiled with the trigger's params when it is saved (or changed)."""
    await _upload(client, PLACES)
    for params, where in (
        ({"places": 20}, "/params/places"),
        ({"places": "x"}, "/params/places"),
        ({"p": 30}, "/params/p"),  # listed by the declaration, yet no round takes it
    ):
        trigger = {"name": "p", "entity_type": "vehicle", "mapping": "places", "params": params}
        problem = await _json(client, "POST", "/api/v1/triggers", 422, json=trigger)
        assert [p["pointer"] for p in problem["errors"]] == [where], problem
    trigger = {"name": "p", "entity_type": "vehicle", "mapping": "places", "params": {"p": 2}}
    saved = await _json(client, "POST", "/api/v1/triggers", 201, json=trigger)
    problem = await _json(
        client,
        "PATCH",
        f"/api/v1/triggers/{saved['id']}",
        422,
        json={"params": {"places": 20}},
        headers={**auth(), "If-Match": "*"},
    )
    assert problem["errors"][0]["pointer"] == "/params/places", problem


async def test_uploads_at_once_answer_each_and_store_one_text_once(client: Client) -> None:
    """Ten copies of one text at once (a retried upload, a deploy job run twice) are one
    version; ten different texts of a new name at once are ten versions; none is a 500."""

    async def upload(text: str) -> tuple[int, Any]:
        response = await client.post(
            "/api/v1/mappings", data=text.encode(), headers={**auth(), **YAML}
        )
        return response.status, await response.json()

    for round_ in range(3):
        text = LIVE_VEHICLE.replace("name: live", f"name: same{round_}")
        answers = await asyncio.gather(*(upload(text) for _ in range(10)))
        assert sorted(status for status, _ in answers) == [200] * 9 + [201], answers
        assert {body["version"] for _, body in answers} == {1}
        listed = await _json(client, "GET", f"/api/v1/mappings/same{round_}/versions")
        assert [v["version"] for v in listed["items"]] == [1]
    texts = [LIVE_VEHICLE.replace("name: live", "name: many") + f"# {i}\n" for i in range(10)]
    answers = await asyncio.gather(*(upload(text) for text in texts))
    assert [status for status, _ in answers] == [201] * 10, answers
    # Each text its own number, never one twice; a first upload that lost the race to create
    # the name's head may have spent a number, so the ten are not always 1 to 10.
    versions = sorted(body["version"] for _, body in answers)
    assert len(set(versions)) == 10 and versions[0] == 1, versions
    listed = await _json(client, "GET", "/api/v1/mappings/many/versions")
    assert sorted(v["version"] for v in listed["items"]) == versions
    # A text that is not the latest (which of the ten landed last is the race's choice) is a
    # new version of it.
    earlier = next(
        t for t, (_, body) in zip(texts, answers, strict=True) if body["version"] != versions[-1]
    )
    again = await upload(earlier)
    assert again[0] == 201 and again[1]["version"] > versions[-1]


async def test_copies_of_several_texts_at_once_store_each_text_once_without_a_wait(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two deploy jobs (the old text and the new one, each retried) at once: each text is one
    version, whichever copy of which text comes first, and no upload waits for a version of
    another text."""
    store = client.app[services_key].store.mappings
    latest, begin_upload = store.latest, store.begin_upload

    def together(call: Any, barrier: asyncio.Barrier) -> Any:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = await call(*args, **kwargs)
            await barrier.wait()
            return result

        return wrapped

    async def upload(text: str) -> tuple[int, Any]:
        response = await client.post(
            "/api/v1/mappings", data=text.encode(), headers={**auth(), **YAML}
        )
        return response.status, await response.json()

    loop = asyncio.get_running_loop()
    for round_, copies in enumerate((6, 12)):
        name = f"deploy{round_}"
        base = LIVE_VEHICLE.replace("name: live", f"name: {name}")
        assert (await upload(base))[0] == 201
        texts = [base + f"# {i}\n" for i in range(round_ + 2)]
        # At once means at once: every copy has read the latest version (the base) and noted
        # its upload under way before any goes on. Left to the machine's load, a late copy
        # could start after every other upload was answered: a later upload of an older text,
        # rightly a new version.
        monkeypatch.setattr(store, "latest", together(latest, asyncio.Barrier(copies)))
        monkeypatch.setattr(store, "begin_upload", together(begin_upload, asyncio.Barrier(copies)))
        started = loop.time()
        answers = await asyncio.gather(*(upload(texts[i % len(texts)]) for i in range(copies)))
        monkeypatch.undo()
        assert loop.time() - started < 6  # none waited out another's note (its 10 s lease)
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200] * (copies - len(texts)) + [201] * len(texts), answers
        by_text: dict[str, set[int]] = {}
        for i, (_, body) in enumerate(answers):
            by_text.setdefault(texts[i % len(texts)], set()).add(body["version"])
        assert all(len(versions) == 1 for versions in by_text.values()), by_text
        listed = await _json(client, "GET", f"/api/v1/mappings/{name}/versions")
        checksums = [v["checksum"] for v in listed["items"]]
        assert len(checksums) == len(set(checksums)) == len(texts) + 1, listed


async def _retried(client: Client, text: str) -> tuple[int, Any, float]:
    """An upload retried while the store's health still answers 503 after a failure: status,
    body and how long the answered try took."""
    loop = asyncio.get_running_loop()
    for _ in range(60):
        started = loop.time()
        response = await client.post(
            "/api/v1/mappings", data=text.encode(), headers={**auth(), **YAML}
        )
        took = loop.time() - started
        if response.status != 503:
            return response.status, await response.json(), took
        await asyncio.sleep(0.5)
    raise AssertionError("the store stayed unavailable")


async def test_a_retry_after_a_failed_insert_or_head_update_stores_its_text_once_at_once(
    client: Client,
) -> None:
    """The database fails an upload's insert (a 503, outcome unknown): the retry stores the
    text under the number it claimed, without waiting. A first upload whose version landed but
    whose head update failed: the retry answers that version (stored once) and shows it,
    active."""
    from gateway.errors import StoreUnavailable

    store = client.app[services_key].store.mappings
    insert, publish = store.insert_version, store.publish
    b = LIVE_VEHICLE + "# b\n"

    async def insert_fails_once(tenant: str, doc: Any) -> None:
        store.insert_version = insert  # type: ignore[method-assign]
        raise StoreUnavailable("the database went away")

    async def publish_fails_once(*args: Any, **kwargs: Any) -> None:
        store.publish = publish  # type: ignore[method-assign]
        raise StoreUnavailable("the database went away")

    assert (await _upload(client, LIVE_VEHICLE))["version"] == 1
    store.insert_version = insert_fails_once  # type: ignore[method-assign]
    await _upload(client, b, status=503)
    status, body, took = await _retried(client, b)
    # at once: well under the 10 s an upload's note holds the next one
    assert (status, body["version"], body["active"]) == (201, 2, True) and took < 5, body
    assert (await _upload(client, LIVE_VEHICLE + "# c\n"))["version"] == 3

    first = LIVE_VEHICLE.replace("name: live", "name: first")
    store.publish = publish_fails_once  # type: ignore[method-assign]
    await _upload(client, first, status=503)
    status, body, took = await _retried(client, first)
    assert (status, body["version"], body["active"]) == (200, 1, True) and took < 5, body
    listed = await _json(client, "GET", "/api/v1/mappings/first/versions")
    assert [v["version"] for v in listed["items"]] == [1]
    assert (await _json(client, "GET", "/api/v1/mappings/first"))["version"] == 1


async def test_an_upload_that_died_counts_as_under_way_only_for_its_lease(
    client: Client,
) -> None:
    """An upload whose process stopped leaves its number and its note. The next copy of its
    text stores the number at once. For the note's lease (10 s) uploads count as at once with
    it: an older text is answered with its version; past the lease it is a new version."""
    from gateway.store import mappings as mapping_store

    store = client.app[services_key].store.mappings
    heads = client.app[services_key].store.db["mapping_heads"]
    b, c = LIVE_VEHICLE + "# b\n", LIVE_VEHICLE + "# c\n"
    assert (await _upload(client, LIVE_VEHICLE))["version"] == 1
    _, since = await store.begin_upload("acme", "live", 1)  # a process that then stopped
    checksum = hashlib.sha256(b.encode()).hexdigest()
    assert await store.claim_version("acme", "live", checksum, since=since) == 2
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await _upload(client, b))["version"] == 2 and loop.time() - started < 5  # not 10 s
    assert (await _upload(client, c))["version"] == 3
    assert (await _upload(client, b, status=200))["version"] == 2  # within the lease
    past = datetime.now(UTC) - timedelta(seconds=mapping_store._UNDER_WAY_SECONDS + 1)
    await heads.update_one({"name": "live"}, {"$set": {"under_way.$[].at": past}})
    again = await _upload(client, b)
    assert again["version"] == 4 and again["active"], again


async def test_problem_messages_name_json_values_not_python_ones(client: Client) -> None:
    """A JSON client sends true and null: a message naming True or None names values it
    cannot type."""
    await _upload(
        client,
        "name: flags\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "params:\n  authoritative: {enum: [true, false], default: false}\n"
        "fields:\n  plate: plate\n",
    )
    trigger = {
        "name": "f",
        "entity_type": "vehicle",
        "mapping": "flags",
        "params": {"authoritative": "yes"},
    }
    problem = await _json(client, "POST", "/api/v1/triggers", 422, json=trigger)
    assert problem["errors"][0]["message"].endswith("is one of true, false"), problem
    for body, shown in (({}, "null"), ({"version": True}, "true")):
        problem = await _json(client, "POST", "/api/v1/mappings/flags/activate", 422, json=body)
        assert problem["detail"].endswith(f"got {shown}"), problem


async def test_a_dry_run_refuses_unknown_members_and_a_name_with_a_draft(client: Client) -> None:
    """`name` and `mapping` together ran the draft, silently: the stored mapping the admin
    named was not tested. One or the other; a member the route does not know is a 422."""
    await _upload(client, LIVE_VEHICLE)
    payload = {"placa": "ABC1D23"}
    for body, where in (
        ({"mapping": LIVE_VEHICLE, "payload": payload, "extra": 1}, "/extra"),
        ({"name": "live", "mapping": LIVE_VEHICLE, "payload": payload}, "/mapping"),
    ):
        problem = await _json(client, "POST", "/api/v1/mappings/test", 422, json=body)
        assert [e["pointer"] for e in problem["errors"]] == [where], problem
    await _json(client, "POST", "/api/v1/mappings/test", json={"name": "live", "payload": payload})


async def test_an_entity_the_schema_refuses_names_the_mapping_target_and_its_payload_source(
    client: Client,
) -> None:
    """As for position mappings: the partner sent `ano`, the mapping wrote it to `year`; the
    problem (answered and kept) says both and points at `/ano`, not into the mapped entity."""
    text = LIVE_VEHICLE.replace("name: live", "name: years") + "  year: ano\n"
    await _upload(client, text)
    body = {"name": "years", "entity_type": "vehicle", "mapping": "years"}
    trigger = await _json(client, "POST", "/api/v1/triggers", 201, json=body)
    response = await client.post(
        f"/hooks/{trigger['id']}",
        json={"placa": "ABC1D23", "ano": "2022"},
        headers={"Authorization": f"Bearer {trigger['token']}"},
    )
    answer = await response.json()
    assert response.status == 422 and answer["reason"] == "entity", answer
    (problem,) = answer["errors"]
    assert (problem["pointer"], problem["target"], problem["source"]) == ("/ano", "year", "ano")
    assert problem["message"].startswith("year (from ano): "), problem
    kept = await _json(client, "GET", f"/api/v1/rejected?trigger_id={trigger['id']}")
    assert kept["items"][0]["errors"] == answer["errors"], kept


async def test_an_entity_refusal_of_a_mapping_with_also_names_the_target_and_source(
    client: Client,
) -> None:
    """The main entity of a mapping that writes a driver with it (`also`) is named as a
    single entity is: `/ano`, `year (from ano): ...`, with target and source."""
    text = LIVE_VEHICLE.replace("name: live", "name: years") + (
        "  year: ano\n"
        "also:\n"
        "  - entity_type: driver\n"
        "    key: [cpf]\n"
        "    fields:\n"
        "      cpf: {from: cpf, transforms: [cpf]}\n"
        "      name: nome\n"
    )
    await _upload(client, text)
    body = {"name": "years", "entity_type": "vehicle", "mapping": "years"}
    trigger = await _json(client, "POST", "/api/v1/triggers", 201, json=body)
    response = await client.post(
        f"/hooks/{trigger['id']}",
        json={"placa": "ABC1D23", "ano": "2022", "cpf": "52998224725", "nome": "Ana"},
        headers={"Authorization": f"Bearer {trigger['token']}"},
    )
    answer = await response.json()
    assert response.status == 422 and answer["reason"] == "entity", answer
    (problem,) = answer["errors"]
    assert (problem["pointer"], problem["target"], problem["source"]) == ("/ano", "year", "ano")


async def test_an_entity_refusal_from_a_source_of_several_points_at_the_mapped_field(
    client: Client,
) -> None:
    """A coalesce (a template, a function) reads no one place of the payload: the problem
    keeps the mapped entity's pointer (`/year`), with its target and sources, never none."""
    text = LIVE_VEHICLE.replace("name: live", "name: years") + (
        "  year: {coalesce: [ano, anoModelo]}\n"
    )
    await _upload(client, text)
    body = {"name": "years", "entity_type": "vehicle", "mapping": "years"}
    trigger = await _json(client, "POST", "/api/v1/triggers", 201, json=body)
    response = await client.post(
        f"/hooks/{trigger['id']}",
        json={"placa": "ABC1D23", "ano": "2022"},
        headers={"Authorization": f"Bearer {trigger['token']}"},
    )
    answer = await response.json()
    assert response.status == 422 and answer["reason"] == "entity", answer
    (problem,) = answer["errors"]
    assert (problem["pointer"], problem["target"]) == ("/year", "year"), problem
    assert problem["message"].startswith("year (from ano, anoModelo): "), problem


# A version as the gateway stored it before the rules for new texts (YAML 1.1 number forms,
# reserved `emit` types): `2_000_000` was read as 2000000, `entity.touched` was emitted.
_STORED_BEFORE_THE_RULES = """name: meter
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, transforms: [plate]}
  odometer_km: {from: km, transforms: [number, {range: {min: 0, max: 2_000_000}}]}
emit: [entity.touched]
"""


async def test_a_version_stored_before_the_rules_for_new_texts_keeps_running_after_a_restart(
    client: Client, aiohttp_client: Any, make_app: Any
) -> None:
    from tests.triggers_support import create_trigger, hook

    await _upload(
        client,
        _STORED_BEFORE_THE_RULES.replace("2_000_000", "2000000").replace(
            "entity.touched", "meter.read"
        ),
    )
    trigger = await create_trigger(client, mapping="meter")
    store = client.app[services_key].mappings._store.mappings
    await store._versions.update_one(  # the text exactly as the older gateway stored it
        {"name": "meter", "version": 1}, {"$set": {"source": _STORED_BEFORE_THE_RULES}}
    )
    restarted = await aiohttp_client(make_app())  # a process started after the upgrade
    status, answer = await hook(restarted, trigger, {"placa": "ABC1D23", "km": 1200})
    assert status in (200, 201), answer
    entity = await _json(restarted, "GET", "/api/v1/entities/vehicle/ABC1D23")
    assert entity["odometer_km"] == 1200
    # It still means what it meant: the maximum is 2000000.
    status, answer = await hook(restarted, trigger, {"placa": "ABC1D23", "km": 2_000_001})
    assert status == 422, answer
    # A new text with the same forms is refused at upload, naming each.
    refused = await _upload(restarted, _STORED_BEFORE_THE_RULES, status=422)
    assert refused["errors"][0]["pointer"] == "/fields/odometer_km/transforms/1/range/max"
    text = _STORED_BEFORE_THE_RULES.replace("2_000_000", "2000000")
    refused = await _upload(restarted, text, status=422)
    assert refused["errors"][0]["pointer"] == "/emit/0"
