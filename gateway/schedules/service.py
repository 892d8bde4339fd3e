"""Use case: schedules as admin resources (create, list, get, change, delete, pause, resume,
run now) and their runs."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from gateway.actions.definitions import reads
from gateway.actions.xml_body import compile_xml_body
from gateway.clock import as_stored, utcnow
from gateway.errors import Conflict, FieldProblem, NotFound
from gateway.mapping_files.needs import schedule_needs
from gateway.mapping_files.source import MappingSource
from gateway.schedules.spec import check_fields, public_schedule
from gateway.schedules.timing import every_from_doc
from gateway.schemas.compiled import invalid
from gateway.store import Doc, Store, new_id
from gateway.store.client import name_containing
from gateway.store.schedules import FREE, due_at


def public_run(doc: Doc) -> dict[str, Any]:
    return {
        "id": str(doc["_id"]),
        **{k: doc.get(k) for k in _RUN_FIELDS},
    }


_RUN_FIELDS = (
    "started_at",
    "finished_at",
    "duration_ms",
    "outcome",
    "pages",
    "items_read",
    "written",
    "rejected",
    "skipped",
    "cursor_before",
    "cursor_after",
    "cursor_refused",
    "note",
    "error",
    "item_errors",
    "owner",
)


# What a reset writes: no cursor (the next call carries `cursor.initial`), no page digest,
# no runs in a row, no failure streak (its failures came from the cursor it drops, so none
# of its back-off is kept: the schedule is due at once, `_reset`), and the lease taken from
# a run in flight: its next page is not landed (`Poll._page` lands it only while the run
# holds the lease) nor its cursor committed (fenced by the lease), so it cannot put back a
# cursor of the old definition. The schedule is then free to claim.
_RESET: Final[Doc] = {
    "cursor_value": None,
    "last_digest": None,
    "runs_in_row": 0,
    "failures": 0,
    "lease_until": FREE,
}
_RESET_UNSET: Final = ("lease_owner",)
# The members that say which feed the cursor is a position in: the partner's call
# (`action_id`), the fixed parts of the request that name the feed (`request`: Geotab's
# `typeName`, Samsara's `types`, a SOAP body's operation) and the cursor itself. A cursor of
# one of them means nothing to another: a PATCH of one resets.
READ_BY: Final = frozenset({"cursor", "action_id", "request"})
# What names the feed as much in the action the schedule reads with (its partner, its method
# and path: Samsara names its feeds by path, what builds its request) and in that action's
# partner (where it is called, and whose account is read: `account_of`, Geotab's `database`,
# versions being per database): a change to one of these starts every schedule reading with
# it again, as a PATCH of its own `READ_BY` does (`read_with_changed`).
ACTION_READ_BY: Final = ("partner_id", "method", "path", "request_mapping", "xml_body")
PARTNER_READ_BY: Final = ("base_url", "account")


class ScheduleService:
    def __init__(
        self,
        store: Store,
        mappings: MappingSource,
        target_types: Sequence[str],
        *,
        on_due: Callable[[], None] = lambda: None,
        on_delete: Callable[[str], None] = lambda schedule_id: None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """`on_delete`: told the stored id of every schedule this process deleted (its metric
        series go)."""
        self._store = store
        self._on_delete = on_delete
        self._mappings = mappings
        self._types = tuple(target_types)
        self._on_due = on_due
        self._clock = clock

    @property
    def target_types(self) -> tuple[str, ...]:
        """Where this gateway's schedules can land pages ("entities", and what others add)."""
        return self._types

    async def create(self, tenant: str, body: Mapping[str, Any]) -> dict[str, Any]:
        fields = await self._checked(tenant, body)
        now = as_stored(self._clock())
        doc: Doc = {
            "_id": new_id(),
            "tenant": tenant,
            **fields,
            **due_at(now),
            "lease_until": FREE,
            "cursor_value": None,
            "last_digest": None,
            "seen": [],
            "failures": 0,
            "rev": 1,
            "created_at": now,
            "updated_at": now,
        }
        if await self._store.schedules.kept_twin_of(tenant, doc["name"]):
            raise Conflict("a resource with this key already exists")
        await self._store.schedules.insert(doc)
        self._on_due()
        return self._public(doc)

    async def list(
        self, tenant: str, *, after: str | None, limit: int, name: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """A page of schedules, by id; with `name`, those whose name holds it (any case)."""
        docs = await self._store.schedules.list(
            tenant, name_containing(name), after=after, limit=limit
        )
        return [self._public(d) for d in docs]

    async def get(self, tenant: str, schedule_id: str) -> dict[str, Any]:
        return self._public(await self._doc(tenant, schedule_id))

    async def update(
        self, tenant: str, schedule_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge `body` into the definition (objects are replaced whole). The state
        (remembered ids, failures) is kept, and so is the cursor, unless the change is to what
        it is read by (`READ_BY`: `cursor`, `action_id`, `request`): a cursor of one partner
        call, feed or kind means nothing to another, so the schedule then starts again from
        `cursor.initial`, due at once (`_reset`). A new `every` or time zone times the next
        run (`_next_run`). The remembered ids are forgotten when `dedupe.by` changes (they are
        another expression's) or `cursor` does (the feed read again from a point, as to write
        again what a fixed mapping wrote wrong)."""
        current = await self._doc(tenant, schedule_id)
        fields = await self._checked(tenant, {**_definition(current), **body})
        if body.get("name") in (None, current.get("name")):
            # Not renamed: kept as stored (a twin the one-time NFC step kept, composed,
            # would collide with its NFC twin: a 409 for a change of anything else).
            fields["name"] = current.get("name", fields["name"])
        elif await self._store.schedules.kept_twin_of(tenant, fields["name"], current["_id"]):
            raise Conflict("a resource with this key already exists")
        now = fields["updated_at"] = self._clock()
        if _dedupe_by(fields) != _dedupe_by(current) or fields["cursor"] != current.get("cursor"):
            # Ids of another expression, or the feed read again from a point: with them the
            # last page's digest, or the same items written again would be taken for a loop.
            fields["seen"], fields["last_digest"] = [], None
        if any(fields[name] != current.get(name) for name in READ_BY):
            return await self._reset(tenant, schedule_id, current, {**fields, **_RESET}, now)
        if fields["every"] != current.get("every"):
            fields.update(_next_run(current, fields["every"], now))
        doc = await self._store.schedules.update(tenant, schedule_id, current["rev"], fields, ())
        if doc is None:
            raise Conflict("the schedule was changed concurrently; retry")
        return self._public(doc)

    async def reset(self, tenant: str, schedule_id: str) -> dict[str, Any]:
        """Start again from `cursor.initial`, due at once (`_RESET`); the remembered ids are
        kept."""
        current = await self._doc(tenant, schedule_id)
        now = self._clock()
        return await self._reset(tenant, schedule_id, current, {**_RESET, "updated_at": now}, now)

    async def read_with_changed(
        self, tenant: str, kind: str, ref: str, before: Doc, after: Doc
    ) -> None:
        """An action (`kind` "action") or a partner ("partner") changed: when what in it
        names the feed changed (`ACTION_READ_BY`, `PARTNER_READ_BY`), every schedule reading
        with it (with any of the partner's actions) starts again from `cursor.initial`, due
        at once, as after `reset`: its cursor is a position in the feed it no longer reads."""
        members = ACTION_READ_BY if kind == "action" else PARTNER_READ_BY
        if all(before.get(name) == after.get(name) for name in members):
            return
        action_ids = [ref]
        if kind == "partner":
            actions = await self._store.actions.every(tenant, {"partner_id": ref}, ("_id",))
            action_ids = [str(doc["_id"]) for doc in actions]
        now = self._clock()
        fields = {**_RESET, **due_at(now), "updated_at": now}
        if await self._store.schedules.start_again(tenant, action_ids, fields, _RESET_UNSET):
            self._on_due()

    async def _reset(
        self, tenant: str, schedule_id: str, current: Doc, fields: Doc, now: datetime
    ) -> dict[str, Any]:
        """Write `fields` (a reset's among them) and make the schedule due at once."""
        fields = {**fields, **due_at(now)}
        doc = await self._store.schedules.update(
            tenant, schedule_id, current["rev"], fields, _RESET_UNSET
        )
        if doc is None:
            raise Conflict("the schedule was changed concurrently; retry")
        self._on_due()
        return self._public(doc)

    async def delete(self, tenant: str, schedule_id: str) -> None:
        """The schedule, its runs and the items its pages could not write. A run in flight
        writes nothing more: its page is fenced by the lease before it lands and its commit
        by the lease, and its run record is taken back (`ScheduleStore.add_run`)."""
        # Runs and kept items name their schedule by the stored `str(_id)`, not the URL's
        # spelling of it.
        stored = str((await self._doc(tenant, schedule_id))["_id"])
        await self._store.schedules.delete(tenant, stored)
        await self._store.schedules.delete_runs(tenant, stored)
        await self._store.rejected.delete_for_trigger(tenant, stored)
        self._on_delete(stored)

    async def pause(self, tenant: str, schedule_id: str) -> dict[str, Any]:
        return await self._status(tenant, schedule_id, "paused")

    async def resume(self, tenant: str, schedule_id: str) -> dict[str, Any]:
        return await self._status(tenant, schedule_id, "active")

    async def run_now(self, tenant: str, schedule_id: str) -> dict[str, Any]:
        doc = await self._doc(tenant, schedule_id)
        if doc["status"] != "active":
            raise Conflict("the schedule is paused; resume it first")
        updated = await self._store.schedules.run_now(tenant, schedule_id, self._clock())
        if updated is None:
            raise NotFound(f"no schedule {schedule_id!r}")
        self._on_due()
        return self._public(updated)

    async def runs(
        self, tenant: str, schedule_id: str, *, before: str | None, limit: int
    ) -> builtins.list[dict[str, Any]]:
        stored = str((await self._doc(tenant, schedule_id))["_id"])
        docs = await self._store.schedules.runs(tenant, stored, before=before, limit=limit)
        return [public_run(d) for d in docs]

    async def _status(self, tenant: str, schedule_id: str, status: str) -> dict[str, Any]:
        await self._doc(tenant, schedule_id)
        doc = await self._store.schedules.set_status(tenant, schedule_id, status, self._clock())
        if doc is None:
            raise NotFound(f"no schedule {schedule_id!r}")
        if status == "active":
            self._on_due()
        return self._public(doc)

    async def _doc(self, tenant: str, schedule_id: str) -> Doc:
        doc = await self._store.schedules.get(tenant, schedule_id)
        if doc is None:
            raise NotFound(f"no schedule {schedule_id!r}")
        return doc

    def _public(self, doc: Doc) -> dict[str, Any]:
        lease = doc.get("lease_until") or FREE
        return public_schedule(doc, running="lease_owner" in doc and lease > self._clock())

    async def _checked(self, tenant: str, body: Mapping[str, Any]) -> Doc:
        fields, problems = check_fields(body, self._types)
        if fields["action_id"] is not None:
            problems += await self._action_problems(tenant, fields["action_id"], fields)
        if fields["mapping"] is not None and fields["target"] is not None:
            problems += await self._mapping_problems(tenant, fields["mapping"], fields["target"])
        if problems:
            raise invalid("schedule", problems)
        return fields

    async def _action_problems(
        self, tenant: str, action_id: str, fields: Doc
    ) -> builtins.list[FieldProblem]:
        action = await self._store.actions.get(tenant, action_id)
        if action is None:
            return [
                FieldProblem("/action_id", f"no action {action_id!r} in this tenant", "reference")
            ]
        fields["action_id"] = str(action["_id"])  # as stored: deleting the action finds it
        if not reads(action):
            message = (
                f"a schedule reads: action {action['name']!r} is a {action['method']}; use a GET "
                "action, or mark a POST that only reads (JSON-RPC) read_only"
            )
            return [FieldProblem("/action_id", message, "reference")]
        if action["method"] == "GET":
            return _bodiless_problems(action, fields)
        if action.get("xml_body") and not action.get("request_mapping"):
            return _xml_body_problems(action, tenant, fields)
        return []

    async def _mapping_problems(
        self, tenant: str, name: str, target: Doc
    ) -> builtins.list[FieldProblem]:
        if not isinstance(name, str) or not name:
            message = "mapping is the name of an inbound mapping"
            return [FieldProblem("/target/mapping", message, "type")]
        try:
            mapping = await self._mappings.active(tenant, name)
        except NotFound as exc:
            return [FieldProblem("/target/mapping", exc.detail, "reference")]
        return schedule_needs(mapping, "mapping", {"target": target})


def _definition(doc: Doc) -> dict[str, Any]:
    """The stored definition back in the shape an admin writes it."""
    target = {**doc["target"], "mapping": doc.get("mapping")}
    body: dict[str, Any] = {
        "name": doc["name"],
        "action_id": doc["action_id"],
        "every": doc["every"]["text"],
        "target": {k: v for k, v in target.items() if v is not None},
        "max_pages": doc["max_pages"],
        "status": doc["status"],
    }
    if doc["every"].get("timezone"):
        body["timezone"] = doc["every"]["timezone"]
    for name in ("cursor", "dedupe", "request", "error"):
        if doc.get(name) is not None:
            body[name] = doc[name]
    if body.get("cursor"):
        body["cursor"] = {k: v for k, v in body["cursor"].items() if v is not None}
    return body


def _bodiless_problems(action: Doc, fields: Doc) -> builtins.list[FieldProblem]:
    """A GET sends no body: a cursor placed in it (`cursor.param` `body.…`) would never reach
    the partner (every call the first page, and the run a `loop` blamed on the partner), nor
    would a fixed `request.body`. Each is the schedule's problem, at its own member."""
    why = (
        f"action {action['name']!r} is a GET, which sends no body; read with a POST marked "
        "read_only to send one"
    )
    problems: builtins.list[FieldProblem] = []
    param = (fields.get("cursor") or {}).get("param")
    if isinstance(param, str) and param.startswith("body."):
        place = param.removeprefix("body.")
        message = f"{param} would never be sent: {why}, or send the cursor as query.{place}"
        problems.append(FieldProblem("/cursor/param", message, "method"))
    if (fields.get("request") or {}).get("body"):
        message = f"a body would never be sent: {why}, or put its members in request.query"
        problems.append(FieldProblem("/request/body", message, "method"))
    return problems


def _xml_body_problems(action: Doc, tenant: str, fields: Doc) -> builtins.list[FieldProblem]:
    """The action's XML (SOAP) body rendered on this schedule's first call (its fixed body,
    its initial cursor): what it cannot render is the schedule's problem, at /request/body."""
    cursor = (fields.get("cursor") or {}).get("initial")
    sample = {
        "body": (fields.get("request") or {}).get("body") or {},
        "cursor": cursor,
        "tenant": tenant,
        "schedule": {"id": "", "name": fields.get("name")},
    }
    found: builtins.list[FieldProblem] = []
    mapped = bool(action.get("request_mapping"))
    compile_xml_body({**action["xml_body"], "sample": sample}, found, mapped_charset=mapped)
    return [
        FieldProblem("/request/body", f"action {action['name']!r}: {p.message}", p.keyword, p.extra)
        for p in found
    ]


def _dedupe_by(doc: Mapping[str, Any]) -> object:
    dedupe = doc.get("dedupe")
    return dedupe.get("by") if isinstance(dedupe, Mapping) else None


def _next_run(current: Doc, every: dict[str, object], now: datetime) -> Doc:
    """When a schedule whose `every` (or zone) changed between runs runs next (`next_run_at`,
    `planned_at`): as the new definition times it from the last run's start (from now when it
    never ran), as the end of a run would have (`runner.py`). Unchanged when it is due
    already (it runs at once), or waiting out a failure's back-off (the back-off still
    governs)."""
    stored = current.get("next_run_at")
    if isinstance(stored, datetime) and (current.get("failures") or stored <= now):
        return {"next_run_at": stored}
    last = current.get("last_run_at")
    base = last if isinstance(last, datetime) else now
    parsed = every_from_doc(every)
    due = parsed.next_after(base)
    # An interval's next run is a wait from now (at most `every`); a cron's is its wall time.
    return {"next_run_at": due, "planned_at": None if parsed.cron else now}
