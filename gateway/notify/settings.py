"""Use case: a tenant's notification settings (cooldown, quiet hours; see `policy.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.clock import utcnow
from gateway.notify.policy import NotifySettings, parse_settings
from gateway.store.deliveries import DeliveryStore
from gateway.store.notify import SettingsStore


class SettingsService:
    def __init__(self, store: SettingsStore, deliveries: DeliveryStore) -> None:
        self._store = store
        self._deliveries = deliveries

    async def get(self, tenant: str) -> NotifySettings:
        return (await self.read(tenant))[0]

    async def read(self, tenant: str) -> tuple[NotifySettings, int]:
        """The settings and their revision (0: never saved; each save adds one)."""
        doc = await self._store.get(tenant)
        if doc is None:
            return NotifySettings(), 0
        return parse_settings(doc["settings"]), int(doc.get("rev", 0))

    async def revision(self, tenant: str) -> int:
        doc = await self._store.get(tenant)
        return 0 if doc is None else int(doc.get("rev", 0))

    async def put(self, tenant: str, body: Mapping[str, Any], author: str) -> NotifySettings:
        """Quiet hours are applied at send time: what the old ones held (to their end, up to
        a night away) is due at once, and the delivery worker judges it again under these
        (sent, held to the new end, or suppressed). Done on every save, so that a save
        whose release failed (503) is done again by saving again."""
        settings = parse_settings(body)
        now = utcnow()
        await self._store.put(
            tenant, {"settings": settings.as_dict(), "author": author, "updated_at": now}
        )
        await self._deliveries.release_quiet_held(tenant, now)
        return settings
