"""Static walks over a raw JSON Schema: where identifiers live, and which field paths exist.

Both follow `properties`, `patternProperties`, `additionalProperties`, `items`, local `$ref`s
and `allOf`/`anyOf`/`oneOf` (a path that exists in any branch exists). Remote `$ref`s are
never followed — compiled schemas refuse them anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs

from gateway.schemas.ids import IDENTIFIERS

COMBINATORS = ("allOf", "anyOf", "oneOf")
_MAX_DEPTH = 64  # recursive schemas ("a tree of nodes") stop here instead of looping
MAX_VISITS = 20_000
"""Subschemas one walk visits. Depth alone does not bound a walk: a schema whose `$ref`s
branch and recur (two recursive properties in each of three `oneOf` arms) has exponentially
many paths under the depth limit, and would hold a process for minutes."""


class SchemaTooComplex(ValueError):
    """A walk over a schema visited more than MAX_VISITS subschemas."""


@dataclass(slots=True)
class _Budget:
    left: int = MAX_VISITS
    # `has_path`'s answers by (subschema, the path's parts left, depth): a walk that meets a
    # subschema again with the same rest of the path (its anyOf arms $ref the same recursive
    # definition) answers from here instead of walking it again, exponentially.
    answers: dict[tuple[int, int, int], bool] = field(default_factory=dict)
    # `build_normaliser`'s (subschema, depth) pairs that hold no identifier format: met again
    # (a recursive definition $ref'd from many places), they are not walked again.
    barren: set[tuple[int, int]] = field(default_factory=set)

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise SchemaTooComplex(
                f"its $refs and combinators branch into more than {MAX_VISITS:,} subschemas"
            )


@dataclass(slots=True)
class Normaliser:
    """A tree mirroring where identifier formats sit in a schema; `apply` rewrites only those
    strings and copies only the containers on their way, leaving the input untouched."""

    fn: Callable[[str], str] | None = None
    props: dict[str, Normaliser] = field(default_factory=dict)
    items: Normaliser | None = None

    def apply(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.fn(value) if self.fn is not None else value
        if isinstance(value, dict) and self.props:
            out: dict[str, Any] | None = None
            for key, sub in self.props.items():
                if key in value:
                    old = value[key]
                    new = sub.apply(old)
                    if new is not old:
                        if out is None:
                            out = dict(value)
                        out[key] = new
            return value if out is None else out
        if isinstance(value, list) and self.items is not None:
            return [self.items.apply(item) for item in value]
        return value

    def merge(self, other: Normaliser) -> None:
        self.fn = self.fn or other.fn
        for key, sub in other.props.items():
            if key in self.props:
                self.props[key].merge(sub)
            else:
                self.props[key] = sub
        if other.items is not None:
            if self.items is None:
                self.items = other.items
            else:
                self.items.merge(other.items)


def build_normaliser(schema: Mapping[str, Any]) -> Normaliser | None:
    """The normaliser for `schema`, or None when it declares no identifier format.
    SchemaTooComplex when the walk would visit more than MAX_VISITS subschemas."""
    return _normaliser(schema, schema, 0, _Budget())


def _normaliser(
    root: Mapping[str, Any], node: Any, depth: int, budget: _Budget
) -> Normaliser | None:
    if not isinstance(node, Mapping) or depth > _MAX_DEPTH:
        return None
    state = (id(node), depth)
    if state in budget.barren:
        return None
    budget.spend()
    found = Normaliser()
    useful = False
    ident = IDENTIFIERS.get(node.get("format", ""))
    if ident is not None:
        found.fn, useful = ident.normalize, True
    for sub in _branches(root, node):
        if (branch := _normaliser(root, sub, depth + 1, budget)) is not None:
            found.merge(branch)
            useful = True
    for key, sub in _mapping(node.get("properties")).items():
        if (child := _normaliser(root, sub, depth + 1, budget)) is not None:
            found.props[key] = child
            useful = True
    if (items := _normaliser(root, node.get("items"), depth + 1, budget)) is not None:
        found.items, useful = items, True
    if not useful:
        budget.barren.add(state)
        return None
    return found


def has_path(root: Mapping[str, Any], parts: Sequence[str]) -> bool:
    """Whether a document valid against `root` may hold a value at `parts` (False when the
    walk would visit more than MAX_VISITS subschemas)."""
    try:
        return _has(root, root, parts, 0, _Budget())
    except SchemaTooComplex:
        return False


def _has(
    root: Mapping[str, Any], node: Any, parts: Sequence[str], depth: int, budget: _Budget
) -> bool:
    if node is False or depth > _MAX_DEPTH:
        return False
    if not parts or node is True:
        return True
    if not isinstance(node, Mapping):
        return False
    state = (id(node), len(parts), depth)  # `parts` is always a suffix of the walk's path
    known = budget.answers.get(state)
    if known is None:
        budget.spend()
        known = budget.answers[state] = _has_here(root, node, parts, depth, budget)
    return known


def _has_here(
    root: Mapping[str, Any],
    node: Mapping[str, Any],
    parts: Sequence[str],
    depth: int,
    budget: _Budget,
) -> bool:
    # A $ref and allOf arms constrain the same instance (all must allow the path); anyOf and
    # oneOf need one arm that allows it.
    if not all(_has(root, sub, parts, depth + 1, budget) for sub in _conjuncts(root, node)):
        return False
    for combinator in ("anyOf", "oneOf"):
        arms = node.get(combinator)
        if isinstance(arms, list) and not any(
            _has(root, a, parts, depth + 1, budget) for a in arms
        ):
            return False
    return _has_own(root, node, parts, depth, budget)


def _has_own(
    root: Mapping[str, Any],
    node: Mapping[str, Any],
    parts: Sequence[str],
    depth: int,
    budget: _Budget,
) -> bool:
    """The path under the node's own keywords, ignoring $ref and combinators."""
    head, rest = parts[0], parts[1:]
    properties = _mapping(node.get("properties"))
    if head in properties:
        return _has(root, properties[head], rest, depth + 1, budget)
    for pattern, sub in _mapping(node.get("patternProperties")).items():
        if _pattern_matches(pattern, head):
            return _has(root, sub, rest, depth + 1, budget)
    types = node.get("type")
    types = [types] if isinstance(types, str) else types
    if head.isdigit() and (types is None or "array" in types):
        return _has(root, node.get("items", True), rest, depth + 1, budget)
    if types is not None and "object" not in types:
        return False
    # unevaluatedProperties also sees properties declared in subschemas, checked above.
    if node.get("unevaluatedProperties") is False and not _has_subschemas(node):
        return False
    return _has(root, node.get("additionalProperties", True), rest, depth + 1, budget)


