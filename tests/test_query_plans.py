"""The queries of the hot paths are read through an index: a request, a lookup, the fold, the
delivery worker, a flow's run. Each test runs the path through HTTP or the real store with a
command listener on (tests/query_plans.py) and asks the database how it plans every query
it heard, one per collection and filter shape.

SecantusDB reads through an index a filter whose every field one index holds; for any other
it reads through an index the first field (in the filter's order) one serves alone, and
matches the rest on what that read; a filter with an operator at its top (`$or`, `$and`,
`$nor`) it matches against every document of the collection. So `{_id, tenant}` is a point
lookup (its `_id`), `{tenant, type, fk, data.status}` reads every entity of the tenant (its
`tenant`), and `{_id, tenant, $or: [...]}` every tenant's documents."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient
from bson import ObjectId

from gateway.services import Services
from gateway.web.state import services_key
from tests.flow_support import drain, hr_lookup, sample, send_to, trigger_for
from tests.partner_double import (
    FakeClock,
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
)
from tests.query_plans import Plan, PlanListener
from tests.support import auth
from tests.test_position_store import round_with_a_lost_answer
from tests.triggers_support import VEHICLE, create_position_trigger, create_trigger, hook

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]


def _vehicle(plate: str, status: str, group: str, tracker: str) -> dict[str, Any]:
    return {
        "plate": plate,
        "status": status,
        "group": group,
        "attributes": {"tracker_id": tracker},
    }


# Collections small by design, whose whole reads are not the question: a process's leases
# and turns (a row per job or shard), the group commit's round marks, the fold's shard
# marks (its sequence and one per shard), and the fold's inbox: a queue of what is not
# folded yet, trimmed each pass, whose trim reads it whole (what it deletes, and the rest).
SMALL = frozenset(
    {"leases", "turns", "group_commits", "meta", "migrations", "fleet_marks", "fleet_inbox"}
)
# A tenant's configuration (its flows, mappings, kinds, partners, actions, subscriptions,
# geofences, plans): tens of documents, which a read of the tenant's (or a background job's
# of every tenant's, as the restatement of replaced kinds) may take whole; the collections
# that grow with traffic (entities, events, deliveries, runs, positions, ...) are the others.
CONFIGURATION = frozenset(
    {
        "flow_heads",
        "flows",
        "mapping_heads",
        "mappings",
        "kinds",
        "partners",
        "actions",
        "subscriptions",
        "triggers",
        "channels",
        "schedules",
        "geofences",
        "fences",
        "maintenance_plans",
        "fleet_settings",
        "fleet_rules",
    }
)


def _wide(plans: list[Plan]) -> list[str]:
    """The plans that read every document of the collection, or of the tenant where it
    grows with traffic."""
    return [
        f"{p.collection} {p.command} {p.shape} ({p.sent_by}): {p.stage} via {p.via}"
        for p in plans
        if p.collection not in SMALL
        and p.collection not in CONFIGURATION
        and (p.scans or p.reads_the_tenant)
    ]


async def test_filtered_entity_lists_and_lookups_read_through_an_index(
    query_plans: PlanListener, client: Client
) -> None:
    made = []
    for n, (status, group) in enumerate(
        [("active", "north"), ("active", "south"), ("inactive", "north"), ("active", "north")]
    ):
        doc = _vehicle(f"ABC1D{n:02d}", status, group, f"T{n}")
        response = await client.post("/api/v1/entities/vehicle", json=doc, headers=auth())
        assert response.status == 201, await response.text()
        made.append((await response.json())["id"])

    async def listed(query: str) -> tuple[list[str], str | None]:
        response = await client.get(f"/api/v1/entities/vehicle?{query}", headers=auth())
        assert response.status == 200, await response.text()
        body = await response.json()
        return [item["id"] for item in body["items"]], body["next_cursor"]

    query_plans.plans.clear()  # what the creates planned is not the question here
    assert (await listed("status=active&group=north"))[0] == [made[0], made[3]]
    assert (await listed("plate=ABC1D03&status=active"))[0] == [made[3]]
    first, cursor = await listed("status=active&limit=1")
    assert first == [made[0]] and cursor is not None
    assert (await listed(f"status=active&limit=2&cursor={cursor}"))[0] == [made[1], made[3]]
    store = client.server.app[services_key].store.entities
    found = await store.find(
        "acme", "vehicle", {"attributes.tracker_id": "T2"}, after=None, limit=5
    )
    assert [str(doc["_id"]) for doc in found] == [made[2]]
    excluded = await store.find(
        "acme", "vehicle", {"group": "north"}, after=None, limit=5, excluding={"status": "inactive"}
    )
    assert [str(doc["_id"]) for doc in excluded] == [made[0], made[3]]

    assert query_plans.of("entities")
    assert _wide(query_plans.of("entities")) == []


async def test_entity_crud_by_id_reads_one_document(
    query_plans: PlanListener, client: Client
) -> None:
    """Create, read, patch and delete an entity by id through HTTP: every query on the
    entities and the events is a point lookup or an index's range, none a scan."""
    query_plans.plans.clear()  # the start's (its key check samples every collection once)
    vehicle = await create_vehicle(client)
    url = f"/api/v1/entities/vehicle/{vehicle['id']}"
    assert (await client.get(url, headers=auth())).status == 200
    patched = await client.patch(url, json={"odometer_km": 9}, headers=auth())
    assert patched.status == 200, await patched.text()
    assert (
        await client.get(f"/api/v1/events?entity_id={vehicle['id']}", headers=auth())
    ).status == 200
    assert (await client.delete(url, headers=auth())).status == 204
    assert (await client.get(url, headers=auth())).status == 404
    await client.app[services_key].relay.run_until_idle()

    assert query_plans.of("entities") and query_plans.of("events")
    assert _wide(list(query_plans.plans.values())) == []


