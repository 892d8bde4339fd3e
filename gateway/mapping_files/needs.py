"""What each user of a mapping needs of it, checked by one function per kind of user both when
the user is saved (a 422 on its field: `triggers/service.py`, `actions/definitions.py`,
`schedules/service.py`) and when a version of the mapping is about to become active while the
user names it (`service.py`, a 409 naming the users): a version the user's own save check
would refuse is refused, any other is taken.

    trigger   `mapping`: inbound, mapping to the trigger's target, for its entity type (or
              none) and kind (or none), compiling with its params; `response_mapping`:
              outbound, for its entity type (or none), with a body, reading no secret (a
              read has none), that requires nothing `expose` hides
    action    `request_mapping`, `response_mapping`: outbound
    schedule  `mapping`: inbound, mapping to the schedule's target, for its entity type (or
              none) and kind (or none), compiling with its params

Each takes the mapping, the user's field that names it and the user's fields as stored (or as
about to be stored), and answers the problems with their pointers in the user's document.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gateway.errors import FieldProblem
from gateway.mapping import CompiledMapping
from gateway.schemas.renamed import current_path

Needs = Callable[[CompiledMapping, str, Mapping[str, Any]], list[FieldProblem]]


def trigger_needs(
    mapping: CompiledMapping, field: str, trigger: Mapping[str, Any]
) -> list[FieldProblem]:
    name = mapping.name
    direction = "inbound" if field == "mapping" else "outbound"
    target = trigger.get("target") or "entities"
    message = None
    if mapping.direction != direction:
        message = f"{name!r} is {mapping.direction}; {field} must be {direction}"
    elif direction == "inbound" and mapping.target != target:
        message = f"{name!r} maps to {mapping.target}; this trigger's target is {target}"
    elif mapping.entity_type not in (None, trigger.get("entity_type") or "vehicle"):
        message = f"{name!r} is for {mapping.entity_type} entities"
    elif direction == "inbound" and _other_kind(mapping, trigger.get("kind")):
        message = (
            f"{name!r} writes {mapping.kind} documents; this trigger's kind is {trigger['kind']}"
        )
    elif direction == "outbound" and mapping.source.get("body") is None:
        message = f"{name!r} has no body section to shape answers with"
    elif direction == "outbound" and mapping.secrets:
        secrets = ", ".join(sorted(mapping.secrets))
        message = (
            f"{name!r} reads secrets ({secrets}), which a trigger's reads never have (no "
            "secret goes to a partner): no read could be shaped"
        )
    if message is not None:
        return [FieldProblem(f"/{field}", message, "mapping")]
    if direction == "inbound":
        return mapping.param_problems(trigger.get("params") or {})
    expose = trigger.get("expose")
    if not isinstance(expose, list):
        return []  # no expose (or one the trigger's schema refuses)
    etype = trigger.get("entity_type") or "vehicle"
    shown = [current_path(etype, e) for e in expose if isinstance(e, str)]
    hidden = hidden_requirements(mapping.source["body"], shown, etype)
    return [
        FieldProblem(
            "/expose",
            f"the response mapping {name!r} requires entity.{path} (body {at}), which expose "
            "hides: expose it, or make the mapping's field optional",
            "mapping",
        )
        for at, path in hidden
    ]


def action_needs(
    mapping: CompiledMapping, field: str, action: Mapping[str, Any]
) -> list[FieldProblem]:
    if mapping.direction == "outbound":
        return []
    name, direction = mapping.name, mapping.direction
    message = f"mapping {name!r} is {direction}; an action needs an outbound mapping"
    return [FieldProblem(f"/{field}", message, "reference")]


def schedule_needs(
    mapping: CompiledMapping, field: str, schedule: Mapping[str, Any]
) -> list[FieldProblem]:
    name, target = mapping.name, schedule["target"]
    message = None
    if mapping.direction != "inbound":
        message = f"{name!r} is {mapping.direction}; a schedule's mapping must be inbound"
    elif mapping.target != target["type"]:
        message = f"{name!r} maps to {mapping.target}; this schedule's target is {target['type']}"
    elif target["type"] == "entities" and mapping.entity_type not in (
        None,
        target["entity_type"],
    ):
        message = f"{name!r} is for {mapping.entity_type} entities"
    elif _other_kind(mapping, target.get("kind")):
        message = (
            f"{name!r} writes {mapping.kind} documents; this schedule's kind is {target['kind']}"
        )
    if message is not None:
        return [FieldProblem("/target/mapping", message, "mapping")]
    return [
        replace(p, pointer=f"/target{p.pointer}")
        for p in mapping.param_problems(target.get("params") or {})
    ]


NEEDS: dict[str, Needs] = {
    "trigger": trigger_needs,
    "action": action_needs,
    "schedule": schedule_needs,
}
"""By kind of user (`store/mappings.py` USERS)."""


def _other_kind(mapping: CompiledMapping, kind: Any) -> bool:
    """Whether the mapping writes documents of a kind other than the user's: every item the
    user writes through it would be refused (`triggers/pipeline.py` `_with_kind`)."""
    return mapping.kind is not None and kind is not None and mapping.kind != kind


def hidden_requirements(
    body: Any, expose: Sequence[str], etype: str | None
) -> list[tuple[str, str]]:
    """(target, entity field) of the response mapping's `body` specs that require a field
    `expose` (with new names) hides: every read of such a trigger would fail to shape. Only
    what can be seen statically: a `required: true` spec (no `when`, no `default`) whose
    `from` is a plain `entity.<field>` path, at the top of `body` or inside an `object`; a
    renamed member's old name is read as its new one (`schemas/renamed.py`), as the mapping
    reads it."""
    found: list[tuple[str, str]] = []
    if not isinstance(body, Mapping):
        return found
    for target, spec in body.items():
        if not isinstance(spec, Mapping):
            continue
        if isinstance(spec.get("object"), Mapping) and "when" not in spec:
            inner = hidden_requirements(spec["object"], expose, etype)
            found += [(f"{target}.{t}", path) for t, path in inner]
            continue
        source = spec.get("from")
        match = _ENTITY_PATH.match(source) if isinstance(source, str) else None
        if match is None or spec.get("required") is not True or {"when", "default"} & set(spec):
            continue
        path = match.group(1)
        read = current_path(etype, path)
        if path != "id" and not any(_overlaps(read, shown) for shown in expose):
            found.append((str(target), path))
    return found


_ENTITY_PATH = re.compile(r"^entity\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)$")


def _overlaps(path: str, shown: str) -> bool:
    """Whether exposing `shown` leaves something at `path` (it, inside it, or part of it)."""
    return path == shown or path.startswith(shown + ".") or shown.startswith(path + ".")
