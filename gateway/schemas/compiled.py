"""One JSON Schema compiled once: normalise identifiers, validate, explain failures as problems.

The only home of `jsonschema_rs`. Validators never fetch a remote `$ref` (`offline=True`), and
the Brazilian identifier formats of `ids.py` are available to every schema.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import unquote

import jsonschema_rs
import orjson

from gateway.errors import MAX_PROBLEMS, FieldProblem, InvalidPayload
from gateway.formats.json_tree import (
    TOO_WIDE,
    as_numbers,
    as_texts,
    holds_wide_integers,
    plain_zeros,
    shown,
    wide_integers,
)
from gateway.schemas.ids import IDENTIFIERS
from gateway.schemas.problems import (
    UNEXPLAINED,
    at_pointer,
    pointer,
    problems_from_errors,
    root_problem,
)
from gateway.schemas.walk import (
    IdentifierInName,
    Normaliser,
    SchemaTooComplex,
    build_normaliser,
    has_path,
)

_FORMATS = {name: ident.is_valid for name, ident in IDENTIFIERS.items()}

BACKTRACK_LIMIT: Final = 10_000
"""The steps a pattern that needs backtracking may take on one string (fancy-regex's own
limit is 1,000,000, ~10 ms: 600 strings of a kind held the event loop 7-22 s). Only a
schema stored before such patterns were refused at upload (2026-12-06) has one; a string
it cannot decide within the limit is refused (`pattern`: "Max limit for backtracking")."""
_BOUNDED = jsonschema_rs.FancyRegexOptions(backtrack_limit=BACKTRACK_LIMIT)
_LINEAR = jsonschema_rs.RegexOptions()


@dataclass(frozen=True, slots=True, eq=False)
class CompiledSchema:
    """A ready validator plus what it needs to normalise documents and explain failures.

    `name` is the kind name for kind schemas, else None. Immutable and safe to share between
    threads and requests; treat `schema` as read-only.
    """

    schema: Mapping[str, Any]
    name: str | None
    _validator: jsonschema_rs.Validator
    _normaliser: Normaliser | None
    _referrers: Mapping[str, Sequence[str]]  # `_referrers`

    def normalise(self, doc: Any) -> Any:
        """`doc` with identifiers normalised, whole floats where the schema says `integer`
        made ints (`2000.0` is 2000) and negative zeros made 0.0 (`plain_zeros`), as a new
        top-level dict (the store may add `_id` to it); `doc` itself is never mutated."""
        out = doc if self._normaliser is None else self._normaliser.apply(doc)
        out = plain_zeros(out)
        return dict(out) if out is doc and isinstance(doc, dict) else out

    def validate(self, doc: Any) -> list[FieldProblem]:
        """Every problem in `doc`, after normalisation (so formatted identifiers pass)."""
        return self.problems(self.normalise(doc), doc)

    def check(self, doc: Any) -> dict[str, Any]:
        """The normalised document, or InvalidPayload listing every problem."""
        normalised = self.normalise(doc)
        problems = self.problems(normalised, doc)
        what = str(self.schema.get("title", "document"))
        if problems:
            raise invalid(what, problems)
        if not isinstance(normalised, dict):
            raise invalid(what, [root_problem("must be a JSON object", "type")])
        return normalised

    def problems(
        self, normalised: Any, original: Any, limit: int = MAX_PROBLEMS
    ) -> list[FieldProblem]:
        """Validate an already normalised document; messages quote values from `original`.
        More problems than `limit` (what an answer lists, MAX_PROBLEMS, unless the caller
        needs more: `SchemaRegistry.check_write`) are not explained one by one:
        jsonschema-rs's `iter_errors` builds every error as a Python exception before the
        first is read (13 us each: 250,000 wrong items held the event loop 3 s), and has no
        way to stop early; its `evaluate` lists them as plain entries ten times faster. Its
        entries list each failed branch of an anyOf/oneOf, which `iter_errors` gives as one
        error of the applicator: they are counted as such (`_failures`). So with more failures
        than that many, the first MAX_PROBLEMS are the validator's own messages at their
        pointers (`_plain_problem`) and each of the rest is UNEXPLAINED, counted by
        InvalidPayload (`omitted`), never listed. Each problem says where its keyword sits in
        the schema (`FieldProblem.schema_at`).
        A wide integer (`WideInt`) is a number to the schema, which the database stores as
        its text: it must be valid both ways (`_wide_problems`)."""
        if holds_wide_integers(normalised):
            return self._wide_problems(normalised, original, limit)
        try:
            if self._validator.is_valid(normalised):
                return []
            found = self._validator.evaluate(normalised).errors()
            failures = _failures(found, self._referrers) if len(found) > limit else {}
            if len(failures) > limit:
                listed = [
                    _plain_problem(entry, at, original)
                    for entry, at in list(failures.items())[:MAX_PROBLEMS]
                ]
                return listed + [UNEXPLAINED] * (len(failures) - MAX_PROBLEMS)
            errors = list(self._validator.iter_errors(normalised))
        except ValueError as exc:  # a value JSON cannot carry, e.g. a datetime
            return [root_problem(f"not a JSON document: {exc}", "type")]
        return problems_from_errors(errors, self.schema, original, limit)

    def _wide_problems(self, normalised: Any, original: Any, limit: int) -> list[FieldProblem]:
        """The problems of a document holding integers past 64 bits: validated with them as
        the numbers they are (where text is wanted, or a `const` is text, one is refused as
        a narrow number is), and as the text it would be stored as, where only the problems
        at such an integer count: a number is wanted there (the database holds none that
        wide). Where any value is allowed (a free-form field) its digits are kept."""
        problems = self.problems(as_numbers(normalised), original, limit)
        wide = dict(wide_integers(normalised))
        seen = {problem.pointer for problem in problems}
        for problem in self.problems(as_texts(normalised), original, limit):
            where = problem.pointer
            if where in wide and where not in seen:
                message = f"{where or 'document'}: {shown(wide[where])} {TOO_WIDE}"
                problems.append(replace(problem, message=message))
                seen.add(where)
        return problems

    def has_field(self, path: str) -> bool:
        """Whether the dotted `path` ("cnh.number") can be written as a field of a valid
        document: each part an object's key, as a mapping's target builds it (`answers.0`
        would be `{"answers": {"0": ...}}`, never an array's item). Anything below a
        free-form object (like `attributes`) counts as existing."""
        return has_path(self.schema, path.split("."), indexes=False)


_Failure = tuple[str, str, str]  # (instance pointer, keyword, the validator's message or "")
_BRANCHING: Final = frozenset({"anyOf", "oneOf"})
# What a subschema's keyword steps into, as a schema location spells it after a branch of an
# anyOf/oneOf: a member or an item of the instance (one step of its pointer), or nothing (the
# same instance); each named or indexed one takes the name or index that follows it.
_INTO_NAMED: Final = {"properties": 1, "patternProperties": 1, "dependentSchemas": 0}
_INTO_INDEXED: Final = {"prefixItems": 1, "allOf": 0, "anyOf": 0, "oneOf": 0}
_MAX_REF_HOPS: Final = 8  # `$ref`s followed back from one location (a chain, or a cycle)
_INTO: Final = frozenset(
    {"items", "additionalProperties", "unevaluatedItems", "unevaluatedProperties", "contains"}
)


def _failures(
    entries: Sequence[Mapping[str, Any]], referrers: Mapping[str, Sequence[str]]
) -> dict[_Failure, str]:
    """The failures an evaluation's error entries stand for, in order, once each: what
    `iter_errors` yields one error for. An entry in a branch of an anyOf or a oneOf that
    failed as a whole (each of its branches lists its own) is that applicator's failure, at
    the instance it applied to; every other entry is a failure of its own. An entry's
    location is where its keyword sits, a `$ref`'s target for one reached through it: read
    from the `$ref` that names the target (`referrers`), a branch that is a `$ref` is one.
    Each with its keyword's place in the schema (the applicator's, for a branch's)."""
    found: dict[_Failure, str] = {}
    for entry in entries:
        where = str(entry["instanceLocation"])
        parts = _through_refs(str(entry["schemaLocation"]).split("/"), where, referrers)
        for i, part in enumerate(parts[:-1]):
            if part in _BRANCHING and parts[i + 1].isdigit():
                steps = _steps(parts[i + 2 :])
                if steps:
                    where = "/".join(where.split("/")[:-steps])
                found.setdefault((where, part, ""), "/".join(parts[: i + 1]))
                break
        else:
            keyword = parts[-1]
            found.setdefault((where, keyword, str(entry["error"])), "/".join(parts))
    return found


def _through_refs(
    parts: list[str], where: str, referrers: Mapping[str, Sequence[str]]
) -> list[str]:
    """A schema location's parts with the target of a `$ref` its start lies in (the
    innermost first) replaced by the location of the `$ref` the entry at the instance
    `where` came through, as long as one is known: the target's only referrer, or the one
    whose place in the document is where the entry's instance lies (`_lies_at`)."""
    for _ in range(_MAX_REF_HOPS):
        for end in range(len(parts), 1, -1):
            places = referrers.get("/".join(parts[:end]))
            if places is not None:
                break
        else:
            return parts
        if len(places) > 1:
            instance = where.split("/")[1:]
            at_ref = instance[: len(instance) - _steps(parts[end:])]
            places = [p for p in places if _lies_at(p.split("/")[1:], at_ref)]
            if len(places) != 1:
                return parts
        parts = [*places[0].split("/"), *parts[end:]]
    return parts


def _lies_at(location: list[str], instance: list[str]) -> bool:
    """Whether the subschema at the schema `location` (from the root, through no `$ref`)
    applies to the instance at the pointer parts `instance`."""
    place: list[str] = []
    i = 0
    while i < len(location):
        part = location[i]
        name = location[i + 1] if i + 1 < len(location) else ""
        if part in ("properties", "prefixItems"):  # a member or an item of its own
            place.append(name)
            i += 2
        elif part == "patternProperties":  # the members whose names match
            place.append("*")
            i += 2
        elif part in ("dependentSchemas", "allOf", *_BRANCHING):  # the same instance
            i += 2
        elif part in _INTO:  # any member or item
            place.append("*")
            i += 1
        elif part in ("not", "if", "then", "else"):
            i += 1
        else:  # in $defs: where it applies depends on the $ref that names it
            return False
    if len(place) != len(instance):
        return False
    return all(p in ("*", n) for p, n in zip(place, instance, strict=True))


def _referrers(schema: Any) -> dict[str, tuple[str, ...]]:
    """For each subschema a `$ref` of the schema names by a JSON Pointer (`#/$defs/s`), the
    locations of the schemas holding such a `$ref` (JSON Pointers all)."""
    found: dict[str, list[str]] = {}
    stack: list[tuple[Any, str]] = [(schema, "")]
    while stack:
        node, at = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/"):
                found.setdefault(unquote(ref[1:]), []).append(at)
            stack.extend((value, at + pointer([key])) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((item, f"{at}/{i}") for i, item in enumerate(node))
    return {target: tuple(places) for target, places in found.items()}


def _steps(location: list[str]) -> int:
    """How many steps of the instance's pointer a schema location below a branch takes (its
    last part is the failing keyword, which takes none)."""
    steps = i = 0
    while i < len(location) - 1:
        part = location[i]
        if part in _INTO_NAMED or part in _INTO_INDEXED:
            steps += _INTO_NAMED.get(part, 0) + _INTO_INDEXED.get(part, 0)
            i += 2
        else:
            steps += part in _INTO
            i += 1
    return steps


def _plain_problem(failure: _Failure, at: str, original: Any) -> FieldProblem:
    """A problem from one failure of an evaluation (`_failures`), whose keyword sits at
    `at` in the schema: its instance's pointer, the validator's message (an anyOf's or
    oneOf's said as `iter_errors` says it, quoting the value sent), the keyword."""
    where, keyword, message = failure
    if not message:
        value = at_pointer(original, where)
        message = f"{shown(value)} is not valid under any of the schemas listed in the "
        message += f"'{keyword}' keyword"
    return FieldProblem(where, f"{where or 'document'}: {message}", keyword, schema_at=at)


def invalid(what: str, problems: list[FieldProblem]) -> InvalidPayload:
    """InvalidPayload whose detail quotes the first problem, for logs and one-line UIs."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return InvalidPayload(f"{what} is invalid: {problems[0].message}{more}", problems=problems)


def compile_schema(
    schema: Mapping[str, Any], *, name: str | None = None, at: str = "", stored: bool = False
) -> CompiledSchema:
    """Compile a Draft 2020-12 schema with the identifier formats.

    An invalid schema raises InvalidPayload whose problem points into the schema (prefixed by
    the JSON Pointer `at`). Compiled schemas are cached by content, so compiling the same
    tenant schema on every request costs a serialisation, not a compilation.

    Its patterns (`pattern`, `patternProperties`, `propertyNames`) must run on a linear-time
    engine (Rust's regex crate): one that needs backtracking (a lookaround, a backreference)
    is refused, unless the schema is `stored` (kept before that rule: `BACKTRACK_LIMIT`).
    """
    if not isinstance(schema, Mapping):
        problem = FieldProblem(at, f"{at or 'schema'}: must be a JSON object", "type")
        raise invalid("schema", [problem])
    if holds_wide_integers(schema):
        # Stored, the schema would hold its text: a `const` of it would match that text.
        problems = [
            FieldProblem(at + where, f"{at + where}: {shown(value)} {TOO_WIDE}", "type")
            for where, value in wide_integers(schema)
        ]
        raise invalid("schema", problems)
    if not stored and (problem := _draft_problem(schema, at)) is not None:
        raise invalid("schema", [problem])
    try:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        problem = FieldProblem(at, f"{at or 'schema'}: not JSON: {exc}", "type")
        raise invalid("schema", [problem]) from None
    try:
        compiled = _compile(key, name)
        if not stored:
            _linear(key)
        return compiled
    except _Backtracking as exc:
        problem = FieldProblem(at + exc.at, f"{at + exc.at}: {exc}", "pattern")
        raise invalid("schema", [problem]) from None
    except jsonschema_rs.ValidationError as exc:
        where = at + pointer(exc.instance_path)
        message = exc.message.split("\n", 1)[0]
        problem = FieldProblem(where, f"{where or 'schema'}: {message}", "schema")
        raise invalid("schema", [problem]) from None
    except SchemaTooComplex as exc:
        problem = FieldProblem(at, f"{at or 'schema'}: too complex: {exc}", "complexity")
        raise invalid("schema", [problem]) from None
    except IdentifierInName as exc:
        where = at + exc.at
        problem = FieldProblem(where, f"{where}: {exc}", "format")
        raise invalid("schema", [problem]) from None


READ_DRAFTS: Final = ("draft/2020-12", "draft-07")
"""The JSON Schema drafts a schema may declare (`$schema`): the validator reads Draft
2020-12, and a draft-07 schema's keywords as that draft means them (`definitions`,
`dependencies`; its array `items` is refused). Another draft's keywords would be half read
(2019-09's `$recursiveRef` ignored, so what it guards goes unchecked)."""
_DRAFT_URI = re.compile(r"^https?://json-schema\.org/(draft/2020-12|draft-07)/schema#?$")


def _draft_problem(schema: Mapping[str, Any], at: str) -> FieldProblem | None:
    """A problem at `$schema` when it names a draft the validator does not read as written
    (READ_DRAFTS); a schema saved before this rule (2026-12-06) keeps compiling (`stored`)."""
    declared = schema.get("$schema")
    if declared is None or (isinstance(declared, str) and _DRAFT_URI.match(declared)):
        return None
    where = f"{at}/$schema"
    message = (
        f"{where}: {shown(declared, 100)} is not read: schemas are Draft 2020-12 "
        "(https://json-schema.org/draft/2020-12/schema; draft-07 is read too); leave "
        "$schema out, or name one of them"
    )
    return FieldProblem(where, message, "schema")


@functools.lru_cache(maxsize=512)
def _compile(key: bytes, name: str | None) -> CompiledSchema:
    schema: dict[str, Any] = orjson.loads(key)
    return CompiledSchema(
        schema,
        name,
        _validator(schema, _BOUNDED),
        build_normaliser(schema),
        _referrers(schema),
    )


def _validator(
    schema: dict[str, Any], patterns: jsonschema_rs.FancyRegexOptions | jsonschema_rs.RegexOptions
) -> jsonschema_rs.Validator:
    return jsonschema_rs.Draft202012Validator(
        schema,
        formats=_FORMATS,
        validate_formats=True,
        ignore_unknown_formats=False,
        offline=True,  # never fetch a remote $ref, whoever wrote the schema
        pattern_options=patterns,
    )


class _Backtracking(Exception):
    def __init__(self, at: str, pattern: Any) -> None:
        super().__init__(
            f"{shown(pattern)} needs a backtracking engine (a lookaround such as (?=, (?!, "
            "(?<=, (?<!, or a backreference such as \\1): patterns run on a linear-time "
            "engine, so write it without them (e.g. a second pattern in an allOf)"
        )
        self.at = at


@functools.lru_cache(maxsize=512)
def _linear(key: bytes) -> None:
    """_Backtracking when a pattern of the schema (which compiles with backtracking) does
    not compile on the linear-time engine: the error points at the pattern. A schema that
    passed is not compiled again (cached by content, as `_compile` is: each start of a
    process compiled the shipped schemas' second validator, ~1.3 ms, and each test starts
    one); one that failed raises again, each time."""
    try:
        _validator(orjson.loads(key), _LINEAR)
    except jsonschema_rs.ValidationError as exc:
        raise _Backtracking(pointer(exc.instance_path), exc.instance) from None
