"""Use case: actions, the admin-defined calls to a partner endpoint (invoked now by the
proxy, or delivered from subscriptions)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.actions.action_secrets import action_context
from gateway.actions.answer_rules import check_rules
from gateway.actions.body_check import BodyCheck, doc_id
from gateway.actions.catalog import Catalog
from gateway.actions.ordering import place_of
from gateway.actions.signing import first_signing
from gateway.actions.xml_body import compile_xml_body
from gateway.auth.secretbox import SecretBox
from gateway.clock import as_stored, utcnow
from gateway.errors import Conflict, NotFound
from gateway.formats.json_tree import is_text, whole_number
from gateway.mapping.expressions import compile_expression
from gateway.mapping_files.needs import action_needs
from gateway.mapping_files.source import MappingSource
from gateway.notify.channel_needs import refuse_if_channels_need, sms_action_problem
from gateway.notify.sandbox import off_loop, previewing
from gateway.outbound.urls import malformed_template
from gateway.store import Doc, Store, new_id

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MODES = ("proxy", "deliver")
_STATUS_CLASS = re.compile(r"^[1-5]xx$")


_ACTION_FIELDS = (
    "name",
    "partner_id",
    "method",
    "path",
    "mode",
    "request_mapping",
    "response_mapping",
    "success",
    "retry_schedule",
    "ordered",
    "write_back",
    "read_only",
    "xml_body",
    "error",
    "answer_rules",
)


def public_action(doc: Doc) -> dict[str, Any]:
    return {
        "id": doc_id(doc),
        **{k: doc.get(k) for k in _ACTION_FIELDS},
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    }


# The active flows that name an action (by its name or its id): (tenant, name) → users.
FlowUsers = Callable[[str, str], Awaitable[list[dict[str, Any]]]]


async def no_flow_users(tenant: str, name: str) -> list[dict[str, Any]]:
    return []


# Told of a change to an action or a partner a schedule may read with: (tenant, "action" or
# "partner", its id, the document before, after; a partner's as `feed_of_partner` gives it).
# The schedules reading with it start again when what names their feed changed
# (`ScheduleService.read_with_changed`, wired in services.py).
ReadWithChanged = Callable[[str, str, str, Doc, Doc], Awaitable[None]]


async def no_schedules(tenant: str, kind: str, ref: str, before: Doc, after: Doc) -> None:
    return None


def reads(action: Mapping[str, Any]) -> bool:
    """Whether an action only reads, so a schedule may run it: a GET, or a POST marked
    `read_only` (a JSON-RPC read such as Geotab's)."""
    return action["method"] == "GET" or bool(action.get("read_only"))


class ActionUseCases:
    """Create, read, update and delete actions (part of `ActionService`)."""

    _store: Store
    _box: SecretBox
    _catalog: Catalog
    _mappings: MappingSource | None
    _flow_users: FlowUsers
    _read_with_changed: ReadWithChanged

    async def create_action(self, tenant: str, body: Mapping[str, Any]) -> Doc:
        doc, _ = await self.create_action_with_secret(tenant, body)
        return doc

    async def create_action_with_secret(
        self, tenant: str, body: Mapping[str, Any]
    ) -> tuple[Doc, str]:
        """The stored action and its signing secret (shown this once: `action_secrets.py`)."""
        fields = await self._action_fields(tenant, body, None)
        oid, now = new_id(), as_stored(utcnow())
        signing, secret = first_signing(self._box, action_context(str(oid)), now)
        doc: Doc = {
            "_id": oid,
            "tenant": tenant,
            **fields,
            "signing": signing,
            "rev": 1,
            "created_at": now,
            "updated_at": now,
        }
        await self._store.actions.insert(doc)
        return doc, secret

    async def rotate_action_secret(
        self, tenant: str, action_id: str, *, shown: str | None = None
    ) -> dict[str, Any]:
        """A new signing secret for the action's proxy calls and schedules, `{id, secret,
        secret_rotated_at}` (`ActionSecrets.rotate`): the secret shown this once."""
        rotated = await self._catalog.action_secrets.rotate(tenant, action_id, shown=shown)
        self._catalog.forget(rotated["id"])
        return rotated

    async def get_action(self, tenant: str, action_id: str) -> Doc:
        doc = await self._store.actions.get(tenant, action_id)
        if doc is None:
            raise NotFound(f"no action {action_id!r}")
        return doc

    async def list_actions(
        self, tenant: str, filters: Mapping[str, str], *, after: str | None, limit: int
    ) -> list[Doc]:
        return await self._store.actions.list(tenant, filters, after=after, limit=limit)

    async def action_names(self, tenant: str, filters: Mapping[str, str]) -> list[Doc]:
        """Every action matching `filters` (a partner's): its id, name, partner, method, path
        and read_only, in one query (a page's select, a partner's list of actions)."""
        fields = ("name", "partner_id", "method", "path", "read_only")
        return await self._store.actions.every(tenant, filters, fields)

    async def update_action(self, tenant: str, action_id: str, body: Mapping[str, Any]) -> Doc:
        current = await self.get_action(tenant, action_id)
        action_id = str(current["_id"])  # as channels and schedules name it (any URL spelling)
        fields = await self._action_fields(tenant, {**_action_body(current), **body}, current)
        if fields["name"] != current["name"]:
            await self._refuse_rename(tenant, current["name"])
        await refuse_if_channels_need(
            self._store,
            tenant,
            "action_id",
            action_id,
            f"action {current['name']}",
            sms_action_problem,
            current,
            fields,
        )
        await self._refuse_if_schedules_read(tenant, action_id, current, fields)
        await self._refuse_if_subscribed(tenant, action_id, current, fields)
        # The schedules reading a feed this changes start again before the change is saved,
        # and again after it (a run meanwhile kept a cursor of the old feed): cut short by a
        # fault (a 503), nothing is saved, and the client's retry sees the change again.
        await self._read_with_changed(tenant, "action", action_id, current, {**current, **fields})
        fields["updated_at"] = utcnow()
        doc = await self._store.actions.update(tenant, action_id, current["rev"], fields)
        if doc is None:
            raise Conflict("the action was changed concurrently; retry")
        self._catalog.forget(action_id)
        if doc.get("partner_id") != current.get("partner_id"):
            # Its deliveries go to the new partner: they wait on its outage, not the old one's.
            await self._store.deliveries.repoint(
                tenant, action_id, str(doc["partner_id"]), utcnow()
            )
            # Its subscriptions say where their events go: to the new partner.
            await self._store.subscriptions.repoint(
                tenant, action_id, str(doc["partner_id"]), utcnow()
            )
        if doc.get("ordered"):
            # Its open deliveries take their places first: a new one waits for them. On every
            # save, not only the one that made it ordered: a fault placing them (a 503) is
            # finished by the PATCH retried, and `place` leaves a placed one as it is.
            partner_id = str(doc["partner_id"])
            for open_doc in await self._store.deliveries.unplaced(tenant, action_id, partner_id):
                if place := place_of(open_doc, action_id):
                    await self._store.deliveries.place(open_doc["_id"], place)
        await self._read_with_changed(tenant, "action", action_id, current, doc)
        return doc

    async def delete_action(self, tenant: str, action_id: str) -> None:
        """Delete an action nothing names: 409 while subscriptions, schedules, SMS channels or
        active flows do (they would fail on every event, run or message instead)."""
        doc = await self.get_action(tenant, action_id)
        action_id = str(doc["_id"])  # as what uses it names it (any URL spelling)
        users = await self._store.subscriptions.count(tenant, {"action_id": action_id})
        if users:
            raise Conflict(f"action {action_id} has {users} subscription(s); delete them first")
        found = await self._action_users(tenant, action_id, doc["name"])
        if found:
            named = ", ".join(f"{u['kind']} {u['name']}" for u in found)
            raise Conflict(f"action {action_id} is used by {named}", used_by=found)
        await self._store.actions.delete(tenant, action_id)
        self._catalog.forget(action_id)

    async def _refuse_rename(self, tenant: str, name: str) -> None:
        """An action an active flow names by its name keeps it: renamed, the flow would call
        whatever action bears the old name next (or fail on every run). By its id, it may."""
        found = await self._flow_users(tenant, name)
        if found:
            named = ", ".join(f"{u['kind']} {u['name']}" for u in found)
            raise Conflict(f"action {name!r} is named by {named}; it keeps its name", used_by=found)

    async def _refuse_if_schedules_read(
        self, tenant: str, action_id: str, current: Doc, changed: Doc
    ) -> None:
        """409 naming the schedules that read with the action, when the change makes it one
        they cannot read with (a schedule's save refuses it: every run would fail as
        `configuration`, backing off to hourly, or never send what it must): one that
        writes, or a GET for those that send a body (a cursor in it, a fixed `request.body`).
        """
        named: Doc = {"action_id": action_id}
        if reads(current) and not reads(changed):
            why = f"a {changed['method']} not marked read_only is no reading action"
        elif changed["method"] == "GET" and current["method"] != "GET":
            why = "they send a body (a cursor or request.body), which a GET does not"
            named["$or"] = [
                {"cursor.param": {"$regex": r"^body\."}},
                {"request.body": {"$nin": [None, {}]}},
            ]
        else:
            return
        schedules = await self._store.schedules.list(tenant, named, after=None, limit=50)
        if schedules:
            found = [
                {"kind": "schedule", "id": str(d["_id"]), "name": d["name"]} for d in schedules
            ]
            names = ", ".join(f"schedule {u['name']}" for u in found)
            raise Conflict(
                f"action {current['name']} is used by {names}, which reads with it: {why}",
                used_by=found,
            )

    async def _refuse_if_subscribed(
        self, tenant: str, action_id: str, current: Doc, changed: Doc
    ) -> None:
        """409 naming the subscriptions that deliver through the action, when the change
        takes it out of `deliver` mode: a subscription needs one (it is refused on a proxy
        action), and its events would go on being pushed through an action that says it
        only calls on demand."""
        if changed["mode"] == "deliver" or current["mode"] != "deliver":
            return
        named = {"action_id": action_id}
        subscriptions = await self._store.subscriptions.list(tenant, named, after=None, limit=50)
        if subscriptions:
            found = [{"kind": "subscription", "id": str(d["_id"])} for d in subscriptions]
            ids = ", ".join(u["id"] for u in found)
            raise Conflict(
                f"action {current['name']} delivers the events of subscription(s) {ids}: it "
                f"stays in deliver mode until they are deleted",
                used_by=found,
            )

    async def _action_users(self, tenant: str, action_id: str, name: str) -> list[dict[str, Any]]:
        named = {"action_id": action_id}
        schedules = await self._store.schedules.list(tenant, named, after=None, limit=50)
        channels = await self._store.notify.channels.list(tenant, named, after=None, limit=50)
        found = [
            {"kind": kind, "id": str(d["_id"]), "name": d["name"]}
            for kind, docs in (("schedule", schedules), ("channel", channels))
            for d in docs
        ]
        flows = {}  # a flow may name the action by its name and by its id
        for ref in (action_id, name):
            flows.update({u["name"]: u for u in await self._flow_users(tenant, ref)})
        return found + list(flows.values())

    async def _action_fields(
        self, tenant: str, body: Mapping[str, Any], current: Doc | None
    ) -> Doc:
        check = BodyCheck(body, set(_ACTION_FIELDS))
        fields: Doc = {
            "name": check.text("name"),
            "partner_id": check.text("partner_id", max_len=64),
            "method": check.choice("method", METHODS),
            "path": _path(check),
            "mode": check.choice("mode", MODES),
            "request_mapping": check.text("request_mapping", required=False),
            "response_mapping": check.text("response_mapping", required=False),
            "success": _success(check),
            "retry_schedule": _schedule(check),
            "ordered": check.flag("ordered"),
            "write_back": check.flag("write_back"),
            # A POST that only reads (a JSON-RPC read such as Geotab's GetFeed): schedules
            # may run it; they run GET actions and read-only ones, nothing that writes.
            "read_only": check.flag("read_only"),
            "xml_body": await _checked_xml_body(tenant, check),
            # A partner that refuses in a 2xx (OneSignal, SOAP services, JSON-RPC) says so
            # in its answer: this expression finds it.
            "error": _error(check),
            # Which answers are retried and which are final, where SPEC §5's defaults are
            # wrong for the partner (a throttle in a 200, a SOAP 1.1 Client fault in a 500).
            "answer_rules": check_rules(check.body.get("answer_rules"), check.problems),
        }
        if fields["write_back"] and not fields["response_mapping"]:
            check.add(
                "/write_back",
                "write_back needs a response_mapping to know which entity fields the answer holds",
                "dependentRequired",
            )
        saved_so = current is not None and (
            current.get("mode"),
            bool(current.get("write_back")),
        ) == (
            fields["mode"],
            True,
        )
        if fields["write_back"] and fields["mode"] not in (None, "proxy") and not saved_so:
            # One saved before this rule (2026-12-06) stays through a change of anything else.
            check.add(
                "/write_back",
                "write_back is for proxy actions: a deliver action's answers are not written back",
                "enum",
            )
        pid = fields["partner_id"]
        partner = await self._store.partners.get(tenant, pid) if pid else None
        if pid and partner is None:
            check.add("/partner_id", f"no partner {pid!r} in this tenant", "reference")
        elif partner is not None:
            fields["partner_id"] = str(partner["_id"])  # as stored, whatever the body's spelling
        for name in ("request_mapping", "response_mapping"):
            await self._check_mapping(tenant, check, name, fields[name])
        check.done("action")
        return fields

    async def _check_mapping(
        self, tenant: str, check: BodyCheck, field_name: str, name: str | None
    ) -> None:
        if name is None or self._mappings is None:
            return
        try:
            mapping = await self._mappings.active(tenant, name)
        except NotFound as exc:
            check.add(f"/{field_name}", exc.detail, "reference")
            return
        check.problems += action_needs(mapping, field_name, check.body)


# -- field checks ----------------------------------------------------------------------------


def _error(check: BodyCheck) -> str | None:
    """A JMESPath expression on the answer, or None; a 422 naming /error when it does not
    compile."""
    value = check.body.get("error")
    if value is None:
        return None
    if not is_text(value) or not value.strip():
        check.add("/error", "error is a JMESPath expression (text)", "type")
        return None
    if compile_expression(value)[0] is None:
        check.add("/error", f"error: {compile_expression(value)[1]}", "expression")
        return None
    return value


async def _checked_xml_body(tenant: str, check: BodyCheck) -> dict[str, Any] | None:
    """`_xml_body` on a render thread: its test render on the sample is an author's try, a
    preview of the tenant's (`previewing`)."""
    with previewing(tenant):
        return await off_loop(_xml_body, check)


def _xml_body(check: BodyCheck) -> dict[str, Any] | None:
    """An XML (SOAP) body template: compiled and test-rendered now, so a template that does not
    compile or renders no well-formed XML is a 422 naming /xml_body/...; stored as given."""
    value = check.body.get("xml_body")
    if value is None:
        return None
    if check.body.get("method") == "GET":
        check.add("/xml_body", "a GET sends no body; use POST (read_only for a read)", "method")
        return None
    mapped = bool(check.body.get("request_mapping"))
    if compile_xml_body(value, check.problems, mapped_charset=mapped) is None:
        return None
    return {k: value.get(k) for k in ("template", "soap", "soap_action", "sample")}


def _path(check: BodyCheck) -> str | None:
    path = check.body.get("path", "")
    if not is_text(path) or len(path) > 2000 or (path and not path.startswith("/")):
        check.add("/path", "path must be a string starting with /", "pattern")
        return None
    if malformed_template(path):
        check.add("/path", "path placeholders are {name} (letters, digits, _)", "pattern")
        return None
    return path


def _success(check: BodyCheck) -> list[int | str] | None:
    success = check.body.get("success")
    if success is None:
        return None
    if (
        not isinstance(success, list)
        or not success
        or not all(
            ((code := whole_number(s)) is not None and 100 <= code <= 599)
            or (isinstance(s, str) and _STATUS_CLASS.match(s))
            for s in success
        )
    ):
        check.add("/success", 'success is a list of status codes or classes like "2xx"', "type")
        return None
    return [s if isinstance(s, str) else int(s) for s in success]  # 200.0 is 200


def _schedule(check: BodyCheck) -> list[float] | None:
    schedule = check.body.get("retry_schedule")
    if schedule is None:
        return None
    week = 7 * 86400
    if (
        not isinstance(schedule, list)
        or len(schedule) > 30
        or not all(
            isinstance(s, int | float) and not isinstance(s, bool) and 0 <= s <= week
            for s in schedule
        )
    ):
        check.add(
            "/retry_schedule",
            "retry_schedule is up to 30 delays in seconds (0 to a week): the wait "
            "before each retry, the first attempt being made at once ([]: no retry)",
            "type",
        )
        return None
    return [float(s) for s in schedule]


def _action_body(doc: Doc) -> dict[str, Any]:
    return {k: doc[k] for k in _ACTION_FIELDS if doc.get(k) is not None}
