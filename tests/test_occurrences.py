"""A partner's occurrence is announced once (a mapping's `occurrence_id`, docs/mappings.md
"Occurrences reported again"): Samsara, Motive and Traccar send a webhook again when our answer
was late, and an `announce: every` event announced each copy, so a driver got two pushes for
one geofence exit. The write still happens; the event is stored, and its flow run, once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pymongo import AsyncMongoClient

from gateway.clock import utcnow
from gateway.config import ConfigError, Settings
from gateway.services import Services, open_services
from gateway.store.expiry import Expiry
from gateway.store.occurrences import DEFAULT_RETENTION_SECONDS
from gateway.store.occurrences import indexes as occurrence_indexes
from gateway.web.state import services_key
from tests.fcm_double import Fcm, fcm
from tests.flow_support import (
    add_template,
    drain,
    get,
    push_channel,
    sample,
    send_to,
    trigger_for,
    upload_flow,
)
from tests.partner_double import post
from tests.support import auth
from tests.triggers_support import ROOT, create_trigger, upload_mapping
from tests.ui_support import csrf, log_in, make_user

__all__ = ["fcm"]  # the fixture

Client = TestClient[Any, Any]
ANA = {"name": "Ana Souza", "cpf": "52998224725", "push_tokens": ["ana-phone"]}
EXIT = "vehicle.geofence.exited"
EVENT = "vehicle.alert"


async def _samsara(client: Client, fcm: Fcm) -> dict[str, Any]:
    """A tenant whose Samsara geofence exits push to the driver (the shipped mapping and
    flow); Ana drives ABC1D23."""
    await push_channel(client, fcm)
    await add_template(client, "geofence-exit")
    await upload_flow(client, "geofence-exit-push")
    trigger = await trigger_for(client, "samsara-geofence", entity_type="vehicle")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    await post(
        client,
        "/api/v1/entities/vehicle/ABC1D23/drivers",
        {"driver": ANA["cpf"], "start": "2026-11-01T00:00:00Z"},
    )
    return trigger


async def _stored(client: Client, event_type: str = EXIT) -> list[dict[str, Any]]:
    return list((await get(client, f"/api/v1/events?type={event_type}"))["items"])


async def _runs(client: Client) -> list[dict[str, Any]]:
    return list((await get(client, "/api/v1/flows/geofence-exit-push/runs"))["items"])


async def test_a_samsara_geofence_exit_sent_again_is_announced_once(
    client: Client, fcm: Fcm
) -> None:
    trigger = await _samsara(client, fcm)
    webhook = sample("samsara_v2_geofence_exit.json")
    first = await send_to(client, trigger, webhook)
    assert first["events"] == ["entity.updated", EXIT]  # the vehicle's Samsara id, name, VIN
    await drain(client.app[services_key])
    again = await send_to(client, trigger, webhook)  # Samsara's redelivery: same eventId
    assert again["events"] == []  # written (nothing changed), announced nothing
    await drain(client.app[services_key])

    (event,) = await _stored(client)
    assert event["occurrence_id"] == webhook["eventId"]
    assert event["detail"]["samsara_event_id"] == webhook["eventId"]
    assert [r["status"] for r in await _runs(client)] == ["succeeded"]
    assert [m["token"] for m in fcm.messages] == ["ana-phone"]


async def test_two_copies_at_once_are_announced_once(client: Client, fcm: Fcm) -> None:
    trigger = await _samsara(client, fcm)
    webhook = sample("samsara_v2_geofence_exit.json")
    answers = await asyncio.gather(*(send_to(client, trigger, webhook) for _ in range(2)))
    assert len({a["id"] for a in answers}) == 1  # both written, to the one vehicle
    # Both may list the exit (neither saw the other's claim): the relay stores it once.
    await drain(client.app[services_key])

    assert len(await _stored(client)) == 1
    assert len(await _runs(client)) == 1
    assert len(fcm.messages) == 1
    # Every copy an answer listed is stored or counted as a repeat the relay dropped.
    listed = sum(EXIT in a["events"] for a in answers)
    metrics = await (await client.get("/metrics")).text()
    assert f"gateway_events_repeated_total {float(listed - 1)}" in metrics


async def test_another_event_id_is_another_occurrence(client: Client, fcm: Fcm) -> None:
    trigger = await _samsara(client, fcm)
    webhook = sample("samsara_v2_geofence_exit.json")
    await send_to(client, trigger, webhook)
    later = {**webhook, "eventId": "9a0b1c2d-0000-4000-8000-000000000001"}
    second = await send_to(client, trigger, later)
    assert second["events"] == [EXIT]  # the vehicle is as the first left it
    await drain(client.app[services_key])

    stored = await _stored(client)
    assert sorted(e["occurrence_id"] for e in stored) == sorted(
        [webhook["eventId"], later["eventId"]]
    )
    assert len(await _runs(client)) == 2  # the second push is the flow's cooldown's to hold


async def test_an_occurrence_is_remembered_for_its_retention_only(client: Client, fcm: Fcm) -> None:
    trigger = await _samsara(client, fcm)
    webhook = sample("samsara_v2_geofence_exit.json")
    await send_to(client, trigger, webhook)
    await drain(client.app[services_key])
    db = client.app[services_key].store.db
    past = datetime.now(UTC) - timedelta(seconds=DEFAULT_RETENTION_SECONDS + 60)
    await db["occurrences"].update_many({}, {"$set": {"at": past}})  # before the TTL's sweep

    late = await send_to(client, trigger, webhook)
    assert late["events"] == [EXIT]
    await drain(client.app[services_key])
    assert len(await _stored(client)) == 2


async def test_a_step_of_the_servers_clock_forgets_no_occurrence_before_its_retention(
    client: Client, fcm: Fcm, gateway_time: Callable[[datetime], None]
) -> None:
    """The database server's clock steps 8 days forward (the next reading follows it) between
    a Samsara geofence exit and its redelivery: the TTL expiry keeps the occurrence (held
    back), and the reads no longer take it for expired on the stepped time: the copy is not
    announced a second time (the driver pushed twice)."""
    services = client.app[services_key]
    trigger = await _samsara(client, fcm)
    webhook = sample("samsara_v2_geofence_exit.json")
    now = utcnow()
    gateway_time(now)
    await send_to(client, trigger, webhook)
    await drain(services)
    await services.store.expiry.expire()  # a pass on the right time
    gateway_time(now + timedelta(days=8))
    assert await services.store.expiry.expire() == 0  # the occurrence kept

    again = await send_to(client, trigger, webhook)
    assert again["events"] == []
    await drain(services)
    assert len(await _stored(client)) == 1
    assert len(fcm.messages) == 1


async def test_a_step_of_the_servers_clock_takes_no_relayed_occurrence_over(
    client: Client, gateway_time: Callable[[datetime], None]
) -> None:
    """The relay's claim (`repeats`) judges a kept claim's age at the expiry's time too: two
    copies relayed either side of an 8 days' step, the second is a repeat."""
    store = client.app[services_key].store
    now = utcnow()
    gateway_time(now)
    copy = {
        "tenant": "acme",
        "type": EXIT,
        "entity": {"type": "vehicle"},
        "origin": {"kind": "trigger", "id": "t1"},
        "occurrence_id": "4f1e9c52",
    }
    assert await store.occurrences.repeats([{**copy, "_id": "a"}], utcnow()) == set()
    await store.expiry.expire()  # a pass on the right time
    gateway_time(now + timedelta(days=8))

    assert await store.occurrences.repeats([{**copy, "_id": "b"}], utcnow()) == {"b"}


