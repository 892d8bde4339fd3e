"""Conditions (`when`, `emit[].when`, `probe.when`): an expression's JMESPath truth, or a
comparison `{from: expression, <operator>: value}` of a value of the payload, or `{param: name,
<operator>: value}` of a trigger's param (the same for every payload of that trigger), or
`{all: [...]}`, `{any: [...]}`, `{not: condition}` of other conditions. The value compared
with may be a param itself, `{param: name}` (for `in` and `not_in`: any of the list's values),
so a payload value is compared with what each trigger sets (`{from: diagnostic.id, equals:
{param: odometer_diagnostic}}`). A comparison's `from` may take `transforms`, applied as a
spec applies them, so what is compared is the value read (`{from: prazo, transforms:
[{datetime: {format: "%H:%M:%S.%f"}}], equals: "00:00:00.000000"}`: an instant at midnight
UTC, however it is written)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from ..formats.json_tree import WideInt, as_number
from ..formats.unicode_forms import nfc
from .expressions import Getter, Run, is_truthy
from .problems import Problems

OPERATORS = ("equals", "not_equals", "in", "not_in", "gt", "gte", "lt", "lte")
COMBINATORS = ("all", "any", "not")
MAX_COMBINED = 10
"""Conditions one `all` or `any` combines."""
Condition = Callable[[Any, Run], bool]
CompileExpression = Callable[[str, str], Getter | None]
"""(expression, pointer) → getter, or None after reporting why not."""
CompileParam = Callable[[Any, str], Getter | None]
"""(param name, pointer) → getter of its bound value, or None after reporting why not."""
CompileTransformed = Callable[[str, Any, str], Getter | None]
"""(expression, transforms, pointer) → getter of the expression's value so transformed, or
None after reporting why not."""


def compile_condition(
    raw: Any,
    at: str,
    problems: Problems,
    expression: CompileExpression,
    param: CompileParam | None = None,
    transformed: CompileTransformed | None = None,
) -> Condition | None:
    """The condition `raw` compiles to, or None after reporting every problem."""
    if isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)) in COMBINATORS:
        return _combined(raw, at, problems, expression, param, transformed)
    if isinstance(raw, str):
        truth = expression(raw, at)
        if truth is None:
            return None
        return lambda root, run: is_truthy(truth(root, run))
    operators = [k for k in OPERATORS if isinstance(raw, dict) and k in raw]
    source = next((k for k in ("from", "param") if isinstance(raw, dict) and k in raw), "from")
    modifiers = {"transforms"} if source == "from" and transformed is not None else set()
    if (
        not isinstance(raw, dict)
        or len(operators) != 1
        or set(raw) - modifiers != {source, *operators}
        or (source == "param" and param is None)
    ):
        problems.add(
            at,
            f"when is an expression, {{from: expression, <operator>: value}} (from may take "
            f"transforms) or {{param: name, <operator>: value}} with one operator of "
            f"{', '.join(OPERATORS)}, or {{all: [...]}}, {{any: [...]}}, {{not: condition}}",
            "condition",
        )
        return None
    (operator,) = operators
    operand = raw[operator]
    if operator in ("in", "not_in") and not isinstance(operand, list):
        problems.add(f"{at}/{operator}", f"{operator} takes a list of values", "type")
        return None
    if source == "param":
        assert param is not None
        getter = param(raw["param"], f"{at}/param")
    elif not isinstance(raw["from"], str):
        problems.add(f"{at}/from", "from is an expression string", "type")
        return None
    elif "transforms" in raw:
        assert transformed is not None
        getter = transformed(raw["from"], raw["transforms"], at)
    else:
        getter = expression(raw["from"], f"{at}/from")
    if getter is None:
        return None
    test = _TESTS[operator]
    value = _operand(operand, f"{at}/{operator}", problems, param)
    if value is None:
        return None
    if isinstance(value, _Constant):
        constant = value.value
        return lambda root, run: test(getter(root, run), constant)
    return lambda root, run: test(getter(root, run), value(root, run))


class _Constant:
    """An operand without params: compared as it is written."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _literal(value: Any) -> Getter:
    return lambda root, run: value


def _is_param_ref(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"param"}


