"""One run of a schedule, under its lease: page after page, call → read → land → commit.

    call    the action's request with the cursor (`calls.request_for`), sent like any partner
            request (guard, credentials, SSRF check), signed with the action's secrets
            (Standard Webhooks, `actions/action_secrets.py`; `webhook-id` the page's, the same
            on every try of it: `page_id`); the partner is read again before each page
            (`Poll._partner`): one disabled during the run is not called again by it
    read    the answer as a page, or a PollFailure: an answer one of the action's answer
            rules decides (`calls.ruled_failure`, as the partner's breaker judges it), or
            (`calls.read_page`) no answer, an error status (429 with its Retry-After), not
            JSON, the partner's own error member, a cursor that is not a string or a
            number; a 2xx without a body is an empty page.
            A throttle (a 429, or a JSON-RPC error asking to slow down on an HTTP 200:
            `Outcome.throttled`, whatever a rule says), or a `retry` rule's answer, after
            pages of this run ends it `more` (`Tally.throttled`)
    land    once the lease is checked (a schedule deleted or reset during the call lands
            nothing), the page's items (deduplicated by id when the schedule says so; up
            to `sinks.MAX_PAGE_ITEMS`, in batches of a batch's bound, one after the other:
            `Poll._land`) through the target's sink: the trigger ingest path, the lease
            checked again before each write (`Poll._held`; a run that lost it takes back
            the items it kept for a deleted schedule, `Poll._take_back`); a record
            `dedupe.by` or the mapping's `when` cannot be evaluated on is kept as a rejected
            item alone, and remembered by dedupe as the items are (`Poll._unseen`)
    commit  only then the cursor, the remembered ids and the page's digest move, in one
            write fenced by the lease: a runner that lost its lease moves nothing; a commit
            the database failed for a moment is handed back (`uncommitted`), not the page
            read and landed again

It drains while the partner says there is more (`cursor.more`, or: the page had records,
kept by the mapping or not, and the cursor moved), at most `max_pages` pages; a run that
stops there goes on in the next one (`more` runs, at most `runner.MAX_RUNS_IN_ROW` in a row:
`runner.py`). A time cursor (an ISO 8601 date-time) never moves back: a partner answering an
older one than the call's would have every later run read old data again; the page lands, the
cursor stays, the run records what was refused. A page whose new items are those of the last
page again (the same cursor answered with the same page, or the same page under new cursors)
is refused before anything is written: the partner is looping (but a list's last page,
naming no next cursor, read again by the next run is its end with nothing new:
`Poll._repeated`). So is a cursor this run sent already that answers the page it answered
then (two pages naming each other, or a longer cycle within `max_pages`): the cursor stays
there and the run fails as a `loop` and backs off. Nothing of it outlives the run: a cursor
sent in an earlier run that answers its page again is read on (an offset log read again from
its earliest record after a reset or a lagging replica's answer). Page numbers
(`cursor.step`) index a list: its end (`more` false, or the records of the page before
answered again by a partner clamping page numbers past the end) sends the cursor back to
`initial`, and the next run reads the list again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from gateway.actions.catalog import Action, Catalog, Partner
from gateway.actions.partner_calls import PartnerCalls
from gateway.actions.signing import with_signature
from gateway.clock import from_iso
from gateway.entities import Origin
from gateway.errors import InvalidPayload, NotFound, StoreUnavailable
from gateway.keys import StoredSecrets
from gateway.leased_loop import LeaseLost
from gateway.mapping import CompiledMapping, DecodedTexts
from gateway.mapping_files.source import MappingSource
from gateway.metrics import Metrics
from gateway.outbound.redaction import NO_REDACTION, Redactor
from gateway.outbound.sender import OutboundRequest, Outcome
from gateway.schedules.calls import (
    Page,
    PollFailure,
    Refused,
    cursor_key,
    digest,
    item_id,
    page_items,
    page_mark,
    read_page,
    refused_key,
    request_for,
    ruled_failure,
)
from gateway.schedules.sinks import MAX_PAGE_ITEMS, PageSink, compile_target
from gateway.schedules.timing import BACKOFF_SECONDS
from gateway.shared_read import SharedRead
from gateway.store import Doc, Store
from gateway.triggers.compiled import CompiledTrigger
from gateway.triggers.rejected import RejectedKeeper, repeatable

log = logging.getLogger(__name__)
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}.*)?")


@dataclass(slots=True)
class Tally:
    """What one run did, as its run record shows it."""

    pages: int = 0
    read: int = 0
    written: int = 0
    rejected: int = 0
    skipped: int = 0  # items already seen (dedupe)
    listed: int = 0  # the partner's records, before the mapping's `when` and dedupe
    more: bool = False  # stopped at max_pages while the partner had more
    # The partner throttled the run after it committed pages (a 429, a JSON-RPC over-limit
    # error: `calls.read_page`): the seconds it asked to wait (its Retry-After, else the first
    # back-off step), and its answer in short. The run ends `more`, no failure: the next one
    # is due then (`runner._timing`).
    throttled: float | None = None
    throttled_by: str = ""
    cursor_before: Any = None
    cursor_after: Any = None
    cursor_refused: Any = None  # a time cursor the partner answered that went back
    # What the run did that looks wrong though it is no failure (`cursor.from` finding no
    # cursor where the partner has more): shown in the run record's `note`, each once.
    warnings: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PollContext:
    """What every run needs, built once by the runner."""

    store: Store
    catalog: Catalog
    calls: PartnerCalls
    mappings: MappingSource
    sinks: dict[str, PageSink]
    rejected: RejectedKeeper
    metrics: Metrics
    max_body_bytes: int
    secrets: StoredSecrets  # what a stored secret that does not open is


class Poll:
    def __init__(
        self,
        context: PollContext,
        doc: Doc,
        owner: str,
        *,
        clock: Callable[[], datetime],
        lease: timedelta,
    ) -> None:
        self._c = context
        self._doc = doc
        self._owner = owner
        self._clock = clock
        self._lease = lease
        self._holds = SharedRead(
            lambda: self._c.store.schedules.holds(self._doc["_id"], self._owner)
        )
        self.tally = Tally()
        cursor = doc.get("cursor_value")
        spec = doc.get("cursor")
        if cursor is None and spec is not None:
            cursor = spec.get("initial")
        self._cursor = cursor
        self._digest: str | None = doc.get("last_digest")
        self._seen = set(doc.get("seen") or ())
        # The cursors this run sent (`calls.cursor_key`), each with the mark of the page it
        # answered (`calls.page_mark`): a cycle within the run is a `loop`. Never kept.
        self._sent: dict[str, str] = {}
        self.tally.cursor_before = self.tally.cursor_after = cursor
        # The commit of a landed page the database failed (not refused): the runner hands it
        # back before the schedule's release, so the next run does not land that page again.
        self.uncommitted: Callable[[], Awaitable[bool]] | None = None
        # What masks the partner's credentials in what the run says (its error, its items'
        # problems): its pages are read as data, a numeric one unmasked (`calls.request_for`).
        self.redactor: Redactor = NO_REDACTION

    async def run(self) -> None:
        """Every page this run may read; raises PollFailure or LeaseLost."""
        doc = self._doc
        tenant = doc["tenant"]
        try:
            action = await self._c.catalog.action(tenant, doc["action_id"])
            partner = await self._c.catalog.partner(tenant, action.partner_id)
            signing = await self._c.catalog.action_signer(tenant, action.id)
            request_mapping = None
            if action.request_mapping:
                request_mapping = await self._c.mappings.active(tenant, action.request_mapping)
            mapping = await self._c.mappings.active(tenant, doc["mapping"])
            mapping = mapping.bind(doc["target"].get("params") or {})
        except (NotFound, InvalidPayload) as exc:
            raise PollFailure("configuration", exc.detail) from None
        if not action.reads:
            raise PollFailure(
                "configuration", f"action {action.name!r} is a {action.method} not marked read_only"
            )
        target = compile_target(doc, max_body_bytes=self._c.max_body_bytes)
        sink = self._c.sinks.get(doc["target"]["type"])
        if sink is None:
            raise PollFailure("configuration", f"no {doc['target']['type']} target here")
        for number in range(doc["max_pages"]):
            if number:  # disabled by an admin (or after failing) since: not called again
                partner = await self._partner(tenant, action.partner_id)
            try:
                request = await request_for(doc, action, partner, request_mapping, self._cursor)
            except InvalidPayload as exc:  # the request mapping or the XML body cannot build it
                raise PollFailure(
                    "request",
                    f"cannot build the request: {exc.detail}",
                    problems=[p.as_dict() for p in exc.problems],
                ) from None
            request = with_signature(request, signing, page_id(doc, self._cursor), self._clock())
            # A disabled partner is not called (a held run, `calls.read_page`), as by `invoke`;
            # one disabled during the run is not called again (read before each page).
            outcome = partner.refusal() or await self._c.calls.send(partner, request)
            if not outcome.redactor.empty:  # (an outcome never sent has none)
                self.redactor = outcome.redactor
            page = self._read(action, partner, request, outcome)
            if page is None or not await self._page(page, mapping, target, sink):
                return
        self.tally.more = True

    def _read(
        self, action: Action, partner: Partner, request: OutboundRequest, outcome: Outcome
    ) -> Page | None:
        """The answer as a page, or None: throttled after pages this run committed (the run
        ends `more`), or a `retry` rule's answer then; PollFailure for anything else that is
        no page. The action's answer rules decide before the status (as the partner's breaker
        judges the answer: `Action.reading_answers`), but a throttle is one whatever a rule
        says (`calls.ruled_failure`); then a page is read from a 2xx only (`calls.read_page`)."""
        rule = action.matched_rule(outcome)
        verdict = outcome.verdict if rule is None else rule.then
        self._c.metrics.observe_partner_call(partner.id, "schedule", outcome, verdict)
        ruled = None if rule is None else ruled_failure(rule, outcome, self._clock())
        try:
            if ruled is not None:
                raise ruled
            return read_page(
                self._doc,
                outcome,
                self._clock(),
                self._cursor,
                url=request.url,
                base_url=partner.base_url,
            )
        except PollFailure as failure:
            if failure.throttle is None or not self.tally.pages:
                raise
            # Throttled after pages this run committed (Geotab's GetFeed allows one call a
            # second): the partner paces a backlog, it does not fail. The run ends here, the
            # next reads on when the partner asks.
            wait = failure.retry_after
            self.tally.throttled = BACKOFF_SECONDS[0] if wait is None else wait
            self.tally.throttled_by = failure.throttle
            self.tally.more = True
            return None

    async def _partner(self, tenant: str, partner_id: str) -> Partner:
        """The partner as it is now: the catalog's copy, this process's changes at once, those
        of another within the catalog's ttl (2 s)."""
        try:
            return await self._c.catalog.partner(tenant, partner_id)
        except (NotFound, InvalidPayload) as exc:
            raise PollFailure("configuration", exc.detail) from None

    async def _page(
        self, page: Page, mapping: CompiledMapping, target: CompiledTrigger, sink: PageSink
    ) -> bool:
        """Land one page and move past it; whether to read the next one now."""
        doc, tally = self._doc, self.tally
        texts = DecodedTexts()  # what the items read with from_json()/from_xml(): once a page
        records, items, numbers, refused = await self._items(page, mapping, target, texts)
        tally.pages += 1
        tally.read += len(items) + len(refused)
        # Every page read, an empty one (a feed gone quiet) and one dedupe skips whole too.
        self._c.metrics.schedule_page_items.labels(
            self._c.metrics.label("schedule", str(doc["_id"]))
        ).observe(len(items) + len(refused))
        tally.listed += len(records)
        fresh, ids, fresh_numbers, refused, skipped = self._unseen(items, numbers, refused)
        tally.skipped += skipped
        spec = doc.get("cursor")
        more = page.more if page.more is not None else bool(records)
        if spec is not None and spec.get("step"):
            # Page numbers index a list: its records' digest is the page's. The records of
            # the page before answered again (a page number past the end clamped to the last
            # page) are past its end: nothing of it is written, and the next run reads the
            # list again from `initial` (as after its last page, below). If the partner says
            # there is more all the same, that is a `loop` for someone to see too: it answers
            # one page whatever the number (it reads another parameter than `param`), or says
            # more on its last page; the next run still reads the list from `initial`.
            page_digest: str | None = digest(records)
            if records and page_digest == self._digest:
                await self._commit(spec["initial"], None, [])
                if page.more:
                    raise PollFailure(
                        "loop",
                        f"the partner answered the same {len(records)} record(s) for page "
                        f"{self._cursor!r} as for the page before, saying there is more: it "
                        "does not read the page number (is `cursor.param` its name?) or says "
                        "more on its last page; the list is read again from its first page",
                    )
                return False
        else:
            if (
                spec is not None
                and spec.get("follow")
                and page.more
                and page.cursor == self._cursor
            ):
                raise PollFailure(
                    "loop",
                    f"the partner named the page just read ({_shown(self._cursor)}) as its "
                    "next page: it is looping; nothing was written",
                )
            if spec is not None and spec.get("from") and page.cursor is None and records:
                self._no_cursor(spec, len(records), page.more)
            page_digest = digest(fresh) if fresh else self._digest
            if spec is not None and fresh and page_digest == self._digest:
                self._repeated(page, len(fresh))  # a list's end read again, or a loop
                tally.skipped += len(fresh)
                fresh, fresh_numbers = [], []
            if spec is not None:
                self._revisited(page, records, more)
        if fresh or refused:
            await self._fence()
        try:
            if refused:
                await self._keep(target, mapping, refused)
            if fresh:
                await self._land(target, sink, fresh, fresh_numbers, texts)
            return await self._move_past(page, page_digest, ids, more)
        except LeaseLost:
            await self._take_back()
            raise

    async def _land(
        self,
        target: CompiledTrigger,
        sink: PageSink,
        items: list[Any],
        numbers: list[int],
        texts: DecodedTexts,
    ) -> None:
        """A page's new items through the sink, in batches of `target.max_batch_items` (the
        mapping's bound of a batch), one after the other in the page's order: an entity's
        items are written in the partner's order, across batches as within one. Each batch
        has a batch's work budget (`DecodedTexts.next_batch`). Counted as the run's; the
        cursor moves once every batch is landed (`_move_past`): a run that stops between
        two lands the whole page again next time (a fix again is a duplicate, stored once)."""
        tally = self.tally
        origin = self._origin()
        size = target.max_batch_items
        for start in range(0, len(items), size):
            if start:
                texts.next_batch()
            landed = await sink.land(
                target,
                items[start : start + size],
                origin,
                texts,
                numbers[start : start + size],
                fence=self._held,
            )
            tally.written += landed.written
            tally.rejected += landed.rejected
            tally.problems += list(landed.problems)[: 5 - len(tally.problems)]

    async def _move_past(
        self, page: Page, page_digest: str | None, ids: list[str], more: bool
    ) -> bool:
        """Commit a landed page (`_commit`); whether to read the next one now."""
        spec = self._doc.get("cursor")
        if spec is not None and spec.get("follow") and not more:
            # A list named page by page ends where no next page is named: the next run reads
            # it again from the action's own URL (whose items this page's digest must not
            # refuse, as for page numbers).
            await self._commit(None, None, ids, restart=True)
            return False
        if spec is not None and spec.get("step") and not more:
            # Page numbers index a list, not a feed: once it ends, the next run reads it
            # again from its first page (whose items this page's digest must not refuse).
            page = replace(page, cursor=spec["initial"])
            page_digest = None
        if spec is not None and goes_back(self._cursor, page.cursor):
            page = self._refuse_cursor(page)
        moved = spec is not None and page.cursor is not None and page.cursor != self._cursor
        await self._commit(page.cursor if moved else None, page_digest, ids)
        if not moved or (spec is not None and spec.get("step") and page.cursor == spec["initial"]):
            return False
        return more

    async def _fence(self) -> None:
        """LeaseLost unless this run still holds the schedule (renewed): a schedule deleted,
        reset or changed to another cursor during the call lands nothing of its answer."""
        until = self._clock() + self._lease
        if not await self._c.store.schedules.renew(self._doc["_id"], self._owner, until):
            raise LeaseLost()

    async def _held(self) -> None:
        """LeaseLost unless this run still holds the schedule: asked before each write of a
        page's landing (an item's entity, the fixes, the kept items), so a DELETE or reset
        answered during the landing stops it there (the writes already in flight end). The
        writes that ask at once share a read begun after they asked (`SharedRead`): one
        round trip for a batch's concurrent writes, not one each."""
        if not await self._holds():
            raise LeaseLost()

    async def _take_back(self) -> None:
        """The run lost its lease during a page's landing or at its commit: if the schedule
        was deleted, the items this page kept go too. The delete removes the schedule, then
        its kept items; this keeps them, then looks for the schedule: either finds what the
        other did."""
        doc = self._doc
        if not await self._c.store.schedules.exists(doc["_id"]):
            await self._c.store.rejected.delete_for_trigger(doc["tenant"], str(doc["_id"]))

    async def _commit(
        self, cursor: Any, page_digest: str | None, ids: list[str], *, restart: bool = False
    ) -> None:
        """Move past a landed page: the cursor (None: it stays; with `restart`, back to none,
        the start of a `follow` cursor's list), the ids, the digest."""
        doc, tally = self._doc, self.tally
        fields: Doc = {"last_digest": page_digest, "lease_until": self._clock() + self._lease}
        moves = cursor is not None or restart
        if moves:
            fields["cursor_value"] = cursor
        keep = (doc.get("dedupe") or {}).get("keep", 0)
        commit = partial(
            self._c.store.schedules.commit_page,
            doc["_id"],
            self._owner,
            fields,
            seen=ids,
            keep=keep,
        )
        try:
            committed = await commit()
        except StoreUnavailable as exc:
            if not exc.refused:  # a fault of the moment: the page's writes are durable
                self.uncommitted = commit
                if moves:
                    tally.cursor_after = cursor
            raise
        if not committed:
            raise LeaseLost()
        self._digest = page_digest
        self._seen.update(ids)
        if moves:
            self._cursor = tally.cursor_after = cursor

    async def _keep(
        self, target: CompiledTrigger, mapping: CompiledMapping, refused: list[Refused]
    ) -> None:
        """Records refused on their own (`calls.Refused`), kept as rejected items of the
        schedule, counted and named in the run like the items its target refused."""
        tally = self.tally
        records = [
            self._c.rejected.record(
                target,
                each.error,
                each.record,
                scope="item",
                index=each.number,
                repeatable=repeatable(mapping),
            )
            for each in sorted(refused, key=lambda each: each.number)
        ]
        await self._c.rejected.keep(target, records)
        tally.rejected += len(refused)
        problems = [{"index": each.number, **each.error.problem()} for each in refused]
        tally.problems = sorted(tally.problems + problems, key=lambda p: p["index"])[:5]

    async def _items(
        self, page: Page, mapping: CompiledMapping, target: CompiledTrigger, texts: DecodedTexts
    ) -> tuple[list[Any], list[Any], list[int], list[Refused]]:
        """The partner's records, the page's items, their indexes in the partner's list, and
        the records `items: {..., when}` cannot be evaluated on."""
        if page.empty:
            return [], [], [], []
        try:
            records, items, numbers, refused = page_items(
                mapping, page.answer, texts, limit=MAX_PAGE_ITEMS
            )
        except InvalidPayload as exc:
            if not self._doc.get("failures"):  # kept once per failure streak, not per retry
                whole = exc.restated(reason="mapping")
                record = self._c.rejected.record(
                    target, whole, page.answer, scope="body", repeatable=repeatable(mapping)
                )
                try:  # while the run holds the schedule, and not left behind by its delete
                    await self._held()
                    await self._c.rejected.keep(target, [record])
                    await self._held()
                except LeaseLost:
                    await self._take_back()
                    raise
            raise PollFailure(
                "mapping",
                f"the answer does not fit mapping {mapping.name!r}: {exc.detail}",
                problems=[p.as_dict() for p in exc.problems],
            ) from exc
        if len(items) > MAX_PAGE_ITEMS:  # the answer is the list (a mapping's: above)
            raise PollFailure(
                "page", f"a page of {len(items):,} items is over the limit of {MAX_PAGE_ITEMS:,}"
            )
        return records, items, numbers, refused

    def _unseen(
        self, items: list[Any], numbers: list[int], refused: list[Refused]
    ) -> tuple[list[Any], list[str], list[int], list[Refused], int]:
        """The items not seen before, the ids of the page's items (seen before or not: the
        commit remembers them as the newest, `ScheduleStore.commit_page`), the new items'
        indexes in the partner's list, the records refused alone not seen before (those
        `when` could not read, then the items `dedupe.by` cannot be evaluated on), and how
        many were seen before (all of them, no ids, without dedupe). A refused record is
        remembered as an item is, by its id, or by its content when it has none
        (`calls.refused_key`), so it is refused once, not on every run, and once replayed it
        is not refused again."""
        dedupe = self._doc.get("dedupe")
        if dedupe is None:
            return items, [], numbers, refused, 0
        ids: dict[str, None] = {}  # in the page's order, each once

        def new(key: str | None) -> bool:
            if key is None:
                return True
            fresh = key not in self._seen and key not in ids
            ids[key] = None
            return fresh

        unseen = [each for each in refused if new(refused_key(dedupe["by"], each.record))]
        fresh: list[Any] = []
        fresh_numbers: list[int] = []
        for item, number in zip(items, numbers, strict=True):
            try:
                key = item_id(dedupe["by"], item)
            except InvalidPayload as exc:
                if new(refused_key(dedupe["by"], item)):
                    unseen.append(Refused(number, item, exc))
                continue
            if new(key):
                fresh.append(item)
                fresh_numbers.append(number)
        skipped = len(items) + len(refused) - len(fresh) - len(unseen)
        return fresh, list(ids), fresh_numbers, unseen, skipped

    def _revisited(self, page: Page, records: list[Any], more: bool) -> None:
        """PollFailure `loop` (nothing written, the cursor stays) when this run sent the
        cursor before and it answered the same page, which sends the schedule on again (a
        cycle). Another page under it: the partner restarted its feed or moved on."""
        key, mark = cursor_key(self._cursor), page_mark(records, page.cursor, more)
        if more and page.cursor != self._cursor and self._sent.get(key) == mark:
            raise PollFailure(
                "loop",
                f"the partner answered cursor {_shown(self._cursor)} with the page it gave "
                f"before in this run, sending us on to {_shown(page.cursor)} again: it is "
                f"looping; nothing was written and the cursor stays there",
            )
        self._sent[key] = mark

    def _repeated(self, page: Page, items: int) -> None:
        """PollFailure `loop` for a page whose new items are those of the page before, unless
        it is a list's last page read again: the run's first page, naming no next cursor. The
        run before ended there (that page named none, so the cursor stayed) and the partner
        added nothing since (an idle ServiceM8 list, a body cursor at its end): nothing new,
        and the cursor cannot move, so nothing spins. Within a run, a cursor the partner named
        that answers the same page is a loop, whether or not that page names a next one."""
        if page.cursor is not None or self.tally.pages > 1:
            raise PollFailure(
                "loop",
                f"the partner answered the same {items} item(s) again (cursor "
                f"{self._cursor!r} → {page.cursor!r}): it is looping; nothing was written",
            )

    def _no_cursor(self, spec: Doc, records: int, more: bool | None) -> None:
        """A warning (the run record's `note`, the log) when `cursor.from` finds no cursor on
        a page of records where the partner says it has more, or on the schedule's first
        page (its cursor still `initial`, or none): the run stops there and every run reads
        that page again, an expression that names nothing (`pagination.endCursr`) else
        silent. No failure: the page is landed, and a one-page list ends so too."""
        if more:
            why = "where the partner says it has more (cursor.more)"
        elif self._cursor == spec.get("initial"):
            why = "read from the schedule's first cursor"
        else:
            return
        warning = (
            f"cursor.from ({spec['from']}) found no cursor on a page of {records} record(s) "
            f"{why}: the cursor stays at {_shown(self._cursor)} and the next run reads this "
            "page again; check the expression against the partner's answer"
        )
        if warning not in self.tally.warnings:
            log.warning("schedule %s: %s", self._doc["_id"], warning)
            self.tally.warnings.append(warning)

    def _refuse_cursor(self, page: Page) -> Page:
        schedule = str(self._doc["_id"])
        log.warning(
            "schedule %s: the partner's cursor %r goes back from %r: kept",
            schedule,
            page.cursor,
            self._cursor,
        )
        self._c.metrics.schedule_cursor_refused.labels(
            self._c.metrics.label("schedule", schedule)
        ).inc()
        self.tally.cursor_refused = page.cursor
        return replace(page, cursor=self._cursor)

    def _origin(self) -> Origin:
        return Origin("schedule", str(self._doc["_id"]), {"cursor": self._cursor})


