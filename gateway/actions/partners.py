"""Use case: partner endpoints as admin-managed resources.

A partner's credentials (`auth`) and named secrets are sealed before they are stored and
never leave this module in clear.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp.helpers import is_ip_address
from yarl import URL

from gateway.actions.body_check import BodyCheck, doc_id
from gateway.actions.catalog import Catalog, auth_context, secrets_context
from gateway.actions.definitions import ReadWithChanged
from gateway.audit import changed_members, log_change
from gateway.auth.secretbox import SecretBox, SecretBoxError, lost_on, shown_lost
from gateway.clock import as_stored, utcnow
from gateway.errors import Conflict, FieldProblem, InvalidPayload, NotFound
from gateway.formats.json_tree import is_text
from gateway.notify.channel_needs import push_partner_problem, refuse_if_channels_need
from gateway.outbound.breaker import SLOWEST_RATE, PartnerGuards
from gateway.outbound.partner_auth import KEPT_WHEN_LEFT_OUT, account_of, build_auth, unsavable
from gateway.store import Doc, Store, new_id

MAX_TIMEOUT_SECONDS = 60.0
# The bounds of a partner's numbers, as its body's document states them (web/partners.py).
MAX_CONCURRENCY = 1000
DISABLE_AFTER_HOURS = (0.0001, 24 * 365)  # at the least a third of a second, at most a year
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def public_partner(doc: Doc) -> dict[str, Any]:
    return {
        "id": doc_id(doc),
        "name": doc["name"],
        "base_url": doc["base_url"],
        "auth": {
            "type": doc["auth_type"],
            "configured": lost_on(doc.get("auth_sealed")) is None,
            **shown_lost(doc.get("auth_sealed")),
        },
        "secrets": sorted(doc.get("secret_names", [])),
        **{f"secrets_{k}": v for k, v in shown_lost(doc.get("secrets_sealed")).items()},
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


class PartnerUseCases:
    """Create, read, update and delete partners (part of `ActionService`)."""

    _store: Store
    _box: SecretBox
    _catalog: Catalog
    _guards: PartnerGuards
    _read_with_changed: ReadWithChanged

    async def create_partner(self, tenant: str, body: Mapping[str, Any]) -> Doc:
        oid, now = new_id(), as_stored(utcnow())
        doc = self._partner_fields(str(oid), body, creating=True)
        doc.update(_id=oid, tenant=tenant, status="active", rev=1, created_at=now, updated_at=now)
        await self._store.partners.insert(doc)
        log_change("partner", str(oid), "created", tenant, partner_name=doc["name"])
        return doc

    async def get_partner(self, tenant: str, partner_id: str) -> Doc:
        doc = await self._store.partners.get(tenant, partner_id)
        if doc is None:
            raise NotFound(f"no partner {partner_id!r}")
        return doc

    async def list_partners(self, tenant: str, *, after: str | None, limit: int) -> list[Doc]:
        return await self._store.partners.list(tenant, after=after, limit=limit)

    async def partner_names(self, tenant: str) -> list[Doc]:
        """Every partner's id and name, in one query (a page's select, its "To" column)."""
        return await self._store.partners.every(tenant, {}, ("name",))

    async def update_partner(self, tenant: str, partner_id: str, body: Mapping[str, Any]) -> Doc:
        """Merge `body` into the partner; `auth` and `secrets` are replaced whole."""
        current = await self.get_partner(tenant, partner_id)
        # The id as stored: the URL's may be spelled in upper case (the store finds it either
        # way), and what names the partner (channels, actions, sealed secrets) has it so.
        partner_id = str(current["_id"])
        fields = self._partner_fields(partner_id, body, creating=False)
        _refuse_stored_credentials_elsewhere(current, body, fields.get("base_url"))
        status = body.get("status")
        unset: tuple[str, ...] = ()
        if status == "active":
            fields["status"] = "active"
            unset = ("disabled_at", "probe_at", "failing_since")
        elif status == "disabled":
            fields.update(
                status="disabled", disabled_at=utcnow(), probe_at=datetime.max.replace(tzinfo=UTC)
            )
        changed = {**current, **fields}
        await refuse_if_channels_need(
            self._store,
            tenant,
            "partner_id",
            partner_id,
            f"partner {current['name']}",
            push_partner_problem,
            current,
            changed,
        )
        if status == "active" and current.get("status") == "disabled":
            # Recovered while it is still disabled: what went dead during its outage replayed
            # (open when a worker judges an entity's order, so no newer delivery goes first)
            # and its backlog due now; then the update below makes it active, the last write.
            # Cut short before it (a crash, a 503), the partner is still disabled: the
            # client's retry runs the whole recovery again (each step is idempotent).
            await self._store.deliveries.recover(partner_id, current.get("failing_since"), utcnow())
        # The schedules reading a feed this changes start again before the change is saved
        # (a fault after the save would leave a retry nothing to compare) and after it.
        before, after = self._feeds(current, changed, "auth_sealed" in fields)
        await self._read_with_changed(tenant, "partner", partner_id, before, after)
        fields["updated_at"] = utcnow()
        doc = await self._store.partners.update(tenant, partner_id, current["rev"], fields, unset)
        if doc is None:  # a probe's re-enable moves `rev` on too: one recovery per outage
            raise Conflict("the partner was changed concurrently; retry")
        self._catalog.forget(partner_id)
        if members := changed_members(current, doc, body, secret=("auth", "secrets")):
            log_change("partner", partner_id, "updated", tenant, members=members)
        before, after = self._feeds(current, doc, "auth_sealed" in fields)
        await self._read_with_changed(tenant, "partner", partner_id, before, after)
        return doc

    async def replace_credentials(
        self, tenant: str, partner_id: str, body: Mapping[str, Any]
    ) -> Doc:
        """`update_partner` with credentials typed in a form that shows none of the stored
        ones (the admin UI's): of the stored `auth`, when `body`'s names the same type, the
        optional members that are no secret and that it leaves out are kept
        (`KEPT_WHEN_LEFT_OUT`: an OAuth2 client's `audience`, `client_auth`, `extra_params`
        and `scope` through a rotation of its secret). Stored credentials that do not open
        (damaged, another key's) keep nothing."""
        auth = body.get("auth")
        if isinstance(auth, dict):
            current = await self.get_partner(tenant, partner_id)
            kind = auth.get("type")
            kept = KEPT_WHEN_LEFT_OUT.get(kind, ()) if isinstance(kind, str) else ()
            if kept and current.get("auth_type") == kind:
                stored = self._stored_auth(current)
                left_out = {k: stored[k] for k in kept if k in stored and k not in auth}
                body = {**body, "auth": {**auth, **left_out}}
        return await self.update_partner(tenant, partner_id, body)

    def _stored_auth(self, doc: Doc) -> dict[str, Any]:
        try:
            auth = self._box.open_json(doc["auth_sealed"], context=auth_context(str(doc["_id"])))
        except SecretBoxError:
            return {}
        return auth if isinstance(auth, dict) else {}

    def _feeds(self, current: Doc, doc: Doc, new_auth: bool) -> tuple[Doc, Doc]:
        """What in the partner names the feeds schedules read from it, before and after a
        change: where it is called, and whose account is read (`account_of`: no secret),
        compared only when `auth` was given again. Credentials that do not open (damaged,
        another key's: saved again to repair them) name no account to compare."""
        before: Doc = {"base_url": current["base_url"]}
        after: Doc = {"base_url": doc["base_url"]}
        if new_auth:
            try:
                before["account"], after["account"] = self._account(current), self._account(doc)
            except SecretBoxError:
                pass
        return before, after

    def _account(self, doc: Doc) -> dict[str, Any]:
        auth = self._box.open_json(doc["auth_sealed"], context=auth_context(str(doc["_id"])))
        return account_of(auth)

    async def delete_partner(self, tenant: str, partner_id: str) -> None:
        partner_id = str((await self.get_partner(tenant, partner_id))["_id"])  # as stored
        users = await self._store.actions.count(tenant, {"partner_id": partner_id})
        if users:
            raise Conflict(f"partner {partner_id} is used by {users} action(s); delete them first")
        # A push channel sends through its partner (FCM's service account) without an action.
        named = {"partner_id": partner_id}
        channels = await self._store.notify.channels.list(tenant, named, after=None, limit=50)
        if channels:
            found = [{"kind": "channel", "id": str(d["_id"]), "name": d["name"]} for d in channels]
            listed = ", ".join(f"channel {u['name']}" for u in found)
            raise Conflict(f"partner {partner_id} is used by {listed}", used_by=found)
        await self._store.partners.delete(tenant, partner_id)
        log_change("partner", partner_id, "deleted", tenant)
        self._forget_partner(partner_id)

    async def forget_deleted_partners(self) -> int:
        """The partners deleted through another process (the other children of `serve
        --workers N`, a `gateway worker`, which serves no admin API, a second instance)
        forgotten here too: of those this process keeps something of (a guard, opened
        credentials, a metric place), the ones the database no longer holds, read by id
        alone. Run by every process's housekeeping pass (`Store.housekeeping`, every 60 s):
        without it they stayed until the process ended, and once the deleted partners had
        taken every metric place a new partner was counted under "other". How many went."""
        held = self._catalog.partners_held() | self._guards.partner_ids()
        if not held:
            return 0
        gone = await self._store.partners.gone(held)
        for partner_id in gone:
            self._forget_partner(partner_id)
        return len(gone)

    def _forget_partner(self, partner_id: str) -> None:
        """A deleted partner out of this process: its caches, its metric series and place, its
        guard (its breaker, and the state it reports)."""
        self._catalog.drop_partner(partner_id)
        self._guards.discard(partner_id)

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
        check = BodyCheck(body, allowed)
        fields: Doc = {}
        if creating or "name" in body:
            fields["name"] = check.text("name")
        if creating or "base_url" in body:
            fields["base_url"] = _base_url(check)
        if creating or "auth" in body:
            fields.update(_sealed_auth(check, self._box, partner_id))
        for name, low, high, integer, default in (
            ("timeout_seconds", 0.1, MAX_TIMEOUT_SECONDS, False, 10.0),
            ("max_concurrency", 1, MAX_CONCURRENCY, True, 10),
            ("disable_after_hours", *DISABLE_AFTER_HOURS, False, 72.0),
        ):
            if name in body and body[name] is None and name != "disable_after_hours":
                # only disable_after_hours means something by null (never disabled)
                check.add(f"/{name}", f"{name} must be a number", "type")
            elif creating or name in body:
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


# -- field checks ----------------------------------------------------------------------------


def _refuse_stored_credentials_elsewhere(
    current: Doc, body: Mapping[str, Any], new_url: str | None
) -> None:
    """Stored credentials go only where they were given for: a new origin in base_url needs
    them again, the `auth` and the named secrets a mapping puts on a request (a SOAP login, an
    API key), or an admin could redirect them to a server of their own and read them there."""
    if not new_url or URL(new_url).origin() == URL(current["base_url"]).origin():
        return
    missing = [
        FieldProblem(f"/{name}", f"a new origin in base_url needs the partner's {what}", "required")
        for name, what, stored in (
            ("auth", "credentials again", True),
            ("secrets", "named secrets again (or null)", bool(current.get("secret_names"))),
        )
        if stored and name not in body
    ]
    if missing:
        detail = "; ".join(f"{p.pointer}: {p.message}" for p in missing)
        raise InvalidPayload(detail, missing)


def _base_url(check: BodyCheck) -> str | None:
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
    if not _host_name_ok(url.raw_host or ""):
        check.add(
            "/base_url",
            "base_url's host name has an empty label or one over 63 characters",
            "format",
        )
        return None
    if url.fragment or url.query_string:
        check.add(
            "/base_url",
            "base_url takes no query or fragment (use a query auth or the request mapping)",
            "format",
        )
        return None
    return raw.rstrip("/")


def _host_name_ok(host: str) -> bool:
    """Whether a name lookup can take `host` (an address, or a DNS name whose labels have 1
    to 63 characters once IDNA-encoded, as yarl gives them)."""
    if is_ip_address(host):
        return True
    labels = host.removesuffix(".").split(".")
    return len(host) <= 253 and all(0 < len(label) <= 63 for label in labels)


def _sealed_auth(check: BodyCheck, box: SecretBox, partner_id: str) -> Doc:
    auth = check.body.get("auth")
    if not isinstance(auth, dict):
        check.add("/auth", "auth must be an object with a type", "type")
        return {}
    try:
        build_auth(auth, saving=True)
    except InvalidPayload as exc:
        check.problems.extend(exc.problems)
        return {}
    return {
        "auth_type": auth["type"],
        "auth_sealed": box.seal(auth, context=auth_context(partner_id)),
    }


def _sealed_secrets(check: BodyCheck, box: SecretBox, partner_id: str) -> Doc:
    secrets = check.body.get("secrets")
    if secrets is None:
        return {"secrets_sealed": None, "secret_names": []}
    if not isinstance(secrets, dict) or len(secrets) > 50:
        check.add("/secrets", "secrets must be an object of at most 50 name: value", "type")
        return {}
    for name, value in secrets.items():
        if not _SECRET_NAME.match(name) or not is_text(value) or not value:
            check.add(
                f"/secrets/{name}",
                "a secret is a name (letters, digits, _) with a non-empty string value",
                "type",
            )
        elif unsavable(value):
            # As for `auth`: in a header a mapping puts it in, no call could be sent, and
            # each one would fail as if the caller's payload did not fit the mapping.
            check.add(
                f"/secrets/{name}",
                f"{name} must not contain line breaks or other control characters",
                "pattern",
            )
    return {
        "secrets_sealed": box.seal(secrets, context=secrets_context(partner_id)),
        "secret_names": sorted(secrets),
    }


def _rate_limit(check: BodyCheck) -> Doc | None:
    """Each member's problem at its member (a form has a field for each), by what is wrong."""
    rate = check.body.get("rate_limit")
    if rate is None:
        return None
    if not isinstance(rate, dict) or set(rate) - {"per_second", "burst"}:
        message = f"rate_limit is {{per_second: {SLOWEST_RATE:g} to 100000, burst: 1 to 100000}}"
        check.add("/rate_limit", message, "type")
        return None
    per_second = _rate_member(check, rate, "per_second", SLOWEST_RATE, "calls a second")
    burst = _rate_member(check, rate, "burst", 1, "calls taken at once")
    if per_second is None or burst is None:
        return None
    return {"per_second": per_second, "burst": burst}


def _rate_member(
    check: BodyCheck, rate: Mapping[str, Any], name: str, low: float, what: str
) -> float | None:
    value = rate.get(name, 1 if name == "burst" else None)
    at = f"/rate_limit/{name}"
    message = f"rate_limit.{name} must be a number from {low:g} to 100000 ({what})"
    if value is None:
        check.add(at, message, "required")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        check.add(at, message, "type")
    elif not low <= value <= 100_000:
        check.add(at, message, "minimum" if value < low else "maximum")
    else:
        return value
    return None
