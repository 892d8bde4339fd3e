"""Use case: `POST /api/v1/flows/test`: run a flow (stored or draft) on a sample event and
return every step as it would go out, sending nothing and writing nothing.

- `fetch`: the GET request is built, not sent (a partner's GET may still count, bill or log).
  Its answer comes from `samples[<step id>]` (the partner's raw answer; the action's response
  mapping is applied) or the step is *unresolved*: `steps.<id>` is null for later steps, and
  the result lists it.
- `when`: evaluated; false stops the run (later steps are "not reached").
- `notify`: recipients resolved (assignment history and entities are read), the template
  rendered per recipient in their language, the provider's request shown (FCM body, SMS
  provider request, e-mail headers and parts), and what cooldown and quiet hours would decide;
  `nobody` and `steps.<id>.messages` as the run has them (the messages it would queue).
- `call`: the request built from the action's mapping; partner secrets show as <secret:name>.
- `set`: the entity's document the write would store (`EntityService.patched`) and the
  changes; not written. A refused write fails the step as in the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import orjson

from gateway.actions.catalog import Catalog, build_request
from gateway.actions.signing import unsigned_headers
from gateway.clock import utcnow
from gateway.delivery.preparation import with_idempotency_key
from gateway.entities import EntityService, diff, unmet
from gateway.errors import Conflict, FieldProblem, GatewayError, InvalidPayload, NotFound
from gateway.events import entity_key
from gateway.flows.compiler import step_references
from gateway.flows.context import (
    cooldown_also,
    cooldown_at,
    cooldown_key,
    evaluate,
    holds,
    run_context,
    sample_event,
    starts,
)
from gateway.flows.deliveries import (
    notification_id,
    push_data,
    recipient_key,
    step_request_id,
)
from gateway.flows.messages import Message, MessageComposer
from gateway.flows.model import CompiledFlow, Step
from gateway.flows.recipients import answer_after_asked
from gateway.flows.references import StepFailed, resolve_action
from gateway.flows.service import FlowService
from gateway.flows.steps import registered_vehicle, stored_entity
from gateway.formats.json_tree import is_text, plain
from gateway.kinds import KindService
from gateway.mapping import unflatten
from gateway.mapping.model import EvalError
from gateway.notify.email import UNBUILDABLE, prepare
from gateway.notify.messages import EmailMessage, PushMessage, SmsMessage
from gateway.notify.notifier import MappingSource, Recipient
from gateway.notify.policy import decide
from gateway.notify.push import SEND_PATH, fcm_body
from gateway.notify.sandbox import previewing
from gateway.notify.settings import SettingsService
from gateway.notify.sms import sms_request
from gateway.outbound.bodies import body_text
from gateway.schemas.registry import SchemaRegistry
from gateway.store import Store
from gateway.store.notify import noted_near

RUN_ID = "<run id>"  # what a delivery id's run part shows as: the dry run makes no run


@dataclass(frozen=True, slots=True)
class DryRunParts:
    store: Store
    flows: FlowService
    catalog: Catalog
    mappings: MappingSource
    entities: EntityService
    schemas: SchemaRegistry
    kinds: KindService
    composer: MessageComposer
    settings: SettingsService


class FlowDryRun:
    def __init__(self, parts: DryRunParts) -> None:
        self._p = parts

    async def run(
        self,
        tenant: str,
        *,
        name: str | None,
        version: int | None,
        draft: str | dict[str, Any] | None,
        event: Any,
        samples: Mapping[str, Any],
    ) -> dict[str, Any]:
        """What the flow would do on `event`; its renders (messages, XML bodies) are the
        tenant's previews (`previewing`)."""
        now = utcnow()
        if draft is not None:
            flow, version = await self._p.flows.compile(tenant, draft), None
        elif name is not None:
            flow = await self._p.flows.compiled(tenant, name, version)
            version = version or (await self._p.flows.get(tenant, name)).version
        else:
            message = "give a stored flow's name or a draft"
            raise InvalidPayload(message, [FieldProblem("/flow", message, "required")])
        sample = await self._stored_entity(tenant, sample_event(event, now))
        context = run_context(sample, flow=flow.name, version=version, now=now)
        result: dict[str, Any] = {"flow": flow.name, "version": version, "event": sample}
        why = starts(flow, sample, context)
        if why is not None:
            return {**result, "starts": False, "reason": why, "steps": [], "unresolved": []}
        # As the runner gives it: to the steps, after `on.when` decided (the starter reads no
        # vehicle: one read per event and flow for a condition that rarely needs it).
        context["vehicle"] = await registered_vehicle(self._p.entities, tenant, sample)
        # `stored`, as steps read it (a sample about no stored entity: its data stands in).
        if any(step.reads_stored for step in flow.steps):
            stored = await stored_entity(self._p.entities, tenant, sample)
            context["stored"] = context["entity"] if stored is None else stored
        with previewing(tenant):
            steps, unresolved = await self._steps(tenant, flow, context, samples)
        return {**result, "starts": True, "reason": None, "steps": steps, "unresolved": unresolved}

    async def _stored_entity(self, tenant: str, sample: dict[str, Any]) -> dict[str, Any]:
        """A sample event about a stored entity (named by its id or its key) completed as a
        real event about it is: `entity` with its `id` and `key`, `data` the entity's data
        under the sample's own. A sample naming no stored entity as it is."""
        ref = sample["entity"]
        etype = ref.get("type") if isinstance(ref, Mapping) else None
        name = (ref.get("id") or ref.get("key")) if isinstance(ref, Mapping) else None
        if not isinstance(etype, str) or not isinstance(name, str) or not name:
            return sample
        try:
            stored = await self._p.entities.get(tenant, etype, name)
        except (NotFound, InvalidPayload):
            return sample
        key = entity_key(etype, stored["nk"], stored["data"])
        entity = {**ref, "id": str(stored["_id"]), "key": key}
        data = sample["data"] if isinstance(sample["data"], Mapping) else {}
        return {**sample, "entity": entity, "data": {**stored["data"], **data}}

    async def _steps(
        self, tenant: str, flow: CompiledFlow, context: dict[str, Any], samples: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        out: list[dict[str, Any]] = []
        unresolved: list[str] = []
        ended = False
        for step in flow.steps:
            entry: dict[str, Any] = {"id": step.id, "kind": step.kind}
            reads = _reads(step) & set(unresolved)
            if reads:
                entry["note"] = f"reads unresolved steps ({', '.join(sorted(reads))}): give samples"
            if ended:
                out.append({**entry, "outcome": "not reached"})
                continue
            if step.guard is not None and not holds(step.guard, context):
                out.append({**entry, "outcome": "skipped", "reason": f"when: {step.guard.text}"})
                continue
            try:
                entry.update(await self._step(tenant, step, context, samples))
            except StepFailed as exc:
                entry.update(outcome="failed", detail=exc.detail, errors=exc.errors)
            except EvalError as exc:
                entry.update(outcome="failed", detail=f"expression {exc.source!r}: {exc.message}")
            if entry["outcome"] == "unresolved":
                unresolved.append(step.id)
            ended = entry["outcome"] in ("stopped", "failed")
            out.append(entry)
        return out, unresolved

    async def _step(
        self, tenant: str, step: Step, context: dict[str, Any], samples: Mapping[str, Any]
    ) -> dict[str, Any]:
        if step.kind == "when":
            assert step.condition is not None
            passed = holds(step.condition, context)
            entry = {"outcome": "passed" if passed else "stopped", "condition": step.condition.text}
            return {**entry, **(_why(step) if not passed else {})}
        if step.kind in ("fetch", "call"):
            return await self._action(tenant, step, context, samples)
        if step.kind == "notify":
            return await self._notify(tenant, step, context)
        return await self._set(tenant, step, context)

    # -- fetch and call ----------------------------------------------------------------------

    async def _action(
        self, tenant: str, step: Step, context: dict[str, Any], samples: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert step.action is not None
        action, partner, mapping = await self._resolve_action(tenant, step.action)
        local = {**context, **evaluate(step.values, context)}
        masked = {
            n: f"<secret:{n}>" for n in (*partner.secrets, *(mapping.secrets if mapping else ()))
        }
        try:
            request, body = await build_request(
                action,
                replace(partner, secrets=masked),
                mapping,
                plain(local),
                default_body=local["event"],
            )
        except InvalidPayload as exc:
            raise StepFailed(exc.detail, [p.as_dict() for p in exc.problems]) from None
        # What the run adds (`steps.py`, `delivery/preparation.py`): the step's id as
        # `webhook-id` (a call's delivery id, its `Idempotency-Key` too), the timestamp and
        # signature made when sent; the run's id does not exist yet.
        msg_id = step_request_id(RUN_ID, step.id)
        if step.kind == "call":
            request = with_idempotency_key(request, msg_id)
        shown = _request(request, body)
        shown["headers"].update(unsigned_headers(msg_id, "the flow"))
        shown["note"] = (
            f"{RUN_ID} stands for the run's id, made when it runs; the webhook-timestamp and "
            "webhook-signature headers are made on each attempt, signed with the flow's secrets"
        )
        entry: dict[str, Any] = {"action": action.name, "request": shown}
        if step.kind == "call":
            context["steps"][step.id] = None  # a call is a delivery: its answer comes later
            return {**entry, "outcome": "rendered"}
        if step.id not in samples:
            context["steps"][step.id] = None
            return {**entry, "outcome": "unresolved"}
        answer = samples[step.id]
        mapped = answer
        if action.response_mapping:
            if answer is None:  # as the real run's fetch (`steps.py` `_fetch`) fails it
                raise StepFailed(f"{partner.name} answered without a JSON or XML body to map")
            response = await self._p.mappings.active(tenant, action.response_mapping)
            try:
                mapped = response.map_response(answer)
            except InvalidPayload as exc:
                raise StepFailed(exc.detail, [p.as_dict() for p in exc.problems]) from None
        context["steps"][step.id] = mapped
        if step.assign is not None:  # what the history would record (not written)
            spec = step.assign
            if (wrong := answer_after_asked(spec, context)) is not None:
                raise StepFailed(wrong)
            values = {"vehicle": spec.vehicle, "driver": spec.driver, "start": spec.start}
            entry["assign"] = evaluate({k: v for k, v in values.items() if v}, context)
        return {**entry, "outcome": "answered", "answer": answer, "result": mapped}

    async def _resolve_action(self, tenant: str, ref: str) -> tuple[Any, Any, Any]:
        return await resolve_action(self._p.store, self._p.catalog, self._p.mappings, tenant, ref)

    # -- notify ------------------------------------------------------------------------------

    async def _notify(self, tenant: str, step: Step, context: dict[str, Any]) -> dict[str, Any]:
        spec = step.notify
        assert spec is not None
        composed = await self._p.composer.compose(tenant, spec, context)
        messages = []
        for m in composed.messages:
            decision = await self._decision(tenant, step, composed.channel.type, context, m)
            message: dict[str, Any] = {"recipient": m.recipient.as_dict(), "decision": decision}
            if m.rendered is not None:
                parts = m.rendered.parts
                message.update(locale=m.rendered.locale, parts=parts)
                # The delivery's id, as the run makes it; the run's id does not exist yet.
                key = notification_id(RUN_ID, step.id, m.recipient.address, composed.channel.type)
                message["request"] = await self._preview(
                    tenant, composed.channel, m.recipient, parts, context["event"], key
                )
                if m.rendered.undefined:
                    message["undefined"] = m.rendered.undefined
            elif m.error is not None:
                message.update(error=m.error.detail, errors=[p.as_dict() for p in m.error.problems])
            messages.append(message)
        # As the run counts them: the messages it would queue, not those that failed to render.
        queued = sum(1 for m in composed.messages if m.rendered is not None)
        context["steps"][step.id] = {"messages": queued}
        return {
            "outcome": "rendered" if queued else "nobody",
            "channel": composed.channel.name,
            "template": composed.template.name,
            "messages": messages,
            "unreachable": composed.unreachable,
        }

    async def _decision(
        self,
        tenant: str,
        step: Step,
        channel_type: str,
        context: Mapping[str, Any],
        message: Message,
    ) -> dict[str, Any]:
        spec = step.notify
        assert spec is not None
        settings = await self._p.settings.get(tenant)
        key, last, also, near = None, None, [], None
        seconds = spec.cooldown_seconds
        wait = settings.cooldown if seconds is None else timedelta(seconds=seconds)
        if spec.cooldown_key is not None:  # read only: a dry run claims no cooldown
            key = cooldown_key(spec.cooldown_key, context)
            if key is not None:
                also = cooldown_also(spec.cooldown_also, context)
                cooldowns = self._p.store.notify.cooldowns
                if spec.cooldown_per_recipient:  # the recipient's own note
                    to = notification_id(RUN_ID, step.id, message.recipient.address, channel_type)
                    key = recipient_key(key, message.recipient.driver_id, to)
                if spec.cooldown_at is not None:  # judged on the condition's time
                    at = cooldown_at(spec.cooldown_at, context) or utcnow()
                    for k in (key, *also):
                        noted = noted_near(await cooldowns.holder(tenant, k), at, wait, "")
                        if noted is not None and near is None:
                            near = (noted, at)
                else:
                    sent = [await cooldowns.last_sent(tenant, k) for k in (key, *also)]
                    last = max((at for at in sent if at is not None), default=None)
        if near is not None:
            noted, at = near
            return {
                "action": "suppress",
                "until": None,
                "reason": f"cooldown: an alert for {noted.isoformat()} went out, within the "
                f"cooldown of this one's time {at.isoformat()}",
                "cooldown_key": key,
                **({"cooldown_also": also} if also else {}),
            }
        decision = decide(
            utcnow(),
            channel_type,
            last_sent=last,
            settings=settings,
            cooldown=None if seconds is None else timedelta(seconds=seconds),
            urgent=spec.urgent,
        )
        return {
            "action": decision.action,
            "until": decision.until,
            "reason": decision.reason,
            "cooldown_key": key,
            **({"cooldown_also": also} if also else {}),
        }

    async def _preview(
        self,
        tenant: str,
        channel: Any,
        recipient: Recipient,
        parts: Mapping[str, str],
        event: Mapping[str, Any],
        key: str,
    ) -> dict[str, Any]:
        """What the provider would receive, built by the functions the senders use: the FCM
        body with the event's `data`; the SMS request with the delivery's id as its key
        (Idempotency-Key, `message.id`, `webhook-id`: signed with the action's secrets when
        sent), `<run id>` standing for the run's."""
        if channel.email is not None:
            settings = channel.email
            message = EmailMessage(
                (recipient.address,), parts["subject"], parts["text"], parts.get("html")
            )
            try:
                mime, envelope = prepare(settings, message)
            except ValueError as exc:  # the send fails it, as it fails an SMS's bad number
                return {"error": f"{UNBUILDABLE}: {exc}"}
            return {
                "from": settings.sender,
                "reply_to": settings.reply_to,
                "to": [str(mime["To"])],
                "envelope": envelope,
                "server": f"{settings.host}:{settings.port} ({settings.security})",
            }
        try:
            if channel.push is not None:
                partner = await self._p.catalog.partner(tenant, channel.push.partner_id)
                url = partner.base_url + SEND_PATH.format(project=channel.push.project_id)
                data = push_data(event)
                push = PushMessage(recipient.address, parts["title"], parts["body"], data)
                return {"method": "POST", "url": url, "body": fcm_body(push, channel.push.priority)}
            action, partner, mapping = await self._resolve_action(tenant, channel.sms.action_id)
            masked = replace(partner, secrets={n: f"<secret:{n}>" for n in partner.secrets})
            request = sms_request(
                action,
                masked,
                mapping,
                SmsMessage(recipient.address, parts["text"]),
                channel.sms.sender,
                key,
            )
        except (GatewayError, StepFailed) as exc:
            return {"error": getattr(exc, "detail", str(exc))}
        note = (
            f"the key {key} is the delivery's id; {RUN_ID} stands for the run's, made when it "
            "runs; the webhook-timestamp and webhook-signature headers are made on each "
            "attempt, signed with the action's secrets"
        )
        shown = _request(request, request.body)
        shown["headers"].update(unsigned_headers(key, "the action"))
        return {**shown, "note": note}

    # -- set ---------------------------------------------------------------------------------

    async def _set(self, tenant: str, step: Step, context: dict[str, Any]) -> dict[str, Any]:
        spec = step.set
        assert spec is not None
        event = context["event"]
        event_ref = event.get("entity") or {}
        etype = spec.entity_type or event_ref.get("type")
        ref = spec.ref.value(context) if spec.ref is not None else event_ref.get("id")
        named = ref if is_text(ref) and ref else None
        # A sample event about an entity that is not stored (named by an id that finds none,
        # by a key, or by nothing): its data stands in.
        data = event.get("data") if spec.ref is None else None
        sample = data if isinstance(data, Mapping) and data else None
        if not is_text(etype) or (named is None and sample is None):
            raise StepFailed("set: no entity to write (the event names none; give set.entity)")
        entities = self._p.entities
        current = None
        note = None
        try:
            if named is not None:
                try:
                    current = await entities.get(tenant, etype, named)
                except (NotFound, InvalidPayload):
                    if sample is None:
                        raise
            if current is None:
                assert sample is not None
                note = "the event's entity is not stored: the sample event's data stands in"
                key = entities.natural_key(etype, sample)
                current = {"_id": named, "type": etype, "nk": key, "data": sample}
            if spec.expect and (why := unmet(evaluate(spec.expect, context), current["data"])):
                # As the run's write would find it (`EntityService.patch(expect=)`).
                stop = {
                    "outcome": "stopped",
                    "reason": f"expect: the {etype} is not as expected: {why}",
                }
                return {**({"note": note} if note else {}), **stop, **_why(step)}
            fields = plain(evaluate(spec.fields, context))
            try:
                patch = unflatten(fields)
            except ValueError as exc:  # one field inside another (a and a.b)
                raise StepFailed(f"set: {exc}") from None
            # What the run's write stores (`EntityService.patched`), nothing written.
            document = await entities.patched(tenant, current, patch, dry=True)
        except (NotFound, InvalidPayload, Conflict) as exc:
            problems = [p.as_dict() for p in getattr(exc, "problems", [])]
            raise StepFailed(exc.detail, problems) from None
        changes = [
            {"field": c.field, "old": c.old, "new": c.new} for c in diff(current["data"], document)
        ]
        # As the real `set` answers (`steps.py`): with the version the write would leave, the
        # stored one moved on when something changes.
        version = int(current.get("rev", 0)) + (1 if changes else 0)
        entity_id = None if current["_id"] is None else str(current["_id"])
        context["steps"][step.id] = {**document, "id": entity_id, "version": version}
        return {
            **({"note": note} if note else {}),
            "outcome": "rendered",
            "entity": {"type": etype, "id": entity_id},
            "fields": fields,
            "changes": changes,
            "document": document,
        }


def _why(step: Step) -> dict[str, str]:
    """What a stop records beside its reason: the step's description, when it has one."""
    return {"description": step.why} if step.why else {}


def _reads(step: Step) -> set[str]:
    texts = [e.text for e in (step.guard, step.condition) if e is not None]
    texts += [e.text for e in step.values.values()]
    if step.notify is not None and step.notify.context:
        texts += [e.text for e in step.notify.context.values()]
    if step.set is not None:
        texts += [e.text for e in (*step.set.fields.values(), *step.set.expect.values())]
    return {ref for text in texts for ref in step_references(text)}


def _request(request: Any, body: bytes | None) -> dict[str, Any]:
    shown: Any = None
    if body:
        text = body_text(request.headers, body)  # in the charset it is sent in
        try:
            shown = orjson.loads(text)
        except orjson.JSONDecodeError:
            shown = text
    return {
        "method": request.method,
        "url": request.url,
        "headers": dict(request.headers),
        "body": shown,
    }
