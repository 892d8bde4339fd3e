"""Conditional changes over the admin API: a document's GET answers its ETag; a PATCH or
PUT with `If-Match` naming a version that is no longer current is refused (412
problem+json) and changes nothing; the current tag, `*`, or no `If-Match` at all apply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from tests.partner_double import create_action, create_partner, create_subscription, post
from tests.support import auth
from tests.ui_support import Client

Made = tuple[str, str, dict[str, Any], dict[str, Any]]  # path, method, a change, another


async def _trigger(client: Client) -> Made:
    doc = await post(
        client, "/api/v1/triggers", {"name": "gps", "entity_type": "vehicle", "methods": ["POST"]}
    )
    return f"/api/v1/triggers/{doc['id']}", "PATCH", {"name": "gps-a"}, {"name": "gps-b"}


async def _action(client: Client) -> Made:
    partner = await create_partner(client, "https://erp.example.com")
    doc = await create_action(client, partner["id"])
    return f"/api/v1/actions/{doc['id']}", "PATCH", {"path": "/a"}, {"path": "/b"}


async def _subscription(client: Client) -> Made:
    partner = await create_partner(client, "https://erp.example.com")
    action = await create_action(client, partner["id"])
    doc = await create_subscription(client, action["id"])
    change = {"event_types": ["entity.created"]}
    return f"/api/v1/subscriptions/{doc['id']}", "PATCH", change, {"status": "disabled"}


async def _geofence(client: Client) -> Made:
    circle = {"lat": -23.5, "lon": -46.6, "radius_m": 300}
    doc = await post(
        client, "/api/v1/geofences", {"name": "pátio", "kind": "authorized", "circle": circle}
    )
    return f"/api/v1/geofences/{doc['id']}", "PATCH", {"margin_m": 10}, {"margin_m": 20}


async def _settings(client: Client) -> Made:
    return (
        "/api/v1/notification-settings",
        "PUT",
        {"cooldown_seconds": 60},
        {"cooldown_seconds": 120},
    )


async def _vehicle(client: Client) -> Made:
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "odometer_km": 10})
    path = "/api/v1/entities/vehicle/ABC1D23"
    return path, "PATCH", {"status": "active"}, {"status": "inactive"}


@pytest.mark.parametrize(
    "make",
    [_trigger, _action, _subscription, _geofence, _settings, _vehicle],
    ids=lambda f: f.__name__.strip("_"),
)
async def test_a_change_sent_against_a_version_no_longer_current_is_refused(
    client: Client, make: Callable[[Client], Awaitable[Made]]
) -> None:
    path, method, mine, theirs = await make(client)
    read = await client.get(path, headers=auth())
    etag = read.headers["ETag"]
    assert (await client.get(path, headers=auth())).headers["ETag"] == etag  # stable
    # Another client changes it; a change against the version read is then refused.
    changed = await client.request(method, path, json=theirs, headers=auth())
    assert changed.status == 200, await changed.text()
    now = await (await client.get(path, headers=auth())).json()
    refused = await client.request(method, path, json=mine, headers={**auth(), "If-Match": etag})
    problem = await refused.json()
    assert refused.status == 412, problem
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert problem["type"].endswith("/precondition-failed")
    assert await (await client.get(path, headers=auth())).json() == now  # nothing changed
    # Against the current version it applies, and answers the new one.
    current = (await client.get(path, headers=auth())).headers["ETag"]
    headers = {**auth(), "If-Match": f'"nope", {current}'}
    applied = await client.request(method, path, json=mine, headers=headers)
    assert applied.status == 200, await applied.text()
    assert (await client.get(path, headers=auth())).headers["ETag"] != current
    anything = await client.request(method, path, json=theirs, headers={**auth(), "If-Match": "*"})
    assert anything.status == 200


@pytest.mark.parametrize(
    "make",
    [_trigger, _action, _subscription, _geofence, _settings, _vehicle],
    ids=lambda f: f.__name__.strip("_"),
)
async def test_a_change_with_if_none_match_naming_the_current_version_is_refused(
    client: Client, make: Callable[[Client], Awaitable[Made]]
) -> None:
    """RFC 9110 §13.1.2: `If-None-Match: *` ("only if it does not exist") or the current tag
    on an existing document is a 412 and nothing changes; another tag lets the change apply."""
    path, method, mine, theirs = await make(client)
    before = await client.get(path, headers=auth())
    current = before.headers["ETag"]
    for tags in ("*", current, f'"nope", {current}', f"W/{current}"):
        headers = {**auth(), "If-None-Match": tags}
        refused = await client.request(method, path, json=mine, headers=headers)
        problem = await refused.json()
        assert refused.status == 412, (tags, problem)
        assert problem["type"].endswith("/precondition-failed")
    assert await (await client.get(path, headers=auth())).json() == await before.json()
    # If-Match is evaluated first: a stale one is its own 412.
    both = {**auth(), "If-Match": '"stale"', "If-None-Match": '"other"'}
    stale = await client.request(method, path, json=mine, headers=both)
    assert stale.status == 412 and "changed since it was read" in (await stale.json())["detail"]
    headers = {**auth(), "If-Match": current, "If-None-Match": '"an-older-version"'}
    applied = await client.request(method, path, json=theirs, headers=headers)
    assert applied.status == 200, await applied.text()


async def test_a_delete_with_if_none_match_star_keeps_the_vehicle(client: Client) -> None:
    path, *_ = await _vehicle(client)
    refused = await client.delete(path, headers={**auth(), "If-None-Match": "*"})
    assert refused.status == 412, await refused.text()
    assert (await client.get(path, headers=auth())).status == 200


@pytest.mark.parametrize(
    "make",
    [_trigger, _action, _subscription, _geofence, _settings, _vehicle],
    ids=lambda f: f.__name__.strip("_"),
)
async def test_a_read_naming_the_current_etag_is_not_modified(
    client: Client, make: Callable[[Client], Awaitable[Made]]
) -> None:
    """A poller that sends the tag it holds gets a 304 with that tag and no body while the
    document stays that version, and the document again once it changed."""
    path, method, mine, _ = await make(client)
    current = (await client.get(path, headers=auth())).headers["ETag"]
    for tags in (current, f"W/{current}", f'"nope", {current}', "*"):
        for read in (client.get, client.head):
            same = await read(path, headers={**auth(), "If-None-Match": tags})
            assert same.status == 304, (tags, same.status)
            assert same.headers["ETag"] == current and await same.read() == b""
    other = await client.get(path, headers={**auth(), "If-None-Match": '"nope"'})
    assert other.status == 200 and other.headers["ETag"] == current
    assert (await client.request(method, path, json=mine, headers=auth())).status == 200
    changed = await client.get(path, headers={**auth(), "If-None-Match": current})
    assert changed.status == 200 and changed.headers["ETag"] != current
    assert await changed.json()


async def test_if_match_on_a_method_the_document_does_not_have_is_its_405(client: Client) -> None:
    """A kind is replaced by PUT, never patched: a PATCH with `If-Match` read the kind through
    its GET with the 405's empty match and answered a 500 (schemathesis found it)."""
    created = await client.post(
        "/api/v1/kinds",
        json={"name": "tyre", "schema": {"type": "object"}},
        headers=auth(),
    )
    assert created.status == 201, await created.text()
    for tag in ('"x"', "", "*"):
        patched = await client.patch(
            "/api/v1/kinds/tyre",
            json={"schema": {"type": "object"}},
            headers={**auth(), "If-Match": tag},
        )
        assert patched.status == 405, await patched.text()


