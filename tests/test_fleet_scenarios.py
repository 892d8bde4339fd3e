"""Scenarios 1 and 2 from the tracker's own payload: Traccar position forwards posted to a
position trigger, folded into a geofence exit and a maintenance crossing, and on through the
shipped flows to what the driver receives (issues 10 and 11).

`tests/test_flow_scenarios.py` starts the same flows from a Traccar event forward and from a
trigger that emits the event; these start where a fleet's telemetry does."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from gateway.errors import InvalidPayload
from gateway.fleet.odometer import TrackPoint
from gateway.mapping import load_mapping
from gateway.web.state import services_key
from tests.fcm_double import Fcm, fcm
from tests.flow_support import (
    ANA,
    add_mapping,
    add_template,
    drain,
    email_channel,
    get,
    push_channel,
    sample,
    send_to,
    sms_channel,
    trigger_for,
    upload_flow,
)
from tests.partner_double import Partner, partner, post
from tests.smtp_double import SmtpFactory, smtp_server
from tests.test_fleet_odometer import route_points

__all__ = ["fcm", "partner", "smtp_server"]  # the fixtures

Client = TestClient[Any, Any]
# She drives ABC1D23 since before the samples' events (the shipped flows ask who drove then).
SINCE = "2026-11-01T00:00:00Z"
PAULISTA = (-23.5613, -46.6565)
SAO_PAULO = ZoneInfo("America/Sao_Paulo")


async def _traccar_trigger(client: Client) -> dict[str, Any]:
    await add_mapping(client, "traccar-position")
    body = {
        "name": "traccar-positions",
        "target": "positions",
        "methods": ["POST"],
        "mapping": "traccar-position",
    }
    return dict(await post(client, "/api/v1/triggers", body))


def _forward(point: TrackPoint, plate: str = "ABC1D23") -> dict[str, Any]:
    """Traccar's position forward for one fix (its own sample, moved and re-timed)."""
    payload = copy.deepcopy(sample("traccar_position_forward.json"))
    stamp = point.t.isoformat(timespec="milliseconds")
    position = payload["position"]
    position.update(latitude=point.lat, longitude=point.lon, fixTime=stamp, deviceTime=stamp)
    position["attributes"].pop("odometer", None)
    payload["device"]["name"] = plate
    return payload


async def _fold_and_drain(client: Client) -> None:
    services = client.app[services_key]
    for _ in range(3):  # a reading relayed, then folded; the fold's events, then their flows
        await services.fold.run_until_idle()
        await drain(services)


async def _driver_of_abc(client: Client, **contacts: Any) -> None:
    await post(client, "/api/v1/entities/driver", {**ANA, **contacts})
    await post(
        client, "/api/v1/entities/vehicle/ABC1D23/drivers", {"driver": ANA["cpf"], "start": SINCE}
    )


def _when(crossing: datetime) -> str:
    """The shipped push's time of a crossing: "às 10:45", with its day ("em 05/12 às 23:58")
    when it is not the run's day in São Paulo (a test run just after midnight there)."""
    local = crossing.astimezone(SAO_PAULO)
    same_day = local.date() == datetime.now(SAO_PAULO).date()
    return ("" if same_day else local.strftime("em %d/%m ")) + local.strftime("às %H:%M")


async def test_scenario_1_an_exit_two_days_old_says_its_day_to_the_driver_told_now(
    client: Client, fcm: Fcm
) -> None:
    """A tracker back after two days out of coverage uploads its exit: the flow alerts it
    (to the driver then), and "às 01:07" alone, read today, named a time of today that never
    happened. The day is São Paulo's, in Portuguese as in English."""
    await push_channel(client, fcm)
    await add_template(client, "geofence-exit")
    await upload_flow(client, "geofence-exit-push")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await _driver_of_abc(client, push_tokens=["ana-phone"])
    bruno = {"name": "Bruno Lima", "cpf": "11144477735", "language": "en"}
    await post(client, "/api/v1/entities/driver", {**bruno, "push_tokens": ["bruno-phone"]})
    await post(client, "/api/v1/entities/vehicle", {"plate": "XYZ9A87"})
    await post(
        client, "/api/v1/entities/vehicle/XYZ9A87/drivers", {"driver": bruno["cpf"], "start": SINCE}
    )
    lat, lon = PAULISTA
    circle = {"lat": lat, "lon": lon, "radius_m": 1000}
    await post(
        client, "/api/v1/geofences", {"name": "Garagem SP", "kind": "authorized", "circle": circle}
    )
    traccar = await _traccar_trigger(client)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    for plate in ("ABC1D23", "XYZ9A87"):
        for seconds, east in ((0, 0.0), (60, 0.0196), (120, 0.0206)):
            point = TrackPoint(t0 + timedelta(seconds=seconds), lat, lon + east)
            await send_to(client, traccar, _forward(point, plate))
    await _fold_and_drain(client)

    exit_at = (t0 + timedelta(seconds=60)).astimezone(SAO_PAULO)
    bodies = {m["token"]: m["notification"]["body"] for m in fcm.messages}
    assert bodies == {
        "ana-phone": f"ABC1D23 saiu de Garagem SP em {exit_at:%d/%m} às {exit_at:%H:%M}",
        "bruno-phone": f"XYZ9A87 left Garagem SP on {exit_at:%b %d} at {exit_at:%H:%M}",
    }


