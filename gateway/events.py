"""Use case: move events from entity outboxes into the event log and fan them out.

The relay is at-least-once and idempotent: an event keeps the id it was given in the outbox,
so a relay that dies between storing an event and draining it stores nothing twice. Several
processes may relay at once; they only race to do the same idempotent work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.store import Doc, Store

log = logging.getLogger(__name__)

# Called for every newly stored event; the actions layer creates its deliveries here.
FanOut = Callable[[Doc], Awaitable[int]]


async def _no_fanout(event: Doc) -> int:
    return 0


def event_document(tenant: str, entity: Doc, entry: Doc) -> Doc:
    event: Doc = {
        "_id": entry["id"],
        "tenant": tenant,
        "type": entry["type"],
        "occurred_at": entry["occurred_at"],
        "entity": {
            "type": entry["entity_type"],
            "id": str(entity["_id"]),
            "key": entity["nk"].split("#deleted#")[0],
        },
        "data": entry["data"],
        "changes": entry["changes"],
        "origin": entry["origin"],
    }
    if "detail" in entry:
        event["detail"] = entry["detail"]
    return event


def public_event(doc: Doc) -> dict[str, Any]:
    return {"id": str(doc["_id"]), **{k: v for k, v in doc.items() if k not in ("_id", "tenant")}}


class EventRelay:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        fanout: FanOut = _no_fanout,
        batch: int = 100,
        poll_seconds: float = 1.0,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._fanout = fanout
        self._batch = batch
        self._poll = poll_seconds
        self._wake = asyncio.Event()
        self.running = False

    def set_fanout(self, fanout: FanOut) -> None:
        self._fanout = fanout

    def notify(self) -> None:
        """A request wrote an outbox entry: relay it now rather than at the next poll."""
        self._wake.set()

    async def relay_once(self) -> int:
        relayed = 0
        for entity in await self._store.entities.pending_outboxes(self._batch):
            done = []
            for entry in entity.get("outbox", []):
                event = event_document(entity["tenant"], entity, entry)
                if await self._store.events.insert(event):
                    self._metrics.events_relayed.labels(entry["type"].split(".")[0]).inc()
                    relayed += 1
                # Fanned out even when the event was already stored: a relay that died
                # between storing it and fanning it out must not lose its deliveries
                # (the fan-out is idempotent: deliveries have deterministic ids).
                await self._fanout(event)
                done.append(entry["id"])
            await self._store.entities.drain_outbox(entity, done)
        return relayed

    async def run_until_idle(self) -> int:
        """Relay until no outbox holds anything; returns how many events were stored."""
        total = 0
        while relayed := await self.relay_once():
            total += relayed
        # One more pass: an outbox drained of already-stored events relays 0 but must empty.
        return total + await self.relay_once()

    async def run(self) -> None:
        self.running = True
        try:
            await self._loop()
        finally:
            self.running = False

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.run_until_idle()
            except StoreUnavailable as exc:
                log.warning("event relay paused: %s", exc.detail)
            except Exception:
                log.exception("event relay failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
