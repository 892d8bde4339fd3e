"""A parsed mapping document → a `Plan`: its tables and rules compiled, every problem reported."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.fleet.fix import FIELDS as FIX_FIELDS
from gateway.formats.charsets import unknown_charset
from gateway.formats.headers import is_reserved_header, reserved_message
from gateway.formats.json_tree import text_refused
from gateway.schemas.registry import RESERVED_FIELDS, reserved_field_message
from gateway.schemas.renamed import current_mapping, read_aliases

from .conditions import Condition
from .expressions import Getter, Run
from .limits import MAX_STEPS, PARSE_FORMAT_STEPS, TRANSFORM_STEPS
from .model import IF_ABSENT, Direction, Emit, FieldCatalog
from .params import MISSING, Param, ParamScope, compile_params
from .paths import pointer
from .probes import Probe, compile_answer, compile_probe
from .problems import Problems, suggest
from .specs import NAME_RE, SpecCompiler, mentions, removes
from .tables import Table

ENTITY_TYPES = ("vehicle", "driver", "supplier", "operator", "other")
COMMON_KEYS = ("name", "description", "direction", "entity_type", "kind")
INBOUND_KEYS = (
    "target",
    "key",
    "emit",
    "items",
    "fields",
    "event_data",
    "occurrence_id",
    "params",
    "probe",
    "answer",
    "also",
    "create",
)
OCCURRENCE = "occurrence_id"
ALSO_KEYS = ("entity_type", "kind", "key", "fields", "emit", "when", "create")
TARGETS = ("entities", "positions")
# What a position mapping may not have: fixes name their vehicle themselves (plate or
# tracker_id), events come from the fold, not from the mapping, and a fix writes no entity.
_NOT_FOR_POSITIONS = ("key", "emit", "event_data", "occurrence_id", "also", "create")
OUTBOUND_KEYS = ("path", "query", "headers", "body", "body_value", "response")
WHOLE_BODY: Final = "body"
"""The target a `body_value`'s problems name."""
ALL_KEYS = (*COMMON_KEYS, *INBOUND_KEYS, *OUTBOUND_KEYS)
MAPPING_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
EVENT_RE = re.compile(r"^[a-z][a-z0-9_]*(?:[.-][a-z0-9_]+)*$")
# Event types only the gateway records, never a mapping's `emit`: the entity writes' own
# (gateway/entities.py: a mapping's `entity.deleted` would tell subscribers, flows and the
# fleet fold of a deletion that never happened, a second `entity.created` double what the
# write records) and the fleet fold's judgements of the positions it reads
# (gateway/fleet/fold.py: a fix refused, an odometer re-based). What a partner can say
# too stays open to mappings: a tracker's geofence, speeding or driver events
# (`vehicle.geofence.exited`), a maintenance system's `vehicle.maintenance.due`.
RESERVED_EVENT_PREFIXES: Final = ("entity.",)
RESERVED_EVENT_TYPES: Final = frozenset(
    {"vehicle.position.rejected", "vehicle.odometer.rebaselined"}
)
HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
QUERY_RE = re.compile(r"^[^\s&=#]{1,100}$")
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key"})
SENSITIVE_WORDS = ("token", "secret", "password", "apikey", "api-key", "api_key")
_MAX_DESCRIPTION = 2_000
_MAX_EVENTS = 20
_SECRET_KEYS = frozenset({"secret"})
MAX_ALSO = 10
"""Further entities one payload item may write (`also`)."""

Key = tuple[tuple[str, ...], ...]
"""A mapping's `key`: its alternatives in order, each the target(s) that find the entity
together. `key: [a, b]` is one alternative; `key: {first_of: [a, [b, c]]}` several, and an
item is found by the first whose targets all have a value."""

MAX_KEY_ALTERNATIVES = 10
_KEY_SHAPE = (
    "key is a field name, a list of field names, or {first_of: [alternative, ...]} whose "
    "alternatives are each a field name or a list of field names"
)


@dataclass(frozen=True, slots=True)
class Inner:
    """`items: {from: outer, each: inner, as: name}`: an item per element of each outer
    element's inner list, the outer element with the inner one under `name`."""

    each: Getter
    name: str


_ITEMS_SHAPE = (
    "items is an expression that gives the list of items, or {from: expression, each: "
    "expression, as: name} for a list inside each element, either with when: condition to "
    "keep only the items it holds for"
)


