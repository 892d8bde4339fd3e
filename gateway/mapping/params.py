"""Parameters: values a mapping declares (`params:`) and each trigger sets (`"params": {...}`),
such as the distance unit of a partner's account.

A mapping reads a parameter with the source `{param: name}`, or as a transform's argument:
`{convert: {from: {param: distance_unit}, to: km}}`. Parameters are bound when the mapping
compiles, so they cost nothing per payload: `CompiledMapping.bind(values)` recompiles the
file once per set of values, and a value that does not fit (a speed unit where a distance
unit is declared) is a compile problem that names the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import FieldProblem
from ..formats.json_tree import shown, text_refused
from .conditions import json_equal
from .model import EvalError
from .paths import NAME_RE, pointer
from .problems import Problems, suggest
from .units import KINDS, UNITS

PARAM_KEYS = ("description", "default", "enum", "unit")
MAX_PARAMS = 50
_MAX_CHOICES = 100
_MAX_TEXT = 1_000
_MISSING: Any = object()
Report = Callable[..., None]
"""report(message, *pointer_parts_below_the_transform)."""


@dataclass(frozen=True, slots=True)
class Param:
    """One declared parameter: its default (or none: then a trigger must set it), and the
    values it may take (an `enum`, or the units of one `unit` kind)."""

    name: str
    default: Any = _MISSING
    enum: tuple[Any, ...] | None = None
    unit: str | None = None

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def refuses(self, value: Any) -> str | None:
        """Why `value` is not allowed, or None."""
        if not _scalar(value):
            return f"param {self.name!r} takes text, a number or true/false"
        if self.unit is not None and (not isinstance(value, str) or UNITS.get(value) is None):
            units = [name for name, unit in UNITS.items() if unit.kind == self.unit]
            return f"param {self.name!r} is a {self.unit} unit: one of {', '.join(units)}"
        if self.unit is not None and UNITS[value].kind != self.unit:
            return f"param {self.name!r} is a {self.unit} unit, not a {UNITS[value].kind} unit"
        if self.enum is not None and not any(json_equal(value, choice) for choice in self.enum):
            return f"param {self.name!r} is one of {', '.join(map(shown, self.enum))}"
        return None

    def placeholder(self) -> Any:
        """A value that fits, to check the transforms that read an unset parameter."""
        if self.unit is not None:
            return next(name for name, unit in UNITS.items() if unit.kind == self.unit)
        return self.enum[0] if self.enum else _MISSING


@dataclass(frozen=True, slots=True)
class ParamScope:
    """The parameters one compilation sees: their declarations and their values."""

    declared: Mapping[str, Param]
    values: Mapping[str, Any]

    def value(self, name: str) -> Any:
        """The bound value or the default; `MISSING` when neither exists."""
        value = self.values.get(name, _MISSING)
        return self.declared[name].default if value is _MISSING else value


MISSING = _MISSING
NO_PARAMS = ParamScope({}, {})


def compile_params(raw: Any, problems: Problems) -> dict[str, Param]:
    """The declarations of `params:`, every problem reported under /params."""
    if not isinstance(raw, dict) or len(raw) > MAX_PARAMS:
        problems.add("/params", f"params is an object of at most {MAX_PARAMS} params", "type")
        return {}
    declared = {}
    for name, spec in raw.items():
        at = f"/params{pointer(name)}"
        if not NAME_RE.match(name):
            problems.add(at, f"param name {name!r} is letters, digits and '_'", "pattern")
        else:
            # A faulty declaration is reported once: its uses still find the name.
            declared[name] = _declaration(name, spec, at, problems) or Param(name)
    return declared


def _declaration(name: str, spec: Any, at: str, problems: Problems) -> Param | None:
    if not isinstance(spec, dict):
        problems.add(at, "a param is an object: {description, default, enum, unit}", "type")
        return None
    ok = True
    for key in spec:
        if key not in PARAM_KEYS:
            hint = suggest(key, PARAM_KEYS)
            problems.add(f"{at}{pointer(key)}", f"unknown key {key!r}{hint}", "unknown")
            ok = False
    enum, unit = spec.get("enum"), spec.get("unit")
    if refused := text_refused(spec.get("description", ""), _MAX_TEXT):
        problems.add(f"{at}/description", f"description is text of at most {_MAX_TEXT}", refused)
        ok = False
    if enum is not None and not _choices(enum):
        message = f"enum is a list of 1 to {_MAX_CHOICES} texts, numbers or booleans"
        problems.add(f"{at}/enum", message, "type")
        ok = False
    if unit is not None and unit not in KINDS:
        problems.add(f"{at}/unit", f"unit is one of {', '.join(KINDS)}", "enum")
        ok = False
    if not ok:
        return None
    param = Param(name, spec.get("default", _MISSING), tuple(enum) if enum else None, unit)
    if not param.required and (why := param.refuses(param.default)):
        problems.add(f"{at}/default", f"default: {why}", "param")
        return None
    return param


def value_problems(
    declared: Mapping[str, Param], values: Mapping[str, Any], *, complete: bool
) -> list[FieldProblem]:
    """What is wrong with a trigger's `values`: undeclared names and values that do not fit,
    and with `complete`, required parameters left unset. Pointers are /params/<name>."""
    problems = []
    for name, value in values.items():
        at = f"/params{pointer(name)}"
        param = declared.get(name)
        if param is None:
            known = ", ".join(declared) or "none"
            message = f"unknown param {name!r}{suggest(name, declared)}; declared: {known}"
            problems.append(FieldProblem(at, message, "param"))
        elif why := param.refuses(value):
            problems.append(FieldProblem(at, why, "param"))
    if complete:
        for name, param in declared.items():
            if param.required and name not in values:
                message = f"param {name!r} is required (it has no default)"
                problems.append(FieldProblem(f"/params{pointer(name)}", message, "required"))
    return problems


def resolve_arguments(item: Any, scope: ParamScope, report: Report) -> Resolved | None:
    """A transform with its `{param: name}` arguments replaced by values: the argument
    itself, or a member of an argument object (not inside `map`'s `values`, which is data).
    None after reporting an undeclared parameter."""
    if not isinstance(item, dict) or len(item) != 1:
        return Resolved(item)
    ((name, arg),) = item.items()
    unset_names: list[str] = []
    checkable = True
    ok = True

    def resolve(value: Any, *parts: str) -> Any:
        nonlocal checkable, ok
        ref = _reference(value)
        if ref is None:
            return value
        param = scope.declared.get(ref)
        if param is None:
            known = ", ".join(scope.declared) or "none"
            report(f"param {ref!r} is not declared in params (declared: {known})", *parts)
            ok = False
            return value
        found = scope.value(ref)
        if found is not _MISSING:
            return found
        unset_names.append(ref)
        found = param.placeholder()
        checkable = checkable and found is not _MISSING
        return found

    if _reference(arg) is not None:
        arg = resolve(arg, name, "param")
    elif isinstance(arg, dict):
        arg = {
            key: value if (name, key) == ("map", "values") else resolve(value, name, key, "param")
            for key, value in arg.items()
        }
    if not ok:
        return None
    return Resolved({name: arg}, tuple(unset_names), checkable)


class Resolved(NamedTuple):
    item: Any
    unset: tuple[str, ...] = ()
    """Parameters without a value: the transform fails at run time (placeholders, if any,
    stand in for them so the file is still checked)."""
    checkable: bool = True


def _reference(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("param"), str):
        return str(value["param"])
    return None


def unset(name: str) -> EvalError:
    return EvalError("param", f"param {name!r} is not set: set it on the trigger's params")


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool) and len(str(value)) <= _MAX_TEXT


def _choices(enum: Any) -> bool:
    return isinstance(enum, list) and 0 < len(enum) <= _MAX_CHOICES and all(map(_scalar, enum))
