"""A tester's findings on mapping files, entities and the dry run (2026-12-05), through HTTP
against the real database: the dry run refuses what the trigger refuses, reserved field
names, plates written with dots and slashes, the mapping list's active version, the work of
one payload's mapping, and the JSON names of types in problems."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.mapping.limits import (
    MAX_PAYLOAD_STEPS,
    MAX_STEPS,
    PARSE_FORMAT_STEPS,
    TRANSFORM_STEPS,
)
from gateway.web.state import services_key
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
        # the dashes and spaces of word processors, web pages and PDFs (windows-1252's 0x96)
        ("ABC\u20131234", "ABC1234"),
        ("ABC\u20141D23", "ABC1D23"),
        ("ABC\u20111234", "ABC1234"),
        ("ABC\u22121D23", "ABC1D23"),
        ("ABC\u00a01234", "ABC1234"),
        ("ABC\u202f1D23", "ABC1D23"),
        ("ABC\u20091234", "ABC1234"),
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
    "garbage", ["ABC\t1234", "ABC\u200b1234", "ＡＢＣ１２３４", "ABC_1234", "AB.C12345"]
)
async def test_a_plate_with_other_characters_is_still_refused(client: Client, garbage: str) -> None:
    problem = await _json(client, "POST", "/api/v1/entities/vehicle", 422, json={"plate": garbage})
    assert problem["errors"][0]["pointer"] == "/plate"


FINES_BY_PLATE = """name: fines-by-plate
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: veiculo.placa, required: true, transforms: [plate]}
  attributes.cpf: {from: condutor.cpf, required: true, transforms: [trim, cpf]}
