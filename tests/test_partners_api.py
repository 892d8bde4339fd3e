"""Admin API for partners, actions and subscriptions: validation that lists every problem,
write-only credentials, tenant isolation, and deletes refused while something uses them."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.actions.catalog import auth_context
from gateway.auth.secretbox import SecretBox
from gateway.web.state import services_key
from tests.fcm_double import Fcm, fcm
from tests.flow_support import push_channel, sms_channel
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    partner,
    post,
    running_partner,
    upload_mapping,
)
from tests.support import auth

__all__ = ["fcm", "partner"]  # the fixtures

Client = TestClient[Any, Any]
BASE = "https://erp.example.com/api"
CREDENTIALS = {
    "bearer": {"type": "bearer", "token": "tok-9f8e7d"},
    "header": {"type": "header", "name": "X-Api-Key", "value": "key-9f8e7d"},
    "basic": {"type": "basic", "username": "rabbot", "password": "pw-9f8e7d"},
    "oauth2_client_credentials": {
        "type": "oauth2_client_credentials",
        "token_url": "https://erp.example.com/token",
        "client_id": "gw",
        "client_secret": "cs-9f8e7d",
        "scope": "fines",
    },
    "query": {"type": "query", "name": "apikey", "value": "q-9f8e7d"},
    "none": {"type": "none"},
}


async def _problem(response: Any, status: int) -> dict[str, Any]:
    body: dict[str, Any] = await response.json()
    assert response.status == status, body
    assert response.content_type == "application/problem+json"
    return body


@pytest.mark.parametrize("kind", list(CREDENTIALS))
async def test_partner_credentials_are_write_only_and_sealed_at_rest(
    client: Client, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await create_partner(
        client, BASE, auth=CREDENTIALS[kind], secrets={"erp_token": "sec-9f8e7d"}
    )

    got = await (await client.get(f"/api/v1/partners/{created['id']}", headers=auth())).json()
    listed = await (await client.get("/api/v1/partners", headers=auth())).text()
    stored = await client.app[services_key].store.db["partners"].find_one({})

    assert created["auth"] == got["auth"] == {"type": kind, "configured": True}
    assert created["secrets"] == ["erp_token"]
    assert created["base_url"] == BASE
    assert created["status"] == "active" and created["timeout_seconds"] == 2
    everything = " ".join(
        [
            str(created),
            str(got),
            listed,
            str(stored),
            caplog.text,
            await (await client.get("/metrics")).text(),
        ]
    )
    assert "9f8e7d" not in everything


async def test_partner_body_problems_are_all_listed(client: Client) -> None:
    response = await client.post(
        "/api/v1/partners",
        headers=auth(),
        json={
            "name": "",
            "base_url": "ftp://erp.example.com",
            "auth": {"type": "basic"},
            "timeout_seconds": 600,
            "rate_limit": {"per_second": 0},
            "colour": "blue",
        },
    )

    problem = await _problem(response, 422)
    pointers = {e["pointer"] for e in problem["errors"]}
    assert pointers == {
        "/name",
        "/base_url",
        "/auth/username",
        "/auth/password",
        "/timeout_seconds",
        "/rate_limit/per_second",
        "/colour",
    }


async def test_a_partner_rate_slower_than_one_call_in_10000_s_is_a_422(client: Client) -> None:
    """A rate of 1e-320 made the bucket's wait infinite: every held send would fail to count
    its seconds. The slowest rate taken is the triggers' (0.0001/s)."""
    body = {"name": "slow", "base_url": BASE, "auth": {"type": "none"}}
    for rate in (1e-320, 0.00009):
        response = await client.post(
            "/api/v1/partners", headers=auth(), json={**body, "rate_limit": {"per_second": rate}}
        )
        problem = await _problem(response, 422)
        assert [e["pointer"] for e in problem["errors"]] == ["/rate_limit/per_second"]
        assert problem["errors"][0]["keyword"] == "minimum"
        assert "0.0001" in problem["errors"][0]["message"]
    slowest = {**body, "rate_limit": {"per_second": 0.0001}}
    assert (await client.post("/api/v1/partners", headers=auth(), json=slowest)).status == 201


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("bearer", "token", "tok\x1b[31mred"),
        ("header", "value", "ab\x08cd"),
        ("header", "value", "abc\x7fdef"),
        ("basic", "password", "pw\x00d"),
        ("basic", "username", "user\x0bname"),
        ("query", "value", "q\x1f9f8e7d"),
        ("query", "value", "q\n9f8e7d"),
        ("oauth2_client_credentials", "client_secret", "cs\x019f8e7d"),
    ],
)
async def test_a_credential_with_a_control_character_is_refused_when_the_partner_is_saved(
    client: Client, kind: str, field: str, value: str
) -> None:
    """Else it is saved, and every call fails as if the partner could not be reached (the
    HTTP client refuses the header): the same 422 as a line break."""
    response = await client.post(
        "/api/v1/partners",
        headers=auth(),
        json={"name": "ERP", "base_url": BASE, "auth": {**CREDENTIALS[kind], field: value}},
    )

    problem = await _problem(response, 422)
    assert [e["pointer"] for e in problem["errors"]] == [f"/auth/{field}"]
    assert "control characters" in problem["errors"][0]["message"]
    assert value not in str(problem)


