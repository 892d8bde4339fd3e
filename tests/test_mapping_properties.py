"""Properties of the mapping transforms and expression functions, for any input: a field maps
to a value or to a problem of the mapping (`cast`, `transform`, `expression`, ...), never an
exception out of `apply`, never Infinity or NaN, never more than an item's output bound.

Every transform (`TRANSFORM_NAMES`) and every JMESPath function the language has is drawn
here; a transform or function added later without a strategy fails
`test_every_transform_and_function_is_drawn`. Bounded, derandomized, no example database."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidPayload
from gateway.mapping import TRANSFORM_NAMES, MappedDocument, load_mapping
from gateway.mapping.expressions import _FUNCTIONS
from gateway.mapping.limits import MAX_OUTPUT_CHARS

PROPERTIES = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# What a payload that does not fit may be answered with: problems of the mapping, by field.
MAPPING_PROBLEMS = {
    "cast",
    "range",
    "transform",
    "expression",
    "datetime",
    "limit",
    "decode",
    "required",
}

# -- inputs: the edges of numbers and the texts the readings parse ------------------------------

NUMBERS = (
    st.sampled_from(
        [
            0,
            -0.0,
            1,
            -1,
            0.5,
            1e308,
            -1e308,
            5e-324,
            2**53 + 1,
            2**63,
            -(2**63) - 1,
            2**64,
            10**40,
            10**400,
            1.7976931348623157e308,
        ]
    )
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
)
TEXTS = st.sampled_from(
    [
        "",
        " ",
        "1e999",
        "-1e999",
        "nan",
        "inf",
        "Infinity",
        "1" * 400,
        "9" * 4400,
        "0x10",
        "1_000",
        "1.234,56",
        "00:12:03.4560000",
        "1.02:03:04",
        "99999999.23:59:59.9999999",
        "PT12M3.456S",
        "P999999999999.999999999W999999999999DT999999999999H",
        "P1Y",
        "-PT1S",
        "51° 20' 39.0\" N",
        "23°33'01.2\"S",
        "46 38.5 W",
        "2333.0200,S",
        "04638.5000,W",
        "999° 99' 99\" N",
        "-23° S",
        "2026-12-04T10:00:00Z",
        "2016-12-31T23:59:60Z",
        "9999-12-31T23:59:59+00:00",
        "0000-01-01T00:00:00Z",
        "253402300800000",
        "sim",
        "(11) 98765-4321",
        "ABC1D23",
        "a,b,c",
        "\x00",
        "\ud800",
    ]
) | st.text(max_size=30)
SCALARS = NUMBERS | TEXTS | st.booleans() | st.none()
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from("vwxyz"), inner),
    max_leaves=12,
)

# -- transforms ---------------------------------------------------------------------------------

UNIT_KINDS = [
    ["km/h", "knots", "m/s", "mph"],
    ["km", "m", "mi", "ft"],
    ["l", "ml", "gal", "m3"],
    ["km/l", "mpg", "l/100km"],
    ["ms", "s", "min", "h"],
]
TRANSFORMS: dict[str, st.SearchStrategy[Any]] = {
    name: st.just(name)
    for name in (
        "string",
        "integer",
        "number",
        "boolean",
        "upper",
        "lower",
        "trim",
        "digits",
        "plate",
        "vin",
        "cpf",
        "cnpj",
        "renavam",
        "phone",
        "duration",
    )
}
TRANSFORMS.update(
    {
        "pad": st.builds(
            lambda w, f: {"pad": {"width": w, "fill": f}}, st.integers(0, 50), st.just("0")
        ),
        "truncate": st.integers(0, 20).map(lambda n: {"truncate": n}),
        "split": st.integers(-3, 3).map(lambda i: {"split": {"separator": ",", "index": i}}),
        "mask": st.sampled_from(["###.###.###-##", "###-####", "#"]).map(lambda m: {"mask": m}),
        "convert": st.sampled_from(UNIT_KINDS)
        .flatmap(lambda units: st.tuples(st.sampled_from(units), st.sampled_from(units)))
        .map(lambda pair: {"convert": {"from": pair[0], "to": pair[1]}}),
        "scale": st.sampled_from([0, -1, 1e-300, 1e300, 1.7976931348623157e308, 3.6]).map(
            lambda f: {"scale": f}
        ),
        "offset": st.sampled_from([0, -1e308, 1e308, 0.5]).map(lambda f: {"offset": f}),
        "round": st.integers(0, 12).map(lambda n: {"round": n}),
        "range": st.sampled_from([{"min": 0}, {"max": 100}, {"min": -1e308, "max": 1e308}]).map(
            lambda a: {"range": a}
        ),
        "format_number": st.sampled_from([None, {"decimals": 12}, {"thousands": ""}]).map(
            lambda a: "format_number" if a is None else {"format_number": a}
        ),
        "parse_number": st.sampled_from(
            ["parse_number", {"parse_number": {"thousands": ",", "decimal": "."}}]
        ),
        "coordinate": st.sampled_from(["latitude", "longitude"]).map(lambda a: {"coordinate": a}),
        "map": st.just({"map": {"values": {"1": 1e308, "inf": "x", "true": [1]}, "default": 0}}),
        "datetime": st.sampled_from(
            [
                {"parse": "auto"},
                {"parse": "unix"},
                {"parse": "unix_ms", "format": "unix_ms"},
                {"parse": "iso8601", "format": "date", "output_tz": "America/Sao_Paulo"},
                {"parse": "%d/%m/%Y %H:%M", "input_tz": "America/Sao_Paulo", "format": "unix"},
                {"format": "%Y-%m-%d %H:%M:%S"},
            ]
        ).map(lambda a: {"datetime": a}),
    }
)
PIPELINES = st.lists(
    st.sampled_from(sorted(TRANSFORMS)).flatmap(TRANSFORMS.__getitem__), min_size=1, max_size=4
)

# -- expressions: every function, and the slices and arithmetic-like corners ---------------------

FUNCTION_CALLS = {
    "abs": ["abs(v)"],
    "avg": ["avg(v)", "avg([v, v])"],
    "ceil": ["ceil(v)", "ceil(to_number(v))"],
    "contains": ["contains(v, w)"],
    "ends_with": ["ends_with(v, w)"],
    "floor": ["floor(v)", "floor(to_number(v))"],
    "from_json": ["from_json(v)", "from_json(to_string(v))"],
    "from_xml": ["from_xml(v)"],
    "is_fix": ["is_fix(v, w)", "is_fix(to_number(v), w)"],
    "is_number": ["is_number(v)", "is_number(to_number(v))"],
    "join": ["join(',', v)", "join(w, [v, v])"],
    "keys": ["keys(v)"],
    "length": ["length(v)"],
    "map": ["map(&abs(@), v)", "map(&to_number(@), v)"],
    "max": ["max(v)", "max([v, w])"],
    "max_by": ["max_by(v, &x)"],
    "merge": ["merge(v, w)"],
    "min": ["min(v)"],
    "min_by": ["min_by(v, &x)"],
    "not_null": ["not_null(v, w)"],
    "reverse": ["reverse(v)"],
    "sort": ["sort(v)"],
    "sort_by": ["sort_by(v, &x)"],
    "starts_with": ["starts_with(v, w)"],
    "sum": ["sum(v)", "sum([v, w])", "sum([to_number(v), to_number(w)])"],
    "to_array": ["to_array(v)"],
    "to_entries": ["to_entries(v)", "to_entries(v)[0].value"],
    "to_number": ["to_number(v)"],
    "to_string": ["to_string(v)", "to_string(to_number(v))"],
    "trim": ["trim(v)", "trim(to_string(v))"],
    "type": ["type(v)"],
    "values": ["values(v)"],
}
OTHER_EXPRESSIONS = [
    "v",
    "v[0]",
    "v[::0]",
    "v[0:10:-1]",
    "v[-99999999999999999999]",
    "v[*].x",
    "v[?x > `1`]",
    "v[?x == w]",
    "v || w",
    "!v",
    "v < w",
    "{a: v, b: v}",
    "[v, w][]",
    "v.*",
    "@",
]
EXPRESSIONS = st.sampled_from(
    [e for calls in FUNCTION_CALLS.values() for e in calls] + OTHER_EXPRESSIONS
)


def _mapping(source: str, transforms: list[Any] | None) -> Any:
    spec: dict[str, Any] = {"from": source}
    if transforms:
        spec["transforms"] = transforms
    doc = {
        "name": "properties",
        "direction": "inbound",
        "entity_type": "vehicle",
        "key": ["plate"],
        "fields": {"plate": {"value": "ABC1D23"}, "attributes.out": spec},
    }
    return load_mapping(json.dumps(doc).encode())


def _finite_and_written(value: Any) -> int:
    """The size of a mapped value as JSON; every number in it finite."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            assert math.isfinite(item), item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return len(json.dumps(value, allow_nan=False, default=str))