def _operand(
    raw: Any, at: str, problems: Problems, param: CompileParam | None
) -> _Constant | Getter | None:
    """What a comparison compares with: its literal value, or the trigger's param that
    `{param: name}` names (in the list of `in` and `not_in`: each element that is one)."""
    refs = [(f"{at}/{i}", e) for i, e in enumerate(raw)] if isinstance(raw, list) else [(at, raw)]
    if not any(_is_param_ref(e) for _, e in refs):
        return _Constant(raw)
    if param is None:
        problems.add(at, "{param: name} compares with a param: only in a mapping", "param")
        return None
    getters = [
        param(e["param"], f"{where}/param") if _is_param_ref(e) else _literal(e)
        for where, e in refs
    ]
    if any(g is None for g in getters):
        return None
    found = [g for g in getters if g is not None]
    if not isinstance(raw, list):
        return found[0]
    return lambda root, run: [g(root, run) for g in found]


def _combined(
    raw: dict[str, Any],
    at: str,
    problems: Problems,
    expression: CompileExpression,
    param: CompileParam | None,
    transformed: CompileTransformed | None,
) -> Condition | None:
    """`{all: [...]}` (every one holds), `{any: [...]}` (one holds, in order), `{not: c}`."""
    ((name, inner),) = raw.items()
    if name == "not":
        condition = compile_condition(inner, f"{at}/not", problems, expression, param, transformed)
        if condition is None:
            return None
        return lambda root, run: not condition(root, run)
    if not isinstance(inner, list) or not 0 < len(inner) <= MAX_COMBINED:
        problems.add(f"{at}/{name}", f"{name} is a list of 1 to {MAX_COMBINED} conditions", "type")
        return None
    found = [
        compile_condition(c, f"{at}/{name}/{i}", problems, expression, param, transformed)
        for i, c in enumerate(inner)
    ]
    conditions = [c for c in found if c is not None]
    if len(conditions) != len(found):
        return None
    if name == "all":
        return lambda root, run: all(c(root, run) for c in conditions)
    return lambda root, run: any(c(root, run) for c in conditions)


def json_equal(left: Any, right: Any) -> bool:
    """JSON equality, at every depth: `true` is not `1` (in a list or an object too), `1` is
    `1.0` (one JSON number), and text is equal in whichever Unicode form it came ("Não"
    decomposed, as macOS and iOS send it, equals "Não" composed)."""
    if left is right:
        return True
    kind = type(left)
    if kind is WideInt or type(right) is WideInt:
        return _wide_equal(left, right)
    if kind is str:
        return type(right) is str and (left == right or nfc(left) == nfc(right))
    if kind is bool or type(right) is bool:
        return False  # the same bool is `left is right`
    if kind is int or kind is float:
        return (type(right) is int or type(right) is float) and left == right
    if kind is list:
        return type(right) is list and len(left) == len(right) and all(map(json_equal, left, right))
    if kind is dict:
        if type(right) is not dict or len(left) != len(right):
            return False
        if left.keys() == right.keys():
            return all(json_equal(value, right[key]) for key, value in left.items())
        # Keys compare as text does: an object's key may come in either form.
        mine = {nfc(key): value for key, value in left.items()}
        theirs = {nfc(key): value for key, value in right.items()}
        return (
            len(mine) == len(left)  # not an object with one key in both forms
            and mine.keys() == theirs.keys()
            and all(json_equal(value, theirs[key]) for key, value in mine.items())
        )
    return bool(left == right)


def _wide_equal(left: Any, right: Any) -> bool:
    """A wide integer (`WideInt`, its digits) is the number it is: equal to the same number
    (JSON writes an integer's digits one way), never to text."""
    texts = [str(v) if type(v) is WideInt or type(v) is int else None for v in (left, right)]
    return texts[0] is not None and texts[0] == texts[1]


def _ordered(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    """An ordering operator: false unless both sides are numbers (a wide integer, `WideInt`,
    is the number it is)."""

    def compare(left: Any, right: Any) -> bool:
        a, b = as_number(left), as_number(right)
        return a is not None and b is not None and test(a, b)

    return compare


_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": json_equal,
    "not_equals": lambda a, b: not json_equal(a, b),
    "in": lambda a, b: any(json_equal(a, x) for x in b),
    "not_in": lambda a, b: not any(json_equal(a, x) for x in b),
    "gt": _ordered(operator.gt),
    "gte": _ordered(operator.ge),
    "lt": _ordered(operator.lt),
    "lte": _ordered(operator.le),
}
