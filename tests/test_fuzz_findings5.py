"""Found by the fifth hunt (position triggers, geofences and plans, assignments, faults); one
test per finding, each answered or folded as documented, never a 500 or a stuck fold."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.partner_double import create_action, create_partner
from tests.support import auth
from tests.triggers_support import (
    MAPPINGS,
    PAYLOADS,
    VEHICLE,
    create_position_trigger,
    create_trigger,
    hook,
    upload_mapping,
    upload_shipped,
)
from tests.ui_support import csrf, log_in, make_user

Client = TestClient[Any, Any]


# Device times a few minutes old: within the fold's quality gates' horizon.
START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)


def _recent(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def _post(client: Client, path: str, body: Any, tenant: str = "acme") -> dict[str, Any]:
    response = await client.post(path, json=body, headers=auth(tenant))
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def _vehicle(client: Client, tenant: str = "acme", **data: Any) -> dict[str, Any]:
    return await _post(client, "/api/v1/entities/vehicle", {**VEHICLE, **data}, tenant)


async def _get(client: Client, path: str, tenant: str = "acme") -> dict[str, Any]:
    response = await client.get(path, headers=auth(tenant))
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def test_an_odometer_of_millions_of_km_on_a_plan_by_days_folds_and_announces_by_distance(
    client: Client,
) -> None:
    """A plan every 1 km or 1 day puts cycle 3,000,000 of a 3,000,000 km odometer 8,000 years
    ahead, past year 9999: working out its due time raised OverflowError inside the fold,
    which retried the same pass for ever, so no vehicle of any tenant folded again. Now
    time counts its own cycles (a day each from when the plan first saw the vehicle: the
    first fix's receipt, `maintenance.step`): the
    due is announced by its distance, with the next day due (and a cycle past the calendar,
    were there one, would have no due time)."""
    services = client.app[services_key]
    await _post(client, "/api/v1/maintenance-plans", {"name": "o", "every_km": 1, "every_days": 1})
    await _vehicle(client)
    await _vehicle(client, "other")  # another tenant's vehicle, folded in the same passes
    trigger = await create_position_trigger(client)
    others = await create_position_trigger(client, "other")
    here = {"plate": "ABC1D23", "lat": -23.55, "lon": -46.63}
    fixes = [  # 2.49 km north in a minute, the device counting 2.5
        {**here, "time": _recent(0), "odometer_km": 3_000_000.0},
        {**here, "lat": -23.5276, "time": _recent(60), "odometer_km": 3_000_002.5},
    ]
    for sent in fixes:
        assert (await hook(client, trigger, sent))[0] == 201
        assert (await hook(client, others, {**sent, "odometer_km": None}))[0] == 201
        await services.fold.run_until_idle()
    car = await _get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert car["odometer_km"] == 3_000_002.5
    assert car["last_position"]["time"].startswith(_recent(60)[:19])
    await services.relay.run_until_idle()
    events = await _get(client, "/api/v1/events?type=vehicle.maintenance.due")
    # Each multiple crossed is announced (SPEC §6): 3,000,001 and 3,000,002 km.
    dues = {e["detail"]["due_km"]: e for e in events["items"]}
    assert sorted(dues) == [3_000_001, 3_000_002]
    due = dues[3_000_002]
    assert due["detail"]["reason"] == "distance"
    next_day = datetime.fromisoformat(due["detail"]["due_at"])
    assert datetime.now(UTC) < next_day <= datetime.now(UTC) + timedelta(days=1)
    theirs = await _get(client, "/api/v1/entities/vehicle/ABC1D23", "other")
    assert theirs["last_position"]["time"].startswith(_recent(60)[:19])


async def test_a_device_odometer_past_any_odometers_range_is_refused_not_taken(
    client: Client,
) -> None:
    """A fix carrying `odometer_km: 1e308` (or a Traccar odometer of 10^15 m) was stored and
    folded: the first device odometer a vehicle's fold sees re-baselines its count, and a
    device odometer never takes it back down, so the vehicle read 1e308 km for good. Such a
    value is refused at the field (the bound a service's km already had)."""
    services = client.app[services_key]
    await _vehicle(client)
    trigger = await create_position_trigger(client)
    here = {"plate": "ABC1D23", "lat": -23.55, "lon": -46.63}
    for odometer in (1e308, 10_000_000.1, 10**15):
        status, body = await hook(
            client, trigger, {**here, "time": _recent(0), "odometer_km": odometer}
        )
        assert status == 422, body
        assert [(e["pointer"], e["keyword"]) for e in body["errors"]] == [
            ("/odometer_km", "maximum")
        ], body
    await upload_shipped(client, "traccar-position")
    traccar = await create_position_trigger(client, name="traccar", mapping="traccar-position")
    forward = json.loads((PAYLOADS / "traccar_position_forward.json").read_text())
    forward["position"]["fixTime"] = _recent(0)
    forward["position"]["attributes"]["odometer"] = 10**15  # metres
    status, body = await hook(client, traccar, forward)
    assert status == 422, body
    assert body["errors"][0]["pointer"] == "/position/attributes/odometer", body
    status, body = await hook(
        client, trigger, {**here, "time": _recent(1), "odometer_km": 9_999_999.9}
    )
    assert status == 201, body
    await services.fold.run_until_idle()
    assert (await _get(client, "/api/v1/entities/vehicle/ABC1D23"))["odometer_km"] == 9_999_999.9


async def test_a_delete_against_a_version_no_longer_current_is_refused_and_deletes_nothing(
    client: Client,
) -> None:
    """`If-Match` guarded PATCH and PUT only: a DELETE naming a version another admin had
    changed since was applied (204), deleting a geofence or plan the client had never seen
    as it is (RFC 9110 §13.1.1: If-Match guards any state-changing method). Now it is the
    same 412 a stale PATCH gets, and the current tag (or `*`) deletes."""
    circle = {"lat": -23.5, "lon": -46.6, "radius_m": 300}
    fence = await _post(
        client, "/api/v1/geofences", {"name": "pátio", "kind": "authorized", "circle": circle}
    )
    plan = await _post(client, "/api/v1/maintenance-plans", {"name": "óleo", "every_km": 10_000})
    for path, change in (
        (f"/api/v1/geofences/{fence['id']}", {"margin_m": 10}),
        (f"/api/v1/maintenance-plans/{plan['id']}", {"every_km": 5_000}),
    ):
        read = await client.get(path, headers=auth())
        stale = read.headers["ETag"]
        changed = await client.patch(path, json=change, headers=auth())
        assert changed.status == 200, await changed.text()
        refused = await client.delete(path, headers={**auth(), "If-Match": stale})
        problem = await refused.json()
        assert refused.status == 412, problem
        assert problem["type"].endswith("/precondition-failed")
        assert (await _get(client, path))["id"] == path.rsplit("/", 1)[1]  # still there
        viewer = await client.delete(path, headers={**auth(role="viewer"), "If-Match": "*"})
        assert viewer.status == 403  # the role first, whatever the tag
        current = (await client.get(path, headers=auth())).headers["ETag"]
        deleted = await client.delete(path, headers={**auth(), "If-Match": f'"x", {current}'})
        assert deleted.status == 204, await deleted.text()
        gone = await client.delete(path, headers={**auth(), "If-Match": "*"})
        assert gone.status == 404


DRIVERS = "/api/v1/entities/vehicle/ABC1D23/drivers"


async def _driver_and_vehicle(client: Client) -> None:
    await _vehicle(client)
    await _post(client, "/api/v1/entities/driver", {"name": "Ana", "cpf": "52998224725"})


async def test_a_driver_assigned_now_drives_from_that_millisecond_and_the_change_lasts(
    client: Client,
) -> None:
    """A change's id held its start to the microsecond (`now`, by default), the database its
    start to the millisecond: the change sorted after its own start, so the answer and the
    history said it ended where it began (`end` == `start`), and the vehicle had no driver in
    the rest of that millisecond. Starts are kept to the millisecond now."""
    await _driver_and_vehicle(client)
    assigned = await _post(client, DRIVERS, {"driver": "52998224725"})
    assert assigned["end"] is None, assigned
    now = await _get(client, DRIVERS)
    assert now["driver"]["id"] == assigned["id"] and now["driver"]["end"] is None
    assert [item["end"] for item in now["items"]] == [None]
    late = await _post(client, DRIVERS, {"driver": None, "start": "2026-12-01T10:00:00.5005Z"})
    assert late["id"].endswith(":2026-12-01T10:00:00.500000Z"), late
    assert late["start"].startswith("2026-12-01T10:00:00.500")
    assert late["end"] == assigned["start"]  # until the change made now, not its own start
    within = await _get(client, f"{DRIVERS}?at=2026-12-01T10:00:00.5002Z")
    assert within["driver"]["id"] == late["id"]


async def test_the_driver_at_a_time_far_in_the_past_or_future_is_answered_not_a_500(
    client: Client,
) -> None:
    """`?at=9999-12-31T23:59:59-12:00` (past the calendar once in UTC) was a 500; a year
    before 1000 was written with fewer digits (`500-01-01...`), sorted after every change, and
    answered with today's driver. Lower-case `t` and `z` (RFC 3339) were refused."""
    await _driver_and_vehicle(client)
    assigned = await _post(
        client, DRIVERS, {"driver": "52998224725", "start": "2026-12-01t10:00:00z"}
    )
    for at, expected in (
        ("9999-12-31T23:59:59-12:00", assigned["id"]),
        ("9999-12-31T23:59:59.999999Z", assigned["id"]),
        ("0001-01-01T00:30:00%2B01:00", None),
        ("0500-01-01T00:00:00Z", None),
        ("0999-12-31T23:59:59Z", None),
    ):
        answer = await _get(client, f"{DRIVERS}?at={at}")
        assert (answer["driver"] or {}).get("id") == expected, (at, answer)


async def test_a_vehicle_whose_track_holds_a_fix_dated_year_one_has_its_page(
    client: Client,
) -> None:
    """A fix a device dated `0001-01-01T00:00:00Z` is stored (and flagged `too_old` by the
    fold), and the vehicle's admin page lists its recent fixes in Brasília time: three hours
    west of UTC is before year 1, and the page was a 500 for as long as the fix was recent."""
    services = client.app[services_key]
    car = await _vehicle(client)
    trigger = await create_position_trigger(client)
    for moment in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z"):
        status, body = await hook(
            client, trigger, {"plate": "ABC1D23", "time": moment, "lat": 1, "lon": 1}
        )
        assert status == 201, body
    await services.fold.run_until_idle()
    await make_user(services)
    await log_in(client)
    page = await client.get(f"/admin/entities/vehicle/{car['id']}")
    text = await page.text()
    assert page.status == 200, text[:2000]
    # Each names its zone: year one in its own offset, the other in Brasília time.
    assert "01/01/1 00:00:00 (UTC+00:00)" in text and "31/12/9999 20:59:59 (Brasília)" in text


async def test_a_message_naming_a_time_of_year_one_renders_it(client: Client) -> None:
    """The `datetime` filter of message templates (a fine's time, in Brasília time by default)
    failed the whole message on `0001-01-01T00:00:00Z`, three hours west of UTC being before
    year 1: the fine's e-mail was never sent. The time is shown in its own offset there."""
    template = {
        "name": "fine",
        "channel_type": "email",
        "locales": {"pt-BR": {"subject": "Multa", "text": "em {{ at|datetime }}."}},
    }
    for at, shown in (
        ("0001-01-01T00:00:00Z", "em 01/01/1 00:00."),
        ("2026-12-01T15:00:00Z", "em 01/12/2026 12:00."),
    ):
        response = await client.post(
            "/api/v1/templates/preview",
            json={"template": template, "context": {"at": at}},
            headers=auth(),
        )
        body = await response.json()
        assert response.status == 200, body
        assert body["parts"]["text"] == shown, body


async def test_a_definition_nested_too_deeply_is_refused_in_words(client: Client) -> None:
    """A flow (or mapping) file nested past 32 levels was refused as "file has is nested more
    than 32 levels deep"."""
    body = b"name: f\nx: " + b"[" * 40 + b"]" * 40 + b"\n"
    response = await client.post(
        "/api/v1/flows", data=body, headers={**auth(), "Content-Type": "application/yaml"}
    )
    problem = await response.json()
    assert response.status == 422, problem
    assert problem["errors"][0]["message"] == "file is nested more than 32 levels deep"


async def test_a_value_just_out_of_range_is_named_as_sent(client: Client) -> None:
    """`heading: 360.0000001` was refused as "between 0 and 360, not 360"."""
    await _vehicle(client)
    trigger = await create_position_trigger(client)
    here = {"plate": "ABC1D23", "time": _recent(0), "lat": -23.55, "lon": -46.63}
    for extra, said in (
        ({"heading": 360.0000001}, "/heading: between 0 and 360, not 360.0000001"),
        ({"accuracy_m": -1e-11}, "/accuracy_m: at least 0, not -1e-11"),
        ({"odometer_km": 1e308}, "/odometer_km: between 0 and 1e+07, not 1e+308"),
        ({"speed_kmh": -1}, "/speed_kmh: at least 0, not -1"),
    ):
        status, body = await hook(client, trigger, {**here, **extra})
        assert status == 422, body
        assert body["errors"][0]["message"] == said, body


async def test_a_fix_for_a_vehicle_just_deleted_or_created_again_finds_what_exists_now(
    client: Client,
) -> None:
    """A resolved plate was trusted for 30 s even after the vehicle was deleted: its next fix
    was answered 201 and filed under the deleted vehicle, and so were the fixes of a vehicle
    created again with that plate, whose own track stayed empty. A vehicle deleted through
    the process that resolves the fixes is forgotten at once."""
    first = await _vehicle(client)
    trigger = await create_position_trigger(client)
    here = {"plate": "ABC1D23", "lat": -23.55, "lon": -46.63}
    assert (await hook(client, trigger, {**here, "time": _recent(0)}))[0] == 201
    deleted = await client.delete("/api/v1/entities/vehicle/ABC1D23", headers=auth())
    assert deleted.status == 204
    status, body = await hook(client, trigger, {**here, "time": _recent(10)})
    assert status == 422 and body["errors"][0]["keyword"] == "unknown_vehicle", body
    again = await _vehicle(client)
    assert again["id"] != first["id"]
    status, body = await hook(client, trigger, {**here, "time": _recent(20)})
    assert status == 201 and body["vehicle"]["id"] == again["id"], body
    track = await _get(client, "/api/v1/entities/vehicle/ABC1D23/positions")
    assert [fix["time"] for fix in track["items"]] == [_recent(20)]


async def test_a_time_with_a_nul_character_is_no_time(client: Client) -> None:
    """CPython's ISO reader skips a NUL between a time and its offset: a fix's
    `2026-12-01T12:00:00\\x00Z` (and a driver's start) was read as `12:00:00Z` and stored."""
    await _driver_and_vehicle(client)
    trigger = await create_position_trigger(client)
    here = {"plate": "ABC1D23", "lat": -23.55, "lon": -46.63}
    for moment in (_recent(0) + "\x00", _recent(0)[:-1] + "\x00Z", _recent(0)[:-1] + "\x00+00:00"):
        status, body = await hook(client, trigger, {**here, "time": moment})
        assert status == 422, body
        assert [(e["pointer"], e["keyword"]) for e in body["errors"]] == [("/time", "format")]
        response = await client.post(
            DRIVERS, json={"driver": "52998224725", "start": moment}, headers=auth()
        )
        assert response.status == 422, await response.text()
    assert (await _get(client, "/api/v1/entities/vehicle/ABC1D23/positions"))["items"] == []


async def _paused_schedule(client: Client) -> dict[str, Any]:
    """A paused schedule's body (no cursor yet): a proxy action of a partner to poll, and a
    mapping of what it answers onto vehicles."""
    partner = await create_partner(client, "https://erp.example.com")
    action = await create_action(
        client, partner["id"], method="GET", path="/veiculos", mode="proxy"
    )
    mapping = "name: m\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields: {plate: p}"
    await upload_mapping(client, mapping)
    return {
        "name": "frota",
        "action_id": action["id"],
        "every": "1h",
        "target": {"type": "entities", "entity_type": "vehicle", "mapping": "m"},
        "status": "paused",
    }


async def test_a_stepped_cursor_starting_past_what_can_be_stored_is_refused_at_the_field(
    client: Client,
) -> None:
    """A page-number cursor's `initial` of 5,000 digits was a 500 (`int()` refuses text that
    long); one past 2**63 a 422 naming no field; one just below it was taken, and its next
    page could never be stored. `initial` is now a whole number from 0 to 2**53 - 1."""
    body = await _paused_schedule(client)
    for initial, keyword in (
        ("9" * 5000, "type"),
        ("99999999999999999999", "type"),
        (2**63 - 1, "maximum"),
        (-5, "minimum"),
    ):
        cursor = {"step": 1, "initial": initial, "param": "query.page"}
        response = await client.post(
            "/api/v1/schedules", json={**body, "cursor": cursor}, headers=auth()
        )
        problem = await response.json()
        assert response.status == 422, problem
        assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [
            ("/cursor/initial", keyword)
        ], problem
    cursor = {"step": 100, "initial": "0", "param": "query.offset"}
    created = await _post(client, "/api/v1/schedules", {**body, "cursor": cursor})
    assert created["cursor"]["initial"] == 0


async def test_a_number_of_thousands_of_digits_in_a_query_or_path_is_refused_not_a_500(
    client: Client,
) -> None:
    """Python's int() refuses text past 4,300 digits (ValueError): `?limit=` of 5,000 digits on
    every list, and a mapping version of as many, were 500s."""
    digits = "9" * 5000
    for path in (
        f"/api/v1/geofences?limit={digits}",
        f"/api/v1/entities/vehicle?limit={digits}",
        f"/api/v1/events?limit={digits}",
        f"/api/v1/entities/vehicle/ABC1D23/positions?limit={digits}",
    ):
        response = await client.get(path, headers=auth())
        problem = await response.json()
        assert response.status == 400, (path[:60], problem)
        assert problem["detail"] == "limit must be between 1 and 200", problem
    response = await client.get(f"/api/v1/mappings/m/versions/{digits}", headers=auth())
    assert response.status in (400, 422), await response.text()
    response = await client.post(
        "/api/v1/mappings/m/activate", json={"version": digits}, headers=auth()
    )
    problem = await response.json()
    assert response.status == 422, problem
    assert problem["errors"][0]["pointer"] == "/version", problem


async def test_the_admin_ui_refuses_a_number_of_thousands_of_digits_not_a_500(
    client: Client,
) -> None:
    """The admin UI read version numbers and a rotation's grace period with int(): thousands
    of digits were 500s (a version page, a diff, a trigger's rotation)."""
    services = client.app[services_key]
    await make_user(services)
    await log_in(client)
    digits = "9" * 5000
    await upload_mapping(client, (MAPPINGS / "traccar-position.yaml").read_text())
    for path in (
        f"/admin/mappings/traccar-position/versions/{digits}",
        f"/admin/mappings/traccar-position/diff?from=1&to={digits}",
    ):
        response = await client.get(path)
        assert response.status in (400, 404, 422), (path[:60], response.status)
    trigger = await create_position_trigger(client)
    token = await csrf(client, f"/admin/triggers/{trigger['id']}")
    response = await client.post(
        f"/admin/triggers/{trigger['id']}/rotate",
        data={"csrf": token, "grace_seconds": digits},
        allow_redirects=False,
    )
    assert response.status in (303, 422), response.status
    partner = await create_partner(client, "https://erp.example.com")
    action = await create_action(client, partner["id"])
    token = await csrf(client, f"/admin/actions/{action['id']}/edit")
    response = await client.post(
        f"/admin/actions/{action['id']}/edit",
        data={
            "csrf": token,
            "name": "push",
            "partner_id": partner["id"],
            "method": "POST",
            "path": "/hooks",
            "mode": "deliver",
            "success": f"2xx, {digits}",
        },
        allow_redirects=False,
    )
    assert response.status == 422, response.status
    token = await csrf(client, "/admin/flows")
    response = await client.post(
        "/admin/flows/alerta/activate",
        data={"csrf": token, "version": digits},
        allow_redirects=False,
    )
    assert response.status in (303, 404, 422), response.status


def _zeros(value: Any, at: str = "") -> list[str]:
    """Where a negative zero is in an answer."""
    if isinstance(value, float) and value == 0 and math.copysign(1.0, value) < 0:
        return [at]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _zeros(v, f"{at}/{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _zeros(v, f"{at}/{i}")]
    return []


async def test_negative_zeros_sent_to_plans_fences_services_and_settings_are_zeros(
    client: Client,
) -> None:
    """Entities and fixes store no negative zero (test_negative_zero.py), but a plan's
    `start_km`, a fence's centre and margin, a service's `km` and the fleet settings kept
    `-0.0` as sent, and answered it."""
    await _vehicle(client)
    answers = [
        await _post(
            client,
            "/api/v1/maintenance-plans",
            {"name": "óleo", "every_km": 1000, "start_km": -0.0, "due_soon_km": -0.0},
        ),
        await _post(
            client,
            "/api/v1/geofences",
            {
                "name": "greenwich",
                "kind": "authorized",
                "circle": {"lat": -0.0, "lon": -0.0, "radius_m": 10},
                "margin_m": -0.0,
                "dwell_seconds": -0.0,
            },
        ),
    ]
    service = await client.post(
        "/api/v1/entities/vehicle/ABC1D23/services", json={"km": -0.0}, headers=auth()
    )
    assert service.status == 202, await service.text()
    answers.append(await service.json())
    settings = await client.put(
        "/api/v1/fleet/settings",
        json={"quality": {"future_tolerance_s": -0.0}, "odometer": {"hold_hours": -0.0}},
        headers=auth(),
    )
    assert settings.status == 200, await settings.text()
    answers.append(await settings.json())
    answers.append(await _get(client, f"/api/v1/geofences/{answers[1]['id']}"))
    assert [_zeros(answer) for answer in answers] == [[]] * len(answers)
    assert answers[1]["circle"]["lat"] == 0.0 and answers[0]["start_km"] == 0.0


async def test_an_entity_odometer_past_any_odometers_range_is_refused(client: Client) -> None:
    """The bound a fix's odometer has holds for the vehicle's own field too: an ERP's or a
    tracker event's 1e308 would otherwise become a fold reading and the odometer for good."""
    trigger = await create_trigger(client)
    status, body = await hook(client, trigger, {"plate": "ABC1D23", "odometer_km": 1e308})
    assert status == 422 and "/odometer_km" in json.dumps(body), body
    assert (await hook(client, trigger, {"plate": "ABC1D23", "odometer_km": 912_345.6}))[0] == 201


async def test_an_if_match_on_a_mapping_with_no_active_version_is_412_not_404(
    client: Client,
) -> None:
    text = "name: m\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields: {plate: p}"
    created = await client.post(
        "/api/v1/mappings?activate=false",
        data=text.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert created.status == 201, await created.text()
    for tag in ("*", '"abc"'):
        refused = await client.delete("/api/v1/mappings/m", headers={**auth(), "If-Match": tag})
        assert refused.status == 412, (tag, await refused.text())
    assert (await client.delete("/api/v1/mappings/m", headers=auth())).status == 204


async def test_a_stepped_cursor_of_digits_other_than_ascii_is_refused_at_the_field(
    client: Client,
) -> None:
    body = await _paused_schedule(client)
    for initial in ("²", "٣", "1²"):
        cursor = {"step": 1, "initial": initial, "param": "query.page"}
        refused = await client.post(
            "/api/v1/schedules", json={**body, "cursor": cursor}, headers=auth()
        )
        assert refused.status == 422, (initial, await refused.text())
        assert (await refused.json())["errors"][0]["pointer"] == "/cursor/initial"
