"""A tracker identifies its driver (Traccar's driverChanged from an iButton or RFID card,
Geotab's DriverChange from a driver key): the driver of ours carrying that partner id
(`attributes.traccar_driver_unique_id`, `attributes.geotab_driver_id`) drives the vehicle from
the identification's time, so a fine after it reaches them. The same identification twice is
one assignment; a late, older one does not displace a newer one; an id no driver of ours
carries is kept on the vehicle and in the event and assigns nobody. The end of an
identification (Geotab's change to UnknownDriverId, Traccar's driverChanged without an id)
ends the tracker's assignment at its time, and leaves an assignment of another source alone."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gateway.web.state import services_key
from tests.feed_doubles import GeotabDouble, geotab
from tests.flow_support import drain, fine_email_flow, get
from tests.partner_double import post
from tests.schedule_support import geotab_schedule, run_now, runner
from tests.smtp_double import SmtpFactory, smtp_server
from tests.triggers_support import (
    PAYLOADS,
    Client,
    create_trigger,
    hook,
    upload_mapping,
    upload_shipped,
)

__all__ = ["geotab", "smtp_server"]  # fixtures

ANA = {"name": "Ana Souza", "cpf": "52998224725", "email": "ana@example.com"}
BRUNO = {"name": "Bruno Lima", "cpf": "11144477735", "email": "bruno@example.com"}
DRIVERS = "/api/v1/entities/vehicle/ABC1D23/drivers"


def _payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


async def _trigger(client: Client, mapping: str) -> dict[str, Any]:
    await upload_shipped(client, mapping)
    return await create_trigger(client, name=mapping, mapping=mapping)


async def _send(client: Client, trigger: dict[str, Any], payload: Any) -> None:
    status, answer = await hook(client, trigger, payload)
    # One payload answers the write (200, 201); a page (Geotab's) answers its summary.
    assert status in (200, 201) and answer.get("summary", {}).get("failed", 0) == 0, answer


async def _fine(client: Client, key: str, at: str) -> None:
    fine = {"kind": "fine", "key": key, "ait_number": key, "amount_brl": 130.16}
    body = {**fine, "status": "open", "plate": "ABC1D23", "occurred_at": at}
    await post(client, "/api/v1/entities/other", body)


async def test_a_traccar_driver_change_assigns_our_driver_and_a_later_fine_reaches_them(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await fine_email_flow(client, smtp.port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    bruno = {**BRUNO, "attributes": {"traccar_driver_unique_id": "01A2B3C4D5E6"}}
    await post(client, "/api/v1/entities/driver", bruno)
    await post(client, DRIVERS, {"driver": ANA["cpf"], "start": "2026-11-20T08:00:00Z"})

    # Bruno's iButton on ABC1D23 at 2026-11-21T08:10:05Z, sent twice (Traccar retries).
    payload = _payload("traccar_event_forward_driver_changed.json")
    traccar = await _trigger(client, "traccar-event")
    await _send(client, traccar, payload)
    await _send(client, traccar, payload)
    await drain(client.app[services_key])

    newest, older = (await get(client, DRIVERS))["items"]  # one assignment, not two
    assert newest["driver"]["cpf"] == BRUNO["cpf"] and newest["source"] == "tracker"
    assert newest["start"] == "2026-11-21T08:10:05+00:00"
    assert newest["ref"] == "traccar_driver_unique_id:01A2B3C4D5E6"
    assert older["driver"]["cpf"] == ANA["cpf"] and older["end"] == newest["start"]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"]["name"] == "Bruno Lima"

    await _fine(client, "BEFORE", "2026-11-21T08:10:04Z")
    await _fine(client, "AFTER", "2026-11-21T09:30:00-03:00")
    await drain(client.app[services_key])
    got = {m.message["Subject"]: m.recipients for m in smtp.received}
    assert got == {"BEFORE": [ANA["email"]], "AFTER": [BRUNO["email"]]}


async def test_a_geotab_driver_change_assigns_our_driver_until_the_logout_and_fines_follow(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await fine_email_flow(client, smtp.port)
    vehicle = {"plate": "ABC1D23", "attributes": {"tracker_id": "b1"}}
    await post(client, "/api/v1/entities/vehicle", vehicle)
    await post(client, "/api/v1/entities/driver", ANA)
    bruno = {**BRUNO, "attributes": {"geotab_driver_id": "b3A"}}
    await post(client, "/api/v1/entities/driver", bruno)

    # b3A's driver key at 08:02:10.120Z; then UnknownDriverId at 13:13:00.742Z (the end of the
    # identification), which ends Bruno's assignment there, and assigns nobody else.
    geotab = await _trigger(client, "geotab-driverchange")
    await _send(client, geotab, _payload("geotab_getfeed_driverchange.json"))
    await drain(client.app[services_key])

    ended, assignment = (await get(client, DRIVERS))["items"]
    assert assignment["driver"]["cpf"] == BRUNO["cpf"] and assignment["source"] == "tracker"
    assert assignment["start"] == "2026-01-21T08:02:10.120000+00:00"
    assert assignment["ref"] == "geotab_driver_id:b3A"
    assert assignment["end"] == ended["start"] == "2026-01-21T13:13:00.742000+00:00"
    assert ended["driver"] is None and ended["end"] is None
    assert (ended["source"], ended["ref"]) == ("tracker", "geotab_driver_id:b3A")  # what ended
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle.get("current_driver") is None
    [unidentified] = (await get(client, "/api/v1/events?type=vehicle.driver.unidentified"))["items"]
    assert "driver" not in unidentified["detail"]  # UnknownDriverId names nobody

    await _fine(client, "G1", "2026-01-21T10:00:00-03:00")  # 13:00Z, Bruno's key still in
    await _fine(client, "G2", "2026-01-21T10:30:00-03:00")  # 13:30Z, after the logout
    await drain(client.app[services_key])
    assert [(m.message["Subject"], m.recipients) for m in smtp.received] == [
        ("G1", [BRUNO["email"]])
    ]

    # The same page read again (a feed restarted from an older version) changes nothing.
    await _send(client, geotab, _payload("geotab_getfeed_driverchange.json"))
    await drain(client.app[services_key])
    assert len((await get(client, DRIVERS))["items"]) == 2


async def test_geotab_records_uploaded_late_still_assign_and_end_at_their_times(
    client: Client,
) -> None:
    """A GO device out of coverage uploads its buffered DriverChange records after newer
    ones: each still takes its place in the vehicle's history, and a page read again adds
    nothing (each record is one occurrence)."""
    vehicle = {"plate": "ABC1D23", "attributes": {"tracker_id": "b1"}}
    await post(client, "/api/v1/entities/vehicle", vehicle)
    await post(
        client, "/api/v1/entities/driver", {**ANA, "attributes": {"geotab_driver_id": "c4B"}}
    )
    bruno = {**BRUNO, "attributes": {"geotab_driver_id": "b3A"}}
    await post(client, "/api/v1/entities/driver", bruno)
    key, logout = _payload("geotab_getfeed_driverchange.json")["result"]["data"]  # 08:02, 13:13
    ana_late = {**key, "id": "aAna14", "driver": {"id": "c4B"}, "dateTime": "2026-01-21T14:00:00Z"}
    ana_early = {**ana_late, "id": "aAna06", "dateTime": "2026-01-21T06:00:00Z"}
    geotab = await _trigger(client, "geotab-driverchange")
    pages = [[key], [ana_late], [logout], [ana_early]]  # the last two uploaded late
    for n, records in enumerate(pages * 2):  # then the whole feed read again
        await _send(client, geotab, {"result": {"data": records, "toVersion": str(n)}})
        await drain(client.app[services_key])

    history = [
        (change["start"][11:16], (change["driver"] or {}).get("cpf"))
        for change in reversed((await get(client, DRIVERS))["items"])
    ]
    assert history == [
        ("06:00", ANA["cpf"]),
        ("08:02", BRUNO["cpf"]),
        ("13:13", None),
        ("14:00", ANA["cpf"]),
    ]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["attributes"]["geotab_driver_id"] == "c4B"  # the newest record's


async def test_a_logout_leaves_an_assignment_another_source_recorded_alone(
    client: Client,
) -> None:
    """An admin assigned Ana after Bruno's key: Geotab's logout ends no one's assignment then
    (it is not the tracker's). A logout with nothing in force records "nobody" (an
    identification relayed after it lasts only up to it), which the admin's change follows."""
    vehicle = {"plate": "ABC1D23", "attributes": {"tracker_id": "b1"}}
    await post(client, "/api/v1/entities/vehicle", vehicle)
    await post(client, "/api/v1/entities/driver", ANA)
    await post(
        client, "/api/v1/entities/driver", {**BRUNO, "attributes": {"geotab_driver_id": "b3A"}}
    )
    page = _payload("geotab_getfeed_driverchange.json")
    key, logout = page["result"]["data"]
    geotab = await _trigger(client, "geotab-driverchange")

    early = {**logout, "id": "aLogout1", "dateTime": "2026-01-21T06:00:00.000Z"}
    await _send(client, geotab, {"result": {"data": [early], "toVersion": "1"}})
    await drain(client.app[services_key])
    [nobody] = (await get(client, DRIVERS))["items"]
    assert nobody["driver"] is None and nobody["source"] == "tracker"

    await post(client, DRIVERS, {"driver": ANA["cpf"], "start": "2026-01-21T07:00:00Z"})
    await _send(client, geotab, {"result": {"data": [key], "toVersion": "2"}})
    await drain(client.app[services_key])  # Bruno's key at 08:02
    await post(client, DRIVERS, {"driver": ANA["cpf"], "start": "2026-01-21T09:00:00Z"})
    later = {**logout, "id": "aLogout2", "dateTime": "2026-01-21T14:00:00.000Z"}
    await _send(client, geotab, {"result": {"data": [later], "toVersion": "3"}})
    await drain(client.app[services_key])

    logouts = (await get(client, "/api/v1/events?type=vehicle.driver.unidentified"))["items"]
    assert len(logouts) == 2  # both reported; neither ended anything
    admin, tracker, first, nobody = (await get(client, DRIVERS))["items"]
    assert admin["driver"]["cpf"] == ANA["cpf"] and admin["source"] == "admin"
    assert admin["end"] is None  # the logout at 14:00 left the admin's assignment alone
    assert tracker["driver"]["cpf"] == BRUNO["cpf"] and tracker["end"] == admin["start"]
    assert first["driver"]["cpf"] == ANA["cpf"] and nobody["end"] == first["start"]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"]["cpf"] == ANA["cpf"]


