"""Mapping parameters: declared in the file, set per trigger, bound when the mapping compiles."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import FieldProblem, InvalidPayload
from gateway.mapping import CompiledMapping, load_mapping

UNITS = """
name: units
direction: inbound
entity_type: vehicle
key: [plate]
params:
  distance_unit: {unit: distance, description: the partner account's odometer unit}
  speed_unit: {unit: speed, default: km/h}
  places: {enum: [0, 1, 2], default: 1}
  region: {}
fields:
  plate: plate
  odometer_km:
    from: odometer
    transforms: [{convert: {from: {param: distance_unit}, to: km}}, {round: {param: places}}]
  last_position.speed_kmh:
    from: speed
    transforms: {convert: {from: {param: speed_unit}, to: km/h}}
  attributes.region: {param: region}
"""
PAYLOAD = {"plate": "ABC1D23", "odometer": 100, "speed": 10}


def load(text: str = UNITS) -> CompiledMapping:
    return load_mapping(text)


def problems_of(text: str) -> set[tuple[str, str]]:
    with pytest.raises(InvalidPayload) as caught:
        load_mapping(text)
    return {(p.pointer, p.keyword) for p in caught.value.problems}


def bind_problems(mapping: CompiledMapping, values: dict[str, Any]) -> list[FieldProblem]:
    with pytest.raises(InvalidPayload) as caught:
        mapping.bind(values, strict=True)
    return caught.value.problems


def test_bound_params_change_what_the_mapping_computes() -> None:
    mapping = load().bind({"distance_unit": "mi", "speed_unit": "mph", "region": "sul"})
    document = mapping.apply(PAYLOAD).document
    assert document["odometer_km"] == 160.9  # 100 mi
    assert document["last_position"] == {"speed_kmh": 16.09344}  # 10 mph
    assert document["attributes"] == {"region": "sul"}
    km = load().bind({"distance_unit": "km", "places": 0, "region": "sul"})
    assert km.apply({**PAYLOAD, "odometer": 100.6}).document["odometer_km"] == 101


def test_a_set_of_values_is_compiled_once() -> None:
    mapping = load()
    first = mapping.bind({"distance_unit": "mi", "region": "x"})
    assert mapping.bind({"region": "x", "distance_unit": "mi"}) is first
    assert mapping.bind({"distance_unit": "m", "region": "x"}) is not first
    assert mapping.bind({}) is mapping
    assert mapping.bind({"not_declared": 1}) is mapping  # ignored unless strict


def test_unset_required_params_fail_the_fields_that_read_them() -> None:
    mapping = load()
    with pytest.raises(InvalidPayload) as caught:
        mapping.apply(PAYLOAD)
    problems = {p.extra["target"]: (p.keyword, p.message) for p in caught.value.problems}
    assert set(problems) == {"odometer_km", "attributes.region"}
    assert problems["odometer_km"] == (
        "param",
        "param 'distance_unit' is not set: set it on the trigger's params",
    )
    # The defaults apply without binding anything.
    assert mapping.bind({"distance_unit": "km", "region": "x"}).apply(PAYLOAD).document[
        "last_position"
    ] == {"speed_kmh": 10.0}


def test_values_are_checked_against_their_declarations() -> None:
    mapping = load()
    got = {
        (p.pointer, p.keyword, p.message)
        for p in bind_problems(
            mapping,
            {
                "distance_unit": "mph",
                "speed_unit": "parsecs",
                "places": 3,
                "region": {"nested": True},
                "distanse_unit": "km",
            },
        )
    }
    assert got == {
        (
            "/params/distance_unit",
            "param",
            "param 'distance_unit' is a distance unit, not a speed unit",
        ),
        (
            "/params/speed_unit",
            "param",
            "param 'speed_unit' is a speed unit: one of km/h, knots, m/s, mph",
        ),
        ("/params/places", "param", "param 'places' is one of 0, 1, 2"),
        ("/params/region", "param", "param 'region' takes text, a number or true/false"),
        (
            "/params/distanse_unit",
            "param",
            "unknown param 'distanse_unit' (did you mean "
            "'distance_unit'?); declared: distance_unit, speed_unit, places, region",
        ),
    }
    assert {p.pointer for p in mapping.param_problems({"speed_unit": "mph"})} == {
        "/params/distance_unit",
        "/params/region",
    }
    with pytest.raises(InvalidPayload):
        mapping.bind({"distance_unit": "mph"})  # a bad value fails even when not strict


def test_true_is_not_one_in_an_enum() -> None:
    problems = bind_problems(load(), {"places": True})
    assert [p.message for p in problems] == ["param 'places' is one of 0, 1, 2"]


@pytest.mark.parametrize(
    ("change", "pointer", "keyword"),
    [
        (
            ("{param: distance_unit}, to: km}", "{param: distanse_unit}, to: km}"),
            "/fields/odometer_km/transforms/0/convert/from/param",
            "transform",
        ),
        (
            ("attributes.region: {param: region}", "attributes.region: {param: nowhere}"),
            "/fields/attributes.region/param",
            "param",
        ),
        (
            ("speed_unit: {unit: speed, default: km/h}", "speed_unit: {unit: speed, default: km}"),
            "/params/speed_unit/default",
            "param",
        ),
        (("region: {}", "region: {unit: weight}"), "/params/region/unit", "enum"),
        (("region: {}", "region: {enum: []}"), "/params/region/enum", "type"),
        (("region: {}", "region: {choices: [a]}"), "/params/region/choices", "unknown"),
        (("region: {}", "region: text"), "/params/region", "type"),
        (("region: {}", "2region: {}"), "/params/2region", "pattern"),
        (
            ("to: km}}, {round", "to: km/h}}, {round"),
            "/fields/odometer_km/transforms/0/convert",
            "transform",
        ),
    ],
)
def test_declarations_and_uses_are_checked_when_the_file_loads(
    change: tuple[str, str], pointer: str, keyword: str
) -> None:
    old, new = change
    assert old in UNITS
    assert (pointer, keyword) in problems_of(UNITS.replace(old, new))


def test_a_faulty_declaration_is_reported_once() -> None:
    text = UNITS.replace("speed_unit: {unit: speed, default: km/h}", "speed_unit: {unit: x}")
    assert problems_of(text) == {("/params/speed_unit/unit", "enum")}


def test_map_values_are_data_not_param_references() -> None:
    text = UNITS + "  status:\n    from: s\n    transforms: [{map: {values: {param: active}}}]\n"
    mapping = load(text).bind({"distance_unit": "km", "region": "x"})
    assert mapping.apply({**PAYLOAD, "s": "param"}).document["status"] == "active"


def test_outbound_mappings_take_no_params() -> None:
    text = "name: o\ndirection: outbound\nparams: {a: {}}\nbody:\n  x: {param: a}\n"
    assert ("/params", "unknown") in problems_of(text)


DIAGNOSTIC = """
name: meter-by-diagnostic
direction: inbound
entity_type: vehicle
key: [attributes.tracker_id]
params:
  odometer: {default: DiagnosticOdometerAdjustmentId}
  hours: {enum: [DiagnosticEngineHoursId, DiagnosticEngineHoursAdjustmentId]}
fields:
  attributes.tracker_id: device
  odometer_km: {from: data, when: {from: diagnostic, equals: {param: odometer}}}
  attributes.engine_hours:
    from: data
    when: {from: diagnostic, in: [{param: hours}, DiagnosticEngineHoursTotalId]}
  attributes.other:
    from: data
    when: {from: diagnostic, not_in: [{param: odometer}, {param: hours}]}
"""


def reading(diagnostic: str) -> dict[str, Any]:
    return {"device": "b2A", "diagnostic": diagnostic, "data": 7}


def test_a_payload_value_is_compared_with_the_param_each_trigger_sets() -> None:
    mapping = load(DIAGNOSTIC).bind({"hours": "DiagnosticEngineHoursId"})
    odometer = mapping.apply(reading("DiagnosticOdometerAdjustmentId")).document
    assert odometer == {"attributes": {"tracker_id": "b2A"}, "odometer_km": 7}
    hours = mapping.apply(reading("DiagnosticEngineHoursId")).document
    assert hours["attributes"] == {"tracker_id": "b2A", "engine_hours": 7}
    literal = mapping.apply(reading("DiagnosticEngineHoursTotalId")).document  # in's literal
    assert literal["attributes"]["engine_hours"] == 7
    other = mapping.apply(reading("DiagnosticFuelLevelId")).document
    assert other["attributes"] == {"tracker_id": "b2A", "other": 7}
    engine = load(DIAGNOSTIC).bind(
        {"odometer": "DiagnosticOdometerId", "hours": "DiagnosticEngineHoursId"}
    )
    assert "odometer_km" not in engine.apply(reading("DiagnosticOdometerAdjustmentId")).document
    assert engine.apply(reading("DiagnosticOdometerId")).document["odometer_km"] == 7


def test_a_compared_param_must_be_declared_and_set() -> None:
    undeclared = DIAGNOSTIC.replace("equals: {param: odometer}", "equals: {param: odometr}")
    assert problems_of(undeclared) == {("/fields/odometer_km/when/equals/param", "param")}
    in_list = DIAGNOSTIC.replace("in: [{param: hours}", "in: [{param: hour}")
    assert problems_of(in_list) == {("/fields/attributes.engine_hours/when/in/0/param", "param")}
    unset = load(DIAGNOSTIC).bind({})  # hours has no default: the fields reading it fail
    with pytest.raises(InvalidPayload) as caught:
        unset.apply(reading("DiagnosticEngineHoursId"))
    assert {p.keyword for p in caught.value.problems} == {"param"}
    # an object that is not {param: name} is a value as written, compared as JSON
    literal = DIAGNOSTIC.replace("equals: {param: odometer}", "equals: {id: odometer}")
    document = (
        load(literal)
        .bind({"hours": "DiagnosticEngineHoursId"})
        .apply({"device": "b2A", "diagnostic": {"id": "odometer"}, "data": 7})
        .document
    )
    assert document["odometer_km"] == 7


READINGS = """
name: readings
direction: inbound
entity_type: vehicle
key: [attributes.tracker_id]
params:
  odometer: {enum: [DiagnosticOdometerAdjustmentId, DiagnosticOdometerId]}
items:
  from: data
  when: {from: diagnostic, equals: {param: odometer}}
fields:
  attributes.tracker_id: device
  odometer_km: data
"""
PAGE = {"data": [reading("DiagnosticOdometerId"), reading("DiagnosticOdometerAdjustmentId")]}


def test_items_keep_only_the_readings_a_trigger_param_chooses() -> None:
    engine = load(READINGS).bind({"odometer": "DiagnosticOdometerId"})
    assert engine.items(PAGE) == [reading("DiagnosticOdometerId")]
    adjusted = load(READINGS).bind({"odometer": "DiagnosticOdometerAdjustmentId"})
    assert adjusted.items(PAGE) == [reading("DiagnosticOdometerAdjustmentId")]
    assert adjusted.items({"data": [reading("DiagnosticFuelLevelId")]}) == []
    with pytest.raises(InvalidPayload) as caught:  # unset: the items cannot be told apart
        load(READINGS).bind({}).items(PAGE)
    assert {p.keyword for p in caught.value.problems} == {"param"}


def test_items_inside_items_are_kept_by_their_condition_too() -> None:
    nested = READINGS.replace(
        "  from: data\n  when: {from: diagnostic, equals: {param: odometer}}",
        "  from: devices\n  each: readings\n  as: r\n"
        "  when: {from: r.diagnostic, equals: {param: odometer}}",
    ).replace("device\n  odometer_km: data", "id\n  odometer_km: r.data")
    mapping = load(nested).bind({"odometer": "DiagnosticOdometerId"})
    page = {"devices": [{"id": "b2A", "readings": PAGE["data"]}]}
    [item] = mapping.items(page)
    assert item["r"]["diagnostic"] == "DiagnosticOdometerId"
    assert mapping.apply(item).document == {"attributes": {"tracker_id": "b2A"}, "odometer_km": 7}


@pytest.mark.parametrize(
    ("written", "instead", "pointer"),
    [
        ("equals: {param: odometer}", "equals: {param: odometr}", "/items/when/equals/param"),
        ("  from: data\n", "  from: data\n  each: x\n", "/items"),
        ("  from: data\n", "", "/items"),
        ("when: {from: diagnostic,", "when: {frm: diagnostic,", "/items/when"),
    ],
)
def test_bad_item_conditions_are_located(written: str, instead: str, pointer: str) -> None:
    assert pointer in {where for where, _ in problems_of(READINGS.replace(written, instead))}
