"""Templates: `"text {name}"` with each `{name}` filled from a var's spec. Plain names only,
so a template cannot reach attributes, indexes, conversions or format specs."""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

from ..formats.json_tree import a_json_type
from .casts import to_string
from .expressions import Getter, Run
from .getters import describe, picked
from .limits import MAX_STRING_LENGTH
from .model import EvalError
from .paths import NAME_RE, pointer
from .problems import Problems

MAX_TEMPLATE = 10_000
_FORMATTER = string.Formatter()
CompileSpec = Callable[[Any, str, int], Getter | None]
"""(spec, pointer, depth) → getter, or None after reporting why not."""


def compile_template(
    text: Any, raw_vars: Any, at: str, depth: int, problems: Problems, spec: CompileSpec
) -> Getter | None:
    """The getter of `{template: text, vars: raw_vars}` at `at`, or None after reporting."""
    here = f"{at}/template"
    if not isinstance(text, str) or len(text) > MAX_TEMPLATE:
        problems.add(here, f"template is a string of at most {MAX_TEMPLATE} characters")
        return None
    if not isinstance(raw_vars, dict):
        problems.add(f"{at}/vars", "vars is an object of name: spec", "type")
        return None
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        message = f"template is malformed: {exc} (write {{{{ for a {{)"
        problems.add(here, message, "template")
        return None
    names = [name for _, name, _, _ in parsed if name is not None]
    if not _check_placeholders(parsed, raw_vars, here, problems):
        return None
    getters = {
        name: spec(var, f"{at}/vars{pointer(name)}", depth + 1) for name, var in raw_vars.items()
    }
    unused = [name for name in raw_vars if name not in names]
    for name in unused:
        problems.add(f"{at}/vars{pointer(name)}", f"var {name!r} is not used", "template")
    if unused or any(getter is None for getter in getters.values()):
        return None
    parts: list[tuple[str, Getter | None, str, str, bool]] = []
    for literal, name, _, _ in parsed:
        if name is None:
            parts.append((literal, None, "", "", False))
            continue
        var, getter = raw_vars[name], getters[name]
        assert getter is not None
        picks = _picks(var)
        parts.append((literal, picked(getter) if picks else getter, name, describe(var), picks))
    return _render(parts)


def _picks(var: Any) -> bool:
    """Whether a var's value comes from a `coalesce`, whose problem names the alternative
    that gave it (`run.matched`) rather than all of them."""
    return isinstance(var, dict) and "coalesce" in var and "else" not in var


def _check_placeholders(
    parsed: list[Any], raw_vars: dict[str, Any], at: str, problems: Problems
) -> bool:
    ok = True
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not NAME_RE.match(name) or spec or conversion:
            problems.add(
                at,
                f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} is not allowed: only plain names like "
                "{plate}, no attributes, indexes, conversions or format specs",
                "template",
            )
            ok = False
        elif name not in raw_vars:
            problems.add(at, f"placeholder {{{name}}} has no var {name!r}", "template")
            ok = False
    return ok


def _render(parts: list[tuple[str, Getter | None, str, str, bool]]) -> Getter:
    def render(root: Any, run: Run) -> Any:
        pieces: list[str] = []
        size = 0
        for literal, getter, name, source, picks in parts:
            pieces.append(literal)
            if getter is None:
                continue
            value = getter(root, run)
            if value is None:
                return None
            if isinstance(value, dict | list):
                message = f"var {name!r} is {a_json_type(value)}, not text"
                raise EvalError("template", message, (picks and run.matched) or source)
            text = to_string(value)
            size += len(text) + len(literal)
            if size > MAX_STRING_LENGTH:
                raise EvalError("limit", f"template result longer than {MAX_STRING_LENGTH:,}")
            pieces.append(text)
        return "".join(pieces)

    return render
