"""Use case: flows as versioned, tenant-owned documents (upload, versions, activate, roll back,
diff, delete), like mappings; and the compiled flows that run.

An upload is compiled (`compiler.py`) and its references checked in the tenant before anything
is stored: every named action exists (a GET for `fetch`, a write for `call`), every channel
exists, every template exists and is for its channel's type, every fixed address is one its
channel can send to (`channel_needs.address_problem`: the sender's own rules). The references
are checked even when the compiler found problems (`check_flow`): one refusal lists every
problem found.
Compiled versions are cached per process by (tenant, name, version): a version never
changes. `revision` counts the changes of active versions made through this process (the
starter's cache of active flows reads it).

A flow is paused and resumed by an admin (`pause`, `resume`): paused, its events still start
runs (stored as ever), but no runner runs a step of them: each run is `held` at its next step
(the one in flight finishes) until the flow is resumed, when the held runs go on (or, asked,
are `skipped`). The runner asks `is_paused` before every step, from the database: a pause
holds in every process at once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gateway.actions.catalog import Catalog
from gateway.clock import utcnow
from gateway.errors import FieldProblem, InvalidPayload, NotFound
from gateway.flows.compiler import check_flow, load_flow, what_failed
from gateway.flows.model import CompiledFlow, Reference
from gateway.models import RunStatus
from gateway.notify.channel_needs import address_problem
from gateway.store import Doc, Store
from gateway.store.client import canonical_ref
from gateway.store.flows import DIRECTION
from gateway.versioned import ShownActive, VersionedDocuments

_MAX_COMPILED = 2048
# The longest reason a pause may give (the API and the admin UI refuse a longer one).
MAX_PAUSE_REASON = 500
_WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True, slots=True)
class FlowVersion:
    name: str
    version: int
    active: bool
    source: str
    document: dict[str, Any]
    checksum: str
    author: str
    created_at: datetime
    created: bool = False
    # The flow's signing secret, on the upload that gave the flow its first (shown once).
    secret: str | None = None

    def as_dict(self, *, source: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "active": self.active,
            "events": self.document.get("on", {}).get("events", []),
            "checksum": self.checksum,
            "author": self.author,
            "created_at": self.created_at,
        }
        if source:
            data.update(source=self.source, document=self.document)
        return data


class FlowService:
    def __init__(self, store: Store, catalog: Catalog) -> None:
        self._store = store
        self._catalog = catalog
        self._flows = store.notify.flows
        self._compiled: OrderedDict[tuple[str, str, int], CompiledFlow] = OrderedDict()
        self.revision = 0
        # Wakes this process's runner when held runs are let go (set by the wiring).
        self.on_released: Callable[[], None] | None = None
        # A flow's versions its runs still run or may run again (a failed run's replay) are
        # kept when older versions are pruned.
        self._versions = VersionedDocuments(
            self._flows,
            "flow",
            make=_version,
            on_change=self._changed,
            recheck=self._recheck,
            pinned=store.notify.runs.pinned_versions,
        )

    async def compile(
        self, tenant: str, text: str | bytes | dict[str, Any], *, filename: str | None = None
    ) -> CompiledFlow:
        checked = check_flow(text, filename=filename)
        problems = checked.problems  # none when the flow compiled
        for ref in checked.references:
            if why := await self._check(tenant, ref):
                problems.add(ref.pointer, why, "reference")
        if checked.flow is not None:
            problems.raise_if_any(f"flow {checked.flow.name!r} names what the tenant lacks")
        problems.raise_if_any(what_failed(filename))
        assert checked.flow is not None
        return checked.flow

    async def _check(self, tenant: str, ref: Reference) -> str | None:
        if ref.kind == "action":
            return await self._check_action(tenant, ref)
        # A template's or an address's reference names the channel it goes with.
        channel_name = ref.name if ref.kind == "channel" else ref.needs
        channel = await self._store.notify.channels.by_ref(tenant, channel_name)
        if ref.kind == "channel":
            return None if channel else f"no channel {ref.name!r}"
        if ref.kind == "address":  # a missing channel is its own reference's problem
            return None if channel is None else address_problem(channel, ref.name)
        template = await self._store.notify.templates.by_ref(tenant, ref.name)
        if template is None:
            return f"no template {ref.name!r}"
        if channel is not None and template["channel_type"] != channel["type"]:
            return (
                f"template {ref.name!r} is for {template['channel_type']}, "
                f"channel {channel['name']!r} is {channel['type']}"
            )
        return None

    async def _check_action(self, tenant: str, ref: Reference) -> str | None:
        action = await self._store.actions.get(tenant, ref.name)
        if action is None:
            named = await self._store.actions.list(tenant, {"name": ref.name}, after=None, limit=2)
            if len(named) > 1:
                return f"two actions are named {ref.name!r}; use the id"
            action = named[0] if named else None
        if action is None:
            return f"no action {ref.name!r}"
        if ref.needs == "GET" and action["method"] != "GET":
            return f"fetch needs a GET action; {ref.name!r} is {action['method']}"
        if ref.needs == "write" and action["method"] not in _WRITES:
            return "call needs a POST, PUT, PATCH or DELETE action; not GET"
        return None

    # -- versions ----------------------------------------------------------------------------

    async def upload(
        self,
        tenant: str,
        text: str | bytes,
        *,
        author: str,
        activate: bool = True,
        filename: str | None = None,
    ) -> FlowVersion:
        """A new version (active unless `activate=False`); the same text as the latest version
        returns that version (activated when asked). A flow without a signing secret is given
        one, in the answer (`secret`) this once."""
        flow = await self.compile(tenant, text, filename=filename)
        version, created = await self._versions.add(
            tenant,
            flow.name,
            text,
            {"document": dict(flow.source)},
            author=author,
            activate=activate,
            direction=DIRECTION,
        )
        if created:
            self._compiled[(tenant, flow.name, version)] = flow
        secret = await self._catalog.flow_secrets.issue(tenant, flow.name)
        found = await self.get(tenant, flow.name, version)
        return replace(found, created=created, secret=secret)

    async def rotate_secret(
        self, tenant: str, name: str, *, shown: str | None = None
    ) -> dict[str, Any]:
        """A new signing secret for the flow's calls, `{name, secret, secret_rotated_at}`
        (`FlowSecrets.rotate`): the secret shown this once."""
        rotated = await self._catalog.flow_secrets.rotate(tenant, name, shown=shown)
        self._catalog.forget(name)
        return rotated

    async def secret_revision(self, tenant: str, name: str) -> str:
        """What the flow page's *Rotate* carries (`FlowSecrets.revision`)."""
        return await self._catalog.flow_secrets.revision(tenant, name)

    async def get(self, tenant: str, name: str, version: int | None = None) -> FlowVersion:
        return await self._versions.get(tenant, name, version)

    async def versions(self, tenant: str, name: str) -> list[FlowVersion]:
        return await self._versions.versions(tenant, name)

    async def find(self, tenant: str, *, after: str | None, limit: int) -> list[dict[str, Any]]:
        heads = await self._flows.heads(tenant, after=after, limit=limit)
        return [
            {
                "name": h["name"],
                "active_version": h.get("active_version"),
                "latest_version": h["latest_version"],
                "paused": h.get("paused"),
                "updated_at": h["updated_at"],
            }
            for h in heads
        ]

    async def activate(
        self, tenant: str, name: str, version: int, *, shown: ShownActive | None = None
    ) -> FlowVersion:
        return await self._versions.activate(tenant, name, version, shown=shown)

    async def rollback(
        self, tenant: str, name: str, *, shown: ShownActive | None = None
    ) -> FlowVersion:
        return await self._versions.rollback(tenant, name, shown=shown)

    async def diff(self, tenant: str, name: str, v1: int, v2: int) -> dict[str, Any]:
        return await self._versions.diff(tenant, name, v1, v2)

    async def delete(self, tenant: str, name: str) -> None:
        await self._versions.head_to_delete(tenant, name)
        await self._flows.delete(tenant, name)
        self._changed(tenant, name)
        # Held runs are claimed by no runner: pending again, they fail as every run of a
        # deleted flow does at its next try, instead of waiting for a resume that cannot come.
        if await self._store.notify.runs.let_go_held(tenant, name, utcnow(), skip=False):
            if self.on_released is not None:
                self.on_released()

    # -- pause and resume --------------------------------------------------------------------

    async def pause(
        self, tenant: str, name: str, *, by: str, reason: str | None = None
    ) -> dict[str, Any]:
        """Hold the flow's runs at their next step until `resume`; pausing a paused flow
        keeps its first note. {name, paused: {at, by, reason}, held: runs held so far}. A
        reason longer than MAX_PAUSE_REASON characters is refused (422 at `/reason`), never
        cut."""
        if reason is not None and len(reason) > MAX_PAUSE_REASON:
            message = f"reason is a text of at most {MAX_PAUSE_REASON}"
            raise InvalidPayload("invalid pause", [FieldProblem("/reason", message, "maxLength")])
        note = {"at": utcnow(), "by": by, "reason": reason}
        head = await self._flows.set_paused(tenant, name, note)
        if head is None:
            raise NotFound(f"no flow {name!r}")
        return await self.pause_state(tenant, name, head)

    async def resume(self, tenant: str, name: str, *, skip: bool = False) -> dict[str, Any]:
        """Run the flow's steps again; its held runs go on from their step (due when they
        were: in their events' order), or, with `skip`, end `skipped`. {name, paused: null,
        released, skipped}. Resuming a flow that is not paused lets go any run still held."""
        now = utcnow()
        resumed = {"at": now, "skip": skip}
        if await self._flows.set_paused(tenant, name, None, resumed=resumed) is None:
            raise NotFound(f"no flow {name!r}")
        moved = await self._store.notify.runs.let_go_held(tenant, name, now, skip=skip)
        if moved and not skip and self.on_released is not None:
            self.on_released()
        return {
            "name": name,
            "paused": None,
            "released": 0 if skip else moved,
            "skipped": moved if skip else 0,
        }

    async def pause_state(self, tenant: str, name: str, head: Doc | None = None) -> dict[str, Any]:
        """{name, paused: the note or null, held: how many runs wait for the resume}."""
        if head is None:
            head = await self._versions.head(tenant, name)
        held = await self._store.notify.runs.count(tenant, name, RunStatus.HELD.value)
        return {"name": name, "paused": head.get("paused"), "held": held}

    async def is_paused(self, tenant: str, name: str) -> bool:
        head = await self._flows.head(tenant, name)
        return head is not None and bool(head.get("paused"))

    async def let_go_if_resumed(
        self, tenant: str, name: str, run_id: str, created_at: datetime
    ) -> bool:
        """After a runner held a run: a resume that came between its look and its write has
        let go the runs held before it, not this one; let it go as that resume said (a run
        started before a resume that skipped is skipped). True when it let it go."""
        head = await self._flows.head(tenant, name)
        if head is None or head.get("paused"):
            return False
        resumed = head.get("resumed") or {}
        skip = bool(resumed.get("skip")) and _aware(created_at) <= _aware(resumed.get("at"))
        runs = self._store.notify.runs
        return await runs.let_go_held(tenant, name, utcnow(), skip=skip, run_id=run_id) == 1

    def _changed(self, tenant: str, name: str) -> None:
        self.revision += 1  # the starter's cache of active flows reads it

    async def _recheck(self, tenant: str, doc: Doc) -> None:
        await self.compile(tenant, doc["source"])  # what it names may be gone since

    # -- compiled flows ----------------------------------------------------------------------

    async def compiled(self, tenant: str, name: str, version: int | None = None) -> CompiledFlow:
        if version is None:
            version = (await self.get(tenant, name)).version
        key = (tenant, name, version)
        flow = self._compiled.get(key)
        if flow is None:
            doc = await self._versions.version_doc(tenant, name, version)
            flow = self._cache(key, load_flow(doc["source"], strict=False))
        return flow

    def _cache(self, key: tuple[str, str, int], flow: CompiledFlow) -> CompiledFlow:
        self._compiled[key] = flow
        if len(self._compiled) > _MAX_COMPILED:
            self._compiled.popitem(last=False)
        return flow

    async def runnable(self, tenant: str, name: str, version: int) -> CompiledFlow:
        """The version a run is pinned to, while it is stored: a deleted flow's runs stop
        (NotFound), in every process, though the compiled version may still be cached. Its
        version, not its name: deleting removes the versions and a flow uploaded again under
        the name gets new numbers, so the old runs stay stopped."""
        doc = await self._versions.version_doc(tenant, name, version)
        key = (tenant, name, version)
        if (flow := self._compiled.get(key)) is not None:
            return flow
        return self._cache(key, load_flow(doc["source"], strict=False))

    async def active(self, tenant: str) -> list[tuple[int, CompiledFlow]]:
        """The tenant's active flows with their versions (read from the database)."""
        return [
            (doc["version"], await self.compiled(tenant, doc["name"], doc["version"]))
            for doc in await self._flows.active_versions(tenant)
        ]

    async def users_of(self, tenant: str, kind: str, name: str) -> list[dict[str, Any]]:
        """Active flows that name an action, channel or template (they refuse its deletion
        while used); an id in any spelling the store finds it by."""
        users, ref = [], canonical_ref(name)
        for version, flow in await self.active(tenant):
            if any(r.kind == kind and canonical_ref(r.name) == ref for r in flow.references):
                users.append({"kind": "flow", "name": flow.name, "version": version})
        return users


def _aware(value: Any) -> datetime:
    """A stored time as an aware UTC datetime (the embedded database gives naive ones)."""
    if not isinstance(value, datetime):
        return datetime.min.replace(tzinfo=UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _version(doc: Doc, active: Any) -> FlowVersion:
    return FlowVersion(
        name=doc["name"],
        version=doc["version"],
        active=doc["version"] == active,
        source=doc["source"],
        document=doc["document"],
        checksum=doc["checksum"],
        author=doc["author"],
        created_at=doc["created_at"],
    )
