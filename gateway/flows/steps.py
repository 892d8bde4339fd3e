"""One step of a flow run, for real (the dry run, `dry_run.py`, renders the same steps without
sending or writing). Each step gives a `StepOutcome`: what to record, the step's answer for
later steps, whether the run ends, or that the step must wait and run again later.

    when     passed | stopped (the run ends, status `stopped`); a guard beside another kind
             that is false: skipped
    fetch    the GET goes out now; answered (the mapped answer becomes steps.<id>), or a retry
             later on the action's schedule (network, 5xx, 429), or failed (other 4xx, an
             answer the response mapping refuses). With `assign`, the answer is recorded in
             the vehicle's driver history (source hr or erp): the `entity.updated` of
             its `current_driver` carries origin {kind: <source>, id: <run id>, run,
             depth: n + 1}, now or once a scheduled start comes
    call     a `flow_call` delivery with id `<run id>:<step id>`: queued
    notify   one `notification` delivery per recipient, ids `<run id>:<step id>:<to>` (`<to>`
             the recipient's address, hashed: see `deliveries.py`):
             queued (with who is unreachable and why, and messages that failed to render),
             or nobody when not one message was queued
    set      the entity written with origin {kind: flow, id: <flow>, run, depth: n + 1}:
             written | unchanged; with `expect`, only while the entity holds those values
             (checked with the write): else stopped (the run ends), nothing written

Steps that create deliveries or write entities are idempotent, so a step repeated after a
crash (it ran, its outcome was not recorded yet) creates nothing twice: delivery ids are
deterministic and inserted only when new; a `set` already done changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from gateway.actions.catalog import Catalog, build_request
from gateway.actions.ordering import call_place
from gateway.actions.partner_calls import PartnerCalls
from gateway.actions.signing import with_signature
from gateway.assignments import AssignmentService
from gateway.delivery.fanout import insert_deliveries
from gateway.entities import EntityService, Origin, public
from gateway.errors import (
    Conflict,
    EntityContended,
    EventsBacklogged,
    InvalidPayload,
    NotFound,
    PreconditionFailed,
)
from gateway.flows.context import cooldown_also, cooldown_at, cooldown_key, evaluate, holds
from gateway.flows.deliveries import (
    RunRef,
    flow_delivery,
    notification_deliveries,
    step_request_id,
)
from gateway.flows.messages import MessageComposer
from gateway.flows.model import NotifySpec, Step
from gateway.flows.recipients import START_FORMS, answer_after_asked, parse_start, parse_time
from gateway.flows.references import StepFailed, resolve_action
from gateway.formats.json_tree import plain
from gateway.mapping import unflatten
from gateway.mapping.model import EvalError
from gateway.metrics import Metrics
from gateway.models import DeliveryKind, RunStatus
from gateway.notify.notifier import MappingSource
from gateway.outbound.verdict import Verdict
from gateway.store import Store
from gateway.store.assignments import same_driver

_CONFLICT_RETRY = (1.0, 5.0, 30.0)  # a `set` that keeps losing to concurrent writers


@dataclass(frozen=True, slots=True)
class Wait:
    """Run the step again later: the n-th retry waits schedule[n] (Retry-After a floor)."""

    schedule: Sequence[float]
    detail: str
    retry_after: float | None = None
    # Nothing went out (`outbound.sender.Hold`): again in `retry_after` s, no attempt spent.
    held: bool = False


@dataclass(slots=True)
class StepOutcome:
    entry: dict[str, Any] = field(default_factory=dict)  # {outcome, ...}: what is recorded
    answer: Any = None  # steps.<id> for the steps after
    end: RunStatus | None = None  # the run ends with this status
    wait: Wait | None = None  # nothing recorded: the step runs again later
    pure: bool = False  # no effect outside the run (when, skipped): may be recorded later
    created: int = 0  # deliveries created


def failed(detail: str, errors: Sequence[dict[str, Any]] = ()) -> StepOutcome:
    entry: dict[str, Any] = {"outcome": "failed", "detail": detail}
    if errors:
        entry["errors"] = list(errors)[:20]
    return StepOutcome(entry, end=RunStatus.FAILED)


@dataclass(frozen=True, slots=True)
class StepParts:
    store: Store
    catalog: Catalog
    mappings: MappingSource
    calls: PartnerCalls
    entities: EntityService
    assignments: AssignmentService
    composer: MessageComposer
    metrics: Metrics


async def registered_vehicle(
    entities: EntityService, tenant: str, event: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The context's `vehicle`: for an event about an entity that is not a vehicle and names
    one by its `plate` (a fine) or `vehicle_plate` (a checklist), the fleet's vehicle with
    that plate in either spelling (ABC1234 finds ABC1C34), as the API shows it; None when the
    fleet has none. Partners know a vehicle by the plate the fleet registered it with, not by
    an old spelling a fine kept."""
    data = event.get("data") or {}
    plate = data.get("plate", data.get("vehicle_plate"))
    if (event.get("entity") or {}).get("type") == "vehicle" or not isinstance(plate, str):
        return None
    try:
        doc = await entities.get(tenant, "vehicle", plate)
    except (NotFound, InvalidPayload):
        return None
    found: dict[str, Any] = plain(public(doc))
    return found


