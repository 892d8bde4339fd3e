"""Flow files → compiled flows. Pure: no database, no HTTP.

load_flow(text | document, *, filename=None) -> CompiledFlow
    YAML or JSON, checked against schemas/flow.schema.json, then the rules a schema cannot
    say: each step is one kind, ids are unique, expressions compile, a step reads only the
    steps before it (`steps.<id>` of itself or a later step would be a cycle), and a flow
    does not write the entities whose updates start it. InvalidPayload lists every problem
    with its JSON Pointer and line. Whether named actions, channels and templates exist is
    the service's check (they live in the tenant).

check_flow(text | document, *, filename=None) -> Checked
    The same stages, every problem they find at once where they can run: nothing runs on a
    document that does not parse; the rules a schema cannot say run on a document whose only
    schema problems are unknown members, and then on a copy without them, once that copy
    passes the schema whole (a recipient `{foo: 1}` without its unknown member is `{}`, a
    recipient of no kind: that is reported too, and the compiler does not run); any other
    schema problem (a missing or
    mistyped member) leaves a shape the compiler cannot read, and it does not run. The
    references the compiler collected come back even when it found problems, for the
    service to check in the tenant in the same answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import jmespath

from gateway.actions.filters import EventFilter, compile_filter, event_type_keys
from gateway.errors import InvalidPayload
from gateway.flows.model import (
    KINDS,
    AssignSpec,
    CompiledFlow,
    DriverSpec,
    Expr,
    NotifySpec,
    RecipientSpec,
    Reference,
    SetSpec,
    Step,
)
from gateway.mapping.expressions import compile_expression
from gateway.mapping.loader import canonical_checksum, parse_document
from gateway.mapping.problems import Problems
from gateway.schemas import CompiledSchema, compile_schema
from gateway.shipped import SCHEMAS


@cache
def flow_schema() -> CompiledSchema:
    """The flow language's schema: the package's own, whatever GATEWAY_SCHEMA_DIR names."""
    return compile_schema(json.loads((SCHEMAS / "flow.schema.json").read_text()))


# Schema problems that leave every shape the compiler reads in place: members it ignores.
_UNKNOWN_MEMBERS = frozenset({"additionalProperties", "unevaluatedProperties"})


@dataclass(frozen=True, slots=True)
class Checked:
    """A flow file's stages run as far as they can: the flow (None on any problem), every
    problem found (with lines), and the references the compiler collected."""

    flow: CompiledFlow | None
    problems: Problems
    references: tuple[Reference, ...]


def check_flow(
    text: str | bytes | Mapping[str, Any], *, filename: str | None = None, strict: bool = True
) -> Checked:
    """`strict=False` for a stored version: read as when it was stored (see parse_document)."""
    if isinstance(text, Mapping):
        text = json.dumps(text, ensure_ascii=False)
    problems = Problems(filename=filename)
    data = parse_document(text, problems, strict=strict)
    if problems:  # nothing to read
        return Checked(None, problems, ())
    found = flow_schema().validate(data)
    for problem in found:
        problems.add(problem.pointer, problem.message, problem.keyword)
    if any(problem.keyword not in _UNKNOWN_MEMBERS for problem in found):
        return Checked(None, problems, ())  # a shape the compiler cannot read
    if found:
        data = _without(data, [problem.pointer for problem in found])
        rest = flow_schema().validate(data)
        for problem in rest:  # what does not stand without them (a recipient left empty)
            problems.add(problem.pointer, problem.message, problem.keyword)
        if rest:
            return Checked(None, problems, ())
    compiler = _Compiler(problems)
    flow = compiler.flow(data)
    return Checked(flow, problems, tuple(compiler.references))


def _without(data: Any, pointers: list[str]) -> Any:
    """A copy of `data` without the members at `pointers` (each names a member of an object,
    as the schema's unknown-member problems do)."""
    out = deepcopy(data)
    for at in pointers:
        *path, name = [_unescape(part) for part in at.split("/")[1:]] or [""]
        node: Any = out
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, dict):
            node.pop(name, None)
    return out


