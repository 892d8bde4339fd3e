"""A mapping's or a flow's versions are bounded per name (`GATEWAY_VERSIONS_KEPT`, docs/
mappings.md "How many versions are kept"): a new version stored removes the ones past the newest
N, but the active one and (a flow's) the ones its runs still run or may replay; a roll back to
a kept version works; a pruned one is a 404 that says it was pruned."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web

from gateway.clock import utcnow
from gateway.config import ConfigError, Settings
from gateway.errors import Unavailable
from gateway.web.state import services_key
from tests.partner_double import post
from tests.support import auth
from tests.ui_support import Client

KEPT = 3


@pytest.fixture
async def spared(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> Client:
    """A gateway whose versions that stopped being active are spared a while (as served)."""
    app: Client = await aiohttp_client(make_app(versions_kept=KEPT))
    return app


@pytest.fixture
async def client(spared: Client) -> Client:
    """One that prunes a version as soon as it is no longer active (the counts read here)."""
    store = spared.app[services_key].store
    store.mappings.retired_kept = store.notify.flows.retired_kept = timedelta(0)
    return spared


def _mapping(n: int, name: str = "erp-km") -> str:
    return (
        f"name: {name}\n"
        "direction: inbound\n"
        "entity_type: vehicle\n"
        "key: [plate]\n"
        "fields:\n"
        "  plate: {from: placa, transforms: [upper]}\n"
        f"  model: {{from: modelo{n}}}\n"
    )


async def _upload(client: Client, text: str, *, activate: bool = True) -> int:
    headers = {**auth(), "Content-Type": "application/yaml"}
    query = "" if activate else "?activate=false"
    response = await client.post(f"/api/v1/mappings{query}", data=text.encode(), headers=headers)
    body = await response.json()
    assert response.status in (200, 201), body
    return int(body["version"])


async def _versions(client: Client, path: str) -> list[int]:
    response = await client.get(f"{path}/versions", headers=auth())
    body = await response.json()
    assert response.status == 200, body
    items = body["items"] if isinstance(body, dict) else body
    return [int(v["version"]) for v in items]


async def _active(client: Client, path: str) -> int:
    body = await (await client.get(path, headers=auth())).json()
    return int(body["version"])


async def test_a_mappings_oldest_versions_go_its_active_one_stays_and_a_pruned_one_is_a_404(
    client: Client,
) -> None:
    path = "/api/v1/mappings/erp-km"
    for n in range(1, 6):
        assert await _upload(client, _mapping(n)) == n
    assert await _versions(client, path) == [3, 4, 5]
    gone = await client.get(f"{path}/versions/1", headers=auth())
    problem = await gone.json()
    assert gone.status == 404 and "pruned" in problem["detail"], problem
    # An old version made active is kept past the newest KEPT, however many come after it;
    # the ones staged meanwhile (not activated) count among the newest.
    activated = await client.post(f"{path}/activate", json={"version": 3}, headers=auth())
    assert activated.status == 200, await activated.text()
    for n in range(6, 10):
        await _upload(client, _mapping(n), activate=False)
    assert await _versions(client, path) == [3, 7, 8, 9]
    assert await _active(client, path) == 3
    # Roll back to a kept version: 9 active, back to 8.
    newest = await client.post(f"{path}/activate", json={"version": 9}, headers=auth())
    assert newest.status == 200, await newest.text()
    rolled = await client.post(f"{path}/rollback", headers=auth())
    assert rolled.status == 200, await rolled.text()
    assert await _active(client, path) == 8
    # 3 no longer active: it goes with the next version stored.
    await _upload(client, _mapping(10), activate=False)
    assert await _versions(client, path) == [8, 9, 10]
    pruned = await client.post(f"{path}/activate", json={"version": 3}, headers=auth())
    assert pruned.status == 404 and "pruned" in (await pruned.json())["detail"]


async def test_a_version_never_stored_is_a_plain_404(client: Client) -> None:
    await _upload(client, _mapping(1))
    missing = await client.get("/api/v1/mappings/erp-km/versions/7", headers=auth())
    problem = await missing.json()
    assert missing.status == 404 and "pruned" not in problem["detail"], problem


async def test_uploads_at_once_keep_the_newest_versions_and_the_active_one(
    client: Client,
) -> None:
    """A script uploading in a loop, several at once: the versions stay bounded, the active
    version is stored, and the newest ones are there."""
    await asyncio.gather(*(_upload(client, _mapping(n)) for n in range(1, 13)))
    versions = await _versions(client, "/api/v1/mappings/erp-km")
    active = await _active(client, "/api/v1/mappings/erp-km")
    assert active in versions and versions[-KEPT:] == list(range(13 - KEPT, 13))
    assert len(versions) <= KEPT + 1, versions
    stored = await client.get(f"/api/v1/mappings/erp-km/versions/{active}", headers=auth())
    assert stored.status == 200


def _flow(n: int) -> dict[str, Any]:
    on = {"events": ["entity.created"], "filter": {"origin": {"kind": ["admin"]}}}
    steps = [{"id": "tag", "set": {"fields": {"attributes.tagged": f"`{n}`"}}}]
    return {"name": "marca", "on": on, "steps": steps}


async def test_a_flow_version_its_runs_still_need_is_kept(client: Client) -> None:
    """Version 1 has a run waiting (pending): uploads past KEPT remove 2 and 3, not 1, and
    the run runs on it."""
    path = "/api/v1/flows/marca"
    await post(client, "/api/v1/flows", _flow(1))
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    services = client.app[services_key]
    await services.relay.run_until_idle()  # the run of version 1 is stored, not run
    for n in range(2, 7):
        await post(client, "/api/v1/flows", _flow(n))
    assert await _versions(client, path) == [1, 4, 5, 6]
    gone = await client.get(f"{path}/versions/2", headers=auth())
    assert gone.status == 404 and "pruned" in (await gone.json())["detail"]
    await services.flow_runner.run_until_idle()
    (run,) = await services.store.db["flow_runs"].find({}).to_list(None)
    assert (run["version"], run["status"]) == (1, "succeeded"), run
    vehicle = await (await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    assert vehicle["attributes"]["tagged"] == 1
    # Its run done, version 1 goes with the next version stored.
    await post(client, "/api/v1/flows", _flow(7))
    assert await _versions(client, path) == [5, 6, 7]


def test_the_bound_is_a_setting() -> None:
    assert Settings.from_env({"GATEWAY_SECRET_KEY": "k" * 32}).versions_kept == 50
    env = {"GATEWAY_SECRET_KEY": "k" * 32, "GATEWAY_VERSIONS_KEPT": "0"}
    assert Settings.from_env(env).versions_kept == 0  # every version kept
    with pytest.raises(ConfigError, match="GATEWAY_VERSIONS_KEPT"):
        Settings.from_env({**env, "GATEWAY_VERSIONS_KEPT": "1"})


async def test_an_old_version_activated_while_an_upload_prunes_stays_stored(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 1 is being activated (read, checked) when an upload stores version 4 and prunes
    past the newest three: 1 is held by the activation, so it is not removed under it, and the
    mapping's active version is stored (before the hold, the head named a version gone)."""
    for n in range(1, 4):
        await _upload(client, _mapping(n))
    store = client.app[services_key].store.mappings
    set_active = store.set_active

    async def upload_first(*args: Any, **kwargs: Any) -> bool:
        await _upload(client, _mapping(4), activate=False)  # prunes as 1 is made active
        return await set_active(*args, **kwargs)

    monkeypatch.setattr(store, "set_active", upload_first)
    activated = await client.post(
        "/api/v1/mappings/erp-km/activate", json={"version": 1}, headers=auth()
    )
    assert activated.status == 200, await activated.text()
    monkeypatch.undo()
    active = await client.get("/api/v1/mappings/erp-km", headers=auth())
    assert active.status == 200 and (await active.json())["version"] == 1
    assert await _versions(client, "/api/v1/mappings/erp-km") == [1, 2, 3, 4]
    await _upload(client, _mapping(5), activate=False)
    assert await _versions(client, "/api/v1/mappings/erp-km") == [1, 3, 4, 5]


