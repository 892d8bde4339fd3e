"""Conditions (`when`, `emit[].when`, `probe.when`): an expression's JMESPath truth, or a
comparison `{from: expression, <operator>: value}`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .expressions import Getter, Run, is_truthy
from .problems import Problems

OPERATORS = ("equals", "not_equals", "in", "not_in", "gt", "gte", "lt", "lte")
Condition = Callable[[Any, Run], bool]
CompileExpression = Callable[[str, str], Getter | None]
"""(expression, pointer) → getter, or None after reporting why not."""


def compile_condition(
    raw: Any, at: str, problems: Problems, expression: CompileExpression
) -> Condition | None:
    """The condition `raw` compiles to, or None after reporting every problem."""
    if isinstance(raw, str):
        truth = expression(raw, at)
        if truth is None:
            return None
        return lambda root, run: is_truthy(truth(root, run))
    operators = [k for k in OPERATORS if isinstance(raw, dict) and k in raw]
    if not isinstance(raw, dict) or len(operators) != 1 or set(raw) != {"from", *operators}:
        problems.add(
            at,
            f"when is an expression or {{from: expression, <operator>: value}} with one "
            f"operator of {', '.join(OPERATORS)}",
            "condition",
        )
        return None
    (operator,) = operators
    operand = raw[operator]
    if operator in ("in", "not_in") and not isinstance(operand, list):
        problems.add(f"{at}/{operator}", f"{operator} takes a list of values", "type")
        return None
    if not isinstance(raw["from"], str):
        problems.add(f"{at}/from", "from is an expression string", "type")
        return None
    getter = expression(raw["from"], f"{at}/from")
    if getter is None:
        return None
    test = _TESTS[operator]
    return lambda root, run: test(getter(root, run), operand)


def json_equal(left: Any, right: Any) -> bool:
    """JSON equality: true is not 1."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


def _numbers(left: Any, right: Any) -> bool:
    return all(isinstance(x, int | float) and not isinstance(x, bool) for x in (left, right))


_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": json_equal,
    "not_equals": lambda a, b: not json_equal(a, b),
    "in": lambda a, b: any(json_equal(a, x) for x in b),
    "not_in": lambda a, b: not any(json_equal(a, x) for x in b),
    "gt": lambda a, b: _numbers(a, b) and a > b,
    "gte": lambda a, b: _numbers(a, b) and a >= b,
    "lt": lambda a, b: _numbers(a, b) and a < b,
    "lte": lambda a, b: _numbers(a, b) and a <= b,
}