@dataclass(frozen=True, slots=True)
class Guard:
    """`only_forward` on a target: written only when `by` (the target itself, or another
    target of the same fields) does not go back; off when `unless` holds on the payload.
    `if_absent` on a target is a guard whose `by` is IF_ABSENT: written only while the stored
    entity has no value there."""

    target: str
    by: str
    unless: Condition | None = None


@dataclass(slots=True)
class AlsoPlan:
    """One further entity of `also`: evaluated on the same payload after the main fields."""

    entity_type: str
    kind: str | None
    key: Key
    fields: Table
    emit: tuple[tuple[Emit, Condition | None], ...]
    forward: tuple[Guard, ...]
    when: Condition | None
    create: bool


@dataclass(slots=True)
class Plan:
    """Everything a CompiledMapping evaluates, compiled."""

    name: str
    direction: Direction
    entity_type: str | None = None
    kind: str | None = None
    target: str = "entities"  # inbound: entity upserts, or "positions" (canonical fixes)
    key: Key = ()
    emit: tuple[tuple[Emit, Condition | None], ...] = ()
    items: Getter | None = None
    inner: Inner | None = None  # `items: {from, each, as}`: a list inside each element
    keep: Condition | None = None  # `items: {..., when}`: only the items it holds for
    fields: Table = ()
    event_data: Table = ()
    occurrence: Table = ()  # `occurrence_id`, as a table of that one target
    path: Table = ()
    query: Table = ()
    headers: Table = ()
    body: Table | None = None
    whole_body: bool = False  # `body_value`: `body` is one spec's value, not targets
    response: Table = ()
    secrets: frozenset[str] = field(default_factory=frozenset)
    reads_received: bool = False  # `{received: time}`: what it writes depends on when it came
    params: Mapping[str, Param] = field(default_factory=dict)
    probe: Probe | None = None
    answer: Mapping[str, Any] | None = None  # added to a call's 2xx answer (`probes.py`)
    forward: tuple[Guard, ...] = ()
    also: tuple[AlsoPlan, ...] = ()
    create: bool = True  # inbound, entities: whether an item may create its entity
    strict: bool = True  # compiled under the rules for new texts (False: a stored version)
    deprecated: tuple[str, ...] = ()  # each use of a renamed member's old name, a line each


def compile_plan(
    data: Any,
    problems: Problems,
    catalog: FieldCatalog | None,
    values: Mapping[str, Any] | None = None,
    *,
    strict: bool = True,
) -> Plan | None:
    """The plan for a mapping document, or None when `problems` got at least one problem.
    `values` are a trigger's params (unset ones take their defaults). Not `strict`: a stored
    version, compiled without the rules only new texts meet (see load_mapping)."""
    if not isinstance(data, dict):
        problems.add("", "a mapping file is an object with name, direction, ...", "type")
        return None
    # Targets of renamed members (`last_position.latitude`) compile under their new names.
    current, deprecated = current_mapping(data)
    data = dict(current)
    direction = _header(data, problems)
    declared = compile_params(data["params"], problems) if "params" in data else {}
    specs = SpecCompiler(problems, ParamScope(declared, values or {}), strict=strict)
    plan = Plan(name=str(data.get("name", "")), direction=direction or "inbound", strict=strict)
    plan.params = declared
    plan.entity_type = data.get("entity_type") if data.get("entity_type") in ENTITY_TYPES else None
    plan.kind = data.get("kind") if isinstance(data.get("kind"), str) else None
    if direction == "inbound":
        _inbound(data, plan, specs, catalog)
    elif direction == "outbound":
        _outbound(data, plan, specs, catalog)
    if specs.steps > MAX_STEPS:  # every item would be refused: say so now, and why
        message = (
            f"the transforms of one item would cost {specs.steps:,} steps of work, more than "
            f"the limit of {MAX_STEPS:,} (a transform costs {TRANSFORM_STEPS}, a datetime "
            f"{PARSE_FORMAT_STEPS} more for each parse format)"
        )
        problems.add("", message, "limit")
    plan.secrets = frozenset(specs.secrets)
    plan.reads_received = specs.reads_received
    plan.deprecated = (*deprecated, *specs.deprecated)
    return None if problems else plan


