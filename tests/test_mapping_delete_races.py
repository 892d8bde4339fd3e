"""A mapping (or flow) deleted while a new version of it is being uploaded: the delete wins.
The upload is a 409 and lists nothing; the name is gone (not listed, 404), takes no place
under the tenant's limit, and sent again it is a new name that takes one. Before, the
upload's publish un-deleted the head: the tenant ended above its limit, or the name was
listed with an active version the delete had removed (rev46e F1).

The window is widened by pausing one store call of the upload (a large text or a busy
database widens it the same way)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pymongo.errors import AutoReconnect

from gateway.web.state import services_key
from tests.support import auth

Client = TestClient[Any, Any]
MAPPING = """
name: {name}
direction: inbound
entity_type: vehicle
key: [plate]
items: items
fields:
  plate: {{from: placa, transforms: [plate]}}
"""
CHANGED = "  attributes.x: {from: x}\n"
FLOW = {"name": "f", "on": {"events": ["entity.created"]}, "steps": [{"id": "a", "when": "true"}]}


async def _upload(client: Client, text: str) -> tuple[int, Any]:
    headers = {**auth("acme"), "Content-Type": "application/yaml"}
    response = await client.post("/api/v1/mappings", data=text.encode(), headers=headers)
    return response.status, await response.json()


async def _names(client: Client, what: str = "mappings") -> list[str]:
    listed = await client.get(f"/api/v1/{what}", headers=auth("acme"))
    assert listed.status == 200, await listed.text()
    return sorted(m["name"] for m in (await listed.json())["items"])


def _paused(store: Any, method: str, name: str) -> tuple[asyncio.Event, asyncio.Event]:
    """Pause `store.<method>` for `name` until the second event is set (the first: reached)."""
    original: Callable[..., Awaitable[Any]] = getattr(store, method)
    reached, go = asyncio.Event(), asyncio.Event()

    async def slow(tenant: str, named: str, *args: Any, **kwargs: Any) -> Any:
        if named == name:
            reached.set()
            await go.wait()
        return await original(tenant, named, *args, **kwargs)

    setattr(store, method, slow)
    return reached, go


async def test_a_mapping_deleted_while_a_new_version_uploads_stays_deleted_within_the_limit(
    aiohttp_client: Any, make_app: Any
) -> None:
    """m0's new version is under way (before its number is claimed); m0 is deleted and m2
    takes the place it freed. The upload is refused: the tenant keeps 2 mappings, m0 is not
    back, and its kept count is not below what it has; m0 sent again is a create past the
    limit (409 with `limit`)."""
    client = await aiohttp_client(make_app(max_mappings_per_tenant=2))
    for name in ("m0", "m1"):
        status, body = await _upload(client, MAPPING.format(name=name))
        assert status == 201, body
    services = client.app[services_key]
    reached, go = _paused(services.store.mappings, "begin_upload", "m0")
    upload = asyncio.create_task(_upload(client, MAPPING.format(name="m0") + CHANGED))
    await asyncio.wait_for(reached.wait(), 10)
    deleted = await client.delete("/api/v1/mappings/m0", headers=auth("acme"))
    assert deleted.status == 204, await deleted.text()
    status, body = await _upload(client, MAPPING.format(name="m2"))  # m0's place
    assert status == 201, body
    go.set()

    status, body = await upload
    assert status == 409, body
    assert "deleted while this upload was under way" in body["detail"]
    assert await _names(client) == ["m1", "m2"]
    count = await services.store.db["turns"].find_one({"_id": "count:mappings:acme"})
    assert count is not None and count["n"] >= 2
    got = await client.get("/api/v1/mappings/m0", headers=auth("acme"))
    assert got.status == 404
    status, body = await _upload(client, MAPPING.format(name="m0") + CHANGED)
    assert (status, body.get("limit")) == (409, 2), body
    assert await _names(client) == ["m1", "m2"]


async def test_a_mapping_deleted_between_its_new_versions_insert_and_publish_is_gone_not_empty(
    aiohttp_client: Any, make_app: Any
) -> None:
    """The delete lands after the new version is stored and before the head shows it: it
    removes that version too. The upload is a 409 and m0 is gone (not listed, 404), not listed
    with an active version that no longer exists; sent again, m0 is created whole."""
    client = await aiohttp_client(make_app())
    status, body = await _upload(client, MAPPING.format(name="m0"))
    assert status == 201, body
    reached, go = _paused(client.app[services_key].store.mappings, "publish", "m0")
    upload = asyncio.create_task(_upload(client, MAPPING.format(name="m0") + CHANGED))
    await asyncio.wait_for(reached.wait(), 10)
    deleted = await client.delete("/api/v1/mappings/m0", headers=auth("acme"))
    assert deleted.status == 204, await deleted.text()
    go.set()

    status, body = await upload
    assert status == 409, body
    assert await _names(client) == []
    got = await client.get("/api/v1/mappings/m0", headers=auth("acme"))
    assert got.status == 404, await got.text()
    status, body = await _upload(client, MAPPING.format(name="m0") + CHANGED)
    assert status == 201, body
    got = await client.get("/api/v1/mappings/m0", headers=auth("acme"))
    assert got.status == 200, await got.text()
    assert (await got.json())["version"] == body["version"] == 3  # numbers never reused


async def test_the_same_text_again_while_its_mapping_is_deleted_does_not_list_it_again(
    aiohttp_client: Any, make_app: Any
) -> None:
    """An upload of the latest version's text (answered with that version) whose mapping is
    deleted before it shows it: it lists nothing either (the version it found is gone)."""
    client = await aiohttp_client(make_app())
    status, body = await _upload(client, MAPPING.format(name="m0"))
    assert status == 201, body
    store = client.app[services_key].store.mappings
    original = store.head
    reached, go = asyncio.Event(), asyncio.Event()
    reads = [0]

    async def slow_head(tenant: str, name: str) -> Any:
        reads[0] += 1
        if reads[0] == 2:  # `_answered`'s (the first: the check of the mapping's users)
            reached.set()
            await go.wait()
        return await original(tenant, name)

    store.head = slow_head  # type: ignore[method-assign]
    upload = asyncio.create_task(_upload(client, MAPPING.format(name="m0")))
    await asyncio.wait_for(reached.wait(), 10)
    deleted = await client.delete("/api/v1/mappings/m0", headers=auth("acme"))
    assert deleted.status == 204, await deleted.text()
    go.set()

    status, body = await upload
    assert status == 409, body
    assert await _names(client) == []
    assert (await client.get("/api/v1/mappings/m0", headers=auth("acme"))).status == 404


async def test_a_flow_deleted_while_a_new_version_uploads_stays_deleted(
    aiohttp_client: Any, make_app: Any
) -> None:
    """Flows share the code: a flow deleted between its new version's insert and publish."""
    client = await aiohttp_client(make_app())
    response = await client.post("/api/v1/flows", json=FLOW, headers=auth("acme"))
    assert response.status == 201, await response.text()
    reached, go = _paused(client.app[services_key].store.notify.flows, "publish", "f")
    changed = {**FLOW, "steps": [{"id": "b", "when": "true"}]}
    upload = asyncio.create_task(client.post("/api/v1/flows", json=changed, headers=auth("acme")))
    await asyncio.wait_for(reached.wait(), 10)
    deleted = await client.delete("/api/v1/flows/f", headers=auth("acme"))
    assert deleted.status == 204, await deleted.text()
    go.set()

    response = await upload
    assert response.status == 409, await response.text()
    assert await _names(client, "flows") == []
    assert (await client.get("/api/v1/flows/f", headers=auth("acme"))).status == 404


