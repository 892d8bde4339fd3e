"""Entity and kind schemas through the registry: accept real documents, explain bad ones."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import FieldProblem, GatewayError, InvalidPayload, NotFound
from gateway.schemas import (
    ENTITY_TYPES,
    CompiledSchema,
    SchemaRegistry,
    compile_schema,
    default_schema_dir,
)

SCHEMA_DIR = default_schema_dir()


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load(SCHEMA_DIR)


def vehicle(**overrides: Any) -> dict[str, Any]:
    return {
        "plate": "ABC-1234",
        "renavam": "86769597308",
        "vin": "9BWZZZ377VT004251",
        "make": "Volkswagen",
        "model": "Delivery 11.180",
        "year": 2022,
        "type": "truck",
        "status": "active",
        "odometer_km": 48210.5,
        "last_position": {
            "time": "2026-03-01T10:15:00-03:00",
            "lat": -23.5505,
            "lon": -46.6333,
            "speed_kmh": 62.0,
            "heading": 270,
            "altitude_m": 760,
            "accuracy_m": 4.5,
            "ignition": True,
        },
        "current_driver": {"cpf": "529.982.247-25", "name": "Maria Souza"},
        "group": "Distribuição SP",
        "attributes": {"cost_center": "CC-12", "tags": ["refrigerated"]},
        **overrides,
    }


def driver(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Maria Souza",
        "cpf": "529.982.247-25",
        "cnh": {"number": "09770304734", "category": "AD", "expires_on": "2029-08-31"},
        "phone": "+55 11 91234-5678",
        "email": "maria@example.com.br",
        "push_tokens": ["fcm:abc123"],
        "status": "active",
        **overrides,
    }


def supplier(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Oficina Boa Estrada Ltda",
        "trade_name": "Boa Estrada",
        "cnpj": "11.222.333/0001-81",
        "contact": {"name": "João", "phone": "(11) 3333-4444", "email": "joao@boa.com.br"},
        "services": ["maintenance", "tyres"],
        **overrides,
    }


def operator(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Ana Lima",
        "email": "ana@frota.com.br",
        "cpf": "111.444.777-35",
        "role": "dispatcher",
        **overrides,
    }


def fine(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "fine",
        "key": "DETRAN-SP:1A2B3C4D",
        "ait_number": "1A2B3C4D",
        "authority": "DETRAN-SP",
        "plate": "abc1c34",
        "renavam": "86769597308",
        "infraction_code": "745-50",
        "occurred_at": "2026-02-10T08:42:00-03:00",
        "place": "Rod. Anhanguera km 25, Osasco/SP",
        "amount_brl": 130.16,
        "points": 4,
        "indication_deadline": "2026-03-15",
        "status": "open",
        "driver_cpf": "52998224725",
        **overrides,
    }


def checklist(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "checklist",
        "key": "2026-03-01-ABC1234-morning",
        "vehicle_plate": "ABC1234",
        "driver_cpf": "529.982.247-25",
        "odometer_km": 48211,
        "answers": [
            {"question": "Pneus em bom estado?", "answer": True},
            {"question": "Nível de óleo", "answer": "ok", "comment": "trocado em fevereiro"},
        ],
        "photos": [
            {"ref": "s3://checklists/1.jpg", "content_type": "image/jpeg", "sha256": "a" * 64}
        ],
        "completed_at": "2026-03-01T06:58:00-03:00",
        **overrides,
    }


REALISTIC = {
    "vehicle": vehicle,
    "driver": driver,
    "supplier": supplier,
    "operator": operator,
    "other": fine,
}


def pointers(problems: list[FieldProblem]) -> list[str]:
    return [p.pointer for p in problems]


# --- the shipped files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", sorted(SCHEMA_DIR.rglob("*.json")), ids=lambda p: str(p.relative_to(SCHEMA_DIR))
)
def test_every_schema_file_in_the_repo_compiles(path: Path) -> None:
    compiled = compile_schema(json.loads(path.read_text()))
    assert isinstance(compiled, CompiledSchema)


@pytest.mark.parametrize(
    "path",
    sorted((SCHEMA_DIR / "entities").glob("*.json"))
    + sorted((SCHEMA_DIR / "kinds").glob("*.json")),
    ids=lambda p: p.name,
)
def test_entity_and_kind_schemas_are_2020_12_with_a_rabbot_id(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    name = path.name.removesuffix(".schema.json")
    assert schema["$id"] == f"https://rabbot.dev/schemas/{path.parent.name}/{name}.json"


@pytest.mark.parametrize("entity_type", ["vehicle", "driver", "supplier", "operator"])
def test_builtin_entities_reject_store_metadata_and_unknown_top_level_fields(
    registry: SchemaRegistry, entity_type: str
) -> None:
    doc = REALISTIC[entity_type](id="x", _id="y", tenant="t")
    assert sorted(pointers(registry.validate(entity_type, doc))) == ["/_id", "/id", "/tenant"]


def test_registry_knows_the_five_entity_types_and_both_builtin_kinds(
    registry: SchemaRegistry,
) -> None:
    assert ENTITY_TYPES == ("vehicle", "driver", "supplier", "operator", "other")
    assert set(registry.builtin_kinds) == {"fine", "checklist"}


def test_a_broken_schema_file_names_itself(tmp_path: Path) -> None:
    for sub in ("entities", "kinds"):
        (tmp_path / sub).mkdir()
    for entity_type in ENTITY_TYPES:
        (tmp_path / "entities" / f"{entity_type}.schema.json").write_text('{"type": "object"}')
    (tmp_path / "entities" / "driver.schema.json").write_text('{"type": "strin"}')
    with pytest.raises(GatewayError, match=r"driver\.schema\.json: /type"):
        SchemaRegistry.load(tmp_path)


# --- realistic documents ----------------------------------------------------------------------


@pytest.mark.parametrize("entity_type", list(REALISTIC))
def test_realistic_document_is_accepted(registry: SchemaRegistry, entity_type: str) -> None:
    assert registry.validate(entity_type, REALISTIC[entity_type]()) == []


def test_realistic_checklist_is_accepted(registry: SchemaRegistry) -> None:
    assert registry.validate("other", checklist()) == []


def test_check_stores_identifiers_normalised_without_touching_the_input(
    registry: SchemaRegistry,
) -> None:
    doc = vehicle()
    before = copy.deepcopy(doc)
    clean = registry.check("vehicle", doc)
    assert clean["plate"] == "ABC1234"
    assert clean["current_driver"]["cpf"] == "52998224725"
    assert clean["attributes"] == before["attributes"]
    assert doc == before


def test_check_normalises_every_identifier_of_each_type(registry: SchemaRegistry) -> None:
    assert registry.check("driver", driver())["cpf"] == "52998224725"
    assert registry.check("supplier", supplier(cnpj="12.abc.345/01de-35"))["cnpj"] == (
        "12ABC34501DE35"
    )
    assert registry.check("operator", operator())["cpf"] == "11144477735"
    clean = registry.check("other", fine(renavam="123456789"))
    assert (clean["plate"], clean["renavam"], clean["kind"]) == ("ABC1C34", "00123456789", "fine")
    assert registry.check("other", checklist())["driver_cpf"] == "52998224725"


def test_check_returns_a_new_dict_even_when_nothing_needed_normalising(
    registry: SchemaRegistry,
) -> None:
    doc = operator(cpf="11144477735")
    assert registry.check("operator", doc) is not doc


# --- bad documents ----------------------------------------------------------------------------


def test_invalid_cpf_is_rejected_with_field_value_and_reason(registry: SchemaRegistry) -> None:
    [problem] = registry.validate("driver", driver(cpf="529.982.247-26"))
    assert problem.pointer == "/cpf"
    assert problem.keyword == "format"
    assert problem.message == '/cpf: "529.982.247-26" is not a valid CPF: check digit mismatch'


@pytest.mark.parametrize(
    ("entity_type", "doc", "pointer", "message"),
    [
        (
            "vehicle",
            vehicle(plate="AB12345"),
            "/plate",
            '/plate: "AB12345" is not a valid plate: must be 3 letters and 4 digits (ABC1234) '
            "or Mercosul (ABC1D23)",
        ),
        (
            "vehicle",
            vehicle(renavam="86769597309"),
            "/renavam",
            '/renavam: "86769597309" is not a valid RENAVAM: check digit mismatch',
        ),
        (
            "vehicle",
            vehicle(current_driver={"cpf": "111.111.111-11"}),
            "/current_driver/cpf",
            '/current_driver/cpf: "111.111.111-11" is not a valid CPF: all digits repeated',
        ),
        (
            "driver",
            driver(cnh={"number": "98765432100"}),
            "/cnh/number",
            '/cnh/number: "98765432100" is not a valid CNH number: check digit mismatch',
        ),
        (
            "supplier",
            supplier(cnpj="1122233300018"),
            "/cnpj",
            '/cnpj: "1122233300018" is not a valid CNPJ: must have 14 characters',
        ),
        (
            "other",
            fine(driver_cpf="5299822472"),
            "/driver_cpf",
            '/driver_cpf: "5299822472" is not a valid CPF: must have 11 digits',
        ),
    ],
)
def test_bad_identifier_is_rejected_with_pointer_and_reason(
    registry: SchemaRegistry, entity_type: str, doc: dict[str, Any], pointer: str, message: str
) -> None:
    assert [(p.pointer, p.message) for p in registry.validate(entity_type, doc)] == [
        (pointer, message)
    ]


def test_typo_in_a_field_name_is_caught_with_a_suggestion(registry: SchemaRegistry) -> None:
    doc = vehicle(odometer=10)
    doc["last_position"] = {**doc["last_position"], "latitude": 1}
    doc["stauts"] = "active"
    problems = {p.pointer: p for p in registry.validate("vehicle", doc)}
    assert set(problems) == {"/odometer", "/last_position/latitude", "/stauts"}
    assert problems["/stauts"].message == "/stauts: unknown field (did you mean 'status'?)"
    assert problems["/stauts"].keyword == "additionalProperties"
    assert problems["/last_position/latitude"].message.startswith(
        "/last_position/latitude: unknown field"
    )


def test_nested_typo_in_a_driver_licence_points_into_the_licence(
    registry: SchemaRegistry,
) -> None:
    doc = driver(cnh={"number": "09770304734", "categroy": "B"})
    [problem] = registry.validate("driver", doc)
    assert problem.pointer == "/cnh/categroy"
    assert "did you mean 'category'?" in problem.message


def test_missing_required_field_points_at_the_field(registry: SchemaRegistry) -> None:
    doc = driver()
    del doc["cpf"]
    [problem] = registry.validate("driver", doc)
    assert (problem.pointer, problem.keyword) == ("/cpf", "required")
    assert problem.message == "/cpf: required field is missing"


def test_invalid_payload_lists_every_failing_field(registry: SchemaRegistry) -> None:
    doc = vehicle(year=1800, status="broken", odometer_km=-1, vin="9BWZZZ377VT00425I")
    doc["last_position"] = {"lat": 91, "lon": 0, "time": "yesterday"}
    with pytest.raises(InvalidPayload) as caught:
        registry.check("vehicle", doc)
    assert sorted(pointers(caught.value.problems)) == [
        "/last_position/lat",
        "/last_position/time",
        "/odometer_km",
        "/status",
        "/vin",
        "/year",
    ]
    assert caught.value.detail.startswith("vehicle is invalid: ")
    assert caught.value.detail.endswith("(and 5 more)")
    body = caught.value.problem()
    assert body["status"] == 422 and len(body["errors"]) == 6


def test_enum_problem_lists_the_allowed_values(registry: SchemaRegistry) -> None:
    [problem] = registry.validate("vehicle", vehicle(status="parked"))
    assert problem.message == (
        '/status: "parked" is not one of "active", "maintenance", "inactive"'
    )


def test_non_object_document_is_rejected(registry: SchemaRegistry) -> None:
    with pytest.raises(InvalidPayload) as caught:
        registry.check("driver", ["not", "a", "document"])
    assert pointers(caught.value.problems) == [""]


def test_value_json_cannot_carry_is_a_problem_not_a_crash(registry: SchemaRegistry) -> None:
    doc = vehicle()
    doc["last_position"] = {**doc["last_position"], "time": datetime.now(UTC)}
    [problem] = registry.validate("vehicle", doc)
    assert problem.pointer == "" and "not a JSON document" in problem.message


def test_unknown_entity_type_is_not_found(registry: SchemaRegistry) -> None:
    with pytest.raises(NotFound, match="unknown entity type 'truck'"):
        registry.check("truck", {})
    with pytest.raises(NotFound):
        registry.require_type("truck")
    registry.require_type("vehicle")


# --- other: envelope and kinds ----------------------------------------------------------------


def test_other_without_key_reports_the_envelope_and_the_kind_fields(
    registry: SchemaRegistry,
) -> None:
    doc = fine()
    del doc["key"], doc["ait_number"]
    assert sorted(pointers(registry.validate("other", doc))) == ["/ait_number", "/key"]


def test_minimal_fine_keyed_in_by_hand_is_accepted(registry: SchemaRegistry) -> None:
    doc = {
        "kind": "fine",
        "key": "AIT123",
        "ait_number": "AIT123",
        "plate": "ABC1D23",
        "amount_brl": 195.23,
        "status": "open",
    }
    assert registry.validate("other", doc) == []


def test_a_fine_with_its_authority_is_keyed_by_authority_and_ait_number(
    registry: SchemaRegistry,
) -> None:
    """An AIT number is unique only within its authority: under its AIT alone, a fine would be
    another than the one the provider's notice finds (`261810:A123`)."""
    [problem] = registry.validate("other", fine(key="1A2B3C4D"))
    assert (problem.pointer, problem.keyword) == ("/key", "key")
    assert problem.extra == {"expected": "DETRAN-SP:1A2B3C4D"}
    assert "keyed by its authority and ait_number" in problem.message
    assert registry.validate("other", fine(authority=" detran-sp ", ait_number="1a2b3c4d")) == []


