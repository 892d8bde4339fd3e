"""One payload item through a trigger: validate (schema) → map (mapping) → locate (entity key)
→ upsert (entity); for a position trigger, validate → map → the canonical fix (`fix`), which
the fleet append takes. Shared by partner calls (`ingest.py`) and replays (`replay.py`).

Each stage labels what it refuses with its own name (`with stage("mapping"):`): that label
is the `reason` of the 422 and of the kept record (`rejected.py`), so an admin knows whether
to fix the schema, the mapping or the data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from gateway.entities import (
    EntityService,
    Forward,
    Origin,
    Sees,
    Upsert,
    WriteResult,
    visible_to,
)
from gateway.errors import FieldProblem, InvalidPayload, NotFound
from gateway.fleet.append import Appended
from gateway.mapping import CompiledMapping, DecodedTexts, Emit, MappedDocument
from gateway.mapping.fixes import named_by_mapping, parse_mapped_fix
from gateway.mapping.paths import pointer
from gateway.mapping_files.source import MappingSource
from gateway.metrics import Metrics
from gateway.schemas import (
    NATURAL_KEYS,
    SchemaRegistry,
    is_natural_key,
    lookup_key,
    reference_field,
)
from gateway.schemas.compiled import invalid
from gateway.store import Doc
from gateway.triggers.compiled import CompiledTrigger


@contextlib.contextmanager
def stage(reason: str) -> Iterator[None]:
    """What fails inside is this stage's: an InvalidPayload without a reason gets `reason`."""
    try:
        yield
    except InvalidPayload as exc:
        if "reason" in exc.extra:
            raise
        raise exc.restated(reason=reason) from None


@dataclass(frozen=True, slots=True)
class Prepared:
    """An item validated and mapped, ready to write."""

    fields: dict[str, Any]
    events: Sequence[Emit]
    lane: str  # the natural key: writes to one entity keep their order
    event_detail: Mapping[str, Any] | None = None
    forward: Forward = ()  # only-forward fields (the mapping's `only_forward`)
    also: tuple[Upsert, ...] = ()  # further entities written with it, all or nothing
    # Only-forward fields whose `unless` held (of the item or its `also`): recorded on the
    # write's events as `origin.authoritative`, so the fleet fold takes such an odometer
    # reading back too (docs/fleet.md "Odometer").
    lifted: tuple[str, ...] = ()
    create: bool = True  # the mapping's `create`: false, the entity must exist
    # The mapping that made `fields`: an entity the schema refuses names its targets' sources.
    mapping: CompiledMapping | None = None
    also_places: tuple[int, ...] = ()  # each `also` entity's entry in the mapping's `also`


Field = tuple[str, str]
"""An entity type and a dotted field of it: what a lookup reads, or a write writes."""


@dataclass(frozen=True, slots=True)
class Mapped:
    """An item validated and mapped, before its lookups find the entities it writes
    (`Pipeline.locate`): with the fields those lookups read and those the item writes, so
    that a batch looks an item up only once the earlier items that write what it reads are
    written (`ingest.py`)."""

    fields: dict[str, Any]
    events: Sequence[Emit]
    key: dict[str, Any]
    document: MappedDocument | None  # what its mapping made (None: the item as it came)
    reads: frozenset[Field] = frozenset()
    writes: frozenset[Field] = frozenset()


ALSO_LANE = "also"
"""The batch lane of every item whose mapping writes several entities (`also`): such items
are written one after another, in order, so no entity sees them out of order."""


