"""A tester's findings on mapping files, entities and the dry run (2026-12-05), through HTTP
against the real database: the dry run refuses what the trigger refuses, reserved field
names, plates written with dots and slashes, the mapping list's active version, the work of
one payload's mapping, and the JSON names of types in problems."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.mapping.limits import (
    MAX_PAYLOAD_STEPS,
    MAX_STEPS,
    PARSE_FORMAT_STEPS,
    TRANSFORM_STEPS,
)
from tests.support import auth
from tests.triggers_support import Client, create_trigger, hook, upload_mapping

YAML = {"Content-Type": "application/yaml"}


async def _json(client: Client, method: str, url: str, status: int = 200, **kw: Any) -> Any:
    kw.setdefault("headers", auth())
    response = await client.request(method, url, **kw)
    body = await response.json() if response.status != 204 else None
    assert response.status == status, body
    return body


async def _upload(client: Client, text: str, query: str = "", status: int = 201) -> Any:
    return await _json(
        client,
        "POST",
        f"/api/v1/mappings{query}",
        status,
        data=text.encode(),
        headers={**auth(), **YAML},
    )


async def _dry(client: Client, name: str, payload: Any) -> dict[str, Any]:
    body = {"name": name, "payload": payload}
    return dict(await _json(client, "POST", "/api/v1/mappings/test", json=body))


# -- the dry run refuses two targets naming one entity, as the trigger does -------------------

SAME_PLATE = """
name: same-plate
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: placa
  model: m1
also:
  - entity_type: vehicle
    key: [plate]
    fields:
      plate: {from: placa2}
      make: mk
"""

BY_TRACKER = """
name: by-tracker
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: placa
  model: m1
also:
  - entity_type: vehicle
    key: [attributes.tracker_id]
    fields:
      attributes.tracker_id: dev
      make: mk
"""


@pytest.mark.parametrize(
    ("second", "why"),
    [("ABC1234", "the same plate"), ("ABC1C34", "the Mercosul twin of the main target's plate")],
)
async def test_dry_run_refuses_an_also_target_naming_the_main_entity_as_the_trigger_does(
    client: Client, second: str, why: str
) -> None:
    await upload_mapping(client, SAME_PLATE)
    trigger = await create_trigger(client, mapping="same-plate")
    body = {"placa": "ABC1234", "placa2": second, "m1": "Strada", "mk": "Fiat"}
    status, refused = await hook(client, trigger, body)
    assert status == 422, why
    assert [e["keyword"] for e in refused["errors"]] == ["duplicate"]
    (result,) = (await _dry(client, "same-plate", body))["results"]
    assert result["entity"]["write"] == "create"
    (also,) = result["also"]
    assert also["entity"]["write"] == "duplicate", why
    assert also["events"] == []
    assert [(e["keyword"], e["message"]) for e in also["entity"]["errors"]] == [
        (e["keyword"], e["message"]) for e in refused["errors"]
    ]
    assert await _json(client, "GET", "/api/v1/entities/vehicle/ABC1234", 404)


async def test_dry_run_refuses_a_lookup_target_finding_the_main_entity_as_the_trigger_does(
    client: Client,
) -> None:
    await _json(
        client,
        "POST",
        "/api/v1/entities/vehicle",
        201,
        json={"plate": "LKS1A11", "attributes": {"tracker_id": "TS-1"}},
    )
    await upload_mapping(client, BY_TRACKER)
    trigger = await create_trigger(client, mapping="by-tracker")
    body = {"placa": "LKS1A11", "dev": "TS-1", "m1": "Strada", "mk": "Fiat"}
    status, refused = await hook(client, trigger, body)
    assert status == 422 and refused["errors"][0]["keyword"] == "duplicate"
    (result,) = (await _dry(client, "by-tracker", body))["results"]
    assert result["entity"]["write"] == "update"
    (also,) = result["also"]
    assert also["entity"]["id"] == result["entity"]["id"]
    assert also["entity"]["write"] == "duplicate"
    # Another tracker's vehicle: two entities, both written, as the dry run says.
    await _json(
        client,
        "POST",
        "/api/v1/entities/vehicle",
        201,
        json={"plate": "OTH2B22", "attributes": {"tracker_id": "TS-2"}},
    )
    other = {**body, "dev": "TS-2"}
    (result,) = (await _dry(client, "by-tracker", other))["results"]
    assert [result["entity"]["write"], result["also"][0]["entity"]["write"]] == [
        "update",
        "update",
    ]
    status, written = await hook(client, trigger, other)
    assert status == 200, written


# -- plates as people write them ------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("ABC.1234", "ABC1234"),
        ("ABC/1D23", "ABC1D23"),
        ("abc-1d23", "ABC1D23"),
        ("ab c1234", "ABC1234"),
    ],
)
async def test_a_plate_with_dots_slashes_dashes_or_spaces_is_stored_without_them(
    client: Client, written: str, stored: str
) -> None:
    created = await _json(client, "POST", "/api/v1/entities/vehicle", 201, json={"plate": written})
    assert created["plate"] == stored
    found = await _json(client, "GET", f"/api/v1/entities/vehicle/{stored}")
    assert found["id"] == created["id"]


@pytest.mark.parametrize(
    "garbage", ["ABC\t1234", "ABC\u20131234", "ＡＢＣ１２３４", "ABC_1234", "AB.C12345"]
)
async def test_a_plate_with_other_characters_is_still_refused(client: Client, garbage: str) -> None:
    problem = await _json(client, "POST", "/api/v1/entities/vehicle", 422, json={"plate": garbage})
    assert problem["errors"][0]["pointer"] == "/plate"


async def test_the_plate_transform_reads_a_plate_written_with_a_dot_or_a_slash(
    client: Client,
) -> None:
    draft = {
        "name": "plates",
        "direction": "inbound",
        "entity_type": "vehicle",
        "key": ["plate"],
        "fields": {"plate": {"from": "placa", "transforms": ["plate"]}},
    }
    for written, stored in (("abc.1234", "ABC1234"), ("ABC/1D23", "ABC1D23")):
        body = {"mapping": draft, "payload": {"placa": written}}
        result = await _json(client, "POST", "/api/v1/mappings/test", json=body)
        assert result["results"][0]["document"] == {"plate": stored}


# -- the mapping list describes the active version ------------------------------------------

VEHICLES = """
name: feed
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: placa
"""

DRIVERS = """
name: feed
direction: inbound
entity_type: driver
key: [cpf]
fields:
  cpf: cpf
  name: nome