async def test_a_trigger_call_and_the_fold_of_its_fixes_read_no_collection_whole(
    query_plans: PlanListener, client: Client
) -> None:
    """An entity upserted by a trigger's POST, then fixes sent to a position trigger that
    finds their vehicle by its tracker id (a partner id: the lookup reads the entities that
    hold more ids than the index keeps, too), and the fold of them into the vehicle."""
    entity_trigger = await create_trigger(client)
    position_trigger = await create_position_trigger(client)
    query_plans.plans.clear()  # the start's (its key check samples every collection once)
    for odometer in (10, 11):
        sent = {**VEHICLE, "odometer_km": odometer, "attributes": {"tracker_id": "dev-42"}}
        status, body = await hook(client, entity_trigger, sent)
        assert status in (200, 201), body
    for n in range(3):
        fix = {"tracker_id": "dev-42", "time": f"2026-12-01T12:00:0{n}Z", "lat": 1.5, "lon": 2.5}
        status, body = await hook(client, position_trigger, fix)
        assert status == 201, body
    services = client.app[services_key]
    await services.fold.run_until_idle()
    await services.relay.run_until_idle()

    assert query_plans.of("entities") and query_plans.of("fleet_inbox") and query_plans.of("fleet")
    assert _wide(list(query_plans.plans.values())) == []


async def test_a_flows_run_and_its_steps_read_no_collection_whole(
    query_plans: PlanListener, client: Client, partner: Partner
) -> None:
    """A fine stored by a trigger starts a flow; its run fetches from HR (a step) and ends."""
    await hr_lookup(client, partner.url)
    partner.respond_with(200, sample("driver_lookup_response.json"))
    fines = await trigger_for(client, "fine-feed", kind="fine")
    flow = {
        "name": "lookup",
        "on": {"events": ["fine.received"]},
        "steps": [
            {"id": "hr", "fetch": "hr-driver-lookup"},
            {"id": "reachable", "when": "steps.hr.email"},
        ],
    }
    response = await client.post("/api/v1/flows", json=flow, headers=auth())
    assert response.status == 201, await response.text()
    query_plans.plans.clear()  # the start's and the uploads'
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])
    runs = await client.get("/api/v1/flows/lookup/runs", headers=auth())
    [run] = (await runs.json())["items"]
    assert run["status"] == "succeeded" and len(partner.requests) == 1

    assert query_plans.of("flow_runs")
    assert _wide(list(query_plans.plans.values())) == []


async def test_a_delivery_claimed_sent_failed_and_replayed_by_id_reads_no_collection_whole(
    query_plans: PlanListener, client: Client, partner: Partner
) -> None:
    """The relay, the delivery worker's claim and its record of each attempt, and an admin's
    replay of the dead delivery by id."""
    query_plans.plans.clear()  # the start's (its key check samples every collection once)
    worker = client.app[services_key].delivery_worker
    worker.clock = clock = FakeClock()
    worker.rng = lambda: 0.5
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"], retry_schedule=[1])
    await create_subscription(client, action["id"])
    vehicle = await create_vehicle(client)
    partner.respond_with(503, {})
    patched = await client.patch(
        f"/api/v1/entities/vehicle/{vehicle['id']}", json={"odometer_km": 5}, headers=auth()
    )
    assert patched.status == 200
    await client.app[services_key].relay.run_until_idle()
    counts = await worker.run_until_idle()
    clock.advance(1.1)
    counts += await worker.run_until_idle()
    listed = await client.get("/api/v1/deliveries?status=dead", headers=auth())
    [dead] = (await listed.json())["items"]
    partner.respond_with(200, {})
    replay = await client.post(f"/api/v1/deliveries/{dead['id']}/replay", headers=auth())
    assert replay.status == 200, await replay.text()
    counts += await worker.run_until_idle()

    assert counts == Counter(retry=1, dead=1, succeeded=1)
    assert query_plans.of("deliveries")
    assert _wide(list(query_plans.plans.values())) == []


async def test_a_rejected_payloads_replay_claims_it_by_id(
    query_plans: PlanListener, client: Client
) -> None:
    """A payload the trigger refused, replayed by id and then with the rest of its trigger's:
    the claims read the records named, not every tenant's rejected payloads. (The writes
    that keep a trigger's rejections read the tenant's: bounded, `MAX_PER_TRIGGER` each.)"""
    trigger = await create_trigger(client)
    for make in ("Fiat", "VW", "Ford"):
        status, _ = await hook(client, trigger, {"make": make})  # no plate: refused
        assert status == 422
    listed = await client.get(f"/api/v1/rejected?trigger_id={trigger['id']}", headers=auth())
    first, *_ = (await listed.json())["items"]
    query_plans.plans.clear()
    one = await client.post(f"/api/v1/rejected/{first['id']}/replay", headers=auth())
    assert one.status == 422  # still no plate: it stays pending
    every = await client.post(
        "/api/v1/rejected/replay", json={"trigger_id": trigger["id"]}, headers=auth()
    )
    assert every.status == 200, await every.text()
    assert (await every.json())["failed"] == 3

    claims = [p for p in query_plans.of("rejected") if p.command == "update"]
    assert claims
    assert [p.shape for p in query_plans.of("rejected") if p.scans] == []


