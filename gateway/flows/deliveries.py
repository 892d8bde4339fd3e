"""The deliveries a flow run's steps create, with ids made of the run's and the step's, so a
step repeated after a crash stores nothing twice:

    <run id>:<step id>        a `call`: kind flow_call, the run's context for the action
    <run id>:<step id>:<to>   a `notify`: kind notification, one per recipient (`<to>` is made
                              of the recipient's address, as the channel tells addresses
                              apart), the message rendered (parts, locale), the channel, the
                              cooldown key and the claim its messages share (`notify/dispatch.py`)

A step repeated after a crash may resolve its recipients otherwise (a driver reported late, an
operator added, a push token dropped meanwhile): each recipient's id is still theirs, so who
was queued the first time is not queued again and who is new is. The version before numbered
a step's messages (`<run id>:<step id>:<n>`): a step repeated across the upgrade that finds one
of those queues nothing (`steps.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from typing import Any

from gateway.flows.messages import Composed
from gateway.flows.model import Step
from gateway.flows.recipients import same_address
from gateway.models import DeliveryKind, DeliveryStatus
from gateway.outbound.sender import BeforeSending
from gateway.store import Doc
from gateway.store.deliveries import shard_of


@dataclass(frozen=True, slots=True)
class RunRef:
    """What a step needs to know of its run."""

    id: str
    tenant: str
    flow: str
    depth: int
    started: datetime
    event: Mapping[str, Any]  # the public event
    # Awaited right before a step's request goes out (a fetch): the runner's lease check
    # (`leased_loop.LeaseCheck`), whose LeaseLost passes to the runner, nothing sent.
    before_sending: BeforeSending | None = field(default=None, repr=False, compare=False)

    @property
    def chain(self) -> dict[str, Any]:
        """On the origin of every write the run causes, whichever step and whenever (its
        `set`, the driver its `fetch` assigns, a push token its notification was refused):
        the run, and the depth of the events it causes, which the loop guard reads."""
        return {"run": self.id, "depth": self.depth + 1}


def notification_deliveries(
    run: RunRef,
    step: Step,
    composed: Composed,
    cooldown: dict[str, Any] | None,
    urgent: bool,
    now: datetime,
) -> tuple[list[Doc], list[dict[str, Any]]]:
    """The deliveries of a notify step's messages, and the step's list of them (a message
    that failed to render is listed, not stored)."""
    channel = composed.channel
    docs, listed = [], []
    for message in composed.messages:
        who = message.recipient.name or message.recipient.address
        if message.rendered is None:
            assert message.error is not None
            listed.append({"recipient": who, "outcome": "failed", "detail": message.error.detail})
            continue
        to = notification_id(run.id, step.id, message.recipient.address, channel.type)
        doc = flow_delivery(run, step, to, DeliveryKind.NOTIFICATION, now)
        noted = _recipients_cooldown(cooldown, message.recipient.driver_id, to)
        doc["notification"] = {
            "channel": channel.name,
            "channel_id": channel.id,
            "channel_type": channel.type,
            "template": composed.template.name,
            "locale": message.rendered.locale,
            "recipient": message.recipient.as_dict(),
            "parts": message.rendered.parts,
            "data": push_data(run.event) if channel.type == "push" else {},
            "message_id": _message_id(doc["_id"], channel.email.sender)
            if channel.email is not None
            else None,
            "cooldown": noted,
            "claim": f"{run.id}:{step.id}",
            "urgent": urgent,
            "chain": run.chain,  # on the driver's write if FCM refuses the token
        }
        docs.append(doc)
        entry = {"recipient": who, "outcome": "queued", "delivery": doc["_id"]}
        if noted is not cooldown and noted is not None:
            entry["cooldown_key"] = noted["key"]
        if message.rendered.undefined:  # printed as nothing: a typo, or a field the event lacks
            entry["undefined"] = message.rendered.undefined
        listed.append(entry)
    return docs, listed


def _recipients_cooldown(
    cooldown: dict[str, Any] | None, driver_id: str | None, to: str
) -> dict[str, Any] | None:
    """The cooldown a message notes: the step's, or with `per_recipient` the step's key of
    the person told (`recipient_key`)."""
    if cooldown is None or not cooldown.get("per_recipient"):
        return cooldown
    step = {k: v for k, v in cooldown.items() if k != "per_recipient"}
    return {**step, "key": recipient_key(cooldown["key"], driver_id, to)}


def recipient_key(key: str, driver_id: str | None, to: str) -> str:
    """A `per_recipient` cooldown's key of one recipient: the step's key and the person told
    (`:driver:<id>`; a recipient who is no driver by their address, as the message's id
    `to` names it: `:to:<hash>`), so another driver has their own note. A driver's two
    phones share theirs (and the step's claim: both get the alert)."""
    who = f"driver:{driver_id}" if driver_id else f"to:{to.rpartition(':')[2]}"
    return f"{key}:{who}"


def flow_delivery(
    run: RunRef, step: Step, delivery_id: str, kind: DeliveryKind, now: datetime
) -> Doc:
    event = run.event
    summary = {k: event.get(k) for k in ("id", "type", "occurred_at", "entity")}
    return {
        "_id": delivery_id,
        "kind": kind.value,
        "shard": shard_of(delivery_id),
        "tenant": run.tenant,
        "event": summary,
        "event_type": event.get("type"),
        "entity_id": (event.get("entity") or {}).get("id"),
        "run_id": run.id,
        "step_id": step.id,
        "status": DeliveryStatus.PENDING.value,
        "next_attempt_at": now,
        "attempt_count": 0,
        "attempts": [],
        "created_at": now,
        "updated_at": now,
    }


def step_request_id(run_id: str, step_id: str) -> str:
    """The id of a run's `call` (its delivery's id, sent as `webhook-id` and
    `Idempotency-Key`) or `fetch` (its `webhook-id`): the same on every try of the step."""
    return f"{run_id}:{step_id}"


def notification_id(run_id: str, step_id: str, address: str, channel_type: str) -> str:
    """The id of a notify step's message to `address` (an SMS's idempotency key too): the
    address as the channel tells them apart (`same_address`), hashed (no e-mail address or
    phone number in ids and logs)."""
    to = hashlib.sha256(same_address(address, channel_type).encode()).hexdigest()[:16]
    return f"{run_id}:{step_id}:{to}"


def push_data(event: Mapping[str, Any]) -> dict[str, str]:
    """FCM `data` (strings): the event's type, and the plate when it is about a vehicle."""
    data = {"event": str(event.get("type"))}
    plate = (event.get("data") or {}).get("plate")
    if isinstance(plate, str):
        data["plate"] = plate
    return data


def _message_id(delivery_id: str, sender: str) -> str:
    """Stable per notification (retries and replays repeat it: receivers can drop a repeat)."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "rabbot.gateway"
    return f"<{hashlib.sha256(delivery_id.encode()).hexdigest()[:32]}@{domain}>"
