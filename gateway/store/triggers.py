"""The `triggers` collection: a trigger's configuration, status and credential ids.

A document is `{_id: "trg_...", tenant, name, entity_type, kind, methods, format, mapping,
response_mapping, input_schema_json, rate_limit, max_body_bytes, max_batch_items, expose, charset,
auth: {mode, token_in_query, jwks_url, public_key_pem, algorithms, issuer, audience,
secrets: [{id, sealed, until}]}, tokens: [{id, issued_at, until}], status, version, rev,
created_at, updated_at, name_folded}` (`name_folded`: what the name search reads,
`store/client.py` `name_containing`).

Only token ids (`jti`) are stored, never tokens; webhook secrets are sealed (SecretBox).
`version` changes whenever the compiled configuration would (processes key their compiled
trigger by it); `rev` changes on every write and guards read-modify-write updates.
`mapping` and `response_mapping` sit at the top level: `store/mappings.py` finds a mapping's
users by them.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import Any

from pymongo import ASCENDING, IndexModel

from gateway.store import name_folding
from gateway.store.changes import changed_ids
from gateway.store.client import (
    TRIGGER_CURSOR,
    Collection,
    Doc,
    cursor_text,
    name_containing,
    scoped,
    translate_errors,
    with_folded_name,
)
from gateway.store.turns import UNLIMITED, Limit

INDEXES = [
    IndexModel([("tenant", ASCENDING), ("name", ASCENDING)], unique=True, name="tenant_name"),
    IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="by_tenant"),
]
# What a partner request is admitted on (a process caches it: see triggers/gates.py).
_GATE = {"tenant": 1, "status": 1, "version": 1, "tokens": 1}


class TriggerStore:
    # The tenant's limit on triggers (store/turns.py `TenantLimits`; set by `Store`).
    limit: Limit = UNLIMITED

    def __init__(self, collection: Collection) -> None:
        self._c = collection

    async def how_many(self, tenant: str, *, up_to: int) -> int:
        """How many triggers the tenant has, counted up to `up_to` (what a limit needs)."""
        with translate_errors():
            return await self._c.count_documents(scoped(tenant, {}), limit=up_to)

    async def gate(self, trigger_id: str) -> Doc | None:
        """Status, config version and live token ids of a trigger, for a partner request.

        The one read here not scoped by tenant: a partner knows only the trigger id, which is
        globally unique and unguessable; the tenant it names scopes everything that follows
        (and must equal the tenant inside the caller's token).
        """
        with translate_errors():
            return await self._c.find_one({"_id": trigger_id}, _GATE)

    def changes(self, *, await_ms: int) -> AsyncIterator[list[Any]]:
        """Ids of triggers as they change (`store/changes.py`), for caches to forget them."""
        return changed_ids(self._c, await_ms=await_ms)

    async def insert(self, doc: Doc) -> None:
        """A new trigger of `doc["tenant"]`: a 409 past the tenant's limit."""
        async with self.limit.room(doc["tenant"]):
            with translate_errors(f"a trigger named {doc.get('name')!r} already exists"):
                await self._c.insert_one(with_folded_name(doc))

    async def kept_twin_of(self, tenant: str, name: str, own: Any = None) -> bool:
        """`name_folding.kept_twin_of` on this collection."""
        return await name_folding.kept_twin_of(self._c, tenant, name, own)

    async def get(self, tenant: str, trigger_id: str) -> Doc | None:
        with translate_errors():
            return await self._c.find_one(scoped(tenant, {"_id": trigger_id}))

    async def list(
        self, tenant: str, *, after: str | None, limit: int, name: str | None = None
    ) -> list[Doc]:
        """A page of the tenant's triggers, by id; only those whose name holds `name`."""
        after = cursor_text(after, TRIGGER_CURSOR)
        query = name_containing(name)
        if after is not None:
            query["_id"] = {"$gt": after}
        with translate_errors():
            cursor = self._c.find(scoped(tenant, query))
            return await cursor.sort("_id", ASCENDING).limit(limit).to_list(limit)

    async def of_kind(self, tenant: str, kind: str, *, limit: int) -> builtins.list[Doc]:
        """The tenant's triggers that write and read entities of the custom kind `kind`, by
        id (at most `limit`)."""
        query = scoped(tenant, {"entity_type": "other", "kind": kind})
        with translate_errors():
            cursor = self._c.find(query, {"name": 1}).sort("_id", ASCENDING)
            return await cursor.limit(limit).to_list(limit)

    async def update(
        self, tenant: str, trigger_id: str, rev: int, changes: Doc, *, new_version: bool
    ) -> Doc | None:
        """Apply `changes` if nobody wrote since revision `rev`; the new document, or None."""
        update: dict[str, Any] = {"$set": with_folded_name(changes), "$inc": {"rev": 1}}
        if new_version:
            update["$inc"]["version"] = 1
        # An update then a read by `_id`, each a point lookup: a `find_one_and_update`
        # SecantusDB writes with an operator at its filter's top (every tenant's triggers).
        with translate_errors(f"a trigger named {changes.get('name')!r} already exists"):
            guarded = scoped(tenant, {"_id": trigger_id, "rev": rev})
            if not (await self._c.update_one(guarded, update)).matched_count:
                return None
            found: Doc | None = await self._c.find_one(scoped(tenant, {"_id": trigger_id}))
        return found

    async def delete(self, tenant: str, trigger_id: str) -> bool:
        with translate_errors():
            result = await self._c.delete_one(scoped(tenant, {"_id": trigger_id}))
        if result.deleted_count:
            await self.limit.freed(tenant)
        return result.deleted_count == 1