class Pipeline:
    def __init__(
        self,
        entities: EntityService,
        schemas: SchemaRegistry,
        mappings: MappingSource,
        metrics: Metrics | None = None,
    ) -> None:
        self._entities = entities
        self._schemas = schemas
        self._mappings = mappings
        self._metrics = metrics

    async def item(
        self,
        trigger: CompiledTrigger,
        mapping: CompiledMapping | None,
        item: Any,
        *,
        origin: Origin,
        schema_applies: bool = True,
        received: datetime | None = None,
    ) -> WriteResult:
        """Validate, map and upsert one item."""
        prepared = await self.prepare(
            trigger, mapping, item, schema_applies=schema_applies, received=received
        )
        return await self.write(trigger, prepared, origin)

    async def prepare(
        self,
        trigger: CompiledTrigger,
        mapping: CompiledMapping | None,
        item: Any,
        *,
        schema_applies: bool = True,
        texts: DecodedTexts | None = None,
        received: datetime | None = None,
    ) -> Prepared:
        """Validate and map one item, and find which entity it writes (`texts`: those of
        the payload the item is from, decoded once for all its items; `received`: when the
        payload came, None for now)."""
        mapped = self.map(
            trigger, mapping, item, schema_applies=schema_applies, texts=texts, received=received
        )
        return await self.locate(trigger, mapping, mapped)

    def map(
        self,
        trigger: CompiledTrigger,
        mapping: CompiledMapping | None,
        item: Any,
        *,
        schema_applies: bool = True,
        texts: DecodedTexts | None = None,
        received: datetime | None = None,
    ) -> Mapped:
        """Validate and map one item, without reading the database: what it writes, and what
        its lookups will read (`locate`)."""
        if schema_applies:
            self.validate(trigger, item)
        mapped: MappedDocument | None = None
        if mapping is not None:
            with stage("mapping"):
                mapped = mapping.apply(item, texts=texts, received=received)
            fields, events, key = mapped.document, mapped.events, mapped.key
        elif isinstance(item, dict):
            fields, events, key = item, (), {}
        else:
            with stage("schema"):
                problem = FieldProblem("", "each item must be a JSON object", "type")
                raise invalid("payload", [problem])
        fields = self._with_kind(trigger, fields)
        whole = self._schemas.whole_members
        reads, writes = _reads_and_writes(trigger, mapping, fields, key, mapped, whole)
        return Mapped(fields, events, key, mapped, reads, writes)

    async def locate(
        self, trigger: CompiledTrigger, mapping: CompiledMapping | None, mapped: Mapped
    ) -> Prepared:
        """A mapped item ready to write: the entities its lookups name found (its own and its
        `also` entities'), as the database holds them now."""
        fields, key, document = mapped.fields, mapped.key, mapped.document
        also: list[Upsert] = []
        places: list[int] = []  # of each `also` target in the file
        for target in () if document is None else document.also:
            located = await self._locate(
                trigger.tenant,
                target.entity_type,
                target.document,
                target.key,
                mapping=mapping,
                also=target.place,
            )
            also.append(
                Upsert(
                    target.entity_type,
                    located,
                    target.events,
                    forward=target.forward,
                    create=target.create,
                )
            )
            places.append(target.place)
        found = None
        if mapping is not None and not mapping.create:
            key, found = await self._existing(
                trigger.tenant, trigger.entity_type, mapping, fields, key
            )
        fields = await self._locate(
            trigger.tenant, trigger.entity_type, fields, key, found, mapping=mapping
        )
        with stage("entity"):
            lane = self._entities.natural_key(trigger.entity_type, fields)
            for upsert in also:
                self._entities.natural_key(upsert.etype, upsert.fields)
        if mapping is not None and mapping.also_entity_types:
            lane = ALSO_LANE
        if mapping is not None and document is not None:  # one refused above is not counted
            self._count_missing_occurrence(trigger, mapping, document)
        if document is None:
            return Prepared(fields, mapped.events, lane, {})
        lifted = tuple(
            dict.fromkeys((*document.lifted, *(f for t in document.also for f in t.lifted)))
        )
        return Prepared(
            fields,
            mapped.events,
            lane,
            document.event_data,
            document.forward,
            tuple(also),
            lifted,
            mapping is None or mapping.create,
            mapping,
            tuple(places),
        )

    def _count_missing_occurrence(
        self, trigger: CompiledTrigger, mapping: CompiledMapping, mapped: MappedDocument
    ) -> None:
        """An item with events that gives no `occurrence_id` its mapping declares (the
        partner left it out, or the spec reads the wrong place): its events are announced as
        `announce` says, every copy again; counted so that an operator sees it."""
        if (
            self._metrics is not None
            and mapped.occurrence is None
            and mapping.has_occurrence_id
            and (mapped.events or any(t.events for t in mapped.also))
        ):
            self._metrics.occurrence_ids_missing.labels(
                self._metrics.trigger_label(trigger.id, polled=trigger.polled)
            ).inc()

    def fix(
        self,
        trigger: CompiledTrigger,
        mapping: CompiledMapping | None,
        item: Any,
        *,
        schema_applies: bool = True,
        texts: DecodedTexts | None = None,
        received: datetime | None = None,
    ) -> Any:
        """A position trigger's item as a canonical fix: as it came (checked by the append,
        fix.py), or the one its mapping made, checked here so that a value the fix refuses is
        named where the payload has it (`/position/latitude`, not the fix's `/lat`)."""
        if schema_applies:
            self.validate(trigger, item)
        if mapping is None:
            return item
        with stage("mapping"):
            mapped = mapping.apply(item, texts=texts, received=received)
        fix = parse_mapped_fix(mapping, mapped.document)
        return replace(fix, at_receipt=True) if mapped.at_receipt else fix

    async def write(
        self, trigger: CompiledTrigger, prepared: Prepared, origin: Origin
    ) -> WriteResult:
        if prepared.lifted:
            extra = {**origin.extra, "authoritative": list(prepared.lifted)}
            origin = Origin(origin.kind, origin.id, extra)
        with stage("entity"):
            if prepared.also:
                main = Upsert(
                    trigger.entity_type,
                    prepared.fields,
                    prepared.events,
                    prepared.event_detail,
                    prepared.forward,
                    create=prepared.create,
                    visible=trigger.expose,
                )
                try:
                    results = await self._entities.upsert_together(
                        trigger.tenant, [main, *prepared.also], origin
                    )
                except InvalidPayload as exc:
                    if prepared.mapping is not None:
                        exc.problems = _named_by_target(prepared, main.etype, exc.problems)
                    raise
                result = replace(results[0], also=tuple(results[1:]))
            else:
                try:
                    result = await self._entities.upsert(
                        trigger.tenant,
                        trigger.entity_type,
                        prepared.fields,
                        origin,
                        extra_events=prepared.events,
                        event_detail=prepared.event_detail,
                        forward=prepared.forward,
                        create=prepared.create,
                        visible=trigger.expose,
                    )
                except InvalidPayload as exc:
                    if prepared.mapping is not None:
                        exc.problems = named_by_mapping(prepared.mapping, exc.problems)
                    raise
        if self._metrics is not None:
            for one in (result, *result.also):
                for name in one.skipped:
                    self._metrics.stale_fields_skipped.labels(
                        self._metrics.trigger_label(trigger.id, polled=trigger.polled),
                        self._metrics.label("field", name),
                    ).inc()
        return result

    def validate(self, trigger: CompiledTrigger, payload: Any) -> None:
        """The trigger's input schema, when it has one."""
        if trigger.schema is None:  # (no stage to enter: once an item of a batch)
            return
        with stage("schema"):
            if problems := trigger.schema.validate(payload):
                raise invalid("payload", problems)

    async def inbound_mapping(self, trigger: CompiledTrigger) -> CompiledMapping | None:
        """The trigger's active inbound mapping; a mapping failure when it cannot serve."""
        if trigger.mapping is None:
            return None
        try:
            with stage("mapping"):  # a stored version a newer rule refuses (a reserved target)
                mapping = await self._mappings.active(trigger.tenant, trigger.mapping)
        except NotFound as exc:
            raise _mapping_problem(exc.detail) from None
        if mapping.direction != "inbound":
            raise _mapping_problem(f"mapping {mapping.name!r} is not an inbound mapping")
        if mapping.target != trigger.target:
            raise _mapping_problem(
                f"mapping {mapping.name!r} maps to {mapping.target}, "
                f"this trigger writes {trigger.target}"
            )
        if mapping.entity_type not in (None, trigger.entity_type):
            raise _mapping_problem(
                f"mapping {mapping.name!r} maps to {mapping.entity_type}, "
                f"this trigger writes {trigger.entity_type}"
            )
        with stage("mapping"):
            return mapping.bind(trigger.params)

    def _with_kind(self, trigger: CompiledTrigger, fields: dict[str, Any]) -> dict[str, Any]:
        if trigger.kind is None:
            return fields
        kind = fields.get("kind", trigger.kind)
        with stage("schema"):
            if kind != trigger.kind:
                message = f"/kind: this trigger writes {trigger.kind!r} documents, not {kind!r}"
                raise invalid("payload", [FieldProblem("/kind", message, "const")])
        return fields if "kind" in fields else {"kind": kind, **fields}

    async def _existing(
        self,
        tenant: str,
        etype: str,
        mapping: CompiledMapping,
        fields: dict[str, Any],
        key: dict[str, Any],
    ) -> tuple[dict[str, Any], list[Doc] | None]:
        """`create: false` with `first_of`: the alternative the item is found by is the first
        it has that finds an entity; one that finds none gives way to the next the item has
        (an event naming its device by a plate the fleet does not have, whose tracker id finds
        the vehicle). None finding one: the first, refused as it would be alone. With the
        alternative, what it found (for `_locate`, which would look it up again)."""
        candidates = mapping.alternatives_from(key, fields)
        if len(candidates) < 2:
            return key, None
        for values in candidates:
            lookup = lookup_key(etype, fields, values)
            with stage("mapping"):  # a lookup value the mapping made unusable
                found = await self._entities.find(tenant, etype, lookup, after=None, limit=2)
            if found:
                return values, found
        return key, None

    async def _locate(
        self,
        tenant: str,
        etype: str,
        fields: dict[str, Any],
        key: Mapping[str, Any],
        found: list[Doc] | None = None,
        *,
        mapping: CompiledMapping | None = None,
        also: int | None = None,
    ) -> dict[str, Any]:
        """`fields` carrying the natural key that finds their entity: their own, when the
        mapping's key (the alternative the item has) is the natural key or there is no key,
        else that of the one entity the key (e.g. a tracker id) finds (`found`: what the key
        found already, up to two). An entity found by a lookup keeps its natural key: a plate
        in the item does not move it. A key that finds none or several is a problem at each
        of its fields, named by `mapping` (where its source sits in the payload; that of the
        `also` entry at place `also`, whose entity type it names) as the entity's own
        problems are."""
        if not key or is_natural_key(etype, key):
            with stage("entity"):
                self._schemas.natural_key(etype, fields)
            return fields
        if found is None:
            lookup = lookup_key(etype, fields, key)  # of the kind being written (`_with_kind`)
            with stage("mapping"):  # a lookup value the mapping made unusable
                found = await self._entities.find(tenant, etype, lookup, after=None, limit=2)
        if len(found) != 1:
            described = ", ".join(f"{k} {v!r}" for k, v in key.items())
            message = f"{'no' if not found else 'more than one'} {etype} with {described}"
            keyword = "not_found" if not found else "ambiguous"
            extra = {} if also is None else {"entity_type": etype}
            problems = [
                FieldProblem(pointer(*name.split(".")), message, keyword, {"target": name, **extra})
                for name in key
            ]
            if mapping is not None:
                problems = named_by_mapping(mapping, problems, also)
            raise InvalidPayload(message, problems, reason="entity")
        return {**fields, **self._schemas.natural_key(etype, found[0]["data"])}


