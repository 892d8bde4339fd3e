"""An id is one id however it is spelled: the store finds a partner, action or subscription by
its ObjectId, which takes the hex in upper case too. What refuses a change or a deletion
(a channel that needs the partner, the subscriptions, schedules and flows that name an action)
compares the id as stored (`str(_id)`), and what names another resource stores its id so: an
upper-case spelling in a URL or a body bypassed those refusals (review of nfix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from gateway.services import Services
from gateway.store.entities import lookup_text
from tests.fcm_double import Fcm, fcm
from tests.feed_doubles import GeotabDouble, geotab
from tests.flow_support import add_template, drain, get, push_channel, sms_channel
from tests.partner_double import (
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    post,
    running_partner,
    upload_mapping,
)
from tests.schedule_support import geotab_schedule, runner, runs
from tests.support import auth

__all__ = ["fcm", "geotab"]  # the fixtures

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[1]


async def _patch(client: Client, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = await client.patch(path, json=body, headers=auth())
    return response.status, await response.json()


async def _delete(client: Client, path: str) -> int:
    response = await client.delete(path, headers=auth())
    return response.status


async def test_a_push_channels_partner_patched_by_its_id_in_upper_case_is_refused_too(
    client: Client, fcm: Fcm
) -> None:
    await push_channel(client, fcm)
    partner_id = (await get(client, "/api/v1/channels/push"))["partner_id"]
    upper = f"/api/v1/partners/{partner_id.upper()}"
    status, problem = await _patch(client, upper, {"auth": {"type": "bearer", "token": "t"}})
    assert status == 409, problem
    assert [u["name"] for u in problem["used_by"]] == ["push"]
    assert (await get(client, upper))["auth"]["type"] == "google_service_account"


async def test_an_sms_channels_action_patched_by_its_id_in_upper_case_is_refused_too(
    client: Client,
) -> None:
    async with running_partner() as sms:
        await sms_channel(client, sms.url)
        action_id = (await get(client, "/api/v1/channels/sms"))["action_id"]
        path = f"/api/v1/actions/{action_id.upper()}"
        status, problem = await _patch(client, path, {"method": "DELETE"})
        assert status == 409, problem
        assert (await get(client, path))["method"] == "POST"


async def test_a_channel_given_an_id_in_upper_case_stores_it_as_the_store_does(
    client: Client, fcm: Fcm
) -> None:
    service_account = {"type": "google_service_account", "service_account": fcm.service_account()}
    partner = await create_partner(client, fcm.url, name="FCM", auth=service_account)
    body = {"name": "push", "type": "push", "partner_id": partner["id"].upper()}
    channel = await post(client, "/api/v1/channels", {**body, "project_id": "rabbot-test"})
    assert channel["partner_id"] == partner["id"]
    path = f"/api/v1/partners/{partner['id']}"
    status, problem = await _patch(client, path, {"auth": {"type": "bearer", "token": "t"}})
    assert status == 409, problem
    async with running_partner() as provider:
        await sms_channel(client, provider.url)
        sms = await get(client, "/api/v1/channels/sms")
        changed = {"action_id": sms["action_id"].upper()}
        status, patched = await _patch(client, "/api/v1/channels/sms", changed)
        assert status == 200 and patched["action_id"] == sms["action_id"], patched
        status, problem = await _patch(
            client, f"/api/v1/actions/{sms['action_id']}", {"method": "GET"}
        )
        assert status == 409, problem


async def test_a_partner_an_action_names_in_upper_case_cannot_be_deleted_under_it(
    client: Client,
) -> None:
    """The action stored the partner id as given; deleting the partner counted its actions by
    the stored spelling, found none, and left the action naming a partner that was gone."""
    async with running_partner() as erp:
        partner = await create_partner(client, erp.url)
        action = await create_action(client, partner["id"].upper())
        assert action["partner_id"] == partner["id"]
        assert await _delete(client, f"/api/v1/partners/{partner['id']}") == 409
        assert await _delete(client, f"/api/v1/partners/{partner['id'].upper()}") == 409
        await get(client, f"/api/v1/partners/{partner['id']}")


async def test_an_action_a_subscription_names_in_upper_case_cannot_be_deleted_under_it(
    client: Client,
) -> None:
    async with running_partner() as erp:
        partner = await create_partner(client, erp.url)
        action = await create_action(client, partner["id"])
        subscription = await create_subscription(client, action["id"].upper())
        assert subscription["action_id"] == action["id"]
        assert await _delete(client, f"/api/v1/actions/{action['id']}") == 409
        assert await _delete(client, f"/api/v1/actions/{action['id'].upper()}") == 409
        await get(client, f"/api/v1/actions/{action['id']}")


async def test_an_action_a_schedule_names_in_upper_case_cannot_be_deleted_under_it(
    client: Client,
) -> None:
    await upload_mapping(client, (ROOT / "mappings/geotab-logrecord.yaml").read_text())
    async with running_partner() as feed:
        partner = await create_partner(client, feed.url, auth={"type": "none"})
        action = await create_action(
            client, partner["id"], name="getfeed", mode="proxy", read_only=True
        )
        body = {
            "name": "feed",
            "action_id": action["id"].upper(),
            "every": "1m",
            "target": {"entity_type": "vehicle", "mapping": "geotab-logrecord"},
        }
        schedule = await post(client, "/api/v1/schedules", body)
        assert schedule["action_id"] == action["id"]
        response = await client.delete(f"/api/v1/actions/{action['id']}", headers=auth())
        problem = await response.json()
        assert response.status == 409, problem
        assert [u["kind"] for u in problem["used_by"]] == ["schedule"]


async def test_an_action_a_flow_names_by_its_id_in_upper_case_cannot_be_deleted_under_it(
    client: Client,
) -> None:
    async with running_partner() as erp:
        partner = await create_partner(client, erp.url)
        action = await create_action(client, partner["id"], name="notify-erp")
        flow = {
            "name": "tell-erp",
            "on": {"events": ["fine.received"]},
            "steps": [{"id": "tell", "call": action["id"].upper()}],
        }
        await post(client, "/api/v1/flows", flow)
        response = await client.delete(f"/api/v1/actions/{action['id']}", headers=auth())
        problem = await response.json()
        assert response.status == 409, problem
        assert [(u["kind"], u["name"]) for u in problem["used_by"]] == [("flow", "tell-erp")]


async def test_a_channel_and_template_a_flow_names_by_id_cannot_be_deleted_under_it(
    client: Client, fcm: Fcm
) -> None:
    """Their deletion asked only for flows naming them by name; the flow compiler and the
    runner find them by id as well (in either case)."""
    await push_channel(client, fcm)
    await add_template(client, "geofence-exit")
    channel = await get(client, "/api/v1/channels/push")
    template = await get(client, "/api/v1/templates/geofence-exit")
    flow = (ROOT / "flows/geofence-exit-push.yaml").read_text()
    flow = flow.replace("channel: push", f"channel: {channel['id'].upper()}")
    flow = flow.replace("template: geofence-exit", f"template: {template['id'].upper()}")
    response = await client.post(
        "/api/v1/flows", data=flow, headers={**auth(), "Content-Type": "application/yaml"}
    )
    assert response.status == 201, await response.text()
    for path in ("/api/v1/channels/push", "/api/v1/templates/geofence-exit"):
        response = await client.delete(path, headers=auth())
        problem = await response.json()
        assert response.status == 409, (path, problem)
        assert [u["name"] for u in problem["used_by"]] == ["geofence-exit-push"]


async def test_a_partners_new_auth_sent_by_its_id_in_upper_case_opens_when_used(
    client: Client,
) -> None:
    """The new credentials were sealed to the URL's spelling of the id and opened with the
    stored one: the partner could not be used at all after such a PATCH."""
    async with running_partner() as erp:
        partner = await create_partner(client, erp.url)
        action = await create_action(client, partner["id"], mode="proxy")
        path = f"/api/v1/partners/{partner['id'].upper()}"
        status, changed = await _patch(client, path, {"auth": {"type": "bearer", "token": "n3w"}})
        assert status == 200, changed
        erp.respond_with(200, {"ok": True})
        response = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", headers=auth(), json={"payload": {}}
        )
        assert response.status == 200, await response.text()
        assert erp.requests[-1].headers["Authorization"] == "Bearer n3w"


async def test_an_action_called_by_its_id_in_upper_case_is_called_as_changed_since(
    client: Client, services: Services
) -> None:
    """The catalog cached the action under the URL's spelling, and a change forgot only the
    stored one: calls by the upper-case id went on with the old action."""
    services.catalog.clock = lambda: 1000.0  # no entry expires: only `forget` drops one
    async with running_partner() as erp:
        partner = await create_partner(client, erp.url, auth={"type": "none"})
        action = await create_action(client, partner["id"], mode="proxy", path="/old")
        invoke = f"/api/v1/actions/{action['id'].upper()}/invoke"
        erp.respond_with(200, {"ok": True})
        for path in ("/old", "/new"):
            status, _ = await _patch(client, f"/api/v1/actions/{action['id']}", {"path": path})
            assert status == 200
            response = await client.post(invoke, headers=auth(), json={"payload": {}})
            assert response.status == 200, await response.text()
            assert erp.requests[-1].path == path


async def test_a_schedules_runs_are_read_and_deleted_under_its_id_in_upper_case(
    client: Client, services: Services, geotab: GeotabDouble
) -> None:
    """Runs name their schedule by the stored id; they were read and deleted by the URL's
    spelling: the upper-case id listed no runs, and deleting under it left them behind."""
    geotab.add_records(2)
    schedule = await geotab_schedule(client, geotab)
    assert await runner(client).run_until_idle() == {"ok": 1}
    upper = schedule["id"].upper()
    (run,) = await runs(client, schedule["id"])
    assert [r["id"] for r in await runs(client, upper)] == [run["id"]]
    assert await _delete(client, f"/api/v1/schedules/{upper}") == 204
    response = await client.get(f"/api/v1/schedules/{schedule['id']}/runs", headers=auth())
    assert response.status == 404
    left = await services.store.schedules.runs("acme", schedule["id"], before=None, limit=10)
    assert left == []


async def test_list_filters_find_another_resources_id_in_upper_case(
    client: Client, services: Services
) -> None:
    """A list filtered by a partner, action, subscription, entity or event id matched the
    stored text, so the id in upper case (which the store finds the resource itself by)
    listed nothing."""
    async with running_partner() as erp:
        partner = await create_partner(client, erp.url, auth={"type": "none"})
        action = await create_action(client, partner["id"])
        subscription = await create_subscription(client, action["id"])
        vehicle = await create_vehicle(client)
        path = f"/api/v1/entities/vehicle/{vehicle['id']}"
        response = await client.patch(path, json={"attributes": {"x": 1}}, headers=auth())
        assert response.status == 200, await response.text()
        await services.relay.run_until_idle()  # the event is listed, and delivered, once relayed
        events = (await get(client, f"/api/v1/events?entity_id={vehicle['id']}"))["items"]
        event = next(e for e in events if e["type"] == "entity.updated")
        lists = [
            ("actions", "partner_id", partner["id"]),
            ("subscriptions", "action_id", action["id"]),
            ("events", "entity_id", vehicle["id"]),
            ("deliveries", "partner_id", partner["id"]),
            ("deliveries", "action_id", action["id"]),
            ("deliveries", "subscription_id", subscription["id"]),
            ("deliveries", "entity_id", vehicle["id"]),
            ("deliveries", "event_id", event["id"]),
        ]
        for kind, name, value in lists:
            listed = {}
            for spelled in (value, value.upper()):
                page = await get(client, f"/api/v1/{kind}?{name}={spelled}")
                listed[spelled] = [item["id"] for item in page["items"]]
            assert listed[value] and listed[value.upper()] == listed[value], (kind, name, listed)


async def test_a_flow_runs_deliveries_are_listed_under_its_event_id_in_upper_case(
    client: Client, services: Services
) -> None:
    """A run's id is `<event id>:<flow>`: its event id in upper case matched no delivery."""
    async with running_partner() as erp:
        erp.respond_with(200, {"ok": True})
        partner = await create_partner(client, erp.url, auth={"type": "none"})
        action = await create_action(client, partner["id"], name="notify-erp")
        flow = {
            "name": "tell-erp",
            "on": {"events": ["entity.created"]},
            "steps": [{"id": "tell", "call": action["id"]}],
        }
        await post(client, "/api/v1/flows", flow)
        await create_vehicle(client)
        await drain(services)
        (run,) = (await get(client, "/api/v1/flows/tell-erp/runs"))["items"]
        event_id, _, flow_name = run["id"].partition(":")
        listed = {}
        for spelled in (run["id"], f"{event_id.upper()}:{flow_name}"):
            page = await get(client, f"/api/v1/deliveries?run_id={spelled}")
            listed[spelled] = [item["id"] for item in page["items"]]
        assert len(set(map(tuple, listed.values()))) == 1 and listed[run["id"]], listed


def test_a_lookup_by_a_whole_float_past_2_53_names_no_neighbouring_id() -> None:
    """A lookup compares text and numbers by value (1500.0 finds "1500"), but a float at or
    past 2^53 holds no integer exactly: `12345678901234567.0` parses as ...568.0, and was
    looked up as "12345678901234568", another device's id."""
    assert lookup_text(1500.0) == "1500" and lookup_text(2.0**53 - 1) == "9007199254740991"
    for rounded in (orjson.loads(b"12345678901234567.0"), 2.0**53, -(2.0**60)):
        assert lookup_text(rounded) == repr(rounded)
