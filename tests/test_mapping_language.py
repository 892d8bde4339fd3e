"""The mapping language: specs, transforms, errors with locations, limits, docs examples."""

from __future__ import annotations

import json
import os
import re
import time
import tracemalloc
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jmespath
import jsonschema_rs
import pytest
import yaml

from gateway.errors import FieldProblem, InvalidPayload
from gateway.mapping import (
    CompiledMapping,
    flatten,
    load_mapping,
    read_sample,
    test_file,
    unflatten,
    validate_file,
)
from gateway.mapping.expressions import Run, compile_expression
from gateway.mapping.limits import MAX_FIELDS, MAX_LIST_ITEMS, MAX_NESTED_ITEM_FIELDS
from gateway.mapping.units import UNITS
from gateway.mapping_files.catalog import TenantCatalog
from gateway.schemas.registry import SchemaRegistry, default_schema_dir, is_natural_key

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "mappings.md"
SCHEMA = json.loads((ROOT / "schemas" / "mapping.schema.json").read_text())

HEAD = "name: t\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"


def inbound(fields: str, head: str = HEAD) -> CompiledMapping:
    return load_mapping(head + "fields:\n  plate: plate\n" + fields)


def problems_of(text: str | bytes, **kwargs: Any) -> list[FieldProblem]:
    with pytest.raises(InvalidPayload) as caught:
        load_mapping(text, **kwargs)
    return caught.value.problems


def located(problems: list[FieldProblem]) -> set[tuple[str, int | None, str]]:
    return {(p.pointer, p.extra.get("line"), p.keyword) for p in problems}


def apply_field(spec: str, payload: dict[str, Any]) -> Any:
    mapping = inbound(f"  out: {spec}\n")
    return mapping.apply({"plate": "ABC1D23", **payload}).document.get("out")


def payload_problems(mapping: CompiledMapping, payload: Any, **kwargs: Any) -> list[FieldProblem]:
    with pytest.raises(InvalidPayload) as caught:
        mapping.apply(payload, **kwargs)
    return caught.value.problems


# -- expressions -----------------------------------------------------------------------------------

PAYLOADS = [
    {"a": {"b": {"c": 1}}, "a.b": {"c": 2}, "x": [1, 2], "n": None, "s": "text"},
    {"a": [1, 2], "a.b": "dotted"},
    {"a": {"b": "not an object"}},
    [1, 2, 3],
    "a string",
    None,
]


@pytest.mark.parametrize(
    "expression", ["a", "a.b", "a.b.c", '"a.b"', '"a.b".c', "x", "n", "s.t", "missing.path"]
)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_plain_path_fast_path_matches_jmespath(expression: str, payload: Any) -> None:
    getter, why = compile_expression(expression)
    assert getter is not None, why
    assert getter(payload, Run()) == jmespath.search(expression, payload)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("items[?ok].id", [1]),
        ("length(items)", 2),
        ("items[0].id", 1),
        ("join(',', items[*].name)", "a,b"),
        ("to_string(items[0].id)", "1"),
        ("items[?id > `1`] | [0].name", "b"),
        ("@", None),
    ],
)
def test_full_jmespath_expressions_evaluate(expression: str, expected: Any) -> None:
    payload = {"items": [{"id": 1, "ok": True, "name": "a"}, {"id": 2, "ok": False, "name": "b"}]}
    getter, _ = compile_expression(expression)
    assert getter is not None
    assert getter(payload, Run()) == (payload if expression == "@" else expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12.5, True),
        (-3, True),
        (0, True),
        ("NaN", False),  # Jackson's writing of a NaN double (Traccar)
        ("12.5", False),  # numeric text: cast it first
        (True, False),
        (None, False),
        ([1], False),
    ],
)
def test_is_number_holds_for_a_finite_number_only(value: Any, expected: bool) -> None:
    getter, why = compile_expression("is_number(v)")
    assert getter is not None, why
    assert getter({"v": value}, Run()) is expected
    # Infinity (`to_number` of a number past a float's range) is no reading either.
    wide, _ = compile_expression("is_number(to_number('1e400'))")
    assert wide is not None and wide({}, Run()) is False


def test_quoted_identifiers_reach_dotted_keys() -> None:
    mapping = inbound("  last_position.lat: '\"position.latitude\"'\n")
    mapped = mapping.apply({"plate": "X", "position.latitude": -23.5})
    assert mapped.document["last_position"] == {"lat": -23.5}


# -- specs -----------------------------------------------------------------------------------------


def test_missing_source_leaves_field_out_and_empty_objects_disappear() -> None:
    mapping = inbound("  last_position.lat: position.lat\n  group: group\n")
    assert mapping.apply({"plate": "ABC1D23"}).document == {"plate": "ABC1D23"}


def test_constants_defaults_and_coalesce() -> None:
    assert apply_field("{value: {a: [1]}}", {}) == {"a": [1]}
    assert apply_field("{from: missing, default: 7}", {}) == 7
    assert apply_field("{coalesce: [a, b, {value: c}]}", {"b": 2}) == 2
    assert apply_field("{coalesce: [a, b]}", {}) is None


def test_constant_containers_are_fresh_each_time() -> None:
    mapping = inbound("  attributes: {value: {tags: []}}\n")
    first = mapping.apply({"plate": "A"}).document
    first["attributes"]["tags"].append("mutated")
    assert mapping.apply({"plate": "A"}).document["attributes"] == {"tags": []}


def test_when_then_else_and_when_as_modifier() -> None:
    spec = "{when: {from: s, in: [a, b]}, then: {value: yes-in}, else: {value: other}}"
    assert apply_field(spec, {"s": "b"}) == "yes-in"
    assert apply_field(spec, {"s": "c"}) == "other"
    assert apply_field("{from: v, when: ok}", {"v": 1, "ok": True}) == 1
    assert apply_field("{from: v, when: ok}", {"v": 1, "ok": False}) is None
    assert apply_field('{from: v, when: "n > `3`"}', {"v": 1, "n": 4}) == 1
    assert apply_field("{from: v, when: {from: n, gte: 5}}", {"v": 1, "n": 4}) is None
    assert apply_field("{from: v, when: {from: n, equals: 1}}", {"v": 1, "n": True}) is None
    assert apply_field("{from: v, when: zero}", {"v": 1, "zero": 0}) == 1  # JMESPath truth


def test_template_substitutes_named_values() -> None:
    spec = '{template: "{plate} saiu de {place} {{ok}}", vars: {plate: p, place: g.name}}'
    assert apply_field(spec, {"p": "ABC1D23", "g": {"name": "Garagem"}}) == (
        "ABC1D23 saiu de Garagem {ok}"
    )
    assert apply_field(spec, {"p": "ABC1D23"}) is None  # a null var: no text at all


def test_each_maps_every_element() -> None:
    spec = "{each: xs, fields: {id: {from: i, transforms: [string]}, n: n}}"
    assert apply_field(spec, {"xs": [{"i": 1, "n": "a"}, {"i": 2}]}) == [
        {"id": "1", "n": "a"},
        {"id": "2"},
    ]
    assert apply_field(
        "{each: xs, item: {from: v, transforms: [upper]}}", {"xs": [{"v": "a"}, {}]}
    ) == ["A"]


def test_object_and_list_build_shapes() -> None:
    spec = "{list: [{object: {type: {value: text}, body.text: t}}, missing]}"
    assert apply_field(spec, {"t": "hi"}) == [{"type": "text", "body": {"text": "hi"}}]


def test_secrets_come_from_the_caller() -> None:
    mapping = inbound("  attributes.token: {secret: erp_token}\n")
    assert mapping.secrets == {"erp_token"}
    mapped = mapping.apply({"plate": "A"}, secrets={"erp_token": "s3cr3t"})
    assert mapped.document["attributes"] == {"token": "s3cr3t"}
    (problem,) = payload_problems(mapping, {"plate": "A"})
    assert problem.keyword == "secret"
    assert "erp_token" in problem.message


def test_the_received_source_is_when_the_payload_came_and_takes_only_time() -> None:
    mapping = inbound("  attributes.seen: {received: time}\n")
    received = datetime(2026, 12, 3, 22, 30, 5, 250000, tzinfo=UTC)
    mapped = mapping.apply({"plate": "A"}, received=received)
    assert mapped.document["attributes"] == {"seen": "2026-12-03T22:30:05.250Z"}
    before = datetime.now(UTC).replace(microsecond=0)
    now = mapping.apply({"plate": "A"}).document["attributes"]["seen"]  # mapping test: now
    assert before <= datetime.fromisoformat(now) <= datetime.now(UTC)
    (problem,) = problems_of(HEAD + "fields:\n  plate: plate\n  year: {received: now}\n")
    assert (problem.pointer, problem.message) == (
        "/fields/year/received",
        "received takes time: {received: time}",
    )


def test_other_entities_get_their_kind() -> None:
    head = "name: t\ndirection: inbound\nentity_type: other\nkind: fine\nkey: [key]\n"
    mapping = load_mapping(head + "fields:\n  key: ait\n")
    assert mapping.apply({"ait": "A1"}).document == {"kind": "fine", "key": "A1"}
    assert (mapping.entity_type, mapping.kind) == ("other", "fine")


def test_conditional_events() -> None:
    head = HEAD + "emit: [vehicle.position, {type: alarm.sos, when: {from: a, equals: sos}}]\n"
    mapping = inbound("", head=head)
    assert mapping.emit == ("vehicle.position", "alarm.sos")
    both = ("vehicle.position", "alarm.sos")
    assert mapping.apply({"plate": "A", "a": "sos"}).event_types == both
    assert mapping.apply({"plate": "A"}).event_types == ("vehicle.position",)


def test_items_extracts_batches() -> None:
    mapping = inbound("", head=HEAD + "items: data.messages\n")
    assert mapping.items({"data": {"messages": [{"plate": "A"}, {"plate": "B"}]}}) == [
        {"plate": "A"},
        {"plate": "B"},
    ]
    single = inbound("")
    assert single.items({"plate": "A"}) == [{"plate": "A"}]
    assert single.items([{"plate": "A"}]) == [{"plate": "A"}]