"""


async def test_a_trigger_reads_plates_and_cpfs_written_with_office_dashes_and_no_break_spaces(
    client: Client,
) -> None:
    """A Latin-1 ERP's en dash (windows-1252 0x96), a fines portal's or a PDF's no-break
    space and non-breaking hyphen: separators, as "-" and " " are."""
    await upload_mapping(client, FINES_BY_PLATE)
    trigger = await create_trigger(client, mapping="fines-by-plate")
    for written, stored in (
        ("ABC\u20131234", "ABC1234"),
        ("ABD\u00a01D23", "ABD1D23"),
        ("ABE\u20111234", "ABE1234"),
    ):
        cpf = "529\u202f982\u202f247\u201325"
        status, answer = await hook(
            client, trigger, {"veiculo": {"placa": written}, "condutor": {"cpf": cpf}}
        )
        assert status == 201, answer
        assert answer["key"] == stored
        vehicle = await _json(client, "GET", f"/api/v1/entities/vehicle/{stored}")
        assert vehicle["attributes"]["cpf"] == "52998224725"


async def test_a_required_field_whose_transform_reads_nothing_names_the_value_and_the_transform(
    client: Client,
) -> None:
    """Not "required value is missing" about a payload that has the value: the partner's
    engineer sees which rule refused what."""
    await upload_mapping(client, FINES_BY_PLATE)
    trigger = await create_trigger(client, mapping="fines-by-plate")
    payload = {"veiculo": {"placa": "Caminhao 12"}, "condutor": {"cpf": " 529.982.247-2 "}}
    status, problem = await hook(client, trigger, payload)
    assert status == 422, problem
    assert [(e["pointer"], e["keyword"], e["message"]) for e in problem["errors"]] == [
        (
            "/veiculo/placa",
            "required",
            'the plate transform reads no value from "Caminhao 12" (a required field)',
        ),
        (
            "/condutor/cpf",
            "required",
            'the cpf transform reads no value from "529.982.247-2" (a required field)',
        ),
    ]
    status, problem = await hook(client, trigger, {"condutor": {"cpf": "52998224725"}})
    assert status == 422, problem
    (error,) = problem["errors"]
    assert (error["pointer"], error["message"]) == ("/veiculo/placa", "required value is missing")


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


async def test_the_cnpj_transform_reads_a_number_that_lost_its_zero_and_keeps_the_letters(
    client: Client,
) -> None:
    """There was no `cnpj` transform (422 "unknown transform"): a supplier feed's CNPJ sent as
    a number (4252011000110 for 04.252.011/0001-10) was refused "must have 14 characters",
    and `digits` dropped the letters of an alphanumeric CNPJ. It reads them as `cpf` reads a
    CPF: the lost leading zero back, letters upper case, nothing made up."""
    draft = {
        "name": "suppliers",
        "direction": "inbound",
        "entity_type": "supplier",
        "key": ["cnpj"],
        "fields": {
            "name": {"value": "Oficina"},
            "cnpj": {"from": "doc", "transforms": ["cnpj"]},
        },
    }
    read = {
        4252011000110: "04252011000110",
        "4252011000110.0": "04252011000110",
        "04.252.011/0001-10": "04252011000110",
        "12.abc.345/01de-35": "12ABC34501DE35",
    }
    for written, stored in read.items():
        body = {"mapping": draft, "payload": {"doc": written}}
        result = await _json(client, "POST", "/api/v1/mappings/test", json=body)
        [one] = result["results"]
        assert one["document"]["cnpj"] == stored, (written, one)
    for written in ("N/A", "425201100011"):  # no CNPJ; two zeros short of the wrong one
        body = {"mapping": draft, "payload": {"doc": written}}
        problem = await _json(client, "POST", "/api/v1/mappings/test", 422, json=body)
        assert [e["message"] for e in problem["errors"]] == ["key field 'cnpj' has no value"]


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


# -- the entity's envelope names are reserved ---------------------------------------------------

RESERVED = ["_id", "id", "tenant", "entity_type", "version", "created_at", "updated_at"]
OPEN_KIND = {"type": "object", "properties": {"serial": {"type": "string"}}}


async def test_a_kind_declaring_a_field_named_as_the_entitys_envelope_is_refused(
    client: Client,
) -> None:
    properties = {name: {"type": "string"} for name in [*RESERVED, "serial"]}
    schema = {"type": "object", "properties": properties}
    body = {"name": "thing", "schema": schema}
    problem = await _json(client, "POST", "/api/v1/kinds", 422, json=body)
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [
        (f"/schema/properties/{name}", "reserved") for name in RESERVED
    ]
    assert "'tenant' is reserved" in problem["errors"][2]["message"]
    required = {"type": "object", "required": ["serial", "id"]}
    problem = await _json(
        client, "POST", "/api/v1/kinds", 422, json={"name": "thing", "schema": required}
    )
    assert [e["pointer"] for e in problem["errors"]] == ["/schema/required/1"]
    await _json(client, "POST", "/api/v1/kinds", 201, json={"name": "thing", "schema": OPEN_KIND})
    changed = {"schema": {**OPEN_KIND, "properties": {"version": {"type": "integer"}}}}
    problem = await _json(client, "PUT", "/api/v1/kinds/thing", 422, json=changed)
    assert problem["errors"][0]["pointer"] == "/schema/properties/version"


async def test_a_mapping_cannot_write_a_field_named_as_the_entitys_envelope(
    client: Client,
) -> None:
    await _json(client, "POST", "/api/v1/kinds", 201, json={"name": "thing", "schema": OPEN_KIND})
    mapping = """
name: thing
direction: inbound
entity_type: other
kind: thing
key: [key]
fields:
  key: k
  serial: s
  id: a
  tenant: b
  entity_type: d
  created_at.at: e
also:
  - entity_type: vehicle
    key: [plate]
    fields:
      plate: placa
      version: v
