"""Who a shipped flow's `notify` step reaches, through the running app: one message per
address however many ways it is reached (a driver who is also a fleet manager), and a
"no driver" reason that names the vehicle as people do, by its plate."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.fcm_double import Fcm, fcm
from tests.flow_support import (
    ANA,
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
from tests.support import auth

__all__ = ["fcm", "partner", "smtp_server"]  # the fixtures

Client = TestClient[Any, Any]
SINCE = "2026-11-01T00:00:00Z"

# Stands in for the fold: a vehicle's reading with the plan's limit it reached.
MAINTENANCE = """
name: maintenance-report
direction: inbound
entity_type: vehicle
key: [plate]
emit: [vehicle.maintenance.due]
fields:
  plate: placa
  odometer_km: odometro
event_data:
  due_km: limite
"""


async def _maintenance(client: Client, fcm: Fcm, sms_url: str, smtp_port: int) -> dict[str, Any]:
    """The shipped maintenance flow, its channels and templates, and the trigger that
    announces the due."""
    await push_channel(client, fcm)
    await email_channel(client, smtp_port)
    await sms_channel(client, sms_url)
    for name in ("maintenance-due-push", "maintenance-due-email", "maintenance-due-sms"):
        await add_template(client, name)
    await upload_flow(client, "maintenance-due-alert")
    response = await client.post(
        "/api/v1/mappings",
        data=MAINTENANCE.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert response.status == 201, await response.text()
    body = {"name": "maintenance", "entity_type": "vehicle", "methods": ["POST"]}
    return dict(await post(client, "/api/v1/triggers", {**body, "mapping": "maintenance-report"}))


async def test_a_driver_who_is_also_the_fleet_manager_gets_one_service_email(
    client: Client, fcm: Fcm, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """Ana drives ABC1D23 and is the fleet manager, at one address (written in another case
    on her operator record): the step's driver and its operators both reached her, and she got
    the same e-mail twice. The other fleet manager still gets his."""
    smtp = await smtp_server()
    maintenance = await _maintenance(client, fcm, partner.url, smtp.port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", {**ANA, "email": "ana@example.com"})
    await post(
        client, "/api/v1/entities/vehicle/ABC1D23/drivers", {"driver": ANA["cpf"], "start": SINCE}
    )
    for name, cpf, email in (
        ("Ana Souza", ANA["cpf"], "Ana@Example.com"),
        ("Bruno Lima", "11144477735", "bruno@acme.com.br"),
    ):
        operator = {"name": name, "cpf": cpf, "email": email, "role": "fleet_manager"}
        await post(client, "/api/v1/entities/operator", operator)

    await send_to(client, maintenance, {"placa": "ABC1D23", "odometro": 10012.4, "limite": 10000})
    await drain(client.app[services_key])

    assert sorted(m.recipients[0] for m in smtp.received) == [
        "ana@example.com",
        "bruno@acme.com.br",
    ]
    (run,) = (await get(client, "/api/v1/flows/maintenance-due-alert/runs"))["items"]
    email = next(s for s in run["steps"] if s["id"] == "email")
    assert len(email["messages"]) == 2
    deliveries = (await get(client, f"/api/v1/deliveries?run_id={run['id']}"))["items"]
    # The driver's (with her language and driver id) is the one kept.
    mailed = [d["notification"]["recipient"] for d in deliveries if d["step_id"] == "email"]
    (ana,) = [r for r in mailed if r["address"].lower() == "ana@example.com"]
    assert ana["address"] == "ana@example.com" and ana["driver_id"] is not None


async def test_a_vehicle_without_a_driver_at_the_exit_is_named_by_its_plate(
    client: Client, fcm: Fcm
) -> None:
    """Nobody drove ABC1D23 at the exit: the reason named the vehicle by its internal id
    (`vehicle 6b13a38a… had no driver at …`), which nobody reading a run knows."""
    await push_channel(client, fcm)
    await add_template(client, "geofence-exit")
    await upload_flow(client, "geofence-exit-push")
    traccar = await trigger_for(client, "traccar-event", entity_type="vehicle")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})

    await send_to(client, traccar, sample("traccar_event_forward_geofence_exit.json"))
    await drain(client.app[services_key])

    assert fcm.messages == []
    (run,) = (await get(client, "/api/v1/flows/geofence-exit-push/runs"))["items"]
    (push,) = run["steps"]
    assert push["outcome"] == "nobody"
    (unreachable,) = push["unreachable"]
    assert unreachable["recipient"] == "driver"
    assert unreachable["reason"].startswith("vehicle ABC1D23 had no driver at 2026-")
