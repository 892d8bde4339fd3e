"""Use case: tenants' custom kinds of `other` entities (fines and checklists are built in)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import Conflict, FieldProblem, InvalidPayload, NotFound, StoreUnavailable
from gateway.formats.json_tree import is_text, same_json
from gateway.mapping import load_mapping
from gateway.mapping_files.catalog import TenantCatalog
from gateway.schemas.compiled import CompiledSchema
from gateway.schemas.registry import SchemaRegistry
from gateway.store import Doc, Store, new_id
from gateway.store.kinds import RESTATING

log = logging.getLogger(__name__)

MAX_CHECKED = 5_000
"""Stored entities a schema replacement checks (the oldest first): a kind with more is
checked on its first 5,000, so a replacement answers in about a second whatever its size."""
# The restatement after a replacement (`restate_pending`), in pages of _PAGE entities, at
# most _PAGES_A_PASS of a kind in a pass of the flow runner's housekeeping.
_PAGE = 500
_PAGES_A_PASS = 4
_KINDS_A_PASS = 20

_SHOWN = 5  # stranded entities a refusal lists, each with its first problems
_USERS_NAMED = 50  # a refusal names at most this many triggers, and as many mappings


@dataclass(slots=True)
class _Save:
    """A save under way that names kinds (`KindService.saving`): the kinds it leased."""

    tenant: str
    token: str = field(default_factory=lambda: str(new_id()))
    leased: set[str] = field(default_factory=set)


_SAVE: ContextVar[_Save | None] = ContextVar("kind_save", default=None)


def public_kind(doc: Doc) -> dict[str, Any]:
    return {k: doc[k] for k in ("name", "schema", "author", "created_at", "updated_at")}


class KindService:
    def __init__(self, store: Store, schemas: SchemaRegistry) -> None:
        self._store = store
        self._schemas = schemas

    @contextlib.asynccontextmanager
    async def saving(self, tenant: str) -> AsyncIterator[None]:
        """A save that names kinds (a trigger of one, a mapping version writing one) runs
        inside: every custom kind it reads (`schema_for`, `exists`, `field_test`) is leased
        until the save is over (store/kinds.py `lease`), so that it is neither deleted nor
        its schema replaced between the save's check and its write; once the save is
        stored, the deletion's or the replacement's own check sees it. A kind being deleted
        or replaced meanwhile is a Conflict (try again)."""
        save = _Save(tenant)
        token = _SAVE.set(save)
        try:
            yield
        finally:
            _SAVE.reset(token)
            await self._store.kinds.release(tenant, save.leased, save.token)

    async def _kind(self, tenant: str, kind: str) -> Doc | None:
        """A tenant's kind as stored, leased when read by a save (`saving`)."""
        save = _SAVE.get()
        if save is None or save.tenant != tenant:
            return await self._store.kinds.get(tenant, kind)
        doc = await self._store.kinds.lease(tenant, kind, save.token)
        if doc is not None:
            save.leased.add(kind)
        return doc

    async def schema_for(self, tenant: str, kind: Any) -> CompiledSchema | None:
        """The compiled schema of a tenant's custom kind; None for built-in or unknown kinds
        (the registry then reports an unknown kind). Compiling is cached by content."""
        if not isinstance(kind, str) or kind in self._schemas.builtin_kinds:
            return None
        doc = await self._kind(tenant, kind)
        return None if doc is None else self._schemas.compile_kind(kind, doc["schema"], stored=True)

    async def schema_for_write(self, tenant: str, kind: Any) -> CompiledSchema | None:
        """`schema_for`, to write an entity of the kind: the kind is marked as being written,
        so that it is not deleted under the write (store/kinds.py); Conflict while it is
        being deleted."""
        if not isinstance(kind, str) or kind in self._schemas.builtin_kinds:
            return None
        doc = await self._store.kinds.for_write(tenant, kind)
        return None if doc is None else self._schemas.compile_kind(kind, doc["schema"], stored=True)

    async def exists(self, tenant: str, kind: str) -> bool:
        """Whether `kind` is built in or one of the tenant's."""
        return kind in self._schemas.builtin_kinds or await self._kind(tenant, kind) is not None

    async def field_test(
        self, tenant: str, entity_type: str, kind: str | None
    ) -> Callable[[str], bool]:
        """Whether a dotted path is a field an entity of the type (and, for `other`, the
        kind) can have: `SchemaRegistry.has_field`. A kind the tenant does not have knows its
        envelope only (any other field)."""
        builtin = kind if kind in self._schemas.builtin_kinds else None
        custom = await self.schema_for(tenant, kind) if entity_type == "other" else None

        def has(path: str) -> bool:
            return self._schemas.has_field(entity_type, path, kind=builtin, kind_schema=custom)

        return has

    def unknown(self, kind: str) -> FieldProblem:
        """The problem of a trigger or a mapping naming a kind that does not exist
        (`exists`): every entity it wrote would be refused, "unknown kind"."""
        builtin = ", ".join(self._schemas.builtin_kinds)
        message = f"unknown kind {kind!r}: not built in ({builtin}) nor a tenant kind"
        return FieldProblem("/kind", message, "reference")

    async def create(self, tenant: str, body: dict[str, Any], author: str) -> Doc:
        name, schema = self._parse(body)
        return await self._store.kinds.create(tenant, name, schema, author)

    async def replace(
        self, tenant: str, name: str, body: dict[str, Any], author: str, *, force: bool = False
    ) -> Doc:
        """Replace the kind's schema; Conflict, unless `force`, when an active mapping naming
        the kind does not fit it (`check_mappings`) or stored entities of the kind do not
        validate against it (`check_stored`). Checked with the kind marked as being replaced:
        no trigger or mapping version naming it is saved meanwhile (`saving`). Its stored
        entities are restated in the new schema's form after the answer (`restate_pending`)."""
        _, schema = self._parse({"name": name, "schema": body.get("schema")})
        new = self._schemas.compile_kind(name, schema)

        async def check(current: Doc) -> None:
            old = self._schemas.compile_kind(name, current["schema"], stored=True)
            await self.check_mappings(tenant, name, old, new)
            await self.check_stored(tenant, name, new)

        doc = await self._store.kinds.replace_schema(
            tenant, name, schema, author, None if force else check
        )
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
        """Conflict while a trigger or an active mapping names the kind (every entity it
        wrote would then be refused, "unknown kind", as the partner's fault) or entities of
        it exist (store/kinds.py). The users are looked at with the kind marked as being
        deleted: no trigger or mapping version naming it is saved meanwhile (`saving`)."""

        async def in_use() -> None:
            users = await self.users(tenant, name)
            if users:
                raise Conflict(
                    f"kind {name!r} is used by {_named(users)}: without it, every entity they "
                    "write would be refused; delete them first (or activate versions of the "
                    "mappings that do not name it)",
                    used_by=users,
                )

        if not await self._store.kinds.delete(tenant, name, in_use):
            raise NotFound(f"no kind {name!r}")

    async def users(self, tenant: str, name: str) -> list[dict[str, Any]]:
        """What writes entities of the kind: the tenant's triggers of it, and its mappings
        whose active version names it (at most `_USERS_NAMED` of each). A schedule writes
        through its mapping, which names the schedule's kind (`needs.py`)."""
        triggers = await self._store.triggers.of_kind(tenant, name, limit=_USERS_NAMED)
        found = [{"kind": "trigger", "id": str(d["_id"]), "name": d["name"]} for d in triggers]
        mappings = 0
        async for doc in self._store.mappings.active_of_kind(tenant, name):
            found.append(_mapping_user(doc))
            mappings += 1
            if mappings == _USERS_NAMED:
                break
        return found

    async def check_mappings(
        self, tenant: str, name: str, old: CompiledSchema, new: CompiledSchema
    ) -> None:
        """Conflict when the active version of a mapping naming kind `name` would not fit
        the schema `new` as its upload is checked (a target no longer a field): once `new`
        replaced `old`, every payload it maps to such a field would be refused, blaming the
        partner. A problem the version has with `old` already does not block. Names the
        mappings (`used_by`) and why."""
        refused: list[dict[str, Any]] = []
        why: list[str] = []
        async for doc in self._store.mappings.active_of_kind(tenant, name):
            problems = self._mapping_problems(doc["source"], name, new)
            if problems:
                before = {p.pointer for p in self._mapping_problems(doc["source"], name, old)}
                problems = [p for p in problems if p.pointer not in before]
            if problems:
                refused.append(_mapping_user(doc))
                why += [f"mapping {doc['name']} {p.pointer}: {p.message}" for p in problems]
        if not refused:
            return
        shown = refused[:_USERS_NAMED]
        more = f" and {len(refused) - len(shown)} more" if len(refused) > len(shown) else ""
        raise Conflict(
            f"kind {name!r} is written by {_named(shown)}{more}, whose active version would "
            f"not fit the new schema: {'; '.join(why[:_USERS_NAMED])} (activate versions that "
            "fit it first, or send the PUT with ?force=true to replace it anyway: the mappings "
            "keep running, and a payload they map to such a field is refused)",
            used_by=shown,
        )

    def _mapping_problems(
        self, source: str, name: str, schema: CompiledSchema
    ) -> list[FieldProblem]:
        """The problems of a mapping's text compiled as a stored version, with `schema` as
        kind `name`'s (the other custom kinds it names count as having every field)."""
        try:
            load_mapping(source, catalog=TenantCatalog(self._schemas, {name: schema}), strict=False)
        except InvalidPayload as exc:
            return exc.problems
        return []

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

    async def restate_pending(self) -> int:
        """Store the entities of every replaced kind in the form its new schema normalises
        them to (a field given an identifier format: `529.982.247-25` is `52998224725`,
        `ped-1234` `PED1234`), as a write under the schema would store it: so the kind's
        entities read one spelling, a lookup by the normalised value finds them, and their
        next write does not report the normalisation as a change nobody made. No event (the
        values mean the same); an entity written meanwhile was written under the new schema.

        Run by the flow runner's housekeeping, never inside the replacing request (one
        guarded update an entity: minutes for a large kind): a few pages of each kind a pass,
        the kind's `restating_from` (store/kinds.py) moved on after each page, so a restart
        goes on from the last page recorded, and a page done twice changes nothing. Returns
        how many entities were restated."""
        restated = 0
        for kind in await self._store.kinds.restating(_KINDS_A_PASS):
            try:
                restated += await self._restate_some(kind)
            except StoreUnavailable:
                raise
            except Exception:  # one kind's failure holds back no other's
                log.exception("restating the entities of kind %r failed; retrying", kind["name"])
        return restated

    async def _restate_some(self, kind: Doc) -> int:
        tenant, name = kind["tenant"], kind["name"]
        schema = self._schemas.compile_kind(name, kind["schema"], stored=True)
        restated = 0
        for _ in range(_PAGES_A_PASS):
            after = kind[RESTATING] or None
            docs = await self._store.entities.find(
                tenant, "other", {"kind": name}, after=after, limit=_PAGE
            )
            for doc in docs:
                data = self._schemas.normalize("other", doc["data"], kind_schema=schema)
                if not same_json(data, doc["data"]):
                    restated += await self._store.entities.restate(tenant, doc, data)
            last = str(docs[-1]["_id"]) if len(docs) == _PAGE else None
            if not await self._store.kinds.restated_to(kind, last) or last is None:
                break  # done, or the kind changed (replaced again: it starts over)
            kind = {**kind, RESTATING: last}
        return restated

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


def _mapping_user(doc: Doc) -> dict[str, Any]:
    return {"kind": "mapping", "name": doc["name"], "version": doc["version"]}


def _named(users: list[dict[str, Any]]) -> str:
    return ", ".join(f"{u['kind']} {u['name']}" for u in users)


def _stranded(doc: Doc, problems: list[FieldProblem]) -> dict[str, Any]:
    """A stranded entity in a refusal: its id, key and first problems."""
    return {
        "id": str(doc["_id"]),
        "key": doc["data"].get("key"),
        "errors": [p.as_dict() for p in problems[:_SHOWN]],
    }
