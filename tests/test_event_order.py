"""An entity's events list in its write order when several processes write it: real `gateway
serve` processes on the test's database."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bson import ObjectId

from gateway.config import Settings
from gateway.store.client import id_above
from tests.processes import Gateway, two_gateways, wait_until
from tests.support import auth


def entity_events(gateway: Gateway, entity_id: str) -> list[dict[str, Any]]:
    status, body = gateway.get(f"/api/v1/events?entity_id={entity_id}&limit=200", auth())
    assert status == 200, body
    return [e for e in body["items"] if e["type"].startswith("entity.")]


def test_an_id_above_the_previous_event_sorts_above_it_in_the_same_second() -> None:
    low = ObjectId(bytes.fromhex("650000000000000001000007"))
    high = ObjectId(bytes.fromhex("65000000ffffffff00000001"))
    assert id_above(high, low) == high  # already above: kept
    above = id_above(low, high)
    assert above > high
    assert above.binary[:4] == high.binary[:4]  # the floor's second
    assert above.binary[9:] == low.binary[9:]  # its own counter, not the floor's next one
    assert id_above(low, None) == low


def test_an_entitys_events_list_in_its_write_order_when_two_processes_write_it(
    tmp_path: Path, settings: Settings, mongodb_uri: str
) -> None:
    with two_gateways(tmp_path, settings, mongodb_uri) as gateways:
        gateways[0].create("/api/v1/entities/vehicle", {"plate": "ORD1A23", "odometer_km": 0})
        writes = 40

        def patch(i: int) -> int:
            body = {"odometer_km": i + 1, "attributes": {f"k{i}": i}}
            for _ in range(20):
                status, headers, answer = gateways[i % 2].request(
                    "PATCH", "/api/v1/entities/vehicle/ORD1A23", body, headers=auth()
                )
                if status != 503:  # the loaded machine past the app's deadline: again
                    break
                time.sleep(float(headers.get("Retry-After", "1")))
            assert status == 200, answer
            return int(answer["version"])

        with ThreadPoolExecutor(12) as pool:
            versions = list(pool.map(patch, range(writes)))
        status, stored = gateways[1].get("/api/v1/entities/vehicle/ORD1A23", auth())
        assert status == 200, stored
        # every write's event relayed (the created one too)
        wait_until(
            lambda: len(entity_events(gateways[0], stored["id"])) == writes + 1, 30, "the events"
        )
        revs = [e["entity"]["rev"] for e in entity_events(gateways[0], stored["id"])]
        assert set(versions) < set(revs)
        assert revs == sorted(revs, reverse=True)
        # "what changed last": the stored document (the fold's odometer events are listed by
        # the time of their reading, docs/api.md)
        query = f"entity_id={stored['id']}&type=entity.updated&limit=1"
        status, page = gateways[1].get(f"/api/v1/events?{query}", auth())
        assert status == 200, page
        newest = page["items"][0]
        assert newest["entity"]["rev"] == stored["version"]
        assert newest["data"]["odometer_km"] == stored["odometer_km"]
