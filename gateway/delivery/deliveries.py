"""Use case: watch deliveries and replay the ones that failed, died or were parked."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from gateway.clock import utcnow
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.models import DeliveryKind, DeliveryStatus
from gateway.store import Doc, Store
from gateway.store.deliveries import FILTERS, attempts_made

STATUSES = tuple(s.value for s in DeliveryStatus)
_SUMMARY = (
    "kind",
    "status",
    "event_type",
    "subscription_id",
    "action_id",
    "partner_id",
    "attempt_count",
    "last_status",
    "last_error",
    "waiting_for",
    "created_at",
    "updated_at",
    "final_at",
    "replayed_at",
)
# What a flow's deliveries add: the run and step that made them; a notification its message.
_FLOW = ("run_id", "step_id")
_MESSAGE = ("channel", "channel_type", "template", "locale", "recipient")


def public_delivery(doc: Doc, *, full: bool = False) -> dict[str, Any]:
    """The admin view. A malformed document (one the worker parked) is shown as it is: a
    member of the wrong type reads as empty, never a 500."""
    event = _object(doc.get("event"))
    view: dict[str, Any] = {
        "id": doc["_id"],
        "event_id": event.get("id"),
        "entity": event.get("entity"),
        **{k: doc.get(k) for k in _SUMMARY},
    }
    # The attempts made, replays or not (`attempt_count` is stored as the schedule's place).
    view["attempt_count"] = attempts_made(doc)
    view["kind"] = doc.get("kind", DeliveryKind.WEBHOOK.value)
    view.update({k: doc[k] for k in _FLOW if k in doc})
    message = doc.get("notification")
    if message is not None:
        message = _object(message)
        view["notification"] = {k: message.get(k) for k in _MESSAGE}
    if doc.get("status") == DeliveryStatus.PENDING.value:
        view["next_attempt_at"] = doc.get("next_attempt_at")
    if full:
        view["attempts"] = doc.get("attempts", [])
        view["event"] = event
        if message is not None:
            view["notification"]["parts"] = message.get("parts")
    return view


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_filters(query: Mapping[str, str]) -> dict[str, str]:
    filters = {k: v for k, v in query.items() if k in FILTERS and v}
    status = filters.get("status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
    return filters


class DeliveryService:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] | None = None,
        on_replay: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock or utcnow
        self._on_replay = on_replay

    async def list(
        self, tenant: str, filters: Mapping[str, str], *, before: str | None, limit: int
    ) -> list[Doc]:
        return await self._store.deliveries.list(tenant, filters, before=before, limit=limit)

    async def statuses_of_run(self, tenant: str, run_id: str) -> dict[str, str]:
        """Each delivery of a flow run, by id, its status (all of them)."""
        return await self._store.deliveries.statuses_of_run(tenant, run_id)

    async def get(self, tenant: str, delivery_id: str) -> Doc:
        doc = await self._store.deliveries.get(tenant, delivery_id)
        if doc is None:
            raise NotFound(f"no delivery {delivery_id!r}")
        return doc

    async def replay(self, tenant: str, delivery_id: str) -> Doc:
        """One failed, dead or parked delivery, or an action's suppressed one → pending, due
        now."""
        doc = await self.get(tenant, delivery_id)
        if not await self._store.deliveries.replay(
            tenant, {}, self._clock(), delivery_id=delivery_id
        ):
            raise Conflict(
                f"delivery {delivery_id} is {doc['status']}; only failed, dead and parked "
                "deliveries, and an action's suppressed ones, can be replayed"
            )
        self._replayed()
        return await self.get(tenant, delivery_id)

    async def replay_matching(self, tenant: str, filters: Mapping[str, str]) -> int:
        """Every failed, dead and parked delivery matching `filters` → pending; how many."""
        count = await self._store.deliveries.replay(tenant, filters, self._clock())
        if count:
            self._replayed()
        return count

    def _replayed(self) -> None:
        if self._on_replay is not None:
            self._on_replay()
