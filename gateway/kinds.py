"""Use case: tenants' custom kinds of `other` entities (fines and checklists are built in)."""

from __future__ import annotations

from typing import Any

from gateway.errors import FieldProblem, InvalidPayload, NotFound
from gateway.schemas.compiled import CompiledSchema
from gateway.schemas.registry import SchemaRegistry
from gateway.store import Doc, Store


def public_kind(doc: Doc) -> dict[str, Any]:
    return {k: doc[k] for k in ("name", "schema", "author", "created_at", "updated_at")}


class KindService:
    def __init__(self, store: Store, schemas: SchemaRegistry) -> None:
        self._store = store
        self._schemas = schemas

    async def schema_for(self, tenant: str, kind: Any) -> CompiledSchema | None:
        """The compiled schema of a tenant's custom kind; None for built-in or unknown kinds
        (the registry then reports an unknown kind). Compiling is cached by content."""
        if not isinstance(kind, str) or kind in self._schemas.builtin_kinds:
            return None
        doc = await self._store.kinds.get(tenant, kind)
        return None if doc is None else self._schemas.compile_kind(kind, doc["schema"], stored=True)

    async def schema_for_write(self, tenant: str, kind: Any) -> CompiledSchema | None:
        """`schema_for`, to write an entity of the kind: the kind is marked as being written,
        so that it is not deleted under the write (store/kinds.py); Conflict while it is
        being deleted."""
        if not isinstance(kind, str) or kind in self._schemas.builtin_kinds:
            return None
        doc = await self._store.kinds.for_write(tenant, kind)
        return None if doc is None else self._schemas.compile_kind(kind, doc["schema"], stored=True)

    async def create(self, tenant: str, body: dict[str, Any], author: str) -> Doc:
        name, schema = self._parse(body)
        return await self._store.kinds.create(tenant, name, schema, author)

    async def replace(self, tenant: str, name: str, body: dict[str, Any], author: str) -> Doc:
        _, schema = self._parse({"name": name, "schema": body.get("schema")})
        doc = await self._store.kinds.replace_schema(tenant, name, schema, author)
        if doc is None:
            raise NotFound(f"no kind {name!r}")
        return doc

    async def get(self, tenant: str, name: str) -> Doc:
        doc = await self._store.kinds.get(tenant, name)
        if doc is None:
            raise NotFound(f"no kind {name!r}")
        return doc

    async def find(self, tenant: str) -> list[Doc]:
        return await self._store.kinds.find(tenant)

    async def delete(self, tenant: str, name: str) -> None:
        if not await self._store.kinds.delete(tenant, name):
            raise NotFound(f"no kind {name!r}")

    def _parse(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The kind's name and schema, compiled; InvalidPayload naming every problem (the
        HTTP routes refuse a member they do not know before: web/kinds.py)."""
        name, schema = body.get("name"), body.get("schema")
        if isinstance(name, str) and isinstance(schema, dict):
            self._schemas.compile_kind(name, schema)  # every problem, or InvalidPayload
            return name, schema
        problems = []
        if not isinstance(name, str):
            problems.append(FieldProblem("/name", "name must be a string", "type"))
        if not isinstance(schema, dict):
            message = "schema must be a JSON Schema object"
            problems.append(FieldProblem("/schema", message, "type"))
        raise InvalidPayload("the kind is invalid", problems)