# -- transforms ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transforms", "value", "expected"),
    [
        ("[string]", 152340, "152340"),
        ("[string]", True, "true"),
        ("[integer]", "87", 87),
        ("[integer]", 13.0, 13),
        ("[number]", "13.1", 13.1),
        ("[number]", " -46.5 ", -46.5),
        ("[boolean]", "true", True),
        ("[boolean]", "Não", False),
        ("[boolean]", 1, True),
        ("[trim, upper]", " abc1d23 ", "ABC1D23"),
        ("[lower]", "A@B.COM", "a@b.com"),
        ("[digits]", "529.982.247-25", "52998224725"),
        ("[digits, {pad: 11}]", 8676959730, "08676959730"),
        # a whole number sent as a float is its integer's digits, not "...0" with a digit more
        ("[digits]", 52998224725.0, "52998224725"),
        ("[string]", 4711.0, "4711"),  # an id from pandas or a Java Double, as JS writes it
        ("[string]", -0.0, "0"),
        ("[string]", 12.5, "12.5"),
        ("[upper]", 1e20, "100000000000000000000"),
        ("[{pad: 6}]", 42.0, "000042"),
        ("[digits]", -12.0, "12"),
        ("[digits]", 1e20, "100000000000000000000"),
        ("[phone]", 11987654321.0, "+5511987654321"),
        ("[cpf]", 52998224725.0, "52998224725"),
        # no digits, no value: a blank CPF is not padded into "00000000000"
        ("[digits, {pad: 11}]", "", None),
        ("[digits]", "N/A", None),
        # a compact date reads each field at its full width: a digit lost is no date
        ("[{datetime: {parse: '%Y%m%d', format: date}}]", "20261218", "2026-12-18"),
        ("[{datetime: {parse: ['%Y%m%d', '%d%m%Y'], format: date}}]", "18122026", "2026-12-18"),
        (
            "[{datetime: {parse: '%d%m%Y %H%M', format: iso8601}}]",
            "18122026 0930",
            "2026-12-18T09:30:00Z",
        ),
        # CNAB 400's DDMMAA, ISO 8601's basic form with an offset, milliseconds run on
        ("[{datetime: {parse: '%d%m%y', format: date}}]", "181226", "2026-12-18"),
        (
            "[{datetime: {parse: '%Y%m%dT%H%M%S%z'}}]",
            "20261218T093000-0300",
            "2026-12-18T12:30:00Z",
        ),
        (
            "[{datetime: {parse: '%Y%m%d%H%M%S%f'}}]",
            "20261218093000123",
            "2026-12-18T09:30:00.123Z",
        ),
        # the separated parts of a format with a compact run are read as strptime reads them
        ("[{datetime: {parse: '%Y%m%d %H:%M'}}]", "20261218  9:05", "2026-12-18T09:05:00Z"),
        ("[{datetime: {parse: '%Y%m%dT%H%M%S'}}]", "20261218t093000", "2026-12-18T09:30:00Z"),
        ("[plate]", " abc-1d23 ", "ABC1D23"),
        ("[plate]", "ABC 1234", "ABC1234"),
        ("[plate]", "ABC\u20131234", "ABC1234"),  # en dash: a word processor, windows-1252 0x96
        ("[plate]", "ABC\u20141D23", "ABC1D23"),  # em dash
        ("[plate]", "ABC\u20111234", "ABC1234"),  # non-breaking hyphen
        ("[plate]", "ABC\u22121234", "ABC1234"),  # minus sign
        ("[plate]", "ABC\u00a01234", "ABC1234"),  # no-break space: a web page, a PDF
        ("[plate]", "ABC\u2009\u202f1234", "ABC1234"),  # thin, narrow no-break spaces
        ("[plate]", "ABC\u200b1234", None),  # a zero-width space is no separator
        ("[cpf]", "529.982.247\u201325", "52998224725"),
        ("[plate]", "Truck 12", None),
        ("[plate]", "868618052108909", None),
        ("[{pad: {width: 5, fill: '*', side: right}}]", "ab", "ab***"),
        ("[{truncate: 3}]", "abcdef", "abc"),
        ("[{split: {separator: ',', index: 1}}, number]", "-23.55,-46.63", -46.63),
        ("[{split: {separator: ',', index: -1}}]", "a,b,c", "c"),
        ("[{split: {separator: ',', index: 2}}]", "-23.55,-46.63", None),
        ("[{split: {separator: ' - ', index: 0}}]", 12.5, "12.5"),
        ("[{convert: {from: knots, to: km/h}}, {round: 1}]", 13.1, 24.3),
        ("[{convert: {from: m/s, to: km/h}}, {round: 3}]", 6.74, 24.264),
        ("[{convert: {from: mph, to: km/h}}, {round: 2}]", 10, 16.09),
        ("[{convert: {from: m, to: km}}]", 1523412.9, 1523.4129),
        ("[{convert: {from: mi, to: km}}, {round: 3}]", 2, 3.219),
        ("[{convert: {from: ft, to: m}}, {round: 2}]", 1000, 304.8),
        ("[{convert: {from: km/h, to: knots}}, {round: 1}]", 24.2612, 13.1),
        ("[{convert: {from: gal, to: l}}, {round: 3}]", 10, 37.854),
        ("[{convert: {from: gal_imp, to: l}}, {round: 3}]", "10", 45.461),
        ("[{convert: {from: m3, to: l}}]", 1.5, 1500.0),
        ("[{convert: {from: ml, to: l}}]", 500, 0.5),
        ("[{convert: {from: l, to: gal}}, {round: 4}]", 3.785411784, 1.0),
        ("[{convert: {from: mpg, to: km/l}}, {round: 2}]", 30, 12.75),
        ("[{convert: {from: l/100km, to: km/l}}]", 8, 12.5),
        ("[{convert: {from: km/l, to: l/100km}}]", 12.5, 8.0),
        ("[{convert: {from: mpg, to: l/100km}}, {round: 2}]", 30, 7.84),
        ("[{convert: {from: mpg_imp, to: l/100km}}, {round: 2}]", 40, 7.06),
        ("[{convert: {from: s, to: h}}]", 7200, 2.0),
        ("[{convert: {from: ms, to: h}}]", 20883636000, 5801.01),  # not 5801.009999999999
        ("[{convert: {from: ms, to: h}}]", 36000, 0.01),  # not 0.009999999999999998
        ("[{convert: {from: s, to: h}}]", 20885760, 5801.6),
        ("[{convert: {from: ms, to: h}}]", "20885760000", 5801.6),  # Traccar's `hours`
        ("[{convert: {from: min, to: h}}]", 90, 1.5),
        ("[{convert: {from: h, to: s}}]", 1.5, 5400.0),
        ("[{scale: 100}, {round: 0}]", 0.87, 87),
        ("[{offset: -3}]", 10, 7),
        ("[{round: 2}]", "104.128", 104.13),
        ("[{round: 2}]", 5, 5),
        ("[{round: 2}]", 0.125, 0.13),
        ("[{round: 2}]", -0.125, -0.13),
        ("[{round: 0}]", 2.5, 3),
        ("[{round: 1}]", 1e300, 1e300),
        ("[format_number]", 10000, "10.000"),
        ("[{format_number: {decimals: 2}}]", 1234.5, "1.234,50"),
        ("[{format_number: {decimals: 1, thousands: ',', decimal: '.'}}]", 1234.56, "1,234.6"),
        # An integer past a float's exact range formatted exactly (it rounded to ...616).
        (
            "[integer, {format_number: {thousands: ''}}]",
            "18446744073709551615",
            "18446744073709551615",
        ),
        (
            "[{format_number: {decimals: 2, thousands: ''}}]",
            9007199254740993,
            "9007199254740993,00",
        ),
        ("[parse_number]", "1.234,56", 1234.56),
        ("[parse_number]", "-23,5505", -23.5505),
        ("[parse_number]", " 130,16 ", 130.16),
        ("[parse_number]", 12.5, 12.5),
        ("[{parse_number: {thousands: ',', decimal: '.'}}]", "1,234.56", 1234.56),
        ("[{parse_number: {thousands: '', decimal: ','}}]", "1234,5", 1234.5),
        ("[parse_number]", "1.234.567", 1234567),
        ("[parse_number]", ",5", 0.5),
        ("[{parse_number: {decimal_point: true}}]", "130.16", 130.16),
        ("[{parse_number: {decimal_point: true}}]", "0.125", 0.125),
        ("[{parse_number: {decimal_point: true}}]", "1.130,16", 1130.16),
        ("[{parse_number: {decimal_point: true}}]", "1.234.567", 1234567),
        ("[{map: {values: {'1': open, 'true': affirmative}, default: other}}]", 1, "open"),
        ("[{map: {values: {'1': open, 'true': affirmative}}}]", True, "affirmative"),
        ("[{map: {values: {'1': open}, default: other}}]", "9", "other"),
        ("[{map: {values: {'1': open}}}]", "9", None),
        ("[cpf]", "529982247-25", "52998224725"),  # written with some separators
        ("[cpf]", " 529 982 247 25 ", "52998224725"),
        ("[cpf]", "1234567890", "01234567890"),  # a zero lost, the check digits right
        ("[cpf]", "5299822472", None),  # a digit short: no zero makes it right
        ("[cpf]", "529.982.247-2", None),
        ("[{datetime: {parse: unix}}]", "1795685112", "2026-11-26T09:25:12Z"),
        ("[{datetime: {parse: unix}}]", 1795685112.5, "2026-11-26T09:25:12.500Z"),
        ("[{datetime: {parse: unix_ms}}]", 1795685112000, "2026-11-26T09:25:12Z"),
        # read exactly (not through a float, a µs off past 2242): the millisecond it names
        ("[{datetime: {parse: unix_ms}}]", 10413792000001, "2300-01-01T00:00:00.001Z"),
        ("[{datetime: {parse: unix_ms}}]", "253402300799999", "9999-12-31T23:59:59.999Z"),
        ("[{datetime: {}}]", "2026-11-20T13:45:22.862Z", "2026-11-20T13:45:22.862Z"),
        ("[{datetime: {parse: iso8601}}]", "2026-11-25T07:58:00-03:00", "2026-11-25T10:58:00Z"),
        # RFC 3339 §5.6 lets "T" and "Z" be lower case, as a canonical fix's time may be
        ("[{datetime: {parse: iso8601}}]", "2026-11-25t10:58:00.5z", "2026-11-25T10:58:00.500Z"),
        ("[{datetime: {parse: auto}}]", "2026-11-25t07:58:00-03:00", "2026-11-25T10:58:00Z"),
        ("[{datetime: {}}]", 1795685112, "2026-11-26T09:25:12Z"),
        (
            "[{datetime: {input_tz: America/Sao_Paulo}}]",
            "2026-11-18T13:45:00",
            "2026-11-18T16:45:00Z",
        ),
        (
            "[{datetime: {parse: '%d/%m/%Y %H:%M', input_tz: America/Sao_Paulo}}]",
            "18/11/2026 13:45",
            "2026-11-18T16:45:00Z",
        ),
        (
            "[{datetime: {parse: ['%d/%m/%Y %H:%M', '%d/%m/%Y %H:%M:%S', unix]}}]",
            "5/1/2026 9:30:15",
            "2026-01-05T09:30:15Z",
        ),
        (
            "[{datetime: {parse: ['%d/%m/%Y %H:%M', '%d/%m/%Y %H:%M:%S', unix]}}]",
            1795685112,
            "2026-11-26T09:25:12Z",
        ),
        (
            "[{datetime: {output_tz: America/Sao_Paulo}}]",
            "2026-11-25T10:58:00Z",
            "2026-11-25T07:58:00-03:00",
        ),
        (
            "[{datetime: {format: '%H:%M', output_tz: America/Sao_Paulo}}]",
            "2026-11-20T13:45:13Z",
            "10:45",
        ),
        # as_written: the offset the time was written with (a notice's own clock); one
        # without (read in input_tz) or in UTC in input_tz
        (
            "[{datetime: {input_tz: America/Sao_Paulo, output_tz: as_written}}]",
            "2026-11-18T13:45:00-05:00",
            "2026-11-18T13:45:00-05:00",
        ),
        (
            "[{datetime: {input_tz: America/Sao_Paulo, output_tz: as_written}}]",
            "2026-11-18T16:45:00Z",
            "2026-11-18T13:45:00-03:00",
        ),
        (
            "[{datetime: {parse: '%d/%m/%Y %H:%M', input_tz: America/Sao_Paulo, "
            "output_tz: as_written}}]",
            "10/02/2019 13:45",
            "2019-02-10T13:45:00-02:00",
        ),
        (
            "[{datetime: {output_tz: as_written}}]",
            "2026-11-18T16:45:00+00:00",
            "2026-11-18T16:45:00Z",
        ),
        (
            "[{datetime: {output_tz: as_written, format: date}}]",
            "2026-12-18T23:59:59-05:00",
            "2026-12-18",
        ),
        ("[{datetime: {format: date}}]", "2026-12-18", "2026-12-18"),
        ("[{datetime: {format: unix}}]", "2026-11-26T09:25:12Z", 1795685112),
        ("[{datetime: {format: unix_ms}}]", "2026-11-26T09:25:12.5Z", 1795685112500),
    ],
)
def test_transform(transforms: str, value: Any, expected: Any) -> None:
    assert apply_field(f"{{from: v, transforms: {transforms}}}", {"v": value}) == expected


