"""Use case: partner endpoints, actions and subscriptions as admin-managed resources.

Bodies are checked whole (every problem listed with its JSON Pointer) before anything is
stored. Partner credentials and subscription secrets are sealed before they are stored and
never leave this module in clear, except a subscription secret in the answer that creates or
rotates it (shown once).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bson import ObjectId
from yarl import URL

from gateway.actions.catalog import (
    Catalog,
    auth_context,
    secrets_context,
    subscription_context,
)
from gateway.actions.fanout import compile_filter, event_type_problem
from gateway.actions.partner_auth import build_auth
from gateway.auth.secretbox import SecretBox
from gateway.auth.webhook_signature import generate_secret
from gateway.errors import Conflict, FieldProblem, InvalidPayload, NotFound
from gateway.mapping import CompiledMapping
from gateway.store import Doc, Store

ROTATION_GRACE = timedelta(hours=24)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MODES = ("proxy", "deliver")
MAX_TIMEOUT_SECONDS = 60.0
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_STATUS_CLASS = re.compile(r"^[1-5]xx$")
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class MappingSource(Protocol):
    async def active(self, tenant: str, name: str) -> CompiledMapping: ...


class _Check:
    """Collects every problem of a body before raising one InvalidPayload."""

    def __init__(self, body: Mapping[str, Any], allowed: set[str]) -> None:
        self.body = body
        self.problems = [
            FieldProblem(f"/{k}", f"unknown field {k!r}", "additionalProperties")
            for k in body
            if k not in allowed
        ]

    def add(self, pointer: str, message: str, keyword: str) -> None:
        self.problems.append(FieldProblem(pointer, message, keyword))

    def text(self, name: str, *, required: bool = True, max_len: int = 200) -> str | None:
        value = self.body.get(name)
        if value is None:
            if required:
                self.add(f"/{name}", f"{name} is required", "required")
            return None
        if not isinstance(value, str) or not value.strip() or len(value) > max_len:
            self.add(
                f"/{name}",
                f"{name} must be a non-empty string of at most {max_len} characters",
                "type",
            )
            return None
        return value

    def number(
        self,
        name: str,
        low: float,
        high: float,
        *,
        integer: bool = False,
        default: float | None = None,
    ) -> float | None:
        value = self.body.get(name, default)
        if value is None:
            return None
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            what = "an integer" if integer else "a number"
            self.add(f"/{name}", f"{name} must be {what} from {low:g} to {high:g}", "maximum")
            return None
        return value

    def flag(self, name: str) -> bool:
        value = self.body.get(name) or False
        if not isinstance(value, bool):
            self.add(f"/{name}", f"{name} must be true or false", "type")
            return False
        return value

    def choice(self, name: str, options: tuple[str, ...]) -> str | None:
        value = self.body.get(name)
        if value not in options:
            self.add(f"/{name}", f"{name} must be one of {', '.join(options)}", "enum")
            return None
        return str(value)

    def done(self, what: str) -> None:
        if self.problems:
            raise InvalidPayload(f"invalid {what}", self.problems)


def _now() -> datetime:
    return datetime.now(UTC)


def _id(doc: Doc) -> str:
    return str(doc["_id"])


# -- views: what the API shows (never a credential) ------------------------------------------


def public_partner(doc: Doc) -> dict[str, Any]:
    return {
        "id": _id(doc),
        "name": doc["name"],
        "base_url": doc["base_url"],
        "auth": {"type": doc["auth_type"], "configured": True},
        "secrets": sorted(doc.get("secret_names", [])),
        "timeout_seconds": doc["timeout_seconds"],
        "max_concurrency": doc["max_concurrency"],
        "rate_limit": doc.get("rate_limit"),
        "disable_after_hours": doc.get("disable_after_hours"),
        "status": doc.get("status", "active"),
        "failing_since": doc.get("failing_since"),
        "disabled_at": doc.get("disabled_at"),
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    }


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
)


def public_action(doc: Doc) -> dict[str, Any]:
    return {
        "id": _id(doc),
        **{k: doc.get(k) for k in _ACTION_FIELDS},
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    }


def public_subscription(doc: Doc) -> dict[str, Any]:
    return {
        "id": _id(doc),
        "action_id": doc["action_id"],
        "partner_id": doc.get("partner_id"),
        "event_types": doc["event_types"],
        "filter": doc.get("filter") or {},
        "status": doc["status"],
        "disabled_reason": doc.get("disabled_reason"),
        "secret_rotated_at": doc.get("secret_rotated_at"),
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    }


class ActionService:
    def __init__(
        self, store: Store, box: SecretBox, catalog: Catalog, mappings: MappingSource | None = None
    ) -> None:
        self._store = store
        self._box = box
        self._catalog = catalog
        self._mappings = mappings

    # -- partners ----------------------------------------------------------------------------

    async def create_partner(self, tenant: str, body: Mapping[str, Any]) -> Doc:
        oid, now = ObjectId(), _now()
        doc = self._partner_fields(str(oid), body, creating=True)
        doc.update(_id=oid, tenant=tenant, status="active", rev=1, created_at=now, updated_at=now)
        await self._store.partners.insert(doc)
        return doc

    async def get_partner(self, tenant: str, partner_id: str) -> Doc:
        doc = await self._store.partners.get(tenant, partner_id)
        if doc is None:
            raise NotFound(f"no partner {partner_id!r}")
        return doc

    async def list_partners(self, tenant: str, *, after: str | None, limit: int) -> list[Doc]:
        return await self._store.partners.list(tenant, after=after, limit=limit)

    async def update_partner(self, tenant: str, partner_id: str, body: Mapping[str, Any]) -> Doc:
        """Merge `body` into the partner; `auth` and `secrets` are replaced whole."""
        current = await self.get_partner(tenant, partner_id)
        fields = self._partner_fields(partner_id, body, creating=False)
        status = body.get("status")
        unset: tuple[str, ...] = ()
        if status == "active":
            fields["status"] = "active"
            unset = ("disabled_at", "probe_at", "failing_since")
        elif status == "disabled":
            fields.update(
                status="disabled", disabled_at=_now(), probe_at=datetime.max.replace(tzinfo=UTC)
            )
        fields["updated_at"] = _now()
        doc = await self._store.partners.update(tenant, partner_id, current["rev"], fields, unset)
        if doc is None:
            raise Conflict("the partner was changed concurrently; retry")
        self._catalog.forget(partner_id)
        return doc

    async def delete_partner(self, tenant: str, partner_id: str) -> None:
        await self.get_partner(tenant, partner_id)
        users = await self._store.actions.count(tenant, {"partner_id": partner_id})
        if users:
            raise Conflict(f"partner {partner_id} is used by {users} action(s); delete them first")
        await self._store.partners.delete(tenant, partner_id)
        self._catalog.forget(partner_id)

    def _partner_fields(self, partner_id: str, body: Mapping[str, Any], *, creating: bool) -> Doc:
        allowed = {
            "name",
            "base_url",
            "auth",
            "timeout_seconds",
            "max_concurrency",
            "rate_limit",
            "disable_after_hours",
            "secrets",
        }
        if not creating:
            allowed.add("status")
        check = _Check(body, allowed)
        fields: Doc = {}
        if creating or "name" in body:
            fields["name"] = check.text("name")
        if creating or "base_url" in body:
            fields["base_url"] = _base_url(check)
        if creating or "auth" in body:
            fields.update(_sealed_auth(check, self._box, partner_id))
        for name, low, high, integer, default in (
            ("timeout_seconds", 0.1, MAX_TIMEOUT_SECONDS, False, 10.0),
            ("max_concurrency", 1, 1000, True, 10),
            ("disable_after_hours", 0.0001, 24 * 365, False, 72.0),
        ):
            if creating or name in body:
                fields[name] = check.number(
                    name, low, high, integer=integer, default=default if creating else None
                )
        if "rate_limit" in body:
            fields["rate_limit"] = _rate_limit(check)
        if "secrets" in body:
            fields.update(_sealed_secrets(check, self._box, partner_id))
        if "status" in body and body["status"] not in ("active", "disabled"):
            check.add("/status", "status must be active or disabled", "enum")
        check.done("partner")
        return fields

    # -- actions -----------------------------------------------------------------------------

    async def create_action(self, tenant: str, body: Mapping[str, Any]) -> Doc:
        fields = await self._action_fields(tenant, body, None)
        now = _now()
        doc: Doc = {
            "_id": ObjectId(),
            "tenant": tenant,
            **fields,
            "rev": 1,
            "created_at": now,
            "updated_at": now,
        }
        await self._store.actions.insert(doc)
        return doc

    async def get_action(self, tenant: str, action_id: str) -> Doc:
        doc = await self._store.actions.get(tenant, action_id)
        if doc is None:
            raise NotFound(f"no action {action_id!r}")
        return doc

    async def list_actions(
        self, tenant: str, filters: Mapping[str, str], *, after: str | None, limit: int
    ) -> list[Doc]:
        return await self._store.actions.list(tenant, filters, after=after, limit=limit)

    async def update_action(self, tenant: str, action_id: str, body: Mapping[str, Any]) -> Doc:
        current = await self.get_action(tenant, action_id)
        fields = await self._action_fields(tenant, {**_action_body(current), **body}, current)
        fields["updated_at"] = _now()
        doc = await self._store.actions.update(tenant, action_id, current["rev"], fields)
        if doc is None:
            raise Conflict("the action was changed concurrently; retry")
        self._catalog.forget(action_id)
        return doc

    async def delete_action(self, tenant: str, action_id: str) -> None:
        await self.get_action(tenant, action_id)
        users = await self._store.subscriptions.count(tenant, {"action_id": action_id})
        if users:
            raise Conflict(f"action {action_id} has {users} subscription(s); delete them first")
        await self._store.actions.delete(tenant, action_id)
        self._catalog.forget(action_id)

    async def _action_fields(
        self, tenant: str, body: Mapping[str, Any], current: Doc | None
    ) -> Doc:
        check = _Check(body, set(_ACTION_FIELDS))
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
        }
        if fields["write_back"] and not fields["response_mapping"]:
            check.add(
                "/write_back",
                "write_back needs a response_mapping to know which entity fields the answer holds",
                "dependentRequired",
            )
        pid = fields["partner_id"]
        if pid and await self._store.partners.get(tenant, pid) is None:
            check.add("/partner_id", f"no partner {pid!r} in this tenant", "reference")
        for name in ("request_mapping", "response_mapping"):
            await self._check_mapping(tenant, check, name, fields[name])
        check.done("action")
        return fields

    async def _check_mapping(
        self, tenant: str, check: _Check, field_name: str, name: str | None
    ) -> None:
        if name is None or self._mappings is None:
            return
        try:
            mapping = await self._mappings.active(tenant, name)
        except NotFound as exc:
            check.add(f"/{field_name}", exc.detail, "reference")
            return
        if mapping.direction != "outbound":
            check.add(
                f"/{field_name}",
                f"mapping {name!r} is {mapping.direction}; an action needs an outbound mapping",
                "reference",
            )

    # -- subscriptions -----------------------------------------------------------------------

    async def create_subscription(self, tenant: str, body: Mapping[str, Any]) -> tuple[Doc, str]:
        """The stored subscription and its signing secret (shown this once)."""
        fields = await self._subscription_fields(tenant, body, creating=True)
        oid, now, secret = ObjectId(), _now(), generate_secret()
        sealed = self._box.seal(secret, context=subscription_context(str(oid)))
        doc: Doc = {
            "_id": oid,
            "tenant": tenant,
            **fields,
            "status": "active",
            "secrets": [{"sealed": sealed, "created_at": now}],
            "rev": 1,
            "created_at": now,
            "updated_at": now,
        }
        await self._store.subscriptions.insert(doc)
        return doc, secret

    async def get_subscription(self, tenant: str, subscription_id: str) -> Doc:
        doc = await self._store.subscriptions.get(tenant, subscription_id)
        if doc is None:
            raise NotFound(f"no subscription {subscription_id!r}")
        return doc

    async def list_subscriptions(
        self, tenant: str, filters: Mapping[str, str], *, after: str | None, limit: int
    ) -> list[Doc]:
        return await self._store.subscriptions.list(tenant, filters, after=after, limit=limit)

    async def update_subscription(
        self, tenant: str, subscription_id: str, body: Mapping[str, Any]
    ) -> Doc:
        current = await self.get_subscription(tenant, subscription_id)
        fields = await self._subscription_fields(tenant, body, creating=False)
        unset: tuple[str, ...] = ()
        if fields.get("status") == "active":
            unset = ("disabled_reason",)
        elif fields.get("status") == "disabled":
            fields["disabled_reason"] = "disabled by an admin"
        fields["updated_at"] = _now()
        doc = await self._store.subscriptions.update(
            tenant, subscription_id, current["rev"], fields, unset
        )
        if doc is None:
            raise Conflict("the subscription was changed concurrently; retry")
        self._catalog.forget(subscription_id)
        return doc

    async def rotate_secret(self, tenant: str, subscription_id: str) -> tuple[Doc, str]:
        """A new signing secret; the previous one keeps signing for ROTATION_GRACE (both
        signatures are sent), older ones are dropped."""
        current = await self.get_subscription(tenant, subscription_id)
        now, secret = _now(), generate_secret()
        sealed = self._box.seal(secret, context=subscription_context(subscription_id))
        previous = [
            {**s, "expires_at": s.get("expires_at") or now + ROTATION_GRACE}
            for s in current["secrets"][:1]
            if s.get("expires_at") is None or s["expires_at"] > now
        ]
        fields = {
            "secrets": [{"sealed": sealed, "created_at": now}, *previous],
            "secret_rotated_at": now,
            "updated_at": now,
        }
        doc = await self._store.subscriptions.update(
            tenant, subscription_id, current["rev"], fields
        )
        if doc is None:
            raise Conflict("the subscription was changed concurrently; retry")
        self._catalog.forget(subscription_id)
        return doc, secret

    async def delete_subscription(self, tenant: str, subscription_id: str) -> None:
        if not await self._store.subscriptions.delete(tenant, subscription_id):
            raise NotFound(f"no subscription {subscription_id!r}")
        self._catalog.forget(subscription_id)

    async def _subscription_fields(
        self, tenant: str, body: Mapping[str, Any], *, creating: bool
    ) -> Doc:
        allowed = {"event_types", "filter"} | ({"action_id"} if creating else {"status"})
        check = _Check(body, allowed)
        fields: Doc = {}
        if creating:
            action_id = check.text("action_id", max_len=64)
            action = await self._store.actions.get(tenant, action_id) if action_id else None
            if action_id and action is None:
                check.add("/action_id", f"no action {action_id!r} in this tenant", "reference")
            elif action is not None and action["mode"] != "deliver":
                check.add(
                    "/action_id",
                    "subscriptions deliver events: the action's mode must be deliver",
                    "reference",
                )
            if action is not None:
                fields.update(action_id=action_id, partner_id=action["partner_id"])
        if creating or "event_types" in body:
            fields["event_types"] = _event_types(check)
        if creating or "filter" in body:
            raw = body.get("filter") or {}
            try:
                compile_filter(raw)
            except InvalidPayload as exc:
                check.problems.extend(exc.problems)
            fields["filter"] = raw
        if "status" in body:
            fields["status"] = check.choice("status", ("active", "disabled"))
        check.done("subscription")
        return fields


# -- field checks ----------------------------------------------------------------------------


def _base_url(check: _Check) -> str | None:
    raw = check.text("base_url", max_len=2000)
    if raw is None:
        return None
    try:
        url = URL(raw)
    except (ValueError, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        check.add("/base_url", "base_url must be an absolute http(s) URL", "format")
        return None
    if url.user or url.password:
        check.add("/base_url", "put credentials in `auth`, not in the URL", "format")
        return None
    if url.fragment or url.query_string:
        check.add(
            "/base_url",
            "base_url takes no query or fragment (use a query auth or the request mapping)",
            "format",
        )
        return None
    return raw.rstrip("/")


def _sealed_auth(check: _Check, box: SecretBox, partner_id: str) -> Doc:
    auth = check.body.get("auth")
    if not isinstance(auth, dict):
        check.add("/auth", "auth must be an object with a type", "type")
        return {}
    try:
        build_auth(auth)
    except InvalidPayload as exc:
        check.problems.extend(exc.problems)
        return {}
    return {
        "auth_type": auth["type"],
        "auth_sealed": box.seal(auth, context=auth_context(partner_id)),
    }


def _sealed_secrets(check: _Check, box: SecretBox, partner_id: str) -> Doc:
    secrets = check.body.get("secrets")
    if secrets is None:
        return {"secrets_sealed": None, "secret_names": []}
    if not isinstance(secrets, dict) or len(secrets) > 50:
        check.add("/secrets", "secrets must be an object of at most 50 name: value", "type")
        return {}
    for name, value in secrets.items():
        if not _SECRET_NAME.match(name) or not isinstance(value, str) or not value:
            check.add(
                f"/secrets/{name}",
                "a secret is a name (letters, digits, _) with a non-empty string value",
                "type",
            )
    return {
        "secrets_sealed": box.seal(secrets, context=secrets_context(partner_id)),
        "secret_names": sorted(secrets),
    }


def _rate_limit(check: _Check) -> Doc | None:
    rate = check.body.get("rate_limit")
    if rate is None:
        return None
    per_second = rate.get("per_second") if isinstance(rate, dict) else None
    burst = rate.get("burst", 1) if isinstance(rate, dict) else None
    valid = (
        isinstance(per_second, int | float)
        and not isinstance(per_second, bool)
        and 0 < per_second <= 100_000
        and isinstance(burst, int | float)
        and not isinstance(burst, bool)
        and 1 <= burst <= 100_000
    )
    if not isinstance(rate, dict) or set(rate) - {"per_second", "burst"} or not valid:
        check.add("/rate_limit", "rate_limit is {per_second > 0, burst >= 1}", "type")
        return None
    return {"per_second": per_second, "burst": burst}


def _path(check: _Check) -> str | None:
    path = check.body.get("path", "")
    if not isinstance(path, str) or len(path) > 2000 or (path and not path.startswith("/")):
        check.add("/path", "path must be a string starting with /", "pattern")
        return None
    if "{" in _PLACEHOLDER.sub("", path) or "}" in _PLACEHOLDER.sub("", path):
        check.add("/path", "path placeholders are {name} (letters, digits, _)", "pattern")
        return None
    return path


def _success(check: _Check) -> list[int | str] | None:
    success = check.body.get("success")
    if success is None:
        return None
    if (
        not isinstance(success, list)
        or not success
        or not all(
            (isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599)
            or (isinstance(s, str) and _STATUS_CLASS.match(s))
            for s in success
        )
    ):
        check.add("/success", 'success is a list of status codes or classes like "2xx"', "type")
        return None
    return list(success)


def _schedule(check: _Check) -> list[float] | None:
    schedule = check.body.get("retry_schedule")
    if schedule is None:
        return None
    week = 7 * 86400
    if (
        not isinstance(schedule, list)
        or not 1 <= len(schedule) <= 30
        or not all(
            isinstance(s, int | float) and not isinstance(s, bool) and 0 <= s <= week
            for s in schedule
        )
    ):
        check.add(
            "/retry_schedule",
            "retry_schedule is 1 to 30 delays in seconds (0 to a "
            "week): the wait before each attempt",
            "type",
        )
        return None
    return [float(s) for s in schedule]


def _event_types(check: _Check) -> list[str] | None:
    types = check.body.get("event_types")
    if not isinstance(types, list) or not types or len(types) > 50:
        check.add("/event_types", "event_types is a non-empty list of event types", "type")
        return None
    for i, value in enumerate(types):
        if (problem := event_type_problem(value)) is not None:
            check.add(f"/event_types/{i}", problem, "pattern")
    return sorted(set(types))


def _action_body(doc: Doc) -> dict[str, Any]:
    return {k: doc[k] for k in _ACTION_FIELDS if doc.get(k) is not None}