async def test_a_refused_payload_sent_again_counts_its_copies_through_their_index(
    query_plans: PlanListener, client: Client
) -> None:
    """A refused payload is kept; the same payload refused again counts on from its earlier
    copy and supersedes it: both read the trigger's copies of that payload (the `copies`
    index), not every rejected payload of the tenant."""
    trigger = await create_trigger(client)
    other = await create_trigger(client, name="other")
    await hook(client, other, {"make": "Ford"})  # another trigger's: not read
    query_plans.plans.clear()
    for _ in range(3):
        status, _ = await hook(client, trigger, {"make": "Fiat"})  # no plate: refused
        assert status == 422
    listed = await client.get(f"/api/v1/rejected?trigger_id={trigger['id']}", headers=auth())
    [kept] = (await listed.json())["items"]
    assert kept["times_received"] == 3

    writes = [p for p in query_plans.of("rejected") if "payload_sha256" in p.shape]
    assert writes
    assert [f"{p.shape} via {p.via}" for p in writes if p.scans or p.reads_the_tenant] == []


async def test_a_notify_steps_check_for_numbered_messages_reads_its_own_deliveries(
    query_plans: PlanListener, services: Services
) -> None:
    """A notify step asks whether the version before address ids queued its messages
    (`<run>:<step>:<n>`): the step's range of ids, not every delivery of the tenant."""
    deliveries = services.store.deliveries
    run = "6b16598244427528a012bb98:aviso"
    docs = [
        {"_id": f"{run}:tell:{'ab' * 8}", "tenant": "acme"},  # an address id's
        {"_id": f"{run}:tell9:0", "tenant": "acme"},  # another step's, numbered
        {"_id": f"{run}:tel:0", "tenant": "acme"},
        {"_id": f"{run}:later:3", "tenant": "acme"},
        {"_id": f"{run}:later:0", "tenant": "beta"},
    ]
    await deliveries.insert_many(docs)
    query_plans.plans.clear()
    assert not await deliveries.numbered_exist("acme", f"{run}:tell:")
    assert await deliveries.numbered_exist("acme", f"{run}:later:")
    assert not await deliveries.numbered_exist("acme", f"{run}:tel9:")
    assert not await deliveries.numbered_exist("beta", f"{run}:tell:")

    [plan] = query_plans.of("deliveries")
    assert (plan.stage, plan.index, plan.via) == ("IXSCAN", "by_tenant", None)


async def test_an_entitys_events_of_one_type_are_read_through_its_index(
    query_plans: PlanListener, client: Client
) -> None:
    """`GET /api/v1/events?entity_id=…&type=…`: the entity's events (`by_entity`), the type
    picked among them, not every event of the tenant."""
    vehicle = await create_vehicle(client)
    other = await create_vehicle(client, plate="XYZ9A88")
    url = f"/api/v1/entities/vehicle/{vehicle['id']}"
    for km in (5, 6):
        patched = await client.patch(url, json={"odometer_km": km}, headers=auth())
        assert patched.status == 200
    services = client.app[services_key]
    await services.relay.run_until_idle()
    query_plans.plans.clear()
    wanted = f"/api/v1/events?entity_id={vehicle['id']}&type=entity.updated&limit=1"
    first = await (await client.get(wanted, headers=auth())).json()
    [newest] = first["items"]
    assert newest["type"] == "entity.updated" and newest["entity"]["id"] == vehicle["id"]
    rest = await client.get(f"{wanted}&cursor={first['next_cursor']}", headers=auth())
    [older] = (await rest.json())["items"]
    assert older["type"] == "entity.updated" and older["id"] < newest["id"]
    none = f"/api/v1/events?entity_id={other['id']}&type=entity.updated"
    assert (await (await client.get(none, headers=auth())).json())["items"] == []

    assert query_plans.of("events")
    assert _wide(query_plans.of("events")) == []


async def test_an_entity_of_a_custom_kind_marks_its_kind_without_reading_every_kind(
    query_plans: PlanListener, client: Client
) -> None:
    """A write of an entity of a tenant's kind marks the kind as being written, unless it is
    being deleted, and a deletion marks it: a filter without an operator at its top, and an
    update then a read, not a `find_one_and_update` (SecantusDB writes it with an operator at
    its filter's top): not matched against every tenant's kinds."""
    kind = {
        "name": "tyre",
        "schema": {"type": "object", "properties": {"serial": {"type": "string"}}},
    }
    response = await client.post("/api/v1/kinds", json=kind, headers=auth())
    assert response.status == 201, await response.text()
    query_plans.plans.clear()
    tyre = {"kind": "tyre", "key": "T-1", "serial": "T-1"}
    created = await client.post("/api/v1/entities/other", json=tyre, headers=auth())
    assert created.status == 201, await created.text()
    deleted = await client.delete("/api/v1/kinds/tyre", headers=auth())
    assert deleted.status == 409  # an entity of it is stored

    assert [p for p in query_plans.of("kinds") if p.command == "update"]
    assert [f"{p.shape} ({p.sent_by})" for p in query_plans.of("kinds") if p.scans] == []


async def test_a_triggers_rejected_payloads_of_one_status_are_read_through_its_index(
    query_plans: PlanListener, client: Client
) -> None:
    """`GET /api/v1/rejected?trigger_id=…&status=…` (the UI's rejected page filtered by both
    reads the same): the trigger's records in windows of `by_trigger`, the status picked among them,
    not every rejected payload of the tenant."""
    trigger = await create_trigger(client)
    other = await create_trigger(client, name="other")
    for make in ("Fiat", "VW", "Ford"):
        status, _ = await hook(client, trigger, {"make": make})  # no plate: refused
        assert status == 422
    await hook(client, other, {"make": "Opel"})  # another trigger's: not listed
    listed = await client.get(f"/api/v1/rejected?trigger_id={trigger['id']}", headers=auth())
    newest, middle, oldest = (await listed.json())["items"]
    replay = await client.post(f"/api/v1/rejected/{middle['id']}/replay", headers=auth())
    assert replay.status == 422  # still no plate: still pending
    query_plans.plans.clear()
    url = f"/api/v1/rejected?trigger_id={trigger['id']}&status=pending&limit=2"
    first = await (await client.get(url, headers=auth())).json()
    assert [item["id"] for item in first["items"]] == [newest["id"], middle["id"]]
    rest = await client.get(f"{url}&cursor={first['next_cursor']}", headers=auth())
    assert [item["id"] for item in (await rest.json())["items"]] == [oldest["id"]]
    none = f"/api/v1/rejected?trigger_id={trigger['id']}&status=replayed"
    assert (await (await client.get(none, headers=auth())).json())["items"] == []

    assert query_plans.of("rejected")
    assert _wide(query_plans.of("rejected")) == []


