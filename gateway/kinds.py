"""Use case: tenants' custom kinds of `other` entities (fines and checklists are built in)."""

from __future__ import annotations

from typing import Any

from gateway.errors import Conflict, FieldProblem, InvalidPayload, NotFound
from gateway.formats.json_tree import is_text
from gateway.schemas.compiled import CompiledSchema
from gateway.schemas.registry import SchemaRegistry
from gateway.store import Doc, Store

MAX_CHECKED = 5_000
"""Stored entities a schema replacement checks (the oldest first): a kind with more is
checked on its first 5,000, so a replacement answers in about a second whatever its size."""
_SHOWN = 5  # stranded entities a refusal lists, each with its first problems


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

    async def replace(
        self, tenant: str, name: str, body: dict[str, Any], author: str, *, force: bool = False
    ) -> Doc:
        """Replace the kind's schema; Conflict, unless `force`, when stored entities of the
        kind do not validate against it (`check_stored`)."""
        _, schema = self._parse({"name": name, "schema": body.get("schema")})
        if not force:
            await self.check_stored(tenant, name, self._schemas.compile_kind(name, schema))
        doc = await self._store.kinds.replace_schema(tenant, name, schema, author)
        if doc is None:
            raise NotFound(f"no kind {name!r}")
        return doc

    async def get(self, tenant: str, name: str) -> Doc:
        doc = await self._store.kinds.get(tenant, name)
        if doc is None:
            raise NotFound(f"no kind {name!r}")
        return doc

    async def find(
        self, tenant: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Doc]:
        return await self._store.kinds.find(tenant, after=after, limit=limit)

    async def delete(self, tenant: str, name: str) -> None:
        if not await self._store.kinds.delete(tenant, name):
            raise NotFound(f"no kind {name!r}")

    async def check_stored(self, tenant: str, name: str, schema: CompiledSchema) -> None:
        """Conflict when stored entities of kind `name` (the first MAX_CHECKED) do not
        validate against `schema`: once it replaced theirs, every write to one of them would
        be refused, naming fields its writer never sent. The refusal counts them and lists a
        few, each with its problems."""
        stranded: list[dict[str, Any]] = []
        count = checked = 0
        after: str | None = None
        while checked < MAX_CHECKED:
            limit = min(500, MAX_CHECKED - checked)
            docs = await self._store.entities.find(
                tenant, "other", {"kind": name}, after=after, limit=limit
            )
            for doc in docs:
                problems = self._schemas.validate("other", doc["data"], kind_schema=schema)
                if problems:
                    count += 1
                    if len(stranded) < _SHOWN:
                        stranded.append(_stranded(doc, problems))
            checked += len(docs)
            if len(docs) < limit:
                break
            after = str(docs[-1]["_id"])
        if not count:
            return
        first = stranded[0]
        raise Conflict(
            f"{count} of the {'first ' if checked == MAX_CHECKED else ''}{checked} stored "
            f"entities of kind {name!r} do not validate against the new schema ({first['key']}:"
            f" {first['errors'][0]['message']}); change them first, or send the PUT with "
            "?force=true to replace it anyway (they stay readable; a write to one must then "
            "make it valid)",
            stranded=count,
            checked=checked,
            entities=stranded,
        )

    def _parse(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The kind's name and schema, compiled; InvalidPayload naming every problem (the
        HTTP routes refuse a member they do not know before: web/kinds.py)."""
        name, schema = body.get("name"), body.get("schema")
        if isinstance(name, str) and isinstance(schema, dict):
            self._schemas.compile_kind(name, schema)  # every problem, or InvalidPayload
            return name, schema
        problems = []
        if not is_text(name):
            problems.append(FieldProblem("/name", "name must be a string", "type"))
        if not isinstance(schema, dict):
            message = "schema must be a JSON Schema object"
            problems.append(FieldProblem("/schema", message, "type"))
        raise InvalidPayload("the kind is invalid", problems)


def _stranded(doc: Doc, problems: list[FieldProblem]) -> dict[str, Any]:
    """A stranded entity in a refusal: its id, key and first problems."""
    return {
        "id": str(doc["_id"]),
        "key": doc["data"].get("key"),
        "errors": [p.as_dict() for p in problems[:_SHOWN]],
    }