async def test_a_traccar_driver_change_without_an_id_ends_the_identification(
    client: Client,
) -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    bruno = {**BRUNO, "attributes": {"traccar_driver_unique_id": "01A2B3C4D5E6"}}
    await post(client, "/api/v1/entities/driver", bruno)
    identified = _payload("traccar_event_forward_driver_changed.json")  # 08:10:05Z
    removed = copy.deepcopy(identified)
    removed["event"]["id"] += 1
    removed["event"]["attributes"]["driverUniqueId"] = ""
    removed["event"]["eventTime"] = "2026-11-21T11:40:00.000+00:00"
    removed["position"]["fixTime"] = "2026-11-21T11:40:00.000+00:00"
    traccar = await _trigger(client, "traccar-event")
    await _send(client, traccar, identified)
    await drain(client.app[services_key])
    await _send(client, traccar, removed)
    await _send(client, traccar, removed)  # Traccar retries: one event, one end
    await drain(client.app[services_key])

    ended, assignment = (await get(client, DRIVERS))["items"]
    assert assignment["driver"]["cpf"] == BRUNO["cpf"]
    assert assignment["end"] == ended["start"] == "2026-11-21T11:40:00+00:00"
    assert ended["driver"] is None and ended["ref"] == "traccar_driver_unique_id:01A2B3C4D5E6"
    events = (await get(client, "/api/v1/events?type=vehicle.driver.identified"))["items"]
    assert len(events) == 1  # an empty id is no identification of a driver named ""
    [unidentified] = (await get(client, "/api/v1/events?type=vehicle.driver.unidentified"))["items"]
    assert unidentified["detail"] == {
        "traccar_event": "driverChanged",
        "occurred_at": "2026-11-21T11:40:00Z",
    }
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["attributes"]["traccar_driver_unique_id"] == ""
    assert vehicle.get("current_driver") is None


