"""The plain types the mapping package hands out and accepts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol

from ..formats import at_path
from ..formats.json_tree import change_reaches

Direction = Literal["inbound", "outbound"]


class FieldCatalog(Protocol):
    """What the compiler asks the entity schemas: does this dotted field exist?"""

    def has_field(self, entity_type: str, path: str, *, kind: str | None = None) -> bool: ...


Forward = tuple[tuple[str, str], ...]
"""Only-forward fields of a mapped document: (target, ordering target) pairs. The target is
written only when the ordering target's new value (a number or a date-time) is not behind
the stored one; `only_forward: true` orders a field by itself. An empty ordering target
(`IF_ABSENT`, a field's `if_absent: true`) writes the target only while the stored entity has
no value there (a new fine's status `open`, never written over `paid`)."""

IF_ABSENT = ""


Announce = Literal["change", "create", "every"]


class FieldChange(Protocol):
    """One change a write made (`entities.Change`): the dotted field, its old and new value."""

    @property
    def field(self) -> str: ...
    @property
    def old(self) -> Any: ...
    @property
    def new(self) -> Any: ...


class Emit(NamedTuple):
    """An event a mapping emits (`emit`), and which writes announce it (`announce`): `change` (the
    default) a write that created the entity or changed it, narrowed by `changed` to a change
    at, under or above one of those targets (`announced`; a created entity: one that has a
    value there);
    `create` only a write that created it; `every` every accepted call, changed or not (an
    occurrence the partner reports, such as a geofence alert, rather than a change of ours).
    `occurrence`: the partner's id of the occurrence the item reports (the mapping's
    `occurrence_id`, as text), by which the relay announces the event once per occurrence."""

    type: str
    announce: Announce = "change"
    changed: tuple[str, ...] = ()
    occurrence: str | None = None

    @property
    def written_announce(self) -> Any:
        """`announce` as the file writes it (`create`, `every`, `{changed: [...]}`); None for
        the default, `change`."""
        if self.changed:
            return {"changed": list(self.changed)}
        return None if self.announce == "change" else self.announce

    def announced(
        self, created: bool, changes: Sequence[FieldChange], data: Mapping[str, Any]
    ) -> bool:
        """Whether a write (`created` it, or made these `changes` to it; `data`: the entity as
        written) announces this event. A target of `changed` is changed by a change at or
        under it, or above it when its value there differs (`change_reaches`: an existing
        vehicle's first `last_position` changes `last_position.lat` from absent to a value,
        as creating it with one does)."""
        if self.announce == "every":
            return True
        if self.announce == "create" or (not created and not changes):
            return created
        if not self.changed:
            return True
        if created:
            return any(at_path(data, target) is not None for target in self.changed)
        return any(
            change_reaches(c.field, target, (c.old, c.new))
            for c in changes
            for target in self.changed
        )


def announces(events: Sequence[Emit]) -> dict[str, Any]:
    """The `announce` of those of `events` that say other than the default, by event type
    (what the dry run and `gateway mapping test` show beside the events)."""
    return {e.type: shown for e in events if (shown := e.written_announce) is not None}


class MappedTarget(NamedTuple):
    """A further entity one item writes (`also`), in the same durable write as the main one."""

    entity_type: str
    document: dict[str, Any]
    key: dict[str, Any]
    events: tuple[Emit, ...]
    forward: Forward
    create: bool
    lifted: tuple[str, ...] = ()  # only-forward fields whose `unless` held: authoritative
    place: int = 0  # its entry's place in the file's `also`: its fields' sources (`source_of`)

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(e.type for e in self.events)


class MappedDocument(NamedTuple):
    """One inbound item, mapped: the entity fields, its lookup key, the events to emit, the
    fields `event_data` adds to those events, the only-forward fields, the further
    entities the item writes (`also`), the only-forward fields whose `unless` held (the
    source is authoritative for them: `lifted`) and the item's `occurrence_id` as text (None
    when the mapping declares none or the item gives none: its events carry it too);
    `at_receipt`: a value came from when the payload was received (`{received: time}`), so
    the same payload received later maps to something else."""

    document: dict[str, Any]
    key: dict[str, Any]
    events: tuple[Emit, ...]
    event_data: dict[str, Any]
    forward: Forward = ()
    also: tuple[MappedTarget, ...] = ()
    lifted: tuple[str, ...] = ()
    occurrence: str | None = None
    at_receipt: bool = False

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(e.type for e in self.events)


class OutboundRequest(NamedTuple):
    """The parts of a partner request a mapping builds; the action adds method, URL and auth."""

    path_params: dict[str, str]
    query: dict[str, str | list[str]]  # a list: the parameter repeated, one per item
    headers: dict[str, str]
    body: Any | None


class _Removal:
    """The value of a `{remove: true}` spec (`REMOVE`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "REMOVE"


REMOVE: Any = _Removal()
"""What a `{remove: true}` spec gives: a table writes its target as null, which an entity
write takes as the field's removal (a merge patch's null), where any other null result
is left out (`tables.evaluate`)."""


class EvalError(Exception):
    """A spec failed on a payload; the table that called it adds the target field."""

    def __init__(self, keyword: str, message: str, source: str = "") -> None:
        super().__init__(message)
        self.keyword = keyword
        self.message = message
        self.source = source
        self.pointer: str | None = None  # where in the payload, when not the source's path
        self.recorded = False


class LimitExceeded(EvalError):
    """The work budget of an evaluation is spent: the whole evaluation stops."""

    def __init__(self, message: str) -> None:
        super().__init__("limit", message)
