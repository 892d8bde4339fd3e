"""Plain types that cross layers (the store, the use cases and the web all speak them). A leaf:
it imports nothing of the gateway but `errors`."""

from __future__ import annotations

import enum


class DeliveryStatus(enum.StrEnum):
    """A delivery's persisted status (SPEC §2): pending → in_flight → a final status, or back
    to pending for a retry. `failed` and `dead` can be replayed."""

    PENDING = "pending"  # waiting for next_attempt_at
    IN_FLIGHT = "in_flight"  # claimed by a worker under a lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # refused by the partner (4xx), or impossible to send
    DEAD = "dead"  # the retry schedule is exhausted

    @property
    def final(self) -> bool:
        return self not in (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT)