@pytest.mark.parametrize("value", ["tok-from-file-123\n", "tok\r\n123", "tok\x00123", "tok\x7f1"])
async def test_a_named_secret_with_a_control_character_is_refused_when_the_partner_is_saved(
    client: Client, value: str
) -> None:
    """A secret pasted from a file with its line break was saved; every call through a
    mapping putting it in a header then failed as the caller's "payload does not fit"."""
    body = {"name": "ERP", "base_url": BASE, "auth": {"type": "none"}}
    response = await client.post(
        "/api/v1/partners",
        headers=auth(),
        json={**body, "secrets": {"erp_token": value, "pin": "1234"}},
    )

    problem = await _problem(response, 422)
    assert [e["pointer"] for e in problem["errors"]] == ["/secrets/erp_token"]
    assert "control characters" in problem["errors"][0]["message"]
    assert value not in str(problem)
    created = await create_partner(client, BASE, auth={"type": "none"})
    patched = await client.patch(
        f"/api/v1/partners/{created['id']}", headers=auth(), json={"secrets": {"erp_token": value}}
    )
    assert [e["pointer"] for e in (await _problem(patched, 422))["errors"]] == [
        "/secrets/erp_token"
    ]
    tab = await client.patch(
        f"/api/v1/partners/{created['id']}", headers=auth(), json={"secrets": {"t": "a\tb"}}
    )
    assert tab.status == 200, await tab.text()


@pytest.mark.parametrize(
    ("stored", "sent"),
    [
        ({"type": "basic", "username": "erp", "password": "pw\x01d"}, ("authorization", None)),
        ({"type": "query", "name": "apikey", "value": "q\n9f8e7d"}, ("apikey", "q\n9f8e7d")),
    ],
)
async def test_a_partner_saved_before_with_a_control_character_still_calls_where_it_could(
    client: Client, partner: Partner, stored: dict[str, str], sent: tuple[str, str | None]
) -> None:
    """The refusal is of what is saved now: a Basic password or a query key stored before
    with one (base64 or percent-encoded on the way) keeps working."""
    erp = await create_partner(client, partner.url, auth={"type": "none"})
    proxy = await create_action(client, erp["id"], mode="proxy")
    services = client.app[services_key]
    sealed = SecretBox(services.keyring).seal(stored, context=auth_context(erp["id"]))
    await services.store.db["partners"].update_one(
        {"name": "ERP"}, {"$set": {"auth_sealed": sealed, "auth_type": stored["type"]}}
    )
    invoked = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    assert invoked.status == 200, await invoked.text()
    (request,) = partner.requests
    name, value = sent
    if value is None:  # Basic: the password inside the header
        header = request.headers["Authorization"].removeprefix("Basic ")
        assert base64.b64decode(header).decode() == f"erp:{stored['password']}"
    else:
        assert request.query[name] == value


async def test_a_tab_in_a_credential_is_kept_as_a_header_allows_it(client: Client) -> None:
    auth_doc = {**CREDENTIALS["header"], "value": "key\t9f8e7d"}
    partner = await create_partner(client, BASE, auth=auth_doc)
    assert partner["auth"]["type"] == "header"


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pw@erp.example.com",
        "erp.example.com",
        "https://erp.example.com/?token=x",
        "https://api..example.com",
        "https://" + "a" * 64 + ".example.com",
    ],
)
async def test_base_url_must_be_a_plain_http_url(client: Client, url: str) -> None:
    response = await client.post(
        "/api/v1/partners",
        headers=auth(),
        json={"name": "ERP", "base_url": url, "auth": {"type": "none"}},
    )

    problem = await _problem(response, 422)
    assert [e["pointer"] for e in problem["errors"]] == ["/base_url"]