def test_other_of_an_unknown_kind_is_rejected_at_kind(registry: SchemaRegistry) -> None:
    [problem] = registry.validate("other", {"kind": "tyre", "key": "T1"})
    assert (problem.pointer, problem.message) == ("/kind", "/kind: unknown kind 'tyre'")


def test_fine_with_a_typo_is_rejected(registry: SchemaRegistry) -> None:
    [problem] = registry.validate("other", fine(amount=10))
    assert problem.pointer == "/amount"
    assert "did you mean 'amount_brl'?" in problem.message


def test_checklist_photo_needs_a_sha256_of_64_hex(registry: SchemaRegistry) -> None:
    photo = {"ref": "s3://x.jpg", "content_type": "image/jpeg", "sha256": "abc"}
    [problem] = registry.validate("other", checklist(photos=[photo]))
    assert (problem.pointer, problem.keyword) == ("/photos/0/sha256", "pattern")


TYRE = {
    "type": "object",
    "required": ["serial", "supplier_cnpj"],
    "additionalProperties": False,
    "properties": {
        "serial": {"type": "string"},
        "supplier_cnpj": {"type": "string", "format": "cnpj"},
        "fitted_to": {"type": "string", "format": "plate"},
        "tread_mm": {"type": "number", "minimum": 0},
    },
}