def _header(data: dict[str, Any], problems: Problems) -> Direction | None:
    """Checks the keys every mapping has; returns the direction when it is valid."""
    direction = data.get("direction")
    allowed = (*COMMON_KEYS, *(INBOUND_KEYS if direction == "inbound" else OUTBOUND_KEYS))
    for key in data:
        if key in allowed:
            continue
        if key in ALL_KEYS:
            other = "outbound" if direction == "inbound" else "inbound"
            problems.add(pointer(key), f"{key} is only for {other} mappings", "unknown")
        else:
            problems.add(pointer(key), f"unknown key {key!r}{suggest(key, ALL_KEYS)}", "unknown")
    name = data.get("name")
    if name is None:
        problems.add("", "name is required", "required")
    elif not isinstance(name, str) or not MAPPING_NAME_RE.fullmatch(name):
        problems.add("/name", "name is 1-100 letters, digits, '_', '.', '-'", "pattern")
    if refused := text_refused(data.get("description", ""), _MAX_DESCRIPTION):
        message = f"description is text of at most {_MAX_DESCRIPTION}"
        problems.add("/description", message, refused)
    if direction is None:
        problems.add("", "direction is required: inbound or outbound", "required")
    elif direction not in ("inbound", "outbound"):
        problems.add("/direction", "direction is inbound or outbound", "enum")
    positions = direction == "inbound" and data.get("target") == "positions"
    _entity(data, problems, required=direction == "inbound" and not positions)
    if positions and data.get("entity_type", "vehicle") != "vehicle":
        problems.add("/entity_type", "a position mapping is for vehicles", "target")
    return direction if direction in ("inbound", "outbound") else None


def _entity(data: dict[str, Any], problems: Problems, *, required: bool, at: str = "") -> bool:
    """Checks entity_type and kind (of the file, or of an `also` target at `at`)."""
    entity_type, kind = data.get("entity_type"), data.get("kind")
    count = len(problems.items)
    if entity_type is None:
        if required:
            problems.add(
                at, f"entity_type is required: one of {', '.join(ENTITY_TYPES)}", "required"
            )
    elif entity_type not in ENTITY_TYPES:
        message = f"entity_type is one of {', '.join(ENTITY_TYPES)}"
        problems.add(f"{at}/entity_type", message, "enum")
    if kind is None:
        if entity_type == "other" and required:
            problems.add(at, "kind is required when entity_type is other", "required")
    elif entity_type != "other":
        problems.add(f"{at}/kind", "kind goes with entity_type other", "kind")
    elif not isinstance(kind, str) or not KIND_RE.match(kind):
        problems.add(f"{at}/kind", "kind is lower-case letters, digits and '_'", "pattern")
    return len(problems.items) == count


# -- inbound -------------------------------------------------------------------------------------


def _inbound(
    data: dict[str, Any], plan: Plan, specs: SpecCompiler, catalog: FieldCatalog | None
) -> None:
    problems = specs.problems
    target = data.get("target", "entities")
    if target not in TARGETS:
        problems.add("/target", f"target is one of {', '.join(TARGETS)}", "enum")
    elif target == "positions":
        _positions(data, plan, specs)
        return
    if "fields" not in data:
        problems.add("", "fields is required", "required")
    else:
        fields, plan.forward = _guards(data["fields"], "/fields", specs)
        specs.removals = True
        plan.fields = specs.table(fields, "/fields", 1) or ()
        specs.removals = False
        _check_catalog(data["fields"], "/fields", plan.entity_type, plan.kind, problems, catalog)
    plan.key = _key(data, problems)
    if not isinstance(data.get("create", True), bool):
        problems.add("/create", "create is true or false", "type")
    plan.create = data.get("create") is not False
    if "also" in data:
        main = data["fields"] if isinstance(data.get("fields"), dict) else {}
        plan.also = _also(data["also"], frozenset(main), specs, catalog)
    if "items" in data:
        _items(data["items"], plan, specs)
    plan.emit = _emit(data.get("emit", []), specs, "/emit", data.get("fields"))
    if "probe" in data:
        plan.probe = compile_probe(data["probe"], specs)
    if "answer" in data:
        plan.answer = compile_answer(data["answer"], specs)
    if "event_data" in data:
        # `main: target` reads what the main fields gave (a value the entity keeps as well).
        fields = data["fields"] if isinstance(data.get("fields"), dict) else {}
        specs.main_targets = frozenset(fields)
        plan.event_data = specs.table(data["event_data"], "/event_data", 1) or ()
        specs.main_targets = None
    if "occurrence_id" in data:
        plan.occurrence = specs.table({OCCURRENCE: data["occurrence_id"]}, "", 1) or ()