def _traccar_change(unique_id: str, at: str, event_id: int) -> Any:
    """Traccar's driverChanged forward naming `unique_id` ("" for none) at `at`."""
    change = _payload("traccar_event_forward_driver_changed.json")
    change["event"]["id"] = event_id  # one id is announced once
    change["event"]["attributes"]["driverUniqueId"] = unique_id
    change["event"]["eventTime"] = change["position"]["fixTime"] = at
    return change


async def test_an_end_relayed_before_its_identification_still_ends_it(client: Client) -> None:
    """Traccar retries a forward that failed: the identification may come after the end of
    it. The end is recorded all the same, and the identification lasts only up to it."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    bruno = {**BRUNO, "attributes": {"traccar_driver_unique_id": "B"}}
    await post(client, "/api/v1/entities/driver", bruno)
    traccar = await _trigger(client, "traccar-event")
    await _send(client, traccar, _traccar_change("", "2026-11-21T11:40:00.000+00:00", 2))
    await drain(client.app[services_key])
    await _send(client, traccar, _traccar_change("B", "2026-11-21T08:10:00.000+00:00", 1))
    await drain(client.app[services_key])

    ended, identified = (await get(client, DRIVERS))["items"]
    assert identified["driver"]["cpf"] == BRUNO["cpf"]
    assert identified["start"] == "2026-11-21T08:10:00+00:00"
    assert identified["end"] == ended["start"] == "2026-11-21T11:40:00+00:00"
    assert ended["driver"] is None and ended["source"] == "tracker"
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle.get("current_driver") is None


@pytest.mark.parametrize("end_first", [False, True])
async def test_an_identification_at_the_instant_of_an_end_stands_whichever_comes_first(
    client: Client, end_first: bool
) -> None:
    """A's key removed and B's read at the same second: B drives from then, in either
    order of arrival (the end does not overwrite the identification at its instant)."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    for person, unique_id in ((ANA, "A"), (BRUNO, "B")):
        driver = {**person, "attributes": {"traccar_driver_unique_id": unique_id}}
        await post(client, "/api/v1/entities/driver", driver)
    traccar = await _trigger(client, "traccar-event")
    await _send(client, traccar, _traccar_change("A", "2026-11-21T07:00:00.000+00:00", 1))
    await drain(client.app[services_key])
    same_instant = [
        _traccar_change("B", "2026-11-21T08:10:05.000+00:00", 2),
        _traccar_change("", "2026-11-21T08:10:05.000+00:00", 3),
    ]
    for change in reversed(same_instant) if end_first else same_instant:
        await _send(client, traccar, change)
        await drain(client.app[services_key])

    newest, first = (await get(client, DRIVERS))["items"]
    assert first["driver"]["cpf"] == ANA["cpf"]
    assert newest["driver"]["cpf"] == BRUNO["cpf"] and newest["end"] is None
    assert newest["start"] == first["end"] == "2026-11-21T08:10:05+00:00"
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"]["cpf"] == BRUNO["cpf"]