def test_custom_kind_validates_and_normalises_its_identifiers(registry: SchemaRegistry) -> None:
    tyre = registry.compile_kind("tyre", TYRE)
    doc = {
        "kind": "tyre",
        "key": "PX-1",
        "serial": "PX-1",
        "supplier_cnpj": "11.222.333/0001-81",
        "fitted_to": "bra-2e19",
    }
    clean = registry.check("other", doc, kind_schema=tyre)
    assert clean == {
        "kind": "tyre",
        "key": "PX-1",
        "serial": "PX-1",
        "supplier_cnpj": "11222333000181",
        "fitted_to": "BRA2E19",
    }
    problems = registry.validate("other", {**doc, "tread": 3}, kind_schema=tyre)
    assert pointers(problems) == ["/tread"]


def test_custom_kind_schema_must_match_the_documents_kind(registry: SchemaRegistry) -> None:
    tyre = registry.compile_kind("tyre", TYRE)
    [problem] = registry.validate("other", {"kind": "battery", "key": "B1"}, kind_schema=tyre)
    assert problem.pointer == "/kind" and "'tyre'" in problem.message


def test_builtin_kind_cannot_be_overridden(registry: SchemaRegistry) -> None:
    with pytest.raises(InvalidPayload) as caught:
        registry.compile_kind("fine", TYRE)
    assert pointers(caught.value.problems) == ["/name"]
    # A custom schema passed for a built-in kind's document is ignored: the built-in wins.
    tyre = registry.compile_kind("tyre", TYRE)
    assert registry.validate("other", fine(), kind_schema=tyre) == []


