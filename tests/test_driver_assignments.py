"""Driver assignments: a vehicle's history of drivers, the driver at time T, late reports."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.assignments import AssignmentService
from gateway.clock import as_stored
from gateway.store import Store
from gateway.store.assignments import DUE_MIGRATION, change_id
from gateway.web.state import services_key
from tests.partner_double import create_vehicle, post
from tests.processes import beside
from tests.read_plans import Reads, read_plans
from tests.support import auth

Client = TestClient[Any, Any]
ANA = "52998224725"
BRUNO = "11144477735"
DRIVERS = "/api/v1/entities/vehicle/ABC1D23/drivers"


async def _drivers(client: Client) -> None:
    await create_vehicle(client)
    await post(client, "/api/v1/entities/driver", {"name": "Ana Souza", "cpf": ANA})
    await post(client, "/api/v1/entities/driver", {"name": "Bruno Lima", "cpf": BRUNO})


async def _get(client: Client, query: str = "", status: int = 200) -> Any:
    response = await client.get(DRIVERS + query, headers=auth())
    body = await response.json()
    assert response.status == status, body
    return body


async def test_assigning_a_driver_ends_the_previous_assignment(client: Client) -> None:
    await _drivers(client)
    first = await post(client, DRIVERS, {"driver": ANA, "start": "2026-11-01T08:00:00-03:00"})
    assert first["driver"]["cpf"] == ANA and first["end"] is None and first["changed"] is True
    await post(client, DRIVERS, {"driver": BRUNO, "start": "2026-11-10T08:00:00-03:00"})
    history = await _get(client)
    assert [(a["driver"]["cpf"], a["start"], a["end"]) for a in history["items"]] == [
        (BRUNO, "2026-11-10T11:00:00+00:00", None),
        (ANA, "2026-11-01T11:00:00+00:00", "2026-11-10T11:00:00+00:00"),
    ]
    assert history["driver"]["driver"]["name"] == "Bruno Lima"


async def test_driver_at_a_time_answers_who_drove_then(client: Client) -> None:
    await _drivers(client)
    await post(client, DRIVERS, {"driver": ANA, "start": "2026-11-01T08:00:00-03:00"})
    await post(client, DRIVERS, {"driver": BRUNO, "start": "2026-11-20T08:00:00-03:00"})
    fine_time = await _get(client, "?at=2026-11-18T13:45:00-03:00")
    assert fine_time["driver"]["driver"]["cpf"] == ANA
    # In UTC, as the assignment's own times, whatever offset the query was written in.
    assert fine_time["at"] == "2026-11-18T16:45:00+00:00", fine_time
    before = await _get(client, "?at=2026-10-01T00:00:00Z")
    assert before["driver"] is None


async def test_an_at_whose_plus_came_unencoded_keeps_its_offset(client: Client) -> None:
    """`?at=...+05:45` typed as is: the query decodes the `+` to a space. 2026-11-20T10:00
    at +05:45 is 04:15 UTC, when Ana drove (Bruno from 08:00 UTC); read without the
    offset it would be a 400, read as UTC Bruno's."""
    await _drivers(client)
    await post(client, DRIVERS, {"driver": ANA, "start": "2026-11-01T08:00:00Z"})
    await post(client, DRIVERS, {"driver": BRUNO, "start": "2026-11-20T08:00:00Z"})
    answer = await _get(client, "?at=2026-11-20T10:00:00+05:45")
    assert answer["driver"]["driver"]["cpf"] == ANA
    await _get(client, "?at=2026-11-20T10:00:00 5:45", status=400)  # not an offset


async def test_a_late_report_fills_only_the_gap_before_the_next_change(client: Client) -> None:
    await _drivers(client)
    await post(client, DRIVERS, {"driver": BRUNO, "start": "2026-11-10T08:00:00-03:00"})
    late = await post(
        client,
        DRIVERS,
        {"driver": ANA, "start": "2026-11-01T08:00:00-03:00", "source": "hr", "ref": "hr-1"},
    )
    assert late["end"] == "2026-11-10T11:00:00+00:00" and late["source"] == "hr"
    now = await _get(client)
    assert now["driver"]["driver"]["cpf"] == BRUNO  # the later change still stands