def load_flow(
    text: str | bytes | Mapping[str, Any], *, filename: str | None = None, strict: bool = True
) -> CompiledFlow:
    checked = check_flow(text, filename=filename, strict=strict)
    checked.problems.raise_if_any(what_failed(filename))
    assert checked.flow is not None
    return checked.flow


def what_failed(filename: str | None) -> str:
    return f"flow {filename or ''}".rstrip() + " is not valid"


class _Compiler:
    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.references: list[Reference] = []
        self.reads_stored = False  # an expression of the step being compiled names `stored`

    def flow(self, data: dict[str, Any]) -> CompiledFlow | None:
        on = data["on"]
        event_filter = None
        if "filter" in on:
            try:
                event_filter = compile_filter(on["filter"])
            except InvalidPayload as exc:
                for p in exc.problems:
                    self.problems.add("/on" + p.pointer, p.message, p.keyword)
        when = self.expr(on.get("when"), "/on/when", frozenset())
        steps: list[Step] = []
        seen: set[str] = set()
        for i, raw in enumerate(data["steps"]):
            at = f"/steps/{i}"
            if raw["id"] in seen:
                self.problems.add(f"{at}/id", f"step id {raw['id']!r} is used twice", "unique")
            self.reads_stored = False
            step = self.step(raw, at, frozenset(seen))
            if step is not None and self.reads_stored:
                step = replace(step, reads_stored=True)
            seen.add(raw["id"])
            if step is not None:
                steps.append(step)
        if "filter" not in on or event_filter is not None:  # a bad filter says so itself
            self.check_self_trigger(on["events"], event_filter, steps)
        if self.problems:
            return None
        return CompiledFlow(
            name=data["name"],
            description=data.get("description", ""),
            events=tuple(on["events"]),
            filter=event_filter,
            when=when,
            steps=tuple(steps),
            references=tuple(self.references),
            source=data,
            checksum=canonical_checksum(data),
        )

    def step(self, raw: dict[str, Any], at: str, earlier: frozenset[str]) -> Step | None:
        kinds = [k for k in KINDS if k in raw and k != "when"]
        if len(kinds) > 1:
            message = f"a step is one of fetch, notify, call, set or when; this one has {kinds}"
            self.problems.add(at, message, "oneOf")
            return None
        kind = kinds[0] if kinds else "when"
        if kind == "when" and "when" not in raw:
            self.problems.add(at, "a step needs fetch, notify, call, set or when", "required")
            return None
        if "with" in raw and kind not in ("fetch", "call"):
            self.problems.add(f"{at}/with", "with goes with fetch and call", "dependentRequired")
        if "assign" in raw and kind != "fetch":
            self.problems.add(f"{at}/assign", "assign goes with fetch", "dependentRequired")
        sid = raw["id"]
        condition = self.expr(raw.get("when"), f"{at}/when", earlier)
        step = Step(sid, kind, at, guard=condition if kind != "when" else None)
        if kind == "when":
            return Step(sid, kind, at, condition=condition, why=raw.get("description", ""))
        if kind in ("fetch", "call"):
            needs = "GET" if kind == "fetch" else "write"
            self.references.append(Reference("action", raw[kind], f"{at}/{kind}", sid, needs))
            values = self.values(raw.get("with", {}), f"{at}/with", earlier)
            assign = self.assign(raw.get("assign"), f"{at}/assign", earlier | {sid})
            return Step(
                sid, kind, at, guard=step.guard, action=raw[kind], values=values, assign=assign
            )
        if kind == "notify":
            notify = self.notify(raw["notify"], f"{at}/notify", sid, earlier)
            return Step(sid, kind, at, guard=step.guard, notify=notify)
        set_spec = self.set(raw["set"], f"{at}/set", earlier)
        why = raw.get("description", "")
        return Step(sid, kind, at, guard=step.guard, set=set_spec, why=why)

    def notify(self, raw: dict[str, Any], at: str, sid: str, earlier: frozenset[str]) -> NotifySpec:
        self.references.append(Reference("channel", raw["channel"], f"{at}/channel", sid))
        self.references.append(
            Reference("template", raw["template"], f"{at}/template", sid, raw["channel"])
        )
        found = (
            self.recipient(r, f"{at}/recipients/{i}", sid, raw["channel"], earlier)
            for i, r in enumerate(raw["recipients"])
        )
        recipients = tuple(r for r in found if r is not None)
        cooldown = raw.get("cooldown") or {}
        return NotifySpec(
            channel=raw["channel"],
            template=raw["template"],
            recipients=recipients,
            context=self.values(raw["context"], f"{at}/context", earlier)
            if "context" in raw
            else None,
            cooldown_key=self.expr(cooldown.get("key"), f"{at}/cooldown/key", earlier),
            cooldown_seconds=cooldown.get("seconds"),
            cooldown_also=self.expr(cooldown.get("also"), f"{at}/cooldown/also", earlier),
            cooldown_at=self.expr(cooldown.get("at"), f"{at}/cooldown/at", earlier),
            cooldown_per_recipient=bool(cooldown.get("per_recipient", False)),
            urgent=bool(raw.get("urgent", False)),
        )

    def recipient(
        self, raw: dict[str, Any], at: str, sid: str, channel: str, earlier: frozenset[str]
    ) -> RecipientSpec | None:
        if "operators" in raw:
            return RecipientSpec(role=raw["operators"]["role"])
        if "address" in raw:
            address = raw["address"]
            if isinstance(address, str):
                pointed = [(address, f"{at}/address")]
            else:
                pointed = [(a, f"{at}/address/{i}") for i, a in enumerate(address)]
            # Each one a contact the channel can send to (`FlowService`, with its type).
            self.references += [Reference("address", a, p, sid, channel) for a, p in pointed]
            return RecipientSpec(addresses=tuple(a for a, _ in pointed))
        if "driver" not in raw:
            self.problems.add(at, "a recipient is a driver, operators or an address", "required")
            return None
        driver = raw["driver"]
        if driver == "current":
            return RecipientSpec(driver=DriverSpec())
        if "from" in driver and len(driver) > 1:
            message = "a driver comes from the context (from) or the history (vehicle, at)"
            self.problems.add(f"{at}/driver", message, "oneOf")
        return RecipientSpec(
            driver=DriverSpec(
                vehicle=self.expr(driver.get("vehicle"), f"{at}/driver/vehicle", earlier),
                at=self.expr(driver.get("at"), f"{at}/driver/at", earlier),
                source=self.expr(driver.get("from"), f"{at}/driver/from", earlier),
            )
        )

    def assign(
        self, raw: dict[str, Any] | None, at: str, readable: frozenset[str]
    ) -> AssignSpec | None:
        """`assign` reads the fetch's own answer (`steps.<its id>`) besides earlier steps."""
        if raw is None:
            return None
        vehicle = self.expr(raw["vehicle"], f"{at}/vehicle", readable)
        driver = self.expr(raw["driver"], f"{at}/driver", readable)
        start = self.expr(raw.get("start"), f"{at}/start", readable)
        asked = self.expr(raw.get("at"), f"{at}/at", readable)
        if vehicle is None or driver is None:
            return None
        return AssignSpec(vehicle, driver, start, raw.get("source", "hr"), asked)

    def set(self, raw: dict[str, Any], at: str, earlier: frozenset[str]) -> SetSpec:
        entity = raw.get("entity")
        names = raw["fields"]
        for inner in names:
            outer = next((n for n in names if inner.startswith(n + ".")), None)
            if outer is not None:
                message = f"{inner!r} is inside {outer!r}: write one or the other"
                self.problems.add(f"{at}/fields/{_escape(inner)}", message, "overlap")
        return SetSpec(
            fields=self.values(raw["fields"], f"{at}/fields", earlier),
            entity_type=None if entity is None else entity["type"],
            ref=None if entity is None else self.expr(entity["ref"], f"{at}/entity/ref", earlier),
            expect=self.values(raw.get("expect", {}), f"{at}/expect", earlier),
        )

    def values(self, raw: dict[str, str], at: str, earlier: frozenset[str]) -> dict[str, Expr]:
        out: dict[str, Expr] = {}
        for name, text in raw.items():
            expr = self.expr(text, f"{at}/{_escape(name)}", earlier)
            if expr is not None:
                out[name] = expr
        return out

    def expr(self, text: str | None, at: str, earlier: frozenset[str]) -> Expr | None:
        if text is None:
            return None
        getter, why = compile_expression(text)
        if getter is None:
            self.problems.add(at, why, "expression")
            return None
        for ref in sorted(step_references(text)):
            if ref not in earlier:
                message = (
                    f"steps.{ref} is not a step before this one: a step reads the answers of "
                    "earlier steps only (a later or the same step would be a cycle)"
                )
                self.problems.add(at, message, "cycle")
        self.reads_stored = self.reads_stored or "stored" in field_names(text)
        return Expr(text, getter)

    def check_self_trigger(
        self, events: list[str], event_filter: EventFilter | None, steps: list[Step]
    ) -> None:
        """A step that writes an entity causes its entity.updated (never an entity.created: a
        `set` changes an entity that exists): a flow started by that event (no filter keeping
        it out) would start itself again. A `set` writes its entity (`entity.type`, else the
        event's own, of any type) with origin kind `flow`; a fetch's `assign` changes a
        vehicle's `current_driver` with origin kind its `source` (hr, erp). The filter is read
        compiled: `origin: {kind: ...}` (and `{kind: null}`, absent) keeps out the kinds it does
        not name, an `entity_type` without the set's type keeps out a set's, and one without
        `vehicle` or a `changed` without `current_driver` keeps out an assign's."""
        if _none_of(events, ("entity.updated",)):
            return
        for step in steps:
            written = step.set.entity_type if step.set is not None else None
            if step.kind == "set" and _may_pass(event_filter, "flow", written):
                message = (
                    "this set writes entities whose entity.updated events start the flow: a "
                    "cycle; keep flows out with on.filter.origin.kind (e.g. [trigger, admin])"
                )
                self.problems.add(f"{step.pointer}/set", message, "cycle")
            spec = step.assign
            if (
                spec is not None
                and not _none_of(events, ("entity.updated",))
                and _may_pass(event_filter, spec.source, "vehicle", "current_driver")
            ):
                message = (
                    "this assign changes the vehicle's current_driver, whose entity.updated "
                    f"(origin kind {spec.source}) starts the flow: a cycle; keep it out with "
                    "on.filter.origin.kind (e.g. [trigger, admin]) or on.filter.changed"
                )
                self.problems.add(f"{step.pointer}/assign", message, "cycle")


