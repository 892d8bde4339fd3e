"""An outbound JSON body that is a top-level array (bulk endpoints: PostgREST/Supabase bulk
insert, Alertmanager's /api/v2/alerts, ERP "lote" imports): `body_value`, one spec whose value
is the whole body, where `body`'s dotted targets build only an object. Through the admin API
(upload, dry run) and a signed delivery to a local partner double."""

from __future__ import annotations

import time
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.auth.webhook_signature import verify
from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
    upload_mapping,
)
from tests.support import auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]

BULK = """
name: erp-lote
direction: outbound
entity_type: vehicle
body_value:
  list:
    - object:
        placa: {from: entity.plate, transforms: [plate, {mask: "###-####"}]}
        km: entity.odometer_km
    - object:
        placa: {value: TOTAL}
        km: {value: 1}
"""
EACH = """
name: alerts
direction: outbound
body_value:
  each: event.detail.alerts
  fields:
    labels.alertname: {value: ManutencaoVencida}
    labels.plate: plate
    annotations.km: {from: km, transforms: [integer]}
"""
EXPECTED = [{"placa": "ABC-1D23", "km": 152340}, {"placa": "TOTAL", "km": 1}]


async def _dry_run(client: Client, mapping: str, context: Any) -> tuple[int, Any]:
    response = await client.post(
        "/api/v1/mappings/test", json={"mapping": mapping, "context": context}, headers=auth()
    )
    return response.status, await response.json()


async def test_a_body_value_list_is_the_whole_body_in_a_dry_run(client: Client) -> None:
    context = {"entity": {"plate": "ABC1D23", "odometer_km": 152340}}

    status, answer = await _dry_run(client, BULK, context)

    assert status == 200, answer
    assert answer["request"]["body"] == EXPECTED


async def test_a_body_value_each_makes_one_element_per_item_and_names_a_bad_one(
    client: Client,
) -> None:
    alerts = [{"plate": "ABC1D23", "km": "10000"}, {"plate": "XYZ9J87", "km": "20000"}]
    context = {"event": {"detail": {"alerts": alerts}}}

    status, answer = await _dry_run(client, EACH, context)

    assert status == 200, answer
    assert answer["request"]["body"] == [
        {"labels": {"alertname": "ManutencaoVencida", "plate": p}, "annotations": {"km": km}}
        for p, km in (("ABC1D23", 10000), ("XYZ9J87", 20000))
    ]
    alerts[1]["km"] = "vinte mil"
    status, answer = await _dry_run(client, EACH, context)
    assert status == 422, answer
    (problem,) = answer["errors"]
    assert problem["keyword"] == "cast" and problem["target"] == "body[1].annotations.km"


async def test_a_signed_delivery_sends_the_array_its_signature_covers(
    client: Client, partner: Partner
) -> None:
    await upload_mapping(client, BULK)
    erp = await create_partner(client, partner.url)
    action = await create_action(client, erp["id"], path="/lotes", request_mapping="erp-lote")
    subscription = await create_subscription(client, action["id"], ("entity.created",))
    await create_vehicle(client, "ABC1D23", odometer_km=152340)

    services = client.app[services_key]
    await services.relay.run_until_idle()
    assert await services.delivery_worker.run_until_idle() == {"succeeded": 1}

    (sent,) = partner.requests
    assert sent.path == "/lotes" and sent.headers["Content-Type"] == "application/json"
    assert sent.json() == EXPECTED
    secret = subscription["secret"]
    assert verify([secret], sent.headers, sent.body, now=time.time()) == sent.webhook_id


async def test_body_and_body_value_together_are_refused_at_upload(client: Client) -> None:
    text = BULK + "body:\n  placa: entity.plate\n"
    headers = {**auth(), "Content-Type": "application/yaml"}

    response = await client.post("/api/v1/mappings", data=text.encode(), headers=headers)

    assert response.status == 422, await response.text()
    pointers = {p["pointer"] for p in (await response.json())["errors"]}
    assert "/body_value" in pointers


async def test_an_inbound_mapping_has_no_body_value(client: Client) -> None:
    text = (
        "name: in\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "fields:\n  plate: placa\nbody_value: {list: [placa]}\n"
    )
    headers = {**auth(), "Content-Type": "application/yaml"}

    response = await client.post("/api/v1/mappings", data=text.encode(), headers=headers)

    assert response.status == 422, await response.text()
    (problem,) = (await response.json())["errors"]
    assert problem["pointer"] == "/body_value"