def _maps_or_names_its_problem(source: str, transforms: list[Any] | None, payload: Any) -> None:
    try:
        mapping = _mapping(source, transforms)
    except InvalidPayload as exc:  # a combination the loader refuses (none expected)
        pytest.fail(f"{source!r} {transforms!r} refused: {exc.problems}")
    try:
        mapped = mapping.apply(payload)
    except InvalidPayload as exc:
        assert exc.problems
        assert {p.keyword for p in exc.problems} <= MAPPING_PROBLEMS, exc.problems
        assert all(p.message for p in exc.problems)
        return
    assert isinstance(mapped, MappedDocument)
    assert _finite_and_written(mapped.document) <= 2 * MAX_OUTPUT_CHARS


def test_every_transform_and_function_is_drawn() -> None:
    assert set(TRANSFORMS) == set(TRANSFORM_NAMES)
    assert set(FUNCTION_CALLS) == set(_FUNCTIONS.FUNCTION_TABLE)


@PROPERTIES
@given(PIPELINES, VALUES)
def test_any_value_through_any_transforms_is_a_finite_value_or_a_problem(
    transforms: list[Any], value: Any
) -> None:
    _maps_or_names_its_problem("v", transforms, {"v": value})


@PROPERTIES
@given(EXPRESSIONS, st.none() | PIPELINES, VALUES, VALUES)
def test_any_expression_on_any_values_is_a_finite_value_or_a_problem(
    expression: str, transforms: list[Any] | None, v: Any, w: Any
) -> None:
    _maps_or_names_its_problem(expression, transforms, {"v": v, "w": w})


@pytest.mark.parametrize(
    ("source", "transforms", "value", "keyword"),
    [
        ("floor(to_number(v))", None, "1e999", "expression"),
        ("ceil(v)", None, "1e999", "expression"),
        ("v[::0]", None, [1, 2], "expression"),
        ("to_string(to_number(v))", None, "1e999", "cast"),
        ("to_string([to_number(v)])", None, "1e999", "cast"),
        ("v", [{"scale": 1e308}, "string"], 10, "cast"),
        ("v", [{"scale": 1e308}, "upper"], 10, "cast"),
        ("sum(v)", None, [10**400, 0.5], "expression"),
    ],
    ids=lambda value: value[:30] if isinstance(value, str) else type(value).__name__,
)
def test_an_overflowing_or_unwritable_value_is_a_problem_of_its_field(
    source: str, transforms: list[Any] | None, value: Any, keyword: str
) -> None:
    mapping = _mapping(source, transforms)
    with pytest.raises(InvalidPayload) as raised:
        mapping.apply({"v": value})
    (problem,) = raised.value.problems
    assert problem.pointer == "/attributes/out" or problem.extra.get("target") == "attributes.out"
    assert problem.keyword == keyword, problem