async def test_repeating_the_current_driver_changes_nothing(client: Client) -> None:
    await _drivers(client)
    await post(client, DRIVERS, {"driver": ANA, "start": "2026-11-01T08:00:00-03:00"})
    again = await post(
        client, DRIVERS, {"driver": ANA, "start": "2026-11-05T08:00:00-03:00"}, status=200
    )
    assert again["changed"] is False and again["start"] == "2026-11-01T11:00:00+00:00"
    assert len((await _get(client))["items"]) == 1


async def test_two_reports_of_the_same_instant_keep_the_later(client: Client) -> None:
    await _drivers(client)
    start = "2026-11-01T08:00:00-03:00"
    await post(client, DRIVERS, {"driver": ANA, "start": start, "source": "erp"})
    second = await post(client, DRIVERS, {"driver": BRUNO, "start": start, "source": "admin"})
    assert second["replaced"]["driver"]["cpf"] == ANA
    assert [a["driver"]["cpf"] for a in (await _get(client))["items"]] == [BRUNO]


async def test_unassigning_leaves_the_vehicle_without_driver(client: Client) -> None:
    await _drivers(client)
    await post(client, DRIVERS, {"driver": ANA, "start": "2026-11-01T08:00:00Z"})
    await post(client, DRIVERS, {"driver": None, "start": "2026-11-02T08:00:00Z"})
    assert (await _get(client))["driver"]["driver"] is None
    vehicle = await (await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    assert "current_driver" not in vehicle


async def test_the_vehicle_current_driver_follows_the_history(client: Client) -> None:
    await _drivers(client)
    await post(client, DRIVERS, {"driver": ANA})
    vehicle = await (await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    assert vehicle["current_driver"]["cpf"] == ANA and vehicle["current_driver"]["name"]
    await client.app[services_key].relay.run_until_idle()
    events = await (await client.get("/api/v1/events?type=entity.updated", headers=auth())).json()
    assert any(
        c["field"].startswith("current_driver") for e in events["items"] for c in e["changes"]
    )


async def test_the_vehicle_current_driver_follows_a_scheduled_change_once_it_starts(
    client: Client,
) -> None:
    """A change scheduled ahead (allowed up to a year) was followed by `current_driver` only
    at write time: when its start came, the history named the new driver and the vehicle
    the old one, with no `entity.updated`, until some other assignment of that vehicle. The
    flow runners' housekeeping follows it once it starts, from what the database holds (any
    process, after a restart); two processes at once write it once."""
    await _drivers(client)
    services = client.app[services_key]
    now = datetime.now(UTC)
    await post(client, DRIVERS, {"driver": ANA, "start": (now - timedelta(hours=1)).isoformat()})
    start = now + timedelta(seconds=1.5)
    await post(client, DRIVERS, {"driver": BRUNO, "start": start.isoformat()})
    await services.flow_runner.housekeeping()  # not yet
    vehicle = await (await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    assert vehicle["current_driver"]["cpf"] == ANA

    await asyncio.sleep((start - datetime.now(UTC)).total_seconds() + 0.1)
    # This process's runner and another process's, side by side.
    other = AssignmentService(services.store.notify.assignments, services.entities)
    await asyncio.gather(services.flow_runner.housekeeping(), other.follow_scheduled())
    vehicle = await (await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    assert vehicle["current_driver"]["cpf"] == BRUNO
    assert await other.follow_scheduled() == 0  # nothing due any more
    await services.relay.run_until_idle()
    events = await (await client.get("/api/v1/events?type=entity.updated", headers=auth())).json()
    drivers = [
        (c["old"], c["new"])
        for e in events["items"]
        for c in e["changes"]
        if c["field"] == "current_driver.cpf"
    ]
    assert drivers == [(ANA, BRUNO)]  # one event for the handover


CARLA = "39053344705"
OTHER_DRIVERS = "/api/v1/entities/vehicle/XYZ9Z99/drivers"


async def _as_the_previous_version_scheduled(
    client: Client, plate: str, cpf: str, start: datetime, recorded_at: datetime
) -> None:
    """A change stored as the version before `due` stored a scheduled one: recorded before
    its start, with no `due`, and `current_driver` left as it was."""
    services = client.app[services_key]
    vehicle = await services.entities.get("acme", "vehicle", plate)
    driver = await services.entities.get("acme", "driver", cpf)
    vid, start = str(vehicle["_id"]), as_stored(start)
    await services.store.db["driver_assignments"].insert_one(
        {
            "_id": change_id("acme", vid, start),
            "tenant": "acme",
            "vehicle_id": vid,
            "plate": plate,
            "start": start,
            "driver": {"id": str(driver["_id"]), "cpf": cpf, "name": driver["data"]["name"]},
            "source": "erp",
            "ref": f"schedule:{cpf}",
            "author": "erp",
            "recorded_at": as_stored(recorded_at),
        }
    )


async def _driver_changes(client: Client, plate: str) -> list[tuple[Any, Any, str]]:
    """The vehicle's `entity.updated` events of `current_driver`: (old cpf, new cpf, origin id)."""
    await client.app[services_key].relay.run_until_idle()
    events = await (
        await client.get("/api/v1/events?type=entity.updated&limit=100", headers=auth())
    ).json()
    return [
        (_cpf(c["old"]), _cpf(c["new"]), e["origin"]["id"])
        for e in reversed(events["items"])
        if e["data"]["plate"] == plate
        for c in e["changes"]
        if c["field"] in ("current_driver", "current_driver.cpf")
    ]


def _cpf(value: Any) -> Any:
    """A driver's CPF from a change of `current_driver` (whole when it was or becomes null)."""
    return value["cpf"] if isinstance(value, dict) else value


async def _current_cpf(client: Client, plate: str) -> Any:
    vehicle = await (await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())).json()
    return (vehicle.get("current_driver") or {}).get("cpf")


async def test_changes_scheduled_before_the_upgrade_that_started_are_followed_once_by_two_processes(
    client: Client, mongodb_uri: str, tmp_path: Path
) -> None:
    """The version before `due` stored scheduled changes without it, and only the changes
    still ahead got one at each start: a change whose start had passed before the upgrade was
    never followed (the vehicle kept the old driver, with no `entity.updated`). The first
    start after the upgrade marks, once per database, each vehicle's newest started one (and
    those ahead): two processes starting together follow it, once, with its origin, and never
    an older change a later one superseded."""
    await _drivers(client)
    await post(client, "/api/v1/entities/driver", {"name": "Carla Dias", "cpf": CARLA})
    await create_vehicle(client, "XYZ9Z99")
    services = client.app[services_key]
    now = datetime.now(UTC)
    # ABC1D23: Ana at once, then Bruno and Carla scheduled; both have started since.
    await post(client, DRIVERS, {"driver": ANA, "start": (now - timedelta(hours=3)).isoformat()})
    for cpf, hours in ((BRUNO, 2), (CARLA, 1)):
        await _as_the_previous_version_scheduled(
            client, "ABC1D23", cpf, now - timedelta(hours=hours), now - timedelta(hours=3)
        )
    # XYZ9Z99: Bruno scheduled, superseded by Ana recorded at once after his start.
    await _as_the_previous_version_scheduled(
        client, "XYZ9Z99", BRUNO, now - timedelta(hours=2), now - timedelta(hours=3)
    )
    start = (now - timedelta(hours=1)).isoformat()
    await post(client, OTHER_DRIVERS, {"driver": ANA, "start": start})
    changes = services.store.db["driver_assignments"]
    migrations = services.store.db["migrations"]
    await migrations.delete_one({"_id": DUE_MIGRATION})  # a database from before the upgrade
    assert (await _current_cpf(client, "ABC1D23"), await _current_cpf(client, "XYZ9Z99")) == (
        ANA,
        ANA,
    )

    await services.relay.run_until_idle()  # Ana's change listed before any the workers make
    env = beside(tmp_path, mongodb_uri, services.settings.database)
    logs = [(tmp_path / f"worker{n}.log").open("wb") for n in range(2)]
    command = [sys.executable, "-m", "gateway", "worker", "--jobs", "flows", "--port", "0"]
    workers = [
        await asyncio.create_subprocess_exec(*command, env=env, stdout=log, stderr=log)
        for log in logs
    ]

    def running() -> int:
        return sum(
            "gateway worker running" in (tmp_path / f"worker{n}.log").read_text() for n in range(2)
        )

    try:
        for _ in range(300):
            if await _current_cpf(client, "ABC1D23") == CARLA:
                break
            await asyncio.sleep(0.1)
        # Both are running (on a loaded host the second may start after the first did all
        # the work) and have had a few more housekeeping rounds each.
        for _ in range(600):
            if running() == 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            await asyncio.wait_for(worker.wait(), 30)
        for log in logs:
            log.close()
    log_text = "".join((tmp_path / f"worker{n}.log").read_text() for n in range(2))
    assert log_text.count("gateway worker running") == 2, log_text
    assert await _current_cpf(client, "ABC1D23") == CARLA
    assert await _driver_changes(client, "ABC1D23") == [
        (None, ANA, "tester"),
        (ANA, CARLA, f"schedule:{CARLA}"),  # once, Carla's (not Bruno's, whom she followed)
    ]
    assert await _current_cpf(client, "XYZ9Z99") == ANA
    assert await _driver_changes(client, "XYZ9Z99") == [(None, ANA, "tester")]
    assert await changes.count_documents({"due": {"$exists": True}}) == 0
    assert await migrations.find_one({"_id": DUE_MIGRATION}) is not None


async def test_a_change_scheduled_before_the_upgrade_still_ahead_is_followed_when_it_starts(
    client: Client, watched: tuple[Any, Reads]
) -> None:
    """A change ahead at the upgrade gets `due` at the first start; later starts find the step
    done and read no change (the backfill reads them all, by no index)."""
    await _drivers(client)
    services = client.app[services_key]
    now = datetime.now(UTC)
    await post(client, DRIVERS, {"driver": ANA, "start": (now - timedelta(hours=1)).isoformat()})
    start = now + timedelta(seconds=1.5)
    await _as_the_previous_version_scheduled(client, "ABC1D23", BRUNO, start, now)
    changes = services.store.db["driver_assignments"]
    await services.store.db["migrations"].delete_one({"_id": DUE_MIGRATION})
    await services.store.ensure_indexes()  # the upgraded process starts
    assert await changes.count_documents({"due": {"$exists": True}}) == 1  # Ana's had begun

    db, reads = watched
    await Store(db).ensure_indexes()  # a later start
    assert [c for c in reads.sent if c.get("find") == "driver_assignments"] == []

    await asyncio.sleep((start - datetime.now(UTC)).total_seconds() + 0.1)
    await services.flow_runner.housekeeping()
    assert await _current_cpf(client, "ABC1D23") == BRUNO
    assert await _driver_changes(client, "ABC1D23") == [
        (None, ANA, "tester"),
        (ANA, BRUNO, f"schedule:{BRUNO}"),
    ]


async def test_scheduled_changes_that_came_due_together_are_followed_as_the_newest(
    client: Client,
) -> None:
    """Two scheduled changes of a vehicle that started while no runner looked (a restart):
    the earliest was followed first, and the one `entity.updated` named its origin, while the
    field took the newest's driver. It names the change in force."""
    await _drivers(client)
    await post(client, "/api/v1/entities/driver", {"name": "Carla Dias", "cpf": CARLA})
    services = client.app[services_key]
    now = datetime.now(UTC)
    await post(client, DRIVERS, {"driver": ANA, "start": (now - timedelta(hours=1)).isoformat()})
    for cpf, seconds in ((BRUNO, 1.0), (CARLA, 1.5)):
        start = (now + timedelta(seconds=seconds)).isoformat()
        await post(client, DRIVERS, {"driver": cpf, "start": start, "ref": f"schedule:{cpf}"})
    await asyncio.sleep((now - datetime.now(UTC)).total_seconds() + 1.6)
    await services.flow_runner.housekeeping()
    assert await _current_cpf(client, "ABC1D23") == CARLA
    assert await _driver_changes(client, "ABC1D23") == [
        (None, ANA, "tester"),
        (ANA, CARLA, f"schedule:{CARLA}"),
    ]


async def test_history_pages_with_a_cursor_and_keeps_each_end(client: Client) -> None:
    await _drivers(client)
    for day, cpf in ((1, ANA), (2, BRUNO), (3, ANA)):
        await post(client, DRIVERS, {"driver": cpf, "start": f"2026-11-0{day}T08:00:00Z"})
    page1 = await _get(client, "?limit=2")
    assert [a["start"][:10] for a in page1["items"]] == ["2026-11-03", "2026-11-02"]
    page2 = await _get(client, f"?limit=2&cursor={page1['next_cursor']}")
    assert [(a["start"][:10], a["end"][:10]) for a in page2["items"]] == [
        ("2026-11-01", "2026-11-02")
    ]
    assert page2["next_cursor"] is None


async def test_bad_assignments_are_refused_with_every_problem(client: Client) -> None:
    await _drivers(client)
    response = await client.post(
        DRIVERS,
        json={"driver": 42, "start": "yesterday", "source": "fax", "color": "red"},
        headers=auth(),
    )
    body = await response.json()
    assert response.status == 422
    assert {e["pointer"] for e in body["errors"]} == {"/driver", "/color", "/start"}
    unknown = await client.post(DRIVERS, json={"driver": "98765432100"}, headers=auth())
    assert unknown.status == 422
    assert (await unknown.json())["errors"][0]["pointer"] == "/driver"
    wrong_source = await client.post(DRIVERS, json={"driver": ANA, "source": "fax"}, headers=auth())
    assert (await wrong_source.json())["errors"][0]["pointer"] == "/source"
    far = await client.post(
        DRIVERS, json={"driver": ANA, "start": "2099-01-01T00:00:00Z"}, headers=auth()
    )
    assert (await far.json())["errors"][0]["pointer"] == "/start"
    missing = await client.post(
        "/api/v1/entities/vehicle/XYZ9Z99/drivers", json={"driver": ANA}, headers=auth()
    )
    assert missing.status == 404
    bad_at = await client.get(DRIVERS + "?at=soon", headers=auth())
    assert bad_at.status == 400


async def test_assignments_belong_to_their_tenant(client: Client) -> None:
    await _drivers(client)
    await post(client, DRIVERS, {"driver": ANA})
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"}, tenant="other")
    response = await client.get(DRIVERS, headers=auth("other"))
    body = await response.json()
    assert body["items"] == [] and body["driver"] is None


async def test_the_driver_at_a_time_is_read_through_an_index_on_the_embedded_database(
    client: Client,
) -> None:
    """Every read of a history is a range of `_id`, which SecantusDB serves by scanning the
    whole collection unless an index (tenant, `_id`) covers it."""
    await _drivers(client)
    await post(client, DRIVERS, {"driver": ANA, "start": "2026-11-01T08:00:00-03:00"})
    await post(client, DRIVERS, {"driver": BRUNO, "start": "2026-11-10T08:00:00-03:00"})
    collection = client.app[services_key].store.db["driver_assignments"]
    query = {"tenant": "acme", "_id": {"$gte": "acme:", "$lt": "acme:~"}}
    plan = await collection.find(query).sort("_id", -1).limit(1).explain()
    assert "COLLSCAN" not in str(plan["queryPlanner"]) and "ranges" in str(plan), plan
    answer = await _get(client, "?at=2026-11-05T12:00:00Z")
    assert answer["driver"]["driver"]["cpf"] == ANA


async def test_two_concurrent_ends_of_one_identification_report_one_change(
    client: Client,
) -> None:
    """A tracker's logout relayed twice at once (two relay batches, two processes): both ends
    read the identification in force before either writes, but only one records the end."""
    await _drivers(client)
    start = datetime(2026, 11, 1, 8, tzinfo=UTC)
    await post(client, DRIVERS, {"driver": ANA, "start": start.isoformat(), "source": "tracker"})
    assignments = client.app[services_key].notify.assignments
    for round_ in range(5):
        at = start + timedelta(hours=1 + round_)
        ends = await asyncio.gather(
            *(
                assignments.end("acme", "ABC1D23", at=at, source="tracker", author=f"relay:{n}")
                for n in range(2)
            )
        )
        assert [r is not None and r.changed for r in ends].count(True) == 1, (round_, ends)
        # Identified again, so that the next round has an identification to end.
        await assignments.assign(
            "acme", "ABC1D23", ANA, start=at + timedelta(minutes=1), source="tracker", author="t"
        )


async def test_two_concurrent_identical_assignments_report_one_change(client: Client) -> None:
    await _drivers(client)
    body = {"driver": BRUNO, "start": "2026-11-01T08:00:00-03:00"}
    responses = await asyncio.gather(
        *(client.post(DRIVERS, json=body, headers=auth()) for _ in range(2))
    )
    answers = [(r.status, (await r.json())["changed"]) for r in responses]
    assert sorted(answers) == [(200, False), (201, True)], answers
    assert len((await _get(client))["items"]) == 1


async def test_an_identification_at_the_instant_of_a_concurrent_end_stands(
    client: Client,
) -> None:
    """A logout and the next driver's key read at the same instant, handled at once (two
    relay batches): whichever writes first, the identification is what is stored (an end
    written first is replaced by it; one coming second records nothing)."""
    await _drivers(client)
    start = datetime(2026, 11, 1, 8, tzinfo=UTC)
    await post(client, DRIVERS, {"driver": ANA, "start": start.isoformat(), "source": "tracker"})
    assignments = client.app[services_key].notify.assignments
    for round_ in range(6):
        at = start + timedelta(hours=1 + 2 * round_)
        end, identification = await asyncio.gather(
            assignments.end("acme", "ABC1D23", at=at, source="tracker", author="relay"),
            assignments.assign(
                "acme", "ABC1D23", BRUNO, start=at, source="tracker", author="tracker"
            ),
        )
        stored = await assignments.driver_at("acme", "ABC1D23", at)
        assert stored is not None and stored.driver is not None, (round_, end, stored)
        assert stored.driver["cpf"] == BRUNO and identification.changed, (round_, stored)
        await assignments.assign(
            "acme", "ABC1D23", ANA, start=at + timedelta(hours=1), source="tracker", author="t"
        )


async def test_an_end_never_replaces_a_change_recorded_at_its_instant(client: Client) -> None:
    """Two copies of an end and an identification written between them, at one instant: the
    identification stays, and only the first end was recorded."""
    await _drivers(client)
    store = client.app[services_key].notify.assignments._store
    vehicle = await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())
    vid = (await vehicle.json())["id"]
    at = datetime(2026, 11, 1, 9, tzinfo=UTC)
    nobody = {"start": at, "driver": None, "source": "tracker", "ref": None, "author": "relay"}
    bruno = {**nobody, "driver": {"id": "d1", "cpf": BRUNO, "name": "Bruno"}, "author": "t"}
    assert (await store.record("acme", vid, nobody, at_instant="never")).written
    assert (await store.record("acme", vid, bruno)).written
    assert not (await store.record("acme", vid, nobody, at_instant="never")).written
    stored = await store.at("acme", vid, at)
    assert stored is not None and stored["driver"]["cpf"] == BRUNO


async def test_a_change_stored_with_microseconds_before_starts_were_kept_to_the_ms_lasts(
    client: Client,
) -> None:
    """Changes written by an earlier version carry microseconds in their id (`now`'s) that
    their `start`, a BSON date, lost: such a change is not its own successor."""
    await _drivers(client)
    vehicle = await (await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    services = client.app[services_key]
    driver = await services.entities.get("acme", "driver", ANA)
    start = datetime(2026, 11, 1, 10, 0, 0, 500000, tzinfo=UTC)
    await services.store.db["driver_assignments"].insert_one(
        {
            "_id": f"acme:{vehicle['id']}:2026-11-01T10:00:00.500500Z",
            "tenant": "acme",
            "vehicle_id": vehicle["id"],
            "plate": "ABC1D23",
            "start": start,
            "driver": {"id": str(driver["_id"]), "cpf": ANA, "name": driver["data"]["name"]},
            "source": "admin",
            "ref": None,
            "author": "admin",
            "recorded_at": start,
        }
    )
    [listed] = (await _get(client))["items"]
    assert listed["end"] is None and listed["driver"]["cpf"] == ANA, listed
    assert (await _get(client, "?at=2026-11-02T00:00:00Z"))["driver"]["end"] is None


async def test_a_report_taken_back_while_another_is_recorded_at_its_instant_stays_gone(
    client: Client,
) -> None:
    """c1 and c2 at one instant (c1 kept beneath c2); c3 recorded there while c1 is taken
    back: c3's write, built from what it read before, put c1 beneath again, so that taking c3
    and c2 back later let a deleted checklist's driver stand (rev26 F3)."""
    store = client.app[services_key].notify.assignments._store
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)

    def report(ref: str, who: str) -> dict[str, Any]:
        driver = {"id": who, "cpf": "00000000000", "name": who}
        return {"start": at, "driver": driver, "source": "checklist", "ref": ref, "author": "app"}

    assert (await store.record("acme", "v1", report("c1", "a"))).written
    assert (await store.record("acme", "v1", report("c2", "b"))).written
    collection = store._c

    class TakenBackMeanwhile:
        def __getattr__(self, name: str) -> Any:
            return getattr(collection, name)

        async def find_one(self, *args: Any, **kwargs: Any) -> Any:
            held = await collection.find_one(*args, **kwargs)
            store._c = collection  # c1 taken back between record's read and its write
            await store.drop_report("acme", "v1", at, {"source": "checklist", "ref": "c1"})
            return held

    store._c = TakenBackMeanwhile()
    try:
        assert (await store.record("acme", "v1", report("c3", "c"))).written
    finally:
        store._c = collection
    change = await store.at("acme", "v1", at)
    assert change is not None and change["ref"] == "c3"
    assert [r["ref"] for r in change.get("beneath", [])] == ["c2"], change


async def test_a_change_withdrawn_while_it_is_written_again_is_removed_as_last_written(
    client: Client,
) -> None:
    """A change taken out (`AssignmentStore.remove`) is read, then deleted guarded by what
    was read: a later report of its driver kept on it (`repeats`, a new version) or its
    driver renamed between the two is not lost: the change returned (what a withdrawal puts
    back from) is the one deleted, with the repeat and the new name; one no longer matching
    the report taken back stays."""
    store = client.app[services_key].notify.assignments._store
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    driver = {"id": "a", "cpf": "00000000000", "name": "Ana"}
    said = {"source": "checklist", "ref": "c1"}
    assert (
        await store.record("acme", "v1", {"start": at, "driver": driver, **said, "author": "app"})
    ).written
    doc_id = change_id("acme", "v1", at)
    collection = store._c
    meanwhile: list[Any] = []

    class WrittenMeanwhile:
        def __getattr__(self, name: str) -> Any:
            return getattr(collection, name)

        async def find_one(self, *args: Any, **kwargs: Any) -> Any:
            held = await collection.find_one(*args, **kwargs)
            if meanwhile:
                await meanwhile.pop(0)(held)
            return held

    async def repeat(held: Any) -> None:
        later = {"start": at + timedelta(hours=1), "source": "tracker", "ref": "t1", "author": "x"}
        await store.add_repeat(held, later)

    async def rename(held: Any) -> None:
        await store.set_driver("acme", [doc_id], {**driver, "name": "Ana Souza"})

    store._c = WrittenMeanwhile()
    try:
        meanwhile.append(repeat)
        meanwhile.append(rename)
        removed = await store.remove("acme", doc_id, said)
    finally:
        store._c = collection
    assert removed is not None
    assert [r["ref"] for r in removed["repeats"]] == ["t1"], removed
    assert removed["driver"]["name"] == "Ana Souza", removed
    assert await collection.find_one({"_id": doc_id}) is None

    assert (
        await store.record("acme", "v1", {"start": at, "driver": driver, **said, "author": "app"})
    ).written
    assert await store.remove("acme", doc_id, {**said, "ref": "c2"}) is None
    assert await collection.find_one({"_id": doc_id}) is not None


async def test_a_handover_dated_now_after_a_step_back_of_the_time_follows_the_last_one(
    client: Client, gateway_time: Callable[[datetime], None]
) -> None:
    """Ana handed the vehicle while the gateway's time ran 2 min fast, the clock set right,
    Bruno a minute later, both dated "now": Bruno's change was filed before Ana's (a late
    report covering the gap up to it), the history kept Ana in force while the vehicle said
    Bruno, and a fine went to Ana. Now Bruno's starts just after Ana's, and the vehicle
    names Bruno at once: the moved change is no scheduled one (until 2026-12-07, read50 M1,
    it was, and the vehicle named nobody, the driver before Ana, until it started)."""
    services = client.app[services_key]
    real = datetime.now(UTC).replace(microsecond=0)
    gateway_time(real - timedelta(days=1))
    await _drivers(client)
    gateway_time(real + timedelta(minutes=2))
    ana = await post(client, DRIVERS, {"driver": ANA})
    gateway_time(real + timedelta(minutes=1))  # set right, a minute on
    bruno = await post(client, DRIVERS, {"driver": BRUNO})
    # Shown at the instant it was moved to, just after Ana's (ahead of the clock for now).
    moved_to = datetime.fromisoformat(ana["start"]) + timedelta(milliseconds=1)
    assert datetime.fromisoformat(bruno["start"]) == moved_to
    vehicle_url = "/api/v1/entities/vehicle/ABC1D23"
    vehicle = await (await client.get(vehicle_url, headers=auth())).json()
    assert (vehicle.get("current_driver") or {}).get("cpf") == BRUNO, vehicle
    gateway_time(real + timedelta(minutes=1, seconds=30))  # the clock not yet at Bruno's start
    await services.flow_runner.housekeeping()
    await post(client, DRIVERS, {"driver": BRUNO}, status=200)  # again: a repeat
    vehicle = await (await client.get(vehicle_url, headers=auth())).json()
    assert (vehicle.get("current_driver") or {}).get("cpf") == BRUNO, vehicle
    gateway_time(real + timedelta(minutes=10))
    await services.flow_runner.housekeeping()  # each second, in every process
    history = await _get(client)
    assert [a["driver"]["cpf"] for a in history["items"][:2]] == [BRUNO, ANA]
    assert history["driver"]["driver"]["cpf"] == BRUNO
    vehicle = await (await client.get(vehicle_url, headers=auth())).json()
    assert vehicle["current_driver"]["cpf"] == BRUNO


async def test_a_handover_dated_now_stays_before_a_scheduled_change(client: Client) -> None:
    """A change recorded ahead of its start (scheduled) is no handover made "now": a change
    dated now is not moved after it."""
    await _drivers(client)
    ahead = datetime.now(UTC) + timedelta(days=3)
    await post(client, DRIVERS, {"driver": ANA, "start": ahead.isoformat()})
    now = await post(client, DRIVERS, {"driver": BRUNO})
    assert datetime.fromisoformat(now["start"]) < ahead - timedelta(days=2)


async def test_a_handover_dated_now_reads_only_the_times_of_the_changes_ahead_of_it(
    client: Client, watched: tuple[Any, Reads]
) -> None:
    """Each handover dated now (and each sync of `current_driver`) looks for a change dated
    now on a clock that ran fast: it read the vehicle's newest 10 changes whole, in windows
    back from the clock (4 commands and 13 documents each time, three times per handover
    here: the handover's reads were 24 commands, 48 documents). One range of the changes
    ahead of now, their `start` and `recorded_at` only: 15 commands, 9 documents (read50 L7)."""
    await _drivers(client)
    now = datetime.now(UTC)
    for n in range(12, 0, -1):  # a history: 12 handovers, a minute apart
        start = (now - timedelta(minutes=n)).isoformat()
        await post(client, DRIVERS, {"driver": ANA if n % 2 else BRUNO, "start": start})
    db, reads = watched
    client.app[services_key].store.notify.assignments._c = db["driver_assignments"]
    reads.sent.clear()

    made = await post(client, DRIVERS, {"driver": BRUNO})

    assert made["driver"]["cpf"] == BRUNO
    sent = list(reads.sent)
    plans = await read_plans(db, reads)
    times = {"_id": 0, "start": 1, "recorded_at": 1}
    ahead_reads = [
        plan for c, plan in zip(sent, plans, strict=True) if c.get("projection") == times
    ]
    assert ahead_reads, sent
    assert all(examined == 0 for _, examined in ahead_reads)  # none ahead
    assert len(plans) <= 15, sent
    assert sum(examined for _, examined in plans) <= 12, plans
