"""Use case: what the admin pages show of the fleet: the vehicles' recent tracks, and one
vehicle's odometer, geofences (with the fold's inside/outside state) and maintenance outlook.

Read-only, from what the fold keeps (the vehicle's `fleet` document) and the tenant's rules;
it decides nothing the fold does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.clock import utcnow
from gateway.fleet.maintenance import Outlook, PlanState, outlook
from gateway.fleet.rules import FleetRules, TenantRules
from gateway.formats.unicode_forms import nfc
from gateway.store import Doc, Store

RECENT_FIXES: Final = 100
TRACKED_VEHICLES: Final = 30


def vehicle_groups(data: Mapping[str, Any]) -> list[str]:
    """A vehicle's groups: its `group` (text) and its `groups` (a list of text), in NFC
    (`nfc`): "São Paulo" sent decomposed, as macOS and iOS write it, is the group a person
    typed (`geofences.reaches`)."""
    groups = [data["group"]] if isinstance(data.get("group"), str) else []
    listed = data.get("groups")
    if isinstance(listed, list):
        groups += [g for g in listed if isinstance(g, str)]
    return [nfc(g) for g in groups]


@dataclass(frozen=True, slots=True)
class PlanView:
    id: str
    name: str
    every_km: float | None
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
        clock: Any = utcnow,
    ) -> None:
        self._store = store
        self._rules = rules
        self._clock = clock

    async def vehicle(self, tenant: str, vehicle: Doc) -> VehicleFleetView:
        """`vehicle`: the stored vehicle entity."""
        vehicle_id, data = str(vehicle["_id"]), vehicle["data"]
        plate, groups = str(data.get("plate") or ""), vehicle_groups(data)
        rules = await self._rules.for_tenant(tenant)
        odometer, state, plans = await self._standing(tenant, vehicle, rules)
        fixes = await self._store.positions.latest(tenant, vehicle_id, RECENT_FIXES)
        ids = {f.id for f in rules.geofences if f.applies_to(plate, groups)}
        fences = [
            d for d in await self._store.fleet_rules.geofences.all(tenant) if str(d["_id"]) in ids
        ]
        inside = {fid: (state.get("fences") or {}).get(fid, {}).get("inside") for fid in ids}
        return VehicleFleetView(
            odometer_km=odometer,
            fixes=list(reversed(fixes)),
            fences=fences,
            inside=inside,
            plans=plans,
        )

    async def plan_outlooks(
        self, tenant: str, plans: Collection[str]
    ) -> list[tuple[Doc, float | None, list[PlanView]]]:
        """(vehicle, odometer, the outlook of those of `plans` that apply to it) of every
        vehicle of the fleet, in three reads whatever its size: the tenant's rules, its
        vehicles (id, plate, groups, odometer) and their fold states (odometer, and the state
        of `plans` alone); vehicles by id."""
        rules = await self._rules.for_tenant(tenant)
        vehicles = sorted(
            await self._store.entities.vehicle_refs(tenant), key=lambda v: str(v["_id"])
        )
        states = await self._store.fleet.states_of(tenant, [str(v["_id"]) for v in vehicles], plans)
        found = []
        for vehicle in vehicles:
            fleet = states.get(str(vehicle["_id"])) or {}
            odometer, _, views = self._outlook(vehicle, fleet, rules, plans)
            found.append((vehicle, odometer, views))
        return found

    async def fences(self, tenant: str) -> list[Doc]:
        """Every geofence of the tenant, as the fold reads them (all of them)."""
        return await self._store.fleet_rules.geofences.all(tenant)

    async def vehicles(self, tenant: str) -> list[Doc]:
        """Every vehicle of the fleet (id, plate, groups, odometer), by id, in one read."""
        refs = await self._store.entities.vehicle_refs(tenant)
        return sorted(refs, key=lambda v: str(v["_id"]))

    async def _standing(
        self, tenant: str, vehicle: Doc, rules: TenantRules
    ) -> tuple[float | None, Doc, list[PlanView]]:
        """The vehicle's odometer, its fold state and the outlook of its plans."""
        fleet = await self._store.fleet.state(tenant, str(vehicle["_id"])) or {}
        return self._outlook(vehicle, fleet, rules)

    def _outlook(
        self, vehicle: Doc, fleet: Doc, rules: TenantRules, only: Collection[str] | None = None
    ) -> tuple[float | None, Doc, list[PlanView]]:
        """The vehicle's odometer (its own, else the fold's), its fold state (from its
        `fleet` document) and the outlook of the plans that apply to it (of `only`, if given)."""
        data = vehicle.get("data") or {}
        plate, groups = str(data.get("plate") or ""), vehicle_groups(data)
        state = fleet.get("state") or {}
        found = data.get("odometer_km")
        if found is None and "odometer_km" in state:  # the fold's, as it shows it (`shown_km`)
            found = max(float(state["odometer_km"] or 0), float(state.get("held_km") or 0))
        odometer = float(found) if isinstance(found, int | float) else None
        now, km = self._clock(), odometer or 0.0
        plans = []
        for plan in rules.plans:
            if (only is None or plan.id in only) and plan.applies_to(plate, groups):
                stored = (state.get("plans") or {}).get(plan.id)
                plan_state = None if stored is None else PlanState.from_doc(stored)
                view = outlook(plan, plan_state, km, now)
                plans.append(PlanView(plan.id, plan.name, plan.every_km, view))
        return odometer, state, plans

    async def recent_tracks(
        self, tenant: str, vehicles: Sequence[Doc]
    ) -> list[tuple[str, list[Doc]]]:
        """(plate, recent fixes oldest first) of up to TRACKED_VEHICLES vehicles that have any."""
        looked = vehicles[:TRACKED_VEHICLES]
        found = await asyncio.gather(
            *(self._store.positions.latest(tenant, str(v["_id"]), RECENT_FIXES) for v in looked)
        )
        return [
            (str((vehicle.get("data") or {}).get("plate") or ""), list(reversed(fixes)))
            for vehicle, fixes in zip(looked, found, strict=True)
            if fixes
        ]