def test_a_single_transform_need_not_be_a_list() -> None:
    assert apply_field("{from: v, transforms: upper}", {"v": "abc"}) == "ABC"


def test_transforms_skip_nulls() -> None:
    assert apply_field("{from: v, transforms: [integer, {scale: 2}]}", {"v": None}) is None


@pytest.mark.parametrize(
    ("transforms", "value", "keyword"),
    [
        ("[number]", "abc", "cast"),
        ("[integer]", "13.5", "cast"),
        ("[boolean]", "maybe", "cast"),
        ("[string]", {"a": 1}, "cast"),
        ("[number]", True, "cast"),
        ("[{convert: {from: knots, to: km/h}}]", "fast", "cast"),
        ("[parse_number]", "1,2,3", "cast"),
        ("[parse_number]", "1,130.16", "cast"),
        ("[parse_number]", "1.1.30,16", "cast"),
        ("[parse_number]", "12.5", "cast"),
        ("[parse_number]", "0.125", "cast"),  # a leading zero is no thousands group
        ("[parse_number]", "000.123,5", "cast"),
        ("[{parse_number: {decimal_point: true}}]", "1.130", "cast"),  # 1130 or 1.13?
        ("[{parse_number: {decimal_point: true}}]", "-12.500", "cast"),
        ("[{parse_number: {thousands: ',', decimal: '.'}}]", "1.130,16", "cast"),
        ("[{convert: {from: l/100km, to: km/l}}]", 0, "transform"),
        ("[{datetime: {parse: iso8601}}]", "yesterday", "datetime"),
        ("[{datetime: {parse: unix}}]", "1e300", "datetime"),
        ("[{datetime: {parse: ['%d/%m/%Y', iso8601]}}]", "31/11/2026", "datetime"),
        ("[{convert: {from: knots, to: km/h}}, {round: 1}]", 1e308, "cast"),  # overflows
        ("[{scale: 1.0e+10}]", 1e300, "cast"),
    ],
)
def test_transform_failure_names_target_and_source(
    transforms: str, value: Any, keyword: str
) -> None:
    mapping = inbound(
        f"  last_position.speed_kmh: {{from: position.v, transforms: {transforms}}}\n"
    )
    (problem,) = payload_problems(mapping, {"plate": "A", "position": {"v": value}})
    assert problem.keyword == keyword
    assert problem.pointer == "/position/v"
    assert problem.extra == {"target": "last_position.speed_kmh", "source": "position.v"}


@pytest.mark.parametrize(
    ("how", "text"),
    [
        ("%a, %d %b %Y %H:%M:%S %Z", "Fri, 20 Nov 2026 13:45:22 GMT"),  # RFC 1123, HTTP-date
        ("%d/%m/%Y %H:%M:%S %Z", "20/11/2026 13:45:22 UTC"),
        ("%a %b %d %H:%M:%S %Z %Y", "Fri Nov 20 13:45:22 gmt 2026"),  # Java's Date.toString()
    ],
)
def test_a_time_naming_utc_or_gmt_by_percent_z_is_that_instant_whatever_input_tz(
    how: str, text: str
) -> None:
    option = f"{{datetime: {{parse: '{how}', input_tz: America/Sao_Paulo}}}}"
    spec = f"{{from: v, transforms: [{option}]}}"
    assert apply_field(spec, {"v": text}) == "2026-11-20T13:45:22Z"


def test_a_local_zone_name_read_by_percent_z_is_a_datetime_problem() -> None:
    """strptime's `%Z` also takes the names of the server's own zone (BST in London) and
    drops them: such a time is refused, not placed in `input_tz` nor in UTC."""
    mapping = inbound(
        "  attributes.t: {from: t, transforms: [{datetime: {parse: '%d/%m/%Y %H:%M %Z'}}]}\n"
    )
    own = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/London"
    time.tzset()
    try:
        (problem,) = payload_problems(mapping, {"plate": "A", "t": "20/06/2026 13:45 BST"})
    finally:
        if own is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = own
        time.tzset()
    assert problem.keyword == "datetime"
    assert problem.message == (
        'cannot read "20/06/2026 13:45 BST" as a date-time: %Z reads the zone names UTC and GMT,'
        " not 'BST' (%z reads an offset)"
    )


def test_a_stored_version_parsing_percent_s_still_compiles_and_refuses_its_values() -> None:
    """A new text with `parse: "%s"` is refused at upload; a version stored before that rule
    keeps running as it did (a payload without that field still maps)."""
    field = "  attributes.t: {from: t, transforms: [{datetime: {parse: '%s'}}]}\n"
    text = HEAD + "fields:\n  plate: plate\n" + field
    assert problems_of(text)[0].pointer == "/fields/attributes.t/transforms/0/datetime/parse"
    stored = load_mapping(text, strict=False)
    assert stored.apply({"plate": "ABC1D23"}).document == {"plate": "ABC1D23"}
    (problem,) = payload_problems(stored, {"plate": "ABC1D23", "t": "1795685112"})
    assert problem.keyword == "datetime"


def test_a_time_read_by_none_of_several_formats_names_them_all() -> None:
    mapping = inbound(
        "  attributes.t: {from: t, transforms: [{datetime: {parse: ['%d/%m/%Y', unix]}}]}\n"
    )
    (problem,) = payload_problems(mapping, {"plate": "A", "t": "2026-11-31"})
    assert problem.message == (
        "cannot read \"2026-11-31\" as a date-time: matches none of '%d/%m/%Y', 'unix'"
    )


def test_cast_failure_matches_the_documented_problem() -> None:
    mapping = inbound("  last_position.lat: {from: position.latitude, transforms: [number]}\n")
    (problem,) = payload_problems(mapping, {"plate": "A", "position": {"latitude": "abc"}})
    assert problem.as_dict() == {
        "pointer": "/position/latitude",
        "message": 'cannot cast string "abc" to number',
        "keyword": "cast",
        "target": "last_position.lat",
        "source": "position.latitude",
    }


def test_every_failing_field_is_listed() -> None:
    mapping = inbound(
        "  a: {from: x, required: true}\n"
        "  b: {from: y, transforms: [integer]}\n"
        "  c: {coalesce: [p, q], required: true}\n"
        "  answers: {each: xs, fields: {n: {from: v, transforms: [number]}}}\n"
    )
    problems = payload_problems(mapping, {"y": "z", "xs": [{"v": 1}, {"v": "bad"}]})
    got = {(p.extra["target"], p.keyword, p.extra["source"], p.pointer) for p in problems}
    assert got == {
        ("plate", "key", "", ""),
        ("a", "required", "x", "/x"),
        ("b", "cast", "y", "/y"),
        ("c", "required", "p, q", ""),
        ("answers[1].n", "cast", "v", "/xs/1/v"),
    }


def test_problems_inside_lists_point_into_the_payload() -> None:
    mapping = inbound(
        "  attributes.a: {each: xs, item: {from: v.w, transforms: [integer]}}\n"
        "  attributes.b: {each: xs, fields: {c: {each: ys, item: {from: z, required: true}}}}\n"
    )
    payload = {
        "plate": "A",
        "xs": [{"v": {"w": 1}, "ys": [{"z": 1}]}, {"v": {"w": "x"}, "ys": [{}]}],
    }
    got = {(p.extra["target"], p.pointer, p.message) for p in payload_problems(mapping, payload)}
    assert got == {
        ("attributes.a", "/xs/1/v/w", 'element 1: cannot cast string "x" to integer'),
        ("attributes.b[1].c", "/xs/1/ys/0/z", "element 0: required value is missing"),
    }


def test_invalid_payload_error_is_a_422_problem() -> None:
    mapping = inbound("  a: {from: x, required: true}\n")
    with pytest.raises(InvalidPayload) as caught:
        mapping.apply({"plate": "A"})
    body = caught.value.problem()
    assert body["status"] == 422
    assert body["errors"] == [
        {
            "pointer": "/x",
            "message": "required value is missing",
            "keyword": "required",
            "target": "a",
            "source": "x",
        }
    ]


# -- outbound --------------------------------------------------------------------------------------

OUTBOUND = """
name: erp
direction: outbound
path: {id: entity.id}
query: {full: {value: true}, page: {from: page, transforms: [integer]}, skip: nothing}
headers:
  Authorization: {template: "Bearer {t}", vars: {t: {secret: erp_token}}}
  X-Plate: entity.plate
body:
  veiculo.placa: entity.plate
  veiculo.km: {from: entity.odometer_km, transforms: [{round: 0}]}
response:
  odometer_km: km
"""


def test_build_request_and_map_response() -> None:
    mapping = load_mapping(OUTBOUND)
    request = mapping.build_request(
        {"entity": {"id": 7, "plate": "ABC1D23", "odometer_km": 152340.4}, "page": "2"},
        secrets={"erp_token": "tok"},
    )
    assert request.path_params == {"id": "7"}
    assert request.query == {"full": "true", "page": "2"}
    assert request.headers == {"Authorization": "Bearer tok", "X-Plate": "ABC1D23"}
    assert request.body == {"veiculo": {"placa": "ABC1D23", "km": 152340}}
    assert mapping.map_response({"km": 10}) == {"odometer_km": 10}


def test_a_query_list_is_the_parameter_repeated_its_nulls_left_out() -> None:
    mapping = load_mapping(
        "name: q\ndirection: outbound\nquery: {deviceId: ids, none: empty, one: one}\n"
    )
    request = mapping.build_request({"ids": [1, "2", None, True], "empty": [None], "one": 3})
    assert request.query == {"deviceId": ["1", "2", "true"], "one": "3"}


def test_path_params_are_required_and_headers_refuse_line_breaks() -> None:
    mapping = load_mapping(OUTBOUND)
    with pytest.raises(InvalidPayload) as caught:
        mapping.build_request({"entity": {"plate": "A\r\nX-Evil: 1"}}, secrets={"erp_token": "t"})
    got = {(p.extra["target"], p.keyword) for p in caught.value.problems}
    assert got == {("path.id", "required"), ("headers.X-Plate", "type")}


def test_directions_are_not_mixed() -> None:
    with pytest.raises(TypeError):
        load_mapping(OUTBOUND).apply({})
    with pytest.raises(TypeError):
        inbound("").build_request({})


def test_inline_credentials_are_refused() -> None:
    text = (
        "name: x\ndirection: outbound\nheaders:\n  Authorization: {value: Bearer abc}\n"
        "query:\n  api_key: \"'abc'\"\n  page: \"'1'\"\n"
    )
    assert located(problems_of(text)) == {
        ("/headers/Authorization", 4, "secret"),
        ("/query/api_key", 6, "secret"),
    }


# -- compile errors: every problem, with its location ----------------------------------------------


