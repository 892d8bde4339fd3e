"""Static walks over a raw JSON Schema: where identifiers (and integers) live, and which
field paths exist.

`build_normaliser` follows every keyword under which the validator checks formats: those
that apply to the instance itself (`$ref` and `$dynamicRef` to any subschema of the schema,
resolved as the validator resolves them: `Resolver`; `allOf`/`anyOf`/`oneOf`, `not`,
`if`/`then`/`else`, `dependentSchemas`), to members
(`properties`, `patternProperties`, `additionalProperties`, `unevaluatedProperties`) and to
items (`prefixItems`, `items`, `contains`, `unevaluatedItems`); an identifier format under
`propertyNames` is refused (a member name is not rewritten). `has_path` follows `properties`,
`patternProperties`, `additionalProperties`, `items`, `$ref`s within the schema and `allOf`/
`anyOf`/`oneOf` (a path that exists in any branch exists). Remote `$ref`s are never followed —
compiled schemas refuse them anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import jsonschema_rs

from gateway.schemas.ids import IDENTIFIERS, Identifier

COMBINATORS = ("allOf", "anyOf", "oneOf")
# Keywords whose subschema applies to the instance itself, beside $ref and the combinators.
_IN_PLACE = ("not", "if", "then", "else")
_MAX_DEPTH = 64  # recursive schemas ("a tree of nodes") stop here instead of looping
MAX_VISITS = 20_000
"""Subschemas one walk visits. Depth alone does not bound a walk: a schema whose `$ref`s
branch and recur (two recursive properties in each of three `oneOf` arms) has exponentially
many paths under the depth limit, and would hold a process for minutes."""


class SchemaTooComplex(ValueError):
    """A walk over a schema visited more than MAX_VISITS subschemas."""


class IdentifierInName(ValueError):
    """An identifier format under `propertyNames`: a member name cannot be normalised (two
    spellings of one identifier would become one member). `at` is its JSON pointer."""

    def __init__(self, at: str) -> None:
        super().__init__("an identifier format cannot check member names (`propertyNames`)")
        self.at = at


@dataclass(slots=True)
class _Budget:
    refs: Resolver  # where the walked schema's `$ref`s lead
    left: int = MAX_VISITS
    # `has_path`'s answers by (subschema, the path's parts left, depth): a walk that meets a
    # subschema again with the same rest of the path (its anyOf arms $ref the same recursive
    # definition) answers from here instead of walking it again, exponentially.
    answers: dict[tuple[int, int, int], bool] = field(default_factory=dict)
    # `build_normaliser`'s normaliser by (subschema, depth) (None: nothing to normalise
    # there): met again (a recursive definition $ref'd from many places), a subschema is not
    # walked again.
    built: dict[tuple[int, int], Normaliser | None] = field(default_factory=dict)
    # `has_path`: whether a digit part may index an array (reading a document), or is only
    # ever an object's key (a mapping target, which builds objects).
    indexes: bool = True

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise SchemaTooComplex(
                f"its $refs and combinators branch into more than {MAX_VISITS:,} subschemas"
            )


@dataclass(slots=True)
class Normaliser:
    """A tree mirroring where identifier formats sit in a schema; `apply` rewrites only those
    strings and copies only the containers on their way, leaving the input untouched.

    A schema says statically where a format *may* apply: which arm of an `anyOf` or of an
    `if`/`then`/`else` holds depends on the document. So every format that may apply at a
    place is a candidate, and a string is rewritten only when it is a valid identifier of
    one of them: a free text in the arm without the format is never stripped, and what the
    validator then checks is what is stored. (Valid identifiers of two formats normalise
    alike: only plates and CNPJs have letters, only a 9-digit RENAVAM is padded.)"""

    idents: tuple[Identifier, ...] = ()
    # The schema says `integer` here (and not `number`): a whole float (`2000.0`, `2.0e3`,
    # which JSON Schema counts as an integer) is made the int it is, so it is stored, read and
    # sent as one (typed consumers refuse `2000.0` for an int).
    integer: bool = False
    branches: list[Normaliser] = field(default_factory=list)  # the same instance
    props: dict[str, Normaliser] = field(default_factory=dict)
    patterns: list[tuple[str, Normaliser]] = field(default_factory=list)
    others: Normaliser | None = None  # members no `properties`/`patternProperties` names
    dependent: dict[str, Normaliser] = field(default_factory=dict)  # when the member is there
    prefix: list[Normaliser | None] = field(default_factory=list)
    rest: Normaliser | None = None  # items past `prefixItems`
    every: Normaliser | None = None  # every item (`contains`)

    def apply(self, value: Any) -> Any:
        for branch in self.branches:
            value = branch.apply(value)
        if isinstance(value, str):
            return self._identifier(value)
        if type(value) is float:
            whole = self.integer and value.is_integer() and -(2**63) <= value < 2**63
            return int(value) if whole else value  # (past 64 bits no integer can be stored)
        if isinstance(value, dict):
            value = self._members(value)
            for name, sub in self.dependent.items():
                if name in value:
                    value = sub.apply(value)
            return value
        if isinstance(value, list) and (self.prefix or self.rest or self.every):
            return [self._item(index, item) for index, item in enumerate(value)]
        return value

    def _identifier(self, value: str) -> str:
        for ident in self.idents:
            # Checked as normalised, as the validator then checks it: blanks at either end
            # (a no-break space too) are formatting, not part of the identifier.
            normalized = ident.normalize(value)
            if ident.is_valid(normalized):
                return normalized
        return value

    def _members(self, value: dict[str, Any]) -> dict[str, Any]:
        if self.patterns or self.others is not None:
            names: Sequence[str] = list(value)
        else:
            names = [name for name in self.props if name in value]
        out: dict[str, Any] | None = None
        for name in names:
            old = new = value[name]
            for sub in self._for_member(name):
                new = sub.apply(new)
            if new is not old:
                if out is None:
                    out = dict(value)
                out[name] = new
        return value if out is None else out

    def _for_member(self, name: str) -> list[Normaliser]:
        subs = [self.props[name]] if name in self.props else []
        named = bool(subs)
        for pattern, sub in self.patterns:
            if _pattern_matches(pattern, name):
                subs.append(sub)
                named = True
        if not named and self.others is not None:
            subs.append(self.others)
        return subs

    def _item(self, index: int, item: Any) -> Any:
        first = self.prefix[index] if index < len(self.prefix) else self.rest
        for sub in (first, self.every):
            if sub is not None:
                item = sub.apply(item)
        return item


_Below = Callable[[Any, str], Normaliser | None]


def build_normaliser(schema: Mapping[str, Any]) -> Normaliser | None:
    """The normaliser for `schema`, or None when it declares no identifier format and no
    `integer` type.
    SchemaTooComplex when the walk would visit more than MAX_VISITS subschemas;
    IdentifierInName for an identifier format under `propertyNames`."""
    return _normaliser(schema, "", 0, _Budget(Resolver(schema)))


def _normaliser(node: Any, at: str, depth: int, budget: _Budget) -> Normaliser | None:
    if not isinstance(node, Mapping) or depth > _MAX_DEPTH:
        return None
    state = (id(node), depth)
    if state in budget.built:
        return budget.built[state]
    budget.spend()

    def below(sub: Any, where: str) -> Normaliser | None:
        return _normaliser(sub, where, depth + 1, budget)

    if below(node.get("propertyNames"), f"{at}/propertyNames") is not None:
        raise IdentifierInName(f"{at}/propertyNames")
    ident = IDENTIFIERS.get(node.get("format", ""))
    same = _in_place(node, at, budget.refs)
    types = node.get("type")
    types = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    found = Normaliser(
        idents=() if ident is None else (ident,),
        integer="integer" in types and "number" not in types,
        branches=_present(below(sub, where) for sub, where in same),
        props=_named(below, _mapping(node.get("properties")), f"{at}/properties"),
        patterns=list(
            _named(
                below, _mapping(node.get("patternProperties")), f"{at}/patternProperties"
            ).items()
        ),
        others=_union(
            below(node.get(key), f"{at}/{key}")
            for key in ("additionalProperties", "unevaluatedProperties")
        ),
        dependent=_dependent(below, node, at),
        prefix=_prefix(below, node.get("prefixItems"), f"{at}/prefixItems"),
        rest=_union(below(node.get(key), f"{at}/{key}") for key in ("items", "unevaluatedItems")),
        every=below(node.get("contains"), f"{at}/contains"),
    )
    if not any(found.prefix) and found.rest is None:
        found.prefix = []  # (with `rest`, the prefix's length says where `rest` starts)
    built = None if found == Normaliser() else found
    budget.built[state] = built
    return built


def _in_place(node: Mapping[str, Any], at: str, refs: Resolver) -> list[tuple[Any, str]]:
    """Subschemas that apply to the same instance, with their pointers."""
    out: list[tuple[Any, str]] = []
    for key in ("$ref", "$dynamicRef"):
        ref = node.get(key)
        if isinstance(ref, str) and (target := refs.resolve(node, ref)) is not None:
            out.append(target)
    for combinator in COMBINATORS:
        arms = node.get(combinator)
        if isinstance(arms, list):
            out += [(arm, f"{at}/{combinator}/{i}") for i, arm in enumerate(arms)]
    out += [(node[key], f"{at}/{key}") for key in _IN_PLACE if key in node]
    return out


def _named(below: _Below, subs: Mapping[str, Any], at: str) -> dict[str, Normaliser]:
    found = {name: below(sub, f"{at}/{_escape(name)}") for name, sub in subs.items()}
    return {name: n for name, n in found.items() if n is not None}


def _prefix(below: _Below, subs: Any, at: str) -> list[Normaliser | None]:
    if not isinstance(subs, list):
        return []
    return [below(sub, f"{at}/{i}") for i, sub in enumerate(subs)]


def _dependent(below: _Below, node: Mapping[str, Any], at: str) -> dict[str, Normaliser]:
    """`dependentSchemas` and its draft-7 spelling `dependencies` (schema values), which the
    validator still honours, by the member whose presence applies them."""
    found: dict[str, list[Normaliser]] = {}
    for key in ("dependencies", "dependentSchemas"):
        for name, sub in _named(below, _mapping(node.get(key)), f"{at}/{key}").items():
            found.setdefault(name, []).append(sub)
    return {name: n for name, subs in found.items() if (n := _union(subs)) is not None}


def _present(found: Iterable[Normaliser | None]) -> list[Normaliser]:
    return [n for n in found if n is not None]


def _union(found: Iterable[Normaliser | None]) -> Normaliser | None:
    """One normaliser applying each of several found for the same place, or None."""
    present = _present(found)
    if len(present) < 2:
        return present[0] if present else None
    return Normaliser(branches=present)


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def has_path(root: Mapping[str, Any], parts: Sequence[str], *, indexes: bool = True) -> bool:
    """Whether a document valid against `root` may hold a value at `parts` (False when the
    walk would visit more than MAX_VISITS subschemas). `indexes=False`: a digit part is an
    object's key, never an array's index (a path that builds objects, as a mapping's targets
    do: `groups.0` is `{"groups": {"0": ...}}`)."""
    try:
        return _has(root, parts, 0, _Budget(Resolver(root), indexes=indexes))
    except SchemaTooComplex:
        return False


def _has(node: Any, parts: Sequence[str], depth: int, budget: _Budget) -> bool:
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
        known = budget.answers[state] = _has_here(node, parts, depth, budget)
    return known


def _has_here(node: Mapping[str, Any], parts: Sequence[str], depth: int, budget: _Budget) -> bool:
    # A $ref and allOf arms constrain the same instance (all must allow the path); anyOf and
    # oneOf need one arm that allows it.
    if not all(_has(sub, parts, depth + 1, budget) for sub in _conjuncts(node, budget.refs)):
        return False
    for combinator in ("anyOf", "oneOf"):
        arms = node.get(combinator)
        if isinstance(arms, list) and not any(_has(a, parts, depth + 1, budget) for a in arms):
            return False
    return _has_own(node, parts, depth, budget)


def _has_own(node: Mapping[str, Any], parts: Sequence[str], depth: int, budget: _Budget) -> bool:
    """The path under the node's own keywords, ignoring $ref and combinators."""
    head, rest = parts[0], parts[1:]
    properties = _mapping(node.get("properties"))
    if head in properties:
        return _has(properties[head], rest, depth + 1, budget)
    for pattern, sub in _mapping(node.get("patternProperties")).items():
        if _pattern_matches(pattern, head):
            return _has(sub, rest, depth + 1, budget)
    types = node.get("type")
    types = [types] if isinstance(types, str) else types
    if budget.indexes and head.isdigit() and (types is None or "array" in types):
        return _has(node.get("items", True), rest, depth + 1, budget)
    if types is not None and "object" not in types:
        return False
    # unevaluatedProperties also sees properties declared in subschemas, checked above.
    if node.get("unevaluatedProperties") is False and not _has_subschemas(node):
        return False
    return _has(node.get("additionalProperties", True), rest, depth + 1, budget)


