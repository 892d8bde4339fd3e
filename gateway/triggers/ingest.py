"""Use case: an accepted trigger payload becomes entity writes, one item or a batch.

Each item goes through the pipeline (`pipeline.py`: validate → map → locate → upsert). A
payload that fails is a 422 that changes nothing and is kept (`rejected.py`) so an admin can
fix the trigger and replay it.

Batches: a JSON array body is a batch of items, each validated against the input schema and
mapped on its own. A JSON object whose mapping has an `items` expression is a batch too: the
schema validates the whole body, the mapping's items are mapped one by one. A batch answers
200 when every item was written and 207 when at least one failed (all of them included),
with one result per item; a failing item does not stop the others. An item whose entity's
events wait for the relay (`EventsBacklogged`) is refused so too, a 503 of its own, with the
entity's later items: a 503 for the whole call would have its retry write the items before
it again and stop at the same item. A partner resends those items (they are not kept, as a
409's are not); a schedule's page, which nobody resends, keeps them to replay.

A position trigger (`target: positions`) takes the same path up to the mapping; each item is
then a canonical fix, and the fixes are appended together (gateway/fleet/append.py), answered
the same way (per item in a batch, 207 when one was refused).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from gateway.entities import Origin, WriteResult
from gateway.errors import (
    Conflict,
    EventsBacklogged,
    GatewayError,
    InvalidPayload,
    PayloadTooLarge,
    SharedListing,
)
from gateway.eventloop import Turns
from gateway.fleet.append import PositionAppender
from gateway.fleet.fix import Fix
from gateway.mapping import CompiledMapping, DecodedTexts
from gateway.metrics import Metrics
from gateway.store import Doc
from gateway.triggers.compiled import CompiledTrigger
from gateway.triggers.pipeline import (
    Field,
    Mapped,
    Pipeline,
    Prepared,
    fix_written,
    stage,
    written,
)
from gateway.triggers.rejected import RejectedKeeper, repeatable

BATCH_CONCURRENCY: Final = 16
"""Writes of one batch in flight at once (different entities only)."""

Fence = Callable[[], Awaitable[None]]
"""Awaited before each write of a batch (an entity's, the fixes', the rejected items'): it
raises to stop the batch there, nothing more written (a schedule's page whose run lost its
lease: the schedule was deleted or reset, `schedules/poll.py`)."""


async def _no_fence() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Ingested:
    status: int
    body: dict[str, Any]
    outcome: str  # a metrics label: created | accepted | partial | rejected_batch | probe
    at_receipt: bool = False  # a fix it appended is stamped with its receipt (`Fix.at_receipt`)


@dataclass(frozen=True, slots=True)
class _Plan:
    items: Sequence[Any]
    schema_applies: bool  # the input schema checks each item (else it checked the body)
    batch: bool
    mapping: CompiledMapping | None = None
    probe: dict[str, Any] | None = None  # the answer to a partner's probe: nothing to write
    # One payload's items share its texts: each from_json()/from_xml() text is parsed once
    # for all of them (a SOAP answer's 1,000 points in one escaped XML text).
    texts: DecodedTexts | None = None
    received: datetime | None = None  # when the payload came ({received: time}); None: now
    # Each item's index in the partner's list, when the mapping's `items: {..., when}` left
    # some out; None: items[i] is the partner's item i.
    numbers: Sequence[int] | None = None

    def index(self, position: int) -> int:
        """The index an item's result and refusal name: its place in the partner's list."""
        return position if self.numbers is None else self.numbers[position]


class Ingestor:
    def __init__(
        self,
        pipeline: Pipeline,
        rejected: RejectedKeeper,
        metrics: Metrics,
        appender: PositionAppender,
    ) -> None:
        self._pipeline = pipeline
        self._rejected = rejected
        self._metrics = metrics
        self._appender = appender

    async def ingest(
        self,
        trigger: CompiledTrigger,
        payload: Any,
        *,
        origin: Origin,
        keep_body: bool = True,
        picked: bool = False,
        numbers: Sequence[int] | None = None,
        texts: DecodedTexts | None = None,
        received: datetime | None = None,
        fence: Fence = _no_fence,
        caller_retries: bool = False,
        new_at_receipt: Fence = _no_fence,
    ) -> Ingested:
        """Write a parsed payload; a 2xx answer carries the mapping's `answer` members too
        (`mapping.answered`: the acknowledgement a partner waits for). A body-level failure
        raises (kept unless `keep_body` is false: a replay updates its own record instead);
        item failures of a batch are kept and answered per item. `picked`: the payload is a
        list of items the mapping's `items` expression already gave (a schedule's page),
        `numbers` their indexes in the partner's list (None: the payload is that list);
        `texts`, the documents its texts decoded to then, which its items read again;
        `received`, when the payload first came (a replay's), else now; `fence`, awaited
        before each write of a batch; `caller_retries`, the caller (a partner) resends the
        items its answer refuses with a 503, which are then not kept (`_batch`);
        `new_at_receipt`, awaited before fixes are appended when one is stamped with its
        receipt (`Fix.at_receipt`): it raises to refuse a copy of a message written before,
        which would be a new fix, not a duplicate (a signed message's: receiver.py)."""
        try:
            plan = await self._plan(trigger, payload, picked, texts)
            if numbers is not None:  # a schedule's page, numbered in the partner's list
                plan = replace(plan, numbers=numbers)
            plan = replace(plan, received=received)
            if trigger.target == "positions" and plan.probe is None:
                appended = await self._positions(trigger, plan, fence, new_at_receipt)
                return _acknowledged(plan, appended)
            result = None
            if not plan.batch and plan.probe is None:
                result = await self._pipeline.item(
                    trigger, plan.mapping, payload, origin=origin, received=received
                )
        except InvalidPayload as exc:
            if keep_body:
                repeatable = await self._repeatable(trigger)
                record = self._rejected.record(
                    trigger, exc, payload, scope="body", repeatable=repeatable
                )
                await self._rejected.keep(trigger, [record])
            raise
        if plan.probe is not None:
            return Ingested(200, plan.probe, "probe")
        if result is None:  # a batch: its items' failures are kept and answered one by one
            return _acknowledged(
                plan, await self._batch(trigger, plan, origin, fence, caller_retries)
            )
        return _acknowledged(
            plan,
            Ingested(
                201 if result.created else 200,
                written(trigger, result),
                "created" if result.created else "accepted",
            ),
        )

    async def ingest_item(
        self,
        trigger: CompiledTrigger,
        item: Any,
        *,
        origin: Origin,
        schema_applies: bool,
        received: datetime | None = None,
    ) -> dict[str, Any]:
        """One item of a batch on its own (a replay of a kept item), answered as a single
        item would be (`status` included); nothing is kept."""
        mapping = await self._pipeline.inbound_mapping(trigger)
        if trigger.target == "positions":
            fix = self._pipeline.fix(
                trigger, mapping, item, schema_applies=schema_applies, received=received
            )
            (outcome,) = await self._appender.append(trigger.tenant, [fix], trigger.id)
            if isinstance(outcome, InvalidPayload):
                raise outcome
            return {"status": 200 if outcome.duplicate else 201, **fix_written(trigger, outcome)}
        result = await self._pipeline.item(
            trigger,
            mapping,
            item,
            origin=origin,
            schema_applies=schema_applies,
            received=received,
        )
        return {"status": 201 if result.created else 200, **written(trigger, result)}

    async def _positions(
        self, trigger: CompiledTrigger, plan: _Plan, fence: Fence, new_at_receipt: Fence
    ) -> Ingested:
        """A position trigger's items: each mapped to a canonical fix, then all appended
        together (gateway/fleet/append.py). One fix answers 201 (200 for a duplicate) or
        raises its 422; a batch answers per item, 207 when any was refused."""
        items: list[Any] = []
        turns = Turns()  # the process answers others between items (limits.MAX_PAYLOAD_STEPS)
        for item in plan.items:
            await turns.share()
            try:
                fix = self._pipeline.fix(
                    trigger,
                    plan.mapping,
                    item,
                    schema_applies=plan.schema_applies,
                    texts=plan.texts,
                    received=plan.received,
                )
            except InvalidPayload as exc:
                fix = exc
            items.append(fix)
        at_receipt = any(isinstance(fix, Fix) and fix.at_receipt for fix in items)
        if at_receipt:
            await new_at_receipt()
        await fence()
        outcomes = await self._appender.append(trigger.tenant, items, trigger.id)
        if not plan.batch:
            (outcome,) = outcomes
            if isinstance(outcome, InvalidPayload):
                raise outcome
            if outcome.duplicate:
                return Ingested(200, fix_written(trigger, outcome), "accepted", at_receipt)
            return Ingested(201, fix_written(trigger, outcome), "created", at_receipt)
        results: list[dict[str, Any]] = []
        kept: list[Doc] = []
        listing = SharedListing()
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, InvalidPayload):
                kept.append(
                    self._rejected.record(
                        trigger,
                        outcome,
                        plan.items[index],
                        scope="item",
                        index=plan.index(index),
                        schema_applies=plan.schema_applies,
                        repeatable=repeatable(plan.mapping),
                    )
                )
                problem = listing.problem(outcome)
                results.append({"index": plan.index(index), "status": 422, "problem": problem})
            else:
                status = 200 if outcome.duplicate else 201
                results.append(
                    {"index": plan.index(index), "status": status, **fix_written(trigger, outcome)}
                )
        if kept:
            await fence()
        await self._rejected.keep(trigger, kept)
        failed = len(kept)
        duplicates = sum(r.get("duplicate") is True for r in results)
        summary = {
            "items": len(results),
            "stored": len(results) - failed - duplicates,
            "duplicates": duplicates,
            "failed": failed,
        }
        outcome_label = _batch_outcome(failed, len(results))
        return Ingested(
            207 if failed else 200,
            {"results": results, "summary": summary},
            outcome_label,
            at_receipt,
        )

    async def _repeatable(self, trigger: CompiledTrigger) -> bool:
        """Whether a payload the trigger refused is the same write when it comes again: not
        when its mapping reads when it came, nor when the mapping cannot be read."""
        try:
            return repeatable(await self._pipeline.inbound_mapping(trigger))
        except GatewayError:
            return False

    async def _plan(
        self, trigger: CompiledTrigger, payload: Any, picked: bool, texts: DecodedTexts | None
    ) -> _Plan:
        mapping = await self._pipeline.inbound_mapping(trigger)
        if mapping is not None and (answer := mapping.probe(payload)) is not None:
            return _Plan((), False, False, mapping, answer)
        declared = mapping is not None and mapping.source.get("items") is not None
        if declared or isinstance(payload, list):  # the items share texts and output bound
            texts = texts or DecodedTexts(trigger.max_body_bytes)
        if isinstance(payload, list):
            # The input schema checks each item; a mapping's `items` expression still picks
            # them (a filter, say), as the dry run does.
            numbers = None
            if mapping is not None and declared and not picked:
                with stage("mapping"):
                    payload, numbers = mapping.numbered_items(payload, texts=texts)
            plan = _Plan(payload, True, True, mapping, texts=texts, numbers=numbers)
            return self._sized(trigger, plan)
        if mapping is None or not declared:
            return _Plan((payload,), True, False, mapping)
        self._pipeline.validate(trigger, payload)
        with stage("mapping"):
            items, numbers = mapping.numbered_items(payload, texts=texts)
        plan = _Plan(items, False, True, mapping, texts=texts, numbers=numbers)
        return self._sized(trigger, plan)

    def _sized(self, trigger: CompiledTrigger, plan: _Plan) -> _Plan:
        count = len(plan.items)
        if count > trigger.max_batch_items:
            raise PayloadTooLarge(
                f"a batch of {count} items is over this trigger's limit of "
                f"{trigger.max_batch_items}"
            )
        if not trigger.polled:  # a schedule's pages are counted by the schedule (poll.py)
            self._metrics.trigger_batch_items.labels(
                self._metrics.trigger_label(trigger.id)
            ).observe(count)
        return plan

    async def _batch(
        self,
        trigger: CompiledTrigger,
        plan: _Plan,
        origin: Origin,
        fence: Fence,
        caller_retries: bool,
    ) -> Ingested:
        """Map every item, then look each up and write: items of one entity in order,
        different entities concurrently (at most BATCH_CONCURRENCY writes in flight), each
        once `fence` let it; an item whose lookup reads what an earlier item writes is looked
        up once that one is written (`_Pending`).
        Refused items are kept to replay, but a conflict (409) and, when `caller_retries`, a
        backlogged item (503): the caller was told to resend those, and a kept copy would be a
        second owner of the write, whose replay writes the old value over whatever the entity
        received since (the resend, a newer value). A schedule's page or a replayed body has no
        one else to retry its backlogged items: they are kept."""
        results: list[dict[str, Any] | None] = [None] * len(plan.items)
        kept: dict[int, Doc] = {}  # rejected items by index, stored together once done
        listing = SharedListing()

        def refuse(index: int, error: InvalidPayload | Conflict | EventsBacklogged) -> None:
            # a conflict, and a backlogged item for a `caller_retries` caller: the caller's
            if isinstance(error, InvalidPayload) or (
                isinstance(error, EventsBacklogged) and not caller_retries
            ):
                kept[index] = self._rejected.record(
                    trigger,
                    error,
                    plan.items[index],
                    scope="item",
                    index=plan.index(index),
                    schema_applies=plan.schema_applies,
                    repeatable=repeatable(plan.mapping),
                )
            status, problem = error.status, listing.problem(error)
            results[index] = {"index": plan.index(index), "status": status, "problem": problem}

        turns = Turns()  # the process answers others between items (limits.MAX_PAYLOAD_STEPS)
        mapped = await self._mapped(trigger, plan, refuse, turns)
        gate = asyncio.Semaphore(BATCH_CONCURRENCY)

        # The lanes whose entity's events wait for the relay, with the refusal: the entity's
        # later items wait with it, in order, in this call and after a lookup's flush alike.
        backlogged: dict[str, EventsBacklogged] = {}

        async def write_lane(name: str, lane: list[tuple[int, Prepared]]) -> None:
            for index, prepared in lane:
                result: WriteResult | InvalidPayload | Conflict | EventsBacklogged
                if (waiting := backlogged.get(name)) is None:
                    async with gate:
                        await fence()
                        result = await self._write(trigger, prepared, origin)
                else:
                    result = waiting
                if isinstance(result, GatewayError):
                    if isinstance(result, EventsBacklogged):
                        backlogged[name] = result
                    refuse(index, result)
                    continue
                results[index] = {
                    "index": plan.index(index),
                    "status": 201 if result.created else 200,
                    **written(trigger, result),
                }

        async def write(lanes: dict[str, list[tuple[int, Prepared]]]) -> None:
            # A lane that fails for the whole request (the database went away) stops the
            # others before the error is answered: nothing keeps writing behind a 503.
            try:
                async with asyncio.TaskGroup() as group:
                    for name, lane in lanes.items():
                        group.create_task(write_lane(name, lane))
            except ExceptionGroup as group:
                raise group.exceptions[0] from None

        await self._in_order(trigger, plan.mapping, mapped, refuse, write, turns)
        if kept:
            await fence()
        await self._rejected.keep(trigger, _in_item_order(kept))
        return _answer([r for r in results if r is not None])

    async def _in_order(
        self,
        trigger: CompiledTrigger,
        mapping: CompiledMapping | None,
        mapped: list[tuple[int, Mapped]],
        refuse: Callable[[int, InvalidPayload], None],
        write: Callable[[dict[str, list[tuple[int, Prepared]]]], Awaitable[None]],
        turns: Turns,
    ) -> None:
        """Look up and `write` the mapped items as if written one after another: an item is
        looked up once the items before it that write a field its lookup reads are written
        (a tracker moved to another vehicle, a vehicle created, by an earlier item). Until
        one does, items are looked up as they come and their writes wait, to go together:
        a lane per entity, in order, different entities at once."""
        lanes: dict[str, list[tuple[int, Prepared]]] = {}
        pending = _Pending()
        for index, one in mapped:
            await turns.share()
            if pending.changes(one.reads):
                await write(lanes)
                lanes, pending = {}, _Pending()
            try:
                prepared = await self._pipeline.locate(trigger, mapping, one)
            except InvalidPayload as exc:
                refuse(index, exc)
                continue
            lanes.setdefault(prepared.lane, []).append((index, prepared))
            pending.add(one.writes)
        await write(lanes)

    async def _mapped(
        self,
        trigger: CompiledTrigger,
        plan: _Plan,
        refuse: Callable[[int, InvalidPayload], None],
        turns: Turns,
    ) -> list[tuple[int, Mapped]]:
        """The batch's items validated and mapped, each with its index; those refused go to
        `refuse`."""
        mapped: list[tuple[int, Mapped]] = []
        for index, item in enumerate(plan.items):
            await turns.share()
            try:
                one = self._pipeline.map(
                    trigger,
                    plan.mapping,
                    item,
                    schema_applies=plan.schema_applies,
                    texts=plan.texts,
                    received=plan.received,
                )
            except InvalidPayload as exc:
                refuse(index, exc)
                continue
            mapped.append((index, one))
        return mapped

    async def _write(
        self, trigger: CompiledTrigger, prepared: Prepared, origin: Origin
    ) -> WriteResult | InvalidPayload | Conflict | EventsBacklogged:
        """One item of a batch written, or what refuses it alone: its payload, a conflict, or
        its entity's events waiting for the relay (a 503 of the item's, not of the call's: a
        retry of the whole batch would write its items before this one again, and stop here)."""
        try:
            return await self._pipeline.write(trigger, prepared, origin)
        except (InvalidPayload, Conflict, EventsBacklogged) as exc:
            return exc


class _Pending:
    """The fields the items of a batch looked up but not yet written will write: whether
    one an item's lookup reads is among them (`changes`), as itself, as a value inside it or
    as a value holding it."""

    __slots__ = ("_holding", "_values")

    def __init__(self) -> None:
        self._values: set[Field] = set()  # each value's path
        self._holding: set[Field] = set()  # those and the path of each object holding one

    def add(self, writes: frozenset[Field]) -> None:
        self._values |= writes
        for etype, path in writes:
            parts = path.split(".")
            self._holding.update((etype, ".".join(parts[:n])) for n in range(1, len(parts) + 1))

    def changes(self, reads: frozenset[Field]) -> bool:
        for etype, path in reads:
            parts = path.split(".")
            above = ((etype, ".".join(parts[:n])) for n in range(1, len(parts)))
            if (etype, path) in self._holding or any(f in self._values for f in above):
                return True
        return False


def _in_item_order(kept: dict[int, Doc]) -> list[Doc]:
    """A batch's kept items in the batch's order, received when the first was (one payload):
    a replay of all goes oldest first, so an entity's items replay in the order sent, whether
    the mapping, a lookup or the write refused them (each stage refuses after the last)."""
    records = [kept[index] for index in sorted(kept)]
    received = min((record["received_at"] for record in records), default=None)
    return [record | {"received_at": received} for record in records]


def _acknowledged(plan: _Plan, ingested: Ingested) -> Ingested:
    """A call's 2xx answer with its mapping's `answer` members. A 207 too when every item it
    refuses is kept (a 422: `rejected.py`), since a partner that waits for its
    acknowledgement would otherwise send them, and every item after them, again for ever;
    not when it refuses one the partner must send again (a 409, a 503: not kept)."""
    if plan.mapping is None or not 200 <= ingested.status < 300:
        return ingested
    results = ingested.body.get("results") if ingested.status == 207 else None
    if results and any(r.get("status", 0) >= 400 and r["status"] != 422 for r in results):
        return ingested
    return replace(ingested, body=plan.mapping.answered(ingested.body))


def _answer(done: list[dict[str, Any]]) -> Ingested:
    failed = sum(r["status"] >= 400 for r in done)
    created = sum(r["status"] == 201 for r in done)
    summary = {
        "items": len(done),
        "created": created,
        "updated": len(done) - created - failed,
        "failed": failed,
    }
    outcome = _batch_outcome(failed, len(done))
    return Ingested(207 if failed else 200, {"results": done, "summary": summary}, outcome)


def _batch_outcome(failed: int, items: int) -> str:
    return "accepted" if not failed else "partial" if failed < items else "rejected_batch"
