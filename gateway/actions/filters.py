"""The subscription filter language: which events a subscription wants.

Filters (a subscription's `filter`, every member optional, all must match):

    {"entity_type": "vehicle" | ["vehicle", "driver"],
     "changed": ["odometer_km", "position"],     any of these fields (or below them) changed
     "entity": {"group": "north", "status": ["active", "maintenance"], "plate": null},
                                                  the entity's data at the event: a value, any
                                                  of a list, null for "absent"; dotted paths
     "origin": {"kind": "trigger"}}              who caused the event (kind, id)

Paths are matched member by member (`json_tree.path_parts`): a member whose name has a dot
is bracketed (`attributes["fuel.card"]`), and a plain dotted path reaches it too when no
nested member is there (`change_reaches`, `reaches`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import FieldProblem, InvalidPayload
from gateway.formats.json_tree import change_reaches, is_text, reaches

_EVENT_TYPE = re.compile(r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$")
_MAX_VALUES = 100
_SCALARS = (str, int, float, bool, type(None))

Values = tuple[tuple[str, tuple[Any, ...]], ...]


def event_type_problem(value: Any) -> str | None:
    if not is_text(value) or len(value) > 100 or not _EVENT_TYPE.match(value):
        return 'an event type is like "entity.updated", "vehicle.*" (a family) or "*" (everything)'
    return None


def event_type_keys(event_type: str) -> list[str]:
    """The subscription event_types that name `event_type`: itself, its families, "*"."""
    parts = event_type.split(".")
    families = [".".join(parts[:i]) + ".*" for i in range(len(parts) - 1, 0, -1)]
    return [event_type, *families, "*"]


# Event types a listener (a subscription, a flow) gets only by naming them, not through
# "vehicle.*" or "*": one per fix would swamp every catch-all (SPEC §6).
OPT_IN_TYPES = frozenset({"vehicle.position"})


def flow_listener(name: str) -> str:
    """A flow's name in an event's `audience` (a subscription's is its id)."""
    return f"flow:{name}"


def wanted_by(event: Mapping[str, Any], names: Sequence[str], listener: str) -> str | None:
    """None when the listener whose event types are `names` (a subscription's `event_types`,
    a flow's `on.events`) and whose id is `listener` wants `event`, else why not ("asks for
    ..."): the one rule of the fan-out, the flow starter and the dry run. An opt-in type
    is wanted only by its own name; an event with an `audience` (the fold's sampled
    `vehicle.position`) only by the listeners it names."""
    event_type = str(event.get("type", ""))
    asked = ", ".join(names) or "nothing"
    if event_type in OPT_IN_TYPES:
        if event_type not in names:
            return f"asks for {asked}, not {event_type} (opt-in: asked for only by its name)"
    elif set(event_type_keys(event_type)).isdisjoint(names):
        return f"asks for {asked}, not {event_type}"
    audience = event.get("audience")
    if audience is not None and (not isinstance(audience, list) or listener not in audience):
        return "is not in the event's audience"
    return None


@dataclass(frozen=True, slots=True)
class EventFilter:
    entity_types: frozenset[str] | None = None
    changed: tuple[str, ...] = ()
    entity: Values = ()
    origin: Values = ()

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether the event passes. Total on any JSON: a member of another shape than a
        stored event's (a dry run's sample event is the caller's) matches nothing."""
        entity = _object(event.get("entity"))
        if self.entity_types is not None:
            kind = entity.get("type")
            if not is_text(kind) or kind not in self.entity_types:
                return False
        if self.changed:
            changes = event.get("changes")
            found = [
                (c["field"], (c.get("old"), c.get("new")) if "old" in c or "new" in c else None)
                for c in (changes if isinstance(changes, list) else ())
                if isinstance(c, Mapping) and isinstance(c.get("field"), str)
            ]
            if not any(
                change_reaches(field, want, values)
                for field, values in found
                for want in self.changed
            ):
                return False
        return _all_match(self.entity, _object(event.get("data"))) and _all_match(
            self.origin, _object(event.get("origin"))
        )

    def may_pass(
        self, origin_kind: str, entity_type: str | None = None, field: str | None = None
    ) -> bool:
        """Whether an event whose origin has kind `origin_kind` (of an `entity_type` entity,
        changing `field`, when given) may pass, its data and the rest of its origin unknown:
        what a flow's upload check asks of the events its own writes cause."""
        kinds = dict(self.origin).get("kind")
        if kinds is not None and origin_kind not in kinds:
            return False
        if entity_type is not None and self.entity_types is not None:
            if entity_type not in self.entity_types:
                return False
        if field is None or not self.changed:
            return True
        return any(change_reaches(field, want) for want in self.changed)


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _all_match(values: Values, document: Mapping[str, Any]) -> bool:
    return all(reaches(document, path) in allowed for path, allowed in values)


def compile_filter(raw: Any) -> EventFilter:
    """A subscription's filter, checked whole; InvalidPayload names every bad member."""
    problems: list[FieldProblem] = []
    if not isinstance(raw, Mapping):
        raise InvalidPayload(
            "invalid filter", [FieldProblem("/filter", "filter must be an object", "type")]
        )
    for key in raw:
        if key not in ("entity_type", "changed", "entity", "origin"):
            problems.append(
                FieldProblem(
                    f"/filter/{key}",
                    f"unknown filter {key!r}; use entity_type, changed, entity, origin",
                    "additionalProperties",
                )
            )
    result = EventFilter(
        entity_types=_entity_types(raw.get("entity_type"), problems),
        changed=_fields(raw.get("changed"), problems),
        entity=_values(raw.get("entity"), "/filter/entity", problems),
        origin=_values(raw.get("origin"), "/filter/origin", problems),
    )
    if problems:
        raise InvalidPayload("invalid filter", problems)
    return result


def _entity_types(value: Any, problems: list[FieldProblem]) -> frozenset[str] | None:
    if value is None:
        return None
    types = [value] if isinstance(value, str) else value
    if not isinstance(types, list) or not types or not all(is_text(t) for t in types):
        problems.append(
            FieldProblem("/filter/entity_type", "entity_type is a type or a list of types", "type")
        )
        return None
    return frozenset(types)


def _fields(value: Any, problems: list[FieldProblem]) -> tuple[str, ...]:
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or not value
        or len(value) > _MAX_VALUES
        or not all(is_text(f) and f for f in value)
    ):
        problems.append(
            FieldProblem(
                "/filter/changed", "changed is a list of field names (dotted paths)", "type"
            )
        )
        return ()
    return tuple(value)


def _values(value: Any, at: str, problems: list[FieldProblem]) -> Values:
    if value is None:
        return ()
    if not isinstance(value, Mapping) or len(value) > _MAX_VALUES:
        problems.append(FieldProblem(at, "expected an object of field: value", "type"))
        return ()
    out = []
    for path, wanted in value.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if (
            not path
            or len(options) > _MAX_VALUES
            or not all(isinstance(o, _SCALARS) for o in options)
        ):
            problems.append(
                FieldProblem(
                    f"{at}/{path}",
                    "a value, or a list of values, each a string, number, boolean or null",
                    "type",
                )
            )
            continue
        out.append((str(path), tuple(options)))
    return tuple(out)