async def test_a_late_older_identification_fills_only_the_gap_before_the_newer_one(
    client: Client,
) -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(
        client, "/api/v1/entities/driver", {**ANA, "attributes": {"traccar_driver_unique_id": "A"}}
    )
    bruno = {**BRUNO, "attributes": {"traccar_driver_unique_id": "B"}}
    await post(client, "/api/v1/entities/driver", bruno)
    newer = _payload("traccar_event_forward_driver_changed.json")
    newer["event"]["attributes"]["driverUniqueId"] = "B"  # 2026-11-21T08:10:05Z
    late = copy.deepcopy(newer)
    late["event"]["attributes"]["driverUniqueId"] = "A"
    late["event"]["id"] += 1  # another event of Traccar's (one id is announced once)
    late["event"]["eventTime"] = "2026-11-21T07:00:00.000+00:00"
    late["position"]["fixTime"] = "2026-11-21T07:00:00.000+00:00"
    traccar = await _trigger(client, "traccar-event")
    await _send(client, traccar, newer)
    await drain(client.app[services_key])
    await _send(client, traccar, late)
    await drain(client.app[services_key])

    newest, older = (await get(client, DRIVERS))["items"]
    assert newest["driver"]["cpf"] == BRUNO["cpf"] and newest["end"] is None
    assert older["driver"]["cpf"] == ANA["cpf"] and older["start"] == "2026-11-21T07:00:00+00:00"
    assert older["end"] == newest["start"]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"]["cpf"] == BRUNO["cpf"]
    # The vehicle keeps the newer id too (only forward, by the fix's time).
    assert vehicle["attributes"]["traccar_driver_unique_id"] == "B"


async def test_an_unknown_partner_driver_id_is_kept_and_assigns_nobody(client: Client) -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)  # carries no Traccar id
    await post(client, DRIVERS, {"driver": ANA["cpf"], "start": "2026-11-20T08:00:00Z"})
    traccar = await _trigger(client, "traccar-event")
    await _send(client, traccar, _payload("traccar_event_forward_driver_changed.json"))
    services = client.app[services_key]
    await drain(services)

    [assignment] = (await get(client, DRIVERS))["items"]  # Ana still drives
    assert assignment["driver"]["cpf"] == ANA["cpf"] and assignment["end"] is None
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["attributes"]["traccar_driver_unique_id"] == "01A2B3C4D5E6"
    [identified] = (await get(client, "/api/v1/events?type=vehicle.driver.identified"))["items"]
    assert identified["detail"]["driver"] == {
        "attributes": {"traccar_driver_unique_id": "01A2B3C4D5E6"}
    }
    assert await services.store.entities.pending_outboxes(10) == []  # nothing held up