def test_every_problem_is_listed_with_pointer_and_line() -> None:
    text = """\
name: broken
direction: inbound
entity_type: vehicle
key: [plate, vin]
colour: red
fields:
  plate: {from: device.name, transforms: [upcase]}
  last_position.lat: position.latitude[
  last_position.speed_kmh: {from: s, transforms: [{convert: {from: knots, to: km}}]}
  attributes.label: {template: "{name.__class__} {x[0]} {y:>10} {z!r}", vars: {name: a}}
  status: {form: s}
  year: 2020
  group: {from: g, required: maybe}
  odometer_km: {from: x, transforms: [{round: 1.5}]}
  model: {from: x, value: y}
  attributes.part: {from: x, transforms: [{split: {separator: "", index: 0}}]}
"""
    problems = problems_of(text)
    assert located(problems) >= {
        ("/colour", 5, "unknown"),
        ("/key/1", 4, "key"),
        ("/fields/plate/transforms/0", 7, "transform"),
        ("/fields/last_position.lat", 8, "expression"),
        ("/fields/last_position.speed_kmh/transforms/0/convert", 9, "transform"),
        ("/fields/attributes.label/template", 10, "template"),
        ("/fields/status/form", 11, "unknown"),
        ("/fields/year", 12, "type"),
        ("/fields/group/required", 13, "type"),
        ("/fields/odometer_km/transforms/0/round", 14, "transform"),
        ("/fields/model", 15, "source"),
        ("/fields/attributes.part/transforms/0/split", 16, "transform"),
    }
    messages = " | ".join(p.message for p in problems)
    assert "unknown transform 'upcase' (did you mean 'upper'?)" in messages
    assert "split takes {separator: text of 1 to 16 characters" in messages
    assert "unknown key 'form' (did you mean 'from'?)" in messages
    assert "cannot convert speed (knots) to distance (km)" in messages
    for bad in ("{name.__class__}", "{x[0]}", "{y:>10}", "{z!r}"):
        assert f"placeholder {bad} is not allowed" in messages


def test_template_attribute_access_is_rejected_at_compile_time() -> None:
    (problem, *_) = problems_of(
        HEAD + 'fields:\n  plate: {template: "{p.__class__.__mro__}", vars: {p: plate}}\n'
    )
    assert problem.pointer == "/fields/plate/template"
    assert problem.keyword == "template"
    assert problem.extra["line"] == 6


def test_json_files_get_lines_too() -> None:
    text = json.dumps(
        {
            "name": "j",
            "direction": "inbound",
            "entity_type": "vehicle",
            "key": ["plate"],
            "fields": {"plate": "p", "vin": {"from": "v", "transforms": ["nope"]}},
        },
        indent=2,
    )
    (problem,) = problems_of(text)
    assert problem.pointer == "/fields/vin/transforms/0"
    assert problem.extra["line"] == text.splitlines().index('        "nope"') + 1


def test_a_target_indexing_into_an_array_field_is_refused_at_upload(tmp_path: Path) -> None:
    """`groups.0` builds {"groups": {"0": ...}}, which no vehicle is: every payload would be
    refused. It names no field, and `gateway mapping validate` says so as the upload does."""
    from gateway.mapping_files.catalog import TenantCatalog
    from gateway.schemas.registry import SchemaRegistry, default_schema_dir

    catalog = TenantCatalog(SchemaRegistry.load(default_schema_dir()), {})
    path = tmp_path / "m.yaml"
    path.write_text(HEAD + "fields:\n  plate: plate\n  groups.0: g\n")
    (problem,), _ = validate_file(path, catalog=catalog)
    assert (problem.pointer, problem.keyword) == ("/fields/groups.0", "unknown_field")


def test_json_and_yaml_of_the_same_mapping_have_the_same_checksum() -> None:
    as_yaml = HEAD + "fields:\n  plate: p\n  year: {from: y, transforms: [integer]}\n"
    as_json = json.dumps(yaml.safe_load(as_yaml))
    assert load_mapping(as_yaml).checksum == load_mapping(as_json.encode()).checksum
    assert load_mapping(as_yaml).source == yaml.safe_load(as_yaml)


def test_catalog_rejects_targets_outside_the_entity_schema() -> None:
    class Catalog:
        def has_field(self, entity_type: str, path: str, *, kind: str | None = None) -> bool:
            return path in {"plate", "last_position.lat"} or path.startswith("attributes.")

    text = HEAD + "fields:\n  plate: p\n  last_position.altitude: x\n  attributes.any: y\n"
    (problem,) = problems_of(text, catalog=Catalog())
    assert (problem.pointer, problem.keyword, problem.extra["line"]) == (
        "/fields/last_position.altitude",
        "unknown_field",
        7,
    )


_KEYED = "name: k\ndirection: inbound\nentity_type: vehicle\nkey: {}\nfields: {{plate: p, id: i}}\n"


@pytest.mark.parametrize(
    ("text", "where", "keyword"),
    [
        ("name: x\n", "", "required"),
        ("- a\n- b\n", "", "type"),
        (HEAD + "fields:\n  plate: p\n  a: x\n  a.b: y\n", "/fields/a.b", "target"),
        (HEAD + "fields:\n  plate: p\n  'bad target': x\n", "/fields/bad target", "target"),
        (HEAD + "fields:\n  plate: 'foo(x)'\n", "/fields/plate", "expression"),
        (HEAD + "fields:\n  plate: 'join(x)'\n", "/fields/plate", "expression"),
        (HEAD + "kind: fine\nfields:\n  plate: p\n", "/kind", "kind"),
        (HEAD.replace("inbound", "sideways") + "fields: {plate: p}\n", "/direction", "enum"),
        (HEAD + "fields:\n  plate: p\nbody: {a: b}\n", "/body", "unknown"),
        (HEAD + "fields:\n  plate: {each: x}\n", "/fields/plate", "source"),
        (HEAD + "fields:\n  plate: {then: x}\n", "/fields/plate/then", "source"),
        (
            HEAD + "fields:\n  plate: {from: x, when: {from: y, equals: 1, gt: 2}}\n",
            "/fields/plate/when",
            "condition",
        ),
        (
            HEAD
            + "fields:\n  plate: {from: x, transforms: [{datetime: {output_tz: Mars/Base}}]}\n",
            "/fields/plate/transforms/0/datetime/output_tz",
            "transform",
        ),
        (
            HEAD + "fields:\n  plate: {from: x, transforms: [{upper: 1}]}\n",
            "/fields/plate/transforms/0",
            "transform",
        ),
        (HEAD + "fields:\n  plate: {template: '{a}'}\n", "/fields/plate/template", "template"),
        (
            HEAD + "fields:\n  plate: {template: '{a}', vars: {a: x, b: y}}\n",
            "/fields/plate/vars/b",
            "template",
        ),
        (HEAD + "fields:\n  plate: {template: 'open {'}\n", "/fields/plate/template", "template"),
        (HEAD + "fields:\n  plate: {secret: 'not a name'}\n", "/fields/plate/secret", "secret"),
        (HEAD + "emit: [Not An Event]\nfields: {plate: p}\n", "/emit/0", "emit"),
        (
            HEAD + "fields:\n  plate: {from: p, transforms: [{parse_number: {decimal: ''}}]}\n",
            "/fields/plate/transforms/0/parse_number",
            "transform",
        ),
        (  # a digit or a sign as a separator would change the number, not read it
            HEAD + "fields:\n  plate: {from: p, transforms: [{parse_number: {thousands: '0'}}]}\n",
            "/fields/plate/transforms/0/parse_number",
            "transform",
        ),
        (
            HEAD + "fields:\n  plate: {from: p, transforms: [{parse_number: {thousands: '-'}}]}\n",
            "/fields/plate/transforms/0/parse_number",
            "transform",
        ),
        (  # a decimal point beside a decimal point reads nothing more
            HEAD + "fields:\n  plate: {from: p, transforms: "
            "[{parse_number: {thousands: ',', decimal: '.', decimal_point: true}}]}\n",
            "/fields/plate/transforms/0/parse_number",
            "transform",
        ),
        (_KEYED.format("{first_of: []}"), "/key/first_of", "key"),
        (_KEYED.format("{first_of: [plate, [plate]]}"), "/key/first_of", "key"),
        (_KEYED.format("{first_of: [plate, [id, x]]}"), "/key/first_of/1/1", "key"),
        (_KEYED.format("{first_of: [plate, 3]}"), "/key/first_of/1", "type"),
        (_KEYED.format("{any_of: [plate, id]}"), "/key", "type"),
    ],
)
def test_invalid_mappings(text: str, where: str, keyword: str) -> None:
    assert (where, keyword) in {(p.pointer, p.keyword) for p in problems_of(text)}


# -- bad input: clear and bounded rejections -------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["name: [unclosed\n", "a: b\n  c: d\n", '{"name": "x",', "key: {a: 1}\n\tb: 2\n"]
)
def test_malformed_files_are_rejected_with_a_line(text: str) -> None:
    (problem,) = problems_of(text)
    assert problem.keyword == "yaml"
    assert isinstance(problem.extra.get("line"), int)


_GOOD_LINES = [
    "name: erp-mileage",
    "direction: inbound",
    "entity_type: vehicle",
    "key: [plate]",
    "fields:",
    "  plate: {from: placa, transforms: [upper]}",
    "  odometer_km: {from: km, transforms: [number]}",
]
_JSON_WITHOUT_ITS_BRACE = (
    '{\n  "name": "erp-mileage",\n  "direction": "inbound",\n  "entity_type": "vehicle",\n'
    '  "key": ["plate"],\n  "fields": {"plate": {"from": "placa"}}\n'
)


def _with_line(number: int, text: str) -> str:
    lines = list(_GOOD_LINES)
    lines[number - 1] = text
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "line", "also"),
    [
        (_with_line(1, 'name: "erp-mileage'), 1, "at the end of the file"),
        (_with_line(4, "key: [plate"), 4, "on line 5"),
        (_with_line(6, "  plate: {from: placa, transforms: [upper]"), 6, "on line 7"),
        (_JSON_WITHOUT_ITS_BRACE, 1, "at the end of the file"),
        (_with_line(3, "entity_type"), 3, "on line 4"),  # a key without its colon
        ("a: 'x\n\n\n", 1, "at the end of the file"),
        ("a: 1\n- b\n", 2, ""),  # a block mapping's mistake: where it broke, not where it began
        ("a: b\n  c: d\n", 2, ""),
    ],
)
def test_a_yaml_mistake_is_at_the_line_to_fix_never_past_the_end(
    text: str, line: int, also: str
) -> None:
    """An unclosed quote, [ or { is at the line that opened it (where PyYAML gave up, a later
    line or past the end of the file, is named in the message); the line is one of the file."""
    (problem,) = problems_of(text)
    assert problem.keyword == "yaml"
    assert problem.extra["line"] == line, problem
    assert 1 <= problem.extra["line"] <= len(text.splitlines())
    assert also in problem.message, problem.message


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ("  attributes.t: {value: .inf}\n", "/fields/attributes.t/value", "inf is not"),
        ("  attributes.t: {value: -.inf}\n", "/fields/attributes.t/value", "-inf is not"),
        ("  attributes.t: {value: .nan}\n", "/fields/attributes.t/value", "nan is not"),
        ("  attributes.t: {value: 1.0e+400}\n", "/fields/attributes.t/value", "inf is not"),
        ("  attributes.t: {from: x, default: .inf}\n", "/fields/attributes.t/default", "inf"),
        (
            "  attributes.t: {from: x, transforms: [{map: {values: {a: .inf}}}]}\n",
            "/fields/attributes.t/transforms/0/map/values/a",
            "inf is not",
        ),
        (
            "  attributes.t: {from: x, when: {from: x, gt: .nan}}\n",
            "/fields/attributes.t/when/gt",
            "nan is not",
        ),
        (
            "  attributes.t: {value: 123456789012345678901234567890}\n",
            "/fields/attributes.t/value",
            "beyond 64 bits",
        ),
    ],
)
def test_a_number_the_database_cannot_store_is_refused_at_its_line(
    fields: str, where: str, message: str
) -> None:
    """A constant that is not finite, or an integer past 64 bits, would refuse every payload
    (or the stored document): it is a problem of the file, at its pointer and line."""
    (problem,) = problems_of(HEAD + "fields:\n  plate: plate\n" + fields)
    assert (problem.pointer, problem.extra["line"]) == (where, 7)
    assert message in problem.message, problem.message


