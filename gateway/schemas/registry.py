"""The schema registry: every entity and built-in kind schema, compiled once at start-up.

A `SchemaRegistry` is immutable and shared by every request and thread. Tenant custom kinds
live in the database, not here: the caller compiles them with `compile_kind` and passes the
result as `kind_schema=` when validating an `other` document of that kind.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from gateway.config import ConfigError
from gateway.errors import MAX_PROBLEMS, FieldProblem, GatewayError, InvalidPayload, NotFound
from gateway.formats.json_tree import shown
from gateway.schemas.compiled import CompiledSchema, compile_schema, invalid
from gateway.schemas.ids import canonical_plate_key, normalize_identifier
from gateway.schemas.kind_keys import key_problems
from gateway.schemas.problems import (
    UNEXPLAINED,
    left_as_stored,
    nul_key_problems,
    pointer,
    root_problem,
)
from gateway.schemas.walk import COMBINATORS, Resolver
from gateway.shipped import SCHEMAS

ENTITY_TYPES = ("vehicle", "driver", "supplier", "operator", "other")

# The top-level fields of an `other` document that belong to the envelope, not to its kind.
ENVELOPE_FIELDS = ("kind", "key")
NullPath = tuple[str, ...]
"""Where a change sent null: its members' names from the top (`null_paths`)."""

STORED_PROBLEMS_EXPLAINED = 10_000
"""The most problems of an entity's stored data a write to it explains, to tell those it
leaves as stored from its own (`SchemaRegistry.check_write`): each costs ~13 us, on every
write to the entity with problems. Of an entity with more values a newer rule refuses, a
write leaving more than MAX_PROBLEMS of them is a `422`: its problems past those are not
explained, nor told from its own."""

RESERVED_FIELDS = ("_id", "id", "tenant", "entity_type", "version", "created_at", "updated_at")
"""Names of the entity's own envelope: the store keeps `_id` and `tenant` next to the data, and
the API's view of an entity (`entities.public`) puts its id and metadata beside the data's
fields, over any field of the same name. No kind declares one, no mapping writes one, and no
`other` document carries one at its top level (built-in types' schemas name none of them)."""


def reserved_field_message(name: str, what: str = "the field") -> str:
    """Why a field cannot be named as the entity's envelope is (`RESERVED_FIELDS`)."""
    return (
        f"{what} {name!r} is reserved: the API shows the entity's own {name} there "
        f"(reserved: {', '.join(RESERVED_FIELDS)}); name it otherwise"
    )


KIND_RESERVED = (*RESERVED_FIELDS, *ENVELOPE_FIELDS)
"""Names a kind's schema may not declare nor require: the entity's envelope, and an `other`
document's `kind` and `key` (its envelope's too: a write checks the document without them
against the kind's schema, so a kind requiring `key` could never be written)."""


def _reserved(at: str, name: str) -> FieldProblem:
    if name in ENVELOPE_FIELDS:
        message = (
            f"the field {name!r} is reserved: an `other` entity's {name} is its envelope's, "
            f"not its kind's (reserved: {', '.join(KIND_RESERVED)}); name it otherwise"
        )
    else:
        message = reserved_field_message(name)
    return FieldProblem(at, f"{at}: {message}", "reserved")


_KIND_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
# The fields that name an entity within its tenant; the last one is the field a reference
# names it by (`/entities/vehicle/{plate}`, `GET /hooks/{id}/{key}`).
NATURAL_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "vehicle": ("plate",),
        "driver": ("cpf",),
        "operator": ("cpf",),
        "supplier": ("cnpj",),
        "other": ENVELOPE_FIELDS,
    }
)


def is_natural_key(entity_type: str, fields: Collection[str]) -> bool:
    """Whether a mapping's key `fields` include the type's natural key (an `other`'s kind
    aside: its mapping or trigger gives it). Such a key finds the entity by it, and an upsert
    may create it; any other key is a lookup that must find one existing entity."""
    return set(NATURAL_KEYS.get(entity_type, ())) - {"kind"} <= set(fields)


def lookup_key(
    entity_type: str, document: Mapping[str, Any], key: Mapping[str, Any]
) -> dict[str, Any]:
    """What a key that is not the natural key (a tracker id) looks the entity up by: its
    values, and for an `other` the kind being written (an `other` of another kind that carries
    the same value is not this one). The write and the dry run find the same entity."""
    if entity_type == "other" and "kind" in document:
        return {**key, "kind": document["kind"]}
    return dict(key)


