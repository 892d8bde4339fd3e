"""Managing triggers: the admin API and the `gateway trigger` command."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest

from gateway.__main__ import main
from gateway.config import Settings
from gateway.web.state import services_key
from tests.support import SECRET_KEY, auth
from tests.triggers_support import (
    VEHICLE,
    Client,
    create_trigger,
    hook,
    upload_shipped,
)


async def test_created_trigger_has_an_unguessable_id_a_url_and_a_token_shown_once(
    client: Client,
) -> None:
    trigger = await create_trigger(client)
    assert re.fullmatch(r"trg_[A-Za-z0-9_-]{20}", trigger["id"])
    assert trigger["url"] == f"http://127.0.0.1:8080/hooks/{trigger['id']}"
    assert trigger["token"] and trigger["status"] == "active" and trigger["version"] == 1
    got = await (await client.get(f"/api/v1/triggers/{trigger['id']}", headers=auth())).json()
    listed = await (await client.get("/api/v1/triggers", headers=auth())).json()
    assert "token" not in got and all("token" not in t for t in listed["items"])
    stored = await client.app[services_key].store.db["triggers"].find_one({"_id": trigger["id"]})
    assert trigger["token"] not in orjson.dumps(stored, default=str).decode()
    assert (await hook(client, trigger, VEHICLE))[0] == 201


async def test_an_invalid_specification_lists_every_problem(client: Client) -> None:
    response = await client.post(
        "/api/v1/triggers",
        headers=auth(),
        json={
            "name": "",
            "entity_type": "boat",
            "methods": ["PUT"],
            "rate_limit": {"per_second": 0},
            "input_schema": {"type": "nope"},
        },
    )
    assert response.status == 422
    pointers = {e["pointer"] for e in (await response.json())["errors"]}
    assert {"/name", "/entity_type", "/methods/0", "/rate_limit/per_second"} <= pointers
    bad_schema = await client.post(
        "/api/v1/triggers",
        headers=auth(),
        json={"name": "x", "entity_type": "vehicle", "input_schema": {"type": "nope"}},
    )
    assert (await bad_schema.json())["errors"][0]["pointer"].startswith("/input_schema")


async def test_mappings_must_exist_and_fit_the_trigger(client: Client) -> None:
    await upload_shipped(client, "hr-current-driver")
    await upload_shipped(client, "fine-feed")
    cases = {
        "/mapping": {"mapping": "nope"},
        "/response_mapping": {"response_mapping": "fine-feed"},
    }
    for pointer, spec in cases.items():
        response = await client.post(
            "/api/v1/triggers", headers=auth(), json={"name": "x", "entity_type": "vehicle", **spec}
        )
        assert response.status == 422
        assert (await response.json())["errors"][0]["pointer"] == pointer
    wrong_type = await client.post(
        "/api/v1/triggers",
        headers=auth(),
        json={"name": "x", "entity_type": "driver", "mapping": "fine-feed"},
    )
    assert wrong_type.status == 422


async def test_patch_changes_the_config_version_and_keeps_what_is_fixed(client: Client) -> None:
    trigger = await create_trigger(client)
    url = f"/api/v1/triggers/{trigger['id']}"
    patched = await client.patch(
        url,
        headers=auth(),
        json={"methods": ["POST"], "rate_limit": {"per_second": 5, "burst": 10}},
    )
    body = await patched.json()
    assert patched.status == 200 and body["version"] == 2 and body["methods"] == ["POST"]
    cleared = await (await client.patch(url, headers=auth(), json={"rate_limit": None})).json()
    assert cleared["rate_limit"] is None and cleared["version"] == 3
    for fixed in ({"entity_type": "driver"}, {"auth": {"mode": "webhook_signature"}}):
        response = await client.patch(url, headers=auth(), json=fixed)
        assert response.status == 422, fixed
    assert (await hook(client, trigger, VEHICLE))[0] == 201  # the token survived the patches


async def test_names_are_unique_per_tenant_and_triggers_are_tenant_scoped(
    client: Client,
) -> None:
    trigger = await create_trigger(client, name="erp")
    duplicate = await client.post(
        "/api/v1/triggers", headers=auth(), json={"name": "erp", "entity_type": "vehicle"}
    )
    assert duplicate.status == 409
    await create_trigger(client, tenant="globex", name="erp")
    other = await client.get(f"/api/v1/triggers/{trigger['id']}", headers=auth("globex"))
    assert other.status == 404
    viewer = await client.post(
        "/api/v1/triggers",
        headers=auth(role="viewer"),
        json={"name": "v", "entity_type": "vehicle"},
    )
    assert viewer.status == 403
    assert (await client.get("/api/v1/triggers", headers=auth(role="viewer"))).status == 200


async def test_list_is_cursor_paginated(client: Client) -> None:
    for n in range(3):
        await create_trigger(client, name=f"t{n}")
    first = await (await client.get("/api/v1/triggers?limit=2", headers=auth())).json()
    rest = await (
        await client.get(f"/api/v1/triggers?limit=2&cursor={first['next_cursor']}", headers=auth())
    ).json()
    names = [t["name"] for t in first["items"] + rest["items"]]
    assert sorted(names) == ["t0", "t1", "t2"] and rest["next_cursor"] is None


async def test_rotation_issues_a_new_token_and_deletion_ends_every_token(
    client: Client,
) -> None:
    trigger = await create_trigger(client)
    response = await client.post(f"/api/v1/triggers/{trigger['id']}/rotate", headers=auth())
    rotated = await response.json()
    assert rotated["token"] != trigger["token"] and len(rotated["credentials"]) == 1
    assert (await hook(client, trigger, VEHICLE))[0] == 401
    assert (await hook(client, rotated, VEHICLE))[0] == 201
    too_long = await client.post(
        f"/api/v1/triggers/{trigger['id']}/rotate", headers=auth(), json={"grace_seconds": 10**9}
    )
    assert too_long.status == 422
    deleted = await client.delete(f"/api/v1/triggers/{trigger['id']}", headers=auth())
    assert deleted.status == 204
    assert (await hook(client, rotated, VEHICLE))[0] == 401
    gone = await client.get(f"/api/v1/triggers/{trigger['id']}", headers=auth())
    assert gone.status == 404


async def test_cli_creates_a_trigger_whose_token_works_and_lists_it(
    client: Client,
    settings: Settings,
    mongodb_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in {
        "MONGODB_URI": mongodb_uri,
        "GATEWAY_DATABASE": settings.database,
        "GATEWAY_SECRET_KEY": SECRET_KEY,
        "GATEWAY_RUN_WORKERS": "false",
        "GATEWAY_DATA_DIR": str(settings.data_dir),
        "GATEWAY_PUBLIC_URL": "https://gw.example.com",
    }.items():
        monkeypatch.setenv(name, value)
    args = [
        "trigger",
        "create",
        "--tenant",
        "acme",
        "--name",
        "gps",
        "--entity-type",
        "vehicle",
        "--methods",
        "GET,POST",
    ]
    assert await asyncio.to_thread(main, args) == 0
    created: dict[str, Any] = orjson.loads(capsys.readouterr().out)
    assert created["url"] == f"https://gw.example.com/hooks/{created['id']}"
    assert created["methods"] == ["GET", "POST"]
    assert (await hook(client, created, VEHICLE))[0] == 201
    assert await asyncio.to_thread(main, ["trigger", "list", "--tenant", "acme"]) == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert [t["name"] for t in listed["items"]] == ["gps"] and "token" not in listed["items"][0]


async def test_cli_refusal_names_each_problem_s_pointer_once(
    settings: Settings,
    mongodb_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`gateway trigger create --mapping osmand` on a tenant without it printed
    `  /mapping: /mapping: no mapping 'osmand'`."""
    for name, value in {
        "MONGODB_URI": mongodb_uri,
        "GATEWAY_DATABASE": settings.database,
        "GATEWAY_SECRET_KEY": SECRET_KEY,
        "GATEWAY_DATA_DIR": str(settings.data_dir),
    }.items():
        monkeypatch.setenv(name, value)
    args = ["trigger", "create", "--tenant", "acme", "--name", "gps", "--target", "positions"]
    assert await asyncio.to_thread(main, [*args, "--mapping", "osmand"]) == 1
    err = capsys.readouterr().err
    assert "error: trigger is invalid: /mapping: no mapping 'osmand'" in err
    assert "\n  /mapping: no mapping 'osmand'\n" in err, err
    assert "/mapping: /mapping:" not in err


async def test_trigger_limits_cannot_exceed_the_operators(client: Client) -> None:
    response = await client.post(
        "/api/v1/triggers",
        headers=auth(),
        json={"name": "big", "entity_type": "vehicle", "max_batch_items": 10_000},
    )
    assert response.status == 422
    assert "GATEWAY_MAX_BATCH_ITEMS" in await response.text()


async def test_an_input_schema_pattern_that_needs_backtracking_is_refused(client: Client) -> None:
    """The input schema validates every call before its mapping: its patterns must run in
    linear time, as a kind's (a lookaround costs ~10 ms a string on the event loop)."""
    schema = {"type": "object", "properties": {"n": {"type": "string", "pattern": "^(?!0)\\d+$"}}}
    body = {"name": "p", "entity_type": "vehicle", "methods": ["POST"], "input_schema": schema}
    answer = await client.post("/api/v1/triggers", json=body, headers=auth())
    assert answer.status == 422
    [problem] = (await answer.json())["errors"]
    assert problem["pointer"] == "/input_schema/properties/n/pattern"
    schema["properties"]["n"]["pattern"] = "^[1-9]\\d*$"  # the same rule, in linear time
    assert (await client.post("/api/v1/triggers", json=body, headers=auth())).status == 201
