"""Use case: rejected trigger payloads (kept by `rejected.py`) — list them, read one, replay
after a fix.

A replay runs the trigger's pipeline again on the kept payload with the trigger's *current*
input schema and mapping (no authentication, rate limit or idempotency: the admin is
asking). On success the record is marked `replayed` with the write's result; on failure it
keeps the new problems and counts the attempt. Replaying "all" goes oldest first, so
positions of one vehicle are written in the order they arrived.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC
from typing import Any, Final

from gateway.clock import utcnow
from gateway.entities import Origin
from gateway.errors import BadRequest, Conflict, InvalidPayload, NotFound, clipped
from gateway.formats.json_tree import loads_exact
from gateway.store import Doc, Store
from gateway.triggers.compiled import CompiledTrigger, TriggerConfigs
from gateway.triggers.ingest import Ingestor
from gateway.triggers.rejected import public_rejected

MAX_REPLAY_ALL: Final = 1000
REPLAY_ROUND: Final = 100
"""Records a replay of all claims, and marks, at once."""
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
        if not await self._store.rejected.claim_replay(tenant, record_id, at=utcnow()):
            raise Conflict("this payload is being replayed or was replayed already")
        try:
            result = await self._rerun(trigger, record)
        except InvalidPayload as exc:
            await self._record_failure(tenant, record_id, exc)
            raise
        except Exception:
            await self._store.rejected.release_replay(tenant, record_id)
            raise
        await self._store.rejected.mark_replayed(tenant, record_id, at=utcnow(), result=result)
        return {"id": record_id, "status": "replayed", "result": result}

    async def replay_all(self, tenant: str, *, trigger_id: str | None = None) -> dict[str, Any]:
        """Replay every pending, replayable record (oldest first, at most MAX_REPLAY_ALL).
        As `replay` does for one, in rounds of REPLAY_ROUND records: each target read once,
        the round's records claimed (and read) in one write, their replays marked in one;
        only the pipeline's own writes go one record at a time."""
        query = {**_filters(trigger_id, "pending"), "replayable": True}
        docs = await self._store.rejected.list(
            tenant, query, cursor=None, limit=MAX_REPLAY_ALL, newest_first=False
        )
        targets: dict[str, CompiledTrigger | NotFound] = {}
        results: list[dict[str, Any]] = []
        for start in range(0, len(docs), REPLAY_ROUND):
            round_docs = docs[start : start + REPLAY_ROUND]
            for doc in round_docs:
                if doc["trigger_id"] not in targets:
                    try:
                        targets[doc["trigger_id"]] = await self._target(tenant, doc["trigger_id"])
                    except NotFound as exc:
                        targets[doc["trigger_id"]] = exc
            results += await self._replay_round(tenant, round_docs, targets)
        replayed = sum(r["status"] == "replayed" for r in results)
        return {"replayed": replayed, "failed": len(results) - replayed, "results": results}

    async def _replay_round(
        self, tenant: str, docs: Sequence[Doc], targets: Mapping[str, CompiledTrigger | NotFound]
    ) -> Sequence[dict[str, Any]]:
        outcome: dict[str, dict[str, Any]] = {}
        wanted: builtins.list[str] = []
        for doc in docs:
            target = targets[doc["trigger_id"]]
            if isinstance(target, NotFound):
                outcome[str(doc["_id"])] = _failed(str(doc["_id"]), target)
            else:
                wanted.append(str(doc["_id"]))
        claimed = await self._store.rejected.claim_replays(tenant, wanted, at=utcnow())
        taken = {str(record["_id"]) for record in claimed}
        for record_id in wanted:
            if record_id not in taken:
                busy = Conflict("this payload is being replayed or was replayed already")
                outcome[record_id] = _failed(record_id, busy)
        done: builtins.list[tuple[str, dict[str, Any]]] = []
        left = [str(record["_id"]) for record in claimed]
        try:
            for record in claimed:
                record_id = str(record["_id"])
                target = targets[record["trigger_id"]]
                assert not isinstance(target, NotFound)
                try:
                    done.append((record_id, await self._rerun(target, record)))
                except InvalidPayload as exc:
                    await self._record_failure(tenant, record_id, exc)
                    outcome[record_id] = _failed(record_id, exc)
                except (Conflict, NotFound) as exc:  # released with the rest, as `replay` does
                    outcome[record_id] = _failed(record_id, exc)
                    continue
                left.remove(record_id)
        finally:
            # What was replayed is marked so, even when a replay failed otherwise (the
            # database): the others of the round are pending again, as `replay` leaves one.
            await self._store.rejected.mark_many_replayed(tenant, done, at=utcnow())
            await self._store.rejected.release_replays(tenant, left)
        for record_id, _ in done:
            outcome[record_id] = {"id": record_id, "status": "replayed"}
        return [outcome[str(doc["_id"])] for doc in docs]

    async def _target(self, tenant: str, trigger_id: str) -> CompiledTrigger:
        trigger_doc = await self._store.triggers.get(tenant, trigger_id)
        if trigger_doc is not None:
            return self._configs.compiled(trigger_doc)
        other = await self._other_targets(tenant, trigger_id)
        if other is None:
            raise NotFound(f"trigger {trigger_id!r} no longer exists")
        return other

    async def _rerun(self, trigger: CompiledTrigger, record: Doc) -> dict[str, Any]:
        payload = loads_exact(record["payload"])  # an integer past 64 bits a number again
        origin = Origin("trigger", trigger.id, {"replay_of": str(record["_id"])})
        # A mapping's {received: time} is when the payload came, not the replay's time (the
        # latest copy's: a payload refused again supersedes its copy only when its mapping
        # did not read that time, `store/rejected.py`).
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

    async def _record_failure(self, tenant: str, record_id: str, exc: InvalidPayload) -> None:
        """The payload was refused again: why, on its record (it stays rejected)."""
        await self._store.rejected.record_failure(
            tenant,
            record_id,
            at=utcnow(),
            reason=str(exc.extra.get("reason")),
            detail=clipped(exc.detail),
            problems=[p.as_dict() for p in exc.problems],
            omitted=exc.omitted,
        )

    async def _record(self, tenant: str, record_id: str) -> Doc:
        doc = await self._store.rejected.get(tenant, record_id)
        if doc is None:
            raise NotFound(f"no rejected payload {record_id!r}")
        return doc


def _failed(record_id: str, exc: InvalidPayload | Conflict | NotFound) -> dict[str, Any]:
    return {"id": record_id, "status": "failed", "problem": exc.problem()}


def _filters(trigger_id: str | None, status: str | None) -> Mapping[str, Any]:
    filters: dict[str, Any] = {}
    if trigger_id is not None:
        filters["trigger_id"] = trigger_id
    if status is not None:
        if status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
        filters["status"] = status
    return filters