def test_a_json_file_with_nan_or_an_overflowing_number_is_refused_at_their_pointers() -> None:
    text = (
        '{"name": "t", "direction": "inbound", "entity_type": "vehicle", "key": ["plate"],\n'
        ' "fields": {"plate": "plate",\n  "attributes.t": {"value": NaN},\n'
        '  "attributes.u": {"value": 1e400}}}\n'
    )
    assert located(problems_of(text)) == {
        ("/fields/attributes.t/value", 3, "type"),
        ("/fields/attributes.u/value", 4, "type"),
    }


def test_validate_refuses_an_integer_past_64_bits_as_the_upload_does(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(HEAD + "fields:\n  plate: plate\n  attributes.t: {value: 1" + "0" * 19 + "}\n")
    (problem,), _ = validate_file(path)
    assert (problem.pointer, problem.extra["line"]) == ("/fields/attributes.t/value", 7)


@pytest.mark.parametrize("form", ["010", "-010", "01", "0x1F", "0b101", "12:30", "1:30", "1_000"])
def test_a_yaml_11_number_form_must_be_quoted_or_written_plainly(form: str) -> None:
    """YAML 1.1 reads 010 as 8, 12:30 as 750, 0x1F as 31: a status code or a time would
    silently become another number, so the file says which it means."""
    for spec in (f"{{value: {form}}}", f"{{from: s, when: {{from: s, equals: {form}}}}}"):
        (problem,) = problems_of(HEAD + f"fields:\n  plate: plate\n  attributes.t: {spec}\n")
        assert problem.pointer.startswith("/fields/attributes.t/")
        assert problem.extra["line"] == 7
        assert f"quote it ('{form}')" in problem.message
    quoted = inbound(f"  attributes.t: {{value: '{form}'}}\n")
    assert quoted.apply({"plate": "ABC1D23"}).document["attributes"]["t"] == form


@pytest.mark.parametrize(
    "etype",
    [
        "entity.created",
        "entity.updated",
        "entity.deleted",
        "entity.anything",
        "vehicle.position.rejected",
        "vehicle.odometer.rebaselined",
    ],
)
def test_a_mapping_cannot_emit_an_event_type_the_gateway_records_itself(etype: str) -> None:
    """A mapping's `entity.deleted` would tell subscribers, flows and the fleet fold of a
    deletion that never happened: the gateway's own types are refused at upload."""
    for emit, at in (
        (f"[{etype}]", 0),
        (f"[vehicle.moved, {{type: {etype}, announce: every}}]", 1),
    ):
        (problem,) = problems_of(HEAD + f"emit: {emit}\nfields:\n  plate: plate\n")
        assert (problem.pointer, problem.keyword) == (f"/emit/{at}", "emit")
        assert problem.extra["line"] == 5
        assert "the gateway records itself" in problem.message
    partner = inbound("", head=HEAD + "emit: [vehicle.geofence.exited, vehicle.position]\n")
    assert partner.name == "t"


def test_a_mapping_emitting_one_event_type_twice_is_refused_naming_the_second() -> None:
    """`[vehicle.alert, {type: vehicle.alert, when: alarme}]` made one write store the event
    twice, and every subscription and flow on it ran twice (two pushes to a driver): one
    entry per type, its `when` saying when."""
    (problem,) = problems_of(
        HEAD + "emit: [vehicle.alert, {type: vehicle.alert, when: alarme}]\n"
        "fields:\n  plate: plate\n  attributes.alarme: alarme\n"
    )
    assert (problem.pointer, problem.keyword) == ("/emit/1", "emit")
    assert "vehicle.alert is emitted twice" in problem.message
    once = inbound("", head=HEAD + "emit: [vehicle.alert, vehicle.moved]\n")
    assert once.emit == ("vehicle.alert", "vehicle.moved")


def test_binary_and_empty_files() -> None:
    assert problems_of(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff")[0].keyword == "encoding"
    # A UTF-16 byte order mark is read as one (Notepad's "Unicode"); its odd tail is not text.
    assert problems_of(b"\xff\xfe\x00garbag")[0].keyword == "encoding"
    assert problems_of("")[0].message == "file is empty"


def test_yaml_tags_anchors_and_duplicates_are_refused() -> None:
    text = (
        "name: !!python/object:os.system x\ndirection: inbound\nentity_type: vehicle\n"
        "key: [plate]\nfields: &f\n  plate: p\n  plate: q\nevent_data: *f\n"
    )
    got = {(p.pointer, p.extra.get("line"), p.message.split(" ")[0]) for p in problems_of(text)}
    assert got == {
        ("/name", 1, "YAML"),
        ("/fields/plate", 7, "duplicate"),
        ("/event_data", 8, "anchors"),
    }


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    started = time.process_time()  # the CPU spent: a loaded machine does not stretch it
    problems = problems_of("\n".join(lines))
    assert time.process_time() - started < 1
    assert any("aliases" in p.message for p in problems)


def test_a_10_mb_file_is_refused_before_parsing() -> None:
    text = HEAD + "fields:\n" + "  plate: p\n" * 1_000_000
    started = time.process_time()  # the CPU spent: a loaded machine does not stretch it
    (problem,) = problems_of(text)
    assert time.process_time() - started < 0.5
    assert problem.keyword == "limit"
    assert "more than the limit of 262,144" in problem.message


def test_10000_fields_are_refused() -> None:
    fields = "".join(f"  attributes.f{i}: a\n" for i in range(10_000))
    started = time.process_time()  # the CPU spent: a loaded machine does not stretch it
    problems = problems_of(HEAD + "fields:\n  plate: p\n" + fields)
    assert time.process_time() - started < 5
    assert [(p.keyword, p.message) for p in problems] == [
        ("limit", f"more than {MAX_FIELDS} field specs")
    ]


def test_deeply_nested_files_are_refused() -> None:
    (problem,) = problems_of(HEAD + "fields:\n  plate: " + "[" * 5000 + "]" * 5000 + "\n")
    assert problem.keyword == "limit"
    (problem,) = problems_of('{"a": ' * 100 + "1" + "}" * 100)
    assert problem.keyword == "limit"


@pytest.mark.parametrize(
    "expression",
    [
        "(" * 200 + "a" + ")" * 200,
        "[" * 100 + "a" + "]" * 100,
        " | ".join(["a"] * 200),
        "a" * 1001,
    ],
)
def test_deeply_nested_or_long_expressions_are_refused(expression: str) -> None:
    (problem,) = problems_of(HEAD + f"fields:\n  plate: '{expression}'\n")
    assert (problem.pointer, problem.keyword) == ("/fields/plate", "limit")


def test_specs_nested_too_deeply_are_refused() -> None:
    spec = "x"
    for _ in range(12):
        spec = f"{{coalesce: [{spec}]}}"
    problems = problems_of(HEAD + f"fields:\n  plate: {spec}\n")
    assert any(p.keyword == "limit" and "nested" in p.message for p in problems)


def test_expression_that_would_explode_is_stopped_by_the_work_limit() -> None:
    doubling = " | ".join(["[@, @]"] * 20)
    mapping = inbound(f"  attributes.x: 'length({doubling} | [] | [] | [] | [])'\n")
    started = time.process_time()  # the CPU spent: a loaded machine does not stretch it
    (problem,) = payload_problems(mapping, {"plate": "A"})
    assert time.process_time() - started < 2
    assert (problem.keyword, problem.extra["target"]) == ("limit", "attributes.x")


def test_string_doubling_is_stopped() -> None:
    doubling = " | ".join(["join('', [@, @])"] * 30)
    mapping = inbound(f'  attributes.x: "v | {doubling}"\n')
    (problem,) = payload_problems(mapping, {"plate": "A", "v": "x" * 100})
    assert problem.keyword == "limit"


def test_large_arrays_are_bounded() -> None:
    big = {"plate": "A", "xs": [{"v": i} for i in range(200_000)]}
    mapping = inbound("  attributes.e: {each: xs, item: v}\n  attributes.n: 'xs[*].v'\n")
    started = time.process_time()  # the CPU spent: a loaded machine does not stretch it
    problems = payload_problems(mapping, big)
    assert time.process_time() - started < 2
    assert {(p.extra["target"], p.keyword) for p in problems} == {
        ("attributes.n", "limit"),
        ("attributes.e", "limit"),
    }
    batch = inbound("", head=HEAD + "items: xs\n")
    with pytest.raises(InvalidPayload) as caught:
        batch.items(big)
    assert caught.value.problems[0].keyword == "limit"
    assert f"{MAX_LIST_ITEMS:,}" in caught.value.problems[0].message


def test_nested_each_is_bounded_overall() -> None:
    payload = {"plate": "A", "xs": [{"ys": [{"zs": list(range(900))}] * 900}] * 900}
    spec = "{each: xs, fields: {a: {each: ys, fields: {b: {each: zs, item: '@'}}}}}"
    mapping = inbound(f"  attributes.deep: {spec}\n")
    started = time.process_time()  # the CPU spent: a loaded machine does not stretch it
    (problem,) = payload_problems(mapping, payload)
    assert time.process_time() - started < 2
    assert problem.keyword == "limit"


def test_problem_lists_are_bounded() -> None:
    fields = "".join(f"  attributes.f{i}: {{from: x, transforms: [nope{i}]}}\n" for i in range(400))
    with pytest.raises(InvalidPayload) as caught:
        load_mapping(HEAD + "fields:\n  plate: p\n" + fields)
    # The first hundred listed, the rest counted (`errors_omitted` in an answer).
    assert (len(caught.value.problems), caught.value.omitted) == (100, 300)
    assert "400 problems" in caught.value.detail


# -- helpers ---------------------------------------------------------------------------------------


def test_flatten_and_unflatten() -> None:
    document = {
        "plate": "A",
        "last_position": {"lat": 1, "speed_kmh": 2},
        "tags": [1],
        "e": {},
    }
    flat = flatten(document)
    assert flat == {
        "plate": "A",
        "last_position.lat": 1,
        "last_position.speed_kmh": 2,
        "tags": [1],
        "e": {},
    }
    assert unflatten(flat) == document
    with pytest.raises(ValueError):
        unflatten({"a": 1, "a.b": 2})


def test_validate_file_and_test_file(tmp_path: Path) -> None:
    good = tmp_path / "m.yaml"
    good.write_text(
        HEAD + "fields:\n  plate: {from: id, transforms: [upper]}\n  "
        "last_position.lat: {from: lat, transforms: [number]}\n"
    )
    sample = tmp_path / "s.txt"
    sample.write_text("id=abc1d23&lat=-23.5")
    assert validate_file(good) == ([], ())
    assert test_file(good, sample)["results"] == [
        {
            "index": 0,
            "document": {"plate": "ABC1D23", "last_position": {"lat": -23.5}},
            "key": {"plate": "ABC1D23"},
            "events": [],
            "event_data": {},
        }
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [")
    (problem,), _ = validate_file(bad)
    assert problem.extra["file"] == str(bad)
    assert validate_file(tmp_path / "missing.yaml")[0][0].keyword == "file"


def test_read_sample_reads_json_and_query_strings() -> None:
    assert read_sample('{"a": 1}') == {"a": 1}
    assert read_sample("id=1&lat=-23.5&id=2\n") == {"id": "2", "lat": "-23.5"}
    assert read_sample('\n <a n="1"><b>2</b></a>') == {"a": {"@n": "1", "b": "2"}}


# -- the schema and the docs agree with the compiler -----------------------------------------------

VALIDATOR = jsonschema_rs.validator_for(SCHEMA)
REGISTRY = SchemaRegistry.load(default_schema_dir())
# The entity schemas as an upload checks a mapping's targets with (no tenant: no custom kind).
CATALOG = TenantCatalog(REGISTRY, {})


def _doc_blocks() -> list[tuple[str, str, dict[str, str]]]:
    """(info, yaml text, {"sample": ..., "result": ...}) for each yaml block in the docs."""
    blocks = re.findall(r"```(\w+)(?: (\w+))?\n(.*?)```", DOCS.read_text(), re.S)
    found: list[tuple[str, str, dict[str, str]]] = []
    for language, info, body in blocks:
        if language == "yaml":
            found.append((info, body, {}))
        elif language in ("json", "xml") and info in ("params", "sample", "result") and found:
            found[-1][2][info] = body
    return found


DOC_BLOCKS = _doc_blocks()


def test_the_docs_have_examples() -> None:
    assert len(DOC_BLOCKS) >= 8
    assert sum(1 for _, _, extra in DOC_BLOCKS if "result" in extra) >= 6


@pytest.mark.parametrize(("info", "text", "extra"), DOC_BLOCKS)
def test_docs_examples(info: str, text: str, extra: dict[str, str]) -> None:
    if info == "invalid":
        problems = problems_of(text)
        assert {p.pointer for p in problems} == {
            "/fields/plates/transforms/0",
            "/fields/last_position.lat",
            "/fields/attributes.label/template",
            "/key/0",
        }
        return
    # Compiled as an upload compiles it, against the entity schemas (`gateway mapping
    # validate` the same): a target that is not a field of its type or kind is refused.
    mapping = load_mapping(text, catalog=CATALOG)
    assert VALIDATOR.is_valid(yaml.safe_load(text))
    if "params" in extra:
        mapping = mapping.bind(json.loads(extra["params"]), strict=True)
    if "sample" not in extra:
        return
    sample = read_sample(extra["sample"])  # JSON, or XML read as an XML trigger reads it
    expected = json.loads(extra["result"])
    secrets = {name: f"<secret:{name}>" for name in mapping.secrets}
    if "probe" in expected:
        assert mapping.probe(sample) == expected["probe"]
        return
    if mapping.direction == "inbound":
        assert mapping.acknowledgement == expected.pop("answer", None)
        (item, *_) = mapping.items(sample)
        mapped = mapping.apply(item, secrets=secrets)
        got = {"document": mapped.document, "key": mapped.key, "events": list(mapped.event_types)}
        if mapping.has_occurrence_id:  # as `gateway mapping test` shows it
            got["occurrence_id"] = mapped.occurrence
        if mapped.also:
            got["also"] = [
                {
                    "entity_type": t.entity_type,
                    "document": t.document,
                    "key": t.key,
                    "events": list(t.event_types),
                }
                for t in mapped.also
            ]
        _assert_storable(mapping, got)
    else:
        request = mapping.build_request(sample, secrets=secrets)
        got = {
            "path_params": request.path_params,
            "query": request.query,
            "headers": request.headers,
            "body": request.body,
        }
    assert got == expected


def _assert_storable(mapping: CompiledMapping, shown: dict[str, Any]) -> None:
    """A shown result that creates an entity (its key is the type's natural key: the dry run
    on a tenant without it shows a create) is one the entity's schema takes: the docs' Lists
    example showed a checklist missing the fields its kind requires."""
    if mapping.target != "entities" or mapping.entity_type is None or not mapping.create:
        return
    if not is_natural_key(mapping.entity_type, shown["key"]):
        return  # a lookup: the entity exists, the document merges into it
    problems = REGISTRY.validate(mapping.entity_type, shown["document"])
    assert [(p.pointer, p.message) for p in problems] == [], mapping.name


def test_the_schema_lists_every_unit() -> None:
    assert SCHEMA["$defs"]["unit"]["enum"] == list(UNITS)


def test_shipped_mappings_follow_the_schema() -> None:
    for path in sorted((ROOT / "mappings").glob("*.yaml")):
        errors = [e.message for e in VALIDATOR.iter_errors(yaml.safe_load(path.read_text()))]
        assert errors == [], path.name


@pytest.mark.parametrize(
    "document",
    [
        {"name": "x", "direction": "inbound"},
        {"name": "x", "direction": "outbound"},
        {
            "name": "x",
            "direction": "inbound",
            "entity_type": "vehicle",
            "key": ["p"],
            "fields": {"p": {"from": "a", "value": 1}},
        },
        {
            "name": "x",
            "direction": "inbound",
            "entity_type": "vehicle",
            "key": ["p"],
            "fields": {"p": {"from": "a", "transforms": ["nope"]}},
        },
        {
            "name": "x",
            "direction": "inbound",
            "entity_type": "vehicle",
            "key": ["p"],
            "fields": {"p": {"each": "a"}},
        },
        {
            "name": "x",
            "direction": "inbound",
            "entity_type": "vehicle",
            "key": ["p"],
            "fields": {"p": 5},
        },
        {
            "name": "x",
            "direction": "inbound",
            "entity_type": "other",
            "key": ["p"],
            "fields": {"p": "a"},
        },
        {"name": "x", "direction": "outbound", "body": {"a": "b"}, "fields": {"a": "b"}},
        *(
            {
                "name": "x",
                "direction": "inbound",
                "entity_type": "vehicle",
                "key": ["plate"],
                "fields": {"plate": "p", "t": {"from": "t", "transforms": [{"datetime": arg}]}},
            }
            for arg in ({"parse": []}, {"parse": ["iso8601"] * 9}, {"parse": ["iso8601", 5]})
        ),
        {"name": "x", "direction": "outbound", "body": {"bad key": "b"}},
        {
            "name": "x",
            "direction": "inbound",
            "entity_type": "vehicle",
            "key": {"first_of": []},
            "fields": {"plate": "p"},
        },
        {
            "name": "x",
            "direction": "inbound",
            "entity_type": "vehicle",
            "key": {"first_of": ["plate"], "also": ["p"]},
            "fields": {"plate": "p"},
        },
    ],
)
def test_schema_and_compiler_reject_the_same_documents(document: dict[str, Any]) -> None:
    assert not VALIDATOR.is_valid(document)
    problems_of(json.dumps(document))


# -- also and only_forward ------------------------------------------------------------------------

BROKEN_ALSO = """\
name: broken-also
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {main: x}
  odo: {from: a, only_forward: {by: nope}}
  items: {each: x, fields: {a: {from: b, only_forward: true}}}
also:
  - entity_type: vehicl
    key: [plate]
    fields:
      plat: {main: zzz}
  - entity_type: driver
    key: cpf
    fields:
      cpf: {from: c, transforms: [upcase]}
    emit: [Bad]
    extra: 1
  - entity_type: other
    key: [key]
    fields: {key: k, status: {from: s, only_forward: sometimes}}
"""


def test_also_and_only_forward_problems_are_listed_at_their_line() -> None:
    assert located(problems_of(BROKEN_ALSO)) == {
        ("/fields/plate/main", 6, "main"),
        ("/fields/odo/only_forward/by", 7, "only_forward"),
        ("/fields/items/fields/a/only_forward", 8, "only_forward"),
        ("/also/0/entity_type", 10, "enum"),
        ("/also/0/fields/plat/main", 13, "main"),
        ("/also/0/key/0", 11, "key"),
        ("/also/1/extra", 19, "unknown"),
        ("/also/1/fields/cpf/transforms/0", 17, "transform"),
        ("/also/1/emit/0", 18, "emit"),
        ("/also/2", 20, "required"),  # other needs a kind
        ("/also/2/fields/status/only_forward", 22, "only_forward"),
    }


def test_also_targets_map_the_same_payload_and_read_the_main_document() -> None:
    mapping = load_mapping(
        HEAD
        + "fields:\n  plate: {from: p, transforms: [upper]}\n  attributes.tracker_id: t\n"
        + "also:\n"
        + "  - entity_type: other\n    kind: fine\n    key: [key]\n    when: ait\n"
        + "    emit: [{type: fine.seen, when: ait}]\n"
        + "    fields:\n      key: numero\n      plate: {main: plate}\n"
        + "      tracker: {main: attributes}\n"
    )
    mapped = mapping.apply({"p": "abc1d23", "t": 7, "ait": "x", "numero": "A1"})
    assert mapping.also_entity_types == ("other",)
    [fine] = mapped.also
    assert fine.entity_type == "other" and fine.create is True
    assert fine.document == {
        "kind": "fine",
        "key": "A1",
        "plate": "ABC1D23",
        "tracker": {"tracker_id": 7},
    }
    assert (fine.key, fine.event_types) == ({"key": "A1"}, ("fine.seen",))
    assert mapping.apply({"p": "abc1d23"}).also == ()  # `when` does not hold: no fine
    problems = payload_problems(mapping, {"p": "abc1d23", "ait": "x"})  # no numero
    assert [(p.extra["target"], p.keyword) for p in problems] == [("also.0.key", "key")]


def test_only_forward_guards_follow_the_payload_and_the_params() -> None:
    text = (
        HEAD
        + "params:\n  authoritative: {default: false}\n"
        + "fields:\n  plate: plate\n"
        + "  odometer_km: {from: km, only_forward: {unless: {param: authoritative}}}\n"
        + "  attributes.hours: {from: h, only_forward: {by: attributes.at, unless: fix}}\n"
        + "  attributes.at: at\n"
    )
    mapping = load_mapping(text)
    assert mapping.apply({"plate": "A"}).forward == (
        ("odometer_km", "odometer_km"),
        ("attributes.hours", "attributes.at"),
    )
    assert mapping.apply({"plate": "A", "fix": True}).forward == (("odometer_km", "odometer_km"),)
    erp = mapping.bind({"authoritative": True})
    assert erp.apply({"plate": "A"}).forward == (("attributes.hours", "attributes.at"),)
    # which guards an `unless` lifted: the write says its source is authoritative for them
    assert mapping.apply({"plate": "A"}).lifted == ()
    assert mapping.apply({"plate": "A", "fix": True}).lifted == ("attributes.hours",)
    assert erp.apply({"plate": "A"}).lifted == ("odometer_km",)


# -- conditions on params, combined ---------------------------------------------------------------

PARAM_CONDITIONS = (
    HEAD
    + "params:\n  meter: {enum: [odometer, hours]}\n"
    + "fields:\n  plate: plate\n"
    + "  odometer_km:\n"
    + "    when: {all: ['void != `true`', {param: meter, equals: odometer}]}\n"
    + "    then: value\n"
    + "  attributes.engine_hours:\n"
    + "    when: {any: [{not: {param: meter, not_equals: hours}}, {from: kind, equals: h}]}\n"
    + "    then: value\n"
)


def test_conditions_test_params_and_combine_with_the_payload() -> None:
    mapping = load_mapping(PARAM_CONDITIONS)
    odometer, hours = mapping.bind({"meter": "odometer"}), mapping.bind({"meter": "hours"})
    reading = {"plate": "ABC1D23", "value": 7, "void": False}
    assert odometer.apply(reading).document == {"plate": "ABC1D23", "odometer_km": 7}
    assert hours.apply(reading).document == {"plate": "ABC1D23", "attributes": {"engine_hours": 7}}
    assert odometer.apply({**reading, "void": True}).document == {"plate": "ABC1D23"}
    both = odometer.apply({**reading, "kind": "h"}).document  # `any`: the payload's test holds
    assert both == {"plate": "ABC1D23", "odometer_km": 7, "attributes": {"engine_hours": 7}}
    # The param is required and unset: the fields whose condition reads it fail, named.
    problems = payload_problems(mapping, reading)
    assert {(p.extra["target"], p.keyword) for p in problems} == {
        ("odometer_km", "param"),
        ("attributes.engine_hours", "param"),
    }


@pytest.mark.parametrize(
    ("when", "where", "keyword"),
    [
        ("{all: []}", "/fields/out/when/all", "type"),
        ("{any: [x, {from: y}]}", "/fields/out/when/any/1", "condition"),
        ("{not: {param: nope, equals: 1}}", "/fields/out/when/not/param", "param"),
        ("{param: p, from: x, equals: 1}", "/fields/out/when", "condition"),
        ("{all: [x], any: [y]}", "/fields/out/when", "condition"),
    ],
)
def test_bad_combined_and_param_conditions_are_located(when: str, where: str, keyword: str) -> None:
    text = HEAD + "params:\n  p: {default: 1}\nfields:\n  plate: plate\n"
    text += f"  out: {{from: x, when: {when}}}\n"
    assert (where, keyword) in {(p.pointer, p.keyword) for p in problems_of(text)}


def test_a_comparison_reads_its_value_through_transforms() -> None:
    """`{from, transforms, <operator>}`: the value read is compared, not its text (an instant
    at midnight UTC in any spelling); a value the transforms refuse is the field's problem."""
    text = HEAD + "fields:\n  plate: plate\n  attributes.midnight:\n"
    text += "    when:\n      from: t\n"
    text += "      transforms: [{datetime: {parse: iso8601, format: '%H:%M:%S.%f'}}]\n"
    text += "      equals: '00:00:00.000000'\n"
    text += "    then: {value: true}\n    else: {value: false}\n"
    mapping = load_mapping(text)
    for sent, midnight in (
        ("2026-12-18T00:00:00.000+00:00", True),
        ("2026-12-18T00:00Z", True),
        ("2026-12-18T00:00:00+0000", True),
        ("2026-12-17T21:00:00-03:00", True),
        ("2026-12-18T00:00:00.001Z", False),
        ("2026-12-18T00:00:00-03:00", False),
    ):
        document = mapping.apply({"plate": "ABC1D23", "t": sent}).document
        assert document["attributes"] == {"midnight": midnight}, sent
    [problem] = payload_problems(mapping, {"plate": "ABC1D23", "t": "18/12/2026"})
    assert (problem.pointer, problem.keyword) == ("/t", "datetime")
    assert problem.extra["target"] == "attributes.midnight"


@pytest.mark.parametrize(
    ("when", "where", "keyword"),
    [
        ("{from: x, transforms: [nope], equals: 1}", "/fields/out/when/transforms", "transform"),
        ("{param: p, transforms: [trim], equals: 1}", "/fields/out/when", "condition"),
        ("{from: x, transforms: [trim]}", "/fields/out/when", "condition"),
    ],
)
def test_bad_transforms_in_a_comparison_are_located(when: str, where: str, keyword: str) -> None:
    text = HEAD + "params:\n  p: {default: 1}\nfields:\n  plate: plate\n"
    text += f"  out: {{from: x, when: {when}}}\n"
    found = {(p.pointer, p.keyword) for p in problems_of(text)}
    assert any(p.startswith(where) and k == keyword for p, k in found), found


# -- items inside items ---------------------------------------------------------------------------

NESTED = (
    "name: n\ndirection: inbound\ntarget: positions\n"
    "items: {from: data, each: gps, as: point}\n"
    "fields:\n  tracker_id: id\n  time: point.t\n  lat: point.lat\n  lon: point.lon\n"
)


def test_items_inside_each_element_keep_their_elements_fields() -> None:
    mapping = load_mapping(NESTED)
    page = {
        "data": [
            {"id": "a", "point": "hidden", "gps": [{"t": 1, "lat": 2, "lon": 3}, {"t": 4}]},
            {"id": "b", "gps": []},
            {"id": "c"},
            {"id": "d", "gps": {"t": 9}},  # one element, not a list
            None,
        ]
    }
    items = mapping.items(page)
    assert [(i["id"], i["point"]["t"]) for i in items] == [("a", 1), ("a", 4), ("d", 9)]
    assert mapping.apply(items[0]).document == {"tracker_id": "a", "time": 1, "lat": 2, "lon": 3}
    with pytest.raises(InvalidPayload) as caught:
        mapping.items({"data": ["not an object"]})
    assert caught.value.problems[0].message == "element 0 of items' from is not an object"
    many = {"data": [{"id": i, "gps": list(range(600))} for i in range(2)]}
    with pytest.raises(InvalidPayload) as caught:
        mapping.items(many)
    assert caught.value.problems[0].keyword == "limit"


@pytest.mark.parametrize(
    ("items", "where", "keyword"),
    [
        ("{from: data, each: gps}", "/items", "type"),
        ("{from: data, each: gps, as: 'a b'}", "/items/as", "pattern"),
        ("{from: data, each: 'gps[', as: point}", "/items/each", "expression"),
        ("{from: 3, each: gps, as: point}", "/items/from", "type"),
    ],
)
def test_bad_nested_items_are_located(items: str, where: str, keyword: str) -> None:
    text = NESTED.replace("{from: data, each: gps, as: point}", items)
    assert (where, keyword) in {(p.pointer, p.keyword) for p in problems_of(text)}


def test_items_inside_items_stop_at_the_batch_limit_without_building_every_item() -> None:
    """One outer element with far more inner elements than the batch limit: refused without
    copying the outer element once per inner element (a 1 MiB body could list 100,000s)."""
    mapping = load_mapping(NESTED)
    outer = {f"field{i}": i for i in range(50)}
    page = {"data": [{**outer, "id": "a", "gps": [{"t": 1}] * 20_000}]}
    tracemalloc.start()
    try:
        with pytest.raises(InvalidPayload) as caught:
            mapping.items(page)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.problems[0].keyword == "limit"
    assert peak < 2_000_000, f"{peak:,} bytes built for a page refused"


def test_items_inside_items_refuse_a_page_whose_items_would_copy_too_many_fields() -> None:
    """Each item copies its outer element's fields: 1,000 items of an outer element with
    100,000 fields (a body under 1 MiB) would be 100,000,000 of them, gigabytes. The copies
    are bounded (MAX_NESTED_ITEM_FIELDS) and a page over it is a `limit` problem, refused
    before any is made."""
    mapping = load_mapping(NESTED)
    wide = {f"field{i}": i for i in range(MAX_NESTED_ITEM_FIELDS // MAX_LIST_ITEMS + 1)}
    page = {"data": [{**wide, "id": "a", "gps": [{"t": 1}] * MAX_LIST_ITEMS}]}
    with pytest.raises(InvalidPayload) as caught:
        mapping.items(page)
    problem = caught.value.problems[0]
    assert problem.keyword == "limit" and "fields" in problem.message
    # Within the bound, the same page with fewer fields per outer element passes.
    narrow = {"data": [{"id": "a", "gps": [{"t": 1}] * MAX_LIST_ITEMS}]}
    assert len(mapping.items(narrow)) == MAX_LIST_ITEMS


def test_items_inside_items_share_one_work_budget_across_the_outer_elements() -> None:
    """`each` is evaluated once per outer element: each within the work limit, 10,000 outer
    elements in a 1 MiB body would be minutes of one process's CPU for a page that gives no
    item. The walk is one evaluation, like an `items` expression: over the limit, a `limit`
    problem."""
    burn = "[@,@,@,@,@,@,@,@,@,@][] | [@,@,@,@,@,@,@,@,@,@][] | [@,@,@,@,@,@,@,@,@,@][]"
    each = f"gps | {burn} | [?t == `-1`]"  # 60,000 steps or so, and nothing left
    mapping = load_mapping(NESTED.replace("each: gps", f"each: '{each}'"))
    one = {"id": "a", "gps": [{"t": 1}] * 10}
    assert mapping.items({"data": [one]}) == []  # alone, within the limit
    with pytest.raises(InvalidPayload) as caught:
        mapping.items({"data": [one] * 3})
    assert caught.value.problems[0].keyword == "limit"


@pytest.mark.parametrize("parse", ["unix", "auto"])
def test_milliseconds_read_as_seconds_are_a_problem_that_names_unix_ms(parse: str) -> None:
    """Teltonika, AWS IoT and Samsara 1.0 count epoch milliseconds: read as seconds, they are
    a year past 9999, and the problem says which parser reads them."""
    mapping = inbound(
        "  last_position.time:\n"
        f"    {{from: position.t, transforms: [{{datetime: {{parse: {parse}}}}}]}}\n"
    )
    (problem,) = payload_problems(mapping, {"plate": "A", "position": {"t": 1795685112000}})
    assert problem.keyword == "datetime"
    assert "milliseconds? parse: unix_ms" in problem.message, problem.message


@pytest.mark.parametrize(
    ("spec", "payload", "shown"),
    [
        ('"to_number(big)"', {"big": "1e999"}, "inf"),
        ('"to_number(big)"', {"big": "-Infinity"}, "-inf"),
        ('"to_number(big)"', {"big": "nan"}, "nan"),
        ('"sum(xs)"', {"xs": [1.5e308, 1.5e308]}, "inf"),
        ('"avg(xs)"', {"xs": [1.5e308, 1.5e308]}, "inf"),
        ("{from: x, transforms: [{scale: 1.0e+300}]}", {"x": 1e300}, "inf"),
        ("{from: x, transforms: [{convert: {from: mi, to: ft}}, {round: 1}]}", {"x": 1e306}, "inf"),
    ],
)
def test_a_mapped_value_that_is_not_a_finite_number_is_a_cast_problem(
    spec: str, payload: dict[str, Any], shown: str
) -> None:
    """JSON has no Infinity or NaN: an answer would show null, the database store `inf`. A
    value overflowing to them is refused like text that is no number."""
    mapping = inbound(f"  attributes.total: {spec}\n")
    (problem,) = payload_problems(mapping, {"plate": "A", **payload})
    assert problem.keyword == "cast"
    assert problem.message == f"{shown} is not a finite number"
    assert problem.extra["target"] == "attributes.total"
    # named with its source, a function's too (docs: "naming its source")
    assert problem.extra["source"] and problem.extra["source"] in spec


@pytest.mark.parametrize(
    "spec",
    [
        '"[to_number(big)]"',
        '"{total: to_number(big)}"',
        "{each: xs, item: 'to_number(@)'}",
        "{object: {total: 'to_number(big)'}}",
    ],
)
def test_a_value_not_finite_inside_a_list_or_an_object_is_a_cast_problem(spec: str) -> None:
    mapping = inbound(f"  attributes.total: {spec}\n")
    payload = {"plate": "A", "big": "1e999", "xs": ["1", "1e999"]}
    (problem,) = payload_problems(mapping, payload)
    assert problem.keyword == "cast"
    assert problem.message.endswith("inf is not a finite number")


def test_an_integer_past_64_bits_from_a_function_names_its_source() -> None:
    mapping = inbound("  attributes.w: abs(b)\n")
    (problem,) = payload_problems(mapping, {"plate": "A", "b": -(2**63)})
    assert (problem.keyword, problem.extra["source"]) == ("cast", "abs(b)")


def test_a_large_finite_number_is_mapped() -> None:
    assert apply_field('"sum(xs)"', {"xs": [1e308, 1e307]}) == 1.1e308


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:12:03.4560000", 723.456),  # Geotab's Trip drivingDuration (.NET TimeSpan)
        ("1.02:03:04", 93_784),  # with days
        ("1:02:03:04", 93_784),  # TimeSpan's general form
        ("-00:00:05", -5),
        ("PT12M3.456S", 723.456),  # ISO 8601
        ("P1DT2H", 93_600),
        ("pt0,5s", 0.5),
        ("P2W", 1_209_600),
        ("723.5", 723.5),  # seconds already
        (90, 90),
    ],
)
def test_duration_reads_timespans_and_iso_8601_durations_as_seconds(
    text: Any, seconds: float
) -> None:
    assert apply_field("{from: d, transforms: [duration]}", {"d": text}) == seconds


def test_duration_in_seconds_converts_to_other_duration_units() -> None:
    spec = "{from: d, transforms: [duration, {convert: {from: s, to: min}}]}"
    assert apply_field(spec, {"d": "00:12:03.4560000"}) == 12.0576
    assert apply_field(spec, {"d": " "}) is None  # blank is no value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("P1M", 'cannot read "P1M" as a duration: years and months have no fixed length'),
        ("P1Y2D", 'cannot read "P1Y2D" as a duration: years and months have no fixed length'),
        ("PT", 'cannot read "PT" as a duration (seconds, a TimeSpan such as 1.02:03:04.5'),
        ("1.25:00:00", 'cannot read "1.25:00:00" as a duration'),
        ("00:60:00", 'cannot read "00:60:00" as a duration'),
        ("twelve minutes", 'cannot read "twelve minutes" as a duration'),
    ],
)
def test_duration_refuses_text_that_is_no_fixed_duration(text: str, message: str) -> None:
    mapping = inbound("  attributes.driving_s: {from: d, transforms: [duration]}\n")
    (problem,) = payload_problems(mapping, {"plate": "A", "d": text})
    assert problem.keyword == "cast"
    assert problem.message.startswith(message)
    assert problem.pointer == "/d"


@pytest.mark.parametrize(
    ("kind", "text", "degrees"),
    [
        ("latitude", "51° 20' 39.0\" N", 51.344166666666666),  # Webfleet
        ("latitude", "23°33'01.2\"S", -23.550333333333334),
        ("latitude", "23º33'01.2\"S", -23.550333333333334),  # º, as keyboards write it
        ("latitude", "N 51 20 39", 51.344166666666666),
        ("longitude", "46 38.5 W", -46.641666666666666),  # degrees and decimal minutes
        ("longitude", "046°38'30\"W", -46.641666666666666),
        ("latitude", "2333.0200,S", -23.550333333333334),  # NMEA ddmm.mmmm
        ("longitude", "04638.5000,W", -46.641666666666666),  # NMEA dddmm.mmmm
        ("latitude", "-23.5505", -23.5505),
        ("latitude", "23.5505 S", -23.5505),
        ("latitude", -23.5505, -23.5505),
        ("longitude", "180", 180),
        # as Brazilian systems write them: West O (oeste), East L (leste), a decimal comma
        ("longitude", "46°39'20,8\"O", -46.65577777777778),
        ("longitude", "46 38,5 L", 46.641666666666666),
        ("latitude", "-23,5505", -23.5505),
        ("longitude", "04638.5000,O", -46.641666666666666),  # NMEA, its comma before O
    ],
)
def test_coordinate_reads_degrees_minutes_seconds_and_nmea_as_signed_degrees(
    kind: str, text: Any, degrees: float
) -> None:
    spec = f"{{from: c, transforms: [{{coordinate: {kind}}}]}}"
    assert apply_field(spec, {"c": text}) == degrees


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("latitude", "91", 'latitude "91" is out of range (-90 to 90)'),
        ("latitude", "90°0'1\"N", 'latitude "90°0\'1\\"N" is out of range (-90 to 90)'),
        ("latitude", 95.0, "latitude 95.0 is out of range (-90 to 90)"),
        ("latitude", "46 38.5 W", '"46 38.5 W" is not a latitude: W is no hemisphere of one'),
        ("latitude", "-23 33 S", 'cannot read "-23 33 S" as a latitude'),  # which way?
        ("latitude", "23 60 S", 'cannot read "23 60 S" as a latitude'),
        ("latitude", "23.5° 30'", 'cannot read "23.5° 30\'" as a latitude'),
        ("longitude", "1234", 'longitude "1234" is out of range (-180 to 180)'),
        ("longitude", "nan", 'cannot read "nan" as a longitude'),
        ("longitude", "Rua Augusta", 'cannot read "Rua Augusta" as a longitude'),
    ],
)
def test_coordinate_refuses_junk_and_out_of_range_values(
    kind: str, text: Any, message: str
) -> None:
    mapping = inbound(f"  attributes.c: {{from: c, transforms: [{{coordinate: {kind}}}]}}\n")
    (problem,) = payload_problems(mapping, {"plate": "A", "c": text})
    assert problem.keyword == "cast"
    assert problem.message.startswith(message)
    assert problem.pointer == "/c"


