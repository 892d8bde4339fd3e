"""Use case: mapping files as versioned, tenant-owned resources, and the compiled mappings
that triggers and actions run.

Every upload is compiled first (an invalid file stores nothing) and becomes a new immutable
version; one version per name is active. `active()` is the hot path of every trigger call:

- compiled mappings are cached in-process by (tenant, name, version): a version is compiled
  once per process and never changes (version numbers are never reused, see
  `store/mappings.py`);
- which version is active is cached for `ACTIVE_TTL_SECONDS`. Activating, rolling back,
  uploading or deleting through this process takes effect here at once; other gateway
  processes see the change within `ACTIVE_TTL_SECONDS`.

The dry run (`POST /api/v1/mappings/test`) is `dry_run.py`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from gateway.entities import EntityService
from gateway.errors import Conflict, InvalidPayload, NotFound
from gateway.kinds import KindService
from gateway.mapping import CompiledMapping, file_text, load_mapping
from gateway.mapping_files.catalog import TenantCatalog
from gateway.mapping_files.dry_run import MappingDryRun
from gateway.mapping_files.needs import NEEDS
from gateway.schemas.compiled import CompiledSchema
from gateway.schemas.registry import SchemaRegistry
from gateway.store import Doc, Store
from gateway.versioned import ShownActive, VersionedDocuments

ACTIVE_TTL_SECONDS = 2.0
"""How long a process trusts its memory of which version is active (see the docstring)."""
_MAX_COMPILED = 2048
_USERS_NAMED = 50  # a 409 names at most this many of the users a version would not fit
_MAX_ACTIVE = 10_000


@dataclass(frozen=True, slots=True)
class MappingVersion:
    name: str
    version: int
    active: bool
    format: str  # "yaml" | "json"
    source: str
    document: dict[str, Any]
    checksum: str
    author: str
    created_at: datetime
    direction: str
    entity_type: str | None
    created: bool = False  # set by upload(): False when the same text was already the latest
    warnings: tuple[str, ...] = ()  # set by upload(): the old names it uses (renamed.py)

    def as_dict(self, *, source: bool = True) -> dict[str, Any]:
        data = {
            "name": self.name,
            "version": self.version,
            "active": self.active,
            "format": self.format,
            "checksum": self.checksum,
            "author": self.author,
            "created_at": self.created_at,
            "direction": self.direction,
            "entity_type": self.entity_type,
        }
        if source:
            data.update(source=self.source, document=self.document)
        return data


@dataclass(frozen=True, slots=True)
class MappingSummary:
    name: str
    active_version: int | None
    latest_version: int
    direction: str
    entity_type: str | None
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "active_version": self.active_version,
            "latest_version": self.latest_version,
            "direction": self.direction,
            "entity_type": self.entity_type,
            "updated_at": self.updated_at,
        }


class MappingService:
    def __init__(
        self, store: Store, schemas: SchemaRegistry, entities: EntityService, kinds: KindService
    ) -> None:
        self._store = store
        self._schemas = schemas
        self._entities = entities
        self._kinds = kinds
        self._compiled: OrderedDict[tuple[str, str, int], CompiledMapping] = OrderedDict()
        self._active: dict[tuple[str, str], tuple[int, float]] = {}
        self._reading: dict[tuple[str, str], asyncio.Future[Doc | None]] = {}
        self._changes = 0  # changes made through this process (`_forget`)
        self._versions = VersionedDocuments(
            store.mappings, "mapping", make=_version, on_change=self._forget, recheck=self._recheck
        )
        # POST /api/v1/mappings/test: a stored mapping or a draft on a sample, nothing written.
        self.dry_run = MappingDryRun(self, store, schemas, entities, kinds)

    # -- the hot path ------------------------------------------------------------------------

    async def active(self, tenant: str, name: str) -> CompiledMapping:
        """The compiled active version of `name`; NotFound if there is none."""
        version = self._cached_active(tenant, name)
        if version is None:
            version = await self._read_active(tenant, name)
        return await self.compiled(tenant, name, version)

    async def _read_active(self, tenant: str, name: str) -> int:
        """The active version from the database: one read for every caller that missed the
        cache meanwhile (under load, every request in flight when it expired), remembered
        unless this process changed the mapping while it was read."""
        key = (tenant, name)
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._store.mappings.head(tenant, name))
            self._reading[key] = reading
            changes = self._changes
            reading.add_done_callback(lambda done: self._remember(key, done, changes))
        head = await asyncio.shield(reading)
        if head is None:
            raise NotFound(f"no mapping {name!r}")
        if head.get("active_version") is None:
            raise NotFound(f"mapping {name!r} has no active version")
        return int(head["active_version"])

    def _remember(
        self, key: tuple[str, str], read: asyncio.Future[Doc | None], changes: int
    ) -> None:
        if self._reading.get(key) is read:
            del self._reading[key]
        if read.cancelled() or read.exception() is not None or changes != self._changes:
            return
        head = read.result()
        if head is None or head.get("active_version") is None:
            return
        if len(self._active) >= _MAX_ACTIVE:
            self._active.clear()
        version = int(head["active_version"])
        self._active[key] = (version, time.monotonic() + ACTIVE_TTL_SECONDS)

    async def compiled(self, tenant: str, name: str, version: int) -> CompiledMapping:
        """One version, compiled (once per process)."""
        key = (tenant, name, version)
        mapping = self._compiled.get(key)
        if mapping is not None:
            self._compiled.move_to_end(key)
            return mapping
        doc = await self._versions.version_doc(tenant, name, version)
        # Checked against the entity schemas when uploaded; running it needs no catalog (and
        # a stored version keeps running even if a custom kind's schema changed since, or a
        # rule for new texts came after it was stored: not strict).
        mapping = load_mapping(doc["source"], strict=False)
        self._keep(key, mapping)
        return mapping

    async def compile(
        self, tenant: str, text: str | bytes, *, filename: str | None = None
    ) -> CompiledMapping:
        """Compile a mapping file against the entity schemas (and the tenant's custom kinds);
        InvalidPayload lists every problem with its pointer and line."""
        catalog = TenantCatalog(self._schemas, {})
        mapping = load_mapping(text, catalog=catalog, filename=filename)
        if not catalog.unknown:
            return mapping
        custom: dict[str, CompiledSchema] = {}
        for kind in sorted(catalog.unknown):
            schema = await self._kinds.schema_for(tenant, kind)
            if schema is None:
                problem = self._kinds.unknown(kind)
                raise InvalidPayload(problem.message, [problem])
            custom[kind] = schema
        return load_mapping(text, catalog=TenantCatalog(self._schemas, custom), filename=filename)

    async def _recheck(self, tenant: str, doc: Doc) -> None:
        """A stored version meets today's rules before it is activated (by version or by a
        roll back): one stored before a rule (a reserved target, the work limit) or naming a
        kind or field gone since is refused, naming its problems, and nothing changes."""
        try:
            mapping = await self.compile(tenant, doc["source"])
        except InvalidPayload as exc:
            named = [f"{p.pointer or '/'}: {p.message}" for p in exc.problems[:3]]
            if (others := len(exc.problems) + exc.omitted - 3) > 0:
                named.append(f"{others} more")
            detail = f"version {doc['version']} of mapping {doc['name']!r} cannot be activated"
            detail += f" under today's rules: {'; '.join(named) or exc.detail}"
            raise exc.restated(detail) from None
        await self._keeps_its_users(tenant, doc["name"], mapping)
        self._keep((tenant, doc["name"], doc["version"]), mapping)

    async def _keeps_its_users(self, tenant: str, name: str, mapping: CompiledMapping) -> None:
        """A version about to become active must still fit each trigger, action and schedule
        that names the mapping as that user's own save check has it (`needs.py`: a trigger on
        a driver mapping is refused): Conflict naming the users it would not fit and why. A
        problem a user has with the active version already (saved before a rule, at the same
        pointer) does not block it; a version stored without activating it is not checked."""
        head = await self._store.mappings.head(tenant, name)
        current: CompiledMapping | None = None
        if head is not None and head.get("active_version") is not None:
            try:
                current = await self.compiled(tenant, name, int(head["active_version"]))
            except InvalidPayload:  # stored before today's rules: its users fail already
                return
        refused, why = [], []
        async for user, doc in self._store.mappings.users_with_documents(tenant, name):
            needs = NEEDS[user["kind"]]
            for field in user["fields"]:
                problems = needs(mapping, field, doc)
                if current is not None:  # what fails with the active version fails already
                    before = {p.pointer for p in needs(current, field, doc)}
                    problems = [p for p in problems if p.pointer not in before]
                if not problems:
                    continue
                refused.append(user)
                who = f"{user['kind']} {user['name'] or user['id']}"
                why += [f"{who} {p.pointer}: {p.message}" for p in problems]
                break
        if refused:
            shown = refused[:_USERS_NAMED]
            named = ", ".join(f"{u['kind']} {u['name'] or u['id']}" for u in shown)
            if len(refused) > len(shown):
                named += f" and {len(refused) - len(shown)} more"
            raise Conflict(
                f"mapping {name!r} is used by {named}, which would refuse this version as "
                f"active: {'; '.join(why[:_USERS_NAMED])} (change them first, or use another "
                "name; a version stored with activate=false waits for that)",
                used_by=shown,
            )

    def _keep(self, key: tuple[str, str, int], mapping: CompiledMapping) -> None:
        """A compiled version into the cache, the oldest going past `_MAX_COMPILED`."""
        self._compiled[key] = mapping
        if len(self._compiled) > _MAX_COMPILED:
            self._compiled.popitem(last=False)

    def _cached_active(self, tenant: str, name: str) -> int | None:
        hit = self._active.get((tenant, name))
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def _forget(self, tenant: str, name: str) -> None:
        self._active.pop((tenant, name), None)
        self._reading.pop((tenant, name), None)  # a read under way may predate the change
        self._changes += 1

    # -- versions ----------------------------------------------------------------------------

    async def upload(
        self,
        tenant: str,
        text: str | bytes,
        *,
        author: str,
        activate: bool = True,
        filename: str | None = None,
    ) -> MappingVersion:
        """Store a new version (active unless `activate=False`). Uploading the same text as
        the latest version returns that version instead of a duplicate (and activates it
        when asked). The kinds it names are neither deleted nor their schemas replaced
        between its check and its save (`KindService.saving`)."""
        async with self._kinds.saving(tenant):
            mapping = await self.compile(tenant, text, filename=filename)
            name = mapping.name
            if activate:
                await self._keeps_its_users(tenant, name, mapping)
            source = text if isinstance(text, str) else file_text(text)  # as compiled
            fields = {
                "format": _format(source),
                "document": mapping.source,
                "direction": mapping.direction,
                "entity_type": mapping.entity_type,
            }
            version, created = await self._versions.add(
                tenant,
                name,
                source,
                fields,
                author=author,
                activate=activate,
                direction=mapping.direction,
                entity_type=mapping.entity_type,
            )
        if created:
            self._compiled[(tenant, name, version)] = mapping
        stored = await self.get(tenant, name, version)
        return replace(stored, created=created, warnings=mapping.deprecated)

    async def get(self, tenant: str, name: str, version: int | None = None) -> MappingVersion:
        """One version; the active one by default."""
        return await self._versions.get(tenant, name, version)

    async def versions(self, tenant: str, name: str) -> list[MappingVersion]:
        return await self._versions.versions(tenant, name)

    async def find(self, tenant: str, *, after: str | None, limit: int) -> list[MappingSummary]:
        heads = await self._store.mappings.heads(tenant, after=after, limit=limit)
        return [
            MappingSummary(
                h["name"],
                h.get("active_version"),
                h["latest_version"],
                h["direction"],
                h.get("entity_type"),
                h["updated_at"],
            )
            for h in heads
        ]

    async def activate(
        self, tenant: str, name: str, version: int, *, shown: ShownActive | None = None
    ) -> MappingVersion:
        """Activate a version (checked again: `_recheck`; the kinds it names kept as checked
        until it is active, `KindService.saving`)."""
        async with self._kinds.saving(tenant):
            return await self._versions.activate(tenant, name, version, shown=shown)

    async def rollback(
        self, tenant: str, name: str, *, shown: ShownActive | None = None
    ) -> MappingVersion:
        """Activate the version before the active one (as `activate`)."""
        async with self._kinds.saving(tenant):
            return await self._versions.rollback(tenant, name, shown=shown)

    async def diff(self, tenant: str, name: str, v1: int, v2: int) -> dict[str, Any]:
        return await self._versions.diff(tenant, name, v1, v2)

    async def delete(self, tenant: str, name: str) -> None:
        """Delete every version; refused (409, naming them) while a trigger or action uses
        the mapping."""
        await self._versions.head_to_delete(tenant, name)
        users = await self._store.mappings.users(tenant, name)
        if users:
            named = ", ".join(f"{u['kind']} {u['name'] or u['id']}" for u in users)
            raise Conflict(f"mapping {name!r} is used by {named}", used_by=users)
        await self._store.mappings.delete(tenant, name)
        self._forget(tenant, name)

    async def used_by(self, tenant: str, name: str) -> list[dict[str, Any]]:
        return await self._store.mappings.users(tenant, name)


def _format(source: str) -> str:
    text = source.lstrip()
    if text.startswith("{"):
        try:
            json.loads(text)
        except ValueError:
            return "yaml"
        return "json"
    return "yaml"


def _version(doc: Doc, active: Any) -> MappingVersion:
    return MappingVersion(
        name=doc["name"],
        version=doc["version"],
        active=doc["version"] == active,
        format=doc["format"],
        source=doc["source"],
        document=doc["document"],
        checksum=doc["checksum"],
        author=doc["author"],
        created_at=doc["created_at"],
        direction=doc["direction"],
        entity_type=doc.get("entity_type"),
    )
