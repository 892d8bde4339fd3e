"""Field specs → getters: sources, conditions, templates, lists and transform pipelines.

A spec is an expression string, or an object with exactly one source (`from`, `value`,
`secret`, `coalesce`, `template`, `each`, `object`, `list`, or `then` after `when`) and the
modifiers `when`/`else`, `transforms`, `default` and `required`.
"""

from __future__ import annotations

import copy
import re
import string
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .expressions import Getter, Run, compile_expression, is_truthy
from .limits import (
    MAX_FIELDS,
    MAX_LIST_ITEMS,
    MAX_SPEC_DEPTH,
    MAX_STRING_LENGTH,
    MAX_TRANSFORMS,
)
from .model import EvalError
from .paths import MAX_TARGET_LENGTH, TARGET_RE, pointer, source_pointer
from .problems import Problems, suggest
from .tables import Table, build, evaluate
from .transforms import Transform, compile_transform, to_string

SOURCES = ("from", "value", "secret", "coalesce", "template", "each", "object", "list", "then")
MODIFIERS = ("when", "else", "transforms", "default", "required")
COMPANIONS = {"vars": "template", "fields": "each", "item": "each"}
SPEC_KEYS = (*SOURCES, *MODIFIERS, *COMPANIONS)
OPERATORS = ("equals", "not_equals", "in", "not_in", "gt", "gte", "lt", "lte")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
SECRET_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")
_MAX_TEMPLATE = 10_000
_MAX_CHOICES = 50
_MISSING = object()
_FORMATTER = string.Formatter()
Condition = Callable[[Any, Run], bool]