async def test_patch_replaces_auth_and_keeps_the_rest(client: Client) -> None:
    created = await create_partner(
        client, BASE, max_concurrency=3, rate_limit={"per_second": 5, "burst": 10}
    )

    response = await client.patch(
        f"/api/v1/partners/{created['id']}",
        headers=auth(),
        json={"auth": {"type": "header", "name": "X-Key", "value": "new"}},
    )

    patched = await response.json()
    assert response.status == 200
    assert patched["auth"] == {"type": "header", "configured": True}
    assert patched["max_concurrency"] == 3
    assert patched["rate_limit"] == {"per_second": 5, "burst": 10}


async def test_partners_of_another_tenant_are_invisible(client: Client) -> None:
    created = await create_partner(client, BASE)

    other = await client.get(f"/api/v1/partners/{created['id']}", headers=auth("globex"))
    listed = await (await client.get("/api/v1/partners", headers=auth("globex"))).json()
    deleted = await client.delete(f"/api/v1/partners/{created['id']}", headers=auth("globex"))

    assert other.status == 404 and deleted.status == 404
    assert listed["items"] == []


async def test_viewer_reads_but_cannot_write(client: Client) -> None:
    await create_partner(client, BASE)

    listed = await client.get("/api/v1/partners", headers=auth(role="viewer"))
    created = await client.post(
        "/api/v1/partners",
        headers=auth(role="viewer"),
        json={"name": "x", "base_url": BASE, "auth": {"type": "none"}},
    )

    assert listed.status == 200
    assert created.status == 403


async def test_partner_used_by_an_action_cannot_be_deleted(client: Client) -> None:
    partner = await create_partner(client, BASE)
    action = await create_action(client, partner["id"])

    refused = await client.delete(f"/api/v1/partners/{partner['id']}", headers=auth())
    await client.delete(f"/api/v1/actions/{action['id']}", headers=auth())
    accepted = await client.delete(f"/api/v1/partners/{partner['id']}", headers=auth())

    assert "used by 1 action" in (await _problem(refused, 409))["detail"]
    assert accepted.status == 204


async def test_action_body_problems_are_all_listed(client: Client) -> None:
    response = await client.post(
        "/api/v1/actions",
        headers=auth(),
        json={
            "name": "x",
            "partner_id": "64b000000000000000000000",
            "method": "FETCH",
            "path": "fines/{ait",
            "mode": "later",
            "success": ["2xx", 700],
            "retry_schedule": [-1],
            "write_back": True,
            "request_mapping": "nope",
        },
    )

    problem = await _problem(response, 422)
    pointers = {e["pointer"] for e in problem["errors"]}
    assert pointers == {
        "/partner_id",
        "/method",
        "/path",
        "/mode",
        "/success",
        "/retry_schedule",
        "/write_back",
        "/request_mapping",
    }


async def test_a_deliver_action_with_write_back_is_refused_naming_proxy_actions(
    client: Client,
) -> None:
    """`write_back` is for proxy actions; a deliver action saved with it was a 201, and the
    partner's answers were never written back (outbound5 OB5-8)."""
    partner = await create_partner(client, BASE)
    await upload_mapping(
        client,
        "name: odo\ndirection: outbound\nentity_type: vehicle\nresponse:\n  odometer_km: km\n",
    )
    action = {
        "name": "d",
        "partner_id": partner["id"],
        "method": "POST",
        "path": "/x",
        "mode": "deliver",
        "response_mapping": "odo",
        "write_back": True,
    }

    problem = await _problem(await client.post("/api/v1/actions", headers=auth(), json=action), 422)
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [("/write_back", "enum")]
    proxy = await client.post("/api/v1/actions", headers=auth(), json={**action, "mode": "proxy"})
    assert proxy.status == 201
    url = f"/api/v1/actions/{(await proxy.json())['id']}"
    changed = await client.patch(url, headers=auth(), json={"mode": "deliver"})
    assert (await _problem(changed, 422))["errors"][0]["pointer"] == "/write_back"


async def test_action_needs_an_outbound_mapping(client: Client) -> None:
    partner = await create_partner(client, BASE)
    await upload_mapping(
        client,
        "name: inbound-one\ndirection: inbound\nentity_type: vehicle\n"
        "key: [plate]\nfields:\n  plate: placa\n",
    )

    response = await client.post(
        "/api/v1/actions",
        headers=auth(),
        json={
            "name": "x",
            "partner_id": partner["id"],
            "method": "POST",
            "path": "/x",
            "mode": "deliver",
            "request_mapping": "inbound-one",
        },
    )

    problem = await _problem(response, 422)
    assert problem["errors"][0]["pointer"] == "/request_mapping"
    assert "outbound" in problem["errors"][0]["message"]