async def test_a_run_started_on_a_version_as_an_upload_makes_another_active_runs_on_it(
    spared: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rolled back to version 1 (2, 3 newer): the starter read 1 active and stores its run
    after an upload stored and activated 4 and pruned past the newest three (a process's
    active flows are cached 2 s). Version 1 stopped being active a moment ago: it is kept, and
    the run runs on it; it was removed, and the run failed "has no version 1 (pruned".
    Once the run is done and the grace past, the next upload prunes it."""
    client, path = spared, "/api/v1/flows/marca"
    for n in (1, 2, 3):
        await post(client, "/api/v1/flows", _flow(n))
    back = await client.post(f"{path}/activate", json={"version": 1}, headers=auth())
    assert back.status == 200, await back.text()
    services = client.app[services_key]
    runs = services.store.notify.runs
    insert_many = runs.insert_many

    async def upload_meanwhile(docs: Any) -> Any:
        await post(client, "/api/v1/flows", _flow(4))  # activates 4, prunes
        return await insert_many(docs)

    monkeypatch.setattr(runs, "insert_many", upload_meanwhile)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await services.relay.run_until_idle()
    monkeypatch.undo()
    await services.flow_runner.run_until_idle()
    (run,) = await services.store.db["flow_runs"].find({}).to_list(None)
    assert (run["version"], run["status"]) == (1, "succeeded"), run
    assert await _versions(client, path) == [1, 2, 3, 4]
    services.store.notify.flows.retired_kept = timedelta(0)  # the grace past
    await post(client, "/api/v1/flows", _flow(5))
    assert await _versions(client, path) == [3, 4, 5]


async def test_a_prune_failing_after_its_marks_leaves_its_versions_activatable(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails at the prune's delete: the upload is answered stored, version 1
    stays listed, and activating it works (its `pruning` mark refused it, 404 "pruned",
    until some later upload of the name)."""
    path = "/api/v1/mappings/erp-km"
    for n in range(1, 4):
        await _upload(client, _mapping(n))
    versions = client.app[services_key].store.mappings._versions

    async def blip(*args: Any, **kwargs: Any) -> Any:
        raise Unavailable("database blip")

    monkeypatch.setattr(versions, "delete_many", blip)
    await _upload(client, _mapping(4), activate=False)
    monkeypatch.undo()
    assert await _versions(client, path) == [1, 2, 3, 4]
    rolled = await client.post(f"{path}/activate", json={"version": 1}, headers=auth())
    assert rolled.status == 200, await rolled.text()


async def test_a_mark_left_by_a_failed_prune_refuses_a_hold_only_a_while(client: Client) -> None:
    """A mark its prune could not take off (the database down meanwhile) refuses the
    activation while a prune could still be removing the version, not for ever."""
    path = "/api/v1/mappings/erp-km"
    for n in range(1, 4):
        await _upload(client, _mapping(n))
    store = client.app[services_key].store.mappings
    versions = store._versions
    await versions.update_one({"name": "erp-km", "version": 1}, {"$set": {"pruning": utcnow()}})
    refused = await client.post(f"{path}/activate", json={"version": 1}, headers=auth())
    assert refused.status == 404, await refused.text()
    left = utcnow() - store.marks_kept - timedelta(seconds=1)
    await versions.update_one({"name": "erp-km", "version": 1}, {"$set": {"pruning": left}})
    rolled = await client.post(f"{path}/activate", json={"version": 1}, headers=auth())
    assert rolled.status == 200, await rolled.text()
    assert await _active(client, path) == 1


@pytest.mark.parametrize("kept", [0, KEPT])
async def test_a_number_an_upload_failed_to_store_is_a_plain_404(
    aiohttp_client: Any,
    make_app: Callable[..., web.Application],
    monkeypatch: pytest.MonkeyPatch,
    kept: int,
) -> None:
    """Version 2's upload fails after claiming its number (a 503 at its insert): 3 is the
    next. 2 is no version, not a pruned one ("pruned: ... keeps its newest 0 versions" said
    it, with pruning off too); what pruning removed later still says "pruned"."""
    client = await aiohttp_client(make_app(versions_kept=kept))
    store = client.app[services_key].store.mappings
    store.retired_kept = timedelta(0)
    path = "/api/v1/mappings/erp-km"
    await _upload(client, _mapping(1))

    async def blip(*args: Any, **kwargs: Any) -> None:
        raise Unavailable("database blip")

    monkeypatch.setattr(store, "insert_version", blip)
    headers = {**auth(), "Content-Type": "application/yaml"}
    failed = await client.post("/api/v1/mappings", data=_mapping(2).encode(), headers=headers)
    assert failed.status == 503, await failed.text()
    monkeypatch.undo()
    assert await _upload(client, _mapping(3)) == 3
    missing = await client.get(f"{path}/versions/2", headers=auth())
    problem = await missing.json()
    assert missing.status == 404 and "pruned" not in problem["detail"], problem
    for n in range(4, 7):
        await _upload(client, _mapping(n))
    if kept:
        assert await _versions(client, path) == [4, 5, 6]
        gone = await client.get(f"{path}/versions/3", headers=auth())
        assert gone.status == 404 and "pruned" in (await gone.json())["detail"]
