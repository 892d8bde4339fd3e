"""The runtime pieces of specs: closures built once when a mapping compiles, called per payload.

Each takes `(root, run)` and gives a value or None (a missing value), or raises EvalError.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..clock import utcnow
from ..formats.json_tree import a_json_type, shown
from .casts import unstorable
from .expressions import Getter, Run, charge_output, output_too_big
from .limits import MAX_LIST_ITEMS
from .model import EvalError
from .params import unset
from .paths import source_pointer
from .secret_marks import WHOLE, holds_mark
from .tables import Table, evaluate
from .timefmt import iso_utc
from .transforms import Pipeline, Transform

Condition = Callable[[Any, Run], bool]


def constant(value: Any) -> Getter:
    if isinstance(value, dict | list):
        return lambda root, run: copy.deepcopy(value)
    return lambda root, run: value


def secret_getter(name: str) -> Getter:
    def get_secret(root: Any, run: Run) -> Any:
        value = run.secrets.get(name)
        if value is None:
            raise EvalError("secret", f"secret {name!r} was not provided")
        return value

    return get_secret


def received_time(root: Any, run: Run) -> str:
    """`{received: time}`: when the gateway received the payload (a replay: when its first
    request came), as UTC ISO 8601 text; the device time of a tracker that sends none. The run
    notes it (`Run.at_receipt`): a copy of the payload sent later maps to another value."""
    run.at_receipt = True
    return iso_utc(run.received or utcnow())


def unset_getter(name: str) -> Getter:
    def fail(root: Any, run: Run) -> Any:
        raise unset(name)

    return fail


def main_getter(target: str) -> Getter:
    parts = target.split(".")

    def from_main(root: Any, run: Run) -> Any:
        value: Any = run.main
        for part in parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return copy.deepcopy(value) if isinstance(value, dict | list) else value

    return from_main


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


def coalesced(getters: list[Getter], sources: list[str]) -> Getter:
    """The first alternative that gives a value; `sources[i]` is the source of alternative
    `i`, noted in `run.matched` for a problem with the value (see `picked`)."""
    choices = list(zip(getters, sources, strict=True))

    def first_non_null(root: Any, run: Run) -> Any:
        for getter, source in choices:
            value = getter(root, run)
            if value is not None:
                run.matched = source
                return value
        return None

    return first_non_null


def picked(source: Getter) -> Getter:
    """A `coalesce` spec's getter that forgets which alternative an earlier one took, so a
    problem with its value names the source it took (`run.matched`) or none."""

    def get(root: Any, run: Run) -> Any:
        run.matched = None
        return source(root, run)

    return get


def _named(run: Run, described: str, picks: bool) -> str:
    """A problem's source: the alternative a coalesce took, else the spec's own."""
    return (run.matched or described) if picks else described


def conditional(condition: Condition, then: Getter, else_: Getter | None) -> Getter:
    def choose(root: Any, run: Run) -> Any:
        if condition(root, run):
            return then(root, run)
        return None if else_ is None else else_(root, run)

    return choose


def object_of(table: Table) -> Getter:
    """`object: {...}`: the object its fields build; null (the field left out, which
    `required` refuses) when every field is left out, as a nested target's object is: `{}`
    would replace the stored value with nothing."""

    def build(root: Any, run: Run) -> Any:
        return evaluate(table, root, run, run.target + ".") or None

    return build


def list_of(getters: list[Getter]) -> Getter:
    """`list: [...]`: its specs' values, nulls dropped; null when every one is (a report
    without `grupo` or `regiao` leaves a vehicle's `groups` as stored, not emptied)."""

    def build(root: Any, run: Run) -> Any:
        values = (getter(root, run) for getter in getters)
        return [value for value in values if value is not None] or None

    return build


# -- each --------------------------------------------------------------------------------------


def _elements(items: Getter, expression: str, root: Any, run: Run) -> list[Any] | None:
    value = items(root, run)
    if value is None:
        return None
    if not isinstance(value, list):
        raise EvalError("type", f"each expects an array, got {a_json_type(value)}", expression)
    if len(value) > MAX_LIST_ITEMS:
        raise EvalError(
            "limit",
            f"each got {len(value):,} elements, more than the limit of {MAX_LIST_ITEMS:,}",
            expression,
        )
    run.spend(len(value))
    return value


def _in_element(list_pointer: str, index: int, pointer: str) -> str:
    """A pointer relative to a list element, made absolute ("" when the list has no path)."""
    return f"{list_pointer}/{index}{pointer}" if list_pointer and pointer else ""


