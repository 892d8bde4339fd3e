"""A parsed mapping document → a `Plan`: its tables and rules compiled, every problem reported."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.fleet.fix import FIELDS as FIX_FIELDS

from .expressions import Getter
from .model import Direction, FieldCatalog
from .params import Param, ParamScope, compile_params
from .paths import pointer
from .probes import Probe, compile_probe
from .problems import Problems, suggest
from .specs import NAME_RE, SpecCompiler, mentions
from .tables import Table

ENTITY_TYPES = ("vehicle", "driver", "supplier", "operator", "other")
COMMON_KEYS = ("name", "description", "direction", "entity_type", "kind")
INBOUND_KEYS = ("target", "key", "emit", "items", "fields", "event_data", "params", "probe")
TARGETS = ("entities", "positions")
# What a position mapping may not have: fixes name their vehicle themselves (plate or
# tracker_id) and events come from the fold, not from the mapping.
_NOT_FOR_POSITIONS = ("key", "emit", "event_data")
OUTBOUND_KEYS = ("path", "query", "headers", "body", "response")
ALL_KEYS = (*COMMON_KEYS, *INBOUND_KEYS, *OUTBOUND_KEYS)
MAPPING_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
EVENT_RE = re.compile(r"^[a-z][a-z0-9_]*(?:[.-][a-z0-9_]+)*$")
HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
QUERY_RE = re.compile(r"^[^\s&=#]{1,100}$")
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key"})
SENSITIVE_WORDS = ("token", "secret", "password", "apikey", "api-key", "api_key")
_MAX_DESCRIPTION = 2_000
_MAX_EVENTS = 20
_SECRET_KEYS = frozenset({"secret"})


@dataclass(slots=True)
class Plan:
    """Everything a CompiledMapping evaluates, compiled."""

    name: str
    direction: Direction
    entity_type: str | None = None
    kind: str | None = None
    target: str = "entities"  # inbound: entity upserts, or "positions" (canonical fixes)
    key_fields: tuple[str, ...] = ()
    emit: tuple[tuple[str, Any], ...] = ()
    items: Getter | None = None
    fields: Table = ()
    event_data: Table = ()
    path: Table = ()
    query: Table = ()
    headers: Table = ()
    body: Table | None = None
    response: Table = ()
    secrets: frozenset[str] = field(default_factory=frozenset)
    params: Mapping[str, Param] = field(default_factory=dict)
    probe: Probe | None = None


def compile_plan(
    data: Any,
    problems: Problems,
    catalog: FieldCatalog | None,
    values: Mapping[str, Any] | None = None,
) -> Plan | None:
    """The plan for a mapping document, or None when `problems` got at least one problem.
    `values` are a trigger's params (unset ones take their defaults)."""
    if not isinstance(data, dict):
        problems.add("", "a mapping file is an object with name, direction, ...", "type")
        return None
    direction = _header(data, problems)
    declared = compile_params(data["params"], problems) if "params" in data else {}
    specs = SpecCompiler(problems, ParamScope(declared, values or {}))
    plan = Plan(name=str(data.get("name", "")), direction=direction or "inbound")
    plan.params = declared
    plan.entity_type = data.get("entity_type") if data.get("entity_type") in ENTITY_TYPES else None
    plan.kind = data.get("kind") if isinstance(data.get("kind"), str) else None
    if direction == "inbound":
        _inbound(data, plan, specs, catalog)
    elif direction == "outbound":
        _outbound(data, plan, specs, catalog)
    plan.secrets = frozenset(specs.secrets)
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
    elif not isinstance(name, str) or not MAPPING_NAME_RE.match(name):
        problems.add("/name", "name is 1-100 letters, digits, '_', '.', '-'", "pattern")
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > _MAX_DESCRIPTION:
        problems.add("/description", f"description is text of at most {_MAX_DESCRIPTION}", "type")
    if direction is None:
        problems.add("", "direction is required: inbound or outbound", "required")
    elif direction not in ("inbound", "outbound"):
        problems.add("/direction", "direction is inbound or outbound", "enum")
    positions = direction == "inbound" and data.get("target") == "positions"
    _entity(data, problems, required=direction == "inbound" and not positions)
    if positions and data.get("entity_type", "vehicle") != "vehicle":
        problems.add("/entity_type", "a position mapping is for vehicles", "target")
    return direction if direction in ("inbound", "outbound") else None