async def test_a_round_that_reads_back_what_it_stored_reads_its_vehicles_range_only(
    query_plans: PlanListener, services: Services
) -> None:
    """A round of fixes whose insert's answer was lost reads back which of them it stored
    (`_stored_of`, by its number): each vehicle's range of fix ids (`track`), the number
    checked on what that read, not every fix of the tenant (sent with the range, SecantusDB
    read the tenant's whole positions)."""
    await round_with_a_lost_answer(services, before=query_plans.plans.clear)

    assert [p for p in query_plans.of("positions") if p.command == "find"]
    assert _wide(query_plans.of("positions")) == []


async def test_a_replay_of_every_pending_payload_reads_the_pending_ones_not_the_tenants(
    query_plans: PlanListener, client: Client
) -> None:
    """`POST /api/v1/rejected/replay` (a trigger's, the tenant's) lists the pending,
    replayable payloads oldest first: read through the trigger's records (`by_trigger`), or
    the tenant's pending ones (`by_status`), the rest matched after; not every rejected
    payload of the tenant."""
    trigger = await create_trigger(client)
    other = await create_trigger(client, name="other")
    for make in ("Fiat", "VW"):
        status, _ = await hook(client, trigger, {"make": make})  # no plate: refused
        assert status == 422
    await hook(client, other, {"make": "Opel"})
    query_plans.plans.clear()
    mine = await client.post(
        "/api/v1/rejected/replay", json={"trigger_id": trigger["id"]}, headers=auth()
    )
    assert mine.status == 200, await mine.text()
    assert (await mine.json())["failed"] == 2
    every = await client.post("/api/v1/rejected/replay", json={}, headers=auth())
    assert every.status == 200, await every.text()
    assert (await every.json())["failed"] == 3

    listed = [p for p in query_plans.of("rejected") if p.sent_by and p.sent_by.endswith(" list")]
    assert listed
    assert _wide(listed) == []


async def test_the_dashboards_unhealthy_partners_are_read_from_the_tenants_own(
    query_plans: PlanListener, client: Client
) -> None:
    """The admin UI's dashboard (each view) lists the tenant's disabled and failing partners:
    read from the tenant's partners (`by_tenant`), not matched against every tenant's (an
    `$or` at the filter's top)."""
    made = [
        await create_partner(client, "http://127.0.0.1:9/", name=name)
        for name in ("Off", "Failing", "Fine")
    ]
    partners = client.app[services_key].store.db["partners"]
    off, failing, _ = (ObjectId(doc["id"]) for doc in made)
    await partners.update_one({"_id": off}, {"$set": {"status": "disabled"}})
    await partners.update_one({"_id": failing}, {"$set": {"failing_since": datetime.now(UTC)}})
    await partners.insert_one(
        {"tenant": "beta", "name": "Theirs", "status": "disabled", "base_url": "http://x/"}
    )
    query_plans.plans.clear()
    view = await client.app[services_key].dashboard.view("acme")
    assert [(p.name, p.status) for p in view.partners] == [
        ("Failing", "failing"),
        ("Off", "disabled"),
    ]

    assert query_plans.of("partners")
    assert [f"{p.shape} ({p.sent_by})" for p in query_plans.of("partners") if p.scans] == []


async def test_the_mappings_naming_a_kind_are_looked_for_among_the_tenants_own(
    query_plans: PlanListener, services: Services
) -> None:
    """A kind's deletion or replacement asks which active mappings name it, as their own
    kind or an `also` target's (`active_of_kind`): one query per place, each the tenant's
    mapping versions, not every tenant's matched (an `$or` at the filter's top)."""
    db = services.store.db
    heads = [
        {"tenant": "acme", "name": "own", "active_version": 2, "direction": "inbound"},
        {"tenant": "acme", "name": "also", "active_version": 1, "direction": "inbound"},
        {"tenant": "acme", "name": "both", "active_version": 1, "direction": "inbound"},
        {"tenant": "beta", "name": "theirs", "active_version": 1, "direction": "inbound"},
    ]
    await db["mapping_heads"].insert_many(heads)
    await db["mappings"].insert_many(
        [
            {"tenant": "acme", "name": "own", "version": 1, "document": {"kind": "tyre"}},
            {"tenant": "acme", "name": "own", "version": 2, "document": {"kind": "tyre"}},
            {"tenant": "acme", "name": "also", "version": 1,
             "document": {"kind": "vehicle", "also": [{"kind": "tyre"}]}},
            {"tenant": "acme", "name": "both", "version": 1,
             "document": {"kind": "tyre", "also": [{"kind": "tyre"}]}},
            {"tenant": "acme", "name": "other", "version": 1, "document": {"kind": "vehicle"}},
            {"tenant": "beta", "name": "theirs", "version": 1, "document": {"kind": "tyre"}},
        ]
    )  # fmt: skip
    query_plans.plans.clear()
    found = [
        (doc["name"], doc["version"])
        async for doc in services.store.mappings.active_of_kind("acme", "tyre")
    ]
    assert found == [("also", 1), ("both", 1), ("own", 2)]

    assert query_plans.of("mappings")
    assert [f"{p.shape} ({p.sent_by})" for p in query_plans.of("mappings") if p.scans] == []


