"""Use case: rejected trigger payloads (kept by `rejected.py`) — list them, read one, replay
after a fix.

A replay runs the trigger's pipeline again on the kept payload with the trigger's *current*
input schema and mapping (no authentication, rate limit or idempotency: the admin is
asking). On success the record is marked `replayed` with the write's result; on failure it
keeps the new problems and counts the attempt. Replaying "all" goes oldest first, so
positions of one vehicle are written in the order they arrived.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from gateway.entities import Origin
from gateway.errors import BadRequest, Conflict, InvalidPayload, NotFound, clipped
from gateway.store import Doc, Store
from gateway.triggers.compiled import CompiledTrigger, TriggerConfigs
from gateway.triggers.ingest import Ingestor
from gateway.triggers.rejected import public_rejected

MAX_REPLAY_ALL: Final = 1000
STATUSES: Final = ("pending", "replayed")

OtherTargets = Callable[[str, str], Awaitable[CompiledTrigger | None]]
"""(tenant, id) → the compiled target of payloads kept under an id that is not a trigger's
(a schedule's pages), or None."""


async def _no_other_target(tenant: str, target_id: str) -> CompiledTrigger | None:
    return None


class RejectedPayloads:
    def __init__(
        self,
        store: Store,
        configs: TriggerConfigs,
        ingestor: Ingestor,
        *,
        other_targets: OtherTargets = _no_other_target,
    ) -> None:
        self._store = store
        self._configs = configs
        self._ingestor = ingestor
        self._other_targets = other_targets

    async def list(
        self,
        tenant: str,
        *,
        trigger_id: str | None = None,
        status: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Newest first; `before` is the last id of the previous page."""
        docs = await self._store.rejected.list(
            tenant, _filters(trigger_id, status), cursor=before, limit=limit
        )
        return [public_rejected(doc) for doc in docs]

    async def get(self, tenant: str, record_id: str) -> dict[str, Any]:
        return public_rejected(await self._record(tenant, record_id), payload=True)

    async def replay(self, tenant: str, record_id: str) -> dict[str, Any]:
        record = await self._record(tenant, record_id)
        if record["status"] == "replayed":
            raise Conflict("this payload was replayed already")
        if not record["replayable"]:
            raise Conflict("this payload was too large to keep whole; it cannot be replayed")
        trigger = await self._target(tenant, record["trigger_id"])
        # Claimed first: two concurrent replays of one record must not both write.
        if not await self._store.rejected.claim_replay(tenant, record_id, at=datetime.now(UTC)):
            raise Conflict("this payload is being replayed or was replayed already")
        try:
            result = await self._rerun(trigger, record)
        except InvalidPayload as exc:
            await self._store.rejected.record_failure(
                tenant,
                record_id,
                at=datetime.now(UTC),
                reason=str(exc.extra.get("reason")),
                detail=clipped(exc.detail),
                problems=[p.as_dict() for p in exc.problems],
            )
            raise
        except Exception:
            await self._store.rejected.release_replay(tenant, record_id)
            raise
        await self._store.rejected.mark_replayed(
            tenant, record_id, at=datetime.now(UTC), result=result
        )
        return {"id": record_id, "status": "replayed", "result": result}

    async def replay_all(self, tenant: str, *, trigger_id: str | None = None) -> dict[str, Any]:
        """Replay every pending, replayable record (oldest first, at most MAX_REPLAY_ALL)."""
        query = {**_filters(trigger_id, "pending"), "replayable": True}
        docs = await self._store.rejected.list(
            tenant, query, cursor=None, limit=MAX_REPLAY_ALL, newest_first=False
        )
        results: list[dict[str, Any]] = []
        for doc in docs:
            record_id = str(doc["_id"])
            try:
                await self.replay(tenant, record_id)
            except (InvalidPayload, Conflict, NotFound) as exc:
                results.append({"id": record_id, "status": "failed", "problem": exc.problem()})
                continue
            results.append({"id": record_id, "status": "replayed"})
        replayed = sum(r["status"] == "replayed" for r in results)
        return {"replayed": replayed, "failed": len(results) - replayed, "results": results}

    async def _target(self, tenant: str, trigger_id: str) -> CompiledTrigger:
        trigger_doc = await self._store.triggers.get(tenant, trigger_id)
        if trigger_doc is not None:
            return self._configs.compiled(trigger_doc)
        other = await self._other_targets(tenant, trigger_id)
        if other is None:
            raise NotFound(f"trigger {trigger_id!r} no longer exists")
        return other

    async def _rerun(self, trigger: CompiledTrigger, record: Doc) -> dict[str, Any]:
        payload = orjson.loads(record["payload"])
        origin = Origin("trigger", trigger.id, {"replay_of": str(record["_id"])})
        # A mapping's {received: time} is when the payload first came, not the replay's time.
        received = record["received_at"]
        if received.tzinfo is None:
            received = received.replace(tzinfo=UTC)
        if record["scope"] == "body":
            ingested = await self._ingestor.ingest(
                trigger, payload, origin=origin, keep_body=False, received=received
            )
            return {"status": ingested.status, **ingested.body}
        return await self._ingestor.ingest_item(
            trigger,
            payload,
            origin=origin,
            schema_applies=record["schema_applies"],
            received=received,
        )

    async def _record(self, tenant: str, record_id: str) -> Doc:
        doc = await self._store.rejected.get(tenant, record_id)
        if doc is None:
            raise NotFound(f"no rejected payload {record_id!r}")
        return doc


def _filters(trigger_id: str | None, status: str | None) -> Mapping[str, Any]:
    filters: dict[str, Any] = {}
    if trigger_id is not None:
        filters["trigger_id"] = trigger_id
    if status is not None:
        if status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
        filters["status"] = status
    return filters
