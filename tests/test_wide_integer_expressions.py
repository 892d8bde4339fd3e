"""JMESPath reads an integer wider than 64 bits as the number it is (docs/triggers.md
"Content types"): its operators and functions, never a Python type error."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidPayload
from gateway.formats.json_tree import WideInt, loads_exact
from gateway.mapping import load_mapping
from gateway.mapping.expressions import Run, compile_expression
from tests.triggers_support import Client, create_trigger, upload_mapping

WIDE = b'{"plate": "WID1A11", "counter": 123456789012345678901234567}'

EXPR = """
name: wide-expr
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: plate
  attributes.positive: "counter > `0`"
"""


async def _post(client: Client, mapping: str) -> tuple[int, dict]:
    await upload_mapping(client, mapping)
    name = mapping.split("name: ", 1)[1].split("\n", 1)[0]
    trigger = await create_trigger(client, mapping=name, name=name)
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=WIDE,
        headers={"Authorization": f"Bearer {trigger['token']}", "Content-Type": "application/json"},
    )
    return response.status, await response.json()


async def test_a_jmespath_comparison_with_a_wide_integer_is_no_python_type_error(
    client: Client,
) -> None:
    status, answer = await _post(client, EXPR)
    assert "WideInt" not in str(answer) and "not supported between" not in str(answer), answer
    assert status == 201, answer


DIGITS = "123456789012345678901234567"
PAYLOAD = loads_exact(
    b'{"counter": 123456789012345678901234567, "neg": -123456789012345678901234567,'
    b' "items": [{"n": 1}, {"n": 123456789012345678901234567}, {"n": 3}]}'
)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("counter > `0`", True),
        ("neg < `1`", True),
        ("type(counter)", "number"),
        (f"counter == `{DIGITS}`", True),
        ("counter == '" + DIGITS + "'", False),  # a number is no text
        ("max([counter, `1`])", DIGITS),
        ("sort_by(items, &n)[-1].n", DIGITS),
        ("items[?n > `5`].n", [DIGITS]),
        ("max(values(@)[?type(@) == 'number'])", DIGITS),
        ("to_string(counter)", DIGITS),
        ("[counter, `1`]", [DIGITS, 1]),
    ],
)
def test_jmespath_reads_a_wide_integer_as_the_number_it_is(expression: str, expected: Any) -> None:
    getter, why = compile_expression(expression)
    assert getter is not None, why
    got = getter(PAYLOAD, Run())
    assert got == expected
    # a value the expression passes on is the partner's, written as its digits (a WideInt)
    kind = str if expression.startswith("to_string") else WideInt
    wide = [v for v in (got if isinstance(got, list) else [got]) if v == DIGITS]
    assert all(type(v) is kind for v in wide), got


def test_a_text_function_refuses_a_wide_integer_as_it_refuses_a_number() -> None:
    mapping = load_mapping(
        "name: t\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "fields:\n  plate: plate\n  attributes.size: length(counter)\n"
    )
    with pytest.raises(InvalidPayload) as caught:
        mapping.apply({"plate": "ABC1D23", **PAYLOAD})
    (problem,) = caught.value.problems
    assert 'received: "number"' in problem.message, problem.message
    assert "WideInt" not in problem.message