async def test_scenario_1_a_traccar_position_outside_the_authorized_area_pushes_to_the_driver(
    client: Client, fcm: Fcm
) -> None:
    await push_channel(client, fcm)
    await add_template(client, "geofence-exit")
    await upload_flow(client, "geofence-exit-push")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await _driver_of_abc(client, push_tokens=["fcm-device-token"])
    lat, lon = PAULISTA
    circle = {"lat": lat, "lon": lon, "radius_m": 1000}
    await post(
        client,
        "/api/v1/geofences",
        {"name": "Garagem SP", "kind": "authorized", "circle": circle},
    )
    traccar = await _traccar_trigger(client)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    inside = TrackPoint(t0, lat, lon)
    # 2 km east of the centre, a minute apart (~120 km/h), then on along the avenue.
    outside = [
        TrackPoint(t0 + timedelta(seconds=60 * i), lat, lon + 0.0196 + i * 1e-3) for i in (1, 2)
    ]
    for point in (inside, *outside):
        await send_to(client, traccar, _forward(point))
    await send_to(client, traccar, _forward(outside[0]))  # Traccar resends it: a duplicate
    await _fold_and_drain(client)

    (message,) = fcm.messages
    assert message["token"] == "fcm-device-token"
    assert message["notification"] == {
        "title": "Veículo fora da área autorizada",
        "body": f"ABC1D23 saiu de Garagem SP {_when(outside[0].t)}",
    }
    assert message["data"] == {"event": "vehicle.geofence.exited", "plate": "ABC1D23"}
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["last_position"]["lon"] == outside[-1].lon


