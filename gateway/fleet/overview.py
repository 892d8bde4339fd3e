"""Use case: what the admin pages show of the fleet: the vehicles' recent tracks, and one
vehicle's odometer, geofences (with the fold's inside/outside state) and maintenance outlook.

Read-only, from what the fold keeps (the vehicle's `fleet` document) and the tenant's rules;
it decides nothing the fold does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from gateway.fleet.maintenance import Outlook, PlanState, outlook
from gateway.fleet.rules import FleetRules
from gateway.store import Doc, Store

RECENT_FIXES: Final = 100
TRACKED_VEHICLES: Final = 30


def vehicle_groups(data: Mapping[str, Any]) -> list[str]:
    """A vehicle's groups: its `group` (text) and its `groups` (a list of text)."""
    groups = [data["group"]] if isinstance(data.get("group"), str) else []
    listed = data.get("groups")
    if isinstance(listed, list):
        groups += [g for g in listed if isinstance(g, str)]
    return groups


@dataclass(frozen=True, slots=True)
class PlanView:
    id: str
    name: str
    every_km: float
    outlook: Outlook


@dataclass(frozen=True, slots=True)
class VehicleFleetView:
    odometer_km: float | None
    fixes: list[Doc]  # newest last
    fences: list[Doc]  # the geofence documents that apply to the vehicle
    inside: dict[str, bool | None]  # fence id → inside (None: not known yet)
    plans: list[PlanView]


class FleetOverview:
    def __init__(
        self,
        store: Store,
        rules: FleetRules,
        clock: Any = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._rules = rules
        self._clock = clock

    async def vehicle(self, tenant: str, vehicle: Doc) -> VehicleFleetView:
        """`vehicle`: the stored vehicle entity."""
        vehicle_id, data = str(vehicle["_id"]), vehicle["data"]
        plate, groups = str(data.get("plate") or ""), vehicle_groups(data)
        fleet = await self._store.positions.fleet(tenant, vehicle_id) or {}
        state = fleet.get("state") or {}
        odometer = data.get("odometer_km")
        if odometer is None and fleet.get("state"):
            odometer = state.get("odometer_km")
        fixes = await self._store.positions.latest(tenant, vehicle_id, RECENT_FIXES)
        rules = await self._rules.for_tenant(tenant)
        ids = {f.id for f in rules.geofences if f.applies_to(plate, groups)}
        fences = [
            d for d in await self._store.fleet_rules.geofences.all(tenant) if str(d["_id"]) in ids
        ]
        inside = {fid: (state.get("fences") or {}).get(fid, {}).get("inside") for fid in ids}
        plans = []
        for plan in rules.plans:
            if not plan.applies_to(plate, groups):
                continue
            stored = (state.get("plans") or {}).get(plan.id)
            plan_state = None if stored is None else PlanState.from_doc(stored)
            km = float(odometer) if isinstance(odometer, int | float) else 0.0
            plans.append(
                PlanView(
                    plan.id, plan.name, plan.every_km, outlook(plan, plan_state, km, self._clock())
                )
            )
        return VehicleFleetView(
            odometer_km=float(odometer) if isinstance(odometer, int | float) else None,
            fixes=list(reversed(fixes)),
            fences=fences,
            inside=inside,
            plans=plans,
        )

    async def recent_tracks(
        self, tenant: str, vehicles: Sequence[Doc]
    ) -> list[tuple[str, list[Doc]]]:
        """(plate, recent fixes oldest first) of up to TRACKED_VEHICLES vehicles that have any."""
        tracks = []
        for vehicle in vehicles[:TRACKED_VEHICLES]:
            fixes = await self._store.positions.latest(tenant, str(vehicle["_id"]), RECENT_FIXES)
            if fixes:
                tracks.append((str(vehicle["data"].get("plate") or ""), list(reversed(fixes))))
        return tracks