async def test_without_occurrence_id_every_copy_is_announced(client: Client, fcm: Fcm) -> None:
    shipped = (ROOT / "mappings" / "samsara-geofence.yaml").read_text()
    assert "\noccurrence_id: eventId\n" in shipped
    text = shipped.replace("\noccurrence_id: eventId\n", "\n").replace(
        "name: samsara-geofence", "name: samsara-geofence-plain"
    )
    await upload_mapping(client, text)
    trigger = await create_trigger(client, mapping="samsara-geofence-plain")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    webhook = sample("samsara_v2_geofence_exit.json")
    for _ in range(2):
        assert (await send_to(client, trigger, webhook))["events"][-1] == EXIT
    await drain(client.app[services_key])
    stored = await _stored(client)
    assert len(stored) == 2
    assert all("occurrence_id" not in e for e in stored)


ALARM_FEED = """
name: alarm-feed
direction: inbound
entity_type: vehicle
key: [plate]
occurrence_id: id
emit:
  - {type: vehicle.alarm, announce: every}
fields:
  plate: plate
"""


async def test_each_trigger_and_event_type_has_its_own_occurrences(client: Client) -> None:
    """The same id from another trigger (another Samsara organisation) is another occurrence,
    and so is an id a payload gives to two of its events."""
    two_events = ALARM_FEED.replace(
        "  - {type: vehicle.alarm, announce: every}\n",
        "  - {type: vehicle.alarm, announce: every}\n  - {type: vehicle.alert, announce: every}\n",
    )
    await upload_mapping(client, two_events)
    one = await create_trigger(client, mapping="alarm-feed")
    other = await create_trigger(client, name="other-org", mapping="alarm-feed")
    body = {"plate": "ABC1D23", "id": 17}  # a number: its digits are the id
    assert (await send_to(client, one, body))["events"][-2:] == ["vehicle.alarm", "vehicle.alert"]
    await drain(client.app[services_key])
    assert (await send_to(client, one, body))["events"] == []
    assert (await send_to(client, other, body))["events"] == ["vehicle.alarm", "vehicle.alert"]
    await drain(client.app[services_key])
    events = (await get(client, "/api/v1/events?limit=50"))["items"]
    alarms = [e for e in events if e["type"] in ("vehicle.alarm", "vehicle.alert")]
    assert sorted(e["occurrence_id"] for e in alarms) == ["17"] * 4