async def test_the_users_of_a_mapping_are_looked_for_among_the_tenants_own(
    query_plans: PlanListener, services: Services
) -> None:
    """A mapping's page (its "used by"), its upload's check and its deletion ask which
    triggers, actions and schedules name it: one query per field naming a mapping, each the
    tenant's documents, not every tenant's matched (an `$or` at the filter's top)."""
    db = services.store.db
    triggers = [
        {"tenant": "acme", "name": "a", "mapping": "m"},
        {"tenant": "acme", "name": "b", "response_mapping": "m"},
        {"tenant": "acme", "name": "c", "mapping": "m", "response_mapping": "m"},
        {"tenant": "acme", "name": "d", "mapping": "other"},
        {"tenant": "beta", "name": "e", "mapping": "m"},
    ]
    await db["triggers"].insert_many(triggers)
    await db["actions"].insert_one({"tenant": "acme", "name": "f", "response_mapping": "m"})
    await db["schedules"].insert_one({"tenant": "acme", "name": "g", "mapping": "m"})
    query_plans.plans.clear()
    users = await services.store.mappings.users("acme", "m")
    assert [(u["kind"], u["name"], u["fields"]) for u in users] == [
        ("trigger", "a", ["mapping"]),
        ("trigger", "b", ["response_mapping"]),
        ("trigger", "c", ["mapping", "response_mapping"]),
        ("action", "f", ["response_mapping"]),
        ("schedule", "g", ["mapping"]),
    ]

    read = [p for c in ("triggers", "actions", "schedules") for p in query_plans.of(c)]
    assert read
    assert [f"{p.collection} {p.shape}" for p in read if p.scans] == []


async def test_a_notifications_cooldown_claims_read_only_their_own_key(
    query_plans: PlanListener, services: Services
) -> None:
    """Every alert sent under a cooldown claims its key (`CooldownStore.claim`, or `claim_at`
    judged on the condition's time): a read of that one document and a write guarded on what
    was read, not a filter with an `$or` or `$and` in it, which the embedded database matches
    against every tenant's cooldowns."""
    cooldowns = services.store.notify.cooldowns
    now = datetime.now(UTC).replace(microsecond=0)
    wait = timedelta(hours=1)
    for tenant in ("acme", "beta"):  # other tenants' cooldowns, not ended yet
        assert await cooldowns.claim(tenant, "other", now, now - wait, now + wait) is None
    query_plans.plans.clear()
    assert await cooldowns.claim("acme", "g", now, now - wait, now + wait, by="r1") is None
    assert await cooldowns.claim("acme", "g", now, now - wait, now + wait, by="r1") is None
    assert await cooldowns.claim("acme", "g", now, now - wait, now + wait, by="r2") == now
    later = now + 2 * wait
    assert await cooldowns.claim("acme", "g", later, later - wait, later + wait) is None
    crossing = now - 6 * wait
    assert await cooldowns.claim_at("acme", "c", crossing, wait, now, by="r1") is None
    assert await cooldowns.claim_at("acme", "c", crossing, wait, now, by="r1") is None
    assert await cooldowns.claim_at("acme", "c", crossing, wait, now, by="r2") == crossing
    assert await cooldowns.claim_at("acme", "g", crossing, wait, now, by="r3") is None

    plans = query_plans.of("notify_cooldowns")
    assert plans
    assert [f"{p.shape} ({p.sent_by}): {p.stage} via {p.via}" for p in plans if p.scans] == []


async def test_a_triggers_deletion_reads_none_of_every_tenants_replay_records(
    query_plans: PlanListener, client: Client
) -> None:
    """A trigger's deletion leaves its idempotency records and signature memory to expire
    (24 h, 30 days): no call reaches them once its id is gone. Cleared by their `trigger_id`
    (no index), every tenant's records were read (SecantusDB reads a range of `_id` whole
    too)."""
    gone = await create_trigger(client)
    for n in range(2):
        sent = {**VEHICLE, "plate": f"ABC1D{n}0"}
        status, body = await hook(client, gone, sent, headers={"Idempotency-Key": f"k{n}"})
        assert status in (200, 201), body
    await client.app[services_key].store.signature_memory.remember(
        "acme", gone["id"], "sig", datetime.now(UTC)
    )
    query_plans.plans.clear()
    deleted = await client.delete(f"/api/v1/triggers/{gone['id']}", headers=auth())
    assert deleted.status == 204, await deleted.text()
    plans = query_plans.of("idempotency") + query_plans.of("signature_memory")

    again = {"Idempotency-Key": "k0"}
    status, _ = await hook(client, gone, {**VEHICLE, "plate": "ABC1D00"}, headers=again)
    assert status == 401  # the kept answer is no one's any more
    assert [f"{p.collection} {p.shape} ({p.sent_by})" for p in plans] == []


