"""Use case: an accepted trigger payload becomes entity writes (validate → map → upsert).

Shared by partner calls and by replays of rejected payloads. A payload that fails validation,
mapping or the entity's own schema is a 422 that changes nothing and is kept (see
`store/rejected.py`) so an admin can fix the trigger and replay it.

Batches: a JSON array body is a batch of items, each validated against the input schema and
mapped on its own. A JSON object whose mapping has an `items` expression is a batch too: the
schema validates the whole body, the mapping's items are mapped one by one. A batch answers
200 when every item was written and 207 when at least one failed (all of them included),
with one result per item; a failing item does not stop the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from gateway.entities import EntityService, Origin, WriteResult
from gateway.errors import (
    Conflict,
    FieldProblem,
    InvalidPayload,
    NotFound,
    PayloadTooLarge,
    StoreUnavailable,
)
from gateway.mapping import CompiledMapping
from gateway.mapping_files.source import MappingSource
from gateway.metrics import Metrics
from gateway.schemas import SchemaRegistry
from gateway.schemas.compiled import invalid
from gateway.store import Doc, Store
from gateway.triggers.compiled import CompiledTrigger

log = logging.getLogger(__name__)

MAX_KEPT_BYTES: Final = 64 * 1024
"""A rejected payload larger than this is kept truncated (for reading) and cannot be replayed."""
REASONS: Final = frozenset({"schema", "mapping", "entity"})
BATCH_CONCURRENCY: Final = 16
"""Writes of one batch in flight at once (different entities only)."""
_KEY_FIELD: Final = {
    "vehicle": "plate",
    "driver": "cpf",
    "operator": "cpf",
    "supplier": "cnpj",
    "other": "key",
}


@dataclass(frozen=True, slots=True)
class Ingested:
    status: int
    body: dict[str, Any]
    outcome: str  # a metrics label: created | accepted | partial | rejected_batch


@dataclass(frozen=True, slots=True)
class _Prepared:
    fields: dict[str, Any]
    events: Sequence[str]
    lane: str  # the natural key: writes to one entity keep their order
    event_detail: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    items: Sequence[Any]
    schema_applies: bool  # the input schema checks each item (else it checked the body)
    batch: bool
    mapping: CompiledMapping | None = field(default=None)


def rejected(error: InvalidPayload, reason: str) -> InvalidPayload:
    """The same problems, labelled with the pipeline stage that refused them."""
    if error.extra.get("reason") == reason:
        return error
    return InvalidPayload(error.detail, error.problems, **{**error.extra, "reason": reason})


class Ingestor:
    def __init__(
        self,
        store: Store,
        entities: EntityService,
        schemas: SchemaRegistry,
        mappings: MappingSource,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._entities = entities
        self._schemas = schemas
        self._mappings = mappings
        self._metrics = metrics

    async def ingest(
        self, trigger: CompiledTrigger, payload: Any, *, origin: Origin, keep_body: bool = True
    ) -> Ingested:
        """Write a parsed payload. A body-level failure raises (kept unless `keep_body` is
        false: a replay updates its own record instead); item failures of a batch are kept
        and answered per item."""
        try:
            plan = await self._plan(trigger, payload)
        except InvalidPayload as exc:
            if keep_body:
                await self.keep(trigger, exc, payload, scope="body")
            raise
        if not plan.batch:
            try:
                result = await self.item(trigger, plan.mapping, payload, origin=origin)
            except InvalidPayload as exc:
                if keep_body:
                    await self.keep(trigger, exc, payload, scope="body")
                raise
            return Ingested(
                201 if result.created else 200,
                written(trigger, result),
                "created" if result.created else "accepted",
            )
        return await self._batch(trigger, plan, origin)

    async def _plan(self, trigger: CompiledTrigger, payload: Any) -> _Plan:
        mapping = await self.inbound_mapping(trigger)
        if isinstance(payload, list):
            return self._sized(trigger, _Plan(payload, True, True, mapping))
        if mapping is None or mapping.source.get("items") is None:
            return _Plan((payload,), True, False, mapping)
        self.validate(trigger, payload)
        try:
            items = mapping.items(payload)
        except InvalidPayload as exc:
            raise rejected(exc, "mapping") from None
        return self._sized(trigger, _Plan(items, False, True, mapping))

    def _sized(self, trigger: CompiledTrigger, plan: _Plan) -> _Plan:
        count = len(plan.items)
        if count > trigger.max_batch_items:
            raise PayloadTooLarge(
                f"a batch of {count} items is over this trigger's limit of "
                f"{trigger.max_batch_items}"
            )
        self._metrics.trigger_batch_items.labels(trigger.id).observe(count)
        return plan

    async def _batch(self, trigger: CompiledTrigger, plan: _Plan, origin: Origin) -> Ingested:
        """Prepare every item, then write: items of one entity in order, different entities
        concurrently (at most BATCH_CONCURRENCY writes in flight)."""
        results: list[dict[str, Any] | None] = [None] * len(plan.items)
        kept: list[Doc] = []  # rejected items, stored together once the batch is done
        lanes: dict[str, list[tuple[int, _Prepared]]] = {}
        for index, item in enumerate(plan.items):
            try:
                prepared = await self.prepare(
                    trigger, plan.mapping, item, schema_applies=plan.schema_applies
                )
            except InvalidPayload as exc:
                kept.append(_record(trigger, exc, item, "item", index, plan.schema_applies))
                results[index] = _failure(index, exc)
                continue
            lanes.setdefault(prepared.lane, []).append((index, prepared))
        gate = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def write_lane(lane: list[tuple[int, _Prepared]]) -> None:
            for index, prepared in lane:
                async with gate:
                    try:
                        result = await self.write(trigger, prepared, origin)
                    except (InvalidPayload, Conflict) as exc:
                        if isinstance(exc, InvalidPayload):
                            item = plan.items[index]
                            kept.append(
                                _record(trigger, exc, item, "item", index, plan.schema_applies)
                            )
                        results[index] = _failure(index, exc)
                        continue
                results[index] = {
                    "index": index,
                    "status": 201 if result.created else 200,
                    **written(trigger, result),
                }

        # A lane that fails for the whole request (the database went away) stops the others
        # before the error is answered: nothing keeps writing behind a 503.
        try:
            async with asyncio.TaskGroup() as group:
                for lane in lanes.values():
                    group.create_task(write_lane(lane))
        except ExceptionGroup as group:
            raise group.exceptions[0] from None
        await self._keep_all(trigger, kept)
        done = [r for r in results if r is not None]
        failed = sum(r["status"] >= 400 for r in done)
        created = sum(r["status"] == 201 for r in done)
        summary = {
            "items": len(done),
            "created": created,
            "updated": len(done) - created - failed,
            "failed": failed,
        }
        outcome = (
            "accepted" if not failed else "partial" if failed < len(done) else ("rejected_batch")
        )
        return Ingested(
            207 if failed else 200,
            {"results": done, "summary": summary},
            outcome,
        )

    async def item(
        self,
        trigger: CompiledTrigger,
        mapping: CompiledMapping | None,
        item: Any,
        *,
        origin: Origin,
        schema_applies: bool = True,
    ) -> WriteResult:
        """Validate, map and upsert one item; InvalidPayload names the refusing stage."""
        prepared = await self.prepare(trigger, mapping, item, schema_applies=schema_applies)
        return await self.write(trigger, prepared, origin)

    async def prepare(
        self,
        trigger: CompiledTrigger,
        mapping: CompiledMapping | None,
        item: Any,
        *,
        schema_applies: bool = True,
    ) -> _Prepared:
        """Validate and map one item, and find which entity it writes."""
        if schema_applies:
            self.validate(trigger, item)
        if mapping is not None:
            try:
                mapped = mapping.apply(item)
            except InvalidPayload as exc:
                raise rejected(exc, "mapping") from None
            fields, events, key = mapped.document, mapped.events, mapped.key
            detail = mapped.event_data
        elif isinstance(item, dict):
            fields, events, key, detail = item, (), {}, {}
        else:
            problem = FieldProblem("", "each item must be a JSON object", "type")
            raise rejected(invalid("payload", [problem]), "schema")
        fields = await self._locate(trigger, self._with_kind(trigger, fields), key)
        try:
            lane = self._entities.natural_key(trigger.entity_type, fields)
        except InvalidPayload as exc:
            raise rejected(exc, "entity") from None
        return _Prepared(fields, events, lane, detail)

    async def write(
        self, trigger: CompiledTrigger, prepared: _Prepared, origin: Origin
    ) -> WriteResult:
        try:
            return await self._entities.upsert(
                trigger.tenant,
                trigger.entity_type,
                prepared.fields,
                origin,
                extra_events=prepared.events,
                event_detail=prepared.event_detail,
            )
        except InvalidPayload as exc:
            raise rejected(exc, "entity") from None

    def validate(self, trigger: CompiledTrigger, payload: Any) -> None:
        if trigger.schema is not None and (problems := trigger.schema.validate(payload)):
            raise rejected(invalid("payload", problems), "schema")

    async def inbound_mapping(self, trigger: CompiledTrigger) -> CompiledMapping | None:
        if trigger.mapping is None:
            return None
        try:
            mapping = await self._mappings.active(trigger.tenant, trigger.mapping)
        except NotFound as exc:
            raise _mapping_problem(exc.detail) from None
        if mapping.direction != "inbound":
            raise _mapping_problem(f"mapping {mapping.name!r} is not an inbound mapping")
        if mapping.entity_type not in (None, trigger.entity_type):
            raise _mapping_problem(
                f"mapping {mapping.name!r} maps to {mapping.entity_type}, "
                f"this trigger writes {trigger.entity_type}"
            )
        return mapping

    def _with_kind(self, trigger: CompiledTrigger, fields: dict[str, Any]) -> dict[str, Any]:
        if trigger.kind is None:
            return fields
        kind = fields.get("kind", trigger.kind)
        if kind != trigger.kind:
            message = f"/kind: this trigger writes {trigger.kind!r} documents, not {kind!r}"
            raise rejected(invalid("payload", [FieldProblem("/kind", message, "const")]), "schema")
        return fields if "kind" in fields else {"kind": kind, **fields}

    async def _locate(
        self, trigger: CompiledTrigger, fields: dict[str, Any], key: Mapping[str, Any]
    ) -> dict[str, Any]:
        """`fields` carrying a natural key: theirs, or that of the one entity the mapping's
        key fields (e.g. a tracker id) find."""
        etype = trigger.entity_type
        try:
            self._schemas.natural_key(etype, fields)
            return fields
        except InvalidPayload as exc:
            if not key:
                raise rejected(exc, "entity") from None
        try:
            found = await self._entities.find(trigger.tenant, etype, key, after=None, limit=2)
        except InvalidPayload as exc:
            raise rejected(exc, "mapping") from None
        described = ", ".join(f"{k} {v!r}" for k, v in key.items())
        if len(found) != 1:
            what = "no" if not found else "more than one"
            message = f"{what} {etype} with {described}"
            problems = [
                FieldProblem(
                    "", message, "not_found" if not found else "ambiguous", {"target": name}
                )
                for name in key
            ]
            raise InvalidPayload(message, problems, reason="entity")
        return {**fields, **self._schemas.natural_key(etype, found[0]["data"])}

    async def keep(
        self,
        trigger: CompiledTrigger,
        error: InvalidPayload,
        payload: Any,
        *,
        scope: str,
        index: int | None = None,
        schema_applies: bool = True,
    ) -> None:
        """Keep a rejected payload for replay (see `_keep_all`)."""
        record = _record(trigger, error, payload, scope, index, schema_applies)
        await self._keep_all(trigger, [record])

    async def _keep_all(self, trigger: CompiledTrigger, records: Sequence[Doc]) -> None:
        """Store rejected payloads in one write. Losing them (database down) is logged, not
        raised: the partner's answer is the 422 either way."""
        if not records:
            return
        try:
            await self._store.rejected.add_many(trigger.tenant, trigger.id, records)
        except StoreUnavailable as exc:
            log.warning("rejected payloads not kept: %s", exc.detail, extra={"trigger": trigger.id})
            return
        for record in records:
            label = record["reason"] if record["reason"] in REASONS else "payload"
            self._metrics.trigger_rejected_kept.labels(trigger.id, label).inc()