async def test_scenario_2_mileage_from_positions_reaches_the_plan_and_alerts_by_push_email_and_sms(
    client: Client, partner: Partner, fcm: Fcm, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await push_channel(client, fcm)
    await email_channel(client, smtp.port)
    await sms_channel(client, partner.url, "zenvia-token")
    for name in ("maintenance-due-push", "maintenance-due-email", "maintenance-due-sms"):
        await add_template(client, name)
    await upload_flow(client, "maintenance-due-alert")
    await post(client, "/api/v1/maintenance-plans", {"name": "Revisão", "every_km": 10_000})
    # The odometer a checklist recorded when the vehicle joined: 5 km before the service.
    await post(
        client,
        "/api/v1/entities/vehicle",
        {"plate": "ABC1D23", "model": "Strada", "odometer_km": 9_995},
    )
    await _driver_of_abc(
        client,
        phone="+5511987654321",
        email="ana.souza@example.com",
        push_tokens=["fcm-device-token"],
    )
    await post(
        client,
        "/api/v1/entities/operator",
        {
            "name": "Bruno Lima",
            "cpf": "11144477735",
            "email": "bruno@acme.com.br",
            "role": "fleet_manager",
        },
    )
    await _fold_and_drain(client)  # the reading re-baselines the odometer at 9,995 km
    traccar = await _traccar_trigger(client)
    route = route_points()[:200]  # 6.8 km of the shared track
    shift = datetime.now(UTC) - timedelta(hours=1) - route[0].t
    for point in route:
        moved = TrackPoint(point.t + shift, point.lat, point.lon)
        await send_to(client, traccar, _forward(moved))
    await _fold_and_drain(client)

    (push,) = fcm.messages
    assert push["notification"] == {
        "title": "Revisão do ABC1D23",
        "body": "ABC1D23 atingiu 10.000 km. Agende a revisão.",
    }
    assert sorted(m.recipients[0] for m in smtp.received) == [
        "ana.souza@example.com",
        "bruno@acme.com.br",
    ]
    assert {m.message["Subject"] for m in smtp.received} == {"Revisão: ABC1D23 atingiu 10.000 km"}
    (sms,) = [r for r in partner.requests if r.path == "/v2/channels/sms/messages"]
    assert sms.json() == sample("sms_request.json")
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    assert vehicle["odometer_km"] == pytest.approx(9_995 + 6.81, abs=0.05)


async def test_scenario_2_a_plan_of_km_or_months_due_by_months_says_so_not_a_mileage(
    client: Client, partner: Partner, fcm: Fcm, smtp_server: SmtpFactory
) -> None:
    """ "Revisão a cada 10.000 km ou 12 meses", the months first: at 14,000 km the event
    carries the next km point (20,000) with `reason: time`, and push, SMS and e-mail said
    "atingiu 20.000 km", a mileage not reached (flows5 FL5-10)."""
    smtp = await smtp_server()
    await push_channel(client, fcm)
    await email_channel(client, smtp.port)
    await sms_channel(client, partner.url, "zenvia-token")
    for name in ("maintenance-due-push", "maintenance-due-email", "maintenance-due-sms"):
        await add_template(client, name)
    await upload_flow(client, "maintenance-due-alert")
    plan = {"name": "Revisão", "every_km": 10_000, "every_days": 365}
    await post(client, "/api/v1/maintenance-plans", plan)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "odometer_km": 14_000})
    await _driver_of_abc(
        client, phone="+5511987654321", email="ana.souza@example.com", push_tokens=["tok"]
    )
    await _fold_and_drain(client)
    served = {"km": 10_000, "at": (datetime.now(UTC) - timedelta(days=370)).isoformat()}
    await post(client, "/api/v1/entities/vehicle/ABC1D23/services", served, status=202)
    traccar = await _traccar_trigger(client)
    lat, lon = PAULISTA
    await send_to(client, traccar, _forward(TrackPoint(datetime.now(UTC), lat, lon)))
    await _fold_and_drain(client)

    (due,) = (await get(client, "/api/v1/events?type=vehicle.maintenance.due"))["items"]
    assert due["detail"]["reason"] == "time" and due["detail"]["due_km"] == 20_000
    (push,) = fcm.messages
    assert push["notification"]["body"] == "ABC1D23 está com Revisão vencida. Agende a revisão."
    assert {m.message["Subject"] for m in smtp.received} == {"Revisão: ABC1D23 Revisão vencida"}
    (sms,) = [r.json() for r in partner.requests if r.path == "/v2/channels/sms/messages"]
    assert sms["contents"][0]["text"] == "Rabbot: ABC1D23 com Revisão vencida. Agende a revisao."
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    context = {"entity": vehicle, "event": due, "driver": {"phone": "+55 11 98765-4321"}}
    body = _shipped_request("sms-maintenance-due", context, sms_api_key="k")
    assert body["contents"][0]["text"].startswith("Rabbot: a revisao de ABC1D23 vence em ")


async def test_scenario_1_entering_a_restricted_area_alerts_and_leaving_it_does_not(
    client: Client, fcm: Fcm
) -> None:
    """A restricted area is one to stay out of: entering it is the alert. The shipped flow
    started on every exit, so a vehicle leaving a quarry it must not enter pushed "Veículo
    fora da área autorizada", and entering it pushed nothing."""
    await push_channel(client, fcm)
    await add_template(client, "geofence-exit")
    await upload_flow(client, "geofence-exit-push")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await _driver_of_abc(client, push_tokens=["fcm-device-token"])
    lat, lon = PAULISTA
    circle = {"lat": lat, "lon": lon + 0.03, "radius_m": 500}
    await post(
        client,
        "/api/v1/geofences",
        {"name": "Pedreira (proibida)", "kind": "restricted", "circle": circle},
    )
    traccar = await _traccar_trigger(client)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    # Outside, into the quarry, still there, out again: two minutes apart.
    track = [
        TrackPoint(t0 + timedelta(seconds=120 * i), lat, lon + east)
        for i, east in enumerate((0.0, 0.03, 0.03, 0.0))
    ]
    for point in track:
        await send_to(client, traccar, _forward(point))
    await _fold_and_drain(client)

    entered = (await get(client, "/api/v1/events?type=vehicle.geofence.entered"))["items"]
    exited = (await get(client, "/api/v1/events?type=vehicle.geofence.exited"))["items"]
    assert len(entered) == 1 and len(exited) == 1  # both crossings are still announced
    (message,) = fcm.messages
    assert message["notification"] == {
        "title": "Veículo em área proibida",
        "body": f"ABC1D23 entrou em Pedreira (proibida) {_when(track[1].t)}",
    }
    assert message["data"] == {"event": "vehicle.geofence.entered", "plate": "ABC1D23"}
    runs = (await get(client, "/api/v1/flows/geofence-exit-push/runs"))["items"]
    assert len(runs) == 1 and runs[0]["event"]["type"] == "vehicle.geofence.entered"