def _none_of(events: list[str], written: tuple[str, ...]) -> bool:
    """Whether `events` (a flow's `on.events`) names none of the `written` event types."""
    return {k for event in written for k in event_type_keys(event)}.isdisjoint(events)


def _may_pass(
    event_filter: EventFilter | None,
    origin_kind: str,
    entity_type: str | None = None,
    field: str | None = None,
) -> bool:
    return event_filter is None or event_filter.may_pass(origin_kind, entity_type, field)


def step_references(expression: str) -> set[str]:
    """The step ids an expression reads as `steps.<id>`."""
    found: set[str] = set()
    stack = [jmespath.compile(expression).parsed]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        children = node.get("children") or []
        # `steps.a.b` is one subexpression of the fields steps, a, b.
        if node.get("type") == "subexpression" and len(children) >= 2:
            if _field(children[0]) == "steps" and _field(children[1]):
                found.add(str(_field(children[1])))
        stack.extend(c for c in children if isinstance(c, dict))
    return found


def field_names(expression: str) -> set[str]:
    """Every field name an expression reads, at any depth (`stored.plate`: stored, plate)."""
    found: set[str] = set()
    stack = [jmespath.compile(expression).parsed]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        if (name := _field(node)) is not None:
            found.add(name)
        stack.extend(c for c in node.get("children") or [] if isinstance(c, dict))
    return found


def _field(node: Any) -> str | None:
    if isinstance(node, dict) and node.get("type") == "field":
        return str(node.get("value"))
    return None


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")