def _shown(cursor: Any) -> str:
    """A cursor as a message quotes it (a partner's token may be long)."""
    text = repr(cursor)
    return text if len(text) <= 80 else text[:77] + "..."


def goes_back(before: Any, after: Any) -> bool:
    """Whether `after` is an earlier time than `before`: both ISO 8601 dates or date-times
    (both with an offset, or both without). Other cursors (opaque tokens, versions, numbers)
    are the partner's to order."""
    then, now = _as_time(before), _as_time(after)
    if then is None or now is None or (then.tzinfo is None) != (now.tzinfo is None):
        return False
    return now < then


def _as_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not _DATE_TIME.fullmatch(value.strip()):
        return None
    try:
        parsed = from_iso(value.strip())
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed


def page_id(doc: Doc, cursor: Any) -> str:
    """A page's `webhook-id`: `<schedule id>:<its cursor's key>:<the schedule's last good run,
    ms>`. The same for every try of the page (a run failed or cut short leaves the cursor and
    `last_ok_at` as they were), a new one for each page of a run (each its own cursor), and
    for the same cursor read again by a later run (a feed's head polled anew) once a run
    ended well in between."""
    ok = doc.get("last_ok_at")
    stamp = int(ok.timestamp() * 1000) if isinstance(ok, datetime) else 0
    return f"{doc['_id']}:{cursor_key(cursor)}:{stamp}"
