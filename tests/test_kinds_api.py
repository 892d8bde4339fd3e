"""Tenants register custom kinds of `other` entities, validated like the built-in ones."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import kinds
from gateway.clock import utcnow
from gateway.services import Services
from gateway.web.state import services_key
from tests.support import auth

Client = TestClient[Any, Any]

TYRE = {
    "name": "tyre",
    "schema": {
        "type": "object",
        "additionalProperties": False,
        "required": ["serial", "position"],
        "properties": {
            "serial": {"type": "string"},
            "position": {"enum": ["FL", "FR", "RL", "RR"]},
            "tread_mm": {"type": "number", "minimum": 0},
            "vehicle_plate": {"type": "string", "format": "plate"},
        },
    },
}


async def _register(client: Client, tenant: str = "acme") -> None:
    response = await client.post("/api/v1/kinds", json=TYRE, headers=auth(tenant))
    assert response.status == 201, await response.text()


async def test_custom_kind_validates_its_entities(client: Client) -> None:
    await _register(client)
    good = {
        "kind": "tyre",
        "key": "T-1",
        "serial": "T-1",
        "position": "FL",
        "vehicle_plate": "abc-1234",
    }
    created = await client.post("/api/v1/entities/other", json=good, headers=auth())
    assert created.status == 201
    assert (await created.json())["vehicle_plate"] == "ABC1234"
    bad = {"kind": "tyre", "key": "T-2", "serial": "T-2", "position": "middle", "tread_mm": -1}
    response = await client.post("/api/v1/entities/other", json=bad, headers=auth())
    assert response.status == 422
    pointers = {e["pointer"] for e in (await response.json())["errors"]}
    assert pointers == {"/position", "/tread_mm"}


@pytest.mark.parametrize("x_key", [[{"field": "serial"}], ["serial", "position"], "serial"])
async def test_an_x_key_in_a_tenants_kind_is_an_annotation_that_refuses_no_write(
    client: Client, x_key: Any
) -> None:
    """`x-key` keys the shipped fine; in a tenant's kind it is a vendor annotation as any
    `x-` keyword: whatever its shape (a list of objects was a 500 on every write), the kind
    is stored with it and its entities are keyed as their writers key them."""
    kind = {"name": "tyre", "schema": {**TYRE["schema"], "x-key": x_key}}
    response = await client.post("/api/v1/kinds", json=kind, headers=auth())
    assert response.status == 201, await response.text()
    tyre = {"kind": "tyre", "key": "stock-7", "serial": "t-1", "position": "FL"}
    created = await client.post("/api/v1/entities/other", json=tyre, headers=auth())
    assert created.status == 201, await created.text()
    response = await client.patch(
        "/api/v1/entities/other/tyre:stock-7", json={"position": "RR"}, headers=auth()
    )
    assert response.status == 200, await response.text()
    stored = await (await client.get("/api/v1/kinds/tyre", headers=auth())).json()
    assert stored["schema"]["x-key"] == x_key


# Where a kind's schema may check an identifier format, and the document that puts one there:
# (schema, document, path to the identifier, its stored form).
_IDENTIFIER_PLACES: dict[str, tuple[dict[str, Any], dict[str, Any], tuple[str | int, ...], str]] = {
    "if_then_else": (
        {
            "type": "object",
            "if": {"properties": {"tipo": {"const": "pj"}}},
            "then": {"properties": {"documento": {"type": "string", "format": "cnpj"}}},
            "else": {"properties": {"documento": {"type": "string", "format": "cpf"}}},
        },
        {"tipo": "pj", "documento": "12.abc.345/01de-35"},
        ("documento",),
        "12ABC34501DE35",
    ),
    "additional_properties": (
        {
            "type": "object",
            "properties": {
                "drivers": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "format": "cpf"},
                }
            },
        },
        {"drivers": {"day": "529.982.247-25"}},
        ("drivers", "day"),
        "52998224725",
    ),
    "pattern_properties": (
        {"type": "object", "patternProperties": {"^plate_": {"type": "string", "format": "plate"}}},
        {"plate_front": "abc-1234"},
        ("plate_front",),
        "ABC1234",
    ),
    "prefix_items": (
        {
            "type": "object",
            "properties": {"t": {"type": "array", "prefixItems": [{"format": "plate"}]}},
        },
        {"t": ["abc-1234"]},
        ("t", 0),
        "ABC1234",
    ),
    "dependent_schemas": (
        {
            "type": "object",
            "dependentSchemas": {"owner": {"properties": {"cpf": {"format": "cpf"}}}},
        },
        {"owner": "Ana", "cpf": "529.982.247-25"},
        ("cpf",),
        "52998224725",
    ),
    "unevaluated_properties": (
        {"type": "object", "unevaluatedProperties": {"type": "string", "format": "plate"}},
        {"spare": "abc.1d23"},
        ("spare",),
        "ABC1D23",
    ),
    "contains": (
        {"type": "object", "properties": {"ps": {"contains": {"format": "plate"}}}},
        {"ps": ["x", "abc-1234"]},
        ("ps", 1),
        "ABC1234",
    ),
    "anchor_ref": (
        {
            "type": "object",
            "$defs": {"p": {"$anchor": "placa", "type": "string", "format": "plate"}},
            "properties": {"placa": {"$ref": "#placa"}},
        },
        {"placa": "abc 1234"},
        ("placa",),
        "ABC1234",
    ),
    # A pointer percent-encoded (RFC 6901 §6: the validator takes a `$defs` name with an
    # accent or a space only so) names the decoded member.
    "percent_encoded_ref": (
        {
            "type": "object",
            "$defs": {"cpf responsável": {"type": "string", "format": "cpf"}},
            "properties": {"cpf": {"$ref": "#/$defs/cpf%20respons%C3%A1vel"}},
        },
        {"cpf": "529.982.247-25"},
        ("cpf",),
        "52998224725",
    ),
    # A `$ref` by the schema's own `$id`, absolute or relative to it.
    "ref_by_own_id": (
        {
            "$id": "https://rabbot.example/kinds/laudo",
            "type": "object",
            "$defs": {"p": {"type": "string", "format": "plate"}},
            "properties": {
                "a": {"$ref": "https://rabbot.example/kinds/laudo#/$defs/p"},
                "b": {"$ref": "laudo#/$defs/p"},
            },
        },
        {"a": "abc-1234", "b": "abd-1234"},
        ("b",),
        "ABD1234",
    ),
    # An embedded resource's `$id`; the `$ref`s inside it resolve against it.
    "ref_by_embedded_id": (
        {
            "$id": "https://rabbot.example/kinds/obra",
            "type": "object",
            "$defs": {
                "veiculo": {
                    "$id": "veiculo",
                    "allOf": [{"$ref": "#/$defs/placa"}],
                    "$defs": {"placa": {"type": "string", "format": "plate"}},
                }
            },
            "properties": {"placa": {"$ref": "veiculo"}},
        },
        {"placa": "abc.1d23"},
        ("placa",),
        "ABC1D23",
    ),
}


@pytest.mark.parametrize("place", sorted(_IDENTIFIER_PLACES))
async def test_an_identifier_wherever_a_kind_checks_it_is_stored_normalised(
    client: Client, place: str
) -> None:
    schema, doc, path, stored = _IDENTIFIER_PLACES[place]
    kind = {"name": place, "schema": schema}
    assert (await client.post("/api/v1/kinds", json=kind, headers=auth())).status == 201
    body = {"kind": place, "key": "1", **doc}
    created = await client.post("/api/v1/entities/other", json=body, headers=auth())
    answer = await created.json()
    assert created.status == 201, answer
    read = await (await client.get(f"/api/v1/entities/other/{place}:1", headers=auth())).json()
    for document in (answer, read):
        value: Any = document
        for part in path:
            value = value[part]
        assert value == stored, document


async def test_a_free_text_where_another_arm_checks_an_identifier_is_kept_as_sent(
    client: Client,
) -> None:
    # A person's document is a CNPJ for a company, free text otherwise: the text is no CNPJ,
    # so nothing strips its dots and dashes.
    schema = {
        "type": "object",
        "if": {"properties": {"tipo": {"const": "pj"}}},
        "then": {"properties": {"documento": {"format": "cnpj"}}},
        "else": {"properties": {"documento": {"type": "string"}}},
    }
    kind = {"name": "pessoa", "schema": schema}
    assert (await client.post("/api/v1/kinds", json=kind, headers=auth())).status == 201
    doc = {"kind": "pessoa", "key": "1", "tipo": "pf", "documento": "RG 12.345.678-9 SSP/SP"}
    created = await client.post("/api/v1/entities/other", json=doc, headers=auth())
    assert (await created.json())["documento"] == "RG 12.345.678-9 SSP/SP"
    bad = {**doc, "key": "2", "tipo": "pj", "documento": "12.abc.345/01de-36"}
    refused = await client.post("/api/v1/entities/other", json=bad, headers=auth())
    assert refused.status == 422
    assert [e["pointer"] for e in (await refused.json())["errors"]] == ["/documento"]


async def test_an_identifier_format_for_member_names_is_refused_at_upload(client: Client) -> None:
    schema = {"type": "object", "properties": {"km": {"propertyNames": {"format": "plate"}}}}
    kind = {"name": "km_by_plate", "schema": schema}
    refused = await client.post("/api/v1/kinds", json=kind, headers=auth())
    problem = await refused.json()
    assert refused.status == 422, problem
    assert [e["pointer"] for e in problem["errors"]] == ["/schema/properties/km/propertyNames"]


async def test_a_kind_schema_with_its_id_beside_a_ref_reads_back_and_validates(
    client: Client,
) -> None:
    """Draft 2020-12: a root `$id` naming the schema beside a `$ref` to its base. Stored, it
    came back as a bson DBRef: the kind read as text and every entity of it was a 422."""
    schema = {
        "type": "object",
        "$id": "https://rabbot.example/kinds/tyre",
        "$ref": "#/$defs/base",
        "$defs": {"base": {"properties": {"serial": {"type": "string", "format": "cpf"}}}},
    }
    response = await client.post(
        "/api/v1/kinds", json={"name": "tyre", "schema": schema}, headers=auth()
    )
    assert response.status == 201, await response.text()
    got = await (await client.get("/api/v1/kinds/tyre", headers=auth())).json()
    assert got["schema"] == schema
    response = await client.post(
        "/api/v1/entities/other",
        json={"kind": "tyre", "key": "T-1", "serial": "529.982.247-25"},
        headers=auth(),
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["serial"] == "52998224725"
    response = await client.put("/api/v1/kinds/tyre", json={"schema": schema}, headers=auth())
    assert response.status == 200, await response.text()


async def test_a_schema_declaring_a_draft_the_validator_does_not_read_is_refused(
    client: Client, services: Services
) -> None:
    """A 2019-09 schema was taken and read as 2020-12: its `$recursiveRef` ignored, so an
    invalid CPF below it was stored."""
    draft = "https://json-schema.org/draft/2019-09/schema"
    schema = {
        "$schema": draft,
        "type": "object",
        "properties": {"d": {"$recursiveRef": "#"}, "c": {"type": "string", "format": "cpf"}},
    }
    response = await client.post(
        "/api/v1/kinds", json={"name": "arvore", "schema": schema}, headers=auth()
    )
    problem = await response.json()
    assert response.status == 422, problem
    [error] = problem["errors"]
    assert (error["pointer"], error["keyword"]) == ("/schema/$schema", "schema")
    assert f'"{draft}" is not read: schemas are Draft 2020-12' in error["message"]
    spec = {"name": "t", "entity_type": "vehicle", "input_schema": {"$schema": draft}}
    response = await client.post("/api/v1/triggers", json=spec, headers=auth())
    assert response.status == 422
    assert (await response.json())["errors"][0]["pointer"] == "/input_schema/$schema"
    for n, read in enumerate(
        ("https://json-schema.org/draft/2020-12/schema", "http://json-schema.org/draft-07/schema#")
    ):
        kind = {"name": f"k{n}", "schema": {"$schema": read, "type": "object"}}
        assert (await client.post("/api/v1/kinds", json=kind, headers=auth())).status == 201
    # one stored before the rule keeps compiling, and its entities are written
    await services.store.kinds.create("acme", "arvore", schema, "tester")
    doc = {"kind": "arvore", "key": "1", "c": "529.982.247-25"}
    response = await client.post("/api/v1/entities/other", json=doc, headers=auth())
    assert response.status == 201, await response.text()


async def test_kinds_are_per_tenant(client: Client) -> None:
    await _register(client, "acme")
    doc = {"kind": "tyre", "key": "T-1", "serial": "T-1", "position": "FL"}
    response = await client.post("/api/v1/entities/other", json=doc, headers=auth("globex"))
    assert response.status == 422
    assert "unknown kind" in (await response.text())
    assert (await client.get("/api/v1/kinds/tyre", headers=auth("globex"))).status == 404


async def test_invalid_kind_schema_and_builtin_names_are_refused(client: Client) -> None:
    broken = {"name": "tyre", "schema": {"type": "object", "properties": {"x": {"type": "nope"}}}}
    response = await client.post("/api/v1/kinds", json=broken, headers=auth())
    assert response.status == 422
    builtin = {"name": "fine", "schema": {"type": "object"}}
    response = await client.post("/api/v1/kinds", json=builtin, headers=auth())
    assert response.status == 422 and "built-in" in await response.text()
    assert (await (await client.get("/api/v1/kinds", headers=auth())).json())["items"] == []


async def test_kind_in_use_cannot_be_deleted(client: Client, services: Services) -> None:
    await _register(client)
    doc = {"kind": "tyre", "key": "T-1", "serial": "T-1", "position": "FL"}
    await client.post("/api/v1/entities/other", json=doc, headers=auth())
    assert (await client.delete("/api/v1/kinds/tyre", headers=auth())).status == 409
    await client.delete("/api/v1/entities/other/tyre:T-1", headers=auth())
    # Written less than a minute ago: the deletion waits for any write still under way.
    refused = await client.delete("/api/v1/kinds/tyre", headers=auth())
    problem = await refused.json()
    assert refused.status == 409 and "try again in" in problem["detail"], problem
    # A minute on (another process, whose clock says so), the kind goes.
    services.store.kinds.clock = lambda: utcnow() + timedelta(seconds=61)
    await services.kinds.delete("acme", "tyre")
    assert (await client.get("/api/v1/kinds/tyre", headers=auth())).status == 404


_TYRE_FEED = """name: tyre-feed
direction: inbound
entity_type: other
kind: tyre
key: [key]
fields:
  key: {from: id, transforms: [string]}
  serial: s
  position: p
  tread_mm: mm
