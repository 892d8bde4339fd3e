"""A tenant's fleet rules, ready for the fold: geofences and maintenance plans compiled from
their documents, cached per tenant for at most `ttl` seconds (2 s by default).

A change made through this process (`rule_service.py`) forgets the tenant's entry at once; a
change made by another process is seen within `ttl`. So a fence created, edited or deleted
takes effect for the fixes folded at most two seconds later, in every process.
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
        # bumped by forget(): a load that started before a change does not cache its result
        self._generation: dict[str, int] = {}

    async def for_tenant(self, tenant: str) -> TenantRules:
        now = self._clock()
        cached = self._cache.get(tenant)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        generation = self._generation.get(tenant, 0)
        fences = await self._store.fleet_rules.geofences.all(tenant)
        plans = await self._store.fleet_rules.plans.all(tenant)
        rules = TenantRules(
            geofences=tuple(geofence_from_doc(d) for d in fences),
            plans=tuple(plan_from_doc(d) for d in plans),
        )
        if self._generation.get(tenant, 0) == generation:
            self._cache[tenant] = (now, rules)
        return rules

    def forget(self, tenant: str) -> None:
        """Drop the tenant's cached rules (this process changed them)."""
        self._cache.pop(tenant, None)
        self._generation[tenant] = self._generation.get(tenant, 0) + 1
