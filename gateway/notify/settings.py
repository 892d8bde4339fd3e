"""Use case: a tenant's notification settings (cooldown, quiet hours; see `policy.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.notify.policy import NotifySettings, parse_settings
from gateway.store.notify import SettingsStore


class SettingsService:
    def __init__(self, store: SettingsStore) -> None:
        self._store = store

    async def get(self, tenant: str) -> NotifySettings:
        doc = await self._store.get(tenant)
        return NotifySettings() if doc is None else parse_settings(doc["settings"])

    async def put(self, tenant: str, body: Mapping[str, Any], author: str) -> NotifySettings:
        settings = parse_settings(body)
        await self._store.put(
            tenant,
            {"settings": settings.as_dict(), "author": author, "updated_at": datetime.now(UTC)},
        )
        return settings
