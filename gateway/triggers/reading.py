"""Use case: a partner reads through a trigger (`GET /hooks/{id}[/{key}]`).

What a partner sees of an entity: its public fields, cut to the trigger's `expose` list when
it has one, then reshaped by the trigger's response mapping (an outbound mapping whose
`body` is built from the context `{"entity": ..., "trigger": {"id": ...}}`). Fields outside
`expose` never reach the mapping, so they cannot be returned. An entity the mapping cannot
shape (a required field it lacks) is a 422 naming it when read alone, and a problem entry in
its place on a page: one such entity does not cost the partner the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.entities import EntityService, public
from gateway.errors import BadRequest, GatewayError, InvalidPayload, NotFound
from gateway.formats.json_tree import plain
from gateway.mapping import CompiledMapping
from gateway.mapping_files.source import MappingSource
from gateway.paging import page, page_params, refuse_repeated
from gateway.schemas.registry import reference_field
from gateway.store import Doc
from gateway.store.entities import MEMBERS
from gateway.triggers.compiled import CompiledTrigger


class Reader:
    def __init__(self, entities: EntityService, mappings: MappingSource) -> None:
        self._entities = entities
        self._mappings = mappings

    async def read(
        self, trigger: CompiledTrigger, ref: str | None, query: Mapping[str, str]
    ) -> Any:
        mapping = await self._response_mapping(trigger)
        if ref is not None:
            return self._shape(trigger, mapping, await self._one(trigger, ref))
        limit, cursor, filters = self._params(trigger, query)
        docs = await self._entities.find(
            trigger.tenant, trigger.entity_type, filters, after=cursor, limit=limit
        )
        items = [self._shape_listed(trigger, mapping, doc) for doc in docs]
        return page(items, limit, str(docs[-1]["_id"]) if docs else None)

    def _shape_listed(
        self, trigger: CompiledTrigger, mapping: CompiledMapping | None, doc: Doc
    ) -> Any:
        """An entity of a page, or `{"id", "problem"}` in its place when it cannot be shaped."""
        try:
            return self._shape(trigger, mapping, doc)
        except InvalidPayload as exc:
            return {"id": str(doc["_id"]), "problem": exc.problem()}

    async def _one(self, trigger: CompiledTrigger, ref: str) -> Doc:
        """For a kind's trigger, `ref` is first the key within the kind, whatever it holds (a
        POST answered `"key": "ORD:123"`, or a key that is another entity's id), then an id
        or `kind:key`; the entity found must be of the kind."""
        etype = trigger.entity_type
        if trigger.kind is None:
            return await self._entities.get(trigger.tenant, etype, ref)
        try:
            doc = await self._entities.get(trigger.tenant, etype, f"{trigger.kind}:{ref}")
        except NotFound:
            doc = await self._entities.get(trigger.tenant, etype, ref)
        if doc["data"].get("kind") != trigger.kind:
            raise NotFound(f"no {etype} {ref!r}")
        return doc

    def _params(
        self, trigger: CompiledTrigger, query: Mapping[str, str]
    ) -> tuple[int, str | None, dict[str, str]]:
        ignore = (trigger.token_param,) if trigger.token_param else ()
        filters = self._entities.filters(trigger.entity_type, query, ignore=ignore)
        refuse_repeated(query)  # a filter is named by `filters`, paging by this
        limit, cursor = page_params(query)
        if trigger.expose is not None:
            _check_exposed(trigger.entity_type, filters, trigger.expose)
        if trigger.kind is not None:
            filters["kind"] = trigger.kind
        return limit, cursor, filters

    async def _response_mapping(self, trigger: CompiledTrigger) -> CompiledMapping | None:
        if trigger.response_mapping is None:
            return None
        try:
            return await self._mappings.active(trigger.tenant, trigger.response_mapping)
        except NotFound as exc:
            raise GatewayError(
                f"this trigger's response mapping is unavailable: {exc.detail}"
            ) from None

    def _shape(self, trigger: CompiledTrigger, mapping: CompiledMapping | None, doc: Doc) -> Any:
        entity = public(doc)
        if trigger.expose is not None:
            entity = {"id": entity["id"], **pick(entity, trigger.expose)}
        if mapping is None:
            return entity
        try:
            context = {"entity": plain(entity), "trigger": {"id": trigger.id}}
            body = mapping.build_request(context).body
        except InvalidPayload as exc:
            raise InvalidPayload(
                f"this trigger's response mapping cannot shape {trigger.entity_type} "
                f"{entity['id']}: {exc.detail}",
                exc.problems,
                entity=entity["id"],
            ) from None
        return {} if body is None else body


def _check_exposed(etype: str, filters: Mapping[str, str], expose: Sequence[str]) -> None:
    """A filter is a question about the fields it reads: on a field the trigger does not
    expose, which entities answer would tell the partner its value (`?group=diretoria`,
    `?status=inactive` one value at a time). A vehicle's `?group=` reads its `groups` too
    (store/entities.py `MEMBERS`), so it needs both exposed. The natural key is the lookup
    key (`/hooks/{id}/{key}`), a filter whatever `expose` says."""

    def exposed(name: str) -> bool:
        return any(path == name or path.startswith(name + ".") for path in expose)

    members = MEMBERS.get(etype, {})
    hidden: dict[str, list[str]] = {}
    for name in sorted(filters):
        read = [name, members[name]] if name in members else [name]
        unseen = [field for field in read if not exposed(field)]
        if unseen and name != reference_field(etype):
            hidden[name] = unseen
    if hidden:
        fields = [field for unseen in hidden.values() for field in unseen]
        also = [f"?{name}= reads {members[name]} too" for name in hidden if name in members]
        raise BadRequest(
            f"cannot filter by {', '.join(hidden)}: this trigger does not expose "
            f"{', '.join(fields)}" + (f" ({'; '.join(also)})" if also else "")
        )


def pick(document: Mapping[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """Only the dotted `paths` of `document`, nested as they were."""
    out: dict[str, Any] = {}
    for path in paths:
        *parents, leaf = path.split(".")
        source: Any = document
        for part in parents:
            source = source.get(part) if isinstance(source, Mapping) else None
        if not isinstance(source, Mapping) or leaf not in source:
            continue
        target = out
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = source[leaf]
    return out