def describe(raw: Any) -> str:
    """The source expression(s) of a spec, for error messages."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, dict):
        if isinstance(raw.get("from"), str):
            return str(raw["from"])
        if isinstance(raw.get("coalesce"), list):
            return ", ".join(filter(None, (describe(item) for item in raw["coalesce"])))
    return ""


def mentions(raw: Any, keys: frozenset[str]) -> bool:
    """Whether a spec uses any of `keys` at any depth (specs are depth-limited)."""
    if isinstance(raw, dict):
        return any(k in keys or mentions(v, keys) for k, v in raw.items())
    if isinstance(raw, list):
        return any(mentions(item, keys) for item in raw)
    return False


_TABLE_KEYS = frozenset({"each", "object"})
_SECRET_KEYS = frozenset({"secret"})


class SpecCompiler:
    """Compiles specs and tables, reporting every problem to `problems`."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.count = 0
        self.secrets: set[str] = set()

    # -- tables ------------------------------------------------------------------------------

    def table(self, raw: Any, at: str, depth: int, *, flat: bool = False) -> Table | None:
        """`{target: spec}`: dotted targets build nested objects (flat: names stay whole)."""
        if not isinstance(raw, dict) or not raw:
            self.problems.add(at, "must be an object of target: spec", "type")
            return None
        leaves: list[tuple[str, Getter, bool]] = []
        ok = True
        for target, spec in raw.items():
            here = f"{at}{pointer(target)}"
            if not flat and not self._valid_target(target, here, raw):
                ok = False
            getter = self.spec(spec, here, depth)
            if getter is None:
                ok = False
                continue
            leaves.append((target, getter, mentions(spec, _TABLE_KEYS)))
        return build(leaves, flat=flat) if ok else None

    def _valid_target(self, target: str, at: str, siblings: dict[str, Any]) -> bool:
        if len(target) > MAX_TARGET_LENGTH or not TARGET_RE.match(target):
            self.problems.add(
                at,
                f"target {target!r} is not a dotted field path like last_position.latitude",
                "target",
            )
            return False
        parts = target.split(".")
        for end in range(1, len(parts)):
            parent = ".".join(parts[:end])
            if parent in siblings:
                self.problems.add(at, f"target {target!r} is inside target {parent!r}", "target")
                return False
        return True

    # -- specs -------------------------------------------------------------------------------

    def spec(self, raw: Any, at: str, depth: int) -> Getter | None:
        self.count += 1
        if self.count > MAX_FIELDS:
            if self.count == MAX_FIELDS + 1:
                self.problems.add(at, f"more than {MAX_FIELDS} field specs", "limit")
            return None
        if depth > MAX_SPEC_DEPTH:
            self.problems.add(at, f"specs nested more than {MAX_SPEC_DEPTH} levels deep", "limit")
            return None
        if isinstance(raw, str):
            return self.expression(raw, at)
        if not isinstance(raw, dict):
            self.problems.add(
                at,
                "a spec is an expression string or an object such as {from: ...} or "
                "{value: ...} (write constants as {value: ...})",
                "type",
            )
            return None
        return self._object_spec(raw, at, depth)

    def _object_spec(self, raw: dict[str, Any], at: str, depth: int) -> Getter | None:
        if not self._check_keys(raw, at):
            return None
        (source_key,) = [k for k in SOURCES if k in raw]
        source = self._source(source_key, raw, at, depth)
        condition = else_ = None
        if "when" in raw:
            condition = self.condition(raw["when"], f"{at}/when")
            if "else" in raw:
                else_ = self.spec(raw["else"], f"{at}/else", depth + 1)
        pipeline = self.pipeline(raw.get("transforms", ()), f"{at}/transforms")
        required = raw.get("required", False)
        if not isinstance(required, bool):
            self.problems.add(f"{at}/required", "required is true or false", "type")
        failed = source is None or pipeline is None or ("when" in raw and condition is None)
        if failed or ("else" in raw and else_ is None) or not isinstance(required, bool):
            return None
        assert source is not None and pipeline is not None
        getter = source if condition is None else _conditional(condition, source, else_)
        return _finish(getter, pipeline, raw.get("default"), required, describe(raw))

    def _check_keys(self, raw: dict[str, Any], at: str) -> bool:
        ok = True
        for key in raw:
            if key not in SPEC_KEYS:
                self.problems.add(
                    f"{at}{pointer(key)}",
                    f"unknown key {key!r}{suggest(key, SPEC_KEYS)}; a spec takes "
                    f"{', '.join(SPEC_KEYS)}",
                    "unknown",
                )
                ok = False
        sources = [k for k in SOURCES if k in raw]
        if not sources:
            hint = "when needs then" if "when" in raw else "a spec needs a source"
            self.problems.add(at, f"{hint}: one of {', '.join(SOURCES)}", "source")
            return False
        if len(sources) > 1:
            self.problems.add(at, f"several sources ({', '.join(sources)}): keep one", "source")
            return False
        for key, owner in COMPANIONS.items():
            if key in raw and owner not in raw:
                self.problems.add(f"{at}/{key}", f"{key} goes with {owner}", "source")
                ok = False
        for key in ("else", "then"):
            if key in raw and "when" not in raw:
                self.problems.add(f"{at}/{key}", f"{key} goes with when", "source")
                ok = False
        return ok

    def _source(self, key: str, raw: dict[str, Any], at: str, depth: int) -> Getter | None:
        value, here = raw[key], f"{at}/{key}"
        if key == "from":
            if not isinstance(value, str):
                self.problems.add(here, "from is an expression string", "type")
                return None
            return self.expression(value, here)
        if key == "value":
            return _constant(value)
        if key == "secret":
            return self._secret(value, here)
        if key == "coalesce":
            return self._coalesce(value, here, depth)
        if key == "template":
            return self._template(value, raw.get("vars", {}), at, depth)
        if key == "each":
            return self._each(raw, at, depth)
        if key == "object":
            table = self.table(value, here, depth + 1)
            return None if table is None else _object(table)
        if key == "list":
            getters = self._spec_list(value, here, depth)
            return None if getters is None else _list(getters)
        return self.spec(value, here, depth + 1)  # then

    def expression(self, text: str, at: str) -> Getter | None:
        getter, why = compile_expression(text)
        if getter is None:
            keyword = "limit" if "limit" in why or "nested" in why else "expression"
            self.problems.add(at, why, keyword, expression=text[:200])
        return getter

    def _secret(self, name: Any, at: str) -> Getter | None:
        if not isinstance(name, str) or not SECRET_RE.match(name):
            self.problems.add(at, "secret is the name of a secret, like erp_token", "secret")
            return None
        self.secrets.add(name)

        def get_secret(root: Any, run: Run) -> Any:
            value = run.secrets.get(name)
            if value is None:
                raise EvalError("secret", f"secret {name!r} was not provided")
            return value

        return get_secret

    def _spec_list(self, raw: Any, at: str, depth: int) -> list[Getter] | None:
        if not isinstance(raw, list) or not 0 < len(raw) <= _MAX_CHOICES:
            self.problems.add(at, f"must be a list of 1 to {_MAX_CHOICES} specs", "type")
            return None
        getters = [self.spec(item, f"{at}/{i}", depth + 1) for i, item in enumerate(raw)]
        return None if any(g is None for g in getters) else [g for g in getters if g]

    def _coalesce(self, raw: Any, at: str, depth: int) -> Getter | None:
        getters = self._spec_list(raw, at, depth)
        if getters is None:
            return None

        def first_non_null(root: Any, run: Run) -> Any:
            for getter in getters:
                value = getter(root, run)
                if value is not None:
                    return value
            return None

        return first_non_null

    def _each(self, raw: dict[str, Any], at: str, depth: int) -> Getter | None:
        if not isinstance(raw["each"], str):
            self.problems.add(f"{at}/each", "each is an expression that gives a list", "type")
            return None
        items = self.expression(raw["each"], f"{at}/each")
        if ("fields" in raw) == ("item" in raw):
            self.problems.add(at, "each needs fields (an object per element) or item", "source")
            return None
        if "fields" in raw:
            table = self.table(raw["fields"], f"{at}/fields", depth + 1)
            return None if items is None or table is None else _each_table(items, table, raw)
        item = self.spec(raw["item"], f"{at}/item", depth + 1)
        return None if items is None or item is None else _each_item(items, item, raw)

    # -- templates ---------------------------------------------------------------------------

    def _template(self, text: Any, raw_vars: Any, at: str, depth: int) -> Getter | None:
        here = f"{at}/template"
        if not isinstance(text, str) or len(text) > _MAX_TEMPLATE:
            self.problems.add(here, f"template is a string of at most {_MAX_TEMPLATE} characters")
            return None
        if not isinstance(raw_vars, dict):
            self.problems.add(f"{at}/vars", "vars is an object of name: spec", "type")
            return None
        try:
            parsed = list(_FORMATTER.parse(text))
        except ValueError as exc:
            message = f"template is malformed: {exc} (write {{{{ for a {{)"
            self.problems.add(here, message, "template")
            return None
        names = [name for _, name, _, _ in parsed if name is not None]
        if not self._check_placeholders(parsed, raw_vars, here):
            return None
        getters = {
            name: self.spec(spec, f"{at}/vars{pointer(name)}", depth + 1)
            for name, spec in raw_vars.items()
        }
        unused = [name for name in raw_vars if name not in names]
        for name in unused:
            message = f"var {name!r} is not used"
            self.problems.add(f"{at}/vars{pointer(name)}", message, "template")
        if unused:
            return None
        if any(getter is None for getter in getters.values()):
            return None
        parts: list[tuple[str, Getter | None, str]]
        parts = [
            (literal, getters[name] if name is not None else None, name or "")
            for literal, name, _, _ in parsed
        ]
        return _render(parts)

    def _check_placeholders(self, parsed: list[Any], raw_vars: dict[str, Any], at: str) -> bool:
        ok = True
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if not NAME_RE.match(name) or spec or conversion:
                self.problems.add(
                    at,
                    f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                    f"{':' + spec if spec else ''}}} is not allowed: only plain names like "
                    "{plate}, no attributes, indexes, conversions or format specs",
                    "template",
                )
                ok = False
            elif name not in raw_vars:
                self.problems.add(at, f"placeholder {{{name}}} has no var {name!r}", "template")
                ok = False
        return ok

    # -- conditions --------------------------------------------------------------------------

    def condition(self, raw: Any, at: str) -> Condition | None:
        """`when`: an expression (JMESPath truth) or {from: expr, <operator>: value}."""
        if isinstance(raw, str):
            getter = self.expression(raw, at)
            if getter is None:
                return None
            truth = getter
            return lambda root, run: is_truthy(truth(root, run))
        operators = [k for k in OPERATORS if isinstance(raw, dict) and k in raw]
        if not isinstance(raw, dict) or len(operators) != 1 or set(raw) != {"from", *operators}:
            self.problems.add(
                at,
                f"when is an expression or {{from: expression, <operator>: value}} with one "
                f"operator of {', '.join(OPERATORS)}",
                "condition",
            )
            return None
        (operator,) = operators
        operand = raw[operator]
        if operator in ("in", "not_in") and not isinstance(operand, list):
            self.problems.add(f"{at}/{operator}", f"{operator} takes a list of values", "type")
            return None
        if not isinstance(raw["from"], str):
            self.problems.add(f"{at}/from", "from is an expression string", "type")
            return None
        getter = self.expression(raw["from"], f"{at}/from")
        if getter is None:
            return None
        test = _TESTS[operator]
        return lambda root, run: test(getter(root, run), operand)

    # -- transforms --------------------------------------------------------------------------

    def pipeline(self, raw: Any, at: str) -> list[Transform] | None:
        items = [raw] if isinstance(raw, str | dict) else raw
        if not isinstance(items, list | tuple):
            self.problems.add(at, "transforms is a list of transforms", "type")
            return None
        if len(items) > MAX_TRANSFORMS:
            self.problems.add(at, f"more than {MAX_TRANSFORMS} transforms", "limit")
            return None
        compiled: list[Transform] = []
        ok = True
        for i, item in enumerate(items):
            here = at if items is not raw else f"{at}/{i}"

            def report(message: str, *parts: str, _here: str = here) -> None:
                self.problems.add(f"{_here}{pointer(*parts)}", message, "transform")

            result = compile_transform(item, report)
            if result is None:
                ok = False
            else:
                compiled.append(result[1])
        return compiled if ok else None