"""
    problem = await _upload(client, mapping, status=422)
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [
        ("/fields/id", "reserved"),
        ("/fields/tenant", "reserved"),
        ("/fields/entity_type", "reserved"),
        ("/fields/created_at.at", "reserved"),
        ("/also/0/fields/version", "reserved"),
    ]
    assert problem["errors"][0]["message"].startswith("the target 'id' is reserved")


async def test_an_entity_write_carrying_a_field_named_as_the_envelope_is_refused(
    client: Client,
) -> None:
    await _json(client, "POST", "/api/v1/kinds", 201, json={"name": "thing", "schema": OPEN_KIND})
    body = {"kind": "thing", "key": "K1", "serial": "S1", "id": "fake-id", "tenant": "other"}
    problem = await _json(client, "POST", "/api/v1/entities/other", 422, json=body)
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [
        ("/id", "reserved"),
        ("/tenant", "reserved"),
    ]
    body = {"kind": "thing", "key": "K1", "serial": "S1"}
    created = await _json(client, "POST", "/api/v1/entities/other", 201, json=body)
    url = f"/api/v1/entities/other/{created['id']}"
    problem = await _json(client, "PATCH", url, 422, json={"entity_type": "vehicle"})
    assert [e["pointer"] for e in problem["errors"]] == ["/entity_type"]


async def test_a_kind_and_an_entity_stored_before_the_rule_keep_working_until_the_field_goes(
    client: Client,
) -> None:
    """What a tenant has from before: the kind compiles, its other fields are written; an
    entity holding a reserved field keeps it as stored through a write that leaves it (a
    write is checked for what it changes: docs/entities.md), a write sending the field is
    refused naming it, and a patch removes it."""
    services = client.app[services_key]
    legacy = {"type": "object", "properties": {"serial": {}, "tenant": {"type": "string"}}}
    await services.store.kinds.create("acme", "thing", legacy, "before")
    data = {"kind": "thing", "key": "K1", "serial": "S1", "tenant": "other-tenant"}
    assert await services.store.entities.insert("acme", "other", "thing:K1", data, [])
    read = await _json(client, "GET", "/api/v1/entities/other/thing:K1")
    assert read["tenant"] == "other-tenant"  # as stored
    body = {"kind": "thing", "key": "K2", "serial": "S2"}
    await _json(client, "POST", "/api/v1/entities/other", 201, json=body)
    url = f"/api/v1/entities/other/{read['id']}"
    left = await _json(client, "PATCH", url, json={"serial": "S8"})
    assert left["serial"] == "S8" and left["tenant"] == "other-tenant"
    problem = await _json(client, "PATCH", url, 422, json={"tenant": "another"})
    assert [e["pointer"] for e in problem["errors"]] == ["/tenant"]
    patched = await _json(client, "PATCH", url, json={"serial": "S9", "tenant": None})
    assert patched["serial"] == "S9" and "tenant" not in patched


# -- problems name JSON's types and point at the value's source ---------------------------------

NAMING = {
    "name": "naming",
    "direction": "inbound",
    "entity_type": "vehicle",
    "key": ["plate"],
    "fields": {
        "plate": "placa",
        "attributes.label": {"template": "x {a}", "vars": {"a": "dados.a"}},
        "attributes.other": {"template": "y {b}", "vars": {"b": {"from": "dados.b"}}},
        "attributes.listed": {"each": "itens", "fields": {"v": "@"}},
    },
}


async def test_a_value_of_the_wrong_type_is_named_by_its_json_type_where_the_payload_has_it(
    client: Client,
) -> None:
    payload = {"placa": "ABC1234", "dados": {"a": {"z": 1}, "b": [1]}, "itens": {"x": 1}}
    body = {"mapping": NAMING, "payload": payload}
    problem = await _json(client, "POST", "/api/v1/mappings/test", 422, json=body)
    shown = [(e["pointer"], e["message"], e["source"]) for e in problem["errors"]]
    assert shown == [
        ("/payload/dados/a", "var 'a' is an object, not text", "dados.a"),
        ("/payload/dados/b", "var 'b' is an array, not text", "dados.b"),
        ("/payload/itens", "each expects an array, got an object", "itens"),
    ]
    cast = {
        **NAMING,
        "fields": {"plate": "placa", "year": {"from": "ano", "transforms": ["integer"]}},
    }
    body = {"mapping": cast, "payload": {"placa": "ABC1234", "ano": [2020]}}
    problem = await _json(client, "POST", "/api/v1/mappings/test", 422, json=body)
    assert problem["errors"][0]["message"] == "cannot cast array [2020] to integer"


async def test_the_errors_example_of_the_mapping_docs_lists_every_problem_an_upload_names(
    client: Client,
) -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "mappings.md").read_text()
    section = docs.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    example = section.split("```yaml invalid\n", 1)[1].split("```", 1)[0]
    listed = re.findall(r"^- `(/[^`]*)` \(line (\d+)\)", section, re.MULTILINE)
    counted = re.search(r"This file\s+has (\w+):", section)
    assert counted is not None
    problem = await _upload(client, example, status=422)
    named = sorted((e["pointer"], str(e["line"])) for e in problem["errors"])
    assert sorted(listed) == named
    words = ["one", "two", "three", "four", "five", "six", "seven"]
    assert words.index(counted.group(1)) + 1 == len(named)


async def test_a_stored_version_writing_a_reserved_field_is_refused_as_the_mappings_problem(
    client: Client,
) -> None:
    """A version stored before the rule (it wrote `tenant` into a kind open to any field):
    its trigger's calls are refused, naming the target, and kept to replay once fixed."""
    await _json(client, "POST", "/api/v1/kinds", 201, json={"name": "thing", "schema": OPEN_KIND})
    valid = "name: thing\ndirection: inbound\nentity_type: other\nkind: thing\nkey: [key]\n"
    valid += "fields:\n  key: k\n  serial: s\n"
    await _upload(client, valid)
    trigger = await create_trigger(client, entity_type="other", kind="thing", mapping="thing")
    store = client.app[services_key].store.mappings
    old = valid + "  tenant: t\n"
    version = await store.allocate_version("acme", "thing")
    await store.insert_version(
        "acme",
        {
            "name": "thing",
            "version": version,
            "source": old,
            "format": "yaml",
            "document": {},
            "direction": "inbound",
            "entity_type": "other",
            "checksum": "before",
            "author": "before",
            "created_at": datetime.now(UTC),
        },
    )
    # Activated before the rule (activating it now is refused: test_mapping_review_findings).
    shown = {"direction": "inbound", "entity_type": "other"}
    assert await store.set_active("acme", "thing", version, shown)
    await _upload(client, valid + "# staged\n", "?activate=false")  # this process forgets v1
    status, problem = await hook(client, trigger, {"k": "K1", "s": "S1", "t": "other"})
    assert status == 422, problem
    assert problem["reason"] == "mapping"
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [
        ("/fields/tenant", "reserved")
    ]
    rejected = await _json(client, "GET", f"/api/v1/rejected?trigger_id={trigger['id']}")
    assert len(rejected["items"]) == 1


