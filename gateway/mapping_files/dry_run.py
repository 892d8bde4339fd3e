"""Use case: the dry run of a mapping (`POST /api/v1/mappings/test`): a stored version or a
draft run on a sample, showing what a trigger or an action would do; nothing is written."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from gateway.clock import utcnow
from gateway.entities import (
    EntityService,
    announced_events,
    diff,
    forward_only,
    keyed_as_stored,
    merged_write,
    refuse_handover,
    repeated_targets,
    same_entity_refusal,
)
from gateway.errors import FieldProblem, InvalidPayload, SharedListing
from gateway.eventloop import Turns
from gateway.kinds import KindService
from gateway.mapping import (
    CompiledMapping,
    DecodedTexts,
    MappedDocument,
    MappedTarget,
    announces,
    read_sample,
)
from gateway.mapping.fixes import parse_mapped_fix
from gateway.mapping_files.source import MappingSource
from gateway.schemas.registry import SchemaRegistry, is_natural_key, lookup_key
from gateway.store import Doc, Store

WRITES = ("create", "update", "unchanged", "not_found", "ambiguous", "duplicate")
"""What a dry run says a target's write would do (`entity.write`): the last three are the
trigger's refusals, nothing written."""

# (tenant, entity_type, mapped document, lookup key) -> the stored entity, or None and why
# a write would be refused ("not_found", "ambiguous": a lookup key found no or several), or
# None and None (a write would create it).
Found = tuple[Doc | None, str | None]
EntityLookup = Callable[[str, str, Mapping[str, Any], Mapping[str, Any]], Awaitable[Found]]