def _positions(data: dict[str, Any], plan: Plan, specs: SpecCompiler) -> None:
    """A position mapping: each item becomes a canonical fix (gateway/fleet/fix.py)."""
    problems = specs.problems
    plan.target, plan.entity_type = "positions", "vehicle"
    for name in _NOT_FOR_POSITIONS:
        if name in data:
            message = f"{name} is not for position mappings (fixes name their vehicle)"
            problems.add(pointer(name), message, "target")
    raw = data.get("fields")
    if raw is None:
        problems.add("", "fields is required", "required")
        return
    plan.fields = specs.table(raw, "/fields", 1) or ()
    if isinstance(raw, dict):
        for target in raw:
            top = target.split(".", 1)[0]
            if top not in FIX_FIELDS or ("." in target and top != "attributes"):
                message = f"target {target!r} is not a fix field ({', '.join(FIX_FIELDS)})"
                problems.add(f"/fields{pointer(target)}", message, "unknown_field")
    if "items" in data:
        _items(data["items"], plan, specs)
    if "probe" in data:
        plan.probe = compile_probe(data["probe"], specs)
    if "answer" in data:
        plan.answer = compile_answer(data["answer"], specs)


def _items(raw: Any, plan: Plan, specs: SpecCompiler) -> None:
    """`items`: an expression, `{from, when}` (the items a condition holds for: it may read
    the trigger's params, `{param: name}`, as the fields' conditions do), or `{from, each, as}`
    (a list inside each element: a page of vehicles, each with its points; every item keeps
    its vehicle's fields), with or without `when`."""
    if isinstance(raw, str):
        plan.items = specs.expression(raw, "/items")
        return
    shape = set(raw) - {"when"} if isinstance(raw, dict) else set()
    if shape not in ({"from"}, {"from", "each", "as"}):
        specs.problems.add("/items", _ITEMS_SHAPE, "type")
        return
    count = len(specs.problems.items)
    if "as" in raw and not (isinstance(raw["as"], str) and NAME_RE.match(raw["as"])):
        specs.problems.add("/items/as", "as is a name: letters, digits and '_'", "pattern")
    for key in ("from", "each"):
        if key in raw and not isinstance(raw[key], str):
            specs.problems.add(f"/items/{key}", f"{key} is an expression", "type")
    keep = specs.condition(raw["when"], "/items/when") if "when" in raw else None
    if len(specs.problems.items) != count:
        return
    outer = specs.expression(raw["from"], "/items/from")
    each = specs.expression(raw["each"], "/items/each") if "each" in raw else None
    if outer is None or ("each" in raw and each is None):
        return
    plan.items, plan.keep = outer, keep
    if each is not None:
        plan.inner = Inner(each, raw["as"])


def _key(data: dict[str, Any], problems: Problems, base: str = "") -> Key:
    raw = data.get("key")
    if raw is None:
        problems.add(base, "key is required: the fields that find the entity", "required")
        return ()
    fields = data.get("fields")
    targets = fields if isinstance(fields, dict) else {}
    if isinstance(raw, dict):
        choices = raw.get("first_of")
        if set(raw) != {"first_of"} or not isinstance(choices, list):
            problems.add(f"{base}/key", _KEY_SHAPE, "type")
            return ()
        if not 0 < len(choices) <= MAX_KEY_ALTERNATIVES:
            message = f"first_of lists 1 to {MAX_KEY_ALTERNATIVES} alternatives"
            problems.add(f"{base}/key/first_of", message, "key")
            return ()
        found = [
            _alternative(c, f"{base}/key/first_of/{i}", targets, problems)
            for i, c in enumerate(choices)
        ]
        alternatives = tuple(a for a in found if a)
        if len(alternatives) != len(found):
            return ()
        if len(set(map(frozenset, alternatives))) != len(alternatives):
            problems.add(f"{base}/key/first_of", "first_of lists an alternative twice", "key")
        return alternatives
    alternative = _alternative(raw, f"{base}/key", targets, problems)
    return (alternative,) if alternative else ()


