"""Tables: compiled `target: spec` objects, evaluated into nested documents."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..errors import FieldProblem
from .casts import unstorable
from .expressions import Getter, Run, charge_output, output_too_big
from .limits import MAX_PROBLEMS
from .model import REMOVE, EvalError, LimitExceeded
from .paths import source_pointer


class Entry(NamedTuple):
    """One key of the document a table builds: a value (`get`) or a group of entries."""

    key: str
    get: Getter | None
    group: tuple[Entry, ...]
    nested: bool
    """True when the spec holds tables of its own (each, object): they need `run.target`."""
    target: str
    """The dotted target, for problems."""
    source: str
    """The source expression(s) of its spec, for a problem with its final value."""


Table = tuple[Entry, ...]


Leaf = tuple[str, Getter, bool, str]
"""(dotted target, getter, nested, source)"""


def build(leaves: list[Leaf], *, flat: bool = False) -> Table:
    """A table from (dotted target, getter, nested, source): targets sharing a parent share a
    group, so `evaluate` makes each intermediate object once instead of walking to it per
    field."""
    if flat:
        return tuple(Entry(t, get, (), nested, t, source) for t, get, nested, source in leaves)
    return _group([(tuple(leaf[0].split(".")), leaf) for leaf in leaves])


def _group(leaves: list[tuple[tuple[str, ...], Leaf]]) -> Table:
    children: dict[str, list[tuple[tuple[str, ...], Leaf]]] = {}
    order: list[tuple[str, Entry | None]] = []
    for parts, leaf in leaves:
        if len(parts) == 1:
            target, get, nested, source = leaf
            order.append((parts[0], Entry(parts[0], get, (), nested, target, source)))
            continue
        if parts[0] not in children:
            children[parts[0]] = []
            order.append((parts[0], None))
        children[parts[0]].append((parts[1:], leaf))
    return tuple(
        entry if entry is not None else Entry(key, None, _group(children[key]), False, key, "")
        for key, entry in order
    )


def record(run: Run, error: EvalError, target: str) -> None:
    """Add a payload problem naming the target field and the source expression."""
    if len(run.problems) >= MAX_PROBLEMS:
        run.dropped += 1
        return
    extra = {"target": target, "source": error.source}
    where = source_pointer(error.source) if error.pointer is None else error.pointer
    run.problems.append(FieldProblem(where, error.message, error.keyword, extra))


def evaluate(table: Table, root: Any, run: Run, prefix: str = "") -> dict[str, Any]:
    """The document a table builds from `root`; failures go to `run.problems`.

    Text is written as the partner sent it, in either Unicode form (a key or a secret changed
    to NFC would not be the one stored or sent before): only comparisons normalise."""
    document: dict[str, Any] = {}
    room = run.output
    for key, get, group, nested, target, source in table:
        if get is None:
            value = evaluate(group, root, run, prefix)
            if value:  # an object all of whose fields are missing is left out too
                document[key] = value
            continue
        if nested:
            run.target = prefix + target
        try:
            value = get(root, run)
            kind = type(value)
            if kind is str:  # the hot path: a text is its length (and quotes)
                run.output -= len(value) + 2
                if run.output < 0:
                    raise output_too_big(run)
            elif kind is dict or kind is list:
                charge_output(run, value)
            elif (kind is float or kind is int) and (error := unstorable(value)) is not None:
                error.source = source  # `to_number('1e999')`, with no transform to name it
                raise error
        except EvalError as error:
            _failed(run, error, prefix + target)
            continue
        if value is REMOVE:  # `{remove: true}`: the field's removal, a null written
            document[key] = None
        elif value is not None:
            document[key] = value
    run.built[id(document)] = (document, room - run.output, False)  # charged field by field
    return document


def _failed(run: Run, error: EvalError, target: str) -> None:
    """A field failed: its problem is listed (once); a spent budget stops the evaluation."""
    if not error.recorded:
        record(run, error, target)
        error.recorded = True
    if isinstance(error, LimitExceeded):
        raise error  # the budget is spent: stop the whole evaluation, not just this field