def _conjuncts(root: Mapping[str, Any], node: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    ref = node.get("$ref")
    if isinstance(ref, str) and (target := resolve_local(root, ref)) is not None:
        out.append(target)
    arms = node.get("allOf")
    if isinstance(arms, list):
        out.extend(arms)
    return out


def _has_subschemas(node: Mapping[str, Any]) -> bool:
    return "$ref" in node or any(c in node for c in COMBINATORS)


def _branches(root: Mapping[str, Any], node: Mapping[str, Any]) -> list[Any]:
    """Subschemas that apply to the same instance: a local $ref target and combinator arms."""
    out: list[Any] = []
    ref = node.get("$ref")
    if isinstance(ref, str) and (target := resolve_local(root, ref)) is not None:
        out.append(target)
    for combinator in COMBINATORS:
        arms = node.get(combinator)
        if isinstance(arms, list):
            out.extend(arms)
    return out


def resolve_local(root: Mapping[str, Any], ref: str) -> Any:
    """The subschema a local `$ref` ("#/$defs/base") names in `root`, else None."""
    if not ref.startswith("#"):
        return None
    node: Any = root
    for raw in ref[1:].split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _pattern_matches(pattern: str, name: str) -> bool:
    """Whether a `patternProperties` pattern matches the property `name`, read as the validator
    reads it: ECMA-262 syntax, by a regex engine that does not backtrack exponentially.
    Python's `re` reads another syntax (`\\p{L}`, `(?<n>...)`, `\\cA` were a 500) and took
    minutes over `^(a+)+$` against a 30-letter name, holding the whole process."""
    validator = _property_pattern(pattern)
    if validator is None:
        return False
    try:
        return not validator.is_valid({name: None})
    except ValueError:  # the engine gave up (a backtracking limit): no match claimed
        return False


@functools.lru_cache(maxsize=256)
def _property_pattern(pattern: str) -> jsonschema_rs.Validator | None:
    """A validator that refuses exactly the properties `pattern` matches; None if the
    validator cannot read the pattern (the schema itself would then not compile)."""
    try:
        return jsonschema_rs.validator_for({"patternProperties": {pattern: False}})
    except ValueError:
        return None