@pytest.mark.parametrize(
    "make",
    [_trigger, _action, _subscription, _geofence, _settings, _vehicle],
    ids=lambda f: f.__name__.strip("_"),
)
async def test_a_viewers_change_is_forbidden_whatever_its_if_match(
    client: Client, make: Callable[[Client], Awaitable[Made]]
) -> None:
    """The role is decided before the precondition: a viewer's write is 403, never a 412 that
    would tell it to read again and retry, and never applied with the current tag."""
    path, method, mine, _ = await make(client)
    before = await client.get(path, headers=auth())
    current = before.headers["ETag"]
    for tag in ('"stale"', current, "*"):
        headers = {**auth(role="viewer"), "If-Match": tag}
        refused = await client.request(method, path, json=mine, headers=headers)
        problem = await refused.json()
        assert refused.status == 403, problem
        assert problem["type"].endswith("/forbidden")
    assert await (await client.get(path, headers=auth())).json() == await before.json()


async def test_a_change_with_if_match_counts_once_against_the_admin_limit(
    aiohttp_client: Callable[..., Any], make_app: Callable[..., web.Application]
) -> None:
    """The precondition reads the document through its GET handler, which authenticates the
    request too: each PATCH with `If-Match` took two of the tenant's admin budget (and
    verified its token twice), so half the changes a client was allowed were 429."""
    other: Client = await aiohttp_client(make_app())  # another process: its own budget
    path, method, mine, theirs = await _trigger(other)
    limited: Client = await aiohttp_client(make_app(admin_rate_limit=1))  # bursts of 2
    for change in (mine, theirs):
        current = (await other.get(path, headers=auth())).headers["ETag"]
        headers = {**auth(), "If-Match": current}
        applied = await limited.request(method, path, json=change, headers=headers)
        assert applied.status == 200, await applied.text()
    # The two changes took the burst of two, no more and no less: the next call waits.
    refused = await limited.get(path, headers=auth())
    assert refused.status == 429, await refused.text()
    assert (await (await other.get(path, headers=auth())).json())["name"] == theirs["name"]