def _conjuncts(node: Mapping[str, Any], refs: Resolver) -> list[Any]:
    out: list[Any] = []
    ref = node.get("$ref")
    if isinstance(ref, str) and (target := refs.resolve(node, ref)) is not None:
        out.append(target[0])
    arms = node.get("allOf")
    if isinstance(arms, list):
        out.extend(arms)
    return out


def _has_subschemas(node: Mapping[str, Any]) -> bool:
    return "$ref" in node or any(c in node for c in COMBINATORS)


_DEFAULT_BASE = "json-schema:///"
"""The base URI of a schema without a root `$id`, as the validator names it."""


class Resolver:
    """Where each `$ref` of one schema leads, resolved as the validator resolves it (Draft
    2020-12): against the base URI in force where the `$ref` stands (the nearest enclosing
    `$id`, the `$id` beside it included), to a resource the schema embeds (its root or any
    subschema with an `$id`), then within it by the fragment: empty (the resource),
    a JSON Pointer (percent-decoded first, RFC 6901 §6: `#/$defs/ve%C3%ADculo` names
    `veículo`; then `~1`/`~0`) or an anchor (`$anchor`, `$dynamicAnchor`, a draft-7 `$id`
    of `#name`). Remote resources are never fetched (compiled schemas refuse them).

    The schema is indexed on the first `resolve`: a walk that meets no `$ref` pays nothing."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self._root = root
        self._base: dict[int, str] = {}  # id(subschema) -> its base URI
        self._pointer: dict[int, str] = {}  # id(subschema) -> its JSON Pointer in root
        self._resources: dict[str, Any] = {}
        self._anchors: dict[tuple[str, str], Any] = {}
        self._indexed = False

    def resolve(self, node: Mapping[str, Any], ref: str) -> tuple[Any, str] | None:
        """The subschema `ref` (a `$ref` or `$dynamicRef` of `node`) names and its JSON
        Pointer in the root, or None when it names nothing in this schema."""
        self._index()
        uri, _, fragment = _join(self._base.get(id(node), _DEFAULT_BASE), ref).partition("#")
        resource = self._resources.get(uri)
        if resource is None:
            return None
        if fragment.startswith("/"):  # (a boolean subschema too: `false` allows nothing)
            pointer = unquote(fragment)
            target, at = _follow(resource, pointer), self._pointer[id(resource)] + pointer
        elif fragment:
            target = self._anchors.get((uri, unquote(fragment)))
            at = self._pointer.get(id(target), "")
        else:
            target, at = resource, self._pointer[id(resource)]
        return None if target is None else (target, at)

    def _index(self) -> None:
        if self._indexed:
            return
        self._indexed = True
        stack: list[tuple[Any, str, str]] = [(self._root, _DEFAULT_BASE, "")]
        while stack:
            node, base, at = stack.pop()
            if isinstance(node, list):
                stack += [(item, base, f"{at}/{i}") for i, item in enumerate(node)]
                continue
            if not isinstance(node, Mapping):
                continue
            own = node.get("$id")
            if isinstance(own, str) and own.startswith("#"):  # draft 7: an anchor
                self._anchors.setdefault((base, own[1:]), node)
            elif isinstance(own, str):
                base = _join(base, own).partition("#")[0]
                self._resources.setdefault(base, node)
            if not at:  # the root is a resource, with an `$id` or not
                self._resources.setdefault(base, node)
            for key in ("$anchor", "$dynamicAnchor"):
                if isinstance(name := node.get(key), str):
                    self._anchors.setdefault((base, name), node)
            self._base[id(node)] = base
            self._pointer[id(node)] = at
            stack += [(sub, base, f"{at}/{_escape(str(k))}") for k, sub in node.items()]


def _join(base: str, ref: str) -> str:
    """`ref` resolved against `base` (RFC 3986), also for the validator's default base
    `json-schema:///`, whose scheme `urljoin` does not know as hierarchical."""
    if ref.startswith("#"):
        return base.partition("#")[0] + ref
    if urlsplit(ref).scheme:
        return ref
    if base.startswith(_DEFAULT_BASE):
        return "json-schema:" + urljoin("http:" + base[len("json-schema:") :], ref)[5:]
    return urljoin(base, ref)


def _follow(node: Any, pointer: str) -> Any:
    """What the JSON Pointer `pointer` ("/$defs/base") names from `node`, else None."""
    for raw in pointer.split("/")[1:]:
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