async def test_action_crud_round_trip(client: Client) -> None:
    partner = await create_partner(client, BASE)
    action = await create_action(
        client, partner["id"], success=["2xx", 404], retry_schedule=[10], ordered=True
    )

    patched = await client.patch(
        f"/api/v1/actions/{action['id']}",
        headers=auth(),
        json={"path": "/multas/{ait}", "ordered": False},
    )
    listed = await (
        await client.get(f"/api/v1/actions?partner_id={partner['id']}", headers=auth())
    ).json()

    body = await patched.json()
    assert patched.status == 200
    assert body["path"] == "/multas/{ait}" and body["ordered"] is False
    assert body["success"] == ["2xx", 404] and body["retry_schedule"] == [10]
    assert [a["id"] for a in listed["items"]] == [action["id"]]


async def test_subscription_secret_is_shown_once(client: Client) -> None:
    partner = await create_partner(client, BASE)
    action = await create_action(client, partner["id"])
    created = await create_subscription(client, action["id"], ("vehicle.*", "fine.paid"))

    got = await (await client.get(f"/api/v1/subscriptions/{created['id']}", headers=auth())).json()
    stored = await client.app[services_key].store.db["subscriptions"].find_one({})

    assert created["secret"].startswith("whsec_")
    assert "secret" not in got
    assert created["secret"] not in str(stored)
    assert got["event_types"] == ["fine.paid", "vehicle.*"]
    assert got["partner_id"] == partner["id"]


async def test_subscription_filter_problems_are_listed(client: Client) -> None:
    partner = await create_partner(client, BASE)
    action = await create_action(client, partner["id"])

    response = await client.post(
        "/api/v1/subscriptions",
        headers=auth(),
        json={
            "action_id": action["id"],
            "event_types": ["entity.updated", "Bad Type"],
            "filter": {"changed": "odometer_km", "entity": {"group": {"$ne": 1}}, "when": 1},
        },
    )

    problem = await _problem(response, 422)
    pointers = {e["pointer"] for e in problem["errors"]}
    assert pointers == {"/event_types/1", "/filter/changed", "/filter/entity/group", "/filter/when"}


async def test_subscriptions_deliver_so_they_need_a_deliver_action(client: Client) -> None:
    partner = await create_partner(client, BASE)
    action = await create_action(client, partner["id"], mode="proxy")

    response = await client.post(
        "/api/v1/subscriptions",
        headers=auth(),
        json={"action_id": action["id"], "event_types": ["entity.updated"]},
    )

    assert (await _problem(response, 422))["errors"][0]["pointer"] == "/action_id"


async def test_action_with_subscriptions_cannot_be_deleted(client: Client) -> None:
    partner = await create_partner(client, BASE)
    action = await create_action(client, partner["id"])
    sub = await create_subscription(client, action["id"])

    refused = await client.delete(f"/api/v1/actions/{action['id']}", headers=auth())
    disabled = await client.patch(
        f"/api/v1/subscriptions/{sub['id']}", headers=auth(), json={"status": "disabled"}
    )
    await client.delete(f"/api/v1/subscriptions/{sub['id']}", headers=auth())
    accepted = await client.delete(f"/api/v1/actions/{action['id']}", headers=auth())

    await _problem(refused, 409)
    assert (await disabled.json())["status"] == "disabled"
    assert accepted.status == 204


async def test_an_action_with_subscriptions_stays_in_deliver_mode(client: Client) -> None:
    """A PATCH to `mode: proxy` was accepted while a subscription delivered through the
    action, and its events went on being pushed (a subscription on a proxy action is a 422
    when it is made)."""
    partner = await create_partner(client, BASE)
    action = await create_action(client, partner["id"])
    sub = await create_subscription(client, action["id"])
    where = f"/api/v1/actions/{action['id']}"

    refused = await client.patch(where, headers=auth(), json={"mode": "proxy"})
    problem = await _problem(refused, 409)
    await client.delete(f"/api/v1/subscriptions/{sub['id']}", headers=auth())
    accepted = await client.patch(where, headers=auth(), json={"mode": "proxy"})

    assert sub["id"] in problem["detail"]
    assert problem["used_by"] == [{"kind": "subscription", "id": sub["id"]}]
    assert (await client.get(where, headers=auth())).status == 200
    assert accepted.status == 200 and (await accepted.json())["mode"] == "proxy"