def reference_field(entity_type: str) -> str:
    """The field a reference names an entity by: plate, cpf, cnpj, or an `other`'s key."""
    fields = NATURAL_KEYS.get(entity_type)
    if fields is None:
        raise _unknown_entity_type(entity_type)
    return fields[-1]


def default_schema_dir() -> Path:
    """The entity and kind schemas shipped in the package (GATEWAY_SCHEMA_DIR replaces them)."""
    return SCHEMAS


@dataclass(frozen=True)
class Checked:
    """A write's document as `SchemaRegistry.check_write` validated it."""

    document: dict[str, Any]
    """Normalised, as it is stored."""
    left: tuple[FieldProblem, ...] = ()
    """The problems of stored values the write leaves as they are (a phone stored before a
    stricter rule, a value a kind's replaced schema refuses): kept as stored, never the
    write's to fail for; each names its pointer and keyword, never the value."""


@dataclass(frozen=True)
class WholeValue:
    """What a schema says of a member that is one value (`"x-whole": true`,
    `SchemaRegistry.whole_members`)."""

    identity: frozenset[str]
    """Its members `"x-identity"` names, those saying which one the value is (a driver's
    `id`, `cpf` and `name`): a write changing one is another value, which keeps none of the
    members its writer cannot see (`entities.merge`)."""
    named_by: frozenset[str] = frozenset()
    """Its members `"x-named-by"` names, those naming the value on their own (a driver's
    `id` and `cpf`; the `name` beside them is the driver entity's, which the history
    copies): a write sending one of them as stored, and none otherwise, sends the stored
    value again, whatever its other members say (`entities.known_whole`)."""