"""

OUTBOUND = """
name: feed
direction: outbound
body:
  plate: entity.plate
"""


async def _listed(client: Client) -> dict[str, Any]:
    (item,) = (await _json(client, "GET", "/api/v1/mappings"))["items"]
    return dict(item)


async def test_mapping_list_shows_the_active_versions_direction_and_entity_type(
    client: Client,
) -> None:
    await _upload(client, VEHICLES)
    await _upload(client, DRIVERS, "?activate=false")
    listed = await _listed(client)
    assert (listed["active_version"], listed["latest_version"]) == (1, 2)
    assert (listed["direction"], listed["entity_type"]) == ("inbound", "vehicle")
    await _json(client, "POST", "/api/v1/mappings/feed/activate", json={"version": 2})
    listed = await _listed(client)
    assert (listed["active_version"], listed["entity_type"]) == (2, "driver")
    await _json(client, "POST", "/api/v1/mappings/feed/rollback")
    listed = await _listed(client)
    assert (listed["active_version"], listed["entity_type"]) == (1, "vehicle")
    # An outbound version staged: the admin UI's action form (which lists outbound mappings
    # by this direction) does not offer the inbound one that is active.
    await _upload(client, OUTBOUND, "?activate=false")
    listed = await _listed(client)
    assert (listed["active_version"], listed["direction"]) == (1, "inbound")
    # The same text as the latest version, uploaded again to activate it.
    await _upload(client, OUTBOUND, status=200)
    listed = await _listed(client)
    assert (listed["active_version"], listed["direction"]) == (3, "outbound")
    assert listed["entity_type"] is None


async def test_a_mapping_with_only_a_staged_version_is_listed_by_that_version(
    client: Client,
) -> None:
    await _upload(client, DRIVERS, "?activate=false")
    listed = await _listed(client)
    assert listed["active_version"] is None
    assert (listed["direction"], listed["entity_type"]) == ("inbound", "driver")


# -- one payload's mapping work is bounded ----------------------------------------------------

FORMATS = (
    "['%d/%m/%Y %H:%M', '%d/%m/%Y %H:%M:%S', '%Y%m%d', iso8601, unix, '%d.%m.%Y', '%m/%d/%Y', '%Y']"
)


def _heavy(name: str, fields: int) -> str:
    """A mapping of `fields` times, each read with 8 parse formats (the tester's was 495)."""
    lines = [
        f"name: {name}",
        "direction: inbound",
        "entity_type: vehicle",
        "key: [plate]",
        "fields:",
        "  plate: plate",
    ]
    spec = f"{{from: d, transforms: [{{datetime: {{parse: {FORMATS}}}}}]}}"
    lines += [f"  attributes.f{i}: {spec}" for i in range(fields)]
    return "\n".join(lines) + "\n"


async def test_a_mapping_whose_transforms_outweigh_one_items_work_limit_is_refused_at_upload(
    client: Client,
) -> None:
    problem = await _upload(client, _heavy("huge", 495), status=422)
    (error,) = problem["errors"]
    assert error["keyword"] == "limit" and error["pointer"] == ""
    per_item = 495 * (TRANSFORM_STEPS + 8 * PARSE_FORMAT_STEPS)
    assert f"{per_item:,} steps" in error["message"]
    assert f"limit of {MAX_STEPS:,}" in error["message"]
    await _json(client, "GET", "/api/v1/mappings/huge", 404)


async def test_a_batch_whose_mapping_work_passes_the_payload_limit_refuses_the_items_past_it(
    client: Client,
) -> None:
    fields = 400
    per_item = fields * (TRANSFORM_STEPS + 8 * PARSE_FORMAT_STEPS)
    assert per_item <= MAX_STEPS
    mapped = MAX_PAYLOAD_STEPS // per_item  # the items the payload's work covers
    await _upload(client, _heavy("heavy", fields))
    trigger = await create_trigger(client, mapping="heavy")
    batch = [{"plate": f"BAT1A{i:02d}", "d": "05/12/2026 10:25"} for i in range(mapped + 5)]
    status, answer = await hook(client, trigger, batch)
    assert status == 207, answer
    statuses = [r["status"] for r in answer["results"]]
    assert statuses == [201] * mapped + [422] * 5
    for refused in answer["results"][mapped:]:
        (error,) = refused["problem"]["errors"]
        assert error["keyword"] == "limit"
        assert error["message"].endswith(
            f"the work to map the items of this payload exceeds the limit of {MAX_PAYLOAD_STEPS:,}"
        )
    rejected = await _json(client, "GET", f"/api/v1/rejected?trigger_id={trigger['id']}")
    assert len(rejected["items"]) == 5  # kept, to replay
    # The dry run of the same sample says the same, item by item.
    results = (await _dry(client, "heavy", batch))["results"]
    assert ["errors" in r for r in results] == [False] * mapped + [True] * 5
    assert results[-1]["errors"][0]["keyword"] == "limit"