class MappingDryRun:
    def __init__(
        self,
        mappings: MappingSource,
        store: Store,
        schemas: SchemaRegistry,
        entities: EntityService,
        kinds: KindService,
    ) -> None:
        self._mappings = mappings
        self._store = store
        self._schemas = schemas
        self._entities = entities
        self._kinds = kinds

    async def run(
        self,
        tenant: str,
        *,
        name: str | None = None,
        version: int | None = None,
        draft_text: str | bytes | Mapping[str, Any] | None = None,
        payload: Any = None,
        context: Any = None,
        response: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run a stored mapping or a draft on a sample; nothing is written.

        Inbound: per item of `payload`, the mapped document, lookup key, the events the write
        would emit and the diff against the stored entity (a position mapping: the fix and
        whether the append would refuse it). Outbound: the request built from
        `context` and/or the entity fields `map_response` takes from `response`. Secrets show
        as `<secret:name>`; `params` are bound as a trigger would bind them.
        """
        if params is not None and not isinstance(params, Mapping):
            message = "params must be an object of name: value"
            raise InvalidPayload(message, [FieldProblem("/params", message, "type")])
        mapping = await self._mapping(tenant, name, version, draft_text)
        mapping = mapping.bind(params or {}, strict=True)
        secrets = {s: f"<secret:{s}>" for s in mapping.secrets}
        result: dict[str, Any] = {
            "name": mapping.name,
            "direction": mapping.direction,
            "entity_type": mapping.entity_type,
            "target": mapping.target if mapping.direction == "inbound" else None,
        }
        if mapping.direction == "inbound":
            if payload is None:
                raise _missing("/payload", "an inbound mapping needs a sample `payload`")
            if isinstance(payload, str):  # pasted text: JSON, XML or a query string (OsmAnd)
                with _located("/payload"):
                    payload = read_sample(payload)
            if (answer := mapping.probe(payload)) is not None:
                result["probe"] = answer  # what the trigger would answer; nothing to map
                return result
            lookup = self._find_entity
            texts = DecodedTexts()  # each text from_json()/from_xml() reads, parsed once
            with _located("/payload"):
                items, numbers = mapping.numbered_items(payload, texts=texts)
            single = len(items) == 1 and items[0] is payload
            # Each result names its item's place in the partner's list, as a trigger's batch
            # answer does (`items: {..., when}` leaves some out: the others keep their index).
            results: list[dict[str, Any]] = []
            turns = Turns()  # the process answers others between items
            listing = SharedListing()  # 100 problems over all items, as a trigger's 207
            for index, item in enumerate(items):
                await turns.share()
                shown = await self._item(
                    tenant,
                    mapping,
                    item,
                    secrets,
                    lookup,
                    raise_errors=single,
                    texts=texts,
                    listing=listing,
                )
                results.append({"index": index if numbers is None else numbers[index], **shown})
            result["results"] = results
            if (acknowledgement := mapping.acknowledgement) is not None:
                result["answer"] = acknowledgement  # added to the trigger's 2xx answers
            return result
        if context is None and response is None:
            raise _missing("/context", "an outbound mapping needs a `context` or a `response`")
        if context is not None:
            with _located("/context"):
                request = mapping.build_request(context, secrets=secrets)
            result["request"] = {
                "path_params": request.path_params,
                "query": request.query,
                "headers": request.headers,
                "body": request.body,
            }
        if response is not None:
            with _located("/response"):
                result["response"] = mapping.map_response(response)
        return result

    async def _mapping(
        self,
        tenant: str,
        name: str | None,
        version: int | None,
        draft: str | bytes | Mapping[str, Any] | None,
    ) -> CompiledMapping:
        if draft is not None:
            if isinstance(draft, Mapping):
                draft = json.dumps(draft, ensure_ascii=False)
            with _located("/mapping"):
                return await self._mappings.compile(tenant, draft)
        if name is None:
            raise _missing("/name", "give the `name` of a stored mapping or a draft `mapping`")
        if version is not None:
            return await self._mappings.compiled(tenant, name, version)
        return await self._mappings.active(tenant, name)

    async def _item(
        self,
        tenant: str,
        mapping: CompiledMapping,
        item: Any,
        secrets: dict[str, Any],
        lookup: EntityLookup,
        *,
        raise_errors: bool,
        texts: DecodedTexts,
        listing: SharedListing,
    ) -> dict[str, Any]:
        try:
            with _located("/payload" if raise_errors else ""):
                mapped = mapping.apply(item, secrets=secrets, texts=texts)
        except InvalidPayload as exc:
            if raise_errors:
                raise
            return listing.listing(exc)
        out: dict[str, Any] = {
            "document": mapped.document,
            "key": mapped.key,
            "event_data": mapped.event_data,
        }
        if mapping.has_occurrence_id:  # null: this item gives none, announced every time
            out["occurrence_id"] = mapped.occurrence
        if mapping.target == "positions":  # a fix for the track: events come from the fold
            out["events"] = []
            try:  # as the trigger checks it: named where the payload has it
                parse_mapped_fix(mapping, mapped.document)
                out["fix"] = {"errors": []}
            except InvalidPayload as exc:
                out["fix"] = listing.listing(exc)
            return out
        etype = mapping.entity_type
        if etype is None:
            out["events"] = list(mapped.event_types)
            if shown := announces(mapped.events):
                out["announce"] = shown
            return out
        if not mapping.create:  # as the trigger finds it (`Pipeline._existing`)
            mapped = mapped._replace(key=await _existing(tenant, etype, mapping, mapped, lookup))
            out["key"] = mapped.key
        shown, named = await self._target(tenant, etype, mapped, lookup, mapping.create, listing)
        out.update(shown)
        if mapped.also:
            also: list[dict[str, Any]] = []
            keys: list[Hashable] = [named]
            for target in mapped.also:
                shown, named = await self._target(
                    tenant, target.entity_type, target, lookup, target.create, listing
                )
                keys.append(named)
                also.append(
                    {
                        "entity_type": target.entity_type,
                        "document": target.document,
                        "key": target.key,
                        **shown,
                    }
                )
            # As the trigger refuses them (`upsert_together`): a target naming the entity an
            # earlier one names (the plate's other spelling, a lookup finding the main one).
            for index in repeated_targets(keys):
                _refuse(also[index - 1], same_entity_refusal(), listing)
            out["also"] = also
        return out

    async def _target(
        self,
        tenant: str,
        etype: str,
        mapped: MappedDocument | MappedTarget,
        lookup: EntityLookup,
        create: bool,
        listing: SharedListing,
    ) -> tuple[dict[str, Any], Hashable]:
        """What writing one mapped entity would do: its events and its diff against the
        stored entity (only-forward fields that are stale left out, as `skipped`); or that
        the write would be refused (`not_found`: no entity where it must exist; `ambiguous`:
        a lookup key that finds several). With it, which entity the write names
        (`EntityService.target_key`; a new object when it names none the write could)."""
        current, refused = await lookup(tenant, etype, mapped.document, mapped.key)
        located = refused is None  # else the trigger refuses it before comparing the targets
        if current is None and not create:
            refused = refused or "not_found"
        old = current["data"] if current is not None else {}
        document = self._keyed(etype, current, mapped, create)
        named: Hashable = object()  # names no entity the others could name
        if located:
            with contextlib.suppress(InvalidPayload):
                named = self._entities.target_key(etype, document)
        fields, skipped = forward_only(old, document, mapped.forward)
        # As the write merges it: a whole value naming the stored one leaves it as it is
        # (a driver with a handover time the history has not heard is news, `news`).
        news = {} if current is None else await self._entities.news(tenant, etype, current, fields)
        whole = self._schemas.whole_members(etype)
        written, change = merged_write(current, fields, whole, news=news)
        kind_schema = None
        if etype == "other":
            kind_schema = await self._kinds.schema_for(tenant, written.get("kind"))
        # Identifiers as the write stores them (`dry-4j75` is the plate DRY4J75): the diff
        # is against what would be stored, not against the mapping's spelling.
        merged = self._schemas.normalize(etype, written, kind_schema=kind_schema)
        changes = diff(old, merged) if current is not None else []
        created = current is None
        announced = [
            e.type for e in announced_events(etype, merged, created, changes, mapped.events)
        ]
        if refused is not None:
            write, events = refused, []
        elif created:
            write, events = "create", ["entity.created", *announced]
        elif changes:
            write, events = "update", ["entity.updated", *announced]
        else:
            write, events = "unchanged", announced
        entity: dict[str, Any] = {
            "id": None if current is None else str(current["_id"]),
            "write": write,
            "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in changes],
        }
        if skipped:
            entity["skipped"] = list(skipped)
        try:
            if refused is None:  # a refused write is refused before the entity is checked
                stored = None if current is None else current["data"]
                self._schemas.check(
                    etype, merged, kind_schema=kind_schema, stored=stored, change=change
                )
                refuse_handover(etype, fields, utcnow())  # as the write: on what it sends
        except InvalidPayload as exc:
            entity.update(listing.listing(exc))
        result: dict[str, Any] = {"events": events}
        if shown := announces(mapped.events):
            result["announce"] = shown  # why the write would announce those it lists
        return {**result, "entity": entity}, named

    def _keyed(
        self,
        etype: str,
        current: Doc | None,
        mapped: MappedDocument | MappedTarget,
        create: bool,
    ) -> Mapping[str, Any]:
        """The mapped document with the natural key the write keeps: the entity found by a
        lookup keeps its own, and so does one the mapping may not create or a vehicle whose
        Mercosul plate the item names by its old twin (`keyed_as_stored`)."""
        document = mapped.document
        if current is None:
            return document
        if mapped.key and not is_natural_key(etype, mapped.key):
            document = {**document, **self._schemas.natural_key(etype, current["data"])}
        return keyed_as_stored(etype, current["data"], document, create=create)

    async def _find_entity(
        self, tenant: str, etype: str, document: Mapping[str, Any], key: Mapping[str, Any]
    ) -> Found:
        """As a write finds it (`Pipeline._locate`): by natural key when the key the item has
        is the natural key (or there is none), else by the key's values (e.g. a tracker id),
        which must find exactly one."""
        if not key or is_natural_key(etype, key):
            try:
                nk = self._entities.natural_key(etype, document)
            except InvalidPayload:
                return None, None
            return await self._store.entities.get(tenant, etype, nk=nk), None
        lookup = lookup_key(etype, document, key)
        found = await self._store.entities.find(tenant, etype, lookup, after=None, limit=2)
        if len(found) != 1:
            return None, "not_found" if not found else "ambiguous"
        return found[0], None


async def _existing(
    tenant: str, etype: str, mapping: CompiledMapping, mapped: MappedDocument, lookup: EntityLookup
) -> dict[str, Any]:
    """`create: false` with `first_of`: the first alternative the item has that finds an
    entity, from the one it is found by (`Pipeline._existing`); none: that one."""
    for values in mapping.alternatives_from(mapped.key, mapped.document):
        found, refused = await lookup(tenant, etype, mapped.document, values)
        if found is not None or refused == "ambiguous":  # the trigger stops at it too
            return values
    return mapped.key


@contextlib.contextmanager
def _located(prefix: str) -> Iterator[None]:
    """Problems of a dry run point into the test request: /payload/..., /mapping/..."""
    try:
        yield
    except InvalidPayload as exc:
        if not prefix:
            raise
        moved = [replace(p, pointer=prefix + p.pointer) for p in exc.problems]
        raise exc.restated(problems=moved) from None


def _refuse(target: dict[str, Any], refusal: InvalidPayload, listing: SharedListing) -> None:
    """Show a target's write as the trigger refuses it: nothing written, no events."""
    target["events"] = []
    target.pop("announce", None)
    target["entity"] = {
        **target["entity"],
        "write": refusal.problems[0].keyword,
        **listing.listing(refusal),
    }


def _missing(pointer: str, message: str) -> InvalidPayload:
    return InvalidPayload(message, [FieldProblem(pointer, message, "required")])