def _entity(data: dict[str, Any], problems: Problems, *, required: bool) -> None:
    entity_type, kind = data.get("entity_type"), data.get("kind")
    if entity_type is None:
        if required:
            problems.add(
                "", f"entity_type is required: one of {', '.join(ENTITY_TYPES)}", "required"
            )
    elif entity_type not in ENTITY_TYPES:
        problems.add("/entity_type", f"entity_type is one of {', '.join(ENTITY_TYPES)}", "enum")
    if kind is None:
        if entity_type == "other" and required:
            problems.add("", "kind is required when entity_type is other", "required")
    elif entity_type != "other":
        problems.add("/kind", "kind goes with entity_type other", "kind")
    elif not isinstance(kind, str) or not KIND_RE.match(kind):
        problems.add("/kind", "kind is lower-case letters, digits and '_'", "pattern")


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
        plan.fields = specs.table(data["fields"], "/fields", 1) or ()
        _check_catalog(data["fields"], "/fields", plan, problems, catalog)
    plan.key_fields = _key(data, problems)
    if "items" in data:
        if isinstance(data["items"], str):
            plan.items = specs.expression(data["items"], "/items")
        else:
            problems.add("/items", "items is an expression that gives the list of items", "type")
    plan.emit = _emit(data.get("emit", []), specs)
    if "probe" in data:
        plan.probe = compile_probe(data["probe"], specs)
    if "event_data" in data:
        plan.event_data = specs.table(data["event_data"], "/event_data", 1) or ()


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
        if isinstance(data["items"], str):
            plan.items = specs.expression(data["items"], "/items")
        else:
            problems.add("/items", "items is an expression that gives the list of items", "type")
    if "probe" in data:
        plan.probe = compile_probe(data["probe"], specs)


def _key(data: dict[str, Any], problems: Problems) -> tuple[str, ...]:
    raw = data.get("key")
    if raw is None:
        problems.add("", "key is required: the fields that find the entity", "required")
        return ()
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        problems.add("/key", "key is a field name or a list of field names", "type")
        return ()
    fields = data.get("fields")
    targets = fields if isinstance(fields, dict) else {}
    at = "/key" if isinstance(raw, str) else None
    for i, name in enumerate(names):
        if name not in targets:
            where = at or f"/key/{i}"
            problems.add(where, f"key field {name!r} is not among the fields' targets", "key")
    if len(set(names)) != len(names):
        problems.add("/key", "key lists a field twice", "key")
    return tuple(names)


def _emit(raw: Any, specs: SpecCompiler) -> tuple[tuple[str, Any], ...]:
    problems = specs.problems
    if not isinstance(raw, list) or len(raw) > _MAX_EVENTS:
        problems.add("/emit", f"emit is a list of at most {_MAX_EVENTS} event types", "type")
        return ()
    events: list[tuple[str, Any]] = []
    for i, item in enumerate(raw):
        at = f"/emit/{i}"
        condition = None
        if isinstance(item, dict) and set(item) <= {"type", "when"} and "type" in item:
            if "when" in item:
                condition = specs.condition(item["when"], f"{at}/when")
            item = item["type"]
        if not isinstance(item, str) or len(item) > 100 or not EVENT_RE.match(item):
            problems.add(
                at, "an event is a type like vehicle.position, or {type: ..., when: ...}", "emit"
            )
            continue
        events.append((item, condition))
    return tuple(events)


def _check_catalog(
    raw: Any, at: str, plan: Plan, problems: Problems, catalog: FieldCatalog | None
) -> None:
    if catalog is None or plan.entity_type is None or not isinstance(raw, dict):
        return
    for target in raw:
        if not catalog.has_field(plan.entity_type, target, kind=plan.kind):
            what = plan.entity_type + (f" ({plan.kind})" if plan.kind else "")
            message = f"target {target!r} is not a field of the {what} schema"
            problems.add(f"{at}{pointer(target)}", message, "unknown_field")


# -- outbound ------------------------------------------------------------------------------------


def _outbound(
    data: dict[str, Any], plan: Plan, specs: SpecCompiler, catalog: FieldCatalog | None
) -> None:
    problems = specs.problems
    if not any(key in data for key in OUTBOUND_KEYS):
        problems.add("", f"an outbound mapping has one of {', '.join(OUTBOUND_KEYS)}", "required")
    plan.path = _named(data, "path", NAME_RE, specs)
    plan.query = _named(data, "query", QUERY_RE, specs)
    plan.headers = _named(data, "headers", HEADER_RE, specs)
    _check_credentials(data.get("headers"), "headers", problems)
    _check_credentials(data.get("query"), "query", problems)
    if "body" in data:
        plan.body = specs.table(data["body"], "/body", 1) or ()
    if "response" in data:
        plan.response = specs.table(data["response"], "/response", 1) or ()
        _check_catalog(data["response"], "/response", plan, problems, catalog)


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
    return specs.table(raw, f"/{section}", 1, flat=True) or ()


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
