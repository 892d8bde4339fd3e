"""The only home of pymongo: one module per collection family, gathered in `Store`."""

from __future__ import annotations

from gateway.store import entities, events
from gateway.store.client import Database, Doc, open_client, translate_errors
from gateway.store.entities import EntityStore
from gateway.store.events import EventStore
from gateway.store.mappings import MappingStore

__all__ = ["Doc", "Store", "open_client"]


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.entities = EntityStore(db["entities"])
        self.events = EventStore(db["events"])
        self.mappings = MappingStore(db)

    async def ensure_indexes(self) -> None:
        """Idempotent: creating an index that exists with the same spec is a no-op."""
        with translate_errors():
            await self.db["entities"].create_indexes(entities.INDEXES)
            await self.db["events"].create_indexes(events.INDEXES)
        await self.mappings.ensure_indexes()

    async def ping(self) -> None:
        with translate_errors():
            await self.db.command("ping")