def test_custom_kind_with_bad_name_is_rejected(registry: SchemaRegistry) -> None:
    with pytest.raises(InvalidPayload) as caught:
        registry.compile_kind("Tyre Kind", TYRE)
    assert pointers(caught.value.problems) == ["/name"]


def test_custom_kind_with_invalid_schema_points_into_the_schema(registry: SchemaRegistry) -> None:
    bad = {"type": "object", "properties": {"serial": {"type": "strnig"}}}
    with pytest.raises(InvalidPayload) as caught:
        registry.compile_kind("tyre", bad)
    assert pointers(caught.value.problems) == ["/schema/properties/serial/type"]


def test_custom_kind_must_describe_an_object(registry: SchemaRegistry) -> None:
    with pytest.raises(InvalidPayload) as caught:
        registry.compile_kind("tyre", {"type": "string"})
    assert pointers(caught.value.problems) == ["/schema/type"]


def test_schema_with_a_remote_ref_is_refused_without_fetching_it() -> None:
    # 192.0.2.0/24 is TEST-NET-1: a fetch attempt would hang or fail, never succeed.
    with pytest.raises(InvalidPayload, match="Retrieval is disabled"):
        compile_schema({"$ref": "http://192.0.2.1/schema.json"})
    with pytest.raises(InvalidPayload, match="Retrieval is disabled"):
        compile_schema({"$ref": "file:///etc/passwd"})


