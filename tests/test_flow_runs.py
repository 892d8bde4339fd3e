"""Flow runs: started once per (event, flow), pinned to a version, steps recorded in order, a
fetch retried while its partner is down, a step repeated after a crash creating nothing twice,
the loop guard, and the runs API."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.fleet.odometer import TrackPoint
from gateway.web.state import services_key
from tests.flow_support import (
    drain,
    erp_actions,
    get,
    hr_lookup,
    sample,
    send_to,
    trigger_for,
    upload_flow,
)
from tests.partner_double import (
    FakeClock,
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
    post,
    running_partner,
    upload_mapping,
)
from tests.support import auth
from tests.test_fleet_fifth_look import create_plan
from tests.test_fleet_fold import append, make_vehicle
from tests.test_fleet_odometer import START

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]


async def _upload(client: Client, flow: dict[str, Any], status: int = 201) -> Any:
    response = await client.post("/api/v1/flows", json=flow, headers=auth())
    body = await response.json()
    assert response.status == status, body
    return body


def _lookup_flow(when: str | None = None, version_note: str = "") -> dict[str, Any]:
    """On a fine: ask HR who drove (a fetch), stop unless they have an e-mail."""
    on: dict[str, Any] = {"events": ["fine.received"]}
    if when:
        on["when"] = when
    return {
        "name": "lookup",
        "description": version_note,
        "on": on,
        "steps": [
            {"id": "hr", "fetch": "hr-driver-lookup"},
            {"id": "reachable", "when": "steps.hr.email"},
        ],
    }


async def _fines(client: Client, partner: Partner) -> dict[str, Any]:
    await hr_lookup(client, partner.url)
    partner.respond_with(200, sample("driver_lookup_response.json"))
    return await trigger_for(client, "fine-feed", kind="fine")


async def _runs(client: Client, flow: str = "lookup", query: str = "") -> list[dict[str, Any]]:
    return list((await get(client, f"/api/v1/flows/{flow}/runs{query}"))["items"])


async def test_each_event_starts_each_flow_once_even_when_relayed_again(
    client: Client, partner: Partner
) -> None:
    fines = await _fines(client, partner)
    await _upload(client, _lookup_flow())
    await send_to(client, fines, sample("fine_feed.json"))
    services = client.app[services_key]
    await services.relay.run_until_idle()
    # A relay that died after starting the runs, before draining, relays the batch again.
    events = await services.store.db["events"].find({"type": "fine.received"}).to_list(None)
    assert await services.flow_starter(events) == 0
    await drain(services)
    (run,) = await _runs(client)
    assert run["status"] == "succeeded" and len(partner.requests) == 1


async def test_on_when_and_the_filter_decide_which_events_start_a_run(
    client: Client, partner: Partner
) -> None:
    fines = await _fines(client, partner)
    await _upload(client, _lookup_flow(when="entity.amount_brl > `500`"))
    await send_to(client, fines, sample("fine_feed.json"))  # R$ 130.16
    await drain(client.app[services_key])
    assert await _runs(client) == [] and partner.requests == []


async def test_expressions_see_the_event_as_json_as_in_the_dry_run(
    client: Client, partner: Partner
) -> None:
    fines = await _fines(client, partner)
    await _upload(client, _lookup_flow(when="starts_with(event.occurred_at, '20')"))
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])
    (run,) = await _runs(client)
    assert run["status"] == "succeeded"


async def test_a_run_keeps_the_version_it_started_with(client: Client, partner: Partner) -> None:
    fines = await _fines(client, partner)
    await _upload(client, _lookup_flow(version_note="v1"))
    await send_to(client, fines, sample("fine_feed.json"))
    services = client.app[services_key]
    await services.relay.run_until_idle()  # started with v1, not run yet
    second = _lookup_flow(version_note="v2")
    second["steps"] = [{"id": "gate", "when": "`false`"}]
    await _upload(client, second)
    await drain(services)
    (run,) = await _runs(client)
    assert run["version"] == 1 and [s["id"] for s in run["steps"]] == ["hr", "reachable"]


async def test_a_fetch_waits_while_its_partner_is_down_then_goes_on(
    client: Client, partner: Partner
) -> None:
    fines = await _fines(client, partner)
    await _upload(client, _lookup_flow())
    partner.respond_with(503, {"erro": "manutenção"}, times=3)
    await send_to(client, fines, sample("fine_feed.json"))
    services = client.app[services_key]
    clock = FakeClock()
    services.flow_runner.clock = clock
    before = clock.now  # the clock runs with the real time: the tries are between these two
    await drain(services)  # the first try and its immediate retry (SPEC §5), at once
    after = clock.now

    (run,) = await _runs(client)
    assert run["status"] == "pending" and run["steps"] == []
    assert run["waits"] == {"step": "hr", "attempts": 2, "last_error": "HR: answered 503"}
    due = (await services.store.db["flow_runs"].find_one({"_id": run["id"]}))["next_attempt_at"]
    # 5 s ± 20% after the try (stored to the millisecond)
    assert due - before > timedelta(seconds=3.99) and due - after < timedelta(seconds=6.01)
    clock.advance(7)
    await drain(services)  # the third try: 503 again, then 5 min
    assert (await _runs(client))[0]["waits"]["attempts"] == 3
    clock.advance(400)
    await drain(services)
    (run,) = await _runs(client)
    assert run["status"] == "succeeded" and len(partner.requests) == 4


async def test_a_fetch_held_by_an_open_circuit_waits_for_the_probe_without_spending_a_try(
    client: Client, partner: Partner
) -> None:
    """Five failed calls open HR's circuit: the run's fetch is not sent, and waits for the
    probe with its tries untouched (it was counted as a try, heading for `failed`)."""
    fines = await _fines(client, partner)
    action = (await get(client, "/api/v1/actions"))["items"][0]
    partner.respond_with(503, {"erro": "manutenção"}, times=5)
    for _ in range(5):
        invoked = await client.post(
            f"/api/v1/actions/{action['id']}/invoke",
            json={"payload": {"entity": {"plate": "ABC1D23"}}},
            headers=auth(),
        )
        assert invoked.status == 502, await invoked.text()
    await _upload(client, _lookup_flow())
    await send_to(client, fines, sample("fine_feed.json"))
    services = client.app[services_key]
    clock = FakeClock()
    services.flow_runner.clock = clock
    services.guards.clock = lambda: clock.offset.total_seconds() + time.monotonic()
    await drain(services)

    (run,) = await _runs(client)
    assert run["status"] == "pending" and len(partner.requests) == 5
    assert run["waits"] == {
        "step": "hr",
        "attempts": 0,
        "last_error": "not sent: circuit open after repeated failures; probe in 30 s, "
        "retry in 30 s",
    }
    clock.advance(31)
    await drain(services)
    (run,) = await _runs(client)
    assert run["status"] == "succeeded" and len(partner.requests) == 6


async def test_a_fetch_from_a_disabled_partner_is_not_sent_and_waits_without_spending_a_try(
    client: Client, partner: Partner
) -> None:
    """As `invoke` answers 503 "is not called until it is enabled again": the fetch is held
    (until the partner's next probe; an admin's disabling plans none, so an hour), then
    goes once the partner is enabled."""
    fines = await _fines(client, partner)
    (hr,) = (await get(client, "/api/v1/partners"))["items"]
    where = f"/api/v1/partners/{hr['id']}"
    assert (await client.patch(where, headers=auth(), json={"status": "disabled"})).status == 200
    await _upload(client, _lookup_flow())
    await send_to(client, fines, sample("fine_feed.json"))
    services = client.app[services_key]
    clock = FakeClock()
    services.flow_runner.clock = clock
    await drain(services)

    (run,) = await _runs(client)
    assert run["status"] == "pending" and partner.requests == []
    assert run["waits"] == {
        "step": "hr",
        "attempts": 0,
        "last_error": "not sent: partner HR is disabled; it is not called until it is enabled "
        "again, retry in 3600 s",
    }
    assert (await client.patch(where, headers=auth(), json={"status": "active"})).status == 200
    clock.advance(3601)
    await drain(services)
    (run,) = await _runs(client)
    assert run["status"] == "succeeded" and len(partner.requests) == 1


@pytest.mark.parametrize(
    "uploaded_again", [False, True], ids=["deleted", "deleted and re-uploaded"]
)
async def test_a_flow_deleted_while_its_run_waits_does_not_go_on(
    client: Client, partner: Partner, uploaded_again: bool
) -> None:
    """Deleting a flow stops its automation: a run waiting for its partner fails at its next
    try instead of running the deleted flow's steps (the compiled flow was cached). Uploaded
    again under its name (a new version: the numbering goes on), the old runs stay stopped:
    the version they are pinned to is gone, even in the process that still has it compiled."""
    fines = await _fines(client, partner)
    flow = _lookup_flow()
    flow["steps"] = [
        {"id": "hr", "fetch": "hr-driver-lookup"},
        {"id": "driver", "set": {"fields": {"driver_cpf": "steps.hr.cpf"}}},
    ]
    await _upload(client, flow)
    partner.respond_with(503, {"erro": "manutenção"}, times=2)
    await send_to(client, fines, sample("fine_feed.json"))
    services = client.app[services_key]
    clock = FakeClock()
    services.flow_runner.clock = clock
    await drain(services)
    (waiting,) = await _runs(client)
    assert waiting["status"] == "pending"

    response = await client.delete("/api/v1/flows/lookup", headers=auth())
    assert response.status == 204
    if uploaded_again:
        flow["on"] = {"events": ["vehicle.geofence.entered"]}  # the new flow: another trigger
        await _upload(client, flow)
    clock.advance(7)
    await drain(services)
    run = await get(client, f"/api/v1/flow-runs/{waiting['id']}")
    assert run["status"] == "failed" and "lookup" in run["last_error"], run
    assert len(partner.requests) == 2  # the first try and its immediate retry, no more
    fine = await get(client, "/api/v1/entities/other/fine:261810:A123456789")
    assert "driver_cpf" not in fine


async def test_a_flow_deleted_while_a_step_is_in_flight_runs_no_further_step(
    client: Client, partner: Partner
) -> None:
    """Deletion was asked once, before a claimed run's first step: a run whose fetch was in
    flight when its flow was deleted went on through every later step (a pause is asked
    before every step). It fails before the next one."""
    hr = await create_partner(client, partner.url, name="HR")
    await create_action(client, hr["id"], name="slow", method="GET", path="/slow", mode="proxy")
    partner.respond_with(200, {"ok": True}, delay=1.0)
    on = {"events": ["entity.created"], "filter": {"origin": {"kind": ["admin"]}}}
    steps = [
        {"id": "ask", "fetch": "slow"},
        {"id": "tag", "set": {"fields": {"attributes.tagged": "`true`"}}},
    ]
    await _upload(client, {"name": "f", "on": on, "steps": steps})
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    services = client.app[services_key]
    await services.relay.run_until_idle()
    running = asyncio.create_task(services.flow_runner.run_until_idle())
    await partner.wait_for(1)  # the fetch is in flight
    response = await client.delete("/api/v1/flows/f", headers=auth())
    assert response.status == 204
    await running
    await drain(services)
    (run,) = await services.store.db["flow_runs"].find({}).to_list(None)
    assert run["status"] == "failed" and run["last_error"] == "flow 'f' has no version 1", run
    assert [(s["id"], s["outcome"]) for s in run["steps"]] == [
        ("ask", "answered"),
        (None, "failed"),
    ]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert "tagged" not in (vehicle.get("attributes") or {})
    # the deleted flow's runs are still listed, the failed ones by their status (FL5-8)
    listed = await get(client, "/api/v1/flows/f/runs?status=failed")
    assert [r["id"] for r in listed["items"]] == [run["_id"]]
    assert (await get(client, "/api/v1/flows/f/runs?status=succeeded"))["items"] == []
    never = await client.get("/api/v1/flows/g/runs", headers=auth())
    assert never.status == 404


async def test_a_fetch_the_partner_refuses_fails_the_run_with_the_reason(
    client: Client, partner: Partner
) -> None:
    fines = await _fines(client, partner)
    await _upload(client, _lookup_flow())
    partner.respond_with(404, {"erro": "veículo desconhecido"})
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])
    (run,) = await _runs(client, query="?status=failed")
    assert run["last_error"] == "HR: answered 404"
    assert run["steps"] == [
        {
            "id": "hr",
            "kind": "fetch",
            "outcome": "failed",
            "detail": "HR: answered 404",
            "at": run["steps"][0]["at"],
        }
    ]


async def test_a_step_repeated_after_a_crash_creates_nothing_twice(
    client: Client, partner: Partner
) -> None:
    """The set and the call ran, then the runner died before recording them: the run resumes
    at its first step without an outcome and repeats both; nothing changes twice and the ERP
    is called once (the call's delivery id is the run's and the step's)."""
    await erp_actions(client, partner.url)
    await upload_flow(client, "checklist-mileage-erp")
    checklists = await trigger_for(client, "checklist", kind="checklist")
    await post(
        client,
        "/api/v1/entities/vehicle",
        {"plate": "ABC1D23", "renavam": "86769597308", "odometer_km": 151000},
    )
    await post(client, "/api/v1/entities/driver", {"name": "Ana Souza", "cpf": "52998224725"})
    await send_to(client, checklists, sample("checklist_completed.json"))
    services = client.app[services_key]
    await drain(services)
    (run,) = await _runs(client, "checklist-mileage-erp")
    assert [s["outcome"] for s in run["steps"]] == ["written", "queued"]

    runs = services.store.db["flow_runs"]
    await runs.update_one(
        {"_id": run["id"]}, {"$set": {"status": "pending", "next_step": 0, "steps": []}}
    )
    await drain(services)
    (again,) = await _runs(client, "checklist-mileage-erp")
    assert [s["outcome"] for s in again["steps"]] == ["unchanged", "queued"]
    assert again["steps"][1]["delivery"] == run["steps"][1]["delivery"]
    assert [r.path for r in partner.requests] == ["/veiculos/quilometragem"]
    updates = await get(client, "/api/v1/events?type=entity.updated")
    by_flow = [e for e in updates["items"] if e["origin"]["kind"] == "flow"]
    assert len(by_flow) == 1
    assert by_flow[0]["origin"] == {
        "kind": "flow",
        "id": "checklist-mileage-erp",
        "run": run["id"],
        "depth": 1,
    }


async def test_events_of_a_chain_of_flows_three_deep_start_nothing(
    client: Client, partner: Partner
) -> None:
    await _fines(client, partner)
    await _upload(client, _lookup_flow())
    services = client.app[services_key]
    fine = sample("fine_feed.json")

    def event(n: int, depth: int | None) -> dict[str, Any]:
        origin = (
            {"kind": "trigger", "id": "t"} if depth is None else {"kind": "flow", "depth": depth}
        )
        return {
            "_id": f"65f00000000000000000000{n}",
            "tenant": "acme",
            "type": "fine.received",
            "occurred_at": "2026-11-19T09:00:00Z",
            "entity": {"type": "other", "id": f"e{n}", "key": "fine:A1", "rev": 1},
            "data": {"plate": fine["placa"], "occurred_at": "2026-11-18T16:45:00Z"},
            "changes": [],
            "origin": origin,
        }

    started = await services.flow_starter([event(1, None), event(2, 2), event(3, 3), event(4, 7)])
    assert started == 2
    ids = {r["_id"] for r in await services.store.db["flow_runs"].find().to_list(None)}
    assert ids == {"65f000000000000000000001:lookup", "65f000000000000000000002:lookup"}
    depths = await services.store.db["flow_runs"].find({}, {"depth": 1}).to_list(None)
    assert sorted(d["depth"] for d in depths) == [0, 2]


ANA, BRUNO = "52998224725", "11144477735"
WHO_MAPPING = "name: who\ndirection: outbound\nresponse:\n  cpf: {from: cpf}\n"


async def _who_drives(client: Client, name: str, url: str) -> None:
    """A partner's "who drives this vehicle now" (a GET answering `{"cpf": ...}`)."""
    partner_doc = await create_partner(client, url, name=name)
    await create_action(
        client,
        partner_doc["id"],
        name=f"{name}-who",
        method="GET",
        path="/who",
        mode="proxy",
        response_mapping="who",
    )


def _assigning_flow(name: str, source: str, after: list[str]) -> dict[str, Any]:
    """On a vehicle's update by one of `after`: ask `source` who drives it, and record it."""
    return {
        "name": name,
        "on": {
            "events": ["entity.updated"],
            "filter": {"entity_type": "vehicle", "origin": {"kind": after}},
        },
        "steps": [
            {
                "id": "w",
                "fetch": f"{source}-who",
                "assign": {"vehicle": "entity.plate", "driver": "steps.w.cpf", "source": source},
            }
        ],
    }


async def _runs_of(client: Client, flows: list[str]) -> list[Any]:
    return [r for f in flows for r in await _runs(client, f, "?limit=200")]


async def _chain_stopped(client: Client, flows: list[str], timeout: float = 30.0) -> list[Any]:
    """The flows' runs once the loop guard stopped an event and no run is under way, and a
    second more (a chain that never stops: its runs at the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = await (await client.get("/metrics")).text()
        if 'gateway_flow_runs_total{outcome="loop_guard"}' in metrics:
            runs = await _runs_of(client, flows)
            if not any(r["status"] in ("pending", "running") for r in runs):
                break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    return await _runs_of(client, flows)


async def test_flows_recording_drivers_on_vehicle_updates_stop_after_three_links(
    aiohttp_client: Any, make_app: Any
) -> None:
    """HR and the ERP disagree on who drives: a flow asks HR on every vehicle update but
    HR's own, one asks the ERP on HR's. Each records its answer, which updates the vehicle's
    `current_driver`: their events carried origin `hr`/`erp` with no depth, so one admin PATCH
    started them in turn at depth 0 for ever. Each assignment is a link of the chain now: the
    third stops it (the loop guard), whatever the flows say."""
    client = await aiohttp_client(make_app(run_workers=True))
    async with running_partner() as hr, running_partner() as erp:
        hr.respond_with(200, {"cpf": ANA})
        erp.respond_with(200, {"cpf": BRUNO})
        await upload_mapping(client, WHO_MAPPING)
        await _who_drives(client, "hr", hr.url)
        await _who_drives(client, "erp", erp.url)
        await post(client, "/api/v1/entities/driver", {"name": "Ana", "cpf": ANA})
        await post(client, "/api/v1/entities/driver", {"name": "Bruno", "cpf": BRUNO})
        await create_vehicle(client, "LOO1P00")
        await _upload(client, _assigning_flow("ask-hr", "hr", ["admin", "erp"]))
        await _upload(client, _assigning_flow("ask-erp", "erp", ["hr"]))

        patched = await client.patch(
            "/api/v1/entities/vehicle/LOO1P00", json={"status": "active"}, headers=auth()
        )
        assert patched.status == 200
        runs = await _chain_stopped(client, ["ask-hr", "ask-erp"])

        chain = sorted((r["depth"], r["id"].rpartition(":")[2], r["status"]) for r in runs)
        assert chain == [
            (0, "ask-hr", "succeeded"),
            (1, "ask-erp", "succeeded"),
            (2, "ask-hr", "succeeded"),
        ]
        assert (len(hr.requests), len(erp.requests)) == (2, 1)
        events = await get(client, "/api/v1/events?type=entity.updated&limit=100")
        origins = [
            {k: v for k, v in e["origin"].items() if k != "assignment"}  # the change's id
            for e in reversed(events["items"])
            if any(c["field"].startswith("current_driver") for c in e["changes"])
            and e["origin"]["assignment"]
        ]
        by_depth = {r["depth"] + 1: r["id"] for r in runs}
        assert origins == [
            {"kind": "hr", "id": by_depth[1], "run": by_depth[1], "depth": 1},
            {"kind": "erp", "id": by_depth[2], "run": by_depth[2], "depth": 2},
            {"kind": "hr", "id": by_depth[3], "run": by_depth[3], "depth": 3},
        ]
        metrics = await (await client.get("/metrics")).text()
        assert 'gateway_flow_runs_total{outcome="loop_guard"} 1.0' in metrics
        vehicle = await get(client, "/api/v1/entities/vehicle/LOO1P00")
        assert vehicle["current_driver"]["cpf"] == ANA


async def test_a_driver_change_a_flow_scheduled_ahead_is_a_link_of_its_chain_when_it_starts(
    aiohttp_client: Any, make_app: Any
) -> None:
    """HR answers a handover ahead: the change waits for its start, and the `entity.updated`
    of `current_driver` then carries the run that recorded it and its depth, as at once."""
    client = await aiohttp_client(make_app(run_workers=True))
    async with running_partner() as hr:
        since = datetime.now(UTC) + timedelta(seconds=10)
        hr.respond_with(200, {"cpf": ANA, "since": since.isoformat()})
        await upload_mapping(client, WHO_MAPPING + "  since: {from: since}\n")
        await _who_drives(client, "hr", hr.url)
        await post(client, "/api/v1/entities/driver", {"name": "Ana", "cpf": ANA})
        await create_vehicle(client, "LOO1P00")
        flow = _assigning_flow("ask-hr", "hr", ["admin"])
        flow["steps"][0]["assign"]["start"] = "steps.w.since"
        await _upload(client, flow)
        patched = await client.patch(
            "/api/v1/entities/vehicle/LOO1P00", json={"status": "active"}, headers=auth()
        )
        assert patched.status == 200
        runs: list[Any] = []
        while datetime.now(UTC) < since - timedelta(seconds=1):
            runs = await _runs(client, "ask-hr")
            if runs and runs[0]["status"] == "succeeded":
                break
            await asyncio.sleep(0.1)
        (run,) = runs
        assert run["status"] == "succeeded" and datetime.now(UTC) < since
        vehicle = await get(client, "/api/v1/entities/vehicle/LOO1P00")
        assert vehicle.get("current_driver") is None  # scheduled: not yet
        driven: list[Any] = []
        for _ in range(200):  # the runner's housekeeping follows it within a second of its start
            events = (await get(client, "/api/v1/events?type=entity.updated"))["items"]
            if driven := [e for e in events if e["origin"]["kind"] == "hr"]:
                break
            await asyncio.sleep(0.1)
        (followed,) = driven
        assert datetime.now(UTC) >= since
        assert followed["data"]["current_driver"]["cpf"] == ANA
        (change,) = (await get(client, "/api/v1/entities/vehicle/LOO1P00/drivers"))["items"]
        assert followed["origin"] == {
            "kind": "hr",
            "id": run["id"],
            "run": run["id"],
            "depth": 1,
            "assignment": change["id"],
        }


async def test_the_fold_events_a_flows_odometer_write_causes_are_links_of_its_chain(
    client: Client,
) -> None:
    """A flow's `set` of a vehicle's `odometer_km` is a reading the fold takes: the
    re-baseline and the maintenance it brings due carry the run and its depth + 1 in their
    origin (kind `fold`), so a flow on those events is the chain's next link, not a new
    chain at depth 0."""
    await create_plan(client, name="Oleo", every_km=500, due_soon_km=50)
    await create_vehicle(client, "ODO1A00", odometer_km=1000)
    await _upload(
        client,
        {
            "name": "meter",
            "on": {
                "events": ["entity.updated"],
                "filter": {"entity_type": "vehicle", "origin": {"kind": ["admin"]}},
            },
            "steps": [{"id": "s", "set": {"fields": {"odometer_km": "`1500`"}}}],
        },
    )
    patched = await client.patch(
        "/api/v1/entities/vehicle/ODO1A00", json={"status": "active"}, headers=auth()
    )
    assert patched.status == 200
    services = client.app[services_key]
    for _ in range(3):  # the reading relayed, then folded, then its events relayed
        await drain(services)
        await services.fold.run_until_idle()
    (run,) = await _runs(client, "meter")
    chain = {"kind": "fold", "run": run["id"], "depth": 1}
    rebased = (await get(client, "/api/v1/events?type=vehicle.odometer.rebaselined"))["items"]
    by_flow = [e for e in rebased if e["detail"]["to_km"] == 1500]
    assert [e["origin"] for e in by_flow] == [chain]
    (due,) = (await get(client, "/api/v1/events?type=vehicle.maintenance.due"))["items"]
    assert due["origin"] == chain


_EXPECTING = {
    "name": "tag",
    "on": {
        "events": ["entity.updated"],
        "filter": {"entity_type": "vehicle", "origin": {"kind": ["admin"]}},
    },
    "steps": [
        {
            "id": "tag",
            "description": "the vehicle's status changed since the event",
            "set": {
                "fields": {"attributes.tagged": "entity.status"},
                "expect": {"status": "entity.status", "attributes.tagged": "`null`"},
            },
        },
        {"id": "after", "when": "`true`"},
    ],
}


async def test_a_set_with_expect_writes_only_while_the_entity_holds_what_it_expects(
    client: Client,
) -> None:
    """A `set` with `expect` writes only while the entity holds those values, checked with
    the write: the run of a status written over since its event writes nothing and stops
    there (its reason and the step's description recorded); the run of the status the vehicle
    still has writes; its field once written, a later run expecting it absent stops."""
    await _upload(client, _EXPECTING)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    for status in ("inactive", "maintenance"):
        patched = await client.patch(
            "/api/v1/entities/vehicle/ABC1D23", json={"status": status}, headers=auth()
        )
        assert patched.status == 200
    await drain(client.app[services_key])

    runs = {r["event"]["entity"]["rev"]: r for r in await _runs(client, "tag")}
    stale, current = runs[2], runs[3]  # inactive, maintenance
    assert stale["status"] == "stopped" and current["status"] == "succeeded"
    (stopped,) = stale["steps"]
    assert stopped["outcome"] == "stopped", stopped
    # The two runs are not ordered between them (docs/flows.md, "Steps"): the stale one read
    # revision 3, or 4 when the current one wrote its tag first.
    assert stopped["reason"] in {
        "expect: the vehicle is not as expected: its status is 'maintenance', not 'inactive' "
        f"(revision {revision}); nothing was changed"
        for revision in (3, 4)
    }
    assert stopped["description"] == "the vehicle's status changed since the event"
    assert [s["outcome"] for s in current["steps"]] == ["written", "passed"]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["attributes"] == {"tagged": "maintenance"}

    patched = await client.patch(
        "/api/v1/entities/vehicle/ABC1D23", json={"status": "active"}, headers=auth()
    )
    await drain(client.app[services_key])
    (again,) = [r for r in await _runs(client, "tag") if r["event"]["entity"]["rev"] == 5]
    assert again["status"] == "stopped"
    assert "its attributes.tagged is 'maintenance', not null" in again["steps"][0]["reason"]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["attributes"] == {"tagged": "maintenance"}


async def test_the_runs_api_lists_filters_and_explains(client: Client, partner: Partner) -> None:
    fines = await _fines(client, partner)
    await _upload(client, _lookup_flow())
    await send_to(client, fines, sample("fine_feed.json"))
    await drain(client.app[services_key])
    (run,) = await _runs(client, query="?status=succeeded")
    assert await _runs(client, query="?status=failed") == []
    detail = await get(client, f"/api/v1/flow-runs/{run['id']}")
    assert detail["answers"]["hr"]["cpf"] == "52998224725"
    assert [s["outcome"] for s in detail["steps"]] == ["answered", "passed"]
    assert detail["steps"][0]["request"]["url"].endswith("/veiculos/ABC1D23/condutor-atual")
    await get(client, "/api/v1/flows/lookup/runs?status=sleeping", status=400)
    await get(client, "/api/v1/flows/nope/runs", status=404)
    await get(client, "/api/v1/flow-runs/nope", status=404)
    other = await client.get(f"/api/v1/flow-runs/{run['id']}", headers=auth("globex"))
    assert other.status == 404  # another tenant's run does not exist for it


async def test_a_flow_call_carries_the_same_idempotency_key_on_every_attempt(
    client: Client, partner: Partner
) -> None:
    """A flow's call has no webhook-id: its retries were indistinguishable from new calls."""
    await erp_actions(client, partner.url)
    await upload_flow(client, "checklist-mileage-erp")
    checklists = await trigger_for(client, "checklist", kind="checklist")
    await post(
        client,
        "/api/v1/entities/vehicle",
        {"plate": "ABC1D23", "renavam": "86769597308", "odometer_km": 151000},
    )
    await post(client, "/api/v1/entities/driver", {"name": "Ana Souza", "cpf": "52998224725"})
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    partner.respond_with(503, {}, times=1)
    await send_to(client, checklists, sample("checklist_completed.json"))
    await drain(services)
    clock.advance(3600)
    await drain(services)

    (run,) = await _runs(client, "checklist-mileage-erp")
    delivery = await get(client, f"/api/v1/deliveries/{run['steps'][1]['delivery']}")
    assert [a["status"] for a in delivery["attempts"]] == [503, 200]
    keys = [r.headers.get("Idempotency-Key") for r in partner.requests]
    assert keys == [delivery["id"], delivery["id"]]


async def test_a_step_that_raises_unexpectedly_fails_its_run_after_three_tries(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that raised what no step should (a bug) made its run pending again after a
    lease, for ever: never failed, not in ?status=failed, not replayable. Tried three times
    (a lease apart), the run fails at that step with the reason, and a replay once the cause
    is gone finishes it."""
    await _upload(
        client,
        {
            "name": "tag",
            "on": {
                "events": ["entity.created"],
                "filter": {"entity_type": "vehicle", "origin": {"kind": ["admin"]}},
            },
            "steps": [
                {"id": "seen", "when": "entity.plate"},
                {"id": "tag", "set": {"fields": {"attributes.tagged": "`true`"}}},
            ],
        },
    )
    services = client.app[services_key]
    clock = FakeClock()
    services.flow_runner.clock = clock
    patch = services.entities.patch

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(services.entities, "patch", broken)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(services)
    (run,) = await _runs(client, "tag")
    assert run["status"] == "pending" and run["faults"]["attempts"] == 1, run
    assert run["faults"]["step"] == "tag" and "a bug" in run["faults"]["last_error"]
    for _ in range(2):
        clock.advance(91)  # a lease
        await drain(services)
    (run,) = await _runs(client, "tag", "?status=failed")
    assert run["last_error"] == "step 'tag' failed unexpectedly 3 times: KeyError: 'a bug'"
    assert [(s["id"], s["outcome"]) for s in run["steps"]] == [
        ("seen", "passed"),
        ("tag", "failed"),
    ]

    monkeypatch.setattr(services.entities, "patch", patch)
    await post(client, f"/api/v1/flow-runs/{run['id']}/replay", {}, status=200)
    await drain(services)
    replayed = await get(client, f"/api/v1/flow-runs/{run['id']}")
    assert replayed["status"] == "succeeded", replayed
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["attributes"]["tagged"] is True


async def test_a_run_whose_answers_outgrow_what_it_keeps_fails_at_that_step(
    client: Client, partner: Partner
) -> None:
    """Every fetch's answer is kept on the run: answers of 1 MB each outgrew the 16 MiB a
    database document holds, and the run was retried every lease for ever, asking the partner
    again each time. A run keeps 8 MiB of answers: the step past it fails, saying why."""
    big = await create_partner(client, partner.url, name="BIG")
    await create_action(client, big["id"], name="big", method="GET", path="/big", mode="proxy")
    partner.respond_with(200, {"blob": "x" * 1_000_000})
    steps = [{"id": f"s{i}", "fetch": "big"} for i in range(12)]
    await _upload(client, {"name": "big", "on": {"events": ["entity.created"]}, "steps": steps})
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(client.app[services_key])
    (run,) = await _runs(client, "big", "?status=failed")
    assert [s["outcome"] for s in run["steps"]] == ["answered"] * 8 + ["failed"]
    assert run["last_error"] == run["steps"][8]["detail"]
    assert run["last_error"] == (
        "the answer of step 's8' (1,000,023 bytes) would take the run's answers past "
        "8,388,608 bytes (8,000,196 kept): a run keeps no more"
    )
    assert len(partner.requests) == 9


async def test_answers_are_counted_as_the_database_stores_them(
    client: Client, partner: Partner
) -> None:
    """A list of numbers takes about six times its JSON in the database (BSON): counted as
    JSON, four answers of 0.9 MB stayed under 8 MiB but outgrew the 16 MiB document, and the
    run faulted, asking the partner again after each lease. Counted as stored, the second
    answer is past what a run keeps: that step fails at once, and the partner is asked twice."""
    big = await create_partner(client, partner.url, name="BIG")
    await create_action(client, big["id"], name="big", method="GET", path="/big", mode="proxy")
    partner.respond_with(200, {"ids": [0] * 450_000})
    steps = [{"id": f"s{i}", "fetch": "big"} for i in range(4)]
    await _upload(client, {"name": "big", "on": {"events": ["entity.created"]}, "steps": steps})
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    services = client.app[services_key]
    await drain(services)
    (run,) = await _runs(client, "big", "?status=failed")
    assert [s["outcome"] for s in run["steps"]] == ["answered", "failed"]
    assert run["last_error"].startswith("the answer of step 's1' (5,288,")
    assert "would take the run's answers past 8,388,608 bytes" in run["last_error"]
    stored = await services.store.db["flow_runs"].find_one({"_id": run["id"]})
    assert "faults" not in stored
    assert len(partner.requests) == 2


def _listening(name: str, *events: str) -> dict[str, Any]:
    return {"name": name, "on": {"events": list(events)}, "steps": [{"id": "seen", "when": "true"}]}


async def _types_run(client: Client, flow: str) -> list[str]:
    return [r["event"]["type"] for r in await _runs(client, flow, "?limit=200")]


async def test_vehicle_position_starts_only_the_flows_that_name_it(client: Client) -> None:
    """Opt-in, as for subscriptions (docs/fleet.md): a flow on `vehicle.*` or `*` is not run
    per fix, not even when a subscription asks for the fixes; one that names
    `vehicle.position` gets every accepted fix, whatever the subscription's sampling."""
    services = client.app[services_key]
    await _upload(client, _listening("family", "vehicle.*"))
    await _upload(client, _listening("everything", "*"))
    await _upload(client, _listening("track", "vehicle.position"))
    p = await create_partner(client, "http://127.0.0.1:9")
    action_id = (await create_action(client, p["id"]))["id"]
    sampled = await create_subscription(client, action_id, ("vehicle.position",), sample_seconds=60)
    vehicle = await make_vehicle(services)
    points = [
        TrackPoint(START + timedelta(seconds=10 * i), -23.55 + i * 1e-4, -46.63, 5.0)
        for i in range(20)
    ]
    await append(services, vehicle, points)
    await services.fold.run_until_idle()
    await drain(services)
    assert "vehicle.position" not in await _types_run(client, "family")
    assert "vehicle.position" not in await _types_run(client, "everything")
    assert (await _types_run(client, "track")).count("vehicle.position") == 20
    # The subscription still gets its sample only: one a minute of 190 s of fixes.
    page = await get(client, f"/api/v1/deliveries?subscription_id={sampled['id']}&limit=200")
    assert [d["event_type"] for d in page["items"]] == ["vehicle.position"] * 4


async def test_a_partners_position_webhook_names_neither_the_tenants_flows_nor_other_partners(
    client: Client, partner: Partner
) -> None:
    """`audience` is the fold's routing bookkeeping (docs/fleet.md): the event a partner is
    sent is `{type, entity, data, changes, origin}` and the rest of the event document, never
    the tenant's flow names (`flow:<name>`) nor the other partners' subscription ids."""
    services = client.app[services_key]
    await _upload(client, _listening("secret-fraud-watch", "vehicle.position"))
    action = await create_action(client, (await create_partner(client, partner.url))["id"])
    subscription = await create_subscription(client, action["id"], ("vehicle.position",))
    other = await create_partner(client, "http://127.0.0.1:9")
    other_action = await create_action(client, other["id"])
    elsewhere = await create_subscription(client, other_action["id"], ("vehicle.position",))
    vehicle = await make_vehicle(services)
    await append(services, vehicle, [TrackPoint(START, -23.55, -46.63, 5.0)])
    await services.fold.run_until_idle()
    await drain(services)
    assert await _types_run(client, "secret-fraud-watch") == ["vehicle.position"]
    (sent,) = partner.requests
    event = sent.json()
    assert event["type"] == "vehicle.position" and "audience" not in event, event
    for internal in (b"secret-fraud-watch", elsewhere["id"].encode()):
        assert internal not in sent.body, sent.body
    assert subscription["id"].encode() not in sent.body


async def test_a_flow_naming_vehicle_position_runs_per_fix_without_any_subscription(
    client: Client,
) -> None:
    services = client.app[services_key]
    await _upload(client, _listening("family", "vehicle.*"))
    await _upload(client, _listening("track", "vehicle.position"))
    vehicle = await make_vehicle(services)
    points = [TrackPoint(START + timedelta(seconds=10 * i), -23.55, -46.63, 5.0) for i in range(3)]
    await append(services, vehicle, points)
    await services.fold.run_until_idle()
    await drain(services)
    assert await _types_run(client, "track") == ["vehicle.position"] * 3
    assert await _types_run(client, "family") == []


async def test_positions_a_mapping_emits_start_only_the_flows_that_name_them(
    client: Client,
) -> None:
    """The shipped geotab-logrecord emits a `vehicle.position` per record (no audience): a
    `vehicle.*` flow is not run for them, as a `vehicle.*` subscription gets none."""
    await _upload(client, _listening("family", "vehicle.*"))
    await _upload(client, _listening("track", "vehicle.position"))
    for plate, device in (("ABC1D23", "b3A"), ("XYZ9A87", "b7")):
        await post(
            client,
            "/api/v1/entities/vehicle",
            {"plate": plate, "attributes": {"tracker_id": device}},
        )
    geotab = await trigger_for(client, "geotab-logrecord", entity_type="vehicle")
    await send_to(client, geotab, sample("geotab_getfeed_logrecord.json"))
    await drain(client.app[services_key])
    assert "vehicle.position" not in await _types_run(client, "family")
    assert (await _types_run(client, "track")).count("vehicle.position") == 3


async def _fetching_flow(client: Client, url: str, tenant: str, **fields: Any) -> None:
    """`tenant`'s flow: on each new vehicle, a fetch from its partner at `url`."""
    body = {"name": "ERP", "base_url": url, "auth": {"type": "none"}, **fields}
    partner_doc = await post(client, "/api/v1/partners", body, tenant=tenant)
    action = {"name": "lookup", "partner_id": partner_doc["id"], "method": "GET", "path": "/a"}
    await post(client, "/api/v1/actions", {**action, "mode": "proxy"}, tenant=tenant)
    flow = {
        "name": "on-vehicle",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
        "steps": [{"id": "lookup", "fetch": "lookup"}],
    }
    await post(client, "/api/v1/flows", flow, tenant=tenant)


async def test_another_tenants_run_fetches_at_once_while_a_slow_partners_runs_are_under_way(
    aiohttp_client: Any, make_app: Any
) -> None:
    """Tenant acme's 40 runs fetch from a partner answering in 5 s (2 at a time, its
    `max_concurrency`) when tenant globex's run comes: acme's runs hold at most half the
    runner's slots, so globex's is claimed and fetches at once, not behind acme's older ones."""
    client = await aiohttp_client(make_app(delivery_concurrency=8, delivery_shutdown_seconds=0))
    services = client.app[services_key]
    async with running_partner() as slow, running_partner() as fast:
        slow.respond_with(200, {}, delay=5)
        await _fetching_flow(client, slow.url, "acme", timeout_seconds=10, max_concurrency=2)
        await _fetching_flow(client, fast.url, "globex")
        for n in range(40):
            await post(client, "/api/v1/entities/vehicle", {"plate": f"ABC{n % 10}D{n:02d}"})
        await services.relay.run_until_idle()
        running = asyncio.create_task(services.flow_runner.run())
        try:
            await slow.wait_for(2)  # acme's runs are under way
            await asyncio.sleep(1)
            await post(client, "/api/v1/entities/vehicle", {"plate": "XYZ9A88"}, "globex")
            await services.relay.run_until_idle()
            services.flow_runner.notify()
            started = time.monotonic()
            await fast.wait_for(1, timeout=20)
            assert time.monotonic() - started < 4  # not behind acme's fetches (5 s each)
            assert len(slow.requests) <= 4  # acme's runs still under way
        finally:
            await services.flow_runner.stop()
            await running
