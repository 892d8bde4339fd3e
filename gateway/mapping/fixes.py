"""A position mapping's fix, checked as the append checks a fix (`fleet/fix.py`), each problem
named where the payload has it: the trigger, the dry run and `gateway mapping test` give the
same one (`/position/latitude`, "lat (from position.latitude): ..."), not the fix's own
path."""

from __future__ import annotations

from typing import Any

from gateway.errors import FieldProblem, InvalidPayload
from gateway.fleet.fix import Fix, parse_fix

from .engine import CompiledMapping
from .paths import source_pointer


def parse_mapped_fix(mapping: CompiledMapping, document: Any) -> Fix:
    """The fix `mapping` made (`document`), or InvalidPayload naming the targets and the
    sources of what is wrong (`mapped_fix_problem`)."""
    try:
        return parse_fix(document)
    except InvalidPayload as exc:
        raise mapped_fix_problem(mapping, exc) from None


def mapped_fix_problem(mapping: CompiledMapping, exc: InvalidPayload) -> InvalidPayload:
    """A fix a mapping made that is not a valid fix (a latitude sent as text the mapping does
    not cast), as a mapping problem: each names the target and the source it came from, and
    points into the payload where the source is a plain path."""
    problems = named_by_mapping(mapping, exc.problems)
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    detail = f"the fix mapping {mapping.name!r} made is invalid: {problems[0].message}{more}"
    return InvalidPayload(detail, problems, reason="mapping")


def named_by_mapping(
    mapping: CompiledMapping, problems: list[FieldProblem], also: int | None = None
) -> list[FieldProblem]:
    """Problems of a document `mapping` made (a fix, an entity the schema refuses; with
    `also`, the entity of the `also` entry at that place), each pointing at a field the
    mapping wrote named with its target and the source it came from (`year (from ano):
    ...`), and pointing into the payload where the source is a plain path (`/ano`); a source
    of several (a coalesce, a template) keeps the mapped document's pointer (`/year`).
    Others stay as they are."""
    named: list[FieldProblem] = []
    for problem in problems:
        target = problem.pointer.removeprefix("/").replace("/", ".")
        source = mapping.source_of(target, also) if target else None
        if not source:
            named.append(problem)
            continue
        why = problem.message.removeprefix(f"{problem.pointer}:").strip()
        named.append(
            FieldProblem(
                source_pointer(source) or problem.pointer,
                f"{target} (from {source}): {why}",
                problem.keyword,
                {**problem.extra, "target": target, "source": source},
            )
        )
    return named