def _reads_and_writes(
    trigger: CompiledTrigger,
    mapping: CompiledMapping | None,
    fields: Mapping[str, Any],
    key: Mapping[str, Any],
    mapped: MappedDocument | None,
    whole: Callable[[str], Collection[str]],
) -> tuple[frozenset[Field], frozenset[Field]]:
    """The fields an item's lookups read (`_locate`: a key that is not the natural key, its
    own and its `also` entities'; `_existing`: every alternative of a `create: false` key
    the item has) and the fields it writes (each value's dotted path; a whole value's own
    path, `whole(etype)` naming them: `SchemaRegistry.whole_members`). A natural key is not
    written where the entity cannot be created: it names an entity that exists."""
    etype = trigger.entity_type
    reads: set[Field] = set()
    writes: set[Field] = set()
    if mapping is not None:
        alternatives = [] if mapping.create else mapping.alternatives_from(key, fields)
        if len(alternatives) > 1:
            reads.update((etype, name) for names in alternatives for name in names)
        if key and not is_natural_key(etype, key):
            reads.update((etype, name) for name in key)
    writes.update(_paths(etype, fields, mapping is None or mapping.create, whole(etype)))
    for target in () if mapped is None else mapped.also:
        other = target.entity_type
        if target.key and not is_natural_key(other, target.key):
            reads.update((other, name) for name in target.key)
        writes.update(_paths(other, target.document, target.create, whole(other)))
    return frozenset(reads), frozenset(writes)