def _record(
    trigger: CompiledTrigger,
    error: InvalidPayload,
    payload: Any,
    scope: str,
    index: int | None,
    schema_applies: bool,
) -> Doc:
    text = orjson.dumps(payload)
    return {
        "trigger_id": trigger.id,
        "received_at": datetime.now(UTC),
        "reason": str(error.extra.get("reason", "payload")),
        "detail": error.detail,
        "problems": [p.as_dict() for p in error.problems],
        "scope": scope,
        "index": index,
        "schema_applies": schema_applies,
        "payload": text[:MAX_KEPT_BYTES].decode("utf-8", "replace"),
        "size": len(text),
        "replayable": len(text) <= MAX_KEPT_BYTES,
        "status": "pending",
        "attempts": 0,
    }


def written(trigger: CompiledTrigger, result: WriteResult) -> dict[str, Any]:
    """A write as the partner sees it; `key` is what GET /hooks/{id}/{key} accepts."""
    doc = result.entity
    return {
        "id": str(doc["_id"]),
        "key": doc["data"].get(_KEY_FIELD[trigger.entity_type]),
        "created": result.created,
        "changed": [c.field for c in result.changes],
        "events": list(result.events),
    }


def _mapping_problem(message: str) -> InvalidPayload:
    return InvalidPayload(message, [FieldProblem("", message, "mapping")], reason="mapping")


def _failure(index: int, error: InvalidPayload | Conflict) -> dict[str, Any]:
    return {"index": index, "status": error.status, "problem": error.problem()}
