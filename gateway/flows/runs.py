"""Flow runs as documents (what the starter stores) and as the admin API shows them.

    run_document(tenant, event, flow, version, now, depth) -> the pending run of one
                                                               (event, flow)
    FlowRunService.list(tenant, flow, ...) / get(tenant, run id)

A run pins the flow's version it started with: activating another version changes the runs
that start after, never one under way. Its `depth` is how many flows led to its event (0 for
an event a trigger, an admin or the telemetry caused); see `starter.py` for the loop guard.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.clock import utcnow
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.flows.model import CompiledFlow
from gateway.models import RunStatus
from gateway.store import Doc, Store
from gateway.store.flow_runs import shard_of

STATUSES = tuple(s.value for s in RunStatus)


def run_id_of(event_id: str, flow: str) -> str:
    return f"{event_id}:{flow}"


def run_document(
    tenant: str,
    event: dict[str, Any],
    flow: CompiledFlow,
    version: int,
    now: datetime,
    depth: int,
) -> Doc:
    """`event` is the public event (`events.public_event`): the run's context starts there."""
    run_id = run_id_of(event["id"], flow.name)
    return {
        "_id": run_id,
        "tenant": tenant,
        "flow": flow.name,
        "version": version,
        "event": event,
        "depth": depth,
        "status": RunStatus.PENDING.value,
        "next_step": 0,
        "steps": [],
        "answers": {},
        "shard": shard_of(run_id),
        "next_attempt_at": now,
        "claims": 0,
        "created_at": now,
        "updated_at": now,
    }


def public_run(doc: Doc, *, full: bool = False) -> dict[str, Any]:
    event = doc.get("event") or {}
    view: dict[str, Any] = {
        "id": doc["_id"],
        "flow": doc["flow"],
        "version": doc["version"],
        "status": doc["status"],
        "event": {k: event.get(k) for k in ("id", "type", "occurred_at", "entity", "origin")},
        "depth": doc.get("depth", 0),
        "steps": doc.get("steps", []),
        "next_step": doc.get("next_step", 0),
        "last_error": doc.get("last_error"),
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
        "finished_at": doc.get("finished_at"),
    }
    if doc["status"] == RunStatus.PENDING.value:
        view["next_attempt_at"] = doc.get("next_attempt_at")
        if doc.get("waits"):
            view["waits"] = doc["waits"]
        if doc.get("faults"):
            view["faults"] = doc["faults"]
    if doc["status"] == RunStatus.HELD.value:
        view["held_at"] = doc.get("held_at")
    if doc.get("replays"):
        view["replays"] = doc["replays"]
    if full:
        view["answers"] = doc.get("answers", {})
    return view


class FlowRunService:
    def __init__(self, store: Store) -> None:
        self._runs = store.notify.runs
        self._flows = store.notify.flows

    async def of_event(
        self, tenant: str, event_id: str, limit: int = 50, *, after: str | None = None
    ) -> list[Doc]:
        """The runs an event started (one per flow), by flow name; a page starts after the
        run id `after` (the previous page's last)."""
        return await self._runs.of_event(tenant, event_id, limit, after)

    async def list(
        self, tenant: str, flow: str, *, status: str | None, before: str | None, limit: int
    ) -> list[Doc]:
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
        runs = await self._runs.list(tenant, flow, status=status, before=before, limit=limit)
        # A deleted flow's runs are still listed (what it did and what it left undone): a 404
        # only for a name with neither a flow nor a run.
        if (
            not runs
            and await self._flows.head(tenant, flow) is None
            and not await self._runs.list(tenant, flow, status=None, before=None, limit=1)
        ):
            raise NotFound(f"no flow {flow!r}")
        return runs

    async def get(self, tenant: str, run_id: str) -> Doc:
        doc = await self._runs.get(tenant, run_id)
        if doc is None:
            raise NotFound(f"no flow run {run_id!r}")
        return doc

    async def replay(self, tenant: str, run_id: str) -> Doc:
        """A failed run → pending, resumed at the step that failed (with the flow version it
        pinned; what that step names — an action, its partner, a mapping, a channel — as they
        stand now). The steps before it are not run again; the failure is kept in `replays`."""
        doc = await self.get(tenant, run_id)
        steps = doc.get("steps") or []
        last = steps[-1] if steps else {}
        if doc["status"] != RunStatus.FAILED.value or last.get("outcome") != "failed":
            raise Conflict(f"flow run {run_id} is {doc['status']}; only a failed run is replayed")
        now = utcnow()
        replay = {"at": now, "step": last.get("id"), "detail": last.get("detail")}
        if not await self._runs.replay(tenant, run_id, len(steps) - 1, replay, now):
            raise Conflict(f"flow run {run_id} changed meanwhile; read it again")
        return await self.get(tenant, run_id)