def test_coordinate_takes_latitude_or_longitude() -> None:
    text = HEAD + "fields:\n  plate: plate\n  x: {from: c, transforms: [{coordinate: north}]}\n"
    (problem,) = problems_of(text)
    assert (problem.pointer, problem.keyword) == ("/fields/x/transforms/0/coordinate", "transform")
    assert problem.message == "coordinate takes latitude or longitude"


@pytest.mark.parametrize(
    ("how", "text"),
    [
        ("%Y%m%d", "2026128"),
        ("%d%m%Y", "1812026"),
        ("%d%m%y", "11226"),  # would be 2026-02-11
        ("%Y%m%dT%H%M%S%z", "20261218T93000-0300"),  # would be 12:30 read as 09:30
        ("%Y%m%d%H%M%S%z", "2026121893000+0000"),
        ("%Y%m%d%H%M%S%f", "2026121809300012"),
        ("%Y%j", "202632"),
    ],
)
def test_a_compact_date_with_a_digit_missing_is_a_datetime_problem(how: str, text: str) -> None:
    """strptime takes a one-digit day or month anywhere: "2026128" would be 2026-12-08; a
    compact run reads each digit field at its full width, whatever else the format has."""
    mapping = inbound(
        f"  attributes.d: {{from: d, transforms: [{{datetime: {{parse: '{how}'}}}}]}}\n"
    )
    (problem,) = payload_problems(mapping, {"plate": "A", "d": text})
    assert problem.keyword == "datetime" and problem.pointer == "/d"


