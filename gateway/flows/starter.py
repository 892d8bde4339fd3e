"""The flow starter: the relay calls it with each batch of relayed events, next to the
delivery fan-out and before the outboxes are drained (see `services.py`). It stores one run
per (event, flow) that starts — type, `on.filter`, `on.when` — in one insert for the batch.

Run ids are `<event id>:<flow name>`, so a relay that runs a batch again after a crash starts
nothing twice, and no event is drained before its runs exist: each (event, flow) starts
exactly once. Active flows are cached per tenant for `ttl` seconds (a flow activated in
another process starts within that time; in this process at once).

Loop guard: every write a run causes, by whichever step and whenever (its `set`, the driver
its `fetch` assigns, also once a scheduled start comes, a push token its notification was
refused, the fold's events an odometer it wrote brings), carries the run's chain in its
origin, `{run, depth: n + 1}` (`RunRef.chain`), n being the depth of the run's own event,
whatever the origin's kind (`flow`, `hr`, `notification`, `fold`). An event at depth >=
MAX_DEPTH starts nothing: a chain of flows stops after three links, whatever the flows say.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from gateway.actions.filters import flow_listener, wanted_by
from gateway.clock import utcnow
from gateway.events import public_event
from gateway.flows.context import run_context, starts
from gateway.flows.model import CompiledFlow
from gateway.flows.runs import run_document
from gateway.flows.service import FlowService
from gateway.formats.json_tree import plain
from gateway.metrics import Metrics
from gateway.store import Doc, Store
from gateway.store.mappings import ACTIVE_CACHE_SECONDS

MAX_DEPTH = 3
Active = list[tuple[int, CompiledFlow]]


def origin_depth(event: Doc) -> int:
    """How many flow runs led to the event: its origin's `depth`, whatever its kind."""
    origin = event.get("origin")
    depth = origin.get("depth") if isinstance(origin, dict) else None
    return depth if isinstance(depth, int) and not isinstance(depth, bool) else 0


class FlowStarter:
    """`await starter(events) -> started`."""

    def __init__(
        self,
        store: Store,
        flows: FlowService,
        metrics: Metrics,
        *,
        ttl: float = ACTIVE_CACHE_SECONDS,
        clock: Callable[[], datetime] = utcnow,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        self._runs = store.notify.runs
        self._flows = flows
        self._metrics = metrics
        self._ttl = ttl
        self._clock = clock
        self._on_started = on_started
        self._active: dict[str, tuple[float, int, Active]] = {}

    async def __call__(self, events: Sequence[Doc]) -> int:
        by_tenant: dict[str, list[Doc]] = defaultdict(list)
        for event in events:
            by_tenant[event["tenant"]].append(event)
        now = self._clock()
        docs: list[Doc] = []
        for tenant, tenant_events in by_tenant.items():
            active = await self._active_flows(tenant)
            if active:
                docs += self._runs_of(tenant, tenant_events, active, now)
        started = await self._runs.insert_many(docs)
        if started:
            self._metrics.flow_runs.labels("started").inc(started)
            if self._on_started is not None:
                self._on_started()
        return started

    def _runs_of(self, tenant: str, events: list[Doc], active: Active, now: datetime) -> list[Doc]:
        docs = []
        for event in events:
            wanted = [
                (v, f)
                for v, f in active
                if wanted_by(event, f.events, flow_listener(f.name)) is None
            ]
            if not wanted:
                continue
            depth = origin_depth(event)
            if depth >= MAX_DEPTH:
                self._metrics.flow_runs.labels("loop_guard").inc()
                continue
            # The context is JSON, as in the dry run: times as RFC 3339 text.
            public: dict[str, Any] = plain(public_event(event))
            for version, flow in wanted:
                context = run_context(public, flow=flow.name, version=version, now=now)
                if starts(flow, public, context) is None:
                    docs.append(run_document(tenant, public, flow, version, now, depth))
        return docs

    async def naming(self, tenant: str, event_type: str) -> list[str]:
        """The audience names of the tenant's active flows whose `on.events` name `event_type`
        itself: the fold's listeners for the opt-in `vehicle.position`, besides subscriptions."""
        return [
            flow_listener(f.name)
            for _, f in await self._active_flows(tenant)
            if event_type in f.events
        ]

    async def _active_flows(self, tenant: str) -> Active:
        cached = self._active.get(tenant)
        revision = self._flows.revision
        if cached is not None and cached[0] > time.monotonic() and cached[1] == revision:
            return cached[2]
        active = await self._flows.active(tenant)
        self._active[tenant] = (time.monotonic() + self._ttl, revision, active)
        return active