@dataclass(frozen=True, slots=True)
class SchemaRegistry:
    _entities: Mapping[str, CompiledSchema]
    _kinds: Mapping[str, CompiledSchema]

    @classmethod
    def load(cls, path: Path) -> SchemaRegistry:
        """Read `entities/<type>.schema.json` for every entity type and every
        `kinds/<name>.schema.json` as a built-in kind. A bad file names itself."""
        entities = {t: _load(path / "entities" / f"{t}.schema.json") for t in ENTITY_TYPES}
        kinds = {
            file.name.removesuffix(".schema.json"): file
            for file in sorted((path / "kinds").glob("*.schema.json"))
        }
        return cls(
            MappingProxyType(entities),
            MappingProxyType({name: _load(file, name=name) for name, file in kinds.items()}),
        )

    @classmethod
    def configured(cls, schema_dir: Path | None) -> SchemaRegistry:
        """The schemas of GATEWAY_SCHEMA_DIR (`schema_dir`), or the shipped ones: configuration,
        so a file that cannot be read or compiled stops the start (a ConfigError: exit 2,
        naming the variable), not a traceback (exit 1) that `serve --workers N` took for a
        crash and restarted its processes for, for ever."""
        try:
            return cls.load(schema_dir or default_schema_dir())
        except GatewayError as exc:
            raise ConfigError(f"GATEWAY_SCHEMA_DIR: a schema cannot be used: {exc}") from None

    @property
    def builtin_kinds(self) -> tuple[str, ...]:
        return tuple(self._kinds)

    def whole_members(self, entity_type: str) -> Mapping[str, WholeValue]:
        """The top-level members of the type's schema marked `"x-whole": true`: an object that
        is one value (a vehicle's `current_driver`, its `last_service`, a supplier's
        `contact`), which a change replaces whole (`entities.merge`); merged, a partial one
        paired one driver's id with another's name and CPF, one service's plan with the
        next service's date. Each with what its `x-identity` and `x-named-by` say
        (`WholeValue`)."""
        properties = self._entity(entity_type).schema.get("properties") or {}
        return MappingProxyType(
            {
                name: WholeValue(
                    frozenset(sub.get("x-identity") or ()), frozenset(sub.get("x-named-by") or ())
                )
                for name, sub in properties.items()
                if isinstance(sub, Mapping) and sub.get("x-whole") is True
            }
        )

    def entity_schema(self, entity_type: str) -> dict[str, Any]:
        """A copy of the raw schema (for OpenAPI and docs)."""
        return copy.deepcopy(dict(self._entity(entity_type).schema))

    def kind_schema(self, kind: str) -> dict[str, Any]:
        return copy.deepcopy(dict(self._builtin_kind(kind).schema))

    # --- validation (hot path) ----------------------------------------------------------------

    def validate(
        self, entity_type: str, doc: Any, *, kind_schema: CompiledSchema | None = None
    ) -> list[FieldProblem]:
        """Every problem in `doc`; formatted identifiers ("529.982.247-25") are accepted."""
        return self._run(entity_type, doc, kind_schema, None)[1]

    def check(
        self,
        entity_type: str,
        doc: Any,
        *,
        kind_schema: CompiledSchema | None = None,
        stored: Mapping[str, Any] | None = None,
        change: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`check_write`'s document."""
        return self.check_write(
            entity_type, doc, kind_schema=kind_schema, stored=stored, change=change
        ).document

    def check_write(
        self,
        entity_type: str,
        doc: Any,
        *,
        kind_schema: CompiledSchema | None = None,
        stored: Mapping[str, Any] | None = None,
        change: Mapping[str, Any] | None = None,
    ) -> Checked:
        """The normalised document (a new dict; identifiers stripped of formatting, plates
        upper case without dash), or InvalidPayload listing every problem of the write.
        `change`: the merge patch `doc` is made of, merged into `stored` (the entity's
        stored data) or into nothing (a new entity); None: `doc` is sent whole. The stored
        entity's key was chosen when it was stored (`kind_keys`); a problem the stored data
        had already, at a value the change did not send, is not the write's
        (`Checked.left`); and a problem does not quote a value the write did not send
        (`left_as_stored`). Where the change sent null, which its merge removed
        (`null_paths`), a member the schema requires is null (`_required_nulls`).

        A write is checked for what it changes however many of the stored data's values a
        newer rule refuses: past the problems an answer lists (MAX_PROBLEMS), its problems
        are explained up to as many more as the stored data has (STORED_PROBLEMS_EXPLAINED
        at most), so that those the write leaves are told from its own.

        Identifiers are normalised before validation, so what is validated is what is stored.
        """
        nulled = null_paths(change) if change is not None else []
        if stored is not None or nulled:
            top = {*(stored or ()), *(path[0] for path in nulled if len(path) == 1)}
            doc = self._required_nulls(entity_type, doc, kind_schema, top)
            below = {path for path in nulled if len(path) > 1}
            if below:
                doc = self._required_nulls_below(entity_type, doc, kind_schema, below)
        normalised, problems = self._run(entity_type, doc, kind_schema, stored)
        left: list[FieldProblem] = []
        if problems and stored is not None:
            # The stored data's own problems (a rare path: only a write with problems).
            limit = STORED_PROBLEMS_EXPLAINED
            _, had = self._run(entity_type, stored, kind_schema, stored, limit)
            explained = not any(problem is UNEXPLAINED for problem in had)
            if had and explained and any(problem is UNEXPLAINED for problem in problems):
                limit = len(had) + MAX_PROBLEMS
                _, problems = self._run(entity_type, doc, kind_schema, stored, limit)
            keys = NATURAL_KEYS[entity_type]
            sent = doc if change is None else change
            problems, left = left_as_stored(problems, doc, stored, sent, had, keys)
        if problems:
            raise invalid(entity_type, problems)
        if not isinstance(normalised, dict):  # unreachable while every schema says object
            raise invalid(entity_type, [root_problem("must be a JSON object", "type")])
        return Checked(normalised, tuple(left))

    def _required_nulls(
        self,
        entity_type: str,
        doc: Any,
        kind_schema: CompiledSchema | None,
        removable: Collection[str],
    ) -> Any:
        """`doc`, a change merged into stored data (or into nothing), with a null back for
        each member the schema (or the kind's) requires at the top that the change's null
        removed (one missing from `doc` that is in `removable`: stored before, or sent as
        null to a new entity): for such a member a null is its value (`"removed_at": null`),
        not a removal, which would leave no valid entity. So the payload that created an
        entity is no change when sent again, and the schema says whether null is allowed."""
        if not isinstance(doc, dict):
            return doc
        schemas = [self._entity(entity_type).schema]
        kind = doc.get("kind")
        if entity_type == "other" and isinstance(kind, str):
            found = self._kind_for_doc(kind, kind_schema)
            if isinstance(found, CompiledSchema):
                schemas.append(found.schema)
        required = [name for schema in schemas for name in schema.get("required") or ()]
        removed = [n for n in required if isinstance(n, str) and n not in doc and n in removable]
        return {**doc, **dict.fromkeys(removed)} if removed else doc

    def _required_nulls_below(
        self,
        entity_type: str,
        doc: Any,
        kind_schema: CompiledSchema | None,
        nulled: Collection[NullPath],
    ) -> Any:
        """`_required_nulls` inside the document: a member a change sent as null that the
        schema requires of the object holding it (`"endereco": {"complemento": null}`, in
        an object new or stored) is that value, null, not a removal, at any depth: the
        validator's own `required` problems say which (a `$ref`, an `allOf` arm's
        `required` too), and the schema then says whether null is allowed. A payload that
        meets the schema is written as the admin API writes it."""
        while True:
            _, problems = self._run(entity_type, doc, kind_schema, None)
            missing = [
                path
                for problem in problems
                if problem.keyword == "required"
                and (path := pointer_path(problem.pointer)) in nulled
                and _holds_all_but_last(doc, path)
            ]
            if not missing:
                return doc
            for path in missing:
                doc = _with_null(doc, path)

    def _run(
        self,
        entity_type: str,
        doc: Any,
        kind_schema: CompiledSchema | None,
        stored: Mapping[str, Any] | None,
        limit: int = MAX_PROBLEMS,
    ) -> tuple[Any, list[FieldProblem]]:
        """The normalised `doc` and its problems, each schema's explained up to `limit`
        (`CompiledSchema.problems`)."""
        compiled = self._entity(entity_type)
        normalised = compiled.normalise(doc)
        # An entity is stored: a member name BSON cannot hold is named here, with its pointer.
        problems = [*compiled.problems(normalised, doc, limit), *nul_key_problems(doc)]
        if entity_type != "other" or not isinstance(normalised, dict):
            return normalised, problems
        kind = normalised.get("kind")
        if not isinstance(kind, str):
            return normalised, problems  # the envelope problems already say why
        schema = self._kind_for_doc(kind, kind_schema)
        if isinstance(schema, FieldProblem):
            return normalised, [*problems, schema]
        # The kind schema sees the document without its envelope; pointers stay the same
        # because every kind field sits at the top level next to kind and key.
        body = {k: v for k, v in doc.items() if k not in ENVELOPE_FIELDS}
        normalised_body = schema.normalise(body)
        problems.extend(schema.problems(normalised_body, body, limit))
        if kind in self._kinds:  # only a shipped kind's `x-key` keys it (a tenant's: a note)
            key = normalised.get("key")
            problems.extend(key_problems(kind, schema.schema, key, normalised_body, stored))
        else:  # a built-in kind's schema refuses any such field itself
            problems.extend(_reserved(f"/{k}", k) for k in body if k in RESERVED_FIELDS)
        envelope = {k: normalised[k] for k in ENVELOPE_FIELDS if k in normalised}
        return {**envelope, **normalised_body}, problems

    def _kind_for_doc(
        self, kind: str, kind_schema: CompiledSchema | None
    ) -> CompiledSchema | FieldProblem:
        if kind in self._kinds:
            return self._kinds[kind]
        if kind_schema is None:
            return FieldProblem("/kind", f"/kind: unknown kind {kind!r}", "kind")
        if kind_schema.name is not None and kind_schema.name != kind:
            message = f"/kind: {kind!r} does not match the kind schema {kind_schema.name!r}"
            return FieldProblem("/kind", message, "kind")
        return kind_schema

    # --- keys ---------------------------------------------------------------------------------

    def natural_key(self, entity_type: str, doc: Mapping[str, Any]) -> dict[str, str]:
        """The fields that name `doc` within its tenant, normalised: {"plate"} for a vehicle,
        {"cpf"} for a driver or operator, {"cnpj"} for a supplier, {"kind", "key"} for other.

        Vehicles are *unique* by `derived_fields()["plate_key"]`, which an old plate and its
        Mercosul twin share; see there.
        """
        fields = NATURAL_KEYS.get(entity_type)
        if fields is None:
            raise _unknown_entity_type(entity_type)
        key: dict[str, str] = {}
        for name in fields:
            value = doc.get(name)
            if value is not None and not isinstance(value, str):  # e.g. a CPF sent as a number
                shown = orjson.dumps(value, default=str).decode()[:100]
                message = f'/{name}: {shown} is not of type "string"'
                raise invalid(entity_type, [FieldProblem(f"/{name}", message, "type")])
            if not value:
                message = f"/{name}: required field is missing"
                raise invalid(entity_type, [FieldProblem(f"/{name}", message, "required")])
            key[name] = normalize_identifier(name, value)
        return key

    def derived_fields(self, entity_type: str, doc: Mapping[str, Any]) -> dict[str, str]:
        """Fields the store keeps next to the document, outside its schema-validated part.

        A vehicle gets `plate_key`, the Mercosul spelling of its plate (`canonical_plate_key`):
        ABC1234 and ABC1C34 share it, so keying vehicles by it makes an old plate and its twin
        one vehicle, and re-plating to Mercosul an update rather than a new vehicle.
        """
        if entity_type != "vehicle":
            self._entity(entity_type)
            return {}
        plate = self.natural_key(entity_type, doc)["plate"]
        try:
            return {"plate_key": canonical_plate_key(plate)}
        except ValueError:
            message = f"/plate: {shown(plate)} is not a valid plate"
            raise invalid(entity_type, [FieldProblem("/plate", message, "format")]) from None

    def normalize(
        self, entity_type: str, doc: Mapping[str, Any], *, kind_schema: CompiledSchema | None = None
    ) -> dict[str, Any]:
        """`doc` (possibly partial) with identifiers normalised, without validating it."""
        normalised: dict[str, Any] = self._entity(entity_type).normalise(dict(doc))
        kind = normalised.get("kind")
        if entity_type != "other" or not isinstance(kind, str):
            return normalised
        schema = self._kinds.get(kind, kind_schema)
        return normalised if schema is None else dict(schema.normalise(normalised))

    def require_type(self, entity_type: str) -> None:
        """NotFound unless `entity_type` is one of ENTITY_TYPES."""
        self._entity(entity_type)

    # --- kinds and fields ---------------------------------------------------------------------

    def compile_kind(
        self, name: str, schema: Mapping[str, Any], *, stored: bool = False
    ) -> CompiledSchema:
        """Compile a tenant's custom kind. Problems point into {"name": ..., "schema": ...}.

        The schema describes the kind's fields only (kind and key are the envelope's); built-in
        kind names cannot be redefined, and a field cannot be named as the envelope's are
        (`KIND_RESERVED`: `RESERVED_FIELDS`, `kind` and `key`), unless the kind is `stored`
        (one stored before that rule keeps compiling; writes refuse the reserved field itself).
        """
        if not isinstance(name, str) or not _KIND_NAME.fullmatch(name):
            message = "/name: must be lower case letters, digits and _, starting with a letter"
            raise invalid("kind", [FieldProblem("/name", message, "pattern")])
        if name in self._kinds:
            message = f"/name: {name!r} is a built-in kind and cannot be redefined"
            raise invalid("kind", [FieldProblem("/name", message, "reserved")])
        if isinstance(schema, Mapping) and schema.get("type") != "object":
            message = "/schema/type: a kind schema must have type 'object'"
            raise invalid("kind", [FieldProblem("/schema/type", message, "type")])
        if not stored and (reserved := _reserved_in_kind(schema)):
            raise invalid("kind", reserved)
        return compile_schema(schema, name=name, at="/schema", stored=stored)

    def has_field(
        self,
        entity_type: str,
        path: str,
        *,
        kind: str | None = None,
        kind_schema: CompiledSchema | None = None,
    ) -> bool:
        """Whether the dotted `path` is a field of the entity ("last_position.lat",
        "attributes.anything"). For `other`, pass the kind (built-in name or compiled custom
        schema); without one only the envelope is known and any other field is allowed."""
        compiled = self._entity(entity_type)
        if entity_type != "other":
            return compiled.has_field(path)
        if path in ENVELOPE_FIELDS or path.split(".", 1)[0] in ENVELOPE_FIELDS:
            return path in ENVELOPE_FIELDS
        if kind_schema is not None:
            return kind_schema.has_field(path)
        if kind is not None:
            return self._builtin_kind(kind).has_field(path)
        return compiled.has_field(path)

    def _entity(self, entity_type: str) -> CompiledSchema:
        try:
            return self._entities[entity_type]
        except KeyError:
            raise _unknown_entity_type(entity_type) from None

    def _builtin_kind(self, kind: str) -> CompiledSchema:
        try:
            return self._kinds[kind]
        except KeyError:
            raise NotFound(f"unknown kind {kind!r}; built-in kinds: {self.builtin_kinds}") from None


_APPLY_TO_ROOT = ("if", "then", "else")


def _reserved_in_kind(schema: Mapping[str, Any]) -> list[FieldProblem]:
    """Every place the kind's schema names a member of the document as the envelope's are:
    `properties` and `required`, in the schema and in every subschema that applies to the
    document itself (`allOf`, `anyOf`, `oneOf`, `if`, `then`, `else`, the schemas of
    `dependentSchemas`, a `$ref` within the schema, resolved as the validator resolves it),
    and the names `dependentRequired` requires. A schema requiring `id` under `allOf` could never be
    written (the write refuses `id` itself).
    Not `not` (it can only forbid a name) nor `patternProperties` (a pattern matching `id`
    applies to no document, which never has one)."""
    found: list[FieldProblem] = []
    refs = Resolver(schema)
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(schema, "/schema")]
    while stack:
        node, at = stack.pop()
        if not isinstance(node, Mapping) or id(node) in seen:
            continue
        seen.add(id(node))
        found += _reserved_names(node, at)
        below: list[tuple[Any, str]] = []
        for key in COMBINATORS:
            if isinstance(items := node.get(key), list):
                below += [(item, f"{at}/{key}/{i}") for i, item in enumerate(items)]
        below += [(node.get(key), f"{at}/{key}") for key in _APPLY_TO_ROOT if key in node]
        if isinstance(dependent := node.get("dependentSchemas"), Mapping):
            below += [
                (item, at + pointer(("dependentSchemas", str(name))))
                for name, item in dependent.items()
            ]
        if isinstance(ref := node.get("$ref"), str) and (target := refs.resolve(node, ref)):
            below.append((target[0], "/schema" + target[1]))
        stack += reversed(below)  # problems in the order the schema writes them
    return found