async def stored_entity(
    entities: EntityService, tenant: str, event: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The context's `stored`: the event's entity as stored now, as a `set` answers it (its
    data, id and version); None when it is gone (deleted since) or the event names none."""
    ref = event.get("entity") or {}
    etype, ident = ref.get("type"), ref.get("id")
    if not isinstance(etype, str) or not isinstance(ident, str) or not ident:
        return None
    try:
        doc = await entities.get(tenant, etype, ident)
    except (NotFound, InvalidPayload):
        return None
    found: dict[str, Any] = plain({**doc["data"], "id": str(doc["_id"]), "version": doc["rev"]})
    return found


class StepRunner:
    def __init__(self, parts: StepParts) -> None:
        self._p = parts
        self._kinds: dict[
            str, Callable[[RunRef, Step, dict[str, Any], datetime], Awaitable[StepOutcome]]
        ]
        self._kinds = {
            "when": self._when,
            "fetch": self._fetch,
            "call": self._call,
            "notify": self._notify,
            "set": self._set,
        }

    async def vehicle_of(self, tenant: str, event: Mapping[str, Any]) -> dict[str, Any] | None:
        return await registered_vehicle(self._p.entities, tenant, event)

    async def run(
        self, run: RunRef, step: Step, context: dict[str, Any], now: datetime
    ) -> StepOutcome:
        if step.reads_stored:  # as stored now: a write since the event (while it waited) seen
            context["stored"] = await stored_entity(self._p.entities, run.tenant, run.event)
        if step.guard is not None and not holds(step.guard, context):
            return StepOutcome(
                {"outcome": "skipped", "reason": f"when: {step.guard.text}"}, pure=True
            )
        try:
            return await self._kinds[step.kind](run, step, context, now)
        except StepFailed as exc:
            return failed(exc.detail, exc.errors)
        except EvalError as exc:
            return failed(f"expression {exc.source!r}: {exc.message}")

    async def _when(
        self, run: RunRef, step: Step, context: dict[str, Any], now: datetime
    ) -> StepOutcome:
        assert step.condition is not None
        if holds(step.condition, context):
            return StepOutcome({"outcome": "passed"}, pure=True)
        entry = {"outcome": "stopped", "reason": f"when: {step.condition.text}"}
        if step.why:
            entry["description"] = step.why
        return StepOutcome(entry, end=RunStatus.STOPPED, pure=True)

    # -- fetch -------------------------------------------------------------------------------

    async def _fetch(
        self, run: RunRef, step: Step, context: dict[str, Any], now: datetime
    ) -> StepOutcome:
        assert step.action is not None
        action, partner, mapping = await self._action(run.tenant, step.action)
        local = plain({**context, **evaluate(step.values, context)})
        request, _ = await _build(action, partner, mapping, local)
        # Signed with the flow's secrets, as its calls are; `webhook-id` the run's step, the
        # same on each try of the step (a call's delivery id is the same `<run>:<step>`).
        signing = await self._p.catalog.flow_signer(run.tenant, run.flow)
        request = with_signature(request, signing, step_request_id(run.id, step.id), now)
        request = replace(request, before_sending=run.before_sending)
        # A disabled partner is not called: the step waits (held), as `invoke` answers 503.
        outcome = partner.refusal() or await self._p.calls.send(partner, request, action=action)
        verdict = action.verdict(outcome)
        self._p.metrics.observe_partner_call(partner.id, "flow", outcome, verdict)
        entry: dict[str, Any] = {
            "action": action.name,
            "request": {"method": request.method, "url": request.url.split("?")[0]},
            "status": outcome.status,
            "latency_ms": outcome.latency_ms,
        }
        if (hold := outcome.hold) is not None:  # our own guard: nothing went out
            wait = Wait(action.retry_schedule, hold.describe(), hold.seconds, held=True)
            return StepOutcome(wait=wait)
        rule = action.matched_rule(outcome)  # the action's answer rule, named when it decided
        ruled = "" if rule is None else rule.describe(outcome)
        if verdict is Verdict.RETRY:
            detail = f"{partner.name}: {_said(outcome.status, outcome.message)}{ruled}"
            retry_after = outcome.retry_after(now)
            return StepOutcome(wait=Wait(action.retry_schedule, detail, retry_after))
        if verdict is not Verdict.SUCCESS:
            reported = action.reported_error(outcome)
            said = _said(outcome.status, outcome.message) + ruled
            if reported is not None and rule is None:
                said += f" reporting an error: {reported}"
            raise StepFailed(f"{partner.name}: {said}")
        answer = outcome.json_body if outcome.readable else None
        if action.response_mapping:
            if answer is None:
                raise StepFailed(f"{partner.name} answered without a JSON or XML body to map")
            response = await self._p.mappings.active(run.tenant, action.response_mapping)
            try:
                answer = response.map_response(answer)
            except InvalidPayload as exc:
                raise StepFailed(
                    f"{partner.name}'s answer does not fit the response mapping: {exc.detail}",
                    [p.as_dict() for p in exc.problems],
                ) from None
        entry["outcome"] = "answered"
        if step.assign is not None:
            seen = {**context, "steps": {**context["steps"], step.id: answer}}
            if (wrong := answer_after_asked(step.assign, seen)) is not None:
                raise StepFailed(f"{partner.name}: {wrong}")
            entry["assignment"] = await self._assign(run, step, seen)
        return StepOutcome(entry, answer)

    async def _assign(self, run: RunRef, step: Step, context: dict[str, Any]) -> dict[str, Any]:
        """The fetched driver into the vehicle's history; a note, never a failure. Recorded
        from `start`; without it, from the time asked (`at`: the answer names the driver
        then), else from the run's start. `recorded` says that the history names that driver
        at the time asked (`at`; without it, at the start recorded): a late report that only
        fills the gap before another source's later change (`changed` says whether anything
        was written) is not recorded at `at`, and the note's reason says whom the history
        names there."""
        spec = step.assign
        assert spec is not None
        vehicle, driver = spec.vehicle.value(context), spec.driver.value(context)
        if not isinstance(vehicle, str) or not vehicle or not isinstance(driver, str) or not driver:
            return {"recorded": False, "reason": "the answer names no vehicle or no driver"}
        asked = None if spec.at is None else parse_time(spec.at.value(context))
        start = asked
        if spec.start is not None:  # given but not a time: not "now", which nobody said
            said = spec.start.value(context)
            start = parse_start(said)
            if start is None:
                reason = f"start {spec.start.text} is not a time ({START_FORMS}): {said!r}"
                return {"recorded": False, "reason": reason}
        try:
            result = await self._p.assignments.assign(
                run.tenant,
                vehicle,
                driver,
                start=start or run.started,
                source=spec.source,
                ref=run.id,
                author=f"flow:{run.flow}",
                chain=run.chain,
                behind_others=True,
            )
        except (InvalidPayload, NotFound) as exc:
            return {"recorded": False, "reason": exc.detail}
        chosen = result.assignment
        note = {"recorded": True, "changed": result.changed, "start": chosen.start.isoformat()}
        if (other := result.behind) is not None:
            # Another source's change at the answer's very start: which of the two is right,
            # only people can tell. It stands; the answer is kept behind it (it stands again
            # if that change is taken back).
            reason = (
                f"the history names {_named(other.driver)} ({other.source}, since "
                f"{other.start.isoformat()}) from the answer's start, another source's change: "
                "the answer is not written over it (kept behind it)"
            )
            return {**note, "recorded": False, "reason": reason}
        if spec.at is None or asked is None:
            return note
        # Recorded from the time asked or before it (a start after it failed the step:
        # `answer_after_asked`). A later change (an ERP's, an admin's) already in force at
        # the time asked keeps its place: a late report fills only the gap before it. The
        # history then names another driver at `at` than the answer, which is not "recorded"
        # there: the note says who.
        try:
            then = await self._p.assignments.driver_at(run.tenant, vehicle, asked)
        except NotFound:  # the vehicle deleted meanwhile
            then = None
        named = None if then is None else then.driver
        if named is not None and chosen.driver is not None and same_driver(named, chosen.driver):
            return note
        who = _named(named)
        since = "" if then is None else f" ({then.source}, since {then.start.isoformat()})"
        reason = (
            f"the history names {who}{since} at the time asked ({spec.at.text} = "
            f"{asked.isoformat()}), a later change than the answer's start: the answer's "
            "driver is recorded only before it"
        )
        return {**note, "recorded": False, "reason": reason}

    # -- call --------------------------------------------------------------------------------

    async def _call(
        self, run: RunRef, step: Step, context: dict[str, Any], now: datetime
    ) -> StepOutcome:
        assert step.action is not None
        action, partner, mapping = await self._action(run.tenant, step.action)
        local = plain({**context, **evaluate(step.values, context)})
        await _build(action, partner, mapping, local)  # a call that cannot be built fails now
        call_id = step_request_id(run.id, step.id)
        doc = flow_delivery(run, step, call_id, DeliveryKind.FLOW_CALL, now)
        entity = local.get("entity") if isinstance(local.get("entity"), dict) else {}
        doc.update(
            action_id=action.id,
            partner_id=action.partner_id,
            entity_id=(entity or {}).get("id") or doc["entity_id"],
            context=local,
            next_attempt_at=now,  # the first attempt is made at once; retries on the schedule
        )
        if action.ordered:
            doc.update(call_place(action.id, entity or {}, run.event, doc["_id"]))
        created = await insert_deliveries(self._p.store, self._p.metrics, [doc])
        entry = {"outcome": "queued", "action": action.name, "delivery": doc["_id"]}
        return StepOutcome(entry, created=created)

    # -- notify ------------------------------------------------------------------------------

    async def _notify(
        self, run: RunRef, step: Step, context: dict[str, Any], now: datetime
    ) -> StepOutcome:
        spec = step.notify
        assert spec is not None
        composed = await self._p.composer.compose(run.tenant, spec, context)
        cooldown, noted = _step_cooldown(spec, context, now)
        docs, messages = notification_deliveries(run, step, composed, cooldown, spec.urgent, now)
        deliveries = self._p.store.deliveries
        # The step ran before, on a version that numbered its messages: they are queued.
        before_upgrade = bool(docs) and await deliveries.numbered_exist(
            run.tenant, f"{run.id}:{step.id}:"
        )
        if before_upgrade:
            for message in messages:
                message.pop("delivery", None)
        created = (
            0 if before_upgrade else await insert_deliveries(self._p.store, self._p.metrics, docs)
        )
        entry: dict[str, Any] = {
            # Nobody to tell (no driver at that time, no contact, nothing rendered) is an
            # outcome to see, not a quiet success.
            "outcome": "queued" if docs else "nobody",
            "channel": composed.channel.name,
            "template": composed.template.name,
            "messages": messages,
            "unreachable": composed.unreachable,
        }
        if before_upgrade:
            entry["note"] = "queued before an upgrade, as <run>:<step>:<n>: not queued again"
        entry.update(noted)
        return StepOutcome(entry, {"messages": len(docs)}, created=created)

    # -- set ---------------------------------------------------------------------------------

    async def _set(
        self, run: RunRef, step: Step, context: dict[str, Any], now: datetime
    ) -> StepOutcome:
        spec = step.set
        assert spec is not None
        event_ref = context["event"].get("entity") or {}
        etype = spec.entity_type or event_ref.get("type")
        ref = spec.ref.value(context) if spec.ref is not None else event_ref.get("id")
        if not isinstance(etype, str) or not isinstance(ref, str) or not ref:
            raise StepFailed("set: no entity to write (the event names none; give set.entity)")
        fields = plain(evaluate(spec.fields, context))
        try:
            patch = unflatten(fields)
        except ValueError as exc:  # one field inside another (a and a.b)
            raise StepFailed(f"set: {exc}") from None
        origin = Origin("flow", run.flow, run.chain)
        expect = plain(evaluate(spec.expect, context)) if spec.expect else None
        try:
            result = await self._p.entities.patch(
                run.tenant, etype, ref, patch, origin, expect=expect
            )
        except (PreconditionFailed, NotFound) as exc:
            if expect is None:  # NotFound: refused, as below
                raise StepFailed(exc.detail) from None
            # Not as the run read it (changed, or deleted, since): what the run would write
            # is about values the entity no longer holds; nothing written, the run ends.
            gone = isinstance(exc, NotFound)
            why = f"the entity is gone ({exc.detail}); nothing was written" if gone else exc.detail
            stop = {"outcome": "stopped", "reason": f"expect: {why}"}
            if step.why:
                stop["description"] = step.why
            return StepOutcome(stop, end=RunStatus.STOPPED)
        except (InvalidPayload, Conflict) as exc:
            # Refused (a natural key it would change among them): no retry cures it.
            problems = [p.as_dict() for p in getattr(exc, "problems", [])]
            raise StepFailed(exc.detail, problems) from None
        except (EntityContended, EventsBacklogged) as exc:
            # Other writers of the entity, or its events waiting for the relay: it passes.
            return StepOutcome(wait=Wait(_CONFLICT_RETRY, exc.detail))
        written = result.entity
        entry = {
            "outcome": "written" if result.changes else "unchanged",
            "entity": {"type": etype, "id": str(written["_id"])},
            "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in result.changes],
        }
        # The entity as the API shows it (its id and version): a later `call` handing it to an
        # ordered action is ordered by that version.
        answer = {**written["data"], "id": str(written["_id"]), "version": written["rev"]}
        return StepOutcome(entry, answer)

    async def _action(self, tenant: str, ref: str) -> Any:
        p = self._p
        return await resolve_action(p.store, p.catalog, p.mappings, tenant, ref)


async def _build(action: Any, partner: Any, mapping: Any, local: dict[str, Any]) -> Any:
    try:
        return await build_request(action, partner, mapping, local, default_body=local.get("event"))
    except InvalidPayload as exc:
        raise StepFailed(exc.detail, [p.as_dict() for p in exc.problems]) from None


def _said(status: int | None, message: str | None) -> str:
    return f"answered {status}" if status is not None else str(message or "no answer")


def _named(driver: Mapping[str, Any] | None) -> str:
    """A driver of the history as a note names them: their name, else their CPF."""
    return "nobody" if driver is None else str(driver.get("name") or driver.get("cpf"))


def _step_cooldown(
    spec: NotifySpec, context: Mapping[str, Any], now: datetime
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """A notify step's cooldown on this context (the key, `seconds`, `also`, the condition's
    time `at`, `per_recipient`: `deliveries.py`, `notify/dispatch.py`), and what its entry
    says of it. `at` null or not a time here: the step's time, and the entry says so."""
    if spec.cooldown_key is None:
        return None, {}
    key = cooldown_key(spec.cooldown_key, context)
    if key is None:
        note = f"no cooldown: {spec.cooldown_key.text} is null here"
        return None, {"cooldown_key": None, "cooldown_note": note}
    cooldown: dict[str, Any] = {"key": key, "seconds": spec.cooldown_seconds}
    said: dict[str, Any] = {"cooldown_key": key}
    if also := cooldown_also(spec.cooldown_also, context):
        cooldown["also"] = said["cooldown_also"] = also
    if spec.cooldown_at is not None:  # judged on the condition's time
        at = cooldown_at(spec.cooldown_at, context)
        cooldown["at"] = now if at is None else at
        said["cooldown_at"] = cooldown["at"].isoformat()
        if at is None:
            said["cooldown_note"] = f"{spec.cooldown_at.text} is not a time here: the step's"
    if spec.cooldown_per_recipient:
        cooldown["per_recipient"] = True
    return cooldown, said