async def test_a_heads_publish_reads_its_own_head_not_every_tenants(
    query_plans: PlanListener, services: Services
) -> None:
    """A mapping's or flow's upload publishes its version on the head (`publish`): shown
    while none is active, made active unless a newer one is. The head is read by its name
    and written by its `_id`, guarded on the active version read: with an `$or` in the
    filter, SecantusDB matched every tenant's heads (663 ms at 1,000 tenants of 20)."""
    store = services.store
    for heads, collection in (
        (store.mappings, "mapping_heads"),
        (store.notify.flows, "flow_heads"),
    ):
        await store.db[collection].insert_many(
            [
                {"tenant": "beta", "name": "m", "active_version": 1, "direction": "flow"},
                {"tenant": "acme", "name": "staged", "direction": "flow"},
                {"tenant": "acme", "name": "m", "active_version": None, "direction": "flow"},
            ]
        )
        query_plans.plans.clear()
        shown = {"direction": "inbound", "entity_type": "vehicle"}
        await heads.publish("acme", "staged", **shown, active_version=None, deletions=None)
        await heads.publish("acme", "m", **shown, active_version=3, deletions=None)
        outbound = {"direction": "outbound", "entity_type": None}
        older, staged = (2, None)  # neither shown: a newer one is active
        await heads.publish("acme", "m", **outbound, active_version=older, deletions=None)
        await heads.publish("acme", "m", **outbound, active_version=staged, deletions=None)
        await heads.publish("acme", "m", **shown, active_version=4, deletions=None)
        plans = query_plans.of(collection)

        found = {
            (doc["tenant"], doc["name"]): (doc.get("active_version"), doc["direction"])
            async for doc in store.db[collection].find({}, {"_id": 0})
        }
        assert found == {
            ("beta", "m"): (1, "flow"),
            ("acme", "staged"): (None, "inbound"),
            ("acme", "m"): (4, "inbound"),
        }
        assert plans
        assert [f"{p.shape} ({p.sent_by})" for p in plans if p.scans] == []


async def test_a_write_taking_its_turn_reads_its_entity_not_every_one(
    query_plans: PlanListener, client: Client
) -> None:
    """A write that lost rounds takes its turn (`EntityStore.take_turn`: the entity's
    revision moved on as it is read): an update and a read of the entity, not a
    `find_one_and_update`, whose write SecantusDB matches against every entity of every
    tenant (an operator at its filter's top)."""
    vehicle = await create_vehicle(client)
    entities = client.app[services_key].store.entities
    stored = await entities.get("acme", "vehicle", nk=vehicle["plate"])
    assert stored is not None
    query_plans.plans.clear()
    taken = await entities.take_turn("acme", "vehicle", vehicle["plate"])
    assert taken is not None and taken["rev"] == stored["rev"] + 1
    assert await entities.take_turn("acme", "vehicle", "ZZZ9Z99") is None

    assert query_plans.of("entities")
    assert _wide(query_plans.of("entities")) == []


async def test_an_admins_edit_of_a_resource_writes_and_reads_it_by_id(
    query_plans: PlanListener, client: Client
) -> None:
    """A PATCH of a trigger, a partner, an action, a subscription or a geofence (guarded by
    the revision read: `TenantResources.update`, `TriggerStore.update`): an update and a read
    by `_id`, not a `find_one_and_update`, whose write SecantusDB matches against every
    tenant's documents."""
    partner_doc = await create_partner(client, "http://127.0.0.1:9/")
    action = await create_action(client, partner_doc["id"])
    subscription = await create_subscription(client, action["id"])
    circle = {"lat": -23.5, "lon": -46.6, "radius_m": 300}
    fence = {"name": "pátio", "kind": "authorized", "circle": circle}
    made = await client.post("/api/v1/geofences", json=fence, headers=auth())
    geofence = await made.json()
    trigger = await create_trigger(client)
    query_plans.plans.clear()
    for path, change in (
        (f"/api/v1/triggers/{trigger['id']}", {"methods": ["GET", "POST"]}),
        (f"/api/v1/partners/{partner_doc['id']}", {"timeout_seconds": 5}),
        (f"/api/v1/actions/{action['id']}", {"path": "/b"}),
        (f"/api/v1/subscriptions/{subscription['id']}", {"event_types": ["entity.created"]}),
        (f"/api/v1/geofences/{geofence['id']}", {"margin_m": 20}),
    ):
        patched = await client.patch(path, json=change, headers=auth())
        assert patched.status == 200, await patched.text()
        body = await patched.json()
        assert {key: body[key] for key in change} == change, path  # the document after

    written = ("triggers", "partners", "actions", "subscriptions", "geofences")
    plans = [p for c in written for p in query_plans.of(c)]
    assert [f"{p.collection} {p.shape} ({p.sent_by})" for p in plans if p.scans] == []
    assert [p for p in plans if p.command == "update"]


async def test_a_schedule_runners_claim_reads_the_schedule_it_claims(
    query_plans: PlanListener, services: Services
) -> None:
    """The schedule runner claims each due schedule it takes (`ScheduleStore.claim_due`): an
    update by its `_id` and a read of it, not a `find_one_and_update` (SecantusDB matched its
    write against every tenant's schedules) nor a filter led by `status` (every active
    schedule)."""
    now = datetime.now(UTC)
    due = {"status": "active", "next_run_at": now - timedelta(minutes=1), "lease_until": now}
    await services.store.db["schedules"].insert_many(
        [
            {"tenant": "acme", "name": "a", **due},
            {"tenant": "beta", "name": "b", **due},
            {"tenant": "acme", "name": "later", **due, "next_run_at": now + timedelta(hours=1)},
        ]
    )
    query_plans.plans.clear()
    claimed = await services.store.schedules.claim_due("r1", now, now + timedelta(minutes=1), 5)
    assert sorted(doc["name"] for doc in claimed) == ["a", "b"]
    assert {doc["lease_owner"] for doc in claimed} == {"r1"}
    assert await services.store.schedules.claim_due("r2", now, now + timedelta(minutes=1), 5) == []

    writes = [p for p in query_plans.of("schedules") if p.command in ("update", "findAndModify")]
    assert writes
    assert [f"{p.shape} ({p.sent_by}): {p.stage} via {p.via}" for p in writes if p.scans] == []
    assert [p.shape for p in writes if p.via == "status"] == []