def _alternative(raw: Any, at: str, targets: dict[str, Any], problems: Problems) -> tuple[str, ...]:
    """One way to find the entity: the target(s) whose values, together, find it."""
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        problems.add(at, _KEY_SHAPE, "type")
        return ()
    count = len(problems.items)
    for i, name in enumerate(names):
        if name not in targets:
            where = at if isinstance(raw, str) else f"{at}/{i}"
            problems.add(where, f"key field {name!r} is not among the fields' targets", "key")
    if len(set(names)) != len(names):
        problems.add(at, "key lists a field twice", "key")
    return tuple(names) if len(problems.items) == count else ()


def _no_guard_on_removal(spec: Any, at: str, problems: Problems) -> None:
    """A removal (`{remove: true}`) is written whatever is stored: no guard goes with it."""
    if not isinstance(spec, dict) or not removes(spec):
        return
    for guard in ("if_absent", "only_forward"):
        if guard in spec:
            message = f"{guard} does not go with remove (a removal is written as it is)"
            problems.add(f"{at}/{guard}", message, "only_forward")


def _guards(raw: Any, at: str, specs: SpecCompiler) -> tuple[Any, tuple[Guard, ...]]:
    """`only_forward` and `if_absent` taken off the top-level specs of a fields table: the
    table without them (for the spec compiler) and the guards they declare."""
    if not isinstance(raw, dict):
        return raw, ()
    problems = specs.problems
    fields: dict[str, Any] = {}
    guards: list[Guard] = []
    for target, spec in raw.items():
        _no_guard_on_removal(spec, f"{at}{pointer(target)}", problems)
        if isinstance(spec, dict) and "if_absent" in spec:
            absent = spec["if_absent"]
            spec = {k: v for k, v in spec.items() if k != "if_absent"}
            if absent is True:
                guards.append(Guard(target, IF_ABSENT))
            elif absent is not False:
                problems.add(f"{at}{pointer(target)}/if_absent", "if_absent is a boolean", "type")
        if not isinstance(spec, dict) or "only_forward" not in spec:
            fields[target] = spec
            continue
        fields[target] = {k: v for k, v in spec.items() if k != "only_forward"}
        option, here = spec["only_forward"], f"{at}{pointer(target)}/only_forward"
        if option is True:
            guards.append(Guard(target, target))
        elif isinstance(option, dict) and option and set(option) <= {"by", "unless"}:
            guard = _guard(target, option, here, raw, specs)
            if guard is not None:
                guards.append(guard)
        elif option is not False:
            message = "only_forward is true, false or {by: target, unless: condition}"
            problems.add(here, message, "only_forward")
    return fields, tuple(guards)


def _guard(
    target: str, option: dict[str, Any], at: str, fields: dict[str, Any], specs: SpecCompiler
) -> Guard | None:
    by = option.get("by", target)
    if not isinstance(by, str) or by not in fields:
        specs.problems.add(
            f"{at}/by", f"by {by!r} is not a target of the same fields", "only_forward"
        )
        return None
    if "unless" not in option:
        return Guard(target, by)
    unless = option["unless"]
    if isinstance(unless, dict) and set(unless) == {"param"}:
        # An authoritative source, said by a trigger's param: decided once per set of values.
        name = unless["param"]
        if not isinstance(name, str) or name not in specs.scope.declared:
            known = ", ".join(specs.scope.declared) or "none"
            message = f"param {name!r} is not declared in params ({known})"
            specs.problems.add(f"{at}/unless/param", message, "param")
            return None
        value = specs.scope.value(name)
        if value is not MISSING and value not in (None, False):
            # Off for every payload; kept so that the write says its source is authoritative
            # for the target (`MappedDocument.lifted`).
            return Guard(target, by, _always)
        return Guard(target, by)
    condition = specs.condition(unless, f"{at}/unless")
    return None if condition is None else Guard(target, by, condition)


def _always(payload: Any, run: Run) -> bool:
    return True