def test_schema_with_an_unknown_format_is_refused() -> None:
    with pytest.raises(InvalidPayload) as caught:
        compile_schema({"properties": {"x": {"type": "string", "format": "cpff"}}})
    assert pointers(caught.value.problems) == ["/properties/x/format"]


def test_trigger_input_schema_gets_the_identifier_formats() -> None:
    compiled = compile_schema(
        {"type": "object", "properties": {"documento": {"type": "string", "format": "cpf"}}}
    )
    assert compiled.validate({"documento": "529.982.247-25"}) == []
    assert compiled.check({"documento": "529.982.247-25"}) == {"documento": "52998224725"}
    [problem] = compiled.validate({"documento": "529.982.247-26"})
    assert problem.message.endswith("is not a valid CPF: check digit mismatch")


def test_identifiers_are_normalised_only_where_their_keyword_reaches() -> None:
    """`items` starts past `prefixItems`; `dependentSchemas` (and its draft-7 spelling
    `dependencies`) apply when their member is there: a plate-shaped text elsewhere is kept."""
    listed = compile_schema(
        {"properties": {"t": {"prefixItems": [{"type": "string"}], "items": {"format": "plate"}}}}
    )
    assert listed.normalise({"t": ["abc-1234", "abc-1234"]}) == {"t": ["abc-1234", "ABC1234"]}
    dependent = compile_schema(
        {
            "dependencies": {"owner": {"properties": {"cpf": {"format": "cpf"}}}},
            "dependentSchemas": {"owner": {"properties": {"plate": {"format": "plate"}}}},
        }
    )
    doc = {"cpf": "529.982.247-25", "plate": "abc-1234"}
    assert dependent.normalise(doc) == doc
    assert dependent.normalise({**doc, "owner": "Ana"}) == {
        "cpf": "52998224725",
        "plate": "ABC1234",
        "owner": "Ana",
    }


def test_compiling_the_same_schema_twice_reuses_the_compiled_validator() -> None:
    assert compile_schema(copy.deepcopy(TYRE)) is compile_schema(copy.deepcopy(TYRE))


# --- has_field --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity_type", "path", "expected"),
    [
        ("vehicle", "plate", True),
        ("vehicle", "last_position.lat", True),
        ("vehicle", "last_position.latitude", False),
        ("vehicle", "current_driver.cpf", True),
        ("vehicle", "attributes.anything", True),
        ("vehicle", "attributes.deep.down", True),
        ("vehicle", "plate.number", False),
        ("vehicle", "colour", False),
        ("driver", "cnh.number", True),
        ("driver", "cnh.expiry", False),
        ("driver", "push_tokens.0", False),  # a target builds objects: no array item,
        ("supplier", "contact.email", True),
        ("operator", "role", True),
        ("other", "kind", True),
        ("other", "key.sub", False),
    ],
)
def test_has_field(registry: SchemaRegistry, entity_type: str, path: str, expected: bool) -> None:
    assert registry.has_field(entity_type, path) is expected


def test_has_field_of_other_follows_the_kind(registry: SchemaRegistry) -> None:
    assert registry.has_field("other", "amount_brl", kind="fine")
    assert not registry.has_field("other", "amount", kind="fine")
    assert registry.has_field("other", "answers", kind="checklist")
    # A field is written as a mapping's target builds it: `answers.0` is an object's key
    # ({"answers": {"0": ...}}), never an array's item, so it names no field.
    assert not registry.has_field("other", "answers.0.question", kind="checklist")
    assert not registry.has_field("other", "answers.0", kind="checklist")
    tyre = registry.compile_kind("tyre", TYRE)
    assert registry.has_field("other", "tread_mm", kind_schema=tyre)
    assert not registry.has_field("other", "tread", kind_schema=tyre)
    with pytest.raises(NotFound):
        registry.has_field("other", "x", kind="battery")