SOAP_POINTS = """
name: soap-points
direction: inbound
target: positions
items: {from: Envelope.Body.obterPontosResponse, each: from_xml(return).pacote.ponto, as: p}
fields:
  tracker_id: from_xml(return).pacote."@veiculo"
  time: {from: p.dataHora, transforms: [{datetime: {parse: iso8601}}]}
  lat: {from: p.lat, transforms: [number]}
  lon: {from: p.lon, transforms: [number]}
"""


async def test_items_reading_one_shared_text_are_not_charged_its_parse_again_and_again(
    client: Client,
) -> None:
    """1,000 points in one escaped XML text, each item reading the text's vehicle: the text
    is parsed once for the payload, so the payload's work is not its size a thousand times
    (that would pass MAX_PAYLOAD_STEPS and refuse the last items)."""
    points = "".join(
        f"<ponto><dataHora>2026-11-20T13:{i // 60 % 60:02d}:{i % 60:02d}Z</dataHora>"
        f"<lat>-23.{i:05d}</lat><lon>-46.{i:05d}</lon></ponto>"
        for i in range(1000)
    )
    inner = f'<pacote veiculo="1231226">{points}</pacote>'
    escaped = inner.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    envelope = (
        '<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body>'
        f'<ns2:obterPontosResponse xmlns:ns2="urn:x"><return>{escaped}</return>'
        "</ns2:obterPontosResponse></S:Body></S:Envelope>"
    )
    await _upload(client, SOAP_POINTS)
    results = (await _dry(client, "soap-points", envelope))["results"]
    assert len(results) == 1000
    assert [r for r in results if "errors" in r or r["fix"]["errors"]] == []
