"""The `geofences` and `maintenance_plans` collections: a tenant's fleet rules.

Both are `{_id: ObjectId, tenant, name, ..., rev, created_at, updated_at}` with a name unique
per tenant, found by id or by name (`store/notify.py` `NamedResources`). A geofence carries
`kind`, one of `circle` {lat, lon, radius_m} or `polygon` (a GeoJSON Polygon or
MultiPolygon), `vehicles` (plates), `group`, `margin_m`, `dwell_seconds`; a plan `every_km`,
`due_soon_km`, `every_days`, `due_soon_days`, `start_km`, `vehicles`, `group`. The fold
reads a tenant's rules whole (`all`): a tenant has tens of them; creation refuses more than
`MAX_RULES` of a kind (`fleet/rule_service.py`), so the read is bounded without leaving any
rule out.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bson import ObjectId

from gateway.store.client import Collection, Database, Doc, find_by_ids, scoped, translate_errors
from gateway.store.notify import NAME_INDEXES, NamedResources
from gateway.store.turns import Turns

# Rules of one kind a tenant may have: a create past it is refused (`rule_service.py`).
MAX_RULES = 5_000


class RuleResources(NamedResources):
    def __init__(self, collection: Collection, turns: Turns) -> None:
        super().__init__(collection)
        self._turns = turns

    @contextlib.asynccontextmanager
    async def turn(self, tenant: str) -> AsyncIterator[None]:
        """The tenant's changes of these rules one at a time (`store/turns.py`): what a
        change checks against the tenant's limits is still true when it is stored."""
        busy = f"another change of the tenant's {self._c.name} is being saved; retry"
        async with self._turns.of(f"{self._c.name}:{tenant}", busy):
            yield

    async def all(self, tenant: str) -> list[Doc]:
        """Every rule of the tenant, oldest first: all of them, never a silent first part
        (creation keeps them to MAX_RULES; two creates racing past it are read too)."""
        with translate_errors():
            return await self._c.find(scoped(tenant, {})).sort("_id", 1).to_list(None)

    async def versions(self, tenant: str) -> list[Doc]:
        """Every rule of the tenant, oldest first, as `{_id, rev, updated_at}` only: what a
        reader that compiled them before needs to tell which changed (a fence's polygon may
        hold thousands of positions; the fold looks every two seconds)."""
        with translate_errors():
            cursor = self._c.find(scoped(tenant, {}), {"rev": 1, "updated_at": 1})
            return await cursor.sort("_id", 1).to_list(None)

    async def by_ids(self, tenant: str, ids: Sequence[ObjectId]) -> list[Doc]:
        """The tenant's rules of these ids (`ID_BATCH` a query)."""
        return await find_by_ids(self._c, ids, {"tenant": tenant})

    async def sizes(self, tenant: str) -> dict[str, int]:
        """Each rule of the tenant (by id) and the positions of its polygon (0 for a
        circle, a plan): what creation counts against the tenant's limits."""
        with translate_errors():
            cursor = self._c.find(scoped(tenant, {}), {"polygon.type": 1, "polygon.coordinates": 1})
            docs = await cursor.to_list(None)
        return {str(doc["_id"]): polygon_positions(doc.get("polygon")) for doc in docs}


def polygon_positions(polygon: Any) -> int:
    """The positions of a stored (or checked) polygon, all rings (of all the polygons of a
    MultiPolygon): 0 for none."""
    if not isinstance(polygon, dict):
        return 0
    coordinates = polygon.get("coordinates") or ()
    parts = coordinates if polygon.get("type") == "MultiPolygon" else [coordinates]
    return sum(len(ring) for rings in parts for ring in rings)


class PlanResources(RuleResources):
    async def tenants_with_time(self) -> list[str]:
        """The tenants that have a plan with a time interval (`every_days`): system work of
        the fold's clock, across tenants, never reached from a request. It scans the plans
        (a few per tenant), once an hour."""
        with translate_errors():
            docs = await self._c.find({"every_days": {"$gt": 0}}, {"tenant": 1}).to_list(None)
        return sorted({str(doc["tenant"]) for doc in docs})


class FleetRuleStores:
    def __init__(self, db: Database) -> None:
        turns = Turns(db["turns"])
        self.geofences = RuleResources(db["geofences"], turns)
        self.plans = PlanResources(db["maintenance_plans"], turns)
        self._db = db

    async def ensure_indexes(self) -> None:
        with translate_errors():
            await self._db["geofences"].create_indexes(NAME_INDEXES)
            await self._db["maintenance_plans"].create_indexes(NAME_INDEXES)
