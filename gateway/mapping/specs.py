"""Field specs → getters: the spec compiler, which checks each spec's shape and picks its source.

A spec is an expression string, or an object with exactly one source (`from`, `value`,
`secret`, `param`, `main`, `received`, `coalesce`, `template`, `each`, `object`, `list`, or `then`
after `when`) and the
modifiers `when`/`else`, `transforms`, `default` and `required`. Conditions, templates and
transforms compile in their own modules; what runs per payload is in `getters`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .conditions import Condition, compile_condition
from .expressions import Getter, compile_expression
from .getters import (
    coalesced,
    conditional,
    constant,
    describe,
    each_item,
    each_table,
    finish,
    list_of,
    main_getter,
    object_of,
    received_time,
    secret_getter,
    unset_getter,
)
from .limits import MAX_FIELDS, MAX_SPEC_DEPTH
from .model import REMOVE
from .params import MISSING, NO_PARAMS, ParamScope
from .paths import MAX_TARGET_LENGTH, NAME_RE, TARGET_RE, pointer
from .problems import Problems, suggest
from .tables import Leaf, Table, build
from .templates import compile_template
from .transforms import compile_pipeline

SOURCES = (
    "from",
    "value",
    "secret",
    "param",
    "main",
    "received",
    "coalesce",
    "template",
    "each",
    "object",
    "list",
    "remove",
    "then",
)
MODIFIERS = ("when", "else", "transforms", "default", "required")
COMPANIONS = {"vars": "template", "fields": "each", "item": "each"}
SPEC_KEYS = (*SOURCES, *MODIFIERS, *COMPANIONS)
SECRET_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")
_MAX_CHOICES = 50
__all__ = ["NAME_RE", "SpecCompiler", "mentions", "removes"]


def mentions(raw: Any, keys: frozenset[str]) -> bool:
    """Whether a spec uses any of `keys` at any depth (specs are depth-limited)."""
    if isinstance(raw, dict):
        return any(k in keys or mentions(v, keys) for k, v in raw.items())
    if isinstance(raw, list):
        return any(mentions(item, keys) for item in raw)
    return False


def removes(raw: Any) -> bool:
    """Whether a spec may give a removal (`{remove: true}`): itself, its `then` or `else`,
    or an alternative of its `coalesce` (where a removal may be)."""
    if not isinstance(raw, dict):
        return False
    coalesce = raw.get("coalesce")
    choices = [raw.get("then"), raw.get("else"), *(coalesce if isinstance(coalesce, list) else ())]
    return "remove" in raw or any(removes(choice) for choice in choices)


_TABLE_KEYS = frozenset({"each", "object"})
_NOT_WITH_REMOVE = ("transforms", "default", "required")


class SpecCompiler:
    """Compiles specs and tables, reporting every problem to `problems`."""

    def __init__(
        self, problems: Problems, scope: ParamScope = NO_PARAMS, *, strict: bool = True
    ) -> None:
        self.problems = problems
        self.scope = scope
        # False for a version stored before today's rules for new texts (see load_mapping).
        self.strict = strict
        self.count = 0
        self.steps = 0  # what the specs' transforms cost an item, each spec counted once
        self.secrets: set[str] = set()
        self.reads_received = False  # whether `{received: time}` is read anywhere
        # The main `fields` targets while an `also` table compiles (its `main` source reads
        # them); None elsewhere.
        self.main_targets: frozenset[str] | None = None
        # Renamed members read under their old names too (an outbound mapping's reads of
        # `entity.last_position.latitude`, schemas/renamed.py), and each such read, for the
        # upload's warnings.
        self.aliases: Mapping[str, Mapping[str, str]] = {}
        self.deprecated: list[str] = []
        # Whether the table compiling writes entity fields (a mapping's `fields`, `also`'s,
        # a `response`): only there does `{remove: true}` mean something, a removal.
        self.removals = False
        self._inside = 0  # how deep in a value the spec compiling is (an object, a list)

    # -- tables ------------------------------------------------------------------------------

    def table(self, raw: Any, at: str, depth: int, *, flat: bool = False) -> Table | None:
        """`{target: spec}`: dotted targets build nested objects (flat: names stay whole)."""
        if not isinstance(raw, dict) or not raw:
            self.problems.add(at, "must be an object of target: spec", "type")
            return None
        leaves: list[Leaf] = []
        ok = True
        for target, spec in raw.items():
            here = f"{at}{pointer(target)}"
            if not flat and not self._valid_target(target, here, raw):
                ok = False
            getter = self.spec(spec, here, depth)
            if getter is None:
                ok = False
                continue
            leaves.append((target, getter, mentions(spec, _TABLE_KEYS), describe(spec)))
        return build(leaves, flat=flat) if ok else None

    def whole(self, raw: Any, at: str, target: str) -> Table | None:
        """One spec whose value is a whole document (an outbound `body_value`: any JSON value,
        a list too), as a table of that one `target`, so it is evaluated, charged and its
        problems named as a table's field is."""
        getter = self.spec(raw, at, 1)
        if getter is None:
            return None
        return build([(target, getter, mentions(raw, _TABLE_KEYS), describe(raw))], flat=True)

    def _valid_target(self, target: str, at: str, siblings: dict[str, Any]) -> bool:
        if len(target) > MAX_TARGET_LENGTH or not TARGET_RE.match(target):
            self.problems.add(
                at,
                f"target {target!r} is not a dotted field path like last_position.lat",
                "target",
            )
            return False
        parts = target.split(".")
        for end in range(1, len(parts)):
            parent = ".".join(parts[:end])
            if parent in siblings:
                self.problems.add(at, f"target {target!r} is inside target {parent!r}", "target")
                return False
        return True

    # -- specs -------------------------------------------------------------------------------

    def spec(self, raw: Any, at: str, depth: int) -> Getter | None:
        self.count += 1
        if self.count > MAX_FIELDS:
            if self.count == MAX_FIELDS + 1:
                self.problems.add(at, f"more than {MAX_FIELDS} field specs", "limit")
            return None
        if depth > MAX_SPEC_DEPTH:
            self.problems.add(at, f"specs nested more than {MAX_SPEC_DEPTH} levels deep", "limit")
            return None
        if isinstance(raw, str):
            return self.expression(raw, at)
        if not isinstance(raw, dict):
            self.problems.add(
                at,
                "a spec is an expression string or an object such as {from: ...} or "
                "{value: ...} (write constants as {value: ...})",
                "type",
            )
            return None
        return self._object_spec(raw, at, depth)

    def _object_spec(self, raw: dict[str, Any], at: str, depth: int) -> Getter | None:
        if not self._check_keys(raw, at):
            return None
        (source_key,) = [k for k in SOURCES if k in raw]
        source = self._source(source_key, raw, at, depth)
        condition = else_ = None
        if "when" in raw:
            condition = self.condition(raw["when"], f"{at}/when")
            if "else" in raw:
                else_ = self.spec(raw["else"], f"{at}/else", depth + 1)
        transforms, where = raw.get("transforms", ()), f"{at}/transforms"
        pipeline = compile_pipeline(
            transforms, where, self.problems, self.scope, strict=self.strict
        )
        required = raw.get("required", False)
        if not isinstance(required, bool):
            self.problems.add(f"{at}/required", "required is true or false", "type")
        if removes(raw) and (used := [k for k in _NOT_WITH_REMOVE if k in raw]):
            self.problems.add(
                f"{at}/{used[0]}",
                f"{used[0]} does not go with remove (a removal is no value to transform, "
                "default or require)",
                "source",
            )
            return None
        failed = source is None or pipeline is None or ("when" in raw and condition is None)
        if failed or ("else" in raw and else_ is None) or not isinstance(required, bool):
            return None
        assert source is not None and pipeline is not None
        getter = source if condition is None else conditional(condition, source, else_)
        self.steps += pipeline.steps
        picks = source_key == "coalesce" and "else" not in raw
        default = raw.get("default")
        return finish(getter, pipeline, default, required, describe(raw), picks=picks)

    def _check_keys(self, raw: dict[str, Any], at: str) -> bool:
        ok = True
        for key in raw:
            if key == "only_forward":
                self.problems.add(
                    f"{at}/only_forward",
                    "only_forward goes on a target of fields (or of also's fields), "
                    "not inside each, object or another spec",
                    "only_forward",
                )
                ok = False
            elif key not in SPEC_KEYS:
                self.problems.add(
                    f"{at}{pointer(key)}",
                    f"unknown key {key!r}{suggest(key, SPEC_KEYS)}; a spec takes "
                    f"{', '.join(SPEC_KEYS)}",
                    "unknown",
                )
                ok = False
        sources = [k for k in SOURCES if k in raw]
        if not sources:
            hint = "when needs then" if "when" in raw else "a spec needs a source"
            self.problems.add(at, f"{hint}: one of {', '.join(SOURCES)}", "source")
            return False
        if len(sources) > 1:
            self.problems.add(at, f"several sources ({', '.join(sources)}): keep one", "source")
            return False
        for key, owner in COMPANIONS.items():
            if key in raw and owner not in raw:
                self.problems.add(f"{at}/{key}", f"{key} goes with {owner}", "source")
                ok = False
        for key in ("else", "then"):
            if key in raw and "when" not in raw:
                self.problems.add(f"{at}/{key}", f"{key} goes with when", "source")
                ok = False
        return ok

    def _source(self, key: str, raw: dict[str, Any], at: str, depth: int) -> Getter | None:
        value, here = raw[key], f"{at}/{key}"
        if key == "from":
            if not isinstance(value, str):
                self.problems.add(here, "from is an expression string", "type")
                return None
            return self.expression(value, here)
        if key == "value":
            if value is None and self.strict:
                why = (
                    "{value: null} writes nothing (a null is left out): to remove the field "
                    "write {remove: true}; to write nothing leave the spec (or its else) out"
                )
                self.problems.add(here, why, "value")
                return None
            return constant(value)
        if key == "remove":
            return self._remove(value, here)
        if key in ("secret", "param", "main", "received"):
            named: Callable[[Any, str], Getter | None] = getattr(self, f"_{key}")
            return named(value, here)
        if key == "coalesce":
            return self._coalesce(value, here, depth)
        if key in ("template", "each", "object", "list"):
            self._inside += 1  # a removal is a field's, not a value inside one
            try:
                return self._value_of(key, raw, value, at, depth)
            finally:
                self._inside -= 1
        return self.spec(value, here, depth + 1)  # then

    def _value_of(
        self, key: str, raw: dict[str, Any], value: Any, at: str, depth: int
    ) -> Getter | None:
        here = f"{at}/{key}"
        if key == "template":
            vars_ = raw.get("vars", {})
            return compile_template(value, vars_, at, depth, self.problems, self.spec)
        if key == "each":
            return self._each(raw, at, depth)
        if key == "object":
            table = self.table(value, here, depth + 1)
            return None if table is None else object_of(table)
        getters = self._spec_list(value, here, depth)
        return None if getters is None else list_of(getters)

    def _remove(self, value: Any, at: str) -> Getter | None:
        """`{remove: true}`: the target's removal (`REMOVE`), in a table of entity fields, as
        the target's spec, its `then` or `else`, or an alternative of its `coalesce`."""
        if value is not True:
            self.problems.add(at, "remove is true (a removal of the field)", "type")
            return None
        if not self.removals or self._inside:
            where = "inside a value (an object, a list, a template)" if self.removals else "here"
            self.problems.add(
                at,
                f"remove cannot be {where}: it removes an entity field, as the spec of a "
                "target of fields (or also's fields) or response, or its then, else or a "
                "coalesce alternative",
                "source",
            )
            return None
        return constant(REMOVE)

    def expression(self, text: str, at: str) -> Getter | None:
        aliased: list[tuple[str, str]] = []
        getter, why = compile_expression(text, aliases=self.aliases, aliased=aliased)
        self.deprecated += [
            f"{at}: {old!r} is a deprecated name, read {new!r}" for old, new in aliased
        ]
        if getter is None:
            keyword = "limit" if "limit" in why or "nested" in why else "expression"
            self.problems.add(at, why, keyword, expression=text[:200])
        return getter

    def _secret(self, name: Any, at: str) -> Getter | None:
        if not isinstance(name, str) or not SECRET_RE.match(name):
            self.problems.add(at, "secret is the name of a secret, like erp_token", "secret")
            return None
        self.secrets.add(name)
        return secret_getter(name)

    def _param(self, name: Any, at: str) -> Getter | None:
        if not isinstance(name, str) or name not in self.scope.declared:
            known = ", ".join(self.scope.declared) or "none"
            self.problems.add(at, f"param {name!r} is not declared in params ({known})", "param")
            return None
        value = self.scope.value(name)
        return unset_getter(name) if value is MISSING else constant(value)

    def _received(self, value: Any, at: str) -> Getter | None:
        if value != "time":
            self.problems.add(at, "received takes time: {received: time}", "type")
            return None
        self.reads_received = True
        return received_time

    def _main(self, target: Any, at: str) -> Getter | None:
        """`main: target`: the value the main `fields` gave a target (or a field inside one)."""
        if self.main_targets is None:
            message = "main reads the main document: only in also's fields and event_data"
            self.problems.add(at, message, "main")
            return None
        valid = isinstance(target, str) and TARGET_RE.match(target)
        if not valid or not any(
            target == t or target.startswith(f"{t}.") or t.startswith(f"{target}.")
            for t in self.main_targets
        ):
            known = ", ".join(sorted(self.main_targets))
            self.problems.add(at, f"main {target!r} is not a target of fields ({known})", "main")
            return None
        return main_getter(target)

    def _spec_list(self, raw: Any, at: str, depth: int) -> list[Getter] | None:
        if not isinstance(raw, list) or not 0 < len(raw) <= _MAX_CHOICES:
            self.problems.add(at, f"must be a list of 1 to {_MAX_CHOICES} specs", "type")
            return None
        getters = [self.spec(item, f"{at}/{i}", depth + 1) for i, item in enumerate(raw)]
        return None if any(g is None for g in getters) else [g for g in getters if g]

    def _coalesce(self, raw: Any, at: str, depth: int) -> Getter | None:
        getters = self._spec_list(raw, at, depth)
        if getters is None:
            return None

        return coalesced(getters, [describe(item) for item in raw])

    def _each(self, raw: dict[str, Any], at: str, depth: int) -> Getter | None:
        if not isinstance(raw["each"], str):
            self.problems.add(f"{at}/each", "each is an expression that gives a list", "type")
            return None
        items = self.expression(raw["each"], f"{at}/each")
        if ("fields" in raw) == ("item" in raw):
            self.problems.add(at, "each needs fields (an object per element) or item", "source")
            return None
        if "fields" in raw:
            table = self.table(raw["fields"], f"{at}/fields", depth + 1)
            return None if items is None or table is None else each_table(items, table, raw["each"])
        item = self.spec(raw["item"], f"{at}/item", depth + 1)
        return None if items is None or item is None else each_item(items, item, raw["each"])

    def condition(self, raw: Any, at: str) -> Condition | None:
        """`when`: an expression (JMESPath truth), {from: expr, <operator>: value} (`from`
        may take `transforms`) or {param: name, <operator>: value}."""
        return compile_condition(
            raw, at, self.problems, self.expression, self._param, self._transformed
        )

    def _transformed(self, expression: str, transforms: Any, at: str) -> Getter | None:
        """A comparison's `{from, transforms}`: the value a spec of those two gives (its
        transforms counted, charged and reported as a spec's)."""
        return self.spec({"from": expression, "transforms": transforms}, at, MAX_SPEC_DEPTH)