def _also(
    raw: Any, main: frozenset[str], specs: SpecCompiler, catalog: FieldCatalog | None
) -> tuple[AlsoPlan, ...]:
    """`also`: further entities the item writes, each with its entity type, key and fields."""
    problems = specs.problems
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_ALSO:
        message = f"also is a list of 1 to {MAX_ALSO} targets: {{entity_type, key, fields}}"
        problems.add("/also", message, "type")
        return ()
    plans: list[AlsoPlan] = []
    for i, item in enumerate(raw):
        at = f"/also/{i}"
        if not isinstance(item, dict):
            problems.add(at, "an also target is {entity_type, key, fields, ...}", "type")
            continue
        for key in item:
            if key not in ALSO_KEYS:
                message = f"unknown key {key!r}{suggest(key, ALSO_KEYS)} in an also target"
                problems.add(f"{at}{pointer(key)}", message, "unknown")
        known = _entity(item, problems, required=True, at=at)
        etype, kind = item.get("entity_type"), item.get("kind")
        table: Table = ()
        guards: tuple[Guard, ...] = ()
        if "fields" not in item:
            problems.add(at, "fields is required", "required")
        else:
            fields, guards = _guards(item["fields"], f"{at}/fields", specs)
            specs.main_targets, specs.removals = main, True
            table = specs.table(fields, f"{at}/fields", 1) or ()
            specs.main_targets, specs.removals = None, False
            if known:
                _check_catalog(item["fields"], f"{at}/fields", etype, kind, problems, catalog)
        key = _key(item, problems, at)
        emit = _emit(item.get("emit", []), specs, f"{at}/emit", item.get("fields"))
        when = specs.condition(item["when"], f"{at}/when") if "when" in item else None
        create = item.get("create", True)
        if not isinstance(create, bool):
            problems.add(f"{at}/create", "create is true or false", "type")
        if known and isinstance(etype, str):
            plans.append(AlsoPlan(etype, kind, key, table, emit, guards, when, create is not False))
    return tuple(plans)


def _emit(
    raw: Any, specs: SpecCompiler, base: str, fields: Any
) -> tuple[tuple[Emit, Condition | None], ...]:
    """`emit`: each event with its `announce` (which writes announce it) and its `when` (on
    which payloads); `announce: {changed: [...]}` names targets of `fields` (or objects
    holding some)."""
    problems = specs.problems
    if not isinstance(raw, list) or len(raw) > _MAX_EVENTS:
        problems.add(base, f"emit is a list of at most {_MAX_EVENTS} event types", "type")
        return ()
    targets = [t for t in fields if isinstance(t, str)] if isinstance(fields, dict) else []
    events: list[tuple[Emit, Condition | None]] = []
    for i, item in enumerate(raw):
        at = f"{base}/{i}"
        condition = None
        announce: Any = "change"
        if isinstance(item, dict) and set(item) <= {"type", "when", "announce"} and "type" in item:
            if "when" in item:
                condition = specs.condition(item["when"], f"{at}/when")
            announce = item.get("announce", "change")
            item = item["type"]
        if not isinstance(item, str) or len(item) > 100 or not EVENT_RE.match(item):
            problems.add(
                at,
                "an event is a type like vehicle.position, or {type, when?, announce?}",
                "emit",
            )
            continue
        reserved = item in RESERVED_EVENT_TYPES or item.startswith(RESERVED_EVENT_PREFIXES)
        if reserved and specs.strict:  # a version stored before the rule keeps emitting it
            message = (
                f"{item} is an event type the gateway records itself (entity.*,"
                f" {', '.join(sorted(RESERVED_EVENT_TYPES))}): emit a type of your own"
            )
            problems.add(at, message, "emit")
            continue
        if specs.strict and any(e.type == item for e, _ in events):
            # One write would store the event twice: every subscription and flow on it runs
            # twice (a version stored before the rule keeps emitting as it did).
            message = (
                f"{item} is emitted twice: one entry per type, its `when` saying when"
                " (`a || b` for either)"
            )
            problems.add(at, message, "emit")
            continue
        emit = _announce(item, announce, targets, problems, f"{at}/announce")
        if emit is not None:
            events.append((emit, condition))
    return tuple(events)


def _announce(
    etype: str, announce: Any, targets: list[str], problems: Problems, at: str
) -> Emit | None:
    if announce in ("change", "create", "every"):
        return Emit(etype, announce)
    changed = (
        announce.get("changed")
        if isinstance(announce, dict) and set(announce) == {"changed"}
        else None
    )
    if not isinstance(changed, list) or not changed or len(changed) > _MAX_EVENTS:
        message = "announce is change, create, every, or {changed: [targets]}"
        problems.add(at, message, "emit")
        return None
    for j, target in enumerate(changed):
        if not isinstance(target, str) or not any(
            t == target or t.startswith(f"{target}.") for t in targets
        ):
            message = f"announce.changed: {target!r} is not a target of fields (nor holds one)"
            problems.add(f"{at}/changed/{j}", message, "emit")
            return None
    return Emit(etype, "change", tuple(changed))


