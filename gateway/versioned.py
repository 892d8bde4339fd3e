"""Versioned, tenant-owned documents (mapping files, flows): per name a head (the active version,
the latest) and immutable versions under it (`store/mappings.py`). The versioning is the same
for both: upload (the same text as the latest version is that version), get, versions,
activate, roll back, diff. What a version holds, what compiles it and what a change makes
stale stay each service's own (`make`, `recheck`, `on_change`).
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gateway.clock import as_stored, utcnow
from gateway.errors import Conflict, NoActiveVersion, NotFound, OverBudget, Unavailable
from gateway.store import Doc
from gateway.store.mappings import MappingStore, Seen

V = TypeVar("V")
log = logging.getLogger(__name__)

MAX_DIFF_PAIRS = 2_000_000
"""Pairs of equal lines (a line of one version, a copy of it in the other) a diff may weigh:
the matcher's first pass looks at each, its later ones at fewer. Two distinct 256 KiB versions
have few; 30,000 lines drawn from 110 distinct ones have 7.6 million (~2 s)."""
MAX_DIFF_SECONDS = 1.0
"""CPU time a diff's line matching may take (checked between the matcher's passes)."""
MAX_DIFF_LINES = 20_000
"""Lines of unified diff a diff may answer (the admin UI shows each)."""
_DIFFS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diff")
"""One diff at a time, off the event loop: the others wait their turn."""


@dataclass(frozen=True, slots=True)
class ShownActive:
    """The active version a change was decided on (None: none was active), as the page that
    asked for it showed it: an activation or a roll back from a page that no longer shows what
    is active (another admin's change since) is refused, not applied on top."""

    version: int | None


class VersionedDocuments(Generic[V]):
    def __init__(
        self,
        store: MappingStore,
        noun: str,
        *,
        make: Callable[[Doc, Any], V],
        on_change: Callable[[str, str], None],
        recheck: Callable[[str, Doc], Awaitable[object]] | None = None,
        pinned: Callable[[str, str], Awaitable[Collection[int]]] | None = None,
    ) -> None:
        """`make(doc, active_version)`: a stored version as the service shows it;
        `on_change(tenant, name)`: after the active version (or the document) changed;
        `recheck(tenant, doc)`: a version is still valid to activate (raises if not);
        `pinned(tenant, name)`: the versions something still runs or may run again, kept
        when older versions are pruned (`MappingStore.prune`)."""
        self._store = store
        self._noun = noun
        self._make = make
        self._on_change = on_change
        self._recheck = recheck
        self._pinned = pinned

    async def add(
        self,
        tenant: str,
        name: str,
        text: str | bytes,
        fields: Doc,
        *,
        author: str,
        activate: bool,
        direction: str,
        entity_type: str | None = None,
    ) -> tuple[int, bool]:
        """A new version of `text` (active unless `activate=False`) with `fields`; the same
        text as the latest version, or as another upload under way at the same time, is that
        version (activated when asked). The version and whether it is new. A new name (or
        a deleted one's again) is a 409 past the tenant's limit (`Settings.tenant_limits`).
        A delete wins over an upload under way: one whose name was deleted since it began is a
        409 and lists nothing (`MappingStore.publish`); sent again, it is a new name."""
        seen: list[Seen] = []  # the head as last read, in the tenant's turn when taken

        async def made() -> bool:
            seen.append(await self._store.seen(tenant, name))
            return seen[-1].listed

        adding = functools.partial(
            self._add,
            tenant,
            name,
            text,
            fields,
            author=author,
            activate=activate,
            direction=direction,
            entity_type=entity_type,
        )
        if await made():
            return await adding(seen=seen[-1])
        async with self._store.limit.room(tenant, made=made):  # a new name
            return await adding(seen=seen[-1])

    async def _add(
        self,
        tenant: str,
        name: str,
        text: str | bytes,
        fields: Doc,
        *,
        author: str,
        activate: bool,
        direction: str,
        entity_type: str | None,
        seen: Seen,
    ) -> tuple[int, bool]:
        source = text if isinstance(text, str) else text.decode("utf-8-sig")
        checksum = hashlib.sha256(source.encode("utf-8")).hexdigest()
        shown: tuple[str, str | None] = (direction, entity_type)
        latest = await self._store.latest(tenant, name)
        if latest is not None and seen.of_a_deleted_name(int(latest["version"])):
            latest = None  # a deleted name's, about to be removed: a re-create claims anew
        if latest is not None and latest["checksum"] == checksum:
            answer = await self._answered(tenant, name, latest, shown, seen, activate=activate)
            return answer, False
        since = 0 if latest is None else int(latest["version"])
        upload, since = await self._store.begin_upload(tenant, name, since)
        try:
            version = await self._store.claim_version(tenant, name, checksum, since=since)
            doc: Doc = {
                "name": name,
                "version": version,
                "source": source,
                **fields,
                "checksum": checksum,
                "author": author,
                "created_at": as_stored(utcnow()),
            }
            try:
                await self._store.insert_version(tenant, doc)
            except Conflict:  # a copy of the text uploaded at the same time stored it first
                stored = await self._store.version(tenant, name, version)
                if stored is None or stored["checksum"] != checksum:
                    raise
                answer = await self._answered(tenant, name, stored, shown, seen, activate=activate)
                return answer, False
            await self._publish(tenant, name, shown, version if activate else None, seen)
        finally:
            await self._store.end_upload(tenant, name, upload)
        self._on_change(tenant, name)
        await self._prune(tenant, name)
        return version, True

    async def _prune(self, tenant: str, name: str) -> None:
        """The versions past the ones kept removed, after a new one is stored. Housekeeping:
        the upload is answered as stored whether or not it is done (the next upload's prune
        removes what this one left)."""
        if not self._store.versions_kept:
            return
        try:
            pinned = await self._pinned(tenant, name) if self._pinned is not None else ()
            gone = await self._store.prune(tenant, name, pinned)
        except Unavailable as exc:
            log.warning("%s %r: older versions not pruned: %s", self._noun, name, exc.detail)
            return
        if gone:
            log.info("%s %r: pruned versions %s", self._noun, name, gone)

    async def _answered(
        self,
        tenant: str,
        name: str,
        doc: Doc,
        shown: tuple[str, str | None],
        seen: Seen,
        *,
        activate: bool,
    ) -> int:
        """A stored version as the answer to an upload of its text (made active if asked).
        A head that does not show it yet (the upload that stored it failed to update the head,
        or is about to) is updated as that upload would have."""
        version = int(doc["version"])
        if await self._store.head(tenant, name) is None:
            await self._publish(tenant, name, shown, version if activate else None, seen)
        elif activate:
            if not await self._store.set_active(tenant, name, version, _shown(doc), seen=seen):
                raise self._deleted_meanwhile(name)
        else:
            return version
        self._on_change(tenant, name)
        return version

    async def _publish(
        self,
        tenant: str,
        name: str,
        shown: tuple[str, str | None],
        active: int | None,
        seen: Seen,
    ) -> None:
        direction, entity_type = shown
        if not await self._store.publish(
            tenant,
            name,
            direction=direction,
            entity_type=entity_type,
            active_version=active,
            deletions=seen.deletions,
        ):
            raise self._deleted_meanwhile(name)

    def _deleted_meanwhile(self, name: str) -> Conflict:
        return Conflict(
            f"{self._noun} {name!r} was deleted while this upload was under way: the delete "
            "stands; send the upload again to create the name anew"
        )

    async def get(self, tenant: str, name: str, version: int | None = None) -> V:
        """One version; the active one by default."""
        head = await self.head(tenant, name)
        active = head.get("active_version")
        if version is None:
            if active is None:
                raise NoActiveVersion(
                    f"{self._noun} {name!r} has no active version; ask for a version"
                )
            version = int(active)
        return self._make(await self.version_doc(tenant, name, version), active)

    async def versions(self, tenant: str, name: str) -> list[V]:
        """Every version, without its source and with what its store lists of its document
        (`version_listing`: of a flow, the events it starts on; of a mapping, nothing)."""
        head = await self.head(tenant, name)
        removed = head.get("deleted_up_to")
        docs = [
            d
            for d in await self._store.versions(tenant, name)
            if not isinstance(removed, int) or d["version"] > removed  # a deleted name's
        ]
        active = head.get("active_version")
        return [
            self._make({**d, "source": "", "document": d.get("document", {})}, active) for d in docs
        ]

    async def activate(
        self, tenant: str, name: str, version: int, *, shown: ShownActive | None = None
    ) -> V:
        """Make `version` the active one; with `shown`, only while the active version is
        still the one shown (a `Conflict` otherwise, nothing changed)."""
        if shown is not None:
            _check_shown(self._noun, name, await self.head(tenant, name), shown)
        seen = await self._store.seen(tenant, name)  # (a delete since: the version may be gone)
        if seen.of_a_deleted_name(version):  # not the re-created name's: being removed
            raise NotFound(f"{self._noun} {name!r} has no version {version}")
        doc = await self.version_doc(tenant, name, version)
        if self._recheck is not None:
            await self._recheck(tenant, doc)
        expected = None if shown is None else shown.version
        # Held while it is made active: a prune under way neither removes it meanwhile nor
        # leaves the head naming a version it removed.
        if not await self._store.hold(tenant, name, version):
            raise await self._missing(tenant, name, version)
        try:
            made = await self._store.set_active(
                tenant,
                name,
                version,
                _shown(doc),
                checked=shown is not None,
                expected=expected,
                seen=seen,
            )
        finally:
            await self._store.let_go(tenant, name, version)
        if not made:
            head = await self.head(tenant, name)  # a NotFound: deleted meanwhile
            _check_shown(self._noun, name, head, ShownActive(expected))
            raise Conflict(f"{self._noun} {name!r} changed meanwhile; nothing was changed")
        self._on_change(tenant, name)
        return await self.get(tenant, name, version)

    async def rollback(self, tenant: str, name: str, *, shown: ShownActive | None = None) -> V:
        """Activate the version before the active one (with `shown`: the one shown active,
        if it still is). Two roll backs at once move back one version, not two: the second
        finds the active version changed since it read it (a `Conflict`)."""
        head = await self.head(tenant, name)
        if shown is not None:
            _check_shown(self._noun, name, head, shown)
        active = head.get("active_version")
        if active is None:
            raise Conflict(f"{self._noun} {name!r} has no active version to roll back from")
        previous = await self._store.previous_version(tenant, name, int(active))
        removed = head.get("deleted_up_to")
        if previous is not None and isinstance(removed, int) and previous <= removed:
            previous = None  # a deleted name's version (being removed), not one of this name
        if previous is None:
            raise Conflict(
                f"version {active} is the first version of {name!r}; nothing to roll back to"
            )
        return await self.activate(tenant, name, previous, shown=ShownActive(int(active)))

    async def diff(self, tenant: str, name: str, v1: int, v2: int) -> dict[str, Any]:
        """What changed from v1 to v2: the parsed documents path by path, and the sources as
        a unified diff, computed off the event loop within its budget (`OverBudget` past it:
        two 256 KiB versions of few distinct lines in other orders took 8 s of the loop)."""
        old = await self.version_doc(tenant, name, v1)
        new = await self.version_doc(tenant, name, v2)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            _DIFFS, _versions_diff, f"{self._noun} {name!r}", name, (v1, old), (v2, new)
        )

    async def head(self, tenant: str, name: str) -> Doc:
        head = await self._store.head(tenant, name)
        if head is None:
            raise NotFound(f"no {self._noun} {name!r}")
        return head

    async def head_to_delete(self, tenant: str, name: str) -> Doc:
        """`head`, for a delete. A name not listed is NotFound after what its tombstone names
        is removed again (`MappingStore.delete`): a delete whose removal of the versions
        failed after its tombstone was written (a 503) is finished by its retry."""
        head = await self._store.head(tenant, name)
        if head is None:
            await self._store.delete(tenant, name)
            raise NotFound(f"no {self._noun} {name!r}")
        return head

    async def version_doc(self, tenant: str, name: str, version: int) -> Doc:
        doc = await self._store.version(tenant, name, version)
        if doc is None:
            raise await self._missing(tenant, name, version)
        return doc

    async def _missing(self, tenant: str, name: str, version: int) -> NotFound:
        """The 404 of a version not stored: one numbered up to the newest pruning removed
        (`pruned_up_to`), since the name's last delete, was pruned, and the answer says so. A
        number never stored (an upload that failed after claiming it) is a plain 404."""
        head = await self._store.head(tenant, name)
        pruned_up_to, removed = (head or {}).get("pruned_up_to"), (head or {}).get("deleted_up_to")
        pruned = (
            isinstance(pruned_up_to, int)
            and version <= pruned_up_to
            and version > (removed if isinstance(removed, int) else 0)
        )
        detail = f"{self._noun} {name!r} has no version {version}"
        if pruned:
            detail += (
                f" (pruned: a name keeps its newest {self._store.versions_kept} versions, its"
                " active one and the ones still in use, GATEWAY_VERSIONS_KEPT)"
            )
        return NotFound(detail)


