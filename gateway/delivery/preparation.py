"""The delivery worker's prepare stage for deliveries that call a partner's action: a claimed
delivery → its action and partner (`resolve_target`) → the request to send
(`delivery_request`), the action's request mapping applied.

Two kinds call actions, and differ only in what the mapping sees and whose secrets sign
(Standard Webhooks headers, both; the partner's own auth applies besides):
    webhook    the event (`{"event", "entity", "tenant"}`, the entity as a proxy call's),
               signed with the subscription's secrets
    flow_call  the flow run's context as the `call` step saw it (stored on the delivery),
               signed with the flow's secrets (`actions/flow_secrets.py`), and carrying the
               delivery id as `Idempotency-Key` too
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from gateway.actions.catalog import Action, Catalog, Partner, Subscription, build_request
from gateway.actions.signing import SigningSecrets, with_signature
from gateway.entities import as_mapped
from gateway.errors import NotFound
from gateway.formats.json_tree import plain
from gateway.mapping_files.source import MappingSource
from gateway.models import DeliveryKind
from gateway.outbound.sender import OutboundRequest
from gateway.store import Doc


class Unsendable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    action: Action
    partner: Partner
    subscription: Subscription | None  # a webhook's
    signer: Subscription | SigningSecrets  # whose secrets sign the request


def flow_of(doc: Doc) -> str:
    """The flow whose `call` queued a delivery: its run's id is `<event id>:<flow name>`, and
    a flow's name holds no colon."""
    return str(doc["run_id"]).rpartition(":")[2]


async def resolve_target(doc: Doc, catalog: Catalog) -> Target:
    """The action and partner (and subscription) as they are now; Unsendable when one was
    deleted or the subscription is disabled."""
    tenant = doc["tenant"]
    try:
        sub = None
        signer: Subscription | SigningSecrets
        if doc.get("kind", DeliveryKind.WEBHOOK) == DeliveryKind.WEBHOOK:
            sub = signer = await catalog.subscription(tenant, doc["subscription_id"])
            action = await catalog.action(tenant, sub.action_id)
        else:
            action = await catalog.action(tenant, doc["action_id"])
            signer = await catalog.flow_signer(tenant, flow_of(doc))
        partner = await catalog.partner(tenant, action.partner_id)
    except NotFound as exc:
        raise Unsendable(f"{exc.detail}: it was deleted") from None
    if sub is not None and sub.status != "active":
        raise Unsendable("the subscription is disabled")
    return Target(action, partner, sub, signer)


async def delivery_request(
    doc: Doc,
    target: Target,
    mappings: MappingSource,
    *,
    lease: timedelta,
    clock: Callable[[], datetime],
) -> OutboundRequest:
    """Raises NotFound (a mapping deleted) or InvalidPayload (the mapping cannot build it)."""
    action, partner = target.action, target.partner
    context, default_body, path_values = _INPUTS[doc.get("kind", DeliveryKind.WEBHOOK)](doc)
    mapping = None
    if action.request_mapping:
        mapping = await mappings.active(doc["tenant"], action.request_mapping)
    # Leases are renewed while a send runs, so a send may take a whole lease (less a margin)
    # from now, even for the last delivery of an ordered group claimed long ago.
    remaining = lease.total_seconds() - 1.0
    request, _ = await build_request(
        action,
        partner,
        mapping,
        context,
        default_body=default_body,
        path_values=path_values,
        timeout=max(min(partner.timeout, remaining), 0.1),
    )
    if target.subscription is None:
        request = with_idempotency_key(request, str(doc["_id"]))
    # The exact bytes sent, signed as they go (the sender may still set credentials in them).
    return with_signature(request, target.signer, doc["_id"], clock())


def with_idempotency_key(request: OutboundRequest, delivery_id: str) -> OutboundRequest:
    """A flow's call carries the delivery id as `Idempotency-Key` besides its `webhook-id`
    (it did before it was signed: a partner may read either), the same on every attempt: a
    retry after a timeout whose request did arrive (at least once) is one the partner can
    drop. A key the action's mapping sets is kept."""
    if any(name.lower() == "idempotency-key" for name in request.headers):
        return request
    return replace(request, headers={**request.headers, "Idempotency-Key": delivery_id})


Inputs = tuple[dict[str, Any], Any, dict[str, Any]]  # context, default body, path values


def _webhook_inputs(doc: Doc) -> Inputs:
    """The event, and its entity as a proxy call gives it (`entities.as_mapped`): one request
    mapping reads the same fields in both modes. The event's own reference (`type`, `id`,
    `key`, `rev`) stays under `event.entity`.

    A path without a mapping takes its values from the entity with that reference laid over
    it: `{type}`, `{key}`, `{rev}` name the event's entity (a vehicle's `{type}` is `vehicle`,
    not its own `type` field), as they always have."""
    event = plain(doc["event"])  # stored: its times are datetimes, a mapping reads text
    ref = event.get("entity") or {}
    entity = as_mapped(event.get("data"), ref.get("id"), ref.get("type"), ref.get("rev"))
    context = {"event": event, "entity": entity, "tenant": doc["tenant"]}
    return context, event, {**entity, **ref}


def _flow_call_inputs(doc: Doc) -> Inputs:
    context = {**doc["context"], "tenant": doc["tenant"]}
    entity = context.get("entity") if isinstance(context.get("entity"), dict) else {}
    return context, context.get("event"), dict(entity or {})


_INPUTS: dict[str, Callable[[Doc], Inputs]] = {
    DeliveryKind.WEBHOOK: _webhook_inputs,
    DeliveryKind.FLOW_CALL: _flow_call_inputs,
}