def test_has_field_follows_refs_and_combinators() -> None:
    compiled = compile_schema(
        {
            "$defs": {
                "pos": {
                    "type": "object",
                    "properties": {"lat": {"type": "number"}},
                    "additionalProperties": False,
                }
            },
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "here": {"$ref": "#/$defs/pos"},
                "either": {
                    "anyOf": [
                        {"properties": {"a": {}}, "additionalProperties": False},
                        {"properties": {"b": {}}, "additionalProperties": False},
                    ]
                },
            },
        }
    )
    assert compiled.has_field("here.lat") and not compiled.has_field("here.lon")
    assert compiled.has_field("either.a") and compiled.has_field("either.b")
    assert not compiled.has_field("either.c")


def test_has_field_follows_refs_as_the_validator_resolves_them() -> None:
    """A percent-encoded pointer (`posição`), a ref by the schema's own `$id`, relative or
    absolute, and a ref to the `false` schema (nothing is allowed there)."""
    closed = {"type": "object", "properties": {"lat": {}}, "additionalProperties": False}
    compiled = compile_schema(
        {
            "$id": "https://rabbot.example/kinds/rota",
            "$defs": {"posição": closed, "nada": False},
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "here": {"$ref": "#/$defs/posi%C3%A7%C3%A3o"},
                "there": {"$ref": "rota#/$defs/posi%C3%A7%C3%A3o"},
                "far": {"$ref": "https://rabbot.example/kinds/rota#/$defs/posi%C3%A7%C3%A3o"},
                "none": {"$ref": "#/$defs/nada"},
            },
        }
    )
    for field in ("here", "there", "far"):
        assert compiled.has_field(f"{field}.lat") and not compiled.has_field(f"{field}.lon")
    assert compiled.has_field("none") and not compiled.has_field("none.x")


# --- keys -------------------------------------------------------------------------------------


def test_natural_keys_are_normalised(registry: SchemaRegistry) -> None:
    assert registry.natural_key("vehicle", vehicle()) == {"plate": "ABC1234"}
    assert registry.natural_key("driver", driver()) == {"cpf": "52998224725"}
    assert registry.natural_key("operator", operator()) == {"cpf": "11144477735"}
    assert registry.natural_key("supplier", supplier()) == {"cnpj": "11222333000181"}
    assert registry.natural_key("other", fine()) == {"kind": "fine", "key": "DETRAN-SP:1A2B3C4D"}


def test_old_plate_and_its_mercosul_twin_share_the_plate_key(registry: SchemaRegistry) -> None:
    old = registry.derived_fields("vehicle", vehicle(plate="abc-1234"))
    twin = registry.derived_fields("vehicle", vehicle(plate="ABC1C34"))
    assert old == twin == {"plate_key": "ABC1C34"}
    assert registry.derived_fields("vehicle", vehicle(plate="BRA2K19")) == {"plate_key": "BRA2K19"}


def test_only_vehicles_have_derived_fields(registry: SchemaRegistry) -> None:
    assert registry.derived_fields("driver", driver()) == {}
    with pytest.raises(NotFound):
        registry.derived_fields("truck", {})


def test_plate_key_of_an_invalid_plate_is_invalid_payload(registry: SchemaRegistry) -> None:
    with pytest.raises(InvalidPayload) as caught:
        registry.derived_fields("vehicle", {"plate": "AB12345"})
    assert pointers(caught.value.problems) == ["/plate"]


def test_natural_key_without_its_field_is_invalid(registry: SchemaRegistry) -> None:
    with pytest.raises(InvalidPayload) as caught:
        registry.natural_key("supplier", {"name": "x"})
    assert pointers(caught.value.problems) == ["/cnpj"]


def test_normalize_accepts_a_partial_document(registry: SchemaRegistry) -> None:
    assert registry.normalize("vehicle", {"plate": "abc-1234"}) == {"plate": "ABC1234"}
    assert registry.normalize("other", {"kind": "fine", "plate": "abc-1234"})["plate"] == (
        "ABC1234"
    )


def test_entity_schema_is_a_copy_callers_cannot_corrupt(registry: SchemaRegistry) -> None:
    schema = registry.entity_schema("vehicle")
    schema["properties"].clear()
    assert "plate" in registry.entity_schema("vehicle")["properties"]
    assert registry.validate("vehicle", vehicle()) == []
    assert registry.kind_schema("fine")["title"] == "Fine"
