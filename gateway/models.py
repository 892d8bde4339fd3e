"""Plain types that cross layers (the store, the use cases and the web all speak them). A leaf:
it imports nothing of the gateway but `errors`."""

from __future__ import annotations

import enum


class DeliveryStatus(enum.StrEnum):
    """A delivery's persisted status (SPEC §2): pending → in_flight → a final status, or back
    to pending for a retry. `failed`, `dead` and `parked` can be replayed, and an action's
    `suppressed` delivery (outdated in its ordered line), not a notification's."""

    PENDING = "pending"  # waiting for next_attempt_at
    IN_FLIGHT = "in_flight"  # claimed by a worker under a lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # refused by the partner (4xx), or impossible to send
    DEAD = "dead"  # the retry schedule is exhausted
    # A notification a cooldown or quiet hours dropped, or an ordered action's delivery a
    # newer one of its line outdated (`worker._in_line`): not sent.
    SUPPRESSED = "suppressed"
    PARKED = "parked"  # the worker could not process it (a malformed document): set aside

    @property
    def final(self) -> bool:
        return self not in (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT)


class DeliveryKind(enum.StrEnum):
    """What a delivery carries, and so how the worker prepares and sends it. A stored
    delivery without a `kind` is a webhook (deliveries before kinds existed)."""

    WEBHOOK = "webhook"  # an event to a subscription's action, signed (Standard Webhooks)
    FLOW_CALL = "flow_call"  # a flow's `call` step: an action on the run's context
    NOTIFICATION = "notification"  # a rendered message to one recipient through a channel


class RunStatus(enum.StrEnum):
    """A flow run's persisted status: pending → running (claimed under a lease) → a final
    status, or back to pending while a step waits for a retry, or held while its flow is
    paused (pending again, or skipped, when it is resumed)."""

    PENDING = "pending"
    RUNNING = "running"
    HELD = "held"  # its flow is paused: it waits, at its next step, for the flow's resume
    SUCCEEDED = "succeeded"  # every step ran
    STOPPED = "stopped"  # a `when` step was false
    FAILED = "failed"  # a step failed; the run says which and why
    SKIPPED = "skipped"  # held while its flow was paused, and let go on resume

    @property
    def final(self) -> bool:
        return self not in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.HELD)