def _check_shown(noun: str, name: str, head: Doc, shown: ShownActive) -> None:
    active = head.get("active_version")
    if active != shown.version:
        now = "none" if active is None else f"version {active}"
        was = "none" if shown.version is None else f"version {shown.version}"
        raise Conflict(
            f"the active version of {noun} {name!r} changed meanwhile: {now} is active, not "
            f"{was}; nothing was changed (look at its versions again, then choose)"
        )


def _shown(doc: Doc) -> Doc:
    """What the head shows of its active version (the list describes that one)."""
    if "direction" not in doc:
        return {}
    return {"direction": doc["direction"], "entity_type": doc.get("entity_type")}


def document_diff(old: Any, new: Any) -> dict[str, list[dict[str, Any]]]:
    """Added, removed and changed leaves between two parsed documents, by JSON Pointer."""
    out: dict[str, list[dict[str, Any]]] = {"added": [], "removed": [], "changed": []}
    _walk_diff(old, new, "", out)
    return out


def _walk_diff(old: Any, new: Any, at: str, out: dict[str, list[dict[str, Any]]]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            here = f"{at}/{str(key).replace('~', '~0').replace('/', '~1')}"
            if key not in new:
                out["removed"].append({"path": here, "old": old[key]})
            elif key not in old:
                out["added"].append({"path": here, "new": new[key]})
            else:
                _walk_diff(old[key], new[key], here, out)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _walk_diff(a, b, f"{at}/{i}", out)
    elif old != new or type(old) is not type(new):
        out["changed"].append({"path": at, "old": old, "new": new})


def _versions_diff(
    what: str, name: str, old: tuple[int, Doc], new: tuple[int, Doc]
) -> dict[str, Any]:
    """`VersionedDocuments.diff`'s answer (on a diff thread)."""
    (v1, a), (v2, b) = old, new
    changes = document_diff(a["document"], b["document"])
    matcher = _BudgetedMatcher(
        a["source"].splitlines(keepends=True), b["source"].splitlines(keepends=True), what
    )
    lines: list[str] = []
    for line in _unified(matcher, f"{name} v{v1}", f"{name} v{v2}"):
        if len(lines) == MAX_DIFF_LINES:
            raise OverBudget(
                f"versions {v1} and {v2} of {what} differ by more than {MAX_DIFF_LINES:,} "
                "lines of unified diff: too many to show line by line; read the two versions"
            )
        lines.append(line)
    return {"name": name, "from": v1, "to": v2, **changes, "unified": "".join(lines)}


class _BudgetedMatcher(difflib.SequenceMatcher[str]):
    """difflib's line matcher within MAX_DIFF_PAIRS and MAX_DIFF_SECONDS (`OverBudget`)."""

    a: Sequence[str]  # difflib's own, which its stubs do not declare
    b: Sequence[str]
    b2j: dict[str, list[int]]  # each line of b (its too frequent ones left out): where

    def __init__(self, a: Sequence[str], b: Sequence[str], what: str) -> None:
        super().__init__(None, a, b)
        self._what = what
        pairs = sum(len(self.b2j.get(line, ())) for line in a)
        if pairs > MAX_DIFF_PAIRS:
            raise OverBudget(
                f"the two versions of {what} have {pairs:,} pairs of equal lines to match, "
                f"more than the {MAX_DIFF_PAIRS:,} a diff may weigh (many repeated lines): "
                "too costly to show line by line; read the two versions"
            )
        self._deadline = time.thread_time() + MAX_DIFF_SECONDS

    def find_longest_match(
        self, alo: int = 0, ahi: int | None = None, blo: int = 0, bhi: int | None = None
    ) -> difflib.Match:
        if time.thread_time() > self._deadline:
            raise OverBudget(
                f"matching the lines of the two versions of {self._what} took more than "
                f"{MAX_DIFF_SECONDS:g} s: too costly to show line by line; read the two versions"
            )
        return super().find_longest_match(alo, ahi, blo, bhi)


def _unified(matcher: _BudgetedMatcher, fromfile: str, tofile: str) -> Iterator[str]:
    """`difflib.unified_diff` (3 lines of context) on a matcher of the caller's: nothing for
    equal versions."""
    a, b = matcher.a, matcher.b
    for n, group in enumerate(matcher.get_grouped_opcodes(3)):
        if n == 0:
            yield f"--- {fromfile}\n"
            yield f"+++ {tofile}\n"
        first, last = group[0], group[-1]
        yield f"@@ -{_hunk_range(first[1], last[2])} +{_hunk_range(first[3], last[4])} @@\n"
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                yield from (" " + line for line in a[i1:i2])
                continue
            if tag in {"replace", "delete"}:
                yield from ("-" + line for line in a[i1:i2])
            if tag in {"replace", "insert"}:
                yield from ("+" + line for line in b[j1:j2])


def _hunk_range(start: int, stop: int) -> str:
    """A hunk's range of lines as a unified diff writes it (`3`, `3,4`, `2,0` when empty)."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"
