"""Turn jsonschema-rs errors into `FieldProblem`s that say which field and why.

Every message starts with the field's JSON Pointer, so it reads on its own in a log line or a
form: "/cpf: '529.982.247-26' is not a valid CPF: check digit mismatch".
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

import jsonschema_rs

from gateway.errors import MAX_PROBLEMS, FieldProblem
from gateway.formats.json_tree import shown
from gateway.schemas.ids import IDENTIFIERS

_MISSING = object()

UNEXPLAINED: Final = FieldProblem("", "document: one more problem, not explained", "unexplained")
"""Stands for each problem past the first MAX_PROBLEMS of a document that has more
(`problems_from_errors`, `CompiledSchema.problems`): it keeps their count, which is all an
answer says of them (InvalidPayload lists the first MAX_PROBLEMS, counts the rest)."""


def pointer(path: Iterable[str | int]) -> str:
    """RFC 6901 JSON Pointer for a path of keys and indexes."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def nul_key_problems(doc: Any, at: tuple[str | int, ...] = ()) -> list[FieldProblem]:
    """A problem for each member name in `doc` that holds a NUL byte: BSON cannot store one
    (its names end at NUL), and the database's own refusal names no member."""
    found: list[FieldProblem] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if "\x00" in key:
                where = pointer((*at, key))
                message = f"{where}: a member name cannot hold a NUL byte (\\u0000)"
                found.append(FieldProblem(where, message, "propertyNames"))
            elif isinstance(value, dict | list):
                found += nul_key_problems(value, (*at, key))
    elif isinstance(doc, list):
        for index, item in enumerate(doc):
            if isinstance(item, dict | list):
                found += nul_key_problems(item, (*at, index))
    return found


def root_problem(message: str, keyword: str) -> FieldProblem:
    return FieldProblem("", f"document: {message}", keyword)


def left_as_stored(
    problems: list[FieldProblem],
    doc: Any,
    stored: Mapping[str, Any],
    change: Mapping[str, Any],
    before: Collection[FieldProblem],
    keys: Iterable[str],
) -> tuple[list[FieldProblem], list[FieldProblem]]:
    """The problems of `doc`, the write `change` merged into the stored entity data
    `stored`: the write's own, and those it leaves as they are (`before`: the stored data's
    own problems). A problem the stored data had already (at the same pointer, by the same
    keyword at the same place in the schema) at a value the change did not send (neither
    it, nor a value holding it, nor one inside it: `_sent`) is the stored entity's, not the
    write's: a replaced schema or a newer rule refuses a value stored before it (a phone the
    gateway itself stored in E.164), and a write that does not touch it must not fail for
    it; that value stays as stored. A write sending it, even as stored, is checked as any. A
    problem at the entity's natural key (`keys`) is always the write's: it names the entity
    the write is for.

    The write's own are said without a value the write did not send: a writer (a partner)
    is never shown a stored value (one its trigger's `expose` hides, say), nor blamed for
    it. One at a value left as stored that the write's other changes make invalid (a member
    another member's value constrains) says so; one at an object the write merged into (the
    document itself, a member object) names its keyword only, for its value holds stored
    members. Those left say so, naming no value either."""
    identity = {pointer([key]) for key in keys}
    had = {(p.pointer, p.keyword, p.schema_at) for p in before}
    own: list[FieldProblem] = []
    left: list[FieldProblem] = []
    for problem in problems:
        top = "/".join(problem.pointer.split("/")[:2])
        if problem is UNEXPLAINED or top in identity:
            own.append(problem)
            continue
        where = problem.pointer
        touched = _sent(change, where)
        if touched is _MISSING and (where, problem.keyword, problem.schema_at) in had:
            message = (
                f"{where or 'document'}: the stored value does not meet the schema "
                f"({problem.keyword}), and this write leaves it as it is"
            )
            left.append(replace(problem, message=message))
            continue
        new, old = at_pointer(doc, where, _MISSING), at_pointer(stored, where, _MISSING)
        if new is _MISSING:  # a field missing: its message quotes no value
            own.append(problem)
        elif touched is _MISSING:
            message = (
                f"{where or 'document'}: the stored value, which this write leaves as it is, "
                f"does not meet the schema ({problem.keyword}) with the write's changes: send "
                "a valid value (null removes it)"
            )
            own.append(replace(problem, message=message))
        elif isinstance(touched, Mapping) and isinstance(old, dict):
            message = (
                f"{where or 'document'}: the stored value, with this write merged into it, "
                f"does not meet the schema ({problem.keyword})"
            )
            own.append(replace(problem, message=message))
        else:
            own.append(problem)
    return own, left


