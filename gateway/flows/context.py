"""A flow run's context, and whether an event starts a flow. Pure.

The context every expression sees:

    {"event":  the event (type, occurred_at, entity {type, id, key, rev}, data, changes,
               origin, detail),
     "entity": the entity's data at the event, plus its id,
     "vehicle": in steps, the fleet's vehicle of a non-vehicle entity's `plate` or
               `vehicle_plate` (either spelling), or None (`steps.py` `registered_vehicle`);
               `on.when` reads null, in a dry run as in a run,
     "stored": in a step whose expressions name it, the event's entity as stored when that
               step runs (its data, id and version, as a `set` answers; read right before it),
               null when it is gone: a run that waited (HR down) sees a correction written
               meanwhile (`entity` is the event's); `on.when` reads null,
     "steps":  {step id: what the step gave: a fetch its mapped answer, a set the entity
               written, a notify {"messages": n}},
     "flow":   {"name", "version"},
     "now":    the run's start, RFC 3339}

`with` (fetch, call) adds or replaces top-level members for the action's request mapping;
`context` (notify) is what the template sees instead, plus `recipient` {name, language}.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.actions.filters import flow_listener, wanted_by
from gateway.errors import FieldProblem, InvalidPayload
from gateway.flows.model import CompiledFlow, Expr
from gateway.flows.recipients import parse_time
from gateway.formats.json_tree import plain
from gateway.mapping.expressions import Run, charge_output
from gateway.mapping.limits import MAX_OUTPUT_CHARS
from gateway.mapping.model import EvalError

_JSON_TYPES: dict[type, str] = {str: "a string", dict: "an object", list: "an array"}
# A sample event's members and their JSON types, as a stored event has them (`detail` is
# whatever the source gave).
_EVENT_MEMBERS: dict[str, type] = {
    "id": str,
    "type": str,
    "occurred_at": str,
    "entity": dict,
    "data": dict,
    "changes": list,
    "origin": dict,
    "detail": object,
}


def sample_event(raw: Any, now: datetime) -> dict[str, Any]:
    """A sample event for a dry run, completed like a stored one; InvalidPayload if unusable."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("type"), str):
        message = 'event is an object with at least a "type" (and usually entity and data)'
        raise InvalidPayload(message, [FieldProblem("/event", message, "required")])
    problems = [
        FieldProblem(f"/event/{k}", f"unknown event member {k!r}", "additionalProperties")
        for k in raw
        if k not in _EVENT_MEMBERS
    ]
    problems += [
        FieldProblem(f"/event/{k}", f"{k} is {_JSON_TYPES[kind]}", "type")
        for k, kind in _EVENT_MEMBERS.items()
        if k in raw and raw[k] is not None and not isinstance(raw[k], kind)
    ]
    if problems:
        raise InvalidPayload("invalid sample event", problems)
    event: dict[str, Any] = {
        "id": "dry-run",
        "occurred_at": now.isoformat(),
        "entity": {},
        "data": {},
        "changes": [],
        "origin": {"kind": "admin", "id": "dry-run"},
        **raw,
    }
    completed: dict[str, Any] = plain(event)
    return completed


def run_context(
    event: Mapping[str, Any], *, flow: str, version: int | None, now: datetime
) -> dict[str, Any]:
    ref = event.get("entity") or {}
    return {
        "event": dict(event),
        "entity": {**(event.get("data") or {}), "id": ref.get("id")},
        "steps": {},
        "flow": {"name": flow, "version": version},
        "now": now.astimezone(UTC).isoformat(),
    }


def starts(flow: CompiledFlow, event: Mapping[str, Any], context: Mapping[str, Any]) -> str | None:
    """None when the event starts the flow, else why not. `on.when` errors count as false."""
    why_not = wanted_by(event, flow.events, flow_listener(flow.name))
    if why_not is not None:
        return f"the flow {why_not}"
    if flow.filter is not None and not flow.filter.matches(event):
        return "the event does not pass on.filter"
    if flow.when is not None and not holds(flow.when, context):
        return f"on.when is false: {flow.when.text}"
    return None


def holds(expr: Expr, context: Mapping[str, Any]) -> bool:
    try:
        return expr.holds(context)
    except EvalError:  # a failing condition is a false one, not a crash
        return False


def cooldown_key(expr: Expr, context: Mapping[str, Any]) -> str | None:
    """A `notify` step's cooldown key on this context; None when it names nothing (null or
    empty): no condition, no cooldown. Never the text "None", one key for every vehicle."""
    value = expr.value(context)
    return None if value is None or value == "" else str(value)


def cooldown_at(expr: Expr, context: Mapping[str, Any]) -> datetime | None:
    """A `notify` step's `cooldown.at` on this context: the condition's time (a crossing's
    device time), or None when it is null or not a time (`parse_time`'s forms)."""
    return parse_time(expr.value(context))


def cooldown_also(expr: Expr | None, context: Mapping[str, Any]) -> list[str]:
    """A `notify` step's `cooldown.also` on this context: the further keys whose note holds
    its messages back (a text or a list of texts; null and empty ones name none)."""
    if expr is None:
        return []
    value = expr.value(context)
    values = value if isinstance(value, list) else [value]
    return [str(v) for v in values if v is not None and v != ""]


def evaluate(values: Mapping[str, Expr], context: Mapping[str, Any]) -> dict[str, Any]:
    """`with` / `context` / `fields` values (raises the engine's EvalError). What they come to
    together is bounded as what a mapping's item maps to (MAX_OUTPUT_CHARS as JSON, a value
    counted wherever it is named): 100 fields naming a 200 KB text of the event were 20 MB a
    step, 300 MB in five steps of one viewer's dry run. Each value has its own work budget."""
    result: dict[str, Any] = {}
    left = MAX_OUTPUT_CHARS
    for name, expr in values.items():
        run = Run()
        run.output = left
        value = expr.getter(context, run)
        charge_output(run, value)
        left = run.output
        result[name] = value
    return result