# -- runtime pieces (closures built once, called per payload) ------------------------------------


def _transformed(source: Getter, chain: Transform, described: str) -> Getter:
    def get(root: Any, run: Run) -> Any:
        value = source(root, run)
        if value is None:
            return None
        try:
            return chain(value)
        except EvalError as error:
            error.source = error.source or described
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            raise EvalError("transform", f"transform failed: {exc}", described) from None

    return get


def _same(left: Any, right: Any) -> bool:
    """JSON equality: true is not 1."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


def _numbers(left: Any, right: Any) -> bool:
    return all(isinstance(x, int | float) and not isinstance(x, bool) for x in (left, right))


_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": _same,
    "not_equals": lambda a, b: not _same(a, b),
    "in": lambda a, b: any(_same(a, x) for x in b),
    "not_in": lambda a, b: not any(_same(a, x) for x in b),
    "gt": lambda a, b: _numbers(a, b) and a > b,
    "gte": lambda a, b: _numbers(a, b) and a >= b,
    "lt": lambda a, b: _numbers(a, b) and a < b,
    "lte": lambda a, b: _numbers(a, b) and a <= b,
}


def _constant(value: Any) -> Getter:
    if isinstance(value, dict | list):
        return lambda root, run: copy.deepcopy(value)
    return lambda root, run: value


def _conditional(condition: Condition, then: Getter, else_: Getter | None) -> Getter:
    def choose(root: Any, run: Run) -> Any:
        if condition(root, run):
            return then(root, run)
        return None if else_ is None else else_(root, run)

    return choose


def _object(table: Table) -> Getter:
    def build(root: Any, run: Run) -> Any:
        return evaluate(table, root, run, run.target + ".")

    return build


def _list(getters: list[Getter]) -> Getter:
    def build(root: Any, run: Run) -> Any:
        values = (getter(root, run) for getter in getters)
        return [value for value in values if value is not None]

    return build


def _elements(items: Getter, raw: dict[str, Any], root: Any, run: Run) -> list[Any] | None:
    value = items(root, run)
    if value is None:
        return None
    if not isinstance(value, list):
        raise EvalError("type", f"each expects a list, got {type(value).__name__}", raw["each"])
    if len(value) > MAX_LIST_ITEMS:
        raise EvalError(
            "limit",
            f"each got {len(value):,} elements, more than the limit of {MAX_LIST_ITEMS:,}",
            raw["each"],
        )
    run.spend(len(value))
    return value


def _in_element(list_pointer: str, index: int, pointer: str) -> str:
    """A pointer relative to a list element, made absolute ("" when the list has no path)."""
    return f"{list_pointer}/{index}{pointer}" if list_pointer and pointer else ""


def _each_table(items: Getter, table: Table, raw: dict[str, Any]) -> Getter:
    list_pointer = source_pointer(raw["each"])

    def each(root: Any, run: Run) -> Any:
        elements = _elements(items, raw, root, run)
        if elements is None:
            return None
        base = run.target
        result = []
        for i, element in enumerate(elements):
            before = len(run.problems)
            result.append(evaluate(table, element, run, f"{base}[{i}]."))
            for n in range(before, len(run.problems)):
                problem = run.problems[n]
                where = _in_element(list_pointer, i, problem.pointer)
                run.problems[n] = replace(problem, pointer=where)
        return result

    return each


def _each_item(items: Getter, item: Getter, raw: dict[str, Any]) -> Getter:
    list_pointer = source_pointer(raw["each"])

    def each(root: Any, run: Run) -> Any:
        elements = _elements(items, raw, root, run)
        if elements is None:
            return None
        result = []
        for i, element in enumerate(elements):
            try:
                value = item(element, run)
            except EvalError as error:
                error.message = f"element {i}: {error.message}"
                inner = source_pointer(error.source) if error.pointer is None else error.pointer
                error.pointer = _in_element(list_pointer, i, inner)
                raise
            if value is not None:
                result.append(value)
        return result

    return each


def _render(parts: list[tuple[str, Getter | None, str]]) -> Getter:
    def render(root: Any, run: Run) -> Any:
        pieces: list[str] = []
        size = 0
        for literal, getter, name in parts:
            pieces.append(literal)
            if getter is None:
                continue
            value = getter(root, run)
            if value is None:
                return None
            if isinstance(value, dict | list):
                raise EvalError("template", f"var {name!r} is a {type(value).__name__}, not text")
            text = to_string(value)
            size += len(text) + len(literal)
            if size > MAX_STRING_LENGTH:
                raise EvalError("limit", f"template result longer than {MAX_STRING_LENGTH:,}")
            pieces.append(text)
        return "".join(pieces)

    return render


def _chain(pipeline: list[Transform]) -> Transform | None:
    """The transforms as one function that stops at the first null."""
    if not pipeline:
        return None
    if len(pipeline) == 1:
        return pipeline[0]
    first, *rest = pipeline
    if len(rest) == 1:
        (second,) = rest

        def two(value: Any) -> Any:
            value = first(value)
            return None if value is None else second(value)

        return two

    def many(value: Any) -> Any:
        for transform in pipeline:
            value = transform(value)
            if value is None:
                return None
        return value

    return many


def _finish(
    source: Getter, pipeline: list[Transform], default: Any, required: bool, described: str
) -> Getter:
    """One getter: source, then transforms (stopping at null), then default, then required."""
    chain = _chain(pipeline)
    if default is None and not required:
        return source if chain is None else _transformed(source, chain, described)
    default_get = None if default is None else _constant(default)

    def get(root: Any, run: Run) -> Any:
        value = source(root, run)
        try:
            if value is not None and chain is not None:
                value = chain(value)
        except EvalError as error:
            error.source = error.source or described
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            raise EvalError("transform", f"transform failed: {exc}", described) from None
        if value is None:
            if default_get is not None:
                return default_get(root, run)
            if required:
                raise EvalError("required", "required value is missing", described)
        return value

    return get