_POSITION = {"plate": "ABC1D23", "last_position": {"lat": -23.5, "lon": -46.6, "heading": 0}}


@pytest.mark.parametrize(
    ("expression", "value", "warned"),
    [
        ("entity.last_position.latitude", -23.5, ["latitude"]),
        (
            "entity.last_position.{lat: latitude, lng: longitude}",
            {"lat": -23.5, "lng": -46.6},
            ["latitude", "longitude"],
        ),
        ("entity.last_position.[latitude, longitude]", [-23.5, -46.6], ["latitude", "longitude"]),
        ("entity.last_position | latitude", -23.5, ["latitude"]),
        ("entity.last_position | @.course", 0, ["course"]),
        ("entity | last_position | to_string(longitude)", "-46.6", ["longitude"]),
        ("entity.last_position.[latitude][0]", -23.5, ["latitude"]),
        ("entity.last_position.lat", -23.5, []),
        ("[entity][*].last_position.latitude", [-23.5], ["latitude"]),
        ("entity.latitude", None, []),  # not the member's: no old name (a null is left out)
    ],
)
def test_an_outbound_mapping_reads_old_position_names_in_every_form(
    expression: str, value: Any, warned: list[str]
) -> None:
    """A chain, a pipe, a multiselect, a function's argument: each read of an old name of
    `last_position` reads the new member, and warns once."""
    source = f'name: x\ndirection: outbound\nentity_type: vehicle\nbody:\n  pos: "{expression}"\n'
    mapping = load_mapping(source)
    assert mapping.build_request({"entity": _POSITION}).body.get("pos") == value
    assert [w.split("'")[1] for w in mapping.deprecated] == [
        f"last_position.{old}" for old in warned
    ], mapping.deprecated


