"""Tables: compiled `target: spec` objects, evaluated into nested documents."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..errors import FieldProblem
from .expressions import Getter, Run
from .limits import MAX_PROBLEMS
from .model import EvalError, LimitExceeded
from .paths import source_pointer


class Entry(NamedTuple):
    """One compiled `target: spec` line: where the value goes and how it is computed."""

    target: str
    parents: tuple[str, ...]
    leaf: str
    get: Getter
    nested: bool
    """True when the spec holds tables of its own (each, object): they need `run.target`."""


Table = tuple[Entry, ...]


def record(run: Run, error: EvalError, target: str) -> None:
    """Add a payload problem naming the target field and the source expression."""
    if len(run.problems) >= MAX_PROBLEMS:
        run.dropped += 1
        return
    extra = {"target": target, "source": error.source}
    run.problems.append(
        FieldProblem(source_pointer(error.source), error.message, error.keyword, extra)
    )


def evaluate(table: Table, root: Any, run: Run, prefix: str = "") -> dict[str, Any]:
    """The document a table builds from `root`; failures go to `run.problems`."""
    document: dict[str, Any] = {}
    for target, parents, leaf, get, nested in table:
        if nested:
            run.target = prefix + target
        try:
            value = get(root, run)
        except EvalError as error:
            if not error.recorded:
                record(run, error, prefix + target)
                error.recorded = True
            if isinstance(error, LimitExceeded):
                raise  # the budget is spent: stop the whole evaluation, not just this field
            continue
        if value is None:
            continue
        node = document
        for key in parents:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            node = child
        node[leaf] = value
    return document
