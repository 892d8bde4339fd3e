"""The entity schemas as the mapping compiler sees them: `TenantCatalog`, apart from the
service so that `gateway mapping validate|test` checks a file without the database layer."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.schemas.compiled import CompiledSchema
from gateway.schemas.registry import SchemaRegistry


class TenantCatalog:
    """The entity schemas as the mapping compiler's FieldCatalog, with a tenant's custom kinds
    of `other`; it notes the custom kinds it was asked about but does not know yet."""

    def __init__(self, schemas: SchemaRegistry, custom: Mapping[str, CompiledSchema]) -> None:
        self._schemas = schemas
        self._custom = custom
        self.unknown: set[str] = set()

    def has_field(self, entity_type: str, path: str, *, kind: str | None = None) -> bool:
        if entity_type != "other" or kind is None or kind in self._schemas.builtin_kinds:
            return self._schemas.has_field(entity_type, path, kind=kind)
        schema = self._custom.get(kind)
        if schema is None:
            self.unknown.add(kind)
            return True
        return self._schemas.has_field(entity_type, path, kind_schema=schema)
