"""The `fleet_settings` collection: one document per tenant, `{_id: tenant, tenant, quality,
odometer, retention_days, updated_at}` (the fold's quality gates and odometer rules)."""

from __future__ import annotations

from gateway.clock import utcnow
from gateway.store.client import Collection, Doc, translate_errors


class FleetSettingsStore:
    def __init__(self, collection: Collection) -> None:
        self._c = collection

    async def get(self, tenant: str) -> Doc | None:
        with translate_errors():
            return await self._c.find_one({"_id": tenant, "tenant": tenant})

    async def put(self, tenant: str, fields: Doc) -> None:
        doc = {**fields, "tenant": tenant, "updated_at": utcnow()}
        with translate_errors():
            await self._c.replace_one({"_id": tenant, "tenant": tenant}, doc, upsert=True)

    async def shorter_retention(self, days: int) -> list[Doc]:
        """Tenants that keep their positions fewer than `days` days."""
        with translate_errors():
            cursor = self._c.find({"retention_days": {"$lt": days}}, {"retention_days": 1})
            return await cursor.to_list(None)