async def test_a_driver_changes_withdrawal_reads_and_deletes_it_by_id(
    query_plans: PlanListener, services: Services
) -> None:
    """A report taken back removes the change it recorded (`AssignmentStore.remove`): a read
    and a delete guarded by `_id`, not a `find_one_and_delete`, whose write SecantusDB
    matches against every change of every tenant (the driver history grows with time)."""
    store = services.notify.assignments._store
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    driver = {"id": "a", "cpf": "00000000000", "name": "Ana"}
    said = {"source": "checklist", "ref": "c1"}
    for tenant in ("acme", "beta"):
        change = {"start": at, "driver": driver, **said, "author": "app"}
        assert (await store.record(tenant, "v1", change)).written
    query_plans.plans.clear()
    removed = await store.remove("acme", f"acme:v1:{at:%Y-%m-%dT%H:%M:%S.%f}Z", said)
    assert removed is not None and removed["tenant"] == "acme"

    assert query_plans.of("driver_assignments")
    assert _wide(query_plans.of("driver_assignments")) == []


async def test_a_partners_health_marks_and_probe_claim_write_it_by_id(
    query_plans: PlanListener, services: Services
) -> None:
    """A partner's failure noted (every failed call of every process), its re-enable and a
    probe's claim (`PartnerStore.note_failure`, `enable`, `claim_probe`): updates by `_id`
    and reads of it, not `find_one_and_update`s, whose write SecantusDB matches against every
    tenant's partners."""
    now = datetime.now(UTC)
    partners = services.store.partners
    ids = [ObjectId(), ObjectId()]
    await services.store.db["partners"].insert_many(
        [
            {"_id": ids[0], "tenant": "acme", "name": "erp", "status": "active", "rev": 1},
            {"_id": ids[1], "tenant": "beta", "name": "crm", "status": "active", "rev": 1},
        ]
    )
    query_plans.plans.clear()
    noted = await partners.note_failure("acme", str(ids[0]), now)
    assert noted is not None and noted["failing_since"] is not None
    since = noted["failing_since"]
    assert await partners.disable("acme", str(ids[0]), now, now, failing_since=since)
    claimed = await partners.claim_probe(now, now + timedelta(minutes=1), lambda doc: True)
    assert claimed is not None and claimed["_id"] == ids[0]
    assert await partners.claim_probe(now, now + timedelta(minutes=1), lambda doc: True) is None
    assert (await partners.enable("acme", str(ids[0]))) is not None
    assert await partners.enable("acme", str(ids[0])) is None  # active already

    plans = query_plans.of("partners")
    assert [p for p in plans if p.command == "update"]
    assert [f"{p.command} {p.shape} ({p.sent_by})" for p in plans if p.scans] == []


async def test_a_schedules_pause_resume_and_run_now_write_it_by_id(
    query_plans: PlanListener, services: Services
) -> None:
    """An admin's pause, resume or run-now of a schedule (`ScheduleStore.set_status`,
    `run_now`): an update by `_id` and a read of it, not a `find_one_and_update`, whose write
    SecantusDB matches against every tenant's schedules."""
    now = datetime.now(UTC)
    ids = [ObjectId(), ObjectId()]
    await services.store.db["schedules"].insert_many(
        [
            {"_id": ids[0], "tenant": "acme", "name": "a", "status": "active", "rev": 1},
            {"_id": ids[1], "tenant": "beta", "name": "b", "status": "active", "rev": 1},
        ]
    )
    schedules = services.store.schedules
    query_plans.plans.clear()
    paused = await schedules.set_status("acme", str(ids[0]), "paused", now)
    assert paused is not None and (paused["status"], paused["rev"]) == ("paused", 2)
    resumed = await schedules.set_status("acme", str(ids[0]), "active", now)
    assert resumed is not None and resumed["failures"] == 0
    assert (await schedules.run_now("acme", str(ids[0]), now)) is not None
    assert await schedules.run_now("acme", str(ids[1]), now) is None  # another tenant's

    plans = query_plans.of("schedules")
    assert [f"{p.command} {p.shape} ({p.sent_by})" for p in plans if p.scans] == []
    assert [p for p in plans if p.command == "update"]


async def test_a_tenants_notification_settings_are_written_and_read_by_id(
    query_plans: PlanListener, client: Client
) -> None:
    """A PUT of the tenant's notification settings (`SettingsStore.put`, made on the first):
    an upsert by `_id` and a read of it, not a `find_one_and_update`, whose write SecantusDB
    matches against every tenant's settings."""
    for tenant in ("acme", "beta"):
        body = {"cooldown_seconds": 600}
        response = await client.put(
            "/api/v1/notification-settings", json=body, headers=auth(tenant)
        )
        assert response.status == 200, await response.text()
        assert (await response.json())["cooldown_seconds"] == 600

    plans = query_plans.of("notify_settings")
    assert [f"{p.command} {p.shape} ({p.sent_by})" for p in plans if p.scans] == []
    assert [p for p in plans if p.command == "update"]