def _paths(
    etype: str, fields: Mapping[str, Any], create: bool, whole: Collection[str]
) -> Iterator[Field]:
    """(etype, dotted path) of each value of `fields` (an object's members, not the object,
    but for a `whole` value: a write of any of its members replaces it, `entities.merge`;
    unless it may `create` the entity, not the natural key's)."""
    natural = set() if create else set(NATURAL_KEYS.get(etype, ()))
    stack: list[tuple[str, Mapping[str, Any]]] = [("", fields)]
    while stack:
        prefix, node = stack.pop()
        for name, value in node.items():
            path = prefix + name
            if isinstance(value, Mapping) and value and path not in whole:
                stack.append((f"{path}.", value))
            elif path not in natural:
                yield etype, path


def _named_by_target(
    prepared: Prepared, main: str, problems: list[FieldProblem]
) -> list[FieldProblem]:
    """Problems of a write of several entities, each named by the mapping's target and
    source as the fields of the entity it is of (its `entity_type`): the main one's, or its
    `also` entry's. One of a type two targets write keeps its own pointer: which entity it
    is of is then not known."""
    assert prepared.mapping is not None
    types = [main, *(upsert.etype for upsert in prepared.also)]
    places: list[int | None] = [None, *prepared.also_places]
    named: list[FieldProblem] = []
    for problem in problems:
        etype = problem.extra.get("entity_type")
        if not isinstance(etype, str) or types.count(etype) != 1:
            named.append(problem)
            continue
        place = places[types.index(etype)]
        named.extend(named_by_mapping(prepared.mapping, [problem], place))
    return named