class _VersionsRemovedLate:
    """A store's versions collection whose `delete_many` (a delete's removal of the versions,
    after its tombstone) waits until `go` is set, `reached` set when it is called."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.reached, self.go = inner, asyncio.Event(), asyncio.Event()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    async def delete_many(self, *args: Any, **kwargs: Any) -> Any:
        self.reached.set()
        await self.go.wait()
        return await self.inner.delete_many(*args, **kwargs)


async def _recreated_inside_a_delete(
    client: Client, store: Any, what: str, name: str, recreate: Callable[[], Awaitable[int]]
) -> int:
    """Delete `name`, and `recreate` it once the delete's tombstone is written but before its
    versions are removed; the re-create's status."""
    late = _VersionsRemovedLate(store._versions)
    store._versions = late
    deleting = asyncio.create_task(client.delete(f"/api/v1/{what}/{name}", headers=auth("acme")))
    await asyncio.wait_for(late.reached.wait(), 10)  # tombstone written, versions still there
    store._versions = late.inner
    status = await recreate()
    late.go.set()
    assert (await deleting).status == 204
    return status


@pytest.mark.parametrize("text", ["changed", "same"])
async def test_a_mapping_recreated_while_its_delete_removes_the_versions_keeps_its_version(
    aiohttp_client: Any, make_app: Any, text: str
) -> None:
    """The delete writes its tombstone, then removes the versions. A re-create landing in
    between (a new name: 201) is whole once that removal is done: listed, its active version
    there (it was removed with the deleted name's: GET 404 "has no version 2"). The same text
    as the deleted version is a new version too, not the deleted one found again."""
    client = await aiohttp_client(make_app())
    status, body = await _upload(client, MAPPING.format(name="m0"))
    assert status == 201, body
    again = MAPPING.format(name="m0") + (CHANGED if text == "changed" else "")
    answered: list[Any] = []

    async def recreate() -> int:
        status, body = await _upload(client, again)
        answered.append(body)
        return status

    store = client.app[services_key].store.mappings
    status = await _recreated_inside_a_delete(client, store, "mappings", "m0", recreate)
    assert status == 201, answered
    assert answered[0]["version"] == 2, answered
    assert await _names(client) == ["m0"]
    got = await client.get("/api/v1/mappings/m0", headers=auth("acme"))
    assert got.status == 200, await got.text()
    assert (await got.json())["version"] == 2
    versions = await client.get("/api/v1/mappings/m0/versions", headers=auth("acme"))
    assert [v["version"] for v in (await versions.json())["items"]] == [2]


