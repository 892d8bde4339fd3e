"""JSON has one zero: a `-0.0` sent (a device at Greenwich writing `-0.000000`) or made by a
mapping (rounding -0.04) is stored and answered as 0.0, in entities and in fixes."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import (
    Client,
    create_position_trigger,
    create_trigger,
    hook,
    upload_mapping,
)


def signs(value: Any) -> list[float]:
    """The sign of every float in a tree: -1.0 for a negative zero (or a negative number)."""
    if isinstance(value, float):
        return [math.copysign(1.0, value)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in signs(item)]
    if isinstance(value, list):
        return [s for item in value for s in signs(item)]
    return []


async def raw_json(client: Client, path: str) -> bytes:
    response = await client.get(path, headers=auth())
    assert response.status == 200, await response.text()
    return await response.read()


async def test_an_entity_sent_with_negative_zeros_is_stored_and_answered_with_zeros(
    client: Client,
) -> None:
    body = (
        b'{"plate": "ABC1D23", "attributes": {"tilt": -0.0, "list": [-0.0, 1.5]},'
        b' "last_position": {"lat": 51.4779, "lon": -0.000000,'
        b' "speed_kmh": -0e0, "time": "2026-11-20T13:45:22Z"}}'
    )
    response = await client.post(
        "/api/v1/entities/vehicle",
        data=body,
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert response.status == 201, await response.text()
    answered = await raw_json(client, "/api/v1/entities/vehicle/ABC1D23")
    assert b"-0.0" not in answered
    vehicle = orjson.loads(answered)
    assert vehicle["last_position"]["lon"] == 0.0
    assert vehicle["attributes"] == {"tilt": 0.0, "list": [0.0, 1.5]}
    stored = await client.app[services_key].store.entities.get("acme", "vehicle", nk="ABC1D23")
    assert stored is not None
    assert -1.0 not in signs(stored["data"])


async def test_a_mapping_rounding_a_small_negative_to_zero_stores_zero(client: Client) -> None:
    await upload_mapping(
        client,
        """
name: tilt
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: plate
  attributes.tilt: {from: tilt, transforms: [{round: 1}]}
""",
    )
    trigger = await create_trigger(client, mapping="tilt")
    status, answer = await hook(client, trigger, {"plate": "ABC1D23", "tilt": -0.04})
    assert status == 201, answer
    answered = await raw_json(client, "/api/v1/entities/vehicle/ABC1D23")
    assert b'"tilt":0.0' in answered, answered


async def test_a_fix_at_greenwich_with_negative_zeros_is_stored_with_zeros(client: Client) -> None:
    trigger = await create_position_trigger(client)
    response = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "ABC1D23"}, headers=auth()
    )
    assert response.status == 201
    when = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    body = (
        b'{"plate": "ABC1D23", "time": "' + when.encode() + b'", "lat": 51.4779,'
        b' "lon": -0.0, "speed_kmh": -0.0, "heading": -0.0, "attributes": {"temp": -0.0}}'
    )
    status, answer = await hook(
        client, trigger, data=body, headers={"Content-Type": "application/json"}
    )
    assert status == 201, answer
    await client.app[services_key].fold.run_until_idle()
    track = await raw_json(client, "/api/v1/entities/vehicle/ABC1D23/positions")
    vehicle = await raw_json(client, "/api/v1/entities/vehicle/ABC1D23")
    assert b"-0.0" not in track, track
    assert b"-0.0" not in vehicle, vehicle
    [item] = orjson.loads(track)["items"]
    assert (item["lon"], item["speed_kmh"], item["attributes"]) == (0.0, 0.0, {"temp": 0.0})