async def test_two_relays_claim_one_occurrence_once(client: Client) -> None:
    """Two processes relaying two copies of one occurrence at once: the unique claim lets
    one through, whichever it is."""
    store = client.app[services_key].store
    now = datetime.now(UTC)

    def copy(event_id: str) -> dict[str, Any]:
        return {
            "_id": event_id,
            "tenant": "acme",
            "type": EXIT,
            "entity": {"type": "vehicle"},
            "origin": {"kind": "trigger", "id": "t1"},
            "occurrence_id": "4f1e9c52",
        }

    first, second = await asyncio.gather(
        store.occurrences.repeats([copy("a")], now), store.occurrences.repeats([copy("b")], now)
    )
    assert sorted([first, second], key=len) == [set(), {"b"} if first == set() else {"a"}]
    # The winner relayed again (its process died before draining) keeps its claim.
    winner = "b" if first == {"a"} else "a"
    assert await store.occurrences.repeats([copy(winner)], now) == set()


async def test_an_occurrence_whose_outbox_was_parked_is_announced_when_sent_again(
    client: Client,
) -> None:
    """The relay claims an occurrence before storing its event: when the database then
    refuses the event (here a validator on `events`; in life a document over its limits)
    and the outbox is parked, nothing was announced, and the partner's redelivery is."""
    services = client.app[services_key]
    await upload_mapping(client, ALARM_FEED)
    trigger = await create_trigger(client, mapping="alarm-feed")
    body = {"plate": "ABC1D23", "id": "alarm-17"}
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(services)
    db = services.store.db
    refuse_alarms = {"type": {"$ne": "vehicle.alarm"}}
    await db.command("collMod", "events", validator=refuse_alarms, validationAction="error")
    assert (await send_to(client, trigger, body))["events"] == ["vehicle.alarm"]
    await services.relay.run_until_idle()
    parked = await db["entities"].find_one({"nk": "ABC1D23"})
    assert parked is not None and "relay_error" in parked and "pending" not in parked
    assert await _stored(client, "vehicle.alarm") == []

    await db.command("collMod", "events", validator={})
    again = await send_to(client, trigger, body)  # the partner's redelivery
    assert again["events"] == ["vehicle.alarm"]
    await drain(services)
    (event,) = await _stored(client, "vehicle.alarm")
    assert event["occurrence_id"] == "alarm-17"
    # Announced once: a third copy is the repeat.
    assert (await send_to(client, trigger, body))["events"] == []