async def test_a_flow_recreated_while_its_delete_removes_the_versions_keeps_its_version(
    aiohttp_client: Any, make_app: Any
) -> None:
    client = await aiohttp_client(make_app())
    created = await client.post("/api/v1/flows", json=FLOW, headers=auth("acme"))
    assert created.status == 201, await created.text()
    changed = {**FLOW, "steps": [{"id": "b", "when": "true"}]}

    async def recreate() -> int:
        again = await client.post("/api/v1/flows", json=changed, headers=auth("acme"))
        return again.status

    store = client.app[services_key].store.notify.flows
    status = await _recreated_inside_a_delete(client, store, "flows", "f", recreate)
    assert status == 201
    assert await _names(client, "flows") == ["f"]
    got = await client.get("/api/v1/flows/f", headers=auth("acme"))
    assert got.status == 200, await got.text()
    assert (await got.json())["version"] == 2


class _FailingOnce:
    """A collection whose next `delete_many` fails as a lost connection does."""

    def __init__(self, inner: Any) -> None:
        self._inner, self.failed = inner, False

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    async def delete_many(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise AutoReconnect("connection lost")
        return await self._inner.delete_many(*args, **kwargs)


async def test_a_delete_whose_removal_failed_is_finished_by_its_retry(client: Client) -> None:
    """The tombstone written, the removal of the versions failed (a 503): the retry found the
    name deleted already, answered 404 and removed nothing, and the versions stayed stored
    for good (read50 M3). The retry removes what the tombstone names."""
    status, body = await _upload(client, MAPPING.format(name="m1"))
    assert status == 201, body
    store = client.app[services_key].store.mappings
    versions = store._versions
    store._versions = failing = _FailingOnce(versions)
    first = await client.delete("/api/v1/mappings/m1", headers=auth("acme"))
    for _ in range(100):  # the database known down for a moment after the lost connection
        retry = await client.delete("/api/v1/mappings/m1", headers=auth("acme"))
        if retry.status != 503:
            break
        await asyncio.sleep(0.1)

    assert failing.failed and first.status == 503, await first.text()
    assert retry.status == 404, await retry.text()
    assert await versions.count_documents({"name": "m1"}) == 0
    assert await _names(client) == []
