"""Per-trigger params through HTTP: checked against the mapping when the trigger is saved,
applied to every payload, changed with PATCH, and taken by the dry run."""

from __future__ import annotations

import json
from typing import Any

from tests.support import auth
from tests.triggers_support import (
    PAYLOADS,
    Client,
    create_trigger,
    entities,
    hook,
    upload_mapping,
    upload_shipped,
)

ODOMETER = """
name: odometer
direction: inbound
entity_type: vehicle
key: [plate]
params:
  distance_unit: {unit: distance}
fields:
  plate: plate
  odometer_km:
    from: odometer
    transforms: [{convert: {from: {param: distance_unit}, to: km}}, {round: 1}]
"""


async def _refused(client: Client, **spec: Any) -> list[dict[str, Any]]:
    body = {"name": "p", "entity_type": "vehicle", **spec}
    response = await client.post("/api/v1/triggers", json=body, headers=auth())
    assert response.status == 422, await response.text()
    return list((await response.json())["errors"])


async def test_a_trigger_must_set_the_params_its_mapping_requires(client: Client) -> None:
    await upload_mapping(client, ODOMETER)
    (missing,) = await _refused(client, mapping="odometer")
    assert missing["pointer"] == "/params/distance_unit" and missing["keyword"] == "required"
    errors = await _refused(
        client, mapping="odometer", params={"distance_unit": "mph", "unit": "mi"}
    )
    assert {(e["pointer"], e["keyword"]) for e in errors} == {
        ("/params/distance_unit", "param"),
        ("/params/unit", "param"),
    }
    assert "is a distance unit, not a speed unit" in errors[0]["message"] + errors[1]["message"]
    (alone,) = await _refused(client, params={"distance_unit": "mi"})
    assert alone["pointer"] == "/params"
    (shape,) = await _refused(client, mapping="odometer", params={"distance_unit": ["mi"]})
    assert shape["pointer"].startswith("/params")


async def test_params_apply_to_every_payload_and_change_with_patch(client: Client) -> None:
    await upload_mapping(client, ODOMETER)
    trigger = await create_trigger(client, mapping="odometer", params={"distance_unit": "mi"})
    assert trigger["params"] == {"distance_unit": "mi"}
    status, _ = await hook(client, trigger, {"plate": "ABC1D23", "odometer": 100})
    assert status == 201
    assert (await entities(client))[0]["odometer_km"] == 160.9
    patched = await client.patch(
        f"/api/v1/triggers/{trigger['id']}", json={"params": {"distance_unit": "m"}}, headers=auth()
    )
    assert patched.status == 200, await patched.text()
    assert (await patched.json())["params"] == {"distance_unit": "m"}
    status, answer = await hook(client, trigger, {"plate": "ABC1D23", "odometer": 250000})
    assert status == 200 and answer["changed"] == ["odometer_km"]
    assert (await entities(client))[0]["odometer_km"] == 250.0
    refused = await client.patch(
        f"/api/v1/triggers/{trigger['id']}", json={"params": None}, headers=auth()
    )
    assert refused.status == 422  # the mapping requires distance_unit


async def test_the_dry_run_binds_params(client: Client) -> None:
    await upload_mapping(client, ODOMETER)
    body = {"name": "odometer", "payload": {"plate": "ABC1D23", "odometer": 10}}
    response = await client.post(
        "/api/v1/mappings/test", json={**body, "params": {"distance_unit": "mi"}}, headers=auth()
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["results"][0]["document"]["odometer_km"] == 16.1
    response = await client.post(
        "/api/v1/mappings/test", json={**body, "params": {"distance": "mi"}}, headers=auth()
    )
    assert response.status == 422
    assert (await response.json())["errors"][0]["pointer"] == "/params/distance"
    response = await client.post("/api/v1/mappings/test", json=body, headers=auth())
    unset = (await response.json())["errors"][0]
    assert unset["keyword"] == "param" and unset["pointer"] == "/payload/odometer"


async def test_a_geotab_statusdata_page_writes_only_the_meters_the_trigger_takes(
    client: Client,
) -> None:
    """The shipped geotab-statusdata: the readings the trigger's params did not choose (the
    meters' other source, other diagnostics) are no items of the page."""
    await upload_shipped(client, "geotab-statusdata")
    await client.post(
        "/api/v1/entities/vehicle",
        json={"plate": "ABC1D23", "attributes": {"tracker_id": "b2A"}},
        headers=auth(),
    )
    params = {
        "odometer_diagnostic": "DiagnosticOdometerId",
        "engine_hours_diagnostic": "DiagnosticEngineHoursId",
    }
    trigger = await create_trigger(client, mapping="geotab-statusdata", params=params)
    page = json.loads((PAYLOADS / "geotab_getfeed_statusdata.json").read_text())
    status, answer = await hook(client, trigger, page)
    assert status == 200, answer
    assert answer["summary"] == {"items": 2, "created": 0, "updated": 2, "failed": 0}
    [vehicle] = await entities(client)
    assert vehicle["odometer_km"] == 99620.7  # the engine's, not the adjusted 99621.3
    assert vehicle["attributes"]["engine_hours"] == 4688.6