def _reserved_names(node: Mapping[str, Any], at: str) -> list[FieldProblem]:
    """One (sub)schema's properties, required and dependentRequired names that are reserved."""
    found: list[FieldProblem] = []
    properties = node.get("properties")
    declared = properties if isinstance(properties, Mapping) else {}
    found += [
        _reserved(f"{at}/properties/{name}", name) for name in declared if name in KIND_RESERVED
    ]
    required = node.get("required")
    if isinstance(required, list):
        found += [
            _reserved(f"{at}/required/{index}", name)
            for index, name in enumerate(required)
            if name in KIND_RESERVED and name not in declared
        ]
    if isinstance(dependent := node.get("dependentRequired"), Mapping):
        for key, names in dependent.items():
            if isinstance(names, list):
                where = at + pointer(("dependentRequired", str(key)))
                found += [
                    _reserved(f"{where}/{index}", name)
                    for index, name in enumerate(names)
                    if name in KIND_RESERVED
                ]
    return found


def _unknown_entity_type(entity_type: str) -> NotFound:
    return NotFound(
        f"unknown entity type {entity_type!r}; expected one of {', '.join(ENTITY_TYPES)}"
    )


def _load(file: Path, *, name: str | None = None) -> CompiledSchema:
    try:
        schema = orjson.loads(file.read_bytes())
        return compile_schema(schema, name=name)
    except (OSError, orjson.JSONDecodeError) as exc:
        raise GatewayError(f"{file}: {exc}") from None
    except InvalidPayload as exc:
        where = "; ".join(p.message for p in exc.problems) or exc.detail
        raise GatewayError(f"{file}: {where}") from None


def null_paths(change: Mapping[str, Any], at: NullPath = ()) -> list[NullPath]:
    """Where `change` sends null, through its objects (a null in a list is a value, kept)."""
    paths: list[NullPath] = []
    for name, value in change.items():
        if value is None:
            paths.append((*at, name))
        elif isinstance(value, Mapping):
            paths.extend(null_paths(value, (*at, name)))
    return paths


def pointer_path(where: str) -> NullPath:
    """A JSON pointer's member names (`/a~1b/c` → ("a/b", "c"))."""
    parts = where.split("/")[1:]
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in parts)


def _holds_all_but_last(doc: Any, path: NullPath) -> bool:
    """Whether `doc` has the object `path` ends in, without its last member."""
    for name in path[:-1]:
        if not isinstance(doc, dict) or not isinstance(doc.get(name), dict):
            return False
        doc = doc[name]
    return isinstance(doc, dict) and path[-1] not in doc


def _with_null(doc: dict[str, Any], path: NullPath) -> dict[str, Any]:
    """A copy of `doc` with null at `path` (whose objects `_holds_all_but_last` found)."""
    head, *rest = path
    if not rest:
        return {**doc, head: None}
    return {**doc, head: _with_null(doc[head], tuple(rest))}
