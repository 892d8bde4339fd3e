"""A compiled flow: plain, immutable objects the dry run and the runner walk."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.mapping.expressions import Getter, Run, is_truthy

StepKind = Literal["fetch", "when", "notify", "call", "set"]
KINDS: tuple[StepKind, ...] = ("fetch", "notify", "call", "set", "when")


@dataclass(frozen=True, slots=True)
class Expr:
    """A compiled JMESPath expression; evaluating it raises the mapping engine's EvalError."""

    text: str
    getter: Getter = field(repr=False)

    def value(self, context: Any) -> Any:
        return self.getter(context, Run())

    def holds(self, context: Any) -> bool:
        return is_truthy(self.value(context))


@dataclass(frozen=True, slots=True)
class DriverSpec:
    """`current` (vehicle and at unset), `{vehicle?, at?}` (history), or `{from}`."""

    vehicle: Expr | None = None
    at: Expr | None = None
    source: Expr | None = None


@dataclass(frozen=True, slots=True)
class RecipientSpec:
    driver: DriverSpec | None = None
    role: str | None = None  # operators with this role
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NotifySpec:
    channel: str
    template: str
    recipients: tuple[RecipientSpec, ...]
    context: Mapping[str, Expr] | None = None
    cooldown_key: Expr | None = None
    cooldown_seconds: int | None = None
    cooldown_also: Expr | None = None  # keys whose note holds this one back, not noted by it
    # The condition's time (a crossing's device time): the cooldown is judged on it, not on
    # the send time; None: on the send time (`notify/dispatch.py`).
    cooldown_at: Expr | None = None
    cooldown_per_recipient: bool = False  # each recipient (a driver, an address) its own note
    urgent: bool = False


@dataclass(frozen=True, slots=True)
class SetSpec:
    fields: Mapping[str, Expr]
    entity_type: str | None = None  # None: the event's entity
    ref: Expr | None = None
    # Dotted fields the entity must hold, each the expression's value, when it is written
    # (`EntityService.patch(expect=)`): else nothing is written and the run stops.
    expect: Mapping[str, Expr] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AssignSpec:
    """A fetch whose answer says who drives a vehicle: recorded in its driver history."""

    vehicle: Expr  # a plate or a vehicle id
    driver: Expr  # a CPF or a driver id
    # A time, or a date alone (recipients.parse_start); absent: the run's start; not a time:
    # nothing recorded.
    start: Expr | None = None
    source: str = "hr"
    # The time the partner was asked about (a fine's infraction): an answer whose `start` is
    # later names a later driver (a system that ignored the time asked): the step fails.
    at: Expr | None = None


@dataclass(frozen=True, slots=True)
class Step:
    id: str
    kind: StepKind
    pointer: str  # /steps/<i>, for problems and outcomes
    guard: Expr | None = None  # `when` beside another kind: skip the step when false
    condition: Expr | None = None  # a `when` step: end the run when false
    why: str = ""  # a `when` or `set` step: its description, recorded with the stop it makes
    action: str | None = None  # fetch, call
    values: Mapping[str, Expr] = field(default_factory=dict)  # fetch, call: `with`
    assign: AssignSpec | None = None  # fetch
    notify: NotifySpec | None = None
    set: SetSpec | None = None
    # An expression of the step reads `stored` (the event's entity as stored when the step
    # runs): read then, before this step only.
    reads_stored: bool = False


@dataclass(frozen=True, slots=True)
class Reference:
    """Something a flow names that must exist in the tenant."""

    kind: Literal["action", "channel", "template", "address"]
    name: str  # an address: the fixed address itself
    pointer: str
    step: str
    needs: str = ""  # action: "GET" or "write"; template, address: the channel it goes with


@dataclass(frozen=True, slots=True)
class CompiledFlow:
    name: str
    description: str
    events: tuple[str, ...]
    filter: Any  # an EventFilter (the subscription filter language), or None
    when: Expr | None
    steps: tuple[Step, ...]
    references: tuple[Reference, ...]
    source: Mapping[str, Any]
    checksum: str

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)