def _sent(change: Mapping[str, Any], where: str) -> Any:
    """What the merge patch `change` sent at the JSON Pointer `where`: its value there, an
    object it merged into there, or a value it replaced one holding `where` with (an array,
    a whole value's member absent from it, a null); `_MISSING` when it sent nothing there (a
    member it left as stored, or one of a whole value its writer cannot see and keeps)."""
    node: Any = change
    for part in where.split("/")[1:] if where else ():
        if not isinstance(node, Mapping):
            return node  # sent whole above `where`
        name = part.replace("~1", "/").replace("~0", "~")
        if name not in node:
            return _MISSING
        node = node[name]
    return node


def at_pointer(doc: Any, where: str, missing: Any = None) -> Any:
    """The value at the JSON Pointer `where` in `doc`, or `missing`."""
    for part in where.split("/")[1:] if where else ():
        name = part.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, Mapping) and name in doc:
            doc = doc[name]
        elif isinstance(doc, list) and name.isdigit() and int(name) < len(doc):
            doc = doc[int(name)]
        else:
            return missing
    return doc


def problems_from_errors(
    errors: Iterable[jsonschema_rs.ValidationError],
    schema: Mapping[str, Any],
    original: Any,
    limit: int = MAX_PROBLEMS,
) -> list[FieldProblem]:
    """Each error explained, up to `limit` problems; UNEXPLAINED for each past them (one
    error of unknown members is a problem per member: 90,000 of them were 90,000 look-ups
    for a close name)."""
    problems: list[FieldProblem] = []
    for error in errors:
        room = limit - len(problems)
        problems.extend(_explain(error, schema, original, room) if room > 0 else [UNEXPLAINED])
    return problems


def _explain(
    error: jsonschema_rs.ValidationError, schema: Mapping[str, Any], original: Any, room: int
) -> list[FieldProblem]:
    problems = _explained(error, schema, original, room)
    at = pointer(error.schema_path)
    return [p if p is UNEXPLAINED else replace(p, schema_at=at) for p in problems]


def _explained(
    error: jsonschema_rs.ValidationError, schema: Mapping[str, Any], original: Any, room: int
) -> list[FieldProblem]:
    path = list(error.instance_path)
    where = pointer(path)
    kind = error.kind
    keyword = kind.name
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        field = f"{where}/{_escape(kind.property)}"
        return [FieldProblem(field, f"{field}: required field is missing", keyword)]
    if isinstance(
        kind,
        jsonschema_rs.ValidationErrorKind.AdditionalProperties
        | jsonschema_rs.ValidationErrorKind.UnevaluatedProperties,
    ):
        known = _known_properties(schema, error.schema_path)
        names = list(kind.unexpected)
        explained = [unknown_field(where, name, known, keyword) for name in names[:room]]
        return explained + [UNEXPLAINED] * (len(names) - len(explained))
    value = _value_at(original, path)
    if value is _MISSING:
        value = error.instance
    return [FieldProblem(where, f"{where or 'document'}: {_reason(kind, value, error)}", keyword)]


def _reason(
    kind: jsonschema_rs.ValidationErrorKind, value: Any, error: jsonschema_rs.ValidationError
) -> str:
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Format):
        ident = IDENTIFIERS.get(kind.format)
        if ident is not None and isinstance(value, str):
            return f"{shown(value)} is not a valid {ident.label}: {ident.check(value)}"
        return f"{shown(value)} is not a valid {kind.format}"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Enum):
        return f"{shown(value)} is not one of {', '.join(shown(o) for o in kind.options)}"
    return error.message


def unknown_field(
    where: str, name: str, known: Sequence[str], keyword: str = "additionalProperties"
) -> FieldProblem:
    """`<where>/<name>: unknown field`, with "(did you mean 'x'?)" for a close known name: what
    every admin document says of a member it does not know."""
    field = f"{where}/{_escape(name)}"
    message = f"{field}: unknown field"
    if match := difflib.get_close_matches(name, known, n=1, cutoff=0.7):
        message += f" (did you mean {match[0]!r}?)"
    return FieldProblem(field, message, keyword)


def _known_properties(schema: Mapping[str, Any], schema_path: Sequence[str | int]) -> list[str]:
    """Property names declared next to the failing additionalProperties keyword.

    jsonschema-rs gives `schema_path` with local $refs already resolved, so a plain walk works.
    """
    node: Any = schema
    for part in schema_path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return []
    properties = node.get("properties") if isinstance(node, Mapping) else None
    return list(properties) if isinstance(properties, Mapping) else []


def _value_at(doc: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        try:
            doc = doc[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return doc


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")
