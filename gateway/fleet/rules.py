"""A tenant's fleet rules, ready for the fold: geofences and maintenance plans compiled from
their documents, cached per tenant for at most `ttl` seconds (2 s by default).

A change made through this process (`rule_service.py`) forgets the tenant's entry at once; a
change made by another process is seen within `ttl`. So a fence created, edited or deleted
takes effect for the fixes folded at most two seconds later, in every process.

A refresh reads each fence's version (`rev`, `updated_at`) and compiles again only the fences
that changed: a tenant's fences may hold 50,000 positions, and reading and building them all
every two seconds took a sixth of a second of the event loop each time (25 fences of 2,000
corners), however rarely they changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.fleet.geofences import DEFAULT_MARGIN_M, Geofence
from gateway.fleet.geometry import shape_from
from gateway.fleet.maintenance import Plan
from gateway.store import Store

DEFAULT_TTL_SECONDS = 2.0


@dataclass(frozen=True)
class TenantRules:
    geofences: tuple[Geofence, ...] = ()
    plans: tuple[Plan, ...] = ()


def geofence_from_doc(doc: Mapping[str, Any]) -> Geofence:
    margin = doc.get("margin_m")  # null where an edit cleared it (stored before the fix)
    return Geofence(
        id=str(doc["_id"]),
        name=doc["name"],
        kind=doc["kind"],
        shape=shape_from(dict(doc)),
        vehicles=frozenset(doc.get("vehicles") or ()),
        group=doc.get("group"),
        margin_m=DEFAULT_MARGIN_M if margin is None else float(margin),
        dwell_s=float(doc.get("dwell_seconds") or 0),
    )


def plan_from_doc(doc: Mapping[str, Any]) -> Plan:
    def number(name: str) -> float | None:
        value = doc.get(name)
        return None if value is None else float(value)

    return Plan(
        id=str(doc["_id"]),
        name=doc["name"],
        every_km=number("every_km"),
        due_soon_km=number("due_soon_km"),
        every_days=number("every_days"),
        start_km=float(doc.get("start_km") or 0),
        vehicles=frozenset(doc.get("vehicles") or ()),
        group=doc.get("group"),
        due_soon_days=number("due_soon_days"),
    )


class FleetRules:
    """The fold's view of a tenant's geofences and plans (a short-lived cache)."""

    def __init__(
        self,
        store: Store,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, TenantRules]] = {}
        # per tenant, each fence compiled: its version (rev, updated_at) and the Geofence
        self._compiled: dict[str, dict[Any, tuple[tuple[Any, Any], Geofence]]] = {}
        # bumped by forget(): a load that started before a change does not cache its result
        self._generation: dict[str, int] = {}

    async def for_tenant(self, tenant: str) -> TenantRules:
        now = self._clock()
        cached = self._cache.get(tenant)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        generation = self._generation.get(tenant, 0)
        fences = await self._geofences(tenant)
        plans = await self._store.fleet_rules.plans.all(tenant)
        rules = TenantRules(geofences=fences, plans=tuple(plan_from_doc(d) for d in plans))
        if self._generation.get(tenant, 0) == generation:
            self._cache[tenant] = (now, rules)
        return rules

    async def _geofences(self, tenant: str) -> tuple[Geofence, ...]:
        """The tenant's fences, oldest first: those compiled before whose version is the
        same kept, the others read and compiled (each with the version it was read at: one
        changed again since `versions` is compiled again at the next refresh)."""
        store = self._store.fleet_rules.geofences
        versions = await store.versions(tenant)
        known = self._compiled.get(tenant, {})
        wanted = {doc["_id"]: (doc.get("rev"), doc.get("updated_at")) for doc in versions}
        changed = [i for i, version in wanted.items() if known.get(i, (None,))[0] != version]
        compiled = {i: known[i] for i in wanted if i not in changed}
        for doc in await store.by_ids(tenant, changed):  # as they are now (newer, or gone)
            compiled[doc["_id"]] = ((doc.get("rev"), doc.get("updated_at")), geofence_from_doc(doc))
        self._compiled[tenant] = compiled
        return tuple(compiled[i][1] for i in wanted if i in compiled)

    def forget(self, tenant: str) -> None:
        """Drop the tenant's cached rules (this process changed them)."""
        self._cache.pop(tenant, None)
        self._generation[tenant] = self._generation.get(tenant, 0) + 1
