"""Where a schedule's pages land: the same ingest path as a partner's POST to a trigger.

A schedule's `target` is compiled into the trigger configuration a partner's call would run
through (`CompiledTrigger`: entity type, kind, mapping, params; no input schema, no auth), and
a `PageSink` writes a page's items through it: the trigger `Ingestor`, which upserts entities
(validate → map → locate → upsert, events) or, for a "positions" target, appends fixes
(validate → map → canonical fix → append, gateway/fleet/append.py), rejected items kept and
replayable either way. `open_services` registers one sink per target type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gateway.entities import Origin
from gateway.mapping import DecodedTexts
from gateway.mapping.limits import MAX_LIST_ITEMS
from gateway.store import Doc
from gateway.triggers.compiled import POLLED, CompiledTrigger
from gateway.triggers.ingest import Fence, Ingestor

MAX_PAGE_ITEMS: Final = 10_000
"""Items one page may hold, the answer itself the list or a list the mapping's `items` finds
(docs/schedules.md, page sizes: Geotab answers 50,000 records unless `resultsLimit` says
fewer). A page is already read (under the outbound client's 1 MiB cap on an answer), so it
may hold more items than a batch: it is landed in batches of `MAX_BATCH_ITEMS`, in the
page's order (`poll.py`)."""
MAX_BATCH_ITEMS: Final = MAX_LIST_ITEMS
"""Items one landing writes as one batch: the mapping's bound of a batch, as a partner's POST
of them to a trigger would be (Samsara's stats feed, whose page size Samsara decides, answers
more GPS points than that after any pause)."""


@dataclass(frozen=True, slots=True)
class Landed:
    written: int = 0
    rejected: int = 0
    problems: tuple[dict[str, Any], ...] = field(default=())  # the first few item problems


class PageSink(Protocol):
    """Writes a page's items exactly as a partner's POST of them to a trigger would (`texts`:
    the documents the page's texts decoded to while its items were found, read again by the
    items' mapping instead of parsed per item; `numbers`: each item's index in the partner's
    list, which its result and refusal name, as a trigger's would, whatever the mapping's
    `items: {when}` and the schedule's dedupe left out; `fence`: awaited before each write,
    it raises to stop the landing there, once the run lost its lease).

    Raises InvalidPayload when the page as a whole is refused (kept by the sink like a
    refused POST body), and StoreUnavailable when nothing could be written."""

    async def land(
        self,
        target: CompiledTrigger,
        items: Sequence[Any],
        origin: Origin,
        texts: DecodedTexts,
        numbers: Sequence[int],
        fence: Fence,
    ) -> Landed: ...


class EntitySink:
    """Entity and position targets: a page is a batch through the trigger ingest path."""

    def __init__(self, ingestor: Ingestor) -> None:
        self._ingestor = ingestor

    async def land(
        self,
        target: CompiledTrigger,
        items: Sequence[Any],
        origin: Origin,
        texts: DecodedTexts,
        numbers: Sequence[int],
        fence: Fence,
    ) -> Landed:
        ingested = await self._ingestor.ingest(
            target,
            list(items),
            origin=origin,
            picked=True,
            numbers=numbers,
            texts=texts,
            fence=fence,
        )
        return landed_from(ingested.body)


def landed_from(body: Mapping[str, Any]) -> Landed:
    """The counts of a batch answer (`{"results", "summary": {"items", "failed"}}`), as a
    trigger answers it, for entities and positions alike."""
    summary = body.get("summary") or {}
    failed = int(summary.get("failed", 0))
    problems = tuple(
        {"index": r["index"], **r["problem"]}
        for r in body.get("results", ())
        if r.get("status", 200) >= 400 and "problem" in r
    )[:5]
    return Landed(int(summary.get("items", 0)) - failed, failed, problems)


def compile_target(doc: Doc, *, max_body_bytes: int) -> CompiledTrigger:
    """The trigger configuration a schedule's pages go through (its id is the schedule's, so
    the items it refuses are kept, listed and replayed under that id)."""
    target = doc["target"]
    return CompiledTrigger(
        id=str(doc["_id"]),
        tenant=doc["tenant"],
        version=doc["rev"],
        entity_type=target["entity_type"],
        kind=target.get("kind"),
        methods=frozenset({"POST"}),
        format="json",
        answers="json",
        mapping=doc.get("mapping"),
        response_mapping=None,
        schema=None,
        expose=None,
        max_body_bytes=max_body_bytes,
        max_batch_items=MAX_BATCH_ITEMS,
        rate=None,
        auth_mode=POLLED,  # no partner credential comes in
        token_param=None,
        params=target.get("params") or {},
        target=target.get("type", "entities"),
    )