def written(trigger: CompiledTrigger, result: WriteResult) -> dict[str, Any]:
    """A write as the partner sees it; `key` is what GET /hooks/{id}/{key} accepts.
    `skipped` lists stale only-forward fields left unwritten; `also` the further entities.
    A partner is not told of a field it may not read (the trigger's `expose`, `visible_to`):
    `changed` names only fields it shows, `key` is null unless the natural key is shown, and
    `events` not at all (empty or not, they would tell whether a hidden field held what was
    sent); of `also`'s entities, of other types, it is told their ids alone."""
    sees = visible_to(trigger.expose)
    answer = _written(trigger.entity_type, result, sees)
    if result.also:
        answer["also"] = [
            {"entity_type": one.entity["type"], **_written(one.entity["type"], one, None)}
            if sees is None
            else {
                "entity_type": one.entity["type"],
                "id": str(one.entity["_id"]),
                "created": one.created,
            }
            for one in result.also
        ]
    return answer


def fix_written(trigger: CompiledTrigger, fix: Appended) -> dict[str, Any]:
    """A stored fix as the partner sees it: its vehicle's plate only when `expose` shows it."""
    sees = visible_to(trigger.expose)
    return fix.answer(plate=sees is None or sees("plate"))


def _written(etype: str, result: WriteResult, sees: Sees | None) -> dict[str, Any]:
    doc = result.entity
    key = reference_field(etype)
    answer: dict[str, Any] = {
        "id": str(doc["_id"]),
        "key": doc["data"].get(key) if sees is None or sees(key) else None,
        "created": result.created,
    }
    answer["changed"] = [c.field for c in result.changes if sees is None or sees(c.field)]
    if sees is None:
        answer["events"] = list(result.events)
    if skipped := [f for f in result.skipped if sees is None or sees(f)]:
        answer["skipped"] = skipped
    return answer


def _mapping_problem(message: str) -> InvalidPayload:
    return InvalidPayload(message, [FieldProblem("", message, "mapping")], reason="mapping")
