"""What the rest of the gateway asks of a tenant's mapping files: a compiled mapping, the
active version by name or a given version. `MappingService` (service.py) answers it; the
trigger pipeline, the proxy, the delivery worker and the dry run depend on this protocol."""

from __future__ import annotations

from typing import Protocol

from gateway.mapping import CompiledMapping


class MappingSource(Protocol):
    async def active(self, tenant: str, name: str) -> CompiledMapping:
        """The active version of `name`; NotFound when there is none."""
        ...

    async def compiled(self, tenant: str, name: str, version: int) -> CompiledMapping: ...

    async def compile(
        self, tenant: str, text: str | bytes, *, filename: str | None = None
    ) -> CompiledMapping:
        """A draft compiled against the tenant's entity fields, not stored."""
        ...