"""
_FLEET_FEED = """name: fleet-feed
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, transforms: [plate]}
also:
  - entity_type: other
    kind: tyre
    key: [key]
    fields:
      key: {from: pneu, transforms: [string]}
      serial: pneu
      position: {value: FL}
      tread_mm: mm
"""


async def _upload(client: Client, text: str) -> dict[str, Any]:
    headers = {**auth(), "Content-Type": "application/yaml"}
    response = await client.post("/api/v1/mappings", data=text.encode(), headers=headers)
    body: dict[str, Any] = await response.json()
    assert response.status in (200, 201), body
    return body


async def test_a_trigger_naming_a_kind_the_tenant_does_not_have_is_refused_when_created(
    client: Client,
) -> None:
    await _register(client)
    spec = {"name": "typo", "entity_type": "other", "kind": "tyer", "methods": ["POST"]}
    response = await client.post("/api/v1/triggers", json=spec, headers=auth())
    problem = await response.json()
    assert response.status == 422, problem
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [("/kind", "reference")]
    assert "unknown kind 'tyer': not built in (checklist, fine)" in problem["detail"]
    assert (await (await client.get("/api/v1/triggers", headers=auth())).json())["items"] == []
    for kind in ("tyre", "fine"):  # the tenant's own and a built-in one
        made = await client.post("/api/v1/triggers", json={**spec, "kind": kind}, headers=auth())
        assert made.status == 201, await made.text()
        spec["name"] += "+"


async def test_a_kind_a_trigger_or_an_active_mapping_uses_is_not_deleted_naming_them(
    client: Client,
) -> None:
    await _register(client)
    spec = {"name": "pneus", "entity_type": "other", "kind": "tyre", "methods": ["POST"]}
    trigger = await (await client.post("/api/v1/triggers", json=spec, headers=auth())).json()
    await _upload(client, _FLEET_FEED)  # writes tyres as an `also` target
    refused = await client.delete("/api/v1/kinds/tyre", headers=auth())
    problem = await refused.json()
    assert refused.status == 409, problem
    assert problem["used_by"] == [
        {"kind": "trigger", "id": trigger["id"], "name": "pneus"},
        {"kind": "mapping", "name": "fleet-feed", "version": 1},
    ]
    assert "kind 'tyre' is used by trigger pneus, mapping fleet-feed" in problem["detail"]
    # the trigger still writes tyres
    bearer = {"Authorization": f"Bearer {trigger['token']}"}
    doc = {"key": "T-1", "serial": "T-1", "position": "FL"}
    written = await client.post(f"/hooks/{trigger['id']}", json=doc, headers=bearer)
    assert written.status == 201, await written.text()
    await client.delete(f"/api/v1/triggers/{trigger['id']}", headers=auth())
    await client.delete("/api/v1/mappings/fleet-feed", headers=auth())
    await client.delete("/api/v1/entities/other/tyre:T-1", headers=auth())
    refused = await client.delete("/api/v1/kinds/tyre", headers=auth())
    assert "try again in" in (await refused.json())["detail"]  # only the write's mark is left


async def test_a_schema_an_active_mapping_no_longer_fits_is_refused_naming_it(
    client: Client,
) -> None:
    await _register(client)
    await _upload(client, _TYRE_FEED)
    await _upload(client, _FLEET_FEED)
    spec = {"name": "feed", "entity_type": "other", "kind": "tyre", "mapping": "tyre-feed"}
    trigger = await (await client.post("/api/v1/triggers", json=spec, headers=auth())).json()
    properties = dict(TYRE["schema"]["properties"])
    del properties["tread_mm"]
    narrow = {**TYRE["schema"], "properties": properties}
    refused = await client.put("/api/v1/kinds/tyre", json={"schema": narrow}, headers=auth())
    problem = await refused.json()
    assert refused.status == 409, problem
    assert problem["used_by"] == [
        {"kind": "mapping", "name": "fleet-feed", "version": 1},
        {"kind": "mapping", "name": "tyre-feed", "version": 1},
    ]
    assert (
        "mapping tyre-feed /fields/tread_mm: target 'tread_mm' is not a field of the other "
        "(tyre) schema" in problem["detail"]
    ), problem
    assert "mapping fleet-feed /also/0/fields/tread_mm" in problem["detail"]
    # nothing replaced: the partner's payloads still land
    bearer = {"Authorization": f"Bearer {trigger['token']}"}
    payload = {"id": 7, "s": "T-7", "p": "RR", "mm": 4}
    written = await client.post(f"/hooks/{trigger['id']}", json=payload, headers=bearer)
    assert written.status == 201, await written.text()
    await client.delete("/api/v1/entities/other/tyre:7", headers=auth())
    # ?force=true replaces it anyway: the mapping runs on, its tread_mm refused
    path = "/api/v1/kinds/tyre"
    forced = await client.put(f"{path}?force=true", json={"schema": narrow}, headers=auth())
    assert forced.status == 200, await forced.text()
    written = await client.post(f"/hooks/{trigger['id']}", json=payload, headers=bearer)
    assert written.status == 422, await written.text()
    widened = await client.put(path, json={"schema": TYRE["schema"]}, headers=auth())
    assert widened.status == 200, await widened.text()
    # versions without the field first, and the schema is replaced
    await _upload(client, _TYRE_FEED.replace("  tread_mm: mm\n", ""))
    await _upload(client, _FLEET_FEED.replace("      tread_mm: mm\n", ""))
    replaced = await client.put(path, json={"schema": narrow}, headers=auth())
    assert replaced.status == 200, await replaced.text()


async def test_duplicate_kind_is_409_and_viewer_cannot_register(client: Client) -> None:
    await _register(client)
    assert (await client.post("/api/v1/kinds", json=TYRE, headers=auth())).status == 409
    viewer = await client.post(
        "/api/v1/kinds", json={**TYRE, "name": "other_tyre"}, headers=auth(role="viewer")
    )
    assert viewer.status == 403


async def test_a_kind_schema_whose_refs_branch_and_recur_is_refused_not_walked_for_minutes(
    client: Client,
) -> None:
    """Three arms, two of them recursive twice: exponentially many paths under any depth
    limit. The walk that finds identifier formats (and integers) meets each subschema once per
    depth, so it is answered at once; one with more subschemas than its budget is a 422."""
    node = {
        "oneOf": [
            {"type": "string", "format": "cpf"},
            {
                "type": "object",
                "properties": {"a": {"$ref": "#/$defs/n"}, "b": {"$ref": "#/$defs/n"}},
            },
            {"type": "array", "items": {"$ref": "#/$defs/n"}},
        ]
    }
    schema = {"type": "object", "$defs": {"n": node}, "properties": {"tree": {"$ref": "#/$defs/n"}}}
    started = time.process_time()  # the CPU spent walking the schema: load does not stretch it
    response = await client.post(
        "/api/v1/kinds", json={"name": "tree", "schema": schema}, headers=auth()
    )
    assert response.status == 201, await response.text()
    assert time.process_time() - started < 5
    arms = [{"type": "object", "properties": {f"a{i}": {"$ref": "#/$defs/n"}}} for i in range(600)]
    node = {"oneOf": [{"type": "string", "format": "cpf"}, *arms]}
    schema = {"type": "object", "$defs": {"n": node}, "properties": {"tree": {"$ref": "#/$defs/n"}}}
    response = await client.post(
        "/api/v1/kinds", json={"name": "wide", "schema": schema}, headers=auth()
    )
    assert response.status == 422
    [problem] = (await response.json())["errors"]
    assert problem["keyword"] == "complexity" and problem["pointer"] == "/schema"
    kinds = (await (await client.get("/api/v1/kinds", headers=auth())).json())["items"]
    assert [k["name"] for k in kinds] == ["tree"]


async def test_a_mapping_target_behind_recursive_arms_of_a_kind_is_found_not_given_up(
    client: Client,
) -> None:
    """A kind whose free-form values recur through anyOf arms (never walked for identifier
    formats, so the kind is accepted): a mapping's target behind them is looked for once per
    subschema and rest of the path, not once per way to reach it. Walked every way, finding
    it took more than the walk's budget, and a field of the kind was refused as unknown."""
    dead = {"anyOf": [{"$ref": "#/$defs/dead_arm"}, {"$ref": "#/$defs/dead_arm"}]}
    dead_arm = {
        "type": "object",
        "properties": {"z": {"type": "string"}},
        "additionalProperties": {"$ref": "#/$defs/dead"},
    }
    live = {"anyOf": [{"$ref": "#/$defs/dead"}, {"$ref": "#/$defs/live_arm"}]}
    live_arm = {
        "type": "object",
        "properties": {"z": {"type": "object"}},
        "additionalProperties": {"$ref": "#/$defs/live"},
    }
    schema = {
        "type": "object",
        "$defs": {"dead": dead, "dead_arm": dead_arm, "live": live, "live_arm": live_arm},
        "additionalProperties": {"$ref": "#/$defs/live"},
    }
    response = await client.post(
        "/api/v1/kinds", json={"name": "deep", "schema": schema}, headers=auth()
    )
    assert response.status == 201, await response.text()
    target = ".".join(["a"] * 15 + ["z", "q"])
    mapping = (
        "name: deep\ndirection: inbound\nentity_type: other\nkind: deep\nkey: [key]\n"
        f"fields:\n  key: id\n  {target}: value\n"
    )
    uploaded = await client.post(
        "/api/v1/mappings",
        data=mapping.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert uploaded.status == 201, await uploaded.text()


async def test_a_kind_deleted_while_entities_of_it_are_written_leaves_no_orphan(
    client: Client,
) -> None:
    """A deletion racing writes of the kind's entities: either the kind stays (409: entities
    of it exist or were being written) or none of them was written (their writes are 409s).
    Never an entity of a kind that no longer exists."""
    for attempt in range(6):
        name = f"tyre{attempt}"
        body = {**TYRE, "name": name}
        assert (await client.post("/api/v1/kinds", json=body, headers=auth())).status == 201

        async def write(i: int, name: str = name) -> int:
            doc = {"kind": name, "key": f"T-{i}", "serial": f"S{i}", "position": "FL"}
            response = await client.post("/api/v1/entities/other", json=doc, headers=auth())
            return response.status

        async def delete(name: str = name) -> int:
            return (await client.delete(f"/api/v1/kinds/{name}", headers=auth())).status

        # Half the attempts start the deletion first, half the writes.
        if attempt % 2:
            *written, deleted = await asyncio.gather(*(write(i) for i in range(6)), delete())
        else:
            deleted, *written = await asyncio.gather(delete(), *(write(i) for i in range(6)))
        assert set(written) <= {201, 409, 422}, written
        kinds = await (await client.get(f"/api/v1/kinds/{name}", headers=auth())).json()
        entities = await (await client.get("/api/v1/entities/other", headers=auth())).json()
        mine = [e for e in entities["items"] if e["kind"] == name]
        assert len(mine) == written.count(201)
        if deleted == 204:  # the writes that came after it found no such kind (422)
            assert kinds["status"] == 404 and mine == [], (written, mine)
        else:
            assert deleted == 409 and kinds["name"] == name, kinds
            assert 422 not in written


async def _problems(response: Any) -> list[tuple[str, str]]:
    assert response.status == 422, await response.text()
    return [(e["pointer"], e["keyword"]) for e in (await response.json())["errors"]]


async def test_a_kind_body_member_the_route_does_not_know_is_a_422_naming_it(
    client: Client,
) -> None:
    """A typo (`sceham`) was dropped and the kind registered; a rename in a replacement
    (`name` in a PUT's body) was ignored, the caller believing it renamed the kind."""
    typo = {**TYRE, "sceham": 1}
    response = await client.post("/api/v1/kinds", json=typo, headers=auth())
    assert await _problems(response) == [("/sceham", "additionalProperties")]
    assert (await client.get("/api/v1/kinds/tyre", headers=auth())).status == 404
    await _register(client)
    rename = {"name": "pneu", "schema": TYRE["schema"]}
    response = await client.put("/api/v1/kinds/tyre", json=rename, headers=auth())
    assert await _problems(response) == [("/name", "additionalProperties")]
    assert (await client.get("/api/v1/kinds/pneu", headers=auth())).status == 404


async def test_a_kind_body_member_missing_or_of_the_wrong_type_is_a_422_with_its_pointer(
    client: Client,
) -> None:
    """They were a 400 without `errors` ("`name` must be a string")."""
    wrong = {"name": 5, "schema": {"type": "object"}}
    response = await client.post("/api/v1/kinds", json=wrong, headers=auth())
    assert await _problems(response) == [("/name", "type")]
    response = await client.post("/api/v1/kinds", json={"name": "tyre"}, headers=auth())
    assert await _problems(response) == [("/schema", "required")]
    response = await client.post("/api/v1/kinds", json={"schema": []}, headers=auth())
    assert await _problems(response) == [("/name", "required"), ("/schema", "type")]
    await _register(client)
    response = await client.put("/api/v1/kinds/tyre", json={}, headers=auth())
    assert await _problems(response) == [("/schema", "required")]


_TREAD = {
    "type": "object",
    "properties": {"serial": {"type": "string"}, "tread_mm": {"type": "number"}},
}
_BRANDED = {
    "type": "object",
    "required": ["brand"],
    "additionalProperties": False,
    "properties": {"serial": {"type": "string"}, "brand": {"type": "string"}},
}


async def _tyres(client: Client, count: int) -> None:
    kind = {"name": "tyre", "schema": _TREAD}
    assert (await client.post("/api/v1/kinds", json=kind, headers=auth())).status == 201
    for n in range(1, count + 1):
        doc = {"kind": "tyre", "key": f"T-{n}", "serial": "S", "tread_mm": n}
        created = await client.post("/api/v1/entities/other", json=doc, headers=auth())
        assert created.status == 201, await created.text()


async def test_a_schema_its_stored_entities_break_is_refused_naming_them(client: Client) -> None:
    await _tyres(client, 2)
    refused = await client.put("/api/v1/kinds/tyre", json={"schema": _BRANDED}, headers=auth())
    problem = await refused.json()
    assert refused.status == 409, problem
    assert (problem["stranded"], problem["checked"]) == (2, 2)
    assert "2 of the 2 stored entities of kind 'tyre'" in problem["detail"]
    first = problem["entities"][0]
    assert first["key"] == "T-1"
    assert {e["pointer"] for e in first["errors"]} == {"/brand", "/tread_mm"}
    kind = await (await client.get("/api/v1/kinds/tyre", headers=auth())).json()
    assert kind["schema"] == _TREAD  # nothing replaced: the entities stay writable
    patch = {"serial": "S2"}
    written = await client.patch("/api/v1/entities/other/tyre:T-1", json=patch, headers=auth())
    assert written.status == 200, await written.text()
    # A schema they all still satisfy is replaced at once.
    optional = {**_TREAD, "properties": {**_TREAD["properties"], "brand": {"type": "string"}}}
    replaced = await client.put("/api/v1/kinds/tyre", json={"schema": optional}, headers=auth())
    assert replaced.status == 200, await replaced.text()


async def test_a_forced_schema_replacement_leaves_entities_to_be_made_valid(
    client: Client,
) -> None:
    await _tyres(client, 1)
    bad = await client.put(
        "/api/v1/kinds/tyre?force=maybe", json={"schema": _BRANDED}, headers=auth()
    )
    assert bad.status == 400, await bad.text()
    forced = await client.put(
        "/api/v1/kinds/tyre?force=true", json={"schema": _BRANDED}, headers=auth()
    )
    assert forced.status == 200, await forced.text()
    path = "/api/v1/entities/other/tyre:T-1"
    # A write is checked for what it changes: the stored `tread_mm` the schema no longer
    # allows, and the `brand` it now requires, which the write leaves as they are, fail
    # no write; they stay as stored until a write changes them.
    kept = await client.patch(path, json={"serial": "S2"}, headers=auth())
    assert kept.status == 200, await kept.text()
    assert (await kept.json())["tread_mm"] == 1
    sent = await client.patch(path, json={"tread_mm": 3}, headers=auth())
    assert sent.status == 422, await sent.text()
    assert [e["pointer"] for e in (await sent.json())["errors"]] == ["/tread_mm"]
    fixed = await client.patch(path, json={"brand": "Pirelli", "tread_mm": None}, headers=auth())
    assert fixed.status == 200, await fixed.text()
    assert "tread_mm" not in await fixed.json()


async def test_a_write_leaving_a_stored_value_the_schema_refuses_passes_and_quotes_none(
    client: Client,
) -> None:
    safe = {
        "type": "object",
        "properties": {"serial": {"type": "string"}, "pin": {"type": "string"}, "lock": {}},
    }
    kind = {"name": "cofre", "schema": safe}
    assert (await client.post("/api/v1/kinds", json=kind, headers=auth())).status == 201
    doc = {"kind": "cofre", "key": "A", "serial": "x", "pin": "98765", "lock": {"a": "segredo"}}
    assert (await client.post("/api/v1/entities/other", json=doc, headers=auth())).status == 201
    stricter = {
        **safe,
        "properties": {
            **safe["properties"],
            "pin": {"type": "string", "maxLength": 4},
            "lock": {"type": "object", "maxProperties": 1},
        },
    }
    path = "/api/v1/kinds/cofre?force=true"
    assert (await client.put(path, json={"schema": stricter}, headers=auth())).status == 200
    spec = {"name": "c", "entity_type": "other", "kind": "cofre", "expose": ["serial"]}
    trigger = await (await client.post("/api/v1/triggers", json=spec, headers=auth())).json()
    bearer = {"Authorization": f"Bearer {trigger['token']}"}
    hook = f"/hooks/{trigger['id']}"
    # pin left as stored: the stored entity's problem, not the write's
    answer = await client.post(hook, json={"key": "A", "serial": "w"}, headers=bearer)
    assert answer.status == 200, await answer.text()
    # lock merged with the stored one: the write's, said without the stored members
    answer = await client.post(
        hook, json={"key": "A", "serial": "y", "lock": {"b": "z"}}, headers=bearer
    )
    text = await answer.text()
    assert answer.status == 422, text
    assert "98765" not in text and "segredo" not in text, text
    errors = {e["pointer"]: e for e in (await answer.json())["errors"]}
    assert errors.keys() == {"/lock"}
    assert errors["/lock"]["message"] == (
        "/lock: the stored value, with this write merged into it, does not meet the schema "
        "(maxProperties)"
    )
    kept = await (
        await client.get(f"/api/v1/rejected?trigger_id={trigger['id']}", headers=auth())
    ).text()
    assert "/lock" in kept and "98765" not in kept and "segredo" not in kept, kept
    # a value the write sends is quoted, as ever
    answer = await client.post(
        hook, json={"key": "A", "pin": "123456", "lock": None}, headers=bearer
    )
    assert answer.status == 422 and '\\"123456\\" is longer than 4' in await answer.text()
    fixed = {"key": "A", "pin": "1234", "lock": None}
    answer = await client.post(hook, json=fixed, headers=bearer)
    assert answer.status == 200, await answer.text()


async def test_a_stored_value_a_writes_other_change_makes_invalid_is_the_writes_problem(
    client: Client,
) -> None:
    """Only a problem the stored entity had already is left as stored: a value the write
    leaves as it is, which the write's other change makes invalid (a truck needs two axles),
    fails the write, without quoting the stored value."""
    schema = {
        "type": "object",
        "properties": {"tipo": {"type": "string"}, "eixos": {"type": "integer"}},
        "if": {"properties": {"tipo": {"const": "caminhao"}}},
        "then": {"properties": {"eixos": {"minimum": 2}}},
    }
    kind = {"name": "frota", "schema": schema}
    assert (await client.post("/api/v1/kinds", json=kind, headers=auth())).status == 201
    doc = {"kind": "frota", "key": "F-1", "tipo": "carro", "eixos": 1}
    assert (await client.post("/api/v1/entities/other", json=doc, headers=auth())).status == 201
    path = "/api/v1/entities/other/frota:F-1"
    answer = await client.patch(path, json={"tipo": "caminhao"}, headers=auth())
    assert answer.status == 422, await answer.text()
    (error,) = (await answer.json())["errors"]
    assert error["pointer"] == "/eixos" and error["keyword"] == "minimum", error
    assert error["message"] == (
        "/eixos: the stored value, which this write leaves as it is, does not meet the schema "
        "(minimum) with the write's changes: send a valid value (null removes it)"
    )
    answer = await client.patch(path, json={"tipo": "caminhao", "eixos": 3}, headers=auth())
    assert answer.status == 200, await answer.text()


async def _forced_kind(
    client: Client, name: str, loose: dict[str, Any], strict: dict[str, Any], doc: dict[str, Any]
) -> str:
    """An entity of kind `name` stored as `doc` under the schema `loose`, then the kind's
    schema replaced by `strict` with `?force=true`; the entity's path."""
    kind = {"name": name, "schema": loose}
    assert (await client.post("/api/v1/kinds", json=kind, headers=auth())).status == 201
    made = await client.post("/api/v1/entities/other", json={"kind": name, **doc}, headers=auth())
    assert made.status == 201, await made.text()
    put = await client.put(
        f"/api/v1/kinds/{name}?force=true", json={"schema": strict}, headers=auth()
    )
    assert put.status == 200, await put.text()
    return f"/api/v1/entities/other/{name}:{doc['key']}"


@pytest.mark.parametrize(
    ("body", "where"),
    [({"pin": "98765"}, "/pin"), ({"pins": ["2", "98765"]}, "/pins/1")],
    ids=["the-stored-value", "a-new-array-holding-the-stored-item"],
)
async def test_a_write_sending_a_value_the_schema_refuses_is_checked_though_it_is_stored(
    client: Client, body: dict[str, Any], where: str
) -> None:
    """A write sending a value equal to a stored one the schema refuses (the value itself,
    or a new array whose item at that place is the stored item) was taken for a write
    leaving it as stored, and stored it (rev28 F1): what a write sends is checked."""
    loose = {
        "type": "object",
        "properties": {
            "pin": {"type": "string"},
            "pins": {"type": "array", "items": {"type": "string"}},
        },
    }
    short = {"type": "string", "maxLength": 4}
    strict = {
        "type": "object",
        "properties": {"pin": short, "pins": {"type": "array", "items": short}},
    }
    doc = {"key": "A", "pin": "98765", "pins": ["1", "98765"]}
    path = await _forced_kind(client, "cofre", loose, strict, doc)
    answer = await client.patch(path, json=body, headers=auth())
    assert answer.status == 422, await answer.text()
    (error,) = (await answer.json())["errors"]
    assert error["pointer"] == where and error["keyword"] == "maxLength", error
    stored = await (await client.get(path, headers=auth())).json()
    assert stored["pins"] == ["1", "98765"]


async def test_a_new_violation_at_a_value_already_refused_is_the_writes(client: Client) -> None:
    """A stored `eixos: 0` that a forced schema's `minimum: 1` refuses hid the new violation
    the write's change makes at it (a truck needs two axles, by another `minimum`): problems
    were told apart by pointer and keyword only, and the truck with no axle was stored
    (rev28 F6). Where the schema says it tells them apart."""
    loose = {
        "type": "object",
        "properties": {"tipo": {"type": "string"}, "eixos": {"type": "integer"}},
    }
    strict = {
        "type": "object",
        "properties": {"tipo": {"type": "string"}, "eixos": {"type": "integer", "minimum": 1}},
        "if": {"properties": {"tipo": {"const": "caminhao"}}},
        "then": {"properties": {"eixos": {"minimum": 2}}},
    }
    path = await _forced_kind(
        client, "frota", loose, strict, {"key": "F-1", "tipo": "carro", "eixos": 0}
    )
    assert (await client.patch(path, json={"note": 1}, headers=auth())).status == 200
    answer = await client.patch(path, json={"tipo": "caminhao"}, headers=auth())
    assert answer.status == 422, await answer.text()
    (error,) = (await answer.json())["errors"]
    assert error["pointer"] == "/eixos" and error["keyword"] == "minimum", error
    assert "with the write's changes" in error["message"], error
    assert (await (await client.get(path, headers=auth())).json())["tipo"] == "carro"


@pytest.mark.parametrize("shape", ["many-fields", "one-long-array"])
async def test_more_stale_values_than_an_answer_lists_fail_no_write_that_leaves_them(
    client: Client, shape: str
) -> None:
    """Past 100 problems (what an answer lists) a document's problems were not explained,
    and each unexplained one counted as the write's: an entity with 120 stale fields, or one
    array of 150 readings a forced `items` refuses, could take no write at all, refused with
    "one more problem, not explained" (rev28 F2). A write leaving them goes through, and one
    sending a bad value is refused naming it, and only it."""
    note = {"note": {"type": "string"}}
    if shape == "many-fields":
        names = [f"f{i}" for i in range(120)]
        loose = {
            "type": "object",
            "properties": {**{name: {"type": "string"} for name in names}, **note},
        }
        short = {"type": "string", "maxLength": 3}
        strict = {"type": "object", "properties": {**{name: short for name in names}, **note}}
        doc: dict[str, Any] = {"key": "W", **dict.fromkeys(names, "toolong")}
    else:
        loose = {"type": "object", "properties": {"readings": {"type": "array"}, **note}}
        numbers = {"type": "array", "items": {"type": "number"}}
        strict = {"type": "object", "properties": {"readings": numbers, **note}}
        doc = {"key": "W", "readings": [str(i) for i in range(150)]}
    path = await _forced_kind(client, "meter", loose, strict, doc)
    answer = await client.patch(path, json={"note": "n"}, headers=auth())
    assert answer.status == 200, (await answer.text())[:500]
    assert (await answer.json())["changed"] == ["note"]
    answer = await client.patch(path, json={"note": 5}, headers=auth())
    assert answer.status == 422, (await answer.text())[:500]
    body = await answer.json()
    assert [(e["pointer"], e["keyword"]) for e in body["errors"]] == [("/note", "type")], body
    assert "errors_omitted" not in body, body


async def test_a_schema_replacement_checks_a_bounded_number_of_stored_entities(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kinds, "MAX_CHECKED", 2)
    await _tyres(client, 3)
    # T-3 alone breaks it: past the first two, it is not looked at.
    capped = {**_TREAD, "properties": {**_TREAD["properties"], "tread_mm": {"maximum": 2}}}
    replaced = await client.put("/api/v1/kinds/tyre", json={"schema": capped}, headers=auth())
    assert replaced.status == 200, await replaced.text()
    stricter = {**_TREAD, "properties": {**_TREAD["properties"], "tread_mm": {"maximum": 1}}}
    refused = await client.put("/api/v1/kinds/tyre", json={"schema": stricter}, headers=auth())
    problem = await refused.json()
    assert refused.status == 409 and "1 of the first 2 stored" in problem["detail"], problem


async def test_a_kind_declaring_or_requiring_the_envelopes_kind_or_key_is_refused(
    client: Client,
) -> None:
    """An `other`'s `kind` and `key` are its envelope's: a write checks the document without
    them against the kind's schema, so a kind requiring one could never be written. It is
    refused up front, 422 `reserved` at the name, in `properties`, `required` or a subschema
    (one a `$ref` names by pointer, percent-encoded or not, by anchor or by `$id`)."""
    cases = [
        (
            {"required": ["key"], "properties": {"key": {"type": "string"}}},
            "/schema/properties/key",
        ),
        ({"required": ["kind"]}, "/schema/required/0"),
        ({"allOf": [{"required": ["key"]}]}, "/schema/allOf/0/required/0"),
        (  # a local $ref by anchor (JSON Schema 2020-12), as the validator resolves it
            {"$ref": "#chave", "$defs": {"k": {"$anchor": "chave", "required": ["key"]}}},
            "/schema/$defs/k/required/0",
        ),
        (
            {"$ref": "#kd", "$defs": {"k": {"$dynamicAnchor": "kd", "required": ["kind"]}}},
            "/schema/$defs/k/required/0",
        ),
        (  # a pointer percent-encoded, as the validator reads it
            {"allOf": [{"$ref": "#/$defs/b%C3%A1se"}], "$defs": {"báse": {"required": ["key"]}}},
            "/schema/$defs/báse/required/0",
        ),
        (  # by the schema's own `$id`
            {
                "$id": "https://rabbot.example/kinds/pneu",
                "$ref": "pneu#/$defs/b",
                "$defs": {"b": {"required": ["key"]}},
            },
            "/schema/$defs/b/required/0",
        ),
    ]
    for extra, pointer in cases:
        body = {"name": "pneu", "schema": {"type": "object", **extra}}
        response = await client.post("/api/v1/kinds", json=body, headers=auth())
        problem = await response.json()
        assert response.status == 422, problem
        assert response.content_type == "application/problem+json"
        found = {(e["pointer"], e["keyword"]) for e in problem["errors"]}
        assert (pointer, "reserved") in found, problem
    assert (await (await client.get("/api/v1/kinds", headers=auth())).json())["items"] == []
    allowed = {"name": "pneu", "schema": {"type": "object", "properties": {"pressao": {}}}}
    assert (await client.post("/api/v1/kinds", json=allowed, headers=auth())).status == 201
    written = await client.post(
        "/api/v1/entities/other", json={"kind": "pneu", "key": "P-1", "pressao": 32}, headers=auth()
    )
    assert written.status == 201, await written.text()


async def test_the_kinds_list_is_paged_by_a_cursor_like_every_list(client: Client) -> None:
    for name in ("axle", "tyre", "belt"):
        assert (
            await client.post("/api/v1/kinds", json={**TYRE, "name": name}, headers=auth())
        ).status == 201
    first = await client.get("/api/v1/kinds?limit=2", headers=auth())
    page = await first.json()
    assert first.status == 200, page
    assert [k["name"] for k in page["items"]] == ["axle", "belt"]
    assert page["next_cursor"] == "belt"
    second = await (await client.get("/api/v1/kinds?limit=2&cursor=belt", headers=auth())).json()
    assert [k["name"] for k in second["items"]] == ["tyre"] and second["next_cursor"] is None
    everything = await (await client.get("/api/v1/kinds", headers=auth())).json()
    assert len(everything["items"]) == 3 and everything["next_cursor"] is None
    document = await (await client.get("/openapi.json")).json()
    params = document["paths"]["/api/v1/kinds"]["get"]["parameters"]
    assert {p["name"] for p in params} >= {"limit", "cursor"}


BACKTRACKING = r"^(?:(a|a)*(?!x)b|.*)$"  # matches anything; its first branch backtracks first


async def test_a_pattern_that_needs_backtracking_is_refused_and_usual_patterns_are_kept(
    client: Client,
) -> None:
    """A lookaround or backreference runs on a backtracking engine, ~10 ms a string: one
    kind's 12 KB write held the event loop for 7-22 s. Patterns must run in linear time."""
    refused = {
        "/schema/properties/names/items/pattern": {
            "names": {"type": "array", "items": {"type": "string", "pattern": BACKTRACKING}}
        },
        "/schema/properties/name/pattern": {
            "name": {"type": "string", "pattern": r"^([A-Za-z]+\s?)+(?<!\s)$"}
        },
        "/schema/properties/extra/patternProperties/^(?=x)": {
            "extra": {"type": "object", "patternProperties": {"^(?=x)": {"type": "string"}}}
        },
        "/schema/properties/pairs/propertyNames/pattern": {
            "pairs": {"type": "object", "propertyNames": {"pattern": r"^(a)\1$"}}
        },
    }
    for where, properties in refused.items():
        schema = {"type": "object", "properties": properties}
        answer = await client.post(
            "/api/v1/kinds", json={"name": "crew", "schema": schema}, headers=auth()
        )
        assert answer.status == 422, where
        [problem] = (await answer.json())["errors"]
        assert problem["pointer"] == where and problem["keyword"] == "pattern", problem
        assert "linear-time" in problem["message"]
    usual = {  # CPF, CNPJ, a Mercosul plate, a CEP, as people write them
        "cpf": {"type": "string", "pattern": r"^\d{3}\.\d{3}\.\d{3}-\d{2}$"},
        "cnpj": {"type": "string", "pattern": r"^\d{2}\.\d{3}\.\d{3}/\d{4}-\d{2}$"},
        "plate": {"type": "string", "pattern": r"^[A-Z]{3}[0-9][A-Z0-9][0-9]{2}$"},
        "cep": {"type": "string", "pattern": r"^\d{5}-?\d{3}$"},
    }
    kind = {"name": "crew", "schema": {"type": "object", "properties": usual}}
    created = await client.post("/api/v1/kinds", json=kind, headers=auth())
    assert created.status == 201, await created.text()
    good = {"cpf": "529.982.247-25", "cnpj": "11.222.333/0001-81", "plate": "ABC1D23"}
    doc = {"kind": "crew", "key": "c1", **good, "cep": "01310-100"}
    written = await client.post("/api/v1/entities/other", json=doc, headers=auth())
    assert written.status == 201, await written.text()
    bad = await client.post(
        "/api/v1/entities/other", json={**doc, "key": "c2", "cep": "0131-100"}, headers=auth()
    )
    assert bad.status == 422 and (await bad.json())["errors"][0]["pointer"] == "/cep"


async def test_a_stored_kinds_backtracking_pattern_is_bounded_per_string(
    client: Client, services: Services
) -> None:
    """A kind stored before the rule keeps its pattern, run with a bound of 10,000
    backtracking steps a string (~0.1 ms): a string it cannot decide within it is refused."""
    schema = {
        "type": "object",
        "properties": {
            "names": {"type": "array", "items": {"type": "string", "pattern": BACKTRACKING}}
        },
    }
    await services.store.kinds.create("acme", "crew", schema, "before")
    fine = {"kind": "crew", "key": "c1", "names": ["b", "x"]}
    assert (await client.post("/api/v1/entities/other", json=fine, headers=auth())).status == 201
    body = {"kind": "crew", "key": "c2", "names": ["a" * 17] * 600}
    spent = time.process_time()
    answer = await client.post("/api/v1/entities/other", json=body, headers=auth())
    spent = time.process_time() - spent
    assert answer.status == 422
    problem = await answer.json()
    assert problem["errors"][0]["pointer"] == "/names/0"
    assert "backtracking" in problem["errors"][0]["message"]
    assert spent < 2.0, f"{spent:.1f} s of CPU for 600 strings"  # unbounded: 6-20 s


# -- saves naming a kind against its deletion or replacement: one or the other, never both --


async def test_a_kind_is_not_deleted_while_a_trigger_naming_it_is_being_saved(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deletion looked at the triggers, then deleted; the save looked at the kind, then
    stored the trigger: a DELETE between the save's check and its insert removed the kind of
    a trigger then stored (every payload a 422 blaming the partner). Interleaved so here: the
    DELETE comes while the trigger is being stored, and is refused; once stored, it is a
    user of the kind (409 `used_by`)."""
    await _register(client)
    services = client.app[services_key]
    insert = services.store.triggers.insert
    answers: list[int] = []

    async def deleting_first(doc: dict[str, Any]) -> None:
        answers.append((await client.delete("/api/v1/kinds/tyre", headers=auth())).status)
        await insert(doc)

    monkeypatch.setattr(services.store.triggers, "insert", deleting_first)
    spec = {"name": "t", "entity_type": "other", "kind": "tyre", "methods": ["POST"]}
    created = await client.post("/api/v1/triggers", json=spec, headers=auth())
    assert created.status == 201, await created.text()
    assert answers == [409]
    monkeypatch.undo()
    refused = await client.delete("/api/v1/kinds/tyre", headers=auth())
    assert refused.status == 409 and (await refused.json())["used_by"][0]["name"] == "t"
    assert (await client.get("/api/v1/kinds/tyre", headers=auth())).status == 200


async def test_a_trigger_naming_a_kind_being_deleted_is_not_saved(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: a trigger saved while the deletion looks at the kind's users (found
    none) is refused, and the kind goes; no trigger names a kind gone."""
    await _register(client)
    services = client.app[services_key]
    users = services.kinds.users
    answers: list[int] = []

    async def saving_meanwhile(tenant: str, name: str) -> list[dict[str, Any]]:
        found = await users(tenant, name)
        spec = {"name": "t", "entity_type": "other", "kind": "tyre", "methods": ["POST"]}
        made = await client.post("/api/v1/triggers", json=spec, headers=auth())
        answers.append(made.status)
        return found

    monkeypatch.setattr(services.kinds, "users", saving_meanwhile)
    assert (await client.delete("/api/v1/kinds/tyre", headers=auth())).status == 204
    assert answers == [409]
    assert (await (await client.get("/api/v1/triggers", headers=auth())).json())["items"] == []


async def test_a_kind_is_not_deleted_while_a_mapping_writing_it_is_being_uploaded(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _register(client)
    services = client.app[services_key]
    insert = services.store.mappings.insert_version
    answers: list[int] = []

    async def deleting_first(tenant: str, doc: dict[str, Any]) -> None:
        answers.append((await client.delete("/api/v1/kinds/tyre", headers=auth())).status)
        await insert(tenant, doc)

    monkeypatch.setattr(services.store.mappings, "insert_version", deleting_first)
    assert (await _upload(client, _TYRE_FEED))["active"] is True
    assert answers == [409]
    assert (await client.get("/api/v1/kinds/tyre", headers=auth())).status == 200


async def test_a_kinds_field_is_not_dropped_while_a_mapping_writing_it_is_being_uploaded(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PUT dropping `tread_mm` while a mapping writing `tread_mm` is being stored: the PUT
    waits its turn (409, try again) and, tried again, sees the mapping (409 `used_by`); the
    active mapping never maps into a field the schema refuses."""
    await _register(client)
    services = client.app[services_key]
    insert = services.store.mappings.insert_version
    narrower = {"schema": {**TYRE["schema"], "properties": dict(TYRE["schema"]["properties"])}}
    del narrower["schema"]["properties"]["tread_mm"]
    answers: list[int] = []

    async def replacing_first(tenant: str, doc: dict[str, Any]) -> None:
        put = await client.put("/api/v1/kinds/tyre", json=narrower, headers=auth())
        answers.append(put.status)
        await insert(tenant, doc)

    monkeypatch.setattr(services.store.mappings, "insert_version", replacing_first)
    await _upload(client, _TYRE_FEED)
    assert answers == [409]
    monkeypatch.undo()
    again = await client.put("/api/v1/kinds/tyre", json=narrower, headers=auth())
    assert again.status == 409 and (await again.json())["used_by"][0]["name"] == "tyre-feed"
    kind = await (await client.get("/api/v1/kinds/tyre", headers=auth())).json()
    assert "tread_mm" in kind["schema"]["properties"]


async def test_a_field_given_an_identifier_format_has_its_stored_values_normalised(
    client: Client,
) -> None:
    """A kind's `cpf` and `plate` (free text) given `format: cpf` / `plate` by a PUT kept the
    stored `529.982.247-25` and `ped-1234`: the next unrelated write announced a `cpf` change
    nobody made, and `?plate=PED1234` did not find the toll stored as `ped-1234`. The stored
    entities are restated in the normalised form, with no event."""
    schema = {"type": "object", "properties": {"cpf": {"type": "string"}, "plate": {}}}
    kind = {"name": "contrato", "schema": schema}
    assert (await client.post("/api/v1/kinds", json=kind, headers=auth())).status == 201
    doc = {"kind": "contrato", "key": "C1", "cpf": "529.982.247-25", "plate": "ped-1234"}
    created = await client.post("/api/v1/entities/other", json=doc, headers=auth())
    assert created.status == 201, await created.text()
    formats = {"cpf": {"type": "string", "format": "cpf"}, "plate": {"format": "plate"}}
    put = await client.put(
        "/api/v1/kinds/contrato",
        json={"schema": {**schema, "properties": formats}},
        headers=auth(),
    )
    assert put.status == 200, await put.text()
    await client.app[services_key].flow_runner.housekeeping()  # restates, after the answer
    url = "/api/v1/entities/other/contrato:C1"
    stored = await (await client.get(url, headers=auth())).json()
    assert (stored["cpf"], stored["plate"]) == ("52998224725", "PED1234")
    assert stored["updated_at"] == (await created.json())["updated_at"]
    for plate in ("PED1234", "PED1C34"):
        listed = await client.get(
            f"/api/v1/entities/other?kind=contrato&plate={plate}", headers=auth()
        )
        assert [i["key"] for i in (await listed.json())["items"]] == ["C1"], plate
    patched = await client.patch(url, json={"obs": "x"}, headers=auth())
    assert (await patched.json())["changed"] == ["obs"]
    await client.app[services_key].relay.run_until_idle()
    events = await (await client.get("/api/v1/events?type=entity.updated", headers=auth())).json()
    assert [[c["field"] for c in e["changes"]] for e in events["items"]] == [["obs"]]


async def test_a_schema_replacement_answers_before_restating_and_the_restatement_resumes(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replacement restated every stored entity of the kind inside its request, one
    guarded update each: 4,000 entities held the answer 20 s (minutes for 100,000, past any
    proxy's timeout), and a restart part-way left the rest in the old spelling, unseen. The
    answer comes first; the flow runner's housekeeping restates a few pages a pass,
    recording on the kind how far it got, so the next pass (a restarted process's too)
    goes on from there."""
    monkeypatch.setattr(kinds, "_PAGE", 2)
    monkeypatch.setattr(kinds, "_PAGES_A_PASS", 1)
    services: Services = client.app[services_key]
    schema = {"type": "object", "properties": {"cpf": {"type": "string"}}}
    kind = {"name": "contrato", "schema": schema}
    assert (await client.post("/api/v1/kinds", json=kind, headers=auth())).status == 201
    keys = ["C1", "C2", "C3", "C4", "C5"]
    for key in keys:
        doc = {"kind": "contrato", "key": key, "cpf": "529.982.247-25"}
        created = await client.post("/api/v1/entities/other", json=doc, headers=auth())
        assert created.status == 201, await created.text()
    formats = {"type": "object", "properties": {"cpf": {"type": "string", "format": "cpf"}}}
    put = await client.put("/api/v1/kinds/contrato", json={"schema": formats}, headers=auth())
    assert put.status == 200, await put.text()

    async def spellings() -> list[str]:
        url = "/api/v1/entities/other?kind=contrato&limit=10"
        page = await (await client.get(url, headers=auth())).json()
        return [item["cpf"] for item in page["items"]]

    dotted, plain = "529.982.247-25", "52998224725"
    assert await spellings() == [dotted] * 5  # the answer came before any restatement
    await services.flow_runner.housekeeping()  # a pass: one page of two
    assert await spellings() == [plain] * 2 + [dotted] * 3
    stored = await services.store.kinds.get("acme", "contrato")
    assert stored is not None and stored["restating_from"]  # how far it got, on the kind
    assert await services.kinds.restate_pending() == 2  # a restarted process goes on there
    assert await services.kinds.restate_pending() == 1
    assert await spellings() == [plain] * 5
    stored = await services.store.kinds.get("acme", "contrato")
    assert stored is not None and "restating_from" not in stored
    assert await services.kinds.restate_pending() == 0