def test_an_outbound_mappings_response_reads_the_partners_answer_as_sent() -> None:
    """The `response` section reads the partner's answer: its `last_position.latitude` is the
    partner's own field, neither read as `lat` nor warned about; the request still is."""
    source = (
        "name: x\ndirection: outbound\nentity_type: vehicle\n"
        "body:\n  lat: entity.last_position.latitude\n"
        "response:\n  attributes.partner_lat: {from: body.last_position.latitude}\n"
    )
    mapping = load_mapping(source)
    answer = {"body": {"last_position": {"latitude": -10.0, "lat": "S"}}}
    assert mapping.map_response(answer) == {"attributes": {"partner_lat": -10.0}}
    assert mapping.build_request({"entity": _POSITION}).body == {"lat": -23.5}
    assert [w.split(":")[0] for w in mapping.deprecated] == ["/body/lat"], mapping.deprecated


def test_from_json_ignores_a_byte_order_mark_before_the_json_as_a_body_does() -> None:
    """A Windows sender's field holding JSON read from a file with its BOM (a Jimi/Concox
    form push's `data_list`): the whole push was refused."""
    assert apply_field("from_json(y).v", {"y": '\ufeff{"v": 2}'}) == 2


def test_from_json_refuses_json_text_naming_a_member_twice_as_a_body_is() -> None:
    problems = payload_problems(
        inbound("  out: from_json(y).v\n"), {"plate": "ABC1D23", "y": '{"v": 1, "v": 2}'}
    )
    assert [p.message for p in problems] == [
        'the text is not JSON: the member "v" is given twice in one object (which one counts '
        "would be a guess)"
    ], problems


def test_a_date_format_with_an_accented_word_reads_the_text_in_either_unicode_form() -> None:
    """DETRAN writes "18/11/2026 às 13:45"; sent from a Mac, "às" is "a" + U+0300."""
    spec = '{from: t, transforms: [{datetime: {parse: "%d/%m/%Y às %H:%M", input_tz: UTC}}]}'
    composed = "18/11/2026 às 13:45"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert apply_field(spec, {"t": composed}) == apply_field(spec, {"t": decomposed})
    assert apply_field(spec, {"t": decomposed}) == "2026-11-18T13:45:00Z"