# -- the shipped outbound mappings on the events the gateway stores -------------------------------

SHIPPED = Path(__file__).resolve().parents[1] / "mappings"


def _shipped_request(name: str, context: dict[str, Any], **secrets: str) -> Any:
    mapping = load_mapping((SHIPPED / f"{name}.yaml").read_text())
    return mapping.build_request(context, secrets=secrets).body


async def test_the_shipped_geofence_push_names_the_place_and_time_of_the_stored_exits(
    client: Client,
) -> None:
    """fcm-geofence-exit on the vehicle.geofence.exited events as stored (GET
    /api/v1/events): the fold's, from positions, and Traccar's, through traccar-event. Both
    carry the geofence and the crossing time in `detail`; `occurred_at` of Traccar's is when
    it was stored, not the exit."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    lat, lon = PAULISTA
    circle = {"lat": lat, "lon": lon, "radius_m": 1000}
    await post(
        client,
        "/api/v1/geofences",
        {"name": "Garagem SP", "kind": "authorized", "circle": circle},
    )
    positions = await _traccar_trigger(client)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    outside = TrackPoint(t0 + timedelta(seconds=60), lat, lon + 0.0196)
    for point in (TrackPoint(t0, lat, lon), outside):
        await send_to(client, positions, _forward(point))
    await _fold_and_drain(client)
    traccar = await trigger_for(client, "traccar-event", entity_type="vehicle")
    await send_to(client, traccar, sample("traccar_event_forward_geofence_exit.json"))
    await _fold_and_drain(client)

    events = (await get(client, "/api/v1/events?type=vehicle.geofence.exited"))["items"]
    by_origin = {event["origin"]["kind"]: event for event in events}
    assert set(by_origin) == {"fold", "trigger"}, events
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    fold_time = outside.t.astimezone(ZoneInfo("America/Sao_Paulo")).strftime("%H:%M")
    for origin, time in (("fold", fold_time), ("trigger", "10:45")):
        context = {"entity": vehicle, "event": by_origin[origin], "driver": {"push_tokens": ["t"]}}
        body = _shipped_request("fcm-geofence-exit", context, fcm_access_token="a")
        assert body["message"]["notification"]["body"] == f"ABC1D23 saiu de Garagem SP as {time}"


async def test_the_shipped_maintenance_sms_says_the_km_of_the_folds_due(client: Client) -> None:
    """sms-maintenance-due on the fold's vehicle.maintenance.due (its `detail.due_km`): the
    SMS the shared sample shows, never one without text."""
    await post(client, "/api/v1/maintenance-plans", {"name": "Revisão", "every_km": 10_000})
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "odometer_km": 9_995})
    await _fold_and_drain(client)
    traccar = await _traccar_trigger(client)
    route = route_points()[:200]  # 6.8 km of the shared track
    shift = datetime.now(UTC) - timedelta(hours=1) - route[0].t
    for point in route:
        await send_to(client, traccar, _forward(TrackPoint(point.t + shift, point.lat, point.lon)))
    await _fold_and_drain(client)

    (due,) = (await get(client, "/api/v1/events?type=vehicle.maintenance.due"))["items"]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    context = {"entity": vehicle, "event": due, "driver": {"phone": "+55 11 98765-4321"}}
    assert _shipped_request("sms-maintenance-due", context, sms_api_key="k") == sample(
        "sms_request.json"
    )
    del due["detail"]["due_km"]
    with pytest.raises(InvalidPayload):  # no text: no SMS
        _shipped_request("sms-maintenance-due", context, sms_api_key="k")


def test_the_shipped_maintenance_sms_says_the_due_day_of_a_plan_by_time_alone() -> None:
    """A plan by time alone (an annual inspection) is due with `due_km` null and its `due_at`
    (docs/fleet.md Events): the SMS says the day it is due, in Brasília."""
    due = {
        "type": "vehicle.maintenance.due",
        "data": {"plate": "ABC1D23"},
        "detail": {
            "plan": {"id": "p1", "name": "Vistoria anual"},
            "due_km": None,
            "odometer_km": 15234.2,
            "due_at": "2026-12-05T12:00:00Z",
            "reason": "time",
        },
    }
    context = {"entity": {"plate": "ABC1D23"}, "event": due, "driver": {"phone": "11987654321"}}
    body = _shipped_request("sms-maintenance-due", context, sms_api_key="k")
    assert body["contents"] == [
        {
            "type": "text",
            "text": "Rabbot: a revisao de ABC1D23 vence em 05/12/2026. Agende a revisao.",
        }
    ]