async def test_an_id_two_drivers_carry_assigns_neither(client: Client) -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    shared = {"attributes": {"traccar_driver_unique_id": "01A2B3C4D5E6"}}
    await post(client, "/api/v1/entities/driver", {**ANA, **shared})
    await post(client, "/api/v1/entities/driver", {**BRUNO, **shared})
    traccar = await _trigger(client, "traccar-event")
    await _send(client, traccar, _payload("traccar_event_forward_driver_changed.json"))
    await drain(client.app[services_key])
    assert (await get(client, DRIVERS))["items"] == []


BADGES = """
name: badge-reader
direction: inbound
entity_type: vehicle
key: [plate]
emit:
  - {type: vehicle.driver.identified, when: {from: event, equals: badge_in}, announce: every}
  - {type: vehicle.driver.unidentified, when: {from: event, equals: badge_out}, announce: every}
fields:
  plate: plate
event_data:
  occurred_at: {from: at, transforms: [{datetime: {parse: iso8601}}]}
  driver.attributes.badge_id: badge
"""


async def test_a_logout_that_names_another_driver_ends_nobody_else(client: Client) -> None:
    """Any mapping: a logout whose detail names the driver who left ends that driver's
    identification only, not the one in force of another badge."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", {**ANA, "attributes": {"badge_id": "A-1"}})
    await post(client, "/api/v1/entities/driver", {**BRUNO, "attributes": {"badge_id": "B-2"}})
    await upload_mapping(client, BADGES)
    badges = await create_trigger(client, name="badges", mapping="badge-reader")

    async def read(event: str, badge: str, at: str) -> None:
        await _send(client, badges, {"plate": "ABC1D23", "event": event, "badge": badge, "at": at})
        await drain(client.app[services_key])

    await read("badge_in", "A-1", "2026-11-21T08:00:00Z")
    await read("badge_in", "B-2", "2026-11-21T09:00:00Z")  # Bruno took over, no badge out
    await read("badge_out", "A-1", "2026-11-21T10:00:00Z")  # Ana's, late: Bruno drives on
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["current_driver"]["cpf"] == BRUNO["cpf"]
    assert len((await get(client, DRIVERS))["items"]) == 2
    await read("badge_out", "B-2", "2026-11-21T11:00:00Z")

    ended, bruno, ana = (await get(client, DRIVERS))["items"]
    assert [ana["driver"]["cpf"], bruno["driver"]["cpf"], ended["driver"]] == [
        ANA["cpf"],
        BRUNO["cpf"],
        None,
    ]
    assert ended["start"] == "2026-11-21T11:00:00+00:00" and ended["ref"] == "badge_id:B-2"


async def test_a_geotab_driverchange_schedule_assigns_then_ends_at_the_logout(
    client: Client, geotab: GeotabDouble
) -> None:
    """The feed path: a schedule reads Geotab's DriverChange feed page by page; the key and,
    on a later run, the logout act as they do through a trigger."""
    key, logout = _payload("geotab_getfeed_driverchange.json")["result"]["data"]
    geotab.records = [{**key, "device": {"id": "b3A"}}]  # ABC1D23's device in geotab_schedule
    await post(
        client, "/api/v1/entities/driver", {**BRUNO, "attributes": {"geotab_driver_id": "b3A"}}
    )
    await upload_shipped(client, "geotab-driverchange")
    request = {"body": {"method": "GetFeed", "params": {"typeName": "DriverChange"}}}
    target = {"entity_type": "vehicle", "mapping": "geotab-driverchange"}
    schedule = await geotab_schedule(
        client, geotab, name="geotab-driverchanges", request=request, target=target
    )
    assert await runner(client).run_until_idle() == {"ok": 1}
    await drain(client.app[services_key])
    [assignment] = (await get(client, DRIVERS))["items"]
    assert assignment["driver"]["cpf"] == BRUNO["cpf"] and assignment["end"] is None

    geotab.records.append({**logout, "device": {"id": "b3A"}})
    await run_now(client, schedule["id"])
    assert await runner(client).run_until_idle() == {"ok": 1}
    await drain(client.app[services_key])
    ended, assignment = (await get(client, DRIVERS))["items"]
    assert assignment["end"] == ended["start"] == "2026-01-21T13:13:00.742000+00:00"
    assert ended["driver"] is None and ended["source"] == "tracker"