async def test_a_subscription_names_the_partner_its_action_moved_to(client: Client) -> None:
    """Its `partner_id` was copied when it was made and never changed: an admin asking what
    is sent to the old partner (before deleting it) was told this subscription is."""
    old = await create_partner(client, BASE, name="OLD")
    new = await create_partner(client, BASE, name="NEW")
    action = await create_action(client, old["id"])
    sub = await create_subscription(client, action["id"])

    moved = await client.patch(
        f"/api/v1/actions/{action['id']}", headers=auth(), json={"partner_id": new["id"]}
    )
    assert moved.status == 200, await moved.text()
    shown = await client.get(f"/api/v1/subscriptions/{sub['id']}", headers=auth())

    doc = await shown.json()
    assert doc["partner_id"] == new["id"]
    assert doc["updated_at"] > sub["updated_at"]


async def test_rotating_a_secret_returns_a_new_one(client: Client) -> None:
    partner = await create_partner(client, BASE)
    action = await create_action(client, partner["id"])
    sub = await create_subscription(client, action["id"])

    rotated = await post(client, f"/api/v1/subscriptions/{sub['id']}/rotate-secret", {}, status=200)

    assert rotated["secret"] != sub["secret"]
    assert rotated["secret_rotated_at"] is not None


async def test_moving_a_partner_to_another_origin_needs_its_credentials_again(
    client: Client,
) -> None:
    partner = await create_partner(client, BASE)
    url = f"/api/v1/partners/{partner['id']}"
    same_origin = await client.patch(url, headers=auth(), json={"base_url": BASE + "/v2"})
    assert same_origin.status == 200
    moved = await client.patch(url, headers=auth(), json={"base_url": "https://evil.example/x"})
    assert moved.status == 422
    assert (await moved.json())["errors"][0]["pointer"] == "/auth"
    with_auth = await client.patch(
        url,
        headers=auth(),
        json={"base_url": "https://erp2.example.com", "auth": {"type": "bearer", "token": "t2"}},
    )
    assert with_auth.status == 200


SOAP_KEY = """
name: with-key
direction: outbound
headers:
  X-Api-Key:
    template: "{k}"
    vars: {k: {secret: api_key}}
body:
  hello: {value: world}
"""


async def test_moving_a_partner_to_another_origin_needs_its_named_secrets_again(
    client: Client, partner: Partner
) -> None:
    """Named secrets are credentials too (a SOAP login, an API key a mapping puts in a
    header): moving the partner with a new `auth` only kept them, and the next call handed
    them to the new server, where an admin could read them."""
    secret = "soap-password-2468"
    created = await create_partner(
        client, partner.url, auth={"type": "none"}, secrets={"api_key": secret}
    )
    await upload_mapping(client, SOAP_KEY)
    action = await create_action(
        client, created["id"], mode="proxy", request_mapping="with-key", path="/x"
    )
    url = f"/api/v1/partners/{created['id']}"
    async with running_partner() as elsewhere:
        moved = await client.patch(
            url, headers=auth(), json={"base_url": elsewhere.url, "auth": {"type": "none"}}
        )
        problem = await _problem(moved, 422)
        assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [
            ("/secrets", "required")
        ]
        again = await client.patch(
            url,
            headers=auth(),
            json={"base_url": elsewhere.url, "secrets": {"api_key": "their-own-key"}},
        )
        assert [e["pointer"] for e in (await _problem(again, 422))["errors"]] == ["/auth"]
        moved = await client.patch(
            url,
            headers=auth(),
            json={
                "base_url": elsewhere.url,
                "auth": {"type": "none"},
                "secrets": {"api_key": "their-own-key"},
            },
        )
        assert moved.status == 200 and (await moved.json())["secrets"] == ["api_key"]
        invoked = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
        )
        assert invoked.status == 200, await invoked.text()
        assert [r.headers.get("X-Api-Key") for r in elsewhere.requests] == ["their-own-key"]
    # `null` drops them: a partner without secrets moves with its `auth` alone.
    dropped = await client.patch(
        url,
        headers=auth(),
        json={"base_url": partner.url, "auth": {"type": "none"}, "secrets": None},
    )
    assert dropped.status == 200 and (await dropped.json())["secrets"] == []
    home = await client.patch(
        url, headers=auth(), json={"base_url": "https://erp2.example.com", "auth": {"type": "none"}}
    )
    assert home.status == 200, await home.text()
    assert partner.requests == []