def each_table(items: Getter, table: Table, expression: str) -> Getter:
    """One object per element: the element is the root of the table's specs."""
    list_pointer = source_pointer(expression)

    def each(root: Any, run: Run) -> Any:
        elements = _elements(items, expression, root, run)
        if elements is None:
            return None
        base = run.target
        room = run.output
        result = []
        for i, element in enumerate(elements):
            before = len(run.problems)
            result.append(evaluate(table, element, run, f"{base}[{i}]."))
            for n in range(before, len(run.problems)):
                problem = run.problems[n]
                where = _in_element(list_pointer, i, problem.pointer)
                run.problems[n] = replace(problem, pointer=where)
        # Its objects were charged as evaluate built them: the list is charged now.
        run.output -= 1 + len(result)
        if run.output < 0:
            raise output_too_big(run)
        run.built[id(result)] = (result, room - run.output, False)
        return result

    return each


def each_item(items: Getter, item: Getter, expression: str) -> Getter:
    """One value per element; null values are dropped."""
    list_pointer = source_pointer(expression)

    def each(root: Any, run: Run) -> Any:
        elements = _elements(items, expression, root, run)
        if elements is None:
            return None
        room = run.output
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
                charge_output(run, value)  # an item is no table: evaluate does not charge it
                result.append(value)
        run.output -= 1 + len(result)
        if run.output < 0:
            raise output_too_big(run)
        run.built[id(result)] = (result, room - run.output, False)  # charged item by item
        return result

    return each


# -- transforms, default, required ---------------------------------------------------------------


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


def _transformed(
    source: Getter, chain: Transform, steps: int, described: str, picks: bool
) -> Getter:
    def get(root: Any, run: Run) -> Any:
        value = source(root, run)
        if value is None:
            return None
        run.spend(steps)
        _whole(value, run, described, picks)
        try:
            value = chain(value)
        except EvalError as error:
            error.source = error.source or _named(run, described, picks)
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            named = _named(run, described, picks)
            raise EvalError("transform", f"transform failed: {exc}", named) from None
        return _finite(value, _named(run, described, picks))

    return get


def _whole(value: Any, run: Run, described: str, picks: bool) -> None:
    """A secret is sent whole: transforms given a value holding one's mark are refused,
    whatever they would make of it (`secret_marks.py`)."""
    if run.secrets and holds_mark(value):
        raise EvalError("secret", f"{WHOLE} ({shown(value)})", _named(run, described, picks))


def _finite(value: Any, described: str) -> Any:
    """A transformed number that overflowed (1e308 knots in km/h, an integer scaled past 64
    bits) is its source's problem, named with it (the table's own check would know only the
    target)."""
    error = unstorable(value)
    if error is None:
        return value
    error.source = described
    raise error


def finish(
    source: Getter,
    pipeline: Pipeline,
    default: Any,
    required: bool,
    described: str,
    *,
    picks: bool = False,
) -> Getter:
    """One getter: source, then transforms (stopping at null; the run charged what they may
    cost, `pipeline.steps`), then default, then required. `picks`: the source is a
    `coalesce`, so a transform's problem names the alternative it took."""
    chain, steps = _chain(pipeline.transforms), pipeline.steps
    if chain is not None and picks:
        source = picked(source)
    if default is None and not required:
        return source if chain is None else _transformed(source, chain, steps, described, picks)
    default_get = None if default is None else constant(default)

    def get(root: Any, run: Run) -> Any:
        value = given = source(root, run)
        try:
            if value is not None and chain is not None:
                run.spend(steps)
                _whole(value, run, described, picks)
                value = _finite(chain(value), _named(run, described, picks))
        except EvalError as error:
            error.source = error.source or _named(run, described, picks)
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            named = _named(run, described, picks)
            raise EvalError("transform", f"transform failed: {exc}", named) from None
        if value is None:
            if default_get is not None:
                return default_get(root, run)
            if required:
                if given is not None:  # a transform read no value from it
                    why = _read_nothing(given, pipeline)
                    raise EvalError("required", why, _named(run, described, picks))
                raise EvalError("required", "required value is missing", described)
        return value

    return get


def _read_nothing(value: Any, pipeline: Pipeline) -> str:
    """Why the transforms gave a required field no value from the `value` its source had
    ("ABC–1234" to `plate`, "N/A" to `cpf`): the transform that gave null and what it was
    given. Found by applying them again, one by one, only on this failure."""
    for name, transform in zip(pipeline.names, pipeline.transforms, strict=True):
        read = transform(value)
        if read is None:
            return f"the {name} transform reads no value from {shown(value)} (a required field)"
        value = read
    raise AssertionError("the transforms read a value, which the chain did not")