async def test_occurrence_id_is_checked_when_the_mapping_is_uploaded(client: Client) -> None:
    text = """
name: bad-occurrence
direction: inbound
entity_type: vehicle
key: [plate]
occurrence_id: {from: "id[", required: true}
emit: [{type: vehicle.alarm, announce: every}]
fields:
  plate: plate
"""
    response = await client.post(
        "/api/v1/mappings",
        data=text.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    problem = await response.json()
    assert response.status == 422, problem
    assert all(e["pointer"].startswith("/occurrence_id") for e in problem["errors"]), problem
    positions = """
name: fixes-with-ids
direction: inbound
target: positions
occurrence_id: id
fields:
  plate: plate
  time: at
  lat: lat
  lon: lon
"""
    response = await client.post(
        "/api/v1/mappings",
        data=positions.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    problem = await response.json()
    assert response.status == 422, problem
    assert "/occurrence_id" in [e["pointer"] for e in problem["errors"]], problem


async def test_an_occurrence_id_that_is_an_object_is_a_payload_problem(client: Client) -> None:
    await upload_mapping(
        client,
        """
name: object-id
direction: inbound
entity_type: vehicle
key: [plate]
occurrence_id: id
emit: [{type: vehicle.alarm, announce: every}]
fields:
  plate: plate
""",
    )
    trigger = await create_trigger(client, mapping="object-id")
    response = await client.post(
        f"/hooks/{trigger['id']}",
        json={"plate": "ABC1D23", "id": {"n": 1}},
        headers={"Authorization": f"Bearer {trigger['token']}"},
    )
    problem = await response.json()
    assert response.status == 422, problem
    assert any(e.get("target") == "occurrence_id" for e in problem["errors"]), problem
    stored = await client.app[services_key].store.db["entities"].count_documents({})
    assert stored == 0


ALARMS = """
name: alarms
direction: inbound
entity_type: vehicle
key: [plate]
occurrence_id: id
emit: [{type: vehicle.alert, when: alarm, announce: every}]
fields:
  plate: plate
"""


async def test_an_item_without_an_occurrence_id_is_announced_every_time_and_counted(
    client: Client,
) -> None:
    """An id that is absent, null or blank is no occurrence: each copy is announced (as
    without `occurrence_id`), and the trigger counts such items that have events, so a
    partner that stopped sending its id shows before drivers get pushes twice."""
    await upload_mapping(client, ALARMS)
    trigger = await create_trigger(client, mapping="alarms")
    for body in (
        {"plate": "ABC1D23", "alarm": "panic"},
        {"plate": "ABC1D23", "alarm": "panic", "id": None},
        {"plate": "ABC1D23", "alarm": "panic", "id": ""},
        {"plate": "ABC1D23", "alarm": "panic", "id": "  "},
    ):
        assert (await send_to(client, trigger, body))["events"][-1] == "vehicle.alert", body
    # No event to announce, nothing to count; an id is counted as nothing either.
    await send_to(client, trigger, {"plate": "ABC1D23"})
    await send_to(client, trigger, {"plate": "ABC1D23", "alarm": "panic", "id": "x1"})
    # An item refused (no vehicle can have that plate) announces nothing: not counted.
    refused = await client.post(
        f"/hooks/{trigger['id']}",
        json={"plate": "not a plate", "alarm": "panic"},
        headers={"Authorization": f"Bearer {trigger['token']}"},
    )
    assert refused.status == 422, await refused.text()
    await drain(client.app[services_key])

    stored = await _stored(client, "vehicle.alert")
    assert len(stored) == 5
    assert sorted(e.get("occurrence_id", "-") for e in stored) == ["-", "-", "-", "-", "x1"]
    metrics = await (await client.get("/metrics")).text()
    assert f'gateway_occurrence_ids_missing_total{{trigger="{trigger["id"]}"}} 4.0' in metrics


async def test_an_occurrence_id_that_is_a_boolean_is_a_payload_problem_where_it_is(
    client: Client,
) -> None:
    await upload_mapping(client, ALARMS)
    trigger = await create_trigger(client, mapping="alarms")
    response = await client.post(
        f"/hooks/{trigger['id']}",
        json={"plate": "ABC1D23", "alarm": "panic", "id": True},
        headers={"Authorization": f"Bearer {trigger['token']}"},
    )
    problem = await response.json()
    assert response.status == 422, problem
    (error,) = problem["errors"]
    assert (error["pointer"], error["target"]) == ("/id", "occurrence_id"), problem
    assert "an id is a text or a number" in error["message"]
    assert await client.app[services_key].store.db["entities"].count_documents({}) == 0


async def test_the_dry_run_shows_each_items_occurrence_id_and_announce_when_declared(
    client: Client,
) -> None:
    await upload_mapping(client, ALARMS.replace("key: [plate]", "key: [plate]\nitems: alarms"))
    batch = {"alarms": [{"plate": "ABC1D23", "alarm": "panic", "id": 17}, {"plate": "ABC1D23"}]}
    result = await post(
        client, "/api/v1/mappings/test", {"name": "alarms", "payload": batch}, status=200
    )
    first, second = result["results"]
    assert (first["occurrence_id"], first["events"]) == ("17", ["entity.created", "vehicle.alert"])
    assert (second["occurrence_id"], second["events"]) == (None, ["entity.created"])
    assert first["announce"] == {"vehicle.alert": "every"} and "announce" not in second

    plain = ALARMS.replace("occurrence_id: id\n", "").replace("name: alarms", "name: plain")
    result = await post(
        client,
        "/api/v1/mappings/test",
        {"mapping": plain, "payload": {"plate": "ABC1D23", "id": 17}},
        status=200,
    )
    assert "occurrence_id" not in result["results"][0]
    default = plain.replace(", announce: every", "")
    result = await post(
        client,
        "/api/v1/mappings/test",
        {"mapping": default, "payload": {"plate": "ABC1D23", "alarm": "panic"}},
        status=200,
    )
    assert result["results"][0]["events"] == ["entity.created", "vehicle.alert"]
    assert "announce" not in result["results"][0]  # the default is not shown


async def test_the_documented_redelivery_is_announced_once(client: Client) -> None:
    """docs/mappings.md "Occurrences reported again": its mapping and webhook, sent twice,
    answer and store what the page says."""
    section = (ROOT / "docs" / "mappings.md").read_text().split("## Occurrences reported again")
    text = section[1].split("\n## ", 1)[0]
    mapping = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    webhook = json.loads(text.split("```json sample\n", 1)[1].split("```", 1)[0])
    answers = ['`"events": ["entity.created", "vehicle.alert"]`', '`"events": []`']
    assert all(answer in " ".join(text.split()) for answer in answers)

    await upload_mapping(client, mapping)
    trigger = await create_trigger(client, mapping="alarm-feed-mini")
    assert (await send_to(client, trigger, webhook))["events"] == ["entity.created", EVENT]
    await drain(client.app[services_key])
    assert (await send_to(client, trigger, webhook))["events"] == []
    await drain(client.app[services_key])
    (event,) = await _stored(client, EVENT)
    assert event["occurrence_id"] == webhook["eventId"] == "a1b2c3"

    later = {**webhook, "eventId": "d4e5f6"}
    assert (await send_to(client, trigger, later))["events"] == [EVENT]


async def test_a_changed_retention_setting_is_followed_at_start(
    settings: Settings, mongodb_uri: str
) -> None:
    """GATEWAY_OCCURRENCE_RETENTION_DAYS: a process started with another value remembers
    occurrences that long. On the embedded database, whose TTL index is a plain one that the
    gateway expires through itself (store/expiry.py), the TTL the gateway applies is the new
    one, and so is the window within which a copy is a repeat."""
    now = datetime.now(UTC)
    key = "k" * 64
    async with open_services(settings, mongodb_uri=mongodb_uri) as services:
        store = services.store
        assert store.expiry.by_gateway  # SecantusDB
        assert store.expiry.seconds("occurrences", "ttl") == DEFAULT_RETENTION_SECONDS
        record = {"_id": key, "tenant": "acme", "event_id": "e1", "at": now - timedelta(days=3)}
        await store.db["occurrences"].insert_one(record)
        assert await store.occurrences.announced([key], now) == {key}
        assert await store.expiry.expire(now) == 0
    shorter = replace(settings, occurrence_retention_days=2)
    async with open_services(shorter, mongodb_uri=mongodb_uri) as services:
        store = services.store
        assert store.expiry.seconds("occurrences", "ttl") == 2 * 86_400
        indexes = await store.db["occurrences"].index_information()
        assert "expireAfterSeconds" not in indexes["ttl"]  # still the gateway's own expiry
        assert await store.occurrences.announced([key], now) == set()
        assert await store.expiry.expire(now) == 1
        assert await store.db["occurrences"].count_documents({}) == 0


async def test_where_the_server_expires_occurrences_a_changed_retention_changes_its_ttl_index(
    services: Services, mongodb_uri: str
) -> None:
    """MongoDB walks its TTL indexes itself: there the index is created with the retention,
    and created again at a start with another one it is changed (collMod), not refused as an
    index that exists otherwise; where the server refuses collMod, it is dropped and created.
    On the embedded server, with the gateway's expiry off."""
    expiry = Expiry()  # the server's own sweep
    collection = services.store.db["occurrences_ttl"]

    async def ttl() -> Any:
        return (await collection.index_information())["ttl"]

    for days in (7, 2, 30):
        await expiry.create_indexes(collection, occurrence_indexes(days * 86_400))
        assert (await ttl())["expireAfterSeconds"] == days * 86_400
        assert (await ttl())["key"] == [("at", 1)]
    assert await expiry.expire() == 0  # the server does it

    # A server without collMod (on the gateway's connections only: the test's are not).
    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
    fault = {"failCommands": ["collMod"], "appName": "rabbot-gateway", "errorCode": 59}
    await admin.admin.command("configureFailPoint", "failCommand", mode="alwaysOn", data=fault)
    try:
        await collection.insert_one({"_id": "kept", "at": datetime.now(UTC)})
        await expiry.create_indexes(collection, occurrence_indexes(86_400))
        assert (await ttl())["expireAfterSeconds"] == 86_400
        assert await collection.count_documents({}) == 1  # the index went, not the records
        # Two processes starting at once both drop it: the second finds it gone, and starts.
        await asyncio.gather(
            *(Expiry().create_indexes(collection, occurrence_indexes(2 * 86_400)) for _ in "ab")
        )
        assert (await ttl())["expireAfterSeconds"] == 2 * 86_400
    finally:
        await admin.admin.command("configureFailPoint", "failCommand", mode="off")
        await admin.close()

    # A one-shot command (`gateway cleanup` from a shell without the serving processes'
    # settings) leaves an existing TTL as it is, and creates a missing index with its own.
    one_shot = Expiry(follow_settings=False)
    await one_shot.create_indexes(collection, occurrence_indexes(7 * 86_400))
    assert (await ttl())["expireAfterSeconds"] == 2 * 86_400
    fresh = services.store.db["occurrences_ttl_fresh"]
    await one_shot.create_indexes(fresh, occurrence_indexes(7 * 86_400))
    assert (await fresh.index_information())["ttl"]["expireAfterSeconds"] == 7 * 86_400


def test_the_retention_setting_is_read_in_days_within_bounds() -> None:
    assert Settings.from_env({}).occurrence_retention_days == 7
    days = Settings.from_env({"GATEWAY_OCCURRENCE_RETENTION_DAYS": "30"})
    assert days.occurrence_retention_days == 30
    for wrong in ("0", "366", "a week"):
        with pytest.raises(ConfigError, match="GATEWAY_OCCURRENCE_RETENTION_DAYS"):
            Settings.from_env({"GATEWAY_OCCURRENCE_RETENTION_DAYS": wrong})


async def test_the_admin_uis_dry_run_shows_the_occurrence_id_of_each_item(
    client: Client, services: Services
) -> None:
    await upload_mapping(client, ALARMS.replace("key: [plate]", "key: [plate]\nitems: alarms"))
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/mappings/alarms")
    batch = {
        "alarms": [
            {"plate": "ABC1D23", "alarm": "panic", "id": "a1b2c3"},
            {"plate": "ABC1D23", "alarm": "sos"},
        ]
    }
    response = await client.post(
        "/admin/mappings/alarms/test", data={"csrf": token, "payload": json.dumps(batch)}
    )
    page = await response.text()
    assert response.status == 200, page
    shown = page.split('data-testid="dry-run-occurrence">')[1:]
    assert len(shown) == 2, page
    assert shown[0].startswith("Ocorrência do parceiro (occurrence_id): <code>a1b2c3</code>")
    assert "nenhuma: os eventos seriam anunciados a cada envio" in shown[1].split("</p>")[0]