async def test_an_action_that_a_schedule_channel_or_flow_names_cannot_be_deleted(
    client: Client,
) -> None:
    """Only subscriptions held an action back: one that a schedule polls, an SMS channel
    sends through, or an active flow calls (by name or id) was deleted, and each of them then
    failed on every run, message or event. A 409 names them; once they are gone it deletes."""
    await sms_channel(client, BASE)  # action "sms", channel "sms"
    sms = next(
        a
        for a in (await (await client.get("/api/v1/actions", headers=auth())).json())["items"]
        if a["name"] == "sms"
    )
    flow = "name: calls\non:\n  events: [fine.received]\nsteps:\n  - id: c\n    call: " + sms["id"]
    uploaded = await client.post(
        "/api/v1/flows", data=flow.encode(), headers={**auth(), "Content-Type": "application/yaml"}
    )
    assert uploaded.status == 201, await uploaded.text()
    partner = await create_partner(client, BASE, name="feed")
    reader = await create_action(
        client, partner["id"], name="reader", method="GET", mode="proxy", read_only=True
    )
    await upload_mapping(
        client,
        "name: feed\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields: {plate: p}\n",
    )
    schedule = await post(
        client,
        "/api/v1/schedules",
        {
            "name": "poll",
            "action_id": reader["id"],
            "every": "1h",
            "target": {"entity_type": "vehicle", "mapping": "feed"},
        },
    )

    refused = await _problem(
        await client.delete(f"/api/v1/actions/{sms['id']}", headers=auth()), 409
    )
    assert sorted((u["kind"], u["name"]) for u in refused["used_by"]) == [
        ("channel", "sms"),
        ("flow", "calls"),
    ]
    polled = await _problem(
        await client.delete(f"/api/v1/actions/{reader['id']}", headers=auth()), 409
    )
    assert [(u["kind"], u["id"]) for u in polled["used_by"]] == [("schedule", schedule["id"])]
    users = ("/api/v1/flows/calls", "/api/v1/channels/sms", f"/api/v1/schedules/{schedule['id']}")
    for path in users:
        assert (await client.delete(path, headers=auth())).status == 204, path
    for action in (sms, reader):
        deleted = await client.delete(f"/api/v1/actions/{action['id']}", headers=auth())
        assert deleted.status == 204


async def test_a_partner_that_a_push_channel_sends_through_cannot_be_deleted(
    client: Client, fcm: Fcm
) -> None:
    """A push channel names its partner (FCM's service account) directly, with no action in
    between, so deleting the partner left every push failing. A 409 names the channel."""
    await push_channel(client, fcm)
    partner = next(
        p
        for p in (await (await client.get("/api/v1/partners", headers=auth())).json())["items"]
        if p["name"] == "FCM"
    )
    refused = await _problem(
        await client.delete(f"/api/v1/partners/{partner['id']}", headers=auth()), 409
    )
    assert [(u["kind"], u["name"]) for u in refused["used_by"]] == [("channel", "push")]
    assert (await client.delete("/api/v1/channels/push", headers=auth())).status == 204
    deleted = await client.delete(f"/api/v1/partners/{partner['id']}", headers=auth())
    assert deleted.status == 204


async def test_a_partners_numbers_are_refused_exactly_outside_the_bounds_its_document_states(
    client: Client,
) -> None:
    """The partner body's document says each number's bounds, and the service holds to them:
    its least and greatest are taken, a step beyond refused 422 naming the field (a client
    generated from the document learned no bound of `max_concurrency` nor of
    `disable_after_hours`, and met the service's 1000 and its year)."""
    document = await (await client.get("/openapi.json")).json()
    body = document["paths"]["/api/v1/partners"]["post"]["requestBody"]["content"]
    members = body["application/json"]["schema"]["properties"]
    for name in ("timeout_seconds", "max_concurrency", "disable_after_hours"):
        low, high = members[name]["minimum"], members[name]["maximum"]
        step = 1 if members[name]["type"] == "integer" else low / 2
        for value, status in ((low, 201), (high, 201), (low - step, 422), (high + step, 422)):
            answer = await client.post(
                "/api/v1/partners",
                json={
                    "name": f"{name} {value}",
                    "base_url": "http://127.0.0.1:9/",
                    "auth": {"type": "none"},
                    name: value,
                },
                headers=auth(),
            )
            assert answer.status == status, (name, value, await answer.text())
            if status == 422:
                assert name in await answer.text()