def _check_catalog(
    raw: Any,
    at: str,
    entity_type: str | None,
    kind: str | None,
    problems: Problems,
    catalog: FieldCatalog | None,
) -> None:
    if entity_type is None or not isinstance(raw, dict):
        return
    for target in raw:
        top = target.split(".", 1)[0] if isinstance(target, str) else ""
        if top in RESERVED_FIELDS:  # the entity's envelope: the API would show another value
            message = reserved_field_message(top, "the target")
            problems.add(f"{at}{pointer(target)}", message, "reserved")
        elif catalog is not None and not catalog.has_field(entity_type, target, kind=kind):
            what = entity_type + (f" ({kind})" if kind else "")
            message = f"target {target!r} is not a field of the {what} schema"
            problems.add(f"{at}{pointer(target)}", message, "unknown_field")


# -- outbound ------------------------------------------------------------------------------------


def _outbound(
    data: dict[str, Any], plan: Plan, specs: SpecCompiler, catalog: FieldCatalog | None
) -> None:
    problems = specs.problems
    if not any(key in data for key in OUTBOUND_KEYS):
        problems.add("", f"an outbound mapping has one of {', '.join(OUTBOUND_KEYS)}", "required")
    # What the request reads (the entity, the event) may use a renamed member's old names.
    specs.aliases = read_aliases(plan.entity_type, data.get("entity_type"))
    plan.path = _named(data, "path", NAME_RE, specs)
    plan.query = _named(data, "query", QUERY_RE, specs)
    plan.headers = _named(data, "headers", HEADER_RE, specs)
    _check_credentials(data.get("headers"), "headers", problems)
    _check_charset(data.get("headers"), problems)
    _check_credentials(data.get("query"), "query", problems)
    if "body" in data and "body_value" in data:
        message = "body and body_value are two sources of one body: keep one"
        problems.add("/body_value", message, "source")
    elif "body" in data:
        plan.body = specs.table(data["body"], "/body", 1) or ()
    elif "body_value" in data:  # any JSON value: a list for a bulk endpoint
        plan.body = specs.whole(data["body_value"], "/body_value", WHOLE_BODY) or ()
        plan.whole_body = True
    if "response" in data:
        specs.aliases = {}  # the partner's answer: its names are its own, never renamed
        specs.removals = True
        plan.response = specs.table(data["response"], "/response", 1) or ()
        specs.removals = False
        _check_catalog(
            data["response"], "/response", plan.entity_type, plan.kind, problems, catalog
        )


def _named(
    data: dict[str, Any], section: str, pattern: re.Pattern[str], specs: SpecCompiler
) -> Table:
    raw = data.get(section)
    if raw is None:
        return ()
    if isinstance(raw, dict):
        for name in raw:
            if not pattern.match(name):
                specs.problems.add(
                    f"/{section}{pointer(name)}",
                    f"{name!r} is not a valid {section} name",
                    "pattern",
                )
            elif section == "headers" and is_reserved_header(name):
                specs.problems.add(f"/{section}{pointer(name)}", reserved_message(name), "reserved")
    return specs.table(raw, f"/{section}", 1, flat=True) or ()


def _check_charset(headers: Any, problems: Problems) -> None:
    """A constant Content-Type naming a charset no codec writes the body in is refused at
    upload, not at every send."""
    if not isinstance(headers, dict):
        return
    for key, spec in headers.items():
        value = spec.get("value") if isinstance(spec, dict) else None
        if str(key).lower() == "content-type" and isinstance(value, str):
            if why := unknown_charset(value):
                problems.add(f"/headers{pointer(key)}/value", why, "charset")


def _check_credentials(section: Any, name: str, problems: Problems) -> None:
    """Credentials live in secrets, never inline: a header or query parameter whose name says
    it carries one must read a secret."""
    if not isinstance(section, dict):
        return
    for key, spec in section.items():
        lower = str(key).lower()
        sensitive = lower in SENSITIVE_HEADERS or any(w in lower for w in SENSITIVE_WORDS)
        if sensitive and not mentions(spec, _SECRET_KEYS):
            problems.add(
                f"/{name}{pointer(key)}",
                f"{key!r} carries a credential: take it from a secret ({{secret: name}}, or "
                "a template with a secret var), never inline",
                "secret",
            )