async def test_a_flows_pause_and_signing_and_an_actions_signing_write_them_guarded(
    query_plans: PlanListener, services: Services
) -> None:
    """A flow paused and resumed (`FlowStore.set_paused`), a flow's and an action's signing
    secret stored over the one read (`set_signing`): a guarded update then a read, not a
    `find_one_and_update`, whose write SecantusDB matches against every tenant's heads or
    actions."""
    db = services.store.db
    heads = [{"tenant": t, "name": "fines", "direction": "flow"} for t in ("acme", "beta")]
    await db["flow_heads"].insert_many(heads)
    action_ids = [ObjectId(), ObjectId()]
    await db["actions"].insert_many(
        [
            {"_id": i, "tenant": t, "name": "a", "rev": 1}
            for i, t in zip(action_ids, ("acme", "beta"), strict=True)
        ]
    )
    flows, actions = services.store.notify.flows, services.store.actions
    query_plans.plans.clear()
    paused = await flows.set_paused("acme", "fines", {"at": "now"})
    assert paused is not None and paused["paused"] == {"at": "now"}
    again = await flows.set_paused("acme", "fines", {"at": "later"})  # keeps its first note
    assert again is not None and again["paused"] == {"at": "now"}
    resumed = await flows.set_paused("acme", "fines", None, resumed={"skip": False})
    assert resumed is not None and "paused" not in resumed
    assert await flows.set_paused("acme", "nothing", {"at": "now"}) is None
    signed = await flows.set_signing("acme", "fines", {"rev": 1}, rev=None, listed=True)
    assert signed is not None and signed["signing"] == {"rev": 1}
    assert await flows.set_signing("acme", "fines", {"rev": 2}, rev=None, listed=True) is None
    stored = await actions.set_signing("acme", str(action_ids[0]), {"rev": 1}, rev=None)
    assert stored is not None and stored["signing"] == {"rev": 1}
    assert await actions.set_signing("acme", str(action_ids[0]), {"rev": 3}, rev=2) is None
    assert await actions.set_signing("acme", str(action_ids[1]), {"rev": 1}, rev=None) is None

    plans = query_plans.of("flow_heads") + query_plans.of("actions")
    assert [f"{p.command} {p.shape} ({p.sent_by})" for p in plans if p.scans] == []
    assert [p for p in plans if p.command == "update"]
    # a flow's head is read by its name alone and written by its `_id`: beside `name`,
    # `deleted: {$ne: true}` and `direction` had SecantusDB read the tenant's every head
    heads_read = query_plans.of("flow_heads")
    wide = [f"{p.command} {p.shape} ({p.sent_by})" for p in heads_read if p.reads_the_tenant]
    assert wide == []


async def test_a_mappings_upload_notes_itself_on_its_head_by_name(
    query_plans: PlanListener, services: Services
) -> None:
    """An upload notes itself under way on its head (`MappingStore.begin_upload`, made on a
    first upload): an upsert by name and a read, not a `find_one_and_update`, whose write
    SecantusDB matches against every tenant's heads; the earliest upload under way counts."""
    mappings = services.store.mappings
    await mappings.begin_upload("beta", "erp", 1)
    query_plans.plans.clear()
    first, since = await mappings.begin_upload("acme", "erp", 3)
    assert since == 3
    second, since = await mappings.begin_upload("acme", "erp", 4)
    assert since == 3  # the first is still under way
    await mappings.end_upload("acme", "erp", first)
    await mappings.end_upload("acme", "erp", second)
    assert (await mappings.begin_upload("acme", "erp", 5))[1] == 5

    plans = query_plans.of("mapping_heads")
    assert [f"{p.command} {p.shape} ({p.sent_by})" for p in plans if p.scans] == []
    assert [p for p in plans if p.command == "update"]


def _outbound(name: str, field: str = "placa") -> str:
    """An outbound mapping `name` whose body names the plate `field`."""
    return (
        f"name: {name}\ndirection: outbound\nentity_type: vehicle\n"
        f"body:\n  {field}: {{from: entity.plate}}\n"
    )


async def test_a_mappings_upload_activation_and_deletion_read_its_own_head_not_the_tenants(
    query_plans: PlanListener, services: Services
) -> None:
    """What an upload (a new name, a new version, the same text again), an activation, a
    roll back and a deletion read and write of `mapping_heads` is the mapping's own head: read
    by its name alone (the `name` index) and written by its `_id`. Beside `deleted: {$ne:
    true}`, `direction: {$exists: true}` or `latest_version: {$exists: false}` SecantusDB read
    the tenant's every head, and an upload at 300 mappings cost the database 74 ms of CPU
    against 30 ms at 10 (docs/benchmarks.md)."""
    mappings, heads = services.mappings, services.store.mappings
    for name in ("a", "b", "c"):
        await mappings.upload("acme", _outbound(name), author="t")
    await mappings.upload("beta", _outbound("erp"), author="t")
    await heads.begin_upload("acme", "staged", 0)  # a head no version was published on yet
    query_plans.plans.clear()

    assert (await mappings.upload("acme", _outbound("erp"), author="t")).version == 1
    staged = await mappings.upload("acme", _outbound("erp", "chassi"), author="t", activate=False)
    assert (staged.version, staged.created) == (2, True)
    again = await mappings.upload("acme", _outbound("erp", "chassi"), author="t")  # activated
    assert (again.version, again.created, again.active) == (2, False, True)
    assert (await mappings.rollback("acme", "erp")).version == 1
    assert (await mappings.activate("acme", "erp", 2)).version == 2
    await mappings.delete("acme", "b")

    assert await heads.head("acme", "staged") is None
    assert await heads.head("acme", "b") is None  # a tombstone
    assert not await heads.set_active("acme", "b", 1, {"direction": "outbound"})
    assert not await heads.delete("acme", "b")
    assert (await heads.head("acme", "erp") or {})["active_version"] == 2
    assert (await heads.head("beta", "erp") or {})["active_version"] == 1
    plans = query_plans.of("mapping_heads")
    assert plans
    wide = [f"{p.command} {p.shape} ({p.sent_by})" for p in plans if p.scans or p.reads_the_tenant]
    assert wide == []
    listed = await heads.heads("acme", after=None, limit=10)  # a list reads the tenant's
    assert [h["name"] for h in listed] == ["a", "c", "erp"]
